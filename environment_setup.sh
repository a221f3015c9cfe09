#!/usr/bin/env bash
# Create .venv and install sana-streaming with the right PyTorch build:
# CUDA wheels where an NVIDIA GPU is present, the CPU build otherwise.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "NVIDIA GPU found: installing CUDA PyTorch and the Triton kernels"
  python -m pip install -q "torch>=2.11,<2.15"
  python -m pip install -q -e ".[test,kernels]"
else
  echo "No NVIDIA GPU: installing the CPU PyTorch build"
  python -m pip install -q "torch>=2.11,<2.15" --index-url https://download.pytorch.org/whl/cpu \
    || python -m pip install -q torch==2.13.0
  python -m pip install -q -e ".[test]"
fi
echo "Done. Activate with: . .venv/bin/activate"
