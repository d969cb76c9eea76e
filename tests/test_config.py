"""The config file as a user writes it: what loads, what it resolves to, and errors that say file:line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import trustme

from exporter.config import Config, ConfigError, ConfigIssue, load_config, parse_config
from exporter.sources import KINDS

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def errors(path: Path) -> list[str]:
    """The lines a user sees for a bad file."""
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == "\n".join(str(issue) for issue in caught.value.issues)
    return str(caught.value).splitlines()


def one_error(path: Path) -> str:
    found = errors(path)
    assert len(found) == 1, found
    return found[0]


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
    assert (tgi.interval, tgi.timeout, tgi.retries, tgi.prefix) == (5.0, 2.0, 1, "")
    assert tgi.labels == {"pool": "chat", "gpu": "0"}
    assert tgi.headers == {"X-Team": "ml"}
    assert tgi.bearer_token_file == tmp_path / "token"
    assert tgi.tls is not None and tgi.tls.server_name == "tgi.internal"
    assert tgi.body_size_limit == 16 * 1024 * 1024
    assert tgi.sample_limit == 5000
    assert vllm.basic_auth is not None and vllm.basic_auth.password == "hunter2"


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
    with pytest.raises(Exception):
        target.interval = 1.0  # type: ignore[misc]


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
    assert target.url == "http://10.0.0.7:8000/metrics"
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
    assert load_config(path).targets[0].headers == {"X-${TEAM}": "ml"}


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
    assert (first.type, first.interval, first.labels) == ("http", 5.0, {"pool": "chat"})
    assert (second.interval, second.url) == (10.0, "http://10.0.0.2:8000/metrics")


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
    [("127.0.0.1:9898", ("127.0.0.1", 9898)), ("[::1]:9898", ("::1", 9898)), (":9898", ("", 9898)), ("localhost:1", ("localhost", 1))],
)
def test_listen_accepts_host_port_forms(listen, expected):
    assert parse_config(f"listen: '{listen}'\n").listen_address == expected


def test_parse_config_names_the_given_filename():
    with pytest.raises(ConfigError) as caught:
        parse_config("listen: 1\n", "inline.yaml")
    assert str(caught.value).startswith("inline.yaml:1: listen: ")
    assert parse_config("targets: []\n").source == "<string>"


# -- each mistake, at its line --------------------------------------------------------------------


def test_bad_yaml_syntax_names_its_line(tmp_path):
    path = write(
        tmp_path,
        """
        targets:
          - name: a
            type: http
            url: "http://a/metrics
        listen: x
        """,
    )
    assert one_error(path) == (
        f"{path}:4: invalid YAML at column 10: while scanning a quoted scalar that starts here, found unexpected end of stream"
    )


def test_bad_indentation_names_its_line(tmp_path):
    path = write(tmp_path, "targets:\n  - name: a\n    type: http\n   url: http://a/m\n")
    assert one_error(path).startswith(f"{path}:4: invalid YAML")


def test_unknown_key_suggests_the_closest_and_lists_the_valid_ones(tmp_path):
    path = write(
        tmp_path,
        """
        targets:
          - name: a
            type: http
            url: http://a/metrics
            intervl: 5s
        """,
    )
    assert one_error(path) == (
        f"{path}:5: targets[0].intervl: unknown key (did you mean 'interval'?); expected one of: allow_families, "
        "backoff, basic_auth, bearer_token, bearer_token_file, body_size_limit, deny_families, headers, interval, "
        "label_limit, label_name_length_limit, label_value_length_limit, labels, metric_relabel_configs, model, name, prefix, profile, raw, retries, sample_limit, timeout, tls, type, url"
    )


def test_unknown_key_in_nested_section_lists_that_sections_keys(tmp_path):
    path = write(tmp_path, "defaults:\n  interval: 5s\n  retry: 3\n")
    assert one_error(path) == (
        f"{path}:3: defaults.retry: unknown key (did you mean 'retries'?); expected one of: backoff, interval, retries, timeout"
    )


def test_unknown_top_level_key(tmp_path):
    path = write(tmp_path, "listen: ':9898'\nsource: elsewhere.yaml\ntarget: []\n")
    found = errors(path)
    assert found[0].startswith(f"{path}:2: source: unknown key; expected one of: defaults, listen, overview, prefix, profile_files, server, targets")
    assert found[1].startswith(f"{path}:3: target: unknown key (did you mean 'targets'?)")


def test_bad_duration_names_its_line(tmp_path):
    path = write(
        tmp_path,
        """
        targets:
          - name: a
            type: http
            url: http://a/metrics
            interval: 5 seconds
        """,
    )
    assert one_error(path) == (
        f"{path}:5: targets[0].interval: expected a duration with a unit like 500ms, 5s or 1m, got '5 seconds'"
    )


def test_duration_without_unit_is_refused(tmp_path):
    path = write(tmp_path, "defaults:\n  timeout: 5\n")
    assert one_error(path) == f"{path}:2: defaults.timeout: expected a duration with a unit like 500ms, 5s or 1m, got 5"


def test_duplicate_target_name_points_at_both(tmp_path):
    path = write(
        tmp_path,
        """
        targets:
          - name: vllm
            type: http
            url: http://a/metrics
          - name: sglang
            type: http
            url: http://b/metrics
          - type: http
            name: vllm
            url: http://c/metrics
        """,
    )
    assert one_error(path) == f"{path}:9: targets[2].name: duplicate target name 'vllm' (first defined at line 2)"


def test_missing_secret_file_names_the_file(tmp_path):
    path = write(
        tmp_path,
        """
        targets:
          - name: a
            type: http
            url: http://a/metrics
            bearer_token_file: /nonexistent/token
        """,
    )
    assert one_error(path) == (
        f"{path}:5: targets[0].bearer_token_file: file '/nonexistent/token' does not exist or is not a regular file"
    )


def test_missing_password_file_inside_basic_auth(tmp_path):
    path = write(
        tmp_path,
        """
        targets:
          - name: a
            type: http
            url: http://a/metrics
            basic_auth:
              username: u
              password_file: /nonexistent/pw
        """,
    )
    assert one_error(path).startswith(f"{path}:7: targets[0].basic_auth.password_file: file '/nonexistent/pw' does not exist")


def test_unknown_target_type_lists_the_known_ones(tmp_path):
    path = write(
        tmp_path,
        """
        targets:
          - name: a
            type: http
            url: http://a/metrics
          - name: b
            url: http://b/metrics
            type: htp
        """,
    )
    known = ", ".join(sorted(KINDS))  # every registered kind, whichever modules are in this build
    assert "http" in known
    assert one_error(path) == f"{path}:7: targets[1].type: unknown target type 'htp'; expected one of: {known}"


def test_missing_type_is_reported_at_the_target(tmp_path):
    path = write(tmp_path, "targets:\n  - name: a\n    url: http://a/metrics\n")
    assert one_error(path) == f"{path}:2: targets[0]: missing required key 'type'; expected one of: {', '.join(sorted(KINDS))}"


def test_missing_required_key_is_reported_at_the_target(tmp_path):
    path = write(
        tmp_path,
        """
        listen: 127.0.0.1:9898
        targets:
          - name: a
            type: http
            interval: 5s
        """,
    )
    assert one_error(path) == f"{path}:3: targets[0]: missing required key 'url'"


def test_duplicate_yaml_key_is_an_error(tmp_path):
    path = write(
        tmp_path,
        """
        targets:
          - name: a
            type: http
            url: http://a/metrics
            interval: 5s
            interval: 10s
        """,
    )
    assert one_error(path) == f"{path}:6: targets[0].interval: duplicate key 'interval' (first at line 5)"


def test_unset_env_var_names_the_variable_and_its_line(tmp_path, monkeypatch):
    monkeypatch.delenv("VLLM_URL", raising=False)
    path = write(
        tmp_path,
        """
        targets:
          - name: a
            type: http
            url: ${VLLM_URL}
        """,
    )
    error = one_error(path)
    assert error.startswith(f"{path}:4: targets[0].url: environment variable 'VLLM_URL' is not set")
    assert "${VLLM_URL:-default}" in error


def test_unfinished_env_reference_is_an_error(tmp_path):
    path = write(tmp_path, "prefix: ${oops\n")
    assert one_error(path).startswith(f"{path}:1: prefix: an unfinished ${{...}}")


def test_timeout_greater_than_interval_is_reported_at_the_timeout(tmp_path):
    path = write(
        tmp_path,
        """
        targets:
          - name: a
            type: http
            url: http://a/metrics
            interval: 5s
            timeout: 10s
        """,
    )
    assert one_error(path) == (
        f"{path}:6: targets[0].timeout: timeout 10s is greater than interval 5s; a poll must end before the next one starts"
    )


def test_timeout_greater_than_the_default_interval(tmp_path):
    path = write(
        tmp_path,
        """
        defaults:
          interval: 10s
        targets:
          - name: a
            type: http
            url: http://a/metrics
            timeout: 30s
        """,
    )
    assert one_error(path) == (
        f"{path}:7: targets[0].timeout: timeout 30s is greater than interval 10s (from defaults.interval); "
        "a poll must end before the next one starts"
    )


def test_default_timeout_greater_than_default_interval(tmp_path):
    path = write(tmp_path, "defaults:\n  interval: 5s\n  timeout: 6s\n")
    assert one_error(path) == (
        f"{path}:3: defaults.timeout: timeout 6s is greater than interval 5s; a poll must end before the next one starts"
    )


@pytest.mark.parametrize(
    "listen",
    ["9898", "'127.0.0.1'", "'127.0.0.1:0'", "'127.0.0.1:70000'", "'::1:9898'", "'[::zz]:9898'", "'bad host:9898'", "':http'"],
)
def test_bad_listen_address(tmp_path, listen):
    path = write(tmp_path, f"prefix: ''\nlisten: {listen}\n")
    assert one_error(path).startswith(f"{path}:2: listen: expected HOST:PORT like 127.0.0.1:9898, [::1]:9898 or :9898")


def test_bad_prefix(tmp_path):
    path = write(tmp_path, "prefix: vllm:x\ntargets:\n  - {name: a, type: http, url: 'http://a/m', prefix: 9x}\n")
    found = errors(path)
    assert found[0].startswith(f"{path}:1: prefix: expected a metric name prefix")
    assert found[1].startswith(f"{path}:3: targets[0].prefix: expected a metric name prefix")


def test_bad_label_names_are_each_reported_at_their_line(tmp_path):
    path = write(
        tmp_path,
        """
        targets:
          - name: a
            type: http
            url: http://a/metrics
            labels:
              pool: chat
              1gpu: "0"
              target: x
        """,
    )
    assert errors(path) == [
        f"{path}:7: targets[0].labels.1gpu: label name '1gpu' is not a valid Prometheus label name",
        f"{path}:8: targets[0].labels.target: label name 'target' is reserved: every sample already carries it",
    ]


def test_number_where_text_is_expected_says_to_quote_it(tmp_path):
    path = write(tmp_path, "targets:\n  - {name: a, type: http, url: 'http://a/m', labels: {version: 1.10}}\n")
    assert one_error(path) == (
        f'{path}:2: targets[0].labels.version: expected a string, got 1.1; write it in quotes, "1.10", to keep it as text'
    )


def test_retries_out_of_range(tmp_path):
    path = write(tmp_path, "defaults:\n  retries: 11\n")
    assert one_error(path) == f"{path}:2: defaults.retries: expected a value <= 10, got 11"


def test_bad_value_inside_a_merged_snippet_points_at_the_snippet(tmp_path):
    path = write(
        tmp_path,
        """
        x-base: &base
          type: http
          interval: soon
        targets:
          - name: a
            <<: *base
            url: http://a/metrics
        """,
    )
    assert one_error(path).startswith(f"{path}:3: targets[0].interval: expected a duration")


def test_empty_file_is_an_error(tmp_path):
    path = write(tmp_path, "# nothing but a comment\n")
    assert one_error(path).startswith(f"{path}: the file is empty")


def test_top_level_must_be_a_mapping(tmp_path):
    path = write(tmp_path, "- name: a\n  type: http\n")
    assert one_error(path).startswith(f"{path}:1: expected a mapping at the top level")


def test_targets_must_be_a_list(tmp_path):
    path = write(tmp_path, "listen: ':9898'\ntargets:\n  name: a\n")
    assert one_error(path).startswith(f"{path}:2: targets: expected a list")


def test_missing_file_is_a_config_error(tmp_path):
    path = tmp_path / "nope.yaml"
    assert one_error(path) == f"{path}: cannot read the config file: No such file or directory"


def test_unsupported_yaml_tag_is_an_error(tmp_path):
    path = write(tmp_path, "listen: ':9898'\nprefix: !vault abc\n")
    assert one_error(path).startswith(f"{path}:2: prefix: cannot read this value as YAML tag '!vault'")


def test_recursive_alias_is_an_error_not_a_hang(tmp_path):
    path = write(tmp_path, "targets: &loop\n  - *loop\n")
    assert any("alias" in line for line in errors(path))


def test_several_mistakes_are_all_reported_at_once_sorted_by_line(tmp_path, monkeypatch):
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    path = write(
        tmp_path,
        """
        listen: localhost
        defaults:
          interval: 15s
        targets:
          - name: vllm
            type: http
            url: ${NOT_SET_ANYWHERE}
            intervl: 5s
          - name: sglang
            type: htp
            url: http://b/metrics
          - name: vllm
            type: http
            url: http://c/metrics
            timeout: 20s
            labels: {"bad-label": x}
          - name: tgi
            type: http
            interval: 5 seconds
        """,
    )
    found = errors(path)
    where = [line.split(": ", 2)[:2] for line in found]
    assert where == [
        [f"{path}:1", "listen"],
        [f"{path}:7", "targets[0].url"],
        [f"{path}:8", "targets[0].intervl"],
        [f"{path}:10", "targets[1].type"],
        [f"{path}:12", "targets[2].name"],
        [f"{path}:15", "targets[2].timeout"],
        [f"{path}:16", "targets[2].labels.bad-label"],
        [f"{path}:17", "targets[3]"],
        [f"{path}:19", "targets[3].interval"],
    ]
    assert "missing required key 'url'" in found[7]


def test_secret_values_never_appear_in_errors(tmp_path):
    path = write(
        tmp_path,
        """
        targets:
          - name: a
            type: http
            url: http://a/metrics
            bearer_token: 987654321
            headers:
              Authorization: 123456789
            basic_auth:
              username: u
              password: 555666777
              pasword: hunter2hunter2
          - name: b
            type: http
            url: http://b/metrics
            basic_auth: s3cr3t-in-the-wrong-place
        """,
    )
    text = "\n".join(errors(path))
    assert "targets[0].bearer_token: expected a string" in text
    assert "targets[0].headers.Authorization: expected a string" in text
    assert "targets[0].basic_auth.password: expected a string" in text
    assert "targets[0].basic_auth.pasword: unknown key (did you mean 'password'?)" in text
    for secret in ("987654321", "123456789", "555666777", "hunter2hunter2", "s3cr3t-in-the-wrong-place"):
        assert secret not in text


def test_issue_text_leaves_out_what_it_does_not_know():
    assert str(ConfigIssue("c.yaml", 3, "listen", "bad")) == "c.yaml:3: listen: bad"
    assert str(ConfigIssue("c.yaml", None, "", "unreadable")) == "c.yaml: unreadable"
    error = ConfigError([ConfigIssue("c.yaml", 9, "b", "two"), ConfigIssue("c.yaml", 2, "a", "one")])
    assert str(error) == "c.yaml:2: a: one\nc.yaml:9: b: two"
