//! The state shared by the state machine and the API services of one member.

use std::collections::BTreeSet;
use std::sync::Arc;

use kumo_etcd_proto::pb::{self, AlarmType};
use parking_lot::Mutex;
use redb::ReadableDatabase;

use crate::error::{Result, StoreError};
use crate::lease::Lessor;
use crate::metrics::Metrics;
use crate::mvcc::{self, LeaseHooks, Mvcc, meta_get};
use crate::raft::log::decode_membership;
use crate::raft::{LogId, StoredMembership};
use crate::watch::{HeaderInfo, WatchHub};

/// Limits and identity the state needs.
#[derive(Debug, Clone)]
pub struct Limits {
    /// `--quota-backend-bytes`.
    pub quota_backend_bytes: u64,
    /// `--max-request-bytes`.
    pub max_request_bytes: usize,
    /// `--max-txn-ops`.
    pub max_txn_ops: usize,
    /// Interval of watch progress notifications.
    pub progress_interval: std::time::Duration,
}

/// Everything of one member that the Raft state machine writes and the services read.
#[derive(Debug)]
pub struct StoreState {
    pub mvcc: Mvcc,
    pub lessor: Lessor,
    pub hub: Arc<WatchHub>,
    pub info: Arc<HeaderInfo>,
    pub limits: Limits,
    pub metrics: Metrics,
    /// Raised alarms: (member id, alarm type).
    pub alarms: Mutex<BTreeSet<(u64, i32)>>,
    /// Last applied log id and membership, as persisted with the data.
    pub applied: Mutex<(Option<LogId>, StoredMembership)>,
}

pub(crate) fn encode_log_id(l: &Option<LogId>) -> Vec<u8> {
    match l {
        Some(l) => [
            l.leader_id.term.to_be_bytes(),
            l.leader_id.node_id.to_be_bytes(),
            l.index.to_be_bytes(),
        ]
        .concat(),
        None => Vec::new(),
    }
}

pub(crate) fn decode_log_id(b: &[u8]) -> Option<LogId> {
    if b.len() != 24 {
        return None;
    }
    let u = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
    Some(LogId::new(
        openraft::CommittedLeaderId::new(u(0), u(8)),
        u(16),
    ))
}

pub(crate) fn encode_alarms(a: &BTreeSet<(u64, i32)>) -> Vec<u8> {
    postcard::to_allocvec(a).unwrap_or_default()
}

impl StoreState {
    /// Opens the member's database and rebuilds leases and alarms from it.
    pub fn open(
        db_path: &std::path::Path,
        info: Arc<HeaderInfo>,
        limits: Limits,
        min_lease_ttl: i64,
        metrics: Metrics,
    ) -> Result<StoreState> {
        let mvcc = Mvcc::open(db_path)?;
        let lessor = Lessor::new(min_lease_ttl);
        let (applied, membership, alarms) = mvcc.with_db(|db| -> Result<_> {
            let r = db.begin_read()?;
            let meta = r.open_table(mvcc::META)?;
            let applied = meta_get(&meta, "raft.applied")?.and_then(|b| decode_log_id(&b));
            let membership = match meta_get(&meta, "raft.membership")? {
                Some(b) if b.len() >= 24 => {
                    let log_id = decode_log_id(&b[..24]);
                    let m = decode_membership(&b[24..]).map_err(StoreError::internal)?;
                    StoredMembership::new(log_id, m)
                }
                Some(b) => {
                    let m = decode_membership(&b).map_err(StoreError::internal)?;
                    StoredMembership::new(None, m)
                }
                None => StoredMembership::default(),
            };
            let alarms: BTreeSet<(u64, i32)> = meta_get(&meta, "alarms")?
                .and_then(|b| postcard::from_bytes(&b).ok())
                .unwrap_or_default();
            let leases = r.open_table(mvcc::LEASES)?;
            use redb::ReadableTable;
            for row in leases.iter()? {
                let (id, ttl) = row?;
                lessor.restore(id.value(), ttl.value());
            }
            Ok((applied, membership, alarms))
        })?;
        // Re-attach live keys to their leases.
        if !lessor.is_empty() {
            let all = mvcc.range(&pb::RangeRequest {
                key: vec![0],
                range_end: vec![0],
                ..Default::default()
            })?;
            for kv in all.kvs.iter().filter(|kv| kv.lease != 0) {
                lessor.attach(kv.lease, &kv.key);
            }
        }
        let hub = Arc::new(WatchHub::new(info.clone(), mvcc.current_rev()));
        Ok(StoreState {
            mvcc,
            lessor,
            hub,
            info,
            limits,
            metrics,
            alarms: Mutex::new(alarms),
            applied: Mutex::new((applied, membership)),
        })
    }

    /// A response header for `revision`.
    pub fn header(&self, revision: i64) -> Option<pb::ResponseHeader> {
        self.info.header(revision)
    }

    pub fn limits_progress_interval(&self) -> std::time::Duration {
        self.limits.progress_interval
    }

    pub fn nospace(&self) -> bool {
        self.alarms
            .lock()
            .iter()
            .any(|(_, a)| *a == AlarmType::Nospace as i32)
    }

    /// Whether writing `cost` more bytes stays within the quota.
    pub fn quota_allows(&self, cost: u64) -> bool {
        let q = self.limits.quota_backend_bytes;
        q == 0 || self.mvcc.db_size().saturating_add(cost) < q
    }
}
