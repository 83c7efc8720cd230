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
# With MID=1 (History 18) a second fine-tune of the shipped expert runs beside it on [MID_T, 500) only (default
# MID_T 200; the two share the GPU and the workers), and the scores add the chain: the base DDPM for t >= 500, mid
# for [MID_T, 500), lowt3 below MID_T (DDIM-50).
# Writes to $OUT: lowt3_ema.safetensors (and mid_ema.safetensors), variants.log, train_<run>.log, and the score
# JSONs (PHASES=resume: lowt3b_ema.safetensors, midb_ema.safetensors, train_<run>b.log); $CK keeps the checkpoints and
# the exported expert between calls. PHASES picks the steps, so that a run fits the device tool's 10 minutes per
# command (and its 15 per session, machine start included): first PHASES="probe train" FIT=5.5 (estimated
# 8.5 minutes from History 16's start-up and scoring times; not yet timed), then, on the still-warm machine,
# PHASES=score (estimated 3).
# Usage: PHASES="probe train" FIT=5.5 bash scripts/train_expert_fast_gpu.sh
#        (History 28, the run made: MID=1 MID_T=100 MID_INIT=checkpoints/mid_expert_bf16/model.safetensors
#         VARIANTS="none: bf16:" PHASES="probe train" FIT=6.25 (467 s), then with the same variables PHASES=resume
#         (RESUME_STEPS 7000, RESUME_MINUTES 3.3; 214 s) on the warm machine, scored on the CPU afterwards)
#        PHASES=score bash scripts/train_expert_fast_gpu.sh
#        (History 18's recommendation: MID=1 FIT=5 for the first call, whose extra score then fits the second)
#        Through the device tool leave OUT unset: the script then writes to the tool's $OUT, whose files (at most 8
#        per call: 5 from the first, 4 from the second) come back; elsewhere OUT=runs/expert3 or any folder.
#        (DEVICE=cpu FIT=0.2 N=16 BATCH=8 WORKERS=1 VARIANTS=none: for a smoke run of the script's plumbing)
set -uo pipefail
OUT=${OUT:-runs/expert3}; DEVICE=${DEVICE:-cuda}; FIT=${FIT:-5.5}; PHASES=${PHASES:-"probe train score"}; N=${N:-256}; WORKERS=${WORKERS:-14}
BATCH=${BATCH:-512}; PY=${PY:-python3}; CK=${CK:-checkpoints/expert3}; MID=${MID:-0}; MID_T=${MID_T:-200}
MID_INIT=${MID_INIT:-data/models/tiny/ddpm_low_noise.safetensors}   # where the middle expert starts (History 28: the CPU's)
RESUME_STEPS=${RESUME_STEPS:-7000}; RESUME_MINUTES=${RESUME_MINUTES:-3.3}   # PHASES=resume: the extended plan and the clock
VARIANTS=${VARIANTS:-"none: bf16: bf16:--compile"}   # autocast:extra-flags; the first that runs fastest trains
mkdir -p "$OUT" "$CK"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TQDM_MININTERVAL=30
SHIPPED=data/models/tiny/ddpm.safetensors
EXPERT=data/models/tiny/ddpm_low_noise.safetensors   # since History 29 the middle expert [100, 500) (History 28's
#  midb); History 16-28's expert for t < 500, which History 17-28 started from: git show 941e322:<this path>
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
# 2. the fine-tune (with the probe's choice; float32 eager without one); with MID=1 a second one beside it: the
#    shipped expert fine-tuned on [MID_T, 500) only, the middle expert of a chain (History 18)
best=$(cat "$VARIANT_FILE" 2>/dev/null || echo "none:")
amp=${best%%:*}; extra=${best#*:}
echo "training with autocast=$amp ${extra:-eager}"
rm -rf "$CK/lowt3" "$CK/mid" "$CK/lowt3_ema.safetensors" "$CK/mid_ema.safetensors"   # no stale expert gets scored
if [ "$MID" = 1 ]; then
    half=(--workers $(( (WORKERS + 1) / 2 )))   # the two runs share the CPU workers
    $PY -m saliency_lib.train ddpm --out "$CK/mid" --seed 92 --t-min "$MID_T" --autocast "$amp" $extra \
        --fit-minutes "$FIT" --checkpoint-minutes 2 "${common[@]}" "${half[@]}" --init "$MID_INIT" > "$CK/mid.log" 2>&1 &
    mid_pid=$!
else
    half=()
fi
$PY -m saliency_lib.train ddpm --out "$CK/lowt3" --seed 91 --autocast "$amp" $extra --fit-minutes "$FIT" \
    --checkpoint-minutes 2 "${common[@]}" "${half[@]}" > "$CK/lowt3.log" 2>&1
echo "lowt3: exit $?"
runs=(lowt3)
if [ "$MID" = 1 ]; then wait "$mid_pid"; echo "mid: exit $?"; runs+=(mid); fi
for run in "${runs[@]}"; do
    $PY -m saliency_lib.train export --from-ckpt "$CK/$run/last.safetensors" --out "$CK/${run}_ema.safetensors"
    cp "$CK/${run}_ema.safetensors" "$OUT/"
    tr '\r' '\n' < "$CK/$run.log" | grep -v '^\s*$' | tail -n 40 > "$OUT/train_$run.log"
    tail -n 3 "$OUT/train_$run.log"
done
fi

if has resume; then
# 2b. on a still-warm machine (History 28): both runs resumed with their plan extended to $RESUME_STEPS steps and stopped
#     on a $RESUME_MINUTES-minute clock (History 16's way of spending the minutes left), exported as <run>b_ema.safetensors
best=$(cat "$VARIANT_FILE" 2>/dev/null || echo "none:")
amp=${best%%:*}; extra=${best#*:}
[ -f "$CK/lowt3/last.safetensors" ] || { echo "no $CK/lowt3/last.safetensors: run the train phase first (same machine)"; exit 1; }
runs=(lowt3:91:0); [ "$MID" = 1 ] && runs+=(mid:92:"$MID_T")
[ "$MID" = 1 ] && half=(--workers $(( (WORKERS + 1) / 2 ))) || half=()
pids=()
for r in "${runs[@]}"; do
    IFS=: read -r run seed tmin <<< "$r"
    init=$EXPERT; [ "$run" = mid ] && init=$MID_INIT   # recorded in the checkpoint; --resume checks only the schedule
    $PY -m saliency_lib.train ddpm --out "$CK/$run" --seed "$seed" --t-min "$tmin" --autocast "$amp" $extra --resume \
        --steps "$RESUME_STEPS" --minutes "$RESUME_MINUTES" --checkpoint-minutes 1 "${common[@]}" "${half[@]}" \
        --init "$init" > "$CK/${run}b.log" 2>&1 &
    pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; echo "resumed run: exit $?"; done
for r in "${runs[@]}"; do
    run=${r%%:*}
    $PY -m saliency_lib.train export --from-ckpt "$CK/$run/last.safetensors" --out "$CK/${run}b_ema.safetensors"
    cp "$CK/${run}b_ema.safetensors" "$OUT/"
    tr '\r' '\n' < "$CK/${run}b.log" | grep -v '^\s*$' | tail -n 8 > "$OUT/train_${run}b.log"
    tail -n 3 "$OUT/train_${run}b.log"
done
fi

# 3. scores (the base DDPM passed explicitly, so that the preset's shipped expert is replaced, not stacked)
score() {   # name sampler, then sweep_guidance's expert flags
    local name=$1 sampler=$2; shift 2
    $PY scripts/sweep_guidance.py --device "$DEVICE" --weights 4 --classifier-scales 5 --n "$N" --sampler "$sampler" \
        --ddpm "$SHIPPED" "$@" --grids "$CK" --json "$OUT/${name}_${sampler/:/}.json" \
        2>&1 | grep -E "judge per-class|misread" | sed "s/^/$name $sampler /"
}
if has score; then
score lowt3 ddim:50 --low-noise-expert "$CK/lowt3_ema.safetensors"
if [ -f "$CK/mid_ema.safetensors" ]; then   # the chain: mid for [MID_T, 500), lowt3 below MID_T
    score chain ddim:50 --low-noise-expert "$CK/mid_ema.safetensors" --expert-below-t 500 \
        --low-noise-expert "$CK/lowt3_ema.safetensors" --expert-below-t "$MID_T"
fi
score lowt3 ddpm:250 --low-noise-expert "$CK/lowt3_ema.safetensors"
score lowt2 ddim:50 --low-noise-expert "$EXPERT"
fi
ls -la "$OUT"
