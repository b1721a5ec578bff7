//! Seeded inputs shared by the benches: speed does not depend on the values, only on their never being zeros or
//! denormals (which some paths skip or slow down on).
#![allow(dead_code)] // each bench uses its own subset

use sana::HostTensor;

/// A tensor of `shape` with values spread evenly over [−amplitude/2, amplitude/2), from a multiplicative hash of the
/// index and `seed`.
pub fn filled(shape: &[usize], seed: u32, amplitude: f32) -> HostTensor {
    let n: usize = shape.iter().product();
    let data = (0..n)
        .map(|i| {
            let x = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed);
            ((x >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * amplitude
        })
        .collect();
    HostTensor::new(shape.to_vec(), data).expect("shape and data agree")
}
