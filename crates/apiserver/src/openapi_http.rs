//! `/openapi/v2` and `/openapi/v3[/…]` from the registry's documents.

use http::Response;
use kumo_apimachinery::ApiError;

use crate::body::{self, Body};
use crate::http::Ctx;

/// Serves an OpenAPI path.
pub fn serve(ctx: &Ctx, path: &str) -> Result<Response<Body>, ApiError> {
    let doc = ctx.api.openapi.read().clone();
    let not_found = || {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    };
    let rest = path.trim_start_matches('/');
    if rest == "openapi/v2" {
        // kubectl 1.27/1.28 validate and explain with the protobuf form.
        let accept = ctx.accept.as_deref().unwrap_or("");
        if accept.contains("protobuf") {
            return Ok(body::respond_raw(
                200,
                doc.v2_protobuf().bytes.clone(),
                "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
            ));
        }
        return Ok(body::respond_raw(
            200,
            doc.v2().bytes.clone(),
            "application/json",
        ));
    }
    if rest == "openapi/v3" {
        return Ok(body::respond_raw(
            200,
            doc.index().bytes.clone(),
            "application/json",
        ));
    }
    if let Some(gv) = rest.strip_prefix("openapi/v3/") {
        return doc
            .document(gv.split('?').next().unwrap_or(gv))
            .map(|d| body::respond_raw(200, d.bytes.clone(), "application/json"))
            .ok_or_else(not_found);
    }
    Err(not_found())
}
