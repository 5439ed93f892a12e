// C ABI wrapper of the launcher (libswin_window_attention_cuda.so): the CUDA or the Triton kernel, as
// SWIN_ATTN_KERNEL or the selection table says (swin_window_attention_triton.h).
#include "swin_window_attention_index.h"
#include "swin_window_attention_triton.h"

extern "C" int swin_window_attention_forward(SwinAttnParams const* params, int dtype, void const* qkv,
    void const* rel_bias, void const* qkv_bias, void* out, CUstream_st* stream, char* error, size_t error_size)
{
    if (params == nullptr)
    {
        swin_attn::copyMessage(std::string(swin_attn::kPluginName) + ": params is null", error, error_size);
        return SWIN_ATTN_INVALID_ARGUMENT;
    }
    std::string message;
    int const status = swin_attn::launchSelectedKernel(*params, dtype, qkv, rel_bias, qkv_bias, out, stream, message);
    swin_attn::copyMessage(message, error, error_size);
    return status;
}
