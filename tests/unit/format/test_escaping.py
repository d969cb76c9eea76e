"""Escaped and quoted UTF-8 names are read back to the families their TYPE/HELP lines declare, for
every escaping scheme the exposition formats define, driven by the Content-Type the server sent.

The servers here are prometheus_client's own: its ASGI app under uvicorn (as vLLM mounts it), with
the Accept header choosing each scheme; the daemon's own poll path reads them.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import threading

import pytest
from helpers.prometheus_client_server import build_registry
from helpers.support import BodyReader, free_port, missing, poll_target, served, with_values_moved

from exporter.format.escaping import (
    ACCEPT,
    DOTS,
    UNDERSCORES,
    VALUES,
    body_format,
    fold,
    unescape,
    unescape_dots,
    unescape_values,
)
from exporter.format.parse import parse

# -- the schemes, one by one -----------------------------------------------------------------------


def _go_escape(name: str, scheme: str) -> str:
    """prometheus/common model.EscapeName (model/metric.go), for the round trips below."""

    def legacy(ch: str, i: int) -> bool:
        return ch.isascii() and (ch.isalpha() or ch in "_:" or (ch.isdigit() and i > 0))

    valid = bool(name) and all(legacy(ch, i) for i, ch in enumerate(name))
    if scheme == UNDERSCORES:
        return name if valid else "".join(ch if legacy(ch, i) else "_" for i, ch in enumerate(name))
    if scheme == DOTS:
        return "".join(
            "__" if ch == "_" else "_dot_" if ch == "." else ch if legacy(ch, i) else "__" for i, ch in enumerate(name)
        )
    if valid:
        return name
    return "U__" + "".join(
        "__" if ch == "_" else ch if legacy(ch, i) else f"_{ord(ch):x}_" for i, ch in enumerate(name)
    )


def test_value_escaping_reads_back_to_the_utf8_name():
    assert unescape_values("U__vllm_3a_num__requests__running") == "vllm:num_requests_running"
    assert unescape_values("U__my_2e_metric_1f600_") == "my.metric\U0001f600"
    assert unescape_values("plain_name") == "plain_name"  # no U__: not escaped


@pytest.mark.parametrize("broken", ["U__a_", "U__a_zz_", "U__a_1234567_", "U__a_d800_", "U__a_41"])
def test_a_value_escaped_name_that_does_not_decode_is_kept_as_written(broken):
    assert unescape_values(broken) == broken


def test_dots_escaping_reads_back_dots_and_underscores():
    assert unescape_dots("vllm_dot_cache__hits") == "vllm.cache_hits"
    assert unescape(_go_escape("a.b_c", DOTS), DOTS) == "a.b_c"


def _random_names(seed: int, alphabet: str, count: int = 300) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 16))) for _ in range(count)]


def test_value_escaping_round_trips_any_name():
    alphabet = 'ab_:.0-9 é\u00ff\u4e2d\U0001f600"\\'
    for name in _random_names(1, alphabet):
        assert unescape(_go_escape(name, VALUES), VALUES) == name


def test_dots_escaping_round_trips_names_of_dots_and_single_underscores():
    for name in _random_names(2, "ab.c_"):
        if "__" not in name and "_dot" not in name and not name.endswith("_"):
            assert unescape(_go_escape(name, DOTS), DOTS) == name


def test_underscore_escaping_folds_like_the_declared_name():
    # Go keeps `:`; prometheus_client's OpenMetrics sample lines do not: both fold alike.
    assert fold("vllm:num_requests_running") == fold("vllm_num_requests_running") == "vllm_num_requests_running"
    assert fold(_go_escape("a.b:c", UNDERSCORES)) == fold("a.b:c")


@pytest.mark.parametrize(
    ("content_type", "openmetrics", "escaping"),
    [
        ("application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=underscores", True, "underscores"),
        ("text/plain; version=1.0.0; charset=utf-8; escaping=allow-utf-8", False, "allow-utf-8"),
        ("text/plain;version=0.0.4", False, None),
        ("Application/OpenMetrics-Text;Escaping=DOTS", True, "dots"),
        ('application/openmetrics-text; escaping="values"', True, "values"),
        (None, False, None),
    ],
)
def test_the_content_type_says_the_format_and_its_escaping(content_type, openmetrics, escaping):
    form = body_format(content_type)
    assert (form.openmetrics, form.escaping) == (openmetrics, escaping)


def test_the_accept_header_is_what_prometheus_3_sends():
    # prometheus/prometheus scrape/scrape.go acceptHeader(config.DefaultScrapeProtocols, allow-utf-8)
    assert ACCEPT == (
        "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
        "application/openmetrics-text;version=0.0.1;q=0.5,"
        "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,"
        "text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
    )


def test_prometheus_client_answers_our_accept_with_canonical_names():
    from prometheus_client.exposition import choose_encoder

    encoder, content_type = choose_encoder(ACCEPT)
    assert body_format(content_type) == body_format("application/openmetrics-text; escaping=allow-utf-8")
    assert b"\nvllm:num_requests_running{" in encoder(build_registry())


# -- bodies as servers write them --------------------------------------------------------------------

ESCAPED_OPENMETRICS = b"""# HELP vllm:num_requests_running Running.
# TYPE vllm:num_requests_running gauge
vllm_num_requests_running{model_name="m"} 3.0
# HELP vllm:time_to_first_token_seconds TTFT.
# TYPE vllm:time_to_first_token_seconds histogram
vllm_time_to_first_token_seconds_bucket{le="0.1",model_name="m"} 1.0
vllm_time_to_first_token_seconds_bucket{le="+Inf",model_name="m"} 2.0
vllm_time_to_first_token_seconds_count{model_name="m"} 2.0
vllm_time_to_first_token_seconds_sum{model_name="m"} 0.7
# EOF
"""


def _families(result) -> dict[str, tuple]:
    return {f.name: (f.type, f.help, [(s.name, s.labels, s.value) for s in f.samples]) for f in result.families}


def test_prometheus_clients_escaped_openmetrics_samples_join_their_declared_families():
    result = parse(ESCAPED_OPENMETRICS, openmetrics=True, escaping=UNDERSCORES)
    families = _families(result)
    assert list(families) == ["vllm:num_requests_running", "vllm:time_to_first_token_seconds"]
    assert families["vllm:num_requests_running"] == (
        "gauge",
        "Running.",
        [("vllm:num_requests_running", {"model_name": "m"}, 3.0)],
    )
    kind, _, samples = families["vllm:time_to_first_token_seconds"]
    assert kind == "histogram"
    assert [name for name, _, _ in samples] == [
        "vllm:time_to_first_token_seconds_" + s for s in ("bucket", "bucket", "count", "sum")
    ]
    assert result.problems == {"escaped_names": 5}


def test_escaped_samples_join_their_family_when_the_server_names_no_escaping():
    # prometheus_client 0.23+ answers a bare `application/openmetrics-text` so: escaped, unsaid.
    assert _families(parse(ESCAPED_OPENMETRICS, openmetrics=True)) == _families(
        parse(ESCAPED_OPENMETRICS, openmetrics=True, escaping=UNDERSCORES)
    )


def test_go_dots_escaping_reads_back_family_sample_and_label_names():
    body = (
        "# HELP vllm:num__requests__running Running.\n# TYPE vllm:num__requests__running gauge\n"
        'vllm:num__requests__running{model__name="m"} 3\n'
        "# TYPE vllm_dot_cache_dot_hits counter\n"
        'vllm_dot_cache_dot_hits__total{gpu_dot_index="0"} 5\n'
    )
    families = _families(parse(body, escaping=DOTS))
    assert families == {
        "vllm:num_requests_running": ("gauge", "Running.", [("vllm:num_requests_running", {"model_name": "m"}, 3.0)]),
        "vllm.cache.hits": ("counter", "", [("vllm.cache.hits_total", {"gpu.index": "0"}, 5.0)]),
    }


def test_value_escaped_names_read_back_to_their_utf8_family():
    body = (
        "# TYPE U__vllm_2e_lora vllm gauge\n".replace(" vllm gauge", " gauge")
        + 'U__vllm_2e_lora{U__gpu_2e_index="0",model="m"} 2\n'
    )
    assert _families(parse(body, escaping=VALUES)) == {
        "vllm.lora": ("gauge", "", [("vllm.lora", {"gpu.index": "0", "model": "m"}, 2.0)])
    }


def test_quoted_utf8_names_are_read_in_braces_and_in_metadata():
    body = (
        '# HELP "vllm.lora adapters" Adapters loaded.\n# TYPE "vllm.lora adapters" histogram\n'
        '{"vllm.lora adapters_bucket", "gpu.index"="0", le="1"} 1\n'
        '{"vllm.lora adapters_bucket","gpu.index"="0",le="+Inf"} 2 # {trace_id="a"} 0.5\n'
        '{"vllm.lora adapters_count","gpu.index"="0"} 2\n'
        '{"vllm.lora adapters_sum","gpu.index"="0"} 1.5\n'
        'vllm:plain{"with \\"quote\\""="x"} 1\n'
        '{"no_labels"} 4\n'
        "# EOF\n"
    )
    families = _families(parse(body, openmetrics=True, escaping="allow-utf-8"))
    kind, help_text, samples = families["vllm.lora adapters"]
    assert (kind, help_text, len(samples)) == ("histogram", "Adapters loaded.", 4)
    assert samples[1] == ("vllm.lora adapters_bucket", {"gpu.index": "0", "le": "+Inf"}, 2.0)
    assert families["vllm:plain"][2] == [("vllm:plain", {'with "quote"': "x"}, 1.0)]
    assert families["no_labels"][2] == [("no_labels", {}, 4.0)]


def test_samples_that_name_no_declared_family_are_a_problem():
    # Triton's docs (docs/user_guide/metrics.md) show this: a TYPE line of one name, samples of another.
    body = (
        "# TYPE nv_first_response_histogram_ms histogram\n"
        'nv_inference_first_response_histogram_ms_count{model="m"} 37\n'
        'nv_inference_first_response_histogram_ms{model="m",le="+Inf"} 37\n'
    )
    assert parse(body).problems == {"unmatched_samples": 2}


def test_a_declared_family_without_samples_beside_a_matched_body_is_no_problem():
    body = "# TYPE empty counter\n# TYPE busy gauge\nbusy 1\n"
    assert parse(body).problems == {}


def test_an_escaping_nobody_defined_is_a_problem_and_names_are_read_as_written():
    result = parse("# TYPE a gauge\na 1\n", escaping="rot13")
    assert result.problems == {"unknown_escaping": 1}
    assert _families(result) == {"a": ("gauge", "", [("a", {}, 1.0)])}


def test_a_family_filter_sees_the_declared_name_of_escaped_samples():
    kept = parse(
        ESCAPED_OPENMETRICS, openmetrics=True, escaping=UNDERSCORES, keep=lambda name: name.startswith("vllm:num")
    )
    assert [(f.name, len(f.samples)) for f in kept.families] == [("vllm:num_requests_running", 1)]


def test_the_body_reader_reads_escaped_bodies_as_the_parser_does_poll_after_poll():
    reader = BodyReader()
    for step in range(4):
        body = with_values_moved(ESCAPED_OPENMETRICS, step)
        assert _families(reader.parse(body, openmetrics=True, escaping=UNDERSCORES)) == _families(
            parse(body, openmetrics=True, escaping=UNDERSCORES)
        )
        assert reader.parse(body, openmetrics=True, escaping=UNDERSCORES).problems == {"escaped_names": 5}
    # The same bytes under another escaping are other names: nothing remembered is reused.
    body = b"# TYPE a__b gauge\na__b 1\n"
    assert [f.name for f in reader.parse(body).families] == ["a__b"]
    assert [f.name for f in reader.parse(body).families] == ["a__b"]
    assert [f.name for f in reader.parse(body, escaping=DOTS).families] == ["a_b"]


# -- prometheus_client's ASGI app under uvicorn, read through the daemon's poll path -----------------


class ASGIServer:
    """prometheus_client.make_asgi_app(registry) under uvicorn, in a thread, on a loopback port."""

    def __init__(self, registry):
        try:
            import uvicorn
        except ImportError:
            missing("uvicorn is not installed (pip install -e '.[test]')")
        from prometheus_client import make_asgi_app

        self.port = free_port()
        config = uvicorn.Config(
            make_asgi_app(registry), host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    async def __aenter__(self) -> str:
        self.thread.start()
        for _ in range(500):
            if self.server.started:
                return f"http://127.0.0.1:{self.port}/metrics"
            await asyncio.sleep(0.01)
        raise AssertionError("uvicorn did not start")

    async def __aexit__(self, *exc) -> None:
        self.server.should_exit = True
        await asyncio.to_thread(self.thread.join, 10)


@pytest.fixture(scope="module")
def registry():
    return build_registry(utf8=True)


async def _poll(url: str, accept: str | None):
    headers = f", headers: {{Accept: '{accept}'}}" if accept else ""
    return await poll_target(f"{{name: vllm, type: http, url: '{url}'{headers}}}")


ESCAPINGS = {
    "openmetrics without escaping": "application/openmetrics-text",
    "openmetrics underscores": "application/openmetrics-text;version=1.0.0;escaping=underscores",
    "openmetrics dots": "application/openmetrics-text;version=1.0.0;escaping=dots",
    "openmetrics values": "application/openmetrics-text;version=1.0.0;escaping=values",
    "openmetrics allow-utf-8 (quoted names)": "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8",
    "text underscores": "text/plain;version=1.0.0;escaping=underscores",
    "text dots": "text/plain;version=1.0.0;escaping=dots",
    "text values": "text/plain;version=1.0.0;escaping=values",
    "text allow-utf-8 (quoted names)": "text/plain;version=1.0.0;escaping=allow-utf-8",
    "our default Accept": None,
}


@pytest.mark.parametrize("accept", list(ESCAPINGS.values()), ids=list(ESCAPINGS))
async def test_every_escaping_serves_what_the_classic_text_format_serves(registry, accept):
    async with ASGIServer(registry) as url:
        classic = await _poll(url, "text/plain;version=0.0.4")
        negotiated = await _poll(url, accept)
    assert classic.up and negotiated.up, negotiated.last_error
    assert classic.profile == negotiated.profile == "vllm"
    assert served(negotiated) == served(classic)
    kinds = {name: value[0] for name, value in served(negotiated).items()}
    assert kinds["vllm_time_to_first_token_seconds"] == "histogram"  # raw, typed, with its HELP
    assert kinds["vllm_prompt_tokens"] == "counter"
    assert kinds["vllm_lora_adapters"] == "gauge"  # the UTF-8 name, sanitized as ever
    unified = {"requests_running", "time_to_first_token_seconds", "prompt_tokens", "requests_finished"}
    assert unified <= set(kinds), sorted(kinds)
    if accept is None:  # we asked for canonical names and got them
        assert "escaping=allow-utf-8" in negotiated.content_type
        assert negotiated.last_problems == {}


async def test_escaped_names_are_counted_shown_and_logged_once(registry, start_daemon):
    from aiohttp import ClientSession
    from helpers.support import daemon_url

    async with ASGIServer(registry) as url:
        daemon = await start_daemon(
            "defaults: {interval: 1h, timeout: 5s}\n"
            f"targets:\n  - {{name: escaped, type: http, url: '{url}', headers: {{Accept: application/openmetrics-text}}}}\n"
        )
        poller = daemon.scheduler._pollers["escaped"][0]
        await poller.poll()
        await poller.poll()  # the same payload again: counted again, not logged again
        async with ClientSession() as session:
            async with session.get(daemon_url(daemon)) as response:
                metrics = await response.text()
            async with session.get(daemon_url(daemon, "/api/targets/escaped")) as response:
                detail = await response.json()
            async with session.get(daemon_url(daemon, "/targets/escaped")) as response:
                page = await response.text()
    polls = detail["polls"]
    assert polls >= 2
    assert (
        f'inference_exporter_target_payload_problems_total{{reason="escaped_names",target="escaped"}} {polls:.1f}'
        in metrics
    )
    assert detail["payload_problems"] == {"escaped_names": polls}
    assert detail["last_payload_problems"]["escaped_names"]["count"] > 0
    assert detail["content_type"] == "application/openmetrics-text; version=1.0.0; charset=utf-8"
    assert 'id="payload-problems"' in page and "escaped_names" in page
    said = [e for e in daemon.events.recent("escaped") if e.message == "payload does not match its declared families"]
    assert [e.fields["reason"] for e in said] == ["escaped_names"]
    assert "vllm_time_to_first_token_seconds_bucket{" in metrics  # and the family served, typed
    assert "# TYPE vllm_time_to_first_token_seconds histogram" in metrics


def test_a_body_that_spells_one_name_many_ways_gets_only_a_few_read_back():
    # Every spelling folds to the declared name; reading each back would cost a pass over all of them.
    spellings = ["a" + "".join(bits) + "b" for bits in itertools.product("_:", repeat=6)]
    body = "# TYPE a______b gauge\n" + "".join(f"{name} 1\n" for name in spellings if name != "a______b")
    result = parse(body)
    declared = next(f for f in result.families if f.name == "a______b")
    assert len(declared.samples) == result.problems["escaped_names"] == 8
    assert len(result.families) == len(spellings) - 8
