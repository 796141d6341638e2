//! `kumo up`: a local federation, or one local cluster, from one command.
//!
//! Each component runs as a child process of the same `kumo` binary and is supervised like
//! supervisord supervises the kubelet: a component that exits is restarted with exponential
//! backoff (reset after it stayed up for a while), and stopping `kumo up` stops every child.
//!
//! With `--members N` (N ≥ 1, the default 3) the plan is a federation: a host control plane
//! (store, apiserver, a controller-manager with the host's controllers, `kumo federation`) and
//! N member clusters (`member1` …), each a whole cluster of its own (store, apiserver,
//! controller-manager, scheduler and kubelets), joined to the host as they come up with
//! provider `local` and regions `local-a`, `local-b` …; `DIR/kubeconfig` then holds the
//! contexts `federation` (current) and one per member. With `--members 0` the plan is one
//! standalone cluster. Every kubelet gets node credentials minted from its cluster's CA
//! before anything starts, as kubeadm does for a control-plane node's kubelet.

mod federation;
mod ready;
mod supervise;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::Command;

pub use federation::merged_kubeconfig;
pub use ready::{Progress, wait_ready};

/// What `kumo up` starts.
#[derive(Debug, Clone)]
pub struct UpConfig {
    /// The `kumo` binary to run the components with.
    pub exe: PathBuf,
    /// Where every component keeps its data and logs.
    pub data_dir: PathBuf,
    /// Client port of the (host's) store; member k's is this plus 100·k.
    pub store_port: u16,
    /// Metrics port of the (host's) store; member k's is this plus 100·k.
    pub store_metrics_port: u16,
    /// HTTPS port of the (host's) apiserver; member k's is this plus k.
    pub apiserver_port: u16,
    /// How many local kubelets (nodes) each cluster with nodes runs.
    pub nodes: u32,
    /// Their container runtime: `process`, `cri` or `sim`.
    pub runtime: String,
    /// The CRI endpoint for `cri` (`unix:///run/containerd/containerd.sock`).
    pub container_runtime_endpoint: Option<String>,
    /// The first kubelet's API port; the others count up from it.
    pub kubelet_port: u16,
    /// Member clusters of the local federation; 0 runs one standalone cluster.
    pub members: u32,
}

/// What one control plane of the plan is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `kumo up --members 0`: one cluster with nodes.
    Standalone,
    /// The federation host: no nodes, runs `kumo federation`.
    Host,
    /// A member cluster, joined to the host.
    Member,
}

/// One control plane of the plan: where it lives and which ports it listens on.
#[derive(Debug, Clone)]
pub struct ClusterPlan {
    /// `kumo` (standalone), `federation` (host) or `member<k>`.
    pub name: String,
    pub role: Role,
    /// Its store, PKI, admin kubeconfig and nodes live here.
    pub dir: PathBuf,
    pub store_port: u16,
    pub store_metrics_port: u16,
    pub apiserver_port: u16,
    /// Its nodes' first kubelet port.
    pub kubelet_port: u16,
    pub nodes: u32,
    /// `local-a` … for members.
    pub region: Option<String>,
}

impl ClusterPlan {
    /// Prefix of its component names (`member1-`; empty for the host and a standalone cluster).
    pub fn prefix(&self) -> String {
        match self.role {
            Role::Member => format!("{}-", self.name),
            _ => String::new(),
        }
    }

    /// The admin kubeconfig its apiserver writes (a standalone cluster's is the user's
    /// `DIR/kubeconfig` itself).
    pub fn admin_kubeconfig(&self) -> PathBuf {
        match self.role {
            Role::Standalone => self.dir.join("kubeconfig"),
            _ => self.dir.join("admin.kubeconfig"),
        }
    }

    /// Its PKI (the apiserver's `--cert-dir`).
    pub fn pki_dir(&self) -> PathBuf {
        self.dir.join("pki")
    }

    pub fn server_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.apiserver_port)
    }

    /// Node `i` (1-based): its name and its kubelet's root directory.
    pub fn node(&self, i: u32) -> (String, PathBuf) {
        let name = match self.role {
            Role::Member => format!("{}-node-{i}", self.name),
            _ => format!("kumo-node-{i}"),
        };
        let dir = self.dir.join("nodes").join(&name);
        (name, dir)
    }
}

impl UpConfig {
    /// The kubeconfig the user points kubectl at.
    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.join("kubeconfig")
    }

    /// Whether this is a federation (host + members) rather than one cluster.
    pub fn federated(&self) -> bool {
        self.members > 0
    }

    /// The image store every local kubelet of the `process` runtime shares
    /// (`kumo image import FILE --data-dir DIR` fills it).
    pub fn images_dir(&self) -> PathBuf {
        images_dir(&self.data_dir)
    }

    /// The control planes: the standalone cluster, or the host followed by the members.
    pub fn clusters(&self) -> Vec<ClusterPlan> {
        if !self.federated() {
            return vec![ClusterPlan {
                name: "kumo".into(),
                role: Role::Standalone,
                dir: self.data_dir.clone(),
                store_port: self.store_port,
                store_metrics_port: self.store_metrics_port,
                apiserver_port: self.apiserver_port,
                kubelet_port: self.kubelet_port,
                nodes: self.nodes,
                region: None,
            }];
        }
        let mut out = vec![ClusterPlan {
            name: "federation".into(),
            role: Role::Host,
            dir: self.data_dir.join("federation"),
            store_port: self.store_port,
            store_metrics_port: self.store_metrics_port,
            apiserver_port: self.apiserver_port,
            kubelet_port: self.kubelet_port,
            nodes: 0,
            region: None,
        }];
        // Kubelet ports: a block of at least 10 per member.
        let stride = self.nodes.max(10);
        for k in 1..=self.members {
            let name = format!("member{k}");
            out.push(ClusterPlan {
                dir: self.data_dir.join("members").join(&name),
                name,
                role: Role::Member,
                store_port: port(self.store_port, 100 * k),
                store_metrics_port: port(self.store_metrics_port, 100 * k),
                apiserver_port: port(self.apiserver_port, k),
                kubelet_port: port(self.kubelet_port, (k - 1) * stride),
                nodes: self.nodes,
                region: Some(region(k)),
            });
        }
        out
    }

    /// The port numbers the plan uses must all fit and differ.
    pub fn validate(&self) -> Result<(), UpError> {
        let mut seen = std::collections::BTreeMap::new();
        for c in self.clusters() {
            let mut ports = vec![
                (c.store_port, "store"),
                (c.store_metrics_port, "store metrics"),
                (c.apiserver_port, "apiserver"),
            ];
            for i in 0..c.nodes {
                ports.push((kubelet_port(&c, i + 1), "kubelet"));
            }
            if c.role == Role::Host {
                ports.push((federation_metrics_port(&c), "federation metrics"));
            }
            for (p, what) in ports {
                if p == u16::MAX {
                    return Err(UpError::Plan(format!(
                        "{}: the {what} port does not fit below 65535; choose lower base ports",
                        c.name
                    )));
                }
                if let Some(prev) = seen.insert(p, format!("{} {what}", c.name)) {
                    return Err(UpError::Plan(format!(
                        "port {p} would serve both the {prev} and the {} {what}; choose other base ports",
                        c.name
                    )));
                }
            }
        }
        Ok(())
    }
}

/// `base + offset`, or 65535 (refused by [`UpConfig::validate`]) when it does not fit.
fn port(base: u16, offset: u32) -> u16 {
    u16::try_from(u32::from(base) + offset)
        .ok()
        .filter(|p| *p < u16::MAX)
        .unwrap_or(u16::MAX)
}

/// The host's `kumo federation` serves `/metrics` one above the host store's metrics port.
pub fn federation_metrics_port(c: &ClusterPlan) -> u16 {
    port(c.store_metrics_port, 1)
}

fn kubelet_port(c: &ClusterPlan, i: u32) -> u16 {
    port(c.kubelet_port, i - 1)
}

/// Member k's region: `local-a`, `local-b` … (`local-27` past the alphabet).
fn region(k: u32) -> String {
    match u8::try_from(k - 1).ok().filter(|i| *i < 26) {
        Some(i) => format!("local-{}", char::from(b'a' + i)),
        None => format!("local-{k}"),
    }
}

/// The shared image store of a `kumo up` data directory.
pub fn images_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("images")
}

/// One supervised component.
#[derive(Debug, Clone)]
pub struct Component {
    pub name: String,
    pub args: Vec<String>,
    pub log: PathBuf,
    /// Where the supervisor records its pid (`kumo status`, `kumo down`).
    pub pid_file: PathBuf,
    /// A file that must exist before the component starts (the kubeconfig the apiserver
    /// writes), so API clients do not crash-loop while the apiserver comes up.
    pub needs: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum UpError {
    #[error("cannot prepare {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot prepare the cluster credentials: {0}")]
    Pki(#[from] kumo_auth::Error),
    #[error("invalid plan: {0}")]
    Plan(String),
}

/// The controllers of the federation host's controller-manager: namespace deletion, garbage
/// collection and ServiceAccounts (Karmada's host runs the same few); no workload controllers,
/// since the host has no nodes.
const HOST_CONTROLLERS: &str = "namespace-controller,garbage-collector-controller,\
serviceaccount-controller,root-ca-certificate-publisher-controller,\
clusterrole-aggregation-controller,bootstrap-signer-controller,token-cleaner-controller";

/// The components of every control plane, in start order.
pub fn plan(cfg: &UpConfig) -> Vec<Component> {
    cfg.clusters()
        .iter()
        .flat_map(|c| plan_cluster(cfg, c))
        .collect()
}

fn plan_cluster(cfg: &UpConfig, c: &ClusterPlan) -> Vec<Component> {
    let component = |name: &str, args: Vec<String>, needs: Option<PathBuf>| {
        let name = format!("{}{name}", c.prefix());
        Component {
            log: cfg.data_dir.join("logs").join(format!("{name}.log")),
            pid_file: pid_file(&cfg.data_dir, &name),
            name,
            args,
            needs,
        }
    };
    let kubeconfig = c.admin_kubeconfig();
    let mut comps = vec![
        component(
            "store",
            vec![
                "store".into(),
                "--name".into(),
                format!(
                    "kumo-{}",
                    if c.role == Role::Standalone {
                        "local"
                    } else {
                        &c.name
                    }
                ),
                "--data-dir".into(),
                c.dir.join("store").display().to_string(),
                "--listen-client-urls".into(),
                format!("http://127.0.0.1:{}", c.store_port),
                "--listen-metrics-urls".into(),
                format!("http://127.0.0.1:{}", c.store_metrics_port),
            ],
            None,
        ),
        component(
            "apiserver",
            vec![
                "apiserver".into(),
                "--etcd-servers".into(),
                format!("http://127.0.0.1:{}", c.store_port),
                "--bind-address".into(),
                "127.0.0.1".into(),
                "--secure-port".into(),
                c.apiserver_port.to_string(),
                "--cert-dir".into(),
                c.pki_dir().display().to_string(),
                "--admin-kubeconfig".into(),
                kubeconfig.display().to_string(),
                // Local kubelets serve certificates from the cluster CA: verify them.
                "--kubelet-certificate-authority".into(),
                c.pki_dir().join("ca.crt").display().to_string(),
            ],
            None,
        ),
    ];
    let mut cm = vec![
        "controller-manager".to_string(),
        "--kubeconfig".into(),
        kubeconfig.display().to_string(),
        "--port".into(),
        "0".into(),
        // csrsigning: kubelets joining with a bootstrap token get node certificates.
        "--cluster-signing-cert-file".into(),
        c.pki_dir().join("ca.crt").display().to_string(),
        "--cluster-signing-key-file".into(),
        c.pki_dir().join("ca.key").display().to_string(),
    ];
    if c.role == Role::Host {
        cm.extend(["--controllers".to_string(), HOST_CONTROLLERS.into()]);
    }
    comps.push(component(
        "controller-manager",
        cm,
        Some(kubeconfig.clone()),
    ));
    if c.role == Role::Host {
        comps.push(component(
            "federation",
            vec![
                "federation".into(),
                "--kubeconfig".into(),
                kubeconfig.display().to_string(),
                // Its /metrics next to the host store's, so local federations don't collide.
                "--metrics-bind-address".into(),
                format!("127.0.0.1:{}", federation_metrics_port(c)),
            ],
            Some(kubeconfig.clone()),
        ));
        return comps;
    }
    comps.push(component(
        "scheduler",
        vec![
            "scheduler".into(),
            "--kubeconfig".into(),
            kubeconfig.display().to_string(),
            "--metrics-bind-address".into(),
            String::new(),
        ],
        Some(kubeconfig.clone()),
    ));
    for i in 1..=c.nodes {
        let (name, dir) = c.node(i);
        let mut args = vec![
            "kubelet".to_string(),
            "--kubeconfig".into(),
            dir.join("kubelet.conf").display().to_string(),
            "--hostname-override".into(),
            name.clone(),
            "--root-dir".into(),
            dir.display().to_string(),
            "--port".into(),
            kubelet_port(c, i).to_string(),
            "--healthz-port".into(),
            "0".into(),
            "--node-ip".into(),
            "127.0.0.1".into(),
            "--container-runtime".into(),
            cfg.runtime.clone(),
            "--image-store".into(),
            cfg.images_dir().display().to_string(),
        ];
        if let Some(ep) = &cfg.container_runtime_endpoint {
            args.push("--container-runtime-endpoint".into());
            args.push(ep.clone());
        }
        comps.push(component(
            &format!("kubelet-{i}"),
            args,
            Some(kubeconfig.clone()),
        ));
    }
    comps
}

/// Creates (or loads) each cluster's CA in its apiserver's cert dir and writes each node's
/// kubeconfig with a `system:node:<name>` client certificate (O=`system:nodes`), so the
/// kubelets run with node credentials under the Node authorizer and NodeRestriction, and each
/// kubelet's serving certificate (`<root-dir>/pki/kubelet.crt`) signed by the cluster CA, so
/// the apiserver verifies the kubelets it proxies `kubectl logs`/`exec` to.
pub fn prepare_credentials(cfg: &UpConfig) -> Result<(), UpError> {
    for c in cfg.clusters() {
        let pki = kumo_auth::ClusterPki::load_or_create(&c.pki_dir(), &[])?;
        for i in 1..=c.nodes {
            let (name, dir) = c.node(i);
            node_credentials(&pki, &c.server_url(), &name, &dir)?;
        }
    }
    Ok(())
}

fn node_credentials(
    pki: &kumo_auth::ClusterPki,
    server_url: &str,
    name: &str,
    dir: &Path,
) -> Result<(), UpError> {
    prepare(dir)?;
    let user = format!("system:node:{name}");
    let cert = pki.sign_client_cert(
        &user,
        &["system:nodes".to_string()],
        Duration::from_secs(365 * 24 * 3600),
    )?;
    kumo_auth::kubeconfig::write_kubeconfig(
        &dir.join("kubelet.conf"),
        server_url,
        pki.ca_cert_pem(),
        "kumo",
        &user,
        &kumo_auth::Credentials::ClientCert(cert),
    )?;
    let serving = pki.sign_serving_cert(
        name,
        &[name.to_string(), "localhost".into(), "127.0.0.1".into()],
        Duration::from_secs(365 * 24 * 3600),
    )?;
    let pki_dir = dir.join("pki");
    prepare(&pki_dir)?;
    for (file, body) in [
        ("kubelet.crt", serving.cert_pem.as_str()),
        ("kubelet.key", serving.key_pem.as_str()),
    ] {
        let path = pki_dir.join(file);
        write_private(&path, body).map_err(|source| UpError::Io { path, source })?;
    }
    Ok(())
}

fn prepare(dir: &Path) -> Result<(), UpError> {
    std::fs::create_dir_all(dir).map_err(|source| UpError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

/// Where the supervisor and the components record their pids.
pub fn run_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("run")
}

fn pid_file(data_dir: &Path, name: &str) -> PathBuf {
    run_dir(data_dir).join(format!("{name}.pid"))
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether a process is alive (and not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // state is the field after the parenthesised command name
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X"))
        }
        Err(_) => false,
    }
}

/// Writes a file only its owner can read (keys).
fn write_private(path: &Path, body: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(body.as_bytes())
}

/// The state of a local cluster, from its pid files.
#[derive(Debug, Clone)]
pub struct Status {
    /// The supervisor (`kumo up`) pid, when running.
    pub supervisor: Option<u32>,
    /// Each recorded component with its pid and whether it is alive.
    pub components: Vec<(String, u32, bool)>,
}

/// Reads the pid files under `data_dir`.
pub fn status(data_dir: &Path) -> Status {
    let supervisor = read_pid(&pid_file(data_dir, "up")).filter(|p| alive(*p));
    let mut components = Vec::new();
    if let Ok(entries) = std::fs::read_dir(run_dir(data_dir)) {
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".pid")
                    .map(str::to_string)
            })
            .filter(|n| n != "up")
            .collect();
        names.sort();
        for n in names {
            if let Some(pid) = read_pid(&pid_file(data_dir, &n)) {
                components.push((n, pid, alive(pid)));
            }
        }
    }
    Status {
        supervisor,
        components,
    }
}

async fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
}

/// Stops the pods of every local node: with the `process` runtime, pods are processes of
/// their own that outlive the kubelet (so a kubelet restart keeps them running); once the
/// kubelets are gone, `kumo down` stops them (their records stay, so the next `kumo up`'s
/// kubelets see them exited and restart them). Returns how many pod sandboxes it stopped.
pub async fn stop_pods(data_dir: &Path) -> usize {
    // A standalone cluster's nodes, and each member's.
    let mut node_dirs = vec![data_dir.join("nodes")];
    if let Ok(members) = std::fs::read_dir(data_dir.join("members")) {
        node_dirs.extend(members.flatten().map(|m| m.path().join("nodes")));
    }
    let mut stopped = 0;
    for nodes in node_dirs {
        let Ok(nodes) = std::fs::read_dir(nodes) else {
            continue;
        };
        for node in nodes.flatten() {
            stopped += stop_node_pods(data_dir, &node.path()).await;
        }
    }
    stopped
}

async fn stop_node_pods(data_dir: &Path, node: &Path) -> usize {
    let root = node.join("runtime");
    if !root.join("sandboxes").is_dir() {
        return 0;
    }
    let images = match kumo_runtime::image::ImageStore::open(&images_dir(data_dir)) {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(error = %e, "cannot open the image store");
            return 0;
        }
    };
    match kumo_runtime::process::ProcessRuntime::new(&root, images) {
        Ok(rt) => match rt.stop_all().await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(node = %node.display(), error = %e, "cannot stop pods");
                0
            }
        },
        Err(e) => {
            tracing::warn!(node = %node.display(), error = %e, "cannot open the runtime");
            0
        }
    }
}

/// Stops a running `kumo up` (SIGTERM, which stops every component gracefully) and waits
/// until no process of it is left, killing stragglers after `grace`, then stops the pods'
/// processes. Data stays.
pub async fn down(data_dir: &Path, grace: Duration) -> Status {
    let before = status(data_dir);
    if let Some(pid) = before.supervisor {
        signal(pid, "-TERM").await;
    } else {
        for (_, pid, alive) in &before.components {
            if *alive {
                signal(*pid, "-TERM").await;
            }
        }
    }
    let deadline = Instant::now() + grace;
    loop {
        let now = status(data_dir);
        let left: Vec<u32> = before
            .supervisor
            .iter()
            .copied()
            .chain(before.components.iter().map(|(_, p, _)| *p))
            .filter(|p| alive(*p))
            .collect();
        if left.is_empty() {
            let _ = std::fs::remove_file(pid_file(data_dir, "up"));
            for (n, _, _) in &now.components {
                let _ = std::fs::remove_file(pid_file(data_dir, n));
            }
            stop_pods(data_dir).await;
            return status(data_dir);
        }
        if Instant::now() > deadline {
            for p in left {
                signal(p, "-KILL").await;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts every component (and, for a federation, joins each member to the host and writes
/// the kubeconfig with every context) and supervises them until `shutdown` resolves.
pub async fn run(
    cfg: UpConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<Vec<Component>, UpError> {
    cfg.validate()?;
    prepare(&cfg.data_dir.join("logs"))?;
    prepare(&run_dir(&cfg.data_dir))?;
    let up_pid = pid_file(&cfg.data_dir, "up");
    std::fs::write(&up_pid, std::process::id().to_string()).map_err(|source| UpError::Io {
        path: up_pid.clone(),
        source,
    })?;
    // Each apiserver writes a fresh admin kubeconfig once it serves; API clients wait for it,
    // and so does the federation's merged kubeconfig.
    let _ = std::fs::remove_file(cfg.kubeconfig());
    for c in cfg.clusters() {
        let _ = std::fs::remove_file(c.admin_kubeconfig());
    }
    prepare_credentials(&cfg)?;
    prepare(&cfg.images_dir())?;
    let components = plan(&cfg);
    let (tx, rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for c in &components {
        tasks.push(tokio::spawn(supervise::supervise(
            cfg.exe.clone(),
            c.clone(),
            rx.clone(),
        )));
    }
    if cfg.federated() {
        tasks.push(tokio::spawn(federation::assemble(cfg.clone(), rx.clone())));
    }
    shutdown.await;
    let _ = tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    for c in &components {
        let _ = std::fs::remove_file(&c.pid_file);
    }
    let pods = stop_pods(&cfg.data_dir).await;
    tracing::info!(pods, "stopped the pods of the local nodes");
    let _ = std::fs::remove_file(&up_pid);
    Ok(components)
}
