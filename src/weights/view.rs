//! A borrowed tensor of a checkpoint: a window into a mapped safetensors file or into a synthetic checkpoint's pool
//! (both in src/weights/), with its name, dtype, shape and location for error messages.

use std::path::Path;

use safetensors::tensor::Dtype;

use crate::error::{Error, Result};
use crate::tensor::{HalfValues, HostTensor};

/// A borrowed tensor inside a mapped file.
#[derive(Clone, Copy)]
pub struct TensorView<'a> {
    pub(super) name: &'a str,
    pub(super) dtype: Dtype,
    pub(super) shape: &'a [usize],
    pub(super) bytes: &'a [u8],
    pub(super) location: &'a Path,
}

impl<'a> TensorView<'a> {
    /// The full checkpoint key, e.g. `transformer_blocks.3.attn1.to_q.weight`.
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// The dtype stored on disk.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// The shape stored on disk, outermost axis first.
    pub fn shape(&self) -> &'a [usize] {
        self.shape
    }

    /// The raw little-endian data, row-major, in [`Self::dtype`].
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The file that holds the tensor (the `*.synthetic.json` for a synthetic checkpoint).
    pub fn location(&self) -> &'a Path {
        self.location
    }

    /// Fails with an error naming the tensor, the file and both shapes unless the tensor has as many elements as
    /// `shape` (what loading it as a reshape of its stored shape needs).
    pub fn expect_elements_of(&self, shape: &[usize]) -> Result<()> {
        if shape.iter().product::<usize>() == self.shape.iter().product::<usize>() {
            Ok(())
        } else {
            Err(Error::ShapeMismatch {
                name: self.name.to_string(),
                location: self.location.display().to_string(),
                expected: shape.to_vec(),
                actual: self.shape.to_vec(),
            })
        }
    }

    /// Fails with an error naming the tensor, the file and both shapes unless the shape is `expected`.
    pub fn expect_shape(&self, expected: &[usize]) -> Result<()> {
        if self.shape == expected {
            Ok(())
        } else {
            Err(Error::ShapeMismatch {
                name: self.name.to_string(),
                location: self.location.display().to_string(),
                expected: expected.to_vec(),
                actual: self.shape.to_vec(),
            })
        }
    }

    /// The values widened to f32 (floating-point dtypes only).
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        let b = self.bytes;
        Ok(match self.dtype {
            Dtype::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => b
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => b
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            _ => return Err(self.unsupported("F32, F16, BF16")),
        })
    }

    /// The values of a bf16 or f16 tensor as they are stored (`None` for other dtypes).
    pub fn to_half(&self) -> Option<HalfValues> {
        let b = self.bytes;
        match self.dtype {
            Dtype::F16 => Some(HalfValues::F16(
                b.chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]))
                    .collect(),
            )),
            Dtype::BF16 => Some(HalfValues::Bf16(
                b.chunks_exact(2)
                    .map(|c| half::bf16::from_le_bytes([c[0], c[1]]))
                    .collect(),
            )),
            _ => None,
        }
    }

    /// Integer tensors (masks, token ids) as i64.
    pub fn to_i64(&self) -> Result<Vec<i64>> {
        let b = self.bytes;
        Ok(match self.dtype {
            Dtype::I64 => b
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect(),
            Dtype::I32 => b
                .chunks_exact(4)
                .map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
            _ => return Err(self.unsupported("I64, I32")),
        })
    }

    /// A mask given as integers or floats, as f32 (0/1 values).
    pub fn to_mask_f32(&self) -> Result<Vec<f32>> {
        match self.dtype {
            Dtype::I64 | Dtype::I32 => Ok(self.to_i64()?.into_iter().map(|v| v as f32).collect()),
            Dtype::F32 | Dtype::F16 | Dtype::BF16 => self.to_f32(),
            _ => Err(self.unsupported("I64, I32, F32, F16, BF16")),
        }
    }

    /// The tensor widened to an f32 [`HostTensor`] of its stored shape (floating-point dtypes only).
    pub fn to_host(&self) -> Result<HostTensor> {
        HostTensor::new(self.shape.to_vec(), self.to_f32()?)
    }

    /// A 0/1 mask (integer or float on disk) as an f32 tensor of the same shape.
    pub fn to_mask_host(&self) -> Result<HostTensor> {
        HostTensor::new(self.shape.to_vec(), self.to_mask_f32()?)
    }

    fn unsupported(&self, supported: &'static str) -> Error {
        Error::UnsupportedDtype {
            name: self.name.to_string(),
            location: self.location.display().to_string(),
            dtype: format!("{:?}", self.dtype),
            supported,
        }
    }
}
