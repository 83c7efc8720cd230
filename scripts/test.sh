#!/usr/bin/env bash
# Set up, then run every test: the unit tests, then the notebooks under nbval (their stored outputs must
# be reproduced; see notebooks/nbval_sanitize.cfg for the few volatile strings masked). Prints the wall time
# of each phase at the end (the README's CI timings).
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$SECONDS
bash scripts/setup.sh
t1=$SECONDS
.venv/bin/python -m pytest tests -p no:cacheprovider
t2=$SECONDS
.venv/bin/python -m pytest --nbval --nbval-current-env --nbval-sanitize-with notebooks/nbval_sanitize.cfg \
    -p no:cacheprovider notebooks/
t3=$SECONDS
echo "scripts/test.sh wall time: setup $((t1 - t0)) s, unit tests $((t2 - t1)) s, nbval $((t3 - t2)) s, total $((t3 - t0)) s"
