#!/usr/bin/env bash
# Set up, then run every test: the unit tests, then the notebooks under nbval (their stored outputs must
# be reproduced; see notebooks/nbval_sanitize.cfg for the few volatile strings masked).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pytest tests -p no:cacheprovider
.venv/bin/python -m pytest --nbval --nbval-current-env --nbval-sanitize-with notebooks/nbval_sanitize.cfg \
    -p no:cacheprovider notebooks/
