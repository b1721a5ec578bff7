//! Prompt embeddings computed once and reused across seeds: the text encoder runs for the first request only.
//!
//! `cargo run --release --example embeddings -- [MODEL_DIR [SIDE]]` (default: the demo model models/sana-shapes at
//! its trained size; SIDE: square images of that many pixels; no resolution binning, as examples/generate.rs). Images
//! go to `seed-<s>.png` in the current folder.

use sana::{Device, Error, Request, Sana};

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
    let sana = Sana::open(dir, Device::Auto)?;
    let embeddings = sana.encode_prompt(&Request::new(
        "a green triangle at the bottom, on a white background",
    ))?;
    for seed in 0..3 {
        let mut req = Request::from_embeddings(embeddings.clone())
            .seed(seed)
            .resolution_binning(false);
        if let Some(side) = side {
            req = req.size(side, side);
        }
        let out = sana.generate(&req)?;
        let path = format!("seed-{seed}.png");
        out.images[0].save_png(&path)?;
        eprintln!(
            "wrote {path} (text encode {:?}, denoise {:.2} s)",
            out.times.text_encode.time,
            out.times.denoise.time.as_secs_f64()
        );
    }
    Ok(())
}
