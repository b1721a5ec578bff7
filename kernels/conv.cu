// Depthwise and grouped convolutions over channels-last tokens: the middle of Sana's Mix-FFN (below), and the DC-AE's
// depthwise k×k and grouped 1×1 convolutions (sections further down, each with its own formula and geometry). The
// full 3×3 convolution is an implicit GEMM of its own, kernels/conv3x3.cu.
//
// The middle of Sana's Mix-FFN (GLUMBConv, docs/numerics/transformer.md §11): a depthwise 3×3 convolution with zero
// padding 1 and bias, then the GLU with a SiLU gate, fused over channels-last tokens.
//
// Formula, per batch item b, pixel (i, j) of the h × w latent grid and channel c ∈ [0, F):
//     u(c)[i, j] = bias[c] + Σ_{di, dj ∈ 0..3} w[c, 3·di + dj] · x[b, (i+di−1)·w + (j+dj−1), c]   (0 outside the grid)
//     out[b, i·w + j, c] = u(c) · SiLU(u(c + F))          value = channels [0, F), gate = channels [F, 2F)
// The convolution is a cross-correlation (PyTorch's Conv2d, groups = 2F). CPU reference: src/cpu/conv.rs
// `dwconv3x3_glu`.
//
// Layout: x [B, h·w, 2F] (token n = i·w + j, channels contiguous); w [2F, 9] (PyTorch's [2F, 1, 3, 3] flattened);
// bias [2F]; out [B, h·w, F]; all in the storage dtype.
//
// Geometry (src/launch/conv.rs): grid (⌈F/128⌉, ⌈h/ROWS⌉, B), 128 threads; thread t owns channel c = 128·x + t and
// its gate channel c + F, keeps their 18 weights and 2 biases in registers, and walks its ROWS output rows left to
// right with a sliding 3 × 3 window of (value, gate) inputs: 6 loads (one new column of 3 rows, two channels) and
// 18 FMAs per output. Warps read 32 consecutive channels of one pixel: coalesced. No shared memory; the vertical
// reuse (each input row is read for three output rows) comes from L1/L2.
//
// Accumulation: f32, bias first, then the 9 taps in the reference's order (row-major over the 3 × 3 window; a
// padding tap adds w·0); SiLU as common.cuh (expf, IEEE division); one rounding to the storage dtype.

#include "common.cuh"

// Mirrors DwConvGluParams in src/launch/conv.rs.
struct DwConvGluParams {
    void* out;
    const void* x;
    const void* w;
    const void* bias;
    unsigned h;
    unsigned width;
    unsigned f;     // output channels F (input has 2F)
    unsigned rows;  // output rows per block
};
static_assert(sizeof(DwConvGluParams) == 48, "DwConvGluParams must match src/launch/conv.rs");
SANA_PARAMS_LAYOUT(DwConvGluParams, out, x, w, bias, h, width, f, rows)

template <typename T>
__device__ __forceinline__ void dwconv3x3_glu(const DwConvGluParams& p) {
    const unsigned c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= p.f) return;
    const unsigned h = p.h, width = p.width, b = blockIdx.z;
    const size_t c2 = 2 * size_t(p.f);
    const T* x = static_cast<const T*>(p.x) + size_t(b) * h * width * c2 + c;
    T* out = static_cast<T*>(p.out) + size_t(b) * h * width * p.f + c;
    const T* w = static_cast<const T*>(p.w);
    float wv[9], wg[9];
    SANA_UNROLL
    for (int t = 0; t < 9; ++t) {
        wv[t] = sana::to_float(w[size_t(c) * 9 + t]);
        wg[t] = sana::to_float(w[(size_t(c) + p.f) * 9 + t]);
    }
    const float bv = sana::to_float(static_cast<const T*>(p.bias)[c]);
    const float bg = sana::to_float(static_cast<const T*>(p.bias)[c + p.f]);

    const unsigned i0 = blockIdx.y * p.rows, i1 = i0 + p.rows < h ? i0 + p.rows : h;
    for (unsigned i = i0; i < i1; ++i) {
        // Column j of the window (rows i−1, i, i+1), zeros outside the grid.
        auto load = [&](unsigned j, float (&v)[3], float (&g)[3]) {
            SANA_UNROLL
            for (int di = 0; di < 3; ++di) {
                const unsigned ii = i + di - 1;  // wraps to a huge value above the first row
                if (ii < h && j < width) {
                    const size_t at = (size_t(ii) * width + j) * c2;
                    v[di] = sana::to_float(x[at]);
                    g[di] = sana::to_float(x[at + p.f]);
                } else {
                    v[di] = 0.0f;
                    g[di] = 0.0f;
                }
            }
        };
        float vl[3] = {}, gl[3] = {}, vm[3], gm[3], vr[3], gr[3];
        load(0, vm, gm);
        for (unsigned j = 0; j < width; ++j) {
            load(j + 1, vr, gr);
            float value = bv, gate = bg;
            SANA_UNROLL
            for (int di = 0; di < 3; ++di) {
                value += wv[3 * di] * vl[di];
                value += wv[3 * di + 1] * vm[di];
                value += wv[3 * di + 2] * vr[di];
                gate += wg[3 * di] * gl[di];
                gate += wg[3 * di + 1] * gm[di];
                gate += wg[3 * di + 2] * gr[di];
            }
            out[(size_t(i) * width + j) * p.f] = sana::from_float<T>(value * sana::silu(gate));
            SANA_UNROLL
            for (int di = 0; di < 3; ++di) {
                vl[di] = vm[di];
                vm[di] = vr[di];
                gl[di] = gm[di];
                gm[di] = gr[di];
            }
        }
    }
}

SANA_KERNEL_PER_DTYPE(dwconv3x3_glu, DwConvGluParams)

// ---------------------------------------------------------------------------------------------------------------
// Depthwise k×k convolution (k odd), zero padding k/2, optional bias: the DC-AE's multi-scale branch (5×5, no bias;
// docs/numerics/dc-ae.md §3.4). CPU reference: src/cpu/conv.rs `depthwise_conv`.
//     out[b, i·w + j, c] = bias[c] + Σ_{di, dj ∈ 0..k} wt[c, di, dj] · x[b, (i+di−k/2)·w + (j+dj−k/2), c]
// Layout: x, out [B, h·w, C]; wt [C, k, k] (PyTorch's [C, 1, k, k]); bias [C] or none.
// Geometry (src/launch/conv.rs): grid (⌈C/128⌉, ⌈h/ROWS⌉, B), 128 threads; thread t owns channel c = 128·x + t and
// walks ROWS output rows; warps read 32 consecutive channels of one pixel (coalesced); the k² weights of a channel
// stay in L1 across the strip.
// Accumulation: f32, bias (or 0) first, then the in-grid taps row-major (the reference's order); one rounding.

// Mirrors DepthwiseConvParams in src/launch/conv.rs.
struct DepthwiseConvParams {
    void* out;
    const void* x;
    const void* w;
    const void* bias;  // null without bias
    unsigned h;
    unsigned width;
    unsigned c;
    unsigned k;
    unsigned rows;  // output rows per block
    unsigned reserved;
};
static_assert(sizeof(DepthwiseConvParams) == 56, "DepthwiseConvParams must match src/launch/conv.rs");
SANA_PARAMS_LAYOUT(DepthwiseConvParams, out, x, w, bias, h, width, c, k, rows, reserved)

template <typename T>
__device__ __forceinline__ void depthwise_conv(const DepthwiseConvParams& p) {
    const unsigned c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= p.c) return;
    const unsigned h = p.h, width = p.width, k = p.k, r = p.k / 2;
    const size_t pixels = size_t(h) * width;
    const T* x = static_cast<const T*>(p.x) + size_t(blockIdx.z) * pixels * p.c + c;
    T* out = static_cast<T*>(p.out) + size_t(blockIdx.z) * pixels * p.c + c;
    const T* w = static_cast<const T*>(p.w) + size_t(c) * k * k;
    const float b = p.bias ? sana::to_float(static_cast<const T*>(p.bias)[c]) : 0.0f;
    const unsigned i0 = blockIdx.y * p.rows, i1 = i0 + p.rows < h ? i0 + p.rows : h;
    for (unsigned i = i0; i < i1; ++i) {
        for (unsigned j = 0; j < width; ++j) {
            float acc = b;
            for (unsigned di = 0; di < k; ++di) {
                const unsigned ii = i + di - r;  // wraps to a huge value above the grid
                if (ii >= h) continue;
                for (unsigned dj = 0; dj < k; ++dj) {
                    const unsigned jj = j + dj - r;
                    if (jj < width) acc += sana::to_float(w[di * k + dj]) * sana::to_float(x[(size_t(ii) * width + jj) * p.c]);
                }
            }
            out[(size_t(i) * width + j) * p.c] = sana::from_float<T>(acc);
        }
    }
}

SANA_KERNEL_PER_DTYPE(depthwise_conv, DepthwiseConvParams)

// ---------------------------------------------------------------------------------------------------------------
// Grouped 1×1 convolution without bias (PyTorch Conv2d(Cin, Cout, 1, groups = G)): the DC-AE's multi-scale point-
// wise projection, 3·n_h groups of 32 → 32 channels (docs/numerics/dc-ae.md §3.4). CPU reference: src/cpu/linear.rs
// `grouped_linear`.
//     out[r, o] = Σ_{e < Ci} x[r, g·Ci + e] · wt[o, e],   g = o / Co,  Ci = Cin/G, Co = Cout/G
// Layout: x [R, Cin] (rows = B·N tokens), wt [Cout, Ci], out [R, Cout].
// Geometry (src/launch/conv.rs): grid (⌈Cout/128⌉·⌈R/ROWS⌉), 128 threads; block x serves channel tile x % ⌈Cout/128⌉
// of row strip x / ⌈Cout/128⌉ — all on grid.x, whose limit is 2³¹ − 1: R = B·h·w reaches 4·512² in the DC-AE's
// deepest attention stage at 4096², 65536 strips, one more than grid.y takes. Thread t owns output channel
// o = 128·tile + t, keeps nothing but its accumulator and walks ROWS rows; the threads of one group read the same x
// values (broadcast), and wt rows stay in L1 across the strip.
// Accumulation: f32, sequential over e; one rounding.

// Mirrors GroupedLinearParams in src/launch/conv.rs.
struct GroupedLinearParams {
    void* out;
    const void* x;
    const void* w;
    unsigned long long rows_total;  // R
    unsigned cin;
    unsigned cout;
    unsigned group_in;   // Ci
    unsigned group_out;  // Co
    unsigned rows;       // rows per block
    unsigned reserved;
};
static_assert(sizeof(GroupedLinearParams) == 56, "GroupedLinearParams must match src/launch/conv.rs");
SANA_PARAMS_LAYOUT(GroupedLinearParams, out, x, w, rows_total, cin, cout, group_in, group_out, rows, reserved)

template <typename T>
__device__ __forceinline__ void grouped_linear(const GroupedLinearParams& p) {
    const unsigned channel_tiles = (p.cout + blockDim.x - 1) / blockDim.x;
    const unsigned o = blockIdx.x % channel_tiles * blockDim.x + threadIdx.x;
    if (o >= p.cout) return;
    const T* w = static_cast<const T*>(p.w) + size_t(o) * p.group_in;
    const size_t first = size_t(o / p.group_out) * p.group_in;
    const size_t r0 = size_t(blockIdx.x / channel_tiles) * p.rows;
    const size_t r1 = r0 + p.rows < p.rows_total ? r0 + p.rows : p.rows_total;
    for (size_t r = r0; r < r1; ++r) {
        const T* x = static_cast<const T*>(p.x) + r * p.cin + first;
        float acc = 0.0f;
        for (unsigned e = 0; e < p.group_in; ++e) acc += sana::to_float(x[e]) * sana::to_float(w[e]);
        static_cast<T*>(p.out)[r * p.cout + o] = sana::from_float<T>(acc);
    }
}

SANA_KERNEL_PER_DTYPE(grouped_linear, GroupedLinearParams)
