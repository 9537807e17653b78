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
  # Postgres for the quota service's row-locking test (tests/hub_extension start a throwaway cluster)
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need_apt+=(postgresql)
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

# The JupyterLab extension is built before `pip install` so setup.py's data_files install it;
# it is rebuilt (and the package reinstalled) whenever its sources are newer than the build.
labext=notebook_plugin/labextension
built=notebook_plugin/labextension_build/package.json
if [ ! -f "$built" ] || [ -n "$(find "$labext/src" "$labext/style" "$labext/schema" "$labext/package.json" -newer "$built" -print -quit)" ]; then
  echo "[bootstrap] building the JupyterLab extension ($labext)"
  [ -x "$VENV/bin/jupyter-builder" ] || "$VENV/bin/pip" install -q "jupyter_builder>=1.2"
  if [ ! -d "$labext/node_modules" ] || [ "$labext/package.json" -nt "$labext/node_modules" ]; then
    (cd "$labext" && npm ci --no-audit --no-fund --loglevel=error >/dev/null && touch node_modules)
  fi
  venv_bin="$(cd "$VENV/bin" && pwd)"
  (cd "$labext" && PATH="$venv_bin:$PATH" npm run --silent build >/dev/null)
  touch "$built"
fi

# pip installs the built lab extension and the server extension's switch into the venv, editable
# installs included (setup.py), so a rebuilt extension is reinstalled too.
labshare="$VENV/share/jupyter/labextensions/nbscale"
serverconf="$VENV/etc/jupyter/jupyter_server_config.d/nbscale.json"
if [ ! -f "$stamp" ] || [ setup.py -nt "$stamp" ] || [ "$built" -nt "$stamp" ]; then
  # links made by earlier versions of this script would have pip write through them into the checkout
  if [ -L "$labshare" ]; then rm "$labshare"; fi
  if [ -L "$serverconf" ]; then rm "$serverconf"; fi
  echo "[bootstrap] pip install -e .[test] (a few minutes on a fresh machine)"
  "$VENV/bin/pip" install -q -e ".[test]"
  touch "$stamp"
fi

if [ "$mode" = test ] && { [ ! -d node_modules ] || [ package.json -nt node_modules ]; }; then
  echo "[bootstrap] npm install (test tools)"
  npm install --no-audit --no-fund --loglevel=error >/dev/null
  touch node_modules
fi
