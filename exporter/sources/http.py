"""`type: http`: scrape a Prometheus text or OpenMetrics endpoint, as Prometheus itself would."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from yarl import URL

from exporter.fields import ByteSize, ReadableFile
from exporter.sources.base import TargetConfig


class BasicAuth(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    username: str
    password: str | None = Field(default=None, repr=False)
    password_file: ReadableFile | None = None

    @model_validator(mode="after")
    def _one_password(self) -> "BasicAuth":
        if (self.password is None) == (self.password_file is None):
            raise ValueError("set exactly one of password or password_file")
        return self


class TLSConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ca_file: ReadableFile | None = None
    cert_file: ReadableFile | None = None
    key_file: ReadableFile | None = None
    server_name: str | None = None
    insecure_skip_verify: bool = False

    @model_validator(mode="after")
    def _cert_and_key(self) -> "TLSConfig":
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together: set both or neither")
        return self


class HTTPTarget(TargetConfig):
    type: Literal["http"]
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    basic_auth: BasicAuth | None = None
    bearer_token: str | None = Field(default=None, repr=False)
    bearer_token_file: ReadableFile | None = None
    tls: TLSConfig | None = None
    body_size_limit: ByteSize = Field(default=16 * 1024 * 1024, gt=0)
    #: Most samples one poll may return; 0 means no limit (as in Prometheus).
    sample_limit: int = Field(default=0, ge=0)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        url = URL(value)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"expected an http:// or https:// URL with a host, got {value!r}")
        return value

    @model_validator(mode="after")
    def _one_credential(self) -> "HTTPTarget":
        given = [k for k in ("basic_auth", "bearer_token", "bearer_token_file") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"set at most one of basic_auth, bearer_token, bearer_token_file (got {', '.join(given)})")
        if any(key.lower() == "authorization" for key in self.headers) and given:
            raise ValueError("an Authorization header and basic_auth/bearer_token cannot be combined")
        return self

    def redacted(self) -> dict:
        shown = super().redacted()
        if self.bearer_token is not None:
            shown["bearer_token"] = "<secret>"
        if self.basic_auth is not None and self.basic_auth.password is not None:
            shown["basic_auth"]["password"] = "<secret>"
        for key in list(shown.get("headers", {})):
            if key.lower() in ("authorization", "cookie", "x-api-key"):
                shown["headers"][key] = "<secret>"
        return shown
