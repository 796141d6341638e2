//! The Raft state machine: applies committed entries to the MVCC store, leases and alarms,
//! one redb transaction per batch, then publishes the new revisions to watchers.

use std::collections::HashSet;
use std::io::Cursor;
use std::sync::Arc;

use kumo_etcd_proto::mvccpb::{Event, KeyValue};
use kumo_etcd_proto::pb::{
    self, AlarmType, alarm_request::AlarmAction, compare, request_op, response_op,
};
use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder};

use super::log::{decode_membership, encode_membership};
use super::{
    Entry, LogId, Request, Response, StorageError, StoredMembership, TypeConfig, rev_header,
};
use crate::error::StoreError;
use crate::mvcc::{self, BatchWriter, KeyRange, LeaseHooks, Rev, StoreTxn};
use crate::state::{StoreState, decode_log_id, encode_alarms, encode_log_id};

fn sm_err(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    StorageError::from_io_error(
        ErrorSubject::StateMachine,
        verb,
        std::io::Error::other(e.to_string()),
    )
}

/// The state machine handle given to openraft.
#[derive(Debug, Clone)]
pub struct StateMachine {
    state: Arc<StoreState>,
}

impl StateMachine {
    pub fn new(state: Arc<StoreState>) -> StateMachine {
        StateMachine { state }
    }
}

/// Work that must wait until the batch committed.
#[derive(Default)]
struct After {
    revs: Vec<(i64, Vec<Event>)>,
    compactions: Vec<(i64, HashSet<Rev>)>,
}

fn encode_stored_membership(m: &StoredMembership) -> Vec<u8> {
    let mut b = encode_log_id(m.log_id());
    if b.is_empty() {
        b = vec![0; 24];
    }
    b.extend_from_slice(&encode_membership(m.membership()));
    b
}

impl StoreState {
    fn apply_batch(self: &Arc<Self>, entries: Vec<Entry>) -> Result<Vec<Response>, StorageError> {
        let started = std::time::Instant::now();
        let mut w = self
            .mvcc
            .begin_write()
            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        let mut out = Vec::with_capacity(entries.len());
        let mut after = After::default();
        let (mut applied, mut membership) = self.applied.lock().clone();
        for entry in entries {
            applied = Some(entry.log_id);
            let resp = match &entry.payload {
                EntryPayload::Blank => Response::None,
                EntryPayload::Membership(m) => {
                    membership = StoredMembership::new(Some(entry.log_id), m.clone());
                    Response::None
                }
                EntryPayload::Normal(crate::raft::Request::Batch(reqs)) => {
                    let mut rs = Vec::with_capacity(reqs.len());
                    for req in reqs {
                        rs.push(self.apply_one(&mut w, req, &mut after)?);
                    }
                    Response::Batch(rs)
                }
                EntryPayload::Normal(req) => self.apply_one(&mut w, req, &mut after)?,
            };
            out.push(resp);
        }
        {
            let mut meta = w
                .txn()
                .open_table(mvcc::META)
                .map_err(|e| sm_err(ErrorVerb::Write, e))?;
            meta.insert("raft.applied", encode_log_id(&applied).as_slice())
                .map_err(|e| sm_err(ErrorVerb::Write, e))?;
            meta.insert(
                "raft.membership",
                encode_stored_membership(&membership).as_slice(),
            )
            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        }
        w.commit().map_err(|e| sm_err(ErrorVerb::Write, e))?;
        *self.applied.lock() = (applied, membership);
        self.hub.publish(&after.revs);
        self.metrics.observe_apply(started.elapsed(), out.len());
        for (at, keep) in after.compactions {
            let state = self.clone();
            tokio::task::spawn_blocking(move || {
                if let Err(e) = state.mvcc.physical_compact(at, &keep) {
                    tracing::error!(error = %e, revision = at, "physical compaction failed");
                }
            });
        }
        Ok(out)
    }

    fn apply_one(
        &self,
        w: &mut BatchWriter<'_>,
        req: &Request,
        after: &mut After,
    ) -> Result<Response, StorageError> {
        match self.apply_request(w, req, after) {
            Ok(r) => Ok(r),
            Err(StoreError::Internal(e)) => Err(sm_err(ErrorVerb::Write, e)),
            Err(e) => Ok(Response::Error(e)),
        }
    }

    fn apply_request(
        &self,
        w: &mut BatchWriter<'_>,
        req: &Request,
        after: &mut After,
    ) -> Result<Response, StoreError> {
        match req {
            Request::Put(p) => {
                if self.nospace() {
                    return Err(StoreError::NoSpace);
                }
                if p.lease != 0 && !self.lessor.exists(p.lease) {
                    return Err(StoreError::LeaseNotFound);
                }
                let mut t = w.store_txn()?;
                let r = put_in(&mut t, p, &self.lessor, self.hub.wants_prev_kv());
                let (rev, evs) = t.end();
                if !evs.is_empty() {
                    after.revs.push((rev, evs));
                }
                let mut resp = r?;
                resp.header = rev_header(rev);
                Ok(Response::Put(resp))
            }
            Request::DeleteRange(d) => {
                let mut t = w.store_txn()?;
                let r = delete_in(&mut t, d, &self.lessor);
                let (rev, evs) = t.end();
                if !evs.is_empty() {
                    after.revs.push((rev, evs));
                }
                let mut resp = r?;
                resp.header = rev_header(rev);
                Ok(Response::DeleteRange(resp))
            }
            Request::Txn(txn) => {
                if self.nospace() && txn_has_put(txn) {
                    return Err(StoreError::NoSpace);
                }
                let mut t = w.store_txn()?;
                let path = compare_to_path(&t, txn)?;
                if let Err(e) = check_requests(&t, txn, &path, &self.lessor) {
                    t.end();
                    return Err(e);
                }
                let want_prev = self.hub.wants_prev_kv();
                let r = apply_txn(&mut t, txn, &path, &self.lessor, want_prev);
                let (rev, evs) = t.end();
                if !evs.is_empty() {
                    after.revs.push((rev, evs));
                }
                let mut resp = r?;
                resp.header = rev_header(rev);
                Ok(Response::Txn(resp))
            }
            Request::Compact(c) => {
                let keep = w.compact(c.revision)?;
                after.compactions.push((c.revision, keep));
                Ok(Response::Compact {
                    revision: c.revision,
                    rev: w.rev(),
                })
            }
            Request::LeaseGrant(g) => {
                if self.nospace() {
                    return Err(StoreError::NoSpace);
                }
                let ttl = self.lessor.grant(g.id, g.ttl)?;
                let mut leases = w.txn().open_table(mvcc::LEASES)?;
                leases.insert(g.id, ttl)?;
                Ok(Response::LeaseGrant(pb::LeaseGrantResponse {
                    header: rev_header(w.rev()),
                    id: g.id,
                    ttl,
                    error: String::new(),
                }))
            }
            Request::LeaseRevoke(r) => {
                let keys = self.lessor.revoke(r.id)?;
                {
                    let mut leases = w.txn().open_table(mvcc::LEASES)?;
                    leases.remove(r.id)?;
                }
                if !keys.is_empty() {
                    let mut t = w.store_txn()?;
                    for k in keys {
                        t.delete_range(&KeyRange::Single(k), &self.lessor)?;
                    }
                    let (rev, evs) = t.end();
                    if !evs.is_empty() {
                        after.revs.push((rev, evs));
                    }
                }
                Ok(Response::LeaseRevoke(pb::LeaseRevokeResponse {
                    header: rev_header(w.rev()),
                }))
            }
            Request::Batch(_) => Err(StoreError::Unimplemented("nested batch".into())),
            Request::Alarm(a) => {
                let mut alarms = self.alarms.lock();
                let item = (a.member_id, a.alarm);
                let mut resp = pb::AlarmResponse {
                    header: rev_header(w.rev()),
                    alarms: Vec::new(),
                };
                let member = pb::AlarmMember {
                    member_id: a.member_id,
                    alarm: a.alarm,
                };
                match AlarmAction::try_from(a.action) {
                    Ok(AlarmAction::Activate) if a.alarm != AlarmType::None as i32 => {
                        alarms.insert(item);
                        resp.alarms.push(member);
                    }
                    Ok(AlarmAction::Deactivate) if alarms.remove(&item) => {
                        resp.alarms.push(member);
                    }
                    _ => {}
                }
                let mut meta = w.txn().open_table(mvcc::META)?;
                meta.insert("alarms", encode_alarms(&alarms).as_slice())?;
                Ok(Response::Alarm(resp))
            }
        }
    }

    /// Makes everything applied so far durable and returns what it covers.
    /// What it covers is read inside the durable transaction, not from the in-memory applied
    /// position: an apply committing between the two would be claimed durable, and the log
    /// purged past what a crash recovers.
    fn checkpoint(&self) -> Result<SnapshotMeta<u64, super::MemberNode>, StoreError> {
        let (held, info) = self.mvcc.durable_checkpoint()?;
        let meta = snapshot_meta(&info)?;
        tracing::info!(
            applied = meta.last_log_id.map(|l| l.index).unwrap_or(0),
            held_ms = held.as_millis() as u64,
            "durable checkpoint"
        );
        Ok(meta)
    }
}

/// The Raft position a database state reflects, from the values its last apply recorded.
fn snapshot_meta(
    info: &mvcc::snapshot::DumpInfo,
) -> Result<SnapshotMeta<u64, super::MemberNode>, StoreError> {
    let last_log_id = info.raft_applied.as_deref().and_then(decode_log_id);
    let last_membership = match info.raft_membership.as_deref() {
        Some(b) if b.len() >= 24 => StoredMembership::new(
            decode_log_id(&b[..24]),
            decode_membership(&b[24..]).map_err(StoreError::internal)?,
        ),
        _ => StoredMembership::default(),
    };
    Ok(SnapshotMeta {
        last_log_id,
        last_membership,
        snapshot_id: format!(
            "{}-{}",
            last_log_id.map(|l| l.leader_id.term).unwrap_or(0),
            last_log_id.map(|l| l.index).unwrap_or(0)
        ),
    })
}

fn txn_has_put(t: &pb::TxnRequest) -> bool {
    t.success
        .iter()
        .chain(t.failure.iter())
        .any(|op| match &op.request {
            Some(request_op::Request::RequestPut(_)) => true,
            Some(request_op::Request::RequestTxn(n)) => txn_has_put(n),
            _ => false,
        })
}

fn put_in(
    t: &mut StoreTxn<'_>,
    p: &pb::PutRequest,
    leases: &dyn LeaseHooks,
    want_prev: bool,
) -> Result<pb::PutResponse, StoreError> {
    let prev = if p.ignore_value || p.ignore_lease || p.prev_kv || want_prev {
        t.get(&p.key)?
    } else {
        None
    };
    if (p.ignore_value || p.ignore_lease) && prev.is_none() {
        return Err(StoreError::KeyNotFound);
    }
    let value = match (&prev, p.ignore_value) {
        (Some(pv), true) => pv.value.clone(),
        _ => p.value.clone(),
    };
    let lease = match (&prev, p.ignore_lease) {
        (Some(pv), true) => pv.lease,
        _ => p.lease,
    };
    let (prev_kv, event_prev) = match (p.prev_kv, want_prev) {
        (true, true) => (prev.clone(), prev),
        (true, false) => (prev, None),
        (false, true) => (None, prev),
        (false, false) => (None, None),
    };
    t.put(&p.key, value, lease, leases, event_prev)?;
    Ok(pb::PutResponse {
        header: rev_header(t.write_rev()),
        prev_kv,
    })
}

fn delete_in(
    t: &mut StoreTxn<'_>,
    d: &pb::DeleteRangeRequest,
    leases: &dyn LeaseHooks,
) -> Result<pb::DeleteRangeResponse, StoreError> {
    let range = KeyRange::from_request(&d.key, &d.range_end);
    let deleted = t.delete_range(&range, leases)?;
    Ok(pb::DeleteRangeResponse {
        header: rev_header(t.read_rev()),
        deleted: deleted.len() as i64,
        prev_kvs: if d.prev_kv { deleted } else { Vec::new() },
    })
}

fn compare_kv(c: &pb::Compare, kv: &KeyValue) -> bool {
    use compare::{CompareResult, CompareTarget, TargetUnion};
    let ord = match CompareTarget::try_from(c.target).unwrap_or(CompareTarget::Version) {
        CompareTarget::Value => {
            let v: &[u8] = match &c.target_union {
                Some(TargetUnion::Value(v)) => v,
                _ => &[],
            };
            kv.value.as_slice().cmp(v)
        }
        CompareTarget::Create => {
            let v = match c.target_union {
                Some(TargetUnion::CreateRevision(v)) => v,
                _ => 0,
            };
            kv.create_revision.cmp(&v)
        }
        CompareTarget::Mod => {
            let v = match c.target_union {
                Some(TargetUnion::ModRevision(v)) => v,
                _ => 0,
            };
            kv.mod_revision.cmp(&v)
        }
        CompareTarget::Version => {
            let v = match c.target_union {
                Some(TargetUnion::Version(v)) => v,
                _ => 0,
            };
            kv.version.cmp(&v)
        }
        CompareTarget::Lease => {
            let v = match c.target_union {
                Some(TargetUnion::Lease(v)) => v,
                _ => 0,
            };
            kv.lease.cmp(&v)
        }
    };
    match CompareResult::try_from(c.result).unwrap_or(CompareResult::Equal) {
        CompareResult::Equal => ord.is_eq(),
        CompareResult::NotEqual => ord.is_ne(),
        CompareResult::Greater => ord.is_gt(),
        CompareResult::Less => ord.is_lt(),
    }
}

fn apply_compare(t: &StoreTxn<'_>, c: &pb::Compare) -> Result<bool, StoreError> {
    let r = t.range(&pb::RangeRequest {
        key: c.key.clone(),
        range_end: c.range_end.clone(),
        ..Default::default()
    })?;
    if r.kvs.is_empty() {
        if c.target == compare::CompareTarget::Value as i32 {
            return Ok(false);
        }
        return Ok(compare_kv(c, &KeyValue::default()));
    }
    Ok(r.kvs.iter().all(|kv| compare_kv(c, kv)))
}

/// Evaluates every compare of the txn tree against the state before the txn (etcd's
/// compareToPath): one bool per txn on the taken path, depth first.
fn compare_to_path(t: &StoreTxn<'_>, txn: &pb::TxnRequest) -> Result<Vec<bool>, StoreError> {
    let mut ok = true;
    for c in &txn.compare {
        if !apply_compare(t, c)? {
            ok = false;
            break;
        }
    }
    let mut path = vec![ok];
    let ops = if ok { &txn.success } else { &txn.failure };
    for op in ops {
        if let Some(request_op::Request::RequestTxn(n)) = &op.request {
            path.extend(compare_to_path(t, n)?);
        }
    }
    Ok(path)
}

/// Validates the ops on the taken path before anything is written (etcd's checkRequests).
fn check_requests(
    t: &StoreTxn<'_>,
    txn: &pb::TxnRequest,
    path: &[bool],
    leases: &dyn LeaseHooks,
) -> Result<usize, StoreError> {
    let ops = if path[0] { &txn.success } else { &txn.failure };
    let mut used = 1;
    for op in ops {
        match &op.request {
            Some(request_op::Request::RequestPut(p)) => {
                if p.lease != 0 && !leases.exists(p.lease) {
                    return Err(StoreError::LeaseNotFound);
                }
                if (p.ignore_value || p.ignore_lease) && t.get(&p.key)?.is_none() {
                    return Err(StoreError::KeyNotFound);
                }
            }
            Some(request_op::Request::RequestRange(r)) => {
                mvcc::check_read_rev(r.revision, t.read_rev(), t.compacted_rev())?;
            }
            Some(request_op::Request::RequestTxn(n)) => {
                used += check_requests(t, n, &path[used..], leases)?;
            }
            _ => {}
        }
    }
    Ok(used)
}

fn apply_txn(
    t: &mut StoreTxn<'_>,
    txn: &pb::TxnRequest,
    path: &[bool],
    leases: &dyn LeaseHooks,
    want_prev: bool,
) -> Result<pb::TxnResponse, StoreError> {
    let succeeded = path[0];
    let ops = if succeeded {
        &txn.success
    } else {
        &txn.failure
    };
    let mut used = 1;
    let mut responses = Vec::with_capacity(ops.len());
    for op in ops {
        let r = match &op.request {
            Some(request_op::Request::RequestRange(r)) => {
                response_op::Response::ResponseRange(t.range(r)?)
            }
            Some(request_op::Request::RequestPut(p)) => {
                response_op::Response::ResponsePut(put_in(t, p, leases, want_prev)?)
            }
            Some(request_op::Request::RequestDeleteRange(d)) => {
                response_op::Response::ResponseDeleteRange(delete_in(t, d, leases)?)
            }
            Some(request_op::Request::RequestTxn(n)) => {
                let sub = &path[used..];
                used += count_path(n, sub);
                let mut resp = apply_txn(t, n, sub, leases, want_prev)?;
                // etcd leaves a nested txn's header empty.
                resp.header = Some(pb::ResponseHeader::default());
                response_op::Response::ResponseTxn(resp)
            }
            None => continue,
        };
        responses.push(pb::ResponseOp { response: Some(r) });
    }
    Ok(pb::TxnResponse {
        header: None,
        succeeded,
        responses,
    })
}

/// Number of path entries a txn subtree uses.
fn count_path(txn: &pb::TxnRequest, path: &[bool]) -> usize {
    let ops = if path[0] { &txn.success } else { &txn.failure };
    let mut used = 1;
    for op in ops {
        if let Some(request_op::Request::RequestTxn(n)) = &op.request {
            used += count_path(n, &path[used..]);
        }
    }
    used
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok(self.state.applied.lock().clone())
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // Applying is short CPU work (the redb commit is not synced), done in place.
        let entries: Vec<Entry> = entries.into_iter().collect();
        self.state.apply_batch(entries)
    }

    async fn get_snapshot_builder(&mut self) -> StateMachine {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, super::MemberNode>,
        _snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        // Only a follower installs snapshots, and a single-voter store has none; "store HA"
        // brings replacing the database from a leader's snapshot.
        Err(sm_err(
            ErrorVerb::Write,
            format!("installing snapshot {} needs store HA", meta.snapshot_id),
        ))
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let state = self.state.clone();
        let res = tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
            let (mut data, info) = mvcc::snapshot::dump(&state.mvcc)?;
            let sum = mvcc::snapshot::checksum(&data);
            data.extend_from_slice(&sum);
            // The metadata must describe exactly what the dump holds.
            Ok((snapshot_meta(&info)?, data))
        })
        .await
        .map_err(|e| sm_err(ErrorVerb::Read, e))?
        .map_err(|e| sm_err(ErrorVerb::Read, e))?;
        Ok(Some(Snapshot {
            meta: res.0,
            snapshot: Box::new(Cursor::new(res.1)),
        }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    /// A snapshot of this store is its redb database: building one makes everything applied
    /// durable (so the log before it can be purged) and records what it covers. The bytes a
    /// follower would need are produced on demand by `get_current_snapshot`.
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let state = self.state.clone();
        let meta = tokio::task::spawn_blocking(move || state.checkpoint())
            .await
            .map_err(|e| sm_err(ErrorVerb::Write, e))?
            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(Vec::new())),
        })
    }
}
