"""What the unified vocabulary, relabeling and a denylist cost per poll, on the captured payloads
(or, where there are none, on the simulated backends' bodies).

    .venv/bin/python bench/vocabulary.py [FIXTURE_DIR]

Prints, per payload, the median milliseconds of: parsing; detection plus the unified families (the
Unifier); normalizing; three relabel rules; and a whole poll's work (parse, unify, normalize) without
and with a denylist that skips every other family. Figures only: nothing here asserts a time.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from exporter.config.loader import parse_config
from exporter.core.logs import configure
from exporter.format.parse import parse
from exporter.pipeline.normalize import normalize
from exporter.pipeline.relabel import RelabelConfig, Relabeler
from exporter.pipeline.unify import Unifier

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers.support import FIXTURES, bench_bodies

FOLDER = Path(sys.argv[1]) if len(sys.argv) > 1 else FIXTURES
RULES = [
    RelabelConfig(action="drop", source_labels=["__name__"], regex="python_gc_.*"),
    RelabelConfig(source_labels=["model_name"], regex="[^/]+/(.*)", target_label="model_name"),
    RelabelConfig(action="labeldrop", regex="engine"),
]


def median_ms(run, repeat: int = 30) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def poll_work(body: bytes, unifier: Unifier, keep=None):
    return normalize(unifier.apply(parse(body, keep=keep).families).families, target="t")


def main() -> None:
    configure("warning", "console")
    target = parse_config("targets:\n  - {name: t, type: http, url: http://127.0.0.1/metrics}\n").targets[0]
    relabel = Relabeler(RULES)
    print(
        f"{'payload':52} {'lines':>5} {'parse':>6} {'unify':>6} {'normalize':>9} {'relabel':>7}"
        f" {'poll':>6} {'poll ½ denied':>13}  profile"
    )
    for name, body in bench_bodies(FOLDER):
        families = parse(body).families
        every_other = {family.name for family in families[::2]}
        unifier = Unifier(target)
        unified = unifier.apply(families)
        normalized = normalize(unified.families, target="t")
        lines = body.count(b"\n")
        print(
            f"{name[:52]:52} {lines:5d}"
            f" {median_ms(lambda: parse(body)):6.3f}"
            f" {median_ms(lambda: unifier.apply(families)):6.3f}"
            f" {median_ms(lambda: normalize(unified.families, target='t')):9.3f}"
            f" {median_ms(lambda: relabel(normalized)):7.3f}"
            f" {median_ms(lambda: poll_work(body, unifier)):6.3f}"
            f" {median_ms(lambda: poll_work(body, unifier, lambda name: name not in every_other)):13.3f}"
            f"  {unified.profile}"
        )


if __name__ == "__main__":
    main()
