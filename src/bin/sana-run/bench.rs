//! `sana-run bench`: the whole pipeline timed per stage (warm-up excluded, median of several runs) next to the
//! FLOP/byte model of each stage and its roofline floor on named GPUs, so the gap to the physical limit is one
//! number. `--variant` builds a published architecture with synthetic weights in memory; `--model` times a folder
//! (default: the tiny fixture model). `--engine auto` (default) takes the GPU when usable, else cpu with a notice;
//! an engine that is not available (`--engine cuda` without a GPU) is reported
//! as skipped, with the reason, and the command still succeeds: the plan is printed either way.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::builder::TypedValueParser;
use clap::Args;
use sana::cost::roofline::{StageFloors, BF16_BYTES, DEVICES};
use sana::cost::stages::{StageCosts, Workload};
use sana::cost::Cost;
use sana::engine::cuda::StepGraphReport;
use sana::inspect::Variant;
use sana::memory::StageStats;
use sana::text::{tokenize_prompts, GemmaTokenizer, PromptOptions};
use sana::{Control, Device, Event, OpenOptions, Request, Sana};
use serde_json::{json, Value};

use crate::{Dtype, EngineKind};

#[derive(Args, Clone)]
pub struct BenchArgs {
    /// A published variant built with synthetic random weights in memory (`sana-600m-512`, `sana-1600m-1024`, …).
    #[arg(long, conflicts_with = "model")]
    variant: Option<String>,
    /// A diffusers Sana folder (default: the tiny fixture model, which runs in seconds).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Sampler steps (default: 20; 2 for Sana-Sprint).
    #[arg(long)]
    steps: Option<usize>,
    /// Images per prompt.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Engine (default: the GPU when usable, else cpu with a notice).
    #[arg(long, value_enum, default_value_t = EngineKind::Auto)]
    engine: EngineKind,
    /// On a GPU, queue every denoising step op by op instead of replaying a CUDA graph (the eager baseline).
    #[arg(long)]
    no_step_graph: bool,
    /// Image height in pixels (default: the model's native size).
    #[arg(long)]
    height: Option<usize>,
    /// Image width in pixels (default: the model's native size).
    #[arg(long)]
    width: Option<usize>,
    /// Timed runs after the warm-up (at least 1); each stage reports its median.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..).map(|n| n as usize))]
    runs: usize,
    /// Untimed runs first (they load Gemma and the transformer and touch every page); 0 for a slow engine at
    /// real sizes, where the first run's text encode and first step then include loading.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Classifier-free guidance scale (> 1 doubles the DiT batch and encodes the negative prompt).
    #[arg(long, default_value_t = 4.5)]
    guidance: f32,
    /// ControlNet: condition on a synthetic control image (a gradient at the generation size) through the folder's
    /// controlnet/, counting its blocks in the model.
    #[arg(long)]
    control: bool,
    /// Perturbed-attention guidance at this scale (on the default layer, transformer_blocks.0): the DiT batch gains
    /// the perturbed copy.
    #[arg(long, value_name = "S")]
    pag_scale: Option<f32>,
    /// Print only the FLOP/byte model and the floors; run nothing.
    #[arg(long)]
    plan_only: bool,
    /// One JSON object on stdout instead of the table.
    #[arg(long)]
    json: bool,
}

const PROMPT: &str = "a photo of a red fox in the snow";
const SEED: u64 = 0;

/// The folder to bench and, for a variant, the temporary folder to remove afterwards.
struct Source {
    dir: PathBuf,
    label: String,
    synthetic: bool,
}

impl Drop for Source {
    fn drop(&mut self) {
        if self.synthetic {
            // Best effort: a leftover folder holds only configs and key lists.
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The tiny random-weight fixture (tests/fixtures/tiny-sana): what `bench` measures without --model or --variant,
/// and the tokenizer of its synthetic variants. Not the demo model: its sizes are the ones the cost tests expect.
fn fixture_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sana")
}

fn source(args: &BenchArgs) -> sana::Result<Source> {
    match (&args.variant, &args.model) {
        (Some(name), _) => {
            let variant = Variant::from_name(name).ok_or_else(|| {
                let names: Vec<&str> = Variant::published().map(Variant::name).collect();
                sana::Error::InvalidInput(format!(
                    "--variant {name}: not a published variant ({})",
                    names.join(", ")
                ))
            })?;
            let dir = std::env::temp_dir().join(format!(
                "sana-bench-{}-{}",
                variant.name(),
                std::process::id()
            ));
            let src = Source {
                dir,
                label: format!("{} (synthetic weights)", variant.name()),
                synthetic: true,
            };
            sana::synthetic_pipeline::write(
                variant,
                &src.dir,
                &fixture_model().join("tokenizer"),
                SEED,
            )?;
            Ok(src)
        }
        (None, model) => {
            let dir = model.clone().unwrap_or_else(fixture_model);
            Ok(Source {
                label: dir.display().to_string(),
                dir,
                synthetic: false,
            })
        }
    }
}

/// The run's request, as planned, and the model's cost of each stage.
struct Plan {
    req: Request,
    planned: sana::Plan,
    costs: StageCosts,
}

fn make_plan(sana: &Sana, args: &BenchArgs) -> sana::Result<Plan> {
    let mut req = Request::new(PROMPT)
        .guidance(args.guidance)
        .seed(SEED)
        .resolution_binning(false)
        .batch(args.batch);
    match (args.width, args.height) {
        (None, None) => {}
        (w, h) => {
            // One side given: the other is the model's trained size.
            let native = sana.transformer_config().sample_size * sana.vae_config().spatial_factor();
            req = req.size(w.unwrap_or(native), h.unwrap_or(native));
        }
    }
    if let Some(steps) = args.steps {
        req = req.steps(steps);
    }
    if let Some(scale) = args.pag_scale {
        req = req.pag_scale(scale);
    }
    if args.control {
        if sana.controlnet_config().is_none() {
            return Err(sana::Error::InvalidInput(format!(
                "--control: {} has no controlnet/ (the folder SanaControlNetPipeline.save_pretrained writes)",
                sana.dir().display()
            )));
        }
        let (w, h) = sana.plan(&req)?.generation_size;
        req = req.control_image(gradient(w, h)?);
    }
    let planned = sana.plan(&req)?;
    let tokenizer = GemmaTokenizer::from_dir(&sana.dir().join("tokenizer"))?;
    let tokens = tokenize_prompts(&tokenizer, &[PROMPT], &[""], &PromptOptions::default())?;
    let work = Workload {
        batch: planned.batch,
        latent: (planned.latent_shape[2], planned.latent_shape[3]),
        prompt_tokens: tokens.prompt.len,
        text_rows: planned.text_rows,
        cfg: planned.cfg,
        steps: planned.steps,
        pag_blocks: planned.pag.as_ref().map_or(0, |p| p.blocks.len()),
    };
    let mut costs = StageCosts::new(
        sana.text_encoder_config(),
        sana.transformer_config(),
        sana.vae_config(),
        &work,
    );
    if let (Some(_), Some(net)) = (planned.controlnet, sana.controlnet_config()) {
        costs = costs.with_controlnet(net, sana.transformer_config().num_layers, &work);
    }
    Ok(Plan {
        req,
        planned,
        costs,
    })
}

/// A `w × h` control image: a diagonal gradient, the same every run.
fn gradient(w: usize, h: usize) -> sana::Result<sana::Image> {
    let pixels = (0..h)
        .flat_map(|y| {
            (0..w).flat_map(move |x| [(x * 255 / w.max(1)) as u8, (y * 255 / h.max(1)) as u8, 128])
        })
        .collect();
    sana::Image::new(w, h, pixels)
}

/// Median wall time and peak host (and device) memory of each stage over the timed runs.
#[derive(Default)]
struct Measured {
    /// The engine that ran (`--engine auto` resolves to one).
    engine: &'static str,
    text_encode: Duration,
    step: Duration,
    denoise: Duration,
    decode: Duration,
    total: Duration,
    peak_host: [Option<u64>; 3],
    peak_device: [Option<u64>; 3],
    /// How the last timed run's denoising loop ran, on an engine that captures steps as graphs.
    step_graph: Option<StepGraphReport>,
    /// How the first run's loop ran (it captured the graph that later runs replay: `Sana` keeps it), and its
    /// denoising time: beside the median, what keeping the graph saves a generation.
    first_step_graph: Option<(StepGraphReport, Duration)>,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn measure(
    sana: &Sana,
    req: &Request,
    steps: usize,
    (warmup, runs): (usize, usize),
) -> sana::Result<Measured> {
    let mut samples: Vec<[Duration; 5]> = Vec::new();
    let (mut peaks, mut device_peaks) = ([None; 3], [None; 3]);
    let mut first_step_graph = None;
    for run in 0..warmup + runs.max(1) {
        let mut marks = Vec::with_capacity(steps);
        let start = Instant::now();
        let out = sana.generate_with(req, |event| {
            if let Event::Step { .. } = event {
                marks.push(Instant::now());
            }
            Control::Continue
        })?;
        let total = start.elapsed();
        if run == 0 {
            first_step_graph = sana
                .step_graph_report()
                .map(|g| (g, out.times.denoise.time));
        }
        if run < warmup {
            continue;
        }
        let t = out.times;
        // One step: the median gap between progress calls (the first step also pays the text conditioning).
        let gaps: Vec<Duration> = marks.windows(2).map(|p| p[1] - p[0]).collect();
        let step = if gaps.is_empty() {
            t.denoise.time / steps.max(1) as u32
        } else {
            median(gaps)
        };
        samples.push([
            t.text_encode.time,
            step,
            t.denoise.time,
            t.decode.time,
            total,
        ]);
        let stats: [StageStats; 3] = [t.text_encode, t.denoise, t.decode];
        for ((peak, device), s) in peaks.iter_mut().zip(&mut device_peaks).zip(stats) {
            *peak = (*peak).max(s.peak_host_bytes);
            *device = (*device).max(s.peak_device_bytes);
        }
    }
    let column = |i: usize| median(samples.iter().map(|s| s[i]).collect());
    Ok(Measured {
        engine: sana.engine_name(),
        text_encode: column(0),
        step: column(1),
        denoise: column(2),
        decode: column(3),
        total: column(4),
        peak_host: peaks,
        peak_device: device_peaks,
        step_graph: sana.step_graph_report(),
        first_step_graph,
    })
}

pub fn run(args: BenchArgs, dtype: Dtype) -> sana::Result<()> {
    let src = source(&args)?;
    // The plan needs no accelerator: configs, tokenizer and the cost model only (the CPU engine loads the VAE).
    let plan = make_plan(&Sana::open(&src.dir, Device::Cpu)?, &args)?;
    let measured: Result<Option<Measured>, String> = if args.plan_only {
        Ok(None)
    } else {
        let runs = args.warmup + args.runs.max(1);
        let outcome = args.engine.device().and_then(|device| {
            let sana = OpenOptions::new(device)
                .dtype(dtype.into())
                .step_graphs(!args.no_step_graph)
                // Reused Gemma stays resident (its load is not text encoding); a single run frees it before the
                // transformer loads.
                .keep_text_encoder(runs > 1)
                .measure_host_memory(true)
                .open(&src.dir)?;
            if let Some(why) = sana.auto_fallback() {
                eprintln!("note: running on the cpu engine: {why}");
            }
            measure(
                &sana,
                &plan.req,
                plan.planned.steps,
                (args.warmup, args.runs),
            )
            .map(Some)
        });
        match outcome {
            Ok(m) => Ok(m),
            Err(err @ sana::Error::EngineUnavailable { .. }) => Err(err.to_string()),
            Err(other) => return Err(other),
        }
    };
    let report = Report {
        args: &args,
        label: &src.label,
        plan: &plan,
        measured: &measured,
    };
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

struct Report<'a> {
    args: &'a BenchArgs,
    label: &'a str,
    plan: &'a Plan,
    measured: &'a Result<Option<Measured>, String>,
}

/// One row of the table: a stage's cost and, when it ran, its time and peak host memory.
struct Row {
    key: &'static str,
    name: &'static str,
    cost: Cost,
    /// Seconds at best on each of [`DEVICES`].
    floors: Vec<f64>,
    time: Option<Duration>,
    peak_host: Option<u64>,
}

impl Report<'_> {
    /// The engine that ran, else the one asked for.
    fn engine(&self) -> &'static str {
        if let Ok(Some(m)) = self.measured {
            return m.engine;
        }
        match self.args.engine {
            EngineKind::Auto => "auto",
            EngineKind::Cpu => "cpu",
            EngineKind::Emu => "emu",
            EngineKind::Cuda => "cuda",
        }
    }

    fn step_graph(&self) -> Option<&StepGraphReport> {
        let m = self.measured.as_ref().ok().and_then(Option::as_ref)?;
        m.step_graph.as_ref()
    }

    fn first_step_graph(&self) -> Option<&(StepGraphReport, Duration)> {
        let m = self.measured.as_ref().ok().and_then(Option::as_ref)?;
        m.first_step_graph.as_ref()
    }

    /// Peak device memory over the stages, on an engine with a device.
    fn peak_device(&self) -> Option<u64> {
        let m = self.measured.as_ref().ok().and_then(Option::as_ref)?;
        m.peak_device.iter().flatten().max().copied()
    }

    fn rows(&self) -> Vec<Row> {
        let c = &self.plan.costs;
        let m = self.measured.as_ref().ok().and_then(Option::as_ref);
        let peak = |i: usize| m.and_then(|m| m.peak_host[i]);
        let f: Vec<StageFloors> = DEVICES
            .iter()
            .map(|d| d.stage_floors(c, BF16_BYTES))
            .collect();
        let floors = |pick: fn(&StageFloors) -> f64| f.iter().map(pick).collect::<Vec<f64>>();
        vec![
            Row {
                key: "text_encode",
                floors: floors(|f| f.text_encode),
                name: "text encode",
                cost: c.text_encode,
                time: m.map(|m| m.text_encode),
                peak_host: peak(0),
            },
            Row {
                key: "step",
                floors: floors(|f| f.step),
                name: "one step",
                cost: c.step,
                time: m.map(|m| m.step),
                peak_host: None,
            },
            Row {
                key: "denoise",
                floors: floors(|f| f.denoise),
                name: "all steps",
                cost: c.denoise(),
                time: m.map(|m| m.denoise),
                peak_host: peak(1),
            },
            Row {
                key: "decode",
                floors: floors(|f| f.decode),
                name: "decode",
                cost: c.decode,
                time: m.map(|m| m.decode),
                peak_host: peak(2),
            },
            Row {
                key: "total",
                floors: floors(|f| f.total),
                name: "total",
                cost: c.total(),
                time: m.map(|m| m.total),
                peak_host: m.and_then(|m| m.peak_host.iter().flatten().max().copied()),
            },
        ]
    }

    fn status(&self) -> (&'static str, Option<&str>) {
        match self.measured {
            Ok(Some(_)) => ("ok", None),
            Ok(None) => ("plan-only", None),
            Err(reason) => ("skipped", Some(reason.as_str())),
        }
    }

    fn images_per_s(&self, time: Option<Duration>) -> Option<f64> {
        time.map(|t| self.plan.planned.batch as f64 / t.as_secs_f64().max(1e-9))
    }

    fn json(&self) -> Value {
        let req = &self.plan.planned;
        let (status, reason) = self.status();
        let mut stages = serde_json::Map::new();
        let rows = self.rows();
        for r in &rows {
            let floors: serde_json::Map<String, Value> = DEVICES
                .iter()
                .zip(&r.floors)
                .map(|(d, f)| (d.name.to_string(), json!(f)))
                .collect();
            stages.insert(
                r.key.into(),
                json!({
                    "time_s": r.time.map(|t| t.as_secs_f64()),
                    "matmul_flops": r.cost.matmul_flops,
                    "stencil_flops": r.cost.stencil_flops,
                    "flops": r.cost.flops(),
                    "bytes_bf16": r.cost.bytes(BF16_BYTES),
                    "achieved_flops_per_s": r.time.map(|t| r.cost.flops() as f64 / t.as_secs_f64().max(1e-9)),
                    "floor_s": floors,
                    "peak_host_bytes": r.peak_host,
                }),
            );
        }
        let total = rows.last().and_then(|r| r.time);
        json!({
            "model": self.label,
            "engine": self.engine(),
            "status": status,
            "skipped_reason": reason,
            "height": req.output_size.1,
            "width": req.output_size.0,
            "batch": req.batch,
            "steps": req.steps,
            "guidance": req.guidance,
            "model_batch": req.model_batch(),
            "pag_blocks": req.pag.as_ref().map(|p| p.blocks.clone()),
            "controlnet_scale": req.controlnet,
            "runs": self.args.runs.max(1),
            "warmup": self.args.warmup,
            "tiled_decode": self.plan.planned.vae_tiling.is_some(),
            "stages": stages,
            "images_per_s": self.images_per_s(total),
            "peak_device_bytes": self.peak_device(),
            "step_graph": self.step_graph().map(|g| json!({
                "replayed_steps": g.replayed,
                "eager_steps": g.eager,
                "capture_seconds": g.capture_seconds,
                "capture_error": g.capture_error,
                "reused": g.reused,
                "first_run": self.first_step_graph().map(|(f, denoise)| json!({
                    "capture_seconds": f.capture_seconds,
                    "eager_steps": f.eager,
                    "denoise_seconds": denoise.as_secs_f64(),
                })),
            })),
        })
    }

    fn table(&self) -> String {
        use std::fmt::Write;
        let req = &self.plan.planned;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "sana-run bench: {}, {}×{}, batch {}, {} steps, guidance {}, engine {}, median of {} runs ({} warm-up excluded)",
            self.label,
            req.output_size.0,
            req.output_size.1,
            req.batch,
            req.steps,
            req.guidance,
            self.engine(),
            self.args.runs.max(1),
            self.args.warmup
        );
        if let Some(pag) = &req.pag {
            let _ = writeln!(
                s,
                "perturbed-attention guidance {} on blocks {:?}: the DiT batch is {} (its perturbed copy included)",
                pag.scale,
                pag.blocks,
                req.model_batch()
            );
        }
        if let Some(scale) = req.controlnet {
            let _ = writeln!(
                s,
                "ControlNet at scale {scale}: its blocks are counted in each step (the control image's VAE encode is not)"
            );
        }
        match self.status() {
            (_, Some(reason)) => {
                let _ = writeln!(s, "engine {}: skipped: {reason}", self.engine());
            }
            ("plan-only", _) => {
                let _ = writeln!(s, "plan only: nothing was run");
            }
            _ => {}
        }
        let floors: Vec<String> = DEVICES
            .iter()
            .map(|d| format!("{} floor", d.name))
            .collect();
        let _ = writeln!(
            s,
            "{:<12} {:>10} {:>12} {:>11} {:>10} {:>15} {:>15} {:>10}",
            "stage", "time", "GFLOP", "GB (bf16)", "GFLOP/s", floors[0], floors[1], "peak host"
        );
        for r in self.rows() {
            let floor = |i: usize| {
                let bound = if DEVICES[i].memory_bound(&r.cost, BF16_BYTES) {
                    "mem"
                } else {
                    "cmp"
                };
                format!("{} {bound}", seconds(r.floors[i]))
            };
            let _ = writeln!(
                s,
                "{:<12} {:>10} {:>12.3} {:>11.3} {:>10} {:>15} {:>15} {:>10}",
                r.name,
                r.time.map_or("-".into(), |t| seconds(t.as_secs_f64())),
                r.cost.flops() as f64 / 1e9,
                r.cost.bytes(BF16_BYTES) as f64 / 1e9,
                r.time.map_or("-".into(), |t| format!(
                    "{:.3}",
                    r.cost.flops() as f64 / 1e9 / t.as_secs_f64().max(1e-9)
                )),
                floor(0),
                floor(1),
                r.peak_host
                    .map_or("-".into(), |b| format!("{} MiB", b >> 20)),
            );
        }
        let best: Vec<String> = DEVICES
            .iter()
            .map(|d| {
                let floor = d.stage_floors(&self.plan.costs, BF16_BYTES).total;
                format!("{:.2} on {}", req.batch as f64 / floor, d.name)
            })
            .collect();
        let _ = writeln!(
            s,
            "images/s: {} (floor allows {}); peak device memory: {}",
            self.images_per_s(self.rows().last().and_then(|r| r.time))
                .map_or("-".into(), |v| format!("{v:.4}")),
            best.join(", "),
            self.peak_device()
                .map_or("n/a".into(), |b| format!("{} MiB", b >> 20))
        );
        if let Some(g) = self.step_graph() {
            let _ = match (&g.capture_error, self.first_step_graph()) {
                (Some(why), _) => writeln!(s, "denoise: steps ran without a CUDA graph: {why}"),
                (None, Some((first, denoise))) if g.reused => writeln!(
                    s,
                    "denoise: all {} steps replayed from the CUDA graph kept from the first run, which captured \
                     it in {} beside {} eager step (its denoise {} vs the median {})",
                    g.replayed,
                    seconds(first.capture_seconds),
                    first.eager,
                    seconds(denoise.as_secs_f64()),
                    self.rows()
                        .iter()
                        .find(|r| r.key == "denoise")
                        .and_then(|r| r.time)
                        .map_or("-".into(), |t| seconds(t.as_secs_f64()))
                ),
                (None, _) => writeln!(
                    s,
                    "denoise: {} of {} steps replayed from a CUDA graph (captured in {})",
                    g.replayed,
                    g.replayed + g.eager,
                    seconds(g.capture_seconds)
                ),
            };
        }
        if self.plan.planned.vae_tiling.is_some() {
            let _ = writeln!(
                s,
                "note: the decode runs tiled; its FLOPs are counted untiled"
            );
        }
        s
    }
}

/// Seconds with a unit that keeps three significant digits readable.
fn seconds(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.1} µs", s * 1e6)
    }
}
