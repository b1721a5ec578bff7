//! The parameters of a causal self-attention.

/// Parameters of `Engine::causal_attention` (src/engine/mod.rs): Gemma-2's self-attention,
/// docs/numerics/text-encoder.md §9.4, §10.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CausalAttention {
    /// Query heads.
    pub heads: usize,
    /// Key/value heads; query head `h` reads key/value head `h / (heads / kv_heads)` (GQA).
    pub kv_heads: usize,
    /// Multiplies `q·k` (Gemma: `query_pre_attn_scalar^-½`).
    pub scale: f32,
    /// `Some(c)`: scores become `c · tanh(s / c)` before masking (transformers' eager path; its SDPA path drops it).
    pub softcap: Option<f32>,
    /// `Some(w)`: query `i` sees key `j` only if `i − j < w` (sliding-window layers).
    pub window: Option<usize>,
}
