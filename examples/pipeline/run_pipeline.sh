#!/usr/bin/env bash
# Run the medcondense pipeline on the example brain patches:
#   example DICOM tree -> ingest -> distill -> evaluate -> score -> export
#
# Usage:  ./run_pipeline.sh [WORK_DIR]        (default: ./work; the log goes to WORK_DIR/pipeline.log)
# Change the settings below, or set them in the environment: METHOD=dsa IPC=1 ./run_pipeline.sh
#
# Exit codes of every medcondense stage; this script stops on the first non-zero one and exits
# with it, so a scheduler (cron, systemd, Jenkins) sees what went wrong:
#     0   ok
#     1   runtime failure (e.g. CUDA out of memory, NaN loss)
#     2   usage or configuration error (a bad option, an existing output without --overwrite)
#     3   no usable input (no readable DICOM/NIfTI, a file that is not a medcondense file)
#     4   partial: some input files were rejected (see the rejects CSV next to data.h5)
#     5   a gate failed (score --fail-on-copies found near-copies of real images)
#   130   interrupted (Ctrl-C)
set -euo pipefail

# ---- settings --------------------------------------------------------------------------------
WORK="${1:-${WORK:-work}}"
PYTHON="${PYTHON:-python}"
MEDCONDENSE="${MEDCONDENSE:-medcondense}"
TASK="${TASK:-aal10}"
TRAIN_PER_CLASS="${TRAIN_PER_CLASS:-40}"
TEST_PER_CLASS="${TEST_PER_CLASS:-20}"
SIZE="${SIZE:-32}"
METHOD="${METHOD:-dm}"
IPC="${IPC:-10}"
PRESET="${PRESET:-quick}"
ITERATIONS="${ITERATIONS:-}"        # empty: the preset's count (DM quick: 200, MTT quick: 10)
# MTT only (METHOD=mtt); empty: the preset's values (quick: 3 experts x 8 epochs, 5 student steps).
# The expert trajectories go to WORK/data.h5.experts/ and are reused by every later run and IPC.
SYN_STEPS="${SYN_STEPS:-}"
NUM_EXPERTS="${NUM_EXPERTS:-}"
TRAIN_EPOCHS="${TRAIN_EPOCHS:-}"
MODELS="${MODELS:-2}"
EPOCHS="${EPOCHS:-50}"
FULL_STEPS="${FULL_STEPS:-1000}"     # SGD-step budget of the full-data baseline (shared by evaluate and score)
DEVICE="${DEVICE:-auto}"
SEED="${SEED:-0}"
EXPORT_FORMATS="${EXPORT_FORMATS:-all}"
BUILDER="$(cd "$(dirname "$0")/.." && pwd)/brain_patches.py"

mkdir -p "$WORK"
LOG="$WORK/pipeline.log"
DATA="$WORK/data.h5"
SYN="$WORK/syn_${METHOD}_ipc${IPC}.h5"
REPORT="$WORK/report.json"
SCORE="$WORK/score.json"
EXPORT="$WORK/export"

log() {
    echo "$(date '+%Y-%m-%d %H:%M:%S') $*" | tee -a "$LOG"
}

# run_step NAME COMMAND...: run one stage, append its output to the log, stop on failure
run_step() {
    local name="$1"
    shift
    log "START $name: $*"
    local rc=0
    "$@" >>"$LOG" 2>&1 || rc=$?
    if [ "$rc" -ne 0 ]; then
        log "FAILED $name with exit code $rc (see $LOG)"
        exit "$rc"
    fi
    log "DONE $name"
}

log "medcondense pipeline in $WORK (method $METHOD, ipc $IPC, preset $PRESET)"
run_step "example data" "$PYTHON" "$BUILDER" --task "$TASK" --out "$WORK/brain" --format dicom \
    --train-per-class "$TRAIN_PER_CLASS" --test-per-class "$TEST_PER_CLASS" --seed "$SEED" --overwrite
run_step "ingest" "$MEDCONDENSE" ingest "$WORK/brain/dicom" --labels "$WORK/brain/dicom/manifest.csv" \
    --size "$SIZE" --seed "$SEED" -o "$DATA" --overwrite
run_step "distill" "$MEDCONDENSE" distill "$DATA" --method "$METHOD" --ipc "$IPC" --preset "$PRESET" \
    ${ITERATIONS:+--iterations "$ITERATIONS"} ${SYN_STEPS:+--syn-steps "$SYN_STEPS"} \
    ${NUM_EXPERTS:+--num-experts "$NUM_EXPERTS"} ${TRAIN_EPOCHS:+--train-epochs "$TRAIN_EPOCHS"} \
    --device "$DEVICE" --seed "$SEED" -o "$SYN" --overwrite
run_step "evaluate" "$MEDCONDENSE" evaluate "$SYN" --real "$DATA" --models "$MODELS" --epochs "$EPOCHS" \
    --set evaluate.full_steps="$FULL_STEPS" --device "$DEVICE" --seed "$SEED" -o "$REPORT" --overwrite
rm -f "$SCORE"
# same models/epochs/full_steps/seed as evaluate: score reuses evaluate's cached baselines
run_step "score" "$MEDCONDENSE" score "$DATA" "$SYN" --ipc "$IPC" --repeats "$MODELS" --epochs "$EPOCHS" \
    --set score.full_steps="$FULL_STEPS" --device "$DEVICE" --seed "$SEED" -o "$SCORE"
run_step "export" "$MEDCONDENSE" export "$SYN" --format "$EXPORT_FORMATS" --report "$REPORT" \
    --report "$SCORE" -o "$EXPORT" --overwrite
log "finished: the shareable set and its data card are in $EXPORT (CARD.md)"
