"""A steady poll's per-sample work, compiled where it could be: the C module exporter/format/_accel.c
when it was built (`pip install .` builds it; so does `python hatch_build.py` in a checkout), else the
pure-Python functions below, which give the same results byte for byte and bit for bit.

`IMPLEMENTATION` says which is in use ("c" or "python"); `INFERENCE_EXPORTER_PURE_PYTHON=1` forces
the pure-Python one (read once, at import). The daemon's startup log line and its build_info metric
say which it runs.

- `split(data)`: a body's sample lines (PLAIN_SAMPLE) in one pass: their values as float() reads
  them (None where one is not a number), their count, the body's shape (what its key hashes), and
  PLAIN_SAMPLE's split of it where it was made on the way (the pure-Python one; None from C).
- `fill(heads, sizes, values, slow, exponents)`: sample lines `head + text(value) + newline`, cut into
  pieces of `sizes` lines: text(v) is repr(v) for an exact float under a million in magnitude,
  `go_exponent(v)` for one from a million up to 1e16 where `exponents` says that is prometheus_client's
  text, else slow(v).
- `holds(values, rules)`: whether a poll's values (floats) keep conform's rules (exporter.pipeline.conform),
  given as `rules(...)` packed them: runs of positions, each read by one kind of rule (RULES). A fast
  path checks them through `checker(rules)`, which the pure-Python twin compiles once.
"""

from __future__ import annotations

import hashlib
import itertools
import operator
import os
import re
from array import array
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

from prometheus_client.utils import floatToGoString

from exporter.format import picks

__all__ = [
    "GO_EXPONENTS",
    "IMPLEMENTATION",
    "PLAIN_SAMPLE",
    "PURE_PYTHON_VARIABLE",
    "RULES",
    "checker",
    "fill",
    "go_exponent",
    "go_float",
    "holds",
    "rules",
    "split",
]

#: The variable that forces the pure-Python implementation (any of 1, true, yes).
PURE_PYTHON_VARIABLE = "INFERENCE_EXPORTER_PURE_PYTHON"

#: A sample line as nearly every server writes it: `name` or `name{labels}`, one blank, the value (ASCII
#: without `_`, as Go's ParseFloat reads it), the end of the line (or body). A line with a timestamp, an
#: exemplar or blanks elsewhere does not match. Split on it, a body (with a newline put in front) gives
#: [text before the first sample line, its series, its value, text up to the next one, ...].
PLAIN_SAMPLE = re.compile(rb"\n([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^\n]*\})?) ([!-^`-~]+)\r?(?=\n|\Z)")


def python_split(data: bytes) -> tuple[list[float] | None, int, bytes, list[bytes] | None]:
    """`split` in Python: PLAIN_SAMPLE's split, float() of each value, and the shape's bytes: the length
    of every piece between sample lines (native uint64), the pieces, the series joined by newlines. It
    also hands back the split itself, which the compiled one leaves to whoever needs it."""
    parts = PLAIN_SAMPLE.split(b"\n" + data)
    between, series = parts[0::3], parts[1::3]
    try:
        values: list[float] | None = list(map(float, parts[2::3]))
    except ValueError:
        values = None
    shape = array("Q", map(len, between)).tobytes() + b"".join(between) + b"\n".join(series)
    return values, len(series), shape, parts


def go_exponent(value: float) -> str:
    """Go's text (`%g`, as prometheus_client's floatToGoString writes it) of a float from a million up
    to 1e16, made of its repr: `repr` writes it in full with its point after the seventh digit or later,
    and Go puts that point after the first digit, with an exponent."""
    text = repr(value)
    point = text.find(".")
    mantissa = f"{text[0]}.{text[1:point]}{text[point + 1 :]}".rstrip("0.")
    return f"{mantissa}e+{point - 1:02d}"


def go_float(value: float) -> str:
    """`floatToGoString(value)` as the installed prometheus_client writes it, quicker for a float: `repr`
    under a million in magnitude, `go_exponent` from a million up to 1e16 (every `_created` timestamp)
    where that is its text (GO_EXPONENTS), its own function for everything else. The rule `fill` writes
    values by (its `slow`, with `exponents=GO_EXPONENTS`) and the long way renders them by."""
    if value.__class__ is float:
        if -1e6 < value < 1e6:
            return repr(value)
        if GO_EXPONENTS and 1e6 <= value < 1e16:
            return go_exponent(value)
    return floatToGoString(value)


#: Whether the installed prometheus_client writes exponents as `go_exponent` does (older releases wrote
#: `e+010` for 1e10); else every such value goes through its floatToGoString.
GO_EXPONENTS = all(go_exponent(v) == floatToGoString(v) for v in (1e6, 1234567.5, 1e10, 9999999999999998.0))


def python_fill(
    heads: tuple[bytes, ...],
    sizes: tuple[int, ...],
    values: Sequence[Any],
    slow: Callable[[Any], str],
    exponents: bool,
) -> list[bytes]:
    """`fill` in Python: `repr` of each small exact float, `go_exponent` of each from a million up to
    1e16 (where `exponents`), `slow` of every other value, encoded at once."""
    count = len(heads)
    if len(values) < count:
        raise ValueError("fill(): fewer values than lines")
    texts = [
        repr(v)
        if v.__class__ is float and -1e6 < v < 1e6
        else go_exponent(v)
        if exponents and v.__class__ is float and 1e6 <= v < 1e16
        else slow(v)
        for v in values[:count]
    ]
    # A value's text has no line break: each comes back with its newline from one encoding of them all.
    lines: list[bytes] = [b""] * (2 * count)
    lines[0::2] = heads
    lines[1::2] = ("\n".join(texts) + "\n").encode().splitlines(keepends=True) if count else []
    out, line = [], 0
    for size in sizes:
        if size < 0 or size > count - line:
            raise ValueError("fill(): the sizes do not add up to the heads")
        out.append(b"".join(lines[2 * line : 2 * (line + size)]))
        line += size
    return out


#: The kinds of rule `holds` checks, in the order of their codes: of the value at each position of a
#: run, whether it is >= 0 (`nonneg`: NaN breaks it), not < 0 (`not_negative`: NaN keeps it), whole
#: and finite (`integer`), not NaN, 1, 0 or 1 (`bool`); of the values at the positions of two runs side
#: by side, whether the first is <= the second (`ordered`) or equal to it.
RULES = ("nonneg", "not_negative", "integer", "not_nan", "one", "bool", "ordered", "equal")
_PAIRS = ("ordered", "equal")


def rules(by_kind: dict[str, Sequence[Any]]) -> bytes:
    """Rules for `checker`: positions by kind of rule (RULES; pairs of positions for `ordered` and
    `equal`), packed as runs of consecutive positions, four native int64 each (kind, first position, first
    second position, length), so that a fast path keeps a few bytes per family rather than an int per value.
    The runs are found at C speed: a first poll packs its every family's rules. A kind not in RULES is a
    KeyError, not a rule left unchecked."""
    unknown = by_kind.keys() - set(RULES)
    if unknown:
        raise KeyError(f"rules(): no kind of rule {', '.join(sorted(unknown))} (RULES: {', '.join(RULES)})")
    out = array("q")
    for code, kind in enumerate(RULES):
        positions = by_kind.get(kind) or ()
        if not positions:
            continue
        if kind in _PAIRS:
            firsts, seconds = list(map(_FIRST, positions)), list(map(_SECOND, positions))
            cut = picks.breaks(firsts, seconds)
        else:
            firsts, seconds = list(positions), None
            cut = picks.breaks(firsts)
        for start, end in zip([0, *cut], [*cut, len(firsts)]):
            out.extend((code, firsts[start], seconds[start] if seconds else 0, end - start))
    return out.tobytes()


_FIRST, _SECOND = operator.itemgetter(0), operator.itemgetter(1)


def _runs(rules: bytes) -> list[tuple[str | None, range, range | None]]:
    """Packed rules as (kind, positions, second positions or None); kind None for a run that is not a rule
    (an unknown kind, or a negative position or length: `holds` raises IndexError)."""
    if len(rules) % 32:
        raise TypeError("holds() takes values and rules (runs of four int64)")
    packed = array("q", rules)
    out: list[tuple[str | None, range, range | None]] = []
    for at in range(0, len(packed), 4):
        code, a, b, n = packed[at : at + 4]
        kind = RULES[code] if 0 <= code < len(RULES) else None
        pair = kind in _PAIRS
        if kind is None or min(a, n) < 0 or (pair and b < 0):
            kind = None
        out.append((kind, range(a, a + n), range(b, b + n) if pair else None))
    return out


def checker(rules: bytes) -> Callable[[Sequence[float]], bool]:
    """Whether a poll's values keep these rules (`rules` packed them): IndexError where a rule reads past
    the values, else TypeError where a value it reads is not a float, else whether every rule holds. One
    C call (`holds`) where the compiled module serves; its pure-Python twin otherwise, which picks each
    kind's positions once for all (`python_checker`)."""
    if holds is python_holds:
        return python_checker(rules)
    check = holds
    return lambda values: check(values, rules)


#: Each rule over a run's values at once, at C speed: (run, second run) -> whether it holds.
_BULK: dict[str, Callable[[Sequence[float], Sequence[float]], bool]] = {
    "nonneg": lambda run, _: all(map(operator.ge, run, itertools.repeat(0.0))),
    "not_negative": lambda run, _: not any(map(operator.lt, run, itertools.repeat(0.0))),
    "integer": lambda run, _: all(map(float.is_integer, run)),
    "not_nan": lambda run, _: all(map(operator.eq, run, run)),
    "one": lambda run, _: all(map((1.0).__eq__, run)),
    "bool": lambda run, _: all(map(frozenset({0.0, 1.0}).__contains__, run)),
    "ordered": lambda run, second: all(map(operator.le, run, second)),
    "equal": lambda run, second: all(map(operator.eq, run, second)),
}
_FLOAT = frozenset({float})


def python_checker(rules: bytes) -> Callable[[Sequence[float]], bool]:
    """`checker` in Python: each kind's positions, over every run of it, picked at once by one picker
    (exporter.format.picks) and tested by one C-level map; first every value read is checked to be a
    float. The pickers are
    made by the first call whose values every run is within: a run's positions are never listed before
    that (a run of 2**62 positions is an IndexError, as in C, not a list that fills the memory)."""
    runs = _runs(rules)
    broken = any(kind is None for kind, _, _ in runs)
    end = max((max(run.stop, second.stop if second is not None else 0) for _, run, second in runs), default=0)
    made: list[tuple[Callable, Callable, Callable]] | None = None

    def pickers() -> list[tuple[Callable, Callable, Callable]]:
        positions: dict[str, tuple[list[int], list[int]]] = {}
        for kind, run, second in runs:
            firsts, seconds = positions.setdefault(cast(str, kind), ([], []))
            firsts.extend(run)
            seconds.extend(second or ())
        return [
            (_BULK[kind], picks.picker(firsts), picks.picker(seconds))
            for kind, (firsts, seconds) in positions.items()
            if firsts
        ]

    def check(values: Sequence[float]) -> bool:
        nonlocal made
        if broken or len(values) < end:
            raise IndexError("holds(): a rule reads past the values")
        if made is None:
            made = pickers()
        picked = [(test, first(values), second(values)) for test, first, second in made]
        for _, run, second in picked:
            if not _FLOAT.issuperset(map(type, run)) or not _FLOAT.issuperset(map(type, second)):
                raise TypeError("holds(): the values must be floats")
        return all(test(run, second) for test, run, second in picked)

    return check


def python_holds(values: Sequence[float], rules: bytes) -> bool:
    """`holds` in Python: `python_checker(rules)(values)`."""
    return python_checker(rules)(values)


def _stale(built_from: str) -> bool:
    """Whether the compiled module was built from another _accel.c than the one beside it (a checkout
    that changed it since its last build); an installed package has no .c beside it, and is what it was
    built as."""
    source = Path(__file__).with_name("_accel.c")
    try:
        return hashlib.sha256(source.read_bytes()).hexdigest() != built_from
    except OSError:
        return False


def _pure_python_forced() -> bool:
    return os.environ.get(PURE_PYTHON_VARIABLE, "").strip().lower() in ("1", "true", "yes")


split: Callable[[bytes], tuple[list[float] | None, int, bytes, list[bytes] | None]] = python_split
fill: Callable[[tuple[bytes, ...], tuple[int, ...], Sequence[Any], Callable[[Any], str], bool], list[bytes]] = (
    python_fill
)
holds: Callable[[Sequence[float], bytes], bool] = python_holds
#: "c": the compiled module serves; "python": the functions above (not built, or forced).
IMPLEMENTATION = "python"
#: Why the compiled module does not serve, where it does not (for the startup log line).
WHY_PYTHON: str | None = None

if _pure_python_forced():
    WHY_PYTHON = f"{PURE_PYTHON_VARIABLE} is set"
else:
    try:
        from exporter.format import _accel  # type: ignore[attr-defined]
    except ImportError as exc:
        WHY_PYTHON = f"the compiled module is not built ({exc})"
    else:
        if _stale(getattr(_accel, "SOURCE", "")):
            WHY_PYTHON = "the compiled module was built from another _accel.c: build it again (python hatch_build.py)"
        else:
            split, fill, holds = _accel.split, _accel.fill, _accel.holds
            IMPLEMENTATION = "c"
