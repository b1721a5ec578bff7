// Elementwise ops of the Sana blocks (docs/numerics/transformer.md §7, §12): the AdaLN modulation table, the gated
// residual, plain adds, activations, and the gated residual fused with the LayerNorm-modulate that follows it.
//
// Formulas (CPU references: src/cpu/elementwise.rs, src/cpu/norm.rs):
//   modulation_*        out[b, r, j] = table[r, j] + emb[b, r·D + j]     (per_row: emb [B, K·D])
//                                    = table[r, j] + emb[b, j]           (broadcast: emb [B, D], the final layer)
//   add_*               y = a + b
//   mul_*               y = a · b   (Gemma-2's gated MLP: gelu_tanh(gate) · up)
//   activation_*        y = act(a), act ∈ {identity, SiLU, GELU-tanh, ReLU} (PointwiseParams::act, see ACT_*)
//   gated_residual_*    y[b, n, j] = x[b, n, j] + m[b, gate_row, j] · r[b, n, j]
//   gated_residual_layer_norm_modulate_*
//                       x' = x + m_g[b, gate_row] · r   (or x + r without a gate), stored rounded to the dtype
//                       z  = LayerNorm(x')·(1 + m[b, scale_row]) + m[b, shift_row]   (kernels/norm.cu's row:
//                            layer_norm_row.cuh)
//     One pass over the row instead of two kernels: the block's residual update feeds the next norm directly
//     (gate_mlp of block i with norm1 of block i+1; the cross-attention add with norm2). The norm reads x' after
//     rounding, so z is exactly what gated_residual followed by layer_norm_modulate gives.
//
// Layout: row-major, last dimension contiguous. x, r, y, z: [B, N, D]; modulation tables [B, K, D]; table [K, D].
// All tensors of one launch share the storage dtype (f32, bf16 or f16).
//
// Geometry (src/launch/elementwise.rs):
// - add, mul, activation, gated_residual: 1-D grid, 256 threads, each thread one Pack (16 bytes: 8 bf16/f16 or 4 f32) of
//   consecutive elements. `aligned` (every buffer 16-byte aligned, and for gated_residual D a multiple of the pack)
//   selects 128-bit loads; otherwise, and for the tail pack, elements are loaded one by one.
// - modulation: 1-D grid, 256 threads, one output element per thread (B·K·D is small: 6·D per batch item).
// - the fused norm: one block per row as kernels/norm.cu: grid B·N, min(256, D rounded up to 32) threads, the row
//   of x' in f32 dynamic shared memory (4·D bytes).
//
// Accumulation: every value is computed in f32 from the storage values and rounded once to the storage dtype;
// the LayerNorm statistics are the exact two-pass f32 sums of kernels/norm.cu. diffusers in bf16 rounds g·r before
// the add; this kernel rounds only x + g·r (nvcc may contract it into one FMA), i.e. it is the closer of the two to
// the f32 value.

#include "common.cuh"
#include "layer_norm_row.cuh"

// Activation codes of PointwiseParams::act; mirror crate::launch::elementwise::act_code.
constexpr unsigned ACT_IDENTITY = 0, ACT_SILU = 1, ACT_GELU_TANH = 2, ACT_RELU = 3;

// Mirrors ModulationParams in src/launch/elementwise.rs.
struct ModulationParams {
    void* out;
    const void* table;
    const void* emb;
    unsigned batch;
    unsigned k;        // rows of the table
    unsigned d;        // model width
    unsigned per_row;  // 1: emb is [B, K·D]; 0: emb is [B, D], broadcast over the rows
};
static_assert(sizeof(ModulationParams) == 40, "ModulationParams must match src/launch/elementwise.rs");
SANA_PARAMS_LAYOUT(ModulationParams, out, table, emb, batch, k, d, per_row)

// Mirrors PointwiseParams in src/launch/elementwise.rs (add: y = a + b; mul: y = a · b; activation: y = act(a), b
// unused).
struct PointwiseParams {
    void* y;
    const void* a;
    const void* b;
    unsigned long long len;
    unsigned act;
    unsigned aligned;
};
static_assert(sizeof(PointwiseParams) == 40, "PointwiseParams must match src/launch/elementwise.rs");
SANA_PARAMS_LAYOUT(PointwiseParams, y, a, b, len, act, aligned)

// Mirrors GatedResidualParams in src/launch/elementwise.rs.
struct GatedResidualParams {
    void* y;
    const void* x;
    const void* r;
    const void* modulation;
    unsigned rows;  // B·N
    unsigned n;
    unsigned d;
    unsigned k;
    unsigned gate_row;
    unsigned aligned;  // buffers 16-byte aligned and D a multiple of the pack
};
static_assert(sizeof(GatedResidualParams) == 56, "GatedResidualParams must match src/launch/elementwise.rs");
SANA_PARAMS_LAYOUT(GatedResidualParams, y, x, r, modulation, rows, n, d, k, gate_row, aligned)

// Mirrors ResidualNormParams in src/launch/elementwise.rs.
struct ResidualNormParams {
    void* x_out;
    void* z;
    const void* x;
    const void* r;
    const void* gate_modulation;  // [B, gate_k, D], or null: x' = x + r
    const void* modulation;       // [B, k, D]
    unsigned n;
    unsigned d;
    unsigned gate_k;
    unsigned gate_row;
    unsigned k;
    unsigned shift_row;
    unsigned scale_row;
    float eps;
};
static_assert(sizeof(ResidualNormParams) == 80, "ResidualNormParams must match src/launch/elementwise.rs");
SANA_PARAMS_LAYOUT(ResidualNormParams, x_out, z, x, r, gate_modulation, modulation, n, d, gate_k, gate_row, k,
                   shift_row, scale_row, eps)

// ------------------------------------------------------------------------------------------- modulation
template <typename T>
__device__ __forceinline__ void modulation(const ModulationParams& p) {
    const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
    const size_t kd = size_t(p.k) * p.d;
    if (i >= p.batch * kd) return;
    const size_t b = i / kd, rj = i % kd, j = rj % p.d;
    const T* emb = static_cast<const T*>(p.emb);
    const float e = sana::to_float(p.per_row ? emb[i] : emb[b * p.d + j]);
    static_cast<T*>(p.out)[i] = sana::from_float<T>(sana::to_float(static_cast<const T*>(p.table)[rj]) + e);
}

// ------------------------------------------------------------------------------------------- add, mul, activation
__device__ __forceinline__ float activate(float v, unsigned act) {
    switch (act) {
        case ACT_SILU: return sana::silu(v);
        case ACT_GELU_TANH: return sana::gelu_tanh(v);
        case ACT_RELU: return v > 0.0f ? v : 0.0f;
        case ACT_IDENTITY:
        default: return v;
    }
}

// Applies f(a, b) to the thread's pack; `binary` says whether b is read.
template <typename T, bool binary, typename F>
__device__ __forceinline__ void pointwise(const PointwiseParams& p, F f) {
    constexpr int P = sana::Pack<T>::size;
    const size_t first = (size_t(blockIdx.x) * blockDim.x + threadIdx.x) * P;
    if (first >= p.len) return;
    const T* a = static_cast<const T*>(p.a) + first;
    const T* b = binary ? static_cast<const T*>(p.b) + first : nullptr;
    T* y = static_cast<T*>(p.y) + first;
    if (p.aligned && first + P <= p.len) {
        const sana::Pack<T> va = sana::load_pack(a, true);
        sana::Pack<T> vb;
        if (binary) vb = sana::load_pack(b, true);
        sana::Pack<T> vy;
        for (int e = 0; e < P; ++e) {
            vy.v[e] = sana::from_float<T>(f(sana::to_float(va.v[e]), binary ? sana::to_float(vb.v[e]) : 0.0f));
        }
        sana::store_pack(y, vy, true);
        return;
    }
    const size_t count = p.len - first < size_t(P) ? p.len - first : size_t(P);
    for (size_t e = 0; e < count; ++e) {
        y[e] = sana::from_float<T>(f(sana::to_float(a[e]), binary ? sana::to_float(b[e]) : 0.0f));
    }
}

template <typename T>
__device__ __forceinline__ void add(const PointwiseParams& p) {
    pointwise<T, true>(p, [](float a, float b) { return a + b; });
}

template <typename T>
__device__ __forceinline__ void mul(const PointwiseParams& p) {
    pointwise<T, true>(p, [](float a, float b) { return a * b; });
}

template <typename T>
__device__ __forceinline__ void activation(const PointwiseParams& p) {
    const unsigned act = p.act;
    pointwise<T, false>(p, [act](float a, float) { return activate(a, act); });
}

// ------------------------------------------------------------------------------------------- gated residual
template <typename T>
__device__ __forceinline__ void gated_residual(const GatedResidualParams& p) {
    constexpr int P = sana::Pack<T>::size;
    const size_t len = size_t(p.rows) * p.d, nd = size_t(p.n) * p.d;
    const size_t first = (size_t(blockIdx.x) * blockDim.x + threadIdx.x) * P;
    if (first >= len) return;
    const T* x = static_cast<const T*>(p.x);
    const T* r = static_cast<const T*>(p.r);
    const T* m = static_cast<const T*>(p.modulation);
    T* y = static_cast<T*>(p.y);
    auto gate_at = [&](size_t i) { return (i / nd * p.k + p.gate_row) * p.d + i % p.d; };
    if (p.aligned && first + P <= len) {  // D % P == 0: the pack lies in one row
        const sana::Pack<T> vx = sana::load_pack(x + first, true), vr = sana::load_pack(r + first, true);
        const sana::Pack<T> vg = sana::load_pack(m + gate_at(first), true);
        sana::Pack<T> vy;
        for (int e = 0; e < P; ++e) {
            vy.v[e] = sana::from_float<T>(sana::to_float(vx.v[e]) + sana::to_float(vg.v[e]) * sana::to_float(vr.v[e]));
        }
        sana::store_pack(y + first, vy, true);
        return;
    }
    const size_t end = len - first < size_t(P) ? len : first + P;
    for (size_t i = first; i < end; ++i) {
        y[i] = sana::from_float<T>(sana::to_float(x[i]) + sana::to_float(m[gate_at(i)]) * sana::to_float(r[i]));
    }
}

// ------------------------------------------------------------------------------------------- fused residual + norm
template <typename T>
__device__ __forceinline__ void gated_residual_layer_norm_modulate(const ResidualNormParams& p) {
    const size_t row = blockIdx.x, b = row / p.n, d = p.d;
    const T* x = static_cast<const T*>(p.x) + row * d;
    const T* r = static_cast<const T*>(p.r) + row * d;
    T* x_out = static_cast<T*>(p.x_out) + row * d;
    T* z = static_cast<T*>(p.z) + row * d;
    const T* gates = static_cast<const T*>(p.gate_modulation);
    const T* gate = gates ? gates + (b * p.gate_k + p.gate_row) * d : nullptr;
    const T* m = static_cast<const T*>(p.modulation) + b * p.k * d;
    const T* shift = m + p.shift_row * d;
    const T* scale = m + p.scale_row * d;
    float* xs = sana::dynamic_smem<float>();

    float sum = 0.0f;
    for (size_t j = threadIdx.x; j < d; j += blockDim.x) {
        const float g = gate ? sana::to_float(gate[j]) : 1.0f;
        const T rounded = sana::from_float<T>(sana::to_float(x[j]) + g * sana::to_float(r[j]));
        x_out[j] = rounded;
        const float v = sana::to_float(rounded);
        xs[j] = v;
        sum += v;
    }
    layer_norm_modulate_row(xs, sum, d, p.eps, shift, scale, z);
}

// ------------------------------------------------------------------------------------------- entries
SANA_KERNEL_PER_DTYPE(modulation, ModulationParams)
SANA_KERNEL_PER_DTYPE(add, PointwiseParams)
SANA_KERNEL_PER_DTYPE(mul, PointwiseParams)
SANA_KERNEL_PER_DTYPE(activation, PointwiseParams)
SANA_KERNEL_PER_DTYPE(gated_residual, GatedResidualParams)
SANA_KERNEL_PER_DTYPE(gated_residual_layer_norm_modulate, ResidualNormParams)
