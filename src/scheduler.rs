//! Flow-matching samplers, reproducing diffusers step for step (docs/numerics/sampling.md §6, §9):
//! `DPMSolverMultistepScheduler` with flow sigmas (the "Flow-DPM-Solver" Sana ships) and
//! `FlowMatchEulerDiscreteScheduler` ("Flow-Euler"); and Sana-Sprint's `SCMScheduler` (docs/numerics/sampling.md §10),
//! which is stochastic and so has its own type, [`ScmScheduler`]. Schedules are computed in f64 as NumPy does, then
//! rounded to f32; steps run in f32 with every scalar formed first, as PyTorch's 0-d tensors are.

use crate::cpu;
use crate::error::{Error, Result};
use crate::model::config::{DpmSolverConfig, FlowEulerConfig, SchedulerConfig, ScmConfig};
use crate::tensor::HostTensor;

pub use crate::vocabulary::StepRule;

/// A scheduler with its timesteps set for one generation. Call `step` once per entry of `timesteps()`, in order.
#[derive(Clone, Debug)]
pub enum Scheduler {
    /// Flow-DPM-Solver++, the sampler Sana ships.
    FlowDpmSolver(FlowDpmSolver),
    /// Flow-Euler.
    FlowEuler(FlowEuler),
}

impl Scheduler {
    /// Sets the timesteps of `config` for `num_inference_steps` steps. Fails with [`Error::InvalidInput`] for 0
    /// steps or an SCM config (use [`ScmScheduler`]).
    pub fn new(config: &SchedulerConfig, num_inference_steps: usize) -> Result<Self> {
        if num_inference_steps == 0 {
            return Err(Error::InvalidInput(
                "the number of inference steps must be at least 1".into(),
            ));
        }
        Ok(match config {
            SchedulerConfig::FlowDpmSolver(c) => {
                Self::FlowDpmSolver(FlowDpmSolver::new(c, num_inference_steps))
            }
            SchedulerConfig::FlowEuler(c) => {
                Self::FlowEuler(FlowEuler::new(c, num_inference_steps))
            }
            SchedulerConfig::Scm(_) => {
                return Err(Error::InvalidInput(
                    "SCMScheduler (Sana-Sprint) draws noise every step: use ScmScheduler".into(),
                ))
            }
        })
    }

    /// `N + 1` sigmas, the last one the final (0 unless `final_sigmas_type = "sigma_min"`).
    pub fn sigmas(&self) -> &[f32] {
        match self {
            Self::FlowDpmSolver(s) => &s.sigmas,
            Self::FlowEuler(s) => &s.sigmas,
        }
    }

    /// The value the transformer receives at each step (before `timestep_scale`): integers `floor(1000·σ)` for the
    /// DPM-Solver, fractional `1000·σ` for Euler (docs/numerics/sampling.md §7).
    pub fn timesteps(&self) -> &[f32] {
        match self {
            Self::FlowDpmSolver(s) => &s.timesteps,
            Self::FlowEuler(s) => &s.timesteps,
        }
    }

    /// Advances `sample` by one step given the (guided) velocity; returns the next sample.
    pub fn step(&mut self, velocity: &HostTensor, sample: &HostTensor) -> Result<HostTensor> {
        if velocity.shape() != sample.shape() {
            return Err(Error::shape(
                "scheduler step",
                format!(
                    "velocity {:?} and sample {:?} differ",
                    velocity.shape(),
                    sample.shape()
                ),
            ));
        }
        match self {
            Self::FlowDpmSolver(s) => s.step(velocity, sample),
            Self::FlowEuler(s) => s.step(velocity, sample),
        }
    }
}

/// NumPy `linspace(start, stop, num)` in f64: `k·step + start`, the last value set to `stop` exactly.
fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut v: Vec<f64> = (0..num).map(|k| k as f64 * step + start).collect();
    v[num - 1] = stop;
    v
}

fn shift_sigma(shift: f64, s: f64) -> f64 {
    shift * s / (1.0 + (shift - 1.0) * s)
}

impl Scheduler {
    /// The rule of every step, in order: what [`Self::step`] applies, for samplers that run elsewhere (the device).
    pub fn rules(&self) -> Vec<StepRule> {
        match self {
            Self::FlowDpmSolver(s) => (0..s.timesteps.len()).map(|i| s.rule(i)).collect(),
            Self::FlowEuler(s) => (0..s.timesteps.len()).map(|i| s.rule(i)).collect(),
        }
    }
}

/// `DPMSolverMultistepScheduler(use_flow_sigmas=True, algorithm_type="dpmsolver++", solver_type="midpoint")`.
#[derive(Clone, Debug)]
pub struct FlowDpmSolver {
    config: DpmSolverConfig,
    sigmas: Vec<f32>,
    timesteps: Vec<f32>,
    step_index: usize,
    /// The previous step's clean-sample estimate (`model_outputs[-2]` upstream); empty before the first step.
    x0_prev: Vec<f32>,
}

impl FlowDpmSolver {
    fn new(config: &DpmSolverConfig, n: usize) -> Self {
        let train = config.num_train_timesteps as f64;
        let alphas = linspace(1.0, 1.0 / train, n + 1);
        // flip(shift(1 − α))[:-1]: drop the σ = 0 that the flip moves to the end.
        let sigmas64: Vec<f64> = alphas
            .iter()
            .rev()
            .map(|a| shift_sigma(config.flow_shift, 1.0 - a))
            .take(n)
            .collect();
        // timesteps are truncated, not rounded (`.to(torch.int64)` of the f64 values).
        let timesteps = sigmas64
            .iter()
            .map(|s| (s * train).trunc() as f32)
            .collect();
        let last = if config.final_sigma_zero {
            0.0
        } else {
            sigmas64[n - 1]
        };
        let sigmas = sigmas64.iter().chain([&last]).map(|&s| s as f32).collect();
        Self {
            config: config.clone(),
            sigmas,
            timesteps,
            step_index: 0,
            x0_prev: Vec::new(),
        }
    }

    /// Step `i`'s rule. Upstream counts `lower_order_nums` up once per step, so "fewer than one earlier step" is
    /// `i == 0`; the last step drops to first order under `lower_order_final` (fewer than 15 steps),
    /// `euler_at_final` or `final_sigmas_type = "zero"`.
    fn rule(&self, i: usize) -> StepRule {
        let n = self.timesteps.len();
        let lower_order_final = i == n - 1
            && (self.config.euler_at_final
                || (self.config.lower_order_final && n < 15)
                || self.config.final_sigma_zero);
        let (s0, t) = (self.sigmas[i], self.sigmas[i + 1]);
        let h = Self::lambda(t) - Self::lambda(s0);
        let ratio = t / s0;
        let c = (1.0 - t) * ((-h).exp() - 1.0);
        if self.config.solver_order == 1 || i == 0 || lower_order_final {
            return StepRule::DpmFirst {
                sigma: s0,
                ratio,
                c,
            };
        }
        let h0 = Self::lambda(s0) - Self::lambda(self.sigmas[i - 1]);
        let r0 = h0 / h;
        StepRule::DpmSecond {
            sigma: s0,
            ratio,
            c,
            inv_r0: 1.0 / r0,
            half_c: 0.5 * c,
        }
    }

    fn step(&mut self, velocity: &HostTensor, sample: &HostTensor) -> Result<HostTensor> {
        let i = self.step_index;
        let n = self.timesteps.len();
        if i >= n {
            return Err(Error::InvalidInput(format!(
                "scheduler stepped past its {n} steps"
            )));
        }
        if self.x0_prev.len() != sample.len() {
            self.x0_prev = vec![0.0; sample.len()];
        }
        let mut next = sample.clone();
        cpu::sampler::apply_rule(
            self.rule(i),
            velocity.data(),
            &[],
            next.data_mut(),
            &mut self.x0_prev,
        );
        self.step_index += 1;
        Ok(next)
    }

    /// λ(σ) = ln α − ln σ with α = 1 − σ, in f32. At σ = 0 it is +∞ and IEEE arithmetic makes the final step land
    /// exactly on x0 (e^{−∞} = 0), as it does upstream.
    fn lambda(sigma: f32) -> f32 {
        (1.0 - sigma).ln() - sigma.ln()
    }
}

/// `FlowMatchEulerDiscreteScheduler(shift)` without dynamic shifting.
#[derive(Clone, Debug)]
pub struct FlowEuler {
    sigmas: Vec<f32>,
    timesteps: Vec<f32>,
    step_index: usize,
}

impl FlowEuler {
    fn new(config: &FlowEulerConfig, n: usize) -> Self {
        let train = config.num_train_timesteps;
        let shift = config.shift as f32;
        // Construction: the training sigmas in f32; only their ends (σ_max, σ_min) are used here.
        let train_sigma = |t: f32| {
            let s = t / train as f32;
            shift * s / (1.0 + (shift - 1.0) * s)
        };
        let sigma_max = f64::from(train_sigma(train as f32));
        let sigma_min = f64::from(train_sigma(1.0));
        // set_timesteps: NumPy f64, the shift applied a second time, then rounded to f32.
        let t = linspace(sigma_max * train as f64, sigma_min * train as f64, n);
        let sigmas: Vec<f32> = t
            .iter()
            .map(|&tv| shift_sigma(config.shift, tv / train as f64) as f32)
            .chain([0.0])
            .collect();
        let timesteps = sigmas[..n].iter().map(|s| s * train as f32).collect();
        Self {
            sigmas,
            timesteps,
            step_index: 0,
        }
    }

    fn rule(&self, i: usize) -> StepRule {
        StepRule::Euler {
            dt: self.sigmas[i + 1] - self.sigmas[i],
        }
    }

    fn step(&mut self, velocity: &HostTensor, sample: &HostTensor) -> Result<HostTensor> {
        let i = self.step_index;
        if i >= self.timesteps.len() {
            return Err(Error::InvalidInput(format!(
                "scheduler stepped past its {} steps",
                self.timesteps.len()
            )));
        }
        let mut next = sample.clone();
        cpu::sampler::apply_rule(self.rule(i), velocity.data(), &[], next.data_mut(), &mut []);
        self.step_index += 1;
        Ok(next)
    }
}

/// Sana-Sprint's `SCMScheduler` (TrigFlow, `prediction_type = "trigflow"`): TrigFlow times τ from π/2 to 0;
/// each step forms `x0 = cos τ_s · x − sin τ_s · F` and re-noises to the next τ with fresh noise.
#[derive(Clone, Debug)]
pub struct ScmScheduler {
    sigma_data: f32,
    timesteps: Vec<f32>,
    step_index: usize,
}

/// The schedule of [`ScmScheduler`]: diffusers' `set_timesteps` arguments.
#[derive(Clone, Debug, PartialEq)]
pub enum ScmTimesteps {
    /// `[max, intermediate, 0]`; two steps only (the Sprint default: 1.5708, 1.3).
    Intermediate {
        /// The first TrigFlow time (`max_timesteps`).
        max: f32,
        /// The middle one (`intermediate_timesteps`).
        intermediate: f32,
    },
    /// `linspace(max, 0, N + 1)` (PyTorch's f32 linspace).
    Linspace {
        /// The first TrigFlow time (`max_timesteps`).
        max: f32,
        /// N, the number of steps.
        steps: usize,
    },
    /// User-given TrigFlow times, `N + 1` values.
    Custom(Vec<f32>),
}

impl ScmTimesteps {
    /// The pipeline's defaults: `[1.5708, 1.3, 0]` for two steps, else a linspace from 1.5708.
    pub fn sprint_default(steps: usize) -> Self {
        // diffusers' literal 1.57080, not π/2: the value is part of the schedule to reproduce.
        #[allow(clippy::approx_constant)]
        const MAX: f32 = 1.570_8;
        if steps == 2 {
            Self::Intermediate {
                max: MAX,
                intermediate: 1.3,
            }
        } else {
            Self::Linspace { max: MAX, steps }
        }
    }
}

impl ScmScheduler {
    /// Sets the TrigFlow times of `schedule`. Fails with [`Error::InvalidInput`] unless there are 1 to
    /// `num_train_timesteps` steps.
    pub fn new(config: &ScmConfig, schedule: ScmTimesteps) -> Result<Self> {
        let timesteps = match schedule {
            ScmTimesteps::Intermediate { max, intermediate } => vec![max, intermediate, 0.0],
            ScmTimesteps::Linspace { max, steps } => torch_linspace_f32(max, 0.0, steps + 1),
            ScmTimesteps::Custom(t) => t,
        };
        let steps = timesteps.len().saturating_sub(1);
        if steps == 0 || steps > config.num_train_timesteps {
            return Err(Error::InvalidInput(format!(
                "SCM sampling needs between 1 and {} steps, got {steps}",
                config.num_train_timesteps
            )));
        }
        Ok(Self {
            sigma_data: config.sigma_data as f32,
            timesteps,
            step_index: 0,
        })
    }

    /// TrigFlow times τ, `N + 1` values ending in 0.
    pub fn timesteps(&self) -> &[f32] {
        &self.timesteps
    }

    /// The transformer's timestep `s = sin τ / (cos τ + sin τ)` of each step, and each step's rule, with every
    /// scalar formed in f32 as SanaSprintPipeline forms it.
    pub fn rules(&self) -> (Vec<f32>, Vec<StepRule>) {
        self.timesteps
            .windows(2)
            .map(|w| {
                let (tau, next) = (w[0], w[1]);
                let s = tau.sin() / (tau.cos() + tau.sin());
                let rule = StepRule::Scm {
                    sigma_data: self.sigma_data,
                    k: (s * s + (1.0 - s) * (1.0 - s)).sqrt(),
                    a: 1.0 - 2.0 * s,
                    c: 1.0 - 2.0 * s + 2.0 * s * s,
                    cos_s: tau.cos(),
                    sin_s: tau.sin(),
                    cos_t: next.cos(),
                    sin_t: next.sin(),
                };
                (s, rule)
            })
            .unzip()
    }

    /// σ_d (`sigma_data`, 0.5 for Sprint): scales the initial noise, the per-step noise and the model input.
    pub fn sigma_data(&self) -> f32 {
        self.sigma_data
    }

    /// One step: `model_output` is the TrigFlow prediction `F` (already × σ_d), `noise` a standard normal draw of
    /// the sample's shape (the pipeline draws one every step, even the last, where it is multiplied by sin 0 = 0).
    /// Returns `(next sample, x0 estimate)`.
    pub fn step(
        &mut self,
        model_output: &HostTensor,
        sample: &HostTensor,
        noise: &HostTensor,
    ) -> Result<(HostTensor, HostTensor)> {
        let i = self.step_index;
        if i + 1 >= self.timesteps.len() {
            return Err(Error::InvalidInput(format!(
                "scheduler stepped past its {} steps",
                self.timesteps.len() - 1
            )));
        }
        for (what, t) in [("model output", model_output), ("noise", noise)] {
            if t.shape() != sample.shape() {
                return Err(Error::shape(
                    "SCM step",
                    format!(
                        "{what} {:?} and sample {:?} differ",
                        t.shape(),
                        sample.shape()
                    ),
                ));
            }
        }
        let (s, t) = (self.timesteps[i], self.timesteps[i + 1]);
        let (cos_s, sin_s, cos_t, sin_t) = (s.cos(), s.sin(), t.cos(), t.sin());
        let x0 = map2(sample, model_output, |x, f| cos_s * x - sin_s * f)?;
        let sd = self.sigma_data;
        let scaled_noise = HostTensor::new(
            noise.shape().to_vec(),
            noise.data().iter().map(|n| n * sd).collect(),
        )?;
        let next = map2(&x0, &scaled_noise, |x, n| cos_t * x + sin_t * n)?;
        self.step_index += 1;
        Ok((next, x0))
    }
}

/// `torch.linspace(start, end, n)` for float32: the first half counts up from `start`, the second half down from
/// `end`, with the step in f32 (ATen's `RangeFactoriesKernel`).
fn torch_linspace_f32(start: f32, end: f32, n: usize) -> Vec<f32> {
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f32;
    let half = n / 2;
    (0..n)
        .map(|i| {
            if i < half {
                start + step * i as f32
            } else {
                end - step * (n - 1 - i) as f32
            }
        })
        .collect()
}

fn map2(a: &HostTensor, b: &HostTensor, f: impl Fn(f32, f32) -> f32) -> Result<HostTensor> {
    HostTensor::new(
        a.shape().to_vec(),
        a.data()
            .iter()
            .zip(b.data())
            .map(|(&x, &y)| f(x, y))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::linspace;

    #[test]
    fn linspace_hits_both_ends_exactly() {
        let v = linspace(1.0, 0.001, 21);
        assert_eq!(v[0], 1.0);
        assert_eq!(v[20], 0.001);
        assert!((v[10] - 0.5005).abs() < 1e-15);
    }
}
