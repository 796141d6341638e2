//! The ReplicaSet controller (upstream `pkg/controller/replicaset`): keeps `spec.replicas`
//! active pods per ReplicaSet, adopting matching orphans and releasing pods that stop
//! matching, with expectations so a stale cache never makes it create or delete twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::future::join_all;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, PostParams};
use kumo_client::WorkQueue;
use tracing::{debug, info};

use crate::Ctx;
use crate::expectations::Expectations;
use crate::informer::{Change, Informer};
use crate::util::{self, Claim, Events};

/// Upstream's `BurstReplicas`: at most this many creates/deletes per sync.
const BURST_REPLICAS: usize = 500;

/// The ReplicaSet controller.
pub struct ReplicaSetController {
    client: kube::Client,
    pods: Arc<Informer<Pod>>,
    rss: Arc<Informer<ReplicaSet>>,
    queue: WorkQueue<String>,
    expectations: Expectations,
    events: Events,
}

impl ReplicaSetController {
    /// Builds the controller and registers its informer handlers.
    pub fn new(ctx: &Ctx) -> Arc<Self> {
        let c = Arc::new(ReplicaSetController {
            client: ctx.client.clone(),
            pods: ctx.factory.get::<Pod>(),
            rss: ctx.factory.get::<ReplicaSet>(),
            queue: ctx.queue("replicaset"),
            expectations: Expectations::new(),
            events: Events::new(ctx.client.clone(), "replicaset-controller"),
        });
        let weak = Arc::downgrade(&c);
        c.rss.add_handler(move |ch| {
            if let Some(c) = weak.upgrade() {
                let rs = match ch {
                    Change::Added(o) | Change::Deleted(o) => *o,
                    Change::Updated { new, .. } => *new,
                };
                if let Change::Deleted(o) = ch {
                    c.expectations.delete(&util::key_of(&o.metadata));
                }
                c.queue.add(util::key_of(&rs.metadata));
            }
        });
        let weak = Arc::downgrade(&c);
        c.pods.add_handler(move |ch| {
            if let Some(c) = weak.upgrade() {
                c.on_pod(ch);
            }
        });
        c
    }

    fn resolve(
        &self,
        ns: &str,
        owner: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
    ) -> Option<Arc<ReplicaSet>> {
        if owner.kind != "ReplicaSet" {
            return None;
        }
        let rs = self.rss.get(Some(ns), &owner.name)?;
        (rs.metadata.uid.as_deref() == Some(owner.uid.as_str())).then_some(rs)
    }

    fn replica_sets_for_orphan(&self, pod: &Pod) -> Vec<Arc<ReplicaSet>> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("");
        self.rss
            .list_namespace(ns)
            .into_iter()
            .filter(|rs| {
                rs.spec.as_ref().is_some_and(|s| {
                    !util::selector_is_empty(&s.selector)
                        && util::selector_matches(&s.selector, pod.metadata.labels.as_ref())
                })
            })
            .collect()
    }

    fn pod_deleted(&self, pod: &Pod) {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("");
        if let Some(cref) = util::controller_of(&pod.metadata)
            && let Some(rs) = self.resolve(ns, cref)
        {
            let key = util::key_of(&rs.metadata);
            self.expectations
                .deletion_observed(&key, &util::key_of(&pod.metadata));
            self.queue.add(key);
        }
    }

    fn on_pod(&self, ch: &Change<'_, Pod>) {
        match ch {
            Change::Added(pod) => {
                if util::is_deleting(&pod.metadata) {
                    self.pod_deleted(pod);
                    return;
                }
                let ns = pod.metadata.namespace.as_deref().unwrap_or("");
                if let Some(cref) = util::controller_of(&pod.metadata) {
                    if let Some(rs) = self.resolve(ns, cref) {
                        let key = util::key_of(&rs.metadata);
                        self.expectations.creation_observed(&key);
                        self.queue.add(key);
                    }
                    return;
                }
                for rs in self.replica_sets_for_orphan(pod) {
                    self.queue.add(util::key_of(&rs.metadata));
                }
            }
            Change::Updated { old, new } => {
                if old.metadata.resource_version == new.metadata.resource_version {
                    return;
                }
                let label_changed = old.metadata.labels != new.metadata.labels;
                if util::is_deleting(&new.metadata) {
                    self.pod_deleted(new);
                    if label_changed {
                        self.pod_deleted(old);
                    }
                    return;
                }
                let ns = new.metadata.namespace.as_deref().unwrap_or("");
                let cur = util::controller_of(&new.metadata);
                let prev = util::controller_of(&old.metadata);
                let changed = cur != prev;
                if changed
                    && let Some(prev) = prev
                    && let Some(rs) = self.resolve(ns, prev)
                {
                    self.queue.add(util::key_of(&rs.metadata));
                }
                if let Some(cur) = cur {
                    if let Some(rs) = self.resolve(ns, cur) {
                        let key = util::key_of(&rs.metadata);
                        self.queue.add(key.clone());
                        let min_ready = rs
                            .spec
                            .as_ref()
                            .and_then(|s| s.min_ready_seconds)
                            .unwrap_or(0);
                        if !util::is_pod_ready(old) && util::is_pod_ready(new) && min_ready > 0 {
                            self.queue.add_after(
                                key,
                                Duration::from_secs(u64::try_from(min_ready).unwrap_or(0) + 1),
                            );
                        }
                    }
                    return;
                }
                if label_changed || changed {
                    for rs in self.replica_sets_for_orphan(new) {
                        self.queue.add(util::key_of(&rs.metadata));
                    }
                }
            }
            Change::Deleted(pod) => self.pod_deleted(pod),
        }
    }

    /// Runs `workers` workers until the queue shuts down.
    pub async fn run(self: Arc<Self>, workers: usize) {
        self.pods.synced().await;
        self.rss.synced().await;
        info!("replicaset controller synced; starting workers");
        let c = self.clone();
        util::run_workers("replicaset", self.queue.clone(), workers, move |key| {
            let c = c.clone();
            async move { c.sync(&key).await }
        })
        .await;
    }

    /// `syncReplicaSet`.
    async fn sync(&self, key: &str) -> anyhow::Result<()> {
        let (ns, name) = util::split_key(key);
        let Some(rs) = self.rss.get(Some(ns), name) else {
            debug!("replicaset gone");
            self.expectations.delete(key);
            return Ok(());
        };
        let needs_sync = self.expectations.satisfied(key);
        let spec = rs.spec.clone().unwrap_or_default();
        let pods_api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        // Active pods of the namespace, then claim (adopt/release).
        let mut candidates: Vec<Arc<Pod>> = self
            .pods
            .list_namespace(ns)
            .into_iter()
            .filter(|p| util::is_pod_active(p))
            .collect();
        candidates.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let mut owned: Vec<Arc<Pod>> = Vec::new();
        let mut can_adopt: Option<bool> = None;
        for pod in candidates {
            let matches = !util::selector_is_empty(&spec.selector)
                && util::selector_matches(&spec.selector, pod.metadata.labels.as_ref());
            match util::claim_decision(&rs.metadata, &pod.metadata, matches) {
                Claim::Owned => owned.push(pod),
                Claim::NotOwned => {}
                Claim::Release => {
                    util::release(
                        &pods_api,
                        &pod.metadata,
                        rs.metadata.uid.as_deref().unwrap_or(""),
                    )
                    .await
                    .context("release pod")?;
                }
                Claim::Adopt => {
                    if can_adopt.is_none() {
                        can_adopt = Some(self.recheck_not_deleting(ns, &rs).await?);
                    }
                    if can_adopt != Some(true) {
                        continue;
                    }
                    match util::adopt(&pods_api, &pod.metadata, util::controller_ref(rs.as_ref()))
                        .await
                    {
                        Ok(p) => owned.push(Arc::new(p)),
                        Err(e) if util::is_not_found(&e) => {}
                        Err(e) => return Err(e).context("adopt pod"),
                    }
                }
            }
        }
        let mut manage_err: Option<(String, anyhow::Error)> = None;
        if needs_sync
            && !util::is_deleting(&rs.metadata)
            && let Err((reason, e)) = self.manage_replicas(key, &rs, &owned).await
        {
            manage_err = Some((reason, e));
        }
        let updated = self.update_status(&rs, &owned, manage_err.as_ref()).await?;
        if let Some((_, e)) = manage_err {
            return Err(e);
        }
        let replicas = updated.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        let st = updated.status.clone().unwrap_or_default();
        if min_ready > 0
            && st.ready_replicas.unwrap_or(0) == replicas
            && st.available_replicas.unwrap_or(0) != replicas
        {
            self.queue.add_after(
                key.to_string(),
                Duration::from_secs(u64::try_from(min_ready).unwrap_or(0)),
            );
        }
        Ok(())
    }

    /// `RecheckDeletionTimestamp`: a fresh read says the ReplicaSet (same UID) is not being
    /// deleted, so adopting is safe.
    async fn recheck_not_deleting(&self, ns: &str, rs: &ReplicaSet) -> anyhow::Result<bool> {
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), ns);
        let fresh = api
            .get_opt(rs.metadata.name.as_deref().unwrap_or(""))
            .await
            .context("recheck replicaset")?;
        Ok(fresh.is_some_and(|f| {
            f.metadata.uid == rs.metadata.uid && f.metadata.deletion_timestamp.is_none()
        }))
    }

    /// `manageReplicas`: create or delete pods toward `spec.replicas`.
    async fn manage_replicas(
        &self,
        key: &str,
        rs: &ReplicaSet,
        pods: &[Arc<Pod>],
    ) -> Result<(), (String, anyhow::Error)> {
        let spec = rs.spec.clone().unwrap_or_default();
        let want = usize::try_from(spec.replicas.unwrap_or(1).max(0)).unwrap_or(0);
        let ns = rs.metadata.namespace.clone().unwrap_or_default();
        let name = rs.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        if pods.len() < want {
            let diff = (want - pods.len()).min(BURST_REPLICAS);
            self.expectations.expect_creations(key, diff);
            info!(need = want, creating = diff, "too few replicas");
            let template = spec.template.clone().unwrap_or_default();
            let pod = pod_from_template(&template, rs);
            let mut created = 0usize;
            let mut remaining = diff;
            let mut batch = 1usize;
            let mut failure: Option<anyhow::Error> = None;
            while remaining > 0 {
                let n = batch.min(remaining);
                let pp = PostParams::default();
                let results = join_all((0..n).map(|_| api.create(&pp, &pod))).await;
                let mut batch_err = None;
                for r in results {
                    match r {
                        Ok(p) => {
                            created += 1;
                            self.events.normal(
                                util::object_ref(rs),
                                "SuccessfulCreate",
                                format!("Created pod: {}", p.metadata.name.unwrap_or_default()),
                            );
                        }
                        Err(e) => {
                            // This creation will never be observed.
                            self.expectations.creation_observed(key);
                            if util::is_namespace_terminating(&e) {
                                continue;
                            }
                            self.events.warning(
                                util::object_ref(rs),
                                "FailedCreate",
                                format!("Error creating: {e}"),
                            );
                            batch_err = Some(anyhow::Error::from(e));
                        }
                    }
                }
                remaining -= n;
                if let Some(e) = batch_err {
                    failure = Some(e);
                    break;
                }
                batch *= 2;
            }
            if failure.is_some() {
                // The creates we skipped will never be observed either.
                for _ in 0..remaining {
                    self.expectations.creation_observed(key);
                }
            }
            debug!(created, "created pods");
            if let Some(e) = failure {
                return Err((
                    "FailedCreate".into(),
                    e.context(format!("creating pods for {name}")),
                ));
            }
        } else if pods.len() > want {
            let diff = (pods.len() - want).min(BURST_REPLICAS);
            info!(need = want, deleting = diff, "too many replicas");
            let related = self.related_pods(rs);
            let victims = pods_to_delete(pods, &related, diff);
            self.expectations.expect_deletions(
                key,
                victims.iter().map(|p| util::key_of(&p.metadata)).collect(),
            );
            let results = join_all(victims.iter().map(|p| {
                let api = api.clone();
                async move {
                    let pname = p.metadata.name.clone().unwrap_or_default();
                    (p, api.delete(&pname, &DeleteParams::default()).await)
                }
            }))
            .await;
            let mut failure = None;
            for (p, r) in results {
                match r {
                    Ok(_) => self.events.normal(
                        util::object_ref(rs),
                        "SuccessfulDelete",
                        format!("Deleted pod: {}", p.metadata.name.as_deref().unwrap_or("")),
                    ),
                    Err(e) => {
                        self.expectations
                            .deletion_observed(key, &util::key_of(&p.metadata));
                        if !util::is_not_found(&e) {
                            self.events.warning(
                                util::object_ref(rs),
                                "FailedDelete",
                                format!("Error deleting: {e}"),
                            );
                            failure = Some(anyhow::Error::from(e));
                        }
                    }
                }
            }
            if let Some(e) = failure {
                return Err(("FailedDelete".into(), e));
            }
        }
        Ok(())
    }

    /// Pods controlled by ReplicaSets that share this ReplicaSet's controller (for ranking).
    fn related_pods(&self, rs: &ReplicaSet) -> Vec<Arc<Pod>> {
        let ns = rs.metadata.namespace.as_deref().unwrap_or("");
        let Some(owner) = util::controller_of(&rs.metadata) else {
            return Vec::new();
        };
        let siblings: Vec<String> = self
            .rss
            .list_namespace(ns)
            .into_iter()
            .filter(|r| util::controller_of(&r.metadata).is_some_and(|o| o.uid == owner.uid))
            .filter_map(|r| r.metadata.uid.clone())
            .collect();
        self.pods
            .list_namespace(ns)
            .into_iter()
            .filter(|p| {
                util::is_pod_active(p)
                    && util::controller_of(&p.metadata).is_some_and(|o| siblings.contains(&o.uid))
            })
            .collect()
    }

    /// `updateReplicaSetStatus` after `calculateStatus`.
    async fn update_status(
        &self,
        rs: &ReplicaSet,
        pods: &[Arc<Pod>],
        manage_err: Option<&(String, anyhow::Error)>,
    ) -> anyhow::Result<ReplicaSet> {
        let spec = rs.spec.clone().unwrap_or_default();
        let template_labels = spec
            .template
            .as_ref()
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        let now = jiff::Timestamp::now();
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        let mut fully = 0;
        let mut ready = 0;
        let mut available = 0;
        for p in pods {
            if util::map_selector_matches(&template_labels, p.metadata.labels.as_ref()) {
                fully += 1;
            }
            if util::is_pod_ready(p) {
                ready += 1;
                if util::is_pod_available(p, min_ready, now) {
                    available += 1;
                }
            }
        }
        let old = rs.status.clone().unwrap_or_default();
        let mut conditions = old.conditions.clone().unwrap_or_default();
        let has_failure = conditions.iter().any(|c| c.type_ == "ReplicaFailure");
        match manage_err {
            Some((reason, e)) if !has_failure => conditions.push(ReplicaSetCondition {
                type_: "ReplicaFailure".into(),
                status: "True".into(),
                reason: Some(reason.clone()),
                message: Some(format!("{e:#}")),
                last_transition_time: Some(Time(now)),
            }),
            None if has_failure => conditions.retain(|c| c.type_ != "ReplicaFailure"),
            _ => {}
        }
        let status = ReplicaSetStatus {
            replicas: i32::try_from(pods.len()).unwrap_or(i32::MAX),
            fully_labeled_replicas: Some(fully),
            ready_replicas: Some(ready),
            available_replicas: Some(available),
            observed_generation: rs.metadata.generation,
            conditions: (!conditions.is_empty()).then_some(conditions),
            terminating_replicas: old.terminating_replicas,
        };
        if normalize(&old) == normalize(&status) {
            return Ok(rs.clone());
        }
        let ns = rs.metadata.namespace.clone().unwrap_or_default();
        let name = rs.metadata.name.clone().unwrap_or_default();
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &ns);
        let mut target = rs.clone();
        for attempt in 0..2 {
            target.status = Some(status.clone());
            match api
                .replace_status(&name, &PostParams::default(), &target)
                .await
            {
                Ok(updated) => return Ok(updated),
                Err(e) if attempt == 0 && util::is_conflict(&e) => {
                    target = api.get(&name).await.context("refetch replicaset")?;
                    // Keep observedGeneration honest: we computed against the old generation.
                    if target.metadata.generation != rs.metadata.generation {
                        return Err(anyhow::anyhow!("replicaset changed while syncing"));
                    }
                }
                Err(e) if util::is_not_found(&e) => return Ok(rs.clone()),
                Err(e) => return Err(e).context("update replicaset status"),
            }
        }
        Err(anyhow::anyhow!("replicaset status update conflicted twice"))
    }
}

/// Counts, observed generation and condition (type, status) pairs of a status.
type StatusKey = (i32, i32, i32, i32, Option<i64>, Vec<(String, String)>);

/// The comparable parts of a status (zero and absent counts are equal).
fn normalize(s: &ReplicaSetStatus) -> StatusKey {
    (
        s.replicas,
        s.fully_labeled_replicas.unwrap_or(0),
        s.ready_replicas.unwrap_or(0),
        s.available_replicas.unwrap_or(0),
        s.observed_generation,
        s.conditions
            .as_deref()
            .unwrap_or(&[])
            .iter()
            .map(|c| (c.type_.clone(), c.status.clone()))
            .collect(),
    )
}

/// `GetPodFromTemplate`: a pod to create for `rs` (generateName `<rs>-`).
fn pod_from_template(
    template: &k8s_openapi::api::core::v1::PodTemplateSpec,
    rs: &ReplicaSet,
) -> Pod {
    let tm = template.metadata.clone().unwrap_or_default();
    let name = rs.metadata.name.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            namespace: rs.metadata.namespace.clone(),
            generate_name: Some(format!("{name}-")),
            labels: tm.labels,
            annotations: tm.annotations,
            finalizers: tm.finalizers,
            owner_references: Some(vec![util::controller_ref(rs)]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// Phase rank for deletion order: Pending < Unknown < Running.
fn phase_rank(p: &Pod) -> u8 {
    match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None => 0,
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 0,
    }
}

/// `getPodsToDelete` with `ActivePodsWithRanks`: the `n` pods it is cheapest to delete
/// (unscheduled, pending, not ready, lower deletion cost, doubled up on a node, ready for a
/// shorter time, more restarts, newer first).
pub fn pods_to_delete(pods: &[Arc<Pod>], related: &[Arc<Pod>], n: usize) -> Vec<Arc<Pod>> {
    if n >= pods.len() {
        return pods.to_vec();
    }
    let mut per_node: HashMap<String, i32> = HashMap::new();
    for p in related {
        if let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
            *per_node.entry(node).or_insert(0) += 1;
        }
    }
    let rank = |p: &Pod| -> i32 {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .and_then(|n| per_node.get(n).copied())
            .unwrap_or(0)
    };
    let cost = |p: &Pod| -> i64 {
        p.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("controller.kubernetes.io/pod-deletion-cost"))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let restarts = |p: &Pod| -> i32 {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .map(|cs| cs.iter().map(|c| c.restart_count).max().unwrap_or(0))
            .unwrap_or(0)
    };
    let ready_time = |p: &Pod| util::pod_ready_since(p).flatten().map(|t| t.0);
    let mut sorted = pods.to_vec();
    sorted.sort_by(|a, b| {
        let assigned = |p: &Pod| {
            p.spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_some_and(|n| !n.is_empty())
        };
        assigned(a)
            .cmp(&assigned(b))
            .then(phase_rank(a).cmp(&phase_rank(b)))
            .then(util::is_pod_ready(a).cmp(&util::is_pod_ready(b)))
            .then(cost(a).cmp(&cost(b)))
            .then(rank(b).cmp(&rank(a)))
            .then_with(|| match (ready_time(a), ready_time(b)) {
                // Ready more recently is deleted first.
                (Some(x), Some(y)) => y.cmp(&x),
                _ => std::cmp::Ordering::Equal,
            })
            .then(restarts(b).cmp(&restarts(a)))
            .then_with(|| {
                let ct = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
                // Newer pods first (empty creation time first).
                match (ct(a), ct(b)) {
                    (None, None) => std::cmp::Ordering::Equal,
                    (None, Some(_)) => std::cmp::Ordering::Less,
                    (Some(_), None) => std::cmp::Ordering::Greater,
                    (Some(x), Some(y)) => y.cmp(&x),
                }
            })
    });
    sorted.truncate(n);
    sorted
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};

    fn pod(name: &str, node: Option<&str>, ready: bool) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(str::to_string),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(if node.is_some() { "Running" } else { "Pending" }.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        })
    }

    #[test]
    fn deletes_unscheduled_and_unready_first() {
        let pods = vec![
            pod("running-ready", Some("n1"), true),
            pod("pending", None, false),
            pod("running-unready", Some("n1"), false),
        ];
        let out = pods_to_delete(&pods, &[], 2);
        let names: Vec<_> = out.iter().filter_map(|p| p.metadata.name.clone()).collect();
        assert_eq!(names, vec!["pending", "running-unready"]);
    }
}
