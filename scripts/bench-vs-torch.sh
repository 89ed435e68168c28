#!/usr/bin/env bash
# Side-by-side speed of `hrm` and the PyTorch peers (../shared/peers/torch_hrm.py for HRM,
# scripts/torch_trm_peer.py for TRM), run alternately (A B A B ...) with the same settings in one
# session, printing the ratios ours / peer.
#
#   scripts/bench-vs-torch.sh [ROUNDS]            # default 3 rounds of every measurement
#
# Environment:
#   HRM        the hrm binary (default target/release/hrm; build with `cargo build --release`)
#   PYTHON     a Python with torch, numpy, safetensors (default .venv/bin/python, else python3)
#   PEER       the peer script (default ../shared/peers/torch_hrm.py)
#   TRM_PEER   the TRM peer (default scripts/torch_trm_peer.py; it imports PEER's layers)
#   TRM_STEPS  timed steps per trm run (default 2, after 1 warm-up step; a step takes seconds)
#   THREADS    threads for both (default 2)
#   ONLY       run only these measurements (space-separated: train eval solve rss train-bf16
#              eval-bf16 solve-bf16 trm)
#
# Measurements (the targets of the speed issue):
#   train  training step, Sudoku preset (hidden 512, 4+4 layers, 2x2 cycles, seq 81), batch 32
#   eval   eval segment, Sudoku preset, batch 64 (a rollout = 16 segments)
#   solve  `hrm solve` vs a python process that imports torch, builds the model and runs 16
#          segments at batch 1: process start included, both with random weights of that size
#   rss    peak RSS of a training step (from the train runs), and ours from 2x2 to 8x8 cycles
#   trm    TRM training step (--arch trm: one 2-block network, hidden 512, 16-position prefix,
#          seq 81) at 3xN cycles for N = 2, 4, 6, batch 32: median s/step and peak RSS of each
#          process, ours / the TRM peer
#   train-bf16, eval-bf16, solve-bf16   the same in bf16: ours with a bfloat16 forward
#          (`--dtype bfloat16`: f32 activations, bf16 matrix products on AMX or AVX512-BF16; solve
#          with `--bf16`), the peer with a bfloat16 forward (PyTorch's oneDNN uses the same
#          units); train-bf16 also reports ours bf16 / peer f32 (from `train`, or its own f32
#          peer runs when train is not selected) and both peak RSS; they need a CPU with AMX or
#          AVX512-BF16
# The machine must be otherwise idle: every figure is a median, and the runs alternate so that
# slow drift affects both sides alike.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-3}"
HRM="${HRM:-target/release/hrm}"
PEER="${PEER:-../shared/peers/torch_hrm.py}"
TRM_PEER="${TRM_PEER:-scripts/torch_trm_peer.py}"
TRM_STEPS="${TRM_STEPS:-2}"
THREADS="${THREADS:-2}"
ONLY="${ONLY:-train eval solve rss train-bf16 eval-bf16 solve-bf16 trm}"
TRM_N="2 4 6"
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
[ -x "$HRM" ] || { echo "error: $HRM not found; build it with: cargo build --release" >&2; exit 1; }
[ -f "$PEER" ] || { echo "error: the peer $PEER is missing (set PEER)" >&2; exit 1; }
"$PYTHON" -c 'import torch, numpy, safetensors' 2>/dev/null || {
  echo "error: $PYTHON lacks torch/numpy/safetensors: python3 -m venv .venv && .venv/bin/pip install torch numpy safetensors" >&2
  exit 1
}
OUT="${BENCH_OUT:-target/bench-vs-torch}"
mkdir -p "$OUT"
echo "# $(date -u +%FT%TZ) $(uname -m), $(nproc) cores, threads $THREADS, rounds $ROUNDS"
echo "# hrm: $("$HRM" --version)   torch: $("$PYTHON" -c 'import torch; print(torch.__version__)')"

json() { "$PYTHON" -c "import json,sys; d=json.loads(sys.stdin.read().strip().splitlines()[-1]); print(d.get('$1'))"; }
median() { "$PYTHON" -c "import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))" "$@"; }
ratio() { "$PYTHON" -c "import sys; print(f'{float(sys.argv[1])/float(sys.argv[2]):.3f}')" "$1" "$2"; }

# solve: one full process each, wall clock from fork to exit
SOLVE_PY='
import sys, time, torch
sys.path.insert(0, sys.argv[1]); import torch_hrm as P
torch.set_num_threads(int(sys.argv[2])); torch.manual_seed(0)
cfg = P.HRMConfig(batch_size=1, forward_dtype=sys.argv[3], **P.PRESETS["sudoku"]); m = P.HRM(cfg)
b = dict(inputs=torch.ones(1, 81, dtype=torch.int32), labels=torch.full((1, 81), 2, dtype=torch.int32),
         puzzle_identifiers=torch.zeros(1, dtype=torch.int32))
for carry, out in P.eval_rollout(m, b): pass
print(out["logits"].argmax(-1)[0, :9].tolist())
'
if [[ " $ONLY " == *" solve"* ]]; then
  # a checkpoint of the Sudoku architecture with random weights, so both sides load/run the same size
  CKPT="$OUT/sudoku-random.safetensors"
  [ -f "$CKPT" ] || "$HRM" bench export-random --preset sudoku --output "$CKPT" >/dev/null
fi

declare -A R
for round in $(seq 1 "$ROUNDS"); do
  for what in $ONLY; do
    case "$what" in
      train)
        R[train_ours]+=" $("$HRM" --threads "$THREADS" bench train --preset sudoku --batch 32 --steps 3 --warmup 1 2>/dev/null | tee -a "$OUT/train-ours.jsonl" | json median_s_per_step)"
        R[train_peer]+=" $("$PYTHON" "$PEER" bench --preset sudoku --batch 32 --steps 3 --warmup 1 --threads "$THREADS" 2>/dev/null | tee -a "$OUT/train-peer.jsonl" | json median_s_per_step)"
        ;;
      eval)
        R[eval_ours]+=" $("$HRM" --threads "$THREADS" bench eval --preset sudoku --batch 64 --steps 4 --warmup 1 2>/dev/null | tee -a "$OUT/eval-ours.jsonl" | json median_s_per_step)"
        R[eval_peer]+=" $("$PYTHON" "$PEER" bench-eval --preset sudoku --batch 64 --steps 4 --warmup 1 --threads "$THREADS" 2>/dev/null | tee -a "$OUT/eval-peer.jsonl" | json median_s_per_step)"
        ;;
      solve|solve-bf16)
        P="81 chars: 4.....8.5.3..........7......2.....6.....8.4......1.......6.3.7.5..2.....1.4......"
        if [ "$what" = solve ]; then flag=(); dt=float32; else flag=(--bf16); dt=bfloat16; fi
        t0=$(date +%s.%N); "$HRM" --threads "$THREADS" solve "${flag[@]}" --checkpoint "$CKPT" sudoku "${P#81 chars: }" >/dev/null; t1=$(date +%s.%N)
        R[${what}_ours]+=" $(echo "$t1 - $t0" | bc -l)"
        t0=$(date +%s.%N); "$PYTHON" -c "$SOLVE_PY" "$(dirname "$PEER")" "$THREADS" "$dt" >/dev/null; t1=$(date +%s.%N)
        R[${what}_peer]+=" $(echo "$t1 - $t0" | bc -l)"
        ;;
      train-bf16)
        R[train-bf16_ours]+=" $("$HRM" --threads "$THREADS" bench train --dtype bfloat16 --preset sudoku --batch 32 --steps 3 --warmup 1 2>/dev/null | tee -a "$OUT/train-bf16-ours.jsonl" | json median_s_per_step)"
        R[train-bf16_peer]+=" $("$PYTHON" "$PEER" bench --dtype bfloat16 --preset sudoku --batch 32 --steps 3 --warmup 1 --threads "$THREADS" 2>/dev/null | tee -a "$OUT/train-bf16-peer.jsonl" | json median_s_per_step)"
        if [[ " $ONLY " != *" train "* ]]; then
          R[train_peer]+=" $("$PYTHON" "$PEER" bench --preset sudoku --batch 32 --steps 3 --warmup 1 --threads "$THREADS" 2>/dev/null | json median_s_per_step)"
        fi
        ;;
      eval-bf16)
        R[eval-bf16_ours]+=" $("$HRM" --threads "$THREADS" bench eval --dtype bfloat16 --preset sudoku --batch 64 --steps 4 --warmup 1 2>/dev/null | tee -a "$OUT/eval-bf16-ours.jsonl" | json median_s_per_step)"
        R[eval-bf16_peer]+=" $("$PYTHON" "$PEER" bench-eval --dtype bfloat16 --preset sudoku --batch 64 --steps 4 --warmup 1 --threads "$THREADS" 2>/dev/null | tee -a "$OUT/eval-bf16-peer.jsonl" | json median_s_per_step)"
        ;;
      trm)
        for n in $TRM_N; do
          args=(--preset sudoku --cycles "3x$n" --batch 32 --steps "$TRM_STEPS" --warmup 1)
          o=$("$HRM" --threads "$THREADS" bench train --arch trm "${args[@]}" 2>/dev/null | tee -a "$OUT/trm-ours.jsonl")
          p=$(TORCH_HRM_PEER="$PEER" "$PYTHON" "$TRM_PEER" bench "${args[@]}" --threads "$THREADS" 2>/dev/null | tee -a "$OUT/trm-peer.jsonl")
          R[trm_ours_$n]+=" $(json median_s_per_step <<<"$o")"; R[trm_rss_ours_$n]+=" $(json peak_rss_mb <<<"$o")"
          R[trm_peer_$n]+=" $(json median_s_per_step <<<"$p")"; R[trm_rss_peer_$n]+=" $(json peak_rss_mb <<<"$p")"
        done
        ;;
      rss)
        for c in 2x2 4x4 8x8; do
          R[rss_$c]+=" $("$HRM" --threads "$THREADS" bench train --preset sudoku --batch 32 --steps 1 --warmup 1 --cycles "$c" 2>/dev/null | json peak_rss_mb)"
        done
        ;;
    esac
  done
done

echo
printf '%-34s %12s %12s %8s\n' measurement ours peer ratio
for what in $ONLY; do
  case "$what" in
    train|eval|solve|train-bf16|eval-bf16|solve-bf16)
      o=$(median ${R[${what}_ours]}); p=$(median ${R[${what}_peer]})
      unit=$([[ "$what" == solve* ]] && echo "s/process" || echo "s/step")
      printf '%-34s %12.3f %12.3f %8s\n' "$what ($unit)" "$o" "$p" "$(ratio "$o" "$p")"
      if [ "$what" = train-bf16 ]; then
        p32=$(median ${R[train_peer]})
        printf '%-34s %12.3f %12.3f %8s\n' "train-bf16 vs peer f32 (s/step)" "$o" "$p32" "$(ratio "$o" "$p32")"
      fi
      ;;
  esac
done
if [[ " $ONLY " == *" train "* ]]; then
  o=$(cat "$OUT/train-ours.jsonl" | json peak_rss_mb)
  pk=$("$PYTHON" - "$PEER" "$THREADS" <<'EOF'
import resource, subprocess, sys
subprocess.run([sys.executable, sys.argv[1], "bench", "--preset", "sudoku", "--batch", "32", "--steps", "1",
                "--warmup", "1", "--threads", sys.argv[2]], capture_output=True, check=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
EOF
)
  printf '%-34s %12.0f %12.0f %8s\n' "peak RSS, train step (MiB)" "$o" "$pk" "$(ratio "$o" "$pk")"
fi
if [[ " $ONLY " == *" train-bf16 "* ]]; then
  o=$(cat "$OUT/train-bf16-ours.jsonl" | json peak_rss_mb)
  pk=$("$PYTHON" - "$PEER" "$THREADS" <<'EOF'
import resource, subprocess, sys
subprocess.run([sys.executable, sys.argv[1], "bench", "--dtype", "bfloat16", "--preset", "sudoku", "--batch", "32",
                "--steps", "1", "--warmup", "1", "--threads", sys.argv[2]], capture_output=True, check=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
EOF
)
  printf '%-34s %12.0f %12.0f %8s\n' "peak RSS, bf16 train step (MiB)" "$o" "$pk" "$(ratio "$o" "$pk")"
fi
if [[ " $ONLY " == *" trm "* ]]; then
  for n in $TRM_N; do
    o=$(median ${R[trm_ours_$n]}); p=$(median ${R[trm_peer_$n]})
    printf '%-34s %12.3f %12.3f %8s\n' "trm train 3x$n (s/step)" "$o" "$p" "$(ratio "$o" "$p")"
    o=$(median ${R[trm_rss_ours_$n]}); p=$(median ${R[trm_rss_peer_$n]})
    printf '%-34s %12.0f %12.0f %8s\n' "trm peak RSS 3x$n (MiB)" "$o" "$p" "$(ratio "$o" "$p")"
  done
fi
if [[ " $ONLY " == *" rss "* ]]; then
  a=$(median ${R[rss_2x2]}); b=$(median ${R[rss_4x4]}); c=$(median ${R[rss_8x8]})
  printf '%-34s %12s\n' "peak RSS 2x2 / 4x4 / 8x8 (MiB)" "$a / $b / $c"
  printf '%-34s %12s\n' "growth 2x2 -> 8x8" "$("$PYTHON" -c "print(f'{($c/$a-1)*100:.1f}%')")"
fi
