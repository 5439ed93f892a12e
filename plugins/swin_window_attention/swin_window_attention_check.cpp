// Parameter check of the C ABI; compiled into both the host-reference and the CUDA library.
#include "swin_window_attention_index.h"

extern "C" int swin_window_attention_check(SwinAttnParams const* params, char* error, size_t error_size)
{
    if (params == nullptr)
    {
        swin_attn::copyMessage(std::string(swin_attn::kPluginName) + ": params is null", error, error_size);
        return SWIN_ATTN_INVALID_ARGUMENT;
    }
    std::string const reason = swin_attn::checkParams(*params);
    swin_attn::copyMessage(std::string(swin_attn::kPluginName) + ": " + reason, error, error_size);
    return reason.empty() ? SWIN_ATTN_OK : SWIN_ATTN_INVALID_ARGUMENT;
}
