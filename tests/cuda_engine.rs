//! The CUDA engine against the CPU reference. Without a usable GPU (no driver, no device, no cuBLASLt, or a build
//! without nvcc) every GPU test prints that it was skipped and why — or fails, when `SANA_REQUIRE_GPU=1` (the GPU
//! bundle's run.sh and CI's software-device run set it); the probe, argument and kernel-list checks run everywhere.
//!
//! Tolerances (max|cuda − cpu| / max|cpu|, the CPU run on the same rounded inputs), with u = 2⁻⁸ (bf16: 8
//! significand bits) or 2⁻¹¹ (f16: 11) the unit roundoff of the storage dtype:
//! - one op: its output is rounded once (≤ u of the largest value); kernels that round an intermediate as diffusers
//!   does (the RMSNorm before its weight) add one more u; f32 accumulation order and the GPU's `expf`/`tanhf`
//!   (≤ 2 f32 ulp) are far below that. 4u.
//! - the tiny DiT (two blocks): 20u, the budget tests/emu_engine.rs justifies for the same kernels in emulation; the
//!   DC-AE decoder and the whole 2-step pipeline: 40u as in tests/emu_pipeline.rs; Gemma: the measured rounding
//!   floor of bf16/f16 storage with 1.5× margin, 0.15 (bf16) and 2e-2 (f16), as tests/emu_text_encoder.rs derives.

mod common;
mod emu_check;
mod tiny_runs;

use common::{relative_error, tiny_model};
use emu_check::{rounded, Rng};
use sana::engine::cpu::CpuEngine;
use sana::engine::cuda::CudaEngine;
use sana::engine::StorageDtype;
use sana::engine::{Activation, CausalAttention, Engine};
use sana::text::{PromptOptions, TextEncoder};
use sana::{Error, HostTensor};

const DTYPES: [StorageDtype; 2] = [StorageDtype::Bf16, StorageDtype::F16];

fn unit_roundoff(dtype: StorageDtype) -> f32 {
    match dtype {
        StorageDtype::Bf16 => 2f32.powi(-8),
        _ => 2f32.powi(-11),
    }
}

/// The engine on GPU 0, or `None` after printing why `test` is skipped (see [`common::cuda_or_skip`]).
fn gpu(test: &str, dtype: StorageDtype) -> Option<CudaEngine> {
    common::cuda_or_skip(test, dtype)
}

fn check(what: &str, got: &HostTensor, want: &HostTensor, tol: f32) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let err = relative_error(got.data(), want.data());
    eprintln!("{what}: {err:e} (tol {tol:e})");
    assert!(err.is_finite() && err <= tol, "{what}: {err:e} > {tol:e}");
}

#[test]
fn without_a_gpu_the_probe_says_what_is_missing() {
    match sana::engine::cuda::probe::open(0) {
        Ok((_, info)) => {
            eprintln!("GPU present: {info:?}");
            assert!(!info.name.is_empty());
            assert!(info.compute_capability >= (8, 0));
            assert!(info.total_bytes > 0);
        }
        Err(Error::EngineUnavailable { engine, reason }) => {
            assert_eq!(engine, "cuda");
            assert!(
                ["libcuda", "device", "cuBLASLt", "compute capability"]
                    .iter()
                    .any(|w| reason.contains(w)),
                "the reason names what is missing: {reason}"
            );
        }
        Err(other) => panic!("the probe must report EngineUnavailable, got {other}"),
    }
}

#[test]
fn f32_storage_is_refused_with_the_dtypes_it_takes() {
    let Err(err) = CudaEngine::new(0, StorageDtype::F32) else {
        panic!("f32 storage must be refused");
    };
    let msg = err.to_string();
    assert!(msg.contains("bf16") && msg.contains("f16"), "{msg}");
}

/// Runs `op` on the CPU engine and on the GPU with the same rounded random inputs and compares at 4u.
fn op_vs_cpu(
    gpu: &CudaEngine,
    name: &str,
    shapes: &[&[usize]],
    seed: u64,
    op: &dyn Fn(&dyn DynOps, &[HostTensor]) -> HostTensor,
) {
    let dtype = gpu.dtype();
    let mut rng = Rng(seed);
    let inputs: Vec<HostTensor> = shapes
        .iter()
        .map(|s| rounded(&rng.tensor(s, -1.0, 1.0), dtype))
        .collect();
    let want = op(&CpuEngine, &inputs);
    let got = op(gpu, &inputs);
    check(
        &format!("{name} {dtype:?}"),
        &got,
        &want,
        4.0 * unit_roundoff(dtype),
    );
}

/// Object-safe slice of [`Engine`] for the op table, on host tensors in and out (upload, run, download), so one
/// closure drives both engines.
trait DynOps {
    fn linear(
        &self,
        x: &HostTensor,
        w: &HostTensor,
        b: Option<&HostTensor>,
        act: Activation,
    ) -> HostTensor;
    fn unary(&self, x: &HostTensor, op: Unary) -> HostTensor;
    fn binary(&self, a: &HostTensor, b: &HostTensor, op: Binary) -> HostTensor;
    fn many(&self, t: &[HostTensor], op: Many) -> Vec<HostTensor>;
}

#[derive(Clone, Copy)]
enum Unary {
    Act(Activation),
    NchwToTokens,
    TokensToNchw(usize, usize),
    Repeat(usize),
    Shuffle(usize, usize),
    RepeatShuffle(usize, usize, usize),
    Upsample(usize, usize),
    Unshuffle(usize, usize),
    GroupMean(usize),
    SplitQkv(usize),
    Embedding(usize),
}

#[derive(Clone, Copy)]
enum Binary {
    Add,
    Mul,
    Modulation,
    Concat,
    Grouped(usize),
}

#[derive(Clone, Copy)]
enum Many {
    LayerNormModulate,
    GatedResidual,
    ResidualNorm { gated: bool },
    RmsNorm { bias: bool, plus_one: bool },
    LinearAttention(usize),
    Attention(usize),
    Causal(CausalAttention),
    Rotary(usize),
    DwConvGlu(usize, usize),
    Conv3x3 { grid: (usize, usize), stride: usize },
    Depthwise(usize, usize),
}

impl<E: Engine> DynOps for E {
    fn linear(
        &self,
        x: &HostTensor,
        w: &HostTensor,
        b: Option<&HostTensor>,
        act: Activation,
    ) -> HostTensor {
        let (x, w) = (self.upload(x).unwrap(), self.upload(w).unwrap());
        let b = b.map(|b| self.upload(b).unwrap());
        self.download(&Engine::linear(self, &x, &w, b.as_ref(), act).unwrap())
            .unwrap()
    }

    fn unary(&self, x: &HostTensor, op: Unary) -> HostTensor {
        let t = self.upload(x).unwrap();
        let y = match op {
            Unary::Act(a) => self.activation(&t, a),
            Unary::NchwToTokens => self.nchw_to_tokens(&t),
            Unary::TokensToNchw(h, w) => self.tokens_to_nchw(&t, h, w),
            Unary::Repeat(r) => self.repeat_channels(&t, r),
            Unary::Shuffle(h, w) => self.pixel_shuffle(&t, h, w),
            Unary::RepeatShuffle(h, w, r) => self.repeat_pixel_shuffle(&t, h, w, r),
            Unary::Upsample(h, w) => self.upsample_nearest2x(&t, h, w),
            Unary::Unshuffle(h, w) => self.pixel_unshuffle(&t, h, w),
            Unary::GroupMean(g) => self.channel_group_mean(&t, g),
            Unary::SplitQkv(d) => self.split_qkv_groups(&t, d).map(|(q, _, _)| q),
            Unary::Embedding(vocab) => {
                let ids: Vec<u32> = (0..7).map(|i| (i * 5 % vocab) as u32).collect();
                self.embedding(&t, &ids, 3.7)
            }
        };
        self.download(&y.unwrap()).unwrap()
    }

    fn binary(&self, a: &HostTensor, b: &HostTensor, op: Binary) -> HostTensor {
        let (a, b) = (self.upload(a).unwrap(), self.upload(b).unwrap());
        let y = match op {
            Binary::Add => self.add(&a, &b),
            Binary::Mul => self.mul(&a, &b),
            Binary::Modulation => self.modulation(&a, &b),
            Binary::Concat => self.concat_channels(&a, &b),
            Binary::Grouped(g) => self.grouped_linear(&a, &b, g),
        };
        self.download(&y.unwrap()).unwrap()
    }

    fn many(&self, t: &[HostTensor], op: Many) -> Vec<HostTensor> {
        let d: Vec<E::Tensor> = t.iter().map(|t| self.upload(t).unwrap()).collect();
        let one = |r: sana::Result<E::Tensor>| vec![self.download(&r.unwrap()).unwrap()];
        match op {
            Many::LayerNormModulate => one(self.layer_norm_modulate(&d[0], &d[1], 0, 1, 1e-6)),
            Many::GatedResidual => one(self.gated_residual(&d[0], &d[1], &d[2], 2)),
            Many::ResidualNorm { gated } => {
                let gate = gated.then(|| (&d[3], 2));
                let (x, z) = self
                    .residual_layer_norm_modulate(&d[0], &d[1], gate, &d[2], (0, 1), 1e-6)
                    .unwrap();
                vec![self.download(&x).unwrap(), self.download(&z).unwrap()]
            }
            Many::RmsNorm { bias, plus_one } => one(if plus_one {
                self.rms_norm_plus_one(&d[0], &d[1], 1e-6)
            } else {
                self.rms_norm(&d[0], &d[1], bias.then(|| &d[2]), 1e-6)
            }),
            Many::LinearAttention(heads) => {
                one(self.linear_attention(&d[0], &d[1], &d[2], heads, 1e-15))
            }
            Many::Attention(heads) => one(self.attention(&d[0], &d[1], &d[2], &d[3], heads)),
            Many::Causal(p) => one(self.causal_attention(&d[0], &d[1], &d[2], &d[3], &p)),
            Many::Rotary(heads) => one(self.rotary(&d[0], &d[1], &d[2], heads)),
            Many::DwConvGlu(h, w) => one(self.dwconv3x3_glu(&d[0], &d[1], &d[2], h, w)),
            Many::Conv3x3 { grid, stride } => {
                one(self.conv3x3(&d[0], &d[1], Some(&d[2]), grid, stride))
            }
            Many::Depthwise(h, w) => one(self.depthwise_conv(&d[0], &d[1], Some(&d[2]), h, w)),
        }
    }
}

/// Masks in {0, 1} with the first key of every row real (a [B, L] key mask from uniform inputs).
fn mask_from(t: &HostTensor) -> HostTensor {
    let l = t.shape()[1];
    let data = t
        .data()
        .iter()
        .enumerate()
        .map(|(i, &v)| if i % l == 0 || v > -0.5 { 1.0 } else { 0.0 })
        .collect();
    HostTensor::new(t.shape().to_vec(), data).unwrap()
}

fn every_op(dtype: StorageDtype) {
    let Some(g) = gpu("every_op", dtype) else {
        return;
    };
    let acts = [
        Activation::Identity,
        Activation::GeluTanh,
        Activation::Relu,
        Activation::Silu,
    ];
    for (i, act) in acts.into_iter().enumerate() {
        // Odd sizes on every axis: the transposed-GEMM mapping and the epilogues (GELU must be the tanh form).
        op_vs_cpu(
            &g,
            &format!("linear+bias {act:?}"),
            &[&[3, 37, 70], &[50, 70], &[50]],
            1 + i as u64,
            &|e, t| e.linear(&t[0], &t[1], Some(&t[2]), act),
        );
        op_vs_cpu(
            &g,
            &format!("linear {act:?}"),
            &[&[1, 70], &[33, 70]],
            11 + i as u64,
            &|e, t| e.linear(&t[0], &t[1], None, act),
        );
        op_vs_cpu(
            &g,
            &format!("activation {act:?}"),
            &[&[5, 131]],
            21 + i as u64,
            &|e, t| e.unary(&t[0], Unary::Act(act)),
        );
    }
    let unary: [(&str, &[usize], Unary); 11] = [
        ("nchw_to_tokens", &[2, 6, 5, 7], Unary::NchwToTokens),
        ("tokens_to_nchw", &[2, 35, 6], Unary::TokensToNchw(5, 7)),
        ("repeat_channels", &[2, 35, 6], Unary::Repeat(3)),
        ("pixel_shuffle", &[2, 35, 8], Unary::Shuffle(5, 7)),
        (
            "repeat_pixel_shuffle",
            &[2, 35, 4],
            Unary::RepeatShuffle(5, 7, 2),
        ),
        ("upsample_nearest2x", &[2, 35, 6], Unary::Upsample(5, 7)),
        ("pixel_unshuffle", &[2, 48, 5], Unary::Unshuffle(6, 8)),
        ("channel_group_mean", &[2, 35, 12], Unary::GroupMean(3)),
        ("split_qkv_groups", &[2, 35, 48], Unary::SplitQkv(8)),
        ("embedding", &[11, 70], Unary::Embedding(11)),
        (
            "activation relu 1 element",
            &[1, 1],
            Unary::Act(Activation::Relu),
        ),
    ];
    for (i, (name, shape, op)) in unary.into_iter().enumerate() {
        op_vs_cpu(&g, name, &[shape], 100 + i as u64, &|e, t| {
            e.unary(&t[0], op)
        });
    }
    let binary: [(&str, &[usize], &[usize], Binary); 6] = [
        ("add", &[3, 37, 70], &[3, 37, 70], Binary::Add),
        ("mul", &[3, 37, 70], &[3, 37, 70], Binary::Mul),
        ("modulation", &[6, 70], &[2, 420], Binary::Modulation),
        (
            "modulation (broadcast row)",
            &[2, 70],
            &[2, 70],
            Binary::Modulation,
        ),
        ("concat_channels", &[2, 35, 6], &[2, 35, 10], Binary::Concat),
        ("grouped_linear", &[2, 35, 12], &[12, 4], Binary::Grouped(3)),
    ];
    for (i, (name, a, b, op)) in binary.into_iter().enumerate() {
        op_vs_cpu(&g, name, &[a, b], 200 + i as u64, &|e, t| {
            e.binary(&t[0], &t[1], op)
        });
    }
    let causal = CausalAttention {
        heads: 4,
        kv_heads: 2,
        scale: 0.3,
        softcap: Some(50.0),
        window: Some(17),
    };
    // The wide rows (13,001 f32 = 52,004 bytes of shared memory) need the launch's opt-in above 48 KiB.
    let many: [(&str, Vec<&[usize]>, Many); 16] = [
        (
            "layer_norm_modulate",
            vec![&[2, 37, 70], &[2, 6, 70]],
            Many::LayerNormModulate,
        ),
        (
            "layer_norm_modulate, rows over 48 KiB",
            vec![&[1, 3, 13_001], &[1, 6, 13_001]],
            Many::LayerNormModulate,
        ),
        (
            "gated residual_layer_norm_modulate, rows over 48 KiB",
            vec![
                &[1, 3, 13_001],
                &[1, 3, 13_001],
                &[1, 6, 13_001],
                &[1, 6, 13_001],
            ],
            Many::ResidualNorm { gated: true },
        ),
        (
            "gated_residual",
            vec![&[2, 37, 70], &[2, 37, 70], &[2, 6, 70]],
            Many::GatedResidual,
        ),
        (
            "residual_layer_norm_modulate",
            vec![&[2, 37, 70], &[2, 37, 70], &[2, 6, 70]],
            Many::ResidualNorm { gated: false },
        ),
        (
            "gated residual_layer_norm_modulate",
            vec![&[2, 37, 70], &[2, 37, 70], &[2, 6, 70], &[2, 6, 70]],
            Many::ResidualNorm { gated: true },
        ),
        (
            "rms_norm",
            vec![&[2, 37, 70], &[70]],
            Many::RmsNorm {
                bias: false,
                plus_one: false,
            },
        ),
        (
            "rms_norm+bias",
            vec![&[2, 37, 70], &[70], &[70]],
            Many::RmsNorm {
                bias: true,
                plus_one: false,
            },
        ),
        (
            "rms_norm_plus_one",
            vec![&[2, 37, 70], &[70]],
            Many::RmsNorm {
                bias: false,
                plus_one: true,
            },
        ),
        (
            "linear_attention 299 tokens",
            vec![&[2, 299, 64], &[2, 299, 64], &[2, 299, 64]],
            Many::LinearAttention(2),
        ),
        (
            "attention",
            vec![&[2, 37, 64], &[2, 19, 64], &[2, 19, 64], &[2, 19]],
            Many::Attention(2),
        ),
        (
            "causal_attention",
            vec![&[2, 29, 64], &[2, 29, 32], &[2, 29, 32], &[2, 29]],
            Many::Causal(causal),
        ),
        (
            "rotary",
            vec![&[2, 29, 64], &[29, 16], &[29, 16]],
            Many::Rotary(4),
        ),
        (
            "dwconv3x3_glu",
            vec![&[2, 35, 48], &[48, 9], &[48]],
            Many::DwConvGlu(5, 7),
        ),
        (
            "conv3x3 stride 2",
            vec![&[2, 35, 6], &[10, 6, 3, 3], &[10]],
            Many::Conv3x3 {
                grid: (5, 7),
                stride: 2,
            },
        ),
        (
            "depthwise_conv 5x5",
            vec![&[2, 35, 6], &[6, 5, 5], &[6]],
            Many::Depthwise(5, 7),
        ),
    ];
    for (i, (name, shapes, op)) in many.into_iter().enumerate() {
        op_vs_cpu(&g, name, &shapes, 300 + i as u64, &|e, t| {
            let mut t = t.to_vec();
            match op {
                Many::Attention(_) => {
                    t[3] = HostTensor::new(
                        t[3].shape().to_vec(),
                        mask_from(&t[3])
                            .data()
                            .iter()
                            .map(|m| (1.0 - m) * -10000.0)
                            .collect(),
                    )
                    .unwrap()
                }
                Many::Causal(_) => t[3] = mask_from(&t[3]),
                _ => {}
            }
            let outs = e.many(&t, op);
            let data = outs.iter().flat_map(|t| t.data().iter().copied()).collect();
            HostTensor::new(vec![outs.iter().map(HostTensor::len).sum()], data).unwrap()
        });
    }
}

#[test]
fn every_op_matches_cpu_bf16() {
    every_op(StorageDtype::Bf16);
}

#[test]
fn every_op_matches_cpu_f16() {
    every_op(StorageDtype::F16);
}

/// Runs `f` on the GPU in each storage dtype, or prints why `test` is skipped.
/// A pipeline of the model in `dir` on a GPU engine like `g` (a pipeline owns its engine).
fn gpu_pipeline(g: &CudaEngine, dir: &std::path::Path) -> sana::pipeline::Pipeline<CudaEngine> {
    let engine = CudaEngine::new(g.info().ordinal, g.dtype()).unwrap();
    sana::pipeline::Pipeline::load(engine, dir, Default::default()).unwrap()
}

fn on_each_gpu(test: &str, mut f: impl FnMut(&CudaEngine, f32)) {
    for dtype in DTYPES {
        match gpu(test, dtype) {
            Some(g) => f(&g, unit_roundoff(dtype)),
            None => return,
        }
    }
}

#[test]
fn tiny_dit_matches_cpu() {
    let (model, file) = (
        tiny_model().join("transformer"),
        "transformer_square.safetensors",
    );
    let want = tiny_runs::dit(&CpuEngine, &model, file);
    on_each_gpu("tiny_dit_matches_cpu", |g, u| {
        let got = tiny_runs::dit(g, &model, file);
        check(&format!("DiT {:?}", g.dtype()), &got, &want, 20.0 * u);
    });
}

fn text<E: Engine>(e: &E) -> HostTensor {
    let enc = TextEncoder::from_dir(e, &tiny_model()).unwrap();
    enc.encode_positive(e, &["a bowl of cherries"], &PromptOptions::default())
        .unwrap()
        .0
}

#[test]
fn tiny_text_encoder_matches_cpu() {
    let want = text(&CpuEngine);
    on_each_gpu("tiny_text_encoder_matches_cpu", |g, _| {
        let tol = if g.dtype() == StorageDtype::Bf16 {
            0.15
        } else {
            2e-2
        };
        check(&format!("Gemma {:?}", g.dtype()), &text(g), &want, tol);
    });
}

#[test]
fn tiny_pipeline_matches_cpu() {
    let (want_latents, want_image, _) =
        tiny_runs::pipeline_2step(&tiny_runs::tiny_pipeline(CpuEngine));
    on_each_gpu("tiny_pipeline_matches_cpu", |g, u| {
        let pipe = gpu_pipeline(g, &tiny_model());
        let (latents, image, times) = tiny_runs::pipeline_2step(&pipe);
        let dtype = g.dtype();
        let report = pipe
            .engine()
            .step_graph_report()
            .expect("a denoising loop ran");
        assert_eq!(report.capture_error, None, "the step must be capturable");
        assert_eq!(
            (report.eager, report.replayed),
            (1, 1),
            "step 2 replays the graph"
        );
        eprintln!(
            "{dtype:?}: peak device memory: text encode {:?}, denoise {:?} bytes",
            times.text_encode.peak_device_bytes, times.denoise.peak_device_bytes
        );
        check(
            &format!("pipeline latents {dtype:?}"),
            &latents,
            &want_latents,
            40.0 * u,
        );
        check(
            &format!("pipeline image {dtype:?}"),
            &image,
            &want_image,
            40.0 * u,
        );
    });
}

/// The samplers' ops on the device against the CPU reference — the flow rules under CFG, CFG with PAG and PAG alone,
/// then an SCM step with its noise: bit-exact f32 arithmetic for the step (tests/sampler.rs), the sinusoid within its libm bound.
#[test]
fn sampler_ops_match_cpu() {
    use sana::scheduler::StepRule;
    use sana::vocabulary::schedule::{schedule_table, set_pag_scales};
    use sana::vocabulary::Guidance;
    on_each_gpu("sampler_ops_match_cpu", |g, u| {
        let dtype = g.dtype();
        let mut rng = Rng(41);
        let rules = [
            StepRule::DpmFirst {
                sigma: 0.95,
                ratio: 0.9,
                c: -0.04,
            },
            StepRule::DpmSecond {
                sigma: 0.9,
                ratio: 0.8,
                c: -0.1,
                inv_r0: 1.4,
                half_c: -0.05,
            },
            StepRule::Euler { dt: -0.2 },
            StepRule::Scm {
                sigma_data: 0.5,
                k: 0.75,
                a: -0.6,
                c: 0.7,
                cos_s: 0.27,
                sin_s: 0.96,
                cos_t: 0.8,
                sin_t: 0.6,
            },
        ];
        let mut table = schedule_table(&[999.0, 875.0, 312.5, 0.8], &rules).unwrap();
        set_pag_scales(&mut table, &[1.5, 2.75, 0.5, 0.0]).unwrap();
        let shape = [2, 299, 32];
        let len: usize = shape.iter().product();
        let x = rng.tensor(&shape, -2.0, 2.0);
        let noise = rng.tensor(&[rules.len() * len], -2.5, 2.5);
        let (mut cpu_s, mut cpu_x, mut cpu_p) = (table.clone(), x.clone(), x.clone());
        let mut s = g.upload_state(&table).unwrap();
        let mut gx = g.upload_state(&x).unwrap();
        let mut gp = g.upload_state(&x).unwrap();
        let gn = g.upload_state(&noise).unwrap();
        for (step, rule) in rules.iter().enumerate() {
            // For the flow rules CFG, CFG with PAG, then PAG alone; Sana-Sprint's SCM has neither.
            let guidance = match (matches!(rule, StepRule::Scm { .. }), step) {
                (true, _) => Guidance::default(),
                (false, 0) => Some(4.5).into(),
                (false, 1) => Guidance {
                    cfg: Some(4.5),
                    pag: true,
                },
                _ => Guidance {
                    cfg: None,
                    pag: true,
                },
            };
            let copies = guidance.copies();
            let input = g
                .download(&g.model_input(&gx, copies, &s).unwrap())
                .unwrap();
            let want = CpuEngine.model_input(&cpu_x, copies, &cpu_s).unwrap();
            check(
                &format!("model_input {dtype:?} step {step}"),
                &input,
                &want,
                u,
            );
            let sin = g.download(&g.step_sinusoid(&s, 4, 256).unwrap()).unwrap();
            let want = CpuEngine.step_sinusoid(&cpu_s, 4, 256).unwrap();
            check(
                &format!("step_sinusoid {dtype:?} step {step}"),
                &sin,
                &want,
                u,
            );
            let out = rounded(&rng.tensor(&[copies * 2, 299, 32], -1.0, 1.0), dtype);
            let gout = g.upload(&out).unwrap();
            g.flow_step(&s, &gout, guidance, Some(&gn), &mut gx, &mut gp)
                .unwrap();
            CpuEngine
                .flow_step(&cpu_s, &out, guidance, Some(&noise), &mut cpu_x, &mut cpu_p)
                .unwrap();
            g.advance_schedule(&mut s).unwrap();
            CpuEngine.advance_schedule(&mut cpu_s).unwrap();
            let (got_x, got_p) = (
                g.download_state(&gx).unwrap(),
                g.download_state(&gp).unwrap(),
            );
            assert_eq!(
                got_x.data(),
                cpu_x.data(),
                "flow_step {dtype:?} step {step}: x"
            );
            assert_eq!(
                got_p.data(),
                cpu_p.data(),
                "flow_step {dtype:?} step {step}: x0_prev"
            );
        }
        assert_eq!(g.download_state(&s).unwrap().data()[0], rules.len() as f32);
    });
}

/// The 4-step CFG golden request with the step captured once and replayed three times, against the same request
/// queued op by op: the same kernels on the same buffers, so the latents must agree bit for bit; and progress comes
/// once per step, in order. (Against the CPU, guidance 4.5 multiplies per-step errors by up to 1 + 2·4.5: the
/// precise bounds are the 2-step pipeline's in `tiny_pipeline_matches_cpu` and the bit-exact sampler's above.)
#[test]
fn step_graph_replays_match_eager_steps() {
    let req = tiny_runs::golden_request("square_4steps_cfg_chi");
    let steps = 4;
    on_each_gpu("step_graph_replays_match_eager_steps", |g, _| {
        let pipe = gpu_pipeline(g, &tiny_model());
        let g = pipe.engine();
        let run = |graphs: bool| {
            g.use_step_graphs(graphs);
            let latents = tiny_runs::denoise_counting_steps(&pipe, &req);
            (latents, g.step_graph_report().unwrap())
        };
        let (eager, eager_report) = run(false);
        let (replayed, report) = run(true);
        g.use_step_graphs(true);
        eprintln!(
            "{:?}: step graph {report:?}; all eager: {eager_report:?}",
            g.dtype()
        );
        assert_eq!(eager_report.replayed, 0);
        assert_eq!(eager_report.eager, steps);
        assert_eq!(report.capture_error, None, "the step must be capturable");
        assert_eq!((report.eager, report.replayed), (1, steps - 1));
        assert_eq!(replayed.data(), eager.data(), "graph replay vs eager steps");
    });
}

/// A pipeline of `dir` on a GPU engine like `g` keeping `kept` denoising loops' step graphs.
fn gpu_pipeline_keeping(
    g: &CudaEngine,
    dir: &std::path::Path,
    kept: usize,
) -> sana::pipeline::Pipeline<CudaEngine> {
    let engine = CudaEngine::new(g.info().ordinal, g.dtype()).unwrap();
    let options = sana::pipeline::PipelineOptions {
        kept_step_graphs: kept,
        ..Default::default()
    };
    sana::pipeline::Pipeline::load(engine, dir, options).unwrap()
}

/// Runs `first` then `second` (the same shape and options, other prompts and noise) on a pipeline that keeps one
/// loop: `first` captures its step, `second` replays that graph from its first step on its own inputs, written into
/// the kept buffers. Its latents must equal, bit for bit, those of a pipeline that keeps nothing (which runs an
/// eager step and captures): the same kernels on the same values — unless a buffer kept `first`'s values.
fn kept_graph_replays_match_a_fresh_capture(
    test: &str,
    dir: &std::path::Path,
    (first, second): (&sana::Request, &sana::Request),
) {
    on_each_gpu(test, |g, _| {
        let kept = gpu_pipeline_keeping(g, dir, 1);
        let fresh = gpu_pipeline_keeping(g, dir, 0);
        let a = tiny_runs::denoise_counting_steps(&kept, first);
        let captured = kept.engine().step_graph_report().unwrap();
        let b = tiny_runs::denoise_counting_steps(&kept, second);
        let reused = kept.engine().step_graph_report().unwrap();
        let want = tiny_runs::denoise_counting_steps(&fresh, second);
        let recaptured = fresh.engine().step_graph_report().unwrap();
        let steps = kept.plan(second).unwrap().steps;
        eprintln!(
            "{test} {:?}: captured {captured:?}; reused {reused:?}",
            g.dtype()
        );
        assert_eq!(captured.capture_error, None, "the step must be capturable");
        assert!(!captured.reused && !recaptured.reused);
        assert_eq!((captured.eager, recaptured.eager), (1, 1));
        assert!(reused.reused, "the second loop replays the kept graph");
        assert_eq!((reused.eager, reused.replayed), (0, steps));
        assert_ne!(a.data(), b.data(), "the two requests must differ");
        assert_eq!(b.data(), want.data(), "kept graph vs a fresh capture");
    });
}

/// The CFG flow loop: text conditioning, schedule and latents are rewritten.
#[test]
fn a_kept_graph_replays_a_cfg_loop_on_new_inputs() {
    let first = tiny_runs::golden_request("square_4steps_cfg_chi");
    let second = tiny_runs::golden_request_as("square_4steps_cfg_chi", Some(tiny_runs::VARIANT));
    kept_graph_replays_match_a_fresh_capture(
        "a_kept_graph_replays_a_cfg_loop_on_new_inputs",
        &tiny_model(),
        (&first, &second),
    );
}

/// Sana-Sprint's SCM loop: its per-step noise and guidance embedding are rewritten too.
#[test]
fn a_kept_graph_replays_a_sprint_loop_on_new_inputs() {
    let dir = tiny_runs::sprint_model("cuda-sprint-kept-graph");
    let request = |prompt: &str, seed: u64| {
        sana::Request::new(prompt)
            .size(64, 64)
            .steps(3)
            .resolution_binning(false)
            .seed(seed)
    };
    let (first, second) = (
        request("a lighthouse at dusk", 5),
        request("a red fox", 6).guidance(3.0),
    );
    kept_graph_replays_match_a_fresh_capture(
        "a_kept_graph_replays_a_sprint_loop_on_new_inputs",
        &dir,
        (&first, &second),
    );
}

/// PAG (its perturbation masks) and ControlNet (its text side, control latents and scale) loops.
#[test]
fn a_kept_graph_replays_pag_and_controlnet_loops_on_new_inputs() {
    let test = "a_kept_graph_replays_pag_and_controlnet_loops_on_new_inputs";
    let pag = "pag_nocfg_adaptive";
    kept_graph_replays_match_a_fresh_capture(
        test,
        &tiny_model(),
        (
            &tiny_runs::pag_request(pag).steps(3),
            &tiny_runs::pag_request_as(pag, Some(tiny_runs::VARIANT)).steps(3),
        ),
    );
    let dir = tiny_runs::controlnet_model("cuda-controlnet-kept-graph");
    let control = "controlnet_nocfg_resized";
    kept_graph_replays_match_a_fresh_capture(
        test,
        &dir,
        (
            &tiny_runs::controlnet_request(control).steps(3),
            &tiny_runs::controlnet_request_as(control, Some(tiny_runs::VARIANT)).steps(3),
        ),
    );
}

/// Kept loops are keyed by everything their step's work depends on, and the least recently used goes first: with
/// room for two, a loop of another size or step count captures its own graph, a return to a kept shape replays
/// it (and gives the first run's latents again), and a third shape evicts the oldest.
#[test]
fn kept_graphs_are_keyed_by_shape_and_evicted_least_recently_used() {
    let a = tiny_runs::golden_request("square_4steps_cfg_chi");
    let b = tiny_runs::golden_request_as("square_4steps_cfg_chi", Some(tiny_runs::VARIANT))
        .size(64, 32);
    let c =
        tiny_runs::golden_request_as("square_4steps_cfg_chi", Some(tiny_runs::VARIANT)).steps(5);
    let Some(g) = gpu(
        "kept_graphs_are_keyed_by_shape_and_evicted_least_recently_used",
        StorageDtype::Bf16,
    ) else {
        return;
    };
    let pipe = gpu_pipeline_keeping(&g, &tiny_model(), 2);
    let run = |req: &sana::Request| {
        let latents = tiny_runs::denoise_counting_steps(&pipe, req);
        (latents, pipe.engine().step_graph_report().unwrap().reused)
    };
    let (first, reused) = run(&a);
    assert!(!reused);
    assert!(!run(&b).1, "another size captures");
    let (again, reused) = run(&a);
    assert!(reused, "a is still kept");
    assert_eq!(again.data(), first.data(), "the same request again");
    assert!(
        !run(&c).1,
        "another step count captures (its schedule differs)"
    );
    assert!(!run(&b).1, "b was the least recently used: evicted by c");
    assert!(run(&c).1, "c is still kept");
}

/// Perturbed-attention guidance's identity self-attention in one DiT forward: 20u, as the DiT.
#[test]
fn tiny_dit_perturbed_matches_cpu() {
    let want = tiny_runs::dit_perturbed(&CpuEngine);
    on_each_gpu("tiny_dit_perturbed_matches_cpu", |g, u| {
        let got = tiny_runs::dit_perturbed(g);
        check(
            &format!("perturbed DiT {:?}", g.dtype()),
            &got,
            &want,
            20.0 * u,
        );
    });
}

/// The PAG golden request without CFG, 2 steps, with the second replayed from the step graph (the perturbed copy
/// and the 2-chunk step must capture): 200u as tests/emu_pipeline.rs derives.
#[test]
fn pag_pipeline_matches_cpu() {
    let req = tiny_runs::pag_request("pag_nocfg_adaptive").steps(2);
    let (want, _) = tiny_runs::tiny_pipeline(CpuEngine)
        .denoise(&req, &mut |_| sana::Control::Continue)
        .unwrap();
    on_each_gpu("pag_pipeline_matches_cpu", |g, u| {
        let pipe = gpu_pipeline(g, &tiny_model());
        let (got, _) = pipe
            .denoise(&req, &mut |_| sana::Control::Continue)
            .unwrap();
        let report = pipe.engine().step_graph_report().expect("a loop ran");
        assert_eq!(
            report.capture_error, None,
            "the PAG step must be capturable"
        );
        assert_eq!((report.eager, report.replayed), (1, 1));
        check(
            &format!("PAG latents {:?}", g.dtype()),
            &got,
            &want,
            200.0 * u,
        );
    });
}

/// ControlNet (the golden `controlnet_nocfg_resized` request, 2 steps) with the second step, ControlNet included,
/// replayed from the graph: 100u as tests/emu_pipeline.rs derives.
#[test]
fn controlnet_pipeline_matches_cpu() {
    let dir = tiny_runs::controlnet_model("cuda-controlnet");
    let req = tiny_runs::controlnet_request("controlnet_nocfg_resized").steps(2);
    let cpu = sana::pipeline::Pipeline::load(CpuEngine, &dir, Default::default()).unwrap();
    let (want, _) = cpu.denoise(&req, &mut |_| sana::Control::Continue).unwrap();
    on_each_gpu("controlnet_pipeline_matches_cpu", |g, u| {
        let pipe = gpu_pipeline(g, &dir);
        let (got, _) = pipe
            .denoise(&req, &mut |_| sana::Control::Continue)
            .unwrap();
        let report = pipe.engine().step_graph_report().expect("a loop ran");
        assert_eq!(
            report.capture_error, None,
            "the ControlNet step must be capturable"
        );
        assert_eq!((report.eager, report.replayed), (1, 1));
        check(
            &format!("ControlNet latents {:?}", g.dtype()),
            &got,
            &want,
            100.0 * u,
        );
    });
}

/// Sana-Sprint image-to-image on the GPU against the CPU engine: the golden `sprint_img2img_4step_s0.5_resized`
/// request (the VAE encoder on the resized init image, then two SCM steps, the second replayed from the graph).
/// 60u: the encoder's 20u plus the SCM loop's 40u, as tests/emu_pipeline.rs derives.
#[test]
fn sprint_img2img_matches_cpu() {
    let dir = tiny_runs::sprint_model("cuda-sprint-img2img");
    let (req, _) = tiny_runs::sprint_img2img_request("sprint_img2img_4step_s0.5_resized");
    let cpu = sana::pipeline::Pipeline::load(CpuEngine, &dir, Default::default()).unwrap();
    let (want, _) = cpu.denoise(&req, &mut |_| sana::Control::Continue).unwrap();
    on_each_gpu("sprint_img2img_matches_cpu", |g, u| {
        let pipe = gpu_pipeline(g, &dir);
        let (got, _) = pipe
            .denoise(&req, &mut |_| sana::Control::Continue)
            .unwrap();
        let report = pipe.engine().step_graph_report().expect("a loop ran");
        assert_eq!(
            report.capture_error, None,
            "the img2img step must be capturable"
        );
        assert_eq!((report.eager, report.replayed), (1, 1));
        check(
            &format!("Sprint img2img latents {:?}", g.dtype()),
            &got,
            &want,
            60.0 * u,
        );
    });
}

/// Sana-Sprint's 3-step SCM loop (seeded per-step noise) with steps 2 and 3 replayed from the graph, against the
/// same loop queued op by op: bit-identical latents.
#[test]
fn sprint_step_graph_replays_match_eager_steps() {
    let dir = tiny_runs::sprint_model("cuda-sprint-graph");
    let req = sana::Request::new("a lighthouse at dusk")
        .size(64, 64)
        .steps(3)
        .resolution_binning(false)
        .seed(5);
    on_each_gpu("sprint_step_graph_replays_match_eager_steps", |g, _| {
        let pipe = gpu_pipeline(g, &dir);
        let g = pipe.engine();
        let run = |graphs: bool| {
            g.use_step_graphs(graphs);
            let latents = tiny_runs::denoise_counting_steps(&pipe, &req);
            (latents, g.step_graph_report().unwrap())
        };
        let (eager, _) = run(false);
        let (replayed, report) = run(true);
        eprintln!("{:?}: sprint step graph {report:?}", g.dtype());
        assert_eq!(
            report.capture_error, None,
            "the Sprint step must be capturable"
        );
        assert_eq!((report.eager, report.replayed), (1, 2));
        assert_eq!(replayed.data(), eager.data(), "graph replay vs eager steps");
    });
}

#[test]
fn out_of_memory_names_the_stage_and_the_bytes() {
    let Some(g) = gpu(
        "out_of_memory_names_the_stage_and_the_bytes",
        StorageDtype::Bf16,
    ) else {
        return;
    };
    let total = g.info().total_bytes;
    // A working set of twice the device: refused before anything is queued.
    let err = g.begin_stage("denoise", total).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::OutOfDeviceMemory { .. }), "{msg}");
    assert!(
        msg.contains("denoise") && msg.contains("MiB") && msg.contains("lower the batch"),
        "{msg}"
    );
    // An allocation larger than the device fails as an error value too, naming the stage set above: a linear
    // whose [2^17, 2^20] bf16 output is 256 GiB, from inputs of a few MiB.
    g.begin_stage("decode", 0).unwrap();
    let x = g.upload(&HostTensor::zeros(vec![1 << 17, 1])).unwrap();
    let w = g.upload(&HostTensor::zeros(vec![1 << 20, 1])).unwrap();
    assert!(256 << 30 > total, "the device is smaller than 256 GiB");
    match Engine::linear(&g, &x, &w, None, Activation::Identity) {
        Err(Error::OutOfDeviceMemory { stage, .. }) => assert_eq!(stage, "decode"),
        Err(other) => panic!("expected OutOfDeviceMemory, got {other}"),
        Ok(_) => panic!("an allocation of the whole device cannot succeed"),
    }
}

/// A capture that fails inside the step — a stream synchronisation injected at the step's first launch, an illegal
/// call during capture that invalidates it, after which the buffers the failing op drops fail to free into the
/// capture — is abandoned and every step runs eagerly: the loop completes, the report gives the reason, and the
/// latents equal the all-eager run bit for bit. The stream has left capture mode: the next loop captures and replays.
#[test]
fn a_failed_capture_falls_back_to_eager_steps() {
    let req = tiny_runs::golden_request("square_4steps_cfg_chi");
    let steps = 4;
    let Some(g) = gpu(
        "a_failed_capture_falls_back_to_eager_steps",
        StorageDtype::Bf16,
    ) else {
        return;
    };
    let pipe = gpu_pipeline(&g, &tiny_model());
    let g = pipe.engine();
    let run = |graphs: bool, inject: bool| {
        g.use_step_graphs(graphs);
        g.inject_sync_during_capture(inject);
        let latents = tiny_runs::denoise_counting_steps(&pipe, &req);
        (latents, g.step_graph_report().unwrap())
    };
    let (eager, _) = run(false, false);
    let (fallback, report) = run(true, true);
    eprintln!("failed capture: {report:?}");
    let why = report
        .capture_error
        .as_deref()
        .expect("the synchronisation inside the capture must fail it");
    assert!(
        why.contains("STREAM_CAPTURE"),
        "the reason names the driver's capture error: {why}"
    );
    assert_eq!((report.eager, report.replayed), (steps, 0));
    assert_eq!(
        fallback.data(),
        eager.data(),
        "eager fallback vs eager steps"
    );
    let (replayed, report) = run(true, false);
    assert_eq!(
        report.capture_error, None,
        "the engine captures again after a failed capture"
    );
    assert_eq!((report.eager, report.replayed), (1, steps - 1));
    assert_eq!(
        replayed.data(),
        eager.data(),
        "graph replay after the fallback"
    );
}

/// cuBLASLt descriptors and the heuristic's algorithm are made once per problem: a repeated problem adds no plan, a
/// new epilogue or shape adds one; and each call uses its own bias, the one attribute set per call (two biases
/// resident at different addresses, alternated).
#[test]
fn gemm_plans_are_cached_per_problem_and_take_each_calls_bias() {
    let Some(g) = gpu(
        "gemm_plans_are_cached_per_problem_and_take_each_calls_bias",
        StorageDtype::Bf16,
    ) else {
        return;
    };
    let (dtype, act) = (g.dtype(), Activation::GeluTanh);
    let mut rng = Rng(77);
    let mut input = |s: &[usize]| rounded(&rng.tensor(s, -1.0, 1.0), dtype);
    let (x, w, b1, b2) = (
        input(&[3, 19, 40]),
        input(&[24, 40]),
        input(&[24]),
        input(&[24]),
    );
    let up = |t: &HostTensor| g.upload(t).unwrap();
    let (xd, wd, b1d, b2d) = (up(&x), up(&w), up(&b1), up(&b2));
    let before = g.gemm_plans();
    for (i, (bd, b)) in [(&b1d, &b1), (&b2d, &b2), (&b1d, &b1)]
        .into_iter()
        .enumerate()
    {
        let got = g
            .download(&Engine::linear(&g, &xd, &wd, Some(bd), act).unwrap())
            .unwrap();
        let want = DynOps::linear(&CpuEngine, &x, &w, Some(b), act);
        check(
            &format!("linear call {i}"),
            &got,
            &want,
            4.0 * unit_roundoff(dtype),
        );
    }
    assert_eq!(g.gemm_plans(), before + 1, "one problem, one plan");
    Engine::linear(&g, &xd, &wd, None, act).unwrap();
    assert_eq!(g.gemm_plans(), before + 2, "no bias is another epilogue");
    Engine::linear(&g, &up(&input(&[5, 40])), &wd, Some(&b1d), act).unwrap();
    assert_eq!(
        g.gemm_plans(),
        before + 3,
        "another row count, another plan"
    );
}

/// Weights larger than both pinned staging buffers together (20M bf16 elements: three chunks of 8M, so a buffer is
/// refilled while the other's copy may still run) arrive exactly; a second load right after, which `load` does not
/// wait for the first to finish before starting, too.
#[test]
fn weights_larger_than_the_staging_buffers_load_exactly() {
    use half::bf16;
    use safetensors::tensor::{Dtype, TensorView};
    use sana::weights::SafetensorsFile;
    let Some(g) = gpu(
        "weights_larger_than_the_staging_buffers_load_exactly",
        StorageDtype::Bf16,
    ) else {
        return;
    };
    let n = 20 << 20;
    // Distinct from chunk to chunk at the same offset (8M is not a multiple of 4093).
    let values = |seed: usize| -> Vec<bf16> {
        (0..n)
            .map(|i| bf16::from_f32(((i + seed) % 4093) as f32 / 64.0 - 32.0))
            .collect()
    };
    let (first, second) = (values(0), values(1000));
    let bytes = |v: &[bf16]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let (b1, b2) = (bytes(&first), bytes(&second));
    let dir = common::scratch("staging");
    let path = dir.join("large.safetensors");
    safetensors::serialize_to_file(
        [
            ("first", TensorView::new(Dtype::BF16, vec![n], &b1).unwrap()),
            (
                "second",
                TensorView::new(Dtype::BF16, vec![n], &b2).unwrap(),
            ),
        ],
        None,
        &path,
    )
    .unwrap();
    let file = SafetensorsFile::open(&path).unwrap();
    let loaded = [
        g.load(&file.get("first").unwrap(), &[n]).unwrap(),
        g.load(&file.get("second").unwrap(), &[n]).unwrap(),
    ];
    for (name, t, want) in [
        ("first", &loaded[0], &first),
        ("second", &loaded[1], &second),
    ] {
        let got = g.download(t).unwrap();
        let wrong = got
            .data()
            .iter()
            .zip(want.iter())
            .position(|(g, w)| *g != w.to_f32());
        assert_eq!(wrong, None, "{name}: first wrong element");
    }
}

/// The kernel list the engine loads (`Family::symbols`, the one list) against each family's PTX: every listed kernel
/// is an entry and every entry is listed, so a kernel added to a .cu without the list, or listed without a kernel,
/// fails here and not at engine start on a GPU. Runs wherever nvcc ran at build time.
#[test]
fn kernel_lists_match_the_ptx_entries() {
    use sana::engine::cuda::embedded::{self, Family};
    for family in Family::ALL {
        let ptx = match embedded::ptx(family) {
            Ok(ptx) => ptx,
            Err(Error::KernelsNotBuilt)
                if !embedded::NVCC_BUILT && option_env!("SANA_REQUIRE_NVCC") != Some("1") =>
            {
                eprintln!("skipped: no nvcc at build time");
                return;
            }
            Err(e) => panic!("kernels/{}.cu: {e}", family.name()),
        };
        let mut entries: Vec<String> = ptx
            .lines()
            .filter_map(|line| line.split(".entry ").nth(1))
            .map(|rest| rest.split('(').next().unwrap_or(rest).trim().to_string())
            .collect();
        entries.sort();
        let mut listed = family.symbols();
        listed.sort();
        assert_eq!(listed, entries, "kernels/{}.cu", family.name());
    }
}

/// Cancelling from the callback while graph replays are queued stops the loop at that step with
/// `Error::Cancelled`: step 2 reports and cancels while step 3 is already queued, so three steps ran and the fourth
/// never did; then the same pipeline denoises the full request again, bit for bit. Once on a loop that captures its
/// graph in that run (step 1 eager), once on one that replays the graph kept from the run before (kept through the
/// cancel, and rewritten by the next run).
#[test]
fn cancelling_a_replayed_loop_stops_it_and_the_pipeline_stays_usable() {
    use sana::{Control, Event};
    let req = tiny_runs::golden_request("square_4steps_cfg_chi");
    let Some(g) = gpu(
        "cancelling_a_replayed_loop_stops_it_and_the_pipeline_stays_usable",
        StorageDtype::Bf16,
    ) else {
        return;
    };
    for (kept, want) in [(0, (1, 2, false)), (1, (0, 3, true))] {
        let pipe = gpu_pipeline_keeping(&g, &tiny_model(), kept);
        let full = tiny_runs::denoise_counting_steps(&pipe, &req);
        let mut seen = Vec::new();
        let err = pipe
            .denoise(&req, &mut |event| {
                if let Event::Step { step, .. } = event {
                    seen.push(step);
                    if step == 2 {
                        return Control::Cancel;
                    }
                }
                Control::Continue
            })
            .unwrap_err();
        assert!(matches!(err, Error::Cancelled), "{err}");
        assert_eq!(seen, [1, 2]);
        let report = pipe.engine().step_graph_report().unwrap();
        assert_eq!(report.capture_error, None);
        assert_eq!(
            (report.eager, report.replayed, report.reused),
            want,
            "keeping {kept}: steps 1 to 3 ran, step 4 never queued"
        );
        let again = tiny_runs::denoise_counting_steps(&pipe, &req);
        assert_eq!(again.data(), full.data(), "the run after a cancel");
    }
}

/// A panic in the caller's callback while graph replays are queued unwinds out of the loop; the queued work
/// finishes on its own, and the same pipeline then denoises the full request again, bit for bit.
#[test]
fn a_panicking_callback_mid_replay_leaves_the_pipeline_usable() {
    use sana::{Control, Event};
    let test = "a_panicking_callback_mid_replay_leaves_the_pipeline_usable";
    let req = tiny_runs::golden_request("square_4steps_cfg_chi");
    let Some(g) = gpu(test, StorageDtype::Bf16) else {
        return;
    };
    let pipe = gpu_pipeline(&g, &tiny_model());
    let full = tiny_runs::denoise_counting_steps(&pipe, &req);
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pipe.denoise(&req, &mut |event| {
            if let Event::Step { step: 2, .. } = event {
                panic!("the caller's bug");
            }
            Control::Continue
        })
    }));
    assert!(unwound.is_err(), "the panic reaches the caller");
    let again = tiny_runs::denoise_counting_steps(&pipe, &req);
    assert_eq!(again.data(), full.data(), "the run after the panic");
}
