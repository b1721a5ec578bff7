//! `HostTensor`: a dense, row-major f32 tensor in host memory. It is the CPU engine's tensor, the exchange format
//! with every other engine (upload/download), and what `sana-run eval` reads and writes.

use crate::error::{Error, Result};

/// A dense, row-major f32 tensor in host memory: a shape and `shape.iter().product()` values.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    shape: Vec<usize>,
    data: Vec<f32>,
}

impl HostTensor {
    /// Wraps `data` as a tensor of `shape`; the element count must match.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self> {
        let want: usize = shape.iter().product();
        if want != data.len() {
            return Err(Error::shape(
                "HostTensor::new",
                format!("shape {shape:?} needs {want} elements, got {}", data.len()),
            ));
        }
        Ok(Self { shape, data })
    }

    /// A tensor of `shape` filled with 0.
    pub fn zeros(shape: Vec<usize>) -> Self {
        let n = shape.iter().product();
        Self {
            shape,
            data: vec![0.0; n],
        }
    }

    /// The shape, outermost axis first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The values, row-major (last axis contiguous).
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// The values, row-major, for writing in place.
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// Copies `src`'s values into this tensor in place (`op` names the caller in the error when the shapes differ).
    pub fn copy_from(&mut self, op: &'static str, src: &HostTensor) -> Result<()> {
        if src.shape != self.shape {
            return Err(Error::shape(
                op,
                format!("copying {:?} into {:?}", src.shape, self.shape),
            ));
        }
        self.data.copy_from_slice(&src.data);
        Ok(())
    }

    /// The values, row-major, without the shape.
    pub fn into_data(self) -> Vec<f32> {
        self.data
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Same data, new shape with the same element count.
    pub fn reshape(self, shape: Vec<usize>) -> Result<Self> {
        Self::new(shape, self.data)
    }

    /// Size of the last dimension (1 for a scalar).
    pub fn last_dim(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }

    /// Number of vectors along the last dimension.
    pub fn rows(&self) -> usize {
        self.data.len() / self.last_dim().max(1)
    }

    /// Fails with a shape error naming `op` unless the rank and sizes match `expected` (`None` = any size).
    pub fn expect_shape(&self, op: &'static str, expected: &[Option<usize>]) -> Result<()> {
        let ok = self.shape.len() == expected.len()
            && self
                .shape
                .iter()
                .zip(expected)
                .all(|(a, e)| e.is_none_or(|e| e == *a));
        if ok {
            Ok(())
        } else {
            Err(Error::shape(
                op,
                format!("got shape {:?}, expected {}", self.shape, pattern(expected)),
            ))
        }
    }
}

fn pattern(expected: &[Option<usize>]) -> String {
    let dims: Vec<String> = expected
        .iter()
        .map(|e| e.map_or_else(|| "_".to_string(), |v| v.to_string()))
        .collect();
    format!("[{}]", dims.join(", "))
}
