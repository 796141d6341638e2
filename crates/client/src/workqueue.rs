//! client-go's rate-limited work queue (`k8s.io/client-go/util/workqueue`).
//!
//! - A key queued twice before a worker takes it is processed once (the *dirty* set).
//! - A key is never handed to two workers at once: a key added while it is being processed
//!   is queued again when the worker calls [`WorkQueue::done`].
//! - [`WorkQueue::add_after`] delays an add (the earliest pending time wins);
//!   [`WorkQueue::add_rate_limited`] delays it by the queue's [`RateLimiter`], by default
//!   upstream's `DefaultControllerRateLimiter`: the larger of a per-item exponential backoff
//!   (5 ms doubling to 1000 s) and an overall token bucket (10 qps, burst 100).
//!   [`WorkQueue::forget`] resets a key's backoff after a successful sync.
//! - Metrics with upstream's names and a `name` label ([`QueueMetrics`]).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Bounds for keys of a queue.
pub trait QueueKey: Clone + Eq + Hash + Debug + Send + Sync + 'static {}
impl<T: Clone + Eq + Hash + Debug + Send + Sync + 'static> QueueKey for T {}

/// Decides how long a key waits before it is re-added (client-go's `RateLimiter`).
pub trait RateLimiter<K>: Send + Sync {
    /// How long `key` should wait now; counts as one more failure.
    fn when(&self, key: &K) -> Duration;
    /// Forgets `key`'s failures.
    fn forget(&self, key: &K);
    /// How many times `key` was rate limited since the last forget.
    fn num_requeues(&self, key: &K) -> u32;
}

/// Per-item exponential backoff: `base * 2^failures`, capped at `max`.
#[derive(Debug)]
pub struct ItemExponentialFailureRateLimiter<K> {
    base: Duration,
    max: Duration,
    failures: Mutex<HashMap<K, u32>>,
}

impl<K: QueueKey> ItemExponentialFailureRateLimiter<K> {
    /// A limiter from `base` doubling up to `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        ItemExponentialFailureRateLimiter {
            base,
            max,
            failures: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: QueueKey> RateLimiter<K> for ItemExponentialFailureRateLimiter<K> {
    fn when(&self, key: &K) -> Duration {
        let mut failures = self.failures.lock();
        let n = failures.entry(key.clone()).or_insert(0);
        let exp = *n;
        *n = n.saturating_add(1);
        let factor = 2f64.powi(i32::try_from(exp).unwrap_or(i32::MAX));
        let backoff = self.base.as_secs_f64() * factor;
        if !backoff.is_finite() || backoff > self.max.as_secs_f64() {
            self.max
        } else {
            Duration::from_secs_f64(backoff)
        }
    }

    fn forget(&self, key: &K) {
        self.failures.lock().remove(key);
    }

    fn num_requeues(&self, key: &K) -> u32 {
        self.failures.lock().get(key).copied().unwrap_or(0)
    }
}

/// An overall token bucket (`golang.org/x/time/rate` reservations): `qps` tokens a second,
/// at most `burst` saved up; each `when` takes one token and waits for it if none is left.
#[derive(Debug)]
pub struct BucketRateLimiter {
    qps: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl BucketRateLimiter {
    /// A bucket of `burst` tokens refilled at `qps`.
    pub fn new(qps: f64, burst: u32) -> Self {
        BucketRateLimiter {
            qps,
            burst: f64::from(burst),
            state: Mutex::new((f64::from(burst), Instant::now())),
        }
    }
}

impl<K> RateLimiter<K> for BucketRateLimiter {
    fn when(&self, _key: &K) -> Duration {
        let mut state = self.state.lock();
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(state.1).as_secs_f64();
        let tokens = (state.0 + elapsed * self.qps).min(self.burst) - 1.0;
        *state = (tokens, now);
        if tokens >= 0.0 || self.qps <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-tokens / self.qps)
        }
    }

    fn forget(&self, _key: &K) {}

    fn num_requeues(&self, _key: &K) -> u32 {
        0
    }
}

/// The largest delay of several limiters (client-go's `MaxOfRateLimiter`).
pub struct MaxOfRateLimiter<K> {
    limiters: Vec<Box<dyn RateLimiter<K>>>,
}

impl<K> MaxOfRateLimiter<K> {
    /// Combines `limiters`.
    pub fn new(limiters: Vec<Box<dyn RateLimiter<K>>>) -> Self {
        MaxOfRateLimiter { limiters }
    }
}

impl<K> RateLimiter<K> for MaxOfRateLimiter<K> {
    fn when(&self, key: &K) -> Duration {
        self.limiters
            .iter()
            .map(|l| l.when(key))
            .max()
            .unwrap_or(Duration::ZERO)
    }

    fn forget(&self, key: &K) {
        for l in &self.limiters {
            l.forget(key);
        }
    }

    fn num_requeues(&self, key: &K) -> u32 {
        self.limiters
            .iter()
            .map(|l| l.num_requeues(key))
            .max()
            .unwrap_or(0)
    }
}

/// Upstream's `DefaultControllerRateLimiter`: max of 5 ms → 1000 s per-item exponential
/// backoff and a 10 qps / 100 burst bucket.
pub fn default_controller_rate_limiter<K: QueueKey>() -> MaxOfRateLimiter<K> {
    MaxOfRateLimiter::new(vec![
        Box::new(ItemExponentialFailureRateLimiter::new(
            Duration::from_millis(5),
            Duration::from_secs(1000),
        )),
        Box::new(BucketRateLimiter::new(10.0, 100)),
    ])
}

/// The `workqueue_*` metric families (one set per registry; each queue is a `name`).
#[derive(Clone, Debug)]
pub struct QueueMetrics {
    depth: IntGaugeVec,
    adds: IntCounterVec,
    queue_duration: HistogramVec,
    work_duration: HistogramVec,
    unfinished: GaugeVec,
    longest: GaugeVec,
    retries: IntCounterVec,
}

impl QueueMetrics {
    /// Creates the families and registers them in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let buckets = prometheus::exponential_buckets(10e-9, 10.0, 10)?;
        let m = QueueMetrics {
            depth: IntGaugeVec::new(
                Opts::new("depth", "Current depth of workqueue").subsystem("workqueue"),
                &["name"],
            )?,
            adds: IntCounterVec::new(
                Opts::new("adds_total", "Total number of adds handled by workqueue")
                    .subsystem("workqueue"),
                &["name"],
            )?,
            queue_duration: HistogramVec::new(
                HistogramOpts::new(
                    "queue_duration_seconds",
                    "How long in seconds an item stays in workqueue before being requested.",
                )
                .subsystem("workqueue")
                .buckets(buckets.clone()),
                &["name"],
            )?,
            work_duration: HistogramVec::new(
                HistogramOpts::new(
                    "work_duration_seconds",
                    "How long in seconds processing an item from workqueue takes.",
                )
                .subsystem("workqueue")
                .buckets(buckets),
                &["name"],
            )?,
            unfinished: GaugeVec::new(
                Opts::new(
                    "unfinished_work_seconds",
                    "How many seconds of work has been done that is in progress and hasn't been observed by work_duration. Large values indicate stuck threads. One can deduce the number of stuck threads by observing the rate at which this increases.",
                )
                .subsystem("workqueue"),
                &["name"],
            )?,
            longest: GaugeVec::new(
                Opts::new(
                    "longest_running_processor_seconds",
                    "How many seconds has the longest running processor for workqueue been running.",
                )
                .subsystem("workqueue"),
                &["name"],
            )?,
            retries: IntCounterVec::new(
                Opts::new("retries_total", "Total number of retries handled by workqueue")
                    .subsystem("workqueue"),
                &["name"],
            )?,
        };
        registry.register(Box::new(m.depth.clone()))?;
        registry.register(Box::new(m.adds.clone()))?;
        registry.register(Box::new(m.queue_duration.clone()))?;
        registry.register(Box::new(m.work_duration.clone()))?;
        registry.register(Box::new(m.unfinished.clone()))?;
        registry.register(Box::new(m.longest.clone()))?;
        registry.register(Box::new(m.retries.clone()))?;
        Ok(m)
    }

    /// Families registered nowhere (for tests and for queues nobody scrapes).
    pub fn unregistered() -> Self {
        match Self::register(&Registry::new()) {
            Ok(m) => m,
            Err(e) => unreachable!("fresh registry refused workqueue metrics: {e}"),
        }
    }
}

/// The metric children of one queue.
struct Handles {
    depth: prometheus::IntGauge,
    adds: prometheus::IntCounter,
    queue_duration: prometheus::Histogram,
    work_duration: prometheus::Histogram,
    unfinished: prometheus::Gauge,
    longest: prometheus::Gauge,
    retries: prometheus::IntCounter,
}

/// Mutable queue state, under one lock.
struct State<K> {
    queue: VecDeque<K>,
    dirty: HashSet<K>,
    processing: HashSet<K>,
    /// When each queued key was added (queue_duration).
    added_at: HashMap<K, Instant>,
    /// When each key in processing was handed out (work_duration).
    started_at: HashMap<K, Instant>,
    /// Delayed adds: (ready time, seq) → key, and key → its entry (earliest wins).
    waiting: BTreeMap<(Instant, u64), K>,
    waiting_keys: HashMap<K, (Instant, u64)>,
    seq: u64,
    shutting_down: bool,
}

struct Inner<K> {
    name: String,
    state: Mutex<State<K>>,
    ready: Notify,
    delay_wakeup: Arc<Notify>,
    limiter: Box<dyn RateLimiter<K>>,
    metrics: Handles,
}

impl<K> Drop for Inner<K> {
    fn drop(&mut self) {
        self.delay_wakeup.notify_one();
    }
}

/// A rate-limited, deduplicating work queue of keys. Cheap to clone (shared).
pub struct WorkQueue<K> {
    inner: Arc<Inner<K>>,
}

impl<K> Clone for WorkQueue<K> {
    fn clone(&self) -> Self {
        WorkQueue {
            inner: self.inner.clone(),
        }
    }
}

impl<K> Debug for WorkQueue<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkQueue")
            .field("name", &self.inner.name)
            .finish_non_exhaustive()
    }
}

impl<K: QueueKey> WorkQueue<K> {
    /// A queue named `name` (the metrics' `name` label) with upstream's default controller
    /// rate limiter. Must be called inside a Tokio runtime (a task serves delayed adds).
    pub fn new(name: &str, metrics: &QueueMetrics) -> Self {
        Self::with_rate_limiter(name, metrics, Box::new(default_controller_rate_limiter()))
    }

    /// A queue with a custom rate limiter.
    pub fn with_rate_limiter(
        name: &str,
        metrics: &QueueMetrics,
        limiter: Box<dyn RateLimiter<K>>,
    ) -> Self {
        let handles = Handles {
            depth: metrics.depth.with_label_values(&[name]),
            adds: metrics.adds.with_label_values(&[name]),
            queue_duration: metrics.queue_duration.with_label_values(&[name]),
            work_duration: metrics.work_duration.with_label_values(&[name]),
            unfinished: metrics.unfinished.with_label_values(&[name]),
            longest: metrics.longest.with_label_values(&[name]),
            retries: metrics.retries.with_label_values(&[name]),
        };
        let delay_wakeup = Arc::new(Notify::new());
        let inner = Arc::new(Inner {
            name: name.to_string(),
            state: Mutex::new(State {
                queue: VecDeque::new(),
                dirty: HashSet::new(),
                processing: HashSet::new(),
                added_at: HashMap::new(),
                started_at: HashMap::new(),
                waiting: BTreeMap::new(),
                waiting_keys: HashMap::new(),
                seq: 0,
                shutting_down: false,
            }),
            ready: Notify::new(),
            delay_wakeup: delay_wakeup.clone(),
            limiter,
            metrics: handles,
        });
        tokio::spawn(delay_loop(Arc::downgrade(&inner), delay_wakeup));
        tokio::spawn(unfinished_loop(Arc::downgrade(&inner)));
        WorkQueue { inner }
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Queues `key` unless it is already queued; a key being processed is re-queued when
    /// its worker calls [`done`](Self::done).
    pub fn add(&self, key: K) {
        let mut st = self.inner.state.lock();
        self.add_locked(&mut st, key);
    }

    fn add_locked(&self, st: &mut State<K>, key: K) {
        if st.shutting_down || st.dirty.contains(&key) {
            return;
        }
        self.inner.metrics.adds.inc();
        st.dirty.insert(key.clone());
        if st.processing.contains(&key) {
            return;
        }
        st.added_at.insert(key.clone(), Instant::now());
        st.queue.push_back(key);
        self.inner.metrics.depth.set(st.queue.len() as i64);
        self.inner.ready.notify_one();
    }

    /// Queues `key` after `delay` (at once for a zero delay). If `key` is already waiting,
    /// the earlier time wins.
    pub fn add_after(&self, key: K, delay: Duration) {
        let mut st = self.inner.state.lock();
        if st.shutting_down {
            return;
        }
        if delay.is_zero() {
            self.add_locked(&mut st, key);
            return;
        }
        let at = Instant::now() + delay;
        if let Some(existing) = st.waiting_keys.get(&key).copied() {
            if existing.0 <= at {
                return;
            }
            st.waiting.remove(&existing);
        }
        st.seq += 1;
        let entry = (at, st.seq);
        let earliest = st.waiting.keys().next().is_none_or(|first| entry < *first);
        st.waiting.insert(entry, key.clone());
        st.waiting_keys.insert(key, entry);
        drop(st);
        if earliest {
            self.inner.delay_wakeup.notify_one();
        }
    }

    /// Queues `key` after the rate limiter's delay for it (counts a retry).
    pub fn add_rate_limited(&self, key: K) {
        self.inner.metrics.retries.inc();
        let delay = self.inner.limiter.when(&key);
        self.add_after(key, delay);
    }

    /// Resets `key`'s backoff (call after a successful sync).
    pub fn forget(&self, key: &K) {
        self.inner.limiter.forget(key);
    }

    /// How often `key` was rate limited since its last [`forget`](Self::forget).
    pub fn num_requeues(&self, key: &K) -> u32 {
        self.inner.limiter.num_requeues(key)
    }

    /// Waits for the next key and marks it processing; `None` once the queue is shut down
    /// and drained. Every key returned must be passed to [`done`](Self::done).
    pub async fn get(&self) -> Option<K> {
        loop {
            let notified = self.inner.ready.notified();
            {
                let mut st = self.inner.state.lock();
                if let Some(key) = st.queue.pop_front() {
                    self.inner.metrics.depth.set(st.queue.len() as i64);
                    if let Some(t) = st.added_at.remove(&key) {
                        self.inner
                            .metrics
                            .queue_duration
                            .observe(t.elapsed().as_secs_f64());
                    }
                    st.started_at.insert(key.clone(), Instant::now());
                    st.processing.insert(key.clone());
                    st.dirty.remove(&key);
                    if !st.queue.is_empty() {
                        self.inner.ready.notify_one();
                    }
                    return Some(key);
                }
                if st.shutting_down {
                    self.inner.ready.notify_one();
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Marks `key` finished; if it was added meanwhile it is queued again.
    pub fn done(&self, key: &K) {
        let mut st = self.inner.state.lock();
        if let Some(t) = st.started_at.remove(key) {
            self.inner
                .metrics
                .work_duration
                .observe(t.elapsed().as_secs_f64());
        }
        st.processing.remove(key);
        if st.dirty.contains(key) {
            st.added_at.insert(key.clone(), Instant::now());
            st.queue.push_back(key.clone());
            self.inner.metrics.depth.set(st.queue.len() as i64);
            self.inner.ready.notify_one();
        }
    }

    /// Number of queued keys (not counting ones being processed or waiting).
    pub fn len(&self) -> usize {
        self.inner.state.lock().queue.len()
    }

    /// Whether no key is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stops accepting adds; [`get`](Self::get) returns the keys still queued, then `None`.
    pub fn shut_down(&self) {
        let mut st = self.inner.state.lock();
        st.shutting_down = true;
        st.waiting.clear();
        st.waiting_keys.clear();
        drop(st);
        self.inner.ready.notify_one();
        self.inner.delay_wakeup.notify_one();
    }

    /// Whether [`shut_down`](Self::shut_down) was called.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.state.lock().shutting_down
    }
}

/// Moves delayed keys into the queue when their time comes.
async fn delay_loop<K: QueueKey>(inner: Weak<Inner<K>>, wakeup: Arc<Notify>) {
    loop {
        let next = {
            let Some(inner) = inner.upgrade() else {
                return;
            };
            let queue = WorkQueue { inner };
            let mut st = queue.inner.state.lock();
            if st.shutting_down {
                return;
            }
            let now = Instant::now();
            while let Some((&(at, seq), _)) = st.waiting.iter().next() {
                if at > now {
                    break;
                }
                if let Some(key) = st.waiting.remove(&(at, seq)) {
                    st.waiting_keys.remove(&key);
                    queue.add_locked(&mut st, key);
                }
            }
            st.waiting.keys().next().map(|(at, _)| *at)
        };
        match next {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = wakeup.notified() => {}
                }
            }
            None => wakeup.notified().await,
        }
    }
}

/// Updates `unfinished_work_seconds` and `longest_running_processor_seconds` every 500 ms
/// like upstream's `updateUnfinishedWorkLoop`.
async fn unfinished_loop<K: QueueKey>(inner: Weak<Inner<K>>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let st = inner.state.lock();
        if st.shutting_down {
            return;
        }
        let now = Instant::now();
        let mut total = 0.0;
        let mut longest: f64 = 0.0;
        for t in st.started_at.values() {
            let d = now.saturating_duration_since(*t).as_secs_f64();
            total += d;
            longest = longest.max(d);
        }
        inner.metrics.unfinished.set(total);
        inner.metrics.longest.set(longest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dedups_and_never_hands_a_key_to_two_workers() {
        let q = WorkQueue::new("t", &QueueMetrics::unregistered());
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        let a = q.get().await.expect("a");
        assert_eq!(a, "a");
        q.add("a"); // while processing: not queued yet
        assert_eq!(q.len(), 1);
        assert_eq!(q.get().await, Some("b"));
        q.done(&"b");
        assert!(q.is_empty());
        q.done(&"a"); // re-queued now
        assert_eq!(q.get().await, Some("a"));
        q.done(&"a");
        q.shut_down();
        assert_eq!(q.get().await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn add_after_and_rate_limit() {
        let q = WorkQueue::new("t2", &QueueMetrics::unregistered());
        q.add_after("x", Duration::from_secs(10));
        q.add_after("x", Duration::from_secs(1));
        let start = Instant::now();
        assert_eq!(q.get().await, Some("x"));
        let waited = start.elapsed();
        assert!(waited >= Duration::from_secs(1) && waited < Duration::from_secs(2));
        q.done(&"x");
        for _ in 0..3 {
            q.add_rate_limited("x");
        }
        assert_eq!(q.num_requeues(&"x"), 3);
        q.forget(&"x");
        assert_eq!(q.num_requeues(&"x"), 0);
    }

    #[test]
    fn exponential_backoff_and_bucket() {
        let l = ItemExponentialFailureRateLimiter::new(
            Duration::from_millis(5),
            Duration::from_secs(1000),
        );
        assert_eq!(l.when(&1), Duration::from_millis(5));
        assert_eq!(l.when(&1), Duration::from_millis(10));
        assert_eq!(l.when(&1), Duration::from_millis(20));
        for _ in 0..40 {
            l.when(&1);
        }
        assert_eq!(l.when(&1), Duration::from_secs(1000));
        assert_eq!(l.when(&2), Duration::from_millis(5));
        let b = BucketRateLimiter::new(10.0, 100);
        for _ in 0..100 {
            assert_eq!(RateLimiter::<u8>::when(&b, &0), Duration::ZERO);
        }
        let d = RateLimiter::<u8>::when(&b, &0);
        assert!(d > Duration::from_millis(50) && d <= Duration::from_millis(100));
    }

    #[tokio::test]
    async fn metrics_have_upstream_names() {
        let reg = Registry::new();
        let m = QueueMetrics::register(&reg).expect("register");
        let q = WorkQueue::new("deployment", &m);
        q.add(1);
        let k = q.get().await.expect("key");
        q.done(&k);
        q.add_rate_limited(2);
        let names: Vec<String> = reg.gather().iter().map(|f| f.name().to_string()).collect();
        for n in [
            "workqueue_depth",
            "workqueue_adds_total",
            "workqueue_queue_duration_seconds",
            "workqueue_work_duration_seconds",
            "workqueue_retries_total",
            "workqueue_unfinished_work_seconds",
            "workqueue_longest_running_processor_seconds",
        ] {
            assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
        }
    }
}
