#!/usr/bin/env bash
# GPU benchmark (issue: performance): fulmen vs raw PyTorch vs Lightning on one CUDA device.
# Runs on a machine that already has torch with CUDA, pytorch-lightning and tensorboard
# (e.g. the lent H200 image); fulmen itself is used from this checkout. About 3 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python3 bench/gpu.py "$@"
