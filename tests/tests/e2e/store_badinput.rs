//! Bad input never crashes the store: oversize requests, garbage gRPC frames and HTTP/2
//! connections, invalid ranges, watches, leases and txns all end in a proper gRPC status (or a
//! closed connection), and the store keeps serving.
//!
//! Every scenario runs against real etcd 3.4 and `kumo store` (`NAME_etcd`, `NAME_kumo`), each
//! on a fresh store; after the body the runner checks that the process has not exited and that
//! a put + get on a new connection work. The expectations are etcd's codes and messages where
//! etcd defines them. Where the two legitimately differ the expectation depends on the store
//! and a comment says why — mostly texts that come from the gRPC library (grpc-go 1.26 in etcd
//! 3.4, tonic in kumo) rather than from etcd, and inputs that crash etcd 3.4.23 itself, which
//! only kumo gets.
//!
//! Garbage is sent with raw clients: tonic's `client::Grpc` with a codec that sends bytes as
//! they are (what any gRPC client would see), raw HTTP/2 through `h2` (framing errors: bad
//! length prefixes, compression flags, content types), and plain TCP (not HTTP/2 at all,
//! broken frames, connections closed mid-frame).

use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::{Buf, BufMut, Bytes};
use etcd_client::{Client, ConnectOptions, GetOptions, Txn, TxnOp};
use http::HeaderMap;
use kumo_etcd_proto::pb;
use kumo_tests::{StoreKind, StoreProc};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::store_conformance::{Ctx, assert_grpc_err};

/// Hard deadline for one scenario (store start-up excluded).
const TEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a raw exchange may take before it counts as unanswered.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
const MIB: usize = 1024 * 1024;
/// etcd's gRPC receive limit: --max-request-bytes (1.5 MiB) + 512 KiB.
const RECV_LIMIT: usize = 2 * MIB;

// ---------------------------------------------------------------------------------------------
// runner

/// Starts a fresh store of `kind`, runs `body` under [`TEST_TIMEOUT`], then checks that the
/// store survived: the process is still running and a put + get on a new connection work.
async fn run<F, Fut>(kind: StoreKind, body: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    let proc = tokio::task::spawn_blocking(move || StoreProc::start(kind, &path, &[]))
        .await
        .expect("join store start")
        .unwrap_or_else(|e| panic!("start {kind}: {e:#}"));
    let cx = Ctx {
        kind,
        endpoint: proc.endpoint(),
        name: proc.name.clone(),
        peer_url: format!("http://127.0.0.1:{}", proc.peer_port),
    };
    let log_tail = || {
        let log = std::fs::read_to_string(proc.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(25)..].join("\n")
    };
    let outcome = match tokio::time::timeout(TEST_TIMEOUT, body(cx.clone())).await {
        Ok(r) => r,
        Err(_) => Err(anyhow::anyhow!(
            "scenario did not finish within {TEST_TIMEOUT:?}"
        )),
    };
    let outcome = outcome.and_then(|()| {
        let pid = proc.pid().context("no store process")?;
        if !process_running(pid) {
            bail!("the store process exited");
        }
        Ok(())
    });
    let outcome = match outcome {
        Ok(()) => still_serving(&cx).await,
        Err(e) => Err(e),
    };
    if let Err(e) = outcome {
        panic!("[{kind}] {e:#}\n--- {kind} log tail ---\n{}", log_tail());
    }
    drop(proc);
    drop(dir);
}

/// Whether `pid` is a running process (not gone, not a zombie waiting to be reaped).
fn process_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S …": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// A put and a get on a new connection.
async fn still_serving(cx: &Ctx) -> Result<()> {
    let mut c = client(cx).await.context("connect after the bad input")?;
    let p = c
        .put("/badinput/alive", "yes", None)
        .await
        .context("put after the bad input")?;
    let g = c
        .get("/badinput/alive", None)
        .await
        .context("get after the bad input")?;
    let rev = p.header().map(|h| h.revision()).unwrap_or_default();
    match g.kvs() {
        [kv] if kv.value() == b"yes" && kv.mod_revision() == rev => Ok(()),
        other => bail!("get after the bad input returned {other:?}"),
    }
}

async fn client(cx: &Ctx) -> Result<Client> {
    let opts = ConnectOptions::new().with_connect_timeout(Duration::from_secs(5));
    Ok(Client::connect([cx.endpoint.as_str()], Some(opts)).await?)
}

/// `badinput!(body => body_etcd, body_kumo);` defines both tests.
macro_rules! badinput {
    ($body:ident => $etcd:ident, $kumo:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $etcd() {
            run(StoreKind::Etcd, $body).await
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $kumo() {
            run(StoreKind::Kumo, $body).await
        }
    };
}

fn is_etcd(cx: &Ctx) -> bool {
    cx.kind == StoreKind::Etcd
}

// ---------------------------------------------------------------------------------------------
// raw gRPC through tonic: bytes as they are, statuses as a gRPC client sees them

/// A codec that sends and receives message bodies as raw bytes.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n).to_vec()))
    }
}

async fn grpc_channel(cx: &Ctx) -> Result<tonic::transport::Channel> {
    Ok(
        tonic::transport::Endpoint::from_shared(cx.endpoint.clone())?
            .connect_timeout(Duration::from_secs(5))
            .timeout(REPLY_TIMEOUT)
            .connect()
            .await?,
    )
}

/// A unary (or server-streaming) call of `path` with `body` as the request message.
async fn raw_unary(
    ch: &tonic::transport::Channel,
    path: &str,
    body: &[u8],
) -> Result<(String, String)> {
    let mut g = tonic::client::Grpc::new(ch.clone());
    g.ready().await?;
    let path = http::uri::PathAndQuery::try_from(path)?;
    let r = g
        .server_streaming(tonic::Request::new(body.to_vec()), path, RawCodec)
        .await;
    let status = match r {
        Ok(resp) => {
            let mut s = resp.into_inner();
            loop {
                match s.message().await {
                    Ok(Some(_)) => {}
                    Ok(None) => return Ok(("Ok".into(), String::new())),
                    Err(st) => break st,
                }
            }
        }
        Err(st) => st,
    };
    Ok((format!("{:?}", status.code()), status.message().to_string()))
}

// ---------------------------------------------------------------------------------------------
// raw HTTP/2 through h2: framing-level garbage

/// What came back for one raw HTTP/2 request.
#[derive(Debug)]
struct Reply {
    http: u16,
    headers: HeaderMap,
    body: Vec<u8>,
    trailers: Option<HeaderMap>,
    /// The stream (or connection) was reset instead of answered.
    reset: Option<String>,
}

impl Reply {
    /// The grpc-status and (percent-decoded) grpc-message, from the trailers or a
    /// trailers-only response.
    fn grpc(&self) -> Option<(u32, String)> {
        let h = self.trailers.as_ref().unwrap_or(&self.headers);
        let code = h.get("grpc-status")?.to_str().ok()?.parse().ok()?;
        let msg = h
            .get("grpc-message")
            .map(|v| percent_decode(v.as_bytes()))
            .unwrap_or_default();
        Some((code, msg))
    }

    /// The status code a gRPC client reports: grpc-status, else the HTTP status mapped as the
    /// gRPC spec says (404 → Unimplemented …).
    fn client_code(&self) -> Option<u32> {
        if let Some((c, _)) = self.grpc() {
            return Some(c);
        }
        match self.http {
            0 => None,
            400 => Some(13),
            401 => Some(16),
            403 => Some(7),
            404 => Some(12),
            429 | 502 | 503 | 504 => Some(14),
            _ => Some(2),
        }
    }

    /// The gRPC messages of the response body.
    fn messages(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut b = self.body.as_slice();
        while b.len() >= 5 {
            let n = u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
            let Some(m) = b.get(5..5 + n) else { break };
            out.push(m.to_vec());
            b = &b[5 + n..];
        }
        out
    }
}

fn percent_decode(b: &[u8]) -> String {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A gRPC length-prefixed message with compression flag `flag`.
fn frame(flag: u8, msg: &[u8]) -> Vec<u8> {
    let mut b = vec![flag];
    b.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    b.extend_from_slice(msg);
    b
}

const GRPC_CT: (&str, &str) = ("content-type", "application/grpc");

/// One POST of `path` on its own HTTP/2 connection with `headers` and `body` (END_STREAM after
/// the body; on the HEADERS frame if the body is empty). `None`: no complete answer within
/// [`REPLY_TIMEOUT`].
async fn h2_call(
    cx: &Ctx,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Option<Reply>> {
    let addr = cx.endpoint.trim_start_matches("http://");
    let tcp = TcpStream::connect(addr).await?;
    let (send, conn) = h2::client::handshake(tcp).await?;
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let r = tokio::time::timeout(
        REPLY_TIMEOUT,
        h2_exchange(send, &cx.endpoint, path, headers, body),
    )
    .await
    .ok()
    .transpose();
    conn.abort();
    r
}

async fn h2_exchange(
    send: h2::client::SendRequest<Bytes>,
    endpoint: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Reply> {
    let mut send = send.ready().await?;
    let mut req = http::Request::builder()
        .method("POST")
        .uri(format!("{endpoint}{path}"))
        .header("te", "trailers");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let (resp, mut stream) = send.send_request(req.body(())?, body.is_empty())?;
    if !body.is_empty() {
        // The server may answer (and close the stream) before it has read the body.
        let _ = stream.send_data(Bytes::copy_from_slice(body), true);
    }
    let mut reply = Reply {
        http: 0,
        headers: HeaderMap::new(),
        body: Vec::new(),
        trailers: None,
        reset: None,
    };
    let resp = match resp.await {
        Ok(r) => r,
        Err(e) => {
            reply.reset = Some(e.to_string());
            return Ok(reply);
        }
    };
    reply.http = resp.status().as_u16();
    reply.headers = resp.headers().clone();
    let mut rb = resp.into_body();
    while let Some(chunk) = rb.data().await {
        match chunk {
            Ok(c) => {
                let _ = rb.flow_control().release_capacity(c.len());
                reply.body.extend_from_slice(&c);
            }
            Err(e) => {
                reply.reset = Some(e.to_string());
                return Ok(reply);
            }
        }
    }
    match rb.trailers().await {
        Ok(t) => reply.trailers = t,
        Err(e) => reply.reset = Some(e.to_string()),
    }
    Ok(reply)
}

/// Asserts grpc-status `code` with message `msg`.
#[track_caller]
fn assert_status(what: &str, r: &Option<Reply>, code: u32, msg: &str) {
    let Some(r) = r else {
        panic!("{what}: no answer within {REPLY_TIMEOUT:?}");
    };
    assert_eq!(
        r.grpc(),
        Some((code, msg.to_string())),
        "{what}: (grpc-status, grpc-message) of {r:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// raw TCP: not HTTP/2 at all, broken frames

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn h2_frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut b = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    b.push(ty);
    b.push(flags);
    b.extend_from_slice(&stream.to_be_bytes());
    b.extend_from_slice(payload);
    b
}

/// A request header block: HPACK literals without indexing, no Huffman.
fn request_block(authority: &str, path: &str) -> Vec<u8> {
    let mut b = Vec::new();
    for (n, v) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ] {
        b.push(0);
        b.push(n.len() as u8);
        b.extend_from_slice(n.as_bytes());
        b.push(v.len() as u8);
        b.extend_from_slice(v.as_bytes());
    }
    b
}

/// What the server did with a raw connection.
#[derive(Debug)]
struct Conn {
    /// Everything it sent.
    out: Vec<u8>,
    /// It closed the connection (EOF or reset) within the wait.
    closed: bool,
}

impl Conn {
    /// The HTTP/2 frames it sent: (type, payload).
    fn frames(&self) -> Vec<(u8, Vec<u8>)> {
        let mut v = Vec::new();
        let mut p = 0;
        while p + 9 <= self.out.len() {
            let len = u32::from_be_bytes([0, self.out[p], self.out[p + 1], self.out[p + 2]]);
            let end = (p + 9 + len as usize).min(self.out.len());
            v.push((self.out[p + 3], self.out[p + 9..end].to_vec()));
            p = end;
        }
        v
    }

    /// The error code of its GOAWAY, if it sent one.
    fn goaway(&self) -> Option<u32> {
        self.frames()
            .into_iter()
            .find(|(t, p)| *t == 7 && p.len() >= 8)
            .map(|(_, p)| u32::from_be_bytes([p[4], p[5], p[6], p[7]]))
    }
}

/// Writes `input` on a new TCP connection (then half-closes it if `close_write`) and collects
/// what the server sends until it closes the connection or `wait` passes.
async fn tcp_exchange(cx: &Ctx, input: &[u8], close_write: bool, wait: Duration) -> Result<Conn> {
    let addr = cx.endpoint.trim_start_matches("http://");
    let mut tcp = TcpStream::connect(addr).await?;
    // The server may close before taking everything: that is an answer too.
    let _ = tcp.write_all(input).await;
    if close_write {
        let _ = tcp.shutdown().await;
    }
    let mut out = Vec::new();
    let read_all = async {
        let mut buf = [0u8; 4096];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    };
    let closed = tokio::time::timeout(wait, read_all).await.is_ok();
    Ok(Conn { out, closed })
}

/// Fixed-seed xorshift, for reproducible garbage.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// methods

/// Unary (and server-streaming) methods of the six services in the etcd 3.4 API.
const UNARY_METHODS: &[&str] = &[
    "/etcdserverpb.KV/Range",
    "/etcdserverpb.KV/Put",
    "/etcdserverpb.KV/DeleteRange",
    "/etcdserverpb.KV/Txn",
    "/etcdserverpb.KV/Compact",
    "/etcdserverpb.Lease/LeaseGrant",
    "/etcdserverpb.Lease/LeaseRevoke",
    "/etcdserverpb.Lease/LeaseTimeToLive",
    "/etcdserverpb.Lease/LeaseLeases",
    "/etcdserverpb.Cluster/MemberAdd",
    "/etcdserverpb.Cluster/MemberRemove",
    "/etcdserverpb.Cluster/MemberUpdate",
    "/etcdserverpb.Cluster/MemberList",
    "/etcdserverpb.Cluster/MemberPromote",
    "/etcdserverpb.Maintenance/Alarm",
    "/etcdserverpb.Maintenance/Status",
    "/etcdserverpb.Maintenance/Defragment",
    "/etcdserverpb.Maintenance/Hash",
    "/etcdserverpb.Maintenance/HashKV",
    "/etcdserverpb.Maintenance/Snapshot",
    "/etcdserverpb.Maintenance/MoveLeader",
    "/etcdserverpb.Auth/AuthEnable",
    "/etcdserverpb.Auth/AuthDisable",
    "/etcdserverpb.Auth/Authenticate",
    "/etcdserverpb.Auth/UserAdd",
    "/etcdserverpb.Auth/UserGet",
    "/etcdserverpb.Auth/UserList",
    "/etcdserverpb.Auth/UserDelete",
    "/etcdserverpb.Auth/UserChangePassword",
    "/etcdserverpb.Auth/UserGrantRole",
    "/etcdserverpb.Auth/UserRevokeRole",
    "/etcdserverpb.Auth/RoleAdd",
    "/etcdserverpb.Auth/RoleGet",
    "/etcdserverpb.Auth/RoleList",
    "/etcdserverpb.Auth/RoleDelete",
    "/etcdserverpb.Auth/RoleGrantPermission",
    "/etcdserverpb.Auth/RoleRevokePermission",
];

/// Methods of the etcd 3.5 API that kumo's protocol files also carry.
const METHODS_3_5: &[&str] = &[
    "/etcdserverpb.Maintenance/Downgrade",
    "/etcdserverpb.Auth/AuthStatus",
];

/// The client-streaming methods.
const STREAM_METHODS: &[&str] = &[
    "/etcdserverpb.Watch/Watch",
    "/etcdserverpb.Lease/LeaseKeepAlive",
];

/// Bodies that are no valid protobuf for any message: an overlong varint, wire type 7, a
/// length-delimited field running past the end.
const GARBAGE: &[(&str, &[u8])] = &[
    ("overlong varint", &[0xff; 11]),
    ("wire type 7", &[0x0f]),
    ("truncated field", b"\x0a\x64abc"),
];

// ---------------------------------------------------------------------------------------------
// scenarios: sizes

/// Requests over --max-request-bytes (1.5 MiB) are "request is too large"; over the gRPC
/// receive limit (2 MiB) the transport refuses them with ResourceExhausted — also when only
/// the length prefix claims that much. The connection stays usable.
async fn oversize_requests(cx: Ctx) -> Result<()> {
    let mut c = client(&cx).await?;
    let too_large = "etcdserver: request is too large";
    assert_grpc_err(
        c.put("/big/a", vec![b'a'; MIB + MIB / 2 + 1024], None)
            .await,
        "InvalidArgument",
        too_large,
    );
    assert_grpc_err(
        c.txn(Txn::new().and_then([
            TxnOp::put("/big/t1", vec![b't'; MIB], None),
            TxnOp::put("/big/t2", vec![b't'; MIB / 2 + 1024], None),
        ]))
        .await,
        "InvalidArgument",
        too_large,
    );
    // Just over the receive limit and far over it: grpc-go's text, with the message size.
    for size in [RECV_LIMIT + 1, 3 * MIB] {
        let key = "/big/huge";
        let want = pb::PutRequest {
            key: key.into(),
            value: vec![b'h'; size],
            ..Default::default()
        }
        .encoded_len();
        assert_grpc_err(
            c.put(key, vec![b'h'; size], None).await,
            "ResourceExhausted",
            &format!("grpc: received message larger than max ({want} vs. {RECV_LIMIT})"),
        );
    }
    // A length prefix that lies: refused before any body arrives, on every method.
    for path in UNARY_METHODS {
        for claimed in [u32::MAX, RECV_LIMIT as u32 + 1] {
            let mut body = vec![0];
            body.extend_from_slice(&claimed.to_be_bytes());
            body.extend_from_slice(b"abc");
            let r = h2_call(&cx, path, &[GRPC_CT], &body).await?;
            let msg =
                format!("grpc: received message larger than max ({claimed} vs. {RECV_LIMIT})");
            assert_status(&format!("{path} claiming {claimed}"), &r, 8, &msg);
        }
    }
    // The client's connection survived all of it.
    c.put("/big/ok", vec![b'o'; MIB], None).await?;
    let g = c
        .get(
            "/big/",
            Some(GetOptions::new().with_prefix().with_keys_only()),
        )
        .await?;
    assert_eq!(g.count(), 1, "only the 1 MiB put was written");
    Ok(())
}
badinput!(oversize_requests => oversize_requests_etcd, oversize_requests_kumo);

// ---------------------------------------------------------------------------------------------
// scenarios: garbage messages

/// Bodies that are no protobuf, on every unary method of the six services: Internal.
async fn garbage_protobuf_every_method(cx: Ctx) -> Result<()> {
    let ch = grpc_channel(&cx).await?;
    for path in UNARY_METHODS {
        for (what, body) in GARBAGE {
            let (code, msg) = raw_unary(&ch, path, body).await?;
            // The texts are the gRPC library's (grpc-go's wraps Go's protobuf error, tonic's
            // prost's), not etcd's: only their lead-in is checked.
            let lead = if !is_etcd(&cx) {
                "failed to decode Protobuf message: "
            } else if path.ends_with("/Snapshot") {
                "grpc: failed to unmarshal the received message "
            } else {
                "grpc: error unmarshalling request: "
            };
            assert!(
                code == "Internal" && msg.starts_with(lead),
                "{path} with {what}: got {code} {msg:?}"
            );
        }
    }
    for path in METHODS_3_5 {
        let (service, method) = path[1..].split_once('/').unwrap_or_default();
        for (what, body) in GARBAGE {
            let got = raw_unary(&ch, path, body).await?;
            if is_etcd(&cx) {
                // etcd 3.4 does not have them.
                let msg = format!("unknown method {method} for service {service}");
                assert_eq!(got, ("Unimplemented".into(), msg), "{path} with {what}");
            } else {
                // kumo decodes the request before the handler says what it thinks of it.
                assert_eq!(got.0, "Internal", "{path} with {what}: {got:?}");
            }
        }
    }
    Ok(())
}
badinput!(garbage_protobuf_every_method => garbage_protobuf_every_method_etcd, garbage_protobuf_every_method_kumo);

const NO_MESSAGE_SAMPLE: &[&str] = &[
    "/etcdserverpb.KV/Range",
    "/etcdserverpb.KV/Put",
    "/etcdserverpb.Lease/LeaseGrant",
    "/etcdserverpb.Maintenance/Status",
    "/etcdserverpb.Maintenance/Snapshot",
];

/// Broken gRPC framing on unary and server-streaming calls: truncated length prefixes,
/// bodies shorter than their prefix, the compressed flag without (or with an unsupported)
/// encoding, an unknown flag, no message at all, two messages.
async fn grpc_framing_errors(cx: Ctx) -> Result<()> {
    let etcd = is_etcd(&cx);
    for path in UNARY_METHODS {
        let streaming = path.ends_with("/Snapshot");
        let mut short = frame(0, &[b'x'; 100]);
        short.truncate(15);
        for (what, body) in [
            ("truncated length prefix", vec![0, 0, 0]),
            ("short body", short),
        ] {
            let r = h2_call(&cx, path, &[GRPC_CT], &body).await?;
            let what = format!("{path}: {what}");
            if !etcd {
                assert_status(&what, &r, 13, "Unexpected EOF decoding stream.");
            } else if streaming {
                assert_status(&what, &r, 13, "unexpected EOF");
            } else {
                // grpc-go 1.26 turns the bare io.ErrUnexpectedEOF of a unary call into
                // Unknown; kumo (tonic) says Internal for both kinds of call.
                assert_status(&what, &r, 2, "unexpected EOF");
            }
        }

        let r = h2_call(&cx, path, &[GRPC_CT], &frame(1, &[])).await?;
        let msg = if etcd {
            "grpc: compressed flag set with identity or empty encoding"
        } else {
            "protocol error: received message with compressed-flag but no grpc-encoding was specified"
        };
        assert_status(&format!("{path}: compressed flag"), &r, 13, msg);

        let gzip = [GRPC_CT, ("grpc-encoding", "gzip")];
        let r = h2_call(&cx, path, &gzip, &frame(1, b"garbage")).await?;
        let msg = if etcd {
            "grpc: Decompressor is not installed for grpc-encoding \"gzip\""
        } else {
            "Content is compressed with `gzip` which isn't supported"
        };
        assert_status(&format!("{path}: gzip"), &r, 12, msg);

        let r = h2_call(&cx, path, &[GRPC_CT], &frame(2, &[])).await?;
        let msg = if etcd {
            "grpc: received unexpected payload format 2"
        } else {
            "protocol error: received message with invalid compression flag: 2 (valid flags are 0 and 1), while sending request"
        };
        assert_status(&format!("{path}: flag 2"), &r, 13, msg);

        // END_STREAM on the HEADERS frame: no request message at all (on a few methods:
        // etcd keeps each of these calls open until the client gives up).
        if !NO_MESSAGE_SAMPLE.contains(path) {
            continue;
        }
        let r = h2_call(&cx, path, &[GRPC_CT], &[]).await?;
        if etcd {
            // grpc-go 1.26 never answers such a call (it drops the io.EOF): the client's
            // deadline ends it. Nothing to compare with; kumo answers.
            assert!(r.is_none(), "{path} without a message: {r:?}");
        } else {
            assert_status(
                &format!("{path}: no message"),
                &r,
                13,
                "Missing request message.",
            );
        }
    }

    // Two messages on a unary call: the first one is served (both), here an empty range.
    let mut two = frame(0, &[]);
    two.extend(frame(0, &[]));
    let r = h2_call(&cx, "/etcdserverpb.KV/Range", &[GRPC_CT], &two).await?;
    assert_status("two messages", &r, 3, "etcdserver: key is not provided");
    Ok(())
}
badinput!(grpc_framing_errors => grpc_framing_errors_etcd, grpc_framing_errors_kumo);

/// Wrong or missing content-type, unknown services and methods, a path that names no method.
async fn grpc_bad_headers(cx: Ctx) -> Result<()> {
    let etcd = is_etcd(&cx);
    let range = frame(
        0,
        &pb::RangeRequest {
            key: b"k".to_vec(),
            ..Default::default()
        }
        .encode_to_vec(),
    );
    for headers in [&[("content-type", "application/json")][..], &[]] {
        let r = h2_call(&cx, "/etcdserverpb.KV/Range", headers, &range)
            .await?
            .context("no answer to a non-gRPC content type")?;
        if etcd {
            // grpc-go resets the stream (PROTOCOL_ERROR).
            assert!(r.reset.is_some(), "content type {headers:?}: {r:?}");
        } else {
            // tonic does not look at the content type: the request is served as gRPC.
            // (gRPC says a server SHOULD answer 415; not a crash, not a wrong answer.)
            assert_eq!(
                r.grpc(),
                Some((0, String::new())),
                "content type {headers:?}: {r:?}"
            );
        }
    }

    // What a gRPC client gets for unknown services and methods.
    let ch = grpc_channel(&cx).await?;
    let got = raw_unary(&ch, "/etcdserverpb.KV/Nope", &[]).await?;
    if etcd {
        let msg = "unknown method Nope for service etcdserverpb.KV";
        assert_eq!(got, ("Unimplemented".into(), msg.into()));
    } else {
        // tonic's router: Unimplemented without a message.
        assert_eq!(got, ("Unimplemented".into(), String::new()));
    }
    // (path, etcd's status; kumo's HTTP status)
    for (path, etcd_code, etcd_msg, kumo_http) in [
        (
            "/etcdserverpb.Nope/Range",
            12,
            "unknown service etcdserverpb.Nope",
            404,
        ),
        ("/nonsense", 8, "malformed method name: \"/nonsense\"", 404),
        (
            "/etcdserverpb.KV/Range/extra",
            12,
            "unknown service etcdserverpb.KV/Range",
            200,
        ),
    ] {
        let got = raw_unary(&ch, path, &[]).await?;
        let r = h2_call(&cx, path, &[GRPC_CT], &frame(0, &[]))
            .await?
            .context("no answer")?;
        if etcd {
            assert_eq!(
                r.grpc(),
                Some((etcd_code, etcd_msg.to_string())),
                "{path}: {r:?}"
            );
            assert_eq!(got.1, etcd_msg, "{path} via tonic");
        } else {
            // kumo shares its port with its HTTP routes: a path outside the gRPC services is
            // an HTTP 404, which gRPC clients report as Unimplemented (etcd: Unimplemented
            // for unknown services, ResourceExhausted for paths that name no method).
            assert_eq!(
                (r.http, r.client_code()),
                (kumo_http, Some(12)),
                "{path}: {r:?}"
            );
            assert_eq!(got.0, "Unimplemented", "{path} via tonic: {got:?}");
        }
    }
    Ok(())
}
badinput!(grpc_bad_headers => grpc_bad_headers_etcd, grpc_bad_headers_kumo);

/// Garbage on the client-streaming methods (Watch, LeaseKeepAlive), also after a valid
/// message: etcd ends the stream with the decode error's status.
///
async fn garbage_on_streams(cx: Ctx) -> Result<()> {
    streams_with_garbage(cx).await
}

async fn streams_with_garbage(cx: Ctx) -> Result<()> {
    let mut lying = vec![0];
    lying.extend_from_slice(&u32::MAX.to_be_bytes());
    let mut short = frame(0, &[b'x'; 100]);
    short.truncate(15);
    let watch_create = pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: b"/w".to_vec(),
                ..Default::default()
            },
        )),
    };
    let keep_alive = pb::LeaseKeepAliveRequest { id: 12345 };
    for path in STREAM_METHODS {
        let valid = if path.ends_with("/Watch") {
            frame(0, &watch_create.encode_to_vec())
        } else {
            frame(0, &keep_alive.encode_to_vec())
        };
        let mut cases: Vec<(String, Vec<u8>, u32)> = GARBAGE
            .iter()
            .map(|(what, body)| (what.to_string(), frame(0, body), 13))
            .collect();
        cases.push(("truncated length prefix".into(), vec![0, 0, 0], 13));
        cases.push(("short body".into(), short.clone(), 13));
        cases.push(("compressed flag".into(), frame(1, &[]), 13));
        cases.push(("lying length prefix".into(), lying.clone(), 8));
        for (what, garbage, code) in cases {
            for after_valid in [false, true] {
                let body = if after_valid {
                    [valid.clone(), garbage.clone()].concat()
                } else {
                    garbage.clone()
                };
                let what = format!(
                    "{path}: {what}{}",
                    if after_valid {
                        " after a valid message"
                    } else {
                        ""
                    }
                );
                let r = h2_call(&cx, path, &[GRPC_CT], &body)
                    .await?
                    .with_context(|| format!("{what}: no answer within {REPLY_TIMEOUT:?}"))?;
                // etcd 3.4 sometimes resets the connection instead (its watch receive loop
                // races its send loop); kumo must always answer with a status.
                if cx.kind == StoreKind::Etcd && r.grpc().is_none() && r.reset.is_some() {
                    continue;
                }
                let status = r
                    .grpc()
                    .with_context(|| format!("{what}: no grpc-status: {r:?}"))?;
                assert_eq!(status.0, code, "{what}: {r:?} ({status:?})");
                // The valid message may be answered before the error ends the stream (etcd
                // may also end it first: its receive loop races its send loop).
                let first = r.messages().into_iter().next();
                if after_valid && cx.kind == StoreKind::Kumo && first.is_none() {
                    bail!("{what}: kumo did not answer the valid message: {r:?}");
                }
                if let Some(first) = first {
                    assert!(after_valid, "{what}: an answer to garbage: {r:?}");
                    if path.ends_with("/Watch") {
                        let w = pb::WatchResponse::decode(first.as_slice())?;
                        assert!(w.created && !w.canceled, "{what}: {w:?}");
                    } else {
                        let k = pb::LeaseKeepAliveResponse::decode(first.as_slice())?;
                        assert_eq!((k.id, k.ttl), (12345, 0), "{what}: unknown lease");
                    }
                }
            }
        }
    }
    Ok(())
}
badinput!(garbage_on_streams => garbage_on_streams_etcd, garbage_on_streams_kumo);

/// Raw TCP: bytes that are not HTTP/2, broken HTTP/2 framing, connections closed in the
/// middle of a frame or of a gRPC message. The store closes (or keeps) the connection and
/// serves the next one.
async fn raw_connections(cx: Ctx) -> Result<()> {
    let authority = cx.endpoint.trim_start_matches("http://").to_string();
    let settings = h2_frame(4, 0, 0, &[]);
    let put_block = request_block(&authority, "/etcdserverpb.KV/Put");
    let put = pb::PutRequest {
        key: b"/raw/half".to_vec(),
        value: b"v".to_vec(),
        ..Default::default()
    }
    .encode_to_vec();
    // A gRPC message whose prefix promises 100 bytes more than follow.
    let mut half_msg = frame(0, &put);
    half_msg[1..5].copy_from_slice(&((put.len() + 100) as u32).to_be_bytes());
    let headers = h2_frame(1, 4, 1, &put_block);
    let data = h2_frame(0, 0, 1, &half_msg);
    // A DATA frame whose header promises 200 bytes more than follow.
    let mut cut_frame = data.clone();
    cut_frame[..3].copy_from_slice(&((half_msg.len() + 200) as u32).to_be_bytes()[1..]);
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut random_frames = [PREFACE, &settings].concat();
    for _ in 0..200 {
        let ty = (rng.next() % 12) as u8;
        let n = (rng.next() % 40) as usize;
        let payload = rng.bytes(n);
        random_frames.extend(h2_frame(
            ty,
            rng.next() as u8,
            (rng.next() % 5) as u32,
            &payload,
        ));
    }
    let p = PREFACE;
    let s = settings.as_slice();
    // (what, bytes, a protocol error the server must close the connection for)
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("4 KiB of random bytes", rng.bytes(4096), false),
        (
            "HTTP/1.1 garbage",
            b"GARBAGE / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            false,
        ),
        ("half a preface", p[..10].to_vec(), false),
        ("preface only", p.to_vec(), false),
        (
            "truncated frame header",
            [p, s, &[0, 0, 5, 0, 0]].concat(),
            false,
        ),
        (
            "HPACK garbage",
            [p, s, &h2_frame(1, 5, 1, &[0xff; 12])].concat(),
            true,
        ),
        (
            "HPACK index out of range",
            [p, s, &h2_frame(1, 5, 1, &[0xbf, 0x7f])].concat(),
            true,
        ),
        (
            "16 MiB frame",
            [p, s, &[0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 1], &[0u8; 100]].concat(),
            true,
        ),
        (
            "SETTINGS of 5 bytes",
            [p, &h2_frame(4, 0, 0, &[0; 5])].concat(),
            true,
        ),
        (
            "DATA on stream 0",
            [p, s, &h2_frame(0, 0, 0, b"xx")].concat(),
            true,
        ),
        (
            "CONTINUATION without HEADERS",
            [p, s, &h2_frame(9, 4, 1, &put_block)].concat(),
            true,
        ),
        ("200 random frames", random_frames, true),
        (
            "closed mid DATA frame",
            [p, s, &headers, &cut_frame].concat(),
            false,
        ),
        (
            "closed mid gRPC message",
            [p, s, &headers, &data].concat(),
            false,
        ),
        (
            "reset mid gRPC message",
            [p, s, &headers, &data, &h2_frame(3, 0, 1, &[0, 0, 0, 8])].concat(),
            false,
        ),
    ];
    for (what, input, protocol_error) in &cases {
        for close_write in [true, false] {
            let wait = if *protocol_error || close_write {
                REPLY_TIMEOUT
            } else {
                Duration::from_millis(500)
            };
            let conn = tcp_exchange(&cx, input, close_write, wait).await?;
            let what = format!("{what} (half-closed: {close_write})");
            if *protocol_error {
                assert!(conn.closed, "{what}: the connection stays open: {conn:?}");
                if !is_etcd(&cx) {
                    // h2 says why before closing (grpc-go just closes).
                    assert!(
                        conn.goaway().is_some_and(|e| e != 0),
                        "{what}: no GOAWAY with an error: {conn:?}"
                    );
                }
            }
        }
        // The next connection is served.
        let mut c = client(&cx).await?;
        c.get("/raw/", Some(GetOptions::new().with_prefix()))
            .await
            .with_context(|| format!("a get after {what}"))?;
    }
    // The half-sent puts were not applied.
    let mut c = client(&cx).await?;
    let g = c.get("/raw/half", None).await?;
    assert_eq!(g.count(), 0, "a put cut off mid-message was applied");
    Ok(())
}
badinput!(raw_connections => raw_connections_etcd, raw_connections_kumo);

// ---------------------------------------------------------------------------------------------
// scenarios: invalid ranges, watches, leases, txns

fn keys(r: &pb::RangeResponse) -> Vec<String> {
    r.kvs
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect()
}

fn status(r: Result<tonic::Response<impl Sized>, tonic::Status>) -> (String, String) {
    match r {
        Ok(_) => ("Ok".into(), String::new()),
        Err(s) => (format!("{:?}", s.code()), s.message().to_string()),
    }
}

/// Ranges: end before the key (empty, no error), empty keys, negative / huge / minimal
/// limits, future / maximal / negative revisions, sort enums out of range, contradictory
/// revision filters.
async fn invalid_ranges(cx: Ctx) -> Result<()> {
    let ch = grpc_channel(&cx).await?;
    let mut kv = pb::kv_client::KvClient::new(ch);
    for i in 0..5 {
        kv.put(pb::PutRequest {
            key: format!("/r/{i}").into_bytes(),
            value: b"v".to_vec(),
            ..Default::default()
        })
        .await?;
    }
    let rev = 6;
    let all: Vec<String> = (0..5).map(|i| format!("/r/{i}")).collect();
    let base = pb::RangeRequest {
        key: b"/r/".to_vec(),
        range_end: b"/r0".to_vec(),
        ..Default::default()
    };
    let range = |f: &dyn Fn(&mut pb::RangeRequest)| {
        let mut r = base.clone();
        f(&mut r);
        r
    };

    for (what, r) in [
        (
            "end < key",
            range(&|r| {
                r.key = b"/r/3".to_vec();
                r.range_end = b"/r/1".to_vec();
            }),
        ),
        (
            "end == key",
            range(&|r| {
                r.key = b"/r/3".to_vec();
                r.range_end = b"/r/3".to_vec();
            }),
        ),
    ] {
        let g = kv
            .range(r)
            .await
            .with_context(|| what.to_string())?
            .into_inner();
        assert_eq!((g.count, g.more, keys(&g)), (0, false, vec![]), "{what}");
        assert_eq!(g.header.map(|h| h.revision), Some(rev), "{what}");
    }
    let empty = "etcdserver: key is not provided";
    for (what, r) in [
        (
            "empty key",
            range(&|r| {
                r.key.clear();
                r.range_end.clear();
            }),
        ),
        ("empty key with an end", range(&|r| r.key.clear())),
        (
            "empty key, end \\0",
            range(&|r| {
                r.key.clear();
                r.range_end = vec![0];
            }),
        ),
    ] {
        assert_eq!(
            status(kv.range(r).await),
            ("InvalidArgument".into(), empty.into()),
            "{what}"
        );
    }
    for (what, r) in [
        ("negative limit", range(&|r| r.limit = -3)),
        ("minimal limit", range(&|r| r.limit = i64::MIN)),
        ("huge limit", range(&|r| r.limit = i64::MAX)),
        ("negative revision", range(&|r| r.revision = -5)),
        ("minimal revision", range(&|r| r.revision = i64::MIN)),
        ("sort order 99", range(&|r| r.sort_order = 99)),
        ("sort order -1", range(&|r| r.sort_order = -1)),
    ] {
        let g = kv
            .range(r)
            .await
            .with_context(|| what.to_string())?
            .into_inner();
        assert_eq!(
            (g.count, g.more, keys(&g)),
            (5, false, all.clone()),
            "{what}"
        );
    }
    let g = kv
        .range(range(&|r| {
            r.key = vec![0];
            r.range_end = vec![0];
        }))
        .await?
        .into_inner();
    assert_eq!(keys(&g), all, "\\0..\\0 is every key");
    for (what, r) in [
        (
            "negative revision filters",
            range(&|r| {
                r.min_mod_revision = -1;
                r.max_mod_revision = -1;
            }),
        ),
        (
            "max create < min create",
            range(&|r| {
                r.min_create_revision = 5;
                r.max_create_revision = 2;
            }),
        ),
    ] {
        let g = kv
            .range(r)
            .await
            .with_context(|| what.to_string())?
            .into_inner();
        assert_eq!(
            (g.count, keys(&g)),
            (5, vec![]),
            "{what}: counted, all filtered out"
        );
    }
    let future = "etcdserver: mvcc: required revision is a future revision";
    for (what, r) in [
        ("future revision", range(&|r| r.revision = 1 << 60)),
        ("maximal revision", range(&|r| r.revision = i64::MAX)),
    ] {
        assert_eq!(
            status(kv.range(r).await),
            ("OutOfRange".into(), future.into()),
            "{what}"
        );
    }
    // Out-of-range sort targets: etcd 3.4.23 picks no sorter for them and dies on a nil
    // pointer (SIGSEGV) when it sorts — kumo treats them as the key.
    if !is_etcd(&cx) {
        for (what, r) in [
            ("sort target 99", range(&|r| r.sort_target = 99)),
            (
                "sort target 99, ascending",
                range(&|r| {
                    r.sort_target = 99;
                    r.sort_order = 1;
                }),
            ),
            (
                "sort target -1, descending",
                range(&|r| {
                    r.sort_target = -1;
                    r.sort_order = 2;
                }),
            ),
            (
                "sort 99/99, limit 2",
                range(&|r| {
                    r.sort_target = 99;
                    r.sort_order = 99;
                    r.limit = 2;
                }),
            ),
        ] {
            let g = kv
                .range(r)
                .await
                .with_context(|| what.to_string())?
                .into_inner();
            assert_eq!(g.count, 5, "{what}");
        }
    }
    // Deleting an empty range deletes nothing.
    let d = kv
        .delete_range(pb::DeleteRangeRequest {
            key: b"/r/3".to_vec(),
            range_end: b"/r/1".to_vec(),
            prev_kv: true,
        })
        .await?
        .into_inner();
    assert_eq!((d.deleted, d.prev_kvs.len()), (0, 0));
    let g = kv.range(base.clone()).await?.into_inner();
    assert_eq!((g.count, g.header.map(|h| h.revision)), (5, Some(rev)));
    Ok(())
}
badinput!(invalid_ranges => invalid_ranges_etcd, invalid_ranges_kumo);

/// Watch creates with an empty range (created + canceled, with a reason), unknown filter
/// values (ignored), an empty key, and requests with nothing in them (ignored).
async fn invalid_watches(cx: Ctx) -> Result<()> {
    use pb::watch_request::RequestUnion;
    let ch = grpc_channel(&cx).await?;
    let mut kv = pb::kv_client::KvClient::new(ch.clone());
    let mut w = pb::watch_client::WatchClient::new(ch);
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let create = |c: pb::WatchCreateRequest| pb::WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(c)),
    };
    // Queue the first request: grpc-go sends the response headers only with a message.
    tx.send(create(pb::WatchCreateRequest {
        key: b"/w/3".to_vec(),
        range_end: b"/w/1".to_vec(),
        ..Default::default()
    }))
    .await?;
    let requests =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) });
    let mut stream = w.watch(requests).await?.into_inner();
    let mut next = async || -> Result<pb::WatchResponse> {
        tokio::time::timeout(REPLY_TIMEOUT, stream.message())
            .await
            .context("no watch response")??
            .context("watch stream closed")
    };
    let empty_range =
        |r: &pb::WatchResponse| (r.watch_id, r.created, r.canceled, r.cancel_reason.clone());
    let want = (-1, true, true, "mvcc: watcher range is empty".to_string());
    assert_eq!(empty_range(&next().await?), want, "end < key");
    tx.send(create(pb::WatchCreateRequest {
        key: b"/w/3".to_vec(),
        range_end: b"/w/3".to_vec(),
        ..Default::default()
    }))
    .await?;
    assert_eq!(empty_range(&next().await?), want, "end == key");

    // Requests with nothing in them are ignored; the stream goes on.
    tx.send(pb::WatchRequest {
        request_union: None,
    })
    .await?;
    tx.send(create(pb::WatchCreateRequest {
        key: vec![],
        ..Default::default()
    }))
    .await?;
    let r = next().await?;
    assert!(r.created && !r.canceled, "empty key: {r:?}");
    // Unknown filter values are ignored; NODELETE still applies.
    tx.send(create(pb::WatchCreateRequest {
        key: b"/w/".to_vec(),
        range_end: b"/w0".to_vec(),
        filters: vec![7, -1, 1, 99],
        ..Default::default()
    }))
    .await?;
    let r = next().await?;
    assert!(r.created && !r.canceled, "unknown filters: {r:?}");
    let id = r.watch_id;
    kv.put(pb::PutRequest {
        key: b"/w/a".to_vec(),
        value: b"1".to_vec(),
        ..Default::default()
    })
    .await?;
    kv.delete_range(pb::DeleteRangeRequest {
        key: b"/w/a".to_vec(),
        ..Default::default()
    })
    .await?;
    kv.put(pb::PutRequest {
        key: b"/w/b".to_vec(),
        value: b"2".to_vec(),
        ..Default::default()
    })
    .await?;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let r = next().await?;
        if r.watch_id == id {
            seen.extend(r.events.iter().map(|e| {
                (
                    e.r#type,
                    e.kv.as_ref().map(|kv| kv.key.clone()).unwrap_or_default(),
                )
            }));
        }
    }
    assert_eq!(
        seen,
        vec![(0, b"/w/a".to_vec()), (0, b"/w/b".to_vec())],
        "puts only (NODELETE)"
    );
    Ok(())
}
badinput!(invalid_watches => invalid_watches_etcd, invalid_watches_kumo);

/// Lease TTLs over etcd's maximum (9,000,000,000 s), at it and negative; negative ids.
async fn invalid_leases(cx: Ctx) -> Result<()> {
    let ch = grpc_channel(&cx).await?;
    let mut lease = pb::lease_client::LeaseClient::new(ch);
    let too_large = (
        "OutOfRange".to_string(),
        "etcdserver: too large lease TTL".to_string(),
    );
    for ttl in [9_000_000_001, i64::MAX] {
        assert_eq!(
            status(
                lease
                    .lease_grant(pb::LeaseGrantRequest { ttl, id: 0 })
                    .await
            ),
            too_large,
            "TTL {ttl}"
        );
    }
    let g = lease
        .lease_grant(pb::LeaseGrantRequest {
            ttl: 9_000_000_000,
            id: 0,
        })
        .await?
        .into_inner();
    assert_eq!(g.ttl, 9_000_000_000, "the maximum TTL");
    let g = lease
        .lease_grant(pb::LeaseGrantRequest { ttl: -5, id: 0 })
        .await?
        .into_inner();
    assert_eq!(g.ttl, 2, "a negative TTL is raised to the minimum");
    let g = lease
        .lease_grant(pb::LeaseGrantRequest { ttl: 10, id: -7 })
        .await?
        .into_inner();
    assert_eq!((g.id, g.ttl), (-7, 10), "a negative id");
    let t = lease
        .lease_time_to_live(pb::LeaseTimeToLiveRequest { id: -7, keys: true })
        .await?
        .into_inner();
    assert_eq!((t.id, t.granted_ttl), (-7, 10));
    lease
        .lease_revoke(pb::LeaseRevokeRequest { id: -7 })
        .await?;
    let t = lease
        .lease_time_to_live(pb::LeaseTimeToLiveRequest { id: -7, keys: true })
        .await?
        .into_inner();
    assert_eq!(t.ttl, -1, "revoked");
    let not_found = (
        "NotFound".to_string(),
        "etcdserver: requested lease not found".to_string(),
    );
    assert_eq!(
        status(
            lease
                .lease_revoke(pb::LeaseRevokeRequest { id: i64::MIN })
                .await
        ),
        not_found
    );
    Ok(())
}
badinput!(invalid_leases => invalid_leases_etcd, invalid_leases_kumo);

fn put_op(key: String) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
            key: key.into_bytes(),
            ..Default::default()
        })),
    }
}

/// Txns: 129 ops in any list, nested txns over the budget their parent leaves, empty ops,
/// compare enums out of range, compares without a target value.
async fn invalid_txns(cx: Ctx) -> Result<()> {
    use pb::compare::TargetUnion;
    let ch = grpc_channel(&cx).await?;
    let mut kv = pb::kv_client::KvClient::new(ch);
    let too_many = (
        "InvalidArgument".to_string(),
        "etcdserver: too many operations in txn request".to_string(),
    );
    let ops = |n: usize, prefix: &str| -> Vec<pb::RequestOp> {
        (0..n).map(|i| put_op(format!("{prefix}{i:03}"))).collect()
    };
    let cmps: Vec<pb::Compare> = (0..129)
        .map(|i| pb::Compare {
            key: format!("/t/{i}").into_bytes(),
            target_union: Some(TargetUnion::Version(0)),
            ..Default::default()
        })
        .collect();
    for (what, t) in [
        (
            "129 success ops",
            pb::TxnRequest {
                success: ops(129, "/t/"),
                ..Default::default()
            },
        ),
        (
            "129 failure ops",
            pb::TxnRequest {
                failure: ops(129, "/t/"),
                ..Default::default()
            },
        ),
        (
            "129 compares",
            pb::TxnRequest {
                compare: cmps,
                ..Default::default()
            },
        ),
    ] {
        assert_eq!(status(kv.txn(t).await), too_many, "{what}");
    }
    // A nested txn may use what its parent leaves of the 128: 128 - 101 = 27 here.
    let nested = |outer: usize, inner: usize| {
        let mut success = ops(outer, "/n/");
        success.push(pb::RequestOp {
            request: Some(pb::request_op::Request::RequestTxn(pb::TxnRequest {
                success: ops(inner, "/m/"),
                ..Default::default()
            })),
        });
        pb::TxnRequest {
            success,
            ..Default::default()
        }
    };
    assert!(
        kv.txn(nested(100, 27)).await?.into_inner().succeeded,
        "100 + nested 27"
    );
    for (outer, inner) in [(100, 28), (127, 1), (128, 0)] {
        assert_eq!(
            status(kv.txn(nested(outer, inner)).await),
            too_many,
            "{outer} + nested {inner}"
        );
    }
    // An op with no request in it (etcd's checkRequestOp: "key not found").
    let empty_op = pb::RequestOp { request: None };
    let key_not_found = (
        "InvalidArgument".to_string(),
        "etcdserver: key not found".to_string(),
    );
    assert_eq!(
        status(
            kv.txn(pb::TxnRequest {
                success: vec![empty_op.clone()],
                ..Default::default()
            })
            .await
        ),
        key_not_found,
        "empty op"
    );
    let nested_empty = pb::RequestOp {
        request: Some(pb::request_op::Request::RequestTxn(pb::TxnRequest {
            failure: vec![empty_op],
            ..Default::default()
        })),
    };
    assert_eq!(
        status(
            kv.txn(pb::TxnRequest {
                failure: vec![nested_empty],
                ..Default::default()
            })
            .await
        ),
        key_not_found,
        "nested empty op"
    );
    // Compare enums out of range, and compares without a target value: answered like etcd.
    kv.put(pb::PutRequest {
        key: b"/c".to_vec(),
        value: b"v".to_vec(),
        ..Default::default()
    })
    .await?;
    for (what, target, result, union, want) in [
        ("target 99", 99, 0, Some(TargetUnion::Version(1)), true),
        ("result 99", 0, 99, Some(TargetUnion::Version(1)), true),
        (
            "target and result -1",
            -1,
            -1,
            Some(TargetUnion::Version(1)),
            true,
        ),
        ("no target value", 3, 0, None, false),
        (
            "value target, version given",
            3,
            0,
            Some(TargetUnion::Version(1)),
            false,
        ),
    ] {
        let t = pb::TxnRequest {
            compare: vec![pb::Compare {
                key: b"/c".to_vec(),
                target,
                result,
                target_union: union,
                range_end: vec![],
            }],
            ..Default::default()
        };
        let r = kv
            .txn(t)
            .await
            .with_context(|| what.to_string())?
            .into_inner();
        assert_eq!(r.succeeded, want, "compare {what}");
    }
    Ok(())
}
badinput!(invalid_txns => invalid_txns_etcd, invalid_txns_kumo);

/// Compaction and hash revisions out of range, put flags that contradict the request, an
/// alarm action out of range.
async fn invalid_revisions_and_flags(cx: Ctx) -> Result<()> {
    let ch = grpc_channel(&cx).await?;
    let mut kv = pb::kv_client::KvClient::new(ch.clone());
    let mut mt = pb::maintenance_client::MaintenanceClient::new(ch);
    let oor = |m: &str| {
        (
            "OutOfRange".to_string(),
            format!("etcdserver: mvcc: required revision {m}"),
        )
    };
    assert_eq!(
        status(
            kv.compact(pb::CompactionRequest {
                revision: -1,
                physical: false
            })
            .await
        ),
        oor("has been compacted")
    );
    assert_eq!(
        status(
            kv.compact(pb::CompactionRequest {
                revision: i64::MAX,
                physical: true
            })
            .await
        ),
        oor("is a future revision")
    );
    assert_eq!(
        status(mt.hash_kv(pb::HashKvRequest { revision: 1 << 40 }).await),
        oor("is a future revision")
    );
    mt.hash_kv(pb::HashKvRequest { revision: -5 })
        .await
        .context("HashKV at a negative revision")?;

    let ia = |m: &str| ("InvalidArgument".to_string(), format!("etcdserver: {m}"));
    let put = |f: &dyn Fn(&mut pb::PutRequest)| {
        let mut p = pb::PutRequest {
            key: b"/f".to_vec(),
            ..Default::default()
        };
        f(&mut p);
        p
    };
    assert_eq!(
        status(
            kv.put(put(&|p| {
                p.ignore_value = true;
                p.value = b"v".to_vec();
            }))
            .await
        ),
        ia("value is provided")
    );
    assert_eq!(
        status(
            kv.put(put(&|p| {
                p.ignore_lease = true;
                p.lease = 5;
            }))
            .await
        ),
        ia("lease is provided")
    );
    assert_eq!(
        status(kv.put(put(&|p| p.ignore_value = true)).await),
        ia("key not found")
    );
    // An alarm action out of range: etcd 3.4.23 applies it, finds no handler and dies on a
    // nil pointer (SIGSEGV) — kumo answers it like a GET.
    if !is_etcd(&cx) {
        let a = mt
            .alarm(pb::AlarmRequest {
                action: 99,
                member_id: 0,
                alarm: 99,
            })
            .await?
            .into_inner();
        assert!(a.alarms.is_empty(), "{a:?}");
    }
    Ok(())
}
badinput!(invalid_revisions_and_flags => invalid_revisions_and_flags_etcd, invalid_revisions_and_flags_kumo);
