//! Reference rotary position embedding in the rotate-half layout (transformers' `apply_rotary_pos_emb`,
//! docs/numerics/text-encoder.md §9.4): per head, `x·cos + rotate_half(x)·sin` with
//! `rotate_half(u) = [−u[d/2..], u[..d/2]]`. Each product and the sum are separate f32 roundings, as PyTorch's
//! unfused elementwise ops (`a + (−b)` and `a − b` round identically).

use crate::cpu::norm::dims3;
use crate::cpu::parallel::for_each_row;
use crate::error::{Error, Result};
use crate::tensor::HostTensor;

/// `x`: [B, L, heads·d]; `cos`, `sin`: [L, d] (full width: the half-size tables concatenated with themselves).
pub fn rotary(
    x: &HostTensor,
    cos: &HostTensor,
    sin: &HostTensor,
    heads: usize,
) -> Result<HostTensor> {
    let (b, l, dim) = dims3(x, "rotary")?;
    if heads == 0 || dim % heads != 0 || !(dim / heads).is_multiple_of(2) {
        return Err(Error::shape(
            "rotary",
            format!("width {dim} is not {heads} heads of an even size"),
        ));
    }
    let d = dim / heads;
    cos.expect_shape("rotary (cos)", &[Some(l), Some(d)])?;
    sin.expect_shape("rotary (sin)", &[Some(l), Some(d)])?;
    let half = d / 2;
    let mut out = vec![0.0f32; b * l * dim];
    for_each_row(&mut out, dim, |row, o| {
        let p = row % l;
        let (c, s) = (&cos.data()[p * d..][..d], &sin.data()[p * d..][..d]);
        let xr = &x.data()[row * dim..][..dim];
        for h in 0..heads {
            let (u, y) = (&xr[h * d..][..d], &mut o[h * d..][..d]);
            for i in 0..half {
                y[i] = u[i] * c[i] - u[i + half] * s[i];
                y[i + half] = u[i + half] * c[i + half] + u[i] * s[i + half];
            }
        }
    });
    HostTensor::new(vec![b, l, dim], out)
}
