// TensorRT IPluginV3 of the SwinWindowAttention node, its creator, and the library entry points.
//
// The library has no link-time dependency on TensorRT, so one binary serves TensorRT 10 and TensorRT-RTX:
//  - IPluginRegistry::loadLibrary / trtexec --dynamicPlugins call getCreators() and setLoggerFinder();
//  - loaders that only dlopen the library (Polygraphy --plugins, Triton) are served by a
//    load-time registration with the registry of an already loaded libnvinfer of the same major version.
#include "swin_window_attention_plugin.h"

#include "swin_window_attention_index.h"
#include "swin_window_attention_kernel.h"
#include "swin_window_attention_triton.h"

#include <dlfcn.h>

#include <cstdio>
#include <cstring>
#include <exception>
#include <mutex>

using namespace nvinfer1;

namespace swin_attn
{
namespace
{

//! One validation step of the plugin's I/O and attribute checks: unless `condition` holds, logs the message (the
//! remaining arguments, evaluated only then) as an error of layer `layer` and returns `failure` from the calling
//! function. Everything it uses is an argument or namespace-qualified, so it works the same in any scope.
#define SWIN_CHECK(layer, condition, failure, ...)                                                                     \
    do                                                                                                                 \
    {                                                                                                                  \
        if (!(condition))                                                                                              \
        {                                                                                                              \
            ::swin_attn::logLayerError(layer, __VA_ARGS__);                                                            \
            return failure;                                                                                            \
        }                                                                                                              \
    } while (false)

#define SWIN_STRINGIFY_(x) #x
#define SWIN_STRINGIFY(x) SWIN_STRINGIFY_(x)
//! Only the TensorRT major version of the headers we compile against shares their IPluginRegistry vtable
//! (TensorRT-RTX's differs: registering through it crashes), so load-time registration looks for that one.
constexpr char const* kTensorRTLibraries[] = {"libnvinfer.so." SWIN_STRINGIFY(NV_TENSORRT_MAJOR)};

//! Resolves `symbol` in an already loaded TensorRT library (never loads one).
void* findLoadedTensorRTSymbol(char const* symbol)
{
    for (char const* library : kTensorRTLibraries)
    {
        void* handle = dlopen(library, RTLD_LAZY | RTLD_NOLOAD);
        if (handle == nullptr)
        {
            continue;
        }
        void* address = dlsym(handle, symbol);
        dlclose(handle); // drops the reference RTLD_NOLOAD added; the library stays loaded
        if (address != nullptr)
        {
            return address;
        }
    }
    return nullptr;
}

//! The logger TensorRT hands over through setLoggerFinder, else libnvinfer's global logger, else stderr.
//! (TensorRT-RTX 1.7 calls setLoggerFinder, but its finder returns no logger while the ONNX parser creates
//! plugins, so errors from that phase land on stderr there.)
class PluginLogger
{
public:
    void setLoggerFinder(ILoggerFinder* finder)
    {
        std::lock_guard<std::mutex> lock(mMutex);
        mFinder = finder;
    }

    void log(ILogger::Severity severity, std::string const& message)
    {
        ILogger* logger = nullptr;
        {
            std::lock_guard<std::mutex> lock(mMutex);
            if (mFinder != nullptr)
            {
                logger = mFinder->findLogger();
            }
            if (logger == nullptr)
            {
                using GetLogger = ILogger* (*)();
                if (auto getLogger = reinterpret_cast<GetLogger>(findLoadedTensorRTSymbol("getLogger")))
                {
                    logger = getLogger();
                }
            }
        }
        if (logger != nullptr)
        {
            logger->log(severity, message.c_str());
        }
        else
        {
            std::fprintf(stderr, "%s\n", message.c_str());
        }
    }

private:
    std::mutex mMutex;
    ILoggerFinder* mFinder{nullptr};
};

PluginLogger& pluginLogger()
{
    static PluginLogger logger;
    return logger;
}

//! Logs an error of the plugin of layer `layer` (the creator passes the layer it is creating).
void logLayerError(std::string const& layer, std::string const& message)
{
    pluginLogger().log(
        ILogger::Severity::kERROR, std::string(kPluginName) + " plugin (layer '" + layer + "'): " + message);
}

//! The error text when a plugin method gets other than 3 inputs and 1 output.
std::string ioCountMismatch(int32_t nbInputs, int32_t nbOutputs)
{
    return "expects 3 inputs (qkv, rel_bias, qkv_bias) and 1 output, got " + std::to_string(nbInputs) + " inputs and "
        + std::to_string(nbOutputs) + " outputs";
}

std::string dimsToString(Dims const& dims)
{
    std::string text = "[";
    for (int32_t i = 0; i < dims.nbDims; ++i)
    {
        text += (i > 0 ? ", " : "") + std::to_string(dims.d[i]);
    }
    return text + "]";
}

//! Reads an integer attribute of any integer field type the ONNX parser may pass.
bool readInt(PluginField const& field, int32_t& value)
{
    if (field.data == nullptr || field.length < 1)
    {
        return false;
    }
    switch (field.type)
    {
    case PluginFieldType::kINT32: value = *static_cast<int32_t const*>(field.data); return true;
    case PluginFieldType::kINT64:
    {
        int64_t const wide = *static_cast<int64_t const*>(field.data);
        value = static_cast<int32_t>(wide);
        return wide == value;
    }
    case PluginFieldType::kINT16: value = *static_cast<int16_t const*>(field.data); return true;
    case PluginFieldType::kINT8: value = *static_cast<int8_t const*>(field.data); return true;
    default: return false;
    }
}

bool readFloat(PluginField const& field, float& value)
{
    if (field.data == nullptr || field.length < 1)
    {
        return false;
    }
    switch (field.type)
    {
    case PluginFieldType::kFLOAT32: value = *static_cast<float const*>(field.data); return true;
    case PluginFieldType::kFLOAT64: value = static_cast<float>(*static_cast<double const*>(field.data)); return true;
    default: return false;
    }
}

//! The field type the creator declares and the plugin serializes for an attribute of `type`.
PluginFieldType fieldType(AttributeType type)
{
    return type == AttributeType::kFLOAT32 ? PluginFieldType::kFLOAT32 : PluginFieldType::kINT32;
}

//! Reads `field` into `data`, the Attributes member of an attribute of `type`; false when the field holds no value
//! of a type that converts to it.
bool readAttribute(PluginField const& field, AttributeType type, void* data)
{
    return type == AttributeType::kFLOAT32 ? readFloat(field, *static_cast<float*>(data))
                                           : readInt(field, *static_cast<int32_t*>(data));
}

//! The index in kAttributeFields of the attribute named `name`, or -1.
int32_t findAttribute(char const* name)
{
    for (int32_t i = 0; name != nullptr && i < kNbAttributes; ++i)
    {
        if (std::strcmp(name, kAttributeFields[i].name) == 0)
        {
            return i;
        }
    }
    return -1;
}

//! How many attributes a version's creator declares and its plugin serializes.
int32_t nbVersionAttributes(ContractVersion version)
{
    return version == ContractVersion::kMap ? kNbMapAttributes : kNbAttributes;
}

//! The index in kAttributeFields of a version's attribute number `k` (in its creator's order).
int32_t versionAttributeIndex(ContractVersion version, int32_t k)
{
    return version == ContractVersion::kMap ? kMapAttributeIndices[k] : k;
}

//! Whether attribute kAttributeFields[index] is one of `version`'s.
bool isVersionAttribute(ContractVersion version, int32_t index)
{
    for (int32_t k = 0; k < nbVersionAttributes(version); ++k)
    {
        if (versionAttributeIndex(version, k) == index)
        {
            return true;
        }
    }
    return false;
}

//! "height, width, ...": a version's attribute names, for messages.
std::string attributeNames(ContractVersion version)
{
    std::string names;
    for (int32_t k = 0; k < nbVersionAttributes(version); ++k)
    {
        names += (names.empty() ? "" : ", ") + std::string(kAttributeFields[versionAttributeIndex(version, k)].name);
    }
    return names;
}

//! The plugin_version string of `version` ("1" or "2").
char const* versionName(ContractVersion version)
{
    return version == ContractVersion::kMap ? kMapPluginVersion : kPluginVersion;
}

//! The SwinAttnDtype of a TensorRT data type, or -1 for one the contract does not take.
int32_t abiDtype(DataType type)
{
    switch (type)
    {
    case DataType::kFLOAT: return SWIN_ATTN_FLOAT32;
    case DataType::kHALF: return SWIN_ATTN_FLOAT16;
    default: return -1;
    }
}

} // namespace

// ---------------------------------------------------------------------------------------------------------
// Plugin

SwinWindowAttentionPlugin::SwinWindowAttentionPlugin(
    std::string layerName, ContractVersion version, Attributes const& attributes, std::string pluginNamespace)
    : mLayerName(std::move(layerName))
    , mVersion(version)
    , mAttributes(attributes)
    , mNamespace(std::move(pluginNamespace))
{
}

IPluginCapability* SwinWindowAttentionPlugin::getCapabilityInterface(PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
    case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
    case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

IPluginV3* SwinWindowAttentionPlugin::clone() noexcept
{
    try
    {
        return new SwinWindowAttentionPlugin(mLayerName, mVersion, mAttributes, mNamespace);
    }
    catch (std::exception const& e)
    {
        logLayerError(mLayerName, std::string("clone failed: ") + e.what());
        return nullptr;
    }
}

char const* SwinWindowAttentionPlugin::getPluginName() const noexcept
{
    return kPluginName;
}

char const* SwinWindowAttentionPlugin::getPluginVersion() const noexcept
{
    return versionName(mVersion);
}

char const* SwinWindowAttentionPlugin::getPluginNamespace() const noexcept
{
    return mNamespace.c_str();
}

int32_t SwinWindowAttentionPlugin::getNbOutputs() const noexcept
{
    return kNbOutputs;
}

int32_t SwinWindowAttentionPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    SWIN_CHECK(mLayerName, nbInputs == kNbInputs && nbOutputs == kNbOutputs, -1, ioCountMismatch(nbInputs, nbOutputs));
    outputTypes[0] = inputTypes[0];
    return 0;
}

int32_t SwinWindowAttentionPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs,
    DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs,
    IExprBuilder& exprBuilder) noexcept
{
    try
    {
        SWIN_CHECK(
            mLayerName, nbInputs == kNbInputs && nbOutputs == kNbOutputs, -1, ioCountMismatch(nbInputs, nbOutputs));
        // Check every dimension that is known at this point; dynamic ones are checked in configurePlugin.
        Dims dims[kNbInputs];
        for (int32_t i = 0; i < kNbInputs; ++i)
        {
            dims[i].nbDims = inputs[i].nbDims;
            for (int32_t d = 0; d < inputs[i].nbDims; ++d)
            {
                dims[i].d[d] = inputs[i].d[d]->isConstant() ? inputs[i].d[d]->getConstantValue() : -1;
            }
        }
        std::string const problem = inputDimsProblem(dims, nbInputs, nbOutputs);
        SWIN_CHECK(mLayerName, problem.empty(), -1, "getOutputShapes: " + problem);
        // qkv's dims with C for 3C: [B, H*W, C] (version 1) or [B, H, W, C] (version 2).
        int32_t const channelAxis = inputs[0].nbDims - 1;
        outputs[0].nbDims = inputs[0].nbDims;
        for (int32_t d = 0; d < channelAxis; ++d)
        {
            outputs[0].d[d] = inputs[0].d[d];
        }
        outputs[0].d[channelAxis] = exprBuilder.operation(
            DimensionOperation::kFLOOR_DIV, *inputs[0].d[channelAxis], *exprBuilder.constant(3));
        return 0;
    }
    catch (std::exception const& e)
    {
        logLayerError(mLayerName, std::string("getOutputShapes failed: ") + e.what());
        return -1;
    }
}

bool SwinWindowAttentionPlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (nbInputs != kNbInputs || nbOutputs != kNbOutputs || pos < 0 || pos >= kNbInputs + kNbOutputs)
    {
        return false;
    }
    PluginTensorDesc const& desc = inOut[pos].desc;
    if (desc.format != TensorFormat::kLINEAR)
    {
        return false;
    }
    if (pos == 0)
    {
        return abiDtype(desc.type) >= 0;
    }
    // rel_bias, qkv_bias and the output share the dtype of qkv (strongly typed graphs decide it).
    return desc.type == inOut[0].desc.type;
}

int32_t SwinWindowAttentionPlugin::configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs,
    DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    try
    {
        SWIN_CHECK(mLayerName, nbInputs == kNbInputs, -1, "expects 3 inputs, got " + std::to_string(nbInputs));
        Dims dims[kNbInputs] = {in[0].desc.dims, in[1].desc.dims, in[2].desc.dims};
        std::string const problem = inputDimsProblem(dims, nbInputs, nbOutputs);
        SWIN_CHECK(mLayerName, problem.empty(), -1, "configurePlugin: " + problem);
        SWIN_CHECK(mLayerName, abiDtype(in[0].desc.type) >= 0, -1, "supports float32 and float16 only");
        return 0;
    }
    catch (std::exception const& e)
    {
        logLayerError(mLayerName, std::string("configurePlugin failed: ") + e.what());
        return -1;
    }
}

size_t SwinWindowAttentionPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* /*inputs*/, int32_t /*nbInputs*/,
    DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept
{
    return 0; // the kernel reads qkv in place and writes the output directly
}

int32_t SwinWindowAttentionPlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    try
    {
        SWIN_CHECK(mLayerName, nbInputs == kNbInputs, -1, "expects 3 inputs, got " + std::to_string(nbInputs));
        Dims dims[kNbInputs] = {in[0].dims, in[1].dims, in[2].dims};
        std::string const problem = inputDimsProblem(dims, nbInputs, nbOutputs);
        SWIN_CHECK(mLayerName, problem.empty(), -1, "onShapeChange: " + problem);
        return 0;
    }
    catch (std::exception const& e)
    {
        logLayerError(mLayerName, std::string("onShapeChange failed: ") + e.what());
        return -1;
    }
}

int32_t SwinWindowAttentionPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
    void const* const* inputs, void* const* outputs, void* /*workspace*/, cudaStream_t stream) noexcept
{
    try
    {
        Dims const& qkvDims = inputDesc[0].dims;
        bool const emptyMap = mVersion == ContractVersion::kMap && (qkvDims.d[1] == 0 || qkvDims.d[2] == 0);
        if (qkvDims.d[0] == 0 || emptyMap)
        {
            return 0; // empty batch or map: nothing to compute
        }
        // From this call's dims: the plugin keeps no per-size state, so one engine serves every H x W in version 2.
        SwinAttnParams params{};
        std::string const problem = launchParams(mVersion, qkvDims.d, qkvDims.nbDims, mAttributes, params);
        SWIN_CHECK(mLayerName, problem.empty(), -1, "enqueue: " + problem);
        int const dtype = abiDtype(inputDesc[0].type);
        std::string error;
        std::string kernel;
        int const status
            = launchSelectedKernel(params, dtype, inputs[0], inputs[1], inputs[2], outputs[0], stream, error, &kernel);
        SWIN_CHECK(mLayerName, status == SWIN_ATTN_OK, -1, error);
        if (kernel != mKernel)
        {
            mKernel = kernel; // said once per instance and change of kernel, not on every enqueue
            pluginLogger().log(ILogger::Severity::kINFO, mLayerName + ": kernel " + kernel);
        }
        return 0;
    }
    catch (std::exception const& e)
    {
        logLayerError(mLayerName, std::string("enqueue failed: ") + e.what());
        return -1;
    }
}

IPluginV3* SwinWindowAttentionPlugin::attachToContext(IPluginResourceContext* /*context*/) noexcept
{
    return clone();
}

PluginFieldCollection const* SwinWindowAttentionPlugin::getFieldsToSerialize() noexcept
{
    // Every attribute of the version, so that createPlugin(kRUNTIME) rebuilds an identical plugin from the engine.
    mFields.clear();
    for (int32_t k = 0; k < nbVersionAttributes(mVersion); ++k)
    {
        int32_t const i = versionAttributeIndex(mVersion, k);
        AttributeField const& field = kAttributeFields[i];
        mFields.emplace_back(field.name, attributeData(mAttributes, i), fieldType(field.type), field.length);
    }
    mFieldCollection.nbFields = static_cast<int32_t>(mFields.size());
    mFieldCollection.fields = mFields.data();
    return &mFieldCollection;
}

std::string SwinWindowAttentionPlugin::inputDimsProblem(Dims const* dims, int32_t nbInputs, int32_t nbOutputs) const
{
    if (nbInputs != kNbInputs || nbOutputs != kNbOutputs)
    {
        return "expects 3 inputs and 1 output, got " + std::to_string(nbInputs) + " inputs and "
            + std::to_string(nbOutputs) + " outputs";
    }
    Dims const& qkv = dims[0];
    Dims const& relBias = dims[1];
    Dims const& qkvBias = dims[2];
    Attributes const& a = mAttributes;
    int64_t const n = int64_t{a.windowSize} * a.windowSize;
    // Rules in order, the first broken one wins; -1 (dynamic) dims are skipped.
    std::string const qkvProblem = qkvDimsProblem(qkv);
    if (!qkvProblem.empty())
    {
        return qkvProblem;
    }
    int64_t const threeC = qkv.d[qkv.nbDims - 1];
    if (threeC >= 0 && threeC % 3 != 0)
    {
        return "qkv's last dimension " + std::to_string(threeC) + " is not 3C (a multiple of 3)";
    }
    if (threeC >= 0)
    {
        std::string channelsProblem = checkChannels(static_cast<int32_t>(threeC / 3), a.numHeads);
        if (!channelsProblem.empty())
        {
            return channelsProblem;
        }
    }
    if (relBias.nbDims != 3 || relBias.d[0] != a.numHeads || relBias.d[1] != n || relBias.d[2] != n)
    {
        return "rel_bias must be [num_heads, N, N] = [" + std::to_string(a.numHeads) + ", " + std::to_string(n) + ", "
            + std::to_string(n) + "], got " + dimsToString(relBias);
    }
    if (qkvBias.nbDims != 1 || (threeC >= 0 && qkvBias.d[0] != threeC))
    {
        return "qkv_bias must be [3C] = [" + std::to_string(threeC) + "], got " + dimsToString(qkvBias);
    }
    return {};
}

std::string SwinWindowAttentionPlugin::qkvDimsProblem(Dims const& qkv) const
{
    if (mVersion == ContractVersion::kMap)
    {
        // H and W are whatever the tensor has (the shift adapts in launchParams); only the rank is fixed.
        if (qkv.nbDims != kMapQkvRank)
        {
            return "qkv must be [B, H, W, 3C] in version " + std::string(kMapPluginVersion) + ", got "
                + dimsToString(qkv);
        }
        return {};
    }
    Attributes const& a = mAttributes;
    if (qkv.nbDims != kQkvRank)
    {
        return "qkv must be [B, H*W, 3C], got " + dimsToString(qkv);
    }
    if (qkv.d[1] >= 0 && qkv.d[1] != int64_t{a.height} * a.width)
    {
        return "qkv has " + std::to_string(qkv.d[1]) + " tokens but height*width = " + std::to_string(a.height) + "*"
            + std::to_string(a.width) + " = " + std::to_string(int64_t{a.height} * a.width);
    }
    return {};
}

// ---------------------------------------------------------------------------------------------------------
// Creator

SwinWindowAttentionCreator::SwinWindowAttentionCreator(ContractVersion version)
    : mVersion(version)
{
    // Declaring every attribute of the version is what makes the ONNX parser pass it to createPlugin.
    for (int32_t k = 0; k < nbVersionAttributes(mVersion); ++k)
    {
        AttributeField const& field = kAttributeFields[versionAttributeIndex(mVersion, k)];
        mFields.emplace_back(field.name, nullptr, fieldType(field.type), field.length);
    }
    mFieldCollection.nbFields = static_cast<int32_t>(mFields.size());
    mFieldCollection.fields = mFields.data();
}

char const* SwinWindowAttentionCreator::getPluginName() const noexcept
{
    return kPluginName;
}

char const* SwinWindowAttentionCreator::getPluginVersion() const noexcept
{
    return versionName(mVersion);
}

char const* SwinWindowAttentionCreator::getPluginNamespace() const noexcept
{
    return kPluginNamespace;
}

PluginFieldCollection const* SwinWindowAttentionCreator::getFieldNames() noexcept
{
    return &mFieldCollection;
}

IPluginV3* SwinWindowAttentionCreator::createPlugin(
    char const* name, PluginFieldCollection const* fc, TensorRTPhase /*phase*/) noexcept
{
    std::string const layer = name != nullptr ? name : "";
    try
    {
        SWIN_CHECK(layer, fc != nullptr, nullptr, "no attributes given");
        Attributes attributes;
        if (!parseFields(layer, *fc, attributes))
        {
            return nullptr;
        }
        std::string const reason = mVersion == ContractVersion::kMap
            ? checkWindowAttributes(attributes.windowSize, attributes.shiftSize, attributes.numHeads)
            : checkAttributes(attributes.height, attributes.width, attributes.windowSize, attributes.shiftSize,
                  attributes.numHeads);
        SWIN_CHECK(layer, reason.empty(), nullptr, reason);
        return new SwinWindowAttentionPlugin(layer, mVersion, attributes, getPluginNamespace());
    }
    catch (std::exception const& e)
    {
        logLayerError(layer, std::string("createPlugin failed: ") + e.what());
        return nullptr;
    }
}

bool SwinWindowAttentionCreator::parseFields(
    std::string const& layer, PluginFieldCollection const& fc, Attributes& attributes) const
{
    // By name, in any order: TensorRT passes the fields the ONNX node has, or those getFieldsToSerialize wrote.
    bool seen[kNbAttributes] = {};
    for (int32_t f = 0; f < fc.nbFields; ++f)
    {
        PluginField const& field = fc.fields[f];
        std::string const fieldName = field.name != nullptr ? field.name : "";
        int32_t const i = findAttribute(field.name);
        SWIN_CHECK(layer, i >= 0, false,
            "unknown attribute '" + fieldName + "' (the node's attributes are " + attributeNames(mVersion) + ")");
        SWIN_CHECK(layer, isVersionAttribute(mVersion, i), false,
            "attribute '" + fieldName + "' is not one of version " + versionName(mVersion) + "'s ("
                + attributeNames(mVersion) + "): version " + versionName(mVersion)
                + " takes H and W from qkv [B, H, W, 3C]; drop it, or make the node plugin_version " + kPluginVersion);
        SWIN_CHECK(layer, !seen[i], false, "attribute '" + fieldName + "' given twice");
        AttributeField const& spec = kAttributeFields[i];
        SWIN_CHECK(layer, readAttribute(field, spec.type, attributeData(attributes, i)), false,
            "attribute '" + fieldName + "' has an unsupported type " + std::to_string(static_cast<int32_t>(field.type))
                + " (need " + (spec.type == AttributeType::kFLOAT32 ? "a float32 scalar)" : "an int32 scalar)"));
        seen[i] = true;
    }
    for (int32_t k = 0; k < nbVersionAttributes(mVersion); ++k)
    {
        char const* name = kAttributeFields[versionAttributeIndex(mVersion, k)].name;
        SWIN_CHECK(
            layer, seen[versionAttributeIndex(mVersion, k)], false, std::string("missing attribute '") + name + "'");
    }
    return true;
}

// ---------------------------------------------------------------------------------------------------------
// Library entry points

namespace
{

//! One creator per contract version: version 1 (the token layout), then version 2 (the map layout).
constexpr int32_t kNbCreators = 2;

IPluginCreatorInterface* const* creators()
{
    static SwinWindowAttentionCreator tokenCreator(ContractVersion::kTokens);
    static SwinWindowAttentionCreator mapCreator(ContractVersion::kMap);
    static IPluginCreatorInterface* const list[kNbCreators] = {&tokenCreator, &mapCreator};
    return list;
}

//! The registry this library registered each creator with when it was dlopen-ed into a process with TensorRT.
IPluginRegistry* gSelfRegistry[kNbCreators] = {};

//! Load-time registration for loaders that only dlopen (see the file comment). Does nothing when no
//! TensorRT library is loaded yet; IPluginRegistry::loadLibrary then registers through getCreators.
struct SelfRegistration
{
    SelfRegistration()
    {
        using GetPluginRegistry = IPluginRegistry* (*)();
        auto getRegistry = reinterpret_cast<GetPluginRegistry>(findLoadedTensorRTSymbol("getPluginRegistry"));
        IPluginRegistry* registry = getRegistry != nullptr ? getRegistry() : nullptr;
        for (int32_t i = 0; registry != nullptr && i < kNbCreators; ++i)
        {
            if (registry->registerCreator(*creators()[i], ""))
            {
                gSelfRegistry[i] = registry;
            }
        }
    }
};

SelfRegistration const gSelfRegistration;

} // namespace

} // namespace swin_attn

extern "C" __attribute__((visibility("default"))) void setLoggerFinder(ILoggerFinder* finder)
{
    swin_attn::pluginLogger().setLoggerFinder(finder);
}

extern "C" __attribute__((visibility("default"))) IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    // loadLibrary registers what this returns; undo the load-time registration so it is not a duplicate.
    for (int32_t i = 0; i < swin_attn::kNbCreators; ++i)
    {
        if (swin_attn::gSelfRegistry[i] != nullptr)
        {
            swin_attn::gSelfRegistry[i]->deregisterCreator(*swin_attn::creators()[i]);
            swin_attn::gSelfRegistry[i] = nullptr;
        }
    }
    nbCreators = swin_attn::kNbCreators;
    return swin_attn::creators();
}
