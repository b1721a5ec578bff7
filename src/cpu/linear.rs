//! Linear layers and grouped 1×1 convolutions on the CPU: `act(x · wᵀ + b)` as one GEMM over all rows against the
//! weight as it is stored ([`gemm_weight`]), then bias and activation in one pass. f32 accumulation, as cuBLAS.

use crate::cpu::elementwise::bias_activate;
use crate::cpu::gemm::MatrixLayout;
use crate::cpu::parallel::for_each_row;
use crate::cpu::weight_gemm::{gemm_weight, WeightRows};
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
    let rows = x.rows();
    let mut out = vec![0.0f32; rows * out_dim];
    let lx = MatrixLayout::row_major(rows, in_dim, in_dim);
    let lout = MatrixLayout::row_major(rows, out_dim, out_dim);
    gemm_weight((x.data(), lx), WeightRows::of(w), (&mut out, lout));
    if b.is_some() || act != Activation::Identity {
        for_each_row(&mut out, out_dim, |_, row| {
            bias_activate(row, b.map(HostTensor::data), act)
        });
    }
    HostTensor::new(shape, out)
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
    let rows = x.rows();
    let mut out = vec![0.0f32; rows * out_dim];
    if rows == 0 {
        return HostTensor::new(shape, out);
    }
    // Group g: out[:, g·Go..] = x[:, g·Gi..] · w[g·Go.., :]ᵀ, each a strided view of the whole tensors.
    let w = WeightRows::of(w);
    for g in 0..groups {
        gemm_weight(
            (
                &x.data()[g * group_in..],
                MatrixLayout::row_major(rows, group_in, in_dim),
            ),
            w.slice(g * group_out * group_in..(g + 1) * group_out * group_in),
            (
                &mut out[g * group_out..],
                MatrixLayout::row_major(rows, group_out, out_dim),
            ),
        );
    }
    HostTensor::new(shape, out)
}
