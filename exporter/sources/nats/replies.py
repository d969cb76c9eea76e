"""Replies to families: the JSON NIM backends send Dynamo (or Prometheus text), and the NATS
micro-service API's STATS and INFO, each read within the target's sample budget; a reply that cannot
be read says why."""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import TYPE_CHECKING, Any

from exporter.core.family import Family, Sample
from exporter.format.parse import ParseError, parse
from exporter.sources.base import SourceError

if TYPE_CHECKING:
    pass


_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")

#: The longest metric name a reply may give (a longer one is dropped as `invalid_metric`), and the
#: longest label value (worker_id, backend, micro-service names and ids: else the reply is unreadable).
NAME_LENGTH_LIMIT = 200

LABEL_VALUE_LENGTH_LIMIT = 512

_DATA_KEY = re.compile(r"^[a-zA-Z0-9_]+$")


class SampleBudget:
    """The samples a poll may still make under its target's sample_limit, taken before they are made."""

    def __init__(self, limit: int, what: str):
        self.limit = limit
        self.left = limit
        self.what = what

    def take(self, count: int) -> None:
        if not self.limit:
            return
        self.left -= count
        if self.left < 0:
            raise SourceError(
                "sample_limit", f"{self.what} hold more than the sample_limit of {self.limit} samples", retryable=False
            )


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise ValueError(f"is not JSON: {exc}") from None
    except RecursionError:
        raise ValueError("nests arrays or objects deeper than can be read") from None
    if not isinstance(document, dict):
        raise ValueError(f"is JSON but not an object: {_excerpt(body)}")
    return document


def _decode_stats(
    body: bytes, fmt: str, labels: dict[str, str], dropped: Counter[str], samples: SampleBudget | None = None
) -> list[Family]:
    """One runtime_stats reply body -> families. ValueError says why a body cannot be read at all."""
    if fmt == "prometheus":
        try:
            result = parse(body)
        except ParseError as exc:
            raise ValueError(f"is not Prometheus exposition text: {exc}") from None
        if samples is not None:
            samples.take(sum(len(family.samples) for family in result.families))
        if result.truncated_lines:
            dropped["truncated_line"] += result.truncated_lines
        return result.families
    return runtime_stats_families(_json_object(body), labels, dropped, samples)


def _is_number(value: object) -> bool:
    """A JSON number a float holds: not a bool, and not an integer of 400 digits (OverflowError)."""
    if isinstance(value, float):
        return True
    if not isinstance(value, int) or isinstance(value, bool):
        return False
    try:
        float(value)
    except OverflowError:
        return False
    return True


def _size(data: object) -> int:
    return len(data) if isinstance(data, dict) else 0


def _label_value(value: object, what: str) -> str:
    text = str(value)
    if len(text) > LABEL_VALUE_LENGTH_LIMIT:
        raise ValueError(f"has a {what} of {len(text)} characters, over the limit of {LABEL_VALUE_LENGTH_LIMIT}")
    return text


def runtime_stats_families(
    reply: object, labels: dict[str, str], dropped: Counter[str], samples: SampleBudget | None = None
) -> list[Family]:
    """A runtime_stats reply -> one family per metric, labelled with its `worker_id` and `backend`.

    A metric with an invalid name or a value that is not a number is dropped and counted as
    `invalid_metric`; unknown fields are ignored. ValueError when the reply has no `metrics` object.
    """
    if not isinstance(reply, dict):
        raise ValueError(f"is not a JSON object but {type(reply).__name__}")
    metrics = reply.get("metrics")
    if not isinstance(metrics, dict):
        raise ValueError('has no "metrics" object')
    labels = dict(labels)
    for key in ("worker_id", "backend"):
        value = reply.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value):
            labels[key] = _label_value(value, key)
    groups = [(group, kind, metrics.get(group)) for group, kind in (("gauges", "gauge"), ("counters", "counter"))]
    for group, _, members in groups:
        if members is not None and not isinstance(members, dict):
            raise ValueError(f'has "metrics.{group}" that is not an object')
    if samples is not None:  # counted before any is made
        samples.take(sum(len(members) for _, _, members in groups if members))
    families: list[Family] = []
    for _group, kind, members in groups:
        if members is None:
            continue
        for name, value in members.items():
            if (
                len(name) > NAME_LENGTH_LIMIT
                or not _METRIC_NAME.match(name)
                or not _is_number(value)
                or (kind == "counter" and not value >= 0)
            ):
                dropped["invalid_metric"] += 1
                continue
            sample = name if kind == "gauge" or name.endswith("_total") else name + "_total"
            families.append(Family(name, kind, samples=[Sample(sample, dict(labels), float(value))]))
    return families


_MICRO = "nats_micro_"

_MICRO_HELP = {
    "endpoint_requests": ("counter", "Requests the endpoint of this micro-service instance has received."),
    "endpoint_errors": ("counter", "Requests the endpoint of this micro-service instance answered with an error."),
    "endpoint_processing_time_seconds": (
        "counter",
        "Time the endpoint of this micro-service instance spent on requests.",
    ),
    "endpoint_average_processing_time_seconds": (
        "gauge",
        "Average time the endpoint of this instance spends on one request.",
    ),
    "info": ("gauge", "Identity of a micro-service instance from $SRV.INFO; always 1."),
}


class _MicroFamilies:
    """$SRV.STATS replies -> `nats_micro_*` families, one series per instance and endpoint."""

    def __init__(self, dropped: Counter[str], samples: SampleBudget | None = None):
        self.dropped = dropped
        self.samples = samples
        self._families: dict[str, Family] = {}

    def _add(self, name: str, labels: dict[str, str], value: float, kind: str = "gauge", help_text: str = "") -> None:
        family = self._families.get(name)
        if family is None:
            kind, help_text = _MICRO_HELP.get(name, (kind, help_text))
            family = self._families[name] = Family(_MICRO + name, kind, help_text)
        sample = family.name + ("_total" if family.type == "counter" else "")
        family.samples.append(Sample(sample, labels, value))

    def add(self, stats: dict[str, Any], identities: dict[str, dict[str, Any]]) -> None:
        """One instance's stats reply. ValueError if it is not one (no id or no endpoints list)."""
        instance, endpoints = stats.get("id"), stats.get("endpoints") or []
        if not isinstance(instance, str) or not isinstance(endpoints, list):
            raise ValueError('is not a $SRV.STATS reply (no "id" or no "endpoints" list)')
        identity = identities.get(instance, {})
        service = {
            "service": _label_value(stats.get("name") or identity.get("name") or "", "service name"),
            "instance_id": _label_value(instance, "instance id"),
            "version": _label_value(stats.get("version") or identity.get("version") or "", "version"),
        }
        description = _label_value(identity.get("description") or "", "description")
        endpoint_labels = [  # every label checked, and the samples counted, before any sample is made
            {
                **service,
                "endpoint": _label_value(e.get("name", ""), "endpoint name"),
                "subject": _label_value(e.get("subject", ""), "subject"),
            }
            if isinstance(e, dict)
            else None
            for e in endpoints
        ]
        if self.samples is not None:
            self.samples.take(1 + sum(4 + _size(e.get("data")) for e in endpoints if isinstance(e, dict)))
        self._add("info", {**service, "description": description}, 1.0)
        for endpoint, labels in zip(endpoints, endpoint_labels):
            if labels is None:
                self.dropped["invalid_metric"] += 1
                continue
            for key, name, scale in (
                ("num_requests", "endpoint_requests", 1.0),
                ("num_errors", "endpoint_errors", 1.0),
                ("processing_time", "endpoint_processing_time_seconds", 1e-9),
                ("average_processing_time", "endpoint_average_processing_time_seconds", 1e-9),
            ):
                value = endpoint.get(key)
                if _is_number(value) and value >= 0:
                    self._add(name, dict(labels), value * scale)
                else:
                    self.dropped["invalid_metric"] += 1
            data = endpoint.get("data")
            for key, value in data.items() if isinstance(data, dict) else ():
                if not _is_number(value):
                    continue  # text and nested members of `data` are not metrics
                if len(key) > NAME_LENGTH_LIMIT or not _DATA_KEY.match(key):
                    self.dropped["invalid_metric"] += 1
                    continue
                self._add(
                    f"endpoint_data_{key}",
                    dict(labels),
                    float(value),
                    help_text=f"Member {key!r} of the endpoint's stats data.",
                )

    def families(self) -> list[Family]:
        return list(self._families.values())


def _excerpt(body: bytes, limit: int = 60) -> str:
    text = body[:limit].decode("utf-8", "replace")
    return repr(text + ("..." if len(body) > limit else ""))
