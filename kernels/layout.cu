// Layout changes between NCHW images and channels-last tokens (spec transformer.md §5.1, §13): both are a batched
// matrix transpose.
//
// Formula: out[b, s, r] = x[b, r, s] for x [B, R, S] (last dimension contiguous), exact (a copy, no arithmetic).
//   nchw_to_tokens: x [B, C, h, w] → [B, h·w, C]     (R = C, S = h·w; token n = i·w + j)
//   tokens_to_nchw: x [B, h·w, C] → [B, C, h, w]     (R = h·w, S = C)
// CPU reference: src/cpu/layout.rs.
//
// Geometry (src/launch/layout.rs): grid (⌈S/32⌉, ⌈R/32⌉, B), block (32, 8). Each block moves a 32 × 32 tile
// through shared memory (rows padded to 33 elements so that the column reads spread over the banks): reads along
// S and writes along R are both coalesced; each thread moves 4 elements each way. Elements are copied in the
// storage type itself, so every dtype (and NaN payload) passes through bit-exact.

#include "common.cuh"

// Mirrors TransposeParams in src/launch/layout.rs.
struct TransposeParams {
    void* out;
    const void* x;
    unsigned rows;  // R
    unsigned cols;  // S
};
static_assert(sizeof(TransposeParams) == 24, "TransposeParams must match src/launch/layout.rs");

namespace {
constexpr unsigned TILE = 32;  // mirrors TILE in Rust
}

template <typename T>
__device__ __forceinline__ void transpose(const TransposeParams& p) {
    __shared__ T tile[TILE][TILE + 1];
    const unsigned r0 = blockIdx.y * TILE, s0 = blockIdx.x * TILE, tx = threadIdx.x;
    const size_t batch = size_t(blockIdx.z) * p.rows * p.cols;
    const T* x = static_cast<const T*>(p.x) + batch;
    T* out = static_cast<T*>(p.out) + batch;
    for (unsigned k = threadIdx.y; k < TILE; k += blockDim.y) {
        const unsigned r = r0 + k, s = s0 + tx;
        if (r < p.rows && s < p.cols) tile[k][tx] = x[size_t(r) * p.cols + s];
    }
    __syncthreads();
    for (unsigned k = threadIdx.y; k < TILE; k += blockDim.y) {
        const unsigned s = s0 + k, r = r0 + tx;
        if (s < p.cols && r < p.rows) out[size_t(s) * p.rows + r] = tile[tx][k];
    }
}

extern "C" __global__ void transpose_f32(const TransposeParams p) { transpose<float>(p); }
extern "C" __global__ void transpose_bf16(const TransposeParams p) { transpose<__nv_bfloat16>(p); }
extern "C" __global__ void transpose_f16(const TransposeParams p) { transpose<__half>(p); }

SANA_EMU_ENTRY(transpose_f32, TransposeParams)
SANA_EMU_ENTRY(transpose_bf16, TransposeParams)
SANA_EMU_ENTRY(transpose_f16, TransposeParams)
