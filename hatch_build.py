"""Builds exporter/format/_accel.c, the compiled twin of exporter.format.accel, with the interpreter's
own compiler (or $CC) and headers (sysconfig).

- `pip install .`: a hatchling build hook (pyproject.toml, [tool.hatch.build.targets.wheel.hooks.custom])
  puts the built module in the wheel, which is then for this interpreter and platform only;
- `pip install -e .`: the same hook builds it in place, beside the .c file;
- by hand, in a checkout: `python hatch_build.py` builds it in place.

Where it cannot be built (no compiler, no Python.h), the install goes on without it, with a warning:
the pure-Python functions then serve, with the same output (`inference-exporter --version` says which).
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import sys
import sysconfig
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent
SOURCE = ROOT / "exporter" / "format" / "_accel.c"
#: Where the module goes in the package (and the wheel).
RELATIVE = "exporter/format/_accel" + (sysconfig.get_config_var("EXT_SUFFIX") or ".so")
WARNINGS = ["-Wall", "-Wextra"]


def build(target: Path) -> Path:
    """Compiles SOURCE into `target` (a shared module for this interpreter); CalledProcessError or
    OSError when it cannot."""
    compiler = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
    include = sysconfig.get_paths()["include"]
    if not (Path(include) / "Python.h").is_file():
        raise OSError(f"no Python.h in {include}: install the Python headers (Debian: python3-dev)")
    flags = shlex.split(sysconfig.get_config_var("CCSHARED") or "-fPIC")
    linker = shlex.split(sysconfig.get_config_var("LDSHARED") or "cc -shared")[1:]
    if sys.platform == "darwin" and "-bundle" not in linker:
        linker += ["-bundle", "-undefined", "dynamic_lookup"]
    elif "-shared" not in linker and sys.platform != "darwin":
        linker.append("-shared")
    with tempfile.TemporaryDirectory() as folder:
        built = Path(folder) / target.name
        source = f'-DACCEL_SOURCE="{hashlib.sha256(SOURCE.read_bytes()).hexdigest()}"'  # see exporter.format.accel
        command = [*compiler, *flags, "-O2", *WARNINGS, source, "-I", include, *linker, str(SOURCE), "-o", str(built)]
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        if done.stderr.strip():  # it compiles without a warning: say so when it no longer does
            warnings.warn(f"compiling exporter/format/_accel.c: {done.stderr.strip()[-2000:]}", stacklevel=2)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Beside the target, then renamed over it: a process that has the old one loaded keeps its file.
        staged = target.with_name(target.name + ".new")
        staged.write_bytes(built.read_bytes())
        os.replace(staged, target)
    return target


def build_or_warn(target: Path) -> bool:
    """`build`, or a warning saying why not and that the pure-Python functions serve."""
    try:
        build(target)
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        warnings.warn(
            f"exporter/format/_accel.c was not compiled ({detail.strip()[-500:]}); "
            "the pure-Python functions serve instead, with the same output",
            stacklevel=2,
        )
        return False
    return True


try:
    from hatchling.builders.hooks.plugin.interface import BuildHookInterface
except ImportError:  # run by hand, without hatchling
    BuildHookInterface = object  # type: ignore[assignment,misc]


class AccelBuildHook(BuildHookInterface):  # type: ignore[misc,valid-type]
    """Compiles the accelerator into the wheel (or in place, for an editable install)."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict) -> None:
        if self.target_name != "wheel":
            return
        if version == "editable":
            build_or_warn(ROOT / RELATIVE)
            return
        self._folder = tempfile.TemporaryDirectory()
        built = Path(self._folder.name) / Path(RELATIVE).name
        if build_or_warn(built):
            build_data["force_include"][str(built)] = RELATIVE
            build_data["pure_python"] = False
            build_data["infer_tag"] = True

    def finalize(self, version: str, build_data: dict, artifact_path: str) -> None:
        folder = getattr(self, "_folder", None)
        if folder is not None:
            folder.cleanup()


if __name__ == "__main__":
    print("built", build(ROOT / RELATIVE).relative_to(ROOT))
