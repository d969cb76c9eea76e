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
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import structlog
from pydantic import Field, field_validator, model_validator

from exporter import __version__
from exporter.family import Family, Sample
from exporter.fields import Duration, ReadableFile, read_secret
from exporter.parse import ParseError, parse
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
    password_file: ReadableFile | None = None
    token_file: ReadableFile | None = None
    creds_file: ReadableFile | None = None
    nkey_seed_file: ReadableFile | None = None
    tls: TLSConfig | None = None

    @field_validator("servers")
    @classmethod
    def _server_urls(cls, servers: list[str]) -> list[str]:
        for server in servers:
            url = urlsplit(server)
            if url.scheme not in _SCHEMES or not url.hostname:
                raise ValueError(f"expected a server URL like nats://127.0.0.1:4222 (nats, tls, ws or wss), got {server!r}")
            if url.username or url.password:
                raise ValueError(
                    f"a server URL for {url.hostname} carries credentials; put them in user + password_file or token_file instead"
                )
        return servers

    @field_validator("subject")
    @classmethod
    def _subject(cls, subject: str | None) -> str | None:
        if subject is not None and not _SUBJECT.match(subject):
            raise ValueError(f"expected a NATS subject like nim.backend.runtime_stats (no spaces or wildcards), got {subject!r}")
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
    def _fits_protocol(self) -> "NATSTarget":
        for protocol, keys in _PROTOCOL_KEYS.items():
            stray = [key for key in keys if key in self.model_fields_set and protocol != self.protocol]
            if stray:
                raise ValueError(f"{', '.join(stray)} belongs to protocol {protocol}, but this target's protocol is {self.protocol}")
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
        self._connection = shared.get(f"nats {target.connection_key}", lambda: NATSConnection(target))
        self._connection.acquire()
        self._dynamo: DynamoRuntime | None = None
        self._dynamo_client: Any = None
        if target.protocol == "dynamo":
            key = json.dumps([target.connection_key, target.discovery, str(target.discovery_dir), target.etcd_endpoints, target.request_plane])
            self._dynamo = shared.get(f"dynamo {key}", lambda: DynamoRuntime(target))
            self._dynamo.acquire()
        self._closed = False
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
            replies = [msg.data for msg in await _gather(client, subject, window)]
            if not replies:
                raise SourceError("timeout", f"no reply on {subject!r} within {window:g}s")
        else:
            replies = [(await _request(client, subject, target.timeout or 1.0)).data]
        dropped: Counter[str] = Counter()
        families: list[Family] = []
        problems: list[str] = []
        for body in replies:
            try:
                families += _decode_stats(body, target.format, {}, dropped)
            except ValueError as exc:
                problems.append(str(exc))
        _check_replies(problems, len(replies), f"reply on {subject!r}", dropped)
        self._note_problems([f"a reply on {subject!r} {problem}" for problem in problems])
        return Payload(families, dict(dropped), b"\n".join(replies)[:RAW_KEEP])

    # -- micro --------------------------------------------------------------------------------

    async def _poll_micro(self, client: Client) -> Payload:
        from nats.micro.service import ServiceVerb, control_subject

        service = self.target.service or ""
        window = self.target.gather_seconds
        stats_subject = control_subject(ServiceVerb.STATS, service)
        info = asyncio.create_task(self._micro_identities(client, control_subject(ServiceVerb.INFO, service), window))
        try:
            replies = [msg.data for msg in await _gather(client, stats_subject, window)]
        except BaseException as exc:
            info.cancel()
            await asyncio.gather(info, return_exceptions=True)
            if isinstance(exc, SourceError) and exc.reason == "no_responders":
                raise SourceError("no_responders", f"no instance of micro-service {service!r} is running ({stats_subject})") from None
            raise
        identities = await info
        if not replies:
            raise SourceError("timeout", f"no instance of micro-service {service!r} answered {stats_subject} within {window:g}s")
        dropped: Counter[str] = Counter()
        builder = _MicroFamilies(dropped)
        problems: list[str] = []
        for body in replies:
            try:
                builder.add(_json_object(body), identities)
            except ValueError as exc:
                problems.append(str(exc))
        _check_replies(problems, len(replies), f"{stats_subject} reply", dropped)
        self._note_problems([f"a {stats_subject} reply {problem}" for problem in problems])
        return Payload(builder.families(), dict(dropped), b"\n".join(replies)[:RAW_KEEP])

    @staticmethod
    async def _micro_identities(client: Client, subject: str, window: float) -> dict[str, dict[str, Any]]:
        """$SRV.INFO replies by instance id; identity is extra, so a failure here costs only the description."""
        identities: dict[str, dict[str, Any]] = {}
        with contextlib.suppress(SourceError):
            for msg in await _gather(client, subject, window):
                with contextlib.suppress(ValueError):
                    info = _json_object(msg.data)
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
                    "no_responders", f"no instance of Dynamo endpoint {path} is registered ({target.discovery} discovery)"
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
        for instance, call in calls.items():
            if call not in done:
                unavailable.append(f"instance {instance:x} did not answer within {window:g}s")
            elif call.exception() is not None:
                unavailable.append(f"instance {instance:x} failed: {call.exception()}")
            else:
                reply = call.result()
                raw.append(json.dumps(reply, default=str).encode())
                try:
                    families += runtime_stats_families(reply, {"instance_id": f"{instance:x}"}, dropped)
                except ValueError as exc:
                    unreadable.append(f"the reply of instance {instance:x} {exc}")
        if len(raw) == len(unreadable):  # no instance gave a usable reply
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
        await self._connection.release()


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


async def _gather(client: Client, subject: str, window: float) -> list[Msg]:
    """Every reply to one request, sent with a private inbox, that arrives within `window` seconds."""
    from nats import errors
    from nats.aio.client import NO_RESPONDERS_STATUS
    from nats.js.api import Header

    subscription = await client.subscribe(client.new_inbox())
    replies: list[Msg] = []
    try:
        await client.publish(subject, b"", reply=subscription.subject)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + window
        while (left := deadline - loop.time()) > 0:
            try:
                msg = await subscription.next_msg(timeout=left)
            except errors.TimeoutError:
                break
            if msg.headers and msg.headers.get(Header.STATUS) == NO_RESPONDERS_STATUS:
                raise SourceError("no_responders", f"nothing subscribes to subject {subject!r}")
            replies.append(msg)
    finally:
        with contextlib.suppress(errors.Error):
            await subscription.unsubscribe()
    return replies


async def _dynamo_call(client: Any, instance: int) -> Any:
    """The first item one instance streams back; JSON text is read as the object it holds."""
    stream = await client.direct(DYNAMO_REQUEST, instance, annotated=False)
    async for reply in stream:
        if isinstance(reply, (str, bytes)):
            with contextlib.suppress(ValueError):
                return json.loads(reply)
        return reply
    raise ValueError("the endpoint answered with an empty stream")


def _check_replies(problems: list[str], total: int, what: str, dropped: Counter[str]) -> None:
    """All replies bad: the poll fails with `parse`. Some: those are dropped and counted, the rest kept."""
    if problems and len(problems) == total:
        raise SourceError("parse", f"the {what} {problems[0]}")
    if problems:
        dropped["invalid_reply"] += len(problems)


# -- replies -> families ----------------------------------------------------------------------


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise ValueError(f"is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ValueError(f"is JSON but not an object: {_excerpt(body)}")
    return document


def _decode_stats(body: bytes, fmt: str, labels: dict[str, str], dropped: Counter[str]) -> list[Family]:
    """One runtime_stats reply body -> families. ValueError says why a body cannot be read at all."""
    if fmt == "prometheus":
        try:
            result = parse(body)
        except ParseError as exc:
            raise ValueError(f"is not Prometheus exposition text: {exc}") from None
        if result.truncated_lines:
            dropped["truncated_line"] += result.truncated_lines
        return result.families
    return runtime_stats_families(_json_object(body), labels, dropped)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def runtime_stats_families(reply: object, labels: dict[str, str], dropped: Counter[str]) -> list[Family]:
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
            labels[key] = str(value)
    families: list[Family] = []
    for group, kind in (("gauges", "gauge"), ("counters", "counter")):
        members = metrics.get(group)
        if members is None:
            continue
        if not isinstance(members, dict):
            raise ValueError(f'has "metrics.{group}" that is not an object')
        for name, value in members.items():
            if not _METRIC_NAME.match(name) or not _is_number(value) or (kind == "counter" and not value >= 0):
                dropped["invalid_metric"] += 1
                continue
            sample = name if kind == "gauge" or name.endswith("_total") else name + "_total"
            families.append(Family(name, kind, samples=[Sample(sample, dict(labels), float(value))]))
    return families


_MICRO = "nats_micro_"
_MICRO_HELP = {
    "endpoint_requests": ("counter", "Requests the endpoint of this micro-service instance has received."),
    "endpoint_errors": ("counter", "Requests the endpoint of this micro-service instance answered with an error."),
    "endpoint_processing_time_seconds": ("counter", "Time the endpoint of this micro-service instance spent on requests."),
    "endpoint_average_processing_time_seconds": ("gauge", "Average time the endpoint of this instance spends on one request."),
    "info": ("gauge", "Identity of a micro-service instance from $SRV.INFO; always 1."),
}


class _MicroFamilies:
    """$SRV.STATS replies -> `nats_micro_*` families, one series per instance and endpoint."""

    def __init__(self, dropped: Counter[str]):
        self.dropped = dropped
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
            "service": str(stats.get("name") or identity.get("name") or ""),
            "instance_id": instance,
            "version": str(stats.get("version") or identity.get("version") or ""),
        }
        self._add("info", {**service, "description": str(identity.get("description") or "")}, 1.0)
        for endpoint in endpoints:
            if not isinstance(endpoint, dict):
                self.dropped["invalid_metric"] += 1
                continue
            labels = {**service, "endpoint": str(endpoint.get("name", "")), "subject": str(endpoint.get("subject", ""))}
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
            for key, value in (data.items() if isinstance(data, dict) else ()):
                if not _is_number(value):
                    continue  # text and nested members of `data` are not metrics
                if not _DATA_KEY.match(key):
                    self.dropped["invalid_metric"] += 1
                    continue
                self._add(f"endpoint_data_{key}", dict(labels), float(value), help_text=f"Member {key!r} of the endpoint's stats data.")

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

    def acquire(self) -> None:
        self.users += 1

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
            return SourceError("nats_disconnected", f"the connection to {self.where} is down, nats-py is reconnecting ({detail})")
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
            return SourceError("credentials", f"cannot use the credential file for {self.where}: {detail}", retryable=False)
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
        target = self.target
        mine = lambda: client is self._client  # noqa: E731 - callbacks of a replaced client stay quiet

        async def on_error(exc: Exception) -> None:
            if not mine():
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
            options["password"] = functools.partial(read_secret, target.password_file)
        if target.token_file is not None:
            options["token"] = functools.partial(read_secret, target.token_file)
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


def _excerpt(body: bytes, limit: int = 60) -> str:
    text = body[:limit].decode("utf-8", "replace")
    return repr(text + ("..." if len(body) > limit else ""))


# -- Dynamo's runtime -------------------------------------------------------------------------

#: Every environment variable Dynamo's runtime reads that a target's config decides.
_DYNAMO_ENV = (
    "NATS_SERVER", "NATS_AUTH_USERNAME", "NATS_AUTH_PASSWORD", "NATS_AUTH_TOKEN", "NATS_AUTH_NKEY",
    "NATS_AUTH_CREDENTIALS_FILE", "NATS_TLS_CA_CERT_PATH", "NATS_TLS_CLIENT_CERT_PATH", "NATS_TLS_CLIENT_KEY_PATH",
    "NATS_TLS_INSECURE", "NATS_STARTUP_CONNECT_TIMEOUT_SECONDS", "ETCD_ENDPOINTS", "ETCD_STARTUP_CONNECT_TIMEOUT_SECONDS",
    "DYN_FILE_KV", "DYN_LOG",
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
        env["NATS_AUTH_PASSWORD"] = read_secret(target.password_file)
    if target.token_file is not None:
        env["NATS_AUTH_TOKEN"] = read_secret(target.token_file)
    if target.nkey_seed_file is not None:
        env["NATS_AUTH_NKEY"] = read_secret(target.nkey_seed_file).strip()
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
            raise SourceError("dynamo", f"cannot start Dynamo's runtime ({target.discovery} discovery): {exc}") from None
        log.info("dynamo runtime started", servers=", ".join(target.servers), discovery=target.discovery,
                 request_plane=target.request_plane)
        return runtime

    async def close(self) -> None:
        runtime, self._runtime = self._runtime, None
        if runtime is not None:
            runtime.shutdown()
