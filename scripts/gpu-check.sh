#!/usr/bin/env bash
# Every GPU check of hrm in one prepared run, for a machine with an NVIDIA GPU (budget: under
# 8 minutes on one H200, enforced by a global deadline; sections that would overrun are skipped).
#
#   1. info      nvidia-smi, driver, python3/torch, the binary's libraries
#   2. parity    `hrm parity --device cuda:0` on the reference fixtures, in f32 (no TF32)
#   3. device    `hrm device-check`: optimizer kernels bit-for-bit vs CPU, an f32 training step
#                vs CPU, bf16 forward and step vs f32
#   4. bench     training step, Sudoku preset, batch 768, bf16 then f32: ours
#                (`hrm bench train --device cuda:0`) and the PyTorch peer on the same GPU
#                (scripts/torch_peer_gpu.py around ../shared/peers/torch_hrm.py), alternating
#                A B A B, each with warm-up steps; prints the ratio ours/peer
#   5. train     a tiny Sudoku run on the GPU; the same run as one NCCL rank (the data-parallel
#                path of `--gpus N`), compared; stop + resume on the NCCL path; eval and solve on
#                the GPU; `--gpus 2` when the machine has two GPUs
#
# Inputs come from ${HRM_GPU_INPUTS:-.gpu-inputs} (filled here by scripts/prepare-gpu-inputs.sh:
# the prebuilt `hrm`, the fixtures, the peer), because ../shared may not exist where this runs.
# The binary is built with cargo only when cargo exists on the machine (the lent GPU machines
# have no Rust toolchain, so there the prebuilt one is used). The CUDA libraries come from the
# machine's python3 (PyTorch's nvidia-* wheels), the driver's libcuda from the system.
#
# The whole log goes to $OUT/gpu-check.log when $OUT is set (else ./gpu-check-out/), with a
# summary at the end and in summary.txt. Exit status: 0 when every section that ran passed.
#
# Knobs (defaults are the real check): HRM_GPU_CHECK_BUDGET (450 s), HRM_GPU_CHECK_DEVICE
# (cuda:0; `cpu` makes a dry run of the plumbing on a machine without a GPU, where the GPU-only
# sections fail), HRM_GPU_CHECK_BENCH ("--preset sudoku --batch 768"), HRM_GPU_CHECK_PREBUILT=1
# (use $HRM_GPU_INPUTS/hrm.gz even where cargo exists).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
IN="${HRM_GPU_INPUTS:-.gpu-inputs}"
LOGDIR="${OUT:-$ROOT/gpu-check-out}"
BUDGET="${HRM_GPU_CHECK_BUDGET:-450}" # seconds for everything
DEV="${HRM_GPU_CHECK_DEVICE:-cuda:0}"
read -r -a BENCH <<<"${HRM_GPU_CHECK_BENCH:---preset sudoku --batch 768}"
mkdir -p "$LOGDIR"
LOG="$LOGDIR/gpu-check.log"
: >"$LOG"
exec > >(tee -a "$LOG") 2>&1
TEE_PID=$!
T0=$(date +%s)
DEADLINE=$((T0 + BUDGET))
WORK="$(mktemp -d /tmp/hrm-gpu-check.XXXXXX)"
SUMMARY=()
FAILED=0

now() { echo $(($(date +%s) - T0)); }
note() { SUMMARY+=("$*"); }

# out NAME: the file holding the output of `run NAME ...`
out() { echo "$WORK/out-$(echo "$1" | tr -c 'A-Za-z0-9-' '_').txt"; }

# run NAME LIMIT CMD...: run with a timeout capped by the global deadline, output to the log and
# to $(out NAME); records the outcome (never call it in a pipeline: it sets globals)
run() {
  local name="$1" limit="$2"
  shift 2
  local left=$((DEADLINE - $(date +%s) - 5))
  if [ "$left" -lt 15 ]; then
    echo "=== [$name] SKIPPED: ${left}s left of the ${BUDGET}s budget"
    note "$name: skipped (budget)"
    return 99
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo
  echo "=== [$name] at +$(now)s (limit ${limit}s): $*"
  local s rc
  s=$(date +%s)
  timeout --kill-after=5 "$limit" "$@" 2>&1 | tee "$(out "$name")"
  rc=${PIPESTATUS[0]}
  echo "=== [$name] rc=$rc in $(($(date +%s) - s))s"
  if [ "$rc" -ne 0 ]; then
    FAILED=1
    note "$name: FAIL (rc=$rc$([ "$rc" -eq 124 ] && echo ', timed out'))"
  else
    note "$name: ok ($(($(date +%s) - s))s)"
  fi
  return "$rc"
}

finish() {
  echo
  echo "================ summary (+$(now)s) ================"
  printf '%s\n' "${SUMMARY[@]}" | tee "$LOGDIR/summary.txt"
  rm -rf "$WORK"
  exec >&- 2>&-
  wait "$TEE_PID" 2>/dev/null # let the log's tee finish writing
  exit "$FAILED"
}

# ---------------------------------------------------------------------------------------------
echo "=== hrm gpu-check: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname), inputs $IN, budget ${BUDGET}s"

if command -v cargo >/dev/null 2>&1 && [ -z "${HRM_GPU_CHECK_PREBUILT:-}" ]; then
  # a machine with Rust and CUDA: build here (needs nvcc; see scripts/install-cuda-build-deps.sh)
  [ -f .cuda-deps/env.sh ] && source .cuda-deps/env.sh
  run build 1200 cargo build --profile gpu -p hrm-cli --features nccl || finish
  BIN="${CARGO_TARGET_DIR:-$ROOT/target}/gpu/hrm"
else
  # no cargo here (the lent GPU machines): the binary prepared by scripts/prepare-gpu-inputs.sh
  [ -f "$IN/hrm.gz" ] || {
    echo "error: $IN/hrm.gz not found: run scripts/prepare-gpu-inputs.sh and carry $IN"
    note "inputs: FAIL ($IN/hrm.gz missing)"
    FAILED=1
    finish
  }
  (cd "$IN" && sha256sum -c --quiet SHA256SUMS) || { note "inputs: FAIL (checksums)"; FAILED=1; finish; }
  gzip -dc "$IN/hrm.gz" >"$WORK/hrm" && chmod +x "$WORK/hrm"
  BIN="$WORK/hrm"
  echo "--- BUILD_INFO"
  cat "$IN/BUILD_INFO"
fi

# CUDA libraries (cuBLAS, cuRAND, the runtime, NCCL) from python3's nvidia-* wheels
NV_LIBS="$(python3 - <<'EOF' 2>/dev/null
import os
try:
    import nvidia
except ImportError:
    raise SystemExit(0)
dirs = []
for base in list(nvidia.__path__):
    for sub in sorted(os.listdir(base)):
        lib = os.path.join(base, sub, "lib")
        if os.path.isdir(lib):
            dirs.append(lib)
print(":".join(dirs))
EOF
)"
export LD_LIBRARY_PATH="${NV_LIBS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# the driver's libcuda.so.1: normally on the loader's path; else where PyTorch finds it
if ldd "$BIN" | grep -q 'libcuda.so.1 => not found'; then
  CUDA_DRV_DIR="$(python3 - <<'EOF' 2>/dev/null
import os, torch
torch.cuda.init()
for line in open("/proc/self/maps"):
    path = line.split()[-1]
    if "libcuda.so" in path:
        print(os.path.dirname(path))
        break
EOF
)"
  [ -n "$CUDA_DRV_DIR" ] && export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$CUDA_DRV_DIR"
fi

echo
echo "=== [info] at +$(now)s"
nvidia-smi || echo "(nvidia-smi failed)"
NGPU=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
python3 -c 'import torch, sys; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "gpus", torch.cuda.device_count())' || true
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
echo "--- libraries of $BIN"
ldd "$BIN" | grep -E 'cuda|cublas|curand|nccl|not found' || true
if [ "$DEV" != cpu ] && ldd "$BIN" | grep -q 'not found'; then
  echo "error: libraries missing (see above)"
  note "info: FAIL (libraries missing)"
  FAILED=1
  finish
fi
note "info: ${NGPU} GPU(s): $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -n1)"
"$BIN" --version

# ---------------------------------------------------------------------------------------------
# 2. parity on the GPU (f32)
run parity 150 "$BIN" parity --device "$DEV" "$IN"/fixtures/*.safetensors
SUMMARY+=("    $(grep -h '^parity:' "$(out parity)")")

# 3. device check
run device-check 200 "$BIN" device-check --device "$DEV" --batch 64
while read -r line; do SUMMARY+=("    $line"); done < <(grep -E '^(optimizer|f32 step|bf16 forward|bf16 step) ' "$(out device-check)")

# ---------------------------------------------------------------------------------------------
# 4. bench: ours vs the peer on the same GPU, A B A B
PEER=(python3 scripts/torch_peer_gpu.py --peer "$IN/torch_hrm.py" "${BENCH[@]}" --steps 5 --warmup 2
  --device "$DEV")
OURS=("$BIN" bench train --device "$DEV" "${BENCH[@]}" --steps 5 --warmup 2)
bench_pair() { # DTYPE ROUND
  run "bench ours $1 #$2" 150 "${OURS[@]}" --dtype "$1"
  grep -h '^{' "$(out "bench ours $1 #$2")" >>"$WORK/ours-$1.jsonl"
  run "bench peer $1 #$2" 150 "${PEER[@]}" --dtype "$1"
  grep -h '^{' "$(out "bench peer $1 #$2")" >>"$WORK/peer-$1.jsonl"
}
ratio() { # DTYPE
  python3 - "$WORK/ours-$1.jsonl" "$WORK/peer-$1.jsonl" "$1" <<'EOF'
import json, sys
def meds(path):
    out = []
    for line in open(path):
        line = line.strip()
        if line.startswith("{"):
            out.append(json.loads(line)["median_s_per_step"])
    return out
ours, peer = meds(sys.argv[1]), meds(sys.argv[2])
if not ours or not peer:
    print(f"ratio {sys.argv[3]}: n/a (ours {ours}, peer {peer})")
else:
    o, p = min(ours), min(peer)
    print(f"ratio {sys.argv[3]} (train step): ours {o:.4f} s/step "
          f"(runs {ours}), peer {p:.4f} s/step (runs {peer}) -> ours/peer = {o / p:.2f}")
EOF
}
bench_pair bfloat16 1
bench_pair bfloat16 2
SUMMARY+=("    $(ratio bfloat16)")

# ---------------------------------------------------------------------------------------------
# 5. training on the GPU: single process, one NCCL rank, resume, eval, solve
DATA="$WORK/data"
if run data 90 bash -c "'$BIN' data sudoku-generate --output-dir '$WORK/csv' --from-scratch 200 --seed 3 \
    && '$BIN' data sudoku --input-dir '$WORK/csv' --output-dir '$DATA' --num-aug 3"; then
  TRAIN=(configs/tiny.toml "data_path=$DATA" epochs=4 eval_interval=2 checkpoint_interval=4
    arch.halt_exploration_prob=0 "device=$DEV")
  run "train gpu" 120 "$BIN" train "${TRAIN[@]}" --run-dir "$WORK/run-single"
  mkdir -p "$WORK/rdv1" "$WORK/rdv2"
  run "train nccl rank" 120 env HRM_WORLD_SIZE=1 HRM_RANK=0 HRM_DIST_DIR="$WORK/rdv1" \
    "$BIN" train "${TRAIN[@]}" --run-dir "$WORK/run-nccl"
  # stop after 3 steps, resume: the NCCL path's checkpoint (gathered carry) and restart
  run "nccl stop" 90 env HRM_WORLD_SIZE=1 HRM_RANK=0 HRM_DIST_DIR="$WORK/rdv2" \
    "$BIN" train "${TRAIN[@]}" --run-dir "$WORK/run-resume" --stop-after 3
  rm -f "$WORK/rdv2"/nccl-unique-id
  run "nccl resume" 90 env HRM_WORLD_SIZE=1 HRM_RANK=0 HRM_DIST_DIR="$WORK/rdv2" \
    "$BIN" train --resume "$WORK/run-resume"
  # the NCCL rank runs the computation of the single process (world size 1: the all-reduce and
  # the gathers are identities), so the two agree up to GPU non-determinism, which chaotic
  # training (halting decisions) may amplify over many steps: the criterion is the first steps'
  # losses; the final weight differences are reported
  run "compare runs" 60 python3 - "$WORK/run-single" "$WORK/run-nccl" "$WORK/run-resume" <<'EOF'
import glob, json, os, re, sys
import numpy as np
from safetensors.numpy import load_file
def last(d):
    c = [(int(re.search(r"step_(\d+)\.safetensors$", p).group(1)), p)
         for p in glob.glob(os.path.join(d, "step_*.safetensors")) if ".state." not in p]
    return load_file(max(c)[1]), max(c)[0]
def losses(d):
    out = {}
    for line in open(os.path.join(d, "metrics.jsonl")):
        r = json.loads(line)
        if "train/lm_loss" in r:
            out[r["step"]] = r["train/lm_loss"]
    return out
(a, sa), (b, sb), (c, sc) = last(sys.argv[1]), last(sys.argv[2]), last(sys.argv[3])
print(f"final steps: single {sa}, nccl rank {sb}, nccl stopped+resumed {sc}")
for name, x, y in (("nccl rank vs single", b, a), ("resumed vs uninterrupted nccl", c, b)):
    worst = max(float(np.max(np.abs(x[k].astype(np.float64) - y[k].astype(np.float64)))) for k in a)
    print(f"{name}: max final weight difference {worst:.3e}")
la, lb = losses(sys.argv[1]), losses(sys.argv[2])
first = sorted(s for s in la if s in lb)[:5]
d = max(abs(la[s] - lb[s]) / max(abs(la[s]), 1e-9) for s in first)
print(f"train/lm_loss, nccl rank vs single, steps {first}: max relative difference {d:.3e}")
sys.exit(0 if sa == sb == sc and d <= 1e-3 else 1)
EOF
  CKPT=$(ls "$WORK"/run-single/step_*.safetensors 2>/dev/null | grep -v '\.state\.' | sort -V | tail -n1)
  run "eval gpu" 60 "$BIN" eval --device "$DEV" --checkpoint "$CKPT" --data "$DATA" --max-examples 128 --batch-size 64
  run "solve gpu" 30 "$BIN" solve --device "$DEV" --checkpoint "$CKPT" \
    sudoku "..3.2.6..9..3.5..1..18.64....81.29..7.......8..67.82....26.95..8..2.3..9..5.1.3.."
  if [ "${NGPU:-0}" -ge 2 ]; then
    run "train --gpus 2" 150 "$BIN" train "${TRAIN[@]}" --run-dir "$WORK/run-gpus2" --gpus 2
  else
    echo "=== [train --gpus 2] skipped: this machine has ${NGPU:-0} GPU"
    note "train --gpus 2: skipped (${NGPU:-0} GPU)"
  fi
  cp "$WORK"/run-single/metrics.jsonl "$LOGDIR/metrics-single.jsonl" 2>/dev/null
  cp "$WORK"/run-nccl/metrics.jsonl "$LOGDIR/metrics-nccl.jsonl" 2>/dev/null
fi

# ---------------------------------------------------------------------------------------------
# 4b. f32 bench pair, then more bf16 rounds while the budget lasts
bench_pair float32 1
SUMMARY+=("    $(ratio float32)")
if [ $((DEADLINE - $(date +%s))) -gt 90 ]; then
  bench_pair bfloat16 3
  SUMMARY+=("    after round 3: $(ratio bfloat16)")
fi
cp "$WORK"/*.jsonl "$LOGDIR/" 2>/dev/null
finish
