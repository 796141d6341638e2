//! What every kumo API client (scheduler, controller-manager, kubelet, federation) shares.
//!
//! - [`client_from_kubeconfig`] / [`ClientOptions`]: a [`kube::Client`] from a kubeconfig file,
//!   with a user agent such as `kumo-controller-manager/0.1.0`.
//! - [`leader`]: leader election on a `coordination.k8s.io/v1` Lease, client-go's algorithm
//!   (lease 15 s, renew deadline 10 s, retry period 2 s).
//! - [`workqueue`]: client-go's rate-limited work queue (dedup, one worker per key, per-item
//!   exponential backoff and an overall token bucket) with upstream's `workqueue_*` metrics.
//! - [`server`]: the `/metrics` + `/healthz` HTTP endpoint of a component.

pub mod kubeconfig;
pub mod leader;
pub mod server;
pub mod workqueue;

pub use kubeconfig::{
    ClientOptions, client_from_kubeconfig, client_from_kubeconfig_with_user_agent,
    kubeconfig_ca_pem,
};
pub use leader::{
    LeaderElectionConfig, default_identity, run_leader_elected, run_leader_elected_with,
};
pub use server::{HealthChecks, MetricsServer, serve_metrics};
pub use workqueue::{QueueMetrics, RateLimiter, WorkQueue};

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or interpreting the kubeconfig failed.
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig {
        /// The kubeconfig's path.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// Building the client failed.
    #[error("kube client: {0}")]
    Kube(#[from] kube::Error),
    /// Leadership was lost while the work ran; the work was stopped.
    #[error("leader election lost: lease {namespace}/{name} no longer held by {identity}")]
    LeaderElectionLost {
        /// Lease namespace.
        namespace: String,
        /// Lease name.
        name: String,
        /// Our identity.
        identity: String,
    },
    /// Registering metrics failed.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// Binding or serving HTTP failed.
    #[error("listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
}
