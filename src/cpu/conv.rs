//! Reference depthwise 3×3 convolution + bias + GLU(SiLU), the middle of Sana's Mix-FFN (spec transformer.md §12),
//! over channels-last tokens `[B, h·w, 2F]` with zero padding of one pixel.

use crate::cpu::elementwise::activate;
use crate::cpu::norm::dims3;
use crate::cpu::parallel::for_each_row;
use crate::engine::Activation;
use crate::error::{Error, Result};
use crate::tensor::HostTensor;

pub fn dwconv3x3_glu(
    x: &HostTensor,
    w: &HostTensor,
    bias: &HostTensor,
    h: usize,
    width: usize,
) -> Result<HostTensor> {
    let (b, n, c2) = dims3(x, "dwconv3x3_glu")?;
    if n != h * width || c2 % 2 != 0 {
        return Err(Error::shape(
            "dwconv3x3_glu",
            format!("input {:?} is not [B, {h}·{width}, 2F]", x.shape()),
        ));
    }
    w.expect_shape("dwconv3x3_glu (weight)", &[Some(c2), Some(9)])?;
    bias.expect_shape("dwconv3x3_glu (bias)", &[Some(c2)])?;
    let f = c2 / 2;
    let conv = |bi: usize, i: usize, j: usize, c: usize| -> f32 {
        let mut acc = bias.data()[c];
        for di in 0..3 {
            for dj in 0..3 {
                let (ii, jj) = ((i + di).wrapping_sub(1), (j + dj).wrapping_sub(1));
                if ii < h && jj < width {
                    acc += w.data()[c * 9 + di * 3 + dj]
                        * x.data()[(bi * n + ii * width + jj) * c2 + c];
                }
            }
        }
        acc
    };
    let mut out = vec![0.0f32; b * n * f];
    for_each_row(&mut out, f, |row, o| {
        let (bi, p) = (row / n, row % n);
        let (i, j) = (p / width, p % width);
        for (c, y) in o.iter_mut().enumerate() {
            *y = conv(bi, i, j, c) * activate(conv(bi, i, j, c + f), Activation::Silu);
        }
    });
    HostTensor::new(vec![b, n, f], out)
}
