"""A template's fill renders OpenMetrics alone; a family's classic text (text/plain 0.0.4, which moves
`_created`, `_gsum` and `_gcount` samples out of it) is cut from those lines when a scrape first asks,
and is what rendering the family whole gives."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.samples import Sample as PromSample

from exporter.pipeline.exposition import _OUTSIDE_SUFFIXES, Chunks, Classic, SeriesFamily, render_text

SUFFIXES = st.sampled_from(["", "_total", "_bucket", "_count", "_sum", *_OUTSIDE_SUFFIXES])
SAMPLE = st.tuples(SUFFIXES, st.sampled_from(["", "a", 'q"\\\n\r'])).map(
    lambda s: PromSample("f" + s[0], {"l": s[1]} if s[1] else {}, 1.5, None, None)
)


def _lazy(family: SeriesFamily) -> Chunks:
    inside: list[int] = []
    outside: dict[str, list[int]] = {}
    for index, sample in enumerate(family.samples):
        suffix = sample.name[len(family.name) :]
        (outside.setdefault(suffix, []) if suffix in _OUTSIDE_SUFFIXES else inside).append(index)
    return Chunks.lazy(Chunks.of(family).openmetrics, Classic(inside, outside))


@settings(max_examples=300, deadline=None)
@given(st.lists(SAMPLE, max_size=12))
def test_the_classic_text_cut_from_openmetrics_lines_is_the_family_rendered_whole(samples):
    family = SeriesFamily("f", "counter", "h", samples)
    whole, lazy = Chunks.of(family), _lazy(family)
    assert (lazy.openmetrics, lazy.outside, lazy.inside) == (whole.openmetrics, whole.outside, whole.inside)
    served = render_text({"f": [SeriesFamily("f", "counter", "h", samples, chunks=_lazy(family))]})
    assert served == render_text({"f": [family]})


def test_a_fill_cuts_no_classic_text_until_a_scrape_reads_it(monkeypatch):
    cuts: list[bytes] = []
    split = Classic.split

    def counted(self, text):
        cuts.append(text)
        return split(self, text)

    monkeypatch.setattr(Classic, "split", counted)
    family = SeriesFamily(
        "f", "counter", "h", [PromSample("f_total", {}, 1.0, None, None), PromSample("f_created", {}, 2.0, None, None)]
    )
    chunks = _lazy(family)
    assert cuts == []
    assert chunks.inside == b"f_total 1.0\n" and chunks.outside == {"_created": b"f_created 2.0\n"}
    assert cuts == [chunks.openmetrics]  # once, for both
