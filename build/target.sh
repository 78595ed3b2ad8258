#!/usr/bin/env bash
# Prints this machine's target name, as used by build/recipes and `llmpack build --target`.
os=$(uname -s | tr '[:upper:]' '[:lower:]')
arch=$(uname -m)
# Git Bash and MSYS2 on Windows say MINGW64_NT-10.0-..., MSYS_NT-... or CYGWIN_NT-...
case "$os" in mingw*|msys*|cygwin*) os=windows ;; esac
case "$arch" in amd64) arch=x86_64 ;; arm64) [ "$os" = darwin ] || arch=aarch64 ;; esac
printf '%s-%s\n' "$os" "$arch"
