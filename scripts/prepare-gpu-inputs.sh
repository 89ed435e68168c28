#!/usr/bin/env bash
# Fill the git-ignored folder .gpu-inputs/ (or $HRM_GPU_INPUTS) with everything that
# scripts/gpu-check.sh needs on a GPU machine that has no Rust toolchain and no ../shared:
#
#   hrm.gz            the `hrm` binary built here with `--features nccl` (CUDA + NCCL), profile
#                     `gpu` (release without debug info), stripped and gzipped
#   fixtures/         the parity fixtures from ../shared/fixtures/parity
#   torch_hrm.py      the PyTorch peer from ../shared/peers
#   BUILD_INFO        commit, dirty flag, build command and toolchain versions
#   SHA256SUMS        checksums of the above
#
# Usage (after scripts/install-cuda-build-deps.sh):
#   scripts/prepare-gpu-inputs.sh            # builds, then copies (about 30 MiB in all)
#   scripts/prepare-gpu-inputs.sh --no-build # copy an existing build
# Environment: HRM_GPU_INPUTS (output folder), HRM_SHARED_DIR (default ../shared),
# CARGO_TARGET_DIR (default target/), HRM_CUDA_DEPS (default .cuda-deps).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${HRM_GPU_INPUTS:-$ROOT/.gpu-inputs}"
SHARED="${HRM_SHARED_DIR:-$ROOT/../shared}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
DEPS="${HRM_CUDA_DEPS:-$ROOT/.cuda-deps}"
LIMIT_MIB=60

build=1
case "${1:-}" in
  --no-build) build=0 ;;
  "") ;;
  *) echo "usage: $0 [--no-build]" >&2; exit 2 ;;
esac

for f in "$SHARED/fixtures/parity/hrm-tiny-rope.safetensors" \
         "$SHARED/fixtures/parity/hrm-tiny-noact.safetensors" \
         "$SHARED/peers/torch_hrm.py"; do
  [ -f "$f" ] || { echo "error: $f not found (set HRM_SHARED_DIR to the shared folder)" >&2; exit 1; }
done

BUILD_CMD="cargo build --profile gpu -p hrm-cli --features nccl"
if [ "$build" = 1 ]; then
  [ -f "$DEPS/env.sh" ] || {
    echo "error: $DEPS/env.sh not found: run scripts/install-cuda-build-deps.sh first" >&2
    exit 1
  }
  # shellcheck source=/dev/null
  source "$DEPS/env.sh"
  echo "== $BUILD_CMD (CARGO_TARGET_DIR=$TARGET)"
  start=$(date +%s)
  (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" $BUILD_CMD)
  echo "   built in $(( $(date +%s) - start )) s"
fi
BIN="$TARGET/gpu/hrm"
[ -x "$BIN" ] || { echo "error: $BIN missing (build it, or drop --no-build)" >&2; exit 1; }

TMP="$OUT.tmp-$$"
rm -rf "$TMP"
mkdir -p "$TMP/fixtures"
trap 'rm -rf "$TMP"' EXIT
strip --strip-all -o "$TMP/hrm" "$BIN"
gzip -9 "$TMP/hrm"
cp "$SHARED/fixtures/parity/hrm-tiny-rope.safetensors" \
   "$SHARED/fixtures/parity/hrm-tiny-noact.safetensors" "$TMP/fixtures/"
cp "$SHARED/peers/torch_hrm.py" "$TMP/"
{
  echo "commit: $(cd "$ROOT" && git rev-parse HEAD 2>/dev/null || echo unknown)"
  echo "dirty: $(cd "$ROOT" && { git diff --quiet HEAD 2>/dev/null && echo no || echo yes; })"
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) with: $BUILD_CMD"
  echo "binary: $(stat -c %y "$BIN")"
  echo "rustc: $(rustc --version 2>/dev/null || echo unknown)"
  echo "nvcc: $("$DEPS/py/nvidia/cu13/bin/nvcc" --version 2>/dev/null | tail -n1 || echo unknown)"
  echo "needs: $(readelf -d "$BIN" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' | tr '\n' ' ')"
} >"$TMP/BUILD_INFO"
(cd "$TMP" && sha256sum hrm.gz torch_hrm.py fixtures/* >SHA256SUMS)

size_kib=$(du -sk "$TMP" | cut -f1)
if [ "$size_kib" -gt $((LIMIT_MIB * 1024)) ]; then
  echo "error: $TMP is $((size_kib / 1024)) MiB, over the ${LIMIT_MIB} MiB budget" >&2
  exit 1
fi
rm -rf "$OUT"
mv "$TMP" "$OUT"
trap - EXIT
echo "== $OUT ready ($((size_kib / 1024)) MiB):"
ls -l "$OUT" "$OUT/fixtures"
cat "$OUT/BUILD_INFO"
