//! The apiserver's client for kubelets (`pods/log`): HTTPS to the node's kubelet endpoint,
//! trusting the cluster CA and presenting the apiserver's kubelet-client certificate.

use std::convert::Infallible;
use std::sync::Arc;

use futures::StreamExt;
use http::Response;
use http_body_util::{BodyExt, BodyStream, StreamBody};
use hyper_util::rt::TokioIo;
use kumo_apimachinery::ApiError;
use serde_json::Value;

use crate::body::Body;
use crate::http::Ctx;

/// The node address and kubelet port of a pod.
pub(crate) fn kubelet_of(ctx: &Ctx, pod: &Value) -> Result<(String, u16), ApiError> {
    let node = pod
        .get("spec")
        .and_then(|s| s.get("nodeName"))
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("pod is not scheduled to a node"))?;
    let n = ctx
        .api
        .cache
        .get(&format!("/registry/nodes/{node}"))
        .map(|e| e.object())
        .ok_or_else(|| ApiError::not_found("", "nodes", node))?;
    let status = n.get("status");
    let addrs = status
        .and_then(|s| s.get("addresses"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let pick = |t: &str| {
        addrs
            .iter()
            .find(|a| a.get("type").and_then(Value::as_str) == Some(t))
            .and_then(|a| a.get("address")?.as_str().map(str::to_string))
    };
    let host = pick("InternalIP")
        .or_else(|| pick("ExternalIP"))
        .or_else(|| pick("Hostname"))
        .ok_or_else(|| ApiError::bad_request(format!("node {node} has no address")))?;
    let port = status
        .and_then(|s| s.get("daemonEndpoints"))
        .and_then(|d| d.get("kubeletEndpoint"))
        .and_then(|k| k.get("Port"))
        .and_then(Value::as_u64)
        .unwrap_or(10250) as u16;
    Ok((host, port))
}

/// Streams `GET /containerLogs/{ns}/{pod}/{container}` from the pod's kubelet.
pub async fn proxy_logs(
    ctx: &Ctx,
    pod: &Value,
    container: &str,
) -> Result<Response<Body>, ApiError> {
    let tls = ctx
        .api
        .kubelet_tls
        .clone()
        .ok_or_else(|| ApiError::internal("no kubelet client credentials configured"))?;
    let (host, port) = kubelet_of(ctx, pod)?;
    let ns = crate::objects::meta_str(pod, "namespace").unwrap_or("default");
    let name = crate::objects::meta_str(pod, "name").unwrap_or("");
    let query = {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (from, to) in [
            ("follow", "follow"),
            ("previous", "previous"),
            ("tailLines", "tailLines"),
            ("sinceSeconds", "sinceSeconds"),
            ("sinceTime", "sinceTime"),
            ("timestamps", "timestamps"),
            ("limitBytes", "limitBytes"),
        ] {
            if let Some(v) = ctx.query.raw.get(from) {
                q.append_pair(to, v);
            }
        }
        q.finish()
    };
    let path = format!("/containerLogs/{ns}/{name}/{container}?{query}");
    let unavailable =
        |e: String| ApiError::internal(format!("Get \"https://{host}:{port}{path}\": {e}"));
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let server_name = rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|e| unavailable(e.to_string()))?;
    let stream = tokio_rustls::TlsConnector::from(Arc::clone(&tls))
        .connect(server_name, tcp)
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = http::Request::get(&path)
        .header(http::header::HOST, format!("{host}:{port}"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| unavailable(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let status = resp.status();
    if !(200..=206).contains(&status.as_u16()) {
        return Err(kubelet_error(resp, status.as_u16(), name).await);
    }
    let stream = BodyStream::new(resp.into_body()).filter_map(|f| async move {
        match f {
            Ok(frame) => Some(Ok::<_, Infallible>(frame)),
            Err(_) => None,
        }
    });
    let mut out = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    *out.status_mut() = status;
    out.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    Ok(out)
}

/// Upstream's `GenericHttpResponseChecker`: a kubelet's error answer (text) becomes a Status —
/// 400 BadRequest and 500 InternalError with the kubelet's words, anything else a generic
/// server response naming the pod — so kubectl prints the kubelet's message.
async fn kubelet_error(
    resp: http::Response<hyper::body::Incoming>,
    code: u16,
    pod: &str,
) -> ApiError {
    const MAX_READ: usize = 64 * 1024;
    let mut body = Vec::new();
    let mut frames = BodyStream::new(resp.into_body());
    while let Some(Ok(frame)) = frames.next().await {
        if let Ok(data) = frame.into_data() {
            body.extend_from_slice(&data);
            if body.len() >= MAX_READ {
                body.truncate(MAX_READ);
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&body).trim_end().to_string();
    match code {
        400 => ApiError::bad_request(text),
        500 => ApiError::internal(text),
        _ => ApiError::new(
            code,
            reason_for(code),
            format!("the server responded with the status code {code} but did not return more information (get pods/log {pod}): {text}"),
        )
        .with_details("", "pods/log", pod),
    }
}

fn reason_for(code: u16) -> &'static str {
    match code {
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        409 => "Conflict",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "InternalError",
    }
}
