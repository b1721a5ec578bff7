// The samplers on the device (docs/numerics/sampling.md §2, §6, §8, §9, §10), so that one denoising step is a fixed
// sequence of launches with no host round trip: it can be captured once as a CUDA graph and replayed
// (src/engine/cuda/step_graph.rs).
//
// The sampler state — latents x and the previous clean estimate x0_prev — is f32, in the DiT's token layout
// [B, h·w, C], as diffusers keeps latents in f32 whatever the model dtype. Everything that changes from step to step
// lives in the schedule, an f32 buffer the host fills once per generation (src/launch/sampler.rs):
//   schedule[0]                 the index i of the step to run (advance_schedule adds 1 after each step)
//   schedule[1 + i·ROW + k]     row i: TIMESTEP (the transformer's timestep), RULE, then the coefficients of
//                               src/scheduler.rs `StepRule`: SIGMA, RATIO, C, INV_R0, HALF_C, DT for the flow rules
//                               (and PAG, the step's perturbed-attention guidance scale); SD, K, A, SC, COS_S,
//                               SIN_S, COS_T, SIN_T for Sana-Sprint's SCM rule
// Sana-Sprint also reads its per-step noise, drawn on the host up front: noise[i·len + j] for step i.
//
// Formulas (CPU reference: src/cpu/sampler.rs, which the host scheduler itself uses):
//   model_input_*      out[k·len + i] = x[i] rounded to the storage dtype, k < copies (CFG: the batch [x; x]);
//                      under RULE_SCM the TrigFlow input (x / σ_d)·k instead
//   step_sinusoid_*    out[b, j] = cos(t·f_j), out[b, half + j] = sin(t·f_j), f_j = exp(−ln(10⁴)·j / half), t the
//                      row's TIMESTEP; diffusers' get_timestep_embedding(flip_sin_to_cos=True, shift 0)
//   flow_step_*        v = u + g·(c − u) from the model output [uncond; cond] (guide bit 1, CFG) or v = output
//                      (no CFG); with guide bit 2 (PAG) the output ends with the perturbed chunk p and
//                      v ← v + s·(c − p), s the row's PAG scale (diffusers' PAGMixin order), then
//                      RULE_EULER:      x ← x + dt·v
//                      RULE_DPM_FIRST:  x0 = x − σ·v;  x ← ratio·x − c·x0;  x0_prev ← x0
//                      RULE_DPM_SECOND: x0 = x − σ·v;  d = inv_r0·(x0 − x0_prev);  x ← (ratio·x − c·x0) − half_c·d;
//                                       x0_prev ← x0
//                      RULE_SCM (v = F): x_in = (x / σ_d)·k;  f = ((a·x_in + sc·F) / k)·σ_d;  x0 = cos_s·x − sin_s·f;
//                                       x ← cos_t·x0 + sin_t·(n·σ_d);  x0_prev ← x0
//   advance_schedule   schedule[0] += 1
//
// Geometry (src/launch/sampler.rs): 1-D grids of 256 threads, one element per thread; advance_schedule is one
// thread.
//
// Accumulation: f32 throughout, each operation rounded as written: __fmul_rn/__fadd_rn/__fsub_rn keep nvcc from
// contracting products and sums into FMAs, so the device steps the sampler with the host's (and PyTorch's) exact
// f32 arithmetic; only the model output is read from the storage dtype. The sinusoid's expf is the accurate
// (non-fast-math) function, within 2 ulp of the host's; its cos/sin go through f64 cospi/sinpi (see the kernel).

#include "common.cuh"

// Mirror the constants of src/launch/sampler.rs.
constexpr unsigned ROW = 10;
constexpr unsigned TIMESTEP = 0, RULE = 1, SIGMA = 2, RATIO = 3, C = 4, INV_R0 = 5, HALF_C = 6, DT = 7, PAG = 8;
constexpr unsigned GUIDE_CFG = 1, GUIDE_PAG = 2;
constexpr unsigned SD = 2, K = 3, A = 4, SC = 5, COS_S = 6, SIN_S = 7, COS_T = 8, SIN_T = 9;
constexpr unsigned RULE_EULER = 0, RULE_DPM_FIRST = 1, RULE_DPM_SECOND = 2, RULE_SCM = 3;

// Sana-Sprint's TrigFlow model input (x / σ_d)·k of row `row`.
__device__ __forceinline__ float scm_input(const float* row, float x) {
    return __fmul_rn(__fdiv_rn(x, row[SD]), row[K]);
}

// The current step's row of a schedule of `steps` rows, or null once every step has run (the kernels then write
// nothing rather than read past the table; the host engines report it as an error).
__device__ __forceinline__ unsigned schedule_index(const float* schedule) { return static_cast<unsigned>(schedule[0]); }

__device__ __forceinline__ const float* schedule_row(const float* schedule, unsigned steps) {
    const unsigned i = schedule_index(schedule);
    return i < steps ? schedule + 1 + i * ROW : nullptr;
}

// Mirrors ModelInputParams in src/launch/sampler.rs.
struct ModelInputParams {
    void* out;
    const float* x;
    const float* schedule;
    unsigned long long len;  // elements of x
    unsigned copies;
    unsigned steps;  // rows of the schedule
};
static_assert(sizeof(ModelInputParams) == 40, "ModelInputParams must match src/launch/sampler.rs");
SANA_PARAMS_LAYOUT(ModelInputParams, out, x, schedule, len, copies, steps)

// Mirrors SinusoidParams in src/launch/sampler.rs.
struct SinusoidParams {
    void* out;
    const float* schedule;
    unsigned batch;
    unsigned half;        // channels / 2
    float neg_log_10000;  // −ln(10⁴) rounded to f32, as the host computes it
    unsigned steps;       // rows of the schedule
};
static_assert(sizeof(SinusoidParams) == 32, "SinusoidParams must match src/launch/sampler.rs");
SANA_PARAMS_LAYOUT(SinusoidParams, out, schedule, batch, half, neg_log_10000, steps)

// Mirrors FlowStepParams in src/launch/sampler.rs.
struct FlowStepParams {
    float* x;
    float* x0_prev;
    const void* output;  // [copies·B, h·w, C] in the storage dtype
    const float* schedule;
    const float* noise;      // RULE_SCM: [steps, len]; else unused
    unsigned long long len;  // elements of x
    float guidance;
    unsigned guide;  // GUIDE_CFG: output leads with [uncond; cond]; GUIDE_PAG: it ends with the perturbed copy
    unsigned steps;  // rows of the schedule
    unsigned pad;
};
static_assert(sizeof(FlowStepParams) == 64, "FlowStepParams must match src/launch/sampler.rs");
SANA_PARAMS_LAYOUT(FlowStepParams, x, x0_prev, output, schedule, noise, len, guidance, guide, steps, pad)

// Mirrors AdvanceParams in src/launch/sampler.rs.
struct AdvanceParams {
    float* schedule;
};
static_assert(sizeof(AdvanceParams) == 8, "AdvanceParams must match src/launch/sampler.rs");
SANA_PARAMS_LAYOUT(AdvanceParams, schedule)

template <typename T>
__device__ __forceinline__ void model_input(const ModelInputParams& p) {
    const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= p.len) return;
    const float* row = schedule_row(p.schedule, p.steps);
    const bool scm = row != nullptr && static_cast<unsigned>(row[RULE]) == RULE_SCM;
    const T v = sana::from_float<T>(scm ? scm_input(row, p.x[i]) : p.x[i]);
    for (unsigned k = 0; k < p.copies; ++k) static_cast<T*>(p.out)[k * p.len + i] = v;
}

template <typename T>
__device__ __forceinline__ void step_sinusoid(const SinusoidParams& p) {
    const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
    const size_t channels = 2 * size_t(p.half);
    if (i >= p.batch * channels) return;
    const float* row = schedule_row(p.schedule, p.steps);
    if (row == nullptr) return;
    const unsigned c = static_cast<unsigned>(i % channels);
    const unsigned j = c < p.half ? c : c - p.half;
    const float f = expf(__fmul_rn(p.neg_log_10000, static_cast<float>(j)) / static_cast<float>(p.half));
    const float arg = __fmul_rn(row[TIMESTEP], f);
    // cos/sin of the f32 argument through cospi/sinpi in f64: their argument reduction is exact, where cosf/sinf
    // carry a Payne–Hanek path in local memory for huge arguments; t·f ≤ 1000 here, so arg/π is exact to ~1e-16 and
    // the result is the correctly rounded f32 value but for rare ties.
    const double turns = static_cast<double>(arg) / 3.141592653589793;
    static_cast<T*>(p.out)[i] =
        sana::from_float<T>(static_cast<float>(c < p.half ? cospi(turns) : sinpi(turns)));
}

template <typename T>
__device__ __forceinline__ void flow_step(const FlowStepParams& p) {
    const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
    const float* row = schedule_row(p.schedule, p.steps);
    if (i >= p.len || row == nullptr) return;
    const T* out = static_cast<const T*>(p.output);
    float v = sana::to_float(out[i]);
    if (p.guide & GUIDE_CFG) v = __fadd_rn(v, __fmul_rn(p.guidance, __fsub_rn(sana::to_float(out[p.len + i]), v)));
    if (p.guide & GUIDE_PAG) {
        const size_t cond = (p.guide & GUIDE_CFG) ? 1 : 0;
        const float c = sana::to_float(out[cond * p.len + i]);
        const float ptb = sana::to_float(out[(cond + 1) * p.len + i]);
        v = __fadd_rn(v, __fmul_rn(row[PAG], __fsub_rn(c, ptb)));
    }
    const float x = p.x[i];
    const unsigned rule = static_cast<unsigned>(row[RULE]);
    if (rule == RULE_SCM) {
        const float sd = row[SD];
        const float x_in = scm_input(row, x);
        const float f =
            __fmul_rn(__fdiv_rn(__fadd_rn(__fmul_rn(row[A], x_in), __fmul_rn(row[SC], v)), row[K]), sd);
        const float x0 = __fsub_rn(__fmul_rn(row[COS_S], x), __fmul_rn(row[SIN_S], f));
        const float n = p.noise[static_cast<size_t>(schedule_index(p.schedule)) * p.len + i];
        p.x[i] = __fadd_rn(__fmul_rn(row[COS_T], x0), __fmul_rn(row[SIN_T], __fmul_rn(n, sd)));
        p.x0_prev[i] = x0;
        return;
    }
    if (rule == RULE_EULER) {
        p.x[i] = __fadd_rn(x, __fmul_rn(row[DT], v));
        return;
    }
    if (rule != RULE_DPM_FIRST && rule != RULE_DPM_SECOND) return;  // no row the host writes
    const float x0 = __fsub_rn(x, __fmul_rn(row[SIGMA], v));
    float next = __fsub_rn(__fmul_rn(row[RATIO], x), __fmul_rn(row[C], x0));
    if (rule == RULE_DPM_SECOND) {
        const float d = __fmul_rn(row[INV_R0], __fsub_rn(x0, p.x0_prev[i]));
        next = __fsub_rn(next, __fmul_rn(row[HALF_C], d));
    }
    p.x[i] = next;
    p.x0_prev[i] = x0;
}

// One thread: the whole grid of the step's kernels has read the index before this launch runs (stream order).
template <typename T>
__device__ __forceinline__ void advance_schedule(const AdvanceParams& p) {
    if (blockIdx.x == 0 && threadIdx.x == 0) p.schedule[0] += 1.0f;
}

// ------------------------------------------------------------------------------------------- entries
SANA_KERNEL_PER_DTYPE(model_input, ModelInputParams)
SANA_KERNEL_PER_DTYPE(step_sinusoid, SinusoidParams)
SANA_KERNEL_PER_DTYPE(flow_step, FlowStepParams)
SANA_KERNEL_PER_DTYPE(advance_schedule, AdvanceParams)
