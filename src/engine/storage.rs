//! Element types of stored tensors, shared by the devices that store activations in 16 bits (the cuda and the
//! emulation engines): the dtype, and a host buffer in it.

use half::{bf16, f16};

use crate::vocabulary::StorageDtype;

/// A buffer in a storage dtype: what a device buffer holds on the GPU. Conversions from f32 round to nearest even,
/// as CUDA's `__float2bfloat16_rn` / `__float2half_rn` do.
#[derive(Clone, Debug, PartialEq)]
pub enum Storage {
    /// f32 values.
    F32(Vec<f32>),
    /// bf16 values.
    Bf16(Vec<bf16>),
    /// f16 values.
    F16(Vec<f16>),
}

impl Storage {
    /// `data` rounded to `dtype` (to nearest even).
    pub fn from_f32(dtype: StorageDtype, data: &[f32]) -> Self {
        match dtype {
            StorageDtype::F32 => Storage::F32(data.to_vec()),
            StorageDtype::Bf16 => Storage::Bf16(data.iter().map(|&v| bf16::from_f32(v)).collect()),
            StorageDtype::F16 => Storage::F16(data.iter().map(|&v| f16::from_f32(v)).collect()),
        }
    }

    /// The values widened to f32 (exact).
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            Storage::F32(v) => v.clone(),
            Storage::Bf16(v) => v.iter().map(|x| x.to_f32()).collect(),
            Storage::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
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
