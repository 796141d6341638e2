//! The Deployment controller (upstream `pkg/controller/deployment`): one ReplicaSet per pod
//! template (`<deployment>-<pod-template-hash>`), RollingUpdate within maxSurge /
//! maxUnavailable, Recreate, proportional scaling, revisions and revision history, pause,
//! progress deadline conditions and old-ReplicaSet cleanup. Rollback is `kubectl rollout
//! undo` writing an old template back: the matching old ReplicaSet becomes the new one again
//! and gets the next revision.

pub mod util;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kumo_client::WorkQueue;
use tracing::{debug, info};

use self::util as du;
use crate::Ctx;
use crate::informer::{Change, Informer};
use crate::util::{self as cu, Claim, Events};

/// The Deployment controller.
pub struct DeploymentController {
    client: kube::Client,
    deployments: Arc<Informer<Deployment>>,
    rss: Arc<Informer<ReplicaSet>>,
    pods: Arc<Informer<Pod>>,
    queue: WorkQueue<String>,
    events: Events,
}

/// Which ReplicaSet `find_active_or_latest` picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pick {
    New,
    Old(usize),
}

impl DeploymentController {
    /// Builds the controller and registers its informer handlers.
    pub fn new(ctx: &Ctx) -> Arc<Self> {
        let c = Arc::new(DeploymentController {
            client: ctx.client.clone(),
            deployments: ctx.factory.get::<Deployment>(),
            rss: ctx.factory.get::<ReplicaSet>(),
            pods: ctx.factory.get::<Pod>(),
            queue: ctx.queue("deployment"),
            events: Events::new(ctx.client.clone(), "deployment-controller"),
        });
        let weak = Arc::downgrade(&c);
        c.deployments.add_handler(move |ch| {
            if let Some(c) = weak.upgrade() {
                let d = match ch {
                    Change::Added(o) | Change::Deleted(o) => *o,
                    Change::Updated { new, .. } => *new,
                };
                c.queue.add(cu::key_of(&d.metadata));
            }
        });
        let weak = Arc::downgrade(&c);
        c.rss.add_handler(move |ch| {
            if let Some(c) = weak.upgrade() {
                c.on_replica_set(ch);
            }
        });
        let weak = Arc::downgrade(&c);
        c.pods.add_handler(move |ch| {
            if let Some(c) = weak.upgrade()
                && let Change::Deleted(pod) = ch
            {
                c.on_pod_deleted(pod);
            }
        });
        c
    }

    fn resolve(
        &self,
        ns: &str,
        owner: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
    ) -> Option<Arc<Deployment>> {
        if owner.kind != "Deployment" {
            return None;
        }
        let d = self.deployments.get(Some(ns), &owner.name)?;
        (d.metadata.uid.as_deref() == Some(owner.uid.as_str())).then_some(d)
    }

    fn enqueue_matching(&self, rs: &ReplicaSet) {
        let ns = rs.metadata.namespace.as_deref().unwrap_or("");
        for d in self.deployments.list_namespace(ns) {
            let Some(spec) = d.spec.as_ref() else {
                continue;
            };
            if !cu::selector_is_empty(&spec.selector)
                && cu::selector_matches(&spec.selector, rs.metadata.labels.as_ref())
            {
                self.queue.add(cu::key_of(&d.metadata));
            }
        }
    }

    fn on_replica_set(&self, ch: &Change<'_, ReplicaSet>) {
        match ch {
            Change::Added(rs) | Change::Deleted(rs) => {
                let ns = rs.metadata.namespace.as_deref().unwrap_or("");
                if let Some(cref) = cu::controller_of(&rs.metadata) {
                    if let Some(d) = self.resolve(ns, cref) {
                        self.queue.add(cu::key_of(&d.metadata));
                    }
                    return;
                }
                if matches!(ch, Change::Added(_)) && !cu::is_deleting(&rs.metadata) {
                    self.enqueue_matching(rs);
                }
            }
            Change::Updated { old, new } => {
                if old.metadata.resource_version == new.metadata.resource_version {
                    return;
                }
                let ns = new.metadata.namespace.as_deref().unwrap_or("");
                let cur = cu::controller_of(&new.metadata);
                let prev = cu::controller_of(&old.metadata);
                if cur != prev
                    && let Some(prev) = prev
                    && let Some(d) = self.resolve(ns, prev)
                {
                    self.queue.add(cu::key_of(&d.metadata));
                }
                if let Some(cur) = cur {
                    if let Some(d) = self.resolve(ns, cur) {
                        self.queue.add(cu::key_of(&d.metadata));
                    }
                    return;
                }
                if old.metadata.labels != new.metadata.labels || cur != prev {
                    self.enqueue_matching(new);
                }
            }
        }
    }

    fn on_pod_deleted(&self, pod: &Pod) {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("");
        let Some(cref) = cu::controller_of(&pod.metadata) else {
            return;
        };
        if cref.kind != "ReplicaSet" {
            return;
        }
        let Some(rs) = self.rss.get(Some(ns), &cref.name) else {
            return;
        };
        if let Some(dref) = cu::controller_of(&rs.metadata)
            && let Some(d) = self.resolve(ns, dref)
            && !du::is_rolling_update(&d)
        {
            self.queue.add(cu::key_of(&d.metadata));
        }
    }

    /// Runs `workers` workers until the queue shuts down.
    pub async fn run(self: Arc<Self>, workers: usize) {
        self.deployments.synced().await;
        self.rss.synced().await;
        self.pods.synced().await;
        info!("deployment controller synced; starting workers");
        let c = self.clone();
        cu::run_workers("deployment", self.queue.clone(), workers, move |key| {
            let c = c.clone();
            async move { c.sync(&key).await }
        })
        .await;
    }

    fn d_api(&self, ns: &str) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), ns)
    }

    fn rs_api(&self, ns: &str) -> Api<ReplicaSet> {
        Api::namespaced(self.client.clone(), ns)
    }

    /// `syncDeployment`.
    async fn sync(&self, key: &str) -> anyhow::Result<()> {
        let (ns, name) = cu::split_key(key);
        let Some(cached) = self.deployments.get(Some(ns), name) else {
            debug!("deployment has been deleted");
            return Ok(());
        };
        let mut d: Deployment = (*cached).clone();
        let selector = d
            .spec
            .as_ref()
            .map(|s| s.selector.clone())
            .unwrap_or_default();
        if cu::selector_is_empty(&selector) {
            self.events.warning(
                cu::object_ref(&d),
                "SelectingAll",
                "This deployment is selecting all pods. A non-empty selector is required.".into(),
            );
            let st = d.status.clone().unwrap_or_default();
            if st.observed_generation.unwrap_or(0) < d.metadata.generation.unwrap_or(0) {
                let mut st = st;
                st.observed_generation = d.metadata.generation;
                self.update_status(&mut d, st).await?;
            }
            return Ok(());
        }
        let mut rs_list = self.replica_sets_for(&d, &selector).await?;
        if cu::is_deleting(&d.metadata) {
            let (new_rs, olds) = self.get_all(&mut d, &mut rs_list, false).await?;
            return self
                .sync_deployment_status(&mut d, new_rs.as_ref(), &olds)
                .await;
        }
        self.check_paused_conditions(&mut d).await?;
        let paused = d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
        if paused {
            return self.sync_scale(&mut d, &mut rs_list).await;
        }
        if self.is_scaling_event(&mut d, &mut rs_list).await? {
            return self.sync_scale(&mut d, &mut rs_list).await;
        }
        if du::is_rolling_update(&d) {
            self.rollout_rolling(&mut d, &mut rs_list).await
        } else {
            self.rollout_recreate(&mut d, &mut rs_list).await
        }
    }

    /// `getReplicaSetsForDeployment`: claims ReplicaSets (adopting matching orphans,
    /// releasing owned ones that stopped matching).
    async fn replica_sets_for(
        &self,
        d: &Deployment,
        selector: &LabelSelector,
    ) -> anyhow::Result<Vec<ReplicaSet>> {
        let ns = d.metadata.namespace.as_deref().unwrap_or("");
        let api = self.rs_api(ns);
        let mut out = Vec::new();
        let mut can_adopt: Option<bool> = None;
        for rs in self.rss.list_namespace(ns) {
            let matches = cu::selector_matches(selector, rs.metadata.labels.as_ref());
            match cu::claim_decision(&d.metadata, &rs.metadata, matches) {
                Claim::Owned => out.push((*rs).clone()),
                Claim::NotOwned => {}
                Claim::Release => {
                    cu::release(&api, &rs.metadata, d.metadata.uid.as_deref().unwrap_or(""))
                        .await
                        .context("release replicaset")?;
                }
                Claim::Adopt => {
                    if can_adopt.is_none() {
                        let fresh = self
                            .d_api(ns)
                            .get_opt(d.metadata.name.as_deref().unwrap_or(""))
                            .await
                            .context("recheck deployment")?;
                        can_adopt = Some(fresh.is_some_and(|f| {
                            f.metadata.uid == d.metadata.uid
                                && f.metadata.deletion_timestamp.is_none()
                        }));
                    }
                    if can_adopt == Some(true) {
                        match cu::adopt(&api, &rs.metadata, cu::controller_ref(d)).await {
                            Ok(r) => out.push(r),
                            Err(e) if cu::is_not_found(&e) => {}
                            Err(e) => return Err(e).context("adopt replicaset"),
                        }
                    }
                }
            }
        }
        du::sort_by_creation(&mut out);
        Ok(out)
    }

    /// `getAllReplicaSetsAndSyncRevision`: (new, old) ReplicaSets, creating the new one if
    /// asked. `rs_list` is kept current with what was written.
    async fn get_all(
        &self,
        d: &mut Deployment,
        rs_list: &mut Vec<ReplicaSet>,
        create: bool,
    ) -> anyhow::Result<(Option<ReplicaSet>, Vec<ReplicaSet>)> {
        du::sort_by_creation(rs_list);
        let idx = du::find_new_rs(d, rs_list);
        let olds: Vec<ReplicaSet> = rs_list
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != idx)
            .map(|(_, r)| r.clone())
            .collect();
        let existing = idx.map(|i| rs_list[i].clone());
        let new_rs = self.get_new_rs(d, existing, &olds, create).await?;
        if let Some(n) = &new_rs {
            match rs_list
                .iter_mut()
                .find(|r| r.metadata.uid == n.metadata.uid)
            {
                Some(slot) => *slot = n.clone(),
                None => rs_list.push(n.clone()),
            }
        }
        Ok((new_rs, olds))
    }

    /// `getNewReplicaSet`.
    async fn get_new_rs(
        &self,
        d: &mut Deployment,
        existing: Option<ReplicaSet>,
        olds: &[ReplicaSet],
        create: bool,
    ) -> anyhow::Result<Option<ReplicaSet>> {
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let old_refs: Vec<&ReplicaSet> = olds.iter().collect();
        let new_revision = (du::max_revision(&old_refs) + 1).to_string();
        let min_ready = d.spec.as_ref().and_then(|s| s.min_ready_seconds);
        if let Some(rs) = existing {
            let mut copy = rs.clone();
            let annotations_updated = du::set_new_rs_annotations(
                d,
                &mut copy,
                &new_revision,
                true,
                du::MAX_REV_HISTORY_CHARS,
            );
            let spec = copy.spec.get_or_insert_with(ReplicaSetSpec::default);
            let min_ready_changed = spec.min_ready_seconds.unwrap_or(0) != min_ready.unwrap_or(0);
            let rs = if annotations_updated || min_ready_changed {
                spec.min_ready_seconds = min_ready;
                self.rs_api(&ns)
                    .replace(
                        copy.metadata.name.as_deref().unwrap_or(""),
                        &PostParams::default(),
                        &copy,
                    )
                    .await
                    .context("update new replicaset annotations")?
            } else {
                rs
            };
            let rs_revision = rs
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(du::REVISION))
                .cloned()
                .unwrap_or_default();
            self.set_deployment_revision(d, &rs_revision).await?;
            let mut status = d.status.clone().unwrap_or_default();
            if du::has_progress_deadline(d) && du::condition(&status, "Progressing").is_none() {
                du::set_condition(
                    &mut status,
                    du::new_condition(
                        "Progressing",
                        "True",
                        du::reason::FOUND_NEW_RS,
                        format!(
                            "Found new replica set {:?}",
                            rs.metadata.name.as_deref().unwrap_or("")
                        ),
                    ),
                );
                self.update_status(d, status).await?;
            }
            return Ok(Some(rs));
        }
        if !create {
            return Ok(None);
        }
        let spec = d.spec.clone().unwrap_or_default();
        let collision = d.status.as_ref().and_then(|s| s.collision_count);
        let hash = du::compute_hash(&spec.template, collision);
        let mut template = spec.template.clone();
        let tm = template.metadata.get_or_insert_with(ObjectMeta::default);
        tm.labels
            .get_or_insert_with(BTreeMap::new)
            .insert(du::POD_TEMPLATE_HASH.into(), hash.clone());
        let labels = tm.labels.clone();
        let mut selector = spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(du::POD_TEMPLATE_HASH.into(), hash.clone());
        let d_name = d.metadata.name.clone().unwrap_or_default();
        let rs_name = format!("{d_name}-{hash}");
        let mut new_rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(rs_name.clone()),
                namespace: Some(ns.clone()),
                owner_references: Some(vec![cu::controller_ref(d)]),
                labels,
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: min_ready,
                selector,
                template: Some(template),
            }),
            status: None,
        };
        let mut all: Vec<&ReplicaSet> = olds.iter().collect();
        all.push(&new_rs);
        let new_replicas = du::new_rs_new_replicas(d, &all, &new_rs);
        if let Some(s) = new_rs.spec.as_mut() {
            s.replicas = Some(new_replicas);
        }
        du::set_new_rs_annotations(
            d,
            &mut new_rs,
            &new_revision,
            false,
            du::MAX_REV_HISTORY_CHARS,
        );
        let api = self.rs_api(&ns);
        let mut already_exists = false;
        let created = match api.create(&PostParams::default(), &new_rs).await {
            Ok(rs) => rs,
            Err(e) if cu::is_already_exists(&e) => {
                let rs = api.get(&rs_name).await.context("get existing replicaset")?;
                let ours = cu::controller_of(&rs.metadata)
                    .is_some_and(|o| Some(&o.uid) == d.metadata.uid.as_ref());
                let same = rs
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|t| du::equal_ignore_hash(t, &spec.template));
                if ours && same {
                    already_exists = true;
                    rs
                } else {
                    // A hash collision: bump collisionCount so the next hash differs.
                    let mut status = d.status.clone().unwrap_or_default();
                    status.collision_count = Some(status.collision_count.unwrap_or(0) + 1);
                    let count = status.collision_count;
                    self.update_status(d, status).await?;
                    return Err(anyhow!(
                        "found a hash collision for deployment {d_name:?}; bumped collisionCount to {count:?} to resolve it"
                    ));
                }
            }
            Err(e) => {
                if du::has_progress_deadline(d) {
                    let mut status = d.status.clone().unwrap_or_default();
                    du::set_condition(
                        &mut status,
                        du::new_condition(
                            "Progressing",
                            "False",
                            du::reason::FAILED_RS_CREATE,
                            format!("Failed to create new replica set {rs_name:?}: {e}"),
                        ),
                    );
                    self.update_status(d, status).await?;
                }
                return Err(e).context("create new replicaset");
            }
        };
        if !already_exists && new_replicas > 0 {
            self.events.normal(
                cu::object_ref(d),
                "ScalingReplicaSet",
                format!("Scaled up replica set {rs_name} from 0 to {new_replicas}"),
            );
        }
        self.set_deployment_revision(d, &new_revision).await?;
        if !already_exists && du::has_progress_deadline(d) {
            let mut status = d.status.clone().unwrap_or_default();
            du::set_condition(
                &mut status,
                du::new_condition(
                    "Progressing",
                    "True",
                    du::reason::NEW_RS_CREATED,
                    format!("Created new replica set {rs_name:?}"),
                ),
            );
            self.update_status(d, status).await?;
        }
        Ok(Some(created))
    }

    /// `SetDeploymentRevision` and its write (an annotation patch: kumo's status subresource
    /// keeps metadata).
    async fn set_deployment_revision(
        &self,
        d: &mut Deployment,
        revision: &str,
    ) -> anyhow::Result<()> {
        let current = d
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(du::REVISION))
            .map(String::as_str);
        if current == Some(revision) || revision.is_empty() {
            return Ok(());
        }
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let name = d.metadata.name.clone().unwrap_or_default();
        let patch = serde_json::json!({"metadata": {"annotations": {du::REVISION: revision}}});
        let updated = self
            .d_api(&ns)
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .context("set deployment revision")?;
        // Keep our (possibly newer) status; take the server's metadata.
        d.metadata = updated.metadata;
        Ok(())
    }

    /// Writes `status` through `/status`, keeping `d` current.
    async fn update_status(
        &self,
        d: &mut Deployment,
        status: DeploymentStatus,
    ) -> anyhow::Result<()> {
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let name = d.metadata.name.clone().unwrap_or_default();
        let mut target = d.clone();
        target.status = Some(status);
        let updated = self
            .d_api(&ns)
            .replace_status(&name, &PostParams::default(), &target)
            .await
            .context("update deployment status")?;
        *d = updated;
        Ok(())
    }

    /// `checkPausedConditions`.
    async fn check_paused_conditions(&self, d: &mut Deployment) -> anyhow::Result<()> {
        if !du::has_progress_deadline(d) {
            return Ok(());
        }
        let mut status = d.status.clone().unwrap_or_default();
        let cond = du::condition(&status, "Progressing");
        if cond.is_some_and(|c| c.reason.as_deref() == Some(du::reason::TIMED_OUT)) {
            return Ok(());
        }
        let paused_cond = cond.is_some_and(|c| c.reason.as_deref() == Some(du::reason::PAUSED));
        let paused = d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
        if paused && !paused_cond {
            du::set_condition(
                &mut status,
                du::new_condition(
                    "Progressing",
                    "Unknown",
                    du::reason::PAUSED,
                    "Deployment is paused".into(),
                ),
            );
        } else if !paused && paused_cond {
            du::set_condition(
                &mut status,
                du::new_condition(
                    "Progressing",
                    "Unknown",
                    du::reason::RESUMED,
                    "Deployment is resumed".into(),
                ),
            );
        } else {
            return Ok(());
        }
        self.update_status(d, status).await
    }

    /// `isScalingEvent`: an active ReplicaSet's desired-replicas annotation differs from
    /// `spec.replicas`.
    async fn is_scaling_event(
        &self,
        d: &mut Deployment,
        rs_list: &mut Vec<ReplicaSet>,
    ) -> anyhow::Result<bool> {
        let (new_rs, olds) = self.get_all(d, rs_list, false).await?;
        let want = du::replicas(d);
        Ok(olds
            .iter()
            .chain(new_rs.iter())
            .filter(|r| du::rs_replicas(r) > 0)
            .any(|r| du::desired_replicas_annotation(r).is_some_and(|v| v != want)))
    }

    /// `sync`: scaling and status only (paused Deployments and scaling events).
    async fn sync_scale(
        &self,
        d: &mut Deployment,
        rs_list: &mut Vec<ReplicaSet>,
    ) -> anyhow::Result<()> {
        let (mut new_rs, mut olds) = self.get_all(d, rs_list, false).await?;
        self.scale(d, &mut new_rs, &mut olds).await?;
        let paused = d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
        if paused {
            self.cleanup(d, &olds).await?;
        }
        self.sync_deployment_status(d, new_rs.as_ref(), &olds).await
    }

    /// `scaleReplicaSetAndRecordEvent`: no-op when the size is right.
    async fn scale_and_record(
        &self,
        rs: &mut ReplicaSet,
        new_scale: i32,
        d: &Deployment,
    ) -> anyhow::Result<bool> {
        if du::rs_replicas(rs) == new_scale {
            return Ok(false);
        }
        self.scale_rs(rs, new_scale, d).await
    }

    /// `scaleReplicaSet`: size and replicas annotations; an event when the size changed.
    async fn scale_rs(
        &self,
        rs: &mut ReplicaSet,
        new_scale: i32,
        d: &Deployment,
    ) -> anyhow::Result<bool> {
        let old = du::rs_replicas(rs);
        let size_changed = old != new_scale;
        let want = du::replicas(d);
        let max = want + du::max_surge(d);
        if !size_changed && !du::replicas_annotations_need_update(rs, want, max) {
            return Ok(false);
        }
        let mut copy = rs.clone();
        copy.spec
            .get_or_insert_with(ReplicaSetSpec::default)
            .replicas = Some(new_scale);
        du::set_replicas_annotations(&mut copy, want, max);
        let ns = copy.metadata.namespace.clone().unwrap_or_default();
        let name = copy.metadata.name.clone().unwrap_or_default();
        *rs = self
            .rs_api(&ns)
            .replace(&name, &PostParams::default(), &copy)
            .await
            .with_context(|| format!("scale replicaset {name}"))?;
        if size_changed {
            let op = if old < new_scale { "up" } else { "down" };
            self.events.normal(
                cu::object_ref(d),
                "ScalingReplicaSet",
                format!("Scaled {op} replica set {name} from {old} to {new_scale}"),
            );
        }
        Ok(size_changed)
    }

    /// `FindActiveOrLatest`.
    fn find_active_or_latest(new_rs: &Option<ReplicaSet>, olds: &[ReplicaSet]) -> Option<Pick> {
        if new_rs.is_none() && olds.is_empty() {
            return None;
        }
        let mut active: Vec<Pick> = Vec::new();
        // Newest old first, then new (the order doesn't matter for 0/1 active).
        let mut order: Vec<usize> = (0..olds.len()).collect();
        order.sort_by(|a, b| {
            let ta = olds[*a].metadata.creation_timestamp.as_ref().map(|t| t.0);
            let tb = olds[*b].metadata.creation_timestamp.as_ref().map(|t| t.0);
            tb.cmp(&ta)
        });
        for i in &order {
            if du::rs_replicas(&olds[*i]) > 0 {
                active.push(Pick::Old(*i));
            }
        }
        if new_rs.as_ref().is_some_and(|n| du::rs_replicas(n) > 0) {
            active.push(Pick::New);
        }
        match active.len() {
            0 => {
                if new_rs.is_some() {
                    Some(Pick::New)
                } else {
                    order.first().map(|i| Pick::Old(*i))
                }
            }
            1 => Some(active[0]),
            _ => None,
        }
    }

    /// `scale`: proportional scaling across active ReplicaSets.
    async fn scale(
        &self,
        d: &Deployment,
        new_rs: &mut Option<ReplicaSet>,
        olds: &mut [ReplicaSet],
    ) -> anyhow::Result<()> {
        let want = du::replicas(d);
        if let Some(pick) = Self::find_active_or_latest(new_rs, olds) {
            let rs = match pick {
                Pick::New => match new_rs.as_mut() {
                    Some(r) => r,
                    None => return Ok(()),
                },
                Pick::Old(i) => &mut olds[i],
            };
            if du::rs_replicas(rs) == want {
                return Ok(());
            }
            self.scale_and_record(rs, want, d).await?;
            return Ok(());
        }
        if du::is_saturated(d, new_rs.as_ref()) {
            for rs in olds.iter_mut().filter(|r| du::rs_replicas(r) > 0) {
                self.scale_and_record(rs, 0, d).await?;
            }
            return Ok(());
        }
        if !du::is_rolling_update(d) {
            return Ok(());
        }
        // Active ReplicaSets as (is_new, old index).
        let mut active: Vec<Option<usize>> = (0..olds.len())
            .filter(|i| du::rs_replicas(&olds[*i]) > 0)
            .map(Some)
            .collect();
        if new_rs.as_ref().is_some_and(|n| du::rs_replicas(n) > 0) {
            active.push(None);
        }
        let get = |which: &Option<usize>,
                   new_rs: &Option<ReplicaSet>,
                   olds: &[ReplicaSet]|
         -> Option<ReplicaSet> {
            match which {
                Some(i) => olds.get(*i).cloned(),
                None => new_rs.clone(),
            }
        };
        let snapshot: Vec<ReplicaSet> =
            active.iter().filter_map(|w| get(w, new_rs, olds)).collect();
        let refs: Vec<&ReplicaSet> = snapshot.iter().collect();
        let total = du::replica_count(&refs);
        let mut allowed = want;
        if want > 0 {
            allowed += du::max_surge(d);
        }
        let to_add = allowed - total;
        // Largest first; ties: newer first when adding, older first when removing.
        let mut order: Vec<usize> = (0..snapshot.len()).collect();
        order.sort_by(|a, b| {
            let (ra, rb) = (&snapshot[*a], &snapshot[*b]);
            let ta = ra.metadata.creation_timestamp.as_ref().map(|t| t.0);
            let tb = rb.metadata.creation_timestamp.as_ref().map(|t| t.0);
            du::rs_replicas(rb)
                .cmp(&du::rs_replicas(ra))
                .then(if to_add > 0 { tb.cmp(&ta) } else { ta.cmp(&tb) })
        });
        let mut sizes: Vec<i32> = snapshot.iter().map(du::rs_replicas).collect();
        let mut added = 0;
        if to_add != 0 {
            for &i in &order {
                let p = du::proportion(&snapshot[i], d, to_add, added);
                sizes[i] = du::rs_replicas(&snapshot[i]) + p;
                added += p;
            }
            if let Some(&first) = order.first() {
                sizes[first] = (sizes[first] + to_add - added).max(0);
            }
        }
        for &i in &order {
            let rs = match active[i] {
                Some(idx) => &mut olds[idx],
                None => match new_rs.as_mut() {
                    Some(r) => r,
                    None => continue,
                },
            };
            self.scale_rs(rs, sizes[i], d).await?;
        }
        Ok(())
    }

    /// `rolloutRolling`.
    async fn rollout_rolling(
        &self,
        d: &mut Deployment,
        rs_list: &mut Vec<ReplicaSet>,
    ) -> anyhow::Result<()> {
        let (new_rs, mut olds) = self.get_all(d, rs_list, true).await?;
        let Some(mut new_rs) = new_rs else {
            return Err(anyhow!("no new replicaset"));
        };
        // Scale up, if we can.
        if self.reconcile_new_rs(d, &mut new_rs, &olds).await? {
            return self.sync_rollout_status(d, Some(&new_rs), &olds).await;
        }
        // Scale down, if we can.
        if self.reconcile_old_rss(d, &new_rs, &mut olds).await? {
            return self.sync_rollout_status(d, Some(&new_rs), &olds).await;
        }
        if du::is_complete(d, &d.status.clone().unwrap_or_default()) {
            self.cleanup(d, &olds).await?;
        }
        self.sync_rollout_status(d, Some(&new_rs), &olds).await
    }

    /// `reconcileNewReplicaSet`.
    async fn reconcile_new_rs(
        &self,
        d: &Deployment,
        new_rs: &mut ReplicaSet,
        olds: &[ReplicaSet],
    ) -> anyhow::Result<bool> {
        let want = du::replicas(d);
        let have = du::rs_replicas(new_rs);
        if have == want {
            return Ok(false);
        }
        if have > want {
            return self.scale_and_record(new_rs, want, d).await;
        }
        let mut all: Vec<&ReplicaSet> = olds.iter().collect();
        all.push(new_rs);
        let n = du::new_rs_new_replicas(d, &all, new_rs);
        self.scale_and_record(new_rs, n, d).await
    }

    /// `reconcileOldReplicaSets`.
    async fn reconcile_old_rss(
        &self,
        d: &Deployment,
        new_rs: &ReplicaSet,
        olds: &mut [ReplicaSet],
    ) -> anyhow::Result<bool> {
        let old_refs: Vec<&ReplicaSet> = olds.iter().filter(|r| du::rs_replicas(r) > 0).collect();
        if du::replica_count(&old_refs) == 0 {
            return Ok(false);
        }
        let mut all: Vec<&ReplicaSet> = olds.iter().collect();
        all.push(new_rs);
        let all_pods = du::replica_count(&all);
        let min_available = du::replicas(d) - du::max_unavailable(d);
        let new_unavailable = du::rs_replicas(new_rs)
            - new_rs
                .status
                .as_ref()
                .and_then(|s| s.available_replicas)
                .unwrap_or(0);
        let max_scaled_down = all_pods - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(false);
        }
        // Clean up unhealthy replicas first (they only lower availability).
        du::sort_by_creation(olds);
        let mut cleaned = 0;
        for rs in olds.iter_mut() {
            if cleaned >= max_scaled_down {
                break;
            }
            let spec_replicas = du::rs_replicas(rs);
            let available = rs
                .status
                .as_ref()
                .and_then(|s| s.available_replicas)
                .unwrap_or(0);
            if spec_replicas == 0 || spec_replicas == available {
                continue;
            }
            let n = (max_scaled_down - cleaned).min(spec_replicas - available);
            self.scale_and_record(rs, spec_replicas - n, d).await?;
            cleaned += n;
        }
        // Then scale down within maxUnavailable.
        let mut all: Vec<&ReplicaSet> = olds.iter().collect();
        all.push(new_rs);
        let available = du::available_replica_count(&all);
        let mut scaled = 0;
        if available > min_available {
            let total = available - min_available;
            for rs in olds.iter_mut() {
                if scaled >= total {
                    break;
                }
                let r = du::rs_replicas(rs);
                if r == 0 {
                    continue;
                }
                let n = r.min(total - scaled);
                self.scale_and_record(rs, r - n, d).await?;
                scaled += n;
            }
        }
        Ok(cleaned + scaled > 0)
    }

    /// `rolloutRecreate`: every old pod gone before the new ReplicaSet scales up.
    async fn rollout_recreate(
        &self,
        d: &mut Deployment,
        rs_list: &mut Vec<ReplicaSet>,
    ) -> anyhow::Result<()> {
        let (mut new_rs, mut olds) = self.get_all(d, rs_list, false).await?;
        let mut scaled_down = false;
        for rs in olds.iter_mut().filter(|r| du::rs_replicas(r) > 0) {
            if self.scale_and_record(rs, 0, d).await? {
                scaled_down = true;
            }
        }
        if scaled_down {
            return self.sync_rollout_status(d, new_rs.as_ref(), &olds).await;
        }
        if self.old_pods_running(new_rs.as_ref(), &olds) {
            return self.sync_rollout_status(d, new_rs.as_ref(), &olds).await;
        }
        if new_rs.is_none() {
            let (n, o) = self.get_all(d, rs_list, true).await?;
            new_rs = n;
            olds = o;
        }
        if let Some(rs) = new_rs.as_mut()
            && self.scale_and_record(rs, du::replicas(d), d).await?
        {
            return self.sync_rollout_status(d, new_rs.as_ref(), &olds).await;
        }
        if du::is_complete(d, &d.status.clone().unwrap_or_default()) {
            self.cleanup(d, &olds).await?;
        }
        self.sync_rollout_status(d, new_rs.as_ref(), &olds).await
    }

    /// `oldPodsRunning`.
    fn old_pods_running(&self, new_rs: Option<&ReplicaSet>, olds: &[ReplicaSet]) -> bool {
        let old_refs: Vec<&ReplicaSet> = olds.iter().collect();
        if du::actual_replica_count(&old_refs) > 0 {
            return true;
        }
        let old_uids: Vec<&str> = olds
            .iter()
            .filter_map(|r| r.metadata.uid.as_deref())
            .collect();
        let new_uid = new_rs.and_then(|r| r.metadata.uid.as_deref());
        let ns = olds
            .first()
            .and_then(|r| r.metadata.namespace.clone())
            .unwrap_or_default();
        self.pods.list_namespace(&ns).iter().any(|p| {
            let Some(owner) = cu::controller_of(&p.metadata) else {
                return false;
            };
            if Some(owner.uid.as_str()) == new_uid || !old_uids.contains(&owner.uid.as_str()) {
                return false;
            }
            !cu::is_pod_terminated(p)
        })
    }

    /// `cleanupDeployment`: deletes the oldest idle ReplicaSets beyond revisionHistoryLimit.
    async fn cleanup(&self, d: &Deployment, olds: &[ReplicaSet]) -> anyhow::Result<()> {
        let Some(limit) = d.spec.as_ref().and_then(|s| s.revision_history_limit) else {
            return Ok(());
        };
        if limit == i32::MAX {
            return Ok(());
        }
        let mut alive: Vec<&ReplicaSet> = olds
            .iter()
            .filter(|r| !cu::is_deleting(&r.metadata))
            .collect();
        let diff = i64::try_from(alive.len()).unwrap_or(0) - i64::from(limit.max(0));
        if diff <= 0 {
            return Ok(());
        }
        alive.sort_by(|a, b| {
            du::revision(a).cmp(&du::revision(b)).then_with(|| {
                let ta = a.metadata.creation_timestamp.as_ref().map(|t| t.0);
                let tb = b.metadata.creation_timestamp.as_ref().map(|t| t.0);
                ta.cmp(&tb)
            })
        });
        for rs in alive.iter().take(usize::try_from(diff).unwrap_or(0)) {
            let st = rs.status.clone().unwrap_or_default();
            if st.replicas != 0
                || du::rs_replicas(rs) != 0
                || rs.metadata.generation.unwrap_or(0) > st.observed_generation.unwrap_or(0)
            {
                continue;
            }
            let ns = rs.metadata.namespace.clone().unwrap_or_default();
            let name = rs.metadata.name.clone().unwrap_or_default();
            info!(replicaset = %name, "cleaning up old replicaset beyond revisionHistoryLimit");
            match self
                .rs_api(&ns)
                .delete(&name, &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(e) if cu::is_not_found(&e) => {}
                Err(e) => return Err(e).context("delete old replicaset"),
            }
        }
        Ok(())
    }

    /// `syncDeploymentStatus`.
    async fn sync_deployment_status(
        &self,
        d: &mut Deployment,
        new_rs: Option<&ReplicaSet>,
        olds: &[ReplicaSet],
    ) -> anyhow::Result<()> {
        let mut all: Vec<&ReplicaSet> = olds.iter().collect();
        if let Some(n) = new_rs {
            all.push(n);
        }
        let status = du::calculate_status(&all, new_rs, d);
        if du::status_equal(&d.status.clone().unwrap_or_default(), &status) {
            return Ok(());
        }
        self.update_status(d, status).await
    }

    /// `syncRolloutStatus`: status plus the Progressing condition, then requeue a rollout
    /// that may hit its progress deadline.
    async fn sync_rollout_status(
        &self,
        d: &mut Deployment,
        new_rs: Option<&ReplicaSet>,
        olds: &[ReplicaSet],
    ) -> anyhow::Result<()> {
        let mut all: Vec<&ReplicaSet> = olds.iter().collect();
        if let Some(n) = new_rs {
            all.push(n);
        }
        let mut status = du::calculate_status(&all, new_rs, d);
        if !du::has_progress_deadline(d) {
            du::remove_condition(&mut status, "Progressing");
        }
        let old_status = d.status.clone().unwrap_or_default();
        let current = du::condition(&old_status, "Progressing").cloned();
        let complete_already = status.replicas == status.updated_replicas
            && current
                .as_ref()
                .is_some_and(|c| c.reason.as_deref() == Some(du::reason::NEW_RS_AVAILABLE));
        let d_name = d.metadata.name.clone().unwrap_or_default();
        let rs_name = new_rs.and_then(|r| r.metadata.name.clone());
        if du::has_progress_deadline(d) && !complete_already {
            if du::is_complete(d, &status) {
                let msg = match &rs_name {
                    Some(n) => format!("ReplicaSet {n:?} has successfully progressed."),
                    None => format!("Deployment {d_name:?} has successfully progressed."),
                };
                du::set_condition(
                    &mut status,
                    du::new_condition("Progressing", "True", du::reason::NEW_RS_AVAILABLE, msg),
                );
            } else if du::is_progressing(d, &status) {
                let msg = match &rs_name {
                    Some(n) => format!("ReplicaSet {n:?} is progressing."),
                    None => format!("Deployment {d_name:?} is progressing."),
                };
                let mut cond =
                    du::new_condition("Progressing", "True", du::reason::RS_UPDATED, msg);
                if let Some(cur) = &current {
                    if cur.status == "True" {
                        cond.last_transition_time = cur.last_transition_time.clone();
                    }
                    du::remove_condition(&mut status, "Progressing");
                }
                du::set_condition(&mut status, cond);
            } else if du::is_timed_out(d, &status, jiff::Timestamp::now()) {
                let msg = match &rs_name {
                    Some(n) => format!("ReplicaSet {n:?} has timed out progressing."),
                    None => format!("Deployment {d_name:?} has timed out progressing."),
                };
                du::set_condition(
                    &mut status,
                    du::new_condition("Progressing", "False", du::reason::TIMED_OUT, msg),
                );
            }
        }
        // ReplicaFailure mirrors the new ReplicaSet's failure condition.
        let failure = new_rs
            .and_then(|r| r.status.as_ref())
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "ReplicaFailure").cloned());
        match failure {
            Some(f) => du::set_condition(
                &mut status,
                du::new_condition(
                    "ReplicaFailure",
                    &f.status,
                    f.reason.as_deref().unwrap_or(""),
                    f.message.clone().unwrap_or_default(),
                ),
            ),
            None => du::remove_condition(&mut status, "ReplicaFailure"),
        }
        if du::status_equal(&old_status, &status) {
            self.requeue_stuck(d, &status);
            return Ok(());
        }
        self.update_status(d, status.clone()).await?;
        self.requeue_stuck(d, &status);
        Ok(())
    }

    /// `requeueStuckDeployment`: check again when the progress deadline would pass.
    fn requeue_stuck(&self, d: &Deployment, status: &DeploymentStatus) {
        if !du::has_progress_deadline(d) {
            return;
        }
        let Some(cond) = du::condition(status, "Progressing") else {
            return;
        };
        if du::is_complete(d, status) || cond.reason.as_deref() == Some(du::reason::TIMED_OUT) {
            return;
        }
        let Some(updated) = cond.last_update_time.as_ref() else {
            return;
        };
        let deadline = d
            .spec
            .as_ref()
            .and_then(|s| s.progress_deadline_seconds)
            .unwrap_or(600);
        let at = updated.0 + jiff::SignedDuration::from_secs(i64::from(deadline));
        let after = at.duration_since(jiff::Timestamp::now());
        let key = cu::key_of(&d.metadata);
        if after < jiff::SignedDuration::from_secs(1) {
            self.queue.add_rate_limited(key);
        } else {
            let secs = after.as_secs_f64();
            self.queue.add_after(key, Duration::from_secs_f64(secs));
        }
    }
}
