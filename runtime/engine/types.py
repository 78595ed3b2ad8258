"""The engine's vocabulary: what front ends hand it and what it streams back (plain dataclasses, no
llama.cpp). `runtime.engine` re-exports them."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ModelSource:
    """Where the GGUF is: a loose file (offset 0) or a byte range inside a larger file."""

    path: str
    offset: int = 0


@dataclass(frozen=True)
class EngineConfig:
    n_ctx: int = 8192  # the whole KV cache, shared by all sequences
    n_ctx_given: bool = True  # -c was typed (or stored): honoured beyond the training context
    n_batch: int = 2048
    n_threads: int = 1
    n_gpu_layers: int = 0  # -1: auto (every layer on the GPUs found, fitted to their free memory)
    use_mmap: bool = True
    repack: bool = True  # llama.cpp's extra buffer types: weights repacked for this CPU (-nr turns it off)
    use_mlock: bool = False
    n_seq_max: int = 1  # requests decoded together (the server's -np)
    # One KV pool shared by the sequences (llama.cpp's unified cache, -kvu), else -c split into -np shares.
    kv_unified: bool = False
    kv_unified_per_slot: int = 0  # the most one sequence of the pool may hold (0: the whole pool)
    cache_ram_mib: int = 0  # --cache-ram: host memory for idle sequences' KV states (-1: no limit, 0: off)
    speculative: "SpeculativeConfig | None" = None  # --spec-type: drafting without a second model
    draft: "DraftConfig | None" = None  # -md: a draft model (runtime/engine/draft_model.py)
    embeddings: bool = False
    n_ubatch: int = 512  # tokens computed in one go (capped at n_batch)
    n_threads_batch: int = 0  # threads for prompt processing; 0: n_threads
    flash_attn: str = "auto"  # "on" | "off" | "auto"
    type_k: str = "f16"  # KV cache data types: keys of KV_CACHE_TYPES
    type_v: str = "f16"
    warmup: bool = True  # an empty decode at start, as llama.cpp does, so the weights are paged in
    pooling: str | None = None  # a key of POOLING_TYPES (--pooling; "rank" for --reranking); None: the model's
    rpc_servers: tuple[str, ...] = ()  # --rpc: llama.cpp RPC workers (HOST:PORT) that become devices
    tensor_split: tuple[float, ...] = ()  # -ts: the offloaded layers' shares, in device order
    devices: tuple[str, ...] | None = None  # -dev: the devices to offload to; None: llama.cpp's choice
    split_mode: str = "layer"  # -sm: none, layer or row
    main_gpu: int = 0  # -mg: the offload device that holds everything with -sm none
    # A lost RPC worker fails the requests at hand and later ones, and the process keeps running (a
    # server, reporting unhealthy); else the process exits with one line (a terminal has no one else).
    survive_lost_worker: bool = False
    mmproj: str | None = None  # a projector GGUF (images, audio: runtime/engine/multimodal.py), or None
    mmproj_offload: bool = True  # the projector on the GPU where there is one (--no-mmproj-offload: the CPU)


@dataclass(frozen=True)
class SpeculativeConfig:
    """N-gram speculation (llama-server's --spec-type ngram-simple): the last `size_n` tokens looked up
    earlier in the sequence, and up to `size_m` tokens that followed them there proposed as a draft."""

    size_n: int = 12  # --spec-ngram-simple-size-n
    size_m: int = 48  # --spec-ngram-simple-size-m


@dataclass(frozen=True)
class DraftConfig:
    """A draft model (-md, or the one in the executable), and llama-server's --spec-draft-* settings
    (this llama.cpp's defaults)."""

    path: str
    offset: int = 0  # where its GGUF starts in `path` (one carried in the executable)
    n_max: int = 3  # --spec-draft-n-max: tokens drafted at most per step
    n_min: int = 0  # --spec-draft-n-min: a shorter draft is dropped
    p_min: float = 0.0  # --spec-draft-p-min: drafting stops below this probability (among the top 10)
    n_gpu_layers: int = -1  # -ngld: -1 = every layer where there is a GPU


# The KV cache types llama.cpp's -ctk/-ctv accept (common/arg.cpp kv_cache_types), and their ggml ids.
KV_CACHE_TYPES = {"f32": 0, "f16": 1, "bf16": 30, "q8_0": 8, "q4_0": 2, "q4_1": 3, "iq4_nl": 20, "q5_0": 6, "q5_1": 7}
QUANTIZED_CACHE_TYPES = frozenset(KV_CACHE_TYPES) - {"f32", "f16", "bf16"}
# llama.cpp's enum llama_pooling_type, by --pooling's names.
POOLING_TYPES = {"none": 0, "mean": 1, "cls": 2, "last": 3, "rank": 4}


@dataclass(frozen=True)
class FimTokens:
    """The model's fill-in-the-middle tokens (llama_vocab_fim_*); None where the vocabulary has none."""

    pre: int | None = None
    suf: int | None = None
    mid: int | None = None
    rep: int | None = None
    sep: int | None = None

    @property
    def complete(self) -> bool:
        return None not in (self.pre, self.suf, self.mid)


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int = -1
    grammar: str | None = None
    ignore_eos: bool = False  # end-of-generation tokens get a logit bias of -inf
    # Lazy grammar (tool calls in `auto`): regular expressions over the text generated so far; the
    # grammar applies once one matches, from its first group on. Empty: the grammar applies throughout.
    grammar_triggers: tuple[str, ...] = ()
    # A thinking model's budget: llama.cpp's reasoning budget sampler's parameters (JSON: the thought's
    # tags, the budget in tokens, its message; runtime/formats/llama_chat.py), or None.
    reasoning_budget: str | None = None
    # A tool-call grammar of llama.cpp's chat library starts at the generation prompt: its text, which
    # the grammar is given first (as llama.cpp's common sampler prefills it). Empty: none.
    grammar_prefill: str = ""
    # (token id, bias) added to the logits, as OpenAI's logit_bias; -inf bans the token.
    logit_bias: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class GenerationRequest:
    prompt_tokens: tuple[int, ...]
    max_tokens: int = -1  # -1: until end of generation or a full context
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: tuple[str, ...] = ()
    # None: no log-probabilities; k >= 0: each token's own, plus the k most likely alternatives.
    logprobs: int | None = None
    special: bool = False  # special tokens' text in the pieces (the end-of-generation token's too)
    # multimodal.MediaPrompt: the image and audio chunks behind the prompt's negative placeholder ids.
    media: object = None
    # The terminal chat's: when the KV pool is full, API requests give way to it (runtime/engine/pool.py).
    interactive: bool = False


@dataclass(frozen=True)
class TokenLogprob:
    """A generated token's log-probability under the model (before sampling's truncation), and the most
    likely alternatives at that step as (token id, log-probability), most likely first."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class Timings:
    prompt_tokens: int
    cached_tokens: int
    prompt_ms: float
    generated_tokens: int
    generation_ms: float

    @property
    def prompt_per_second(self) -> float:
        evaluated = self.prompt_tokens - self.cached_tokens
        return evaluated / (self.prompt_ms / 1000) if self.prompt_ms > 0 else 0.0

    @property
    def generation_per_second(self) -> float:
        return self.generated_tokens / (self.generation_ms / 1000) if self.generation_ms > 0 else 0.0


@dataclass(frozen=True)
class Piece:
    """One step of a generation: new text (possibly empty while a UTF-8 character or a possible stop
    string is held back), the token ids behind it, and on the last piece the finish reason and timings."""

    text: str
    token_ids: tuple[int, ...] = ()
    finish_reason: str | None = None  # "stop" | "length" | "cancelled"
    timings: Timings | None = None
    logprobs: tuple[TokenLogprob, ...] = ()  # one per token id, when the request asked for them
    stop: str | None = None  # on the last piece: the stop string that ended the generation, if one did
