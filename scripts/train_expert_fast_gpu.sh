#!/usr/bin/env bash
# History 17's plan for the next CUDA session: more images for the low-noise expert, faster per step.
# History 16 found the expert the lever that moved the class-control bar (1.32M images at t < 500: 0.801, 2.38M:
# 0.816 with DDIM-50 on the GPU) and the eager float32 main-process step the limit of the rate (12.3 steps per
# second at batch 512). This script
#   1. times each training step variant at batch 512 on $DEVICE (eager float32; bf16 autocast; bf16 autocast +
#      torch.compile), each a throw-away run of 101 steps, and picks the fastest that ran (on the 2-core CPU,
#      torch.compile took 3.5 minutes to compile and gave 2.03 s per step against 1.86 eager, and bf16 autocast
#      5.25 s against 2.07, batch 64: the GPU may differ, which is why the script measures);
#   2. fine-tunes an expert ($LOW_INIT) on t < 500 with that variant, planned by --fit-minutes $FIT (batch 512,
#      AdamW lr 1e-4, warm-up 100, cosine, label dropout 0.15, EMA 0.999);
#   3. scores the base DDPM with the new expert on $DEVICE (sweep_guidance.py: the Quality rows' 256 samples, seed 0,
#      w = $W, s = 5), DDIM-50 then DDPM-250, and the shipped preset on DDIM-50 as the same-device baseline.
# LOW_INIT and MID_INIT default to the shipped chain's experts (History 29: below t = 100 and [100, 500)); History
# 17-28 started both from History 16's expert for t < 500 (git show 941e322:data/models/tiny/ddpm_low_noise.safetensors)
# and scored with W=4.
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
LOW_INIT=${LOW_INIT:-data/models/tiny/ddpm_low_noise_2.safetensors}   # where the t < 500 run starts
MID_INIT=${MID_INIT:-data/models/tiny/ddpm_low_noise.safetensors}   # where the middle expert starts (History 28: the CPU's)
W=${W:-2}   # the classifier-free guidance weight of the scores (the preset's since History 29)
RESUME_STEPS=${RESUME_STEPS:-7000}; RESUME_MINUTES=${RESUME_MINUTES:-3.3}   # PHASES=resume: the extended plan and the clock
VARIANTS=${VARIANTS:-"none: bf16: bf16:--compile"}   # autocast:extra-flags; the first that runs fastest trains
mkdir -p "$OUT" "$CK"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TQDM_MININTERVAL=30
SHIPPED=data/models/tiny/ddpm.safetensors
common=(--unet '{"null_class": true}' --t-max 500 --device "$DEVICE" --workers "$WORKERS"
        --threads 2 --batch-size "$BATCH" --lr 0.0001 --warmup 100 --label-dropout 0.15 --ema-decay 0.999)
[ "$DEVICE" = cpu ] || common+=(--render-on-device)
runs=("lowt3:91:0:$LOW_INIT"); [ "$MID" = 1 ] && runs+=("mid:92:$MID_T:$MID_INIT")   # name:seed:t_min:init
[ "$MID" = 1 ] && half=(--workers $(( (WORKERS + 1) / 2 ))) || half=()   # two runs share the CPU workers

fine_tune() {   # extra train-ddpm flags; every run of $runs at once, each logging to $CK/<run><LOG_SUFFIX>.log
    local pids=() run seed tmin init
    for r in "${runs[@]}"; do
        IFS=: read -r run seed tmin init <<< "$r"
        $PY -m saliency_lib.train ddpm --out "$CK/$run" --seed "$seed" --t-min "$tmin" --init "$init" \
            --autocast "$amp" $extra "${common[@]}" "${half[@]}" "$@" > "$CK/$run$LOG_SUFFIX.log" 2>&1 &
        pids+=($!)
    done
    for i in "${!pids[@]}"; do wait "${pids[$i]}"; echo "${runs[$i]%%:*}: exit $?"; done
}
export_runs() {   # suffix of the export (none: <run>_ema; b: <run>b_ema), log lines kept
    local suffix=$1 lines=$2 run
    for r in "${runs[@]}"; do
        run=${r%%:*}
        $PY -m saliency_lib.train export --from-ckpt "$CK/$run/last.safetensors" --out "$CK/${run}${suffix}_ema.safetensors"
        cp "$CK/${run}${suffix}_ema.safetensors" "$OUT/"
        tr '\r' '\n' < "$CK/$run$suffix.log" | grep -v '^\s*$' | tail -n "$lines" > "$OUT/train_$run$suffix.log"
        tail -n 3 "$OUT/train_$run$suffix.log"
    done
}

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
        --checkpoint-minutes 100 --init "$LOW_INIT" "${common[@]}" > "$CK/probe.log" 2>&1
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

best=$(cat "$VARIANT_FILE" 2>/dev/null || echo "none:")   # the probe's choice; float32 eager without one
amp=${best%%:*}; extra=${best#*:}
if has train; then
# 2. the fine-tune; with MID=1 a second one beside it, on [MID_T, 500) only: the middle expert of a chain (History 18)
echo "training with autocast=$amp ${extra:-eager}"
rm -rf "$CK/lowt3" "$CK/mid" "$CK/lowt3_ema.safetensors" "$CK/mid_ema.safetensors"   # no stale expert gets scored
LOG_SUFFIX= fine_tune --fit-minutes "$FIT" --checkpoint-minutes 2
export_runs "" 40
fi

if has resume; then
# 2b. on a still-warm machine (History 28): both runs resumed with their plan extended to $RESUME_STEPS steps and stopped
#     on a $RESUME_MINUTES-minute clock (History 16's way of spending the minutes left), exported as <run>b_ema.safetensors
#     (--init is recorded in the checkpoint; --resume checks only the schedule)
[ -f "$CK/lowt3/last.safetensors" ] || { echo "no $CK/lowt3/last.safetensors: run the train phase first (same machine)"; exit 1; }
LOG_SUFFIX=b fine_tune --resume --steps "$RESUME_STEPS" --minutes "$RESUME_MINUTES" --checkpoint-minutes 1
export_runs b 8
fi

# 3. scores (the new experts on the base DDPM, passed explicitly so that the preset's shipped experts are replaced,
#    not stacked; the baseline: the shipped preset as it is)
score() {   # name sampler, then sweep_guidance's model flags
    local name=$1 sampler=$2; shift 2
    $PY scripts/sweep_guidance.py --device "$DEVICE" --weights "$W" --classifier-scales 5 --n "$N" --sampler "$sampler" \
        "$@" --grids "$CK" --json "$OUT/${name}_${sampler/:/}.json" \
        2>&1 | grep -E "judge per-class|misread" | sed "s/^/$name $sampler /"
}
if has score; then
score lowt3 ddim:50 --ddpm "$SHIPPED" --low-noise-expert "$CK/lowt3_ema.safetensors"
if [ -f "$CK/mid_ema.safetensors" ]; then   # the chain: mid for [MID_T, 500), lowt3 below MID_T
    score chain ddim:50 --ddpm "$SHIPPED" --low-noise-expert "$CK/mid_ema.safetensors" --expert-below-t 500 \
        --low-noise-expert "$CK/lowt3_ema.safetensors" --expert-below-t "$MID_T"
fi
score lowt3 ddpm:250 --ddpm "$SHIPPED" --low-noise-expert "$CK/lowt3_ema.safetensors"
score preset ddim:50
fi
ls -la "$OUT"
