//! Response bodies and encodings.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use kumo_apimachinery::ApiError;
use serde_json::Value;

use crate::request::Output;

/// Every response body: full or streamed.
pub type Body = BoxBody<Bytes, Infallible>;

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

/// A JSON (or YAML) response.
pub fn respond(code: u16, v: &Value, output: Output) -> http::Response<Body> {
    let (ct, bytes) = encode(v, output);
    let mut r = http::Response::new(full(bytes));
    *r.status_mut() = http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::OK);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(ct),
    );
    r
}

/// Pre-encoded JSON bytes.
pub fn respond_raw(code: u16, bytes: Bytes, content_type: &'static str) -> http::Response<Body> {
    let mut r = http::Response::new(full(bytes));
    *r.status_mut() = http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::OK);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    r
}

/// Encodes for the negotiated output (Table and metadata outputs are JSON).
pub fn encode(v: &Value, output: Output) -> (&'static str, Vec<u8>) {
    match output {
        Output::Yaml => match serde_saphyr::to_string(v) {
            Ok(s) => ("application/yaml", s.into_bytes()),
            Err(_) => (
                "application/json",
                serde_json::to_vec(v).unwrap_or_default(),
            ),
        },
        _ => (
            "application/json",
            serde_json::to_vec(v).unwrap_or_default(),
        ),
    }
}

/// A `Status` error response.
pub fn error(e: &ApiError) -> http::Response<Body> {
    let mut r = respond(e.code, &e.to_status(), Output::Json);
    if let Some(s) = e.retry_after_seconds
        && let Ok(v) = http::HeaderValue::from_str(&s.to_string())
    {
        r.headers_mut().insert(http::header::RETRY_AFTER, v);
    }
    r
}

/// Plain text (health endpoints, logs).
pub fn text(code: u16, s: impl Into<Bytes>) -> http::Response<Body> {
    respond_raw(code, s.into(), "text/plain; charset=utf-8")
}

#[allow(dead_code)]
fn _assert_infallible(_: Infallible) {}
