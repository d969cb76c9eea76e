"""Secrets never show: not in a log line, not on a page, not in what `once` or `check-config` print.

This runs after every other test and fails if any log line, page or command output of the whole
run held a secret a test configured (see helpers/leaks.py). So that it proves something on its own too,
it first configures every kind of secret there is and drives every path that could print one.
"""

from __future__ import annotations

import pytest
from helpers.leaks import LEAKS, MARK
from helpers.support import daemon_url, free_port, wait_until
from test_cli import command
from test_web_security import basic, fetch, hashed

from exporter.config.web import WebSecurity

WEB_PASSWORD = f"web-{MARK}-9"


def secret_config(upstream, tmp_path) -> str:
    password_file = tmp_path / "password"
    password_file.write_text(f"file-{MARK}-6\n")
    token_file = tmp_path / "token"
    token_file.write_text(f"tokenfile-{MARK}-7\n")
    fixture = f"127.0.0.1:{upstream.url.rsplit(':', 1)[1]}/simulated/vllm"
    return f"""
defaults: {{interval: 1s, retries: 1, backoff: 10ms}}
targets:
  - {{name: bearer, type: http, url: "{upstream.url}/status/401", bearer_token: "bearer-{MARK}-1"}}
  - name: basic
    type: http
    url: "{upstream.url}/status/403"
    basic_auth: {{username: scraper, password: "basic-{MARK}-2"}}
  - {{name: url-password, type: http, url: "http://scraper:url-{MARK}-3@127.0.0.1:{free_port()}/metrics"}}
  - name: headers
    type: http
    url: "{upstream.url}/garbage"
    headers: {{Authorization: "Bearer authz-{MARK}-5", X-Api-Key: "apikey-{MARK}-4"}}
  - name: files
    type: http
    url: "{upstream.url}/simulated/vllm"
    basic_auth: {{username: scraper, password_file: "{password_file}"}}
  - {{name: token-file, type: http, url: "{upstream.url}/simulated/vllm", bearer_token_file: "{token_file}"}}
  - {{name: url-up, type: http, url: "http://scraper:url-up-{MARK}-8@{fixture}"}}
"""


BROKEN = f"""
targets:
  - name: a
    type: http
    url: "htp://scraper:badurl-{MARK}-12@example.test/metrics"
    basic_auth: "in-the-wrong-place-{MARK}-13"
  - {{name: b, type: http, url: "http://b/m", bearer_token: [list-{MARK}-11]}}
"""


@pytest.mark.after_all
async def test_no_configured_secret_appears_in_any_log_line_page_or_command_output(upstream, start_daemon, tmp_path):
    config = secret_config(upstream, tmp_path)
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  prometheus: {hashed(WEB_PASSWORD)}\n")
    daemon = await start_daemon(config, web_security=WebSecurity(web))
    await wait_until(lambda: all(snap.polls >= 2 for snap in daemon.store.snapshots()), timeout=15)
    auth = basic("prometheus", WEB_PASSWORD)
    names = [snap.target.name for snap in daemon.store.snapshots()]

    pages = ["/", "/metrics", "/readyz", "/targets", "/api/targets"]
    pages += [f"/targets/{name}" for name in names] + [f"/api/targets/{name}" for name in names]
    for path in pages:
        assert (await fetch(daemon_url(daemon, path), auth=auth))[0] in (200, 503), path
    assert (await fetch(daemon_url(daemon), auth=basic("prometheus", f"wrong-{MARK}-10")))[0] == 401
    assert daemon.store.get("url-up").up and daemon.store.get("files").up and daemon.store.get("token-file").up
    assert not daemon.store.get("url-password").up and not daemon.store.get("bearer").up
    assert any("<secret>" in str(event.fields.get("error")) for event in daemon.events.recent("url-password")), (
        "the failure quoted the URL, its password scrubbed"
    )

    daemon.config_path.write_text(BROKEN)
    assert await daemon.reload() is False
    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN)
    assert (await command("check-config", str(broken)))[0] == 1
    path = tmp_path / "once.yaml"
    path.write_text(config)
    assert (await command("once", "--config", str(path), "--log-level", "debug"))[0] == 1

    print(f"searched {dict(LEAKS.searched)} texts for {len(LEAKS.secrets)} secret(s)")
    assert LEAKS.searched["log"] and LEAKS.searched["page"] and LEAKS.searched["command"]
    assert LEAKS.leaks == [], "\n\n".join(f"{test} ({kind}): ...{text}..." for test, kind, text in LEAKS.leaks)
