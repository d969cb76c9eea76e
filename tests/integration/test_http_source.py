"""`type: http` against real aiohttp servers on 127.0.0.1: what is sent, what is read, and how it fails.

Every target is built from YAML through `parse_config`, exactly as a user's config is validated.
Successful polls are checked on the Payload the source returns; failures on the Snapshot a
TargetPoller publishes (`up`, `last_reason`, `last_error`), which is what the status pages show.
"""

from __future__ import annotations

import base64
import gzip
import json
import ssl
from dataclasses import replace
from pathlib import Path

import pytest
import trustme
from aiohttp import web
from helpers.support import simulated, simulated_bodies, simulated_dynamo_vllm_worker, simulated_value
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, Info
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from exporter.config.loader import ConfigError, parse_config
from exporter.pipeline.target import read
from exporter.runtime.scheduler import TargetPoller
from exporter.serve.store import Store
from exporter.sources import Payload
from exporter.sources.http import RAW_KEEP, HTTPSource

TEXT_0_0_4 = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_1_0_0 = "application/openmetrics-text; version=1.0.0"


# -- helpers ------------------------------------------------------------------------------------


def q(value: object) -> str:
    """A YAML scalar for any string or path (JSON strings are valid YAML)."""
    return json.dumps(str(value))


def http_target(url: str, extra: str = ""):
    """One `type: http` target from YAML; no retries, so a failure is reported by its first attempt."""
    text = (
        "defaults: {interval: 5s, timeout: 3s, retries: 0, backoff: 10ms}\n"
        "targets:\n"
        "  - name: upstream\n"
        "    type: http\n"
        f"    url: {q(url)}\n"
    )
    if extra:
        text += "".join(f"    {line}\n" for line in extra.strip("\n").splitlines())
    return parse_config(text).targets[0]


@pytest.fixture
def poller(shared):
    """A TargetPoller for a target, on the test's shared session; `poller(t).poll()` gives a Snapshot."""
    store = Store()
    return lambda target: TargetPoller(target, store, shared)


async def serve(aiohttp_server, handler, *, path: str = "/metrics", ssl_context: ssl.SSLContext | None = None) -> str:
    """Serve `handler` at `path` on 127.0.0.1 (HTTPS with `ssl_context`); returns the base URL."""
    app = web.Application()
    app.router.add_get(path, handler)
    server = await aiohttp_server(app, host="127.0.0.1", ssl=ssl_context)
    return str(server.make_url("")).rstrip("/")


def text_response(body: bytes, **headers: str) -> web.Response:
    return web.Response(body=body, headers={"Content-Type": TEXT_0_0_4, **headers})


async def read_poll(source: HTTPSource) -> Payload:
    """One poll of the source, its body read as the target's pipeline reads it (limits included)."""
    payload = await source.poll()
    assert payload.exposition is not None  # an http source hands over the body
    result = read(payload.exposition)
    dropped = {"truncated_line": result.truncated_lines} if result.truncated_lines else {}
    return replace(payload, families=result.families, problems=result.problems, dropped=dropped)


def family(payload, name: str):
    found = [f for f in payload.families if f.name == name]
    assert len(found) == 1, f"expected one family {name!r}, got {[f.name for f in payload.families]}"
    return found[0]


def values(fam) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in fam.samples}


def sample_lines(body: bytes) -> int:
    return sum(1 for line in body.splitlines() if line.strip() and not line.startswith(b"#"))


def media_ranges(accept: str) -> list[tuple[str, dict[str, str], float]]:
    """`Accept` -> [(media type, params, q)] in the order written."""
    ranges = []
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        parsed = dict(param.split("=", 1) for param in params)
        weight = float(parsed.pop("q", "1"))
        ranges.append((media.lower(), parsed, weight))
    return ranges


# -- what the request carries -------------------------------------------------------------------


async def test_request_prefers_openmetrics_and_accepts_text_0_0_4(aiohttp_server, shared):
    seen: dict[str, str] = {}

    async def handler(request: web.Request) -> web.Response:
        seen.update(request.headers)
        return text_response(b"up_gauge 1\n")

    url = await serve(aiohttp_server, handler)
    await read_poll(HTTPSource(http_target(f"{url}/metrics"), shared))

    ranges = media_ranges(seen["Accept"])
    best = max(ranges, key=lambda r: r[2])
    assert best[0] == "application/openmetrics-text" and best[1].get("version") == "1.0.0"
    text = [r for r in ranges if r[0] == "text/plain" and r[1].get("version") == "0.0.4"]
    assert text, f"text format 0.0.4 not accepted: {seen['Accept']}"
    assert 0 < text[0][2] < best[2]


async def test_request_asks_for_gzip_and_names_the_exporter(aiohttp_server, shared):
    seen: dict[str, str] = {}

    async def handler(request: web.Request) -> web.Response:
        seen.update(request.headers)
        return text_response(b"up_gauge 1\n")

    url = await serve(aiohttp_server, handler)
    await read_poll(HTTPSource(http_target(f"{url}/metrics"), shared))

    assert seen["Accept-Encoding"] == "gzip"
    assert seen["User-Agent"].startswith("inference-exporter/")


async def test_request_carries_the_targets_custom_headers(aiohttp_server, shared):
    seen: dict[str, str] = {}

    async def handler(request: web.Request) -> web.Response:
        seen.update(request.headers)
        return text_response(b"up_gauge 1\n")

    url = await serve(aiohttp_server, handler)
    target = http_target(f"{url}/metrics", 'headers: {X-Scope-OrgID: team-a, X-Api-Key: "k-123"}')
    await read_poll(HTTPSource(target, shared))

    assert seen["X-Scope-OrgID"] == "team-a"
    assert seen["X-Api-Key"] == "k-123"
    assert "Authorization" not in seen


# -- what the response may be -------------------------------------------------------------------


async def test_gzip_compressed_body_is_decoded_and_parsed(aiohttp_server, shared):
    body = simulated_dynamo_vllm_worker()
    compressed = gzip.compress(body)

    async def handler(request: web.Request) -> web.Response:
        return text_response(compressed, **{"Content-Encoding": "gzip"})

    url = await serve(aiohttp_server, handler)
    payload = await read_poll(HTTPSource(http_target(f"{url}/metrics"), shared))

    assert len(compressed) < len(body) // 4  # the wire really carried gzip
    assert sum(len(f.samples) for f in payload.families) == sample_lines(body)
    blocks = family(payload, "dynamo_component_total_blocks")
    assert blocks.type == "gauge"
    assert values(blocks) == {
        (
            "dynamo_component_total_blocks",
            (("dp_rank", "0"), ("dynamo_component", "backend"), ("model", "Qwen/Qwen3-0.6B")),
        ): 5943.0
    }
    assert family(payload, "vllm:num_requests_running").type == "gauge"


def openmetrics_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    requests = Counter("requests", 'Requests "served" so far', ["model"], registry=registry)
    requests.labels("llama").inc(3)
    latency = Histogram("latency_seconds", "Request latency", buckets=(0.1, 1.0), registry=registry)
    latency.observe(0.5, {"trace_id": "abc123"})
    build = Info("build", "Build information", registry=registry)
    build.info({"version": "1.2.3"})
    return registry


async def test_openmetrics_response_is_parsed_with_openmetrics_semantics(aiohttp_server, shared):
    body = generate_openmetrics(openmetrics_registry())
    assert b"# EOF" in body and b'# {trace_id="abc123"}' in body  # what the encoder wrote

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, headers={"Content-Type": OPENMETRICS_1_0_0})

    url = await serve(aiohttp_server, handler)
    payload = await read_poll(HTTPSource(http_target(f"{url}/metrics"), shared))

    assert [f.name for f in payload.families] == ["requests", "latency_seconds", "build"]
    requests = family(payload, "requests")
    assert requests.type == "counter"
    # OpenMetrics escapes `"` in HELP; only an OpenMetrics reader turns `\"` back into `"`.
    assert requests.help == 'Requests "served" so far'
    assert values(requests)[("requests_total", (("model", "llama"),))] == 3.0
    assert {s.name for s in requests.samples} == {"requests_total", "requests_created"}

    latency = family(payload, "latency_seconds")
    assert latency.type == "histogram"
    buckets = {s.labels["le"]: s.value for s in latency.samples if s.name == "latency_seconds_bucket"}
    assert buckets == {"0.1": 0.0, "1.0": 1.0, "+Inf": 1.0}
    # The exemplar on the 1.0 bucket is dropped: no exemplar labels, the bucket keeps its own value.
    assert all("trace_id" not in s.labels for s in latency.samples)

    build = family(payload, "build")
    assert build.type == "info"
    assert values(build) == {("build_info", (("version", "1.2.3"),)): 1.0}


@pytest.mark.parametrize("redirect", [web.HTTPMovedPermanently, web.HTTPFound], ids=["301", "302"])
async def test_redirect_to_the_real_metrics_path_is_followed(aiohttp_server, shared, redirect):
    body = simulated("triton")
    app = web.Application()

    async def old_path(request: web.Request) -> web.Response:
        raise redirect("/real/metrics")

    async def real_path(request: web.Request) -> web.Response:
        return text_response(body)

    app.router.add_get("/metrics", old_path)
    app.router.add_get("/real/metrics", real_path)
    server = await aiohttp_server(app, host="127.0.0.1")

    payload = await read_poll(HTTPSource(http_target(str(server.make_url("/metrics"))), shared))

    summary = family(payload, "nv_inference_queue_summary_us")
    assert summary.type == "summary"
    assert values(summary)[
        ("nv_inference_queue_summary_us_count", (("model", "tensorrt_llm"), ("version", "1")))
    ] == simulated_value("triton", "nv_inference_queue_summary_us_count")


async def test_raw_body_is_kept_for_debugging(aiohttp_server, shared):
    body = simulated("triton")

    async def handler(request: web.Request) -> web.Response:
        return text_response(gzip.compress(body), **{"Content-Encoding": "gzip"})

    url = await serve(aiohttp_server, handler)
    payload = await read_poll(HTTPSource(http_target(f"{url}/metrics"), shared))

    assert payload.raw == body  # as the upstream wrote it, decompressed


async def test_raw_body_keeps_only_the_first_bytes_of_a_large_body(aiohttp_server, shared):
    body = b"".join(payload.data for payload in simulated_bodies() if not payload.openmetrics)
    assert len(body) > RAW_KEEP

    async def handler(request: web.Request) -> web.Response:
        return text_response(body)

    url = await serve(aiohttp_server, handler)
    payload = await read_poll(HTTPSource(http_target(f"{url}/metrics"), shared))

    assert payload.raw == body[:RAW_KEEP]
    assert sum(len(f.samples) for f in payload.families) == sample_lines(body)  # parsing saw all of it


async def test_gzip_body_over_the_limit_once_decompressed_fails_as_body_too_large(aiohttp_server, poller):
    decompressed = b"".join(b'big_gauge{i="%d"} 1\n' % i for i in range(200_000))  # ~4 MB
    compressed = gzip.compress(decompressed)
    limit = 1024 * 1024
    assert len(compressed) < limit < len(decompressed)

    async def handler(request: web.Request) -> web.Response:
        return text_response(compressed, **{"Content-Encoding": "gzip"})

    url = await serve(aiohttp_server, handler)
    snap = await poller(http_target(f"{url}/metrics", "body_size_limit: 1MiB")).poll()

    assert snap.up is False
    assert snap.last_reason == "body_too_large"
    assert "body_size_limit" in snap.last_error and str(limit) in snap.last_error
    assert snap.families == ()


# -- credentials ---------------------------------------------------------------------------------


def basic_auth_server(username: str, password: str):
    expected = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()

    async def handler(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != expected:
            return web.Response(status=401, text="unauthorized\n", headers={"WWW-Authenticate": "Basic"})
        return text_response(b"authorized_gauge 1\n")

    return handler


async def test_basic_auth_with_password_file_is_accepted(aiohttp_server, poller, tmp_path):
    password = tmp_path / "password"
    password.write_text("s3cret\n")  # the newline an editor adds is not part of the password
    url = await serve(aiohttp_server, basic_auth_server("scraper", "s3cret"))
    target = http_target(f"{url}/metrics", f"basic_auth: {{username: scraper, password_file: {q(password)}}}")

    snap = await poller(target).poll()

    assert snap.up is True, snap.last_error
    assert [f.name for f in snap.families] == ["authorized_gauge"]


async def test_basic_auth_with_wrong_password_fails_as_http_status(aiohttp_server, poller, tmp_path):
    password = tmp_path / "password"
    password.write_text("not-the-password\n")
    url = await serve(aiohttp_server, basic_auth_server("scraper", "s3cret"))
    target = http_target(f"{url}/metrics", f"basic_auth: {{username: scraper, password_file: {q(password)}}}")

    snap = await poller(target).poll()

    assert snap.up is False
    assert snap.last_reason == "http_status"
    assert "401" in snap.last_error
    assert "not-the-password" not in snap.last_error


def bearer_server(accepted: dict[str, str]):
    """Accepts only `Bearer {accepted['token']}`; the test changes the token between polls."""

    async def handler(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {accepted['token']}":
            return web.Response(status=401, text="unauthorized\n")
        return text_response(b"authorized_gauge 1\n")

    return handler


async def test_bearer_token_file_is_sent_as_authorization_header(aiohttp_server, poller, tmp_path):
    token = tmp_path / "token"
    token.write_text("tok-1\n")
    url = await serve(aiohttp_server, bearer_server({"token": "tok-1"}))

    snap = await poller(http_target(f"{url}/metrics", f"bearer_token_file: {q(token)}")).poll()

    assert snap.up is True, snap.last_error


async def test_bearer_token_file_is_read_again_on_each_poll(aiohttp_server, poller, tmp_path):
    token = tmp_path / "token"
    token.write_text("tok-1\n")
    accepted = {"token": "tok-1"}
    url = await serve(aiohttp_server, bearer_server(accepted))
    one = poller(http_target(f"{url}/metrics", f"bearer_token_file: {q(token)}"))

    first = await one.poll()
    token.write_text("tok-2\n")  # the token is rotated on disk, no reload
    accepted["token"] = "tok-2"
    second = await one.poll()

    assert first.up is True, first.last_error
    assert second.up is True, second.last_error
    assert second.errors == {}


@pytest.mark.parametrize("kind", ["password_file", "bearer_token_file"])
async def test_credential_file_deleted_after_loading_fails_as_credentials(aiohttp_server, poller, tmp_path, kind):
    hits = []

    async def handler(request: web.Request) -> web.Response:
        hits.append(request.path)
        return text_response(b"authorized_gauge 1\n")

    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    url = await serve(aiohttp_server, handler)
    extra = (
        f"basic_auth: {{username: scraper, password_file: {q(secret)}}}"
        if kind == "password_file"
        else f"bearer_token_file: {q(secret)}"
    )
    target = http_target(f"{url}/metrics", extra)  # validated while the file exists
    secret.unlink()

    snap = await poller(target).poll()

    assert snap.up is False
    assert snap.last_reason == "credentials"
    assert str(secret) in snap.last_error
    assert snap.errors == {"credentials": 1}
    assert hits == []  # nothing was sent without the credential


# -- TLS -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_context(cert: trustme.LeafCert, *, client_ca: trustme.CA | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(context)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        client_ca.configure_trust(context)
    return context


def write_ca(ca: trustme.CA, directory: Path) -> Path:
    path = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def write_client_cert(ca: trustme.CA, directory: Path) -> tuple[Path, Path]:
    client = ca.issue_cert("scraper@example.com")
    cert, key = directory / "client.pem", directory / "client.key"
    for blob in client.cert_chain_pems:
        blob.write_to_path(str(cert), append=True)
    client.private_key_pem.write_to_path(str(key))
    return cert, key


async def tls_ok_handler(request: web.Request) -> web.Response:
    return text_response(b"tls_gauge 1\n")


@pytest.fixture
async def https_url(aiohttp_server, ca) -> str:
    context = server_context(ca.issue_cert("localhost", "127.0.0.1"))
    return await serve(aiohttp_server, tls_ok_handler, ssl_context=context)


async def test_https_with_ca_file_succeeds(https_url, poller, ca, tmp_path):
    assert https_url.startswith("https://127.0.0.1:")
    target = http_target(f"{https_url}/metrics", f"tls: {{ca_file: {q(write_ca(ca, tmp_path))}}}")

    snap = await poller(target).poll()

    assert snap.up is True, snap.last_error
    assert [f.name for f in snap.families] == ["tls_gauge"]


async def test_https_without_the_ca_fails_as_tls(https_url, poller):
    snap = await poller(http_target(f"{https_url}/metrics")).poll()

    assert snap.up is False
    assert snap.last_reason == "tls"
    assert "certificate" in snap.last_error.lower()


async def test_https_with_insecure_skip_verify_succeeds_without_the_ca(https_url, poller):
    snap = await poller(http_target(f"{https_url}/metrics", "tls: {insecure_skip_verify: true}")).poll()

    assert snap.up is True, snap.last_error


@pytest.fixture
async def mtls_url(aiohttp_server, ca) -> str:
    context = server_context(ca.issue_cert("localhost", "127.0.0.1"), client_ca=ca)
    return await serve(aiohttp_server, tls_ok_handler, ssl_context=context)


async def test_mutual_tls_with_a_client_cert_from_the_ca_succeeds(mtls_url, poller, ca, tmp_path):
    cert, key = write_client_cert(ca, tmp_path)
    extra = f"tls: {{ca_file: {q(write_ca(ca, tmp_path))}, cert_file: {q(cert)}, key_file: {q(key)}}}"

    snap = await poller(http_target(f"{mtls_url}/metrics", extra)).poll()

    assert snap.up is True, snap.last_error
    assert [f.name for f in snap.families] == ["tls_gauge"]


async def test_mutual_tls_without_a_client_cert_fails(mtls_url, poller, ca, tmp_path):
    extra = f"tls: {{ca_file: {q(write_ca(ca, tmp_path))}}}"

    snap = await poller(http_target(f"{mtls_url}/metrics", extra)).poll()

    assert snap.up is False
    assert snap.families == ()
    assert snap.last_reason in ("tls", "read"), snap.last_error


@pytest.fixture
async def internal_name_url(aiohttp_server, ca) -> str:
    """HTTPS on 127.0.0.1 with a certificate for `metrics.internal` only."""
    context = server_context(ca.issue_cert("metrics.internal"))
    return await serve(aiohttp_server, tls_ok_handler, ssl_context=context)


async def test_server_name_verifies_a_cert_issued_for_another_name(internal_name_url, poller, ca, tmp_path):
    extra = f"tls: {{ca_file: {q(write_ca(ca, tmp_path))}, server_name: metrics.internal}}"

    snap = await poller(http_target(f"{internal_name_url}/metrics", extra)).poll()

    assert snap.up is True, snap.last_error


async def test_cert_for_another_name_fails_as_tls_without_server_name(internal_name_url, poller, ca, tmp_path):
    extra = f"tls: {{ca_file: {q(write_ca(ca, tmp_path))}}}"

    snap = await poller(http_target(f"{internal_name_url}/metrics", extra)).poll()

    assert snap.up is False
    assert snap.last_reason == "tls"


async def test_ca_file_deleted_after_loading_fails_the_poll_not_the_daemon(https_url, poller, ca, tmp_path):
    ca_file = write_ca(ca, tmp_path)
    target = http_target(f"{https_url}/metrics", f"tls: {{ca_file: {q(ca_file)}}}")  # validated while it exists
    ca_file.unlink()

    snap = await poller(target).poll()

    assert snap.up is False
    assert snap.last_reason == "tls"
    assert str(ca_file) in snap.last_error


def test_a_tls_file_that_is_not_pem_is_a_config_error_naming_its_line(tmp_path):
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate\n")
    with pytest.raises(ConfigError) as caught:
        parse_config(
            f'targets:\n  - name: a\n    type: http\n    url: https://127.0.0.1:1/metrics\n    tls: {{ca_file: "{bogus}"}}\n',
            "tls.yaml",
        )
    assert str(caught.value).startswith("tls.yaml:5: targets[0].tls:")
    assert str(bogus) in str(caught.value)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from([b"\n", b"#", b" ", b"\t", b"\r", b"\x0b", b"\x0c", b"a", b"1", b"{"]), max_size=40))
def test_sample_lines_counted_before_the_parse_are_those_that_start_with_neither_a_comment_nor_a_blank(pieces):
    """The count the sample_limit is checked against before a parse: lines that start with anything but
    `#` or a blank, as a multiline `^[^#\\s]` finds them (a slower scan of a large body)."""
    import re

    from exporter.sources.http import _sample_lines

    body = b"".join(pieces)
    assert _sample_lines(body) == len(re.findall(rb"^[^#\s]", body, re.M))
