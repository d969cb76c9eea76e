"""What the Dockerfile relies on, checked without docker: the wheel it installs, and the user the chart expects."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile

import yaml
from helpers.support import REPO

DOCKERFILE = REPO / "Dockerfile"


def test_the_wheel_runs_outside_the_checkout_with_its_bundled_config(tmp_path):
    # The image's default command (`run --listen :9898`) uses the config bundled in the wheel.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--disable-pip-version-check",
            "--wheel-dir",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("inference_exporter-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert "exporter/config.example.yaml" in names
    assert re.search(r"^inference-exporter = exporter\.cli:main$", entry_points, re.MULTILINE)

    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--disable-pip-version-check",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
        timeout=300,
    )
    env = dict(os.environ, PYTHONPATH=str(site))
    probe = "from exporter.cli import bundled_config; print(bundled_config())"
    found = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=tmp_path, check=True
    )
    bundled = found.stdout.strip()
    assert bundled.startswith(str(site)), bundled
    check = subprocess.run(
        [sys.executable, "-m", "exporter", "check-config", bundled],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert check.returncode == 0, check.stderr


def test_image_user_is_the_unprivileged_uid_the_chart_runs_as():
    text = DOCKERFILE.read_text()
    (user,) = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0, "a numeric, non-root USER lets Kubernetes check runAsNonRoot"
    values = yaml.safe_load((REPO / "helm" / "inference-exporter" / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == int(uid)
    assert values["podSecurityContext"]["runAsGroup"] == int(gid)
    assert f"--uid {uid}" in text
