#!/usr/bin/env bash
# Sets up everything llmpack needs, idempotently: a virtualenv (.venv) with llmpack installed in
# editable mode, and llama-cpp-python compiled from source once with this platform's recipe from
# build/recipes/. The compiled wheel is cached (~/.cache/llmpack/wheels, or $LLMPACK_CACHE), so a
# second set-up, or a fresh clone on the same machine, takes seconds instead of minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
CACHE=${LLMPACK_CACHE:-$HOME/.cache/llmpack}
log() { printf 'setup: %s\n' "$*" >&2; }
digest() { if command -v sha256sum >/dev/null; then sha256sum; else shasum -a 256; fi | cut -c1-16; }
cpus() { nproc 2>/dev/null || sysctl -n hw.ncpu 2>/dev/null || echo 2; }

"$PYTHON" - <<'PY' || { log "Python >= 3.11 is required (set PYTHON=...)"; exit 1; }
import sys; sys.exit(sys.version_info < (3, 11))
PY

target=$(build/target.sh)
# LLMPACK_VARIANT picks the recipe: cpu (the default; metal on macOS), cuda, vulkan...
case "$target" in darwin-*) default_variant=metal ;; *) default_variant=cpu ;; esac
recipe=${LLMPACK_RECIPE:-build/recipes/$target-${LLMPACK_VARIANT:-$default_variant}.env}
[ -f "$recipe" ] || { log "no recipe $recipe for this platform ($target)"; exit 1; }
CMAKE_ARGS=$(. "$recipe"; printf '%s' "$CMAKE_ARGS")
llama_version=$(sed -n 's/.*"llama-cpp-python==\([0-9.]*\)".*/\1/p' pyproject.toml)

if [ ! -d "$VENV" ]; then
    log "creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
VPY="$VENV/bin/python"; [ -x "$VPY" ] || VPY="$VENV/Scripts/python.exe"  # Windows keeps it in Scripts/
[ -f "$VENV/.pip-upgraded" ] || { "$VPY" -m pip install -q --upgrade pip wheel && touch "$VENV/.pip-upgraded"; }
py_tag=$("$VPY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
# Fixes to the vendored llama.cpp, applied to the sdist before it compiles (each patch says why).
patches=$(cat build/patches/*.patch 2>/dev/null | digest)
# ggml's two SME variants (armv9.2) need GCC 14 or a recent clang: an older compiler builds the other ARM
# variants, as build/cross-aarch64.sh does (a CPU with SME then runs armv8.6_2). Said in the key.
no_sme=
if [ "$target" = linux-aarch64 ] && ! echo 'int x;' | ${CC:-cc} -march=armv9.2-a+sme -x c -c -o /dev/null - 2>/dev/null; then
    no_sme="|no SME variants"
fi
key=$(printf '%s|%s|%s|%s|%s%s' "$llama_version" "$CMAKE_ARGS" "$py_tag" "$target" "$patches" "$no_sme" | digest)
wheel_dir="$CACHE/wheels/$key"

if ! ls "$wheel_dir"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    log "compiling llama-cpp-python $llama_version ($recipe), once; about 20 minutes on 2 cores..."
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    source_dir=$(PYTHON="$VPY" build/patched-source.sh "$llama_version" "$tmp")
    [ -z "$no_sme" ] || sed -i '/ggml_add_cpu_backend_variant(armv9\.2_[0-9]/d' "$source_dir/vendor/llama.cpp/ggml/src/CMakeLists.txt"
    CMAKE_ARGS="$CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(cpus)} \
        "$VPY" -m pip wheel --no-deps --no-cache-dir -w "$tmp" "$source_dir" \
        > "$tmp/build.log" 2>&1 || { tail -30 "$tmp/build.log" >&2; log "compiling llama-cpp-python failed"; exit 1; }
    mkdir -p "$wheel_dir"
    mv "$tmp"/llama_cpp_python-*.whl "$wheel_dir/"
    log "cached $(ls "$wheel_dir")"
fi

stamp="$VENV/.llmpack-setup"
want=$(cat pyproject.toml "$recipe" | digest)-$key
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "installing llmpack and its dependencies into $VENV"
    "$VPY" -m pip install -q --force-reinstall --no-deps "$wheel_dir"/llama_cpp_python-*.whl
    "$VPY" -m pip install -q -e '.[dev]'
    echo "$want" > "$stamp"
fi
# GPU backends (build/gpu-backend.sh): compiled once from the same sdist, patches and flags as the
# wheel, cached, and put beside the installed wheel's CPU variants, where ggml and the runtime's freeze
# find them (in gpu/: the runtime loads them itself, where a GPU may be). LLMPACK_GPU lists them (default: vulkan on Linux x86_64; none: skip); CUDA takes hours on 2
# cores, so it is asked for (LLMPACK_GPU=vulkan,cuda) or built by CI (.github/workflows/runtimes.yml).
case "$target" in linux-x86_64) default_gpu=vulkan ;; *) default_gpu=none ;; esac
backend_dir=$("$VPY" -c 'import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec("llama_cpp").origin).parent.parent / "bin" / "gpu")')
for backend in $(printf '%s' "${LLMPACK_GPU:-$default_gpu}" | tr ',' ' '); do
    [ "$backend" = none ] && continue
    if folder=$(PYTHON="$VPY" bash build/gpu-backend.sh "$backend" | tail -1) && [ -d "$folder" ]; then
        mkdir -p "$backend_dir"
        for lib in "$folder"/*.so*; do
            cmp -s "$lib" "$backend_dir/$(basename "$lib")" || cp -p "$lib" "$backend_dir/"
        done
    else
        log "the $backend backend could not be built (see above): executables will carry no $backend backend"
        [ -n "${LLMPACK_GPU:-}" ] && exit 1
    fi
done
# llama.cpp's chat library (templates, the chat formats' parsers, tool-call grammars) behind a C ABI:
# build/chat-shim.sh compiles it once from the same sdist and patches, cached, and it goes beside the
# installed libllama, where the runtime finds it and the freeze takes it (llama.cpp's common library: 654 s on 2 loaded cores, once; the shim then links in ~11 s).
engine_lib=$("$VPY" -c 'import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec("llama_cpp").origin).parent / "lib")')
case "$target" in
linux-*|darwin-*)
    folder=$(PYTHON="$VPY" bash build/chat-shim.sh "$engine_lib" | tail -1) || { log "the chat library could not be built (see above)"; exit 1; }
    for lib in "$folder"/libllmpack-chat.*; do
        cmp -s "$lib" "$engine_lib/$(basename "$lib")" || cp -p "$lib" "$engine_lib/"
    done ;;
# Windows: built in MSYS2's MinGW-w64 shell (.github/workflows/runtimes.yml runs build/chat-shim.sh there
# and puts it beside llama.dll); a Windows set-up without it renders templates with the runtime's own
# Jinja (no thinking, four tool-call families), and says so.
*) log "the chat library is built for $target by CI's runtimes workflow (MinGW-w64); without it the runtime renders chat templates with its own Jinja (no thinking, four tool-call families)" ;;
esac
# The web chat page's libraries, pinned in web/package-lock.json: web/build_page.py inlines them into
# templates/server_chat.html, and a test checks that the committed page is what they build. Once per lock.
if command -v npm >/dev/null; then
    "$VPY" web/build_page.py --install
else
    log "npm not found (build/system-deps.sh installs it): the web page cannot be rebuilt or checked"
fi
log "ready: $(dirname "$VPY")/llmpack"
