"""A target's family allowlist and denylist: which upstream families are worth parsing at all.

Patterns are fully anchored regular expressions, as in Prometheus. Each is tried against the family
name as the upstream writes it (`vllm:num_requests_running`) and as it is served before any prefix
(`vllm_num_requests_running`), so operators can copy either from what they see.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from exporter.core.rules import anchored
from exporter.pipeline.normalize import sanitize_name

#: Decisions kept per filter; names repeat every poll, but a hostile upstream could invent new ones.
_CACHE_LIMIT = 10_000


def family_filter(allow: Sequence[str], deny: Sequence[str]) -> Callable[[str], bool] | None:
    """`keep(name)`: allowed (by `allow`, or by default when it is empty) and not denied. None keeps all."""
    if not allow and not deny:
        return None
    allowed, denied = [anchored(p) for p in allow], [anchored(p) for p in deny]
    decided: dict[str, bool] = {}

    def matches(patterns: list[re.Pattern[str]], name: str) -> bool:
        served = sanitize_name(name)
        return any(p.fullmatch(name) is not None or p.fullmatch(served) is not None for p in patterns)

    def keep(name: str) -> bool:
        verdict = decided.get(name)
        if verdict is None:
            verdict = (not allowed or matches(allowed, name)) and not matches(denied, name)
            if len(decided) < _CACHE_LIMIT:
                decided[name] = verdict
        return verdict

    return keep
