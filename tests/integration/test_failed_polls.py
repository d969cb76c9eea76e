"""A failed poll leaves nothing behind: for every kind of target and every way a poll can fail.

The daemon collects reference cycles rarely (daemon.GC_YOUNG_THRESHOLD), so anything a failed poll
leaves in a cycle (its exception's frames, with the body they were reading) stays for minutes;
one failing 16 MiB target grew the daemon by gigabytes. Each test here fails a poll several times
in one way and then asserts that (1) the polls made no cyclic garbage and (2) the memory Python
holds did not grow, so nothing the polls made is alive after them, and that the reason is the
named one, with a message that says what happened in words, not a Python repr.
"""

from __future__ import annotations

import asyncio
import gc
import json
import subprocess
import sys
import tracemalloc
from asyncio.selector_events import _SelectorTransport  # type: ignore[attr-defined]  # private: not in typeshed
from collections import Counter

import pytest
from helpers.support import HELPERS, free_port

from exporter.config.loader import parse_config
from exporter.runtime.scheduler import TargetPoller
from exporter.serve.store import Snapshot, Store
from exporter.sources import Shared

#: What memory held after the polls may exceed that before them by: noise from allocator free lists
#: and the interpreter's tables, far below one body of the sizes the upstreams send (MiBs).
HELD_NOISE = 512 * 1024
#: Polls measured after the first two (which may make what a target keeps: its parser, its connection).
MEASURED_POLLS = 3


@pytest.fixture(scope="module")
def hostile():
    """tests/helpers/hostile_upstream.py in a process of its own: none of its objects are counted here."""
    process = subprocess.Popen(
        [sys.executable, str(HELPERS / "hostile_upstream.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        port = int(process.stdout.readline())
        yield f"http://127.0.0.1:{port}"
    finally:
        process.stdin.close()
        process.wait(10)


def _target(yaml_target: str, defaults: str = "{interval: 10s, timeout: 5s, retries: 1, backoff: 10ms}"):
    # A timeout long enough for a parse slowed by tracemalloc: a poll that timed out would leave its
    # parse running in the ingest thread (exporter.core.offload), holding its body until it is done.
    return parse_config(f"defaults: {defaults}\ntargets:\n  - {yaml_target}\n").targets[0]


def _closed_transport_cycles(garbage: list) -> set[int]:
    """asyncio's own: a closed socket transport refers to itself through a bound method (CPython 3.11),
    with its socket (closed) and address tuples. Everything else in `garbage` is ours to answer for."""
    ids: set[int] = set()
    for item in garbage:
        if isinstance(item, _SelectorTransport):
            assert item.is_closing(), f"an open transport became garbage: {item!r}"
            ids.add(id(item))
            for part in gc.get_referents(item):
                ids.add(id(part))
                if isinstance(part, dict):
                    ids.update(id(value) for value in part.values())
                    ids.update(id(inner) for value in part.values() for inner in gc.get_referents(value))
    return ids


async def failed_polls_leave_nothing(poller: TargetPoller, polls: int = MEASURED_POLLS) -> Snapshot:
    """Poll twice, then `polls` more times with the collector off; assert those left no garbage and
    held no more memory after than before. The last snapshot."""
    tracemalloc.start()  # before the first polls: what they replace (a table resized) counts as freed
    for _ in range(2):
        await poller.poll()
    gc.collect()
    gc.disable()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(polls):
            snapshot = await poller.poll()
        await asyncio.sleep(0)  # callbacks the polls scheduled (connection_lost...) run
        held = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        asyncio_own = _closed_transport_cycles(gc.garbage)
        garbage = Counter(type(item).__qualname__ for item in gc.garbage if id(item) not in asyncio_own)
    finally:
        tracemalloc.stop()
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert not garbage, f"{snapshot.last_reason}: failed polls left cyclic garbage {dict(garbage.most_common(8))}"
    assert held < HELD_NOISE, f"{snapshot.last_reason}: memory held grew by {held} bytes over {polls} failed polls"
    return snapshot


def says_what_happened(message: str) -> bool:
    """Words, not a repr: no `<Class ...>`, no `message='...'`, no `Error(`."""
    return bool(message) and not any(mark in message for mark in ("<", "message=", "Error(", "Exception("))


#: path on the hostile upstream -> (extra target config, the reason the poll must fail with)
HTTP_FAILURES = {
    "status": ("", "http_status"),
    "hang": ("timeout: 200ms", "timeout"),
    "endless": ("body_size_limit: 1MiB", "body_too_large"),
    "big": ("body_size_limit: 1MiB", "body_too_large"),
    "bomb": ("body_size_limit: 1MiB", "body_too_large"),
    "unparsable": ("", "parse"),
    "many": ("sample_limit: 100", "sample_limit"),
    "redirect": ("", "too_many_redirects"),
    "short": ("", "invalid_response"),
    "long": ("", "read"),
    "cut": ("", "read"),
    "not-http": ("", "invalid_response"),
}


@pytest.mark.parametrize("path", HTTP_FAILURES)
async def test_a_failed_http_poll_leaves_nothing_behind(hostile, path):
    extra, reason = HTTP_FAILURES[path]
    target = _target(f"{{name: hostile, type: http, url: '{hostile}/{path}'{', ' + extra if extra else ''}}}")
    shared = Shared()
    try:
        snapshot = await failed_polls_leave_nothing(TargetPoller(target, Store(), shared))
    finally:
        await shared.close()
    assert (snapshot.up, snapshot.last_reason) == (False, reason), snapshot.last_error
    assert says_what_happened(snapshot.last_error), snapshot.last_error


async def test_a_refused_connection_leaves_nothing_behind():
    target = _target(f"{{name: refused, type: http, url: 'http://127.0.0.1:{free_port()}/metrics'}}")
    shared = Shared()
    try:
        snapshot = await failed_polls_leave_nothing(TargetPoller(target, Store(), shared))
    finally:
        await shared.close()
    assert snapshot.last_reason == "connect" and says_what_happened(snapshot.last_error)


async def test_a_redirect_loop_and_a_short_content_length_say_so(hostile):
    shared = Shared()
    try:
        loop = await TargetPoller(
            _target(f"{{name: loop, type: http, url: '{hostile}/redirect'}}"), Store(), shared
        ).poll()
        short = await TargetPoller(
            _target(f"{{name: short, type: http, url: '{hostile}/short'}}"), Store(), shared
        ).poll()
    finally:
        await shared.close()
    assert "redirect loop" in loop.last_error and "/redirect" in loop.last_error
    assert "more body than its Content-Length" in short.last_error


# -- nats ----------------------------------------------------------------------------------------

#: A runtime_stats reply nobody can read in full: 100,000 arrays deep.
DEEP = b"[" * 100_000 + b"]" * 100_000
#: subject -> (reply, extra target config, the reason the poll must fail with)
NATS_FAILURES = {
    "not-json": (b'{"metrics": {"gauges": ', "", "parse"),
    "not-an-object": (b"[1, 2, 3]", "", "parse"),
    "deep": (DEEP, "", "parse"),
    "too-large": (
        json.dumps({"metrics": {"gauges": {f"g{i}": i for i in range(20_000)}}}).encode(),
        "reply_size_limit: 64KiB",
        "reply_too_large",
    ),
    "many": (
        json.dumps({"metrics": {"gauges": {f"g{i}": i for i in range(1000)}}}).encode(),
        "sample_limit: 100",
        "sample_limit",
    ),
    "long-label": (json.dumps({"worker_id": "w" * 5000, "metrics": {"gauges": {"a": 1}}}).encode(), "", "parse"),
    "silent": (None, "timeout: 200ms", "timeout"),
    "nobody": (None, "", "no_responders"),
}


async def responder(url: str, subject: str, reply: bytes | None):
    """A nats-py client answering `subject` with `reply`; None subscribes and never answers."""
    import nats

    async def quiet(exc: Exception) -> None:
        pass

    client = await nats.connect(url, error_cb=quiet)

    async def answer(msg) -> None:
        if reply is not None:
            await msg.respond(reply)

    await client.subscribe(subject, cb=answer)
    await client.flush()
    return client


@pytest.mark.parametrize("subject", NATS_FAILURES)
@pytest.mark.parametrize("gather", [False, True], ids=["request", "gather"])
async def test_a_failed_nats_poll_leaves_nothing_behind(natsd, subject, gather):
    reply, extra, reason = NATS_FAILURES[subject]
    client = None if subject == "nobody" else await responder(natsd.url, subject, reply)
    fields = ", ".join(f for f in (extra, "gather: true, gather_window: 150ms" if gather else "") if f)
    target = _target(
        f"{{name: stats, type: nats, servers: ['{natsd.url}'], subject: {subject}{', ' + fields if fields else ''}}}"
    )
    shared = Shared()
    poller = TargetPoller(target, Store(), shared)
    try:
        snapshot = await failed_polls_leave_nothing(poller)
    finally:
        await poller.close()
        await shared.close()
        if client is not None:
            await client.close()
    expected = "timeout" if gather and reason == "timeout" else reason
    assert (snapshot.up, snapshot.last_reason) == (False, expected), snapshot.last_error
    assert says_what_happened(snapshot.last_error), snapshot.last_error


async def test_one_unreadable_reply_among_gathered_ones_is_counted_not_fatal(natsd):
    """A reply 100,000 arrays deep, or one with a 400-digit integer for a value, costs only itself."""
    good = json.dumps({"worker_id": "w-1", "metrics": {"gauges": {"busy": 0.5}}}).encode()
    huge = b'{"worker_id": "w-2", "metrics": {"gauges": {"busy": ' + b"9" * 400 + b', "idle": 1}}}'
    clients = [await responder(natsd.url, "stats", body) for body in (good, DEEP, huge)]
    target = _target(
        f"{{name: stats, type: nats, servers: ['{natsd.url}'], subject: stats, gather: true, gather_window: 300ms}}"
    )
    shared = Shared()
    poller = TargetPoller(target, Store(), shared)
    try:
        snapshot = await poller.poll()
    finally:
        await poller.close()
        await shared.close()
        for client in clients:
            await client.close()
    assert snapshot.up, snapshot.last_error
    assert snapshot.dropped == {"invalid_reply": 1, "invalid_metric": 1}
    served = {(s.labels.get("worker_id"), s.name) for f in snapshot.families for s in f.samples}
    assert served == {("w-1", "busy"), ("w-2", "idle")}


async def test_the_shared_connection_registry_forgets_a_connection_with_its_last_target():
    """300 reloads that each changed a NATS target's servers once left 302 entries behind."""
    from exporter.runtime.scheduler import Scheduler

    store, shared = Store(), Shared()
    scheduler = Scheduler(store, shared)
    try:
        for port in range(40000, 40030):
            targets = [_target(f"{{name: stats, type: nats, servers: ['nats://127.0.0.1:{port}'], subject: s}}")]
            await scheduler.apply(targets)
            assert len(shared) == 1
        await scheduler.apply([])
        assert len(shared) == 0
    finally:
        await scheduler.close()
        await shared.close()


# -- nvml ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("failure", ["library_missing", "driver_gone", "stuck"])
async def test_a_failed_nvml_poll_leaves_nothing_behind(monkeypatch, failure):
    import threading

    from helpers.fake_nvml import FakeNVML, eight_gpus

    import exporter.sources.nvml.source as nvml_source

    host = FakeNVML(eight_gpus(), library_missing=failure == "library_missing")
    monkeypatch.setattr(nvml_source, "load_binding", lambda: host)
    stuck = threading.Event()
    if failure == "stuck":
        host.gpus[3].blocks["nvmlDeviceGetPowerUsage"] = stuck
    target = _target("{name: gpus, type: nvml}", "{interval: 5s, timeout: 200ms, retries: 0}")
    poller = TargetPoller(target, Store(), Shared())
    try:
        if failure == "driver_gone":
            assert (await poller.poll()).up
            monkeypatch.setattr(
                host, "nvmlInit", lambda: None
            )  # it stays gone: every call fails, and init does nothing
            host.initialized = 0
        snapshot = await failed_polls_leave_nothing(poller)
    finally:
        stuck.set()
        await poller.close()
    assert snapshot.up is False and snapshot.last_reason == {"stuck": "timeout"}.get(failure, "nvml_unavailable")
    assert says_what_happened(snapshot.last_error), snapshot.last_error


async def test_a_body_over_the_sample_limit_is_refused_before_it_is_parsed(hostile, monkeypatch):
    import exporter.pipeline.target as pipeline_module

    parsed = []
    monkeypatch.setattr(pipeline_module, "parse", lambda *args, **kwargs: parsed.append(1))
    shared = Shared()
    try:
        target = _target(f"{{name: many, type: http, url: '{hostile}/many', sample_limit: 100}}")
        snapshot = await TargetPoller(target, Store(), shared).poll()
    finally:
        await shared.close()
    assert snapshot.last_reason == "sample_limit" and "20000 samples" in snapshot.last_error
    assert parsed == []


async def test_a_bug_in_a_source_is_named_internal_error_with_where_it_was_raised(hostile, monkeypatch):
    from exporter.sources.http import HTTPSource

    async def broken(self):
        return 1 / 0

    monkeypatch.setattr(HTTPSource, "poll", broken)
    shared = Shared()
    try:
        snapshot = await TargetPoller(
            _target(f"{{name: buggy, type: http, url: '{hostile}/status'}}"), Store(), shared
        ).poll()
    finally:
        await shared.close()
    assert snapshot.last_reason == "internal_error"
    assert "ZeroDivisionError: division by zero at test_failed_polls.py:" in snapshot.last_error
    assert says_what_happened(snapshot.last_error)


async def _cyclic_garbage_of(step) -> Counter[str]:
    """The types of what awaiting `step` left that only a full collection would free."""
    gc.collect()
    gc.disable()
    try:
        await step
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        return Counter(type(item).__qualname__ for item in gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


async def test_targets_a_reload_stops_leave_no_garbage(hostile):
    """Every reload that restarted a target left the old poller, its caches and its last families in
    a reference cycle, for a full collection to find."""
    from exporter.runtime.scheduler import Scheduler

    body = f"{hostile}/many"  # 20,000 series, polled well
    shared = Shared()
    scheduler = Scheduler(Store(), shared)
    try:
        for turn in range(3):
            # Intervals long enough that no poll of their own runs meanwhile: each turn's polls are the test's
            # (a poll cancelled mid-way is the next test's case).
            targets = [
                _target(f"{{name: t{i}, type: http, url: '{body}', interval: {3600 + turn}s}}") for i in range(3)
            ]
            await scheduler.apply(targets)
            for name in scheduler.targets:
                assert (await scheduler._pollers[name][0].poll()).up
        last = [_target(f"{{name: t0, type: http, url: '{hostile}/status', interval: 9s}}")]
        garbage = await _cyclic_garbage_of(scheduler.apply(last))
    finally:
        await scheduler.close()
        await shared.close()
    assert not garbage, dict(garbage.most_common(8))


async def test_a_poll_a_reload_cancels_mid_way_keeps_nothing_it_read(hostile):
    """A reload that stops a target while its poll is under way (polls every 100 ms of a body of 20,000
    series, cut off by their timeout or by the reload) frees what that poll read at once: the
    CancelledError's frames held the parsed families, in a cycle with the task. What aiohttp's own
    objects of a cancelled request keep in cycles (a transport, a ServerDisconnectedError) is not ours."""
    from exporter.runtime.scheduler import Scheduler

    shared = Shared()
    scheduler = Scheduler(Store(), shared)
    ours = {"Family", "Sample", "SeriesFamily", "Snapshot", "TargetPoller", "Payload"}
    garbage: Counter[str] = Counter()
    try:
        for turn in range(4):  # each turn stops three targets at whatever point their polls have reached
            polling = [
                _target(f"{{name: t{turn}{i}, type: http, url: '{hostile}/many', interval: 100ms, timeout: 90ms}}")
                for i in range(3)
            ]
            last = [_target(f"{{name: t9, type: http, url: '{hostile}/status', interval: 1h}}")]
            await scheduler.apply(polling)
            await asyncio.sleep(0.5 + 0.13 * turn)
            left = await _cyclic_garbage_of(scheduler.apply(last))
            garbage.update({kind: count for kind, count in left.items() if kind in ours})
    finally:
        await scheduler.close()
        await shared.close()
    assert not garbage, dict(garbage)
