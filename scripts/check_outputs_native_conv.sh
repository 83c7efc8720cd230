#!/usr/bin/env bash
# Stand-in for "another CPU": re-run notebooks with torch's native convolution kernels instead of oneDNN's
# (a different summation order, so slightly different float32 rounding, as on another CPU model), and
# check them against their stored outputs with nbval, within each cell's tolerance (as the test command does).
#   bash scripts/check_outputs_native_conv.sh            # notebooks 01, 03, 06 (those CI once failed)
#   bash scripts/check_outputs_native_conv.sh 02,04,05
set -euo pipefail
cd "$(dirname "$0")/.."
only=${1:-01,03,06}
# first, how much the stand-in moves samples: notebook 01's DDIM-10 images (x_T seed 1, one per class)
.venv/bin/python - <<'PY'
import torch
from saliency_lib.metrics import judge_probs
from saliency_lib.pipeline import Sampler, generate
from saliency_lib.presets import load_tiny

P = load_tiny()
x_T = torch.randn((8, 3, P.image_size, P.image_size), generator=torch.Generator().manual_seed(1))
y = torch.arange(8) % len(P.class_names)
images = {}
for onednn in (True, False):
    torch.backends.mkldnn.enabled = onednn
    images[onednn] = generate(P, x_T, y, Sampler("ddim", 10), seed=0)
torch.backends.mkldnn.enabled = True
d = (images[True] - images[False]).abs()
judged = {k: judge_probs(P, v).argmax(1) for k, v in images.items()}
print(f"oneDNN vs native convolutions, DDIM-10, 8 images: largest pixel difference {d.max().item():.2f}, "
      f"mean {d.mean().item():.4f}; judged differently: {(judged[True] != judged[False]).sum().item()} of 8")
PY
ipy=$(mktemp -d)
trap 'rm -rf "$ipy"' EXIT
mkdir -p "$ipy/profile_default/startup"
echo 'import torch; torch.backends.mkldnn.enabled = False' > "$ipy/profile_default/startup/00_native_conv.py"
books=()
for n in ${only//,/ }; do books+=(notebooks/${n}_*.ipynb); done
IPYTHONDIR="$ipy" .venv/bin/python -m pytest --nbval "${books[@]}" --nbval-current-env \
    --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout 1200 -p no:cacheprovider
