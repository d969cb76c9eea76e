"""structlog set-up: key-value events, JSON for machines, readable lines for a person at a terminal."""

from __future__ import annotations

import logging
import sys

import structlog

from exporter.core import events
from exporter.core.redact import REGISTRY

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("auto", "json", "console")


def configure(level: str = "info", fmt: str = "auto") -> None:
    """JSON when stderr is not a terminal (journald, kubectl logs) or when asked; console lines otherwise.

    Every event reaches the per-target event rings (debug included); only those at `level` or
    above are then written out.
    """
    as_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            REGISTRY,  # every configured secret, in every form, scrubbed before anything keeps or writes the event
            events.record,  # into the rings of the daemon whose work logged it (exporter.core.events)
            _at_least(logging.getLevelName(level.upper())),
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info if as_json else structlog.processors.StackInfoRenderer(),
            REGISTRY,  # again: a traceback is only text from here on
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Libraries that log through the standard library (aiohttp, asyncio) speak only when it matters.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")


def _at_least(threshold: int):
    """A processor that drops events below `threshold`, after the event rings have seen them."""

    def drop_below(logger: object, method_name: str, event_dict: dict) -> dict:
        if _LEVEL_NUMBERS.get(event_dict.get("level", method_name), logging.INFO) < threshold:
            raise structlog.DropEvent
        return event_dict

    return drop_below


_LEVEL_NUMBERS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
}
