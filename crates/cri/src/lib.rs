//! The `cri` container runtime: kumo's kubelet driving containerd (or any CRI runtime) over the
//! Kubernetes Container Runtime Interface, gRPC `runtime.v1` on a unix socket.
//!
//! [`CriRuntime`] implements [`kumo_runtime::Runtime`] by translating each call into the CRI
//! call upstream's kubelet makes, so containerd does the container work (images, snapshots, runc,
//! CNI, OOM detection, CRI-format log files, the exec streaming server) exactly as it does under
//! a real kubelet. The `.proto` is kumo's own subset of `k8s.io/cri-api` (upstream names and
//! field numbers), compiled with protox so no `protoc` is needed.

mod convert;

use std::path::Path;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use kumo_runtime::{
    ContainerConfig, ContainerStats, ContainerStatus, ExecOutput, ExecRequest, ImageInfo, Result,
    Runtime, RuntimeError, RuntimeVersion, SandboxConfig, SandboxStatus, StreamTarget,
};
use tonic::transport::{Channel, Endpoint, Uri};
use tracing::{debug, warn};

/// The CRI `runtime.v1` messages and clients, generated from `proto/api.proto`.
#[allow(clippy::all, missing_docs, rust_2018_idioms)]
pub mod pb {
    tonic::include_proto!("runtime.v1");
}

use pb::image_service_client::ImageServiceClient;
use pb::runtime_service_client::RuntimeServiceClient;

/// containerd's default CRI socket.
pub const DEFAULT_ENDPOINT: &str = "unix:///run/containerd/containerd.sock";

/// The CRI API version the kubelet announces in `Version` (upstream sends `v1`).
const KUBE_API_VERSION: &str = "v1";

/// Upstream kubelet's `--runtime-request-timeout` default: sandbox and container creation can
/// take a while on a loaded node (snapshot unpacking, CNI), so the budget is generous.
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Upstream's CRI client message limit (16 MiB): ListContainers on a busy node and ExecSync
/// output (capped at 16 MiB by containerd) fit.
const MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// How long a `PullImage` may take before the image counts as not found. No registry is
/// reachable on these machines, so a pull normally fails at once; the bound keeps a hanging
/// resolver from stalling the pod worker.
const PULL_TIMEOUT: Duration = Duration::from_secs(60);

/// One runtime condition from CRI `Status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CriCondition {
    pub kind: String,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

/// The runtime's readiness, from CRI `Status`: the kubelet's `Ready` node condition is false
/// unless both `RuntimeReady` and `NetworkReady` hold (upstream's "container runtime network
/// not ready" message comes from here).
#[derive(Debug, Clone, Default)]
pub struct CriStatus {
    pub runtime_ready: bool,
    pub network_ready: bool,
    pub conditions: Vec<CriCondition>,
}

impl CriStatus {
    /// `None` when ready; otherwise upstream-like text for the NodeReady condition message.
    pub fn not_ready_message(&self) -> Option<String> {
        let mut bad = Vec::new();
        for (kind, ok) in [
            ("RuntimeReady", self.runtime_ready),
            ("NetworkReady", self.network_ready),
        ] {
            if ok {
                continue;
            }
            let detail = self
                .conditions
                .iter()
                .find(|c| c.kind == kind)
                .map(|c| format!("reason:{} message:{}", c.reason, c.message))
                .unwrap_or_else(|| "missing".to_string());
            bad.push(format!("{kind}=false {detail}"));
        }
        if bad.is_empty() {
            None
        } else {
            Some(format!("container runtime not ready: {}", bad.join("; ")))
        }
    }
}

/// A CRI client for one runtime endpoint. Cheap to clone (tonic channels are shared handles);
/// the channel reconnects by itself when containerd restarts.
#[derive(Clone)]
pub struct CriRuntime {
    endpoint: String,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    request_timeout: Duration,
}

impl std::fmt::Debug for CriRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CriRuntime")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl CriRuntime {
    /// Connects to `endpoint` (`unix:///path/to.sock` or a bare socket path) and checks that
    /// the runtime answers CRI `runtime.v1` `Version`: a runtime speaking only `v1alpha2`
    /// fails here rather than on the first pod.
    pub async fn connect(endpoint: &str) -> Result<Self> {
        let path = socket_path(endpoint)?;
        // The URI is a placeholder: the connector below ignores it and dials the socket.
        let channel = Endpoint::from_static("http://cri.invalid")
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(stream))
                }
            }))
            .await
            .map_err(|e| {
                RuntimeError::Unavailable(format!("connect to CRI endpoint {endpoint}: {e}"))
            })?;
        let this = CriRuntime {
            endpoint: endpoint.to_string(),
            runtime: RuntimeServiceClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
            images: ImageServiceClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        };
        let v = this.version().await?;
        debug!(endpoint, runtime = %v.name, version = %v.version, "connected to CRI runtime");
        Ok(this)
    }

    /// Per-call deadline for ordinary CRI calls (default 2 minutes, like upstream).
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// CRI `Status`: RuntimeReady / NetworkReady for the node's Ready condition.
    pub async fn status(&self) -> Result<CriStatus> {
        let resp = self
            .runtime
            .clone()
            .status(self.req(pb::StatusRequest { verbose: false }))
            .await
            .map_err(|s| status_error("Status", s))?
            .into_inner();
        let conditions: Vec<CriCondition> = resp
            .status
            .map(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .map(|c| CriCondition {
                kind: c.r#type,
                status: c.status,
                reason: c.reason,
                message: c.message,
            })
            .collect();
        let is = |kind: &str| conditions.iter().any(|c| c.kind == kind && c.status);
        Ok(CriStatus {
            runtime_ready: is("RuntimeReady"),
            network_ready: is("NetworkReady"),
            conditions,
        })
    }

    /// The CRI `ContainerStatus` of a container, verbatim (for callers that want fields the
    /// trait does not carry, such as mounts or resources).
    pub async fn raw_container_status(&self, container_id: &str) -> Result<pb::ContainerStatus> {
        self.runtime
            .clone()
            .container_status(self.req(pb::ContainerStatusRequest {
                container_id: container_id.to_string(),
                verbose: false,
            }))
            .await
            .map_err(|s| status_error("ContainerStatus", s))?
            .into_inner()
            .status
            .ok_or_else(|| RuntimeError::NotFound(format!("container {container_id}")))
    }

    /// CRI `Attach` for `kubectl attach`: the runtime's streaming URL, like [`Runtime::exec`].
    pub async fn attach(&self, container_id: &str, request: &ExecRequest) -> Result<String> {
        let resp = self
            .runtime
            .clone()
            .attach(self.req(pb::AttachRequest {
                container_id: container_id.to_string(),
                stdin: request.stdin,
                tty: request.tty,
                stdout: request.stdout,
                stderr: request.stderr && !request.tty,
            }))
            .await
            .map_err(|s| status_error("Attach", s))?
            .into_inner();
        Ok(resp.url)
    }

    /// CRI `PortForward` for `kubectl port-forward`: the runtime's streaming URL.
    pub async fn port_forward(&self, sandbox_id: &str, ports: &[u16]) -> Result<String> {
        let resp = self
            .runtime
            .clone()
            .port_forward(self.req(pb::PortForwardRequest {
                pod_sandbox_id: sandbox_id.to_string(),
                port: ports.iter().map(|p| i32::from(*p)).collect(),
            }))
            .await
            .map_err(|s| status_error("PortForward", s))?
            .into_inner();
        Ok(resp.url)
    }

    /// CRI `ReopenContainerLog`, after the kubelet rotated a container's log file.
    pub async fn reopen_container_log(&self, container_id: &str) -> Result<()> {
        self.runtime
            .clone()
            .reopen_container_log(self.req(pb::ReopenContainerLogRequest {
                container_id: container_id.to_string(),
            }))
            .await
            .map_err(|s| status_error("ReopenContainerLog", s))?;
        Ok(())
    }

    fn req<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.set_timeout(self.request_timeout);
        r
    }

    async fn image_status(&self, image: &str, verbose: bool) -> Result<pb::ImageStatusResponse> {
        Ok(self
            .images
            .clone()
            .image_status(self.req(pb::ImageStatusRequest {
                image: Some(image_spec(image)),
                verbose,
            }))
            .await
            .map_err(|s| status_error("ImageStatus", s))?
            .into_inner())
    }

    async fn pod_sandbox_status(&self, sandbox_id: &str) -> Result<pb::PodSandboxStatus> {
        self.runtime
            .clone()
            .pod_sandbox_status(self.req(pb::PodSandboxStatusRequest {
                pod_sandbox_id: sandbox_id.to_string(),
                verbose: false,
            }))
            .await
            .map_err(|s| status_error("PodSandboxStatus", s))?
            .into_inner()
            .status
            .ok_or_else(|| RuntimeError::NotFound(format!("pod sandbox {sandbox_id}")))
    }
}

/// `unix:///run/containerd/containerd.sock` → `/run/containerd/containerd.sock`; a bare
/// absolute path is accepted too (crictl does the same).
fn socket_path(endpoint: &str) -> Result<std::path::PathBuf> {
    let path = match endpoint.strip_prefix("unix://") {
        Some(p) => p,
        None if endpoint.starts_with('/') => endpoint,
        None => {
            return Err(RuntimeError::Invalid(format!(
                "CRI endpoint {endpoint:?}: only unix:// sockets are supported"
            )));
        }
    };
    if path.is_empty() {
        return Err(RuntimeError::Invalid(format!(
            "CRI endpoint {endpoint:?} has no socket path"
        )));
    }
    Ok(Path::new(path).to_path_buf())
}

fn image_spec(image: &str) -> pb::ImageSpec {
    pb::ImageSpec {
        image: image.to_string(),
        ..Default::default()
    }
}

/// A gRPC status from the runtime as a [`RuntimeError`]: `NotFound` stays `NotFound` so the
/// kubelet can tell a vanished container from a failed call.
fn status_error(call: &str, s: tonic::Status) -> RuntimeError {
    use tonic::Code;
    let msg = format!("CRI {call}: {}", s.message());
    match s.code() {
        Code::NotFound => RuntimeError::NotFound(msg),
        Code::InvalidArgument | Code::FailedPrecondition | Code::AlreadyExists => {
            RuntimeError::Invalid(msg)
        }
        Code::Unavailable => RuntimeError::Unavailable(format!("{msg} ({:?})", s.code())),
        Code::DeadlineExceeded => RuntimeError::Other(format!("{msg} (deadline exceeded)")),
        code => RuntimeError::Other(format!("{msg} ({code:?})")),
    }
}

/// Stop/remove calls are idempotent in the trait: a missing object is already stopped/removed.
fn ignore_not_found(r: Result<()>) -> Result<()> {
    match r {
        Err(RuntimeError::NotFound(_)) => Ok(()),
        other => other,
    }
}

#[async_trait::async_trait]
impl Runtime for CriRuntime {
    async fn ready(&self) -> Result<()> {
        let st = self
            .status()
            .await
            .map_err(|e| RuntimeError::Unavailable(format!("container runtime is down: {e}")))?;
        match st.not_ready_message() {
            None => Ok(()),
            Some(m) => Err(RuntimeError::Unavailable(m)),
        }
    }

    async fn version(&self) -> Result<RuntimeVersion> {
        let v = self
            .runtime
            .clone()
            .version(self.req(pb::VersionRequest {
                version: KUBE_API_VERSION.to_string(),
            }))
            .await
            .map_err(|s| status_error("Version", s))?
            .into_inner();
        Ok(RuntimeVersion {
            name: v.runtime_name,
            version: v.runtime_version,
        })
    }

    async fn ensure_image(&self, image: &str) -> Result<ImageInfo> {
        let status = self.image_status(image, true).await?;
        if let Some(img) = status.image {
            return Ok(convert::image_info(img, &status.info));
        }
        // Not present: try a pull (IfNotPresent). With no registry reachable this fails, and
        // the failure is the pod's ErrImagePull reason, so keep the runtime's words.
        debug!(image, "image not present in the CRI runtime; pulling");
        let mut req = tonic::Request::new(pb::PullImageRequest {
            image: Some(image_spec(image)),
            auth: None,
            sandbox_config: None,
        });
        req.set_timeout(PULL_TIMEOUT);
        match self.images.clone().pull_image(req).await {
            Ok(_) => {}
            Err(s) => {
                return Err(RuntimeError::ImageNotFound(format!(
                    "{image}: not present in the CRI runtime's image store ({}) and pulling it failed: {}",
                    self.endpoint,
                    s.message()
                )));
            }
        }
        let status = self.image_status(image, true).await?;
        match status.image {
            Some(img) => Ok(convert::image_info(img, &status.info)),
            None => Err(RuntimeError::ImageNotFound(format!(
                "{image}: pulled, but the runtime does not report it"
            ))),
        }
    }

    async fn list_images(&self) -> Result<Vec<ImageInfo>> {
        let resp = self
            .images
            .clone()
            .list_images(self.req(pb::ListImagesRequest { filter: None }))
            .await
            .map_err(|s| status_error("ListImages", s))?
            .into_inner();
        Ok(resp
            .images
            .into_iter()
            .map(|i| convert::image_info(i, &Default::default()))
            .collect())
    }

    async fn run_sandbox(&self, config: &SandboxConfig) -> Result<String> {
        tokio::fs::create_dir_all(&config.log_directory)
            .await
            .map_err(|e| {
                RuntimeError::Other(format!(
                    "create pod log directory {}: {e}",
                    config.log_directory.display()
                ))
            })?;
        let resp = self
            .runtime
            .clone()
            .run_pod_sandbox(self.req(pb::RunPodSandboxRequest {
                config: Some(convert::sandbox_config(config)),
                runtime_handler: String::new(),
            }))
            .await
            .map_err(|s| status_error("RunPodSandbox", s))?
            .into_inner();
        Ok(resp.pod_sandbox_id)
    }

    async fn stop_sandbox(&self, sandbox_id: &str) -> Result<()> {
        let r = self
            .runtime
            .clone()
            .stop_pod_sandbox(self.req(pb::StopPodSandboxRequest {
                pod_sandbox_id: sandbox_id.to_string(),
            }))
            .await
            .map(|_| ())
            .map_err(|s| status_error("StopPodSandbox", s));
        ignore_not_found(r)
    }

    async fn remove_sandbox(&self, sandbox_id: &str) -> Result<()> {
        let r = self
            .runtime
            .clone()
            .remove_pod_sandbox(self.req(pb::RemovePodSandboxRequest {
                pod_sandbox_id: sandbox_id.to_string(),
            }))
            .await
            .map(|_| ())
            .map_err(|s| status_error("RemovePodSandbox", s));
        ignore_not_found(r)
    }

    async fn sandbox_status(&self, sandbox_id: &str) -> Result<SandboxStatus> {
        let s = self.pod_sandbox_status(sandbox_id).await?;
        Ok(convert::sandbox_status(&s))
    }

    async fn list_sandboxes(&self) -> Result<Vec<(String, SandboxStatus)>> {
        let items = self
            .runtime
            .clone()
            .list_pod_sandbox(self.req(pb::ListPodSandboxRequest { filter: None }))
            .await
            .map_err(|s| status_error("ListPodSandbox", s))?
            .into_inner()
            .items;
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let uid = item
                .metadata
                .as_ref()
                .map(|m| m.uid.clone())
                .unwrap_or_default();
            // ListPodSandbox carries no IP: ask for each sandbox's status. A sandbox removed
            // in between is simply gone.
            let status = match self.pod_sandbox_status(&item.id).await {
                Ok(s) => convert::sandbox_status(&s),
                Err(RuntimeError::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            out.push((uid, status));
        }
        Ok(out)
    }

    async fn create_container(
        &self,
        sandbox_id: &str,
        config: &ContainerConfig,
        sandbox: &SandboxConfig,
    ) -> Result<String> {
        let pb_config = convert::container_config(config, sandbox)?;
        if let Some(parent) = config.log_path.parent() {
            // containerd opens the log file but does not create its directory.
            tokio::fs::create_dir_all(parent).await.map_err(|e| {
                RuntimeError::Other(format!("create log directory {}: {e}", parent.display()))
            })?;
        }
        let resp = self
            .runtime
            .clone()
            .create_container(self.req(pb::CreateContainerRequest {
                pod_sandbox_id: sandbox_id.to_string(),
                config: Some(pb_config),
                sandbox_config: Some(convert::sandbox_config(sandbox)),
            }))
            .await
            .map_err(|s| status_error("CreateContainer", s))?
            .into_inner();
        Ok(resp.container_id)
    }

    async fn start_container(&self, container_id: &str) -> Result<()> {
        self.runtime
            .clone()
            .start_container(self.req(pb::StartContainerRequest {
                container_id: container_id.to_string(),
            }))
            .await
            .map_err(|s| status_error("StartContainer", s))?;
        Ok(())
    }

    async fn stop_container(&self, container_id: &str, timeout: Duration) -> Result<()> {
        // CRI takes whole seconds; round up so a sub-second grace period is not "kill now".
        let secs = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
        let mut req = tonic::Request::new(pb::StopContainerRequest {
            container_id: container_id.to_string(),
            timeout: i64::try_from(secs).unwrap_or(i64::MAX),
        });
        // The runtime waits up to `timeout` for the process before SIGKILL, then reaps it.
        req.set_timeout(self.request_timeout + timeout);
        let r = self
            .runtime
            .clone()
            .stop_container(req)
            .await
            .map(|_| ())
            .map_err(|s| status_error("StopContainer", s));
        ignore_not_found(r)
    }

    async fn remove_container(&self, container_id: &str) -> Result<()> {
        let r = self
            .runtime
            .clone()
            .remove_container(self.req(pb::RemoveContainerRequest {
                container_id: container_id.to_string(),
            }))
            .await
            .map(|_| ())
            .map_err(|s| status_error("RemoveContainer", s));
        ignore_not_found(r)
    }

    async fn container_status(&self, container_id: &str) -> Result<ContainerStatus> {
        let s = self.raw_container_status(container_id).await?;
        Ok(convert::container_status(s))
    }

    async fn list_containers(&self, sandbox_id: &str) -> Result<Vec<ContainerStatus>> {
        let containers = self
            .runtime
            .clone()
            .list_containers(self.req(pb::ListContainersRequest {
                filter: Some(pb::ContainerFilter {
                    pod_sandbox_id: sandbox_id.to_string(),
                    ..Default::default()
                }),
            }))
            .await
            .map_err(|s| status_error("ListContainers", s))?
            .into_inner()
            .containers;
        let mut out = Vec::with_capacity(containers.len());
        for c in containers {
            // The list entry lacks timestamps, exit code and reason: the status has them.
            match self.raw_container_status(&c.id).await {
                Ok(s) => out.push(convert::container_status(s)),
                Err(RuntimeError::NotFound(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    async fn exec_sync(
        &self,
        container_id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput> {
        // CRI timeout is whole seconds and 0 means "no limit": round up to at least 1 s.
        let secs = (timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0)).max(1);
        let mut req = tonic::Request::new(pb::ExecSyncRequest {
            container_id: container_id.to_string(),
            cmd: cmd.to_vec(),
            timeout: i64::try_from(secs).unwrap_or(i64::MAX),
        });
        // Leave the runtime room to report the command's own timeout before the call's.
        req.set_timeout(Duration::from_secs(secs) + Duration::from_secs(10));
        let resp = self
            .runtime
            .clone()
            .exec_sync(req)
            .await
            .map_err(|s| status_error("ExecSync", s))?
            .into_inner();
        Ok(ExecOutput {
            exit_code: resp.exit_code,
            stdout: resp.stdout,
            stderr: resp.stderr,
        })
    }

    async fn exec(&self, container_id: &str, request: &ExecRequest) -> Result<StreamTarget> {
        if request.cmd.is_empty() {
            return Err(RuntimeError::Invalid("exec: empty command".to_string()));
        }
        let resp = self
            .runtime
            .clone()
            .exec(self.req(pb::ExecRequest {
                container_id: container_id.to_string(),
                cmd: request.cmd.clone(),
                tty: request.tty,
                stdin: request.stdin,
                stdout: request.stdout,
                // CRI: with a TTY stderr is merged into stdout and must be false.
                stderr: request.stderr && !request.tty,
            }))
            .await
            .map_err(|s| status_error("Exec", s))?
            .into_inner();
        if resp.url.is_empty() {
            warn!(container_id, "CRI Exec returned an empty streaming URL");
            return Err(RuntimeError::Other(
                "CRI Exec returned no streaming URL".to_string(),
            ));
        }
        Ok(StreamTarget::Url(resp.url))
    }

    async fn container_stats(&self, container_id: &str) -> Result<ContainerStats> {
        let stats = self
            .runtime
            .clone()
            .container_stats(self.req(pb::ContainerStatsRequest {
                container_id: container_id.to_string(),
            }))
            .await
            .map_err(|s| status_error("ContainerStats", s))?
            .into_inner()
            .stats
            .unwrap_or_default();
        Ok(ContainerStats {
            cpu_usage_nanos: stats
                .cpu
                .and_then(|c| c.usage_core_nano_seconds)
                .map(|v| v.value),
            memory_working_set_bytes: stats
                .memory
                .and_then(|m| m.working_set_bytes)
                .map(|v| v.value),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            socket_path("unix:///run/containerd/containerd.sock").ok(),
            Some("/run/containerd/containerd.sock".into())
        );
        assert_eq!(socket_path("/tmp/x.sock").ok(), Some("/tmp/x.sock".into()));
        assert!(matches!(
            socket_path("tcp://127.0.0.1:1"),
            Err(RuntimeError::Invalid(_))
        ));
        assert!(matches!(
            socket_path("unix://"),
            Err(RuntimeError::Invalid(_))
        ));
    }

    #[test]
    fn not_ready_message_names_the_failing_condition() {
        let s = CriStatus {
            runtime_ready: true,
            network_ready: false,
            conditions: vec![CriCondition {
                kind: "NetworkReady".into(),
                status: false,
                reason: "NetworkPluginNotReady".into(),
                message: "cni plugin not initialized".into(),
            }],
        };
        let m = s.not_ready_message().unwrap_or_default();
        assert!(m.contains("NetworkReady=false"), "{m}");
        assert!(m.contains("cni plugin not initialized"), "{m}");
        let ok = CriStatus {
            runtime_ready: true,
            network_ready: true,
            conditions: vec![],
        };
        assert_eq!(ok.not_ready_message(), None);
    }

    #[test]
    fn not_found_maps_to_not_found() {
        let e = status_error("ContainerStatus", tonic::Status::not_found("no such"));
        assert!(matches!(e, RuntimeError::NotFound(_)));
        assert!(ignore_not_found(Err(e)).is_ok());
    }
}
