//! `/portForward/{ns}/{pod}[/{uid}]`: `kubectl port-forward`, upstream's
//! `portforward.k8s.io` protocol over SPDY/3.1 — either a plain SPDY upgrade (kubectl before
//! 1.31), or SPDY tunneled inside a WebSocket (`SPDY/3.1+portforward.k8s.io`, each binary
//! message a piece of the SPDY byte stream; kubectl 1.31+).
//!
//! For every local connection the client opens two streams with the same `requestID` and
//! `port` headers: `streamType: error` and `streamType: data`. The kubelet dials the pod's IP
//! at that port (pods have routable IPs on this node; the pod network namespace is reached
//! through it), splices the data stream with the TCP connection (half-closes both ways), and
//! writes a dial error as text on the error stream, like upstream's
//! `error forwarding port P to pod …`.

use std::collections::HashMap;
use std::net::IpAddr;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::spdy::{
    FLAG_FIN, Frame, GOAWAY, HeaderDeflater, HeaderInflater, PING, RST_STREAM, SYN_REPLY,
    SYN_STREAM, control_frame, data_frame, decode_headers, encode_headers, read_frame,
    spawn_writer,
};
use super::{Body, ServerState, full, text};

/// The SPDY sub-protocol of port forwarding.
const PORT_FORWARD_PROTOCOL: &str = "portforward.k8s.io";
/// The WebSocket sub-protocol that tunnels it.
const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

/// The IP address port-forwarded connections of a pod are dialled at.
fn pod_ip(state: &ServerState, ns: &str, pod: &str) -> Option<Result<IpAddr, String>> {
    let p = state.pods.pods().into_iter().find(|p| {
        p.metadata.namespace.as_deref() == Some(ns) && p.metadata.name.as_deref() == Some(pod)
    })?;
    Some(
        p.status
            .and_then(|s| s.pod_ip)
            .ok_or_else(|| format!("pod {pod:?} has no IP address yet"))
            .and_then(|ip| ip.parse().map_err(|e| format!("pod IP {ip:?}: {e}"))),
    )
}

pub(crate) async fn port_forward(
    state: &ServerState,
    ns: &str,
    pod: &str,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let ip = match pod_ip(state, ns, pod) {
        None => {
            return text(
                StatusCode::NOT_FOUND,
                &format!("pod {pod:?} does not exist"),
            );
        }
        Some(Err(e)) => return text(StatusCode::BAD_REQUEST, &e),
        Some(Ok(ip)) => ip,
    };
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let pod_name = pod.to_string();
    if upgrade == "websocket" {
        let offered = req
            .headers()
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim() == TUNNEL_PROTOCOL);
        if !offered {
            return text(
                StatusCode::BAD_REQUEST,
                &format!(
                    "port forwarding over WebSockets needs the {TUNNEL_PROTOCOL} sub-protocol"
                ),
            );
        }
        let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY) else {
            return text(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
        };
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            let ws =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            let (ours, theirs) = tokio::io::duplex(256 * 1024);
            tokio::spawn(tunnel(ws, theirs));
            run(ours, ip, pod_name).await;
        });
        let mut r = Response::new(full(Bytes::new()));
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = r.headers_mut();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        if let Ok(v) = HeaderValue::from_str(&accept) {
            h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
        }
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(TUNNEL_PROTOCOL),
        );
        return r;
    }
    if !upgrade.starts_with("spdy/") {
        return text(StatusCode::BAD_REQUEST, "Upgrade request required");
    }
    let offered: Vec<String> = req
        .headers()
        .get_all("x-stream-protocol-version")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .collect();
    if !offered.is_empty() && !offered.iter().any(|p| p == PORT_FORWARD_PROTOCOL) {
        return text(
            StatusCode::FORBIDDEN,
            &format!(
                "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports [{PORT_FORWARD_PROTOCOL:?}]"
            ),
        );
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            run(TokioIo::new(upgraded), ip, pod_name).await;
        }
    });
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    h.insert(
        "x-stream-protocol-version",
        HeaderValue::from_static(PORT_FORWARD_PROTOCOL),
    );
    r
}

/// Carries a byte stream in binary WebSocket messages both ways (the tunnel of kubectl's
/// `TunnelingConnection`).
async fn tunnel<S>(ws: WebSocketStream<S>, pipe: tokio::io::DuplexStream)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut stream) = ws.split();
    let (mut prd, mut pwr) = tokio::io::split(pipe);
    let inbound = tokio::spawn(async move {
        while let Some(Ok(m)) = stream.next().await {
            match m {
                Message::Binary(b) if pwr.write_all(&b).await.is_err() => break,
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = pwr.shutdown().await;
    });
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match prd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if sink
                    .send(Message::Binary(Bytes::copy_from_slice(&buf[..n])))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    let _ = sink.send(Message::Close(None)).await;
    inbound.abort();
}

/// One forwarded connection's streams.
#[derive(Default)]
struct Pair {
    data: Option<u32>,
    error: Option<u32>,
    port: u16,
    /// Client bytes for the pod (`None`: the client half-closed).
    to_pod: Option<mpsc::Sender<Option<Bytes>>>,
}

/// Serves the SPDY port-forward session on `io`.
async fn run<S>(io: S, ip: IpAddr, pod: String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut rd, wr) = tokio::io::split(io);
    let (frames, writer) = spawn_writer(wr);
    let mut inflater = match HeaderInflater::new() {
        Ok(i) => i,
        Err(_) => return,
    };
    let mut deflater = HeaderDeflater::default();
    // stream id → request id
    let mut streams: HashMap<u32, String> = HashMap::new();
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    while let Some(frame) = read_frame(&mut rd).await {
        match frame {
            Frame::Control {
                kind: SYN_STREAM,
                payload,
            } if payload.len() >= 10 => {
                let id = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
                    & 0x7fff_ffff;
                let Ok(block) = inflater.inflate(&payload[10..]) else {
                    break;
                };
                let headers = decode_headers(&block).unwrap_or_default();
                let mut reply = id.to_be_bytes().to_vec();
                reply.extend(deflater.deflate(&encode_headers(&[])));
                if frames
                    .send(control_frame(SYN_REPLY, 0, &reply))
                    .await
                    .is_err()
                {
                    break;
                }
                let port: u16 = headers
                    .get("port")
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(0);
                let request = headers
                    .get("requestid")
                    .cloned()
                    .unwrap_or_else(|| port.to_string());
                let pair = pairs.entry(request.clone()).or_default();
                pair.port = port;
                match headers.get("streamtype").map(String::as_str) {
                    Some("data") => pair.data = Some(id),
                    Some("error") => pair.error = Some(id),
                    _ => continue,
                }
                streams.insert(id, request.clone());
                if let (Some(data), Some(error), None) = (pair.data, pair.error, &pair.to_pod) {
                    let (tx, rx) = mpsc::channel(32);
                    pair.to_pod = Some(tx);
                    tokio::spawn(forward(
                        ip,
                        pair.port,
                        pod.clone(),
                        data,
                        error,
                        rx,
                        frames.clone(),
                    ));
                }
            }
            Frame::Control {
                kind: PING,
                payload,
                ..
            } => {
                let _ = frames.send(control_frame(PING, 0, &payload)).await;
            }
            Frame::Control {
                kind: RST_STREAM,
                payload,
                ..
            } if payload.len() >= 4 => {
                let id = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
                    & 0x7fff_ffff;
                if let Some(r) = streams.get(&id)
                    && let Some(p) = pairs.get_mut(r)
                    && p.data == Some(id)
                {
                    p.to_pod = None;
                }
            }
            Frame::Control { kind: GOAWAY, .. } => break,
            Frame::Control { .. } => {}
            Frame::Data {
                stream,
                flags,
                payload,
            } => {
                let Some(p) = streams.get(&stream).and_then(|r| pairs.get_mut(r)) else {
                    continue;
                };
                if p.data != Some(stream) {
                    continue;
                }
                if let Some(tx) = &p.to_pod {
                    if !payload.is_empty() {
                        let _ = tx.send(Some(Bytes::from(payload))).await;
                    }
                    if flags & FLAG_FIN != 0 {
                        let _ = tx.send(None).await;
                    }
                }
            }
        }
    }
    drop(pairs);
    drop(frames);
    let _ = writer.await;
}

/// Dials the pod and splices one data stream with the connection.
async fn forward(
    ip: IpAddr,
    port: u16,
    pod: String,
    data: u32,
    error: u32,
    mut from_client: mpsc::Receiver<Option<Bytes>>,
    frames: mpsc::Sender<Vec<u8>>,
) {
    let tcp = match tokio::net::TcpStream::connect((ip, port)).await {
        Ok(t) => t,
        Err(e) => {
            let msg = format!("error forwarding port {port} to pod {pod}: dial {ip}:{port}: {e}");
            tracing::debug!("{msg}");
            let _ = frames.send(data_frame(error, 0, msg.as_bytes())).await;
            let _ = frames.send(data_frame(error, FLAG_FIN, &[])).await;
            let _ = frames.send(data_frame(data, FLAG_FIN, &[])).await;
            return;
        }
    };
    let (mut trd, mut twr) = tcp.into_split();
    // Client → pod until the client half-closes (runs on after the pod's side ended).
    tokio::spawn(async move {
        while let Some(Some(b)) = from_client.recv().await {
            if twr.write_all(&b).await.is_err() {
                break;
            }
        }
        let _ = twr.shutdown().await;
    });
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match trd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if frames.send(data_frame(data, 0, &buf[..n])).await.is_err() {
                    break;
                }
            }
        }
    }
    // The pod closed its side: end the data stream, and the error stream with no error
    // (kubectl waits for the latter before it closes the local connection).
    let _ = frames.send(data_frame(data, FLAG_FIN, &[])).await;
    let _ = frames.send(data_frame(error, FLAG_FIN, &[])).await;
}
