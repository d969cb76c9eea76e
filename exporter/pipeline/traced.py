"""Values that remember how they were computed: a stage run once on them becomes a function of new values.

The unifier computes its values (sums over series, the fullest cache, unit changes, histograms merged
over bounds) from the samples' labels and names, which a target's next poll has again, and from their
values, which change. Run once on `Traced` values (each an input's position and its value this poll),
it does what it always does, and every value it makes remembers the arithmetic that made it; every
decision it takes on a value (is this a whole count?) is remembered with its outcome, as a guard. The
`Trace` then compiles to one Python function of a new poll's values: the same arithmetic in the same
order (so the same floats, to the bit), or None when a guard's outcome differs (that poll is not one
the trace can make). `larger` is `max` kept as arithmetic rather than a decision, so that the fuller
of two series may change from poll to poll without failing a guard.

Only what is defined here can be done with a traced value: anything else (`float()`, `math.isfinite`,
a truth test, a hash) raises TypeError, and the trace is given up rather than wrong.
"""

from __future__ import annotations

import itertools
import operator
import re
from collections.abc import Callable, Sequence
from typing import Any

from exporter.format.picks import picker

__all__ = ["Trace", "TraceError", "Traced", "larger"]

#: The most steps (arithmetic, and guards not checked in bulk) one trace compiles, once per shape; a
#: target whose unified values take more (a 100k-sample body) is served the long way, rather than stall
#: its poll for seconds (what compiling costs: docs/performance.md).
MOST_STEPS = 20_000


class TraceError(Exception):
    """What a stage did with a traced value cannot be replayed (or the trace is too long)."""


class Trace:
    """One run of a stage on traced values: each step it computed, each guard, in the order taken."""

    def __init__(self) -> None:
        self.lines: list[str] = []  # the compiled function's body, one statement per step or guard
        self.constants: list[Any] = []
        self._constant_at: dict[tuple[type, str], int] = {}
        self._temps = 0
        #: guards on input values alone, by (test, constant's place, outcome): their positions, checked
        #: in bulk at C speed (a histogram's every count is whole, say) rather than one statement each
        self._bulk: dict[tuple[str, str, bool], dict[int, None]] = {}
        self._positions: dict[int, int] = {}

    def inputs(self, values: Sequence[float]) -> list[Traced]:
        """One traced value per input value, in order (the compiled function's `v[i]`)."""
        return [Traced(self, f"v[{i}]", value) for i, value in enumerate(values)]

    def ref(self, operand: object) -> str:
        """How the compiled function reads an operand: a traced value's name, or a constant's place."""
        if isinstance(operand, Traced):
            if operand.trace is not self:
                raise TraceError("values of two traces combined")
            return operand.ref
        if type(operand) not in (float, int):  # a bool, a string, ... is not arithmetic the trace replays
            raise TraceError(f"a {type(operand).__name__} combined with a traced value")
        key = (type(operand), repr(operand))  # repr tells -0.0 from 0.0, and names NaN
        at = self._constant_at.get(key)
        if at is None:
            at = self._constant_at[key] = len(self.constants)
            self.constants.append(operand)
        return f"c[{at}]"

    def step(self, expression: str, value: object) -> Traced:
        if len(self.lines) >= MOST_STEPS:
            raise TraceError("too many steps")
        name = f"t{self._temps}"
        self._temps += 1
        self.lines.append(f"{name} = {expression}")
        return Traced(self, name, value)

    def guard(self, condition: str, outcome: bool) -> bool:
        if len(self.lines) >= MOST_STEPS:
            raise TraceError("too many steps")
        self.lines.append(f"if {'not ' if outcome else ''}({condition}): return None")
        return outcome

    def input_guard(self, test: str, position: int, constant: object, outcome: bool) -> bool:
        """A guard on one input value: `v[position] <test> constant` (or `.is_integer()`) came out `outcome`."""
        key = (test, "" if test == "is_integer" else self.ref(constant), outcome)
        position = self._positions.setdefault(position, position)  # one int object, however many guards
        self._bulk.setdefault(key, {})[position] = None
        return outcome

    def _bulk_lines(self, namespace: dict[str, Any]) -> list[str]:
        lines = []
        for number, ((test, constant, outcome), positions) in enumerate(self._bulk.items()):
            picked = list(positions)
            namespace[f"g{number}"] = picker(picked)  # a slice per run of positions
            if test == "is_integer":
                checks = f"map(is_integer, g{number}(v))"
            else:
                checks = f"map({_TESTS[test]}, g{number}(v), repeat({constant}))"
            lines.append(f"if {'not all' if outcome else 'any'}({checks}): return None")
        return lines

    def compile(self, outputs: Sequence[object]) -> Callable[[list[float]], list | None]:
        """The function of a poll's values (a list as long as the inputs) that gives `outputs` again, or
        None where a guard fails. Input values read in a run are taken as slices."""
        refs = [self.ref(output) for output in outputs]
        items: list[str] = []
        run: list[int] = []  # consecutive inputs v[a], v[a+1], ...

        def flush() -> None:
            if len(run) > 2:
                items.append(f"*v[{run[0]}:{run[-1] + 1}]")
            else:
                items.extend(f"v[{i}]" for i in run)
            run.clear()

        for ref in refs:
            position = int(ref[2:-1]) if ref.startswith("v[") else None
            if position is not None and run and position == run[-1] + 1:
                run.append(position)
                continue
            flush()
            if position is not None:
                run.append(position)
            else:
                items.append(ref)
        flush()
        namespace: dict[str, Any] = {"__builtins__": {}, "max": max, "all": all, "any": any, "map": map}
        namespace.update(repeat=itertools.repeat, is_integer=float.is_integer)
        namespace.update({name: getattr(operator, name) for name in _TESTS.values()})
        body = [*self._bulk_lines(namespace), *_reused([*self.lines, f"return [{', '.join(items)}]"])]
        source = "def replay(v, c):\n" + "".join(f"    {line}\n" for line in body)
        # Nothing an upstream sent is in this text: names, positions and operators only (constants are
        # passed in `c`), so it is compiled as it is.
        exec(compile(source, "<exporter.pipeline.traced>", "exec"), namespace)
        replay = namespace["replay"]
        constants = tuple(self.constants)
        return lambda values: replay(values, constants)


#: A temporary's name in a trace's lines (`t12`): no other name there starts with `t` and a digit.
_TEMP = re.compile(r"\bt[0-9]+\b")


def _reused(lines: list[str]) -> list[str]:
    """The lines with each temporary named anew, taking the name of one no longer read: the compiled
    function keeps a name per temporary alive at once rather than one per step (most are read once, by
    the next step), which is most of what a target's fast path keeps of its unify plan. The same
    statements in the same order: the same floats."""
    last: dict[str, int] = {}
    for number, line in enumerate(lines):
        for temp in _TEMP.findall(line):
            last[temp] = number
    names: dict[str, str] = {}
    free: list[str] = []
    out = []
    for number, line in enumerate(lines):
        target, assigned, expression = line.partition(" = ") if line.startswith("t") else ("", "", line)
        expression = _TEMP.sub(lambda found: names[found[0]], expression)
        for temp in dict.fromkeys(_TEMP.findall(line[len(target) :])):  # read here for the last time
            if last[temp] == number:
                free.append(names.pop(temp))
        if target:
            name = names[target] = free.pop() if free else f"t{len(names) + len(free)}"
            if last[target] == number:  # never read
                free.append(names.pop(target))
            out.append(f"{name}{assigned}{expression}")
        else:
            out.append(expression)
    return out


#: The operator module's name of each comparison, for the bulk guards.
_TESTS = {">=": "ge", ">": "gt", "<=": "le", "<": "lt", "==": "eq", "!=": "ne"}

_OPERATORS = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}


def _value(operand: object) -> Any:
    return operand.value if isinstance(operand, Traced) else operand


class Traced:
    """A value of one trace: its name in the compiled function, and its value in the traced run."""

    __slots__ = ("ref", "trace", "value")

    def __init__(self, trace: Trace, ref: str, value: Any):
        self.trace, self.ref, self.value = trace, ref, value

    def _arithmetic(self, symbol: str, left: object, right: object) -> Traced:
        value = _OPERATORS[symbol](_value(left), _value(right))
        return self.trace.step(f"{self.trace.ref(left)} {symbol} {self.trace.ref(right)}", value)

    def _compare(self, symbol: str, other: object) -> bool:
        outcome = _OPERATORS[symbol](self.value, _value(other))
        if outcome.__class__ is not bool:
            raise TraceError("a comparison that is not a truth value")
        if self.ref.startswith("v[") and not isinstance(other, Traced):
            return self.trace.input_guard(symbol, int(self.ref[2:-1]), other, outcome)
        return self.trace.guard(f"{self.ref} {symbol} {self.trace.ref(other)}", outcome)

    def __add__(self, other: object) -> Traced:
        return self._arithmetic("+", self, other)

    def __radd__(self, other: object) -> Traced:
        return self._arithmetic("+", other, self)

    def __sub__(self, other: object) -> Traced:
        return self._arithmetic("-", self, other)

    def __rsub__(self, other: object) -> Traced:
        return self._arithmetic("-", other, self)

    def __mul__(self, other: object) -> Traced:
        return self._arithmetic("*", self, other)

    def __rmul__(self, other: object) -> Traced:
        return self._arithmetic("*", other, self)

    def __truediv__(self, other: object) -> Traced:
        return self._arithmetic("/", self, other)

    def __rtruediv__(self, other: object) -> Traced:
        return self._arithmetic("/", other, self)

    def __ge__(self, other: object) -> bool:
        return self._compare(">=", other)

    def __gt__(self, other: object) -> bool:
        return self._compare(">", other)

    def __le__(self, other: object) -> bool:
        return self._compare("<=", other)

    def __lt__(self, other: object) -> bool:
        return self._compare("<", other)

    def __eq__(self, other: object) -> bool:
        return self._compare("==", other)

    def __ne__(self, other: object) -> bool:
        return self._compare("!=", other)

    __hash__ = None  # type: ignore[assignment]  # a dict keyed by values would decide on them unseen

    def is_integer(self) -> bool:
        outcome = self.value.is_integer()
        if outcome.__class__ is not bool:
            raise TraceError("is_integer that is not a truth value")
        if self.ref.startswith("v[") and self.value.__class__ is float:
            return self.trace.input_guard("is_integer", int(self.ref[2:-1]), None, outcome)
        return self.trace.guard(f"{self.ref}.is_integer()", outcome)

    def __bool__(self) -> bool:
        raise TraceError("a traced value tested for truth")

    def __float__(self) -> float:
        raise TraceError("a traced value read as a float")

    def __repr__(self) -> str:
        return f"Traced({self.ref}={self.value!r})"


def larger(a: Any, b: Any) -> Any:
    """`max(a, b)`, which a trace keeps as a step of its arithmetic rather than a guard on which was larger."""
    if isinstance(a, Traced):
        return a.trace.step(f"max({a.ref}, {a.trace.ref(b)})", max(a.value, _value(b)))
    if isinstance(b, Traced):
        return b.trace.step(f"max({b.trace.ref(a)}, {b.ref})", max(a, b.value))
    return max(a, b)
