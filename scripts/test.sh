#!/usr/bin/env bash
# Set up, then run every test (unit tests; notebooks under nbval once they exist).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pytest tests -p no:cacheprovider
