"""Chat formats, ours against native llama-server built from the same llama.cpp (bench/native.py): for
every template in the vendored llama.cpp's models/templates/, the same conversations (plain, with tools,
calls and results, with earlier reasoning, thinking off, a reasoning effort) rendered by both
(/apply-template there, runtime/formats/llama_chat.py here), and, for templates that think, a raw
output forced by a grammar (so it cannot vary with the CPU) parsed by both, whole and streamed.

    .venv/bin/python bench/chat_formats.py [--only NAME] [--json OUT]   # prints "N of M templates identical"
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.native import ensure_native_tools  # noqa: E402
from runtime.formats.llama_chat import ChatFormatError, LlamaChat  # noqa: E402
from tests.support.tiny_model import write_tiny_gguf  # noqa: E402

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}}]
PLAIN = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi there"},
         {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Capital of France?"}]
CALLS = [{"role": "user", "content": "Weather in Paris?"},
         {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", "type": "function", "function": {
             "name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
         {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 21 C"},
         {"role": "user", "content": "And tomorrow?"}]
REASONED = [{"role": "user", "content": "2+2?"},
            {"role": "assistant", "reasoning_content": "Two and two make four.", "content": "4"},
            {"role": "user", "content": "3+3?"}]
CONVERSATIONS = {
    "plain": {"messages": PLAIN},
    "tools": {"messages": CALLS, "tools": TOOLS},
    "reasoning": {"messages": REASONED},
    "thinking-off": {"messages": PLAIN, "chat_template_kwargs": {"enable_thinking": False}},
    "effort": {"messages": PLAIN[1:2], "reasoning_effort": "low"},
}
# llama-server's default template kwargs (common/arg.cpp: preserve_reasoning unless told otherwise).
SERVER_KWARGS = {"preserve_reasoning": True}
REASONING, ANSWER = "Let me think: Paris is the capital.", "Paris."


def templates_dir() -> Path:
    """The vendored llama.cpp's models/templates/, taken once from the sdist the set-up cached
    (build/chat-shim.sh keeps it in $LLMPACK_CACHE/sdist) into a folder beside it."""
    import tarfile

    # The set-up's cache: $LLMPACK_CACHE when it ran, else the default (the tests point LLMPACK_CACHE elsewhere).
    caches = [Path(os.environ["LLMPACK_CACHE"]) / "sdist"] if os.environ.get("LLMPACK_CACHE") else []
    caches.append(Path.home() / ".cache" / "llmpack" / "sdist")
    sdist = next((s for cache in caches for s in sorted(cache.glob("llama_cpp_python-*.tar.gz"))), None)
    if sdist is None:
        raise SystemExit(f"no llama-cpp-python sdist in {' or '.join(map(str, caches))}: run make setup")
    cache = sdist.parent
    out = cache / sdist.name.removesuffix(".tar.gz")
    found = out / "vendor" / "llama.cpp" / "models" / "templates"
    if not found.is_dir():
        staging = Path(tempfile.mkdtemp(prefix=".templates-", dir=cache))
        with tarfile.open(sdist) as archive:
            members = [m for m in archive.getmembers() if "/vendor/llama.cpp/models/templates/" in m.name]
            archive.extractall(staging, members=members, filter="data")
        (staging / out.name).rename(out)  # whole or not at all: another run may be reading it
        staging.rmdir()
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def native_server(binary: Path, model: Path, template: Path):
    port = free_port()
    process = subprocess.Popen([str(binary), "-m", str(model), "--port", str(port), "--jinja", "-c", "8192", "-np", "1",
                                "--chat-template-file", str(template), "--no-warmup", "-t", "1"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               # its libraries beside it (the build's RUNPATH named the build folder)
                               env={**os.environ, "LD_LIBRARY_PATH": str(binary.parent)})
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            if process.poll() is not None:
                raise RuntimeError(process.stderr.read()[-600:])
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def load_vocab(model: Path):
    """The model's vocabulary through llama.cpp, for LlamaChat.from_model (BOS, EOS, add_bos as llama-server)."""
    sys.path.insert(0, str(REPO))
    from runtime.engine.native import llama, load_backends

    load_backends()
    params = llama.llama_model_default_params()
    params.vocab_only = True
    handle = llama.llama_model_load_from_file(str(model).encode(), params)
    assert handle, "tiny model did not load"
    return handle


def gbnf_literal(text: str) -> str:
    return 'root ::= "' + "".join(f"\\x{ord(c):02X}" if c in '"\\\n\r\t' else c for c in text) + '"'


def forced_output(applied) -> str | None:
    """The raw output of a model that thinks, then answers, in this format (None: no thinking)."""
    start, ends = applied.thinking_start_tag, applied.thinking_end_tags
    if not applied.supports_thinking or not ends:
        return None
    opened = start and applied.generation_prompt.rstrip().endswith(start.strip())
    return ("" if opened else start) + REASONING + ends[0] + ANSWER


def _or_error(parse, *args) -> dict:
    try:
        return parse(*args)
    except (ChatFormatError, KeyError, ValueError) as exc:
        return {"error": type(exc).__name__}


def native_parse(url: str, raw: str, stream: bool) -> dict:
    body = {"messages": [{"role": "user", "content": "Capital of France?"}], "grammar": gbnf_literal(raw),
            "max_tokens": 400, "temperature": 0, "stream": stream}
    if not stream:
        message = httpx.post(url + "/v1/chat/completions", json=body, timeout=120).json()["choices"][0]["message"]
        return {"content": message.get("content") or "", "reasoning_content": message.get("reasoning_content") or ""}
    out = {"content": "", "reasoning_content": ""}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=120) as response:
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    raise ValueError(chunk["error"])
                for choice in chunk.get("choices", []):
                    for key in out:
                        out[key] += choice.get("delta", {}).get(key) or ""
    return out


def our_parse(applied, raw: str, stream: bool) -> dict:
    parser = applied.stream(streaming=stream)
    out = {"content": "", "reasoning_content": ""}
    pieces = [raw[i:i + 3] for i in range(0, len(raw), 3)] if stream else []
    diffs = [d for piece in pieces for d in parser.feed(piece)] + parser.finish("" if stream else raw)
    for d in diffs:
        for key in out:
            out[key] += d.get(key, "")
    if not stream:
        return {k: parser.message[k] for k in out}
    return out


def compare(binary: Path, model: Path, vocab, template: Path) -> dict:
    result: dict = {"template": template.name, "render": {}, "parse": {}}
    text = template.read_text()
    with native_server(binary, model, template) as url:
        try:
            chat = LlamaChat.from_model(vocab, text)
        except ChatFormatError as exc:
            result["error"] = f"ours: {exc}"
            return result
        for name, conversation in CONVERSATIONS.items():
            body = {**conversation, "chat_template_kwargs": {**SERVER_KWARGS, **conversation.get("chat_template_kwargs", {})}}
            native = httpx.post(url + "/apply-template", json=conversation, timeout=60)
            try:
                ours = chat.apply(body).prompt
            except ChatFormatError as exc:
                ours = f"error: {exc}"
            theirs = native.json().get("prompt") if native.status_code == 200 else f"error: {native.status_code}"
            both_refuse = ours.startswith("error: ") and theirs.startswith("error: ")  # the template's own refusal
            result["render"][name] = "same" if ours == theirs or both_refuse else {"ours": ours, "native": theirs}
        applied = chat.apply({"messages": [{"role": "user", "content": "Capital of France?"}],
                              "chat_template_kwargs": SERVER_KWARGS})
        raw = forced_output(applied)
        if raw is not None:
            for stream in (False, True):
                ours, theirs = _or_error(our_parse, applied, raw, stream), _or_error(native_parse, url, raw, stream)
                if "error" in ours and "error" in theirs:  # both refuse the output
                    ours = theirs = {"error": "both"}
                key = "stream" if stream else "whole"
                result["parse"][key] = "same" if ours == theirs else {"ours": ours, "native": theirs, "raw": raw}
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="templates whose name contains this")
    parser.add_argument("--json", type=Path, help="write every result here")
    args = parser.parse_args()
    binary = ensure_native_tools(log=lambda m: print(m, file=sys.stderr)) / "llama-server"
    work = Path(tempfile.mkdtemp(prefix="llmpack-formats-"))
    model = write_tiny_gguf(work / "tiny.gguf", chat_template=None, n_ctx=8192)
    vocab = load_vocab(model)
    templates = sorted(t for t in templates_dir().glob("*.jinja") if not args.only or args.only in t.name)
    results = []
    for template in templates:
        result = compare(binary, model, vocab, template)
        same = "error" not in result and all(v == "same" for part in ("render", "parse") for v in result[part].values())
        result["identical"] = same
        results.append(result)
        print(f"{'same' if same else 'DIFF'}  {template.name}", file=sys.stderr)
    identical = sum(r["identical"] for r in results)
    print(f"{identical} of {len(results)} templates identical (render: {len(CONVERSATIONS)} conversations; "
          f"parse: thinking output whole and streamed)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, ensure_ascii=False))
    return 0 if identical == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
