#!/usr/bin/env bash
# Stand-in for "another CPU": re-run notebooks with torch's native convolution kernels instead of oneDNN's
# (a different summation order, so slightly different float32 rounding, as on another CPU model), and
# compare them with their stored outputs to within each cell's tolerance (python -m saliency_lib.suite --check).
#   bash scripts/check_outputs_native_conv.sh            # notebooks 01, 03, 06 (those CI once failed)
#   bash scripts/check_outputs_native_conv.sh 02,04,05
set -euo pipefail
cd "$(dirname "$0")/.."
only=${1:-01,03,06}
ipy=$(mktemp -d)
trap 'rm -rf "$ipy"' EXIT
mkdir -p "$ipy/profile_default/startup"
echo 'import torch; torch.backends.mkldnn.enabled = False' > "$ipy/profile_default/startup/00_native_conv.py"
IPYTHONDIR="$ipy" .venv/bin/python -m saliency_lib.suite --check --only "$only"
