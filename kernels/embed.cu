// Gemma-2's position-independent and positional embeddings (docs/numerics/text-encoder.md §9.1, §9.4): the token
// embedding gather and the rotary position embedding applied to q and k.
//
// Formulas (CPU references: src/cpu/embed.rs, src/cpu/rotary.rs):
//   embedding_*  out[i, :] = table[ids[i], :] · s,  s = scale rounded to the storage dtype (transformers casts Gemma's
//                √hidden normalizer to the weight dtype before the multiply)
//   rotary_*     per head of x, at position l of its row:  y[c]        = x[c]·cos[l, c]        − x[c+h]·sin[l, c]
//                                                          y[c+h]      = x[c+h]·cos[l, c+h]    + x[c]·sin[l, c+h]
//                with h = d/2, c ∈ [0, h): transformers' rotate-half `x·cos + rotate_half(x)·sin`.
//
// Layout: row-major, last dimension contiguous. table [V, D], ids [N] (u32), out [N, D]; x, y [B, L, heads·d];
// cos, sin [L, d] (the full-width tables, `cat(freqs, freqs)`), all in the storage dtype except ids.
//
// Geometry (src/launch/embed.rs): 1-D grids of 256 threads.
// - embedding: one 16-byte Pack (8 bf16/f16 or 4 f32) of one output row per thread; `aligned` (buffers 16-byte
//   aligned and D a multiple of the pack) selects 128-bit loads, otherwise elements go one by one. The plan checks
//   every id against V on the host; the kernel skips an id ≥ V rather than read outside the table (its row stays
//   unwritten), so a plan bypassed is still not a memory fault.
// - rotary: one thread per rotated pair (c, c + h) of one head of one token: B·L·heads·h threads.
//
// Accumulation: f32 from the storage values, one rounding to the storage dtype per output (PyTorch in bf16 rounds
// each product and the sum; the CPU reference rounds them in f32, and nvcc may contract a product and the sum into
// one FMA: both differ from one another by far less than the storage ulp).

#include "common.cuh"

// Mirrors EmbeddingParams in src/launch/embed.rs.
struct EmbeddingParams {
    void* out;
    const void* table;
    const unsigned* ids;
    unsigned n;        // ids
    unsigned d;        // row width
    unsigned vocab;    // rows of the table
    float scale;       // rounded to the storage dtype by the kernel
    unsigned aligned;  // buffers 16-byte aligned and D a multiple of the pack
    unsigned pad;
};
static_assert(sizeof(EmbeddingParams) == 48, "EmbeddingParams must match src/launch/embed.rs");
SANA_PARAMS_LAYOUT(EmbeddingParams, out, table, ids, n, d, vocab, scale, aligned, pad)

// Mirrors RotaryParams in src/launch/embed.rs.
struct RotaryParams {
    void* y;
    const void* x;
    const void* cos;
    const void* sin;
    unsigned rows;   // B·L
    unsigned l;      // positions per batch item
    unsigned heads;
    unsigned d;      // head dimension (even)
};
static_assert(sizeof(RotaryParams) == 48, "RotaryParams must match src/launch/embed.rs");
SANA_PARAMS_LAYOUT(RotaryParams, y, x, cos, sin, rows, l, heads, d)

// ------------------------------------------------------------------------------------------- embedding
template <typename T>
__device__ __forceinline__ void embedding(const EmbeddingParams& p) {
    constexpr int P = sana::Pack<T>::size;
    const size_t packs = (size_t(p.d) + P - 1) / P;
    const size_t t = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (t >= size_t(p.n) * packs) return;
    const size_t i = t / packs, first = (t % packs) * P;
    const unsigned id = p.ids[i];
    if (id >= p.vocab) return;
    const float s = sana::to_float(sana::from_float<T>(p.scale));
    const T* src = static_cast<const T*>(p.table) + size_t(id) * p.d + first;
    T* dst = static_cast<T*>(p.out) + i * p.d + first;
    if (p.aligned) {  // D % P == 0: the pack lies in one row
        const sana::Pack<T> v = sana::load_pack(src, true);
        sana::Pack<T> y;
        for (int e = 0; e < P; ++e) y.v[e] = sana::from_float<T>(sana::to_float(v.v[e]) * s);
        sana::store_pack(dst, y, true);
        return;
    }
    const size_t count = p.d - first < size_t(P) ? p.d - first : size_t(P);
    for (size_t e = 0; e < count; ++e) dst[e] = sana::from_float<T>(sana::to_float(src[e]) * s);
}

// ------------------------------------------------------------------------------------------- rotary
template <typename T>
__device__ __forceinline__ void rotary(const RotaryParams& p) {
    const unsigned half = p.d / 2;
    const size_t t = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
    const size_t per_row = size_t(p.heads) * half;
    if (t >= size_t(p.rows) * per_row) return;
    const size_t row = t / per_row, rest = t % per_row;
    const unsigned h = unsigned(rest / half), c = unsigned(rest % half);
    const size_t pos = row % p.l;
    const size_t at = row * p.heads * p.d + size_t(h) * p.d + c;
    const T* x = static_cast<const T*>(p.x);
    const T* cos = static_cast<const T*>(p.cos) + pos * p.d + c;
    const T* sin = static_cast<const T*>(p.sin) + pos * p.d + c;
    T* y = static_cast<T*>(p.y);
    const float lo = sana::to_float(x[at]), hi = sana::to_float(x[at + half]);
    y[at] = sana::from_float<T>(lo * sana::to_float(cos[0]) - hi * sana::to_float(sin[0]));
    y[at + half] = sana::from_float<T>(hi * sana::to_float(cos[half]) + lo * sana::to_float(sin[half]));
}

// ------------------------------------------------------------------------------------------- entries
SANA_KERNEL_PER_DTYPE(embedding, EmbeddingParams)
SANA_KERNEL_PER_DTYPE(rotary, RotaryParams)
