#!/usr/bin/env bash
# Set up, then run every notebook headless on the tiny preset (CPU): executed copies go to runs/<name>/.
# Extra arguments go to the runner, e.g.  bash scripts/run_suite.sh --only 03 -p strength 0.5
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m saliency_lib.suite "$@"
