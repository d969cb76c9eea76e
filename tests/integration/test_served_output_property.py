"""Whatever upstreams send, what /metrics serves parses with prometheus_client's strict OpenMetrics
parser and with promtool, and our own series are ours alone (property tests over hostile-ish bodies)."""

from __future__ import annotations

import os

from helpers.hostile import exposition, promtool_problems, serve, strictly_parsed
from helpers.support import require_tool
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from exporter.serve.store import Store

#: Examples per run: HOSTILE_EXAMPLES=2000 for a longer hunt (about a minute per thousand).
EXAMPLES = int(os.environ.get("HOSTILE_EXAMPLES", "60"))
NAMES = st.sampled_from(
    [
        "a",
        "b_total",
        "h",
        "h_bucket",
        "s",
        "i",
        "__d",
        "inference_exporter_target_up",
        "vllm:x",
        "x_created",
        "st",
        # names a backend profile reads, so that the unified families are made from hostile input too
        "vllm:time_to_first_token_seconds",
        "vllm:num_requests_running",
        "vllm:prompt_tokens",
        "vllm:kv_cache_usage_perc",
    ]
)
TYPES = st.sampled_from(
    ["counter", "gauge", "histogram", "summary", "untyped", "info", "stateset", "gaugehistogram", None]
)
SUFFIXES = st.sampled_from(["", "", "_total", "_bucket", "_count", "_sum", "_created", "_info", "_gcount", "_gsum"])
LABEL_NAMES = st.sampled_from(["l", "le", "le", "quantile", "__name__", "target", "__x", "st", "exported_target"])
LABEL_VALUES = st.sampled_from(
    ["1", "+Inf", "NaN", "0.5", "x", "inf", "-1", "2", "x\ry", "\u2028\u0085", "a\\\\", "\x00"]
)
HELPS = st.sampled_from(["help", "with \\\\ backslash", "\u00a0lead", "", "x\ry", "\x00\u2028", "trailing\u2003 "])
VALUES = st.sampled_from(["0", "1", "2", "-1", "2.5", "NaN", "+Inf", "-Inf", "1e3", "1"])


@st.composite
def families(draw):
    name, kind = draw(NAMES), draw(TYPES)
    lines = []
    if kind is not None:
        lines.append(f"# TYPE {name} {kind}")
    if draw(st.booleans()):
        lines.append(f"# HELP {name} {draw(HELPS)}")
    for _ in range(draw(st.integers(1, 5))):
        labels = draw(st.dictionaries(LABEL_NAMES, LABEL_VALUES, max_size=3))
        text = ",".join(f'{key}="{value}"' for key, value in labels.items())
        lines.append(f"{name}{draw(SUFFIXES)}{{{text}}} {draw(VALUES)}")
    return lines


@st.composite
def polls(draw):
    """1-3 polls of one or two targets, each body a few families in text or OpenMetrics."""
    openmetrics = draw(st.booleans())
    bodies = []
    for _ in range(draw(st.integers(1, 3))):
        lines = [line for family in draw(st.lists(families(), min_size=1, max_size=4)) for line in family]
        bodies.append(("\n".join(lines) + ("\n# EOF\n" if openmetrics else "\n")).encode())
    return openmetrics, bodies


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.lists(polls(), min_size=1, max_size=2))
async def test_served_output_always_parses_strictly_and_our_target_up_is_ours(targets):
    store = Store()
    for index, (openmetrics, bodies) in enumerate(targets):
        await serve(bodies, openmetrics=openmetrics, target=f"name: t{index}, type: http, url: http://h/m", store=store)
    text = exposition(store)
    event(f"targets up: {sum(1 for snap in store.snapshots() if snap.up)} of {len(targets)}")
    parsed = {family.name: family for family in strictly_parsed(text)}
    up = parsed["inference_exporter_target_up"]
    assert sorted(sample.labels["target"] for sample in up.samples) == [f"t{i}" for i in range(len(targets))]
    assert all(set(sample.labels) == {"target"} for sample in up.samples)
    for family in parsed.values():
        for sample in family.samples:
            assert not any(label.startswith("__") for label in sample.labels), sample
            assert not sample.name.startswith("__")
    assert not promtool_problems(exposition(store, openmetrics=False), require_tool("promtool"))
