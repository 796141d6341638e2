//! The Namespace controller (upstream `pkg/controller/namespace`): when a namespace is
//! Terminating, delete everything in it (every namespaced resource the server lists),
//! report progress in the namespace's conditions, and once it is empty remove the
//! `kubernetes` finalizer through `/finalize` so the apiserver deletes the namespace.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition, NamespaceSpec, NamespaceStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::discovery::{Scope, verbs};
use kumo_client::WorkQueue;
use tracing::{debug, info, warn};

use crate::Ctx;
use crate::discovery::DiscoveryCache;
use crate::informer::{Change, Informer};
use crate::util;

/// The finalizer the namespace controller owns.
const FINALIZER: &str = "kubernetes";

/// The Namespace controller.
pub struct NamespaceController {
    client: kube::Client,
    namespaces: Arc<Informer<Namespace>>,
    queue: WorkQueue<String>,
    discovery: DiscoveryCache,
}

/// What deleting a namespace's content found.
#[derive(Debug, Default)]
struct Content {
    /// Seconds to wait before checking again (0: nothing left).
    estimate: u64,
    /// Remaining objects per resource.
    remaining: BTreeMap<String, usize>,
    /// Remaining finalizers and how many objects carry each.
    finalizers: BTreeMap<String, usize>,
    /// Errors deleting.
    errors: Vec<String>,
}

impl NamespaceController {
    /// Builds the controller and registers its handlers.
    pub fn new(ctx: &Ctx) -> Arc<Self> {
        let c = Arc::new(NamespaceController {
            client: ctx.client.clone(),
            namespaces: ctx.factory.get_cluster::<Namespace>(),
            queue: ctx.queue("namespace"),
            discovery: DiscoveryCache::new(ctx.client.clone()),
        });
        let weak = Arc::downgrade(&c);
        c.namespaces.add_handler(move |ch| {
            if let Some(c) = weak.upgrade() {
                let ns = match ch {
                    Change::Added(o) => *o,
                    Change::Updated { new, .. } => *new,
                    Change::Deleted(_) => return,
                };
                if ns.metadata.deletion_timestamp.is_some() {
                    c.queue.add(ns.metadata.name.clone().unwrap_or_default());
                }
            }
        });
        c
    }

    /// Runs the workers.
    pub async fn run(self: Arc<Self>, workers: usize) {
        self.namespaces.synced().await;
        info!("namespace controller synced; starting workers");
        let c = self.clone();
        util::run_workers("namespace", self.queue.clone(), workers, move |key| {
            let c = c.clone();
            async move { c.sync(&key).await }
        })
        .await;
    }

    /// `namespacedResourcesDeleter.Delete`.
    async fn sync(&self, name: &str) -> anyhow::Result<()> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let Some(mut ns) = api.get_opt(name).await.context("get namespace")? else {
            return Ok(());
        };
        if ns.metadata.deletion_timestamp.is_none() {
            return Ok(());
        }
        let has_finalizer = ns
            .spec
            .as_ref()
            .and_then(|s| s.finalizers.as_ref())
            .is_some_and(|f| f.iter().any(|x| x == FINALIZER));
        if !has_finalizer {
            return Ok(());
        }
        let content = self.delete_all_content(name).await;
        let content = match content {
            Ok(c) => c,
            Err(e) => {
                self.set_conditions(&mut ns, Some(format!("{e:#}")), None)
                    .await;
                return Err(e);
            }
        };
        self.set_conditions(&mut ns, None, Some(&content)).await;
        if !content.errors.is_empty() {
            return Err(anyhow::anyhow!(
                "deleting content of namespace {name}: {}",
                content.errors.join("; ")
            ));
        }
        if content.estimate > 0 {
            debug!(estimate = content.estimate, remaining = ?content.remaining, "content remaining; checking again later");
            self.queue.add_after(
                name.to_string(),
                Duration::from_secs((content.estimate / 2).max(1)),
            );
            return Ok(());
        }
        // Empty: drop our finalizer through /finalize.
        let mut fin = ns.clone();
        let spec = fin.spec.get_or_insert_with(NamespaceSpec::default);
        spec.finalizers = Some(
            spec.finalizers
                .clone()
                .unwrap_or_default()
                .into_iter()
                .filter(|f| f != FINALIZER)
                .collect(),
        );
        match api
            .replace_subresource::<Namespace>("finalize", name, &PostParams::default(), &fin)
            .await
        {
            Ok(_) => info!(namespace = name, "namespace finalized"),
            Err(e) if util::is_not_found(&e) => {}
            Err(e) => return Err(e).context("finalize namespace"),
        }
        Ok(())
    }

    /// `deleteAllContent`: delete every namespaced resource in `ns` and count what remains.
    async fn delete_all_content(&self, ns: &str) -> anyhow::Result<Content> {
        let resources = self.discovery.resources().await.context("discovery")?;
        let mut content = Content::default();
        for (ar, caps) in resources.iter() {
            if caps.scope != Scope::Namespaced
                || !caps.supports_operation(verbs::LIST)
                || !caps.supports_operation(verbs::DELETE)
            {
                continue;
            }
            let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, ar);
            let deleted = if caps.supports_operation(verbs::DELETE_COLLECTION) {
                api.delete_collection(&DeleteParams::background(), &ListParams::default())
                    .await
                    .map(|_| ())
            } else {
                match api.list(&ListParams::default()).await {
                    Ok(list) => {
                        let mut r = Ok(());
                        for o in list.items {
                            let n = o.metadata.name.clone().unwrap_or_default();
                            match api.delete(&n, &DeleteParams::background()).await {
                                Ok(_) => {}
                                Err(e) if util::is_not_found(&e) => {}
                                Err(e) => r = Err(e),
                            }
                        }
                        r
                    }
                    Err(e) => Err(e),
                }
            };
            if let Err(e) = deleted {
                if matches!(&e, kube::Error::Api(s) if s.code == 404 || s.code == 405) {
                    continue;
                }
                warn!(resource = %ar.plural, error = %e, "deleting content failed");
                content.errors.push(format!("{}: {e}", ar.plural));
                continue;
            }
            let remaining = match api.list(&ListParams::default()).await {
                Ok(l) => l.items,
                Err(e) => {
                    content.errors.push(format!("{}: {e}", ar.plural));
                    continue;
                }
            };
            if remaining.is_empty() {
                continue;
            }
            let key = if ar.group.is_empty() {
                ar.plural.clone()
            } else {
                format!("{}.{}", ar.plural, ar.group)
            };
            content.remaining.insert(key, remaining.len());
            let mut estimate = 1u64;
            for o in &remaining {
                for f in o.metadata.finalizers.iter().flatten() {
                    *content.finalizers.entry(f.clone()).or_insert(0) += 1;
                }
                if ar.kind == "Pod" && ar.group.is_empty() {
                    let grace = o
                        .data
                        .get("spec")
                        .and_then(|s| s.get("terminationGracePeriodSeconds"))
                        .and_then(serde_json::Value::as_u64)
                        .unwrap_or(30);
                    estimate = estimate.max(grace);
                }
            }
            content.estimate = content.estimate.max(estimate);
        }
        Ok(content)
    }

    /// Upstream's namespace deletion conditions (best effort).
    async fn set_conditions(
        &self,
        ns: &mut Namespace,
        discovery_err: Option<String>,
        content: Option<&Content>,
    ) {
        let now = Time(jiff::Timestamp::now());
        let cond = |t: &str, status: bool, reason: &str, message: String| NamespaceCondition {
            type_: t.into(),
            status: if status { "True" } else { "False" }.into(),
            reason: Some(reason.into()),
            message: Some(message),
            last_transition_time: Some(now.clone()),
        };
        let mut want = Vec::new();
        match &discovery_err {
            Some(e) => want.push(cond(
                "NamespaceDeletionDiscoveryFailure",
                true,
                "DiscoveryFailed",
                format!("Discovery failed for some groups: {e}"),
            )),
            None => want.push(cond(
                "NamespaceDeletionDiscoveryFailure",
                false,
                "ResourcesDiscovered",
                "All resources successfully discovered".into(),
            )),
        }
        want.push(cond(
            "NamespaceDeletionGroupVersionParsingFailure",
            false,
            "ParsedGroupVersions",
            "All legacy kube types successfully parsed".into(),
        ));
        if let Some(c) = content {
            if c.errors.is_empty() {
                want.push(cond(
                    "NamespaceDeletionContentFailure",
                    false,
                    "ContentDeleted",
                    "All content successfully deleted, may be waiting on finalization".into(),
                ));
            } else {
                want.push(cond(
                    "NamespaceDeletionContentFailure",
                    true,
                    "ContentDeletionFailed",
                    format!(
                        "Failed to delete all resource types, {} remaining: {}",
                        c.errors.len(),
                        c.errors.join(", ")
                    ),
                ));
            }
            if c.remaining.is_empty() {
                want.push(cond(
                    "NamespaceContentRemaining",
                    false,
                    "ContentRemoved",
                    "All content successfully removed".into(),
                ));
            } else {
                let parts: Vec<String> = c
                    .remaining
                    .iter()
                    .map(|(r, n)| format!("{r} has {n} resource instances"))
                    .collect();
                want.push(cond(
                    "NamespaceContentRemaining",
                    true,
                    "SomeResourcesRemain",
                    format!("Some resources are remaining: {}", parts.join(", ")),
                ));
            }
            if c.finalizers.is_empty() {
                want.push(cond(
                    "NamespaceFinalizersRemaining",
                    false,
                    "ContentHasNoFinalizers",
                    "All content-preserving finalizers finished".into(),
                ));
            } else {
                let parts: Vec<String> = c
                    .finalizers
                    .iter()
                    .map(|(f, n)| format!("{f} in {n} resource instances"))
                    .collect();
                want.push(cond(
                    "NamespaceFinalizersRemaining",
                    true,
                    "SomeFinalizersRemain",
                    format!(
                        "Some content in the namespace has finalizers remaining: {}",
                        parts.join(", ")
                    ),
                ));
            }
        }
        let mut status = ns.status.clone().unwrap_or_else(|| NamespaceStatus {
            phase: Some("Terminating".into()),
            conditions: None,
        });
        let mut conditions = status.conditions.clone().unwrap_or_default();
        let mut changed = false;
        for w in want {
            match conditions.iter_mut().find(|c| c.type_ == w.type_) {
                Some(c) => {
                    if c.status != w.status || c.reason != w.reason || c.message != w.message {
                        let keep_time = c.status == w.status;
                        let t = c.last_transition_time.clone();
                        *c = w;
                        if keep_time {
                            c.last_transition_time = t;
                        }
                        changed = true;
                    }
                }
                None => {
                    conditions.push(w);
                    changed = true;
                }
            }
        }
        if !changed {
            return;
        }
        status.conditions = Some(conditions);
        let mut target = ns.clone();
        target.status = Some(status);
        let api: Api<Namespace> = Api::all(self.client.clone());
        let name = ns.metadata.name.clone().unwrap_or_default();
        match api
            .replace_status(&name, &PostParams::default(), &target)
            .await
        {
            Ok(updated) => *ns = updated,
            Err(e) => debug!(error = %e, "namespace conditions not updated"),
        }
    }
}
