//! Reference elementwise ops: activations, residual adds and the AdaLN modulation arithmetic, chunks over the cores.

use crate::cpu::exp::exp;
use crate::cpu::parallel::{for_each_chunk, for_each_row};
use crate::engine::Activation;
use crate::error::{Error, Result};
use crate::tensor::HostTensor;

/// `act(v)`. GELU-tanh as `v·σ(2z)`, which is `½v(1 + tanh z)` without the cancellation of `1 + tanh z` for
/// negative `z`; both exponentials through [`exp`], which vectorises.
#[inline(always)]
pub fn activate(v: f32, act: Activation) -> f32 {
    match act {
        Activation::Identity => v,
        Activation::Silu => silu(v),
        Activation::GeluTanh => gelu_tanh(v),
        Activation::Relu => v.max(0.0),
    }
}

/// `v·σ(v)`.
#[inline(always)]
pub fn silu(v: f32) -> f32 {
    v / (1.0 + exp(-v))
}

#[inline(always)]
fn gelu_tanh(v: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let z = SQRT_2_OVER_PI * (v + 0.044_715 * v * v * v);
    v / (1.0 + exp(-2.0 * z))
}

/// `v = act(v + bias)` along a row (no bias: `act(v)`), the activation chosen once per row so that each variant is
/// its own loop, which the compiler vectorises (a `match` per element kept it scalar: 5% of a Sprint 1024 image).
pub fn bias_activate(row: &mut [f32], bias: Option<&[f32]>, act: Activation) {
    #[inline(always)]
    fn each(row: &mut [f32], bias: Option<&[f32]>, f: impl Fn(f32) -> f32) {
        match bias {
            Some(b) => row.iter_mut().zip(b).for_each(|(y, &b)| *y = f(*y + b)),
            None => row.iter_mut().for_each(|y| *y = f(*y)),
        }
    }
    match act {
        Activation::Identity => each(row, bias, |v| v),
        Activation::Silu => each(row, bias, silu),
        Activation::GeluTanh => each(row, bias, gelu_tanh),
        Activation::Relu => each(row, bias, |v| v.max(0.0)),
    }
}

pub fn activation(x: &HostTensor, act: Activation) -> Result<HostTensor> {
    let mut out = x.data().to_vec();
    for_each_chunk(&mut out, |_, o| bias_activate(o, None, act));
    HostTensor::new(x.shape().to_vec(), out)
}

/// `f(a, b)` element by element, over the cores.
fn binary(a: &HostTensor, b: &HostTensor, f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    let mut out = vec![0.0f32; a.data().len()];
    for_each_chunk(&mut out, |first, o| {
        for ((y, &x), &z) in o.iter_mut().zip(&a.data()[first..]).zip(&b.data()[first..]) {
            *y = f(x, z);
        }
    });
    out
}

pub fn add(a: &HostTensor, b: &HostTensor) -> Result<HostTensor> {
    if a.shape() != b.shape() {
        return Err(Error::shape(
            "add",
            format!("shapes {:?} and {:?} differ", a.shape(), b.shape()),
        ));
    }
    HostTensor::new(a.shape().to_vec(), binary(a, b, |x, y| x + y))
}

/// `a · b`, same shapes.
pub fn mul(a: &HostTensor, b: &HostTensor) -> Result<HostTensor> {
    if a.shape() != b.shape() {
        return Err(Error::shape(
            "mul",
            format!("shapes {:?} and {:?} differ", a.shape(), b.shape()),
        ));
    }
    HostTensor::new(a.shape().to_vec(), binary(a, b, |x, y| x * y))
}

/// `table[None] + emb.reshape(B, K, D)`, with a [B, D] `emb` broadcast over the K rows.
pub fn modulation(table: &HostTensor, emb: &HostTensor) -> Result<HostTensor> {
    table.expect_shape("modulation (table)", &[None, None])?;
    let (k, d) = (table.shape()[0], table.shape()[1]);
    emb.expect_shape("modulation (emb)", &[None, None])?;
    let b = emb.shape()[0];
    let per_row = match emb.shape()[1] {
        n if n == k * d => true,
        n if n == d => false,
        n => {
            return Err(Error::shape(
                "modulation",
                format!("emb width {n} is neither K·D = {} nor D = {d}", k * d),
            ))
        }
    };
    let mut out = Vec::with_capacity(b * k * d);
    for bi in 0..b {
        for r in 0..k {
            for j in 0..d {
                let e = if per_row {
                    emb.data()[bi * k * d + r * d + j]
                } else {
                    emb.data()[bi * d + j]
                };
                out.push(table.data()[r * d + j] + e);
            }
        }
    }
    HostTensor::new(vec![b, k, d], out)
}

/// `x + m[b, gate_row] · y`.
pub fn gated_residual(
    x: &HostTensor,
    y: &HostTensor,
    m: &HostTensor,
    gate_row: usize,
) -> Result<HostTensor> {
    let (b, n, d) = crate::cpu::norm::dims3(x, "gated_residual")?;
    y.expect_shape("gated_residual (y)", &[Some(b), Some(n), Some(d)])?;
    m.expect_shape("gated_residual (modulation)", &[Some(b), None, Some(d)])?;
    let k = m.shape()[1];
    if gate_row >= k {
        return Err(Error::shape(
            "gated_residual",
            format!("row {gate_row} out of a {k}-row table"),
        ));
    }
    let mut out = vec![0.0f32; b * n * d];
    for_each_row(&mut out, d, |row, o| {
        let bi = row / n.max(1);
        let gate = &m.data()[(bi * k + gate_row) * d..][..d];
        let (xs, ys) = (&x.data()[row * d..][..d], &y.data()[row * d..][..d]);
        for (((o, &x), &y), &g) in o.iter_mut().zip(xs).zip(ys).zip(gate) {
            *o = x + g * y;
        }
    });
    HostTensor::new(x.shape().to_vec(), out)
}
