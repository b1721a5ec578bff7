//! kernels/conv.cu, run through the emulation engine, against the CPU reference `cpu::conv::dwconv3x3_glu` on
//! inputs first rounded to the storage dtype.
//!
//! Tolerance, per output `out = u_v · SiLU(u_g)` with `U` = 2^-24: each pre-activation `u = bias + Σ 9 taps` is a
//! chain of 10 f32 roundings in both the kernel and the reference (the same order; the GPU may fuse them into FMAs),
//! so each is within `10U·A` of the exact value, `A = |bias| + Σ|w·x|`, i.e. the two within `20U·A`. SiLU adds its
//! evaluation error `8U·(|u_g| + |SiLU(u_g)|)` (tests/elementwise.rs) and has slope |SiLU'| ≤ 1.1; the product one
//! rounding:
//!   `|Δout| ≤ |SiLU(u_g)|·20U·A_v + |u_v|·(1.1·20U·A_g + 8U·(|u_g| + |SiLU(u_g)|)) + U·|out|`,
//! plus half an ulp of the storage dtype at the reference (0 for f32).
//!
//! `conv_tolerance_catches_wrong_kernels` shows that typical mistakes (value and gate swapped, the kernel flipped
//! or transposed, bias missing, h and w exchanged, the next channel's weights) fail this bound in bf16.

mod emu_check;

use emu_check::{assert_caught, assert_within, check_ptx, rounded, ulp, Rng, DTYPES, U};
use sana::cpu::conv as cpu;
use sana::engine::emu::{self, StorageDtype};
use sana::gpu::kernels::Family;
use sana::{Error, HostTensor};

struct Case {
    x: HostTensor,
    w: HostTensor,
    bias: HostTensor,
    h: usize,
    width: usize,
}

/// (B, h, w, F).
type Shape = (usize, usize, usize, usize);

fn random_case(rng: &mut Rng, (b, h, width, f): Shape, dtype: StorageDtype) -> Case {
    Case {
        x: rounded(&rng.tensor(&[b, h * width, 2 * f], -2.0, 2.0), dtype),
        w: rounded(&rng.tensor(&[2 * f, 9], -0.5, 0.5), dtype),
        bias: rounded(&rng.tensor(&[2 * f], -0.5, 0.5), dtype),
        h,
        width,
    }
}

/// Pre-activations `(u, A)` (value and |value| sums, f64) of channel `c` at pixel (i, j) of batch item `bi`.
fn pre_activation(case: &Case, bi: usize, i: usize, j: usize, c: usize) -> (f64, f64) {
    let c2 = case.x.shape()[2];
    let n = case.h * case.width;
    let bias = f64::from(case.bias.data()[c]);
    let (mut u, mut a) = (bias, bias.abs());
    for di in 0..3 {
        for dj in 0..3 {
            let (ii, jj) = ((i + di).wrapping_sub(1), (j + dj).wrapping_sub(1));
            if ii < case.h && jj < case.width {
                let t = f64::from(case.w.data()[c * 9 + di * 3 + dj])
                    * f64::from(case.x.data()[(bi * n + ii * case.width + jj) * c2 + c]);
                u += t;
                a += t.abs();
            }
        }
    }
    (u, a)
}

/// The per-element tolerance described in the file header.
fn tolerance(case: &Case, dtype: StorageDtype, want: &[f32]) -> Vec<f32> {
    let (b, n, c2) = emu_check::dims3(&case.x);
    let f = c2 / 2;
    let u = f64::from(U);
    let silu = |x: f64| x / (1.0 + (-x).exp());
    let mut tol = vec![0.0f32; b * n * f];
    for bi in 0..b {
        for p in 0..n {
            let (i, j) = (p / case.width, p % case.width);
            for c in 0..f {
                let (uv, av) = pre_activation(case, bi, i, j, c);
                let (ug, ag) = pre_activation(case, bi, i, j, c + f);
                let at = (bi * n + p) * f + c;
                let out = f64::from(want[at]);
                let err = silu(ug).abs() * 20.0 * u * av
                    + uv.abs() * (1.1 * 20.0 * u * ag + 8.0 * u * (ug.abs() + silu(ug).abs()))
                    + u * out.abs();
                tol[at] = 0.5 * ulp(dtype, want[at]) + err as f32;
            }
        }
    }
    tol
}

/// A 1×1 grid (every tap is padding but the centre); a non-square 3×5 grid; 5 rows (a partial strip of 4) with two
/// channel tiles (F = 130, 128 threads per block); 7×4 with F = 9; Sana-0.6B's F = 2880.
const SHAPES: [Shape; 5] = [
    (1, 1, 1, 3),
    (2, 3, 5, 40),
    (1, 5, 3, 130),
    (2, 7, 4, 9),
    (1, 4, 4, 2880),
];

#[test]
fn conv_emu_matches_cpu() {
    let mut rng = Rng(41);
    for dtype in DTYPES {
        let mut worst = 0.0f32;
        for shape in SHAPES {
            let c = random_case(&mut rng, shape, dtype);
            let got = emu::dwconv3x3_glu(&c.x, &c.w, &c.bias, c.h, c.width, dtype).expect("emu");
            let want = cpu::dwconv3x3_glu(&c.x, &c.w, &c.bias, c.h, c.width).expect("cpu");
            assert_eq!(got.shape(), want.shape());
            let tol = tolerance(&c, dtype, want.data());
            worst = worst.max(assert_within(
                &format!("{dtype:?} {shape:?}"),
                got.data(),
                want.data(),
                |i| tol[i],
            ));
        }
        eprintln!("conv {dtype:?}: worst error {worst:.3} of the tolerance");
    }
}

/// Each wrong variant is what a kernel with that mistake computes, expressed through the reference on modified
/// inputs; the real kernel's bf16 output must be outside the tolerance around it.
#[test]
fn conv_tolerance_catches_wrong_kernels() {
    let dtype = StorageDtype::Bf16;
    let (b, h, width, f) = (2, 3, 5, 24);
    let c = random_case(&mut Rng(42), (b, h, width, f), dtype);
    let got = emu::dwconv3x3_glu(&c.x, &c.w, &c.bias, h, width, dtype).expect("emu");
    let want = cpu::dwconv3x3_glu(&c.x, &c.w, &c.bias, h, width).expect("cpu");
    let tol = tolerance(&c, dtype, want.data());

    let map_w = |tap: &dyn Fn(usize) -> usize| {
        let mut w = c.w.clone();
        for (row, orig) in w.data_mut().chunks_mut(9).zip(c.w.data().chunks(9)) {
            for (t, v) in row.iter_mut().enumerate() {
                *v = orig[tap(t)];
            }
        }
        w
    };
    // The two channel halves exchanged in x, w and bias: the gate becomes the value and vice versa.
    let swap_halves = |t: &HostTensor, row: usize| {
        let mut t = t.clone();
        for chunk in t.data_mut().chunks_mut(row) {
            chunk.rotate_left(row / 2);
        }
        t
    };
    let swapped = (
        swap_halves(&c.x, 2 * f),
        swap_halves(&c.w, 2 * f * 9),
        swap_halves(&c.bias, 2 * f),
    );
    let wrong = [
        (
            "value and gate swapped (SiLU on the value)",
            cpu::dwconv3x3_glu(&swapped.0, &swapped.1, &swapped.2, h, width),
        ),
        (
            "kernel flipped (convolution, not correlation)",
            cpu::dwconv3x3_glu(&c.x, &map_w(&|t| 8 - t), &c.bias, h, width),
        ),
        (
            "kernel transposed",
            cpu::dwconv3x3_glu(&c.x, &map_w(&|t| t % 3 * 3 + t / 3), &c.bias, h, width),
        ),
        (
            "bias missing",
            cpu::dwconv3x3_glu(&c.x, &c.w, &HostTensor::zeros(vec![2 * f]), h, width),
        ),
        (
            "h and w exchanged",
            cpu::dwconv3x3_glu(&c.x, &c.w, &c.bias, width, h),
        ),
    ];
    for (what, wrong) in wrong {
        assert_caught(what, got.data(), wrong.expect("cpu").data(), |i| tol[i]);
    }
    // Each channel reading the next channel's taps (a stride error in the weight index).
    let mut shifted = c.w.clone();
    shifted.data_mut().rotate_left(9);
    let wrong = cpu::dwconv3x3_glu(&c.x, &shifted, &c.bias, h, width).expect("cpu");
    assert_caught(
        "weights of the next channel",
        got.data(),
        wrong.data(),
        |i| tol[i],
    );
}

#[test]
fn conv_shape_errors() {
    let mut rng = Rng(43);
    let dtype = StorageDtype::F16;
    let x = rng.tensor(&[1, 6, 8], -1.0, 1.0);
    let w = rng.tensor(&[8, 9], -1.0, 1.0);
    let bias = rng.tensor(&[8], -1.0, 1.0);
    let odd = rng.tensor(&[1, 6, 7], -1.0, 1.0);
    let cases = [
        (
            "grid of another size",
            emu::dwconv3x3_glu(&x, &w, &bias, 2, 2, dtype).err(),
        ),
        (
            "odd channel count",
            emu::dwconv3x3_glu(
                &odd,
                &rng.tensor(&[7, 9], -1.0, 1.0),
                &rng.tensor(&[7], -1.0, 1.0),
                2,
                3,
                dtype,
            )
            .err(),
        ),
        (
            "weight of another shape",
            emu::dwconv3x3_glu(&x, &rng.tensor(&[8, 3, 3], -1.0, 1.0), &bias, 2, 3, dtype).err(),
        ),
        (
            "bias of another length",
            emu::dwconv3x3_glu(&x, &w, &rng.tensor(&[4], -1.0, 1.0), 2, 3, dtype).err(),
        ),
    ];
    for (what, err) in cases {
        assert!(
            matches!(err, Some(Error::Shape { .. })),
            "{what}: expected a shape error, got {err:?}"
        );
    }
}

#[test]
fn conv_ptx_has_entries() {
    check_ptx(
        Family::Conv,
        &[
            "dwconv3x3_glu_f32",
            "dwconv3x3_glu_bf16",
            "dwconv3x3_glu_f16",
        ],
    );
}
