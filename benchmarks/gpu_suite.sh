#!/usr/bin/env bash
# GPU benchmark suite (≤ 8 min on one H100): 7B-shaped LLaVA-1.5 training steps (stage 1 from pre-built
# batches and through the real data path, full fine-tuning of a 7B-width model of 8 layers, LoRA and
# QLoRA stage 2: samples/s, MFU, peak GiB), then batch-1 decode (bf16 eager / CUDA graphs / compiled +
# graphs, and int8 / fp8 weight-only: tok/s and % of the bandwidth limit of the bytes each reads).
# Targets: stage 1 ≥ 50 % MFU, full ≥ 45 %, LoRA ≥ 30 %, the real loader ≥ 95 % of pre-built batches.
# Usage: bash benchmarks/gpu_suite.sh [--dry-run]    (--dry-run: tiny shapes on CPU, for the tests)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python)}"
DRY=""
if [ "${1:-}" = "--dry-run" ]; then DRY="--dry-run"; fi

echo "== training (benchmarks/gpu_train.py $DRY)"
timeout 420 "$PY" benchmarks/gpu_train.py $DRY
if [ -z "$DRY" ]; then
  echo "== training, stage 1 with rows of 16 samples (no checkpointing: the frozen LLM and its activations fit)"
  timeout 180 "$PY" benchmarks/gpu_train.py --micro 16 --accum 1 --stages stage1 || echo "failed (exit $?)"
fi
echo "== training, QLoRA stage 2 (NF4 base, LoRA r128, checkpointing, 4 samples per row; target peak <= 24 GiB)"
timeout 180 "$PY" benchmarks/gpu_train.py $DRY --stages stage2_qlora --micro 4 || echo "failed (exit $?)"

if [ -f benchmarks/gpu_decode.py ]; then
  if [ -n "$DRY" ]; then
    echo "== decode: skipped in --dry-run (benchmarks/gpu_decode.py runs on a GPU)"
  else
    echo "== decode (benchmarks/gpu_decode.py)"
    timeout 300 "$PY" benchmarks/gpu_decode.py --reps 1 || echo "gpu_decode.py failed (exit $?)"
  fi
fi
