//! The running scheduler: watchers feed one loop that owns the cache (nodes with their bound
//! and assumed pods), the queue and the nominator; binding, status updates, events and
//! preemption's deletions run as background tasks whose outcomes come back as messages.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Namespace, Node, ObjectReference, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Resource as _, ResourceExt as _};
use serde_json::json;
use tokio::sync::{Semaphore, mpsc};
use tracing::{debug, info, info_span, warn};

use crate::framework::{Algorithm, Cluster, ScheduleError};
use crate::metrics::Metrics;
use crate::preemption::{self, Pdb};
use crate::queue::{ClusterEvent, SchedulingQueue};
use crate::selector::{Labels, Selector};
use crate::types::{NodeInfo, PodInfo, PriorityClasses};
use crate::{Error, SchedulerConfig};

/// Which informer a sync message is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Nodes,
    Pods,
    PriorityClasses,
    Namespaces,
    Pdbs,
}

/// What reaches the scheduling loop.
#[derive(Debug)]
enum Msg {
    Node(Arc<Node>),
    NodeDeleted(String),
    Pod(Arc<Pod>),
    PodDeleted(String),
    PriorityClass(Box<PriorityClass>),
    PriorityClassDeleted(String),
    Namespace(String, Labels),
    NamespaceDeleted(String),
    Pdb(String, Pdb),
    PdbDeleted(String),
    /// A (re)list finished; the keys it returned.
    Synced(Kind, HashSet<String>),
    /// A binding finished.
    Bound {
        uid: String,
        result: Result<(), BindError>,
    },
}

#[derive(Debug)]
enum BindError {
    /// The pod is gone or already bound: nothing to retry.
    Gone(String),
    /// Retry with backoff.
    Retry(String),
}

/// A pod we bound that the informer has not shown bound yet.
#[derive(Debug)]
struct Assumed {
    info: Arc<PodInfo>,
    node: String,
    attempts: u32,
    initial_attempt: Instant,
    cycle_start: Instant,
}

/// Everything the loop owns.
struct State {
    names: Vec<String>,
    nodes: Vec<NodeInfo>,
    node_index: HashMap<String, usize>,
    pod_node: HashMap<String, String>,
    /// Pods bound by us that the informer has not shown bound yet.
    assumed: HashSet<String>,
    /// Bindings in flight.
    binding: HashMap<String, Assumed>,
    queue: SchedulingQueue,
    nominated: HashMap<String, Vec<Arc<PodInfo>>>,
    nominated_of: HashMap<String, String>,
    namespaces: HashMap<String, Labels>,
    classes: PriorityClasses,
    class_globals: HashMap<String, i32>,
    pdbs: HashMap<String, Pdb>,
    algorithm: Algorithm,
    synced: HashSet<Kind>,
    metrics: Metrics,
    client: kube::Client,
    tx: mpsc::UnboundedSender<Msg>,
    events: mpsc::Sender<(String, KubeEvent, ObjectReference)>,
    binds: Arc<Semaphore>,
    num_pods: usize,
    real_nodes: usize,
    pods_with_affinity: usize,
    pods_with_required_anti_affinity: usize,
    gauges_at: Instant,
}

/// Starts the scheduler and runs until an informer or leader election stops it.
pub async fn run(cfg: SchedulerConfig) -> Result<(), Error> {
    if cfg.scheduler_names.is_empty() {
        return Err(Error::Config("scheduler-names must not be empty".into()));
    }
    let agent = format!("kumo-scheduler/{}", env!("CARGO_PKG_VERSION"));
    let client = match &cfg.kubeconfig {
        Some(path) => kumo_client::client_from_kubeconfig_with_user_agent(path, &agent).await?,
        None => kube::Client::try_default().await?,
    };
    let metrics = Metrics::new()?;
    let healthy = Arc::new(AtomicBool::new(true));
    if !cfg.metrics_bind_address.is_empty() {
        let addr = cfg.metrics_bind_address.parse().map_err(|e| {
            Error::Config(format!(
                "metrics-bind-address {:?}: {e}",
                cfg.metrics_bind_address
            ))
        })?;
        let health = kumo_client::HealthChecks::default();
        let h = healthy.clone();
        health.add("informers", move || {
            if h.load(AtomicOrdering::Relaxed) {
                Ok(())
            } else {
                Err("informers stopped".into())
            }
        });
        let server = kumo_client::serve_metrics(addr, metrics.registry.clone(), health).await?;
        info!(addr = %server.local_addr, "scheduler metrics");
    }
    if cfg.leader_elect {
        let identity = kumo_client::default_identity();
        kumo_client::run_leader_elected(
            client.clone(),
            &cfg.leader_elect_resource_namespace,
            &cfg.leader_elect_resource_name,
            &identity,
            || {
                schedule_forever(
                    cfg.clone(),
                    client.clone(),
                    metrics.clone(),
                    healthy.clone(),
                )
            },
        )
        .await?
    } else {
        schedule_forever(cfg, client, metrics, healthy).await
    }
}

/// Watches `api` and forwards objects as messages; a finished (re)list sends the keys seen.
fn spawn_watch<K>(
    api: Api<K>,
    config: watcher::Config,
    kind: Kind,
    tx: mpsc::UnboundedSender<Msg>,
    apply: fn(K) -> Msg,
    delete: fn(&K) -> Msg,
    key: fn(&K) -> String,
) -> tokio::task::JoinHandle<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + Debug + Send + 'static,
    K::DynamicType: Default,
{
    tokio::spawn(async move {
        let mut stream = watcher(api, config).default_backoff().boxed();
        let mut listing: HashSet<String> = HashSet::new();
        while let Some(ev) = stream.next().await {
            let sent = match ev {
                Ok(watcher::Event::Init) => {
                    listing.clear();
                    true
                }
                Ok(watcher::Event::InitApply(o)) => {
                    listing.insert(key(&o));
                    tx.send(apply(o)).is_ok()
                }
                Ok(watcher::Event::InitDone) => tx
                    .send(Msg::Synced(kind, std::mem::take(&mut listing)))
                    .is_ok(),
                Ok(watcher::Event::Apply(o)) => tx.send(apply(o)).is_ok(),
                Ok(watcher::Event::Delete(o)) => tx.send(delete(&o)).is_ok(),
                Err(e) => {
                    warn!(?kind, error = %e, "watch failed; retrying");
                    true
                }
            };
            if !sent {
                return;
            }
        }
    })
}

fn pod_uid(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap_or_default()
}

async fn schedule_forever(
    cfg: SchedulerConfig,
    client: kube::Client,
    metrics: Metrics,
    healthy: Arc<AtomicBool>,
) -> Result<(), Error> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
    let mut watches = vec![
        spawn_watch(
            Api::<Node>::all(client.clone()),
            watcher::Config::default(),
            Kind::Nodes,
            tx.clone(),
            |n| Msg::Node(Arc::new(n)),
            |n| Msg::NodeDeleted(n.name_any()),
            |n| n.name_any(),
        ),
        // Like upstream's informer: terminal pods are not interesting.
        spawn_watch(
            Api::<Pod>::all(client.clone()),
            watcher::Config::default().fields("status.phase!=Succeeded,status.phase!=Failed"),
            Kind::Pods,
            tx.clone(),
            |p| Msg::Pod(Arc::new(p)),
            |p| Msg::PodDeleted(pod_uid(p)),
            pod_uid,
        ),
        spawn_watch(
            Api::<PriorityClass>::all(client.clone()),
            watcher::Config::default(),
            Kind::PriorityClasses,
            tx.clone(),
            |p| Msg::PriorityClass(Box::new(p)),
            |p| Msg::PriorityClassDeleted(p.name_any()),
            |p| p.name_any(),
        ),
        spawn_watch(
            Api::<Namespace>::all(client.clone()),
            watcher::Config::default(),
            Kind::Namespaces,
            tx.clone(),
            |n| Msg::Namespace(n.name_any(), n.metadata.labels.unwrap_or_default()),
            |n| Msg::NamespaceDeleted(n.name_any()),
            |n| n.name_any(),
        ),
        spawn_watch(
            Api::<PodDisruptionBudget>::all(client.clone()),
            watcher::Config::default(),
            Kind::Pdbs,
            tx.clone(),
            |p| {
                let key = format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any());
                let status = p.status.as_ref();
                Msg::Pdb(
                    key,
                    Pdb {
                        namespace: p.namespace().unwrap_or_default(),
                        selector: Selector::from_label_selector(
                            p.spec.as_ref().and_then(|s| s.selector.as_ref()),
                        ),
                        disruptions_allowed: status
                            .map(|s| i64::from(s.disruptions_allowed))
                            .unwrap_or(0),
                        disrupted_pods: status
                            .and_then(|s| s.disrupted_pods.as_ref())
                            .map(|m| m.keys().cloned().collect())
                            .unwrap_or_default(),
                    },
                )
            },
            |p| {
                Msg::PdbDeleted(format!(
                    "{}/{}",
                    p.namespace().unwrap_or_default(),
                    p.name_any()
                ))
            },
            |p| format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()),
        ),
    ];

    let (ev_tx, ev_rx) = mpsc::channel(1000);
    watches.push(tokio::spawn(publish_events(client.clone(), ev_rx)));

    let mut st = State {
        names: cfg.scheduler_names.clone(),
        nodes: Vec::new(),
        node_index: HashMap::new(),
        pod_node: HashMap::new(),
        assumed: HashSet::new(),
        binding: HashMap::new(),
        queue: SchedulingQueue::new(
            Duration::from_secs(cfg.pod_initial_backoff_seconds.max(1)),
            Duration::from_secs(
                cfg.pod_max_backoff_seconds
                    .max(cfg.pod_initial_backoff_seconds)
                    .max(1),
            ),
        ),
        nominated: HashMap::new(),
        nominated_of: HashMap::new(),
        namespaces: HashMap::new(),
        classes: PriorityClasses::default(),
        class_globals: HashMap::new(),
        pdbs: HashMap::new(),
        algorithm: Algorithm {
            next_start: 0,
            percentage_of_nodes_to_score: cfg.percentage_of_nodes_to_score,
        },
        synced: HashSet::new(),
        metrics,
        client,
        tx,
        events: ev_tx,
        binds: Arc::new(Semaphore::new(cfg.max_concurrent_binds.max(1))),
        num_pods: 0,
        real_nodes: 0,
        pods_with_affinity: 0,
        pods_with_required_anti_affinity: 0,
        gauges_at: Instant::now(),
    };
    info!(names = ?st.names, "scheduler started; waiting for the informers to sync");

    let result = loop {
        // Everything that arrived is applied before the next cycle.
        let mut closed = false;
        loop {
            match rx.try_recv() {
                Ok(m) => st.handle(m),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        if closed {
            break Err(Error::InformersStopped);
        }
        let ready = st.synced.contains(&Kind::Nodes)
            && st.synced.contains(&Kind::Pods)
            && st.synced.contains(&Kind::PriorityClasses);
        let now = Instant::now();
        if ready {
            st.queue.flush(now);
            if now.duration_since(st.gauges_at) > Duration::from_millis(200) {
                st.gauges_at = now;
                st.update_gauges();
            }
            if let Some(qp) = st.queue.pop() {
                st.schedule_one(qp);
                tokio::task::yield_now().await;
                continue;
            }
        }
        let wake = st
            .queue
            .next_wakeup()
            .unwrap_or(now + Duration::from_secs(1))
            .min(now + Duration::from_secs(1));
        tokio::select! {
            m = rx.recv() => match m {
                Some(m) => st.handle(m),
                None => break Err(Error::InformersStopped),
            },
            () = tokio::time::sleep_until(wake.into()) => {}
        }
    };
    healthy.store(false, AtomicOrdering::Relaxed);
    for w in watches {
        w.abort();
    }
    result
}

/// Publishes events with one recorder per reporting controller (the scheduler name).
async fn publish_events(
    client: kube::Client,
    mut rx: mpsc::Receiver<(String, KubeEvent, ObjectReference)>,
) {
    let host = hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into());
    let mut recorders: HashMap<String, Recorder> = HashMap::new();
    while let Some((controller, ev, reference)) = rx.recv().await {
        let rec = recorders.entry(controller.clone()).or_insert_with(|| {
            Recorder::new(
                client.clone(),
                Reporter {
                    controller: controller.clone(),
                    instance: Some(format!("{controller}-{host}")),
                },
            )
        });
        if let Err(e) = rec.publish(&ev, &reference).await {
            debug!(error = %e, reason = %ev.reason, "could not record event");
        }
    }
}

/// An event about a pod.
fn event(
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
    related: Option<ObjectReference>,
) -> KubeEvent {
    KubeEvent {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: related,
    }
}

impl State {
    fn responsible(&self, p: &PodInfo) -> bool {
        self.names.contains(&p.scheduler_name)
    }

    fn cluster(&self) -> Cluster<'_> {
        Cluster {
            nodes: &self.nodes,
            namespaces: &self.namespaces,
            nominated: &self.nominated,
            num_nodes: self.real_nodes,
            pods_with_affinity: self.pods_with_affinity,
            pods_with_required_anti_affinity: self.pods_with_required_anti_affinity,
        }
    }

    fn emit(&self, controller: &str, pod: &Pod, ev: KubeEvent) {
        if self
            .events
            .try_send((controller.to_string(), ev, pod.object_ref(&())))
            .is_err()
        {
            debug!("event queue full; dropping an event");
        }
    }

    fn update_gauges(&self) {
        let p = self.queue.pending();
        let g = &self.metrics.pending_pods;
        g.with_label_values(&["active"]).set(p.active as i64);
        g.with_label_values(&["backoff"]).set(p.backoff as i64);
        g.with_label_values(&["unschedulable"])
            .set(p.unschedulable as i64);
        g.with_label_values(&["gated"]).set(p.gated as i64);
        let c = &self.metrics.cache_size;
        c.with_label_values(&["nodes"])
            .set(self.node_index.len() as i64);
        c.with_label_values(&["pods"]).set(self.num_pods as i64);
        c.with_label_values(&["assumed_pods"])
            .set(self.assumed.len() as i64);
    }

    fn move_all(&mut self, ev: ClusterEvent) {
        let moved = self.queue.move_all(ev, Instant::now());
        if moved > 0 {
            self.metrics
                .queue_incoming
                .with_label_values(&["active", ev.label()])
                .inc_by(moved as u64);
            debug!(event = ev.label(), moved, "moved unschedulable pods");
        }
    }

    fn node_slot(&mut self, name: &str) -> usize {
        if let Some(&i) = self.node_index.get(name) {
            return i;
        }
        self.nodes.push(NodeInfo {
            name: name.to_string(),
            ..Default::default()
        });
        let i = self.nodes.len() - 1;
        self.node_index.insert(name.to_string(), i);
        i
    }

    fn remove_node_slot(&mut self, name: &str) {
        let Some(i) = self.node_index.remove(name) else {
            return;
        };
        self.nodes.swap_remove(i);
        if i < self.nodes.len() {
            let moved = self.nodes[i].name.clone();
            self.node_index.insert(moved, i);
        }
    }

    fn add_pod_to_node(&mut self, info: Arc<PodInfo>, node: &str) {
        let i = self.node_slot(node);
        self.pod_node.insert(info.uid.clone(), node.to_string());
        self.pods_with_affinity += usize::from(info.has_pod_affinity);
        self.pods_with_required_anti_affinity += usize::from(info.has_required_anti_affinity());
        self.nodes[i].add_pod(info);
        self.num_pods += 1;
    }

    fn remove_pod_from_node(&mut self, uid: &str) -> Option<Arc<PodInfo>> {
        let node = self.pod_node.remove(uid)?;
        let i = *self.node_index.get(&node)?;
        let p = self.nodes[i].remove_pod(uid);
        if let Some(p) = &p {
            self.num_pods -= 1;
            self.pods_with_affinity -= usize::from(p.has_pod_affinity);
            self.pods_with_required_anti_affinity -= usize::from(p.has_required_anti_affinity());
        }
        // A ghost slot (no node object) disappears with its last pod.
        if self.nodes[i].node.is_none() && self.nodes[i].pods.is_empty() {
            self.remove_node_slot(&node);
        }
        p
    }

    fn set_nominated(&mut self, info: &Arc<PodInfo>, node: &str) {
        self.clear_nominated(&info.uid);
        if node.is_empty() {
            return;
        }
        self.nominated
            .entry(node.to_string())
            .or_default()
            .push(info.clone());
        self.nominated_of.insert(info.uid.clone(), node.to_string());
    }

    fn clear_nominated(&mut self, uid: &str) {
        if let Some(node) = self.nominated_of.remove(uid)
            && let Some(v) = self.nominated.get_mut(&node)
        {
            v.retain(|p| p.uid != uid);
            if v.is_empty() {
                self.nominated.remove(&node);
            }
        }
    }

    fn handle(&mut self, m: Msg) {
        match m {
            Msg::Node(n) => self.on_node(n),
            Msg::NodeDeleted(name) => self.on_node_deleted(&name),
            Msg::Pod(p) => self.on_pod(p),
            Msg::PodDeleted(uid) => self.on_pod_deleted(&uid),
            Msg::PriorityClass(pc) => {
                let name = pc.name_any();
                let never = pc.preemption_policy.as_deref() == Some("Never");
                self.classes.values.insert(name.clone(), (pc.value, never));
                if pc.global_default.unwrap_or(false) {
                    self.class_globals.insert(name, pc.value);
                } else {
                    self.class_globals.remove(&name);
                }
                self.classes.global_default = self.class_globals.values().copied().max();
            }
            Msg::PriorityClassDeleted(name) => {
                self.classes.values.remove(&name);
                self.class_globals.remove(&name);
                self.classes.global_default = self.class_globals.values().copied().max();
            }
            Msg::Namespace(name, labels) => {
                self.namespaces.insert(name, labels);
            }
            Msg::NamespaceDeleted(name) => {
                self.namespaces.remove(&name);
            }
            Msg::Pdb(key, pdb) => {
                self.pdbs.insert(key, pdb);
            }
            Msg::PdbDeleted(key) => {
                self.pdbs.remove(&key);
            }
            Msg::Synced(kind, keys) => self.on_synced(kind, keys),
            Msg::Bound { uid, result } => self.on_bound(&uid, result),
        }
    }

    fn on_synced(&mut self, kind: Kind, keys: HashSet<String>) {
        match kind {
            Kind::Nodes => {
                let gone: Vec<String> = self
                    .nodes
                    .iter()
                    .filter(|n| n.node.is_some() && !keys.contains(&n.name))
                    .map(|n| n.name.clone())
                    .collect();
                for n in gone {
                    self.on_node_deleted(&n);
                }
            }
            Kind::Pods => {
                let mut gone: Vec<String> = self
                    .pod_node
                    .keys()
                    .filter(|u| !keys.contains(*u) && !self.assumed.contains(*u))
                    .cloned()
                    .collect();
                gone.extend(
                    self.nominated_of
                        .keys()
                        .filter(|u| !keys.contains(*u))
                        .cloned(),
                );
                gone.extend(self.queue.uids().into_iter().filter(|u| !keys.contains(u)));
                for uid in gone {
                    self.on_pod_deleted(&uid);
                }
            }
            Kind::PriorityClasses => {
                self.classes.values.retain(|k, _| keys.contains(k));
                self.class_globals.retain(|k, _| keys.contains(k));
                self.classes.global_default = self.class_globals.values().copied().max();
            }
            Kind::Namespaces => self.namespaces.retain(|k, _| keys.contains(k)),
            Kind::Pdbs => self.pdbs.retain(|k, _| keys.contains(k)),
        }
        if self.synced.insert(kind) {
            info!(?kind, objects = keys.len(), "informer synced");
        }
    }

    fn on_node(&mut self, node: Arc<Node>) {
        let name = node.name_any();
        let i = self.node_slot(&name);
        let old = self.nodes[i].clone();
        self.nodes[i].set_node(node);
        let new = &self.nodes[i];
        let mut events = Vec::new();
        if old.node.is_none() {
            self.real_nodes += 1;
            events.push(ClusterEvent::NodeAdd);
        } else {
            let a = &old.allocatable;
            let b = &new.allocatable;
            if b.milli_cpu > a.milli_cpu
                || b.memory > a.memory
                || b.ephemeral_storage > a.ephemeral_storage
                || b.allowed_pods > a.allowed_pods
                || b.scalar
                    .iter()
                    .any(|(k, v)| a.scalar.get(k).is_none_or(|o| v > o))
            {
                events.push(ClusterEvent::NodeAllocatable);
            }
            if old.labels != new.labels {
                events.push(ClusterEvent::NodeLabel);
            }
            if old.taints != new.taints || old.unschedulable != new.unschedulable {
                events.push(ClusterEvent::NodeTaint);
            }
        }
        for ev in events {
            self.move_all(ev);
        }
    }

    fn on_node_deleted(&mut self, name: &str) {
        let Some(&i) = self.node_index.get(name) else {
            return;
        };
        if self.nodes[i].node.is_some() {
            self.real_nodes -= 1;
        }
        if self.nodes[i].pods.is_empty() {
            self.remove_node_slot(name);
        } else {
            // Pods still reference it: keep a ghost until they go.
            self.nodes[i].node = None;
        }
        self.move_all(ClusterEvent::NodeDelete);
    }

    fn on_pod(&mut self, pod: Arc<Pod>) {
        let info = Arc::new(PodInfo::new(pod, &self.classes));
        let uid = info.uid.clone();
        let phase = info
            .pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .unwrap_or("");
        if phase == "Succeeded" || phase == "Failed" {
            self.on_pod_deleted(&uid);
            return;
        }
        if !info.node_name.is_empty() {
            // Bound: into the cache (confirming an assumed pod), out of the queue.
            self.queue.delete(&uid);
            self.clear_nominated(&uid);
            self.assumed.remove(&uid);
            let old = self.remove_pod_from_node(&uid);
            let node = info.node_name.clone();
            let labels_changed = old.as_ref().is_some_and(|o| o.labels != info.labels);
            let was_known = old.is_some();
            self.add_pod_to_node(info, &node);
            if !was_known {
                if self.queue.has_unschedulable() {
                    self.move_all(ClusterEvent::AssignedPodAdd);
                }
            } else if labels_changed {
                self.move_all(ClusterEvent::AssignedPodUpdate);
            }
            return;
        }
        if self.assumed.contains(&uid) {
            // Our binding is in flight; the informer has not caught up.
            return;
        }
        if !self.responsible(&info) {
            return;
        }
        if info.terminating {
            self.queue.delete(&uid);
            self.clear_nominated(&uid);
            return;
        }
        if info.nominated_node.is_empty() {
            self.clear_nominated(&uid);
        } else {
            let n = info.nominated_node.clone();
            self.set_nominated(&info, &n);
        }
        let new = self.queue.get(&uid).is_none();
        self.queue.add_or_update(info, Instant::now());
        if new {
            self.metrics
                .queue_incoming
                .with_label_values(&["active", "PodAdd"])
                .inc();
        }
    }

    fn on_pod_deleted(&mut self, uid: &str) {
        self.queue.delete(uid);
        self.clear_nominated(uid);
        self.assumed.remove(uid);
        if self.remove_pod_from_node(uid).is_some() {
            self.move_all(ClusterEvent::AssignedPodDelete);
        }
    }

    fn on_bound(&mut self, uid: &str, result: Result<(), BindError>) {
        let Some(a) = self.binding.remove(uid) else {
            return;
        };
        let profile = a.info.scheduler_name.clone();
        let elapsed = a.cycle_start.elapsed().as_secs_f64();
        match result {
            Ok(()) => {
                self.metrics
                    .schedule_attempts
                    .with_label_values(&[&profile, "scheduled"])
                    .inc();
                self.metrics
                    .attempt_duration
                    .with_label_values(&[&profile, "scheduled"])
                    .observe(elapsed);
                self.metrics
                    .pod_scheduling_attempts
                    .observe(f64::from(a.attempts));
                self.metrics
                    .pod_scheduling_sli_duration
                    .with_label_values(&[&a.attempts.min(15).to_string()])
                    .observe(a.initial_attempt.elapsed().as_secs_f64());
                let note = format!(
                    "Successfully assigned {}/{} to {}",
                    a.info.namespace, a.info.name, a.node
                );
                self.emit(
                    &profile,
                    &a.info.pod,
                    event(EventType::Normal, "Scheduled", "Binding", note, None),
                );
            }
            Err(e) => {
                if !self.assumed.remove(uid) {
                    // The informer already shows it bound (or deleted): nothing to undo.
                    return;
                }
                self.remove_pod_from_node(uid);
                self.metrics
                    .schedule_attempts
                    .with_label_values(&[&profile, "error"])
                    .inc();
                self.metrics
                    .attempt_duration
                    .with_label_values(&[&profile, "error"])
                    .observe(elapsed);
                match e {
                    BindError::Gone(msg) => {
                        debug!(pod = %a.info.key(), %msg, "binding refused; not retrying")
                    }
                    BindError::Retry(msg) => {
                        warn!(pod = %a.info.key(), node = %a.node, %msg, "binding failed; retrying");
                        self.queue.requeue_after_error(
                            a.info.clone(),
                            a.attempts,
                            a.initial_attempt,
                            Instant::now(),
                        );
                        self.emit(
                            &profile,
                            &a.info.pod,
                            event(
                                EventType::Warning,
                                "FailedScheduling",
                                "Scheduling",
                                format!("Binding rejected: {msg}"),
                                None,
                            ),
                        );
                    }
                }
                // Resources the assumed pod held are free again.
                self.move_all(ClusterEvent::AssignedPodDelete);
            }
        }
    }

    fn schedule_one(&mut self, qp: crate::queue::QueuedPod) {
        let pod = qp.info.clone();
        let span = info_span!("schedule_pod", pod = %pod.key(), attempt = qp.attempts);
        let _g = span.enter();
        let cycle_start = Instant::now();
        let profile = pod.scheduler_name.clone();
        let result = {
            let cluster = Cluster {
                nodes: &self.nodes,
                namespaces: &self.namespaces,
                nominated: &self.nominated,
                num_nodes: self.real_nodes,
                pods_with_affinity: self.pods_with_affinity,
                pods_with_required_anti_affinity: self.pods_with_required_anti_affinity,
            };
            self.algorithm.schedule(&pod, &cluster)
        };
        self.metrics
            .algorithm_duration
            .observe(cycle_start.elapsed().as_secs_f64());
        match result {
            Ok(r) => {
                debug!(node = %r.node, evaluated = r.evaluated, feasible = r.feasible, "pod fits");
                // Assume: account the pod on the node now, bind in the background.
                self.queue.done(&pod.uid);
                self.clear_nominated(&pod.uid);
                let mut bound = (*pod).clone();
                bound.node_name = r.node.clone();
                self.add_pod_to_node(Arc::new(bound), &r.node);
                self.assumed.insert(pod.uid.clone());
                self.binding.insert(
                    pod.uid.clone(),
                    Assumed {
                        info: pod.clone(),
                        node: r.node.clone(),
                        attempts: qp.attempts,
                        initial_attempt: qp.initial_attempt,
                        cycle_start,
                    },
                );
                self.spawn_bind(&pod, r.node);
            }
            Err(err) => self.handle_failure(qp, err, cycle_start, &profile),
        }
    }

    fn spawn_bind(&self, pod: &PodInfo, node: String) {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace);
        let (name, uid, ns) = (pod.name.clone(), pod.uid.clone(), pod.namespace.clone());
        let tx = self.tx.clone();
        let sem = self.binds.clone();
        tokio::spawn(async move {
            let _permit = sem.acquire_owned().await;
            let binding = json!({
                "apiVersion": "v1",
                "kind": "Binding",
                "metadata": {"name": name, "namespace": ns, "uid": uid},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node},
            });
            let result = match api
                .create_subresource::<serde_json::Value, serde_json::Value>(
                    "binding",
                    &name,
                    &PostParams::default(),
                    &binding,
                )
                .await
            {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {
                    Err(BindError::Gone(s.message))
                }
                Err(e) => Err(BindError::Retry(e.to_string())),
            };
            let _ = tx.send(Msg::Bound { uid, result });
        });
    }

    fn handle_failure(
        &mut self,
        qp: crate::queue::QueuedPod,
        err: ScheduleError,
        cycle_start: Instant,
        profile: &str,
    ) {
        let pod = qp.info.clone();
        let mut nominate: Option<String> = None;
        let mut clear_nomination = false;
        let (reason, plugins, message) = match err {
            ScheduleError::NoNodes => (
                "SchedulerError",
                BTreeSet::new(),
                ScheduleError::NoNodes.message(),
            ),
            ScheduleError::Fit(mut fit) => {
                self.metrics.preemption_attempts.inc();
                let pdbs: Vec<Pdb> = self.pdbs.values().cloned().collect();
                let outcome = preemption::preempt(&pod, &fit, &self.cluster(), &pdbs);
                match outcome {
                    Ok(cand) => {
                        info!(node = %cand.node, victims = cand.victims.len(), "preempting");
                        self.metrics
                            .preemption_victims
                            .observe(cand.victims.len() as f64);
                        self.execute_preemption(&pod, &cand, profile);
                        nominate = Some(cand.node);
                    }
                    Err(msg) => {
                        fit.diagnosis.post_filter_msg = Some(msg);
                        clear_nomination = !pod.nominated_node.is_empty();
                    }
                }
                (
                    "Unschedulable",
                    fit.diagnosis.unschedulable_plugins.clone(),
                    fit.message(),
                )
            }
        };
        let result = if reason == "Unschedulable" {
            "unschedulable"
        } else {
            "error"
        };
        self.metrics
            .schedule_attempts
            .with_label_values(&[profile, result])
            .inc();
        self.metrics
            .attempt_duration
            .with_label_values(&[profile, result])
            .observe(cycle_start.elapsed().as_secs_f64());
        info!(%message, "unable to schedule pod; waiting");
        self.queue
            .failed(&pod.uid, plugins, reason == "Unschedulable", Instant::now());
        if let Some(node) = &nominate {
            let mut n = (*pod).clone();
            n.nominated_node = node.clone();
            let n = Arc::new(n);
            self.set_nominated(&n, node);
            self.queue.set_info(n);
        } else if clear_nomination {
            self.clear_nominated(&pod.uid);
        }
        self.emit(
            profile,
            &pod.pod,
            event(
                EventType::Warning,
                "FailedScheduling",
                "Scheduling",
                message.clone(),
                None,
            ),
        );
        self.spawn_status_update(&pod, reason, message, nominate, clear_nomination);
    }

    /// `updatePod`: PodScheduled=False with the reason and message (unchanged conditions
    /// are not rewritten) and the nominated node.
    fn spawn_status_update(
        &self,
        pod: &PodInfo,
        reason: &str,
        message: String,
        nominate: Option<String>,
        clear_nomination: bool,
    ) {
        let existing = pod
            .pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"));
        let same = existing.is_some_and(|c| {
            c.status == "False"
                && c.reason.as_deref() == Some(reason)
                && c.message.as_deref() == Some(message.as_str())
        });
        if same && nominate.is_none() && !clear_nomination {
            return;
        }
        let transition = existing
            .filter(|c| c.status == "False")
            .and_then(|c| c.last_transition_time.as_ref())
            .map(|t| t.0.to_string())
            .unwrap_or_else(|| {
                jiff::Timestamp::now()
                    .round(jiff::Unit::Second)
                    .map(|t| t.to_string())
                    .unwrap_or_default()
            });
        let mut status = json!({
            "conditions": [{
                "type": "PodScheduled",
                "status": "False",
                "lastProbeTime": null,
                "lastTransitionTime": transition,
                "reason": reason,
                "message": message,
            }]
        });
        if let Some(n) = nominate {
            status["nominatedNodeName"] = json!(n);
        } else if clear_nomination {
            status["nominatedNodeName"] = serde_json::Value::Null;
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace);
        let name = pod.name.clone();
        tokio::spawn(async move {
            let patch = Patch::Strategic(json!({ "status": status }));
            if let Err(e) = api
                .patch_status(&name, &PatchParams::default(), &patch)
                .await
            {
                debug!(pod = %name, error = %e, "could not update the pod's status");
            }
        });
    }

    /// `prepareCandidate`: mark and delete the victims, record `Preempted` events, and clear
    /// the nominations of lower-priority pods on that node.
    fn execute_preemption(
        &mut self,
        preemptor: &PodInfo,
        cand: &preemption::Candidate,
        profile: &str,
    ) {
        for v in &cand.victims {
            self.emit(
                profile,
                &v.pod,
                event(
                    EventType::Normal,
                    "Preempted",
                    "Preempting",
                    format!("Preempted by pod {} on node {}", preemptor.uid, cand.node),
                    Some(preemptor.pod.object_ref(&())),
                ),
            );
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &v.namespace);
            let name = v.name.clone();
            let condition_msg =
                format!("{profile}: preempting to accommodate a higher priority pod");
            tokio::spawn(async move {
                let patch = Patch::Strategic(json!({"status": {"conditions": [{
                    "type": "DisruptionTarget",
                    "status": "True",
                    "reason": "PreemptionByScheduler",
                    "message": condition_msg,
                    "lastTransitionTime": jiff::Timestamp::now().round(jiff::Unit::Second).map(|t| t.to_string()).unwrap_or_default(),
                }]}}));
                if let Err(e) = api
                    .patch_status(&name, &PatchParams::default(), &patch)
                    .await
                {
                    debug!(pod = %name, error = %e, "could not mark the victim");
                }
                match api.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => info!(victim = %name, "preempted"),
                    Err(e) => warn!(victim = %name, error = %e, "could not delete the victim"),
                }
            });
        }
        let lower: Vec<Arc<PodInfo>> = self
            .nominated
            .get(&cand.node)
            .into_iter()
            .flatten()
            .filter(|p| p.priority < preemptor.priority && p.uid != preemptor.uid)
            .cloned()
            .collect();
        for p in lower {
            self.clear_nominated(&p.uid);
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &p.namespace);
            let name = p.name.clone();
            tokio::spawn(async move {
                let patch = Patch::Merge(json!({"status": {"nominatedNodeName": null}}));
                if let Err(e) = api
                    .patch_status(&name, &PatchParams::default(), &patch)
                    .await
                {
                    debug!(pod = %name, error = %e, "could not clear the nominated node");
                }
            });
        }
    }
}
