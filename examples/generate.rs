//! The smallest program: open a model, generate one image, save it.
//!
//! `cargo run --release --example generate -- [MODEL_DIR]` (default: the tiny demo model, which draws noise).

fn main() -> sana::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "tests/fixtures/tiny-sana".into());
    let sana = sana::Sana::open(dir, sana::Device::Auto)?;
    let out = sana.generate(&sana::Request::new("a red fox in the snow").seed(42))?;
    out.images[0].save_png("fox.png")
}
