//! `kumo controller-manager`: upstream's controllers as kube-rs API clients.
//!
//! Every controller follows the same shape as its upstream counterpart: shared informers
//! (kube-runtime watchers + reflector stores, [`informer`]) feed handlers that enqueue keys
//! into a rate-limited [`kumo_client::WorkQueue`]; workers sync one key at a time against the
//! cache and write through the apiserver with optimistic concurrency. With
//! `--leader-elect` (default) the controllers only run while this instance holds the
//! `kube-system/kube-controller-manager` Lease.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use kumo_client::{HealthChecks, QueueMetrics, WorkQueue};
use prometheus::Registry;
use tracing::{Instrument as _, info, info_span};

pub mod bootstrap;
pub mod certificates;
pub mod clusterrole;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod discovery;
pub mod endpoints;
pub mod expectations;
pub mod gc;
pub mod history;
pub mod informer;
pub mod job;
pub mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod podgc;
pub mod replicaset;
pub mod resourcequota;
pub mod serviceaccount;
pub mod statefulset;
pub mod util;

/// Flags of `kumo controller-manager` (upstream names).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct ControllerManagerConfig {
    /// `--kubeconfig`: how to reach the apiserver.
    pub kubeconfig: Option<PathBuf>,
    /// `--controllers`: `*` for all default controllers, `foo` to enable, `-foo` to disable.
    pub controllers: Vec<String>,
    /// `--bind-address` of the `/metrics` and `/healthz` endpoint.
    pub bind_address: String,
    /// `--port` of the `/metrics` and `/healthz` endpoint (plain HTTP; 0 picks a free port).
    pub port: u16,
    /// `--leader-elect`.
    pub leader_elect: bool,
    /// `--leader-elect-lease-duration`.
    pub leader_elect_lease_duration: String,
    /// `--leader-elect-renew-deadline`.
    pub leader_elect_renew_deadline: String,
    /// `--leader-elect-retry-period`.
    pub leader_elect_retry_period: String,
    /// `--leader-elect-resource-namespace`.
    pub leader_elect_resource_namespace: String,
    /// `--leader-elect-resource-name`.
    pub leader_elect_resource_name: String,
    /// `--concurrent-deployment-syncs`.
    pub concurrent_deployment_syncs: usize,
    /// `--concurrent-replicaset-syncs`.
    pub concurrent_replicaset_syncs: usize,
    /// `--concurrent-gc-syncs`.
    pub concurrent_gc_syncs: usize,
    /// `--concurrent-namespace-syncs`.
    pub concurrent_namespace_syncs: usize,
    /// `--concurrent-serviceaccount-syncs` (the ServiceAccount and root-CA controllers).
    pub concurrent_serviceaccount_syncs: usize,
    /// `--concurrent-endpoint-syncs`.
    pub concurrent_endpoint_syncs: usize,
    /// `--concurrent-service-endpoint-syncs` (EndpointSlices).
    pub concurrent_service_endpoint_syncs: usize,
    /// `--concurrent-job-syncs`.
    pub concurrent_job_syncs: usize,
    /// `--concurrent-daemonset-syncs`.
    pub concurrent_daemonset_syncs: usize,
    /// `--concurrent-statefulset-syncs`.
    pub concurrent_statefulset_syncs: usize,
    /// `--concurrent-cron-job-syncs`.
    pub concurrent_cron_job_syncs: usize,
    /// `--concurrent-resource-quota-syncs`.
    pub concurrent_resource_quota_syncs: usize,
    /// `--root-ca-file`: the CA published as `kube-root-ca.crt` (default: the kubeconfig's).
    pub root_ca_file: Option<PathBuf>,
    /// `--node-monitor-period`.
    pub node_monitor_period: String,
    /// `--node-monitor-grace-period`.
    pub node_monitor_grace_period: String,
    /// `--terminated-pod-gc-threshold` (0 disables terminated-pod GC).
    pub terminated_pod_gc_threshold: usize,
    /// `--allocate-node-cidrs`: give every Node a `spec.podCIDR` from `--cluster-cidr`.
    pub allocate_node_cidrs: bool,
    /// `--cluster-cidr`: the pod network.
    pub cluster_cidr: String,
    /// `--node-cidr-mask-size`: the prefix length of each Node's block.
    pub node_cidr_mask_size: u8,
    /// `--cluster-signing-cert-file`: the CA certificate (PEM) `csrsigning` signs with.
    pub cluster_signing_cert_file: Option<PathBuf>,
    /// `--cluster-signing-key-file`: its private key (PEM).
    pub cluster_signing_key_file: Option<PathBuf>,
    /// `--cluster-signing-duration`: the longest validity of a signed certificate.
    pub cluster_signing_duration: String,
    /// `--log-level` (`error`, `warn`, `info`, `debug`, `trace`).
    pub log_level: String,
    /// `--log-format` (`text` or `json`).
    pub log_format: String,
}

impl Default for ControllerManagerConfig {
    fn default() -> Self {
        ControllerManagerConfig {
            kubeconfig: None,
            controllers: vec!["*".into()],
            bind_address: "127.0.0.1".into(),
            port: 10257,
            leader_elect: true,
            leader_elect_lease_duration: "15s".into(),
            leader_elect_renew_deadline: "10s".into(),
            leader_elect_retry_period: "2s".into(),
            leader_elect_resource_namespace: "kube-system".into(),
            leader_elect_resource_name: "kube-controller-manager".into(),
            concurrent_deployment_syncs: 5,
            concurrent_replicaset_syncs: 5,
            concurrent_gc_syncs: 20,
            concurrent_namespace_syncs: 10,
            concurrent_serviceaccount_syncs: 1,
            concurrent_endpoint_syncs: 5,
            concurrent_service_endpoint_syncs: 5,
            concurrent_job_syncs: 5,
            concurrent_daemonset_syncs: 2,
            concurrent_statefulset_syncs: 5,
            concurrent_cron_job_syncs: 5,
            concurrent_resource_quota_syncs: 5,
            root_ca_file: None,
            node_monitor_period: "5s".into(),
            node_monitor_grace_period: "40s".into(),
            terminated_pod_gc_threshold: 12500,
            cluster_signing_cert_file: None,
            cluster_signing_key_file: None,
            cluster_signing_duration: "8760h".into(),
            allocate_node_cidrs: true,
            cluster_cidr: "10.244.0.0/16".into(),
            node_cidr_mask_size: 24,
            log_level: "info".into(),
            log_format: "text".into(),
        }
    }
}

/// Errors running the controller-manager.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Building the client, leader election or the metrics endpoint failed.
    #[error("{0}")]
    Client(#[from] kumo_client::Error),
    /// A configuration value is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Registering metrics failed.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Canonical controller names (upstream's `names` package) and their short aliases.
pub const CONTROLLERS: &[(&str, &str)] = &[
    ("deployment-controller", "deployment"),
    ("replicaset-controller", "replicaset"),
    ("garbage-collector-controller", "garbagecollector"),
    ("namespace-controller", "namespace"),
    ("serviceaccount-controller", "serviceaccount"),
    (
        "root-ca-certificate-publisher-controller",
        "root-ca-cert-publisher",
    ),
    (
        "certificatesigningrequest-approving-controller",
        "csrapproving",
    ),
    ("certificatesigningrequest-signing-controller", "csrsigning"),
    ("bootstrap-signer-controller", "bootstrapsigner"),
    ("token-cleaner-controller", "tokencleaner"),
];

/// Upstream's `IsControllerEnabled`: an explicit `name`/`-name` wins, else `*` enables
/// every default controller. Either the canonical name or its alias may be used.
pub fn controller_enabled(controllers: &[String], canonical: &str) -> bool {
    let alias = CONTROLLERS
        .iter()
        .find(|(c, _)| *c == canonical)
        .map(|(_, a)| *a)
        .unwrap_or(canonical);
    let mut star = false;
    for c in controllers {
        let c = c.trim();
        if c == canonical || c == alias {
            return true;
        }
        if let Some(neg) = c.strip_prefix('-')
            && (neg == canonical || neg == alias)
        {
            return false;
        }
        if c == "*" {
            star = true;
        }
    }
    star
}

/// What every controller gets: the client, the shared informers, queue metrics and the
/// configuration.
pub struct Ctx {
    /// The API client.
    pub client: kube::Client,
    /// Shared informers.
    pub factory: Arc<informer::InformerFactory>,
    /// `workqueue_*` metric families.
    pub metrics: QueueMetrics,
    /// The component's metrics registry.
    pub registry: Registry,
    /// The configuration.
    pub cfg: ControllerManagerConfig,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx").finish_non_exhaustive()
    }
}

impl Ctx {
    /// A work queue named `name` with upstream's default rate limiter.
    pub fn queue(&self, name: &str) -> WorkQueue<String> {
        WorkQueue::new(name, &self.metrics)
    }
}

fn duration(field: &str, value: &str) -> Result<Duration, Error> {
    util::parse_duration(value)
        .ok_or_else(|| Error::Config(format!("{field}: invalid duration {value:?}")))
}

/// Runs the controller-manager until the process ends (or leadership is lost, which is an
/// error like upstream's exit).
pub async fn run(cfg: ControllerManagerConfig) -> Result<(), Error> {
    let kubeconfig = cfg
        .kubeconfig
        .clone()
        .ok_or_else(|| Error::Config("--kubeconfig is required".into()))?;
    let agent = format!("kumo-controller-manager/{}", env!("CARGO_PKG_VERSION"));
    let client = kumo_client::client_from_kubeconfig_with_user_agent(&kubeconfig, &agent).await?;
    let registry = Registry::new();
    let metrics = QueueMetrics::register(&registry)?;
    let health = HealthChecks::default();
    let addr: SocketAddr = format!("{}:{}", cfg.bind_address, cfg.port)
        .parse()
        .map_err(|e| Error::Config(format!("bind address: {e}")))?;
    let server = kumo_client::serve_metrics(addr, registry.clone(), health.clone()).await?;
    // The endpoint goes with the controllers (also when leadership is lost).
    let server = util::AbortOnDrop(server.task);
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        factory: Arc::new(informer::InformerFactory::new(client.clone())),
        metrics,
        registry,
        cfg: cfg.clone(),
    });
    let result = if cfg.leader_elect {
        let mut le = kumo_client::LeaderElectionConfig::new(
            cfg.leader_elect_resource_namespace.clone(),
            cfg.leader_elect_resource_name.clone(),
            kumo_client::default_identity(),
        );
        le.lease_duration = duration(
            "leader-elect-lease-duration",
            &cfg.leader_elect_lease_duration,
        )?;
        le.renew_deadline = duration(
            "leader-elect-renew-deadline",
            &cfg.leader_elect_renew_deadline,
        )?;
        le.retry_period = duration("leader-elect-retry-period", &cfg.leader_elect_retry_period)?;
        match kumo_client::run_leader_elected_with(client, le, || run_controllers(ctx)).await {
            Ok(r) => r,
            Err(e) => Err(Error::from(e)),
        }
    } else {
        run_controllers(ctx).await
    };
    drop(server);
    result
}

/// Starts every enabled controller and waits for them (forever, normally).
async fn run_controllers(ctx: Arc<Ctx>) -> Result<(), Error> {
    let enabled = |name: &str| controller_enabled(&ctx.cfg.controllers, name);
    let mut tasks: Vec<(&'static str, BoxFuture<'static, ()>)> = Vec::new();
    if enabled("replicaset-controller") {
        let c = replicaset::ReplicaSetController::new(&ctx);
        tasks.push((
            "replicaset",
            Box::pin(c.run(ctx.cfg.concurrent_replicaset_syncs)),
        ));
    }
    if enabled("deployment-controller") {
        let c = deployment::DeploymentController::new(&ctx);
        tasks.push((
            "deployment",
            Box::pin(c.run(ctx.cfg.concurrent_deployment_syncs)),
        ));
    }
    if enabled("garbage-collector-controller") {
        let c = gc::GarbageCollector::new(&ctx)?;
        tasks.push((
            "garbagecollector",
            Box::pin(c.run(ctx.cfg.concurrent_gc_syncs)),
        ));
    }
    if enabled("namespace-controller") {
        let c = namespace::NamespaceController::new(&ctx);
        tasks.push((
            "namespace",
            Box::pin(c.run(ctx.cfg.concurrent_namespace_syncs)),
        ));
    }
    if enabled("serviceaccount-controller") {
        let c = serviceaccount::ServiceAccountController::new(&ctx);
        tasks.push((
            "serviceaccount",
            Box::pin(c.run(ctx.cfg.concurrent_serviceaccount_syncs)),
        ));
    }
    if enabled("root-ca-certificate-publisher-controller") {
        let c = serviceaccount::RootCaPublisher::new(&ctx)?;
        tasks.push((
            "root-ca-cert-publisher",
            Box::pin(c.run(ctx.cfg.concurrent_serviceaccount_syncs)),
        ));
    }
    if enabled("node-lifecycle-controller") {
        let c = nodelifecycle::NodeLifecycleController::new(&ctx)?;
        tasks.push(("nodelifecycle", Box::pin(c.run())));
    }
    if enabled("node-ipam-controller") && ctx.cfg.allocate_node_cidrs {
        let c = nodeipam::NodeIpam::new(&ctx)?;
        tasks.push(("nodeipam", Box::pin(c.run())));
    }
    if enabled("endpoints-controller") {
        let c = endpoints::EndpointsController::new(&ctx, endpoints::Flavor::Endpoints);
        tasks.push((
            "endpoint",
            Box::pin(c.run(ctx.cfg.concurrent_endpoint_syncs)),
        ));
    }
    if enabled("endpointslice-controller") {
        let c = endpoints::EndpointsController::new(&ctx, endpoints::Flavor::Slices);
        tasks.push((
            "endpointslice",
            Box::pin(c.run(ctx.cfg.concurrent_service_endpoint_syncs)),
        ));
    }
    if enabled("pod-garbage-collector-controller") {
        let c = podgc::PodGc::new(&ctx);
        tasks.push(("podgc", Box::pin(c.run())));
    }
    if enabled("job-controller") {
        let c = job::JobController::new(&ctx);
        tasks.push(("job", Box::pin(c.run(ctx.cfg.concurrent_job_syncs))));
    }
    if enabled("cronjob-controller") {
        let c = cronjob::CronJobController::new(&ctx);
        tasks.push((
            "cronjob",
            Box::pin(c.run(ctx.cfg.concurrent_cron_job_syncs)),
        ));
    }
    if enabled("daemonset-controller") {
        let c = daemonset::DaemonSetController::new(&ctx);
        tasks.push((
            "daemonset",
            Box::pin(c.run(ctx.cfg.concurrent_daemonset_syncs)),
        ));
    }
    if enabled("statefulset-controller") {
        let c = statefulset::StatefulSetController::new(&ctx);
        tasks.push((
            "statefulset",
            Box::pin(c.run(ctx.cfg.concurrent_statefulset_syncs)),
        ));
    }
    if enabled("resourcequota-controller") {
        let c = resourcequota::ResourceQuotaController::new(&ctx);
        tasks.push((
            "resourcequota",
            Box::pin(c.run(ctx.cfg.concurrent_resource_quota_syncs)),
        ));
    }
    if enabled("clusterrole-aggregation-controller") {
        let c = clusterrole::ClusterRoleAggregation::new(&ctx);
        tasks.push(("clusterrole-aggregation", Box::pin(c.run())));
    }
    if enabled("certificatesigningrequest-approving-controller") {
        let c = certificates::CsrApprover::new(&ctx);
        tasks.push(("csrapproving", Box::pin(c.run(1))));
    }
    if enabled("certificatesigningrequest-signing-controller")
        && let Some(c) = certificates::CsrSigningController::new(&ctx)?
    {
        tasks.push(("csrsigning", Box::pin(c.run(1))));
    }
    if enabled("bootstrap-signer-controller") {
        let c = bootstrap::BootstrapSigner::new(&ctx);
        tasks.push(("bootstrapsigner", Box::pin(c.run())));
    }
    if enabled("token-cleaner-controller") {
        let c = bootstrap::TokenCleaner::new(&ctx);
        tasks.push(("tokencleaner", Box::pin(c.run())));
    }
    ctx.factory.start();
    let names: Vec<&str> = tasks.iter().map(|(n, _)| *n).collect();
    info!(controllers = ?names, "started controllers");
    // Dropping this future (leadership lost) aborts every controller.
    let mut set = tokio::task::JoinSet::new();
    for (name, fut) in tasks {
        set.spawn(fut.instrument(info_span!("controller", name)));
    }
    while set.join_next().await.is_some() {}
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enabling_like_upstream() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(controller_enabled(&v(&["*"]), "deployment-controller"));
        assert!(!controller_enabled(
            &v(&["*", "-deployment"]),
            "deployment-controller"
        ));
        assert!(!controller_enabled(
            &v(&["-deployment-controller", "*"]),
            "deployment-controller"
        ));
        assert!(controller_enabled(
            &v(&["deployment"]),
            "deployment-controller"
        ));
        assert!(!controller_enabled(
            &v(&["deployment"]),
            "replicaset-controller"
        ));
        assert!(!controller_enabled(&v(&[]), "replicaset-controller"));
    }

    #[test]
    fn config_is_kebab_case_with_defaults() {
        let cfg: ControllerManagerConfig = serde_json::from_value(
            serde_json::json!({"leader-elect": false, "controllers": ["*", "-namespace"]}),
        )
        .expect("config");
        assert!(!cfg.leader_elect);
        assert_eq!(cfg.concurrent_gc_syncs, 20);
        assert_eq!(cfg.controllers, vec!["*", "-namespace"]);
    }
}
