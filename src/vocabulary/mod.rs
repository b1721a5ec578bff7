//! The words every layer of the crate shares: the storage dtype, the activations, the causal-attention parameters,
//! the samplers' step rules with the step-schedule format, and the report of a denoising loop. Model code, engines,
//! kernels' launch plans and the pipeline all import from here; this module imports nothing of ours but the two
//! modules below everything, `error` and `tensor` (tools/module_cycles.py checks it, with the rest of the module
//! graph).

mod activation;
mod causal_attention;
mod dtype;
mod loop_report;
pub mod schedule;

pub use activation::Activation;
pub use causal_attention::CausalAttention;
pub use dtype::StorageDtype;
pub use loop_report::StepGraphReport;
pub use schedule::{Guidance, StepRule};
