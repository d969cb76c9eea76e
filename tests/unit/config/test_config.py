"""The config file as a user writes it: what loads and what it resolves to (its mistakes: test_config_invalid.py)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pydantic
import pytest
import trustme

from exporter.config.loader import Config, ConfigError, ConfigIssue, load_config, parse_config
from exporter.sources.http import HTTPTarget

REPO = Path(__file__).resolve().parents[3]


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


# -- what a good file gives ---------------------------------------------------------------------


def test_valid_file_with_every_http_field_loads(tmp_path):
    (tmp_path / "token").write_text("x\n")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(tmp_path / "ca.pem")
    client = ca.issue_cert("client.internal")
    client.cert_chain_pems[0].write_to_path(tmp_path / "client.pem")
    client.private_key_pem.write_to_path(tmp_path / "client-key.pem")
    path = write(
        tmp_path,
        f"""
        listen: 0.0.0.0:9898
        prefix: infer
        defaults:
          interval: 20s
          timeout: 5s
          retries: 3
          backoff: 500ms
        targets:
          - name: tgi
            type: http
            url: https://tgi.internal:8080/metrics
            interval: 5s
            timeout: 2s
            retries: 1
            prefix: ""
            labels: {{pool: chat, gpu: "0"}}
            headers: {{X-Team: ml}}
            bearer_token_file: {tmp_path}/token
            tls:
              ca_file: {tmp_path}/ca.pem
              cert_file: {tmp_path}/client.pem
              key_file: {tmp_path}/client-key.pem
              server_name: tgi.internal
              insecure_skip_verify: false
            body_size_limit: 16MiB
            sample_limit: 5000
          - name: vllm
            type: http
            url: http://127.0.0.1:8000/metrics
            basic_auth: {{username: scraper, password: hunter2}}
        """,
    )
    config = load_config(path)
    assert config.listen == "0.0.0.0:9898"
    assert config.listen_address == ("0.0.0.0", 9898)
    assert config.source == str(path)
    assert config.defaults.backoff == 0.5
    tgi, vllm = config.targets
    assert isinstance(tgi, HTTPTarget) and isinstance(vllm, HTTPTarget)
    assert (tgi.interval, tgi.timeout, tgi.retries, tgi.prefix) == (5.0, 2.0, 1, "")
    assert tgi.labels == {"pool": "chat", "gpu": "0"}
    assert tgi.headers == {"X-Team": "ml"}
    assert tgi.bearer_token_file is not None and tgi.bearer_token_file.path == tmp_path / "token"
    assert tgi.tls is not None and tgi.tls.server_name == "tgi.internal"
    assert tgi.body_size_limit == 16 * 1024 * 1024
    assert tgi.sample_limit == 5000
    assert vllm.basic_auth is not None and vllm.basic_auth.password is not None
    assert vllm.basic_auth.password.reveal() == "hunter2" and str(vllm.basic_auth.password) == "<secret>"


def test_target_without_interval_inherits_defaults(tmp_path):
    path = write(
        tmp_path,
        """
        defaults: {interval: 30s, timeout: 3s, retries: 4}
        targets:
          - {name: a, type: http, url: "http://a/metrics"}
        """,
    )
    (target,) = load_config(path).targets
    assert (target.interval, target.timeout, target.retries) == (30.0, 3.0, 4)


def test_target_with_its_own_interval_keeps_it(tmp_path):
    path = write(
        tmp_path,
        """
        defaults: {interval: 30s}
        targets:
          - {name: a, type: http, url: "http://a/metrics", interval: 1m, timeout: 20s, retries: 0}
        """,
    )
    (target,) = load_config(path).targets
    assert (target.interval, target.timeout, target.retries) == (60.0, 20.0, 0)


def test_builtin_defaults_apply_without_a_defaults_section(tmp_path):
    path = write(tmp_path, "targets: [{name: a, type: http, url: 'http://a/metrics'}]\n")
    config = load_config(path)
    (target,) = config.targets
    assert (target.interval, target.timeout, target.retries, target.prefix) == (15.0, 10.0, 2, "")
    assert config.listen == "127.0.0.1:9898"
    assert config.defaults.backoff == 0.25


def test_top_level_prefix_fills_targets_and_a_target_prefix_overrides_it(tmp_path):
    path = write(
        tmp_path,
        """
        prefix: gpu
        targets:
          - {name: a, type: http, url: "http://a/metrics"}
          - {name: b, type: http, url: "http://b/metrics", prefix: sglang}
          - {name: c, type: http, url: "http://c/metrics", prefix: ""}
        """,
    )
    assert [t.prefix for t in load_config(path).targets] == ["gpu", "sglang", ""]


def test_inherited_timeout_shrinks_to_a_shorter_target_interval(tmp_path):
    path = write(
        tmp_path,
        """
        defaults: {timeout: 10s}
        targets:
          - {name: fast, type: http, url: "http://a/metrics", interval: 2s}
        """,
    )
    (target,) = load_config(path).targets
    assert (target.interval, target.timeout) == (2.0, 2.0)


def test_builtin_timeout_shrinks_to_a_shorter_default_interval(tmp_path):
    path = write(tmp_path, "defaults: {interval: 5s}\ntargets: [{name: a, type: http, url: 'http://a/m'}]\n")
    config = load_config(path)
    assert config.defaults.timeout == 5.0
    assert config.targets[0].timeout == 5.0


def test_empty_targets_is_valid(tmp_path):
    assert load_config(write(tmp_path, "targets: []\n")).targets == []
    assert load_config(write(tmp_path, "listen: ':9898'\ntargets:\n", "b.yaml")).targets == []


def test_loading_the_same_file_twice_gives_equal_targets(tmp_path):
    path = write(tmp_path, "targets: [{name: a, type: http, url: 'http://a/m', labels: {x: y}}]\n")
    assert load_config(path).targets == load_config(path).targets
    changed = write(tmp_path, "targets: [{name: a, type: http, url: 'http://a/m', labels: {x: z}}]\n", "b.yaml")
    assert load_config(path).targets != load_config(changed).targets


def test_resolved_targets_stay_frozen(tmp_path):
    (target,) = load_config(write(tmp_path, "targets: [{name: a, type: http, url: 'http://a/m'}]\n")).targets
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        target.interval = 1.0


def test_env_vars_expand_with_defaults_and_double_dollar(tmp_path, monkeypatch):
    monkeypatch.setenv("VLLM_HOST", "10.0.0.7")
    monkeypatch.delenv("VLLM_PORT", raising=False)
    monkeypatch.setenv("POOL", "")
    path = write(
        tmp_path,
        """
        targets:
          - name: vllm
            type: http
            url: http://${VLLM_HOST}:${VLLM_PORT:-8000}/metrics
            interval: ${POLL_EVERY:-5s}
            labels:
              pool: ${POOL:-chat}
              cost: $$5 and $HOME stays
        """,
    )
    (target,) = load_config(path).targets
    assert isinstance(target, HTTPTarget)
    assert str(target.url) == "http://10.0.0.7:8000/metrics"
    assert target.interval == 5.0
    assert target.labels == {"pool": "chat", "cost": "$5 and $HOME stays"}


def test_env_vars_are_not_expanded_in_keys(tmp_path, monkeypatch):
    monkeypatch.setenv("TEAM", "ml")
    path = write(
        tmp_path,
        """
        targets:
          - name: a
            type: http
            url: http://a/metrics
            headers:
              X-${TEAM}: ${TEAM}
        """,
    )
    (target,) = load_config(path).targets
    assert isinstance(target, HTTPTarget) and target.headers == {"X-${TEAM}": "ml"}


def test_yaml_merge_keys_share_target_snippets(tmp_path):
    path = write(
        tmp_path,
        """
        x-backend: &backend
          type: http
          interval: 5s
          labels: {pool: chat}
        targets:
          - name: vllm-0
            <<: *backend
            url: http://10.0.0.1:8000/metrics
          - name: vllm-1
            <<: *backend
            url: http://10.0.0.2:8000/metrics
            interval: 10s
        """,
    )
    first, second = load_config(path).targets
    assert isinstance(second, HTTPTarget)
    assert (first.type, first.interval, first.labels) == ("http", 5.0, {"pool": "chat"})
    assert (second.interval, str(second.url)) == (10.0, "http://10.0.0.2:8000/metrics")


def test_merge_of_several_snippets_takes_the_first_one_that_has_a_key(tmp_path):
    path = write(
        tmp_path,
        """
        x-a: &a {interval: 5s}
        x-b: &b {interval: 7s, timeout: 1s, type: http}
        targets:
          - {name: t, url: "http://a/m", <<: [*a, *b]}
        """,
    )
    (target,) = load_config(path).targets
    assert (target.interval, target.timeout) == (5.0, 1.0)


def test_anchor_on_one_target_is_reused_by_the_next(tmp_path):
    path = write(
        tmp_path,
        """
        targets:
          - &vllm
            name: vllm-0
            type: http
            url: http://10.0.0.1:8000/metrics
          - <<: *vllm
            name: vllm-1
        """,
    )
    assert [t.name for t in load_config(path).targets] == ["vllm-0", "vllm-1"]


def test_example_config_parses():
    example = REPO / "config.example.yaml"
    config = load_config(example)
    assert isinstance(config, Config)
    assert len({target.name for target in config.targets}) == len(config.targets)


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:9898", ("127.0.0.1", 9898)),
        ("[::1]:9898", ("::1", 9898)),
        (":9898", ("", 9898)),
        ("localhost:1", ("localhost", 1)),
    ],
)
def test_listen_accepts_host_port_forms(listen, expected):
    assert parse_config(f"listen: '{listen}'\n").listen_address == expected


# -- mistakes ------------------------------------------------------------------------------------
# Each bad config is a file, tests/testdata/config/invalid-*.yml, with its expected error in
# expected.yaml beside it (tests/unit/config/test_config_invalid.py). Here: what cannot be such a file.


def test_parse_config_names_the_given_filename():
    with pytest.raises(ConfigError) as caught:
        parse_config("listen: 1\n", "inline.yaml")
    assert str(caught.value).startswith("inline.yaml:1: listen: ")
    assert parse_config("targets: []\n").source == "<string>"


def test_missing_file_is_a_config_error(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: cannot read the config file: No such file or directory"


def test_issue_text_leaves_out_what_it_does_not_know():
    assert str(ConfigIssue("c.yaml", 3, "listen", "bad")) == "c.yaml:3: listen: bad"
    assert str(ConfigIssue("c.yaml", None, "", "unreadable")) == "c.yaml: unreadable"
    error = ConfigError([ConfigIssue("c.yaml", 9, "b", "two"), ConfigIssue("c.yaml", 2, "a", "one")])
    assert str(error) == "c.yaml:2: a: one\nc.yaml:9: b: two"
