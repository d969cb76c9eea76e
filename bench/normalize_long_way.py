"""The long way after parsing (unify, conform, normalize, relabel) on one large body: time per sample.

A first poll, and every poll of a target whose series changed, takes this way in full, with nothing
remembered from earlier polls. The body is parsed once, outside the timings; each stage then runs on
what the one before it made, as a poller runs them (exporter.runtime.scheduler). Prints a table of each
stage's best time over `--repeat` runs in each of `--rounds` processes, in µs per sample, and a digest
of what the stages served (names, types, HELP, samples, heads, dropped counts): with `--compare ROOT`,
the same is measured for the checkout at ROOT (another worktree, or `git archive` of a commit), its
processes taking turns with ours, and the two digests must agree.

    .venv/bin/python bench/normalize_long_way.py [--body FILE] [--repeat N] [--rounds N] [--compare ROOT]

Without `--body`, the vLLM capture (else the simulated body) is repeated to about 199k samples with a
new `replica` label per copy, as bench/scenarios.py does.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CONFIG = """
targets:
  - name: big
    type: http
    url: http://127.0.0.1:1/metrics
    body_size_limit: 64MiB
    labels: {site: bench}
  - name: relabelled
    type: http
    url: http://127.0.0.1:1/metrics
    body_size_limit: 64MiB
    labels: {site: bench}
    metric_relabel_configs:
      - {action: replace, source_labels: [replica], regex: "r-(.*)", target_label: copy, replacement: "$1"}
"""

STAGES = ("unify", "conform", "normalize", "relabel (no rules)", "relabel (1 rule)")


def _measure(root: str, body_path: str, repeat: int) -> dict:
    """In this process, with `root`'s exporter package first on the path."""
    sys.path[:0] = [root, str(Path(root) / "bench"), str(Path(root) / "tests")]
    from exporter.config.loader import parse_config
    from exporter.format.parse import parse
    from exporter.pipeline.conform import Conformer
    from exporter.pipeline.normalize import normalize
    from exporter.pipeline.relabel import Relabeler
    from exporter.pipeline.unify import Unifier
    from exporter.runtime.daemon import tune_garbage_collection

    tune_garbage_collection()
    if body_path:
        body = Path(body_path).read_bytes()
    else:
        from scenarios import bench_vllm_body, scaled_body

        body = scaled_body(bench_vllm_body()[1].decode(), 199_000, "r")[0]
    families = parse(body).families
    samples = sum(len(family.samples) for family in families)
    plain, rules = parse_config(CONFIG).targets
    best = dict.fromkeys(STAGES, float("inf"))

    def timed(stage: str, work):
        gc.collect()
        start = time.perf_counter()
        out = work()
        best[stage] = min(best[stage], time.perf_counter() - start)
        return out

    for _ in range(repeat):
        # Fresh objects every run: nothing is remembered from an earlier run, as on a first poll.
        unified = timed("unify", lambda: Unifier(plain).apply(families).families)
        conformed, _ = timed("conform", lambda: Conformer()(unified))
        normalized = timed(
            "normalize", lambda: normalize(conformed, target=plain.name, labels=plain.labels, prefix=plain.prefix or "")
        )
        served = timed("relabel (no rules)", lambda: Relabeler(plain.metric_relabel_configs)(normalized))
        relabelled = timed("relabel (1 rule)", lambda: Relabeler(rules.metric_relabel_configs)(normalized))
    return {
        "samples": samples,
        "served": sum(len(family.samples) for family in served.families),
        "seconds": best,
        "digest": _digest(served),
        "digest_relabelled": _digest(relabelled),
    }


def _heads(family) -> tuple:
    """The heads normalize wrote for a family (kept in `rendered`, or in a field of their own)."""
    heads = getattr(family, "heads", None)
    if heads is None and hasattr(family, "rendered"):
        heads = family.rendered.get("heads")
    return heads or ()


def _digest(normalized) -> str:
    """Everything a stage's output serves, hashed: equal digests, identical output."""
    text = json.dumps(
        [
            [
                family.name,
                family.type,
                family.help,
                [[s.name, sorted(s.labels.items()), list(s.labels), repr(s.value)] for s in family.samples],
                list(_heads(family)),
            ]
            for family in normalized.families
        ]
        + [sorted(normalized.dropped.items())]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _run(root: str, body: str, repeat: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", root, "--body", body, "--repeat", str(repeat)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.splitlines()[-1])  # the last line: log lines may come before it


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--body", default="", help="a body to read (default: the vLLM capture scaled to 199k samples)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of the stages per process")
    parser.add_argument("--rounds", type=int, default=2, help="processes per checkout, taking turns")
    parser.add_argument("--compare", default="", help="another checkout to measure the same way")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_measure(args.child, args.body, args.repeat)))
        return
    roots = {"this": str(ROOT), **({args.compare: args.compare} if args.compare else {})}
    runs: dict[str, dict] = {}
    for _ in range(args.rounds):  # the checkouts take turns, so that a busy spell slows both alike
        for name, root in roots.items():
            run = _run(root, args.body, args.repeat)
            if name in runs:
                run["seconds"] = {stage: min(run["seconds"][stage], runs[name]["seconds"][stage]) for stage in STAGES}
            runs[name] = run
    mine = runs["this"]
    runs_each = args.repeat * args.rounds
    print(f"{mine['samples']} samples parsed, {mine['served']} served; best of {runs_each} runs, µs per sample\n")
    names = list(runs)
    print(f"| stage | {' | '.join(names)} |" + (" speed-up |" if len(names) > 1 else ""))
    print("|---|" + "---:|" * (len(names) + (len(names) > 1)))
    total = dict.fromkeys(names, 0.0)
    for stage in STAGES:
        cells = []
        for name in names:
            seconds = runs[name]["seconds"][stage]
            if stage != "relabel (1 rule)":
                total[name] += seconds
            cells.append(f"{seconds / runs[name]['samples'] * 1e6:.2f}")
        ratio = f" {runs[names[1]]['seconds'][stage] / mine['seconds'][stage]:.1f}x |" if len(names) > 1 else ""
        print(f"| {stage} | {' | '.join(cells)} |{ratio}")
    cells = [f"{total[name] / runs[name]['samples'] * 1e6:.2f} ({total[name]:.2f} s)" for name in names]
    ratio = f" {total[names[1]] / total['this']:.1f}x |" if len(names) > 1 else ""
    print(f"| unify+conform+normalize+relabel | {' | '.join(cells)} |{ratio}")
    for name in names:
        print(f"\n{name}: output digest {runs[name]['digest']}, relabelled {runs[name]['digest_relabelled']}")
    if len(names) > 1:
        same = all(
            runs[n]["digest"] == mine["digest"] and runs[n]["digest_relabelled"] == mine["digest_relabelled"]
            for n in names
        )
        print("identical output" if same else "OUTPUT DIFFERS")


if __name__ == "__main__":
    main()
