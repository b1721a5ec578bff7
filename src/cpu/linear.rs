//! Reference GEMM: `act(x · wᵀ + b)`. Rows of `x` and of `w` are both contiguous in the reduction dimension, so each
//! output is one dot product; eight partial sums let the compiler vectorise it. f32 accumulation, as cuBLAS.

use crate::cpu::elementwise::activate;
use crate::cpu::parallel::for_each_row;
use crate::engine::Activation;
use crate::error::{Error, Result};
use crate::tensor::HostTensor;

pub fn linear(
    x: &HostTensor,
    w: &HostTensor,
    b: Option<&HostTensor>,
    act: Activation,
) -> Result<HostTensor> {
    w.expect_shape("linear (weight)", &[None, None])?;
    let (out_dim, in_dim) = (w.shape()[0], w.shape()[1]);
    if x.last_dim() != in_dim || x.shape().is_empty() {
        return Err(Error::shape(
            "linear",
            format!(
                "input {:?} does not end in the weight's input width {in_dim} (weight {:?})",
                x.shape(),
                w.shape()
            ),
        ));
    }
    if let Some(b) = b {
        b.expect_shape("linear (bias)", &[Some(out_dim)])?;
    }
    let mut shape = x.shape().to_vec();
    *shape.last_mut().expect("checked non-empty above") = out_dim;
    let mut out = vec![0.0f32; x.rows() * out_dim];
    for_each_row(&mut out, out_dim, |r, row| {
        let xr = &x.data()[r * in_dim..(r + 1) * in_dim];
        for (o, y) in row.iter_mut().enumerate() {
            let acc = dot(xr, &w.data()[o * in_dim..(o + 1) * in_dim]);
            let acc = acc + b.map_or(0.0, |b| b.data()[o]);
            *y = activate(acc, act);
        }
    });
    HostTensor::new(shape, out)
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (xa, xb) in (&mut ca).zip(&mut cb) {
        for l in 0..8 {
            lanes[l] += xa[l] * xb[l];
        }
    }
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    lanes.iter().sum::<f32>() + tail
}

/// Grouped 1×1 convolution without bias (PyTorch `Conv2d(Cin, Cout, 1, groups=G)`) on channels-last rows: `x`
/// [.., Cin], `w` [Cout, Cin/G]; output channel `o` of group `g = o / (Cout/G)` reads input channels
/// `[g·Cin/G, (g+1)·Cin/G)`.
pub fn grouped_linear(x: &HostTensor, w: &HostTensor, groups: usize) -> Result<HostTensor> {
    w.expect_shape("grouped_linear (weight)", &[None, None])?;
    let (out_dim, group_in) = (w.shape()[0], w.shape()[1]);
    let in_dim = x.last_dim();
    if groups == 0 || x.shape().is_empty() || in_dim != groups * group_in || out_dim % groups != 0 {
        return Err(Error::shape(
            "grouped_linear",
            format!(
                "input {:?}, weight {:?} and {groups} groups do not fit together",
                x.shape(),
                w.shape()
            ),
        ));
    }
    let group_out = out_dim / groups;
    let mut shape = x.shape().to_vec();
    *shape.last_mut().expect("checked non-empty above") = out_dim;
    let mut out = vec![0.0f32; x.rows() * out_dim];
    for_each_row(&mut out, out_dim, |r, row| {
        let xr = &x.data()[r * in_dim..(r + 1) * in_dim];
        for (o, y) in row.iter_mut().enumerate() {
            let g = o / group_out;
            *y = dot(
                &xr[g * group_in..(g + 1) * group_in],
                &w.data()[o * group_in..(o + 1) * group_in],
            );
        }
    });
    HostTensor::new(shape, out)
}
