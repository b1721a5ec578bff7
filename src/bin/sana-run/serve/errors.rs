//! Errors as the OpenAI API shapes them: `{"error": {"message", "type", "param"}}` with the HTTP status that says
//! whose fault it is, and `Retry-After` when the service is full or not (yet, or any more) serving.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

/// One refused or failed request.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    kind: &'static str,
    param: Option<&'static str>,
    retry_after_s: Option<u64>,
}

impl ApiError {
    /// 400: the request cannot run; `param` names the JSON field at fault.
    pub fn bad_request(param: Option<&'static str>, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            param,
            message,
        )
    }

    /// 401: no API key, or the wrong one.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            None,
            message,
        )
    }

    /// 404: no such route.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            None,
            message,
        )
    }

    /// 429: the queue is full; come back after `retry_after_s`.
    pub fn queue_full(retry_after_s: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            None,
            "the queue is full; retry after the time in the Retry-After header",
        );
        e.retry_after_s = Some(retry_after_s);
        e
    }

    /// 503: the models are still loading, or the service is shutting down.
    pub fn unavailable(message: impl Into<String>, retry_after_s: u64) -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            None,
            message,
        );
        e.retry_after_s = Some(retry_after_s);
        e
    }

    /// 500: a real fault (the log names the stage).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            None,
            message,
        )
    }

    fn new(
        status: StatusCode,
        kind: &'static str,
        param: Option<&'static str>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            param,
            retry_after_s: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": { "message": self.message, "type": self.kind, "param": self.param }
        });
        let mut response = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after_s {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s.max(1)));
        }
        response
    }
}

/// The JSON field of the images API that a library request field comes from (`Error::Request`'s `field`).
pub fn param_of(field: &str) -> Option<&'static str> {
    Some(match field {
        "width" | "height" => "size",
        "batch" => "n",
        "steps" => "steps",
        "guidance" => "guidance_scale",
        "prompt" | "max_sequence_length" => "prompt",
        "image_seeds" => "seed",
        "pag_scale" => "pag_scale",
        "pag_adaptive_scale" => "pag_adaptive_scale",
        "pag_layers" => "pag_layers",
        "control_image" => "control_image",
        "control_scale" => "control_scale",
        "init_image" => "image",
        "strength" => "strength",
        _ => return None,
    })
}
