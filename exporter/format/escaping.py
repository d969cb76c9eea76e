"""Content negotiation for `/metrics` bodies: what we ask a server for, what its `Content-Type` says
it sent, and how escaped metric and label names are read back to the names their families declare.

Prometheus 3 and prometheus_client 0.23+ negotiate how names outside the legacy character set are
written (the `escaping` parameter): `allow-utf-8` writes them as they are (quoted in braces where
needed), `underscores` replaces each character outside `[a-zA-Z0-9_:]` with `_`, `dots` writes `_` as
`__` and `.` as `_dot_`, `values` writes `U__` then each character outside the set as `_<hex>_`
(prometheus/common model/metric.go: EscapeName, UnescapeName). prometheus_client 0.23-0.26
(openmetrics/exposition.py) escapes OpenMetrics sample names with the label-name character set, so
that `# TYPE vllm:num_requests_running gauge` is followed by `vllm_num_requests_running 3`: samples
are matched to their declared family after folding both names to that set (see `fold`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

#: The escaping schemes the exposition formats define (prometheus/common model.EscapingScheme).
ALLOW_UTF8, UNDERSCORES, DOTS, VALUES = "allow-utf-8", "underscores", "dots", "values"
SCHEMES = frozenset({ALLOW_UTF8, UNDERSCORES, DOTS, VALUES})

#: What Prometheus 3 sends (scrape/scrape.go acceptHeader with config.DefaultScrapeProtocols and the
#: `allow-utf-8` escaping of its default UTF-8 name validation): canonical, unescaped names from any
#: server that can write them; the older formats from those that cannot. prometheus_client's
#: choose_encoder takes the first OpenMetrics entry (q values aside) and answers `escaping=allow-utf-8`.
ACCEPT = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
    "application/openmetrics-text;version=0.0.1;q=0.5,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,"
    "text/plain;version=0.0.4;q=0.3,"
    "*/*;q=0.2"
)

#: What a shown Content-Type is cut to: it comes from the server, and pages and logs show it.
CONTENT_TYPE_SHOWN = 200


@dataclass(frozen=True, slots=True)
class BodyFormat:
    """What a `Content-Type` says about a body: OpenMetrics or the text format, and its escaping.

    `escaping` is the parameter as sent (lowercase), or None where the server named none."""

    openmetrics: bool = False
    escaping: str | None = None


def body_format(content_type: str | None) -> BodyFormat:
    """The format a `Content-Type` header names; anything but OpenMetrics is read as the text format."""
    if not content_type:
        return BodyFormat()
    media_type, _, rest = content_type.partition(";")
    escaping = None
    for parameter in rest.split(";"):
        key, equals, value = parameter.partition("=")
        if equals and key.strip().lower() == "escaping":
            escaping = value.strip().strip('"').lower()[:32] or None
    return BodyFormat(media_type.strip().lower() == "application/openmetrics-text", escaping)


def shown_content_type(content_type: str | None) -> str:
    """A server's Content-Type as pages and logs show it: printable ASCII, bounded."""
    text = "".join(ch if " " <= ch <= "~" else "?" for ch in (content_type or "")[: CONTENT_TYPE_SHOWN + 1])
    return text if len(text) <= CONTENT_TYPE_SHOWN else text[:CONTENT_TYPE_SHOWN] + "..."


_NOT_LEGACY = re.compile(r"[^a-zA-Z0-9_]")


def fold(name: str) -> str:
    """`name` with every character outside `[a-zA-Z0-9_]` (`:` too) as `_`: what prometheus_client's
    `underscores` escaping makes of a sample name, and what both an escaped name and the name it
    was escaped from come to, whichever of Go's or Python's character sets did the escaping."""
    folded = _NOT_LEGACY.sub("_", name)
    if folded[:1].isdigit():
        folded = "_" + folded[1:]
    return folded


def unescape_dots(name: str) -> str:
    """prometheus/common UnescapeName(name, DotsEscaping): `_dot_` is `.`, then `__` is `_`."""
    return name.replace("_dot_", ".").replace("__", "_")


def unescape_values(name: str) -> str:
    """prometheus/common UnescapeName(name, ValueEncodingEscaping): after `U__`, `__` is `_` and
    `_<hex>_` is that code point. A name that does not decode cleanly is returned as it is."""
    if not name.startswith("U__"):
        return name
    out: list[str] = []
    escaped, i = name[3:], 0
    while i < len(escaped):
        char = escaped[i]
        if char != "_":
            out.append(char)
            i += 1
            continue
        i += 1
        if i >= len(escaped):
            return name
        if escaped[i] == "_":
            out.append("_")
            i += 1
            continue
        end = escaped.find("_", i)
        digits = escaped[i:end] if end >= 0 else ""
        if not 1 <= len(digits) <= 6 or any(c not in "0123456789abcdefABCDEF" for c in digits):
            return name
        code = int(digits, 16)
        if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
            return name
        out.append(chr(code))
        i = end + 1
    return "".join(out)


def unescape(name: str, escaping: str | None) -> str:
    """A metric or label name as it was before the server escaped it, where the scheme can tell."""
    if escaping == DOTS:
        return unescape_dots(name)
    if escaping == VALUES:
        return unescape_values(name)
    return name


class DeclaredNames:
    """The sample names of one body's declared families, found again from the names sample lines
    use when a server escaped them: `fold(unescape(written))` against `fold(declared)`.

    Two declared sample names that fold alike (`a:b` and `a_b`) are ambiguous: an escaped sample
    name that folds to them is matched to neither."""

    __slots__ = ("_by_fold", "escaping")

    def __init__(self, escaping: str | None):
        self.escaping = escaping
        #: folded sample name -> (the declared sample name it stands for, its family); None: several
        self._by_fold: dict[str, tuple[str, str] | None] = {}

    def declare(self, family: str, sample_names: Iterable[str]) -> None:
        for name in sample_names:
            key = fold(name)
            known = self._by_fold.get(key, (name, family))
            self._by_fold[key] = known if known == (name, family) else None

    def find(self, written: str) -> tuple[str, str] | None:
        """(declared sample name, family) that `written` stands for; None if none, or several."""
        candidates = [unescape(written, self.escaping)]
        if self.escaping not in (DOTS, VALUES) and written.startswith("U__"):
            candidates.append(unescape_values(written))  # a server that did not say how it escaped
        for candidate in candidates:
            found = self._by_fold.get(fold(candidate))
            if found is not None:
                return found
        return None


#: Each reason a payload's sample lines did not match its declared families (ParseResult.problems),
#: as the log and the target's page explain it, with what to do.
PAYLOAD_PROBLEMS = {
    "escaped_names": (
        "sample names were escaped (the server ignored the escaping=allow-utf-8 we asked for, or said none);"
        " they were read back to the families their TYPE/HELP lines declare"
    ),
    "unmatched_samples": (
        "sample lines name no declared family while declared families got no samples: those samples are served"
        " as untyped families of their own; check the server's Content-Type and its escaping"
    ),
    "unknown_escaping": (
        "the Content-Type names an escaping scheme this exporter does not know; names were read as written"
    ),
}
