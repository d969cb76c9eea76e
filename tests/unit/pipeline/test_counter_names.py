"""A counter whose declared name already ends in `_total` and whose samples add another `_total`.

`# TYPE a_total counter` then `a_total_total 3` is the counter family `a_total` as OpenMetrics names
it (prometheus_client's OpenMetrics parser reads family `a_total` with sample `a_total_total`), and
Prometheus's text parser, which finds a series' metadata by its name less one suffix, reads series
`a_total_total` as a counter too: served alone, it is the counter `a_total`. It is not the counter
`a` (whose sample is `a_total`), into which it used to be merged. Beside that counter `a`, no
exposition can hold both as counters (strict OpenMetrics rejects family `a_total` beside a sample
`a_total`): it is then read as prometheus_client's text parser reads it, an untyped `a_total_total`.
"""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web
from helpers.support import daemon_url, served_samples, wait_until
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_oracle

from exporter.format.parse import parse

#: As a hand-written or non-Python exporter writes it: the family declared `a_total`, its sample `a_total_total`.
DOUBLED = "# HELP a_total Things done twice over.\n# TYPE a_total counter\na_total_total 3\n"
#: The plain counter `a` beside it, in Go's style (declared with its `_total`).
PLAIN = "# HELP a Things.\n# TYPE a counter\na_total 5\n"
OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def test_a_doubled_total_is_read_as_the_counter_its_samples_name():
    (doubled,) = parse(DOUBLED).families
    assert (doubled.name, doubled.type, doubled.help, [(s.name, s.value) for s in doubled.samples]) == (
        "a_total_total",
        "counter",
        "Things done twice over.",
        [("a_total_total", 3.0)],
    )


def test_a_doubled_total_beside_its_namesake_counter_is_untyped():
    for body in (DOUBLED + PLAIN, PLAIN + DOUBLED):
        families = {family.name: family for family in parse(body).families}
        assert set(families) == {"a", "a_total_total"}
        assert (families["a_total_total"].type, [(s.name, s.value) for s in families["a_total_total"].samples]) == (
            "untyped",
            [("a_total_total", 3.0)],
        )
        assert (families["a"].type, [(s.name, s.value) for s in families["a"].samples]) == (
            "counter",
            [("a_total", 5.0)],
        )


def test_a_go_style_counter_keeps_its_declared_name():
    (family,) = parse(
        PLAIN.replace("# TYPE a counter", "# TYPE a_total counter").replace("# HELP a ", "# HELP a_total ")
    ).families
    assert (family.name, family.type, [s.name for s in family.samples]) == ("a_total", "counter", ["a_total"])


@pytest.mark.parametrize("bodies", [(DOUBLED,), (DOUBLED, PLAIN), (PLAIN, DOUBLED)], ids=["alone", "first", "second"])
async def test_a_doubled_total_is_served_whole_and_strict_openmetrics_reads_it(aiohttp_server, start_daemon, bodies):
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text="".join(bodies), content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", handler)
    server = await aiohttp_server(app, host="127.0.0.1")
    daemon = await start_daemon(f'targets:\n  - {{name: t, type: http, url: "{server.make_url("/metrics")}"}}\n')
    snapshot = await wait_until(lambda: (s := daemon.store.get("t")) is not None and s.up and s)
    own = frozenset({"target": "t"}.items())
    expected = {("a_total_total", own): 3.0, **({("a_total", own): 5.0} if PLAIN in bodies else {})}
    assert served_samples(snapshot) == expected
    assert snapshot.dropped == {}
    async with aiohttp.ClientSession() as session:
        async with session.get(daemon_url(daemon), headers={"Accept": OPENMETRICS}) as response:
            text = await response.text()
    families = {family.name: family for family in openmetrics_oracle(text)}  # strict: raises on a clash
    read = {
        (name, family.type, sample.name, sample.value)
        for name, family in families.items()
        for sample in family.samples
        if sample.labels == {"target": "t"} and not name.startswith("inference_exporter_")
    }
    if PLAIN in bodies:
        assert read == {("a", "counter", "a_total", 5.0), ("a_total_total", "unknown", "a_total_total", 3.0)}
    else:
        assert read == {("a_total", "counter", "a_total_total", 3.0)}
