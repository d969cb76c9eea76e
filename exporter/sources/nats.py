"""`type: nats`: statistics requested over NATS, by one of three protocols.

- `runtime_stats`: a request to a subject; the reply is the JSON NIM backends send to Dynamo (or
  Prometheus text). `gather: true` keeps every instance's reply instead of the first.
- `micro`: the NATS micro-service API, `$SRV.STATS.<service>` and `$SRV.INFO.<service>`, every instance.
- `dynamo`: a Dynamo endpoint `namespace.component.endpoint`, every instance, through Dynamo's own runtime.

Targets that name the same servers and credentials share one nats-py connection. nats-py keeps it
connected, reconnecting on its own; while it is down, every target on it fails with reason
`nats_disconnected` and polls succeed again once it is back. nats-py and Dynamo's runtime are
imported on first use, so a config without NATS targets never loads them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import re
import ssl
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple
from urllib.parse import urlsplit

import structlog
from pydantic import Field, field_validator, model_validator

from exporter import __version__
from exporter.family import Family, Sample
from exporter.fields import ByteSize, Duration
from exporter.offload import OFF_LOOP_BYTES, Lane
from exporter.parse import ParseError, parse
from exporter.redact import redact_url
from exporter.secret import SecretFile
from exporter.sources.base import Payload, Shared, SourceError, TargetConfig
from exporter.sources.http import RAW_KEEP, TLSConfig

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg

log = structlog.get_logger("exporter.sources.nats")

#: nats-py retries a lost server this often, forever (nats-py's own default wait).
RECONNECT_WAIT = 2.0
#: A silently dead connection (no RST) is noticed after two unanswered pings this far apart.
PING_INTERVAL = 20
#: A gathering poll stops collecting replies at this share of the timeout at the latest, so that
#: what it gathered is kept rather than lost to the timeout.
GATHER_SHARE = 0.8
#: What a Dynamo endpoint is sent; runtime_stats handlers ignore the request.
DYNAMO_REQUEST: dict[str, Any] = {}

_SCHEMES = ("nats", "tls", "ws", "wss")
_SUBJECT = re.compile(r"^[^\s*>.]+(?:\.[^\s*>.]+)*$")
_SERVICE = re.compile(r"^[A-Za-z0-9_-]+$")  # nats.micro's own rule for service names
_DYNAMO_PATH = re.compile(r"^(?:dyn://)?[^\s.]+\.[^\s.]+\.[^\s.]+$")
_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
#: The longest metric name a reply may give (a longer one is dropped as `invalid_metric`), and the
#: longest label value (worker_id, backend, micro-service names and ids: else the reply is unreadable).
NAME_LENGTH_LIMIT = 200
LABEL_VALUE_LENGTH_LIMIT = 512
#: The most replies a gathering poll reads; more are left unread (nats-py drops them, as a slow consumer's).
GATHER_LIMIT = 1000
_DATA_KEY = re.compile(r"^[a-zA-Z0-9_]+$")

NATSProtocol = Literal["runtime_stats", "micro", "dynamo"]
#: The keys that belong to one protocol only.
_PROTOCOL_KEYS: dict[str, tuple[str, ...]] = {
    "runtime_stats": ("subject", "gather", "format"),
    "micro": ("service",),
    "dynamo": ("endpoint", "discovery", "discovery_dir", "etcd_endpoints", "request_plane"),
}
_REQUIRED_KEY = {"runtime_stats": "subject", "micro": "service", "dynamo": "endpoint"}
_CREDENTIALS = ("user", "token_file", "creds_file", "nkey_seed_file")


class NATSTarget(TargetConfig):
    type: Literal["nats"]
    servers: list[str] = Field(min_length=1)
    protocol: NATSProtocol = "runtime_stats"
    #: How long micro, dynamo and `gather: true` polls collect replies (at most 80% of the timeout).
    gather_window: Duration = 1.0
    # runtime_stats
    subject: str | None = None
    gather: bool = False
    format: Literal["json", "prometheus"] = "json"
    # micro
    service: str | None = None
    # dynamo
    endpoint: str | None = None
    discovery: Literal["etcd", "file", "kubernetes"] = "etcd"
    discovery_dir: Path | None = None
    etcd_endpoints: list[str] = Field(default_factory=list)
    request_plane: Literal["tcp", "nats"] = "tcp"
    # credentials: read from files, again at each (re)connection
    user: str | None = None
    password_file: SecretFile | None = None
    token_file: SecretFile | None = None
    creds_file: SecretFile | None = None
    nkey_seed_file: SecretFile | None = None
    tls: TLSConfig | None = None
    #: The largest reply read; a larger one is not decoded (`reply_too_large`, or dropped among gathered ones).
    reply_size_limit: ByteSize = Field(default=1024 * 1024, gt=0)
    #: Most samples one poll may return, counted before they are made; 0 means no limit.
    sample_limit: int = Field(default=20_000, ge=0)

    @field_validator("servers")
    @classmethod
    def _server_urls(cls, servers: list[str]) -> list[str]:
        for server in servers:
            url = urlsplit(server)
            if url.scheme not in _SCHEMES or not url.hostname:
                raise ValueError(
                    f"expected a server URL like nats://127.0.0.1:4222 (nats, tls, ws or wss), got {redact_url(server)!r}"
                )
            if url.username or url.password:
                raise ValueError(
                    f"a server URL for {url.hostname} carries credentials; put them in user + password_file or token_file instead"
                )
        return servers

    @field_validator("subject")
    @classmethod
    def _subject(cls, subject: str | None) -> str | None:
        if subject is not None and not _SUBJECT.match(subject):
            raise ValueError(
                f"expected a NATS subject like nim.backend.runtime_stats (no spaces or wildcards), got {subject!r}"
            )
        return subject

    @field_validator("service")
    @classmethod
    def _service(cls, service: str | None) -> str | None:
        if service is not None and not _SERVICE.match(service):
            raise ValueError(f"expected a micro-service name of letters, digits, - and _, got {service!r}")
        return service

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, endpoint: str | None) -> str | None:
        if endpoint is not None and not _DYNAMO_PATH.match(endpoint):
            raise ValueError(f"expected a Dynamo endpoint namespace.component.endpoint, got {endpoint!r}")
        return endpoint

    @model_validator(mode="after")
    def _fits_protocol(self) -> NATSTarget:
        for protocol, keys in _PROTOCOL_KEYS.items():
            stray = [key for key in keys if key in self.model_fields_set and protocol != self.protocol]
            if stray:
                raise ValueError(
                    f"{', '.join(stray)} belongs to protocol {protocol}, but this target's protocol is {self.protocol}"
                )
        required = _REQUIRED_KEY[self.protocol]
        if getattr(self, required) is None:
            raise ValueError(f"{required} is required for protocol {self.protocol}")
        if (self.user is None) != (self.password_file is None):
            raise ValueError("user and password_file go together: set both or neither")
        given = [key for key in _CREDENTIALS if getattr(self, key) is not None]
        if len(given) > 1:
            raise ValueError(f"set at most one way to authenticate (got {', '.join(given)})")
        if self.protocol == "dynamo" and self.tls is not None and any(not s.startswith("tls://") for s in self.servers):
            raise ValueError("protocol dynamo with tls needs tls:// server URLs (Dynamo's runtime insists)")
        return self

    def redacted(self) -> dict[str, Any]:
        """As shown on /api/targets: credentials only as file paths, and only this protocol's own keys."""
        shown = super().redacted()
        for protocol, keys in _PROTOCOL_KEYS.items():
            if protocol != self.protocol:
                for key in keys:
                    shown.pop(key, None)
        return shown

    @property
    def connection_key(self) -> str:
        """What makes two targets' connections the same: servers and everything used to authenticate."""
        tls = self.tls.model_dump(mode="json") if self.tls else None
        fields = {key: getattr(self, key) for key in (*_CREDENTIALS, "password_file")}
        return json.dumps([self.servers, {k: str(v) if v is not None else None for k, v in fields.items()}, tls])

    @property
    def gather_seconds(self) -> float:
        return min(self.gather_window, GATHER_SHARE * (self.timeout or self.gather_window))


class NATSSource:
    """Polls one subject, micro-service or Dynamo endpoint over a connection shared by key."""

    def __init__(self, target: NATSTarget, shared: Shared):
        self.target = target
        self._shared = shared
        self._connection_key = f"nats {target.connection_key}"
        self._connection = shared.get(self._connection_key, lambda: NATSConnection(target))
        self._connection.acquire()
        self._dynamo: DynamoRuntime | None = None
        self._dynamo_client: Any = None
        if target.protocol == "dynamo":
            key = json.dumps(
                [
                    target.connection_key,
                    target.discovery,
                    str(target.discovery_dir),
                    target.etcd_endpoints,
                    target.request_plane,
                ]
            )
            self._dynamo_key = f"dynamo {key}"
            self._dynamo = shared.get(self._dynamo_key, lambda: DynamoRuntime(target))
            self._dynamo.acquire()
        self._closed = False
        #: Where its replies are decoded: many or large ones in the ingest thread, one poll at a time.
        self._lane = Lane()
        #: What the last successful poll had to leave out, so that it is logged when it changes.
        self._problems: list[str] = []

    async def poll(self) -> Payload:
        from nats import errors

        target = self.target
        client = await self._connection.client(wait=GATHER_SHARE * (target.timeout or 1.0))
        try:
            if target.protocol == "micro":
                return await self._poll_micro(client)
            if target.protocol == "dynamo":
                return await self._poll_dynamo()
            return await self._poll_runtime_stats(client)
        except (errors.ConnectionClosedError, errors.ConnectionReconnectingError, errors.StaleConnectionError):
            raise self._connection.failure() from None
        except SourceError as exc:
            if exc.reason == "timeout" and not client.is_connected:  # the connection went while we waited
                raise self._connection.failure() from None
            raise

    # -- runtime_stats ------------------------------------------------------------------------

    async def _poll_runtime_stats(self, client: Client) -> Payload:
        target = self.target
        subject = target.subject or ""
        if target.gather:
            window = target.gather_seconds
            replies = await self._connection.gather(client, subject, window, target.reply_size_limit)
            if not replies:
                raise SourceError("timeout", f"no reply on {subject!r} within {window:g}s")
        else:
            replies = [(await _request(client, subject, target.timeout or 1.0)).data]
        dropped: Counter[str] = Counter()
        samples = SampleBudget(target.sample_limit, f"the replies on {subject!r}")
        large = sum(map(len, replies)) >= OFF_LOOP_BYTES  # decoded in the ingest thread, as a large HTTP body is
        families, problems = await self._lane.run(large, self._decode_runtime_stats, replies, dropped, samples)
        _check_replies(problems, len(replies), f"reply on {subject!r}", dropped)
        self._note_problems([f"a reply on {subject!r} {problem.text}" for problem in problems])
        return Payload(families, dict(dropped), _raw(replies))

    def _decode_runtime_stats(
        self, replies: list[bytes], dropped: Counter[str], samples: SampleBudget
    ) -> tuple[list[Family], list[Problem]]:
        families: list[Family] = []
        problems: list[Problem] = []
        for body in replies:
            try:
                _check_size(body, self.target.reply_size_limit)
                families += _decode_stats(body, self.target.format, {}, dropped, samples)
            except ValueError as exc:
                problems.append(Problem.of(exc))
        return families, problems

    # -- micro --------------------------------------------------------------------------------

    async def _poll_micro(self, client: Client) -> Payload:
        from nats.micro.service import ServiceVerb, control_subject

        service = self.target.service or ""
        window = self.target.gather_seconds
        stats_subject = control_subject(ServiceVerb.STATS, service)
        info = asyncio.create_task(self._micro_identities(client, control_subject(ServiceVerb.INFO, service), window))
        try:
            replies = await self._connection.gather(client, stats_subject, window, self.target.reply_size_limit)
        except BaseException as exc:
            info.cancel()
            await asyncio.gather(info, return_exceptions=True)
            if isinstance(exc, SourceError) and exc.reason == "no_responders":
                raise SourceError(
                    "no_responders", f"no instance of micro-service {service!r} is running ({stats_subject})"
                ) from None
            raise
        identities = await info
        if not replies:
            raise SourceError(
                "timeout", f"no instance of micro-service {service!r} answered {stats_subject} within {window:g}s"
            )
        dropped: Counter[str] = Counter()
        builder = _MicroFamilies(dropped, SampleBudget(self.target.sample_limit, f"the {stats_subject} replies"))
        problems: list[Problem] = []
        for body in replies:
            try:
                _check_size(body, self.target.reply_size_limit)
                builder.add(_json_object(body), identities)
            except ValueError as exc:
                problems.append(Problem.of(exc))
        _check_replies(problems, len(replies), f"{stats_subject} reply", dropped)
        self._note_problems([f"a {stats_subject} reply {problem.text}" for problem in problems])
        return Payload(builder.families(), dict(dropped), _raw(replies))

    async def _micro_identities(self, client: Client, subject: str, window: float) -> dict[str, dict[str, Any]]:
        """$SRV.INFO replies by instance id; identity is extra, so a failure here costs only the description."""
        identities: dict[str, dict[str, Any]] = {}
        limit = self.target.reply_size_limit
        with contextlib.suppress(SourceError):
            for data in await self._connection.gather(client, subject, window, limit):
                with contextlib.suppress(ValueError):
                    _check_size(data, limit)
                    info = _json_object(data)
                    if isinstance(info.get("id"), str):
                        identities[info["id"]] = info
        return identities

    # -- dynamo -------------------------------------------------------------------------------

    async def _poll_dynamo(self) -> Payload:
        assert self._dynamo is not None
        target = self.target
        path = target.endpoint or ""
        window = target.gather_seconds
        if self._dynamo_client is None:
            self._dynamo_client = await self._dynamo.client(path)
        client = self._dynamo_client
        instances = list(client.instance_ids())
        if not instances:
            try:
                async with asyncio.timeout(window):
                    instances = list(await client.wait_for_instances())
            except TimeoutError:
                raise SourceError(
                    "no_responders",
                    f"no instance of Dynamo endpoint {path} is registered ({target.discovery} discovery)",
                ) from None
        calls = {instance: asyncio.ensure_future(_dynamo_call(client, instance)) for instance in instances}
        try:
            done, _ = await asyncio.wait(calls.values(), timeout=window)
        finally:  # also when the poll itself is cancelled: no call outlives it
            for call in calls.values():
                call.cancel()
            await asyncio.gather(*calls.values(), return_exceptions=True)
        dropped: Counter[str] = Counter()
        families: list[Family] = []
        unavailable: list[str] = []
        unreadable: list[str] = []
        raw: list[bytes] = []
        samples = SampleBudget(target.sample_limit, f"the replies of Dynamo endpoint {path}")
        answered = 0
        for instance, call in calls.items():
            if call not in done:
                unavailable.append(f"instance {instance:x} did not answer within {window:g}s")
            elif call.exception() is not None:
                unavailable.append(f"instance {instance:x} failed: {call.exception()}")
            else:
                reply, answered = call.result(), answered + 1
                try:
                    raw.append(_dumped(reply, target.reply_size_limit))
                    families += runtime_stats_families(reply, {"instance_id": f"{instance:x}"}, dropped, samples)
                except ValueError as exc:
                    unreadable.append(f"the reply of instance {instance:x} {exc}")
        if answered == len(unreadable):  # no instance gave a usable reply
            if unreadable:
                raise SourceError("parse", f"Dynamo endpoint {path}: {unreadable[0]}")
            timed_out = all(call not in done for call in calls.values())
            raise SourceError("timeout" if timed_out else "dynamo", f"Dynamo endpoint {path}: {unavailable[0]}")
        if unavailable:
            dropped["instance_unavailable"] += len(unavailable)
        if unreadable:
            dropped["invalid_reply"] += len(unreadable)
        self._note_problems(unavailable + unreadable)
        return Payload(families, dict(dropped), b"\n".join(raw)[:RAW_KEEP])

    def _note_problems(self, problems: list[str]) -> None:
        """Log instances or replies left out of a successful poll: at warning when that changes, else at debug."""
        if problems == self._problems and not problems:
            return
        changed, self._problems = problems != self._problems, problems
        if problems:
            (log.warning if changed else log.debug)(
                "left out of the poll", target=self.target.name, count=len(problems), problems=problems[:3]
            )
        else:
            log.info("every instance answered again", target=self.target.name)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._dynamo_client = None
        if self._dynamo is not None:
            await self._dynamo.release()
            if self._dynamo.users == 0:
                self._shared.forget(self._dynamo_key, self._dynamo)
        await self._connection.release()
        if self._connection.users == 0:  # its last target is gone: so is its entry (reloads add new ones)
            self._shared.forget(self._connection_key, self._connection)


# -- requests ---------------------------------------------------------------------------------


async def _request(client: Client, subject: str, timeout: float) -> Msg:
    """The first reply to one request."""
    from nats import errors

    try:
        return await client.request(subject, b"", timeout=timeout)
    except errors.NoRespondersError:
        raise SourceError("no_responders", f"nothing subscribes to subject {subject!r}") from None
    except errors.TimeoutError:
        raise SourceError("timeout", f"no reply on {subject!r} within {timeout:g}s") from None


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


async def _dynamo_call(client: Any, instance: int) -> Any:
    """The first item one instance streams back; JSON text is read as the object it holds."""
    stream = await client.direct(DYNAMO_REQUEST, instance, annotated=False)
    async for reply in stream:
        if isinstance(reply, (str, bytes)):
            with contextlib.suppress(ValueError, RecursionError):
                return json.loads(reply)
        return reply
    raise ValueError("the endpoint answered with an empty stream")


class Problem(NamedTuple):
    """Why one reply could not be used: words and a reason, never the exception (whose frames would
    hold the poll's locals, this list among them, in a reference cycle)."""

    too_large: bool
    text: str

    @classmethod
    def of(cls, exc: ValueError) -> Problem:
        return cls(isinstance(exc, ReplyTooLarge), str(exc))


def _check_replies(problems: list[Problem], total: int, what: str, dropped: Counter[str]) -> None:
    """All replies bad: the poll fails with the first one's reason (`parse`, `reply_too_large`).
    Some: those are dropped and counted (`invalid_reply`, `reply_too_large`), the rest kept."""
    if problems and len(problems) == total:
        first = problems[0]
        reason = "reply_too_large" if first.too_large else "parse"
        raise SourceError(reason, f"the {what} {first.text}", retryable=not first.too_large)
    for problem in problems:
        dropped["reply_too_large" if problem.too_large else "invalid_reply"] += 1


class ReplyTooLarge(ValueError):
    """A reply over the target's reply_size_limit: not decoded at all."""

    reason = "reply_too_large"


def _check_size(body: bytes, limit: int) -> None:
    if len(body) > limit:
        raise ReplyTooLarge(f"is {len(body)} bytes, over the reply_size_limit of {limit} bytes; it was not read")


def _raw(replies: list[bytes]) -> bytes:
    """The start of the replies, for the target's page: never more than RAW_KEEP bytes copied."""
    raw, size = [], 0
    for reply in replies:
        if size >= RAW_KEEP:
            break
        raw.append(reply[: RAW_KEEP - size])
        size += len(raw[-1]) + 1
    return b"\n".join(raw)[:RAW_KEEP]


def _dumped(reply: object, limit: int) -> bytes:
    """A reply Dynamo's runtime decoded, as JSON again, for the target's page; ValueError if it cannot be."""
    try:
        text = json.dumps(reply, default=str).encode()
    except (ValueError, TypeError, RecursionError):
        raise ValueError("cannot be shown as JSON (nested too deep, or not data)") from None
    _check_size(text, limit)
    return text[:RAW_KEEP]


class SampleBudget:
    """The samples a poll may still make under its target's sample_limit, taken before they are made."""

    def __init__(self, limit: int, what: str):
        self.limit = limit
        self.left = limit
        self.what = what

    def take(self, count: int) -> None:
        if not self.limit:
            return
        self.left -= count
        if self.left < 0:
            raise SourceError(
                "sample_limit", f"{self.what} hold more than the sample_limit of {self.limit} samples", retryable=False
            )


# -- replies -> families ----------------------------------------------------------------------


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise ValueError(f"is not JSON: {exc}") from None
    except RecursionError:
        raise ValueError("nests arrays or objects deeper than can be read") from None
    if not isinstance(document, dict):
        raise ValueError(f"is JSON but not an object: {_excerpt(body)}")
    return document


def _decode_stats(
    body: bytes, fmt: str, labels: dict[str, str], dropped: Counter[str], samples: SampleBudget | None = None
) -> list[Family]:
    """One runtime_stats reply body -> families. ValueError says why a body cannot be read at all."""
    if fmt == "prometheus":
        try:
            result = parse(body)
        except ParseError as exc:
            raise ValueError(f"is not Prometheus exposition text: {exc}") from None
        if samples is not None:
            samples.take(sum(len(family.samples) for family in result.families))
        if result.truncated_lines:
            dropped["truncated_line"] += result.truncated_lines
        return result.families
    return runtime_stats_families(_json_object(body), labels, dropped, samples)


def _is_number(value: object) -> bool:
    """A JSON number a float holds: not a bool, and not an integer of 400 digits (OverflowError)."""
    if isinstance(value, float):
        return True
    if not isinstance(value, int) or isinstance(value, bool):
        return False
    try:
        float(value)
    except OverflowError:
        return False
    return True


def _size(data: object) -> int:
    return len(data) if isinstance(data, dict) else 0


def _label_value(value: object, what: str) -> str:
    text = str(value)
    if len(text) > LABEL_VALUE_LENGTH_LIMIT:
        raise ValueError(f"has a {what} of {len(text)} characters, over the limit of {LABEL_VALUE_LENGTH_LIMIT}")
    return text


def runtime_stats_families(
    reply: object, labels: dict[str, str], dropped: Counter[str], samples: SampleBudget | None = None
) -> list[Family]:
    """A runtime_stats reply -> one family per metric, labelled with its `worker_id` and `backend`.

    A metric with an invalid name or a value that is not a number is dropped and counted as
    `invalid_metric`; unknown fields are ignored. ValueError when the reply has no `metrics` object.
    """
    if not isinstance(reply, dict):
        raise ValueError(f"is not a JSON object but {type(reply).__name__}")
    metrics = reply.get("metrics")
    if not isinstance(metrics, dict):
        raise ValueError('has no "metrics" object')
    labels = dict(labels)
    for key in ("worker_id", "backend"):
        value = reply.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value):
            labels[key] = _label_value(value, key)
    groups = [(group, kind, metrics.get(group)) for group, kind in (("gauges", "gauge"), ("counters", "counter"))]
    for group, _, members in groups:
        if members is not None and not isinstance(members, dict):
            raise ValueError(f'has "metrics.{group}" that is not an object')
    if samples is not None:  # counted before any is made
        samples.take(sum(len(members) for _, _, members in groups if members))
    families: list[Family] = []
    for _group, kind, members in groups:
        if members is None:
            continue
        for name, value in members.items():
            if (
                len(name) > NAME_LENGTH_LIMIT
                or not _METRIC_NAME.match(name)
                or not _is_number(value)
                or (kind == "counter" and not value >= 0)
            ):
                dropped["invalid_metric"] += 1
                continue
            sample = name if kind == "gauge" or name.endswith("_total") else name + "_total"
            families.append(Family(name, kind, samples=[Sample(sample, dict(labels), float(value))]))
    return families


_MICRO = "nats_micro_"
_MICRO_HELP = {
    "endpoint_requests": ("counter", "Requests the endpoint of this micro-service instance has received."),
    "endpoint_errors": ("counter", "Requests the endpoint of this micro-service instance answered with an error."),
    "endpoint_processing_time_seconds": (
        "counter",
        "Time the endpoint of this micro-service instance spent on requests.",
    ),
    "endpoint_average_processing_time_seconds": (
        "gauge",
        "Average time the endpoint of this instance spends on one request.",
    ),
    "info": ("gauge", "Identity of a micro-service instance from $SRV.INFO; always 1."),
}


class _MicroFamilies:
    """$SRV.STATS replies -> `nats_micro_*` families, one series per instance and endpoint."""

    def __init__(self, dropped: Counter[str], samples: SampleBudget | None = None):
        self.dropped = dropped
        self.samples = samples
        self._families: dict[str, Family] = {}

    def _add(self, name: str, labels: dict[str, str], value: float, kind: str = "gauge", help_text: str = "") -> None:
        family = self._families.get(name)
        if family is None:
            kind, help_text = _MICRO_HELP.get(name, (kind, help_text))
            family = self._families[name] = Family(_MICRO + name, kind, help_text)
        sample = family.name + ("_total" if family.type == "counter" else "")
        family.samples.append(Sample(sample, labels, value))

    def add(self, stats: dict[str, Any], identities: dict[str, dict[str, Any]]) -> None:
        """One instance's stats reply. ValueError if it is not one (no id or no endpoints list)."""
        instance, endpoints = stats.get("id"), stats.get("endpoints") or []
        if not isinstance(instance, str) or not isinstance(endpoints, list):
            raise ValueError('is not a $SRV.STATS reply (no "id" or no "endpoints" list)')
        identity = identities.get(instance, {})
        service = {
            "service": _label_value(stats.get("name") or identity.get("name") or "", "service name"),
            "instance_id": _label_value(instance, "instance id"),
            "version": _label_value(stats.get("version") or identity.get("version") or "", "version"),
        }
        description = _label_value(identity.get("description") or "", "description")
        endpoint_labels = [  # every label checked, and the samples counted, before any sample is made
            {
                **service,
                "endpoint": _label_value(e.get("name", ""), "endpoint name"),
                "subject": _label_value(e.get("subject", ""), "subject"),
            }
            if isinstance(e, dict)
            else None
            for e in endpoints
        ]
        if self.samples is not None:
            self.samples.take(1 + sum(4 + _size(e.get("data")) for e in endpoints if isinstance(e, dict)))
        self._add("info", {**service, "description": description}, 1.0)
        for endpoint, labels in zip(endpoints, endpoint_labels):
            if labels is None:
                self.dropped["invalid_metric"] += 1
                continue
            for key, name, scale in (
                ("num_requests", "endpoint_requests", 1.0),
                ("num_errors", "endpoint_errors", 1.0),
                ("processing_time", "endpoint_processing_time_seconds", 1e-9),
                ("average_processing_time", "endpoint_average_processing_time_seconds", 1e-9),
            ):
                value = endpoint.get(key)
                if _is_number(value) and value >= 0:
                    self._add(name, dict(labels), value * scale)
                else:
                    self.dropped["invalid_metric"] += 1
            data = endpoint.get("data")
            for key, value in data.items() if isinstance(data, dict) else ():
                if not _is_number(value):
                    continue  # text and nested members of `data` are not metrics
                if len(key) > NAME_LENGTH_LIMIT or not _DATA_KEY.match(key):
                    self.dropped["invalid_metric"] += 1
                    continue
                self._add(
                    f"endpoint_data_{key}",
                    dict(labels),
                    float(value),
                    help_text=f"Member {key!r} of the endpoint's stats data.",
                )

    def families(self) -> list[Family]:
        return list(self._families.values())


# -- the shared connection --------------------------------------------------------------------


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


def _reveal(file: SecretFile) -> str:
    """A credential file's contents, read now (a rotated secret is used at the next connection), for the
    server it authenticates to."""
    return file.read().reveal()


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


def _excerpt(body: bytes, limit: int = 60) -> str:
    text = body[:limit].decode("utf-8", "replace")
    return repr(text + ("..." if len(body) > limit else ""))


# -- Dynamo's runtime -------------------------------------------------------------------------

#: Every environment variable Dynamo's runtime reads that a target's config decides.
_DYNAMO_ENV = (
    "NATS_SERVER",
    "NATS_AUTH_USERNAME",
    "NATS_AUTH_PASSWORD",
    "NATS_AUTH_TOKEN",
    "NATS_AUTH_NKEY",
    "NATS_AUTH_CREDENTIALS_FILE",
    "NATS_TLS_CA_CERT_PATH",
    "NATS_TLS_CLIENT_CERT_PATH",
    "NATS_TLS_CLIENT_KEY_PATH",
    "NATS_TLS_INSECURE",
    "NATS_STARTUP_CONNECT_TIMEOUT_SECONDS",
    "ETCD_ENDPOINTS",
    "ETCD_STARTUP_CONNECT_TIMEOUT_SECONDS",
    "DYN_FILE_KV",
    "DYN_LOG",
)


def dynamo_environment(target: NATSTarget) -> dict[str, str | None]:
    """The environment Dynamo's runtime is created in: it takes its settings from nowhere else.

    Startup connection timeouts are 1 s (the least it accepts): the runtime's constructor blocks
    the event loop while it connects, so it is only created once NATS is known to answer.
    """
    env: dict[str, str | None] = dict.fromkeys(_DYNAMO_ENV)
    env["NATS_SERVER"] = ",".join(target.servers)
    env["NATS_STARTUP_CONNECT_TIMEOUT_SECONDS"] = "1"
    env["ETCD_STARTUP_CONNECT_TIMEOUT_SECONDS"] = "1"
    env["DYN_LOG"] = os.environ.get("DYN_LOG", "warn")  # its per-request info lines would flood our log
    if target.user is not None and target.password_file is not None:
        env["NATS_AUTH_USERNAME"] = target.user
        env["NATS_AUTH_PASSWORD"] = _reveal(target.password_file)
    if target.token_file is not None:
        env["NATS_AUTH_TOKEN"] = _reveal(target.token_file)
    if target.nkey_seed_file is not None:
        env["NATS_AUTH_NKEY"] = _reveal(target.nkey_seed_file).strip()
    if target.creds_file is not None:
        env["NATS_AUTH_CREDENTIALS_FILE"] = str(target.creds_file)
    if target.tls is not None:
        tls = target.tls
        env["NATS_TLS_CA_CERT_PATH"] = str(tls.ca_file) if tls.ca_file else None
        env["NATS_TLS_CLIENT_CERT_PATH"] = str(tls.cert_file) if tls.cert_file else None
        env["NATS_TLS_CLIENT_KEY_PATH"] = str(tls.key_file) if tls.key_file else None
        env["NATS_TLS_INSECURE"] = "true" if tls.insecure_skip_verify else None
    if target.discovery_dir is not None:
        env["DYN_FILE_KV"] = str(target.discovery_dir)
    if target.etcd_endpoints:
        env["ETCD_ENDPOINTS"] = ",".join(target.etcd_endpoints)
    return env


@contextlib.contextmanager
def _environment(values: dict[str, str | None]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class DynamoRuntime:
    """One Dynamo DistributedRuntime for every dynamo target with the same NATS and discovery settings."""

    def __init__(self, target: NATSTarget):
        self.target = target
        self.users = 0
        self._runtime: Any = None

    def acquire(self) -> None:
        self.users += 1

    async def release(self) -> None:
        self.users = max(0, self.users - 1)
        if self.users == 0:
            await self.close()

    async def client(self, path: str) -> Any:
        """A client of the endpoint `path`; the runtime is created on first use."""
        if self._runtime is None:
            self._runtime = self._create()
        try:
            return await self._runtime.endpoint(path).client()
        except Exception as exc:
            raise SourceError("dynamo", f"cannot make a client of Dynamo endpoint {path}: {exc}") from None

    def _create(self) -> Any:
        target = self.target
        try:
            environment = dynamo_environment(target)
        except OSError as exc:
            raise SourceError("credentials", f"cannot read a credential file: {exc}") from None
        try:
            with _environment(environment):  # its logging reads DYN_LOG when first imported
                from dynamo.runtime import DistributedRuntime

                runtime = DistributedRuntime(asyncio.get_running_loop(), target.discovery, target.request_plane)
        except ImportError as exc:
            raise SourceError(
                "missing_dependency",
                f"protocol dynamo needs Dynamo's runtime ({exc}): pip install 'inference-exporter[dynamo]'",
                retryable=False,
            ) from None
        except Exception as exc:
            raise SourceError(
                "dynamo", f"cannot start Dynamo's runtime ({target.discovery} discovery): {exc}"
            ) from None
        log.info(
            "dynamo runtime started",
            servers=", ".join(target.servers),
            discovery=target.discovery,
            request_plane=target.request_plane,
        )
        return runtime

    async def close(self) -> None:
        runtime, self._runtime = self._runtime, None
        if runtime is not None:
            runtime.shutdown()
