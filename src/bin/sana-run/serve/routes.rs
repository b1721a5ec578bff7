//! The HTTP routes: `POST /v1/images/generations`, `POST /v1/images/edits` (Sana-Sprint image-to-image),
//! `GET /health`, `GET /metrics`; anything else is an OpenAI-shaped 404.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use tokio::sync::oneshot;

use super::errors::{param_of, ApiError};
use super::images_api::{answer, ImagesRequest};
use super::log;
use super::queue::{BatchKey, Job, Refused};
use super::worker::JobError;
use super::App;

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/images/generations", post(generate))
        .route("/v1/images/edits", post(edit))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            ApiError::not_found("no such route; see POST /v1/images/generations")
        })
        .with_state(app)
}

/// Ready (200) once every worker's models are loaded; 503 while loading and once shutting down, so a load balancer
/// sends nothing to a replica that cannot answer.
async fn health(State(app): State<Arc<App>>) -> Response {
    let (status, state) = if app.draining.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting_down")
    } else if app.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "loading")
    };
    (status, Json(json!({ "status": state }))).into_response()
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let ready = app.is_ready() && !app.draining.load(Ordering::Relaxed);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(app.queue.depth(), ready),
    )
        .into_response()
}

async fn generate(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    answer_request(app, headers, body, false).await
}

/// `POST /v1/images/edits`: Sana-Sprint image-to-image from a multipart/form-data body.
async fn edit(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    answer_request(app, headers, body, true).await
}

async fn answer_request(app: Arc<App>, headers: HeaderMap, body: Bytes, edit: bool) -> Response {
    let mut in_flight = InFlight::new(Arc::clone(&app));
    let outcome = images(&app, &headers, &body, edit, &mut in_flight).await;
    in_flight.answered = true;
    let elapsed = in_flight.started.elapsed();
    in_flight
        .log
        .insert("total_s".into(), json!(elapsed.as_secs_f64()));
    match outcome {
        Ok((body, queue_wait)) => {
            app.metrics.request(200, Some(queue_wait), elapsed);
            in_flight.log.insert("status".into(), json!(200));
            log::line(&in_flight.log);
            Json(body).into_response()
        }
        Err(err) => {
            app.metrics.request(err.status.as_u16(), None, elapsed);
            in_flight
                .log
                .insert("status".into(), json!(err.status.as_u16()));
            in_flight.log.insert("error".into(), json!(err.message));
            log::line(&in_flight.log);
            err.into_response()
        }
    }
}

/// The request from its body to its images: checked, planned, queued, generated.
async fn images(
    app: &App,
    headers: &HeaderMap,
    body: &[u8],
    edit: bool,
    in_flight: &mut InFlight,
) -> Result<(Value, std::time::Duration), ApiError> {
    if let Some(key) = &app.api_key {
        key.check(headers)?;
    }
    if app.draining.load(Ordering::Relaxed) {
        return Err(ApiError::unavailable("the service is shutting down", 1));
    }
    let Some(planner) = app.planner() else {
        return Err(ApiError::unavailable("the models are still loading", 5));
    };
    let request = if edit {
        let boundary = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.starts_with("multipart/form-data"))
            .and_then(|v| {
                v.split(';')
                    .find_map(|p| p.trim().strip_prefix("boundary="))
            })
            .map(|b| b.trim_matches('"').to_string())
            .ok_or_else(|| {
                ApiError::bad_request(
                    None,
                    "an edit is a multipart/form-data body with a boundary",
                )
            })?;
        ImagesRequest::parse_edit(body, &boundary)?
    } else {
        ImagesRequest::parse(body)?
    };
    app.adapters.check(&request.lora)?;
    let seed = request.seed.unwrap_or_else(|| random_seed(in_flight.id));
    let plan = planner
        .plan(&lone_request(&request, seed))
        .map_err(|e| match e {
            sana::Error::Request { field, reason } => {
                ApiError::bad_request(param_of(field), format!("{field} {reason}"))
            }
            other => ApiError::bad_request(None, other.to_string()),
        })?;
    let key = BatchKey {
        size: plan.output_size,
        // The schedule's steps: for an edit, more than the plan's steps that run.
        steps: plan.image_to_image.map_or(plan.steps, |i| i.schedule_steps),
        guidance: plan.guidance,
        resolution_binning: request.resolution_binning,
        negative_prompt: request.negative_prompt.clone(),
        lora: request.lora.clone(),
        pag: request.pag.clone(),
        control: request.control.clone(),
        init: request.init.clone(),
    };
    let log = &mut in_flight.log;
    log.insert(
        "size".into(),
        json!(format!("{}x{}", key.size.0, key.size.1)),
    );
    log.insert("n".into(), json!(request.n));
    log.insert("steps".into(), json!(key.steps));
    log.insert("seed".into(), json!(seed));
    if !key.lora.is_empty() {
        log.insert("lora".into(), json!(key.lora));
    }

    let (reply, answer_rx) = oneshot::channel();
    let job = Job {
        id: in_flight.id,
        request,
        seed,
        key,
        enqueued: Instant::now(),
        cancelled: Arc::clone(&in_flight.cancelled),
        reply,
    };
    app.queue.push(job).map_err(|refused| match refused {
        Refused::Full => ApiError::queue_full(app.retry_after_s()),
        Refused::Closed => ApiError::unavailable("the service is shutting down", 1),
    })?;
    let out = answer_rx
        .await
        .map_err(|_| ApiError::internal("the request was dropped without an answer"))?
        .map_err(|e| match e {
            JobError::Aborted => {
                ApiError::unavailable("the service shut down before this request finished", 1)
            }
            JobError::Failed { stage, message } => {
                in_flight.log.insert("failed_stage".into(), json!(stage));
                ApiError::internal(format!("generation failed in {stage}: {message}"))
            }
        })?;
    let log = &mut in_flight.log;
    log.insert("batch".into(), json!(out.batch_images));
    log.insert("device".into(), json!(out.device));
    log.insert("queue_s".into(), json!(out.queue_wait.as_secs_f64()));
    log.insert("text_encode_s".into(), json!(out.text_encode.as_secs_f64()));
    log.insert("denoise_s".into(), json!(out.denoise.as_secs_f64()));
    log.insert("decode_s".into(), json!(out.decode.as_secs_f64()));
    if let Some(how) = out.step_graph {
        log.insert("step_graph".into(), json!(how));
    }
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Ok((answer(created, &out.images), out.queue_wait))
}

/// The request alone, as `sana-run` would run it: what the plan checks, and what a batch must share.
fn lone_request(request: &ImagesRequest, seed: u64) -> sana::Request {
    let mut r = sana::Request::new(request.prompt.clone())
        .negative_prompt(request.negative_prompt.clone())
        .seed(seed)
        .batch(request.n)
        .resolution_binning(request.resolution_binning);
    if let Some((w, h)) = request.size {
        r = r.size(w, h);
    }
    if let Some(steps) = request.steps {
        r = r.steps(steps);
    }
    if let Some(g) = request.guidance_scale {
        r = r.guidance(g);
    }
    super::worker::with_extensions(
        r,
        &request.pag,
        request.control.as_ref(),
        request.init.as_ref(),
    )
}

/// A seed for a request that gives none: below 2³² so that JSON clients holding numbers as doubles keep it exact.
fn random_seed(id: u64) -> u64 {
    std::collections::hash_map::RandomState::new().hash_one(id) & 0xffff_ffff
}

/// One request while it is being answered. Dropped before it is answered, the client has gone (hyper drops the
/// handler when the connection closes): its job is cancelled, and the request counted and logged as 499.
struct InFlight {
    app: Arc<App>,
    id: u64,
    started: Instant,
    cancelled: Arc<AtomicBool>,
    answered: bool,
    log: Map<String, Value>,
}

impl InFlight {
    fn new(app: Arc<App>) -> Self {
        let id = app.next_request_id();
        let mut log = Map::new();
        log.insert("event".into(), json!("request"));
        log.insert("id".into(), json!(format!("req-{id}")));
        Self {
            app,
            id,
            started: Instant::now(),
            cancelled: Arc::new(AtomicBool::new(false)),
            answered: false,
            log,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        self.cancelled.store(true, Ordering::Relaxed);
        let elapsed = self.started.elapsed();
        self.app.metrics.request(499, None, elapsed);
        self.log.insert("status".into(), json!(499));
        self.log.insert(
            "error".into(),
            json!("the client closed the connection; generation cancelled"),
        );
        self.log
            .insert("total_s".into(), json!(elapsed.as_secs_f64()));
        log::line(&self.log);
    }
}
