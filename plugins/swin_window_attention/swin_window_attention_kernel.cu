// CUDA kernels of the SwinWindowAttention node. One CTA per (head, window, image): it gathers the window's
// tokens straight from qkv by index arithmetic (shift, padding and partition never materialize), computes
// softmax(scale * q k^T + rel_bias + shift mask) v with an FP32 softmax, and scatters each real token's
// output back to its image-order position. FP16 runs both GEMMs on tensor cores (WMMA, window tokens
// padded to a multiple of 16); FP32 is SIMT so that it matches the float32 reference to ~1e-6.
#include "swin_window_attention_index.h"
#include "swin_window_attention_kernel.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cstdint>

namespace swin_attn
{
namespace
{

constexpr int32_t kWarpSize = 32;
constexpr int32_t kTile = 16;    //!< WMMA m = n = k
constexpr int32_t kMaxWarps = 4; //!< warps per CTA; fewer when shared memory is short
constexpr int32_t kDefaultSmemLimit = 48 * 1024;
constexpr int32_t kVectorBytes = 16; //!< global loads/stores are 16-byte vectors

struct KernelArgs
{
    WindowGeometry geom;
    int32_t channels;
    int32_t headDim;
    float scale;
    void const* qkv;
    void const* relBias;
    void const* qkvBias;
    void* out;
};

__host__ __device__ constexpr int32_t alignUp(int32_t value, int32_t alignment)
{
    return (value + alignment - 1) / alignment * alignment;
}

__device__ __forceinline__ float warpMax(float value)
{
    for (int32_t offset = kWarpSize / 2; offset > 0; offset /= 2)
    {
        value = fmaxf(value, __shfl_xor_sync(0xffffffffu, value, offset));
    }
    return value;
}

__device__ __forceinline__ float warpSum(float value)
{
    for (int32_t offset = kWarpSize / 2; offset > 0; offset /= 2)
    {
        value += __shfl_xor_sync(0xffffffffu, value, offset);
    }
    return value;
}

//! Row of q, k or v (part 0, 1, 2) of a slot: the source token's row, or qkv_bias for a padded slot.
template <typename T>
__device__ __forceinline__ T const* qkvRow(
    T const* qkvImage, T const* qkvBias, int32_t source, int32_t part, int32_t channels, int32_t offset)
{
    T const* base = source >= 0 ? qkvImage + int64_t{source} * 3 * channels : qkvBias;
    return base + part * channels + offset;
}

//! What one CTA works on: its window, its head's channels and the slices of the tensors that belong to it.
//! The grid is (head, window, image).
template <typename T>
struct CtaTensors
{
    int32_t windowIndex;
    int32_t headOffset; //!< first channel of this head in q, k, v and the output
    T const* qkvImage;  //!< this image's [H·W, 3C] qkv
    T const* qkvBias;   //!< [3C], the q/k/v of padded slots
    T const* bias;      //!< this head's [N, N] relative-position bias
    T* outImage;        //!< this image's [H·W, C] output

    __device__ explicit CtaTensors(KernelArgs const& args)
    {
        int32_t const head = blockIdx.x;
        int64_t const image = blockIdx.z;
        int64_t const imageTokens = int64_t{args.geom.height} * args.geom.width;
        int64_t const tokensPerWindow = args.geom.tokensPerWindow;
        windowIndex = blockIdx.y;
        headOffset = head * args.headDim;
        qkvImage = static_cast<T const*>(args.qkv) + image * imageTokens * 3 * args.channels;
        qkvBias = static_cast<T const*>(args.qkvBias);
        bias = static_cast<T const*>(args.relBias) + head * tokensPerWindow * tokensPerWindow;
        outImage = static_cast<T*>(args.out) + image * imageTokens * args.channels;
    }
};

//! Fills the CTA's slot → source token and slot → region tables (slots beyond N get source -1).
__device__ __forceinline__ void loadSlotTables(
    WindowGeometry const& g, int32_t windowIndex, int32_t slots, int32_t* source, int32_t* region)
{
    for (int32_t i = threadIdx.x; i < slots; i += blockDim.x)
    {
        bool const real = i < g.tokensPerWindow;
        source[i] = real ? slotSourceToken(g, windowIndex, i) : -1;
        region[i] = real ? slotRegion(g, windowIndex, i) : -1;
    }
}

// ---------------------------------------------------------------------------------------------------------
// FP16: tensor cores. Shared memory: slot tables, K and V [NP][hdp + 8] (rows beyond N and columns beyond
// head_dim are zero), and per warp a float scratch (Q staging, then S, then O) plus the half P tile.

//! Shared-memory layout of the FP16 kernel; identical on host (sizing) and device (addressing).
struct HalfLayout
{
    int32_t paddedTokens; //!< NP: N rounded up to 16
    int32_t ldKV;         //!< K/V row stride in halves
    int32_t ldS;          //!< S row stride in floats
    int32_t ldP;          //!< P row stride in halves
    int32_t ldO;          //!< O row stride in floats
    int32_t kOffset;
    int32_t vOffset;
    int32_t warpOffset; //!< first warp's scratch
    int32_t pOffset;    //!< P tile, relative to a warp's scratch
    int32_t warpBytes;  //!< scratch + P per warp

    __host__ __device__ HalfLayout(int32_t tokens, int32_t paddedHeadDim)
    {
        paddedTokens = alignUp(tokens, kTile);
        ldKV = paddedHeadDim + 8; // the skew spreads rows over banks; a multiple of 8 as WMMA requires
        ldS = paddedTokens + 4;
        ldP = paddedTokens + 8;
        ldO = paddedHeadDim + 4;
        int32_t const tables = alignUp(2 * paddedTokens * 4, 128);
        int32_t const kvBytes = alignUp(paddedTokens * ldKV * 2, 128);
        kOffset = tables;
        vOffset = kOffset + kvBytes;
        warpOffset = vOffset + kvBytes;
        int32_t scratch = kTile * ldS * 4;
        scratch = scratch > kTile * ldKV * 2 ? scratch : kTile * ldKV * 2;
        scratch = scratch > kTile * ldO * 4 ? scratch : kTile * ldO * 4;
        pOffset = alignUp(scratch, 128);
        warpBytes = pOffset + alignUp(kTile * ldP * 2, 128);
    }

    __host__ __device__ int32_t bytes(int32_t warps) const
    {
        return warpOffset + warps * warpBytes;
    }
};

//! Gathers `rows` slots of q, k or v for one head into a [rows][ld] half tile (zero beyond N and head_dim).
template <int32_t kPaddedHeadDim>
__device__ __forceinline__ void gatherHalfRows(half* tile, int32_t ld, int32_t firstSlot, int32_t rows,
    int32_t const* source, int32_t tokens, half const* qkvImage, half const* qkvBias, int32_t part, int32_t channels,
    int32_t headOffset, int32_t headDim, int32_t thread, int32_t threads)
{
    constexpr int32_t kChunks = kPaddedHeadDim / 8; // 8 halves = 16 bytes
    for (int32_t index = thread; index < rows * kChunks; index += threads)
    {
        int32_t const row = index / kChunks;
        int32_t const column = (index % kChunks) * 8;
        int32_t const slot = firstSlot + row;
        uint4 value = make_uint4(0u, 0u, 0u, 0u);
        if (slot < tokens && column < headDim)
        {
            value = *reinterpret_cast<uint4 const*>(
                qkvRow(qkvImage, qkvBias, source[slot], part, channels, headOffset + column));
        }
        *reinterpret_cast<uint4*>(tile + row * ld + column) = value;
    }
}

template <int32_t kHeadTiles>
__global__ void __launch_bounds__(kMaxWarps* kWarpSize) windowAttentionHalfKernel(KernelArgs args)
{
    using namespace nvcuda;
    constexpr int32_t kPaddedHeadDim = kHeadTiles * kTile;
    extern __shared__ __align__(128) unsigned char smem[];

    WindowGeometry const& g = args.geom;
    HalfLayout const layout(g.tokensPerWindow, kPaddedHeadDim);
    auto const [windowIndex, headOffset, qkvImage, qkvBias, bias, outImage] = CtaTensors<half>(args);
    int32_t const n = g.tokensPerWindow;
    int32_t const np = layout.paddedTokens;
    int32_t const headDim = args.headDim;
    int32_t const channels = args.channels;

    auto* source = reinterpret_cast<int32_t*>(smem);
    int32_t* region = source + np;
    auto* kTileMem = reinterpret_cast<half*>(smem + layout.kOffset);
    auto* vTileMem = reinterpret_cast<half*>(smem + layout.vOffset);

    loadSlotTables(g, windowIndex, np, source, region);
    __syncthreads();
    gatherHalfRows<kPaddedHeadDim>(kTileMem, layout.ldKV, 0, np, source, n, qkvImage, qkvBias, 1, channels, headOffset,
        headDim, threadIdx.x, blockDim.x);
    gatherHalfRows<kPaddedHeadDim>(vTileMem, layout.ldKV, 0, np, source, n, qkvImage, qkvBias, 2, channels, headOffset,
        headDim, threadIdx.x, blockDim.x);
    __syncthreads();

    int32_t const warp = threadIdx.x / kWarpSize;
    int32_t const lane = threadIdx.x % kWarpSize;
    int32_t const warps = blockDim.x / kWarpSize;
    auto* scratch = reinterpret_cast<float*>(smem + layout.warpOffset + warp * layout.warpBytes);
    auto* pTile = reinterpret_cast<half*>(reinterpret_cast<unsigned char*>(scratch) + layout.pOffset);

    // Each warp owns 16 query slots at a time.
    for (int32_t rowBlock = warp; rowBlock * kTile < np; rowBlock += warps)
    {
        int32_t const firstSlot = rowBlock * kTile;

        // Q: stage the 16 rows in the scratch, keep them in fragments.
        auto* qStage = reinterpret_cast<half*>(scratch);
        gatherHalfRows<kPaddedHeadDim>(qStage, layout.ldKV, firstSlot, kTile, source, n, qkvImage, qkvBias, 0, channels,
            headOffset, headDim, lane, kWarpSize);
        __syncwarp();
        wmma::fragment<wmma::matrix_a, kTile, kTile, kTile, half, wmma::row_major> qFrag[kHeadTiles];
#pragma unroll
        for (int32_t t = 0; t < kHeadTiles; ++t)
        {
            wmma::load_matrix_sync(qFrag[t], qStage + t * kTile, layout.ldKV);
        }
        __syncwarp();

        // S = Q K^T (K stored [key][dim] is K^T in column-major).
        for (int32_t keyTile = 0; keyTile * kTile < np; ++keyTile)
        {
            wmma::fragment<wmma::accumulator, kTile, kTile, kTile, float> acc;
            wmma::fill_fragment(acc, 0.0f);
#pragma unroll
            for (int32_t t = 0; t < kHeadTiles; ++t)
            {
                wmma::fragment<wmma::matrix_b, kTile, kTile, kTile, half, wmma::col_major> kFrag;
                wmma::load_matrix_sync(kFrag, kTileMem + keyTile * kTile * layout.ldKV + t * kTile, layout.ldKV);
                wmma::mma_sync(acc, qFrag[t], kFrag, acc);
            }
            wmma::store_matrix_sync(scratch + keyTile * kTile, acc, layout.ldS, wmma::mem_row_major);
        }
        __syncwarp();

        // Softmax in FP32, one row per pass of the warp; P = normalized probabilities in half.
        for (int32_t row = 0; row < kTile; ++row)
        {
            int32_t const i = firstSlot + row;
            float* sRow = scratch + row * layout.ldS;
            half* pRow = pTile + row * layout.ldP;
            if (i >= n || source[i] < 0)
            {
                // A padded query slot produces no output; zero P keeps the P·V tile finite.
                for (int32_t j = lane; j < np; j += kWarpSize)
                {
                    pRow[j] = __float2half(0.0f);
                }
                continue;
            }
            half const* biasRow = bias + int64_t{i} * n;
            int32_t const regionI = region[i];
            float rowMax = -INFINITY;
            for (int32_t j = lane; j < n; j += kWarpSize)
            {
                float s = sRow[j] * args.scale + __half2float(biasRow[j]);
                s += region[j] != regionI ? kMaskValue : 0.0f;
                sRow[j] = s;
                rowMax = fmaxf(rowMax, s);
            }
            rowMax = warpMax(rowMax);
            float rowSum = 0.0f;
            for (int32_t j = lane; j < n; j += kWarpSize)
            {
                float const e = __expf(sRow[j] - rowMax);
                sRow[j] = e;
                rowSum += e;
            }
            float const inverse = 1.0f / warpSum(rowSum);
            for (int32_t j = lane; j < np; j += kWarpSize)
            {
                pRow[j] = __float2half(j < n ? sRow[j] * inverse : 0.0f);
            }
        }
        __syncwarp();

        // O = P V into the scratch (S is dead), then scatter real tokens to their image positions.
        float* oTile = scratch;
#pragma unroll
        for (int32_t t = 0; t < kHeadTiles; ++t)
        {
            wmma::fragment<wmma::accumulator, kTile, kTile, kTile, float> acc;
            wmma::fill_fragment(acc, 0.0f);
            for (int32_t keyTile = 0; keyTile * kTile < np; ++keyTile)
            {
                wmma::fragment<wmma::matrix_a, kTile, kTile, kTile, half, wmma::row_major> pFrag;
                wmma::fragment<wmma::matrix_b, kTile, kTile, kTile, half, wmma::row_major> vFrag;
                wmma::load_matrix_sync(pFrag, pTile + keyTile * kTile, layout.ldP);
                wmma::load_matrix_sync(vFrag, vTileMem + keyTile * kTile * layout.ldKV + t * kTile, layout.ldKV);
                wmma::mma_sync(acc, pFrag, vFrag, acc);
            }
            wmma::store_matrix_sync(oTile + t * kTile, acc, layout.ldO, wmma::mem_row_major);
        }
        __syncwarp();

        int32_t const chunks = headDim / 8;
        for (int32_t index = lane; index < kTile * chunks; index += kWarpSize)
        {
            int32_t const row = index / chunks;
            int32_t const column = (index % chunks) * 8;
            int32_t const i = firstSlot + row;
            if (i >= n || source[i] < 0)
            {
                continue;
            }
            float const* o = oTile + row * layout.ldO + column;
            uint4 packed;
            auto* halves = reinterpret_cast<half2*>(&packed);
#pragma unroll
            for (int32_t e = 0; e < 4; ++e)
            {
                halves[e] = __floats2half2_rn(o[2 * e], o[2 * e + 1]);
            }
            *reinterpret_cast<uint4*>(outImage + int64_t{source[i]} * channels + headOffset + column) = packed;
        }
        __syncwarp(); // the scratch is rewritten by the next row block
    }
}

// ---------------------------------------------------------------------------------------------------------
// FP32: SIMT, one warp per query row. Shared memory: slot tables, K and V [N][head_dim + 1] (the odd
// stride makes the per-lane key walk conflict-free), and per warp a q row and a probability row.

struct FloatLayout
{
    int32_t ldKV;
    int32_t kOffset;
    int32_t vOffset;
    int32_t warpOffset;
    int32_t warpBytes;

    __host__ __device__ FloatLayout(int32_t tokens, int32_t headDim)
    {
        ldKV = headDim + 1;
        kOffset = alignUp(2 * tokens * 4, 16);
        vOffset = kOffset + alignUp(tokens * ldKV * 4, 16);
        warpOffset = vOffset + alignUp(tokens * ldKV * 4, 16);
        warpBytes = alignUp((headDim + tokens) * 4, 16);
    }

    __host__ __device__ int32_t bytes(int32_t warps) const
    {
        return warpOffset + warps * warpBytes;
    }
};

__global__ void __launch_bounds__(kMaxWarps* kWarpSize) windowAttentionFloatKernel(KernelArgs args)
{
    extern __shared__ __align__(128) unsigned char smem[];

    WindowGeometry const& g = args.geom;
    int32_t const n = g.tokensPerWindow;
    int32_t const headDim = args.headDim;
    int32_t const channels = args.channels;
    FloatLayout const layout(n, headDim);
    auto const [windowIndex, headOffset, qkvImage, qkvBias, bias, outImage] = CtaTensors<float>(args);

    auto* source = reinterpret_cast<int32_t*>(smem);
    int32_t* region = source + n;
    auto* kMem = reinterpret_cast<float*>(smem + layout.kOffset);
    auto* vMem = reinterpret_cast<float*>(smem + layout.vOffset);

    loadSlotTables(g, windowIndex, n, source, region);
    __syncthreads();
    int32_t const chunks = headDim / 4; // float4 loads
    for (int32_t index = threadIdx.x; index < n * chunks; index += blockDim.x)
    {
        int32_t const slot = index / chunks;
        int32_t const column = (index % chunks) * 4;
        float4 const k = *reinterpret_cast<float4 const*>(
            qkvRow(qkvImage, qkvBias, source[slot], 1, channels, headOffset + column));
        float4 const v = *reinterpret_cast<float4 const*>(
            qkvRow(qkvImage, qkvBias, source[slot], 2, channels, headOffset + column));
        float* kRow = kMem + slot * layout.ldKV + column;
        float* vRow = vMem + slot * layout.ldKV + column;
        kRow[0] = k.x, kRow[1] = k.y, kRow[2] = k.z, kRow[3] = k.w;
        vRow[0] = v.x, vRow[1] = v.y, vRow[2] = v.z, vRow[3] = v.w;
    }
    __syncthreads();

    int32_t const warp = threadIdx.x / kWarpSize;
    int32_t const lane = threadIdx.x % kWarpSize;
    int32_t const warps = blockDim.x / kWarpSize;
    auto* qRow = reinterpret_cast<float*>(smem + layout.warpOffset + warp * layout.warpBytes);
    float* pRow = qRow + headDim;

    for (int32_t i = warp; i < n; i += warps)
    {
        if (source[i] < 0)
        {
            continue; // padded query slot: no output
        }
        float const* q = qkvRow(qkvImage, qkvBias, source[i], 0, channels, headOffset);
        for (int32_t d = lane; d < headDim; d += kWarpSize)
        {
            qRow[d] = q[d];
        }
        __syncwarp();

        float const* biasRow = bias + int64_t{i} * n;
        int32_t const regionI = region[i];
        float rowMax = -INFINITY;
        for (int32_t j = lane; j < n; j += kWarpSize)
        {
            float const* k = kMem + j * layout.ldKV;
            float dot = 0.0f;
            for (int32_t d = 0; d < headDim; ++d)
            {
                dot = fmaf(qRow[d], k[d], dot);
            }
            float s = dot * args.scale + biasRow[j];
            s += region[j] != regionI ? kMaskValue : 0.0f;
            pRow[j] = s;
            rowMax = fmaxf(rowMax, s);
        }
        rowMax = warpMax(rowMax);
        float rowSum = 0.0f;
        for (int32_t j = lane; j < n; j += kWarpSize)
        {
            float const e = expf(pRow[j] - rowMax);
            pRow[j] = e;
            rowSum += e;
        }
        float const inverse = 1.0f / warpSum(rowSum);
        __syncwarp();

        float* o = outImage + int64_t{source[i]} * channels + headOffset;
        for (int32_t d = lane; d < headDim; d += kWarpSize)
        {
            float acc = 0.0f;
            for (int32_t j = 0; j < n; ++j)
            {
                acc = fmaf(pRow[j], vMem[j * layout.ldKV + d], acc);
            }
            o[d] = acc * inverse;
        }
        __syncwarp(); // qRow and pRow are rewritten by the next row
    }
}

// ---------------------------------------------------------------------------------------------------------

template <typename Kernel>
int launchKernel(Kernel kernel, dim3 grid, int32_t warps, int32_t smemBytes, KernelArgs const& args,
    cudaStream_t stream, std::string& error)
{
    if (smemBytes > kDefaultSmemLimit)
    {
        cudaError_t const status = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smemBytes);
        if (status != cudaSuccess)
        {
            error = std::string(kPluginName) + ": cudaFuncSetAttribute failed: " + cudaGetErrorString(status);
            return SWIN_ATTN_CUDA_ERROR;
        }
    }
    kernel<<<grid, warps * kWarpSize, smemBytes, stream>>>(args);
    cudaError_t const status = cudaGetLastError();
    if (status != cudaSuccess)
    {
        error = std::string(kPluginName) + ": kernel launch failed: " + cudaGetErrorString(status);
        return SWIN_ATTN_CUDA_ERROR;
    }
    return SWIN_ATTN_OK;
}

bool aligned(void const* pointer)
{
    return reinterpret_cast<uintptr_t>(pointer) % kVectorBytes == 0;
}

} // namespace

int checkLaunch(SwinAttnParams const& params, int dtype, void const* qkv, void const* relBias, void const* qkvBias,
    void const* out, std::string& error)
{
    std::string const op = std::string(kPluginName) + ": ";
    error = checkParams(params);
    if (!error.empty())
    {
        error = op + error;
        return SWIN_ATTN_INVALID_ARGUMENT;
    }
    if (dtype != SWIN_ATTN_FLOAT32 && dtype != SWIN_ATTN_FLOAT16)
    {
        error = op + "dtype " + std::to_string(dtype) + " is neither float32 (0) nor float16 (1)";
        return SWIN_ATTN_INVALID_ARGUMENT;
    }
    if (!aligned(qkv) || !aligned(relBias) || !aligned(qkvBias) || !aligned(out) || qkv == nullptr || relBias == nullptr
        || qkvBias == nullptr || out == nullptr)
    {
        error = op + "qkv, rel_bias, qkv_bias and output must be non-null and 16-byte aligned";
        return SWIN_ATTN_INVALID_ARGUMENT;
    }
    return SWIN_ATTN_OK;
}

int launchWindowAttention(SwinAttnParams const& params, int dtype, void const* qkv, void const* relBias,
    void const* qkvBias, void* out, cudaStream_t stream, std::string& error)
{
    std::string const op = std::string(kPluginName) + ": ";
    if (int const invalid = checkLaunch(params, dtype, qkv, relBias, qkvBias, out, error))
    {
        return invalid;
    }

    KernelArgs args{};
    args.geom = makeGeometry(params.height, params.width, params.window_size, params.shift_size);
    args.channels = params.channels;
    args.headDim = params.channels / params.num_heads;
    args.scale = params.scale;
    args.qkv = qkv;
    args.relBias = relBias;
    args.qkvBias = qkvBias;
    args.out = out;

    constexpr int32_t kMaxGridYZ = 65535;
    if (args.geom.numWindows > kMaxGridYZ || params.batch > kMaxGridYZ)
    {
        error = op + "numWindows=" + std::to_string(args.geom.numWindows) + " and batch=" + std::to_string(params.batch)
            + " must each be at most 65535 (CUDA grid limit)";
        return SWIN_ATTN_UNSUPPORTED;
    }
    dim3 const grid(params.num_heads, args.geom.numWindows, params.batch);

    int device = 0;
    int smemLimit = 0;
    cudaError_t status = cudaGetDevice(&device);
    if (status == cudaSuccess)
    {
        status = cudaDeviceGetAttribute(&smemLimit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
    }
    if (status != cudaSuccess)
    {
        error = op + "cannot query the CUDA device: " + cudaGetErrorString(status);
        return SWIN_ATTN_CUDA_ERROR;
    }

    int32_t const n = args.geom.tokensPerWindow;
    if (dtype == SWIN_ATTN_FLOAT16)
    {
        int32_t const headTiles = (args.headDim + kTile - 1) / kTile;
        HalfLayout const layout(n, headTiles * kTile);
        // As many warps as fit (at most one per 16-row block): window 12 with head_dim 64 needs fewer on sm_75.
        int32_t warps = kMaxWarps < layout.paddedTokens / kTile ? kMaxWarps : layout.paddedTokens / kTile;
        while (warps > 1 && layout.bytes(warps) > smemLimit)
        {
            --warps;
        }
        int32_t const bytes = layout.bytes(warps);
        if (bytes > smemLimit)
        {
            error = op + "window_size=" + std::to_string(params.window_size)
                + " with head_dim=" + std::to_string(args.headDim) + " needs " + std::to_string(bytes)
                + " bytes of shared memory in FP16, the device allows " + std::to_string(smemLimit);
            return SWIN_ATTN_UNSUPPORTED;
        }
        switch (headTiles)
        {
        case 1: return launchKernel(windowAttentionHalfKernel<1>, grid, warps, bytes, args, stream, error);
        case 2: return launchKernel(windowAttentionHalfKernel<2>, grid, warps, bytes, args, stream, error);
        case 3: return launchKernel(windowAttentionHalfKernel<3>, grid, warps, bytes, args, stream, error);
        default: return launchKernel(windowAttentionHalfKernel<4>, grid, warps, bytes, args, stream, error);
        }
    }
    FloatLayout const layout(n, args.headDim);
    int32_t const bytes = layout.bytes(kMaxWarps);
    if (bytes > smemLimit)
    {
        error = op + "window_size=" + std::to_string(params.window_size)
            + " with head_dim=" + std::to_string(args.headDim) + " needs " + std::to_string(bytes)
            + " bytes of shared memory in FP32, the device allows " + std::to_string(smemLimit);
        return SWIN_ATTN_UNSUPPORTED;
    }
    return launchKernel(windowAttentionFloatKernel, grid, kMaxWarps, bytes, args, stream, error);
}

} // namespace swin_attn
