//! Stream work: what a launch, copy, memset or matmul queues. It runs when the stream is drained (at a
//! synchronisation), or at every replay of a graph it was captured into, so it must be re-runnable and must check
//! its device pointers when it runs (memory may have been freed since it was queued).

use std::sync::Arc;

use crate::status::Fault;

/// The body of one piece of work.
pub type Run = Arc<dyn Fn() -> Result<(), Fault> + Send + Sync>;

/// One piece of stream work.
#[derive(Clone)]
pub struct Work {
    /// What it is, for fault messages (`kernel add_bf16`, `cublasLtMatmul 64×32×16`).
    pub label: String,
    pub run: Run,
}

impl Work {
    pub fn new(
        label: impl Into<String>,
        run: impl Fn() -> Result<(), Fault> + Send + Sync + 'static,
    ) -> Self {
        Self {
            label: label.into(),
            run: Arc::new(run),
        }
    }
}
