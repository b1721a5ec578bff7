//! The elementwise activations of the models' layers.

/// Elementwise activation applied after a linear layer's bias (a cuBLASLt epilogue on the GPU) or on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// None: `x`.
    Identity,
    /// `x · sigmoid(x)` (SiLU / swish).
    Silu,
    /// GELU with the tanh approximation (diffusers `gelu_tanh`, transformers `gelu_pytorch_tanh`).
    GeluTanh,
    /// `max(x, 0)`.
    Relu,
}
