// Internal launcher of the SwinWindowAttention CUDA kernel, used by the plugin and by the C ABI.
#ifndef SWIN_WINDOW_ATTENTION_KERNEL_H
#define SWIN_WINDOW_ATTENTION_KERNEL_H

#include "swin_window_attention.h"

#include <cuda_runtime_api.h>

#include <string>

namespace swin_attn
{

//! The launch's checks shared by every kernel: the node contract, the dtype, non-null 16-byte aligned pointers.
//! Returns SWIN_ATTN_OK, or SWIN_ATTN_INVALID_ARGUMENT with `error` saying why.
int checkLaunch(SwinAttnParams const& params, int dtype, void const* qkv, void const* relBias, void const* qkvBias,
    void const* out, std::string& error);

//! Launches one kernel for the whole node on `stream` (asynchronous). Returns a SwinAttnStatus; on failure
//! `error` says why. `dtype` is SWIN_ATTN_FLOAT32 or SWIN_ATTN_FLOAT16 for all four tensors.
int launchWindowAttention(SwinAttnParams const& params, int dtype, void const* qkv, void const* relBias,
    void const* qkvBias, void* out, cudaStream_t stream, std::string& error);

} // namespace swin_attn

#endif // SWIN_WINDOW_ATTENTION_KERNEL_H
