// The Triton window-attention kernel, compiled ahead of time (pipeline/kernels/aot.py) and launched from C++ through
// the CUDA runtime's library API: no Python, no Triton and no driver API at run time. See README.md, "Kernels".
#ifndef SWIN_WINDOW_ATTENTION_TRITON_H
#define SWIN_WINDOW_ATTENTION_TRITON_H

#include "swin_window_attention.h"

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace swin_attn
{

//! One compiled image: a cubin for `arch`, or (ptx) PTX for every GPU at or above `arch`.
struct TritonImage
{
    int32_t arch;         //!< 86 for sm_86 (sm_90a for 90, ...)
    bool ptx;             //!< PTX text (NUL-terminated), JIT-compiled by the driver at load
    int32_t dtype;        //!< SwinAttnDtype
    int32_t window;       //!< the window_size it was specialized for
    int32_t headDimBlock; //!< head_dim up to this many channels
    int32_t windows;      //!< windows per program
    int32_t heads;        //!< heads per program
    int32_t numWarps;
    int32_t sharedBytes; //!< dynamic shared memory of a launch
    char const* kernelName;
    char const* config; //!< the config's name (pipeline/kernels/window_attention.py KernelConfig.name)
    unsigned char const* begin;
    unsigned char const* end;
};

//! The images `make plugin` embedded (swin_window_attention_triton_images.cpp, generated); none without triton.
extern TritonImage const kTritonImages[];
extern int32_t const kNbTritonImages;
//! Whether the selection table makes the Triton kernel the default where it has an image.
extern bool const kTritonIsDefault;

//! Which kernel runs a node: SWIN_ATTN_KERNEL=triton|cuda, else the selection table's default. Returns false and
//! sets `error` for another value of the variable.
bool tritonRequested(bool& triton, std::string& error);

//! The image for this device and node, or nullptr with `error` naming what the library holds.
TritonImage const* findTritonImage(SwinAttnParams const& params, int dtype, int32_t deviceArch, std::string& error);

//! Launches the Triton kernel on `stream` (asynchronous); a SwinAttnStatus, `error` saying why on failure.
int launchTritonWindowAttention(TritonImage const& image, SwinAttnParams const& params, void const* qkv,
    void const* relBias, void const* qkvBias, void* out, cudaStream_t stream, std::string& error);

//! The node on the kernel SWIN_ATTN_KERNEL or the selection table picks (the CUDA kernel where no Triton image
//! fits and Triton was not asked for by name). `kernel`, when not null, receives "triton <config>" or "cuda".
int launchSelectedKernel(SwinAttnParams const& params, int dtype, void const* qkv, void const* relBias,
    void const* qkvBias, void* out, cudaStream_t stream, std::string& error, std::string* kernel = nullptr);

} // namespace swin_attn

#endif // SWIN_WINDOW_ATTENTION_TRITON_H
