//! Member health: one key of the `cluster` work queue per Cluster, probed at once when the
//! Cluster appears or changes and then every `health_interval` (`/readyz`, version, Node and
//! Pod totals). The Cluster's status is written when it changed (and at least every
//! [`STATUS_REFRESH`] for `lastProbeTime`). A change of a member's readiness or
//! schedulability requeues the federated objects it can affect, and again when their
//! toleration (failover) or the failback stable period runs out.

use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use base64::Engine as _;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::config::Kubeconfig;
use serde_json::{Value, json};
use std::sync::Arc;

use tracing::{debug, info, warn};

use crate::controller::Ctx;
use crate::core::{self, parse_quantity, str_at};
use crate::member::Member;
use crate::reconcile::{condition, now_rfc3339, pod_requests, remove_work};
use crate::{FINALIZER, crds, join};

/// The longest a probe may take before the member counts as NotReady.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// An unchanged Cluster status is rewritten (for `lastProbeTime`) at most this often.
pub const STATUS_REFRESH: Duration = Duration::from_secs(60);

/// The client of a member, from its credentials Secret (via the host's Secret informer);
/// a new one when the Secret changed, which also restarts that member's caches.
async fn member_client(ctx: &Ctx, cluster: &DynamicObject) -> anyhow::Result<kube::Client> {
    let name = cluster.metadata.name.clone().unwrap_or_default();
    let ns = str_at(&cluster.data, "/spec/secretRef/namespace").unwrap_or(crate::SECRETS_NS);
    let sname = str_at(&cluster.data, "/spec/secretRef/name")
        .ok_or_else(|| anyhow!("cluster {name} has no spec.secretRef.name"))?;
    let secrets = ctx
        .host_kind_synced(&core::resource("", "v1", "Secret", "secrets"))
        .await?;
    let secret = secrets
        .get(ns, sname)
        .ok_or_else(|| anyhow!("secret {ns}/{sname} not found"))?;
    let rv = secret.metadata.resource_version.clone().unwrap_or_default();
    if let Some(m) = ctx.members.lock().get(&name)
        && m.secret_rv == rv
    {
        return Ok(m.client.clone());
    }
    let kc64 = str_at(&secret.data, "/data/kubeconfig")
        .ok_or_else(|| anyhow!("secret {ns}/{sname} has no kubeconfig"))?;
    let kc = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(kc64)?)?;
    let client = join::client_from_kubeconfig(Kubeconfig::from_yaml(&kc)?, None).await?;
    let mut g = ctx.members.lock();
    match g.get_mut(&name) {
        // New credentials: a new client and empty caches (the old watches stop).
        Some(m) => {
            let avail = m.avail.clone();
            let free = m.free;
            *m = Member::new(client.clone(), rv);
            m.avail = avail;
            m.free = free;
        }
        None => {
            g.insert(name, Member::new(client.clone(), rv));
        }
    }
    Ok(client)
}

/// Probes one Cluster, writes its status and reacts to availability changes.
pub async fn sync_cluster(ctx: &Ctx, name: &str) -> anyhow::Result<()> {
    let Some(cluster) = ctx.clusters.get("", name) else {
        ctx.members.lock().remove(name);
        ctx.update_cluster_gauge();
        return Ok(());
    };
    if cluster.metadata.deletion_timestamp.is_some() {
        return finalize_cluster(ctx, &cluster).await;
    }
    ensure_finalizer(ctx, &cluster).await?;
    // The next periodic probe (an earlier add — a change of the Cluster — wins).
    ctx.cluster_q
        .add_after(name.to_string(), ctx.cfg.health_interval);
    let started = Instant::now();
    let result: anyhow::Result<(String, Totals)> =
        match tokio::time::timeout(PROBE_TIMEOUT, probe(ctx, &cluster)).await {
            Ok(r) => r,
            Err(_) => Err(anyhow!("no answer within {PROBE_TIMEOUT:?}")),
        };
    ctx.metrics.probe.observe(started.elapsed().as_secs_f64());
    let ready = result.is_ok();
    let now = now_rfc3339();
    let old_status = cluster.data.get("status").cloned().unwrap_or(json!({}));
    let old_conds: Vec<Value> = old_status
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut status = json!({});
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

    // Availability first (the reconciles it triggers read it), then the status write.
    let transition = {
        let mut g = ctx.members.lock();
        match g.get_mut(name) {
            Some(m) => {
                let cfg = &ctx.cfg;
                let was = (
                    m.avail.ready,
                    m.schedulable(cfg.toleration, cfg.failback_stable),
                );
                if let Ok((_, t)) = &result {
                    m.free = (
                        ((t.alloc.0 - t.req.0) * 1000.0) as i64,
                        (t.alloc.1 - t.req.1) as i64,
                        (t.alloc.2 - t.req.2) as i64,
                    );
                }
                m.avail.observe(ready, Instant::now(), cfg.failback_stable);
                let is = (
                    m.avail.ready,
                    m.schedulable(cfg.toleration, cfg.failback_stable),
                );
                (was != is).then_some(ready)
            }
            None => None,
        }
    };
    ctx.update_cluster_gauge();
    ctx.mark_probed(name);
    if let Some(ready) = transition {
        debug!(cluster = %name, ready, "member availability changed");
        let labels = cluster.metadata.labels.clone().unwrap_or_default();
        // Each requeued object schedules its own next look (the end of its toleration, or
        // of the stable period) from its reconcile.
        ctx.requeue_affected(name, &[&labels]);
    }

    let old_probe = str_at(&old_status, "/lastProbeTime")
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map(|t| jiff::Timestamp::now().duration_since(t));
    let stale = old_probe.is_none_or(|d| d.as_secs() >= STATUS_REFRESH.as_secs() as i64);
    let unchanged = status
        .as_object()
        .is_some_and(|n| n.iter().all(|(k, v)| old_status.get(k) == Some(v)));
    if unchanged && !stale {
        return Ok(());
    }
    status["lastProbeTime"] = json!(now);
    let api: Api<DynamicObject> = Api::all_with(ctx.host.clone(), &crds::cluster_resource());
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await
    .with_context(|| format!("patch status of cluster {name}"))?;
    Ok(())
}

fn has_finalizer(cluster: &DynamicObject) -> bool {
    cluster
        .metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|x| x == FINALIZER))
}

/// Sets `finalizers` to `list` if the Cluster is still at the version we read (409 otherwise,
/// and the queue retries).
async fn patch_finalizers(
    ctx: &Ctx,
    cluster: &DynamicObject,
    list: Vec<String>,
) -> anyhow::Result<()> {
    let name = cluster.metadata.name.clone().unwrap_or_default();
    let api: Api<DynamicObject> = Api::all_with(ctx.host.clone(), &crds::cluster_resource());
    let patch = json!({"metadata": {
        "finalizers": list,
        "resourceVersion": cluster.metadata.resource_version,
    }});
    join::ignore_not_found(
        api.patch(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map(|_| ()),
    )
    .with_context(|| format!("update the finalizers of cluster {name}"))
}

/// A Cluster made by hand (not by `kumo join`) gets the finalizer too, so that deleting it
/// removes what was propagated to the member.
async fn ensure_finalizer(ctx: &Ctx, cluster: &DynamicObject) -> anyhow::Result<()> {
    if has_finalizer(cluster) {
        return Ok(());
    }
    let mut list = cluster.metadata.finalizers.clone().unwrap_or_default();
    list.push(FINALIZER.to_string());
    patch_finalizers(ctx, cluster, list).await
}

/// A Cluster being deleted (`kumo unjoin`): removes what the federation propagated to the
/// member (if it answers; an unreachable member keeps its objects, and a warning says so),
/// then its Works in the host, then lets the Cluster go. The federated objects that placed
/// replicas there were requeued when the deletion began and divide over the others.
async fn finalize_cluster(ctx: &Ctx, cluster: &DynamicObject) -> anyhow::Result<()> {
    let name = cluster.metadata.name.clone().unwrap_or_default();
    if !has_finalizer(cluster) {
        return Ok(());
    }
    let reachable = matches!(
        tokio::time::timeout(PROBE_TIMEOUT, probe(ctx, cluster)).await,
        Ok(Ok(_))
    );
    if !reachable {
        // Without a client, removing a Work leaves the member alone.
        ctx.members.lock().remove(&name);
        warn!(cluster = %name, "cluster deleted while unreachable: what was propagated there stays in the member");
    }
    let works: Vec<Arc<DynamicObject>> = ctx
        .works
        .list()
        .into_iter()
        .filter(|w| str_at(&w.data, "/spec/cluster") == Some(name.as_str()))
        .collect();
    for w in &works {
        remove_work(ctx, w).await?;
    }
    let rest: Vec<String> = cluster
        .metadata
        .finalizers
        .iter()
        .flatten()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    patch_finalizers(ctx, cluster, rest).await?;
    info!(cluster = %name, works = works.len(), reachable, "cluster removed from the federation");
    Ok(())
}

/// `/readyz`, version and totals of one member.
async fn probe(ctx: &Ctx, cluster: &DynamicObject) -> anyhow::Result<(String, Totals)> {
    let client = member_client(ctx, cluster).await?;
    let req = http::Request::get("/readyz").body(Vec::new())?;
    let body = client.request_text(req).await.context("/readyz")?;
    if body.trim() != "ok" {
        return Err(anyhow!("/readyz: {body}"));
    }
    let version = client.apiserver_version().await?.git_version;
    Ok((version, member_totals(&client).await?))
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
fn fmt_cpu(cores: f64) -> String {
    format!("{}m", (cores * 1000.0).round() as i64)
}
