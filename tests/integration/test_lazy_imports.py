"""A config pays only for what it uses: NATS, NVML, bcrypt and Dynamo are imported when a target or
the web config needs them, not by a daemon that polls HTTP targets and serves without basic auth."""

from __future__ import annotations

import asyncio
import json
import sys

from helpers.support import REPO

#: Top-level packages a daemon with only HTTP targets and no web config must not import.
OPTIONAL = ("nats", "pynvml", "bcrypt", "dynamo")

#: Runs in a fresh interpreter: a daemon with one HTTP target, polled and scraped, then what it imported.
DAEMON_SCRIPT = """
import asyncio, json, sys
import aiohttp
from exporter.config.loader import parse_config
from exporter.runtime.daemon import Daemon

async def main(url, listen):
    config = parse_config('targets:\\n  - {name: vllm, type: http, url: "' + url + '", interval: 1s}\\n', "<test>")
    daemon = Daemon(config, config_path=None, listen=listen)
    await daemon.start()
    try:
        for _ in range(200):
            snap = daemon.store.get("vllm")
            if snap is not None and snap.up:
                break
            await asyncio.sleep(0.05)
        async with aiohttp.ClientSession() as session:
            async with session.get("http://" + listen + "/metrics", headers={"Accept-Encoding": "gzip"}) as response:
                body = await response.text()
        async with aiohttp.ClientSession() as session:
            async with session.get("http://" + listen + "/targets") as response:
                await response.read()
    finally:
        await daemon.close()
    print(json.dumps({"up": 'target="vllm"' in body, "modules": sorted(sys.modules)}))

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def loaded(modules: list[str]) -> list[str]:
    return sorted({name for name in modules if name.split(".")[0] in OPTIONAL})


async def run_script(*args: str) -> dict:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()[-2000:]
    return json.loads(out.decode().strip().splitlines()[-1])


async def test_a_daemon_with_only_an_http_target_imports_no_nats_nvml_bcrypt_or_dynamo(upstream):
    from helpers.support import free_port

    result = await run_script("-c", DAEMON_SCRIPT, f"{upstream.url}/simulated/vllm", f"127.0.0.1:{free_port()}")
    assert result["up"]
    assert loaded(result["modules"]) == []


async def test_importing_every_module_the_cli_loads_imports_none_of_them():
    script = (
        "import json, sys; import exporter.cli, exporter.runtime.daemon, exporter.serve.web, exporter.serve.webauth, exporter.sources; "
        "print(json.dumps({'modules': sorted(sys.modules)}))"
    )
    result = await run_script("-c", script)
    assert loaded(result["modules"]) == []
