//! What a running generation reports to its caller, and the caller's answer ([`crate::Sana::generate_with`]).

use crate::error::{Error, Result};

/// A stage of a generation, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stage {
    /// Tokenizing the prompts and running the text encoder (skipped for precomputed embeddings).
    TextEncode,
    /// The sampler's loop over the transformer.
    Denoise,
    /// The VAE decoder, the resize back from the resolution bin, and the conversion to 8-bit pixels.
    Decode,
}

/// Progress of one generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// `stage` begins (its model loads first when it is not resident).
    Stage {
        /// The stage that begins.
        stage: Stage,
    },
    /// Denoising step `step` of `steps` has finished (1-based).
    Step {
        /// Steps finished so far.
        step: usize,
        /// Steps in all.
        steps: usize,
    },
    /// VAE tile `tile` of `tiles` has been decoded (1-based; tiled decoding only).
    Tile {
        /// Tiles decoded so far.
        tile: usize,
        /// Tiles in all.
        tiles: usize,
    },
}

/// The callback's answer to an [`Event`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Control {
    /// Go on.
    #[default]
    Continue,
    /// Stop at the next step, tile or stage boundary: the generation returns [`Error::Cancelled`].
    Cancel,
}

/// The caller's callback as the pipeline's stages use it: a cancellation becomes [`Error::Cancelled`], which stops
/// the stage like any other error.
pub(crate) struct Observer<'a> {
    callback: &'a mut dyn FnMut(Event) -> Control,
}

impl<'a> Observer<'a> {
    pub(crate) fn new(callback: &'a mut dyn FnMut(Event) -> Control) -> Self {
        Self { callback }
    }

    /// Reports `event`; `Err(Error::Cancelled)` when the caller cancels.
    pub(crate) fn emit(&mut self, event: Event) -> Result<()> {
        match (self.callback)(event) {
            Control::Continue => Ok(()),
            Control::Cancel => Err(Error::Cancelled),
        }
    }
}
