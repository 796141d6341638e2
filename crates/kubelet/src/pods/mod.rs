//! The pod manager: ONE pod watch for every node this process runs (a field selector on
//! `spec.nodeName`), dispatching each pod to its node's worker (one tokio task per pod).
//! At start it adopts the runtime's sandboxes of pods that still exist and removes those of
//! pods deleted while the kubelet was down.

pub mod directory;
pub mod status;
pub mod worker;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::Api;
use kube::runtime::{WatchStreamExt as _, watcher};
use kumo_runtime::SandboxStatus;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::context::{NodeCtx, Shared};

struct Handle {
    tx: watch::Sender<Option<Arc<Pod>>>,
    task: JoinHandle<()>,
}

/// The pods of one node.
struct NodePods {
    ctx: Arc<NodeCtx>,
    workers: HashMap<String, Handle>,
}

impl NodePods {
    fn apply(&mut self, pod: Arc<Pod>, adopt: &mut HashMap<String, SandboxStatus>) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        if let Some(h) = self.workers.get(&uid)
            && !h.task.is_finished()
        {
            self.ctx.directory.set_pod(pod.clone());
            let _ = h.tx.send(Some(pod));
            return;
        }
        let finished_terminal = matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded") | Some("Failed")
        ) && pod.metadata.deletion_timestamp.is_none()
            && self.workers.contains_key(&uid);
        if finished_terminal {
            return;
        }
        self.ctx.directory.set_pod(pod.clone());
        let (tx, rx) = watch::channel(Some(pod));
        let w = worker::Worker::new(self.ctx.clone(), uid.clone(), rx, adopt.remove(&uid));
        let task = tokio::spawn(w.run());
        self.workers.insert(uid, Handle { tx, task });
    }

    fn delete(&mut self, uid: &str) {
        if let Some(h) = self.workers.get(uid) {
            let _ = h.tx.send(None);
        }
    }

    fn gc(&mut self) {
        self.workers.retain(|_, h| !h.task.is_finished());
    }
}

/// Runs the pod manager for `nodes` until the watch ends (never, normally).
pub async fn run(shared: Arc<Shared>, nodes: Vec<Arc<NodeCtx>>) -> anyhow::Result<()> {
    let field_selector = if nodes.len() == 1 {
        format!("spec.nodeName={}", nodes[0].name)
    } else {
        "spec.nodeName!=".to_string()
    };
    let mut by_node: HashMap<String, NodePods> = nodes
        .iter()
        .map(|n| {
            (
                n.name.clone(),
                NodePods {
                    ctx: n.clone(),
                    workers: HashMap::new(),
                },
            )
        })
        .collect();
    // Sandboxes that survived a kubelet restart, by pod uid.
    let mut adopt: HashMap<String, SandboxStatus> = shared
        .runtime
        .list_sandboxes()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, s)| s.state == kumo_runtime::SandboxState::Ready)
        .collect();
    let all_sandboxes: Vec<(String, SandboxStatus)> =
        shared.runtime.list_sandboxes().await.unwrap_or_default();
    let api: Api<Pod> = Api::all(shared.client.clone());
    let cfg = watcher::Config::default().fields(&field_selector);
    // Backoff on errors: without it an unreachable apiserver is retried in a tight loop.
    let mut stream = watcher(api, cfg).default_backoff().boxed();
    let mut listed: Option<HashSet<String>> = None;
    let mut cleaned = false;
    let mut tick = tokio::time::interval(shared.sync_frequency);
    let mut service_refresh = std::time::Instant::now() - Duration::from_secs(3600);
    loop {
        tokio::select! {
            ev = stream.next() => {
                let Some(ev) = ev else { anyhow::bail!("pod watch ended") };
                match ev {
                    Ok(watcher::Event::Init) => listed = Some(HashSet::new()),
                    Ok(watcher::Event::InitApply(mut pod)) | Ok(watcher::Event::Apply(mut pod)) => {
                        // Never read here; dropping it halves what a pod costs in memory.
                        pod.metadata.managed_fields = None;
                        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
                        if let (Some(set), Some(uid)) = (listed.as_mut(), pod.metadata.uid.clone()) {
                            set.insert(uid);
                        }
                        if let Some(np) = by_node.get_mut(&node) {
                            np.apply(Arc::new(pod), &mut adopt);
                        }
                    }
                    Ok(watcher::Event::Delete(pod)) => {
                        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
                        if let (Some(np), Some(uid)) = (by_node.get_mut(&node), pod.metadata.uid.as_deref()) {
                            np.delete(uid);
                        }
                    }
                    Ok(watcher::Event::InitDone) => {
                        let seen = listed.take().unwrap_or_default();
                        for np in by_node.values_mut() {
                            let gone: Vec<String> = np.workers.keys().filter(|u| !seen.contains(*u)).cloned().collect();
                            for uid in gone {
                                np.delete(&uid);
                            }
                        }
                        if !cleaned {
                            cleaned = true;
                            for (uid, sb) in &all_sandboxes {
                                if !seen.contains(uid) {
                                    info!(uid, sandbox = %sb.id, "removing the sandbox of a pod deleted while the kubelet was down");
                                    let _ = shared.runtime.stop_sandbox(&sb.id).await;
                                    let _ = shared.runtime.remove_sandbox(&sb.id).await;
                                }
                            }
                            adopt.retain(|uid, _| seen.contains(uid));
                            if !shared.sim {
                                for np in by_node.values() {
                                    remove_orphan_dirs(&np.ctx, &seen);
                                }
                            }
                        }
                    }
                    Err(e) => warn!(error = %e, "pod watch error; retrying"),
                }
            }
            _ = tick.tick() => {
                let (mut pods, mut running, mut other) = (0, 0, 0);
                for np in by_node.values_mut() {
                    np.gc();
                    let (p, r, o) = np.ctx.directory.counts();
                    pods += p;
                    running += r;
                    other += o;
                }
                let m = &shared.metrics;
                m.running_pods.set(pods as i64);
                m.running_containers.with_label_values(&["running"]).set(running as i64);
                m.running_containers.with_label_values(&["exited"]).set(other as i64);
                if service_refresh.elapsed() >= Duration::from_secs(60) {
                    service_refresh = std::time::Instant::now();
                    refresh_kube_service(&shared).await;
                }
            }
        }
    }
}

/// Removes the volume and log directories of pods deleted while the kubelet was down
/// (upstream's orphaned pod directory clean-up). Only plain directories under the kubelet's
/// own roots are touched; hostPath volumes live elsewhere and symlinks are not followed.
fn remove_orphan_dirs(ctx: &NodeCtx, live: &HashSet<String>) {
    if let Ok(entries) = std::fs::read_dir(ctx.root_dir.join("pods")) {
        for e in entries.flatten() {
            let uid = e.file_name().to_string_lossy().into_owned();
            if !live.contains(&uid) && e.file_type().is_ok_and(|t| t.is_dir()) {
                info!(uid, "removing the directory of a pod that no longer exists");
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    // A --pod-log-dir outside the root dir may be shared with other kubelets: leave it.
    if !ctx.pod_log_dir.starts_with(&ctx.root_dir) {
        return;
    }
    if let Ok(entries) = std::fs::read_dir(&ctx.pod_log_dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            // <namespace>_<name>_<uid>
            let Some(uid) = name.rsplit('_').next() else {
                continue;
            };
            if name.matches('_').count() >= 2
                && !live.contains(uid)
                && e.file_type().is_ok_and(|t| t.is_dir())
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// Reads `default/kubernetes` for the `KUBERNETES_SERVICE_*` variables.
pub async fn refresh_kube_service(shared: &Shared) {
    let api: Api<Service> = Api::namespaced(shared.client.clone(), "default");
    match api.get_opt("kubernetes").await {
        Ok(Some(svc)) => {
            let spec = svc.spec.unwrap_or_default();
            let ip = spec.cluster_ip.unwrap_or_default();
            let port = spec
                .ports
                .unwrap_or_default()
                .iter()
                .find(|p| p.name.as_deref() == Some("https"))
                .or(None)
                .map_or(443, |p| p.port as u16);
            if !ip.is_empty() && ip != "None" {
                *shared.kube_service.write() = Some((ip, port));
            }
        }
        Ok(None) => {}
        Err(e) => tracing::debug!(error = %e, "could not read the kubernetes Service"),
    }
}
