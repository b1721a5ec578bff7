//! `sana-run`: the command-line front end of the `sana` crate. Subcommand names and flags are contracts that other
//! tools rely on; change them only together with every caller.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use sana::engine::cpu::CpuEngine;

#[derive(Parser)]
#[command(
    name = "sana-run",
    version,
    about = "Run NVIDIA Sana text-to-image models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one model component on tensors from a safetensors file (for checking against the reference).
    Eval {
        #[command(subcommand)]
        component: EvalComponent,
    },
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
}

#[derive(Clone, Copy, ValueEnum)]
enum EngineKind {
    /// Pure-Rust f32 reference.
    Cpu,
}

fn run(cli: Cli) -> sana::Result<()> {
    match cli.command {
        Command::Eval { component } => match component {
            EvalComponent::Transformer {
                model,
                inputs,
                output,
                engine,
            } => match engine {
                EngineKind::Cpu => sana::eval::transformer(&CpuEngine, &model, &inputs, &output),
            },
        },
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Every variant's message already carries its cause; no chain to print.
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
