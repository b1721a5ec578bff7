//! `sana-run`: the command-line front end of the `sana` crate. Subcommand names and flags are contracts that other
//! tools rely on; change them only together with every caller.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use sana::engine::StorageDtype;

use bench::BenchArgs;
use generate::GenerateArgs;

#[derive(Parser)]
#[command(
    name = "sana-run",
    version,
    about = "Run NVIDIA Sana text-to-image models",
    long_about = "Run NVIDIA Sana text-to-image models. Without a subcommand, generates an image (see `generate`).",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    generate: GenerateArgs,
    /// Storage dtype of `--engine cuda` (bf16 or f16) and `--engine emu` (the cpu engine always computes in f32).
    #[arg(long, global = true, value_enum, default_value_t = Dtype::Bf16)]
    dtype: Dtype,
}

#[derive(Subcommand)]
enum Command {
    /// Generate images from a prompt (the default when no subcommand is given).
    Generate(Box<GenerateArgs>),
    /// Time the pipeline per stage (median of --runs after a warm-up) beside its FLOP/byte model and roofline
    /// floors; `--variant` builds a published architecture with synthetic weights in memory.
    Bench(BenchArgs),
    /// Describe a diffusers Sana folder: variant, parameter counts, dtypes, missing or unexpected tensors.
    Inspect {
        /// A diffusers pipeline folder.
        dir: PathBuf,
    },
    /// Run one model component on tensors from a safetensors file (for checking against the reference).
    Eval {
        #[command(subcommand)]
        component: EvalComponent,
    },
    /// Serve images over HTTP (OpenAI Images API): batched, one worker per device, bounded queue (feature `server`).
    #[cfg(feature = "server")]
    Serve(serve::ServeArgs),
}

#[derive(Subcommand)]
enum EvalComponent {
    /// SanaTransformer2DModel. IN: hidden_states F32 (B,C,H,W), encoder_hidden_states F32 (B,L,D), timestep F32 (B),
    /// encoder_attention_mask I64|F32 (B,L) (guidance F32 (B) for Sprint). OUT: output F32 (B,C,H,W).
    Transformer {
        /// A diffusers pipeline folder (or its transformer/ folder).
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        inputs: PathBuf,
        #[arg(long)]
        output: PathBuf,
        #[arg(long, value_enum, default_value_t = EngineKind::Cpu)]
        engine: EngineKind,
    },
    /// Gemma-2 text encoder. IN: input_ids I64 (B,L), attention_mask I64|F32 (B,L). OUT: last_hidden_state F32 (B,L,D).
    TextEncoder {
        /// A diffusers pipeline folder (or its text_encoder/ folder).
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        inputs: PathBuf,
        #[arg(long)]
        output: PathBuf,
        #[arg(long, value_enum, default_value_t = EngineKind::Cpu)]
        engine: EngineKind,
        /// Skip the attention soft-cap (transformers 4.48–5.20 SDPA numbers; default: eager, soft-capped).
        #[arg(long)]
        no_attn_softcap: bool,
    },
    /// AutoencoderDC decoder. IN: latent F32 (B,C,h,w), used as given (no scaling-factor division). OUT: image F32
    /// (B,3,H,W), the raw decoder output (no clamp).
    VaeDecode {
        /// A diffusers pipeline folder (or its vae/ folder).
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        inputs: PathBuf,
        #[arg(long)]
        output: PathBuf,
        #[arg(long, value_enum, default_value_t = EngineKind::Cpu)]
        engine: EngineKind,
        /// Decode in tiles of this many pixels (overlap: an eighth), as diffusers' `enable_tiling`; default untiled.
        #[arg(long)]
        vae_tile: Option<usize>,
    },
    /// SanaPipeline.encode_prompt. OUT: prompt_embeds, negative_prompt_embeds F32 (B,M,D); prompt_attention_mask,
    /// negative_prompt_attention_mask I64 (B,M). Prompts: every --prompt, then every --prompt-file.
    EncodePrompt {
        /// A diffusers pipeline folder (with tokenizer/ and text_encoder/).
        #[arg(long)]
        model: PathBuf,
        /// A prompt; repeat for a batch.
        #[arg(long)]
        prompt: Vec<String>,
        /// A file holding one prompt (UTF-8, used verbatim before lower-casing and stripping).
        #[arg(long)]
        prompt_file: Vec<PathBuf>,
        /// One for every prompt, or one per prompt (default "").
        #[arg(long)]
        negative_prompt: Vec<String>,
        /// Disable the complex human instruction prefix.
        #[arg(long)]
        no_chi: bool,
        #[arg(long, default_value_t = sana::text::MAX_SEQUENCE_LENGTH)]
        max_sequence_length: usize,
        #[arg(long)]
        output: PathBuf,
        #[arg(long, value_enum, default_value_t = EngineKind::Cpu)]
        engine: EngineKind,
        /// Skip the attention soft-cap (transformers 4.48–5.20 SDPA numbers; default: eager, soft-capped).
        #[arg(long)]
        no_attn_softcap: bool,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum EngineKind {
    /// The GPU when one is usable, else the cpu engine (with a one-line notice saying why).
    Auto,
    /// Pure-Rust f32 reference.
    Cpu,
    /// The CUDA kernels compiled for the host, on values stored in `--dtype` (slow; for checking kernels).
    Emu,
    /// An NVIDIA GPU through cudarc.
    Cuda,
}

impl EngineKind {
    /// The library's device for this engine (`emu` only in builds with the `emu` feature).
    fn device(self) -> sana::Result<sana::Device> {
        Ok(match self {
            EngineKind::Auto => sana::Device::Auto,
            EngineKind::Cpu => sana::Device::Cpu,
            EngineKind::Cuda => sana::Device::Cuda(0),
            #[cfg(feature = "emu")]
            EngineKind::Emu => sana::Device::Emu,
            #[cfg(not(feature = "emu"))]
            EngineKind::Emu => return Err(emu_not_built()),
        })
    }
}

/// `--engine emu` in a build without the emulation engine.
#[cfg(not(feature = "emu"))]
fn emu_not_built() -> sana::Error {
    sana::Error::EngineUnavailable {
        engine: "emu",
        reason: "this sana-run was built without the `emu` feature".into(),
    }
}

/// Storage dtype of the `cuda` and `emu` engines.
#[derive(Clone, Copy, ValueEnum)]
enum Dtype {
    Bf16,
    F16,
    F32,
}

impl From<Dtype> for StorageDtype {
    fn from(d: Dtype) -> Self {
        match d {
            Dtype::Bf16 => StorageDtype::Bf16,
            Dtype::F16 => StorageDtype::F16,
            Dtype::F32 => StorageDtype::F32,
        }
    }
}

/// Runs `$body` with `$e` bound to the engine `$kind` names (model code is generic, so each arm monomorphises).
/// `step_graphs: false` makes a GPU queue every denoising step op by op instead of replaying a CUDA graph.
macro_rules! on_engine {
    ($kind:expr, $dtype:expr, |$e:ident| $body:expr) => {
        on_engine!($kind, $dtype, step_graphs: true, |$e| $body)
    };
    ($kind:expr, $dtype:expr, step_graphs: $graphs:expr, |$e:ident| $body:expr) => {
        match $kind {
            EngineKind::Cpu => {
                let $e = &sana::engine::cpu::CpuEngine;
                $body
            }
            #[cfg(feature = "emu")]
            EngineKind::Emu => {
                let $e = &sana::engine::emu::EmuEngine::new($dtype.into());
                $body
            }
            #[cfg(not(feature = "emu"))]
            EngineKind::Emu => Err($crate::emu_not_built()),
            // The macro's value is the error (not an early return), so callers can tell an unavailable engine apart.
            EngineKind::Cuda => match $crate::open_gpu($dtype) {
                Ok(gpu) => {
                    gpu.use_step_graphs($graphs);
                    let $e = &gpu;
                    $body
                }
                Err(err) => Err(err),
            },
            EngineKind::Auto => match $crate::open_gpu($dtype) {
                Ok(gpu) => {
                    gpu.use_step_graphs($graphs);
                    let $e = &gpu;
                    $body
                }
                Err(err) => {
                    eprintln!("note: running on the cpu engine: {err}");
                    let $e = &sana::engine::cpu::CpuEngine;
                    $body
                }
            },
        }
    };
}

/// Opens GPU 0 and says which device runs.
fn open_gpu(dtype: Dtype) -> sana::Result<sana::engine::cuda::CudaEngine> {
    let gpu = sana::engine::cuda::CudaEngine::new(0, dtype.into())?;
    let info = gpu.info();
    eprintln!(
        "GPU: {} (sm_{}{}, {} MiB), {:?} storage",
        info.name,
        info.compute_capability.0,
        info.compute_capability.1,
        info.total_bytes >> 20,
        gpu.dtype()
    );
    Ok(gpu)
}

// After the macro: textual scoping makes `on_engine!` visible to these modules.
mod bench;
mod generate;
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod heap;
#[cfg(unix)]
mod interrupt;
mod progress;
#[cfg(feature = "server")]
mod serve;

fn run(cli: Cli) -> sana::Result<()> {
    match cli.command {
        None => generate::run(cli.generate, cli.dtype),
        Some(Command::Generate(args)) => generate::run(*args, cli.dtype),
        Some(Command::Bench(args)) => bench::run(args, cli.dtype),
        #[cfg(feature = "server")]
        Some(Command::Serve(args)) => serve::run(args, cli.dtype),
        Some(Command::Inspect { dir }) => {
            let report = sana::inspect::inspect(&dir)?;
            print!("{report}");
            if report.is_clean() {
                Ok(())
            } else {
                Err(sana::Error::InvalidInput(format!(
                    "{}: the folder has the problems listed above",
                    dir.display()
                )))
            }
        }
        Some(Command::Eval { component }) => match component {
            EvalComponent::VaeDecode {
                model,
                inputs,
                output,
                engine,
                vae_tile,
            } => on_engine!(engine, cli.dtype, |e| sana::eval::vae_decode(
                e,
                &model,
                &inputs,
                &output,
                vae_tile.map(sana::model::vae_tiling::VaeTiling::with_tile)
            )),
            EvalComponent::Transformer {
                model,
                inputs,
                output,
                engine,
            } => on_engine!(engine, cli.dtype, |e| sana::eval::transformer(
                e, &model, &inputs, &output
            )),
            EvalComponent::TextEncoder {
                model,
                inputs,
                output,
                engine,
                no_attn_softcap,
            } => on_engine!(engine, cli.dtype, |e| sana::eval::text_encoder(
                e,
                &model,
                &inputs,
                &output,
                !no_attn_softcap
            )),
            EvalComponent::EncodePrompt {
                model,
                mut prompt,
                prompt_file,
                negative_prompt,
                no_chi,
                max_sequence_length,
                output,
                engine,
                no_attn_softcap,
            } => {
                for path in &prompt_file {
                    prompt.push(sana::text::read_prompt_file(path)?);
                }
                let mut opts = sana::text::PromptOptions {
                    max_sequence_length,
                    ..Default::default()
                };
                if no_chi {
                    opts.complex_human_instruction.clear();
                }
                on_engine!(engine, cli.dtype, |e| sana::eval::encode_prompt(
                    e,
                    &model,
                    &prompt,
                    &negative_prompt,
                    &opts,
                    !no_attn_softcap,
                    &output,
                ))
            }
        },
    }
}

/// The flag that sets request field `field` (`max_sequence_length` → `max-sequence-length`).
fn flag_of(field: &str) -> String {
    field.replace('_', "-")
}

/// `sana-run serve`: it drains on SIGTERM (serve/shutdown.rs) and writes no files, so it keeps the runtime's
/// signal handling; every other command ends at once on a signal, removing its temporary files.
#[cfg(unix)]
fn serves(cli: &Cli) -> bool {
    #[cfg(feature = "server")]
    if matches!(cli.command, Some(Command::Serve(_))) {
        return true;
    }
    let _ = cli;
    false
}

fn main() -> ExitCode {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    heap::reuse_freed_tensors();
    let cli = Cli::parse();
    #[cfg(unix)]
    if !serves(&cli) {
        interrupt::install();
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // The library names a request's fields; the command line names its flags.
        Err(sana::Error::Request { field, reason }) => {
            eprintln!("error: --{} {reason}", flag_of(field));
            ExitCode::FAILURE
        }
        Err(e) => {
            // Every variant's message already carries its cause; no chain to print.
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
