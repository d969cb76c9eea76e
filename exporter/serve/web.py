"""HTTP routes: /metrics for Prometheus, /healthz and /readyz for supervisors, /targets for people.

The pages are plain HTML with inline CSS and no scripts or external assets, so that they work on an
air-gapped GPU host and in a text browser. Secrets never reach them: targets show `redacted()`
config, and failures are scrubbed of secret values before they are stored.
"""

from __future__ import annotations

import asyncio
import html
import json
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import yaml
from aiohttp import web
from prometheus_client.exposition import choose_encoder, gzip_accepted

from exporter import __version__
from exporter.config.web import WebSecurity
from exporter.core import offload
from exporter.core.events import Event, TargetEvents
from exporter.core.redact import REGISTRY
from exporter.format.escaping import PAYLOAD_PROBLEMS
from exporter.pipeline.exposition import AheadDeflater, Body, openmetrics_parts, text_parts
from exporter.serve.collector import Collector, target_exposition
from exporter.serve.explain import explain_snapshot
from exporter.serve.overview.live import Overview
from exporter.serve.overview.routes import add_routes as add_overview_routes
from exporter.serve.store import Snapshot, Store
from exporter.serve.webauth import secure

STORE_KEY = web.AppKey("store", Store)
COLLECTOR_KEY = web.AppKey("collector", Collector)
AHEAD_KEY = web.AppKey("ahead", AheadDeflater)
# aiohttp's stubs take a class as AppKey's type: a Callable is not one, though it works the same.
READY_KEY: web.AppKey[Callable[[], bool]] = web.AppKey("ready", Callable[[], bool])  # type: ignore[arg-type]
EVENTS_KEY = web.AppKey("events", TargetEvents)
#: Withheld families listed on a target's page (the JSON lists them all).
WITHHELD_SHOWN = 200

#: How much of the last payload the debugging page shows.
RAW_SHOWN = 8 * 1024
#: How much of a target's normalized series the debugging page shows (/metrics has them all).
SERIES_SHOWN = 256 * 1024


def build_app(
    store: Store,
    collector: Collector,
    *,
    is_ready: Callable[[], bool],
    security: WebSecurity | None = None,
    events: TargetEvents | None = None,
    overview: Overview | None = None,
) -> web.Application:
    app = web.Application(middlewares=[scrub_secrets])
    ahead = app[AHEAD_KEY] = AheadDeflater(lambda: [snapshot.target.name for snapshot in store.snapshots()])
    store.observers.append(lambda snapshot: ahead.observe(snapshot.families, snapshot.target.name))
    app[STORE_KEY] = store
    app[COLLECTOR_KEY] = collector
    app[READY_KEY] = is_ready
    app[EVENTS_KEY] = events if events is not None else TargetEvents()  # the daemon passes its own
    if security is not None:
        secure(app, security)
    app.add_routes(
        [
            web.get("/", landing),
            web.get("/metrics", metrics),
            web.get("/healthz", healthz),
            web.get("/readyz", readyz),
            web.get("/targets", targets_page),
            web.get("/targets/{name}", target_page),
            web.get("/api/targets", targets_json),
            web.get("/api/targets/{name}", target_json),
        ]
    )
    add_overview_routes(app, overview if overview is not None else Overview(store))
    return app


@web.middleware
async def scrub_secrets(request: web.Request, handler) -> web.StreamResponse:
    """Every page and JSON answer (everything but /metrics) with every live target's secrets scrubbed, in
    whatever form an upstream echoed them (see exporter.core.redact): the one net under everything shown."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.text:
            exc.text = REGISTRY.scrub(exc.text)
        raise
    if (
        request.path != "/metrics"
        and isinstance(response, web.Response)
        and isinstance(response.body, bytes)
        and response.content_type in ("text/html", "application/json", "text/plain")
    ):
        text = response.body.decode(response.charset or "utf-8", "replace")
        scrubbed = REGISTRY.scrub(text)
        if scrubbed != text:
            response.body = scrubbed.encode(response.charset or "utf-8")
    return response


#: Bodies of this much text are finished (joined, or gzipped) in a worker thread, so that the event
#: loop keeps polling meanwhile.
FINISH_IN_THREAD = 256 * 1024


async def metrics(request: web.Request) -> web.Response:
    """The exposition, negotiated (text 0.0.4 or OpenMetrics) as prometheus_client does it, gzipped when asked.

    The event loop gathers the text each family keeps from its poll and, for gzip, the deflated twin
    kept beside it (made once per poll, at level 1), deflating only the HELP/TYPE lines and small
    chunks itself: a small share of the body (exporter.pipeline.exposition.Body; docs/performance.md). The rest,
    joining the text or taking its CRC-32 for the gzip trailer, runs in a worker thread when large."""
    _, content_type = choose_encoder(request.headers.get("Accept", ""))
    openmetrics = content_type.startswith("application/openmetrics-text")
    with offload.scraping():  # ingest work waits for it (not for the client's reading of it)
        merged = request.app[COLLECTOR_KEY].merged()
        compress = gzip_accepted(request.headers.get("Accept-Encoding", ""))
        if compress:
            request.app[AHEAD_KEY].scraped(openmetrics=openmetrics)
        body = Body(openmetrics_parts(merged) if openmetrics else text_parts(merged), gzip=compress)
        headers = {"Content-Type": content_type, "Vary": "Accept-Encoding"}
        if compress:
            headers["Content-Encoding"] = "gzip"
        data = await asyncio.to_thread(body.finish) if body.size >= FINISH_IN_THREAD else body.finish()
    return web.Response(body=data, headers=headers)


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    """Ready once the config is loaded and every target has been polled at least once."""
    pending = [snap.target.name for snap in request.app[STORE_KEY].snapshots() if snap.up is None]
    if request.app[READY_KEY]() and not pending:
        return web.Response(text="ready\n")
    reason = f"waiting for the first poll of: {', '.join(pending)}" if pending else "starting"
    return web.Response(status=503, text=f"not ready: {reason}\n")


# -- data -------------------------------------------------------------------------------------


def state_of(snap: Snapshot) -> str:
    return "pending" if snap.up is None else ("up" if snap.up else "down")


def profile_of(snap: Snapshot) -> str | None:
    """The backend profile: the one the last poll used if the snapshot says, else the configured one."""
    return snap.profile or snap.target.profile


def target_state(snap: Snapshot) -> dict[str, Any]:
    """One target's status for /api/targets and the pages: what a person debugging it asks first."""
    return {
        "name": snap.target.name,
        "type": snap.target.type,
        "state": state_of(snap),
        "profile": profile_of(snap),
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
        "payload_problems": dict(snap.problems),
        "last_payload_problems": {
            reason: {"count": count, "detail": PAYLOAD_PROBLEMS.get(reason, "")}
            for reason, count in sorted(snap.last_problems.items())
        },
        "content_type": snap.content_type,
        "config": snap.target.redacted(),
    }


def target_detail(snap: Snapshot, events: list[Event], store: Store | None = None) -> dict[str, Any]:
    """target_state plus what the debugging page shows: recent events, the last payload, the series served,
    and the families withheld because another target serves a clashing family of that name."""
    name = snap.target.name
    served = store.served(name) if store is not None else snap.families
    withheld = store.withheld(name) if store is not None else {}
    explanation = explain_snapshot(snap)  # worked out now, for this request only
    return {
        **target_state(snap),
        "explain": explanation.as_dict() if explanation is not None else None,
        "events": [
            {"time": _iso(event.time), "level": event.level, "event": event.message, "fields": _plain(event.fields)}
            for event in events
        ],
        "raw": {"received": _iso(snap.raw_at), "kept_bytes": len(snap.raw), "text": _text(snap.raw[:RAW_SHOWN])},
        "series": _capped(target_exposition(served), SERIES_SHOWN),
        "withheld": [
            {
                "family": family.family,
                "type": family.type,
                "reason": family.reason,
                "served_family": family.served[0],
                "served_type": family.served[1],
                "served_by": store.claims.declarers(family.served) if store is not None else [],
            }
            for _, family in sorted(withheld.items())
        ],
    }


async def targets_json(request: web.Request) -> web.Response:
    return web.json_response([target_state(snap) for snap in request.app[STORE_KEY].snapshots()])


async def target_json(request: web.Request) -> web.Response:
    snap = _snapshot_or_404(request)
    return web.json_response(
        target_detail(snap, request.app[EVENTS_KEY].recent(snap.target.name), request.app[STORE_KEY])
    )


def _snapshot_or_404(request: web.Request) -> Snapshot:
    store = request.app[STORE_KEY]
    name = request.match_info["name"]
    snap = store.get(name)
    if snap is None:
        known = ", ".join(s.target.name for s in store.snapshots()) or "none"
        raise web.HTTPNotFound(text=f"no target named {name!r}; configured targets: {known}\n")
    return snap


# -- pages ------------------------------------------------------------------------------------

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#1f2937;color:#fff;padding:10px 24px}header a{color:#cbd5e1;margin-left:16px}
header strong a{color:#fff;margin:0;text-decoration:none}
main{padding:16px 24px}h1{font-size:22px;margin:4px 0 12px}h2{font-size:17px;margin:24px 0 8px}
table{border-collapse:collapse;background:#fff;width:100%}th,td{border:1px solid #e2e2e2;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#f1f1f1;font-weight:600}td.num{text-align:right;white-space:nowrap}
.badge{display:inline-block;border-radius:4px;padding:1px 8px;font-weight:700;font-size:12px;color:#fff}
.badge.up{background:#15803d}.badge.down{background:#b91c1c}.badge.pending{background:#6b7280}
.label{display:inline-block;background:#e5e7eb;border-radius:4px;padding:0 6px;margin:1px;font-size:12px}
.muted{color:#6b7280}.error{color:#b91c1c}.summary{margin:0 0 12px}.summary .bad{color:#b91c1c;font-weight:700}
pre{background:#fff;border:1px solid #e2e2e2;padding:8px;overflow:auto;max-height:480px;font-size:12px;white-space:pre-wrap;word-break:break-all}
nav.filter a{margin-right:12px}nav.filter a.on{font-weight:700;text-decoration:none;color:#222}
td.level-warning,td.level-error{color:#b91c1c;font-weight:600}
"""


def _page(title: str, body: str) -> web.Response:
    text = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{html.escape(title)} - inference-exporter</title><style>{_STYLE}</style></head>
<body><header><strong><a href="/">inference-exporter</a></strong>
<a href="/overview">Overview</a><a href="/targets">Targets</a><a href="/metrics">Metrics</a><a href="/api/targets">JSON</a></header>
<main>{body}</main></body></html>
"""
    return web.Response(text=text, content_type="text/html")


async def targets_page(request: web.Request) -> web.Response:
    """Every target at a glance, like Prometheus's own targets page; ?state=unhealthy hides the up ones."""
    store = request.app[STORE_KEY]
    snapshots = store.snapshots()
    now = time.time()
    counts = {state: sum(1 for snap in snapshots if state_of(snap) == state) for state in ("up", "down", "pending")}
    unhealthy_only = request.query.get("state") == "unhealthy"
    shown = [snap for snap in snapshots if not (unhealthy_only and snap.up)]
    config_note = (
        f"config loaded {_ago(store.config_loaded_at, now)}"
        if store.config_ok
        else '<span class="bad">the last config reload failed: an older config is running (see the log)</span>'
    )
    rows = (
        "".join(_target_row(snap, now) for snap in shown) or '<tr><td colspan="10" class="muted">no targets</td></tr>'
    )
    body = f"""<h1>Targets</h1>
<p class="summary" id="summary"><strong>{counts["up"]} of {len(snapshots)} up</strong>
· {_count(counts["down"], "down", "bad")} · {_count(counts["pending"], "pending", "")} · {config_note}</p>
<nav class="filter">Show: <a href="/targets"{' class="on"' if not unhealthy_only else ""}>all</a>
<a href="/targets?state=unhealthy"{' class="on"' if unhealthy_only else ""}>unhealthy</a></nav>
<table id="targets"><thead><tr><th>target</th><th>type</th><th>profile</th><th>state</th><th>labels</th>
<th>last poll</th><th>duration</th><th>samples</th><th>next poll</th><th>error</th></tr></thead>
<tbody>
{rows}</tbody></table>"""
    return _page("Targets", body)


def _count(number: int, word: str, css: str) -> str:
    return f'<span class="{css}">{number} {word}</span>' if number and css else f"{number} {word}"


def _target_row(snap: Snapshot, now: float) -> str:
    target, state = snap.target, state_of(snap)
    endpoint = target.redacted().get("url", "")
    error = f"{snap.last_reason}: {snap.last_error}" if snap.last_error else ""
    cells = [
        f'<a href="/targets/{quote(target.name, safe="")}">{_e(target.name)}</a>'
        + (f'<br><span class="muted">{_e(endpoint)}</span>' if endpoint else ""),
        _e(target.type),
        _e(profile_of(snap) or ""),
        f'<span class="badge {state}">{state.upper()}</span>',
        _labels(target.labels),
        f'<span title="{_e(_iso(snap.last_poll) or "")}">{_ago(snap.last_poll, now)}</span>',
        _duration(snap.last_duration),
        str(snap.sample_count),
        f'<span title="{_e(_iso(snap.next_poll) or "")}">{_until(snap.next_poll, now)}</span>',
        f'<span class="error">{_e(error)}</span>',
    ]
    classes = ["", "", "", "", "", "num", "num", "num", "num", ""]
    tds = "".join(f'<td class="{css}">{cell}</td>' if css else f"<td>{cell}</td>" for css, cell in zip(classes, cells))
    return f'<tr data-target="{_e(target.name)}" data-state="{state}" data-samples="{snap.sample_count}">{tds}</tr>\n'


async def target_page(request: web.Request) -> web.Response:
    """One target's debugging view, as blackbox_exporter's debug output: status, config, log, payload, series."""
    snap = _snapshot_or_404(request)
    detail = target_detail(snap, request.app[EVENTS_KEY].recent(snap.target.name), request.app[STORE_KEY])
    now = time.time()
    state = detail["state"]
    facts = [
        ("type", _e(detail["type"])),
        ("state", f'<span class="badge {state}">{state.upper()}</span>'),
        ("profile", _e(detail["profile"] or "")),
        ("labels", _labels(snap.target.labels)),
        ("interval / timeout", f"{snap.target.interval:g}s / {snap.target.timeout:g}s"),
        ("last poll", f"{_ago(snap.last_poll, now)} <span class=muted>{_e(detail['last_poll'] or '')}</span>"),
        ("last poll duration", _duration(snap.last_duration)),
        ("last success", f"{_ago(snap.last_success, now)} <span class=muted>{_e(detail['last_success'] or '')}</span>"),
        ("next poll", _until(snap.next_poll, now)),
        ("samples", str(snap.sample_count)),
        ("polls / retries", f"{snap.polls} / {snap.retries}"),
        ("failed polls by reason", _e(_counts(snap.errors))),
        ("dropped samples by reason", _e(_counts(snap.dropped))),
        ("content type", _e(snap.content_type)),
        ("payload problems by reason <span class=muted>(polls)</span>", _problems(snap)),
        ("families withheld by reason", _e(_counts(_by_reason(detail["withheld"])))),
        (
            "last error",
            f'<span class="error">{_e(f"{snap.last_reason}: {snap.last_error}" if snap.last_error else "")}</span>',
        ),
    ]
    status = "".join(f"<tr><th>{name}</th><td>{value}</td></tr>" for name, value in facts)
    config = yaml.safe_dump(detail["config"], sort_keys=False, default_flow_style=False, allow_unicode=True)
    events = (
        "".join(
            f'<tr><td class="num">{_e(event["time"] or "")}</td><td class="level-{_e(event["level"])}">{_e(event["level"])}</td>'
            f"<td>{_e(event['event'])}</td><td>{_e(_fields(event['fields']))}</td></tr>\n"
            for event in reversed(detail["events"])
        )
        or '<tr><td colspan="4" class="muted">nothing logged for this target yet</td></tr>'
    )
    raw = detail["raw"]
    if raw["kept_bytes"]:
        kept = raw["kept_bytes"]
        size = f"all {kept} bytes" if kept <= RAW_SHOWN else f"the first {RAW_SHOWN} of the {kept} bytes kept"
        raw_note = f"received {_ago(snap.raw_at, now)} ({_e(raw['received'] or '')}); {size}"
        raw_block = f'<p class="muted">{raw_note}</p><pre id="raw">{_e(raw["text"])}</pre>'
    else:
        raw_block = '<p class="muted">no payload received yet</p>'
    series = detail["series"]
    series_block = (
        f'<pre id="series">{_e(series)}</pre>'
        if snap.families
        else '<p class="muted">no series: the target is not up</p>'
    )
    withheld_block = _withheld_table(detail["withheld"])
    explain_block = _explain_block(detail["explain"])
    name = _e(snap.target.name)
    body = f"""<p><a href="/targets">← all targets</a> · <a href="/api/targets/{quote(snap.target.name, safe="")}">JSON</a></p>
<h1>{name}</h1>
<table id="status">{status}</table>
<h2>Config <span class="muted">(secrets shown as &lt;secret&gt;)</span></h2><pre id="config">{_e(config)}</pre>
<h2>Recent log events <span class="muted">(newest first, debug included)</span></h2>
<table id="events"><thead><tr><th>time</th><th>level</th><th>event</th><th>details</th></tr></thead><tbody>{events}</tbody></table>
<h2>Last payload received</h2>{raw_block}
<h2>Unified series: profile and sources <span class="muted">(as of the last successful poll)</span></h2>{explain_block}
<h2>Series served from this target</h2>{series_block}
<h2>Families withheld <span class="muted">(another target serves a clashing family of that name)</span></h2>{withheld_block}"""
    return _page(snap.target.name, body)


async def landing(request: web.Request) -> web.Response:
    return _page(
        "inference-exporter",
        f"""<h1>inference-exporter {__version__}</h1><ul>
<li><a href="/metrics">/metrics</a>: every target's series and the exporter's own</li>
<li><a href="/overview">/overview</a>: every backend live: load, rates, latency percentiles, health, GPUs
(<a href="/api/overview">JSON</a>, <a href="/api/overview.csv">CSV</a>)</li>
<li><a href="/targets">/targets</a>: each target's state and last error (<a href="/api/targets">JSON</a>)</li>
<li><a href="/healthz">/healthz</a> and <a href="/readyz">/readyz</a></li></ul>""",
    )


# -- formatting ---------------------------------------------------------------------------------


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat(timespec="milliseconds")


def _ago(timestamp: float | None, now: float) -> str:
    return "never" if timestamp is None else f"{_span(now - timestamp)} ago"


def _until(timestamp: float | None, now: float) -> str:
    if timestamp is None:
        return ""
    return "now" if timestamp <= now else f"in {_span(timestamp - now)}"


def _span(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"
    return f"{seconds // 3600:.0f}h{seconds % 3600 // 60:02.0f}m"


def _duration(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds * 1000:.0f} ms"


def _labels(labels: dict[str, str]) -> str:
    return "".join(f'<span class="label">{_e(key)}="{_e(value)}"</span>' for key, value in sorted(labels.items()))


def _by_reason(withheld: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for family in withheld:
        counts[family["reason"]] = counts.get(family["reason"], 0) + 1
    return counts


#: What each reason a family is withheld for means (the rule is exporter.serve.claims'; docs/serving.md: When targets disagree).
_WITHHELD_BECAUSE = {
    "vocabulary": "the vocabulary gives the name the other type (a unified family, or a family a profile reads)",
    "untyped": "this target's family is untyped; the other is typed",
    "outnumbered": "more targets serve the other type",
    "tie_break": "as many targets serve each; the fixed type order, then the name, decided",
}


def _explain_block(explanation: dict[str, Any] | None) -> str:
    """Which profile the last poll used and why, and per concept where it came from or why it is missing."""
    if explanation is None:
        return '<p class="muted" id="explain">no successful poll yet</p>'
    rows = "".join(
        f'<tr data-concept="{_e(report["concept"])}" data-state="{_e(report["state"])}"><td>{_e(report["concept"])}</td>'
        f"<td>{_e(report['state'])}</td><td>{_e(report['detail'])}</td></tr>\n"
        for report in explanation["concepts"]
    )
    table = (
        f'<table id="concepts"><thead><tr><th>concept</th><th>state</th><th>where from, or why missing</th></tr></thead>'
        f"<tbody>{rows}</tbody></table>"
        if rows
        else ""
    )
    return f'<div id="explain"><p>profile <strong>{_e(explanation["profile"] or "(none)")}</strong>: {_e(explanation["why"])}</p>{table}</div>'


def _withheld_table(withheld: list[dict[str, Any]]) -> str:
    if not withheld:
        return '<p class="muted">none: every family of this target is served</p>'
    shown = withheld[:WITHHELD_SHOWN]
    rows = "".join(
        f"<tr><td>{_e(f['family'])}</td><td>{_e(f['type'])}</td><td>{_e(f['reason'])}: {_e(_WITHHELD_BECAUSE.get(f['reason'], ''))}</td>"
        f"<td>{_e(f['served_family'])} ({_e(f['served_type'])})</td><td>{_e(_some(f['served_by']))}</td></tr>\n"
        for f in shown
    )
    if len(withheld) > len(shown):
        rows += f'<tr><td colspan="5" class="muted">and {len(withheld) - len(shown)} more (see the JSON)</td></tr>\n'
    return (
        '<table id="withheld"><thead><tr><th>family</th><th>type</th><th>reason</th><th>served instead</th>'
        f"<th>served by</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _some(names: list[str], shown: int = 10) -> str:
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {more} more" if more > 0 else "")


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{reason}: {count}" for reason, count in sorted(counts.items())) or "none"


def _problems(snap: Snapshot) -> str:
    """Polls with payload problems by reason, and what the last poll's were, in words."""
    if not snap.problems:
        return "none"
    counts = f'<span class="error">{_e(_counts(snap.problems))}</span>'
    last = "".join(
        f"<li>last poll: {_e(reason)} ({'the whole body' if reason == 'unknown_escaping' else f'{count} sample lines'}):"
        f" {_e(PAYLOAD_PROBLEMS.get(reason, ''))}</li>"
        for reason, count in sorted(snap.last_problems.items())
    )
    return counts + (f'<ul id="payload-problems">{last}</ul>' if last else "")


def _plain(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Event fields as JSON can carry them."""
    return {
        key: value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
        for key, value in fields.items()
    }


def _fields(fields: dict[str, Any]) -> str:
    return " ".join(
        f"{key}={value if isinstance(value, str) else json.dumps(value, default=str)}" for key, value in fields.items()
    )


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _capped(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n... {len(text) - limit} more characters; /metrics serves them all\n"
