//! `kumo`: one binary, many components. `main` only parses flags and wires crates together.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

/// Every component serves many small requests concurrently: mimalloc's per-thread heaps beat
/// glibc malloc there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "kumo",
    version,
    about = "kumo: a multi-cloud Kubernetes federation in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start a local kumo control plane and supervise it until Ctrl-C (or `--detach`).
    Up(UpFlags),
    /// Show whether the local control plane of `kumo up` runs, component by component.
    Status(DataDirFlag),
    /// Stop the local control plane (keeps its data); leaves no process behind.
    Down(DataDirFlag),
    /// Stop the local control plane and delete its data directory.
    Delete(DataDirFlag),
    /// Run an etcd v3-compatible store member.
    Store(Box<StoreFlags>),
    /// Run the Kubernetes API server on an etcd v3 store (kumo store or etcd).
    Apiserver(Box<ApiserverFlags>),
    /// Run the controllers (Deployment, ReplicaSet, garbage collector, namespaces, nodes …).
    ControllerManager(Box<ControllerManagerFlags>),
    /// Run the scheduler (binds pending pods to nodes).
    Scheduler(Box<SchedulerFlags>),
    /// Run a node agent: registers the Node, keeps its Lease, runs its pods.
    Kubelet(Box<KubeletFlags>),
    /// Run the federation controllers against a host apiserver (installs the CRDs).
    Federation(Box<kumo_federation::cli::FederationFlags>),
    /// Register a member cluster with the federation host.
    Join(Box<kumo_federation::cli::JoinFlags>),
    /// Unregister a member cluster.
    Unjoin(Box<kumo_federation::cli::UnjoinFlags>),
    /// Bootstrap tokens for joining nodes (kubeadm token create|list|delete).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Snapshot tools for kumo store (`etcdctl snapshot save` makes the file).
    Snapshot {
        #[command(subcommand)]
        command: SnapshotCommand,
    },
    /// The local image store of the `process` runtime (no registry: import tar files).
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
}

#[derive(Subcommand, Debug)]
enum ImageCommand {
    /// Import an OCI image-layout tar or a `docker save` archive; with `--rootfs NAME`, a tar
    /// of a root filesystem becomes image NAME (like `docker import`), its command after `--`.
    Import {
        /// The tar file (plain or gzip).
        file: PathBuf,
        /// The file is a root filesystem: name the one-layer image made from it.
        #[arg(long, value_name = "NAME")]
        rootfs: Option<String>,
        /// The image's command (with `--rootfs`), e.g. `-- sh`.
        #[arg(last = true)]
        cmd: Vec<String>,
        #[command(flatten)]
        store: ImageStoreFlag,
    },
    /// List stored images.
    #[command(alias = "list")]
    Ls {
        #[command(flatten)]
        store: ImageStoreFlag,
    },
    /// Give an image another name (like `docker tag`): `kumo image tag busybox kumo.test/busybox:1`.
    Tag {
        /// An image name or id.
        source: String,
        /// The new name.
        target: String,
        #[command(flatten)]
        store: ImageStoreFlag,
    },
    /// Remove an image name (the image goes with its last name, or when given by id).
    Rm {
        name: String,
        #[command(flatten)]
        store: ImageStoreFlag,
    },
}

#[derive(Args, Debug)]
struct ImageStoreFlag {
    /// The image store directory (a kubelet's `--image-store`, by default
    /// `<root-dir>/images`).
    #[arg(long, env = "KUMO_IMAGE_STORE", conflicts_with = "data_dir")]
    root: Option<PathBuf>,
    /// The data directory of a `kumo up` cluster, whose nodes share `DIR/images`. Without
    /// `--root` or `--data-dir`: `~/.kumo/images` when `kumo up`'s default directory exists,
    /// else the kubelet's default `/var/lib/kumo/kubelet/images`.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

impl ImageStoreFlag {
    fn dir(&self) -> PathBuf {
        if let Some(r) = &self.root {
            return r.clone();
        }
        if let Some(d) = &self.data_dir {
            return kumo_up::images_dir(&default_data_dir(Some(d.clone())));
        }
        let up = default_data_dir(None);
        if up.exists() {
            kumo_up::images_dir(&up)
        } else {
            PathBuf::from("/var/lib/kumo/kubelet/images")
        }
    }
}

#[derive(Args, Debug)]
struct DataDirFlag {
    /// The data directory of `kumo up` (default: ~/.kumo).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct UpFlags {
    /// Where the components keep data and logs (default: ~/.kumo).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Start in the background and return once the cluster answers.
    #[arg(long)]
    detach: bool,
    /// Client port of the store.
    #[arg(long, default_value_t = 2379)]
    store_port: u16,
    /// Metrics port of the store.
    #[arg(long, default_value_t = 2381)]
    store_metrics_port: u16,
    /// HTTPS port of the apiserver.
    #[arg(long, default_value_t = 6443)]
    apiserver_port: u16,
    /// How many local nodes (kubelets) to run.
    #[arg(long, default_value_t = 2)]
    nodes: u32,
    /// The nodes' container runtime: process, cri or sim.
    #[arg(long, default_value = "process", value_parser = ["process", "cri", "sim"])]
    runtime: String,
    /// CRI endpoint for `--runtime cri`.
    #[arg(long)]
    container_runtime_endpoint: Option<String>,
    /// API port of the first kubelet (the next ones count up).
    #[arg(long, default_value_t = 10250)]
    kubelet_port: u16,
    /// Member clusters of the local federation (0: one standalone cluster, no federation).
    #[arg(long, default_value_t = 3)]
    members: u32,
}

/// Flags of `kumo apiserver`; names mirror kube-apiserver's.
#[derive(Args, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
struct ApiserverFlags {
    /// Config file (TOML, or YAML by extension) with the same keys as the flags.
    #[arg(long)]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// etcd v3 endpoints (comma-separated), e.g. http://127.0.0.1:2379.
    #[arg(long, value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    etcd_servers: Option<Vec<String>>,
    /// Address to serve HTTPS on.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    bind_address: Option<String>,
    /// Port to serve HTTPS on (0 picks a free one).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    secure_port: Option<u16>,
    /// Directory of the cluster CA, serving and admin certificates (created on first start).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    cert_dir: Option<PathBuf>,
    /// Where to write the admin kubeconfig (default: <cert-dir>/admin.kubeconfig).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    admin_kubeconfig: Option<PathBuf>,
    /// Address advertised to clients and in the `kubernetes` Service's endpoints.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    advertise_address: Option<String>,
    /// Extra names or addresses for the serving certificate (comma-separated).
    #[arg(long, value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_sans: Option<Vec<String>>,
    /// Static bearer tokens (CSV: token,user,uid,"group1,group2").
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    token_auth_file: Option<PathBuf>,
    /// Accept bootstrap tokens (Secrets of type bootstrap.kubernetes.io/token in kube-system).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    enable_bootstrap_token_auth: Option<bool>,
    /// RBAC (default) or AlwaysAllow (tests only).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    authorization_mode: Option<String>,
    /// CIDR of Service ClusterIPs.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    service_cluster_ip_range: Option<String>,
    /// CA bundle to verify kubelets' serving certificates with (default: not verified).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    kubelet_certificate_authority: Option<PathBuf>,
    /// Log level.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    log_level: Option<String>,
    /// Log format: text or json.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    log_format: Option<String>,
}

/// Flags of `kumo controller-manager`; names mirror kube-controller-manager's. Every other
/// setting (`concurrent-*-syncs`, node monitor periods …) comes from `KUMO_*` or `--config`.
#[derive(Args, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
struct ControllerManagerFlags {
    /// Config file (TOML, or YAML by extension) with the same keys as the flags.
    #[arg(long)]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Kubeconfig to reach the apiserver.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    kubeconfig: Option<PathBuf>,
    /// Controllers to run: `*` (all), `name` to enable, `-name` to disable (comma-separated).
    #[arg(long, value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    controllers: Option<Vec<String>>,
    /// Address of the /metrics and /healthz endpoint.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    bind_address: Option<String>,
    /// Port of the /metrics and /healthz endpoint.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    /// Hold the kube-system/kube-controller-manager Lease before running controllers.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    leader_elect: Option<bool>,
    /// The CA published as kube-root-ca.crt (default: the kubeconfig's).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    root_ca_file: Option<PathBuf>,
    /// CA certificate (PEM) csrsigning signs approved requests with (no flag: signer off).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster_signing_cert_file: Option<PathBuf>,
    /// Private key (PEM) of --cluster-signing-cert-file.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster_signing_key_file: Option<PathBuf>,
    /// Longest validity of a signed certificate (default 8760h).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster_signing_duration: Option<String>,
    /// Log level.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    log_level: Option<String>,
    /// Log format: text or json.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    log_format: Option<String>,
}

/// Flags of `kumo scheduler`; names mirror kube-scheduler's. Other settings come from
/// `KUMO_*` or `--config`.
#[derive(Args, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
struct SchedulerFlags {
    /// Config file (TOML, or YAML by extension) with the same keys as the flags.
    #[arg(long)]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Kubeconfig to reach the apiserver.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    kubeconfig: Option<PathBuf>,
    /// Scheduler names served (comma-separated; pods' spec.schedulerName).
    #[arg(long, value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    scheduler_names: Option<Vec<String>>,
    /// Hold the kube-system/kube-scheduler Lease before scheduling.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    leader_elect: Option<bool>,
    /// host:port of /metrics and /healthz (empty disables).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics_bind_address: Option<String>,
    /// percentageOfNodesToScore (0 = upstream's adaptive default).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    percentage_of_nodes_to_score: Option<u32>,
    /// Log level.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    log_level: Option<String>,
    /// Log format: text or json.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    log_format: Option<String>,
}

/// Flags of `kumo kubelet`; names mirror the kubelet's. Other settings (`sync-frequency`,
/// `sim-cpu` …) come from `KUMO_*` or `--config`.
#[derive(Args, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
struct KubeletFlags {
    /// Config file (TOML, or YAML by extension) with the same keys as the flags.
    #[arg(long)]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Kubeconfig with the node's credentials.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    kubeconfig: Option<PathBuf>,
    /// Apiserver URL to join with a bootstrap token.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    server: Option<String>,
    /// Bootstrap token `<id>.<secret>`.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    bootstrap_token: Option<String>,
    /// Cluster CA pin `sha256:<hex>`.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    ca_cert_hash: Option<String>,
    /// Node name (default: the hostname).
    #[arg(long, alias = "node-name")]
    #[serde(rename = "node-name", skip_serializing_if = "Option::is_none")]
    hostname_override: Option<String>,
    /// Pods' volumes and state.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    root_dir: Option<PathBuf>,
    /// Container logs (default <root-dir>/pods-logs).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pod_log_dir: Option<PathBuf>,
    /// Address of the kubelet API.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    address: Option<String>,
    /// Port of the kubelet API (0 = off).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    /// Plain-HTTP /healthz port on 127.0.0.1 (0 = off).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    healthz_port: Option<u16>,
    /// The Node's InternalIP.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    node_ip: Option<String>,
    /// process, cri or sim.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    container_runtime: Option<String>,
    /// CRI endpoint (unix:///run/containerd/containerd.sock).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    container_runtime_endpoint: Option<String>,
    /// Image store of the process runtime (default <root-dir>/images).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    image_store: Option<PathBuf>,
    /// Maximum pods on this node.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_pods: Option<u32>,
    /// Extra node labels k=v,…
    #[arg(long, value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    node_labels: Option<Vec<String>>,
    /// Taints to register with, k=v:Effect,…
    #[arg(long, value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    register_with_taints: Option<Vec<String>>,
    /// Resources reserved for the system, cpu=…,memory=…
    #[arg(long, value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    system_reserved: Option<Vec<String>>,
    /// How often node status is computed (10s).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    node_status_update_frequency: Option<String>,
    /// Nameservers for ClusterFirst pods (comma-separated).
    #[arg(long, value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster_dns: Option<Vec<String>>,
    /// Cluster DNS domain.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster_domain: Option<String>,
    /// With --container-runtime sim: how many hollow nodes to run.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    sim_nodes: Option<u32>,
    /// Log level.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    log_level: Option<String>,
    /// Log format: text or json.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    log_format: Option<String>,
}

#[derive(Subcommand, Debug)]
enum SnapshotCommand {
    /// Restore a snapshot file into a new data directory.
    Restore {
        /// The snapshot file.
        file: PathBuf,
        /// The data directory to create.
        #[arg(long)]
        data_dir: PathBuf,
    },
}

/// Flags of `kumo store`; names mirror etcd's. Unset flags fall back to `KUMO_*` variables,
/// then the `--config` file, then defaults.
#[derive(Args, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
struct StoreFlags {
    /// Config file (TOML, or YAML by extension) with the same keys as the flags.
    #[arg(long)]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Human-readable name for this member.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    /// Path to the data directory.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<PathBuf>,
    /// URLs to listen on for client traffic.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    listen_client_urls: Option<String>,
    /// Client URLs to advertise.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    advertise_client_urls: Option<String>,
    /// Peer URLs to advertise.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    initial_advertise_peer_urls: Option<String>,
    /// URLs to listen on for peer traffic.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    listen_peer_urls: Option<String>,
    /// Cluster token mixed into ids.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    initial_cluster_token: Option<String>,
    /// URLs to serve /metrics and /health on.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    listen_metrics_urls: Option<String>,
    /// Raise the NOSPACE alarm when the database exceeds this many bytes.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    quota_backend_bytes: Option<u64>,
    /// Maximum client request size in bytes.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_request_bytes: Option<usize>,
    /// Maximum number of operations in a txn branch.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_txn_ops: Option<usize>,
    /// Raft entries between durable database checkpoints.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    snapshot_count: Option<u64>,
    /// Raft heartbeat interval (ms).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    heartbeat_interval: Option<u64>,
    /// Raft election timeout (ms).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    election_timeout: Option<u64>,
    /// Interval between watch progress notifications (e.g. 10m, 30s).
    #[arg(long, alias = "experimental-watch-progress-notify-interval")]
    #[serde(skip_serializing_if = "Option::is_none")]
    watch_progress_notify_interval: Option<String>,
    /// Log level or tracing filter.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    log_level: Option<String>,
    /// Log format: text or json.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    log_format: Option<String>,
}

// The binary reports a fatal error on stderr itself (logging may not be set up yet).
#[allow(clippy::print_stderr)]
#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Create a bootstrap token (a kube-system Secret) and print it.
    Create {
        /// The token to create (default: a random one).
        token: Option<String>,
        /// Kubeconfig of an admin (default: the `kumo up` one).
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        /// Lifetime; 0 = never expires.
        #[arg(long, default_value = "24h")]
        ttl: String,
        /// Human-readable description.
        #[arg(long, default_value = "")]
        description: String,
        /// Extra groups (system:bootstrappers:…), comma-separated.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "system:bootstrappers:kubeadm:default-node-token"
        )]
        groups: Vec<String>,
        /// Usages: signing, authentication (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "signing,authentication")]
        usages: Vec<String>,
        /// Print the `kumo kubelet` command that joins a node with this token.
        #[arg(long)]
        print_join_command: bool,
    },
    /// List the bootstrap tokens.
    List {
        /// Kubeconfig of an admin (default: the `kumo up` one).
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
    },
    /// Delete a bootstrap token (by id or whole token).
    Delete {
        /// Token id or `<id>.<secret>`.
        token: String,
        /// Kubeconfig of an admin (default: the `kumo up` one).
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
    },
}

/// `kumo token …`: logic in `kumo_controller_manager::bootstrap`.
#[allow(clippy::print_stdout)]
fn token_command(command: TokenCommand) -> anyhow::Result<()> {
    use kumo_controller_manager::bootstrap as b;
    let kc = |k: Option<PathBuf>| k.unwrap_or_else(|| default_data_dir(None).join("kubeconfig"));
    match command {
        TokenCommand::Create {
            token,
            kubeconfig,
            ttl,
            description,
            groups,
            usages,
            print_join_command,
        } => {
            let ttl = kumo_controller_manager::util::parse_duration(&ttl)
                .ok_or_else(|| anyhow::anyhow!("--ttl: invalid duration {ttl:?}"))?;
            let opts = b::TokenOptions {
                ttl: Some(ttl),
                description,
                groups: groups.into_iter().filter(|g| !g.is_empty()).collect(),
                usages,
                token,
            };
            let created = runtime()?.block_on(b::create_token(&kc(kubeconfig), &opts))?;
            if print_join_command {
                println!("{}", created.join_command());
            } else {
                println!("{}", created.token);
            }
        }
        TokenCommand::List { kubeconfig } => {
            let tokens = runtime()?.block_on(b::list_tokens(&kc(kubeconfig)))?;
            println!(
                "{:<24} {:<21} {:<24} {:<40} DESCRIPTION",
                "TOKEN", "EXPIRES", "USAGES", "EXTRA GROUPS"
            );
            for t in tokens {
                let expires = if t.expires.is_empty() {
                    "<forever>".to_string()
                } else {
                    t.expires
                };
                println!(
                    "{:<24} {:<21} {:<24} {:<40} {}",
                    t.token,
                    expires,
                    t.usages.join(","),
                    t.groups.join(","),
                    t.description
                );
            }
        }
        TokenCommand::Delete { token, kubeconfig } => {
            runtime()?.block_on(b::delete_token(&kc(kubeconfig), &token))?;
            println!(
                "bootstrap token {:?} deleted",
                token.split('.').next().unwrap_or(&token)
            );
        }
    }
    Ok(())
}

#[allow(clippy::print_stderr)]
fn main() -> ExitCode {
    // The process runtime's helpers (`kumo runtime-init …`) run before clap, logging and tokio:
    // they join namespaces, which needs a single-threaded process.
    if let Some(code) = kumo_runtime::process::run_if_requested() {
        return code;
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "kumo failed");
            eprintln!("kumo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[allow(clippy::print_stdout)]
fn image_command(command: ImageCommand) -> anyhow::Result<()> {
    use kumo_runtime::image::ImageStore;
    kumo_config::init_logging("warn", kumo_config::LogFormat::Text);
    match command {
        ImageCommand::Import {
            file,
            rootfs,
            cmd,
            store,
        } => {
            let store = ImageStore::open(&store.dir())?;
            let images = match rootfs {
                Some(name) => vec![store.import_rootfs(&file, &name, &cmd)?],
                None if !cmd.is_empty() => {
                    anyhow::bail!("a command after `--` goes with `--rootfs NAME`")
                }
                None => store.import(&file)?,
            };
            for i in images {
                println!("imported {} {}", i.id, i.names.join(" "));
            }
        }
        ImageCommand::Ls { store } => {
            println!("{:<50} {:<20} {:>10}", "NAME", "ID", "SIZE");
            for i in ImageStore::open(&store.dir())?.list()? {
                let short = i.id.trim_start_matches("sha256:").get(..12).unwrap_or("");
                let names = if i.names.is_empty() {
                    vec!["<none>".to_string()]
                } else {
                    i.names
                };
                for n in names {
                    println!("{n:<50} {short:<20} {:>10}", i.size_bytes);
                }
            }
        }
        ImageCommand::Tag {
            source,
            target,
            store,
        } => match ImageStore::open(&store.dir())?.tag(&source, &target)? {
            Some(i) => println!("tagged {} {}", i.id, i.names.join(" ")),
            None => anyhow::bail!("no image {source}"),
        },
        ImageCommand::Rm { name, store } => {
            if !ImageStore::open(&store.dir())?.remove(&name)? {
                anyhow::bail!("no image {name}");
            }
            println!("removed {name}");
        }
    }
    Ok(())
}

#[allow(clippy::print_stdout)]
fn print_status(dir: &std::path::Path, st: &kumo_up::Status) {
    match st.supervisor {
        Some(pid) => println!(
            "kumo is running (supervisor pid {pid}), data in {}",
            dir.display()
        ),
        None => println!("kumo is not running (data in {})", dir.display()),
    }
    for (name, pid, alive) in &st.components {
        println!(
            "  {name:<28} pid {pid:<8} {}",
            if *alive { "running" } else { "stopped" }
        );
    }
}

#[allow(clippy::print_stdout)]
fn print_deleted(dir: &std::path::Path) {
    println!("kumo stopped; deleted {}", dir.display());
}

/// Logging from a component's resolved `log-level` and `log-format`.
fn init_logs(level: &str, format: &str) -> anyhow::Result<()> {
    let format = format
        .parse()
        .map_err(|e: String| anyhow::anyhow!("log-format: {e}"))?;
    kumo_config::init_logging(level, format);
    Ok(())
}

/// Runs a component until it ends or SIGTERM/Ctrl-C arrives.
fn serve<E: Into<anyhow::Error>>(
    component: impl std::future::Future<Output = Result<(), E>>,
) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        tokio::select! {
            r = component => r.map_err(Into::into),
            _ = shutdown_signal() => Ok(()),
        }
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Prints progress until every apiserver answers, every node is Ready and every member is
/// joined, then tells the user how to use the cluster or federation.
#[allow(clippy::print_stdout)]
async fn announce(cfg: kumo_up::UpConfig, detached: bool) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let secs = || started.elapsed().as_secs_f64();
    let timeout = std::time::Duration::from_secs(120 + 30 * u64::from(cfg.members));
    let ok = kumo_up::wait_ready(&cfg, timeout, |p| match p {
        kumo_up::Progress::ApiServer { cluster, url } => {
            println!("  {cluster}: apiserver ready at {url} ({:.1}s)", secs())
        }
        kumo_up::Progress::Nodes {
            cluster,
            ready,
            total,
        } => println!("  {cluster}: nodes Ready {ready}/{total} ({:.1}s)", secs()),
        kumo_up::Progress::Members { ready, total } => {
            println!(
                "  federation: members joined and Ready {ready}/{total} ({:.1}s)",
                secs()
            )
        }
    })
    .await;
    if !ok {
        anyhow::bail!(
            "kumo did not come up within {} s; see the logs in {}",
            timeout.as_secs(),
            cfg.data_dir.join("logs").display()
        );
    }
    let kubeconfig = cfg.kubeconfig();
    if cfg.federated() {
        let members: Vec<String> = cfg
            .clusters()
            .into_iter()
            .filter(|c| c.role == kumo_up::Role::Member)
            .map(|c| c.name)
            .collect();
        println!(
            "kumo is up in {:.1}s: a federation host and {} member clusters ({}), data and logs in {}",
            secs(),
            members.len(),
            members.join(", "),
            cfg.data_dir.display()
        );
        println!("  export KUBECONFIG={}", kubeconfig.display());
        println!("  kubectl get clusters                  # context \"federation\": the host");
        println!(
            "  kubectl --context {} get nodes       # one context per member",
            members.first().map(String::as_str).unwrap_or("member1")
        );
        println!("  kubectl apply --server-side -f configs/examples/federated-deployment.yaml");
    } else {
        let names: Vec<String> = kumo_up::plan(&cfg).into_iter().map(|c| c.name).collect();
        println!(
            "kumo is up in {:.1}s ({}), data and logs in {}",
            secs(),
            names.join(", "),
            cfg.data_dir.display()
        );
        println!("  export KUBECONFIG={}", kubeconfig.display());
        println!("  kubectl get nodes");
    }
    if detached {
        println!("stop with `kumo down`, remove everything with `kumo delete`.");
    } else {
        println!("stop with Ctrl-C.");
    }
    Ok(())
}

/// The data directory, absolute (it is printed in `export KUBECONFIG=…` and handed to
/// components that may run elsewhere).
fn default_data_dir(d: Option<PathBuf>) -> PathBuf {
    let d = d.unwrap_or_else(|| {
        PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| ".".into())).join(".kumo")
    });
    std::path::absolute(&d).unwrap_or(d)
}

/// `kumo up --detach`: runs `kumo up` (without `--detach`) in its own process group with its
/// output in `DIR/logs/up.log`, and returns once the apiserver answers.
#[allow(clippy::print_stdout)]
fn detach(data_dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let status = kumo_up::status(data_dir);
    if let Some(pid) = status.supervisor {
        anyhow::bail!(
            "kumo is already running in {} (pid {pid}); `kumo down` first",
            data_dir.display()
        );
    }
    std::fs::create_dir_all(data_dir.join("logs"))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data_dir.join("logs").join("up.log"))?;
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--detach")
        .collect();
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.args(&args);
    if !args
        .iter()
        .any(|a| a == "--data-dir" || a.starts_with("--data-dir="))
    {
        cmd.arg("--data-dir").arg(data_dir);
    }
    let child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()?;
    println!(
        "kumo up running in the background (pid {}), log in {}",
        child.id(),
        data_dir.join("logs/up.log").display()
    );
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Status(f) => {
            let dir = default_data_dir(f.data_dir);
            let st = kumo_up::status(&dir);
            print_status(&dir, &st);
            Ok(())
        }
        Command::Down(f) => {
            let dir = default_data_dir(f.data_dir);
            runtime()?.block_on(kumo_up::down(&dir, std::time::Duration::from_secs(20)));
            print_status(&dir, &kumo_up::status(&dir));
            Ok(())
        }
        Command::Delete(f) => {
            let dir = default_data_dir(f.data_dir);
            runtime()?.block_on(kumo_up::down(&dir, std::time::Duration::from_secs(20)));
            if dir.exists() {
                std::fs::remove_dir_all(&dir)?;
            }
            print_deleted(&dir);
            Ok(())
        }
        Command::Up(flags) => {
            kumo_config::init_logging("info", kumo_config::LogFormat::Text);
            let data_dir = default_data_dir(flags.data_dir.clone());
            let cfg = kumo_up::UpConfig {
                exe: std::env::current_exe()?,
                data_dir: data_dir.clone(),
                store_port: flags.store_port,
                store_metrics_port: flags.store_metrics_port,
                apiserver_port: flags.apiserver_port,
                nodes: flags.nodes,
                runtime: flags.runtime.clone(),
                container_runtime_endpoint: flags.container_runtime_endpoint.clone(),
                kubelet_port: flags.kubelet_port,
                members: flags.members,
            };
            cfg.validate()?;
            if flags.detach {
                detach(&data_dir)?;
                return runtime()?.block_on(announce(cfg, true));
            }
            runtime()?.block_on(async move {
                tokio::spawn(announce(cfg.clone(), false));
                kumo_up::run(cfg, shutdown_signal()).await
            })?;
            Ok(())
        }
        Command::Store(flags) => {
            let cfg: kumo_store::StoreConfig = kumo_config::load(
                &kumo_store::StoreConfig::default(),
                flags.config.as_deref(),
                &*flags,
            )?;
            let cfg = cfg
                .finish()
                .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
            init_logs(&cfg.log_level, &cfg.log_format)?;
            runtime()?.block_on(kumo_store::run(cfg, shutdown_signal()))?;
            Ok(())
        }
        Command::Apiserver(flags) => {
            let cfg: kumo_apiserver::ApiServerConfig = kumo_config::load(
                &kumo_apiserver::ApiServerConfig::default(),
                flags.config.as_deref(),
                &*flags,
            )?;
            init_logs(&cfg.log_level, &cfg.log_format)?;
            serve(kumo_apiserver::run(cfg))
        }
        Command::Scheduler(flags) => {
            let cfg: kumo_scheduler::SchedulerConfig = kumo_config::load(
                &kumo_scheduler::SchedulerConfig::default(),
                flags.config.as_deref(),
                &*flags,
            )?;
            init_logs(&cfg.log_level, &cfg.log_format)?;
            serve(kumo_scheduler::run(cfg))
        }
        Command::Kubelet(flags) => {
            let cfg: kumo_kubelet::KubeletConfig = kumo_config::load(
                &kumo_kubelet::KubeletConfig::default(),
                flags.config.as_deref(),
                &*flags,
            )?;
            init_logs(&cfg.log_level, &cfg.log_format)?;
            serve(kumo_kubelet::run(cfg))
        }
        Command::ControllerManager(flags) => {
            let cfg: kumo_controller_manager::ControllerManagerConfig = kumo_config::load(
                &kumo_controller_manager::ControllerManagerConfig::default(),
                flags.config.as_deref(),
                &*flags,
            )?;
            init_logs(&cfg.log_level, &cfg.log_format)?;
            serve(kumo_controller_manager::run(cfg))
        }
        Command::Federation(flags) => {
            kumo_config::init_logging(&flags.log_level, kumo_config::LogFormat::Text);
            let cfg = flags.config();
            serve(kumo_federation::run(cfg))
        }
        Command::Join(flags) => {
            kumo_config::init_logging("warn", kumo_config::LogFormat::Text);
            let line = runtime()?.block_on(kumo_federation::cli::join(&flags))?;
            #[allow(clippy::print_stdout)]
            {
                println!("{line}");
            }
            Ok(())
        }
        Command::Unjoin(flags) => {
            kumo_config::init_logging("warn", kumo_config::LogFormat::Text);
            let line = runtime()?.block_on(kumo_federation::cli::unjoin(&flags))?;
            #[allow(clippy::print_stdout)]
            {
                println!("{line}");
            }
            Ok(())
        }
        Command::Image { command } => image_command(command),
        Command::Token { command } => token_command(command),
        Command::Snapshot {
            command: SnapshotCommand::Restore { file, data_dir },
        } => {
            kumo_config::init_logging("info", kumo_config::LogFormat::Text);
            kumo_store::restore_snapshot(&file, &data_dir)?;
            tracing::info!(file = %file.display(), data_dir = %data_dir.display(), "snapshot restored");
            Ok(())
        }
    }
}
