//! Helpers shared by the emulated-kernel tests (tests/<family>.rs): deterministic random inputs, storage rounding,
//! ulps, and the worst error of a result measured in units of a per-element tolerance.
#![allow(dead_code)] // each test binary uses its own subset

use sana::engine::cuda::embedded::{self, Family};
use sana::engine::{Storage, StorageDtype};
use sana::{Error, HostTensor};

/// Unit roundoff of f32 (2^-24): one rounding moves a value by at most this fraction of its magnitude.
pub const U: f32 = f32::EPSILON / 2.0;

pub const DTYPES: [StorageDtype; 3] = [StorageDtype::F32, StorageDtype::Bf16, StorageDtype::F16];

/// splitmix64: a tiny deterministic generator, so the tests need no rand crate.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [lo, hi), never exactly zero (a zero input hides a missing term).
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        loop {
            let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
            let v = lo + (hi - lo) * u;
            if v != 0.0 {
                return v;
            }
        }
    }

    pub fn tensor(&mut self, shape: &[usize], lo: f32, hi: f32) -> HostTensor {
        let n = shape.iter().product();
        HostTensor::new(
            shape.to_vec(),
            (0..n).map(|_| self.uniform(lo, hi)).collect(),
        )
        .expect("valid shape")
    }
}

/// Rounds every element to `dtype` (as the emu engine does on upload).
pub fn rounded(t: &HostTensor, dtype: StorageDtype) -> HostTensor {
    HostTensor::new(
        t.shape().to_vec(),
        Storage::from_f32(dtype, t.data()).to_f32(),
    )
    .expect("same shape")
}

/// Distance between adjacent values of `dtype` at magnitude `v` (0 for f32: results there are compared through
/// their f32 error terms alone).
pub fn ulp(dtype: StorageDtype, v: f32) -> f32 {
    let (mantissa_bits, min_exp) = match dtype {
        StorageDtype::F32 => return 0.0,
        StorageDtype::Bf16 => (7, -126),
        StorageDtype::F16 => (10, -14),
    };
    let e = if v == 0.0 {
        min_exp
    } else {
        (v.abs().log2().floor() as i32).max(min_exp)
    };
    2f32.powi(e - mantissa_bits)
}

/// The largest `|got − want| / tol(i)` over all elements and where it occurs; NaN (an unwritten, poisoned element)
/// or a zero tolerance with any difference counts as failing.
pub fn worst_ratio(got: &[f32], want: &[f32], tol: impl Fn(usize) -> f32) -> (f32, usize) {
    assert_eq!(got.len(), want.len(), "lengths differ");
    let mut worst = (0.0f32, 0);
    for i in 0..got.len() {
        let diff = (got[i] - want[i]).abs();
        let ratio = if diff == 0.0 { 0.0 } else { diff / tol(i) };
        if ratio.is_nan() || ratio > worst.0 {
            worst = (if ratio.is_nan() { f32::NAN } else { ratio }, i);
            if ratio.is_nan() {
                break;
            }
        }
    }
    worst
}

/// Asserts that `got` is within tolerance of `want` everywhere and returns the worst ratio (≤ 1).
#[track_caller]
pub fn assert_within(what: &str, got: &[f32], want: &[f32], tol: impl Fn(usize) -> f32) -> f32 {
    let (ratio, at) = worst_ratio(got, want, &tol);
    assert!(
        ratio <= 1.0,
        "{what}: element {at} is {ratio}× the tolerance off (got {}, want {}, tol {})",
        got[at],
        want[at],
        tol(at)
    );
    ratio
}

/// Asserts that a kernel computing `wrong` would fail the tolerance that the real kernel's `got` passes.
#[track_caller]
pub fn assert_caught(what: &str, got: &[f32], wrong: &[f32], tol: impl Fn(usize) -> f32) {
    let (ratio, _) = worst_ratio(got, wrong, tol);
    assert!(
        ratio.is_nan() || ratio > 1.0,
        "a kernel with '{what}' would pass (worst {ratio}× the tolerance)"
    );
}

/// Checks that the family's PTX was built for compute_80 and holds every `entries` kernel (skips without nvcc).
pub fn check_ptx(family: Family, entries: &[&str]) {
    match embedded::ptx(family) {
        Ok(ptx) => {
            assert!(
                ptx.contains(".target sm_80"),
                "PTX not built for compute_80"
            );
            for name in entries {
                let entry = format!(".entry {name}(");
                assert!(ptx.contains(&entry), "PTX lacks {entry}");
            }
        }
        Err(Error::KernelsNotBuilt) => {
            if embedded::NVCC_BUILT || option_env!("SANA_REQUIRE_NVCC") == Some("1") {
                panic!(
                    "nvcc ran at build time (or was required) but there is no {} PTX",
                    family.name()
                );
            }
            eprintln!("skipped: no nvcc at build time");
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
}

/// `[a, b, c]` of a rank-3 tensor.
pub fn dims3(t: &HostTensor) -> (usize, usize, usize) {
    match *t.shape() {
        [a, b, c] => (a, b, c),
        ref s => panic!("expected rank 3, got {s:?}"),
    }
}
