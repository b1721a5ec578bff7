// CUDA emulation for the host: makes kernels/*.cu compile as C++20 with g++ (define SANA_EMU; common.cuh includes
// this header) and runs a launch with real threads, so the emu engine executes the exact kernels the GPU runs.
//
// Execution model of one launch (sana_emu::launch):
// - One OS thread per thread of the block (blockDim.x·y·z ≤ 1024), created once per launch. Every thread walks the
//   grid's blocks in the same order (x fastest, then y, then z) and meets the others at a barrier after each block,
//   so exactly one block is alive at a time. `__shared__` is `static`: a variable shared by the threads of the live
//   block, which is all `__shared__` means on the GPU. Dynamic shared memory is one buffer per launch, filled with
//   0xff bytes (NaN as f32/bf16/f16) at launch so that reading it before writing shows up in results.
// - `__syncthreads()` is a std::barrier over the block's threads; warp shuffles go through a per-warp slot array
//   between two barriers of that warp's live lanes.
// - Launches are serialised by one process-wide mutex (statics are shared memory of the one live block).
//
// Limits (the GPU tolerates some of these, the emulator stops or deadlocks instead):
// - Every thread of a block must reach every `__syncthreads()`, and every live lane of a warp every shuffle, with a
//   mask naming exactly the warp's live lanes; a mask that does not is reported and aborts the process.
// - Shuffling from a lane that does not exist (past the end of a partial warp) aborts the process.
// - No atomics, no cooperative groups, no inline PTX, no __nv_bfloat16 operators (kernels convert to float through
//   common.cuh). The one tensor-core primitive, `mma.sync.m16n8k16` (common.cuh `mma_m16n8k16`), is emulated below
//   from all 32 lanes' fragments in the hardware's per-lane layout, through the warp's barrier as shuffles are. Approximate intrinsics (rsqrtf, __expf) are computed exactly here, while
//   the GPU's are within their documented ulp bounds; g++ does not contract a·b+c into an FMA where nvcc does.
#pragma once

#include <barrier>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <thread>
#include <type_traits>
#include <vector>

// ---------------------------------------------------------------------------------------------------------------
// Qualifiers
// ---------------------------------------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))  // GNU form: valid anywhere in the decl-specifiers, as nvcc's

// ---------------------------------------------------------------------------------------------------------------
// Built-in variables
// ---------------------------------------------------------------------------------------------------------------
struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;
constexpr int warpSize = 32;

// ---------------------------------------------------------------------------------------------------------------
// The launch runtime
// ---------------------------------------------------------------------------------------------------------------
namespace sana_emu {

// Mirrors crate::launch::Geometry (#[repr(C)]).
struct Geometry {
    unsigned grid[3];
    unsigned block[3];
    unsigned shared_mem_bytes;
};

// Return codes of the extern "C" entries, mapped to errors by src/engine/emu.rs.
enum Status : int { OK = 0, INVALID_GEOMETRY = 1, OUT_OF_RESOURCES = 2 };

struct Warp {
    explicit Warp(unsigned lanes) : barrier(lanes), lanes(lanes) {}
    std::barrier<> barrier;
    unsigned lanes;            // live lanes: 32 except in the last warp of a block that is not a multiple of 32
    std::uint64_t slot[32] = {};
    // mma fragments (A, B) of every lane, double-buffered by each lane's call count: one barrier per mma suffices,
    // since no lane can rewrite a buffer before every lane has passed the next call's barrier.
    std::uint32_t mma[2][32][6] = {};
    unsigned mma_calls[32] = {};
};

struct Block {
    Block(unsigned threads, unsigned smem_bytes)
        : barrier(threads), smem((smem_bytes + sizeof(std::max_align_t) - 1) / sizeof(std::max_align_t)) {
        for (unsigned first = 0; first < threads; first += 32) {
            warps.push_back(std::make_unique<Warp>(threads - first < 32 ? threads - first : 32));
        }
        if (!smem.empty()) std::memset(smem.data(), 0xff, smem.size() * sizeof(std::max_align_t));
    }
    std::barrier<> barrier;
    std::vector<std::unique_ptr<Warp>> warps;
    std::vector<std::max_align_t> smem;
};

inline thread_local Block* current_block = nullptr;
inline std::mutex launch_mutex;

[[noreturn]] inline void die(const char* what, unsigned a, unsigned b) {
    std::fprintf(stderr, "sana emu: kernel error: %s (%u, %u) in block (%u,%u,%u) thread (%u,%u,%u)\n", what, a, b,
                 blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x, threadIdx.y, threadIdx.z);
    std::abort();
}

inline unsigned linear_tid() { return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z); }

inline bool valid(const Geometry& g) {
    const unsigned long long threads = 1ull * g.block[0] * g.block[1] * g.block[2];
    return threads >= 1 && threads <= 1024 && g.block[2] <= 64 && g.grid[0] <= 0x7fffffffu &&
           g.grid[1] <= 65535 && g.grid[2] <= 65535 && g.shared_mem_bytes <= 48 * 1024;
}

// Runs `kernel()` for every thread of every block of `g`; see the header comment for the model.
template <typename Kernel>
int launch(const Geometry& g, const Kernel& kernel) {
    if (!valid(g)) return INVALID_GEOMETRY;
    if (g.grid[0] == 0 || g.grid[1] == 0 || g.grid[2] == 0) return OK;
    std::lock_guard<std::mutex> lock(launch_mutex);
    const unsigned threads = g.block[0] * g.block[1] * g.block[2];
    try {
        Block block(threads, g.shared_mem_bytes);
        // Threads wait for `go` so that a failed std::thread construction can release the ones already started.
        std::barrier<> go(threads + 1);
        bool aborted = false;
        auto body = [&](unsigned t) {
            go.arrive_and_wait();
            if (aborted) return;
            blockDim = dim3{g.block[0], g.block[1], g.block[2]};
            gridDim = dim3{g.grid[0], g.grid[1], g.grid[2]};
            threadIdx = uint3{t % g.block[0], (t / g.block[0]) % g.block[1], t / (g.block[0] * g.block[1])};
            current_block = &block;
            for (unsigned z = 0; z < g.grid[2]; ++z) {
                for (unsigned y = 0; y < g.grid[1]; ++y) {
                    for (unsigned x = 0; x < g.grid[0]; ++x) {
                        blockIdx = uint3{x, y, z};
                        kernel();
                        block.barrier.arrive_and_wait();
                    }
                }
            }
            current_block = nullptr;
        };
        std::vector<std::thread> pool;
        pool.reserve(threads);
        try {
            for (unsigned t = 0; t < threads; ++t) pool.emplace_back(body, t);
        } catch (...) {
            aborted = true;
            (void)go.arrive(static_cast<std::ptrdiff_t>(threads + 1 - pool.size()));
            for (auto& th : pool) th.join();
            return OUT_OF_RESOURCES;
        }
        go.arrive_and_wait();
        for (auto& th : pool) th.join();
    } catch (...) {
        return OUT_OF_RESOURCES;
    }
    return OK;
}

inline unsigned char* dynamic_smem() { return reinterpret_cast<unsigned char*>(current_block->smem.data()); }

// One shuffle: every live lane publishes `v`, then reads lane `src` (or keeps its own value when `own`).
template <typename T>
T exchange(unsigned mask, T v, unsigned src, bool own) {
    static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "shuffles move up to 8 trivially copyable bytes");
    Warp& w = *current_block->warps[linear_tid() / 32];
    const unsigned live = w.lanes == 32 ? 0xffffffffu : (1u << w.lanes) - 1u;
    if (mask != live) die("shuffle mask does not name exactly the warp's live lanes (mask, live)", mask, live);
    const unsigned lane = linear_tid() % 32;
    std::memcpy(&w.slot[lane], &v, sizeof(T));
    w.barrier.arrive_and_wait();
    T r = v;
    if (!own) {
        if (src >= w.lanes) die("shuffle reads a lane that does not exist (lane, live lanes)", src, w.lanes);
        std::memcpy(&r, &w.slot[src], sizeof(T));
    }
    w.barrier.arrive_and_wait();
    return r;
}

inline unsigned lane_id() { return linear_tid() % 32; }

}  // namespace sana_emu

// ---------------------------------------------------------------------------------------------------------------
// Synchronisation and warp primitives (CUDA semantics for `width` segments)
// ---------------------------------------------------------------------------------------------------------------
inline void __syncthreads() { sana_emu::current_block->barrier.arrive_and_wait(); }

inline void __syncwarp(unsigned mask = 0xffffffffu) { (void)sana_emu::exchange(mask, 0, 0, true); }

template <typename T>
T __shfl_sync(unsigned mask, T v, int src_lane, int width = warpSize) {
    const unsigned lane = sana_emu::lane_id(), w = static_cast<unsigned>(width);
    return sana_emu::exchange(mask, v, lane / w * w + static_cast<unsigned>(src_lane) % w, false);
}

template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = warpSize) {
    const unsigned lane = sana_emu::lane_id(), w = static_cast<unsigned>(width);
    const unsigned src = lane ^ static_cast<unsigned>(lane_mask);
    return sana_emu::exchange(mask, v, src, src / w > lane / w);
}

template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = warpSize) {
    const unsigned lane = sana_emu::lane_id(), w = static_cast<unsigned>(width);
    return sana_emu::exchange(mask, v, lane + delta, lane % w + delta >= w);
}

template <typename T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = warpSize) {
    const unsigned lane = sana_emu::lane_id(), w = static_cast<unsigned>(width);
    return sana_emu::exchange(mask, v, lane - delta, lane % w < delta);
}

// ---------------------------------------------------------------------------------------------------------------
// Math intrinsics (exact on the host; the GPU versions are within their documented ulp bounds)
// ---------------------------------------------------------------------------------------------------------------
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
// cos(πx), sin(πx) (CUDA's reduce x exactly; here π·x rounds once, ~1e-16 relative, far below the f32 results).
inline double cospi(double x) { return std::cos(3.141592653589793 * x); }
inline double sinpi(double x) { return std::sin(3.141592653589793 * x); }
// IEEE round-to-nearest operations that nvcc never contracts into an FMA; g++ does not contract without -mfma.
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fdiv_rn(float a, float b) { return a / b; }

// ---------------------------------------------------------------------------------------------------------------
// bf16 and f16 storage types, bit-exact with CUDA's conversions (NaN becomes the canonical 0x7fff, as there)
// ---------------------------------------------------------------------------------------------------------------
struct __nv_bfloat16 {
    unsigned short x;
};
struct __half {
    unsigned short x;
};

namespace sana_emu {
inline std::uint32_t bits(float f) {
    std::uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}
inline float from_bits(std::uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
}  // namespace sana_emu

inline float __bfloat162float(__nv_bfloat16 h) { return sana_emu::from_bits(static_cast<std::uint32_t>(h.x) << 16); }

// Round to nearest even on the upper 16 bits; a carry out of the mantissa correctly bumps the exponent (to inf).
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    std::uint32_t u = sana_emu::bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return __nv_bfloat16{0x7fff};
    u += 0x7fffu + ((u >> 16) & 1u);
    return __nv_bfloat16{static_cast<unsigned short>(u >> 16)};
}

inline float __half2float(__half h) {
    const std::uint32_t sign = static_cast<std::uint32_t>(h.x & 0x8000u) << 16;
    const std::uint32_t exp = (h.x >> 10) & 0x1fu, mant = h.x & 0x3ffu;
    if (exp == 0x1f) return sana_emu::from_bits(mant ? 0x7fffffffu : sign | 0x7f800000u);  // NaN: canonical
    if (exp == 0) {  // zero or subnormal: mant · 2^-24, exact in f32
        const float v = static_cast<float>(mant) * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    return sana_emu::from_bits(sign | ((exp + 112u) << 23) | (mant << 13));
}

inline __half __float2half_rn(float f) {
    const std::uint32_t x = sana_emu::bits(f);
    const std::uint32_t sign = (x >> 16) & 0x8000u, u = x & 0x7fffffffu;
    auto h = [sign](std::uint32_t v) { return __half{static_cast<unsigned short>(sign | v)}; };
    if (u > 0x7f800000u) return __half{0x7fff};
    if (u >= 0x477ff000u) return h(0x7c00u);  // ≥ 65520 (half-way past 65504) rounds to inf
    std::uint32_t r, rem, halfway;
    if (u >= 0x38800000u) {  // normal: rebias the exponent from 127 to 15, keep 10 mantissa bits
        const std::uint32_t m = u - 0x38000000u;
        r = m >> 13;
        rem = m & 0x1fffu;
        halfway = 0x1000u;
    } else if (u <= 0x33000000u) {  // ≤ 2^-25: rounds to zero (2^-25 is the tie, zero is even)
        return h(0);
    } else {  // subnormal: the value in units of 2^-24
        const std::uint32_t shift = 126u - (u >> 23), mant = (u & 0x7fffffu) | 0x800000u;
        r = mant >> shift;
        rem = mant & ((1u << shift) - 1u);
        halfway = 1u << (shift - 1u);
    }
    if (rem > halfway || (rem == halfway && (r & 1u))) ++r;
    return h(r);
}

// ---------------------------------------------------------------------------------------------------------------
// Tensor cores: mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}.{bf16,f16}.f32 (fragment layout: common.cuh)
// ---------------------------------------------------------------------------------------------------------------
namespace sana_emu {

inline float element(__nv_bfloat16 v) { return __bfloat162float(v); }
inline float element(__half v) { return __half2float(v); }

// Every lane publishes its A and B fragments; each then computes its own four D elements from the lanes that hold
// the A row and B column: products exact in f32 (16-bit operands), summed onto C in k order. The hardware's
// accumulation order inside one instruction is unspecified; the tests' tolerances allow any order.
template <typename T>
void mma_m16n8k16(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2], const float (&c)[4]) {
    Warp& w = *current_block->warps[linear_tid() / 32];
    if (w.lanes != 32) die("mma.sync needs all 32 lanes of a warp (live lanes, needed)", w.lanes, 32);
    const unsigned lane = linear_tid() % 32;
    auto& buf = w.mma[w.mma_calls[lane]++ & 1u];
    for (int i = 0; i < 4; ++i) buf[lane][i] = a[i];
    buf[lane][4] = b[0];
    buf[lane][5] = b[1];
    w.barrier.arrive_and_wait();
    auto half_of = [](std::uint32_t pair, unsigned k) {
        return element(T{static_cast<unsigned short>(k % 2 ? pair >> 16 : pair & 0xffffu)});
    };
    // A[r][k] sits in lane 4·(r % 8) + (k % 8) / 2, register (r ≥ 8) + 2·(k ≥ 8); B[k][n] in lane 4n + (k % 8) / 2,
    // register 4 + (k ≥ 8).
    auto A = [&](unsigned r, unsigned k) { return half_of(buf[4 * (r % 8) + k % 8 / 2][(r >= 8) + 2 * (k >= 8)], k); };
    auto B = [&](unsigned k, unsigned n) { return half_of(buf[4 * n + k % 8 / 2][4 + (k >= 8)], k); };
    const unsigned g = lane / 4, t = lane % 4;
    for (unsigned i = 0; i < 4; ++i) {
        const unsigned r = g + 8 * (i / 2), n = 2 * t + i % 2;
        float acc = c[i];
        for (unsigned k = 0; k < 16; ++k) acc += A(r, k) * B(k, n);
        d[i] = acc;
    }
}

}  // namespace sana_emu
