"""`parse` reads the plain sample lines of a body many at once (exporter.format.parse._RunReader) and hands
every other line to the line reader. Property: on any body, plain lines mixed with odd ones, it reads
exactly what the line reader reads alone (`_parse_by_line`), or fails with the same error."""

from __future__ import annotations

import contextlib
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import exporter.format.parse
from exporter.format.parse import ParseError, _decode, _parse_by_line, parse

NAMES = ["a", "a_total", "a_bucket", "a_sum", "a_count", "a_created", "b", "b_total", "a_total_total", "c:x", "d_info"]
LABEL_NAMES = ["l", "le", "model", "q", "_x"]
#: Label values with what could confuse a reader that splits on quotes and separators.
LABEL_VALUES = [
    "x",
    "",
    "0.5",
    "+Inf",
    "a b",
    "}",
    "{",
    ",l=",
    "=",
    "a=",
    " , ",
    "#",
    "K\u00f8benhavn",
    "\u2603 1",
    "\t",
]
VALUES = ["1", "2", "2.5", "NaN", "+Inf", "-0", "1e3", "1\u00a0", "1\x0b"]
#: Values only the careful reader judges, and refuses (`_`, non-ASCII digits, words, hex).
BAD_VALUES = ["1_0", "abc", "0x1", "\u0661", ".", "\r"]
#: Lines that are not plain samples, yet read: metadata, comments, blanks, timestamps, exemplars,
#: quoted UTF-8 names, escapes, blanks and tabs in odd places.
ODD_LINES = [
    "# HELP a some help",
    '# HELP a_total "quoted" help',
    "# TYPE a histogram",
    "# TYPE a counter",
    "# TYPE a_total counter",
    "# TYPE b gauge",
    "# TYPE b_total counter",
    "# TYPE d info",
    "# UNIT a seconds",
    "# EOF",
    "# a comment {}",
    "#",
    "",
    " ",
    "\t",
    "a 1 1700000000000",
    'a{l="x"} 1 1700000000',
    'a_bucket{le="1"} 2 # {trace_id="t"} 1.5',
    'a_bucket{le="1"} 2 # {trace_id="t"} 1.5 1700000000',
    '{"a.b",l="x"} 1',
    '{"a.b"} 2',
    'a{"l.m"="x"} 1',
    'a{l="a\\"b"} 1',
    'a{l="a\\\\b"} 1',
    'a{l="a\\nb"} 1',
    "a  1",
    "a\t1",
    " a 1",
    'a{ l = "x" , q="y" , } 1',
    'a{l="x",} 1',
    "a{} 1",
    "a_total_total 1",
    'a{l="x"} 1\t',
    'a_sum{l="x"} 3 ',
]
#: Lines the reader refuses.
BAD_LINES = [
    'a{l="x"}1',
    'a{l="x} 1',
    'a{l="x"',
    'a{1l="x"} 1',
    'a{l="x",l="y"} 1',
    "a{l=x} 1",
    'a{l="x"} 1 2 3',
    "a.b 1",
    'a{l="x"}} 1',
    'a{l="x"}{q="y"} 1',
    "1a 1",
    'a{l="x"} ',
    "# TYPE a nonsense",
    "# HELP",
    'a{l="x} 1',
    'b{l="x} 1',
    'a{l="x",q="} 1',
    'a{l=""x"} 1',
    'a{l="x"}" 1',
    'b_total{l="x\\"} 1',
]


@st.composite
def plain_lines(draw, values=st.sampled_from(VALUES)) -> str:  # noqa: B008 (a strategy, built once, is the default)
    name = draw(st.sampled_from(NAMES))
    names = draw(st.lists(st.sampled_from(LABEL_NAMES), max_size=3, unique=True))
    labels = ",".join(f'{label}="{draw(st.sampled_from(LABEL_VALUES))}"' for label in names)
    head = f"{name}{{{labels}}}" if names or draw(st.booleans()) else name
    return f"{head} {draw(values)}"


@st.composite
def bodies(draw) -> bytes:
    """Plain lines mixed with odd ones; in some bodies one wrong line; `\\r\\n` line ends; the last line
    whole, unterminated, or cut anywhere (even inside a UTF-8 character)."""
    lines = draw(st.lists(st.one_of(plain_lines(), plain_lines(), st.sampled_from(ODD_LINES)), max_size=24))
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):  # wrong lines: errors, unless `keep` skips them
        wrong = draw(st.one_of(st.sampled_from(BAD_LINES), plain_lines(st.sampled_from(BAD_VALUES))))
        lines.insert(draw(st.integers(0, len(lines))), wrong)
    text = "".join(line + draw(st.sampled_from(["\n", "\n", "\r\n"])) for line in lines)
    data = text.encode()
    ending = draw(st.sampled_from(["whole", "whole", "unterminated", "cut"]))
    if ending == "unterminated":
        data = data.rstrip(b"\n")
    elif ending == "cut" and data:
        data = data[: draw(st.integers(0, len(data) - 1))]
    return data


@contextlib.contextmanager
def pieces_of(size: int):
    """The fast pass reads a body `size` characters (and the rest of the line) at a time."""
    kept, exporter.format.parse._CHUNK = exporter.format.parse._CHUNK, size
    try:
        yield
    finally:
        exporter.format.parse._CHUNK = kept


def read(read_body) -> tuple:
    """What a reading produced, comparable: families, order, problems; or the error."""
    order: list = []
    try:
        result = read_body(order)
    except ParseError as error:
        return ("error", error.line, error.message)

    def sample(s):
        return None if s is None else (s.name, s.labels, "NaN" if math.isnan(s.value) else s.value, s.key)

    families = [(f.name, f.type, f.help, f.unit, [sample(s) for s in f.samples]) for f in result.families]
    return families, [sample(s) for s in order], result.truncated_lines, result.problems, result.metadata_lines


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    bodies(),
    st.booleans(),
    st.one_of(
        st.none(),
        st.just(frozenset({"b", "b_total", "c:x", "d"})),  # most wrong lines are family a's: skipped, not refused
        st.frozensets(st.sampled_from(["a", "a_total", "b", "b_total", "c:x", "d", "a.b"])),
    ),
    st.sampled_from([None, None, "underscores", "dots", "values", "allow-utf-8"]),
    st.sampled_from([1 << 20, 1 << 20, 1, 40]),
)
def test_reading_plain_lines_many_at_once_reads_what_the_line_reader_reads(data, openmetrics, kept, escaping, piece):
    """`piece`: how much of the body is read at once (small ones put piece boundaries everywhere)."""
    keep = None if kept is None else kept.__contains__
    try:
        text, truncated = _decode(data)
    except ParseError:
        return  # invalid UTF-8 before the last line: refused before either reader starts
    with pieces_of(piece):
        fast = read(lambda order: parse(data, openmetrics=openmetrics, keep=keep, escaping=escaping, order=order))
    slow = read(lambda order: _parse_by_line(text, truncated, openmetrics, escaping, keep, {}, order, None))
    assert fast == slow, data


def test_a_body_of_plain_lines_keeps_each_series_as_written():
    body = '# TYPE a histogram\na_bucket{le="1",model="m"} 1\na_bucket{le="+Inf",model="m"} 2\na_sum{model="m"} 3\n'
    (family,) = parse(body).families
    assert [(s.name, s.labels, s.value, s.key) for s in family.samples] == [
        ("a_bucket", {"le": "1", "model": "m"}, 1.0, 'a_bucket{le="1",model="m"}'),
        ("a_bucket", {"le": "+Inf", "model": "m"}, 2.0, 'a_bucket{le="+Inf",model="m"}'),
        ("a_sum", {"model": "m"}, 3.0, 'a_sum{model="m"}'),
    ]


def test_an_error_after_many_plain_lines_names_its_own_line():
    body = "".join(f'a{{i="{i}"}} {i}\n' for i in range(5000)) + 'a{i="x"} one\n'
    with pytest.raises(ParseError) as caught:
        parse(body)
    assert caught.value.line == 5001
    assert "one" in caught.value.message


def test_a_body_larger_than_one_piece_reads_as_one():
    """The fast pass reads a body a piece at a time: a family that spans pieces is still one family."""
    body = "# TYPE a counter\n" + "".join(f'a_total{{i="{i}",pad="{"x" * 200}"}} {i}\n' for i in range(12_000))
    assert len(body) > 2 << 20
    order: list = []
    fast = parse(body, order=order)
    assert fast == _parse_by_line(body, 0, False, None, None, {}, [], None)
    assert len(fast.families[0].samples) == len(order) == 12_000


def test_a_head_with_an_odd_number_of_quotes_in_a_family_not_kept_is_skipped_and_the_next_line_read():
    body = 'b 1\na{l="x} 1\nb 2\n'
    assert [s.value for s in parse(body, keep=lambda name: name != "a").families[0].samples] == [1.0, 2.0]


def test_a_body_whose_first_piece_has_timestamps_reads_the_same_as_the_line_reader_reads_it():
    """After a piece of mostly odd lines the rest goes to the line reader whole: same result."""
    body = "".join(f'a{{i="{i}"}} {i} 1700000000\n' for i in range(50)) + "".join(
        f'a{{i="{i}"}} {i}\n' for i in range(50)
    )
    with pieces_of(100):
        fast = parse(body)
    assert fast == _parse_by_line(body, 0, False, None, None, {}, [], None)
    assert [s.key for s in fast.families[0].samples][49:51] == [None, 'a{i="0"}']
