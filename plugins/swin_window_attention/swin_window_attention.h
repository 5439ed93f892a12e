/*
 * C ABI of the SwinWindowAttention operator (see README.md for the node contract).
 *
 * Two entry points with the same arguments:
 *  - swin_window_attention_reference: float32 on the host, plain C++ (libswin_window_attention_reference.so),
 *    usable without CUDA; CI tests call it through ctypes.
 *  - swin_window_attention_forward: launches the CUDA kernel (libswin_window_attention_cuda.so).
 * A node of either contract version (1: qkv [B, H*W, 3C]; 2: qkv [B, H, W, 3C]) runs with the SwinAttnParams that
 * swin_window_attention_launch_params computes from its qkv dims and attributes (both libraries);
 * swin_window_attention_node_reference evaluates such a node on the host (the reference library).
 * All return SWIN_ATTN_OK or an error code and, if error/error_size allow, a message naming the problem.
 */
#ifndef SWIN_WINDOW_ATTENTION_H
#define SWIN_WINDOW_ATTENTION_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SWIN_ATTN_EXPORT __attribute__((visibility("default")))

/* Opaque CUDA stream type: identical to cudaStream_t, so this header needs no CUDA include. */
struct CUstream_st;

enum SwinAttnStatus
{
    SWIN_ATTN_OK = 0,
    SWIN_ATTN_INVALID_ARGUMENT = 1, /* attributes or shapes break the node contract */
    SWIN_ATTN_UNSUPPORTED = 2,      /* valid, but beyond this implementation or device (e.g. shared memory) */
    SWIN_ATTN_CUDA_ERROR = 3        /* the launch failed */
};

enum SwinAttnDtype
{
    SWIN_ATTN_FLOAT32 = 0,
    SWIN_ATTN_FLOAT16 = 1
};

/* One node's attributes plus the two shape values that are not attributes (batch, channels C). */
typedef struct SwinAttnParams
{
    int32_t batch;
    int32_t height;
    int32_t width;
    int32_t channels; /* C: qkv is [batch, height*width, 3C], output [batch, height*width, C] */
    int32_t num_heads;
    int32_t window_size;
    int32_t shift_size;
    float scale;
} SwinAttnParams;

/* A node's attributes in contract version 1's order; version 2 has no height and width (they are ignored). */
typedef struct SwinAttnAttributes
{
    int32_t height;
    int32_t width;
    int32_t window_size;
    int32_t shift_size;
    int32_t num_heads;
    float scale;
} SwinAttnAttributes;

/* Checks params against the contract and this implementation's limits; returns a status code. */
SWIN_ATTN_EXPORT int swin_window_attention_check(const SwinAttnParams* params, char* error, size_t error_size);

/* The params the kernels run a node of contract `version` ("1" or "2") with, from its qkv dims qkv_dims[0..qkv_rank)
 * and its attributes (launchParams in swin_window_attention_index.h, the one definition the plugin uses too). */
SWIN_ATTN_EXPORT int swin_window_attention_launch_params(const char* version, const int64_t* qkv_dims, int32_t qkv_rank,
    const SwinAttnAttributes* attributes, SwinAttnParams* params, char* error, size_t error_size);

/* Host float32 reference. qkv [B, H*W, 3C], rel_bias [nH, N, N], qkv_bias [3C], out [B, H*W, C]. */
SWIN_ATTN_EXPORT int swin_window_attention_reference(const SwinAttnParams* params, const float* qkv,
    const float* rel_bias, const float* qkv_bias, float* out, char* error, size_t error_size);

/* Host float32 reference of a node of contract `version`: swin_window_attention_reference at the launch params of
 * its qkv dims. out has qkv's dims with C for 3C: [B, H*W, C] (version 1) or [B, H, W, C] (version 2). */
SWIN_ATTN_EXPORT int swin_window_attention_node_reference(const char* version, const int64_t* qkv_dims,
    int32_t qkv_rank, const SwinAttnAttributes* attributes, const float* qkv, const float* rel_bias,
    const float* qkv_bias, float* out, char* error, size_t error_size);

/* CUDA kernel, asynchronous on stream. All four pointers are device memory of dtype (enum SwinAttnDtype),
 * 16-byte aligned; out must not alias qkv. */
SWIN_ATTN_EXPORT int swin_window_attention_forward(const SwinAttnParams* params, int dtype, const void* qkv,
    const void* rel_bias, const void* qkv_bias, void* out, struct CUstream_st* stream, char* error, size_t error_size);

#ifdef __cplusplus
}
#endif

#endif /* SWIN_WINDOW_ATTENTION_H */
