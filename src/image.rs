//! From the decoder's output to a PNG file, as diffusers' `SanaPipeline` does it (docs/numerics/sampling.md §3, §11):
//! pick the resolution bin a request is generated at, resize and centre-crop the decoded image back to the requested
//! size, convert to 8-bit RGB, and write the PNG.
//!
//! The decoded image is an NCHW `[B, 3, H, W]` f32 [`HostTensor`] with values nominally in [−1, 1]. Everything here is
//! computed in f32, which mirrors an f32 VAE; with a bf16 VAE diffusers rounds the resize, `·0.5 + 0.5` and the clamp
//! to bf16, so pixels may then differ by one 8-bit level (docs/numerics/sampling.md §11).

use std::io::{BufWriter, Write};
use std::path::Path;

use crate::atomic_write::{stage, StagedFile};
use crate::error::{Error, Result};
use crate::tensor::HostTensor;

mod input;
pub use input::{decode_png, read_png, resize_lanczos, to_vae_input};

// ---------------------------------------------------------------------------------------------------------------------
// Resolution binning (docs/numerics/sampling.md §3.1)
// ---------------------------------------------------------------------------------------------------------------------

/// One entry of an aspect-ratio table: images whose height/width ratio is nearest `ratio` are generated at
/// `height × width`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AspectBin {
    /// The table key, `float("0.25")` etc. in diffusers.
    pub ratio: f64,
    /// Generation height in pixels.
    pub height: usize,
    /// Generation width in pixels.
    pub width: usize,
}

const fn bin(ratio: f64, height: usize, width: usize) -> AspectBin {
    AspectBin {
        ratio,
        height,
        width,
    }
}

/// diffusers `ASPECT_RATIO_512_BIN` (PixArt-α), used when `transformer.config.sample_size == 16`.
pub const ASPECT_RATIO_512_BIN: &[AspectBin] = &[
    bin(0.25, 256, 1024),
    bin(0.28, 256, 928),
    bin(0.32, 288, 896),
    bin(0.33, 288, 864),
    bin(0.35, 288, 832),
    bin(0.4, 320, 800),
    bin(0.42, 320, 768),
    bin(0.48, 352, 736),
    bin(0.5, 352, 704),
    bin(0.52, 352, 672),
    bin(0.57, 384, 672),
    bin(0.6, 384, 640),
    bin(0.68, 416, 608),
    bin(0.72, 416, 576),
    bin(0.78, 448, 576),
    bin(0.82, 448, 544),
    bin(0.88, 480, 544),
    bin(0.94, 480, 512),
    bin(1.0, 512, 512),
    bin(1.07, 512, 480),
    bin(1.13, 544, 480),
    bin(1.21, 544, 448),
    bin(1.29, 576, 448),
    bin(1.38, 576, 416),
    bin(1.46, 608, 416),
    bin(1.67, 640, 384),
    bin(1.75, 672, 384),
    bin(2.0, 704, 352),
    bin(2.09, 736, 352),
    bin(2.4, 768, 320),
    bin(2.5, 800, 320),
    bin(3.0, 864, 288),
    bin(4.0, 1024, 256),
];

/// diffusers `ASPECT_RATIO_1024_BIN` (PixArt-α), used when `sample_size == 32`.
pub const ASPECT_RATIO_1024_BIN: &[AspectBin] = &[
    bin(0.25, 512, 2048),
    bin(0.28, 512, 1856),
    bin(0.32, 576, 1792),
    bin(0.33, 576, 1728),
    bin(0.35, 576, 1664),
    bin(0.4, 640, 1600),
    bin(0.42, 640, 1536),
    bin(0.48, 704, 1472),
    bin(0.5, 704, 1408),
    bin(0.52, 704, 1344),
    bin(0.57, 768, 1344),
    bin(0.6, 768, 1280),
    bin(0.68, 832, 1216),
    bin(0.72, 832, 1152),
    bin(0.78, 896, 1152),
    bin(0.82, 896, 1088),
    bin(0.88, 960, 1088),
    bin(0.94, 960, 1024),
    bin(1.0, 1024, 1024),
    bin(1.07, 1024, 960),
    bin(1.13, 1088, 960),
    bin(1.21, 1088, 896),
    bin(1.29, 1152, 896),
    bin(1.38, 1152, 832),
    bin(1.46, 1216, 832),
    bin(1.67, 1280, 768),
    bin(1.75, 1344, 768),
    bin(2.0, 1408, 704),
    bin(2.09, 1472, 704),
    bin(2.4, 1536, 640),
    bin(2.5, 1600, 640),
    bin(3.0, 1728, 576),
    bin(4.0, 2048, 512),
];

/// diffusers `ASPECT_RATIO_2048_BIN` (PixArt-Σ), used when `sample_size == 64`.
pub const ASPECT_RATIO_2048_BIN: &[AspectBin] = &[
    bin(0.25, 1024, 4096),
    bin(0.26, 1024, 3968),
    bin(0.27, 1024, 3840),
    bin(0.28, 1024, 3712),
    bin(0.32, 1152, 3584),
    bin(0.33, 1152, 3456),
    bin(0.35, 1152, 3328),
    bin(0.4, 1280, 3200),
    bin(0.42, 1280, 3072),
    bin(0.48, 1408, 2944),
    bin(0.5, 1408, 2816),
    bin(0.52, 1408, 2688),
    bin(0.57, 1536, 2688),
    bin(0.6, 1536, 2560),
    bin(0.68, 1664, 2432),
    bin(0.72, 1664, 2304),
    bin(0.78, 1792, 2304),
    bin(0.82, 1792, 2176),
    bin(0.88, 1920, 2176),
    bin(0.94, 1920, 2048),
    bin(1.0, 2048, 2048),
    bin(1.07, 2048, 1920),
    bin(1.13, 2176, 1920),
    bin(1.21, 2176, 1792),
    bin(1.29, 2304, 1792),
    bin(1.38, 2304, 1664),
    bin(1.46, 2432, 1664),
    bin(1.67, 2560, 1536),
    bin(1.75, 2688, 1536),
    bin(2.0, 2816, 1408),
    bin(2.09, 2944, 1408),
    bin(2.4, 3072, 1280),
    bin(2.5, 3200, 1280),
    bin(2.89, 3328, 1152),
    bin(3.0, 3456, 1152),
    bin(3.11, 3584, 1152),
    bin(3.62, 3712, 1024),
    bin(3.75, 3840, 1024),
    bin(3.88, 3968, 1024),
    bin(4.0, 4096, 1024),
];

/// diffusers `ASPECT_RATIO_4096_BIN` (Sana), used when `sample_size == 128`.
pub const ASPECT_RATIO_4096_BIN: &[AspectBin] = &[
    bin(0.25, 2048, 8192),
    bin(0.26, 2048, 7936),
    bin(0.27, 2048, 7680),
    bin(0.28, 2048, 7424),
    bin(0.32, 2304, 7168),
    bin(0.33, 2304, 6912),
    bin(0.35, 2304, 6656),
    bin(0.4, 2560, 6400),
    bin(0.42, 2560, 6144),
    bin(0.48, 2816, 5888),
    bin(0.5, 2816, 5632),
    bin(0.52, 2816, 5376),
    bin(0.57, 3072, 5376),
    bin(0.6, 3072, 5120),
    bin(0.68, 3328, 4864),
    bin(0.72, 3328, 4608),
    bin(0.78, 3584, 4608),
    bin(0.82, 3584, 4352),
    bin(0.88, 3840, 4352),
    bin(0.94, 3840, 4096),
    bin(1.0, 4096, 4096),
    bin(1.07, 4096, 3840),
    bin(1.13, 4352, 3840),
    bin(1.21, 4352, 3584),
    bin(1.29, 4608, 3584),
    bin(1.38, 4608, 3328),
    bin(1.46, 4864, 3328),
    bin(1.67, 5120, 3072),
    bin(1.75, 5376, 3072),
    bin(2.0, 5632, 2816),
    bin(2.09, 5888, 2816),
    bin(2.4, 6144, 2560),
    bin(2.5, 6400, 2560),
    bin(2.89, 6656, 2304),
    bin(3.0, 6912, 2304),
    bin(3.11, 7168, 2304),
    bin(3.62, 7424, 2048),
    bin(3.75, 7680, 2048),
    bin(3.88, 7936, 2048),
    bin(4.0, 8192, 2048),
];

/// The aspect-ratio table for a transformer's `sample_size` (its latent side at the native resolution).
pub fn aspect_bins(sample_size: usize) -> Result<&'static [AspectBin]> {
    match sample_size {
        16 => Ok(ASPECT_RATIO_512_BIN),
        32 => Ok(ASPECT_RATIO_1024_BIN),
        64 => Ok(ASPECT_RATIO_2048_BIN),
        128 => Ok(ASPECT_RATIO_4096_BIN),
        _ => Err(Error::InvalidInput(format!(
            "resolution binning has no table for transformer sample_size {sample_size} \
             (known: 16 → 512, 32 → 1024, 64 → 2048, 128 → 4096); disable binning to generate at the requested size"
        ))),
    }
}

/// The `(height, width)` a `height × width` request is generated at: the bin whose key is nearest `height / width`
/// (first in table order on ties), as `PixArtImageProcessor.classify_height_width_bin`.
pub fn resolution_bin(sample_size: usize, height: usize, width: usize) -> Result<(usize, usize)> {
    let bins = aspect_bins(sample_size)?;
    if height == 0 || width == 0 {
        return Err(Error::InvalidInput(format!(
            "requested image size {height}×{width} (height×width) must be at least 1×1"
        )));
    }
    let ar = height as f64 / width as f64;
    let mut best = bins[0];
    for b in &bins[1..] {
        if (b.ratio - ar).abs() < (best.ratio - ar).abs() {
            best = *b;
        }
    }
    Ok((best.height, best.width))
}

// ---------------------------------------------------------------------------------------------------------------------
// Back to the requested size (docs/numerics/sampling.md §3.2)
// ---------------------------------------------------------------------------------------------------------------------

/// The size `resize_and_crop` resizes an `h × w` image to before cropping `height × width` out of it.
///
/// diffusers computes `int(h · max(height/h, width/w))` in f64; the truncation can land one pixel short of the
/// requested size (e.g. `int(1472 · (416/1472)) = 415`), where diffusers' crop start becomes −1 and Python slicing
/// returns a 1-pixel strip. We resize to the requested size on that axis instead.
pub fn resized_size(h: usize, w: usize, height: usize, width: usize) -> (usize, usize) {
    let ratio = f64::max(height as f64 / h as f64, width as f64 / w as f64);
    let h2 = (h as f64 * ratio) as usize;
    let w2 = (w as f64 * ratio) as usize;
    (h2.max(height), w2.max(width))
}

/// The sizes of an NCHW image, or a shape error naming `op`.
fn nchw(img: &HostTensor, op: &'static str) -> Result<[usize; 4]> {
    match *img.shape() {
        [b, c, h, w] => Ok([b, c, h, w]),
        _ => Err(Error::shape(
            op,
            format!(
                "expected an NCHW image [B, C, H, W], got shape {:?}",
                img.shape()
            ),
        )),
    }
}

/// Source rows (or columns) and weights of one output axis, as PyTorch's CPU `upsample_bilinear2d` computes them
/// (`compute_source_index_and_lambda` in ATen/native/UpSample.h) for `align_corners=False` and an explicit output
/// size: `scale = in/out` in f32, `src = max(scale·(dst + 0.5) − 0.5, 0)`, `i0 = min(floor(src), in−1)`,
/// `i1 = min(i0+1, in−1)`, `λ1 = clamp(src − i0, 0, 1)`, `λ0 = 1 − λ1`, all in f32.
struct AxisTaps {
    i0: Vec<usize>,
    i1: Vec<usize>,
    l0: Vec<f32>,
    l1: Vec<f32>,
}

impl AxisTaps {
    fn new(input: usize, output: usize) -> Self {
        let mut taps = AxisTaps {
            i0: Vec::with_capacity(output),
            i1: Vec::with_capacity(output),
            l0: Vec::with_capacity(output),
            l1: Vec::with_capacity(output),
        };
        let scale = input as f32 / output as f32;
        for dst in 0..output {
            let (i0, i1, l1) = if input == output {
                (dst, dst, 0.0)
            } else {
                let src = (scale * (dst as f32 + 0.5) - 0.5).max(0.0);
                let i0 = (src.floor() as usize).min(input - 1);
                let l1 = (src - i0 as f32).clamp(0.0, 1.0);
                (i0, (i0 + 1).min(input - 1), l1)
            };
            taps.i0.push(i0);
            taps.i1.push(i1);
            taps.l0.push(1.0 - l1);
            taps.l1.push(l1);
        }
        taps
    }
}

/// `F.interpolate(img, size=(out_h, out_w), mode="bilinear", align_corners=False)` on an NCHW tensor, with PyTorch's
/// CPU arithmetic: a lerp along the width in each of the two source rows, then a lerp of those along the height,
/// each as `a·λ0 + b·λ1` in f32. No antialiasing, so downsampling reads only two taps per axis.
pub fn resize_bilinear(img: &HostTensor, out_h: usize, out_w: usize) -> Result<HostTensor> {
    let [b, c, h, w] = nchw(img, "resize_bilinear")?;
    if h == 0 || w == 0 || out_h == 0 || out_w == 0 {
        return Err(Error::shape(
            "resize_bilinear",
            format!("cannot resize {h}×{w} to {out_h}×{out_w}: sizes must be non-zero"),
        ));
    }
    let len = [b, c, out_h, out_w]
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| {
            Error::shape(
                "resize_bilinear",
                format!("output [{b}, {c}, {out_h}, {out_w}] is too large"),
            )
        })?;
    let rows = AxisTaps::new(h, out_h);
    let cols = AxisTaps::new(w, out_w);
    let src = img.data();
    let mut out = Vec::with_capacity(len);
    for plane in src.chunks_exact(h * w) {
        for y in 0..out_h {
            let r0 = &plane[rows.i0[y] * w..][..w];
            let r1 = &plane[rows.i1[y] * w..][..w];
            for x in 0..out_w {
                let (x0, x1, l0, l1) = (cols.i0[x], cols.i1[x], cols.l0[x], cols.l1[x]);
                let t0 = r0[x0] * l0 + r0[x1] * l1;
                let t1 = r1[x0] * l0 + r1[x1] * l1;
                out.push(t0 * rows.l0[y] + t1 * rows.l1[y]);
            }
        }
    }
    HostTensor::new(vec![b, c, out_h, out_w], out)
}

/// diffusers `resize_and_crop_tensor`: scale the decoded `[B, C, H, W]` image so that it covers `height × width`
/// (bilinear, [`resized_size`]), then cut the centred `height × width` window (offsets rounded down). An image that is
/// already `height × width` is returned unchanged.
pub fn resize_and_crop(img: &HostTensor, height: usize, width: usize) -> Result<HostTensor> {
    let [b, c, h, w] = nchw(img, "resize_and_crop")?;
    if (h, w) == (height, width) {
        return Ok(img.clone());
    }
    if h == 0 || w == 0 || height == 0 || width == 0 {
        return Err(Error::shape(
            "resize_and_crop",
            format!("cannot resize {h}×{w} to {height}×{width}: sizes must be non-zero"),
        ));
    }
    let (h2, w2) = resized_size(h, w, height, width);
    let resized = resize_bilinear(img, h2, w2)?;
    let (top, left) = ((h2 - height) / 2, (w2 - width) / 2);
    let mut out = Vec::with_capacity(b * c * height * width);
    for plane in resized.data().chunks_exact(h2 * w2) {
        for row in plane.chunks_exact(w2).skip(top).take(height) {
            out.extend_from_slice(&row[left..left + width]);
        }
    }
    HostTensor::new(vec![b, c, height, width], out)
}

// ---------------------------------------------------------------------------------------------------------------------
// Pixels (docs/numerics/sampling.md §11)
// ---------------------------------------------------------------------------------------------------------------------

/// An 8-bit RGB image, rows top to bottom, each pixel `[r, g, b]` (HWC).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

impl Image {
    /// Wraps `pixels` (`height · width · 3` bytes, HWC); both sides must be at least 1.
    pub fn new(width: usize, height: usize, pixels: Vec<u8>) -> Result<Self> {
        let want = width.checked_mul(height).and_then(|n| n.checked_mul(3));
        if width == 0 || height == 0 || want != Some(pixels.len()) {
            return Err(Error::InvalidInput(format!(
                "an RGB image of {width}×{height} (width×height, non-zero) needs width·height·3 bytes, got {}",
                pixels.len()
            )));
        }
        Ok(Self {
            width,
            height,
            pixels,
        })
    }

    /// Pixels per row.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Rows.
    pub fn height(&self) -> usize {
        self.height
    }

    /// `height · width · 3` bytes, HWC.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// The pixels, without a copy.
    pub fn into_pixels(self) -> Vec<u8> {
        self.pixels
    }

    /// Writes the image as an 8-bit RGB PNG ([`write_png`]: complete or not at all).
    pub fn save_png(&self, path: impl AsRef<Path>) -> Result<()> {
        write_png(path.as_ref(), self)
    }

    /// The image as the bytes of an 8-bit RGB PNG file, in memory (to send rather than save).
    pub fn to_png(&self) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        let (width, height) = png_size(self).map_err(Error::InvalidInput)?;
        encode_png(&mut bytes, width, height, &self.pixels)
            .map_err(|reason| Error::InvalidInput(format!("PNG encoding: {reason}")))?;
        Ok(bytes)
    }
}

/// One decoded value to an 8-bit level, as `VaeImageProcessor.postprocess(output_type="pil")`:
/// `y = clamp(x·0.5 + 0.5, 0, 1)` (torch, separate multiply and add), then `round_half_to_even(y·255)` (NumPy,
/// f32 multiply) cast to u8. NaN propagates through torch's clamp and NumPy's cast turns it into 0; so does this.
fn to_level(x: f32) -> u8 {
    let y = (x * 0.5 + 0.5).clamp(0.0, 1.0);
    (y * 255.0).round_ties_even() as u8
}

/// Decoded `[B, 3, H, W]` images to one [`Image`] per batch element. The order of docs/numerics/sampling.md §11:
/// decode → [`resize_and_crop`] if binning changed the size → `clamp(x·0.5 + 0.5, 0, 1)` → HWC →
/// `round_half_to_even(y·255)` → u8.
pub fn to_rgb8(img: &HostTensor) -> Result<Vec<Image>> {
    img.expect_shape("to_rgb8", &[None, Some(3), None, None])?;
    let [_, _, h, w] = nchw(img, "to_rgb8")?;
    if h == 0 || w == 0 {
        return Err(Error::shape(
            "to_rgb8",
            format!("image is {h}×{w}; it must be at least 1×1"),
        ));
    }
    let plane = h * w;
    img.data()
        .chunks_exact(3 * plane)
        .map(|chw| {
            let mut pixels = Vec::with_capacity(3 * plane);
            for i in 0..plane {
                pixels.extend([chw[i], chw[plane + i], chw[2 * plane + i]].map(to_level));
            }
            Image::new(w, h, pixels)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------------------------------
// PNG output
// ---------------------------------------------------------------------------------------------------------------------

/// Writes `image` as an 8-bit RGB PNG, complete or not at all (src/atomic_write.rs: a failure never leaves a
/// truncated PNG at `path`; a device or FIFO is written into; a link is written through).
pub fn write_png(path: &Path, image: &Image) -> Result<()> {
    stage_png(path, image)?.commit()
}

/// [`write_png`] staged: the PNG is complete beside `path` and appears there when the returned file is committed.
pub fn stage_png(path: &Path, image: &Image) -> Result<StagedFile> {
    let fail = |reason: String| Error::Image {
        path: path.to_path_buf(),
        reason,
    };
    let (width, height) = png_size(image).map_err(fail)?;
    stage(path, |file| {
        encode_png(BufWriter::new(file), width, height, &image.pixels)
    })
    .map_err(fail)
}

/// The image's sides as a PNG header holds them.
fn png_size(image: &Image) -> std::result::Result<(u32, u32), String> {
    let side =
        |name, v: usize| u32::try_from(v).map_err(|_| format!("{name} {v} exceeds the PNG limit"));
    Ok((side("width", image.width)?, side("height", image.height)?))
}

fn encode_png(
    mut out: impl Write,
    width: u32,
    height: u32,
    pixels: &[u8],
) -> std::result::Result<(), String> {
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder
        .write_header()
        .map_err(|e| format!("PNG header: {e}"))?;
    writer
        .write_image_data(pixels)
        .map_err(|e| format!("PNG data: {e}"))?;
    writer.finish().map_err(|e| format!("PNG end: {e}"))?;
    out.flush().map_err(|e| format!("write: {e}"))
}
