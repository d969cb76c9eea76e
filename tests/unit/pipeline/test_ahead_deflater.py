"""The ahead deflater deflates a poll before any scrape asks only where the next gzip scrape is due
before the target's next poll: what a GPU host's polls (every second, scraped every 5 s) would be
deflated for in vain is left to the scrape that serves it, if any; an aggregator's (every poll
scraped) is deflated ahead as before."""

from __future__ import annotations

from exporter.pipeline.exposition import DEFLATE_ALONE, AheadDeflater, Chunks, SeriesFamily


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def a_poll() -> list[SeriesFamily]:
    text = b"".join(b'big{i="%d"} 1\n' % i for i in range(DEFLATE_ALONE // 8))
    return [SeriesFamily("big", "gauge", "", (), chunks=Chunks(text, {}, text))]


def deflated_ahead(ahead: AheadDeflater, clock: Clock, at: float) -> bool:
    """Publish a poll at `at`: whether it was deflated ahead, in OpenMetrics."""
    clock.now = at
    ahead.pending = None
    families = a_poll()
    ahead.observe(families, "t")
    if ahead.pending is None:
        return False
    ahead.pending.result()
    assert families[0].chunks is not None
    return families[0].chunks.twin("openmetrics") is not None


def scrape(ahead: AheadDeflater, clock: Clock, at: float) -> None:
    clock.now = at
    ahead.scraped(openmetrics=True)


def test_polls_every_second_scraped_every_five_are_not_deflated_ahead():
    clock = Clock()
    ahead = AheadDeflater(lambda: ["t"], clock)
    made = []
    for second in range(30):
        made.append(deflated_ahead(ahead, clock, second + 0.3))
        if second % 5 == 0:
            scrape(ahead, clock, second + 0.5)
    assert made[:2] == [False, True], "after the first scrape, nothing says when the next comes: as before"
    assert not any(made[2:])


def test_polls_every_five_seconds_scraped_every_second_are_deflated_ahead():
    clock = Clock()
    ahead = AheadDeflater(lambda: ["t"], clock)
    made = []
    for second in range(30):
        scrape(ahead, clock, second)
        if second % 5 == 0:
            made.append(deflated_ahead(ahead, clock, second + 0.3))
    assert made == [False, *[True] * 5], "the first poll: no poll before it to have been scraped"


def test_polls_and_scrapes_of_one_interval_are_deflated_ahead():
    clock = Clock()
    ahead = AheadDeflater(lambda: ["t"], clock)
    made = []
    for poll in range(8):
        scrape(ahead, clock, poll * 15.0)
        made.append(deflated_ahead(ahead, clock, poll * 15.0 + 4.0))
    assert made == [False, *[True] * 7]


def test_two_scrapers_out_of_step_count_by_the_shorter_gap():
    clock = Clock()
    ahead = AheadDeflater(lambda: ["t"], clock)
    made = []
    for period in range(6):  # a pair of servers 3 s apart, each every 15 s; a poll every 5 s
        start = period * 15.0
        scrape(ahead, clock, start)
        made.append(deflated_ahead(ahead, clock, start + 1.0))  # the pair's second scrape comes before the next poll
        scrape(ahead, clock, start + 3.0)
        made.append(deflated_ahead(ahead, clock, start + 6.0))
        made.append(deflated_ahead(ahead, clock, start + 11.0))
    assert all(made[3::3]), "a poll between the pair's scrapes: the next is due within 3 s, not 12"
