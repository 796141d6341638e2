//! `kumo up`: a local control plane from one command.
//!
//! Each component runs as a child process of the same `kumo` binary and is supervised like
//! supervisord supervises the kubelet: a component that exits is restarted with exponential
//! backoff (reset after it stayed up for a while), and stopping `kumo up` stops every child.
//! The plan holds the store, the apiserver, the controller-manager, the scheduler and N
//! kubelets (`kumo-node-1` …), each with its own node credentials minted from the cluster CA
//! before anything starts, as kubeadm does for a control-plane node's kubelet.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

/// What `kumo up` starts.
#[derive(Debug, Clone)]
pub struct UpConfig {
    /// The `kumo` binary to run the components with.
    pub exe: PathBuf,
    /// Where every component keeps its data and logs.
    pub data_dir: PathBuf,
    /// Client port of the store.
    pub store_port: u16,
    /// Metrics port of the store.
    pub store_metrics_port: u16,
    /// HTTPS port of the apiserver.
    pub apiserver_port: u16,
    /// How many local kubelets (nodes) to run.
    pub nodes: u32,
    /// Their container runtime: `process`, `cri` or `sim`.
    pub runtime: String,
    /// The CRI endpoint for `cri` (`unix:///run/containerd/containerd.sock`).
    pub container_runtime_endpoint: Option<String>,
    /// The first kubelet's API port; kubelet i listens on `kubelet_port + i - 1`.
    pub kubelet_port: u16,
}

impl UpConfig {
    /// The admin kubeconfig the apiserver writes.
    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.join("kubeconfig")
    }

    /// The cluster PKI (the apiserver's `--cert-dir`).
    pub fn pki_dir(&self) -> PathBuf {
        self.data_dir.join("pki")
    }

    /// The image store every local kubelet of the `process` runtime shares
    /// (`kumo image import FILE --data-dir DIR` fills it).
    pub fn images_dir(&self) -> PathBuf {
        images_dir(&self.data_dir)
    }

    /// Node `i` (1-based): its name and its kubelet's root directory.
    pub fn node(&self, i: u32) -> (String, PathBuf) {
        let name = format!("kumo-node-{i}");
        let dir = self.data_dir.join("nodes").join(&name);
        (name, dir)
    }

    pub fn server_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.apiserver_port)
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
}

/// The components of a local cluster, in start order.
pub fn plan(cfg: &UpConfig) -> Vec<Component> {
    let store_dir = cfg.data_dir.join("store");
    let mut comps = vec![
        Component {
            name: "store".into(),
            args: vec![
                "store".into(),
                "--name".into(),
                "kumo-local".into(),
                "--data-dir".into(),
                store_dir.display().to_string(),
                "--listen-client-urls".into(),
                format!("http://127.0.0.1:{}", cfg.store_port),
                "--listen-metrics-urls".into(),
                format!("http://127.0.0.1:{}", cfg.store_metrics_port),
            ],
            log: cfg.data_dir.join("logs").join("store.log"),
            needs: None,
        },
        Component {
            name: "apiserver".into(),
            args: vec![
                "apiserver".into(),
                "--etcd-servers".into(),
                format!("http://127.0.0.1:{}", cfg.store_port),
                "--bind-address".into(),
                "127.0.0.1".into(),
                "--secure-port".into(),
                cfg.apiserver_port.to_string(),
                "--cert-dir".into(),
                cfg.data_dir.join("pki").display().to_string(),
                "--admin-kubeconfig".into(),
                cfg.kubeconfig().display().to_string(),
                // Local kubelets serve certificates from the cluster CA: verify them.
                "--kubelet-certificate-authority".into(),
                cfg.pki_dir().join("ca.crt").display().to_string(),
            ],
            log: cfg.data_dir.join("logs").join("apiserver.log"),
            needs: None,
        },
        Component {
            name: "controller-manager".into(),
            args: vec![
                "controller-manager".into(),
                "--kubeconfig".into(),
                cfg.kubeconfig().display().to_string(),
                "--port".into(),
                "0".into(),
                // csrsigning: kubelets joining with a bootstrap token get node certificates.
                "--cluster-signing-cert-file".into(),
                cfg.pki_dir().join("ca.crt").display().to_string(),
                "--cluster-signing-key-file".into(),
                cfg.pki_dir().join("ca.key").display().to_string(),
            ],
            log: cfg.data_dir.join("logs").join("controller-manager.log"),
            needs: Some(cfg.kubeconfig()),
        },
        Component {
            name: "scheduler".into(),
            args: vec![
                "scheduler".into(),
                "--kubeconfig".into(),
                cfg.kubeconfig().display().to_string(),
                "--metrics-bind-address".into(),
                String::new(),
            ],
            log: cfg.data_dir.join("logs").join("scheduler.log"),
            needs: Some(cfg.kubeconfig()),
        },
    ];
    for i in 1..=cfg.nodes {
        let (name, dir) = cfg.node(i);
        let port = cfg.kubelet_port.saturating_add((i - 1) as u16);
        let mut args = vec![
            "kubelet".to_string(),
            "--kubeconfig".into(),
            dir.join("kubelet.conf").display().to_string(),
            "--hostname-override".into(),
            name.clone(),
            "--root-dir".into(),
            dir.display().to_string(),
            "--port".into(),
            port.to_string(),
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
        comps.push(Component {
            name: format!("kubelet-{i}"),
            args,
            log: cfg.data_dir.join("logs").join(format!("kubelet-{i}.log")),
            needs: Some(cfg.kubeconfig()),
        });
    }
    comps
}

/// Creates (or loads) the cluster CA in the apiserver's cert dir and writes each node's
/// kubeconfig with a `system:node:<name>` client certificate (O=`system:nodes`), so the
/// kubelets run with node credentials under the Node authorizer and NodeRestriction, and each
/// kubelet's serving certificate (`<root-dir>/pki/kubelet.crt`) signed by the cluster CA, so
/// the apiserver verifies the kubelets it proxies `kubectl logs`/`exec` to.
pub fn prepare_credentials(cfg: &UpConfig) -> Result<(), UpError> {
    let pki = kumo_auth::ClusterPki::load_or_create(&cfg.pki_dir(), &[])?;
    for i in 1..=cfg.nodes {
        let (name, dir) = cfg.node(i);
        prepare(&dir)?;
        let path = dir.join("kubelet.conf");
        let user = format!("system:node:{name}");
        let cert = pki.sign_client_cert(
            &user,
            &["system:nodes".to_string()],
            Duration::from_secs(365 * 24 * 3600),
        )?;
        kumo_auth::kubeconfig::write_kubeconfig(
            &path,
            &cfg.server_url(),
            pki.ca_cert_pem(),
            "kumo",
            &user,
            &kumo_auth::Credentials::ClientCert(cert),
        )?;
        let serving = pki.sign_serving_cert(
            &name,
            &[name.clone(), "localhost".into(), "127.0.0.1".into()],
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
    let Ok(nodes) = std::fs::read_dir(data_dir.join("nodes")) else {
        return 0;
    };
    let mut stopped = 0;
    for node in nodes.flatten() {
        let root = node.path().join("runtime");
        if !root.join("sandboxes").is_dir() {
            continue;
        }
        let images = match kumo_runtime::image::ImageStore::open(&images_dir(data_dir)) {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(error = %e, "cannot open the image store");
                continue;
            }
        };
        match kumo_runtime::process::ProcessRuntime::new(&root, images) {
            Ok(rt) => match rt.stop_all().await {
                Ok(n) => stopped += n,
                Err(e) => {
                    tracing::warn!(node = %node.path().display(), error = %e, "cannot stop pods")
                }
            },
            Err(e) => {
                tracing::warn!(node = %node.path().display(), error = %e, "cannot open the runtime")
            }
        }
    }
    stopped
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

fn spawn(exe: &Path, c: &Component) -> std::io::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&c.log)?;
    Command::new(exe)
        .args(&c.args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
}

/// Keeps one component running until `stop` fires; then stops it.
async fn supervise(exe: PathBuf, c: Component, mut stop: tokio::sync::watch::Receiver<bool>) {
    if let Some(needed) = &c.needs {
        while !needed.exists() {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = stop.changed() => return,
            }
        }
    }
    let mut backoff = Duration::from_millis(250);
    loop {
        let started = Instant::now();
        let mut child = match spawn(&exe, &c) {
            Ok(ch) => ch,
            Err(e) => {
                tracing::error!(component = %c.name, error = %e, "cannot start component");
                return;
            }
        };
        tracing::info!(component = %c.name, pid = child.id(), log = %c.log.display(), "started");
        if let (Some(pid), Some(data_dir)) = (child.id(), c.log.parent().and_then(Path::parent)) {
            let _ = std::fs::write(pid_file(data_dir, &c.name), pid.to_string());
        }
        tokio::select! {
            status = child.wait() => {
                let up = started.elapsed();
                if up > Duration::from_secs(30) {
                    backoff = Duration::from_millis(250);
                }
                tracing::warn!(component = %c.name, ?status, restart_in = ?backoff, "component exited; restarting");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            _ = stop.changed() => {
                terminate(&mut child, &c.name).await;
                return;
            }
        }
    }
}

/// SIGTERM, a grace period, then SIGKILL.
async fn terminate(child: &mut Child, name: &str) {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .is_ok()
        {
            tracing::info!(component = %name, "stopped");
            return;
        }
    }
    let _ = child.kill().await;
    tracing::warn!(component = %name, "killed after the grace period");
}

/// Starts every component and supervises them until `shutdown` resolves.
pub async fn run(
    cfg: UpConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<Vec<Component>, UpError> {
    prepare(&cfg.data_dir.join("logs"))?;
    prepare(&run_dir(&cfg.data_dir))?;
    let up_pid = pid_file(&cfg.data_dir, "up");
    std::fs::write(&up_pid, std::process::id().to_string()).map_err(|source| UpError::Io {
        path: up_pid.clone(),
        source,
    })?;
    // The apiserver writes a fresh kubeconfig once it serves; API clients wait for it.
    let _ = std::fs::remove_file(cfg.kubeconfig());
    prepare_credentials(&cfg)?;
    prepare(&cfg.images_dir())?;
    let components = plan(&cfg);
    let (tx, rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for c in &components {
        tasks.push(tokio::spawn(supervise(
            cfg.exe.clone(),
            c.clone(),
            rx.clone(),
        )));
    }
    shutdown.await;
    let _ = tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    for c in &components {
        let _ = std::fs::remove_file(pid_file(&cfg.data_dir, &c.name));
    }
    let pods = stop_pods(&cfg.data_dir).await;
    tracing::info!(pods, "stopped the pods of the local nodes");
    let _ = std::fs::remove_file(&up_pid);
    Ok(components)
}

/// How far a starting cluster got, for `kumo up`'s progress lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// The apiserver answers and wrote the admin kubeconfig.
    ApiServer,
    /// `ready` of `total` nodes report Ready.
    Nodes { ready: u32, total: u32 },
}

/// Waits until the apiserver answers and every node of the plan is Ready, reporting each step
/// once. Returns whether everything came up within `timeout`.
pub async fn wait_ready(
    cfg: &UpConfig,
    timeout: Duration,
    mut progress: impl FnMut(Progress),
) -> bool {
    use k8s_openapi::api::core::v1::Node;
    let deadline = Instant::now() + timeout;
    let kubeconfig = cfg.kubeconfig();
    let client = loop {
        if Instant::now() > deadline {
            return false;
        }
        let up = tokio::net::TcpStream::connect(("127.0.0.1", cfg.apiserver_port))
            .await
            .is_ok();
        if up
            && kubeconfig.exists()
            && let Ok(c) = kumo_client::client_from_kubeconfig(&kubeconfig).await
        {
            let nodes: kube::Api<Node> = kube::Api::all(c.clone());
            if nodes.list(&Default::default()).await.is_ok() {
                break c;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    progress(Progress::ApiServer);
    let nodes: kube::Api<Node> = kube::Api::all(client);
    let mut last = None;
    loop {
        let ready = match nodes.list(&Default::default()).await {
            Ok(list) => list
                .items
                .iter()
                .filter(|n| {
                    n.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|cs| {
                            cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                        })
                })
                .count() as u32,
            Err(_) => 0,
        };
        if last != Some(ready) {
            progress(Progress::Nodes {
                ready,
                total: cfg.nodes,
            });
            last = Some(ready);
        }
        if ready >= cfg.nodes {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
