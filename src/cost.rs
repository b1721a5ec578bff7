//! What one engine op costs, from shapes alone: floating-point operations and the elements it must move. The same
//! accounting serves the per-stage model ([`stages`], from configs before anything runs) and the instrumented
//! engine ([`crate::engine::counting`], from the shapes of the tensors each op actually receives), so the two can
//! be compared op for op.
//!
//! What is counted:
//! - `matmul_flops`: 2 per multiply-add of every matrix product — `linear`, `grouped_linear`, `conv3x3`
//!   (`2·out_pixels·Cout·Cin·9`), softmax attention (`q·kᵀ` and `p·v`; causal attention over the visible pairs
//!   `j ≤ i` inside the window, padding included) and linear attention in its padded-value form
//!   (`Σ v kᵀ` and `(kv)·q` with the ones row: `4·N·d·(d + 1)` per head).
//! - `stencil_flops`: depthwise convolutions, `2·k²` per output element (the Mix-FFN's 3×3, LiteMLA's 5×5).
//! - `elements`: every input element read once (weights included) plus every output element written once, per op —
//!   the traffic of an unfused implementation whose tensors do not fit in cache. Bytes = elements × storage size.
//!
//! Not counted: norms, activations, softmax and elementwise arithmetic (memory-bound; they appear in `elements`),
//! host-side work (sinusoids, position embeddings, the sampler, guidance), uploads, downloads and reshapes.

pub mod roofline;
pub mod stages;

use std::ops::{Add, AddAssign, Mul};

/// Operations and traffic of a stretch of work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cost {
    pub matmul_flops: u64,
    pub stencil_flops: u64,
    /// Elements read plus elements written.
    pub elements: u64,
}

impl Cost {
    /// All counted floating-point operations.
    pub fn flops(&self) -> u64 {
        self.matmul_flops + self.stencil_flops
    }

    /// Traffic at `bytes_per_element` (2 for bf16 storage, 4 for f32).
    pub fn bytes(&self, bytes_per_element: u64) -> u64 {
        self.elements * bytes_per_element
    }

    fn matmul(&mut self, flops: usize) {
        self.matmul_flops += flops as u64;
    }

    fn moved(&mut self, elements: usize) {
        self.elements += elements as u64;
    }

    /// `act(x · wᵀ + b)`: `rows` rows of `in_dim` → `out_dim`.
    pub fn linear(&mut self, rows: usize, in_dim: usize, out_dim: usize, bias: bool) {
        self.matmul(2 * rows * in_dim * out_dim);
        self.moved(rows * in_dim + out_dim * in_dim + usize::from(bias) * out_dim + rows * out_dim);
    }

    /// Grouped 1×1 convolution: `rows` rows of `cin` → `cout` in `groups` groups.
    pub fn grouped_linear(&mut self, rows: usize, cin: usize, cout: usize, groups: usize) {
        let per_group = cin / groups.max(1);
        self.matmul(2 * rows * per_group * cout);
        self.moved(rows * cin + cout * per_group + rows * cout);
    }

    /// 3×3 convolution of `batch` maps of `in_pixels` → `out_pixels` pixels.
    pub fn conv3x3(
        &mut self,
        batch: usize,
        (in_pixels, out_pixels): (usize, usize),
        (cin, cout): (usize, usize),
        bias: bool,
    ) {
        self.matmul(2 * batch * out_pixels * cout * cin * 9);
        self.moved(
            batch * in_pixels * cin
                + cout * cin * 9
                + usize::from(bias) * cout
                + batch * out_pixels * cout,
        );
    }

    /// Depthwise k×k convolution over `batch · pixels` positions of `channels`.
    pub fn depthwise_conv(&mut self, positions: usize, channels: usize, k: usize, bias: bool) {
        self.stencil_flops += (2 * k * k * positions * channels) as u64;
        self.moved(2 * positions * channels + channels * k * k + usize::from(bias) * channels);
    }

    /// Mix-FFN middle: depthwise 3×3 + bias over `2F = channels`, then the GLU halves the channels.
    pub fn dwconv3x3_glu(&mut self, positions: usize, channels: usize) {
        self.stencil_flops += (2 * 9 * positions * channels) as u64;
        self.moved(positions * channels + channels * 9 + channels + positions * channels / 2);
    }

    /// Linear attention: `batch` sequences of `tokens`, `heads` of dimension `d`.
    pub fn linear_attention(&mut self, batch: usize, tokens: usize, heads: usize, d: usize) {
        self.matmul(4 * batch * heads * tokens * d * (d + 1));
        self.moved(4 * batch * tokens * heads * d);
    }

    /// Softmax cross-attention of `queries` to `keys` with an additive key bias `[batch, keys]`.
    pub fn attention(
        &mut self,
        batch: usize,
        (queries, keys): (usize, usize),
        heads: usize,
        d: usize,
    ) {
        self.matmul(4 * batch * heads * queries * keys * d);
        self.moved(2 * batch * queries * heads * d + 2 * batch * keys * heads * d + batch * keys);
    }

    /// Causal GQA self-attention over `len` tokens with a `[batch, len]` key mask.
    pub fn causal_attention(
        &mut self,
        batch: usize,
        len: usize,
        (heads, kv_heads, d): (usize, usize, usize),
        window: Option<usize>,
    ) {
        let pairs: usize = (0..len)
            .map(|i| window.map_or(i + 1, |w| (i + 1).min(w)))
            .sum();
        self.matmul(4 * batch * heads * d * pairs);
        self.moved(2 * batch * len * heads * d + 2 * batch * len * kv_heads * d + batch * len);
    }

    /// An op that reads `inputs` elements and writes `outputs` (norms, activations, layouts, elementwise).
    pub fn pass(&mut self, inputs: usize, outputs: usize) {
        self.moved(inputs + outputs);
    }
}

impl Add for Cost {
    type Output = Cost;

    fn add(self, o: Cost) -> Cost {
        Cost {
            matmul_flops: self.matmul_flops + o.matmul_flops,
            stencil_flops: self.stencil_flops + o.stencil_flops,
            elements: self.elements + o.elements,
        }
    }
}

impl AddAssign for Cost {
    fn add_assign(&mut self, o: Cost) {
        *self = *self + o;
    }
}

impl Mul<u64> for Cost {
    type Output = Cost;

    fn mul(self, n: u64) -> Cost {
        Cost {
            matmul_flops: self.matmul_flops * n,
            stencil_flops: self.stencil_flops * n,
            elements: self.elements * n,
        }
    }
}
