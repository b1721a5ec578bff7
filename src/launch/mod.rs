//! Launch plans: shapes → grid, block, shared memory and the packed kernel arguments, shared by `cuda` and `emu`.
//! One file per `kernels/*.cu`; each kernel takes one `#[repr(C)]` params struct by value, declared identically in
//! its `.cu` file, so the emulated path runs the exact packing the GPU sees.

pub mod attention;
pub mod causal_attention;
pub mod conv;
pub mod conv3x3;
pub mod elementwise;
pub mod embed;
pub mod kernel;
pub mod layout;
pub mod linear_attn;
pub mod norm;
pub mod sampler;

pub use kernel::{Family, Kernel, KernelId};

/// Grid, block and dynamic shared memory of one launch. `#[repr(C)]`: the emulation entries read it as
/// `sana_emu::Geometry` (kernels/emu/emu.cuh).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Geometry {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_mem_bytes: u32,
}

impl Geometry {
    /// True when the grid has no blocks: there is nothing to launch (CUDA rejects a zero-sized grid).
    pub fn is_empty(&self) -> bool {
        self.grid.contains(&0)
    }
}

/// A kernel launch: where it runs and the argument struct it receives.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Plan<P> {
    pub geometry: Geometry,
    pub params: P,
}

impl<P> Plan<P> {
    /// The plan with `buffers`' addresses written into its params: the second half of a plan made from shapes
    /// alone (the ops whose output shape the plan computes, so that the output can be allocated in between).
    pub fn bind<B: Bind<P>>(mut self, buffers: B) -> Self {
        buffers.bind(&mut self.params);
        self
    }
}

/// Buffer addresses that a params struct planned from shapes alone takes before the launch.
pub trait Bind<P> {
    /// Writes the addresses into `params`' pointer fields.
    fn bind(self, params: &mut P);
}

/// Device (or, in emulation, host) addresses of a kernel's buffers, as the 64-bit integers the params structs hold.
pub type DevicePtr = u64;

/// Converts a size to the `u32` a params field holds, naming the quantity in the shape error when it does not fit.
pub(crate) fn to_u32(op: &'static str, what: &str, v: usize) -> crate::Result<u32> {
    u32::try_from(v)
        .map_err(|_| crate::Error::shape(op, format!("{what} = {v} does not fit in 32 bits")))
}
