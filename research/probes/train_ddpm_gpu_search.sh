#!/usr/bin/env bash
# Train tiny-DDPM candidates from scratch on one CUDA GPU, side by side, then score them there.
# Candidates (within the tiny preset's 30 MB budget and cheap enough to sample on a laptop CPU):
#   base: the shipped UNet (1.37M parameters, null class) - does more training alone fix the class fidelity?
#   m124: channel multipliers 1,2,4 (3.2M parameters, 1.4x the CPU cost per step) - does capacity?
#
# Why: the shipped UNet saw 1.3M training images (10,000 x 128 on a GPU, then a CPU fine-tune) and draws crude
# shapes (judge per-class accuracy 0.57 with guidance, bar 0.90); CPU fine-tunes (longer, larger objects,
# Min-SNR, v-prediction) did not help (MODEL_CARD.md, History 10). Small UNets leave a GPU mostly idle, so
# two runs share it at batch 512. The CPU worker processes that draw the procedural batches set the pace: on
# one H200 with 16 cores, 7 workers per run gave 7.5 steps per second each (History 11).
#
# Each candidate: label dropout 0.15 (classifier-free guidance), batch $BATCH, AdamW lr 4e-4, warm-up 200,
# EMA 0.999, as many steps as fit in $MINUTES (--fit-minutes). Then scripts/compare_ddpms.py scores every EMA
# on the GPU (judge per-class accuracy of $N samples, DDIM-50 and DDPM-250, w = 0, 2, 4, 6).
# $OUT holds, to keep within the device tool's transfer limits (8 files of at most 16 MiB):
#   weights/NAME_ema.safetensors.part-NN   (join with: cat NAME_ema.safetensors.part-* > NAME_ema.safetensors)
#   results.tar                             (gpu.txt, training logs, compare.json, sample grids)
# Usage: OUT=<folder> MINUTES=7 bash scripts/train_ddpm_gpu_search.sh
# A CPU smoke test: DEVICE=cpu MINUTES=0.2 WARMUP=4 WORKERS=0 BATCH=16 N=16 OUT=/tmp/s bash scripts/train_ddpm_gpu_search.sh
set -uo pipefail
OUT=${OUT:-runs/gpu_search}; MINUTES=${MINUTES:-7}; DEVICE=${DEVICE:-cuda}; WARMUP=${WARMUP:-200}
WORKERS=${WORKERS:-7}; BATCH=${BATCH:-512}; N=${N:-256}; PY=${PY:-python3}
RES="$OUT/results"; W="$OUT/weights"; TMP=$(mktemp -d)   # checkpoints and whole EMA files stay here
mkdir -p "$RES" "$W"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TQDM_MININTERVAL=15
[ "$DEVICE" = cuda ] && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$RES/gpu.txt"
declare -A UNET=(   # UNet overrides of each candidate
  [base]='{"null_class": true}'
  [m124]='{"null_class": true, "channel_mult": [1, 2, 4]}'
)
train() {  # name
  local name=$1
  $PY -m saliency_lib.train ddpm --out "$TMP/ckpt_$name" --device "$DEVICE" --workers "$WORKERS" --threads 2 --batch-size "$BATCH" \
      --checkpoint-minutes 2 --fit-minutes "$MINUTES" --warmup "$WARMUP" --lr 0.0004 --label-dropout 0.15 --seed 21 \
      --unet "${UNET[$name]}" > "$RES/$name.log" 2>&1 &&
  $PY -m saliency_lib.train export --from-ckpt "$TMP/ckpt_$name/last.safetensors" --out "$TMP/${name}_ema.safetensors" &&
  split -b 15M -d "$TMP/${name}_ema.safetensors" "$W/${name}_ema.safetensors.part-"
}
for name in "${!UNET[@]}"; do train "$name" & done
wait
ls $TMP/*_ema.safetensors > /dev/null || { echo "no candidate finished"; tail -c 600 "$RES"/*.log; tar -cf "$OUT/results.tar" -C "$OUT" results; exit 1; }
$PY scripts/compare_ddpms.py --device "$DEVICE" --samplers ddim:50,ddpm:250 --weights 0,2,4,6 --n "$N" --grids "$RES" \
    --json "$RES/compare.json" $TMP/*_ema.safetensors
tail -c 300 "$RES"/*.log
tar -cf "$OUT/results.tar" -C "$OUT" results && rm -r "$RES"
ls -la "$OUT" "$W"
