#!/usr/bin/env bash
# Train wider tiny-DDPM candidates from scratch on one CUDA GPU, side by side, then score them there.
# Candidates (all within the tiny preset's 30 MB budget): 64 base channels (w64, 5.5M parameters; w64v the same
# predicting v), channel multipliers 1,2,4 (m124, 3.2M) and the same with 2 ResBlocks per level (m124r2, 4.4M).
#
# Why: the shipped 1.37M-parameter UNet draws crude shapes (judge per-class accuracy 0.57 with guidance, bar 0.90);
# fine-tuning it longer, on larger objects or with Min-SNR weighting did not help (MODEL_CARD.md, History 10),
# and wider UNets cost 1.4-3.3x more per CPU step than the 2-core budget allows (History 10). Small UNets are
# launch-bound on a GPU, so several train at once at about the speed of one.
#
# Each candidate: label dropout 0.15 (classifier-free guidance), batch 128, AdamW lr 4e-4, warm-up 200, EMA 0.999,
# as many steps as fit in $MINUTES (--fit-minutes). Then scripts/compare_ddpms.py scores every EMA on the GPU
# (judge per-class accuracy of DDIM-50 samples for w = 0, 2, 4, 6) into $OUT/compare.json, and each EMA file is
# split into pieces under 15 MiB (the device tool's transfer limit); join them with
#   cat $OUT/NAME_ema.safetensors.part-* > NAME_ema.safetensors
# Usage: OUT=<folder> MINUTES=6 bash scripts/train_ddpm_gpu_search.sh
# A CPU smoke test of the same script: DEVICE=cpu MINUTES=0.2 WARMUP=4 WORKERS=0 N=16 OUT=/tmp/s bash scripts/train_ddpm_gpu_search.sh
set -uo pipefail
OUT=${OUT:-runs/gpu_search}; MINUTES=${MINUTES:-6}; DEVICE=${DEVICE:-cuda}; WARMUP=${WARMUP:-200}
WORKERS=${WORKERS:-3}; N=${N:-256}; PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TQDM_MININTERVAL=15
[ "$DEVICE" = cuda ] && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
declare -A UNET=(   # UNet overrides of each candidate
  [w64]='{"null_class": true, "model_channels": 64}'
  [w64v]='{"null_class": true, "model_channels": 64}'
  [m124]='{"null_class": true, "channel_mult": [1, 2, 4]}'
  [m124r2]='{"null_class": true, "channel_mult": [1, 2, 4], "num_res_blocks": 2}'
)
declare -A DIFFUSION=(   # diffusion overrides: w64v predicts v (MODEL_CARD.md, History 10: high-noise x_0 errors)
  [w64v]='{"prediction": "v"}'
)
train() {  # name
  local name=$1
  $PY -m saliency_lib.train ddpm --out "/tmp/ckpt_$name" --device "$DEVICE" --workers "$WORKERS" --batch-size 128 \
      --checkpoint-minutes 2 --fit-minutes "$MINUTES" --warmup "$WARMUP" --lr 0.0004 --label-dropout 0.15 --seed 21 \
      --unet "${UNET[$name]}" --diffusion "${DIFFUSION[$name]:-{\}}" > "$OUT/$name.log" 2>&1 &&
  $PY -m saliency_lib.train export --from-ckpt "/tmp/ckpt_$name/last.safetensors" --out "$OUT/${name}_ema.safetensors"
}
for name in "${!UNET[@]}"; do train "$name" & done
wait
ls "$OUT"/*_ema.safetensors > /dev/null || { echo "no candidate finished"; tail -c 600 "$OUT"/*.log; exit 1; }
$PY scripts/compare_ddpms.py --device "$DEVICE" --weights 0,2,4,6 --n "$N" --grids "$OUT" --json "$OUT/compare.json" \
    "$OUT"/*_ema.safetensors
for f in "$OUT"/*_ema.safetensors; do split -b 15M -d "$f" "$f.part-" && rm "$f"; done
tail -c 300 "$OUT"/*.log
ls -la "$OUT"
