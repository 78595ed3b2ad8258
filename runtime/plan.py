"""Settings resolved once, before any mode starts: the engine's configuration, the sampling each part
generates with, the grammar (read and checked once), the chat's system prompt and a --chat-template
compiled once. Modes receive a `Plan` and never turn flags into decisions themselves, so the three modes
cannot disagree about what a flag means, and a bad flag fails before the weights load."""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass

from . import messages
from .engine.types import DraftConfig, EngineConfig, SamplingParams, SpeculativeConfig
from .errors import UsageError
from .flags.settings import Settings
from .flags.values import device_names, rpc_endpoints, tensor_split
from .sampling import grammar_text, sampling_from_settings

log = logging.getLogger(__name__)

# Modes whose engine serves HTTP requests, -np sequences decoded together (the default mode's chat is one).
SERVING_MODES = ("server", "default")


@dataclass(frozen=True)
class Plan:
    settings: Settings
    mode: str  # "cli" | "chat" | "server" | "default"
    engine: EngineConfig
    # What the terminal generates with (--cli, the chat): the mode's temperature, --ignore-eos, --grammar.
    sampling: SamplingParams
    # The defaults of an HTTP request (--server, and the default mode's background server).
    server_sampling: SamplingParams
    system_prompt: str | None
    names: ModelNames = dataclasses.field(default_factory=lambda: ModelNames())


@dataclass(frozen=True)
class ModelNames:
    """What clients call the model: /v1/models' id and aliases, Ollama's NAME:latest, responses' `model`,
    the chat's banner. The GGUF's `general.name` ("Smollm2 135M 8k Lc100K Mix1 Ep2") is no name to send
    back: it stays in /props and --version."""

    aliases: tuple[str, ...] = ()  # the first is the id; none: the GGUF's own name (an engine with no file)
    tags: tuple[str, ...] = ()  # --tags: informational, listed in /v1/models

    def id(self, gguf_name: str) -> str:
        return self.aliases[0] if self.aliases else gguf_name


def model_names(settings: Settings, executable: str | None = None) -> ModelNames:
    """-a/--alias (comma-separated, as llama-server takes it; its first in sorted order is the id, as
    llama-server's std::set makes it), else the file the weights come from, named as llama-server and
    llamafile name a model: `-m FILE`'s name, else this executable's, without its extension."""
    tags = tuple(sorted({t.strip() for t in (settings.tags or "").split(",") if t.strip()}))
    aliases = tuple(sorted({a.strip() for a in (settings.alias or "").split(",") if a.strip()}))
    if not aliases:
        path = settings.model or executable
        if path:
            base = os.path.basename(path)
            stem, extension = os.path.splitext(base)
            aliases = (stem if stem and extension else base,)
    return ModelNames(aliases, tags)


def resolve(settings: Settings, mode: str, executable: str | None = None) -> Plan:
    """Raises UserError (one line for the user) for any flag that cannot work in this mode.
    `executable`: the file the launcher started (None when unbundled), which names the model."""
    if mode == "cli" and settings.system_prompt is not None:
        raise UsageError(messages.SYSTEM_PROMPT_IN_CLI)
    if settings.chat_template:
        # Jinja is imported only to check a --chat-template: --cli, like most starts, never renders one.
        from .formats.chat_template import check_override

        check_override(settings.chat_template)
    if settings.rpc is not None and mode != "rpc_server":
        from .engine.rpc import connect_workers

        # Now, before a server listens: an unreachable worker is one line and exit 1, and the workers'
        # devices are known to the start's checks (-ngl without a GPU) and banner.
        connect_workers(rpc_endpoints(settings.rpc))
        if settings.n_gpu_layers == 0:
            log.warning(messages.RPC_WITHOUT_LAYERS)
    if settings.device:
        from .engine.devices import by_names

        by_names(device_names(settings.device), allow_cpu=mode == "rpc_server")  # -dev's names, checked now
    grammar = grammar_text(settings)
    terminal_mode = "chat" if mode == "default" else mode
    sampling = dataclasses.replace(sampling_from_settings(settings, terminal_mode, grammar),
                                   ignore_eos=settings.ignore_eos)
    return Plan(settings=settings, mode=mode,
                engine=engine_config(settings, settings.parallel if mode in SERVING_MODES else 1, mode),
                sampling=sampling, server_sampling=server_sampling(settings, grammar),
                system_prompt=chat_system_prompt(settings), names=model_names(settings, executable))


def chat_system_prompt(settings: Settings) -> str | None:
    """-sys is the chat's system prompt; -p doubled as it before -sys existed, and still does."""
    return settings.system_prompt if settings.system_prompt is not None else settings.prompt


def server_sampling(settings: Settings, grammar: str | None) -> SamplingParams:
    """The server's request defaults: -r, --ignore-eos and --special are the terminal's, not the API's."""
    return sampling_from_settings(settings, "server", grammar)


def engine_config(settings: Settings, n_seq_max: int = 1, mode: str = "cli") -> EngineConfig:
    return EngineConfig(
        n_ctx=settings.ctx_size,
        n_ctx_given=settings.ctx_size_given,
        n_batch=settings.batch_size,
        n_threads=settings.thread_count(),
        n_gpu_layers=settings.n_gpu_layers,
        use_mmap=not settings.no_mmap,
        repack=not settings.no_repack,
        use_mlock=settings.mlock,
        n_seq_max=n_seq_max,
        kv_unified=settings.kv_unified,
        kv_unified_per_slot=settings.kv_unified_per_slot,
        cache_ram_mib=settings.cache_ram,
        speculative=SpeculativeConfig(settings.spec_ngram_simple_size_n, settings.spec_ngram_simple_size_m)
        if "ngram-simple" in settings.spec_type else None,
        draft=draft_config(settings),
        embeddings=settings.embedding or settings.reranking,  # llama-server: --reranking turns embeddings on
        pooling="rank" if settings.reranking else settings.pooling,
        n_ubatch=settings.ubatch_size,
        n_threads_batch=settings.threads_batch or settings.thread_count(),
        flash_attn=settings.flash_attn,
        type_k=settings.cache_type_k,
        type_v=settings.cache_type_v,
        warmup=not settings.no_warmup,
        rpc_servers=rpc_endpoints(settings.rpc) if settings.rpc else (),
        tensor_split=tensor_split(settings.tensor_split) if settings.tensor_split else (),
        devices=device_names(settings.device) if settings.device is not None else None,
        split_mode=settings.split_mode,
        main_gpu=settings.main_gpu,
        survive_lost_worker=mode == "server",
        mmproj=None if settings.no_mmproj else settings.mmproj,  # the embedded one: runtime/bundle/model_loader.py
        mmproj_offload=settings.mmproj_offload,
    )


def draft_config(settings: Settings) -> DraftConfig | None:
    """-md's draft model (the executable's own is put in by runtime/bundle/draft_payload.py, which also
    refuses --spec-type draft-simple without either)."""
    if not settings.model_draft:
        return None
    return DraftConfig(settings.model_draft, 0, settings.draft_max, settings.draft_min, settings.draft_p_min,
                       settings.gpu_layers_draft)
