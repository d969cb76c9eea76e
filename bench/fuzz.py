"""Coverage-guided fuzzing (atheris, libFuzzer) of the two readers of hostile bytes: the exposition parser
and the config loader. Runs for a bounded time and exits non-zero on the first finding, which libFuzzer
saves as `crash-<hash>` in the working directory (replay it: `bench/fuzz.py parser crash-<hash>`).

    .venv/bin/pip install atheris                      # Linux x86-64/aarch64 wheels; clang to build elsewhere
    .venv/bin/python bench/fuzz.py parser --seconds 60
    .venv/bin/python bench/fuzz.py config --seconds 60

What counts as a finding:
  parser  any exception but ParseError; the fast path (a target's pipeline that read the body's shape before)
          reading a body differently from parse(); and what the daemon would serve from it (conform,
          normalize, the store, the collector) failing prometheus_client's strict OpenMetrics parser.
  config  any exception but ConfigError, or an error message without `file:line` or `file:`.

The corpus is seeded from the project's own payloads (the demo backend's text and OpenMetrics
output, the hostile bodies and configs of the tests, config.example.yaml) and from ../shared/fixtures
when present; it is written to --corpus (default: a temporary folder), where libFuzzer adds what it finds.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
FIXTURES = ROOT.parent / "shared" / "fixtures"
SEPARATOR = b"\n#--next poll--\n"


def parser_seeds() -> list[bytes]:
    from exporter.simulate.base import load_backends, render

    # Every simulated backend's body, as text and (the first byte says so) as OpenMetrics.
    seeds = []
    for profile in sorted(load_backends()):
        seeds += [render(profile, seed=1)[0], b"\x01" + render(profile, seed=1, openmetrics=True)[0]]
    from helpers.hostile import BROKEN_FAMILIES

    seeds += [body.encode() for body in BROKEN_FAMILIES.values()]
    seeds += [b'a{l="v"} 1 # {x="y"} 1\n', b"\x01a 1\nb 2 100\n# EOF\nc 2\n", b"# HELP a \xc2\xa0x\na 1\n"]
    if FIXTURES.is_dir():
        seeds += [path.read_bytes()[:65536] for path in sorted(FIXTURES.glob("*.prom"))]
    # Two polls of one body, the second with its numbers moved: what exercises the fast path.
    return seeds + [seed + SEPARATOR + re.sub(rb"(?<= )(\d+)(?=\n)", rb"\g<1>7", seed) for seed in seeds[:8]]


def config_seeds() -> list[bytes]:
    seeds = [(ROOT / "config.example.yaml").read_bytes()]
    # Every config mistake the tests know, hostile ones (bombs, deep nesting, huge numbers) included.
    return seeds + [
        path.read_bytes()[:65536] for path in sorted((ROOT / "tests" / "testdata" / "config").glob("invalid-*.yml"))
    ]


def fuzz_parser(data: bytes) -> None:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    from exporter.format.parse import ParseError, parse
    from exporter.pipeline.conform import Conformer
    from exporter.pipeline.normalize import normalize
    from exporter.pipeline.target import Pipeline
    from exporter.serve.collector import Collector
    from exporter.serve.store import Snapshot, Store
    from exporter.sources.base import Exposition
    from exporter.sources.http import HTTPTarget

    openmetrics = data[:1] == b"\x01"
    bodies = (data[1:] if openmetrics else data).split(SEPARATOR)[:3]
    target = HTTPTarget.model_validate({"name": "t", "type": "http", "url": "http://h/m"})
    reader = Pipeline(target)
    for body in [bodies[0], *bodies]:
        try:
            slow = parse(body, openmetrics=openmetrics)
        except ParseError:
            slow = None
        try:
            fast = reader.read_body(Exposition(body, openmetrics))
        except ParseError:
            fast = None
        assert (slow is None) == (fast is None), "the fast path and parse() disagree on whether the body parses"
        if slow is None:
            continue
        assert _readable(fast) == _readable(slow), "the fast path read the body differently"
        families, _ = Conformer()(slow.families)
        store = Store()
        store.publish(Snapshot(target, normalize(families, target="t").families, up=True))
        text = Collector(store, process_metrics=False).render(openmetrics=True).decode()
        list(text_string_to_metric_families(text))  # raises on anything a strict reader rejects


def _readable(result) -> list:
    return [
        (f.name, f.type, f.help, f.unit, [(s.name, s.labels, repr(s.value)) for s in f.samples])
        for f in result.families
    ]


def fuzz_config(data: bytes) -> None:
    from exporter.config.loader import ConfigError, parse_config

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return
    try:
        parse_config(text, "fuzz.yaml")
    except ConfigError as exc:
        for issue in exc.issues:
            assert str(issue).startswith("fuzz.yaml"), f"an error that does not say where: {issue}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", choices=("parser", "config"))
    parser.add_argument("inputs", nargs="*", help="replay these files instead of fuzzing")
    parser.add_argument("--seconds", type=int, default=60, help="how long to fuzz (default 60)")
    parser.add_argument("--corpus", type=Path, help="corpus folder (default: a temporary one, seeded)")
    args = parser.parse_args()
    import atheris

    with atheris.instrument_imports():
        pass
    target = fuzz_parser if args.target == "parser" else fuzz_config
    if args.inputs:
        for path in args.inputs:
            target(Path(path).read_bytes())
        print(f"replayed {len(args.inputs)} input(s): no finding")
        return 0
    corpus = args.corpus or Path(tempfile.mkdtemp(prefix=f"fuzz-{args.target}-"))
    corpus.mkdir(parents=True, exist_ok=True)
    seeds = parser_seeds() if args.target == "parser" else config_seeds()
    for index, seed in enumerate(seeds):
        (corpus / f"seed-{index:03d}").write_bytes(seed)
    print(f"fuzzing the {args.target} for {args.seconds}s from {len(seeds)} seeds in {corpus}", flush=True)
    libfuzzer = [
        sys.argv[0],
        str(corpus),
        f"-max_total_time={args.seconds}",
        "-rss_limit_mb=2048",
        "-max_len=65536",
        "-timeout=10",
        "-print_final_stats=1",
    ]
    atheris.Setup(libfuzzer, target)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
