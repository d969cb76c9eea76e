"""Slow or numerous clients cannot take the listening side from everyone else: connections past
`max_connections` are refused at once, and a client that does not finish its headers in time is closed."""

from __future__ import annotations

import asyncio

from helpers.support import daemon_url, wait_until
from test_web_security import fetch

CONFIG = "server: {header_timeout: 300ms, max_connections: 10}\ntargets: []\n"


async def slow_client(daemon) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = daemon.bound[0][:2]
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # and never the blank line that ends the headers
    await writer.drain()
    return reader, writer


async def test_a_client_that_never_finishes_its_headers_is_closed(start_daemon):
    daemon = await start_daemon(CONFIG)
    reader, writer = await slow_client(daemon)
    assert await asyncio.wait_for(reader.read(), 10) == b"", "closed by the daemon, with nothing sent"
    writer.close()
    assert daemon.guard.timed_out == 1
    status, _, text = await fetch(daemon_url(daemon))
    assert status == 200 and "inference_exporter_http_header_timeouts_total 1.0" in text


async def test_connections_past_the_cap_are_refused_and_metrics_answer_once_slow_ones_are_gone(start_daemon):
    daemon = await start_daemon(CONFIG)
    slow = [await slow_client(daemon) for _ in range(10)]
    await wait_until(lambda: daemon.guard.open == 10)
    host, port = daemon.bound[0][:2]
    reader, writer = await asyncio.open_connection(host, port)
    answer = await asyncio.wait_for(reader.read(), 10)
    assert answer.startswith(b"HTTP/1.1 503"), answer
    writer.close()
    for reader, writer in slow:
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
    status, _, text = await fetch(daemon_url(daemon))
    assert status == 200
    assert "inference_exporter_http_connections_refused_total 1.0" in text
    assert daemon.guard.timed_out == 10


async def test_a_request_whose_headers_come_in_pieces_within_the_deadline_is_served(start_daemon):
    daemon = await start_daemon(CONFIG)
    host, port = daemon.bound[0][:2]
    reader, writer = await asyncio.open_connection(host, port)
    for piece in (b"GET /healthz HTTP/1.1\r\n", b"Host: x\r\n", b"Connection: close\r\n", b"\r\n"):
        writer.write(piece)
        await writer.drain()
        await asyncio.sleep(0.01)
    answer = await asyncio.wait_for(reader.read(), 10)
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"ok\n")
    writer.close()


async def test_a_reload_changes_the_limits(start_daemon):
    daemon = await start_daemon(CONFIG)
    daemon.config_path.write_text("server: {header_timeout: 5s, max_connections: 3}\ntargets: []\n")
    assert await daemon.reload()
    assert daemon.guard.limits.max_connections == 3


async def test_a_tls_client_that_never_finishes_its_handshake_is_closed(start_daemon, tmp_path):
    from test_web_security import Certs

    from exporter.config.web import WebSecurity

    Certs(tmp_path)
    web = tmp_path / "web.yml"
    web.write_text("tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n")
    daemon = await start_daemon(CONFIG, web_security=WebSecurity(web))
    host, port = daemon.bound[0][:2]
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"\x16\x03\x01")  # the first bytes of a ClientHello, and no more
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()
