//! The `federation.kumo.io/v1alpha1` CustomResourceDefinitions, installed (server-side apply,
//! so an upgrade updates them in place) by `kumo federation` at start.
//!
//! Schemas are structural so the host's apiserver rejects type and enum errors with a 422
//! before any controller sees them; only `spec.template`, manifests and patch values keep
//! unknown fields, because they hold whole Kubernetes objects.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{Value, json};

use crate::{FIELD_MANAGER, GROUP, VERSION};

/// The API resource of one of our kinds (for dynamic clients).
pub fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, kind), plural)
}

pub fn cluster_resource() -> ApiResource {
    resource("Cluster", "clusters")
}
pub fn fd_resource() -> ApiResource {
    resource("FederatedDeployment", "federateddeployments")
}
pub fn pp_resource() -> ApiResource {
    resource("PropagationPolicy", "propagationpolicies")
}
pub fn work_resource() -> ApiResource {
    resource("Work", "works")
}

fn obj() -> Value {
    json!({"type": "object"})
}
fn string() -> Value {
    json!({"type": "string"})
}
fn int() -> Value {
    json!({"type": "integer", "format": "int32", "minimum": 0})
}
fn free_object() -> Value {
    json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}
fn string_map() -> Value {
    json!({"type": "object", "additionalProperties": {"type": "string"}})
}
fn array(items: Value) -> Value {
    json!({"type": "array", "items": items})
}
fn props(p: Value) -> Value {
    let mut o = obj();
    o["properties"] = p;
    o
}

fn conditions() -> Value {
    array(props(json!({
        "type": string(),
        "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
        "reason": string(),
        "message": string(),
        "lastTransitionTime": {"type": "string", "format": "date-time"},
        "observedGeneration": {"type": "integer", "format": "int64"},
    })))
}

fn label_selector() -> Value {
    props(json!({
        "matchLabels": string_map(),
        "matchExpressions": array(props(json!({
            "key": string(),
            "operator": {"type": "string", "enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
            "values": array(string()),
        }))),
    }))
}

fn tolerations() -> Value {
    array(props(json!({
        "key": string(),
        "operator": {"type": "string", "enum": ["Exists", "Equal"]},
        "value": string(),
        "effect": {"type": "string", "enum": ["NoSchedule", "PreferNoSchedule", "NoExecute"]},
        "tolerationSeconds": {"type": "integer", "format": "int64"},
    })))
}

/// `spec.placement`, shared by FederatedDeployment and PropagationPolicy.
fn placement() -> Value {
    props(json!({
        "clusters": array(string()),
        "clusterSelector": label_selector(),
        "tolerations": tolerations(),
        "spreadConstraints": array(props(json!({
            "spreadByLabel": string(),
            "spreadByField": {"type": "string", "enum": ["cluster", "provider", "region", "zone"]},
            "minGroups": int(),
            "maxGroups": int(),
        }))),
    }))
}

fn resources_summary() -> Value {
    props(json!({"cpu": string(), "memory": string(), "pods": string()}))
}

fn crd(
    kind: &str,
    plural: &str,
    short: &[&str],
    scope: &str,
    spec: Value,
    status: Value,
    columns: Value,
) -> Value {
    let mut schema = props(json!({
        "apiVersion": string(),
        "kind": string(),
        "metadata": obj(),
        "spec": spec,
        "status": status,
    }));
    schema["required"] = json!(["spec"]);
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{GROUP}")},
        "spec": {
            "group": GROUP,
            "scope": scope,
            "names": {
                "kind": kind,
                "listKind": format!("{kind}List"),
                "plural": plural,
                "singular": kind.to_ascii_lowercase(),
                "shortNames": short,
                "categories": ["kumo-federation"],
            },
            "versions": [{
                "name": VERSION,
                "served": true,
                "storage": true,
                "schema": {"openAPIV3Schema": schema},
                "subresources": {"status": {}},
                "additionalPrinterColumns": columns,
            }],
        },
    })
}

fn age() -> Value {
    json!({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"})
}

/// All four CRDs, in install order.
pub fn definitions() -> Vec<Value> {
    let cluster = crd(
        "Cluster",
        "clusters",
        &["fcluster"],
        "Cluster",
        props(json!({
            "apiEndpoint": string(),
            "secretRef": props(json!({"namespace": string(), "name": string()})),
            "taints": array(props(json!({
                "key": string(),
                "value": string(),
                "effect": {"type": "string", "enum": ["NoSchedule", "PreferNoSchedule", "NoExecute"]},
            }))),
        })),
        props(json!({
            "conditions": conditions(),
            "kubernetesVersion": string(),
            "nodeCount": int(),
            "allocatable": resources_summary(),
            "requested": resources_summary(),
            "lastProbeTime": {"type": "string", "format": "date-time"},
        })),
        json!([
            {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"},
            {"name": "Version", "type": "string", "jsonPath": ".status.kubernetesVersion"},
            {"name": "Nodes", "type": "integer", "jsonPath": ".status.nodeCount"},
            {"name": "Provider", "type": "string", "jsonPath": ".metadata.labels['kumo.io/provider']"},
            {"name": "Region", "type": "string", "jsonPath": ".metadata.labels['topology.kubernetes.io/region']"},
            age(),
        ]),
    );
    let cluster_targets = json!({"clusters": array(string()), "clusterSelector": label_selector()});
    let mut weight = cluster_targets.clone();
    weight["cluster"] = string();
    weight["weight"] = int();
    let mut limit = cluster_targets.clone();
    limit["min"] = int();
    limit["max"] = int();
    let mut override_ = cluster_targets.clone();
    override_["image"] = string();
    override_["container"] = string();
    override_["replicas"] = int();
    override_["env"] = array(free_object());
    override_["args"] = array(string());
    override_["labels"] = string_map();
    override_["annotations"] = string_map();
    override_["patches"] = array({
        let mut p = props(json!({
            "op": {"type": "string", "enum": ["add", "remove", "replace", "move", "copy", "test"]},
            "path": string(),
            "from": string(),
            "value": {"x-kubernetes-preserve-unknown-fields": true},
        }));
        p["required"] = json!(["op", "path"]);
        p
    });
    let fd = crd(
        "FederatedDeployment",
        "federateddeployments",
        &["fd", "fdeploy"],
        "Namespaced",
        props(json!({
            "template": free_object(),
            "placement": placement(),
            "replicaScheduling": props(json!({
                "type": {"type": "string", "enum": ["Duplicated", "Divided"]},
                "divisionPreference": {"type": "string", "enum": ["Weighted", "Capacity"]},
                "weights": array(props(weight)),
                "limits": array(props(limit)),
                "tolerationSeconds": {"type": "integer", "format": "int64", "minimum": 0},
            })),
            "overrides": array(props(override_)),
        })),
        props(json!({
            "observedGeneration": {"type": "integer", "format": "int64"},
            "replicas": int(),
            "readyReplicas": int(),
            "availableReplicas": int(),
            "updatedReplicas": int(),
            "ready": string(),
            "placement": string(),
            "conditions": conditions(),
            "clusters": array(props(json!({
                "name": string(),
                "scheduledReplicas": int(),
                "replicas": int(),
                "readyReplicas": int(),
                "availableReplicas": int(),
                "updatedReplicas": int(),
                "conditions": conditions(),
            }))),
        })),
        json!([
            {"name": "Ready", "type": "string", "jsonPath": ".status.ready"},
            {"name": "Clusters", "type": "string", "jsonPath": ".status.placement"},
            age(),
        ]),
    );
    let pp = crd(
        "PropagationPolicy",
        "propagationpolicies",
        &["pp"],
        "Namespaced",
        props(json!({
            "resourceSelectors": array(props(json!({
                "apiVersion": string(),
                "kind": string(),
                "name": string(),
                "labelSelector": label_selector(),
            }))),
            "placement": placement(),
        })),
        props(json!({
            "observedGeneration": {"type": "integer", "format": "int64"},
            "conditions": conditions(),
            "placement": string(),
        })),
        json!([
            {"name": "Clusters", "type": "string", "jsonPath": ".status.placement"},
            age(),
        ]),
    );
    let work = crd(
        "Work",
        "works",
        &[],
        "Namespaced",
        props(json!({
            "cluster": string(),
            "workload": props(json!({"manifests": array(free_object())})),
        })),
        props(json!({
            "conditions": conditions(),
            "manifests": array(props(json!({
                "apiVersion": string(),
                "kind": string(),
                "namespace": string(),
                "name": string(),
                "applied": {"type": "boolean"},
                "message": string(),
            }))),
        })),
        json!([
            {"name": "Cluster", "type": "string", "jsonPath": ".spec.cluster"},
            {"name": "Applied", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Applied\")].status"},
            age(),
        ]),
    );
    vec![cluster, fd, pp, work]
}

/// Applies the CRDs to the host and waits (up to `timeout`) until each is Established.
pub async fn install(client: &kube::Client, timeout: Duration) -> anyhow::Result<()> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
        "customresourcedefinitions",
    );
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let defs = definitions();
    for d in &defs {
        let name = d["metadata"]["name"].as_str().unwrap_or_default();
        api.patch(name, &pp, &Patch::Apply(d))
            .await
            .with_context(|| format!("apply CRD {name}"))?;
    }
    let deadline = Instant::now() + timeout;
    for d in &defs {
        let name = d["metadata"]["name"].as_str().unwrap_or_default();
        loop {
            let o = api.get(name).await?;
            let established = o
                .data
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Established" && c["status"] == "True")
                });
            if established {
                break;
            }
            if Instant::now() > deadline {
                bail!("CRD {name} not Established after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Discovery of the new group can trail Established by a moment; wait until it answers.
    let fd: Api<DynamicObject> = Api::all_with(client.clone(), &cluster_resource());
    loop {
        match fd.list(&Default::default()).await {
            Ok(_) => break,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => return Err(e).context("list clusters after CRD install"),
        }
    }
    Ok(())
}
