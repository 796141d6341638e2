//! What the kubelet API server needs from the pod manager: which container a
//! `/containerLogs/{ns}/{pod}/{container}` or `/exec/...` request means, and its log files.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::Pod;

/// One container of a pod this kubelet runs.
#[derive(Debug, Clone)]
pub struct ContainerRef {
    /// Runtime container id of the current (latest) attempt, without the `<runtime>://` prefix.
    pub container_id: Option<String>,
    /// CRI-format log of the current attempt.
    pub log_path: Option<PathBuf>,
    /// CRI-format log of the previous attempt (`kubectl logs --previous`).
    pub previous_log_path: Option<PathBuf>,
    /// Whether the current attempt is running (`-f` follows until it exits).
    pub running: bool,
}

/// Why a lookup failed, worded like upstream's kubelet errors.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LookupError {
    #[error("pod {namespace}/{name} not found")]
    PodNotFound { namespace: String, name: String },
    #[error("container {container} is not valid for pod {pod}")]
    ContainerNotFound { pod: String, container: String },
}

/// Implemented by the pod manager; read by the kubelet API server.
pub trait PodDirectory: Send + Sync + 'static {
    fn container(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
    ) -> Result<ContainerRef, LookupError>;
    /// The pods this kubelet runs (`GET /pods`).
    fn pods(&self) -> Vec<Pod>;
}
