//! The CPU engine's Winograd F(2×2, 3×3) convolution (`sana::cpu::winograd`) against f64 loops of the direct 3×3
//! convolution, on fresh random values, at shapes around its edges: odd heights and widths (tiles half outside the
//! image), a batch of 2, channel counts below and above the dot kernel's depth of 128, more tiles than one core's
//! block, and a weight split into several chunks of output channels.
//!
//! Bound (u = 2⁻²⁴, γ_n = n·u / (1 − n·u), Higham §3.1): with `Ū = |G|·|g|·|Gᵀ|` and `V̄ = |Bᵀ|·|d|·|B|`, the weight
//! transform sums ≤ 3 terms twice (γ₄·Ū; its halvings are exact), the patch transform 2 terms twice (γ₂·V̄), each of
//! the 16 products sums Cin terms (γ_Cin), the output transform 3 terms twice (γ₄) and the bias adds one rounding. So
//! every output is within `γ_{Cin+11} · (|Aᵀ|·(Σ_ci Ū ⊙ V̄)·|A| + |bias|)` of the exact convolution, computed here
//! in f64 from the same |transforms|. The direct sum's own bound, `γ_{9·Cin+1}·(Σ|w·x| + |bias|)`, is printed beside
//! it for comparison.
//!
//! `winograd_bound_catches_wrong_results` shows that typical mistakes (the kernel flipped, the bias missing, a tile's
//! outputs one pixel off) break this bound.

mod emu_check;

use emu_check::Rng;
use half::{bf16, f16};
use sana::cpu::{conv, winograd};
use sana::tensor::{HalfValues, HostTensor};

const U: f64 = 1.0 / (1u64 << 24) as f64;

fn gamma(n: usize) -> f64 {
    n as f64 * U / (1.0 - n as f64 * U)
}

/// `G`, `Bᵀ` and `Aᵀ` of F(2×2, 3×3).
const G: [[f64; 3]; 4] = [
    [1.0, 0.0, 0.0],
    [0.5, 0.5, 0.5],
    [0.5, -0.5, 0.5],
    [0.0, 0.0, 1.0],
];
const BT: [[f64; 4]; 4] = [
    [1.0, 0.0, -1.0, 0.0],
    [0.0, 1.0, 1.0, 0.0],
    [0.0, -1.0, 1.0, 0.0],
    [0.0, 1.0, 0.0, -1.0],
];
const AT: [[f64; 4]; 2] = [[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, -1.0, -1.0]];

struct Case {
    x: HostTensor,
    w: HostTensor,
    bias: Option<HostTensor>,
    grid: (usize, usize),
}

impl Case {
    fn random(
        rng: &mut Rng,
        (b, h, width, cin, cout, bias): (usize, usize, usize, usize, usize, bool),
    ) -> Self {
        Case {
            x: rng.tensor(&[b, h * width, cin], -2.0, 2.0),
            w: rng.tensor(&[cout, cin, 3, 3], -0.5, 0.5),
            bias: bias.then(|| rng.tensor(&[cout], -0.5, 0.5)),
            grid: (h, width),
        }
    }

    fn dims(&self) -> (usize, usize, usize, usize, usize) {
        let (h, width) = self.grid;
        (
            self.x.shape()[0],
            h,
            width,
            self.x.shape()[2],
            self.w.shape()[0],
        )
    }

    fn x(&self, bi: usize, i: isize, j: isize, ci: usize) -> f64 {
        let (_, h, width, cin, _) = self.dims();
        if i < 0 || j < 0 || i as usize >= h || j as usize >= width {
            return 0.0;
        }
        f64::from(self.x.data()[((bi * h + i as usize) * width + j as usize) * cin + ci])
    }

    fn w(&self, co: usize, ci: usize, kh: usize, kw: usize) -> f64 {
        let cin = self.dims().3;
        f64::from(self.w.data()[((co * cin + ci) * 3 + kh) * 3 + kw])
    }

    fn bias(&self, co: usize) -> f64 {
        self.bias.as_ref().map_or(0.0, |b| f64::from(b.data()[co]))
    }

    /// Per output `[B, h·w, Cout]`: the exact convolution, the Winograd bound and the direct sum's bound.
    fn reference(&self) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let (b, h, width, cin, cout) = self.dims();
        let n = b * h * width * cout;
        let (mut exact, mut wino, mut direct) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        // Ū per (co, ci).
        let ubar: Vec<[[f64; 4]; 4]> = (0..cout * cin)
            .map(|p| {
                let (co, ci) = (p / cin, p % cin);
                let mut gg = [[0.0; 3]; 4];
                for (r, row) in gg.iter_mut().enumerate() {
                    for (c, v) in row.iter_mut().enumerate() {
                        *v = (0..3)
                            .map(|k| G[r][k].abs() * self.w(co, ci, k, c).abs())
                            .sum();
                    }
                }
                std::array::from_fn(|r| {
                    std::array::from_fn(|c| (0..3).map(|k| gg[r][k] * G[c][k].abs()).sum())
                })
            })
            .collect();
        for bi in 0..b {
            for ti in 0..h.div_ceil(2) {
                for tj in 0..width.div_ceil(2) {
                    let (top, left) = (2 * ti as isize - 1, 2 * tj as isize - 1);
                    // V̄ per ci.
                    let vbar: Vec<[[f64; 4]; 4]> = (0..cin)
                        .map(|ci| {
                            let d = |r: usize, c: usize| {
                                self.x(bi, top + r as isize, left + c as isize, ci).abs()
                            };
                            let mut t = [[0.0; 4]; 4];
                            for (r, row) in t.iter_mut().enumerate() {
                                for (c, v) in row.iter_mut().enumerate() {
                                    *v = (0..4).map(|k| BT[r][k].abs() * d(k, c)).sum();
                                }
                            }
                            std::array::from_fn(|r| {
                                std::array::from_fn(|c| {
                                    (0..4).map(|k| t[r][k] * BT[c][k].abs()).sum()
                                })
                            })
                        })
                        .collect();
                    for (di, row_i) in AT.iter().enumerate() {
                        for (dj, row_j) in AT.iter().enumerate() {
                            let (i, j) = (2 * ti + di, 2 * tj + dj);
                            if i >= h || j >= width {
                                continue;
                            }
                            for co in 0..cout {
                                let (mut y, mut a, mut r) =
                                    (self.bias(co), self.bias(co).abs(), 0.0);
                                for ci in 0..cin {
                                    for kh in 0..3 {
                                        for kw in 0..3 {
                                            let p = self.w(co, ci, kh, kw)
                                                * self.x(
                                                    bi,
                                                    i as isize + kh as isize - 1,
                                                    j as isize + kw as isize - 1,
                                                    ci,
                                                );
                                            y += p;
                                            a += p.abs();
                                        }
                                    }
                                    let (u, v) = (&ubar[co * cin + ci], &vbar[ci]);
                                    for e in 0..16 {
                                        let (er, ec) = (e / 4, e % 4);
                                        r += row_i[er].abs()
                                            * row_j[ec].abs()
                                            * u[er][ec]
                                            * v[er][ec];
                                    }
                                }
                                let at = ((bi * h + i) * width + j) * cout + co;
                                exact[at] = y;
                                wino[at] = gamma(cin + 11) * (r + self.bias(co).abs());
                                direct[at] = gamma(9 * cin + 1) * a;
                            }
                        }
                    }
                }
            }
        }
        (exact, wino, direct)
    }
}

/// Odd 7×9 (a partial row and column of tiles) with the fewest channels it takes; 2 × 9×6 with depth 130 (the dot
/// kernel with a depth tail) and 70 outputs (a partial 4 × 6 tile); 34×33 with 128 channels (289 tiles: several
/// blocks per core); 1024 → 300 (output channels in two chunks, the second partial) on 2 × 6×6, no bias.
const SHAPES: [(usize, usize, usize, usize, usize, bool); 4] = [
    (1, 7, 9, 16, 16, true),
    (2, 9, 6, 130, 70, true),
    (1, 34, 33, 128, 128, true),
    (2, 6, 6, 1024, 300, false),
];

#[test]
fn winograd_matches_f64_loops_within_its_derived_bound() {
    let mut rng = Rng(2026);
    for shape in SHAPES {
        let c = Case::random(&mut rng, shape);
        assert!(
            winograd::pays(&c.x, &c.w, c.grid, 1),
            "{shape:?} must take the Winograd path"
        );
        let got = winograd::conv3x3(&c.x, &c.w, c.bias.as_ref(), c.grid).expect("winograd");
        assert_eq!(got.shape(), &[shape.0, shape.1 * shape.2, shape.4]);
        let (exact, bound, direct) = c.reference();
        let (mut worst, mut ratio) = (0.0f64, 0.0f64);
        for (i, &g) in got.data().iter().enumerate() {
            let err = (f64::from(g) - exact[i]).abs();
            assert!(
                err <= bound[i],
                "{shape:?}: output {i} is {g}, exact {}, error {err:e} over the bound {:e}",
                exact[i],
                bound[i]
            );
            worst = worst.max(err / bound[i]);
            ratio = ratio.max(bound[i] / direct[i]);
        }
        eprintln!("{shape:?}: worst error {worst:.4} of the bound; the bound is at most {ratio:.2}× the direct sum's");
    }
}

/// A 16-bit weight gives the same bits as its values widened to f32, and one core the same bits as all.
#[test]
fn winograd_gives_the_same_bits_for_16_bit_weights_and_on_one_core() {
    let mut rng = Rng(7);
    let c = Case::random(&mut rng, (2, 9, 6, 130, 70, true));
    let run =
        |w: &HostTensor| winograd::conv3x3(&c.x, w, c.bias.as_ref(), c.grid).expect("winograd");
    let want = run(&c.w);
    let values = c.w.data();
    for half in [
        HalfValues::Bf16(values.iter().map(|&v| bf16::from_f32(v)).collect()),
        HalfValues::F16(values.iter().map(|&v| f16::from_f32(v)).collect()),
    ] {
        let widened = HostTensor::new(c.w.shape().to_vec(), half.to_f32()).expect("shape");
        let kept = HostTensor::from_half(c.w.shape().to_vec(), half).expect("shape");
        assert!(
            run(&kept) == run(&widened),
            "a 16-bit weight changed the result"
        );
    }
    let one_core = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("a one-thread pool");
    assert!(
        one_core.install(|| run(&c.w)) == want,
        "the split over the cores changed the result"
    );
}

/// Same shapes and errors as the direct convolution, and the cases Winograd does not take.
#[test]
fn winograd_shapes_and_errors() {
    let mut rng = Rng(11);
    let c = Case::random(&mut rng, (1, 6, 6, 16, 16, true));
    assert!(
        winograd::conv3x3(&c.x, &c.w, c.bias.as_ref(), (6, 5)).is_err(),
        "6·5 is not 36 pixels"
    );
    let short = rng.tensor(&[15], -1.0, 1.0);
    let err = winograd::conv3x3(&c.x, &c.w, Some(&short), c.grid)
        .expect_err("a 15-value bias for 16 channels");
    assert!(err.to_string().contains("conv3x3 (bias)"), "{err}");
    assert!(
        !winograd::pays(&c.x, &c.w, c.grid, 2),
        "stride 2 stays direct"
    );
    let few = Case::random(&mut rng, (1, 4, 4, 16, 16, true));
    assert!(
        !winograd::pays(&few.x, &few.w, few.grid, 1),
        "4 tiles stay direct"
    );
    let narrow = Case::random(&mut rng, (1, 16, 16, 3, 16, true));
    assert!(
        !winograd::pays(&narrow.x, &narrow.w, narrow.grid, 1),
        "3 input channels stay direct"
    );
    // Where both run, they agree within the sum of their bounds (the direct one at 9·Cin + 1 terms).
    let direct = conv::conv3x3(&c.x, &c.w, c.bias.as_ref(), c.grid, 1).expect("direct");
    let fast = winograd::conv3x3(&c.x, &c.w, c.bias.as_ref(), c.grid).expect("winograd");
    let (_, bound, direct_bound) = c.reference();
    for (i, (a, b)) in direct.data().iter().zip(fast.data()).enumerate() {
        assert!(
            f64::from((a - b).abs()) <= bound[i] + direct_bound[i],
            "output {i}: {a} vs {b}"
        );
    }
}

/// Results of typical mistakes break the bound: the checks above can fail.
#[test]
fn winograd_bound_catches_wrong_results() {
    let mut rng = Rng(5);
    let c = Case::random(&mut rng, (1, 7, 6, 32, 24, true));
    let (exact, bound, _) = c.reference();
    let caught = |what: &str, got: &HostTensor| {
        let outside = got
            .data()
            .iter()
            .enumerate()
            .filter(|&(i, &g)| (f64::from(g) - exact[i]).abs() > bound[i])
            .count();
        assert!(
            outside > got.len() / 4,
            "{what}: only {outside} of {} outputs break the bound",
            got.len()
        );
    };
    // The kernel flipped (a correlation computed as a convolution).
    let mut flipped = c.w.data().to_vec();
    for k in flipped.chunks_exact_mut(9) {
        k.reverse();
    }
    let flipped = HostTensor::new(c.w.shape().to_vec(), flipped).expect("shape");
    caught(
        "flipped kernel",
        &winograd::conv3x3(&c.x, &flipped, c.bias.as_ref(), c.grid).expect("run"),
    );
    // The bias missing.
    caught(
        "no bias",
        &winograd::conv3x3(&c.x, &c.w, None, c.grid).expect("run"),
    );
    // Each tile's outputs one pixel to the right: the image shifted by one column.
    let (b, h, width, cin, _) = c.dims();
    let mut shifted = vec![0.0f32; c.x.len()];
    for p in 0..b * h * width {
        if p % width + 1 < width {
            shifted[p * cin..][..cin].copy_from_slice(&c.x.data()[(p + 1) * cin..][..cin]);
        }
    }
    let shifted = HostTensor::new(c.x.shape().to_vec(), shifted).expect("shape");
    caught(
        "one pixel off",
        &winograd::conv3x3(&shifted, &c.w, c.bias.as_ref(), c.grid).expect("run"),
    );
}
