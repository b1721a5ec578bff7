//! Adapters resolved against one transformer checkpoint: every targeted layer checked to exist and to fit, the
//! terms of all adapters gathered per layer, ready to merge into a weight or to stack for the unmerged GEMMs.

use std::collections::HashMap;

use super::{Adapter, LayerName};
use crate::cpu::parallel::for_each_row;
use crate::error::{Error, Result};
use crate::tensor::HostTensor;
use crate::weights::{TensorView, Weights};

/// One adapter's term on one layer: `scale · up · down` (`scale` = adapter weight × α/r).
struct Term {
    down: HostTensor,
    up: HostTensor,
    scale: f32,
}

/// The adapters' terms on one layer `W` `[out, in]`.
pub struct LoraTarget {
    terms: Vec<Term>,
}

/// Every targeted layer of the transformer (dotted module path → its terms) and how they are applied.
pub struct LoraLayers {
    targets: HashMap<String, LoraTarget>,
    merged: bool,
}

impl LoraLayers {
    /// Checks `adapters` against the transformer checkpoint `base`: each layer they name must be a linear layer or
    /// a 1×1 convolution of it (`<module>.weight` `[out, in]` or `[out, in, 1, 1]`), with `A` `[r, in]` and `B`
    /// `[out, r]`; errors name the adapter file and key. Kohya names are matched against the checkpoint's modules
    /// with `.` spelled `_`. `merged`: the transformer folds the terms into its weights
    /// at load, else applies them as extra GEMMs.
    pub fn resolve(adapters: &[Adapter], base: &Weights, merged: bool) -> Result<Self> {
        let kohya: HashMap<String, String> = base
            .keys()
            .filter_map(|k| k.strip_suffix(".weight"))
            .map(|m| (m.replace('.', "_"), m.to_string()))
            .collect();
        let mut targets: HashMap<String, LoraTarget> = HashMap::new();
        for adapter in adapters {
            let file = &adapter.file;
            for (name, layer) in file.layers() {
                let err = |reason: String| Error::Lora {
                    path: file.path().to_path_buf(),
                    key: layer.down_key.clone(),
                    reason,
                };
                let module = match name {
                    LayerName::Module(m) => m.clone(),
                    LayerName::Kohya(k) => kohya.get(k).cloned().ok_or_else(|| {
                        err(format!(
                            "no layer of the transformer is named `{k}` (with `.` as `_`)"
                        ))
                    })?,
                };
                let key = format!("{module}.weight");
                if !base.contains(&key) {
                    return Err(err(format!(
                        "targets `{module}`, which the transformer does not have"
                    )));
                }
                let (out_dim, in_dim) = match *base.get(&key)?.shape() {
                    [o, i] | [o, i, 1, 1] => (o, i),
                    ref other => {
                        return Err(err(format!(
                            "targets `{module}` ({other:?}), which is not a linear layer or a 1×1 convolution"
                        )))
                    }
                };
                let (rank, down_in) = (layer.down.shape()[0], layer.down.shape()[1]);
                if down_in != in_dim {
                    return Err(err(format!(
                        "shape [{rank}, {down_in}] does not fit `{key}` [{out_dim}, {in_dim}]: expected [r, {in_dim}]"
                    )));
                }
                let up_out = layer.up.shape()[0];
                if up_out != out_dim {
                    return Err(Error::Lora {
                        path: file.path().to_path_buf(),
                        key: layer.up_key.clone(),
                        reason: format!(
                            "shape [{up_out}, {rank}] does not fit `{key}` [{out_dim}, {in_dim}]: expected [{out_dim}, r]"
                        ),
                    });
                }
                targets
                    .entry(module)
                    .or_insert_with(|| LoraTarget { terms: Vec::new() })
                    .terms
                    .push(Term {
                        down: layer.down.clone(),
                        up: layer.up.clone(),
                        scale: adapter.weight * layer.scale,
                    });
            }
        }
        Ok(Self { targets, merged })
    }

    /// Whether the terms are folded into the weights at load (else applied as extra GEMMs).
    pub fn merged(&self) -> bool {
        self.merged
    }

    /// The terms on the layer at `module` (e.g. `transformer_blocks.0.attn1.to_q`), if any adapter targets it.
    pub fn target(&self, module: &str) -> Option<&LoraTarget> {
        self.targets.get(module)
    }

    /// Every targeted module, in no particular order.
    pub fn modules(&self) -> impl Iterator<Item = &str> {
        self.targets.keys().map(String::as_str)
    }
}

impl LoraTarget {
    /// `W + Σ scale·B·A` in f32 as `[out, in]`, from the stored weight `W` (`[out, in]` or `[out, in, 1, 1]`);
    /// the caller rounds it once to the storage dtype.
    pub fn merge(
        &self,
        weight: &TensorView<'_>,
        out_dim: usize,
        in_dim: usize,
    ) -> Result<HostTensor> {
        weight.expect_elements_of(&[out_dim, in_dim])?;
        let mut w = weight.to_f32()?;
        // 2·r·out·in flops per term: Sana-1.6B's targets at rank 32 are ~100 GFLOP, so every core takes rows.
        for_each_row(&mut w, in_dim, |o, row| {
            for t in &self.terms {
                let (a, b, r) = (t.down.data(), t.up.data(), t.down.shape()[0]);
                for k in 0..r {
                    let s = t.scale * b[o * r + k];
                    for (x, &ai) in row.iter_mut().zip(&a[k * in_dim..(k + 1) * in_dim]) {
                        *x += s * ai;
                    }
                }
            }
        });
        HostTensor::new(vec![out_dim, in_dim], w)
    }

    /// Every term's factors stacked: `A` `[Σr, in]` and `B` `[out, Σr]` with each term's scale folded into its
    /// columns, so that `x·Aᵀ·Bᵀ = Σ scale·x·Aᵢᵀ·Bᵢᵀ` in two GEMMs.
    pub fn stacked(&self) -> Result<(HostTensor, HostTensor)> {
        let in_dim = self.terms[0].down.shape()[1];
        let out_dim = self.terms[0].up.shape()[0];
        let total: usize = self.terms.iter().map(|t| t.down.shape()[0]).sum();
        let mut a = Vec::with_capacity(total * in_dim);
        let mut b = vec![0.0f32; out_dim * total];
        let mut col = 0;
        for t in &self.terms {
            let r = t.down.shape()[0];
            a.extend_from_slice(t.down.data());
            for o in 0..out_dim {
                for k in 0..r {
                    b[o * total + col + k] = t.scale * t.up.data()[o * r + k];
                }
            }
            col += r;
        }
        Ok((
            HostTensor::new(vec![total, in_dim], a)?,
            HostTensor::new(vec![out_dim, total], b)?,
        ))
    }
}
