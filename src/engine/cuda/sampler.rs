//! The sampler's f32 state on the device and the kernels/sampler.cu ops over it: with these the denoising step is
//! pure device work (no copy back, no host arithmetic), which [`super::step_graph`] captures once and replays.

use cudarc::driver::{CudaSlice, DevicePtrMut as _};

use super::embedded::Family;
use super::probe;
use super::{CudaEngine, CudaTensor};
use crate::engine::cuda::transfer;
use crate::engine::StorageDtype;
use crate::error::{Error, Result};
use crate::launch::sampler::{self as plan, FlowStepBuffers};
use crate::launch::DevicePtr;
use crate::tensor::HostTensor;
use crate::vocabulary::schedule as table;

/// An f32 device tensor of the sampler: latents, the previous clean estimate, the step schedule. Ops update it in
/// place, so its address — what a captured graph holds — never changes.
pub struct CudaState {
    buf: CudaSlice<u8>,
    shape: Vec<usize>,
}

impl CudaState {
    /// The state's shape, outermost axis first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn len(&self) -> usize {
        self.shape.iter().product()
    }

    fn ptr(&self, e: &CudaEngine) -> DevicePtr {
        use cudarc::driver::DevicePtr as _;
        self.buf.device_ptr(&e.stream).0
    }

    fn ptr_mut(&mut self, e: &CudaEngine) -> DevicePtr {
        self.buf.device_ptr_mut(&e.stream).0
    }
}

impl CudaEngine {
    pub(super) fn state_upload(&self, t: &HostTensor) -> Result<CudaState> {
        let bytes = transfer::to_bytes(t.data(), StorageDtype::F32);
        let mut buf = self.scratch_f32(t.len())?;
        if !bytes.is_empty() {
            self.stream
                .memcpy_htod(&bytes, &mut buf)
                .map_err(probe::driver("copying sampler state to the device"))?;
        }
        Ok(CudaState {
            buf,
            shape: t.shape().to_vec(),
        })
    }

    pub(super) fn state_overwrite(&self, dst: &mut CudaState, src: &HostTensor) -> Result<()> {
        if dst.shape != src.shape() {
            return Err(Error::shape(
                "overwrite_state",
                format!("copying {:?} into {:?}", src.shape(), dst.shape),
            ));
        }
        let bytes = transfer::to_bytes(src.data(), StorageDtype::F32);
        if bytes.is_empty() {
            return Ok(());
        }
        let mut head = dst.buf.slice_mut(0..bytes.len());
        self.stream
            .memcpy_htod(&bytes, &mut head)
            .map_err(probe::driver("copying sampler state to the device"))
    }

    pub(super) fn state_download(&self, s: &CudaState) -> Result<HostTensor> {
        let mut bytes = vec![0u8; s.len() * 4];
        if !bytes.is_empty() {
            let src = s.buf.slice(0..bytes.len());
            self.stream
                .memcpy_dtoh(&src, &mut bytes)
                .map_err(probe::driver("copying sampler state to the host"))?;
        }
        self.synchronize()?;
        HostTensor::new(
            s.shape.clone(),
            transfer::from_bytes(&bytes, StorageDtype::F32),
        )
    }

    pub(super) fn sampler_model_input(
        &self,
        x: &CudaState,
        copies: usize,
        schedule: &CudaState,
    ) -> Result<CudaTensor> {
        let steps = table::steps_of(&schedule.shape)?;
        let mut shape = x.shape.clone();
        let first = shape
            .first_mut()
            .ok_or_else(|| Error::shape("model_input", "a 0-d sample"))?;
        *first *= copies;
        let out = self.alloc(shape)?;
        let p = plan::model_input(
            x.len(),
            copies,
            steps,
            (self.ptr(&out), x.ptr(self), schedule.ptr(self)),
        )?;
        // SAFETY: x holds len f32 values and out copies·len storage elements; the schedule holds `steps` rows.
        unsafe { self.launch(Family::Sampler, "model_input", &p) }?;
        Ok(out)
    }

    pub(super) fn sampler_step_sinusoid(
        &self,
        schedule: &CudaState,
        batch: usize,
        channels: usize,
    ) -> Result<CudaTensor> {
        let steps = table::steps_of(&schedule.shape)?;
        let out = self.alloc(vec![batch, channels])?;
        let p = plan::step_sinusoid(batch, channels, steps, (self.ptr(&out), schedule.ptr(self)))?;
        // SAFETY: the schedule holds 1 + steps·ROW values (the kernel reads a row only below `steps`); out holds
        // batch·channels elements.
        unsafe { self.launch(Family::Sampler, "step_sinusoid", &p) }?;
        Ok(out)
    }

    pub(super) fn sampler_flow_step(
        &self,
        schedule: &CudaState,
        output: &CudaTensor,
        guidance: crate::vocabulary::Guidance,
        noise: Option<&CudaState>,
        x: &mut CudaState,
        x0_prev: &mut CudaState,
    ) -> Result<()> {
        if x.shape != x0_prev.shape {
            return Err(Error::shape(
                "flow_step",
                format!(
                    "sample {:?} and x0_prev {:?} differ",
                    x.shape, x0_prev.shape
                ),
            ));
        }
        let steps = table::steps_of(&schedule.shape)?;
        let buffers = FlowStepBuffers {
            x: x.ptr_mut(self),
            x0_prev: x0_prev.ptr_mut(self),
            output: self.ptr(output),
            schedule: schedule.ptr(self),
            noise: noise.map(|n| (n.ptr(self), n.len())),
        };
        let p = plan::flow_step(&x.shape, output.shape(), guidance, steps, buffers)?;
        // SAFETY: the plan checked the output against the sample and the noise (when given) against steps × the
        // sample; x0_prev has the sample's shape; the schedule holds `steps` rows. An SCM row without noise cannot
        // be told apart here (the rows live on the device): the pipeline passes noise with every SCM schedule.
        unsafe { self.launch(Family::Sampler, "flow_step", &p) }
    }

    pub(super) fn sampler_advance(&self, schedule: &mut CudaState) -> Result<()> {
        table::steps_of(&schedule.shape)?;
        let p = plan::advance_schedule(schedule.ptr_mut(self));
        // SAFETY: the schedule holds at least its index element.
        unsafe { self.launch(Family::Sampler, "advance_schedule", &p) }
    }
}
