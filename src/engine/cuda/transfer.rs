//! Host ↔ device copies. Weights go from the memory-mapped checkpoint through one pinned staging buffer, converted
//! to the storage dtype chunk by chunk on the way, so a checkpoint is never copied whole into host memory.

use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaContext, CudaSlice, CudaStream, PinnedHostSlice};
use half::{bf16, f16};
use safetensors::tensor::Dtype;

use crate::engine::emu::{Storage, StorageDtype};
use crate::error::{Error, Result};
use crate::weights::TensorView;

/// Bytes of the pinned staging buffer: large enough that the per-chunk synchronisation is amortised.
const STAGING_BYTES: usize = 64 << 20;

fn cuda(during: &str) -> impl FnOnce(cudarc::driver::DriverError) -> Error + '_ {
    move |e| Error::Cuda {
        during: during.to_string(),
        detail: e.to_string(),
    }
}

pub struct Staging {
    buf: Mutex<PinnedHostSlice<u8>>,
}

impl Staging {
    pub fn new(ctx: &Arc<CudaContext>) -> Result<Self> {
        // SAFETY: the pinned buffer is written before any byte of it is read (by `fill`).
        let buf = unsafe { ctx.alloc_pinned::<u8>(STAGING_BYTES) }
            .map_err(cuda("allocating the pinned staging buffer"))?;
        Ok(Self {
            buf: Mutex::new(buf),
        })
    }

    /// Copies `view`'s elements, converted to `dtype`, into `dst` (which holds exactly that many elements).
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
        let mut staging = self.buf.lock().unwrap_or_else(|p| p.into_inner());
        let chunk_elems = STAGING_BYTES / 4;
        let bytes = view.bytes();
        let n = bytes.len() / src_size;
        let mut start = 0;
        while start < n {
            let end = (start + chunk_elems).min(n);
            let src = &bytes[start * src_size..end * src_size];
            let out_len = (end - start) * dtype.size();
            {
                let host = staging
                    .as_mut_slice()
                    .map_err(cuda("mapping the staging buffer"))?;
                convert(src, view.dtype(), dtype, &mut host[..out_len]);
            }
            let host = staging
                .as_slice()
                .map_err(cuda("mapping the staging buffer"))?;
            let mut dst_view = dst.slice_mut(start * dtype.size()..end * dtype.size());
            stream
                .memcpy_htod(&host[..out_len], &mut dst_view)
                .map_err(cuda("copying weights to the device"))?;
            // The copy from pinned memory is asynchronous: finish it before the buffer is refilled.
            stream
                .synchronize()
                .map_err(cuda("copying weights to the device"))?;
            start = end;
        }
        Ok(())
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

/// f32 values as the bytes of `dtype`.
pub fn to_bytes(data: &[f32], dtype: StorageDtype) -> Vec<u8> {
    match Storage::from_f32(dtype, data) {
        Storage::F32(v) => bytemuck::cast_slice(&v).to_vec(),
        Storage::Bf16(v) => bytemuck::cast_slice(&v).to_vec(),
        Storage::F16(v) => bytemuck::cast_slice(&v).to_vec(),
    }
}

/// Bytes of `dtype` widened to f32.
pub fn from_bytes(bytes: &[u8], dtype: StorageDtype) -> Vec<f32> {
    match dtype {
        StorageDtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        StorageDtype::Bf16 => bytes
            .chunks_exact(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        StorageDtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
    }
}
