//! Reference elementwise ops: activations, residual adds and the AdaLN modulation arithmetic.

use crate::engine::Activation;
use crate::error::{Error, Result};
use crate::tensor::HostTensor;

pub fn activate(v: f32, act: Activation) -> f32 {
    match act {
        Activation::Identity => v,
        Activation::Silu => v / (1.0 + (-v).exp()),
        Activation::GeluTanh => {
            const SQRT_2_OVER_PI: f32 = 0.797_884_6;
            0.5 * v * (1.0 + (SQRT_2_OVER_PI * (v + 0.044_715 * v * v * v)).tanh())
        }
        Activation::Relu => v.max(0.0),
    }
}

pub fn activation(x: &HostTensor, act: Activation) -> Result<HostTensor> {
    HostTensor::new(
        x.shape().to_vec(),
        x.data().iter().map(|&v| activate(v, act)).collect(),
    )
}

pub fn add(a: &HostTensor, b: &HostTensor) -> Result<HostTensor> {
    if a.shape() != b.shape() {
        return Err(Error::shape(
            "add",
            format!("shapes {:?} and {:?} differ", a.shape(), b.shape()),
        ));
    }
    HostTensor::new(
        a.shape().to_vec(),
        a.data().iter().zip(b.data()).map(|(x, y)| x + y).collect(),
    )
}

/// `a · b`, same shapes.
pub fn mul(a: &HostTensor, b: &HostTensor) -> Result<HostTensor> {
    if a.shape() != b.shape() {
        return Err(Error::shape(
            "mul",
            format!("shapes {:?} and {:?} differ", a.shape(), b.shape()),
        ));
    }
    HostTensor::new(
        a.shape().to_vec(),
        a.data().iter().zip(b.data()).map(|(x, y)| x * y).collect(),
    )
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
    let mut out = x.data().to_vec();
    for bi in 0..b {
        let gate = &m.data()[(bi * k + gate_row) * d..(bi * k + gate_row + 1) * d];
        for ni in 0..n {
            let row = (bi * n + ni) * d;
            for j in 0..d {
                out[row + j] += gate[j] * y.data()[row + j];
            }
        }
    }
    HostTensor::new(x.shape().to_vec(), out)
}
