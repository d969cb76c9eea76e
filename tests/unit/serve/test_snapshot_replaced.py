"""A poll's snapshot is made with `Snapshot.replaced`, a quicker `dataclasses.replace`: it must make
exactly what dataclasses.replace makes, for any fields changed, and refuse a field Snapshot has not."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.config.loader import parse_config
from exporter.serve.store import Snapshot

TARGETS = parse_config(
    "targets:\n  - {name: a, type: http, url: 'http://127.0.0.1:9/metrics'}\n"
    "  - {name: b, type: http, url: 'http://127.0.0.1:9/other'}\n"
).targets
VALUES = {
    "target": st.sampled_from(TARGETS),
    "up": st.sampled_from([None, True, False]),
    "last_poll": st.none() | st.floats(),
    "polls": st.integers(0, 10**6),
    "errors": st.dictionaries(st.text(max_size=5), st.integers(0, 9), max_size=3),
    "raw": st.binary(max_size=20),
    "next_poll": st.none() | st.floats(allow_nan=False),
    "content_type": st.text(max_size=10),
}


@settings(max_examples=50, deadline=None)
@given(before=st.fixed_dictionaries({}, optional=VALUES), changes=st.fixed_dictionaries({}, optional=VALUES))
def test_replaced_makes_what_dataclasses_replace_makes(before, changes):
    snapshot = Snapshot(**{"target": TARGETS[0], **before})
    made = snapshot.replaced(**changes)
    expected = dataclasses.replace(snapshot, **changes)
    assert made == expected
    assert all(getattr(made, f.name) is getattr(expected, f.name) for f in dataclasses.fields(Snapshot))
    assert type(made) is Snapshot and made is not snapshot


def test_replaced_refuses_a_field_a_snapshot_has_not():
    with pytest.raises(TypeError, match="no field bogus"):
        Snapshot(TARGETS[0]).replaced(bogus=1)
