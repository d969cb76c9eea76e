"""The NATS source: one poll of a subject, a micro-service's instances or a Dynamo endpoint's, over
the target's shared connection, the replies gathered within the poll's time and checked for size."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from typing import TYPE_CHECKING, Any, NamedTuple

import structlog

from exporter.core.family import Family
from exporter.core.offload import OFF_LOOP_BYTES, Lane
from exporter.sources.base import Payload, Shared, SourceError
from exporter.sources.http import RAW_KEEP
from exporter.sources.nats.config import GATHER_SHARE, NATSTarget
from exporter.sources.nats.connection import NATSConnection
from exporter.sources.nats.dynamo import DynamoRuntime
from exporter.sources.nats.replies import (
    SampleBudget,
    _decode_stats,
    _json_object,
    _MicroFamilies,
    runtime_stats_families,
)

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg

log = structlog.get_logger("exporter.sources.nats")


#: What a Dynamo endpoint is sent; runtime_stats handlers ignore the request.
DYNAMO_REQUEST: dict[str, Any] = {}


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


async def _request(client: Client, subject: str, timeout: float) -> Msg:
    """The first reply to one request."""
    from nats import errors

    try:
        return await client.request(subject, b"", timeout=timeout)
    except errors.NoRespondersError:
        raise SourceError("no_responders", f"nothing subscribes to subject {subject!r}") from None
    except errors.TimeoutError:
        raise SourceError("timeout", f"no reply on {subject!r} within {timeout:g}s") from None


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
