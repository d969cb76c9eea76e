"""What each import costs in resident memory: RSS before and after every module's first execution.

    .venv/bin/python bench/import_memory.py exporter.runtime.daemon            # one import
    .venv/bin/python bench/import_memory.py --seconds 5 -- run --config FILE   # `inference-exporter run` for 5 s
    .venv/bin/python bench/import_memory.py --why pynvml -- run --config FILE  # ... and who imported pynvml

A finder at the head of sys.meta_path wraps every module's loader: the RSS a module's body adds,
less what the modules it imports add, is that module's own. RSS counts pages, shared library
code included (importing `ssl` maps libssl and libcrypto), so a figure is what a module's import
makes resident, not the size of its objects; a page first touched by a later module counts there.
With a command after `--`, the CLI runs in this process (`--fake-nvml` puts the fake NVML host of
tests/helpers/fake_nvml.py in place of pynvml's driver) and is sent SIGTERM after --seconds; the
table then says how much RSS the run added beyond its imports, and the peak (VmHWM). The
checkout's exporter package is byte-compiled first, as an installed one is.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.abc
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def rss_kb() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def peak_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


class Attributing(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loader the other finders find, to time each module's body in RSS."""

    def __init__(self) -> None:
        self.own: dict[str, int] = {}
        self.parent: dict[str, str] = {}
        self._stack: list[list[Any]] = []  # [name, rss at start, rss its children added]
        self._lock = threading.RLock()

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is None:
                continue
            loader = spec.loader
            if loader is None or not hasattr(loader, "exec_module"):
                return spec
            spec.loader = _Wrapped(loader, name, self)
            return spec
        return None

    def enter(self, name: str) -> None:
        if self._stack:
            self.parent.setdefault(name, self._stack[-1][0])
        self._stack.append([name, rss_kb(), 0])

    def leave(self) -> None:
        name, start, children = self._stack.pop()
        total = rss_kb() - start
        self.own[name] = self.own.get(name, 0) + total - children
        if self._stack:
            self._stack[-1][2] += total

    def chain(self, name: str) -> list[str]:
        """Who imported `name`, outermost first."""
        found = [name]
        while found[-1] in self.parent:
            found.append(self.parent[found[-1]])
        return found[::-1]


class _Wrapped(importlib.abc.Loader):
    def __init__(self, loader: Any, name: str, hook: Attributing):
        self._loader, self._name, self._hook = loader, name, hook

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._loader, attribute)

    def create_module(self, spec: Any) -> Any:
        self._hook.enter(self._name)  # an extension module's code is mapped here
        try:
            return self._loader.create_module(spec)
        except BaseException:
            self._hook.leave()
            raise

    def exec_module(self, module: Any) -> None:
        try:
            self._loader.exec_module(module)
        finally:
            self._hook.leave()


def package(name: str) -> str:
    """A module's package for the summary: exporter's by subpackage, others by top-level name."""
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] == "exporter" else parts[0]


def report(hook: Attributing, base: int, top: int, why: list[str]) -> None:
    total = sum(hook.own.values())
    now = rss_kb()
    print(f"bare interpreter {base / 1024:.1f} MB; imports {total / 1024:.1f} MB; RSS now {now / 1024:.1f} MB")
    by_package: dict[str, int] = {}
    for name, kb in hook.own.items():
        by_package[package(name)] = by_package.get(package(name), 0) + kb
    print(f"\n{'kB':>8}  package ({len(by_package)} in all)")
    for name, kb in sorted(by_package.items(), key=lambda pair: -pair[1])[:top]:
        print(f"{kb:>8}  {name}")
    print(f"\n{'kB':>8}  module ({len(hook.own)} in all)")
    for name, kb in sorted(hook.own.items(), key=lambda pair: -pair[1])[:top]:
        print(f"{kb:>8}  {name}")
    for name in why:
        if name in hook.own:
            importers = " <- ".join(reversed(hook.chain(name)[:-1]))
            print(f"\n{name}: imported by {importers or 'the command itself'}")
        else:
            print(f"\n{name}: not imported")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("module", nargs="?", help="a module to import (without a command after --)")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long the command runs (default 5)")
    parser.add_argument("--top", type=int, default=30, help="rows per table (default 30)")
    parser.add_argument("--why", action="append", default=[], help="say who imported this module (repeatable)")
    parser.add_argument("--fake-nvml", action="store_true", help="the NVML source reads tests/helpers/fake_nvml.py")
    argv = sys.argv[1:]
    command = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    if not command and not args.module:
        parser.error("name a module, or a command after --")
    sys.path.insert(0, str(REPO))
    import compileall  # byte-compiled first, as installing the package does: compiling at import costs RSS

    compileall.compile_dir(REPO / "exporter", quiet=1)
    base = rss_kb()
    hook = Attributing()
    sys.meta_path.insert(0, hook)
    if not command:
        importlib.import_module(args.module)
        report(hook, base, args.top, args.why)
        return 0
    if args.fake_nvml:
        sys.path.insert(1, str(REPO / "tests"))
        from helpers.fake_nvml import FakeNVML, eight_gpus

        import exporter.sources.nvml.source

        fake = FakeNVML(eight_gpus())
        exporter.sources.nvml.source.load_binding = lambda: fake
    from exporter.cli import main as cli_main

    ran: dict[str, int] = {}

    def stop(*_: Any) -> None:
        """The figures, then SIGTERM, which the daemon's own handler takes to stop."""
        ran["rss"], ran["peak"] = rss_kb(), peak_kb()
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, args.seconds)
    code = cli_main(command)
    report(hook, base, args.top, args.why)
    imports = sum(hook.own.values())
    if ran:
        print(
            f"\nthe run: RSS {ran['rss'] / 1024:.1f} MB before it stopped, {(ran['rss'] - base - imports) / 1024:+.1f} MB "
            f"beyond the bare interpreter and the imports; peak (VmHWM) {ran['peak'] / 1024:.1f} MB"
        )
    return code


if __name__ == "__main__":
    sys.exit(main())
