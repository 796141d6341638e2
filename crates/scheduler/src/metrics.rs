//! kube-scheduler's metrics (same names, labels and buckets), in a registry of their own.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    exponential_buckets,
};

/// The scheduler's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// The registry they are registered in.
    pub registry: Registry,
    /// `scheduler_schedule_attempts_total{profile,result}` (scheduled|unschedulable|error).
    pub schedule_attempts: IntCounterVec,
    /// `scheduler_scheduling_attempt_duration_seconds{profile,result}`.
    pub attempt_duration: HistogramVec,
    /// `scheduler_scheduling_algorithm_duration_seconds`.
    pub algorithm_duration: Histogram,
    /// `scheduler_pending_pods{queue}` (active|backoff|unschedulable|gated).
    pub pending_pods: IntGaugeVec,
    /// `scheduler_queue_incoming_pods_total{queue,event}`.
    pub queue_incoming: IntCounterVec,
    /// `scheduler_preemption_attempts_total`.
    pub preemption_attempts: IntCounter,
    /// `scheduler_preemption_victims`.
    pub preemption_victims: Histogram,
    /// `scheduler_pod_scheduling_attempts`.
    pub pod_scheduling_attempts: Histogram,
    /// `scheduler_pod_scheduling_sli_duration_seconds{attempts}`.
    pub pod_scheduling_sli_duration: HistogramVec,
    /// `scheduler_cache_size{type}` (nodes|pods|assumed_pods).
    pub cache_size: IntGaugeVec,
}

impl Metrics {
    /// Creates and registers every metric in a fresh registry.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let schedule_attempts = IntCounterVec::new(
            Opts::new(
                "scheduler_schedule_attempts_total",
                "Number of attempts to schedule pods, by the result. 'unschedulable' means a pod could not be scheduled, while 'error' means an internal scheduler problem.",
            ),
            &["profile", "result"],
        )?;
        let attempt_duration = HistogramVec::new(
            HistogramOpts::new(
                "scheduler_scheduling_attempt_duration_seconds",
                "Scheduling attempt latency in seconds (scheduling algorithm + binding)",
            )
            .buckets(exponential_buckets(0.001, 2.0, 15)?),
            &["profile", "result"],
        )?;
        let algorithm_duration = Histogram::with_opts(
            HistogramOpts::new(
                "scheduler_scheduling_algorithm_duration_seconds",
                "Scheduling algorithm latency in seconds",
            )
            .buckets(exponential_buckets(0.001, 2.0, 15)?),
        )?;
        let pending_pods = IntGaugeVec::new(
            Opts::new(
                "scheduler_pending_pods",
                "Number of pending pods, by the queue type. 'active' means number of pods in activeQ; 'backoff' means number of pods in backoffQ; 'unschedulable' means number of pods in unschedulablePods that the scheduler attempted to schedule and failed; 'gated' is the number of unschedulable pods that the scheduler never attempted to schedule because they are gated.",
            ),
            &["queue"],
        )?;
        let queue_incoming = IntCounterVec::new(
            Opts::new(
                "scheduler_queue_incoming_pods_total",
                "Number of pods added to scheduling queues by event and queue type.",
            ),
            &["queue", "event"],
        )?;
        let preemption_attempts = IntCounter::new(
            "scheduler_preemption_attempts_total",
            "Total preemption attempts in the cluster till now",
        )?;
        let preemption_victims = Histogram::with_opts(
            HistogramOpts::new(
                "scheduler_preemption_victims",
                "Number of selected preemption victims",
            )
            .buckets(exponential_buckets(1.0, 2.0, 7)?),
        )?;
        let pod_scheduling_attempts = Histogram::with_opts(
            HistogramOpts::new(
                "scheduler_pod_scheduling_attempts",
                "Number of attempts to successfully schedule a pod.",
            )
            .buckets(exponential_buckets(1.0, 2.0, 5)?),
        )?;
        let pod_scheduling_sli_duration = HistogramVec::new(
            HistogramOpts::new(
                "scheduler_pod_scheduling_sli_duration_seconds",
                "E2e latency for a pod being scheduled, from the time the pod enters the scheduling queue and might involve multiple scheduling attempts.",
            )
            .buckets(exponential_buckets(0.01, 2.0, 20)?),
            &["attempts"],
        )?;
        let cache_size = IntGaugeVec::new(
            Opts::new(
                "scheduler_cache_size",
                "Number of nodes, pods, and assumed (bound) pods in the scheduler cache.",
            ),
            &["type"],
        )?;
        registry.register(Box::new(schedule_attempts.clone()))?;
        registry.register(Box::new(attempt_duration.clone()))?;
        registry.register(Box::new(algorithm_duration.clone()))?;
        registry.register(Box::new(pending_pods.clone()))?;
        registry.register(Box::new(queue_incoming.clone()))?;
        registry.register(Box::new(preemption_attempts.clone()))?;
        registry.register(Box::new(preemption_victims.clone()))?;
        registry.register(Box::new(pod_scheduling_attempts.clone()))?;
        registry.register(Box::new(pod_scheduling_sli_duration.clone()))?;
        registry.register(Box::new(cache_size.clone()))?;
        Ok(Metrics {
            registry,
            schedule_attempts,
            attempt_duration,
            algorithm_duration,
            pending_pods,
            queue_incoming,
            preemption_attempts,
            preemption_victims,
            pod_scheduling_attempts,
            pod_scheduling_sli_duration,
            cache_size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_upstreams() {
        let m = Metrics::new().expect("metrics");
        m.schedule_attempts
            .with_label_values(&["default-scheduler", "scheduled"])
            .inc();
        m.pending_pods.with_label_values(&["active"]).set(3);
        let names: Vec<String> = m
            .registry
            .gather()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        assert!(names.contains(&"scheduler_schedule_attempts_total".to_string()));
        assert!(names.contains(&"scheduler_pending_pods".to_string()));
    }
}
