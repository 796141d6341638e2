//! The apiserver's only door to the store: the etcd v3 API (KV + Watch), so kumo's apiserver
//! runs on `kumo store` and on a real etcd alike.
//!
//! Writes are optimistic: create is a Txn guarded by `create_revision == 0`, update and delete
//! by `mod_revision == <the revision the caller read>`.

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kumo_etcd_proto::mvccpb;
use kumo_etcd_proto::pb::{
    self, compare, kv_client::KvClient, request_op, response_op, watch_client::WatchClient,
    watch_request,
};
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};

/// A store failure, mapped to a `Status` by the handlers.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("etcd request failed: {0}")]
    Rpc(#[from] tonic::Status),
    #[error("etcd endpoint: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The requested revision was compacted.
    #[error("required revision has been compacted")]
    Compacted { compact_revision: i64 },
    #[error("{0}")]
    Other(String),
}

impl StoreError {
    fn from_status(s: tonic::Status) -> StoreError {
        if s.message().contains("required revision has been compacted") {
            StoreError::Compacted {
                compact_revision: 0,
            }
        } else {
            StoreError::Rpc(s)
        }
    }
}

/// One stored key-value with its revisions.
#[derive(Debug, Clone)]
pub struct Kv {
    pub key: String,
    pub value: Bytes,
    pub create_revision: i64,
    pub mod_revision: i64,
}

impl Kv {
    fn from_pb(kv: mvccpb::KeyValue) -> Kv {
        Kv {
            key: String::from_utf8_lossy(&kv.key).into_owned(),
            value: Bytes::from(kv.value),
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
        }
    }
}

/// Result of a guarded write.
#[derive(Debug)]
pub enum WriteOutcome {
    /// Written at this revision.
    Ok(i64),
    /// The guard failed; the current value (if any) is returned.
    Conflict(Option<Kv>),
}

/// A page of a range read.
#[derive(Debug)]
pub struct Page {
    pub kvs: Vec<Kv>,
    /// The store revision the page was read at.
    pub revision: i64,
    pub more: bool,
}

/// One change from the store watch.
#[derive(Debug, Clone)]
pub enum StoreEvent {
    Put(Kv),
    Delete {
        key: String,
        mod_revision: i64,
    },
    /// A progress notification: everything up to this revision has been delivered.
    Progress(i64),
}

/// The etcd v3 client of the apiserver.
#[derive(Clone)]
pub struct Store {
    kv: KvClient<Channel>,
    watch: WatchClient<Channel>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

/// `prefix` + 1 on the last byte: the etcd range end covering every key with `prefix`.
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl Store {
    /// Connects lazily to the first of `endpoints` (`http://127.0.0.1:2379`); the channel
    /// reconnects by itself.
    pub fn connect(endpoints: &[String]) -> Result<Store, StoreError> {
        let eps = endpoints
            .iter()
            .map(|e| {
                let e = if e.contains("://") {
                    e.clone()
                } else {
                    format!("http://{e}")
                };
                Endpoint::from_shared(e).map(|ep| {
                    ep.connect_timeout(Duration::from_secs(5))
                        .tcp_nodelay(true)
                        .http2_keep_alive_interval(Duration::from_secs(30))
                        .keep_alive_while_idle(true)
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let channel = Channel::balance_list(eps.into_iter());
        let max = 64 * 1024 * 1024;
        Ok(Store {
            kv: KvClient::new(channel.clone())
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
            watch: WatchClient::new(channel)
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        })
    }

    /// The current store revision (a linearizable read).
    pub async fn current_revision(&self) -> Result<i64, StoreError> {
        self.probe(0).await
    }

    /// Whether the store still serves reads at `revision`: `Compacted` once it was compacted
    /// away (an RPC error for a future revision).
    pub async fn check_revision(&self, revision: i64) -> Result<(), StoreError> {
        self.probe(revision).await.map(drop)
    }

    /// A count-only read of one key at `revision` (0 = latest): the store's revision.
    async fn probe(&self, revision: i64) -> Result<i64, StoreError> {
        let key = b"/registry/kumo-revision-probe";
        let resp = timed(
            "count",
            key,
            self.kv.clone().range(pb::RangeRequest {
                key: key.to_vec(),
                count_only: true,
                revision,
                ..Default::default()
            }),
        )
        .await
        .map_err(StoreError::from_status)?
        .into_inner();
        Ok(resp.header.map(|h| h.revision).unwrap_or(0))
    }

    /// Reads one key (linearizable).
    pub async fn get(&self, key: &str) -> Result<(Option<Kv>, i64), StoreError> {
        let resp = timed(
            "get",
            key.as_bytes(),
            self.kv.clone().range(pb::RangeRequest {
                key: key.as_bytes().to_vec(),
                ..Default::default()
            }),
        )
        .await
        .map_err(StoreError::from_status)?
        .into_inner();
        let rev = resp.header.map(|h| h.revision).unwrap_or(0);
        Ok((resp.kvs.into_iter().next().map(Kv::from_pb), rev))
    }

    /// Reads keys in `[start, end)` at `revision` (0 = latest), at most `limit` (0 = all).
    pub async fn range(
        &self,
        start: &[u8],
        end: &[u8],
        revision: i64,
        limit: i64,
    ) -> Result<Page, StoreError> {
        let resp = timed(
            "list",
            start,
            self.kv.clone().range(pb::RangeRequest {
                key: start.to_vec(),
                range_end: end.to_vec(),
                revision,
                limit,
                ..Default::default()
            }),
        )
        .await
        .map_err(StoreError::from_status)?
        .into_inner();
        Ok(Page {
            revision: resp.header.map(|h| h.revision).unwrap_or(0),
            more: resp.more,
            kvs: resp.kvs.into_iter().map(Kv::from_pb).collect(),
        })
    }

    async fn txn(
        &self,
        operation: &str,
        key: &str,
        cmp: pb::Compare,
        success: request_op::Request,
    ) -> Result<WriteOutcome, StoreError> {
        let resp = timed(
            operation,
            key.as_bytes(),
            self.kv.clone().txn(pb::TxnRequest {
                compare: vec![cmp],
                success: vec![pb::RequestOp {
                    request: Some(success),
                }],
                failure: vec![pb::RequestOp {
                    request: Some(request_op::Request::RequestRange(pb::RangeRequest {
                        key: key.as_bytes().to_vec(),
                        ..Default::default()
                    })),
                }],
            }),
        )
        .await
        .map_err(StoreError::from_status)?
        .into_inner();
        let rev = resp.header.as_ref().map(|h| h.revision).unwrap_or(0);
        if resp.succeeded {
            return Ok(WriteOutcome::Ok(rev));
        }
        let current = resp.responses.into_iter().find_map(|r| match r.response {
            Some(response_op::Response::ResponseRange(rr)) => {
                rr.kvs.into_iter().next().map(Kv::from_pb)
            }
            _ => None,
        });
        Ok(WriteOutcome::Conflict(current))
    }

    /// Creates `key` if it does not exist.
    pub async fn create(&self, key: &str, value: Vec<u8>) -> Result<WriteOutcome, StoreError> {
        let cmp = pb::Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Create as i32,
            key: key.as_bytes().to_vec(),
            target_union: Some(compare::TargetUnion::CreateRevision(0)),
            ..Default::default()
        };
        let put = request_op::Request::RequestPut(pb::PutRequest {
            key: key.as_bytes().to_vec(),
            value,
            ..Default::default()
        });
        self.txn("create", key, cmp, put).await
    }

    /// Replaces `key` if its mod revision is still `expected`.
    pub async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: i64,
    ) -> Result<WriteOutcome, StoreError> {
        let put = request_op::Request::RequestPut(pb::PutRequest {
            key: key.as_bytes().to_vec(),
            value,
            ..Default::default()
        });
        self.txn("update", key, mod_equals(key, expected), put)
            .await
    }

    /// Deletes `key` if its mod revision is still `expected`.
    pub async fn delete(&self, key: &str, expected: i64) -> Result<WriteOutcome, StoreError> {
        let del = request_op::Request::RequestDeleteRange(pb::DeleteRangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        });
        self.txn("delete", key, mod_equals(key, expected), del)
            .await
    }

    /// Watches every key under `prefix` from `start_revision`, with progress notifications.
    /// Events arrive on the returned channel; `progress` asks the store for a progress
    /// notification. The channel closes when the watch ends (the caller re-lists).
    pub async fn watch(
        &self,
        prefix: &str,
        start_revision: i64,
    ) -> Result<
        (
            mpsc::Receiver<Result<StoreEvent, StoreError>>,
            mpsc::Sender<()>,
        ),
        StoreError,
    > {
        let (req_tx, req_rx) = mpsc::channel::<pb::WatchRequest>(16);
        req_tx
            .send(pb::WatchRequest {
                request_union: Some(watch_request::RequestUnion::CreateRequest(
                    pb::WatchCreateRequest {
                        key: prefix.as_bytes().to_vec(),
                        range_end: prefix_end(prefix),
                        start_revision,
                        progress_notify: true,
                        ..Default::default()
                    },
                )),
            })
            .await
            .map_err(|_| StoreError::Other("watch request channel closed".into()))?;
        let mut stream = self
            .watch
            .clone()
            .watch(tokio_stream::wrappers::ReceiverStream::new(req_rx))
            .await
            .map_err(StoreError::from_status)?
            .into_inner();
        let (ev_tx, ev_rx) = mpsc::channel(1024);
        let (progress_tx, mut progress_rx) = mpsc::channel::<()>(4);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    msg = stream.message() => {
                        let resp = match msg {
                            Ok(Some(r)) => r,
                            Ok(None) => return,
                            Err(e) => {
                                let _ = ev_tx.send(Err(StoreError::from_status(e))).await;
                                return;
                            }
                        };
                        if resp.compact_revision > 0 {
                            let _ = ev_tx
                                .send(Err(StoreError::Compacted { compact_revision: resp.compact_revision }))
                                .await;
                            return;
                        }
                        if resp.canceled {
                            let _ = ev_tx
                                .send(Err(StoreError::Other(format!("watch canceled: {}", resp.cancel_reason))))
                                .await;
                            return;
                        }
                        let rev = resp.header.as_ref().map(|h| h.revision).unwrap_or(0);
                        if resp.events.is_empty() {
                            if !resp.created && ev_tx.send(Ok(StoreEvent::Progress(rev))).await.is_err() {
                                return;
                            }
                            continue;
                        }
                        for ev in resp.events {
                            let Some(kv) = ev.kv else { continue };
                            let out = if ev.r#type == mvccpb::event::EventType::Delete as i32 {
                                StoreEvent::Delete {
                                    key: String::from_utf8_lossy(&kv.key).into_owned(),
                                    mod_revision: kv.mod_revision,
                                }
                            } else {
                                StoreEvent::Put(Kv::from_pb(kv))
                            };
                            if ev_tx.send(Ok(out)).await.is_err() {
                                return;
                            }
                        }
                    }
                    p = progress_rx.recv() => {
                        if p.is_none() { continue; }
                        let _ = req_tx
                            .send(pb::WatchRequest {
                                request_union: Some(watch_request::RequestUnion::ProgressRequest(
                                    pb::WatchProgressRequest {},
                                )),
                            })
                            .await;
                    }
                }
            }
        });
        Ok((ev_rx, progress_tx))
    }

    /// Compacts history up to `revision` (the apiserver's periodic compaction, like upstream's
    /// 5-minute compactor).
    pub async fn compact(&self, revision: i64) -> Result<(), StoreError> {
        timed(
            "compact",
            b"/registry/",
            self.kv.clone().compact(pb::CompactionRequest {
                revision,
                physical: false,
            }),
        )
        .await
        .map_err(StoreError::from_status)?;
        Ok(())
    }
}

/// Awaits one store call, recording its latency as `etcd_request_duration_seconds`.
async fn timed<T>(operation: &str, key: &[u8], call: impl Future<Output = T>) -> T {
    let start = Instant::now();
    let out = call.await;
    crate::metrics::observe_etcd(operation, key, start.elapsed().as_secs_f64());
    out
}

fn mod_equals(key: &str, expected: i64) -> pb::Compare {
    pb::Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Mod as i32,
        key: key.as_bytes().to_vec(),
        target_union: Some(compare::TargetUnion::ModRevision(expected)),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(prefix_end("/registry/pods/"), b"/registry/pods0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
    }
}
