//! The smallest program: open a model, generate one image, save it.
//!
//! `cargo run --release --example generate -- [MODEL_DIR [SIDE]]` (default: the demo model models/sana-shapes, at
//! the model's trained size; SIDE: a square of that many pixels). Always generated at exactly that size, without
//! resolution binning: the demo model's 64 px has no aspect-ratio table, and at a model's trained square size
//! binning changes nothing.

fn main() -> sana::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "models/sana-shapes".into());
    let sana = sana::Sana::open(dir, sana::Device::Auto)?;
    let mut request = sana::Request::new("a red circle on the left, on a white background")
        .seed(42)
        .resolution_binning(false);
    if let Some(side) = args.next() {
        let side = side
            .parse()
            .map_err(|_| sana::Error::InvalidInput(format!("SIDE `{side}`: not a number")))?;
        request = request.size(side, side);
    }
    let out = sana.generate(&request)?;
    out.images[0].save_png("shape.png")
}
