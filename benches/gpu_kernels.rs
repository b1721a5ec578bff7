//! The CUDA engine's kernels and cuBLASLt GEMMs at the real shapes of Sana 1.6B (D = 2240, 70 linear-attention heads
//! of 32, cross-attention 20 heads of 112, Mix-FFN F = 5600) with both CFG halves as batch 2, at 1024 px (32×32
//! latent, 1024 tokens) and 4096 px (128×128, 16384 tokens); the DC-AE decoder's 3×3 convolutions and Gemma-2-2B's
//! attention at a 1024 px image's sizes. Each case reports its time and achieved GB/s (memory-
//! bound kernels: bytes that must move at least once) or TFLOP/s (GEMMs, attention), and the fraction of the
//! device's ceilings measured by this same run (device-to-device copy bandwidth, an 8192³ cuBLASLt bf16 GEMM).
//! Without a usable GPU it prints why and that it was skipped (the CPU engine's ops are in cpu_reference).

mod common;

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use sana::engine::cuda::{Ceilings, CudaEngine, CudaTensor};
use sana::engine::StorageDtype;
use sana::engine::{Activation, Engine};
use sana::HostTensor;

/// What one case must do at least: move bytes, or compute floating-point operations.
#[derive(Clone, Copy)]
enum Work {
    Bytes(u64),
    Flops(u64),
}

struct Case<'a> {
    name: String,
    work: Work,
    run: Box<dyn Fn() -> sana::Result<()> + 'a>,
}

fn filled(e: &CudaEngine, shape: &[usize], seed: u32) -> CudaTensor {
    e.upload(&common::filled(shape, seed, 1.0)).expect("upload")
}

fn cases<'a>(e: &'a CudaEngine, t: &'a Tensors) -> Vec<Case<'a>> {
    let s = 2u64; // bytes per bf16 element
    let mut v: Vec<Case<'a>> = Vec::new();
    for (side, set) in [(32usize, &t.px1024), (128, &t.px4096)] {
        let n = (side * side) as u64;
        let (b, d, f, l) = (2u64, 2240u64, 5600u64, 300u64);
        v.push(Case {
            name: format!("linear_attention 2x{n}x70x32"),
            work: Work::Bytes(4 * b * n * d * s),
            run: Box::new(move || {
                e.linear_attention(&set.x, &set.x, &set.x, 70, 1e-15)
                    .map(drop)
            }),
        });
        v.push(Case {
            name: format!("dwconv3x3_glu 2x{side}x{side}x{}", 2 * f),
            work: Work::Bytes(3 * b * n * f * s),
            run: Box::new(move || {
                e.dwconv3x3_glu(&set.ffn, &t.dw_w, &t.dw_b, side, side)
                    .map(drop)
            }),
        });
        v.push(Case {
            name: format!("layer_norm_modulate 2x{n}x{d}"),
            work: Work::Bytes(2 * b * n * d * s),
            run: Box::new(move || {
                e.layer_norm_modulate(&set.x, &t.modulation, 0, 1, 1e-6)
                    .map(drop)
            }),
        });
        v.push(Case {
            name: format!("residual_layer_norm_modulate 2x{n}x{d}"),
            work: Work::Bytes(4 * b * n * d * s),
            run: Box::new(move || {
                e.residual_layer_norm_modulate(
                    &set.x,
                    &set.x,
                    Some((&t.modulation, 2)),
                    &t.modulation,
                    (0, 1),
                    1e-6,
                )
                .map(drop)
            }),
        });
        v.push(Case {
            name: format!("cross attention 2x{n}x{d} over {l} tokens, 20 heads of 112"),
            work: Work::Flops(4 * b * n * l * d),
            run: Box::new(move || {
                e.attention(&set.x, &t.text, &t.text, &t.key_bias, 20)
                    .map(drop)
            }),
        });
        for (name, w, bias, act, k, out) in [
            (
                "qkv/out projection",
                &t.w_dd,
                None,
                Activation::Identity,
                d,
                d,
            ),
            (
                "Mix-FFN inverted conv + SiLU",
                &t.w_fd,
                Some(&t.b_f),
                Activation::Silu,
                d,
                2 * f,
            ),
            (
                "Mix-FFN point conv",
                &t.w_df,
                None,
                Activation::Identity,
                f,
                d,
            ),
        ] {
            let x = if k == d { &set.x } else { &set.glu };
            v.push(Case {
                name: format!("GEMM {name} {}x{k}x{out}", b * n),
                work: Work::Flops(2 * b * n * k * out),
                run: Box::new(move || e.linear(x, w, bias, act).map(drop)),
            });
        }
    }
    // The DC-AE decoder's ResBlock 3×3 convolutions at a 1024 px image: 128 channels at 1024², 256 at 512², 512 at
    // 256² (implicit GEMM on tensor cores).
    for (side, c, x, w) in [
        (1024usize, 128u64, &t.vae_128, &t.conv_128),
        (512, 256, &t.vae_256, &t.conv_256),
        (256, 512, &t.vae_512, &t.conv_512),
    ] {
        let px = (side * side) as u64;
        v.push(Case {
            name: format!("conv3x3 {side}x{side}x{c}->{c}"),
            work: Work::Flops(2 * px * c * c * 9),
            run: Box::new(move || e.conv3x3(x, w, None, (side, side), 1).map(drop)),
        });
    }
    // Gemma-2-2B self-attention over the 300-token caption batch (prompt and negative): 8 heads of 256 over 4
    // key/value heads, soft-cap 50, causal.
    let causal = sana::engine::CausalAttention {
        heads: 8,
        kv_heads: 4,
        scale: 256f32.powf(-0.5),
        softcap: Some(50.0),
        window: Some(4096),
    };
    v.push(Case {
        name: "Gemma causal attention 2x300, 8 heads of 256 (GQA 2)".into(),
        work: Work::Flops(2 * 2 * 300 * 300 * 8 * 256),
        run: Box::new(move || {
            e.causal_attention(&t.gemma_q, &t.gemma_kv, &t.gemma_kv, &t.gemma_mask, &causal)
                .map(drop)
        }),
    });
    // The caption projection (Gemma 2304 → 2240, tanh-GELU): the epilogue fused in cuBLASLt against bias-only
    // plus a separate activation kernel.
    let m = 2 * 300u64;
    v.push(Case {
        name: format!("GEMM caption 2304->2240 + bias + GELU epilogue, {m} rows"),
        work: Work::Flops(2 * m * 2304 * 2240),
        run: Box::new(move || {
            e.linear(&t.caption, &t.w_caption, Some(&t.b_d), Activation::GeluTanh)
                .map(drop)
        }),
    });
    v.push(Case {
        name: format!("GEMM caption 2304->2240 + bias, GELU as a kernel, {m} rows"),
        work: Work::Flops(2 * m * 2304 * 2240),
        run: Box::new(move || {
            let y = e.linear(&t.caption, &t.w_caption, Some(&t.b_d), Activation::Identity)?;
            e.activation(&y, Activation::GeluTanh).map(drop)
        }),
    });
    v
}

/// Activations of one resolution.
struct Set {
    x: CudaTensor,
    ffn: CudaTensor,
    glu: CudaTensor,
}

struct Tensors {
    px1024: Set,
    px4096: Set,
    modulation: CudaTensor,
    text: CudaTensor,
    key_bias: CudaTensor,
    dw_w: CudaTensor,
    dw_b: CudaTensor,
    w_dd: CudaTensor,
    w_fd: CudaTensor,
    b_f: CudaTensor,
    w_df: CudaTensor,
    caption: CudaTensor,
    w_caption: CudaTensor,
    b_d: CudaTensor,
    vae_128: CudaTensor,
    conv_128: CudaTensor,
    vae_256: CudaTensor,
    conv_256: CudaTensor,
    vae_512: CudaTensor,
    conv_512: CudaTensor,
    gemma_q: CudaTensor,
    gemma_kv: CudaTensor,
    gemma_mask: CudaTensor,
}

fn tensors(e: &CudaEngine) -> Tensors {
    let (d, f) = (2240, 5600);
    let set = |n: usize, seed| Set {
        x: filled(e, &[2, n, d], seed),
        ffn: filled(e, &[2, n, 2 * f], seed + 1),
        glu: filled(e, &[2, n, f], seed + 2),
    };
    Tensors {
        px1024: set(1024, 1),
        px4096: set(16384, 4),
        modulation: filled(e, &[2, 6, d], 7),
        text: filled(e, &[2, 300, d], 8),
        key_bias: e.upload(&HostTensor::zeros(vec![2, 300])).expect("upload"),
        dw_w: filled(e, &[2 * f, 9], 9),
        dw_b: filled(e, &[2 * f], 10),
        w_dd: filled(e, &[d, d], 11),
        w_fd: filled(e, &[2 * f, d], 12),
        b_f: filled(e, &[2 * f], 13),
        w_df: filled(e, &[d, f], 14),
        caption: filled(e, &[2, 300, 2304], 15),
        w_caption: filled(e, &[d, 2304], 16),
        b_d: filled(e, &[d], 17),
        vae_128: filled(e, &[1, 1024 * 1024, 128], 18),
        conv_128: filled(e, &[128, 128, 3, 3], 19),
        vae_256: filled(e, &[1, 512 * 512, 256], 20),
        conv_256: filled(e, &[256, 256, 3, 3], 21),
        vae_512: filled(e, &[1, 256 * 256, 512], 22),
        conv_512: filled(e, &[512, 512, 3, 3], 23),
        gemma_q: filled(e, &[2, 300, 8 * 256], 24),
        gemma_kv: filled(e, &[2, 300, 4 * 256], 25),
        gemma_mask: e
            .upload(&HostTensor::new(vec![2, 300], vec![1.0; 600]).expect("mask"))
            .expect("upload"),
    }
}

fn main() {
    let e = match CudaEngine::new(0, StorageDtype::Bf16) {
        Ok(e) => e,
        Err(err) => {
            println!("gpu_kernels: skipped: {err}");
            return;
        }
    };
    let info = e.info().clone();
    let ceilings: Ceilings = e
        .measure_ceilings(1 << 30, 8192)
        .expect("measure the ceilings");
    println!(
        "{}: copy {:.0} GB/s (read + write), cuBLASLt bf16 GEMM 8192³ {:.0} TFLOP/s",
        info.name,
        ceilings.copy_bytes_per_s / 1e9,
        ceilings.gemm_flop_per_s / 1e12
    );
    let t = tensors(&e);
    let cases = cases(&e, &t);
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let mut g = c.benchmark_group("gpu_kernels");
    let mut table = Vec::new();
    for case in &cases {
        g.throughput(match case.work {
            Work::Bytes(b) => Throughput::Bytes(b),
            Work::Flops(f) => Throughput::Elements(f),
        });
        g.bench_function(BenchmarkId::from_parameter(&case.name), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    (case.run)().expect("kernel ran");
                }
                e.synchronize().expect("synchronize");
                start.elapsed()
            })
        });
        let ms = e.time_ms(20, || (case.run)()).expect("timed");
        table.push((case.name.clone(), case.work, ms));
    }
    g.finish();
    println!(
        "\n{:<70} {:>10} {:>14} {:>9}",
        "case", "ms", "achieved", "ceiling"
    );
    for (name, work, ms) in table {
        let (rate, frac) = match work {
            Work::Bytes(b) => {
                let r = b as f64 / (ms * 1e-3);
                (
                    format!("{:.0} GB/s", r / 1e9),
                    r / ceilings.copy_bytes_per_s,
                )
            }
            Work::Flops(f) => {
                let r = f as f64 / (ms * 1e-3);
                (
                    format!("{:.1} TFLOP/s", r / 1e12),
                    r / ceilings.gemm_flop_per_s,
                )
            }
        };
        println!("{name:<70} {ms:>10.3} {rate:>14} {:>8.0}%", 100.0 * frac);
    }
    c.final_summary();
}
