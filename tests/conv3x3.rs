//! kernels/conv3x3.cu (implicit GEMM; tensor-core `mma_m16n8k16` for bf16/f16, scalar f32 FMAs for f32) against the
//! CPU reference `cpu::conv::conv3x3` on inputs first rounded to the storage dtype; one check body runs on the
//! emulation engine (f32, bf16, f16) and on the CUDA engine (bf16, f16: `conv3x3_on_cuda`).
//!
//! Tolerance, per output with `U` = 2^-24: both sum `T = 9·Cin + 1` terms in f32 (the bias and every tap of every
//! input channel; the products of bf16/f16 operands are exact in f32), each within `T·U·A` of the exact value,
//! `A = |bias| + Σ|w·x|`, whatever the order (the kernel sums in the reference's k order on the emulator; the GPU's
//! FMAs and the tensor cores' order within an instruction stay inside the same bound). So
//! `|Δ| ≤ 2T·U·A + ½ ulp` of the storage dtype at the reference (0 for f32).
//!
//! `conv3x3_tolerance_catches_wrong_kernels` shows that typical mistakes fail this bound in bf16: mma A fragments
//! loaded with registers 1 and 2 exchanged (rows g+8 and columns 2t+8 confused), stride-2 windows starting at
//! 2·(i, j) instead of 2·(i, j) − 1 (off by one pixel), the weight read as [Cout, 3, 3, Cin], the kernel flipped,
//! the bias missing.

mod common;
mod emu_check;
mod engine_check;

use emu_check::{assert_caught, check_ptx, rounded, ulp, Rng, DTYPES, U};
use engine_check::{on_cuda, run_op, within};
use sana::cpu::conv as cpu;
use sana::engine::cuda::embedded::Family;
use sana::engine::emu::EmuEngine;
use sana::engine::{Engine, StorageDtype};
use sana::{Error, HostTensor};

struct Case {
    x: HostTensor,
    w: HostTensor,
    bias: Option<HostTensor>,
    grid: (usize, usize),
    stride: usize,
}

/// (B, h, w, Cin, Cout, stride, bias).
type Shape = (usize, usize, usize, usize, usize, usize, bool);

fn random_case(
    rng: &mut Rng,
    (b, h, width, cin, cout, stride, bias): Shape,
    dtype: StorageDtype,
) -> Case {
    Case {
        x: rounded(&rng.tensor(&[b, h * width, cin], -2.0, 2.0), dtype),
        w: rounded(&rng.tensor(&[cout, cin, 3, 3], -0.5, 0.5), dtype),
        bias: bias.then(|| rounded(&rng.tensor(&[cout], -0.5, 0.5), dtype)),
        grid: (h, width),
        stride,
    }
}

/// `conv3x3` on `e` through the `Engine` API.
fn conv3x3<E: Engine>(
    e: &E,
    x: &HostTensor,
    w: &HostTensor,
    b: Option<&HostTensor>,
    grid: (usize, usize),
    stride: usize,
) -> sana::Result<HostTensor> {
    match b {
        Some(b) => run_op(e, &[x, w, b], |t| {
            e.conv3x3(&t[0], &t[1], Some(&t[2]), grid, stride)
        }),
        None => run_op(e, &[x, w], |t| e.conv3x3(&t[0], &t[1], None, grid, stride)),
    }
}

impl Case {
    fn run<E: Engine>(&self, e: &E) -> HostTensor {
        conv3x3(
            e,
            &self.x,
            &self.w,
            self.bias.as_ref(),
            self.grid,
            self.stride,
        )
        .expect("engine")
    }

    fn cpu(&self) -> HostTensor {
        cpu::conv3x3(&self.x, &self.w, self.bias.as_ref(), self.grid, self.stride).expect("cpu")
    }

    /// The im2col row of output pixel `m` (k = tap·Cin + ci, as the kernel orders K).
    fn im2col(&self, m: usize) -> Vec<f64> {
        let (b, n, cin) = emu_check::dims3(&self.x);
        let (h, width) = self.grid;
        let (oh, ow) = ((h - 1) / self.stride + 1, (width - 1) / self.stride + 1);
        let (bi, q) = (m / (oh * ow), m % (oh * ow));
        assert!(bi < b);
        let (i, j) = (q / ow * self.stride, q % ow * self.stride);
        let mut row = vec![0.0f64; 9 * cin];
        for tap in 0..9 {
            let (ii, jj) = ((i + tap / 3).wrapping_sub(1), (j + tap % 3).wrapping_sub(1));
            if ii < h && jj < width {
                for ci in 0..cin {
                    row[tap * cin + ci] =
                        f64::from(self.x.data()[(bi * n + ii * width + jj) * cin + ci]);
                }
            }
        }
        row
    }

    /// Weight entry B[k][co] for k = tap·Cin + ci.
    fn weight(&self, k: usize, co: usize) -> f64 {
        let cin = self.x.shape()[2];
        f64::from(self.w.data()[(co * cin + k % cin) * 9 + k / cin])
    }

    fn bias(&self, co: usize) -> f64 {
        self.bias.as_ref().map_or(0.0, |b| f64::from(b.data()[co]))
    }

    /// The per-element tolerance described in the file header, with `A` the reference conv of |x|, |w| and |b|
    /// (its own f32 error, T·U relative, is negligible in a bound of 2T·U·A).
    fn tolerance(&self, dtype: StorageDtype, want: &HostTensor) -> Vec<f32> {
        let abs = |t: &HostTensor| {
            HostTensor::new(
                t.shape().to_vec(),
                t.data().iter().map(|v| v.abs()).collect(),
            )
            .expect("shape")
        };
        let b = self.bias.as_ref().map(abs);
        let a = cpu::conv3x3(
            &abs(&self.x),
            &abs(&self.w),
            b.as_ref(),
            self.grid,
            self.stride,
        )
        .expect("cpu A");
        let t = (9 * self.x.shape()[2] + 1) as f32;
        want.data()
            .iter()
            .zip(a.data())
            .map(|(&y, &a)| 0.5 * ulp(dtype, y) + 2.0 * t * U * a)
            .collect()
    }
}

/// A 1×1 image (every tap but the centre is padding), the encoder's Cin = 3 on a non-square grid; stride 2 on odd
/// 7×9 with Cout = 70 (two column tiles, a partial one) and no bias; 9×8 (72 pixels: a partial second pixel tile)
/// with Cin = 40 (K = 360, a partial last k slice); the decoder's Cout = 3 at stride 2 on an even grid; two full
/// 64 × 64 tiles per image of a batch of 2 with Cin = 64; stride 2 over a batch of 2 (both images in one pixel
/// tile); the DC-AE's channel counts: the decoder's 128 → 3 output conv, a 512 → 512 stage conv (K = 4608) and
/// the encoder's 3 → 128 input conv.
const SHAPES: [Shape; 10] = [
    (1, 1, 1, 3, 5, 1, true),
    (2, 3, 5, 3, 8, 1, true),
    (1, 7, 9, 16, 70, 2, false),
    (1, 9, 8, 40, 24, 1, true),
    (1, 6, 4, 32, 3, 2, true),
    (2, 8, 8, 64, 64, 1, true),
    (2, 5, 6, 8, 9, 2, true),
    (1, 5, 4, 128, 3, 1, true),
    (1, 4, 4, 512, 512, 1, true),
    (1, 6, 6, 3, 128, 1, true),
];

fn check_conv3x3<E: Engine>(e: &E, dtype: StorageDtype) {
    let mut rng = Rng(91);
    let (mut worst, mut max_abs) = (0.0f32, 0.0f32);
    for shape in SHAPES {
        let c = random_case(&mut rng, shape, dtype);
        let got = c.run(e);
        let want = c.cpu();
        let tol = c.tolerance(dtype, &want);
        max_abs = got
            .data()
            .iter()
            .zip(want.data())
            .fold(max_abs, |m, (g, w)| m.max((g - w).abs()));
        worst = worst.max(within(e, dtype, shape, &got, &want, |i| tol[i]));
    }
    eprintln!(
        "{} conv3x3 {dtype:?}: worst error {worst:.3} of the tolerance, max |Δ| {max_abs:e}",
        e.name()
    );
}

#[test]
fn conv3x3_emu_matches_cpu() {
    for dtype in DTYPES {
        check_conv3x3(&EmuEngine::new(dtype), dtype);
    }
}

/// The check on the CUDA engine (a GPU, or CI's software device).
#[test]
fn conv3x3_on_cuda() {
    on_cuda("conv3x3_on_cuda", check_conv3x3);
}

/// Each wrong variant is what a kernel with that mistake computes (through the reference on modified inputs, or an
/// explicit GEMM for the fragment mistake); the real kernel's bf16 output must be outside the tolerance around it.
#[test]
fn conv3x3_tolerance_catches_wrong_kernels() {
    let dtype = StorageDtype::Bf16;
    let shape = (1, 7, 6, 16, 12, 2, true);
    let c = random_case(&mut Rng(92), shape, dtype);
    let got = c.run(&EmuEngine::new(dtype));
    let want = c.cpu();
    let tol = c.tolerance(dtype, &want);
    let (h, width, cin, cout) = (shape.1, shape.2, shape.3, shape.4);
    let bias = c.bias.as_ref();

    // mma A fragments with registers 1 and 2 exchanged: within each aligned 16 × 16 block of the im2col matrix,
    // the kernel hands A[r][k+8] as A[r+8][k] and vice versa (r, k < 8), so the instruction multiplies A′.
    let m_total = want.len() / cout;
    let k_total = 9 * cin;
    let rows: Vec<Vec<f64>> = (0..m_total).map(|m| c.im2col(m)).collect();
    let a = |m: usize, k: usize| {
        if m < m_total && k < k_total {
            rows[m][k]
        } else {
            0.0
        }
    };
    let mut swapped = vec![0.0f32; want.len()];
    for m in 0..m_total {
        let (r, base) = (m % 16, m - m % 16);
        for co in 0..cout {
            let mut s = c.bias(co);
            for k in 0..k_total {
                let (kr, kb) = (k % 16, k - k % 16);
                let v = match (r < 8, kr < 8) {
                    (true, false) => a(base + r + 8, kb + kr - 8),
                    (false, true) => a(base + r - 8, kb + kr + 8),
                    _ => a(m, k),
                };
                s += v * c.weight(k, co);
            }
            swapped[m * cout + co] = s as f32;
        }
    }
    assert_caught(
        "A fragment registers 1 and 2 exchanged",
        got.data(),
        &swapped,
        |i| tol[i],
    );

    // Stride-2 windows starting at 2·(i, j) instead of 2·(i, j) − 1: the reference on the image shifted up-left.
    let mut shifted = HostTensor::zeros(c.x.shape().to_vec());
    for i in 0..h {
        for j in 0..width {
            if i + 1 < h && j + 1 < width {
                let (dst, src) = ((i * width + j) * cin, ((i + 1) * width + j + 1) * cin);
                shifted.data_mut()[dst..dst + cin].copy_from_slice(&c.x.data()[src..src + cin]);
            }
        }
    }
    // The weight read as [Cout, 3, 3, Cin]: w′[co, ci, tap] = w.flat[co·9·Cin + tap·Cin + ci].
    let mut tap_major = c.w.clone();
    let mut flipped = c.w.clone();
    for co in 0..cout {
        for ci in 0..cin {
            for tap in 0..9 {
                tap_major.data_mut()[(co * cin + ci) * 9 + tap] =
                    c.w.data()[co * 9 * cin + tap * cin + ci];
                flipped.data_mut()[(co * cin + ci) * 9 + tap] =
                    c.w.data()[(co * cin + ci) * 9 + 8 - tap];
            }
        }
    }
    let wrong = [
        (
            "stride-2 origin off by one",
            cpu::conv3x3(&shifted, &c.w, bias, (h, width), 2),
        ),
        (
            "weight read as [Cout, 3, 3, Cin]",
            cpu::conv3x3(&c.x, &tap_major, bias, (h, width), 2),
        ),
        (
            "kernel flipped",
            cpu::conv3x3(&c.x, &flipped, bias, (h, width), 2),
        ),
        (
            "bias missing",
            cpu::conv3x3(&c.x, &c.w, None, (h, width), 2),
        ),
    ];
    for (what, wrong) in wrong {
        assert_caught(what, got.data(), wrong.expect("cpu").data(), |i| tol[i]);
    }
}

#[test]
fn conv3x3_shape_errors() {
    let e = EmuEngine::new(StorageDtype::F16);
    let x = HostTensor::zeros(vec![1, 6, 4]);
    let w = HostTensor::zeros(vec![5, 4, 3, 3]);
    let cases = [
        (
            "grid of another size",
            conv3x3(&e, &x, &w, None, (2, 2), 1).err(),
        ),
        ("stride 3", conv3x3(&e, &x, &w, None, (2, 3), 3).err()),
        (
            "weight of another Cin",
            conv3x3(
                &e,
                &x,
                &HostTensor::zeros(vec![5, 3, 3, 3]),
                None,
                (2, 3),
                1,
            )
            .err(),
        ),
        (
            "bias of another length",
            conv3x3(&e, &x, &w, Some(&HostTensor::zeros(vec![4])), (2, 3), 1).err(),
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
fn conv3x3_ptx_has_entries() {
    check_ptx(
        Family::Conv3x3,
        &["conv3x3_f32", "conv3x3_bf16", "conv3x3_f16"],
    );
}
