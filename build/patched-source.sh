#!/usr/bin/env bash
# The source every native part is compiled from (the engine's wheel, the GPU backends, the chat library):
# llama-cpp-python's sdist, downloaded once into $LLMPACK_CACHE/sdist (default ~/.cache/llmpack/sdist),
# extracted into DIR with the fixes of build/patches/ applied to its vendored llama.cpp. Prints the
# source folder. One place, so that every part is built from the same, equally patched llama.cpp.
#   build/patched-source.sh VERSION DIR        (PYTHON: the interpreter whose pip downloads)
set -euo pipefail
cd "$(dirname "$0")/.."
version=$1
dir=$2
CACHE=${LLMPACK_CACHE:-$HOME/.cache/llmpack}
PYTHON=${PYTHON:-python3}
fail() { printf 'patched-source: %s\n' "$*" >&2; exit 1; }

sdist="$CACHE/sdist/llama_cpp_python-$version.tar.gz"
if [ ! -f "$sdist" ]; then
    mkdir -p "$(dirname "$sdist")"
    download=$(mktemp -d "$(dirname "$sdist")/.download-XXXXXX")
    "$PYTHON" -m pip download -q --no-deps --no-binary :all: -d "$download" "llama-cpp-python==$version" >&2 \
        || { rm -rf "$download"; fail "downloading llama-cpp-python $version failed"; }
    mv "$download"/llama_cpp_python-*.tar.gz "$sdist"  # whole or not at all
    rm -rf "$download"
fi
tar -xzf "$sdist" -C "$dir"
source_dir=$(cd "$dir/llama_cpp_python-$version" && pwd)
for fix in build/patches/*.patch; do
    [ -f "$fix" ] || continue
    (cd "$source_dir" && git apply "$OLDPWD/$fix") || fail "applying $fix failed"
done
printf '%s\n' "$source_dir"
