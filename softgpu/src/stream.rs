//! Streams, events and stream capture. Work queued on a stream runs in order, on the thread that synchronises, and
//! only then: a host read of a copy's destination before `cuStreamSynchronize`/`cuEventSynchronize`, or a pinned
//! buffer refilled while its copy is still queued, gives wrong data, as it can on hardware. A capturing stream
//! records work into a graph instead (src/graph.rs), and the calls the driver forbids during capture fail with its
//! codes and invalidate the capture.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::ThreadId;
use std::time::Instant;

use cudarc::driver::sys::{CUstream, CUstreamCaptureMode};

use crate::context;
use crate::graph::{Graph, GraphAllocations};
use crate::memory;
use crate::status::{CUresult, Fault};
use crate::work::Work;

/// An ongoing capture of one stream.
pub struct Capture {
    pub mode: CUstreamCaptureMode,
    pub thread: ThreadId,
    pub nodes: Vec<Work>,
    /// Graph memory reserved by allocation nodes of this capture.
    pub allocations: Vec<usize>,
    /// Why the capture was invalidated, once it is.
    pub invalid: Option<String>,
}

#[derive(Default)]
struct Queue {
    work: VecDeque<Work>,
    /// Sequence number of the last work submitted, and of the last executed.
    submitted: u64,
    done: u64,
    capture: Option<Capture>,
}

pub struct Stream {
    pub id: u64,
    /// The NULL (legacy) stream, which cannot be captured.
    pub legacy: bool,
    queue: Mutex<Queue>,
    /// Held while work runs, so work of one stream never runs concurrently or out of order.
    exec: Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

static STREAMS: Mutex<Option<HashMap<u64, Arc<Stream>>>> = Mutex::new(None);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A fresh handle id (streams, events, graphs share the counter so a handle of one kind is never another's).
pub fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// Handles are ids in disguise, so a stale or foreign pointer is recognised as invalid instead of dereferenced.
pub fn to_handle<T>(id: u64) -> *mut T {
    (id << 4 | 0x8) as *mut T
}

pub fn from_handle<T>(h: *mut T) -> u64 {
    (h as u64) >> 4
}

/// Creates a stream and returns its handle.
pub fn create() -> CUstream {
    let id = next_id();
    let s = Arc::new(Stream {
        id,
        legacy: false,
        queue: Mutex::new(Queue::default()),
        exec: Mutex::new(()),
    });
    lock(&STREAMS)
        .get_or_insert_with(HashMap::new)
        .insert(id, s);
    to_handle(id)
}

/// The stream behind `h`: the legacy stream for NULL, `CU_STREAM_LEGACY` and `CU_STREAM_PER_THREAD`.
pub fn get(h: CUstream) -> Result<Arc<Stream>, Fault> {
    let mut streams = lock(&STREAMS);
    let map = streams.get_or_insert_with(HashMap::new);
    if (h as u64) <= 2 {
        return Ok(map
            .entry(0)
            .or_insert_with(|| {
                Arc::new(Stream {
                    id: 0,
                    legacy: true,
                    queue: Mutex::new(Queue::default()),
                    exec: Mutex::new(()),
                })
            })
            .clone());
    }
    map.get(&from_handle(h)).cloned().ok_or_else(|| {
        Fault::new(
            CUresult::CUDA_ERROR_INVALID_HANDLE,
            format!("{h:?} is not a live stream"),
        )
    })
}

/// Removes a stream after running what it has queued.
pub fn destroy(h: CUstream) -> Result<(), Fault> {
    let s = get(h)?;
    if s.legacy {
        return Err(Fault::new(
            CUresult::CUDA_ERROR_INVALID_HANDLE,
            "the NULL stream cannot be destroyed",
        ));
    }
    if lock(&s.queue).capture.is_some() {
        return Err(Fault::new(
            CUresult::CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED,
            "the stream is capturing",
        ));
    }
    let drained = s.drain(u64::MAX);
    lock(&STREAMS)
        .get_or_insert_with(HashMap::new)
        .remove(&s.id);
    drained
}

fn all() -> Vec<Arc<Stream>> {
    lock(&STREAMS)
        .get_or_insert_with(HashMap::new)
        .values()
        .cloned()
        .collect()
}

/// Queues `work` on `h`, or records it into the stream's capture.
pub fn submit(h: CUstream, work: Work) -> CUresult {
    match get(h).and_then(|s| s.submit(work).map(|_| ())) {
        Ok(()) => CUresult::CUDA_SUCCESS,
        Err(f) => crate::status::fail(f.code, "queueing work", f.detail),
    }
}

/// Where an event was recorded: the stream and the position in it.
#[derive(Clone)]
pub struct Mark {
    pub stream: Arc<Stream>,
    pub seq: u64,
}

impl Stream {
    /// Queues `work` (or records it when capturing); returns its position in the stream (0 when captured).
    pub fn submit(self: &Arc<Self>, work: Work) -> Result<u64, Fault> {
        context::check()?;
        if self.legacy {
            invalidate_thread_captures("work on the legacy NULL stream")?;
        }
        let mut q = lock(&self.queue);
        if let Some(c) = &mut q.capture {
            if let Some(why) = &c.invalid {
                return Err(Fault::new(
                    CUresult::CUDA_ERROR_STREAM_CAPTURE_INVALIDATED,
                    format!("the capture was invalidated: {why}"),
                ));
            }
            c.nodes.push(work);
            return Ok(0);
        }
        q.submitted += 1;
        q.work.push_back(work);
        Ok(q.submitted)
    }

    /// Whether the stream is capturing, and whether its capture was invalidated.
    pub fn capture_state(&self) -> (bool, bool) {
        let q = lock(&self.queue);
        match &q.capture {
            Some(c) => (true, c.invalid.is_some()),
            None => (false, false),
        }
    }

    /// Runs queued work up to position `upto` (inclusive) on this thread; a fault makes the context's error
    /// sticky and drops the rest of the queue, as a GPU fault kills the context.
    pub fn drain(&self, upto: u64) -> Result<(), Fault> {
        let _exec = lock(&self.exec);
        loop {
            let work = {
                let mut q = lock(&self.queue);
                if q.done >= upto {
                    break;
                }
                match q.work.pop_front() {
                    Some(w) => w,
                    None => break,
                }
            };
            let result = crate::fault::running(&work.label, || (work.run)())
                .and_then(|()| memory::check_canaries());
            lock(&self.queue).done += 1;
            if let Err(f) = result {
                let f = Fault::new(f.code, format!("{}: {}", work.label, f.detail));
                context::set_sticky(f.clone());
                let mut q = lock(&self.queue);
                let dropped = q.work.len() as u64;
                q.work.clear();
                q.done += dropped;
                return Err(f);
            }
        }
        context::check()
    }

    /// The position of the last submitted work.
    pub fn tail(&self) -> u64 {
        lock(&self.queue).submitted
    }

    /// Starts capturing on the calling thread.
    pub fn begin_capture(&self, mode: CUstreamCaptureMode) -> Result<(), Fault> {
        if self.legacy {
            return Err(Fault::new(
                CUresult::CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED,
                "the legacy NULL stream cannot be captured",
            ));
        }
        let mut q = lock(&self.queue);
        if q.capture.is_some() {
            return Err(Fault::new(
                CUresult::CUDA_ERROR_ILLEGAL_STATE,
                "the stream is already capturing",
            ));
        }
        q.capture = Some(Capture {
            mode,
            thread: std::thread::current().id(),
            nodes: Vec::new(),
            allocations: Vec::new(),
            invalid: None,
        });
        Ok(())
    }

    /// Ends the capture: the graph, or the reason it was invalidated (the capture ends either way).
    pub fn end_capture(&self) -> Result<Graph, Fault> {
        let mut q = lock(&self.queue);
        let Some(c) = &q.capture else {
            return Err(Fault::new(
                CUresult::CUDA_ERROR_ILLEGAL_STATE,
                "the stream is not capturing",
            ));
        };
        if c.mode != CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED
            && c.thread != std::thread::current().id()
        {
            return Err(Fault::new(
                CUresult::CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD,
                "the capture was begun on another thread",
            ));
        }
        let c = q.capture.take().expect("checked above");
        let allocations = GraphAllocations::new(c.allocations);
        match c.invalid {
            Some(why) => Err(Fault::new(
                CUresult::CUDA_ERROR_STREAM_CAPTURE_INVALIDATED,
                format!("the capture was invalidated: {why}"),
            )),
            None => Ok(Graph {
                nodes: Arc::new(c.nodes),
                allocations,
            }),
        }
    }

    /// Invalidates this stream's capture (if any) for `why`.
    pub fn invalidate(&self, why: &str) -> bool {
        let mut q = lock(&self.queue);
        match &mut q.capture {
            Some(c) => {
                c.invalid.get_or_insert_with(|| why.to_string());
                true
            }
            None => false,
        }
    }

    /// Reserves graph memory for an allocation node of this stream's capture.
    pub fn capture_allocation(&self, ptr: usize) {
        if let Some(c) = &mut lock(&self.queue).capture {
            c.allocations.push(ptr);
        }
    }
}

/// A call the driver calls "potentially unsafe" during capture (synchronous allocation, copy or synchronisation)
/// was made on this thread: every capture it may disturb (global mode, or thread-local begun on this thread) is
/// invalidated and the call fails with `CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED`.
pub fn invalidate_thread_captures(call: &str) -> Result<(), Fault> {
    let me = std::thread::current().id();
    let mut hit = false;
    for s in all() {
        let mut q = lock(&s.queue);
        if let Some(c) = &mut q.capture {
            let affected = match c.mode {
                CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_GLOBAL => true,
                CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL => c.thread == me,
                _ => false,
            };
            if affected {
                c.invalid
                    .get_or_insert_with(|| format!("{call} during capture"));
                hit = true;
            }
        }
    }
    if hit {
        Err(Fault::new(
            CUresult::CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED,
            format!("{call} is not allowed while this thread captures a stream (the capture is now invalid)"),
        ))
    } else {
        Ok(())
    }
}

/// Runs everything queued on every stream (`cuCtxSynchronize`, synchronous copies).
pub fn drain_all() -> Result<(), Fault> {
    for s in all() {
        s.drain(u64::MAX)?;
    }
    Ok(())
}

/// An event: where it was last recorded and when that point ran.
#[derive(Default)]
pub struct Event {
    pub timing: bool,
    pub mark: Option<Mark>,
    /// Recorded into a capture: synchronising on it is an error until it is recorded outside one.
    pub captured: bool,
    pub time: Arc<Mutex<Option<Instant>>>,
}

static EVENTS: Mutex<Option<HashMap<u64, Event>>> = Mutex::new(None);

pub fn with_events<R>(f: impl FnOnce(&mut HashMap<u64, Event>) -> R) -> R {
    f(lock(&EVENTS).get_or_insert_with(HashMap::new))
}

/// Records event `id` on stream `h` (into its capture when capturing).
pub fn record_event(id: u64, h: CUstream) -> Result<(), Fault> {
    let s = get(h)?;
    let time = Arc::new(Mutex::new(None));
    let stamp = time.clone();
    let seq = s.submit(Work::new("event record", move || {
        *lock(&stamp) = Some(Instant::now());
        Ok(())
    }))?;
    let (capturing, _) = s.capture_state();
    with_events(|events| {
        let e = events
            .get_mut(&id)
            .ok_or_else(|| Fault::new(CUresult::CUDA_ERROR_INVALID_HANDLE, "not a live event"))?;
        e.captured = capturing;
        e.mark = (!capturing).then(|| Mark { stream: s, seq });
        e.time = time;
        Ok(())
    })
}

/// Waits for event `id` (runs its stream's work up to it).
pub fn sync_event(id: u64) -> Result<(), Fault> {
    let mark = with_events(|events| {
        let e = events
            .get(&id)
            .ok_or_else(|| Fault::new(CUresult::CUDA_ERROR_INVALID_HANDLE, "not a live event"))?;
        if e.captured {
            return Err(Fault::new(
                CUresult::CUDA_ERROR_CAPTURED_EVENT,
                "the event was last recorded in a stream capture",
            ));
        }
        Ok(e.mark.clone())
    })?;
    match mark {
        Some(m) => m.stream.drain(m.seq),
        // Never recorded: complete.
        None => context::check(),
    }
}
