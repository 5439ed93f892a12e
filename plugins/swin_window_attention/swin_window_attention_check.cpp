// Parameter check and launch params of the C ABI; compiled into both the host-reference and the CUDA library.
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

extern "C" int swin_window_attention_launch_params(char const* version, int64_t const* qkv_dims, int32_t qkv_rank,
    SwinAttnAttributes const* attributes, SwinAttnParams* params, char* error, size_t error_size)
{
    std::string const op = std::string(swin_attn::kPluginName) + ": ";
    swin_attn::ContractVersion contractVersion;
    if (!swin_attn::parseContractVersion(version, contractVersion))
    {
        swin_attn::copyMessage(op + "plugin_version '" + (version != nullptr ? version : "(null)")
                + "' is unknown; the contract has '" + swin_attn::kPluginVersion + "' and '"
                + swin_attn::kMapPluginVersion + "'",
            error, error_size);
        return SWIN_ATTN_INVALID_ARGUMENT;
    }
    if (attributes == nullptr || params == nullptr)
    {
        swin_attn::copyMessage(op + "attributes or params is null", error, error_size);
        return SWIN_ATTN_INVALID_ARGUMENT;
    }
    swin_attn::Attributes node;
    node.height = attributes->height;
    node.width = attributes->width;
    node.windowSize = attributes->window_size;
    node.shiftSize = attributes->shift_size;
    node.numHeads = attributes->num_heads;
    node.scale = attributes->scale;
    std::string const reason = swin_attn::launchParams(contractVersion, qkv_dims, qkv_rank, node, *params);
    swin_attn::copyMessage(reason.empty() ? std::string() : op + reason, error, error_size);
    return reason.empty() ? SWIN_ATTN_OK : SWIN_ATTN_INVALID_ARGUMENT;
}
