"""The overview's windows read a poll's values by position where the pipeline filled a template
(exporter.pipeline.template.sample_values), working out once per shape what each position holds: they
must see exactly what reading every sample would."""

from __future__ import annotations

import dataclasses

from helpers.support import simulated, with_values_moved
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.config.loader import parse_config
from exporter.pipeline.normalize import apply_prefix
from exporter.pipeline.target import Pipeline
from exporter.pipeline.template import sample_series, sample_values
from exporter.serve.overview.windows import COUNTER_SLOTS, COUNTERS, GAUGES, Windows
from exporter.serve.store import Snapshot
from exporter.sources.base import Exposition

#: Backends whose simulators serve the unified gauges, counters and histograms the overview reads.
PROFILES = ("vllm", "sglang", "tgi", "trtllm", "lmdeploy", "nim", "llamacpp", "triton")


def target(extra: str):
    return parse_config(f"targets:\n  - {{name: t, type: http, url: 'http://127.0.0.1:9/metrics'{extra}}}\n").targets[0]


def as_plain_samples(families):
    """The same families with their samples as a plain tuple of Samples, read one by one."""
    return tuple(dataclasses.replace(family, samples=tuple(family.samples)) for family in families)


def assert_last_readings_are_the_served_values(windows: Windows, families, extra: str) -> None:
    """Each row's last gauges and raw token counters are the served samples' values for its model,
    read here the plain way (every sample, by name and labels)."""
    prefix = "inference_" if "prefix" in extra else ""
    served: dict[tuple[str, str], float] = {}
    for family in families:
        for sample in family.samples:
            if "backend" in sample.labels or "exported_backend" in sample.labels:
                model = sample.labels.get("exported_model", sample.labels.get("model", ""))
                key = (model, sample.name)
                served[key] = served.get(key, 0.0) + sample.value if sample.name.endswith("_total") else sample.value
    read = [
        (row.points[-1].gauges[index], served.get((model, apply_prefix(name, prefix))))
        for (_, _, model), row in windows.rows.items()
        for index, name in enumerate(GAUGES)
    ] + [
        (row.raw[COUNTER_SLOTS.index(name)], served.get((model, apply_prefix(name, prefix))))
        for (_, _, model), row in windows.rows.items()
        for name in COUNTERS
    ]
    assert all(kept == expected for kept, expected in read), read
    assert any(kept is not None for kept, _ in read)


@settings(max_examples=20, deadline=None)
@given(
    profile=st.sampled_from(PROFILES),
    seed=st.integers(0, 3),
    steps=st.lists(st.integers(0, 4), min_size=3, max_size=6),
    extra=st.sampled_from(["", ", prefix: inference_", ", labels: {model: pinned}"]),
)
def test_windows_see_the_same_points_from_a_filled_template_as_from_its_samples(profile, seed, steps, extra):
    configured = target(extra)
    pipeline = Pipeline(configured)
    fast, plain = Windows(spacing=0), Windows(spacing=0)
    bodies = [simulated(profile, ticks=30 + sum(steps[: i + 1]), seed=seed) for i in range(len(steps))]
    bodies += [with_values_moved(bodies[-1], step) for step in (1, 2, 3)]  # one shape: a template by the last
    filled = 0
    for poll, body in enumerate(bodies):
        output = pipeline.run(exposition=Exposition(body))
        for family in output.families:
            shape, values = sample_values(family.samples)
            filled += shape is not None
            assert list(values) == [sample.value for sample in family.samples]
            assert list(sample_series(family.samples)) == [(s.name, s.labels) for s in family.samples]
        at = 1000.0 + poll
        fast.observe(Snapshot(configured, output.families, up=True, last_poll=at, profile=output.profile))
        plain.observe(
            Snapshot(configured, as_plain_samples(output.families), up=True, last_poll=at, profile=output.profile)
        )
    assert filled, "the later polls of one shape fill a template"
    assert_last_readings_are_the_served_values(fast, output.families, extra)
    assert fast.rows and fast.rows == plain.rows
    assert all(len(row.points) == len(bodies) for row in fast.rows.values())


def test_a_target_gone_takes_what_its_windows_worked_out_per_shape():
    configured = target("")
    pipeline = Pipeline(configured)
    windows = Windows(spacing=0)
    for poll in range(3):
        output = pipeline.run(exposition=Exposition(simulated("vllm", ticks=30 + poll)))
        windows.observe(Snapshot(configured, output.families, up=True, last_poll=1000.0 + poll))
    assert windows._readings["t"][1], "kept for the shapes of the last poll"
    windows.forget(set())
    assert not windows._readings and not windows.rows
