//! The DaemonSet controller (upstream `pkg/controller/daemon`): one pod per eligible node
//! (nodeSelector, required node affinity, taints tolerated with the daemon tolerations
//! added), pinned with a `metadata.name` node-affinity term for the scheduler; extra,
//! misplaced and failed pods deleted; RollingUpdate within maxUnavailable (OnDelete waits);
//! ControllerRevisions and `controller-revision-hash`; upstream's status counts.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, PostParams};
use kumo_client::WorkQueue;
use tracing::info;

use crate::Ctx;
use crate::deployment::util::scaled_value;
use crate::expectations::Expectations;
use crate::history::{self, REVISION_HASH};
use crate::informer::{Change, Informer};
use crate::nodelifecycle::tolerates;
use crate::util::{self, Events};

/// The DaemonSet controller.
pub struct DaemonSetController {
    client: kube::Client,
    daemonsets: Arc<Informer<DaemonSet>>,
    pods: Arc<Informer<Pod>>,
    nodes: Arc<Informer<Node>>,
    revisions: Arc<Informer<ControllerRevision>>,
    queue: WorkQueue<String>,
    expectations: Expectations,
    events: Events,
}

/// The tolerations upstream adds to every daemon pod.
fn daemon_tolerations(host_network: bool) -> Vec<Toleration> {
    let t = |key: &str, effect: &str| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        toleration_seconds: None,
        value: None,
    };
    let mut v = vec![
        t("node.kubernetes.io/not-ready", "NoExecute"),
        t("node.kubernetes.io/unreachable", "NoExecute"),
        t("node.kubernetes.io/disk-pressure", "NoSchedule"),
        t("node.kubernetes.io/memory-pressure", "NoSchedule"),
        t("node.kubernetes.io/pid-pressure", "NoSchedule"),
        t("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if host_network {
        v.push(t("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    v
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&String>) -> bool {
    let values = r.values.as_deref().unwrap_or(&[]);
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|b| b.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// Whether the node passes the template's nodeSelector and required node affinity.
fn node_matches(pod_spec: &k8s_openapi::api::core::v1::PodSpec, node: &Node) -> bool {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    if let Some(sel) = &pod_spec.node_selector
        && !sel.iter().all(|(k, v)| labels.get(k) == Some(v))
    {
        return false;
    }
    let name = node.metadata.name.clone().unwrap_or_default();
    let required = pod_spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    match required {
        None => true,
        Some(sel) => sel.node_selector_terms.iter().any(|term| {
            let exprs_ok = term
                .match_expressions
                .iter()
                .flatten()
                .all(|r| requirement_matches(r, labels.get(&r.key)));
            let fields_ok = term
                .match_fields
                .iter()
                .flatten()
                .all(|r| r.key == "metadata.name" && requirement_matches(r, Some(&name)));
            let empty = term.match_expressions.as_ref().is_none_or(|e| e.is_empty())
                && term.match_fields.as_ref().is_none_or(|e| e.is_empty());
            !empty && exprs_ok && fields_ok
        }),
    }
}

/// `nodeShouldRunDaemonPod`: selector/affinity match and every NoSchedule/NoExecute taint
/// tolerated (with the daemon tolerations).
pub fn should_run(pod_spec: &k8s_openapi::api::core::v1::PodSpec, node: &Node) -> bool {
    if !node_matches(pod_spec, node) {
        return false;
    }
    let mut tols = pod_spec.tolerations.clone().unwrap_or_default();
    tols.extend(daemon_tolerations(pod_spec.host_network.unwrap_or(false)));
    let taints: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|t| tols.iter().any(|tol| tolerates(tol, t)))
}

/// The node a daemon pod is for: `spec.nodeName`, or the `metadata.name` affinity term.
fn target_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.clone().filter(|n| !n.is_empty()) {
        return Some(n);
    }
    spec.affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|f| f.key == "metadata.name" && f.operator == "In")
        .and_then(|f| f.values.as_ref()?.first().cloned())
}

impl DaemonSetController {
    /// Builds the controller and registers its handlers.
    pub fn new(ctx: &Ctx) -> Arc<Self> {
        let c = Arc::new(DaemonSetController {
            client: ctx.client.clone(),
            daemonsets: ctx.factory.get::<DaemonSet>(),
            pods: ctx.factory.get::<Pod>(),
            nodes: ctx.factory.get_cluster::<Node>(),
            revisions: ctx.factory.get::<ControllerRevision>(),
            queue: ctx.queue("daemonset"),
            expectations: Expectations::new(),
            events: Events::new(ctx.client.clone(), "daemonset-controller"),
        });
        let weak = Arc::downgrade(&c);
        c.daemonsets.add_handler(move |ch| {
            if let Some(c) = weak.upgrade() {
                let d = match ch {
                    Change::Added(o) | Change::Deleted(o) => *o,
                    Change::Updated { new, .. } => *new,
                };
                c.queue.add(util::key_of(&d.metadata));
            }
        });
        let weak = Arc::downgrade(&c);
        c.pods.add_handler(move |ch| {
            if let Some(c) = weak.upgrade() {
                let (p, added, deleted) = match ch {
                    Change::Added(o) => (*o, true, false),
                    Change::Deleted(o) => (*o, false, true),
                    Change::Updated { new, .. } => (*new, false, false),
                };
                if let Some(o) = util::controller_of(&p.metadata)
                    && o.kind == "DaemonSet"
                {
                    let key = format!(
                        "{}/{}",
                        p.metadata.namespace.as_deref().unwrap_or(""),
                        o.name
                    );
                    if added {
                        c.expectations.creation_observed(&key);
                    }
                    if deleted || p.metadata.deletion_timestamp.is_some() {
                        c.expectations
                            .deletion_observed(&key, &util::key_of(&p.metadata));
                    }
                    c.queue.add(key);
                }
            }
        });
        let weak = Arc::downgrade(&c);
        c.nodes.add_handler(move |ch| {
            if let Some(c) = weak.upgrade() {
                if let Change::Updated { old, new } = ch
                    && old.metadata.labels == new.metadata.labels
                    && old.spec == new.spec
                {
                    return;
                }
                for ds in c.daemonsets.list() {
                    c.queue.add(util::key_of(&ds.metadata));
                }
            }
        });
        c
    }

    /// Runs the workers.
    pub async fn run(self: Arc<Self>, workers: usize) {
        self.daemonsets.synced().await;
        self.pods.synced().await;
        self.nodes.synced().await;
        self.revisions.synced().await;
        info!("daemonset controller synced; starting workers");
        let c = self.clone();
        util::run_workers("daemonset", self.queue.clone(), workers, move |key| {
            let c = c.clone();
            async move { c.sync(&key).await }
        })
        .await;
    }

    async fn sync(&self, key: &str) -> anyhow::Result<()> {
        let (ns, name) = util::split_key(key);
        let Some(ds) = self.daemonsets.get(Some(ns), name) else {
            self.expectations.delete(key);
            return Ok(());
        };
        let ds = (*ds).clone();
        if util::is_deleting(&ds.metadata) {
            return Ok(());
        }
        let spec = ds.spec.clone().unwrap_or_default();
        let uid = ds.metadata.uid.clone().unwrap_or_default();
        let template = spec.template.clone();
        let revisions: Vec<Arc<ControllerRevision>> = self
            .revisions
            .list_namespace(ns)
            .into_iter()
            .filter(|r| util::controller_of(&r.metadata).is_some_and(|o| o.uid == uid))
            .collect();
        let collision = ds.status.as_ref().and_then(|s| s.collision_count);
        let (_cur, hash) = history::ensure_revision(
            &Api::namespaced(self.client.clone(), ns),
            util::controller_ref(&ds),
            spec.selector.match_labels.clone(),
            &template,
            collision,
            &revisions,
        )
        .await?;
        let pods: Vec<Arc<Pod>> = self
            .pods
            .list_namespace(ns)
            .into_iter()
            .filter(|p| util::controller_of(&p.metadata).is_some_and(|o| o.uid == uid))
            .collect();
        let mut by_node: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
        for p in &pods {
            if let Some(n) = target_node(p) {
                by_node.entry(n).or_default().push(p.clone());
            }
        }
        let pod_spec = template.spec.clone().unwrap_or_default();
        let nodes = self.nodes.list();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let mut to_create: Vec<String> = Vec::new();
        let mut to_delete: Vec<Arc<Pod>> = Vec::new();
        let mut status = DaemonSetStatus {
            observed_generation: ds.metadata.generation,
            collision_count: collision,
            ..Default::default()
        };
        let now = jiff::Timestamp::now();
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        let mut unavailable_old: Vec<Arc<Pod>> = Vec::new();
        let mut available_old: Vec<Arc<Pod>> = Vec::new();
        let mut unavailable = 0;
        for node in &nodes {
            let nname = node.metadata.name.clone().unwrap_or_default();
            let run = should_run(&pod_spec, node);
            let mut here: Vec<Arc<Pod>> = by_node.remove(&nname).unwrap_or_default();
            here.retain(|p| {
                if p.metadata.deletion_timestamp.is_some() {
                    return false;
                }
                if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed") {
                    to_delete.push(p.clone());
                    return false;
                }
                true
            });
            if run {
                status.desired_number_scheduled += 1;
                if here.is_empty() {
                    to_create.push(nname.clone());
                    unavailable += 1;
                    continue;
                }
                status.current_number_scheduled += 1;
                here.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
                to_delete.extend(here.iter().skip(1).cloned());
                let p = &here[0];
                let updated = p
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(REVISION_HASH))
                    == Some(&hash);
                let ready = util::is_pod_ready(p);
                let available = util::is_pod_available(p, min_ready, now);
                if ready {
                    status.number_ready += 1;
                }
                if available {
                    status.number_available = Some(status.number_available.unwrap_or(0) + 1);
                } else {
                    unavailable += 1;
                }
                if updated {
                    status.updated_number_scheduled =
                        Some(status.updated_number_scheduled.unwrap_or(0) + 1);
                } else if available {
                    available_old.push(p.clone());
                } else {
                    unavailable_old.push(p.clone());
                }
            } else if !here.is_empty() {
                status.number_misscheduled += 1;
                to_delete.extend(here);
            }
        }
        // Pods for nodes that no longer exist.
        for (_, ps) in by_node {
            to_delete.extend(
                ps.into_iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none()),
            );
        }
        status.number_unavailable = Some(unavailable);
        // RollingUpdate: replace old pods, unavailable ones first, within maxUnavailable.
        let strategy = spec.update_strategy.clone().unwrap_or_default();
        if strategy.type_.as_deref().unwrap_or("RollingUpdate") == "RollingUpdate" {
            let max_unav = strategy
                .rolling_update
                .as_ref()
                .and_then(|r| r.max_unavailable.clone())
                .unwrap_or(IntOrString::Int(1));
            let budget = scaled_value(&max_unav, status.desired_number_scheduled, true).max(1);
            to_delete.extend(unavailable_old);
            let room = usize::try_from((budget - unavailable).max(0)).unwrap_or(0);
            to_delete.extend(available_old.into_iter().take(room));
        }
        if self.expectations.satisfied(key) {
            self.manage(key, &ds, &api, &to_create, &to_delete, &hash)
                .await?;
        }
        let live_hashes: Vec<String> = pods
            .iter()
            .filter_map(|p| p.metadata.labels.as_ref()?.get(REVISION_HASH).cloned())
            .chain(std::iter::once(hash.clone()))
            .collect();
        history::truncate(
            &self.client,
            ns,
            &revisions,
            &live_hashes,
            spec.revision_history_limit.unwrap_or(10),
        )
        .await?;
        let old = ds.status.clone().unwrap_or_default();
        if old != status {
            let dapi: Api<DaemonSet> = Api::namespaced(self.client.clone(), ns);
            let mut target = ds.clone();
            target.status = Some(status);
            dapi.replace_status(name, &PostParams::default(), &target)
                .await
                .context("update daemonset status")?;
        }
        if min_ready > 0 {
            self.queue.add_after(
                key.to_string(),
                std::time::Duration::from_secs(u64::try_from(min_ready).unwrap_or(0)),
            );
        }
        Ok(())
    }

    async fn manage(
        &self,
        key: &str,
        ds: &DaemonSet,
        api: &Api<Pod>,
        create: &[String],
        delete: &[Arc<Pod>],
        hash: &str,
    ) -> anyhow::Result<()> {
        let spec = ds.spec.clone().unwrap_or_default();
        let name = ds.metadata.name.clone().unwrap_or_default();
        if !create.is_empty() {
            self.expectations.expect_creations(key, create.len());
        } else if !delete.is_empty() {
            self.expectations.expect_deletions(
                key,
                delete.iter().map(|p| util::key_of(&p.metadata)).collect(),
            );
        }
        for node in create {
            let tm = spec.template.metadata.clone().unwrap_or_default();
            let mut labels: BTreeMap<String, String> = tm.labels.clone().unwrap_or_default();
            labels.insert(REVISION_HASH.into(), hash.into());
            labels.insert(
                "pod-template-generation".into(),
                ds.metadata.generation.unwrap_or(1).to_string(),
            );
            let mut pspec = spec.template.spec.clone().unwrap_or_default();
            // Pin to the node through affinity (the scheduler binds it).
            let term = NodeSelectorTerm {
                match_fields: Some(vec![NodeSelectorRequirement {
                    key: "metadata.name".into(),
                    operator: "In".into(),
                    values: Some(vec![node.clone()]),
                }]),
                match_expressions: None,
            };
            let affinity = pspec.affinity.get_or_insert_with(Affinity::default);
            let na = affinity
                .node_affinity
                .get_or_insert_with(NodeAffinity::default);
            na.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
                node_selector_terms: vec![term],
            });
            let mut tols = pspec.tolerations.clone().unwrap_or_default();
            for t in daemon_tolerations(pspec.host_network.unwrap_or(false)) {
                if !tols.iter().any(|x| x.key == t.key && x.effect == t.effect) {
                    tols.push(t);
                }
            }
            pspec.tolerations = Some(tols);
            let pod = Pod {
                metadata: ObjectMeta {
                    generate_name: Some(format!("{name}-")),
                    namespace: ds.metadata.namespace.clone(),
                    labels: Some(labels),
                    annotations: tm.annotations.clone(),
                    finalizers: tm.finalizers.clone(),
                    owner_references: Some(vec![util::controller_ref(ds)]),
                    ..Default::default()
                },
                spec: Some(pspec),
                status: None,
            };
            match api.create(&PostParams::default(), &pod).await {
                Ok(p) => self.events.normal(
                    util::object_ref(ds),
                    "SuccessfulCreate",
                    format!("Created pod: {}", p.metadata.name.unwrap_or_default()),
                ),
                Err(e) => {
                    self.expectations.creation_observed(key);
                    if !util::is_namespace_terminating(&e) {
                        return Err(e).context("create daemon pod");
                    }
                }
            }
        }
        if create.is_empty() {
            for p in delete {
                let pname = p.metadata.name.clone().unwrap_or_default();
                match api.delete(&pname, &DeleteParams::default()).await {
                    Ok(_) => self.events.normal(
                        util::object_ref(ds),
                        "SuccessfulDelete",
                        format!("Deleted pod: {pname}"),
                    ),
                    Err(e) if util::is_not_found(&e) => {
                        self.expectations
                            .deletion_observed(key, &util::key_of(&p.metadata));
                    }
                    Err(e) => {
                        self.expectations
                            .deletion_observed(key, &util::key_of(&p.metadata));
                        return Err(e).context("delete daemon pod");
                    }
                }
            }
        }
        Ok(())
    }
}
