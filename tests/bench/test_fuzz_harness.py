"""The fuzz harness (bench/fuzz.py) replays its own seed corpus without a finding: it stays runnable,
and every seed, the fixtures included, passes the checks a fuzzing run applies."""

from __future__ import annotations

import importlib.util

from helpers.support import REPO


def harness():
    spec = importlib.util.spec_from_file_location("fuzz", REPO / "bench" / "fuzz.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_parser_seed_passes_the_fuzz_checks():
    fuzz = harness()
    for seed in fuzz.parser_seeds():
        fuzz.fuzz_parser(seed)


def test_every_config_seed_passes_the_fuzz_checks():
    fuzz = harness()
    for seed in fuzz.config_seeds():
        fuzz.fuzz_config(seed)
