"""The command as a user runs it: check-config, once, run (with --demo), and a clean stop on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys

import aiohttp
from helpers.leaks import LEAKS
from helpers.support import REPO, daemon_url, free_port, wait_until

OWN_FAMILIES = ("inference_exporter_", "process_", "python_")


async def command(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    """Run `python -m exporter ARGS` without blocking the loop (the test's upstreams live in it)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "exporter",
        *args,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    LEAKS.search("command", out + err)
    assert process.returncode is not None  # it exited: communicate() waits for that
    return process.returncode, out.decode(), err.decode()


def without_own_families(text: str) -> list[str]:
    return [
        line
        for line in text.splitlines()
        if not (line.startswith("# ") and line.split(" ")[2].startswith(OWN_FAMILIES))
        and not line.startswith(OWN_FAMILIES)
    ]


def test_help_explains_each_command():
    out = subprocess.run(
        [sys.executable, "-m", "exporter", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for name in ("run", "check-config", "once"):
        assert name in out
    run_help = subprocess.run(
        [sys.executable, "-m", "exporter", "run", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for flag in ("--config", "--listen", "--web.config.file", "--demo", "--log-level", "--log-format"):
        assert flag in run_help


async def test_check_config_accepts_the_bundled_example():
    code, out, err = await command("check-config", str(REPO / "config.example.yaml"))
    assert code == 0, err
    assert "valid" in out


async def test_check_config_reports_every_error_with_file_and_line_and_exits_1(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "defaults:\n  interval: 5 seconds\ntargets:\n  - name: a\n    type: http\n    url: http://a/m\n    intervl: 1s\n"
    )
    code, _out, err = await command("check-config", str(path))
    assert code == 1
    lines = err.strip().splitlines()
    assert lines[0].startswith(f"{path}:2: defaults.interval:")
    assert lines[1].startswith(f"{path}:7: targets[0].intervl: unknown key")


async def test_once_prints_what_the_daemon_serves(upstream, start_daemon, tmp_path):
    config = f"""
defaults: {{interval: 5s, timeout: 2s}}
targets:
  - {{name: vllm, type: http, url: "{upstream.url}/simulated/vllm", labels: {{pool: chat}}}}
  - {{name: tgi, type: http, url: "{upstream.url}/simulated/tgi"}}
"""
    path = tmp_path / "once.yaml"
    path.write_text(config)
    code, once_text, err = await command("once", "--config", str(path), "--log-level", "warning")
    assert code == 0, err

    daemon = await start_daemon(config)
    await wait_until(lambda: all(snap.up for snap in daemon.store.snapshots()))
    async with aiohttp.ClientSession() as session, session.get(daemon_url(daemon)) as response:
        served = await response.text()
    assert without_own_families(once_text) == without_own_families(served)
    assert 'vllm_num_requests_running{engine="0",model_name="Qwen/Qwen3-0.6B",pool="chat",target="vllm"} ' in once_text
    assert 'inference_exporter_target_up{target="tgi"} 1.0' in once_text


async def test_once_exits_1_and_names_the_failed_target(upstream, tmp_path):
    path = tmp_path / "once.yaml"
    path.write_text(
        f"""
defaults: {{interval: 2s, timeout: 1s, retries: 0}}
targets:
  - {{name: good, type: http, url: "{upstream.url}/simulated/vllm"}}
  - {{name: bad, type: http, url: "{upstream.url}/status/503"}}
"""
    )
    code, out, err = await command("once", "--config", str(path), "--target", "bad", "--log-level", "error")
    assert code == 1
    assert "target bad failed: http_status" in err
    assert 'inference_exporter_target_up{target="bad"} 0.0' in out
    assert 'target="good"' not in out


async def test_run_reloads_on_sighup_and_stops_cleanly_on_sigterm_with_json_logs(upstream, tmp_path):
    port = free_port()
    path = tmp_path / "run.yaml"
    path.write_text(f'targets:\n  - {{name: vllm, type: http, url: "{upstream.url}/simulated/vllm", interval: 1s}}\n')
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "exporter",
        "run",
        "--config",
        str(path),
        "--listen",
        f"127.0.0.1:{port}",
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )

    async def get(path: str) -> tuple[int, str]:
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{port}{path}") as response:
                    return response.status, await response.text()
        except aiohttp.ClientConnectionError:
            return 0, ""

    try:
        await wait_until(lambda: _status_is(get("/readyz"), 200), timeout=30, interval=0.2)
        path.write_text(
            f'targets:\n  - {{name: vllm, type: http, url: "{upstream.url}/simulated/vllm", interval: 1s}}\n'
            f'  - {{name: tgi, type: http, url: "{upstream.url}/simulated/tgi", interval: 1s}}\n'
        )
        process.send_signal(signal.SIGHUP)
        await wait_until(
            lambda: _contains(get("/metrics"), 'inference_exporter_target_up{target="tgi"} 1.0'), timeout=15
        )
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 10)
    finally:
        if process.returncode is None:
            process.kill()
    assert process.returncode == 0
    assert process.stderr is not None
    events = [json.loads(line) for line in (await process.stderr.read()).decode().splitlines() if line.startswith("{")]
    messages = [event["event"] for event in events]
    assert "inference-exporter started" in messages and "config reloaded" in messages
    assert messages[-1] == "inference-exporter stopped"
    assert all("timestamp" in event and "level" in event for event in events)


async def _status_is(response, status: int) -> bool:
    return (await response)[0] == status


async def _contains(response, text: str) -> bool:
    return text in (await response)[1]


async def test_run_demo_serves_a_simulated_backend_labelled_as_a_demo(tmp_path):
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "exporter",
        "run",
        "--demo",
        "--listen",
        f"127.0.0.1:{port}",
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:

        async def demo_series():
            try:
                async with aiohttp.ClientSession() as session:
                    async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                        text = await response.text()
            except aiohttp.ClientConnectionError:
                return None
            # the engine's series (the production-stack router's simulator serves the same name, by server)
            return [
                line
                for line in text.splitlines()
                if line.startswith("vllm_num_requests_running{") and 'target="demo-vllm"' in line
            ] or None

        lines = await wait_until(demo_series, timeout=30, interval=0.3)
        assert 'demo="true"' in lines[0] and 'target="demo-vllm"' in lines[0]
    finally:
        process.send_signal(signal.SIGINT)
        await asyncio.wait_for(process.wait(), 10)
    assert process.stderr is not None
    log = (await process.stderr.read()).decode()
    assert "demo backend started" in log and "not a real server" in log
