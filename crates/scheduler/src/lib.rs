//! `kumo scheduler`: kube-scheduler's default profile as an API client.
//!
//! - [`types`], [`selector`], [`quantity`]: pods and nodes parsed once (requests, ports,
//!   affinity terms, spread constraints), label/node selectors, tolerations, quantities.
//! - [`plugins`]: the filters and scores of the default profile, pure functions.
//! - [`framework`]: one scheduling cycle (PreFilter, Filter over `percentageOfNodesToScore`,
//!   Score, select host) and the `0/N nodes are available: …` message.
//! - [`preemption`]: DefaultPreemption (victims, PDBs, candidate choice).
//! - [`queue`]: activeQ / backoffQ / unschedulable pool with event-driven moves.
//! - [`scheduler`]: informers (kube-runtime watchers) feeding one scheduling loop that owns the
//!   cache, assumes pods, binds through `pods/binding`, writes PodScheduled conditions and
//!   Events, and preempts.
//! - [`metrics`]: upstream's `scheduler_*` metrics.

pub mod framework;
pub mod metrics;
pub mod plugins;
pub mod preemption;
pub mod quantity;
pub mod queue;
pub mod scheduler;
pub mod selector;
pub mod types;

use std::path::PathBuf;

pub use scheduler::run;

/// The scheduler name kube-scheduler answers to.
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

/// Flags of `kumo scheduler` (upstream names where kube-scheduler has them).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct SchedulerConfig {
    /// `--kubeconfig`: how to reach the apiserver (kube's default config when unset).
    pub kubeconfig: Option<PathBuf>,
    /// Scheduler names to serve (`spec.schedulerName` of the pods this scheduler binds):
    /// `default-scheduler` and `kumo-scheduler` by default.
    pub scheduler_names: Vec<String>,
    /// `--leader-elect`: hold the `kube-system/kube-scheduler` Lease before scheduling.
    pub leader_elect: bool,
    /// `--leader-elect-resource-namespace`.
    pub leader_elect_resource_namespace: String,
    /// `--leader-elect-resource-name`.
    pub leader_elect_resource_name: String,
    /// Where to serve `/metrics` and `/healthz` (`host:port`; empty disables).
    pub metrics_bind_address: String,
    /// `percentageOfNodesToScore` (0 = upstream's adaptive default).
    pub percentage_of_nodes_to_score: u32,
    /// `podInitialBackoffSeconds`.
    pub pod_initial_backoff_seconds: u64,
    /// `podMaxBackoffSeconds`.
    pub pod_max_backoff_seconds: u64,
    /// Bindings in flight at once.
    pub max_concurrent_binds: usize,
    /// `--log-level` (`error`, `warn`, `info`, `debug`, `trace`).
    pub log_level: String,
    /// `--log-format` (`text` or `json`).
    pub log_format: String,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            kubeconfig: None,
            scheduler_names: vec![DEFAULT_SCHEDULER_NAME.into(), "kumo-scheduler".into()],
            leader_elect: true,
            leader_elect_resource_namespace: "kube-system".into(),
            leader_elect_resource_name: "kube-scheduler".into(),
            metrics_bind_address: "127.0.0.1:10259".into(),
            percentage_of_nodes_to_score: 0,
            pod_initial_backoff_seconds: 1,
            pod_max_backoff_seconds: 10,
            max_concurrent_binds: 512,
            log_level: "info".into(),
            log_format: "text".into(),
        }
    }
}

/// Errors that stop the scheduler.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Building the client, leader election or the metrics server failed.
    #[error("{0}")]
    Client(#[from] kumo_client::Error),
    /// The Kubernetes client failed.
    #[error("kube: {0}")]
    Kube(#[from] kube::Error),
    /// Registering metrics failed.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// A configuration value is invalid.
    #[error("config: {0}")]
    Config(String),
    /// The informers stopped.
    #[error("informers stopped")]
    InformersStopped,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_kebab_case() {
        let cfg: SchedulerConfig = serde_json::from_value(serde_json::json!({
            "kubeconfig": "/tmp/k",
            "percentage-of-nodes-to-score": 30,
            "leader-elect": false
        }))
        .expect("config");
        assert_eq!(cfg.percentage_of_nodes_to_score, 30);
        assert!(!cfg.leader_elect);
        assert_eq!(
            cfg.scheduler_names,
            vec!["default-scheduler", "kumo-scheduler"]
        );
        assert_eq!(cfg.metrics_bind_address, "127.0.0.1:10259");
    }
}
