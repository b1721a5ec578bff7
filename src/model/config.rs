//! Configs of the diffusers folders, parsed leniently: real `scheduler_config.json` files contain the bare tokens
//! `-Infinity`/`Infinity`/`NaN`, which strict JSON forbids. Unknown fields are ignored (diffusers writes
//! `_class_name`, `_diffusers_version`, …); known fields with values we cannot honour are errors naming the field.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::error::{Error, Result};

/// Reads `path` and parses it as `T`, accepting non-finite number tokens (they become `null`).
pub fn read_config<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&strict_json(&text)).map_err(|e| Error::Json {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Rewrites the bare tokens `-Infinity`, `Infinity` and `NaN` (outside strings) as `null`.
fn strict_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            in_string = c != '"' || escaped;
            escaped = c == '\\' && !escaped;
        } else if c == '"' {
            in_string = true;
        } else if let Some(token) = ["-Infinity", "Infinity", "NaN"]
            .into_iter()
            .find(|t| rest.starts_with(t))
        {
            out.push_str("null");
            rest = &rest[token.len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

fn config_error(path: &Path, field: &str, reason: impl Into<String>) -> Error {
    Error::Config {
        path: path.to_path_buf(),
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// `transformer/config.json` of `SanaTransformer2DModel` (spec transformer.md §2).
#[derive(Clone, Debug, Deserialize)]
pub struct TransformerConfig {
    #[serde(default = "d32")]
    pub in_channels: usize,
    #[serde(default)]
    pub out_channels: Option<usize>,
    #[serde(default = "d70")]
    pub num_attention_heads: usize,
    #[serde(default = "d32")]
    pub attention_head_dim: usize,
    #[serde(default = "d20")]
    pub num_layers: usize,
    #[serde(default = "d20")]
    pub num_cross_attention_heads: usize,
    #[serde(default = "d112")]
    pub cross_attention_head_dim: usize,
    #[serde(default = "d2240")]
    pub cross_attention_dim: usize,
    #[serde(default = "d2304")]
    pub caption_channels: usize,
    #[serde(default = "d2_5")]
    pub mlp_ratio: f64,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default = "d32")]
    pub sample_size: usize,
    #[serde(default = "d1")]
    pub patch_size: usize,
    #[serde(default)]
    pub norm_elementwise_affine: bool,
    #[serde(default = "d1e6")]
    pub norm_eps: f64,
    #[serde(default)]
    pub interpolation_scale: Option<f64>,
    #[serde(default)]
    pub guidance_embeds: bool,
    #[serde(default = "d0_1")]
    pub guidance_embeds_scale: f64,
    #[serde(default)]
    pub qk_norm: Option<String>,
    #[serde(default = "d1f")]
    pub timestep_scale: f64,
    #[serde(skip)]
    pub source: PathBuf,
}

fn d1() -> usize {
    1
}
fn d20() -> usize {
    20
}
fn d32() -> usize {
    32
}
fn d70() -> usize {
    70
}
fn d112() -> usize {
    112
}
fn d2240() -> usize {
    2240
}
fn d2304() -> usize {
    2304
}
fn d2_5() -> f64 {
    2.5
}
fn d1e6() -> f64 {
    1e-6
}
fn d0_1() -> f64 {
    0.1
}
fn d1f() -> f64 {
    1.0
}

impl TransformerConfig {
    /// Reads and validates `path` (a `transformer/config.json`).
    pub fn load(path: &Path) -> Result<Self> {
        let mut cfg: Self = read_config(path)?;
        cfg.source = path.to_path_buf();
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        let p = &self.source;
        if let Some(q) = &self.qk_norm {
            if q != "rms_norm_across_heads" {
                return Err(config_error(
                    p,
                    "qk_norm",
                    format!("`{q}` is not supported (only \"rms_norm_across_heads\" or null)"),
                ));
            }
        }
        if self.patch_size != 1 {
            return Err(config_error(
                p,
                "patch_size",
                format!(
                    "{} is not supported: every Sana checkpoint uses 1",
                    self.patch_size
                ),
            ));
        }
        if self.norm_elementwise_affine {
            return Err(config_error(
                p,
                "norm_elementwise_affine",
                "true is not supported: Sana blocks use non-affine LayerNorms",
            ));
        }
        if self.num_cross_attention_heads * self.cross_attention_head_dim != self.dim() {
            return Err(config_error(
                p,
                "num_cross_attention_heads",
                format!(
                    "{} heads × {} (cross_attention_head_dim) must equal the model width {}",
                    self.num_cross_attention_heads,
                    self.cross_attention_head_dim,
                    self.dim()
                ),
            ));
        }
        if self.cross_attention_dim != self.dim() {
            return Err(config_error(
                p,
                "cross_attention_dim",
                format!(
                    "{} must equal the model width {}",
                    self.cross_attention_dim,
                    self.dim()
                ),
            ));
        }
        if self.out_channels() != self.in_channels {
            return Err(config_error(
                p,
                "out_channels",
                "must equal in_channels (Sana predicts a velocity of the latent's shape)",
            ));
        }
        if self.dim() == 0 || self.in_channels == 0 {
            return Err(config_error(
                p,
                "num_attention_heads",
                "the model width is zero",
            ));
        }
        Ok(())
    }

    /// Model width D.
    pub fn dim(&self) -> usize {
        self.num_attention_heads * self.attention_head_dim
    }

    pub fn out_channels(&self) -> usize {
        self.out_channels.unwrap_or(self.in_channels)
    }

    /// Mix-FFN hidden width `int(mlp_ratio · D)`.
    pub fn ffn_dim(&self) -> usize {
        (self.mlp_ratio * self.dim() as f64) as usize
    }

    pub fn has_qk_norm(&self) -> bool {
        self.qk_norm.is_some()
    }
}

/// Which scheduler a `scheduler_config.json` asks for, with the fields that change its numbers.
#[derive(Clone, Debug, PartialEq)]
pub enum SchedulerConfig {
    /// `DPMSolverMultistepScheduler` with flow sigmas (spec sampling.md §5–6).
    FlowDpmSolver(DpmSolverConfig),
    /// `FlowMatchEulerDiscreteScheduler` (spec sampling.md §9).
    FlowEuler(FlowEulerConfig),
    /// `SCMScheduler`, Sana-Sprint's few-step TrigFlow sampler (spec sampling.md §10).
    Scm(ScmConfig),
}

#[derive(Clone, Debug, PartialEq)]
pub struct DpmSolverConfig {
    pub num_train_timesteps: usize,
    pub flow_shift: f64,
    pub solver_order: usize,
    pub lower_order_final: bool,
    pub euler_at_final: bool,
    /// true: the last σ is 0 (`final_sigmas_type = "zero"`); false: it repeats the smallest σ (`"sigma_min"`).
    pub final_sigma_zero: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FlowEulerConfig {
    pub num_train_timesteps: usize,
    pub shift: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ScmConfig {
    pub num_train_timesteps: usize,
    /// σ_d: scales the initial noise, the per-step noise and the model input.
    pub sigma_data: f64,
}

#[derive(Deserialize)]
struct RawScheduler {
    #[serde(rename = "_class_name")]
    class_name: Option<String>,
    num_train_timesteps: Option<usize>,
    prediction_type: Option<String>,
    use_flow_sigmas: Option<bool>,
    flow_shift: Option<f64>,
    shift: Option<f64>,
    algorithm_type: Option<String>,
    solver_order: Option<usize>,
    solver_type: Option<String>,
    lower_order_final: Option<bool>,
    euler_at_final: Option<bool>,
    final_sigmas_type: Option<String>,
    thresholding: Option<bool>,
    use_karras_sigmas: Option<bool>,
    use_exponential_sigmas: Option<bool>,
    use_beta_sigmas: Option<bool>,
    use_lu_lambdas: Option<bool>,
    use_dynamic_shifting: Option<bool>,
    variance_type: Option<String>,
    invert_sigmas: Option<bool>,
    stochastic_sampling: Option<bool>,
    shift_terminal: Option<f64>,
    sigma_data: Option<f64>,
}

impl SchedulerConfig {
    /// Reads `scheduler/scheduler_config.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let raw: RawScheduler = read_config(path)?;
        let err = |field: &str, reason: String| config_error(path, field, reason);
        let off = |field: &str, v: Option<bool>| -> Result<()> {
            if v == Some(true) {
                Err(err(
                    field,
                    "true is not supported by the Sana samplers".into(),
                ))
            } else {
                Ok(())
            }
        };
        for (field, v) in [
            ("thresholding", raw.thresholding),
            ("use_karras_sigmas", raw.use_karras_sigmas),
            ("use_exponential_sigmas", raw.use_exponential_sigmas),
            ("use_beta_sigmas", raw.use_beta_sigmas),
            ("use_dynamic_shifting", raw.use_dynamic_shifting),
            ("invert_sigmas", raw.invert_sigmas),
            ("stochastic_sampling", raw.stochastic_sampling),
        ] {
            off(field, v)?;
        }
        let num_train_timesteps = raw.num_train_timesteps.unwrap_or(1000);
        match raw.class_name.as_deref() {
            Some("DPMSolverMultistepScheduler") => {
                expect(path, "prediction_type", raw.prediction_type.as_deref(), "flow_prediction", "epsilon")?;
                expect(path, "algorithm_type", raw.algorithm_type.as_deref(), "dpmsolver++", "dpmsolver++")?;
                expect(path, "solver_type", raw.solver_type.as_deref(), "midpoint", "midpoint")?;
                if raw.use_flow_sigmas != Some(true) {
                    return Err(err("use_flow_sigmas", "must be true: Sana samples with flow sigmas".into()));
                }
                off("use_lu_lambdas", raw.use_lu_lambdas)?;
                if let Some(v) = raw.variance_type.as_deref() {
                    return Err(err("variance_type", format!("`{v}` is not supported (only null)")));
                }
                let solver_order = raw.solver_order.unwrap_or(2);
                if !(1..=2).contains(&solver_order) {
                    return Err(err("solver_order", format!("{solver_order} is not supported (1 or 2)")));
                }
                let final_sigma_zero = match raw.final_sigmas_type.as_deref().unwrap_or("zero") {
                    "zero" => true,
                    "sigma_min" => false,
                    other => return Err(err("final_sigmas_type", format!("`{other}` is not supported (\"zero\" or \"sigma_min\")"))),
                };
                Ok(Self::FlowDpmSolver(DpmSolverConfig {
                    num_train_timesteps,
                    flow_shift: raw.flow_shift.unwrap_or(1.0),
                    solver_order,
                    lower_order_final: raw.lower_order_final.unwrap_or(true),
                    euler_at_final: raw.euler_at_final.unwrap_or(false),
                    final_sigma_zero,
                }))
            }
            Some("FlowMatchEulerDiscreteScheduler") => {
                if raw.shift_terminal.is_some() {
                    return Err(err("shift_terminal", "is not supported (only null)".into()));
                }
                Ok(Self::FlowEuler(FlowEulerConfig {
                    num_train_timesteps,
                    shift: raw.shift.unwrap_or(1.0),
                }))
            }
            Some("SCMScheduler") => {
                expect(path, "prediction_type", raw.prediction_type.as_deref(), "trigflow", "trigflow")?;
                Ok(Self::Scm(ScmConfig {
                    num_train_timesteps,
                    sigma_data: raw.sigma_data.unwrap_or(0.5),
                }))
            }
            Some(other) => Err(err("_class_name", format!("`{other}` is not a supported scheduler (DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler, SCMScheduler)"))),
            None => Err(err("_class_name", "missing: cannot tell which scheduler this is".into())),
        }
    }
}

fn expect(path: &Path, field: &str, value: Option<&str>, want: &str, default: &str) -> Result<()> {
    let v = value.unwrap_or(default);
    if v == want {
        Ok(())
    } else {
        Err(config_error(
            path,
            field,
            format!("`{v}` is not supported (Sana needs \"{want}\")"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::strict_json;

    #[test]
    fn non_finite_tokens_become_null_outside_strings() {
        let s = r#"{"a": -Infinity, "b": "NaN -Infinity", "c": [Infinity, NaN], "d": "\"NaN"}"#;
        assert_eq!(
            strict_json(s),
            r#"{"a": null, "b": "NaN -Infinity", "c": [null, null], "d": "\"NaN"}"#
        );
    }
}
