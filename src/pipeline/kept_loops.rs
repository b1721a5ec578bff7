//! Denoising loops kept on the engine between generations: a device engine's captured step graph with every buffer
//! it reads, so a later generation of the same shape and options writes its inputs into those buffers and replays
//! the graph from its first step, without an eager step or a capture (src/engine/cuda/step_graph.rs).

use std::collections::VecDeque;
use std::sync::Arc;

use crate::engine::Engine;
use crate::error::Result;
use crate::model::sana_dit::TextConditioning;
use crate::tensor::HostTensor;
use crate::vocabulary::Guidance;

/// What a captured step's work depends on besides the values in its buffers: every buffer's shape, the latent grid,
/// the guidance (its scale is a kernel parameter), the blocks PAG perturbs and whether a ControlNet runs. Two loops
/// with equal keys queue the same launches with the same parameters.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct LoopKey {
    pub(crate) grid: (usize, usize),
    pub(crate) guidance: (Option<u32>, bool),
    pub(crate) shapes: Vec<Vec<usize>>,
    pub(crate) perturbed_blocks: Vec<usize>,
    pub(crate) controlnet: bool,
}

impl LoopKey {
    pub(crate) fn new<E: Engine>(
        e: &E,
        grid: (usize, usize),
        guidance: Guidance,
        inputs: &LoopInputs<E>,
    ) -> Self {
        let (mut shapes, perturbed_blocks) = inputs.text.layout(e);
        shapes.extend(
            [
                Some(&inputs.schedule),
                Some(&inputs.tokens),
                inputs.noise.as_ref(),
            ]
            .into_iter()
            .flatten()
            .map(|t| t.shape().to_vec()),
        );
        shapes.extend(inputs.guidance_sinusoid.iter().map(|t| e.shape(t).to_vec()));
        if let Some(c) = &inputs.controlnet {
            shapes.extend(c.text.layout(e).0);
            shapes.extend([e.shape(&c.control).to_vec(), e.shape(&c.scale).to_vec()]);
        }
        Self {
            grid,
            guidance: (guidance.cfg.map(f32::to_bits), guidance.pag),
            shapes,
            perturbed_blocks,
            controlnet: inputs.controlnet.is_some(),
        }
    }
}

/// A loop's inputs as the pipeline prepares them: the sampler state on the host (schedule, initial sample in token
/// layout, SCM's noise), the rest already on the engine.
pub(crate) struct LoopInputs<E: Engine> {
    pub(crate) schedule: HostTensor,
    pub(crate) tokens: HostTensor,
    pub(crate) noise: Option<HostTensor>,
    pub(crate) text: TextConditioning<E>,
    pub(crate) guidance_sinusoid: Option<E::Tensor>,
    pub(crate) controlnet: Option<ControlNetBuffers<E>>,
}

/// Every buffer a denoising step reads besides the model's weights: the sampler state, the text side, Sprint's
/// guidance embedding, the ControlNet's inputs and the position embedding.
pub(crate) struct LoopBuffers<E: Engine> {
    pub(crate) schedule: E::State,
    pub(crate) x: E::State,
    pub(crate) x0: E::State,
    pub(crate) noise: Option<E::State>,
    pub(crate) text: TextConditioning<E>,
    pub(crate) guidance_sinusoid: Option<E::Tensor>,
    pub(crate) controlnet: Option<ControlNetBuffers<E>>,
    /// Held, not written: the transformer's cache may move on to another size.
    pub(crate) position_embedding: Option<Arc<E::Tensor>>,
}

impl<E: Engine> LoopBuffers<E> {
    /// A new loop's buffers: the sampler state uploaded, the rest moved in.
    pub(crate) fn upload(e: &E, inputs: LoopInputs<E>) -> Result<Self> {
        Ok(Self {
            schedule: e.upload_state(&inputs.schedule)?,
            x: e.upload_state(&inputs.tokens)?,
            // Written before it is read: the first flow step is first order, and SCM steps only write it.
            x0: e.upload_state(&inputs.tokens)?,
            noise: inputs
                .noise
                .as_ref()
                .map(|n| e.upload_state(n))
                .transpose()?,
            text: inputs.text,
            guidance_sinusoid: inputs.guidance_sinusoid,
            controlnet: inputs.controlnet,
            position_embedding: None,
        })
    }

    /// Writes a new loop's inputs (of the same [`LoopKey`]) into these buffers, where a kept graph reads them.
    pub(crate) fn load(&mut self, e: &E, inputs: &LoopInputs<E>) -> Result<()> {
        e.overwrite_state(&mut self.schedule, &inputs.schedule)?;
        e.overwrite_state(&mut self.x, &inputs.tokens)?;
        e.overwrite_state(&mut self.x0, &inputs.tokens)?;
        if let (Some(dst), Some(src)) = (&mut self.noise, &inputs.noise) {
            e.overwrite_state(dst, src)?;
        }
        self.text.overwrite(e, &inputs.text)?;
        if let (Some(dst), Some(src)) = (&mut self.guidance_sinusoid, &inputs.guidance_sinusoid) {
            e.overwrite(dst, src)?;
        }
        if let (Some(dst), Some(src)) = (&mut self.controlnet, &inputs.controlnet) {
            dst.text.overwrite(e, &src.text)?;
            e.overwrite(&mut dst.control, &src.control)?;
            e.overwrite(&mut dst.scale, &src.scale)?;
        }
        Ok(())
    }
}

/// The ControlNet's per-generation inputs: its text side, the embedded control latents and the scale tensor.
pub(crate) struct ControlNetBuffers<E: Engine> {
    pub(crate) text: TextConditioning<E>,
    pub(crate) control: E::Tensor,
    pub(crate) scale: E::Tensor,
}

/// A loop whose step the engine captured, with the buffers the graph reads.
pub(crate) struct KeptLoop<E: Engine> {
    pub(crate) key: LoopKey,
    pub(crate) buffers: LoopBuffers<E>,
    pub(crate) graph: E::StepGraph,
}

/// The kept loops of one loaded transformer, most recently used last, at most `capacity` of them (each holds its
/// buffers and its graph's reservation of device memory). They die with the transformer, whose weights the graphs
/// read, and are dropped whenever its layers change (LoRA adapters swapped in place).
pub(crate) struct KeptLoops<E: Engine> {
    capacity: usize,
    loops: VecDeque<KeptLoop<E>>,
}

impl<E: Engine> KeptLoops<E> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            loops: VecDeque::new(),
        }
    }

    /// Takes out the loop kept for `key`, if any (it goes back with [`Self::keep`] after its run).
    pub(crate) fn take(&mut self, key: &LoopKey) -> Option<KeptLoop<E>> {
        let i = self.loops.iter().position(|l| l.key == *key)?;
        self.loops.remove(i)
    }

    /// Keeps `kept` as the most recently used, dropping the least recently used beyond the capacity.
    pub(crate) fn keep(&mut self, kept: KeptLoop<E>) {
        if self.capacity == 0 {
            return;
        }
        self.loops.retain(|l| l.key != kept.key);
        self.loops.push_back(kept);
        while self.loops.len() > self.capacity {
            self.loops.pop_front();
        }
    }

    pub(crate) fn clear(&mut self) {
        self.loops.clear();
    }
}
