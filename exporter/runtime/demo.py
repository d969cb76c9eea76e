"""`run --demo`: every simulated backend on loopback, one target each, so that a newcomer sees each
backend's raw families and the unified series they all share side by side, with no GPU.

The backends are exporter/simulate's (one per profile: docs/development.md, The demo and the simulated backends,
lists them), served as the real servers serve their metrics. Their
numbers are made up and move every second; their targets are named `demo-<profile>` and carry
`demo="true"` on every series, and the log says so, so that nobody mistakes them for real servers.
"""

from __future__ import annotations

import structlog

from exporter.simulate import SIMULATORS, SimulatedServer, simulator
from exporter.simulate.base import load_backends

log = structlog.get_logger("exporter.runtime.demo")

#: The target name of a simulated backend: `demo-<profile>`.
TARGET_PREFIX = "demo-"
#: The model named by the targets of backends whose series name none (TGI, llama.cpp).
MODEL = "demo/simulated-model"


class Demo:
    """The simulated backends of a demo run, each on its own loopback port."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.servers: dict[str, SimulatedServer] = {}

    async def start(self, host: str = "127.0.0.1") -> dict[str, str]:
        """Start one server per simulator; returns target name -> URL."""
        for number, profile in enumerate(sorted(load_backends())):
            server = SimulatedServer(simulator(profile, seed=self.seed + number, ticks=1))
            await server.start(host)
            self.servers[TARGET_PREFIX + profile] = server
            sim = server.simulator
            log.warning(
                "demo backend started: simulated numbers, not a real server",
                target=TARGET_PREFIX + profile,
                url=server.url,
                backend=sim.backend,
                library=sim.library,
            )
        return self.urls

    @property
    def urls(self) -> dict[str, str]:
        return {name: server.url for name, server in self.servers.items() if server.url}

    def model_of(self, target: str) -> str | None:
        """The `model:` the target needs: set where the backend names no model in its series."""
        server = self.servers.get(target)
        return MODEL if server is not None and SIMULATORS[server.simulator.profile].model is None else None

    async def stop(self) -> None:
        for server in self.servers.values():
            await server.stop()
        self.servers.clear()
