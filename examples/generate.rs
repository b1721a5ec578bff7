//! The smallest program: open a model, generate one image, save it.
//!
//! `cargo run --release --example generate -- [MODEL_DIR [SIDE]]` (default: the tiny demo model, which draws noise,
//! at the model's trained size; SIDE: a square of that many pixels, generated at exactly that size).

fn main() -> sana::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .unwrap_or_else(|| "tests/fixtures/tiny-sana".into());
    let sana = sana::Sana::open(dir, sana::Device::Auto)?;
    let mut request = sana::Request::new("a red fox in the snow").seed(42);
    if let Some(side) = args.next() {
        let side = side
            .parse()
            .map_err(|_| sana::Error::InvalidInput(format!("SIDE `{side}`: not a number")))?;
        request = request.size(side, side).resolution_binning(false);
    }
    let out = sana.generate(&request)?;
    out.images[0].save_png("fox.png")
}
