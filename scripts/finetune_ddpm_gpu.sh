#!/usr/bin/env bash
# The shipped tiny DDPM: the previous revision's DDPM (commit e925f61) fine-tuned on one CUDA GPU at batch 512.
# The commands below are the ones that ran (model card, History 11), on one H200 with 16 CPU cores: 14 worker
# processes draw the procedural batches (the bottleneck: 14.6 steps per second).
#   1. 3,000 steps, AdamW lr 2e-4 (warm-up 100, cosine to 10%), label dropout 0.15, EMA 0.999, seed 31: 205 s.
#   2. resumed with the plan extended to 5,400 steps and stopped by --minutes 2.5 at step 5,186 (356 s in all).
# Step 2 stops on a clock, so a rerun stops near step 5,186, not exactly there.
# Usage: OUT=checkpoints/gpu_ft bash scripts/finetune_ddpm_gpu.sh
set -euo pipefail
OUT=${OUT:-checkpoints/gpu_ft}; DEVICE=${DEVICE:-cuda}; WORKERS=${WORKERS:-14}; PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TQDM_MININTERVAL=15
git show e925f61:data/models/tiny/ddpm.safetensors > "$OUT/ddpm_e925f61.safetensors"
common=(--device "$DEVICE" --workers "$WORKERS" --threads 2 --batch-size 512 --unet '{"null_class": true}'
        --warmup 100 --lr 0.0002 --label-dropout 0.15 --seed 31)
$PY -m saliency_lib.train ddpm --out "$OUT/ft" --init "$OUT/ddpm_e925f61.safetensors" --steps 3000 "${common[@]}" \
    --checkpoint-minutes 2
$PY -m saliency_lib.train export --from-ckpt "$OUT/ft/last.safetensors" --out "$OUT/ft_ema.safetensors"
$PY -m saliency_lib.train ddpm --out "$OUT/ft" --resume --steps 5400 --minutes 2.5 "${common[@]}" --checkpoint-minutes 1
$PY -m saliency_lib.train export --from-ckpt "$OUT/ft/last.safetensors" --out "$OUT/ft2_ema.safetensors"
$PY scripts/compare_ddpms.py --device "$DEVICE" --samplers ddim:50,ddpm:250 --weights 2,4,6 --n 256 \
    --json "$OUT/compare.json" "$OUT/ddpm_e925f61.safetensors" "$OUT/ft_ema.safetensors" "$OUT/ft2_ema.safetensors"
