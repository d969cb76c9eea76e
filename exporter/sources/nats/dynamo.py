"""Dynamo's own runtime, for `protocol: dynamo`: the environment it is configured by (set around its
start, then put back) and the client that calls an endpoint's instances. Imported on first use."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import structlog

from exporter.sources.base import SourceError
from exporter.sources.nats.config import NATSTarget, _reveal

if TYPE_CHECKING:
    pass

log = structlog.get_logger("exporter.sources.nats")


#: Every environment variable Dynamo's runtime reads that a target's config decides.
_DYNAMO_ENV = (
    "NATS_SERVER",
    "NATS_AUTH_USERNAME",
    "NATS_AUTH_PASSWORD",
    "NATS_AUTH_TOKEN",
    "NATS_AUTH_NKEY",
    "NATS_AUTH_CREDENTIALS_FILE",
    "NATS_TLS_CA_CERT_PATH",
    "NATS_TLS_CLIENT_CERT_PATH",
    "NATS_TLS_CLIENT_KEY_PATH",
    "NATS_TLS_INSECURE",
    "NATS_STARTUP_CONNECT_TIMEOUT_SECONDS",
    "ETCD_ENDPOINTS",
    "ETCD_STARTUP_CONNECT_TIMEOUT_SECONDS",
    "DYN_FILE_KV",
    "DYN_LOG",
)


def dynamo_environment(target: NATSTarget) -> dict[str, str | None]:
    """The environment Dynamo's runtime is created in: it takes its settings from nowhere else.

    Startup connection timeouts are 1 s (the least it accepts): the runtime's constructor blocks
    the event loop while it connects, so it is only created once NATS is known to answer.
    """
    env: dict[str, str | None] = dict.fromkeys(_DYNAMO_ENV)
    env["NATS_SERVER"] = ",".join(target.servers)
    env["NATS_STARTUP_CONNECT_TIMEOUT_SECONDS"] = "1"
    env["ETCD_STARTUP_CONNECT_TIMEOUT_SECONDS"] = "1"
    env["DYN_LOG"] = os.environ.get("DYN_LOG", "warn")  # its per-request info lines would flood our log
    if target.user is not None and target.password_file is not None:
        env["NATS_AUTH_USERNAME"] = target.user
        env["NATS_AUTH_PASSWORD"] = _reveal(target.password_file)
    if target.token_file is not None:
        env["NATS_AUTH_TOKEN"] = _reveal(target.token_file)
    if target.nkey_seed_file is not None:
        env["NATS_AUTH_NKEY"] = _reveal(target.nkey_seed_file).strip()
    if target.creds_file is not None:
        env["NATS_AUTH_CREDENTIALS_FILE"] = str(target.creds_file)
    if target.tls is not None:
        tls = target.tls
        env["NATS_TLS_CA_CERT_PATH"] = str(tls.ca_file) if tls.ca_file else None
        env["NATS_TLS_CLIENT_CERT_PATH"] = str(tls.cert_file) if tls.cert_file else None
        env["NATS_TLS_CLIENT_KEY_PATH"] = str(tls.key_file) if tls.key_file else None
        env["NATS_TLS_INSECURE"] = "true" if tls.insecure_skip_verify else None
    if target.discovery_dir is not None:
        env["DYN_FILE_KV"] = str(target.discovery_dir)
    if target.etcd_endpoints:
        env["ETCD_ENDPOINTS"] = ",".join(target.etcd_endpoints)
    return env


@contextlib.contextmanager
def _environment(values: dict[str, str | None]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class DynamoRuntime:
    """One Dynamo DistributedRuntime for every dynamo target with the same NATS and discovery settings."""

    def __init__(self, target: NATSTarget):
        self.target = target
        self.users = 0
        self._runtime: Any = None

    def acquire(self) -> None:
        self.users += 1

    async def release(self) -> None:
        self.users = max(0, self.users - 1)
        if self.users == 0:
            await self.close()

    async def client(self, path: str) -> Any:
        """A client of the endpoint `path`; the runtime is created on first use."""
        if self._runtime is None:
            self._runtime = self._create()
        try:
            return await self._runtime.endpoint(path).client()
        except Exception as exc:
            raise SourceError("dynamo", f"cannot make a client of Dynamo endpoint {path}: {exc}") from None

    def _create(self) -> Any:
        target = self.target
        try:
            environment = dynamo_environment(target)
        except OSError as exc:
            raise SourceError("credentials", f"cannot read a credential file: {exc}") from None
        try:
            with _environment(environment):  # its logging reads DYN_LOG when first imported
                from dynamo.runtime import DistributedRuntime

                runtime = DistributedRuntime(asyncio.get_running_loop(), target.discovery, target.request_plane)
        except ImportError as exc:
            raise SourceError(
                "missing_dependency",
                f"protocol dynamo needs Dynamo's runtime ({exc}): pip install 'inference-exporter[dynamo]'",
                retryable=False,
            ) from None
        except Exception as exc:
            raise SourceError(
                "dynamo", f"cannot start Dynamo's runtime ({target.discovery} discovery): {exc}"
            ) from None
        log.info(
            "dynamo runtime started",
            servers=", ".join(target.servers),
            discovery=target.discovery,
            request_plane=target.request_plane,
        )
        return runtime

    async def close(self) -> None:
        runtime, self._runtime = self._runtime, None
        if runtime is not None:
            runtime.shutdown()
