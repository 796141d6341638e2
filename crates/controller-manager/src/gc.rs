//! The garbage collector (upstream `pkg/controller/garbagecollector`).
//!
//! Monitors (metadata-only watches of every deletable resource, re-discovered every 30 s)
//! feed the owner graph — a petgraph `StableDiGraph` with an edge owner → dependent per
//! ownerReference, weighted by `blockOwnerDeletion`. Owners referenced but not (yet)
//! observed are *virtual* nodes, verified against the apiserver. Two queues do the work:
//!
//! - `garbage_collector_attempt_to_delete`: a dependent whose owners may be gone. Owners are
//!   looked up live: if all are gone it is deleted (background, or honouring its own
//!   orphan/foreground finalizer); if some remain, references to gone owners (and to owners
//!   being deleted in the foreground) are removed; a dependent of a foreground deletion that
//!   itself has dependents is deleted in the foreground. An owner with the
//!   `foregroundDeletion` finalizer loses the finalizer once no dependent with
//!   `blockOwnerDeletion` is left.
//! - `garbage_collector_attempt_to_orphan`: an owner with the `orphan` finalizer: its
//!   dependents lose their references to it, then it loses the finalizer.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use futures::StreamExt as _;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{
    Api, DeleteParams, DynamicObject, PartialObjectMeta, Patch, PatchParams, Preconditions,
};
use kube::discovery::{ApiResource, Scope, verbs};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use kumo_client::WorkQueue;
use parking_lot::Mutex;
use petgraph::Direction;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use tracing::{Instrument as _, debug, info, info_span, warn};

use crate::discovery::DiscoveryCache;
use crate::util;
use crate::{Ctx, Error};

/// The finalizer of foreground deletion.
pub const FOREGROUND: &str = "foregroundDeletion";
/// The finalizer of orphaning deletion.
pub const ORPHAN: &str = "orphan";

/// An object in the graph.
#[derive(Debug, Clone)]
struct Node {
    uid: String,
    api_version: String,
    kind: String,
    namespace: Option<String>,
    name: String,
    owners: Vec<OwnerReference>,
    being_deleted: bool,
    deleting_dependents: bool,
    /// Referenced as an owner but not observed by a monitor.
    virtual_: bool,
}

/// The owner graph: owner → dependent edges weighted by `blockOwnerDeletion`.
#[derive(Default)]
struct Graph {
    g: StableDiGraph<Node, bool>,
    by_uid: HashMap<String, NodeIndex>,
}

impl Graph {
    fn dependents(&self, idx: NodeIndex) -> Vec<(NodeIndex, bool)> {
        self.g
            .edges_directed(idx, Direction::Outgoing)
            .map(|e| {
                use petgraph::visit::EdgeRef as _;
                (e.target(), *e.weight())
            })
            .collect()
    }

    fn owners(&self, idx: NodeIndex) -> Vec<NodeIndex> {
        self.g
            .neighbors_directed(idx, Direction::Incoming)
            .collect()
    }
}

/// An observed change.
enum Observed {
    Upsert {
        api_version: String,
        kind: String,
        meta: Box<ObjectMeta>,
    },
    Delete {
        uid: String,
    },
}

/// The garbage collector.
pub struct GarbageCollector {
    client: kube::Client,
    graph: Mutex<Graph>,
    attempt_to_delete: WorkQueue<String>,
    attempt_to_orphan: WorkQueue<String>,
    discovery: DiscoveryCache,
    /// Owner UIDs known to be gone (upstream's absentOwnerCache), bounded.
    absent: Mutex<HashSet<String>>,
}

fn has_finalizer(meta: &ObjectMeta, f: &str) -> bool {
    meta.finalizers.iter().flatten().any(|x| x == f)
}

fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("")
}

impl GarbageCollector {
    /// Builds the collector.
    pub fn new(ctx: &Ctx) -> Result<Arc<Self>, Error> {
        Ok(Arc::new(GarbageCollector {
            client: ctx.client.clone(),
            graph: Mutex::new(Graph::default()),
            attempt_to_delete: ctx.queue("garbage_collector_attempt_to_delete"),
            attempt_to_orphan: ctx.queue("garbage_collector_attempt_to_orphan"),
            discovery: DiscoveryCache::new(ctx.client.clone()),
            absent: Mutex::new(HashSet::new()),
        }))
    }

    /// Runs monitors and workers until the process ends.
    pub async fn run(self: Arc<Self>, workers: usize) {
        let _monitors = util::AbortOnDrop(tokio::spawn(self.clone().run_monitors()));
        let c = self.clone();
        let deleters = util::run_workers(
            "garbagecollector_delete",
            self.attempt_to_delete.clone(),
            workers,
            move |uid| {
                let c = c.clone();
                async move { c.attempt_to_delete_item(&uid).await }
            },
        );
        let c = self.clone();
        let orphaners = util::run_workers(
            "garbagecollector_orphan",
            self.attempt_to_orphan.clone(),
            workers,
            move |uid| {
                let c = c.clone();
                async move { c.attempt_to_orphan_item(&uid).await }
            },
        );
        futures::join!(deleters, orphaners);
    }

    /// Keeps one metadata watch per deletable resource, re-discovering every 30 s.
    async fn run_monitors(self: Arc<Self>) {
        let mut running: HashMap<(String, String), util::AbortOnDrop<()>> = HashMap::new();
        let mut first = true;
        loop {
            match self.discovery.refresh().await {
                Ok(resources) => {
                    let mut want = HashSet::new();
                    for (ar, caps) in resources.iter() {
                        if !caps.supports_operation(verbs::LIST)
                            || !caps.supports_operation(verbs::WATCH)
                            || !caps.supports_operation(verbs::DELETE)
                        {
                            continue;
                        }
                        // Upstream ignores events.
                        if ar.plural == "events"
                            && (ar.group.is_empty() || ar.group == "events.k8s.io")
                        {
                            continue;
                        }
                        let key = (ar.api_version.clone(), ar.plural.clone());
                        want.insert(key.clone());
                        if let std::collections::hash_map::Entry::Vacant(slot) = running.entry(key)
                        {
                            let me = self.clone();
                            let ar = ar.clone();
                            let span = info_span!("gc_monitor", resource = %format!("{}.{}", ar.plural, ar.group));
                            slot.insert(util::AbortOnDrop(tokio::spawn(
                                me.monitor(ar).instrument(span),
                            )));
                        }
                    }
                    running.retain(|k, _| want.contains(k));
                    if first {
                        info!(
                            monitors = running.len(),
                            "garbage collector monitors started"
                        );
                        first = false;
                    }
                }
                Err(e) => warn!(error = %e, "garbage collector discovery failed"),
            }
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
    }

    /// One resource's metadata watch, feeding the graph.
    async fn monitor(self: Arc<Self>, ar: ApiResource) {
        let api: Api<PartialObjectMeta<DynamicObject>> = Api::all_with(self.client.clone(), &ar);
        let mut stream =
            std::pin::pin!(watcher::watcher(api, watcher::Config::default()).default_backoff());
        let mut known: HashSet<String> = HashSet::new();
        let mut seen: HashSet<String> = HashSet::new();
        while let Some(ev) = stream.next().await {
            let ev = match ev {
                Ok(ev) => ev,
                Err(e) => {
                    debug!(error = %e, "watch failed; retrying");
                    continue;
                }
            };
            match ev {
                Event::Apply(o) | Event::InitApply(o) => {
                    let Some(uid) = o.metadata.uid.clone() else {
                        continue;
                    };
                    known.insert(uid.clone());
                    seen.insert(uid);
                    self.observe(Observed::Upsert {
                        api_version: ar.api_version.clone(),
                        kind: ar.kind.clone(),
                        meta: Box::new(o.metadata),
                    });
                }
                Event::Delete(o) => {
                    if let Some(uid) = o.metadata.uid {
                        known.remove(&uid);
                        self.observe(Observed::Delete { uid });
                    }
                }
                Event::Init => seen.clear(),
                Event::InitDone => {
                    let gone: Vec<String> = known.difference(&seen).cloned().collect();
                    for uid in gone {
                        known.remove(&uid);
                        self.observe(Observed::Delete { uid });
                    }
                    seen.clear();
                }
            }
        }
    }

    fn watch_owner_refs(
        graph: &mut Graph,
        idx: NodeIndex,
        owners: &[OwnerReference],
        ns: Option<&str>,
    ) -> Vec<String> {
        let mut new_virtual = Vec::new();
        for o in owners {
            let owner_idx = match graph.by_uid.get(&o.uid) {
                Some(i) => *i,
                None => {
                    let i = graph.g.add_node(Node {
                        uid: o.uid.clone(),
                        api_version: o.api_version.clone(),
                        kind: o.kind.clone(),
                        namespace: ns.map(str::to_string),
                        name: o.name.clone(),
                        owners: Vec::new(),
                        being_deleted: false,
                        deleting_dependents: false,
                        virtual_: true,
                    });
                    graph.by_uid.insert(o.uid.clone(), i);
                    new_virtual.push(o.uid.clone());
                    i
                }
            };
            graph
                .g
                .add_edge(owner_idx, idx, o.block_owner_deletion.unwrap_or(false));
        }
        new_virtual
    }

    /// `processGraphChanges` for one event.
    fn observe(&self, ev: Observed) {
        let mut to_delete: Vec<String> = Vec::new();
        let mut to_orphan: Vec<String> = Vec::new();
        {
            let mut graph = self.graph.lock();
            match ev {
                Observed::Upsert {
                    api_version,
                    kind,
                    meta,
                } => {
                    let uid = meta.uid.clone().unwrap_or_default();
                    let owners = meta.owner_references.clone().unwrap_or_default();
                    let being_deleted = meta.deletion_timestamp.is_some();
                    let idx = match graph.by_uid.get(&uid).copied() {
                        None => {
                            let idx = graph.g.add_node(Node {
                                uid: uid.clone(),
                                api_version,
                                kind,
                                namespace: meta.namespace.clone(),
                                name: meta.name.clone().unwrap_or_default(),
                                owners: owners.clone(),
                                being_deleted,
                                deleting_dependents: false,
                                virtual_: false,
                            });
                            graph.by_uid.insert(uid.clone(), idx);
                            to_delete.extend(Self::watch_owner_refs(
                                &mut graph,
                                idx,
                                &owners,
                                meta.namespace.as_deref(),
                            ));
                            // A new dependent may already be dangling.
                            if !owners.is_empty() {
                                to_delete.push(uid.clone());
                            }
                            idx
                        }
                        Some(idx) => {
                            let old_owners = graph.g[idx].owners.clone();
                            {
                                let n = &mut graph.g[idx];
                                if n.virtual_ {
                                    n.virtual_ = false;
                                    n.api_version = api_version;
                                    n.kind = kind;
                                    n.namespace = meta.namespace.clone();
                                    n.name = meta.name.clone().unwrap_or_default();
                                }
                                n.being_deleted = being_deleted;
                            }
                            if old_owners != owners {
                                // Owners whose references went away or stopped blocking may
                                // now be unblocked.
                                for o in &old_owners {
                                    let still = owners.iter().find(|n| n.uid == o.uid);
                                    let unblocked = match still {
                                        None => true,
                                        Some(n) => {
                                            o.block_owner_deletion == Some(true)
                                                && n.block_owner_deletion != Some(true)
                                        }
                                    };
                                    if unblocked
                                        && let Some(oi) = graph.by_uid.get(&o.uid).copied()
                                        && graph.g[oi].deleting_dependents
                                    {
                                        to_delete.push(o.uid.clone());
                                    }
                                }
                                let incoming: Vec<_> = graph
                                    .g
                                    .edges_directed(idx, Direction::Incoming)
                                    .map(|e| {
                                        use petgraph::visit::EdgeRef as _;
                                        e.id()
                                    })
                                    .collect();
                                for e in incoming {
                                    graph.g.remove_edge(e);
                                }
                                to_delete.extend(Self::watch_owner_refs(
                                    &mut graph,
                                    idx,
                                    &owners,
                                    meta.namespace.as_deref(),
                                ));
                                graph.g[idx].owners = owners.clone();
                                if !owners.is_empty() {
                                    to_delete.push(uid.clone());
                                }
                            }
                            idx
                        }
                    };
                    // processTransitions.
                    if being_deleted && has_finalizer(&meta, ORPHAN) {
                        to_orphan.push(uid.clone());
                    }
                    if being_deleted && has_finalizer(&meta, FOREGROUND) {
                        if !graph.g[idx].deleting_dependents {
                            graph.g[idx].deleting_dependents = true;
                            for (d, _) in graph.dependents(idx) {
                                to_delete.push(graph.g[d].uid.clone());
                            }
                        }
                        to_delete.push(uid.clone());
                    } else {
                        graph.g[idx].deleting_dependents = false;
                    }
                }
                Observed::Delete { uid } => {
                    if let Some(idx) = graph.by_uid.get(&uid).copied() {
                        for (d, _) in graph.dependents(idx) {
                            to_delete.push(graph.g[d].uid.clone());
                        }
                        for o in graph.owners(idx) {
                            if graph.g[o].deleting_dependents {
                                to_delete.push(graph.g[o].uid.clone());
                            }
                        }
                        let owners = graph.owners(idx);
                        graph.g.remove_node(idx);
                        graph.by_uid.remove(&uid);
                        // Virtual owners nobody references any more go too.
                        for o in owners {
                            if graph.g[o].virtual_ && graph.dependents(o).is_empty() {
                                let ouid = graph.g[o].uid.clone();
                                graph.g.remove_node(o);
                                graph.by_uid.remove(&ouid);
                            }
                        }
                        let mut absent = self.absent.lock();
                        if absent.len() > 10_000 {
                            absent.clear();
                        }
                        absent.insert(uid.clone());
                    }
                }
            }
        }
        for u in to_delete {
            self.attempt_to_delete.add(u);
        }
        for u in to_orphan {
            self.attempt_to_orphan.add(u);
        }
    }

    /// Removes a virtual node confirmed absent, re-checking its dependents.
    fn remove_virtual(&self, uid: &str) {
        let deps: Vec<String> = {
            let mut graph = self.graph.lock();
            let Some(idx) = graph.by_uid.get(uid).copied() else {
                return;
            };
            if !graph.g[idx].virtual_ {
                return;
            }
            let deps = graph
                .dependents(idx)
                .into_iter()
                .map(|(d, _)| graph.g[d].uid.clone())
                .collect();
            graph.g.remove_node(idx);
            graph.by_uid.remove(uid);
            deps
        };
        {
            let mut absent = self.absent.lock();
            if absent.len() > 10_000 {
                absent.clear();
            }
            absent.insert(uid.to_string());
        }
        for d in deps {
            self.attempt_to_delete.add(d);
        }
    }

    /// The API of an object kind (`apps/v1`, `ReplicaSet`) in `namespace`.
    async fn api_for(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
    ) -> anyhow::Result<Api<DynamicObject>> {
        let group = group_of(api_version);
        let version = api_version.rsplit('/').next().unwrap_or(api_version);
        let mut resources = self.discovery.resources().await?;
        let find = |rs: &Vec<crate::discovery::Resource>| {
            rs.iter()
                .find(|(ar, _)| ar.group == group && ar.kind == kind && ar.version == version)
                .or_else(|| {
                    rs.iter()
                        .find(|(ar, _)| ar.group == group && ar.kind == kind)
                })
                .cloned()
        };
        let mut found = find(&resources);
        if found.is_none() {
            resources = self.discovery.refresh().await?;
            found = find(&resources);
        }
        let (mut ar, caps) =
            found.ok_or_else(|| anyhow!("unable to map {api_version}/{kind} to a resource"))?;
        if ar.version != version {
            // Address the object in the version its reference names when served.
            ar.version = version.to_string();
            ar.api_version = api_version.to_string();
        }
        Ok(match (caps.scope, namespace) {
            (Scope::Namespaced, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, &ar),
            (Scope::Namespaced, None) => {
                return Err(anyhow!("namespaced {kind} without a namespace"));
            }
            (Scope::Cluster, _) => Api::all_with(self.client.clone(), &ar),
        })
    }

    fn node(&self, uid: &str) -> Option<(Node, Vec<(Node, bool)>)> {
        let graph = self.graph.lock();
        let idx = graph.by_uid.get(uid).copied()?;
        let deps = graph
            .dependents(idx)
            .into_iter()
            .map(|(d, b)| (graph.g[d].clone(), b))
            .collect();
        Some((graph.g[idx].clone(), deps))
    }

    /// `attemptToDeleteItem`.
    async fn attempt_to_delete_item(&self, uid: &str) -> anyhow::Result<()> {
        let Some((item, dependents)) = self.node(uid) else {
            return Ok(());
        };
        if !item.virtual_ && item.being_deleted && !item.deleting_dependents {
            return Ok(());
        }
        let api = self
            .api_for(&item.api_version, &item.kind, item.namespace.as_deref())
            .await?;
        let latest = api.get_metadata_opt(&item.name).await.context("get item")?;
        let latest = match latest {
            Some(l) if l.metadata.uid.as_deref() == Some(uid) => l,
            _ => {
                debug!(kind = %item.kind, name = %item.name, "item not found; processing a virtual delete");
                if item.virtual_ {
                    self.remove_virtual(uid);
                } else {
                    self.observe(Observed::Delete {
                        uid: uid.to_string(),
                    });
                }
                return Ok(());
            }
        };
        if item.virtual_ {
            // It exists: its monitor will observe it.
            return Ok(());
        }
        let meta = latest.metadata;
        if meta.deletion_timestamp.is_some() && has_finalizer(&meta, FOREGROUND) {
            return self
                .process_deleting_dependents(&item, &meta, &dependents, &api)
                .await;
        }
        let owners = meta.owner_references.clone().unwrap_or_default();
        if owners.is_empty() {
            return Ok(());
        }
        // classifyReferences.
        let mut solid = Vec::new();
        let mut dangling = Vec::new();
        let mut waiting = Vec::new();
        for o in &owners {
            if self.absent.lock().contains(&o.uid) {
                dangling.push(o.clone());
                continue;
            }
            let owner_api = self
                .api_for(&o.api_version, &o.kind, meta.namespace.as_deref())
                .await?;
            match owner_api
                .get_metadata_opt(&o.name)
                .await
                .context("get owner")?
            {
                Some(owner) if owner.metadata.uid.as_deref() == Some(o.uid.as_str()) => {
                    if owner.metadata.deletion_timestamp.is_some()
                        && has_finalizer(&owner.metadata, FOREGROUND)
                    {
                        waiting.push(o.clone());
                    } else {
                        solid.push(o.clone());
                    }
                }
                _ => {
                    self.absent.lock().insert(o.uid.clone());
                    dangling.push(o.clone());
                }
            }
        }
        debug!(kind = %item.kind, name = %item.name, solid = solid.len(), dangling = dangling.len(), waiting = waiting.len(), "classified owner references");
        if !solid.is_empty() {
            if dangling.is_empty() && waiting.is_empty() {
                return Ok(());
            }
            let drop: HashSet<&str> = dangling
                .iter()
                .chain(waiting.iter())
                .map(|o| o.uid.as_str())
                .collect();
            let remaining: Vec<&OwnerReference> = owners
                .iter()
                .filter(|o| !drop.contains(o.uid.as_str()))
                .collect();
            info!(kind = %item.kind, name = %item.name, removed = drop.len(), "removing dangling owner references");
            return self
                .patch_owner_refs(&api, &item.name, &meta, &remaining)
                .await;
        }
        if !waiting.is_empty() && !dependents.is_empty() {
            if dependents.iter().any(|(d, _)| d.deleting_dependents) {
                // Break a possible cycle: stop blocking our waiting owners.
                let unblocked: Vec<OwnerReference> = owners
                    .iter()
                    .map(|o| {
                        let mut o = o.clone();
                        if waiting.iter().any(|w| w.uid == o.uid) {
                            o.block_owner_deletion = Some(false);
                        }
                        o
                    })
                    .collect();
                let refs: Vec<&OwnerReference> = unblocked.iter().collect();
                self.patch_owner_refs(&api, &item.name, &meta, &refs)
                    .await?;
            }
            info!(kind = %item.kind, name = %item.name, "deleting dependent in the foreground (an owner waits for it)");
            return self.delete(&api, &item.name, uid, "Foreground").await;
        }
        let policy = if has_finalizer(&meta, ORPHAN) {
            "Orphan"
        } else if has_finalizer(&meta, FOREGROUND) {
            "Foreground"
        } else {
            "Background"
        };
        info!(kind = %item.kind, name = %item.name, policy, "deleting object whose owners are gone");
        self.delete(&api, &item.name, uid, policy).await
    }

    /// `processDeletingDependentsItem`: drop the foreground finalizer once no blocking
    /// dependent is left, else nudge the blocking dependents.
    async fn process_deleting_dependents(
        &self,
        item: &Node,
        meta: &ObjectMeta,
        dependents: &[(Node, bool)],
        api: &Api<DynamicObject>,
    ) -> anyhow::Result<()> {
        let blocking: Vec<&Node> = dependents
            .iter()
            .filter(|(_, b)| *b)
            .map(|(d, _)| d)
            .collect();
        if blocking.is_empty() {
            info!(kind = %item.kind, name = %item.name, "all blocking dependents gone; removing foregroundDeletion");
            return self
                .remove_finalizer(api, &item.name, meta, FOREGROUND)
                .await;
        }
        for d in blocking {
            if !d.deleting_dependents {
                self.attempt_to_delete.add(d.uid.clone());
            }
        }
        Ok(())
    }

    /// `attemptToOrphanWorker`: remove our references from every dependent, then the
    /// `orphan` finalizer.
    async fn attempt_to_orphan_item(&self, uid: &str) -> anyhow::Result<()> {
        let Some((owner, dependents)) = self.node(uid) else {
            return Ok(());
        };
        for (d, _) in &dependents {
            let api = self
                .api_for(&d.api_version, &d.kind, d.namespace.as_deref())
                .await?;
            let Some(latest) = api
                .get_metadata_opt(&d.name)
                .await
                .context("get dependent")?
            else {
                continue;
            };
            if latest.metadata.uid.as_deref() != Some(d.uid.as_str()) {
                continue;
            }
            let owners = latest.metadata.owner_references.clone().unwrap_or_default();
            if !owners.iter().any(|o| o.uid == uid) {
                continue;
            }
            let remaining: Vec<&OwnerReference> = owners.iter().filter(|o| o.uid != uid).collect();
            self.patch_owner_refs(&api, &d.name, &latest.metadata, &remaining)
                .await
                .with_context(|| format!("orphan {} {}", d.kind, d.name))?;
        }
        let api = self
            .api_for(&owner.api_version, &owner.kind, owner.namespace.as_deref())
            .await?;
        let Some(latest) = api
            .get_metadata_opt(&owner.name)
            .await
            .context("get owner")?
        else {
            return Ok(());
        };
        if latest.metadata.uid.as_deref() != Some(uid) {
            return Ok(());
        }
        info!(kind = %owner.kind, name = %owner.name, dependents = dependents.len(), "orphaned dependents; removing the orphan finalizer");
        self.remove_finalizer(&api, &owner.name, &latest.metadata, ORPHAN)
            .await
    }

    /// A JSON merge patch of `ownerReferences` with uid and resourceVersion preconditions.
    async fn patch_owner_refs(
        &self,
        api: &Api<DynamicObject>,
        name: &str,
        meta: &ObjectMeta,
        refs: &[&OwnerReference],
    ) -> anyhow::Result<()> {
        let refs_value = if refs.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::to_value(refs)?
        };
        let patch = serde_json::json!({
            "metadata": {
                "ownerReferences": refs_value,
                "uid": meta.uid,
                "resourceVersion": meta.resource_version,
            }
        });
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if util::is_not_found(&e) => Ok(()),
            Err(e) => Err(e).context("patch ownerReferences"),
        }
    }

    /// Removes finalizer `f` (merge patch with a resourceVersion precondition).
    async fn remove_finalizer(
        &self,
        api: &Api<DynamicObject>,
        name: &str,
        meta: &ObjectMeta,
        f: &str,
    ) -> anyhow::Result<()> {
        if !has_finalizer(meta, f) {
            return Ok(());
        }
        let rest: Vec<&String> = meta
            .finalizers
            .iter()
            .flatten()
            .filter(|x| *x != f)
            .collect();
        let patch = serde_json::json!({
            "metadata": {
                "finalizers": if rest.is_empty() { serde_json::Value::Null } else { serde_json::to_value(&rest)? },
                "resourceVersion": meta.resource_version,
            }
        });
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if util::is_not_found(&e) => Ok(()),
            Err(e) => Err(e).context("remove finalizer"),
        }
    }

    /// Deletes with a UID precondition and a propagation policy.
    async fn delete(
        &self,
        api: &Api<DynamicObject>,
        name: &str,
        uid: &str,
        policy: &str,
    ) -> anyhow::Result<()> {
        let mut dp = match policy {
            "Orphan" => DeleteParams::orphan(),
            "Foreground" => DeleteParams::foreground(),
            _ => DeleteParams::background(),
        };
        dp.preconditions = Some(Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        });
        match api.delete(name, &dp).await {
            Ok(_) => Ok(()),
            Err(e) if util::is_not_found(&e) => Ok(()),
            Err(e) if util::is_conflict(&e) => Ok(()),
            Err(e) => Err(e).context("delete"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups() {
        assert_eq!(group_of("apps/v1"), "apps");
        assert_eq!(group_of("v1"), "");
    }
}
