//! What every pod worker of a node shares: the API client, the runtime, the node's identity,
//! its allocatable resources and the pod directory the kubelet API server reads.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

use crate::events::Recorder;
use crate::metrics::Metrics;
use crate::pods::directory::PodDir;

/// Process-wide state shared by every node this process runs (one with a real runtime,
/// thousands with `--sim-nodes`).
pub struct Shared {
    pub client: kube::Client,
    pub runtime: Arc<dyn kumo_runtime::Runtime>,
    /// `<runtime>` in `containerID: <runtime>://<id>`.
    pub runtime_name: String,
    pub metrics: Metrics,
    /// Hollow nodes: no volume files, no probes' network traffic.
    pub sim: bool,
    pub sync_frequency: Duration,
    pub pleg_period: Duration,
    pub cluster_dns: Vec<String>,
    pub cluster_domain: String,
    /// The host's resolv.conf (nameservers, search), the `Default` DNS policy and the
    /// `ClusterFirst` fallback without cluster DNS.
    pub host_dns: (Vec<String>, Vec<String>),
    /// `default/kubernetes` Service (cluster IP, port) for `KUBERNETES_SERVICE_*` env.
    pub kube_service: RwLock<Option<(String, u16)>>,
    pub events: bool,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("runtime_name", &self.runtime_name)
            .field("sim", &self.sim)
            .finish_non_exhaustive()
    }
}

/// Allocatable resources a node admits pods against.
#[derive(Debug, Clone, Copy, Default)]
pub struct Allocatable {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub pods: u64,
    pub ephemeral_bytes: u64,
}

/// One node.
#[derive(Debug)]
pub struct NodeCtx {
    pub shared: Arc<Shared>,
    pub name: String,
    pub node_ip: String,
    pub root_dir: PathBuf,
    pub pod_log_dir: PathBuf,
    pub recorder: Recorder,
    pub allocatable: Allocatable,
    pub labels: BTreeMap<String, String>,
    pub directory: Arc<PodDir>,
    /// Admitted, not yet terminated pods: uid → (cpu millicores, memory bytes) requested.
    pub admitted: Mutex<HashMap<String, (u64, u64)>>,
}

impl NodeCtx {
    /// `<root-dir>/pods/<uid>`.
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.root_dir.join("pods").join(uid)
    }

    /// `<pod-log-dir>/<ns>_<name>_<uid>`.
    pub fn pod_log_dir(&self, ns: &str, name: &str, uid: &str) -> PathBuf {
        self.pod_log_dir.join(format!("{ns}_{name}_{uid}"))
    }
}
