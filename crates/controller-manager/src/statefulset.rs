//! The StatefulSet controller (upstream `pkg/controller/statefulset`): pods `<set>-<ordinal>`
//! with stable hostnames (`subdomain` = serviceName) and PersistentVolumeClaims
//! `<claim>-<set>-<ordinal>` from volumeClaimTemplates; OrderedReady creates in ordinal
//! order, each only when its predecessors are Running and Ready, and removes from the
//! highest ordinal down, one at a time (Parallel does not wait); RollingUpdate replaces pods
//! from the highest ordinal down to `partition`, one at a time; ControllerRevisions give
//! `currentRevision`/`updateRevision`.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, PostParams};
use kumo_client::WorkQueue;
use tracing::{debug, info};

use crate::Ctx;
use crate::history::{self, REVISION_HASH};
use crate::informer::{Change, Informer};
use crate::util::{self, Events};

/// `statefulset.kubernetes.io/pod-name`.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// `apps.kubernetes.io/pod-index`.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// The StatefulSet controller.
pub struct StatefulSetController {
    client: kube::Client,
    sets: Arc<Informer<StatefulSet>>,
    pods: Arc<Informer<Pod>>,
    revisions: Arc<Informer<ControllerRevision>>,
    queue: WorkQueue<String>,
    events: Events,
}

/// The ordinal of `pod` in set `set` (`<set>-<n>`).
pub fn ordinal(set: &str, pod: &str) -> Option<i32> {
    pod.strip_prefix(set)?.strip_prefix('-')?.parse().ok()
}

fn running_and_ready(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") && util::is_pod_ready(p)
}

impl StatefulSetController {
    /// Builds the controller and registers its handlers.
    pub fn new(ctx: &Ctx) -> Arc<Self> {
        let c = Arc::new(StatefulSetController {
            client: ctx.client.clone(),
            sets: ctx.factory.get::<StatefulSet>(),
            pods: ctx.factory.get::<Pod>(),
            revisions: ctx.factory.get::<ControllerRevision>(),
            queue: ctx.queue("statefulset"),
            events: Events::new(ctx.client.clone(), "statefulset-controller"),
        });
        let weak = Arc::downgrade(&c);
        c.sets.add_handler(move |ch| {
            if let Some(c) = weak.upgrade() {
                let s = match ch {
                    Change::Added(o) | Change::Deleted(o) => *o,
                    Change::Updated { new, .. } => *new,
                };
                c.queue.add(util::key_of(&s.metadata));
            }
        });
        let weak = Arc::downgrade(&c);
        c.pods.add_handler(move |ch| {
            if let Some(c) = weak.upgrade() {
                let p = match ch {
                    Change::Added(o) | Change::Deleted(o) => *o,
                    Change::Updated { new, .. } => *new,
                };
                if let Some(o) = util::controller_of(&p.metadata)
                    && o.kind == "StatefulSet"
                {
                    c.queue.add(format!(
                        "{}/{}",
                        p.metadata.namespace.as_deref().unwrap_or(""),
                        o.name
                    ));
                }
            }
        });
        c
    }

    /// Runs the workers.
    pub async fn run(self: Arc<Self>, workers: usize) {
        self.sets.synced().await;
        self.pods.synced().await;
        self.revisions.synced().await;
        info!("statefulset controller synced; starting workers");
        let c = self.clone();
        util::run_workers("statefulset", self.queue.clone(), workers, move |key| {
            let c = c.clone();
            async move { c.sync(&key).await }
        })
        .await;
    }

    fn new_pod(
        &self,
        set: &StatefulSet,
        i: i32,
        hash: &str,
        template: &k8s_openapi::api::core::v1::PodTemplateSpec,
    ) -> Pod {
        let spec = set.spec.clone().unwrap_or_default();
        let name = set.metadata.name.clone().unwrap_or_default();
        let pod_name = format!("{name}-{i}");
        let tm = template.metadata.clone().unwrap_or_default();
        let mut labels: BTreeMap<String, String> = tm.labels.clone().unwrap_or_default();
        labels.insert(REVISION_HASH.into(), hash.into());
        labels.insert(POD_NAME_LABEL.into(), pod_name.clone());
        labels.insert(POD_INDEX_LABEL.into(), i.to_string());
        let mut pspec = template.spec.clone().unwrap_or_default();
        pspec.hostname = Some(pod_name.clone());
        if !spec.service_name.as_deref().unwrap_or("").is_empty() {
            pspec.subdomain = spec.service_name.clone();
        }
        for claim in spec.volume_claim_templates.iter().flatten() {
            let cname = claim.metadata.name.clone().unwrap_or_default();
            let vols = pspec.volumes.get_or_insert_with(Vec::new);
            vols.retain(|v| v.name != cname);
            vols.push(Volume {
                name: cname.clone(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: format!("{cname}-{pod_name}"),
                    read_only: None,
                }),
                ..Default::default()
            });
        }
        Pod {
            metadata: ObjectMeta {
                name: Some(pod_name),
                namespace: set.metadata.namespace.clone(),
                labels: Some(labels),
                annotations: tm.annotations.clone(),
                finalizers: tm.finalizers.clone(),
                owner_references: Some(vec![util::controller_ref(set)]),
                ..Default::default()
            },
            spec: Some(pspec),
            status: None,
        }
    }

    /// Creates the pod's claims that do not exist.
    async fn ensure_claims(&self, set: &StatefulSet, pod_name: &str) -> anyhow::Result<()> {
        let spec = set.spec.clone().unwrap_or_default();
        let ns = set.metadata.namespace.clone().unwrap_or_default();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &ns);
        for claim in spec.volume_claim_templates.iter().flatten() {
            let cname = format!(
                "{}-{pod_name}",
                claim.metadata.name.clone().unwrap_or_default()
            );
            if api.get_opt(&cname).await.context("get pvc")?.is_some() {
                continue;
            }
            let mut labels = spec.selector.match_labels.clone().unwrap_or_default();
            labels.extend(claim.metadata.labels.clone().unwrap_or_default());
            let pvc = PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(cname.clone()),
                    namespace: Some(ns.clone()),
                    labels: Some(labels),
                    annotations: claim.metadata.annotations.clone(),
                    ..Default::default()
                },
                spec: claim.spec.clone(),
                status: None,
            };
            match api.create(&PostParams::default(), &pvc).await {
                Ok(_) => self.events.normal(
                    util::object_ref(set),
                    "SuccessfulCreate",
                    format!(
                        "create Claim {cname} Pod {pod_name} in StatefulSet {} success",
                        set.metadata.name.as_deref().unwrap_or("")
                    ),
                ),
                Err(e) if util::is_already_exists(&e) => {}
                Err(e) => return Err(e).context("create pvc"),
            }
        }
        Ok(())
    }

    async fn sync(&self, key: &str) -> anyhow::Result<()> {
        let (ns, name) = util::split_key(key);
        let Some(set) = self.sets.get(Some(ns), name) else {
            return Ok(());
        };
        let set = (*set).clone();
        if util::is_deleting(&set.metadata) {
            return Ok(());
        }
        let spec = set.spec.clone().unwrap_or_default();
        let uid = set.metadata.uid.clone().unwrap_or_default();
        let revisions: Vec<Arc<ControllerRevision>> = self
            .revisions
            .list_namespace(ns)
            .into_iter()
            .filter(|r| util::controller_of(&r.metadata).is_some_and(|o| o.uid == uid))
            .collect();
        let status0 = set.status.clone().unwrap_or_default();
        let (update_rev, update_hash) = history::ensure_revision(
            &Api::namespaced(self.client.clone(), ns),
            util::controller_ref(&set),
            spec.selector.match_labels.clone(),
            &spec.template,
            status0.collision_count,
            &revisions,
        )
        .await?;
        let update_name = update_rev.metadata.name.clone().unwrap_or_default();
        let current_name = status0
            .current_revision
            .clone()
            .filter(|c| {
                revisions
                    .iter()
                    .any(|r| r.metadata.name.as_deref() == Some(c.as_str()))
            })
            .unwrap_or_else(|| update_name.clone());
        let current_rev = revisions
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(current_name.as_str()))
            .map(|r| (**r).clone())
            .unwrap_or_else(|| update_rev.clone());
        let current_hash = current_rev
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(REVISION_HASH).cloned())
            .unwrap_or_else(|| update_hash.clone());
        let current_template =
            history::revision_template(&current_rev).unwrap_or_else(|| spec.template.clone());
        let replicas = spec.replicas.unwrap_or(1).max(0);
        let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
        let pods: Vec<Arc<Pod>> = self
            .pods
            .list_namespace(ns)
            .into_iter()
            .filter(|p| util::controller_of(&p.metadata).is_some_and(|o| o.uid == uid))
            .collect();
        let mut slots: BTreeMap<i32, Arc<Pod>> = BTreeMap::new();
        let mut condemned: Vec<Arc<Pod>> = Vec::new();
        for p in &pods {
            match ordinal(name, p.metadata.name.as_deref().unwrap_or("")) {
                Some(i) if i < replicas => {
                    slots.insert(i, p.clone());
                }
                _ => condemned.push(p.clone()),
            }
        }
        condemned.sort_by_key(|p| {
            std::cmp::Reverse(
                ordinal(name, p.metadata.name.as_deref().unwrap_or("")).unwrap_or(i32::MAX),
            )
        });
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let partition = spec
            .update_strategy
            .as_ref()
            .and_then(|u| u.rolling_update.as_ref())
            .and_then(|r| r.partition)
            .unwrap_or(0);
        let rolling = spec
            .update_strategy
            .as_ref()
            .and_then(|u| u.type_.as_deref())
            .unwrap_or("RollingUpdate")
            == "RollingUpdate";
        'work: {
            // Failed pods are replaced.
            for (i, p) in &slots {
                if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed")
                    && p.metadata.deletion_timestamp.is_none()
                {
                    info!(pod = ?p.metadata.name, "deleting failed stateful pod");
                    delete_pod(&api, p).await?;
                    let _ = i;
                    break 'work;
                }
            }
            // Create missing ordinals in order.
            for i in 0..replicas {
                match slots.get(&i) {
                    None => {
                        // Pods below an update partition keep the current revision.
                        let (hash, template) = if i < partition || !rolling {
                            (&current_hash, &current_template)
                        } else {
                            (&update_hash, &spec.template)
                        };
                        let pod = self.new_pod(&set, i, hash, template);
                        let pod_name = pod.metadata.name.clone().unwrap_or_default();
                        self.ensure_claims(&set, &pod_name).await?;
                        match api.create(&PostParams::default(), &pod).await {
                            Ok(_) => self.events.normal(
                                util::object_ref(&set),
                                "SuccessfulCreate",
                                format!("create Pod {pod_name} in StatefulSet {name} successful"),
                            ),
                            Err(e) if util::is_already_exists(&e) => {}
                            Err(e) => return Err(e).context("create stateful pod"),
                        }
                        if !parallel {
                            break 'work;
                        }
                    }
                    Some(p) => {
                        if !parallel
                            && (p.metadata.deletion_timestamp.is_some() || !running_and_ready(p))
                        {
                            debug!(pod = ?p.metadata.name, "waiting for the pod to be Running and Ready");
                            break 'work;
                        }
                    }
                }
            }
            // Scale down from the highest ordinal.
            for p in &condemned {
                if p.metadata.deletion_timestamp.is_some() {
                    if !parallel {
                        break 'work;
                    }
                    continue;
                }
                let pname = p.metadata.name.clone().unwrap_or_default();
                delete_pod(&api, p).await?;
                self.events.normal(
                    util::object_ref(&set),
                    "SuccessfulDelete",
                    format!("delete Pod {pname} in StatefulSet {name} successful"),
                );
                if !parallel {
                    break 'work;
                }
            }
            if !condemned.is_empty() {
                break 'work;
            }
            // Rolling update from the highest ordinal down to the partition.
            if rolling {
                for i in (partition..replicas).rev() {
                    let Some(p) = slots.get(&i) else { continue };
                    let hash = p
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(REVISION_HASH));
                    if hash != Some(&update_hash) {
                        if p.metadata.deletion_timestamp.is_none() {
                            info!(pod = ?p.metadata.name, "rolling stateful pod to the update revision");
                            delete_pod(&api, p).await?;
                        }
                        break 'work;
                    }
                    if !running_and_ready(p) {
                        break 'work;
                    }
                }
            }
        }
        // Status.
        let live = self
            .pods
            .list_namespace(ns)
            .into_iter()
            .filter(|p| {
                util::controller_of(&p.metadata).is_some_and(|o| o.uid == uid)
                    && p.metadata.deletion_timestamp.is_none()
            })
            .collect::<Vec<_>>();
        let count = |f: &dyn Fn(&Pod) -> bool| {
            i32::try_from(live.iter().filter(|p| f(p)).count()).unwrap_or(0)
        };
        let now = jiff::Timestamp::now();
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        let updated = count(&|p| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(REVISION_HASH))
                == Some(&update_hash)
        });
        let current = count(&|p| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(REVISION_HASH))
                == Some(&current_hash)
        });
        let ready = count(&|p| util::is_pod_ready(p));
        let mut status = StatefulSetStatus {
            observed_generation: set.metadata.generation,
            replicas: i32::try_from(live.len()).unwrap_or(0),
            ready_replicas: Some(ready),
            available_replicas: Some(count(&|p| util::is_pod_available(p, min_ready, now))),
            current_replicas: Some(current),
            updated_replicas: Some(updated),
            current_revision: Some(current_name.clone()),
            update_revision: Some(update_name.clone()),
            collision_count: status0.collision_count,
            conditions: status0.conditions.clone(),
        };
        // Once every pod runs the update revision and is ready, it becomes current.
        if updated == replicas && ready == replicas && status.replicas == replicas {
            status.current_revision = Some(update_name.clone());
            status.current_replicas = Some(updated);
        }
        let live_hashes: Vec<String> = vec![current_hash, update_hash];
        history::truncate(
            &self.client,
            ns,
            &revisions,
            &live_hashes,
            spec.revision_history_limit.unwrap_or(10),
        )
        .await?;
        if set.status.as_ref() != Some(&status) {
            let sapi: Api<StatefulSet> = Api::namespaced(self.client.clone(), ns);
            let mut target = set.clone();
            target.status = Some(status);
            sapi.replace_status(name, &PostParams::default(), &target)
                .await
                .context("update statefulset status")?;
        }
        Ok(())
    }
}

async fn delete_pod(api: &Api<Pod>, p: &Pod) -> anyhow::Result<()> {
    let name = p.metadata.name.clone().unwrap_or_default();
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(e) if util::is_not_found(&e) => Ok(()),
        Err(e) => Err(e).context("delete stateful pod"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals() {
        assert_eq!(ordinal("web", "web-0"), Some(0));
        assert_eq!(ordinal("web", "web-12"), Some(12));
        assert_eq!(ordinal("web", "webby-1"), None);
        assert_eq!(ordinal("web", "web-x"), None);
    }
}
