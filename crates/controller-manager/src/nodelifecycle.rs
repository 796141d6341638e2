//! Node lifecycle (upstream `pkg/controller/nodelifecycle` and `pkg/controller/tainteviction`).
//!
//! Every `--node-monitor-period` each node's health is judged by its last heartbeat — the
//! `kube-node-lease` Lease's renewTime or the Ready condition's lastHeartbeatTime, whichever
//! changed last, timed on this controller's clock. After `--node-monitor-grace-period`
//! without one, its Ready/MemoryPressure/DiskPressure/PIDPressure conditions become
//! Unknown (`NodeStatusUnknown`, "Kubelet stopped posting node status.") and its pods
//! NotReady. Ready=False nodes get `node.kubernetes.io/not-ready`, Ready=Unknown nodes
//! `node.kubernetes.io/unreachable` taints (NoSchedule and NoExecute; NoExecute is added at
//! most once per 10 s per zone, and not at all in a zone with ≥55 % unhealthy nodes of a small
//! cluster or when every node is down). The taint manager deletes pods on NoExecute-tainted
//! nodes once their toleration runs out; a pod without a toleration for these two taints
//! gets the 300 s upstream's DefaultTolerationSeconds admission would have added.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, PodCondition, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, PostParams};
use parking_lot::Mutex;
use tracing::{debug, info, warn};

use crate::informer::Informer;
use crate::util::{self, Events};
use crate::{Ctx, Error};

/// `node.kubernetes.io/not-ready`.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// `node.kubernetes.io/unreachable`.
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The namespace of node Leases.
const LEASE_NAMESPACE: &str = "kube-node-lease";
/// Upstream's DefaultTolerationSeconds for not-ready/unreachable.
const DEFAULT_TOLERATION_SECONDS: i64 = 300;
/// `--unhealthy-zone-threshold`.
const UNHEALTHY_ZONE_THRESHOLD: f64 = 0.55;
/// `--large-cluster-size-threshold`.
const LARGE_CLUSTER_THRESHOLD: usize = 50;
/// One NoExecute taint per zone per this long (`--node-eviction-rate` 0.1/s).
const TAINT_INTERVAL: Duration = Duration::from_secs(10);

/// What we saw of a node's heartbeats, on our clock.
#[derive(Debug, Clone)]
struct Health {
    probe: Instant,
    ready_heartbeat: Option<Time>,
    lease_renew: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime>,
}

/// The node lifecycle controller with its taint manager.
pub struct NodeLifecycleController {
    client: kube::Client,
    nodes: Arc<Informer<Node>>,
    leases: Arc<Informer<Lease>>,
    pods: Arc<Informer<Pod>>,
    health: Mutex<HashMap<String, Health>>,
    last_taint: Mutex<HashMap<String, Instant>>,
    period: Duration,
    grace: Duration,
    events: Events,
}

fn condition<'a>(node: &'a Node, t: &str) -> Option<&'a NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_deref()?
        .iter()
        .find(|c| c.type_ == t)
}

fn ready_status(node: &Node) -> &str {
    condition(node, "Ready")
        .map(|c| c.status.as_str())
        .unwrap_or("Unknown")
}

fn zone_of(node: &Node) -> String {
    let l = node.metadata.labels.clone().unwrap_or_default();
    format!(
        "{}:\u{0}:{}",
        l.get("topology.kubernetes.io/region")
            .cloned()
            .unwrap_or_default(),
        l.get("topology.kubernetes.io/zone")
            .cloned()
            .unwrap_or_default()
    )
}

/// Whether `tol` tolerates `taint` (`Toleration.ToleratesTaint`).
pub fn tolerates(tol: &Toleration, taint: &Taint) -> bool {
    if let Some(e) = tol.effect.as_deref()
        && !e.is_empty()
        && e != taint.effect
    {
        return false;
    }
    let key = tol.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match tol.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        _ => {
            !key.is_empty()
                && tol.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
    }
}

/// The pod's tolerations plus the 300 s not-ready/unreachable ones DefaultTolerationSeconds
/// admission adds when the pod has none for them.
fn effective_tolerations(pod: &Pod) -> Vec<Toleration> {
    let mut tols = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    for key in [TAINT_NOT_READY, TAINT_UNREACHABLE] {
        let probe = Taint {
            key: key.into(),
            effect: "NoExecute".into(),
            value: None,
            time_added: None,
        };
        if !tols.iter().any(|t| tolerates(t, &probe)) {
            tols.push(Toleration {
                key: Some(key.into()),
                operator: Some("Exists".into()),
                effect: Some("NoExecute".into()),
                toleration_seconds: Some(DEFAULT_TOLERATION_SECONDS),
                value: None,
            });
        }
    }
    tols
}

/// When the taint manager evicts `pod` from a node with `taints`: `Some(now)`-or-earlier
/// for a taint it does not tolerate, `None` if it tolerates them all forever.
pub fn eviction_time(pod: &Pod, taints: &[Taint], now: jiff::Timestamp) -> Option<jiff::Timestamp> {
    let tols = effective_tolerations(pod);
    let mut when: Option<jiff::Timestamp> = None;
    for taint in taints.iter().filter(|t| t.effect == "NoExecute") {
        let matching: Vec<&Toleration> = tols.iter().filter(|t| tolerates(t, taint)).collect();
        if matching.is_empty() {
            return Some(now);
        }
        // The shortest finite toleration wins; no seconds means forever.
        let secs = matching.iter().filter_map(|t| t.toleration_seconds).min();
        let Some(secs) = secs else {
            continue;
        };
        let added = taint.time_added.as_ref().map(|t| t.0).unwrap_or(now);
        let at = added + jiff::SignedDuration::from_secs(secs.max(0));
        when = Some(when.map_or(at, |w| w.min(at)));
    }
    when
}

impl NodeLifecycleController {
    /// Builds the controller.
    pub fn new(ctx: &Ctx) -> Result<Arc<Self>, Error> {
        let period = util::parse_duration(&ctx.cfg.node_monitor_period)
            .ok_or_else(|| Error::Config("node-monitor-period".into()))?;
        let grace = util::parse_duration(&ctx.cfg.node_monitor_grace_period)
            .ok_or_else(|| Error::Config("node-monitor-grace-period".into()))?;
        Ok(Arc::new(NodeLifecycleController {
            client: ctx.client.clone(),
            nodes: ctx.factory.get_cluster::<Node>(),
            leases: ctx.factory.get_with::<Lease>(Some(LEASE_NAMESPACE), None),
            pods: ctx.factory.get::<Pod>(),
            health: Mutex::new(HashMap::new()),
            last_taint: Mutex::new(HashMap::new()),
            period,
            grace,
            events: Events::new(ctx.client.clone(), "node-controller"),
        }))
    }

    /// Monitors node health and evicts pods until the process ends.
    pub async fn run(self: Arc<Self>) {
        self.nodes.synced().await;
        self.leases.synced().await;
        self.pods.synced().await;
        info!(period = ?self.period, grace = ?self.grace, "node lifecycle controller synced");
        let evictor = util::AbortOnDrop(tokio::spawn(self.clone().taint_manager()));
        let mut tick = tokio::time::interval(self.period);
        loop {
            tick.tick().await;
            if let Err(e) = self.monitor_node_health().await {
                warn!(error = %format!("{e:#}"), "monitoring node health failed");
            }
            if evictor.0.is_finished() {
                return;
            }
        }
    }

    /// `monitorNodeHealth`.
    async fn monitor_node_health(&self) -> anyhow::Result<()> {
        let nodes = self.nodes.list();
        let names: Vec<String> = nodes
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        self.health.lock().retain(|k, _| names.contains(k));
        // Zone states from the current Ready conditions.
        let mut zones: HashMap<String, (usize, usize)> = HashMap::new();
        for n in &nodes {
            let z = zones.entry(zone_of(n)).or_insert((0, 0));
            if ready_status(n) == "True" {
                z.0 += 1;
            } else {
                z.1 += 1;
            }
        }
        let all_down = !zones.is_empty() && zones.values().all(|(ready, _)| *ready == 0);
        for node in nodes {
            let mut node = (*node).clone();
            if let Err(e) = self.check_node(&mut node).await {
                debug!(node = ?node.metadata.name, error = %format!("{e:#}"), "node check failed");
                continue;
            }
            let (ready, not_ready) = zones.get(&zone_of(&node)).copied().unwrap_or((0, 0));
            let total = ready + not_ready;
            let partial =
                not_ready > 2 && (not_ready as f64) / (total as f64) >= UNHEALTHY_ZONE_THRESHOLD;
            let evict_allowed =
                !(all_down || partial && self.nodes.list().len() <= LARGE_CLUSTER_THRESHOLD);
            if let Err(e) = self.reconcile_taints(&mut node, evict_allowed).await {
                debug!(node = ?node.metadata.name, error = %format!("{e:#}"), "node taints not updated");
            }
        }
        Ok(())
    }

    /// `tryUpdateNodeHealth`: Unknown conditions after the grace period.
    async fn check_node(&self, node: &mut Node) -> anyhow::Result<()> {
        let name = node.metadata.name.clone().unwrap_or_default();
        let ready = condition(node, "Ready").cloned();
        let lease = self.leases.get(Some(LEASE_NAMESPACE), &name);
        let renew = lease
            .and_then(|l| l.spec.clone())
            .and_then(|s| s.renew_time);
        let heartbeat = ready.as_ref().and_then(|c| c.last_heartbeat_time.clone());
        let stale = {
            let mut h = self.health.lock();
            let e = h.entry(name.clone()).or_insert_with(|| Health {
                probe: Instant::now(),
                ready_heartbeat: heartbeat.clone(),
                lease_renew: renew.clone(),
            });
            if e.ready_heartbeat != heartbeat || e.lease_renew != renew {
                e.probe = Instant::now();
                e.ready_heartbeat = heartbeat.clone();
                e.lease_renew = renew.clone();
            }
            e.probe.elapsed() > self.grace
        };
        if !stale {
            return Ok(());
        }
        let now = Time(jiff::Timestamp::now());
        let status = node.status.get_or_insert_with(Default::default);
        let conditions = status.conditions.get_or_insert_with(Vec::new);
        let mut changed = false;
        let mut became_unknown = false;
        if !conditions.iter().any(|c| c.type_ == "Ready") {
            conditions.push(NodeCondition {
                type_: "Ready".into(),
                status: "Unknown".into(),
                reason: Some("NodeStatusNeverUpdated".into()),
                message: Some("Kubelet never posted node status.".into()),
                last_heartbeat_time: node.metadata.creation_timestamp.clone(),
                last_transition_time: Some(now.clone()),
            });
            changed = true;
            became_unknown = true;
        }
        for c in conditions.iter_mut() {
            if !["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"]
                .contains(&c.type_.as_str())
                || c.status == "Unknown"
            {
                continue;
            }
            if c.type_ == "Ready" {
                became_unknown = true;
            }
            c.status = "Unknown".into();
            c.reason = Some("NodeStatusUnknown".into());
            c.message = Some("Kubelet stopped posting node status.".into());
            c.last_transition_time = Some(now.clone());
            changed = true;
        }
        if !changed {
            return Ok(());
        }
        info!(node = %name, "node stopped posting status; marking its conditions Unknown");
        let api: Api<Node> = Api::all(self.client.clone());
        *node = api
            .replace_status(&name, &PostParams::default(), node)
            .await
            .context("update node status")?;
        if became_unknown {
            self.events.normal(
                util::object_ref(node),
                "NodeNotReady",
                format!("Node {name} status is now: NodeNotReady"),
            );
            self.mark_pods_not_ready(&name).await;
        }
        Ok(())
    }

    /// `MarkPodsNotReady`.
    async fn mark_pods_not_ready(&self, node: &str) {
        for pod in self.pods_on(node) {
            if !util::is_pod_ready(&pod) {
                continue;
            }
            let mut p = (*pod).clone();
            let now = Time(jiff::Timestamp::now());
            if let Some(conds) = p.status.as_mut().and_then(|s| s.conditions.as_mut()) {
                for c in conds.iter_mut().filter(|c| c.type_ == "Ready") {
                    c.status = "False".into();
                    c.last_transition_time = Some(now.clone());
                }
            }
            let ns = p.metadata.namespace.clone().unwrap_or_default();
            let name = p.metadata.name.clone().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
            if let Err(e) = api.replace_status(&name, &PostParams::default(), &p).await {
                debug!(pod = %name, error = %e, "pod not marked NotReady");
            }
        }
    }

    fn pods_on(&self, node: &str) -> Vec<Arc<Pod>> {
        self.pods
            .list()
            .into_iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
            .collect()
    }

    /// Not-ready/unreachable taints from the Ready condition.
    async fn reconcile_taints(&self, node: &mut Node, evict_allowed: bool) -> anyhow::Result<()> {
        let name = node.metadata.name.clone().unwrap_or_default();
        let status = ready_status(node).to_string();
        let want_key = match status.as_str() {
            "True" => None,
            "False" => Some(TAINT_NOT_READY),
            _ => Some(TAINT_UNREACHABLE),
        };
        let taints = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        let ours = |t: &Taint| t.key == TAINT_NOT_READY || t.key == TAINT_UNREACHABLE;
        let mut next: Vec<Taint> = taints
            .iter()
            .filter(|t| !ours(t) || Some(t.key.as_str()) == want_key)
            .cloned()
            .collect();
        if let Some(key) = want_key {
            if !next
                .iter()
                .any(|t| t.key == key && t.effect == "NoSchedule")
            {
                next.push(Taint {
                    key: key.into(),
                    effect: "NoSchedule".into(),
                    value: None,
                    time_added: None,
                });
            }
            if !next.iter().any(|t| t.key == key && t.effect == "NoExecute") && evict_allowed {
                let zone = zone_of(node);
                let allowed = {
                    let mut last = self.last_taint.lock();
                    match last.get(&zone) {
                        Some(t) if t.elapsed() < TAINT_INTERVAL => false,
                        _ => {
                            last.insert(zone, Instant::now());
                            true
                        }
                    }
                };
                if allowed {
                    next.push(Taint {
                        key: key.into(),
                        effect: "NoExecute".into(),
                        value: None,
                        time_added: Some(Time(jiff::Timestamp::now())),
                    });
                }
            }
        }
        let key = |t: &Taint| (t.key.clone(), t.effect.clone());
        let before: BTreeMap<_, _> = taints.iter().map(|t| (key(t), ())).collect();
        let after: BTreeMap<_, _> = next.iter().map(|t| (key(t), ())).collect();
        if before == after {
            return Ok(());
        }
        info!(node = %name, ready = %status, taints = ?after.keys().collect::<Vec<_>>(), "updating node taints");
        node.spec.get_or_insert_with(Default::default).taints = (!next.is_empty()).then_some(next);
        let api: Api<Node> = Api::all(self.client.clone());
        *node = api
            .replace(&name, &PostParams::default(), node)
            .await
            .context("update node taints")?;
        Ok(())
    }

    /// The taint manager: evicts pods whose NoExecute toleration ran out.
    async fn taint_manager(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let now = jiff::Timestamp::now();
            for node in self.nodes.list() {
                let taints: Vec<Taint> = node
                    .spec
                    .as_ref()
                    .and_then(|s| s.taints.clone())
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|t| t.effect == "NoExecute")
                    .collect();
                if taints.is_empty() {
                    continue;
                }
                let name = node.metadata.name.clone().unwrap_or_default();
                for pod in self.pods_on(&name) {
                    if pod.metadata.deletion_timestamp.is_some() {
                        continue;
                    }
                    let Some(at) = eviction_time(&pod, &taints, now) else {
                        continue;
                    };
                    if at > now {
                        continue;
                    }
                    if let Err(e) = self.evict(&pod).await {
                        warn!(pod = ?pod.metadata.name, error = %format!("{e:#}"), "taint eviction failed");
                    }
                }
            }
        }
    }

    /// Marks the pod with DisruptionTarget and deletes it.
    async fn evict(&self, pod: &Pod) -> anyhow::Result<()> {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let mut p = pod.clone();
        let conds = p
            .status
            .get_or_insert_with(Default::default)
            .conditions
            .get_or_insert_with(Vec::new);
        if !conds.iter().any(|c| c.type_ == "DisruptionTarget") {
            conds.push(PodCondition {
                type_: "DisruptionTarget".into(),
                status: "True".into(),
                reason: Some("DeletionByTaintManager".into()),
                message: Some("Taint manager: deleting due to NoExecute taint".into()),
                last_transition_time: Some(Time(jiff::Timestamp::now())),
                ..Default::default()
            });
            if let Err(e) = api.replace_status(&name, &PostParams::default(), &p).await {
                debug!(pod = %name, error = %e, "DisruptionTarget not recorded");
            }
        }
        info!(namespace = %ns, pod = %name, "taint manager: deleting pod");
        self.events.normal(
            util::object_ref(pod),
            "TaintManagerEviction",
            format!("Marking for deletion Pod {ns}/{name}"),
        );
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(e) if util::is_not_found(&e) => Ok(()),
            Err(e) => Err(e).context("delete pod"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, secs_ago: i64) -> Taint {
        Taint {
            key: key.into(),
            effect: "NoExecute".into(),
            value: None,
            time_added: Some(Time(
                jiff::Timestamp::now() - jiff::SignedDuration::from_secs(secs_ago),
            )),
        }
    }

    #[test]
    fn default_and_explicit_tolerations() {
        let now = jiff::Timestamp::now();
        let pod = Pod::default();
        // Default 300 s.
        let at = eviction_time(&pod, &[taint(TAINT_UNREACHABLE, 10)], now).expect("finite");
        assert!(at > now + jiff::SignedDuration::from_secs(280));
        // An explicit 0 s toleration evicts at once; an untolerated taint too.
        let p = Pod {
            spec: Some(k8s_openapi::api::core::v1::PodSpec {
                tolerations: Some(vec![Toleration {
                    key: Some(TAINT_UNREACHABLE.into()),
                    operator: Some("Exists".into()),
                    effect: Some("NoExecute".into()),
                    toleration_seconds: Some(0),
                    value: None,
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(eviction_time(&p, &[taint(TAINT_UNREACHABLE, 1)], now).is_some_and(|t| t <= now));
        assert_eq!(eviction_time(&pod, &[taint("custom", 0)], now), Some(now));
        // Tolerating forever.
        let forever = Pod {
            spec: Some(k8s_openapi::api::core::v1::PodSpec {
                tolerations: Some(vec![Toleration {
                    operator: Some("Exists".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            eviction_time(&forever, &[taint(TAINT_UNREACHABLE, 1000)], now),
            None
        );
    }
}
