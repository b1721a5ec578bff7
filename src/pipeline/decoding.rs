//! The decoding stage: `vae.decode(latents / scaling_factor)` (tiled as planned), the resize back from the
//! resolution bin, and 8-bit pixels (docs/numerics/sampling.md §11).

use crate::engine::Engine;
use crate::error::Result;
use crate::event::{Event, Observer};
use crate::image::{resize_and_crop, to_rgb8, Image};
use crate::model::vae_tiling::{self, VaeTile};
use crate::tensor::HostTensor;

use super::denoising::map;
use super::{check_finite, Pipeline, Plan};

impl<E: Engine> Pipeline<E> {
    /// The images of `latents` at the plan's output size.
    pub(super) fn decode_images(
        &self,
        plan: &Plan,
        latents: &HostTensor,
        observer: &mut Observer<'_>,
    ) -> Result<Vec<Image>> {
        let mut on_tile = |tile: usize, tiles: usize| observer.emit(Event::Tile { tile, tiles });
        let image = match plan.vae_tiling {
            Some(tiling) => self.decode_with(latents, VaeTile::On(tiling), &mut on_tile)?,
            None => self.decode_with(latents, VaeTile::Off, &mut on_tile)?,
        };
        check_finite("decode", &image)?;
        let (w, h) = plan.output_size;
        let image = if (image.shape()[2], image.shape()[3]) != (h, w) {
            resize_and_crop(&image, h, w)?
        } else {
            image
        };
        to_rgb8(&image)
    }

    /// `vae.decode(latents / scaling_factor)`, tiled as `tile` decides: the raw decoder output `[B, 3, H, W]` (f32
    /// on the host).
    pub fn decode(&self, latents: &HostTensor, tile: VaeTile) -> Result<HostTensor> {
        self.decode_with(latents, tile, &mut |_, _| Ok(()))
    }

    fn decode_with(
        &self,
        latents: &HostTensor,
        tile: VaeTile,
        on_tile: &mut dyn FnMut(usize, usize) -> Result<()>,
    ) -> Result<HostTensor> {
        let e = &self.engine;
        latents.expect_shape("decode (latents)", &[None, None, None, None])?;
        let sf = self.configs.vae.scaling_factor;
        let z = map(latents, |v| v / sf)?;
        let [h, w] = [latents.shape()[2], latents.shape()[3]];
        match vae_tiling::resolve(&self.configs.vae, tile, h, w) {
            Some(tiling) => vae_tiling::decode_tiled(e, &self.vae, &z, tiling, on_tile),
            None => e.download(&self.vae.decode(e, &e.upload(&z)?)?),
        }
    }
}
