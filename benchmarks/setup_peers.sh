#!/usr/bin/env bash
# Create .bench-venv with the peer SAE libraries measured by benchmarks/train.py, pinned to the
# CPU torch 2.13.0 (a constraint keeps pip from swapping in a CUDA build). torchvision, which some
# peers pull in, fails to import beside torch 2.13.0 and is removed; the runner stubs it.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .bench-venv
.bench-venv/bin/python -m pip install --quiet --upgrade pip
constraints=$(mktemp)
echo "torch==2.13.0" > "$constraints"
.bench-venv/bin/python -m pip install --quiet -c "$constraints" torch==2.13.0 eai-sparsify sae-lens overcomplete
.bench-venv/bin/python -m pip uninstall --yes --quiet torchvision || true
echo "peer libraries installed in $(pwd)/.bench-venv"
