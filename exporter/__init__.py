"""inference-exporter: one Prometheus scrape target for every inference backend on a GPU host."""

__version__ = "0.1.0"
