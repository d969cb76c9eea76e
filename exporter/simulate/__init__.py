"""Simulated inference backends: one per profile, each serving its backend's real metric names.

Each simulator owns its backend's metric definitions (names, types, labels, HELP, as the real server
has them, with the source file and version cited beside them), moves their values as a loaded server
does on every `tick(rng)`, and answers through the library and handler the real server uses:
prometheus_client's own ASGI app for Python servers, a writer of the same text for the others.
`run --demo`, the tests and bench/ read them instead of captured payloads.

    from exporter.simulate import SIMULATORS, simulator, render
    sim = simulator("vllm", seed=1, ticks=30)        # a vLLM V1 server after 30 s of traffic
    body, content_type = sim.render(accept="")        # what it answers to that Accept header
    body, content_type = render("tgi", ticks=5, openmetrics=True)

A new simulator is one module under `exporter/simulate/backends/` that subclasses `Simulator` (or
`PythonSimulator` / `TextSimulator`) and decorates it with `@register`; nothing else changes.
"""

from __future__ import annotations

from exporter.simulate.base import (
    OPENMETRICS_ACCEPT,
    OPENMETRICS_UTF8_ACCEPT,
    SIMULATORS,
    TEXT_ACCEPT,
    PythonSimulator,
    Simulator,
    TextSimulator,
    register,
    render,
    simulator,
)
from exporter.simulate.server import SimulatedServer

__all__ = [
    "OPENMETRICS_ACCEPT",
    "OPENMETRICS_UTF8_ACCEPT",
    "SIMULATORS",
    "TEXT_ACCEPT",
    "PythonSimulator",
    "SimulatedServer",
    "Simulator",
    "TextSimulator",
    "register",
    "render",
    "simulator",
]
