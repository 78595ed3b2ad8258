#!/usr/bin/env bash
# Builds one of ggml's GPU backends (vulkan, cuda) as a loadable library (libggml-vulkan.so ...) from the
# very llama-cpp-python sdist that build/setup.sh compiles, with its patches (build/patches/) and the CPU
# recipe's flags plus the backend's (build/recipes/<target>-<backend>.env): only that target is built,
# so it matches the wheel's libggml-base and ggml loads it beside the CPU variants (GGML_BACKEND_DL).
# The library is cached under $LLMPACK_CACHE/backends/<key>/, keyed by everything that goes into it
# (llama.cpp version, flags, patches, headers, compilers); the last line printed is that folder.
#
#   bash build/gpu-backend.sh vulkan     # ~10 min on 2 cores; needs glslc and libvulkan-dev (system-deps.sh)
#   bash build/gpu-backend.sh cuda       # needs nvcc ($CUDACXX, PATH, or CUDA_HOME); CUDA_ARCHITECTURES=90 for one GPU
#
# Vulkan headers: the vendored ggml-vulkan needs Vulkan-Hpp >= 1.4 (Debian 12's 1.3.239 lacks
# vk::LayerSettingEXT) and SPIRV-Headers' CMake package. $VULKAN_HEADERS_PREFIX names a prefix holding
# both (include/vulkan/vulkan.hpp, share/cmake/SPIRV-Headers); without it, Debian trixie's libvulkan-dev
# and spirv-headers are downloaded with apt (headers only: nothing is installed) and cached.
set -euo pipefail
cd "$(dirname "$0")/.."

backend=${1:?usage: build/gpu-backend.sh vulkan|cuda}
PYTHON=${PYTHON:-python3}
CACHE=${LLMPACK_CACHE:-$HOME/.cache/llmpack}
JOBS=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc 2>/dev/null || echo 2)}
log() { printf 'gpu-backend: %s\n' "$*" >&2; }
digest() { if command -v sha256sum >/dev/null; then sha256sum; else shasum -a 256; fi | cut -c1-16; }

target=$(build/target.sh)
base_recipe=build/recipes/$target-cpu.env
recipe=build/recipes/$target-$backend.env
[ -f "$recipe" ] || { log "no recipe $recipe for this platform ($target)"; exit 1; }
# The backend's recipe lists the CPU recipe's flags and its own: only its own are added here, so the
# shared ones cannot drift apart from the wheel's.
base_args=$(. "$base_recipe"; printf '%s' "$CMAKE_ARGS")
backend_args=$(. "$recipe"; printf '%s' "$CMAKE_ARGS")
extra_args=$(. "$recipe"; printf '%s' "${BACKEND_ARGS:-}")
for flag in $base_args; do
    case " $backend_args " in *" $flag "*) ;; *) log "$recipe lacks the CPU recipe's $flag"; exit 1 ;; esac
done
if [ "$backend" = cuda ] && [ -n "${CUDA_ARCHITECTURES:-}" ]; then
    backend_args=$(printf '%s' "$backend_args" | sed "s/-DCMAKE_CUDA_ARCHITECTURES=[^ ]*/-DCMAKE_CUDA_ARCHITECTURES=$CUDA_ARCHITECTURES/")
fi
llama_version=$(sed -n 's/.*"llama-cpp-python==\([0-9.]*\)".*/\1/p' pyproject.toml)
patches=$(cat build/patches/*.patch 2>/dev/null | digest)

tools=""
case "$backend" in
vulkan)
    command -v glslc >/dev/null || { log "glslc not found (build/system-deps.sh installs it)"; exit 1; }
    if [ -z "${VULKAN_HEADERS_PREFIX:-}" ]; then
        prefix="$CACHE/vulkan-headers/trixie"
        if [ ! -f "$prefix/usr/include/vulkan/vulkan.hpp" ] || [ ! -d "$prefix/usr/share/cmake/SPIRV-Headers" ]; then
            command -v apt-get >/dev/null || { log "set VULKAN_HEADERS_PREFIX (Vulkan-Headers >= 1.4 and SPIRV-Headers)"; exit 1; }
            log "downloading Debian trixie's Vulkan and SPIR-V headers (headers only, nothing installed)"
            fetch=$(mktemp -d)
            uri=$( (sed -n 's/^URIs: *\(http[^ ]*debian\)\/*$/\1/p; s/^deb \(\[[^]]*\] \)\{0,1\}\(http[^ ]*\/debian\)\/\{0,1\} .*/\2/p' \
                  /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null || true) | grep -v security | head -1 || true)
            echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] ${uri:-http://deb.debian.org/debian} trixie main" > "$fetch/trixie.list"
            mkdir -p "$fetch/lists/partial" "$fetch/cache/archives/partial"
            apt_opts=(-q -o "Dir::Etc::sourcelist=$fetch/trixie.list" -o Dir::Etc::sourceparts=- -o "Dir::State::Lists=$fetch/lists"
                      -o "Dir::Cache=$fetch/cache" -o APT::Sandbox::User=root)
            (cd "$fetch" && apt-get "${apt_opts[@]}" update >/dev/null \
                && apt-get "${apt_opts[@]}" download libvulkan-dev spirv-headers >/dev/null) \
                || { rm -rf "$fetch"; log "downloading trixie's libvulkan-dev failed (or set VULKAN_HEADERS_PREFIX)"; exit 1; }
            rm -rf "$prefix.tmp" && mkdir -p "$prefix.tmp"
            for deb in "$fetch"/*.deb; do dpkg -x "$deb" "$prefix.tmp"; done
            rm -rf "$prefix" "$fetch" && mv "$prefix.tmp" "$prefix"
        fi
        VULKAN_HEADERS_PREFIX="$prefix/usr"
    fi
    header_version=$(sed -n 's/^#define VK_HEADER_VERSION \([0-9]*\)/\1/p' "$VULKAN_HEADERS_PREFIX/include/vulkan/vulkan_core.h")
    extra_args="$extra_args -DVulkan_INCLUDE_DIR=$VULKAN_HEADERS_PREFIX/include -DCMAKE_PREFIX_PATH=$VULKAN_HEADERS_PREFIX"
    tools="headers $header_version; $(glslc --version 2>&1 | sed -n 1p)"
    ;;
cuda)
    nvcc=${CUDACXX:-$(command -v nvcc || echo "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc")}
    [ -x "$nvcc" ] || { log "nvcc not found (CUDA toolkit, or pip install nvidia-cuda-nvcc; set CUDACXX)"; exit 1; }
    # The toolkit is where nvcc is (a CUDA install, or PyPI's nvidia-cuda-nvcc, -runtime, -cublas, -cccl,
    # -crt and nvidia-nvvm, which lay out one: site-packages/nvidia/cu13).
    extra_args="$extra_args -DCMAKE_CUDA_COMPILER=$nvcc -DCUDAToolkit_ROOT=$(dirname "$(dirname "$nvcc")")"
    tools=$("$nvcc" --version | tail -2 | tr '\n' ' ')
    cuda_root=$(dirname "$(dirname "$nvcc")")
    if ! ls "$cuda_root"/lib*/stubs/libcuda.so "$cuda_root"/lib*/libcuda.so >/dev/null 2>&1; then
        # PyPI's toolkit has no driver stub to link against: an empty libcuda.so.1 lets it link (the
        # driver's symbols stay undefined until the user's driver provides them; mend_cuda names it).
        stub="$CACHE/cuda-driver-stub/libcuda.so"
        mkdir -p "$(dirname "$stub")"
        [ -f "$stub" ] || echo 'void llmpack_cuda_stub(void) {}' | ${CC:-cc} -shared -x c -Wl,-soname,libcuda.so.1 -o "$stub" -
        extra_args="$extra_args -DCUDA_cuda_driver_LIBRARY=$stub"
    fi
    cudart=$(ls "$cuda_root"/lib*/libcudart.so* 2>/dev/null | sed -n 1p || true)
    cuda_lib=$(dirname "${cudart:-$cuda_root/lib64/.}")
    if [ -n "$cudart" ] && [ ! -e "$cuda_lib/libcudart.so" ]; then
        # PyPI's toolkit has only versioned libraries (libcudart.so.13), which FindCUDAToolkit does
        # not look for: links with the names a linker wants.
        links="$CACHE/cuda-dev-links/$(printf '%s' "$cuda_lib" | digest)"
        mkdir -p "$links"
        for name in cudart cublas cublasLt; do
            ln -sf "$(ls "$cuda_lib/lib$name.so."* | sed -n 1p)" "$links/lib$name.so"
        done
        extra_args="$extra_args -DCMAKE_LIBRARY_PATH=$links"
    fi
    # for ldd, which copies cudart and cuBLAS beside the backend
    export LD_LIBRARY_PATH="$cuda_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    ;;
esac
compiler=$(${CXX:-c++} --version | sed -n 1p)
key=$(printf '%s|%s|%s|%s|%s|%s|%s' "$llama_version" "$backend_args" "$target" "$patches" "$tools" "$compiler" "$extra_args" | digest)
out="$CACHE/backends/$target-$backend-$key"
library="$out/libggml-$backend.so"
# The CUDA backend calls NVIDIA's driver (cuMemCreate...), which must be its NEEDED libcuda.so.1: the
# linker drops a stub that defines none of those symbols, and the library would then fail to load on a
# real GPU ("undefined symbol: cuMemCreate"), since cudart opens the driver privately. Its RUNPATH is
# $ORIGIN alone (CMake adds the toolkit's folders, which do not exist on the user's machine). Applied to
# a cached library too, so one built before this was checked is mended, not rebuilt (an hour).
mend_cuda() {
    local lib=$1/libggml-cuda.so
    command -v patchelf >/dev/null || { log "patchelf is needed for the CUDA backend (build/system-deps.sh)"; exit 1; }
    patchelf --print-needed "$lib" | grep -qx 'libcuda.so.1' || patchelf --add-needed libcuda.so.1 "$lib"
    [ "$(patchelf --print-rpath "$lib")" = '$ORIGIN' ] || patchelf --set-rpath '$ORIGIN' "$lib"
}
if [ -f "$library" ]; then
    [ "$backend" != cuda ] || mend_cuda "$out"
    log "cached: $library"
    printf '%s\n' "$out"
    exit 0
fi

log "compiling ggml's $backend backend from llama-cpp-python $llama_version ($recipe), once..."
started=$(date +%s)
# The work folder is kept until the library is cached: an interrupted build (CUDA's takes hours on 2
# cores) resumes where it stopped, the sources untouched so make redoes nothing done.
work="$CACHE/backends/.work-$target-$backend-$key"
if [ -d "$work/llama_cpp_python-$llama_version" ] && [ -f "$work/build/CMakeCache.txt" ]; then
    source_dir="$work/llama_cpp_python-$llama_version"
    log "resuming the build in $work"
else
    rm -rf "$work" && mkdir -p "$work"
    source_dir=$(PYTHON="$PYTHON" build/patched-source.sh "$llama_version" "$work")
fi
# Configured as pip configures the sdist (its CMakeLists, Release, shared libraries); only the backend
# is built. Its RUNPATH is $ORIGIN: libggml-base.so.0 is beside it in the runtime.
# shellcheck disable=SC2086
cmake -S "$source_dir" -B "$work/build" -DCMAKE_BUILD_TYPE=Release $backend_args $extra_args \
    -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON -DCMAKE_INSTALL_RPATH='$ORIGIN' > "$work/build.log" 2>&1 \
    || { tail -30 "$work/build.log" >&2; log "configuring failed"; exit 1; }
cmake --build "$work/build" --target "ggml-$backend" -j "$JOBS" >> "$work/build.log" 2>&1 \
    || { tail -30 "$work/build.log" >&2; log "compiling failed"; exit 1; }
built=$(find "$work/build" -name "libggml-$backend.so" -type f -print -quit)
[ -n "$built" ] || { log "libggml-$backend.so not found after the build"; exit 1; }
mkdir -p "$out.tmp"
cp "$built" "$out.tmp/"
strip --strip-unneeded "$out.tmp/libggml-$backend.so" 2>/dev/null || true
if [ "$backend" = cuda ]; then
    # CUDA's runtime and cuBLAS travel with the backend (as in Ollama's and llamafile's files): only the
    # driver, libcuda.so.1, comes from the user's machine. ldd finds them where the toolkit keeps them.
    ldd "$out.tmp/libggml-cuda.so" | awk '/libcudart|libcublas/ && $3 ~ /^\// {print $3}' | while read -r lib; do
        cp -L "$lib" "$out.tmp/"
    done
    mend_cuda "$out.tmp"
fi
printf 'llama-cpp-python %s\nflags %s %s\ntools %s\ncompiler %s\nbuild_seconds %s\n' "$llama_version" "$backend_args" \
    "$extra_args" "$tools" "$compiler" "$(( $(date +%s) - started ))" > "$out.tmp/build-info.txt"
rm -rf "$out" && mv "$out.tmp" "$out"
rm -rf "$work"
log "cached $library ($(( $(date +%s) - started )) s)"
printf '%s\n' "$out"
