//! The bounded queue between the HTTP handlers and the workers, and the batcher: a worker takes the oldest request
//! and merges into its generation the queued requests with the same [`BatchKey`], up to `--max-batch` images, waiting
//! at most `--batch-window` for them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::adapters::AdapterChoice;
use super::images_api::ImagesRequest;
use super::worker::JobResult;

/// What must be equal for requests to share one generation: everything but the prompt and the seeds, as planned
/// (so an omitted size and the model's trained size are the same key).
#[derive(Clone, Debug, PartialEq)]
pub struct BatchKey {
    pub size: (usize, usize),
    pub steps: usize,
    pub guidance: f32,
    pub resolution_binning: bool,
    pub negative_prompt: String,
    pub lora: Vec<AdapterChoice>,
    /// Perturbed-attention guidance's options (the same for the whole batch).
    pub pag: super::images_api::Pag,
    /// The control image and scale: only requests with the same one share a generation.
    pub control: Option<(sana::Image, f32)>,
    /// Image-to-image's image and strength, likewise.
    pub init: Option<(sana::Image, f64)>,
}

/// One request waiting for, or in, a generation.
pub struct Job {
    pub id: u64,
    pub request: ImagesRequest,
    /// Image `i` is seeded `seed + i`.
    pub seed: u64,
    pub key: BatchKey,
    pub enqueued: Instant,
    /// Set when the client has gone: the job is skipped, or its generation cancelled when no one else waits on it.
    pub cancelled: Arc<AtomicBool>,
    pub reply: oneshot::Sender<JobResult>,
}

impl Job {
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }
}

pub struct Queue {
    state: Mutex<State>,
    changed: Condvar,
    capacity: usize,
}

struct State {
    jobs: VecDeque<Job>,
    closed: bool,
}

/// Why a job was not queued.
pub enum Refused {
    Full,
    Closed,
}

impl Queue {
    pub fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State {
                jobs: VecDeque::new(),
                closed: false,
            }),
            changed: Condvar::new(),
            capacity,
        }
    }

    /// Queues `job` unless `--max-queue` requests already wait (those whose clients left do not count).
    pub fn push(&self, job: Job) -> Result<(), Refused> {
        let mut state = self.lock();
        if state.closed {
            return Err(Refused::Closed);
        }
        state.jobs.retain(|j| !j.is_cancelled());
        if state.jobs.len() >= self.capacity {
            return Err(Refused::Full);
        }
        state.jobs.push_back(job);
        drop(state);
        self.changed.notify_all();
        Ok(())
    }

    /// Requests waiting for a worker.
    pub fn depth(&self) -> usize {
        self.lock().jobs.len()
    }

    /// The next batch: the oldest live job and those that can share its generation (at most `max_images` images in
    /// all, unless the first alone has more). Blocks until there is one; `None` once the queue is closed and empty.
    pub fn next_batch(&self, max_images: usize, window: Duration) -> Option<Vec<Job>> {
        let mut state = self.lock();
        let first = loop {
            state.jobs.retain(|j| !j.is_cancelled());
            if let Some(job) = state.jobs.pop_front() {
                break job;
            }
            if state.closed {
                return None;
            }
            state = self.wait(state, None);
        };
        let deadline = Instant::now() + window;
        let mut images = first.request.n;
        let mut batch = vec![first];
        loop {
            let mut i = 0;
            while i < state.jobs.len() && images < max_images {
                let job = &state.jobs[i];
                if job.key == batch[0].key
                    && images + job.request.n <= max_images
                    && !job.is_cancelled()
                {
                    images += job.request.n;
                    batch.extend(state.jobs.remove(i));
                } else {
                    i += 1;
                }
            }
            let now = Instant::now();
            if images >= max_images || now >= deadline || state.closed {
                return Some(batch);
            }
            state = self.wait(state, Some(deadline - now));
        }
    }

    /// Stops taking jobs; workers finish what is queued, then stop.
    pub fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    /// Takes every queued job (at the shutdown deadline, to answer them).
    pub fn drain(&self) -> Vec<Job> {
        self.lock().jobs.drain(..).collect()
    }

    fn wait<'a>(
        &self,
        state: MutexGuard<'a, State>,
        timeout: Option<Duration>,
    ) -> MutexGuard<'a, State> {
        // A panic elsewhere while holding the lock leaves the queue consistent (every change is one VecDeque call).
        match timeout {
            None => self.changed.wait(state).unwrap_or_else(|p| p.into_inner()),
            Some(t) => {
                self.changed
                    .wait_timeout(state, t)
                    .unwrap_or_else(|p| p.into_inner())
                    .0
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}
