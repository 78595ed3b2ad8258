"""The man page (`--help`): templates/help.txt filled with what this executable holds.

--help must not load llama.cpp, and the chat's command table and the server's routes both live in
modules that import the engine (which loads it). So the two are listed here as plain data, and
tests/test_help_version.py checks these lists against `chat.commands.COMMANDS` and the FastAPI app's
routes: a command or a route added there and not here fails the tests.
"""

from __future__ import annotations

import shlex
from importlib.resources import files
from typing import Sequence

from .. import __version__
from ..bundle import payload_format
from ..flags.settings import Settings, describe_options
from ..flags.stored_args import PLACEHOLDER
from ..bundle.payload_format import Payload

# (name, usage, help): the chat's slash commands, as runtime/chat/commands.py's table says them.
CHAT_COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("help", "[COMMAND]", "list the commands, or explain one"),
    ("exit", "", "leave the chat (also Ctrl-D, or Ctrl-C on an empty prompt)"),
    ("clear", "", "start the conversation over, keeping the system prompt"),
    ("undo", "", "drop the last exchange (your last message and its reply)"),
    ("forget", "", "drop the oldest message (and a reply left first) to free context"),
    ("context", "", "tokens used and free in the context window"),
    ("stats", "", "prompt and generation speed of the last reply"),
    ("dump", "[FILE]", "print the conversation as text, or write it to FILE"),
    ("push", "[LABEL]", "save the conversation as a restore point"),
    ("pop", "", "go back to the latest restore point (and drop it from the stack)"),
    ("stack", "", "list the restore points, latest first"),
    ("upload", "FILE", "add a text file to the conversation, as your next message's context"),
    ("image", "FILE", "attach an image to your next message (or drop the file on the terminal)"),
    ("audio", "FILE", "attach a sound (WAV, MP3, FLAC) to your next message"),
    ("think", "[on|off]", "let a thinking model think before it answers, or not"),
    ("system", "[TEXT]", "show the system prompt, or replace it with TEXT ('-' removes it)"),
)

# (method, path, what): every route the server answers (runtime/server/routes_*.py).
HTTP_ROUTES: tuple[tuple[str, str, str], ...] = (
    ("POST", "/v1/chat/completions", "OpenAI chat completions (stream: server-sent events)"),
    ("POST", "/chat/completions", "the same as /v1/chat/completions (for clients given a base URL without /v1)"),
    ("POST", "/v1/chat/completions/input_tokens", "llama-server's: the prompt tokens a chat request would take, without generating"),
    ("POST", "/chat/completions/input_tokens", "the same as /v1/chat/completions/input_tokens"),
    ("POST", "/v1/completions", "OpenAI text completions"),
    ("POST", "/v1/messages", "Anthropic Messages (stream: Anthropic's events; x-api-key accepted for --api-key)"),
    ("POST", "/v1/messages/count_tokens", "Anthropic token counting: the prompt's tokens"),
    ("POST", "/v1/responses", "OpenAI Responses API (stream: server-sent events; previous_response_id)"),
    ("POST", "/responses", "the same as /v1/responses (for clients given a base URL without /v1)"),
    ("GET", "/v1/responses/{response_id}", "a stored response (the last 100 are kept in memory)"),
    ("DELETE", "/v1/responses/{response_id}", "forget a stored response"),
    ("GET", "/v1/models", "the model served, with its context size per sequence (meta.n_ctx)"),
    ("GET", "/v1/models/{model_id}", "one model"),
    ("GET", "/models", "the same as /v1/models"),
    ("POST", "/v1/embeddings", "embeddings (with --embedding)"),
    ("POST", "/embeddings", "llama.cpp's embeddings: one vector per token with --pooling none, else the pooled one"),
    ("POST", "/completion", "llama.cpp's completion (n_predict, n_probs, samplers, ...; stream: data: events)"),
    ("POST", "/completions", "the same as /completion"),
    ("POST", "/infill", "llama.cpp's fill-in-the-middle (input_prefix, input_suffix, input_extra)"),
    ("POST", "/apply-template", "a chat's messages rendered with the chat template: {\"prompt\"}"),
    ("GET", "/props", "llama.cpp's server properties (default_generation_settings, total_slots, n_ctx, ...)"),
    ("GET", "/slots", "llama.cpp's per-sequence state (id, n_ctx, is_processing)"),
    ("POST", "/rerank", "documents ranked against a query (with --reranking on a reranker model)"),
    ("POST", "/reranking", "the same as /rerank"),
    ("POST", "/v1/rerank", "the same as /rerank"),
    ("POST", "/v1/reranking", "the same as /rerank"),
    ("POST", "/tokenize", "text to token ids (llama.cpp's shape)"),
    ("POST", "/detokenize", "token ids to text"),
    ("GET", "/health", "503 while the model loads, then 200"),
    ("GET", "/metrics", "Prometheus metrics"),
    ("GET", "/", "the web chat"),
    ("GET", "/favicon.ico", "the web chat's icon"),
    ("GET", "/manifest.webmanifest", "the web chat as an installable app (PWA): its web app manifest"),
    ("GET", "/icon.svg", "the web app's icon"),
    ("GET", "/icon-{size}.png", "the web app's icon as PNG (192 or 512 pixels)"),
    ("GET", "/sw.js", "the web app's service worker: the page's last copy, opened while the server is down"),
    ("GET", "/_app/version.json", "the web app's version, where llama-server's page says it"),
    ("GET", "/cors-proxy", "with --ui-mcp-proxy: ?url=TARGET fetched for the web page (MCP servers without CORS); else 403"),
    ("POST", "/cors-proxy", "the same, with the request's body"),
    ("GET", "/api/version", "Ollama's API: the Ollama version whose API this follows"),
    ("GET", "/api/tags", "Ollama's API: the model, as NAME:latest (or -a NAME)"),
    ("GET", "/api/ps", "Ollama's API: the loaded model, with its context size"),
    ("POST", "/api/show", "Ollama's API: the model's details, template, parameters and GGUF metadata"),
    ("POST", "/api/chat", "Ollama's API: chat (stream: NDJSON, the default; tools, format, options)"),
    ("POST", "/api/generate", "Ollama's API: a prompt as the user's turn, or as it is with raw: true"),
    ("POST", "/api/embed", "Ollama's API: embeddings (with --embedding)"),
    ("POST", "/api/embeddings", "Ollama's older embeddings route (one prompt, not normalized)"),
    ("POST", "/api/pull", "Ollama's API: refused (403): this server serves its one built-in model"),
    ("POST", "/api/push", "refused, as /api/pull"),
    ("POST", "/api/create", "refused, as /api/pull"),
    ("POST", "/api/copy", "refused, as /api/pull"),
    ("DELETE", "/api/delete", "refused, as /api/pull"),
    ("POST", "/api/blobs/{digest}", "refused, as /api/pull"),
)

# (variable, what): every environment variable the runtime reads (a test greps runtime/ for them).
ENVIRONMENT: tuple[tuple[str, str], ...] = (
    ("LLMPACK_CACHE", "where the launcher unpacks the runtime once (runtime/), weights are extracted where they "
                      "cannot be read in place, and an --rpc-server keeps the weights it receives (rpc/) "
                      "(default $XDG_CACHE_HOME/llmpack, else ~/.cache/llmpack)"),
    ("XDG_CACHE_HOME", "see LLMPACK_CACHE"),
    ("LOCALAPPDATA", "Windows: the cache is %LOCALAPPDATA%\\llmpack unless LLMPACK_CACHE is set"),
    ("LLMPACK_HISTORY", "the chat's history file (default ~/.llmpack_history)"),
    ("LLMPACK_BUNDLE", "set by the launcher: the executable whose embedded weights and arguments the runtime uses"),
    ("LLMPACK_RUNTIME_DIR", "set by the launcher: the folder it unpacked the runtime into (--verify checks it)"),
    ("LLMPACK_ARGV0", "set by the launcher: the name the executable was started by (for --help)"),
    ("LLMPACK_BACKEND_DIR", "load llama.cpp's compute backends (libggml-*) from this folder"),
    ("LLMPACK_GPU_PROBE", "always: load the GPU backends (gpu/ in the backend folder) even where no GPU device file is in /dev"),
    ("GGML_VK_VISIBLE_DEVICES", "ggml's: the Vulkan devices to use, by index (names software ones such as lavapipe, skipped otherwise)"),
    ("AIP_MODE", "PREDICTION: Vertex AI's custom-container protocol, as llama-server serves it: POST /predict runs each instance through the route its @requestFormat names"),
    ("AIP_HTTP_PORT", "with AIP_MODE=PREDICTION: the port to listen on (instead of --port)"),
    ("AIP_PREDICT_ROUTE", "with AIP_MODE=PREDICTION: the predict route's path (default: /predict)"),
    ("AIP_HEALTH_ROUTE", "with AIP_MODE=PREDICTION: a second path for /health (as open as /health)"),
    ("LLMPACK_DEBUG", "1: a Python traceback with every error, even one in the flags (as --verbose, which needs them parsed)"),
    ("NO_COLOR", "set: no colour in the chat"),
    ("DISPLAY", "with WAYLAND_DISPLAY: a display, so --server opens a browser (unless --nobrowser)"),
    ("WAYLAND_DISPLAY", "see DISPLAY"),
)


def program_name() -> str:
    return payload_format.program_name()


def render_help(payload: Payload | None, stored: Sequence[str], defaults: Settings) -> str:
    """`stored`: the arguments recorded at build time; `defaults`: the settings they give, whose values
    the option list shows as the defaults of this executable."""
    template = files("llmpack.templates").joinpath("help.txt").read_text(encoding="utf-8")
    program = program_name()
    embedded = "no embedded weights" if payload is None else (
        f"embedded weights: {payload.manifest.get('model', {}).get('name', '?')}")
    return template.format(program=program, version=__version__, embedded=embedded,
                           options=describe_options(defaults), stored=_stored_section(stored),
                           chat_commands=_chat_commands(), http_api=_http_api(), environment=_environment())


def _stored_section(stored: Sequence[str]) -> str:
    if not stored:
        return "    none (built without --args)\n"
    line = " ".join(arg if arg == PLACEHOLDER else shlex.quote(arg) for arg in stored)
    return f"    {line}\n"


def _table(rows: Sequence[tuple[str, str]]) -> str:
    width = max(len(left) for left, _ in rows)
    return "".join(f"    {left:<{width}}  {right}\n" for left, right in rows)


def _chat_commands() -> str:
    return _table([(f"/{name} {usage}".rstrip(), text) for name, usage, text in CHAT_COMMANDS])


def _http_api() -> str:
    return _table([(f"{method:<4} {path}", text) for method, path, text in HTTP_ROUTES])


def _environment() -> str:
    return _table(ENVIRONMENT)
