#!/usr/bin/env bash
# Cross-compiles llama-cpp-python for Linux aarch64 on an x86-64 Debian machine with Debian's
# gcc-aarch64-linux-gnu (build/system-deps.sh installs it), with the recipe build/recipes/linux-aarch64-cpu.env
# and the toolchain build/recipes/linux-aarch64-cross.cmake:
# every ARM CPU variant ggml selects at run time (GGML_CPU_ALL_VARIANTS), as the x86-64 wheel carries
# SSE4.2..AVX-512. Compiling under emulation instead would take hours; the wheel's Python part is
# pure ctypes, so it is only the native libraries that need the cross compiler.
#
# Debian 12's cross GCC 12 knows neither -march=armv9.2-a nor +sme (GCC 14 does): the two SME variants
# (armv9.2_1, armv9.2_2) are left out of the list, so a CPU with SME runs the armv8.6_2 variant
# (SVE2 + i8mm). The six others are built: armv8.0_1, armv8.2_1..3, armv8.6_1..2.
#
# Cached under $LLMPACK_CACHE/wheels/<key>/ (keyed like build/setup.sh's wheels), retagged linux_aarch64
# so that pip inside an ARM64 Python installs it. The last line printed is the wheel's path.
#   nice -n 19 bash build/cross-aarch64.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
CACHE=${LLMPACK_CACHE:-$HOME/.cache/llmpack}
JOBS=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc 2>/dev/null || echo 2)}
# The cross compilers and where headers and libraries come from.
toolchain=$PWD/build/recipes/linux-aarch64-cross.cmake
log() { printf 'cross-aarch64: %s\n' "$*" >&2; }
digest() { sha256sum | cut -c1-16; }
command -v aarch64-linux-gnu-g++ >/dev/null || { log "aarch64-linux-gnu-g++ not found (bash build/system-deps.sh installs it)"; exit 1; }

recipe=build/recipes/linux-aarch64-cpu.env
CMAKE_ARGS=$(. "$recipe"; printf '%s' "$CMAKE_ARGS")
llama_version=$(sed -n 's/.*"llama-cpp-python==\([0-9.]*\)".*/\1/p' pyproject.toml)
patches=$(cat build/patches/*.patch 2>/dev/null | digest)
compiler=$(aarch64-linux-gnu-g++ --version | sed -n 1p)
key=$(printf '%s|%s|%s|%s|%s|%s' "$llama_version" "$CMAKE_ARGS" cross linux-aarch64 "$patches" "$compiler" | digest)
wheel_dir="$CACHE/wheels/cross-linux-aarch64-$key"
if wheel=$(ls "$wheel_dir"/llama_cpp_python-*-linux_aarch64.whl 2>/dev/null | head -1) && [ -n "$wheel" ]; then
    log "cached: $wheel"
    printf '%s\n' "$wheel"
    exit 0
fi

started=$(date +%s)
mkdir -p "$CACHE/wheels"
build_log="$wheel_dir.log"  # kept, to follow the compile and to read a failure
# The build folder is kept until the wheel is cached: a run that fails after the compile (or is
# stopped) compiles again only what changed.
log "cross-compiling llama-cpp-python $llama_version for aarch64 ($recipe), once..."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
source_dir=$(PYTHON="$PYTHON" build/patched-source.sh "$llama_version" "$work")
# The SME variants need a compiler GCC 12 is not (see above).
sed -i '/ggml_add_cpu_backend_variant(armv9\.2_[0-9]/d' "$source_dir/vendor/llama.cpp/ggml/src/CMakeLists.txt"
CMAKE_ARGS="$CMAKE_ARGS -DCMAKE_TOOLCHAIN_FILE=$toolchain" CMAKE_BUILD_PARALLEL_LEVEL=$JOBS \
    "$PYTHON" -m pip wheel -v --no-deps --no-cache-dir --config-settings=build-dir="$wheel_dir.build" \
    -w "$work/dist" "$source_dir" > "$build_log" 2>&1 \
    || { tail -30 "$build_log" >&2; log "compiling failed (its log: $build_log)"; exit 1; }
built=$(ls "$work"/dist/llama_cpp_python-*.whl)
# Every native file must be an ARM64 ELF: a host library slipping in would fail only on the target.
"$PYTHON" -m zipfile -e "$built" "$work/check"
find "$work/check" -name '*.so*' -type f | while read -r lib; do
    readelf -h "$lib" | grep -q 'AArch64' || { log "not an ARM64 library: $lib"; exit 1; }
done
"$PYTHON" -m wheel tags --remove --platform-tag linux_aarch64 "$built" >/dev/null
mkdir -p "$wheel_dir.tmp"
mv "$work"/dist/llama_cpp_python-*-linux_aarch64.whl "$wheel_dir.tmp/"
printf 'build_seconds %s\n' "$(( $(date +%s) - started ))" > "$wheel_dir.tmp/build-info.txt"
rm -rf "$wheel_dir" && mv "$wheel_dir.tmp" "$wheel_dir"
rm -rf "$wheel_dir.build"
wheel=$(ls "$wheel_dir"/llama_cpp_python-*-linux_aarch64.whl)
log "cached $wheel in $(( $(date +%s) - started )) s"
printf '%s\n' "$wheel"
