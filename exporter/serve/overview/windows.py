"""Each backend's recent polls, kept in bounded memory from what the daemon publishes anyway.

The store calls `Windows.observe` with every snapshot it publishes; a snapshot from a new poll adds one
point per (target, model) row: the unified gauges, counters and histogram buckets of that poll, or a
"down" mark when the poll failed. Nothing is polled for the overview, nothing is written to disk, and
nothing older than `keep` is held. Reports (exporter.serve.overview.report) read these rings.

Counters and buckets are kept as they would read had they never been reset: each reading adds what
it counted since the one before (`rise`, Prometheus's reset rule), so that an increase over any
window is its last value less its first, a report costs the same whatever the window, and a reset
between two points kept is never lost when points are thinned.
"""

from __future__ import annotations

import math
import operator
from array import array
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from exporter.config.overview import OverviewSettings
from exporter.pipeline.exposition import SeriesFamily
from exporter.pipeline.normalize import apply_prefix
from exporter.pipeline.template import sample_series, sample_values
from exporter.profiles import FINISHED
from exporter.serve.overview.promql import rise
from exporter.serve.store import Snapshot

#: Points a row keeps at most; polls closer together than keep / MAX_POINTS are thinned (the newest kept).
MAX_POINTS = 300
#: Rows (target and model, or target and GPU) kept at most; a row past this is not tracked (and counted).
MAX_ROWS = 64
#: Models one target may contribute rows for; the rest are not tracked (and counted).
MAX_MODELS_PER_TARGET = 32
#: Buckets a histogram may have to be kept; a larger one gives no quantiles.
MAX_BUCKETS = 64
#: Characters kept of a model name or GPU label (they come from upstreams).
MAX_LABEL = 256

GAUGES = ("requests_running", "requests_waiting", "kv_cache_usage_ratio")
COUNTERS = ("prompt_tokens_total", "generation_tokens_total")
#: requests_finished_total's outcomes that the overview counts apart; any other counts in the total only.
OUTCOMES = ("success", "abort", "error")
HISTOGRAMS = ("time_to_first_token_seconds", "inter_token_latency_seconds", "e2e_request_latency_seconds")
#: From nvml targets, by GPU.
GPU_GAUGES = ("gpu_utilization_ratio", "gpu_memory_used_bytes", "gpu_memory_total_bytes", "gpu_power_usage_watts")

#: Counters as a point holds them: the two token counters, then finished requests by outcome, then all finished.
COUNTER_SLOTS = (*COUNTERS, *(f"finished_{outcome}" for outcome in OUTCOMES), "finished")

#: (bounds, reset-corrected cumulative counts, run): `run` changes when the bounds do, and counts are
#: comparable only within one run. Counts are packed doubles: a third of the memory of a tuple of floats.
Histogram = tuple[tuple[float, ...], array, int]


@dataclass(frozen=True, slots=True)
class Point:
    """One poll of one row. `up` False marks a failed poll: no values, a gap, never zeros. Counters and
    histogram counts are reset-corrected (see the module's docstring); None where the poll had none."""

    time: float
    up: bool
    gauges: tuple[float | None, ...] = ()
    counters: tuple[float | None, ...] = ()
    histograms: tuple[Histogram | None, ...] = ()


@dataclass(slots=True)
class Row:
    """One (target, model) or (target, GPU) row and its ring of points, oldest first."""

    target: str
    kind: str  # "backend" or "gpu"
    key: str  # the model ("" when the backend names none) or the GPU index
    backend: str | None = None
    uuid: str = ""
    points: deque[Point] = field(init=False)
    #: The last raw reading of each counter, and its reset-corrected total.
    raw: list[float | None] = field(init=False)
    corrected: list[float] = field(init=False)
    #: The last raw (bounds, counts) of each histogram, its corrected counts and its run.
    raw_histograms: list[tuple[tuple[float, ...], tuple[float, ...]] | None] = field(init=False)
    histograms: list[Histogram | None] = field(init=False)
    #: window -> (what it was made from, the report's entry for this row): see report._backend.
    reports: dict[float, tuple[tuple[Any, ...], dict[str, Any]]] = field(init=False)

    def __post_init__(self) -> None:
        self.reports = {}
        self.points = deque(maxlen=MAX_POINTS + 2)
        self.raw = [None] * len(COUNTER_SLOTS)
        self.corrected = [0.0] * len(COUNTER_SLOTS)
        self.raw_histograms = [None] * len(HISTOGRAMS)
        self.histograms = [None] * len(HISTOGRAMS)

    def counters_read(self, values: list[float | None]) -> tuple[float | None, ...]:
        """Raw counter readings -> reset-corrected totals (a counter's first reading counts as 0)."""
        out: list[float | None] = []
        for slot, value in enumerate(values):
            if value is None:
                out.append(None)
                continue
            before = self.raw[slot]
            if before is not None:
                self.corrected[slot] += rise(before, value)
            self.raw[slot] = value
            out.append(self.corrected[slot])
        return tuple(out)

    def histogram_read(
        self, index: int, reading: tuple[tuple[float, ...], tuple[float, ...]] | None
    ) -> Histogram | None:
        """Raw (bounds, cumulative counts) -> reset-corrected counts, each bucket a counter of its own as in
        `rate(x_bucket[w])`. New bounds start a new run, from which alone later increases are taken."""
        if reading is None:
            return None
        bounds, counts = reading
        before, kept = self.raw_histograms[index], self.histograms[index]
        if before is None or kept is None or before[0] != bounds:
            corrected = (bounds, array("d", bytes(8 * len(counts))), (kept[2] + 1) if kept is not None else 0)
        elif all(map(operator.ge, counts, before[1])):  # no bucket went down (a poll's usual case): `rise`
            # is each new count less the old, added in C rather than a Python call per bucket
            corrected = (bounds, array("d", map(operator.add, kept[1], map(operator.sub, counts, before[1]))), kept[2])
        else:
            corrected = (
                bounds,
                array("d", [total + rise(old, new) for total, old, new in zip(kept[1], before[1], counts)]),
                kept[2],
            )
        self.raw_histograms[index] = reading
        self.histograms[index] = corrected
        return corrected


class Windows:
    """Rows by (target, kind, key), fed by the store, read by reports. Lives on the event loop."""

    def __init__(self, settings: OverviewSettings | None = None, *, spacing: float | None = None):
        self.settings = settings or OverviewSettings()
        #: Polls closer than this to the point before the newest replace the newest (None: keep / MAX_POINTS).
        self._spacing = spacing
        self.rows: dict[tuple[str, str, str], Row] = {}
        #: Snapshots of each target, by name: which targets exist, their state and type.
        self.targets: dict[str, Snapshot] = {}
        #: Rows a target's last poll had that are not tracked because a cap was reached, by target.
        self.untracked: dict[str, int] = {}
        self._last_poll: dict[str, float | None] = {}
        self._bounds: dict[tuple[float, ...], tuple[float, ...]] = {}
        #: target -> (its prefix, what its last poll's families of each shape hold for the rows: see
        #: `_readings_of`), so that a poll of the same shapes reads only its values
        self._readings: dict[str, tuple[str, dict[object, tuple[_Reading, ...]]]] = {}
        #: target -> where its last poll's rows found their values (see `_plan`)
        self._plans: dict[str, _Plan] = {}
        #: Counts the polls observed: a report made since then is out of date.
        self.version = 0

    @property
    def spacing(self) -> float:
        return self._spacing if self._spacing is not None else self.settings.keep / MAX_POINTS

    def configure(self, settings: OverviewSettings) -> None:
        self.settings = settings

    # -- feeding ------------------------------------------------------------------------------

    def observe(self, snapshot: Snapshot) -> None:
        """A snapshot the store published: a new point for each of its rows if it comes from a new poll."""
        name = snapshot.target.name
        self.targets[name] = snapshot
        if snapshot.last_poll is None or self._last_poll.get(name) == snapshot.last_poll:
            return  # not a poll (the next poll's time was noted, or the target was restarted)
        self._last_poll[name] = snapshot.last_poll
        self.version += 1
        if not snapshot.up:
            for row in self._rows_of(name):
                self._add(row, Point(snapshot.last_poll, False))
            return
        self.untracked.pop(name, None)  # counted again for this poll
        if snapshot.target.type == "nvml":
            self._observe_gpus(snapshot)
        else:
            self._observe_backend(snapshot)

    def forget(self, names: set[str]) -> None:
        """Drop the rows of targets no longer configured."""
        for name in list(self.targets):
            if name not in names:
                del self.targets[name]
                self._last_poll.pop(name, None)
                self.untracked.pop(name, None)
                self._readings.pop(name, None)
                self._plans.pop(name, None)
        for key in [key for key in self.rows if key[0] not in names]:
            del self.rows[key]

    def _rows_of(self, target: str) -> list[Row]:
        return [row for key, row in self.rows.items() if key[0] == target]

    def _row(self, target: str, kind: str, key: str) -> Row | None:
        """The row, made if the caps allow; None (and counted in this poll's `untracked`) if not."""
        row = self.rows.get((target, kind, key))
        if row is None:
            if len(self.rows) >= MAX_ROWS or (
                kind == "backend" and sum(1 for k in self.rows if k[0] == target) >= MAX_MODELS_PER_TARGET
            ):
                self.untracked[target] = self.untracked.get(target, 0) + 1
                return None
            row = self.rows[(target, kind, key)] = Row(target, kind, key)
        return row

    def _add(self, row: Row, point: Point) -> None:
        points = row.points
        if len(points) >= 2 and point.time - points[-2].time < self.spacing and points[-1].up == point.up:
            points[-1] = point  # thinning: the newest stands for the polls since the one before it
        else:
            points.append(point)
        horizon = point.time - self.settings.keep
        while len(points) > 1 and points[1].time <= horizon:
            points.popleft()  # one point at or before the horizon stays, to measure a full window from

    def _observe_backend(self, snapshot: Snapshot) -> None:
        name = snapshot.target.name
        plan, numbers = self._plan(name, snapshot.target.prefix or "", snapshot.families)
        time = snapshot.last_poll
        assert time is not None  # observe() reads polls only
        seen = set()
        for model in plan.rows:
            row = self._row(name, "backend", model.model)
            if row is None:
                continue
            seen.add(model.model)
            row.backend = snapshot.profile
            self._add(
                row,
                Point(
                    time,
                    True,
                    tuple(None if at is None else numbers[at[0]][at[1]] for at in model.gauges),
                    row.counters_read([None if at is None else _sum(numbers, at) for at in model.counters]),
                    tuple(
                        row.histogram_read(
                            index, None if found is None else self._histogram([(b, numbers[k]) for k, b in found])
                        )
                        for index, found in enumerate(model.histograms)
                    ),
                ),
            )
        for row in self._rows_of(name):
            if row.kind == "backend" and row.key not in seen:
                self._add(row, Point(time, True))  # up, but this model served nothing this poll

    def _plan(self, name: str, prefix: str, families: Sequence[SeriesFamily]) -> tuple[_Plan, list[Sequence[float]]]:
        """Where each row's values are in this poll (a `_Plan`), and the values of the families it reads.
        A poll with the same family names and the same shapes of the families read as the last one (a
        target's usual poll) reads the values alone, with the last poll's plan."""
        plan = self._plans.get(name)
        if plan is not None and plan.prefix == prefix and len(families) == len(plan.names):
            read = [sample_values(families[index].samples) for index in plan.read]
            if all(map(operator.is_, [shape for shape, _ in read], plan.shapes)) and plan.names == tuple(
                map(_NAME, families)
            ):
                return plan, [values for _, values in read]
        wanted = _wanted_names(prefix)
        kept = self._readings.get(name)
        readings = kept[1] if kept is not None and kept[0] == prefix else {}
        now: dict[object, tuple[_Reading, ...]] = {}  # this poll's shapes: the last poll's others are dropped
        positions: list[int] = []
        shapes: list[object] = []
        numbers: list[Sequence[float]] = []
        #: model -> (gauges, counters, buckets), each by slot: where its values are, as (read family, position)
        rows: dict[str, tuple[dict[int, tuple[int, int]], dict[int, list], dict[int, list]]] = {}
        for position, family in enumerate(families):
            if family.name not in wanted.families:
                continue
            shape, values = sample_values(family.samples)
            reading = readings.get(shape) if shape is not None else None
            if reading is None:
                reading = _readings_of(sample_series(family.samples), wanted)
            if shape is not None:
                now[shape] = reading
            k = len(numbers)
            positions.append(position)
            shapes.append(shape)
            numbers.append(values)
            for held in reading:
                gauges, counters, buckets = rows.setdefault(held.model, ({}, {}, {}))
                for concept, index in held.gauges:
                    gauges[_GAUGE_SLOT[concept]] = (k, index)  # a gauge's last value counts
                for key, index in held.counters:
                    counters.setdefault(_COUNTER_SLOT[key], []).append((k, index))
                for concept, found in held.buckets:
                    buckets.setdefault(_HISTOGRAM_SLOT[concept], []).append((k, found))
        self._readings[name] = (prefix, now)
        finished = _COUNTER_SLOT["finished"]
        plan = _Plan(
            prefix,
            tuple(map(_NAME, families)),
            tuple(positions),
            tuple(shapes),
            tuple(
                _RowPlan(
                    model,
                    tuple(gauges.get(slot) for slot in range(len(GAUGES))),
                    tuple(
                        tuple(counters[slot])
                        if slot in counters
                        else ()  # an outcome not served yet has counted nothing
                        if finished in counters and slot in _OUTCOME_SLOTS
                        else None
                        for slot in range(len(COUNTER_SLOTS))
                    ),
                    tuple(tuple(buckets[slot]) if slot in buckets else None for slot in range(len(HISTOGRAMS))),
                )
                for model, (gauges, counters, buckets) in rows.items()
            ),
        )
        if None in shapes:  # read sample by sample: nothing says a next poll's samples are the same
            self._plans.pop(name, None)
        else:
            self._plans[name] = plan
        return plan, numbers

    def _histogram(
        self, found: list[tuple[_Buckets, Sequence[float]]]
    ) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """A model's histogram in this poll: (bounds ascending, their counts), or None where it has no +Inf
        bucket or too many. Where one family's series held all its buckets (the usual case), their order
        was worked out with the shape; else they are merged here, a later bucket of a bound replacing an
        earlier one."""
        if len(found) == 1:
            plan, numbers = found[0]
            if plan.bounds is None:
                return None
            bounds, counts = plan.bounds, tuple(map(numbers.__getitem__, plan.positions))
        else:
            merged: dict[float, float] = {}
            for plan, numbers in found:
                merged.update(zip(plan.raw_bounds, map(numbers.__getitem__, plan.raw_positions)))
            if math.inf not in merged or len(merged) > MAX_BUCKETS:
                return None
            ordered = sorted(merged.items())
            bounds, counts = tuple(bound for bound, _ in ordered), tuple(count for _, count in ordered)
        bounds = self._bounds.setdefault(bounds, bounds)  # one tuple per set of bounds, shared by every point
        if len(self._bounds) > MAX_ROWS * len(HISTOGRAMS):
            self._bounds.clear()
        return bounds, counts

    def _observe_gpus(self, snapshot: Snapshot) -> None:
        time = snapshot.last_poll
        assert time is not None  # observe() reads polls only
        prefix = snapshot.target.prefix or ""
        names = {apply_prefix(name, prefix): index for index, name in enumerate(GPU_GAUGES)}
        values: dict[str, list[float | None]] = {}
        uuids: dict[str, str] = {}
        for family in snapshot.families:
            index = names.get(family.name)
            if index is None:
                continue
            for sample in family.samples:
                if sample.name != family.name or "gpu" not in sample.labels:
                    continue
                gpu = sample.labels["gpu"][:MAX_LABEL]
                values.setdefault(gpu, [None] * len(GPU_GAUGES))[index] = sample.value
                uuids[gpu] = sample.labels.get("uuid", "")[:MAX_LABEL]
        for gpu, gauges in values.items():
            row = self._row(snapshot.target.name, "gpu", gpu)
            if row is not None:
                row.uuid = uuids[gpu]
                self._add(row, Point(time, True, tuple(gauges)))


@dataclass(frozen=True)
class _Wanted:
    families: frozenset[str]
    #: served sample name -> (kind, unified concept)
    samples: dict[str, tuple[str, str]]


_WANTED: dict[str, _Wanted] = {}


def _wanted_names(prefix: str) -> _Wanted:
    wanted = _WANTED.get(prefix)
    if wanted is None:
        samples: dict[str, tuple[str, str]] = {}
        families: set[str] = set()
        for name in GAUGES:
            served = apply_prefix(name, prefix)
            families.add(served)
            samples[served] = ("gauge", name)
        for name in (*COUNTERS, FINISHED):
            served = apply_prefix(name, prefix)
            families.update({served, served.removesuffix("_total")})
            samples[served] = ("counter", name)
        for name in HISTOGRAMS:
            served = apply_prefix(name, prefix)
            families.add(served)
            samples[served + "_bucket"] = ("histogram", name)
        if len(_WANTED) > 64:
            _WANTED.clear()
        wanted = _WANTED[prefix] = _Wanted(frozenset(families), samples)
    return wanted


@dataclass(frozen=True, slots=True)
class _Buckets:
    """One histogram's buckets among a family's series (for one model): in sample order as found, and as a
    point keeps them, ascending by bound with a repeated bound's last bucket (None: no +Inf bucket, or
    more than MAX_BUCKETS: no quantiles)."""

    raw_bounds: tuple[float, ...]
    raw_positions: tuple[int, ...]
    bounds: tuple[float, ...] | None
    positions: tuple[int, ...]

    @classmethod
    def of(cls, bounds: list[float], positions: list[int]) -> _Buckets:
        last: dict[float, int] = {}
        for bound, position in zip(bounds, positions):
            last[bound] = position  # as dict.update would merge the counts: the first key, the last value
        if math.inf not in last or len(last) > MAX_BUCKETS:
            return cls(tuple(bounds), tuple(positions), None, ())
        ordered = sorted(last.items())
        return cls(
            tuple(bounds),
            tuple(positions),
            tuple(bound for bound, _ in ordered),
            tuple(position for _, position in ordered),
        )


@dataclass(frozen=True, slots=True)
class _Reading:
    """What one family of one shape holds for one model's row: the positions of its values, by where they
    go, each in sample order (a gauge's last value counts; a counter's are summed in that order)."""

    model: str
    #: (concept, position)
    gauges: tuple[tuple[str, int], ...]
    #: (counter slot, position)
    counters: tuple[tuple[str, int], ...]
    #: (concept, its buckets)
    buckets: tuple[tuple[str, _Buckets], ...]


@dataclass(frozen=True, slots=True)
class _RowPlan:
    """Where one model's row finds its values in a poll: (read family, position) pairs, the read family
    counted in `_Plan.read`'s order."""

    model: str
    #: per GAUGES slot, its last value's place; None where the poll has none
    gauges: tuple[tuple[int, int] | None, ...]
    #: per COUNTER_SLOTS slot, the places of the values it sums, in order; None where the poll has none
    counters: tuple[tuple[tuple[int, int], ...] | None, ...]
    #: per HISTOGRAMS slot, (read family, its buckets) in order; None where the poll has none
    histograms: tuple[tuple[tuple[int, _Buckets], ...] | None, ...]


@dataclass(frozen=True, slots=True)
class _Plan:
    """Where a poll's rows find their values: worked out from its families' readings (`_Reading`), and used
    again for a next poll of the same family names and shapes."""

    prefix: str
    #: every family's name, in order
    names: tuple[str, ...]
    #: the families read (those with wanted names), by position; and their shapes (`sample_values`)
    read: tuple[int, ...]
    shapes: tuple[object, ...]
    #: one per model, in the order they first appear
    rows: tuple[_RowPlan, ...]


_NAME = operator.attrgetter("name")
_GAUGE_SLOT = {concept: slot for slot, concept in enumerate(GAUGES)}
_COUNTER_SLOT = {key: slot for slot, key in enumerate(COUNTER_SLOTS)}
_OUTCOME_SLOTS = frozenset(_COUNTER_SLOT[f"finished_{outcome}"] for outcome in OUTCOMES)
_HISTOGRAM_SLOT = {concept: slot for slot, concept in enumerate(HISTOGRAMS)}


def _sum(numbers: list[Sequence[float]], places: tuple[tuple[int, int], ...]) -> float:
    """The values at these places added up, in order (a counter's samples across a poll's families)."""
    total = 0.0
    for family, position in places:
        total += numbers[family][position]
    return total


def _readings_of(series: Sequence[tuple[str, Mapping[str, str]]], wanted: _Wanted) -> tuple[_Reading, ...]:
    """What a family (its served series, in order) holds for each model's row, the models in the order
    they first appear: worked out once per shape, since it depends on names and labels alone."""
    models: dict[str, tuple[list, list, dict[str, tuple[list, list]]]] = {}
    for index, (name, labels) in enumerate(series):
        slot = wanted.samples.get(name)
        if slot is None or not ("backend" in labels or "exported_backend" in labels):
            continue
        model = _model_of(labels)
        gauges, counters, buckets = models.setdefault(model, ([], [], {}))
        kind, concept = slot
        if kind == "gauge":
            gauges.append((concept, index))
        elif kind == "counter":
            if concept == FINISHED:
                counters.append(("finished", index))
                outcome = labels.get("outcome", "")
                if outcome in OUTCOMES:
                    counters.append((f"finished_{outcome}", index))
            else:
                counters.append((concept, index))
        else:
            bound = _bound(labels.get("le"))
            if bound is not None:  # else the sample counts only in making the model's row
                bounds, indices = buckets.setdefault(concept, ([], []))
                bounds.append(bound)
                indices.append(index)
    return tuple(
        _Reading(
            model,
            tuple(gauges),
            tuple(counters),
            tuple((concept, _Buckets.of(bounds, indices)) for concept, (bounds, indices) in buckets.items()),
        )
        for model, (gauges, counters, buckets) in models.items()
    )


def _model_of(labels: Mapping[str, str]) -> str:
    """The backend's model: `exported_model` where the target's own labels took `model`."""
    model = labels.get("exported_model", labels.get("model", ""))
    return model[:MAX_LABEL]


def _bound(text: str | None) -> float | None:
    try:
        bound = float(text) if text is not None else None
    except ValueError:
        return None
    return None if bound is None or math.isnan(bound) else bound
