//! The etcd v3 gRPC services (KV, Watch, Lease, Maintenance, Cluster, Auth) over the Raft
//! group and the state machine.

mod authority;
mod services;

use std::collections::HashSet;
use std::sync::Arc;

use kumo_etcd_proto::pb::{self, request_op};
use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot};

use crate::error::{Result, StoreError};
use crate::mvcc::KeyRange;
use crate::raft::{MemberNode, Raft, Request, Response};
use crate::state::StoreState;

pub use authority::{AuthorityFix, client_incoming};
pub use services::routes;

/// Version reported by Maintenance.Status: the etcd API level kumo store implements.
pub const ETCD_API_VERSION: &str = "3.4.0";

/// Shared handle the services use.
#[derive(Clone)]
pub struct Api {
    pub(crate) state: Arc<StoreState>,
    pub(crate) raft: Raft,
    pub(crate) member_id: u64,
    pub(crate) member: MemberNode,
    proposals: mpsc::UnboundedSender<(Request, oneshot::Sender<Result<Response>>)>,
    reads: mpsc::UnboundedSender<oneshot::Sender<Result<()>>>,
}

/// Proposals in flight at once: one being synced while the next one queues at the leader.
const PROPOSALS_IN_FLIGHT: usize = 1;
/// Most requests folded into one Raft entry.
const MAX_BATCH: usize = 2048;

/// Turns concurrent client writes into few Raft entries: while earlier proposals are in
/// flight, new requests queue up and go together as one `Request::Batch` (one WAL sync).
async fn run_proposer(
    raft: Raft,
    metrics: crate::metrics::Metrics,
    mut rx: mpsc::UnboundedReceiver<(Request, oneshot::Sender<Result<Response>>)>,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(PROPOSALS_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let (reqs, txs): (Vec<Request>, Vec<_>) = batch.into_iter().unzip();
            let req = if reqs.len() == 1 {
                reqs.into_iter().next().expect("one")
            } else {
                Request::Batch(reqs)
            };
            let n = txs.len();
            let outcome = match raft.client_write(req).await {
                Ok(r) => Ok(r.data),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                    Err(StoreError::NoLeader)
                }
                Err(e) => Err(StoreError::internal(e)),
            };
            match outcome {
                Ok(Response::Batch(rs)) if rs.len() == n => {
                    for (tx, r) in txs.into_iter().zip(rs) {
                        let _ = tx.send(Ok(r));
                    }
                }
                Ok(r) if n == 1 => {
                    for tx in txs {
                        let _ = tx.send(Ok(r.clone()));
                    }
                }
                Ok(other) => {
                    for tx in txs {
                        let _ = tx.send(Err(StoreError::Internal(format!(
                            "unexpected batch result {other:?}"
                        ))));
                    }
                }
                Err(e) => {
                    for _ in 0..n {
                        metrics.proposal_failed();
                    }
                    for tx in txs {
                        let _ = tx.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}

/// Shares one read-index round among all linearizable reads that arrived while the previous
/// round was running (etcd's linearizable read loop).
async fn run_read_barrier(
    raft: Raft,
    mut rx: mpsc::UnboundedReceiver<oneshot::Sender<Result<()>>>,
) {
    while let Some(first) = rx.recv().await {
        let mut waiters = vec![first];
        while let Ok(w) = rx.try_recv() {
            waiters.push(w);
        }
        let r = raft
            .ensure_linearizable()
            .await
            .map(|_| ())
            .map_err(|_| StoreError::NoLeader);
        for w in waiters {
            let _ = w.send(r.clone());
        }
    }
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("member_id", &self.member_id)
            .finish()
    }
}

impl Api {
    /// Creates the API handle and starts its proposal batcher and read barrier (needs a
    /// Tokio runtime).
    pub fn new(state: Arc<StoreState>, raft: Raft, member_id: u64, member: MemberNode) -> Api {
        let (ptx, prx) = mpsc::unbounded_channel();
        let (rtx, rrx) = mpsc::unbounded_channel();
        tokio::spawn(run_proposer(raft.clone(), state.metrics.clone(), prx));
        tokio::spawn(run_read_barrier(raft.clone(), rrx));
        Api {
            state,
            raft,
            member_id,
            member,
            proposals: ptx,
            reads: rtx,
        }
    }

    /// A full response header at `revision`.
    pub fn header(&self, revision: i64) -> Option<pb::ResponseHeader> {
        self.state.header(revision)
    }

    /// Fills the member fields of a header that carries a revision.
    pub fn fill(&self, h: &mut Option<pb::ResponseHeader>) {
        let rev = h.as_ref().map(|h| h.revision).unwrap_or(0);
        *h = self.header(rev);
    }

    /// Proposes `req` through Raft and waits until it is applied.
    pub async fn propose(&self, req: Request) -> Result<Response> {
        if req.encoded_len() > self.state.limits.max_request_bytes {
            return Err(StoreError::RequestTooLarge);
        }
        let (tx, rx) = oneshot::channel();
        self.proposals
            .send((req, tx))
            .map_err(|_| StoreError::NoLeader)?;
        match rx.await.map_err(|_| StoreError::NoLeader)?? {
            Response::Error(e) => Err(e),
            other => Ok(other),
        }
    }

    /// Waits until this member has applied everything committed before the call (a
    /// linearizable read point).
    pub async fn linearizable(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.reads.send(tx).map_err(|_| StoreError::NoLeader)?;
        rx.await.map_err(|_| StoreError::NoLeader)?
    }

    /// Raises the NOSPACE alarm when a write of `cost` bytes would exceed the quota.
    pub async fn check_quota(&self, cost: u64) -> Result<()> {
        if self.state.nospace() {
            return Err(StoreError::NoSpace);
        }
        if self.state.quota_allows(cost) {
            return Ok(());
        }
        let alarm = pb::AlarmRequest {
            action: pb::alarm_request::AlarmAction::Activate as i32,
            member_id: self.member_id,
            alarm: pb::AlarmType::Nospace as i32,
        };
        if let Err(e) = self.propose(Request::Alarm(alarm)).await {
            tracing::warn!(error = %e, "raising the NOSPACE alarm failed");
        }
        tracing::warn!(
            quota = self.state.limits.quota_backend_bytes,
            "database space exceeded: NOSPACE alarm raised, writes refused until disarmed"
        );
        Err(StoreError::NoSpace)
    }
}

/// tonic reports a request over the size limit as `OutOfRange` "Error, decoded message length
/// too large: found N bytes, the limit is: M bytes"; etcd (grpc-go) as `ResourceExhausted`
/// "grpc: received message larger than max (N vs. M)". Rewrites the former into the latter so
/// clients see what etcd would say.
pub fn etcd_status_compat<B>(mut resp: http::Response<B>) -> http::Response<B> {
    let headers = resp.headers_mut();
    if headers.get("grpc-status").map(|v| v.as_bytes()) != Some(b"11") {
        return resp;
    }
    let Some(msg) = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .map(percent_decode)
    else {
        return resp;
    };
    if let Some(text) = oversize_message(&msg)
        && let Ok(v) = http::HeaderValue::from_str(&text)
    {
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
        headers.insert("grpc-message", v);
    }
    resp
}

/// The same rewrite for a status a streaming call ends with.
pub(crate) fn etcd_status(s: tonic::Status) -> tonic::Status {
    match (s.code(), oversize_message(s.message())) {
        (tonic::Code::OutOfRange, Some(text)) => tonic::Status::resource_exhausted(text),
        _ => s,
    }
}

/// grpc-go's text for tonic's "decoded message length too large" error.
fn oversize_message(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("Error, decoded message length too large: found ")?;
    let mut nums = rest
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty());
    let (found, limit) = (nums.next()?, nums.next()?);
    Some(format!(
        "grpc: received message larger than max ({found} vs. {limit})"
    ))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = s
                .get(i + 1..i + 3)
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

/// Request-level validation before proposing (etcd's checkPutRequest and friends).
pub(crate) fn check_put(r: &pb::PutRequest) -> Result<()> {
    if r.key.is_empty() {
        return Err(StoreError::EmptyKey);
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(StoreError::ValueProvided);
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(StoreError::LeaseProvided);
    }
    Ok(())
}

pub(crate) fn check_range(r: &pb::RangeRequest) -> Result<()> {
    if r.key.is_empty() {
        return Err(StoreError::EmptyKey);
    }
    Ok(())
}

pub(crate) fn check_delete(r: &pb::DeleteRangeRequest) -> Result<()> {
    if r.key.is_empty() {
        return Err(StoreError::EmptyKey);
    }
    Ok(())
}

/// etcd's checkTxnRequest + checkIntervals.
pub(crate) fn check_txn(r: &pb::TxnRequest, max_ops: usize) -> Result<()> {
    check_txn_ops(r, max_ops)?;
    check_intervals(&r.success)?;
    check_intervals(&r.failure)?;
    Ok(())
}

fn check_txn_ops(r: &pb::TxnRequest, max_ops: usize) -> Result<()> {
    // Like etcd, a nested txn may only use the ops its parent left over.
    let opc = r.compare.len().max(r.success.len()).max(r.failure.len());
    if opc > max_ops {
        return Err(StoreError::TooManyOps);
    }
    for c in &r.compare {
        if c.key.is_empty() {
            return Err(StoreError::EmptyKey);
        }
    }
    for op in r.success.iter().chain(r.failure.iter()) {
        match &op.request {
            Some(request_op::Request::RequestRange(x)) => check_range(x)?,
            Some(request_op::Request::RequestPut(x)) => check_put(x)?,
            Some(request_op::Request::RequestDeleteRange(x)) => check_delete(x)?,
            Some(request_op::Request::RequestTxn(x)) => check_txn_ops(x, max_ops - opc)?,
            // etcd's checkRequestOp: an empty op is "key not found".
            None => return Err(StoreError::KeyNotFound),
        }
    }
    Ok(())
}

/// Puts and deletes of one branch (with nested txns) may not touch the same key twice.
fn check_intervals(ops: &[pb::RequestOp]) -> Result<(HashSet<Vec<u8>>, Vec<KeyRange>)> {
    let mut dels: Vec<KeyRange> = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(request_op::Request::RequestDeleteRange(d)) => {
                Some(KeyRange::from_request(&d.key, &d.range_end))
            }
            _ => None,
        })
        .collect();
    let hits = |dels: &[KeyRange], k: &[u8]| dels.iter().any(|d| d.contains(k));
    let mut puts: HashSet<Vec<u8>> = HashSet::new();
    for op in ops {
        let Some(request_op::Request::RequestTxn(t)) = &op.request else {
            continue;
        };
        let (puts_then, dels_then) = check_intervals(&t.success)?;
        let (puts_else, dels_else) = check_intervals(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || hits(&dels, k) {
                return Err(StoreError::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        for k in &puts_else {
            // then and else are exclusive: the same key in both is fine.
            if (puts.contains(k) && !puts_then.contains(k)) || hits(&dels, k) {
                return Err(StoreError::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let Some(request_op::Request::RequestPut(p)) = &op.request else {
            continue;
        };
        if puts.contains(&p.key) || hits(&dels, &p.key) {
            return Err(StoreError::DuplicateKey);
        }
        puts.insert(p.key.clone());
    }
    Ok((puts, dels))
}

/// Whether every range in the txn asks for a serializable read.
pub(crate) fn txn_is_read_only(r: &pb::TxnRequest) -> bool {
    r.success
        .iter()
        .chain(r.failure.iter())
        .all(|op| match &op.request {
            Some(request_op::Request::RequestRange(_)) | None => true,
            Some(request_op::Request::RequestTxn(t)) => txn_is_read_only(t),
            _ => false,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str) -> pb::RequestOp {
        pb::RequestOp {
            request: Some(request_op::Request::RequestPut(pb::PutRequest {
                key: k.as_bytes().to_vec(),
                ..Default::default()
            })),
        }
    }

    fn del(k: &str, end: &str) -> pb::RequestOp {
        pb::RequestOp {
            request: Some(request_op::Request::RequestDeleteRange(
                pb::DeleteRangeRequest {
                    key: k.as_bytes().to_vec(),
                    range_end: end.as_bytes().to_vec(),
                    ..Default::default()
                },
            )),
        }
    }

    fn txn(success: Vec<pb::RequestOp>, failure: Vec<pb::RequestOp>) -> pb::TxnRequest {
        pb::TxnRequest {
            compare: vec![],
            success,
            failure,
        }
    }

    #[test]
    fn oversize_requests_are_reported_like_grpc_go() {
        let resp = http::Response::builder()
            .header("grpc-status", "11")
            .header(
                "grpc-message",
                "Error,%20decoded%20message%20length%20too%20large:%20found%203145744%20bytes,%20the%20limit%20is:%202097152%20bytes",
            )
            .body(())
            .expect("response");
        let resp = etcd_status_compat(resp);
        assert_eq!(resp.headers()["grpc-status"], "8");
        assert_eq!(
            resp.headers()["grpc-message"],
            "grpc: received message larger than max (3145744 vs. 2097152)"
        );
        let other = http::Response::builder()
            .header("grpc-status", "11")
            .header(
                "grpc-message",
                "etcdserver: mvcc: required revision is a future revision",
            )
            .body(())
            .expect("response");
        assert_eq!(etcd_status_compat(other).headers()["grpc-status"], "11");
    }

    #[test]
    fn duplicate_keys_in_a_branch_are_refused() {
        assert_eq!(
            check_txn(&txn(vec![put("a"), put("a")], vec![]), 128),
            Err(StoreError::DuplicateKey)
        );
        assert_eq!(
            check_txn(&txn(vec![put("b"), del("a", "c")], vec![]), 128),
            Err(StoreError::DuplicateKey)
        );
        assert_eq!(check_txn(&txn(vec![put("a")], vec![put("a")]), 128), Ok(()));
        let nested = pb::RequestOp {
            request: Some(request_op::Request::RequestTxn(txn(
                vec![put("a")],
                vec![put("a")],
            ))),
        };
        assert_eq!(check_txn(&txn(vec![nested.clone()], vec![]), 128), Ok(()));
        assert_eq!(
            check_txn(&txn(vec![nested, put("a")], vec![]), 128),
            Err(StoreError::DuplicateKey)
        );
        assert_eq!(
            check_txn(&txn(vec![put("a"); 129], vec![]), 128),
            Err(StoreError::TooManyOps)
        );
    }
}
