// Host float32 reference of the SwinWindowAttention node: plain C++, no CUDA, so CI can run it.
// It walks the same index functions as the kernel (swin_window_attention_index.h); sums are in double
// so the reference is at least as accurate as any float32 implementation it is compared with.
#include "swin_window_attention_index.h"

#include <algorithm>
#include <cmath>
#include <vector>

extern "C" int swin_window_attention_reference(SwinAttnParams const* params, float const* qkv, float const* rel_bias,
    float const* qkv_bias, float* out, char* error, size_t error_size)
{
    int const status = swin_window_attention_check(params, error, error_size);
    if (status != SWIN_ATTN_OK)
    {
        return status;
    }
    if (qkv == nullptr || rel_bias == nullptr || qkv_bias == nullptr || out == nullptr)
    {
        swin_attn::copyMessage(std::string(swin_attn::kPluginName) + ": a data pointer is null", error, error_size);
        return SWIN_ATTN_INVALID_ARGUMENT;
    }
    SwinAttnParams const& p = *params;
    swin_attn::WindowGeometry const g = swin_attn::makeGeometry(p.height, p.width, p.window_size, p.shift_size);
    int32_t const n = g.tokensPerWindow;
    int32_t const c = p.channels;
    int32_t const headDim = c / p.num_heads;
    int64_t const tokens = int64_t{p.height} * p.width;

    std::vector<int32_t> source(n);
    std::vector<int32_t> region(n);
    std::vector<double> scores(n);
    for (int32_t b = 0; b < p.batch; ++b)
    {
        float const* qkvImage = qkv + b * tokens * 3 * c;
        float* outImage = out + b * tokens * c;
        for (int32_t w = 0; w < g.numWindows; ++w)
        {
            for (int32_t i = 0; i < n; ++i)
            {
                source[i] = swin_attn::slotSourceToken(g, w, i);
                region[i] = swin_attn::slotRegion(g, w, i);
            }
            // Row of q, k or v (part 0, 1, 2) of slot i for head `head`: the token's, or qkv_bias if padded.
            auto row = [&](int32_t slot, int32_t part, int32_t head) {
                float const* base = source[slot] >= 0 ? qkvImage + int64_t{source[slot]} * 3 * c : qkv_bias;
                return base + part * c + head * headDim;
            };
            for (int32_t head = 0; head < p.num_heads; ++head)
            {
                float const* bias = rel_bias + int64_t{head} * n * n;
                for (int32_t i = 0; i < n; ++i)
                {
                    if (source[i] < 0)
                    {
                        continue; // padded query slots are dropped from the output
                    }
                    float const* q = row(i, 0, head);
                    double maxScore = -INFINITY;
                    for (int32_t j = 0; j < n; ++j)
                    {
                        float const* k = row(j, 1, head);
                        double dot = 0.0;
                        for (int32_t d = 0; d < headDim; ++d)
                        {
                            dot += double{q[d]} * k[d];
                        }
                        double s = p.scale * dot + bias[i * n + j];
                        if (region[i] != region[j])
                        {
                            s += swin_attn::kMaskValue;
                        }
                        scores[j] = s;
                        maxScore = std::max(maxScore, s);
                    }
                    double sum = 0.0;
                    for (int32_t j = 0; j < n; ++j)
                    {
                        scores[j] = std::exp(scores[j] - maxScore);
                        sum += scores[j];
                    }
                    float* o = outImage + int64_t{source[i]} * c + head * headDim;
                    for (int32_t d = 0; d < headDim; ++d)
                    {
                        double acc = 0.0;
                        for (int32_t j = 0; j < n; ++j)
                        {
                            acc += scores[j] * row(j, 2, head)[d];
                        }
                        o[d] = static_cast<float>(acc / sum);
                    }
                }
            }
        }
    }
    return SWIN_ATTN_OK;
}

extern "C" int swin_window_attention_node_reference(char const* version, int64_t const* qkv_dims, int32_t qkv_rank,
    SwinAttnAttributes const* attributes, float const* qkv, float const* rel_bias, float const* qkv_bias, float* out,
    char* error, size_t error_size)
{
    SwinAttnParams params{};
    int const status
        = swin_window_attention_launch_params(version, qkv_dims, qkv_rank, attributes, &params, error, error_size);
    if (status != SWIN_ATTN_OK)
    {
        return status;
    }
    // The reference reads B*H*W tokens: in version 1 the token count is not a launch param, so check it here.
    if (qkv_rank == swin_attn::kQkvRank && qkv_dims[1] != int64_t{params.height} * params.width)
    {
        swin_attn::copyMessage(std::string(swin_attn::kPluginName) + ": qkv has " + std::to_string(qkv_dims[1])
                + " tokens but height*width = " + std::to_string(params.height) + "*" + std::to_string(params.width),
            error, error_size);
        return SWIN_ATTN_INVALID_ARGUMENT;
    }
    // [B, H, W, 3C] is laid out as [B, H*W, 3C]: the map layout runs the same reference at its launch params.
    return swin_window_attention_reference(&params, qkv, rel_bias, qkv_bias, out, error, error_size);
}
