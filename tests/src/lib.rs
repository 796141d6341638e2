//! Shared helpers for kumo's integration tests and load generators: start, kill and restart
//! real peers (etcd 3.4) and kumo components as child processes on free loopback ports.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The workspace root (this crate lives in `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The `kumo` binary under test: `$KUMO_BIN`, else `target/{release,debug}/kumo` (whichever is
/// newer). `cargo xtask test` builds it before running the suite.
pub fn kumo_bin() -> PathBuf {
    if let Ok(p) = std::env::var("KUMO_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace_root().join("target"));
    let candidates = [target.join("debug/kumo"), target.join("release/kumo")];
    let newest = candidates
        .iter()
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p.clone())))
        .max_by_key(|(t, _)| *t)
        .map(|(_, p)| p);
    match newest {
        Some(p) => p,
        None => panic!(
            "no kumo binary found under {}: run `cargo build -p kumo` (or `cargo xtask test`), or set KUMO_BIN",
            target.display()
        ),
    }
}

/// A free TCP port on 127.0.0.1 (the listener is dropped, so the port is free right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Which store implementation a [`StoreProc`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// Real etcd (apt `etcd-server`, 3.4).
    Etcd,
    /// `kumo store`.
    Kumo,
}

impl std::fmt::Display for StoreKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StoreKind::Etcd => "etcd",
            StoreKind::Kumo => "kumo",
        })
    }
}

/// A running etcd-compatible store process, restartable on the same ports and data dir.
pub struct StoreProc {
    pub kind: StoreKind,
    pub name: String,
    pub data_dir: PathBuf,
    pub client_port: u16,
    pub peer_port: u16,
    pub metrics_port: u16,
    pub extra_args: Vec<String>,
    child: Option<Child>,
    log: PathBuf,
}

impl StoreProc {
    /// Starts a store of `kind` with its data under `dir` and waits until it serves requests.
    pub fn start(kind: StoreKind, dir: &Path, extra_args: &[&str]) -> Result<StoreProc> {
        std::fs::create_dir_all(dir)?;
        let mut p = StoreProc {
            kind,
            name: format!("{kind}-test"),
            data_dir: dir.join("data"),
            client_port: free_port(),
            peer_port: free_port(),
            metrics_port: free_port(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            child: None,
            log: dir.join(format!("{kind}.log")),
        };
        p.spawn()?;
        Ok(p)
    }

    /// `http://127.0.0.1:PORT` of the client (gRPC) listener.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// `http://127.0.0.1:PORT` of the metrics listener (`/metrics`, `/health`).
    pub fn metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.metrics_port)
    }

    /// The path of the process's combined stdout/stderr log.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    fn command(&self) -> Command {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let metrics = self.metrics_url();
        let dir = self.data_dir.display().to_string();
        let mut cmd = match self.kind {
            StoreKind::Etcd => {
                let mut c = Command::new(etcd_bin());
                c.args(["--name", &self.name, "--data-dir", &dir])
                    .args(["--listen-client-urls", &client])
                    .args(["--advertise-client-urls", &client])
                    .args(["--listen-peer-urls", &peer])
                    .args(["--initial-advertise-peer-urls", &peer])
                    .args(["--initial-cluster", &format!("{}={peer}", self.name)])
                    .args(["--listen-metrics-urls", &metrics]);
                c
            }
            StoreKind::Kumo => {
                let mut c = Command::new(kumo_bin());
                c.args(["store", "--name", &self.name, "--data-dir", &dir])
                    .args(["--listen-client-urls", &client])
                    .args(["--advertise-client-urls", &client])
                    .args(["--initial-advertise-peer-urls", &peer])
                    .args(["--listen-metrics-urls", &metrics]);
                c
            }
        };
        cmd.args(&self.extra_args);
        cmd
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = self
            .command()
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawn {}", self.kind))?;
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(30))
    }

    /// Waits until the client port accepts connections and a KV read succeeds.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let addr: SocketAddr = ([127, 0, 0, 1], self.client_port).into();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                bail!(
                    "{} exited with {status} before becoming ready; log:\n{}",
                    self.kind,
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                let out = etcdctl(&self.endpoint(), &["get", "kumo-test-readiness-probe"]);
                if out.map(|o| o.status.success()).unwrap_or(false) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "{} not ready after {timeout:?}; log:\n{}",
                    self.kind,
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL the process (no chance to flush anything) and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again on the same ports and data dir.
    pub fn restart(&mut self) -> Result<()> {
        self.kill9();
        self.spawn()
    }

    /// The OS pid of the running process.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for StoreProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Path of the real etcd server binary (`$ETCD_BIN` or `etcd` on PATH).
pub fn etcd_bin() -> PathBuf {
    std::env::var("ETCD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("etcd"))
}

/// Path of the real etcdctl binary (`$ETCDCTL_BIN` or `etcdctl` on PATH).
pub fn etcdctl_bin() -> PathBuf {
    std::env::var("ETCDCTL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("etcdctl"))
}

/// Runs `etcdctl --endpoints ENDPOINT ARGS…` (API v3) and returns its output.
pub fn etcdctl(endpoint: &str, args: &[&str]) -> Result<Output> {
    Command::new(etcdctl_bin())
        .env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(endpoint)
        .arg("--command-timeout=10s")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("run etcdctl (is etcd-client installed? `cargo xtask test` installs it)")
}
