#!/usr/bin/env bash
# Prints this machine's target name, as used by build/recipes and `llmpack build --target`.
os=$(uname -s | tr '[:upper:]' '[:lower:]')
arch=$(uname -m)
case "$arch" in amd64) arch=x86_64 ;; arm64) [ "$os" = darwin ] || arch=aarch64 ;; esac
printf '%s-%s\n' "$os" "$arch"
