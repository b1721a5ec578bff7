//! The device's measured ceilings, against which every kernel benchmark states its fraction: device-to-device copy
//! bandwidth and the cuBLASLt bf16 GEMM rate, both timed with CUDA events on the engine's stream.

use cudarc::driver::sys::CUevent_flags;

use super::CudaEngine;
use crate::engine::{Activation, Engine};
use crate::error::Result;
use crate::tensor::HostTensor;

/// Measured peaks of one device.
#[derive(Clone, Copy, Debug)]
pub struct Ceilings {
    /// Bytes read plus bytes written per second by a device-to-device copy.
    pub copy_bytes_per_s: f64,
    /// Floating-point operations per second of a square cuBLASLt GEMM in the engine's storage dtype.
    pub gemm_flop_per_s: f64,
}

impl CudaEngine {
    /// Milliseconds `f` takes on the stream, bracketed by events, averaged over `reps` runs after one warm-up.
    pub fn time_ms(&self, reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
        let err = || super::probe::driver("timing with events");
        f()?;
        let flags = Some(CUevent_flags::CU_EVENT_DEFAULT);
        let stream = &self.device().stream;
        let start = stream.record_event(flags).map_err(err())?;
        for _ in 0..reps {
            f()?;
        }
        let stop = stream.record_event(flags).map_err(err())?;
        let ms = start.elapsed_ms(&stop).map_err(err())?;
        Ok(f64::from(ms) / reps.max(1) as f64)
    }

    /// Copy bandwidth over a `bytes`-sized buffer and the GEMM rate at `n × n × n`.
    pub fn measure_ceilings(&self, bytes: usize, n: usize) -> Result<Ceilings> {
        let src = self.upload(&HostTensor::zeros(vec![bytes / self.dtype().size()]))?;
        let mut dst = self.upload(&HostTensor::zeros(vec![bytes / self.dtype().size()]))?;
        let copy_ms = self.time_ms(10, || self.overwrite(&mut dst, &src))?;
        // Values in [-1, 1): zeros would let the tensor cores idle on some parts (a faster, unrealistic rate).
        let filled = |seed: u32| {
            let data = (0..n * n)
                .map(|i| {
                    let x = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed);
                    (x >> 8) as f32 / (1u32 << 23) as f32 - 1.0
                })
                .collect();
            HostTensor::new(vec![n, n], data)
        };
        let (a, b) = (self.upload(&filled(1)?)?, self.upload(&filled(2)?)?);
        let gemm_ms = self.time_ms(10, || {
            self.linear(&a, &b, None, Activation::Identity).map(drop)
        })?;
        Ok(Ceilings {
            copy_bytes_per_s: 2.0 * bytes as f64 / (copy_ms * 1e-3),
            gemm_flop_per_s: 2.0 * (n as f64).powi(3) / (gemm_ms * 1e-3),
        })
    }
}
