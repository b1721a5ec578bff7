//! The CPU reference of every kernel family at the real shapes of the three models, with seeded random inputs (speed
//! does not depend on the values): Sana 1.6B (D = 2240, 70 heads × 32, F = 5600) and 0.6B (D = 1152) at 1024 px
//! (32×32 latent, 1024 tokens) and 4096 px (128×128, 16384 tokens), batch 2 as classifier-free guidance runs them;
//! Gemma-2-2B over a 568-token CHI prompt; the DC-AE f32c32 decoder's stage shapes for a 1024 px image.
//!
//! Throughput is what `sana::cost` counts for the op (the model `sana-run bench` and docs/PERFORMANCE.md use):
//! compute-bound ops report FLOP/s as "elements", memory-bound ones (depthwise convs, norms) bytes at f32.
//! Group `cpu_kernels` runs the CPU reference engine; the largest cases take minutes each on a small machine, so
//! filter (`cargo bench --bench cpu_reference_model_shapes -- 'cpu_kernels/linear_attention'`). The CUDA engine's
//! kernels at these shapes are benches/gpu_kernels.rs.

mod common;

use common::filled;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sana::cost::Cost;
use sana::cpu;
use sana::engine::{Activation, CausalAttention};
use sana::HostTensor;

/// Bytes per element of the CPU engine's f32 storage.
const F32: u64 = 4;

fn flops<'a>(
    c: &'a mut Criterion,
    group: &str,
    f: impl FnOnce(&mut Cost),
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut cost = Cost::default();
    f(&mut cost);
    let mut g = c.benchmark_group(group);
    g.sample_size(10);
    g.throughput(Throughput::Elements(cost.flops()));
    g
}

fn linear(c: &mut Criterion) {
    // (name, rows, in, out): DiT projections and FFN at 1024 px with CFG, Gemma's MLP over the prompt.
    let cases = [
        ("dit1600_qkvo", 2 * 1024, 2240, 2240),
        ("dit1600_ffn_in", 2 * 1024, 2240, 2 * 5600),
        ("dit1600_ffn_out", 2 * 1024, 5600, 2240),
        ("dit600_qkvo", 2 * 1024, 1152, 1152),
        ("gemma_mlp_up", 568, 2304, 9216),
    ];
    for (name, rows, i, o) in cases {
        let mut g = flops(c, "cpu_kernels/linear", |k| k.linear(rows, i, o, true));
        let (x, w, b) = (
            filled(&[rows, i], 1, 0.1),
            filled(&[o, i], 2, 0.1),
            filled(&[o], 3, 0.1),
        );
        g.bench_function(
            BenchmarkId::new(name, format!("{rows}x{i}->{o}")),
            |bench| {
                bench.iter(|| {
                    cpu::linear::linear(&x, &w, Some(&b), Activation::Identity).expect("shapes")
                })
            },
        );
        g.finish();
    }
}

fn linear_attention(c: &mut Criterion) {
    let (heads, d) = (70, 32);
    for tokens in [1024, 16384] {
        let mut g = flops(c, "cpu_kernels/linear_attention", |k| {
            k.linear_attention(2, tokens, heads, d)
        });
        let shape = [2, tokens, heads * d];
        let (q, k, v) = (
            filled(&shape, 4, 0.1),
            filled(&shape, 5, 0.1),
            filled(&shape, 6, 0.1),
        );
        g.bench_function(
            BenchmarkId::new("dit1600", format!("2x{tokens}x{heads}x{d}")),
            |b| {
                b.iter(|| {
                    cpu::linear_attn::linear_attention(&q, &k, &v, heads, 1e-15).expect("shapes")
                })
            },
        );
        g.finish();
    }
}

fn attention(c: &mut Criterion) {
    let (heads, d, keys) = (20, 112, 300);
    let mut g = flops(c, "cpu_kernels/cross_attention", |k| {
        k.attention(2, (1024, keys), heads, d)
    });
    let q = filled(&[2, 1024, heads * d], 7, 0.1);
    let (k, v) = (
        filled(&[2, keys, heads * d], 8, 0.1),
        filled(&[2, keys, heads * d], 9, 0.1),
    );
    let bias = HostTensor::zeros(vec![2, keys]);
    g.bench_function(
        BenchmarkId::new("dit1600", format!("2x1024x{keys}x{heads}x{d}")),
        |b| b.iter(|| cpu::attention::attention(&q, &k, &v, &bias, heads).expect("shapes")),
    );
    g.finish();

    let (len, heads, kv_heads, d) = (568, 8, 4, 256);
    let window = Some(4096);
    let mut g = flops(c, "cpu_kernels/causal_attention", |k| {
        k.causal_attention(1, len, (heads, kv_heads, d), window)
    });
    let q = filled(&[1, len, heads * d], 10, 0.1);
    let (k, v) = (
        filled(&[1, len, kv_heads * d], 11, 0.1),
        filled(&[1, len, kv_heads * d], 12, 0.1),
    );
    let mask = HostTensor::new(vec![1, len], vec![1.0; len]).expect("shape");
    let params = CausalAttention {
        heads,
        kv_heads,
        scale: 1.0 / 16.0,
        softcap: Some(50.0),
        window,
    };
    g.bench_function(
        BenchmarkId::new("gemma", format!("{len}x{heads}/{kv_heads}x{d}")),
        |b| {
            b.iter(|| {
                cpu::causal_attention::causal_attention(&q, &k, &v, &mask, &params).expect("shapes")
            })
        },
    );
    g.finish();
}

fn mix_ffn_dwconv(c: &mut Criterion) {
    let f = 5600;
    for (side, batch) in [(32, 2), (128, 1)] {
        let mut cost = Cost::default();
        cost.dwconv3x3_glu(batch * side * side, 2 * f);
        let mut g = c.benchmark_group("cpu_kernels/dwconv3x3_glu");
        g.sample_size(10);
        g.throughput(Throughput::Bytes(cost.bytes(F32)));
        let (x, w, b) = (
            filled(&[batch, side * side, 2 * f], 13, 0.1),
            filled(&[2 * f, 9], 14, 0.1),
            filled(&[2 * f], 15, 0.1),
        );
        g.bench_function(
            BenchmarkId::new("dit1600", format!("{batch}x{side}x{side}x{}", 2 * f)),
            |bench| {
                bench.iter(|| cpu::conv::dwconv3x3_glu(&x, &w, &b, side, side).expect("shapes"))
            },
        );
        g.finish();
    }
}

fn dcae_conv(c: &mut Criterion) {
    // ResBlock convs of the decoder's stages 2, 1, 0 for a 1024 px image (grid = 1024 / 2^stage), then the
    // EfficientViT stages' LiteMLA 5×5 depthwise branch at stage 3 (3·512 channels at 128²).
    for (side, ch) in [(256, 512), (512, 256), (1024, 128)] {
        let mut g = flops(c, "cpu_kernels/conv3x3", |k| {
            k.conv3x3(1, (side * side, side * side), (ch, ch), true)
        });
        let (x, w, b) = (
            filled(&[1, side * side, ch], 16, 0.1),
            filled(&[ch, ch, 3, 3], 17, 0.1),
            filled(&[ch], 18, 0.1),
        );
        g.bench_function(
            BenchmarkId::new("dcae", format!("{side}x{side}x{ch}")),
            |bench| {
                bench
                    .iter(|| cpu::conv::conv3x3(&x, &w, Some(&b), (side, side), 1).expect("shapes"))
            },
        );
        g.finish();
    }
    let (side, ch) = (128, 3 * 512);
    let mut cost = Cost::default();
    cost.depthwise_conv(side * side, ch, 5, false);
    let mut g = c.benchmark_group("cpu_kernels/depthwise_conv5x5");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(cost.bytes(F32)));
    let (x, w) = (
        filled(&[1, side * side, ch], 19, 0.1),
        filled(&[ch, 5, 5], 20, 0.1),
    );
    g.bench_function(
        BenchmarkId::new("dcae", format!("{side}x{side}x{ch}")),
        |bench| bench.iter(|| cpu::conv::depthwise_conv(&x, &w, None, side, side).expect("shapes")),
    );
    g.finish();
}

fn norm(c: &mut Criterion) {
    let (rows, d) = (2 * 1024, 2240);
    let mut cost = Cost::default();
    cost.pass(rows * d + d, rows * d);
    let mut g = c.benchmark_group("cpu_kernels/rms_norm");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(cost.bytes(F32)));
    let (x, w) = (filled(&[2, 1024, d], 21, 0.1), filled(&[d], 22, 0.1));
    g.bench_function(BenchmarkId::new("dit1600", format!("{rows}x{d}")), |b| {
        b.iter(|| cpu::norm::rms_norm(&x, &w, None, 1e-5).expect("shapes"))
    });
    g.finish();
}

criterion_group!(
    benches,
    linear,
    linear_attention,
    attention,
    mix_ffn_dwconv,
    dcae_conv,
    norm
);
criterion_main!(benches);
