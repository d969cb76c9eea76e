"""The compiled accelerator (exporter/format/_accel.c) gives what its pure-Python twin gives, on any input.

`split` reads a body's sample lines as PLAIN_SAMPLE's split does, and each value as float() does, to the
bit; `fill` writes each value as floatToGoString does, byte for byte. Both are held to the pure-Python
functions (exporter.format.accel) on hostile bodies: random bytes, lines made of the pieces that decide
a match, and both corpora cut, spliced and overwritten at random.
"""

from __future__ import annotations

import json
import math
import os
import random
import struct
import subprocess
import sys
from typing import Any

import pytest
from helpers.support import REPO, every_body, missing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.utils import floatToGoString

from exporter.format import accel
from exporter.format.accel import GO_EXPONENTS, go_float

try:
    from exporter.format import _accel  # type: ignore[attr-defined]
except ImportError:
    _accel = None


@pytest.fixture(scope="module")
def compiled():
    """The compiled module; it must be built where INFERENCE_EXPORTER_REQUIRE_TOOLS=1 (tests/run.sh)."""
    if _accel is None:
        missing("exporter/format/_accel.c is not built: run `python hatch_build.py` (or pip install the package)")
    if accel._stale(_accel.SOURCE):
        missing("exporter/format/_accel.c changed since it was built: run `python hatch_build.py`")
    return _accel


def test_a_module_built_from_another_accel_c_is_not_used(compiled):
    assert not accel._stale(compiled.SOURCE)
    assert accel._stale("0" * 64), "a build of another version of the file"
    assert accel._stale(""), "a build that does not say what it was built from"


def test_the_compiled_module_serves_unless_pure_python_is_forced(compiled):
    forced = accel._pure_python_forced()
    assert ("python" if forced else "c") == accel.IMPLEMENTATION
    assert (accel.split is compiled.split) is not forced


def bits(values: list[float] | None) -> list[bytes] | None:
    """Values to the bit: NaN's payload and sign, -0.0 against 0.0."""
    return None if values is None else [struct.pack("<d", value) for value in values]


def assert_same_split(compiled, data: bytes) -> None:
    values, count, shape, none = compiled.split(data)
    expected_values, expected_count, expected_shape, parts = accel.python_split(data)
    assert (bits(values), count, shape) == (bits(expected_values), expected_count, expected_shape)
    assert none is None and parts == accel.PLAIN_SAMPLE.split(b"\n" + data) and count == len(parts) // 3


#: The pieces that decide whether a line is a sample line, and what its value reads as.
PIECES = [
    b"\n", b"\r", b"\r\n", b" ", b"  ", b"{", b"}", b"{}", b'{a="b c"}', b'{a="}"} ', b"#", b"# HELP x y",
    b"# {a=\"1\"} 2", b"a", b"_", b":", b"x_y", b"9", b"1", b"-0.0", b"+Inf", b"-Inf", b"NaN", b"nan", b"inf",
    b"infinity", b"-nan", b"1e999", b"-1e-999", b"5e-324", b"1e", b".", b"0x10", b"1_0", b"1.5e+10", b"\x00",
    b"\x7f", b"\xff", b"\xc3\xa9", b"\t", b"=", b'"', b"\\",
]  # fmt: skip
pieces = st.lists(st.sampled_from(PIECES), max_size=6).map(b"".join)


def mostly(*good: bytes) -> st.SearchStrategy[bytes]:
    """One of these, or (a time in four) any run of the deciding pieces."""
    return st.one_of(st.sampled_from(good), st.sampled_from(good), st.sampled_from(good), pieces)


#: A line as a server writes it, or nearly: each of its parts drawn from what matches and what does not.
line = st.tuples(
    mostly(b"a", b"x_y:z", b"_", b"abc", b"9a", b"", b"a b", b"#"),
    mostly(b"", b"", b"{}", b'{a="1"}', b'{a="x} y"}', b'{a="1"', b"{\r}", b"}"),
    st.sampled_from([b" ", b" ", b" ", b"  ", b"", b"\t"]),
    mostly(b"1", b"-0.0", b"+Inf", b"NaN", b"1e999", b"5e-324", b"1.5", b"1e", b"0x10", b"1_0", b"a", b"1 2"),
    st.sampled_from([b"", b"", b"\r", b"\r\r", b" "]),
).map(b"".join)
hostile_bodies = st.one_of(
    st.lists(line, max_size=12).map(b"\n".join),
    st.lists(line | pieces, max_size=12).map(b"\n".join),
    st.lists(st.sampled_from(PIECES), max_size=60).map(b"".join),
)


@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=300))
def test_split_reads_random_bytes_as_the_regex_and_float_do(compiled, data):
    assert_same_split(compiled, data)


@settings(max_examples=600, deadline=None)
@given(data=hostile_bodies)
def test_split_reads_lines_made_of_deciding_pieces_as_the_regex_and_float_do(compiled, data):
    assert_same_split(compiled, data)


number_tokens = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(lambda v: repr(v).encode()),
    st.floats().map(lambda v: f"{v:.17g}".encode()),
    st.decimals(allow_nan=False, allow_infinity=False).map(lambda d: str(d).encode()),
    st.integers(-(2**64), 2**64).map(lambda i: str(i).encode()),
    st.text("0123456789.+-eE", min_size=1, max_size=30).map(str.encode),
    st.tuples(st.sampled_from(["", "-", "+"]), st.text("0123456789", max_size=25), st.sampled_from(["", "."]),
              st.text("0123456789", max_size=25)).map(lambda t: "".join(t).encode()),
)  # fmt: skip


@settings(max_examples=1500, deadline=None)
@given(token=number_tokens)
def test_split_reads_a_value_to_the_bit_as_float_does(compiled, token):
    values, count, _, _ = compiled.split(b"a " + token)
    try:
        expected = [float(token)]
    except ValueError:
        expected = None
    if count:  # a token with a blank or `_` is not a value
        assert bits(values) == bits(expected)


@pytest.fixture(scope="module")
def corpus() -> list[bytes]:
    return [body.data for body in every_body()]


def test_split_reads_every_body_of_both_corpora_as_the_regex_and_float_do(compiled, corpus):
    for data in corpus:
        assert_same_split(compiled, data)
        for cut in range(0, len(data), max(1, len(data) // 40)):  # cut anywhere: mid-line, mid-value
            assert_same_split(compiled, data[:cut])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(choice=st.data())
def test_split_reads_mutated_bodies_of_both_corpora_as_the_regex_and_float_do(compiled, corpus, choice):
    data = bytearray(choice.draw(st.sampled_from(corpus)))
    for _ in range(choice.draw(st.integers(1, 8))):
        at = choice.draw(st.integers(0, len(data)))
        kind = choice.draw(st.sampled_from(["insert", "overwrite", "cut", "truncate"]))
        piece = choice.draw(st.one_of(st.sampled_from(PIECES), st.binary(min_size=1, max_size=4)))
        if kind == "insert":
            data[at:at] = piece
        elif kind == "overwrite":
            data[at : at + len(piece)] = piece
        elif kind == "cut":
            del data[at : at + choice.draw(st.integers(1, 40))]
        else:
            del data[at:]
    assert_same_split(compiled, bytes(data))


def without_values(data: bytes) -> tuple:
    """What a body is but for its values: the split's other parts."""
    parts = accel.PLAIN_SAMPLE.split(b"\n" + data)
    return tuple(parts[0::3]), tuple(parts[1::3])


@settings(max_examples=400, deadline=None)
@given(first=hostile_bodies, second=hostile_bodies)
def test_two_bodies_have_the_same_shape_exactly_when_they_differ_in_values_alone(compiled, first, second):
    same = without_values(first) == without_values(second)
    for split in (compiled.split, accel.python_split):
        assert (split(first)[1:3] == split(second)[1:3]) is same


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(choice=st.data())
def test_a_body_with_new_values_has_its_shape_and_those_values(compiled, corpus, choice):
    data = choice.draw(st.sampled_from(corpus))
    _, count, shape, _ = compiled.split(data)
    new = [choice.draw(st.floats(allow_nan=True, allow_infinity=True)) for _ in range(count)]
    texts = iter(new)
    moved = accel.PLAIN_SAMPLE.sub(
        lambda m: b"\n" + m[1] + b" " + repr(next(texts)).encode() + (b"\r" if m[0].endswith(b"\r") else b""),
        b"\n" + data,
    )[1:]
    again, again_count, again_shape, _ = compiled.split(moved)
    assert (again_count, again_shape) == (count, shape)
    assert again is not None and [repr(v) for v in again] == [repr(v) for v in new]


# -- fill --------------------------------------------------------------------------------------------


class Subclass(float):
    pass


every_value = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True),
    st.sampled_from(
        [
            0.0,
            -0.0,
            1e6,
            -1e6,
            999999.9999999999,
            -999999.9999999999,
            5e-324,
            -5e-324,
            1e16,
            1e22,
            1.7976931348623157e308,
        ]
    ),
    st.floats(1e6, 1e16),  # `_created` timestamps: Go's exponent form
    st.integers(-(10**16), 10**16).map(float),  # whole numbers (counts): written without dtoa
    st.integers(-20, 20).map(lambda e: float(10**e) if e >= 0 else -float(10**-e)),
    st.floats(-1e16, -1e6),
    st.integers(-(10**20), 10**20),
    st.booleans(),
    st.floats(allow_nan=False).map(Subclass),
    st.binary(min_size=8, max_size=8).map(lambda raw: struct.unpack("<d", raw)[0]),  # any bit pattern: NaN payloads
)


@settings(max_examples=400, deadline=None)
@given(values=st.lists(every_value, max_size=40), data=st.data())
def test_fill_writes_what_floatToGoString_writes_cut_per_family(compiled, values, data):
    heads = tuple(data.draw(st.sampled_from([b"a ", b'b{x="\xc3\xa9"} ', b""])) for _ in values)
    sizes, left = [], len(heads)
    while left:
        size = data.draw(st.integers(0, left))
        sizes.append(size)
        left -= size
    sizes.append(0)
    for exponents in (False, True):
        assert compiled.fill(heads, tuple(sizes), values, go_float, exponents) == accel.python_fill(
            heads, tuple(sizes), values, go_float, exponents
        )
    pieces = compiled.fill(heads, tuple(sizes), values, go_float, GO_EXPONENTS)
    texts = [floatToGoString(value) for value in values]
    assert b"".join(pieces) == b"".join(head + text.encode() + b"\n" for head, text in zip(heads, texts))
    assert list(map(go_float, values)) == texts


def test_fill_takes_the_first_values_and_refuses_too_few_or_sizes_that_do_not_add_up(compiled):
    fill: Any
    for fill in (compiled.fill, accel.python_fill):
        assert fill((b"a ",), (1,), [1.0, 2.0], go_float, True) == [b"a 1.0\n"]
        with pytest.raises(ValueError):
            fill((b"a ", b"b "), (2,), [1.0], go_float, True)
        with pytest.raises(ValueError):
            fill((b"a ",), (2,), [1.0, 2.0], go_float, True)
        with pytest.raises(TypeError):
            fill(("a ",), (1,), [1.0], go_float, True)


def test_fill_passes_on_what_the_slow_rule_raises(compiled):
    def slow(value):
        raise ArithmeticError("no")

    for fill in (compiled.fill, accel.python_fill):
        with pytest.raises(ArithmeticError):
            fill((b"a ",), (1,), [math.inf], slow, True)


def test_fill_reads_the_values_it_was_given_though_the_slow_rule_changes_their_list(compiled):
    """fill runs Python code (the slow rule) between the values it reads: the compiled module takes a list's
    values first, as the pure-Python twin's slice does, rather than read items of a list changed (or freed:
    emptied, its items are) since."""
    written = []
    for fill in (compiled.fill, accel.python_fill):
        values = [math.inf, 1.5, 2.5, -math.inf]

        def slow(value, values=values):
            values[:] = [7.0] * len(values)  # the same length: the list keeps its storage, with new items
            return go_float(value)

        written.append(fill((b"a ",) * 4, (4,), values, slow, True))
    assert written[0] == written[1] == [b"a +Inf\na 1.5\na 2.5\na -Inf\n"]


# -- holds -------------------------------------------------------------------------------------------

#: Values as a unified family's are: floats of every class, whole numbers, and now and then an int.
rule_values = st.lists(
    st.one_of(
        st.sampled_from([0.0, -0.0, 1.0, 2.0, -1.0, 0.5, math.nan, math.inf, -math.inf]),
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(-3, 3).map(float),
        st.just(1),  # an int: a TypeError where a rule reads it
    ),
    max_size=30,
)


@st.composite
def rule_sets(draw, size: int) -> dict[str, list]:
    """Positions by kind of rule, mostly in runs (a histogram's buckets), some past the values."""
    by_kind: dict[str, list] = {}
    for kind in draw(st.lists(st.sampled_from(list(accel.RULES)), max_size=6)):
        start, length = draw(st.integers(0, size + 1)), draw(st.integers(0, 6))
        if kind in ("ordered", "equal"):
            shift = draw(st.sampled_from([1, -1, 2, 0]))
            by_kind.setdefault(kind, []).extend((start + k, start + k + shift) for k in range(length))
        else:
            by_kind.setdefault(kind, []).extend(start + k for k in range(length))
    return by_kind


def outcome(holds, values, rules: bytes):
    try:
        return holds(values, rules)
    except (IndexError, TypeError) as exc:
        return type(exc)


#: What each rule says of a value (and the value beside it, for a pair): the rules as conform states them.
SPEC = {
    "nonneg": lambda v, _: v >= 0.0,
    "not_negative": lambda v, _: not v < 0.0,
    "integer": lambda v, _: math.isfinite(v) and v == math.floor(v),
    "not_nan": lambda v, _: not math.isnan(v),
    "one": lambda v, _: v == 1.0,
    "bool": lambda v, _: v in (0.0, 1.0),
    "ordered": lambda v, w: v <= w,
    "equal": lambda v, w: v == w,
}


@settings(max_examples=600, deadline=None)
@given(values=rule_values, data=st.data())
def test_holds_says_what_its_twin_and_the_rules_say(compiled, values, data):
    by_kind = data.draw(rule_sets(len(values)))
    packed = accel.rules(by_kind)
    said = outcome(compiled.holds, values, packed)
    assert said == outcome(accel.python_holds, values, packed)
    assert outcome(compiled.holds, tuple(values), packed) == said
    assert outcome(lambda v, r: accel.checker(r)(v), values, packed) == said
    reads = [
        p
        for positions in by_kind.values()
        for pair in positions
        for p in (pair if isinstance(pair, tuple) else (pair,))
    ]
    if any(not 0 <= p < len(values) for p in reads):
        assert said is IndexError
    elif any(values[p].__class__ is not float for p in reads):
        assert said is TypeError
    else:
        expected = all(
            SPEC[kind](values[p[0]], values[p[1]]) if isinstance(p, tuple) else SPEC[kind](values[p], 0.0)
            for kind, positions in by_kind.items()
            for p in positions
        )
        assert said is expected


def test_rules_pack_runs_of_positions():
    packed = accel.rules({"nonneg": [3, 4, 5, 9], "ordered": [(0, 1), (1, 2), (2, 3), (7, 9)], "one": []})
    runs = [tuple(struct.unpack_from("<4q", packed, at)) for at in range(0, len(packed), 32)]
    nonneg, ordered = list(accel.RULES).index("nonneg"), list(accel.RULES).index("ordered")
    assert runs == [(nonneg, 3, 0, 3), (nonneg, 9, 0, 1), (ordered, 0, 1, 3), (ordered, 7, 9, 1)]


def test_holds_refuses_a_run_past_the_values_however_long_without_listing_its_positions(compiled):
    for holds in (compiled.holds, accel.python_holds, lambda v, r: accel.python_checker(r)(v)):
        for length in (2**62, 2**63 - 1):  # the pure-Python twin once listed them first: a MemoryError
            with pytest.raises(IndexError):
                holds([1.0, 2.0], struct.pack("=4q", 0, 0, 0, length))
            with pytest.raises(IndexError):
                holds([1.0, 2.0], struct.pack("=4q", list(accel.RULES).index("equal"), 0, 1, length))


def test_holds_refuses_an_empty_run_of_pairs_whose_second_positions_start_past_the_values(compiled):
    ordered = list(accel.RULES).index("ordered")
    for holds in (compiled.holds, accel.python_holds):  # an empty range is falsy: the twin once read it as no run
        with pytest.raises(IndexError):
            holds([1.0, 2.0], struct.pack("=4q", ordered, 0, 3, 0))
        assert holds([1.0, 2.0], struct.pack("=4q", ordered, 0, 2, 0)) is True


#: A packed number of a run: mostly near the values, now and then at an edge of int64.
run_number = st.one_of(st.integers(-1, 9), st.sampled_from([2**31, 2**62, 2**63 - 1, -(2**63)]))


@settings(max_examples=400, deadline=None)
@given(values=rule_values, runs=st.lists(st.tuples(st.integers(-1, 9) | run_number, run_number, run_number,
                                                   run_number), max_size=4))  # fmt: skip
def test_holds_and_its_twin_agree_on_any_packed_runs(compiled, values, runs):
    packed = b"".join(struct.pack("=4q", *run) for run in runs)
    assert outcome(compiled.holds, values, packed) == outcome(accel.python_holds, values, packed)


def test_rules_refuse_a_kind_they_do_not_know_rather_than_leave_it_unchecked():
    with pytest.raises(KeyError, match="ones"):
        accel.rules({"nonneg": [0], "ones": [1]})  # RULES says "one": a plan's own name for it is not a kind


def test_holds_refuses_rules_that_are_not_runs(compiled):
    for holds in (compiled.holds, accel.python_holds):
        with pytest.raises(TypeError):
            holds([1.0], b"\0" * 31)
        for run in ((99, 0, 0, 1), (0, -1, 0, 1), (0, 0, 0, -1), (list(accel.RULES).index("equal"), 0, -1, 1)):
            with pytest.raises(IndexError):
                holds([1.0, 2.0], struct.pack("<4q", *run))
        assert holds([], b"") is True


def test_forcing_pure_python_is_said_and_served():
    env = {**os.environ, accel.PURE_PYTHON_VARIABLE: "1"}
    command = "from exporter.format import accel; print(accel.IMPLEMENTATION, accel.split is accel.python_split)"
    out = subprocess.run([sys.executable, "-c", command], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["python", "True"]
    version = subprocess.run(
        [sys.executable, "-m", "exporter", "--version"], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    assert "(accelerator: python)" in version.stdout


def test_the_version_says_the_compiled_accelerator_serves(compiled):
    env = {key: value for key, value in os.environ.items() if key != accel.PURE_PYTHON_VARIABLE}
    version = subprocess.run(
        [sys.executable, "-m", "exporter", "--version"], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    assert "(accelerator: c)" in version.stdout


OLDEST_VENV = REPO / ".venv-prometheus-client-oldest"


def test_fill_writes_what_the_oldest_prometheus_client_writes(compiled):
    """prometheus_client 0.18.0 (the oldest a backend pins) wrote `1e+010`: where the installed release's
    exponents are not go_exponent's, every such value goes through its floatToGoString."""
    python = OLDEST_VENV / "bin" / "python"
    if not python.exists():
        missing(f"{OLDEST_VENV.name} is missing: tests/run.sh makes it")
    rng = random.Random(3)
    values = [1e6, 1234567.5, 1e10, 9999999999999998.0, 1e16, -1e6, 0.0, -0.0, 5e-324, math.inf, -math.inf, math.nan]
    values += [rng.uniform(-1, 1) * 10 ** rng.uniform(-30, 30) for _ in range(2000)]
    values += [float(rng.randrange(-(10**17), 10**17) // 10 ** rng.randrange(17)) for _ in range(1000)]  # whole
    script = (
        "import sys, json; from prometheus_client.utils import floatToGoString as f; "
        "print(json.dumps([f(v) for v in json.loads(sys.stdin.read())]))"
    )
    out = subprocess.run(
        [str(python), "-c", script], input=json.dumps(values), capture_output=True, text=True, check=True
    )
    texts = json.loads(out.stdout)
    old = dict(zip(map(struct.Struct("<d").pack, values), texts))
    exponents = all(
        accel.go_exponent(v) == old[struct.pack("<d", v)] for v in (1e6, 1234567.5, 1e10, 9999999999999998.0)
    )
    assert not exponents  # `1e+010`
    heads = (b"a ",) * len(values)
    for fill in (compiled.fill, accel.python_fill):
        written = fill(heads, (len(values),), values, lambda v: old[struct.pack("<d", v)], exponents)
        assert written == [b"".join(b"a " + text.encode() + b"\n" for text in texts)]


def test_build_info_says_which_accelerator_serves():
    from exporter.serve.collector import Collector
    from exporter.serve.store import Store

    info = next(
        family for family in Collector(Store(), process_metrics=False).collect() if family.name.endswith("build_info")
    )
    assert [sample.labels["accelerator"] for sample in info.samples] == [accel.IMPLEMENTATION]
