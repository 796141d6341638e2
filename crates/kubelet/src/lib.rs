//! kumo kubelet: joins a cluster (bootstrap token + CSR, like kubeadm), registers its Node and
//! keeps it alive with a Lease, runs the pods bound to it through a [`kumo_runtime::Runtime`]
//! and serves the kubelet API (`/containerLogs`, `/exec`, `/healthz`, `/metrics`).
//!
//! - [`config`]: [`KubeletConfig`], the flags of `kumo kubelet`.
//! - [`node`]: Node registration, `nodes/status` and the node Lease.
//! - [`pods`]: one pod watch dispatching to a worker task per pod ([`pods::worker`]: sandbox,
//!   volumes, init containers, containers, restart policy and backoff, status, termination).
//! - [`env`], [`volumes`], [`probes`]: container environment, volume contents and mounts,
//!   startup/liveness/readiness probes.
//! - [`machine`]: capacity and identity of this machine; [`events`], [`metrics`].
//! - With `--container-runtime sim --sim-nodes N` one process runs N hollow nodes sharing one
//!   client, one pod watch and one [`kumo_runtime::sim::SimRuntime`].

pub mod bootstrap;
pub mod config;
pub mod context;
pub mod directory;
pub mod env;
pub mod events;
pub mod machine;
pub mod metrics;
pub mod node;
pub mod pods;
pub mod probes;
pub mod quantity;
pub mod server;
pub mod volumes;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use parking_lot::{Mutex, RwLock};
use tracing::{debug, info, warn};

pub use config::KubeletConfig;

use crate::context::{NodeCtx, Shared};
use crate::events::Recorder;

/// `status.nodeInfo.kubeletVersion`: the Kubernetes API level this kubelet implements.
pub const KUBELET_VERSION: &str = "v1.33.0";

/// Builds the runtime `--container-runtime` names.
async fn make_runtime(cfg: &KubeletConfig) -> anyhow::Result<Arc<dyn kumo_runtime::Runtime>> {
    match cfg.container_runtime.as_str() {
        "sim" => Ok(Arc::new(kumo_runtime::sim::SimRuntime::new(
            cfg.sim_write_logs,
        ))),
        "process" => {
            let store_dir = cfg
                .image_store
                .clone()
                .unwrap_or_else(|| cfg.root_dir.join("images"));
            let images = kumo_runtime::image::ImageStore::open(&store_dir)
                .with_context(|| format!("image store {}", store_dir.display()))?;
            let opts = kumo_runtime::process::ProcessRuntimeOptions {
                host_ip: cfg.node_ip.clone().filter(|s| !s.is_empty()),
                ..Default::default()
            };
            let rt = kumo_runtime::process::ProcessRuntime::with_options(
                &cfg.root_dir.join("runtime"),
                images,
                opts,
            )
            .context("process runtime")?;
            Ok(Arc::new(rt))
        }
        "cri" | "remote" | "containerd" => {
            let rt = kumo_cri::CriRuntime::connect(&cfg.container_runtime_endpoint)
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "container runtime endpoint {}: {e}",
                        cfg.container_runtime_endpoint
                    )
                })?;
            Ok(Arc::new(rt))
        }
        other => {
            anyhow::bail!("container runtime {other:?} is not available in this build (use sim)")
        }
    }
}

/// The kubeconfig to use: `--kubeconfig`, or the one the bootstrap-token join writes.
async fn kubeconfig_path(cfg: &KubeletConfig, node_name: &str) -> anyhow::Result<PathBuf> {
    if let Some(p) = &cfg.kubeconfig {
        return Ok(p.clone());
    }
    if let (Some(server), Some(token), Some(hash)) =
        (&cfg.server, &cfg.bootstrap_token, &cfg.ca_cert_hash)
    {
        std::fs::create_dir_all(&cfg.root_dir)
            .with_context(|| format!("create {}", cfg.root_dir.display()))?;
        return bootstrap::join(server, token, hash, node_name, &cfg.root_dir).await;
    }
    if cfg.bootstrap_token.is_some() || cfg.server.is_some() {
        anyhow::bail!("joining needs --server, --bootstrap-token and --ca-cert-hash together");
    }
    anyhow::bail!(
        "--kubeconfig (or --server with --bootstrap-token and --ca-cert-hash) is required"
    )
}

/// Runs the kubelet until an unrecoverable error.
/// Transparent huge pages off for the kubelet and the runtime helpers it spawns (see
/// [`kumo_runtime::process::disable_transparent_huge_pages`]). kumo's allocator never asks for
/// huge pages (mimalloc built with `no_thp`), so with THP in `madvise` mode (most
/// distributions) nothing more is needed. With THP `always` the kernel has already backed the
/// allocator's first heap regions with 2 MiB pages by the time this runs (~6 MiB of a ~33 MiB
/// idle kubelet), so the kubelet re-executes itself once, same pid and arguments, with the
/// flag set, which the new image keeps from its first allocation on.
fn without_huge_pages() {
    use std::os::unix::process::CommandExt as _;
    if nix::sys::prctl::get_thp_disable().unwrap_or(true) {
        // Already off: set by our parent, or this is the re-executed image.
        return;
    }
    if !kumo_runtime::process::disable_transparent_huge_pages() {
        return;
    }
    let thp_always = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .is_ok_and(|s| s.contains("[always]"));
    let mut args = std::env::args_os();
    let (Some(arg0), Ok(exe), true) = (args.next(), std::env::current_exe(), thp_always) else {
        return;
    };
    let err = std::process::Command::new(exe).arg0(arg0).args(args).exec();
    // Only returns on failure (e.g. the binary was replaced on disk): go on as we are.
    debug!(error = %err, "could not re-execute the kubelet without huge pages");
}

pub async fn run(cfg: KubeletConfig) -> anyhow::Result<()> {
    without_huge_pages();
    let sim = cfg.container_runtime == "sim";
    let base_name = cfg
        .node_name
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(machine::hostname)
        .to_lowercase();
    let kubeconfig = kubeconfig_path(&cfg, &base_name).await?;
    // Credentials from a bootstrap-token join are the kubelet's own to renew.
    let joined = cfg.kubeconfig.is_none();
    let client = kumo_client::client_from_kubeconfig_with_user_agent(
        &kubeconfig,
        &format!(
            "kubelet/{KUBELET_VERSION} (linux/{}) kumo",
            machine::go_arch()
        ),
    )
    .await
    .context("kubeconfig")?;
    let runtime = make_runtime(&cfg).await?;
    let version = runtime
        .version()
        .await
        .map_err(|e| anyhow::anyhow!("container runtime: {e}"))?;
    let dur = |s: &str, what: &str| {
        config::parse_duration(s).ok_or_else(|| anyhow::anyhow!("{what}: invalid duration {s:?}"))
    };
    let sync_frequency = dur(&cfg.sync_frequency, "sync-frequency")?;
    let pleg_period = match &cfg.pleg_period {
        Some(p) => dur(p, "pleg-period")?,
        None if sim => sync_frequency,
        None => Duration::from_secs(1),
    };
    let status_freq = dur(
        &cfg.node_status_update_frequency,
        "node-status-update-frequency",
    )?;
    let lease_renew = dur(&cfg.node_lease_renew_interval, "node-lease-renew-interval")?;
    let metrics = metrics::Metrics::new()?;
    let shared = Arc::new(Shared {
        client: client.clone(),
        runtime: runtime.clone(),
        runtime_name: version.name.clone(),
        metrics: metrics.clone(),
        sim,
        sync_frequency,
        pleg_period,
        cluster_dns: cfg.cluster_dns.clone(),
        cluster_domain: cfg.cluster_domain.clone(),
        host_dns: machine::host_resolv_conf(),
        kube_service: RwLock::new(None),
        events: cfg.events,
    });
    pods::refresh_kube_service(&shared).await;

    let machine_info = machine::MachineInfo::read();
    let node_ip = cfg
        .node_ip
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(machine::default_node_ip);
    let extra_labels =
        config::parse_pairs(&cfg.node_labels).map_err(|e| anyhow::anyhow!("node-labels: {e}"))?;
    let taints = config::parse_taints(&cfg.register_with_taints)
        .map_err(|e| anyhow::anyhow!("register-with-taints: {e}"))?;
    let reserved = config::parse_pairs(&cfg.system_reserved)
        .map_err(|e| anyhow::anyhow!("system-reserved: {e}"))?;
    let sim_capacity = sim.then(|| {
        (
            quantity::parse(&cfg.sim_cpu).map_or(32_000, |v| quantity::ceil(v * 1000.0)),
            quantity::parse(&cfg.sim_memory).map_or(256 << 30, quantity::ceil),
        )
    });
    let count = if sim { cfg.sim_nodes.max(1) } else { 1 };
    let names: Vec<String> = if count > 1 {
        (1..=count).map(|i| format!("{base_name}-{i}")).collect()
    } else {
        vec![base_name.clone()]
    };
    let runtime_version = format!("{}://{}", version.name, version.version);
    let pod_log_base = cfg
        .pod_log_dir
        .clone()
        .unwrap_or_else(|| cfg.root_dir.join("pods-logs"));
    let mut nodes = Vec::with_capacity(names.len());
    let mut descs = Vec::with_capacity(names.len());
    for name in &names {
        let (root_dir, pod_log_dir) = if count > 1 {
            (cfg.root_dir.join(name), pod_log_base.join(name))
        } else {
            (cfg.root_dir.clone(), pod_log_base.clone())
        };
        if !sim || count == 1 {
            std::fs::create_dir_all(&root_dir)
                .with_context(|| format!("create {}", root_dir.display()))?;
        }
        let desc = node::describe(&node::DescribeInput {
            name,
            node_ip: &node_ip,
            hostname: if count > 1 { name } else { &base_name },
            port: cfg.port,
            max_pods: cfg.max_pods,
            extra_labels: &extra_labels,
            taints: &taints,
            system_reserved: &reserved,
            machine: &machine_info,
            runtime_version: &runtime_version,
            sim_capacity,
            root_dir: &root_dir,
        });
        let ctx = Arc::new(NodeCtx {
            shared: shared.clone(),
            name: name.clone(),
            node_ip: node_ip.clone(),
            root_dir,
            pod_log_dir,
            recorder: Recorder::new(client.clone(), name.clone(), cfg.events),
            allocatable: desc.alloc,
            labels: desc.labels.clone(),
            directory: Arc::new(pods::directory::PodDir::default()),
            admitted: Mutex::new(Default::default()),
        });
        metrics.node_name.with_label_values(&[name]).set(1);
        nodes.push(ctx);
        descs.push(desc);
    }

    // Register every node (bounded concurrency for thousands of hollow nodes).
    let uids: Vec<anyhow::Result<String>> = futures::stream::iter(descs.iter())
        .map(|d| {
            let client = client.clone();
            async move {
                let mut delay = Duration::from_millis(200);
                loop {
                    match node::register(&client, d).await {
                        Ok(uid) => return Ok(uid),
                        Err(e) if delay < Duration::from_secs(10) => {
                            warn!(node = %d.name, error = %e, "node registration failed; retrying");
                            tokio::time::sleep(delay).await;
                            delay *= 2;
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        })
        .buffered(64)
        .collect()
        .await;
    let n = nodes.len() as u32;
    for (i, ((ctx, desc), uid)) in nodes.iter().zip(descs).zip(uids).enumerate() {
        let uid = uid.with_context(|| format!("register node {}", ctx.name))?;
        // Spread hollow nodes' heartbeats over the interval instead of bursting them.
        let spread = |every: Duration| {
            if n > 1 {
                every.mul_f64(f64::from(i as u32) / f64::from(n))
            } else {
                Duration::ZERO
            }
        };
        tokio::spawn(node::status_loop(
            ctx.clone(),
            desc,
            status_freq,
            spread(status_freq),
        ));
        tokio::spawn(node::lease_loop(
            client.clone(),
            ctx.name.clone(),
            uid,
            lease_renew,
            cfg.node_lease_duration_seconds,
            spread(lease_renew),
        ));
    }
    info!(nodes = nodes.len(), runtime = %runtime_version, "kubelet started");

    if cfg.healthz_port != 0 {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", cfg.healthz_port))
            .await
            .with_context(|| format!("bind healthz port {}", cfg.healthz_port))?;
        tokio::spawn(async move {
            if let Err(e) = server::serve_healthz(listener).await {
                warn!(error = %e, "healthz server stopped");
            }
        });
    }
    if count == 1 && cfg.port != 0 {
        let ctx = &nodes[0];
        let ips: Vec<std::net::IpAddr> = node_ip.parse().into_iter().collect();
        let serving =
            server::load_or_create_serving_cert(&cfg.root_dir.join("pki"), &ctx.name, &ips)?;
        let client_ca_pem = kumo_client::kubeconfig_ca_pem(&kubeconfig).ok().flatten();
        let listener = tokio::net::TcpListener::bind((cfg.address.as_str(), cfg.port))
            .await
            .with_context(|| format!("bind kubelet API {}:{}", cfg.address, cfg.port))?;
        let state = server::ServerState {
            node_name: ctx.name.clone(),
            pods: ctx.directory.clone(),
            runtime: runtime.clone(),
            metrics: metrics.registry.clone(),
            api: Some(client.clone()),
        };
        let cert = server::ServingCert::new(&serving)?;
        if cfg.rotate_server_certificates.unwrap_or(joined) {
            // serverTLSBootstrap: a cluster-CA-signed serving certificate through a
            // kubernetes.io/kubelet-serving CSR (an admin approves it); the self-signed one
            // serves until then.
            let (client, name, pki, cert) = (
                client.clone(),
                ctx.name.clone(),
                cfg.root_dir.join("pki"),
                cert.clone(),
            );
            tokio::spawn(async move {
                match bootstrap::request_serving_cert(client, &name, &ips, &pki).await {
                    Ok(ck) => match cert.set(&ck) {
                        Ok(()) => info!("serving the cluster-signed kubelet certificate"),
                        Err(e) => warn!(error = %e, "signed serving certificate unusable"),
                    },
                    Err(e) => warn!(error = %e, "kubelet serving certificate request failed"),
                }
            });
        }
        tokio::spawn(async move {
            if let Err(e) = server::serve_with_cert(state, listener, cert, client_ca_pem).await {
                warn!(error = %e, "kubelet API server stopped");
            }
        });
    }
    if count == 1 && cfg.rotate_certificates.unwrap_or(joined) {
        let (kubeconfig, name) = (kubeconfig.clone(), base_name.clone());
        tokio::select! {
            r = pods::run(shared, nodes) => r,
            r = rotate_client_cert_loop(&kubeconfig, &name) => r,
        }
    } else {
        pods::run(shared, nodes).await
    }
}

/// Client certificate rotation: checks every hour and renews at 70 % of the certificate's
/// life. The kube clients hold the old certificate, so after a renewal the kubelet exits
/// for its supervisor to start it again with the new one (as upstream's kubelet once did);
/// pods keep running across the restart.
async fn rotate_client_cert_loop(kubeconfig: &std::path::Path, node: &str) -> anyhow::Result<()> {
    loop {
        match bootstrap::rotate_client_cert(kubeconfig, node, false).await {
            Ok(true) => {
                info!("client certificate renewed; restarting the kubelet to use it");
                anyhow::bail!("client certificate renewed: restart to load it");
            }
            Ok(false) => {}
            Err(e) => warn!(error = %e, "client certificate rotation check failed"),
        }
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}
