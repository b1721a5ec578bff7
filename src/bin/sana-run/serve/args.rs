//! The `sana-run serve` command line. Flag names are contracts (deploy/, the README and the tests use them).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::EngineKind;

#[derive(Args, Clone)]
pub struct ServeArgs {
    /// A diffusers Sana folder, loaded once per device and kept resident.
    #[arg(long)]
    pub model: PathBuf,
    /// Engine of every worker (default: the GPU when usable, else cpu).
    #[arg(long, value_enum, default_value_t = EngineKind::Auto)]
    pub engine: EngineKind,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any free port; the bound address is printed on stdout).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// GPU ordinals, one worker each with its own models (with the cpu or emu engine, the number of workers).
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pub devices: Vec<usize>,
    /// Requests waiting for a worker before new ones are refused with 429 and Retry-After.
    #[arg(long, default_value_t = 64)]
    pub max_queue: usize,
    /// Images in one generation: queued requests of the same size, steps and options are merged up to this.
    #[arg(long, default_value_t = 4)]
    pub max_batch: usize,
    /// How long a worker waits for more requests to merge into a batch that is not full, in milliseconds.
    #[arg(long, default_value_t = 10)]
    pub batch_window: u64,
    /// A file holding the API key: requests to /v1/ must then send `Authorization: Bearer KEY`.
    #[arg(long)]
    pub api_key_file: Option<PathBuf>,
    /// A folder of LoRA adapters (`NAME.safetensors`, diffusers/PEFT or Kohya) that requests apply by name with the
    /// `lora` field (`"NAME[:WEIGHT]"` or a list); read and checked against the model at start.
    #[arg(long)]
    pub lora_dir: Option<PathBuf>,
    /// On SIGTERM, how long in-flight and queued requests may still run, in seconds, before they are cancelled.
    #[arg(long, default_value_t = 30)]
    pub shutdown_deadline: u64,
}

impl ServeArgs {
    pub fn batch_window(&self) -> Duration {
        Duration::from_millis(self.batch_window)
    }

    pub fn shutdown_deadline(&self) -> Duration {
        Duration::from_secs(self.shutdown_deadline)
    }
}
