//! The `kumo federation` controller, kube-runtime style: informers feed caches, their
//! handlers turn each change into the keys it can affect, and bounded worker pools drain
//! three rate-limited, deduplicating work queues (`kumo_client::WorkQueue`):
//!
//! - `cluster` (one key per Cluster, [`crate::health`]): probed when it appears or changes and
//!   then every `health_interval`; a change of a member's readiness requeues only the objects
//!   it can affect (those whose placement may select it, or that have a Work there);
//! - `federateddeployment` and `propagationpolicy` ([`crate::reconcile`]): one object per
//!   reconcile, from the caches — a change of one object reconciles only it. Its members are
//!   synced concurrently; each reconcile requeues itself for the next moment a member's
//!   toleration or failback period runs out.
//!
//! Host informers: Clusters, FederatedDeployments, PropagationPolicies, Works (indexed by
//! owner), and — started the first time they are needed — the kinds templates reference
//! (ConfigMaps, Secrets, ServiceAccounts; Secrets also hold member credentials) and the kinds
//! PropagationPolicies select; a change there requeues the objects that use it. Member side
//! ([`crate::member`]): a label-selected watch per propagated kind feeds a cache that answers
//! drift and status questions without requests; a change made behind our back requeues the
//! owner. A periodic resync (`resync`) requeues everything as a safety net.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::watcher;
use kumo_client::WorkQueue;
use kumo_client::workqueue::QueueKey;
use parking_lot::{Mutex, RwLock};
use serde_json::{Value, json};
use tracing::{info, warn};

use crate::informer::{Change, Informer, ObjKey, key_of};
use crate::member::{Member, Router, older};
use crate::metrics::Metrics;
use crate::placement::{self, ClusterView};
use crate::reconcile::{self, DepKey, owner_key, owner_key_of};
use crate::{FIELD_MANAGER, FINALIZER, LABEL_OWNER, core, crds, health, join, member_namespace};

/// How `kumo federation` runs.
#[derive(Debug, Clone)]
pub struct FederationConfig {
    /// Admin kubeconfig of the host apiserver.
    pub host_kubeconfig: PathBuf,
    /// Period of member health probes (`/readyz`, version, node/pod totals).
    pub health_interval: Duration,
    /// Period of the full resync (a safety net: changes are handled as they happen).
    pub resync: Duration,
    /// Default time a member may be NotReady before its replicas move elsewhere.
    pub toleration: Duration,
    /// Time a failed-over member must stay Ready before replicas move back.
    pub failback_stable: Duration,
    /// Workers per work queue (federated objects, or cluster probes, reconciled at once).
    pub concurrent_syncs: usize,
    /// Where to serve `/metrics` and `/healthz` (`None`: not served).
    pub metrics_bind_address: Option<SocketAddr>,
}

impl FederationConfig {
    pub fn new(host_kubeconfig: PathBuf) -> Self {
        FederationConfig {
            host_kubeconfig,
            health_interval: Duration::from_secs(10),
            resync: Duration::from_secs(30),
            toleration: Duration::from_secs(60),
            failback_stable: Duration::from_secs(30),
            concurrent_syncs: 16,
            metrics_bind_address: None,
        }
    }
}

/// How long an informer may take to list before its users give up (and retry).
const SYNC_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the first probes of the known members may hold back the object workers (so a
/// restart does not flap every object to NoReadyCluster).
const FIRST_PROBES_TIMEOUT: Duration = Duration::from_secs(10);
/// A requeue at a toleration's or stable period's end comes this much later.
const EDGE: Duration = Duration::from_millis(100);

/// Runs the federation controllers until the future is dropped. Installs the CRDs first.
/// Only the holder of the Lease `kumo-federation-system/kumo-federation` runs the controllers
/// (two writers would fight over Works and statuses); losing it ends `run` with an error so
/// a supervisor restarts the process as a candidate.
pub async fn run(cfg: FederationConfig) -> anyhow::Result<()> {
    let host = join::client_from_file(&cfg.host_kubeconfig, None).await?;
    crds::install(&host, Duration::from_secs(30)).await?;
    info!("federation CRDs installed");
    let ns: Api<DynamicObject> = Api::all_with(host.clone(), &core::namespace_resource());
    ns.patch(
        crate::SECRETS_NS,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": crate::SECRETS_NS}})),
    )
    .await
    .context("create the federation namespace")?;
    let metrics = Metrics::new()?;
    let server = match cfg.metrics_bind_address {
        Some(addr) => match kumo_client::serve_metrics(
            addr,
            metrics.registry.clone(),
            kumo_client::HealthChecks::default(),
        )
        .await
        {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(error = %e, "metrics not served");
                None
            }
        },
        None => None,
    };
    let identity = kumo_client::leader::default_identity();
    let result = kumo_client::leader::run_leader_elected(
        host.clone(),
        crate::SECRETS_NS,
        "kumo-federation",
        &identity,
        || controllers(host.clone(), cfg, metrics),
    )
    .await;
    if let Some(s) = server {
        s.task.abort();
    }
    result?
}

/// Who owns a propagated object (by its owner label).
#[derive(Debug, Clone)]
enum Owner {
    Fd(ObjKey),
    Pp(ObjKey),
}

/// FederatedDeployment ↔ the host objects its template references.
#[derive(Debug, Default)]
struct Refs {
    by_dep: HashMap<DepKey, HashSet<ObjKey>>,
    by_fd: HashMap<ObjKey, Vec<DepKey>>,
}

impl Refs {
    fn set(&mut self, fd: &ObjKey, deps: Vec<DepKey>) {
        if self.by_fd.get(fd) == Some(&deps) {
            return;
        }
        self.remove(fd);
        for d in &deps {
            self.by_dep.entry(d.clone()).or_default().insert(fd.clone());
        }
        if !deps.is_empty() {
            self.by_fd.insert(fd.clone(), deps);
        }
    }

    fn remove(&mut self, fd: &ObjKey) {
        for d in self.by_fd.remove(fd).unwrap_or_default() {
            if let Some(s) = self.by_dep.get_mut(&d) {
                s.remove(fd);
                if s.is_empty() {
                    self.by_dep.remove(&d);
                }
            }
        }
    }

    fn dependents(&self, dep: &DepKey) -> Vec<ObjKey> {
        self.by_dep
            .get(dep)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// What the controller shares between its informers, handlers and workers.
pub(crate) struct Ctx {
    pub host: kube::Client,
    pub cfg: FederationConfig,
    pub metrics: Metrics,
    pub clusters: Arc<Informer>,
    pub fds: Arc<Informer>,
    pub pps: Arc<Informer>,
    /// Works, indexed by their owner label.
    pub works: Arc<Informer>,
    pub members: Mutex<HashMap<String, Member>>,
    pub fd_q: WorkQueue<ObjKey>,
    pub pp_q: WorkQueue<ObjKey>,
    pub cluster_q: WorkQueue<String>,
    /// Requeues the owner of a member object that changed (handed to member watches).
    pub router: Router,
    /// Host informers started on demand, by `<group>/<version>/<plural>`.
    kinds: Mutex<HashMap<String, Arc<Informer>>>,
    kind_tasks: Mutex<Vec<tokio::task::AbortHandle>>,
    views: RwLock<Arc<Vec<ClusterView>>>,
    owners: Mutex<HashMap<String, Owner>>,
    refs: Mutex<Refs>,
    probed: Mutex<HashSet<String>>,
    /// What we last wrote to host objects, by `<what>/<ns>/<name>`: content hash and the
    /// resourceVersion the write returned (our own expectations, so that a reconcile that
    /// runs before the informer saw our last write does not write it again).
    written: Mutex<HashMap<String, (u64, String)>>,
    me: Weak<Ctx>,
}

impl Drop for Ctx {
    fn drop(&mut self) {
        for h in self.kind_tasks.get_mut().drain(..) {
            h.abort();
        }
    }
}

/// The scheduler's view of one Cluster object.
fn view_of(c: &DynamicObject) -> ClusterView {
    ClusterView {
        name: c.metadata.name.clone().unwrap_or_default(),
        labels: c.metadata.labels.clone().unwrap_or_default(),
        taints: c
            .data
            .pointer("/spec/taints")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
        ready: c
            .data
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter()
                    .any(|x| x["type"] == "Ready" && x["status"] == "True")
            }),
    }
}

/// Whether an update of a federated object or a Cluster is more than our own writes (status,
/// adding our finalizer): spec (generation), labels, annotations, deletion, or our finalizer
/// taken away.
fn more_than_status(old: &DynamicObject, new: &DynamicObject) -> bool {
    let (o, n) = (&old.metadata, &new.metadata);
    let ours =
        |f: &Option<Vec<String>>| f.as_ref().is_some_and(|f| f.iter().any(|x| x == FINALIZER));
    o.generation != n.generation
        || o.labels != n.labels
        || o.annotations != n.annotations
        || (ours(&o.finalizers) && !ours(&n.finalizers))
        || o.deletion_timestamp != n.deletion_timestamp
        || old.data.get("spec") != new.data.get("spec")
}

fn api_version(ar: &ApiResource) -> String {
    if ar.group.is_empty() {
        ar.version.clone()
    } else {
        format!("{}/{}", ar.group, ar.version)
    }
}

impl Ctx {
    fn new(host: kube::Client, cfg: FederationConfig, metrics: Metrics) -> Arc<Ctx> {
        Arc::new_cyclic(|me: &Weak<Ctx>| {
            let weak = me.clone();
            let router: Router = Arc::new(move |owner: &str| {
                if let Some(ctx) = weak.upgrade() {
                    ctx.route_owner(owner);
                }
            });
            Ctx {
                fd_q: WorkQueue::new("federateddeployment", &metrics.queues),
                pp_q: WorkQueue::new("propagationpolicy", &metrics.queues),
                cluster_q: WorkQueue::new("cluster", &metrics.queues),
                host,
                cfg,
                metrics,
                clusters: Informer::new("clusters", None),
                fds: Informer::new("federateddeployments", None),
                pps: Informer::new("propagationpolicies", None),
                works: Informer::new("works", Some(LABEL_OWNER)),
                members: Mutex::new(HashMap::new()),
                router,
                kinds: Mutex::new(HashMap::new()),
                kind_tasks: Mutex::new(Vec::new()),
                views: RwLock::new(Arc::new(Vec::new())),
                owners: Mutex::new(HashMap::new()),
                refs: Mutex::new(Refs::default()),
                probed: Mutex::new(HashSet::new()),
                written: Mutex::new(HashMap::new()),
                me: me.clone(),
            }
        })
    }

    /// The Clusters as the scheduler sees them (rebuilt on every Cluster change).
    pub fn views(&self) -> Arc<Vec<ClusterView>> {
        self.views.read().clone()
    }

    fn rebuild_views(&self) {
        // A Cluster being deleted (unjoined) takes no part in placement: its replicas move to
        // the others while its finalizer removes what was propagated there.
        let mut v: Vec<ClusterView> = self
            .clusters
            .list()
            .iter()
            .filter(|c| c.metadata.deletion_timestamp.is_none())
            .map(|c| view_of(c))
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        *self.views.write() = Arc::new(v);
    }

    /// Requeues the federated object that owns label value `owner`, if known.
    pub fn route_owner(&self, owner: &str) {
        let o = self.owners.lock().get(owner).cloned();
        match o {
            Some(Owner::Fd(k)) => self.fd_q.add(k),
            Some(Owner::Pp(k)) => self.pp_q.add(k),
            None => {}
        }
    }

    /// Whether the federated object that owns label value `owner` exists and is not being
    /// deleted.
    pub fn owner_alive(&self, owner: &str) -> bool {
        let o = self.owners.lock().get(owner).cloned();
        let obj = match o {
            Some(Owner::Fd((ns, name))) => self.fds.get(&ns, &name),
            Some(Owner::Pp((ns, name))) => self.pps.get(&ns, &name),
            None => None,
        };
        obj.is_some_and(|o| o.metadata.deletion_timestamp.is_none())
    }

    /// Records which host objects FederatedDeployment `fd` references.
    pub fn set_refs(&self, fd: &ObjKey, deps: Vec<DepKey>) {
        self.refs.lock().set(fd, deps);
    }

    pub fn forget_refs(&self, fd: &ObjKey) {
        self.refs.lock().remove(fd);
    }

    /// The host informer of `ar`, started on first use.
    pub fn host_kind(&self, ar: &ApiResource) -> Arc<Informer> {
        let id = format!("{}/{}/{}", ar.group, ar.version, ar.plural);
        let mut kinds = self.kinds.lock();
        if let Some(i) = kinds.get(&id) {
            return i.clone();
        }
        let informer = Informer::new(&id, None);
        let weak = self.me.clone();
        let (kind, av) = (ar.kind.clone(), api_version(ar));
        informer.add_handler(move |change| {
            if let Some(ctx) = weak.upgrade() {
                ctx.on_host_object(&av, &kind, change);
            }
        });
        let api: Api<DynamicObject> = Api::all_with(self.host.clone(), ar);
        let task = tokio::spawn(informer.clone().run(api, watcher::Config::default()));
        self.kind_tasks.lock().push(task.abort_handle());
        kinds.insert(id, informer.clone());
        informer
    }

    /// [`host_kind`](Self::host_kind), once it has listed.
    pub async fn host_kind_synced(&self, ar: &ApiResource) -> anyhow::Result<Arc<Informer>> {
        let i = self.host_kind(ar);
        if !i.is_synced() && !i.wait_synced(SYNC_TIMEOUT).await {
            bail!(
                "the host's {} did not list within {SYNC_TIMEOUT:?}",
                ar.plural
            );
        }
        Ok(i)
    }

    /// Whether content `hash` at `key` was our last write and the cache (at `cached_rv`)
    /// has not moved past it: the write would repeat ours.
    pub fn wrote_already(&self, key: &str, hash: u64, cached_rv: Option<&str>) -> bool {
        self.written
            .lock()
            .get(key)
            .is_some_and(|(h, rv)| *h == hash && cached_rv.is_none_or(|c| c == rv || older(c, rv)))
    }

    pub fn record_write(&self, key: String, hash: u64, resource_version: Option<String>) {
        self.written
            .lock()
            .insert(key, (hash, resource_version.unwrap_or_default()));
    }

    pub fn forget_writes(&self, key: &str) {
        self.written.lock().remove(key);
    }

    pub fn update_cluster_gauge(&self) {
        let (ready, not_ready) = {
            let g = self.members.lock();
            let ready = g.values().filter(|m| m.avail.ready).count();
            (ready, g.len() - ready)
        };
        let c = &self.metrics.clusters;
        c.with_label_values(&["Ready"]).set(ready as i64);
        c.with_label_values(&["NotReady"]).set(not_ready as i64);
    }

    pub fn mark_probed(&self, cluster: &str) {
        self.probed.lock().insert(cluster.to_string());
    }

    /// Requeues the federated objects a change of `cluster` (with any of `labels`) can
    /// affect: those whose placement may select it and those with a Work there.
    pub fn requeue_affected(&self, cluster: &str, labels: &[&BTreeMap<String, String>]) {
        let with_works: HashSet<String> = self
            .works
            .list_namespace(&member_namespace(cluster))
            .iter()
            .filter_map(|w| w.metadata.labels.as_ref()?.get(LABEL_OWNER).cloned())
            .collect();
        let concerns = |obj: &DynamicObject, owner: &str| {
            let placement = obj.data.pointer("/spec/placement").unwrap_or(&Value::Null);
            with_works.contains(owner)
                || labels
                    .iter()
                    .any(|l| placement::may_select(placement, cluster, l))
        };
        for fd in self.fds.list() {
            let (ns, name) = key_of(&fd);
            if concerns(&fd, &owner_key(&ns, &name)) {
                self.fd_q.add((ns, name));
            }
        }
        for pp in self.pps.list() {
            let (ns, name) = key_of(&pp);
            if concerns(&pp, &owner_key_of("pp", &ns, &name)) {
                self.pp_q.add((ns, name));
            }
        }
    }

    /// When the placement of an object tolerating `toleration` over `clusters` may next
    /// change by the clock alone (a toleration or stable period running out).
    pub fn next_availability_change(
        &self,
        clusters: &BTreeSet<String>,
        toleration: Duration,
    ) -> Option<Duration> {
        let now = Instant::now();
        let g = self.members.lock();
        clusters
            .iter()
            .filter_map(|c| g.get(c))
            .filter_map(|m| {
                m.avail
                    .next_change(toleration, self.cfg.failback_stable, now)
            })
            .min()
            .map(|d| d + EDGE)
    }

    fn on_fd(&self, change: &Change<'_>) {
        match change {
            Change::Added(o) => {
                let (ns, name) = key_of(o);
                self.owners
                    .lock()
                    .insert(owner_key(&ns, &name), Owner::Fd((ns.clone(), name.clone())));
                self.fd_q.add((ns, name));
            }
            Change::Updated { old, new } => {
                if more_than_status(old, new) {
                    self.fd_q.add(key_of(new));
                }
            }
            Change::Deleted(o) => {
                let (ns, name) = key_of(o);
                self.owners.lock().remove(&owner_key(&ns, &name));
                self.forget_refs(&(ns.clone(), name.clone()));
                self.fd_q.add((ns, name));
            }
        }
    }

    fn on_pp(&self, change: &Change<'_>) {
        match change {
            Change::Added(o) => {
                let (ns, name) = key_of(o);
                self.owners.lock().insert(
                    owner_key_of("pp", &ns, &name),
                    Owner::Pp((ns.clone(), name.clone())),
                );
                self.pp_q.add((ns, name));
            }
            Change::Updated { old, new } => {
                if more_than_status(old, new) {
                    self.pp_q.add(key_of(new));
                }
            }
            Change::Deleted(o) => {
                let (ns, name) = key_of(o);
                self.owners.lock().remove(&owner_key_of("pp", &ns, &name));
                self.pp_q.add((ns, name));
            }
        }
    }

    fn on_cluster(&self, change: &Change<'_>) {
        self.rebuild_views();
        let empty = BTreeMap::new();
        let labels = |o: &DynamicObject| o.metadata.labels.clone().unwrap_or_default();
        match change {
            Change::Added(c) => {
                let name = key_of(c).1;
                self.cluster_q.add(name.clone());
                self.requeue_affected(&name, &[&labels(c)]);
            }
            Change::Updated { old, new } => {
                if more_than_status(old, new) {
                    let name = key_of(new).1;
                    self.cluster_q.add(name.clone());
                    self.requeue_affected(&name, &[&labels(old), &labels(new)]);
                }
            }
            Change::Deleted(c) => {
                let name = key_of(c).1;
                self.members.lock().remove(&name);
                self.probed.lock().remove(&name);
                self.update_cluster_gauge();
                self.requeue_affected(&name, &[&labels(c), &empty]);
            }
        }
    }

    fn on_work(&self, change: &Change<'_>) {
        // A Work deleted by someone else is written again; our own writes are no news.
        if let Change::Deleted(w) = change {
            let (ns, name) = key_of(w);
            self.forget_writes(&format!("work/{ns}/{name}"));
            self.forget_writes(&format!("workstatus/{ns}/{name}"));
            if let Some(owner) = w.metadata.labels.as_ref().and_then(|l| l.get(LABEL_OWNER)) {
                self.route_owner(owner);
            }
        }
    }

    /// A host object of a kind templates reference or policies select changed: requeue the
    /// FederatedDeployments that reference it and the policies of its namespace that select
    /// its kind; a credentials Secret re-probes its Cluster.
    fn on_host_object(&self, api_version: &str, kind: &str, change: &Change<'_>) {
        let obj = match change {
            Change::Added(o) | Change::Deleted(o) => *o,
            Change::Updated { old, new } => {
                if old.metadata.resource_version == new.metadata.resource_version {
                    return;
                }
                *new
            }
        };
        let (ns, name) = key_of(obj);
        let dep = (kind.to_string(), ns.clone(), name.clone());
        for fd in self.refs.lock().dependents(&dep) {
            self.fd_q.add(fd);
        }
        for pol in self.pps.list_namespace(&ns) {
            if reconcile::selects_kind(&pol, api_version, kind) {
                self.pp_q.add(key_of(&pol));
            }
        }
        if kind == "Secret" {
            for c in self.clusters.list() {
                let d = &c.data;
                if d.pointer("/spec/secretRef/name").and_then(Value::as_str) == Some(&name)
                    && d.pointer("/spec/secretRef/namespace")
                        .and_then(Value::as_str)
                        .unwrap_or(crate::SECRETS_NS)
                        == ns
                {
                    self.cluster_q.add(key_of(&c).1);
                }
            }
        }
    }
}

/// One worker of a queue: takes a key, syncs it, forgets its backoff on success or requeues
/// it rate-limited on failure.
async fn worker<K, F, Fut>(ctx: Arc<Ctx>, q: WorkQueue<K>, kind: &'static str, sync: F)
where
    K: QueueKey,
    F: Fn(Arc<Ctx>, K) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    while let Some(key) = q.get().await {
        let started = Instant::now();
        let result = sync(ctx.clone(), key.clone()).await;
        ctx.metrics
            .reconcile
            .with_label_values(&[kind, if result.is_ok() { "success" } else { "error" }])
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(()) => q.forget(&key),
            Err(e) => {
                warn!(kind, key = ?key, error = %format!("{e:#}"), "sync failed; retrying");
                q.add_rate_limited(key.clone());
            }
        }
        q.done(&key);
    }
}

/// The controllers; their tasks live in a JoinSet so that dropping this future (lost
/// leadership, shutdown) stops all of them.
async fn controllers(
    host: kube::Client,
    cfg: FederationConfig,
    metrics: Metrics,
) -> anyhow::Result<()> {
    let ctx = Ctx::new(host.clone(), cfg.clone(), metrics);
    let mut tasks = tokio::task::JoinSet::new();
    type Handler = fn(&Ctx, &Change<'_>);
    let informers: [(&Arc<Informer>, ApiResource, Handler); 4] = [
        (&ctx.clusters, crds::cluster_resource(), Ctx::on_cluster),
        (&ctx.fds, crds::fd_resource(), Ctx::on_fd),
        (&ctx.pps, crds::pp_resource(), Ctx::on_pp),
        (&ctx.works, crds::work_resource(), Ctx::on_work),
    ];
    for (informer, ar, handler) in informers {
        let weak = Arc::downgrade(&ctx);
        informer.add_handler(move |change| {
            if let Some(ctx) = weak.upgrade() {
                handler(&ctx, change);
            }
        });
        let mut wc = watcher::Config::default();
        if ar.plural == "works" {
            wc = wc.labels(LABEL_OWNER);
        }
        tasks.spawn(informer.clone().run(Api::all_with(host.clone(), &ar), wc));
    }
    let secrets = ctx.host_kind(&core::resource("", "v1", "Secret", "secrets"));
    for i in [&ctx.clusters, &ctx.fds, &ctx.pps, &ctx.works, &secrets] {
        if !i.wait_synced(SYNC_TIMEOUT).await {
            warn!(informer = ?i, "host informer not synced yet; starting anyway");
        }
    }
    let workers = cfg.concurrent_syncs.max(1);
    for _ in 0..workers {
        tasks.spawn(worker(
            ctx.clone(),
            ctx.cluster_q.clone(),
            "Cluster",
            |c: Arc<Ctx>, k: String| async move { health::sync_cluster(&c, &k).await },
        ));
    }
    // Probe the known members once before deciding anything.
    let deadline = Instant::now() + FIRST_PROBES_TIMEOUT;
    while Instant::now() < deadline {
        let all = {
            let probed = ctx.probed.lock();
            ctx.clusters
                .keys()
                .iter()
                .all(|(_, name)| probed.contains(name))
        };
        if all {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..workers {
        tasks.spawn(worker(
            ctx.clone(),
            ctx.fd_q.clone(),
            "FederatedDeployment",
            |c: Arc<Ctx>, k: ObjKey| async move { reconcile::reconcile_fd(&c, &k).await },
        ));
        tasks.spawn(worker(
            ctx.clone(),
            ctx.pp_q.clone(),
            "PropagationPolicy",
            |c: Arc<Ctx>, k: ObjKey| async move { reconcile::reconcile_pp(&c, &k).await },
        ));
    }
    info!(workers, "federation controllers running");
    // The resync is spread over its period (a slice of the keys every second), so that it
    // never queues thousands of keys at once ahead of real changes.
    let slots = cfg.resync.as_secs().max(1);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for n in 0u64.. {
        tick.tick().await;
        let slot = n % slots;
        for k in ctx.fds.keys() {
            if resync_slot(&k, slots) == slot {
                ctx.fd_q.add(k);
            }
        }
        for k in ctx.pps.keys() {
            if resync_slot(&k, slots) == slot {
                ctx.pp_q.add(k);
            }
        }
    }
    Ok(())
}

/// The second of the resync period in which `key` is requeued.
fn resync_slot(key: &ObjKey, slots: u64) -> u64 {
    let h = key
        .0
        .bytes()
        .chain([b'/'])
        .chain(key.1.bytes())
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    h % slots
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> DynamicObject {
        serde_json::from_value(v).expect("object")
    }

    #[test]
    fn status_writes_are_not_changes() {
        let a = obj(json!({"apiVersion": "v1", "kind": "X",
            "metadata": {"name": "a", "generation": 1, "resourceVersion": "1"},
            "spec": {"x": 1}, "status": {"y": 1}}));
        let mut b = a.clone();
        b.data["status"] = json!({"y": 2});
        b.metadata.resource_version = Some("2".into());
        assert!(!more_than_status(&a, &b));
        let mut c = b.clone();
        c.metadata.generation = Some(2);
        assert!(more_than_status(&a, &c));
        let mut d = b.clone();
        d.metadata.labels = Some([("k".to_string(), "v".to_string())].into());
        assert!(more_than_status(&a, &d));
        let mut e = b;
        e.metadata.deletion_timestamp = a.metadata.creation_timestamp.clone().or(Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
        ));
        assert!(more_than_status(&a, &e));
    }

    #[test]
    fn resync_slots_spread_keys() {
        let mut counts = [0usize; 30];
        for i in 0..3000 {
            counts[resync_slot(&("ns".into(), format!("fd-{i}")), 30) as usize] += 1;
        }
        assert!(counts.iter().all(|c| (50..=150).contains(c)), "{counts:?}");
    }

    #[test]
    fn refs_index_both_ways() {
        let mut r = Refs::default();
        let fd = ("shop".to_string(), "web".to_string());
        let cm = (
            "ConfigMap".to_string(),
            "shop".to_string(),
            "cfg".to_string(),
        );
        let sec = ("Secret".to_string(), "shop".to_string(), "tls".to_string());
        r.set(&fd, vec![cm.clone(), sec.clone()]);
        assert_eq!(r.dependents(&cm), vec![fd.clone()]);
        r.set(&fd, vec![sec.clone()]);
        assert!(r.dependents(&cm).is_empty());
        assert_eq!(r.dependents(&sec), vec![fd.clone()]);
        r.remove(&fd);
        assert!(r.dependents(&sec).is_empty());
        assert!(r.by_dep.is_empty() && r.by_fd.is_empty());
    }
}
