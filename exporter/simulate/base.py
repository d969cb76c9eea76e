"""The simulator interface and its registry: a profile name -> the class that plays that backend.

A simulator is a backend's `/metrics` with no model behind it: its metric definitions, state that
`tick(rng)` moves like one second of a loaded server, and `render(accept)`, the body and
Content-Type the real server would answer to that `Accept` header. Two kinds:

- `PythonSimulator`: the backend is a Python server (vLLM, SGLang, NIM) that serves a
  prometheus_client registry; ours is a prometheus_client registry too, answered by
  prometheus_client's own encoders (`choose_encoder`) and, over HTTP, its own ASGI app, so what the
  daemon reads (OpenMetrics with `escaping=underscores`, `_created` series...) is what those
  servers send.
- `TextSimulator`: the backend writes its text with another library (TGI: Rust
  metrics-exporter-prometheus; Triton: prometheus-cpp; Dynamo: the Rust prometheus crate; llama.cpp:
  by hand). Its metrics live in `exporter.simulate.textformat` and are written in that library's
  style; like the real server it answers the same text whatever the `Accept` header says.
"""

from __future__ import annotations

import importlib
import pkgutil
import random
from abc import ABC, abstractmethod
from typing import ClassVar

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from exporter.simulate.textformat import TextMetric, TextStyle, write_text

#: What Prometheus 2.x sends: an OpenMetrics body where the server can write one.
OPENMETRICS_ACCEPT = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
#: What Prometheus 3 sends first: OpenMetrics with names left as they are (prometheus_client then
#: writes `vllm:num_requests_running` as is, a valid classic name).
OPENMETRICS_UTF8_ACCEPT = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8"
#: The classic text format, version 0.0.4, and nothing else.
TEXT_ACCEPT = "text/plain;version=0.0.4"

#: Every simulator, by the name of the profile (exporter/profiles/<name>.yaml) it exercises.
SIMULATORS: dict[str, type[Simulator]] = {}
_loaded = False


def register(cls: type[Simulator]) -> type[Simulator]:
    """Class decorator: make `cls` the simulator of its `profile`."""
    if cls.profile in SIMULATORS and SIMULATORS[cls.profile] is not cls:
        raise ValueError(
            f"two simulators for profile {cls.profile!r}: {SIMULATORS[cls.profile].__name__}, {cls.__name__}"
        )
    SIMULATORS[cls.profile] = cls
    return cls


def load_backends() -> dict[str, type[Simulator]]:
    """Import every module of exporter/simulate/backends/ (each registers its simulators) once."""
    global _loaded
    if not _loaded:
        from exporter.simulate import backends

        for module in pkgutil.iter_modules(backends.__path__):
            importlib.import_module(f"{backends.__name__}.{module.name}")
        _loaded = True
    return SIMULATORS


def simulator(profile: str, *, seed: int = 0, ticks: int = 1) -> Simulator:
    """A new simulator of `profile`'s backend, after `ticks` seconds of simulated traffic."""
    simulators = load_backends()
    if profile not in simulators:
        raise KeyError(f"no simulator for profile {profile!r}; there are: {', '.join(sorted(simulators))}")
    sim = simulators[profile](seed=seed)
    sim.advance(ticks)
    return sim


def render(profile: str, *, ticks: int = 1, seed: int = 0, openmetrics: bool = False) -> tuple[bytes, str]:
    """The body and Content-Type `profile`'s simulated backend answers after `ticks` seconds, asked
    for OpenMetrics (as the daemon asks) or for the classic text format only."""
    return simulator(profile, seed=seed, ticks=ticks).render(OPENMETRICS_ACCEPT if openmetrics else TEXT_ACCEPT)


class Simulator(ABC):
    """One simulated backend. Subclasses set the class attributes, define their metrics in
    `__init__` and move them in `tick`."""

    #: The profile this backend is read with (the `name:` of exporter/profiles/<name>.yaml).
    profile: ClassVar[str]
    #: What is simulated, with the version whose metric names it follows: "vLLM 0.11 (V1 engine)".
    backend: ClassVar[str]
    #: What writes the real server's text: "prometheus_client", "prometheus-cpp", ...
    library: ClassVar[str]
    #: The model the series name, or None where the backend names none (then set `model:` on its target).
    model: ClassVar[str | None] = None
    #: Where the real server serves its metrics.
    path: ClassVar[str] = "/metrics"

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        #: Simulated seconds so far.
        self.ticks = 0

    @abstractmethod
    def tick(self, rng: random.Random) -> None:
        """One second of a loaded server: counters rise, histograms fill, gauges wander."""

    def advance(self, ticks: int = 1) -> Simulator:
        """`ticks` seconds of traffic, drawn from this simulator's own seeded generator."""
        for _ in range(ticks):
            self.tick(self.rng)
            self.ticks += 1
        return self

    @abstractmethod
    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The body and Content-Type the real server answers to an `Accept` header (not gzipped)."""


class PythonSimulator(Simulator):
    """A backend whose server serves a prometheus_client registry: metrics are defined in
    `self.registry`, and `self.exposed` is what its handler serves."""

    library = "prometheus_client"
    #: Whether the server serves prometheus_client's `_created` series (a server started with
    #: PROMETHEUS_DISABLE_CREATED_SERIES=True, as NIM's captures show, does not).
    created_series: ClassVar[bool] = True

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        self.registry = CollectorRegistry(auto_describe=True)
        self.exposed: CollectorRegistry = self.registry
        if not self.created_series:
            self.exposed = CollectorRegistry(auto_describe=False)
            self.exposed.register(_WithoutCreated(self.registry))

    def render(self, accept: str = "") -> tuple[bytes, str]:
        # The function prometheus_client's handlers (make_asgi_app, make_wsgi_app, MetricsHandler) call.
        encoder, content_type = choose_encoder(accept)
        return encoder(self.exposed), content_type


class _WithoutCreated:
    """A registry's families less their `_created` samples: what prometheus_client serves when
    PROMETHEUS_DISABLE_CREATED_SERIES is set, without setting it for this whole process."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self):
        for family in self.registry.collect():
            family.samples = [sample for sample in family.samples if not sample.name.endswith("_created")]
            yield family


class TextSimulator(Simulator):
    """A backend whose server writes its own text: `self.metrics` in the order it writes them,
    in `style`."""

    style: ClassVar[TextStyle]
    #: The Content-Type the real server answers with, whatever was asked.
    content_type: ClassVar[str] = "text/plain; version=0.0.4"

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        self.metrics: list[TextMetric] = []

    def metric(
        self, name: str, type_: str, help_: str | None, labelnames: tuple[str, ...] = (), **kwargs
    ) -> TextMetric:
        """Define one metric family (in the order the real server writes them)."""
        metric = TextMetric(name, type_, help_, tuple(labelnames), **kwargs)
        self.metrics.append(metric)
        return metric

    def render(self, accept: str = "") -> tuple[bytes, str]:
        return write_text(self.metrics, self.style).encode(), self.content_type
