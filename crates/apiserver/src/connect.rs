//! `pods/exec`, `pods/attach` and `pods/portforward`: upstream's "connect" subresources. The
//! apiserver checks the request against the pod (container choice, phase), then proxies the
//! client's HTTP/1.1 upgrade (WebSocket from client-go ≥ 1.30, SPDY/3.1 from older clients) to
//! the pod's kubelet (`/exec/{ns}/{pod}/{container}?command=…&input=1…`, like upstream's
//! `streamLocation`) and, once both sides switched protocols, copies bytes both ways. The
//! streaming protocol itself is the kubelet's business: the apiserver never parses it.

use std::sync::Arc;

use http::{HeaderMap, Method, Response};
use http_body_util::BodyExt;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use kumo_apimachinery::ApiError;
use serde_json::Value;
use tracing::debug;

use crate::body::{self, Body};
use crate::http::Ctx;

/// Whether `(resource, subresource)` is a connect subresource this module serves.
pub fn is_connect(group: &str, resource: &str, subresource: Option<&str>) -> bool {
    group.is_empty()
        && resource == "pods"
        && matches!(subresource, Some("exec" | "attach" | "portforward"))
}

/// A boolean query parameter of `PodExecOptions` / `PodAttachOptions` (`true`/`1`).
fn flag(ctx: &Ctx, key: &str) -> Option<bool> {
    ctx.query
        .raw
        .get(key)
        .map(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// Every value of a repeated query parameter (`command=sh&command=-c`), in order.
fn repeated(query: Option<&str>, key: &str) -> Vec<String> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
        .collect()
}

fn container_names(pod: &Value) -> Vec<String> {
    pod.get("spec")
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|c| c.get("name")?.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Every container of the pod a stream may target (regular, init and ephemeral).
fn all_container_names(pod: &Value) -> Vec<String> {
    ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .filter_map(|f| pod.get("spec")?.get(*f)?.as_array())
        .flatten()
        .filter_map(|c| c.get("name")?.as_str().map(str::to_string))
        .collect()
}

/// The kubelet path (with query) for the request, after upstream's checks on the pod.
fn kubelet_path(
    ctx: &Ctx,
    sub: &str,
    pod: &Value,
    raw_query: Option<&str>,
) -> Result<String, ApiError> {
    let ns = crate::objects::meta_str(pod, "namespace").unwrap_or("default");
    let name = crate::objects::meta_str(pod, "name").unwrap_or("");
    if sub == "portforward" {
        // Upstream: `PortForwardLocation` passes each requested port as `port`.
        let mut q = form_urlencoded::Serializer::new(String::new());
        for p in repeated(raw_query, "ports") {
            for one in p.split(',').filter(|s| !s.is_empty()) {
                q.append_pair("port", one);
            }
        }
        let q = q.finish();
        return Ok(if q.is_empty() {
            format!("/portForward/{ns}/{name}")
        } else {
            format!("/portForward/{ns}/{name}?{q}")
        });
    }
    let names = container_names(pod);
    let container = match ctx.query.raw.get("container").filter(|c| !c.is_empty()) {
        Some(c) => c.clone(),
        None if names.len() == 1 => names[0].clone(),
        None => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                names.join(" ")
            )));
        }
    };
    if !all_container_names(pod).contains(&container) {
        return Err(ApiError::bad_request(format!(
            "container {container} is not valid for pod {name}"
        )));
    }
    let phase = pod
        .get("status")
        .and_then(|s| s.get("phase"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if phase == "Succeeded" || phase == "Failed" {
        let what = if sub == "exec" {
            "exec into"
        } else {
            "attach to"
        };
        return Err(ApiError::bad_request(format!(
            "cannot {what} a container in a completed pod; current phase is {phase}"
        )));
    }
    // PodExecOptions/PodAttachOptions: stdout and stderr default to true, stdin and tty to
    // false (client-go always sends them explicitly).
    let stdin = flag(ctx, "stdin").unwrap_or(false);
    let stdout = flag(ctx, "stdout").unwrap_or(true);
    let stderr = flag(ctx, "stderr").unwrap_or(true);
    let tty = flag(ctx, "tty").unwrap_or(false);
    if !stdin && !stdout && !stderr {
        return Err(ApiError::bad_request(
            "you must specify at least 1 of stdin, stdout, stderr",
        ));
    }
    let command = repeated(raw_query, "command");
    if sub == "exec" && command.is_empty() {
        return Err(ApiError::bad_request("you must specify at least 1 command"));
    }
    // Upstream's `streamParams`.
    let mut q = form_urlencoded::Serializer::new(String::new());
    for c in &command {
        q.append_pair("command", c);
    }
    for (on, key) in [
        (stdin, "input"),
        (stdout, "output"),
        (stderr, "error"),
        (tty, "tty"),
    ] {
        if on {
            q.append_pair(key, "1");
        }
    }
    let seg = |s: &str| percent_encoding::utf8_percent_encode(s, PATH_SEGMENT).to_string();
    Ok(format!(
        "/{sub}/{}/{}/{}?{}",
        seg(ns),
        seg(name),
        seg(&container),
        q.finish()
    ))
}

/// Characters escaped in one path segment.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'/')
    .add(b'%');

/// Request headers not passed to the kubelet: the caller's credentials (upstream's
/// authentication filter drops `Authorization` before proxying), impersonation, and what the
/// new connection sets itself.
fn forwarded(name: &http::HeaderName) -> bool {
    let n = name.as_str();
    !(n == "authorization"
        || n == "host"
        || n == "content-length"
        || n == "transfer-encoding"
        || n.starts_with("impersonate-"))
}

/// Serves one connect request: checks, then the upgrade proxy.
pub async fn serve(
    ctx: &Ctx,
    parts: &mut http::request::Parts,
    ns: &str,
    name: &str,
    sub: &str,
) -> Result<Response<Body>, ApiError> {
    if parts.method != Method::GET && parts.method != Method::POST {
        return Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        ));
    }
    let on_upgrade = parts.extensions.remove::<OnUpgrade>();
    let method: &Method = &parts.method;
    let headers: &HeaderMap = &parts.headers;
    let raw_query = parts.uri.query();
    let pods = ctx
        .api
        .resources()
        .find("", "v1", "pods")
        .ok_or_else(|| ApiError::internal("pods are not served"))?;
    let pod = ctx.api.get(&pods, Some(ns), name, None).await?.object();
    let path = kubelet_path(ctx, sub, &pod, raw_query)?;
    let upgrade_requested = headers
        .get(http::header::UPGRADE)
        .is_some_and(|v| !v.is_empty());
    if !upgrade_requested {
        return Err(ApiError::bad_request("Upgrade request required"));
    }
    let client_upgrade = on_upgrade.ok_or_else(|| {
        ApiError::bad_request(
            "Upgrade request required (the connection cannot be upgraded: use HTTP/1.1)",
        )
    })?;
    let tls = ctx
        .api
        .kubelet_tls
        .clone()
        .ok_or_else(|| ApiError::internal("no kubelet client credentials configured"))?;
    let (host, port) = crate::kubelet_client::kubelet_of(ctx, &pod)?;
    let url = format!("https://{host}:{port}{path}");
    let unavailable = |e: String| ApiError::internal(format!("error dialing backend: {url}: {e}"));
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
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
        if let Err(e) = conn.with_upgrades().await {
            debug!(error = %e, "kubelet connection ended");
        }
    });
    let mut req = http::Request::builder()
        .method(method.clone())
        .uri(&path)
        .header(http::header::HOST, format!("{host}:{port}"));
    for (k, v) in headers {
        if forwarded(k) {
            req = req.header(k, v);
        }
    }
    let req = req
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| unavailable(e.to_string()))?;
    let mut resp = sender
        .send_request(req)
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let status = resp.status();
    if status != http::StatusCode::SWITCHING_PROTOCOLS {
        // The kubelet refused the upgrade: relay its error as a Status.
        let headers = resp.headers().clone();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        if let Ok(v) = serde_json::from_slice::<Value>(&bytes)
            && v.get("kind").and_then(Value::as_str) == Some("Status")
        {
            return Ok(body::respond(
                status.as_u16(),
                &v,
                crate::request::Output::Json,
            ));
        }
        let text = String::from_utf8_lossy(&bytes).trim().to_string();
        debug!(%status, ?headers, body = %text, "kubelet refused the upgrade");
        let code = if status.is_success() {
            500
        } else {
            status.as_u16()
        };
        let e = ApiError::new(
            code,
            reason_of(code),
            if text.is_empty() {
                format!("the kubelet answered {status} to the upgrade request")
            } else {
                text
            },
        );
        return Err(e);
    }
    let backend_upgrade = hyper::upgrade::on(&mut resp);
    let mut out = Response::new(body::full(bytes::Bytes::new()));
    *out.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
    for (k, v) in resp.headers() {
        if k != http::header::CONTENT_LENGTH && k != http::header::TRANSFER_ENCODING {
            out.headers_mut().append(k, v.clone());
        }
    }
    let what = format!("{sub} {ns}/{name}");
    tokio::spawn(async move {
        let (client, backend) = match tokio::join!(client_upgrade, backend_upgrade) {
            (Ok(c), Ok(b)) => (c, b),
            (c, b) => {
                debug!(client = ?c.err(), backend = ?b.err(), %what, "upgrade failed");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut backend = TokioIo::new(backend);
        match tokio::io::copy_bidirectional(&mut client, &mut backend).await {
            Ok((up, down)) => debug!(%what, up, down, "stream closed"),
            Err(e) => debug!(%what, error = %e, "stream ended"),
        }
    });
    Ok(out)
}

fn reason_of(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        _ => "InternalError",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_keeps_order() {
        assert_eq!(
            repeated(
                Some("command=sh&stdin=true&command=-c&command=echo%20hi"),
                "command"
            ),
            vec!["sh", "-c", "echo hi"]
        );
    }

    #[test]
    fn connect_subresources() {
        assert!(is_connect("", "pods", Some("exec")));
        assert!(is_connect("", "pods", Some("portforward")));
        assert!(!is_connect("", "pods", Some("log")));
        assert!(!is_connect("apps", "pods", Some("exec")));
    }
}
