//! kernels/sampler.cu, run through the emulation engine, against the CPU reference (src/cpu/sampler.rs, which the
//! host schedulers of src/scheduler.rs also run), and the schedule the kernels read against the schedulers' own
//! steps.
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

mod emu_check;

use emu_check::{assert_caught, assert_within, check_ptx, rounded, ulp, Rng, DTYPES, U};
use sana::cpu::sampler as cpu;
use sana::engine::cuda::embedded::Family;
use sana::engine::emu;
use sana::engine::StorageDtype;
use sana::model::config::{DpmSolverConfig, FlowEulerConfig, SchedulerConfig, ScmConfig};
use sana::scheduler::{Scheduler, ScmScheduler, ScmTimesteps, StepRule};
use sana::vocabulary::schedule::{decode_row, schedule_table, set_pag_scales, step_index};
use sana::vocabulary::Guidance;
use sana::HostTensor;

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

#[test]
fn sampler_model_input_matches_cpu() {
    let mut rng = Rng(31);
    let schedules = [
        ("flow", schedule_of(&dpm(2), 1.0)),
        ("scm", scm_schedule(&scm(2))),
    ];
    for dtype in DTYPES {
        for shape in SHAPES {
            let x = rng.tensor(&shape, -3.0, 3.0);
            for (what, s) in &schedules {
                for copies in [1, 2] {
                    let got = emu::model_input(&x, copies, s, dtype).expect("emu");
                    let want = cpu::model_input(&x, copies, s).expect("cpu");
                    assert_eq!(got.shape(), want.shape());
                    let w = want.data();
                    assert_within(
                        &format!("model_input {what} {dtype:?} {shape:?} ×{copies}"),
                        got.data(),
                        w,
                        |i| 0.5 * ulp(dtype, w[i]),
                    );
                }
            }
        }
    }
}

#[test]
fn sampler_step_sinusoid_matches_cpu() {
    // Integer DPM timesteps from 999 down, fractional Euler ones.
    let (euler, dpm) = (schedule_of(&euler(4), 1.0), schedule_of(&dpm(3), 1.0));
    for dtype in DTYPES {
        for (what, s) in [("euler", &euler), ("dpm", &dpm)] {
            for i in 0..3 {
                let s = at_step(s, i);
                let (t, _) = decode_row(&s, i).expect("row");
                for batch in [1, 3] {
                    let got = emu::step_sinusoid(&s, batch, 256, dtype).expect("emu");
                    let want = cpu::step_sinusoid(&s, batch, 256).expect("cpu");
                    let w = want.data();
                    assert_within(
                        &format!("step_sinusoid {dtype:?} {what} step {i} (t = {t}) batch {batch}"),
                        got.data(),
                        w,
                        |k| 0.5 * ulp(dtype, w[k]) + 4.0 * U * t.abs().max(1.0),
                    );
                }
            }
        }
    }
}

/// One step of every rule, with and without CFG, from random state, emu against the CPU reference.
#[test]
fn sampler_flow_step_matches_cpu_bit_for_bit() {
    let mut rng = Rng(32);
    let schedules = [
        ("dpm", schedule_of(&dpm(4), 1.0)),
        ("euler", schedule_of(&euler(3), 1.0)),
        ("scm", scm_schedule(&scm(3))),
    ];
    for dtype in DTYPES {
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
                        emu::flow_step(&s, &output, guidance, n, &mut gx, &mut gp, dtype)
                            .expect("emu");
                        let (mut wx, mut wp) = (x.clone(), prev.clone());
                        cpu::flow_step(&s, &output, guidance, n, &mut wx, &mut wp).expect("cpu");
                        let case = format!("{what} step {i} {dtype:?} {shape:?} {guidance:?}");
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
}

/// A whole loop on the schedule, step after step with `advance_schedule`, equals the host scheduler stepping the
/// same velocities: the schedule carries exactly what `Scheduler::step` applies.
#[test]
fn sampler_schedule_reproduces_the_host_scheduler() {
    let mut rng = Rng(33);
    for (what, scheduler) in [
        ("dpm 20", dpm(20)),
        ("dpm 2", dpm(2)),
        ("euler 5", euler(5)),
    ] {
        let shape = [1, 299, 32];
        let mut host = scheduler.clone();
        let mut schedule = schedule_of(&scheduler, 1.0);
        let mut want = rng.tensor(&shape, -1.0, 1.0);
        let mut x = want.clone();
        let mut prev = want.clone();
        for i in 0..scheduler.timesteps().len() {
            assert_eq!(step_index(&schedule).expect("index"), i);
            let v = rounded(&rng.tensor(&shape, -2.0, 2.0), StorageDtype::Bf16);
            want = host.step(&v, &want).expect("host step");
            emu::flow_step(
                &schedule,
                &v,
                Guidance::default(),
                None,
                &mut x,
                &mut prev,
                StorageDtype::Bf16,
            )
            .expect("emu");
            emu::advance_schedule(&mut schedule, StorageDtype::Bf16).expect("advance");
        }
        assert_within(
            &format!("{what}: final sample"),
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

/// Sana-Sprint on the schedule equals the pipeline's host arithmetic around `ScmScheduler::step` (TrigFlow input,
/// the output's transform, the scheduler's re-noising), bit for bit, and the last clean estimate is what it returns.
#[test]
fn sampler_scm_schedule_reproduces_the_host_scheduler() {
    let mut rng = Rng(35);
    for steps in [1, 2, 4] {
        let mut host = scm(steps);
        let sd = host.sigma_data();
        let taus = host.timesteps().to_vec();
        let mut schedule = scm_schedule(&host);
        let shape = [2, 15, 32];
        let len: usize = shape.iter().product();
        let noise = rng.tensor(&[steps * len], -2.5, 2.5);
        let start = rng.tensor(&shape, -1.0, 1.0);
        let (mut want_x, mut want_x0) = (start.clone(), start.clone());
        let (mut x, mut x0) = (start.clone(), start.clone());
        for (i, &tau) in taus[..steps].iter().enumerate() {
            let f = rounded(&rng.tensor(&shape, -2.0, 2.0), StorageDtype::Bf16);
            // The pipeline's host arithmetic (src/pipeline.rs before the loop moved to the engine).
            let s = tau.sin() / (tau.cos() + tau.sin());
            let k = (s * s + (1.0 - s) * (1.0 - s)).sqrt();
            let (a, c) = (1.0 - 2.0 * s, 1.0 - 2.0 * s + 2.0 * s * s);
            let x_in: Vec<f32> = want_x.data().iter().map(|v| v / sd * k).collect();
            let input = emu::model_input(&x, 1, &schedule, StorageDtype::F32).expect("input");
            assert_within(
                &format!("scm {steps}: input {i}"),
                input.data(),
                &x_in,
                |_| 0.0,
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
            emu::flow_step(
                &schedule,
                &f,
                Guidance::default(),
                Some(&noise),
                &mut x,
                &mut x0,
                StorageDtype::Bf16,
            )
            .expect("emu");
            emu::advance_schedule(&mut schedule, StorageDtype::Bf16).expect("advance");
        }
        assert_within(&format!("scm {steps}: x"), x.data(), want_x.data(), |_| 0.0);
        assert_within(
            &format!("scm {steps}: x0"),
            x0.data(),
            want_x0.data(),
            |_| 0.0,
        );
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
    emu::flow_step(
        &schedule,
        &output,
        Some(4.5).into(),
        None,
        &mut gx,
        &mut gp,
        dtype,
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
