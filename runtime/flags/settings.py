"""The runtime's one settings schema: every flag, its llamafile/llama.cpp spelling, default and help.

`Settings` is the only thing passed past `main()`; the argument parser and the man page's option list
are both derived from its fields, so they cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

from .. import messages
from ..errors import UsageError
from .parser import parse_line
from .values import CACHE_TYPE_VALUES, FLASH_ATTN_VALUES, resolve

MODES = ("cli", "chat", "server")
RPC_SERVER_PORT = 50052  # llama.cpp's rpc-server's


def _flag(*flags: str, help: str, default: Any = None, metavar: str | None = None,
          group: str = "general", minimum: float | None = None, maximum: float | None = None,
          choices: dict[str, str] | None = None, bare: str | None = None,
          negations: tuple[str, ...] = ()) -> Any:
    """`choices`: the accepted spellings and what each stands for; `bare`: the value of the flag given
    without one (`-fa` alone); `negations`: flags that turn a switch off (`--no-escape`)."""
    meta = {"flags": flags, "help": help, "metavar": metavar, "group": group,
            "minimum": minimum, "maximum": maximum, "choices": choices, "bare": bare, "negations": negations}
    return field(default=default, metadata=meta)


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)



def _spec_types() -> dict[str, str]:
    """--spec-type's spellings: llama-server's n-gram types all name our n-gram drafter (its lookup and
    draft length are its own: runtime/engine/speculative.py), alone or with draft-simple, either order."""
    ngram = ("ngram-simple", "ngram-map-k", "ngram-map-k4v", "ngram-mod", "ngram-cache")
    types = {"none": "none", "draft-simple": "draft-simple"}
    for name in ngram:
        types[name] = "ngram-simple"
        types[f"{name},draft-simple"] = types[f"draft-simple,{name}"] = "ngram-simple,draft-simple"
    return types


SPEC_TYPES = _spec_types()

@dataclass(frozen=True)
class Settings:
    # Modes
    cli: bool = _flag("--cli", help="one-shot completion of -p/-f for shell scripts: stdout carries only text", default=False, group="mode")
    chat: bool = _flag("--chat", help="terminal chatbot only (no server)", default=False, group="mode")
    server: bool = _flag("--server", help="OpenAI-compatible HTTP server only", default=False, group="mode")
    rpc_server: bool = _flag("--rpc-server", help="serve as a llama.cpp RPC worker, a device for another machine's --rpc (no model is loaded here): at --host (127.0.0.1 unless given) and --port (50052 unless given), with -t threads, on --device's devices (default: the GPUs, else the CPU); the protocol has no authentication: expose it only on a trusted network", default=False, group="mode")
    clean_cache: bool = _flag("--clean-cache", help="remove the runtimes other executables unpacked into the cache ($LLMPACK_CACHE/runtime/), keep this one's, and exit", default=False, group="mode")

    # Model and compute
    model: str | None = _flag("-m", "--model", help="GGUF weights to use instead of the embedded ones", metavar="FILE", group="model")
    n_gpu_layers: int = _flag("-ngl", "--n-gpu-layers", "--gpu-layers", help="layers to offload to the GPU: -1 = auto (as llama.cpp: every layer on the GPUs found, as many as their free memory holds; none without a GPU), 0 = the CPU only, 999 = all", default=-1, metavar="N", group="model", minimum=-1)
    main_gpu: int = _flag("-mg", "--main-gpu", help="the GPU (index among the offload devices) that holds the whole model with -sm none, or the intermediate results with -sm row", default=0, metavar="INDEX", group="model", minimum=0)
    split_mode: str = _flag("-sm", "--split-mode", help="how a model is split over several GPUs: none (one GPU, -mg), layer (layers and KV cache shared out, as -ts says) or row (rows shared out, where the backend supports it)", default="layer", metavar="{none,layer,row}", group="model", choices={k: k for k in ("none", "layer", "row")})
    list_devices: bool = _flag("--list-devices", help="list the devices found (GPUs with their free memory, the CPU) and exit", default=False, group="mode")
    ctx_size: int = _flag("-c", "--ctx-size", help="context size in tokens: one KV pool the -np sequences share, any one of them may use all of it (-no-kvu: divided among them); 0 = the model's training context each; a -c given is honoured beyond the training context, with a warning; the default is capped at it", default=8192, metavar="N", group="model", minimum=0)
    batch_size: int = _flag("-b", "--batch-size", help="prompt tokens processed per batch", default=2048, metavar="N", group="model", minimum=1)
    ubatch_size: int = _flag("-ub", "--ubatch-size", help="physical batch: tokens computed in one go (at most -b)", default=512, metavar="N", group="model", minimum=1)
    threads: int = _flag("-t", "--threads", help="CPU threads (0 = all usable cores; ggml's maximum is 512)", default=0, metavar="N", group="model", minimum=0, maximum=512)
    threads_batch: int = _flag("-tb", "--threads-batch", help="CPU threads for prompt processing (0 = the same as -t)", default=0, metavar="N", group="model", minimum=0, maximum=512)
    flash_attn: str = _flag("-fa", "--flash-attn", help="flash attention: on, off, or auto (llama.cpp uses it where the device supports it); -fa alone means on", default="auto", metavar="[on|off|auto]", group="model", choices=FLASH_ATTN_VALUES, bare="on")
    cache_type_k: str = _flag("-ctk", "--cache-type-k", help=f"KV cache data type for K: {', '.join(CACHE_TYPE_VALUES)}", default="f16", metavar="TYPE", group="model", choices=CACHE_TYPE_VALUES)
    cache_type_v: str = _flag("-ctv", "--cache-type-v", help=f"KV cache data type for V: {', '.join(CACHE_TYPE_VALUES)} (a quantized one needs flash attention: -fa on or auto)", default="f16", metavar="TYPE", group="model", choices=CACHE_TYPE_VALUES)
    no_warmup: bool = _flag("--no-warmup", help="skip the warm-up: an empty decode at start, as llama.cpp does, that pages the weights in before the first request", default=False, group="model")
    parallel: int = _flag("-np", "--parallel", help="sequences the server decodes at once", default=4, metavar="N", group="model", minimum=1, maximum=256)
    kv_unified: bool = _flag("-kvu", "--kv-unified", help="one KV pool shared by the -np sequences (llama.cpp's unified KV cache): any one may use all of -c while the others are idle; when the pool is full, finished requests' caches go first, then API requests give way to the terminal chat; -no-kvu/--no-kv-unified divides -c into -np fixed shares", default=True, group="model", negations=("-no-kvu", "--no-kv-unified"))
    kv_unified_per_slot: int = _flag("--kv-unified-per-slot", help="the most one sequence of the KV pool may hold (0 = the whole pool); without -c the pool is sized -np times N", default=0, metavar="N", group="model", minimum=0)
    cache_ram: int = _flag("-cram", "--cache-ram", help="MiB of host memory for a prompt cache: a sequence reused for another conversation is saved there first, and a later request starting with a saved prompt gets it back instead of decoding it again (least recently used out first; -1 = no limit, 0 = off)", default=8192, metavar="MiB", group="model", minimum=-1)
    spec_type: str = _flag("--spec-type", help="speculative decoding: ngram-simple drafts what followed the last tokens' earlier occurrence in the sequence (code edits, rewrites, quotes); draft-simple drafts with a draft model (-md's, or the one the executable carries: implied by either); ngram-simple,draft-simple: n-gram lookups first; drafted tokens are kept only where the model would have sampled them anyway; none: off unless there is a draft model; llama-server's other n-gram types (ngram-map-k, ngram-map-k4v, ngram-mod, ngram-cache) name ngram-simple here", default="none", metavar="{none,ngram-simple,draft-simple}", group="model", choices=SPEC_TYPES)
    spec_ngram_simple_size_n: int = _flag("--spec-ngram-simple-size-n", help="ngram-simple: tokens looked up", default=12, metavar="N", group="model", minimum=1, maximum=1024)
    spec_ngram_simple_size_m: int = _flag("--spec-ngram-simple-size-m", help="ngram-simple: the most tokens drafted at once", default=48, metavar="N", group="model", minimum=1, maximum=1024)
    model_draft: str | None = _flag("-md", "--model-draft", "--spec-draft-model", help="a draft model for speculative decoding: a smaller GGUF with the same vocabulary proposes tokens, the model checks them in one decode (instead of the one the executable carries, if any)", metavar="FILE", group="model")
    gpu_layers_draft: int = _flag("-ngld", "--gpu-layers-draft", "--n-gpu-layers-draft", "--spec-draft-ngl", help="the draft model's layers on the GPU: -1 = all where there is a GPU, 0 = the CPU only", default=-1, metavar="N", group="model", minimum=-1)
    draft_max: int = _flag("--spec-draft-n-max", "--draft-max", "--draft", "--draft-n", help="the draft model: tokens drafted at most per step", default=3, metavar="N", group="model", minimum=0, maximum=1024)
    draft_min: int = _flag("--spec-draft-n-min", "--draft-min", "--draft-n-min", help="the draft model: a shorter draft is not used", default=0, metavar="N", group="model", minimum=0, maximum=1024)
    draft_p_min: float = _flag("--spec-draft-p-min", "--draft-p-min", help="the draft model: drafting stops at a token whose probability among its 10 best is below P (greedy)", default=0.0, metavar="P", group="model", minimum=0.0, maximum=1.0)
    no_repack: bool = _flag("-nr", "--no-repack", help="keep the weights as stored: no repacking into the layout this CPU computes fastest (llama.cpp's -nr; slower, but the same compute path on every CPU of a variant, for comparing outputs); --repack turns it back on", default=False, group="model", negations=("--repack",))
    mmproj: str | None = _flag("-mm", "--mmproj", help="a multimodal projector GGUF (llama.cpp's mmproj-*.gguf) instead of the embedded one: images and audio in the chat and the API", metavar="FILE", group="model")
    no_mmproj: bool = _flag("--no-mmproj", help="leave the projector out (the embedded one or --mmproj's): text only", default=False, group="model")
    mmproj_offload: bool = _flag("--mmproj-offload", help="compute the projector on the GPU when there is one (llama.cpp's default); --no-mmproj-offload keeps it on the CPU", default=True, group="model", negations=("--no-mmproj-offload",))
    no_mmap: bool = _flag("--no-mmap", help="read the weights into memory instead of mapping them", default=False, group="model")
    mlock: bool = _flag("--mlock", help="lock the weights in RAM (no swapping)", default=False, group="model")
    embedding: bool = _flag("--embedding", "--embeddings", help="enable the /v1/embeddings endpoint", default=False, group="model")
    pooling: str | None = _flag("--pooling", help="how embeddings pool the tokens: none, mean, cls, last or rank (default: the model's own); /embeddings answers one vector per token with none", metavar="{none,mean,cls,last,rank}", group="model", choices={k: k for k in ("none", "mean", "cls", "last", "rank")})
    reranking: bool = _flag("--reranking", "--rerank", help="enable /rerank on a reranker model (embeddings with rank pooling)", default=False, group="model")
    chat_template: str | None = _flag("--chat-template", help="chat template to use instead of the model's (a Jinja template or a name: chatml, gemma, llama3)", metavar="TEMPLATE", group="model")
    # Thinking, as llama-server (llama.cpp's chat library parses and controls it: runtime/formats/llama_chat.py).
    reasoning_format: str = _flag("--reasoning-format", help="where a thinking model's thoughts go: auto or deepseek (reasoning_content, thinking blocks...), deepseek-legacy (also left in the text, tags and all), none (left in the text)", default="auto", metavar="FORMAT", group="model", choices={k: k for k in ("auto", "deepseek", "deepseek-legacy", "none")})
    reasoning: str = _flag("-rea", "--reasoning", help="thinking: on, off, or auto (on where the template can think)", default="auto", metavar="[on|off|auto]", group="model", choices={"on": "on", "off": "off", "auto": "auto", "true": "on", "false": "off", "1": "on", "0": "off", "enabled": "on", "disabled": "off"})
    reasoning_budget: int = _flag("--reasoning-budget", help="tokens a thought may take: -1 unrestricted, 0 none; past it the thought is closed, as llama-server does", default=-1, metavar="N", group="model", minimum=-1)
    reasoning_budget_message: str | None = _flag("--reasoning-budget-message", help="text put before the end of a thought the budget closes", metavar="MESSAGE", group="model")
    reasoning_effort: str = _flag("--reasoning-effort", help="reasoning effort given to the chat template (default: the template's own; minimal, low, medium, high...)", default="default", metavar="LEVEL", group="model")
    chat_template_kwargs: str | None = _flag("--chat-template-kwargs", help="more variables for the chat template, as a JSON object (e.g. '{\"enable_thinking\": false}')", metavar="JSON", group="model")
    chat_template_file: str | None = _flag("--chat-template-file", help="read the chat template (Jinja) from FILE, as llama-server does (instead of --chat-template)", metavar="FILE", group="model")
    tensor_split: str | None = _flag("-ts", "--tensor-split", help="how the offloaded layers are shared among the devices, as proportions in device order (the --rpc workers first, then local GPUs), e.g. 3,1 (default: by free memory)", metavar="N0,N1,...", group="model")
    device: str | None = _flag("-dev", "--device", help="comma-separated devices to offload to (e.g. RPC0,RPC1; none = do not offload); with --rpc-server the devices the worker serves; --verbose lists them at start", metavar="DEV[,DEV...]", group="model")
    verify: bool = _flag("--verify", help="re-hash the embedded weights, the runtime and its unpacked copy in the cache against their recorded sha256, then continue", default=False, group="model")

    # Prompt and output
    prompt: str | None = _flag("-p", "--prompt", help="the prompt (--cli), or the chat's system prompt when -sys is not given", metavar="TEXT", group="prompt")
    system_prompt: str | None = _flag("-sys", "--system-prompt", help="the chat's system prompt (--chat and the default mode; wins over -p there)", metavar="TEXT", group="prompt")
    escape: bool = _flag("-e", "--escape", help="process the escapes \\n \\r \\t \\' \\\" \\\\ \\xNN in -p and -r, as llama.cpp does; --no-escape takes them as typed (-f files are always read as they are)", default=True, group="prompt", negations=("--no-escape",))
    image: str | None = _flag("--image", "--audio", help="--cli: images or sounds for the prompt (comma-separated, as llama.cpp's mtmd-cli), read through the projector; each goes where -p has a <__media__>, else before the prompt", metavar="FILE[,FILE...]", group="prompt")
    file: str | None = _flag("-f", "--file", help="read the prompt from FILE ('-' reads stdin)", metavar="FILE", group="prompt")
    n_predict: int = _flag("-n", "--n-predict", help="tokens to generate (-1 = until the model stops or the context is full)", default=-1, metavar="N", group="prompt", minimum=-1)
    no_display_prompt: bool = _flag("--no-display-prompt", "--silent-prompt", help="do not echo the prompt before the completion (--cli)", default=False, group="prompt")
    reverse_prompt: tuple[str, ...] | None = _flag("-r", "--reverse-prompt", help="stop generating at TEXT, which is not printed (--cli and the chat); repeat for several", metavar="TEXT", group="prompt")
    special: bool = _flag("-sp", "--special", help="--cli: print special tokens' text (e.g. <|im_end|>, the end-of-generation token included) instead of hiding them", default=False, group="prompt")
    keep: int = _flag("--keep", help="tokens of the initial prompt kept when the context fills: only -1 (all) is supported: the chat always keeps the whole system prompt when it drops the oldest turns, and --cli never shifts the context (it stops when the context is full)", default=-1, metavar="N", group="prompt", minimum=-1)
    verbose_prompt: bool = _flag("--verbose-prompt", help="before generating, log the exact prompt text the model receives and its token count (--cli: the prompt; the chat: the rendered template; the server: each request's)", default=False, group="prompt")

    # Sampling
    temp: float | None = _flag("--temp", "--temperature", help="sampling temperature; 0 = greedy (default: 0.8, 0.0 in chat)", metavar="T", group="sampling", minimum=0.0)
    top_k: int = _flag("--top-k", help="sample among the K most likely tokens (0 = all)", default=40, metavar="K", group="sampling", minimum=0)
    top_p: float = _flag("--top-p", help="nucleus sampling: smallest set with probability >= P", default=0.95, metavar="P", group="sampling", minimum=0.0, maximum=1.0)
    min_p: float = _flag("--min-p", help="drop tokens less likely than P times the most likely one", default=0.05, metavar="P", group="sampling", minimum=0.0, maximum=1.0)
    repeat_penalty: float = _flag("--repeat-penalty", help="penalty for repeated tokens (1.0 = off)", default=1.0, metavar="X", group="sampling", minimum=0.0)
    repeat_last_n: int = _flag("--repeat-last-n", help="how many recent tokens the penalties look at", default=64, metavar="N", group="sampling", minimum=-1)
    presence_penalty: float = _flag("--presence-penalty", help="penalty for tokens already present (0 = off)", default=0.0, metavar="X", group="sampling")
    frequency_penalty: float = _flag("--frequency-penalty", help="penalty growing with a token's count (0 = off)", default=0.0, metavar="X", group="sampling")
    seed: int = _flag("-s", "--seed", help="random seed (-1 = random)", default=-1, metavar="N", group="sampling", minimum=-1)
    grammar: str | None = _flag("--grammar", help="constrain output with a GBNF grammar", metavar="GBNF", group="sampling")
    grammar_file: str | None = _flag("--grammar-file", help="read the GBNF grammar from FILE", metavar="FILE", group="sampling")
    json_schema: str | None = _flag("-j", "--json-schema", help="constrain output to JSON that SCHEMA admits (e.g. '{\"type\": \"object\"}'), converted to a grammar as the server's response_format is", metavar="SCHEMA", group="sampling")
    ignore_eos: bool = _flag("--ignore-eos", help="do not stop at end-of-generation tokens: they get a logit bias of -inf (--cli and the chat)", default=False, group="sampling")

    # Server
    host: str = _flag("--host", help="address the server listens on (several: comma-separated, e.g. 127.0.0.1,::1)", default="127.0.0.1", metavar="ADDR", group="server")
    port: int = _flag("--port", help="port the server listens on (--rpc-server: 50052 unless given)", default=8080, metavar="N", group="server", minimum=0, maximum=65535)
    nobrowser: bool = _flag("--nobrowser", help="do not open a browser when the server starts", default=False, group="server")
    api_key: str | None = _flag("--api-key", help="require 'Authorization: Bearer KEY' on API routes", metavar="KEY", group="server")
    alias: str | None = _flag("-a", "--alias", help="the model's names in the API, comma-separated (/v1/models lists them; the first in sorted order is the id that answers carry and Ollama lists as NAME:latest), instead of the file's name without its extension (this executable's, or -m's)", metavar="NAME[,NAME...]", group="server")
    tags: str | None = _flag("--tags", help="tags listed with the model in /v1/models, comma-separated (informational, as llama-server's)", metavar="TAG[,TAG...]", group="server")
    no_ui: bool = _flag("--no-ui", help="serve no web chat page at / (the API only), as llama-server's --no-ui", default=False, group="server")
    slots: bool = _flag("--slots", help="serve GET /slots (each sequence's state and settings); --no-slots turns it off, as in llama-server", default=True, group="server", negations=("--no-slots",))
    allowed_hosts: str | None = _flag("--allowed-hosts", help="host names the server answers to besides localhost, its IP addresses and --host (a guard against DNS rebinding): comma-separated; *.example.com for subdomains, * for any", metavar="NAME[,NAME...]", group="server")
    cors_origins: str | None = _flag("--cors-origins", help="web pages from these origins may call the API from a browser (CORS; off by default): comma-separated scheme://host[:port], localhost for any page from this machine (http(s)://localhost, 127.0.0.1 or [::1], any port), or * for any", metavar="ORIGIN[,ORIGIN...]", group="server")

    ui_mcp_proxy: bool = _flag("--ui-mcp-proxy", "--webui-mcp-proxy", help="serve /cors-proxy, through which the web page reaches MCP servers that do not allow it (CORS), as llama-server's experimental flag: it fetches URLs a request names, so do not enable it in untrusted environments", default=False, group="server", negations=("--no-ui-mcp-proxy", "--no-webui-mcp-proxy"))

    # Several machines (llama.cpp RPC)
    rpc: str | None = _flag("--rpc", help="use the llama.cpp RPC workers at these addresses (started with --rpc-server, or llama.cpp's rpc-server) as devices: -ngl layers are offloaded to them, shared as -ts says", metavar="HOST:PORT[,HOST:PORT...]", group="rpc")
    rpc_cache: str | None = _flag("--rpc-cache", help="--rpc-server: keep the weights received in DIR, so that the next start receives only their hashes (default: rpc/ in llmpack's cache: $LLMPACK_CACHE, else $XDG_CACHE_HOME/llmpack, else ~/.cache/llmpack)", metavar="DIR", group="rpc")
    no_rpc_cache: bool = _flag("--no-rpc-cache", help="--rpc-server: keep no weights on disk (every start receives them again)", default=False, group="rpc")

    # Logging
    log_disable: bool = _flag("--log-disable", help="no logs or progress on stderr", default=False, group="logging")
    verbose: bool = _flag("--verbose", help="llama.cpp's full log, and tracebacks on errors", default=False, group="logging")
    log_file: str | None = _flag("--log-file", help="also append the logs to FILE (--log-disable silences only stderr)", metavar="FILE", group="logging")

    # llama.cpp flags accepted so that its command lines run unchanged; each says what happens instead.
    jinja: bool = _flag("--jinja", help="accepted for compatibility: chat templates are always Jinja (the GGUF's own, or --chat-template)", default=False, group="compat")
    conversation: bool = _flag("-cnv", "--conversation", help="accepted for compatibility: --chat (or no mode flag on a terminal) is the conversation", default=False, group="compat")
    metrics: bool = _flag("--metrics", help="accepted for compatibility: the server always serves GET /metrics", default=False, group="compat")
    cont_batching: bool = _flag("-cb", "--cont-batching", help="accepted for compatibility: the server always batches continuously (-np sequences at once)", default=False, group="compat")

    ctx_size_given: bool = False  # -c on the command line or among the stored arguments (not a flag itself)

    @property
    def mode(self) -> str | None:
        """The mode flag given, or None (then the caller picks the default mode)."""
        if self.list_devices:
            return "list_devices"
        if self.rpc_server:
            return "rpc_server"
        return next((m for m in MODES if getattr(self, m)), None)

    def mode_flags_given(self) -> bool:
        return any(getattr(self, m) for m in MODES)

    def temperature(self, mode: str) -> float:
        if self.temp is not None:
            return self.temp
        return 0.0 if mode == "chat" else 0.8

    def thread_count(self) -> int:
        return self.threads or default_threads()


GROUP_TITLES = {
    "mode": "Modes",
    "model": "Model and compute",
    "prompt": "Prompt and output",
    "sampling": "Sampling",
    "server": "Server",
    "rpc": "Several machines (llama.cpp RPC)",
    "logging": "Logging",
    "compat": "Accepted for compatibility with llama.cpp (no effect of their own)",
}


def option_fields() -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(Settings) if "flags" in f.metadata]


@dataclass(frozen=True)
class ParsedArgs:
    settings: Settings
    show_help: bool
    show_version: bool


def parse_args(argv: Sequence[str]) -> ParsedArgs:
    """Parses the (already merged) command line. Raises UsageError with one line for the user."""
    line = parse_line(argv, option_fields())
    settings = Settings(**line.values, ctx_size_given="ctx_size" in line.values)
    if sum(getattr(settings, m) for m in MODES) > 1:
        raise UsageError(messages.CONFLICTING_MODES)
    if settings.rpc_server:
        if settings.mode_flags_given():
            raise UsageError(messages.RPC_SERVER_WITH_MODE)
        if "port" not in line.values:  # llama.cpp's rpc-server's port, not the HTTP server's
            settings = dataclasses.replace(settings, port=RPC_SERVER_PORT)
    return ParsedArgs(resolve(settings), line.show_help, line.show_version)


def describe_options(defaults: Settings | None = None) -> str:
    """The OPTIONS section of the man page, generated from the schema. `defaults`: the settings the
    executable's stored arguments give (an executable built with `--args '-c 4096'` shows 4096)."""
    lines: list[str] = []
    for group, title in GROUP_TITLES.items():
        lines.append(f"  {title}:")
        for f in (f for f in option_fields() if f.metadata["group"] == group):
            spelling = ", ".join(f.metadata["flags"])
            if f.metadata["metavar"]:
                spelling += f" {f.metadata['metavar']}"
            value = f.default if defaults is None else getattr(defaults, f.name)
            shown = "on" if value is True else value
            default = "" if value is None or value is False else f" [default: {shown}]"
            lines.append(f"    {spelling}")
            lines.append(f"        {f.metadata['help']}{default}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
