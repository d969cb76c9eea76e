"""Lifecycle at its edges: a port already taken, and SIGTERM in the middle of a reload."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys

from helpers.support import REPO, free_port

from exporter.config.loader import parse_config
from exporter.runtime.scheduler import Scheduler
from exporter.serve.store import Store
from exporter.sources import Shared


async def run(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "exporter",
        *args,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


def targets(interval: str, count: int = 20):
    lines = "".join(
        f"  - {{name: t{i}, type: http, url: 'http://127.0.0.1:9/{i}', interval: {interval}}}\n" for i in range(count)
    )
    return parse_config("targets:\n" + lines).targets


async def test_a_port_in_use_exits_1_with_one_error_event_and_no_traceback(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("targets: []\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = await run("run", "--config", str(path), "--listen", f"127.0.0.1:{port}", "--log-format", "json")
        _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 1
    text = err.decode()
    assert "Traceback" not in text, text
    events = [json.loads(line) for line in text.splitlines()]
    errors = [event for event in events if event["level"] == "error"]
    assert len(errors) == 1 and errors[0]["event"] == "cannot listen", events
    assert errors[0]["listen"] == f"127.0.0.1:{port}" and "in use" in errors[0]["error"]


async def test_closing_while_a_reload_restarts_targets_neither_fails_nor_leaves_a_task():
    scheduler = Scheduler(Store(), Shared())
    await scheduler.apply(targets("5s"))
    reload = asyncio.create_task(scheduler.apply(targets("6s")))  # every target restarts
    await asyncio.sleep(0)
    await scheduler.close()  # SIGTERM, while the reload is stopping targets
    await reload  # raised KeyError in Scheduler._stop
    assert scheduler.targets == []
    assert not [task for task in asyncio.all_tasks() if task.get_name().startswith("poll ")]


async def test_sigterm_right_after_sighup_stops_cleanly(tmp_path):
    path = tmp_path / "config.yaml"
    lines = "".join(f"  - {{name: t{i}, type: http, url: 'http://127.0.0.1:9/{i}', interval: 5s}}\n" for i in range(50))
    path.write_text("targets:\n" + lines)
    for trial in range(3):
        port = free_port()
        process = await run("run", "--config", str(path), "--listen", f"127.0.0.1:{port}", "--log-format", "json")
        assert process.stderr is not None
        while b"inference-exporter started" not in await asyncio.wait_for(process.stderr.readline(), 30):
            pass
        path.write_text("targets:\n" + lines.replace("5s", f"{6 + trial}s"))  # every target restarts
        process.send_signal(signal.SIGHUP)
        await asyncio.sleep(0.005)
        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), 30)
        text = err.decode()
        assert process.returncode == 0, text
        assert "Traceback" not in text and "never retrieved" not in text, text
