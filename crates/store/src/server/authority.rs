//! Repair of the HTTP/2 `:authority` that etcd's Go clients send, on the client listener.
//!
//! grpc-go uses the dial target as `:authority`. etcdctl 3.4 dials every endpoint of its
//! per-endpoint maintenance calls (`endpoint status`, `endpoint hashkv`, `defrag`,
//! `snapshot save`) by its URL, so the requests carry `:authority: http://127.0.0.1:2379`;
//! the 3.5.0 client sends `#initially=[http://127.0.0.1:2379]`. Real etcd (grpc-go) takes
//! them; the `h2` crate refuses any `:authority` that is not a valid URI authority and
//! resets the stream with PROTOCOL_ERROR, and has no option to relax that (hyperium/h2#525).
//!
//! [`AuthorityFix`] wraps each accepted connection and rewrites the inbound byte stream
//! before hyper sees it. It passes everything through untouched except HTTP/2 header
//! blocks:
//! * A connection that does not start with the HTTP/2 prior-knowledge preface (HTTP/1.1
//!   `GET /metrics`, health checks) is passed through as is, from its first byte.
//! * Frames other than HEADERS (+ CONTINUATION) pass through in place: read straight into
//!   the caller's buffer, skipped by their length, never copied or allocated for.
//! * Each header block is decoded with an HPACK decoder that mirrors the client's encoder
//!   (dynamic table, size updates). While every `:authority` is valid the block is passed
//!   on byte for byte, so h2's decoder keeps the very table the client encoded against.
//! * The first invalid `:authority` switches the connection to re-encoding: from then on
//!   every block is re-encoded with static-table references and literals *without
//!   indexing* only, so h2's dynamic table never changes again and is never referenced —
//!   its content and size no longer matter. The invalid value is cut down to the authority
//!   it names (`http://127.0.0.1:2379` → `127.0.0.1:2379`, `#initially=[http://h:p]` →
//!   `h:p`), or the pseudo-header is dropped when nothing valid remains. The block goes out
//!   as one HEADERS frame (padding dropped, priority kept), split into CONTINUATION frames
//!   at the 16 KiB frame size every HTTP/2 peer accepts.
//! * Anything this cannot parse (bad HPACK, a header block interrupted by another frame,
//!   an oversized block, end of stream inside a frame) makes it hand over the buffered bytes
//!   unchanged and pass the rest of the connection through: h2 then reports the error
//!   itself, exactly as without the wrapper.
//!
//! The HPACK decoder is this module's own, not a crate's: the HPACK crates at hand
//! (`fluke-hpack`/`loona-hpack`, `hpack`, `httlib-hpack`) either panic on malformed input
//! (a truncated size update, a truncated integer) or rebuild a hash-map Huffman table for
//! every string (≈20 µs per Huffman literal), which this data path pays for every request
//! of every connection. Decoding here is a canonical-Huffman bit walk with no per-block
//! allocation; the tests check it against `loona-hpack` as an oracle.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::uri::Authority;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::Connected;

/// The client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;
const TYPE_HEADERS: u8 = 0x1;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// Largest frame payload we emit: the SETTINGS_MAX_FRAME_SIZE default, which every peer
/// accepts whatever it advertised.
const MAX_FRAME_PAYLOAD: usize = 16_384;
/// The SETTINGS_HEADER_TABLE_SIZE h2 runs with (its default; the server does not change
/// it): the most a client's HPACK encoder may size its dynamic table to.
const HEADER_TABLE_SIZE: usize = 4096;
/// A header block's frames are buffered up to this much; a longer block is handed over
/// untouched.
const MAX_BLOCK_BYTES: usize = 1 << 20;
/// Decoded header list size beyond which a block is handed over untouched.
const MAX_DECODED_BYTES: usize = 1 << 20;
/// The stash (bytes held back around a header block) reads this much at a time.
const STASH_CHUNK: usize = 8 * 1024;
/// A stash grown beyond this is freed once it empties.
const STASH_KEEP: usize = 64 * 1024;

/// Accepts client connections from `listener`, each with `TCP_NODELAY` set and wrapped
/// in an [`AuthorityFix`], ready for `tonic`'s `serve_with_incoming`.
pub fn client_incoming(
    listener: TcpListener,
) -> impl Stream<Item = io::Result<AuthorityFix<TcpStream>>> + Send + 'static {
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
        conn.map(|stream| {
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "could not set TCP_NODELAY on a client connection");
            }
            AuthorityFix::new(stream)
        })
    })
}

/// An accepted connection whose inbound HTTP/2 header blocks get a valid `:authority`
/// (see the module docs). Writes pass straight through.
pub struct AuthorityFix<T> {
    io: T,
    filter: Filter,
}

impl<T> AuthorityFix<T> {
    pub fn new(io: T) -> AuthorityFix<T> {
        AuthorityFix {
            io,
            filter: Filter::new(),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for AuthorityFix<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.filter.poll_read(&mut this.io, cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl<T: Connected> Connected for AuthorityFix<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

// ---------------------------------------------------------------------------------------
// Framing

/// Where the inbound stream is, for the bytes not yet classified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// This many bytes of the preface have matched so far.
    Preface(usize),
    /// At the start of a frame header.
    FrameStart,
    /// Inside a pass-through frame payload with this many bytes left.
    Payload(usize),
    /// Not HTTP/2, or given up on: everything passes through.
    Transparent,
}

impl State {
    /// Advances over the longest prefix of `data` that passes through unchanged and
    /// returns its length. It stops short of `data.len()` only at a frame start, where
    /// either the 9-byte frame header is incomplete or a HEADERS frame begins.
    fn scan(&mut self, data: &[u8]) -> usize {
        let mut i = 0;
        loop {
            match *self {
                State::Transparent => return data.len(),
                State::Preface(matched) => {
                    let n = (PREFACE.len() - matched).min(data.len() - i);
                    if data[i..i + n] != PREFACE[matched..matched + n] {
                        *self = State::Transparent;
                        return data.len();
                    }
                    i += n;
                    if matched + n < PREFACE.len() {
                        *self = State::Preface(matched + n);
                        return i;
                    }
                    *self = State::FrameStart;
                }
                State::Payload(left) => {
                    let n = left.min(data.len() - i);
                    i += n;
                    if n < left {
                        *self = State::Payload(left - n);
                        return i;
                    }
                    *self = State::FrameStart;
                }
                State::FrameStart => {
                    let Some(head) = data.get(i..i + FRAME_HEADER_LEN) else {
                        return i;
                    };
                    if head[3] == TYPE_HEADERS {
                        return i;
                    }
                    i += FRAME_HEADER_LEN;
                    *self = State::Payload(frame_len(head));
                }
            }
        }
    }
}

fn frame_len(head: &[u8]) -> usize {
    (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2])
}

fn stream_id(head: &[u8]) -> [u8; 4] {
    [head[5] & 0x7f, head[6], head[7], head[8]]
}

/// How much of `data` (starting at a HEADERS frame) the header block takes.
#[derive(Debug, PartialEq, Eq)]
enum Extent {
    NeedMore,
    Malformed,
    Complete(usize),
}

fn block_extent(data: &[u8]) -> Extent {
    let mut pos = 0;
    let mut sid = None;
    loop {
        let Some(head) = data.get(pos..pos + FRAME_HEADER_LEN) else {
            return Extent::NeedMore;
        };
        let id = stream_id(head);
        match sid {
            None if head[3] == TYPE_HEADERS && id != [0; 4] => sid = Some(id),
            Some(s) if head[3] == TYPE_CONTINUATION && id == s => {}
            _ => return Extent::Malformed,
        }
        let next = pos + FRAME_HEADER_LEN + frame_len(head);
        if next > MAX_BLOCK_BYTES {
            return Extent::Malformed;
        }
        if next > data.len() {
            return Extent::NeedMore;
        }
        if head[4] & FLAG_END_HEADERS != 0 {
            return Extent::Complete(next);
        }
        pos = next;
    }
}

/// Bytes held back from the caller: `[start, ready)` is ready to hand over,
/// `[ready, end)` not yet classified, `[end, buf.len())` free (initialised) space.
#[derive(Default)]
struct Stash {
    buf: Vec<u8>,
    start: usize,
    ready: usize,
    end: usize,
}

impl Stash {
    fn has_ready(&self) -> bool {
        self.start < self.ready
    }

    fn has_pending(&self) -> bool {
        self.ready < self.end
    }

    fn deliver(&mut self, dst: &mut ReadBuf<'_>) {
        let n = dst.remaining().min(self.ready - self.start);
        dst.put_slice(&self.buf[self.start..self.start + n]);
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.ready = 0;
            self.end = 0;
            if self.buf.len() > STASH_KEEP {
                self.buf = Vec::new();
            }
        }
    }

    /// Makes room for `n` more bytes after `end`.
    fn reserve(&mut self, n: usize) {
        if self.buf.len() - self.end >= n {
            return;
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.ready -= self.start;
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.end < n {
            let len = (self.end + n).max(self.buf.len() * 2).max(STASH_CHUNK);
            self.buf.resize(len, 0);
        }
    }

    fn push(&mut self, data: &[u8]) {
        self.reserve(data.len());
        self.buf[self.end..self.end + data.len()].copy_from_slice(data);
        self.end += data.len();
    }

    fn fill_from<T: AsyncRead + Unpin>(
        &mut self,
        io: &mut T,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        self.reserve(STASH_CHUNK);
        let mut rb = ReadBuf::new(&mut self.buf[self.end..]);
        ready!(Pin::new(io).poll_read(cx, &mut rb))?;
        let n = rb.filled().len();
        self.end += n;
        Poll::Ready(Ok(n))
    }

    /// Replaces `old` bytes at `at` (inside the pending part) with `new`.
    fn replace(&mut self, at: usize, old: usize, new: &[u8]) {
        let end = self.end - old + new.len();
        if end > self.buf.len() {
            self.buf.resize(end, 0);
        }
        self.buf.copy_within(at + old..self.end, at + new.len());
        self.buf[at..at + new.len()].copy_from_slice(new);
        self.end = end;
    }
}

enum Step {
    Progress,
    NeedMore,
}

/// The inbound transformation, apart from the IO it reads from.
struct Filter {
    state: State,
    stash: Stash,
    rewriter: Option<Box<Rewriter>>,
}

impl Filter {
    fn new() -> Filter {
        Filter {
            state: State::Preface(0),
            stash: Stash::default(),
            rewriter: None,
        }
    }

    fn poll_read<T: AsyncRead + Unpin>(
        &mut self,
        io: &mut T,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if self.stash.has_ready() {
                self.stash.deliver(buf);
                return Poll::Ready(Ok(()));
            }
            if self.stash.has_pending() {
                match self.process_stash() {
                    Step::Progress => continue,
                    Step::NeedMore => {
                        if ready!(self.stash.fill_from(io, cx))? == 0 {
                            // The stream ended inside a frame: hand it over as it is.
                            self.give_up();
                        }
                        continue;
                    }
                }
            }
            if self.state == State::Transparent {
                return Pin::new(io).poll_read(cx, buf);
            }
            // Fast path: read straight into the caller's buffer and keep the bytes that
            // pass through where they are.
            let before = buf.filled().len();
            ready!(Pin::new(&mut *io).poll_read(cx, buf))?;
            let after = buf.filled().len();
            if after == before {
                return Poll::Ready(Ok(()));
            }
            let keep = before + self.state.scan(&buf.filled()[before..]);
            if keep < after {
                self.stash.push(&buf.filled()[keep..]);
                buf.set_filled(keep);
            }
            if keep > before {
                return Poll::Ready(Ok(()));
            }
        }
    }

    /// Classifies pending stash bytes: passes frames through, transforms a complete
    /// header block, or asks for more input.
    fn process_stash(&mut self) -> Step {
        let stash = &mut self.stash;
        let pass = self.state.scan(&stash.buf[stash.ready..stash.end]);
        stash.ready += pass;
        if pass > 0 || !stash.has_pending() {
            return Step::Progress;
        }
        // At a frame start: an incomplete frame header or a HEADERS frame.
        let at = stash.ready;
        let len = match block_extent(&stash.buf[at..stash.end]) {
            Extent::NeedMore => return Step::NeedMore,
            Extent::Malformed => {
                self.give_up();
                return Step::Progress;
            }
            Extent::Complete(len) => len,
        };
        let rewriter = self
            .rewriter
            .get_or_insert_with(|| Box::new(Rewriter::new()));
        match rewriter.transform(&stash.buf[at..at + len]) {
            Ok(None) => stash.ready += len,
            Ok(Some(frames)) => {
                stash.replace(at, len, frames);
                stash.ready += frames.len();
            }
            Err(Malformed) => self.give_up(),
        }
        Step::Progress
    }

    /// Hands over everything buffered unchanged and passes the rest of the connection
    /// through.
    fn give_up(&mut self) {
        self.state = State::Transparent;
        self.stash.ready = self.stash.end;
        self.rewriter = None;
    }
}

// ---------------------------------------------------------------------------------------
// Header blocks

/// A header block this module cannot take apart; it is then passed on untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Malformed;

/// Per-connection HPACK state and scratch buffers.
struct Rewriter {
    decoder: Decoder,
    fields: HeaderList,
    /// The fragments of a block that spans CONTINUATION frames, joined.
    joined: Vec<u8>,
    encoded: Vec<u8>,
    frames: Vec<u8>,
    /// Set once a block had to be rewritten: every later block is re-encoded too.
    reencode: bool,
    /// The last `:authority` value found valid.
    known_good: Vec<u8>,
}

impl Rewriter {
    fn new() -> Rewriter {
        Rewriter {
            decoder: Decoder::new(HEADER_TABLE_SIZE),
            fields: HeaderList::default(),
            joined: Vec::new(),
            encoded: Vec::new(),
            frames: Vec::new(),
            reencode: false,
            known_good: Vec::new(),
        }
    }

    /// Takes a complete header block (a HEADERS frame and its CONTINUATION frames) and
    /// returns the frames to send instead, or `None` to send it unchanged.
    fn transform(&mut self, block: &[u8]) -> Result<Option<&[u8]>, Malformed> {
        let head = block.get(..FRAME_HEADER_LEN).ok_or(Malformed)?;
        let flags = head[4];
        let sid = [head[5], head[6], head[7], head[8]];
        let first_end = FRAME_HEADER_LEN + frame_len(head);
        let payload = block.get(FRAME_HEADER_LEN..first_end).ok_or(Malformed)?;
        let (mut start, mut end) = (0, payload.len());
        if flags & FLAG_PADDED != 0 {
            let pad = *payload.first().ok_or(Malformed)?;
            start = 1;
            end = end.checked_sub(usize::from(pad)).ok_or(Malformed)?;
        }
        let priority = if flags & FLAG_PRIORITY != 0 {
            let p: [u8; 5] = payload
                .get(start..start + 5)
                .and_then(|p| p.try_into().ok())
                .ok_or(Malformed)?;
            start += 5;
            Some(p)
        } else {
            None
        };
        let first = payload.get(start..end).ok_or(Malformed)?;
        let fragment: &[u8] = if first_end == block.len() {
            first
        } else {
            self.joined.clear();
            self.joined.extend_from_slice(first);
            let mut pos = first_end;
            while pos < block.len() {
                let head = block.get(pos..pos + FRAME_HEADER_LEN).ok_or(Malformed)?;
                let next = pos + FRAME_HEADER_LEN + frame_len(head);
                let part = block.get(pos + FRAME_HEADER_LEN..next).ok_or(Malformed)?;
                self.joined.extend_from_slice(part);
                pos = next;
            }
            &self.joined
        };
        self.decoder.decode(fragment, &mut self.fields)?;

        if !self.reencode {
            let bad = self.fields.iter().any(|(name, value, _)| {
                name == b":authority" && !authority_ok(&mut self.known_good, value)
            });
            if !bad {
                return Ok(None);
            }
            self.reencode = true;
        }

        self.encoded.clear();
        for (name, value, never) in self.fields.iter() {
            if name == b":authority" && !authority_ok(&mut self.known_good, value) {
                let fixed = repair_authority(value);
                tracing::trace!(
                    from = %String::from_utf8_lossy(value),
                    to = %String::from_utf8_lossy(fixed.unwrap_or(b"")),
                    "rewrote an invalid :authority"
                );
                if let Some(fixed) = fixed {
                    encode_field(&mut self.encoded, name, fixed, never);
                }
                continue;
            }
            encode_field(&mut self.encoded, name, value, never);
        }
        write_frames(
            &mut self.frames,
            sid,
            flags & FLAG_END_STREAM,
            priority,
            &self.encoded,
        );
        Ok(Some(&self.frames))
    }
}

/// Whether h2 takes `value` as `:authority` (it parses it as an [`Authority`]); the last
/// valid value is remembered so that steady traffic does not re-parse it.
fn authority_ok(known_good: &mut Vec<u8>, value: &[u8]) -> bool {
    if !value.is_empty() && known_good.as_slice() == value {
        return true;
    }
    if Authority::try_from(value).is_ok() {
        known_good.clear();
        known_good.extend_from_slice(value);
        return true;
    }
    false
}

/// The authority an invalid `:authority` names: what follows the first `scheme://`, up
/// to the first character that cannot be part of an authority (`/`, `]`, a space, …),
/// keeping a bracketed IPv6 host. `None` when that is not a valid authority either.
fn repair_authority(value: &[u8]) -> Option<&[u8]> {
    let mut s = value;
    if let Some(p) = s.windows(3).position(|w| w == b"://") {
        s = &s[p + 3..];
    }
    while let [b'/', rest @ ..] = s {
        s = rest;
    }
    let end = if s.first() == Some(&b'[') {
        let close = s.iter().position(|&c| c == b']')?;
        let mut e = close + 1;
        if s.get(e) == Some(&b':') {
            e += 1;
            while s.get(e).is_some_and(u8::is_ascii_digit) {
                e += 1;
            }
        }
        e
    } else {
        s.iter()
            .position(|&c| !is_authority_char(c))
            .unwrap_or(s.len())
    };
    let s = &s[..end];
    (!s.is_empty() && Authority::try_from(s).is_ok()).then_some(s)
}

fn is_authority_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-._~%!$&'()*+=:@".contains(&c)
}

fn write_frames(
    dst: &mut Vec<u8>,
    sid: [u8; 4],
    end_stream: u8,
    priority: Option<[u8; 5]>,
    block: &[u8],
) {
    dst.clear();
    let prio_len = if priority.is_some() { 5 } else { 0 };
    let (first, mut rest) = block.split_at(block.len().min(MAX_FRAME_PAYLOAD - prio_len));
    let mut flags = end_stream;
    if priority.is_some() {
        flags |= FLAG_PRIORITY;
    }
    if rest.is_empty() {
        flags |= FLAG_END_HEADERS;
    }
    push_frame_header(dst, first.len() + prio_len, TYPE_HEADERS, flags, sid);
    if let Some(p) = priority {
        dst.extend_from_slice(&p);
    }
    dst.extend_from_slice(first);
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(rest.len().min(MAX_FRAME_PAYLOAD));
        rest = tail;
        let flags = if rest.is_empty() { FLAG_END_HEADERS } else { 0 };
        push_frame_header(dst, chunk.len(), TYPE_CONTINUATION, flags, sid);
        dst.extend_from_slice(chunk);
    }
}

fn push_frame_header(dst: &mut Vec<u8>, len: usize, ty: u8, flags: u8, sid: [u8; 4]) {
    dst.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, ty, flags]);
    dst.extend_from_slice(&sid);
}

// ---------------------------------------------------------------------------------------
// HPACK (RFC 7541)

/// A decoded header list: each field's name and value stored back to back in `bytes`.
#[derive(Default)]
struct HeaderList {
    bytes: Vec<u8>,
    /// (start of name, start of value, end of value, never indexed)
    fields: Vec<(usize, usize, usize, bool)>,
}

impl HeaderList {
    fn clear(&mut self) {
        self.bytes.clear();
        self.fields.clear();
    }

    fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8], bool)> + '_ {
        self.fields.iter().map(|&(start, mid, end, never)| {
            (&self.bytes[start..mid], &self.bytes[mid..end], never)
        })
    }
}

/// One dynamic table entry: name and value back to back.
struct Entry {
    bytes: Box<[u8]>,
    name_len: usize,
}

/// An HPACK decoder.
struct Decoder {
    /// Newest first.
    entries: VecDeque<Entry>,
    /// Sum of the entry sizes (RFC 7541 §4.1: name + value + 32).
    size: usize,
    /// The size the encoder set with its last size update.
    max_size: usize,
    /// The most a size update may ask for (SETTINGS_HEADER_TABLE_SIZE).
    limit: usize,
}

impl Decoder {
    fn new(limit: usize) -> Decoder {
        Decoder {
            entries: VecDeque::new(),
            size: 0,
            max_size: limit,
            limit,
        }
    }

    fn entry(&self, index: usize) -> Result<(&[u8], &[u8]), Malformed> {
        if index == 0 {
            return Err(Malformed);
        }
        if let Some(&(name, value)) = STATIC_TABLE.get(index - 1) {
            return Ok((name, value));
        }
        let e = self
            .entries
            .get(index - 1 - STATIC_TABLE.len())
            .ok_or(Malformed)?;
        Ok(e.bytes.split_at(e.name_len))
    }

    /// Decodes one header block into `out`, updating the dynamic table.
    fn decode(&mut self, block: &[u8], out: &mut HeaderList) -> Result<(), Malformed> {
        out.clear();
        let mut i = 0;
        let mut at_start = true;
        while let Some(&b) = block.get(i) {
            let rest = &block[i..];
            if b & 0x80 != 0 {
                // Indexed field.
                let (index, n) = decode_integer(rest, 7)?;
                i += n;
                let (name, value) = self.entry(index)?;
                let start = out.bytes.len();
                out.bytes.extend_from_slice(name);
                let mid = out.bytes.len();
                out.bytes.extend_from_slice(value);
                out.fields.push((start, mid, out.bytes.len(), false));
            } else if b & 0xe0 == 0x20 {
                // Dynamic table size update: only at the start of a block.
                if !at_start {
                    return Err(Malformed);
                }
                let (size, n) = decode_integer(rest, 5)?;
                i += n;
                if size > self.limit {
                    return Err(Malformed);
                }
                self.max_size = size;
                self.evict(0);
                continue;
            } else {
                // Literal: with incremental indexing (01), without indexing (0000) or
                // never indexed (0001).
                let indexing = b & 0x40 != 0;
                let never = !indexing && b & 0x10 != 0;
                let (index, n) = decode_integer(rest, if indexing { 6 } else { 4 })?;
                i += n;
                let start = out.bytes.len();
                if index == 0 {
                    i += decode_string(&block[i..], &mut out.bytes)?;
                } else {
                    out.bytes.extend_from_slice(self.entry(index)?.0);
                }
                let mid = out.bytes.len();
                i += decode_string(&block[i..], &mut out.bytes)?;
                let end = out.bytes.len();
                out.fields.push((start, mid, end, never));
                if indexing {
                    self.insert(&out.bytes[start..mid], &out.bytes[mid..end]);
                }
            }
            if out.bytes.len() > MAX_DECODED_BYTES {
                return Err(Malformed);
            }
            at_start = false;
        }
        Ok(())
    }

    fn insert(&mut self, name: &[u8], value: &[u8]) {
        let size = name.len() + value.len() + 32;
        if size > self.max_size {
            self.entries.clear();
            self.size = 0;
            return;
        }
        self.evict(size);
        let mut bytes = Vec::with_capacity(name.len() + value.len());
        bytes.extend_from_slice(name);
        bytes.extend_from_slice(value);
        self.entries.push_front(Entry {
            bytes: bytes.into_boxed_slice(),
            name_len: name.len(),
        });
        self.size += size;
    }

    /// Evicts the oldest entries until `room` more bytes fit.
    fn evict(&mut self, room: usize) {
        while self.size + room > self.max_size {
            match self.entries.pop_back() {
                Some(e) => self.size -= e.bytes.len() + 32,
                None => {
                    self.size = 0;
                    return;
                }
            }
        }
    }
}

/// Decodes an integer with an N-bit prefix; returns it and the bytes it took. At most four
/// continuation bytes (values below 2^28), like the common decoders.
fn decode_integer(buf: &[u8], prefix: u8) -> Result<(usize, usize), Malformed> {
    let mask = (1usize << prefix) - 1;
    let mut value = usize::from(*buf.first().ok_or(Malformed)?) & mask;
    if value < mask {
        return Ok((value, 1));
    }
    for (k, &b) in buf.iter().enumerate().skip(1).take(4) {
        value += usize::from(b & 0x7f) << (7 * (k - 1));
        if b & 0x80 == 0 {
            return Ok((value, k + 1));
        }
    }
    Err(Malformed)
}

/// Decodes a string literal, appending it to `dst`; returns the bytes it took.
fn decode_string(buf: &[u8], dst: &mut Vec<u8>) -> Result<usize, Malformed> {
    let huffman = *buf.first().ok_or(Malformed)? & 0x80 != 0;
    let (len, n) = decode_integer(buf, 7)?;
    let raw = buf.get(n..n + len).ok_or(Malformed)?;
    if huffman {
        huffman_decode(raw, dst)?;
    } else {
        dst.extend_from_slice(raw);
    }
    Ok(n + len)
}

fn encode_integer(dst: &mut Vec<u8>, value: usize, prefix: u8, flags: u8) {
    let mask = (1usize << prefix) - 1;
    if value < mask {
        dst.push(flags | value as u8);
        return;
    }
    dst.push(flags | mask as u8);
    let mut rest = value - mask;
    while rest >= 0x80 {
        dst.push(0x80 | (rest & 0x7f) as u8);
        rest >>= 7;
    }
    dst.push(rest as u8);
}

fn encode_string(dst: &mut Vec<u8>, s: &[u8]) {
    encode_integer(dst, s.len(), 7, 0);
    dst.extend_from_slice(s);
}

/// Encodes a field without touching the decoder's dynamic table: a static-table
/// reference when the whole field is there, else a literal without indexing (never
/// indexed, when it came so) with the name from the static table when it is there.
fn encode_field(dst: &mut Vec<u8>, name: &[u8], value: &[u8], never: bool) {
    let mut name_index = 0;
    for (i, &(n, v)) in STATIC_TABLE.iter().enumerate() {
        if n == name {
            if !never && v == value {
                encode_integer(dst, i + 1, 7, 0x80);
                return;
            }
            if name_index == 0 {
                name_index = i + 1;
            }
        }
    }
    encode_integer(dst, name_index, 4, if never { 0x10 } else { 0 });
    if name_index == 0 {
        encode_string(dst, name);
    }
    encode_string(dst, value);
}

/// RFC 7541 Appendix A.
static STATIC_TABLE: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// Code lengths of the HPACK Huffman code (RFC 7541 Appendix B), symbols 0–255 and EOS.
/// The code is canonical: codes of one length are consecutive, in symbol order, and each
/// length's codes follow the shorter ones' — so the lengths define it.
const HUFFMAN_LENS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, //
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, //
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, //
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, //
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, //
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, //
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, //
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, //
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, //
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, //
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, //
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, //
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, //
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, //
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, //
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, //
    30,
];

const EOS: u16 = 256;

/// Canonical decoding tables: for each code length, the first code, how many codes have
/// it, and where their symbols start in `symbols` (sorted by length, then symbol).
struct Canonical {
    first: [u32; 31],
    count: [u32; 31],
    base: [u32; 31],
    symbols: [u16; 257],
}

static HUFFMAN: Canonical = canonical();

const fn canonical() -> Canonical {
    let mut count = [0u32; 31];
    let mut s = 0;
    while s < 257 {
        count[HUFFMAN_LENS[s] as usize] += 1;
        s += 1;
    }
    let mut first = [0u32; 31];
    let mut base = [0u32; 31];
    let mut symbols = [0u16; 257];
    let (mut code, mut k) = (0u32, 0usize);
    let mut len = 1;
    while len <= 30 {
        first[len] = code;
        base[len] = k as u32;
        code = (code + count[len]) << 1;
        let mut s = 0;
        while s < 257 {
            if HUFFMAN_LENS[s] as usize == len {
                symbols[k] = s as u16;
                k += 1;
            }
            s += 1;
        }
        len += 1;
    }
    Canonical {
        first,
        count,
        base,
        symbols,
    }
}

/// Decodes a Huffman-coded string, appending it to `dst`. Rejects EOS inside the string
/// and padding that is longer than 7 bits or not a prefix of EOS (RFC 7541 §5.2).
fn huffman_decode(src: &[u8], dst: &mut Vec<u8>) -> Result<(), Malformed> {
    let h = &HUFFMAN;
    let (mut code, mut len) = (0u32, 0usize);
    for &byte in src {
        for shift in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> shift) & 1);
            len += 1;
            let offset = code.wrapping_sub(h.first[len]);
            if offset < h.count[len] {
                let symbol = h.symbols[(h.base[len] + offset) as usize];
                if symbol == EOS {
                    return Err(Malformed);
                }
                dst.push(symbol as u8);
                code = 0;
                len = 0;
            } else if len == 30 {
                return Err(Malformed);
            }
        }
    }
    if len > 7 || code != (1 << len) - 1 {
        return Err(Malformed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    // ---- test helpers -----------------------------------------------------------------

    /// A tiny deterministic PRNG (xorshift64*).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn chance(&mut self, percent: usize) -> bool {
            self.below(100) < percent
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    /// The HPACK Huffman codes, rebuilt from the canonical tables: (code, length).
    fn huffman_codes() -> Vec<(u32, u32)> {
        let h = &HUFFMAN;
        let mut codes = vec![(0, 0); 257];
        for len in 1..=30usize {
            for k in 0..h.count[len] {
                let symbol = h.symbols[(h.base[len] + k) as usize];
                codes[usize::from(symbol)] = (h.first[len] + k, len as u32);
            }
        }
        codes
    }

    fn huffman_encode(s: &[u8]) -> Vec<u8> {
        let codes = huffman_codes();
        let (mut acc, mut bits, mut out) = (0u64, 0u32, Vec::new());
        for &c in s {
            let (code, len) = codes[usize::from(c)];
            acc = (acc << len) | u64::from(code);
            bits += len;
            while bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
            }
        }
        if bits > 0 {
            let pad = 8 - bits;
            out.push(((acc << pad) | ((1 << pad) - 1)) as u8);
        }
        out
    }

    fn string(dst: &mut Vec<u8>, s: &[u8], huffman: bool) {
        if huffman {
            let h = huffman_encode(s);
            encode_integer(dst, h.len(), 7, 0x80);
            dst.extend_from_slice(&h);
        } else {
            encode_string(dst, s);
        }
    }

    /// A client-side HPACK encoder the way grpc-go and h2 do it: indexes every field
    /// (incremental indexing), refers to earlier ones, Huffman when it is shorter.
    struct ClientEncoder {
        table: VecDeque<(Vec<u8>, Vec<u8>)>,
        size: usize,
        max: usize,
        pending_update: Option<usize>,
    }

    impl ClientEncoder {
        fn new() -> ClientEncoder {
            ClientEncoder {
                table: VecDeque::new(),
                size: 0,
                max: 4096,
                pending_update: None,
            }
        }

        fn resize(&mut self, max: usize) {
            self.max = max;
            self.pending_update = Some(max);
            self.evict(0);
        }

        fn evict(&mut self, room: usize) {
            while self.size + room > self.max {
                match self.table.pop_back() {
                    Some((n, v)) => self.size -= n.len() + v.len() + 32,
                    None => break,
                }
            }
        }

        fn encode(&mut self, headers: &[(&[u8], &[u8])]) -> Vec<u8> {
            let mut out = Vec::new();
            if let Some(size) = self.pending_update.take() {
                encode_integer(&mut out, size, 5, 0x20);
            }
            for &(name, value) in headers {
                let full = STATIC_TABLE
                    .iter()
                    .map(|&(n, v)| (n, v))
                    .chain(self.table.iter().map(|(n, v)| (&n[..], &v[..])))
                    .position(|(n, v)| n == name && v == value);
                if let Some(i) = full {
                    encode_integer(&mut out, i + 1, 7, 0x80);
                    continue;
                }
                let name_index = STATIC_TABLE
                    .iter()
                    .map(|&(n, _)| n)
                    .chain(self.table.iter().map(|(n, _)| &n[..]))
                    .position(|n| n == name)
                    .map_or(0, |i| i + 1);
                encode_integer(&mut out, name_index, 6, 0x40);
                if name_index == 0 {
                    string(&mut out, name, huffman_encode(name).len() < name.len());
                }
                string(&mut out, value, huffman_encode(value).len() < value.len());
                let size = name.len() + value.len() + 32;
                if size > self.max {
                    self.table.clear();
                    self.size = 0;
                } else {
                    self.evict(size);
                    self.table.push_front((name.to_vec(), value.to_vec()));
                    self.size += size;
                }
            }
            out
        }
    }

    fn frame(ty: u8, flags: u8, sid: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        push_frame_header(&mut out, payload.len(), ty, flags, sid.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn headers_frame(sid: u32, end_stream: bool, block: &[u8]) -> Vec<u8> {
        let flags = FLAG_END_HEADERS | if end_stream { FLAG_END_STREAM } else { 0 };
        frame(TYPE_HEADERS, flags, sid, block)
    }

    fn settings() -> Vec<u8> {
        frame(0x4, 0, 0, &[0, 3, 0, 0, 0, 100, 0, 4, 0, 1, 0, 0])
    }

    fn request_headers<'a>(authority: &'a [u8], path: &'a [u8]) -> Vec<(&'a [u8], &'a [u8])> {
        let headers: [(&[u8], &[u8]); 8] = [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", path),
            (b":authority", authority),
            (b"content-type", b"application/grpc"),
            (b"user-agent", b"grpc-go/1.26.0"),
            (b"te", b"trailers"),
            (b"grpc-timeout", b"4999m"),
        ];
        headers.to_vec()
    }

    type Fields = Vec<(Vec<u8>, Vec<u8>)>;

    fn owned(headers: &[(&[u8], &[u8])]) -> Fields {
        headers
            .iter()
            .map(|(n, v)| (n.to_vec(), v.to_vec()))
            .collect()
    }

    /// A frame as it arrived: type, flags, stream id, payload.
    type Frame = (u8, u8, u32, Vec<u8>);

    fn parse_frames(bytes: &[u8]) -> Vec<Frame> {
        assert_eq!(&bytes[..24], PREFACE, "preface");
        let mut out = Vec::new();
        let mut pos = 24;
        while pos < bytes.len() {
            let head = &bytes[pos..pos + 9];
            let len = frame_len(head);
            assert!(len <= MAX_FRAME_PAYLOAD, "frame of {len} bytes");
            let sid = u32::from_be_bytes(stream_id(head));
            out.push((
                head[3],
                head[4],
                sid,
                bytes[pos + 9..pos + 9 + len].to_vec(),
            ));
            pos += 9 + len;
        }
        assert_eq!(pos, bytes.len(), "frames end at the end");
        out
    }

    /// Decodes every header block of `frames` with an independent decoder standing in for
    /// h2's; also returns every non-header frame.
    fn server_view(frames: &[Frame]) -> (Vec<Fields>, Vec<Frame>) {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(HEADER_TABLE_SIZE);
        let (mut blocks, mut others, mut block) = (Vec::new(), Vec::new(), Vec::new());
        for (ty, flags, sid, payload) in frames {
            match *ty {
                TYPE_HEADERS => {
                    let mut p = &payload[..];
                    if flags & FLAG_PADDED != 0 {
                        let pad = usize::from(p[0]);
                        p = &p[1..p.len() - pad];
                    }
                    if flags & FLAG_PRIORITY != 0 {
                        p = &p[5..];
                    }
                    block = p.to_vec();
                }
                TYPE_CONTINUATION => block.extend_from_slice(payload),
                _ => {
                    others.push((*ty, *flags, *sid, payload.clone()));
                    continue;
                }
            }
            if flags & FLAG_END_HEADERS != 0 {
                blocks.push(decoder.decode(&block).expect("server-side decode"));
            }
        }
        (blocks, others)
    }

    /// Serves `chunks` one read at a time, pending before every other read.
    struct Chunks {
        chunks: VecDeque<Vec<u8>>,
        pend: bool,
    }

    impl AsyncRead for Chunks {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            this.pend = !this.pend;
            if this.pend {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if let Some(chunk) = this.chunks.front_mut() {
                let n = chunk.len().min(buf.remaining());
                buf.put_slice(&chunk[..n]);
                chunk.drain(..n);
                if chunk.is_empty() {
                    this.chunks.pop_front();
                }
            }
            Poll::Ready(Ok(()))
        }
    }

    /// Feeds `input` through the adapter in reads of `chunk` bytes (0: all at once) and
    /// reads the result with a buffer of `read_buf` bytes.
    async fn run_with(input: &[u8], chunk: usize, read_buf: usize) -> Vec<u8> {
        let chunks = if chunk == 0 {
            VecDeque::from([input.to_vec()])
        } else {
            input.chunks(chunk).map(<[u8]>::to_vec).collect()
        };
        let mut fix = AuthorityFix::new(Chunks {
            chunks,
            pend: false,
        });
        let mut out = Vec::new();
        let mut buf = vec![0; read_buf];
        loop {
            let n = fix.read(&mut buf).await.expect("read");
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    async fn run(input: &[u8]) -> Vec<u8> {
        let whole = run_with(input, 0, 64 * 1024).await;
        for (chunk, read_buf) in [(1, 7), (5, 3), (9, 4096), (100, 33), (4096, 100_000)] {
            assert_eq!(
                run_with(input, chunk, read_buf).await,
                whole,
                "chunk {chunk}, read buffer {read_buf}"
            );
        }
        whole
    }

    // ---- HPACK ------------------------------------------------------------------------

    #[test]
    fn huffman_matches_rfc_examples() {
        let cases: [(&[u8], &[u8]); 4] = [
            (
                b"www.example.com",
                &[
                    0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff,
                ],
            ),
            (b"no-cache", &[0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf]),
            (
                b"custom-key",
                &[0x25, 0xa8, 0x49, 0xe9, 0x5b, 0xa9, 0x7d, 0x7f],
            ),
            (
                b"custom-value",
                &[0x25, 0xa8, 0x49, 0xe9, 0x5b, 0xb8, 0xe8, 0xb4, 0xbf],
            ),
        ];
        for (plain, coded) in cases {
            assert_eq!(huffman_encode(plain), coded);
            let mut out = Vec::new();
            huffman_decode(coded, &mut out).expect("decode");
            assert_eq!(out, plain);
        }
    }

    #[test]
    fn huffman_round_trips_every_byte_and_agrees_with_loona() {
        let all: Vec<u8> = (0..=255).collect();
        let mut out = Vec::new();
        huffman_decode(&huffman_encode(&all), &mut out).expect("decode");
        assert_eq!(out, all);
        let mut rng = Rng(7);
        for _ in 0..500 {
            let n = rng.below(60);
            let s = rng.bytes(n);
            let coded = huffman_encode(&s);
            let mut mine = Vec::new();
            huffman_decode(&coded, &mut mine).expect("decode");
            assert_eq!(mine, s);
            let theirs = loona_hpack::huffman::HuffmanDecoder::new()
                .decode(&coded)
                .expect("loona decode");
            assert_eq!(theirs, s);
        }
    }

    #[test]
    fn huffman_rejects_bad_padding_and_eos() {
        let mut out = Vec::new();
        // 'a' (00011) padded with zeros instead of EOS ones.
        assert_eq!(huffman_decode(&[0x18], &mut out), Err(Malformed));
        // A full byte of padding.
        assert_eq!(huffman_decode(&[0x1f, 0xff], &mut out), Err(Malformed));
        // EOS itself.
        assert_eq!(
            huffman_decode(&[0xff, 0xff, 0xff, 0xff], &mut out),
            Err(Malformed)
        );
        assert!(huffman_decode(&[], &mut out).is_ok());
    }

    #[test]
    fn static_table_matches_loona() {
        let mut loona = loona_hpack::Decoder::new();
        for (i, &(name, value)) in STATIC_TABLE.iter().enumerate() {
            let got = loona.decode(&[0x80 | (i as u8 + 1)]).expect("decode");
            assert_eq!(
                got,
                vec![(name.to_vec(), value.to_vec())],
                "index {}",
                i + 1
            );
        }
    }

    fn decoded(d: &mut Decoder, block: &[u8]) -> Result<Fields, Malformed> {
        let mut list = HeaderList::default();
        d.decode(block, &mut list)?;
        Ok(list
            .iter()
            .map(|(n, v, _)| (n.to_vec(), v.to_vec()))
            .collect())
    }

    #[test]
    fn decodes_rfc_request_examples_with_huffman() {
        // RFC 7541 C.4.1–C.4.3.
        let mut d = Decoder::new(4096);
        let b1 = [
            0x82, 0x86, 0x84, 0x41, 0x8c, 0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab,
            0x90, 0xf4, 0xff,
        ];
        let b2 = [
            0x82, 0x86, 0x84, 0xbe, 0x58, 0x86, 0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf,
        ];
        let b3 = [
            0x82, 0x87, 0x85, 0xbf, 0x40, 0x88, 0x25, 0xa8, 0x49, 0xe9, 0x5b, 0xa9, 0x7d, 0x7f,
            0x89, 0x25, 0xa8, 0x49, 0xe9, 0x5b, 0xb8, 0xe8, 0xb4, 0xbf,
        ];
        let base: [(&[u8], &[u8]); 4] = [
            (b":method", b"GET"),
            (b":scheme", b"http"),
            (b":path", b"/"),
            (b":authority", b"www.example.com"),
        ];
        assert_eq!(decoded(&mut d, &b1), Ok(owned(&base)));
        let mut second = base.to_vec();
        second.push((b"cache-control", b"no-cache"));
        assert_eq!(decoded(&mut d, &b2), Ok(owned(&second)));
        let third: [(&[u8], &[u8]); 5] = [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b":path", b"/index.html"),
            (b":authority", b"www.example.com"),
            (b"custom-key", b"custom-value"),
        ];
        assert_eq!(decoded(&mut d, &b3), Ok(owned(&third)));
        assert_eq!(d.size, 164);
    }

    /// Random valid header blocks (every representation, Huffman or not, size updates,
    /// evictions) decode exactly as `loona-hpack` decodes them.
    #[test]
    fn decoder_agrees_with_loona_on_random_blocks() {
        let mut rng = Rng(0x5eed);
        let names: [&[u8]; 6] = [b"a", b"grpc-timeout", b"x-key", b"te", b":path", b"k"];
        for round in 0..200 {
            let mut mine = Decoder::new(4096);
            let mut loona = loona_hpack::Decoder::new();
            loona.set_max_allowed_table_size(4096);
            // Our model of the table length, to pick mostly valid indices.
            let mut model: VecDeque<usize> = VecDeque::new();
            let (mut model_size, mut model_max) = (0usize, 4096usize);
            for _ in 0..30 {
                let mut block = Vec::new();
                if rng.chance(10) {
                    model_max = [0, 64, 200, 1000, 4096][rng.below(5)];
                    encode_integer(&mut block, model_max, 5, 0x20);
                    while model_size > model_max {
                        model_size -= model.pop_back().unwrap_or(model_size);
                    }
                }
                for _ in 0..1 + rng.below(8) {
                    let table_len = STATIC_TABLE.len() + model.len();
                    let kind = rng.below(4);
                    if kind == 0 {
                        encode_integer(&mut block, 1 + rng.below(table_len), 7, 0x80);
                        continue;
                    }
                    let (prefix, flags) = [(6, 0x40), (4, 0x00), (4, 0x10)][kind - 1];
                    let name: Vec<u8> = if rng.chance(50) {
                        let i = 1 + rng.below(table_len);
                        encode_integer(&mut block, i, prefix, flags);
                        let probe = loona_probe(&mut loona, i);
                        probe.unwrap_or_default()
                    } else {
                        encode_integer(&mut block, 0, prefix, flags);
                        let n = names[rng.below(names.len())].to_vec();
                        string(&mut block, &n, rng.chance(50));
                        n
                    };
                    let len = [0, 3, 10, 40, 200, 5000][rng.below(6)];
                    let value = rng.bytes(len);
                    string(&mut block, &value, rng.chance(50));
                    if kind == 1 {
                        let size = name.len() + value.len() + 32;
                        if size > model_max {
                            model.clear();
                            model_size = 0;
                        } else {
                            while model_size + size > model_max {
                                model_size -= model.pop_back().unwrap_or(model_size);
                            }
                            model.push_front(size);
                            model_size += size;
                        }
                    }
                }
                let theirs = loona.decode(&block).map_err(|_| Malformed);
                let ours = decoded(&mut mine, &block);
                assert_eq!(ours, theirs, "round {round}");
                if ours.is_err() {
                    break;
                }
            }
        }
    }

    /// The name at `index` of loona's table, without changing it.
    fn loona_probe(loona: &mut loona_hpack::Decoder<'_>, index: usize) -> Option<Vec<u8>> {
        let mut block = Vec::new();
        encode_integer(&mut block, index, 7, 0x80);
        loona
            .decode(&block)
            .ok()
            .and_then(|mut l| l.pop())
            .map(|(n, _)| n)
    }

    #[test]
    fn decoder_rejects_malformed_blocks_without_panicking() {
        let cases: [&[u8]; 9] = [
            &[0x80],                               // index 0
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0x0f], // integer too long
            &[0x3f],                               // truncated size update
            &[0x3f, 0xe1, 0xff, 0xff, 0xff, 0x7f], // oversized size update
            &[0x82, 0x20],                         // size update after a field
            &[0x40, 0x05, b'a'],                   // truncated name
            &[0x00, 0x01, b'a', 0x85, 0xff],       // truncated Huffman value
            &[0xbe],                               // empty dynamic table
            &[0x7f, 0x80],                         // truncated name index
        ];
        for case in cases {
            let mut d = Decoder::new(4096);
            assert_eq!(decoded(&mut d, case), Err(Malformed), "{case:02x?}");
        }
        let mut rng = Rng(99);
        let mut d = Decoder::new(4096);
        let mut list = HeaderList::default();
        for _ in 0..20_000 {
            let n = rng.below(40);
            let block = rng.bytes(n);
            let _ = d.decode(&block, &mut list);
        }
    }

    #[test]
    fn encoder_output_decodes_and_leaves_the_table_alone() {
        let mut d = Decoder::new(4096);
        let fields: [(&[u8], &[u8], bool); 5] = [
            (b":method", b"POST", false),
            (b":path", b"/x", false),
            (b"authorization", b"secret", true),
            (b"custom", &[b'v'; 300], false),
            (b":method", b"GET", true),
        ];
        let mut block = Vec::new();
        for (n, v, never) in fields {
            encode_field(&mut block, n, v, never);
        }
        let mut list = HeaderList::default();
        d.decode(&block, &mut list).expect("decode");
        let got: Vec<_> = list.iter().collect();
        assert_eq!(got, fields.to_vec());
        assert_eq!(d.entries.len(), 0);
    }

    // ---- :authority -------------------------------------------------------------------

    #[test]
    fn repairs_authorities() {
        let cases: [(&[u8], Option<&[u8]>); 11] = [
            (b"http://127.0.0.1:41909", Some(b"127.0.0.1:41909")),
            (b"https://etcd.example:2379/", Some(b"etcd.example:2379")),
            (b"#initially=[http://h:2379]", Some(b"h:2379")),
            (b"#initially=[http://a:1 http://b:2]", Some(b"a:1")),
            (b"#initially=[http://[::1]:2379]", Some(b"[::1]:2379")),
            (b"dns:///etcd:2379", Some(b"etcd:2379")),
            (b"http://user@h:1", Some(b"user@h:1")),
            (b"#initially=[]", None),
            (b"http://", None),
            (b"", None),
            (b"\xff\xfe", None),
        ];
        for (input, want) in cases {
            assert_eq!(
                repair_authority(input),
                want,
                "{}",
                String::from_utf8_lossy(input)
            );
        }
        let mut known = Vec::new();
        assert!(authority_ok(&mut known, b"127.0.0.1:2379"));
        assert!(authority_ok(&mut known, b"127.0.0.1:2379"));
        assert!(!authority_ok(&mut known, b"http://127.0.0.1:2379"));
        assert!(!authority_ok(&mut known, b""));
    }

    // ---- the adapter ------------------------------------------------------------------

    #[tokio::test]
    async fn rewrites_url_authorities_and_keeps_everything_else() {
        let mut enc = ClientEncoder::new();
        let bad = request_headers(
            b"http://127.0.0.1:41909",
            b"/etcdserverpb.Maintenance/Status",
        );
        let mut input = PREFACE.to_vec();
        input.extend(settings());
        input.extend(frame(0x8, 0, 0, &[0, 0, 0x40, 0])); // WINDOW_UPDATE
        // The first request indexes the bad authority; the second refers to it.
        input.extend(headers_frame(1, false, &enc.encode(&bad)));
        input.extend(frame(0x0, FLAG_END_STREAM, 1, &[0, 0, 0, 0, 2, 8, 1]));
        input.extend(headers_frame(3, false, &enc.encode(&bad)));
        let big = vec![0x5a; 50_000];
        for part in big.chunks(MAX_FRAME_PAYLOAD) {
            input.extend(frame(0x0, 0, 3, part));
        }
        input.extend(frame(0x0, FLAG_END_STREAM, 3, b""));
        // A later valid authority and a trailers-only block go through too.
        let good = request_headers(b"127.0.0.1:41909", b"/etcdserverpb.KV/Range");
        input.extend(headers_frame(5, true, &enc.encode(&good)));
        input.extend(headers_frame(
            5,
            true,
            &enc.encode(&[(b"grpc-status", b"0")]),
        ));
        input.extend(frame(0x6, 0, 0, b"pingpong"));

        let out = run(&input).await;
        let (blocks, others) = server_view(&parse_frames(&out));
        let (_, input_others) = server_view(&parse_frames(&input));
        assert_eq!(others, input_others, "non-header frames are unchanged");
        let fixed = request_headers(b"127.0.0.1:41909", b"/etcdserverpb.Maintenance/Status");
        assert_eq!(
            blocks,
            vec![
                owned(&fixed),
                owned(&fixed),
                owned(&good),
                owned(&[(b"grpc-status", b"0")])
            ]
        );
        // END_STREAM survives the re-encoding.
        let header_flags: Vec<u8> = parse_frames(&out)
            .iter()
            .filter(|f| f.0 == TYPE_HEADERS)
            .map(|f| f.1)
            .collect();
        assert_eq!(
            header_flags,
            vec![
                FLAG_END_HEADERS,
                FLAG_END_HEADERS,
                FLAG_END_HEADERS | FLAG_END_STREAM,
                FLAG_END_HEADERS | FLAG_END_STREAM
            ]
        );
    }

    #[tokio::test]
    async fn repairs_or_drops_etcd_35_authorities() {
        let mut enc = ClientEncoder::new();
        let mut input = PREFACE.to_vec();
        input.extend(settings());
        let first = request_headers(b"#initially=[http://127.0.0.1:2379]", b"/a");
        input.extend(headers_frame(1, true, &enc.encode(&first)));
        let second = request_headers(b"#initially=[]", b"/b");
        input.extend(headers_frame(3, true, &enc.encode(&second)));
        let out = run(&input).await;
        let (blocks, _) = server_view(&parse_frames(&out));
        let mut dropped = owned(&second);
        dropped.remove(3);
        assert_eq!(
            blocks,
            vec![owned(&request_headers(b"127.0.0.1:2379", b"/a")), dropped]
        );
    }

    #[tokio::test]
    async fn valid_connections_pass_byte_for_byte() {
        let mut enc = ClientEncoder::new();
        let mut input = PREFACE.to_vec();
        input.extend(settings());
        for sid in (1..40u32).step_by(2) {
            let path = format!("/etcdserverpb.KV/Put{sid}");
            let headers = request_headers(b"127.0.0.1:2379", path.as_bytes());
            input.extend(headers_frame(sid, false, &enc.encode(&headers)));
            input.extend(frame(0x0, FLAG_END_STREAM, sid, &vec![sid as u8; 300]));
        }
        // Padded + priority + CONTINUATION, still valid: untouched too.
        let block = enc.encode(&request_headers(b"h:1", b"/p"));
        let (a, b) = block.split_at(block.len() / 2);
        let mut payload = vec![3];
        payload.extend([0, 0, 0, 1, 16]);
        payload.extend(a);
        payload.extend([0, 0, 0]);
        input.extend(frame(
            TYPE_HEADERS,
            FLAG_PADDED | FLAG_PRIORITY,
            41,
            &payload,
        ));
        input.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 41, b));
        assert_eq!(run(&input).await, input);
    }

    #[tokio::test]
    async fn http1_passes_untouched() {
        let req = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".repeat(3);
        assert_eq!(run(&req).await, req);
        // Diverging from the preface late still passes everything.
        let odd = b"PRI * HTTP/1.1\r\n\r\n\x00\x00\x04\x01\x04\x00\x00\x00\x01\x80".to_vec();
        assert_eq!(run(&odd).await, odd);
        assert_eq!(run(b"").await, b"");
        assert_eq!(run(b"PRI * HT").await, b"PRI * HT");
    }

    #[tokio::test]
    async fn continuation_padding_and_priority_are_rewritten() {
        let mut enc = ClientEncoder::new();
        let headers = request_headers(b"http://127.0.0.1:2379", b"/etcdserverpb.Maintenance/Hash");
        let block = enc.encode(&headers);
        let third = block.len() / 3;
        let mut payload = vec![7];
        payload.extend([0x80, 0, 0, 3, 200]); // exclusive dependency on stream 3, weight 200
        payload.extend(&block[..third]);
        payload.extend([0; 7]);
        let mut input = PREFACE.to_vec();
        input.extend(settings());
        input.extend(frame(
            TYPE_HEADERS,
            FLAG_PADDED | FLAG_PRIORITY | FLAG_END_STREAM,
            5,
            &payload,
        ));
        input.extend(frame(TYPE_CONTINUATION, 0, 5, &block[third..2 * third]));
        input.extend(frame(
            TYPE_CONTINUATION,
            FLAG_END_HEADERS,
            5,
            &block[2 * third..],
        ));
        input.extend(frame(0x6, 0, 0, b"12345678"));

        let out = run(&input).await;
        let frames = parse_frames(&out);
        assert_eq!(frames.len(), 3, "settings, one HEADERS, ping");
        let (ty, flags, sid, payload) = &frames[1];
        assert_eq!(
            (*ty, *flags, *sid),
            (
                TYPE_HEADERS,
                FLAG_PRIORITY | FLAG_END_STREAM | FLAG_END_HEADERS,
                5
            )
        );
        assert_eq!(payload[..5], [0x80, 0, 0, 3, 200]);
        let (blocks, _) = server_view(&frames);
        let fixed = request_headers(b"127.0.0.1:2379", b"/etcdserverpb.Maintenance/Hash");
        assert_eq!(blocks, vec![owned(&fixed)]);
    }

    #[tokio::test]
    async fn large_rewritten_blocks_are_split_into_continuations() {
        let mut enc = ClientEncoder::new();
        let big = vec![b'v'; 40_000];
        let mut headers = request_headers(b"http://h:1", b"/p");
        headers.push((b"x-big", &big));
        let block = enc.encode(&headers);
        let mut input = PREFACE.to_vec();
        input.extend(settings());
        let mut parts = block.chunks(MAX_FRAME_PAYLOAD).peekable();
        let mut first = true;
        while let Some(part) = parts.next() {
            let flags = if parts.peek().is_none() {
                FLAG_END_HEADERS
            } else {
                0
            };
            let ty = if first {
                TYPE_HEADERS
            } else {
                TYPE_CONTINUATION
            };
            first = false;
            input.extend(frame(ty, flags, 1, part));
        }
        let out = run(&input).await;
        let frames = parse_frames(&out);
        let types: Vec<u8> = frames.iter().map(|f| f.0).collect();
        assert_eq!(
            types,
            vec![0x4, TYPE_HEADERS, TYPE_CONTINUATION, TYPE_CONTINUATION]
        );
        let (blocks, _) = server_view(&frames);
        headers[3].1 = b"h:1";
        assert_eq!(blocks, vec![owned(&headers)]);
    }

    #[tokio::test]
    async fn honours_dynamic_table_size_updates() {
        let mut enc = ClientEncoder::new();
        let mut input = PREFACE.to_vec();
        input.extend(settings());
        let mut want = Vec::new();
        for (i, size) in [4096, 100, 0, 4096, 300].into_iter().enumerate() {
            enc.resize(size);
            let sid = 2 * i as u32 + 1;
            let path = format!("/p{i}");
            let authority: &[u8] = if i == 2 { b"http://h:2" } else { b"h:2" };
            input.extend(headers_frame(
                sid,
                true,
                &enc.encode(&request_headers(authority, path.as_bytes())),
            ));
            want.push(owned(&request_headers(b"h:2", path.as_bytes())));
        }
        let (blocks, _) = server_view(&parse_frames(&run(&input).await));
        assert_eq!(blocks, want);
    }

    /// Garbage, truncations and broken framing never panic, and a stream that does not
    /// need a rewrite comes out exactly as it went in.
    #[tokio::test]
    async fn garbage_and_truncation_pass_through() {
        let mut enc = ClientEncoder::new();
        let mut valid = PREFACE.to_vec();
        valid.extend(settings());
        valid.extend(headers_frame(
            1,
            false,
            &enc.encode(&request_headers(b"h:1", b"/x")),
        ));
        valid.extend(frame(0x0, FLAG_END_STREAM, 1, b"data"));
        for cut in 0..valid.len() {
            assert_eq!(run_with(&valid[..cut], 3, 5).await, &valid[..cut]);
        }

        let mut rng = Rng(1234);
        for _ in 0..300 {
            let mut input = PREFACE.to_vec();
            for _ in 0..rng.below(6) {
                let ty = [TYPE_HEADERS, TYPE_CONTINUATION, 0x0, 0x4][rng.below(4)];
                let n = rng.below(60);
                let payload = rng.bytes(n);
                let mut f = frame(ty, rng.next() as u8, rng.below(4) as u32, &payload);
                if rng.chance(10) {
                    f[2] = f[2].wrapping_add(rng.next() as u8);
                }
                input.extend(f);
            }
            if rng.chance(30) {
                input.extend(rng.bytes(20));
            }
            let out = run_with(&input, 1 + rng.below(50), 1 + rng.below(100)).await;
            // Random blocks almost never decode; those that do and carry no :authority come
            // out re-framed but never crash. Length sanity only.
            assert!(out.len() <= input.len() + 64 * 1024);
        }
        for _ in 0..100 {
            let n = rng.below(500);
            let input = rng.bytes(n);
            assert_eq!(run_with(&input, 7, 64).await, input);
        }
    }

    /// A rough cost figure for the per-block work on a steady valid connection (run with
    /// `--ignored --nocapture`).
    #[test]
    #[ignore]
    #[allow(clippy::print_stdout)]
    fn bench_valid_block() {
        let mut enc = ClientEncoder::new();
        let mut rw = Rewriter::new();
        let n = 200_000;
        let blocks: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                let timeout = format!("{}m", 1000 + i % 4000);
                let mut headers = request_headers(b"127.0.0.1:2379", b"/etcdserverpb.KV/Range");
                headers[7].1 = timeout.as_bytes();
                headers_frame(1, false, &enc.encode(&headers))
            })
            .collect();
        let t = std::time::Instant::now();
        for b in &blocks {
            assert!(matches!(rw.transform(b), Ok(None)));
        }
        println!("{:?} per block", t.elapsed() / n);
    }
}
