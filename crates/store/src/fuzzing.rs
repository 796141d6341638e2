//! Fuzzing entry point: every decoder kumo store runs on bytes it did not produce itself.
//!
//! [`decode_requests`] is the body of the cargo-fuzz target `fuzz/fuzz_targets/decode.rs`
//! (see `fuzz/README.md`). The tests below run it over a fixed-seed stream of ~200k inputs
//! (random bytes plus mutations of valid encodings) so that CI exercises the same entry
//! point on a stable toolchain.
//!
//! Whatever `data` holds, nothing here may panic, hang or allocate without bound. Paths:
//! * **gRPC request messages**: prost decode of every etcd request type, then what the
//!   server does with it before (or instead of) proposing it: `check_put`, `check_range`,
//!   `check_delete`, `check_txn`, the range read itself (`Mvcc::range`, sort / limit /
//!   filters, on a small fixed keyspace), watch creation with catch-up from history, and the
//!   lessor for lease grants / keep-alives / revokes.
//! * **Raft proposals** (the WAL payload): `raft::Request::decode`; anything it accepts must
//!   re-encode to the same request, with `encoded_len` (what `--max-request-bytes` counts)
//!   equal to the encoded size.
//! * **WAL records**: the segment framing `u32 len | u32 crc | body` as `LogStore::open`
//!   reads it, `raft::log::decode_body` (entry header, proposal or postcard membership), and
//!   the persisted log id.
//! * **HTTP/2 connections**: the `:authority` repair adapter ([`crate::server::AuthorityFix`])
//!   that reads every client connection's raw bytes (frame parsing, HPACK decoding and
//!   re-encoding), fed the bytes as they are and behind the HTTP/2 preface, in two different
//!   read chunkings whose outputs must agree.

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};

use kumo_etcd_proto::pb;
use prost::Message;
use tokio::io::{AsyncRead, ReadBuf};

use crate::lease::Lessor;
use crate::mvcc::{KeyRange, Mvcc, check_read_rev};
use crate::raft::Request;
use crate::server::{
    AuthorityFix, check_delete, check_put, check_range, check_txn, etcd_status_compat,
    txn_is_read_only,
};
use crate::watch::{HeaderInfo, WatchHub};

/// etcd's default `--max-txn-ops`.
const MAX_TXN_OPS: usize = 128;
/// The HTTP/2 client connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Feeds `data` through every decoding path of the server (see the module docs). Panics only
/// on a bug.
pub fn decode_requests(data: &[u8]) {
    decode_all(data);
}

/// Which decoders accepted the input (for the tests' coverage checks).
#[derive(Debug, Default, Clone, Copy)]
struct Reached {
    grpc_messages: u32,
    valid_kv: bool,
    range_read: bool,
    watch_created: bool,
    proposal: bool,
    wal_body: bool,
    wal_records: usize,
    http2_rewritten: bool,
}

fn decode_all(data: &[u8]) -> Reached {
    let mut r = Reached::default();
    grpc_messages(data, &mut r);
    proposal(data, &mut r);
    wal(data, &mut r);
    http2(data, &mut r);
    r
}

// ---- gRPC request messages -----------------------------------------------------------------

/// A small keyspace (history, a deleted key, a compaction) the range and watch paths read.
struct Fixture {
    mvcc: Mvcc,
    hub: Arc<WatchHub>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!(
            "kumo-fuzz-{}-{:x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).expect("fuzz fixture dir");
        let mvcc = build_keyspace(dir.join("db")).expect("fuzz fixture keyspace");
        // The open database keeps its file; nothing is left behind on disk.
        let _ = std::fs::remove_dir_all(&dir);
        let info = Arc::new(HeaderInfo {
            cluster_id: 1,
            member_id: 2,
            term: 3.into(),
        });
        let hub = Arc::new(WatchHub::new(info, mvcc.current_rev()));
        Fixture { mvcc, hub }
    })
}

fn build_keyspace(path: PathBuf) -> crate::error::Result<Mvcc> {
    let mvcc = Mvcc::open(&path)?;
    let leases = Lessor::new(1);
    let puts: &[&[(&str, &str)]] = &[
        &[("a", "1")],
        &[("b", "2"), ("c", "3")],
        &[("a", "4")],
        &[("foo", "x"), ("foo/bar", "y"), ("foo0", "z")],
        &[("\u{0}", "nul"), ("\u{ff}", "high")],
        &[("a", "5")],
    ];
    let mut w = mvcc.begin_write()?;
    for (i, batch) in puts.iter().enumerate() {
        let mut t = w.store_txn()?;
        for (k, v) in batch.iter() {
            t.put(k.as_bytes(), v.as_bytes().to_vec(), 0, &leases, None)?;
        }
        if i == 3 {
            t.delete_range(&KeyRange::from_request(b"b", b""), &leases)?;
        }
        t.end();
    }
    w.commit()?;
    let mut w = mvcc.begin_write()?;
    w.compact(3)?;
    w.commit()?;
    Ok(mvcc)
}

fn dec<M: Message + Default>(data: &[u8], r: &mut Reached) -> Option<M> {
    let m = M::decode(data).ok()?;
    r.grpc_messages += 1;
    Some(m)
}

fn grpc_messages(data: &[u8], reached: &mut Reached) {
    let fx = fixture();
    if let Some(r) = dec::<pb::RangeRequest>(data, reached) {
        range(fx, &r, reached);
    }
    if let Some(r) = dec::<pb::PutRequest>(data, reached) {
        reached.valid_kv |= check_put(&r).is_ok();
    }
    if let Some(r) = dec::<pb::DeleteRangeRequest>(data, reached) {
        reached.valid_kv |= check_delete(&r).is_ok();
        key_range(&r.key, &r.range_end);
    }
    if let Some(r) = dec::<pb::TxnRequest>(data, reached) {
        txn(fx, &r, reached);
    }
    if let Some(r) = dec::<pb::CompactionRequest>(data, reached) {
        let _ = check_read_rev(r.revision, fx.mvcc.current_rev(), fx.mvcc.compacted_rev());
    }
    if let Some(r) = dec::<pb::HashKvRequest>(data, reached) {
        let _ = check_read_rev(r.revision, fx.mvcc.current_rev(), fx.mvcc.compacted_rev());
    }
    if let Some(r) = dec::<pb::WatchRequest>(data, reached) {
        watch(fx, r, reached);
    }
    lease(data, reached);
    if let Some(r) = dec::<pb::AlarmRequest>(data, reached) {
        let _ = pb::alarm_request::AlarmAction::try_from(r.action);
        let _ = pb::AlarmType::try_from(r.alarm).map(|t| t.as_str_name());
    }
    // Requests the server takes as they are: decoding is all there is to it.
    macro_rules! decode_only {
        ($($t:ident),* $(,)?) => {$(
            let _ = dec::<pb::$t>(data, reached);
        )*};
    }
    decode_only!(
        StatusRequest,
        DefragmentRequest,
        HashRequest,
        SnapshotRequest,
        MoveLeaderRequest,
        DowngradeRequest,
        MemberAddRequest,
        MemberRemoveRequest,
        MemberUpdateRequest,
        MemberListRequest,
        MemberPromoteRequest,
        AuthEnableRequest,
        AuthDisableRequest,
        AuthStatusRequest,
        AuthenticateRequest,
        AuthUserAddRequest,
        AuthUserGetRequest,
        AuthUserListRequest,
        AuthUserDeleteRequest,
        AuthUserChangePasswordRequest,
        AuthUserGrantRoleRequest,
        AuthUserRevokeRoleRequest,
        AuthRoleAddRequest,
        AuthRoleGetRequest,
        AuthRoleListRequest,
        AuthRoleDeleteRequest,
        AuthRoleGrantPermissionRequest,
        AuthRoleRevokePermissionRequest,
    );
}

fn key_range(key: &[u8], end: &[u8]) {
    let a = KeyRange::from_request(key, end);
    let b = KeyRange::from_request(end, key);
    let _ = (
        a.contains(key),
        a.contains(end),
        a.overlaps(&b),
        b.overlaps(&a),
    );
}

/// What KV.Range does after decoding: validation, then the read on the fixture keyspace.
fn range(fx: &Fixture, r: &pb::RangeRequest, reached: &mut Reached) {
    key_range(&r.key, &r.range_end);
    if check_range(r).is_err() {
        return;
    }
    reached.valid_kv = true;
    if let Ok(resp) = fx.mvcc.range(r) {
        reached.range_read = true;
        assert!(resp.count >= resp.kvs.len() as i64, "range count {resp:?}");
        if r.limit > 0 {
            assert!(
                resp.kvs.len() as i64 <= r.limit,
                "range limit {r:?} {resp:?}"
            );
        }
    }
}

/// What KV.Txn does after decoding: validation, then (for the reads) the ranges it holds.
fn txn(fx: &Fixture, r: &pb::TxnRequest, reached: &mut Reached) {
    let _ = txn_is_read_only(r);
    if check_txn(r, MAX_TXN_OPS).is_err() {
        return;
    }
    reached.valid_kv = true;
    fn ranges(fx: &Fixture, ops: &[pb::RequestOp], reached: &mut Reached) {
        for op in ops {
            match &op.request {
                Some(pb::request_op::Request::RequestRange(x)) => range(fx, x, reached),
                Some(pb::request_op::Request::RequestDeleteRange(x)) => {
                    key_range(&x.key, &x.range_end)
                }
                Some(pb::request_op::Request::RequestTxn(t)) => {
                    ranges(fx, &t.success, reached);
                    ranges(fx, &t.failure, reached);
                }
                _ => {}
            }
        }
    }
    ranges(fx, &r.success, reached);
    ranges(fx, &r.failure, reached);
    // The proposal that carries it must survive the WAL.
    let mut buf = Vec::new();
    let p = Request::Txn(r.clone());
    p.encode(&mut buf);
    assert_eq!(buf.len(), p.encoded_len(), "txn proposal encoded_len");
    assert_eq!(
        Request::decode(&buf).as_ref(),
        Some(&p),
        "txn proposal round trip"
    );
}

/// What the Watch stream does with a request: create (validation, catch-up from history),
/// cancel, progress.
fn watch(fx: &Fixture, r: pb::WatchRequest, reached: &mut Reached) {
    use pb::watch_request::RequestUnion;
    let (stream, mut rx) = fx.hub.open_stream();
    let current = fx.mvcc.current_rev();
    match r.request_union {
        Some(RequestUnion::CreateRequest(c)) => {
            key_range(&c.key, &c.range_end);
            assert!(
                drive(stream.create(c, current)),
                "watch create on a live stream"
            );
            assert!(drive(stream.catch_up(&fx.mvcc)), "watch catch-up");
            let created = rx.try_recv().expect("a create is always answered");
            assert!(created.created, "first answer is the creation: {created:?}");
            reached.watch_created = !created.canceled;
            while let Ok(resp) = rx.try_recv() {
                for e in &resp.events {
                    let kv = e.kv.as_ref().expect("event kv");
                    assert!(kv.mod_revision <= current, "event from the future: {e:?}");
                }
            }
        }
        Some(RequestUnion::CancelRequest(c)) => {
            assert!(drive(stream.cancel(c.watch_id, current)));
        }
        Some(RequestUnion::ProgressRequest(_)) => {
            assert!(drive(stream.progress()));
        }
        None => {}
    }
}

/// Runs a future that never waits on anything but in-memory channels with room.
fn drive<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..1000 {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
    panic!("a watch stream operation never completed");
}

/// The lessor's side of LeaseGrant / LeaseRevoke / LeaseKeepAlive / LeaseTimeToLive.
fn lease(data: &[u8], reached: &mut Reached) {
    let grant = dec::<pb::LeaseGrantRequest>(data, reached);
    let revoke = dec::<pb::LeaseRevokeRequest>(data, reached);
    let keep = dec::<pb::LeaseKeepAliveRequest>(data, reached);
    let ttl = dec::<pb::LeaseTimeToLiveRequest>(data, reached);
    let _ = dec::<pb::LeaseLeasesRequest>(data, reached);
    if grant.is_none() && revoke.is_none() && keep.is_none() && ttl.is_none() {
        return;
    }
    let lessor = Lessor::new(2);
    if let Some(g) = grant {
        if let Ok(granted) = lessor.grant(g.id, g.ttl) {
            assert_eq!(granted, g.ttl.max(2), "granted TTL for {g:?}");
        }
        let _ = lessor.renew(g.id);
    }
    if let Some(k) = keep {
        let _ = lessor.renew(k.id);
    }
    if let Some(t) = ttl {
        let _ = lessor.info(t.id);
    }
    if let Some(r) = revoke {
        let _ = lessor.revoke(r.id);
    }
    let _ = lessor.ids();
}

// ---- Raft proposals and the WAL ------------------------------------------------------------

fn proposal(data: &[u8], reached: &mut Reached) {
    let Some(r) = Request::decode(data) else {
        return;
    };
    reached.proposal = true;
    let _ = r.to_string();
    let mut buf = Vec::new();
    r.encode(&mut buf);
    assert_eq!(buf.len(), r.encoded_len(), "encoded_len of {r}");
    assert_eq!(
        Request::decode(&buf).as_ref(),
        Some(&r),
        "round trip of {r}"
    );
}

fn wal(data: &[u8], reached: &mut Reached) {
    // A record body on its own (what a record with a matching checksum holds) …
    if let Some(e) = crate::raft::log::decode_body(data) {
        reached.wal_body = true;
        let _ = e.log_id.index;
    }
    let _ = crate::state::decode_log_id(data);
    let _ = crate::raft::log::decode_membership(data);
    // … and a segment, read record by record as `LogStore::open` does until the first
    // torn or damaged one.
    let mut p = 0usize;
    while let Some(hdr) = data.get(p..p + 8) {
        let len = u32::from_be_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
        let crc = u32::from_be_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
        let Some(body) = data.get(p + 8..p + 8 + len) else {
            break;
        };
        if crc32fast::hash(body) != crc || crate::raft::log::decode_body(body).is_none() {
            break;
        }
        reached.wal_records += 1;
        p += 8 + len;
    }
}

// ---- HTTP/2 connections --------------------------------------------------------------------

fn http2(data: &[u8], reached: &mut Reached) {
    // As it comes (a connection that is not HTTP/2 passes through untouched) …
    if !data.starts_with(PREFACE) {
        let out = filter(data, 0, 16 * 1024);
        assert_eq!(out, data, "a non-HTTP/2 connection passes through as is");
    }
    // … and as frames behind the preface, where the header blocks get parsed.
    let mut conn = Vec::with_capacity(PREFACE.len() + data.len());
    if !data.starts_with(PREFACE) {
        conn.extend_from_slice(PREFACE);
    }
    conn.extend_from_slice(data);
    let whole = filter(&conn, 0, 64 * 1024);
    let seed = data
        .iter()
        .fold(0usize, |h, b| h.wrapping_mul(31) ^ *b as usize);
    let chunked = filter(&conn, 1 + seed % 13, 1 + (seed >> 4) % 61);
    assert_eq!(
        whole, chunked,
        "the output must not depend on read boundaries"
    );
    reached.http2_rewritten |= whole != conn;
    // Responses: the grpc-go style rewrite of oversize statuses parses the message.
    if let Ok(v) = http::HeaderValue::from_bytes(data) {
        let resp = http::Response::builder()
            .header("grpc-status", "11")
            .header("grpc-message", v)
            .body(())
            .expect("response");
        let _ = etcd_status_compat(resp);
    }
}

/// An in-memory connection handing out at most `chunk` bytes per read (0: no limit).
struct Chunked<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl AsyncRead for Chunked<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let limit = if this.chunk == 0 {
            usize::MAX
        } else {
            this.chunk
        };
        let n = this.data.len().min(buf.remaining()).min(limit);
        buf.put_slice(&this.data[..n]);
        this.data = &this.data[n..];
        Poll::Ready(Ok(()))
    }
}

/// Everything [`AuthorityFix`] hands to hyper for the connection bytes `input`.
fn filter(input: &[u8], chunk: usize, read_buf: usize) -> Vec<u8> {
    // A rewritten header block re-encodes what it references: one byte naming a dynamic
    // table entry (at most 4 KiB) can become that entry as a literal.
    let bound = 4200 * input.len() + 64 * 1024;
    let mut fix = AuthorityFix::new(Chunked { data: input, chunk });
    let mut cx = Context::from_waker(Waker::noop());
    let mut out = Vec::new();
    let mut buf = vec![0u8; read_buf];
    loop {
        let mut rb = ReadBuf::new(&mut buf);
        match Pin::new(&mut fix).poll_read(&mut cx, &mut rb) {
            Poll::Ready(Ok(())) if rb.filled().is_empty() => return out,
            Poll::Ready(Ok(())) => out.extend_from_slice(rb.filled()),
            Poll::Ready(Err(e)) => panic!("in-memory reads cannot fail: {e}"),
            Poll::Pending => panic!("pending although the connection never is"),
        }
        // Every read but the last yields at least one byte, so this also bounds the loop.
        assert!(out.len() <= bound, "output grows without bound");
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::raft::{MemberNode, Membership};
    use pb::request_op::Request as Op;

    /// xorshift64*: a fixed seed gives the same inputs on every machine.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
        fn chance(&mut self, percent: usize) -> bool {
            self.below(100) < percent
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    #[derive(Debug, Clone, Copy)]
    enum Len {
        /// A protobuf varint of this many bytes.
        Varint(usize),
        /// A big-endian integer of this many bytes (WAL, batch and HTTP/2 frame lengths).
        Fixed(usize),
    }

    /// A valid encoding and where its length fields are, for targeted corruption.
    #[derive(Debug, Clone)]
    struct Seed {
        bytes: Vec<u8>,
        lens: Vec<(usize, Len)>,
        /// A WAL segment: recompute the record checksums after mutating (most of the time),
        /// so the damage reaches the record decoder.
        wal: bool,
        /// An HTTP/2 connection: whether its `:authority` needs the repair.
        rewrite: Option<bool>,
    }

    fn varint(b: &[u8]) -> Option<(u64, usize)> {
        let mut v = 0u64;
        for (i, &x) in b.iter().enumerate().take(10) {
            v |= u64::from(x & 0x7f) << (7 * i);
            if x & 0x80 == 0 {
                return Some((v, i + 1));
            }
        }
        None
    }

    /// Records the offsets of every length-delimited field's length, recursing into fields
    /// that parse as messages.
    fn proto_lens(b: &[u8], base: usize, depth: u32, out: &mut Vec<(usize, Len)>) -> bool {
        let mut p = 0;
        while p < b.len() {
            let Some((key, n)) = varint(&b[p..]) else {
                return false;
            };
            p += n;
            match key & 7 {
                0 => match varint(&b[p..]) {
                    Some((_, n)) => p += n,
                    None => return false,
                },
                1 => p += 8,
                5 => p += 4,
                2 => {
                    let Some((len, n)) = varint(&b[p..]) else {
                        return false;
                    };
                    out.push((base + p, Len::Varint(n)));
                    p += n;
                    let end = p + len as usize;
                    if end > b.len() {
                        return false;
                    }
                    let mut sub = Vec::new();
                    if depth < 8 && proto_lens(&b[p..end], base + p, depth + 1, &mut sub) {
                        out.extend(sub);
                    }
                    p = end;
                }
                _ => return false,
            }
        }
        p == b.len()
    }

    fn proto_seed(bytes: Vec<u8>) -> Seed {
        let mut lens = Vec::new();
        proto_lens(&bytes, 0, 0, &mut lens);
        Seed {
            bytes,
            lens,
            wal: false,
            rewrite: None,
        }
    }

    fn k(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    fn range_req() -> pb::RangeRequest {
        pb::RangeRequest {
            key: k("a"),
            range_end: k("z"),
            limit: 3,
            revision: 5,
            sort_order: 2,
            sort_target: 3,
            serializable: true,
            keys_only: false,
            count_only: false,
            min_mod_revision: 2,
            max_mod_revision: 7,
            min_create_revision: 1,
            max_create_revision: 9,
        }
    }

    fn put_req() -> pb::PutRequest {
        pb::PutRequest {
            key: k("foo/bar"),
            value: k("value"),
            lease: 0,
            prev_kv: true,
            ignore_value: false,
            ignore_lease: false,
        }
    }

    fn del_req() -> pb::DeleteRangeRequest {
        pb::DeleteRangeRequest {
            key: k("foo"),
            range_end: k("fop"),
            prev_kv: true,
        }
    }

    fn txn_req() -> pb::TxnRequest {
        use pb::compare::TargetUnion;
        let cmp = |target: i32, result: i32, u: TargetUnion| pb::Compare {
            result,
            target,
            key: k("a"),
            target_union: Some(u),
            range_end: vec![],
        };
        let nested = pb::TxnRequest {
            compare: vec![cmp(0, 0, TargetUnion::Version(1))],
            success: vec![pb::RequestOp {
                request: Some(Op::RequestRange(range_req())),
            }],
            failure: vec![pb::RequestOp {
                request: Some(Op::RequestPut(pb::PutRequest {
                    key: k("n"),
                    ..put_req()
                })),
            }],
        };
        pb::TxnRequest {
            compare: vec![
                cmp(0, 1, TargetUnion::Version(2)),
                cmp(1, 2, TargetUnion::CreateRevision(3)),
                cmp(2, 3, TargetUnion::ModRevision(4)),
                cmp(3, 0, TargetUnion::Value(k("v"))),
                cmp(4, 3, TargetUnion::Lease(0)),
            ],
            success: vec![
                pb::RequestOp {
                    request: Some(Op::RequestPut(put_req())),
                },
                pb::RequestOp {
                    request: Some(Op::RequestRange(pb::RangeRequest {
                        key: k("\0"),
                        range_end: k("\0"),
                        ..range_req()
                    })),
                },
                pb::RequestOp {
                    request: Some(Op::RequestTxn(nested)),
                },
            ],
            failure: vec![pb::RequestOp {
                request: Some(Op::RequestDeleteRange(del_req())),
            }],
        }
    }

    fn watch_reqs() -> Vec<pb::WatchRequest> {
        use pb::watch_request::RequestUnion;
        vec![
            pb::WatchRequest {
                request_union: Some(RequestUnion::CreateRequest(pb::WatchCreateRequest {
                    key: k("a"),
                    range_end: k("g"),
                    start_revision: 4,
                    progress_notify: true,
                    filters: vec![0, 1],
                    prev_kv: true,
                    watch_id: 7,
                    fragment: true,
                })),
            },
            pb::WatchRequest {
                request_union: Some(RequestUnion::CreateRequest(pb::WatchCreateRequest {
                    key: k("\0"),
                    range_end: k("\0"),
                    start_revision: 3,
                    ..Default::default()
                })),
            },
            pb::WatchRequest {
                request_union: Some(RequestUnion::CancelRequest(pb::WatchCancelRequest {
                    watch_id: 7,
                })),
            },
            pb::WatchRequest {
                request_union: Some(RequestUnion::ProgressRequest(pb::WatchProgressRequest {})),
            },
        ]
    }

    fn proposals() -> Vec<Request> {
        let single = vec![
            Request::Put(put_req()),
            Request::DeleteRange(del_req()),
            Request::Txn(txn_req()),
            Request::Compact(pb::CompactionRequest {
                revision: 5,
                physical: true,
            }),
            Request::LeaseGrant(pb::LeaseGrantRequest { ttl: 60, id: 77 }),
            Request::LeaseRevoke(pb::LeaseRevokeRequest { id: 77 }),
            Request::Alarm(pb::AlarmRequest {
                action: 1,
                member_id: 9,
                alarm: 1,
            }),
        ];
        let mut all = single.clone();
        all.push(Request::Batch(single[..4].to_vec()));
        all.push(Request::Batch(vec![]));
        all
    }

    /// Offsets of the 4-byte sub-request lengths of an encoded batch.
    fn batch_lens(b: &[u8]) -> Vec<(usize, Len)> {
        let mut out = Vec::new();
        if b.first() != Some(&8) {
            return out;
        }
        let mut p = 1;
        while let Some(h) = b.get(p..p + 4) {
            out.push((p, Len::Fixed(4)));
            p += 4 + u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
        }
        out
    }

    fn wal_body(index: u64, kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&3u64.to_be_bytes());
        b.extend_from_slice(&1u64.to_be_bytes());
        b.extend_from_slice(&index.to_be_bytes());
        b.push(kind);
        b.extend_from_slice(payload);
        b
    }

    fn wal_segment(bodies: &[Vec<u8>]) -> Seed {
        let mut bytes = Vec::new();
        let mut lens = Vec::new();
        for body in bodies {
            lens.push((bytes.len(), Len::Fixed(4)));
            bytes.extend_from_slice(&(body.len() as u32).to_be_bytes());
            bytes.extend_from_slice(&crc32fast::hash(body).to_be_bytes());
            bytes.extend_from_slice(body);
        }
        Seed {
            bytes,
            lens,
            wal: true,
            rewrite: None,
        }
    }

    /// Recomputes every checksum of a segment up to the first record that does not fit.
    fn fix_crcs(b: &mut [u8]) {
        let mut p = 0;
        while let Some(h) = b.get(p..p + 8) {
            let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
            let Some(body) = b.get(p + 8..p + 8 + len) else {
                return;
            };
            let crc = crc32fast::hash(body).to_be_bytes();
            b[p + 4..p + 8].copy_from_slice(&crc);
            p += 8 + len;
        }
    }

    fn hpack_literal(out: &mut Vec<u8>, first: u8, name: &[u8], value: &[u8]) {
        out.push(first);
        out.push(name.len() as u8);
        out.extend_from_slice(name);
        out.push(value.len() as u8);
        out.extend_from_slice(value);
    }

    fn h2_frame(
        out: &mut Vec<u8>,
        lens: &mut Vec<(usize, Len)>,
        ty: u8,
        flags: u8,
        payload: &[u8],
    ) {
        lens.push((out.len(), Len::Fixed(3)));
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        out.push(ty);
        out.push(flags);
        out.extend_from_slice(&1u32.to_be_bytes());
        out.extend_from_slice(payload);
    }

    /// A client connection: preface, SETTINGS, a gRPC call with `authority`.
    fn h2_seed(authority: &[u8], variant: usize) -> Seed {
        let mut b = PREFACE.to_vec();
        let mut lens = Vec::new();
        lens.push((b.len(), Len::Fixed(3)));
        b.extend_from_slice(&[0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 1, 0, 0, 16, 0]);
        let mut block = Vec::new();
        if variant == 1 {
            block.push(0x3f); // dynamic table size update to 4096 ...
            block.extend_from_slice(&[0xe1, 0x1f]);
        }
        block.extend_from_slice(&[0x83, 0x86]); // :method POST, :scheme http
        // :path, literal without indexing with the indexed name 4.
        let path = b"/etcdserverpb.KV/Range";
        block.push(0x04);
        block.push(path.len() as u8);
        block.extend_from_slice(path);
        // :authority with incremental indexing (name index 1), then content-type, te.
        block.push(0x41);
        block.push(authority.len() as u8);
        block.extend_from_slice(authority);
        hpack_literal(&mut block, 0x00, b"content-type", b"application/grpc");
        hpack_literal(&mut block, 0x10, b"te", b"trailers");
        let mut msg = vec![0];
        let body = range_req().encode_to_vec();
        msg.extend_from_slice(&(body.len() as u32).to_be_bytes());
        msg.extend_from_slice(&body);
        match variant {
            2 => {
                // Split over HEADERS + CONTINUATION.
                let (a, c) = block.split_at(block.len() / 2);
                h2_frame(&mut b, &mut lens, 1, 0, a);
                h2_frame(&mut b, &mut lens, 9, 4, c);
            }
            3 => {
                // PADDED + PRIORITY.
                let mut p = vec![3, 0, 0, 0, 0, 16];
                p.extend_from_slice(&block);
                p.extend_from_slice(&[0, 0, 0]);
                h2_frame(&mut b, &mut lens, 1, 0x4 | 0x8 | 0x20, &p);
            }
            _ => h2_frame(&mut b, &mut lens, 1, 4, &block),
        }
        h2_frame(&mut b, &mut lens, 0, 1, &msg);
        // A second request re-using the dynamic table entry (index 62).
        let second = [0x83, 0x86, 0xbe, 0x84];
        h2_frame(&mut b, &mut lens, 1, 5, &second);
        Seed {
            bytes: b,
            lens,
            wal: false,
            rewrite: Some(authority != b"127.0.0.1:2379"),
        }
    }

    fn seeds() -> Vec<Seed> {
        let mut s = vec![
            proto_seed(range_req().encode_to_vec()),
            proto_seed(put_req().encode_to_vec()),
            proto_seed(del_req().encode_to_vec()),
            proto_seed(txn_req().encode_to_vec()),
            proto_seed(
                pb::CompactionRequest {
                    revision: 4,
                    physical: true,
                }
                .encode_to_vec(),
            ),
            proto_seed(pb::HashKvRequest { revision: 6 }.encode_to_vec()),
            proto_seed(pb::LeaseGrantRequest { ttl: 30, id: 5 }.encode_to_vec()),
            proto_seed(pb::LeaseTimeToLiveRequest { id: 5, keys: true }.encode_to_vec()),
            proto_seed(
                pb::AlarmRequest {
                    action: 2,
                    member_id: 3,
                    alarm: 2,
                }
                .encode_to_vec(),
            ),
            proto_seed(
                pb::MemberAddRequest {
                    peer_ur_ls: vec!["http://127.0.0.1:2380".into()],
                    is_learner: true,
                }
                .encode_to_vec(),
            ),
            proto_seed(
                pb::AuthRoleGrantPermissionRequest {
                    name: "r".into(),
                    perm: Some(perm()),
                }
                .encode_to_vec(),
            ),
        ];
        s.extend(watch_reqs().iter().map(|w| proto_seed(w.encode_to_vec())));
        let mut bodies = Vec::new();
        for (i, p) in proposals().iter().enumerate() {
            let mut b = Vec::new();
            p.encode(&mut b);
            let mut lens = batch_lens(&b);
            let mut inner = Vec::new();
            proto_lens(&b[1..], 1, 0, &mut inner);
            lens.extend(inner);
            s.push(Seed {
                bytes: b.clone(),
                lens,
                wal: false,
                rewrite: None,
            });
            bodies.push(wal_body(10 + i as u64, 1, &b));
        }
        let membership = Membership::new(
            vec![BTreeSet::from([1, 2]), BTreeSet::from([2, 3])],
            BTreeMap::from([(
                1,
                MemberNode {
                    name: "m1".into(),
                    peer_urls: vec!["http://127.0.0.1:2380".into()],
                    client_urls: vec!["http://127.0.0.1:2379".into()],
                },
            )]),
        );
        bodies.push(wal_body(1, 0, &[]));
        bodies.push(wal_body(
            2,
            2,
            &crate::raft::log::encode_membership(&membership),
        ));
        for (i, body) in bodies.iter().enumerate() {
            s.push(wal_segment(std::slice::from_ref(body)));
            s.push(wal_segment(&bodies[i..(i + 3).min(bodies.len())]));
        }
        for (i, a) in [
            &b"127.0.0.1:2379"[..],
            b"http://127.0.0.1:2379",
            b"#initially=[http://127.0.0.1:2379]",
            b"",
        ]
        .iter()
        .enumerate()
        {
            for variant in 0..4 {
                if (i + variant) % 2 == 0 || i == 1 {
                    s.push(h2_seed(a, variant));
                }
            }
        }
        s
    }

    fn perm() -> authpb::Permission {
        authpb::Permission {
            perm_type: 2,
            key: k("a"),
            range_end: k("b"),
        }
    }

    use kumo_etcd_proto::authpb;

    fn put_varint(out: &mut Vec<u8>, mut v: u64, width: usize) {
        for i in 0..width {
            let last = i + 1 == width;
            out.push((v & 0x7f) as u8 | if last { 0 } else { 0x80 });
            v >>= 7;
        }
    }

    fn corrupt_len(rng: &mut Rng, b: &mut Vec<u8>, at: usize, len: Len) {
        match len {
            Len::Varint(w) => {
                if at + w > b.len() {
                    return;
                }
                let mut v = Vec::new();
                let width = if rng.chance(70) { w } else { 1 + rng.below(10) };
                let max = if width >= 10 {
                    u64::MAX
                } else {
                    (1u64 << (7 * width)) - 1
                };
                let value = match rng.below(4) {
                    0 => 0,
                    1 => max,
                    _ => rng.next() % (max.min(4096) + 1),
                };
                put_varint(&mut v, value, width);
                b.splice(at..at + w, v);
            }
            Len::Fixed(w) => {
                if at + w > b.len() {
                    return;
                }
                let old = b[at..at + w]
                    .iter()
                    .fold(0u64, |a, x| a << 8 | u64::from(*x));
                let new = match rng.below(4) {
                    0 => 0,
                    1 => u64::MAX,
                    2 => old.wrapping_add(1 + rng.below(16) as u64),
                    _ => old.wrapping_sub(1 + rng.below(16) as u64),
                };
                let bytes = new.to_be_bytes();
                b[at..at + w].copy_from_slice(&bytes[8 - w..]);
            }
        }
    }

    fn mutate(rng: &mut Rng, seeds: &[Seed]) -> Vec<u8> {
        let seed = &seeds[rng.below(seeds.len())];
        let mut b = seed.bytes.clone();
        for _ in 0..1 + rng.below(4) {
            let n = b.len();
            match rng.below(8) {
                0 if n > 0 => {
                    let i = rng.below(n);
                    b[i] ^= 1 << rng.below(8);
                }
                1 if n > 0 => {
                    let i = rng.below(n);
                    b[i] = [0, 0xff, 0x7f, 0x80, 0x01, 0x0a, 0x12][rng.below(7)];
                }
                2 => b.truncate(rng.below(n + 1)),
                3 if !seed.lens.is_empty() => {
                    let (at, len) = seed.lens[rng.below(seed.lens.len())];
                    corrupt_len(rng, &mut b, at, len);
                }
                4 => {
                    let i = rng.below(n + 1);
                    let k = 1 + rng.below(8);
                    let extra = rng.bytes(k);
                    b.splice(i..i, extra);
                }
                5 if n > 0 => {
                    let i = rng.below(n);
                    let j = (i + 1 + rng.below(16)).min(n);
                    b.drain(i..j);
                }
                6 if n > 0 => {
                    let i = rng.below(n);
                    let j = (i + 1 + rng.below(32)).min(n);
                    let dup = b[i..j].to_vec();
                    b.splice(j..j, dup);
                }
                7 => {
                    let other = &seeds[rng.below(seeds.len())].bytes;
                    let cut = rng.below(b.len() + 1);
                    let from = rng.below(other.len() + 1);
                    b.truncate(cut);
                    b.extend_from_slice(&other[from..]);
                }
                _ => {}
            }
        }
        if seed.wal && rng.chance(80) {
            fix_crcs(&mut b);
        }
        b
    }

    /// Writes the seeds as a starting corpus for the real fuzzer:
    /// `KUMO_FUZZ_SEED_DIR=fuzz/corpus/decode cargo test -p kumo-store fuzzing_write_seeds -- --ignored`
    #[test]
    #[ignore]
    fn fuzzing_write_seeds() {
        let dir = std::env::var("KUMO_FUZZ_SEED_DIR").expect("set KUMO_FUZZ_SEED_DIR");
        std::fs::create_dir_all(&dir).expect("create the corpus dir");
        for (i, s) in seeds().iter().enumerate() {
            let path = std::path::Path::new(&dir).join(format!("seed-{i:03}"));
            std::fs::write(path, &s.bytes).expect("write a seed");
        }
    }

    /// Every seed is what the decoders accept (or the mutations would start from noise).
    #[test]
    fn fuzzing_seeds_are_valid() {
        let seeds = seeds();
        assert!(seeds.len() > 30, "{} seeds", seeds.len());
        for s in &seeds {
            let r = decode_all(&s.bytes);
            if s.wal {
                assert!(r.wal_records >= 1, "WAL seed rejected: {s:?}");
            } else if let Some(rewrite) = s.rewrite {
                assert_eq!(r.http2_rewritten, rewrite, "HTTP/2 seed: {s:?}");
            } else {
                assert!(r.grpc_messages > 0 || r.proposal, "seed rejected: {s:?}");
            }
        }
        let txn = txn_req().encode_to_vec();
        let r = decode_all(&txn);
        assert!(
            r.valid_kv && r.range_read,
            "txn seed reaches the range read: {r:?}"
        );
        let w = watch_reqs()[0].encode_to_vec();
        assert!(decode_all(&w).watch_created, "watch seed creates a watcher");
    }

    /// Txn validation gaps found against etcd 3.4 by the bad-input suite: an op with no
    /// request in it is "key not found", and a nested txn only gets the ops its parent left.
    #[test]
    fn fuzzing_txn_validation_like_etcd() {
        use crate::error::StoreError;
        let put = |i: usize| pb::RequestOp {
            request: Some(Op::RequestPut(pb::PutRequest {
                key: format!("k{i}").into_bytes(),
                ..Default::default()
            })),
        };
        let empty = pb::RequestOp { request: None };
        let txn = |success: Vec<pb::RequestOp>| pb::TxnRequest {
            success,
            ..Default::default()
        };
        let nest = |outer: usize, inner: usize| {
            let mut ops: Vec<pb::RequestOp> = (0..outer).map(put).collect();
            ops.push(pb::RequestOp {
                request: Some(Op::RequestTxn(txn((1000..1000 + inner).map(put).collect()))),
            });
            txn(ops)
        };
        assert_eq!(
            check_txn(&txn(vec![empty.clone()]), 128),
            Err(StoreError::KeyNotFound)
        );
        let nested_empty = pb::RequestOp {
            request: Some(Op::RequestTxn(txn(vec![empty]))),
        };
        assert_eq!(
            check_txn(&txn(vec![nested_empty]), 128),
            Err(StoreError::KeyNotFound)
        );
        assert_eq!(check_txn(&nest(100, 27), 128), Ok(()));
        assert_eq!(check_txn(&nest(100, 28), 128), Err(StoreError::TooManyOps));
        assert_eq!(check_txn(&nest(127, 1), 128), Err(StoreError::TooManyOps));
    }

    /// A proposal of batches nested 200k deep (1 MB) is refused without recursing: it used
    /// to overflow the stack of the WAL reader.
    #[test]
    fn fuzzing_nested_batches_do_not_recurse() {
        let depth = 200_000usize;
        // Level k = 8 | len(level k-1) | level k-1, level 0 = [8]: len(level k) = 5k + 1.
        let mut b = Vec::with_capacity(5 * depth + 1);
        for k in (1..=depth).rev() {
            b.push(8);
            b.extend_from_slice(&((5 * (k - 1) + 1) as u32).to_be_bytes());
        }
        b.push(8);
        let t = std::thread::Builder::new()
            .stack_size(1 << 20)
            .spawn(move || {
                assert_eq!(Request::decode(&b), None);
                assert!(
                    crate::raft::log::decode_body(&[&[0u8; 24][..], &[1], &b].concat()).is_none()
                );
                decode_requests(&b);
            })
            .expect("spawn");
        t.join().expect("no stack overflow");
    }

    /// ~200k inputs through the fuzz entry point: random bytes and mutations (bit flips,
    /// interesting bytes, truncation, corrupted length prefixes, insertions, deletions,
    /// duplications, splices) of valid requests, proposals, WAL segments and HTTP/2
    /// connections. Also checks that the inputs get past the decoders, not just into them.
    #[test]
    fn fuzzing_decode_requests_survives_200k_inputs() {
        let seeds = seeds();
        let mut rng = Rng(0x6b75_6d6f_6675_7a7a);
        let n: usize = std::env::var("KUMO_FUZZ_ITERATIONS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(200_000);
        let mut totals = [0usize; 8];
        for i in 0..n {
            let input = if rng.chance(20) {
                let max = if rng.chance(90) { 64 } else { 2048 };
                let len = rng.below(max);
                rng.bytes(len)
            } else {
                mutate(&mut rng, &seeds)
            };
            let r = std::panic::catch_unwind(|| decode_all(&input)).unwrap_or_else(|_| {
                panic!("input #{i} panicked: {input:02x?}");
            });
            let hits = [
                r.grpc_messages > 0,
                r.valid_kv,
                r.range_read,
                r.watch_created,
                r.proposal,
                r.wal_body,
                r.wal_records > 0,
                r.http2_rewritten,
            ];
            for (t, h) in totals.iter_mut().zip(hits) {
                *t += usize::from(h);
            }
        }
        let names = [
            "grpc message decoded",
            "valid kv request",
            "range read",
            "watch created",
            "proposal decoded",
            "wal body decoded",
            "wal record read",
            "http2 block rewritten",
        ];
        let report: Vec<String> = names
            .iter()
            .zip(totals)
            .map(|(name, t)| format!("{name}: {t}"))
            .collect();
        // Each path must see a fair share of the inputs (0.1% of them at least).
        for (name, t) in names.iter().zip(totals) {
            assert!(t * 1000 >= n, "too few inputs reach {name}: {report:?}");
        }
    }
}
