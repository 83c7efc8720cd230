#!/usr/bin/env bash
# Set up, then run every test: the unit tests, then every notebook from a clean kernel, compared with its
# stored outputs (tests/test_notebooks.py: exact, or to within the tolerance a cell declares and explains in
# its metadata; see saliency_lib/outputs.py). Prints the wall time of each phase at the end (the README's CI
# timings).
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$SECONDS
bash scripts/setup.sh
t1=$SECONDS
.venv/bin/python -m pytest tests -m "not notebooks" -p no:cacheprovider
t2=$SECONDS
.venv/bin/python -m pytest tests -m notebooks -p no:cacheprovider
t3=$SECONDS
echo "scripts/test.sh wall time: setup $((t1 - t0)) s, unit tests $((t2 - t1)) s, notebooks $((t3 - t2)) s, total $((t3 - t0)) s"
