#!/usr/bin/env bash
# Builds the Linux aarch64 runtime on an x86-64 Debian machine, cached, for
#   llmpack build model.gguf --target linux-aarch64 --runtime-dir DIR
# 1. llama-cpp-python cross-compiled for aarch64 (build/cross-aarch64.sh: ARM CPU variants, host compiler),
#    and llama.cpp's chat library with it (build/chat-shim.sh, cross-compiled);
# 2. an ARM64 Debian 12 root (debootstrap), run through qemu-user-static's binfmt_misc registration,
#    with a virtualenv of llmpack's dependencies (ARM64 wheels from PyPI) and that wheel;
# 3. `llmpack runtime` inside it: PyInstaller freezes the runtime on an ARM64 Python, and the launcher
#    is compiled by the root's own gcc (both emulated: minutes, once per runtime source).
# Needs root (debootstrap, chroot, mounts) and build/system-deps.sh's packages. Prints, last,
#   root=<the ARM64 root>      (QEMU_LD_PREFIX for running ARM64 programs on this machine)
#   runtime=<the runtime folder>
# --root-only stops once the root is there. Cached under $LLMPACK_CACHE/arm64/: the root once, the runtime once per hash of its inputs.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${LLMPACK_CACHE:-$HOME/.cache/llmpack}
PYTHON=${PYTHON:-.venv/bin/python}
base="$CACHE/arm64"
root="$base/root"
venv=/opt/llmpack-venv  # inside the root
log() { printf 'arm64-runtime: %s\n' "$*" >&2; }
digest() { sha256sum | cut -c1-16; }
[ "$(id -u)" = 0 ] || { log "needs root (debootstrap, chroot)"; exit 1; }
mkdir -p "$base"
# One build at a time (a test and a person may both ask).
exec 9>"$base/.lock"
flock 9

# qemu-user-static registers qemu-aarch64 with binfmt_misc, so the kernel runs ARM64 programs through
# it (chroot, and the launcher's exec of the runtime); the registration needs the filesystem mounted.
if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    update-binfmts --enable qemu-aarch64 >&2 || { log "cannot register qemu-aarch64 (install qemu-user-static binfmt-support)"; exit 1; }
fi

# libpython3.11: PyInstaller freezes the shared interpreter; binutils: its objdump; gcc, libc6-dev,
# zlib1g-dev: the launcher; libgomp1: ggml's OpenMP.
packages="python3 python3-venv libpython3.11 binutils gcc libc6-dev zlib1g-dev libgomp1 ca-certificates"
if [ ! -f "$root/.complete" ]; then
    log "making an ARM64 Debian 12 root with debootstrap, once (25 minutes on 2 busy cores: dpkg runs emulated)..."
    mirror=$(sed -n 's/^URIs: *\(.*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
    mirror=${mirror:-http://deb.debian.org/debian}
    rm -rf "$root.tmp"
    debootstrap --arch=arm64 --variant=minbase --include="$(echo "$packages" | tr ' ' ,)" \
        bookworm "$root.tmp" "$mirror" > "$base/debootstrap.log" 2>&1 \
        || { tail -20 "$base/debootstrap.log" >&2; log "debootstrap failed"; exit 1; }
    touch "$root.tmp/.complete"
    rm -rf "$root" && mv "$root.tmp" "$root"
fi
# A root made before a package joined the list gets it now (apt inside the root, emulated).
# shellcheck disable=SC2086
if ! chroot "$root" dpkg-query -W $packages >/dev/null 2>&1; then
    log "installing $packages into the root..."
    chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive \
        sh -c "apt-get update -qq && apt-get install -y -qq --no-install-recommends $packages" > "$base/apt.log" 2>&1 \
        || { tail -20 "$base/apt.log" >&2; log "installing into the root failed"; exit 1; }
fi
[ "${1:-}" = --root-only ] && { printf 'root=%s\n' "$root"; exit 0; }

wheel=$(PYTHON="$PYTHON" bash build/cross-aarch64.sh | tail -1)
# llama.cpp's chat library (build/chat-shim.sh), cross-compiled too and linked against the wheel's
# libllama, goes beside it in the root, as build/setup.sh puts the host's beside the host's.
libs=$(mktemp -d)
"$PYTHON" -m zipfile -e "$wheel" "$libs"
shim=$(LLMPACK_TARGET=linux-aarch64 CXX=aarch64-linux-gnu-g++ CMAKE_TOOLCHAIN_FILE="$PWD/build/recipes/linux-aarch64-cross.cmake" \
       PYTHON="$PYTHON" bash build/chat-shim.sh "$libs/llama_cpp/lib" | tail -1)
rm -rf "$libs"
# The runtime's inputs: what is frozen into it (runtime/, templates/), the code that freezes and packs
# it, the dependency pins, the wheel and the chat library (their cache folders name their inputs).
# Not the rest of bundler/: it runs on the build machine, not in the runtime.
key=$( (printf '%s\n' "$(basename "$(dirname "$wheel")")" "$(basename "$wheel")" "$(basename "$shim")";
        find runtime templates bundler/runtime_build.py bundler/launcher_build.py bundler/runtime_pack.py \
             bundler/layout.py bundler/bundle.py setup.py pyproject.toml build/arm64-runtime.sh -type f \
             ! -path '*__pycache__*' ! -name '*.pyc' -print0 | LC_ALL=C sort -z | xargs -0 cat) | digest)
out="$base/runtime-$key"
if [ -f "$out/llmpack-runtime" ] && [ -f "$out/runtime.json" ]; then
    log "cached: $out"
    printf 'root=%s\nruntime=%s\n' "$root" "$out"
    exit 0
fi

started=$(date +%s)
mounted=
cleanup() { [ -z "$mounted" ] || umount "$root/proc" 2>/dev/null || true; rm -rf "$root/wheel" "$root/out" "$root/freeze-cache"; }
trap cleanup EXIT
mount -t proc proc "$root/proc" && mounted=1
# pip inside the root verifies PyPI with the host's CA bundle (PIP_CERT or the system's).
cert=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
mkdir -p "$root$(dirname "$cert")" && cp "$cert" "$root$cert"
rm -rf "$root/wheel" "$root/out" "$root/freeze-cache" && mkdir -p "$root/wheel"
# llmpack's own wheel is pure Python: built here natively in seconds (from a copy: setuptools writes
# into the folder it builds, and build/ is ours), where pip inside the root takes minutes.
src=$(mktemp -d)
tar -cf - --exclude=__pycache__ --exclude='*.pyc' runtime templates bundler setup.py pyproject.toml README.md \
    | tar -xf - -C "$src"
"$PYTHON" -m pip wheel -q --no-deps -w "$root/wheel" "$src" > "$base/pip.log" 2>&1 \
    || { tail -20 "$base/pip.log" >&2; rm -rf "$src"; log "building llmpack's wheel failed"; exit 1; }
rm -rf "$src"
cp "$wheel" "$root/wheel/"
llmpack_wheel=/wheel/$(basename "$(ls "$root"/wheel/llmpack-*.whl)")
inside() { chroot "$root" env -i PATH=/usr/bin:/bin HOME=/root LANG=C.UTF-8 PIP_CERT="$cert" \
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$@"; }
log "installing llmpack and its ARM64 dependencies (PyPI's wheels) in the root (emulated)..."
[ -x "$root$venv/bin/python" ] || inside python3 -m venv "$venv"
# Both wheels replace what is there (their versions do not change with their contents); then the
# dependencies, from PyPI where missing.
{ inside "$venv/bin/pip" install -q --force-reinstall --no-deps "/wheel/$(basename "$wheel")" "$llmpack_wheel" \
  && inside "$venv/bin/pip" install -q "$llmpack_wheel"; } >> "$base/pip.log" 2>&1 \
    || { tail -20 "$base/pip.log" >&2; log "installing into the root failed"; exit 1; }
engine_lib=$(echo "$root$venv"/lib/python3*/site-packages/llama_cpp/lib)
cp "$shim"/libllmpack-chat.so "$engine_lib/"
log "freezing the runtime with PyInstaller on ARM64 Python (emulated; minutes)..."
# The root's compiler for the launcher (emulated, seconds); a cache of its own, removed after.
inside env CC=gcc LLMPACK_CACHE=/freeze-cache "$venv/bin/llmpack" runtime -o /out --gpu none > "$base/freeze.log" 2>&1 \
    || { tail -20 "$base/freeze.log" >&2; log "freezing failed (its log: $base/freeze.log)"; exit 1; }
rm -rf "$out.tmp" && mkdir -p "$out.tmp"
cp "$root/out/llmpack-runtime" "$root/out/runtime.json" "$out.tmp/"
printf 'build_seconds %s\n' "$(( $(date +%s) - started ))" > "$out.tmp/build-info.txt"
rm -rf "$out" && mv "$out.tmp" "$out"
log "runtime built in $(( $(date +%s) - started )) s: $out"
printf 'root=%s\nruntime=%s\n' "$root" "$out"
