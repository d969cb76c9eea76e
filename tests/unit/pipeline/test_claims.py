"""When targets disagree about a family: one rule, the same outcome whatever order polls arrive in,
and a clashing family is withheld from the targets that declared it, never from the others."""

from __future__ import annotations

import itertools

from helpers.support import published as held_by
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families

from exporter.format.parse import parse
from exporter.pipeline.exposition import merge, render_openmetrics, render_text
from exporter.pipeline.normalize import normalize
from exporter.serve.store import Snapshot, Store
from exporter.sources.http import HTTPTarget

#: Upstream text of one family of each type (values from `value`), as a classic text payload writes it.
SHAPES = {
    "counter": "# TYPE {n} counter\n{n}_total {v}\n",
    "gauge": "# TYPE {n} gauge\n{n} {v}\n",
    "untyped": "{n} {v}\n",
    "histogram": '# TYPE {n} histogram\n{n}_bucket{{le="1"}} 0\n{n}_bucket{{le="+Inf"}} {v}\n{n}_sum 0.5\n{n}_count {v}\n',
    "summary": '# TYPE {n} summary\n{n}{{quantile="0.5"}} 0.25\n{n}_sum 0.5\n{n}_count {v}\n',
}


def _text(family: str, kind: str, value: float) -> str:
    if kind == "counter" and family.endswith("_total"):  # the classic text format's `# TYPE x_total counter`
        return f"# TYPE {family} counter\n{family} {value}\n"
    return SHAPES[kind].format(n=family, v=value)


def target(name: str, prefix: str | None = None) -> HTTPTarget:
    return HTTPTarget.model_validate(
        {"name": name, "type": "http", "url": "http://127.0.0.1:1/metrics", "prefix": prefix}
    )


def snapshot(name: str, declared: dict[str, str], value: float = 1.0, prefix: str | None = None) -> Snapshot:
    """A target up with one family per (upstream name -> type), normalized as a poll would."""
    text = "".join(_text(family, kind, value) for family, kind in sorted(declared.items()))
    families = normalize(parse(text).families, target=name, prefix=prefix or "").families
    return Snapshot(target(name, prefix), families, up=True)


def served(store: Store) -> dict[str, str]:
    """Family name -> served type, over every target."""
    return {family.name: family.type for families in store.served_families() for family in families}


def served_by(store: Store, name: str) -> set[str]:
    return {family.name for family in store.served(name)}


def reasons(store: Store, name: str) -> dict[str, str]:
    return {family: withheld.reason for family, withheld in store.withheld(name).items()}


def test_an_untyped_family_never_takes_a_name_from_a_typed_one_in_either_order():
    healthy = {"x": "gauge", "lat": "histogram", "req": "counter"}
    degraded = {"x": "untyped", "lat_bucket": "untyped", "req_total": "untyped", "own": "untyped"}
    for order in (["healthy", "degraded"], ["degraded", "healthy"]):
        store = Store()
        for name in order:
            store.publish(snapshot(name, healthy if name == "healthy" else degraded))
        assert served_by(store, "healthy") == {"x", "lat", "req"}
        assert store.withheld("healthy") == {}
        assert served_by(store, "degraded") == {"own"}
        assert reasons(store, "degraded") == {"x": "untyped", "lat_bucket": "untyped", "req_total": "untyped"}
        assert store.withheld("degraded")["lat_bucket"].served == ("lat", "histogram")


def test_the_type_more_targets_declare_is_served_and_the_other_withheld_from_its_target_alone():
    store = Store()
    store.publish(snapshot("a", {"shared": "gauge", "mine": "gauge"}))
    store.publish(snapshot("b", {"shared": "counter", "own": "gauge"}))
    store.publish(snapshot("c", {"shared": "gauge"}))
    assert served(store)["shared"] == "gauge"
    assert reasons(store, "b") == {"shared": "outnumbered"}
    assert served_by(store, "b") == {"own"}


def test_a_tie_goes_to_the_fixed_type_order_whatever_the_order_of_publishing():
    for first, second in (("a", "b"), ("b", "a")):
        store = Store()
        declared = {"a": {"shared": "gauge"}, "b": {"shared": "counter"}}
        store.publish(snapshot(first, declared[first]))
        store.publish(snapshot(second, declared[second]))
        assert served(store) == {"shared": "counter"}
        assert reasons(store, "a") == {"shared": "tie_break"}


def test_a_histogram_keeps_its_suffixed_names_from_another_targets_typed_family():
    store = Store()
    store.publish(snapshot("gauges", {"lat_bucket": "gauge", "lat_count": "counter"}))
    store.publish(snapshot("histograms", {"lat": "histogram"}))
    assert served_by(store, "histograms") == {"lat"}
    assert reasons(store, "gauges") == {"lat_bucket": "tie_break", "lat_count": "tie_break"}


def test_a_unified_name_keeps_the_vocabularys_type():
    store = Store()
    # Three targets serve a raw counter `requests_running`; one serves the unified gauge of that name.
    for name in ("raw-1", "raw-2", "raw-3"):
        store.publish(snapshot(name, {"requests_running": "counter"}))
    store.publish(snapshot("unified", {"requests_running": "gauge"}))
    assert served(store) == {"requests_running": "gauge"}
    assert all(reasons(store, name) == {"requests_running": "vocabulary"} for name in ("raw-1", "raw-2", "raw-3"))


def test_a_backend_family_a_profile_reads_keeps_the_type_the_profile_reads_it_as():
    store = Store()
    for name in ("odd-1", "odd-2"):
        store.publish(
            snapshot(name, {"vllm:num_requests_running": "counter", "vllm:time_to_first_token_seconds": "gauge"})
        )
    store.publish(
        snapshot("vllm", {"vllm:num_requests_running": "gauge", "vllm:time_to_first_token_seconds": "histogram"})
    )
    assert served(store) == {"vllm_num_requests_running": "gauge", "vllm_time_to_first_token_seconds": "histogram"}
    assert reasons(store, "odd-1") == {
        "vllm_num_requests_running": "vocabulary",
        "vllm_time_to_first_token_seconds": "vocabulary",
    }


def test_the_vocabulary_follows_the_targets_prefix():
    store = Store()
    store.publish(snapshot("raw-1", {"lab_requests_running": "counter"}))
    store.publish(snapshot("raw-2", {"lab_requests_running": "counter"}))
    store.publish(snapshot("unified", {"requests_running": "gauge"}, prefix="lab"))
    assert served(store) == {"lab_requests_running": "gauge"}


def test_a_withheld_family_is_served_again_when_the_target_that_outranked_it_goes():
    store = Store()
    store.publish(snapshot("healthy", {"x": "gauge"}))
    store.publish(snapshot("degraded", {"x": "untyped"}))
    assert served_by(store, "degraded") == set()
    store.publish(Snapshot(target("healthy"), (), up=False))  # down: it serves nothing
    assert served_by(store, "degraded") == {"x"} and store.withheld("degraded") == {}
    store.publish(snapshot("healthy", {"x": "gauge"}))
    assert served_by(store, "degraded") == set()
    store.remove("healthy")
    assert served_by(store, "degraded") == {"x"}


def test_a_snapshot_keeps_what_its_poll_made_and_the_next_poll_of_the_same_names_is_served_alike():
    store = Store()
    store.publish(snapshot("healthy", {"x": "gauge"}))
    published = store.publish(snapshot("degraded", {"x": "untyped", "own": "gauge"}))
    assert {family.name for family in published.families} == {"x", "own"}
    again = store.publish(snapshot("degraded", {"x": "untyped", "own": "gauge"}, value=2.0))
    assert [family.name for family in store.served("degraded")] == ["own"]
    assert store.served("degraded")[0].samples[0].value == 2.0
    held = store.get("degraded")
    assert held is not None and again.families is held.families


# -- the outcome depends on what is declared, never on the order of publishing ----------------------

NAMES = ("a", "a_bucket", "a_count", "a_total", "a_created", "b", "requests_running")
TARGETS = ("t1", "t2", "t3", "t4")
declarations = st.dictionaries(st.sampled_from(NAMES), st.sampled_from(sorted(SHAPES)), max_size=4)


def upstream_series(store: Store) -> bytes:
    return render_text(merge(store.served_families(), ()))


def fresh(final: dict[str, dict[str, str]], order) -> Store:
    store = Store()
    for name in TARGETS:  # the targets in config order, as the scheduler adds them
        store.publish(Snapshot(target(name)))
    for name in order:
        store.publish(snapshot(name, final[name], value=TARGETS.index(name) + 1))
    return store


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(
    final=st.fixed_dictionaries(dict.fromkeys(TARGETS, declarations)),
    earlier=st.lists(st.tuples(st.sampled_from(TARGETS), declarations | st.none()), max_size=6),
    order=st.permutations(TARGETS),
)
def test_what_is_served_depends_on_the_declarations_alone(final, earlier, order):
    reference = fresh(final, TARGETS)
    # Any history first (targets up with other families, down, removed), then the final polls in any order.
    store = Store()
    for name in TARGETS:
        store.publish(Snapshot(target(name)))
    for name, declared in earlier:
        if declared is None:
            store.publish(Snapshot(target(name), (), up=False))
        else:
            store.publish(snapshot(name, declared, value=TARGETS.index(name) + 1))
    for name in order:
        store.publish(snapshot(name, final[name], value=TARGETS.index(name) + 1))

    assert upstream_series(store) == upstream_series(reference)
    assert {name: store.withheld(name) for name in TARGETS} == {name: reference.withheld(name) for name in TARGETS}
    # What is served is one valid exposition: no name served by two families.
    list(openmetrics_families(render_openmetrics(merge(store.served_families(), ())).decode()))
    for name in TARGETS:
        for withheld in store.withheld(name).values():
            # Untyped never wins over a typed declaration, and a target loses nothing but what it declared.
            assert withheld.type == "unknown" or withheld.served[1] != "unknown"
            assert withheld.family in {family.name for family in held_by(store, name).families}


def test_three_targets_in_every_order_serve_the_same_series():
    final = {
        "t1": {"a": "histogram", "b": "gauge"},
        "t2": {"a_bucket": "untyped", "a_count": "counter", "b": "counter"},
        "t3": {"a": "summary", "b": "gauge", "requests_running": "counter"},
        "t4": {"requests_running": "gauge"},
    }
    outputs = {upstream_series(fresh(final, order)) for order in itertools.permutations(TARGETS)}
    assert len(outputs) == 1
    store = fresh(final, TARGETS)
    assert served(store) == {"a": "histogram", "b": "gauge", "requests_running": "gauge"}
    assert reasons(store, "t2") == {"a_bucket": "untyped", "a_count": "tie_break", "b": "outnumbered"}
    assert reasons(store, "t3") == {"a": "tie_break", "requests_running": "vocabulary"}


def test_the_overview_sees_only_the_families_served_not_those_withheld():
    """A family withheld from /metrics (here an untyped `requests_running` beside a target's typed one)
    is not shown on the overview either: it reads what the store serves, as Prometheus would."""
    from dataclasses import replace

    from exporter.serve.overview.live import Overview

    store = Store()
    overview = Overview(store)
    real = replace(
        snapshot("real", {}),
        families=normalize(
            parse('# TYPE requests_running gauge\nrequests_running{backend="vllm",model="real"} 3\n').families,
            target="real",
        ).families,
    )
    fake = replace(
        snapshot("fake", {}),
        families=normalize(
            parse('requests_running{backend="vllm",model="fake"} 99\n').families, target="fake"
        ).families,
    )
    for poll in (1.0, 2.0):
        store.publish(replace(real, last_poll=poll))
        store.publish(replace(fake, last_poll=poll))
    assert reasons(store, "fake") == {"requests_running": "untyped"}
    rows = {(row["target"], row["model"]): row["requests_running"] for row in overview.report(now=2.0)["backends"]}
    assert rows[("real", "real")] == 3.0
    assert ("fake", "fake") not in rows
