"""HTTP routes: /metrics for Prometheus, /healthz and /readyz for supervisors, /targets for people."""

from __future__ import annotations

import html
from datetime import datetime, timezone
from typing import Callable

from aiohttp import web
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.registry import CollectorRegistry

from exporter import __version__
from exporter.store import Snapshot, Store

STORE_KEY = web.AppKey("store", Store)
REGISTRY_KEY = web.AppKey("registry", CollectorRegistry)
READY_KEY = web.AppKey("ready", Callable[[], bool])


def build_app(store: Store, registry: CollectorRegistry, *, is_ready: Callable[[], bool]) -> web.Application:
    app = web.Application()
    app[STORE_KEY] = store
    app[REGISTRY_KEY] = registry
    app[READY_KEY] = is_ready
    app.add_routes(
        [
            web.get("/", landing),
            web.get("/metrics", metrics),
            web.get("/healthz", healthz),
            web.get("/readyz", readyz),
            web.get("/targets", targets_page),
            web.get("/api/targets", targets_json),
        ]
    )
    return app


async def metrics(request: web.Request) -> web.Response:
    """The exposition, negotiated (text 0.0.4 or OpenMetrics) and gzipped as prometheus_client does it."""
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    response = web.Response(body=encoder(request.app[REGISTRY_KEY]), headers={"Content-Type": content_type})
    if gzip_accepted(request.headers.get("Accept-Encoding", "")):
        response.enable_compression(web.ContentCoding.gzip)
    return response


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    """Ready once the config is loaded and every target has been polled at least once."""
    pending = [snap.target.name for snap in request.app[STORE_KEY].snapshots() if snap.up is None]
    if request.app[READY_KEY]() and not pending:
        return web.Response(text="ready\n")
    reason = f"waiting for the first poll of: {', '.join(pending)}" if pending else "starting"
    return web.Response(status=503, text=f"not ready: {reason}\n")


def target_state(snap: Snapshot) -> dict:
    return {
        "name": snap.target.name,
        "type": snap.target.type,
        "profile": snap.profile,
        "state": "pending" if snap.up is None else ("up" if snap.up else "down"),
        "labels": dict(snap.target.labels),
        "interval_seconds": snap.target.interval,
        "timeout_seconds": snap.target.timeout,
        "last_poll": _iso(snap.last_poll),
        "last_poll_duration_seconds": snap.last_duration,
        "last_success": _iso(snap.last_success),
        "next_poll": _iso(snap.next_poll),
        "samples": snap.sample_count,
        "last_error": snap.last_error,
        "last_error_reason": snap.last_reason,
        "polls": snap.polls,
        "retries": snap.retries,
        "errors": dict(snap.errors),
        "dropped": dict(snap.dropped),
        "config": snap.target.redacted(),
    }


async def targets_json(request: web.Request) -> web.Response:
    return web.json_response([target_state(snap) for snap in request.app[STORE_KEY].snapshots()])


async def targets_page(request: web.Request) -> web.Response:
    snapshots = request.app[STORE_KEY].snapshots()
    up = sum(1 for snap in snapshots if snap.up)
    rows = "".join(_row(target_state(snap)) for snap in snapshots)
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>Targets - inference-exporter</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}
.up{{color:#080}}.down{{color:#b00;font-weight:bold}}.pending{{color:#888}}</style></head>
<body><h1>Targets</h1><p>{up} of {len(snapshots)} up. <a href="/api/targets">JSON</a> · <a href="/metrics">metrics</a></p>
<table><tr><th>target</th><th>type</th><th>state</th><th>last poll</th><th>duration</th><th>samples</th><th>next poll</th><th>last error</th></tr>
{rows}</table></body></html>"""
    return web.Response(text=body, content_type="text/html")


def _row(state: dict) -> str:
    duration = state["last_poll_duration_seconds"]
    cells = [
        state["name"],
        state["type"],
        state["state"],
        state["last_poll"] or "never",
        f"{duration * 1000:.0f} ms" if duration is not None else "",
        str(state["samples"]),
        state["next_poll"] or "",
        f"{state['last_error_reason']}: {state['last_error']}" if state["last_error"] else "",
    ]
    escaped = [html.escape(cell) for cell in cells]
    escaped[2] = f'<span class="{state["state"]}">{escaped[2]}</span>'
    return "<tr>" + "".join(f"<td>{cell}</td>" for cell in escaped) + "</tr>\n"


async def landing(request: web.Request) -> web.Response:
    return web.Response(
        content_type="text/html",
        text=f"""<!doctype html><html><head><meta charset="utf-8"><title>inference-exporter</title></head>
<body><h1>inference-exporter {__version__}</h1><ul>
<li><a href="/metrics">/metrics</a>: every target's series and the exporter's own</li>
<li><a href="/targets">/targets</a>: each target's state and last error (<a href="/api/targets">JSON</a>)</li>
<li><a href="/healthz">/healthz</a> and <a href="/readyz">/readyz</a></li></ul></body></html>""",
    )


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).isoformat(timespec="milliseconds")

