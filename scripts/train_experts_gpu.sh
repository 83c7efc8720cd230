#!/usr/bin/env bash
# History 16: two fine-tunes of the shipped tiny DDPM side by side on one CUDA GPU, then scored on that GPU.
#   full: the shipped EMA, fine-tuned on every t (more images for the whole chain; History 14's command);
#   lowt: the shipped EMA, fine-tuned on t < 500 only: a low-noise expert (History 15's command at scale).
# Both: batch 512, AdamW lr 2e-4, warm-up 100, cosine, label dropout 0.15, EMA 0.999, images rendered on the GPU
# from parameters drawn by CPU workers (--render-on-device), planned by --fit-minutes to end on a clock.
# Then scripts/sweep_guidance.py (the Quality rows' 256 samples, seed 0, w = 4, s = 5) on DDIM-50 and DDPM-250 for:
# the shipped DDPM (the same-device baseline), full, shipped + lowt expert below t = 500, full + lowt expert.
# Writes to $OUT: full_ema.safetensors, lowt_ema.safetensors, train.log, evals.tar (JSONs, grids).
# The run of History 16 (one H200, 16 CPU cores): FIT=5.25 EVAL_SECONDS=150 (2,609 and 2,577 steps, 8.3 steps per
# second each; the DDPM-250 scores of full, lowt and shipped did not fit in EVAL_SECONDS). Then, on the same machine,
# the expert alone, resumed with the plan extended to 6,000 steps and stopped on the clock at step 4,646 (12.3 steps
# per second with 14 workers), exported, and shipped as data/models/tiny/ddpm_low_noise.safetensors:
#   python -m saliency_lib.train ddpm --out checkpoints/experts/lowt --resume --steps 6000 --minutes 2.8 \
#       --init data/models/tiny/ddpm.safetensors --unet '{"null_class": true}' --device cuda --workers 14 --threads 2 \
#       --render-on-device --batch-size 512 --lr 0.0002 --warmup 100 --label-dropout 0.15 --ema-decay 0.999 \
#       --seed 71 --t-max 500 --checkpoint-minutes 1
#   python -m saliency_lib.train export --from-ckpt checkpoints/experts/lowt/last.safetensors --out lowt2_ema.safetensors
#   python scripts/sweep_guidance.py --device cuda --weights 4 --classifier-scales 5 --n 256 --sampler ddim:50 \
#       --ddpm data/models/tiny/ddpm.safetensors --low-noise-expert lowt2_ema.safetensors \
#       --json shipped_lowt2_ddim50.json     # 0.816 (experts_gpu/)
# The scoring below passes --ddpm "$SHIPPED" (the base DDPM alone), so it scores the same models now that the
# preset's default includes the expert (History 16) as it did when it ran.
# Usage: OUT=runs/experts FIT=5.5 bash scripts/train_experts_gpu.sh      (DEVICE=cpu FIT=0.3 N=16 BATCH=8 WORKERS=1 for a smoke run)
set -uo pipefail
OUT=${OUT:-runs/experts}; DEVICE=${DEVICE:-cuda}; FIT=${FIT:-5.5}; N=${N:-256}; WORKERS=${WORKERS:-6}; BATCH=${BATCH:-512}
PY=${PY:-python3}; CK=${CK:-checkpoints/experts}; EVAL_SECONDS=${EVAL_SECONDS:-150}
mkdir -p "$OUT" "$CK" "$CK/evals"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TQDM_MININTERVAL=30
SHIPPED=data/models/tiny/ddpm.safetensors
# pre-flight: rendering on $DEVICE must match the CPU's (it never ran on a GPU before); else the workers render
RENDER=--render-on-device
$PY - "$DEVICE" <<'EOF_PY' || RENDER=""
import sys, torch
from saliency_lib import data
p = data.make_params("train", 0, 512)
cpu = data.render_tensors(p, 32).images
dev = data.render_tensors({k: v.to(sys.argv[1]) for k, v in p.items()}, 32).images.cpu()
err = (cpu - dev).abs().max().item()
print(f"render on {sys.argv[1]}: max |difference| to the CPU's {err:.2e}")
sys.exit(0 if err < 1e-3 else 1)
EOF_PY
echo "training with ${RENDER:-CPU-rendered batches}"
common=(--init "$SHIPPED" --unet '{"null_class": true}' --device "$DEVICE" --workers "$WORKERS" --threads 2
        $RENDER --batch-size "$BATCH" --lr 0.0002 --warmup 100 --label-dropout 0.15 --ema-decay 0.999
        --fit-minutes "$FIT" --checkpoint-minutes 2)
$PY -m saliency_lib.train ddpm --out "$CK/full" --seed 51 "${common[@]}" > "$CK/full.log" 2>&1 &
full=$!
$PY -m saliency_lib.train ddpm --out "$CK/lowt" --seed 71 --t-max 500 "${common[@]}" > "$CK/lowt.log" 2>&1 &
lowt=$!
wait $full; echo "full: exit $?"; wait $lowt; echo "lowt: exit $?"
for r in full lowt; do
    $PY -m saliency_lib.train export --from-ckpt "$CK/$r/last.safetensors" --out "$OUT/${r}_ema.safetensors"
done
cat "$CK/full.log" "$CK/lowt.log" | tr '\r' '\n' | grep -v '^\s*$' > "$OUT/train.log"
tail -n 4 "$OUT/train.log"

# scoring, most informative first; the whole loop stops after EVAL_SECONDS
deadline=$((SECONDS + EVAL_SECONDS))
score() {   # name sampler [sweep_guidance args]
    local name=$1 sampler=$2; shift 2
    local left=$((deadline - SECONDS))
    if [ "$left" -le 5 ]; then echo "skipped $name $sampler (out of time)"; return; fi
    mkdir -p "/tmp/grids_$name"
    timeout "$left" $PY scripts/sweep_guidance.py --device "$DEVICE" --weights 4 --classifier-scales 5 --n "$N" \
        --sampler "$sampler" --grids "/tmp/grids_$name" --json "$CK/evals/${name}_${sampler/:/}.json" "$@" \
        2>&1 | grep -E "judge per-class|misread" | sed "s/^/$name /"
    for f in "/tmp/grids_$name"/cfg_*.png; do [ -e "$f" ] && cp "$f" "$CK/evals/${name}_$(basename "$f")"; done
}
for sampler in ddim:50 ddpm:250; do
    score full_lowt "$sampler" --ddpm "$OUT/full_ema.safetensors" --low-noise-expert "$OUT/lowt_ema.safetensors"
    score lowt "$sampler" --ddpm "$SHIPPED" --low-noise-expert "$OUT/lowt_ema.safetensors"
    score full "$sampler" --ddpm "$OUT/full_ema.safetensors"
    score shipped "$sampler" --ddpm "$SHIPPED"
done
tar -C "$CK" -cf "$OUT/evals.tar" evals
ls -la "$OUT"
