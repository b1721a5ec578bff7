//! What `GET /metrics` reports, in the Prometheus text format, every name prefixed `sana_`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds: a tiny model's milliseconds to a large one's minutes on a CPU.
const SECONDS_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// Upper bounds of the batch-size buckets, in images.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

struct Inner {
    /// Answers by HTTP status; 499 (nginx's "client closed request") counts clients that left before the answer.
    requests: BTreeMap<u16, u64>,
    batch_images: Histogram,
    stage_seconds: BTreeMap<&'static str, Histogram>,
    step_graph_capture_seconds: Histogram,
    step_graph_reuses: u64,
    images: u64,
    generating: Duration,
    device_peak_bytes: BTreeMap<String, u64>,
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            requests: BTreeMap::new(),
            batch_images: Histogram::new(BATCH_BUCKETS),
            stage_seconds: BTreeMap::new(),
            step_graph_capture_seconds: Histogram::new(SECONDS_BUCKETS),
            step_graph_reuses: 0,
            images: 0,
            generating: Duration::ZERO,
            device_peak_bytes: BTreeMap::new(),
        }
    }
}

/// One generation, as a worker saw it.
pub struct GenerationRecord<'a> {
    pub device: &'a str,
    pub images: usize,
    pub text_encode: Duration,
    pub denoise: Duration,
    pub decode: Duration,
    pub total: Duration,
    pub peak_device_bytes: Option<u64>,
    pub step_graph: Option<StepGraphUse>,
}

/// How a generation on a GPU got its denoising step graph.
pub enum StepGraphUse {
    /// Captured and uploaded in this generation, taking this host time.
    Captured(Duration),
    /// Replayed from a graph kept by an earlier generation of the same shape: a capture saved.
    Reused,
}

impl Metrics {
    pub fn request(&self, status: u16, queue: Option<Duration>, total: Duration) {
        let mut m = self.lock();
        *m.requests.entry(status).or_default() += 1;
        if let Some(q) = queue {
            m.stage_seconds
                .entry("queue")
                .or_insert_with(seconds)
                .observe(q.as_secs_f64());
        }
        m.stage_seconds
            .entry("request")
            .or_insert_with(seconds)
            .observe(total.as_secs_f64());
    }

    pub fn generation(&self, g: &GenerationRecord<'_>) {
        let mut m = self.lock();
        m.batch_images.observe(g.images as f64);
        for (stage, t) in [
            ("text_encode", g.text_encode),
            ("denoise", g.denoise),
            ("decode", g.decode),
        ] {
            m.stage_seconds
                .entry(stage)
                .or_insert_with(seconds)
                .observe(t.as_secs_f64());
        }
        m.images += g.images as u64;
        m.generating += g.total;
        if let Some(b) = g.peak_device_bytes {
            let peak = m.device_peak_bytes.entry(g.device.to_string()).or_default();
            *peak = (*peak).max(b);
        }
        match g.step_graph {
            Some(StepGraphUse::Captured(t)) => {
                m.step_graph_capture_seconds.observe(t.as_secs_f64())
            }
            Some(StepGraphUse::Reused) => m.step_graph_reuses += 1,
            None => {}
        }
    }

    /// Mean wall time of the generations so far (0 before the first).
    pub fn mean_generation_seconds(&self) -> f64 {
        let m = self.lock();
        if m.batch_images.count == 0 {
            0.0
        } else {
            m.generating.as_secs_f64() / m.batch_images.count as f64
        }
    }

    /// The Prometheus exposition, with the live gauges passed in.
    pub fn render(&self, queue_depth: usize, ready: bool) -> String {
        let m = self.lock();
        let mut out = String::new();
        header(
            &mut out,
            "sana_requests_total",
            "counter",
            "Image requests answered, by HTTP status (499: the client left).",
        );
        for (status, n) in &m.requests {
            let _ = writeln!(out, "sana_requests_total{{status=\"{status}\"}} {n}");
        }
        header(
            &mut out,
            "sana_queue_depth",
            "gauge",
            "Requests waiting for a worker.",
        );
        let _ = writeln!(out, "sana_queue_depth {queue_depth}");
        header(
            &mut out,
            "sana_ready",
            "gauge",
            "1 once every worker's models are loaded, 0 before and while shutting down.",
        );
        let _ = writeln!(out, "sana_ready {}", u8::from(ready));
        header(
            &mut out,
            "sana_batch_images",
            "histogram",
            "Images per generation (requests merged by the batcher).",
        );
        m.batch_images.write(&mut out, "sana_batch_images", "");
        header(
            &mut out,
            "sana_stage_seconds",
            "histogram",
            "Latency per stage: queue wait, text encode, denoise, decode, and the whole request.",
        );
        for (stage, h) in &m.stage_seconds {
            h.write(
                &mut out,
                "sana_stage_seconds",
                &format!("stage=\"{stage}\","),
            );
        }
        header(
            &mut out,
            "sana_step_graph_capture_seconds",
            "histogram",
            "Host time to capture and upload each generation's CUDA step graph (GPU only).",
        );
        m.step_graph_capture_seconds
            .write(&mut out, "sana_step_graph_capture_seconds", "");
        header(
            &mut out,
            "sana_step_graph_reuses_total",
            "counter",
            "Generations that replayed the step graph kept from an earlier one of the same shape: captures saved \
             (GPU only).",
        );
        let _ = writeln!(out, "sana_step_graph_reuses_total {}", m.step_graph_reuses);
        header(
            &mut out,
            "sana_images_total",
            "counter",
            "Images generated.",
        );
        let _ = writeln!(out, "sana_images_total {}", m.images);
        header(
            &mut out,
            "sana_images_per_second",
            "gauge",
            "Images generated per second of generation time, since the start.",
        );
        let busy = m.generating.as_secs_f64();
        let rate = if busy > 0.0 {
            m.images as f64 / busy
        } else {
            0.0
        };
        let _ = writeln!(out, "sana_images_per_second {rate}");
        header(
            &mut out,
            "sana_device_memory_peak_bytes",
            "gauge",
            "Peak device memory of any generation, per GPU.",
        );
        for (device, bytes) in &m.device_peak_bytes {
            let _ = writeln!(
                out,
                "sana_device_memory_peak_bytes{{device=\"{device}\"}} {bytes}"
            );
        }
        out
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn seconds() -> Histogram {
    Histogram::new(SECONDS_BUCKETS)
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Observations per bucket (not cumulative: the exposition adds them up), their sum and count.
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, value: f64) {
        self.sum += value;
        self.count += 1;
        if let Some(i) = self.bounds.iter().position(|&b| value <= b) {
            self.counts[i] += 1;
        }
    }

    /// `name_bucket{labels le="…"}` lines (cumulative, ending at `+Inf`), then `_sum` and `_count`; `labels` is empty
    /// or ends with a comma.
    fn write(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (bound, n) in self.bounds.iter().zip(&self.counts) {
            cumulative += n;
            let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {}", self.count);
        let labels = labels.trim_end_matches(',');
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}
