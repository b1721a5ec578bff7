//! `CudaTensor`: a dense row-major device buffer in the engine's storage dtype, with its shape.

use cudarc::driver::{CudaSlice, CudaStream, DevicePtr as _};

use crate::launch::DevicePtr;

/// A device tensor. Immutable once an op has written it: ops return new tensors, so a buffer is never read and
/// written by the same launch.
pub struct CudaTensor {
    pub(super) buf: CudaSlice<u8>,
    pub(super) shape: Vec<usize>,
}

impl CudaTensor {
    /// The tensor's shape, outermost axis first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements: the product of the shape.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Device address for a kernel's params struct. Event tracking is off (one stream), so the guard cudarc returns
    /// records nothing and can be dropped at once.
    pub(super) fn ptr(&self, stream: &CudaStream) -> DevicePtr {
        let (p, _guard) = self.buf.device_ptr(stream);
        p
    }
}
