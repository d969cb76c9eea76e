"""The Grafana dashboard and the Prometheus rules: valid PromQL, alerts that fire on series written for
them (promtool), and every metric name they use one the daemon serves on the captured payloads."""

from __future__ import annotations

import json
import re
import subprocess

import yaml
from helpers.fake_nvml import FakeNVML, eight_gpus
from helpers.support import REPO, require_tool, scrape, simulated_bodies, wait_until
from helpers.upstream import fixtures_config
from prometheus_client.parser import text_string_to_metric_families

import exporter.sources.nvml.source as nvml_source

DASHBOARDS = REPO / "dashboards"
DASHBOARD = DASHBOARDS / "inference-exporter.json"
RULES = DASHBOARDS / "inference-exporter.rules.yml"
RULES_TEST = DASHBOARDS / "inference-exporter.rules.test.yml"

#: The dashboard's template variables as an operator with the default config has them.
VARIABLES = {"prefix": "", "backend": ".+", "model": ".*", "__rate_interval": "1m", "datasource": "prometheus"}

_KEYWORDS = frozenset(
    {
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "offset",
        "bool",
        "and",
        "or",
        "unless",
        "inf",
        "nan",
    }
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.])[a-zA-Z_:][a-zA-Z0-9_:]*")


def substitute(text: str) -> str:
    """Grafana's `$name` and `${name}` variables replaced by their values."""
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: VARIABLES[m.group(1) or m.group(2)], text)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers that are not functions, aggregations,
    keywords, label names (in `{...}` or `by (...)`), durations or numbers."""
    expr = _STRING.sub('""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = _LABEL_LIST.sub("", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    names = set()
    for match in _IDENTIFIER.finditer(expr):
        if not expr[match.end() :].lstrip().startswith("(") and match.group().lower() not in _KEYWORDS:
            names.add(match.group())
    return names


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_queries() -> list[str]:
    """Every PromQL query in the dashboard, variables substituted: panel targets and variable queries."""
    queries = [substitute(t["expr"]) for p in dashboard()["panels"] for t in p.get("targets", [])]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            written = re.fullmatch(r"label_values\((.*),\s*\w+\)", variable["definition"])
            assert written is not None, variable["definition"]
            selector = written.group(1)
            queries.append(substitute(selector))
    return queries


def rule_queries() -> dict[str, str]:
    rules = yaml.safe_load(RULES.read_text())
    return {rule["alert"]: rule["expr"] for group in rules["groups"] for rule in group["rules"]}


def test_the_tokenizer_finds_metric_names_and_nothing_else():
    expr = (
        'histogram_quantile(0.95, sum by (backend, le) (rate(ttft_bucket{backend=~"a|b", x="y{z}"}[5m] offset 1h)))'
        " / on (target) group_left(model) up > bool 1e3 and foo:bar"
    )
    assert metric_names(expr) == {"ttft_bucket", "up", "foo:bar"}


def test_the_rules_pass_promtool_check():
    promtool = require_tool("promtool")
    result = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_fires_each_alert_on_series_written_for_it():
    promtool = require_tool("promtool")
    result = subprocess.run(
        [promtool, "test", "rules", RULES_TEST.name], cwd=DASHBOARDS, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    tests = yaml.safe_load(RULES_TEST.read_text())["tests"]
    fired = {case["alertname"] for test in tests for case in test["alert_rule_test"] if case["exp_alerts"]}
    assert fired == set(rule_queries())


def test_every_dashboard_query_is_valid_promql(tmp_path):
    promtool = require_tool("promtool")
    as_rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": query} for i, query in enumerate(dashboard_queries())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(as_rules))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dashboard_selects_by_backend_and_model_in_every_inference_panel():
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["backend"]["includeAll"] and variables["model"]["includeAll"]
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            if not re.search(r"gpu_|inference_exporter_", expr):
                assert 'backend=~"$backend"' in expr and 'model=~"$model"' in expr, f"{panel['title']}: {expr}"


async def test_every_metric_name_in_the_dashboard_and_rules_is_served_on_the_simulated_backends(
    upstream, start_daemon, monkeypatch
):
    # Every simulated backend's payload, plus the GPUs of a fake NVML host (8 GPUs, one MIG-partitioned) where
    # one XID error has happened, so that its counter exists.
    gpus = FakeNVML(eight_gpus())
    gpus.xid_events.append((3, 79))
    monkeypatch.setattr(nvml_source, "load_binding", lambda: gpus)
    daemon = await start_daemon(
        fixtures_config(upstream, simulated_bodies()) + "  - {name: gpus, type: nvml, interval: 500ms}\n"
    )
    await wait_until(lambda: all(snap.up is not None for snap in daemon.store.snapshots()))
    await wait_until(lambda: daemon.store.get("gpus").polls >= 2)  # events are read from the second poll on
    assert daemon.store.get("gpus").up
    served = {
        sample.name for family in text_string_to_metric_families(await scrape(daemon)) for sample in family.samples
    }
    used = {name for query in [*dashboard_queries(), *rule_queries().values()] for name in metric_names(query)}
    assert any(name.startswith("gpu_") for name in used)
    assert used - served == set()
