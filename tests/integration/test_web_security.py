"""--web.config.file: TLS, mutual TLS, basic auth and headers on our endpoint, with certificates made here."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import aiohttp
import bcrypt
import pytest
import trustme
from helpers.leaks import LEAKS
from helpers.support import REPO, daemon_url, wait_until
from test_cli import command

from exporter.config.web import WebSecurity, load_web_config

PASSWORD = "scrape-s3cr3t-pw"
WRONG = "wrong-s3cr3t-pw"


class Certs:
    """A CA, the server's certificate for 127.0.0.1 and a client certificate, as files."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.ca = trustme.CA()
        self.client_ca = trustme.CA()
        self.server = self.issue("served-first")
        self.ca.cert_pem.write_to_path(directory / "ca.pem")
        self.client_ca.cert_pem.write_to_path(directory / "client-ca.pem")
        client = self.client_ca.issue_cert("scraper@example.test")
        client.private_key_and_cert_chain_pem.write_to_path(directory / "client.pem")

    def issue(self, name: str) -> trustme.LeafCert:
        """A server certificate for 127.0.0.1, written over cert.pem and key.pem."""
        cert = self.ca.issue_cert("127.0.0.1", common_name=name)
        cert.private_key_pem.write_to_path(self.dir / "key.pem")
        cert.cert_chain_pems[0].write_to_path(self.dir / "cert.pem")
        return cert

    def client_context(self, *, with_cert: bool = False, max_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.dir / "ca.pem"))
        if with_cert:
            context.load_cert_chain(str(self.dir / "client.pem"))
        if max_version is not None:
            context.maximum_version = max_version
        return context


@pytest.fixture
def certs(tmp_path) -> Certs:
    return Certs(tmp_path)


@pytest.fixture
def secured_daemon(upstream, start_daemon, tmp_path):
    """A daemon with one healthy target, behind the web config given as YAML text."""

    async def start(web_yaml: str):
        web = tmp_path / "web.yml"
        web.write_text(web_yaml)
        return await start_daemon(
            f'targets:\n  - {{name: vllm, type: http, url: "{upstream.url}/simulated/vllm", interval: 1s}}\n',
            web_security=WebSecurity(web),
        )

    return start


def https_url(daemon, path: str = "/metrics") -> str:
    return daemon_url(daemon, path).replace("http://", "https://")


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": aiohttp.encode_basic_auth(user, password)}


async def fetch(url: str, *, ssl_context: ssl.SSLContext | bool = True, auth: dict[str, str] | None = None):
    """(status, headers, body) of one request on a fresh connection; `auth` is `basic(user, password)`."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_context, force_close=True)) as session:
        async with session.get(url, headers=auth) as response:
            return response.status, response.headers, await response.text()


async def served_certificate(daemon, context: ssl.SSLContext) -> str:
    """The common name of the certificate the daemon presents on a new connection."""
    host, port = daemon.bound[0][:2]
    _, writer = await asyncio.open_connection(host, port, ssl=context)
    try:
        subject = dict(pair[0] for pair in writer.get_extra_info("peercert")["subject"])
        return subject["commonName"]
    finally:
        writer.close()


def hashed(password: str) -> str:
    """A bcrypt hash at the lowest cost, to keep the tests fast; remembered as a secret."""
    return LEAKS.remember(bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode())


async def test_tls_only_serves_https_and_refuses_plain_http(certs, secured_daemon):
    daemon = await secured_daemon("tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n")
    await wait_until(lambda: daemon.store.get("vllm").up)

    status, _, body = await fetch(https_url(daemon), ssl_context=certs.client_context())
    assert status == 200 and 'target="vllm"' in body
    with pytest.raises(aiohttp.ClientError):
        await fetch(daemon_url(daemon))


async def test_mutual_tls_refuses_a_client_without_a_certificate(certs, secured_daemon):
    daemon = await secured_daemon(
        "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n"
        "  client_ca_file: client-ca.pem\n  client_auth_type: RequireAndVerifyClientCert\n"
    )
    with pytest.raises(aiohttp.ClientError):
        await fetch(https_url(daemon, "/healthz"), ssl_context=certs.client_context())
    status, _, _ = await fetch(https_url(daemon, "/healthz"), ssl_context=certs.client_context(with_cert=True))
    assert status == 200


async def test_min_version_refuses_an_older_client(certs, secured_daemon):
    daemon = await secured_daemon(
        "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n  min_version: TLS13\n"
    )
    with pytest.raises(aiohttp.ClientError):
        await fetch(https_url(daemon, "/healthz"), ssl_context=certs.client_context(max_version=ssl.TLSVersion.TLSv1_2))
    assert (await fetch(https_url(daemon, "/healthz"), ssl_context=certs.client_context()))[0] == 200


async def test_a_replaced_certificate_is_served_on_the_next_connection(certs, secured_daemon):
    daemon = await secured_daemon("tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n")
    assert await served_certificate(daemon, certs.client_context()) == "served-first"

    certs.issue("served-after-renewal")
    assert await served_certificate(daemon, certs.client_context()) == "served-after-renewal"
    assert (await fetch(https_url(daemon), ssl_context=certs.client_context()))[0] == 200


async def test_basic_auth_refuses_a_wrong_password_and_accepts_the_right_one(secured_daemon):
    daemon = await secured_daemon(f"basic_auth_users:\n  prometheus: {hashed(PASSWORD)}\n")
    url = daemon_url(daemon)

    status, headers, _ = await fetch(url)
    assert status == 401 and headers["WWW-Authenticate"] == "Basic"
    assert (await fetch(url, auth=basic("prometheus", WRONG)))[0] == 401
    assert (await fetch(url, auth=basic("somebody", PASSWORD)))[0] == 401
    assert (await fetch(url, auth=basic("prometheus", PASSWORD)))[0] == 200
    for path in ("/targets", "/api/targets", "/readyz", "/targets/vllm"):
        assert (await fetch(daemon_url(daemon, path)))[0] == 401, path
    assert (await fetch(daemon_url(daemon, "/healthz")))[0] == 200, "liveness probes need no password"


async def test_bcrypt_is_paid_once_per_credential(secured_daemon, monkeypatch):
    daemon = await secured_daemon(f"basic_auth_users:\n  prometheus: {hashed(PASSWORD)}\n")
    checked: list[bytes] = []
    real_checkpw = bcrypt.checkpw

    def counting_checkpw(password: bytes, hashed_password: bytes) -> bool:
        checked.append(password)
        return real_checkpw(password, hashed_password)

    monkeypatch.setattr(bcrypt, "checkpw", counting_checkpw)
    right, wrong = basic("prometheus", PASSWORD), basic("prometheus", WRONG)
    statuses = await asyncio.gather(*(fetch(daemon_url(daemon), auth=right) for _ in range(8)))
    statuses += [await fetch(daemon_url(daemon), auth=auth) for auth in (right, wrong, right, wrong)]

    assert [status for status, _, _ in statuses] == [200] * 9 + [401, 200, 401]
    assert sorted(checked) == sorted([PASSWORD.encode(), WRONG.encode()])


async def test_configured_headers_are_on_every_response(secured_daemon):
    daemon = await secured_daemon(
        f"basic_auth_users:\n  prometheus: {hashed(PASSWORD)}\n"
        "http_server_config:\n  headers:\n    X-Frame-Options: deny\n    X-Content-Type-Options: nosniff\n"
        "    Content-Security-Policy: \"default-src 'self'\"\n"
    )
    auth = basic("prometheus", PASSWORD)
    for path, expected, credentials in (("/metrics", 200, auth), ("/metrics", 401, None), ("/nowhere", 404, auth)):
        status, headers, _ = await fetch(daemon_url(daemon, path), auth=credentials)
        assert status == expected
        assert headers["X-Frame-Options"] == "deny" and headers["X-Content-Type-Options"] == "nosniff", path
        assert headers["Content-Security-Policy"] == "default-src 'self'"


async def test_a_changed_web_config_applies_and_a_broken_one_keeps_the_running_one(secured_daemon, tmp_path):
    daemon = await secured_daemon(f"basic_auth_users:\n  prometheus: {hashed(PASSWORD)}\n")
    auth = basic("prometheus", PASSWORD)
    web = tmp_path / "web.yml"

    web.write_text(f"basic_auth_users:\n  prometheus: {hashed(PASSWORD)}\n  grafana: {hashed('grafana-s3cr3t')}\n")
    assert (await fetch(daemon_url(daemon), auth=basic("grafana", "grafana-s3cr3t")))[0] == 200

    web.write_text("basic_auth_users:\n  prometheus: not-a-hash\n")
    assert (await fetch(daemon_url(daemon)))[0] == 401, "authentication stays on"
    assert (await fetch(daemon_url(daemon), auth=auth))[0] == 200


async def test_check_config_reports_web_config_errors_with_file_and_line(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("targets: []\n")
    web = tmp_path / "web.yml"
    web.write_text(
        "tls_server_config:\n  cert_file: missing.pem\n  key_file: key.pem\n  client_auth_type: RequireAnyClientCert\n"
        "basic_auth_users:\n  alice: plain-s3cr3t-password\n"
        "http_server_config:\n  headers:\n    X-Powered-By: us\n"
    )
    code, _, err = await command("check-config", str(config), "--web.config.file", str(web))
    assert code == 1
    assert f"{web}:2: tls_server_config.cert_file: file '{tmp_path}/missing.pem' does not exist" in err
    assert f"{web}:4: tls_server_config.client_auth_type: RequireAnyClientCert is not supported" in err
    assert f"{web}:6: basic_auth_users.alice: expected a bcrypt hash" in err
    assert f"{web}:9: http_server_config.headers.X-Powered-By: HTTP header 'X-Powered-By' can not be configured" in err
    assert "plain-s3cr3t-password" not in err


async def test_run_refuses_to_start_with_a_bad_web_config(tmp_path):
    web = tmp_path / "web.yml"
    web.write_text("tls_server_config:\n  cert_file: cert.pem\n")
    code, _, err = await command("run", "--web.config.file", str(web), "--listen", "127.0.0.1:1")
    assert code == 1
    assert f"{web}:2: tls_server_config.cert_file: file '{tmp_path}/cert.pem' does not exist" in err


def test_the_readme_example_web_config_is_valid(certs):
    readme = (REPO / "docs" / "security.md").read_text()
    example = readme.split("```yaml\ntls_server_config:", 1)[1].split("```", 1)[0]
    for name, made in (("server.crt", "cert.pem"), ("server.key", "key.pem"), ("clients-ca.crt", "client-ca.pem")):
        (certs.dir / name).write_bytes((certs.dir / made).read_bytes())
    (certs.dir / "web.yml").write_text("tls_server_config:" + example)
    web = load_web_config(certs.dir / "web.yml")
    assert web.tls is not None and web.tls.client_auth_type == "RequireAndVerifyClientCert"
    assert list(web.basic_auth_users) == ["prometheus"] and len(web.headers) == 4
