"""Parse Prometheus text-format and OpenMetrics `/metrics` bodies into `Family` values.

This runs once per scrape of every target, so common lines take a fast, cached path; anything else goes
to a careful reader that accepts what real servers write and says exactly what it rejects.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import accumulate, compress, repeat
from operator import is_, itemgetter, ne
from typing import cast

from exporter.core.family import TYPES, Family, Sample
from exporter.format.escaping import DOTS, SCHEMES, VALUES, DeclaredNames, unescape

__all__ = ["ParseError", "ParseResult", "is_openmetrics", "parse"]


class ParseError(ValueError):
    """A line that is not exposition text; `line` is 1-based so it can be found in the body."""

    def __init__(self, line: int, message: str):
        super().__init__(line, message)
        self.line = line
        self.message = message

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass(slots=True)
class ParseResult:
    """The families of one body, merged by name in order of first appearance."""

    families: list[Family]
    #: 1 when the body ended mid-line (no final newline) and that partial line was dropped.
    truncated_lines: int = 0
    #: Where sample lines do not match the families the body declares, by reason: how many sample
    #: lines (`escaped_names`: read back to their declared family; `unmatched_samples`: served as
    #: families of their own while declared families went empty), or 1 (`unknown_escaping`).
    problems: dict[str, int] = field(default_factory=dict)
    #: HELP, TYPE and UNIT lines read.
    metadata_lines: int = 0


def is_openmetrics(content_type: str | None) -> bool:
    """True for `application/openmetrics-text` with any version or parameters; anything else is text."""
    if not content_type:
        return False
    media_type = content_type.partition(";")[0].strip().lower()
    return media_type == "application/openmetrics-text"


def parse(
    data: bytes | str,
    *,
    openmetrics: bool = False,
    escaping: str | None = None,
    keep: Callable[[str], bool] | None = None,
    order: list[Sample | None] | None = None,
) -> ParseResult:
    """Parse one body. Raises ParseError for a malformed line, except a cut-off last line, which is dropped.

    `keep`, given a family name, says whether that family is wanted: the sample lines of unwanted families
    are skipped before they are parsed (so a family nobody wants costs little, and its errors none).
    Nothing outlives the call: what a target remembers from one body to the next is its pipeline's
    (exporter.pipeline.target).
    `order`, when given, receives one entry per sample line in body order: its Sample, or None where
    the line was skipped as unwanted.
    `escaping` is the `escaping` parameter of the body's Content-Type (exporter.format.escaping): escaped
    sample, family and label names are read back to the names the body's families declare.
    """
    text, truncated = _decode(data)
    result = _parse_fast(text, truncated, openmetrics, escaping, keep, order, None)
    if result is not None:
        return result
    return _parse_by_line(text, truncated, openmetrics, escaping, keep, {}, order, None)


def _parse_by_line(
    text: str,
    truncated: int,
    openmetrics: bool,
    escaping: str | None,
    keep: Callable[[str], bool] | None,
    heads: dict,
    order: list | None,
    metadata: dict | None,
) -> ParseResult:
    """`parse` one line at a time: the authority on what a body means and on where it is wrong."""
    lines = text.split("\n")
    complete = lines[-1] == ""
    if complete:
        lines.pop()
    builder = _FamilyBuilder(openmetrics, keep, escaping, {} if metadata is None else metadata)
    try:
        _read_lines(lines, builder, heads, order)
    except ParseError as error:
        # Only a final line without its newline may be cut short; nothing was added for it.
        if complete or error.line != len(lines):
            raise
        truncated = 1
    return ParseResult(builder.families(), truncated, builder.problems(), builder.metadata_lines)


class _Malformed(Exception):
    """Raised by the line readers; `_read_lines` adds the line number and turns it into ParseError."""


# Names as the text format allows them unquoted. UTF-8 names (Prometheus 3, `escaping=allow-utf-8`) are
# quoted: `{"vllm.cache",le="1"} 3`, `{"a.b"="x"}`, `# TYPE "vllm.cache" histogram` (see _read_braced_sample).
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# What a label name was meant to be, up to where it must end: for error messages only.
_LABEL_TOKEN = re.compile(r"[^=\s,}\"]*")
# A quoted label value with its escapes; possessive so a missing close quote cannot backtrack.
_QUOTED = re.compile(r'"([^"\\]*+(?:\\.[^"\\]*+)*+)"')
_ESCAPE = re.compile(r"\\(.)")
_LABEL_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}
_TEXT_HELP_ESCAPES = {"\\": "\\", "n": "\n"}  # OpenMetrics HELP also unescapes `\"`, like label values
_METADATA_KEYWORDS = frozenset({"HELP", "TYPE", "UNIT"})

#: Sample-name suffixes that belong to a family of each type (the family name plus one of these).
_MEMBER_SUFFIXES = {
    "counter": ("", "_total", "_created"),
    "gauge": ("",),
    "untyped": ("",),
    "unknown": ("",),
    "stateset": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("", "_info"),
}


def _decode(data: bytes | str) -> tuple[str, int]:
    """The body as text, and 1 if a cut-off last line had to go for being invalid UTF-8.

    `\\r\\n` line ends need nothing: every reader below ignores the blank a `\\r` leaves at the end.
    """
    truncated = 0
    if isinstance(data, str):
        text = data
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            last_newline = data.rfind(b"\n")
            if exc.start <= last_newline:
                line = data.count(b"\n", 0, exc.start) + 1
                raise ParseError(line, f"invalid UTF-8 at byte {exc.start}") from None
            # A body cut in the middle of a multi-byte character: same as any cut-off last line.
            text, truncated = _decode(data[: last_newline + 1])[0], 1
    if text.startswith("\ufeff"):
        text = text[1:]
    return text, truncated


def _read_lines(lines: list[str], builder: _FamilyBuilder, heads: dict, order: list | None = None) -> bool:
    """The hot loop: each sample joins the current family when its name fits, else the family named after it.
    True when it stopped at OpenMetrics `# EOF` (what follows is not read)."""
    label_names: dict[str, str] = {}
    allowed, append = builder.allowed, builder.append
    prefilter = builder.filtered
    line_no = 0
    try:
        for line_no, line in enumerate(lines, 1):  # noqa: B007 (read by the except below)
            if line and line[0] != "#":
                if prefilter:  # find the sample's family by its name alone, and skip the line if unwanted
                    named = _METRIC_NAME.match(line)
                    if named is not None:
                        if named.group() in allowed:
                            if append is _discard:
                                if order is not None:
                                    order.append(None)
                                continue
                        elif not builder.wants_sample(named.group()):
                            allowed, append = builder.enter_sample_family(named.group())  # as parsing would
                            if order is not None:
                                order.append(None)
                            continue
                head, _, value_text = line.rpartition(" ")
                known = heads.get(head) or _read_head(head, label_names, heads)
                # float() also takes `1_000` and non-ASCII digits, which Go's ParseFloat refuses.
                sample: Sample | None
                if known is not None and "_" not in value_text and value_text.isascii():
                    try:
                        sample = Sample(known[0], known[1], float(value_text), head)
                    except ValueError:
                        sample = _read_sample_carefully(line)
                else:
                    sample = _read_sample_carefully(line)
                if sample is not None:
                    if sample.name not in allowed:
                        allowed, append = builder.enter_sample_family(sample.name)
                    append(sample)
                    if order is not None:
                        order.append(None if append is _discard else sample)
                    continue
                line = line.strip()  # blank, or a comment indented with blanks
            if line.startswith("#"):
                if not builder.read_comment(line):
                    return True
                allowed, append = builder.allowed, builder.append
    except _Malformed as exc:
        raise ParseError(line_no, str(exc)) from None
    return False


def _parse_fast(
    text: str,
    truncated: int,
    openmetrics: bool,
    escaping: str | None,
    keep: Callable[[str], bool] | None,
    order: list | None,
    metadata: dict | None,
) -> ParseResult | None:
    """`parse` with the plain sample lines read many at once (see `_RunReader`); the same result as
    `_parse_by_line`, or None where a line is wrong: that one then says which, and where."""
    builder = _FamilyBuilder(openmetrics, keep, escaping, {} if metadata is None else metadata)
    reader = _RunReader(builder, order)
    if not text or text.endswith("\n"):
        whole, last = (text[:-1] if text else None), None
    else:  # the last line has no newline: it may be cut short, and is read on its own
        cut = text.rfind("\n")
        whole, last = (text[:cut] if cut >= 0 else None), text[cut + 1 :]
    mark = 0 if order is None else len(order)
    try:
        stopped = whole is not None and reader.read(whole)
        if last is not None and not stopped:
            try:
                reader.read_lines([last])
            except ParseError:
                truncated = 1  # as `_parse_by_line` drops it; nothing was added for it
    except ParseError:
        if order is not None:
            del order[mark:]
        return None
    return ParseResult(builder.families(), truncated, builder.problems(), builder.metadata_lines)


#: A line `_read_lines` may read on its fast path, split as it splits it: the head (up to the line's last
#: blank: a name, or anything that ends with `}`) and the value after it. Whether the head is `name` or
#: `name{plain labels}` is worked out for all heads at once (`_RunReader.read_heads`). A line with a
#: timestamp or an exemplar is not one (its head would end with a number).
_CANDIDATE = re.compile(r"\n([^ \n#][^\n]*\}|[a-zA-Z_:][a-zA-Z0-9_:]*) ([^ \n]+)(?=\n|\Z)")
#: How much of a body is read at once: the lists made for it stay small (memory, and the work of each
#: garbage collection that the samples bring on, which walks every list alive).
_CHUNK = 1 << 20


class _RunReader:
    """Reads lines as `_read_lines` does, into the same builder, with the work of each run of plain
    sample lines for one family done at C speed over the run: a split of the text finds the lines that
    may be plain samples (`_CANDIDATE`), one split of their heads on quotes reads all their labels, and
    every other line (comments, blanks, timestamps, exemplars, escapes, odd blanks, errors) goes to
    `_read_lines` in body order."""

    __slots__ = ("builder", "heads", "label_names", "order", "plain", "skeletons")

    def __init__(self, builder: _FamilyBuilder, order: list | None):
        self.builder = builder
        self.order = order
        self.heads: dict = {}  # for `_read_lines`
        self.label_names: dict[str, str] = {}  # `,name=` -> name, for `_read_plain_labels`
        #: a head with its label values emptied -> (metric name or None, label names, how many values)
        self.skeletons: dict[str, tuple[str | None, tuple[str, ...], int]] = {}
        #: False once most lines of a piece were not plain samples (a server that writes a timestamp on
        #: every line, say): the next pieces go to `_read_lines` whole, without a split that finds few.
        self.plain = True

    def read(self, text: str) -> bool:
        """Read complete lines (`text` without its last newline); True at OpenMetrics `# EOF`."""
        start = 0
        while start <= len(text):
            end = text.find("\n", start + _CHUNK)
            if end < 0:
                end = len(text)
            chunk = text[start:end]
            if self.read_chunk("\n" + chunk) if self.plain else self.read_lines(chunk.split("\n")):
                return True
            start = end + 1
        return False

    def read_lines(self, lines: list[str]) -> bool:
        return _read_lines(lines, self.builder, self.heads, self.order)

    def read_chunk(self, text: str) -> bool:
        """Read the lines of `text`, each after a newline; True at `# EOF`."""
        builder, order, read_lines = self.builder, self.order, self.read_lines
        parts = _CANDIDATE.split(text)
        betweens, series, values = parts[0::3], parts[1::3], parts[2::3]
        del parts
        count = len(series)
        if count * 2 < text.count("\n"):
            self.plain = False
        if not count:
            return read_lines(text[1:].split("\n"))
        # Every value at once, while they are at hand; if one is not for the fast path, each run's own.
        every_number = _plain_values(values)
        names, label_names, label_values, offsets = self.read_heads(series, "\\" in text)
        # Where the family a line joins may change: after other lines, where the name changes, and
        # around a head that is not plain (`_read_lines` reads it, and says what is wrong with it).
        events = set(compress(range(count), betweens))
        events.update(compress(range(1, count), map(ne, names[1:], names)))
        events.update(compress(range(count), map(is_, names, repeat(None))))
        events.add(0)
        events.discard(count)

        def hand_over(start: int, end: int) -> None:
            """Samples start..end join the current family (all their names fit it)."""
            append = builder.append
            if append is _discard:
                if order is not None:
                    order.extend([None] * (end - start))
                return
            numbers = _plain_values(values[start:end]) if every_number is None else every_number[start:end]
            if numbers is None:  # a value only the careful reader can judge
                read_lines([head + " " + value for head, value in zip(series[start:end], values[start:end])])
                return
            pairs = iter(label_values[offsets[start] : offsets[end]])
            labels = map(dict, map(zip, label_names[start:end], repeat(pairs)))
            # A run handed over has names only: `events` splits the heads not read (None) into runs of their own.
            run_names = cast("list[str]", names[start:end])
            samples = list(map(Sample, run_names, labels, numbers, series[start:end]))
            if builder.extend is not None:
                builder.extend(samples)
            else:
                for sample in samples:
                    append(sample)
            if order is not None:
                order.extend(samples)

        start = 0
        other: list[str] = []  # lines for `_read_lines`, read in one call before the next plain sample
        for i in sorted(events):
            between, name = betweens[i], names[i]
            if not other and not between and name is not None and name in builder.allowed:
                continue
            if start < i:  # (`other` is empty: a head that is not plain makes the next line an event)
                hand_over(start, i)
            if between:
                other += between[1:].split("\n")
            if name is None:
                other.append(series[i] + " " + values[i])
                start = i + 1
                continue
            if other:
                if read_lines(other):
                    return True
                other = []
            if name not in builder.allowed:
                builder.enter_sample_family(name)
            start = i
        if start < count:
            hand_over(start, count)
        if betweens[count]:
            other += betweens[count][1:].split("\n")
        return bool(other) and read_lines(other)

    def read_heads(
        self, series: list[str], escapes: bool
    ) -> tuple[list[str | None], list[tuple[str, ...]], list[str], list[int]]:
        """Each head's metric name (None where `_read_head` would not read it as `name` or `name{plain
        labels}`) and label names; all label values in body order; and where each head's values start
        in them (one more entry, for the end).

        Without backslashes every quote delimits a value, so one split of all heads on quotes gives every
        value, and the heads with their values emptied (`name{a="",b=""}`), which decide the names: few
        distinct texts in a body, each read once as `_read_head` reads a head."""
        if escapes:  # a head with a backslash is read by `_read_lines`
            series = ["{" if "\\" in head else head for head in series]
        pieces = "\n".join(series).split('"')
        skeletons = '""'.join(pieces[0::2]).split("\n")
        # A head with an odd number of quotes (not plain) takes the newline after it into a value, or
        # leaves an odd number of quotes in all, if it is the last.
        if len(skeletons) != len(series) or not len(pieces) & 1:
            series = ["{" if head.count('"') & 1 else head for head in series]
            pieces = "\n".join(series).split('"')
            skeletons = '""'.join(pieces[0::2]).split("\n")
        values = list(map(sys.intern, pieces[1::2]))  # values repeat across series (`le`, model names)
        del pieces
        known = self.skeletons
        for skeleton in set(skeletons).difference(known):
            known[skeleton] = (*_read_skeleton(skeleton, self.label_names), skeleton.count('""'))
        heads = list(map(known.__getitem__, skeletons))
        offsets = list(accumulate(map(itemgetter(2), heads), initial=0))
        return list(map(itemgetter(0), heads)), list(map(itemgetter(1), heads)), values, offsets


def _read_skeleton(skeleton: str, label_names: dict[str, str]) -> tuple[str | None, tuple[str, ...]]:
    """(name, label names) of a head whose label values are emptied, as `_read_head` reads the head;
    (None, ()) where it would not."""
    brace = skeleton.find("{")
    if brace < 0:
        return (sys.intern(skeleton), ()) if _METRIC_NAME.fullmatch(skeleton) else (None, ())
    name = skeleton[:brace]
    if not skeleton.endswith("}") or not _METRIC_NAME.fullmatch(name):
        return None, ()
    labels = _read_plain_labels(skeleton[brace + 1 : -1], label_names)
    return (None, ()) if labels is None else (sys.intern(name), tuple(labels))


def _plain_values(values: list[str]) -> list[float] | None:
    """The values as `_read_lines` reads them on its fast path, or None if one is not for it."""
    joined = "".join(values)
    if "_" in joined or not joined.isascii():
        return None
    try:
        return list(map(float, values))
    except ValueError:
        return None


def _read_head(head: str, label_names: dict[str, str], heads: dict) -> tuple[str, dict[str, str]] | None:
    """Name and labels when `head` is exactly `name` or `name{labels}`, and remember them; else None.

    None sends the whole line to the careful reader: timestamps, exemplars, blanks in odd places, errors.
    `label_names` caches each `,name=` text seen between label values so each is checked once per body.
    """
    brace = head.find("{")
    if brace < 0:
        if not _METRIC_NAME.fullmatch(head):
            return None
        known: tuple[str, dict[str, str]] = (head, {})
    else:
        name = sys.intern(head[:brace])  # one string per metric name, not one per series
        if not head.endswith("}") or not _METRIC_NAME.fullmatch(name):
            return None
        if "\\" in head:
            labels = _read_escaped_head_labels(head, brace)
        else:
            labels = _read_plain_labels(head[brace + 1 : -1], label_names)
        if labels is None:
            return None
        known = (name, labels)
    heads[head] = known
    return known


def _read_plain_labels(body: str, label_names: dict[str, str]) -> dict[str, str] | None:
    """Labels from `a="x", b="y"` with no escapes, or None when anything is unusual.

    Without backslashes every quote delimits a value, so splitting on quotes alternates between
    what stands between values (`,name=`) and the values themselves, `{` `}` `,` `=` included.
    """
    pieces = body.split('"')
    if not len(pieces) & 1:
        return None  # an odd number of quotes: a value is not closed
    values = list(map(sys.intern, pieces[1::2]))  # values repeat across series (`le`, model names)
    if not values:
        return {} if not body or body.isspace() else None
    separators = pieces[0::2]
    tail = separators.pop()
    if tail and tail.strip() not in ("", ","):
        return None
    separators[0] = "," + separators[0]  # so every name reads `,name=`
    try:
        names = [label_names[separator] for separator in separators]
    except KeyError:
        names = []
        for separator in separators:
            name = _label_name_between_values(separator)
            if name is None:
                return None
            label_names[separator] = name
            names.append(name)
    labels = dict(zip(names, values))
    if len(labels) != len(values):
        return None  # a duplicate name: the careful reader says which
    return labels


def _label_name_between_values(separator: str) -> str | None:
    """`a` from `,a=` or `, a = `: what stands between two label values. None if it is anything else."""
    text = separator.strip()
    if not text.startswith(","):
        return None
    text = text[1:].strip()
    if not text.endswith("="):
        return None
    name = text[:-1].rstrip()
    return name if _LABEL_NAME.fullmatch(name) else None


def _read_escaped_head_labels(head: str, brace: int) -> dict[str, str] | None:
    """Labels with backslash escapes, when the label set is all that follows the name."""
    try:
        labels, end = _read_labels_carefully(head, brace + 1)
    except _Malformed:
        return None
    return labels if end == len(head) else None


def _read_sample_carefully(line: str) -> Sample | None:
    """Any sample line, blanks and tabs anywhere, escapes in label values. None for blank or comment lines."""
    text = line.strip()
    if not text or text[0] == "#":
        return None
    match = _METRIC_NAME.match(text)
    if match is None:
        if text[0] == "{":
            return _read_braced_sample(text)
        raise _Malformed(f"not a sample or comment line: {_excerpt(text)}")
    name, position = match.group(), match.end()
    rest = text[position:].lstrip(" \t")
    if rest.startswith("{"):
        labels, end = _read_labels_carefully(rest, 1)
        after = rest[end:]
    elif position < len(text) and text[position] not in " \t":
        raise _Malformed(f"invalid metric name {_excerpt(text.split()[0])}")
    else:
        labels, after = {}, rest
    return Sample(name, labels, _read_value_carefully(after))


def _read_braced_sample(text: str) -> Sample:
    """`{"name", labels} value ...`: a sample whose (UTF-8) metric name is quoted inside its braces."""
    position = _skip_blanks(text, 1)
    quoted = _QUOTED.match(text, position)
    if quoted is None:
        raise _Malformed("a sample without a metric name before its labels")
    after = _skip_blanks(text, quoted.end())
    if text.startswith("=", after):
        raise _Malformed("a sample without a metric name: its braces start with a label")
    name = _unescape(quoted.group(1), _LABEL_ESCAPES)
    if not name:
        raise _Malformed("empty metric name")
    if text.startswith(",", after):
        labels, end = _read_labels_carefully(text, after + 1)
    elif text.startswith("}", after):
        labels, end = {}, after + 1
    else:
        raise _Malformed(f"expected ',' or '}}' after metric name {_excerpt(name)}")
    return Sample(name, labels, _read_value_carefully(text[end:]))


def _read_labels_carefully(text: str, position: int) -> tuple[dict[str, str], int]:
    """Labels from `text` just after its `{`, and the index after the closing `}`."""
    labels: dict[str, str] = {}
    expect_name = True
    while True:
        position = _skip_blanks(text, position)
        if position >= len(text):
            raise _Malformed("label set is not closed with '}'")
        if text[position] == "}":
            return labels, position + 1
        if not expect_name:
            raise _Malformed(f"expected ',' or '}}' after label {_excerpt(list(labels)[-1])}")
        if text[position] == '"':  # a quoted UTF-8 label name
            quoted = _QUOTED.match(text, position)
            if quoted is None:
                raise _Malformed("quoted label name has no closing quote")
            name = _unescape(quoted.group(1), _LABEL_ESCAPES)
            if not name:
                raise _Malformed("empty label name")
            position = _skip_blanks(text, quoted.end())
        else:
            token = _LABEL_TOKEN.match(text, position)
            assert token is not None  # the pattern matches the empty string too
            name = token.group()
            if not _LABEL_NAME.fullmatch(name):
                raise _Malformed(f"invalid label name {_excerpt(name or text[position:])}")
            position = _skip_blanks(text, position + len(name))
        if not text.startswith("=", position):
            raise _Malformed(f"expected '=' after label name {name!r}")
        position = _skip_blanks(text, position + 1)
        if not text.startswith('"', position):
            raise _Malformed(f"value of label {name!r} is not quoted")
        quoted = _QUOTED.match(text, position)
        if quoted is None:
            raise _Malformed(f"value of label {name!r} has no closing quote")
        if name in labels:
            raise _Malformed(f"duplicate label name {name!r}")
        labels[name] = _unescape(quoted.group(1), _LABEL_ESCAPES)
        position = _skip_blanks(text, quoted.end())
        expect_name = text.startswith(",", position)
        if expect_name:
            position += 1


def _skip_blanks(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t":
        position += 1
    return position


def _read_value_carefully(after: str) -> float:
    """`value [timestamp] [# {exemplar labels} value [timestamp]]`: all checked, only the value kept."""
    numbers, hash_mark, exemplar = after.partition("#")
    tokens = numbers.split()
    if not tokens:
        raise _Malformed("sample has no value")
    if len(tokens) > 2:
        raise _Malformed(f"unexpected text after value and timestamp: {_excerpt(' '.join(tokens[2:]))}")
    value = _read_number(tokens[0], "value")
    if len(tokens) == 2:
        _read_number(tokens[1], "timestamp")
    if hash_mark:
        _check_exemplar(exemplar)
    return value


def _check_exemplar(text: str) -> None:
    """OpenMetrics exemplar after ` # `: a label set, a value, maybe a timestamp."""
    text = text.strip()
    if not text.startswith("{"):
        raise _Malformed(f"expected an exemplar label set after '#', got {_excerpt(text)}")
    _, end = _read_labels_carefully(text, 1)
    tokens = text[end:].split()
    if not 1 <= len(tokens) <= 2:
        raise _Malformed(f"exemplar needs a value and at most a timestamp: {_excerpt(text)}")
    for token in tokens:
        _read_number(token, "exemplar value")


def _read_number(token: str, what: str) -> float:
    """A float as Go's ParseFloat reads the values servers write (`1e+06`, `+Inf`, `NaN`); no `_` separators."""
    if "_" not in token and token.isascii():
        try:
            return float(token)
        except ValueError:
            pass
    raise _Malformed(f"invalid {what} {_excerpt(token)}")


def _unescape(text: str, escapes: dict[str, str]) -> str:
    """Resolve backslash escapes; unknown ones stay as written, like prometheus_client does."""
    if "\\" not in text:
        return text
    return _ESCAPE.sub(lambda match: escapes.get(match.group(1), match.group(0)), text)


def _excerpt(text: str, limit: int = 60) -> str:
    """Quote a piece of the input for an error message, cut so an HTML page does not fill the log."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _quoted_metadata_name(line: str, keyword: str) -> tuple[str, str]:
    """(name, rest) of `# HELP "a.b" text` or `# TYPE "a.b" gauge`: a quoted UTF-8 family name."""
    quoted = _QUOTED.match(line, line.index('"'))
    if quoted is None:
        raise _Malformed(f"quoted metric name in {keyword} line has no closing quote")
    name = _unescape(quoted.group(1), _LABEL_ESCAPES)
    rest = line[quoted.end() :]
    if not name or (rest and not rest[0].isspace()):
        raise _Malformed(f"invalid metric name {_excerpt(line[quoted.start() : quoted.end() + 1])} in {keyword} line")
    return name, rest.strip()


class _FamilyBuilder:
    """Families by name as lines arrive, and the family samples currently join."""

    __slots__ = (
        "_as_written",
        "_declared",
        "_default_type",
        "_escaping",
        "_families",
        "_help_escapes",
        "_keep",
        "_members",
        "_metadata",
        "_openmetrics",
        "_renamed",
        "_typed",
        "_wanted",
        "_written",
        "allowed",
        "append",
        "escaped_samples",
        "extend",
        "metadata_lines",
    )

    def __init__(
        self,
        openmetrics: bool,
        keep: Callable[[str], bool] | None = None,
        escaping: str | None = None,
        metadata: dict | None = None,
    ):
        self._openmetrics = openmetrics
        self._escaping = escaping
        #: The declared families' sample names by how an escaping server writes them; made when a
        #: sample first names no family (see `_read_back`).
        self._declared: DeclaredNames | None = None
        #: sample name as written -> the name it was read back to; family -> names written for it
        self._renamed: dict[str, str] = {}
        self._written: dict[str, frozenset[str]] = {}
        #: True while every name is read as written (the usual body): `_enter` then does no more.
        self._as_written = escaping not in _UNESCAPED
        self.escaped_samples = 0
        self._keep = keep
        self._wanted: dict[str, bool] = {}
        self._default_type = "unknown" if openmetrics else "untyped"
        self._help_escapes = _LABEL_ESCAPES if openmetrics else _TEXT_HELP_ESCAPES
        self._metadata = {} if metadata is None else metadata
        self.metadata_lines = 0
        self._families: dict[str, Family] = {}
        self._typed: set[str] = set()  # names whose type came from a TYPE line, so the first one wins
        self.allowed: frozenset[str] = frozenset()
        self.append: Callable[[Sample], None] = _no_current_family
        #: The current family's `samples.extend` where `append` is its `samples.append`, else None.
        self.extend: Callable[[list[Sample]], None] | None = None
        #: (name, type) -> the sample names such a family takes (`_member_names`), for this body.
        self._members: dict[tuple[str, str], frozenset[str]] = {}

    @property
    def filtered(self) -> bool:
        return self._keep is not None

    def families(self) -> list[Family]:
        families: Iterable[Family] = self._families.values()
        if self._keep is not None:
            families = [family for name, family in self._families.items() if self.wants(name)]
        doubled = [
            family
            for family in families
            if family.type == "counter" and family.name.endswith("_total") and _is_doubled(family)
        ]
        if doubled:
            return [*families, *_read_doubled_totals(doubled, families)]
        return list(families)

    def wants(self, name: str) -> bool:
        wanted = self._wanted.get(name)
        if wanted is None:
            wanted = self._wanted[name] = self._keep is None or self._keep(name)
        return wanted

    def wants_sample(self, name: str) -> bool:
        """Whether the family a sample of this name (as written) joins is wanted."""
        if name in self._families:
            return self.wants(name)
        return self.wants(self._read_back(name)[1])

    def enter_sample_family(self, name: str) -> tuple[frozenset[str], Callable[[Sample], None]]:
        """A sample that is not the current family's: it joins the family it was declared in (after
        reading back an escaped name), else the family with its own name."""
        family = self._families.get(name)
        if family is None:
            sample_name, family_name = self._read_back(name)
            if sample_name != name and len(self._written.get(family_name, ())) >= _WRITTEN_LIMIT:
                # A server writes each of a family's few sample names one way: this many ways is a
                # crafted body, and reading each back would cost a pass over all of them.
                sample_name = family_name = name
            if sample_name != name:
                self._renamed[name] = sample_name
                self._written[family_name] = self._written.get(family_name, frozenset()) | {name}
                self._as_written = False
            family = self._family(family_name)
        self._enter(family)
        return self.allowed, self.append

    def _read_back(self, name: str) -> tuple[str, str]:
        """(sample name, family name) for a sample name as written that names no family."""
        if self._declared is None:
            self._declared = DeclaredNames(self._escaping)
            for family in self._families.values():
                if self._is_declared(family):
                    self._declared.declare(family.name, self._member_names(family.name, family.type))
        found = self._declared.find(name)
        if found is not None:
            return found
        unescaped = unescape(name, self._escaping)  # a family nothing declared, escaped all the same
        return unescaped, unescaped

    def _is_declared(self, family: Family) -> bool:
        return family.name in self._typed or bool(family.help) or bool(family.unit)

    def problems(self) -> dict[str, int]:
        """See ParseResult.problems."""
        problems: dict[str, int] = {}
        if self.escaped_samples:
            problems["escaped_names"] = self.escaped_samples
        if self._escaping is not None and self._escaping not in SCHEMES:
            problems["unknown_escaping"] = 1
        families: Iterable[Family] = self._families.values()
        if self._keep is not None:
            families = [family for family in families if self.wants(family.name)]
        if any(not family.samples and self._is_declared(family) for family in families):
            unmatched = sum(len(family.samples) for family in families if not self._is_declared(family))
            if unmatched:
                problems["unmatched_samples"] = unmatched
        return problems

    def read_comment(self, line: str) -> bool:
        """Apply a HELP, TYPE or UNIT line; ignore other comments. False at OpenMetrics `# EOF`."""
        known = self._metadata.get(line)
        if known is None:
            known = self._read_metadata(line)
            if known is None:
                return False
            if known is _PLAIN_COMMENT:
                return True  # not remembered: any text at all may follow a `#`
            self._metadata[line] = known
        self.metadata_lines += 1
        self._apply_metadata(*known)
        return True

    def _read_metadata(self, line: str) -> tuple[str, str, str] | None:
        """(keyword, name, value) of a HELP, TYPE or UNIT line, checked and unescaped; _PLAIN_COMMENT for
        other comments; None at OpenMetrics `# EOF`."""
        # Blanks are ASCII spaces and tabs: HELP keeps leading Unicode whitespace (NBSP, em space), as
        # prometheus_client does; the classic format strips trailing whitespace, OpenMetrics only `\r`.
        parts = _BLANKS.split(line.strip(" \t\r"), 3)
        if len(parts) < 3 or parts[0] != "#" or parts[1] not in _METADATA_KEYWORDS:
            if len(parts) == 2 and parts[0] == "#":
                if parts[1] == "EOF" and self._openmetrics:
                    return None
                if parts[1] in _METADATA_KEYWORDS:
                    raise _Malformed(f"{parts[1]} line without a metric name")
            return _PLAIN_COMMENT  # `#`, `# some text`, `#HELP ...` and the like are plain comments
        keyword, name, text = parts[1], parts[2], parts[3] if len(parts) == 4 else ""
        quoted = name.startswith('"')
        if quoted:
            name, text = _quoted_metadata_name(line, keyword)
        elif keyword != "HELP":
            text = text.strip()
        elif not self._openmetrics:
            text = text.rstrip()
        if keyword == "TYPE" and text.lower() not in TYPES:
            if not text:
                raise _Malformed(f"TYPE line for {name!r} has no type")
            raise _Malformed(f"unknown metric type {_excerpt(text)} for {name!r}")
        if not quoted and not _METRIC_NAME.fullmatch(name):
            raise _Malformed(f"invalid metric name {_excerpt(name)} in {keyword} line")
        if keyword == "HELP":
            text = _unescape(text, self._help_escapes)
        elif keyword == "TYPE":
            text = text.lower()
        return keyword, name, text

    def _apply_metadata(self, keyword: str, name: str, value: str) -> None:
        """Set HELP, TYPE or UNIT where not set yet (the first wins) and make the family current."""
        if self._escaping in _UNESCAPED:
            name = unescape(name, self._escaping)
        family = self._families.get(name)
        if family is None:
            family = self._families[name] = Family(name, self._default_type)
        if keyword == "HELP":
            family.help = family.help or value
        elif keyword == "TYPE":
            if name not in self._typed:
                self._typed.add(name)
                family.type = value
        else:
            family.unit = family.unit or value
        if self._declared is not None:
            self._declared.declare(name, self._member_names(name, family.type))
        self._enter(family)

    def _family(self, name: str) -> Family:
        family = self._families.get(name)
        if family is None:
            family = self._families[name] = Family(name, self._default_type)
        return family

    def _enter(self, family: Family) -> Family:
        """Make `family` the one the next samples join when their names fit its type."""
        self.allowed = self._member_names(family.name, family.type)
        self.extend = None
        if self._as_written:
            if self.wants(family.name):
                self.append, self.extend = family.samples.append, family.samples.extend
            else:
                self.append = _discard
            return family
        written = self._written.get(family.name)
        if written:
            self.allowed = self.allowed | written
        if not self.wants(family.name):
            self.append = _discard
        elif written or self._escaping in _UNESCAPED:
            self.append = self._reading_back(family)
        else:
            self.append, self.extend = family.samples.append, family.samples.extend
        return family

    def _member_names(self, name: str, type_: str) -> frozenset[str]:
        """The sample names a family of this name and type takes; remembered for the body, as a family
        is entered again at each of its sample names that the body interleaves with another's."""
        members = self._members.get((name, type_))
        if members is None:
            members = self._members[name, type_] = frozenset(name + suffix for suffix in _MEMBER_SUFFIXES[type_])
        return members

    def _reading_back(self, family: Family) -> Callable[[Sample], None]:
        """`append` for a family some of whose samples are written with escaped names (or label names)."""
        add, renamed, escaping = family.samples.append, self._renamed, self._escaping
        relabel = escaping in _UNESCAPED

        def append(sample: Sample) -> None:
            name = renamed.get(sample.name)
            if name is not None:
                sample.name = name
                self.escaped_samples += 1
            if relabel and sample.labels:
                labels = {unescape(key, escaping): value for key, value in sample.labels.items()}
                if labels != sample.labels:
                    # A new dict (the parsed one may be shared); the text written no longer names the series.
                    sample.labels, sample.key = labels, None
            add(sample)

        return append


_PLAIN_COMMENT = ("", "", "")
#: The most names as written that are read back to one family's sample names (it has at most five).
_WRITTEN_LIMIT = 8
#: Escaping schemes whose names can be read back exactly, family and label names included.
_UNESCAPED = frozenset({DOTS, VALUES})
_BLANKS = re.compile(r"[ \t]+")


def _is_doubled(family: Family) -> bool:
    """A counter declared `a_total` whose samples are `a_total_total` (and `a_total_created`)."""
    doubled = family.name + "_total"
    if not family.samples or family.samples[0].name != doubled:
        return False  # Go's style (declared `a_total`, sample `a_total`) fails here at once
    created = family.name + "_created"
    return all(sample.name == doubled or sample.name == created for sample in family.samples)


def _read_doubled_totals(doubled: list[Family], families) -> list[Family]:
    """Counters declared `a_total` whose samples are `a_total_total`: the counter OpenMetrics names
    `a_total`, as Prometheus reads it too (a series' metadata is its name's, less one suffix). Renamed
    `a_total_total`, as the classic text format declares such a counter, so that it is served as the
    counter `a_total` and not merged into a counter `a` (sample `a_total`). Where the body has that
    counter `a` as well, the two cannot both be counters in one exposition (OpenMetrics readers reject
    family `a_total` beside a sample `a_total`): the doubled one is then read as prometheus_client's
    text parser reads it, an untyped `a_total_total` (its `a_total_created`, if any, another), and
    every sample is still served. Returns the families this adds."""
    counters = {family.name for family in families if family.type == "counter"}
    added = []
    for family in doubled:
        base = family.name[: -len("_total")]
        created = family.name + "_created"
        family.name += "_total"
        if base in counters:
            family.type = "untyped"
            if any(sample.name == created for sample in family.samples):
                added.append(
                    Family(
                        created, "untyped", family.help, family.unit, [s for s in family.samples if s.name == created]
                    )
                )
                family.samples = [sample for sample in family.samples if sample.name != created]
    return added


def _discard(sample: Sample) -> None:
    """Stands in for `append` while the current family is one the caller does not want."""


def _no_current_family(sample: Sample) -> None:
    """Stands in for `append` until a family is entered; never called, as `allowed` is empty until then."""
    raise AssertionError("no current family")
