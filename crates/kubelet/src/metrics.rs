//! Upstream's kubelet metric names, in one registry handed to the kubelet API server.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntGauge, IntGaugeVec, Opts, Registry,
};

/// The kubelet's metrics; `registry` is what `/metrics` serves.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub running_pods: IntGauge,
    pub running_containers: IntGaugeVec,
    pub pod_start_duration: Histogram,
    pub pod_worker_duration: HistogramVec,
    pub node_name: IntGaugeVec,
    pub restarted_containers: IntCounter,
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let running_pods = IntGauge::with_opts(Opts::new(
            "kubelet_running_pods",
            "Number of pods that have a running pod sandbox",
        ))?;
        let running_containers = IntGaugeVec::new(
            Opts::new(
                "kubelet_running_containers",
                "Number of containers currently running",
            ),
            &["container_state"],
        )?;
        let pod_start_duration = Histogram::with_opts(
            HistogramOpts::new(
                "kubelet_pod_start_duration_seconds",
                "Duration in seconds from kubelet seeing a pod for the first time to the pod starting to run",
            )
            .buckets(vec![
                0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 20.0, 30.0, 45.0, 60.0, 120.0,
                180.0, 240.0, 300.0, 360.0, 480.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0,
            ]),
        )?;
        let pod_worker_duration = HistogramVec::new(
            HistogramOpts::new(
                "kubelet_pod_worker_duration_seconds",
                "Duration in seconds to sync a single pod. Broken down by operation type: create, update, or sync",
            )
            .buckets(prometheus::exponential_buckets(0.005, 2.0, 12)?),
            &["operation"],
        )?;
        let node_name = IntGaugeVec::new(
            Opts::new(
                "kubelet_node_name",
                "The node's name. The count is always 1.",
            ),
            &["node"],
        )?;
        let restarted_containers = IntCounter::with_opts(Opts::new(
            "kubelet_restarted_containers_total",
            "Containers the kubelet restarted (restart policy or failed liveness probe)",
        ))?;
        registry.register(Box::new(running_pods.clone()))?;
        registry.register(Box::new(running_containers.clone()))?;
        registry.register(Box::new(pod_start_duration.clone()))?;
        registry.register(Box::new(pod_worker_duration.clone()))?;
        registry.register(Box::new(node_name.clone()))?;
        registry.register(Box::new(restarted_containers.clone()))?;
        // process_cpu_seconds_total, process_resident_memory_bytes … of the kubelet itself.
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Metrics {
            registry,
            running_pods,
            running_containers,
            pod_start_duration,
            pod_worker_duration,
            node_name,
            restarted_containers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_names_are_registered() {
        let m = Metrics::new().expect("metrics");
        m.running_pods.set(2);
        m.running_containers.with_label_values(&["running"]).set(3);
        m.node_name.with_label_values(&["n1"]).set(1);
        m.pod_start_duration.observe(0.4);
        let names: Vec<String> = m
            .registry
            .gather()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        for want in [
            "kubelet_running_pods",
            "kubelet_running_containers",
            "kubelet_pod_start_duration_seconds",
            "kubelet_node_name",
            "process_resident_memory_bytes",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
        }
    }
}
