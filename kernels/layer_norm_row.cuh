// The LayerNorm-modulate of one row, shared by kernels/norm.cu (layer_norm_modulate) and kernels/elementwise.cu
// (gated_residual_layer_norm_modulate, which forms the row first):
//     mean = Σ_j x[j] / D          var = Σ_j (x[j] − mean)² / D   (biased, as torch.nn.LayerNorm)
//     y[j] = (x[j] − mean) · rsqrt(var + eps) · (1 + scale[j]) + shift[j]
// The caller has put the row, in f32, in shared memory `xs` [D] and passes its thread's partial sum of it (the
// elements j = t, t + T, … it wrote); every thread of the block calls this. Accumulation: f32, exact two-pass (the
// squared deviations are summed from the mean, out of shared memory: no E[x²] − E[x]² cancellation), per-thread
// sums then block_sum, a fixed order; one rounding to the storage dtype.
#pragma once

#include "common.cuh"

template <typename T>
__device__ __forceinline__ void layer_norm_modulate_row(const float* xs, float sum, size_t d, float eps,
                                                        const T* shift, const T* scale, T* y) {
    const float mean = sana::block_sum(sum) / static_cast<float>(d);

    float sq = 0.0f;
    for (size_t j = threadIdx.x; j < d; j += blockDim.x) {
        const float c = xs[j] - mean;
        sq += c * c;
    }
    const float rstd = rsqrtf(sana::block_sum(sq) / static_cast<float>(d) + eps);

    for (size_t j = threadIdx.x; j < d; j += blockDim.x) {
        const float z = (xs[j] - mean) * rstd;
        y[j] = sana::from_float<T>(z * (1.0f + sana::to_float(scale[j])) + sana::to_float(shift[j]));
    }
}
