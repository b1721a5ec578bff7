//! The CPU reference ops at Sana 0.6B sizes for a 512 px image (N = 16·16 = 256 tokens, D = 1152, F = 2880), and
//! the DC-AE's convolutions at its real channel counts on a 16×16 (3×3 conv, 512 channels) or 32×32 (LiteMLA's
//! multi-scale branch at C = 1024: 3072 channels) grid, a slice of the real maps.
//! The reference is the oracle, not the fast path; these numbers say how long a golden check on real weights takes
//! and catch accidental slow-downs. Throughput is reported in FLOP/s ("elements" = floating-point operations).

mod common;

use common::filled;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sana::cpu;
use sana::engine::Activation;

fn bench(c: &mut Criterion) {
    let (n, d, f, heads) = (256usize, 1152usize, 2880usize, 36usize);
    let mut g = c.benchmark_group("cpu_reference");
    g.sample_size(10);

    let x = filled(&[1, n, d], 1, 1.0);
    let w = filled(&[d, d], 2, 1.0);
    g.throughput(Throughput::Elements((2 * n * d * d) as u64));
    g.bench_function(BenchmarkId::new("linear", format!("{n}x{d}x{d}")), |b| {
        b.iter(|| cpu::linear::linear(&x, &w, None, Activation::Identity).expect("valid shapes"))
    });

    let (q, k, v) = (
        filled(&[2, n, d], 3, 1.0),
        filled(&[2, n, d], 4, 1.0),
        filled(&[2, n, d], 5, 1.0),
    );
    let hd = d / heads;
    g.throughput(Throughput::Elements(
        (2 * 2 * 2 * n * heads * hd * hd) as u64,
    ));
    g.bench_function(
        BenchmarkId::new("linear_attention", format!("2x{n}x{d}")),
        |b| {
            b.iter(|| {
                cpu::linear_attn::linear_attention(&q, &k, &v, heads, 1e-15).expect("valid shapes")
            })
        },
    );

    let u = filled(&[2, n, 2 * f], 6, 1.0);
    let dw = filled(&[2 * f, 9], 7, 1.0);
    let db = filled(&[2 * f], 8, 1.0);
    g.throughput(Throughput::Elements((2 * n * 2 * f * 9 * 2) as u64));
    g.bench_function(
        BenchmarkId::new("dwconv3x3_glu", format!("2x16x16x{}", 2 * f)),
        |b| b.iter(|| cpu::conv::dwconv3x3_glu(&u, &dw, &db, 16, 16).expect("valid shapes")),
    );

    let (c, side) = (512usize, 16usize);
    let xc = filled(&[1, side * side, c], 9, 1.0);
    let wc = filled(&[c, c, 3, 3], 10, 1.0);
    g.throughput(Throughput::Elements((2 * side * side * c * c * 9) as u64));
    g.bench_function(
        BenchmarkId::new("conv3x3", format!("{side}x{side}x{c}->{c}")),
        |b| b.iter(|| cpu::conv::conv3x3(&xc, &wc, None, (side, side), 1).expect("valid shapes")),
    );

    let (c3, side, heads) = (3 * 1024usize, 32usize, 1024 / 32);
    let t = filled(&[1, side * side, c3], 11, 1.0);
    let w5 = filled(&[c3, 5, 5], 12, 1.0);
    g.throughput(Throughput::Elements((2 * side * side * c3 * 25) as u64));
    g.bench_function(
        BenchmarkId::new("depthwise_conv5x5", format!("{side}x{side}x{c3}")),
        |b| b.iter(|| cpu::conv::depthwise_conv(&t, &w5, None, side, side).expect("valid shapes")),
    );
    let wg = filled(&[c3, 32], 13, 1.0);
    g.throughput(Throughput::Elements((2 * side * side * c3 * 32) as u64));
    g.bench_function(
        BenchmarkId::new(
            "grouped_linear",
            format!("{side}x{side}x{c3}/{}", 3 * heads),
        ),
        |b| b.iter(|| cpu::linear::grouped_linear(&t, &wg, 3 * heads).expect("valid shapes")),
    );
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
