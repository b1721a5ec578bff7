//! Layers shared by the models: a linear layer (also 1×1 convolutions) loaded straight from checkpoint keys.

use crate::engine::{Activation, Engine};
use crate::error::Result;
use crate::lora::LoraTarget;
use crate::weights::{TensorView, Weights};

/// `y = act(x · wᵀ + b)`; keys `{prefix}.weight` [out, in] (or [out, in, 1, 1] for a 1×1 conv) and `{prefix}.bias`.
pub struct Linear<E: Engine> {
    weight: E::Tensor,
    bias: Option<E::Tensor>,
    /// Unmerged LoRA: every adapter's `A` stacked `[Σr, in]` and `B` `[out, Σr]` (scales folded in).
    lora: Option<(E::Tensor, E::Tensor)>,
}

impl<E: Engine> Linear<E> {
    /// Loads `weight` `[out_dim, in_dim]` and, if `bias`, `bias` `[out_dim]` from `w` (already at the layer's
    /// prefix), checking both shapes.
    pub fn new(e: &E, w: &Weights, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self> {
        Self::load(e, w, &[out_dim, in_dim], in_dim, out_dim, bias)
    }

    /// A `Conv2d` with a 1×1 kernel, applied to channels-last tokens.
    pub fn conv1x1(e: &E, w: &Weights, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self> {
        Self::load(e, w, &[out_dim, in_dim, 1, 1], in_dim, out_dim, bias)
    }

    /// A linear layer from tensors already on the engine (e.g. several checkpoint matrices stacked into one GEMM).
    pub fn from_tensors(weight: E::Tensor, bias: Option<E::Tensor>) -> Self {
        Self {
            weight,
            bias,
            lora: None,
        }
    }

    fn load(
        e: &E,
        w: &Weights,
        stored: &[usize],
        in_dim: usize,
        out_dim: usize,
        bias: bool,
    ) -> Result<Self> {
        let weight = e.load(&w.get_shaped("weight", stored)?, &[out_dim, in_dim])?;
        let bias = if bias {
            Some(e.load(&w.get_shaped("bias", &[out_dim])?, &[out_dim])?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            lora: None,
        })
    }

    /// Replaces the weight by `stored + Σ scale·B·A`, `stored` being this layer's checkpoint weight (`[out, in]`
    /// or `[out, in, 1, 1]`): one layer's f32 copy at a time, rounded once to the storage dtype by the upload.
    pub fn merge_lora(
        &mut self,
        e: &E,
        stored: &TensorView<'_>,
        target: &LoraTarget,
    ) -> Result<()> {
        let (out_dim, in_dim) = (stored.shape()[0], stored.shape()[1]);
        self.weight = e.upload(&target.merge(stored, out_dim, in_dim)?)?;
        Ok(())
    }

    /// Replaces the unmerged LoRA terms (none: the base layer alone); the base weight is untouched.
    pub fn set_lora(&mut self, e: &E, target: Option<&LoraTarget>) -> Result<()> {
        self.lora = match target {
            Some(t) => {
                let (down, up) = t.stacked()?;
                Some((e.upload(&down)?, e.upload(&up)?))
            }
            None => None,
        };
        Ok(())
    }

    /// `x · wᵀ + b` over the last axis: `[.., in]` → `[.., out]`.
    pub fn forward(&self, e: &E, x: &E::Tensor) -> Result<E::Tensor> {
        self.forward_act(e, x, Activation::Identity)
    }

    /// `act(x · wᵀ + b)` over the last axis, the activation fused into the GEMM where the engine can.
    pub fn forward_act(&self, e: &E, x: &E::Tensor, act: Activation) -> Result<E::Tensor> {
        let Some((down, up)) = &self.lora else {
            return e.linear(x, &self.weight, self.bias.as_ref(), act);
        };
        let y = e.linear(x, &self.weight, self.bias.as_ref(), Activation::Identity)?;
        let low = e.linear(x, down, None, Activation::Identity)?;
        let y = e.add(&y, &e.linear(&low, up, None, Activation::Identity)?)?;
        match act {
            Activation::Identity => Ok(y),
            act => e.activation(&y, act),
        }
    }
}

/// Loads a 1-D or 2-D parameter with a shape check.
pub fn param<E: Engine>(e: &E, w: &Weights, name: &str, shape: &[usize]) -> Result<E::Tensor> {
    e.load(&w.get_shaped(name, shape)?, shape)
}
