"""The demo backend: vLLM V1 names, numbers that move, served over real HTTP."""

from __future__ import annotations

import aiohttp

from exporter.demo import DemoBackend
from exporter.parse import parse


async def test_demo_backend_serves_vllm_names_whose_values_move():
    demo = DemoBackend(seed=7)
    url = await demo.start()
    try:
        async with aiohttp.ClientSession() as session:
            async def counters() -> dict[str, float]:
                async with session.get(url) as response:
                    families = parse(await response.read()).families
                return {
                    sample.name: sample.value
                    for family in families
                    for sample in family.samples
                    if sample.name in ("vllm:prompt_tokens_total", "vllm:generation_tokens_total")
                }

            before = await counters()
            for _ in range(5):
                demo.tick()
            after = await counters()
    finally:
        await demo.stop()
    assert set(before) == {"vllm:prompt_tokens_total", "vllm:generation_tokens_total"}
    assert all(after[name] > before[name] for name in before)
