//! Reading and writing the safetensors files that `sana-run eval` exchanges with users and tests.

use std::borrow::Cow;
use std::io::Write;
use std::path::Path;

use safetensors::tensor::{Dtype, View};

use crate::atomic_write::{stage, StagedFile};
use crate::error::{Error, Result};
use crate::tensor::HostTensor;

/// Writes `tensors` as F32 to `path`, complete or not at all (src/atomic_write.rs); a tensor holding NaN or
/// infinite values is refused and nothing is written.
pub fn write_f32(path: &Path, tensors: &[(&str, &HostTensor)]) -> Result<()> {
    stage_f32(path, tensors)?.commit()
}

/// [`write_f32`] staged: the file is complete beside `path` and appears there when the returned file is committed.
pub fn stage_f32(path: &Path, tensors: &[(&str, &HostTensor)]) -> Result<StagedFile> {
    check_finite(path, tensors)?;
    let views: Vec<(&str, F32View<'_>)> = tensors.iter().map(|(n, t)| (*n, F32View(t))).collect();
    stage_file(path, safetensors::serialize(views, None))
}

/// Refuses tensors holding NaN or infinite values: a file of them passes for a result.
fn check_finite(path: &Path, tensors: &[(&str, &HostTensor)]) -> Result<()> {
    for (name, t) in tensors {
        let count = t.data().iter().filter(|v| !v.is_finite()).count();
        if count > 0 {
            return Err(Error::InvalidInput(format!(
                "{}: not written: tensor `{name}` holds {count} NaN or infinite values of {}",
                path.display(),
                t.len()
            )));
        }
    }
    Ok(())
}

/// The serialised bytes staged for `path`; a failure to write is an I/O error on `path`, not a claim about the
/// format.
fn stage_file(
    path: &Path,
    bytes: std::result::Result<Vec<u8>, safetensors::SafeTensorError>,
) -> Result<StagedFile> {
    let bytes = bytes
        .map_err(|e| Error::InvalidInput(format!("{}: cannot serialise: {e}", path.display())))?;
    stage(path, |file| {
        file.write_all(&bytes).map_err(|e| format!("write: {e}"))
    })
    .map_err(|reason| Error::io(path, std::io::Error::other(reason)))
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
    check_finite(path, floats)?;
    stage_file(path, safetensors::serialize(views, None))?.commit()
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
