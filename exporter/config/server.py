"""The `server:` section of the config: what one client may take of the listening side (enforced by
exporter.serve.listener)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from exporter.core.fields import Duration


class ServerLimits(BaseModel):
    """`server:` in the config: what one client may take of the listening side."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: A request's headers must all arrive within this long of its first byte (or of the connection).
    header_timeout: Duration = 10.0
    #: Connections open at once; more are answered 503 and closed. Keep it under the file-handle limit.
    max_connections: int = Field(default=512, ge=1, le=1_000_000)
