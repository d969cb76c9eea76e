"""A net under the whole test run: every log line, page and command output is searched for secrets.

Tests write the secrets they configure with the marker `s3cr3t` in them (or `remember()` them,
like bcrypt hashes), and the conftest hands everything the daemon and the command print or serve
to `LEAKS.search`. `test_secrets.py` runs last and fails if anything was found. Texts are searched
as they go by rather than kept, so a long run costs no memory.
"""

from __future__ import annotations

import logging
from collections import Counter

#: Every secret a test configures contains this, so that one search finds them all.
MARK = "s3cr3t"


class LeakWatch:
    def __init__(self) -> None:
        self.secrets: set[str] = {MARK}
        #: kind of output -> how many texts were searched
        self.searched: Counter[str] = Counter()
        #: (test, kind of output, the text around the secret)
        self.leaks: list[tuple[str, str, str]] = []
        self.test = "<no test>"

    def remember(self, secret: str) -> str:
        self.secrets.add(secret)
        return secret

    def search(self, kind: str, text: str | bytes) -> None:
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        self.searched[kind] += 1
        for secret in self.secrets:
            at = text.find(secret)
            if at >= 0:
                self.leaks.append((self.test, kind, text[max(0, at - 120) : at + 120]))


LEAKS = LeakWatch()


class SearchedLog:
    """A file (stderr) whose every write is searched first: what structlog's PrintLogger writes to."""

    def __init__(self, file) -> None:
        self.file = file

    def write(self, text: str) -> int:
        LEAKS.search("log", text)
        return self.file.write(text)

    def flush(self) -> None:
        self.file.flush()


class SearchedHandler(logging.Handler):
    """The standard library's log records (aiohttp, asyncio), searched too."""

    def emit(self, record: logging.LogRecord) -> None:
        LEAKS.search("log", self.format(record))
