"""Log-probabilities of one output's tokens (OpenAI's logprobs, llama.cpp's n_probs, Ollama's logprobs):
the log-softmax of a batch position's logits, for the token taken and the most likely ones."""

from __future__ import annotations

import heapq
import math

from ..formats.llama_chat import logit_reads
from .native import llama
from .types import TokenLogprob


def log_probabilities(context, n_vocab: int, batch_index: int, token: int, top: int) -> TokenLogprob:
    """`token`'s log-probability and the `top` most likely tokens' at `batch_index`. Read by our library
    (1-2 ms a token on a 262k vocabulary); plain Python where it cannot (more than 128, or no library;
    no numpy in the frozen runtime: 50 ms a token there). Paid only by requests that ask for them."""
    reads = logit_reads()
    found = reads.logprobs(context, batch_index, token, top) if reads else None
    if found is not None:
        return TokenLogprob(token, found[0], found[1])
    logits = llama.llama_get_logits_ith(context, batch_index)[:n_vocab]  # Python floats, copied in C
    peak = max(logits)
    log_total = peak + math.log(math.fsum(math.exp(x - peak) for x in logits))
    best = heapq.nlargest(top, range(n_vocab), key=logits.__getitem__) if top > 0 else []
    return TokenLogprob(token, logits[token] - log_total, tuple((t, logits[t] - log_total) for t in best))
