"""The fast path reads what the long way reads, whatever bodies come; and the parser keeps no memory
beyond what one target serves."""

from __future__ import annotations

import math
import sys

import pytest
from helpers.support import BodyReader
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_oracle
from prometheus_client.parser import text_string_to_metric_families as text_oracle

from exporter.format.parse import ParseError, parse


def readable(result) -> list:
    """A parse result as comparable values (NaN equal to NaN)."""
    return [
        (
            f.name,
            f.type,
            f.help,
            f.unit,
            [(s.name, s.labels, "NaN" if math.isnan(s.value) else s.value) for s in f.samples],
        )
        for f in result.families
    ]


def read_both(reader: BodyReader, body: bytes, openmetrics: bool):
    fast: tuple[str, object]
    slow: tuple[str, object]
    try:
        fast = ("ok", readable(reader.parse(body, openmetrics=openmetrics)))
    except ParseError as exc:
        fast = ("error", exc.line)
    try:
        slow = ("ok", readable(parse(body, openmetrics=openmetrics)))
    except ParseError as exc:
        slow = ("error", exc.line)
    return fast, slow


def test_a_line_after_eof_never_lends_its_value_to_a_sample():
    reader = BodyReader()
    bodies = [b"a 1\nb 2 100\n# EOF\nc 2\n", b"a 1\nb 2 100\n# EOF\nc 7\n"]
    for body in bodies:
        fast, slow = read_both(reader, body, True)
        assert fast == slow


@pytest.mark.parametrize("exemplar", ['# {x="y"}', '#{x="y"}'])
def test_an_exemplar_value_is_never_read_as_its_sample_value(exemplar):
    reader = BodyReader()
    for value in (1, 1, 5, 6):
        body = f'a{{l="v"}} 1 {exemplar} {value}\n'.encode()
        fast, slow = read_both(reader, body, False)
        assert fast == slow == ("ok", [("a", "untyped", "", "", [("a", {"l": "v"}, 1.0)])])


def test_a_reader_remembers_nothing_of_bodies_whose_shape_changes_every_poll():
    reader = BodyReader()
    for poll in range(30):
        lines = [f"# HELP m{i} changing help {poll}" for i in range(500)] + [f"# note {poll} {i}" for i in range(2000)]
        reader.parse(("\n".join(lines) + "\n" + "\n".join(f"m{i} {poll}" for i in range(500)) + "\n").encode())
        assert reader.skeleton is None
        # of the last body, only its shape's key: a few bytes, not its lines
        assert reader.pipeline._last_key is not None and sys.getsizeof(reader.pipeline._last_key[-1]) < 100
    steady = b"# HELP x y\nx 1\n"
    reader.parse(steady)
    reader.parse(steady)
    assert reader.skeleton is not None, "the second body of one shape is remembered"


@pytest.mark.parametrize("openmetrics", [False, True])
@pytest.mark.parametrize("help_text", ["\u00a0starts with NBSP", "\u2003em space", "\u00a0both\u2003"])
def test_help_keeps_leading_unicode_whitespace_as_prometheus_client_does(openmetrics, help_text):
    body = f"# HELP a {help_text}\n# TYPE a gauge\na 1\n" + ("# EOF\n" if openmetrics else "")
    oracle = openmetrics_oracle if openmetrics else text_oracle
    expected = next(iter(oracle(body))).documentation
    assert parse(body.encode(), openmetrics=openmetrics).families[0].help == expected


# -- the property: the fast path and the long way agree on any sequence of bodies -------------------

#: Few values, so that two lines' values often coincide: that is when a misread can hide.
VALUES = st.sampled_from(["1", "2", "2", "NaN", "1_0"])
#: Lines servers write, and lines the fast path must not misread: timestamps, exemplars (spaced or not),
#: text after `# EOF`, blanks and tabs in odd places, escapes, a `}` inside a label value, `\r`.
LINES = st.sampled_from(
    [
        "a {v}",
        'a{{l="x"}} {v}',
        "b_total {v}",
        'c{{l="y"}} {v} 123',
        "c {v} 5",
        'd{{q="1"}} {v} # {{t="1"}} {w}',
        'd{{q="2"}} {v} #{{t="1"}} {w}',
        'd {v} # {{t="1"}} {w}',
        "# HELP a help",
        "# HELP a \u00a0nbsp",
        "# TYPE a gauge",
        "# TYPE b counter",
        "# EOF",
        "# EOF",
        "# c {v}",
        'e{{l="a\\"b"}} {v}',
        "",
        "a {v}\r",
        "a  {v}",
        "a\t{v}",
        'f{{l="{v} }}"}} {v}',
        "b {w}",
        "a {v} {w}",
    ]
)


@st.composite
def body_sequences(draw):
    """2-6 bodies of one or two line layouts, values drawn anew for each body (so shapes repeat)."""
    layouts = draw(st.lists(st.lists(LINES, min_size=1, max_size=6), min_size=1, max_size=2))
    bodies = []
    for index in range(draw(st.integers(3, 6))):
        layout = layouts[0] if index < 2 else draw(st.sampled_from(layouts))
        lines = [line.format(v=draw(VALUES), w=draw(VALUES)) for line in layout]
        bodies.append(("\n".join(lines) + draw(st.sampled_from(["\n", "", "\n\n"]))).encode())
    return draw(st.booleans()), bodies


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body_sequences())
def test_the_fast_path_reads_every_body_sequence_as_the_long_way_does(case):
    openmetrics, bodies = case
    reader = BodyReader()
    for body in bodies:
        fast, slow = read_both(reader, body, openmetrics)
        assert fast == slow, body
