//! What a denoising loop reports about how it ran.

/// How the last denoising loop ran on the device.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepGraphReport {
    /// Steps run by replaying the captured graph.
    pub replayed: usize,
    /// Steps queued op by op (the first, and every one if capture failed).
    pub eager: usize,
    /// Why the capture failed, when it did (an op that needs the host; the steps then run eagerly).
    pub capture_error: Option<String>,
    /// Host time to capture and instantiate the graph (while the eager first step runs on the GPU) and to upload it
    /// (after that step, once its memory is back in the pool); for a reused graph, the upload alone.
    pub capture_seconds: f64,
    /// Every step replayed a graph kept from an earlier loop of the same shape (the engine's
    /// `replay_step_graph`): nothing was captured and no step ran eagerly.
    pub reused: bool,
}
