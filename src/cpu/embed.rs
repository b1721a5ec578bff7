//! Reference token embedding: a row gather from the table, times a scale (Gemma's `√hidden` normalizer).

use crate::error::{Error, Result};
use crate::tensor::HostTensor;

/// `out[i] = table[ids[i]] · scale`; `table`: [V, D]; out [ids.len(), D]. An id ≥ V is an error naming it.
pub fn embedding(table: &HostTensor, ids: &[u32], scale: f32) -> Result<HostTensor> {
    table.expect_shape("embedding (table)", &[None, None])?;
    let (vocab, d) = (table.shape()[0], table.shape()[1]);
    let mut out = Vec::with_capacity(ids.len() * d);
    for (i, &id) in ids.iter().enumerate() {
        let id = id as usize;
        if id >= vocab {
            return Err(Error::InvalidInput(format!(
                "token id {id} (position {i}) is outside the embedding table of {vocab} rows"
            )));
        }
        out.extend(
            table.data()[id * d..(id + 1) * d]
                .iter()
                .map(|&v| v * scale),
        );
    }
    HostTensor::new(vec![ids.len(), d], out)
}
