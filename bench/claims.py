"""What settling clashes between targets costs (exporter.serve.claims), when a target's families change.

A target's usual poll brings the same family names and types as the last one and costs the store
nothing here (Store.publish's fast path); these are the polls that change them: a fleet coming up,
one target going down and up, a degraded target whose every family clashes. Best of --repeat runs,
no assertions:

    .venv/bin/python bench/claims.py [--targets 50] [--families 500] [--repeat 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from exporter.serve.claims import Claims

TYPES = ("gauge", "counter", "histogram")


def declarations(families: int, kind: str | None = None) -> list[tuple[str, str]]:
    return [(f"family_{i}", kind or TYPES[i % len(TYPES)]) for i in range(families)]


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def run(targets: int, families: int) -> dict[str, float]:
    claims = Claims()
    healthy = declarations(families)
    fleet = timed(lambda: [claims.declare(f"t{i}", healthy) for i in range(targets)])
    flap = timed(lambda: (claims.declare("t0", ()), claims.declare("t0", healthy)))
    degraded = timed(lambda: claims.declare("degraded", declarations(families, "unknown")))
    assert len(claims.withheld["degraded"]) == families
    flap_beside = timed(lambda: (claims.declare("t1", ()), claims.declare("t1", healthy)))
    return {
        f"{targets} targets come up (per target)": fleet / targets,
        "one target down and up again": flap,
        "a degraded target: every family clashes": degraded,
        "one target down and up beside it": flap_beside,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=50)
    parser.add_argument("--families", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    best: dict[str, float] = {}
    for _ in range(args.repeat):
        for name, seconds in run(args.targets, args.families).items():
            best[name] = min(seconds, best.get(name, seconds))
    print(f"{args.targets} targets x {args.families} families each, best of {args.repeat}")
    print(f"{'change':<44} {'ms':>8}")
    for name, seconds in best.items():
        print(f"{name:<44} {seconds * 1000:>8.2f}")


if __name__ == "__main__":
    main()
