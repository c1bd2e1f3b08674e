#!/usr/bin/env bash
# Create a virtual environment in the checkout (.venv) and install correlator into it.
#
#   ./scripts/setup-venv.sh          correlator and its dependencies (then: .venv/bin/correlator)
#   ./scripts/setup-venv.sh --dev    editable, with the test and lint tools and the live demo's
#                                    web frameworks and instrumentation (.[dev,demo])
#
# Nothing outside the checkout changes: no sudo, no apt, no system pip. Debian's and
# Ubuntu's python3 refuse `pip install` outside a virtual environment (PEP 668), and
# without the python3-venv package their venv module cannot install pip
# (ensurepip is left out); then the environment is made without pip and pip is
# bootstrapped from its wheel on PyPI (checked against PyPI's sha256). PYTHON picks
# the interpreter (default python3), CORRELATOR_VENV the folder (default .venv).
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3}"
VENV="${CORRELATOR_VENV:-.venv}"
PYPI_JSON="https://pypi.org/pypi/pip/json"

die() {
  echo "setup-venv: error: $*" >&2
  exit 1
}

case "${1:-}" in
  "") TARGET=(.) ;;
  --dev) TARGET=(-e '.[dev,demo]') ;;
  *) die "unknown option '$1'; use no option, or --dev for the test and lint tools" ;;
esac

command -v "$PY" >/dev/null 2>&1 ||
  die "no '$PY' found; install Python 3.11 or newer (Debian/Ubuntu: apt-get install python3) or set PYTHON=/path/to/python3"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
  die "correlator needs Python 3.11 or newer; '$PY' is $("$PY" -c 'import sys; print(sys.version.split()[0])'). Set PYTHON=/path/to/python3.11 (or newer)"

if [ -e "$VENV" ] && ! "$VENV/bin/python" -c '' >/dev/null 2>&1; then
  echo "setup-venv: $VENV has no working python; making it again"
  rm -rf "$VENV"
fi

if [ ! -e "$VENV" ]; then
  echo "setup-venv: creating $VENV with $("$PY" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
  if ! "$PY" -m venv "$VENV" >/dev/null 2>&1; then
    # Debian/Ubuntu without python3-venv: no ensurepip. Make it without pip instead.
    rm -rf "$VENV"
    "$PY" -m venv --without-pip "$VENV" ||
      die "'$PY -m venv' cannot create $VENV; install your distribution's venv package (Debian/Ubuntu: apt-get install python3-venv)"
  fi
fi

if ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
  echo "setup-venv: $VENV has no pip; fetching pip's wheel from PyPI"
  WHEELS="$(mktemp -d)"
  trap 'rm -rf "$WHEELS"' EXIT
  # Run by the venv's python: pip's newest wheel for it, verified against PyPI's digest.
  WHEEL="$("$VENV/bin/python" - "$PYPI_JSON" "$WHEELS" <<'PYEOF'
import hashlib
import json
import sys
import urllib.parse
import urllib.request

index, folder = sys.argv[1], sys.argv[2]
try:
    with urllib.request.urlopen(index, timeout=60) as resp:
        release = json.load(resp)
    wheel = next(u for u in release["urls"] if u["packagetype"] == "bdist_wheel")
    url = urllib.parse.urljoin(index, wheel["url"])
    with urllib.request.urlopen(url, timeout=120) as resp:
        data = resp.read()
except (OSError, ValueError, KeyError, StopIteration) as err:
    sys.exit(f"setup-venv: error: cannot fetch pip from {index}: {err}; check the network "
             "(or install python3-venv, whose ensurepip needs no download)")
if hashlib.sha256(data).hexdigest() != wheel["digests"]["sha256"]:
    sys.exit(f"setup-venv: error: {url} does not match PyPI's sha256; not installing it")
path = f"{folder}/{wheel['filename']}"
with open(path, "wb") as out:
    out.write(data)
print(path)
PYEOF
)"
  # A pip wheel runs as a zip application: it installs itself into the venv.
  "$VENV/bin/python" "$WHEEL/pip" install -q --no-warn-script-location "$WHEEL"
fi

echo "setup-venv: installing correlator into $VENV (${TARGET[*]})"
"$VENV/bin/python" -m pip install -q "${TARGET[@]}"
echo "setup-venv: ready: $VENV/bin/correlator"
