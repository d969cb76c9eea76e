"""A config pays only for what it uses: NATS, NVML, bcrypt and Dynamo are imported when a target or
the web config needs them, not by a daemon that polls HTTP targets and serves without basic auth; a
target kind's own module (its schema, its source) when a config names the kind; and `once` loads
none of the daemon's web side."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest
from helpers.support import REPO

#: Top-level packages a daemon with only HTTP targets and no web config must not import.
OPTIONAL = ("nats", "pynvml", "bcrypt", "dynamo")
#: Each target kind's own module, imported only by a config that has a target of that kind.
KIND_MODULES = {
    "http": "exporter.sources.http",
    "nvml": "exporter.sources.nvml",
    "nats": "exporter.sources.nats",
}
#: What `once` does not serve, and must not import: the web server, its pages, the demo, the daemon.
WEB_SIDE = (
    "exporter.runtime.daemon",
    "exporter.serve.web",
    "exporter.serve.webauth",
    "exporter.config.web",
    "exporter.serve.explain",
    "exporter.runtime.demo",
    "exporter.simulate",
    "exporter.serve.overview.live",
    "exporter.serve.overview.routes",
    "exporter.core.watch",
    "exporter.serve.listener",
    "aiohttp.web",
)

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


def loaded(modules: list[str], packages: tuple[str, ...] = OPTIONAL) -> list[str]:
    """The modules of these packages (top-level names, or dotted ones with their submodules) in `modules`."""
    return sorted({name for name in modules for package in packages if (name + ".").startswith(package + ".")})


def kinds_loaded(modules: list[str]) -> list[str]:
    """The target kinds whose module (or package) is among `modules`."""
    return sorted(kind for kind, module in KIND_MODULES.items() if loaded(modules, (module,)))


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
    assert loaded(result["modules"], (KIND_MODULES["nvml"], KIND_MODULES["nats"])) == []


async def test_importing_every_module_the_cli_loads_imports_none_of_them():
    script = (
        "import json, sys; import exporter.cli, exporter.runtime.daemon, exporter.serve.web, exporter.serve.webauth, exporter.sources; "
        "print(json.dumps({'modules': sorted(sys.modules)}))"
    )
    result = await run_script("-c", script)
    assert loaded(result["modules"]) == []
    assert loaded(result["modules"], (KIND_MODULES["nvml"], KIND_MODULES["nats"])) == []


#: Reads a config (argv[1], YAML text) in a fresh interpreter: what it imported.
CONFIG_SCRIPT = """
import json, sys
from exporter.config.loader import parse_config
parse_config(sys.argv[1], "<test>")
print(json.dumps({"modules": sorted(sys.modules)}))
"""

#: What a config with one target of each kind imports of the kinds' modules (NATS's `tls:` is HTTP's).
KIND_IMPORTS = {"http": ["http"], "nvml": ["nvml"], "nats": ["http", "nats"]}
KIND_TARGETS = {
    "http": '{name: a, type: http, url: "http://127.0.0.1:1/metrics"}',
    "nvml": "{name: a, type: nvml}",
    "nats": '{name: a, type: nats, servers: ["nats://127.0.0.1:4222"], subject: stats}',
}


@pytest.mark.parametrize("kind", sorted(KIND_TARGETS))
async def test_a_config_imports_the_module_of_each_kind_it_names_and_no_other(kind):
    result = await run_script("-c", CONFIG_SCRIPT, f"targets:\n  - {KIND_TARGETS[kind]}\n")
    assert kinds_loaded(result["modules"]) == sorted(KIND_IMPORTS[kind])
    assert loaded(result["modules"]) == []  # a kind's own dependencies wait for its first poll


async def test_a_config_with_no_targets_imports_no_kind_module():
    result = await run_script("-c", CONFIG_SCRIPT, "targets: []\n")
    assert loaded(result["modules"], tuple(KIND_MODULES.values())) == []


#: `inference-exporter once` in a fresh interpreter, its output discarded: what it imported.
ONCE_SCRIPT = """
import contextlib, io, json, sys
from exporter.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    code = main(["once", "--config", sys.argv[1], "--log-level", "error"])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


async def test_once_with_an_http_target_imports_no_other_kind_and_nothing_of_the_web_side(upstream, tmp_path):
    config = tmp_path / "once.yaml"
    config.write_text(f'targets:\n  - {{name: vllm, type: http, url: "{upstream.url}/simulated/vllm"}}\n')
    result = await run_script("-c", ONCE_SCRIPT, str(config))
    assert result["code"] == 0
    assert loaded(result["modules"]) == []
    assert loaded(result["modules"], (KIND_MODULES["nvml"], KIND_MODULES["nats"])) == []
    assert loaded(result["modules"], WEB_SIDE) == []
