//! `/exec/{ns}/{pod}[/{uid}]/{container}?command=…&input=1&output=1&error=1&tty=1`: an
//! interactive command in a container, over the Kubernetes remote-command protocols.
//!
//! WebSocket (what kubectl ≥ 1.30 speaks, passed through by the apiserver): each binary
//! message starts with a channel byte — 0 stdin, 1 stdout, 2 stderr, 3 error (from v4 a JSON
//! `metav1.Status`: `Success`, or `Failure`/`NonZeroExitCode` with the exit code as the
//! `ExitCode` cause, which is how kubectl learns it), 4 resize (`{"Width":…,"Height":…}`);
//! v5 adds 255 = close-stream (`[255, 0]`: the client closed stdin). The `base64.` variants
//! send text messages `'0'+channel` followed by base64. As upstream, the server first sends
//! an empty message on the lowest output channel, then the status, then a normal close.
//!
//! When the runtime serves streams itself (CRI, [`StreamTarget::Url`]) the client's upgrade
//! request is proxied to that URL and bytes are spliced, like upstream's kubelet.

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use kumo_runtime::{ExecRequest, ExecSession, StreamTarget};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

use super::{Body, ServerState, full, query_pairs, text};
use crate::directory::LookupError;

/// Channel numbers of the remote-command protocols.
pub(crate) const STDIN: u8 = 0;
pub(crate) const STDOUT: u8 = 1;
pub(crate) const STDERR: u8 = 2;
pub(crate) const ERROR: u8 = 3;
pub(crate) const RESIZE: u8 = 4;
/// v5: `[255, channel]` closes that channel.
pub(crate) const CLOSE: u8 = 255;

/// The query of an exec request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ExecOptions {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl ExecOptions {
    pub(crate) fn parse(query: Option<&str>) -> Result<Self, String> {
        let mut o = ExecOptions::default();
        let yes = |v: &str| matches!(v, "1" | "true" | "True" | "TRUE" | "t" | "T");
        for (k, v) in query_pairs(query) {
            match k.as_str() {
                "command" => o.command.push(v),
                "input" | "stdin" => o.stdin = yes(&v),
                "output" | "stdout" => o.stdout = yes(&v),
                "error" | "stderr" => o.stderr = yes(&v),
                "tty" => o.tty = yes(&v),
                _ => {}
            }
        }
        // Upstream: a terminal merges stderr into stdout.
        if o.tty {
            o.stderr = false;
        }
        if !(o.stdin || o.stdout || o.stderr) {
            return Err("you must specify at least 1 of stdin, stdout, stderr".into());
        }
        if o.command.is_empty() {
            return Err("you must specify at least one command for the container".into());
        }
        Ok(o)
    }

    fn request(&self) -> ExecRequest {
        ExecRequest {
            cmd: self.command.clone(),
            tty: self.tty,
            stdin: self.stdin,
            stdout: self.stdout,
            stderr: self.stderr,
        }
    }
}

/// A negotiated WebSocket sub-protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Proto {
    /// Binary channel messages (`false`: the `base64.` text variant).
    pub binary: bool,
    /// The error channel carries a JSON `metav1.Status` (v4, v5).
    pub status_json: bool,
    /// The client may close single channels with `[255, channel]` (v5).
    pub close_signal: bool,
}

/// Sub-protocols served, in no particular order (the client's order decides).
const WS_PROTOCOLS: &[(&str, Proto)] = &[
    (
        "v5.channel.k8s.io",
        Proto {
            binary: true,
            status_json: true,
            close_signal: true,
        },
    ),
    (
        "v4.channel.k8s.io",
        Proto {
            binary: true,
            status_json: true,
            close_signal: false,
        },
    ),
    (
        "v4.base64.channel.k8s.io",
        Proto {
            binary: false,
            status_json: true,
            close_signal: false,
        },
    ),
    (
        "channel.k8s.io",
        Proto {
            binary: true,
            status_json: false,
            close_signal: false,
        },
    ),
    (
        "base64.channel.k8s.io",
        Proto {
            binary: false,
            status_json: false,
            close_signal: false,
        },
    ),
];

/// Picks the first protocol the client offers that is served (`""` when it offers none,
/// which upstream treats as `channel.k8s.io`); `None` when it offers only unknown ones.
pub(crate) fn negotiate(headers: &http::HeaderMap) -> Option<(&'static str, Proto)> {
    let offered: Vec<String> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    if offered.is_empty() {
        return Some(("", WS_PROTOCOLS[3].1));
    }
    offered
        .iter()
        .find_map(|o| WS_PROTOCOLS.iter().find(|(n, _)| n == o).copied())
}

fn upgrade_kind(req: &Request<Incoming>) -> Option<String> {
    let connection_upgrade = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if !connection_upgrade {
        return None;
    }
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.to_ascii_lowercase())
}

pub(crate) async fn exec(
    state: &ServerState,
    ns: &str,
    pod: &str,
    container: &str,
    req: Request<Incoming>,
) -> Response<Body> {
    let opts = match ExecOptions::parse(req.uri().query()) {
        Ok(o) => o,
        Err(e) => return text(StatusCode::BAD_REQUEST, &e),
    };
    let c = match state.pods.container(ns, pod, container) {
        Ok(c) => c,
        Err(LookupError::PodNotFound { .. }) => {
            return text(
                StatusCode::NOT_FOUND,
                &format!("pod {pod:?} does not exist"),
            );
        }
        Err(LookupError::ContainerNotFound { .. }) => {
            return text(
                StatusCode::NOT_FOUND,
                &format!("container not found ({container:?})"),
            );
        }
    };
    let Some(id) = c.container_id.clone().filter(|_| c.running) else {
        return text(
            StatusCode::BAD_REQUEST,
            &format!("container {container:?} in pod {pod:?} is not running"),
        );
    };
    let kind = upgrade_kind(&req);
    let websocket = kind.as_deref() == Some("websocket");
    let spdy = kind.as_deref().is_some_and(|k| k.starts_with("spdy/"));
    if !websocket && !spdy {
        return text(StatusCode::BAD_REQUEST, "Upgrade request required");
    }
    let ws_proto = if websocket {
        match negotiate(req.headers()) {
            Some(p) => Some(p),
            None => {
                return text(
                    StatusCode::BAD_REQUEST,
                    "requested protocol(s) are not supported: supports v5.channel.k8s.io, v4.channel.k8s.io, v4.base64.channel.k8s.io, channel.k8s.io, base64.channel.k8s.io",
                );
            }
        }
    } else {
        None
    };
    let target = state.runtime.exec(&id, &opts.request()).await;
    match (target, ws_proto) {
        (Ok(StreamTarget::Url(url)), _) => proxy_upgrade(&url, req).await,
        (Ok(StreamTarget::Local(session)), Some(p)) => websocket_upgrade(req, p, opts, Ok(session)),
        // The upgrade happens anyway so that the error reaches kubectl on the error channel
        // (a refused upgrade makes kubectl retry with SPDY and hide the cause).
        (Err(e), Some(p)) => websocket_upgrade(req, p, opts, Err(e.to_string())),
        (Ok(StreamTarget::Local(session)), None) => super::spdy::serve(req, opts, Ok(session)),
        (Err(e), None) => super::spdy::serve(req, opts, Err(e.to_string())),
    }
}

/// Answers the WebSocket handshake (101) and runs the session on the upgraded connection.
fn websocket_upgrade(
    mut req: Request<Incoming>,
    (name, proto): (&'static str, Proto),
    opts: ExecOptions,
    session: Result<ExecSession, String>,
) -> Response<Body> {
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY) else {
        return text(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "exec: websocket upgrade failed");
                return;
            }
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        run_websocket(ws, proto, opts, session).await;
    });
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if !name.is_empty() {
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(name),
        );
    }
    r
}

fn ws_frame(proto: Proto, channel: u8, data: &[u8]) -> Message {
    if proto.binary {
        let mut v = Vec::with_capacity(data.len() + 1);
        v.push(channel);
        v.extend_from_slice(data);
        Message::Binary(v.into())
    } else {
        let mut s = String::with_capacity(data.len() * 4 / 3 + 4);
        s.push((b'0' + channel) as char);
        base64::engine::general_purpose::STANDARD.encode_string(data, &mut s);
        Message::Text(s.into())
    }
}

/// The status written on the error channel when the command ends (upstream's
/// `v4WriteStatusFunc`); `None` for the pre-v4 protocols on success (they write nothing).
pub(crate) fn exit_status(
    status_json: bool,
    command: &[String],
    result: &Result<i32, String>,
) -> Option<Vec<u8>> {
    let status = match result {
        Ok(0) => json!({"metadata": {}, "status": "Success"}),
        Ok(code) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!(
                "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
                command.join(" ")
            ),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Err(e) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("Internal error occurred: {e}"),
            "reason": "InternalError",
            "details": {"causes": [{"message": e}]},
            "code": 500,
        }),
    };
    if status_json {
        serde_json::to_vec(&status).ok()
    } else if matches!(result, Ok(0)) {
        None
    } else {
        status
            .get("message")
            .and_then(Value::as_str)
            .map(|m| m.as_bytes().to_vec())
    }
}

/// Parses a resize message (`{"Width":80,"Height":24}`) into (cols, rows).
pub(crate) fn parse_resize(data: &[u8]) -> Option<(u16, u16)> {
    let v: Value = serde_json::from_slice(data).ok()?;
    let w = v.get("Width")?.as_u64()?;
    let h = v.get("Height")?.as_u64()?;
    Some((w.min(u16::MAX as u64) as u16, h.min(u16::MAX as u64) as u16))
}

/// What a transport (WebSocket or SPDY) hands the session pump.
pub(crate) enum Inbound {
    Stdin(Bytes),
    CloseStdin,
    Resize(u16, u16),
}

/// Runs an exec session: feeds `inbound` to the process, sends its output with `out`
/// (channel, bytes) and returns its exit result once the output has drained.
pub(crate) async fn pump(
    mut session: ExecSession,
    mut inbound: mpsc::Receiver<Inbound>,
    out: mpsc::Sender<(u8, Bytes)>,
) -> Result<i32, String> {
    let mut readers = Vec::new();
    for (channel, stream) in [
        (STDOUT, session.stdout.take()),
        (STDERR, session.stderr.take()),
    ] {
        let Some(mut r) = stream else { continue };
        let out = out.clone();
        readers.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match r.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if out
                            .send((channel, Bytes::copy_from_slice(&buf[..n])))
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                }
            }
        }));
    }
    drop(out);
    let mut stdin = session.stdin.take();
    let resize = session.resize.take();
    let input = tokio::spawn(async move {
        while let Some(m) = inbound.recv().await {
            match m {
                Inbound::Stdin(b) => {
                    if let Some(w) = stdin.as_mut()
                        && w.write_all(&b).await.is_err()
                    {
                        stdin = None;
                    }
                }
                Inbound::CloseStdin => {
                    if let Some(mut w) = stdin.take() {
                        let _ = w.shutdown().await;
                    }
                }
                Inbound::Resize(w, h) => {
                    if let Some(tx) = &resize {
                        let _ = tx.send((w, h)).await;
                    }
                }
            }
        }
        // The client went away or closed everything: the process sees EOF on stdin.
        if let Some(mut w) = stdin.take() {
            let _ = w.shutdown().await;
        }
    });
    let result = session.exit.await.map_err(|e| e.to_string());
    for r in readers {
        let _ = r.await;
    }
    input.abort();
    result
}

async fn run_websocket<S>(
    ws: WebSocketStream<S>,
    proto: Proto,
    opts: ExecOptions,
    session: Result<ExecSession, String>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut stream) = ws.split();
    // Let the client know the streams are open (upstream writes an empty message on the
    // lowest output channel).
    let first = if opts.stdout {
        STDOUT
    } else if opts.stderr {
        STDERR
    } else {
        ERROR
    };
    if sink.send(ws_frame(proto, first, &[])).await.is_err() {
        return;
    }
    let (in_tx, in_rx) = mpsc::channel::<Inbound>(32);
    let want_stdin = opts.stdin;
    let reader = tokio::spawn(async move {
        while let Some(msg) = stream.next().await {
            let (channel, data): (u8, Bytes) = match msg {
                Ok(Message::Binary(b)) if !b.is_empty() => (b[0], b.slice(1..)),
                Ok(Message::Text(t)) if !t.is_empty() => {
                    let s = t.as_str();
                    let channel = s.as_bytes()[0].wrapping_sub(b'0');
                    match base64::engine::general_purpose::STANDARD.decode(&s[1..]) {
                        Ok(d) => (channel, Bytes::from(d)),
                        Err(_) => continue,
                    }
                }
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => continue,
            };
            let m = match channel {
                STDIN if want_stdin => Inbound::Stdin(data),
                RESIZE => match parse_resize(&data) {
                    Some((w, h)) => Inbound::Resize(w, h),
                    None => continue,
                },
                CLOSE if proto.close_signal && data.first() == Some(&STDIN) => Inbound::CloseStdin,
                _ => continue,
            };
            if in_tx.send(m).await.is_err() {
                break;
            }
        }
    });
    let result = match session {
        Ok(session) => {
            let (out_tx, mut out_rx) = mpsc::channel::<(u8, Bytes)>(32);
            let pumping = tokio::spawn(pump(session, in_rx, out_tx));
            let mut broken = false;
            while let Some((channel, data)) = out_rx.recv().await {
                if !broken && sink.send(ws_frame(proto, channel, &data)).await.is_err() {
                    // Keep draining so the process is not blocked on a full pipe.
                    broken = true;
                }
            }
            match pumping.await {
                Ok(r) => r,
                Err(e) => Err(e.to_string()),
            }
        }
        Err(e) => Err(e),
    };
    if let Some(status) = exit_status(proto.status_json, &opts.command, &result) {
        let _ = sink.send(ws_frame(proto, ERROR, &status)).await;
    }
    let _ = sink
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })))
        .await;
    // Give the client a moment to answer the close, then drop the connection.
    let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
}

/// Proxies the client's upgrade request to the runtime's streaming URL (plain HTTP, like
/// containerd's streaming server on localhost) and splices the two upgraded connections.
async fn proxy_upgrade(url: &str, mut req: Request<Incoming>) -> Response<Body> {
    let fail = |e: String| {
        text(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("error proxying to the container runtime's streaming server {url}: {e}"),
        )
    };
    let uri: http::Uri = match url.parse() {
        Ok(u) => u,
        Err(e) => return fail(e.to_string()),
    };
    if uri.scheme_str() != Some("http") {
        return fail("only http:// streaming URLs are supported".into());
    }
    let Some(authority) = uri.authority().cloned() else {
        return fail("URL without a host".into());
    };
    let tcp = match tokio::net::TcpStream::connect((
        authority.host(),
        authority.port_u16().unwrap_or(80),
    ))
    .await
    {
        Ok(t) => t,
        Err(e) => return fail(e.to_string()),
    };
    let (mut sender, conn) =
        match hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(tcp)).await {
            Ok(x) => x,
            Err(e) => return fail(e.to_string()),
        };
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let mut out = Request::builder()
        .method(req.method().clone())
        .uri(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    for (k, v) in req.headers() {
        if k != header::HOST && k != header::AUTHORIZATION {
            out = out.header(k, v);
        }
    }
    out = out.header(header::HOST, authority.as_str());
    let out = match out.body(Empty::<Bytes>::new()) {
        Ok(r) => r,
        Err(e) => return fail(e.to_string()),
    };
    let client_upgrade = hyper::upgrade::on(&mut req);
    let mut resp = match sender.send_request(out).await {
        Ok(r) => r,
        Err(e) => return fail(e.to_string()),
    };
    let status = resp.status();
    let headers = resp.headers().clone();
    if status == StatusCode::SWITCHING_PROTOCOLS {
        let backend_upgrade = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            let (Ok(client), Ok(backend)) = (client_upgrade.await, backend_upgrade.await) else {
                tracing::debug!("exec proxy: an upgrade did not complete");
                return;
            };
            let mut client = TokioIo::new(client);
            let mut backend = TokioIo::new(backend);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
        });
        let mut r = Response::new(full(Bytes::new()));
        *r.status_mut() = status;
        *r.headers_mut() = headers;
        return r;
    }
    // Not upgraded: pass the runtime's answer on.
    let body = match resp.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return fail(e.to_string()),
    };
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        r.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_accept_both_spellings_and_tty_drops_stderr() {
        let o = ExecOptions::parse(Some(
            "command=sh&command=-c&command=echo+hi&input=1&output=1&error=1&tty=1",
        ))
        .expect("valid");
        assert_eq!(o.command, ["sh", "-c", "echo hi"]);
        assert!(o.stdin && o.stdout && o.tty && !o.stderr);
        let o = ExecOptions::parse(Some("command=ls&stdout=true")).expect("valid");
        assert!(o.stdout && !o.stdin);
        assert!(ExecOptions::parse(Some("command=ls")).is_err());
        assert!(ExecOptions::parse(Some("output=1")).is_err());
    }

    #[test]
    fn negotiation_follows_the_clients_order() {
        let mut h = http::HeaderMap::new();
        h.append(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("v5.channel.k8s.io"),
        );
        assert_eq!(negotiate(&h).map(|p| p.0), Some("v5.channel.k8s.io"));
        let mut h = http::HeaderMap::new();
        h.append(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("foo, v4.base64.channel.k8s.io, v4.channel.k8s.io"),
        );
        let (n, p) = negotiate(&h).expect("negotiated");
        assert_eq!(n, "v4.base64.channel.k8s.io");
        assert!(!p.binary && p.status_json);
        assert_eq!(negotiate(&http::HeaderMap::new()).map(|p| p.0), Some(""));
        let mut h = http::HeaderMap::new();
        h.append(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("bogus"),
        );
        assert!(negotiate(&h).is_none());
    }

    #[test]
    fn statuses_match_upstream() -> anyhow::Result<()> {
        let cmd = vec!["sh".to_string(), "-c".into(), "exit 3".into()];
        let ok: Value = serde_json::from_slice(&exit_status(true, &cmd, &Ok(0)).expect("status"))?;
        assert_eq!(ok, json!({"metadata": {}, "status": "Success"}));
        let bad: Value = serde_json::from_slice(&exit_status(true, &cmd, &Ok(3)).expect("status"))?;
        assert_eq!(bad["reason"], "NonZeroExitCode");
        assert_eq!(
            bad["details"]["causes"][0],
            json!({"reason": "ExitCode", "message": "3"})
        );
        assert!(exit_status(false, &cmd, &Ok(0)).is_none());
        assert!(exit_status(false, &cmd, &Ok(3)).is_some());
        assert_eq!(
            parse_resize(br#"{"Width":120,"Height":40}"#),
            Some((120, 40))
        );
        match ws_frame(
            Proto {
                binary: false,
                status_json: true,
                close_signal: false,
            },
            1,
            b"hi\n",
        ) {
            Message::Text(t) => assert_eq!(t.as_str(), "1aGkK"),
            m => anyhow::bail!("unexpected {m:?}"),
        }
        Ok(())
    }
}
