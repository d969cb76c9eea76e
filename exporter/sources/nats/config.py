"""`type: nats`: the target's schema. The servers, the credentials and TLS a connection is made with,
and the protocol the statistics are asked for by, each with its own keys (exporter.sources.nats)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from exporter.core.fields import ByteSize, Duration
from exporter.core.redact import redact_url
from exporter.core.secret import SecretFile
from exporter.sources.base import TargetConfig
from exporter.sources.http import TLSConfig

if TYPE_CHECKING:
    pass


#: A gathering poll stops collecting replies at this share of the timeout at the latest, so that
#: what it gathered is kept rather than lost to the timeout.
GATHER_SHARE = 0.8

_SCHEMES = ("nats", "tls", "ws", "wss")

_SUBJECT = re.compile(r"^[^\s*>.]+(?:\.[^\s*>.]+)*$")

_SERVICE = re.compile(r"^[A-Za-z0-9_-]+$")  # nats.micro's own rule for service names

_DYNAMO_PATH = re.compile(r"^(?:dyn://)?[^\s.]+\.[^\s.]+\.[^\s.]+$")

NATSProtocol = Literal["runtime_stats", "micro", "dynamo"]

#: The keys that belong to one protocol only.
_PROTOCOL_KEYS: dict[str, tuple[str, ...]] = {
    "runtime_stats": ("subject", "gather", "format"),
    "micro": ("service",),
    "dynamo": ("endpoint", "discovery", "discovery_dir", "etcd_endpoints", "request_plane"),
}

_REQUIRED_KEY = {"runtime_stats": "subject", "micro": "service", "dynamo": "endpoint"}

_CREDENTIALS = ("user", "token_file", "creds_file", "nkey_seed_file")


class NATSTarget(TargetConfig):
    type: Literal["nats"]
    servers: list[str] = Field(min_length=1)
    protocol: NATSProtocol = "runtime_stats"
    #: How long micro, dynamo and `gather: true` polls collect replies (at most 80% of the timeout).
    gather_window: Duration = 1.0
    # runtime_stats
    subject: str | None = None
    gather: bool = False
    format: Literal["json", "prometheus"] = "json"
    # micro
    service: str | None = None
    # dynamo
    endpoint: str | None = None
    discovery: Literal["etcd", "file", "kubernetes"] = "etcd"
    discovery_dir: Path | None = None
    etcd_endpoints: list[str] = Field(default_factory=list)
    request_plane: Literal["tcp", "nats"] = "tcp"
    # credentials: read from files, again at each (re)connection
    user: str | None = None
    password_file: SecretFile | None = None
    token_file: SecretFile | None = None
    creds_file: SecretFile | None = None
    nkey_seed_file: SecretFile | None = None
    tls: TLSConfig | None = None
    #: The largest reply read; a larger one is not decoded (`reply_too_large`, or dropped among gathered ones).
    reply_size_limit: ByteSize = Field(default=1024 * 1024, gt=0)
    #: Most samples one poll may return, counted before they are made; 0 means no limit.
    sample_limit: int = Field(default=20_000, ge=0)

    @field_validator("servers")
    @classmethod
    def _server_urls(cls, servers: list[str]) -> list[str]:
        for server in servers:
            url = urlsplit(server)
            if url.scheme not in _SCHEMES or not url.hostname:
                raise ValueError(
                    f"expected a server URL like nats://127.0.0.1:4222 (nats, tls, ws or wss), got {redact_url(server)!r}"
                )
            if url.username or url.password:
                raise ValueError(
                    f"a server URL for {url.hostname} carries credentials; put them in user + password_file or token_file instead"
                )
        return servers

    @field_validator("subject")
    @classmethod
    def _subject(cls, subject: str | None) -> str | None:
        if subject is not None and not _SUBJECT.match(subject):
            raise ValueError(
                f"expected a NATS subject like nim.backend.runtime_stats (no spaces or wildcards), got {subject!r}"
            )
        return subject

    @field_validator("service")
    @classmethod
    def _service(cls, service: str | None) -> str | None:
        if service is not None and not _SERVICE.match(service):
            raise ValueError(f"expected a micro-service name of letters, digits, - and _, got {service!r}")
        return service

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, endpoint: str | None) -> str | None:
        if endpoint is not None and not _DYNAMO_PATH.match(endpoint):
            raise ValueError(f"expected a Dynamo endpoint namespace.component.endpoint, got {endpoint!r}")
        return endpoint

    @model_validator(mode="after")
    def _fits_protocol(self) -> NATSTarget:
        for protocol, keys in _PROTOCOL_KEYS.items():
            stray = [key for key in keys if key in self.model_fields_set and protocol != self.protocol]
            if stray:
                raise ValueError(
                    f"{', '.join(stray)} belongs to protocol {protocol}, but this target's protocol is {self.protocol}"
                )
        required = _REQUIRED_KEY[self.protocol]
        if getattr(self, required) is None:
            raise ValueError(f"{required} is required for protocol {self.protocol}")
        if (self.user is None) != (self.password_file is None):
            raise ValueError("user and password_file go together: set both or neither")
        given = [key for key in _CREDENTIALS if getattr(self, key) is not None]
        if len(given) > 1:
            raise ValueError(f"set at most one way to authenticate (got {', '.join(given)})")
        if self.protocol == "dynamo" and self.tls is not None and any(not s.startswith("tls://") for s in self.servers):
            raise ValueError("protocol dynamo with tls needs tls:// server URLs (Dynamo's runtime insists)")
        return self

    def redacted(self) -> dict[str, Any]:
        """As shown on /api/targets: credentials only as file paths, and only this protocol's own keys."""
        shown = super().redacted()
        for protocol, keys in _PROTOCOL_KEYS.items():
            if protocol != self.protocol:
                for key in keys:
                    shown.pop(key, None)
        return shown

    @property
    def connection_key(self) -> str:
        """What makes two targets' connections the same: servers and everything used to authenticate."""
        tls = self.tls.model_dump(mode="json") if self.tls else None
        fields = {key: getattr(self, key) for key in (*_CREDENTIALS, "password_file")}
        return json.dumps([self.servers, {k: str(v) if v is not None else None for k, v in fields.items()}, tls])

    @property
    def gather_seconds(self) -> float:
        return min(self.gather_window, GATHER_SHARE * (self.timeout or self.gather_window))


def _reveal(file: SecretFile) -> str:
    """A credential file's contents, read now (a rotated secret is used at the next connection), for the
    server it authenticates to."""
    return file.read().reveal()
