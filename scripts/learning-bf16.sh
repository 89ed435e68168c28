#!/usr/bin/env bash
# Does a bf16 forward learn as well as f32 on the CPU? Trains the Sudoku CPU preset with each
# seed in both precisions, two runs side by side at one thread each (f32 and bf16 of the same
# seed), then prints every run's final test accuracy and loss and a summary per precision.
#
#   scripts/learning-bf16.sh DATA RUNS SEED...     # train the missing runs, then summarise
#   SUMMARY_ONLY=1 scripts/learning-bf16.sh DATA RUNS SEED...   # summarise what RUNS holds
#
# DATA is the preset's dataset (README, *Learning on a CPU*: `hrm data sudoku-generate ...
# --blanks 10` then `hrm data sudoku`); runs go to RUNS/f32-sS and RUNS/bf16-sS (a run folder
# that already holds a finished run is kept, so the script resumes where it stopped).
#
# Environment:
#   HRM      the hrm binary (default target/release/hrm)
#   CONFIG   the preset (default configs/sudoku-cpu.toml)
#   OVERRIDES  more key=value overrides for every run, space-separated (e.g. "epochs=30" to train
#            to convergence; use a RUNS folder of its own for each setting)
#   PYTHON   any python3 (standard library only) for the summary
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 3 ] || { sed -n 2,18p "$0" >&2; exit 2; }
DATA="$1"
RUNS="$2"
shift 2
HRM="${HRM:-target/release/hrm}"
CONFIG="${CONFIG:-configs/sudoku-cpu.toml}"
PYTHON="${PYTHON:-python3}"
[ -x "$HRM" ] || { echo "error: $HRM not found; build it with: cargo build --release" >&2; exit 1; }
[ -d "$DATA" ] || { echo "error: dataset folder $DATA not found" >&2; exit 1; }
mkdir -p "$RUNS"

finished() { [ -f "$1/done" ]; }

train() { # precision seed
  local dir="$RUNS/$1-s$2"
  local dtype=float32
  [ "$1" = bf16 ] && dtype=bfloat16
  if finished "$dir"; then return 0; fi
  rm -rf "$dir"
  # shellcheck disable=SC2086 # OVERRIDES is a list of words
  "$HRM" --threads 1 train "$CONFIG" "data_path=$DATA" "seed=$2" "arch.forward_dtype=$dtype" \
    ${OVERRIDES:-} --run-dir "$dir" >"$RUNS/$1-s$2.log" 2>&1
  touch "$dir/done"
}

if [ -z "${SUMMARY_ONLY:-}" ]; then
  for s in "$@"; do
    echo "# seed $s: f32 and bf16 side by side ($(date -u +%T))"
    train f32 "$s" &
    a=$!
    train bf16 "$s" &
    b=$!
    wait $a
    wait $b
  done
fi

"$PYTHON" - "$RUNS" "$@" <<'EOF'
import json, os, statistics, sys
runs, seeds = sys.argv[1], sys.argv[2:]
def final(p, s):
    d = os.path.join(runs, f"{p}-s{s}")
    try:
        rows = [json.loads(l) for l in open(os.path.join(d, "metrics.jsonl"))]
    except OSError:
        return None
    ev = [r for r in rows if "eval/all/exact_accuracy" in r]
    if not ev:
        return None
    return 100 * ev[-1]["eval/all/exact_accuracy"], ev[-1]["eval/all/lm_loss"], rows[-1]["time"] / 60
print(f"{'seed':>4} | {'f32 exact':>9} {'loss':>7} {'min':>5} | {'bf16 exact':>10} {'loss':>7} {'min':>5} | bf16 - f32")
res = {"f32": [], "bf16": []}
for s in seeds:
    a, b = final("f32", s), final("bf16", s)
    cell = lambda r: f"{r[0]:9.1f} {r[1]:7.4f} {r[2]:5.1f}" if r else f"{'-':>9} {'-':>7} {'-':>5}"
    diff = f"{b[0] - a[0]:+6.1f}" if a and b else ""
    print(f"{s:>4} | {cell(a)} | {cell(b):>24} | {diff}")
    for p, r in (("f32", a), ("bf16", b)):
        if r:
            res[p].append(r)
for p, rs in res.items():
    if len(rs) < 2:
        continue
    ex = [r[0] for r in rs]
    lo = [r[1] for r in rs]
    mins = [r[2] for r in rs]
    print(f"{p:>5}: {len(rs)} runs, exact mean {statistics.mean(ex):.1f}% (sd {statistics.stdev(ex):.1f}, "
          f"median {statistics.median(ex):.1f}), test loss mean {statistics.mean(lo):.4f}, "
          f"{statistics.mean(mins):.1f} min a run")
pairs = [(final("f32", s), final("bf16", s)) for s in seeds]
pairs = [(a, b) for a, b in pairs if a and b]
if len(pairs) >= 2:
    d = [b[0] - a[0] for a, b in pairs]
    se = statistics.stdev(d) / len(d) ** 0.5
    print(f"paired bf16 - f32: mean {statistics.mean(d):+.1f} points (standard error {se:.1f}), "
          f"bf16 ahead on {sum(x > 0 for x in d)} of {len(d)} seeds")
EOF
