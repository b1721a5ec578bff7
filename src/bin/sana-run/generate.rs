//! `sana-run [generate]`: prompt in, PNG out, with a progress bar and a per-stage timing summary on stderr.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Args, ValueEnum};
use sana::image::stage_png;
use sana::lora::{Adapter, LoraMode};
use sana::tensor_file::stage_f32;
use sana::weights::SafetensorsFile;
use sana::{Control, Event, OpenOptions, Request, Sampler, VaeTile, VaeTiling};

use crate::progress::Progress;
use crate::{Dtype, EngineKind};

#[derive(Args, Clone)]
pub struct GenerateArgs {
    /// A diffusers Sana folder (default: the demo model in the repository, models/sana-shapes, which draws one
    /// coloured shape at 64×64 from prompts like "a red circle on the left, on a white background").
    #[arg(long)]
    model: Option<PathBuf>,
    #[arg(
        long,
        default_value = "a red circle on the left, on a white background"
    )]
    prompt: String,
    #[arg(long, default_value = "")]
    negative_prompt: String,
    /// Image height in pixels (a multiple of 32; default: the model's trained size, with --width).
    #[arg(long)]
    height: Option<usize>,
    /// Image width in pixels (a multiple of 32; default: the model's trained size, with --height).
    #[arg(long)]
    width: Option<usize>,
    /// Sampler steps (default: 20; 2 for Sana-Sprint).
    #[arg(long)]
    steps: Option<usize>,
    /// Classifier-free guidance scale (off at 1 or below).
    #[arg(long, default_value_t = 4.5)]
    guidance: f32,
    /// Seed of the initial noise; image b of a batch uses seed + b.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Sampler (default: the model folder's scheduler).
    #[arg(long, value_enum)]
    sampler: Option<SamplerArg>,
    /// Engine (default: the GPU when usable, else cpu).
    #[arg(long, value_enum, default_value_t = EngineKind::Auto)]
    engine: EngineKind,
    /// Disable the complex human instruction prefix.
    #[arg(long)]
    no_chi: bool,
    /// On a GPU, queue every denoising step op by op instead of replaying the step captured as a CUDA graph.
    #[arg(long)]
    no_step_graph: bool,
    /// Generate at exactly --height × --width instead of the nearest trained aspect-ratio bin.
    #[arg(long)]
    no_resolution_binning: bool,
    /// Initial latents: tensor `latents` F32 (1,C,h,w) (or (batch,C,h,w)) replacing the seeded noise.
    #[arg(long)]
    latents: Option<PathBuf>,
    /// Write the final latents (before the VAE) as tensor `latents` to this safetensors file.
    #[arg(long)]
    save_latents: Option<PathBuf>,
    /// Output PNG (`-`: standard output); with --batch N > 1, `stem-0.png`, `stem-1.png`, …
    #[arg(long, default_value = "sana.png")]
    output: PathBuf,
    /// Images per prompt.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Tiled VAE decoding: `auto` (tile with diffusers' 512/448-px tiles when an untiled decode would need more than
    /// 4 GiB of activations), `off`, or a tile size in pixels overlapping by an eighth: a multiple of 8× the VAE's
    /// factor (256, 512, 768, … for the published models).
    #[arg(long, default_value = "auto", value_parser = parse_vae_tile)]
    vae_tile: VaeTile,
    /// A LoRA adapter for the transformer (diffusers/PEFT or Kohya safetensors), its ΔW times WEIGHT (default 1.0);
    /// repeat for several at once.
    #[arg(long, value_name = "FILE[:WEIGHT]")]
    lora: Vec<String>,
    /// Sana-Sprint image-to-image (SanaSprintImg2ImgPipeline): start from this PNG, resized to the generation size
    /// (Lanczos, no crop), encoded by the VAE and noised to the schedule's starting time. Sprint folders only.
    #[arg(long, value_name = "PNG")]
    init_image: Option<PathBuf>,
    /// How much of the schedule image-to-image runs, in (0, 1] (default 0.6): 1 starts from pure noise's time,
    /// smaller keeps more of --init-image.
    #[arg(long, requires = "init_image")]
    strength: Option<f64>,
    /// ControlNet (SanaControlNetPipeline): condition on this PNG through the folder's controlnet/, resized to the
    /// generation size (Lanczos, no crop) and encoded by the VAE.
    #[arg(long, value_name = "PNG")]
    control_image: Option<PathBuf>,
    /// ControlNet's conditioning scale: its residuals are multiplied by it (default 1.0).
    #[arg(long, value_name = "S", requires = "control_image")]
    control_scale: Option<f32>,
    /// Perturbed-attention guidance (SanaPAGPipeline) at this scale (off at 0): the transformer also runs a copy of
    /// the batch whose self-attention in --pag-layers is the identity. Flow samplers only.
    #[arg(long, value_name = "S")]
    pag_scale: Option<f32>,
    /// PAG's adaptive scaling: the scale at timestep t is max(0, S − A·(1000 − t)) (default 0: constant).
    #[arg(long, value_name = "A", requires = "pag_scale")]
    pag_adaptive_scale: Option<f32>,
    /// The self-attention layers PAG perturbs, comma-separated, as diffusers names them (default
    /// transformer_blocks.0); each also takes the blocks whose index it prefixes, as diffusers' regex match does.
    #[arg(
        long,
        value_name = "transformer_blocks.N,…",
        value_delimiter = ',',
        requires = "pag_scale"
    )]
    pag_layers: Option<Vec<String>>,
    /// How adapters apply: `merged` into the weights at load (no per-step cost), `unmerged` (two small GEMMs per
    /// targeted layer), or `auto` (merged here: one generation per run).
    #[arg(long, value_enum, default_value_t = LoraModeArg::Auto)]
    lora_mode: LoraModeArg,
}

#[derive(Clone, Copy, ValueEnum)]
enum LoraModeArg {
    Auto,
    Merged,
    Unmerged,
}

fn parse_vae_tile(s: &str) -> Result<VaeTile, String> {
    match s {
        "auto" => Ok(VaeTile::default()),
        "off" => Ok(VaeTile::Off),
        size => match size.parse::<usize>() {
            // The model decides which sizes fit its VAE (the request plan checks them before anything runs).
            Ok(px) if px > 0 => Ok(VaeTile::On(VaeTiling::with_tile(px))),
            _ => Err(format!(
                "`{size}` is not auto, off or a tile size in pixels (a multiple of 8× the VAE's factor: 256, \
                 512, … for the published models)"
            )),
        },
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum SamplerArg {
    FlowDpmSolver,
    FlowEuler,
}

/// The demo model shipped with the sources (models/sana-shapes, trained by tools/train_demo.py).
pub fn demo_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/sana-shapes")
}

pub fn run(args: GenerateArgs, dtype: Dtype) -> sana::Result<()> {
    let model = match &args.model {
        Some(m) => m.clone(),
        None => {
            eprintln!(
                "note: no --model given: using the demo model {}, which only draws coloured shapes (\"a red circle \
                 on the left, on a white background\"); pass --model DIR with a diffusers Sana folder for real images",
                demo_model().display()
            );
            demo_model()
        }
    };
    let mut req = Request::new(args.prompt.clone())
        .negative_prompt(args.negative_prompt.clone())
        .guidance(args.guidance)
        .seed(args.seed)
        .batch(args.batch)
        .resolution_binning(!args.no_resolution_binning)
        .complex_human_instruction(!args.no_chi)
        .vae_tile(args.vae_tile);
    if let (Some(w), Some(h)) = (args.width, args.height) {
        req = req.size(w, h);
    } else if args.width.is_some() || args.height.is_some() {
        return Err(sana::Error::InvalidInput(
            "give both --width and --height, or neither (the model's trained size)".into(),
        ));
    }
    if let Some(steps) = args.steps {
        req = req.steps(steps);
    }
    if let Some(s) = args.sampler {
        req = req.sampler(match s {
            SamplerArg::FlowDpmSolver => Sampler::FlowDpmSolver,
            SamplerArg::FlowEuler => Sampler::FlowEuler,
        });
    }
    if let Some(path) = &args.latents {
        let t = SafetensorsFile::open(path)?.get("latents")?.to_host()?;
        req = req.latents(if t.shape().first() == Some(&1) && args.batch > 1 {
            let mut shape = t.shape().to_vec();
            shape[0] = args.batch;
            sana::HostTensor::new(shape, t.data().repeat(args.batch))?
        } else {
            t
        });
    }
    if let Some(path) = &args.control_image {
        req = req.control_image(sana::image::read_png(path)?);
        if let Some(scale) = args.control_scale {
            req = req.control_scale(scale);
        }
    }
    if let Some(scale) = args.pag_scale {
        req = req.pag_scale(scale);
    }
    if let Some(adaptive) = args.pag_adaptive_scale {
        req = req.pag_adaptive_scale(adaptive);
    }
    if let Some(layers) = &args.pag_layers {
        req = req.pag_layers(layers.clone());
    }
    if let Some(path) = &args.init_image {
        req = req.init_image(sana::image::read_png(path)?);
        if let Some(strength) = args.strength {
            req = req.strength(strength);
        }
    }
    if args.output == Path::new("-") && args.batch > 1 {
        return Err(sana::Error::InvalidInput(format!(
            "--output - writes one PNG to standard output; --batch {} needs a file name",
            args.batch
        )));
    }
    // Before any model loads: a typo in an output path costs a second, not a generation. Every image of a batch
    // goes to the first one's folder.
    for path in [output_path(&args.output, args.batch, 0)]
        .iter()
        .chain(&args.save_latents)
    {
        check_writable(path)?;
    }

    // Read before the model: a wrong adapter file fails in milliseconds.
    let adapters = args
        .lora
        .iter()
        .map(|spec| {
            let (path, weight) = Adapter::parse_spec(spec)?;
            Adapter::open(path, weight)
        })
        .collect::<sana::Result<Vec<_>>>()?;

    let start = Instant::now();
    let sana = OpenOptions::new(args.engine.device()?)
        .dtype(dtype.into())
        .step_graphs(!args.no_step_graph)
        .measure_host_memory(true)
        .open(&model)?;
    if !adapters.is_empty() {
        sana.set_adapters(
            &adapters,
            match args.lora_mode {
                LoraModeArg::Auto => LoraMode::Auto,
                LoraModeArg::Merged => LoraMode::Merged,
                LoraModeArg::Unmerged => LoraMode::Unmerged,
            },
        )?;
    }
    let load = start.elapsed();
    if let Some(why) = sana.auto_fallback() {
        eprintln!("note: running on the cpu engine: {why}");
    }
    let plan = sana.plan(&req)?;
    let ((w, h), (gw, gh)) = (plan.output_size, plan.generation_size);
    eprintln!(
        "generating {w}×{h} (width×height; at {gw}×{gh}), {} steps, guidance {}, {}",
        plan.steps,
        plan.guidance,
        sana.device_description()
    );
    let mut progress = Progress::new();
    let out = sana.generate_with(&req, |event| {
        if let Event::Step { step, steps } = event {
            progress.update(step, steps);
        }
        Control::Continue
    })?;

    // Every output is written in full beside its target first, then all are moved into place: a failure leaves
    // none of them (not the latents when a PNG fails, not image 0 when image 1 fails).
    let mut staged = Vec::with_capacity(out.images.len() + 1);
    let mut paths = Vec::with_capacity(out.images.len());
    for (i, image) in out.images.iter().enumerate() {
        let path = output_path(&args.output, args.batch, i);
        staged.push(stage_png(&path, image)?);
        paths.push(path);
    }
    if let Some(path) = &args.save_latents {
        staged.push(stage_f32(path, &[("latents", &out.latents)])?);
    }
    for file in staged {
        file.commit()?;
    }
    for path in &paths {
        eprintln!("wrote {}", path.display());
    }
    let t = out.times;
    eprintln!(
        "time: load {:.2} s, text encode {:.2} s, denoise {:.2} s ({:.3} s/step), decode {:.2} s",
        load.as_secs_f64(),
        t.text_encode.time.as_secs_f64(),
        t.denoise.time.as_secs_f64(),
        t.denoise.time.as_secs_f64() / plan.steps.max(1) as f64,
        t.decode.time.as_secs_f64()
    );
    if let Some(r) = sana.step_graph_report() {
        match &r.capture_error {
            None => eprintln!(
                "denoise: {} of {} steps replayed from a CUDA graph (captured in {:.1} ms)",
                r.replayed,
                r.replayed + r.eager,
                r.capture_seconds * 1e3
            ),
            Some(why) => eprintln!("denoise: steps ran without a CUDA graph: {why}"),
        }
    }
    eprintln!(
        "peak host memory: text encode {}, denoise {}, decode {}",
        mib(t.text_encode.peak_host_bytes),
        mib(t.denoise.peak_host_bytes),
        mib(t.decode.peak_host_bytes)
    );
    if t.denoise.peak_device_bytes.is_some() {
        eprintln!(
            "peak device memory: text encode {}, denoise {}, decode {}",
            mib(t.text_encode.peak_device_bytes),
            mib(t.denoise.peak_device_bytes),
            mib(t.decode.peak_device_bytes)
        );
    }
    Ok(())
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or_else(
        || "n/a".into(),
        |b| format!("{:.0} MiB", b as f64 / f64::from(1 << 20)),
    )
}

/// Refuses an output path whose folder does not exist or that names a folder.
fn check_writable(path: &Path) -> sana::Result<()> {
    let fail = |reason: &str| sana::Error::Image {
        path: path.to_path_buf(),
        reason: reason.into(),
    };
    if path.is_dir() {
        return Err(fail("is a folder; give a file name"));
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(fail("its folder does not exist"));
    }
    Ok(())
}

/// Image `i`'s file: `out.png` for one image; `out-0.png`, `out-1.png`, … for a batch.
fn output_path(output: &Path, batch: usize, i: usize) -> PathBuf {
    if output == Path::new("-") {
        // Standard output is written into like any device (src/atomic_write.rs).
        return PathBuf::from("/dev/stdout");
    }
    if batch <= 1 {
        return output.to_path_buf();
    }
    let stem = output.file_stem().unwrap_or_default().to_string_lossy();
    let ext = output
        .extension()
        .map_or_else(|| "png".into(), |x| x.to_string_lossy());
    output.with_file_name(format!("{stem}-{i}.{ext}"))
}
