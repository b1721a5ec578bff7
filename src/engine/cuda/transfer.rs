//! Host ↔ device copies. Weights go from the memory-mapped checkpoint through two pinned staging buffers, converted
//! to the storage dtype chunk by chunk on the way, so a checkpoint is never copied whole into host memory: while the
//! copy engine moves one buffer to the device, the host converts the next chunk into the other.

use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaContext, CudaEvent, CudaSlice, CudaStream, PinnedHostSlice};
use half::{bf16, f16};
use safetensors::tensor::Dtype;

use crate::engine::StorageDtype;
use crate::error::{Error, Result};
use crate::weights::TensorView;

/// Bytes of each pinned staging buffer: large enough that a chunk's conversion and copy dwarf their overheads.
const STAGING_BYTES: usize = 32 << 20;

fn cuda(during: &str) -> impl FnOnce(cudarc::driver::DriverError) -> Error + '_ {
    move |e| Error::Cuda {
        during: during.to_string(),
        detail: e.to_string(),
    }
}

/// One pinned buffer and the event recorded after the last copy out of it.
struct Slot {
    buf: PinnedHostSlice<u8>,
    copied: CudaEvent,
}

struct Slots {
    slots: [Slot; 2],
    /// The slot the next chunk goes through.
    next: usize,
}

pub struct Staging {
    slots: Mutex<Slots>,
}

impl Staging {
    pub fn new(ctx: &Arc<CudaContext>) -> Result<Self> {
        let slot = || -> Result<Slot> {
            Ok(Slot {
                // SAFETY: each chunk is written into the buffer before the copy that reads it is queued.
                buf: unsafe { ctx.alloc_pinned::<u8>(STAGING_BYTES) }
                    .map_err(cuda("allocating a pinned staging buffer"))?,
                // Never recorded yet: waiting on it returns at once.
                copied: ctx
                    .new_event(None)
                    .map_err(cuda("creating a staging event"))?,
            })
        };
        Ok(Self {
            slots: Mutex::new(Slots {
                slots: [slot()?, slot()?],
                next: 0,
            }),
        })
    }

    /// Queues the copy of `view`'s elements, converted to `dtype`, into `dst` (which holds exactly that many
    /// elements) on `stream`. It returns with the last chunk's copy possibly still in flight — the stream orders it
    /// before any later work on `dst` — and a buffer is refilled only after its previous copy has completed.
    pub fn load(
        &self,
        stream: &Arc<CudaStream>,
        view: &TensorView<'_>,
        dtype: StorageDtype,
        dst: &mut CudaSlice<u8>,
    ) -> Result<()> {
        let src_size = match view.dtype() {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
            other => {
                return Err(Error::UnsupportedDtype {
                    name: view.name().to_string(),
                    location: view.location().display().to_string(),
                    dtype: format!("{other:?}"),
                    supported: "F32, F16, BF16",
                })
            }
        };
        let mut guard = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let Slots { slots, next } = &mut *guard;
        // Output elements are at most 4 bytes (f32 storage).
        let chunk_elems = STAGING_BYTES / 4;
        let bytes = view.bytes();
        let n = bytes.len() / src_size;
        let mut start = 0;
        while start < n {
            let end = (start + chunk_elems).min(n);
            let src = &bytes[start * src_size..end * src_size];
            let out_len = (end - start) * dtype.size();
            let slot = &mut slots[*next];
            // The buffer's previous copy must have read it before it is overwritten.
            slot.copied
                .synchronize()
                .map_err(cuda("waiting for a staging buffer"))?;
            let host = slot
                .buf
                .as_mut_slice()
                .map_err(cuda("mapping a staging buffer"))?;
            convert(src, view.dtype(), dtype, &mut host[..out_len]);
            let mut dst_view = dst.slice_mut(start * dtype.size()..end * dtype.size());
            // From pinned memory the copy is asynchronous: it reads the buffer after this call returns.
            stream
                .memcpy_htod(&host[..out_len], &mut dst_view)
                .map_err(cuda("copying weights to the device"))?;
            slot.copied
                .record(stream)
                .map_err(cuda("recording a staging event"))?;
            *next = 1 - *next;
            start = end;
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        // The pinned buffers are freed after this: no copy may still be reading them. An error here means the
        // context is already failing; the frees that follow report nothing either.
        let slots = self.slots.get_mut().unwrap_or_else(|p| p.into_inner());
        for slot in &slots.slots {
            let _ = slot.copied.synchronize();
        }
    }
}

/// Converts little-endian `src` of dtype `from` to `to`, rounding to nearest even as the kernels do.
fn convert(src: &[u8], from: Dtype, to: StorageDtype, out: &mut [u8]) {
    let same = matches!(
        (from, to),
        (Dtype::F32, StorageDtype::F32)
            | (Dtype::BF16, StorageDtype::Bf16)
            | (Dtype::F16, StorageDtype::F16)
    );
    if same {
        out.copy_from_slice(src);
        return;
    }
    let value = |i: usize| -> f32 {
        match from {
            Dtype::F32 => {
                f32::from_le_bytes([src[4 * i], src[4 * i + 1], src[4 * i + 2], src[4 * i + 3]])
            }
            Dtype::F16 => f16::from_le_bytes([src[2 * i], src[2 * i + 1]]).to_f32(),
            _ => bf16::from_le_bytes([src[2 * i], src[2 * i + 1]]).to_f32(),
        }
    };
    let size = to.size();
    for (i, o) in out.chunks_exact_mut(size).enumerate() {
        let v = value(i);
        match to {
            StorageDtype::F32 => o.copy_from_slice(&v.to_le_bytes()),
            StorageDtype::Bf16 => o.copy_from_slice(&bf16::from_f32(v).to_le_bytes()),
            StorageDtype::F16 => o.copy_from_slice(&f16::from_f32(v).to_le_bytes()),
        }
    }
}
