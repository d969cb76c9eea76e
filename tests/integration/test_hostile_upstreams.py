"""What one upstream sends cannot break the scrape for everyone, fake the daemon's health, or be served
as something strict OpenMetrics readers reject."""

from __future__ import annotations

import pytest
from helpers.hostile import BROKEN_FAMILIES, exposition, promtool_problems, serve, strictly_parsed
from helpers.support import published, require_tool

OM = "application/openmetrics-text"


def names_and_labels(text: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for family in strictly_parsed(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample.labels)
    return out


async def test_a_dunder_label_from_upstream_is_served_as_exported_and___name___never():
    store = await serve([b'evil{__name__="other",__meta_x="y",ok="1"} 1\n'])
    text = exposition(store)
    served = names_and_labels(text)
    assert served["evil"] == [{"exported___name__": "other", "exported___meta_x": "y", "ok": "1", "target": "t"}]
    assert "__name__" not in text.replace("exported___name__", "")
    assert not promtool_problems(exposition(store, openmetrics=False), require_tool("promtool"))


async def test_a_dunder_metric_name_from_upstream_is_served_as_exported():
    store = await serve([b"__evil 1\n"])
    assert "exported___evil" in names_and_labels(exposition(store))


@pytest.mark.parametrize("kind", ["untyped", "counter", "gauge"])
async def test_an_upstream_cannot_serve_under_our_own_names_and_our_target_up_stays(kind):
    suffix = "_total" if kind == "counter" else ""
    body = f'# TYPE inference_exporter_target_up {kind}\ninference_exporter_target_up{suffix}{{target="x"}} 1\n'
    store = await serve([body.encode()])
    served = names_and_labels(exposition(store))
    assert served["inference_exporter_target_up"] == [{"target": "t"}], "ours only, and there"
    assert {"exported_target": "x", "target": "t"} in served[f"exported_inference_exporter_target_up{suffix}"]
    assert published(store, "t").dropped["renamed_reserved"] == 1


async def test_relabeling_cannot_move_a_series_into_our_names_or_leave_scratch_labels():
    target = (
        "name: t, type: http, url: http://h/m, metric_relabel_configs: ["
        "{source_labels: [n], target_label: __name__}, {source_labels: [n], target_label: __tmp}]"
    )
    store = await serve([b'x{n="inference_exporter_build_info"} 1\n'], target=target)
    served = names_and_labels(exposition(store))
    assert served["exported_inference_exporter_build_info"] == [{"n": "inference_exporter_build_info", "target": "t"}]


@pytest.mark.parametrize("case", BROKEN_FAMILIES)
async def test_a_family_strict_readers_reject_is_served_untyped_and_the_scrape_parses(case):
    body = BROKEN_FAMILIES[case] + "# TYPE good gauge\ngood 1\n"
    store = await serve([body.encode()])
    text = exposition(store)
    families = {family.name: family for family in strictly_parsed(text)}
    assert families["good"].samples[0].value == 1
    assert published(store, "t").dropped["served_untyped"] >= 1
    assert not promtool_problems(exposition(store, openmetrics=False), require_tool("promtool"))


async def test_a_family_is_checked_every_poll_not_only_when_its_shape_changes():
    bodies = [b"# TYPE c counter\nc_total %d\n" % value for value in (1, 2, 3, -4)]
    store = await serve(bodies)  # the third poll made a template; the fourth has the same shape
    assert strictly_parsed(exposition(store))
    assert published(store, "t").dropped["served_untyped"] == 1


async def test_a_vllm_histogram_count_alone_makes_no_unified_histogram():
    store = await serve([b"vllm:time_to_first_token_seconds_count 2.5\nvllm:num_requests_running 1\n"])
    text = exposition(store)
    strictly_parsed(text)
    assert "time_to_first_token_seconds_bucket" not in text


@pytest.mark.parametrize(
    ("limit", "body"),
    [
        ("label_limit: 2", b'x{a="1",b="2",c="3"} 1\n'),
        ("label_name_length_limit: 5", b'x{abcdef="1"} 1\n'),
        ("label_value_length_limit: 10", b'x{a="' + b"v" * 11 + b'"} 1\n'),
        ("label_limit: 1", b"x" * 100_000 + b'{a="1",b="2"} 1\n'),  # the upstream's name is cut in the message
    ],
)
async def test_label_limits_fail_the_poll_with_their_reason(aiohttp_server, limit, body):
    from aiohttp import web
    from helpers.support import poll_target

    async def metrics(request):
        return web.Response(body=body + b"ok 1\n")

    app = web.Application()
    app.router.add_get("/m", metrics)
    server = await aiohttp_server(app, host="127.0.0.1")
    snapshot = await poll_target(f"{{name: t, type: http, url: '{server.make_url('/m')}', {limit}}}")
    assert not snapshot.up and snapshot.last_reason == "label_limit"
    assert limit.split(":")[0] in snapshot.last_error
    assert len(snapshot.last_error) < 400
