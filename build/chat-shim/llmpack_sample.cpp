// Reads of one output's logits that llama.cpp's sampler chain makes slow. llama_sampler_sample first
// copies every logit into a llama_token_data array (12 bytes a token: 3 MB for a 262k vocabulary), and
// its top-k sampler then sorts that array; for a small model's step of 15 ms on a 2-core x86-64 that is
// 0.4-0.5 ms a token, 3%. Here the same answers are read straight from the logits:
// - greedy decoding's pick (the chain holds the greedy sampler alone, or after a logit bias), 40 us;
// - sampled decoding's top k candidates, in the order llama.cpp's top-k sampler leaves them, handed to
//   the request's own chain (top-k, top-p, min-p, temperature, dist), which picks among those k;
// - the draft model's confidence test (the top token's share among the top k);
// - log-probabilities (a token's and the top n's), which Python had computed at 50 ms a token.

#include "llmpack_api.h"

#include "llama.h"

#include <cmath>
#include <cstdint>

namespace {

enum { LANES = 16, BLOCK = 256 };

// The largest of a block's BLOCK values (-inf where all are NaN or -inf), in independent lanes, which
// compilers vectorize.
float block_max(const float * block) {
    float lane_max[LANES];
    for (int j = 0; j < LANES; j++) {
        lane_max[j] = -INFINITY;
    }
    for (int k = 0; k < BLOCK; k += LANES) {
        for (int j = 0; j < LANES; j++) {
            lane_max[j] = block[k + j] > lane_max[j] ? block[k + j] : lane_max[j];
        }
    }
    float largest = lane_max[0];
    for (int j = 1; j < LANES; j++) {
        largest = lane_max[j] > largest ? lane_max[j] : largest;
    }
    return largest;
}

// The first index of the largest logit, with llama_sampler_greedy_apply's rule: a later logit must be
// strictly larger to win, so ties go to the lower token and a NaN never wins (one at index 0 stays,
// as there). Only a block that beats the best so far is scanned again for its index.
int32_t first_argmax(const float * logits, int32_t n) {
    int32_t best = 0;
    float best_logit = logits[0];
    int32_t start = 1;
    for (; start + BLOCK <= n; start += BLOCK) {
        const float largest = block_max(logits + start);
        if (largest > best_logit) {
            int32_t i = start;
            while (logits[i] != largest) {
                i++;
            }
            best = i;
            best_logit = largest;
        }
    }
    for (int32_t i = start; i < n; i++) {
        if (logits[i] > best_logit) {
            best = i;
            best_logit = logits[i];
        }
    }
    return best;
}

// The k largest logits (k <= MOST), in descending order and of equal ones the lower token first, into
// `out`; false where fewer than k logits are above -inf. NaNs are passed over.
enum { MOST = 128 };

bool top_candidates(const float * logits, int32_t n, int32_t k, llama_token_data * out) {
    for (int j = 0; j < k; j++) {
        out[j] = llama_token_data{ -1, -INFINITY, 0.0f };
    }
    auto offer = [&](int32_t id) {
        const float logit = logits[id];
        if (!(logit > out[k - 1].logit)) {
            return;
        }
        int j = k - 1;
        for (; j > 0 && logit > out[j - 1].logit; j--) {
            out[j] = out[j - 1];
        }
        out[j] = llama_token_data{ id, logit, 0.0f };
    };
    int32_t start = 0;
    for (; start + BLOCK <= n; start += BLOCK) {
        if (block_max(logits + start) > out[k - 1].logit) {
            for (int32_t i = start; i < start + BLOCK; i++) {
                offer(i);
            }
        }
    }
    for (int32_t i = start; i < n; i++) {
        offer(i);
    }
    return out[k - 1].id >= 0;
}

// The softmax share of the largest logit among the k largest (llama.cpp's speculative draft: top-k,
// then the probabilities among them, kept while the first's reaches p_min).
float top_share(const float * logits, int32_t n, int32_t k) {
    llama_token_data top[MOST];
    k = k < 1 ? 1 : (k > MOST ? MOST : k);
    top_candidates(logits, n, k, top);  // fewer than k above -inf: the rest are -inf and weigh nothing
    if (top[0].id < 0) {
        return 0.0f;
    }
    double total = 0.0;
    for (int j = 0; j < k && top[j].id >= 0; j++) {
        total += std::exp(double(top[j].logit) - double(top[0].logit));
    }
    return float(1.0 / total);
}

// The log of the softmax's denominator: max + log(sum(exp(x - max))), summed in double (a NaN logit
// makes it NaN, whichever the max).
double log_total(const float * logits, int32_t n) {
    const float peak = logits[first_argmax(logits, n)];
    double total = 0.0;
    for (int32_t i = 0; i < n; i++) {
        total += std::exp(logits[i] - peak);
    }
    return double(peak) + std::log(total);
}

// Output `idx`'s logits from the context's last decode (llama_get_logits_ith's index) and their number,
// the vocabulary's size; null where that output has none.
float * output_logits(llama_context * ctx, int32_t idx, int32_t * n_vocab) {
    *n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(llama_get_model(ctx)));
    float * logits = llama_get_logits_ith(ctx, idx);
    return *n_vocab > 0 ? logits : nullptr;
}

}  // namespace

// The greedy token for output `idx` (output_logits), as a chain holding only llama_sampler_init_greedy
// would pick it; -1 where that output has no logits.
LLMPACK_API int32_t llmpack_greedy_token(llama_context * ctx, int32_t idx) {
    int32_t n_vocab;
    const float * logits = output_logits(ctx, idx, &n_vocab);
    return logits ? first_argmax(logits, n_vocab) : -1;
}

// The top token's share among the k largest logits of output `idx` (see top_share); -1 where that
// output has no logits.
LLMPACK_API float llmpack_top_share(llama_context * ctx, int32_t idx, int32_t k) {
    int32_t n_vocab;
    const float * logits = output_logits(ctx, idx, &n_vocab);
    return logits ? top_share(logits, n_vocab, k) : -1.0f;
}

// llmpack_greedy_token after a logit bias (llama.cpp's logit-bias sampler first in the chain, as
// --ignore-eos and OpenAI's logit_bias make it): each listed token's logit gets its bias added for the
// pick and back after it (the logits are this context's output buffer, read by this thread alone).
// Tokens outside the vocabulary are passed over, as there.
LLMPACK_API int32_t llmpack_greedy_token_biased(llama_context * ctx, int32_t idx, const int32_t * tokens,
                                                const float * biases, int32_t n_biases) {
    int32_t n_vocab;
    float * logits = output_logits(ctx, idx, &n_vocab);
    if (logits == nullptr || n_biases < 0 || n_biases > 4096) {
        return -1;
    }
    float saved[4096];
    for (int32_t j = 0; j < n_biases; j++) {
        if (tokens[j] >= 0 && tokens[j] < n_vocab) {
            saved[j] = logits[tokens[j]];
        }
    }
    for (int32_t j = 0; j < n_biases; j++) {
        if (tokens[j] >= 0 && tokens[j] < n_vocab) {
            logits[tokens[j]] += biases[j];
        }
    }
    const int32_t token = first_argmax(logits, n_vocab);
    for (int32_t j = 0; j < n_biases; j++) {  // every saving was made before any bias was added
        if (tokens[j] >= 0 && tokens[j] < n_vocab) {
            logits[tokens[j]] = saved[j];
        }
    }
    return token;
}

// Samples output `idx` with `chain`, a chain that begins with llama.cpp's top-k sampler (k <= 128) and
// holds nothing before it that looks at every logit (no penalties, bias or grammar): the k candidates
// are given to the chain already sorted, as its top-k sampler leaves them, so the chain only picks among
// them (and accepts the token, as llama_sampler_sample does). The same distribution as sampling the
// whole vocabulary; among equal logits the lower token comes first (std::partial_sort leaves their order
// unspecified). -1, the chain untouched, where this cannot be done (fewer than k logits above -inf).
LLMPACK_API int32_t llmpack_sample_top_k(llama_sampler * chain, llama_context * ctx, int32_t idx, int32_t k) {
    int32_t n_vocab;
    const float * logits = output_logits(ctx, idx, &n_vocab);
    if (logits == nullptr || k < 1 || k > MOST) {
        return -1;
    }
    llama_token_data candidates[MOST];
    if (n_vocab < k || !top_candidates(logits, n_vocab, k, candidates)) {
        return -1;
    }
    llama_token_data_array array = { candidates, size_t(k), -1, true };
    llama_sampler_apply(chain, &array);
    if (array.selected < 0 || array.selected >= int64_t(array.size)) {
        return -1;
    }
    const llama_token token = array.data[array.selected].id;
    llama_sampler_accept(chain, token);
    return token;
}

// The log-softmax of output `idx`: `token`'s log-probability into *token_logprob, and the `top` most
// likely tokens (of equal ones the lower first) with theirs into top_tokens and top_logprobs. Returns
// `top`, or -1 where this cannot be done (no logits, top above 128, fewer than `top` above -inf).
LLMPACK_API int32_t llmpack_logprobs(llama_context * ctx, int32_t idx, int32_t token, int32_t top,
                                     double * token_logprob, int32_t * top_tokens, double * top_logprobs) {
    int32_t n_vocab;
    const float * logits = output_logits(ctx, idx, &n_vocab);
    if (logits == nullptr || token < 0 || token >= n_vocab || top < 0 || top > MOST || top > n_vocab) {
        return -1;
    }
    llama_token_data best[MOST];
    if (top > 0 && !top_candidates(logits, n_vocab, top, best)) {
        return -1;
    }
    const double total = log_total(logits, n_vocab);
    *token_logprob = double(logits[token]) - total;
    for (int j = 0; j < top; j++) {
        top_tokens[j] = best[j].id;
        top_logprobs[j] = double(best[j].logit) - total;
    }
    return top;
}

// For tests: the same reads over any array.
LLMPACK_API int32_t llmpack_first_argmax(const float * logits, int32_t n) {
    return n > 0 ? first_argmax(logits, n) : -1;
}

LLMPACK_API double llmpack_log_total_of(const float * logits, int32_t n) {
    return n > 0 ? log_total(logits, n) : NAN;
}

LLMPACK_API float llmpack_top_share_of(const float * logits, int32_t n, int32_t k) {
    return n > 0 ? top_share(logits, n, k) : -1.0f;
}

// The k largest logits' tokens, in the order llmpack_sample_top_k gives them to the chain; false where
// fewer than k are above -inf.
LLMPACK_API bool llmpack_top_candidates(const float * logits, int32_t n, int32_t k, int32_t * tokens) {
    llama_token_data top[MOST];
    if (n < k || k < 1 || k > MOST || !top_candidates(logits, n, k, top)) {
        return false;
    }
    for (int j = 0; j < k; j++) {
        tokens[j] = top[j].id;
    }
    return true;
}
