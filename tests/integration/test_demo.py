"""`run --demo`: every simulated backend polled as its own target, through the daemon's default
`Accept`, served as typed families with HELP and at least three unified concepts each."""

from __future__ import annotations

from collections import defaultdict

import aiohttp
from helpers.support import daemon_url, wait_until

from exporter.format.parse import parse
from exporter.profiles import profiles
from exporter.runtime.demo import TARGET_PREFIX, Demo
from exporter.simulate import SIMULATORS, TEXT_ACCEPT, simulator
from exporter.simulate.base import load_backends

NO_HELP = "(no HELP from upstream)"


def _without_help(profile: str) -> set[str]:
    """The families the backend itself writes with no HELP line (TGI's undescribed counters)."""
    body, _ = simulator(profile).render(TEXT_ACCEPT)
    lines = body.decode().splitlines()
    typed = {line.split()[2] for line in lines if line.startswith("# TYPE ")}
    helped = {line.split()[2] for line in lines if line.startswith("# HELP ")}
    return {_base(name) for name in typed - helped}


def _base(name: str) -> str:
    """A family's name as the daemon serves it, less a counter's `_total`."""
    return name.replace(":", "_").removesuffix("_total")


async def test_demo_serves_every_backend_typed_with_help_and_unified_side_by_side(start_daemon):
    daemon = await start_daemon("targets: []\n", demo=True)
    names = {TARGET_PREFIX + profile for profile in load_backends()}
    assert names == set(daemon.demo.urls)

    def polled() -> bool:
        return all((snapshot := daemon.store.get(name)) is not None and snapshot.up is not None for name in names)

    await wait_until(polled, timeout=20)
    async with aiohttp.ClientSession() as session, session.get(daemon_url(daemon)) as response:
        exposition = await response.read()

    served: dict[str, dict[str, tuple[str, str]]] = defaultdict(dict)  # target -> family -> (type, HELP)
    for family in parse(exposition).families:
        for sample in family.samples:
            if sample.labels.get("target", "") in names and not family.name.startswith("inference_exporter_"):
                assert sample.labels.get("demo") == "true", sample
                served[sample.labels["target"]][family.name] = (family.type, family.help)
    problems = []
    for profile in sorted(load_backends()):
        target = TARGET_PREFIX + profile
        snapshot = daemon.store.get(target)
        families = served[target]
        untyped = sorted(name for name, (kind, _) in families.items() if kind == "untyped")
        helpless = sorted(_base(name) for name, (_, help_) in families.items() if not help_ or help_.endswith(NO_HELP))
        concepts = next(p for p in profiles() if p.name == profile).series
        unified = [c for c in concepts if c.removesuffix("_total") in families or c in families]
        if (
            not snapshot.up
            or untyped
            or set(helpless) - _without_help(profile)
            or len(unified) < 3
            or snapshot.profile != profile
        ):
            problems.append(
                f"{target}: up={snapshot.up} profile={snapshot.profile} error={snapshot.last_error!r} "
                f"untyped={untyped[:5]} without HELP={sorted(set(helpless) - _without_help(profile))[:5]} unified={unified}"
            )
    assert not problems, "\n".join(problems)


async def test_demo_backends_move_between_polls():
    demo = Demo(seed=7)
    urls = await demo.start()
    try:
        server = demo.servers[TARGET_PREFIX + "vllm"]
        async with aiohttp.ClientSession() as session:

            async def counters() -> dict[str, float]:
                async with session.get(urls[TARGET_PREFIX + "vllm"], headers={"Accept": TEXT_ACCEPT}) as response:
                    families = parse(await response.read()).families
                return {
                    sample.name: sample.value
                    for family in families
                    for sample in family.samples
                    if sample.name in ("vllm:prompt_tokens_total", "vllm:generation_tokens_total")
                }

            before = await counters()
            server.simulator.advance(5)
            after = await counters()
    finally:
        await demo.stop()
    assert set(before) == {"vllm:prompt_tokens_total", "vllm:generation_tokens_total"}
    assert all(after[name] > before[name] for name in before)
    assert set(SIMULATORS) == {name.removeprefix(TARGET_PREFIX) for name in urls}


def test_the_readme_demo_table_lists_every_demo_target():
    import re
    from pathlib import Path

    repo = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
    docs = (repo / "docs" / "development.md").read_text()
    section = docs[docs.index("## The demo and the simulated backends") :]
    section = re.split(r"\n## ", section[1:], maxsplit=1)[0]
    listed = set(re.findall(r"^\| `(demo-[a-z0-9-]+)` \|", section, re.MULTILINE))
    assert listed == {TARGET_PREFIX + profile for profile in load_backends()}
