//! The kernels nvcc compiled at build time (build.rs), embedded in the binary: PTX for compute_80, which the driver
//! JIT-compiles for any GPU from sm_80 on, and an sm_90 cubin where nvcc produced one. Built without nvcc, every
//! constant is `None` and `ptx` returns `Error::KernelsNotBuilt`.

use crate::error::{Error, Result};

include!(concat!(env!("OUT_DIR"), "/kernels.rs"));

/// One `kernels/*.cu` file: a module of related kernels loaded together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// kernels/norm.cu: `layer_norm_modulate_{f32,bf16,f16}`.
    Norm,
}

impl Family {
    pub const ALL: [Family; 1] = [Family::Norm];

    /// The file stem under kernels/.
    pub fn name(self) -> &'static str {
        match self {
            Family::Norm => "norm",
        }
    }
}

/// PTX text of `family`.
pub fn ptx(family: Family) -> Result<&'static str> {
    match family {
        Family::Norm => NORM_PTX,
    }
    .ok_or(Error::KernelsNotBuilt)
}

/// sm_90 cubin of `family`, when nvcc produced one (load it on sm_90 devices to skip the PTX JIT).
pub fn sm90_cubin(family: Family) -> Option<&'static [u8]> {
    match family {
        Family::Norm => NORM_SM90_CUBIN,
    }
}
