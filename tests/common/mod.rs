//! Helpers shared by the integration tests: fixture paths, tolerance checks, a tiny deterministic PRNG, scratch
//! folders.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use sana::HostTensor;

/// tests/fixtures, or `$SANA_FIXTURES` where the test executables run away from the source tree (the GPU bundle).
pub fn fixtures() -> PathBuf {
    match std::env::var_os("SANA_FIXTURES") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"),
    }
}

pub fn tiny_model() -> PathBuf {
    fixtures().join("tiny-sana")
}

pub fn golden(name: &str) -> PathBuf {
    fixtures().join("golden").join(name)
}

/// Largest absolute difference relative to the largest reference magnitude: `max|a−b| / max|b|`. Per-element
/// relative error is meaningless for values near zero; this is the scale-aware form used by every golden test.
pub fn relative_error(actual: &[f32], expected: &[f32]) -> f32 {
    assert_eq!(actual.len(), expected.len(), "lengths differ");
    let scale = expected
        .iter()
        .fold(0.0f32, |m, v| m.max(v.abs()))
        .max(f32::MIN_POSITIVE);
    // NaN anywhere makes the error NaN (`f32::max` alone would drop it, and an unwritten or poisoned output pass).
    let diff = actual.iter().zip(expected).fold(0.0f32, |m, (a, b)| {
        let d = (a - b).abs();
        if d.is_nan() || m.is_nan() {
            f32::NAN
        } else {
            m.max(d)
        }
    });
    diff / scale
}

#[track_caller]
pub fn assert_close(what: &str, actual: &HostTensor, expected: &HostTensor, tol: f32) {
    assert_eq!(actual.shape(), expected.shape(), "{what}: shapes differ");
    assert!(
        actual.data().iter().all(|v| v.is_finite()),
        "{what}: non-finite values"
    );
    let err = relative_error(actual.data(), expected.data());
    assert!(err <= tol, "{what}: relative error {err:e} > {tol:e}");
}

/// 8-bit pixels equal to the reference's up to ±1 on at most 0.5% of values (issue 4's bar: a value within a few
/// ulps of a rounding boundary may round either way).
#[track_caller]
pub fn assert_pixels_match(what: &str, got: &[u8], want: &[u8]) {
    assert_eq!(got.len(), want.len(), "{what}: pixel count");
    let differing = got.iter().zip(want).filter(|(a, b)| a != b).count();
    let worst = got
        .iter()
        .zip(want)
        .map(|(&a, &b)| (i32::from(a) - i32::from(b)).abs())
        .max()
        .unwrap_or(0);
    eprintln!(
        "{what}: {differing} of {} 8-bit values differ (max {worst})",
        want.len()
    );
    assert!(worst <= 1, "{what}: a value is off by {worst}");
    assert!(
        differing * 200 <= want.len(),
        "{what}: {differing} of {} values differ by 1",
        want.len()
    );
}

/// xorshift64* — deterministic, dependency-free test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [-1, 1), never exactly zero.
    pub fn uniform(&mut self) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        let v = 2.0 * u - 1.0;
        if v == 0.0 {
            0.5
        } else {
            v
        }
    }

    pub fn tensor(&mut self, shape: &[usize]) -> HostTensor {
        let n = shape.iter().product();
        HostTensor::new(shape.to_vec(), (0..n).map(|_| self.uniform()).collect()).unwrap()
    }
}

/// A fresh, empty folder in the temp directory for one test, removed when dropped — also when the test panics,
/// since the guard is dropped while unwinding. Named `sana-test-<pid>-<n>-<test>`: the process id and a per-process
/// counter keep concurrent test binaries and repeated names apart. Bind it for as long as the folder is used:
/// `scratch(t).join("x")` alone drops the guard and the folder at the end of the statement.
pub struct Scratch(PathBuf);

static SCRATCH_COUNTER: AtomicUsize = AtomicUsize::new(0);

pub fn scratch(test: &str) -> Scratch {
    let n = SCRATCH_COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("sana-test-{}-{n}-{test}", std::process::id()));
    // A leftover from a killed run whose process id came round again.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Never panic here: a panic while unwinding from a failed test would abort the whole test binary.
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("cannot remove scratch folder {}: {e}", self.0.display());
        }
    }
}

/// Copies a folder tree (small fixtures only).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The CUDA engine on GPU 0 in `dtype`, or `None` after printing why `test` is skipped; with `SANA_REQUIRE_GPU=1`
/// (CI's software device, the GPU bundle) a missing GPU fails the test instead, with the same reason.
pub fn cuda_or_skip(
    test: &str,
    dtype: sana::engine::StorageDtype,
) -> Option<sana::engine::cuda::CudaEngine> {
    match sana::engine::cuda::CudaEngine::new(0, dtype) {
        Ok(e) => {
            eprintln!(
                "{test}: {} ({dtype:?}), kernels from the {}{}",
                e.info().name,
                e.kernel_image(),
                e.cubin_refused()
                    .map(|why| format!(" (the driver refused the sm_90 cubin: {why})"))
                    .unwrap_or_default()
            );
            Some(e)
        }
        Err(err) if std::env::var("SANA_REQUIRE_GPU").is_ok_and(|v| v == "1") => {
            panic!("{test}: SANA_REQUIRE_GPU=1 but there is no usable GPU: {err}")
        }
        Err(err) => {
            eprintln!("{test}: skipped: {err}");
            None
        }
    }
}
