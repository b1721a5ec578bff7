//! `sana-run serve`: an HTTP image service (OpenAI Images API) that batches requests, runs one worker per device,
//! and says when it is full. It keeps no state between requests, so it scales out as replicas behind any load
//! balancer (deploy/, README "Serving over HTTP").

mod adapters;
mod args;
mod auth;
mod errors;
mod images_api;
mod log;
mod metrics;
mod queue;
mod routes;
mod shutdown;
mod worker;

use std::future::IntoFuture;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use sana::{OpenOptions, Request, Sana};
use tokio::sync::Notify;

use adapters::AdapterLibrary;
pub use args::ServeArgs;
use auth::ApiKey;
use metrics::Metrics;
use queue::Queue;
use worker::Worker;

use crate::{Dtype, EngineKind};

/// What the handlers share.
pub struct App {
    queue: Arc<Queue>,
    metrics: Arc<Metrics>,
    api_key: Option<ApiKey>,
    /// The LoRA adapters requests may name (none without `--lora-dir`).
    adapters: Arc<AdapterLibrary>,
    /// The first worker's model, once every worker's is loaded: requests are planned (checked) on it.
    planner: OnceLock<Arc<Sana>>,
    /// Shutting down: new requests are refused, /health answers 503.
    draining: AtomicBool,
    /// Past the shutdown deadline: running generations are cancelled.
    abort: Arc<AtomicBool>,
    next_id: AtomicU64,
    workers: usize,
    max_batch: usize,
}

impl App {
    fn is_ready(&self) -> bool {
        self.planner.get().is_some()
    }

    fn planner(&self) -> Option<&Sana> {
        self.planner.get().map(|s| &**s)
    }

    fn next_request_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Seconds until a refused client may find room: the batches ahead of it, spread over the workers, at the mean
    /// generation time so far.
    fn retry_after_s(&self) -> u64 {
        let batches_ahead = self
            .queue
            .depth()
            .div_ceil(self.max_batch * self.workers)
            .max(1);
        (self.metrics.mean_generation_seconds() * batches_ahead as f64).ceil() as u64
    }
}

pub fn run(args: ServeArgs, dtype: Dtype) -> sana::Result<()> {
    let api_key = args.api_key_file.as_deref().map(ApiKey::read).transpose()?;
    // Read before the models: a wrong adapter file fails in milliseconds.
    let adapters = match &args.lora_dir {
        Some(dir) => AdapterLibrary::open(dir)?,
        None => AdapterLibrary::default(),
    };
    for (flag, value) in [
        ("--max-batch", args.max_batch),
        ("--max-queue", args.max_queue),
        ("--devices", args.devices.len()),
    ] {
        if value == 0 {
            return Err(sana::Error::InvalidInput(format!(
                "{flag} must be at least 1"
            )));
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| sana::Error::InvalidInput(format!("cannot start the async runtime: {e}")))?;
    let served = runtime.block_on(serve(args, dtype, api_key, adapters));
    // The worker threads are blocked in the queue or in a cancelled generation; they end with the process.
    runtime.shutdown_timeout(Duration::from_secs(1));
    served
}

async fn serve(
    args: ServeArgs,
    dtype: Dtype,
    api_key: Option<ApiKey>,
    adapters: AdapterLibrary,
) -> sana::Result<()> {
    let bind_error = |source| {
        sana::Error::InvalidInput(format!(
            "cannot listen on {}:{}: {source}",
            args.host, args.port
        ))
    };
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .map_err(bind_error)?;
    let address = listener.local_addr().map_err(bind_error)?;
    // The one line on stdout: tests and scripts read the bound port (with --port 0) from it.
    println!("listening on http://{address}");
    let _ = std::io::stdout().flush();

    let app = Arc::new(App {
        queue: Arc::new(Queue::new(args.max_queue)),
        metrics: Arc::new(Metrics::default()),
        api_key,
        adapters: Arc::new(adapters),
        planner: OnceLock::new(),
        draining: AtomicBool::new(false),
        abort: Arc::new(AtomicBool::new(false)),
        next_id: AtomicU64::new(0),
        workers: args.devices.len(),
        max_batch: args.max_batch,
    });
    start_workers(&args, dtype, Arc::clone(&app));

    let stop_accepting = Arc::new(Notify::new());
    let mut server = tokio::spawn(
        axum::serve(listener, routes::router(Arc::clone(&app)))
            .with_graceful_shutdown(shutdown::when_notified(Arc::clone(&stop_accepting)))
            .into_future(),
    );
    tokio::select! {
        ended = &mut server => {
            return match ended {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(sana::Error::InvalidInput(format!("the HTTP server failed: {e}"))),
                Err(e) => Err(sana::Error::InvalidInput(format!("the HTTP server failed: {e}"))),
            };
        }
        () = shutdown::requested() => {}
    }
    shutdown::drain(&app, &stop_accepting, server, args.shutdown_deadline()).await;
    log::event("stopped", serde_json::json!({}));
    Ok(())
}

/// Loads every device's models on threads of their own (the HTTP server answers /health meanwhile), warms them up,
/// then starts one worker per device. A model that cannot load ends the process: a replica that can never be ready
/// should fail where its orchestrator sees it.
fn start_workers(args: &ServeArgs, dtype: Dtype, app: Arc<App>) {
    let loads: Vec<_> = args
        .devices
        .iter()
        .map(|&ordinal| {
            let (model, engine) = (args.model.clone(), args.engine);
            let adapters = Arc::clone(&app.adapters);
            std::thread::spawn(move || -> sana::Result<(String, Sana)> {
                let start = Instant::now();
                let sana = OpenOptions::new(device(engine, ordinal)?)
                    .dtype(dtype.into())
                    .keep_text_encoder(true)
                    .open(&model)?;
                warm_up(&sana)?;
                adapters.check_against(&sana)?;
                let name = format!("{}:{ordinal}", sana.engine_name());
                log::event(
                    "worker_loaded",
                    serde_json::json!({
                        "device": name, "description": sana.device_description(),
                        "load_s": start.elapsed().as_secs_f64(),
                    }),
                );
                Ok((name, sana))
            })
        })
        .collect();
    let (max_batch, batch_window) = (args.max_batch, args.batch_window());
    std::thread::spawn(move || {
        let mut workers = Vec::new();
        for load in loads {
            match load.join() {
                Ok(Ok(loaded)) => workers.push(loaded),
                Ok(Err(e)) => fail_to_start(&e.to_string()),
                Err(_) => fail_to_start("a model load panicked"),
            }
        }
        for (i, (device, sana)) in workers.into_iter().enumerate() {
            let sana = Arc::new(sana);
            if i == 0 {
                let _ = app.planner.set(Arc::clone(&sana));
            }
            let worker = Worker {
                device,
                sana,
                queue: Arc::clone(&app.queue),
                metrics: Arc::clone(&app.metrics),
                abort: Arc::clone(&app.abort),
                adapters: Arc::clone(&app.adapters),
                max_batch,
                batch_window,
            };
            std::thread::spawn(move || worker.run());
        }
        log::event(
            "ready",
            serde_json::json!({ "workers": app.workers, "lora": app.adapters.names() }),
        );
    });
}

fn fail_to_start(why: &str) -> ! {
    log::event("load_failed", serde_json::json!({ "error": why }));
    eprintln!("error: {why}");
    std::process::exit(1);
}

/// The library device of worker `ordinal`: that GPU for the cuda engine (and `auto` beyond GPU 0); the cpu and emu
/// engines run one worker per listed ordinal, each with its own model.
fn device(engine: EngineKind, ordinal: usize) -> sana::Result<sana::Device> {
    Ok(match engine.device()? {
        sana::Device::Cuda(_) => sana::Device::Cuda(ordinal),
        sana::Device::Auto if ordinal > 0 => sana::Device::Cuda(ordinal),
        other => other,
    })
}

/// One step at the smallest size: every model loads (and stays: the text encoder is kept) before the first request.
fn warm_up(sana: &Sana) -> sana::Result<()> {
    let side = sana.vae_config().spatial_factor().next_multiple_of(32);
    sana.generate(
        &Request::new("warm-up")
            .size(side, side)
            .steps(1)
            .resolution_binning(false),
    )
    .map(drop)
}
