//! `sana-run inspect DIR`: what a diffusers Sana folder holds — the variant, parameter counts, dtypes, and the
//! tensors that are missing, unexpected or of the wrong shape — read from the configs and the safetensors headers
//! only (the files are memory-mapped and their tensor data never touched, so a 1.6B checkpoint takes milliseconds).
//!
//! For each model component the key set its config implies (exactly the keys our loaders read, with their shapes)
//! is compared with the checkpoint. The VAE's `encoder.*` tensors are counted as present but not used, and not
//! checked: only the decoder runs. The variant name comes from the transformer config alone, matched against the
//! published table (docs/numerics/transformer.md §2.2); the scheduler, VAE, text encoder and `model_index.json` are
//! checked against it and disagreements become [`Finding`]s. Only an unreadable folder, or a config that is unreadable
//! or that its loader rejects, is an error.
//!
//! `keys` builds the expected key sets, `variant` names the transformer; this file reads the folder and prints.

mod keys;
mod variant;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::model::config::{read_config, SchedulerConfig, TransformerConfig, VaeConfig};
use crate::model::gemma2::GemmaConfig;
use crate::weights::Weights;

pub use keys::{parameter_count, text_encoder_keys, transformer_keys, vae_decoder_keys, KeySet};
pub use variant::{Family, TransformerInfo, Variant};

use keys::elements;

// ---------------------------------------------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------------------------------------------

/// What `inspect` found in a pipeline folder.
#[derive(Clone, Debug)]
pub struct Report {
    pub dir: PathBuf,
    /// `_class_name` of `model_index.json`, when there is one.
    pub pipeline_class: Option<String>,
    /// From `transformer/config.json`; `None` without a transformer folder.
    pub transformer: Option<TransformerInfo>,
    /// The scheduler class of `scheduler/scheduler_config.json`.
    pub scheduler: Option<String>,
    /// `tokenizer/tokenizer.json`, when present.
    pub tokenizer: Option<PathBuf>,
    /// Image pixels per latent pixel, from `vae/config.json`.
    pub vae_spatial_factor: Option<usize>,
    /// The components with weights, in the order text_encoder, transformer, vae.
    pub components: Vec<Component>,
    pub findings: Vec<Finding>,
}

/// One component's checkpoint: totals over every tensor in the files its loader reads, and the key check.
#[derive(Clone, Debug)]
pub struct Component {
    /// The sub-folder name: `text_encoder`, `transformer` or `vae`.
    pub name: &'static str,
    /// The files the loader reads (one, or the shards).
    pub files: Vec<PathBuf>,
    /// Other `*.safetensors` in the folder that the loader does not read (e.g. a `.bf16` variant next to f32).
    pub other_files: Vec<PathBuf>,
    pub tensors: usize,
    pub parameters: u64,
    /// Tensor data bytes (headers excluded).
    pub bytes: u64,
    /// dtype (`F32`, `BF16`, …) → number of tensors.
    pub dtypes: BTreeMap<String, usize>,
    pub keys: KeyCheck,
}

/// The checkpoint's names against the key set the config implies. Names are as stored (prefix included).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KeyCheck {
    /// The prefix the loader applies: `model.` for a Gemma saved inside a `…ForCausalLM`, else empty.
    pub prefix: String,
    /// How many keys the config implies.
    pub expected: usize,
    /// Expected but absent, with the expected shape.
    pub missing: Vec<(String, Vec<usize>)>,
    /// Present but not read by the loader, with the stored shape.
    pub unexpected: Vec<(String, Vec<usize>)>,
    pub wrong_shape: Vec<WrongShape>,
    /// Present and deliberately not checked: the VAE's `encoder.*` tensors.
    pub not_used: usize,
}

impl KeyCheck {
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.wrong_shape.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrongShape {
    pub name: String,
    pub expected: Vec<usize>,
    pub actual: Vec<usize>,
}

/// A problem with the folder as a whole; the report is still complete.
#[derive(Clone, Debug, PartialEq)]
pub enum Finding {
    /// A component folder (or file) the pipeline needs is absent.
    MissingComponent { component: String, path: PathBuf },
    /// `tokenizer/tokenizer.json` is present but the tokenizer does not load from it (as generation would).
    UnreadableTokenizer { reason: String },
    /// A component's weights could not be opened (absent, truncated, a shard missing, …).
    UnreadableWeights { component: String, reason: String },
    /// Tensors in a dtype the engines cannot load (they take F32, F16, BF16).
    UnsupportedDtype {
        component: String,
        dtype: String,
        tensors: usize,
    },
    /// transformer `in_channels` ≠ VAE `latent_channels`.
    LatentChannels { transformer: usize, vae: usize },
    /// transformer `caption_channels` ≠ Gemma `hidden_size`.
    CaptionChannels {
        transformer: usize,
        text_encoder: usize,
    },
    /// A Sprint transformer (`guidance_embeds`) without `SCMScheduler`, or `SCMScheduler` with another transformer.
    SchedulerMismatch {
        guidance_embeds: bool,
        scheduler: String,
    },
    /// `model_index.json` names `SanaPipeline` for a Sprint transformer or `SanaSprintPipeline` for another.
    PipelineMismatch {
        guidance_embeds: bool,
        pipeline: String,
    },
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::MissingComponent { component, path } => {
                write!(f, "{component}: missing ({} not found)", path.display())
            }
            Finding::UnreadableTokenizer { reason } => write!(f, "tokenizer: {reason}"),
            Finding::UnreadableWeights { component, reason } => {
                write!(f, "{component}: weights unreadable: {reason}")
            }
            Finding::UnsupportedDtype {
                component,
                dtype,
                tensors,
            } => write!(
                f,
                "{component}: {tensors} tensors in {dtype}, which the engines cannot load (F32, F16, BF16)"
            ),
            Finding::LatentChannels { transformer, vae } => write!(
                f,
                "transformer in_channels {transformer} ≠ vae latent_channels {vae}"
            ),
            Finding::CaptionChannels {
                transformer,
                text_encoder,
            } => write!(
                f,
                "transformer caption_channels {transformer} ≠ text_encoder hidden_size {text_encoder}"
            ),
            Finding::SchedulerMismatch {
                guidance_embeds: true,
                scheduler,
            } => write!(
                f,
                "the transformer is Sana-Sprint (guidance_embeds) but the scheduler is {scheduler}, not SCMScheduler"
            ),
            Finding::SchedulerMismatch { scheduler, .. } => write!(
                f,
                "the scheduler is {scheduler} (Sana-Sprint's) but the transformer has no guidance_embeds"
            ),
            Finding::PipelineMismatch {
                guidance_embeds,
                pipeline,
            } => write!(
                f,
                "model_index.json names {pipeline}, but the transformer {} guidance_embeds",
                if *guidance_embeds { "has" } else { "lacks" }
            ),
        }
    }
}

impl Report {
    /// The detected variant, `None` without a transformer.
    pub fn variant(&self) -> Option<Variant> {
        self.transformer.as_ref().map(|t| t.variant)
    }

    pub fn component(&self, name: &str) -> Option<&Component> {
        self.components.iter().find(|c| c.name == name)
    }

    /// No findings and every key check clean.
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty() && self.components.iter().all(|c| c.keys.is_clean())
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Reading a folder
// ---------------------------------------------------------------------------------------------------------------

/// Inspects the diffusers pipeline folder `dir` (`model_index.json` optional; `tokenizer/`, `text_encoder/`,
/// `transformer/`, `vae/`, `scheduler/`). Errors only when `dir` is not a readable folder or a config present is
/// unreadable or invalid (the error names the file); everything else is reported.
pub fn inspect(dir: &Path) -> Result<Report> {
    let meta = std::fs::metadata(dir).map_err(|e| Error::io(dir, e))?;
    if !meta.is_dir() {
        return Err(Error::io(
            dir,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a folder"),
        ));
    }
    let mut findings = Vec::new();
    let index = dir.join("model_index.json");
    let pipeline_class = if index.is_file() {
        let json: serde_json::Value = read_config(&index)?;
        json.get("_class_name")
            .and_then(|v| v.as_str())
            .map(str::to_string)
    } else {
        None
    };

    let mut folder = |name: &str| -> Option<PathBuf> {
        let path = dir.join(name);
        if path.is_dir() {
            Some(path)
        } else {
            findings.push(Finding::MissingComponent {
                component: name.to_string(),
                path,
            });
            None
        }
    };
    let tokenizer_dir = folder("tokenizer");
    let text_dir = folder("text_encoder");
    let transformer_dir = folder("transformer");
    let vae_dir = folder("vae");
    let scheduler_dir = folder("scheduler");

    let tokenizer = tokenizer_dir.and_then(|d| {
        let path = d.join("tokenizer.json");
        if !path.is_file() {
            findings.push(Finding::MissingComponent {
                component: "tokenizer".into(),
                path,
            });
            return None;
        }
        // Loaded as generation loads it, so a tokenizer that generation refuses is a finding here.
        if let Err(e) = crate::text::GemmaTokenizer::from_dir(&d) {
            findings.push(Finding::UnreadableTokenizer {
                reason: e.to_string(),
            });
        }
        Some(path)
    });
    let gemma = text_dir
        .as_ref()
        .map(|d| GemmaConfig::load(&d.join("config.json")))
        .transpose()?;
    let transformer = transformer_dir
        .as_ref()
        .map(|d| TransformerConfig::load(&d.join("config.json")))
        .transpose()?;
    let vae = vae_dir
        .as_ref()
        .map(|d| VaeConfig::load(&d.join("config.json")))
        .transpose()?;
    let scheduler = scheduler_dir
        .as_ref()
        .map(|d| SchedulerConfig::load(&d.join("scheduler_config.json")))
        .transpose()?;

    let mut components = Vec::new();
    if let (Some(d), Some(cfg)) = (&text_dir, &gemma) {
        components.extend(scan("text_encoder", d, "model", &mut findings, |w| {
            // Exactly `Gemma2Model::new`'s rule: `model.` only when the bare name is absent and the prefixed present.
            let prefix =
                if !w.contains("embed_tokens.weight") && w.contains("model.embed_tokens.weight") {
                    "model."
                } else {
                    ""
                };
            (prefix, text_encoder_keys(cfg), None)
        }));
    }
    if let (Some(d), Some(cfg)) = (&transformer_dir, &transformer) {
        components.extend(scan(
            "transformer",
            d,
            "diffusion_pytorch_model",
            &mut findings,
            |_| ("", transformer_keys(cfg), None),
        ));
    }
    if let (Some(d), Some(cfg)) = (&vae_dir, &vae) {
        components.extend(scan(
            "vae",
            d,
            "diffusion_pytorch_model",
            &mut findings,
            |_| ("", vae_decoder_keys(cfg), Some("encoder.")),
        ));
    }

    let scheduler = scheduler.map(|s| scheduler_class(&s));
    if let Some(t) = &transformer {
        if let Some(v) = &vae {
            if t.in_channels != v.latent_channels {
                findings.push(Finding::LatentChannels {
                    transformer: t.in_channels,
                    vae: v.latent_channels,
                });
            }
        }
        if let Some(g) = &gemma {
            if t.caption_channels != g.hidden_size {
                findings.push(Finding::CaptionChannels {
                    transformer: t.caption_channels,
                    text_encoder: g.hidden_size,
                });
            }
        }
        if let Some(s) = &scheduler {
            if t.guidance_embeds != (s == "SCMScheduler") {
                findings.push(Finding::SchedulerMismatch {
                    guidance_embeds: t.guidance_embeds,
                    scheduler: s.clone(),
                });
            }
        }
        if let Some(p) = &pipeline_class {
            let sprint_pipeline = match p.as_str() {
                "SanaSprintPipeline" => Some(true),
                "SanaPipeline" => Some(false),
                _ => None,
            };
            if sprint_pipeline.is_some_and(|s| s != t.guidance_embeds) {
                findings.push(Finding::PipelineMismatch {
                    guidance_embeds: t.guidance_embeds,
                    pipeline: p.clone(),
                });
            }
        }
    }

    Ok(Report {
        dir: dir.to_path_buf(),
        pipeline_class,
        transformer: transformer.as_ref().map(TransformerInfo::from_config),
        scheduler,
        tokenizer,
        vae_spatial_factor: vae.as_ref().map(VaeConfig::spatial_factor),
        components,
        findings,
    })
}

fn scheduler_class(s: &SchedulerConfig) -> String {
    match s {
        SchedulerConfig::FlowDpmSolver(_) => "DPMSolverMultistepScheduler",
        SchedulerConfig::FlowEuler(_) => "FlowMatchEulerDiscreteScheduler",
        SchedulerConfig::Scm(_) => "SCMScheduler",
    }
    .to_string()
}

/// What to compare a checkpoint with: the loader's key prefix, the key set (unprefixed), and a prefix of keys that
/// are present by design but not used.
type Expectation = (&'static str, KeySet, Option<&'static str>);

/// Opens `dir/{stem}…` as `Weights::open` does and checks it; unopenable weights become a finding.
fn scan(
    name: &'static str,
    dir: &Path,
    stem: &str,
    findings: &mut Vec<Finding>,
    expect: impl FnOnce(&Weights) -> Expectation,
) -> Option<Component> {
    let weights = match Weights::open(dir, stem) {
        Ok(w) => w,
        Err(e) => {
            findings.push(Finding::UnreadableWeights {
                component: name.to_string(),
                reason: e.to_string(),
            });
            return None;
        }
    };
    let (prefix, expected, not_used_prefix) = expect(&weights);
    let files: Vec<PathBuf> = weights.files().map(|f| f.path().to_path_buf()).collect();

    let mut present: HashMap<&str, &[usize]> = HashMap::new();
    let (mut parameters, mut bytes) = (0u64, 0u64);
    let mut dtypes = BTreeMap::new();
    for view in weights.files().flat_map(|f| f.views()) {
        present.insert(view.name(), view.shape());
        parameters = parameters.saturating_add(elements(view.shape()));
        bytes = bytes.saturating_add(view.bytes().len() as u64);
        *dtypes.entry(format!("{:?}", view.dtype())).or_insert(0) += 1;
    }
    for (dtype, &tensors) in &dtypes {
        if !["F32", "F16", "BF16"].contains(&dtype.as_str()) {
            findings.push(Finding::UnsupportedDtype {
                component: name.to_string(),
                dtype: dtype.clone(),
                tensors,
            });
        }
    }

    let mut keys = KeyCheck {
        prefix: prefix.to_string(),
        expected: expected.len(),
        ..KeyCheck::default()
    };
    for (key, shape) in &expected {
        let full = format!("{prefix}{key}");
        match present.get(full.as_str()) {
            None => keys.missing.push((full, shape.clone())),
            Some(&actual) if actual != shape.as_slice() => keys.wrong_shape.push(WrongShape {
                name: full,
                expected: shape.clone(),
                actual: actual.to_vec(),
            }),
            Some(_) => {}
        }
    }
    for (&stored, &shape) in &present {
        let known = stored
            .strip_prefix(prefix)
            .is_some_and(|k| expected.contains_key(k));
        if known {
            continue;
        }
        if not_used_prefix.is_some_and(|p| stored.starts_with(p)) {
            keys.not_used += 1;
        } else {
            keys.unexpected.push((stored.to_string(), shape.to_vec()));
        }
    }
    keys.unexpected.sort();

    let mut other_files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors") && !files.contains(p))
        .collect();
    other_files.sort();

    Some(Component {
        name,
        tensors: present.len(),
        files,
        other_files,
        parameters,
        bytes,
        dtypes,
        keys,
    })
}

// ---------------------------------------------------------------------------------------------------------------
// Display
// ---------------------------------------------------------------------------------------------------------------

/// At most this many names per list are printed; the report holds them all.
const LIST_LIMIT: usize = 20;

/// `1604462752` → `1,604,462,752`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// `1604462752` → `1.60 B`, `195008` → `195.0 k`.
fn approx(n: u64) -> String {
    let x = n as f64;
    match n {
        0..=999 => n.to_string(),
        1_000..=999_999 => format!("{:.1} k", x / 1e3),
        1_000_000..=999_999_999 => format!("{:.1} M", x / 1e6),
        _ => format!("{:.2} B", x / 1e9),
    }
}

/// Decimal units, as the Hub shows file sizes.
fn size(bytes: u64) -> String {
    let x = bytes as f64;
    match bytes {
        0..=999 => format!("{bytes} B"),
        1_000..=999_999 => format!("{:.1} kB", x / 1e3),
        1_000_000..=999_999_999 => format!("{:.1} MB", x / 1e6),
        _ => format!("{:.2} GB", x / 1e9),
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

fn list<T>(
    f: &mut fmt::Formatter<'_>,
    title: &str,
    items: &[T],
    line: impl Fn(&T) -> String,
) -> fmt::Result {
    if items.is_empty() {
        return Ok(());
    }
    writeln!(f, "    {title} ({}):", items.len())?;
    for item in items.iter().take(LIST_LIMIT) {
        writeln!(f, "      {}", line(item))?;
    }
    if items.len() > LIST_LIMIT {
        writeln!(f, "      … and {} more", items.len() - LIST_LIMIT)?;
    }
    Ok(())
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.dir.display())?;
        if let Some(class) = &self.pipeline_class {
            write!(f, " ({class})")?;
        }
        writeln!(f)?;
        match &self.transformer {
            Some(t) => {
                write!(f, "variant:     {} ({} family", t.variant, t.family)?;
                if let Some(repo) = t.variant.repo() {
                    write!(f, "; {repo}")?;
                }
                writeln!(f, ")")?;
                writeln!(
                    f,
                    "             D {} ({} heads × {}), {} layers, cross-attention {} × {}, caption {}, latent {}",
                    t.width,
                    t.heads,
                    t.head_dim,
                    t.layers,
                    t.cross_heads,
                    t.cross_head_dim,
                    t.caption_channels,
                    t.in_channels
                )?;
                let factor = self.vae_spatial_factor.unwrap_or(32);
                writeln!(
                    f,
                    "             sample_size {} ({} px at VAE factor {factor}); q/k norm: {}, guidance embeds: {}, \
                     position embedding: {}",
                    t.sample_size,
                    t.sample_size * factor,
                    yes_no(t.qk_norm),
                    yes_no(t.guidance_embeds),
                    t.interpolation_scale
                        .map_or("none".to_string(), |s| format!("sin-cos, interpolation scale {s}")),
                )?;
            }
            None => writeln!(f, "variant:     unknown (no transformer)")?,
        }
        writeln!(
            f,
            "scheduler:   {}",
            self.scheduler.as_deref().unwrap_or("none")
        )?;
        writeln!(
            f,
            "tokenizer:   {}",
            self.tokenizer.as_deref().map_or("none".to_string(), |p| p
                .strip_prefix(&self.dir)
                .unwrap_or(p)
                .display()
                .to_string())
        )?;

        writeln!(f)?;
        writeln!(
            f,
            "{:<14}{:>8}{:>16}{:>10}{:>11}  dtypes",
            "component", "tensors", "parameters", "", "size"
        )?;
        for c in &self.components {
            let dtypes: Vec<String> = c.dtypes.iter().map(|(d, n)| format!("{d} ×{n}")).collect();
            writeln!(
                f,
                "{:<14}{:>8}{:>16}{:>10}{:>11}  {}",
                c.name,
                c.tensors,
                grouped(c.parameters),
                format!("({})", approx(c.parameters)),
                size(c.bytes),
                dtypes.join(", ")
            )?;
        }

        for c in &self.components {
            writeln!(f)?;
            let files: Vec<String> = c.files.iter().map(|p| file_name(p)).collect();
            writeln!(f, "{}: {}", c.name, files.join(", "))?;
            if !c.other_files.is_empty() {
                let others: Vec<String> = c.other_files.iter().map(|p| file_name(p)).collect();
                writeln!(f, "    also in the folder, not read: {}", others.join(", "))?;
            }
            let k = &c.keys;
            let what = if c.name == "vae" {
                "decoder tensors"
            } else {
                "tensors"
            };
            if k.is_clean() {
                write!(
                    f,
                    "    all {} expected {what} present with the expected shapes",
                    k.expected
                )?;
            } else {
                write!(
                    f,
                    "    {} expected {what}: {} missing, {} unexpected, {} with a wrong shape",
                    k.expected,
                    k.missing.len(),
                    k.unexpected.len(),
                    k.wrong_shape.len()
                )?;
            }
            if !k.prefix.is_empty() {
                write!(f, " (key prefix `{}`)", k.prefix)?;
            }
            writeln!(f)?;
            if k.not_used > 0 {
                writeln!(f, "    {} encoder tensors present, not used", k.not_used)?;
            }
            list(f, "missing", &k.missing, |(n, s)| format!("{n} {s:?}"))?;
            list(f, "unexpected", &k.unexpected, |(n, s)| {
                format!("{n} {s:?}")
            })?;
            list(f, "wrong shape", &k.wrong_shape, |w| {
                format!(
                    "{}: expected {:?}, found {:?}",
                    w.name, w.expected, w.actual
                )
            })?;
        }

        writeln!(f)?;
        // The tensor problems listed per component count as findings too: the summary never says "none" for a
        // folder that would fail to load.
        let mut lines: Vec<String> = self.findings.iter().map(ToString::to_string).collect();
        for c in self.components.iter().filter(|c| !c.keys.is_clean()) {
            let k = &c.keys;
            lines.push(format!(
                "{}: {} missing, {} unexpected, {} wrong-shape tensors (listed above)",
                c.name,
                k.missing.len(),
                k.unexpected.len(),
                k.wrong_shape.len()
            ));
        }
        if lines.is_empty() {
            writeln!(f, "findings: none")
        } else {
            writeln!(f, "findings ({}):", lines.len())?;
            for line in &lines {
                writeln!(f, "  - {line}")?;
            }
            Ok(())
        }
    }
}
