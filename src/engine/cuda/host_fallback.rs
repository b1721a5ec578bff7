//! Ops without a CUDA kernel yet: the CPU reference on downloaded inputs, its result rounded to the storage dtype
//! on upload — what the emulation engine does for the same ops, so both engines agree while the kernels are written.
//! Each call synchronises the stream; none of these ops sits in the denoising loop.

use super::{CudaEngine, CudaTensor};
use crate::engine::Engine;
use crate::error::Result;
use crate::tensor::HostTensor;

impl CudaEngine {
    pub(super) fn host(
        &self,
        inputs: &[&CudaTensor],
        op: impl FnOnce(&[HostTensor]) -> Result<HostTensor>,
    ) -> Result<CudaTensor> {
        let host = inputs
            .iter()
            .map(|t| self.download(t))
            .collect::<Result<Vec<_>>>()?;
        self.upload(&op(&host)?)
    }
}
