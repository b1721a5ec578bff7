// Softmax attention with an additive key bias: Sana's cross-attention from image tokens to the caption
// (docs/numerics/transformer.md §9), flash-style (one pass over the keys with an online softmax) on CUDA cores.
//
// Formula, per batch item b, head h and query n (head dimension d, scale = 1/√d):
//     s_m   = scale · (q_n · k_m) + bias[b, m]          m ∈ [0, L)
//     out_n = Σ_m softmax(s)_m · v_m
// The bias is diffusers' (1 − mask)·(−10000) in the model dtype (−9984 in bf16): masked keys get weight exp(−10⁴)
// = 0 in f32, and a row whose keys are all masked averages all L values, as upstream. CPU reference:
// src/cpu/attention.rs `attention`.
//
// Layout: q, out [B, N, heads·d]; k, v [B, L, heads·d] (token-major, head h owns features [h·d, h·d + d));
// key_bias [B, L]; all in the storage dtype.
//
// Geometry (src/launch/attention.rs): grid (ceil(N/32), heads, B), 128 threads. The block owns 32 queries; thread
// t works on the query pair (t/8, t/8 + 16) with lane g = t % 8 of its group of eight: it holds the accumulators of
// dims g, g+8, … (DC = ⌈d/8⌉ per query, a template class: d ≤ 32, 72, 112, 128) and scores the keys g, g+8, … of
// each key tile of TK = 8·KPL keys (32; 16 for d > 112, to fit shared memory). Per key tile:
//   load K, V (f32) and the bias tile into shared memory → scores of 2 queries × KPL keys (2 + KPL shared loads per
//   2·KPL FMAs) → row max over the 8 lanes (3 xor shuffles per query), rescale, p = exp(s − max) into shared
//   memory → acc += P·V (2 + DC shared loads per 2·DC FMAs).
// Dynamic shared memory: Q tile [32][d|1], K tile [TK][d|1] (odd strides: the 8 rows a warp reads fall in distinct
// banks), V tile [TK][d], P [32][TK+1], bias [TK]: ≤ 47.6 KiB for d ≤ 112, 34.4 KiB at d = 128.
//
// Accumulation: f32 scores, f32 online softmax (running max, rescaled running sum and accumulators; expf, not
// __expf), f32 P·V; the row sum is kept per lane and added over the 8 lanes at the end; one rounding to the storage
// dtype. Unlike FlashAttention, P is not rounded to 16 bits before P·V.

#include "attention_tile.cuh"

// Mirrors AttentionParams in src/launch/attention.rs.
struct AttentionParams {
    void* out;
    const void* q;
    const void* k;
    const void* v;
    const void* key_bias;
    unsigned n;       // queries per batch item
    unsigned l;       // keys per batch item (≥ 1)
    unsigned heads;
    unsigned d;       // head dimension, ≤ 8·DC of the kernel
    unsigned stride;  // heads·d: elements per token of q, k, v, out
    float scale;      // 1/√d
};
static_assert(sizeof(AttentionParams) == 64, "AttentionParams must match src/launch/attention.rs");
SANA_PARAMS_LAYOUT(AttentionParams, out, q, k, v, key_bias, n, l, heads, d, stride, scale)

namespace {
constexpr unsigned QUERIES = 32;  // per block; mirrors QUERIES in Rust
}  // namespace

using namespace sana_attention;

template <typename T, int DC, int KPL>
__device__ __forceinline__ void attention(const AttentionParams& p) {
    constexpr unsigned TK = LANES * KPL;
    const unsigned d = p.d, qs = d | 1u, ps = TK + 1;
    float* q_s = sana::dynamic_smem<float>();  // [QUERIES][qs]
    float* k_s = q_s + QUERIES * qs;           // [TK][qs]
    float* v_s = k_s + TK * qs;                // [TK][d]
    float* p_s = v_s + TK * d;                 // [QUERIES][ps]
    float* bias_s = p_s + QUERIES * ps;        // [TK]

    const unsigned h = blockIdx.y, b = blockIdx.z, q0 = blockIdx.x * QUERIES;
    const unsigned rows = min_u(QUERIES, p.n - q0);
    const size_t stride = p.stride;
    const T* q = static_cast<const T*>(p.q) + (size_t(b) * p.n + q0) * stride + h * d;
    const T* k = static_cast<const T*>(p.k) + size_t(b) * p.l * stride + h * d;
    const T* v = static_cast<const T*>(p.v) + size_t(b) * p.l * stride + h * d;
    const T* bias = static_cast<const T*>(p.key_bias) + size_t(b) * p.l;

    // Query rows past N are zeros: their scores are finite and never written out.
    for (unsigned e = threadIdx.x; e < QUERIES * d; e += blockDim.x) {
        const unsigned r = e / d, c = e % d;
        q_s[r * qs + c] = r < rows ? sana::to_float(q[r * stride + c]) : 0.0f;
    }

    const unsigned pair = threadIdx.x / LANES, g = threadIdx.x % LANES;
    const unsigned row[2] = {pair, pair + QUERIES / 2};
    float m[2] = {-INFINITY, -INFINITY}, lsum[2] = {0.0f, 0.0f};
    float acc[2][DC] = {};

    for (unsigned l0 = 0; l0 < p.l; l0 += TK) {
        const unsigned keys = min_u(TK, p.l - l0);
        __syncthreads();  // the previous tile's K, V and P are consumed (and, first time, Q is written)
        stage_kv(k, v, stride, l0, keys, d, qs, k_s, v_s);
        for (unsigned j = threadIdx.x; j < keys; j += blockDim.x) bias_s[j] = sana::to_float(bias[l0 + j]);
        __syncthreads();

        // Scores of the two queries against keys g, g+8, …; keys past the tile's end get −∞ (weight 0).
        float s[2][KPL];
        pair_scores(q_s, k_s, qs, d, row, g, s);
        SANA_UNROLL
        for (int r = 0; r < 2; ++r) {
            SANA_UNROLL
            for (int kk = 0; kk < KPL; ++kk) {
                const unsigned j = g + LANES * kk;
                s[r][kk] = j < keys ? s[r][kk] * p.scale + bias_s[j] : -INFINITY;
            }
            // Key 0 of the first tile is seen by every row (a bias is finite): no empty rows.
            online_softmax_tile<false>(s[r], g, m[r], lsum[r], acc[r], p_s + row[r] * ps);
        }
        __syncthreads();

        accumulate_pv(p_s, v_s, ps, d, keys, row, g, acc);
    }

    T* out = static_cast<T*>(p.out) + (size_t(b) * p.n + q0) * stride + h * d;
    SANA_UNROLL
    for (int r = 0; r < 2; ++r) {
        const float total = group_sum(lsum[r]);
        if (row[r] >= rows) continue;
        SANA_UNROLL
        for (int c = 0; c < DC; ++c) {
            const unsigned dim = g + LANES * c;
            if (dim < d) out[row[r] * stride + dim] = sana::from_float<T>(acc[r][c] / total);
        }
    }
}

// ------------------------------------------------------------------------------------------- entries
// attention_d<D>_<dtype> serves head dimensions up to D; mirrors HeadDimClass in src/launch/attention.rs.
#define SANA_ATTENTION(name, DC, KPL)                                                                     \
    extern "C" __global__ void name##_f32(const AttentionParams p) { attention<float, DC, KPL>(p); }      \
    extern "C" __global__ void name##_bf16(const AttentionParams p) {                                     \
        attention<__nv_bfloat16, DC, KPL>(p);                                                             \
    }                                                                                                     \
    extern "C" __global__ void name##_f16(const AttentionParams p) { attention<__half, DC, KPL>(p); }     \
    SANA_EMU_ENTRY(name##_f32, AttentionParams)                                                           \
    SANA_EMU_ENTRY(name##_bf16, AttentionParams)                                                          \
    SANA_EMU_ENTRY(name##_f16, AttentionParams)

SANA_ATTENTION(attention_d32, 4, 4)
SANA_ATTENTION(attention_d72, 9, 4)
SANA_ATTENTION(attention_d112, 14, 4)
SANA_ATTENTION(attention_d128, 16, 2)
