// ReLU linear attention of Sana's self-attention (docs/numerics/transformer.md §8), in two phases with an f32 state.
//
// Formula, per batch item b and head h (head dimension 32, features [32h, 32h + 32) of each token):
//     S  = Σ_n [v_n; 1] ⊗ relu(k_n)        (33 × 32: rows 0..31 are KV[i][j] = Σ_n v_n[i]·relu(k_n[j]),
//                                           row 32 is ks[j] = Σ_n relu(k_n[j]))
//     out_n[i] = (Σ_j KV[i][j]·relu(q_n[j])) / (Σ_j ks[j]·relu(q_n[j]) + eps)
// eps is added after both contractions, as upstream (diffusers: 1e-15). No softmax, no 1/√d, no mask.
// CPU reference: src/cpu/linear_attn.rs `linear_attention`.
//
// Layout: q, k, v, out [B, N, heads·32], channels-last (token-major, heads contiguous within a token), all in the
// storage dtype. Workspaces (f32, 16-byte aligned): partials [B, heads, chunks, 33, 32], state [B, heads, 33, 32].
//
// Kernels and geometry (src/launch/linear_attn.rs):
// 1. linear_attn_state_*: grid (chunks, heads, B), 128 threads. Block (c, h, b) reduces tokens
//    [c·chunk_tokens, (c+1)·chunk_tokens) ∩ [0, N) into its partial S. Tiles of 32 tokens of relu(k) and v are
//    staged in f32 shared memory (8 KiB, 16-byte pack loads); the block is two groups of 64 threads taking
//    alternate tokens, each thread owning a 4×4 tile of KV (4 value rows × 4 key columns, 16 FMAs per two 128-bit
//    shared loads) and, for the threads of the first row tile, 4 entries of ks. The two groups are summed through
//    shared memory, group 0 + group 1, and written with 128-bit stores.
// 2. linear_attn_reduce_f32: grid (heads, B), 256 threads: state = Σ_c partials[c], in chunk order.
// 3. linear_attn_apply_*: grid (ceil(N/64), heads, B), 128 threads = 4 warps. The block stages S (padded rows of 33
//    floats: conflict-free) and 64 tokens of relu(q) in shared memory (12.5 KiB); lane i keeps row i of KV in
//    registers, each warp takes every 4th token: num_i and the denominator (computed redundantly per lane from
//    broadcast reads, no shuffles) are 32-term f32 sums.
//
// Accumulation: f32 throughout, in a fixed order (tokens in sequence per group, group 0 + group 1, chunks in order,
// j in order), so results are deterministic run to run; no atomics. relu(q), relu(k) are exact in any dtype. The
// output is rounded once to the storage dtype; upstream rounds the same f32 quotient.

#include "common.cuh"

// Mirrors LinearAttentionParams in src/launch/linear_attn.rs; one struct for the three kernels.
struct LinearAttentionParams {
    void* out;
    const void* q;
    const void* k;
    const void* v;
    float* partials;        // [B, heads, chunks, 33, 32]
    float* state;           // [B, heads, 33, 32]
    unsigned n;             // tokens per batch item
    unsigned heads;         // heads of dimension 32; the token stride is 32·heads
    unsigned chunks;        // phase-1 blocks per (batch item, head)
    unsigned chunk_tokens;  // tokens per phase-1 block (the last one may have fewer)
    float eps;
    unsigned aligned;  // q, k, v, out 16-byte aligned: 128-bit global loads
};
static_assert(sizeof(LinearAttentionParams) == 72, "LinearAttentionParams must match src/launch/linear_attn.rs");
SANA_PARAMS_LAYOUT(LinearAttentionParams, out, q, k, v, partials, state, n, heads, chunks, chunk_tokens, eps, aligned)

namespace {
constexpr unsigned HEAD_DIM = 32;
constexpr unsigned STATE = (HEAD_DIM + 1) * HEAD_DIM;  // floats of S per (b, h)
constexpr unsigned STATE_TILE = 32;                    // tokens staged at a time by phase 1
constexpr unsigned APPLY_TOKENS = 64;                  // tokens per phase-2 block; mirrors APPLY_TOKENS in Rust

__device__ __forceinline__ unsigned min_u(unsigned a, unsigned b) { return a < b ? a : b; }

// Loads `count` tokens × 32 features of head `h` from `src` (row stride `stride` elements) into `dst[token][32]` as
// f32, applying ReLU when `relu`; one 16-byte pack per iteration.
template <typename T>
__device__ __forceinline__ void stage(float* dst, const T* src, size_t stride, unsigned count, bool relu,
                                      bool aligned) {
    constexpr unsigned P = sana::Pack<T>::size, PACKS = HEAD_DIM / P;
    for (unsigned e = threadIdx.x; e < count * PACKS; e += blockDim.x) {
        const unsigned tok = e / PACKS, c0 = e % PACKS * P;
        const sana::Pack<T> pk = sana::load_pack(src + tok * stride + c0, aligned);
        for (unsigned i = 0; i < P; ++i) {
            const float f = sana::to_float(pk.v[i]);
            dst[tok * HEAD_DIM + c0 + i] = relu ? fmaxf(f, 0.0f) : f;
        }
    }
}
}  // namespace

// ------------------------------------------------------------------------------------------- phase 1: partial S
template <typename T>
__device__ __forceinline__ void linear_attn_state(const LinearAttentionParams& p) {
    __shared__ __align__(16) float tile[2 * STATE_TILE * HEAD_DIM];  // relu(k) tokens, then v tokens
    float* ks = tile;
    float* vs = tile + STATE_TILE * HEAD_DIM;
    const unsigned chunk = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const size_t stride = size_t(p.heads) * HEAD_DIM;
    const size_t base = size_t(b) * p.n * stride + h * HEAD_DIM;
    const T* k = static_cast<const T*>(p.k) + base;
    const T* v = static_cast<const T*>(p.v) + base;
    const unsigned begin = chunk * p.chunk_tokens, end = min_u(begin + p.chunk_tokens, p.n);
    const unsigned group = threadIdx.x / 64, t = threadIdx.x % 64;
    const unsigned ti = t / 8, tj = t % 8;  // KV rows 4ti..4ti+3 (value features), columns 4tj..4tj+3 (key features)

    float acc[4][4] = {};
    float ksum[4] = {};
    for (unsigned t0 = begin; t0 < end; t0 += STATE_TILE) {
        const unsigned count = min_u(STATE_TILE, end - t0);
        __syncthreads();  // the previous tile is consumed
        stage(ks, k + t0 * stride, stride, count, true, p.aligned);
        stage(vs, v + t0 * stride, stride, count, false, p.aligned);
        __syncthreads();
        for (unsigned tok = group; tok < count; tok += 2) {
            const sana::Pack<float> kk = sana::load_pack(ks + tok * HEAD_DIM + 4 * tj, true);
            const sana::Pack<float> vv = sana::load_pack(vs + tok * HEAD_DIM + 4 * ti, true);
            SANA_UNROLL
            for (int a = 0; a < 4; ++a) {
                SANA_UNROLL
                for (int c = 0; c < 4; ++c) acc[a][c] += vv.v[a] * kk.v[c];
            }
            if (ti == 0) {
                SANA_UNROLL
                for (int c = 0; c < 4; ++c) ksum[c] += kk.v[c];
            }
        }
    }

    // Group 1 hands its sums to group 0 through the (now free) tile: 20 values per thread, thread-minor.
    __syncthreads();
    if (group == 1) {
        SANA_UNROLL
        for (int e = 0; e < 16; ++e) tile[e * 64 + t] = acc[e / 4][e % 4];
        SANA_UNROLL
        for (int c = 0; c < 4; ++c) tile[(16 + c) * 64 + t] = ksum[c];
    }
    __syncthreads();
    if (group != 0) return;
    float* out = p.partials + ((size_t(b) * p.heads + h) * p.chunks + chunk) * STATE;
    SANA_UNROLL
    for (int a = 0; a < 4; ++a) {
        sana::Pack<float> row;
        SANA_UNROLL
        for (int c = 0; c < 4; ++c) row.v[c] = acc[a][c] + tile[(a * 4 + c) * 64 + t];
        sana::store_pack(out + (4 * ti + a) * HEAD_DIM + 4 * tj, row, true);
    }
    if (ti == 0) {
        sana::Pack<float> row;
        SANA_UNROLL
        for (int c = 0; c < 4; ++c) row.v[c] = ksum[c] + tile[(16 + c) * 64 + t];
        sana::store_pack(out + HEAD_DIM * HEAD_DIM + 4 * tj, row, true);
    }
}

// ------------------------------------------------------------------------------------------- reduce the chunks
extern "C" __global__ void linear_attn_reduce_f32(const LinearAttentionParams p) {
    const size_t bh = size_t(blockIdx.y) * p.heads + blockIdx.x;
    const float* src = p.partials + bh * p.chunks * STATE;
    for (unsigned e = threadIdx.x; e < STATE; e += blockDim.x) {
        float s = 0.0f;
        for (unsigned c = 0; c < p.chunks; ++c) s += src[size_t(c) * STATE + e];
        p.state[bh * STATE + e] = s;
    }
}

// ------------------------------------------------------------------------------------------- phase 2: apply S
template <typename T>
__device__ __forceinline__ void linear_attn_apply(const LinearAttentionParams& p) {
    constexpr unsigned ROW = HEAD_DIM + 1;  // padded KV row: lane i reading row i hits bank (i + j) % 32
    __shared__ float kv_s[HEAD_DIM * ROW];
    __shared__ __align__(16) float ks_s[HEAD_DIM];
    __shared__ __align__(16) float qs[APPLY_TOKENS * HEAD_DIM];
    const unsigned h = blockIdx.y, b = blockIdx.z, t0 = blockIdx.x * APPLY_TOKENS;
    const unsigned count = min_u(APPLY_TOKENS, p.n - t0);
    const size_t stride = size_t(p.heads) * HEAD_DIM;
    const size_t base = (size_t(b) * p.n + t0) * stride + h * HEAD_DIM;

    const float* s = p.state + (size_t(b) * p.heads + h) * STATE;
    for (unsigned e = threadIdx.x; e < STATE; e += blockDim.x) {
        const unsigned i = e / HEAD_DIM, j = e % HEAD_DIM;
        if (i < HEAD_DIM) {
            kv_s[i * ROW + j] = s[e];
        } else {
            ks_s[j] = s[e];
        }
    }
    stage(qs, static_cast<const T*>(p.q) + base, stride, count, true, p.aligned);
    __syncthreads();

    const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    float kv[HEAD_DIM];
    SANA_UNROLL
    for (unsigned j = 0; j < HEAD_DIM; ++j) kv[j] = kv_s[lane * ROW + j];
    T* out = static_cast<T*>(p.out) + base;
    for (unsigned tok = warp; tok < count; tok += warps) {
        float num = 0.0f, den = 0.0f;
        SANA_UNROLL
        for (unsigned j0 = 0; j0 < HEAD_DIM; j0 += 4) {
            const sana::Pack<float> q4 = sana::load_pack(qs + tok * HEAD_DIM + j0, true);
            const sana::Pack<float> k4 = sana::load_pack(ks_s + j0, true);
            SANA_UNROLL
            for (unsigned c = 0; c < 4; ++c) {
                num += kv[j0 + c] * q4.v[c];
                den += k4.v[c] * q4.v[c];
            }
        }
        out[tok * stride + lane] = sana::from_float<T>(num / (den + p.eps));
    }
}

// ------------------------------------------------------------------------------------------- entries
SANA_KERNEL_PER_DTYPE(linear_attn_state, LinearAttentionParams)
SANA_KERNEL_PER_DTYPE(linear_attn_apply, LinearAttentionParams)
SANA_EMU_ENTRY(linear_attn_reduce_f32, LinearAttentionParams)
