//! The tensors of a [`super::KernelEngine`]: a device buffer with its shape, in the storage dtype
//! ([`DeviceTensor`]) or in f32 for the sampler ([`DeviceState`]).

/// A dense row-major tensor in the engine's storage dtype. Immutable once an op has written it: ops return new
/// tensors, so a buffer is never read and written by the same launch.
pub struct DeviceTensor<B> {
    pub(crate) buf: B,
    pub(crate) shape: Vec<usize>,
}

impl<B> DeviceTensor<B> {
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
}

/// An f32 tensor of the sampler: latents, the previous clean estimate, the step schedule. Ops update it in place,
/// so its address — what a captured graph holds — never changes.
pub struct DeviceState<B> {
    pub(crate) buf: B,
    pub(crate) shape: Vec<usize>,
}

impl<B> DeviceState<B> {
    /// The state's shape, outermost axis first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements: the product of the shape.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the state has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
