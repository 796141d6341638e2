//! Per-kind write behaviour of the generic store (upstream's `rest.RESTCreateStrategy` /
//! `RESTUpdateStrategy` / `RESTDeleteStrategy`): what a create resets, when generation moves,
//! what the status subresource may change, how deletion proceeds.

use kumo_registry::ResourceDef;
use serde_json::{Value, json};

use crate::objects::{meta_mut, new_uid, now_rfc3339};

/// Kinds whose `status` a create clears (controllers own it).
fn clears_status_on_create(def: &ResourceDef) -> bool {
    matches!(
        (def.group.as_str(), def.kind.as_str()),
        ("apps", _)
            | ("batch", _)
            | ("", "Service")
            | ("", "PersistentVolumeClaim")
            | ("", "PersistentVolume")
            | ("", "ResourceQuota")
            | ("networking.k8s.io", "Ingress")
            | ("policy", "PodDisruptionBudget")
            | ("apiextensions.k8s.io", "CustomResourceDefinition")
    ) || (def.custom && def.subresource("status").is_some())
}

/// Kinds that track `metadata.generation`.
pub fn tracks_generation(def: &ResourceDef) -> bool {
    def.custom
        || matches!(
            (def.group.as_str(), def.kind.as_str()),
            (
                "apps",
                "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet"
            ) | ("batch", _)
                | ("", "Pod")
                | ("policy", "PodDisruptionBudget")
                | ("networking.k8s.io", "NetworkPolicy" | "Ingress")
                | ("apiextensions.k8s.io", "CustomResourceDefinition")
                | ("scheduling.k8s.io", "PriorityClass")
        )
}

/// Sets the server-owned metadata of a new object and resets what the kind resets.
pub fn prepare_create(def: &ResourceDef, obj: &mut Value) {
    let now = now_rfc3339();
    {
        let meta = meta_mut(obj);
        meta.insert("uid".into(), Value::String(new_uid()));
        meta.insert("creationTimestamp".into(), Value::String(now));
        meta.remove("deletionTimestamp");
        meta.remove("deletionGracePeriodSeconds");
        meta.remove("selfLink");
        if tracks_generation(def) {
            meta.insert("generation".into(), json!(1));
        } else {
            meta.remove("generation");
        }
    }
    if clears_status_on_create(def)
        && let Some(o) = obj.as_object_mut()
    {
        o.remove("status");
    }
    match (def.group.as_str(), def.kind.as_str()) {
        ("", "Pod") => {
            let qos = qos_class(obj);
            if let Some(o) = obj.as_object_mut() {
                o.insert(
                    "status".into(),
                    json!({"phase": "Pending", "qosClass": qos}),
                );
            }
        }
        ("", "Namespace") => {
            if let Some(o) = obj.as_object_mut() {
                o.insert("status".into(), json!({"phase": "Active"}));
            }
        }
        ("", "PersistentVolumeClaim") | ("", "PersistentVolume") => {
            if let Some(o) = obj.as_object_mut() {
                o.insert("status".into(), json!({"phase": "Pending"}));
            }
        }
        _ => {}
    }
}

/// Carries over what an update may not change and moves generation when the spec changed.
/// `status_subresource`: the write came through `/status`.
pub fn prepare_update(def: &ResourceDef, old: &Value, new: &mut Value, status_subresource: bool) {
    if status_subresource {
        // Only status changes: everything else is the old object's.
        let status = new.get("status").cloned();
        let mut merged = old.clone();
        if let Some(o) = merged.as_object_mut() {
            match status {
                Some(s) => {
                    o.insert("status".into(), s);
                }
                None => {
                    o.remove("status");
                }
            }
            if let Some(rv) = new.get("metadata").and_then(|m| m.get("resourceVersion")) {
                meta_mut(&mut merged).insert("resourceVersion".into(), rv.clone());
            }
        }
        // managedFields may be updated by the caller afterwards.
        *new = merged;
        return;
    }
    // Server-owned metadata is immutable.
    let old_meta = old.get("metadata").cloned().unwrap_or(Value::Null);
    {
        let meta = meta_mut(new);
        for f in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            match old_meta.get(f) {
                Some(v) => {
                    meta.insert(f.into(), v.clone());
                }
                None => {
                    meta.remove(f);
                }
            }
        }
        meta.remove("selfLink");
    }
    if def.subresource("status").is_some()
        && let Some(o) = new.as_object_mut()
    {
        match old.get("status") {
            Some(s) => {
                o.insert("status".into(), s.clone());
            }
            None => {
                o.remove("status");
            }
        }
    }
    if tracks_generation(def) {
        let old_gen = old_meta
            .get("generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let changed = spec_of(def, old) != spec_of(def, new);
        meta_mut(new).insert(
            "generation".into(),
            json!(if changed { old_gen + 1 } else { old_gen }),
        );
    }
}

/// What counts as "spec" for generation: `spec` when present, else everything but metadata
/// and status.
fn spec_of(def: &ResourceDef, obj: &Value) -> Value {
    if !def.custom
        && let Some(s) = obj.get("spec")
    {
        return s.clone();
    }
    let mut v = obj.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("metadata");
        o.remove("status");
    }
    v
}

/// Upstream's QoS class of a pod spec.
pub fn qos_class(pod: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .filter_map(|f| pod.get("spec")?.get(*f)?.as_array())
        .flatten()
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &containers {
        let res = c.get("resources");
        let req = res
            .and_then(|r| r.get("requests"))
            .and_then(Value::as_object);
        let lim = res.and_then(|r| r.get("limits")).and_then(Value::as_object);
        for r in ["cpu", "memory"] {
            let rq = req.and_then(|m| m.get(r));
            let lm = lim.and_then(|m| m.get(r));
            if rq.is_some() || lm.is_some() {
                any = true;
            }
            match (rq, lm) {
                (_, None) => guaranteed = false,
                (Some(a), Some(b)) if a != b => guaranteed = false,
                _ => {}
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Kinds whose DELETE returns the deleted object (upstream `ReturnDeletedObject`); others
/// return a `Status`.
pub fn returns_deleted_object(def: &ResourceDef) -> bool {
    matches!(
        (def.group.as_str(), def.kind.as_str()),
        ("", "Pod") | ("", "Service") | ("", "Namespace") | ("apiextensions.k8s.io", _)
    ) || def.custom
}

/// The grace period a DELETE of `obj` gets: `None` = delete now.
pub fn graceful_period(def: &ResourceDef, obj: &Value, requested: Option<i64>) -> Option<i64> {
    if (def.group.as_str(), def.kind.as_str()) != ("", "Pod") {
        return None;
    }
    let spec = obj.get("spec");
    let scheduled = spec
        .and_then(|s| s.get("nodeName"))
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let phase = obj
        .get("status")
        .and_then(|s| s.get("phase"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if !scheduled || phase == "Succeeded" || phase == "Failed" {
        return None;
    }
    let default = spec
        .and_then(|s| s.get("terminationGracePeriodSeconds"))
        .and_then(Value::as_i64)
        .unwrap_or(30);
    // A zero grace period deletes at once (kubectl itself turns a plain `--grace-period=0`
    // into 1 unless `--force`; the kubelet's final delete sends 0).
    let grace = requested.unwrap_or(default).max(0);
    (grace > 0).then_some(grace)
}

/// Marks an object for deletion: deletionTimestamp (now + grace) and grace seconds.
pub fn mark_deleting(obj: &mut Value, grace: i64) {
    let ts = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(grace))
        .unwrap_or_else(|_| jiff::Timestamp::now());
    let meta = meta_mut(obj);
    if !meta.contains_key("deletionTimestamp") {
        meta.insert(
            "deletionTimestamp".into(),
            Value::String(ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
        );
    }
    meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
}

/// Adds a finalizer if missing.
pub fn add_finalizer(obj: &mut Value, f: &str) {
    let meta = meta_mut(obj);
    let list = meta
        .entry("finalizers")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Some(a) = list.as_array_mut()
        && !a.iter().any(|v| v.as_str() == Some(f))
    {
        a.push(Value::String(f.to_string()));
    }
}

/// Removes a finalizer.
pub fn remove_finalizer(obj: &mut Value, f: &str) {
    let meta = meta_mut(obj);
    if let Some(a) = meta.get_mut("finalizers").and_then(Value::as_array_mut) {
        a.retain(|v| v.as_str() != Some(f));
        if a.is_empty() {
            meta.remove("finalizers");
        }
    }
}

/// Now + 0 as a deletionTimestamp value (namespaces).
pub fn now() -> String {
    now_rfc3339()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qos() {
        let be = json!({"spec": {"containers": [{"name": "a"}]}});
        assert_eq!(qos_class(&be), "BestEffort");
        let g = json!({"spec": {"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}});
        assert_eq!(qos_class(&g), "Guaranteed");
        let b = json!({"spec": {"containers": [{"resources": {"requests": {"cpu": "1"}}}]}});
        assert_eq!(qos_class(&b), "Burstable");
    }
}
