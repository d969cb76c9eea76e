"""A real `nats-server` for the tests: loopback ports, optional auth or TLS config, kill and restart.

Monitoring (`/connz`) listens on its own loopback port, so a test can count the connections the
exporter holds, as an operator would. `jwt_auth` makes the operator, account and user JWTs that
decentralized authentication (creds files) needs, as `nsc` would, with nkeys.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import aiohttp
import nkeys

from helpers.support import free_port, require_tool


class NATSServer:
    """One nats-server process; `stop()` kills it, `start()` brings it back on the same ports."""

    def __init__(self, folder: Path, config: str = ""):
        self.binary = require_tool("nats-server")
        self.port = free_port()
        self.monitor_port = free_port()
        self.config_file = folder / f"nats-{self.port}.conf"
        self.config_file.write_text(f"listen: 127.0.0.1:{self.port}\nhttp: 127.0.0.1:{self.monitor_port}\n{config}\n")
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> NATSServer:
        self.process = await asyncio.create_subprocess_exec(
            self.binary, "-c", str(self.config_file), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                await writer.wait_closed()
                return self
            if self.process.returncode is not None or asyncio.get_running_loop().time() > deadline:
                error = (await self.process.stderr.read()).decode() if self.process.stderr else ""
                raise RuntimeError(f"nats-server did not start on port {self.port}: {error}")
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        """Kill the server (SIGKILL: clients see the connection drop, as when a node dies)."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        self.process = None

    async def connz(self, query: str = "") -> dict:
        """nats-server's own list of client connections."""
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{self.monitor_port}/connz{query}") as response:
                return json.loads(await response.text())

    async def subscribed(self, subject: str) -> bool:
        """Whether some client subscribes to exactly this subject."""
        connections = (await self.connz("?subs=1")).get("connections", [])
        return any(subject in conn.get("subscriptions_list", []) for conn in connections)

    async def exporter_connections(self) -> int:
        """Client connections the exporter holds (it names them inference-exporter/<version>)."""
        connz = await self.connz()
        return sum(1 for conn in connz.get("connections", []) if conn.get("name", "").startswith("inference-exporter/"))


# -- decentralized (JWT) authentication, for creds_file ---------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _keypair(prefix: int) -> tuple[nkeys.KeyPair, str]:
    seed = nkeys.encode_seed(os.urandom(32), prefix)
    return nkeys.from_seed(bytearray(seed)), seed.decode()


def _jwt(signer: nkeys.KeyPair, subject: str, name: str, claims: dict) -> str:
    """A NATS JWT (v2): ed25519-nkey signed, as `nsc` would write it."""
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body = {"iat": int(time.time()), "iss": signer.public_key.decode(), "name": name, "sub": subject, "nats": claims}
    body["jti"] = (
        base64.b32encode(hashlib.sha256(json.dumps(body, sort_keys=True).encode()).digest()).decode().rstrip("=")
    )
    payload = _b64(json.dumps(body).encode())
    return f"{header}.{payload}.{_b64(signer.sign(f'{header}.{payload}'.encode()))}"


_UNLIMITED = {"subs": -1, "data": -1, "payload": -1}


def _creds(folder: Path, name: str, account: nkeys.KeyPair) -> Path:
    user, seed = _keypair(nkeys.PREFIX_BYTE_USER)
    token = _jwt(
        account, user.public_key.decode(), name, {"pub": {}, "sub": {}, **_UNLIMITED, "type": "user", "version": 2}
    )
    path = folder / f"{name}.creds"
    path.write_text(
        f"-----BEGIN NATS USER JWT-----\n{token}\n------END NATS USER JWT------\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
    )
    return path


def jwt_auth(folder: Path) -> tuple[str, Path, Path]:
    """nats-server config for operator (JWT) mode, a creds file it accepts, and one signed by an account it does not know."""
    operator, _ = _keypair(nkeys.PREFIX_BYTE_OPERATOR)
    account, _ = _keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    stranger, _ = _keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    operator_jwt = _jwt(operator, operator.public_key.decode(), "operator", {"type": "operator", "version": 2})
    limits = {**_UNLIMITED, "imports": -1, "exports": -1, "wildcards": True, "conn": -1, "leaf": -1}
    account_jwt = _jwt(
        operator,
        account.public_key.decode(),
        "inference",
        {"limits": limits, "default_permissions": {"pub": {}, "sub": {}}, "type": "account", "version": 2},
    )
    config = (
        f'operator: "{operator_jwt}"\nresolver: MEMORY\n'
        f'resolver_preload: {{ {account.public_key.decode()}: "{account_jwt}" }}\n'
    )
    return config, _creds(folder, "scraper", account), _creds(folder, "stranger", stranger)
