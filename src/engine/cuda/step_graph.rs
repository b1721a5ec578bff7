//! The denoising loop as a CUDA graph. The first step runs eagerly: it loads kernels, runs cuBLASLt's heuristics
//! and fills per-shape caches (the 2K/4K position embedding), none of which belongs in a graph. The second is
//! captured — every launch, cuBLASLt GEMM, allocation and free of one step, both CFG halves as one batch — and the
//! graph is replayed for every remaining step. Steps read what changes (timestep, sampler coefficients) from the
//! device-side schedule (src/launch/sampler.rs), so the host only queues `cuGraphLaunch`: it never waits for the
//! GPU inside the loop except to report progress one step behind, when the next step is already queued.
//!
//! The graph's activations come from the driver's graph memory, laid out once at instantiation with reuse across
//! the step's ops (the preallocated arena of ../shared/DESIGN.md); the eager step's memory goes back to the pool's
//! owner first, so the two never add up.

use std::sync::atomic::Ordering;
use std::time::Instant;

use cudarc::driver::{sys, CudaEvent, CudaGraph};

use super::CudaEngine;
use crate::error::{Error, Result};
use crate::gpu::probe;

/// How the last denoising loop ran on the device.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepGraphReport {
    /// Steps run by replaying the captured graph.
    pub replayed: usize,
    /// Steps queued op by op (the first, and every one if capture failed).
    pub eager: usize,
    /// Why the capture failed, when it did (an op that needs the host; the steps then run eagerly).
    pub capture_error: Option<String>,
    /// Host time to capture, instantiate and upload the graph (it overlaps the eager first step on the GPU).
    pub capture_seconds: f64,
}

impl CudaEngine {
    pub(super) fn replay_steps(
        &self,
        n: usize,
        step: &mut dyn FnMut() -> Result<()>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<()> {
        let mut report = StepGraphReport::default();
        if n == 0 {
            return Ok(());
        }
        step()?;
        report.eager = 1;
        let graph = if n > 1 && self.step_graphs.load(Ordering::Relaxed) {
            let start = Instant::now();
            let graph = self
                .capture(step)
                .map_err(|e| report.capture_error = Some(e.to_string()))
                .ok();
            report.capture_seconds = start.elapsed().as_secs_f64();
            graph
        } else {
            None
        };
        // The eager step has finished (the capture ran on the host meanwhile): its activations go back before the
        // graph's are mapped.
        self.synchronize()?;
        self.pool.trim()?;
        progress(1, n);
        let resident = self.pool.used_bytes()?;
        let mut pending: Option<CudaEvent> = None;
        for i in 1..n {
            match &graph {
                Some(g) => {
                    g.launch()
                        .map_err(probe::driver(format!("replaying denoising step {}", i + 1)))?;
                    report.replayed += 1;
                }
                None => {
                    step()?;
                    report.eager += 1;
                }
            }
            let done = self
                .stream
                .record_event(None)
                .map_err(probe::driver("recording a step event"))?;
            if let Some(previous) = pending.replace(done) {
                previous
                    .synchronize()
                    .map_err(probe::driver(format!("waiting for denoising step {i}")))?;
                progress(i, n);
            }
        }
        if let Some(last) = pending {
            last.synchronize()
                .map_err(probe::driver("waiting for the last denoising step"))?;
            progress(n, n);
        }
        let in_graph = self.graph_memory.peak_used_bytes()?;
        drop(graph);
        self.graph_memory.trim()?;
        let mut peak = self.graph_peak.lock().unwrap_or_else(|p| p.into_inner());
        *peak = (*peak).max(resident + in_graph);
        *self.step_graph.lock().unwrap_or_else(|p| p.into_inner()) = Some(report);
        Ok(())
    }

    /// Records one call of `step` as a graph, instantiated and uploaded. Nothing runs during capture, so a failed
    /// capture leaves the state as it was.
    fn capture(&self, step: &mut dyn FnMut() -> Result<()>) -> Result<CudaGraph> {
        self.stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(probe::driver("starting the step graph capture"))?;
        let recorded = step();
        // End the capture whatever happened, so the stream is usable again.
        let ended = self.stream.end_capture(sys::CUgraphInstantiate_flags(0));
        recorded?;
        let graph = ended
            .map_err(probe::driver("capturing the denoising step"))?
            .ok_or_else(|| Error::Cuda {
                during: "capturing the denoising step".into(),
                detail: "the step queued no work".into(),
            })?;
        graph
            .upload()
            .map_err(probe::driver("uploading the step graph"))?;
        Ok(graph)
    }

    /// Whether denoising loops capture their step as a CUDA graph (the default) or queue every step op by op — the
    /// same kernels, so the results are identical; for comparison and debugging.
    pub fn use_step_graphs(&self, on: bool) {
        self.step_graphs.store(on, Ordering::Relaxed);
    }
}
