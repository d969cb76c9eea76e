"""systemd's service notification protocol (sd_notify(3)): readiness, status, reload and stop notices, watchdog pings.

The protocol is one datagram of newline-separated `KEY=VALUE` lines sent to the socket named in
`$NOTIFY_SOCKET`; systemd lists it among its stable interfaces and shows in sd_notify(3) how to
reimplement it without libsystemd. That is a few lines over a socket, so we write them rather than
take a dependency: the pure-Python library (sdnotify) has had no release since 2017, swallows every
error with a bare `except`, and knows nothing of the watchdog variables. Without `$NOTIFY_SOCKET` (not run by systemd,
or `Type=simple`) every call does nothing.

The watchdog pings come from a task on the daemon's event loop, so a loop that is stuck (blocked by
a synchronous call, or spinning) stops pinging and systemd restarts the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Mapping

import structlog

log = structlog.get_logger("exporter.runtime.systemd")


class Notifier:
    """Sends notifications to the service manager; a no-op when there is none."""

    def __init__(self, address: str | None, *, watchdog_interval: float | None = None):
        #: the socket address as given in $NOTIFY_SOCKET ("/run/systemd/notify" or "@abstract-name")
        self.address = address or None
        #: seconds between watchdog pings (half of $WATCHDOG_USEC), or None when systemd watches nothing
        self.watchdog_interval = watchdog_interval if self.address else None
        self._socket: socket.socket | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._failed = False

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> Notifier:
        """The notifier systemd asks for through $NOTIFY_SOCKET, $WATCHDOG_USEC and $WATCHDOG_PID."""
        address = environ.get("NOTIFY_SOCKET") or None
        if address is not None and not address.startswith(("/", "@")):
            log.warning(
                "NOTIFY_SOCKET is not a unix socket path or @abstract name; not notifying", notify_socket=address
            )
            address = None
        return cls(address, watchdog_interval=_watchdog_interval(environ))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *assignments: str) -> None:
        """Send `KEY=VALUE` assignments in one datagram; a failure is logged once and never raised."""
        if self.address is None:
            return
        message = "\n".join(assignments).encode()
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            # Never block the event loop: a full receive queue drops this one notice, the next ping follows.
            self._socket.sendto(message, socket.MSG_DONTWAIT, _sockaddr(self.address))
        except OSError as exc:
            if not self._failed:
                log.warning("cannot notify systemd", notify_socket=self.address, error=str(exc))
                self._failed = True
        else:
            self._failed = False

    def ready(self, status: str) -> None:
        """Startup (or a reload) is done: the config is loaded and the listener is up."""
        self.notify("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        """A one-line state shown by `systemctl status`."""
        self.notify(f"STATUS={status}")

    def reloading(self) -> None:
        """A reload started; `ready()` ends it. systemd ≥ 253 wants the monotonic time with it."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading the config")

    def start_watchdog(self) -> None:
        """Ping the watchdog from the running event loop every `watchdog_interval` seconds, until `stopping()`."""
        if self.watchdog_interval is None or self._watchdog is not None:
            return
        self._watchdog = asyncio.get_running_loop().create_task(self._ping_forever(self.watchdog_interval))
        log.debug("systemd watchdog pings started", every_seconds=self.watchdog_interval)

    async def stopping(self) -> None:
        """The daemon is shutting down: stop the pings and say so."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
            self._watchdog = None
        self.notify("STOPPING=1", "STATUS=stopping")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    async def _ping_forever(self, interval: float) -> None:
        while True:
            self.notify("WATCHDOG=1")
            await asyncio.sleep(interval)


def _watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """Half of $WATCHDOG_USEC, as sd_watchdog_enabled(3) advises; None if unset, invalid or meant for another process."""
    usec = environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = environ.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        value = 0
    if value <= 0:
        log.warning("WATCHDOG_USEC is not a positive integer; not pinging the watchdog", watchdog_usec=usec)
        return None
    return value / 2 / 1_000_000


def _sockaddr(address: str) -> str | bytes:
    """A leading "@" names a socket in the abstract namespace: Linux spells it with a NUL byte."""
    if address.startswith("@"):
        return b"\0" + address[1:].encode()
    return address
