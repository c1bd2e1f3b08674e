#!/usr/bin/env bash
# Install everything correlator's test suite needs, then run the whole suite.
# Debian packages: real Prometheus, Alertmanager, VictoriaMetrics, PostgreSQL and
# Chromium that the tests start on 127.0.0.1 themselves. Python: the checkout's
# virtual environment (.venv, made by scripts/setup-venv.sh), never the system's.
# Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi

DEBS=(prometheus prometheus-alertmanager victoria-metrics postgresql chromium)
missing=()
for p in "${DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# The Debian packages start system services on install where systemd runs; the
# tests start their own private servers on free ports, so stop those if present.
for svc in prometheus prometheus-alertmanager victoria-metrics postgresql; do
  $SUDO service "$svc" stop >/dev/null 2>&1 || true
done

./scripts/setup-venv.sh --dev

"${CORRELATOR_VENV:-.venv}/bin/python" -m pytest "$@"
