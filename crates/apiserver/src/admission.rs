//! Authorization and admission: RBAC on every request, then the admission plugins upstream
//! enables by default that matter here — NamespaceLifecycle, ServiceAccount, LimitRanger,
//! ResourceQuota, NodeRestriction.

use std::sync::Arc;

use kumo_apimachinery::ApiError;
use kumo_registry::ResourceDef;
use serde_json::{Value, json};

use crate::api::{Api, User};
use crate::http::Ctx;
use crate::objects::{meta_mut, meta_str, random_suffix};
use crate::request::RequestInfo;

/// Namespaces that can never be deleted.
const IMMORTAL_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public"];

/// RBAC: may `user` do `info`? 403 with upstream's message otherwise.
pub fn authorize(api: &Arc<Api>, user: &User, info: &RequestInfo) -> Result<(), ApiError> {
    authorize_attributes(api, user, &crate::authz::attributes(info))
}

/// Authorizes `attrs` for `user` (the Node authorizer, then RBAC); a denial is upstream's
/// 403 `Status`, naming the object in `details`.
pub fn authorize_attributes(
    api: &Arc<Api>,
    user: &User,
    attrs: &kumo_auth::Attributes,
) -> Result<(), ApiError> {
    let Some(a) = &api.authorizer else {
        return Ok(());
    };
    if crate::authz::node_authorize(&api.cache, a.source(), user, attrs) == Some(true) {
        return Ok(());
    }
    match a.authorize(user, attrs) {
        kumo_auth::Decision::Allow => Ok(()),
        kumo_auth::Decision::Deny(reason) => {
            let mut e = ApiError::forbidden(kumo_auth::rbac::forbidden_status_message(
                user, attrs, &reason,
            ));
            if attrs.resource_request {
                e = e.with_details(&attrs.api_group, &attrs.resource, &attrs.name);
                e.name = (!attrs.name.is_empty()).then(|| attrs.name.clone());
            }
            Err(e)
        }
    }
}

fn namespace_entry(api: &Api, ns: &str) -> Option<Value> {
    api.cache
        .get(&format!("/registry/namespaces/{ns}"))
        .map(|e| e.object())
}

/// Admission for create/update (mutating then validating).
pub async fn admit(
    ctx: &mut Ctx,
    def: &ResourceDef,
    old: Option<&Value>,
    new: &mut Value,
) -> Result<(), ApiError> {
    let ns = if def.namespaced() {
        meta_str(new, "namespace").map(str::to_string)
    } else {
        None
    };
    // NamespaceLifecycle: creates need a live namespace.
    if old.is_none()
        && let Some(ns) = &ns
    {
        match namespace_entry(&ctx.api, ns) {
            None => {
                // The cache may lag a namespace created a moment ago: ask the store.
                let (kv, _) = ctx
                    .api
                    .store
                    .get(&format!("/registry/namespaces/{ns}"))
                    .await
                    .map_err(crate::api::store_error)?;
                if kv.is_none() {
                    return Err(ApiError::not_found("", "namespaces", ns));
                }
            }
            Some(nsobj) => {
                let terminating = nsobj
                    .get("status")
                    .and_then(|s| s.get("phase"))
                    .and_then(Value::as_str)
                    == Some("Terminating");
                if terminating && !(def.group == "events.k8s.io" || def.kind == "Event") {
                    return Err(ApiError::forbidden(format!(
                        "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                        def.group_resource(),
                        meta_str(new, "name").unwrap_or("")
                    ))
                    .with_details(&def.group, &def.plural, meta_str(new, "name").unwrap_or("")));
                }
            }
        }
    }
    node_restriction(&ctx.user, def, old, new)?;
    if def.group.is_empty() && def.kind == "Pod" && old.is_none() {
        service_account(ctx, new)?;
        limit_ranger(ctx, new);
        priority(ctx, new)?;
        default_toleration_seconds(new);
    }
    if old.is_none()
        && let Some(ns) = &ns
    {
        resource_quota(ctx, def, ns, new)?;
    }
    if def.group.is_empty() && def.kind == "Service" {
        allocate_service(ctx, old, new)?;
    }
    Ok(())
}

/// Assigns a ClusterIP from 10.96.0.0/12 and NodePorts from 30000-32767 (upstream's
/// allocators), avoiding the ones in use.
fn allocate_service(ctx: &Ctx, old: Option<&Value>, svc: &mut Value) -> Result<(), ApiError> {
    let (all, _) = ctx.api.cache.list("/registry/services/");
    let mut used_ips = std::collections::HashSet::new();
    let mut used_ports = std::collections::HashSet::new();
    for e in &all {
        let o = e.object();
        if let Some(ip) = o
            .get("spec")
            .and_then(|s| s.get("clusterIP"))
            .and_then(Value::as_str)
        {
            used_ips.insert(ip.to_string());
        }
        for p in o
            .get("spec")
            .and_then(|s| s.get("ports"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(n) = p.get("nodePort").and_then(Value::as_i64) {
                used_ports.insert(n);
            }
        }
    }
    let Some(spec) = svc.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    if ty == "ExternalName" {
        return Ok(());
    }
    let old_ip = old
        .and_then(|o| o.get("spec")?.get("clusterIP")?.as_str())
        .map(str::to_string);
    let current = spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if current.is_empty() {
        let ip = match old_ip {
            Some(ip) => ip,
            None => {
                let mut chosen = None;
                for _ in 0..10_000 {
                    let n = uuid::Uuid::new_v4().as_u128() as u32 % ((1 << 20) - 2) + 2;
                    let ip = format!("10.{}.{}.{}", 96 + (n >> 16), (n >> 8) & 0xff, n & 0xff);
                    if !used_ips.contains(&ip) {
                        chosen = Some(ip);
                        break;
                    }
                }
                chosen.ok_or_else(|| {
                    ApiError::internal("failed to allocate a service IP: range is full")
                })?
            }
        };
        spec.insert("clusterIP".into(), json!(ip));
        spec.insert("clusterIPs".into(), json!([ip]));
    } else if current != "None" && !spec.contains_key("clusterIPs") {
        spec.insert("clusterIPs".into(), json!([current]));
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        let old_ports: Vec<i64> = old
            .and_then(|o| o.get("spec")?.get("ports")?.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|p| p.get("nodePort").and_then(Value::as_i64))
            .collect();
        if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
            for p in ports {
                if p.get("nodePort").and_then(Value::as_i64).unwrap_or(0) != 0 {
                    continue;
                }
                let mut chosen = None;
                for _ in 0..10_000 {
                    let n = 30000 + (uuid::Uuid::new_v4().as_u128() % 2768) as i64;
                    if !used_ports.contains(&n) || old_ports.contains(&n) {
                        chosen = Some(n);
                        break;
                    }
                }
                let n = chosen.ok_or_else(|| {
                    ApiError::internal("failed to allocate a nodePort: range is full")
                })?;
                used_ports.insert(n);
                p["nodePort"] = json!(n);
            }
        }
    }
    Ok(())
}

/// Admission for delete.
pub fn admit_delete(ctx: &Ctx, def: &ResourceDef, obj: &Value) -> Result<(), ApiError> {
    if def.group.is_empty() && def.kind == "Namespace" {
        let name = meta_str(obj, "name").unwrap_or("");
        if IMMORTAL_NAMESPACES.contains(&name) {
            return Err(ApiError::forbidden(format!(
                "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
            ))
            .with_details("", "namespaces", name));
        }
    }
    node_restriction(&ctx.user, def, Some(obj), &mut obj.clone())
}

/// NodeRestriction: a kubelet (`system:node:<name>`) may only write its own Node and the
/// status of pods bound to it.
fn node_restriction(
    user: &User,
    def: &ResourceDef,
    old: Option<&Value>,
    new: &mut Value,
) -> Result<(), ApiError> {
    let Some(node) = user.name.strip_prefix("system:node:") else {
        return Ok(());
    };
    if !user.groups.iter().any(|g| g == "system:nodes") {
        return Ok(());
    }
    let name = meta_str(new, "name").unwrap_or("").to_string();
    match (def.group.as_str(), def.kind.as_str()) {
        ("", "Node") if name != node => {
            return Err(ApiError::forbidden(format!(
                "nodes \"{name}\" is forbidden: node \"{node}\" is not allowed to modify node \"{name}\""
            )));
        }
        ("", "Pod") => {
            let bound = |v: &Value| {
                v.get("spec")
                    .and_then(|s| s.get("nodeName"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            };
            let target = old.and_then(bound).or_else(|| bound(new));
            if target.as_deref() != Some(node) {
                return Err(ApiError::forbidden(format!(
                    "pods \"{name}\" is forbidden: node \"{node}\" can only modify pods bound to itself"
                )));
            }
        }
        _ => {}
    }
    Ok(())
}

/// ServiceAccount admission: default the service account and mount its token.
fn service_account(ctx: &Ctx, pod: &mut Value) -> Result<(), ApiError> {
    let ns = meta_str(pod, "namespace").unwrap_or("default").to_string();
    let spec = match pod.get_mut("spec").and_then(Value::as_object_mut) {
        Some(s) => s,
        None => return Ok(()),
    };
    let sa = spec
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .or_else(|| {
            spec.get("serviceAccount")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        })
        .unwrap_or("default")
        .to_string();
    spec.insert("serviceAccountName".into(), json!(sa));
    spec.insert("serviceAccount".into(), json!(sa));
    let sa_obj = ctx
        .api
        .cache
        .get(&format!("/registry/serviceaccounts/{ns}/{sa}"))
        .map(|e| e.object());
    let Some(sa_obj) = sa_obj else {
        return Err(ApiError::forbidden(format!(
            "pods \"{}\" is forbidden: error looking up service account {ns}/{sa}: serviceaccount \"{sa}\" not found",
            pod.get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                .unwrap_or("")
        )));
    };
    let automount = spec
        .get("automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or_else(|| {
            sa_obj
                .get("automountServiceAccountToken")
                .and_then(Value::as_bool)
        })
        .unwrap_or(true);
    if !automount {
        return Ok(());
    }
    let volumes = spec
        .entry("volumes")
        .or_insert_with(|| Value::Array(Vec::new()));
    let Some(vols) = volumes.as_array_mut() else {
        return Ok(());
    };
    if vols.iter().any(|v| {
        v.get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| n.starts_with("kube-api-access-"))
    }) {
        return Ok(());
    }
    let vol_name = format!("kube-api-access-{}", random_suffix());
    vols.push(json!({
        "name": vol_name,
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
            ]
        }
    }));
    for field in ["containers", "initContainers"] {
        if let Some(cs) = spec.get_mut(field).and_then(Value::as_array_mut) {
            for c in cs {
                let Some(c) = c.as_object_mut() else { continue };
                let mounts = c
                    .entry("volumeMounts")
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Some(m) = mounts.as_array_mut()
                    && !m.iter().any(|x| {
                        x.get("mountPath").and_then(Value::as_str)
                            == Some("/var/run/secrets/kubernetes.io/serviceaccount")
                    })
                {
                    m.push(json!({
                        "name": vol_name,
                        "readOnly": true,
                        "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"
                    }));
                }
            }
        }
    }
    Ok(())
}

/// Priority admission: `spec.priorityClassName` resolves to `spec.priority` (and
/// `preemptionPolicy`); without a class, the global default class or 0.
fn priority(ctx: &Ctx, pod: &mut Value) -> Result<(), ApiError> {
    let class_name = pod
        .get("spec")
        .and_then(|s| s.get("priorityClassName"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let (classes, _) = ctx
        .api
        .cache
        .list("/registry/scheduling.k8s.io/priorityclasses/");
    let class = match &class_name {
        Some(name) => {
            let found = classes
                .iter()
                .find(|e| e.name() == *name)
                .map(|e| e.object());
            match found {
                Some(c) => Some(c),
                None => {
                    return Err(ApiError::forbidden(format!(
                        "pods \"{}\" is forbidden: no PriorityClass with name {name} was found",
                        meta_str(pod, "name").unwrap_or("")
                    )));
                }
            }
        }
        None => classes
            .iter()
            .map(|e| e.object())
            .find(|c| c.get("globalDefault").and_then(Value::as_bool) == Some(true)),
    };
    let value = class
        .as_ref()
        .and_then(|c| c.get("value").and_then(Value::as_i64))
        .unwrap_or(0);
    let requested = pod
        .get("spec")
        .and_then(|s| s.get("priority"))
        .and_then(Value::as_i64);
    if let Some(r) = requested
        && r != value
    {
        return Err(ApiError::forbidden(format!(
            "pods \"{}\" is forbidden: the integer value of priority ({r}) must not be provided in pod spec; priority admission controller computed {value} from the given PriorityClass name",
            meta_str(pod, "name").unwrap_or("")
        )));
    }
    if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("priority".into(), json!(value));
        if let Some(c) = &class {
            if let Some(n) = c.get("metadata").and_then(|m| m.get("name")) {
                spec.insert("priorityClassName".into(), n.clone());
            }
            let policy = c
                .get("preemptionPolicy")
                .cloned()
                .unwrap_or(json!("PreemptLowerPriority"));
            spec.entry("preemptionPolicy").or_insert(policy);
        } else {
            spec.entry("preemptionPolicy")
                .or_insert(json!("PreemptLowerPriority"));
        }
    }
    Ok(())
}

/// DefaultTolerationSeconds admission: pods tolerate `not-ready` and `unreachable`
/// NoExecute taints for 300 s unless they say otherwise.
fn default_toleration_seconds(pod: &mut Value) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let list = spec
        .entry("tolerations")
        .or_insert_with(|| Value::Array(Vec::new()));
    let Some(tols) = list.as_array_mut() else {
        return;
    };
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        let covered = tols.iter().any(|t| {
            let k = t.get("key").and_then(Value::as_str);
            let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
            let op = t.get("operator").and_then(Value::as_str).unwrap_or("Equal");
            (k == Some(key) || (k.is_none() && op == "Exists"))
                && (effect.is_empty() || effect == "NoExecute")
        });
        if !covered {
            tols.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
        }
    }
}

/// LimitRanger: default container requests/limits from the namespace's LimitRanges.
fn limit_ranger(ctx: &Ctx, pod: &mut Value) {
    let ns = meta_str(pod, "namespace").unwrap_or("default").to_string();
    let (ranges, _) = ctx.api.cache.list(&format!("/registry/limitranges/{ns}/"));
    if ranges.is_empty() {
        return;
    }
    let mut default_limits = serde_json::Map::new();
    let mut default_requests = serde_json::Map::new();
    for r in ranges {
        let obj = r.object();
        for item in obj
            .get("spec")
            .and_then(|s| s.get("limits"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if item.get("type").and_then(Value::as_str) != Some("Container") {
                continue;
            }
            if let Some(d) = item.get("default").and_then(Value::as_object) {
                for (k, v) in d {
                    default_limits.entry(k.clone()).or_insert(v.clone());
                }
            }
            if let Some(d) = item.get("defaultRequest").and_then(Value::as_object) {
                for (k, v) in d {
                    default_requests.entry(k.clone()).or_insert(v.clone());
                }
            }
        }
    }
    let mut annotated = Vec::new();
    for field in ["containers", "initContainers"] {
        let Some(cs) = pod
            .get_mut("spec")
            .and_then(|s| s.get_mut(field))
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        for c in cs {
            let Some(c) = c.as_object_mut() else { continue };
            let res = c.entry("resources").or_insert_with(|| json!({}));
            let Some(res) = res.as_object_mut() else {
                continue;
            };
            let mut set = Vec::new();
            let limits_now = res.get("limits").cloned();
            if !default_limits.is_empty() {
                let l = res.entry("limits").or_insert_with(|| json!({}));
                if let Some(l) = l.as_object_mut() {
                    for (k, v) in &default_limits {
                        if !l.contains_key(k) {
                            l.insert(k.clone(), v.clone());
                            set.push(format!("{k} limit"));
                        }
                    }
                }
            }
            let r = res.entry("requests").or_insert_with(|| json!({}));
            if let Some(r) = r.as_object_mut() {
                for (k, v) in &default_requests {
                    if !r.contains_key(k) {
                        // Upstream: an explicit limit without a request defaults the request
                        // to the limit.
                        let from_limit = limits_now.as_ref().and_then(|l| l.get(k)).cloned();
                        r.insert(k.clone(), from_limit.unwrap_or(v.clone()));
                        set.push(format!("{k} request"));
                    }
                }
            }
            if !set.is_empty() {
                let name = c
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                annotated.push(format!("container {name}"));
                let _ = set;
            }
        }
    }
    if !annotated.is_empty() {
        let meta = meta_mut(pod);
        let ann = meta.entry("annotations").or_insert_with(|| json!({}));
        if let Some(a) = ann.as_object_mut() {
            a.insert(
                "kubernetes.io/limit-ranger".into(),
                json!(format!(
                    "LimitRanger plugin set: cpu, memory request for {}",
                    annotated.join("; ")
                )),
            );
        }
    }
}

/// A Kubernetes quantity in milli-units (cpu) or units (memory, counts), enough for quota.
pub fn quantity_milli(q: &Value) -> Option<i128> {
    let s = match q {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let (num, suffix) = s
        .char_indices()
        .find(|(_, c)| c.is_ascii_alphabetic())
        .map(|(i, _)| (&s[..i], &s[i..]))
        .unwrap_or((s.as_str(), ""));
    let base: f64 = num.parse().ok()?;
    let mult: f64 = match suffix {
        "" => 1.0,
        "m" => 0.001,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        _ => return None,
    };
    Some((base * mult * 1000.0).round() as i128)
}

/// Usage one object adds to a quota resource name.
fn usage_of(def: &ResourceDef, obj: &Value, resource: &str) -> i128 {
    let count_name = format!("count/{}", def.group_resource());
    if resource == count_name {
        return 1000;
    }
    let kind = (def.group.as_str(), def.kind.as_str());
    match (kind, resource) {
        (("", "Pod"), "pods") => 1000,
        (("", "Service"), "services") => 1000,
        (("", "ConfigMap"), "configmaps") => 1000,
        (("", "Secret"), "secrets") => 1000,
        (("", "PersistentVolumeClaim"), "persistentvolumeclaims") => 1000,
        (("", "ReplicationController"), "replicationcontrollers") => 1000,
        (("", "ResourceQuota"), "resourcequotas") => 1000,
        (("", "Pod"), r) => {
            let (section, res) = match r {
                "cpu" | "requests.cpu" => ("requests", "cpu"),
                "memory" | "requests.memory" => ("requests", "memory"),
                "limits.cpu" => ("limits", "cpu"),
                "limits.memory" => ("limits", "memory"),
                "requests.ephemeral-storage" | "ephemeral-storage" => {
                    ("requests", "ephemeral-storage")
                }
                _ => return 0,
            };
            obj.get("spec")
                .and_then(|s| s.get("containers"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|c| c.get("resources")?.get(section)?.get(res))
                .filter_map(quantity_milli)
                .sum()
        }
        _ => 0,
    }
}

fn fmt_milli(v: i128, resource: &str) -> String {
    if resource.contains("cpu") && v % 1000 != 0 {
        format!("{v}m")
    } else {
        format!("{}", v / 1000)
    }
}

/// ResourceQuota: refuse a create that would exceed a quota's hard limits.
fn resource_quota(ctx: &Ctx, def: &ResourceDef, ns: &str, obj: &Value) -> Result<(), ApiError> {
    let (quotas, _) = ctx
        .api
        .cache
        .list(&format!("/registry/resourcequotas/{ns}/"));
    for q in quotas {
        let quota = q.object();
        let Some(hard) = quota
            .get("spec")
            .and_then(|s| s.get("hard"))
            .and_then(Value::as_object)
        else {
            continue;
        };
        for (resource, limit) in hard {
            let add = usage_of(def, obj, resource);
            if add == 0 {
                continue;
            }
            let Some(limit) = quantity_milli(limit) else {
                continue;
            };
            let (existing, _) = ctx.api.cache.list(&def.list_prefix(Some(ns)));
            let used: i128 = existing
                .iter()
                .map(|e| {
                    let o = e.object();
                    let terminal = o
                        .get("status")
                        .and_then(|s| s.get("phase"))
                        .and_then(Value::as_str)
                        .is_some_and(|p| p == "Succeeded" || p == "Failed");
                    if terminal {
                        0
                    } else {
                        usage_of(def, &o, resource)
                    }
                })
                .sum();
            if used + add > limit {
                let qname = meta_str(&quota, "name").unwrap_or("");
                return Err(ApiError::forbidden(format!(
                    "{} \"{}\" is forbidden: exceeded quota: {qname}, requested: {resource}={}, used: {resource}={}, limited: {resource}={}",
                    def.group_resource(),
                    meta_str(obj, "name").unwrap_or(""),
                    fmt_milli(add, resource),
                    fmt_milli(used, resource),
                    fmt_milli(limit, resource),
                ))
                .with_details(&def.group, &def.plural, meta_str(obj, "name").unwrap_or("")));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(quantity_milli(&json!("100m")), Some(100));
        assert_eq!(quantity_milli(&json!("2")), Some(2000));
        assert_eq!(quantity_milli(&json!("1Ki")), Some(1_024_000));
        assert_eq!(quantity_milli(&json!(3)), Some(3000));
        assert_eq!(quantity_milli(&json!("x")), None);
    }
}
