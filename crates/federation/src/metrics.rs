//! The federation controller's Prometheus metrics, in a registry of their own (served on
//! `--metrics-bind-address` with the work queues' `workqueue_*` families).

use std::time::{Duration, Instant};

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntGaugeVec, Opts, Registry};

use kumo_client::QueueMetrics;

/// Buckets 1-2-5 per decade from 10 µs to 50 s: fine enough around the 5 ms decision target
/// (a bucket ends there) to read a p99 off.
fn latency_buckets() -> Vec<f64> {
    let mut b = Vec::new();
    let mut decade = 0.000_01;
    while decade < 100.0 {
        for m in [1.0, 2.0, 5.0] {
            b.push(decade * m);
        }
        decade *= 10.0;
    }
    b
}

/// CPU time the calling thread has used so far.
pub fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// Times a decision, wall and thread CPU time, into the two histograms for `kind` when
/// dropped (early returns — refusals — are decisions too).
pub struct DecisionTimer<'a> {
    metrics: &'a Metrics,
    kind: &'static str,
    wall: Instant,
    cpu: Duration,
}

impl<'a> DecisionTimer<'a> {
    pub fn start(metrics: &'a Metrics, kind: &'static str) -> Self {
        DecisionTimer {
            metrics,
            kind,
            wall: Instant::now(),
            cpu: thread_cpu(),
        }
    }
}

impl Drop for DecisionTimer<'_> {
    fn drop(&mut self) {
        let wall = self.wall.elapsed();
        let cpu = thread_cpu().saturating_sub(self.cpu);
        self.metrics
            .decision
            .with_label_values(&[self.kind])
            .observe(wall.as_secs_f64());
        self.metrics
            .decision_cpu
            .with_label_values(&[self.kind])
            .observe(cpu.as_secs_f64());
    }
}

/// Everything `kumo federation` exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// `workqueue_*{name}` of the controller's queues.
    pub queues: QueueMetrics,
    /// `kumo_federation_decision_duration_seconds{kind}`: the scheduling decision of one
    /// object — placement and replica division over the cached members (what Karmada's
    /// scheduler decides); rendering overrides and manifests comes after.
    pub decision: HistogramVec,
    /// `kumo_federation_decision_cpu_seconds{kind}`: the CPU time of the same (the thread's
    /// own; on a loaded machine the wall time above also counts preemption).
    pub decision_cpu: HistogramVec,
    /// `kumo_federation_reconcile_duration_seconds{kind,result}`: one whole reconcile.
    pub reconcile: HistogramVec,
    /// `kumo_federation_member_apply_duration_seconds`: one object's manifests applied to one
    /// member (only reconciles that wrote something).
    pub member_apply: Histogram,
    /// `kumo_federation_cluster_probe_duration_seconds`: one member health probe.
    pub probe: Histogram,
    /// `kumo_federation_clusters{condition}`: members by Ready / NotReady.
    pub clusters: IntGaugeVec,
}

impl Metrics {
    /// Creates every family in a fresh registry.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let queues = QueueMetrics::register(&registry)?;
        let decision = HistogramVec::new(
            HistogramOpts::new(
                "kumo_federation_decision_duration_seconds",
                "Time of one federated object's scheduling decision: placement and replica division over the member clusters.",
            )
            .buckets(latency_buckets()),
            &["kind"],
        )?;
        let decision_cpu = HistogramVec::new(
            HistogramOpts::new(
                "kumo_federation_decision_cpu_seconds",
                "CPU time of the calling thread spent on one scheduling decision (see kumo_federation_decision_duration_seconds).",
            )
            .buckets(latency_buckets()),
            &["kind"],
        )?;
        let reconcile = HistogramVec::new(
            HistogramOpts::new(
                "kumo_federation_reconcile_duration_seconds",
                "Time of one reconcile of a federated object (decision, Works, member applies, status).",
            )
            .buckets(latency_buckets()),
            &["kind", "result"],
        )?;
        let member_apply = Histogram::with_opts(
            HistogramOpts::new(
                "kumo_federation_member_apply_duration_seconds",
                "Time to server-side apply one object's changed manifests to one member cluster.",
            )
            .buckets(latency_buckets()),
        )?;
        let probe = Histogram::with_opts(
            HistogramOpts::new(
                "kumo_federation_cluster_probe_duration_seconds",
                "Time of one member cluster health probe (readyz, version, node and pod totals).",
            )
            .buckets(latency_buckets()),
        )?;
        let clusters = IntGaugeVec::new(
            Opts::new(
                "kumo_federation_clusters",
                "Member clusters by their Ready condition.",
            ),
            &["condition"],
        )?;
        registry.register(Box::new(decision.clone()))?;
        registry.register(Box::new(decision_cpu.clone()))?;
        registry.register(Box::new(reconcile.clone()))?;
        registry.register(Box::new(member_apply.clone()))?;
        registry.register(Box::new(probe.clone()))?;
        registry.register(Box::new(clusters.clone()))?;
        Ok(Metrics {
            registry,
            queues,
            decision,
            decision_cpu,
            reconcile,
            member_apply,
            probe,
            clusters,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_registered() {
        let m = Metrics::new().expect("metrics");
        drop(DecisionTimer::start(&m, "fd"));
        m.reconcile.with_label_values(&["fd", "ok"]).observe(0.01);
        m.member_apply.observe(0.01);
        m.probe.observe(0.01);
        m.clusters.with_label_values(&["Ready"]).set(1);
        let names: Vec<String> = m
            .registry
            .gather()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        for n in [
            "kumo_federation_decision_duration_seconds",
            "kumo_federation_decision_cpu_seconds",
            "kumo_federation_reconcile_duration_seconds",
            "kumo_federation_member_apply_duration_seconds",
            "kumo_federation_cluster_probe_duration_seconds",
            "kumo_federation_clusters",
        ] {
            assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
        }
        let b = latency_buckets();
        assert!(b.windows(2).all(|w| w[0] < w[1]));
        assert!(b.iter().any(|x| (x - 0.005).abs() < 1e-9));
    }
}
