#!/usr/bin/env bash
# Builds libllmpack-chat (build/chat-shim/llmpack_chat.cpp): llama.cpp's chat library (common/chat.*:
# the chat templates, the chat formats' parsers and tool-call grammars, as llama-server runs them)
# behind a small C ABI, JSON in and JSON out; and the reads of the logits that sampling needs (greedy
# pick, top-k candidates: build/chat-shim/llmpack_sample.cpp), which llama.cpp's chain makes slow.
# Compiled from the very llama-cpp-python sdist that build/setup.sh compiles, with its patches
# (build/patches/), and linked against the engine's own libllama (the wheel's, named by $1: its
# llama_cpp/lib folder), so the runtime carries it beside it.
# Only llama.cpp's common library is compiled here (not llama nor ggml: CMake's optimized dependencies
# skip them): about 11 minutes on 2 busy cores, cached under $LLMPACK_CACHE/chat-shim/common-*; the shim
# itself links in seconds. Cached under $LLMPACK_CACHE/chat-shim/<key>/, keyed by
# everything that goes into it; the last line printed is that folder.
#
#   bash build/chat-shim.sh .venv/lib/python3.11/site-packages/llama_cpp/lib
set -euo pipefail
cd "$(dirname "$0")/.."

engine_lib=${1:?usage: build/chat-shim.sh <the installed llama_cpp/lib folder>}
PYTHON=${PYTHON:-python3}
CACHE=${LLMPACK_CACHE:-$HOME/.cache/llmpack}
JOBS=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc 2>/dev/null || echo 2)}
log() { printf 'chat-shim: %s\n' "$*" >&2; }
digest() { if command -v sha256sum >/dev/null; then sha256sum; else shasum -a 256; fi | cut -c1-16; }

# LLMPACK_TARGET: another target, cross-compiled (build/arm64-runtime.sh: linux-aarch64, with $CXX and
# $CMAKE_TOOLCHAIN_FILE naming the cross compiler and build/recipes/linux-aarch64-cross.cmake).
target=${LLMPACK_TARGET:-$(build/target.sh)}
case "$target" in
darwin-*) name=libllmpack-chat.dylib; engine=libllama.dylib; rpath='@loader_path' ;;
linux-*) name=libllmpack-chat.so; engine=libllama.so; rpath='$ORIGIN' ;;
# Windows: MinGW-w64's g++ (the CI job's MSYS2; CMAKE_GENERATOR="MinGW Makefiles" for the common
# library), linked straight against the wheel's llama.dll through the C API, so the compilers need not
# match; built by .github/workflows/runtimes.yml before the Windows runtime is frozen, which carries it.
windows-*) name=llmpack-chat.dll; engine=llama.dll; rpath= ;;
*) log "no chat shim recipe for $target yet"; exit 1 ;;
esac
[ -e "$engine_lib/$engine" ] || { log "$engine_lib/$engine not found"; exit 1; }
llama_version=$(sed -n 's/.*"llama-cpp-python==\([0-9.]*\)".*/\1/p' pyproject.toml)
patches=$(cat build/patches/*.patch 2>/dev/null | digest)
compiler=$(${CXX:-c++} --version | sed -n 1p)
# Two caches: llama.cpp's common library (the long compile), keyed by what goes into it; and the shim,
# keyed by its own source too, relinked in seconds when only the shim changes.
common_key=$(printf '%s|%s|%s|%s' "$llama_version" "$target" "$patches" "$compiler" | digest)
common="$CACHE/chat-shim/common-$target-$common_key"
sources=$(cat build/chat-shim/* build/chat-shim.sh | digest)
key=$(printf '%s|%s' "$common_key" "$sources" | digest)
out="$CACHE/chat-shim/$target-$key"
if [ -f "$out/$name" ]; then
    log "cached: $out/$name"
    printf '%s\n' "$out"
    exit 0
fi

started=$(date +%s)
if [ ! -f "$common/lib/libllama-common.a" ]; then
    log "compiling llama.cpp's chat library from llama-cpp-python $llama_version, once (about 11 minutes on 2 busy cores)..."
    work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
    source_dir=$(PYTHON="$PYTHON" build/patched-source.sh "$llama_version" "$work")
    llama="$source_dir/vendor/llama.cpp"
    # common as a static, position-independent library; its link dependencies (llama, ggml) are not
    # built (CMAKE_OPTIMIZE_DEPENDENCIES): the shim links the engine's own libllama instead.
    cmake -S "$llama" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
        -DCMAKE_POSITION_INDEPENDENT_CODE=ON -DCMAKE_OPTIMIZE_DEPENDENCIES=ON -DLLAMA_BUILD_COMMON=ON \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
        -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_SUBPROCESS=OFF -DGGML_NATIVE=OFF \
        -DCMAKE_CXX_VISIBILITY_PRESET=hidden > "$work/build.log" 2>&1 \
        || { tail -30 "$work/build.log" >&2; log "configuring failed"; exit 1; }
    cmake --build "$work/build" --target llama-common llama-common-base -j "$JOBS" >> "$work/build.log" 2>&1 \
        || { tail -30 "$work/build.log" >&2; log "compiling failed"; exit 1; }
    rm -rf "$common.tmp" && mkdir -p "$common.tmp/lib" "$common.tmp/include"
    find "$work/build" \( -name 'libllama-common.a' -o -name 'libllama-common-base.a' \) -exec cp {} "$common.tmp/lib/" \;
    # The headers the shim compiles against, kept with the libraries they belong to.
    (cd "$llama" && tar -cf - common include ggml/include vendor/nlohmann) | tar -xf - -C "$common.tmp/include"
    printf 'build_seconds %s\n' "$(( $(date +%s) - started ))" > "$common.tmp/build-info.txt"
    rm -rf "$common" && mv "$common.tmp" "$common"
fi
inc="$common/include"
mkdir -p "$out.tmp"
case "$target" in
darwin-*) link=(-Wl,-install_name,@rpath/$name) ;;
windows-*) link=(-static-libstdc++ -static-libgcc -Wl,--exclude-libs,ALL -Wl,--no-undefined) ;;
*) link=(-Wl,--exclude-libs,ALL -Wl,--no-undefined -Wl,-soname,$name) ;;
esac
[ -z "$rpath" ] || link+=("-Wl,-rpath,$rpath")
${CXX:-c++} -std=c++17 -O2 -fPIC -shared -fvisibility=hidden -o "$out.tmp/$name" build/chat-shim/llmpack_chat.cpp build/chat-shim/llmpack_sample.cpp \
    -I"$inc/common" -I"$inc/include" -I"$inc/ggml/include" -I"$inc/vendor" \
    "$common/lib/libllama-common.a" "$common/lib/libllama-common-base.a" \
    -L"$engine_lib" -lllama -lggml -lggml-base -lpthread "${link[@]}" \
    || { log "linking the shim failed"; exit 1; }
strip --strip-unneeded "$out.tmp/$name" 2>/dev/null || true
printf 'llama-cpp-python %s\ncompiler %s\nbuild_seconds %s\n' "$llama_version" "$compiler" \
    "$(( $(date +%s) - started ))" > "$out.tmp/build-info.txt"
rm -rf "$out" && mv "$out.tmp" "$out"
log "cached $out/$name ($(( $(date +%s) - started )) s)"
printf '%s\n' "$out"
