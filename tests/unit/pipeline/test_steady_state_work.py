"""What a poll of a steady body (the same series, new values) works out again, and what it does not.

A daemon polls each target every second or so, and nearly every poll differs from the last in its
values alone: the work that depends on the series only (reading series heads, a family's shape) is
done once and reused. Each test here also holds the reused result to what working it out again gives.
"""

from __future__ import annotations

import dataclasses

from helpers.support import BodyReader, simulated, with_values_moved

import exporter.pipeline.template
from exporter.core.family import shape_of
from exporter.format.parse import parse
from exporter.pipeline.exposition import prerender
from exporter.pipeline.normalize import Normalized, fold_created, normalize
from exporter.pipeline.template import Template, values_of


def template_of(families, stages):
    """The template of what `stages` make of `families`, as the pipeline makes it (rendered first)."""
    made = stages(families)
    return Template.of(
        families, tuple(map(shape_of, families)), stages, Normalized(prerender(made.families), made.dropped)
    )


def steady_families(body: bytes, polls: int = 4):
    reader = BodyReader()
    for step in range(polls):  # the third body of one shape and later ones take the fast path
        result = reader.parse(with_values_moved(body, step))
    return result.families


def test_folded_created_series_keep_the_shape_the_pipeline_handed_out():
    body = simulated("vllm")
    families = steady_families(body)
    assert all(family.shape is not None for family in families)
    folded = fold_created(families)
    assert len(folded) < len(families), "the simulated vLLM writes _created gauges (classic text format)"
    assert all(family.shape is not None for family in folded)
    # A full read of the same body (a first poll) hands out the same families and shapes, so that a
    # template made after a full read serves a poll read from the skeleton, and the other way round.
    expected = fold_created(BodyReader().parse(with_values_moved(body, 3)).families)
    assert [(f.name, f.type, f.help, f.unit, f.samples, f.shape) for f in folded] == [
        (f.name, f.type, f.help, f.unit, f.samples, f.shape) for f in expected
    ]
    # and a family's shape tells its series apart
    other = fold_created(
        BodyReader().parse(with_values_moved(body, 3).replace(b'model_name="', b'model_name="x')).families
    )
    assert [f.shape for f in other if f.samples and any("model_name" in s.labels for s in f.samples)] != [
        f.shape for f in expected if f.samples and any("model_name" in s.labels for s in f.samples)
    ]


def test_a_family_without_a_shape_handed_out_is_folded_without_one():
    families = parse(simulated("vllm")).families
    for family in families:
        family.shape = None
    assert all(family.shape is None for family in fold_created(families))


def test_a_filled_template_reads_its_series_back_once_and_serves_each_fill_its_own_values(monkeypatch):
    families = fold_created(parse(simulated("vllm")).families)

    def stages(families):
        return normalize(families, target="t")

    template = template_of(families, stages)
    assert template is not None and template.shapes == tuple(map(shape_of, families))
    parses = []

    def counted(*args, **kwargs):
        parses.append(1)
        return parse(*args, **kwargs)

    monkeypatch.setattr(exporter.pipeline.template, "parse", counted)
    values = values_of(families)
    for step in (1, 2, 3):
        filled = template.fill([value + step for value in values])
        expected = stages(
            [
                dataclasses.replace(f, samples=[dataclasses.replace(s, value=s.value + step) for s in f.samples])
                for f in families
            ]
        )
        assert [(f.name, list(f.samples)) for f in filled.families] == [
            (f.name, list(f.samples)) for f in expected.families
        ]
    assert len(parses) == len(filled.families)  # once per family, on the first fill read


def test_a_template_keeps_the_series_only_of_families_read_after_it_was_made():
    families = fold_created(parse(simulated("vllm")).families)

    def stages(families):
        return normalize(families, target="t")

    template = template_of(families, stages)
    assert template is not None
    assert all(family._series is None for family in template._families)  # its own check read them all
    filled = template.fill(values_of(families))
    list(filled.families[0].samples)
    assert [family._series is not None for family in template._families] == [True] + [False] * (
        len(filled.families) - 1
    )
