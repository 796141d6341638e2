//! Encoding objects and lists for the negotiated representation: JSON, YAML, server-side
//! Table, PartialObjectMetadata.

use bytes::{BufMut, Bytes, BytesMut};
use http::Response;
use kumo_apimachinery::ApiError;
use kumo_registry::ResourceDef;
use serde_json::{Value, json};

use crate::api::ListResult;
use crate::body::{self, Body};
use crate::http::Ctx;
use crate::request::Output;

fn include_object(ctx: &Ctx) -> kumo_registry::table::IncludeObject {
    match ctx.query.raw.get("includeObject").map(String::as_str) {
        Some("None") => kumo_registry::table::IncludeObject::None,
        Some("Object") => kumo_registry::table::IncludeObject::Object,
        _ => kumo_registry::table::IncludeObject::Metadata,
    }
}

fn partial_metadata(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
    })
}

/// One object in the negotiated representation.
pub fn single(ctx: &Ctx, def: &ResourceDef, raw: Bytes) -> Result<Response<Body>, ApiError> {
    match ctx.output {
        Output::Json => Ok(body::respond_raw(200, raw, "application/json")),
        _ => {
            let obj: Value =
                serde_json::from_slice(&raw).map_err(|e| ApiError::internal(e.to_string()))?;
            Ok(body::respond(
                200,
                &render_object_as(ctx, def, obj, ctx.output)?,
                ctx.output,
            ))
        }
    }
}

/// The body for a written object: the object itself, or its Table/metadata form when asked.
pub fn render_object(ctx: &Ctx, def: &ResourceDef, obj: Value) -> Result<Value, ApiError> {
    render_object_as(ctx, def, obj, ctx.output)
}

fn render_object_as(
    ctx: &Ctx,
    def: &ResourceDef,
    obj: Value,
    out: Output,
) -> Result<Value, ApiError> {
    Ok(match out {
        Output::Table => {
            let mut t = kumo_registry::table::table_for(
                def,
                std::slice::from_ref(&obj),
                jiff::Timestamp::now(),
                include_object(ctx),
            );
            t["metadata"] = json!({"resourceVersion": obj.get("metadata").and_then(|m| m.get("resourceVersion")).cloned().unwrap_or(json!(""))});
            t
        }
        Output::Metadata => partial_metadata(&obj),
        _ => obj,
    })
}

fn list_metadata(r: &ListResult) -> Value {
    let mut meta = json!({"resourceVersion": r.resource_version.to_string()});
    if let Some(c) = &r.continue_token {
        meta["continue"] = json!(c);
    }
    if let Some(n) = r.remaining {
        meta["remainingItemCount"] = json!(n);
    }
    meta
}

/// A list in the negotiated representation. JSON lists are concatenated from the cached
/// bytes without re-encoding the objects.
pub fn list(ctx: &Ctx, def: &ResourceDef, r: ListResult) -> Result<Response<Body>, ApiError> {
    match ctx.output {
        Output::Json => {
            let head = json!({
                "kind": def.list_kind(),
                "apiVersion": def.api_version(),
                "metadata": list_metadata(&r),
            })
            .to_string();
            Ok(json_list_response(head, r.items))
        }
        Output::Yaml => {
            let items: Vec<Value> = r.items.iter().map(|e| e.object()).collect();
            let v = json!({
                "kind": def.list_kind(),
                "apiVersion": def.api_version(),
                "metadata": list_metadata(&r),
                "items": items,
            });
            Ok(body::respond(200, &v, Output::Yaml))
        }
        Output::Table => {
            let objects: Vec<Value> = r.items.iter().map(|e| e.object()).collect();
            let mut t = kumo_registry::table::table_for(
                def,
                &objects,
                jiff::Timestamp::now(),
                include_object(ctx),
            );
            t["metadata"] = list_metadata(&r);
            Ok(body::respond(200, &t, Output::Json))
        }
        Output::Metadata => {
            let items: Vec<Value> = r
                .items
                .iter()
                .map(|e| partial_metadata(&e.object()))
                .collect();
            let v = json!({
                "kind": "PartialObjectMetadataList",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": list_metadata(&r),
                "items": items,
            });
            Ok(body::respond(200, &v, Output::Json))
        }
    }
}

/// Bytes per streamed chunk of a JSON list: big enough that framing costs nothing, small
/// enough that a list of 150k objects never needs a second copy of itself in memory.
const LIST_CHUNK: usize = 256 * 1024;

/// A JSON list streamed from the cached objects: `{"kind":…,"metadata":{…}` +
/// `,"items":[` + objects + `]}`, concatenated from each entry's cached bytes in chunks of
/// [`LIST_CHUNK`], so a huge LIST holds only the entries (shared with the cache) and one chunk.
fn json_list_response(
    head: String,
    items: Vec<std::sync::Arc<crate::cache::Entry>>,
) -> Response<Body> {
    use http_body_util::BodyExt as _;
    let total_raw: usize = items.iter().map(|e| e.json_len()).sum();
    let items_len = items.len();
    let head_len = head.len();
    let mut first = BytesMut::with_capacity(head.len() + 16);
    first.put_slice(&head.as_bytes()[..head.len() - 1]);
    first.put_slice(b",\"items\":[");
    let mut state = Some((first, items.into_iter().enumerate()));
    let chunks = futures::stream::poll_fn(move |_| {
        let Some((mut buf, mut it)) = state.take() else {
            return std::task::Poll::Ready(None);
        };
        let mut done = true;
        for (i, e) in it.by_ref() {
            if i > 0 {
                buf.put_u8(b',');
            }
            e.with_json(|json| {
                for c in json.chunks() {
                    buf.put_slice(c);
                }
            });
            if buf.len() >= LIST_CHUNK {
                done = false;
                break;
            }
        }
        if done {
            buf.put_slice(b"]}");
        } else {
            state = Some((BytesMut::with_capacity(LIST_CHUNK + 16 * 1024), it));
        }
        std::task::Poll::Ready(Some(Ok::<_, std::convert::Infallible>(
            http_body::Frame::data(buf.freeze()),
        )))
    });
    let mut resp = Response::new(http_body_util::StreamBody::new(chunks).boxed());
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    // The exact length is known up front: HTTP/1.1 clients get Content-Length, not chunks.
    let n = items_len;
    let len = head_len - 1 + b",\"items\":[".len() + total_raw + n.saturating_sub(1) + 2;
    resp.headers_mut()
        .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    resp
}

/// A watch event's object in the negotiated representation.
pub fn event_object(
    ctx_output: Output,
    def: &ResourceDef,
    obj: Value,
    include: kumo_registry::table::IncludeObject,
) -> Value {
    match ctx_output {
        Output::Table => {
            let mut t = kumo_registry::table::table_for(
                def,
                std::slice::from_ref(&obj),
                jiff::Timestamp::now(),
                include,
            );
            t["metadata"] = json!({"resourceVersion": obj.get("metadata").and_then(|m| m.get("resourceVersion")).cloned().unwrap_or(json!(""))});
            t
        }
        Output::Metadata => partial_metadata(&obj),
        _ => obj,
    }
}

/// Which rows a Table includes objects for, from the query.
pub fn include_for(ctx: &Ctx) -> kumo_registry::table::IncludeObject {
    include_object(ctx)
}
