//! The OpenAI Images API as this service speaks it: `POST /v1/images/generations`' JSON body read field by field
//! (so a wrong field is named in `param`), and the `{"created", "data": [{"b64_json"}]}` answer. Extensions beside
//! OpenAI's fields: `negative_prompt`, `seed`, `steps`, `guidance_scale`, `resolution_binning`; perturbed-attention
//! guidance (`pag_scale`, `pag_adaptive_scale`, `pag_layers`) and ControlNet (`control_image`, a base64 PNG, and
//! `control_scale`).

use base64::Engine as _;
use serde_json::{Map, Value};

use super::adapters::{parse_choices, AdapterChoice};
use super::errors::ApiError;

/// OpenAI's bounds on `n`.
const MAX_IMAGES_PER_REQUEST: u64 = 10;

/// One parsed `POST /v1/images/generations` body.
#[derive(Clone, Debug)]
pub struct ImagesRequest {
    pub prompt: String,
    pub n: usize,
    /// `(width, height)`; absent, the model's trained size.
    pub size: Option<(usize, usize)>,
    pub negative_prompt: String,
    /// Image `i` uses `seed + i`; absent, a random seed (answered in each image's `seed`).
    pub seed: Option<u64>,
    pub steps: Option<usize>,
    pub guidance_scale: Option<f32>,
    pub resolution_binning: bool,
    /// LoRA adapters of `--lora-dir` by name, with their weights, in the order given.
    pub lora: Vec<AdapterChoice>,
    pub pag: Pag,
    /// The decoded control image and its conditioning scale.
    pub control: Option<(sana::Image, f32)>,
    /// `POST /v1/images/edits`: the image to start from and the strength (Sana-Sprint image-to-image).
    pub init: Option<(sana::Image, f64)>,
}

/// Perturbed-attention guidance's fields (`pag_scale` absent or 0: off).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pag {
    pub scale: f32,
    pub adaptive_scale: f32,
    pub layers: Option<Vec<String>>,
}

impl ImagesRequest {
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(None, format!("the body is not valid JSON: {e}")))?;
        let Value::Object(fields) = value else {
            return Err(ApiError::bad_request(
                None,
                "the body must be a JSON object",
            ));
        };
        Self::from_fields(&fields)
    }

    /// `POST /v1/images/edits`' multipart/form-data body (`boundary` from its Content-Type): the `image` file part
    /// (a PNG) and the same fields as a generation, each a text part (numbers and booleans as JSON literals), plus
    /// `strength` (default 0.6).
    pub fn parse_edit(body: &[u8], boundary: &str) -> Result<Self, ApiError> {
        let mut fields = Map::new();
        let mut image = None;
        for (name, value) in multipart_parts(body, boundary)? {
            if name == "image" || name == "image[]" {
                image =
                    Some(sana::image::decode_png(value).map_err(|e| {
                        ApiError::bad_request(Some("image"), format!("image: {e}"))
                    })?);
                continue;
            }
            let text = std::str::from_utf8(value).map_err(|_| {
                ApiError::bad_request(None, format!("form field `{name}` is not UTF-8 text"))
            })?;
            let value = match name.as_str() {
                "prompt" | "negative_prompt" | "size" | "response_format" | "control_image" => {
                    Value::String(text.to_string())
                }
                _ => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string())),
            };
            fields.insert(name, value);
        }
        let image = image.ok_or_else(|| {
            ApiError::bad_request(Some("image"), "image (a PNG file part) is required")
        })?;
        let strength = match fields.get("strength") {
            // SanaSprintImg2ImgPipeline's default.
            None => 0.6,
            Some(v) => v.as_f64().ok_or_else(|| {
                ApiError::bad_request(Some("strength"), "strength must be a number")
            })?,
        };
        let mut request = Self::from_fields(&fields)?;
        request.init = Some((image, strength));
        Ok(request)
    }

    fn from_fields(fields: &Map<String, Value>) -> Result<Self, ApiError> {
        let fields = fields.clone();
        let prompt = match fields.get("prompt") {
            Some(Value::String(p)) if !p.trim().is_empty() => p.clone(),
            Some(Value::String(_)) => {
                return Err(ApiError::bad_request(Some("prompt"), "prompt is empty"))
            }
            Some(_) => {
                return Err(ApiError::bad_request(
                    Some("prompt"),
                    "prompt must be a string",
                ))
            }
            None => return Err(ApiError::bad_request(Some("prompt"), "prompt is required")),
        };
        let n = match unsigned(&fields, "n")? {
            None => 1,
            Some(n @ 1..=MAX_IMAGES_PER_REQUEST) => n as usize,
            Some(n) => {
                return Err(ApiError::bad_request(
                    Some("n"),
                    format!("n is {n}; it must be between 1 and {MAX_IMAGES_PER_REQUEST}"),
                ))
            }
        };
        match string(&fields, "response_format")? {
            None | Some("b64_json") => {}
            Some("url") => return Err(ApiError::bad_request(
                Some("response_format"),
                "response_format `url` is not served: this service keeps no files; use `b64_json`",
            )),
            Some(other) => {
                return Err(ApiError::bad_request(
                    Some("response_format"),
                    format!("response_format `{other}` is unknown; use `b64_json`"),
                ))
            }
        }
        let size = string(&fields, "size")?.map(parse_size).transpose()?;
        let guidance_scale = match fields.get("guidance_scale") {
            None | Some(Value::Null) => None,
            Some(Value::Number(g)) => g.as_f64().map(|g| g as f32),
            Some(_) => {
                return Err(ApiError::bad_request(
                    Some("guidance_scale"),
                    "guidance_scale must be a number",
                ))
            }
        };
        let resolution_binning = match fields.get("resolution_binning") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(ApiError::bad_request(
                    Some("resolution_binning"),
                    "resolution_binning must be true or false",
                ))
            }
        };
        let pag = Pag {
            scale: number(&fields, "pag_scale")?.unwrap_or(0.0),
            adaptive_scale: number(&fields, "pag_adaptive_scale")?.unwrap_or(0.0),
            layers: match fields.get("pag_layers") {
                None | Some(Value::Null) => None,
                Some(Value::Array(items)) => Some(
                    items
                        .iter()
                        .map(|v| v.as_str().map(String::from))
                        .collect::<Option<_>>()
                        .ok_or_else(|| {
                            ApiError::bad_request(
                                Some("pag_layers"),
                                "pag_layers must be a list of strings",
                            )
                        })?,
                ),
                Some(_) => {
                    return Err(ApiError::bad_request(
                        Some("pag_layers"),
                        "pag_layers must be a list of strings",
                    ))
                }
            },
        };
        let control = match string(&fields, "control_image")? {
            None => None,
            Some(b64) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|e| {
                        ApiError::bad_request(
                            Some("control_image"),
                            format!("control_image is not base64: {e}"),
                        )
                    })?;
                let image = sana::image::decode_png(&bytes).map_err(|e| {
                    ApiError::bad_request(Some("control_image"), format!("control_image: {e}"))
                })?;
                Some((image, number(&fields, "control_scale")?.unwrap_or(1.0)))
            }
        };
        if control.is_none() && fields.contains_key("control_scale") {
            return Err(ApiError::bad_request(
                Some("control_scale"),
                "control_scale needs a control_image",
            ));
        }
        Ok(Self {
            init: None,
            pag,
            control,
            prompt,
            n,
            size,
            negative_prompt: string(&fields, "negative_prompt")?
                .unwrap_or_default()
                .to_string(),
            seed: unsigned(&fields, "seed")?,
            steps: unsigned(&fields, "steps")?.map(|s| s as usize),
            guidance_scale,
            resolution_binning,
            lora: parse_choices(fields.get("lora").unwrap_or(&Value::Null))?,
        })
    }
}

/// The `(name, content)` of each part of a multipart/form-data body.
fn multipart_parts<'a>(
    body: &'a [u8],
    boundary: &str,
) -> Result<Vec<(String, &'a [u8])>, ApiError> {
    let bad =
        |why: &str| ApiError::bad_request(None, format!("the multipart/form-data body {why}"));
    let delimiter = format!("--{boundary}");
    let find = |hay: &[u8], needle: &[u8], from: usize| {
        hay.get(from..)?
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|p| p + from)
    };
    let mut at = find(body, delimiter.as_bytes(), 0).ok_or_else(|| bad("has no boundary line"))?;
    let mut parts = Vec::new();
    loop {
        let start = at + delimiter.len();
        if body.get(start..start + 2) == Some(b"--") {
            return Ok(parts);
        }
        let head_end =
            find(body, b"\r\n\r\n", start).ok_or_else(|| bad("has a part without headers"))?;
        let head = String::from_utf8_lossy(&body[start..head_end]);
        let next = find(body, format!("\r\n{delimiter}").as_bytes(), head_end)
            .ok_or_else(|| bad("does not end with its boundary"))?;
        let name = head
            .split(';')
            .map(str::trim)
            .find_map(|p| p.strip_prefix("name=\""))
            .and_then(|n| n.split('"').next())
            .ok_or_else(|| bad("has a part without a name"))?;
        parts.push((name.to_string(), &body[head_end + 4..next]));
        at = next + 2;
    }
}

/// `"WxH"` in pixels.
fn parse_size(size: &str) -> Result<(usize, usize), ApiError> {
    let bad = || {
        ApiError::bad_request(
            Some("size"),
            format!("size `{size}` is not WIDTHxHEIGHT in pixels, e.g. 1024x1024"),
        )
    };
    let (w, h) = size.split_once('x').ok_or_else(bad)?;
    Ok((w.parse().map_err(|_| bad())?, h.parse().map_err(|_| bad())?))
}

fn string<'a>(
    fields: &'a Map<String, Value>,
    name: &'static str,
) -> Result<Option<&'a str>, ApiError> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::bad_request(
            Some(name),
            format!("{name} must be a string"),
        )),
    }
}

fn number(fields: &Map<String, Value>, name: &'static str) -> Result<Option<f32>, ApiError> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(|v| Some(v as f32))
            .ok_or_else(|| ApiError::bad_request(Some(name), format!("{name} must be a number"))),
    }
}

fn unsigned(fields: &Map<String, Value>, name: &'static str) -> Result<Option<u64>, ApiError> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            ApiError::bad_request(Some(name), format!("{name} must be a non-negative integer"))
        }),
    }
}

/// The answer: each image as a base64 PNG with the seed that made it (an extension; OpenAI has no seeds).
pub fn answer(created: u64, images: &[(Vec<u8>, u64)]) -> Value {
    let data: Vec<Value> = images
        .iter()
        .map(|(png, seed)| {
            serde_json::json!({
                "b64_json": base64::engine::general_purpose::STANDARD.encode(png),
                "seed": seed,
            })
        })
        .collect();
    serde_json::json!({ "created": created, "data": data })
}
