//! Tiled DC-AE decoding, as diffusers' `AutoencoderDC.tiled_decode` (docs/numerics/dc-ae.md §7): overlapping latent
//! tiles are decoded one at a time and blended linearly where they overlap, so the decoder's activations are bounded by
//! the tile, not the image. Tiles are processed row by row; only the previous row of decoded tiles is kept (the blends
//! read the already-blended upper and left neighbours, as diffusers' in-place blends do).

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::model::config::VaeConfig;
use crate::model::dc_ae::DcAeDecoder;
use crate::tensor::HostTensor;

/// Tile geometry in image pixels; both values are multiples of the VAE's spatial factor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VaeTiling {
    /// Side of a decoded tile (diffusers `tile_sample_min_*`, default 512).
    pub tile: usize,
    /// Distance between tile origins (diffusers `tile_sample_stride_*`, default 448); `tile − stride` pixels blend.
    pub stride: usize,
}

impl VaeTiling {
    /// diffusers' defaults: 512-px tiles every 448 px.
    pub const DIFFUSERS: Self = Self {
        tile: 512,
        stride: 448,
    };

    /// Tiles of `tile` px overlapping by an eighth, as the defaults (512 → stride 448).
    pub fn with_tile(tile: usize) -> Self {
        Self {
            tile,
            stride: tile - tile / 8,
        }
    }
}

/// Whether and how to tile the decode (`--vae-tile auto|off|SIZE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VaeTile {
    /// Tile with diffusers' defaults when the untiled decoder's estimated activation memory exceeds the budget.
    Auto {
        /// The largest untiled activation estimate ([`untiled_bytes`]) allowed, in bytes; default
        /// [`DEFAULT_BUDGET`].
        budget_bytes: usize,
    },
    /// Never tile.
    Off,
    /// Always tile with this geometry (decodes untiled anyway when the latent fits in one tile).
    On(VaeTiling),
}

impl Default for VaeTile {
    fn default() -> Self {
        Self::Auto {
            budget_bytes: DEFAULT_BUDGET,
        }
    }
}

/// 4 GiB: an untiled 1024² decode stays under it (as diffusers, which never tiles unless asked); 2048² and larger
/// are tiled.
pub const DEFAULT_BUDGET: usize = 4 << 30;

/// Estimated peak activation bytes of an untiled decode of an `h × w` latent (batch 1, f32 host storage): the
/// decoder's working set (`crate::memory::working_set::decode_elements`) in f32.
pub fn untiled_bytes(vae: &VaeConfig, h: usize, w: usize) -> usize {
    crate::memory::working_set::decode_elements(vae, h, w) * std::mem::size_of::<f32>()
}

/// The tiling `tile` resolves to for an `h × w` latent, or `None` for an untiled decode.
pub fn resolve(vae: &VaeConfig, tile: VaeTile, h: usize, w: usize) -> Option<VaeTiling> {
    match tile {
        VaeTile::Off => None,
        VaeTile::On(t) => Some(t),
        VaeTile::Auto { budget_bytes } => {
            (untiled_bytes(vae, h, w) > budget_bytes).then_some(VaeTiling::DIFFUSERS)
        }
    }
}

/// Decodes `z` `[B, C, h, w]` (already divided by the scaling factor) tile by tile; the raw image `[B, 3, H, W]`.
/// diffusers decodes untiled when the latent fits in one tile; so does this. `on_tile(i, n)` follows each of the `n`
/// tiles; its error (a cancellation) stops the decode.
pub fn decode_tiled<E: Engine>(
    e: &E,
    vae: &DcAeDecoder<E>,
    z: &HostTensor,
    tiling: VaeTiling,
    on_tile: &mut dyn FnMut(usize, usize) -> Result<()>,
) -> Result<HostTensor> {
    let f = vae.config.spatial_factor();
    let VaeTiling { tile, stride } = tiling;
    if tile == 0 || stride == 0 || stride > tile || tile % f != 0 || stride % f != 0 {
        return Err(Error::InvalidInput(format!(
            "VAE tiles of {tile} px every {stride} px: need 0 < stride ≤ tile, both multiples of the VAE factor {f}"
        )));
    }
    z.expect_shape("vae tiled decode (latent)", &[None, None, None, None])?;
    let [b, c, h, w] = [z.shape()[0], z.shape()[1], z.shape()[2], z.shape()[3]];
    let (tl, sl) = (tile / f, stride / f);
    if h <= tl && w <= tl {
        let out = e.download(&vae.decode(e, &e.upload(z)?)?)?;
        on_tile(1, 1)?;
        return Ok(out);
    }
    let tiles = h.div_ceil(sl) * w.div_ceil(sl);
    let mut done = 0;
    let blend = tile - stride;
    let (oh, ow) = (h * f, w * f);
    let mut out = HostTensor::zeros(vec![b, 3, oh, ow]);
    let mut above: Vec<HostTensor> = Vec::new();
    for i in (0..h).step_by(sl) {
        let mut row: Vec<HostTensor> = Vec::new();
        for (col, j) in (0..w).step_by(sl).enumerate() {
            let latent = crop(z, c, (i, (i + tl).min(h)), (j, (j + tl).min(w)))?;
            let mut t = e.download(&vae.decode(e, &e.upload(&latent)?)?)?;
            if let Some(up) = above.get(col) {
                blend_rows(up, &mut t, blend);
            }
            if let Some(left) = row.last() {
                blend_cols(left, &mut t, blend);
            }
            paste(&mut out, &t, (i * f, j * f), stride);
            row.push(t);
            done += 1;
            on_tile(done, tiles)?;
        }
        above = row;
    }
    Ok(out)
}

/// `z[:, :, rows, cols]` of an NCHW tensor.
fn crop(
    z: &HostTensor,
    c: usize,
    (r0, r1): (usize, usize),
    (c0, c1): (usize, usize),
) -> Result<HostTensor> {
    let (h, w) = (z.shape()[2], z.shape()[3]);
    let b = z.shape()[0];
    let mut data = Vec::with_capacity(b * c * (r1 - r0) * (c1 - c0));
    for plane in z.data().chunks_exact(h * w) {
        for r in r0..r1 {
            data.extend_from_slice(&plane[r * w + c0..r * w + c1]);
        }
    }
    HostTensor::new(vec![b, c, r1 - r0, c1 - c0], data)
}

/// diffusers' `blend_v`: the first `e` rows of `b` fade in from the last `e` rows of `a` (weights in f64, cast to
/// f32 as PyTorch's scalar multiply does).
fn blend_rows(a: &HostTensor, b: &mut HostTensor, extent: usize) {
    let (ah, bh, w) = (a.shape()[2], b.shape()[2], b.shape()[3]);
    let e = extent.min(ah).min(bh);
    let planes = a.len() / (ah * w);
    for p in 0..planes {
        for y in 0..e {
            let (wa, wb) = weights(y, e);
            let src = &a.data()[(p * ah + ah - e + y) * w..][..w];
            let dst = &mut b.data_mut()[(p * bh + y) * w..][..w];
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = s * wa + *d * wb;
            }
        }
    }
}

/// diffusers' `blend_h`: the first `e` columns of `b` fade in from the last `e` columns of `a`.
fn blend_cols(a: &HostTensor, b: &mut HostTensor, extent: usize) {
    let (aw, bw) = (a.shape()[3], b.shape()[3]);
    let e = extent.min(aw).min(bw);
    let rows = a.len() / aw;
    for r in 0..rows {
        for x in 0..e {
            let (wa, wb) = weights(x, e);
            let s = a.data()[r * aw + aw - e + x];
            let d = &mut b.data_mut()[r * bw + x];
            *d = s * wa + *d * wb;
        }
    }
}

fn weights(k: usize, e: usize) -> (f32, f32) {
    let t = k as f64 / e as f64;
    ((1.0 - t) as f32, t as f32)
}

/// Copies the top-left `keep × keep` corner of `tile` (less at the edges) into `out` at `(y0, x0)`.
fn paste(out: &mut HostTensor, tile: &HostTensor, (y0, x0): (usize, usize), keep: usize) {
    let (th, tw) = (tile.shape()[2], tile.shape()[3]);
    let (oh, ow) = (out.shape()[2], out.shape()[3]);
    let (kh, kw) = (keep.min(th).min(oh - y0), keep.min(tw).min(ow - x0));
    let planes = tile.len() / (th * tw);
    for p in 0..planes {
        for y in 0..kh {
            let src = &tile.data()[(p * th + y) * tw..][..kw];
            out.data_mut()[(p * oh + y0 + y) * ow + x0..][..kw].copy_from_slice(src);
        }
    }
}
