"""A registry of vLLM V1 metric names served by prometheus_client's own handlers, as vLLM serves them.

Imported by the tests (the registry, for an in-process ASGI app) and run as a script by the version
matrix, under whichever virtual environment holds the prometheus_client release to check:

    python tests/helpers/prometheus_client_server.py [--utf8]

serves the registry with prometheus_client's WSGI app under wsgiref on a free loopback port, prints
`<port> <prometheus_client version>` on one line, and serves until its standard input closes. It
imports nothing but prometheus_client and the standard library, so that any release can run it.

Names, types, labels and buckets follow vLLM's V1 metrics (vllm/v1/metrics/loggers.py; the names
exporter/profiles/vllm.yaml maps, bucket lists cut short):
`vllm:` names are valid legacy metric names, which prometheus_client 0.23+ still escapes in
OpenMetrics sample lines unless asked for `escaping=allow-utf-8`. Values are fixed, so two servers
of the same registry serve the same values (only `_created` timestamps differ).
"""

from __future__ import annotations

import sys
import threading

MODEL = {"model_name": "facebook/opt-125m", "engine": "0"}
#: vLLM's request latency and TTFT buckets (vllm/v1/metrics/loggers.py), cut short.
LATENCY_BUCKETS = [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0]
TTFT_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0]


def build_registry(utf8: bool = False):
    """The registry: vLLM's families with a loaded server's values; `utf8` adds names outside the
    legacy character set (a dotted family and label), which older releases refuse."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    registry = CollectorRegistry()
    labels = list(MODEL)
    Gauge(
        "vllm:num_requests_running", "Number of requests in model execution batches.", labels, registry=registry
    ).labels(**MODEL).set(3)
    Gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", labels, registry=registry).labels(
        **MODEL
    ).set(1)
    Gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", labels, registry=registry).labels(
        **MODEL
    ).set(0.25)
    Counter("vllm:prompt_tokens", "Number of prefill tokens processed.", labels, registry=registry).labels(**MODEL).inc(
        1234
    )
    Counter("vllm:generation_tokens", "Number of generation tokens processed.", labels, registry=registry).labels(
        **MODEL
    ).inc(567)
    success = Counter(
        "vllm:request_success",
        "Count of successfully processed requests.",
        [*labels, "finished_reason"],
        registry=registry,
    )
    success.labels(**MODEL, finished_reason="stop").inc(40)
    success.labels(**MODEL, finished_reason="length").inc(2)
    ttft = Histogram(
        "vllm:time_to_first_token_seconds",
        "Histogram of time to first token in seconds.",
        labels,
        buckets=TTFT_BUCKETS,
        registry=registry,
    )
    e2e = Histogram(
        "vllm:e2e_request_latency_seconds",
        "Histogram of e2e request latency in seconds.",
        labels,
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )
    for seconds in (0.004, 0.03, 0.03, 0.09, 0.3, 1.2):
        ttft.labels(**MODEL).observe(seconds)
        e2e.labels(**MODEL).observe(seconds * 20)
    if utf8:
        Gauge("vllm.lora.adapters", "A family whose name needs UTF-8.", ["gpu.index"], registry=registry).labels(
            "0"
        ).set(2)
    return registry


def main() -> None:
    from importlib.metadata import version
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from prometheus_client import make_wsgi_app

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = make_server("127.0.0.1", 0, make_wsgi_app(build_registry(utf8="--utf8" in sys.argv)), WSGIServer, Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(server.server_port, version("prometheus_client"), flush=True)
    sys.stdin.read()  # until the test closes our standard input (or ends)
    server.shutdown()


if __name__ == "__main__":
    main()
