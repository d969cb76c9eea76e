"""A poll whose families only changed their values is served from the last poll's output, filled in.

A target's pipeline (exporter.pipeline.target) takes two shortcuts, the skeleton (exporter.pipeline.skeleton) and the
template (exporter.pipeline.template): every
test here holds them to what the long way (a full parse, normalize, relabel, render) gives for the
same body, on every payload of both corpora (the simulated backends, the real captures), and shows that any other change of a body takes the long way.
"""

from __future__ import annotations

import math

import pytest
from aiohttp import web
from helpers.support import TEXT_0_0_4, BodyReader, body_of, corpora, with_values_moved

from exporter.config.loader import parse_config
from exporter.core.family import Family, Sample, shape_of
from exporter.format.parse import ParseError, parse
from exporter.pipeline.exposition import chunks, prerender
from exporter.pipeline.normalize import Normalized, normalize
from exporter.pipeline.target import Pipeline
from exporter.pipeline.template import Template, values_of
from exporter.runtime.scheduler import TargetPoller
from exporter.serve.store import Store
from exporter.sources import Shared

CONFIGS = {
    "defaults": "",
    "prefix, labels, relabeling": (
        "    prefix: host\n    labels: {region: eu, dc: one}\n    metric_relabel_configs:\n"
        "      - {source_labels: [__name__], regex: '.*_bucket', action: drop}\n"
        "      - {source_labels: [model_name], target_label: model, replacement: '$1'}\n"
    ),
    "no profile": "    profile: none\n",
    "unified only": "    raw: false\n",
}


class Body:
    """A real HTTP upstream that serves whatever body the test sets."""

    def __init__(self) -> None:
        self.body = b""
        self.content_type = TEXT_0_0_4
        self.url = ""  # where it is served, once it is

    async def handle(self, request: web.Request) -> web.Response:
        return web.Response(body=self.body, headers={"Content-Type": self.content_type})


@pytest.fixture
async def body(aiohttp_server):
    served = Body()
    app = web.Application()
    app.router.add_get("/metrics", served.handle)
    server = await aiohttp_server(app, host="127.0.0.1")
    served.url = str(server.make_url("/metrics"))
    return served


def poller_for(url: str, extra: str = "") -> tuple[TargetPoller, Shared]:
    config = parse_config(
        f"defaults: {{interval: 5s, timeout: 2s, retries: 0}}\ntargets:\n  - name: t\n    type: http\n    url: {url}\n{extra}"
    )
    shared = Shared()
    return TargetPoller(config.targets[0], Store(), shared), shared


def served(snapshot) -> list:
    """Everything a snapshot serves, comparable with NaN values: families, samples, and rendered text."""
    out = []
    for family in snapshot.families:
        rendered = chunks(family)
        out.append(
            (
                family.name,
                family.type,
                family.help,
                [(s.name, s.labels, repr(s.value), s.timestamp, s.exemplar) for s in family.samples],
                rendered.openmetrics,
                rendered.inside,
                rendered.outside,
            )
        )
    return out


@pytest.mark.parametrize("config", CONFIGS, ids=list(CONFIGS))
@pytest.mark.parametrize("payload", corpora())
async def test_a_poll_with_new_values_is_served_as_a_first_poll_of_that_body_would_be(body, payload, config):
    payload = body_of(payload)
    original, body.content_type = payload.data, payload.content_type
    steady, shared = poller_for(body.url, CONFIGS[config])
    try:
        for step in range(3):
            body.body = with_values_moved(original, step)
            reused = await steady.poll()
        assert reused.up, reused.last_error
        # Every payload takes the fast path: a Steady of its shape (or, with exemplars, a template of its families').
        shape = steady.pipeline._shape
        assert (shape is not None and shape.steady is not None) or steady.pipeline._template is not None
        fresh, fresh_shared = poller_for(body.url, CONFIGS[config])
        try:
            first = await fresh.poll()
        finally:
            await fresh_shared.close()
    finally:
        await shared.close()
    assert served(reused) == served(first)
    assert dict(reused.dropped.items()) == {reason: 3 * count for reason, count in first.dropped.items()}


@pytest.mark.parametrize("payload", corpora())
def test_the_reader_reads_a_body_of_the_last_shape_as_the_parser_does(payload):
    payload = body_of(payload)
    reader = BodyReader()
    for step in range(3):
        moved = with_values_moved(payload.data, step)
        again = reader.parse(moved, openmetrics=payload.openmetrics, escaping=payload.escaping)
        expected = parse(moved, openmetrics=payload.openmetrics, escaping=payload.escaping)
        assert [
            (f.name, f.type, f.help, f.unit, [(s.name, s.labels, repr(s.value)) for s in f.samples])
            for f in again.families
        ] == [
            (f.name, f.type, f.help, f.unit, [(s.name, s.labels, repr(s.value)) for s in f.samples])
            for f in expected.families
        ]
        assert again.truncated_lines == expected.truncated_lines
    assert all(family.shape is not None for family in again.families)  # made from the last shape


BASE = b"""# HELP requests_total Requests.
# TYPE requests_total counter
requests_total{code="200"} 5
requests_total{code="500"} 1
# HELP temp_celsius Temperature.
# TYPE temp_celsius gauge
temp_celsius 21.5
"""


def read_twice(first: bytes, second: bytes, **options) -> tuple:
    reader = BodyReader()
    reader.parse(first, **options)
    return reader.parse(second, **options), parse(second, **options)


def plain(result) -> list:
    return [(f.name, f.type, f.help, [(s.name, s.labels, repr(s.value)) for s in f.samples]) for f in result.families]


@pytest.mark.parametrize(
    "second",
    [
        BASE.replace(b'code="500"} 1', b'code="500"} 2'),  # values only: the shortcut
        BASE + b'requests_total{code="404"} 3\n',  # one more series
        BASE.replace(b"Temperature.", b"Temperature, in degrees."),  # a HELP line changed
        BASE.replace(b"temp_celsius 21.5", b"temp_celsius 21.5 1700000000000"),  # a timestamp appeared
        BASE.replace(b"\n", b"\r\n"),  # the server moved to CRLF line ends
        BASE.replace(b"# TYPE temp_celsius gauge\n", b""),  # a TYPE line went
        BASE.replace(b'{code="200"}', b'{code="200",path="/x y} 7"}'),  # a label value with a blank and a brace
        BASE[: -len(b"21.5\n")] + b"21",  # cut off after the name: the partial line is dropped
        BASE.replace(b"21.5", b"+Inf").replace(b"} 5", b"} NaN"),
    ],
)
def test_any_other_change_of_a_body_reads_as_the_parser_reads_it(second):
    again, expected = read_twice(BASE, second)
    assert plain(again) == plain(expected)
    assert again.truncated_lines == expected.truncated_lines


def test_a_value_that_is_no_number_fails_with_its_line_even_in_a_body_of_the_last_shape():
    reader = BodyReader()
    reader.parse(BASE)
    with pytest.raises(ParseError) as failed:
        reader.parse(BASE.replace(b"21.5", b"warm"))
    assert failed.value.line == 7
    with pytest.raises(ParseError):
        reader.parse(BASE.replace(b"21.5", b"2_1"))  # Go's ParseFloat refuses separators; so do we


def test_openmetrics_exemplars_are_never_read_as_values():
    body = (
        b"# TYPE latency_seconds histogram\n"
        b'latency_seconds_bucket{le="1.0"} 4 # {trace_id="a"} 0.5\n'
        b'latency_seconds_bucket{le="+Inf"} 4\n'
        b"latency_seconds_count 4\nlatency_seconds_sum 2.0\n# EOF\n"
    )
    moved = body.replace(b"} 4 #", b"} 5 #").replace(b'"+Inf"} 4', b'"+Inf"} 5').replace(b"count 4", b"count 5")
    again, expected = read_twice(body, moved, openmetrics=True)
    assert plain(again) == plain(expected)
    assert again.families[0].samples[0].value == 5.0


def test_families_left_out_by_a_filter_stay_out_of_a_body_of_the_last_shape():
    keep = lambda name: name != "requests_total"  # noqa: E731
    again, expected = read_twice(BASE, BASE.replace(b"21.5", b"22.5"), keep=keep)
    assert plain(again) == plain(expected)
    assert [f.name for f in again.families] == ["temp_celsius"]
    assert again.families[0].samples[0].value == 22.5


def test_stages_that_compute_a_value_get_no_template():
    families = [Family("x", "gauge", "X.", samples=[Sample("x", {"a": "1"}, 2.0), Sample("x", {"a": "2"}, 3.0)])]

    def doubling(families):
        return normalize(
            [
                Family(f.name, f.type, f.help, samples=[Sample(s.name, s.labels, s.value * 2) for s in f.samples])
                for f in families
            ],
            target="t",
        )

    def plain_stages(families):
        return normalize(families, target="t")

    def made(stages):
        normalized = stages(families)
        return Normalized(prerender(normalized.families), normalized.dropped)

    shapes = tuple(map(shape_of, families))
    assert Template.of(families, shapes, doubling, made(doubling)) is None
    template = Template.of(families, shapes, plain_stages, made(plain_stages))
    assert template is not None
    filled = template.fill([5.0, math.nan])
    assert next(s.value for s in filled.families[0].samples) == 5.0
    assert math.isnan(filled.families[0].samples[1].value)
    assert chunks(filled.families[0]).openmetrics == b'x{a="1",target="t"} 5.0\nx{a="2",target="t"} NaN\n'
    assert values_of(families) == [2.0, 3.0]


async def test_series_that_appear_and_go_between_polls_are_served_as_they_come(body):
    poller, shared = poller_for(body.url, "    profile: none\n")
    try:
        body.body = BASE
        await poller.poll()
        body.body = BASE.replace(b"21.5", b"22.5")
        await poller.poll()
        body.body = BASE + b"# TYPE queue_length gauge\nqueue_length 4\n"
        grown = await poller.poll()
        body.body = BASE.replace(b'requests_total{code="500"} 1\n', b"")
        shrunk = await poller.poll()
    finally:
        await shared.close()
    assert "queue_length" in [f.name for f in grown.families]
    assert [s.labels["code"] for f in shrunk.families if f.name == "requests" for s in f.samples] == ["200"]
    assert [s.value for f in shrunk.families if f.name == "temp_celsius" for s in f.samples] == [21.5]


def test_a_template_is_made_once_a_second_poll_has_the_same_shapes_and_never_for_churning_series(monkeypatch):
    import exporter.pipeline.target

    calls = []

    def counted(families, **options):
        calls.append(len(families))
        return normalize(families, **options)

    monkeypatch.setattr(exporter.pipeline.target, "normalize", counted)
    target = parse_config("targets:\n  - {name: t, type: http, url: 'http://127.0.0.1:9/', profile: none}\n").targets[0]

    def poll(pipeline, value, series="a"):
        return pipeline.run([Family("x", "gauge", "X.", samples=[Sample("x", {"id": series}, value)])])

    steady = Pipeline(target)
    outputs = [poll(steady, float(value)) for value in range(4)]
    # first poll: the stages once; second: again, and once more to make the template; then none
    assert len(calls) == 3 and steady._template is not None
    assert [family.samples[0].value for out in outputs for family in out.families] == [0.0, 1.0, 2.0, 3.0]

    calls.clear()
    churning = Pipeline(target)
    for number in range(4):
        poll(churning, 1.0, series=f"request-{number}")  # a new series every poll
    assert len(calls) == 4 and churning._template is None


def test_bodies_that_alternate_between_two_shapes_read_right_every_time():
    reader = BodyReader()
    other = BASE + b'requests_total{code="404"} 3\n'
    for step in range(6):
        body = with_values_moved(BASE if step % 2 else other, step)
        assert plain(reader.parse(body)) == plain(parse(body))
