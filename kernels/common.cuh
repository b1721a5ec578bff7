// Device helpers shared by every kernel family: storage-type conversion, warp and block sums, dynamic shared memory,
// and the emu entry macro. Each is written once over CUDA primitives; on the host (SANA_EMU, set by build.rs for the
// g++ build) emu/emu.cuh supplies those primitives, so the same source runs in both engines.
//
// Conventions for kernels in this directory:
// - `extern "C" __global__ void <op>_<dtype>(<Op>Params p)`: one POD params struct by value, declared identically in
//   src/launch/<family>.rs (`#[repr(C)]`); pointers are 64-bit device addresses.
// - storage is f32, bf16 or f16; arithmetic is f32 (`to_float` / `from_float`, round to nearest even).
// - after each kernel, `SANA_EMU_ENTRY(kernel, Params)` exports `sana_emu_<kernel>(const Geometry*, const Params*)`
//   for the emulation engine; it expands to nothing under nvcc. `SANA_KERNEL_PER_DTYPE(op, Params)` writes the
//   three `op_<dtype>` kernels of a template `op<T>` with their entries.
// - after each params struct, `SANA_PARAMS_LAYOUT(Params, field, …)` naming every field exports the struct's layout
//   from the emulation build (`sana_emu_layout_<Params>`: each field's offset and size); tests/param_layouts.rs
//   compares it field by field with the Rust struct's `offset_of!`.
#pragma once

#ifdef SANA_EMU
#include "emu/emu.cuh"
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

// Asks nvcc to unroll the next loop fully (register arrays indexed by its counter stay in registers); the host
// compiler decides for itself.
#ifdef SANA_EMU
#define SANA_UNROLL
#else
#define SANA_UNROLL _Pragma("unroll")
#endif

namespace sana {

// ------------------------------------------------------------------------------------------- storage conversion
__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <>
__device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }

// ------------------------------------------------------------------------------------------- vector loads
// 16 bytes of T (8 bf16/f16 or 4 f32): one 128-bit load or store when the address is 16-byte aligned. Launch plans
// decide `aligned` from the buffer addresses (and the strides the kernel steps by); unaligned buffers take the
// element-by-element path with identical arithmetic, so the flag changes speed, never results.
template <typename T>
struct alignas(16) Pack {
    static constexpr int size = 16 / sizeof(T);
    T v[size];
};

template <typename T>
__device__ __forceinline__ Pack<T> load_pack(const T* p, bool aligned) {
    if (aligned) return *reinterpret_cast<const Pack<T>*>(p);
    Pack<T> r;
    for (int i = 0; i < Pack<T>::size; ++i) r.v[i] = p[i];
    return r;
}

template <typename T>
__device__ __forceinline__ void store_pack(T* p, const Pack<T>& r, bool aligned) {
    if (aligned) {
        *reinterpret_cast<Pack<T>*>(p) = r;
        return;
    }
    for (int i = 0; i < Pack<T>::size; ++i) p[i] = r.v[i];
}

// ------------------------------------------------------------------------------------------- activations
// Same formulas and operation order as src/cpu/elementwise.rs `activate`; expf/tanhf are the accurate (non-fast-math)
// library functions, within 2 ulp on the GPU.
__device__ __forceinline__ float silu(float v) { return v / (1.0f + expf(-v)); }

// GELU, tanh approximation (diffusers `gelu_tanh`): 0.5·v·(1 + tanh(√(2/π)·(v + 0.044715·v³))).
__device__ __forceinline__ float gelu_tanh(float v) {
    const float sqrt_2_over_pi = 0.7978846f;
    return 0.5f * v * (1.0f + tanhf(sqrt_2_over_pi * (v + 0.044715f * v * v * v)));
}

// ------------------------------------------------------------------------------------------- reductions
constexpr unsigned FULL_MASK = 0xffffffffu;

// Sum over the 32 lanes of a full warp, butterfly order; every lane gets the same total.
__device__ __forceinline__ float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(FULL_MASK, v, offset);
    return v;
}

// Sum over a 1-D block whose size is a multiple of 32 (at most 1024); every thread gets the same total, in a fixed
// order (lanes, then warps), so results are deterministic. Safe to call repeatedly: the first barrier keeps a
// previous call's readers from seeing this call's partial sums.
__device__ __forceinline__ float block_sum(float v) {
    __shared__ float partial[32];
    const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    return warp_sum(lane < warps ? partial[lane] : 0.0f);
}

// ------------------------------------------------------------------------------------------- shared memory
#ifdef SANA_EMU
template <typename T>
__device__ __forceinline__ T* dynamic_smem() {
    return reinterpret_cast<T*>(sana_emu::dynamic_smem());
}
#else
extern __shared__ __align__(16) unsigned char dynamic_smem_bytes[];
template <typename T>
__device__ __forceinline__ T* dynamic_smem() {
    return reinterpret_cast<T*>(dynamic_smem_bytes);
}
#endif

// ------------------------------------------------------------------------------------------- tensor cores
// Two consecutive 16-bit elements (p 4-byte aligned) as one 32-bit register: the lower address in the low half, as
// mma fragments hold them.
template <typename T>
__device__ __forceinline__ unsigned ld_pair(const T* p) {
    static_assert(sizeof(T) == 2, "pairs of 16-bit elements");
#ifdef SANA_EMU
    unsigned v;
    std::memcpy(&v, p, 4);  // no type punning through pointers on the host compiler
    return v;
#else
    return *reinterpret_cast<const unsigned*>(p);
#endif
}

// D (16×8, f32) = A (16×16, row-major) · B (16×8, column-major) + C for T = bf16 or f16: one warp-wide
// `mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}` (sm_80+); all 32 lanes must call it together. Per lane, with
// g = lane / 4 and t = lane % 4 (each u32 a pair of consecutive-k elements, `ld_pair`):
//   a[0] = A[g][2t, 2t+1]   a[1] = A[g+8][2t, 2t+1]   a[2] = A[g][2t+8, 2t+9]   a[3] = A[g+8][2t+8, 2t+9]
//   b[0] = B[2t, 2t+1][g]   b[1] = B[2t+8, 2t+9][g]
//   c[0], c[1] = C[g][2t, 2t+1]   c[2], c[3] = C[g+8][2t, 2t+1]   (d likewise)
// emu/emu.cuh computes it from every lane's fragments by this layout (products exact, f32 sums in k order), so a
// kernel that fills fragments wrongly fails on the emulator too.
template <typename T>
__device__ __forceinline__ void mma_m16n8k16(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2],
                                             const float (&c)[4]);

#ifdef SANA_EMU
template <typename T>
__device__ __forceinline__ void mma_m16n8k16(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2],
                                             const float (&c)[4]) {
    sana_emu::mma_m16n8k16<T>(d, a, b, c);
}
#else
template <>
__device__ __forceinline__ void mma_m16n8k16<__nv_bfloat16>(float (&d)[4], const unsigned (&a)[4],
                                                            const unsigned (&b)[2], const float (&c)[4]) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%10, %11, %12, %13};"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
          "f"(c[3]));
}
template <>
__device__ __forceinline__ void mma_m16n8k16<__half>(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2],
                                                     const float (&c)[4]) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%10, %11, %12, %13};"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
          "f"(c[3]));
}
#endif

}  // namespace sana

// ------------------------------------------------------------------------------------------- emu entry points
#ifdef SANA_EMU
#define SANA_EMU_ENTRY(kernel, Params)                                                                  \
    extern "C" int sana_emu_##kernel(const sana_emu::Geometry* geometry, const Params* params) {        \
        const Params p = *params;                                                                       \
        return sana_emu::launch(*geometry, [&p] { kernel(p); });                                        \
    }
#else
#define SANA_EMU_ENTRY(kernel, Params)
#endif

// SANA_PARAMS_LAYOUT(Params, f1, f2, …) exports, from the emulation build, `size_t sana_emu_layout_<Params>(const
// sana_emu::FieldLayout** fields, size_t* struct_size)`: the fields' names, offsets and sizes in declaration order
// (their count is returned) and sizeof(Params). SANA_FOR_EACH(m, T, a, b, …) expands to m(T, a) m(T, b) ….
#ifdef SANA_EMU
namespace sana_emu {
struct FieldLayout {
    const char* name;
    size_t offset;
    size_t size;
};
}  // namespace sana_emu
#define SANA_PARENS ()
#define SANA_EXPAND(...) SANA_EXPAND3(SANA_EXPAND3(SANA_EXPAND3(SANA_EXPAND3(__VA_ARGS__))))
#define SANA_EXPAND3(...) SANA_EXPAND2(SANA_EXPAND2(SANA_EXPAND2(SANA_EXPAND2(__VA_ARGS__))))
#define SANA_EXPAND2(...) SANA_EXPAND1(SANA_EXPAND1(SANA_EXPAND1(SANA_EXPAND1(__VA_ARGS__))))
#define SANA_EXPAND1(...) __VA_ARGS__
#define SANA_FOR_EACH(m, T, ...) __VA_OPT__(SANA_EXPAND(SANA_FOR_EACH_STEP(m, T, __VA_ARGS__)))
#define SANA_FOR_EACH_STEP(m, T, a, ...) m(T, a) __VA_OPT__(SANA_FOR_EACH_AGAIN SANA_PARENS(m, T, __VA_ARGS__))
#define SANA_FOR_EACH_AGAIN() SANA_FOR_EACH_STEP
#define SANA_FIELD_LAYOUT(T, f) sana_emu::FieldLayout{#f, offsetof(T, f), sizeof(T::f)},
#define SANA_PARAMS_LAYOUT(T, ...)                                                                        \
    extern "C" size_t sana_emu_layout_##T(const sana_emu::FieldLayout** fields, size_t* struct_size) {     \
        static const sana_emu::FieldLayout table[] = {SANA_FOR_EACH(SANA_FIELD_LAYOUT, T, __VA_ARGS__)};   \
        *fields = table;                                                                                  \
        *struct_size = sizeof(T);                                                                         \
        return sizeof(table) / sizeof(table[0]);                                                          \
    }
#else
#define SANA_PARAMS_LAYOUT(T, ...)
#endif

// The f32, bf16 and f16 kernels `op_<dtype>` of the template `op<T>(const Params&)`, each with its emulator entry.
#define SANA_KERNEL_PER_DTYPE(op, Params)                                                                \
    extern "C" __global__ void op##_f32(const Params p) { op<float>(p); }                                \
    extern "C" __global__ void op##_bf16(const Params p) { op<__nv_bfloat16>(p); }                       \
    extern "C" __global__ void op##_f16(const Params p) { op<__half>(p); }                               \
    SANA_EMU_ENTRY(op##_f32, Params)                                                                     \
    SANA_EMU_ENTRY(op##_bf16, Params)                                                                    \
    SANA_EMU_ENTRY(op##_f16, Params)
