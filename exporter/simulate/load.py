"""The traffic every simulator draws from: a server's queue and batch, and the requests that finish
each second, with plausible token counts and latencies. A backend maps these onto its own metrics."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Request:
    """One finished request."""

    prompt_tokens: int
    generation_tokens: int
    max_tokens: int
    cached_tokens: int
    queue_seconds: float
    ttft_seconds: float
    #: Mean time between output tokens.
    itl_seconds: float
    e2e_seconds: float
    #: "stop", "length", "abort" or "error", as vLLM's FinishReason names them.
    finished_reason: str

    @property
    def prefill_seconds(self) -> float:
        return max(0.0, self.ttft_seconds - self.queue_seconds)

    @property
    def decode_seconds(self) -> float:
        return max(0.0, self.e2e_seconds - self.ttft_seconds)


class Load:
    """A server under a load that wanders: `step(rng)` is one second; it returns what finished."""

    def __init__(self, capacity: int = 64, kv_blocks: int = 8192) -> None:
        self.capacity = capacity
        self.kv_blocks = kv_blocks
        self.running = capacity // 8
        self.waiting = 0
        self.kv_usage = 0.0
        self.preemptions = 0
        #: Requests preempted in the last second.
        self.preempted = 0
        self.seconds = 0

    def step(self, rng: random.Random) -> list[Request]:
        self.seconds += 1
        self.running = max(0, min(self.capacity, self.running + rng.randint(-3, 4)))
        self.waiting = (
            max(0, self.waiting + rng.randint(-2, 2))
            if self.running > self.capacity * 3 // 4
            else max(0, self.waiting - 1)
        )
        self.kv_usage = round(min(1.0, self.running / self.capacity * rng.uniform(0.7, 1.0)), 4)
        self.preempted = int(self.kv_usage > 0.95 and rng.random() < 0.3)
        self.preemptions += self.preempted
        return [self._request(rng) for _ in range(rng.randint(1, 1 + self.running // 4))]

    def _request(self, rng: random.Random) -> Request:
        prompt = int(rng.lognormvariate(6.0, 0.9)) + 1
        max_tokens = rng.choice((128, 256, 512, 1024, 2048))
        generated = min(max_tokens, int(rng.lognormvariate(5.0, 0.8)) + 1)
        roll = rng.random()
        reason = (
            "error" if roll < 0.005 else "abort" if roll < 0.02 else "length" if generated == max_tokens else "stop"
        )
        queue = rng.expovariate(1 / 0.05) if self.waiting else rng.uniform(0.0, 0.004)
        ttft = queue + prompt * rng.uniform(0.00005, 0.0002) + rng.uniform(0.005, 0.03)
        itl = rng.lognormvariate(-3.9, 0.3)
        cached = int(prompt * rng.choice((0.0, 0.0, 0.25, 0.5, 0.9)))
        return Request(
            prompt, generated, max_tokens, cached, queue, ttft, itl, ttft + itl * max(0, generated - 1), reason
        )
