"""Each daemon keeps its own targets' recent events: nothing logged for one shows on another's pages."""

from __future__ import annotations

from helpers.support import daemon_url, wait_until
from test_web_security import fetch


async def test_two_daemons_in_one_process_do_not_share_events(upstream, start_daemon):
    failing = await start_daemon(
        f"defaults: {{interval: 1h, retries: 0}}\n"
        f"targets:\n  - {{name: same, type: http, url: '{upstream.url}/status/500'}}\n"
        f"  - {{name: only-failing, type: http, url: '{upstream.url}/status/503'}}\n"
    )
    healthy = await start_daemon(
        f"defaults: {{interval: 1h, retries: 0}}\n"
        f"targets:\n  - {{name: same, type: http, url: '{upstream.url}/simulated/vllm'}}\n"
    )
    for daemon in (failing, healthy):
        for poller, _ in daemon.scheduler._pollers.values():
            await poller.poll()
    await wait_until(lambda: failing.store.get("same").up is False and healthy.store.get("same").up)

    said_failing = [event.message for event in failing.events.recent("same")]
    said_healthy = [event.message for event in healthy.events.recent("same")]
    assert "poll failed" in said_failing and "target started" in said_failing
    assert "poll failed" not in said_healthy and "target started" in said_healthy
    assert "profile in use" in said_healthy and "profile in use" not in said_failing
    assert healthy.events.recent("only-failing") == []

    _, _, page = await fetch(daemon_url(healthy, "/api/targets/same"))
    assert "poll failed" not in page and "profile in use" in page


async def test_events_logged_in_the_ingest_thread_reach_the_daemon_that_polled(upstream, start_daemon):
    url = f"{upstream.url}/big"  # 1.3 MB, over OFF_LOOP_BYTES: its pipeline runs in the ingest thread
    daemon = await start_daemon(f"defaults: {{interval: 1h}}\ntargets:\n  - {{name: big, type: http, url: '{url}'}}\n")
    poller = daemon.scheduler._pollers["big"][0]
    snapshot = await poller.poll()
    assert snapshot.up
    said = [event.message for event in daemon.events.recent("big")]
    assert "no profile detected: serving the raw families only" in said


def test_the_events_module_holds_no_ring_of_its_own():
    from exporter.core import events

    assert not [name for name, value in vars(events).items() if isinstance(value, events.TargetEvents)]
