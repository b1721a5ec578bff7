//! Reading and writing the safetensors files that `sana-run eval` exchanges with users and tests.

use std::borrow::Cow;
use std::path::Path;

use safetensors::tensor::{Dtype, View};

use crate::error::{Error, Result};
use crate::tensor::HostTensor;

/// Writes `tensors` as F32 to `path`.
pub fn write_f32(path: &Path, tensors: &[(&str, &HostTensor)]) -> Result<()> {
    let views: Vec<(&str, F32View<'_>)> = tensors.iter().map(|(n, t)| (*n, F32View(t))).collect();
    safetensors::serialize_to_file(views, None, path).map_err(|e| Error::Safetensors {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Writes `floats` as F32 and `ints` (0/1 masks, token ids: integer-valued f32 tensors) as I64 to `path`.
pub fn write_f32_i64(
    path: &Path,
    floats: &[(&str, &HostTensor)],
    ints: &[(&str, &HostTensor)],
) -> Result<()> {
    let views = floats
        .iter()
        .map(|(n, t)| (*n, TypedView(t, Dtype::F32)))
        .chain(ints.iter().map(|(n, t)| (*n, TypedView(t, Dtype::I64))));
    safetensors::serialize_to_file(views, None, path).map_err(|e| Error::Safetensors {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// A host tensor written as F32 or, rounded, as I64.
struct TypedView<'a>(&'a HostTensor, Dtype);

impl View for TypedView<'_> {
    fn dtype(&self) -> Dtype {
        self.1
    }

    fn shape(&self) -> &[usize] {
        self.0.shape()
    }

    fn data(&self) -> Cow<'_, [u8]> {
        let values = self.0.data().iter();
        Cow::Owned(match self.1 {
            Dtype::I64 => values
                .flat_map(|v| (v.round() as i64).to_le_bytes())
                .collect(),
            _ => values.flat_map(|v| v.to_le_bytes()).collect(),
        })
    }

    fn data_len(&self) -> usize {
        self.0.len() * self.1.bitsize() / 8
    }
}

struct F32View<'a>(&'a HostTensor);

impl View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }

    fn shape(&self) -> &[usize] {
        self.0.shape()
    }

    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.0.data().iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    fn data_len(&self) -> usize {
        self.0.len() * 4
    }
}
