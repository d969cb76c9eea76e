"""The ingest worker lets scrapes go first: no new piece, and no next part of a long one, while a scrape is answered."""

from __future__ import annotations

import threading
import time

import pytest

from exporter.core import offload


@pytest.fixture
def patient(monkeypatch):
    """Scrapes held back for a minute rather than 0.25 s, and for all of a second: what a test sees does
    not hang on the machine's speed, nor on what the test before waited."""
    monkeypatch.setattr(offload, "SCRAPE_FIRST_LIMIT", 60.0)
    monkeypatch.setattr(offload, "SCRAPE_FIRST_SHARE", 60.0)
    monkeypatch.setattr(offload, "_second", (0.0, 0.0))


def test_a_piece_queued_during_a_scrape_starts_after_it(patient):
    started = threading.Event()
    with offload.scraping():
        future = offload.submit(started.set)
        assert not started.wait(0.1), "the worker started a piece while a scrape was answered"
    future.result(timeout=30)
    assert started.is_set()


def test_a_long_piece_waits_for_a_scrape_between_its_parts(patient):
    first_part, go, second_part = threading.Event(), threading.Event(), threading.Event()

    def piece() -> None:
        first_part.set()
        go.wait(30)
        offload.let_scrapes_by()
        second_part.set()

    future = offload.submit(piece)
    assert first_part.wait(30)
    with offload.scraping():
        go.set()
        assert not second_part.wait(0.1), "the piece's next part ran during the scrape"
    future.result(timeout=30)
    assert second_part.is_set()


def test_the_event_loops_thread_never_waits_for_its_own_scrape(patient, monkeypatch):
    def no_sleep(seconds: float) -> None:
        raise AssertionError("waited on the loop's thread")

    offload.submit(lambda: None).result(timeout=30)  # the worker exists and is not this thread
    monkeypatch.setattr(time, "sleep", no_sleep)
    with offload.scraping():
        offload.let_scrapes_by()


def test_a_scrape_that_raises_still_lets_the_worker_go(patient):
    with pytest.raises(RuntimeError), offload.scraping():
        raise RuntimeError("the scrape failed")
    assert offload.submit(lambda: "ran").result(timeout=30) == "ran"


def test_a_scrape_in_progress_is_known_until_it_ends():
    assert not offload.scrape_in_progress()
    with offload.scraping():
        with offload.scraping():
            assert offload.scrape_in_progress()
        assert offload.scrape_in_progress(), "one of two scrapes is still answered"
    assert not offload.scrape_in_progress()


def test_scrapes_back_to_back_slow_the_worker_down_but_never_stop_it(patient, monkeypatch):
    """A scrape always in progress: a piece, and a long one's every part, still runs (the worker waits
    at most half of any second), while the scrapes go on."""
    monkeypatch.setattr(offload, "SCRAPE_FIRST_SHARE", 0.5)
    parts = []

    def piece() -> None:
        for part in range(10):
            offload.let_scrapes_by()
            parts.append(part)

    with offload.scraping():
        offload.submit(piece).result(timeout=30)
        assert parts == list(range(10))
        assert offload.submit(lambda: "ran").result(timeout=30) == "ran"
