//! The `kumo federation` controllers, over one host client and one client per member built
//! from its credentials Secret:
//!
//! - cluster health: `/readyz`, version, Node and Pod totals of every member, every
//!   `health_interval` (and at once for a new Cluster), written to `Cluster.status`;
//! - FederatedDeployments, level-triggered (host watch events plus a short resync, which also
//!   reverts hand edits in members): placement → division → overrides → `Work` per member in
//!   the host → server-side apply of the Work's manifests to the member → status aggregated
//!   from the member Deployments; a finalizer deletes everything propagated first.
//!
//! Every per-cluster object is computed before anything is written, so a semantic error (no
//! cluster, zero weights, a bad override) becomes a False condition with nothing half-applied.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use base64::Engine as _;
use futures::StreamExt;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::config::Kubeconfig;
use kube::runtime::watcher;
use petgraph::graph::DiGraph;
use serde_json::{Value, json};
use tracing::{debug, info, warn};

use crate::availability::Availability;
use crate::core::{self, is_not_found, parse_quantity, str_at};
use crate::division::{self, Candidate};
use crate::placement::{self, ClusterView};
use crate::{FIELD_MANAGER, FINALIZER, LABEL_OWNER, crds, join, member_namespace, overrides};

/// How `kumo federation` runs.
#[derive(Debug, Clone)]
pub struct FederationConfig {
    /// Admin kubeconfig of the host apiserver.
    pub host_kubeconfig: PathBuf,
    /// Period of member health probes (`/readyz`, version, node/pod totals).
    pub health_interval: Duration,
    /// Period of the full resync (drift correction, status aggregation).
    pub resync: Duration,
    /// Default time a member may be NotReady before its replicas move elsewhere.
    pub toleration: Duration,
    /// Time a failed-over member must stay Ready before replicas move back.
    pub failback_stable: Duration,
}

impl FederationConfig {
    pub fn new(host_kubeconfig: PathBuf) -> Self {
        FederationConfig {
            host_kubeconfig,
            health_interval: Duration::from_secs(10),
            resync: Duration::from_secs(2),
            toleration: Duration::from_secs(60),
            failback_stable: Duration::from_secs(30),
        }
    }
}

/// Federated objects reconciled at once.
const RECONCILE_CONCURRENCY: usize = 8;

/// What the controllers know about one member.
struct Member {
    client: kube::Client,
    secret_rv: String,
    avail: Availability,
    /// Free allocatable (cpu millicores, memory bytes, pods).
    free: (i64, i64, i64),
    /// What we last applied per object (`kind/ns/name`): manifest hash and the
    /// resourceVersion the member returned.
    applied: Applied,
}

/// Per member: object key → (manifest hash, resourceVersion after our apply). An object
/// whose manifest and resourceVersion are both unchanged is not applied again: a read
/// replaces a write, and members are not woken by no-op applies every resync.
type Applied = HashMap<String, (u64, String)>;

type Members = Arc<Mutex<HashMap<String, Member>>>;

fn lock(m: &Members) -> std::sync::MutexGuard<'_, HashMap<String, Member>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

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
    let identity = kumo_client::leader::default_identity();
    kumo_client::leader::run_leader_elected(
        host.clone(),
        crate::SECRETS_NS,
        "kumo-federation",
        &identity,
        || controllers(host.clone(), cfg),
    )
    .await?
}

/// The controllers; their tasks live in a JoinSet so that dropping this future (lost
/// leadership, shutdown) stops all of them.
async fn controllers(host: kube::Client, cfg: FederationConfig) -> anyhow::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    let members: Members = Arc::new(Mutex::new(HashMap::new()));
    let fd_wake = Arc::new(tokio::sync::Notify::new());
    let cluster_wake = Arc::new(tokio::sync::Notify::new());

    for (ar, wakes) in [
        (crds::fd_resource(), vec![fd_wake.clone()]),
        (crds::pp_resource(), vec![fd_wake.clone()]),
        (
            crds::cluster_resource(),
            vec![fd_wake.clone(), cluster_wake.clone()],
        ),
    ] {
        let api: Api<DynamicObject> = Api::all_with(host.clone(), &ar);
        tasks.spawn(async move {
            let mut s = std::pin::pin!(watcher(api, watcher::Config::default()));
            while let Some(ev) = s.next().await {
                if let Err(e) = ev {
                    debug!(error = %e, "host watch");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                for w in &wakes {
                    w.notify_one();
                }
            }
        });
    }

    {
        let host = host.clone();
        let members = members.clone();
        let cfg = cfg.clone();
        let fd_wake = fd_wake.clone();
        tasks.spawn(async move {
            loop {
                match health_round(&host, &members, &cfg).await {
                    Ok(true) => fd_wake.notify_one(),
                    Ok(false) => {}
                    Err(e) => warn!(error = %e, "cluster health round"),
                }
                tokio::select! {
                    _ = cluster_wake.notified() => {}
                    _ = tokio::time::sleep(cfg.health_interval) => {}
                }
            }
        });
    }

    loop {
        if let Err(e) = reconcile_all(&host, &members, &cfg).await {
            warn!(error = %e, "federation reconcile");
        }
        tokio::select! {
            _ = fd_wake.notified() => {}
            _ = tokio::time::sleep(cfg.resync) => {}
        }
    }
}

// ---- cluster health ------------------------------------------------------------------------

/// Probes every Cluster; returns whether any member's schedulability changed.
async fn health_round(
    host: &kube::Client,
    members: &Members,
    cfg: &FederationConfig,
) -> anyhow::Result<bool> {
    let api: Api<DynamicObject> = Api::all_with(host.clone(), &crds::cluster_resource());
    let list = api.list(&ListParams::default()).await?;
    let names: BTreeSet<String> = list
        .items
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    lock(members).retain(|k, _| names.contains(k));
    let results = futures::future::join_all(
        list.items
            .iter()
            .map(|c| probe(host, &api, c, members, cfg)),
    )
    .await;
    let mut changed = false;
    for r in results {
        match r {
            Ok(c) => changed |= c,
            Err(e) => warn!(error = %e, "cluster probe"),
        }
    }
    Ok(changed)
}

async fn member_client(
    host: &kube::Client,
    cluster: &DynamicObject,
    members: &Members,
) -> anyhow::Result<kube::Client> {
    let name = cluster.metadata.name.clone().unwrap_or_default();
    let ns = str_at(&cluster.data, "/spec/secretRef/namespace").unwrap_or(crate::SECRETS_NS);
    let sname = str_at(&cluster.data, "/spec/secretRef/name")
        .ok_or_else(|| anyhow!("cluster {name} has no spec.secretRef.name"))?;
    let secrets: Api<DynamicObject> = Api::namespaced_with(
        host.clone(),
        ns,
        &core::resource("", "v1", "Secret", "secrets"),
    );
    let secret = secrets
        .get(sname)
        .await
        .with_context(|| format!("secret {ns}/{sname}"))?;
    let rv = secret.metadata.resource_version.clone().unwrap_or_default();
    if let Some(m) = lock(members).get(&name)
        && m.secret_rv == rv
    {
        return Ok(m.client.clone());
    }
    let kc64 = str_at(&secret.data, "/data/kubeconfig")
        .ok_or_else(|| anyhow!("secret {ns}/{sname} has no kubeconfig"))?;
    let kc = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(kc64)?)?;
    let client = join::client_from_kubeconfig(Kubeconfig::from_yaml(&kc)?, None).await?;
    let mut g = lock(members);
    let m = g.entry(name).or_insert_with(|| Member {
        client: client.clone(),
        secret_rv: rv.clone(),
        avail: Availability::default(),
        free: (0, 0, 0),
        applied: Applied::new(),
    });
    m.client = client.clone();
    m.applied.clear();
    m.secret_rv = rv;
    Ok(client)
}

fn condition(
    old: &[Value],
    ty: &str,
    status: bool,
    reason: &str,
    message: &str,
    now: &str,
) -> Value {
    let st = if status { "True" } else { "False" };
    let ltt = old
        .iter()
        .find(|c| c["type"] == ty && c["status"] == st)
        .and_then(|c| c.get("lastTransitionTime").cloned())
        .unwrap_or_else(|| json!(now));
    json!({"type": ty, "status": st, "reason": reason, "message": message, "lastTransitionTime": ltt})
}

fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[derive(Default)]
struct Totals {
    nodes: i64,
    alloc: (f64, f64, f64),
    req: (f64, f64, f64),
}

async fn member_totals(client: &kube::Client) -> anyhow::Result<Totals> {
    let nodes: Api<DynamicObject> =
        Api::all_with(client.clone(), &core::resource("", "v1", "Node", "nodes"));
    let pods: Api<DynamicObject> =
        Api::all_with(client.clone(), &core::resource("", "v1", "Pod", "pods"));
    let lp = ListParams::default();
    let (nl, pl) = tokio::try_join!(nodes.list(&lp), pods.list(&lp))?;
    let mut t = Totals::default();
    for n in &nl.items {
        t.nodes += 1;
        let ready = n
            .data
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            });
        if !ready {
            continue;
        }
        let q = |k: &str| {
            str_at(&n.data, &format!("/status/allocatable/{k}"))
                .and_then(parse_quantity)
                .unwrap_or(0.0)
        };
        t.alloc.0 += q("cpu");
        t.alloc.1 += q("memory");
        t.alloc.2 += q("pods");
    }
    for p in &pl.items {
        let phase = str_at(&p.data, "/status/phase").unwrap_or_default();
        if matches!(phase, "Succeeded" | "Failed") || str_at(&p.data, "/spec/nodeName").is_none() {
            continue;
        }
        t.req.2 += 1.0;
        let (cpu, mem) = pod_requests(&p.data["spec"]);
        t.req.0 += cpu;
        t.req.1 += mem;
    }
    Ok(t)
}

/// Sum of a pod spec's container requests (cpu cores, memory bytes).
fn pod_requests(spec: &Value) -> (f64, f64) {
    let mut out = (0.0, 0.0);
    for c in spec
        .get("containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let q = |k: &str| {
            str_at(c, &format!("/resources/requests/{k}"))
                .and_then(parse_quantity)
                .unwrap_or(0.0)
        };
        out.0 += q("cpu");
        out.1 += q("memory");
    }
    out
}

fn fmt_cpu(cores: f64) -> String {
    format!("{}m", (cores * 1000.0).round() as i64)
}

/// Probes one member and writes its Cluster status. Returns whether its readiness changed.
async fn probe(
    host: &kube::Client,
    api: &Api<DynamicObject>,
    cluster: &DynamicObject,
    members: &Members,
    cfg: &FederationConfig,
) -> anyhow::Result<bool> {
    let name = cluster.metadata.name.clone().unwrap_or_default();
    let now = now_rfc3339();
    let old_conds: Vec<Value> = cluster
        .data
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let result: anyhow::Result<(String, Totals)> = async {
        let client = member_client(host, cluster, members).await?;
        let req = http::Request::get("/readyz").body(Vec::new())?;
        let body = client.request_text(req).await.context("/readyz")?;
        if body.trim() != "ok" {
            return Err(anyhow!("/readyz: {body}"));
        }
        let version = client.apiserver_version().await?.git_version;
        Ok((version, member_totals(&client).await?))
    }
    .await;
    let ready = result.is_ok();
    let mut status = json!({"lastProbeTime": now});
    let cond = match &result {
        Ok((version, t)) => {
            status["kubernetesVersion"] = json!(version);
            status["nodeCount"] = json!(t.nodes);
            status["allocatable"] = json!({"cpu": fmt_cpu(t.alloc.0), "memory": format!("{}", t.alloc.1 as i64), "pods": format!("{}", t.alloc.2 as i64)});
            status["requested"] = json!({"cpu": fmt_cpu(t.req.0), "memory": format!("{}", t.req.1 as i64), "pods": format!("{}", t.req.2 as i64)});
            condition(
                &old_conds,
                "Ready",
                true,
                "ClusterReady",
                "/readyz is ok",
                &now,
            )
        }
        Err(e) => condition(
            &old_conds,
            "Ready",
            false,
            "ClusterNotReachable",
            &format!("{e:#}"),
            &now,
        ),
    };
    status["conditions"] = json!([cond]);
    let changed = {
        let mut g = lock(members);
        match g.get_mut(&name) {
            Some(m) => {
                let was = schedulable(m, cfg.toleration, cfg.failback_stable);
                if let Ok((_, t)) = &result {
                    m.free = (
                        ((t.alloc.0 - t.req.0) * 1000.0) as i64,
                        (t.alloc.1 - t.req.1) as i64,
                        (t.alloc.2 - t.req.2) as i64,
                    );
                }
                m.avail.observe(ready, Instant::now(), cfg.failback_stable);
                was != schedulable(m, cfg.toleration, cfg.failback_stable)
            }
            None => false,
        }
    };
    api.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await
    .with_context(|| format!("patch status of cluster {name}"))?;
    Ok(changed)
}

/// Whether a member takes part in division for an object tolerating `toleration` of
/// NotReady: Ready (or NotReady for less than that), and, back from a longer outage, Ready for
/// `stable` already (hysteresis: a flapping member does not pull replicas back and forth).
fn schedulable(m: &Member, toleration: Duration, stable: Duration) -> bool {
    m.avail.schedulable(toleration, stable, Instant::now())
}

// ---- federated deployments -----------------------------------------------------------------

async fn reconcile_all(
    host: &kube::Client,
    members: &Members,
    cfg: &FederationConfig,
) -> anyhow::Result<()> {
    let capi: Api<DynamicObject> = Api::all_with(host.clone(), &crds::cluster_resource());
    let clusters = capi.list(&ListParams::default()).await?;
    let views: Vec<ClusterView> = clusters
        .items
        .iter()
        .map(|c| ClusterView {
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
        })
        .collect();
    let fapi: Api<DynamicObject> = Api::all_with(host.clone(), &crds::fd_resource());
    let fds = fapi.list(&ListParams::default()).await?;
    // Objects are independent: a few at a time, so one slow member does not hold up the rest.
    futures::stream::iter(fds.items)
        .for_each_concurrent(RECONCILE_CONCURRENCY, |fd| {
            let views = &views;
            async move {
                let key = format!(
                    "{}/{}",
                    fd.metadata.namespace.clone().unwrap_or_default(),
                    fd.metadata.name.clone().unwrap_or_default()
                );
                if let Err(e) = reconcile_fd(host, members, cfg, views, fd).await {
                    warn!(federateddeployment = %key, error = %format!("{e:#}"), "reconcile");
                }
            }
        })
        .await;
    let papi: Api<DynamicObject> = Api::all_with(host.clone(), &crds::pp_resource());
    for pol in papi.list(&ListParams::default()).await?.items {
        let key = format!(
            "{}/{}",
            pol.metadata.namespace.clone().unwrap_or_default(),
            pol.metadata.name.clone().unwrap_or_default()
        );
        if let Err(e) = reconcile_pp(host, members, cfg, &views, pol).await {
            warn!(propagationpolicy = %key, error = %format!("{e:#}"), "reconcile");
        }
    }
    Ok(())
}

/// A semantic error: a False condition on the object, nothing applied.
struct Refusal {
    condition: &'static str,
    reason: String,
    message: String,
}

fn refuse(condition: &'static str, reason: &str, message: impl Into<String>) -> Refusal {
    Refusal {
        condition,
        reason: reason.into(),
        message: message.into(),
    }
}

/// What one member should run.
struct Target {
    cluster: String,
    replicas: u32,
    manifests: Vec<Value>,
}

/// The owner label value of what a federated object propagates: `<kind>.<ns>.<name>`
/// (namespaces have no dots, so it is unambiguous), shortened with a stable hash when it
/// would pass the 63 characters a label value may have.
fn owner_key_of(kind: &str, ns: &str, name: &str) -> String {
    let full = format!("{kind}.{ns}.{name}");
    if full.len() <= 63 {
        return full;
    }
    let mut prefix: String = full.chars().take(46).collect();
    while prefix.ends_with(|c: char| !c.is_ascii_alphanumeric()) {
        prefix.pop();
    }
    format!("{prefix}-{:016x}", fnv1a(full.as_bytes()))
}

/// FNV-1a: a hash that stays the same across builds (labels outlive the process).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn owner_key(ns: &str, name: &str) -> String {
    owner_key_of("fd", ns, name)
}

/// Work names are the owner keys (unique per federated object, valid object names).
fn work_name(ns: &str, name: &str) -> String {
    owner_key(ns, name)
}

async fn reconcile_fd(
    host: &kube::Client,
    members: &Members,
    cfg: &FederationConfig,
    views: &[ClusterView],
    fd: DynamicObject,
) -> anyhow::Result<()> {
    let ns = fd.metadata.namespace.clone().unwrap_or_default();
    let name = fd.metadata.name.clone().unwrap_or_default();
    let fapi: Api<DynamicObject> = Api::namespaced_with(host.clone(), &ns, &crds::fd_resource());
    let owner = owner_key(&ns, &name);
    let works = list_works(host, &owner).await?;
    if !finalize(host, members, &fapi, &fd, &works).await? {
        return Ok(());
    }

    let old_status = fd.data.get("status").cloned().unwrap_or(json!({}));
    let old_conds: Vec<Value> = old_status
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let generation = fd.metadata.generation.unwrap_or(0);
    let now = now_rfc3339();

    let plan = plan(host, members, cfg, views, &fd).await?;
    let targets = match plan {
        Ok(t) => t,
        Err(r) => {
            let mut st = old_status.clone();
            let mut conds = vec![condition(
                &old_conds,
                r.condition,
                false,
                &r.reason,
                &r.message,
                &now,
            )];
            if r.condition != "Scheduled" {
                conds.push(condition(
                    &old_conds,
                    "Scheduled",
                    true,
                    "Scheduled",
                    "",
                    &now,
                ));
            }
            conds.push(condition(
                &old_conds, "Ready", false, &r.reason, &r.message, &now,
            ));
            st["conditions"] = json!(conds);
            st["observedGeneration"] = json!(generation);
            return write_status(&fapi, &name, &old_status, st).await;
        }
    };

    // Works in the host, then the members.
    let target_names: BTreeSet<&str> = targets.iter().map(|t| t.cluster.as_str()).collect();
    let toleration = object_toleration(&fd, cfg);
    prune_works(
        host,
        members,
        &works,
        &target_names,
        toleration,
        cfg.failback_stable,
    )
    .await?;
    let mut cluster_status = Vec::new();
    let (mut ready, mut avail, mut updated, mut current) = (0i64, 0i64, 0i64, 0i64);
    let mut all_applied = true;
    let mut desired_total = 0i64;
    for t in &targets {
        desired_total += i64::from(t.replicas);
        let wname = work_name(&ns, &name);
        let mut cs = json!({"name": t.cluster, "scheduledReplicas": t.replicas, "replicas": 0,
            "readyReplicas": 0, "availableReplicas": 0, "updatedReplicas": 0});
        let Some((client, err)) = sync_work(
            host,
            members,
            &t.cluster,
            &wname,
            &owner,
            &t.manifests,
            &now,
        )
        .await?
        else {
            all_applied = false;
            cs["conditions"] = json!([condition(
                &[],
                "Applied",
                false,
                "ClusterNotReady",
                "the member is not Ready",
                &now
            )]);
            cluster_status.push(cs);
            continue;
        };
        if let Some(e) = err {
            all_applied = false;
            cs["conditions"] = json!([condition(&[], "Applied", false, "ApplyFailed", &e, &now)]);
            cluster_status.push(cs);
            continue;
        }
        // Status from the member's Deployment.
        if let Some(d) = t.manifests.last() {
            let dns = str_at(d, "/metadata/namespace").unwrap_or(&ns);
            let dname = str_at(d, "/metadata/name").unwrap_or(&name);
            let dapi: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), dns, &core::deployment_resource());
            if let Ok(md) = dapi.get(dname).await {
                let g = |k: &str| {
                    md.data
                        .pointer(&format!("/status/{k}"))
                        .and_then(Value::as_i64)
                        .unwrap_or(0)
                };
                let fresh = md
                    .data
                    .pointer("/status/observedGeneration")
                    .and_then(Value::as_i64)
                    >= md.metadata.generation;
                cs["replicas"] = json!(g("replicas"));
                cs["readyReplicas"] = json!(g("readyReplicas"));
                cs["availableReplicas"] = json!(g("availableReplicas"));
                cs["updatedReplicas"] = json!(g("updatedReplicas"));
                let done = fresh
                    && g("readyReplicas") == i64::from(t.replicas)
                    && g("updatedReplicas") == i64::from(t.replicas)
                    && g("replicas") == i64::from(t.replicas);
                cs["conditions"] = json!([
                    condition(&[], "Applied", true, "Applied", "", &now),
                    condition(
                        &[],
                        "Ready",
                        done,
                        if done {
                            "DeploymentReady"
                        } else {
                            "DeploymentProgressing"
                        },
                        &format!("{}/{} ready", g("readyReplicas"), t.replicas),
                        &now
                    ),
                ]);
                ready += g("readyReplicas");
                avail += g("availableReplicas");
                updated += g("updatedReplicas");
                current += g("replicas");
            }
        }
        cluster_status.push(cs);
    }
    let placement_text = targets
        .iter()
        .map(|t| format!("{}:{}", t.cluster, t.replicas))
        .collect::<Vec<_>>()
        .join(",");
    let is_ready = all_applied
        && ready == desired_total
        && updated == desired_total
        && current == desired_total;
    let st = json!({
        "observedGeneration": generation,
        "replicas": current,
        "readyReplicas": ready,
        "availableReplicas": avail,
        "updatedReplicas": updated,
        "ready": format!("{ready}/{desired_total}"),
        "placement": placement_text,
        "clusters": cluster_status,
        "conditions": [
            condition(&old_conds, "Scheduled", true, "Scheduled", &format!("replicas placed as {placement_text}"), &now),
            condition(&old_conds, "Progressing", !is_ready, if is_ready { "Complete" } else { "Progressing" }, "", &now),
            condition(&old_conds, "Ready", is_ready, if is_ready { "AllReplicasReady" } else { "ReplicasNotReady" },
                &format!("{ready}/{desired_total} replicas ready"), &now),
        ],
    });
    write_status(&fapi, &name, &old_status, st).await
}

/// Adds our finalizer, or on deletion removes what the owner propagated and then the
/// finalizer. Returns false when the object is being deleted (nothing else to do).
async fn finalize(
    host: &kube::Client,
    members: &Members,
    api: &Api<DynamicObject>,
    obj: &DynamicObject,
    works: &[DynamicObject],
) -> anyhow::Result<bool> {
    let name = obj.metadata.name.clone().unwrap_or_default();
    let finalizers = obj.metadata.finalizers.clone().unwrap_or_default();
    if obj.metadata.deletion_timestamp.is_some() {
        if finalizers.iter().any(|f| f == FINALIZER) {
            for w in works {
                remove_work(host, members, w).await?;
            }
            let rest: Vec<String> = finalizers.into_iter().filter(|f| f != FINALIZER).collect();
            api.patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": rest}})),
            )
            .await?;
            info!(object = %name, "propagated objects deleted");
        }
        return Ok(false);
    }
    if !finalizers.iter().any(|f| f == FINALIZER) {
        let mut f = finalizers;
        f.push(FINALIZER.into());
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": f, "resourceVersion": obj.metadata.resource_version}})),
        )
        .await?;
    }
    Ok(true)
}

/// A label selector as a list-call selector string (`k=v,k in (a,b),!k`).
fn selector_string(sel: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(ml) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in ml {
            parts.push(format!("{k}={}", v.as_str().unwrap_or_default()));
        }
    }
    for e in sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
        let values: Vec<&str> = e
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        match e
            .get("operator")
            .and_then(Value::as_str)
            .unwrap_or_default()
        {
            "In" => parts.push(format!("{key} in ({})", values.join(","))),
            "NotIn" => parts.push(format!("{key} notin ({})", values.join(","))),
            "Exists" => parts.push(key.to_string()),
            "DoesNotExist" => parts.push(format!("!{key}")),
            _ => {}
        }
    }
    parts.join(",")
}

/// A PropagationPolicy: the objects its resourceSelectors pick in its namespace go, with
/// their namespace, to every Ready cluster its placement selects (one Work per member).
async fn reconcile_pp(
    host: &kube::Client,
    members: &Members,
    cfg: &FederationConfig,
    views: &[ClusterView],
    pol: DynamicObject,
) -> anyhow::Result<()> {
    let ns = pol.metadata.namespace.clone().unwrap_or_default();
    let name = pol.metadata.name.clone().unwrap_or_default();
    let api: Api<DynamicObject> = Api::namespaced_with(host.clone(), &ns, &crds::pp_resource());
    let owner = owner_key_of("pp", &ns, &name);
    let works = list_works(host, &owner).await?;
    if !finalize(host, members, &api, &pol, &works).await? {
        return Ok(());
    }
    let old_status = pol.data.get("status").cloned().unwrap_or(json!({}));
    let old_conds: Vec<Value> = old_status
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let now = now_rfc3339();
    let generation = pol.metadata.generation.unwrap_or(0);
    let refuse_with = |reason: &str, message: String| {
        json!({
            "observedGeneration": generation,
            "conditions": [condition(&old_conds, "Scheduled", false, reason, &message, &now)],
        })
    };
    let placement_spec = pol
        .data
        .pointer("/spec/placement")
        .cloned()
        .unwrap_or(json!({}));
    let selected = match placement::select(&placement_spec, views) {
        Ok(s) => s,
        Err(e) => {
            return write_status(&api, &name, &old_status, refuse_with(e.reason, e.message)).await;
        }
    };
    let clusters: Vec<String> = {
        let g = lock(members);
        selected
            .into_iter()
            .filter(|c| {
                g.get(c)
                    .is_some_and(|m| schedulable(m, cfg.toleration, cfg.failback_stable))
            })
            .collect()
    };
    let mut objects = Vec::new();
    for rs in pol
        .data
        .pointer("/spec/resourceSelectors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(ar) = core::resource_of(rs) else {
            return write_status(
                &api,
                &name,
                &old_status,
                refuse_with(
                    "InvalidSelector",
                    "resourceSelectors need apiVersion and kind".into(),
                ),
            )
            .await;
        };
        let rapi: Api<DynamicObject> = Api::namespaced_with(host.clone(), &ns, &ar);
        let found = if let Some(n) = rs.get("name").and_then(Value::as_str) {
            match rapi.get(n).await {
                Ok(o) => vec![o],
                Err(e) if is_not_found(&e) => Vec::new(),
                Err(e) => return Err(e.into()),
            }
        } else {
            let sel = rs
                .get("labelSelector")
                .map(selector_string)
                .unwrap_or_default();
            rapi.list(&ListParams::default().labels(&sel)).await?.items
        };
        for o in found {
            let mut v = serde_json::to_value(&o)?;
            v["apiVersion"] = rs["apiVersion"].clone();
            v["kind"] = rs["kind"].clone();
            objects.push(clean(v, &owner));
        }
    }
    let mut manifests =
        vec![json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})];
    manifests.extend(objects);
    let manifests = order(manifests);
    let targets: BTreeSet<&str> = clusters.iter().map(String::as_str).collect();
    prune_works(
        host,
        members,
        &works,
        &targets,
        cfg.toleration,
        cfg.failback_stable,
    )
    .await?;
    let wname = owner.clone();
    let mut errors = Vec::new();
    for c in &clusters {
        match sync_work(host, members, c, &wname, &owner, &manifests, &now).await? {
            Some((_, None)) => {}
            Some((_, Some(e))) => errors.push(format!("{c}: {e}")),
            None => errors.push(format!("{c}: not Ready")),
        }
    }
    let placement_text = clusters.join(",");
    let st = json!({
        "observedGeneration": generation,
        "placement": placement_text,
        "conditions": [
            condition(&old_conds, "Scheduled", true, "Scheduled", &format!("{} objects to {placement_text}", manifests.len() - 1), &now),
            condition(&old_conds, "Applied", errors.is_empty(), if errors.is_empty() { "Applied" } else { "ApplyFailed" }, &errors.join("; "), &now),
        ],
    });
    write_status(&api, &name, &old_status, st).await
}

/// `spec.replicaScheduling.tolerationSeconds` of a federated object, else the default.
fn object_toleration(obj: &DynamicObject, cfg: &FederationConfig) -> Duration {
    obj.data
        .pointer("/spec/replicaScheduling/tolerationSeconds")
        .and_then(Value::as_u64)
        .map_or(cfg.toleration, Duration::from_secs)
}

/// Removes the Works (and what they applied) of clusters no longer targeted. A member that
/// is down or failed over keeps its Work (and old replicas) until it is back and stable.
async fn prune_works(
    host: &kube::Client,
    members: &Members,
    works: &[DynamicObject],
    targets: &BTreeSet<&str>,
    toleration: Duration,
    stable: Duration,
) -> anyhow::Result<()> {
    for w in works {
        let cluster = str_at(&w.data, "/spec/cluster").unwrap_or_default();
        if targets.contains(cluster) {
            continue;
        }
        let keep = lock(members)
            .get(cluster)
            .is_some_and(|m| !schedulable(m, toleration, stable));
        if !keep {
            remove_work(host, members, w).await?;
        }
    }
    Ok(())
}

/// Writes one member's Work in the host and, if the member is Ready, applies its manifests
/// there and records the result in the Work's status. `None` when the member is not Ready;
/// otherwise the member client and the apply error, if any.
async fn sync_work(
    host: &kube::Client,
    members: &Members,
    cluster: &str,
    wname: &str,
    owner: &str,
    manifests: &[Value],
    now: &str,
) -> anyhow::Result<Option<(kube::Client, Option<String>)>> {
    let wns = member_namespace(cluster);
    let wapi: Api<DynamicObject> = Api::namespaced_with(host.clone(), &wns, &crds::work_resource());
    let work = json!({
        "apiVersion": crate::API_VERSION, "kind": "Work",
        "metadata": {"name": wname, "namespace": wns, "labels": {LABEL_OWNER: owner}},
        "spec": {"cluster": cluster, "workload": {"manifests": manifests}},
    });
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let current = match wapi.get(wname).await {
        Ok(w) => Some(w),
        Err(e) if is_not_found(&e) => None,
        Err(e) => return Err(e).with_context(|| format!("work {wns}/{wname}")),
    };
    if current.as_ref().and_then(|w| w.data.get("spec")) != Some(&work["spec"]) {
        wapi.patch(wname, &pp, &Patch::Apply(&work))
            .await
            .with_context(|| format!("work {wns}/{wname}"))?;
    }
    let member = lock(members)
        .get(cluster)
        .filter(|m| m.avail.ready)
        .map(|m| (m.client.clone(), m.applied.clone()));
    let Some((client, mut applied)) = member else {
        return Ok(None);
    };
    let (results, err) = apply_manifests(&client, manifests, &mut applied).await;
    if let Some(m) = lock(members).get_mut(cluster) {
        m.applied.extend(applied);
    }
    let wstatus = json!({"status": {
        "manifests": results,
        "conditions": [condition(&[], "Applied", err.is_none(), if err.is_none() { "Applied" } else { "ApplyFailed" },
            err.as_deref().unwrap_or(""), now)],
    }});
    let old_w = wapi.get_status(wname).await.ok();
    if old_w
        .as_ref()
        .and_then(|w| w.data.pointer("/status/manifests"))
        != wstatus.pointer("/status/manifests")
    {
        let _ = wapi
            .patch_status(wname, &PatchParams::default(), &Patch::Merge(&wstatus))
            .await;
    }
    Ok(Some((client, err)))
}

/// Writes `status` unless it equals the old one (a status write is a watch event: writing an
/// unchanged status would reconcile in a loop).
async fn write_status(
    api: &Api<DynamicObject>,
    name: &str,
    old: &Value,
    new: Value,
) -> anyhow::Result<()> {
    let unchanged = new
        .as_object()
        .is_some_and(|n| n.iter().all(|(k, v)| old.get(k) == Some(v)));
    if unchanged {
        return Ok(());
    }
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": new})),
    )
    .await
    .with_context(|| format!("status of {name}"))?;
    Ok(())
}

async fn list_works(host: &kube::Client, owner: &str) -> anyhow::Result<Vec<DynamicObject>> {
    let api: Api<DynamicObject> = Api::all_with(host.clone(), &crds::work_resource());
    Ok(api
        .list(&ListParams::default().labels(&format!("{LABEL_OWNER}={owner}")))
        .await?
        .items)
}

/// Deletes what a Work applied in its member (not namespaces), then the Work.
async fn remove_work(
    host: &kube::Client,
    members: &Members,
    w: &DynamicObject,
) -> anyhow::Result<()> {
    let cluster = str_at(&w.data, "/spec/cluster")
        .unwrap_or_default()
        .to_string();
    let client = lock(members).get(&cluster).map(|m| m.client.clone());
    if let Some(client) = client {
        let manifests = w
            .data
            .pointer("/spec/workload/manifests")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for m in manifests.iter().rev() {
            if m["kind"] == "Namespace" {
                continue;
            }
            let Some(ar) = core::resource_of(m) else {
                continue;
            };
            let mname = str_at(m, "/metadata/name").unwrap_or_default();
            let api: Api<DynamicObject> = match str_at(m, "/metadata/namespace") {
                Some(mns) => Api::namespaced_with(client.clone(), mns, &ar),
                None => Api::all_with(client.clone(), &ar),
            };
            let dp = DeleteParams::background();
            join::ignore_not_found(api.delete(mname, &dp).await.map(|_| ()))
                .with_context(|| format!("delete {} {mname} in {cluster}", ar.kind))?;
        }
    }
    let ns = w.metadata.namespace.clone().unwrap_or_default();
    let api: Api<DynamicObject> = Api::namespaced_with(host.clone(), &ns, &crds::work_resource());
    join::ignore_not_found(
        api.delete(
            &w.metadata.name.clone().unwrap_or_default(),
            &DeleteParams::default(),
        )
        .await
        .map(|_| ()),
    )?;
    Ok(())
}

/// Server-side applies manifests in order; stops at the first failure (later ones may need it).
async fn apply_manifests(
    client: &kube::Client,
    manifests: &[Value],
    applied: &mut Applied,
) -> (Vec<Value>, Option<String>) {
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let mut out = Vec::new();
    for m in manifests {
        let kind = str_at(m, "/kind").unwrap_or_default();
        let mname = str_at(m, "/metadata/name").unwrap_or_default();
        let mns = str_at(m, "/metadata/namespace");
        let mut rec =
            json!({"apiVersion": m["apiVersion"], "kind": kind, "name": mname, "applied": false});
        if let Some(n) = mns {
            rec["namespace"] = json!(n);
        }
        let Some(ar) = core::resource_of(m) else {
            rec["message"] = json!("no apiVersion/kind");
            out.push(rec);
            return (
                out,
                Some(format!("manifest {mname} has no apiVersion/kind")),
            );
        };
        let api: Api<DynamicObject> = match mns {
            Some(n) => Api::namespaced_with(client.clone(), n, &ar),
            None => Api::all_with(client.clone(), &ar),
        };
        let key = format!("{kind}/{}/{mname}", mns.unwrap_or_default());
        let hash = fnv1a(m.to_string().as_bytes());
        if let Some((h, rv)) = applied.get(&key)
            && *h == hash
            && let Ok(live) = api.get(mname).await
            && live.metadata.resource_version.as_ref() == Some(rv)
        {
            rec["applied"] = json!(true);
            out.push(rec);
            continue;
        }
        match api.patch(mname, &pp, &Patch::Apply(m)).await {
            Ok(o) => {
                applied.insert(key, (hash, o.metadata.resource_version.unwrap_or_default()));
                rec["applied"] = json!(true);
                out.push(rec);
            }
            Err(e) => {
                let msg = format!("apply {kind} {mname}: {e}");
                rec["message"] = json!(msg);
                out.push(rec);
                return (out, Some(msg));
            }
        }
    }
    (out, None)
}

/// Strips server-set metadata from an object to send it elsewhere.
fn clean(mut obj: Value, owner: &str) -> Value {
    if let Some(o) = obj.as_object_mut() {
        o.remove("status");
    }
    // A member allocates its own Service IPs and node ports.
    if obj["kind"] == "Service"
        && let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut)
    {
        for k in ["clusterIP", "clusterIPs"] {
            spec.remove(k);
        }
        for p in spec
            .get_mut("ports")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(p) = p.as_object_mut() {
                p.remove("nodePort");
            }
        }
    }
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "managedFields",
            "generation",
            "ownerReferences",
            "selfLink",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "finalizers",
        ] {
            m.remove(k);
        }
        if let Some(a) = m.get_mut("annotations").and_then(Value::as_object_mut) {
            a.remove("kubectl.kubernetes.io/last-applied-configuration");
        }
        let labels = m.entry("labels").or_insert_with(|| json!({}));
        if let Some(l) = labels.as_object_mut() {
            l.insert(LABEL_OWNER.into(), json!(owner));
        }
    }
    obj
}

/// The (kind, name) of the ConfigMaps, Secrets and ServiceAccounts a pod template uses.
fn referenced(pod_spec: &Value) -> BTreeSet<(&'static str, String)> {
    let mut out = BTreeSet::new();
    let mut add = |kind: &'static str, v: Option<&Value>| {
        if let Some(n) = v.and_then(Value::as_str).filter(|n| !n.is_empty()) {
            out.insert((kind, n.to_string()));
        }
    };
    for v in pod_spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        add("ConfigMap", v.pointer("/configMap/name"));
        add("Secret", v.pointer("/secret/secretName"));
        for s in v
            .pointer("/projected/sources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            add("ConfigMap", s.pointer("/configMap/name"));
            add("Secret", s.pointer("/secret/name"));
        }
    }
    let containers = ["containers", "initContainers"].iter().flat_map(|k| {
        pod_spec
            .get(*k)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
    });
    for c in containers {
        for e in c
            .get("envFrom")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            add("ConfigMap", e.pointer("/configMapRef/name"));
            add("Secret", e.pointer("/secretRef/name"));
        }
        for e in c.get("env").and_then(Value::as_array).into_iter().flatten() {
            add("ConfigMap", e.pointer("/valueFrom/configMapKeyRef/name"));
            add("Secret", e.pointer("/valueFrom/secretKeyRef/name"));
        }
    }
    add("ServiceAccount", pod_spec.get("serviceAccountName"));
    for s in pod_spec
        .get("imagePullSecrets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        add("Secret", s.get("name"));
    }
    out.retain(|(k, n)| !(*k == "ServiceAccount" && n == "default"));
    out
}

/// Orders manifests so that each comes after what it depends on: the namespace first, then
/// ServiceAccounts, ConfigMaps and Secrets (a ServiceAccount may name Secrets), then the
/// workload. A topological sort over the dependency graph (stable by input order).
fn order(manifests: Vec<Value>) -> Vec<Value> {
    let mut g: DiGraph<usize, ()> = DiGraph::new();
    let idx: Vec<_> = (0..manifests.len()).map(|i| g.add_node(i)).collect();
    let rank = |v: &Value| match v["kind"].as_str().unwrap_or_default() {
        "Namespace" => 0,
        "Secret" | "ConfigMap" => 1,
        "ServiceAccount" => 2,
        _ => 3,
    };
    for (i, a) in manifests.iter().enumerate() {
        for (j, b) in manifests.iter().enumerate() {
            if rank(a) < rank(b) {
                g.add_edge(idx[i], idx[j], ());
            }
        }
    }
    let sorted = petgraph::algo::toposort(&g, None).unwrap_or_else(|_| idx.clone());
    let mut slots: Vec<Option<Value>> = manifests.into_iter().map(Some).collect();
    sorted
        .into_iter()
        .filter_map(|n| slots[g[n]].take())
        .collect()
}

fn matches_target(entry: &Value, view: &ClusterView) -> bool {
    let by_name = entry
        .get("cluster")
        .and_then(Value::as_str)
        .is_some_and(|c| c == view.name)
        || entry
            .get("clusters")
            .and_then(Value::as_array)
            .is_some_and(|cs| cs.iter().any(|c| c.as_str() == Some(&view.name)));
    let by_sel = entry
        .get("clusterSelector")
        .is_some_and(|s| placement::selector_matches(s, &view.labels));
    by_name || by_sel
}

/// The shares of the last Capacity division if it is still valid: same generation, Scheduled,
/// and every cluster that got replicas still schedulable.
fn previous_capacity_shares(
    fd: &DynamicObject,
    schedulable_now: &[String],
) -> Option<std::collections::BTreeMap<String, u32>> {
    let st = fd.data.get("status")?;
    if st.get("observedGeneration").and_then(Value::as_i64) != fd.metadata.generation {
        return None;
    }
    let scheduled = st
        .get("conditions")
        .and_then(Value::as_array)?
        .iter()
        .any(|c| c["type"] == "Scheduled" && c["status"] == "True");
    if !scheduled {
        return None;
    }
    let mut out = std::collections::BTreeMap::new();
    for c in st.get("clusters").and_then(Value::as_array)? {
        let name = c.get("name").and_then(Value::as_str)?;
        let n = c.get("scheduledReplicas").and_then(Value::as_u64)? as u32;
        if n > 0 && !schedulable_now.iter().any(|s| s == name) {
            return None;
        }
        out.insert(name.to_string(), n);
    }
    (!out.is_empty()).then_some(out)
}

/// Placement, division, overrides and dependencies: what each member should run, or why not.
async fn plan(
    host: &kube::Client,
    members: &Members,
    cfg: &FederationConfig,
    views: &[ClusterView],
    fd: &DynamicObject,
) -> anyhow::Result<Result<Vec<Target>, Refusal>> {
    let ns = fd.metadata.namespace.clone().unwrap_or_default();
    let name = fd.metadata.name.clone().unwrap_or_default();
    let owner = owner_key(&ns, &name);
    let spec = fd.data.get("spec").cloned().unwrap_or(json!({}));
    let Some(template) = spec.get("template").filter(|t| {
        t.pointer("/spec/template/spec/containers")
            .is_some_and(Value::is_array)
    }) else {
        return Ok(Err(refuse(
            "Scheduled",
            "InvalidTemplate",
            "spec.template must be a Deployment with spec.template.spec.containers",
        )));
    };
    let placement_spec = spec.get("placement").cloned().unwrap_or(json!({}));
    let selected = match placement::select(&placement_spec, views) {
        Ok(s) => s,
        Err(e) => return Ok(Err(refuse("Scheduled", e.reason, e.message))),
    };
    let sched = spec.get("replicaScheduling").cloned().unwrap_or(json!({}));
    let total = template
        .pointer("/spec/replicas")
        .and_then(Value::as_u64)
        .unwrap_or(1) as u32;
    let schedulable_now: Vec<String> = {
        let g = lock(members);
        selected
            .iter()
            .filter(|c| {
                g.get(*c).is_some_and(|m| {
                    schedulable(m, object_toleration(fd, cfg), cfg.failback_stable)
                })
            })
            .cloned()
            .collect()
    };
    if schedulable_now.is_empty() {
        return Ok(Err(refuse(
            "Scheduled",
            "NoReadyCluster",
            format!(
                "none of the selected clusters ({}) is Ready",
                selected.join(", ")
            ),
        )));
    }
    let view_of = |n: &str| views.iter().find(|v| v.name == n);
    let shares = if sched.get("type").and_then(Value::as_str) == Some("Divided") {
        let weights = sched
            .get("weights")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let limits = sched
            .get("limits")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let capacity = sched.get("divisionPreference").and_then(Value::as_str) == Some("Capacity");
        let req = pod_requests(
            template
                .pointer("/spec/template/spec")
                .unwrap_or(&Value::Null),
        );
        let req = ((req.0 * 1000.0) as i64, req.1 as i64);
        let mut cands = Vec::new();
        for c in &schedulable_now {
            let Some(v) = view_of(c) else { continue };
            let mut cand = Candidate::new(c.clone(), 1);
            if capacity {
                let free = lock(members).get(c).map(|m| m.free).unwrap_or((0, 0, 0));
                let fit = division::capacity_replicas(free, req);
                cand.weight = fit;
                cand.max = Some(fit.min(u64::from(u32::MAX)) as u32);
            } else if !weights.is_empty() {
                cand.weight = weights
                    .iter()
                    .find(|w| matches_target(w, v))
                    .and_then(|w| w.get("weight").and_then(Value::as_u64))
                    .unwrap_or(0);
            }
            if let Some(l) = limits.iter().find(|l| matches_target(l, v)) {
                cand.min = l.get("min").and_then(Value::as_u64).unwrap_or(0) as u32;
                if let Some(m) = l.get("max").and_then(Value::as_u64) {
                    cand.max = Some(cand.max.map_or(m as u32, |x| x.min(m as u32)));
                }
            }
            cands.push(cand);
        }
        // Capacity decisions are sticky: the member's free capacity shrinks by the very pods
        // placed there, so re-dividing on every probe would move replicas back and forth.
        // A new generation or a placed member becoming unschedulable divides again.
        let previous = if capacity {
            previous_capacity_shares(fd, &schedulable_now)
        } else {
            None
        };
        let divided = match previous {
            Some(p) => Ok(p),
            None => division::divided(total, &cands),
        };
        match divided {
            Ok(s) => s,
            Err(e) => {
                let reason = match e {
                    division::DivisionError::NoClusters => "NoClusterSelected",
                    division::DivisionError::AllWeightsZero => "AllWeightsZero",
                    division::DivisionError::MinimumsExceedTotal { .. } => "MinimumsExceedReplicas",
                };
                return Ok(Err(refuse("Scheduled", reason, e.to_string())));
            }
        }
    } else {
        division::duplicated(total, &schedulable_now)
    };

    // Dependencies from the host namespace.
    let pod_spec = template
        .pointer("/spec/template/spec")
        .cloned()
        .unwrap_or(Value::Null);
    let mut deps = Vec::new();
    for (kind, dname) in referenced(&pod_spec) {
        let ar = core::resource("", "v1", kind, &format!("{}s", kind.to_ascii_lowercase()));
        let api: Api<DynamicObject> = Api::namespaced_with(host.clone(), &ns, &ar);
        match api.get(&dname).await {
            Ok(o) => {
                let mut v = serde_json::to_value(&o)?;
                v["apiVersion"] = json!("v1");
                v["kind"] = json!(kind);
                if kind == "Secret"
                    && v.get("type").and_then(Value::as_str)
                        == Some("kubernetes.io/service-account-token")
                {
                    continue;
                }
                deps.push(clean(v, &owner));
            }
            Err(e) if is_not_found(&e) => {
                return Ok(Err(refuse(
                    "Scheduled",
                    "MissingDependency",
                    format!(
                        "{kind} {ns}/{dname} referenced by spec.template does not exist in the host"
                    ),
                )));
            }
            Err(e) => return Err(e.into()),
        }
    }

    let overrides_spec = spec
        .get("overrides")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut targets = Vec::new();
    let is_divided = sched.get("type").and_then(Value::as_str) == Some("Divided");
    for (cluster, replicas) in shares {
        if is_divided && replicas == 0 {
            continue;
        }
        let Some(view) = view_of(&cluster) else {
            continue;
        };
        let mut d = clean(template.clone(), &owner);
        d["apiVersion"] = json!("apps/v1");
        d["kind"] = json!("Deployment");
        d["metadata"]["namespace"] = json!(ns);
        if d.pointer("/metadata/name")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            d["metadata"]["name"] = json!(name);
        }
        d["spec"]["replicas"] = json!(replicas);
        for (i, ov) in overrides_spec.iter().enumerate() {
            if !matches_target(ov, view) {
                continue;
            }
            if let Err(e) = overrides::apply(&mut d, ov) {
                return Ok(Err(refuse(
                    "Scheduled",
                    "OverrideFailed",
                    format!("spec.overrides[{i}] for cluster {cluster}: {e}"),
                )));
            }
        }
        let replicas = d
            .pointer("/spec/replicas")
            .and_then(Value::as_u64)
            .unwrap_or(u64::from(replicas)) as u32;
        let mut manifests =
            vec![json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})];
        manifests.extend(deps.iter().cloned());
        manifests.push(d);
        // The Deployment stays last (status is read from it); order the rest.
        let workload = manifests.pop();
        let mut manifests = order(manifests);
        manifests.extend(workload);
        targets.push(Target {
            cluster,
            replicas,
            manifests,
        });
    }
    Ok(Ok(targets))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_and_order() {
        let spec = json!({
            "serviceAccountName": "web",
            "volumes": [{"name": "c", "configMap": {"name": "cfg"}}, {"name": "s", "secret": {"secretName": "tls"}}],
            "containers": [{"name": "a", "envFrom": [{"configMapRef": {"name": "env"}}],
                "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "pw", "key": "k"}}}]}],
        });
        let r: Vec<(&str, String)> = referenced(&spec).into_iter().collect();
        assert_eq!(
            r,
            vec![
                ("ConfigMap", "cfg".to_string()),
                ("ConfigMap", "env".to_string()),
                ("Secret", "pw".to_string()),
                ("Secret", "tls".to_string()),
                ("ServiceAccount", "web".to_string()),
            ]
        );
        let ordered = order(vec![
            json!({"kind": "ServiceAccount"}),
            json!({"kind": "ConfigMap"}),
            json!({"kind": "Namespace"}),
        ]);
        let kinds: Vec<&str> = ordered.iter().filter_map(|v| v["kind"].as_str()).collect();
        assert_eq!(kinds, vec!["Namespace", "ConfigMap", "ServiceAccount"]);
    }

    #[test]
    fn owner_keys_are_unique_and_short() {
        assert_eq!(owner_key("a-b", "c"), "fd.a-b.c");
        assert_ne!(owner_key("a-b", "c"), owner_key("a", "b-c"));
        let long = owner_key("team", &"x".repeat(80));
        assert!(long.len() <= 63, "{long}");
        assert_eq!(long, owner_key("team", &"x".repeat(80)));
        assert_ne!(long, owner_key("team", &"x".repeat(81)));
    }

    #[test]
    fn clean_strips_server_fields() {
        let v = clean(
            json!({"metadata": {"name": "a", "uid": "u", "resourceVersion": "1"}, "status": {}}),
            "fd.x.y",
        );
        assert_eq!(
            v,
            json!({"metadata": {"name": "a", "labels": {LABEL_OWNER: "fd.x.y"}}})
        );
    }
}
