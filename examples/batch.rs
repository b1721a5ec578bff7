//! Many prompts, one loaded model: a progress line per step, and Ctrl-C cancels the running generation at the next
//! step (the model stays loaded; the program then stops).
//!
//! `cargo run --release --example batch -- [MODEL_DIR [SIDE]]` (default: the demo model models/sana-shapes at its
//! trained size; SIDE: square images of that many pixels; no resolution binning, as examples/generate.rs). Images go
//! to `batch-<n>.png` in the current folder.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use sana::{Control, Device, Error, Event, OpenOptions, Request, Stage};

/// Set by SIGINT; read by the progress callback.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn main() -> sana::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "models/sana-shapes".into());
    let side: Option<usize> = match args.next() {
        Some(s) => Some(
            s.parse()
                .map_err(|_| Error::InvalidInput(format!("SIDE `{s}`: not a number")))?,
        ),
        None => None,
    };
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t,
        )
    };

    // Many generations: keep the text encoder loaded between them.
    let sana = OpenOptions::new(Device::Auto)
        .keep_text_encoder(true)
        .open(dir)?;
    let prompts = [
        "a red circle on the left, on a white background",
        "a blue square at the top, on a gray background",
        "a yellow star in the centre, on a black background",
    ];
    for (n, prompt) in prompts.iter().enumerate() {
        let mut req = Request::new(*prompt)
            .seed(n as u64)
            .resolution_binning(false);
        if let Some(side) = side {
            req = req.size(side, side);
        }
        let result = sana.generate_with(&req, |event| {
            match event {
                Event::Stage {
                    stage: Stage::Decode,
                } => eprintln!("\n  decoding"),
                Event::Step { step, steps } => {
                    eprint!("\r{prompt}: step {step}/{steps}");
                    let _ = std::io::stderr().flush();
                }
                _ => {}
            }
            if INTERRUPTED.load(Ordering::SeqCst) {
                Control::Cancel
            } else {
                Control::Continue
            }
        });
        match result {
            Ok(out) => {
                let path = format!("batch-{n}.png");
                out.images[0].save_png(&path)?;
                eprintln!("  wrote {path}");
            }
            Err(Error::Cancelled) => {
                eprintln!("\ncancelled; {} prompt(s) not generated", prompts.len() - n);
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
