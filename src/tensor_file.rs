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
