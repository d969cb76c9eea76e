"""Sample values are written as prometheus_client writes them (floatToGoString), however they are
rendered: by the long way (Chunks.of) or value by value (accel.go_float)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from exporter.format.accel import go_float
from exporter.pipeline.exposition import Chunks, SeriesFamily

VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-2e6, max_value=2e6),
    st.floats(min_value=9e5, max_value=2e16),  # Go's exponents, where timestamps are
    st.sampled_from([0.0, -0.0, 1e6, -1e6, 999999.9, 1e-5, 5e-324, 1e16, 9999999999999998.0, 1.7e9, 1234567.0]),
    st.integers(min_value=-(10**7), max_value=10**7),
)


@settings(max_examples=500, deadline=None)
@given(st.lists(VALUES, max_size=30))
def test_values_are_written_as_prometheus_client_writes_them(values):
    assert list(map(go_float, values)) == [floatToGoString(value) for value in values]
    family = SeriesFamily("x", "gauge", "", [Sample("x", {"a": "1"}, value) for value in values])
    expected = "".join(f'x{{a="1"}} {floatToGoString(value)}\n' for value in values)
    assert Chunks.of(family).openmetrics == expected.encode()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=-999999.0, max_value=999999.0), min_size=1, max_size=30))
def test_a_family_of_plain_floats_is_written_as_prometheus_client_writes_it(values):
    family = SeriesFamily("x", "gauge", "", [Sample("x", {}, value) for value in values])
    assert Chunks.of(family).openmetrics == "".join(f"x {floatToGoString(value)}\n" for value in values).encode()
