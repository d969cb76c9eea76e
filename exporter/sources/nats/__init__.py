"""`type: nats`: statistics requested over NATS, by one of three protocols.

- `runtime_stats`: a request to a subject; the reply is the JSON NIM backends send to Dynamo (or
  Prometheus text). `gather: true` keeps every instance's reply instead of the first.
- `micro`: the NATS micro-service API, `$SRV.STATS.<service>` and `$SRV.INFO.<service>`, every instance.
- `dynamo`: a Dynamo endpoint `namespace.component.endpoint`, every instance, through Dynamo's own runtime.

The package: `config` (the target's schema), `source` (a poll), `replies` (replies to families),
`connection` (one shared nats-py connection per servers and credentials), `dynamo` (Dynamo's runtime).
nats-py and Dynamo's runtime are imported on first use, so a config without NATS targets never loads them.
"""

from __future__ import annotations

from exporter.sources.nats.config import NATSTarget
from exporter.sources.nats.source import NATSSource

__all__ = ["NATSSource", "NATSTarget"]
