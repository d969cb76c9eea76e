"""`inference-exporter run` in a process of its own, as the benches measure it: the CLI's own `main`, plus
the fake NVML host (tests/helpers/fake_nvml.py) where there is no GPU, and a profiler a signal turns on.

    .venv/bin/python bench/daemon_process.py [--fake-nvml] [--profile PATH] [--checkout DIR] -- run --config FILE ...

Nothing of a bench is imported here, so that the process's peak RSS (VmHWM) and CPU time
(/proc/PID/stat) are the daemon's alone, as a user's `inference-exporter run` would show them.
With --profile, SIGUSR1 starts profiling the main thread, SIGUSR2 stops it, and the profile is
written to PATH when the daemon exits (pyinstrument's where installed, else cProfile's). With
--checkout, the exporter package is another checkout's (a before/after comparison in one run).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


class Profiler:
    """The daemon's main thread over a measured window: pyinstrument's sampling profile where it is
    installed (`pip install '.[bench]'`: little overhead, asyncio-aware), else cProfile's (every
    call, so it slows the daemon: its figures are not the ones to quote)."""

    def __init__(self, path: Path):
        import cProfile

        self.path = path
        self._profile = cProfile.Profile()  # used where pyinstrument is not installed
        self._sampling: Any = None
        try:
            import pyinstrument
        except ImportError:
            pass
        else:
            self._sampling = pyinstrument.Profiler(interval=0.001, async_mode="disabled")

    def start(self) -> None:
        (self._sampling.start if self._sampling else self._profile.enable)()

    def stop(self) -> None:
        (self._sampling.stop if self._sampling else self._profile.disable)()

    def write(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._sampling is None:
            path = self.path.with_suffix(".prof")
            self._profile.dump_stats(path)
            return path
        path = self.path.with_suffix(".txt")
        path.write_text(self._sampling.output_text(unicode=False, color=False, show_all=False))
        flat = self.path.with_name(self.path.stem + "-flat.txt")  # where the time is spent, function by function
        flat.write_text(self._sampling.output_text(unicode=False, color=False, flat=True))
        self.path.with_suffix(".html").write_text(self._sampling.output_html())
        return path


def main(argv: list[str]) -> int:
    if "--" not in argv:
        raise SystemExit(__doc__)
    ours, cli = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    fake_nvml = "--fake-nvml" in ours
    profile = Path(ours[ours.index("--profile") + 1]) if "--profile" in ours else None
    checkout = Path(ours[ours.index("--checkout") + 1]) if "--checkout" in ours else REPO
    sys.path.insert(0, str(checkout))  # that checkout's exporter, whatever the virtual environment has installed
    if fake_nvml:
        sys.path.insert(1, str(REPO / "tests"))
        from helpers.fake_nvml import FakeNVML, eight_gpus

        import exporter.sources.nvml.source

        fake = FakeNVML(eight_gpus())
        exporter.sources.nvml.source.load_binding = lambda: fake  # the NVML source reads the fake host
    profiler = Profiler(profile) if profile is not None else None
    if profiler is not None:
        import signal

        signal.signal(signal.SIGUSR1, lambda *_: profiler.start())
        signal.signal(signal.SIGUSR2, lambda *_: profiler.stop())
    from exporter.cli import main as cli_main

    try:
        return cli_main(cli)
    finally:
        if profiler is not None:
            print(f"profile: {profiler.write()}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
