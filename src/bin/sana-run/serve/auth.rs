//! The API key: with `--api-key-file`, requests to /v1/ carry `Authorization: Bearer KEY` (as OpenAI clients send
//! it); /health and /metrics stay open to the load balancer's probes and the metrics scraper.

use std::path::Path;

use axum::http::{header, HeaderMap};

use super::errors::ApiError;

pub struct ApiKey(String);

impl ApiKey {
    /// The key in `path`, without surrounding whitespace (a trailing newline is not part of it).
    pub fn read(path: &Path) -> sana::Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| sana::Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let key = text.trim();
        if key.is_empty() {
            return Err(sana::Error::InvalidInput(format!(
                "{}: the API key file is empty",
                path.display()
            )));
        }
        Ok(Self(key.to_string()))
    }

    pub fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let sent = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::unauthorized("missing API key: send `Authorization: Bearer KEY`")
            })?;
        if constant_time_eq(sent.trim().as_bytes(), self.0.as_bytes()) {
            Ok(())
        } else {
            Err(ApiError::unauthorized("incorrect API key"))
        }
    }
}

/// Compares without stopping at the first differing byte, so response times do not reveal a key's prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
