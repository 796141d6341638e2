//! Container runtimes behind one trait, shaped like the CRI (`RuntimeService` + `ImageService`)
//! so the kubelet drives `process`, `cri` (containerd) and `sim` the same way.
//!
//! The kubelet owns pod logic (restart policy, probes, volumes, env, status); a runtime only
//! runs sandboxes and containers, reports their state truthfully and writes each container's
//! output to `ContainerConfig::log_path` in the CRI log format
//! (`2006-01-02T15:04:05.999999999Z07:00 stdout|stderr F|P line`), which the kubelet serves.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

pub mod image;
pub mod process;

pub mod sim;

/// Errors of a runtime call. `NotFound` lets the kubelet tell a vanished container from a
/// failed call; `ImageNotFound` becomes the container's `ErrImagePull`/`ImagePullBackOff`.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("image not found: {0}")]
    ImageNotFound(String),
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("runtime unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Other(String),
}

impl From<std::io::Error> for RuntimeError {
    fn from(e: std::io::Error) -> Self {
        RuntimeError::Other(e.to_string())
    }
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// `status.nodeInfo.containerRuntimeVersion` is `<name>://<version>`.
#[derive(Debug, Clone)]
pub struct RuntimeVersion {
    pub name: String,
    pub version: String,
}

/// An image the runtime has, for `node.status.images` and `containerStatuses[].imageID`.
#[derive(Debug, Clone, Default)]
pub struct ImageInfo {
    /// Content id, e.g. `sha256:…`.
    pub id: String,
    /// Names it is known by (`busybox:latest`, `docker.io/library/busybox:latest` …).
    pub names: Vec<String>,
    pub size_bytes: u64,
    /// The image config's defaults, used when the pod leaves `command`/`args`/`workingDir` out.
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
}

/// What a pod sandbox (the pod's shared network namespace, like the pause container) needs.
#[derive(Debug, Clone, Default)]
pub struct SandboxConfig {
    pub pod_uid: String,
    pub namespace: String,
    pub name: String,
    pub hostname: String,
    pub host_network: bool,
    /// Directory under which container logs of this pod live (`/var/log/pods/<ns>_<name>_<uid>`).
    pub log_directory: PathBuf,
    /// Contents for the pod's `/etc/hosts` and `/etc/resolv.conf`, written by the kubelet.
    pub dns_servers: Vec<String>,
    pub dns_searches: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// Pod-level resource bounds (sum of container limits), if the runtime enforces them.
    pub resources: Resources,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxState {
    Ready,
    NotReady,
}

#[derive(Debug, Clone)]
pub struct SandboxStatus {
    pub id: String,
    pub state: SandboxState,
    /// The pod IP (`status.podIP`); the host's address for hostNetwork pods.
    pub ip: Option<String>,
}

/// A bind mount into the container's filesystem.
#[derive(Debug, Clone)]
pub struct Mount {
    pub host_path: PathBuf,
    pub container_path: String,
    pub read_only: bool,
}

/// Resource limits the runtime enforces (cgroups). `None` = unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    /// CPU limit in millicores (`cpu.cfs_quota_us` / `cpu.max`).
    pub cpu_limit_millis: Option<u64>,
    /// CPU request in millicores (`cpu.shares` / `cpu.weight`).
    pub cpu_request_millis: Option<u64>,
    /// Memory limit in bytes (`memory.limit_in_bytes` / `memory.max`).
    pub memory_limit_bytes: Option<u64>,
}

#[derive(Debug, Clone, Default)]
pub struct ContainerConfig {
    pub name: String,
    /// Restart count of this container in its pod (CRI `attempt`).
    pub attempt: u32,
    pub image: String,
    /// Overrides the image entrypoint when non-empty (pod `command`).
    pub command: Vec<String>,
    /// Overrides the image cmd when non-empty (pod `args`).
    pub args: Vec<String>,
    /// Final environment, already resolved by the kubelet (valueFrom, $(VAR) expansion).
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub mounts: Vec<Mount>,
    /// Absolute path of the CRI-format log file the runtime writes this attempt's output to.
    pub log_path: PathBuf,
    pub resources: Resources,
    pub tty: bool,
    pub stdin: bool,
    pub stdin_once: bool,
    pub privileged: bool,
    pub run_as_user: Option<u32>,
    pub run_as_group: Option<u32>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    Created,
    Running,
    Exited,
    Unknown,
}

#[derive(Debug, Clone)]
pub struct ContainerStatus {
    pub id: String,
    pub name: String,
    pub attempt: u32,
    pub state: ContainerState,
    pub created_at: Option<jiff::Timestamp>,
    pub started_at: Option<jiff::Timestamp>,
    pub finished_at: Option<jiff::Timestamp>,
    pub exit_code: Option<i32>,
    /// `OOMKilled`, `Error`, `Completed`, or runtime-specific; kubelet copies it to
    /// `state.terminated.reason`.
    pub reason: Option<String>,
    pub message: Option<String>,
    pub image: String,
    pub image_id: String,
    pub log_path: PathBuf,
}

/// Bytes in, bytes out of a running exec/attach.
pub type BoxRead = Pin<Box<dyn AsyncRead + Send>>;
pub type BoxWrite = Pin<Box<dyn AsyncWrite + Send>>;

#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    pub cmd: Vec<String>,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// A running interactive exec inside the kubelet's process.
pub struct ExecSession {
    pub stdin: Option<BoxWrite>,
    pub stdout: Option<BoxRead>,
    /// Absent with a TTY (stderr goes to stdout).
    pub stderr: Option<BoxRead>,
    /// Terminal size changes (cols, rows), when `tty`.
    pub resize: Option<tokio::sync::mpsc::Sender<(u16, u16)>>,
    /// Resolves to the command's exit code.
    pub exit: Pin<Box<dyn std::future::Future<Output = Result<i32>> + Send>>,
}

impl std::fmt::Debug for ExecSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecSession").finish_non_exhaustive()
    }
}

/// How the kubelet serves `/exec` and `/attach`: either it streams a local session itself, or
/// (CRI) it proxies the client's upgrade to the runtime's streaming URL, as upstream does.
#[derive(Debug)]
pub enum StreamTarget {
    Local(ExecSession),
    Url(String),
}

/// Output of a non-interactive exec (exec probes).
#[derive(Debug, Clone, Default)]
pub struct ExecOutput {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Resource usage for `/metrics` and `/stats/summary`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ContainerStats {
    pub cpu_usage_nanos: Option<u64>,
    pub memory_working_set_bytes: Option<u64>,
}

/// A container runtime. Every call is idempotent where the CRI call is (stopping a stopped
/// container, removing a removed one succeed).
#[async_trait::async_trait]
pub trait Runtime: Send + Sync + 'static {
    async fn version(&self) -> Result<RuntimeVersion>;

    /// Whether the runtime can run pods now (the node's Ready condition): the CRI `Status`
    /// call's RuntimeReady and NetworkReady. `Err` carries the reason the node shows.
    async fn ready(&self) -> Result<()> {
        self.version()
            .await
            .map(|_| ())
            .map_err(|e| RuntimeError::Unavailable(format!("container runtime is down: {e}")))
    }

    /// Resolve `image` to a local image (`IfNotPresent`/`Never` semantics: no registry here;
    /// `ImageNotFound` when the local store lacks it).
    async fn ensure_image(&self, image: &str) -> Result<ImageInfo>;
    async fn list_images(&self) -> Result<Vec<ImageInfo>>;

    async fn run_sandbox(&self, config: &SandboxConfig) -> Result<String>;
    /// Stops every container of the sandbox too (SIGKILL; the kubelet stops them gracefully
    /// before).
    async fn stop_sandbox(&self, sandbox_id: &str) -> Result<()>;
    async fn remove_sandbox(&self, sandbox_id: &str) -> Result<()>;
    async fn sandbox_status(&self, sandbox_id: &str) -> Result<SandboxStatus>;
    /// Sandboxes this runtime holds, by pod uid, so a restarted kubelet adopts them.
    async fn list_sandboxes(&self) -> Result<Vec<(String, SandboxStatus)>>;

    async fn create_container(
        &self,
        sandbox_id: &str,
        config: &ContainerConfig,
        sandbox: &SandboxConfig,
    ) -> Result<String>;
    async fn start_container(&self, container_id: &str) -> Result<()>;
    /// SIGTERM, then SIGKILL once `timeout` passes.
    async fn stop_container(&self, container_id: &str, timeout: Duration) -> Result<()>;
    async fn remove_container(&self, container_id: &str) -> Result<()>;
    async fn container_status(&self, container_id: &str) -> Result<ContainerStatus>;
    /// Containers of one sandbox (every attempt still present).
    async fn list_containers(&self, sandbox_id: &str) -> Result<Vec<ContainerStatus>>;

    /// Run a command in a container and collect its output (exec probes).
    async fn exec_sync(
        &self,
        container_id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput>;
    /// Start an interactive exec (`kubectl exec`).
    async fn exec(&self, container_id: &str, request: &ExecRequest) -> Result<StreamTarget>;

    async fn container_stats(&self, container_id: &str) -> Result<ContainerStats> {
        let _ = container_id;
        Ok(ContainerStats::default())
    }
}
