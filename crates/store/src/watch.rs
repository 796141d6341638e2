//! Watches: a hub of watchers fed by the state machine after each commit, with catch-up from
//! the MVCC history for watchers that start in the past or fell behind (etcd's synced /
//! unsynced watcher groups).
//!
//! Ordering: the hub records the last revision it published; a watcher is "synced" only once
//! it has been sent every revision up to that one, and publishing and the synced transition
//! happen under the same lock, so every watcher sees each revision exactly once, in order.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use kumo_etcd_proto::mvccpb::{Event, event::EventType};
use kumo_etcd_proto::pb::{self, WatchResponse, watch_create_request::FilterType};
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc};

use crate::mvcc::{KeyRange, Mvcc};

/// Largest number of revisions sent in one catch-up response (etcd: 1000).
const CATCHUP_REVS: usize = 1000;
/// Responses buffered per stream before its watchers fall back to catch-up.
const STREAM_BUFFER: usize = 1024;

/// Cluster-wide header fields the hub stamps on every response.
#[derive(Debug)]
pub struct HeaderInfo {
    pub cluster_id: u64,
    pub member_id: u64,
    pub term: AtomicU64,
}

impl HeaderInfo {
    pub fn header(&self, revision: i64) -> Option<pb::ResponseHeader> {
        Some(pb::ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: self.term.load(Ordering::Relaxed),
        })
    }
}

#[derive(Debug)]
struct Watcher {
    range: KeyRange,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
    progress_notify: bool,
    synced: bool,
    /// Next revision this watcher must receive.
    next_rev: i64,
    /// Events sent since the last progress tick.
    active: bool,
}

impl Watcher {
    fn wants(&self, ev: &Event) -> bool {
        let is_put = ev.r#type == EventType::Put as i32;
        if (is_put && self.no_put) || (!is_put && self.no_delete) {
            return false;
        }
        ev.kv
            .as_ref()
            .is_some_and(|kv| self.range.contains(&kv.key))
    }

    fn shape(&self, ev: &Event) -> Event {
        Event {
            r#type: ev.r#type,
            kv: ev.kv.clone(),
            prev_kv: if self.prev_kv {
                ev.prev_kv.clone()
            } else {
                None
            },
        }
    }
}

#[derive(Debug)]
struct StreamEntry {
    tx: mpsc::Sender<WatchResponse>,
    kick: Arc<Notify>,
    watchers: HashMap<i64, Watcher>,
    next_id: i64,
}

#[derive(Debug, Default)]
struct HubInner {
    published: i64,
    streams: HashMap<u64, StreamEntry>,
    next_stream: u64,
}

/// All watchers of this member.
#[derive(Debug)]
pub struct WatchHub {
    inner: Mutex<HubInner>,
    prev_kv_watchers: AtomicUsize,
    watchers: AtomicUsize,
    pub info: Arc<HeaderInfo>,
}

/// Why a watch could not be created.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    #[error("mvcc: duplicate watch ID provided on the WatchStream")]
    DuplicateId,
    #[error("mvcc: watcher range is empty")]
    EmptyRange,
}

impl WatchHub {
    pub fn new(info: Arc<HeaderInfo>, published: i64) -> WatchHub {
        WatchHub {
            inner: Mutex::new(HubInner {
                published,
                ..Default::default()
            }),
            prev_kv_watchers: AtomicUsize::new(0),
            watchers: AtomicUsize::new(0),
            info,
        }
    }

    /// Whether any watcher wants previous values (the applier then reads them).
    pub fn wants_prev_kv(&self) -> bool {
        self.prev_kv_watchers.load(Ordering::Relaxed) > 0
    }

    /// Number of watchers.
    pub fn watcher_count(&self) -> usize {
        self.watchers.load(Ordering::Relaxed)
    }

    /// Number of watch streams.
    pub fn stream_count(&self) -> usize {
        self.inner.lock().streams.len()
    }

    /// Publishes committed revisions (each with its events, in order). Called by the state
    /// machine right after the commit that made them visible.
    pub fn publish(&self, revs: &[(i64, Vec<Event>)]) {
        let Some(last) = revs.last().map(|r| r.0) else {
            return;
        };
        let mut inner = self.inner.lock();
        for stream in inner.streams.values_mut() {
            let mut overflow = false;
            for (rev, events) in revs {
                for (id, w) in stream.watchers.iter_mut() {
                    if !w.synced || *rev < w.next_rev {
                        continue;
                    }
                    let evs: Vec<Event> = events
                        .iter()
                        .filter(|e| w.wants(e))
                        .map(|e| w.shape(e))
                        .collect();
                    w.next_rev = rev + 1;
                    if evs.is_empty() {
                        continue;
                    }
                    let resp = WatchResponse {
                        header: self.info.header(*rev),
                        watch_id: *id,
                        events: evs,
                        ..Default::default()
                    };
                    if overflow || stream.tx.try_send(resp).is_err() {
                        // Too slow: fall back to reading history from this revision.
                        overflow = true;
                        w.synced = false;
                        w.next_rev = *rev;
                    } else {
                        w.active = true;
                    }
                }
            }
            if overflow {
                stream.kick.notify_one();
            }
        }
        inner.published = last;
    }

    /// Registers a new watch stream.
    pub fn open_stream(self: &Arc<Self>) -> (WatchStream, mpsc::Receiver<WatchResponse>) {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let kick = Arc::new(Notify::new());
        let mut inner = self.inner.lock();
        let id = inner.next_stream;
        inner.next_stream += 1;
        inner.streams.insert(
            id,
            StreamEntry {
                tx: tx.clone(),
                kick: kick.clone(),
                watchers: HashMap::new(),
                next_id: 0,
            },
        );
        (
            WatchStream {
                hub: self.clone(),
                id,
                tx,
                kick,
            },
            rx,
        )
    }
}

/// One client's watch stream: creates and cancels watchers, runs their catch-up.
pub struct WatchStream {
    hub: Arc<WatchHub>,
    id: u64,
    tx: mpsc::Sender<WatchResponse>,
    kick: Arc<Notify>,
}

impl std::fmt::Debug for WatchStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchStream").field("id", &self.id).finish()
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        let mut inner = self.hub.inner.lock();
        if let Some(s) = inner.streams.remove(&self.id) {
            let prev = s.watchers.values().filter(|w| w.prev_kv).count();
            self.hub.prev_kv_watchers.fetch_sub(prev, Ordering::Relaxed);
            self.hub
                .watchers
                .fetch_sub(s.watchers.len(), Ordering::Relaxed);
        }
    }
}

impl WatchStream {
    /// The notifier woken when a watcher of this stream needs catch-up.
    pub fn kick(&self) -> Arc<Notify> {
        self.kick.clone()
    }

    async fn send(&self, resp: WatchResponse) -> bool {
        self.tx.send(resp).await.is_ok()
    }

    /// Handles a create request; sends the `created` response (and schedules catch-up).
    pub async fn create(&self, req: pb::WatchCreateRequest, current: i64) -> bool {
        let range_end = req.range_end.clone();
        let result = (|| {
            if !range_end.is_empty() && range_end != [0] && req.key >= range_end {
                return Err(WatchError::EmptyRange);
            }
            let range = KeyRange::from_request(&req.key, &range_end);
            let mut inner = self.hub.inner.lock();
            let published = inner.published;
            let stream = inner
                .streams
                .get_mut(&self.id)
                .ok_or(WatchError::EmptyRange)?;
            let id = if req.watch_id == 0 {
                while stream.watchers.contains_key(&stream.next_id) {
                    stream.next_id += 1;
                }
                let id = stream.next_id;
                stream.next_id += 1;
                id
            } else if stream.watchers.contains_key(&req.watch_id) {
                return Err(WatchError::DuplicateId);
            } else {
                req.watch_id
            };
            let start = if req.start_revision > 0 {
                req.start_revision
            } else {
                published + 1
            };
            let filters: Vec<i32> = req.filters.clone();
            let w = Watcher {
                range,
                no_put: filters.contains(&(FilterType::Noput as i32)),
                no_delete: filters.contains(&(FilterType::Nodelete as i32)),
                prev_kv: req.prev_kv,
                progress_notify: req.progress_notify,
                synced: start > published,
                next_rev: start,
                active: false,
            };
            let needs_catchup = !w.synced;
            if w.prev_kv {
                self.hub.prev_kv_watchers.fetch_add(1, Ordering::Relaxed);
            }
            self.hub.watchers.fetch_add(1, Ordering::Relaxed);
            stream.watchers.insert(id, w);
            Ok((id, needs_catchup))
        })();
        let mut resp = WatchResponse {
            header: self.hub.info.header(current),
            created: true,
            ..Default::default()
        };
        match result {
            Ok((id, catchup)) => {
                resp.watch_id = id;
                // The created response must precede any event: send it before waking catch-up.
                let ok = self.send(resp).await;
                if catchup {
                    self.kick.notify_one();
                }
                ok
            }
            Err(e) => {
                resp.watch_id = -1;
                resp.canceled = true;
                resp.cancel_reason = e.to_string();
                self.send(resp).await
            }
        }
    }

    /// Cancels a watcher; answers only if it existed (as etcd).
    pub async fn cancel(&self, watch_id: i64, current: i64) -> bool {
        let removed = {
            let mut inner = self.hub.inner.lock();
            inner
                .streams
                .get_mut(&self.id)
                .and_then(|s| s.watchers.remove(&watch_id))
        };
        match removed {
            Some(w) => {
                if w.prev_kv {
                    self.hub.prev_kv_watchers.fetch_sub(1, Ordering::Relaxed);
                }
                self.hub.watchers.fetch_sub(1, Ordering::Relaxed);
                self.send(WatchResponse {
                    header: self.hub.info.header(current),
                    watch_id,
                    canceled: true,
                    ..Default::default()
                })
                .await
            }
            None => true,
        }
    }

    /// Answers a progress request: the revision every watcher on the stream has reached.
    pub async fn progress(&self) -> bool {
        let rev = self.hub.inner.lock().published;
        self.send(WatchResponse {
            header: self.hub.info.header(rev),
            watch_id: -1,
            ..Default::default()
        })
        .await
    }

    /// Progress notification tick: an empty response to each idle synced watcher that asked
    /// for progress notifications.
    pub async fn progress_tick(&self) -> bool {
        let (rev, ids) = {
            let mut inner = self.hub.inner.lock();
            let rev = inner.published;
            let ids: Vec<i64> = inner
                .streams
                .get_mut(&self.id)
                .map(|s| {
                    s.watchers
                        .iter_mut()
                        .filter_map(|(id, w)| {
                            let idle = w.progress_notify && w.synced && !w.active;
                            w.active = false;
                            idle.then_some(*id)
                        })
                        .collect()
                })
                .unwrap_or_default();
            (rev, ids)
        };
        for id in ids {
            let ok = self
                .send(WatchResponse {
                    header: self.hub.info.header(rev),
                    watch_id: id,
                    ..Default::default()
                })
                .await;
            if !ok {
                return false;
            }
        }
        true
    }

    /// Sends history to every unsynced watcher of this stream until all are synced.
    pub async fn catch_up(&self, mvcc: &Mvcc) -> bool {
        loop {
            let work: Vec<(i64, i64, KeyRange, bool, bool, bool)> = {
                let inner = self.hub.inner.lock();
                let Some(s) = inner.streams.get(&self.id) else {
                    return false;
                };
                s.watchers
                    .iter()
                    .filter(|(_, w)| !w.synced)
                    .map(|(id, w)| {
                        (
                            *id,
                            w.next_rev,
                            w.range.clone(),
                            w.no_put,
                            w.no_delete,
                            w.prev_kv,
                        )
                    })
                    .collect()
            };
            if work.is_empty() {
                return true;
            }
            for (id, from, range, no_put, no_delete, prev_kv) in work {
                let published = self.hub.inner.lock().published;
                let compacted = mvcc.compacted_rev();
                if from < compacted {
                    self.drop_compacted(id, compacted).await;
                    continue;
                }
                let want = |k: &[u8]| range.contains(k);
                let read = tokio::task::block_in_place(|| {
                    mvcc.history(from, published, CATCHUP_REVS, &want, prev_kv)
                });
                let (events, upto) = match read {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(error = %e, "watch catch-up read failed");
                        return false;
                    }
                };
                if from < mvcc.compacted_rev() {
                    self.drop_compacted(id, mvcc.compacted_rev()).await;
                    continue;
                }
                let events: Vec<Event> = events
                    .into_iter()
                    .filter(|e| {
                        let put = e.r#type == EventType::Put as i32;
                        !((put && no_put) || (!put && no_delete))
                    })
                    .collect();
                if !events.is_empty() {
                    let ok = self
                        .send(WatchResponse {
                            header: self.hub.info.header(published),
                            watch_id: id,
                            events,
                            ..Default::default()
                        })
                        .await;
                    if !ok {
                        return false;
                    }
                }
                let mut inner = self.hub.inner.lock();
                let published_now = inner.published;
                if let Some(w) = inner
                    .streams
                    .get_mut(&self.id)
                    .and_then(|s| s.watchers.get_mut(&id))
                {
                    w.next_rev = upto + 1;
                    w.active = true;
                    if w.next_rev > published_now {
                        w.synced = true;
                    }
                }
            }
        }
    }

    async fn drop_compacted(&self, id: i64, compacted: i64) {
        let removed = {
            let mut inner = self.hub.inner.lock();
            inner
                .streams
                .get_mut(&self.id)
                .and_then(|s| s.watchers.remove(&id))
        };
        if let Some(w) = removed {
            if w.prev_kv {
                self.hub.prev_kv_watchers.fetch_sub(1, Ordering::Relaxed);
            }
            self.hub.watchers.fetch_sub(1, Ordering::Relaxed);
            let published = self.hub.inner.lock().published;
            self.send(WatchResponse {
                header: self.hub.info.header(published),
                watch_id: id,
                canceled: true,
                compact_revision: compacted,
                ..Default::default()
            })
            .await;
        }
    }
}

/// Default interval between progress notifications (etcd: 10 minutes).
pub const DEFAULT_PROGRESS_INTERVAL: Duration = Duration::from_secs(600);
