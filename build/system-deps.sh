#!/usr/bin/env bash
# System packages the end-to-end tests drive: tmux (the chat in a real terminal), Chromium (the web chat
# page, headless), node and npm (the web page's libraries, web/), qemu-user (the executable on an older
# CPU model), binutils (readelf), a C compiler and zlib's headers (the native launcher at the head of
# every executable, runtime/launcher/), glslc, the Vulkan loader and Mesa's software Vulkan driver (the
# Vulkan backend, build/gpu-backend.sh, and its tests), and the cross-platform tools below. Installs only what is missing; needs root and apt
# (Debian/Ubuntu), otherwise says what to install.
set -euo pipefail
need=()
command -v tmux >/dev/null || need+=(tmux)
command -v chromium >/dev/null || need+=(chromium)
command -v qemu-x86_64 >/dev/null || need+=(qemu-user)
command -v readelf >/dev/null || need+=(binutils)
command -v cc >/dev/null || need+=(gcc libc6-dev)
[ -f /usr/include/zlib.h ] || need+=(zlib1g-dev)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need+=(haproxy)  # replicas behind a load balancer
command -v npm >/dev/null || need+=(nodejs npm)
# The Vulkan backend (build/gpu-backend.sh): glslc compiles its shaders, libvulkan-dev brings the loader
# to link against (its headers are too old: trixie's are fetched there), Mesa's lavapipe runs it on the CPU.
command -v glslc >/dev/null || need+=(glslc)
[ -e /usr/lib/x86_64-linux-gnu/libvulkan.so ] || [ "$(uname -m)" != x86_64 ] || need+=(libvulkan-dev)
ls /usr/share/vulkan/icd.d/lvp_icd.*.json >/dev/null 2>&1 || need+=(mesa-vulkan-drivers)
# Beyond Linux x86-64 (tests/test_launcher_windows.py, test_arm64.py): the Windows launcher cross-compiled
# with mingw-w64 (and its static zlib) and run under wine64; chattr makes a read-only cache, script(1) a
# console. The ARM64 runtime: llama.cpp cross-compiled with gcc-aarch64-linux-gnu, an ARM64 Debian root
# made by debootstrap and run through qemu-user-static's binfmt_misc registration (build/arm64-runtime.sh).
command -v x86_64-w64-mingw32-gcc >/dev/null || need+=(gcc-mingw-w64-x86-64)
[ -f /usr/x86_64-w64-mingw32/lib/libz.a ] || need+=(libz-mingw-w64-dev)
command -v wine >/dev/null && [ -x /usr/lib/wine/wine64 ] || need+=(wine wine64)
command -v chattr >/dev/null || need+=(e2fsprogs)
command -v script >/dev/null || need+=(bsdutils)
command -v aarch64-linux-gnu-g++ >/dev/null || need+=(gcc-aarch64-linux-gnu g++-aarch64-linux-gnu)
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
command -v update-binfmts >/dev/null || need+=(binfmt-support)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v patchelf >/dev/null || need+=(patchelf)  # the CUDA backend's link to NVIDIA's driver (gpu-backend.sh)
command -v shellcheck >/dev/null || need+=(shellcheck)  # actionlint's check of the workflows' scripts
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "system-deps: installing ${need[*]}" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
    echo "system-deps: please install: ${need[*]}" >&2
    exit 1
fi
