//! `sana-run [generate]`: prompt in, PNG out, with a progress bar and a per-stage timing summary on stderr.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Args, ValueEnum};
use sana::engine::Engine;
use sana::image::write_png;
use sana::model::vae_tiling::{VaeTile, VaeTiling};
use sana::pipeline::{Pipeline, Request, Sampler};
use sana::tensor_file::write_f32;
use sana::text::PromptOptions;
use sana::weights::SafetensorsFile;

use crate::progress::Progress;
use crate::{Dtype, EngineKind};

#[derive(Args, Clone)]
pub struct GenerateArgs {
    /// A diffusers Sana folder (default: the tiny random-weight demo model in the repository, which draws noise).
    #[arg(long)]
    model: Option<PathBuf>,
    #[arg(long, default_value = "a photo of a red fox in the snow")]
    prompt: String,
    #[arg(long, default_value = "")]
    negative_prompt: String,
    /// Image height in pixels (a multiple of 32).
    #[arg(long, default_value_t = 1024)]
    height: usize,
    /// Image width in pixels (a multiple of 32).
    #[arg(long, default_value_t = 1024)]
    width: usize,
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
    /// Output PNG; with --batch N > 1, `stem-0.png`, `stem-1.png`, …
    #[arg(long, default_value = "sana.png")]
    output: PathBuf,
    /// Images per prompt.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Tiled VAE decoding: `auto` (tile with diffusers' 512/448-px tiles when an untiled decode would need more than
    /// 4 GiB of activations), `off`, or a tile size in pixels (overlap: an eighth of it).
    #[arg(long, default_value = "auto", value_parser = parse_vae_tile)]
    vae_tile: VaeTile,
}

fn parse_vae_tile(s: &str) -> Result<VaeTile, String> {
    match s {
        "auto" => Ok(VaeTile::default()),
        "off" => Ok(VaeTile::Off),
        size => match size.parse::<usize>() {
            Ok(px) if px >= 8 => Ok(VaeTile::On(VaeTiling::with_tile(px))),
            _ => Err(format!(
                "`{size}` is not auto, off or a tile size in pixels (≥ 8)"
            )),
        },
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum SamplerArg {
    FlowDpmSolver,
    FlowEuler,
}

/// The demo model shipped with the sources (tests/fixtures/tiny-sana).
pub fn demo_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sana")
}

pub fn run(args: GenerateArgs, dtype: Dtype) -> sana::Result<()> {
    on_engine!(args.engine, dtype, step_graphs: !args.no_step_graph, |e| generate(e, &args))
}

fn generate<E: Engine>(e: &E, args: &GenerateArgs) -> sana::Result<()> {
    let model = match &args.model {
        Some(m) => m.clone(),
        None => {
            eprintln!(
                "warning: no --model given: using the tiny random-weight demo model, which produces noise; pass \
                 --model DIR with a diffusers Sana folder for real images"
            );
            demo_model()
        }
    };
    let latents = match &args.latents {
        Some(path) => {
            let t = SafetensorsFile::open(path)?.get("latents")?.to_host()?;
            Some(if t.shape()[0] == 1 && args.batch > 1 {
                let mut shape = t.shape().to_vec();
                shape[0] = args.batch;
                sana::HostTensor::new(shape, t.data().repeat(args.batch))?
            } else {
                t
            })
        }
        None => None,
    };
    let mut prompt_options = PromptOptions::default();
    if args.no_chi {
        prompt_options.complex_human_instruction.clear();
    }
    let req = Request {
        prompt: args.prompt.clone(),
        negative_prompt: args.negative_prompt.clone(),
        height: args.height,
        width: args.width,
        steps: 0,
        guidance: args.guidance,
        seed: args.seed,
        sampler: args.sampler.map(|s| match s {
            SamplerArg::FlowDpmSolver => Sampler::FlowDpmSolver,
            SamplerArg::FlowEuler => Sampler::FlowEuler,
        }),
        prompt_options,
        resolution_binning: !args.no_resolution_binning,
        latents,
        step_noise: None,
        batch: args.batch,
        vae_tile: args.vae_tile,
    };
    let outputs = output_paths(&args.output, args.batch);

    let start = Instant::now();
    let pipe = Pipeline::load(e, &model)?;
    let load = start.elapsed();
    let req = Request {
        steps: args.steps.unwrap_or_else(|| pipe.default_steps()),
        ..req
    };
    let (gh, gw) = pipe.generation_size(&req)?;
    eprintln!(
        "generating {}×{} (at {gh}×{gw}), {} steps, guidance {}, engine {}",
        req.width,
        req.height,
        req.steps,
        req.guidance,
        e.name()
    );
    let mut progress = Progress::new();
    let out = pipe.generate(e, &req, &mut |i, n| progress.update(i, n))?;

    if let Some(path) = &args.save_latents {
        write_f32(path, &[("latents", &out.latents)])?;
    }
    for (image, path) in out.images.iter().zip(&outputs) {
        write_png(path, image)?;
        eprintln!("wrote {}", path.display());
    }
    let t = out.times;
    eprintln!(
        "time: load {:.2} s, text encode {:.2} s, denoise {:.2} s ({:.3} s/step), decode {:.2} s",
        load.as_secs_f64(),
        t.text_encode.time.as_secs_f64(),
        t.denoise.time.as_secs_f64(),
        t.denoise.time.as_secs_f64() / req.steps.max(1) as f64,
        t.decode.time.as_secs_f64()
    );
    if let Some(r) = e.step_graph_report() {
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

/// `out.png` for one image; `out-0.png`, `out-1.png`, … for a batch.
fn output_paths(output: &Path, batch: usize) -> Vec<PathBuf> {
    if batch <= 1 {
        return vec![output.to_path_buf()];
    }
    let stem = output.file_stem().unwrap_or_default().to_string_lossy();
    let ext = output
        .extension()
        .map_or_else(|| "png".into(), |x| x.to_string_lossy());
    (0..batch)
        .map(|i| output.with_file_name(format!("{stem}-{i}.{ext}")))
        .collect()
}
