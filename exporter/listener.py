"""The listening side's own limits: a cap on open connections, and a deadline for each request's headers.

aiohttp waits as long as a client likes for a request's headers, and accepts connections until the
process runs out of file handles; then `/metrics` stops answering for everyone. Every connection the
server accepts goes through a `GuardedProtocol` here first: past `max_connections` a new one gets a
`503` and is closed at once, and a connection that starts a request but has not finished its headers
within `header_timeout` is closed; so is a TLS handshake (asyncio's own default is 60 s), though a
handshake under way is not yet counted against the cap. Both are counted in our own metrics (no log line per client, so a
flood of them cannot fill the log either).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog
from aiohttp import web
from aiohttp.web_runner import BaseSite

from exporter.config import ServerLimits

log = structlog.get_logger("exporter.listener")

_REFUSAL = b"too many connections; retry later\n"
_REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(_REFUSAL), _REFUSAL)
)
#: How often, at most, a warning says that connections were refused or closed (counts are in the metrics).
WARN_EVERY = 60.0


class Guard:
    """The state all of one server's connections share: the limits (changed by a reload) and the counts."""

    def __init__(self, limits: ServerLimits):
        self.limits = limits
        self.open = 0
        self.refused = 0
        self.timed_out = 0
        self._warned_at = 0.0

    def say(self, what: str) -> None:
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY:
            self._warned_at = now
            log.warning(
                what,
                open=self.open,
                refused_total=self.refused,
                header_timeouts_total=self.timed_out,
                max_connections=self.limits.max_connections,
                header_timeout=self.limits.header_timeout,
            )


class GuardedProtocol(asyncio.Protocol):
    """One connection: aiohttp's RequestHandler inside, the cap and the header deadline around it."""

    __slots__ = ("_tail", "_timer", "guard", "inner", "refused", "transport")

    def __init__(self, inner: asyncio.Protocol, guard: Guard):
        self.inner, self.guard = inner, guard
        self.transport: asyncio.Transport | None = None
        self.refused = False
        self._timer: asyncio.TimerHandle | None = None
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        guard = self.guard
        self.transport = transport  # type: ignore[assignment]
        if guard.open >= guard.limits.max_connections:
            self.refused = True
            guard.refused += 1
            transport.write(_REFUSED)  # type: ignore[attr-defined]
            transport.close()
            guard.say("connections refused: max_connections reached")
            return
        guard.open += 1
        self._start_timer()  # a connection that never sends a request is a slow one too
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        window = self._tail + data
        if self._timer is None:  # the first bytes of a request: its headers are due within header_timeout
            self._start_timer()
        crlf, lf = window.rfind(b"\r\n\r\n"), window.rfind(b"\n\n")
        end = max(crlf + 4 if crlf >= 0 else 0, lf + 2 if lf >= 0 else 0)
        if end:
            self._stop_timer()
            if window[end:].strip():  # the next request (pipelined) started in the same bytes
                self._start_timer()
        self._tail = window[-3:]
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return None if self.refused else self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.refused:
            return
        self._stop_timer()
        self.guard.open -= 1
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def _start_timer(self) -> None:
        self._stop_timer()
        self._timer = asyncio.get_running_loop().call_later(self.guard.limits.header_timeout, self._expire)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        if self.transport is not None and not self.transport.is_closing():
            self.guard.timed_out += 1
            self.guard.say("slow clients closed: no complete request headers within header_timeout")
            self.transport.abort()


class _GuardedServer:
    """aiohttp's web.Server, each of whose connections is guarded."""

    def __init__(self, server: web.Server, guard: Guard):
        self._server, self._guard = server, guard

    def __call__(self) -> GuardedProtocol:
        return GuardedProtocol(self._server(), self._guard)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)


class GuardedRunner(web.AppRunner):
    """An AppRunner whose server guards every connection (see the module's docstring)."""

    def __init__(self, app: web.Application, *, guard: Guard, **kwargs: Any):
        super().__init__(app, **kwargs)
        self.guard = guard

    async def _make_server(self) -> web.Server:
        return _GuardedServer(await super()._make_server(), self.guard)  # type: ignore[return-value]


class GuardedSite(web.TCPSite):
    """A TCPSite whose TLS handshakes must end within header_timeout (as bound; a reload does not change it)."""

    async def start(self) -> None:
        runner = self._runner
        if self._ssl_context is None or not isinstance(runner, GuardedRunner):
            return await super().start()
        await BaseSite.start(self)  # registers the site, as TCPSite.start does before binding
        server = runner.server
        assert server is not None  # the runner is set up before its sites start
        self._server = await asyncio.get_running_loop().create_server(
            server,
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
            ssl_handshake_timeout=runner.guard.limits.header_timeout,
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port
