"""Where in its interval each target is polled: together with up to POLLED_TOGETHER others, in groups spread over it."""

from __future__ import annotations

import json
import math
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.config.loader import parse_config
from exporter.runtime.scheduler import POLLED_TOGETHER, Scheduler, first_poll_offset, poll_offsets
from exporter.serve.store import Store
from exporter.sources import Shared


def targets(names: list[str], intervals: list[int] | None = None):
    entries = [
        {"name": name, "type": "http", "url": "http://127.0.0.1:9/metrics"}
        | ({"interval": f"{intervals[i % len(intervals)]}s"} if intervals else {})
        for i, name in enumerate(names)
    ]
    return parse_config(json.dumps({"defaults": {"interval": "10s"}, "targets": entries}), "<test>").targets


def test_a_gpu_hosts_targets_are_polled_together_where_the_first_of_them_alone_would_be():
    names = [f"vllm-{i}" for i in range(8)] + ["gpus", "nim-0", "nim-1"]
    offsets = poll_offsets(targets(names))
    assert set(offsets.values()) == {min(first_poll_offset(name, 10.0) for name in names)}


def test_an_aggregators_targets_are_polled_in_groups_spread_over_the_interval():
    offsets = poll_offsets(targets([f"backend-{i:03d}" for i in range(200)]))
    groups = Counter(offsets.values())
    assert len(groups) == math.ceil(200 / POLLED_TOGETHER)
    assert max(groups.values()) <= POLLED_TOGETHER and min(groups.values()) >= POLLED_TOGETHER - 1
    # every tenth of the interval has a group: no burst of polls at one moment
    assert {int(offset) for offset in groups} == set(range(10))


def test_a_lone_target_is_polled_at_its_own_offset():
    (target,) = targets(["slow"], [3600])
    assert poll_offsets([target]) == {"slow": first_poll_offset("slow", 3600.0)}


@settings(max_examples=60, deadline=None)
@given(
    names=st.lists(
        st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,11}", fullmatch=True), min_size=1, max_size=80, unique=True
    ),
    intervals=st.lists(st.integers(1, 120), min_size=1, max_size=3),
    turn=st.randoms(use_true_random=False),
)
def test_groups_hold_at_most_polled_together_of_one_interval_and_do_not_depend_on_the_configs_order(
    names, intervals, turn
):
    configured = targets(names, intervals)
    offsets = poll_offsets(configured)
    assert set(offsets) == set(names)
    shuffled = list(configured)
    turn.shuffle(shuffled)
    assert poll_offsets(shuffled) == offsets, "the same targets, in another order, are polled where they were"
    for interval in {target.interval for target in configured}:
        of_interval = [target.name for target in configured if target.interval == interval]
        groups = Counter(offsets[name] for name in of_interval)
        assert len(groups) == math.ceil(len(of_interval) / POLLED_TOGETHER)
        assert max(groups.values()) <= POLLED_TOGETHER
        alone = {first_poll_offset(name, interval) for name in of_interval}
        assert all(0 <= offset < interval and offset in alone for offset in groups)


async def test_targets_a_reload_adds_never_make_a_group_of_more_than_polled_together():
    """Running targets keep their offsets; those a reload adds join their group only where it has room."""
    scheduler = Scheduler(Store(), Shared())
    names = [f"t{i:02d}" for i in range(76)]
    try:
        await scheduler.apply(targets(names[:16], [3600]))
        assert len(set(scheduler._offsets.values())) == 1, "16 targets: one group"
        await scheduler.apply(targets(names, [3600]))
        groups = Counter(scheduler._offsets.values())
        assert sum(groups.values()) == 76 and max(groups.values()) <= POLLED_TOGETHER
        await scheduler.apply(targets(names[:10], [3600]))
        assert set(scheduler._offsets) == set(names[:10]), "a target that went leaves its group"
    finally:
        await scheduler.close()
        await scheduler.shared.close()
