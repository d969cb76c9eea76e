"""Helpers shared by the tests: their payloads (the simulated backends', and the real captures as a
second corpus), free ports, tools they need."""

from __future__ import annotations

import asyncio
import functools
import math
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from exporter.runtime.daemon import Daemon
    from exporter.serve.store import Snapshot, Store

REPO = Path(__file__).resolve().parents[2]
#: This folder: the helpers some tests run as processes of their own (hostile_upstream.py, ...).
HELPERS = Path(__file__).resolve().parent
#: The test data kept in the repository (config error cases, ...).
TESTDATA = REPO / "tests" / "testdata"
#: Real /metrics payloads captured from real servers; `../shared/fixtures` beside the checkout. A
#: second corpus: absent on a clean clone (its tests skip), required where CI=true (they fail).
FIXTURES = Path(os.environ.get("INFERENCE_EXPORTER_FIXTURES", REPO.parent / "shared" / "fixtures"))
#: Where CI runs the suite (GitHub Actions, GitLab CI and most others set CI=true).
IN_CI = os.environ.get("CI", "").lower() in ("true", "1", "yes")

#: The runtime_stats reply NIM backends send to Dynamo, as the NATS issue shows it.
NIM_REPLY: dict[str, Any] = {
    "schema_version": 1,
    "worker_id": "w-1",
    "backend": "vllm",
    "ts": 1759967807,
    "metrics": {"gauges": {"kv_cache_usage_perc": 0.3, "active_requests": 5}, "counters": {"total_requests": 120}},
}


def fixture_files() -> list[Path]:
    """The real captures there are: none on a clean clone. To parametrize a test over them, use
    `captures()`, which says so (skip, or fail under CI) rather than leaving the test out unseen."""
    return sorted(FIXTURES.glob("*.prom")) if FIXTURES.is_dir() else []


def corpus_missing() -> NoReturn:
    """The real captures are not there: skip, except under CI=true, where their absence fails."""
    import pytest

    message = (
        f"the real captures are not in {FIXTURES} (a second corpus beside the checkout, "
        "or set INFERENCE_EXPORTER_FIXTURES to their folder)"
    )
    if IN_CI:
        pytest.fail(message + "; CI=true requires them")
    pytest.skip(message)


def captures() -> list:
    """pytest params, one per real capture (id: its file name); without the folder, one param, None,
    for which `capture()` skips (fails under CI)."""
    import pytest

    files = fixture_files()
    return [pytest.param(path, id=path.name) for path in files] or [pytest.param(None, id="no-captures")]


def capture(name: str | Path | None) -> Path:
    """The path of one real capture; skips the test (fails it under CI) when the corpus is absent."""
    if name is None or not (FIXTURES / Path(name).name).is_file():
        corpus_missing()
    return FIXTURES / Path(name).name


#: Simulated payloads are rendered after this many simulated seconds, with this seed.
SIMULATED_TICKS = 10


@functools.lru_cache(maxsize=64)
def simulated(profile: str, *, openmetrics: bool = False, ticks: int = SIMULATED_TICKS, seed: int = 0) -> bytes:
    """The body `profile`'s simulated backend answers (exporter/simulate): its backend's names, types,
    HELP and labels, as the classic text format or as OpenMetrics where the server can write it."""
    from exporter.simulate import render

    return render(profile, ticks=ticks, seed=seed, openmetrics=openmetrics)[0]


def created_series_simulator(profile: str, *, ticks: int = SIMULATED_TICKS, seed: int = 0):
    """`profile`'s simulator as a server that serves prometheus_client's default `_created` series
    (PROMETHEUS_DISABLE_CREATED_SERIES unset), whatever its simulator does by default."""
    from exporter.simulate import PythonSimulator, simulator
    from exporter.simulate.base import load_backends

    cls = load_backends()[profile]
    if not issubclass(cls, PythonSimulator):
        raise KeyError(f"{profile!r} is not a prometheus_client server: it has no `_created` series")
    if not cls.created_series:
        cls = type(f"{cls.__name__}WithCreated", (cls,), {"created_series": True})
        return cls(seed=seed).advance(ticks)
    return simulator(profile, seed=seed, ticks=ticks)


def simulated_value(profile: str, sample: str, **labels: str) -> float:
    """The value of the one sample named `sample` (with at least `labels`) in `simulated(profile)`."""
    from exporter.format.parse import parse

    found = [
        s.value
        for family in parse(simulated(profile)).families
        for s in family.samples
        if s.name == sample and labels.items() <= s.labels.items()
    ]
    assert len(found) == 1, f"{len(found)} samples {sample}{labels} in the simulated {profile}"
    return found[0]


def simulated_dynamo_vllm_worker() -> bytes:
    """A Dynamo vLLM worker's system port: the runtime's dynamo_component_* families, then vLLM's own
    passed through, in one body (as Dynamo's capture of one shows)."""
    return simulated("dynamo-worker") + simulated("vllm")


def bench_bodies(folder: Path | None = None) -> list[tuple[str, bytes]]:
    """(name, body) for the benchmarks: the real captures in `folder` (default FIXTURES) where there
    are any, else every simulated backend's text body, so that bench/ runs from a clean clone too."""
    files = sorted((folder or FIXTURES).glob("*.prom")) if (folder or FIXTURES).is_dir() else []
    if files:
        return [(path.name, path.read_bytes()) for path in files]
    return [(body.name, body.data) for body in simulated_bodies() if not body.openmetrics]


VLLM_CAPTURE = "vllm-v1-dynamo-worker-metrics_examples-vllm.prom"


def bench_vllm_body() -> tuple[str, bytes]:
    """A Dynamo vLLM worker's body for the benchmarks: the real capture where it is, else simulated."""
    path = FIXTURES / VLLM_CAPTURE
    if path.is_file():
        return path.name, path.read_bytes()
    return "simulated-dynamo-vllm-worker", simulated_dynamo_vllm_worker()


def simulated_profiles() -> list[str]:
    from exporter.simulate.base import load_backends

    return sorted(load_backends())


@dataclass(frozen=True)
class Body:
    """One payload of a corpus: where it comes from, its bytes and whether it is OpenMetrics."""

    name: str
    data: bytes
    openmetrics: bool = False
    #: The `escaping` of its Content-Type, where its names are escaped (OpenMetrics `underscores`).
    escaping: str | None = None
    #: For an escaped body: the same families with their names as they are (the UTF-8 body of the
    #: same server at the same moment), which is what an oracle reads in its place.
    unescaped: bytes | None = field(default=None, repr=False)

    @property
    def stem(self) -> str:
        return self.name.rsplit(".", 1)[0]

    @property
    def content_type(self) -> str:
        if self.openmetrics:
            escaping = f"; escaping={self.escaping}" if self.escaping else ""
            return f"application/openmetrics-text; version=1.0.0; charset=utf-8{escaping}"
        return "text/plain; version=0.0.4; charset=utf-8"

    @property
    def oracle_text(self) -> str:
        """The text prometheus_client's parsers read for this body (they do not read escaped names back)."""
        return (self.unescaped or self.data).decode()


def simulated_bodies() -> list[Body]:
    """Every simulator's body, as the classic text format, as it answers an OpenMetrics Accept that
    keeps names as they are (`escaping=allow-utf-8`), and as it answers one without `escaping`
    (prometheus_client then escapes names: `escaping=underscores`)."""
    from exporter.format.escaping import body_format
    from exporter.format.parse import is_openmetrics
    from exporter.simulate import OPENMETRICS_ACCEPT, OPENMETRICS_UTF8_ACCEPT, TEXT_ACCEPT, simulator

    bodies = []
    for profile in simulated_profiles():
        render = _at_one_moment(simulator(profile, ticks=SIMULATED_TICKS))
        utf8 = None
        for accept, suffix in (
            (TEXT_ACCEPT, "txt"),
            (OPENMETRICS_UTF8_ACCEPT, "om"),
            (OPENMETRICS_ACCEPT, "escaped.om"),
        ):
            data, content_type = render(accept)
            if suffix != "txt" and not is_openmetrics(content_type):
                continue  # a server that writes the text format whatever is asked: one body is enough
            name = f"simulated-{profile}.{suffix}"
            if suffix == "txt":
                bodies.append(Body(name, data))
            elif suffix == "om":
                utf8 = data
                bodies.append(Body(name, data, openmetrics=True))
            elif body_format(content_type).escaping not in (None, "allow-utf-8"):
                bodies.append(
                    Body(name, data, openmetrics=True, escaping=body_format(content_type).escaping, unescaped=utf8)
                )
    return bodies


def _at_one_moment(sim):
    """`sim.render`, with a prometheus_client server's families collected once: its bodies for every
    `Accept` then hold the same values (its process collector's CPU seconds included), so that an
    escaped body and its unescaped twin differ in their names alone."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.exposition import choose_encoder

    from exporter.simulate import PythonSimulator

    if not isinstance(sim, PythonSimulator):
        return sim.render
    families = list(sim.exposed.collect())
    frozen = CollectorRegistry(auto_describe=False)
    frozen.register(type("Collected", (), {"collect": lambda self: iter(families)})())

    def render(accept: str) -> tuple[bytes, str]:
        encoder, content_type = choose_encoder(accept)  # as PythonSimulator.render, on the families collected
        return encoder(frozen), content_type

    return render


def corpora() -> list:
    """pytest params over both corpora: every simulated body, then every real capture (a None param
    without the folder, for which `body_of` skips, or fails under CI)."""
    import pytest

    own = [pytest.param(body, id=body.name) for body in simulated_bodies()]
    return own + captures()


def every_body() -> list[Body]:
    """Both corpora at once: the simulated bodies and the real captures there are."""
    return simulated_bodies() + [Body(path.name, path.read_bytes()) for path in fixture_files()]


def body_of(param: Body | Path | None) -> Body:
    """A param of `corpora()` as a Body; skips (fails under CI) for the missing-captures placeholder."""
    if isinstance(param, Body):
        return param
    path = capture(param)
    return Body(path.name, path.read_bytes())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def require_tool(name: str) -> str:
    """The path of an external program the test needs (promtool, prometheus, nats-server, systemd-analyze).

    Missing, the test is skipped on a developer's machine but fails where
    INFERENCE_EXPORTER_REQUIRE_TOOLS=1 (set by tests/run.sh), so CI can never skip it silently.
    """
    import shutil

    path = shutil.which(name)
    if path:
        return path
    package = {"promtool": "prometheus", "systemd-analyze": "systemd"}.get(name, name)
    missing(f"{name} is not installed (Debian: apt-get install {package})")


def missing(message: str) -> NoReturn:
    """Something a test needs is not installed: skip on a developer's machine, fail where
    INFERENCE_EXPORTER_REQUIRE_TOOLS=1 (tests/run.sh), so that CI can never skip silently."""
    import pytest

    if os.environ.get("INFERENCE_EXPORTER_REQUIRE_TOOLS") == "1":
        pytest.fail(message)
    pytest.skip(message)


def without_cut_off_line(text: str) -> str:
    """Exposition text less a last line cut off mid-sample (one fixture is an excerpt that ends so),
    for prometheus_client's parser, which refuses such a line where ours drops it."""
    from prometheus_client.parser import text_string_to_metric_families

    if text.endswith("\n"):
        return text
    head, _, last = text.rpartition("\n")
    try:
        list(text_string_to_metric_families(last + "\n"))
    except Exception:
        return head + "\n"
    return text


def with_values_moved(body: bytes, step: int) -> bytes:
    """The body with every finite sample value raised by `step`: what a live server's next answer looks
    like (counters and bucket counts grow, gauges move) with the same series and metadata."""
    if not step:
        return body
    lines = body.decode().split("\n")
    for number, line in enumerate(lines):
        if line and not line.startswith("#"):
            head, space, value = line.rpartition(" ")
            try:
                moved = float(value) + step
            except ValueError:
                continue
            if space and math.isfinite(moved):
                lines[number] = f"{head} {moved!r}"
    return "\n".join(lines).encode()


class BodyReader:
    """One target pipeline's reading of bodies (exporter.pipeline.target.Pipeline.read_body), driven as a parser:
    it remembers the last body's shape, and reads a body of that shape from its values alone."""

    def __init__(self) -> None:
        from exporter.config.loader import parse_config
        from exporter.pipeline.target import Pipeline

        target = parse_config("targets:\n  - {name: t, type: http, url: 'http://127.0.0.1:9/metrics'}\n").targets[0]
        self.pipeline = Pipeline(target)

    def parse(self, data: bytes, *, openmetrics: bool = False, keep=None, escaping: str | None = None):
        from exporter.sources.base import Exposition

        return self.pipeline.read_body(Exposition(bytes(data), openmetrics, escaping, keep=keep))

    @property
    def skeleton(self):
        """The shape it reads from values alone, if any."""
        shape = self.pipeline._shape
        return None if shape is None else shape.skeleton


def published(store: Store, name: str) -> Snapshot:
    """The target's snapshot, which the test expects the store to hold."""
    snapshot = store.get(name)
    assert snapshot is not None, f"the store has no snapshot of {name}"
    return snapshot


def is_up(store: Store, name: str) -> bool:
    """Whether the store holds the target and its last poll succeeded (for wait_until)."""
    snapshot = store.get(name)
    return snapshot is not None and bool(snapshot.up)


# -- the daemon and its polls (the fixtures that start them are in conftest.py) ----------------------

TEXT_0_0_4 = "text/plain; version=0.0.4; charset=utf-8"


def daemon_url(daemon: Daemon, path: str = "/metrics") -> str:
    host, port = daemon.bound[0][:2]
    return f"http://{host}:{port}{path}"


async def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05):
    """Poll `predicate` until it is truthy; fail the test with a clear message if it never is."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


async def poll_target(target_yaml: str) -> Snapshot:
    """Poll one target, given as the YAML of one `targets:` item, once through the daemon's own poll path."""
    from exporter.config.loader import parse_config
    from exporter.runtime.scheduler import TargetPoller
    from exporter.serve.store import Store
    from exporter.sources import Shared

    config = parse_config(
        "defaults: {interval: 5s, timeout: 2s, retries: 0}\ntargets:\n  - " + target_yaml.strip() + "\n"
    )
    shared = Shared()
    try:
        poller = TargetPoller(config.targets[0], Store(), shared)
        return await poller.poll()
    finally:
        await shared.close()


async def scrape(daemon: Daemon, headers=None) -> str:
    """The daemon's /metrics, as a client reads it (status 200 asserted)."""
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.get(daemon_url(daemon), headers=headers or {}) as response:
            assert response.status == 200
            return await response.text()


def served_samples(snapshot: Snapshot) -> dict[tuple[str, frozenset], float]:
    """(sample name, labels) -> value for every series the snapshot serves."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in snapshot.families
        for sample in family.samples
    }


def served(snapshot) -> dict[str, tuple]:
    """What a snapshot serves: each family's type, HELP and samples (`_created` values aside: they
    are the time a series was made, which differs between two registries)."""
    return {
        family.name: (
            family.type,
            family.help,
            sorted(
                (s.name, tuple(sorted(s.labels.items())), None if s.name.endswith("_created") else s.value)
                for s in family.samples
            ),
        )
        for family in snapshot.families
    }
