/*
 * Index arithmetic of the SwinWindowAttention node, shared by the CUDA kernel and the host reference so
 * that both follow one definition of the contract (README.md, pipeline/kernels/reference.py; its constants and limits
 * are in the generated swin_window_attention_contract.h):
 * padding to a multiple of the window (bottom/right), cyclic shift by -shift_size after padding, window
 * partition, and the shift-region ids that define the mask; and launchParams, the one function from a node's contract
 * version, runtime qkv dims and attributes to the SwinAttnParams its kernels run with.
 */
#ifndef SWIN_WINDOW_ATTENTION_INDEX_H
#define SWIN_WINDOW_ATTENTION_INDEX_H

#include "swin_window_attention.h"
#include "swin_window_attention_contract.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>

#if defined(__CUDACC__)
#define SWIN_HD __host__ __device__ __forceinline__
#else
#define SWIN_HD inline
#endif

namespace swin_attn
{

//! Length of one axis after padding it up to a multiple of the window.
SWIN_HD int32_t paddedSize(int32_t size, int32_t window)
{
    return (size + window - 1) / window * window;
}

//! Shift region of a coordinate of the shifted, padded map along an axis of padded length `length`:
//! 0 below length - window, 1 below length - shift, else 2 (always 0 without shift).
SWIN_HD int32_t regionOf(int32_t coord, int32_t length, int32_t window, int32_t shift)
{
    if (shift == 0)
    {
        return 0;
    }
    return coord < length - window ? 0 : (coord < length - shift ? 1 : 2);
}

//! Geometry of one node, derived once from its attributes.
struct WindowGeometry
{
    int32_t height;
    int32_t width;
    int32_t window;
    int32_t shift;
    int32_t paddedHeight;
    int32_t paddedWidth;
    int32_t windowsX; //!< windows per row of the padded map
    int32_t numWindows;
    int32_t tokensPerWindow; //!< N = window^2
};

SWIN_HD WindowGeometry makeGeometry(int32_t height, int32_t width, int32_t window, int32_t shift)
{
    WindowGeometry g{};
    g.height = height;
    g.width = width;
    g.window = window;
    g.shift = shift;
    g.paddedHeight = paddedSize(height, window);
    g.paddedWidth = paddedSize(width, window);
    g.windowsX = g.paddedWidth / window;
    g.numWindows = (g.paddedHeight / window) * g.windowsX;
    g.tokensPerWindow = window * window;
    return g;
}

//! Coordinates (y, x) in the shifted, padded map of slot `slot` of window `windowIndex` (row-major windows).
SWIN_HD void slotCoords(WindowGeometry const& g, int32_t windowIndex, int32_t slot, int32_t& y, int32_t& x)
{
    y = (windowIndex / g.windowsX) * g.window + slot / g.window;
    x = (windowIndex % g.windowsX) * g.window + slot % g.window;
}

//! Token index h*W + w (image order) that slot `slot` of window `windowIndex` reads, or -1 for a padded slot.
SWIN_HD int32_t slotSourceToken(WindowGeometry const& g, int32_t windowIndex, int32_t slot)
{
    int32_t y;
    int32_t x;
    slotCoords(g, windowIndex, slot, y, x);
    int32_t const h = (y + g.shift) % g.paddedHeight;
    int32_t const w = (x + g.shift) % g.paddedWidth;
    return (h < g.height && w < g.width) ? h * g.width + w : -1;
}

//! Shift-mask region id (0..8) of a slot; slots with different ids mask each other with kMaskValue.
SWIN_HD int32_t slotRegion(WindowGeometry const& g, int32_t windowIndex, int32_t slot)
{
    int32_t y;
    int32_t x;
    slotCoords(g, windowIndex, slot, y, x);
    return 3 * regionOf(y, g.paddedHeight, g.window, g.shift) + regionOf(x, g.paddedWidth, g.window, g.shift);
}

//! Checks the attributes every contract version has (window_size, shift_size, num_heads). Empty when valid, else the
//! reason (without the op name).
inline std::string checkWindowAttributes(int32_t window, int32_t shift, int32_t numHeads)
{
    if (window <= 0 || shift < 0 || shift >= window)
    {
        return "need window_size > 0 and 0 <= shift_size < window_size, got window_size=" + std::to_string(window)
            + ", shift_size=" + std::to_string(shift);
    }
    if (window > kMaxWindowSize)
    {
        return "window_size=" + std::to_string(window) + " exceeds the supported maximum "
            + std::to_string(kMaxWindowSize);
    }
    if (numHeads <= 0)
    {
        return "need num_heads > 0, got num_heads=" + std::to_string(numHeads);
    }
    return {};
}

//! Checks attributes alone (what a version-1 plugin creator knows). Empty when valid, else the reason (without the
//! op name).
inline std::string checkAttributes(int32_t height, int32_t width, int32_t window, int32_t shift, int32_t numHeads)
{
    if (height <= 0 || width <= 0)
    {
        return "need height > 0 and width > 0, got height=" + std::to_string(height)
            + ", width=" + std::to_string(width);
    }
    return checkWindowAttributes(window, shift, numHeads);
}

//! Checks attributes against the channel count C (from the qkv shape [B, H*W, 3C]).
inline std::string checkChannels(int32_t channels, int32_t numHeads)
{
    if (channels <= 0 || channels % numHeads != 0)
    {
        return "num_heads=" + std::to_string(numHeads) + " does not divide C=" + std::to_string(channels);
    }
    int32_t const headDim = channels / numHeads;
    if (headDim % kHeadDimMultiple != 0 || headDim > kMaxHeadDim)
    {
        return "head_dim = C/num_heads = " + std::to_string(channels) + "/" + std::to_string(numHeads) + " = "
            + std::to_string(headDim) + " is not supported (need a multiple of " + std::to_string(kHeadDimMultiple)
            + " up to " + std::to_string(kMaxHeadDim) + ")";
    }
    return {};
}

//! Checks a full parameter set (attributes, batch and channels).
inline std::string checkParams(SwinAttnParams const& p)
{
    std::string reason = checkAttributes(p.height, p.width, p.window_size, p.shift_size, p.num_heads);
    if (reason.empty() && p.batch <= 0)
    {
        reason = "need batch > 0, got batch=" + std::to_string(p.batch);
    }
    if (reason.empty() && int64_t{p.height} * p.width * 3 * int64_t{p.channels} > INT32_MAX)
    {
        reason = "one image's qkv (H*W*3C elements) exceeds 2^31";
    }
    return reason.empty() ? checkChannels(p.channels, p.num_heads) : reason;
}

//! The contract versions (README.md): kTokens is version 1 (qkv [B, H*W, 3C], height and width attributes), kMap
//! version 2 (qkv [B, H, W, 3C]: H and W come from the tensor at run time).
enum class ContractVersion : int32_t
{
    kTokens,
    kMap
};

//! The version named `text` ("1" or "2"); false for another.
inline bool parseContractVersion(char const* text, ContractVersion& version)
{
    bool const tokens = text != nullptr && std::strcmp(text, kPluginVersion) == 0;
    bool const map = text != nullptr && std::strcmp(text, kMapPluginVersion) == 0;
    version = map ? ContractVersion::kMap : ContractVersion::kTokens;
    return tokens || map;
}

//! The SwinAttnParams the kernels run a node with, from its contract version, qkv's runtime dims and its attributes:
//! the one definition that the plugin's enqueue and the host reference use (pipeline/kernels/reference.py's
//! launch_params is the same, field for field). Version 1: height and width are attributes, the shift as given.
//! Version 2: height and width are qkv's dims 1 and 2, and the shift is dropped where min(H, W) <= window_size, as
//! the model's blocks do. Returns empty and fills `params`, or the reason qkv's dims do not fit the version.
inline std::string launchParams(ContractVersion version, int64_t const* qkvDims, int32_t qkvRank,
    Attributes const& attributes, SwinAttnParams& params)
{
    bool const map = version == ContractVersion::kMap;
    if (qkvDims == nullptr || qkvRank != (map ? kMapQkvRank : kQkvRank))
    {
        return std::string("qkv must be ") + (map ? "[B, H, W, 3C]" : "[B, H*W, 3C]") + " in version "
            + (map ? kMapPluginVersion : kPluginVersion) + ", got rank " + std::to_string(qkvRank);
    }
    for (int32_t i = 0; i < qkvRank; ++i)
    {
        if (qkvDims[i] < 0 || qkvDims[i] > INT32_MAX)
        {
            return "qkv's dimension " + std::to_string(i) + " is " + std::to_string(qkvDims[i]) + ", outside 0..2^31-1";
        }
    }
    params.batch = static_cast<int32_t>(qkvDims[0]);
    params.height = map ? static_cast<int32_t>(qkvDims[1]) : attributes.height;
    params.width = map ? static_cast<int32_t>(qkvDims[2]) : attributes.width;
    params.channels = static_cast<int32_t>(qkvDims[qkvRank - 1] / 3);
    params.num_heads = attributes.numHeads;
    params.window_size = attributes.windowSize;
    bool const smallMap = map && std::min(params.height, params.width) <= attributes.windowSize;
    params.shift_size = smallMap ? 0 : attributes.shiftSize;
    params.scale = attributes.scale;
    return {};
}

//! Copies a message into a caller's C buffer (truncating, always terminated).
inline void copyMessage(std::string const& message, char* buffer, size_t size)
{
    if (buffer == nullptr || size == 0)
    {
        return;
    }
    size_t const n = message.size() < size - 1 ? message.size() : size - 1;
    message.copy(buffer, n);
    buffer[n] = '\0';
}

} // namespace swin_attn

#endif // SWIN_WINDOW_ATTENTION_INDEX_H
