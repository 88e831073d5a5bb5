#!/usr/bin/env bash
# Runs the model-loader fuzzer (models/tests/fuzz_loaders.rs) far longer than CI does.
#
#   scripts/fuzz-loaders.sh [CASES_PER_FIXTURE] [TIME_LIMIT_SECONDS]
#
# Defaults: 20000 cases per fixture, stopped after 1800 s. Each run draws a fresh random seed
# (proptest prints it on failure); set PROPTEST_RNG_SEED to repeat one. A failing case is kept
# in $CARGO_TARGET_DIR/tmp/fuzz-loaders/<fixture>/failed-*; after an abort (an allocation over
# the harness limit) the input is still in .../<fixture>/current.
set -euo pipefail

cases="${1:-20000}"
limit="${2:-1800}"
cd "$(dirname "$0")/.."

export PROPTEST_CASES="$cases"
# Shrinking a hang costs the per-case time limit each step; keep it bounded.
export PROPTEST_MAX_SHRINK_ITERS="${PROPTEST_MAX_SHRINK_ITERS:-256}"

status=0
timeout --signal=INT --kill-after=30 "$limit" \
    nice -n 19 cargo test --release -p cranegrad-models --test fuzz_loaders \
    -- --test-threads="${FUZZ_THREADS:-2}" || status=$?
if [ "$status" -eq 124 ]; then
    echo "fuzz-loaders: stopped after ${limit} s with no failure so far" >&2
    exit 0
fi
exit "$status"
