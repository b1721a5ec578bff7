// Causal softmax self-attention of Gemma-2 (docs/numerics/text-encoder.md §9.4, §10): grouped-query heads, optional
// soft-capping, optional sliding window, key padding mask; flash-style (one pass over the keys with an online
// softmax) on CUDA cores, as kernels/attention.cu.
//
// Formula, per batch item b, query head h (reading key/value head h / group, group = heads / kv_heads) and query i:
//     s_j   = scale · (q_i · k_j),  then  s_j = c · tanh(s_j / c)  when soft-capping (c > 0)
//     key j is visible iff  j ≤ i,  i − j < window  and  key_mask[b, j] ≠ 0
//     out_i = Σ_{visible j} softmax(s)_j · v_j
// A query with no visible key (only when every key of its window is padding) gets the mean of all L values: eager
// transformers adds finfo(f32).min to masked scores, which absorbs every score, so its softmax is uniform over all
// keys. CPU reference: src/cpu/causal_attention.rs.
//
// Layout: q, out [B, L, heads·d]; k, v [B, L, kv_heads·d] (token-major, head h owns features [h·d, h·d + d));
// key_mask [B, L] (1 = token, 0 = padding); all in the storage dtype. `window` ≤ L (L when there is none).
//
// Geometry (src/launch/causal_attention.rs): grid (ceil(L/QPB), heads, B), 4·QPB threads. The block owns QPB
// queries; thread t works on the query pair (t/8, t/8 + QPB/2) with lane g = t % 8 of its group of eight: it holds
// the accumulators of dims g, g+8, … (DC = ⌈d/8⌉ per query: the output accumulator is split over the eight lanes,
// so d = 256 needs 64 accumulators per thread) and scores the keys g, g+8, … of each key tile of TK = 8·KPL keys.
// Only the key tiles some query of the block can see are visited: [q0 + 1 − window, q0 + QPB). Per key tile:
//   load K, V (f32) and the mask tile into shared memory → scores of 2 queries × KPL keys → causal/window/padding
//   mask (−∞) → row max over the 8 lanes, rescale, p = exp(s − max) into shared memory → acc += P·V.
// Classes (template DC, KPL, QPB; mirrors HeadDimClass in src/launch/causal_attention.rs): d ≤ 64 (the tiny test
// model's 16), d ≤ 128, d ≤ 256 (Gemma-2-2B); the last with 16 queries and 8-key tiles to stay in 48 KiB.
// Dynamic shared memory: Q tile [QPB][d|1], K tile [TK][d|1] (odd strides: the 8 rows a warp reads fall in distinct
// banks), V tile [TK][d], P [QPB][TK+1], mask [TK], fallback flags [QPB]: 29.3 / 35.3 / 33.5 KiB.
//
// Accumulation: f32 scores (d-term dot product, then the scale, then the cap: the CPU reference's order), f32
// online softmax (running max, rescaled running sum and accumulators; expf and tanhf, not the fast intrinsics),
// f32 P·V; the row sum is kept per lane and added over the 8 lanes at the end; one rounding to the storage dtype. A
// tile whose keys are all masked for a query leaves its running state alone (no exp(−∞ − (−∞))).

#include "attention_tile.cuh"

// Mirrors CausalAttentionParams in src/launch/causal_attention.rs.
struct CausalAttentionParams {
    void* out;
    const void* q;
    const void* k;
    const void* v;
    const void* key_mask;
    unsigned l;          // tokens per batch item (≥ 1)
    unsigned heads;      // query heads
    unsigned group;      // query heads per key/value head
    unsigned d;          // head dimension, ≤ 8·DC of the kernel
    unsigned q_stride;   // heads·d: elements per token of q and out
    unsigned kv_stride;  // kv_heads·d: elements per token of k and v
    unsigned window;     // query i sees key j only if i − j < window; ≤ L
    float scale;
    float softcap;       // 0: no soft-capping
    unsigned pad;
};
static_assert(sizeof(CausalAttentionParams) == 80, "CausalAttentionParams must match src/launch/causal_attention.rs");
SANA_PARAMS_LAYOUT(CausalAttentionParams, out, q, k, v, key_mask, l, heads, group, d, q_stride, kv_stride, window,
                   scale, softcap, pad)

using namespace sana_attention;

template <typename T, int DC, int KPL, unsigned QPB>
__device__ __forceinline__ void causal_attention(const CausalAttentionParams& p) {
    constexpr unsigned TK = LANES * KPL;
    const unsigned d = p.d, qs = d | 1u, ps = TK + 1;
    float* q_s = sana::dynamic_smem<float>();  // [QPB][qs]
    float* k_s = q_s + QPB * qs;               // [TK][qs]
    float* v_s = k_s + TK * qs;                // [TK][d]
    float* p_s = v_s + TK * d;                 // [QPB][ps]
    float* mask_s = p_s + QPB * ps;            // [TK]
    float* need_s = mask_s + TK;               // [QPB]: 1 where the query saw no key

    const unsigned h = blockIdx.y, b = blockIdx.z, q0 = blockIdx.x * QPB;
    const unsigned rows = min_u(QPB, p.l - q0), kvh = h / p.group;
    const size_t q_stride = p.q_stride, kv_stride = p.kv_stride;
    const T* q = static_cast<const T*>(p.q) + (size_t(b) * p.l + q0) * q_stride + size_t(h) * d;
    const T* k = static_cast<const T*>(p.k) + size_t(b) * p.l * kv_stride + size_t(kvh) * d;
    const T* v = static_cast<const T*>(p.v) + size_t(b) * p.l * kv_stride + size_t(kvh) * d;
    const T* mask = static_cast<const T*>(p.key_mask) + size_t(b) * p.l;

    // Query rows past L are zeros: their scores are finite and never written out.
    for (unsigned e = threadIdx.x; e < QPB * d; e += blockDim.x) {
        const unsigned r = e / d, c = e % d;
        q_s[r * qs + c] = r < rows ? sana::to_float(q[r * q_stride + c]) : 0.0f;
    }

    const unsigned pair = threadIdx.x / LANES, g = threadIdx.x % LANES;
    const unsigned row[2] = {pair, pair + QPB / 2};
    float m[2] = {-INFINITY, -INFINITY}, lsum[2] = {0.0f, 0.0f};
    float acc[2][DC] = {};

    // Keys any query of the block may see: from the window's start for query q0 to the block's last query.
    const unsigned hi = q0 + rows;
    const unsigned lo = p.window == 0 ? hi : (q0 + 1 > p.window ? q0 + 1 - p.window : 0);
    for (unsigned l0 = lo; l0 < hi; l0 += TK) {
        const unsigned keys = min_u(TK, hi - l0);
        __syncthreads();  // the previous tile's K, V and P are consumed (and, first time, Q is written)
        stage_kv(k, v, kv_stride, l0, keys, d, qs, k_s, v_s);
        for (unsigned j = threadIdx.x; j < keys; j += blockDim.x) mask_s[j] = sana::to_float(mask[l0 + j]);
        __syncthreads();

        float s[2][KPL];
        pair_scores(q_s, k_s, qs, d, row, g, s);
        SANA_UNROLL
        for (int r = 0; r < 2; ++r) {
            const unsigned i = q0 + row[r];
            SANA_UNROLL
            for (int kk = 0; kk < KPL; ++kk) {
                const unsigned j = g + LANES * kk, key = l0 + j;
                const bool visible = j < keys && key <= i && i - key < p.window && mask_s[j] != 0.0f;
                float score = s[r][kk] * p.scale;
                if (p.softcap > 0.0f) score = tanhf(score / p.softcap) * p.softcap;
                s[r][kk] = visible ? score : -INFINITY;
            }
            online_softmax_tile<true>(s[r], g, m[r], lsum[r], acc[r], p_s + row[r] * ps);
        }
        __syncthreads();

        accumulate_pv(p_s, v_s, ps, d, keys, row, g, acc);
    }

    float total[2];
    SANA_UNROLL
    for (int r = 0; r < 2; ++r) {
        total[r] = group_sum(lsum[r]);
        if (g == 0) need_s[row[r]] = row[r] < rows && total[r] == 0.0f ? 1.0f : 0.0f;
    }
    __syncthreads();
    bool any = false;
    for (unsigned r = 0; r < QPB; ++r) any |= need_s[r] != 0.0f;

    // The rare block holding a query that saw no key: its rows become the plain mean of all L values.
    if (any) {
        bool need[2];
        SANA_UNROLL
        for (int r = 0; r < 2; ++r) {
            need[r] = need_s[row[r]] != 0.0f;
            if (need[r]) {
                total[r] = float(p.l);
                SANA_UNROLL
                for (int c = 0; c < DC; ++c) acc[r][c] = 0.0f;
            }
        }
        for (unsigned l0 = 0; l0 < p.l; l0 += TK) {
            const unsigned keys = min_u(TK, p.l - l0);
            __syncthreads();
            for (unsigned e = threadIdx.x; e < keys * d; e += blockDim.x) {
                const unsigned j = e / d, c = e % d;
                v_s[j * d + c] = sana::to_float(v[(l0 + j) * kv_stride + c]);
            }
            __syncthreads();
            SANA_UNROLL
            for (int r = 0; r < 2; ++r) {
                if (!need[r]) continue;
                for (unsigned j = 0; j < keys; ++j) {
                    SANA_UNROLL
                    for (int c = 0; c < DC; ++c) {
                        const unsigned dim = g + LANES * c;
                        if (dim < d) acc[r][c] += v_s[j * d + dim];
                    }
                }
            }
        }
    }

    T* out = static_cast<T*>(p.out) + (size_t(b) * p.l + q0) * q_stride + size_t(h) * d;
    SANA_UNROLL
    for (int r = 0; r < 2; ++r) {
        if (row[r] >= rows) continue;
        SANA_UNROLL
        for (int c = 0; c < DC; ++c) {
            const unsigned dim = g + LANES * c;
            if (dim < d) out[row[r] * q_stride + dim] = sana::from_float<T>(acc[r][c] / total[r]);
        }
    }
}

// ------------------------------------------------------------------------------------------- entries
// causal_attention_d<D>_<dtype> serves head dimensions up to D; mirrors HeadDimClass in
// src/launch/causal_attention.rs.
#define SANA_CAUSAL_ATTENTION(name, DC, KPL, QPB)                                                         \
    extern "C" __global__ void name##_f32(const CausalAttentionParams p) {                               \
        causal_attention<float, DC, KPL, QPB>(p);                                                         \
    }                                                                                                     \
    extern "C" __global__ void name##_bf16(const CausalAttentionParams p) {                              \
        causal_attention<__nv_bfloat16, DC, KPL, QPB>(p);                                                 \
    }                                                                                                     \
    extern "C" __global__ void name##_f16(const CausalAttentionParams p) {                               \
        causal_attention<__half, DC, KPL, QPB>(p);                                                        \
    }                                                                                                     \
    SANA_EMU_ENTRY(name##_f32, CausalAttentionParams)                                                     \
    SANA_EMU_ENTRY(name##_bf16, CausalAttentionParams)                                                    \
    SANA_EMU_ENTRY(name##_f16, CausalAttentionParams)

SANA_CAUSAL_ATTENTION(causal_attention_d64, 8, 4, 32)
SANA_CAUSAL_ATTENTION(causal_attention_d128, 16, 2, 32)
SANA_CAUSAL_ATTENTION(causal_attention_d256, 32, 1, 16)
