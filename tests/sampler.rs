//! kernels/sampler.cu against the CPU reference (src/cpu/sampler.rs, which the host schedulers of src/scheduler.rs
//! also run), and the schedule the kernels read against the schedulers' own steps; each check body runs on the
//! emulation engine (f32, bf16, f16) and on the CUDA engine (bf16, f16: `sampler_on_cuda`).
//!
//! Tolerances, per element, with `ulp` the spacing of the storage dtype at the reference value (0 for f32):
//! - `model_input`: one rounding of each f32 sample value (SCM: of `(x / σ_d)·k`, the reference's two f32
//!   operations): `0.5·ulp`, bit-exact in f32.
//! - `flow_step`: the kernel reads the same storage-rounded model output and does the reference's f32 operations in
//!   the reference's order with `__fmul_rn`/`__fadd_rn`/`__fsub_rn` (never contracted into FMAs, on the GPU or in
//!   the emulator, built with -ffp-contract=off): bit-exact in every dtype. Any reordering (e.g. `x − σ·v` folded
//!   into the update) or a guidance on the wrong half moves results by far more than nothing.
//! - `step_sinusoid`: the argument `t·f_j` is formed with the reference's f32 operations; expf differs by at most 2
//!   f32 ulp (GPU) from the host's, moving the argument by `4U·t` at most; cos/sin (f64 cospi/sinpi in the kernel)
//!   are within 1 f32 ulp of the host's at values ≤ 1: `0.5·ulp + 4U·max(t, 1)` absolute.
//!
//! Every output starts poisoned with NaN in emulation, so an unwritten element fails. Sizes: lengths that are not a
//! multiple of the 256-thread block (1, 299, 554 latent tokens × 32 channels, 7·5·3), batch 1 and 2, CFG on and off,
//! perturbed-attention guidance on and off.

mod common;
mod emu_check;
mod engine_check;

use emu_check::{assert_caught, assert_within, check_ptx, rounded, ulp, Rng, DTYPES, U};
use engine_check::on_cuda;
use sana::cpu::sampler as cpu;
use sana::engine::cuda::embedded::Family;
use sana::engine::emu::EmuEngine;
use sana::engine::{Engine, StorageDtype};
use sana::model::config::{DpmSolverConfig, FlowEulerConfig, SchedulerConfig, ScmConfig};
use sana::scheduler::{Scheduler, ScmScheduler, ScmTimesteps, StepRule};
use sana::vocabulary::schedule::{decode_row, schedule_table, set_pag_scales, step_index};
use sana::vocabulary::Guidance;
use sana::HostTensor;

/// `model_input` on `e`: the sample and the schedule as sampler state, the result downloaded.
fn model_input<E: Engine>(
    e: &E,
    x: &HostTensor,
    copies: usize,
    schedule: &HostTensor,
) -> sana::Result<HostTensor> {
    let (x, s) = (e.upload_state(x)?, e.upload_state(schedule)?);
    e.download(&e.model_input(&x, copies, &s)?)
}

fn step_sinusoid<E: Engine>(
    e: &E,
    schedule: &HostTensor,
    batch: usize,
    channels: usize,
) -> sana::Result<HostTensor> {
    let s = e.upload_state(schedule)?;
    e.download(&e.step_sinusoid(&s, batch, channels)?)
}

/// One `flow_step` on `e` from host values, `x` and `x0_prev` updated in place.
fn flow_step<E: Engine>(
    e: &E,
    schedule: &HostTensor,
    output: &HostTensor,
    guidance: Guidance,
    noise: Option<&HostTensor>,
    x: &mut HostTensor,
    x0_prev: &mut HostTensor,
) -> sana::Result<()> {
    let s = e.upload_state(schedule)?;
    let output = e.upload(output)?;
    let noise = noise.map(|n| e.upload_state(n)).transpose()?;
    let (mut gx, mut gp) = (e.upload_state(x)?, e.upload_state(x0_prev)?);
    e.flow_step(&s, &output, guidance, noise.as_ref(), &mut gx, &mut gp)?;
    *x = e.download_state(&gx)?;
    *x0_prev = e.download_state(&gp)?;
    Ok(())
}

/// The checks on the CUDA engine (a GPU, or CI's software device).
#[test]
fn sampler_on_cuda() {
    on_cuda("sampler_on_cuda", |e, dtype| {
        check_model_input(e, dtype);
        check_step_sinusoid(e, dtype);
        check_flow_step(e, dtype);
        check_schedule_loop(e);
        check_scm_loop(e, dtype);
    });
}

/// Sample shapes `[B, h·w, C]`: token counts 1, 299 and 554 (not multiples of the block), and a small odd one.
const SHAPES: [[usize; 3]; 4] = [[1, 1, 32], [1, 299, 32], [2, 554, 32], [2, 15, 3]];

fn dpm(steps: usize) -> Scheduler {
    let config = SchedulerConfig::FlowDpmSolver(DpmSolverConfig {
        num_train_timesteps: 1000,
        flow_shift: 3.0,
        solver_order: 2,
        lower_order_final: true,
        euler_at_final: false,
        final_sigma_zero: true,
    });
    Scheduler::new(&config, steps).expect("scheduler")
}

fn euler(steps: usize) -> Scheduler {
    let config = SchedulerConfig::FlowEuler(FlowEulerConfig {
        num_train_timesteps: 1000,
        shift: 3.0,
    });
    Scheduler::new(&config, steps).expect("scheduler")
}

/// Sana-Sprint's scheduler, `steps` steps from the pipeline's default times.
fn scm(steps: usize) -> ScmScheduler {
    let config = ScmConfig {
        num_train_timesteps: 1000,
        sigma_data: 0.5,
    };
    ScmScheduler::new(&config, ScmTimesteps::sprint_default(steps)).expect("scm")
}

fn scm_schedule(s: &ScmScheduler) -> HostTensor {
    let (t, rules) = s.rules();
    schedule_table(&t, &rules).expect("schedule")
}

/// The scheduler's schedule with its timesteps × `scale`.
fn schedule_of(s: &Scheduler, scale: f32) -> HostTensor {
    let t: Vec<f32> = s.timesteps().iter().map(|&t| t * scale).collect();
    schedule_table(&t, &s.rules()).expect("schedule")
}

fn at_step(schedule: &HostTensor, i: usize) -> HostTensor {
    let mut s = schedule.clone();
    s.data_mut()[0] = i as f32;
    s
}

fn check_model_input<E: Engine>(e: &E, dtype: StorageDtype) {
    let mut rng = Rng(31);
    let schedules = [
        ("flow", schedule_of(&dpm(2), 1.0)),
        ("scm", scm_schedule(&scm(2))),
    ];
    for shape in SHAPES {
        let x = rng.tensor(&shape, -3.0, 3.0);
        for (what, s) in &schedules {
            for copies in [1, 2] {
                let got = model_input(e, &x, copies, s).expect("engine");
                let want = cpu::model_input(&x, copies, s).expect("cpu");
                assert_eq!(got.shape(), want.shape());
                let w = want.data();
                assert_within(
                    &format!(
                        "{} model_input {what} {dtype:?} {shape:?} ×{copies}",
                        e.name()
                    ),
                    got.data(),
                    w,
                    |i| 0.5 * ulp(dtype, w[i]),
                );
            }
        }
    }
}

#[test]
fn sampler_model_input_matches_cpu() {
    for dtype in DTYPES {
        check_model_input(&EmuEngine::new(dtype), dtype);
    }
}

fn check_step_sinusoid<E: Engine>(e: &E, dtype: StorageDtype) {
    // Integer DPM timesteps from 999 down, fractional Euler ones.
    let (euler, dpm) = (schedule_of(&euler(4), 1.0), schedule_of(&dpm(3), 1.0));
    for (what, s) in [("euler", &euler), ("dpm", &dpm)] {
        for i in 0..3 {
            let s = at_step(s, i);
            let (t, _) = decode_row(&s, i).expect("row");
            for batch in [1, 3] {
                let got = step_sinusoid(e, &s, batch, 256).expect("engine");
                let want = cpu::step_sinusoid(&s, batch, 256).expect("cpu");
                let w = want.data();
                assert_within(
                    &format!(
                        "{} step_sinusoid {dtype:?} {what} step {i} (t = {t}) batch {batch}",
                        e.name()
                    ),
                    got.data(),
                    w,
                    |k| 0.5 * ulp(dtype, w[k]) + 4.0 * U * t.abs().max(1.0),
                );
            }
        }
    }
}

#[test]
fn sampler_step_sinusoid_matches_cpu() {
    for dtype in DTYPES {
        check_step_sinusoid(&EmuEngine::new(dtype), dtype);
    }
}

/// One step of every rule, with and without CFG, from random state, against the CPU reference.
fn check_flow_step<E: Engine>(e: &E, dtype: StorageDtype) {
    let mut rng = Rng(32);
    let schedules = [
        ("dpm", schedule_of(&dpm(4), 1.0)),
        ("euler", schedule_of(&euler(3), 1.0)),
        ("scm", scm_schedule(&scm(3))),
    ];
    for (what, schedule) in &schedules {
        let steps = (schedule.len() - 1) / sana::vocabulary::schedule::ROW;
        let sprint = *what == "scm";
        for i in 0..steps {
            let s = at_step(schedule, i);
            for shape in SHAPES {
                let len: usize = shape.iter().product();
                let noise = sprint.then(|| rng.tensor(&[steps * len], -2.5, 2.5));
                // Sana-Sprint has no CFG or PAG.
                let cfgs: &[(Option<f32>, bool)] = if sprint {
                    &[(None, false)]
                } else {
                    &[
                        (None, false),
                        (Some(4.5), false),
                        (None, true),
                        (Some(4.5), true),
                    ]
                };
                for &(cfg, pag) in cfgs {
                    let guidance = Guidance { cfg, pag };
                    let copies = guidance.copies();
                    let mut s = s.clone();
                    if pag {
                        // A PAG scale per row, with an adaptive-scaling zero among them.
                        let scales: Vec<f32> =
                            (0..steps).map(|r| [2.75, 0.0, 1.3][r % 3]).collect();
                        set_pag_scales(&mut s, &scales).expect("pag scales");
                    }
                    let out_shape = [copies * shape[0], shape[1], shape[2]];
                    let output = rounded(&rng.tensor(&out_shape, -2.0, 2.0), dtype);
                    let x = rng.tensor(&shape, -3.0, 3.0);
                    let prev = rng.tensor(&shape, -3.0, 3.0);
                    let (mut gx, mut gp) = (x.clone(), prev.clone());
                    let n = noise.as_ref();
                    flow_step(e, &s, &output, guidance, n, &mut gx, &mut gp).expect("engine");
                    let (mut wx, mut wp) = (x.clone(), prev.clone());
                    cpu::flow_step(&s, &output, guidance, n, &mut wx, &mut wp).expect("cpu");
                    let case = format!(
                        "{} {what} step {i} {dtype:?} {shape:?} {guidance:?}",
                        e.name()
                    );
                    assert_within(&format!("{case}: x"), gx.data(), wx.data(), |_| 0.0);
                    assert_within(&format!("{case}: x0_prev"), gp.data(), wp.data(), |_| 0.0);
                    assert!(
                        gx.data().iter().zip(x.data()).any(|(a, b)| a != b),
                        "{case}: the step left x unchanged"
                    );
                }
            }
        }
    }
}

#[test]
fn sampler_flow_step_matches_cpu_bit_for_bit() {
    for dtype in DTYPES {
        check_flow_step(&EmuEngine::new(dtype), dtype);
    }
}

/// A whole loop on the schedule, step after step with `advance_schedule` on the engine's state, equals the host
/// scheduler stepping the same velocities: the schedule carries exactly what `Scheduler::step` applies. The
/// velocities are bf16 values, exact in every storage dtype.
fn check_schedule_loop<E: Engine>(e: &E) {
    let mut rng = Rng(33);
    for (what, scheduler) in [
        ("dpm 20", dpm(20)),
        ("dpm 2", dpm(2)),
        ("euler 5", euler(5)),
    ] {
        let shape = [1, 299, 32];
        let mut host = scheduler.clone();
        let mut want = rng.tensor(&shape, -1.0, 1.0);
        let mut schedule = e
            .upload_state(&schedule_of(&scheduler, 1.0))
            .expect("schedule");
        let mut gx = e.upload_state(&want).expect("x");
        let mut gp = e.upload_state(&want).expect("x0_prev");
        for i in 0..scheduler.timesteps().len() {
            let on_host = e.download_state(&schedule).expect("schedule");
            assert_eq!(step_index(&on_host).expect("index"), i);
            let v = rounded(&rng.tensor(&shape, -2.0, 2.0), StorageDtype::Bf16);
            want = host.step(&v, &want).expect("host step");
            let gv = e.upload(&v).expect("velocity");
            e.flow_step(&schedule, &gv, Guidance::default(), None, &mut gx, &mut gp)
                .expect("engine");
            e.advance_schedule(&mut schedule).expect("advance");
        }
        let (schedule, x) = (
            e.download_state(&schedule).expect("schedule"),
            e.download_state(&gx).expect("x"),
        );
        let mut prev = e.download_state(&gp).expect("x0_prev");
        assert_within(
            &format!("{} {what}: final sample", e.name()),
            x.data(),
            want.data(),
            |_| 0.0,
        );
        assert!(
            cpu::flow_step(
                &schedule,
                &x.clone(),
                Guidance::default(),
                None,
                &mut x.clone(),
                &mut prev
            )
            .is_err(),
            "{what}: a step past the schedule must be refused"
        );
    }
}

#[test]
fn sampler_schedule_reproduces_the_host_scheduler() {
    check_schedule_loop(&EmuEngine::new(StorageDtype::Bf16));
}

/// Sana-Sprint on the schedule equals the pipeline's host arithmetic around `ScmScheduler::step` (TrigFlow input,
/// the output's transform, the scheduler's re-noising), bit for bit, and the last clean estimate is what it returns.
/// The model input is compared after one rounding to the storage dtype (exact in f32).
fn check_scm_loop<E: Engine>(e: &E, dtype: StorageDtype) {
    let mut rng = Rng(35);
    for steps in [1, 2, 4] {
        let mut host = scm(steps);
        let sd = host.sigma_data();
        let taus = host.timesteps().to_vec();
        let mut schedule = e.upload_state(&scm_schedule(&host)).expect("schedule");
        let shape = [2, 15, 32];
        let len: usize = shape.iter().product();
        let noise = rng.tensor(&[steps * len], -2.5, 2.5);
        let gn = e.upload_state(&noise).expect("noise");
        let start = rng.tensor(&shape, -1.0, 1.0);
        let (mut want_x, mut want_x0) = (start.clone(), start.clone());
        let mut gx = e.upload_state(&start).expect("x");
        let mut gx0 = e.upload_state(&start).expect("x0");
        for (i, &tau) in taus[..steps].iter().enumerate() {
            let f = rounded(&rng.tensor(&shape, -2.0, 2.0), dtype);
            // The pipeline's host arithmetic (src/pipeline.rs before the loop moved to the engine).
            let s = tau.sin() / (tau.cos() + tau.sin());
            let k = (s * s + (1.0 - s) * (1.0 - s)).sqrt();
            let (a, c) = (1.0 - 2.0 * s, 1.0 - 2.0 * s + 2.0 * s * s);
            let x_in: Vec<f32> = want_x.data().iter().map(|v| v / sd * k).collect();
            let input = e
                .download(&e.model_input(&gx, 1, &schedule).expect("input"))
                .expect("input");
            assert_within(
                &format!("{} scm {steps}: input {i}", e.name()),
                input.data(),
                &x_in,
                |k| 0.5 * ulp(dtype, x_in[k]),
            );
            let f_tr: Vec<f32> = x_in
                .iter()
                .zip(f.data())
                .map(|(&xi, &fi)| (a * xi + c * fi) / k * sd)
                .collect();
            let f_tr = HostTensor::new(shape.to_vec(), f_tr).expect("f_tr");
            let n = HostTensor::new(
                shape.to_vec(),
                noise.data()[i * len..(i + 1) * len].to_vec(),
            )
            .expect("noise");
            (want_x, want_x0) = host.step(&f_tr, &want_x, &n).expect("host step");
            let gf = e.upload(&f).expect("output");
            e.flow_step(
                &schedule,
                &gf,
                Guidance::default(),
                Some(&gn),
                &mut gx,
                &mut gx0,
            )
            .expect("engine");
            e.advance_schedule(&mut schedule).expect("advance");
        }
        let (x, mut x0) = (
            e.download_state(&gx).expect("x"),
            e.download_state(&gx0).expect("x0"),
        );
        let schedule = e.download_state(&schedule).expect("schedule");
        let what = format!("{} scm {steps}", e.name());
        assert_within(&format!("{what}: x"), x.data(), want_x.data(), |_| 0.0);
        assert_within(&format!("{what}: x0"), x0.data(), want_x0.data(), |_| 0.0);
        let again = at_step(&schedule, 0);
        let f = rng.tensor(&shape, -1.0, 1.0);
        assert!(
            cpu::flow_step(
                &again,
                &f,
                Guidance::default(),
                None,
                &mut x.clone(),
                &mut x0
            )
            .is_err(),
            "an SCM step without noise must be refused"
        );
    }
}

#[test]
fn sampler_scm_schedule_reproduces_the_host_scheduler() {
    for dtype in DTYPES {
        check_scm_loop(&EmuEngine::new(dtype), dtype);
    }
}

#[test]
fn sampler_rules_follow_diffusers_orders() {
    let rules = dpm(4).rules();
    assert!(
        matches!(rules[0], StepRule::DpmFirst { .. }),
        "first step is first order"
    );
    assert!(matches!(rules[1], StepRule::DpmSecond { .. }));
    assert!(matches!(rules[2], StepRule::DpmSecond { .. }));
    assert!(
        matches!(rules[3], StepRule::DpmFirst { .. }),
        "lower_order_final"
    );
    assert!(euler(3)
        .rules()
        .iter()
        .all(|r| matches!(r, StepRule::Euler { .. })));
    let (t, rules) = scm(2).rules();
    assert_eq!(rules.len(), 2);
    assert!(
        (t[0] - 1.0).abs() < 1e-4,
        "τ = π/2 gives s ≈ 1, got {}",
        t[0]
    );
    assert!(
        matches!(
            rules[1],
            StepRule::Scm {
                cos_t: 1.0,
                sin_t: 0.0,
                ..
            }
        ),
        "the last step lands on τ = 0"
    );
}

/// Mistakes a sampler kernel could make, each of which the bit-exact comparison catches.
#[test]
fn sampler_tolerance_catches_wrong_kernels() {
    let mut rng = Rng(34);
    let dtype = StorageDtype::Bf16;
    let schedule = at_step(&schedule_of(&dpm(4), 1.0), 1);
    let shape = [1, 299, 32];
    let output = rounded(&rng.tensor(&[2, 299, 32], -2.0, 2.0), dtype);
    let x = rng.tensor(&shape, -3.0, 3.0);
    let prev = rng.tensor(&shape, -3.0, 3.0);
    let (mut gx, mut gp) = (x.clone(), prev.clone());
    flow_step(
        &EmuEngine::new(dtype),
        &schedule,
        &output,
        Some(4.5).into(),
        None,
        &mut gx,
        &mut gp,
    )
    .expect("emu");
    let (_, rule) = decode_row(&schedule, 1).expect("row");
    let StepRule::DpmSecond {
        sigma,
        ratio,
        c,
        inv_r0,
        half_c,
    } = rule
    else {
        panic!("step 1 of 4 is second order");
    };
    let len = x.len();
    let (u, cond) = output.data().split_at(len);
    let wrong = |guide: &dyn Fn(f32, f32) -> f32, fused: bool, order1: bool| -> Vec<f32> {
        (0..len)
            .map(|i| {
                let v = guide(u[i], cond[i]);
                let x0 = x.data()[i] - sigma * v;
                if order1 {
                    return ratio * x.data()[i] - c * x0;
                }
                let d = inv_r0 * (x0 - prev.data()[i]);
                if fused {
                    ratio.mul_add(x.data()[i], -(c * x0)) - half_c * d
                } else {
                    (ratio * x.data()[i] - c * x0) - half_c * d
                }
            })
            .collect()
    };
    let g = 4.5f32;
    for (what, values) in [
        (
            "guidance toward the unconditional half",
            wrong(&|u, c| c + g * (u - c), false, false),
        ),
        (
            "no guidance (the conditional half alone)",
            wrong(&|_, c| c, false, false),
        ),
        (
            "first order where the schedule says second",
            wrong(&|u, c| u + g * (c - u), false, true),
        ),
        (
            "an FMA in the update",
            wrong(&|u, c| u + g * (c - u), true, false),
        ),
    ] {
        assert_caught(what, gx.data(), &values, |_| 0.0);
    }
    // And the right formula written on the host is the kernel's, bit for bit.
    let right = wrong(&|u, c| u + g * (c - u), false, false);
    assert_within("reference formula", gx.data(), &right, |_| 0.0);
}

#[test]
fn sampler_ptx_has_every_kernel() {
    let mut entries = Vec::new();
    for op in [
        "model_input",
        "step_sinusoid",
        "flow_step",
        "advance_schedule",
    ] {
        for dtype in ["f32", "bf16", "f16"] {
            entries.push(format!("{op}_{dtype}"));
        }
    }
    check_ptx(
        Family::Sampler,
        &entries.iter().map(String::as_str).collect::<Vec<_>>(),
    );
}
