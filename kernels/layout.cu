// Layout changes between NCHW images and channels-last tokens (docs/numerics/transformer.md §4.1, §12), both a batched
// matrix transpose; the DC-AE's channel/space rearrangements (docs/numerics/dc-ae.md §3.6, §3.7, §4.1), one gather; and
// its channel groupings (split into q/k/v groups, concatenation, group mean; sections at the end).
//
// Formula: out[b, s, r] = x[b, r, s] for x [B, R, S] (last dimension contiguous), exact (a copy, no arithmetic).
//   nchw_to_tokens: x [B, C, h, w] → [B, h·w, C]     (R = C, S = h·w; token n = i·w + j)
//   tokens_to_nchw: x [B, h·w, C] → [B, C, h, w]     (R = h·w, S = C)
// CPU reference: src/cpu/layout.rs.
//
// Geometry (src/launch/layout.rs): grid (⌈R/32⌉·⌈S/32⌉, B), block (32, 8); block x moves tile (x / ⌈S/32⌉,
// x % ⌈S/32⌉) of rows × columns — all tiles on grid.x, whose limit is 2³¹ − 1, since either R or S is h·w (grid.y
// would stop at 65535 tiles, 1448² as rows). Each block moves its 32 × 32 tile through shared memory (rows padded
// to 33 elements so that the column reads spread over the banks): reads along S and writes along R are both
// coalesced; each thread moves 4 elements each way. Elements are copied in the storage type itself, so every dtype
// (and NaN payload) passes through bit-exact.

#include "common.cuh"

// Mirrors TransposeParams in src/launch/layout.rs.
struct TransposeParams {
    void* out;
    const void* x;
    unsigned rows;  // R
    unsigned cols;  // S
};
static_assert(sizeof(TransposeParams) == 24, "TransposeParams must match src/launch/layout.rs");
SANA_PARAMS_LAYOUT(TransposeParams, out, x, rows, cols)

namespace {
constexpr unsigned TILE = 32;  // mirrors TILE in Rust
}

template <typename T>
__device__ __forceinline__ void transpose(const TransposeParams& p) {
    __shared__ T tile[TILE][TILE + 1];
    const unsigned col_tiles = (p.cols + TILE - 1) / TILE;
    const unsigned r0 = blockIdx.x / col_tiles * TILE, s0 = blockIdx.x % col_tiles * TILE, tx = threadIdx.x;
    const size_t batch = size_t(blockIdx.y) * p.rows * p.cols;
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

SANA_KERNEL_PER_DTYPE(transpose, TransposeParams)

// ---------------------------------------------------------------------------------------------------------------
// Channel/space rearrangements of channels-last tokens (CPU reference: src/cpu/layout.rs), exact copies:
//   mode 0, repeat:    x [B, h·w, C]  → [B, h·w, C·r],      out[n, c'] = x[n, c' / r]
//   mode 1, shuffle:   x [B, h·w, Cx] → [B, 2h·2w, C],      out[(2i+a)·2w + 2j+b, c] = x[i·w + j, (4c + 2a + b) / r]
//                      (r = 1: pixel_shuffle, Cx = 4C; r = 4: nearest ×2 upsampling, Cx = C; r = 2: the DC-AE
//                      up-block shortcut pixel_shuffle(repeat_interleave(x, 2)), Cx = 2C — one pass, no temporary)
//   mode 2, unshuffle: x [B, h·w, C]  → [B, (h/2)·(w/2), 4C], out[i·(w/2) + j, 4c + 2a + b] = x[(2i+a)·w + 2j+b, c]
// Geometry (src/launch/layout.rs): a 1-D grid-stride loop over output elements, 256 threads per block, at most
// 65535·… blocks; consecutive threads write consecutive channels (coalesced stores; reads are coalesced for
// repeat/unshuffle along channels and strided for shuffle).

// Mirrors ChannelSpaceParams in src/launch/layout.rs.
struct ChannelSpaceParams {
    void* out;
    const void* x;
    unsigned long long total;  // output elements
    unsigned mode;
    unsigned repeat;           // r (modes 0 and 1)
    unsigned h, w;             // input grid
    unsigned cx;               // input channels
    unsigned cout;             // output channels
};
static_assert(sizeof(ChannelSpaceParams) == 48, "ChannelSpaceParams must match src/launch/layout.rs");
SANA_PARAMS_LAYOUT(ChannelSpaceParams, out, x, total, mode, repeat, h, w, cx, cout)

template <typename T>
__device__ __forceinline__ void channel_space(const ChannelSpaceParams& p) {
    const T* x = static_cast<const T*>(p.x);
    T* out = static_cast<T*>(p.out);
    const size_t stride = size_t(gridDim.x) * blockDim.x;
    for (size_t o = size_t(blockIdx.x) * blockDim.x + threadIdx.x; o < p.total; o += stride) {
        const size_t c = o % p.cout, pix = o / p.cout;
        size_t src;
        if (p.mode == 0) {
            src = pix * p.cx + c / p.repeat;
        } else if (p.mode == 1) {
            const size_t ow = size_t(2) * p.w, oh = size_t(2) * p.h;
            const size_t b = pix / (oh * ow), q = pix % (oh * ow), y = q / ow, xcol = q % ow;
            const size_t i = y / 2, a = y % 2, j = xcol / 2, bb = xcol % 2;
            src = ((b * p.h + i) * p.w + j) * p.cx + (4 * c + 2 * a + bb) / p.repeat;
        } else {
            const size_t ow = p.w / 2, oh = p.h / 2;
            const size_t b = pix / (oh * ow), q = pix % (oh * ow), i = q / ow, j = q % ow;
            const size_t ch = c / 4, a = (c % 4) / 2, bb = c % 2;
            src = ((b * p.h + 2 * i + a) * p.w + 2 * j + bb) * p.cx + ch;
        }
        out[o] = x[src];
    }
}

SANA_KERNEL_PER_DTYPE(channel_space, ChannelSpaceParams)

// ---------------------------------------------------------------------------------------------------------------
// The DC-AE's channel groupings of tokens (CPU reference: src/cpu/layout.rs), one output element per thread of a
// 1-D grid-stride loop (256 threads per block, at most 65535 blocks; consecutive threads write consecutive channels):
//   split_qkv_groups:   x [B, N, G·3d] → q, k, v [B, N, G·d],  q[n, g·d + e] = x[n, 3g·d + e], k at + d, v at + 2d
//                       (exact copies)
//   concat_channels:    a [B, N, Ca], b [B, N, Cb] → [B, N, Ca + Cb]  (exact copies)
//   channel_group_mean: x [B, N, C] → [B, N, C/g],  out[n, c] = (Σ_{e < g} x[n, c·g + e]) / g, summed in f32 in
//                       channel order from 0 (the reference's order), one division, one rounding.

// Mirrors SplitQkvParams in src/launch/layout.rs.
struct SplitQkvParams {
    void* q;
    void* k;
    void* v;
    const void* x;
    unsigned long long total;  // elements of each output
    unsigned c;                // output channels G·d
    unsigned d;                // group width d
};
static_assert(sizeof(SplitQkvParams) == 48, "SplitQkvParams must match src/launch/layout.rs");
SANA_PARAMS_LAYOUT(SplitQkvParams, q, k, v, x, total, c, d)

template <typename T>
__device__ __forceinline__ void split_qkv_groups(const SplitQkvParams& p) {
    const T* x = static_cast<const T*>(p.x);
    const size_t stride = size_t(gridDim.x) * blockDim.x;
    for (size_t o = size_t(blockIdx.x) * blockDim.x + threadIdx.x; o < p.total; o += stride) {
        const size_t ch = o % p.c, row = o / p.c;
        const size_t src = row * 3 * p.c + (ch / p.d) * 3 * p.d + ch % p.d;
        static_cast<T*>(p.q)[o] = x[src];
        static_cast<T*>(p.k)[o] = x[src + p.d];
        static_cast<T*>(p.v)[o] = x[src + 2 * size_t(p.d)];
    }
}

SANA_KERNEL_PER_DTYPE(split_qkv_groups, SplitQkvParams)

// Mirrors ConcatParams in src/launch/layout.rs.
struct ConcatParams {
    void* out;
    const void* a;
    const void* b;
    unsigned long long total;  // output elements
    unsigned ca, cb;
};
static_assert(sizeof(ConcatParams) == 40, "ConcatParams must match src/launch/layout.rs");
SANA_PARAMS_LAYOUT(ConcatParams, out, a, b, total, ca, cb)

template <typename T>
__device__ __forceinline__ void concat_channels(const ConcatParams& p) {
    const size_t c = size_t(p.ca) + p.cb, stride = size_t(gridDim.x) * blockDim.x;
    for (size_t o = size_t(blockIdx.x) * blockDim.x + threadIdx.x; o < p.total; o += stride) {
        const size_t ch = o % c, row = o / c;
        static_cast<T*>(p.out)[o] = ch < p.ca ? static_cast<const T*>(p.a)[row * p.ca + ch]
                                              : static_cast<const T*>(p.b)[row * p.cb + ch - p.ca];
    }
}

SANA_KERNEL_PER_DTYPE(concat_channels, ConcatParams)

// Mirrors GroupMeanParams in src/launch/layout.rs.
struct GroupMeanParams {
    void* out;
    const void* x;
    unsigned long long total;  // output elements
    unsigned g;                // channels per group
    unsigned reserved;         // keeps the struct's size a multiple of 8 on both sides
};
static_assert(sizeof(GroupMeanParams) == 32, "GroupMeanParams must match src/launch/layout.rs");
SANA_PARAMS_LAYOUT(GroupMeanParams, out, x, total, g, reserved)

template <typename T>
__device__ __forceinline__ void channel_group_mean(const GroupMeanParams& p) {
    const T* x = static_cast<const T*>(p.x);
    const size_t stride = size_t(gridDim.x) * blockDim.x;
    for (size_t o = size_t(blockIdx.x) * blockDim.x + threadIdx.x; o < p.total; o += stride) {
        float sum = 0.0f;
        for (unsigned e = 0; e < p.g; ++e) sum += sana::to_float(x[o * p.g + e]);
        static_cast<T*>(p.out)[o] = sana::from_float<T>(sum / float(p.g));
    }
}

SANA_KERNEL_PER_DTYPE(channel_group_mean, GroupMeanParams)
