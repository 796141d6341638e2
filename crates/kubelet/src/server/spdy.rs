//! SPDY/3.1 transport of the remote-command protocol: what kubectl before 1.30 speaks (and
//! newer ones when the WebSocket upgrade fails), passed through by the apiserver.
//!
//! After `101 Switching Protocols` (`Upgrade: SPDY/3.1`, `X-Stream-Protocol-Version` picked
//! from the client's `v4.channel.k8s.io` … `channel.k8s.io`), the client opens one SPDY
//! stream per channel with a `streamtype` header (`error`, `stdin`, `stdout`, `stderr`,
//! `resize`) and waits for each SYN_REPLY. The server then copies the process's output to the
//! stdout/stderr streams, writes the status to the error stream (v4: a JSON
//! `metav1.Status` as over WebSockets; older: the error text), and half-closes every stream
//! with FIN. Resize events are a stream of concatenated JSON objects.
//!
//! Header blocks are zlib-compressed with SPDY/3's preset dictionary (one compression
//! context per direction per connection). Incoming blocks are inflated by priming a raw
//! inflater with a stored block holding the dictionary (same window contents as a preset
//! dictionary). Outgoing blocks are written as stored (uncompressed) deflate blocks, each
//! followed by a sync-flush marker, inside a zlib stream that names the dictionary: valid
//! for any inflater, and the reply headers are tiny. The dictionary file is the one kubectl embeds, byte for byte.
//! Flow control (WINDOW_UPDATE) is not enforced, like the spdystream peer.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use flate2::{Decompress, FlushDecompress};
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use kumo_runtime::ExecSession;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::exec::{ExecOptions, Inbound, STDERR, STDOUT, exit_status, parse_resize, pump};
use super::{Body, full, text};

/// SPDY/3's header compression dictionary.
const DICTIONARY: &[u8] = include_bytes!("spdy3_dictionary.bin");

pub(crate) const SYN_STREAM: u16 = 1;
pub(crate) const SYN_REPLY: u16 = 2;
pub(crate) const RST_STREAM: u16 = 3;
pub(crate) const PING: u16 = 6;
pub(crate) const GOAWAY: u16 = 7;
pub(crate) const FLAG_FIN: u8 = 0x01;
/// Largest frame accepted from a client (the protocol allows 16 MiB).
pub(crate) const MAX_FRAME: usize = 1 << 24;

/// `X-Stream-Protocol-Version`s served, best first.
const PROTOCOLS: &[&str] = &[
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

/// Upstream's `httpstream.Handshake`: the first protocol of the client's list the server
/// supports; `Some("")` when the client names none (the v1 protocol).
fn negotiate(headers: &http::HeaderMap) -> Option<&'static str> {
    let offered: Vec<String> = headers
        .get_all("x-stream-protocol-version")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    if offered.is_empty() {
        return Some("");
    }
    offered
        .iter()
        .find_map(|o| PROTOCOLS.iter().find(|p| *p == o).copied())
}

/// Answers the SPDY upgrade and runs the session on the upgraded connection.
pub(crate) fn serve(
    mut req: Request<Incoming>,
    opts: ExecOptions,
    session: Result<ExecSession, String>,
) -> Response<Body> {
    let Some(proto) = negotiate(req.headers()) else {
        let mut r = text(
            StatusCode::FORBIDDEN,
            &format!(
                "unable to upgrade: unable to negotiate protocol: client supports {:?}, server supports {:?}",
                req.headers()
                    .get_all("x-stream-protocol-version")
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect::<Vec<_>>(),
                PROTOCOLS
            ),
        );
        if let Ok(v) = HeaderValue::from_str(&PROTOCOLS.join(", ")) {
            r.headers_mut()
                .insert("x-accepted-stream-protocol-versions", v);
        }
        return r;
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => run(TokioIo::new(upgraded), proto, opts, session).await,
            Err(e) => tracing::debug!(error = %e, "exec: SPDY upgrade failed"),
        }
    });
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    if !proto.is_empty() {
        h.insert("x-stream-protocol-version", HeaderValue::from_static(proto));
    }
    r
}

/// Inflates the client's header blocks (one zlib stream over the connection).
pub(crate) struct HeaderInflater {
    d: Decompress,
    /// Bytes of the zlib header still to skip (2, plus 4 for the dictionary id).
    header_left: Option<usize>,
    /// Dictionary bytes still to drop from the output.
    discard: usize,
}

impl HeaderInflater {
    pub(crate) fn new() -> std::io::Result<Self> {
        let mut d = Decompress::new(false);
        // A stored block with the dictionary: afterwards the window holds what a preset
        // dictionary would.
        let len = DICTIONARY.len() as u16;
        let mut primer = vec![0u8];
        primer.extend_from_slice(&len.to_le_bytes());
        primer.extend_from_slice(&(!len).to_le_bytes());
        primer.extend_from_slice(DICTIONARY);
        let mut sink = Vec::with_capacity(DICTIONARY.len() + 16);
        d.decompress_vec(&primer, &mut sink, FlushDecompress::Sync)
            .map_err(std::io::Error::other)?;
        Ok(HeaderInflater {
            d,
            header_left: None,
            discard: DICTIONARY.len().saturating_sub(sink.len()),
        })
    }

    pub(crate) fn inflate(&mut self, mut input: &[u8]) -> std::io::Result<Vec<u8>> {
        // The zlib header of the first block: CMF, FLG (+ DICTID when FDICT).
        if self.header_left.is_none() {
            if input.len() < 2 {
                return Err(std::io::Error::other("short zlib header"));
            }
            self.header_left = Some(if input[1] & 0x20 != 0 { 6 } else { 2 });
        }
        if let Some(left) = self.header_left.as_mut()
            && *left > 0
        {
            let skip = (*left).min(input.len());
            input = &input[skip..];
            *left -= skip;
        }
        let mut out = Vec::with_capacity(1024);
        loop {
            if out.capacity() - out.len() < 1024 {
                out.reserve(4096);
            }
            let before = self.d.total_in();
            self.d
                .decompress_vec(input, &mut out, FlushDecompress::Sync)
                .map_err(std::io::Error::other)?;
            let used = (self.d.total_in() - before) as usize;
            input = &input[used..];
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
            if used == 0 && out.len() < out.capacity() {
                return Err(std::io::Error::other("header block does not inflate"));
            }
        }
        if self.discard > 0 {
            let n = self.discard.min(out.len());
            out.drain(..n);
            self.discard -= n;
        }
        Ok(out)
    }
}

/// Deflates our header blocks as stored blocks of one zlib stream.
#[derive(Default)]
pub(crate) struct HeaderDeflater {
    started: bool,
}

impl HeaderDeflater {
    pub(crate) fn deflate(&mut self, block: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(block.len() + 11);
        if !self.started {
            self.started = true;
            // CMF 0x78 (deflate, 32 KiB window), FLG 0xF9 (FDICT, check bits), DICTID.
            out.extend_from_slice(&[0x78, 0xF9]);
            out.extend_from_slice(&adler32(DICTIONARY).to_be_bytes());
        }
        for chunk in block.chunks(u16::MAX as usize) {
            let len = chunk.len() as u16;
            out.push(0); // BFINAL=0, BTYPE=00 (stored), padded to the byte.
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&(!len).to_le_bytes());
            out.extend_from_slice(chunk);
        }
        // The empty stored block of a sync flush: Go's inflater hands out a stored block's
        // bytes only when it sees this marker.
        out.extend_from_slice(&[0, 0, 0, 0xff, 0xff]);
        out
    }
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &x in data {
        a = (a + u32::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

/// Encodes a SPDY/3 name/value header block (uncompressed).
pub(crate) fn encode_headers(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&(pairs.len() as u32).to_be_bytes());
    for (k, val) in pairs {
        v.extend_from_slice(&(k.len() as u32).to_be_bytes());
        v.extend_from_slice(k.as_bytes());
        v.extend_from_slice(&(val.len() as u32).to_be_bytes());
        v.extend_from_slice(val.as_bytes());
    }
    v
}

/// Decodes an uncompressed header block (names lower-case; values may hold several
/// NUL-separated values, kept as they are).
pub(crate) fn decode_headers(b: &[u8]) -> Option<HashMap<String, String>> {
    let u32_at = |i: usize| -> Option<usize> {
        Some(u32::from_be_bytes(b.get(i..i + 4)?.try_into().ok()?) as usize)
    };
    let n = u32_at(0)?;
    let mut i = 4;
    let mut out = HashMap::new();
    for _ in 0..n {
        let kl = u32_at(i)?;
        let k = b.get(i + 4..i + 4 + kl)?;
        i += 4 + kl;
        let vl = u32_at(i)?;
        let v = b.get(i + 4..i + 4 + vl)?;
        i += 4 + vl;
        out.insert(
            String::from_utf8_lossy(k).to_ascii_lowercase(),
            String::from_utf8_lossy(v).into_owned(),
        );
    }
    Some(out)
}

pub(crate) fn control_frame(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + payload.len());
    f.extend_from_slice(&(0x8000u16 | 3).to_be_bytes());
    f.extend_from_slice(&kind.to_be_bytes());
    let len = payload.len() as u32;
    f.push(flags);
    f.extend_from_slice(&len.to_be_bytes()[1..]);
    f.extend_from_slice(payload);
    f
}

pub(crate) fn data_frame(stream: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + payload.len());
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.push(flags);
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(payload);
    f
}

/// One frame read from a SPDY connection.
pub(crate) enum Frame {
    Control {
        kind: u16,
        payload: Vec<u8>,
    },
    Data {
        stream: u32,
        flags: u8,
        payload: Vec<u8>,
    },
}

/// Reads the next frame; `None` at the end of the connection or on an oversize frame.
pub(crate) async fn read_frame<R: tokio::io::AsyncRead + Unpin>(rd: &mut R) -> Option<Frame> {
    let mut head = [0u8; 8];
    rd.read_exact(&mut head).await.ok()?;
    let flags = head[4];
    let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
    if len > MAX_FRAME {
        return None;
    }
    let mut payload = vec![0u8; len];
    rd.read_exact(&mut payload).await.ok()?;
    Some(if head[0] & 0x80 != 0 {
        Frame::Control {
            kind: u16::from_be_bytes([head[2], head[3]]),
            payload,
        }
    } else {
        Frame::Data {
            stream: u32::from_be_bytes([head[0], head[1], head[2], head[3]]) & 0x7fff_ffff,
            flags,
            payload,
        }
    })
}

/// Writes queued frames to `wr`, flushing whenever the queue runs dry (TLS buffers until
/// flushed); ends when every sender is gone.
pub(crate) fn spawn_writer<W>(mut wr: W) -> (mpsc::Sender<Vec<u8>>, tokio::task::JoinHandle<()>)
where
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(64);
    let task = tokio::spawn(async move {
        while let Some(f) = rx.recv().await {
            if wr.write_all(&f).await.is_err() {
                break;
            }
            if rx.is_empty() && wr.flush().await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    (tx, task)
}

/// The channels a session needs before it starts (upstream's `waitStreamReply` set).
fn expected(opts: &ExecOptions, proto: &str) -> Vec<&'static str> {
    let mut v = vec!["error"];
    if opts.stdin {
        v.push("stdin");
    }
    if opts.stdout {
        v.push("stdout");
    }
    if opts.stderr {
        v.push("stderr");
    }
    if opts.tty && matches!(proto, "v3.channel.k8s.io" | "v4.channel.k8s.io") {
        v.push("resize");
    }
    v
}

async fn run<S>(io: S, proto: &'static str, opts: ExecOptions, session: Result<ExecSession, String>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let (frames_tx, mut frames_rx) = mpsc::channel::<Vec<u8>>(64);
    let writer = tokio::spawn(async move {
        while let Some(f) = frames_rx.recv().await {
            if wr.write_all(&f).await.is_err() {
                break;
            }
            // TLS buffers until flushed; flush once the queue is drained.
            if frames_rx.is_empty() && wr.flush().await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    let (opened_tx, mut opened_rx) = mpsc::channel::<(String, u32)>(8);
    let (in_tx, in_rx) = mpsc::channel::<Inbound>(32);
    let frames = frames_tx.clone();
    let reader = tokio::spawn(async move {
        let mut inflater = match HeaderInflater::new() {
            Ok(i) => i,
            Err(_) => return,
        };
        let mut deflater = HeaderDeflater::default();
        let mut kinds: HashMap<u32, String> = HashMap::new();
        let mut resize_buf: Vec<u8> = Vec::new();
        let mut head = [0u8; 8];
        loop {
            if rd.read_exact(&mut head).await.is_err() {
                break;
            }
            let flags = head[4];
            let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
            if len > MAX_FRAME {
                break;
            }
            let mut payload = vec![0u8; len];
            if rd.read_exact(&mut payload).await.is_err() {
                break;
            }
            if head[0] & 0x80 != 0 {
                let kind = u16::from_be_bytes([head[2], head[3]]);
                match kind {
                    SYN_STREAM if payload.len() >= 10 => {
                        let id =
                            u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
                                & 0x7fff_ffff;
                        let headers = match inflater.inflate(&payload[10..]) {
                            Ok(h) => decode_headers(&h).unwrap_or_default(),
                            Err(e) => {
                                tracing::debug!(error = %e, "SPDY: bad header block");
                                break;
                            }
                        };
                        let kind = headers.get("streamtype").cloned().unwrap_or_default();
                        let mut reply = id.to_be_bytes().to_vec();
                        reply.extend(deflater.deflate(&encode_headers(&[])));
                        if frames
                            .send(control_frame(SYN_REPLY, 0, &reply))
                            .await
                            .is_err()
                        {
                            break;
                        }
                        if kind == "stdin" && flags & FLAG_FIN != 0 {
                            let _ = in_tx.send(Inbound::CloseStdin).await;
                        }
                        kinds.insert(id, kind.clone());
                        let _ = opened_tx.send((kind, id)).await;
                    }
                    PING => {
                        let _ = frames.send(control_frame(PING, 0, &payload)).await;
                    }
                    RST_STREAM if payload.len() >= 4 => {
                        let id =
                            u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
                                & 0x7fff_ffff;
                        if kinds.get(&id).map(String::as_str) == Some("stdin") {
                            let _ = in_tx.send(Inbound::CloseStdin).await;
                        }
                    }
                    GOAWAY => break,
                    // SETTINGS, WINDOW_UPDATE, HEADERS: nothing to do.
                    _ => {}
                }
            } else {
                let id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) & 0x7fff_ffff;
                match kinds.get(&id).map(String::as_str) {
                    Some("stdin") => {
                        if !payload.is_empty() {
                            let _ = in_tx.send(Inbound::Stdin(Bytes::from(payload))).await;
                        }
                        if flags & FLAG_FIN != 0 {
                            let _ = in_tx.send(Inbound::CloseStdin).await;
                        }
                    }
                    Some("resize") => {
                        resize_buf.extend_from_slice(&payload);
                        // Concatenated JSON objects; keep an incomplete tail for later.
                        let mut consumed = 0;
                        let mut it = serde_json::Deserializer::from_slice(&resize_buf)
                            .into_iter::<serde_json::Value>();
                        while let Some(Ok(v)) = it.next() {
                            consumed = it.byte_offset();
                            if let Some((w, h)) = parse_resize(v.to_string().as_bytes()) {
                                let _ = in_tx.send(Inbound::Resize(w, h)).await;
                            }
                        }
                        resize_buf.drain(..consumed);
                    }
                    _ => {}
                }
            }
        }
    });

    // Wait (like upstream, 30 s at most) for the streams the options call for.
    let want = expected(&opts, proto);
    let mut ids: HashMap<String, u32> = HashMap::new();
    let waited = tokio::time::timeout(Duration::from_secs(30), async {
        while !want.iter().all(|k| ids.contains_key(*k)) {
            match opened_rx.recv().await {
                Some((k, id)) => {
                    ids.insert(k, id);
                }
                None => return false,
            }
        }
        true
    })
    .await;
    if !matches!(waited, Ok(true)) {
        tracing::debug!("SPDY exec: the client did not create its streams");
        reader.abort();
        drop(frames_tx);
        let _ = writer.await;
        return;
    }
    let stream_of = |k: &str| ids.get(k).copied();
    let result = match session {
        Ok(session) => {
            let (out_tx, mut out_rx) = mpsc::channel::<(u8, Bytes)>(32);
            let pumping = tokio::spawn(pump(session, in_rx, out_tx));
            while let Some((channel, data)) = out_rx.recv().await {
                let id = match channel {
                    STDOUT => stream_of("stdout"),
                    STDERR => stream_of("stderr"),
                    _ => None,
                };
                if let Some(id) = id {
                    let _ = frames_tx.send(data_frame(id, 0, &data)).await;
                }
            }
            match pumping.await {
                Ok(r) => r,
                Err(e) => Err(e.to_string()),
            }
        }
        Err(e) => Err(e),
    };
    let status_json = proto == "v4.channel.k8s.io";
    if let Some(id) = stream_of("error")
        && let Some(status) = exit_status(status_json, &opts.command, &result)
    {
        let _ = frames_tx.send(data_frame(id, 0, &status)).await;
    }
    for k in ["stdout", "stderr", "error"] {
        if let Some(id) = stream_of(k) {
            let _ = frames_tx.send(data_frame(id, FLAG_FIN, &[])).await;
        }
    }
    // The client closes the connection once it has read everything.
    let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
    drop(frames_tx);
    let _ = writer.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_is_spdy3s() {
        assert_eq!(DICTIONARY.len(), 1423);
        assert_eq!(adler32(DICTIONARY), 0xe3c6_a7c2);
    }

    #[test]
    fn our_header_blocks_inflate_with_the_dictionary() -> std::io::Result<()> {
        let mut d = HeaderDeflater::default();
        let mut i = HeaderInflater::new()?;
        let a = encode_headers(&[("streamtype", "stdout")]);
        let b = encode_headers(&[]);
        assert_eq!(i.inflate(&d.deflate(&a))?, a);
        assert_eq!(i.inflate(&d.deflate(&b))?, b);
        let h = decode_headers(&a).expect("decodes");
        assert_eq!(h.get("streamtype").map(String::as_str), Some("stdout"));
        Ok(())
    }

    /// Blocks a real zlib made with the dictionary (sync flush after each, one stream),
    /// as Go's `compress/zlib` in kubectl does.
    #[test]
    fn zlib_blocks_with_the_dictionary_inflate() -> std::io::Result<()> {
        let a: &[u8] = &[
            0x78, 0xf9, 0xe3, 0xc6, 0xa7, 0xc2, 0x02, 0xa6, 0x23, 0x46, 0x70, 0x3a, 0x2b, 0x29,
            0x4a, 0x4d, 0xcc, 0x85, 0x16, 0x25, 0xac, 0xa9, 0xa0, 0x80, 0x06, 0x00, 0x00, 0x00,
            0xff, 0xff,
        ];
        let b: &[u8] = &[
            0x02, 0x65, 0x1c, 0x0c, 0x29, 0x60, 0x62, 0x4e, 0xc9, 0x07, 0x97, 0xd1, 0xac, 0xf9,
            0xc0, 0x64, 0x0f, 0x52, 0xc4, 0x58, 0x01, 0x00, 0x00, 0x00, 0xff, 0xff,
        ];
        let mut i = HeaderInflater::new()?;
        assert_eq!(i.inflate(a)?, encode_headers(&[("streamtype", "error")]));
        assert_eq!(
            i.inflate(b)?,
            encode_headers(&[("streamtype", "stdout"), ("other", "x")])
        );
        Ok(())
    }

    #[test]
    fn negotiation_and_expected_streams() {
        let mut h = http::HeaderMap::new();
        h.append(
            "x-stream-protocol-version",
            HeaderValue::from_static("v5.channel.k8s.io"),
        );
        h.append(
            "x-stream-protocol-version",
            HeaderValue::from_static("v4.channel.k8s.io"),
        );
        assert_eq!(negotiate(&h), Some("v4.channel.k8s.io"));
        assert_eq!(negotiate(&http::HeaderMap::new()), Some(""));
        let mut h = http::HeaderMap::new();
        h.append("x-stream-protocol-version", HeaderValue::from_static("v9"));
        assert_eq!(negotiate(&h), None);
        let o = ExecOptions {
            command: vec!["sh".into()],
            stdin: true,
            stdout: true,
            stderr: false,
            tty: true,
        };
        assert_eq!(
            expected(&o, "v4.channel.k8s.io"),
            ["error", "stdin", "stdout", "resize"]
        );
        assert_eq!(
            expected(&o, "v2.channel.k8s.io"),
            ["error", "stdin", "stdout"]
        );
    }
}
