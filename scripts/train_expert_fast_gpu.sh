#!/usr/bin/env bash
# History 17's plan for the next CUDA session: more images for the low-noise expert, faster per step.
# History 16 found the expert the lever that moved the class-control bar (1.32M images at t < 500: 0.801, 2.38M:
# 0.816 with DDIM-50 on the GPU) and the eager float32 main-process step the limit of the rate (12.3 steps per
# second at batch 512). This script
#   1. times each training step variant at batch 512 on $DEVICE (eager float32; bf16 autocast; bf16 autocast +
#      torch.compile), each a throw-away run of 101 steps, and picks the fastest that ran (on the 2-core CPU,
#      torch.compile took 3.5 minutes to compile and gave 2.03 s per step against 1.86 eager, and bf16 autocast
#      5.25 s against 2.07, batch 64: the GPU may differ, which is why the script measures);
#   2. fine-tunes the shipped expert (data/models/tiny/ddpm_low_noise.safetensors) on t < 500 with that variant,
#      planned by --fit-minutes $FIT (batch 512, AdamW lr 1e-4, warm-up 100, cosine, label dropout 0.15, EMA 0.999);
#   3. scores the preset with the new expert on $DEVICE (sweep_guidance.py: the Quality rows' 256 samples, seed 0,
#      w = 4, s = 5), DDIM-50 then DDPM-250, and the shipped expert on DDIM-50 as the same-device baseline.
# Writes to $OUT: lowt3_ema.safetensors, variants.log, train.log, and the score JSONs; $CK keeps the checkpoint and
# the exported expert between calls. PHASES picks the steps, so that a run fits the device tool's 10 minutes per
# command (and its 15 per session, machine start included): first PHASES="probe train" FIT=5.5 (estimated
# 8.5 minutes from History 16's start-up and scoring times; not yet timed), then, on the still-warm machine,
# PHASES=score (estimated 3).
# Usage: OUT=runs/expert3 PHASES="probe train" FIT=5.5 bash scripts/train_expert_fast_gpu.sh
#        OUT=runs/expert3 PHASES=score bash scripts/train_expert_fast_gpu.sh
#        (DEVICE=cpu FIT=0.2 N=16 BATCH=8 WORKERS=1 VARIANTS=none: for a smoke run of the script's plumbing)
set -uo pipefail
OUT=${OUT:-runs/expert3}; DEVICE=${DEVICE:-cuda}; FIT=${FIT:-5.5}; PHASES=${PHASES:-"probe train score"}; N=${N:-256}; WORKERS=${WORKERS:-14}
BATCH=${BATCH:-512}; PY=${PY:-python3}; CK=${CK:-checkpoints/expert3}
VARIANTS=${VARIANTS:-"none: bf16: bf16:--compile"}   # autocast:extra-flags; the first that runs fastest trains
mkdir -p "$OUT" "$CK"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TQDM_MININTERVAL=30
SHIPPED=data/models/tiny/ddpm.safetensors
EXPERT=data/models/tiny/ddpm_low_noise.safetensors
common=(--init "$EXPERT" --unet '{"null_class": true}' --t-max 500 --device "$DEVICE" --workers "$WORKERS"
        --threads 2 --batch-size "$BATCH" --lr 0.0001 --warmup 100 --label-dropout 0.15 --ema-decay 0.999)
[ "$DEVICE" = cpu ] || common+=(--render-on-device)

has() { [[ " $PHASES " == *" $1 "* ]]; }
VARIANT_FILE="$CK/variant"   # the probe's choice, for the train phase of a later call
if has probe; then
# 1. which step variant is fastest here: each a throw-away run of 101 steps whose --fit-minutes probe times steps
#    25-50 (after start-up and compilation) and prints the time per step
best=""; best_ms=1000000
for variant in $VARIANTS; do
    amp=${variant%%:*}; extra=${variant#*:}
    rm -rf "$CK/probe"
    start=$SECONDS
    $PY -m saliency_lib.train ddpm --out "$CK/probe" --seed 81 --fit-minutes 0.001 --autocast "$amp" $extra \
        --checkpoint-minutes 100 "${common[@]}" > "$CK/probe.log" 2>&1
    rc=$?
    ms=$(tr '\r' '\n' < "$CK/probe.log" | grep -oE '[0-9.]+ ms/step' | head -n 1 | cut -d' ' -f1)
    echo "variant autocast=$amp ${extra:-eager}: exit $rc, $((SECONDS - start)) s in all, ${ms:-?} ms/step" | tee -a "$OUT/variants.log"
    [ "$rc" = 0 ] || tail -n 5 "$CK/probe.log" | tee -a "$OUT/variants.log"
    if [ "$rc" = 0 ] && [ -n "$ms" ] && [ "$(awk -v a="$ms" -v b="$best_ms" 'BEGIN { print (a < b) }')" = 1 ]; then best=$variant; best_ms=$ms; fi
done
[ -n "$best" ] || { echo "no variant ran"; exit 1; }
echo "$best" > "$VARIANT_FILE"
echo "chosen: autocast=${best%%:*} ${best#*:} ($best_ms ms/step in the probe)" | tee -a "$OUT/variants.log"
fi

if has train; then
# 2. the fine-tune (with the probe's choice; float32 eager without one)
best=$(cat "$VARIANT_FILE" 2>/dev/null || echo "none:")
amp=${best%%:*}; extra=${best#*:}
echo "training with autocast=$amp ${extra:-eager}"
rm -rf "$CK/lowt3"
$PY -m saliency_lib.train ddpm --out "$CK/lowt3" --seed 91 --autocast "$amp" $extra --fit-minutes "$FIT" \
    --checkpoint-minutes 2 "${common[@]}" > "$CK/lowt3.log" 2>&1
echo "lowt3: exit $?"
$PY -m saliency_lib.train export --from-ckpt "$CK/lowt3/last.safetensors" --out "$CK/lowt3_ema.safetensors"
cp "$CK/lowt3_ema.safetensors" "$OUT/"
tr '\r' '\n' < "$CK/lowt3.log" | grep -v '^\s*$' | tail -n 40 > "$OUT/train.log"
tail -n 3 "$OUT/train.log"
fi

# 3. scores (the base DDPM passed explicitly, so that the preset's shipped expert is replaced, not stacked)
score() {   # name sampler expert
    $PY scripts/sweep_guidance.py --device "$DEVICE" --weights 4 --classifier-scales 5 --n "$N" --sampler "$2" \
        --ddpm "$SHIPPED" --low-noise-expert "$3" --grids "$CK" --json "$OUT/${1}_${2/:/}.json" \
        2>&1 | grep -E "judge per-class|misread" | sed "s/^/$1 $2 /"
}
if has score; then
score lowt3 ddim:50 "$CK/lowt3_ema.safetensors"
score lowt3 ddpm:250 "$CK/lowt3_ema.safetensors"
score lowt2 ddim:50 "$EXPERT"
fi
ls -la "$OUT"
