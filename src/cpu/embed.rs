//! Reference token embedding: a row gather from the table, times a scale (Gemma's `√hidden` normalizer).

use crate::error::{Error, Result};
use crate::tensor::HostTensor;

/// `out[i] = table[ids[i]] · scale`; `table`: [V, D]; out [ids.len(), D]. An id ≥ V is an error naming it.
pub fn embedding(table: &HostTensor, ids: &[u32], scale: f32) -> Result<HostTensor> {
    table.expect_shape("embedding (table)", &[None, None])?;
    let (vocab, d) = (table.shape()[0], table.shape()[1]);
    let mut out = vec![0.0f32; ids.len() * d];
    for (i, &id) in ids.iter().enumerate() {
        let id = id as usize;
        if id >= vocab {
            return Err(Error::InvalidInput(format!(
                "token id {id} (position {i}) is outside the embedding table of {vocab} rows"
            )));
        }
        let row = &mut out[i * d..(i + 1) * d];
        // A 16-bit table (Gemma's is 590 M values) is widened a row at a time, never whole.
        match table.half() {
            Some(half) => half.widen_into(id * d, row),
            None => row.copy_from_slice(&table.data()[id * d..(id + 1) * d]),
        }
        row.iter_mut().for_each(|v| *v *= scale);
    }
    HostTensor::new(vec![ids.len(), d], out)
}
