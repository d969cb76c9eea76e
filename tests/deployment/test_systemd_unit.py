"""The shipped systemd unit: systemd accepts it, rates its hardening "OK", and runs our command as the CLI parses it."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

from helpers.support import REPO, require_tool

from exporter.cli import build_parser

UNIT = REPO / "systemd" / "inference-exporter.service"
#: Where docs/deployment.md installs the command; the unit runs it from there.
INSTALLED = "/opt/inference-exporter/bin/inference-exporter"


def exec_start() -> list[str]:
    lines = [line for line in UNIT.read_text().splitlines() if line.startswith("ExecStart=")]
    assert len(lines) == 1
    return shlex.split(lines[0].removeprefix("ExecStart="))


def test_unit_passes_systemd_analyze_verify(tmp_path):
    analyze = require_tool("systemd-analyze")
    # verify also checks that ExecStart's program exists, and /opt/inference-exporter is not installed
    # here: verify a copy that runs this checkout's command instead, identical otherwise.
    here = Path(sys.executable).with_name("inference-exporter")
    assert here.is_file(), f"{here}: the package is not installed in this Python's environment"
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace(f"ExecStart={INSTALLED} ", f"ExecStart={here} "))
    assert copy.read_text() != UNIT.read_text()
    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == "", "systemd-analyze verify warned"


def test_unit_hardening_exposure_is_2_0_or_lower():
    analyze = require_tool("systemd-analyze")
    result = subprocess.run(
        [analyze, "security", "--offline=yes", "--no-pager", "--threshold=20", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=UNIT.parent,
    )
    match = re.search(r"Overall exposure level for inference-exporter\.service: (\d+\.\d+) (\w+)", result.stdout)
    assert match, result.stdout + result.stderr
    print(f"systemd-analyze security --offline=yes: exposure {match[1]} {match[2]}")
    assert float(match[1]) <= 2.0 and match[2] == "OK"
    assert result.returncode == 0, "exposure above --threshold=20 (2.0)"
    assert f"`systemd-analyze security` rates it {match[1]}" in (REPO / "docs" / "deployment.md").read_text(), (
        "docs/deployment.md states another figure"
    )


def test_unit_command_line_is_one_the_cli_accepts():
    command = exec_start()
    assert command[0] == INSTALLED
    # $INFERENCE_EXPORTER_OPTS comes from the environment file; unset, systemd drops it.
    args = [arg for arg in command[1:] if arg != "$INFERENCE_EXPORTER_OPTS"]
    parsed = build_parser().parse_args(args)
    assert parsed.command == "run"
    assert parsed.config == Path("/etc/inference-exporter/config.yaml")


def test_example_environment_options_are_ones_the_cli_accepts():
    example = (REPO / "systemd" / "environment.example").read_text()
    options = re.search(r"^INFERENCE_EXPORTER_OPTS=(.*)$", example, re.MULTILINE)
    assert options is not None
    documented = re.findall(r"^#\s+(--\S+(?: \S+)?)\s{2,}", example, re.MULTILINE)
    assert documented, "the example documents no options"
    for option in documented:
        build_parser().parse_args(["run", *shlex.split(option)])
