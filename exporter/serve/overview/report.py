"""What /api/overview, its CSV and its stream say: each row's window summed up, and a health verdict.

Rates are increases over the window divided by the time between its first and last points, with
counter resets handled as `increase()` does; quantiles are `histogram_quantile` over the window's
bucket increases. A row whose last poll failed is `down`: it shows no values rather than stale ones.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Any

from exporter.config.overview import OverviewSettings
from exporter.serve.overview.promql import histogram_quantile
from exporter.serve.overview.windows import COUNTER_SLOTS, GAUGES, GPU_GAUGES, HISTOGRAMS, Point, Row, Windows

#: Bumped when a field changes meaning or goes away (new fields may appear without a bump).
SCHEMA_VERSION = 1
QUANTILES = (0.5, 0.9, 0.99)
#: Windows whose last report each row keeps for reuse.
REPORTS_KEPT = 8
#: Points in a sparkline at most (the window's points, thinned evenly).
SPARK_POINTS = 60
HEALTH = ("healthy", "degraded", "unhealthy", "unknown")
#: Histograms by the names the report gives them.
LATENCIES = dict(zip(("ttft_seconds", "inter_token_latency_seconds", "e2e_latency_seconds"), HISTOGRAMS))
_SLOT = {name: index for index, name in enumerate(COUNTER_SLOTS)}
_GAUGE = {name: index for index, name in enumerate(GAUGES)}


def report(windows: Windows, window: float, now: float | None = None) -> dict[str, Any]:
    """The whole overview over the last `window` seconds, as /api/overview serves it."""
    now = time.time() if now is None else now
    settings = windows.settings
    backends: list[dict[str, Any]] = []
    gpus: list[dict[str, Any]] = []
    for name, snapshot in windows.targets.items():
        rows = [row for key, row in windows.rows.items() if key[0] == name]
        state = "pending" if snapshot.up is None else ("up" if snapshot.up else "down")
        if snapshot.target.type == "nvml":
            rows.sort(key=lambda row: (len(row.key), row.key))  # GPU indexes in numeric order
            gpus.extend(_gpu(row, state, window, now) for row in rows if row.kind == "gpu")
            if not rows:
                gpus.append(_empty_gpu(name, state, snapshot.last_error and snapshot.last_reason))
            continue
        backend_rows = [_backend(row, state, window, now, settings) for row in rows if row.kind == "backend"]
        if not backend_rows:
            backend_rows = [_no_series(name, state, snapshot.profile, snapshot.last_reason)]
        for entry in backend_rows:
            entry["untracked_rows"] = windows.untracked.get(name, 0)
        backends.extend(backend_rows)
    summary = {health: sum(1 for row in backends if row["health"] == health) for health in HEALTH}
    return {
        "schema_version": SCHEMA_VERSION,
        "generated": _iso(now),
        "generated_unix": round(now, 3),
        "window_seconds": window,
        "windows_seconds": settings.windows(),
        "keep_seconds": settings.keep,
        "thresholds": _thresholds(settings),
        "summary": {"backends": len(backends), **summary, "gpus": len(gpus)},
        "backends": backends,
        "gpus": gpus,
    }


def _thresholds(settings: OverviewSettings) -> dict[str, float]:
    return {
        "error_ratio_degraded": settings.error_ratio_degraded,
        "error_ratio_unhealthy": settings.error_ratio_unhealthy,
        "abort_ratio_degraded": settings.abort_ratio_degraded,
        "abort_ratio_unhealthy": settings.abort_ratio_unhealthy,
        "kv_cache_degraded": settings.kv_cache_degraded,
        "waiting_degraded": settings.waiting_degraded,
    }


def in_window(row: Row, window: float, now: float) -> list[Point]:
    """The row's points in (now - window, now]."""
    start = now - window
    return [point for point in row.points if point.time > start]


def _backend(row: Row, state: str, window: float, now: float, settings: OverviewSettings) -> dict[str, Any]:
    """A row's entry, made again only when the points in its window, its state or the settings changed
    (a target polled every 15 s changes one report in 15)."""
    points = in_window(row, window, now)
    first, last = (points[0], points[-1]) if points else (None, None)
    cached = row.reports.get(window)
    if cached is not None:
        (was_first, was_last, was_state, was_settings), entry = cached
        if was_first is first and was_last is last and was_state == state and was_settings is settings:
            return entry
    entry = _backend_entry(row, points, state, settings)
    if len(row.reports) >= REPORTS_KEPT:  # windows are a client's choice: keep a few
        row.reports.clear()
    row.reports[window] = ((first, last, state, settings), entry)
    return entry


def _backend_entry(row: Row, points: list[Point], state: str, settings: OverviewSettings) -> dict[str, Any]:
    up = [point for point in points if point.up and point.counters]
    latest = points[-1] if points else None
    current = latest is not None and latest.up and bool(latest.gauges)
    gauges = latest.gauges if latest is not None and current and state == "up" else None
    entry: dict[str, Any] = {
        "target": row.target,
        "model": row.key or None,
        "backend": row.backend,
        "state": state,
        "window": {
            "samples": len(up),
            "from": _iso(up[0].time) if up else None,
            "to": _iso(up[-1].time) if up else None,
            "seconds": _round(up[-1].time - up[0].time) if len(up) >= 2 else 0.0,
        },
    }
    for name in GAUGES:
        entry[name] = _num(gauges[_GAUGE[name]]) if gauges is not None else None
    rates = {slot: _rate(up, _SLOT[slot]) if state == "up" else None for slot in COUNTER_SLOTS}
    entry["request_rate"] = rates["finished"]
    entry["success_rate"] = rates["finished_success"]
    entry["abort_rate"] = rates["finished_abort"]
    entry["error_rate"] = rates["finished_error"]
    entry["prompt_tokens_per_second"] = rates["prompt_tokens_total"]
    entry["generation_tokens_per_second"] = rates["generation_tokens_total"]
    finished = _increase(up, _SLOT["finished"]) if state == "up" else None
    entry["requests_finished"] = finished
    for outcome in ("error", "abort"):
        count = _increase(up, _SLOT[f"finished_{outcome}"]) if state == "up" else None
        entry[f"{outcome}_ratio"] = _round(count / finished) if finished and count is not None else None
    for label, index in zip(LATENCIES, range(len(HISTOGRAMS))):
        entry[label] = _quantiles(up, index) if state == "up" else {_q(q): None for q in QUANTILES}
    entry["health"], entry["reasons"] = verdict(entry, settings)
    entry["history"] = _history(points)
    return entry


def _no_series(target: str, state: str, profile: str | None, reason: str) -> dict[str, Any]:
    """A target that is configured but gave no unified series (yet): it is listed all the same."""
    entry: dict[str, Any] = {
        "target": target,
        "model": None,
        "backend": profile,
        "state": state,
        "window": {"samples": 0, "from": None, "to": None, "seconds": 0.0},
    }
    for name in (
        *GAUGES,
        "request_rate",
        "success_rate",
        "abort_rate",
        "error_rate",
        "prompt_tokens_per_second",
        "generation_tokens_per_second",
        "requests_finished",
        "error_ratio",
        "abort_ratio",
    ):
        entry[name] = None
    for label in LATENCIES:
        entry[label] = {_q(q): None for q in QUANTILES}
    if state == "down":
        entry["health"], entry["reasons"] = "unhealthy", [f"target down ({reason})" if reason else "target down"]
    elif state == "pending":
        entry["health"], entry["reasons"] = "unknown", ["not polled yet"]
    else:
        entry["health"], entry["reasons"] = (
            "unknown",
            ["no unified series: no backend profile recognised (see /targets)"],
        )
    entry["history"] = _history([])
    return entry


def verdict(entry: dict[str, Any], settings: OverviewSettings) -> tuple[str, list[str]]:
    """healthy, degraded or unhealthy, and why; unknown before the first poll."""
    if entry["state"] == "pending":
        return "unknown", ["not polled yet"]
    if entry["state"] == "down":
        return "unhealthy", ["target down"]
    worst, reasons = "healthy", []

    def judge(level: str, reason: str) -> None:
        nonlocal worst
        reasons.append(f"{reason} ({level})")
        if level == "unhealthy" or worst == "healthy":
            worst = level

    for outcome in ("error", "abort"):
        ratio = entry[f"{outcome}_ratio"]
        if ratio is None:
            continue
        unhealthy = getattr(settings, f"{outcome}_ratio_unhealthy")
        degraded = getattr(settings, f"{outcome}_ratio_degraded")
        if ratio >= unhealthy:
            judge("unhealthy", f"{outcome} ratio {ratio:.1%} ≥ {unhealthy:.1%}")
        elif ratio >= degraded and ratio > 0:
            judge("degraded", f"{outcome} ratio {ratio:.1%} ≥ {degraded:.1%}")
    kv = entry["kv_cache_usage_ratio"]
    if kv is not None and kv >= settings.kv_cache_degraded:
        judge("degraded", f"KV cache {kv:.0%} full ≥ {settings.kv_cache_degraded:.0%}")
    waiting = entry["requests_waiting"]
    if settings.waiting_degraded and waiting is not None and waiting >= settings.waiting_degraded:
        judge("degraded", f"{waiting:g} requests waiting ≥ {settings.waiting_degraded}")
    if not reasons and entry["requests_finished"] == 0:
        reasons.append("idle: no request finished in the window")
    return worst, reasons


def _gpu(row: Row, state: str, window: float, now: float) -> dict[str, Any]:
    points = in_window(row, window, now)
    latest = points[-1] if points else None
    values = (
        latest.gauges
        if latest is not None and latest.up and latest.gauges and state == "up"
        else (None,) * len(GPU_GAUGES)
    )
    utilization, used, total, power = (_num(value) for value in values)
    return {
        "target": row.target,
        "gpu": row.key,
        "uuid": row.uuid,
        "state": state,
        "utilization_ratio": utilization,
        "memory_used_bytes": used,
        "memory_total_bytes": total,
        "memory_used_ratio": _round(used / total) if used is not None and total else None,
        "power_watts": power,
        "history": {
            "times": [round(point.time, 3) for point in _thin(points)],
            "utilization_ratio": [
                _num(point.gauges[0]) if point.up and point.gauges else None for point in _thin(points)
            ],
            "power_watts": [_num(point.gauges[3]) if point.up and point.gauges else None for point in _thin(points)],
        },
    }


def _empty_gpu(target: str, state: str, reason: str) -> dict[str, Any]:
    return {
        "target": target,
        "gpu": None,
        "uuid": "",
        "state": state,
        "utilization_ratio": None,
        "memory_used_bytes": None,
        "memory_total_bytes": None,
        "memory_used_ratio": None,
        "power_watts": None,
        "reason": reason or None,
        "history": {"times": [], "utilization_ratio": [], "power_watts": []},
    }


# -- arithmetic over points ------------------------------------------------------------------------


def _ends(points: list[Point], slot: int) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """(time, value) of the first and last points that read this counter (its values are reset-corrected
    totals)."""
    first = next((point for point in points if point.counters[slot] is not None), None)
    last = next((point for point in reversed(points) if point.counters[slot] is not None), None)
    if first is None or last is None or first is last:
        return None
    before, after = first.counters[slot], last.counters[slot]
    assert before is not None and after is not None  # what the two searches above looked for
    return (first.time, before), (last.time, after)


def _increase(points: list[Point], slot: int) -> float | None:
    ends = _ends(points, slot)
    return None if ends is None else _round(ends[1][1] - ends[0][1])


def _rate(points: list[Point], slot: int) -> float | None:
    ends = _ends(points, slot)
    if ends is None or ends[1][0] <= ends[0][0]:
        return None
    (first_time, first), (last_time, last) = ends
    return _round((last - first) / (last_time - first_time))


def _quantiles(points: list[Point], index: int) -> dict[str, float | None]:
    """histogram_quantile over each bucket's increase in the window: the last reading less the first of
    the same run (the same bounds)."""
    last = next((h for point in reversed(points) if (h := point.histograms[index]) is not None), None)
    first = (
        next((h for point in points if (h := point.histograms[index]) is not None and h[2] == last[2]), None)
        if last
        else None
    )
    if last is None or first is None or first is last:
        return {_q(q): None for q in QUANTILES}
    bounds = last[0]
    counts = [after - before for before, after in zip(first[1], last[1])]
    return {_q(q): _rounded(_num(histogram_quantile(q, bounds, counts))) for q in QUANTILES}


def _history(points: list[Point]) -> dict[str, list]:
    """Per-point values for the sparklines: gauges as read, rates between consecutive polls; gaps for down polls."""
    running: list[float | None] = []
    kv: list[float | None] = []
    requests: list[float | None] = []
    tokens: list[float | None] = []
    times: list[float] = []
    finished, generated = _SLOT["finished"], _SLOT["generation_tokens_total"]
    r, k = _GAUGE["requests_running"], _GAUGE["kv_cache_usage_ratio"]
    previous: Point | None = None
    for point in _thin(points):
        times.append(round(point.time, 3))
        if not point.up or not point.gauges:
            for values in (running, kv, requests, tokens):
                values.append(None)
            previous = point if point.up else previous
            continue
        gauges, counters = point.gauges, point.counters
        running.append(_num(gauges[r]))
        kv.append(_num(gauges[k]))
        if previous is None or not previous.counters or point.time <= previous.time:
            requests.append(None)
            tokens.append(None)
        else:
            span, before = point.time - previous.time, previous.counters
            done, done_before = counters[finished], before[finished]
            made, made_before = counters[generated], before[generated]
            requests.append(None if done is None or done_before is None else round((done - done_before) / span, 4))
            tokens.append(None if made is None or made_before is None else round((made - made_before) / span, 4))
        previous = point
    return {
        "times": times,
        "requests_running": running,
        "kv_cache_usage_ratio": kv,
        "request_rate": requests,
        "generation_tokens_per_second": tokens,
    }


def _thin(points: list[Point]) -> list[Point]:
    if len(points) <= SPARK_POINTS:
        return points
    step = len(points) / SPARK_POINTS
    return [points[min(len(points) - 1, round(i * step))] for i in range(SPARK_POINTS - 1)] + [points[-1]]


def _q(q: float) -> str:
    return f"p{q * 100:g}"


def _num(value: float | None) -> float | None:
    """A value JSON can carry, as read: NaN and infinities are null."""
    if value is None or math.isnan(value) or math.isinf(value):
        return None
    return value


def _rounded(value: float | None) -> float | None:
    return None if value is None else _round(value)


def _round(value: float) -> float:
    """A computed value to six significant digits: more would be noise from the arithmetic."""
    return float(f"{value:.6g}")


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat(timespec="milliseconds")
