// CUDA emulation for the host: makes kernels/*.cu compile as C++20 with g++ (define SANA_EMU; common.cuh includes
// this header) and runs a launch on the CPU, so the emu engine executes the exact kernels the GPU runs.
//
// Execution model of one launch (sana_emu::launch):
// - The launching OS thread runs the grid's blocks one at a time, in order (x fastest, then y, then z). Each thread
//   of the block (blockDim.x·y·z ≤ 1024) is a fiber: a user-space context on its own stack, which runs until it
//   arrives at a barrier or finishes the block and then switches straight to the next fiber that can run (first
//   come, first served). The built-ins (`threadIdx`, `blockIdx`, …) are globals, set on every switch into a fiber.
//   `__shared__` is `static`: a variable shared by the threads of the live block, which is all `__shared__` means on
//   the GPU. Dynamic shared memory is one buffer per launch, filled with 0xff bytes (NaN as f32/bf16/f16) at launch
//   so that reading it before writing shows up in results.
// - `__syncthreads()` completes when every thread of the block has arrived; a warp barrier (every shuffle,
//   `__syncwarp`, `mma_m16n8k16`) when every live lane of the warp has arrived. Lanes exchange values through
//   per-warp slots written before the barrier and read after it.
// - Fiber stacks are 128 KiB, each above an inaccessible guard page (an overflow faults instead of overwriting
//   another fiber's frames), mapped once and kept for later launches. The switch between fibers is a few lines of
//   assembly, for x86_64 and aarch64 ELF (Linux) only.
// - Launches are serialised by one process-wide mutex (statics are shared memory of the one live block, and the
//   built-ins are globals); any OS thread may launch.
//
// Limits (the GPU tolerates some of these; the emulator reports them and aborts the process instead):
// - Every thread of a block must reach every `__syncthreads()`, and every live lane of a warp every shuffle, with a
//   mask naming exactly the warp's live lanes; a mask that does not is reported. A barrier that can never complete
//   is reported as a deadlock: threads waiting at `__syncthreads()` while others have finished the block, or a warp
//   barrier some of whose lanes have finished or wait at `__syncthreads()`.
// - Shuffling from a lane that does not exist (past the end of a partial warp) is reported, as is a C++ exception
//   escaping the kernel.
// - Dynamic shared memory up to 232448 bytes, sm_90's opt-in maximum (227 KiB); the 48 KiB default for a kernel
//   that has not opted in is the caller's check.
// - No atomics, no cooperative groups, no inline PTX, no __nv_bfloat16 operators (kernels convert to float through
//   common.cuh). The one tensor-core primitive, `mma.sync.m16n8k16` (common.cuh `mma_m16n8k16`), is emulated below
//   from all 32 lanes' fragments in the hardware's per-lane layout, through the warp's barrier as shuffles are; a
//   partial warp calling it is reported. Approximate intrinsics (rsqrtf, __expf) are computed exactly here, while
//   the GPU's are within their documented ulp bounds; g++ does not contract a·b+c into an FMA where nvcc does.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
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
// Built-in variables: those of the running fiber (one launch at a time, under the launch mutex)
// ---------------------------------------------------------------------------------------------------------------
struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

inline uint3 threadIdx;
inline uint3 blockIdx;
inline dim3 blockDim;
inline dim3 gridDim;
constexpr int warpSize = 32;

// ---------------------------------------------------------------------------------------------------------------
// Fiber switch: `sana_emu_switch(&from->sp, to->sp)` pushes the callee-saved registers, stores the stack pointer in
// from->sp, loads to->sp and pops the registers saved there. A fresh fiber's stack holds such a frame whose return
// address is the fiber's entry. (glibc's swapcontext also saves the signal mask: one system call per switch, which
// would cost more than the kernels' work between barriers.) The MXCSR and x87 control words are not saved: nothing
// changes them. A COMDAT section, as for an inline function: every translation unit emits it, the linker keeps one.
// ---------------------------------------------------------------------------------------------------------------
extern "C" void sana_emu_switch(void** from, void* to);

#if defined(__x86_64__)
asm(".pushsection .text.sana_emu_switch,\"axG\",%progbits,sana_emu_switch,comdat\n"
    ".weak sana_emu_switch\n"
    ".hidden sana_emu_switch\n"
    ".type sana_emu_switch,%function\n"
    ".p2align 4\n"
    "sana_emu_switch:\n"
    "  pushq %rbp\n"
    "  pushq %rbx\n"
    "  pushq %r12\n"
    "  pushq %r13\n"
    "  pushq %r14\n"
    "  pushq %r15\n"
    "  movq %rsp, (%rdi)\n"
    "  movq %rsi, %rsp\n"
    "  popq %r15\n"
    "  popq %r14\n"
    "  popq %r13\n"
    "  popq %r12\n"
    "  popq %rbx\n"
    "  popq %rbp\n"
    "  ret\n"
    ".size sana_emu_switch,.-sana_emu_switch\n"
    ".popsection\n");
namespace sana_emu {
// r15 … rbp, the entry, and a null return address for it (entered with the stack 16-byte aligned, as after a call).
constexpr unsigned switch_frame_words = 8, switch_entry_word = 6;
}  // namespace sana_emu
#elif defined(__aarch64__)
asm(".pushsection .text.sana_emu_switch,\"axG\",%progbits,sana_emu_switch,comdat\n"
    ".weak sana_emu_switch\n"
    ".hidden sana_emu_switch\n"
    ".type sana_emu_switch,%function\n"
    ".p2align 4\n"
    "sana_emu_switch:\n"
    "  sub sp, sp, #160\n"
    "  stp x19, x20, [sp, #0]\n"
    "  stp x21, x22, [sp, #16]\n"
    "  stp x23, x24, [sp, #32]\n"
    "  stp x25, x26, [sp, #48]\n"
    "  stp x27, x28, [sp, #64]\n"
    "  stp x29, x30, [sp, #80]\n"
    "  stp d8, d9, [sp, #96]\n"
    "  stp d10, d11, [sp, #112]\n"
    "  stp d12, d13, [sp, #128]\n"
    "  stp d14, d15, [sp, #144]\n"
    "  mov x9, sp\n"
    "  str x9, [x0]\n"
    "  mov sp, x1\n"
    "  ldp x19, x20, [sp, #0]\n"
    "  ldp x21, x22, [sp, #16]\n"
    "  ldp x23, x24, [sp, #32]\n"
    "  ldp x25, x26, [sp, #48]\n"
    "  ldp x27, x28, [sp, #64]\n"
    "  ldp x29, x30, [sp, #80]\n"
    "  ldp d8, d9, [sp, #96]\n"
    "  ldp d10, d11, [sp, #112]\n"
    "  ldp d12, d13, [sp, #128]\n"
    "  ldp d14, d15, [sp, #144]\n"
    "  add sp, sp, #160\n"
    "  ret\n"
    ".size sana_emu_switch,.-sana_emu_switch\n"
    ".popsection\n");
namespace sana_emu {
// x19 … x28, x29 (frame pointer), x30 (the entry, where `ret` goes), d8 … d15.
constexpr unsigned switch_frame_words = 20, switch_entry_word = 11;
}  // namespace sana_emu
#else
#error "sana emu: the fiber switch is written for x86_64 and aarch64"
#endif

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

// One thread of the block.
struct Fiber {
    void* sp = nullptr;  // saved stack pointer while the fiber is not running
    uint3 tid{};
    unsigned linear = 0;  // threadIdx linearised: warp linear / 32, lane linear % 32
};

// A warp's barrier and the slots its lanes exchange through. Slots are double-buffered by the parity of
// `generation`: a lane reads the buffer of a barrier right after it completes, and no lane can write that buffer
// again before every lane has arrived at the next barrier.
struct Warp {
    unsigned lanes = 32;      // live lanes: 32 except in the last warp of a block that is not a multiple of 32
    unsigned arrived = 0;     // lanes waiting in waiting[0 .. arrived)
    unsigned generation = 0;  // completed barriers
    Fiber* waiting[32] = {};
    std::uint64_t slot[2][32] = {};
    std::uint32_t mma[2][32][6] = {};  // A and B fragments of every lane
};

// The state of the one live launch.
struct Launch {
    Launch(unsigned threads, unsigned smem_bytes)
        : fibers(threads),
          warps((threads + 31) / 32),
          smem((smem_bytes + sizeof(std::max_align_t) - 1) / sizeof(std::max_align_t)),
          ready(threads) {
        warps.back().lanes = threads - 32 * ((threads - 1) / 32);
        at_syncthreads.reserve(threads);
        if (!smem.empty()) std::memset(smem.data(), 0xff, smem.size() * sizeof(std::max_align_t));
    }
    std::vector<Fiber> fibers;
    std::vector<Warp> warps;
    std::vector<std::max_align_t> smem;
    // Fibers that can run, first in first out: a ring of one slot per fiber, since a fiber is in exactly one place
    // (running, ready, waiting at a barrier or finished).
    std::vector<Fiber*> ready;
    std::size_t ready_head = 0, ready_count = 0;
    std::vector<Fiber*> at_syncthreads;
    std::size_t finished = 0;  // fibers done with the live block
    Fiber host;                // the launching OS thread, resumed when the block is done
    Fiber* current = nullptr;
    void (*body)(const void*) = nullptr;  // runs *kernel
    const void* kernel = nullptr;
};

inline Launch* live = nullptr;
inline std::mutex launch_mutex;

// Fiber stacks, kept across launches (under the launch mutex). 128 KiB: kernels hold a few hundred bytes of register
// arrays; the rest is headroom for die()'s stdio and for exception unwinding.
class Stacks {
public:
    static constexpr std::size_t bytes = 128 * 1024;
    Stacks() = default;
    Stacks(const Stacks&) = delete;
    Stacks& operator=(const Stacks&) = delete;
    ~Stacks() { release(); }

    // Makes `count` stacks available; false when memory runs out.
    bool reserve(unsigned count) {
        if (count <= count_) return true;
        release();
        page_ = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
        void* region = mmap(nullptr, count * stride(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (region == MAP_FAILED) return false;
        region_ = static_cast<unsigned char*>(region);
        count_ = count;
        for (unsigned i = 0; i < count; ++i) {
            if (mprotect(region_ + i * stride(), page_, PROT_NONE) != 0) {
                release();
                return false;
            }
        }
        return true;
    }

    // Lowest byte of stack i (its guard page lies just below).
    unsigned char* stack(unsigned i) const { return region_ + i * stride() + page_; }

private:
    std::size_t stride() const { return page_ + bytes; }
    void release() {
        if (region_) munmap(region_, count_ * stride());
        region_ = nullptr;
        count_ = 0;
    }
    unsigned char* region_ = nullptr;
    unsigned count_ = 0;
    std::size_t page_ = 0;
};

inline Stacks stacks;

[[noreturn]] inline void die(const char* what) {
    std::fprintf(stderr, "sana emu: kernel error: %s in block (%u,%u,%u) thread (%u,%u,%u)\n", what, blockIdx.x,
                 blockIdx.y, blockIdx.z, threadIdx.x, threadIdx.y, threadIdx.z);
    std::abort();
}

[[noreturn]] inline void die(const char* what, unsigned a, unsigned b) {
    std::fprintf(stderr, "sana emu: kernel error: %s (%u, %u) in block (%u,%u,%u) thread (%u,%u,%u)\n", what, a, b,
                 blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x, threadIdx.y, threadIdx.z);
    std::abort();
}

inline unsigned linear_tid() { return live->current->linear; }

inline bool valid(const Geometry& g) {
    const unsigned long long threads = 1ull * g.block[0] * g.block[1] * g.block[2];
    return threads >= 1 && threads <= 1024 && g.block[2] <= 64 && g.grid[0] <= 0x7fffffffu &&
           g.grid[1] <= 65535 && g.grid[2] <= 65535 && g.shared_mem_bytes <= 232448;
}

inline void switch_to(Fiber* next) {
    Fiber* self = live->current;
    live->current = next;
    threadIdx = next->tid;
    sana_emu_switch(&self->sp, next->sp);
}

// Names a thread that waits forever, and why.
[[noreturn]] inline void deadlock() {
    Launch& l = *live;
    for (const Warp& w : l.warps) {
        if (w.arrived == 0) continue;
        threadIdx = w.waiting[0]->tid;
        die("deadlock: a warp barrier (shuffle, __syncwarp, mma) waits for lanes that have finished the block or wait "
            "at __syncthreads() (lanes waiting, live lanes)",
            w.arrived, w.lanes);
    }
    threadIdx = l.at_syncthreads.front()->tid;
    die("deadlock: threads wait at __syncthreads() while others have finished the block (waiting, finished)",
        static_cast<unsigned>(l.at_syncthreads.size()), static_cast<unsigned>(l.finished));
}

// The running fiber waits at a barrier or has finished the block: runs the next ready fiber, or returns to the
// launch once the whole block has finished. With nothing ready otherwise, no barrier can ever complete.
inline void park() {
    Launch& l = *live;
    if (l.ready_count > 0) {
        Fiber* next = l.ready[l.ready_head];
        l.ready_head = (l.ready_head + 1) % l.ready.size();
        --l.ready_count;
        switch_to(next);
    } else if (l.finished == l.fibers.size()) {
        switch_to(&l.host);
    } else {
        deadlock();
    }
}

inline void make_ready(Fiber* f) {
    Launch& l = *live;
    l.ready[(l.ready_head + l.ready_count++) % l.ready.size()] = f;
}

inline void sync_block() {
    Launch& l = *live;
    if (l.at_syncthreads.size() + 1 < l.fibers.size()) {
        l.at_syncthreads.push_back(l.current);
        return park();
    }
    for (Fiber* f : l.at_syncthreads) make_ready(f);  // the last to arrive runs on
    l.at_syncthreads.clear();
}

// Arrives at the warp's barrier; returns once every live lane has arrived.
inline void sync_warp(Warp& w) {
    if (w.arrived + 1 < w.lanes) {
        w.waiting[w.arrived++] = live->current;
        return park();
    }
    for (unsigned i = 0; i < w.arrived; ++i) make_ready(w.waiting[i]);  // the last to arrive runs on
    w.arrived = 0;
    ++w.generation;
}

// Every fiber's entry: runs the kernel for the live block, then parks until the launch resumes it for the next.
[[noreturn]] inline void fiber_main() {
    for (;;) {
        try {
            live->body(live->kernel);
        } catch (...) {
            die("a C++ exception escaped the kernel");
        }
        ++live->finished;
        park();
    }
}

// The stack pointer of a fiber that starts in fiber_main when first switched to; `top` is the end of its stack.
inline void* fresh_stack(unsigned char* top) {
    auto* frame = reinterpret_cast<std::uintptr_t*>(top) - switch_frame_words;
    std::memset(frame, 0, switch_frame_words * sizeof(std::uintptr_t));
    frame[switch_entry_word] = reinterpret_cast<std::uintptr_t>(&fiber_main);
    return frame;
}

// Runs `kernel()` for every thread of every block of `g`; see the header comment for the model.
template <typename Kernel>
int launch(const Geometry& g, const Kernel& kernel) {
    if (!valid(g)) return INVALID_GEOMETRY;
    if (g.grid[0] == 0 || g.grid[1] == 0 || g.grid[2] == 0) return OK;
    std::lock_guard<std::mutex> lock(launch_mutex);
    const unsigned threads = g.block[0] * g.block[1] * g.block[2];
    std::unique_ptr<Launch> l;
    try {
        l = std::make_unique<Launch>(threads, g.shared_mem_bytes);
    } catch (...) {
        return OUT_OF_RESOURCES;
    }
    if (!stacks.reserve(threads)) return OUT_OF_RESOURCES;
    l->body = [](const void* k) { (*static_cast<const Kernel*>(k))(); };
    l->kernel = &kernel;
    for (unsigned t = 0; t < threads; ++t) {
        Fiber& f = l->fibers[t];
        f.tid = uint3{t % g.block[0], (t / g.block[0]) % g.block[1], t / (g.block[0] * g.block[1])};
        f.linear = t;
        f.sp = fresh_stack(stacks.stack(t) + Stacks::bytes);
    }
    blockDim = dim3{g.block[0], g.block[1], g.block[2]};
    gridDim = dim3{g.grid[0], g.grid[1], g.grid[2]};
    live = l.get();
    for (unsigned z = 0; z < g.grid[2]; ++z) {
        for (unsigned y = 0; y < g.grid[1]; ++y) {
            for (unsigned x = 0; x < g.grid[0]; ++x) {
                blockIdx = uint3{x, y, z};
                l->finished = 0;
                l->current = &l->host;
                for (Fiber& f : l->fibers) make_ready(&f);
                park();
            }
        }
    }
    live = nullptr;
    return OK;
}

inline unsigned char* dynamic_smem() { return reinterpret_cast<unsigned char*>(live->smem.data()); }

inline Warp& own_warp() { return live->warps[linear_tid() / 32]; }

// One shuffle: every live lane publishes `v`, then reads lane `src` (or keeps its own value when `own`).
template <typename T>
T exchange(unsigned mask, T v, unsigned src, bool own) {
    static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "shuffles move up to 8 trivially copyable bytes");
    Warp& w = own_warp();
    const unsigned live_lanes = w.lanes == 32 ? 0xffffffffu : (1u << w.lanes) - 1u;
    if (mask != live_lanes) {
        die("shuffle mask does not name exactly the warp's live lanes (mask, live)", mask, live_lanes);
    }
    auto& slot = w.slot[w.generation & 1u];
    std::memcpy(&slot[linear_tid() % 32], &v, sizeof(T));
    sync_warp(w);
    T r = v;
    if (!own) {
        if (src >= w.lanes) die("shuffle reads a lane that does not exist (lane, live lanes)", src, w.lanes);
        std::memcpy(&r, &slot[src], sizeof(T));
    }
    return r;
}

inline unsigned lane_id() { return linear_tid() % 32; }

}  // namespace sana_emu

// ---------------------------------------------------------------------------------------------------------------
// Synchronisation and warp primitives (CUDA semantics for `width` segments)
// ---------------------------------------------------------------------------------------------------------------
inline void __syncthreads() { sana_emu::sync_block(); }

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
    Warp& w = own_warp();
    if (w.lanes != 32) die("mma.sync needs all 32 lanes of a warp (live lanes, needed)", w.lanes, 32);
    const unsigned lane = linear_tid() % 32;
    auto& buf = w.mma[w.generation & 1u];
    for (int i = 0; i < 4; ++i) buf[lane][i] = a[i];
    buf[lane][4] = b[0];
    buf[lane][5] = b[1];
    sync_warp(w);
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
