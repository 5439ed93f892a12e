// Loading and launching the ahead-of-time Triton images (swin_window_attention_triton.h).
#include "swin_window_attention_triton.h"

#include "swin_window_attention_index.h"
#include "swin_window_attention_kernel.h"

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

namespace swin_attn
{
namespace
{

constexpr char const* kKernelEnv = "SWIN_ATTN_KERNEL";
constexpr int32_t kDefaultSharedLimit = 48 * 1024;

//! The loaded form of each image, made once per process (a cudaLibrary_t is context-independent).
struct LoadedImage
{
    std::once_flag once;
    cudaKernel_t kernel{nullptr};
    cudaError_t status{cudaSuccess};
};

LoadedImage& loaded(int32_t index)
{
    static std::vector<LoadedImage> images(static_cast<size_t>(kNbTritonImages));
    return images[static_cast<size_t>(index)];
}

cudaError_t loadImage(TritonImage const& image, cudaKernel_t& kernel)
{
    cudaLibrary_t library{nullptr};
    cudaError_t status = cudaLibraryLoadData(&library, image.begin, nullptr, nullptr, 0, nullptr, nullptr, 0);
    if (status == cudaSuccess)
    {
        status = cudaLibraryGetKernel(&kernel, library, image.kernelName);
    }
    return status; // the library stays loaded for the process's lifetime, as a linked kernel would
}

std::string heldArchitectures()
{
    std::string text;
    for (int32_t i = 0; i < kNbTritonImages; ++i)
    {
        std::string const arch = (kTritonImages[i].ptx ? "PTX " : "sm_") + std::to_string(kTritonImages[i].arch);
        if (text.find(arch) == std::string::npos)
        {
            text += (text.empty() ? "" : ", ") + arch;
        }
    }
    return text.empty() ? "none (built without triton)" : text;
}

bool fitsNode(TritonImage const& image, SwinAttnParams const& params, int dtype)
{
    int32_t const headDim = params.channels / params.num_heads;
    return image.dtype == dtype && image.window == params.window_size && headDim <= image.headDimBlock;
}

int32_t deviceArchitecture(std::string& error)
{
    int device = 0;
    int major = 0;
    int minor = 0;
    cudaError_t status = cudaGetDevice(&device);
    if (status == cudaSuccess)
    {
        status = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
    }
    if (status == cudaSuccess)
    {
        status = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device);
    }
    if (status != cudaSuccess)
    {
        error = std::string("cannot query the CUDA device: ") + cudaGetErrorString(status);
        return -1;
    }
    return major * 10 + minor;
}

} // namespace

bool tritonRequested(bool& triton, std::string& error)
{
    char const* value = std::getenv(kKernelEnv);
    if (value == nullptr || *value == '\0')
    {
        triton = kTritonIsDefault;
        return true;
    }
    if (std::strcmp(value, "triton") == 0 || std::strcmp(value, "cuda") == 0)
    {
        triton = std::strcmp(value, "triton") == 0;
        return true;
    }
    error = std::string(kKernelEnv) + "='" + value + "': expected triton or cuda (or unset for the default)";
    return false;
}

TritonImage const* findTritonImage(SwinAttnParams const& params, int dtype, int32_t deviceArch, std::string& error)
{
    TritonImage const* ptx = nullptr;
    bool shapeHeld = false;
    for (int32_t i = 0; i < kNbTritonImages; ++i)
    {
        TritonImage const& image = kTritonImages[i];
        if (!fitsNode(image, params, dtype))
        {
            continue;
        }
        shapeHeld = true;
        if (!image.ptx && image.arch == deviceArch)
        {
            return &image;
        }
        if (image.ptx && image.arch <= deviceArch && (ptx == nullptr || image.arch > ptx->arch))
        {
            ptx = &image;
        }
    }
    if (ptx != nullptr)
    {
        return ptx;
    }
    std::string const dtypeName = dtype == SWIN_ATTN_FLOAT16 ? "float16" : "float32";
    error = shapeHeld ? "this library holds Triton images for " + heldArchitectures() + ", not for this GPU (sm_"
            + std::to_string(deviceArch) + "): rebuild the plugin with its architecture in CMAKE_CUDA_ARCHITECTURES"
                      : "no Triton image for window_size=" + std::to_string(params.window_size)
            + ", head_dim=" + std::to_string(params.channels / params.num_heads) + ", " + dtypeName
            + " (the images hold windows 7 and 12, head_dim up to 32): unset SWIN_ATTN_KERNEL to run the CUDA kernel";
    return nullptr;
}

int launchTritonWindowAttention(TritonImage const& image, SwinAttnParams const& params, void const* qkv,
    void const* relBias, void const* qkvBias, void* out, cudaStream_t stream, std::string& error)
{
    std::string const op = std::string(kPluginName) + " (Triton " + image.config + "): ";
    LoadedImage& state = loaded(static_cast<int32_t>(&image - kTritonImages));
    std::call_once(state.once, [&] { state.status = loadImage(image, state.kernel); });
    if (state.status != cudaSuccess)
    {
        error = op + "cannot load the image for sm_" + std::to_string(image.arch) + ": "
            + cudaGetErrorString(state.status);
        return SWIN_ATTN_CUDA_ERROR;
    }
    auto const function = reinterpret_cast<void const*>(state.kernel);
    if (image.sharedBytes > kDefaultSharedLimit)
    {
        cudaError_t const status
            = cudaFuncSetAttribute(function, cudaFuncAttributeMaxDynamicSharedMemorySize, image.sharedBytes);
        if (status != cudaSuccess)
        {
            error = op + "cannot allow " + std::to_string(image.sharedBytes)
                + " bytes of shared memory: " + cudaGetErrorString(status);
            return SWIN_ATTN_UNSUPPORTED;
        }
    }
    WindowGeometry const g = makeGeometry(params.height, params.width, params.window_size, params.shift_size);
    int32_t headDim = params.channels / params.num_heads;
    int32_t height = params.height;
    int32_t width = params.width;
    int32_t window = params.window_size;
    int32_t shift = params.shift_size;
    int32_t heads = params.num_heads;
    float scale = params.scale;
    void* globalScratch = nullptr;  // the kernel asks for none (checked when it was compiled)
    void* profileScratch = nullptr; // likewise
    void* args[] = {&qkv, &relBias, &qkvBias, &out, &height, &width, &window, &shift, &heads, &headDim, &scale,
        &globalScratch, &profileScratch};
    dim3 const grid(
        (g.numWindows + image.windows - 1) / image.windows, (heads + image.heads - 1) / image.heads, params.batch);
    cudaError_t const status = cudaLaunchKernel(
        function, grid, dim3(image.numWarps * 32), args, static_cast<size_t>(image.sharedBytes), stream);
    if (status != cudaSuccess)
    {
        error = op + "launch failed: " + cudaGetErrorString(status);
        return SWIN_ATTN_CUDA_ERROR;
    }
    return SWIN_ATTN_OK;
}

int launchSelectedKernel(SwinAttnParams const& params, int dtype, void const* qkv, void const* relBias,
    void const* qkvBias, void* out, cudaStream_t stream, std::string& error, std::string* kernel)
{
    bool triton = false;
    if (!tritonRequested(triton, error))
    {
        error = std::string(kPluginName) + ": " + error;
        return SWIN_ATTN_INVALID_ARGUMENT;
    }
    if (int const invalid = checkLaunch(params, dtype, qkv, relBias, qkvBias, out, error))
    {
        return invalid;
    }
    if (triton)
    {
        int32_t const arch = deviceArchitecture(error);
        TritonImage const* image = arch < 0 ? nullptr : findTritonImage(params, dtype, arch, error);
        if (image != nullptr)
        {
            if (kernel != nullptr)
            {
                *kernel = std::string("triton ") + image->config;
            }
            return launchTritonWindowAttention(*image, params, qkv, relBias, qkvBias, out, stream, error);
        }
        char const* requested = std::getenv(kKernelEnv);
        if (requested != nullptr && *requested != '\0') // asked for by name, not picked by the table
        {
            error = std::string(kPluginName) + ": " + kKernelEnv + "=triton: " + error;
            return arch < 0 ? SWIN_ATTN_CUDA_ERROR : SWIN_ATTN_UNSUPPORTED;
        }
        error.clear(); // the default picked Triton but it has no image for this node: the CUDA kernel runs it
    }
    if (kernel != nullptr)
    {
        *kernel = "cuda";
    }
    return launchWindowAttention(params, dtype, qkv, relBias, qkvBias, out, stream, error);
}

} // namespace swin_attn
