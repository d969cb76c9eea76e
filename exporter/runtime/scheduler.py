"""One asyncio task per target: poll on its interval, retry inside the interval, publish what came back.

A poll is bounded by the target's timeout per attempt and by the next interval overall, so a slow
or dead backend costs its own task and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import time
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential_jitter
from tenacity.stop import stop_base

from exporter.core.events import TargetEvents
from exporter.core.offload import OFF_LOOP_BYTES, OFF_LOOP_SAMPLES, Lane, scrape_in_progress
from exporter.core.redact import REGISTRY, Secrets
from exporter.format.escaping import PAYLOAD_PROBLEMS
from exporter.pipeline.target import Output, Pipeline
from exporter.runtime.release import drop_frames
from exporter.serve.store import Snapshot, Store
from exporter.sources import Payload, Shared, Source, SourceError, TargetConfig, create_source

log = structlog.get_logger("exporter.runtime.scheduler")
T = TypeVar("T")

#: A retry is only worth starting if this share of the timeout is still left before the next interval.
_MIN_ATTEMPT_SHARE = 0.1


#: The most targets of one interval polled at the same moment. Polls run back to back cost much less
#: CPU than the same polls spread over the interval, each finding the code it runs out of the CPU's
#: caches (a GPU host's 8 targets at 1 s: 1.0-1.1% of a core against 1.6-1.8%, docs/performance.md);
#: more targets than this are polled in groups spread over the interval, so that no burst of polls
#: holds up a scrape (an aggregator's 200 targets: 13 groups).
POLLED_TOGETHER = 16


def first_poll_offset(name: str, interval: float) -> float:
    """Where in the interval a lone target's polls fall: by name, stable across restarts (as Prometheus
    spreads its scrapes)."""
    return (zlib.crc32(name.encode()) / 2**32) * interval


def poll_offsets(targets: list[TargetConfig]) -> dict[str, float]:
    """Where in its interval each target is polled. Targets of one interval, in the order of their
    `first_poll_offset`, are cut into as few groups of about equal size as hold at most POLLED_TOGETHER
    each, and a group is polled where its first target alone would be: up to 16 targets are polled
    together, and 200 are spread over the interval in groups of 15 or 16."""
    by_interval: dict[float, list[tuple[float, str]]] = {}
    for target in targets:
        interval = _resolved(target.interval, "interval")
        by_interval.setdefault(interval, []).append((first_poll_offset(target.name, interval), target.name))
    offsets: dict[str, float] = {}
    for spread in by_interval.values():
        spread.sort()
        groups = math.ceil(len(spread) / POLLED_TOGETHER)
        leader = 0.0
        for rank, (alone, name) in enumerate(spread):
            if rank * groups % len(spread) < groups:  # the first of its group
                leader = alone
            offsets[name] = leader
    return offsets


def _off_loop(payload: Payload, pipeline: Pipeline) -> bool:
    """Whether a payload goes through the pipeline in the ingest thread (exporter.core.offload): a large
    one, or a body its pipeline is not settled on, whose poll takes the long way and may build the
    fast path (tens of ms even for a small body: many targets starting together would hold up the
    event loop, and the scrapes with it, for seconds); and any while a scrape is answered (a group of
    polls answered together would otherwise hold up the scrape, which the ingest thread lets by)."""
    if scrape_in_progress():
        return True
    if payload.exposition is not None:
        return len(payload.exposition.data) >= OFF_LOOP_BYTES or not pipeline.settled
    return sum(len(family.samples) for family in payload.families) >= OFF_LOOP_SAMPLES


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, SourceError) and exc.retryable


def _say_retrying(target: str, secrets, state) -> None:
    """tenacity's before_sleep: a function of the target's name, not a method of its poller, which
    the policy (a reference cycle of tenacity's own) would otherwise keep alive after the poller."""
    log.debug(
        "poll attempt failed, retrying",
        target=target,
        attempt=state.attempt_number,
        error=secrets.scrub(str(state.outcome.exception())),
        wait=round(state.upcoming_sleep, 3),
    )


def _after(failure: SourceError, attempt: Callable[[], Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """The attempts for tenacity once the first, made without it, failed with `failure`: its first call
    says that failure again (no request), so that tenacity counts, waits, logs and stops as it would
    have had it made the first attempt itself; the calls after it attempt."""
    told: list[SourceError] = [failure]

    async def attempts(*, started: float) -> T:  # `started` is for the stop: see _StopBeforeDelay
        if told:
            raise told.pop()
        return await attempt()

    return attempts


class _StopBeforeDelay(stop_base):
    """tenacity's stop_before_delay, timed from the poll's start (the attempts' `started`), not from
    when tenacity took over after the first attempt: stop where the next attempt would begin past
    `max_delay` seconds into the poll."""

    def __init__(self, max_delay: float) -> None:
        self.max_delay = max(0.0, max_delay)

    def __call__(self, retry_state: RetryCallState) -> bool:
        assert retry_state.outcome_timestamp is not None  # tenacity stops after an attempt only
        since_start = retry_state.outcome_timestamp - retry_state.kwargs["started"]
        return since_start + retry_state.upcoming_sleep >= self.max_delay


def _forget(retrying: AsyncRetrying) -> None:
    """Cut a retry policy's references to itself (the last call's actions, kept in its iteration
    state), so that dropping it frees it at once."""
    with contextlib.suppress(AttributeError):  # tenacity's iter_state, present since 8.3
        retrying.iter_state.reset()


def internal_error(exc: BaseException) -> str:
    """What a bug that escaped a poll says: its type, its message and where it was raised."""
    where = ""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is not None:
        where = f" at {tb.tb_frame.f_code.co_filename.rpartition('/')[2]}:{tb.tb_lineno}"
    text = str(exc)[:200]
    return f"{type(exc).__name__}{': ' + text if text else ''}{where} (a bug in inference-exporter; the log has its traceback)"


def _wall_time(at: float) -> float:
    """A time on the running event loop's clock, as Unix time."""
    return time.time() + (at - asyncio.get_running_loop().time())


def _resolved(value: T | None, name: str) -> T:
    """A timing setting, which the config fills in from `defaults:` for every target it loads."""
    if value is None:
        raise ValueError(f"{name} is not set: targets come from the config with their defaults applied")
    return value


class TargetPoller:
    """Polls one target and publishes each outcome as a new Snapshot."""

    def __init__(
        self,
        target: TargetConfig,
        store: Store,
        shared: Shared,
        *,
        remember: bool = True,
        events: TargetEvents | None = None,
    ):
        self.target = target
        self.store = store
        #: Where what its polls log goes for the target's page (None: wherever the caller's context says).
        self.events = events
        self.source: Source = create_source(target, shared)
        #: This target's secrets in every form, scrubbed from its errors and raw bodies before they are
        #: stored, and (through the registry) from every log line and page.
        self._secrets = REGISTRY.add(Secrets(target))
        #: What its source reads -> what we serve; it remembers the shape of the last poll.
        self.pipeline = Pipeline(target, remember=remember)
        #: (budget, the retry policy for it), reused from poll to poll; whether a poll is under way
        self._policy: tuple[float, AsyncRetrying] | None = None
        self._polling = False
        #: Payload problems already logged for this target: each is said once, then only counted.
        self._problems_said: set[str] = set()
        #: Where its payloads go through the pipeline: large ones in the ingest thread, one at a time.
        self._lane = Lane()
        self._snapshot = store.get(target.name) or Snapshot(target)
        self._snapshot = store.publish(self._snapshot.replaced(target=target))

    async def poll(self, *, budget: float | None = None, next_at: float | None = None) -> Snapshot:
        """Poll once, with retries inside `budget` seconds (default: the interval), and publish the outcome;
        with `next_at` (the event loop's clock), its snapshot says that the next poll is due then (`run`
        publishes each poll's outcome and when the next one is due at once, not one after the other)."""
        if self.events is None or self.events.is_recording:  # a poller's task records already: the usual case
            return await self._poll(budget, next_at)
        with self.events.recording():
            return await self._poll(budget, next_at)

    async def _poll(self, budget: float | None, next_at: float | None) -> Snapshot:
        target = self.target
        interval, timeout = _resolved(target.interval, "interval"), _resolved(target.timeout, "timeout")
        budget = interval if budget is None else budget
        started, wall = time.monotonic(), time.time()
        deadline = started + budget
        attempts = 0

        async def attempt_once() -> tuple[Payload, Output]:
            nonlocal attempts
            attempts += 1
            allowed = min(timeout, deadline - time.monotonic())
            if allowed <= 0:  # the interval is spent (a stalled loop): no attempt, and no negative timeout
                raise SourceError("timeout", f"no time left in the {interval:g}s interval for an attempt")
            try:
                async with asyncio.timeout(allowed):
                    payload = await self.source.poll()
                    return payload, await self._lane.run(
                        _off_loop(payload, self.pipeline), self.pipeline.run, payload.families, payload.exposition
                    )
            except TimeoutError as exc:
                drop_frames(exc)  # the cancelled read's frames hold what it had received
                raise SourceError("timeout", f"no answer within {allowed:.3g}s") from None
            except SourceError as exc:
                drop_frames(exc)  # held by tenacity while it waits to retry: not the attempt's body
                raise

        previous = self._snapshot
        overlapping, self._polling = self._polling, True
        retrying: AsyncRetrying | None = None
        payload: Payload
        output: Output
        failure: SourceError | None = None
        try:
            try:
                payload, output = await attempt_once()  # most polls: one attempt, and no retry machinery
            except SourceError as exc:
                if not _retryable(exc):
                    raise
                failure = exc  # retried outside this block, or what the retries raise would chain to it
            if failure is not None:
                retrying = self._retrying(budget, fresh=overlapping)
                payload, output = await retrying(_after(failure, attempt_once), started=started)
        except SourceError as exc:
            drop_frames(exc)  # nothing the poll made outlives it; only the reason and message are kept
            return self._publish_failure(previous, exc, wall, started, attempts, next_at)
        except asyncio.CancelledError as exc:  # stopped mid-poll (a reload, the end): keep nothing it read
            drop_frames(exc)
            raise
        except Exception as exc:  # a bug in a source must not end the target's task
            log.exception("poll raised unexpectedly", target=target.name)
            error = SourceError("internal_error", internal_error(exc))
            drop_frames(exc)
            return self._publish_failure(previous, error, wall, started, attempts, next_at)
        finally:
            drop_frames(failure)  # said again inside tenacity, whose frames its traceback now holds
            self._polling = overlapping
            if overlapping and retrying is not None:  # a policy of its own, dropped now: self-references cut first
                _forget(retrying)

        dropped = dict(previous.dropped)
        for reason, count in (*payload.dropped.items(), *output.dropped.items()):
            dropped[reason] = dropped.get(reason, 0) + count
        poll_problems: dict[str, int] = {**payload.problems, **output.problems}
        problems = dict(previous.problems)
        for reason in poll_problems:
            problems[reason] = problems.get(reason, 0) + 1
        self._say_problems(poll_problems, payload.content_type)
        if previous.up is False:
            log.info("target is up again", target=target.name, samples=output.sample_count)
        self._snapshot = self.store.publish(
            previous.replaced(
                target=target,
                families=output.families,
                up=True,
                last_poll=wall,
                last_duration=time.monotonic() - started,
                last_success=wall,
                last_error="",
                last_reason="",
                polls=previous.polls + 1,
                retries=previous.retries + attempts - 1,
                dropped=dropped,
                raw=self._secrets.scrub_bytes(payload.raw) if payload.raw else b"",
                raw_at=wall if payload.raw else None,
                profile=output.profile,
                reading=output.reading,
                problems=problems,
                last_problems=poll_problems,
                content_type=payload.content_type,
                next_poll=previous.next_poll if next_at is None else _wall_time(next_at),
            )
        )
        return self._snapshot

    def _say_problems(self, problems: dict[str, int], content_type: str) -> None:
        """Log each kind of payload problem the first time this target shows it (it is counted every time)."""
        for reason, count in sorted(problems.items()):
            if reason in self._problems_said:
                continue
            self._problems_said.add(reason)
            (log.info if reason == "escaped_names" else log.warning)(
                "payload does not match its declared families",
                target=self.target.name,
                reason=reason,
                count=count,
                content_type=content_type,
                detail=PAYLOAD_PROBLEMS.get(reason, reason),
            )

    def _retrying(self, budget: float, *, fresh: bool = False) -> AsyncRetrying:
        """The retry policy for polls of this budget, taken up once a poll's first attempt failed (see
        `_after`): attempts, backoff, and no retry that would start too late. Made once and reused:
        tenacity's retrying objects hold reference cycles, and one per poll left garbage for the cycle
        collector every poll. A poll overlapping another (tenacity keeps a call's state in the object)
        gets one of its own."""
        if not fresh and self._policy is not None and self._policy[0] == budget:
            return self._policy[1]
        target = self.target
        retries, backoff = _resolved(target.retries, "retries"), _resolved(target.backoff, "backoff")
        timeout = _resolved(target.timeout, "timeout")
        retrying = AsyncRetrying(
            stop=stop_after_attempt(retries + 1) | _StopBeforeDelay(budget - _MIN_ATTEMPT_SHARE * timeout),
            wait=wait_exponential_jitter(multiplier=backoff, max=budget / 2, jitter=backoff),
            retry=retry_if_exception(_retryable),
            before_sleep=functools.partial(_say_retrying, target.name, self._secrets),
            reraise=True,
        )
        if not fresh:
            if self._policy is not None:
                _forget(self._policy[1])
            self._policy = (budget, retrying)
        return retrying

    def _publish_failure(
        self, previous: Snapshot, error: SourceError, wall: float, started: float, attempts: int, next_at: float | None
    ) -> Snapshot:
        message = self._secrets.scrub(error.message)
        # Say it at warning level when something changes; repeating the same failure every interval is noise.
        changed = previous.up is not False or previous.last_reason != error.reason
        (log.warning if changed else log.debug)(
            "poll failed", target=self.target.name, reason=error.reason, error=message, attempts=attempts
        )
        errors = dict(previous.errors)
        errors[error.reason] = errors.get(error.reason, 0) + 1
        self._snapshot = self.store.publish(
            previous.replaced(
                target=self.target,
                families=(),
                up=False,
                last_poll=wall,
                last_duration=time.monotonic() - started,
                last_error=message,
                last_reason=error.reason,
                polls=previous.polls + 1,
                retries=previous.retries + max(0, attempts - 1),
                errors=errors,
                # A failure that received nothing (a timeout) leaves the last body on show: it may say why.
                raw=self._secrets.scrub_bytes(error.raw) if error.raw else previous.raw,
                raw_at=wall if error.raw else previous.raw_at,
                next_poll=previous.next_poll if next_at is None else _wall_time(next_at),
            )
        )
        return self._snapshot

    async def run(self, first_at: float | None = None) -> None:
        """Poll forever on the interval, from `first_at` (the event loop's clock; by default this target's
        offset within the interval from now)."""
        interval = _resolved(self.target.interval, "interval")
        loop = asyncio.get_running_loop()
        next_at = loop.time() + first_poll_offset(self.target.name, interval) if first_at is None else first_at
        self._note_next_poll(next_at)
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at += interval
            await self.poll(next_at=next_at)  # its snapshot says when the next poll is due
            late = loop.time() - next_at
            if late > 0:  # a poll overran (the clock jumped, the loop stalled): skip the missed ticks
                next_at += math.ceil(late / interval) * interval
                self._note_next_poll(next_at)

    def _note_next_poll(self, next_at: float) -> None:
        """Publish when the next poll is due (`next_at` on the event loop's clock), where no poll's own
        snapshot says it: before the first poll, and after a poll that overran."""
        self._snapshot = self.store.publish(self._snapshot.replaced(next_poll=_wall_time(next_at)))

    async def close(self) -> None:
        """Close the source, and cut the poller's links to itself (its template stage and its retry
        policy's log hook are its own bound methods): a stopped poller, its caches and its last
        families are then freed at once by reference counting, not at some full collection later
        (every reload that restarted a target left one behind)."""
        REGISTRY.discard(self._secrets)
        await self.source.close()
        if self._policy is not None:
            _forget(self._policy[1])
        self._serve = self._policy = None


class Scheduler:
    """Runs one TargetPoller task per configured target; `apply` moves from one target list to another."""

    def __init__(self, store: Store, shared: Shared, events: TargetEvents | None = None):
        self.store = store
        self.shared = shared
        #: Its targets' recent log events, for their pages: the daemon's own (exporter.core.events).
        self.events = events if events is not None else TargetEvents()
        self._pollers: dict[str, tuple[TargetPoller, asyncio.Task]] = {}
        #: apply and close one at a time: a SIGTERM during a reload's apply found targets it was stopping
        self._changing = asyncio.Lock()
        self._closed = False
        #: When the first targets were started (the event loop's clock): every target's polls fall at
        #: its offset (`poll_offsets`) from it, plus whole intervals, so that targets started by a
        #: reload are polled with the group they fall in.
        self._epoch: float | None = None
        #: Each running target's (interval, offset): its group.
        self._offsets: dict[str, tuple[float, float]] = {}

    async def apply(self, targets: list[TargetConfig]) -> None:
        """Start new targets, stop removed ones, restart changed ones; unchanged ones keep running untouched."""
        async with self._changing:
            if self._closed:  # a reload that lost the race with stopping: nothing to start
                return
            with self.events.recording():  # and the pollers' tasks, started here, inherit it
                await self._apply(targets)

    async def _apply(self, targets: list[TargetConfig]) -> None:
        wanted = {target.name: target for target in targets}
        for name, (poller, _) in list(self._pollers.items()):
            if wanted.get(name) != poller.target:
                await self._stop(name, forget=name not in wanted)
        offsets = poll_offsets(targets)
        now = asyncio.get_running_loop().time()
        if self._epoch is None:
            self._epoch = now
        # Targets a reload adds join the group the whole list puts them in, unless running targets
        # already fill it (they keep the offsets they started with): then they are polled alone.
        groups = Counter(self._offsets.values())
        for name, target in wanted.items():
            if name not in self._pollers:
                interval = _resolved(target.interval, "interval")
                offset = offsets[name]
                if groups[interval, offset] >= POLLED_TOGETHER:
                    offset = first_poll_offset(name, interval)
                groups[interval, offset] += 1
                self._offsets[name] = (interval, offset)
                first_at = self._epoch + offset
                if first_at < now:
                    first_at += math.ceil((now - first_at) / interval) * interval
                self._start(target, first_at)

    def _start(self, target: TargetConfig, first_at: float) -> None:
        poller = TargetPoller(target, self.store, self.shared, events=self.events)
        task = asyncio.create_task(poller.run(first_at), name=f"poll {target.name}")
        self._pollers[target.name] = (poller, task)
        log.debug("target started", target=target.name, type=target.type, interval=target.interval)

    async def _stop(self, name: str, *, forget: bool) -> None:
        poller, task = self._pollers.pop(name)
        self._offsets.pop(name, None)
        task.cancel()
        for outcome in await asyncio.gather(task, return_exceptions=True):
            # A poll cancelled mid-way: its CancelledError's frames hold what the poll had read.
            drop_frames(outcome if isinstance(outcome, BaseException) else None)
        await poller.close()
        log.debug("target stopped", target=name)
        if forget:
            self.store.remove(name)
            self.events.forget(name)

    async def close(self) -> None:
        async with self._changing:
            self._closed = True
            with self.events.recording():
                for name in list(self._pollers):
                    await self._stop(name, forget=False)

    @property
    def targets(self) -> list[str]:
        return list(self._pollers)
