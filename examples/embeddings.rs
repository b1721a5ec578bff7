//! Prompt embeddings computed once and reused across seeds: the text encoder runs for the first request only.
//!
//! `cargo run --release --example embeddings -- [MODEL_DIR]` (default: the tiny demo model). Images go to
//! `seed-<s>.png` in the current folder.

use sana::{Device, Request, Sana};

fn main() -> sana::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "tests/fixtures/tiny-sana".into());
    let sana = Sana::open(dir, Device::Auto)?;
    let embeddings = sana.encode_prompt(
        &Request::new("a watercolor of a quiet harbour").negative_prompt("blurry"),
    )?;
    for seed in 0..3 {
        let out = sana.generate(&Request::from_embeddings(embeddings.clone()).seed(seed))?;
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
