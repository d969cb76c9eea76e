"""The simulated backends: one per profile, deterministic for a seed, values that move as a loaded
server's do, served the way the real server serves them and read through their profile."""

from __future__ import annotations

import gzip

import aiohttp
import pytest
from helpers.support import poll_target

from exporter.format.parse import is_openmetrics, parse
from exporter.profiles import profiles
from exporter.simulate import OPENMETRICS_ACCEPT, SIMULATORS, TEXT_ACCEPT, PythonSimulator, SimulatedServer, simulator
from exporter.simulate.backends.llamacpp import LlamaCppSimulator
from exporter.simulate.base import load_backends
from exporter.simulate.textformat import c_stream, rust_display, shortest

PROFILES = sorted(load_backends())


def samples(body: bytes, content_type: str = "") -> dict[tuple, float]:
    """(name, labels) -> value, less what is wall-clock rather than simulated (`_created`, process_*)."""
    families = parse(body, openmetrics=is_openmetrics(content_type)).families
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in families
        for sample in family.samples
        if not sample.name.endswith("_created") and not sample.name.startswith(("process_", "python_"))
    }


def typed(body: bytes, content_type: str = "") -> dict[str, str]:
    return {family.name: family.type for family in parse(body, openmetrics=is_openmetrics(content_type)).families}


def test_every_profile_has_a_simulator():
    assert set(SIMULATORS) == {profile.name for profile in profiles()}


@pytest.mark.parametrize("profile", PROFILES)
def test_a_seed_gives_the_same_numbers(profile):
    assert samples(*simulator(profile, seed=3, ticks=12).render(TEXT_ACCEPT)) == samples(
        *simulator(profile, seed=3, ticks=12).render(TEXT_ACCEPT)
    )
    assert samples(*simulator(profile, seed=3, ticks=12).render(TEXT_ACCEPT)) != samples(
        *simulator(profile, seed=4, ticks=12).render(TEXT_ACCEPT)
    )


@pytest.mark.parametrize("profile", PROFILES)
def test_counters_rise_histograms_fill_and_gauges_wander(profile):
    sim = simulator(profile, seed=1, ticks=1)
    types = typed(*sim.render(TEXT_ACCEPT))
    before = samples(*sim.render(TEXT_ACCEPT))
    gauges_seen: dict[tuple, set[float]] = {}
    for _ in range(30):
        sim.advance()
        for key, value in samples(*sim.render(TEXT_ACCEPT)).items():
            gauges_seen.setdefault(key, set()).add(value)
    after = samples(*sim.render(TEXT_ACCEPT))

    def of_type(kind: str, suffixes: tuple[str, ...] = ("",)) -> list[tuple]:
        return [
            key
            for key in after
            if any(key[0] == name + suffix for name, t in types.items() if t == kind for suffix in suffixes)
        ]

    counters = of_type("counter", ("", "_total"))
    counts = of_type("histogram", ("_count",)) + of_type("summary", ("_count",))
    gauges = of_type("gauge")
    assert all(after[key] >= before.get(key, 0) for key in counters + counts), "a counter went down"
    assert any(after[key] > before.get(key, 0) for key in counters), "no counter rose"
    assert not counts or any(after[key] > before.get(key, 0) for key in counts), "no histogram filled"
    assert any(len(gauges_seen[key]) > 1 for key in gauges), "no gauge moved"


@pytest.mark.parametrize("profile", PROFILES)
async def test_a_simulator_is_read_through_its_profile_as_typed_families_with_help(profile):
    """Asked for the classic text format, every simulator's families come out typed, with HELP,
    detected as its profile, with at least three unified concepts."""
    server = SimulatedServer(simulator(profile, ticks=10), ticking=False)
    url = await server.start()
    try:
        model = "" if SIMULATORS[profile].model else ", model: demo/model"
        snapshot = await poll_target(
            f'{{name: t, type: http, url: "{url}"{model}, headers: {{Accept: "{TEXT_ACCEPT}"}}}}'
        )
    finally:
        await server.stop()
    assert snapshot.up, snapshot.last_error
    assert snapshot.profile == profile
    assert [family.name for family in snapshot.families if family.type == "untyped"] == []
    assert [family.name for family in snapshot.families if not family.help] == []
    concepts = next(p for p in profiles() if p.name == profile).series
    served = {family.name for family in snapshot.families}
    assert len([c for c in concepts if c in served or c.removesuffix("_total") in served]) >= 3


@pytest.mark.parametrize("profile", [name for name in PROFILES if issubclass(SIMULATORS[name], PythonSimulator)])
async def test_a_python_backend_answers_through_prometheus_clients_asgi_app(profile):
    """prometheus_client's ASGI app decides: OpenMetrics with escaped names when asked for it,
    gzip when accepted, the classic text format otherwise, on /metrics and /metrics/ alike."""
    server = SimulatedServer(simulator(profile, ticks=3), ticking=False)
    url = await server.start()
    try:
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            async with session.get(
                url + "/", headers={"Accept": OPENMETRICS_ACCEPT, "Accept-Encoding": "gzip"}
            ) as response:
                openmetrics_type, encoding, body = (
                    response.headers["Content-Type"],
                    response.headers.get("Content-Encoding"),
                    await response.read(),
                )
            async with session.get(url, headers={"Accept": TEXT_ACCEPT}) as response:
                text_type = response.headers["Content-Type"]
    finally:
        await server.stop()
    assert openmetrics_type.startswith("application/openmetrics-text") and "escaping=underscores" in openmetrics_type
    assert encoding == "gzip" and gzip.decompress(body).endswith(b"# EOF\n")
    assert text_type.startswith("text/plain; version=0.0.4")


@pytest.mark.parametrize("profile", [name for name in PROFILES if not issubclass(SIMULATORS[name], PythonSimulator)])
def test_a_non_python_backend_answers_its_text_whatever_is_asked(profile):
    sim = simulator(profile, ticks=3)
    assert sim.render(OPENMETRICS_ACCEPT) == sim.render(TEXT_ACCEPT)
    assert sim.render(OPENMETRICS_ACCEPT)[1].startswith("text/plain")


def test_each_library_writes_numbers_its_own_way():
    assert [shortest(v) for v in (3.0, 0.1, 15.330000000000002, 1e20)] == ["3", "0.1", "15.330000000000002", "1e+20"]
    assert [rust_display(v) for v in (3.0, 1e-7, 1e20, float("inf"))] == [
        "3",
        "0.0000001",
        "100000000000000000000",
        "+Inf",
    ]
    assert [c_stream(v) for v in (6886.0, 2903.634, 1234567.0)] == ["6886", "2903.63", "1.23457e+06"]


def test_library_styles_show_in_the_text():
    tgi = simulator("tgi", ticks=5).render()[0].decode()
    assert "\n\n# HELP tgi_request_count " in tgi and "# HELP tgi_batch_concat" not in tgi  # blank lines; undescribed
    assert tgi.index("# TYPE tgi_queue_size gauge") < tgi.index("# TYPE tgi_request_duration histogram")
    triton = simulator("triton", ticks=5).render()[0].decode()
    assert triton.index("nv_inference_request_summary_us_count{") < triton.index(
        'nv_inference_request_summary_us{model="tensorrt_llm",version="1",quantile="0.5"}'
    )
    frontend = simulator("dynamo-frontend", ticks=5).render()[0].decode()
    names = [line.split()[2] for line in frontend.splitlines() if line.startswith("# TYPE")]
    assert names == sorted(names)
    llamacpp = simulator("llamacpp", ticks=5)
    assert isinstance(llamacpp, LlamaCppSimulator)
    llamacpp.prompt_tokens.inc(1_234_567)  # past a million, a std::stringstream writes six digits
    assert (
        f"llamacpp:prompt_tokens_total {f'{llamacpp.prompt_tokens.labels().value:g}'}\n"
        in llamacpp.render()[0].decode()
    )
    assert "e+06\n" in llamacpp.render()[0].decode()
