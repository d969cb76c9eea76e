"""The daemon's side of systemd: READY=1 once listening, watchdog pings from the event loop, reload and stop notices."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import tempfile
import uuid
from pathlib import Path

import aiohttp
import pytest
from helpers.support import REPO, free_port
from structlog.testing import capture_logs

from exporter.runtime.systemd import Notifier


class NotifySocket:
    """A datagram socket standing in for systemd's notification socket, read from the test's event loop."""

    def __init__(self, address: str):
        #: what goes into $NOTIFY_SOCKET: a path, or "@name" for the abstract namespace
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(b"\0" + address[1:].encode() if address.startswith("@") else address)
        self.sock.setblocking(False)

    async def receive(self, timeout: float = 30) -> list[str]:
        """The next datagram, as its KEY=VALUE lines."""
        data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(self.sock, 4096), timeout)
        return data.decode().split("\n")

    async def receive_until(self, line: str, timeout: float = 30) -> list[list[str]]:
        """Datagrams up to and including the first one containing `line`."""
        seen = []
        while True:
            message = await self.receive(timeout)
            seen.append(message)
            if line in message:
                return seen

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket():
    # A short directory: unix socket paths are limited to 107 bytes, and pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="notify-") as directory:
        listener = NotifySocket(str(Path(directory) / "notify"))
        yield listener
        listener.close()


@pytest.fixture
def abstract_notify_socket():
    listener = NotifySocket(f"@inference-exporter-test-{uuid.uuid4().hex}")
    yield listener
    listener.close()


async def test_daemon_notifies_ready_once_listening_then_pings_the_watchdog(upstream, notify_socket, tmp_path):
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(f'targets:\n  - {{name: vllm, type: http, url: "{upstream.url}/simulated/vllm", interval: 1s}}\n')
    env = dict(os.environ, NOTIFY_SOCKET=notify_socket.address, WATCHDOG_USEC="400000")  # pings every 200 ms
    env.pop("WATCHDOG_PID", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "exporter",
        "run",
        "--config",
        str(config),
        "--listen",
        f"127.0.0.1:{port}",
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        ready = await notify_socket.receive()
        assert "READY=1" in ready
        assert f"STATUS=serving on 127.0.0.1:{port}, polling 1 targets" in ready
        # READY=1 promises a listener: the port answers at once, without retrying.
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert response.status == 200
        pings = [await notify_socket.receive() for _ in range(3)]
        assert pings == [["WATCHDOG=1"]] * 3

        process.send_signal(signal.SIGTERM)
        stopping = await notify_socket.receive_until("STOPPING=1")
        assert stopping[-1] == ["STOPPING=1", "STATUS=stopping"]
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_sighup_reload_is_announced_as_reloading_then_ready(upstream, notify_socket, tmp_path):
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(f'targets:\n  - {{name: vllm, type: http, url: "{upstream.url}/simulated/vllm"}}\n')
    env = dict(os.environ, NOTIFY_SOCKET=notify_socket.address)
    env.pop("WATCHDOG_USEC", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "exporter",
        "run",
        "--config",
        str(config),
        "--listen",
        f"127.0.0.1:{port}",
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert "READY=1" in await notify_socket.receive()
        config.write_text("targets: [{name: broken, type: http}]\n")
        process.send_signal(signal.SIGHUP)
        reloading = await notify_socket.receive()
        assert reloading[0] == "RELOADING=1"
        assert reloading[1].startswith("MONOTONIC_USEC=") and int(reloading[1].split("=")[1]) > 0
        done = await notify_socket.receive()
        assert done == [
            "READY=1",
            f"STATUS=config reload failed, kept the running config; serving on 127.0.0.1:{port}, polling 1 targets",
        ]
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 10)


async def test_abstract_namespace_socket_is_supported(abstract_notify_socket):
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": abstract_notify_socket.address})
    notifier.ready("up")
    assert await abstract_notify_socket.receive() == ["READY=1", "STATUS=up"]
    notifier.close()


async def test_without_notify_socket_nothing_is_sent_and_nothing_pings(start_daemon, monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    daemon = await start_daemon("targets: []\n")
    assert not daemon.notifier.enabled
    assert daemon.notifier.watchdog_interval is None
    daemon.notifier.ready("ignored")  # no socket to send to: a no-op, not an error


async def test_watchdog_meant_for_another_process_is_not_pinged(notify_socket):
    notifier = Notifier.from_environment(
        {"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "400000", "WATCHDOG_PID": str(os.getpid() + 1)}
    )
    assert notifier.enabled and notifier.watchdog_interval is None


async def test_watchdog_interval_is_half_of_watchdog_usec(notify_socket):
    notifier = Notifier.from_environment(
        {"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}
    )
    assert notifier.watchdog_interval == 15.0


async def test_a_vanished_notify_socket_is_logged_once_not_raised(notify_socket):
    notifier = Notifier(notify_socket.address)
    notify_socket.close()
    os.unlink(notify_socket.address)
    with capture_logs() as logs:
        notifier.ready("nobody listens")
        notifier.status("still nobody")
    assert [event["event"] for event in logs] == ["cannot notify systemd"]
    assert logs[0]["notify_socket"] == notify_socket.address
    notifier.close()
