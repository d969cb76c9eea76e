#!/usr/bin/env bash
# The test command: installs what the tests need, then runs them. Arguments go to pytest.
#
#  - Debian's prometheus (prometheus, promtool), nats-server, systemd (systemd-analyze), procps
#    (/bin/kill) and chromium (the targets page is checked in a headless browser), with apt-get,
#    when missing;
#  - python3-venv, when this Python cannot make a virtual environment;
#  - the package with its test and dynamo extras into .venv (Dynamo's runtime, for protocol: dynamo).
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
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,dynamo]'

# The tests that need prometheus, promtool, nats-server, systemd-analyze or chromium fail here rather than skip.
export INFERENCE_EXPORTER_REQUIRE_TOOLS=1
# Dynamo's runtime logs an INFO line at interpreter exit, after pytest's summary; keep the summary last.
export DYN_LOG=${DYN_LOG:-warn}
exec .venv/bin/python -m pytest "$@"
