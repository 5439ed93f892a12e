// TensorRT IPluginV3 of the SwinWindowAttention node (README.md) and its IPluginCreatorV3One, one creator per contract
// version (1: qkv [B, H*W, 3C]; 2: qkv [B, H, W, 3C]). The node's name, versions, attributes (the Attributes struct)
// and limits come from the generated swin_window_attention_contract.h. Compiled against the TensorRT 10 public headers
// only; the library never links libnvinfer.
#ifndef SWIN_WINDOW_ATTENTION_PLUGIN_H
#define SWIN_WINDOW_ATTENTION_PLUGIN_H

#include "swin_window_attention_index.h"

#include <NvInferRuntime.h>

#include <cstdint>
#include <string>
#include <vector>

namespace swin_attn
{

class SwinWindowAttentionPlugin final : public nvinfer1::IPluginV3,
                                        public nvinfer1::IPluginV3OneCore,
                                        public nvinfer1::IPluginV3OneBuild,
                                        public nvinfer1::IPluginV3OneRuntime
{
public:
    //! A node of contract `version`; version 2 (kMap) leaves attributes.height and width unused.
    SwinWindowAttentionPlugin(
        std::string layerName, ContractVersion version, Attributes const& attributes, std::string pluginNamespace);

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

    // IPluginV3OneBuild
    int32_t getNbOutputs() const noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs, nvinfer1::DataType const* inputTypes,
        int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
        int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

private:
    //! The first way the input dims break the attributes (-1 dims are not checked), or empty.
    std::string inputDimsProblem(nvinfer1::Dims const* dims, int32_t nbInputs, int32_t nbOutputs) const;
    //! The first way qkv's dims break its version's layout (-1 dims are not checked), or empty.
    std::string qkvDimsProblem(nvinfer1::Dims const& qkv) const;

    std::string mLayerName;
    ContractVersion mVersion;
    Attributes mAttributes;
    std::string mNamespace;
    std::string mKernel; //!< the kernel the last enqueue ran ("cuda", "triton <config>")
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mFieldCollection{};
};

class SwinWindowAttentionCreator final : public nvinfer1::IPluginCreatorV3One
{
public:
    explicit SwinWindowAttentionCreator(ContractVersion version);

    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    nvinfer1::IPluginV3* createPlugin(
        char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept override;

private:
    //! Reads the fields of `fc` by name into `attributes`; false (after logging why) when they are not exactly this
    //! version's attributes.
    bool parseFields(std::string const& layer, nvinfer1::PluginFieldCollection const& fc, Attributes& attributes) const;

    ContractVersion mVersion;
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mFieldCollection{};
};

} // namespace swin_attn

#endif // SWIN_WINDOW_ATTENTION_PLUGIN_H
