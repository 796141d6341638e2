//! One reconcile of one federated object, over the controller's caches (see
//! [`crate::controller`]): placement → division → overrides → a `Work` per member in the host
//! → server-side apply of the Work's changed manifests to the members, all members at once →
//! status aggregated from the member caches. A finalizer deletes everything propagated first.
//!
//! Every per-cluster object is computed before anything is written, so a semantic error (no
//! cluster, zero weights, a bad override) becomes a False condition with nothing half-applied.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use futures::StreamExt as _;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use petgraph::graph::DiGraph;
use serde_json::{Value, json};
use tracing::{debug, info};

use crate::controller::{Ctx, FederationConfig};
use crate::core::{self, parse_quantity, str_at};
use crate::division::{self, Candidate};
use crate::informer::ObjKey;
use crate::member::{DeployStatus, MemberShared, live_key};
use crate::metrics::DecisionTimer;
use crate::placement::{self, ClusterView};
use crate::{FIELD_MANAGER, FINALIZER, LABEL_OWNER, crds, join, member_namespace, overrides};

/// Members one object is synced to at once.
const MEMBER_CONCURRENCY: usize = 16;

/// A dependency of a federated object in the host: (kind, namespace, name).
pub type DepKey = (String, String, String);

/// How one member's part of an object went.
enum Outcome {
    /// The member is not Ready: its Work is written, nothing applied.
    NotReady,
    /// An apply failed (the message).
    Failed(String),
    /// Applied (or already in sync); the workload's status if the member has it.
    Applied(Option<DeployStatus>),
}

/// The ApiResource of a kind a pod template references.
fn dep_resource(kind: &str) -> ApiResource {
    core::resource("", "v1", kind, &format!("{}s", kind.to_ascii_lowercase()))
}

/// Reconciles one FederatedDeployment from the caches.
pub async fn reconcile_fd(ctx: &Arc<Ctx>, key: &ObjKey) -> anyhow::Result<()> {
    let (ns, name) = (key.0.as_str(), key.1.as_str());
    let Some(fd) = ctx.fds.get(ns, name) else {
        // Gone without our finalizer (removed by hand): what it propagated goes too.
        ctx.forget_refs(key);
        ctx.forget_writes(&format!("status/fd/{ns}/{name}"));
        for w in ctx.works.indexed(&owner_key(ns, name)) {
            remove_work(ctx, &w).await?;
        }
        return Ok(());
    };
    let fapi: Api<DynamicObject> = Api::namespaced_with(ctx.host.clone(), ns, &crds::fd_resource());
    let owner = owner_key(ns, name);
    let works = ctx.works.indexed(&owner);
    if !finalize(ctx, &fapi, &fd, &works).await? {
        return Ok(());
    }

    let (old_status, old_conds) = status_of(&fd);
    let generation = fd.metadata.generation.unwrap_or(0);
    let now = now_rfc3339();

    // Dependencies come from host informers, started (and listed) the first time a kind is
    // referenced; the decision itself then runs on caches only.
    let refs: Vec<(&'static str, String)> = fd
        .data
        .pointer("/spec/template/spec/template/spec")
        .map(|s| referenced(s).into_iter().collect())
        .unwrap_or_default();
    ctx.set_refs(
        key,
        refs.iter()
            .map(|(k, n)| (k.to_string(), ns.to_string(), n.clone()))
            .collect(),
    );
    let mut dep_informers = HashMap::new();
    for (kind, _) in &refs {
        if !dep_informers.contains_key(kind) {
            dep_informers.insert(*kind, ctx.host_kind_synced(&dep_resource(kind)).await?);
        }
    }
    let deps: Vec<(&str, String, Option<Arc<DynamicObject>>)> = refs
        .iter()
        .map(|(kind, n)| {
            let found = dep_informers.get(kind).and_then(|i| i.get(ns, n));
            (*kind, n.clone(), found)
        })
        .collect();
    let views = ctx.views();
    let plan = plan(ctx, &views, &fd, &deps);
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
            return write_status(ctx, &fapi, "fd", &fd, &old_status, st).await;
        }
    };

    // Works in the host, then the members, every member at once.
    let target_names: BTreeSet<&str> = targets.iter().map(|t| t.cluster.as_str()).collect();
    let toleration = object_toleration(&fd, &ctx.cfg);
    prune_works(ctx, &works, &target_names, toleration).await?;
    let wname = work_name(ns, name);
    // Futures collected first: a lazy `map` inside the stream trips the compiler's
    // higher-ranked lifetime check when the reconcile is spawned.
    let syncs: Vec<_> = targets
        .iter()
        .map(|t| sync_work(ctx, &t.cluster, &wname, &owner, &t.manifests, &now))
        .collect();
    let outcomes: Vec<anyhow::Result<Outcome>> = futures::stream::iter(syncs)
        .buffered(MEMBER_CONCURRENCY)
        .collect()
        .await;

    let old_clusters: Vec<Value> = old_status
        .get("clusters")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let old_cluster_conds = |c: &str| -> Vec<Value> {
        old_clusters
            .iter()
            .find(|x| x["name"] == c)
            .and_then(|x| x.get("conditions"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let mut cluster_status = Vec::new();
    let (mut ready, mut avail, mut updated, mut current) = (0i64, 0i64, 0i64, 0i64);
    let mut all_applied = true;
    let mut failures = Vec::new();
    let mut desired_total = 0i64;
    for (t, outcome) in targets.iter().zip(outcomes) {
        desired_total += i64::from(t.replicas);
        let old_cc = old_cluster_conds(&t.cluster);
        let mut cs = json!({"name": t.cluster, "scheduledReplicas": t.replicas, "replicas": 0,
            "readyReplicas": 0, "availableReplicas": 0, "updatedReplicas": 0});
        match outcome? {
            Outcome::NotReady => {
                all_applied = false;
                cs["conditions"] = json!([condition(
                    &old_cc,
                    "Applied",
                    false,
                    "ClusterNotReady",
                    "the member is not Ready",
                    &now
                )]);
            }
            Outcome::Failed(e) => {
                all_applied = false;
                cs["conditions"] = json!([condition(
                    &old_cc,
                    "Applied",
                    false,
                    "ApplyFailed",
                    &e,
                    &now
                )]);
                failures.push(format!("{}: {e}", t.cluster));
            }
            Outcome::Applied(st) => {
                let st = st.unwrap_or_default();
                let want = i64::from(t.replicas);
                let done = st.ready == want && st.updated == want && st.replicas == want;
                cs["replicas"] = json!(st.replicas);
                cs["readyReplicas"] = json!(st.ready);
                cs["availableReplicas"] = json!(st.available);
                cs["updatedReplicas"] = json!(st.updated);
                cs["conditions"] = json!([
                    condition(&old_cc, "Applied", true, "Applied", "", &now),
                    condition(
                        &old_cc,
                        "Ready",
                        done,
                        if done {
                            "DeploymentReady"
                        } else {
                            "DeploymentProgressing"
                        },
                        &format!("{}/{} ready", st.ready, t.replicas),
                        &now
                    ),
                ]);
                ready += st.ready;
                avail += st.available;
                updated += st.updated;
                current += st.replicas;
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
    write_status(ctx, &fapi, "fd", &fd, &old_status, st).await?;
    let involved: BTreeSet<String> = target_names
        .iter()
        .map(|c| c.to_string())
        .chain(
            works
                .iter()
                .filter_map(|w| str_at(&w.data, "/spec/cluster").map(str::to_string)),
        )
        .collect();
    if let Some(d) = ctx.next_availability_change(&involved, toleration) {
        ctx.fd_q.add_after(key.clone(), d);
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(anyhow!("apply failed in {}", failures.join("; ")))
    }
}

/// An object's status and its conditions (empty when it has none yet).
fn status_of(obj: &DynamicObject) -> (Value, Vec<Value>) {
    let status = obj.data.get("status").cloned().unwrap_or(json!({}));
    let conds = status
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    (status, conds)
}

/// Adds our finalizer, or on deletion removes what the owner propagated and then the
/// finalizer. Returns false when the object is being deleted (nothing else to do).
async fn finalize(
    ctx: &Ctx,
    api: &Api<DynamicObject>,
    obj: &DynamicObject,
    works: &[Arc<DynamicObject>],
) -> anyhow::Result<bool> {
    let name = obj.metadata.name.clone().unwrap_or_default();
    let finalizers = obj.metadata.finalizers.clone().unwrap_or_default();
    if obj.metadata.deletion_timestamp.is_some() {
        if finalizers.iter().any(|f| f == FINALIZER) {
            for w in works {
                remove_work(ctx, w).await?;
            }
            let rest: Vec<String> = finalizers.into_iter().filter(|f| f != FINALIZER).collect();
            // Not found: an earlier reconcile let it go and the cache has not seen it yet.
            join::ignore_not_found(
                api.patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"finalizers": rest}})),
                )
                .await
                .map(|_| ()),
            )?;
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

/// Whether a PropagationPolicy's resourceSelector picks objects of `api_version`/`kind`.
pub fn selects_kind(pol: &DynamicObject, api_version: &str, kind: &str) -> bool {
    pol.data
        .pointer("/spec/resourceSelectors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|rs| rs["apiVersion"] == api_version && rs["kind"] == kind)
}

/// A PropagationPolicy: the objects its resourceSelectors pick in its namespace go, with
/// their namespace, to every Ready cluster its placement selects (one Work per member).
pub async fn reconcile_pp(ctx: &Arc<Ctx>, key: &ObjKey) -> anyhow::Result<()> {
    let (ns, name) = (key.0.as_str(), key.1.as_str());
    let Some(pol) = ctx.pps.get(ns, name) else {
        ctx.forget_writes(&format!("status/pp/{ns}/{name}"));
        for w in ctx.works.indexed(&owner_key_of("pp", ns, name)) {
            remove_work(ctx, &w).await?;
        }
        return Ok(());
    };
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.host.clone(), ns, &crds::pp_resource());
    let owner = owner_key_of("pp", ns, name);
    let works = ctx.works.indexed(&owner);
    if !finalize(ctx, &api, &pol, &works).await? {
        return Ok(());
    }
    let (old_status, old_conds) = status_of(&pol);
    let now = now_rfc3339();
    let generation = pol.metadata.generation.unwrap_or(0);
    let refuse_with = |reason: &str, message: String| {
        json!({
            "observedGeneration": generation,
            "conditions": [condition(&old_conds, "Scheduled", false, reason, &message, &now)],
        })
    };
    // The selected objects, from host informers of their kinds (sorted: the Work's manifests
    // must not change order between reconciles).
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
                ctx,
                &api,
                "pp",
                &pol,
                &old_status,
                refuse_with(
                    "InvalidSelector",
                    "resourceSelectors need apiVersion and kind".into(),
                ),
            )
            .await;
        };
        let informer = ctx.host_kind_synced(&ar).await?;
        let mut found: Vec<Arc<DynamicObject>> =
            if let Some(n) = rs.get("name").and_then(Value::as_str) {
                informer.get(ns, n).into_iter().collect()
            } else {
                let sel = rs.get("labelSelector").cloned().unwrap_or(json!({}));
                informer
                    .list_namespace(ns)
                    .into_iter()
                    .filter(|o| {
                        placement::selector_matches(
                            &sel,
                            &o.metadata.labels.clone().unwrap_or_default(),
                        )
                    })
                    .collect()
            };
        found.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        for o in found {
            let mut v = serde_json::to_value(o.as_ref())?;
            v["apiVersion"] = rs["apiVersion"].clone();
            v["kind"] = rs["kind"].clone();
            objects.push(clean(v, &owner));
        }
    }
    let timer = DecisionTimer::start(&ctx.metrics, "PropagationPolicy");
    let placement_spec = pol
        .data
        .pointer("/spec/placement")
        .cloned()
        .unwrap_or(json!({}));
    let views = ctx.views();
    let selected = placement::select(&placement_spec, &views);
    let selected = match selected {
        Ok(s) => s,
        Err(e) => {
            return write_status(
                ctx,
                &api,
                "pp",
                &pol,
                &old_status,
                refuse_with(e.reason, e.message),
            )
            .await;
        }
    };
    let clusters: Vec<String> = {
        let g = ctx.members.lock();
        selected
            .into_iter()
            .filter(|c| {
                g.get(c)
                    .is_some_and(|m| m.schedulable(ctx.cfg.toleration, ctx.cfg.failback_stable))
            })
            .collect()
    };
    drop(timer);
    let mut manifests =
        vec![json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})];
    manifests.extend(objects);
    let manifests = order(manifests);
    let targets: BTreeSet<&str> = clusters.iter().map(String::as_str).collect();
    prune_works(ctx, &works, &targets, ctx.cfg.toleration).await?;
    let syncs: Vec<_> = clusters
        .iter()
        .map(|c| sync_work(ctx, c, &owner, &owner, &manifests, &now))
        .collect();
    let outcomes: Vec<anyhow::Result<Outcome>> = futures::stream::iter(syncs)
        .buffered(MEMBER_CONCURRENCY)
        .collect()
        .await;
    let mut errors = Vec::new();
    for (c, outcome) in clusters.iter().zip(outcomes) {
        match outcome? {
            Outcome::Applied(_) => {}
            Outcome::Failed(e) => errors.push(format!("{c}: {e}")),
            Outcome::NotReady => errors.push(format!("{c}: not Ready")),
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
    write_status(ctx, &api, "pp", &pol, &old_status, st).await?;
    let involved: BTreeSet<String> = clusters
        .iter()
        .cloned()
        .chain(
            works
                .iter()
                .filter_map(|w| str_at(&w.data, "/spec/cluster").map(str::to_string)),
        )
        .collect();
    if let Some(d) = ctx.next_availability_change(&involved, ctx.cfg.toleration) {
        ctx.pp_q.add_after(key.clone(), d);
    }
    Ok(())
}

/// Removes the Works (and what they applied) of clusters no longer targeted. A member that
/// is down or failed over keeps its Work (and old replicas) until it is back and stable.
async fn prune_works(
    ctx: &Ctx,
    works: &[Arc<DynamicObject>],
    targets: &BTreeSet<&str>,
    toleration: Duration,
) -> anyhow::Result<()> {
    for w in works {
        let cluster = str_at(&w.data, "/spec/cluster").unwrap_or_default();
        if targets.contains(cluster) {
            continue;
        }
        let keep = ctx
            .members
            .lock()
            .get(cluster)
            .is_some_and(|m| !m.schedulable(toleration, ctx.cfg.failback_stable));
        if !keep {
            remove_work(ctx, w).await?;
        }
    }
    Ok(())
}

/// Writes one member's Work in the host (when its spec changed) and, if the member is Ready,
/// applies the manifests that are not in sync there and records the result in the Work's
/// status (when it changed).
async fn sync_work(
    ctx: &Ctx,
    cluster: &str,
    wname: &str,
    owner: &str,
    manifests: &[Value],
    now: &str,
) -> anyhow::Result<Outcome> {
    let wns = member_namespace(cluster);
    let wapi: Api<DynamicObject> =
        Api::namespaced_with(ctx.host.clone(), &wns, &crds::work_resource());
    let work = json!({
        "apiVersion": crate::API_VERSION, "kind": "Work",
        "metadata": {"name": wname, "namespace": wns, "labels": {LABEL_OWNER: owner}},
        "spec": {"cluster": cluster, "workload": {"manifests": manifests}},
    });
    let cached = ctx.works.get(&wns, wname);
    let cached_rv = cached
        .as_ref()
        .and_then(|w| w.metadata.resource_version.as_deref());
    let spec_key = format!("work/{wns}/{wname}");
    let spec_hash = fnv1a(work["spec"].to_string().as_bytes());
    if cached.as_ref().and_then(|w| w.data.get("spec")) != Some(&work["spec"])
        && !ctx.wrote_already(&spec_key, spec_hash, cached_rv)
    {
        let o = wapi
            .patch(
                wname,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&work),
            )
            .await
            .with_context(|| format!("work {wns}/{wname}"))?;
        ctx.record_write(spec_key, spec_hash, o.metadata.resource_version);
    }
    let member = ctx
        .members
        .lock()
        .get(cluster)
        .filter(|m| m.avail.ready)
        .map(|m| (m.client.clone(), m.shared.clone()));
    let Some((client, shared)) = member else {
        return Ok(Outcome::NotReady);
    };
    let started = Instant::now();
    let (results, err, wrote) =
        apply_manifests(ctx, &client, &shared, (&wns, owner), manifests).await;
    if wrote {
        ctx.metrics
            .member_apply
            .observe(started.elapsed().as_secs_f64());
    }
    let results = json!(results);
    let status_key = format!("workstatus/{wns}/{wname}");
    let status_hash = fnv1a(results.to_string().as_bytes());
    if cached
        .as_ref()
        .and_then(|w| w.data.pointer("/status/manifests"))
        != Some(&results)
        && !ctx.wrote_already(&status_key, status_hash, cached_rv)
    {
        let wstatus = json!({"status": {
            "manifests": results,
            "conditions": [condition(&[], "Applied", err.is_none(), if err.is_none() { "Applied" } else { "ApplyFailed" },
                err.as_deref().unwrap_or(""), now)],
        }});
        // Best effort: the record in the host, not the state of the member.
        if let Ok(o) = wapi
            .patch_status(wname, &PatchParams::default(), &Patch::Merge(&wstatus))
            .await
        {
            ctx.record_write(status_key, status_hash, o.metadata.resource_version);
        }
    }
    if let Some(e) = err {
        return Ok(Outcome::Failed(e));
    }
    let status = manifests.last().and_then(|d| {
        let key = live_key(
            str_at(d, "/kind").unwrap_or_default(),
            str_at(d, "/metadata/namespace").unwrap_or_default(),
            str_at(d, "/metadata/name").unwrap_or_default(),
        );
        shared.objects.lock().live.get(&key).and_then(|l| l.status)
    });
    Ok(Outcome::Applied(status))
}

fn work_manifests(w: &DynamicObject) -> &[Value] {
    w.data
        .pointer("/spec/workload/manifests")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn manifest_key(m: &Value) -> String {
    live_key(
        str_at(m, "/kind").unwrap_or_default(),
        str_at(m, "/metadata/namespace").unwrap_or_default(),
        str_at(m, "/metadata/name").unwrap_or_default(),
    )
}

/// A manifest without its owner label.
fn unowned(m: &Value) -> Value {
    let mut m = m.clone();
    if let Some(l) = m
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        l.remove(LABEL_OWNER);
    }
    m
}

/// Whether the live federated object `owner` has a Work in member namespace `wns` that
/// carries manifest `m` (at `key`) as it is, but for the owner label.
fn carried_by(ctx: &Ctx, wns: &str, owner: &str, key: &str, m: &Value) -> bool {
    if !ctx.owner_alive(owner) {
        return false;
    }
    let mine = unowned(m);
    ctx.works.indexed(owner).iter().any(|w| {
        w.metadata.namespace.as_deref() == Some(wns)
            && w.metadata.deletion_timestamp.is_none()
            && work_manifests(w)
                .iter()
                .any(|o| manifest_key(o) == key && unowned(o) == mine)
    })
}

/// The member objects of `w` that another Work for the same member, of a federated object
/// that is not being deleted, also carries (a ConfigMap two FederatedDeployments reference):
/// they stay when `w` goes, and those owners are requeued to apply them as their own.
fn still_needed(ctx: &Ctx, w: &DynamicObject) -> BTreeSet<String> {
    let mine: BTreeSet<String> = work_manifests(w).iter().map(manifest_key).collect();
    let mut needed = BTreeSet::new();
    let ns = w.metadata.namespace.as_deref().unwrap_or_default();
    for other in ctx.works.list_namespace(ns) {
        if other.metadata.name == w.metadata.name {
            continue;
        }
        let Some(owner) = other
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_OWNER))
        else {
            continue;
        };
        if !ctx.owner_alive(owner) {
            continue;
        }
        let before = needed.len();
        needed.extend(
            work_manifests(&other)
                .iter()
                .map(manifest_key)
                .filter(|k| mine.contains(k)),
        );
        if needed.len() > before {
            ctx.route_owner(owner);
        }
    }
    needed
}

/// Deletes what a Work applied in its member (not namespaces, nor what another live Work
/// there still carries), then the Work.
pub(crate) async fn remove_work(ctx: &Ctx, w: &DynamicObject) -> anyhow::Result<()> {
    let cluster = str_at(&w.data, "/spec/cluster")
        .unwrap_or_default()
        .to_string();
    let needed = still_needed(ctx, w);
    let member = ctx
        .members
        .lock()
        .get(&cluster)
        .map(|m| (m.client.clone(), m.shared.clone()));
    if let Some((client, shared)) = member {
        for m in work_manifests(w).iter().rev() {
            if m["kind"] == "Namespace" {
                continue;
            }
            if needed.contains(&manifest_key(m)) {
                debug!(key = %manifest_key(m), %cluster, "kept: another Work carries it");
                continue;
            }
            let Some(ar) = core::resource_of(m) else {
                continue;
            };
            let mname = str_at(m, "/metadata/name").unwrap_or_default();
            let mns = str_at(m, "/metadata/namespace");
            let api: Api<DynamicObject> = match mns {
                Some(n) => Api::namespaced_with(client.clone(), n, &ar),
                None => Api::all_with(client.clone(), &ar),
            };
            let dp = DeleteParams::background();
            join::ignore_not_found(api.delete(mname, &dp).await.map(|_| ()))
                .with_context(|| format!("delete {} {mname} in {cluster}", ar.kind))?;
            shared
                .objects
                .lock()
                .forget(&live_key(&ar.kind, mns.unwrap_or_default(), mname));
        }
    }
    let ns = w.metadata.namespace.clone().unwrap_or_default();
    let wname = w.metadata.name.clone().unwrap_or_default();
    ctx.forget_writes(&format!("work/{ns}/{wname}"));
    ctx.forget_writes(&format!("workstatus/{ns}/{wname}"));
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.host.clone(), &ns, &crds::work_resource());
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

/// Server-side applies the manifests not in sync in the member, in order; stops at the first
/// failure (later ones may need it), and then forgets the records of all of them so the
/// retry applies everything again (a namespace deleted by hand is recreated). Returns the
/// per-manifest results, the error, and whether anything was sent.
async fn apply_manifests(
    ctx: &Ctx,
    client: &kube::Client,
    shared: &Arc<MemberShared>,
    (wns, owner): (&str, &str),
    manifests: &[Value],
) -> (Vec<Value>, Option<String>, bool) {
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let mut out = Vec::new();
    let mut wrote = false;
    let mut keys = Vec::new();
    let mut failure = None;
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
            failure = Some(format!("manifest {mname} has no apiVersion/kind"));
            break;
        };
        let key = live_key(kind, mns.unwrap_or_default(), mname);
        keys.push(key.clone());
        let hash = fnv1a(m.to_string().as_bytes());
        let watched = MemberShared::watches_kind(&ar);
        shared.ensure_watch(client, &ar, ctx.router.clone());
        let carrier = {
            let objs = shared.objects.lock();
            if objs.in_sync(&key, hash, watched) {
                None
            } else {
                Some(objs.live.get(&key).and_then(|l| l.owner.clone()))
            }
        };
        let Some(carrier) = carrier else {
            rec["applied"] = json!(true);
            out.push(rec);
            continue;
        };
        // An object another live federated object carries here already, with the same
        // content (a ConfigMap two FederatedDeployments reference): one owner keeps it, or
        // each resync would take it back and forth. It comes to us when that one lets it go
        // (see `still_needed`) or carries other content.
        if let Some(other) = carrier.filter(|o| o != owner)
            && carried_by(ctx, wns, &other, &key, m)
        {
            rec["applied"] = json!(true);
            rec["message"] = json!(format!("carried by {other}"));
            out.push(rec);
            continue;
        }
        let api: Api<DynamicObject> = match mns {
            Some(n) => Api::namespaced_with(client.clone(), n, &ar),
            None => Api::all_with(client.clone(), &ar),
        };
        wrote = true;
        debug!(%key, "apply in member");
        match api.patch(mname, &pp, &Patch::Apply(m)).await {
            Ok(o) => {
                shared.objects.lock().record_apply(&key, hash, &o);
                rec["applied"] = json!(true);
                out.push(rec);
            }
            Err(e) => {
                let msg = format!("apply {kind} {mname}: {e}");
                rec["message"] = json!(msg);
                out.push(rec);
                failure = Some(msg);
                break;
            }
        }
    }
    if failure.is_some() {
        let mut objs = shared.objects.lock();
        for k in &keys {
            objs.forget(k);
        }
    }
    (out, failure, wrote)
}

/// Placement, division, overrides and dependencies: what each member should run, or why not.
/// Pure over the caches (`deps`: each referenced dependency, found or not). The scheduling
/// decision (placement and division) is timed on its own.
fn plan(
    ctx: &Ctx,
    views: &[ClusterView],
    fd: &DynamicObject,
    deps: &[(&str, String, Option<Arc<DynamicObject>>)],
) -> Result<Vec<Target>, Refusal> {
    let timer = DecisionTimer::start(&ctx.metrics, "FederatedDeployment");
    let ns = fd.metadata.namespace.clone().unwrap_or_default();
    let name = fd.metadata.name.clone().unwrap_or_default();
    let owner = owner_key(&ns, &name);
    let empty = json!({});
    let spec = fd.data.get("spec").unwrap_or(&empty);
    let Some(template) = spec.get("template").filter(|t| {
        t.pointer("/spec/template/spec/containers")
            .is_some_and(Value::is_array)
    }) else {
        return Err(refuse(
            "Scheduled",
            "InvalidTemplate",
            "spec.template must be a Deployment with spec.template.spec.containers",
        ));
    };
    let placement_spec = spec.get("placement").cloned().unwrap_or(json!({}));
    let selected = match placement::select(&placement_spec, views) {
        Ok(s) => s,
        Err(e) => return Err(refuse("Scheduled", e.reason, e.message)),
    };
    let sched = spec.get("replicaScheduling").cloned().unwrap_or(json!({}));
    let total = template
        .pointer("/spec/replicas")
        .and_then(Value::as_u64)
        .unwrap_or(1) as u32;
    let toleration = object_toleration(fd, &ctx.cfg);
    type Free = HashMap<String, (i64, i64, i64)>;
    let (schedulable_now, free): (Vec<String>, Free) = {
        let g = ctx.members.lock();
        let s: Vec<String> = selected
            .iter()
            .filter(|c| {
                g.get(*c)
                    .is_some_and(|m| m.schedulable(toleration, ctx.cfg.failback_stable))
            })
            .cloned()
            .collect();
        let free = s
            .iter()
            .filter_map(|c| g.get(c).map(|m| (c.clone(), m.free)))
            .collect();
        (s, free)
    };
    if schedulable_now.is_empty() {
        return Err(refuse(
            "Scheduled",
            "NoReadyCluster",
            format!(
                "none of the selected clusters ({}) is Ready",
                selected.join(", ")
            ),
        ));
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
                let fit =
                    division::capacity_replicas(free.get(c).copied().unwrap_or((0, 0, 0)), req);
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
                return Err(refuse("Scheduled", reason, e.to_string()));
            }
        }
    } else {
        division::duplicated(total, &schedulable_now)
    };
    drop(timer);

    // Dependencies from the host namespace.
    let mut dep_manifests = Vec::new();
    for (kind, dname, found) in deps {
        let Some(o) = found else {
            return Err(refuse(
                "Scheduled",
                "MissingDependency",
                format!(
                    "{kind} {ns}/{dname} referenced by spec.template does not exist in the host"
                ),
            ));
        };
        let Ok(mut v) = serde_json::to_value(o.as_ref()) else {
            continue;
        };
        v["apiVersion"] = json!("v1");
        v["kind"] = json!(kind);
        if *kind == "Secret"
            && v.get("type").and_then(Value::as_str) == Some("kubernetes.io/service-account-token")
        {
            continue;
        }
        dep_manifests.push(clean(v, &owner));
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
                return Err(refuse(
                    "Scheduled",
                    "OverrideFailed",
                    format!("spec.overrides[{i}] for cluster {cluster}: {e}"),
                ));
            }
        }
        let replicas = d
            .pointer("/spec/replicas")
            .and_then(Value::as_u64)
            .unwrap_or(u64::from(replicas)) as u32;
        let mut manifests =
            vec![json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})];
        manifests.extend(dep_manifests.iter().cloned());
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
    Ok(targets)
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

pub(crate) fn condition(
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

pub(crate) fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Sum of a pod spec's container requests (cpu cores, memory bytes).
pub(crate) fn pod_requests(spec: &Value) -> (f64, f64) {
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

/// `spec.replicaScheduling.tolerationSeconds` of a federated object, else the default.
pub(crate) fn object_toleration(obj: &DynamicObject, cfg: &FederationConfig) -> Duration {
    obj.data
        .pointer("/spec/replicaScheduling/tolerationSeconds")
        .and_then(Value::as_u64)
        .map_or(cfg.toleration, Duration::from_secs)
}

/// The owner label value of what a federated object propagates: `<kind>.<ns>.<name>`
/// (namespaces have no dots, so it is unambiguous), shortened with a stable hash when it
/// would pass the 63 characters a label value may have.
pub(crate) fn owner_key_of(kind: &str, ns: &str, name: &str) -> String {
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

pub(crate) fn owner_key(ns: &str, name: &str) -> String {
    owner_key_of("fd", ns, name)
}

/// Work names are the owner keys (unique per federated object, valid object names).
fn work_name(ns: &str, name: &str) -> String {
    owner_key(ns, name)
}

/// Writes `status` of the object `obj` (kind `plural`) unless it equals the cached one, or
/// it is what we wrote last and the cache has not caught up with that write yet (a status
/// write is a watch event: writing an unchanged status would reconcile in a loop).
async fn write_status(
    ctx: &Ctx,
    api: &Api<DynamicObject>,
    plural: &str,
    obj: &DynamicObject,
    old: &Value,
    new: Value,
) -> anyhow::Result<()> {
    let unchanged = new
        .as_object()
        .is_some_and(|n| n.iter().all(|(k, v)| old.get(k) == Some(v)));
    if unchanged {
        return Ok(());
    }
    let name = obj.metadata.name.clone().unwrap_or_default();
    let key = format!(
        "status/{plural}/{}/{name}",
        obj.metadata.namespace.as_deref().unwrap_or_default()
    );
    let hash = fnv1a(new.to_string().as_bytes());
    if ctx.wrote_already(&key, hash, obj.metadata.resource_version.as_deref()) {
        return Ok(());
    }
    let o = api
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": new})),
        )
        .await
        .with_context(|| format!("status of {name}"))?;
    ctx.record_write(key, hash, o.metadata.resource_version);
    Ok(())
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

/// The elements of a JSON array field (none when it is absent or not an array).
fn items(v: Option<&Value>) -> impl Iterator<Item = &Value> {
    v.and_then(Value::as_array).into_iter().flatten()
}

/// The (kind, name) of the ConfigMaps, Secrets and ServiceAccounts a pod template uses.
fn referenced(pod_spec: &Value) -> BTreeSet<(&'static str, String)> {
    let mut out = BTreeSet::new();
    let mut add = |kind: &'static str, v: Option<&Value>| {
        if let Some(n) = v.and_then(Value::as_str).filter(|n| !n.is_empty()) {
            out.insert((kind, n.to_string()));
        }
    };
    for v in items(pod_spec.get("volumes")) {
        add("ConfigMap", v.pointer("/configMap/name"));
        add("Secret", v.pointer("/secret/secretName"));
        for s in items(v.pointer("/projected/sources")) {
            add("ConfigMap", s.pointer("/configMap/name"));
            add("Secret", s.pointer("/secret/name"));
        }
    }
    let containers = items(pod_spec.get("containers")).chain(items(pod_spec.get("initContainers")));
    for c in containers {
        for e in items(c.get("envFrom")) {
            add("ConfigMap", e.pointer("/configMapRef/name"));
            add("Secret", e.pointer("/secretRef/name"));
        }
        for e in items(c.get("env")) {
            add("ConfigMap", e.pointer("/valueFrom/configMapKeyRef/name"));
            add("Secret", e.pointer("/valueFrom/secretKeyRef/name"));
        }
    }
    add("ServiceAccount", pod_spec.get("serviceAccountName"));
    for s in items(pod_spec.get("imagePullSecrets")) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_manifests_compare_without_the_owner() {
        let a = json!({"kind": "ConfigMap", "metadata": {"name": "c", "namespace": "n",
            "labels": {LABEL_OWNER: "fd.n.a", "app": "x"}}, "data": {"k": "v"}});
        let mut b = a.clone();
        b["metadata"]["labels"][LABEL_OWNER] = json!("fd.n.b");
        assert_eq!(unowned(&a), unowned(&b));
        assert_eq!(unowned(&a)["metadata"]["labels"], json!({"app": "x"}));
        assert_eq!(manifest_key(&a), manifest_key(&b));
        b["data"]["k"] = json!("w");
        assert_ne!(unowned(&a), unowned(&b));
    }

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
