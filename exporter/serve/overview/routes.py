"""The overview's routes: /overview (a page), /api/overview (JSON), /api/overview.csv, /api/overview/stream (SSE).

They sit on the same aiohttp app as /metrics, so the web config's basic auth, headers and TLS apply
to them as to every other route. A stream sends the report once a second on wall-clock second
boundaries, so that every client in a second shares one report; it is bounded in clients, in time
and in how long a write to a stalled client may take.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import time
from typing import Any

from aiohttp import web

from exporter.core.fields import format_duration, parse_duration
from exporter.serve.overview import page
from exporter.serve.overview.live import Overview
from exporter.serve.overview.report import LATENCIES, QUANTILES, _q

OVERVIEW_KEY = web.AppKey("overview", Overview)
STOPPING_KEY = web.AppKey("overview_stopping", asyncio.Event)
#: Stream clients at once; more are told 503 and to retry.
MAX_STREAMS = 64
#: A stream ends after this long (EventSource reconnects by itself), so no connection lives forever.
MAX_STREAM_SECONDS = 3600.0
#: A client that has not taken a message within this long is dropped.
WRITE_TIMEOUT = 5.0
#: What the browser waits before reconnecting a broken stream, in milliseconds.
RETRY_MS = 2000

#: The CSV's columns, in order: one row per target and model.
CSV_COLUMNS = (
    "target",
    "model",
    "backend",
    "state",
    "health",
    "reasons",
    "window_seconds",
    "samples",
    "requests_running",
    "requests_waiting",
    "kv_cache_usage_ratio",
    "request_rate",
    "success_rate",
    "abort_rate",
    "error_rate",
    "error_ratio",
    "abort_ratio",
    "prompt_tokens_per_second",
    "generation_tokens_per_second",
    *(f"{name.removesuffix('_seconds')}_{_q(q)}_seconds" for name in LATENCIES for q in QUANTILES),
)


def add_routes(app: web.Application, overview: Overview) -> None:
    app[OVERVIEW_KEY] = overview
    app[STOPPING_KEY] = asyncio.Event()
    app.on_shutdown.append(_stop_streams)
    app.add_routes(
        [
            web.get("/overview", overview_page),
            web.get("/api/overview", overview_json),
            web.get("/api/overview.csv", overview_csv),
            web.get("/api/overview/stream", overview_stream, allow_head=False),
        ]
    )


async def _stop_streams(app: web.Application) -> None:
    app[STOPPING_KEY].set()


def _window(request: web.Request) -> float:
    """`?window=5m`: any duration up to the `keep` configured; the configured window when absent."""
    overview = request.app[OVERVIEW_KEY]
    text = request.query.get("window")
    if text is None or text == "":
        return overview.settings.window
    keep = overview.settings.keep
    try:
        window = parse_duration(text[:32])
    except ValueError:
        window = None
    if window is None or window > keep:
        raise web.HTTPBadRequest(
            text=f"window: expected a duration like 1m, 5m or 15m, at most {format_duration(keep)} (overview.keep)\n"
        )
    return window


async def overview_page(request: web.Request) -> web.Response:
    overview = request.app[OVERVIEW_KEY]
    response = web.Response(text=page.render(overview.report(_window(request))), content_type="text/html")
    response.headers["Content-Security-Policy"] = page.CSP
    response.headers["Cache-Control"] = "no-store"
    return response


async def overview_json(request: web.Request) -> web.Response:
    overview = request.app[OVERVIEW_KEY]
    return web.Response(
        body=overview.encoded(_window(request)), content_type="application/json", headers={"Cache-Control": "no-store"}
    )


async def overview_csv(request: web.Request) -> web.Response:
    report = request.app[OVERVIEW_KEY].report(_window(request))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for row in report["backends"]:
        writer.writerow([_cell(value) for value in csv_row(row, report["window_seconds"])])
    return web.Response(
        text=out.getvalue(),
        content_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="overview.csv"', "Cache-Control": "no-store"},
    )


def csv_row(row: dict[str, Any], window: float) -> list[Any]:
    values: dict[str, Any] = {
        **row,
        "reasons": "; ".join(row["reasons"]),
        "window_seconds": window,
        "samples": row["window"]["samples"],
    }
    for name in LATENCIES:
        for q in QUANTILES:
            values[f"{name.removesuffix('_seconds')}_{_q(q)}_seconds"] = row[name][_q(q)]
    return [values[column] for column in CSV_COLUMNS]


def _cell(value: Any) -> str:
    """A CSV cell; text a spreadsheet would run as a formula (=, +, -, @, tab, CR) is quoted with a leading '."""
    if value is None:
        return ""
    if isinstance(value, (int, float)):
        return f"{value:g}" if isinstance(value, float) else str(value)
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


async def overview_stream(request: web.Request) -> web.StreamResponse:
    """Server-sent events: the report as one `data:` line, now and then once a second, until the client goes."""
    overview = request.app[OVERVIEW_KEY]
    window = _window(request)
    if overview.streams >= MAX_STREAMS:
        raise web.HTTPServiceUnavailable(
            text=f"too many overview streams (at most {MAX_STREAMS}); retry later\n", headers={"Retry-After": "10"}
        )
    stopping = request.app[STOPPING_KEY]
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
    overview.streams += 1
    try:
        await response.prepare(request)
        loop = asyncio.get_running_loop()
        ends = loop.time() + MAX_STREAM_SECONDS
        sent = 0
        await _send(response, f"retry: {RETRY_MS}\n\n".encode())
        while not stopping.is_set() and loop.time() < ends:
            sent += 1
            await _send(response, b"id: %d\ndata: %s\n\n" % (sent, overview.encoded(window)))
            # until the next wall-clock second, when every other stream asks for the same report
            wait = 1.0 - time.time() % 1.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), wait if wait > 0.2 else wait + 1.0)
    except (ConnectionError, TimeoutError):
        pass  # the client went away, or stopped reading
    finally:
        overview.streams -= 1
    return response


async def _send(response: web.StreamResponse, data: bytes) -> None:
    async with asyncio.timeout(WRITE_TIMEOUT):
        await response.write(data)
