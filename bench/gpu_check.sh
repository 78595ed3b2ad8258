#!/usr/bin/env bash
# GPU offload, measured in one run on a machine with an NVIDIA GPU (no network there; only what we bring,
# at most 64 MiB): our runtime through CUDA and through Vulkan against llama.cpp's own llama-bench and
# llama-server built there from the same source, on a realistic-size random-weight model, ratios written.
#
#   bash bench/gpu_check.sh prepare        # here: bench/.gpu/ (llama.cpp's source without its models,
#                                          #   patched as build/patches/ says; our runtime with Vulkan; < 64 MiB)
#   bash bench/gpu_check.sh run            # there (the device tool: carry bench/.gpu): builds CUDA's backend,
#                                          #   llama-bench, llama-server and llama-quantize for this GPU only,
#                                          #   makes the model, runs everything, writes $OUT/gpu-check.json
#
# Targets: generation and prompt >= 0.97x native, the server at 1/4/8 clients >= 0.97x.
# Rerunnable: the build folder and the model stay in bench/.gpu/work while the machine is warm.
# On a CPU (testing the script): GPU_CHECK_PRESET=tiny GPU_CHECK_DEVICES=Vulkan0 GPU_CHECK_NATIVE_BIN=<a copy of
# bench/native.py's bin folder, or - for ours alone>
# runs the same steps on lavapipe (VK_ICD_FILENAMES, GGML_VK_VISIBLE_DEVICES=0) without building CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
STAGE=bench/.gpu
PRESET=${GPU_CHECK_PRESET:-llama-1b}
log() { printf 'gpu-check: %s\n' "$*" >&2; }

prepare() {
    local cache=${LLMPACK_CACHE:-$HOME/.cache/llmpack} version sdist tmp
    version=$(sed -n 's/.*"llama-cpp-python==\([0-9.]*\)".*/\1/p' pyproject.toml)
    sdist="$cache/sdist/llama_cpp_python-$version.tar.gz"
    [ -f "$sdist" ] || { mkdir -p "$(dirname "$sdist")"; .venv/bin/python -m pip download -q --no-deps --no-binary :all: \
        -d "$(dirname "$sdist")" "llama-cpp-python==$version"; }
    rm -rf "$STAGE" && mkdir -p "$STAGE"
    tmp=$(mktemp -d); trap 'rm -rf "$tmp"' RETURN
    tar -xzf "$sdist" -C "$tmp"
    for fix in build/patches/*.patch; do (cd "$tmp"/llama_cpp_python-*/ && git apply "$OLDPWD/$fix"); done
    # llama.cpp without its test models, docs and web UI sources: what the tools and ggml need to build.
    tar -C "$tmp"/llama_cpp_python-*/vendor -cJf "$STAGE/llama.cpp.tar.xz" --exclude=llama.cpp/models \
        --exclude=llama.cpp/docs --exclude=llama.cpp/media --exclude=llama.cpp/examples --exclude=.git \
        --exclude='llama.cpp/tools/server/webui' --exclude='llama.cpp/tests/*.gguf' llama.cpp
    .venv/bin/llmpack runtime --gpu vulkan -o "$STAGE/runtime" >/dev/null
    cp build/recipes/linux-x86_64-cpu.env bench/random_llama.py "$STAGE/"
    du -sh "$STAGE"/* >&2
    log "ready: $(du -sm "$STAGE" | cut -f1) MiB in $STAGE"
}

# Our runtime unpacked (the launcher does it on its first start), its ggml libraries, and a backend folder
# that adds the CUDA backend built here beside them (LLMPACK_BACKEND_DIR), as a --gpu cuda file carries it.
runtime_backends() {
    local work=$1 lib
    export LLMPACK_CACHE="$work/cache"
    "$STAGE/runtime/llmpack-runtime" --version >&2
    lib=$(dirname "$(find "$work/cache" -path '*/llama_cpp/lib/libggml-base.so*' | head -1)")
    rm -rf "$work/backends" && mkdir -p "$work/backends"
    ln -s "$lib"/* "$work/backends/"
    if [ -f "$work/build/bin/libggml-cuda.so" ]; then
        rm -f "$work/backends/gpu" && mkdir "$work/backends/gpu" && ln -s "$lib"/gpu/* "$work/backends/gpu/"
        ln -s "$work/build/bin/libggml-cuda.so" "$work/backends/gpu/"
    fi
    echo "$work/backends"
}

run() {
    local out=${OUT:-bench/results/gpu} work="$(pwd)/$STAGE/work" arch native jobs cpu_args
    mkdir -p "$out" "$work"
    jobs=$(nproc)
    [ -d "$work/llama.cpp" ] || tar -C "$work" -xJf "$STAGE/llama.cpp.tar.xz"
    cpu_args=$(. "$STAGE/linux-x86_64-cpu.env"; printf '%s' "$CMAKE_ARGS")
    if [ -z "${GPU_CHECK_NATIVE_BIN:-}" ]; then
        arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d '.')
        nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
        log "building for sm_$arch with $("$nvcc" --version | tail -1)"
        # The CPU recipe's flags, plus CUDA for this GPU only (the release recipe's 8 architectures would
        # take far longer); the CPU variants themselves are not built: the runtime's are used on both sides.
        # shellcheck disable=SC2086
        cmake -S "$work/llama.cpp" -B "$work/build" -DCMAKE_BUILD_TYPE=Release $cpu_args -DGGML_CPU_ALL_VARIANTS=OFF \
            -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$arch" -DCMAKE_CUDA_COMPILER="$nvcc" -DLLAMA_CURL=OFF \
            -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF > "$out/build.log" 2>&1
        cmake --build "$work/build" -j "$jobs" --target ggml-cuda llama-bench llama-server llama-quantize >> "$out/build.log" 2>&1 \
            || { tail -20 "$out/build.log" >&2; log "build failed"; exit 1; }
        native="$work/build/bin"
    else
        native=$GPU_CHECK_NATIVE_BIN
    fi
    backends=$(runtime_backends "$work")
    # The native tools load the same backend libraries: our CPU variants and Vulkan backend, the CUDA one built here.
    [ "$native" = - ] || for f in "$backends"/libggml-cpu-*.so "$backends"/gpu/libggml-vulkan.so; do
        [ -e "$f" ] && ln -sf "$(readlink -f "$f")" "$native/"
    done

    model="$work/model-$PRESET.gguf"
    if [ ! -f "$model" ]; then
        log "making a random-weight $PRESET model"
        local pypath="$work/llama.cpp/gguf-py"
        if ! python3 -c 'import yaml' 2>/dev/null; then  # gguf-py imports it for model cards, unused here
            mkdir -p "$work/shim" && echo 'def safe_load(*a, **k): return {}' > "$work/shim/yaml.py"
            pypath="$pypath:$work/shim"
        fi
        PYTHONPATH="$pypath" python3 "$STAGE/random_llama.py" "$model.f16" --preset "$PRESET"
        if [ "$native" != - ] && [ -x "$native/llama-quantize" ]; then
            "$native/llama-quantize" "$model.f16" "$model" Q4_K_M > "$out/quantize.log" 2>&1 && rm -f "$model.f16"
        else
            mv "$model.f16" "$model"
        fi
    fi
    devices=${GPU_CHECK_DEVICES:-CUDA0 Vulkan0}
    LLMPACK_BACKEND_DIR=$backends python3 - "$out" "$model" "$native" "$STAGE/runtime/llmpack-runtime" $devices <<'PY'
import json, os, re, statistics, subprocess, sys, threading, time, urllib.request
out, model, native, ours, *devices = sys.argv[1:]
runs = int(os.environ.get("GPU_CHECK_RUNS", "3"))
prompt_words = " ".join(["the quick brown fox jumps over the lazy dog"] * 60)  # ~500 tokens
results = {"model": os.path.basename(model), "devices": {}, "targets": ">= 0.97"}

def ours_cli(device):
    """Our --cli's own stats line: prompt and generation tokens per second (medians of `runs`)."""
    pp, tg = [], []
    for _ in range(runs):
        r = subprocess.run([ours, "-m", model, "--cli", "-p", prompt_words, "-n", "128", "--temp", "0", "--ignore-eos",
                            "-ngl", "999", "-dev", device, "-c", "4096", "--no-display-prompt"], capture_output=True, text=True)
        m = re.search(r"([\d.]+) tok/s\); prompt: \d+ tokens \(([\d.]+) tok/s\)", r.stderr)
        if not m:
            raise SystemExit(f"ours on {device}: {r.stderr[-2000:]}")
        tg.append(float(m.group(1))); pp.append(float(m.group(2)))
    return statistics.median(pp), statistics.median(tg)

# The native tools find their libraries beside them (ours never see this variable).
native_env = {**os.environ, "LD_LIBRARY_PATH": native}
native_env.pop("LLMPACK_BACKEND_DIR", None)

def native_bench(device):
    r = subprocess.run([f"{native}/llama-bench", "-m", model, "-ngl", "999", "-dev", device, "-p", "512", "-n", "128",
                        "-r", str(runs), "-o", "json"], capture_output=True, text=True, env=native_env)
    if r.returncode:
        raise SystemExit(f"llama-bench on {device}: {r.stderr[-2000:]}")
    rows = json.loads(r.stdout)
    pp = next(x["avg_ts"] for x in rows if x["n_prompt"] > 0 and x["n_gen"] == 0)
    tg = next(x["avg_ts"] for x in rows if x["n_gen"] > 0 and x["n_prompt"] == 0)
    return pp, tg

def serve(command, port, env=None):
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    for _ in range(600):
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).status == 200:
                return proc
        except Exception:
            time.sleep(0.5)
    proc.kill(); raise SystemExit(f"server did not start: {command}")

def load(port, clients):
    """Aggregate generated tokens per second with `clients` concurrent /v1/completions of 128 tokens."""
    body = json.dumps({"prompt": "Once upon a time", "max_tokens": 128, "temperature": 0, "ignore_eos": True}).encode()
    counts = []
    def one():
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", body, {"Content-Type": "application/json"})
        counts.append(json.load(urllib.request.urlopen(req, timeout=600))["usage"]["completion_tokens"])
    started = time.perf_counter()
    threads = [threading.Thread(target=one) for _ in range(clients)]
    for t in threads: t.start()
    for t in threads: t.join()
    return sum(counts) / (time.perf_counter() - started)

def servers(device):
    common = ["-m", model, "-ngl", "999", "-dev", device, "-np", "8", "-c", "16384"]
    rows = {}
    for name, command, port in (("ours", [ours, "--server", "--nobrowser", "--port", "18080", *common], 18080),
                                ("native", [f"{native}/llama-server", "--port", "18081", *common], 18081)):
        if name == "native" and native == "-":
            continue
        proc = serve(command, port, native_env if name == "native" else None)
        try:
            load(port, 1)  # warm-up
            rows[name] = {c: statistics.median(load(port, c) for _ in range(runs)) for c in (1, 4, 8)}
        finally:
            proc.terminate(); proc.wait(30)
    return rows

for device in devices:
    entry = results["devices"][device] = {}
    entry["ours"] = dict(zip(("prompt_tps", "gen_tps"), ours_cli(device)))
    if native != "-":
        entry["native"] = dict(zip(("prompt_tps", "gen_tps"), native_bench(device)))
        entry["ratio"] = {k: entry["ours"][k] / entry["native"][k] for k in entry["ours"]}
    entry["server_tps"] = servers(device)
    if "native" in entry["server_tps"]:
        entry["ratio"].update({f"server_{c}": entry["server_tps"]["ours"][c] / entry["server_tps"]["native"][c]
                               for c in (1, 4, 8)})
    print(device, json.dumps(entry), flush=True)
with open(os.path.join(out, "gpu-check.json"), "w") as f:
    json.dump(results, f, indent=2)
PY
    log "wrote $out/gpu-check.json"
}

case "${1:-run}" in
prepare) prepare ;;
run) run ;;
*) echo "usage: bench/gpu_check.sh prepare|run" >&2; exit 2 ;;
esac
