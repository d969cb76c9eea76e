"""What the endpoint's security and the per-target event rings cost: figures, not assertions.

    .venv/bin/python bench/web_security.py [--requests 300]

Prints the time of one bcrypt check at cost 10 (what exporter-toolkit's docs quote as ~70 ms),
the latency of /healthz and /metrics without a web config, with cached basic auth and with TLS
plus basic auth (a new connection per request, the worst case; Prometheus keeps its
connections), and the cost of a log call that the event ring records but the level drops.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import bcrypt
import structlog
import trustme

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers.support import free_port

from exporter.config.loader import parse_config
from exporter.config.web import WebSecurity
from exporter.core.logs import configure
from exporter.runtime.daemon import Daemon

PASSWORD = "bench-password"


async def latency(url: str, requests: int, *, headers=None, ssl_context=None, fresh: bool = False) -> list[float]:
    times = []
    connector = aiohttp.TCPConnector(ssl=ssl_context if ssl_context is not None else True, force_close=fresh)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(requests):
            started = time.perf_counter()
            async with session.get(url, headers=headers) as response:
                await response.read()
                assert response.status == 200, response.status
            times.append(time.perf_counter() - started)
    return times


def show(name: str, times: list[float]) -> None:
    times = sorted(times)
    print(
        f"  {name:<48} median {statistics.median(times) * 1000:7.2f} ms   p99 {times[int(len(times) * 0.99)] * 1000:7.2f} ms"
    )


async def daemon_with(web_yaml: str | None, directory: Path) -> Daemon:
    security = None
    if web_yaml is not None:
        (directory / "web.yml").write_text(web_yaml)
        security = WebSecurity(directory / "web.yml")
    config = parse_config("targets: []\n")
    daemon = Daemon(config, config_path=None, listen=f"127.0.0.1:{free_port()}", web_security=security)
    await daemon.start()
    return daemon


async def main(requests: int) -> None:
    configure("error", "console")
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(10))
    started = time.perf_counter()
    bcrypt.checkpw(PASSWORD.encode(), hashed)
    print(f"one bcrypt check at cost 10: {(time.perf_counter() - started) * 1000:.1f} ms")

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1")
        cert.private_key_pem.write_to_path(directory / "key.pem")
        cert.cert_chain_pems[0].write_to_path(directory / "cert.pem")
        client = ssl.create_default_context()
        ca.configure_trust(client)
        auth = {"Authorization": aiohttp.encode_basic_auth("prometheus", PASSWORD)}
        users = f"basic_auth_users:\n  prometheus: {hashed.decode()}\n"
        tls = "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n"

        print(f"{requests} requests each, one after another, on loopback:")
        for name, web_yaml, scheme, kwargs in (
            ("no web config", None, "http", {}),
            ("basic auth (cached after the first)", users, "http", {"headers": auth}),
            ("TLS + basic auth, kept-alive connection", tls + users, "https", {"headers": auth, "ssl_context": client}),
            (
                "TLS + basic auth, new connection each",
                tls + users,
                "https",
                {"headers": auth, "ssl_context": client, "fresh": True},
            ),
        ):
            daemon = await daemon_with(web_yaml, directory)
            host, port = daemon.bound[0][:2]
            try:
                for path in ("/healthz", "/metrics"):
                    await latency(f"{scheme}://{host}:{port}{path}", 5, **kwargs)  # warm: the one bcrypt check
                    show(f"{path} {name}", await latency(f"{scheme}://{host}:{port}{path}", requests, **kwargs))
            finally:
                await daemon.close()

    configure("info", "console")
    log = structlog.get_logger("bench")
    calls = 20_000
    started = time.perf_counter()
    for i in range(calls):
        log.debug("poll attempt failed, retrying", target="bench", attempt=i, error="timeout")
    per_call = (time.perf_counter() - started) / calls
    print(f"a debug event with a target, recorded in its ring and dropped by the info level: {per_call * 1e6:.1f} us")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300)
    asyncio.run(main(parser.parse_args().requests))
