// The tile machinery shared by the flash-style softmax kernels (attention.cu, causal_attention.cu). A group of
// LANES = 8 lanes owns a pair of query rows; per key tile of TK = 8·KPL keys, lane g of the group scores keys g,
// g+8, … against both rows, folds them into the row's online softmax (online_softmax_tile), and accumulates output
// dimensions g, g+8, … of both rows. Q, K and V tiles are f32 in shared memory: K rows padded to an odd stride `qs`
// so the 8 rows a group reads fall in distinct banks, V rows dense, probabilities P in rows of stride `ps`.
#pragma once

#include "common.cuh"

namespace sana_attention {

constexpr unsigned LANES = 8;

__device__ __forceinline__ unsigned min_u(unsigned a, unsigned b) { return a < b ? a : b; }

// Max over the 8 lanes of the thread's group (lanes differing in bits 0..2).
__device__ __forceinline__ float group_max(float v) {
    for (int offset = 1; offset < int(LANES); offset <<= 1) v = fmaxf(v, __shfl_xor_sync(sana::FULL_MASK, v, offset));
    return v;
}

// Sum over the 8 lanes of the thread's group.
__device__ __forceinline__ float group_sum(float v) {
    for (int offset = 1; offset < int(LANES); offset <<= 1) v += __shfl_xor_sync(sana::FULL_MASK, v, offset);
    return v;
}

// Keys and values l0 .. l0 + keys of one head (rows `stride` elements apart) into k_s [keys][qs] and v_s [keys][d].
template <typename T>
__device__ __forceinline__ void stage_kv(const T* k, const T* v, size_t stride, unsigned l0, unsigned keys,
                                         unsigned d, unsigned qs, float* k_s, float* v_s) {
    for (unsigned e = threadIdx.x; e < keys * d; e += blockDim.x) {
        const unsigned j = e / d, c = e % d;
        k_s[j * qs + c] = sana::to_float(k[(l0 + j) * stride + c]);
        v_s[j * d + c] = sana::to_float(v[(l0 + j) * stride + c]);
    }
}

// Raw dot products of the group's two query rows with keys g, g+8, … of the tile (keys past the tile's end read
// stale shared memory: the caller masks them).
template <int KPL>
__device__ __forceinline__ void pair_scores(const float* q_s, const float* k_s, unsigned qs, unsigned d,
                                            const unsigned (&row)[2], unsigned g, float (&s)[2][KPL]) {
    SANA_UNROLL
    for (int kk = 0; kk < KPL; ++kk) s[0][kk] = s[1][kk] = 0.0f;
    for (unsigned c = 0; c < d; ++c) {
        const float qa = q_s[row[0] * qs + c], qb = q_s[row[1] * qs + c];
        SANA_UNROLL
        for (int kk = 0; kk < KPL; ++kk) {
            const float kv = k_s[(g + LANES * kk) * qs + c];
            s[0][kk] += qa * kv;
            s[1][kk] += qb * kv;
        }
    }
}

// One key tile of the online softmax of one query row, over the 8 lanes of its group: `s` holds the lane's scores of
// keys g, g+8, … (−∞ for a key the row does not see). The running max `m` becomes max(m, the tile's max); the
// running sum `lsum` and the accumulators `acc` are rescaled by exp(m_old − m_new) (0 on the first tile, m_old =
// −∞); the tile's weights exp(s − m_new) are added to `lsum` and written to the row's P at columns g, g+8, ….
// MAY_SEE_NOTHING: a row may have seen no key yet (masks); while m_new = −∞ its state then stays empty (weights 0)
// instead of exp(−∞ − (−∞)) = NaN. Without it the test is compiled out (every row sees a key of its first tile).
// f32 throughout; expf, not __expf. Every lane of the group calls it (group_max shuffles).
template <bool MAY_SEE_NOTHING, int KPL, int DC>
__device__ __forceinline__ void online_softmax_tile(const float (&s)[KPL], unsigned g, float& m, float& lsum,
                                                    float (&acc)[DC], float* p_row) {
    float tile_max = -INFINITY;
    SANA_UNROLL
    for (int kk = 0; kk < KPL; ++kk) tile_max = fmaxf(tile_max, s[kk]);
    const float m_new = fmaxf(m, group_max(tile_max));
    const bool empty = MAY_SEE_NOTHING && m_new == -INFINITY;
    const float corr = empty ? 1.0f : expf(m - m_new);
    m = m_new;
    lsum *= corr;
    SANA_UNROLL
    for (int c = 0; c < DC; ++c) acc[c] *= corr;
    SANA_UNROLL
    for (int kk = 0; kk < KPL; ++kk) {
        const float pk = empty ? 0.0f : expf(s[kk] - m_new);
        lsum += pk;
        p_row[g + LANES * kk] = pk;
    }
}

// acc[r] += Σ_j P[row[r]][j] · V[j] over the tile's keys, for the lane's output dimensions.
template <int DC>
__device__ __forceinline__ void accumulate_pv(const float* p_s, const float* v_s, unsigned ps, unsigned d,
                                              unsigned keys, const unsigned (&row)[2], unsigned g,
                                              float (&acc)[2][DC]) {
    for (unsigned j = 0; j < keys; ++j) {
        const float pa = p_s[row[0] * ps + j], pb = p_s[row[1] * ps + j];
        SANA_UNROLL
        for (int c = 0; c < DC; ++c) {
            const unsigned dim = g + LANES * c;
            if (dim < d) {
                const float vv = v_s[j * d + dim];
                acc[0][c] += pa * vv;
                acc[1][c] += pb * vv;
            }
        }
    }
}

}  // namespace sana_attention
