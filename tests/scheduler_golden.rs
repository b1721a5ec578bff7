//! Flow-DPM-Solver and Flow-Euler against diffusers: sigmas and timesteps exactly, step traces within 1e-5.
//! The traces feed each step the golden previous sample, so errors do not compound; 1e-5 allows a few f32 ulps of
//! the scalar coefficients (our `ln`/`exp` vs PyTorch's) times O(1) tensors.

mod common;

use common::{assert_close, golden, tiny_model};
use sana::model::config::{FlowEulerConfig, SchedulerConfig, ScmConfig};
use sana::scheduler::{Scheduler, ScmScheduler, ScmTimesteps};
use sana::weights::SafetensorsFile;

const TOL: f32 = 1e-5;

fn shipped_config() -> SchedulerConfig {
    SchedulerConfig::load(&tiny_model().join("scheduler/scheduler_config.json")).unwrap()
}

fn with_shift(shift: f64) -> SchedulerConfig {
    match shipped_config() {
        SchedulerConfig::FlowDpmSolver(mut c) => {
            c.flow_shift = shift;
            SchedulerConfig::FlowDpmSolver(c)
        }
        other => panic!("the shipped scheduler is not the flow DPM-Solver: {other:?}"),
    }
}

fn check(file: &str, config: SchedulerConfig, n: usize) {
    let g = SafetensorsFile::open(golden(file)).unwrap();
    let mut s = Scheduler::new(&config, n).unwrap();
    let sigmas = g.get("sigmas").unwrap().to_f32().unwrap();
    assert_eq!(s.sigmas(), sigmas.as_slice(), "{file}: sigmas");
    let ts = g.get("timesteps").unwrap();
    let ts: Vec<f32> = match ts.to_i64() {
        Ok(v) => v.into_iter().map(|t| t as f32).collect(),
        Err(_) => ts.to_f32().unwrap(),
    };
    assert_eq!(s.timesteps(), ts.as_slice(), "{file}: timesteps");
    let mut sample = g.get("sample").unwrap().to_host().unwrap();
    for i in 0..n {
        let v = g
            .get(&format!("model_output.{i}"))
            .unwrap()
            .to_host()
            .unwrap();
        let want = g
            .get(&format!("prev_sample.{i}"))
            .unwrap()
            .to_host()
            .unwrap();
        let got = s.step(&v, &sample).unwrap();
        assert_close(&format!("{file}: step {i}"), &got, &want, TOL);
        sample = want;
    }
    assert!(
        s.step(&sample, &sample).is_err(),
        "stepping past the end must fail"
    );
}

#[test]
fn scheduler_config_as_shipped_parses() {
    match shipped_config() {
        SchedulerConfig::FlowDpmSolver(c) => {
            assert_eq!(c.flow_shift, 3.0);
            assert_eq!(c.solver_order, 2);
            assert!(c.final_sigma_zero);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn scheduler_dpm_shift3_2_steps() {
    check("scheduler_dpm_shift3_n2.safetensors", with_shift(3.0), 2);
}

#[test]
fn scheduler_dpm_shift3_4_steps() {
    check("scheduler_dpm_shift3_n4.safetensors", with_shift(3.0), 4);
}

#[test]
fn scheduler_dpm_shift3_20_steps() {
    check("scheduler_dpm_shift3_n20.safetensors", with_shift(3.0), 20);
}

#[test]
fn scheduler_dpm_shift6_20_steps() {
    check("scheduler_dpm_shift6_n20.safetensors", with_shift(6.0), 20);
}

fn euler() -> SchedulerConfig {
    SchedulerConfig::FlowEuler(FlowEulerConfig {
        num_train_timesteps: 1000,
        shift: 3.0,
    })
}

#[test]
fn scheduler_euler_shift3_2_steps() {
    check("scheduler_euler_shift3_n2.safetensors", euler(), 2);
}

#[test]
fn scheduler_euler_shift3_4_steps() {
    check("scheduler_euler_shift3_n4.safetensors", euler(), 4);
}

#[test]
fn scheduler_euler_shift3_20_steps() {
    check("scheduler_euler_shift3_n20.safetensors", euler(), 20);
}

#[test]
fn scheduler_spec_table_shift3() {
    // docs/numerics/sampling.md §6.1: t_i for N = 20, shift 3 (independent of the fixtures).
    let s = Scheduler::new(&with_shift(3.0), 20).unwrap();
    let want = [
        999, 982, 963, 944, 922, 899, 874, 847, 817, 785, 749, 710, 666, 617, 562, 499, 428, 345,
        249, 136,
    ];
    let got: Vec<i64> = s.timesteps().iter().map(|&t| t as i64).collect();
    assert_eq!(got, want);
    assert_eq!(s.sigmas()[20], 0.0);
}

fn check_scm(file: &str, schedule: ScmTimesteps, n: usize) {
    let g = SafetensorsFile::open(golden(file)).unwrap();
    let config = ScmConfig {
        num_train_timesteps: 1000,
        sigma_data: 0.5,
    };
    let mut s = ScmScheduler::new(&config, schedule).unwrap();
    let want = g.get("timesteps").unwrap().to_f32().unwrap();
    assert_eq!(s.timesteps(), want.as_slice(), "{file}: timesteps");
    let mut sample = g.get("sample").unwrap().to_host().unwrap();
    let get = |name: String| g.get(&name).unwrap().to_host().unwrap();
    for i in 0..n {
        let (next, x0) = s
            .step(
                &get(format!("model_output.{i}")),
                &sample,
                &get(format!("noise.{i}")),
            )
            .unwrap();
        assert_close(
            &format!("{file}: x0 {i}"),
            &x0,
            &get(format!("pred_x0.{i}")),
            TOL,
        );
        let want = get(format!("prev_sample.{i}"));
        assert_close(&format!("{file}: step {i}"), &next, &want, TOL);
        sample = want;
    }
    assert!(s.step(&sample, &sample, &sample).is_err());
}

#[test]
fn scheduler_scm_two_steps_with_intermediate() {
    check_scm(
        "scheduler_scm_n2.safetensors",
        ScmTimesteps::sprint_default(2),
        2,
    );
}

#[test]
fn scheduler_scm_one_step() {
    check_scm(
        "scheduler_scm_n1.safetensors",
        ScmTimesteps::sprint_default(1),
        1,
    );
}

#[test]
fn scheduler_scm_four_steps_linspace() {
    check_scm(
        "scheduler_scm_n4.safetensors",
        ScmTimesteps::sprint_default(4),
        4,
    );
}
