#!/usr/bin/env bash
# Set up, then run every test: the unit tests, then the notebooks with nbval (each re-executed from a clean kernel
# and its outputs compared with the stored ones: exactly, or within the tolerance a cell declares in its metadata,
# conftest.py; volatile text sanitized by tests/nbval_sanitize.cfg) and the tests that nbval catches altered
# outputs; then the browser test (JupyterLab in headless Chromium: the widgets of notebooks 02 and 03 driven as a
# user would, a broken callback caught, and the tutorial site built and opened; screenshots in runs/browser).
# Prints the wall time of each phase at the end (the README's benchmark).
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$SECONDS
bash scripts/setup.sh
t1=$SECONDS
.venv/bin/python -m pytest tests -m "not notebooks and not browser" -p no:cacheprovider
t2=$SECONDS
.venv/bin/python -m pytest --nbval notebooks tests/test_notebooks.py --nbval-current-env \
    --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout 1200 -p no:cacheprovider
t3=$SECONDS
.venv/bin/python -m pytest tests -m browser -p no:cacheprovider
t4=$SECONDS
echo "scripts/test.sh wall time: setup $((t1 - t0)) s, unit tests $((t2 - t1)) s, notebooks (nbval) $((t3 - t2)) s," \
     "browser $((t4 - t3)) s, total $((t4 - t0)) s"
