//! Subresources that are not plain reads/writes of the object: pods/binding,
//! pods/eviction, serviceaccounts/token, namespaces/finalize.

use http::Response;
use kumo_apimachinery::{ApiError, Cause};
use kumo_registry::ResourceDef;
use serde_json::{Value, json};

use crate::api::{DeleteOptions, Deleted};
use crate::body::{self, Body};
use crate::http::Ctx;
use crate::objects::meta_str;

/// POST `…/{name}/{subresource}`.
pub async fn create(
    ctx: &mut Ctx,
    def: &ResourceDef,
    ns: Option<&str>,
    name: &str,
    sub: &str,
    obj: Value,
) -> Result<Response<Body>, ApiError> {
    match (def.kind.as_str(), sub) {
        ("Pod" | "Binding", "binding") => bind(ctx, ns, name, obj).await,
        ("Pod", "eviction") => evict(ctx, def, ns, name, obj).await,
        ("ServiceAccount", "token") => token(ctx, ns, name, obj).await,
        _ => Err(ApiError::method_not_allowed(format!(
            "create is not supported on {}/{sub}",
            def.plural
        ))),
    }
}

async fn bind(
    ctx: &mut Ctx,
    ns: Option<&str>,
    name: &str,
    binding: Value,
) -> Result<Response<Body>, ApiError> {
    let pods = ctx
        .api
        .resources()
        .find("", "v1", "pods")
        .ok_or_else(|| ApiError::internal("pods are not served"))?;
    let target = binding
        .get("target")
        .and_then(|t| t.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if target.is_empty() {
        return Err(ApiError::invalid(
            "",
            "Binding",
            name,
            vec![Cause::required("target.name")],
        ));
    }
    for _ in 0..5 {
        let (mut pod, rev) = ctx
            .api
            .read_for_write(&pods, ns, name)
            .await?
            .ok_or_else(|| ApiError::not_found("", "pods", name))?;
        if pod
            .get("metadata")
            .and_then(|m| m.get("deletionTimestamp"))
            .is_some()
        {
            return Err(ApiError::conflict(
                "",
                "pods",
                name,
                "pod is being deleted, cannot be assigned to a host",
            ));
        }
        let current = pod
            .get("spec")
            .and_then(|s| s.get("nodeName"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if !current.is_empty() {
            return Err(ApiError::conflict(
                "",
                "pods",
                name,
                &format!("pod {name} is already assigned to node \"{current}\""),
            ));
        }
        if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("nodeName".into(), json!(target));
        }
        if let Some(status) = pod.get_mut("status").and_then(Value::as_object_mut) {
            let conds = status.entry("conditions").or_insert_with(|| json!([]));
            if let Some(c) = conds.as_array_mut() {
                c.retain(|x| x.get("type").and_then(Value::as_str) != Some("PodScheduled"));
                c.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": crate::objects::now_rfc3339()}));
            }
        }
        match ctx
            .api
            .store_update(&pods, ns, name, pod, rev, ctx.query.dry_run)
            .await
        {
            Ok(_) => {
                return Ok(body::respond(
                    201,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
                    ctx.output,
                ));
            }
            Err(e) if e.code == 409 => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::stale("", "pods", name))
}

async fn evict(
    ctx: &mut Ctx,
    def: &ResourceDef,
    ns: Option<&str>,
    name: &str,
    eviction: Value,
) -> Result<Response<Body>, ApiError> {
    let pod = ctx.api.get(def, ns, name, None).await?.object();
    let labels = kumo_apimachinery::selector::labels_of(&pod);
    let phase = pod
        .get("status")
        .and_then(|s| s.get("phase"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let terminal = phase == "Succeeded" || phase == "Failed";
    if !terminal && let Some(ns) = ns {
        let (pdbs, _) = ctx
            .api
            .cache
            .list(&format!("/registry/policy/poddisruptionbudgets/{ns}/"));
        for p in pdbs {
            let pdb = p.object();
            let Some(sel) = pdb.get("spec").and_then(|s| s.get("selector")) else {
                continue;
            };
            let Ok(sel) = kumo_apimachinery::selector::LabelSelector::from_json(sel) else {
                continue;
            };
            if !sel.matches(&labels) {
                continue;
            }
            let allowed = pdb
                .get("status")
                .and_then(|s| s.get("disruptionsAllowed"))
                .and_then(Value::as_i64)
                .unwrap_or(0);
            if allowed <= 0 {
                let mut e = ApiError::new(
                    429,
                    "TooManyRequests",
                    "Cannot evict pod as it would violate the pod's disruption budget.",
                );
                e.causes = vec![Cause::new(
                    "DisruptionBudget",
                    "",
                    format!(
                        "The disruption budget {} needs {} healthy pods and has {} currently",
                        meta_str(&pdb, "name").unwrap_or(""),
                        pdb.get("status")
                            .and_then(|s| s.get("desiredHealthy"))
                            .and_then(Value::as_i64)
                            .unwrap_or(0),
                        pdb.get("status")
                            .and_then(|s| s.get("currentHealthy"))
                            .and_then(Value::as_i64)
                            .unwrap_or(0),
                    ),
                )];
                return Err(e);
            }
        }
    }
    let opts = eviction.get("deleteOptions").cloned().unwrap_or(json!({}));
    let del = DeleteOptions {
        grace_period_seconds: opts.get("gracePeriodSeconds").and_then(Value::as_i64),
        propagation_policy: opts
            .get("propagationPolicy")
            .and_then(Value::as_str)
            .map(str::to_string),
        dry_run: ctx.query.dry_run,
        ..Default::default()
    };
    match crate::http::delete(ctx, def, ns, name, &del).await? {
        Deleted::Now(_) | Deleted::Pending(_) => Ok(body::respond(
            201,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
            ctx.output,
        )),
    }
}

async fn token(
    ctx: &mut Ctx,
    ns: Option<&str>,
    name: &str,
    req: Value,
) -> Result<Response<Body>, ApiError> {
    let ns = ns.unwrap_or("default");
    // The ServiceAccount and the bound object are read from the cache: make it as current as
    // a read from the store (upstream reads storage), so a token for a ServiceAccount created
    // a moment ago is not a 404 (`kumo join` creates one and asks for its token at once).
    ctx.api.sync_cache().await?;
    let sa = ctx
        .api
        .cache
        .get(&format!("/registry/serviceaccounts/{ns}/{name}"))
        .map(|e| e.object())
        .ok_or_else(|| ApiError::not_found("", "serviceaccounts", name))?;
    let issuer = ctx
        .api
        .sa_tokens
        .as_ref()
        .ok_or_else(|| ApiError::internal("no ServiceAccount signing key configured"))?;
    let spec = req.get("spec").cloned().unwrap_or(json!({}));
    let audiences: Vec<String> = spec
        .get("audiences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let expiration = spec
        .get("expirationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(3600);
    if expiration < 600 {
        return Err(ApiError::invalid(
            "authentication.k8s.io",
            "TokenRequest",
            name,
            vec![Cause::invalid(
                "spec.expirationSeconds",
                &json!(expiration),
                "may not specify a duration less than 10 minutes",
            )],
        ));
    }
    let bound = match spec.get("boundObjectRef") {
        None => None,
        Some(b) => {
            let kind = b.get("kind").and_then(Value::as_str).unwrap_or("");
            let obj_name = b
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let key = match kind {
                "Pod" => format!("/registry/pods/{ns}/{obj_name}"),
                "Secret" => format!("/registry/secrets/{ns}/{obj_name}"),
                "Node" => format!("/registry/nodes/{obj_name}"),
                other => {
                    return Err(ApiError::invalid(
                        "authentication.k8s.io",
                        "TokenRequest",
                        name,
                        vec![Cause::not_supported(
                            "spec.boundObjectRef.kind",
                            &json!(other),
                            &["Pod", "Secret", "Node"],
                        )],
                    ));
                }
            };
            let target = ctx.api.cache.get(&key).map(|e| e.object()).ok_or_else(|| {
                ApiError::not_found("", &format!("{}s", kind.to_ascii_lowercase()), &obj_name)
            })?;
            let uid = meta_str(&target, "uid").unwrap_or("").to_string();
            if let Some(want) = b.get("uid").and_then(Value::as_str)
                && !want.is_empty()
                && want != uid
            {
                return Err(ApiError::conflict(
                    "",
                    "serviceaccounts",
                    name,
                    &format!(
                        "the UID in the bound object reference ({want}) does not match the UID in record. The object might have been deleted and then recreated"
                    ),
                ));
            }
            let r = kumo_auth::authn::serviceaccount::ObjectRef {
                name: obj_name,
                uid,
            };
            Some(match kind {
                "Pod" => {
                    let node = target
                        .get("spec")
                        .and_then(|s| s.get("nodeName"))
                        .and_then(Value::as_str)
                        .and_then(|n| ctx.api.cache.get(&format!("/registry/nodes/{n}")))
                        .map(|e| {
                            let o = e.object();
                            kumo_auth::authn::serviceaccount::ObjectRef {
                                name: meta_str(&o, "name").unwrap_or("").to_string(),
                                uid: meta_str(&o, "uid").unwrap_or("").to_string(),
                            }
                        });
                    kumo_auth::BoundObject::Pod { pod: r, node }
                }
                "Secret" => kumo_auth::BoundObject::Secret(r),
                _ => kumo_auth::BoundObject::Node(r),
            })
        }
    };
    let sa_uid = meta_str(&sa, "uid").unwrap_or("").to_string();
    let issued = issuer
        .issue_sa_token(ns, name, &sa_uid, &audiences, expiration, bound.as_ref())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let aud_out = if audiences.is_empty() {
        issuer.api_audiences().to_vec()
    } else {
        audiences
    };
    let out = json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": null},
        "spec": {"audiences": aud_out, "expirationSeconds": expiration, "boundObjectRef": spec.get("boundObjectRef")},
        "status": {"token": issued.token, "expirationTimestamp": issued.expiration.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()},
    });
    Ok(body::respond(201, &out, ctx.output))
}

/// PUT `namespaces/{name}/finalize`: replaces `spec.finalizers`; a deleting namespace with no
/// finalizers left is removed.
pub async fn finalize_namespace(
    ctx: &mut Ctx,
    def: &ResourceDef,
    name: &str,
    obj: Value,
) -> Result<Value, ApiError> {
    let finalizers = obj
        .get("spec")
        .and_then(|s| s.get("finalizers"))
        .cloned()
        .unwrap_or(json!([]));
    for _ in 0..5 {
        let (cur, rev) = ctx
            .api
            .read_for_write(def, None, name)
            .await?
            .ok_or_else(|| ApiError::not_found("", "namespaces", name))?;
        let mut new = cur.clone();
        if let Some(o) = new.as_object_mut() {
            let spec = o.entry("spec").or_insert_with(|| json!({}));
            spec["finalizers"] = finalizers.clone();
        }
        let deleting = new
            .get("metadata")
            .and_then(|m| m.get("deletionTimestamp"))
            .is_some();
        let empty = finalizers.as_array().is_none_or(|a| a.is_empty())
            && crate::objects::finalizers(&new).is_empty();
        if deleting && empty {
            match ctx.api.store_delete(def, None, name, rev).await {
                Ok(r) => {
                    crate::objects::set_rv(&mut new, r);
                    return Ok(new);
                }
                Err(e) if e.code == 409 => continue,
                Err(e) => return Err(e),
            }
        }
        match ctx
            .api
            .store_update(def, None, name, new, rev, ctx.query.dry_run)
            .await
        {
            Ok(v) => return Ok(v),
            Err(e) if e.code == 409 => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::stale("", "namespaces", name))
}
