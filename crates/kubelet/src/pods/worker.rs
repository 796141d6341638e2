//! One pod worker (a tokio task per pod), upstream's `syncPod`/`killPod` loop: woken by a pod
//! change, a probe result, a backoff expiry or the periodic relist, it drives the pod from
//! admission through sandbox, volumes, init containers and containers (restart policy with
//! CrashLoopBackOff), writes `pods/status` when it changed, and on deletion stops the
//! containers gracefully (preStop, SIGTERM, grace period, SIGKILL) and removes the pod.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    Container, ContainerState as K8sState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus as K8sStatus, HostIP, LifecycleHandler, Pod, PodIP,
    PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kumo_runtime::{
    ContainerConfig, ContainerState, ContainerStatus, Resources, RuntimeError, SandboxConfig,
    SandboxState, SandboxStatus,
};
use tokio::sync::{Notify, watch};
use tracing::{debug, info, warn};

use crate::context::NodeCtx;
use crate::directory::ContainerRef;
use crate::env::{self, RefCache};
use crate::events::{NORMAL, WARNING};
use crate::pods::status;
use crate::probes::{self, ProbeHandle, Target};
use crate::quantity;
use crate::volumes::PodVolumes;

const BACKOFF_INITIAL: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// A container that ran this long before exiting starts over at the initial backoff.
const BACKOFF_RESET: Duration = Duration::from_secs(600);
/// Grace period when a pod vanished from the API without graceful deletion (force delete).
const FORCE_GRACE: Duration = Duration::from_secs(2);

/// Per-container bookkeeping that the runtime does not hold.
#[derive(Debug, Default)]
struct Track {
    /// Attempt number of the next start (restartCount once started).
    next_attempt: u32,
    /// Current CrashLoopBackOff delay.
    backoff: Option<Duration>,
    /// Why the container is not running when the runtime cannot say (backoff, errors).
    waiting: Option<(String, String)>,
    image_backoff: Option<(Duration, Instant)>,
    probes: Option<ProbeHandle>,
    /// Hash of the container spec the running attempt was started from.
    spec_hash: Option<u64>,
    /// The last exit was the kubelet's own doing for a changed spec: restart at once,
    /// whatever the restart policy, like upstream.
    restart_now: bool,
}

/// Hash of a container's spec (upstream restarts a container whose definition changed).
fn spec_hash(c: &Container) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(c).unwrap_or_default().hash(&mut h);
    h.finish()
}

#[derive(Debug, Clone)]
struct Sandbox {
    id: String,
    ip: String,
}

/// The pod's containers as the runtime reports them, newest attempt first per name.
type View = HashMap<String, Vec<ContainerStatus>>;

pub struct Worker {
    ctx: Arc<NodeCtx>,
    uid: String,
    rx: watch::Receiver<Option<Arc<Pod>>>,
    wake: Arc<Notify>,
    sandbox: Option<Sandbox>,
    tracks: HashMap<String, Track>,
    volumes: PodVolumes,
    volumes_ready: bool,
    volumes_synced: Option<Instant>,
    mount_error: Option<String>,
    start_time: Option<Time>,
    /// Hash of the last status written (not the JSON itself: thousands of hollow pods).
    last_status: Option<u64>,
    admitted: Option<Result<(), (String, String)>>,
    terminal: bool,
    first_seen: Instant,
    running_reported: bool,
    /// Earliest moment a backoff (crash or image) ends, to wake for it.
    next_backoff: Option<Instant>,
    /// The last API object seen, for clean-up after a force deletion.
    last_pod: Option<Arc<Pod>>,
    /// Running when this kubelet started: admitted without checks, but its requests count.
    adopted: bool,
    /// Every init container completed once (sidecars started): later exits of sidecars no
    /// longer hold the app containers back.
    initialized: bool,
}

/// An init container with `restartPolicy: Always` (a sidecar, Kubernetes 1.29+).
fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("uid", &self.uid)
            .finish_non_exhaustive()
    }
}

fn ts(t: Option<jiff::Timestamp>) -> Option<Time> {
    t.map(Time)
}

fn pod_key(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or(""),
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.uid.as_deref().unwrap_or("")
    )
}

fn restart_policy(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.clone())
        .unwrap_or_else(|| "Always".into())
}

fn grace_of(pod: &Pod) -> Duration {
    let secs = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(30)
        .max(0);
    Duration::from_secs(secs as u64)
}

fn terminated(cs: &ContainerStatus, rt: &str) -> K8sState {
    let code = cs.exit_code.unwrap_or(0);
    K8sState {
        terminated: Some(ContainerStateTerminated {
            exit_code: code,
            reason: Some(cs.reason.clone().unwrap_or_else(|| {
                if code == 0 {
                    "Completed".into()
                } else {
                    "Error".into()
                }
            })),
            message: cs.message.clone(),
            started_at: ts(cs.started_at),
            finished_at: ts(cs.finished_at),
            container_id: Some(format!("{rt}://{}", cs.id)),
            signal: None,
        }),
        ..Default::default()
    }
}

fn waiting(reason: &str, message: Option<String>) -> K8sState {
    K8sState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.into()),
            message,
        }),
        ..Default::default()
    }
}

fn resources_of(c: &Container) -> Resources {
    Resources {
        cpu_limit_millis: quantity::container_limit(c, "cpu"),
        cpu_request_millis: Some(quantity::container_request(c, "cpu")).filter(|v| *v > 0),
        memory_limit_bytes: quantity::container_limit(c, "memory"),
    }
}

/// What the pod asks of the node for admission: (cpu millicores, memory bytes), the larger of
/// the sum of containers and the largest init container, like the scheduler.
pub fn pod_requests(pod: &Pod) -> (u64, u64) {
    let Some(spec) = pod.spec.as_ref() else {
        return (0, 0);
    };
    let sum = |n: &str| {
        spec.containers
            .iter()
            .map(|c| quantity::container_request(c, n))
            .sum::<u64>()
    };
    let max_init = |n: &str| {
        spec.init_containers
            .iter()
            .flatten()
            .map(|c| quantity::container_request(c, n))
            .max()
            .unwrap_or(0)
    };
    (
        sum("cpu").max(max_init("cpu")),
        sum("memory").max(max_init("memory")),
    )
}

fn should_restart(policy: &str, exit_code: i32, init: bool) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => exit_code != 0,
        _ => !init || exit_code != 0,
    }
}

impl Worker {
    pub fn new(
        ctx: Arc<NodeCtx>,
        uid: String,
        rx: watch::Receiver<Option<Arc<Pod>>>,
        adopt: Option<SandboxStatus>,
    ) -> Self {
        let mut w = Worker {
            ctx,
            uid,
            rx,
            wake: Arc::new(Notify::new()),
            sandbox: None,
            tracks: HashMap::new(),
            volumes: PodVolumes::default(),
            volumes_ready: false,
            volumes_synced: None,
            mount_error: None,
            start_time: None,
            last_status: None,
            admitted: None,
            terminal: false,
            first_seen: Instant::now(),
            running_reported: false,
            next_backoff: None,
            last_pod: None,
            adopted: false,
            initialized: false,
        };
        if let Some(sb) = adopt {
            info!(uid = %w.uid, sandbox = %sb.id, "adopting running pod sandbox");
            w.admitted = Some(Ok(()));
            w.adopted = true;
            w.running_reported = true;
            w.sandbox = Some(Sandbox {
                id: sb.id,
                ip: sb.ip.unwrap_or_default(),
            });
        }
        w
    }

    /// Runs until the pod is gone from this node.
    pub async fn run(mut self) {
        if let Some(sb) = self.sandbox.clone() {
            self.adopt(&sb).await;
        }
        loop {
            let pod = self.rx.borrow_and_update().clone();
            // Boxed: keeps the idle worker's future (thousands with hollow nodes) small.
            let Some(pod) = pod else {
                Box::pin(self.terminate(None, FORCE_GRACE)).await;
                return;
            };
            self.last_pod = Some(pod.clone());
            if pod.metadata.deletion_timestamp.is_some() {
                Box::pin(self.terminate(Some(&pod), grace_of(&pod))).await;
                return;
            }
            let started = Instant::now();
            let next = Box::pin(self.sync(&pod)).await;
            self.ctx
                .shared
                .metrics
                .pod_worker_duration
                .with_label_values(&["sync"])
                .observe(started.elapsed().as_secs_f64());
            tokio::select! {
                changed = self.rx.changed() => {
                    if changed.is_err() {
                        // The manager is gone (kubelet shutting down): leave pods running.
                        return;
                    }
                }
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(next) => {}
            }
        }
    }

    async fn adopt(&mut self, sb: &Sandbox) {
        let rt = &self.ctx.shared.runtime;
        if let Ok(list) = rt.list_containers(&sb.id).await {
            for cs in list {
                let t = self.tracks.entry(cs.name.clone()).or_default();
                t.next_attempt = t.next_attempt.max(cs.attempt + 1);
            }
        }
    }

    fn admit(&self, pod: &Pod) -> Result<(), (String, String)> {
        let ctx = &self.ctx;
        if let Some(sel) = pod.spec.as_ref().and_then(|s| s.node_selector.as_ref())
            && sel.iter().any(|(k, v)| ctx.labels.get(k) != Some(v))
        {
            return Err((
                "NodeAffinity".into(),
                "Pod Predicate NodeAffinity failed".into(),
            ));
        }
        let (cpu, mem) = pod_requests(pod);
        let mut admitted = ctx.admitted.lock();
        let used_pods = admitted.len() as u64;
        let (used_cpu, used_mem) = admitted
            .values()
            .fold((0, 0), |(c, m), (c2, m2)| (c + c2, m + m2));
        let alloc = ctx.allocatable;
        if used_pods + 1 > alloc.pods {
            return Err((
                "OutOfpods".into(),
                format!(
                    "Node didn't have enough resource: pods, requested: 1, used: {used_pods}, capacity: {}",
                    alloc.pods
                ),
            ));
        }
        if cpu > 0 && used_cpu + cpu > alloc.cpu_millis {
            return Err((
                "OutOfcpu".into(),
                format!(
                    "Node didn't have enough resource: cpu, requested: {cpu}, used: {used_cpu}, capacity: {}",
                    alloc.cpu_millis
                ),
            ));
        }
        if mem > 0 && used_mem + mem > alloc.memory_bytes {
            return Err((
                "OutOfmemory".into(),
                format!(
                    "Node didn't have enough resource: memory, requested: {mem}, used: {used_mem}, capacity: {}",
                    alloc.memory_bytes
                ),
            ));
        }
        admitted.insert(self.uid.clone(), (cpu, mem));
        Ok(())
    }

    fn release(&self) {
        self.ctx.admitted.lock().remove(&self.uid);
    }

    fn sandbox_config(&self, pod: &Pod) -> SandboxConfig {
        let ctx = &self.ctx;
        let spec = pod.spec.as_ref();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
        let hostname = spec
            .and_then(|s| s.hostname.clone())
            .unwrap_or_else(|| name.clone());
        let policy = spec
            .and_then(|s| s.dns_policy.clone())
            .unwrap_or_else(|| "ClusterFirst".into());
        let (host_servers, host_searches) = ctx.shared.host_dns.clone();
        let (mut servers, mut searches) = match policy.as_str() {
            "None" => (Vec::new(), Vec::new()),
            "Default" => (host_servers, host_searches),
            "ClusterFirstWithHostNet" | "ClusterFirst"
                if (policy == "ClusterFirst" && host_network)
                    || ctx.shared.cluster_dns.is_empty() =>
            {
                (host_servers, host_searches)
            }
            _ => {
                let d = &ctx.shared.cluster_domain;
                let mut s = vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.clone()];
                s.extend(host_searches);
                (ctx.shared.cluster_dns.clone(), s)
            }
        };
        if let Some(dc) = spec.and_then(|s| s.dns_config.as_ref()) {
            servers.extend(dc.nameservers.iter().flatten().cloned());
            searches.extend(dc.searches.iter().flatten().cloned());
        }
        let mut labels = std::collections::BTreeMap::new();
        labels.insert("io.kubernetes.pod.name".to_string(), name.clone());
        labels.insert("io.kubernetes.pod.namespace".to_string(), ns.clone());
        labels.insert("io.kubernetes.pod.uid".to_string(), self.uid.clone());
        let containers = spec.map(|s| s.containers.as_slice()).unwrap_or(&[]);
        let all_limited = |n: &str| {
            containers
                .iter()
                .all(|c| quantity::container_limit(c, n).is_some())
        };
        let resources = Resources {
            cpu_limit_millis: all_limited("cpu").then(|| {
                containers
                    .iter()
                    .filter_map(|c| quantity::container_limit(c, "cpu"))
                    .sum()
            }),
            cpu_request_millis: Some(pod_requests(pod).0).filter(|v| *v > 0),
            memory_limit_bytes: all_limited("memory").then(|| {
                containers
                    .iter()
                    .filter_map(|c| quantity::container_limit(c, "memory"))
                    .sum()
            }),
        };
        SandboxConfig {
            pod_uid: self.uid.clone(),
            namespace: ns.clone(),
            name: name.clone(),
            hostname,
            host_network,
            log_directory: ctx.pod_log_dir(&ns, &name, &self.uid),
            dns_servers: servers,
            dns_searches: searches,
            labels,
            resources,
        }
    }

    fn write_hosts(&self, pod: &Pod, ip: &str) {
        if self.ctx.shared.sim {
            return;
        }
        let spec = pod.spec.as_ref();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let hostname = spec
            .and_then(|s| s.hostname.clone())
            .unwrap_or_else(|| name.clone());
        let mut text = String::from(
            "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
        );
        match spec.and_then(|s| s.subdomain.clone()) {
            Some(sub) if !sub.is_empty() => {
                let ns = pod.metadata.namespace.clone().unwrap_or_default();
                text.push_str(&format!(
                    "{ip}\t{hostname}.{sub}.{ns}.svc.{}\t{hostname}\n",
                    self.ctx.shared.cluster_domain
                ));
            }
            _ => text.push_str(&format!("{ip}\t{hostname}\n")),
        }
        for alias in spec
            .and_then(|s| s.host_aliases.as_ref())
            .into_iter()
            .flatten()
        {
            text.push_str(&format!(
                "\n# Entries added by HostAliases.\n{}\t{}\n",
                alias.ip,
                alias.hostnames.clone().unwrap_or_default().join("\t")
            ));
        }
        let dir = self.ctx.pod_dir(&self.uid);
        if let Err(e) =
            std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(dir.join("etc-hosts"), text))
        {
            warn!(uid = %self.uid, error = %e, "could not write the pod's hosts file");
        }
    }

    async fn ensure_sandbox(&mut self, pod: &Arc<Pod>) -> Result<Sandbox, String> {
        let rt = self.ctx.shared.runtime.clone();
        if let Some(sb) = self.sandbox.clone() {
            match rt.sandbox_status(&sb.id).await {
                Ok(st) if st.state == SandboxState::Ready => return Ok(sb),
                Ok(_) | Err(RuntimeError::NotFound(_)) => {
                    warn!(pod = %pod_key(pod), "pod sandbox is not ready; recreating it");
                    let _ = rt.stop_sandbox(&sb.id).await;
                    let _ = rt.remove_sandbox(&sb.id).await;
                    for t in self.tracks.values_mut() {
                        t.probes = None;
                    }
                    self.sandbox = None;
                    // A new sandbox runs the init containers again, like upstream.
                    self.initialized = false;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        let cfg = self.sandbox_config(pod);
        if !self.ctx.shared.sim {
            let _ = std::fs::create_dir_all(&cfg.log_directory);
        }
        let id = rt.run_sandbox(&cfg).await.map_err(|e| e.to_string())?;
        let ip = rt
            .sandbox_status(&id)
            .await
            .ok()
            .and_then(|s| s.ip)
            .unwrap_or_else(|| self.ctx.node_ip.clone());
        self.write_hosts(pod, &ip);
        let sb = Sandbox { id, ip };
        self.sandbox = Some(sb.clone());
        Ok(sb)
    }

    async fn view(&self, sb: &Sandbox) -> View {
        let mut view: View = HashMap::new();
        match self.ctx.shared.runtime.list_containers(&sb.id).await {
            Ok(list) => {
                for cs in list {
                    view.entry(cs.name.clone()).or_default().push(cs);
                }
            }
            Err(e) => debug!(uid = %self.uid, error = %e, "list containers failed"),
        }
        for v in view.values_mut() {
            v.sort_by_key(|c| std::cmp::Reverse(c.attempt));
        }
        view
    }

    /// One sync; returns how long to sleep before the next one at most.
    async fn sync(&mut self, pod: &Arc<Pod>) -> Duration {
        let ctx = self.ctx.clone();
        let sync_freq = ctx.shared.sync_frequency;
        if self.start_time.is_none() {
            self.start_time = pod
                .status
                .as_ref()
                .and_then(|s| s.start_time.clone())
                .or_else(|| Some(Time(jiff::Timestamp::now())));
        }
        if self.terminal {
            return sync_freq;
        }
        if std::mem::take(&mut self.adopted) {
            self.ctx
                .admitted
                .lock()
                .insert(self.uid.clone(), pod_requests(pod));
        }
        if self.admitted.is_none() {
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            if matches!(phase, Some("Succeeded") | Some("Failed")) {
                // Finished before this kubelet (re)started: nothing to run.
                self.terminal = true;
                return sync_freq;
            }
            self.admitted = Some(self.admit(pod));
        }
        if let Some(Err((reason, message))) = self.admitted.clone() {
            ctx.recorder
                .pod(pod, None, WARNING, &reason, message.clone());
            let st = PodStatus {
                phase: Some("Failed".into()),
                reason: Some(reason),
                message: Some(message),
                start_time: self.start_time.clone(),
                host_ip: Some(ctx.node_ip.clone()),
                host_ips: Some(vec![HostIP {
                    ip: ctx.node_ip.clone(),
                }]),
                qos_class: Some(status::qos_class(pod).into()),
                ..Default::default()
            };
            self.patch_status(pod, st).await;
            self.terminal = true;
            return sync_freq;
        }
        if let Some(left) = self.deadline_left(pod)
            && left.is_zero()
        {
            self.deadline_exceeded(pod).await;
            return sync_freq;
        }
        let sb = match self.ensure_sandbox(pod).await {
            Ok(sb) => sb,
            Err(e) => {
                ctx.recorder.pod(
                    pod,
                    None,
                    WARNING,
                    "FailedCreatePodSandBox",
                    format!("Failed to create pod sandbox: {e}"),
                );
                return Duration::from_secs(2);
            }
        };
        let mut refs = RefCache::new(
            ctx.shared.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        if !ctx.shared.sim
            && self
                .volumes_synced
                .is_none_or(|t| t.elapsed() >= sync_freq || !self.volumes_ready)
        {
            match self.volumes.sync(&ctx, pod, &mut refs, &sb.ip).await {
                Ok(()) => {
                    self.volumes_ready = true;
                    self.mount_error = None;
                }
                Err(e) => {
                    let msg = format!(
                        "MountVolume.SetUp failed for volume \"{}\" : {}",
                        e.volume, e.message
                    );
                    if self.mount_error.as_deref() != Some(msg.as_str()) {
                        ctx.recorder
                            .pod(pod, None, WARNING, "FailedMount", msg.clone());
                    }
                    self.mount_error = Some(msg);
                }
            }
            self.volumes_synced = Some(Instant::now());
        }
        if ctx.shared.sim {
            self.volumes_ready = true;
        }
        self.next_backoff = None;
        let mut view = self.view(&sb).await;
        let policy = restart_policy(pod);
        let spec = pod.spec.clone().unwrap_or_default();
        let mut init_failed = false;
        let mut init_done = true;
        let mut acted = false;
        if self.volumes_ready {
            for ic in spec.init_containers.iter().flatten() {
                let latest = view.get(&ic.name).and_then(|v| v.first()).cloned();
                if is_sidecar(ic) {
                    // A sidecar (init container with restartPolicy Always) runs for the pod's
                    // life: the next init container starts once it has started; it is
                    // restarted whenever it exits.
                    let ready = match latest {
                        None => {
                            acted |= self.start(pod, ic, &sb, &mut refs).await;
                            false
                        }
                        Some(cs) if cs.state == ContainerState::Exited => {
                            acted |= self
                                .restart_with_backoff(pod, ic, &cs, &sb, &mut refs)
                                .await;
                            false
                        }
                        Some(cs) if cs.state == ContainerState::Running => {
                            if self.definition_changed(pod, ic, &cs).await
                                || self.check_probes(pod, ic, &cs).await
                            {
                                acted = true;
                                false
                            } else {
                                self.tracks
                                    .get(&ic.name)
                                    .and_then(|t| t.probes.as_ref())
                                    .is_none_or(|h| h.state().started)
                            }
                        }
                        Some(_) => false,
                    };
                    if ready || self.initialized {
                        continue;
                    }
                    init_done = false;
                    break;
                }
                if self.initialized {
                    continue;
                }
                match latest {
                    None => {
                        acted |= self.start(pod, ic, &sb, &mut refs).await;
                        init_done = false;
                        break;
                    }
                    Some(cs) if cs.state != ContainerState::Exited => {
                        init_done = false;
                        break;
                    }
                    Some(cs) if cs.exit_code == Some(0) => continue,
                    Some(cs) => {
                        init_done = false;
                        if should_restart(&policy, cs.exit_code.unwrap_or(1), true) {
                            acted |= self
                                .restart_with_backoff(pod, ic, &cs, &sb, &mut refs)
                                .await;
                        } else {
                            init_failed = true;
                        }
                        break;
                    }
                }
            }
            if init_done {
                self.initialized = true;
                for c in &spec.containers {
                    let latest = view.get(&c.name).and_then(|v| v.first()).cloned();
                    match latest {
                        None => acted |= self.start(pod, c, &sb, &mut refs).await,
                        Some(cs) if cs.state == ContainerState::Exited => {
                            let forced = self
                                .tracks
                                .get_mut(&c.name)
                                .is_some_and(|t| std::mem::take(&mut t.restart_now));
                            if forced {
                                acted |= self.start(pod, c, &sb, &mut refs).await;
                            } else if should_restart(&policy, cs.exit_code.unwrap_or(1), false) {
                                acted |=
                                    self.restart_with_backoff(pod, c, &cs, &sb, &mut refs).await;
                            } else if let Some(t) = self.tracks.get_mut(&c.name) {
                                t.waiting = None;
                                t.probes = None;
                            }
                        }
                        Some(cs) if cs.state == ContainerState::Running => {
                            if self.definition_changed(pod, c, &cs).await {
                                acted = true;
                            } else {
                                acted |= self.check_probes(pod, c, &cs).await;
                            }
                        }
                        Some(_) => {}
                    }
                }
            }
        }
        if acted {
            view = self.view(&sb).await;
        }
        // Container GC: keep the current and the previous attempt of each container (what
        // status `lastState` and `kubectl logs --previous` need); older ones go.
        for list in view.values_mut() {
            for old in list.drain(2.min(list.len())..) {
                if old.state == ContainerState::Exited
                    && let Err(e) = ctx.shared.runtime.remove_container(&old.id).await
                {
                    debug!(container = %old.id, error = %e, "could not remove an old attempt");
                }
            }
        }
        let st = self.build_status(pod, &sb, &view, init_failed);
        let phase = st.phase.clone().unwrap_or_default();
        if !self.running_reported && phase == "Running" {
            self.running_reported = true;
            ctx.shared
                .metrics
                .pod_start_duration
                .observe(self.first_seen.elapsed().as_secs_f64());
        }
        self.publish(pod, &view);
        self.patch_status(pod, st).await;
        if phase == "Succeeded" || phase == "Failed" {
            info!(pod = %pod_key(pod), phase, "pod finished; stopping its sandbox");
            for t in self.tracks.values_mut() {
                t.probes = None;
            }
            let _ = ctx.shared.runtime.stop_sandbox(&sb.id).await;
            self.release();
            self.terminal = true;
            return sync_freq;
        }
        // Hollow containers only exit when scripted to: poll those every second, the rest
        // on the periodic resync.
        let scripted_exit = pod
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(kumo_runtime::sim::EXIT_AFTER_ANNOTATION));
        let mut next = if ctx.shared.sim && scripted_exit {
            Duration::from_secs(1).min(sync_freq)
        } else {
            ctx.shared.pleg_period.min(sync_freq)
        };
        if let Some(at) = self.next_backoff {
            next =
                next.min(at.saturating_duration_since(Instant::now()) + Duration::from_millis(10));
        }
        if !self.volumes_ready {
            next = next.min(Duration::from_secs(2));
        }
        if let Some(left) = self.deadline_left(pod) {
            next = next.min(left + Duration::from_millis(10));
        }
        next
    }

    /// Time left before `spec.activeDeadlineSeconds` (counted from `status.startTime`).
    fn deadline_left(&self, pod: &Pod) -> Option<Duration> {
        let secs = pod.spec.as_ref()?.active_deadline_seconds?;
        let start = self.start_time.as_ref()?.0;
        let end = start
            .checked_add(jiff::SignedDuration::from_secs(secs.max(0)))
            .ok()?;
        Some(
            end.duration_since(jiff::Timestamp::now())
                .try_into()
                .unwrap_or(Duration::ZERO),
        )
    }

    /// `activeDeadlineSeconds` passed: stop everything and fail the pod like upstream.
    async fn deadline_exceeded(&mut self, pod: &Arc<Pod>) {
        let ctx = self.ctx.clone();
        let msg = "Pod was active on the node longer than the specified deadline".to_string();
        ctx.recorder
            .pod(pod, None, NORMAL, "DeadlineExceeded", msg.clone());
        for t in self.tracks.values_mut() {
            t.probes = None;
        }
        let mut st = PodStatus::default();
        if let Some(sb) = self.sandbox.clone() {
            let view = self.view(&sb).await;
            for cs in view.values().filter_map(|l| l.first()) {
                if cs.state == ContainerState::Running {
                    let _ = ctx
                        .shared
                        .runtime
                        .stop_container(&cs.id, grace_of(pod))
                        .await;
                }
            }
            let view = self.view(&sb).await;
            st = self.build_status(pod, &sb, &view, false);
            let _ = ctx.shared.runtime.stop_sandbox(&sb.id).await;
        }
        st.phase = Some("Failed".into());
        st.reason = Some("DeadlineExceeded".into());
        st.message = Some(msg);
        st.start_time = self.start_time.clone();
        self.patch_status(pod, st).await;
        self.release();
        self.terminal = true;
    }

    /// Publishes the container table for the kubelet API server.
    fn publish(&self, pod: &Pod, view: &View) {
        let mut table = HashMap::new();
        for (name, list) in view {
            let latest = list.first();
            table.insert(
                name.clone(),
                ContainerRef {
                    container_id: latest.map(|c| c.id.clone()),
                    log_path: latest.map(|c| c.log_path.clone()),
                    previous_log_path: list.get(1).map(|c| c.log_path.clone()),
                    running: latest.is_some_and(|c| c.state == ContainerState::Running),
                },
            );
        }
        self.ctx.directory.set_containers(pod, table);
    }

    fn set_waiting(&mut self, name: &str, reason: &str, message: String) {
        self.tracks.entry(name.to_string()).or_default().waiting =
            Some((reason.to_string(), message));
    }

    async fn restart_with_backoff(
        &mut self,
        pod: &Arc<Pod>,
        c: &Container,
        cs: &ContainerStatus,
        sb: &Sandbox,
        refs: &mut RefCache,
    ) -> bool {
        let now = jiff::Timestamp::now();
        let finished = cs.finished_at.unwrap_or(now);
        let since_exit = now.duration_since(finished).unsigned_abs();
        let ran = match (cs.started_at, cs.finished_at) {
            (Some(s), Some(f)) => f.duration_since(s).unsigned_abs(),
            _ => Duration::ZERO,
        };
        let track = self.tracks.entry(c.name.clone()).or_default();
        track.probes = None;
        if ran >= BACKOFF_RESET {
            track.backoff = None;
        }
        if let Some(delay) = track.backoff
            && since_exit < delay
        {
            let msg = format!(
                "back-off {}s restarting failed container={} pod={}",
                delay.as_secs(),
                c.name,
                pod_key(pod)
            );
            let first = track
                .waiting
                .as_ref()
                .is_none_or(|(r, m)| r != "CrashLoopBackOff" || *m != msg);
            track.waiting = Some(("CrashLoopBackOff".into(), msg));
            let at = Instant::now() + (delay - since_exit);
            self.next_backoff = Some(self.next_backoff.map_or(at, |n| n.min(at)));
            if first {
                self.ctx.recorder.pod(
                    pod,
                    Some(&c.name),
                    WARNING,
                    "BackOff",
                    format!(
                        "Back-off restarting failed container {} in pod {}",
                        c.name,
                        pod_key(pod)
                    ),
                );
            }
            return false;
        }
        let started = self.start(pod, c, sb, refs).await;
        if started {
            self.ctx.shared.metrics.restarted_containers.inc();
            let track = self.tracks.entry(c.name.clone()).or_default();
            track.backoff = Some(match track.backoff {
                None => BACKOFF_INITIAL,
                Some(d) => (d * 2).min(BACKOFF_MAX),
            });
        }
        started
    }

    /// Restarts a running container whose spec changed (e.g. `kubectl set image` on a pod);
    /// true when it was stopped.
    async fn definition_changed(
        &mut self,
        pod: &Arc<Pod>,
        c: &Container,
        cs: &ContainerStatus,
    ) -> bool {
        let now = spec_hash(c);
        let track = self.tracks.entry(c.name.clone()).or_default();
        match track.spec_hash {
            None => {
                // Adopted after a kubelet restart: take the current spec as its own.
                track.spec_hash = Some(now);
                false
            }
            Some(h) if h == now => false,
            Some(_) => {
                track.probes = None;
                track.restart_now = true;
                self.ctx.recorder.pod(
                    pod,
                    Some(&c.name),
                    NORMAL,
                    "Killing",
                    format!("Container {} definition changed, will be restarted", c.name),
                );
                if let Err(e) = self
                    .ctx
                    .shared
                    .runtime
                    .stop_container(&cs.id, grace_of(pod))
                    .await
                {
                    warn!(pod = %pod_key(pod), container = %c.name, error = %e, "stop after a spec change");
                }
                true
            }
        }
    }

    /// Acts on probe verdicts of a running container; true when it was killed.
    async fn check_probes(&mut self, pod: &Arc<Pod>, c: &Container, cs: &ContainerStatus) -> bool {
        let Some(track) = self.tracks.get_mut(&c.name) else {
            return false;
        };
        let Some(handle) = track.probes.as_ref() else {
            if c.liveness_probe.is_some()
                || c.readiness_probe.is_some()
                || c.startup_probe.is_some()
            {
                // Adopted after a kubelet restart: probe the running attempt again.
                let target = Target {
                    runtime: self.ctx.shared.runtime.clone(),
                    container_id: cs.id.clone(),
                    pod_ip: self
                        .sandbox
                        .as_ref()
                        .map(|s| s.ip.clone())
                        .unwrap_or_default(),
                    container: c.clone(),
                };
                track.probes = Some(probes::spawn(&self.ctx, pod, target, &self.wake));
            }
            return false;
        };
        if handle.container_id != cs.id {
            track.probes = None;
            return false;
        }
        let st = handle.state();
        let verdict = st
            .liveness_failed
            .map(|m| ("liveness", m))
            .or(st.startup_failed.map(|m| ("startup", m)));
        let Some((which, _msg)) = verdict else {
            return false;
        };
        track.probes = None;
        self.ctx.recorder.pod(
            pod,
            Some(&c.name),
            NORMAL,
            "Killing",
            format!(
                "Container {} failed {which} probe, will be restarted",
                c.name
            ),
        );
        let grace = Duration::from_secs(
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
                .unwrap_or(30)
                .max(0) as u64,
        );
        if let Err(e) = self.ctx.shared.runtime.stop_container(&cs.id, grace).await {
            warn!(pod = %pod_key(pod), container = %c.name, error = %e, "stop after failed probe");
        }
        true
    }

    /// Creates and starts the next attempt of `c`; false when it could not (waiting reason
    /// recorded).
    async fn start(
        &mut self,
        pod: &Arc<Pod>,
        c: &Container,
        sb: &Sandbox,
        refs: &mut RefCache,
    ) -> bool {
        let ctx = self.ctx.clone();
        let rt = ctx.shared.runtime.clone();
        let track = self.tracks.entry(c.name.clone()).or_default();
        let image = c.image.clone().unwrap_or_default();
        if let Some((_, until)) = track.image_backoff
            && Instant::now() < until
        {
            let msg = format!("Back-off pulling image \"{image}\"");
            track.waiting = Some(("ImagePullBackOff".into(), msg));
            self.next_backoff = Some(self.next_backoff.map_or(until, |n| n.min(until)));
            return false;
        }
        match rt.ensure_image(&image).await {
            Ok(_) => track.image_backoff = None,
            Err(e) => {
                let delay = track
                    .image_backoff
                    .map_or(BACKOFF_INITIAL, |(d, _)| (d * 2).min(BACKOFF_MAX));
                track.image_backoff = Some((delay, Instant::now() + delay));
                let msg = match &e {
                    RuntimeError::ImageNotFound(_) => format!(
                        "failed to pull and unpack image \"{image}\": image not found in the node's image store"
                    ),
                    other => format!("failed to pull image \"{image}\": {other}"),
                };
                track.waiting = Some(("ErrImagePull".into(), msg.clone()));
                ctx.recorder.pod(
                    pod,
                    Some(&c.name),
                    WARNING,
                    "Failed",
                    format!("Failed to pull image \"{image}\": {msg}"),
                );
                ctx.recorder.pod(
                    pod,
                    Some(&c.name),
                    WARNING,
                    "Failed",
                    "Error: ErrImagePull".into(),
                );
                let at = Instant::now() + delay;
                self.next_backoff = Some(self.next_backoff.map_or(at, |n| n.min(at)));
                return false;
            }
        };
        let attempt = track.next_attempt;
        let env = match env::container_env(&ctx, pod, c, &sb.ip, refs).await {
            Ok(env) => env,
            Err(msg) => {
                self.config_error(pod, &c.name, msg);
                return false;
            }
        };
        let pod_dir = ctx.pod_dir(&self.uid);
        let host_network = pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false);
        let mounts = if ctx.shared.sim {
            Vec::new()
        } else {
            match self.volumes.mounts(&pod_dir, c, !host_network) {
                Ok(m) => m,
                Err(msg) => {
                    self.config_error(pod, &c.name, msg);
                    return false;
                }
            }
        };
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let log_dir: PathBuf = ctx.pod_log_dir(&ns, &name, &self.uid).join(&c.name);
        if !ctx.shared.sim {
            let _ = std::fs::create_dir_all(&log_dir);
            if attempt >= 2 {
                let _ = std::fs::remove_file(log_dir.join(format!("{}.log", attempt - 2)));
            }
        }
        let sec = c.security_context.as_ref();
        let pod_sec = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
        let mut labels = std::collections::BTreeMap::new();
        labels.insert("io.kubernetes.container.name".to_string(), c.name.clone());
        labels.insert("io.kubernetes.pod.name".to_string(), name.clone());
        labels.insert("io.kubernetes.pod.namespace".to_string(), ns.clone());
        labels.insert("io.kubernetes.pod.uid".to_string(), self.uid.clone());
        let annotations = pod
            .metadata
            .annotations
            .iter()
            .flatten()
            .filter(|(k, _)| k.starts_with("sim.kumo.io/"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let command = env::expand_all(c.command.as_deref().unwrap_or(&[]), &env);
        let args = env::expand_all(c.args.as_deref().unwrap_or(&[]), &env);
        let config = ContainerConfig {
            name: c.name.clone(),
            attempt,
            image: image.clone(),
            command,
            args,
            env,
            working_dir: c.working_dir.clone(),
            mounts,
            log_path: log_dir.join(format!("{attempt}.log")),
            resources: resources_of(c),
            tty: c.tty.unwrap_or(false),
            stdin: c.stdin.unwrap_or(false),
            stdin_once: c.stdin_once.unwrap_or(false),
            privileged: sec.and_then(|s| s.privileged).unwrap_or(false),
            run_as_user: sec
                .and_then(|s| s.run_as_user)
                .or_else(|| pod_sec.and_then(|s| s.run_as_user))
                .and_then(|u| u32::try_from(u).ok()),
            run_as_group: sec
                .and_then(|s| s.run_as_group)
                .or_else(|| pod_sec.and_then(|s| s.run_as_group))
                .and_then(|u| u32::try_from(u).ok()),
            labels,
            annotations,
        };
        ctx.recorder.pod(
            pod,
            Some(&c.name),
            NORMAL,
            "Pulled",
            format!("Container image \"{image}\" already present on machine"),
        );
        let sandbox_cfg = self.sandbox_config(pod);
        let id = match rt.create_container(&sb.id, &config, &sandbox_cfg).await {
            Ok(id) => id,
            Err(e) => {
                let msg = e.to_string();
                self.set_waiting(&c.name, "CreateContainerError", msg.clone());
                ctx.recorder.pod(
                    pod,
                    Some(&c.name),
                    WARNING,
                    "Failed",
                    format!("Error: {msg}"),
                );
                return false;
            }
        };
        ctx.recorder.pod(
            pod,
            Some(&c.name),
            NORMAL,
            "Created",
            format!("Created container: {}", c.name),
        );
        if let Err(e) = rt.start_container(&id).await {
            let msg = e.to_string();
            self.set_waiting(&c.name, "RunContainerError", msg.clone());
            ctx.recorder.pod(
                pod,
                Some(&c.name),
                WARNING,
                "Failed",
                format!("Error: {msg}"),
            );
            let t = self.tracks.entry(c.name.clone()).or_default();
            t.next_attempt = attempt + 1;
            return false;
        }
        ctx.recorder.pod(
            pod,
            Some(&c.name),
            NORMAL,
            "Started",
            format!("Started container {}", c.name),
        );
        let target = Target {
            runtime: rt.clone(),
            container_id: id.clone(),
            pod_ip: sb.ip.clone(),
            container: c.clone(),
        };
        let handle = (c.liveness_probe.is_some()
            || c.readiness_probe.is_some()
            || c.startup_probe.is_some())
        .then(|| probes::spawn(&ctx, pod, target, &self.wake));
        let t = self.tracks.entry(c.name.clone()).or_default();
        t.next_attempt = attempt + 1;
        t.waiting = None;
        t.probes = handle;
        t.spec_hash = Some(spec_hash(c));
        debug!(pod = %pod_key(pod), container = %c.name, attempt, "started container");
        true
    }

    fn config_error(&mut self, pod: &Pod, container: &str, msg: String) {
        self.set_waiting(container, "CreateContainerConfigError", msg.clone());
        self.ctx.recorder.pod(
            pod,
            Some(container),
            WARNING,
            "Failed",
            format!("Error: {msg}"),
        );
    }

    fn container_status(
        &self,
        c: &Container,
        list: Option<&Vec<ContainerStatus>>,
        pending_reason: &str,
    ) -> K8sStatus {
        let rt = &self.ctx.shared.runtime_name;
        let latest = list.and_then(|l| l.first());
        let prev = list.and_then(|l| l.get(1));
        let track = self.tracks.get(&c.name);
        let running = latest.is_some_and(|cs| cs.state == ContainerState::Running);
        let state = match latest {
            Some(cs) if cs.state == ContainerState::Running => K8sState {
                running: Some(ContainerStateRunning {
                    started_at: ts(cs.started_at),
                }),
                ..Default::default()
            },
            _ => match track.and_then(|t| t.waiting.clone()) {
                Some((reason, msg)) => waiting(&reason, Some(msg)),
                None => match latest {
                    Some(cs) if cs.state == ContainerState::Exited => terminated(cs, rt),
                    Some(_) => waiting("ContainerCreating", None),
                    None => waiting(pending_reason, None),
                },
            },
        };
        let last_state = if state.waiting.is_some()
            && let Some(cs) = latest.filter(|cs| cs.state == ContainerState::Exited)
        {
            Some(terminated(cs, rt))
        } else {
            Some(
                prev.filter(|cs| cs.state == ContainerState::Exited)
                    .map(|cs| terminated(cs, rt))
                    .unwrap_or_default(),
            )
        };
        let probe = track
            .and_then(|t| t.probes.as_ref())
            .filter(|h| latest.is_some_and(|cs| cs.id == h.container_id))
            .map(ProbeHandle::state);
        let (started, ready) = match probe {
            Some(p) => (running && p.started, running && p.started && p.ready),
            None => (
                running,
                running && c.readiness_probe.is_none() && c.startup_probe.is_none(),
            ),
        };
        K8sStatus {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            image_id: latest.map(|cs| cs.image_id.clone()).unwrap_or_default(),
            container_id: latest.map(|cs| format!("{rt}://{}", cs.id)),
            ready,
            started: Some(started),
            restart_count: latest.map_or(0, |cs| cs.attempt as i32),
            state: Some(state),
            last_state,
            ..Default::default()
        }
    }

    fn build_status(&self, pod: &Pod, sb: &Sandbox, view: &View, init_failed: bool) -> PodStatus {
        let ctx = &self.ctx;
        let spec = pod.spec.clone().unwrap_or_default();
        let prev = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
        let inits: Vec<K8sStatus> = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| self.container_status(c, view.get(&c.name), "PodInitializing"))
            .collect();
        let sidecar = |name: &str| {
            spec.init_containers
                .iter()
                .flatten()
                .any(|c| c.name == name && is_sidecar(c))
        };
        let init_incomplete: Vec<String> = inits
            .iter()
            .filter(|s| {
                if sidecar(&s.name) {
                    return s.started != Some(true);
                }
                s.state
                    .as_ref()
                    .and_then(|st| st.terminated.as_ref())
                    .is_none_or(|t| t.exit_code != 0)
            })
            .map(|s| s.name.clone())
            .collect();
        // Sidecars do not decide the phase: their status is "running", never "completed".
        let regular_inits: Vec<K8sStatus> = inits
            .iter()
            .filter(|s| !sidecar(&s.name))
            .cloned()
            .collect();
        let app_pending = if init_incomplete.is_empty() {
            "ContainerCreating"
        } else {
            "PodInitializing"
        };
        let containers: Vec<K8sStatus> = spec
            .containers
            .iter()
            .map(|c| self.container_status(c, view.get(&c.name), app_pending))
            .collect();
        let policy = restart_policy(pod);
        let phase = if init_incomplete.is_empty() {
            status::phase(&policy, &[], &containers, init_failed)
        } else {
            status::phase(&policy, &regular_inits, &containers, init_failed)
        };
        let phase = if !init_incomplete.is_empty() && phase != "Failed" {
            "Pending"
        } else {
            phase
        };
        let unready: Vec<String> = containers
            .iter()
            .filter(|s| !s.ready)
            .map(|s| s.name.clone())
            .collect();
        let mut conditions = Vec::new();
        conditions.push(status::condition(
            prev,
            "PodReadyToStartContainers",
            phase != "Succeeded" && phase != "Failed",
            None,
            None,
        ));
        conditions.push(if init_incomplete.is_empty() {
            status::condition(prev, "Initialized", true, None, None)
        } else {
            status::condition(
                prev,
                "Initialized",
                false,
                Some("ContainersNotInitialized"),
                Some(format!(
                    "containers with incomplete status: [{}]",
                    init_incomplete.join(" ")
                )),
            )
        });
        let gates_unready: Vec<String> = spec
            .readiness_gates
            .iter()
            .flatten()
            .filter(|g| {
                !prev
                    .into_iter()
                    .flatten()
                    .any(|c| c.type_ == g.condition_type && c.status == "True")
            })
            .map(|g| g.condition_type.clone())
            .collect();
        let (ready, reason, message) = if phase == "Succeeded" {
            (false, Some("PodCompleted"), None)
        } else if !unready.is_empty() {
            (
                false,
                Some("ContainersNotReady"),
                Some(format!(
                    "containers with unready status: [{}]",
                    unready.join(" ")
                )),
            )
        } else if !gates_unready.is_empty() {
            (
                false,
                Some("ReadinessGatesNotReady"),
                Some(format!(
                    "corresponding condition of pod readiness gate \"{}\" does not exist.",
                    gates_unready[0]
                )),
            )
        } else {
            (true, None, None)
        };
        let containers_ready = unready.is_empty() && phase != "Succeeded";
        conditions.push(if containers_ready {
            status::condition(prev, "ContainersReady", true, None, None)
        } else {
            status::condition(
                prev,
                "ContainersReady",
                false,
                reason.or(Some("ContainersNotReady")),
                message.clone(),
            )
        });
        conditions.push(status::condition(prev, "Ready", ready, reason, message));
        // Keep conditions others own (PodScheduled, DisruptionTarget, readiness gates).
        for c in prev.into_iter().flatten() {
            if !conditions.iter().any(|x| x.type_ == c.type_) {
                conditions.push(c.clone());
            }
        }
        let pod_ip = (!sb.ip.is_empty()).then(|| sb.ip.clone());
        PodStatus {
            phase: Some(phase.into()),
            conditions: Some(conditions),
            container_statuses: Some(containers),
            init_container_statuses: (!inits.is_empty()).then_some(inits),
            host_ip: Some(ctx.node_ip.clone()),
            host_ips: Some(vec![HostIP {
                ip: ctx.node_ip.clone(),
            }]),
            pod_ips: pod_ip.clone().map(|ip| vec![PodIP { ip }]),
            pod_ip,
            start_time: self.start_time.clone(),
            qos_class: Some(status::qos_class(pod).into()),
            ..Default::default()
        }
    }

    async fn patch_status(&mut self, pod: &Pod, st: PodStatus) {
        let Ok(mut value) = serde_json::to_value(&st) else {
            return;
        };
        if let Some(obj) = value.as_object_mut() {
            // Clear what a previous status set and this one does not.
            for key in ["reason", "message"] {
                obj.entry(key).or_insert(serde_json::Value::Null);
            }
        }
        let hash = {
            use std::hash::{Hash as _, Hasher as _};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            value.to_string().hash(&mut h);
            h.finish()
        };
        if self.last_status == Some(hash) {
            return;
        }
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.ctx.shared.client.clone(), &ns);
        let patch = serde_json::json!({
            "metadata": {"uid": self.uid},
            "status": value,
        });
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => self.last_status = Some(hash),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {
                debug!(pod = %pod_key(pod), "pod is gone; status not written");
            }
            Err(e) => warn!(pod = %pod_key(pod), error = %e, "could not update pod status"),
        }
    }

    async fn run_pre_stop(
        &self,
        pod: &Pod,
        c: &Container,
        h: &LifecycleHandler,
        id: &str,
        budget: Duration,
    ) {
        let target = Target {
            runtime: self.ctx.shared.runtime.clone(),
            container_id: id.to_string(),
            pod_ip: self
                .sandbox
                .as_ref()
                .map(|s| s.ip.clone())
                .unwrap_or_default(),
            container: c.clone(),
        };
        let result = if let Some(e) = &h.exec {
            probes::exec(&target, e.command.as_deref().unwrap_or(&[]), budget).await
        } else if let Some(g) = &h.http_get {
            probes::http_get(&target, g, budget).await
        } else if let Some(s) = &h.sleep {
            tokio::time::sleep(Duration::from_secs(s.seconds.max(0) as u64).min(budget)).await;
            Ok(())
        } else {
            Ok(())
        };
        if let Err(msg) = result {
            self.ctx.recorder.pod(
                pod,
                Some(&c.name),
                WARNING,
                "FailedPreStopHook",
                format!("PreStopHook failed: {msg}"),
            );
        }
    }

    /// Stops everything of the pod, writes its final status and (when the API asked for the
    /// deletion) removes the object; then frees the pod's directories.
    async fn terminate(&mut self, pod: Option<&Arc<Pod>>, grace: Duration) {
        let ctx = self.ctx.clone();
        let rt = ctx.shared.runtime.clone();
        let deadline = Instant::now() + grace;
        for t in self.tracks.values_mut() {
            t.probes = None;
        }
        if let Some(sb) = self.sandbox.clone() {
            let view = self.view(&sb).await;
            let spec = pod.and_then(|p| p.spec.clone());
            let mut stops = Vec::new();
            for list in view.values() {
                let Some(cs) = list.first() else { continue };
                if cs.state != ContainerState::Running && cs.state != ContainerState::Created {
                    continue;
                }
                let c = spec.as_ref().and_then(|s| {
                    s.containers
                        .iter()
                        .chain(s.init_containers.iter().flatten())
                        .find(|c| c.name == cs.name)
                        .cloned()
                });
                let this = &*self;
                let rt = rt.clone();
                stops.push(async move {
                    if let (Some(p), Some(c)) = (pod, c.as_ref()) {
                        this.ctx.recorder.pod(
                            p,
                            Some(&c.name),
                            NORMAL,
                            "Killing",
                            format!("Stopping container {}", c.name),
                        );
                        if let Some(h) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref())
                            && cs.state == ContainerState::Running
                        {
                            this.run_pre_stop(p, c, h, &cs.id, grace).await;
                        }
                    }
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    if let Err(e) = rt.stop_container(&cs.id, remaining).await {
                        warn!(container = %cs.name, error = %e, "could not stop container");
                    }
                });
            }
            futures::future::join_all(stops).await;
            if let Some(p) = pod {
                let view = self.view(&sb).await;
                let mut st = self.build_status(p, &sb, &view, false);
                // A deleted pod ends in a terminal phase (upstream since 1.27).
                let all = st
                    .container_statuses
                    .iter()
                    .flatten()
                    .chain(st.init_container_statuses.iter().flatten())
                    .cloned()
                    .collect::<Vec<_>>();
                let all_ok = !all.is_empty()
                    && all.iter().all(|s| {
                        s.state
                            .as_ref()
                            .and_then(|x| x.terminated.as_ref())
                            .is_some_and(|t| t.exit_code == 0)
                    });
                st.phase = Some(if all_ok { "Succeeded" } else { "Failed" }.into());
                for c in st.conditions.iter_mut().flatten() {
                    if matches!(
                        c.type_.as_str(),
                        "Ready" | "ContainersReady" | "PodReadyToStartContainers"
                    ) && c.status == "True"
                    {
                        c.status = "False".into();
                        c.last_transition_time = Some(Time(jiff::Timestamp::now()));
                    }
                }
                self.publish(p, &view);
                self.patch_status(p, st).await;
            }
            if let Err(e) = rt.stop_sandbox(&sb.id).await {
                warn!(uid = %self.uid, error = %e, "could not stop sandbox");
            }
            if let Err(e) = rt.remove_sandbox(&sb.id).await {
                warn!(uid = %self.uid, error = %e, "could not remove sandbox");
            }
            self.sandbox = None;
        }
        self.release();
        if let Some(p) = pod
            && p.metadata.deletion_timestamp.is_some()
        {
            let ns = p.metadata.namespace.clone().unwrap_or_default();
            let name = p.metadata.name.clone().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(ctx.shared.client.clone(), &ns);
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(self.uid.clone()),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match api.delete(&name, &dp).await {
                Ok(_) => info!(pod = %pod_key(p), "pod terminated and deleted"),
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => warn!(pod = %pod_key(p), error = %e, "could not delete terminated pod"),
            }
        }
        if let Some(p) = pod.or(self.last_pod.as_ref()).cloned() {
            ctx.directory.remove(&p);
            if !ctx.shared.sim {
                let ns = p.metadata.namespace.clone().unwrap_or_default();
                let name = p.metadata.name.clone().unwrap_or_default();
                let _ = std::fs::remove_dir_all(ctx.pod_log_dir(&ns, &name, &self.uid));
            }
        }
        if !ctx.shared.sim {
            let _ = std::fs::remove_dir_all(ctx.pod_dir(&self.uid));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policies() {
        assert!(should_restart("Always", 0, false));
        assert!(should_restart("Always", 1, false));
        assert!(
            !should_restart("Always", 0, true),
            "a finished init container stays done"
        );
        assert!(should_restart("Always", 1, true));
        assert!(should_restart("OnFailure", 2, false));
        assert!(!should_restart("OnFailure", 0, false));
        assert!(!should_restart("Never", 1, false));
    }

    #[test]
    fn requests_take_the_larger_of_containers_and_init() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {
                "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "2", "memory": "1Gi"}}}],
                "containers": [
                    {"name": "a", "resources": {"requests": {"cpu": "500m"}, "limits": {"memory": "64Mi"}}},
                    {"name": "b", "resources": {"limits": {"cpu": "700m"}}}
                ]
            }
        }))
        .expect("pod");
        assert_eq!(pod_requests(&pod), (2000, 1 << 30));
        assert_eq!(grace_of(&pod), Duration::from_secs(30));
        let c = &pod.spec.as_ref().expect("spec").containers[1];
        assert_eq!(resources_of(c).cpu_limit_millis, Some(700));
        assert_eq!(resources_of(c).cpu_request_millis, Some(700));
        assert_ne!(
            spec_hash(c),
            spec_hash(&pod.spec.as_ref().expect("spec").containers[0])
        );
    }
}
