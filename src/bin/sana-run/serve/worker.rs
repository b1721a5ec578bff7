//! One worker per device: a thread that owns that device's resident models and runs the batcher's generations one
//! after another, off the async runtime. Each merged request gets its own images back, in its own seeds.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sana::lora::LoraMode;
use sana::{Control, Event, Request, Sana, Stage};

use super::adapters::{AdapterChoice, AdapterLibrary};
use super::log;
use super::metrics::{GenerationRecord, Metrics, StepGraphUse};
use super::queue::{BatchKey, Job, Queue};

/// What a request gets back from its worker.
pub type JobResult = Result<JobOutput, JobError>;

pub struct JobOutput {
    /// PNG bytes and seed of each image, in order.
    pub images: Vec<(Vec<u8>, u64)>,
    /// Images in the generation this request shared.
    pub batch_images: usize,
    pub device: String,
    pub queue_wait: Duration,
    pub text_encode: Duration,
    pub denoise: Duration,
    pub decode: Duration,
    /// On a GPU, how the denoising steps ran: `captured` (the first step eager, the rest replays of a graph
    /// captured then), `reused` (replays of the graph kept from an earlier request of this size) or `eager` (no
    /// graph).
    pub step_graph: Option<&'static str>,
}

#[derive(Clone)]
pub enum JobError {
    /// Cancelled at the shutdown deadline.
    Aborted,
    /// A real fault, in `stage`.
    Failed {
        stage: &'static str,
        message: String,
    },
}

pub struct Worker {
    pub device: String,
    pub sana: Arc<Sana>,
    pub queue: Arc<Queue>,
    pub metrics: Arc<Metrics>,
    /// Set at the shutdown deadline: the running generation is cancelled.
    pub abort: Arc<AtomicBool>,
    pub adapters: Arc<AdapterLibrary>,
    pub max_batch: usize,
    pub batch_window: Duration,
}

impl Worker {
    /// Runs batches until the queue is closed and empty.
    pub fn run(self) {
        // The adapters applied now: unmerged, so a batch with other adapters swaps only their small factors.
        let mut applied: Vec<AdapterChoice> = Vec::new();
        while let Some(batch) = self.queue.next_batch(self.max_batch, self.batch_window) {
            self.generate(batch, &mut applied);
        }
    }

    /// Makes `wanted` the applied adapters, when they are not already (a failure changes nothing).
    fn apply_adapters(
        &self,
        wanted: &[AdapterChoice],
        applied: &mut Vec<AdapterChoice>,
    ) -> sana::Result<()> {
        if wanted != applied.as_slice() {
            self.sana
                .set_adapters(&self.adapters.resolve(wanted), LoraMode::Unmerged)?;
            *applied = wanted.to_vec();
        }
        Ok(())
    }

    fn generate(&self, batch: Vec<Job>, applied: &mut Vec<AdapterChoice>) {
        let started = Instant::now();
        let request = merged_request(&batch);
        let images = batch.iter().map(|j| j.request.n).sum();
        let mut stage = "lora";
        let wanted = &batch[0].key.lora;
        let result = self.apply_adapters(wanted, applied).and_then(|()| {
            stage = "text encode";
            self.sana.generate_with(&request, |event| {
                if let Event::Stage { stage: s } = event {
                    stage = stage_name(s);
                }
                let everyone_left = batch.iter().all(Job::is_cancelled);
                if everyone_left || self.abort.load(Ordering::Relaxed) {
                    Control::Cancel
                } else {
                    Control::Continue
                }
            })
        });
        let generation = match result {
            Ok(g) => g,
            Err(err) => {
                let error = match err {
                    sana::Error::Cancelled => JobError::Aborted,
                    err => {
                        let ids: Vec<_> = batch.iter().map(|j| format!("req-{}", j.id)).collect();
                        log::event(
                            "generation_failed",
                            serde_json::json!({
                                "device": self.device, "stage": stage, "error": err.to_string(), "requests": ids,
                            }),
                        );
                        JobError::Failed {
                            stage,
                            message: err.to_string(),
                        }
                    }
                };
                for job in batch {
                    let _ = job.reply.send(Err(error.clone()));
                }
                return;
            }
        };
        let t = generation.times;
        let report = self.sana.step_graph_report();
        let step_graph = report.as_ref().map(|r| {
            if r.capture_error.is_some() {
                "eager"
            } else if r.reused {
                "reused"
            } else {
                "captured"
            }
        });
        self.metrics.generation(&GenerationRecord {
            device: &self.device,
            images,
            text_encode: t.text_encode.time,
            denoise: t.denoise.time,
            decode: t.decode.time,
            total: started.elapsed(),
            peak_device_bytes: [t.text_encode, t.denoise, t.decode]
                .iter()
                .filter_map(|s| s.peak_device_bytes)
                .max(),
            step_graph: report.filter(|r| r.capture_error.is_none()).map(|r| {
                if r.reused {
                    StepGraphUse::Reused
                } else {
                    StepGraphUse::Captured(Duration::from_secs_f64(r.capture_seconds))
                }
            }),
        });
        let mut pictures = generation.images.into_iter();
        for job in batch {
            let mine: Vec<_> = pictures.by_ref().take(job.request.n).collect();
            let encoded: Result<Vec<_>, _> = mine
                .iter()
                .zip(0u64..)
                .map(|(image, i)| image.to_png().map(|png| (png, job.seed.wrapping_add(i))))
                .collect();
            let reply = match encoded {
                Ok(encoded) => Ok(JobOutput {
                    images: encoded,
                    batch_images: images,
                    device: self.device.clone(),
                    queue_wait: started.saturating_duration_since(job.enqueued),
                    text_encode: t.text_encode.time,
                    denoise: t.denoise.time,
                    decode: t.decode.time,
                    step_graph,
                }),
                Err(err) => Err(JobError::Failed {
                    stage: "png encode",
                    message: err.to_string(),
                }),
            };
            // The client may have left meanwhile; its answer then goes nowhere.
            let _ = job.reply.send(reply);
        }
    }
}

/// The batch as one library request: each job's prompt once per image, each image with its own seed, and the shared
/// options of the batch key.
fn merged_request(batch: &[Job]) -> Request {
    let prompts = batch
        .iter()
        .flat_map(|j| std::iter::repeat_n(j.request.prompt.clone(), j.request.n));
    let seeds = batch
        .iter()
        .flat_map(|j| (0..j.request.n as u64).map(move |i| j.seed.wrapping_add(i)))
        .collect();
    with_key(
        Request::for_prompts(prompts).image_seeds(seeds),
        &batch[0].key,
    )
}

/// `request` with the options of `key`.
fn with_key(request: Request, key: &BatchKey) -> Request {
    let request = request
        .size(key.size.0, key.size.1)
        .steps(key.steps)
        .guidance(key.guidance)
        .resolution_binning(key.resolution_binning)
        .negative_prompt(key.negative_prompt.clone());
    with_extensions(request, &key.pag, key.control.as_ref(), key.init.as_ref())
}

/// `request` with the PAG and ControlNet extensions of the images API, and an edit's image and strength.
pub fn with_extensions(
    mut request: Request,
    pag: &super::images_api::Pag,
    control: Option<&(sana::Image, f32)>,
    init: Option<&(sana::Image, f64)>,
) -> Request {
    if let Some((image, strength)) = init {
        request = request.init_image(image.clone()).strength(*strength);
    }
    request = request
        .pag_scale(pag.scale)
        .pag_adaptive_scale(pag.adaptive_scale);
    if let Some(layers) = &pag.layers {
        request = request.pag_layers(layers.clone());
    }
    if let Some((image, scale)) = control {
        request = request.control_image(image.clone()).control_scale(*scale);
    }
    request
}

fn stage_name(stage: Stage) -> &'static str {
    match stage {
        Stage::TextEncode => "text encode",
        Stage::Denoise => "denoise",
        _ => "decode",
    }
}
