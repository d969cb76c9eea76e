#!/usr/bin/env bash
# The test command: installs what the tests need, then runs them. Arguments go to pytest.
#
#  - Debian's prometheus (prometheus, promtool), nats-server, systemd (systemd-analyze), procps
#    (/bin/kill) and chromium (the targets page is checked in a headless browser), with apt-get,
#    when missing;
#  - python3-venv, when this Python cannot make a virtual environment;
#  - gcc and python3-dev, when the compiler or this Python's headers are missing (the compiled accelerator);
#  - the package with its test, lint and dynamo extras into .venv (Dynamo's runtime, for protocol: dynamo);
#  - the oldest prometheus_client a backend pins into .venv-prometheus-client-oldest (the version matrix);
# then checks the tree with ruff (format and lint) and mypy, settings in pyproject.toml, and fails on any finding.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_updated=""
apt_install() {
  if ! command -v apt-get >/dev/null; then
    echo "tests/run.sh: please install $* (no apt-get here)" >&2
    return 1
  fi
  [ -n "$apt_updated" ] || { as_root apt-get update -qq; apt_updated=1; }
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

missing=()
{ command -v prometheus >/dev/null && command -v promtool >/dev/null; } || missing+=(prometheus)
command -v nats-server >/dev/null || missing+=(nats-server)
command -v systemd-analyze >/dev/null || missing+=(systemd)
[ -x /bin/kill ] || missing+=(procps)  # the unit's ExecReload, which systemd-analyze verify checks
command -v chromium >/dev/null || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  echo "tests/run.sh: installing ${missing[*]} with apt-get" >&2
  apt_install "${missing[@]}"
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv 2>/dev/null || { rm -rf .venv; apt_install python3-venv; "$PYTHON" -m venv .venv; }
fi
# The compiled accelerator (exporter/format/_accel.c, built by hatch_build.py during the install) needs a C
# compiler and this Python's headers; the tests fail where it is not built (INFERENCE_EXPORTER_REQUIRE_TOOLS).
if ! command -v "$(.venv/bin/python -c "import os, sysconfig; print((os.environ.get('CC') or sysconfig.get_config_var('CC') or 'cc').split()[0])")" >/dev/null \
  || ! .venv/bin/python -c "import os, sys, sysconfig; sys.exit(not os.path.isfile(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))"; then
  echo "tests/run.sh: installing gcc python3-dev with apt-get (to compile the accelerator)" >&2
  apt_install gcc python3-dev
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,lint,dynamo]'

# Format, lint and types before the tests: all three run, so that one run shows every finding.
lint_failed=""
if ! .venv/bin/ruff format --check .; then
  echo "tests/run.sh: formatting differs: run '.venv/bin/ruff format .'" >&2
  lint_failed=1
fi
if ! .venv/bin/ruff check .; then
  echo "tests/run.sh: lint findings: run '.venv/bin/ruff check --fix .', then fix the rest by hand" >&2
  lint_failed=1
fi
if ! .venv/bin/mypy; then
  echo "tests/run.sh: type errors: fix them (settings under [tool.mypy] in pyproject.toml)" >&2
  lint_failed=1
fi
[ -z "$lint_failed" ] || exit 1

# The oldest prometheus_client a backend pins (vLLM: >= 0.18.0), in a venv of its own, for
# tests/integration/test_prometheus_client_versions.py (which checks this is the release it expects).
OLDEST_PROMETHEUS_CLIENT=0.18.0
OLDEST_VENV=.venv-prometheus-client-oldest
if ! "$OLDEST_VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('prometheus_client') != '$OLDEST_PROMETHEUS_CLIENT')" 2>/dev/null; then
  rm -rf "$OLDEST_VENV"
  "$PYTHON" -m venv "$OLDEST_VENV"
  "$OLDEST_VENV/bin/python" -m pip install -q --disable-pip-version-check "prometheus_client==$OLDEST_PROMETHEUS_CLIENT"
fi

# The tests that need prometheus, promtool, nats-server, systemd-analyze or chromium fail here rather than skip.
export INFERENCE_EXPORTER_REQUIRE_TOOLS=1
# Dynamo's runtime logs an INFO line at interpreter exit, after pytest's summary; keep the summary last.
export DYN_LOG=${DYN_LOG:-warn}
exec .venv/bin/python -m pytest "$@"
