// LayerNorm with AdaLN modulation (Sana blocks and final layer; docs/numerics/transformer.md §7), and RMSNorm
// (end of file).
//
// Formula, per row r = (b, n) of x over the last dimension j ∈ [0, D):
//     mean = Σ_j x[j] / D          var = Σ_j (x[j] − mean)² / D   (biased, as torch.nn.LayerNorm)
//     y[j] = (x[j] − mean) · rsqrt(var + eps) · (1 + m[b, scale_row, j]) + m[b, shift_row, j]
// No affine weight/bias (elementwise_affine=False). CPU reference: src/cpu/norm.rs `layer_norm_modulate`.
//
// Layout: row-major, last dimension contiguous. x, y: [B, N, D]; m (modulation): [B, K, D], one row per AdaLN chunk
// (shift_msa, scale_msa, gate_msa, …). x, y and m share the storage dtype (f32, bf16 or f16).
//
// Geometry (src/launch/norm.rs): one block per row, grid = (B·N, 1, 1); block = (T, 1, 1) with
// T = min(256, D rounded up to 32), so every warp is full; dynamic shared memory = 4·D bytes, the row in f32
// (D ≤ 24576: up to 96 KiB, above 48 KiB by the per-function opt-in). Thread t handles j = t, t + T, … :
// coalesced, no vector loads yet.
//
// Accumulation: f32 throughout, exact two-pass: pass 1 loads the row into shared memory (one global read) and sums it;
// pass 2 (kernels/layer_norm_row.cuh, shared with the fused kernel of elementwise.cu) sums squared deviations from the
// mean out of shared memory, so there is no E[x²] − E[x]² cancellation. Sums are per-thread sequential, then a
// butterfly warp sum, then a sum over warps (block_sum): a fixed order, deterministic run to run.
//
// Numerical caveats: the output is rounded once, from f32, to the storage dtype; diffusers in bf16 rounds after
// the norm and again after each of ·(1+scale) and +shift, so it can differ from this kernel by a few bf16 ulps
// while both are within rounding of the f32 reference. rsqrtf is the GPU's approximate reciprocal square root
// (≤ 2 ulp); nvcc may fuse the final multiply-add into an FMA.

#include "common.cuh"
#include "layer_norm_row.cuh"

// Mirrors LayerNormModulateParams in src/launch/norm.rs.
struct LayerNormModulateParams {
    void* y;
    const void* x;
    const void* modulation;
    unsigned n;          // tokens per batch item (rows of x per b)
    unsigned d;          // normalised dimension
    unsigned k;          // rows of the modulation table per batch item
    unsigned shift_row;  // < k
    unsigned scale_row;  // < k
    float eps;
};
static_assert(sizeof(LayerNormModulateParams) == 48, "LayerNormModulateParams must match src/launch/norm.rs");
SANA_PARAMS_LAYOUT(LayerNormModulateParams, y, x, modulation, n, d, k, shift_row, scale_row, eps)

template <typename T>
__device__ __forceinline__ void layer_norm_modulate(const LayerNormModulateParams& p) {
    const size_t row = blockIdx.x, b = row / p.n, d = p.d;
    const T* x = static_cast<const T*>(p.x) + row * d;
    T* y = static_cast<T*>(p.y) + row * d;
    const T* m = static_cast<const T*>(p.modulation) + b * p.k * d;
    const T* shift = m + p.shift_row * d;
    const T* scale = m + p.scale_row * d;
    float* xs = sana::dynamic_smem<float>();

    float sum = 0.0f;
    for (size_t j = threadIdx.x; j < d; j += blockDim.x) {
        const float v = sana::to_float(x[j]);
        xs[j] = v;
        sum += v;
    }
    layer_norm_modulate_row(xs, sum, d, p.eps, shift, scale, y);
}

SANA_KERNEL_PER_DTYPE(layer_norm_modulate, LayerNormModulateParams)

// ---------------------------------------------------------------------------------------------------------------
// RMSNorm, two forms (CPU reference: src/cpu/norm.rs `rms_norm`, `rms_norm_plus_one`), per row of x over D:
//     r = rsqrt(Σ_j x[j]² / D + eps)                       (f32 sum of squares: per thread, warps, then block)
//     mode 0, diffusers `RMSNorm` (caption norm, q/k norms): z = round_T(x·r); y = round_T(z · w)
//           — diffusers casts the normalised value to the weight dtype before the weight multiply;
//     mode 1, Gemma (`1 + w` weight): y = round_T(x · r · (1 + w)), one rounding (transformers upcasts w).
//     Optional bias b (diffusers `RMSNorm(bias=True)`, the DC-AE's channel norms): y = round_T(y + b), a second
//     rounding as in diffusers, which adds the bias to the already-rounded product.
// Layout: x, y [rows, D] row-major in the storage dtype; w, b [D] in the storage dtype; b may be null.
// Geometry (src/launch/norm.rs): one block per row, min(256, D rounded up to 32) threads, no dynamic shared memory;
// x is read twice from global memory (sum of squares, then the scaled write).
// ---------------------------------------------------------------------------------------------------------------

// Mirrors RmsNormParams in src/launch/norm.rs.
struct RmsNormParams {
    void* y;
    const void* x;
    const void* w;
    const void* b;  // null: no bias
    unsigned d;
    unsigned plus_one;  // 0: diffusers form, 1: Gemma form
    float eps;
    unsigned pad;
};
static_assert(sizeof(RmsNormParams) == 48, "RmsNormParams must match src/launch/norm.rs");
SANA_PARAMS_LAYOUT(RmsNormParams, y, x, w, b, d, plus_one, eps, pad)

template <typename T>
__device__ __forceinline__ void rms_norm(const RmsNormParams& p) {
    const size_t row = blockIdx.x, d = p.d;
    const T* x = static_cast<const T*>(p.x) + row * d;
    const T* w = static_cast<const T*>(p.w);
    const T* b = static_cast<const T*>(p.b);
    T* y = static_cast<T*>(p.y) + row * d;
    float sq = 0.0f;
    for (size_t j = threadIdx.x; j < d; j += blockDim.x) {
        const float v = sana::to_float(x[j]);
        sq += v * v;
    }
    const float r = rsqrtf(sana::block_sum(sq) / static_cast<float>(d) + p.eps);
    for (size_t j = threadIdx.x; j < d; j += blockDim.x) {
        const float v = sana::to_float(x[j]) * r, wj = sana::to_float(w[j]);
        const T yj = p.plus_one ? sana::from_float<T>(v * (1.0f + wj))
                                : sana::from_float<T>(sana::to_float(sana::from_float<T>(v)) * wj);
        y[j] = b ? sana::from_float<T>(sana::to_float(yj) + sana::to_float(b[j])) : yj;
    }
}

SANA_KERNEL_PER_DTYPE(rms_norm, RmsNormParams)
