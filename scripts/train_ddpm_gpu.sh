#!/usr/bin/env bash
# Train the tiny preset's DDPM on a CUDA machine, two UNet sizes side by side (at this model size the GPU is
# launch-bound, so two processes share it well), then export the EMA weights of each. This is how the shipped
# DDPM (nrb1) was trained on one H200 (see data/models/tiny/MODEL_CARD.md):
#   phase 1: a fresh run that plans as many steps as fit in $MINUTES (it planned 5,004 / 4,260 steps);
#   phase 2: the same runs resumed with the plan extended to $STEPS1 / $STEPS2 steps (the cosine LR restarts).
# Usage: OUT=<folder> MINUTES=6.3 STEPS1=10000 STEPS2=8500 bash scripts/train_ddpm_gpu.sh
# The same runs work on the CPU (drop --device/--workers; ~1.5 s/step at batch 64 on 2 cores).
set -uo pipefail
OUT=${OUT:-runs/gpu_ddpm}; MINUTES=${MINUTES:-6.3}; STEPS1=${STEPS1:-10000}; STEPS2=${STEPS2:-8500}; PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TQDM_MININTERVAL=15
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
train() {  # name, planned steps of phase 2, extra args...
  local name=$1 steps=$2; shift 2
  local common=(--out "/tmp/ckpt_$name" --device cuda --workers 7 --batch-size 128 --checkpoint-minutes 2)
  $PY -m saliency_lib.train ddpm "${common[@]}" --fit-minutes "$MINUTES" "$@" > "$OUT/${name}_phase1.log" 2>&1
  $PY -m saliency_lib.train ddpm "${common[@]}" --resume --steps "$steps" "$@" > "$OUT/${name}_phase2.log" 2>&1
  $PY -m saliency_lib.train export --from-ckpt "/tmp/ckpt_$name/last.safetensors" --out "$OUT/${name}_ema.safetensors"
}
train nrb1 "$STEPS1" &
train nrb2 "$STEPS2" --unet '{"num_res_blocks": 2}' &
wait
tail -c 300 "$OUT"/*.log
ls -la "$OUT"
