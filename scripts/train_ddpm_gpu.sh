#!/usr/bin/env bash
# Train the tiny preset's DDPM on a CUDA machine within a fixed time budget, two UNet sizes side by side
# (the GPU is launch-bound at this model size, so two processes share it well), then export the EMA and
# raw weights of each. Usage: OUT=<folder> MINUTES=6.5 bash scripts/train_ddpm_gpu.sh
# The same runs work on the CPU (drop --device/--workers; expect ~1.5 s/step at batch 64 on 2 cores).
set -uo pipefail
OUT=${OUT:-runs/gpu_ddpm}; MINUTES=${MINUTES:-6.5}; PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TQDM_MININTERVAL=15
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
train() {  # name, extra args...
  local name=$1; shift
  $PY -m saliency_lib.train ddpm --out "/tmp/ckpt_$name" --device cuda --workers 7 --batch-size 128 \
      --checkpoint-minutes 2 --fit-minutes "$MINUTES" "$@" > "$OUT/$name.log" 2>&1
  $PY -m saliency_lib.train export --from-ckpt "/tmp/ckpt_$name/last.safetensors" --out "$OUT/${name}_ema.safetensors"
  echo "$name done" >> "$OUT/$name.log"
}
train nrb1 &
train nrb2 --unet '{"num_res_blocks": 2}' &
wait
tail -c 600 "$OUT"/*.log
ls -la "$OUT"
