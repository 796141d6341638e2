//! The Raft layer (openraft): every mutation of the store is a log entry, durable in the
//! write-ahead log ([`log::LogStore`]) before it is acknowledged, then applied to the MVCC
//! state machine ([`sm::StateMachine`]).

// openraft's trait signatures fix the (large) `StorageError` type.
#![allow(clippy::result_large_err)]

pub mod log;
pub mod network;
pub mod sm;

use std::io::Cursor;

use kumo_etcd_proto::pb;
use prost::Message;

use crate::error::StoreError;

/// A member of the store cluster as Raft sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemberNode {
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
}

openraft::declare_raft_types!(
    /// kumo store's Raft types.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = u64,
        Node = MemberNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<u64>;
pub type Vote = openraft::Vote<u64>;
pub type StorageError = openraft::StorageError<u64>;
pub type Membership = openraft::Membership<u64, MemberNode>;
pub type StoredMembership = openraft::StoredMembership<u64, MemberNode>;

/// A state change proposed through Raft (etcd's InternalRaftRequest).
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Put(pb::PutRequest),
    DeleteRange(pb::DeleteRangeRequest),
    Txn(pb::TxnRequest),
    Compact(pb::CompactionRequest),
    LeaseGrant(pb::LeaseGrantRequest),
    LeaseRevoke(pb::LeaseRevokeRequest),
    Alarm(pb::AlarmRequest),
    /// Requests of many concurrent clients proposed as one entry (one WAL sync for all);
    /// applied one after the other exactly as separate entries would be.
    Batch(Vec<Request>),
}

impl Request {
    fn tag(&self) -> u8 {
        match self {
            Request::Put(_) => 1,
            Request::DeleteRange(_) => 2,
            Request::Txn(_) => 3,
            Request::Compact(_) => 4,
            Request::LeaseGrant(_) => 5,
            Request::LeaseRevoke(_) => 6,
            Request::Alarm(_) => 7,
            Request::Batch(_) => 8,
        }
    }

    /// Encoded size, as etcd counts it against `--max-request-bytes`.
    pub fn encoded_len(&self) -> usize {
        1 + match self {
            Request::Put(r) => r.encoded_len(),
            Request::DeleteRange(r) => r.encoded_len(),
            Request::Txn(r) => r.encoded_len(),
            Request::Compact(r) => r.encoded_len(),
            Request::LeaseGrant(r) => r.encoded_len(),
            Request::LeaseRevoke(r) => r.encoded_len(),
            Request::Alarm(r) => r.encoded_len(),
            Request::Batch(rs) => rs.iter().map(|r| 4 + r.encoded_len()).sum(),
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.tag());
        // Encoding into a Vec cannot fail.
        let _ = match self {
            Request::Put(r) => r.encode(out),
            Request::DeleteRange(r) => r.encode(out),
            Request::Txn(r) => r.encode(out),
            Request::Compact(r) => r.encode(out),
            Request::LeaseGrant(r) => r.encode(out),
            Request::LeaseRevoke(r) => r.encode(out),
            Request::Alarm(r) => r.encode(out),
            Request::Batch(rs) => {
                for r in rs {
                    let at = out.len();
                    out.extend_from_slice(&[0; 4]);
                    r.encode(out);
                    let len = (out.len() - at - 4) as u32;
                    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
                }
                Ok(())
            }
        };
    }

    /// Decodes an encoded request; `None` for anything malformed.
    pub fn decode(b: &[u8]) -> Option<Request> {
        if b.len() > u32::MAX as usize {
            return None;
        }
        let (tag, body) = b.split_first()?;
        Some(match tag {
            1 => Request::Put(Message::decode(body).ok()?),
            2 => Request::DeleteRange(Message::decode(body).ok()?),
            3 => Request::Txn(Message::decode(body).ok()?),
            4 => Request::Compact(Message::decode(body).ok()?),
            5 => Request::LeaseGrant(Message::decode(body).ok()?),
            6 => Request::LeaseRevoke(Message::decode(body).ok()?),
            7 => Request::Alarm(Message::decode(body).ok()?),
            8 => {
                let mut rs = Vec::new();
                let mut p = body;
                while !p.is_empty() {
                    let len = u32::from_be_bytes(p.get(..4)?.try_into().ok()?) as usize;
                    let sub = p.get(4..4 + len)?;
                    // Batches do not nest: refuse before recursing (a deep nest overflows the stack).
                    (sub.first() != Some(&8)).then_some(())?;
                    match Request::decode(sub)? {
                        Request::Batch(_) => return None,
                        r => rs.push(r),
                    }
                    p = &p[4 + len..];
                }
                Request::Batch(rs)
            }
            _ => return None,
        })
    }
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Put(_) => f.write_str("put"),
            Request::DeleteRange(_) => f.write_str("delete_range"),
            Request::Txn(_) => f.write_str("txn"),
            Request::Compact(c) => write!(f, "compact({})", c.revision),
            Request::LeaseGrant(l) => write!(f, "lease_grant({})", l.id),
            Request::LeaseRevoke(l) => write!(f, "lease_revoke({})", l.id),
            Request::Alarm(_) => f.write_str("alarm"),
            Request::Batch(rs) => write!(f, "batch({})", rs.len()),
        }
    }
}

/// The result of applying a [`Request`]; headers carry only the revision, the server fills
/// in the rest.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    Put(pb::PutResponse),
    DeleteRange(pb::DeleteRangeResponse),
    Txn(pb::TxnResponse),
    /// Compaction accepted at `revision`; `rev` is the store revision.
    Compact {
        revision: i64,
        rev: i64,
    },
    LeaseGrant(pb::LeaseGrantResponse),
    LeaseRevoke(pb::LeaseRevokeResponse),
    Alarm(pb::AlarmResponse),
    Batch(Vec<Response>),
    Error(StoreError),
    /// Blank and membership entries.
    None,
}

/// Builds a header carrying only a revision.
pub(crate) fn rev_header(rev: i64) -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader {
        revision: rev,
        ..Default::default()
    })
}
