#!/usr/bin/env bash
# Create .venv when missing and install the requirements (skipped when they have not changed).
# Usage: bash scripts/setup.sh [dev]    (dev adds the test-only packages)
set -euo pipefail
cd "$(dirname "$0")/.."
req=requirements.txt
[ "${1:-}" = "dev" ] && req=requirements-dev.txt
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv" >&2
  python3 -m venv .venv
fi
stamp=".venv/.installed-$(cat requirements.txt "$req" | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "[setup] installing $req into .venv (torch is large: the first time takes a few minutes)" >&2
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$req" 2> >(grep -v "^WARNING: Location" >&2)
  touch "$stamp"
fi
