// Full 3×3 convolution, zero padding 1, stride 1 or 2, optional bias (PyTorch Conv2d(Cin, Cout, 3, stride, 1)): every
// convolution of the DC-AE but its depthwise ones (docs/numerics/dc-ae.md §3). CPU reference: src/cpu/conv.rs
// `conv3x3`.
//
// Formula, per batch item b and output pixel (i, j) of the oh × ow grid (oh = (h − 1)/stride + 1, likewise ow):
//     out[b, i·ow + j, co] = bias[co] + Σ_{di, dj ∈ 0..3} Σ_ci wt[co, ci, di, dj] · x[b, (s·i+di−1)·w + s·j+dj−1, ci]
// (0 outside the grid). Layout: x [B, h·w, Cin] (channels contiguous); wt [Cout, Cin, 3, 3] as PyTorch stores it,
// indexed directly; bias [Cout] or none; out [B, oh·ow, Cout]; all in the storage dtype.
//
// An implicit GEMM: out [M, N] = A [M, K] · Bᵀ + bias with M = B·oh·ow output pixels, N = Cout, K = 9·Cin ordered
// k = (3·di + dj)·Cin + ci (tap-major, so that a row of A reads contiguous channels of one input pixel), A the im2col
// matrix gathered on the fly (zeros for padding and past K), B[n][k] = wt[n, ci, tap].
//
// Geometry (src/launch/conv3x3.rs): grid (⌈M/64⌉, ⌈Cout/64⌉), 128 threads = 4 warps; a block computes a 64 × 64 tile
// of out, each warp a 32 × 32 quarter (2 × 4 fragments of 16 × 8). K advances 32 at a time: the block gathers the
// A (64 × 32) and B (64 × 32) slices into shared memory (each thread one k column, 16 rows of each; rows padded to
// 40 elements so fragment reads hit distinct banks), then each warp runs two k16 steps:
// - bf16/f16: tensor cores, `mma_m16n8k16` (common.cuh), 8 per step;
// - f32: the same tiling and the same per-lane output elements (the accumulator fragment layout of mma), computed
//   with scalar f32 FMAs over the shared slices — tensor cores have no f32 input type, and the f32 engine is the one
//   held to the reference at ~1e-6.
// Accumulation: f32, starting from the bias, in k order (the reference's order; the mma's order inside one
// instruction is the hardware's); one rounding to the storage dtype.

#include "common.cuh"

// Mirrors Conv3x3Params in src/launch/conv3x3.rs.
struct Conv3x3Params {
    void* out;
    const void* x;
    const void* w;
    const void* bias;  // null without bias
    unsigned batch;
    unsigned h, width;  // input grid
    unsigned oh, ow;    // output grid
    unsigned cin, cout;
    unsigned stride;
};
static_assert(sizeof(Conv3x3Params) == 64, "Conv3x3Params must match src/launch/conv3x3.rs");
SANA_PARAMS_LAYOUT(Conv3x3Params, out, x, w, bias, batch, h, width, oh, ow, cin, cout, stride)

namespace {
constexpr unsigned BM = 64, BN = 64, BK = 32;  // BM, BN mirror TILE_M, TILE_N in Rust
constexpr unsigned THREADS = 128;              // mirrors THREADS in Rust
constexpr unsigned LDS = BK + 8;               // padded row of a shared slice
}  // namespace

// The warp's 2 × 4 fragments for one k16 step at column ks of the shared slices; `acc[mi][ni]` holds the
// accumulator fragment of rows 32·wm + 16·mi, columns 32·wn + 8·ni.
template <typename T>
__device__ __forceinline__ void warp_step(const T (&as)[BM][LDS], const T (&bs)[BN][LDS], unsigned ks, unsigned wm,
                                          unsigned wn, float (&acc)[2][4][4]) {
    const unsigned lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    if constexpr (sizeof(T) == 4) {
        SANA_UNROLL
        for (unsigned mi = 0; mi < 2; ++mi) {
            SANA_UNROLL
            for (unsigned ni = 0; ni < 4; ++ni) {
                SANA_UNROLL
                for (unsigned e = 0; e < 4; ++e) {
                    const T* a = as[32 * wm + 16 * mi + g + 8 * (e / 2)] + ks;
                    const T* b = bs[32 * wn + 8 * ni + 2 * t + e % 2] + ks;
                    float v = acc[mi][ni][e];
                    SANA_UNROLL
                    for (unsigned k = 0; k < 16; ++k) v += a[k] * b[k];
                    acc[mi][ni][e] = v;
                }
            }
        }
    } else {
        unsigned a[2][4], b[4][2];
        SANA_UNROLL
        for (unsigned mi = 0; mi < 2; ++mi) {
            const unsigned r = 32 * wm + 16 * mi + g;
            a[mi][0] = sana::ld_pair(&as[r][ks + 2 * t]);
            a[mi][1] = sana::ld_pair(&as[r + 8][ks + 2 * t]);
            a[mi][2] = sana::ld_pair(&as[r][ks + 2 * t + 8]);
            a[mi][3] = sana::ld_pair(&as[r + 8][ks + 2 * t + 8]);
        }
        SANA_UNROLL
        for (unsigned ni = 0; ni < 4; ++ni) {
            const unsigned n = 32 * wn + 8 * ni + g;
            b[ni][0] = sana::ld_pair(&bs[n][ks + 2 * t]);
            b[ni][1] = sana::ld_pair(&bs[n][ks + 2 * t + 8]);
        }
        SANA_UNROLL
        for (unsigned mi = 0; mi < 2; ++mi) {
            SANA_UNROLL
            for (unsigned ni = 0; ni < 4; ++ni) sana::mma_m16n8k16<T>(acc[mi][ni], a[mi], b[ni], acc[mi][ni]);
        }
    }
}

template <typename T>
__device__ __forceinline__ void conv3x3(const Conv3x3Params& p) {
    __shared__ __align__(16) T as[BM][LDS];
    __shared__ __align__(16) T bs[BN][LDS];
    // Per tile row: the first input row and column of the output pixel's window, and its image's first pixel
    // (−1 past M).
    __shared__ int row_iy[BM], row_ix[BM];
    __shared__ long long row_image[BM];

    const unsigned tid = threadIdx.x, warp = tid / 32, wm = warp / 2, wn = warp % 2;
    const unsigned long long m0 = 1ull * blockIdx.x * BM, total = 1ull * p.batch * p.oh * p.ow;
    const unsigned n0 = blockIdx.y * BN, cin = p.cin, cout = p.cout, K = 9 * cin;
    const T* x = static_cast<const T*>(p.x);
    const T* w = static_cast<const T*>(p.w);
    const T zero = sana::from_float<T>(0.0f);

    if (tid < BM) {
        const unsigned long long m = m0 + tid;
        const unsigned long long pixels = 1ull * p.oh * p.ow, q = m % pixels;
        row_iy[tid] = int(q / p.ow * p.stride) - 1;
        row_ix[tid] = int(q % p.ow * p.stride) - 1;
        row_image[tid] = m < total ? (long long)(m / pixels * p.h * p.width) : -1;
    }

    // Each thread's accumulators start from the bias of its columns (the accumulator fragment layout).
    const unsigned lane = tid % 32, t = lane % 4;
    float acc[2][4][4];
    SANA_UNROLL
    for (unsigned ni = 0; ni < 4; ++ni) {
        SANA_UNROLL
        for (unsigned e = 0; e < 2; ++e) {
            const unsigned n = n0 + 32 * wn + 8 * ni + 2 * t + e;
            const float b = p.bias && n < cout ? sana::to_float(static_cast<const T*>(p.bias)[n]) : 0.0f;
            SANA_UNROLL
            for (unsigned mi = 0; mi < 2; ++mi) {
                acc[mi][ni][e] = b;
                acc[mi][ni][e + 2] = b;
            }
        }
    }
    __syncthreads();

    const unsigned kk = tid % BK;
    for (unsigned k0 = 0; k0 < K; k0 += BK) {
        const unsigned k = k0 + kk, tap = k / cin, ci = k % cin;
        const int di = int(tap / 3), dj = int(tap % 3);
        for (unsigned m = tid / BK; m < BM; m += THREADS / BK) {
            T v = zero;
            const int iy = row_iy[m] + di, ix = row_ix[m] + dj;
            if (k < K && row_image[m] >= 0 && iy >= 0 && iy < int(p.h) && ix >= 0 && ix < int(p.width)) {
                v = x[(size_t(row_image[m]) + size_t(iy) * p.width + unsigned(ix)) * cin + ci];
            }
            as[m][kk] = v;
        }
        for (unsigned n = tid / BK; n < BN; n += THREADS / BK) {
            bs[n][kk] = k < K && n0 + n < cout ? w[(size_t(n0 + n) * cin + ci) * 9 + tap] : zero;
        }
        __syncthreads();
        warp_step(as, bs, 0, wm, wn, acc);
        warp_step(as, bs, 16, wm, wn, acc);
        __syncthreads();
    }

    T* out = static_cast<T*>(p.out);
    const unsigned g = lane / 4;
    SANA_UNROLL
    for (unsigned mi = 0; mi < 2; ++mi) {
        SANA_UNROLL
        for (unsigned e = 0; e < 4; ++e) {
            const unsigned long long m = m0 + 32 * wm + 16 * mi + g + 8 * (e / 2);
            if (m >= total) continue;
            SANA_UNROLL
            for (unsigned ni = 0; ni < 4; ++ni) {
                const unsigned n = n0 + 32 * wn + 8 * ni + 2 * t + e % 2;
                if (n < cout) out[m * cout + n] = sana::from_float<T>(acc[mi][ni][e]);
            }
        }
    }
}

SANA_KERNEL_PER_DTYPE(conv3x3, Conv3x3Params)
