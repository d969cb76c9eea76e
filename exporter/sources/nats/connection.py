"""One nats-py connection shared by every target that names the same servers and credentials:
nats-py keeps it connected, reconnecting on its own; while it is down, every target on it fails with
reason `nats_disconnected`. nats-py is imported on first use."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
from typing import TYPE_CHECKING, Any

import structlog

from exporter import __version__
from exporter.sources.base import SourceError
from exporter.sources.nats.config import NATSTarget, _reveal

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg

log = structlog.get_logger("exporter.sources.nats")


#: nats-py retries a lost server this often, forever (nats-py's own default wait).
RECONNECT_WAIT = 2.0

#: A silently dead connection (no RST) is noticed after two unanswered pings this far apart.
PING_INTERVAL = 20

#: The most replies a gathering poll reads; more are left unread (nats-py drops them, as a slow consumer's).
GATHER_LIMIT = 1000


class Gatherer:
    """Every reply to a request within a window, through one subscription per connection.

    Requests go out with a reply subject under this connection's own inbox prefix, one token per
    gathering; a single wildcard subscription, made once, routes each reply to its gathering. A
    subscription per poll (nats-py's next_msg iterator) left a reference cycle of tasks, futures and
    queues behind every gathering poll, and cost two round trips.

    At most GATHER_LIMIT replies, of at most GATHER_LIMIT / 8 times the size limit in all, are kept
    per gathering; nats-py buffers no more than that for the subscription. A flood of replies costs
    the poll its completeness, never the daemon its memory or other targets their schedule.
    """

    def __init__(self) -> None:
        self._client: Client | None = None
        self._prefix = ""
        self._gatherings: dict[str, _Gathering] = {}
        self._count = 0

    async def gather(self, client: Client, subject: str, window: float, size_limit: int) -> list[bytes]:
        from nats import errors

        if client is not self._client:  # the first gathering, or a new client after a fresh connect
            self._client, self._prefix = client, client.new_inbox()
            try:
                await client.subscribe(
                    self._prefix + ".*",
                    cb=self._receive,
                    pending_msgs_limit=4 * GATHER_LIMIT,
                    pending_bytes_limit=64 * 1024 * 1024,
                )
            except BaseException:
                self._client = None
                raise
        self._count += 1
        token = str(self._count)
        gathering = self._gatherings[token] = _Gathering(max(size_limit, (GATHER_LIMIT // 8) * size_limit))
        try:
            await client.publish(subject, b"", reply=f"{self._prefix}.{token}")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(window):
                    await gathering.full.wait()
        except errors.Error as exc:
            raise _publish_failed(subject, exc) from None
        finally:
            del self._gatherings[token]
        if gathering.no_responders and not gathering.replies:
            raise SourceError("no_responders", f"nothing subscribes to subject {subject!r}")
        return gathering.replies

    async def _receive(self, msg: Msg) -> None:
        from nats.aio.client import NO_RESPONDERS_STATUS
        from nats.js.api import Header

        gathering = self._gatherings.get(msg.subject.rpartition(".")[2])
        if gathering is None:  # late, after its window
            return
        if msg.headers and msg.headers.get(Header.STATUS) == NO_RESPONDERS_STATUS:
            gathering.no_responders = True
            gathering.full.set()
            return
        gathering.add(msg.data)


class _Gathering:
    __slots__ = ("budget", "full", "kept", "no_responders", "replies")

    def __init__(self, budget: int):
        self.replies: list[bytes] = []
        self.kept = 0
        self.budget = budget
        self.no_responders = False
        self.full = asyncio.Event()

    def add(self, data: bytes) -> None:
        if self.full.is_set():
            return
        self.replies.append(data)
        self.kept += len(data)
        if len(self.replies) >= GATHER_LIMIT or self.kept >= self.budget:
            self.full.set()


def _publish_failed(subject: str, exc: Exception) -> SourceError:
    from nats import errors

    if isinstance(exc, errors.MaxPayloadError):
        return SourceError("nats_request", f"cannot send the request on {subject!r}: {exc}")
    return SourceError("nats_disconnected", f"cannot send the request on {subject!r}: {type(exc).__name__}")


class NATSConnection:
    """One nats-py client for every target with the same servers and credentials.

    Connected on first use; from then on nats-py reconnects by itself, forever. A poll never waits
    for that: it fails at once with the reason the connection is down. When the last target using
    the connection is closed, so is the connection.
    """

    def __init__(self, target: NATSTarget):
        self.target = target
        self.where = ", ".join(target.servers)
        self.users = 0
        self._client: Client | None = None
        self._connecting: asyncio.Task | None = None
        self._settled = asyncio.Event()
        self._error: BaseException | None = None
        self._was_connected = False
        self._gatherer = Gatherer()

    def acquire(self) -> None:
        self.users += 1

    async def gather(self, client: Client, subject: str, window: float, size_limit: int) -> list[bytes]:
        """Every reply to a request on `subject` within `window` seconds (see Gatherer)."""
        return await self._gatherer.gather(client, subject, window, size_limit)

    async def release(self) -> None:
        self.users = max(0, self.users - 1)
        if self.users == 0:
            await self.close()

    async def client(self, *, wait: float) -> Client:
        """The connected client, or SourceError saying why there is none (after at most `wait` seconds)."""
        client = self._client
        if client is not None and client.is_connected:
            return client
        if client is None or self._given_up(client):
            if client is not None and not client.is_closed:
                await client.close()
            self._start()
        if not self._settled.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._settled.wait()
        client = self._client
        if client is not None and client.is_connected:
            return client
        raise self.failure()

    def _given_up(self, client: Client) -> bool:
        """nats-py retries on its own unless the server closed the connection for good or connecting
        failed before reaching a server (a bad seed or TLS file): then the next poll starts afresh."""
        finished = self._connecting is None or self._connecting.done()
        return finished and not (client.is_connected or client.is_reconnecting)

    def failure(self) -> SourceError:
        """Why the connection is down, as the reason a poll fails with."""
        error = self._error
        detail = _describe(error) if error is not None else "still connecting"
        if self._was_connected:
            return SourceError(
                "nats_disconnected", f"the connection to {self.where} is down, nats-py is reconnecting ({detail})"
            )
        if error is None:
            return SourceError("connect", f"cannot connect to {self.where}: {detail}")
        if _is_auth_error(error):
            return SourceError(
                "auth",
                f"{self.where} rejected the credentials ({detail}); check user and password_file, token_file, "
                "creds_file or nkey_seed_file",
                retryable=False,
            )
        if isinstance(error, (FileNotFoundError, PermissionError, IsADirectoryError)) or _is_nkeys_error(error):
            return SourceError(
                "credentials", f"cannot use the credential file for {self.where}: {detail}", retryable=False
            )
        if isinstance(error, ssl.SSLError) or (isinstance(error, ValueError) and "TLS" in str(error)):
            return SourceError("tls", f"TLS with {self.where} failed: {detail}")
        return SourceError("connect", f"cannot connect to {self.where}: {detail}")

    def _start(self) -> None:
        from nats.aio.client import Client

        client = Client()
        self._client, self._error, self._was_connected = client, None, False
        self._settled = asyncio.Event()
        self._connecting = asyncio.create_task(self._connect(client), name=f"nats connect {self.where}")

    async def _connect(self, client: Client) -> None:
        try:
            await client.connect(**self._options(client))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a setting nats-py refuses (a bad seed, TLS files): no retry will help
            self._error = exc
            log.warning("nats connection failed", servers=self.where, error=_describe(exc))
        else:
            self._was_connected = True
            log.info("nats connected", servers=self.where, server=_server(client))
        finally:
            self._settled.set()

    def _options(self, client: Client) -> dict[str, Any]:
        from nats.errors import SlowConsumerError

        target = self.target
        mine = lambda: client is self._client  # noqa: E731 - callbacks of a replaced client stay quiet

        async def on_error(exc: Exception) -> None:
            if not mine():
                return
            if isinstance(exc, SlowConsumerError):  # a gathering poll flooded past its bounds: dropped, not an outage
                log.debug("nats replies dropped beyond a poll's bounds", servers=self.where, subject=exc.subject)
                return
            changed = self._error is None or str(self._error) != str(exc)
            self._error = exc
            self._settled.set()
            if not changed:
                log.debug("nats connection error", servers=self.where, error=_describe(exc))
            elif _is_auth_error(exc):
                log.error("nats server rejected the credentials", servers=self.where, error=_describe(exc))
            else:
                log.warning("nats connection error", servers=self.where, error=_describe(exc))

        async def on_disconnected() -> None:
            if mine() and self._was_connected:
                log.warning("nats connection lost, reconnecting", servers=self.where)

        async def on_reconnected() -> None:
            if mine():
                self._error = None
                log.info("nats connection restored", servers=self.where, server=_server(client))

        async def on_closed() -> None:
            if mine():
                log.debug("nats connection closed", servers=self.where)

        options: dict[str, Any] = {
            "servers": list(target.servers),
            "name": f"inference-exporter/{__version__}",
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": RECONNECT_WAIT,
            "ping_interval": PING_INTERVAL,
            "error_cb": on_error,
            "disconnected_cb": on_disconnected,
            "reconnected_cb": on_reconnected,
            "closed_cb": on_closed,
        }
        if target.user is not None and target.password_file is not None:
            options["user"] = target.user
            options["password"] = functools.partial(_reveal, target.password_file)
        if target.token_file is not None:
            options["token"] = functools.partial(_reveal, target.token_file)
        if target.creds_file is not None:
            options["user_credentials"] = str(target.creds_file)
        if target.nkey_seed_file is not None:
            options["nkeys_seed"] = str(target.nkey_seed_file)
        if target.tls is not None:
            options["tls"] = target.tls.context()
            if target.tls.server_name:
                options["tls_hostname"] = target.tls.server_name
        return options

    async def close(self) -> None:
        task, client = self._connecting, self._client
        self._connecting = self._client = None
        self._gatherer = Gatherer()  # the closed client is not kept by the one it had
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if client is not None and not client.is_closed:
            with contextlib.suppress(Exception):
                await client.close()


def _server(client: Client) -> str:
    url = client.connected_url
    return f"{url.scheme}://{url.hostname}:{url.port}" if url is not None else ""


def _describe(error: BaseException) -> str:
    text = str(error).strip()
    if isinstance(error, OSError) and error.strerror:
        text = error.strerror
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _is_auth_error(error: BaseException) -> bool:
    from nats import errors

    return isinstance(error, errors.AuthorizationError) or "authorization violation" in str(error).lower()


def _is_nkeys_error(error: BaseException) -> bool:
    return type(error).__module__.startswith("nkeys")
