//! kumo federation: one FederatedDeployment spread, overridden and kept across member clusters.
//!
//! - [`crds`]: the `federation.kumo.io/v1alpha1` CRDs (Cluster, FederatedDeployment,
//!   PropagationPolicy, Work), installed by [`run`] at start.
//! - [`join`]: `kumo join` / `kumo unjoin`.
//! - [`division`]: the pure replica-division math (Duplicated, Weighted, Capacity).
//! - [`placement`]: which clusters a placement selects.
//! - [`overrides`]: per-cluster changes to the Deployment.
//! - [`controller`]: informers, work queues and workers (cluster health/status, scheduling,
//!   Work materialisation and apply, status aggregation, deletion cascade), with the
//!   [`metrics`] it exports.

pub mod availability;
pub mod cli;
pub mod controller;
pub mod core;
pub mod crds;
pub mod division;
mod health;
mod informer;
pub mod join;
mod member;
pub mod metrics;
pub mod overrides;
pub mod placement;
mod reconcile;

pub use controller::{FederationConfig, run};
pub use join::{JoinOptions, JoinReport, join, unjoin};

/// The API group of the federation kinds.
pub const GROUP: &str = "federation.kumo.io";
pub const VERSION: &str = "v1alpha1";
pub const API_VERSION: &str = "federation.kumo.io/v1alpha1";
/// Field manager of every server-side apply the federation makes (host and members).
pub const FIELD_MANAGER: &str = "kumo-federation";
/// Namespace in each member that holds the federation's ServiceAccount.
pub const MEMBER_SYSTEM_NS: &str = "kumo-system";
/// The member ServiceAccount the federation acts as.
pub const MEMBER_SA: &str = "kumo-federation";
/// Host namespace of the members' credential Secrets.
pub const SECRETS_NS: &str = "kumo-federation-system";
/// Finalizer on federated objects: their propagated objects are deleted first.
pub const FINALIZER: &str = "federation.kumo.io/cleanup";
pub const LABEL_PROVIDER: &str = "kumo.io/provider";
pub const LABEL_REGION: &str = "topology.kubernetes.io/region";
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";
/// Label on Works and propagated objects naming the federated object (`<kind>.<ns>.<name>`).
pub const LABEL_OWNER: &str = "federation.kumo.io/owner";

/// The host namespace that holds a member's Works.
pub fn member_namespace(cluster: &str) -> String {
    format!("kumo-member-{cluster}")
}
