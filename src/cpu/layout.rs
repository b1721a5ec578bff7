//! Reference layout changes between NCHW images and channels-last tokens.

use crate::error::{Error, Result};
use crate::tensor::HostTensor;

/// `[B, C, h, w]` → `[B, h·w, C]`.
pub fn nchw_to_tokens(x: &HostTensor) -> Result<HostTensor> {
    x.expect_shape("nchw_to_tokens", &[None, None, None, None])?;
    let [b, c, h, w] = [x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]];
    let mut out = vec![0.0f32; x.len()];
    for bi in 0..b {
        for ci in 0..c {
            for p in 0..h * w {
                out[(bi * h * w + p) * c + ci] = x.data()[(bi * c + ci) * h * w + p];
            }
        }
    }
    HostTensor::new(vec![b, h * w, c], out)
}

/// `[B, h·w, C]` → `[B, C, h, w]`.
pub fn tokens_to_nchw(x: &HostTensor, h: usize, w: usize) -> Result<HostTensor> {
    x.expect_shape("tokens_to_nchw", &[None, Some(h * w), None])?;
    let (b, c) = (x.shape()[0], x.shape()[2]);
    if h * w == 0 {
        return Err(Error::shape("tokens_to_nchw", "empty image grid"));
    }
    let mut out = vec![0.0f32; x.len()];
    for bi in 0..b {
        for p in 0..h * w {
            for ci in 0..c {
                out[(bi * c + ci) * h * w + p] = x.data()[(bi * h * w + p) * c + ci];
            }
        }
    }
    HostTensor::new(vec![b, c, h, w], out)
}
