"""Helpers for the hostile-input tests: serve any bodies through the daemon's own poll path, and
check what comes out with prometheus_client's strict OpenMetrics parser and promtool."""

from __future__ import annotations

import subprocess

from prometheus_client.openmetrics.parser import text_string_to_metric_families as strict_openmetrics

from exporter.config.loader import parse_config
from exporter.format.parse import ParseError
from exporter.runtime.scheduler import TargetPoller
from exporter.serve.collector import Collector
from exporter.serve.store import Store
from exporter.sources import Shared
from exporter.sources.base import Payload, SourceError
from helpers.support import BodyReader


class BodySource:
    """A target that answers with the next of `bodies` each poll, read by the real parser (what the
    http source does once the bytes are in)."""

    def __init__(self, bodies: list[bytes], openmetrics: bool = False):
        self.bodies, self.openmetrics, self.reader = list(bodies), openmetrics, BodyReader()

    async def poll(self) -> Payload:
        body = self.bodies.pop(0)
        try:
            result = self.reader.parse(body, openmetrics=self.openmetrics)
        except ParseError as exc:
            raise SourceError("parse", str(exc)) from None
        return Payload(result.families)

    async def close(self) -> None:
        pass


async def serve(
    bodies: list[bytes],
    *,
    openmetrics: bool = False,
    target: str = "name: t, type: http, url: http://h/m",
    store: Store | None = None,
) -> Store:
    """Poll a target once per body, through unify, conform, normalize, relabel and the store."""
    config = parse_config("defaults: {interval: 5s, timeout: 2s, retries: 0}\ntargets:\n  - {" + target + "}\n")
    store = store or Store()
    poller = TargetPoller(config.targets[0], store, Shared())
    poller.source = BodySource(bodies, openmetrics)
    for _ in bodies:
        await poller.poll()
    return store


def exposition(store: Store, *, openmetrics: bool = True) -> str:
    return Collector(store, process_metrics=False).render(openmetrics=openmetrics).decode()


def strictly_parsed(text: str) -> list:
    """Families as prometheus_client's strict OpenMetrics parser reads them; raises on anything it rejects."""
    return list(strict_openmetrics(text))


def promtool_problems(text: str, promtool: str) -> list[str]:
    """`promtool check metrics` errors in classic text: parse errors are ours to prevent. Its lint about
    upstream naming (`counter metrics should have "_total" suffix`) is the upstream's and is ignored."""
    run = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
    lines = (run.stdout + run.stderr).decode().splitlines()
    return [line for line in lines if "error while linting" in line or "parsing error" in line]


#: Families strict OpenMetrics readers reject, each as a body of its own (bench/fuzz.py seeds with them too).
BROKEN_FAMILIES = {
    "negative counter": "# TYPE c counter\nc_total -1\n",
    "NaN counter": "# TYPE c counter\nc_total NaN\n",
    "info of 0": "# TYPE i info\ni_info 0\n",
    "stateset without its label": "# TYPE s stateset\ns 1\n",
    "stateset value 2": '# TYPE s stateset\ns{s="a"} 2\n',
    "le NaN": '# TYPE h histogram\nh_bucket{le="NaN"} 1\nh_bucket{le="+Inf"} 1\nh_count 1\nh_sum 1\n',
    "fractional bucket": '# TYPE h histogram\nh_bucket{le="+Inf"} 2.5\nh_count 2.5\nh_sum 1\n',
    "count without sum": '# TYPE h histogram\nh_bucket{le="+Inf"} 2\nh_count 2\n',
    "buckets going down": '# TYPE h histogram\nh_bucket{le="1"} 3\nh_bucket{le="+Inf"} 2\nh_count 2\nh_sum 1\n',
    "count is not +Inf": '# TYPE h histogram\nh_bucket{le="+Inf"} 2\nh_count 3\nh_sum 1\n',
    "negative bucket with sum": '# TYPE h histogram\nh_bucket{le="-1"} 1\nh_bucket{le="+Inf"} 2\nh_count 2\nh_sum 1\n',
    "negative sum": '# TYPE h histogram\nh_bucket{le="+Inf"} 2\nh_count 2\nh_sum -1\n',
    "quantile 2": '# TYPE q summary\nq{quantile="2"} 1\nq_count 1\nq_sum 1\n',
    "negative quantile value": '# TYPE q summary\nq{quantile="0.5"} -1\nq_count 1\nq_sum 1\n',
    "negative summary count": "# TYPE q summary\nq_count -1\nq_sum 1\n",
    "quantile label on _count": '# TYPE q summary\nq_count{quantile="x"} 1\nq_sum 1\n',
    "le label on _count": '# TYPE h histogram\nh_bucket{le="+Inf"} 1\nh_count{le="x"} 1\nh_sum 1\n',
    # found by bench/fuzz.py: the parser puts `h 17` into the histogram h when it comes back to h
    "sample named like its histogram": (
        '# TYPE h histogram\nh_bu:ket 1\nh_bucket{le="+Inf"} 1\nh 1\nh_bucket{le="+Inf"} 1\nh_count 1\nh_sum 1\n'
    ),
    "gaugehistogram negative gsum": '# TYPE g gaugehistogram\ng_bucket{le="+Inf"} 2\ng_gcount 2\ng_gsum -4\n',
}
