//! Prometheus metrics with etcd's names, so etcd dashboards and alerts work unchanged.

use std::sync::Arc;
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// The metrics of one store member.
#[derive(Clone, Debug)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    has_leader: IntGauge,
    is_leader: IntGauge,
    leader_changes: IntCounter,
    proposals_committed: IntGauge,
    proposals_applied: IntGauge,
    proposals_pending: IntGauge,
    proposals_failed: IntCounter,
    db_size: IntGauge,
    db_size_in_use: IntGauge,
    quota: IntGauge,
    keys: IntGauge,
    watchers: IntGauge,
    watch_streams: IntGauge,
    leases: IntGauge,
    backend_commit: Histogram,
    wal_fsync: Histogram,
    apply_batch: Histogram,
    requests: IntCounterVec,
}

fn ioh(name: &str, help: &str) -> Histogram {
    // etcd's buckets: 1 ms doubling to ~8 s.
    let buckets = prometheus::exponential_buckets(0.001, 2.0, 14).unwrap_or_default();
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .expect("valid histogram options")
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let g = |n: &str, h: &str| IntGauge::new(n, h).expect("valid gauge");
        let c = |n: &str, h: &str| IntCounter::new(n, h).expect("valid counter");
        let inner = Inner {
            registry: Registry::new(),
            has_leader: g(
                "etcd_server_has_leader",
                "Whether or not a leader exists. 1 is existence, 0 is not.",
            ),
            is_leader: g(
                "etcd_server_is_leader",
                "Whether or not this member is a leader. 1 if is, 0 otherwise.",
            ),
            leader_changes: c(
                "etcd_server_leader_changes_seen_total",
                "The number of leader changes seen.",
            ),
            proposals_committed: g(
                "etcd_server_proposals_committed_total",
                "The total number of consensus proposals committed.",
            ),
            proposals_applied: g(
                "etcd_server_proposals_applied_total",
                "The total number of consensus proposals applied.",
            ),
            proposals_pending: g(
                "etcd_server_proposals_pending",
                "The current number of pending proposals to commit.",
            ),
            proposals_failed: c(
                "etcd_server_proposals_failed_total",
                "The total number of failed proposals seen.",
            ),
            db_size: g(
                "etcd_mvcc_db_total_size_in_bytes",
                "Total size of the underlying database physically allocated in bytes.",
            ),
            db_size_in_use: g(
                "etcd_mvcc_db_total_size_in_use_in_bytes",
                "Total size of the underlying database logically in use in bytes.",
            ),
            quota: g(
                "etcd_server_quota_backend_bytes",
                "Current backend storage quota size in bytes.",
            ),
            keys: g("etcd_debugging_mvcc_keys_total", "Total number of keys."),
            watchers: g(
                "etcd_debugging_mvcc_watcher_total",
                "Total number of watchers.",
            ),
            watch_streams: g(
                "etcd_debugging_mvcc_watch_stream_total",
                "Total number of watch streams.",
            ),
            leases: g("etcd_debugging_lease_total", "The number of leases."),
            backend_commit: ioh(
                "etcd_disk_backend_commit_duration_seconds",
                "The latency distributions of commit called by backend.",
            ),
            wal_fsync: ioh(
                "etcd_disk_wal_fsync_duration_seconds",
                "The latency distributions of fsync called by WAL.",
            ),
            apply_batch: ioh(
                "kumo_store_apply_batch_duration_seconds",
                "Time to apply one batch of committed Raft entries.",
            ),
            requests: IntCounterVec::new(
                Opts::new(
                    "kumo_store_requests_total",
                    "Requests served, by RPC and outcome.",
                ),
                &["method", "code"],
            )
            .expect("valid counter vec"),
        };
        let r = &inner.registry;
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(inner.has_leader.clone()),
            Box::new(inner.is_leader.clone()),
            Box::new(inner.leader_changes.clone()),
            Box::new(inner.proposals_committed.clone()),
            Box::new(inner.proposals_applied.clone()),
            Box::new(inner.proposals_pending.clone()),
            Box::new(inner.proposals_failed.clone()),
            Box::new(inner.db_size.clone()),
            Box::new(inner.db_size_in_use.clone()),
            Box::new(inner.quota.clone()),
            Box::new(inner.keys.clone()),
            Box::new(inner.watchers.clone()),
            Box::new(inner.watch_streams.clone()),
            Box::new(inner.leases.clone()),
            Box::new(inner.backend_commit.clone()),
            Box::new(inner.wal_fsync.clone()),
            Box::new(inner.apply_batch.clone()),
            Box::new(inner.requests.clone()),
        ];
        for col in collectors {
            if let Err(e) = r.register(col) {
                tracing::error!(error = %e, "registering a metric failed");
            }
        }
        #[cfg(target_os = "linux")]
        {
            let pc = prometheus::process_collector::ProcessCollector::for_self();
            if let Err(e) = r.register(Box::new(pc)) {
                tracing::warn!(error = %e, "process metrics unavailable");
            }
        }
        Metrics {
            inner: Arc::new(inner),
        }
    }

    pub fn observe_apply(&self, took: Duration, entries: usize) {
        self.inner.apply_batch.observe(took.as_secs_f64());
        self.inner.backend_commit.observe(took.as_secs_f64());
        self.inner.proposals_applied.add(entries as i64);
    }

    pub fn observe_wal_fsync(&self, took: Duration) {
        self.inner.wal_fsync.observe(took.as_secs_f64());
    }

    pub fn request(&self, method: &str, code: tonic::Code) {
        self.inner
            .requests
            .with_label_values(&[method, &format!("{code:?}")])
            .inc();
    }

    pub fn proposal_failed(&self) {
        self.inner.proposals_failed.inc();
    }

    /// Values read at scrape time.
    pub fn set_state(&self, s: &ScrapeState) {
        let i = &self.inner;
        i.has_leader.set(s.has_leader as i64);
        if s.is_leader as i64 != i.is_leader.get() && s.is_leader {
            i.leader_changes.inc();
        }
        i.is_leader.set(s.is_leader as i64);
        i.proposals_committed.set(s.committed as i64);
        // Like etcd: the applied index, comparable with the committed one across restarts.
        i.proposals_applied.set(s.applied as i64);
        i.proposals_pending
            .set(s.committed.saturating_sub(s.applied) as i64);
        i.db_size.set(s.db_size as i64);
        i.db_size_in_use.set(s.db_size_in_use as i64);
        i.quota.set(s.quota as i64);
        i.keys.set(s.keys as i64);
        i.watchers.set(s.watchers as i64);
        i.watch_streams.set(s.watch_streams as i64);
        i.leases.set(s.leases as i64);
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let families = self.inner.registry.gather();
        if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Point-in-time values for gauges.
#[derive(Debug, Default, Clone)]
pub struct ScrapeState {
    pub has_leader: bool,
    pub is_leader: bool,
    pub committed: u64,
    pub applied: u64,
    pub db_size: u64,
    pub db_size_in_use: u64,
    pub quota: u64,
    pub keys: usize,
    pub watchers: usize,
    pub watch_streams: usize,
    pub leases: usize,
}
