//! The element type tensors are stored in.

/// Element type of activations and weights as the kernels store them; arithmetic is always f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageDtype {
    /// IEEE single precision, 4 bytes.
    F32,
    /// bfloat16 (8-bit exponent, 7-bit mantissa), 2 bytes.
    Bf16,
    /// IEEE half precision (5-bit exponent, 10-bit mantissa), 2 bytes.
    F16,
}

impl StorageDtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            StorageDtype::F32 => 4,
            StorageDtype::Bf16 | StorageDtype::F16 => 2,
        }
    }
}
