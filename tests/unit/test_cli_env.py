"""Options from INFERENCE_EXPORTER_* environment variables, as a container sets them: the real command in a
subprocess, a flag beating its variable, a bad variable named in a usage error, and every variable in --help."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys

import aiohttp
import pytest
from helpers.support import REPO, free_port, wait_until

from exporter.cli import build_parser
from exporter.envflags import RESERVED, EnvArgumentParser, variable_for, variable_of

#: A target nothing listens for: it is polled (and fails) at once, so it shows in /metrics.
UNREACHABLE = "http://127.0.0.1:1/metrics"


def clean_env(**variables: str) -> dict[str, str]:
    """This environment without any option variable the developer may have set, plus `variables`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERENCE_EXPORTER_") or k in RESERVED}
    return env | {f"INFERENCE_EXPORTER_{name}": value for name, value in variables.items()}


def cli(*args: str, **variables: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        cwd=REPO,
        env=clean_env(**variables),
        capture_output=True,
        text=True,
        timeout=60,
    )


def config_with_target(tmp_path, name: str):
    path = tmp_path / f"{name}.yaml"
    path.write_text(f'targets:\n  - {{name: {name}, type: http, url: "{UNREACHABLE}", interval: 1s, retries: 0}}\n')
    return path


def subcommands() -> dict[str, argparse.ArgumentParser]:
    (commands,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(commands.choices)


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]


async def metrics(port: int) -> str | None:
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                return await response.text()
    except aiohttp.ClientConnectionError:
        return None


async def healthy(port: int) -> bool:
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                return response.status == 200
    except aiohttp.ClientConnectionError:
        return False


async def run_until(
    args: list[str], variables: dict[str, str], port: int, ready, while_running=None
) -> tuple[str, str]:
    """Start `run ARGS` with the variables, wait until `ready(/metrics text)`, await `while_running()`, stop it
    with SIGTERM; (metrics, log)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "exporter",
        "run",
        *args,
        cwd=REPO,
        env=clean_env(**variables),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:

        async def served():
            text = await metrics(port)
            return text if text is not None and ready(text) else None

        text = await wait_until(served, timeout=30, interval=0.2)
        if while_running is not None:
            await while_running()
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 15)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0
    assert process.stderr is not None
    return text, (await process.stderr.read()).decode()


async def test_run_takes_each_option_from_its_variable(tmp_path):
    port = free_port()
    variables = {
        "CONFIG": str(config_with_target(tmp_path, "from_variable")),
        "LISTEN": f"127.0.0.1:{port}",
        "DEMO": "yes",
        "LOG_LEVEL": "warning",
        "LOG_FORMAT": "console",
    }
    text, log = await run_until(
        [],
        variables,
        port,
        ready=lambda text: (
            'inference_exporter_target_up{target="from_variable"}' in text
            and 'inference_exporter_target_up{target="demo-vllm"}' in text
        ),
    )
    assert 'inference_exporter_target_up{target="from_variable"} 0.0' in text
    # warning and up, as console lines: the failing target is there, the info event at start is not
    assert "poll failed" in log and "inference-exporter started" not in log, log
    assert not any(line.startswith("{") for line in log.splitlines()), log


async def test_a_flag_on_the_command_line_beats_its_variable(tmp_path):
    flag_port, variable_port = free_port(), free_port()
    variables = {
        "CONFIG": str(config_with_target(tmp_path, "from_variable")),
        "LISTEN": f"127.0.0.1:{variable_port}",
        "LOG_LEVEL": "error",
        "LOG_FORMAT": "console",
        "DEMO": "false",
    }
    flags = [
        "--config",
        str(config_with_target(tmp_path, "from_flag")),
        "--listen",
        f"127.0.0.1:{flag_port}",
        "--log-level",
        "info",
        "--log-format",
        "json",
    ]
    served_on_variable_port = []

    async def probe_variable_port():
        served_on_variable_port.append(await healthy(variable_port))

    text, log = await run_until(
        flags,
        variables,
        flag_port,
        ready=lambda text: 'target="from_flag"' in text,
        while_running=probe_variable_port,
    )
    assert served_on_variable_port == [False]
    assert 'target="from_variable"' not in text and 'target="demo-' not in text
    events = [line for line in log.splitlines() if line.startswith("{")]
    assert any('"inference-exporter started"' in line for line in events), log


@pytest.mark.parametrize(
    ("value", "demo"),
    [
        ("true", True),
        ("1", True),
        ("yes", True),
        ("Yes", True),
        ("false", False),
        ("0", False),
        ("NO", False),
        ("", False),
    ],
)
def test_a_switch_takes_true_or_false_words_from_its_variable(monkeypatch, value, demo):
    monkeypatch.setenv("INFERENCE_EXPORTER_DEMO", value)
    assert build_parser().parse_args(["run"]).demo is demo
    assert build_parser().parse_args(["run", "--demo"]).demo is True


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "LOG_LEVEL",
            "loud",
            "INFERENCE_EXPORTER_LOG_LEVEL: invalid choice 'loud' (choose from debug, info, warning, error)",
        ),
        ("LOG_FORMAT", "xml", "INFERENCE_EXPORTER_LOG_FORMAT: invalid choice 'xml' (choose from auto, json, console)"),
        ("LISTEN", "9898", "INFERENCE_EXPORTER_LISTEN: expected HOST:PORT"),
        ("DEMO", "maybe", "INFERENCE_EXPORTER_DEMO: expected true or false (or 1/0, yes/no), got 'maybe'"),
    ],
)
def test_a_bad_variable_is_a_usage_error_that_names_it(variable, value, message):
    result = cli("run", **{variable: value})
    assert result.returncode == 2
    assert f"inference-exporter run: error: {message}" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_a_flag_makes_a_bad_variable_irrelevant_and_an_empty_one_counts_as_unset():
    example = str(REPO / "config.example.yaml")
    assert cli("check-config", example, "--log-level", "warning", LOG_LEVEL="loud").returncode == 0
    assert cli("check-config", example, LOG_LEVEL="", LOG_FORMAT="", WEB_CONFIG_FILE="").returncode == 0


def test_other_commands_share_run_s_variables(tmp_path):
    path = config_with_target(tmp_path, "from_variable")
    result = cli("explain", "--target", "elsewhere", CONFIG=str(path))
    assert result.returncode == 1
    assert f"{path}: no target named elsewhere; known: from_variable" in result.stderr
    web = tmp_path / "web.yml"
    web.write_text("basic_auth_users: [not a mapping]\n")
    result = cli("check-config", str(REPO / "config.example.yaml"), WEB_CONFIG_FILE=str(web))
    assert result.returncode == 1 and str(web) in result.stderr


def test_a_required_option_may_come_from_the_flag_or_the_variable():
    result = cli("once")
    assert result.returncode == 2
    assert "the following arguments are required: --config (or INFERENCE_EXPORTER_CONFIG)" in result.stderr


def test_help_names_every_option_s_variable():
    commands = subcommands()
    run_variables = {action.option_strings[-1]: variable_of(action) for action in options(commands["run"])}
    assert set(run_variables) == {"--log-level", "--log-format", "--config", "--listen", "--web.config.file", "--demo"}
    for flag, name in run_variables.items():
        assert name == variable_for(flag), f"run {flag} has no variable (use add_env_argument)"
        assert name not in RESERVED
    taken_by: dict[str, list[str]] = {}
    for command, parser in commands.items():
        out = cli(command, "--help").stdout
        for action in options(parser):
            flag = action.option_strings[-1]
            if flag in run_variables:  # the same option elsewhere takes the same variable
                assert variable_of(action) == run_variables[flag], f"{command} {flag}"
            variable = variable_of(action)
            if variable:
                assert re.search(rf"\[env: {variable}\]\n", out), f"{command} --help: {flag}"
                taken_by.setdefault(variable, []).append(command)
    # docs/configuration.md's table: one row per variable, with its option and the commands that take it
    readme = (REPO / "docs" / "configuration.md").read_text()
    rows = dict(re.findall(r"^\| `(INFERENCE_EXPORTER_\w+)` \| `--\S+[^|]*` \| ([a-z, -]+) \|", readme, re.MULTILINE))
    assert rows == {name: ", ".join(commands) for name, commands in taken_by.items()}


def test_a_secret_option_s_value_never_appears_in_its_error(monkeypatch, capsys):
    parser = EnvArgumentParser(prog="p")
    parser.add_env_argument("--token", secret=True, type=int, help="a secret")
    parser.add_env_argument("--mode", secret=True, choices=("a", "b"), help="a secret choice")
    for name, value in (("INFERENCE_EXPORTER_TOKEN", "hunter2-not-a-number"), ("INFERENCE_EXPORTER_MODE", "hunter2")):
        monkeypatch.setenv(name, value)
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args([])
        monkeypatch.delenv(name)
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert name in err and "hunter2" not in err and "not shown" in err
