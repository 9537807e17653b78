#!/usr/bin/env bash
# Installs everything nbscale needs on a fresh Debian machine, idempotently:
# system packages (apt), the virtualenv with the Python packages, and node packages.
# Usage: scripts/bootstrap.sh [demo|test]   ("test" adds the browser and test tools)
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-demo}"
VENV="${NBSCALE_VENV:-.venv}"

need_apt=()
command -v node >/dev/null || need_apt+=(nodejs npm)
if [ "$mode" = test ]; then
  [ -x /usr/bin/chromium ] || need_apt+=(chromium)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "[bootstrap] apt-get install ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[bootstrap] creating virtualenv $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip setuptools wheel
fi
stamp="$VENV/.nbscale-installed-$mode"
if [ ! -f "$stamp" ] || [ setup.py -nt "$stamp" ]; then
  echo "[bootstrap] pip install -e .[test] (a few minutes on a fresh machine)"
  "$VENV/bin/pip" install -q -e ".[test]"
  touch "$stamp"
fi

if [ "$mode" = test ] && { [ ! -d node_modules ] || [ package.json -nt node_modules ]; }; then
  echo "[bootstrap] npm install (test tools)"
  npm install --no-audit --no-fund --loglevel=error >/dev/null
  touch node_modules
fi
