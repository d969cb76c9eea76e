"""The `Secret` type and every field the schema types as one: never shown on any surface, sent upstream as is.

The property test walks the schemas (every target kind's, the web config's) for fields typed Secret or
SecretFile, so that a new one is covered without a new test: for each, whatever value it holds is absent
from the config as shown (pages, JSON), its repr, its log events, the scrubbed echo of it, and the config
errors about it.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import pickle
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Union
from urllib.parse import quote

import pytest
import structlog
import trustme
from aiohttp import web
from helpers.leaks import MARK
from helpers.support import poll_target
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter, ValidationError

from exporter.config.loader import ConfigError, parse_config
from exporter.config.reader import parse_model
from exporter.config.web import WebConfig
from exporter.core.redact import Secrets
from exporter.core.secret import SHOWN, Secret, SecretFile, SecretURL
from exporter.serve.store import Snapshot
from exporter.serve.web import target_state
from exporter.sources import KINDS, TargetConfig

# -- the type itself ------------------------------------------------------------------------------


def test_a_secret_shows_as_secret_however_it_is_printed():
    secret = Secret(f"pw-{MARK}-type")
    shown = [
        str(secret),
        repr(secret),
        f"{secret}",
        f"{secret!r}",
        f"{secret:>30}",
        "%s %r" % (secret, secret),  # noqa: UP031 - the old way is a way too
        "{}".format(secret),  # noqa: UP032
        str(ValueError(secret)),
        repr([secret, {"k": secret}, (secret,)]),
        json.dumps({"k": secret}, default=str),
        json.dumps({"k": secret}, default=repr),
        TypeAdapter(Secret).dump_json(secret).decode(),
        json.dumps(TypeAdapter(Secret).dump_python(secret, mode="json")),
    ]
    for text in shown:
        assert secret.reveal() not in text and SHOWN in text, text
    with pytest.raises(TypeError):
        json.dumps(secret)  # no silent form: the json module cannot write it out at all
    with pytest.raises(TypeError):
        pickle.dumps(secret)
    assert copy.deepcopy(secret) is secret and copy.copy(secret) is secret


def test_a_secret_equals_only_a_secret_of_the_same_value():
    assert Secret("abcd") == Secret("abcd") and hash(Secret("abcd")) == hash(Secret("abcd"))
    assert Secret("abcd") != Secret("abce") and Secret("abcd") != "abcd"


def test_a_secret_in_a_log_event_is_written_as_secret():
    secret = Secret(f"logged-{MARK}-type")
    written = io.StringIO()
    factory = structlog.get_config()["logger_factory"]
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=written))
    try:
        log = structlog.get_logger("test")
        log.warning("a secret in a log event", secret=secret, nested={"deep": [secret]})
        try:
            raise ValueError(secret)
        except ValueError:
            log.exception("a secret in an exception")
    finally:
        structlog.configure(logger_factory=factory)
    err = written.getvalue()
    assert "a secret in a log event" in err and "a secret in an exception" in err
    assert secret.reveal() not in err and SHOWN in err
    for renderer in (
        structlog.processors.JSONRenderer(),
        structlog.processors.KeyValueRenderer(),
        structlog.processors.LogfmtRenderer(),
        structlog.dev.ConsoleRenderer(colors=False),
    ):
        text = renderer(None, "info", {"event": "x", "secret": secret, "list": [secret]})
        assert secret.reveal() not in str(text), renderer


def test_a_secret_file_shows_its_path_and_reads_its_contents_now(tmp_path):
    path = tmp_path / "token"
    path.write_text("first\n")
    file = SecretFile(path)
    assert str(file) == str(path) and "first" not in repr(file)
    assert file.read().reveal() == "first"
    path.write_text("rotated\r\n")
    assert file.read().reveal() == "rotated" and str(file.read()) == SHOWN


# -- every Secret field of every schema, on every surface -----------------------------------------

#: A key for dict-typed secret fields (request headers, web users): a header name that says "secret".
DICT_KEY = "X-Api-Key"
#: The least each kind needs besides the field under test. A new kind adds its line here.
KIND_BASES: dict[str, dict[str, Any]] = {
    "http": {"url": "http://127.0.0.1:9/metrics"},
    "nats": {"servers": ["nats://127.0.0.1:4222"], "subject": "a.b"},
    "nvml": {},
}
#: What a field's model validators want beside it, by root model and path.
COMPANIONS: dict[tuple[str, tuple[str, ...]], dict[str, Any]] = {
    ("NATSTarget", ("password_file",)): {"user": "scraper"}
}
_TLS = trustme.CA().issue_cert("tls.test")


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _paths(tp: Any, path: tuple[str, ...], seen: frozenset) -> Iterator[tuple[tuple[str, ...], Any]]:
    tp = _unwrap(tp)
    origin = typing.get_origin(tp)
    if tp in (Secret, SecretFile, SecretURL):
        yield path, tp
    elif origin in (Union, types.UnionType):
        args = [_unwrap(arg) for arg in typing.get_args(tp) if arg is not type(None)]
        if Secret in args or SecretFile in args:  # `str | Secret`: a value the schema may make a Secret
            yield path, Secret if Secret in args else SecretFile
        else:
            for arg in args:
                yield from _paths(arg, path, seen)
    elif isinstance(tp, type) and issubclass(tp, BaseModel) and tp not in seen:
        for name, field in tp.model_fields.items():
            yield from _paths(field.annotation, (*path, name), seen | {tp})
    elif origin is dict:
        yield from _paths(typing.get_args(tp)[1], (*path, DICT_KEY), seen)
    elif origin in (list, tuple):
        yield from _paths(typing.get_args(tp)[0], (*path, "0"), seen)


def _secret_fields() -> list[tuple[str, tuple[str, ...], Any]]:
    fields = [(kind, path, tp) for kind, spec in KINDS.items() for path, tp in _paths(spec.config, (), frozenset())]
    fields += [("web", path, tp) for path, tp in _paths(WebConfig, (), frozenset())]
    return fields


SECRET_FIELDS = _secret_fields()


def test_the_walk_finds_the_secret_fields_we_know_of():
    found = {(kind, ".".join(path)) for kind, path, _ in SECRET_FIELDS}
    assert {
        ("http", "url"),
        ("http", "bearer_token"),
        ("http", "bearer_token_file"),
        ("http", "basic_auth.password"),
        ("http", "basic_auth.password_file"),
        ("http", f"headers.{DICT_KEY}"),
        ("http", "tls.key_file"),
        ("nats", "password_file"),
        ("nats", "token_file"),
        ("nats", "creds_file"),
        ("nats", "nkey_seed_file"),
        ("nats", "tls.key_file"),
        ("web", f"basic_auth_users.{DICT_KEY}"),
    } <= found
    assert all(kind in KIND_BASES for kind in KINDS), "a new kind: add its least config to KIND_BASES"


def _model_at(root: type[BaseModel], path: tuple[str, ...]) -> type[BaseModel] | None:
    current: Any = root
    for part in path:
        tp = _unwrap(current)
        if typing.get_origin(tp) in (Union, types.UnionType):
            tp = next(_unwrap(a) for a in typing.get_args(tp) if a is not type(None))
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            current = tp.model_fields[part].annotation
        else:
            return None
    tp = _unwrap(current)
    if typing.get_origin(tp) in (Union, types.UnionType):
        tp = next(_unwrap(a) for a in typing.get_args(tp) if a is not type(None))
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _build(root: type[BaseModel], base: dict[str, Any], path: tuple[str, ...], leaf: Any) -> dict[str, Any]:
    """`base` with `leaf` at `path`; each model on the way given its required text fields and companions."""
    data = copy.deepcopy(base)
    node = data
    for depth, part in enumerate(path[:-1]):
        node = node.setdefault(part, {})
        model = _model_at(root, path[: depth + 1])
        for name, field in model.model_fields.items() if model else ():
            if field.is_required() and name not in node and _unwrap(field.annotation) is str:
                node[name] = "scraper"
    node[path[-1]] = leaf
    node.update(COMPANIONS.get((root.__name__, path), {}))
    if path[-1] == "key_file":  # a TLS key is checked against its certificate when loaded
        node["cert_file"] = base["__cert__"]
    data.pop("__cert__", None)
    return data


def _root(kind: str) -> type[BaseModel]:
    return WebConfig if kind == "web" else KINDS[kind].config


SECRET_TEXT = st.text(
    st.characters(codec="utf-8", categories=["L", "N", "P", "S", "Zs"], exclude_characters="$"),
    min_size=1,
    max_size=30,
).map(lambda text: f"{text.strip()}~{MARK}")  # marked: a secret never shows by chance, as "second" would


def _shaped(kind: str, path: tuple[str, ...], value: str) -> str:
    """A value the field accepts: a web user's is a bcrypt hash, which is the secret written there."""
    if kind == "web" and path[0] == "basic_auth_users":
        alphabet = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
        tail = "".join(alphabet[ord(char) % len(alphabet)] for char in value)
        return "$2b$10$" + (tail * 53)[:53]
    return value


@pytest.mark.parametrize(("kind", "path", "leaf_type"), SECRET_FIELDS, ids=lambda p: str(p))
@settings(max_examples=15, deadline=None)
@given(value=SECRET_TEXT)
def test_every_secret_field_is_hidden_on_every_surface(kind, path, leaf_type, value, tmp_path_factory):
    folder = tmp_path_factory.mktemp("secret")
    cert = folder / "cert.pem"
    _TLS.cert_chain_pems[0].write_to_path(str(cert))
    value = _shaped(kind, path, value)
    if leaf_type is SecretFile:
        file = folder / "secret"
        secret = _TLS.private_key_pem.bytes().decode() if path[-1] == "key_file" else value
        file.write_text(secret + "\n")
        leaf: Any = str(file)
    elif leaf_type is SecretURL:  # the password in its userinfo, as written (percent-encoded) and as sent
        secret = value
        leaf = f"http://scraper:{quote(value, safe='')}@h.test/metrics"
    else:
        secret = leaf = value
    root = _root(kind)
    base = {} if kind == "web" else {"name": "t", "type": kind, **KIND_BASES[kind]}
    data = _build(root, {**base, "__cert__": str(cert)}, path, leaf)
    try:
        model = root.model_validate(data, context={"base": folder})
    except ValidationError as exc:
        raise AssertionError(f"{kind} {'.'.join(path)}: the test cannot build a valid config ({exc})") from None

    secret_lines = [line for line in secret.splitlines() if len(line) >= 4] or [secret]
    if leaf_type is SecretURL:
        secret_lines.append(quote(value, safe=""))
    shown = [repr(model), str(model), f"{model}", model.model_dump_json(), json.dumps(model.model_dump(mode="json"))]
    if isinstance(model, TargetConfig):
        shown += [json.dumps(model.redacted()), json.dumps(target_state(Snapshot(model)))]  # /api/targets, pages
    for renderer in (structlog.processors.JSONRenderer(), structlog.dev.ConsoleRenderer(colors=False)):
        shown.append(str(renderer(None, "info", {"event": "config", "config": model, "parts": list(vars(model))})))
    for text in shown:
        for line in secret_lines:
            assert line not in text, f"{kind} {'.'.join(path)} shown in {text[:200]!r}"

    # An upstream's echo of it, in a message or a body, is scrubbed (its other forms: test_secret_forms.py).
    echo = f"upstream said: {secret} (and {base64.b64encode(secret.encode()).decode()})"
    scrubbed = Secrets(model).scrub(echo)
    scrubbed_bytes = Secrets(model).scrub_bytes(echo.encode()).decode()
    for line in secret_lines:
        assert line not in scrubbed and line not in scrubbed_bytes

    # A config error at the field, or at the model that holds it, never quotes what was written there.
    wrong = [_build(root, {**base, "__cert__": str(cert)}, path, [value, {"k": value}])]
    if len(path) > 1:
        wrong.append(_build(root, {**base, "__cert__": str(cert)}, path[:1], value))
    for bad in wrong:
        with pytest.raises(ConfigError) as caught:
            _load(kind, bad, folder)
        assert value not in str(caught.value), str(caught.value)


def _load(kind: str, data: dict[str, Any], folder: Path) -> BaseModel:
    """`data` read as a file of its kind is (JSON is YAML), with file:line errors."""
    if kind == "web":
        return parse_model(json.dumps(data), "web.yml", WebConfig, keys_hint="", context={"base": folder})
    return parse_config(json.dumps({"targets": [data]}), "config.yaml")


# -- the value reaches the upstream ---------------------------------------------------------------


async def test_each_inline_secret_reaches_the_upstream_as_configured(aiohttp_server, tmp_path):
    received: list[dict[str, str]] = []

    async def record(request: web.Request) -> web.Response:
        received.append(dict(request.headers))
        return web.Response(text="up_gauge 1\n", content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", record)
    server = await aiohttp_server(app, host="127.0.0.1")
    url = str(server.make_url("/metrics"))
    token, password, key, cookie = (f"{what}-{MARK}-up" for what in ("token", "password", "key", "cookie"))
    (tmp_path / "token").write_text(token + "\n")

    targets = [
        f"{{name: a, type: http, url: '{url}', bearer_token: '{token}'}}",
        f"{{name: b, type: http, url: '{url}', basic_auth: {{username: scraper, password: '{password}'}}}}",
        f"{{name: c, type: http, url: '{url}', headers: {{X-Api-Key: '{key}', Cookie: 'session={cookie}'}}}}",
        f"{{name: d, type: http, url: '{url}', bearer_token_file: '{tmp_path / 'token'}'}}",
    ]
    for target in targets:
        snapshot = await poll_target(target)
        assert snapshot.up, snapshot.last_error
    a, b, c, d = received
    assert a["Authorization"] == f"Bearer {token}" and d["Authorization"] == f"Bearer {token}"
    assert b["Authorization"] == "Basic " + base64.b64encode(f"scraper:{password}".encode()).decode()
    assert c["X-Api-Key"] == key and c["Cookie"] == f"session={cookie}"


def test_headers_whose_name_says_secret_are_secrets_and_others_are_text():
    from exporter.sources.http import HTTPTarget

    target = HTTPTarget.model_validate(
        {
            "name": "h",
            "type": "http",
            "url": "http://h/m",
            "headers": {"Authorization": "Bearer abcdef", "X-Api-Key": "k" * 8, "Cookie": "c=1234", "X-Team": "ml"},
        }
    )
    assert {name for name, value in target.headers.items() if isinstance(value, Secret)} == {
        "Authorization",
        "X-Api-Key",
        "Cookie",
    }
    assert target.redacted()["headers"] == {
        "Authorization": SHOWN,
        "X-Api-Key": SHOWN,
        "Cookie": SHOWN,
        "X-Team": "ml",
    }


def test_a_path_is_not_a_secret(tmp_path):
    """A SecretFile's path is shown (where to look), its contents never."""
    path = tmp_path / "token"
    path.write_text("contents-1234\n")
    from exporter.sources.http import HTTPTarget

    target = HTTPTarget.model_validate(
        {"name": "f", "type": "http", "url": "http://h/m", "bearer_token_file": str(path)}
    )
    assert target.redacted()["bearer_token_file"] == str(path)
    assert Secrets(target).scrub("x contents-1234 x") == f"x {SHOWN} x"
    assert target.bearer_token_file is not None and Path(target.bearer_token_file) == path


@pytest.mark.parametrize(
    "target",
    [
        "{name: n, type: nats, subject: a.b, servers: ['ftp://scraper:pw-%s-url@nats.test:4222']}",
        "{name: n, type: nats, subject: a.b, servers: ['nats://scraper:pw-%s-url@nats.test:4222']}",
        "{name: h, type: http, url: 'ftp://scraper:pw-%s-url@h.test/metrics'}",
    ],
)
def test_a_url_password_is_not_quoted_by_the_error_about_its_url(target):
    with pytest.raises(ConfigError) as caught:
        parse_config("targets:\n  - " + target % MARK + "\n")
    text = str(caught.value)
    assert MARK not in text and ("nats.test" in text or "h.test" in text), text


def test_a_url_shows_its_password_as_secret_and_reveals_it_for_the_request():
    url = SecretURL(f"http://scraper:pw%2F{MARK}@h.test:8000/metrics")
    for text in (str(url), repr(url), f"{url}", f"{[url]}", TypeAdapter(SecretURL).dump_json(url).decode()):
        assert MARK not in text and f"scraper:{SHOWN}@h.test:8000/metrics" in text, text
    assert url.reveal() == f"http://scraper:pw%2F{MARK}@h.test:8000/metrics"
    assert [secret.reveal() for secret in url.secrets()] == [f"pw%2F{MARK}", f"pw/{MARK}"]
    assert SecretURL("http://h.test/metrics").secrets() == () and str(SecretURL("http://h/m")) == "http://h/m"


async def test_a_failed_poll_names_its_url_with_the_password_hidden_by_the_source_itself():
    """Not only scrubbed afterwards: the source never writes the password into its message."""
    from helpers.support import free_port

    from exporter.sources import Shared, SourceError
    from exporter.sources.http import HTTPSource, HTTPTarget

    target = HTTPTarget.model_validate(
        {"name": "u", "type": "http", "url": f"http://scraper:pw-{MARK}-src@127.0.0.1:{free_port()}/metrics"}
    )
    shared = Shared()
    try:
        with pytest.raises(SourceError) as caught:
            await HTTPSource(target, shared).poll()
    finally:
        await shared.close()
    assert caught.value.reason == "connect"
    assert MARK not in caught.value.message and f"scraper:{SHOWN}@127.0.0.1" in caught.value.message
