//! Images going in (Sana-Sprint image-to-image): a PNG read as diffusers' `load_image` reads it (PIL, then
//! `convert("RGB")`), and made into the VAE encoder's input as `VaeImageProcessor.preprocess` makes it — PIL's
//! Lanczos resize to the generation size when the sizes differ, `/ 255`, then `2x − 1`.

use std::io::Cursor;
use std::path::Path;

use crate::error::{Error, Result};
use crate::tensor::HostTensor;

use super::Image;

/// The largest side read, in pixels: the largest generated (src/pipeline/plan.rs) times four, so that a picture
/// downscaled to the generation size still loads; larger files fail before their pixels are decoded.
const MAX_INPUT_SIDE: u32 = 65536;

/// Reads the PNG at `path` as 8-bit RGB ([`decode_png`]); errors name the file.
pub fn read_png(path: &Path) -> Result<Image> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_png(&bytes).map_err(|reason| Error::ImageInput {
        path: path.to_path_buf(),
        reason,
    })
}

/// Decodes PNG bytes to 8-bit RGB as PIL's `convert("RGB")` does: grey is repeated over the three channels, alpha
/// dropped (not composited), a palette expanded, 16-bit samples cut to their high byte. The error says what is
/// wrong with the bytes.
pub fn decode_png(bytes: &[u8]) -> std::result::Result<Image, String> {
    let mut decoder = png::Decoder::new(Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder
        .read_info()
        .map_err(|e| format!("not a readable PNG: {e}"))?;
    let (width, height) = (reader.info().width, reader.info().height);
    if width > MAX_INPUT_SIDE || height > MAX_INPUT_SIDE {
        return Err(format!(
            "{width}×{height} px exceeds the largest input side, {MAX_INPUT_SIDE} px"
        ));
    }
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| format!("{width}×{height} px is too large to decode"))?;
    let mut buf = vec![0; size];
    let frame = reader
        .next_frame(&mut buf)
        .map_err(|e| format!("PNG data: {e}"))?;
    let channels = match frame.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => return Err("a palette PNG that did not expand".into()),
    };
    if frame.bit_depth != png::BitDepth::Eight {
        return Err(format!("{:?}-bit samples after expansion", frame.bit_depth));
    }
    let (w, h) = (frame.width as usize, frame.height as usize);
    let mut pixels = Vec::with_capacity(w * h * 3);
    for row in buf[..frame.buffer_size()].chunks_exact(frame.line_size) {
        for px in row[..w * channels].chunks_exact(channels) {
            match channels {
                1 | 2 => pixels.extend([px[0]; 3]),
                _ => pixels.extend(&px[..3]),
            }
        }
    }
    Image::new(w, h, pixels).map_err(|e| e.to_string())
}

/// The VAE encoder's input `[1, 3, height, width]` in [−1, 1] from `image`, as `VaeImageProcessor.preprocess` makes
/// it from a PIL image: resized with PIL's Lanczos filter when its size differs (no crop: the aspect ratio follows
/// the generation size), then `x / 255` and `2x − 1` in f32.
pub fn to_vae_input(image: &Image, width: usize, height: usize) -> Result<HostTensor> {
    let resized;
    let image = if (image.width(), image.height()) == (width, height) {
        image
    } else {
        resized = resize_lanczos(image, width, height)?;
        &resized
    };
    let plane = width * height;
    let mut data = vec![0.0f32; 3 * plane];
    for (i, px) in image.pixels().chunks_exact(3).enumerate() {
        for (c, &v) in px.iter().enumerate() {
            // NumPy's f32 division, then torch's `2.0 * x - 1.0` (two f32 roundings).
            data[c * plane + i] = 2.0 * (f32::from(v) / 255.0) - 1.0;
        }
    }
    HostTensor::new(vec![1, 3, height, width], data)
}

/// Fixed-point bits of PIL's 8-bit resampling coefficients (`PRECISION_BITS` in libImaging/Resample.c).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// PIL's `Image.resize((width, height), Image.LANCZOS)` on an 8-bit RGB image (libImaging/Resample.c): two
/// separable passes, horizontal first (over the source rows the vertical pass reads), each with coefficients
/// computed in f64, normalised, rounded to fixed point, and each pass's output rounded and clipped to 8 bits.
pub fn resize_lanczos(image: &Image, width: usize, height: usize) -> Result<Image> {
    if width == 0 || height == 0 {
        return Err(Error::InvalidInput(format!(
            "cannot resize an image to {width}×{height} px"
        )));
    }
    let (in_w, in_h) = (image.width(), image.height());
    let horizontal = Coefficients::new(in_w, width);
    let vertical = Coefficients::new(in_h, height);
    let mut pixels = image.pixels().to_vec();
    let (mut cur_w, mut cur_h, mut first_row) = (in_w, in_h, 0);
    if width != in_w {
        // Only the rows the vertical pass reads.
        let (first, last) = if height != in_h {
            (vertical.bounds[0].0, {
                let (start, n) = vertical.bounds[height - 1];
                start + n
            })
        } else {
            (0, in_h)
        };
        let mut out = Vec::with_capacity((last - first) * width * 3);
        for y in first..last {
            let row = &pixels[y * in_w * 3..(y + 1) * in_w * 3];
            for x in 0..width {
                out.extend(horizontal.apply(x, |i, c| row[3 * i + c]));
            }
        }
        (pixels, cur_w, cur_h, first_row) = (out, width, last - first, first);
    }
    if height != in_h {
        let mut out = Vec::with_capacity(height * cur_w * 3);
        for y in 0..height {
            for x in 0..cur_w {
                out.extend(vertical.apply(y, |i, c| pixels[((i - first_row) * cur_w + x) * 3 + c]));
            }
        }
        (pixels, cur_h) = (out, height);
    }
    debug_assert_eq!((cur_w, cur_h), (width, height));
    Image::new(width, height, pixels)
}

/// One pass's fixed-point coefficients: output `i` sums source samples `bounds[i].0 ..` (`bounds[i].1` of them)
/// times `weights[i · ksize ..]`.
struct Coefficients {
    ksize: usize,
    bounds: Vec<(usize, usize)>,
    weights: Vec<i32>,
}

impl Coefficients {
    /// PIL's `precompute_coeffs` (box = the whole source) and `normalize_coeffs_8bpc`, Lanczos-3.
    fn new(in_size: usize, out_size: usize) -> Self {
        const SUPPORT: f64 = 3.0;
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = SUPPORT * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let mut bounds = Vec::with_capacity(out_size);
        let mut weights = vec![0i32; out_size * ksize];
        let mut k = vec![0.0f64; ksize];
        for xx in 0..out_size {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            // C's `(int)` truncation toward zero, then the clamps.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize - xmin;
            let mut ww = 0.0;
            for (x, kx) in k.iter_mut().enumerate().take(xmax) {
                *kx = lanczos((x as f64 + xmin as f64 - center + 0.5) * ss);
                ww += *kx;
            }
            for (x, &kx) in k.iter().enumerate().take(xmax) {
                let kx = if ww == 0.0 { kx } else { kx / ww };
                let fixed = kx * f64::from(1u32 << PRECISION_BITS);
                weights[xx * ksize + x] = if kx < 0.0 {
                    (-0.5 + fixed) as i32
                } else {
                    (0.5 + fixed) as i32
                };
            }
            bounds.push((xmin, xmax));
        }
        Self {
            ksize,
            bounds,
            weights,
        }
    }

    /// Output sample `i` of each of the three channels, `sample(j, c)` reading source sample `j`, channel `c`.
    fn apply(&self, i: usize, sample: impl Fn(usize, usize) -> u8) -> [u8; 3] {
        let (start, n) = self.bounds[i];
        let k = &self.weights[i * self.ksize..i * self.ksize + n];
        std::array::from_fn(|c| {
            let mut ss: i64 = 1 << (PRECISION_BITS - 1);
            for (j, &kj) in k.iter().enumerate() {
                ss += i64::from(sample(start + j, c)) * i64::from(kj);
            }
            (ss >> PRECISION_BITS).clamp(0, 255) as u8
        })
    }
}

/// PIL's `lanczos_filter`: `sinc(x)·sinc(x/3)` on [−3, 3).
fn lanczos(x: f64) -> f64 {
    fn sinc(x: f64) -> f64 {
        if x == 0.0 {
            1.0
        } else {
            let x = x * std::f64::consts::PI;
            x.sin() / x
        }
    }
    if (-3.0..3.0).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}
