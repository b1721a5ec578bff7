//! The denoising loop as a CUDA graph. The first step runs eagerly: it runs cuBLASLt's heuristic for each GEMM shape
//! (src/engine/cuda/gemm.rs keeps the choice) and fills per-shape caches (the 2K/4K position embedding), none of
//! which belongs in a graph. The second is
//! captured — every launch, cuBLASLt GEMM, allocation and free of one step, both CFG halves as one batch — and the
//! graph is replayed for every remaining step. Steps read what changes (timestep, sampler coefficients) from the
//! device-side schedule (src/launch/sampler.rs), so the host only queues `cuGraphLaunch`: it never waits for the
//! GPU inside the loop except to report progress one step behind, when the next step is already queued.
//!
//! The graph's activations come from the driver's graph memory, laid out once at instantiation with reuse across
//! the step's ops (the preallocated arena of docs/design.md §7) and mapped when the graph is uploaded; the eager
//! step's memory goes back to the driver first, so the two never add up.
//!
//! A capture that fails (an op that needs the host, an illegal call) is abandoned — the stream leaves capture mode
//! whatever state the failure left it in — and every step runs eagerly, the reason in the report.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cudarc::driver::{result, sys, CudaEvent, CudaGraph, DriverError};

use super::probe;
use super::CudaDevice;
use crate::error::{Error, Result};
use crate::vocabulary::StepGraphReport;

/// A denoising step captured on the engine's stream, kept by the pipeline with the buffers it reads.
pub struct CudaStepGraph(CudaGraph);

// SAFETY: cudarc's `CudaGraph` holds raw driver handles, so it is neither `Send` nor `Sync`. The driver's graph
// handles may be used from any thread once the context is bound, which `launch` and `upload` do; the pipeline keeps
// a step graph inside the transformer's lock, so one thread at a time launches it.
unsafe impl Send for CudaStepGraph {}
// SAFETY: as above; `&CudaStepGraph` only reaches `launch` and `upload`, under that lock.
unsafe impl Sync for CudaStepGraph {}

/// What queues a step: a replay of the graph, or the step's ops one by one.
enum NextStep<'a> {
    Replay(&'a CudaGraph),
    Eager(&'a mut dyn FnMut() -> Result<()>),
}

impl CudaDevice {
    pub(super) fn replay_steps(
        &self,
        n: usize,
        step: &mut dyn FnMut() -> Result<()>,
        progress: &mut dyn FnMut(usize, usize) -> Result<()>,
    ) -> Result<Option<CudaStepGraph>> {
        let mut report = StepGraphReport::default();
        if n == 0 {
            return Ok(None);
        }
        step()?;
        report.eager = 1;
        let mut capture_time = Duration::ZERO;
        let captured = if n > 1 && self.step_graphs.load(Ordering::Relaxed) {
            let start = Instant::now();
            let captured = self.capture(step);
            capture_time += start.elapsed();
            Some(captured)
        } else {
            None
        };
        // The eager step has finished (the capture ran on the host meanwhile): its activations go back before the
        // upload maps the graph's, so the two working sets never add up.
        self.synchronize()?;
        self.pool.trim()?;
        let resident = self.pool.used_bytes()?;
        let graph = match captured {
            Some(Ok(graph)) => {
                let start = Instant::now();
                let uploaded = graph.upload();
                capture_time += start.elapsed();
                match uploaded {
                    Ok(()) => Some(graph),
                    Err(e) => {
                        drop(graph);
                        let mut why = probe::driver("uploading the step graph")(e).to_string();
                        if let Err(e) = self.ctx.check_err() {
                            why.push_str(&format!("; then, destroying it: {e}"));
                        }
                        report.capture_error = Some(why);
                        None
                    }
                }
            }
            Some(Err(e)) => {
                report.capture_error = Some(e.to_string());
                None
            }
            None => None,
        };
        report.capture_seconds = capture_time.as_secs_f64();
        let next = match &graph {
            Some(g) => NextStep::Replay(g),
            None => NextStep::Eager(step),
        };
        self.run_queued(1, n, next, progress, report, resident)?;
        Ok(graph.map(CudaStepGraph))
    }

    /// Runs all `n` steps by replaying a graph kept from an earlier loop, whose buffers now hold this loop's inputs.
    pub(super) fn replay_kept_steps(
        &self,
        graph: &CudaStepGraph,
        n: usize,
        progress: &mut dyn FnMut(usize, usize) -> Result<()>,
    ) -> Result<()> {
        let mut report = StepGraphReport {
            reused: true,
            ..StepGraphReport::default()
        };
        if n == 0 {
            return Ok(());
        }
        self.pool.trim()?;
        let resident = self.pool.used_bytes()?;
        // Maps the graph's memory again (the last loop's trim returned it), before the first replay needs it.
        let start = Instant::now();
        graph
            .0
            .upload()
            .map_err(probe::driver("uploading a kept step graph"))?;
        report.capture_seconds = start.elapsed().as_secs_f64();
        self.run_queued(0, n, NextStep::Replay(&graph.0), progress, report, resident)
    }

    /// Queues steps `done + 1..=n` and waits for them, then records the loop's report and peak memory (`resident`:
    /// pool memory in use beside the graph's) and returns the graph's memory to the driver for the next stage.
    fn run_queued(
        &self,
        done: usize,
        n: usize,
        mut next: NextStep<'_>,
        progress: &mut dyn FnMut(usize, usize) -> Result<()>,
        mut report: StepGraphReport,
        resident: u64,
    ) -> Result<()> {
        // A panic in the caller's progress callback is held until the queued steps have finished, as for a
        // cancellation: unwinding would otherwise destroy the graph and free the step's buffers under running work.
        let queued = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.queue_steps(done, n, &mut next, progress, &mut report)
        }));
        // Whatever stopped the loop (the end, an error, a cancellation), the queued steps finish before the graph
        // and its memory can be released: at most one step runs on after a cancellation.
        let finished = self.synchronize();
        let in_graph = self.graph_memory.peak_used_bytes();
        // What the graph's allocations mapped goes back (a kept graph maps it again at its next upload).
        let trimmed = self.graph_memory.trim();
        *self.step_graph.lock().unwrap_or_else(|p| p.into_inner()) = Some(report);
        let queued = queued.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        queued?;
        finished?;
        trimmed?;
        let mut peak = self.graph_peak.lock().unwrap_or_else(|p| p.into_inner());
        *peak = (*peak).max(resident + in_graph?);
        Ok(())
    }

    /// Queues steps `done + 1..=n` (graph replays, or eager steps without a graph), keeping one step queued ahead
    /// of the one being waited for, and reports each finished step to `progress` (whose error stops the queueing).
    fn queue_steps(
        &self,
        done: usize,
        n: usize,
        next: &mut NextStep<'_>,
        progress: &mut dyn FnMut(usize, usize) -> Result<()>,
        report: &mut StepGraphReport,
    ) -> Result<()> {
        if done > 0 {
            progress(done, n)?;
        }
        let mut pending: Option<CudaEvent> = None;
        for i in done..n {
            match next {
                NextStep::Replay(g) => {
                    g.launch()
                        .map_err(probe::driver(format!("replaying denoising step {}", i + 1)))?;
                    report.replayed += 1;
                }
                NextStep::Eager(step) => {
                    step()?;
                    report.eager += 1;
                }
            }
            let queued = self
                .stream
                .record_event(None)
                .map_err(probe::driver("recording a step event"))?;
            if let Some(previous) = pending.replace(queued) {
                previous
                    .synchronize()
                    .map_err(probe::driver(format!("waiting for denoising step {i}")))?;
                progress(i, n)?;
            }
        }
        if let Some(last) = pending {
            last.synchronize()
                .map_err(probe::driver("waiting for the last denoising step"))?;
            progress(n, n)?;
        }
        Ok(())
    }

    /// Records one call of `step` as an instantiated graph (uploaded later, once the eager step's memory is back).
    /// Nothing runs during capture, so a failed capture leaves the device state as it was; whatever failed, the
    /// stream leaves capture mode, so the steps can run eagerly.
    fn capture(&self, step: &mut dyn FnMut() -> Result<()>) -> Result<CudaGraph> {
        self.stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(probe::driver("starting the step graph capture"))?;
        let recorded = step();
        // An op that fails inside the capture invalidates it, and the buffers its step drops on the way out then
        // fail to free into the capture; cudarc stores such errors from `Drop` in the context and returns them from
        // its next call — `end_capture` included, before it reaches the driver, which would leave the stream
        // capturing for good. Take the stored error out first (the step's own error says what went wrong).
        let dropped = self.ctx.check_err();
        let ended = match (&recorded, dropped) {
            (Ok(()), Ok(())) => self
                .stream
                .end_capture(sys::CUgraphInstantiate_flags(0))
                .map_err(probe::driver("ending the step graph capture")),
            (Ok(()), Err(e)) => Err(probe::driver(
                "freeing a buffer inside the step graph capture",
            )(e)),
            (Err(_), _) => Ok(None),
        };
        let closed = self.close_capture();
        let graph = recorded.and(ended).and_then(|graph| {
            graph.ok_or_else(|| Error::Cuda {
                during: "capturing the denoising step".into(),
                detail: "the step queued no work".into(),
            })
        });
        match (graph, closed) {
            (Ok(graph), Ok(())) => Ok(graph),
            (graph, closed) => {
                // The first error says what went wrong; then what the cleanup raised: ending the capture, or
                // destroying and freeing what the failed capture left (cudarc records those errors in the context,
                // where the next call would find them).
                let mut why: Vec<String> = [graph.err(), closed.err()]
                    .into_iter()
                    .flatten()
                    .map(|e| e.to_string())
                    .collect();
                if let Err(e) = self.ctx.check_err() {
                    why.push(format!("cleaning up: {e}"));
                }
                Err(Error::Cuda {
                    during: "capturing the denoising step".into(),
                    detail: why.join("; then, "),
                })
            }
        }
    }

    /// Ends the stream's capture through the driver if it is still open — after a failed op, or when cudarc's
    /// `end_capture` returned before reaching the driver — and destroys any graph that returns.
    fn close_capture(&self) -> Result<()> {
        let cu_stream = self.stream.cu_stream();
        // Bind without cudarc's `bind_to_thread`, which would first return an error stored by a `Drop`.
        // SAFETY: the engine's live context and stream; the capture, if any, was begun on this thread.
        unsafe {
            result::ctx::set_current(self.ctx.cu_ctx())
                .map_err(probe::driver("binding the context to end a capture"))?;
            let status = result::stream::is_capturing(cu_stream)
                .map_err(probe::driver("querying the stream's capture status"))?;
            if status == sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE {
                return Ok(());
            }
            match result::stream::end_capture(cu_stream) {
                Ok(graph) if !graph.is_null() => result::graph::destroy(graph)
                    .map_err(probe::driver("destroying an abandoned step graph")),
                // An invalidated capture ends with no graph and this error: the capture is over either way.
                Ok(_) | Err(DriverError(sys::CUresult::CUDA_ERROR_STREAM_CAPTURE_INVALIDATED)) => {
                    Ok(())
                }
                Err(e) => Err(probe::driver("ending an abandoned step graph capture")(e)),
            }
        }
    }
}
