"""`type: nats` against real nats-server processes on 127.0.0.1: runtime_stats, micro, faults, auth, reconnection.

Responders are real nats-py clients; micro-services are built with nats-py's own `nats.micro`.
Targets are built from YAML through `parse_config`, as a user's config is. What a user sees is
checked on the Snapshot a TargetPoller publishes (the series we serve, `up`, the failure reason)
or, for a running daemon, on its /metrics and nats-server's own /connz.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import ssl
from pathlib import Path

import aiohttp
import nats
import nkeys
import pytest
import structlog
import trustme
from helpers.nats_server import NATSServer, jwt_auth
from helpers.support import NIM_REPLY, daemon_url, free_port, simulated_dynamo_vllm_worker, wait_until
from nats.micro import add_service
from nats.micro.request import Request
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.config.loader import ConfigError, parse_config
from exporter.runtime.scheduler import TargetPoller
from exporter.serve.collector import Collector, registry_for
from exporter.serve.store import Snapshot, Store
from exporter.sources import Shared

# -- helpers ------------------------------------------------------------------------------------


def q(value: object) -> str:
    return json.dumps(str(value))


def nats_target(servers: str | list[str], extra: str = "", *, name: str = "stats"):
    """One `type: nats` target from YAML; no retries, so a failure is reported by its first attempt."""
    servers = [servers] if isinstance(servers, str) else servers
    text = (
        "defaults: {interval: 5s, timeout: 2s, retries: 0, backoff: 10ms}\n"
        "targets:\n"
        f"  - name: {name}\n"
        "    type: nats\n"
        f"    servers: [{', '.join(q(s) for s in servers)}]\n"
    )
    text += "".join(f"    {line}\n" for line in extra.strip("\n").splitlines())
    return parse_config(text).targets[0]


@pytest.fixture
async def nats_servers(tmp_path):
    """Start real nats-servers, each with an optional config snippet (auth, TLS); killed at the end."""
    servers: list[NATSServer] = []

    async def start(config: str = "") -> NATSServer:
        server = await NATSServer(tmp_path, config).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
async def clients():
    """nats-py connections playing backends; they reconnect quickly after a server restart."""
    made = []

    async def connect(url: str, **options) -> nats.NATS:
        async def quiet(exc: Exception) -> None:
            pass

        client = await nats.connect(url, reconnect_time_wait=0.1, max_reconnect_attempts=-1, error_cb=quiet, **options)
        made.append(client)
        return client

    yield connect
    for client in made:
        await client.close()


class Pollers:
    """`pollers(target)`: a TargetPoller on a test-wide Store (`.store`) and Shared."""

    def __init__(self) -> None:
        self.store, self.shared = Store(), Shared()
        self.made: list[TargetPoller] = []

    def __call__(self, target) -> TargetPoller:
        self.made.append(TargetPoller(target, self.store, self.shared))
        return self.made[-1]


@pytest.fixture
async def poller():
    """A TargetPoller on a test-wide Store and Shared; `(await poller(t).poll())` is a Snapshot."""
    make = Pollers()
    yield make
    for each in make.made:
        await each.close()
    await make.shared.close()


async def respond_with(client, subject: str, reply) -> None:
    """Answer requests on `subject` with `reply()` (bytes, or JSON-able), on this client."""

    async def handler(msg) -> None:
        body = reply() if callable(reply) else reply
        await msg.respond(body if isinstance(body, bytes) else json.dumps(body).encode())

    await client.subscribe(subject, cb=handler)
    await client.flush()


def served(snapshot: Snapshot) -> dict[tuple[str, frozenset], float]:
    """Every raw sample we serve for the target: (sample name, labels) -> value. The unified series NIM's
    profile makes of a runtime_stats reply (backend="nim", see test_vocabulary.py) are left out."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for f in snapshot.families
        for s in f.samples
        if s.labels.get("backend") != "nim"
    }


def types(snapshot: Snapshot) -> dict[str, str]:
    return {family.name: family.type for family in snapshot.families}


def labels(**values: str) -> frozenset:
    return frozenset(values.items())


def self_metric(store: Store, name: str) -> dict[tuple, float]:
    """One of our own metrics as a scrape shows it: (target, reason) -> value."""
    text = generate_latest(registry_for(Collector(store, process_metrics=False))).decode()
    return {
        (sample.labels.get("target"), sample.labels.get("reason")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


# -- runtime_stats ------------------------------------------------------------------------------


async def test_runtime_stats_gauges_and_counters_are_served_with_worker_and_backend_labels(
    nats_servers, clients, poller
):
    server = await nats_servers()
    backend = await clients(server.url)
    reply = {**NIM_REPLY, "uptime": "3d", "metrics": {**NIM_REPLY["metrics"], "histograms": {"x": [1, 2]}}}
    await respond_with(backend, "nim.backend.runtime_stats", reply)

    snapshot = await poller(nats_target(server.url, "subject: nim.backend.runtime_stats")).poll()

    assert snapshot.up, snapshot.last_error
    who = {"worker_id": "w-1", "backend": "vllm", "target": "stats"}
    assert served(snapshot) == {
        ("kv_cache_usage_perc", labels(**who)): 0.3,
        ("active_requests", labels(**who)): 5.0,
        ("total_requests_total", labels(**who)): 120.0,
    }
    assert types(snapshot) == {
        "kv_cache_usage_perc": "gauge",
        "active_requests": "gauge",
        "total_requests": "counter",
        "kv_cache_usage_ratio": "gauge",
        "requests_running": "gauge",  # NIM's profile reads the reply too
    }


async def test_runtime_stats_values_follow_the_responder_between_polls(nats_servers, clients, poller):
    server = await nats_servers()
    backend = await clients(server.url)
    state = {"active": 1, "total": 10}
    await respond_with(
        backend,
        "nim.backend.runtime_stats",
        lambda: {
            "worker_id": "w-1",
            "metrics": {"gauges": {"active_requests": state["active"]}, "counters": {"total_requests": state["total"]}},
        },
    )
    polling = poller(nats_target(server.url, "subject: nim.backend.runtime_stats"))
    who = labels(worker_id="w-1", target="stats")

    first = served(await polling.poll())
    state.update(active=7, total=25)
    second = served(await polling.poll())

    assert (first[("active_requests", who)], first[("total_requests_total", who)]) == (1.0, 10.0)
    assert (second[("active_requests", who)], second[("total_requests_total", who)]) == (7.0, 25.0)


async def test_gather_keeps_every_instances_reply_and_the_default_only_the_first(nats_servers, clients, poller):
    server = await nats_servers()
    for worker in ("w-1", "w-2", "w-3"):
        instance = await clients(server.url)
        await respond_with(instance, "nim.backend.runtime_stats", {**NIM_REPLY, "worker_id": worker})

    gathered = await poller(
        nats_target(server.url, "subject: nim.backend.runtime_stats\ngather: true\ngather_window: 300ms", name="all")
    ).poll()
    first = await poller(nats_target(server.url, "subject: nim.backend.runtime_stats", name="first")).poll()

    assert gathered.up, gathered.last_error
    workers = {dict(key[1])["worker_id"] for key in served(gathered) if key[0] == "total_requests_total"}
    assert workers == {"w-1", "w-2", "w-3"}
    for worker in workers:
        who = labels(worker_id=worker, backend="vllm", target="all")
        assert served(gathered)[("kv_cache_usage_perc", who)] == 0.3
        assert served(gathered)[("total_requests_total", who)] == 120.0
    assert len([key for key in served(first) if key[0] == "total_requests_total"]) == 1


async def test_prometheus_text_reply_is_parsed_as_an_http_body_would_be(nats_servers, clients, poller):
    server = await nats_servers()
    body = simulated_dynamo_vllm_worker()
    await respond_with(await clients(server.url), "vllm.metrics", body)

    snapshot = await poller(nats_target(server.url, "subject: vllm.metrics\nformat: prometheus")).poll()

    assert snapshot.up, snapshot.last_error
    lines = [line for line in body.decode().splitlines() if line and not line.startswith("#")]
    raw = [f for f in snapshot.families if not f.samples[0].labels.get("backend")]  # less the unified vocabulary
    assert sum(len(f.samples) for f in raw) == len(lines)
    assert snapshot.profile == "vllm"
    assert types(snapshot)["vllm_num_requests_running"] == "gauge"
    assert (
        served(snapshot)[
            (
                "dynamo_component_total_blocks",
                labels(dp_rank="0", dynamo_component="backend", model="Qwen/Qwen3-0.6B", target="stats"),
            )
        ]
        == 5943.0
    )


# -- faults ------------------------------------------------------------------------------------


async def test_subject_nobody_serves_fails_with_no_responders(nats_servers, poller):
    server = await nats_servers()

    first = await poller(nats_target(server.url, "subject: nobody.listens", name="first")).poll()
    gathered = await poller(nats_target(server.url, "subject: nobody.listens\ngather: true", name="all")).poll()

    for snapshot in (first, gathered):
        assert (snapshot.up, snapshot.last_reason) == (False, "no_responders")
        assert "nobody.listens" in snapshot.last_error


async def test_responder_slower_than_the_timeout_fails_with_timeout(nats_servers, clients, poller):
    server = await nats_servers()
    backend = await clients(server.url)

    async def slow(msg) -> None:
        await asyncio.sleep(1.5)
        await msg.respond(json.dumps(NIM_REPLY).encode())

    await backend.subscribe("slow.stats", cb=slow)
    await backend.flush()

    snapshot = await poller(nats_target(server.url, "subject: slow.stats\ntimeout: 300ms")).poll()

    assert (snapshot.up, snapshot.last_reason) == (False, "timeout")
    assert snapshot.families == ()


async def test_reply_that_is_not_json_fails_with_parse(nats_servers, clients, poller):
    server = await nats_servers()
    await respond_with(await clients(server.url), "nim.backend.runtime_stats", b'{"metrics": {"gauges": {"a": 1}')

    snapshot = await poller(nats_target(server.url, "subject: nim.backend.runtime_stats")).poll()

    assert (snapshot.up, snapshot.last_reason) == (False, "parse")
    assert "not JSON" in snapshot.last_error and "nim.backend.runtime_stats" in snapshot.last_error


async def test_bad_metrics_are_dropped_and_counted_and_the_good_ones_kept(nats_servers, clients, poller):
    server = await nats_servers()
    reply = {
        "worker_id": "w-1",
        "metrics": {
            "gauges": {"kv_cache_usage_perc": 0.5, "bad name": 1, "1st": 2, "text": "high", "flag": True},
            "counters": {"total_requests": 9, "negative": -1},
        },
    }
    await respond_with(await clients(server.url), "nim.backend.runtime_stats", reply)
    polling = poller(nats_target(server.url, "subject: nim.backend.runtime_stats"))

    snapshot = await polling.poll()

    assert snapshot.up, snapshot.last_error
    assert set(served(snapshot)) == {
        ("kv_cache_usage_perc", labels(worker_id="w-1", target="stats")),
        ("total_requests_total", labels(worker_id="w-1", target="stats")),
    }
    dropped = self_metric(polling.store, "inference_exporter_target_dropped_samples_total")
    assert dropped == {("stats", "invalid_metric"): 5.0}


async def test_an_unreadable_reply_among_gathered_ones_is_dropped_and_counted(nats_servers, clients, poller):
    server = await nats_servers()
    for worker in ("w-1", "w-2"):
        await respond_with(await clients(server.url), "nim.backend.runtime_stats", {**NIM_REPLY, "worker_id": worker})
    await respond_with(await clients(server.url), "nim.backend.runtime_stats", b"<html>502</html>")
    polling = poller(nats_target(server.url, "subject: nim.backend.runtime_stats\ngather: true\ngather_window: 300ms"))

    snapshot = await polling.poll()

    assert snapshot.up, snapshot.last_error
    assert {dict(key[1])["worker_id"] for key in served(snapshot)} == {"w-1", "w-2"}
    assert self_metric(polling.store, "inference_exporter_target_dropped_samples_total") == {
        ("stats", "invalid_reply"): 1.0
    }


# -- micro --------------------------------------------------------------------------------------


async def start_micro_instances(clients, url: str, count: int, *, failing: int | None = None) -> list:
    """`count` instances of service `inference`, each with endpoint `generate`; instance `failing` raises.

    Every instance has its own queue group, so each one receives every request.
    """
    services = []
    for index in range(count):
        client = await clients(url)

        async def generate(request: Request, index: int = index) -> None:
            if index == failing:
                raise RuntimeError("engine overloaded")
            await request.respond(b"ok")

        service = await add_service(
            client,
            name="inference",
            version="1.2.3",
            description=f"inference replica {index}",
            stats_handler=lambda endpoint: {"kv_blocks": 42, "model": "llama", "bad-key": 1},
        )
        await service.add_endpoint(name="generate", handler=generate, queue_group=f"replica-{index}")
        await client.flush()
        services.append(service)
    return services


async def send_requests(client, count: int) -> None:
    for _ in range(count):
        await client.request("generate", b"prompt", timeout=2)


async def test_micro_stats_of_every_instance_are_served_per_endpoint(nats_servers, clients, poller):
    server = await nats_servers()
    services = await start_micro_instances(clients, server.url, 3, failing=2)
    await send_requests(await clients(server.url), 4)
    polling = poller(nats_target(server.url, "protocol: micro\nservice: inference\ngather_window: 300ms"))

    snapshot = await polling.poll()

    assert snapshot.up, snapshot.last_error
    values = served(snapshot)
    for index, service in enumerate(services):
        who = {"service": "inference", "instance_id": service.id, "version": "1.2.3", "target": "stats"}
        endpoint = labels(**who, endpoint="generate", subject="generate")
        assert values[("nats_micro_endpoint_requests_total", endpoint)] == 4
        assert values[("nats_micro_endpoint_errors_total", endpoint)] == (4 if index == 2 else 0)
        processing = values[("nats_micro_endpoint_processing_time_seconds_total", endpoint)]
        assert 0 < processing < 1, "nanoseconds are served as seconds"
        assert values[("nats_micro_endpoint_average_processing_time_seconds", endpoint)] == pytest.approx(
            processing / 4, rel=0.01
        )
        assert values[("nats_micro_endpoint_data_kv_blocks", endpoint)] == 42
        assert values[("nats_micro_info", labels(**who, description=f"inference replica {index}"))] == 1
    assert types(snapshot)["nats_micro_endpoint_requests"] == "counter"
    assert types(snapshot)["nats_micro_endpoint_average_processing_time_seconds"] == "gauge"
    assert self_metric(polling.store, "inference_exporter_target_dropped_samples_total") == {
        ("stats", "invalid_metric"): 3.0
    }


async def test_micro_counters_only_go_up_between_polls(nats_servers, clients, poller):
    server = await nats_servers()
    await start_micro_instances(clients, server.url, 2, failing=1)
    requester = await clients(server.url)
    polling = poller(nats_target(server.url, "protocol: micro\nservice: inference\ngather_window: 300ms"))
    counters = (
        "nats_micro_endpoint_requests_total",
        "nats_micro_endpoint_errors_total",
        "nats_micro_endpoint_processing_time_seconds_total",
    )

    readings = []
    for _ in range(3):
        await send_requests(requester, 2)
        snapshot = await polling.poll()
        assert snapshot.up, snapshot.last_error
        readings.append({key: value for key, value in served(snapshot).items() if key[0] in counters})

    assert len(readings[0]) == 2 * len(counters)
    for before, after in itertools.pairwise(readings):
        assert before.keys() == after.keys()
        assert all(after[key] >= before[key] for key in before)
        assert (
            sum(after[k] for k in after if k[0] == counters[0])
            == sum(before[k] for k in before if k[0] == counters[0]) + 4
        )


async def test_micro_service_without_instances_fails_with_no_responders(nats_servers, poller):
    server = await nats_servers()

    snapshot = await poller(nats_target(server.url, "protocol: micro\nservice: inference")).poll()

    assert (snapshot.up, snapshot.last_reason) == (False, "no_responders")
    assert "$SRV.STATS.inference" in snapshot.last_error


# -- the shared connection ----------------------------------------------------------------------


async def test_targets_with_the_same_servers_and_credentials_share_one_connection(
    nats_servers, clients, tmp_path, start_daemon
):
    server = await nats_servers("authorization { users = [ {user: a, password: pa}, {user: b, password: pb} ] }")
    (tmp_path / "pa").write_text("pa\n")
    (tmp_path / "pb").write_text("pb\n")
    backend = await clients(server.url, user="a", password="pa")
    await respond_with(backend, "nim.backend.runtime_stats", NIM_REPLY)
    auth_a = f'user: a, password_file: "{tmp_path / "pa"}"'
    daemon = await start_daemon(
        f"""
defaults: {{interval: 1s, timeout: 500ms, retries: 0}}
targets:
  - {{name: one, type: nats, servers: ["{server.url}"], subject: nim.backend.runtime_stats, {auth_a}}}
  - {{name: two, type: nats, servers: ["{server.url}"], subject: nim.backend.runtime_stats, gather: true, gather_window: 100ms, {auth_a}}}
  - {{name: three, type: nats, servers: ["{server.url}"], protocol: micro, service: none, {auth_a}}}
  - {{name: other-user, type: nats, servers: ["{server.url}"], subject: nim.backend.runtime_stats, user: b, password_file: "{tmp_path / "pb"}"}}
"""
    )
    await wait_until(lambda: all(snap.up is not None for snap in daemon.store.snapshots()))

    assert {snap.target.name: snap.up for snap in daemon.store.snapshots()} == {
        "one": True,
        "two": True,
        "three": False,
        "other-user": True,
    }
    assert await server.exporter_connections() == 2


async def test_removing_the_last_target_of_a_connection_closes_it(nats_servers, clients, start_daemon):
    server = await nats_servers()
    await respond_with(await clients(server.url), "nim.backend.runtime_stats", NIM_REPLY)
    target = f'{{name: stats, type: nats, servers: ["{server.url}"], subject: nim.backend.runtime_stats}}'
    daemon = await start_daemon(f"defaults: {{interval: 1s, timeout: 500ms}}\ntargets:\n  - {target}\n")
    await wait_until(lambda: daemon.store.get("stats").up)
    assert await server.exporter_connections() == 1

    daemon.config_path.write_text("defaults: {interval: 1s}\ntargets: []\n")
    assert await daemon.reload()

    async def closed() -> bool:
        return await server.exporter_connections() == 0

    await wait_until(closed, timeout=5)


async def test_killed_server_takes_its_targets_down_and_they_recover_after_a_restart_without_leaks(
    nats_servers, clients, start_daemon
):
    server = await nats_servers()
    backend = await clients(server.url)
    await respond_with(backend, "nim.backend.runtime_stats", NIM_REPLY)
    await start_micro_instances(clients, server.url, 1)
    daemon = await start_daemon(
        f"""
defaults: {{interval: 500ms, timeout: 400ms, retries: 0}}
targets:
  - {{name: stats, type: nats, servers: ["{server.url}"], subject: nim.backend.runtime_stats}}
  - {{name: micro, type: nats, servers: ["{server.url}"], protocol: micro, service: inference, gather_window: 100ms}}
"""
    )
    all_up = lambda: all(snap.up for snap in daemon.store.snapshots())  # noqa: E731
    await wait_until(all_up)
    tasks_before = len(asyncio.all_tasks())
    assert await server.exporter_connections() == 1

    for cycle in range(2):
        await server.stop()
        await wait_until(lambda: all(snap.up is False for snap in daemon.store.snapshots()), timeout=5)
        reasons = {snap.target.name: snap.last_reason for snap in daemon.store.snapshots()}
        assert reasons == {"stats": "nats_disconnected", "micro": "nats_disconnected"}, f"cycle {cycle}"

        await server.start()
        await wait_until(all_up, timeout=10)  # nats-py retries every 2 s: a few intervals
        assert await server.exporter_connections() == 1, f"cycle {cycle}"
        await wait_until(lambda: len(asyncio.all_tasks()) == tasks_before, timeout=3)

    async with aiohttp.ClientSession() as session, session.get(daemon_url(daemon)) as response:
        text = await response.text()
    assert 'inference_exporter_target_poll_errors_total{reason="nats_disconnected",target="stats"}' in text
    assert 'inference_exporter_target_up{target="stats"} 1.0' in text


async def test_first_poll_against_a_server_that_is_not_there_fails_with_connect_and_leaves_nothing_behind(poller):
    tasks_before = len(asyncio.all_tasks())
    polling = poller(nats_target(f"nats://127.0.0.1:{free_port()}", "subject: a.b"))

    snapshot = await polling.poll()
    await polling.close()  # nats-py was still retrying in the background

    assert (snapshot.up, snapshot.last_reason) == (False, "connect")
    assert "cannot connect to nats://127.0.0.1:" in snapshot.last_error
    assert len(asyncio.all_tasks()) == tasks_before


# -- authentication -----------------------------------------------------------------------------


def secret_file(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text + "\n")
    return path


async def test_token_server_rejects_a_wrong_token_with_a_logged_error_and_accepts_the_right_one(
    nats_servers, clients, poller, tmp_path
):
    server = await nats_servers('authorization { token: "s3cret-token" }')
    await respond_with(await clients(server.url, token="s3cret-token"), "nim.backend.runtime_stats", NIM_REPLY)
    wrong = secret_file(tmp_path, "wrong", "not-the-token")
    right = secret_file(tmp_path, "right", "s3cret-token")

    with structlog.testing.capture_logs() as logs:
        refused = await poller(
            nats_target(server.url, f"subject: nim.backend.runtime_stats\ntoken_file: {q(wrong)}", name="wrong")
        ).poll()
    accepted = await poller(
        nats_target(server.url, f"subject: nim.backend.runtime_stats\ntoken_file: {q(right)}", name="right")
    ).poll()

    assert (refused.up, refused.last_reason) == (False, "auth")
    assert "rejected the credentials" in refused.last_error and "not-the-token" not in refused.last_error
    assert self_metric(poller.store, "inference_exporter_target_up") == {("wrong", None): 0.0, ("right", None): 1.0}
    errors = [event for event in logs if event["log_level"] == "error"]
    assert errors and "Authorization Violation" in errors[0]["error"], logs
    assert accepted.up, accepted.last_error


async def test_user_password_server_rejects_a_wrong_password_and_accepts_the_right_one(
    nats_servers, clients, poller, tmp_path
):
    server = await nats_servers("authorization { user: scraper, password: pa55word }")
    await respond_with(
        await clients(server.url, user="scraper", password="pa55word"), "nim.backend.runtime_stats", NIM_REPLY
    )
    wrong = secret_file(tmp_path, "wrong", "guess")
    right = secret_file(tmp_path, "right", "pa55word")

    refused = await poller(
        nats_target(
            server.url, f"subject: nim.backend.runtime_stats\nuser: scraper\npassword_file: {q(wrong)}", name="wrong"
        )
    ).poll()
    accepted = await poller(
        nats_target(
            server.url, f"subject: nim.backend.runtime_stats\nuser: scraper\npassword_file: {q(right)}", name="right"
        )
    ).poll()

    assert (refused.up, refused.last_reason) == (False, "auth")
    assert accepted.up, accepted.last_error
    assert served(accepted)[("total_requests_total", labels(worker_id="w-1", backend="vllm", target="right"))] == 120


async def test_nkey_server_accepts_the_seed_from_a_file_and_rejects_another_seed(
    nats_servers, clients, poller, tmp_path
):
    seed = nkeys.encode_seed(b"\x01" * 32, nkeys.PREFIX_BYTE_USER)
    other = nkeys.encode_seed(b"\x02" * 32, nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(bytearray(seed)).public_key.decode()
    server = await nats_servers(f'authorization {{ users = [ {{nkey: "{public}"}} ] }}')
    await respond_with(await clients(server.url, nkeys_seed_str=seed.decode()), "nim.backend.runtime_stats", NIM_REPLY)
    good = secret_file(tmp_path, "user.nk", seed.decode())
    bad = secret_file(tmp_path, "other.nk", other.decode())

    accepted = await poller(
        nats_target(server.url, f"subject: nim.backend.runtime_stats\nnkey_seed_file: {q(good)}", name="good")
    ).poll()
    refused = await poller(
        nats_target(server.url, f"subject: nim.backend.runtime_stats\nnkey_seed_file: {q(bad)}", name="bad")
    ).poll()

    assert accepted.up, accepted.last_error
    assert (refused.up, refused.last_reason) == (False, "auth")


@pytest.fixture
async def tls_server(nats_servers, clients, tmp_path):
    """A nats-server that requires TLS and a client certificate from its CA, with a responder on it."""
    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    client_cert = ca.issue_cert("scraper@example.com")
    files = {}
    for name, blob in (
        ("ca.pem", ca.cert_pem),
        ("server.pem", server_cert.cert_chain_pems[0]),
        ("server-key.pem", server_cert.private_key_pem),
        ("client.pem", client_cert.cert_chain_pems[0]),
        ("client-key.pem", client_cert.private_key_pem),
    ):
        blob.write_to_path(str(tmp_path / name))
        files[name] = q(tmp_path / name)
    trustme.CA().cert_pem.write_to_path(str(tmp_path / "other-ca.pem"))
    files["other-ca.pem"] = q(tmp_path / "other-ca.pem")
    server = await nats_servers(
        f"tls {{ cert_file: {files['server.pem']}, key_file: {files['server-key.pem']}, ca_file: {files['ca.pem']}, verify: true }}"
    )
    context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    context.load_cert_chain(str(tmp_path / "client.pem"), str(tmp_path / "client-key.pem"))
    url = f"tls://127.0.0.1:{server.port}"
    await respond_with(await clients(url, tls=context), "nim.backend.runtime_stats", NIM_REPLY)
    return url, files


async def test_tls_server_that_verifies_clients_accepts_our_certificate(tls_server, poller):
    url, files = tls_server
    tls = f"tls: {{ca_file: {files['ca.pem']}, cert_file: {files['client.pem']}, key_file: {files['client-key.pem']}}}"

    snapshot = await poller(nats_target(url, f"subject: nim.backend.runtime_stats\n{tls}")).poll()

    assert snapshot.up, snapshot.last_error


async def test_tls_server_refuses_a_client_without_a_certificate(tls_server, poller):
    url, files = tls_server

    snapshot = await poller(
        nats_target(url, f"subject: nim.backend.runtime_stats\ntls: {{ca_file: {files['ca.pem']}}}")
    ).poll()

    # The server rejects it with a TLS alert; whether that alert or only the reset reaches the
    # client first is a race in the TLS 1.3 handshake, so either reason is right.
    assert snapshot.up is False and snapshot.last_reason in ("tls", "connect"), snapshot.last_error


async def test_tls_server_with_a_certificate_we_do_not_trust_fails_with_tls(tls_server, poller):
    url, files = tls_server
    tls = f"tls: {{ca_file: {files['other-ca.pem']}, cert_file: {files['client.pem']}, key_file: {files['client-key.pem']}}}"

    snapshot = await poller(nats_target(url, f"subject: nim.backend.runtime_stats\n{tls}")).poll()

    assert (snapshot.up, snapshot.last_reason) == (False, "tls"), snapshot.last_error
    assert "certificate verify failed" in snapshot.last_error


# -- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("protocol: micro", "service is required for protocol micro"),
        (
            "subject: a.b\nservice: inference",
            "service belongs to protocol micro, but this target's protocol is runtime_stats",
        ),
        ("protocol: dynamo\nendpoint: ns.backend", "expected a Dynamo endpoint namespace.component.endpoint"),
        ("subject: a.*", "no spaces or wildcards"),
        ("subject: a.b\nuser: scraper", "user and password_file go together"),
    ],
)
def test_a_nats_target_that_does_not_fit_its_protocol_is_a_config_error_with_its_line(extra: str, message: str):
    with pytest.raises(ConfigError) as caught:
        nats_target("nats://127.0.0.1:4222", extra)
    assert message in str(caught.value)
    assert str(caught.value).startswith("<string>:")


def test_credentials_in_a_server_url_are_refused_without_echoing_them():
    with pytest.raises(ConfigError) as caught:
        nats_target("nats://scraper:hunter2@127.0.0.1:4222", "subject: a.b")
    assert "put them in user + password_file" in str(caught.value)
    assert "hunter2" not in str(caught.value)


async def test_jwt_server_accepts_a_creds_file_and_rejects_one_from_an_unknown_account(
    nats_servers, clients, poller, tmp_path
):
    config, creds, stranger = jwt_auth(tmp_path)
    server = await nats_servers(config)
    await respond_with(await clients(server.url, user_credentials=str(creds)), "nim.backend.runtime_stats", NIM_REPLY)

    accepted = await poller(
        nats_target(server.url, f"subject: nim.backend.runtime_stats\ncreds_file: {q(creds)}", name="good")
    ).poll()
    refused = await poller(
        nats_target(server.url, f"subject: nim.backend.runtime_stats\ncreds_file: {q(stranger)}", name="bad")
    ).poll()

    assert accepted.up, accepted.last_error
    assert (refused.up, refused.last_reason) == (False, "auth")
