"""An upstream that echoes the request back (proxies and frameworks do, in their error pages) cannot
make the daemon show a configured secret in any form: raw, base64 in a basic-auth header, percent-encoded,
JSON- or HTML-escaped, from a file, from a header, from the URL."""

from __future__ import annotations

import base64
import html
import json
from urllib.parse import quote

from aiohttp import web
from helpers.leaks import LEAKS, MARK
from helpers.support import daemon_url, wait_until
from test_web_security import fetch

#: Characters that percent-encoding, JSON and HTML each write differently.
ODD = 'é/+&<"x'


def echo_app() -> web.Application:
    async def echo(request: web.Request) -> web.Response:
        lines = [f"{request.method} {request.url} ({request.path_qs})"] + [
            f"{k}: {v}" for k, v in request.headers.items()
        ]
        status = 200 if request.path.startswith("/ok") else 502
        if status == 200:  # a body that quotes the request in its comments, served as metrics
            return web.Response(text="".join(f"# {line}\n" for line in lines) + "up_gauge 1\n")
        return web.Response(status=status, text="\n".join(lines), content_type="text/html")

    app = web.Application()
    app.router.add_get("/{tail:.*}", echo)
    return app


def every_form(secret: str, user: str = "scraper") -> set[str]:
    """What the test itself expects to find nowhere (computed here, not by the code under test)."""
    forms = {secret, quote(secret, safe=""), quote(secret), base64.b64encode(f"{user}:{secret}".encode()).decode()}
    forms |= {json.dumps(form)[1:-1] for form in list(forms)} | {html.escape(form) for form in list(forms)}
    return forms


async def test_no_form_of_any_configured_secret_shows_on_pages_json_errors_or_logs(
    aiohttp_server, start_daemon, tmp_path
):
    server = await aiohttp_server(echo_app(), host="127.0.0.1")
    base = str(server.make_url("")).rstrip("/")
    secrets = {name: f"{name}-{MARK}-{ODD}" for name in ("inline", "file", "token", "apikey", "authz")}
    url_password = f"url{MARK}pw9"  # a URL's password: what stays after percent-decoding
    (tmp_path / "password").write_text(secrets["file"] + "\n")
    (tmp_path / "token").write_text(secrets["token"] + "\n")
    for secret in (*secrets.values(), url_password):
        for form in every_form(secret):
            LEAKS.remember(form)

    def quoted(text):
        return json.dumps(text)  # YAML double-quoted string

    config = f"""
defaults: {{interval: 1s, retries: 0}}
targets:
  - {{name: inline, type: http, url: "{base}/fail", basic_auth: {{username: scraper, password: {quoted(secrets["inline"])}}}}}
  - {{name: file, type: http, url: "{base}/fail", basic_auth: {{username: scraper, password_file: "{tmp_path / "password"}"}}}}
  - {{name: token, type: http, url: "{base}/ok", bearer_token_file: "{tmp_path / "token"}"}}
  - {{name: headers, type: http, url: "{base}/fail", headers: {{X-Api-Key: {quoted(secrets["apikey"])}, Authorization: {quoted("Bearer " + secrets["authz"])}}}}}
  - {{name: url, type: http, url: "http://scraper:{url_password}@{base.split("//")[1]}/fail?x=1"}}
"""
    daemon = await start_daemon(config)
    await wait_until(lambda: all(snap.polls >= 1 for snap in daemon.store.snapshots()), timeout=15)
    assert daemon.store.get("token").up and not daemon.store.get("inline").up
    assert b"<secret>" in daemon.store.get("inline").raw, "the echoed Authorization header was scrubbed"

    names = [snap.target.name for snap in daemon.store.snapshots()]
    shown = []
    for path in ["/targets", "/api/targets", *(f"/targets/{n}" for n in names), *(f"/api/targets/{n}" for n in names)]:
        _status, _, body = await fetch(daemon_url(daemon, path))
        shown.append(body)
    shown += [snap.last_error for snap in daemon.store.snapshots()]
    shown += [repr(event.fields) for name in names for event in daemon.events.recent(name)]
    everything = "\n".join(shown)
    for secret in (*secrets.values(), url_password):
        for form in every_form(secret):
            assert form not in everything, f"{form!r} (a form of {secret!r}) is shown"
    assert [leak for leak in LEAKS.leaks if leak[0] == LEAKS.test] == []


def test_forms_cover_basic_auth_headers_percent_encoding_and_escapes():
    from exporter.core.redact import forms_of

    forms = set(forms_of(["pa ss/wörd"], ["bob"]))
    assert {
        "pa ss/wörd",
        "pa%20ss%2Fw%C3%B6rd",
        "pa+ss%2Fw%C3%B6rd",
        base64.b64encode("bob:pa ss/wörd".encode()).decode(),
    } <= forms
    assert "pa ss/w\\u00f6rd" in forms and "p" not in forms


# -- the property: any secret, in any form an echo may take, is scrubbed from any text around it ------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

SECRET_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=4, max_size=24)


@settings(max_examples=200, deadline=None)
@given(
    secret=SECRET_TEXT,
    user=st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=8),
    around=st.lists(st.text(max_size=20), min_size=2, max_size=2),
    encode=st.sampled_from(["raw", "quote", "quote_safe", "basic", "json", "json_ascii", "html", "file_line"]),
)
def test_any_secret_in_any_echoed_form_is_scrubbed_from_any_text(secret, user, around, encode, tmp_path_factory):
    from pydantic import ValidationError

    from exporter.core.redact import Secrets
    from exporter.sources.http import HTTPTarget

    folder = tmp_path_factory.mktemp("secret")
    (folder / "password").write_text(secret + "\n")
    try:
        http = {"type": "http", "url": "http://h/m"}
        targets = [
            HTTPTarget.model_validate({"name": "a", **http, "basic_auth": {"username": user, "password": secret}}),
            HTTPTarget.model_validate(
                {"name": "b", **http, "basic_auth": {"username": user, "password_file": str(folder / "password")}}
            ),
            HTTPTarget.model_validate({"name": "c", **http, "headers": {"X-Api-Key": secret}}),
        ]
    except ValidationError:
        return
    form = {
        "raw": secret,
        "quote": quote(secret),
        "quote_safe": quote(secret, safe=""),
        "file_line": secret.strip(),
        "basic": base64.b64encode(f"{user}:{secret}".encode()).decode(),
        "json": json.dumps(secret, ensure_ascii=False)[1:-1],
        "json_ascii": json.dumps(secret)[1:-1],
        "html": html.escape(secret),
    }[encode]
    if len(form.strip()) < 4:
        return  # too short to scrub (a one-letter secret would garble every line)
    text = around[0] + form + around[1]
    for target in targets if encode != "basic" else targets[:2]:  # basic auth needs the user configured
        if target.name == "b" and secret != secret.rstrip("\r\n"):
            continue  # SecretFile.read drops a file's trailing line breaks: b's password is not `secret`
        assert form not in Secrets(target).scrub(text).replace("<secret>", "\0")
