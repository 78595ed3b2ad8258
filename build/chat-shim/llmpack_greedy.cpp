// Greedy decoding's pick, without llama.cpp's sampler chain. llama_sampler_sample first copies every
// logit into a llama_token_data array (12 bytes a token: 3 MB for a 262k vocabulary) and only then
// looks for the largest; that costs about 0.5 ms a token on a 2-core x86-64, 3% of a small model's
// step. The same answer read straight from the logits takes about 40 us. The draft model's confidence
// test (the top token's share among the top k) is read the same way.

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

// The softmax share of the largest logit among the k largest (llama.cpp's speculative draft: top-k,
// then the probabilities among them, kept while the first's reaches p_min). NaNs are passed over.
float top_share(const float * logits, int32_t n, int32_t k) {
    enum { MOST = 64 };
    float top[MOST];  // the k largest so far, in descending order
    k = k < 1 ? 1 : (k > MOST ? MOST : k);
    for (int j = 0; j < k; j++) {
        top[j] = -INFINITY;
    }
    auto offer = [&](float value) {
        if (!(value > top[k - 1])) {
            return;
        }
        int j = k - 1;
        for (; j > 0 && value > top[j - 1]; j--) {
            top[j] = top[j - 1];
        }
        top[j] = value;
    };
    int32_t start = 0;
    for (; start + BLOCK <= n; start += BLOCK) {
        if (block_max(logits + start) > top[k - 1]) {
            for (int32_t i = start; i < start + BLOCK; i++) {
                offer(logits[i]);
            }
        }
    }
    for (int32_t i = start; i < n; i++) {
        offer(logits[i]);
    }
    if (top[0] == -INFINITY) {
        return 0.0f;
    }
    double total = 0.0;
    for (int j = 0; j < k; j++) {
        total += std::exp(double(top[j]) - double(top[0]));
    }
    return float(1.0 / total);
}

}  // namespace

// The greedy token for output `idx` of the context's last decode (llama_get_logits_ith's index), as a
// chain holding only llama_sampler_init_greedy would pick it; -1 where that output has no logits.
LLMPACK_API int32_t llmpack_greedy_token(llama_context * ctx, int32_t idx) {
    const float * logits = llama_get_logits_ith(ctx, idx);
    if (logits == nullptr) {
        return -1;
    }
    const int32_t n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(llama_get_model(ctx)));
    return n_vocab > 0 ? first_argmax(logits, n_vocab) : -1;
}

// The top token's share among the k largest logits of output `idx` (see top_share); -1 where that
// output has no logits.
LLMPACK_API float llmpack_top_share(llama_context * ctx, int32_t idx, int32_t k) {
    const float * logits = llama_get_logits_ith(ctx, idx);
    if (logits == nullptr) {
        return -1.0f;
    }
    const int32_t n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(llama_get_model(ctx)));
    return n_vocab > 0 ? top_share(logits, n_vocab, k) : -1.0f;
}

// For tests: the same two over any array.
LLMPACK_API int32_t llmpack_first_argmax(const float * logits, int32_t n) {
    return n > 0 ? first_argmax(logits, n) : -1;
}

LLMPACK_API float llmpack_top_share_of(const float * logits, int32_t n, int32_t k) {
    return n > 0 ? top_share(logits, n, k) : -1.0f;
}
