#!/usr/bin/env bash
# Create .venv (Python 3.11) and install the pinned requirements and the package (editable); install Debian's
# chromium for the browser test where it is missing (needs root or sudo; skipped with SKIP_CHROMIUM=1).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements.txt
.venv/bin/python -m pip install -q --no-deps -e .
if [ "${SKIP_CHROMIUM:-0}" != 1 ] && ! command -v chromium >/dev/null && [ -z "${CHROMIUM:-}" ]; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium
fi
