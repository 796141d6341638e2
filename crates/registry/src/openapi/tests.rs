//! The structure kubectl reads from the documents, checked the way kubectl reads it
//! (`staging/src/k8s.io/kubectl/pkg/explain/v2/templates/plaintext.tmpl`,
//! `staging/src/k8s.io/cli-runtime/pkg/resource/query_param_verifier_v3.go`), and the layout of
//! upstream's published `api/openapi-spec/v3/apis__apps__v1_openapi.json`.

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use serde_json::{Value, json};

use super::*;
use crate::builtin;

fn api() -> &'static OpenApi {
    static API: OnceLock<OpenApi> = OnceLock::new();
    API.get_or_init(|| OpenApi::new(&builtin()))
}

fn doc(path: &str) -> Value {
    api().document(path).expect(path).to_value()
}

/// kubectl's `resolveRef`: follows `#/components/schemas/X` inside the document.
fn resolve<'a>(document: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => r
            .strip_prefix('#')
            .and_then(|p| document.pointer(p))
            .unwrap_or(schema),
        None => schema,
    }
}

/// The "output" template of kubectl explain: follows a field path through properties, `$ref`s,
/// `items`, `additionalProperties` and `allOf`, returning the field's schema.
fn explain_field<'a>(document: &'a Value, schema: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let resolved = resolve(document, schema);
    let Some((first, rest)) = path.split_first() else {
        return Some(resolved);
    };
    if let Some(sub) = resolved.pointer(&format!("/properties/{first}")) {
        if rest.is_empty() {
            return Some(sub);
        }
        return explain_field(document, sub, rest);
    }
    if let Some(items) = resolved.get("items") {
        return explain_field(document, items, path);
    }
    if let Some(ap) = resolved
        .get("additionalProperties")
        .filter(|v| v.is_object())
    {
        return explain_field(document, ap, path);
    }
    for sub in resolved
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(found) = explain_field(document, sub, path) {
            return Some(found);
        }
    }
    None
}

/// kubectl explain: GVK from the resource's paths, then the component carrying that GVK.
fn explain<'a>(
    document: &'a Value,
    group: &str,
    version: &str,
    resource: &str,
    path: &[&str],
) -> Option<&'a Value> {
    let prefix = if group.is_empty() {
        "/api".to_string()
    } else {
        format!("/apis/{group}")
    };
    let candidates = [
        format!("{prefix}/{version}/{resource}"),
        format!("{prefix}/{version}/{resource}/{{name}}"),
        format!("{prefix}/{version}/namespaces/{{namespace}}/{resource}"),
        format!("{prefix}/{version}/namespaces/{{namespace}}/{resource}/{{name}}"),
    ];
    let mut gvk = None;
    'outer: for c in &candidates {
        if let Some(item) = document["paths"].get(c) {
            for m in ["get", "post", "put", "patch", "delete"] {
                if let Some(g) = item
                    .get(m)
                    .and_then(|op| op.get("x-kubernetes-group-version-kind"))
                {
                    gvk = Some(g.clone());
                    break 'outer;
                }
            }
        }
    }
    let gvk = gvk?;
    let schema = document["components"]["schemas"]
        .as_object()?
        .values()
        .find(|s| {
            s.get("x-kubernetes-group-version-kind")
                .and_then(Value::as_array)
                .is_some_and(|l| l.contains(&gvk))
        })?;
    explain_field(document, schema, path)
}

fn all_refs(v: &Value, out: &mut BTreeSet<String>) {
    all_refs_in(v, out, false)
}

fn all_refs_in(v: &Value, out: &mut BTreeSet<String>, named: bool) {
    match v {
        Value::Object(m) => {
            if !named && let Some(Value::String(r)) = m.get("$ref") {
                out.insert(r.clone());
            }
            for (k, c) in m {
                if named || (k != "enum" && k != "default" && k != "example") {
                    all_refs_in(c, out, !named && k == "properties");
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|c| all_refs_in(c, out, false)),
        _ => {}
    }
}

#[test]
fn index_lists_every_group_version_with_its_hash() {
    let index = api().index().to_value();
    let paths = index["paths"].as_object().expect("paths");
    for p in [
        "api",
        "api/v1",
        "apis",
        "apis/apps",
        "apis/apps/v1",
        "apis/rbac.authorization.k8s.io/v1",
        "apis/apiextensions.k8s.io/v1",
    ] {
        let url = paths[p]["serverRelativeURL"].as_str().expect(p);
        let hash = &api().document(p).expect(p).hash;
        assert_eq!(url, format!("/openapi/v3/{p}?hash={hash}"));
        assert_eq!(hash.len(), 128);
        assert!(
            hash.chars()
                .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
        );
    }
    assert!(api().document("/apis/apps/v1").is_some());
    assert!(api().document("apis/nope/v1").is_none());
}

#[test]
fn documents_are_stable() {
    let again = OpenApi::new(&builtin());
    assert_eq!(again.index(), api().index());
}

#[test]
fn every_ref_resolves_in_every_document() {
    for path in api().paths() {
        let d = doc(path);
        assert_eq!(d["openapi"], "3.0.0", "{path}");
        let mut refs = BTreeSet::new();
        all_refs(&d, &mut refs);
        for r in refs {
            let pointer = r.strip_prefix('#').expect("local ref");
            assert!(d.pointer(pointer).is_some(), "{path}: dangling {r}");
        }
    }
}

#[test]
fn apps_v1_paths_match_upstream_layout() {
    let d = doc("apis/apps/v1");
    let paths: BTreeSet<&str> = d["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .map(String::as_str)
        .collect();
    for p in [
        "/apis/apps/v1/",
        "/apis/apps/v1/deployments",
        "/apis/apps/v1/namespaces/{namespace}/deployments",
        "/apis/apps/v1/namespaces/{namespace}/deployments/{name}",
        "/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale",
        "/apis/apps/v1/namespaces/{namespace}/deployments/{name}/status",
        "/apis/apps/v1/watch/deployments",
        "/apis/apps/v1/watch/namespaces/{namespace}/deployments",
        "/apis/apps/v1/watch/namespaces/{namespace}/deployments/{name}",
    ] {
        assert!(paths.contains(p), "missing {p}");
    }
    let item = &d["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"];
    assert_eq!(
        item["patch"]["operationId"],
        "patchAppsV1NamespacedDeployment"
    );
    assert_eq!(item["get"]["operationId"], "readAppsV1NamespacedDeployment");
    assert_eq!(
        item["put"]["operationId"],
        "replaceAppsV1NamespacedDeployment"
    );
    assert_eq!(
        item["delete"]["operationId"],
        "deleteAppsV1NamespacedDeployment"
    );
    assert_eq!(item["patch"]["x-kubernetes-action"], "patch");
    assert_eq!(item["patch"]["tags"], json!(["apps_v1"]));
    assert_eq!(
        item["patch"]["x-kubernetes-group-version-kind"],
        json!({"group": "apps", "kind": "Deployment", "version": "v1"})
    );
    let patch_types: BTreeSet<&str> = item["patch"]["requestBody"]["content"]
        .as_object()
        .expect("content")
        .keys()
        .map(String::as_str)
        .collect();
    assert!(patch_types.contains("application/strategic-merge-patch+json"));
    assert!(patch_types.contains("application/apply-patch+yaml"));
    let names: Vec<&str> = item["parameters"]
        .as_array()
        .expect("params")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["name", "namespace", "pretty"]);
    let coll = &d["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments"];
    assert_eq!(coll["get"]["operationId"], "listAppsV1NamespacedDeployment");
    assert_eq!(coll["get"]["x-kubernetes-action"], "list");
    assert_eq!(coll["post"]["x-kubernetes-action"], "post");
    assert_eq!(coll["delete"]["x-kubernetes-action"], "deletecollection");
    assert_eq!(
        coll["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/io.k8s.api.apps.v1.DeploymentList"
    );
    let scale = &d["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"];
    assert_eq!(
        scale["patch"]["operationId"],
        "patchAppsV1NamespacedDeploymentScale"
    );
    assert_eq!(
        scale["get"]["x-kubernetes-group-version-kind"],
        json!({"group": "autoscaling", "kind": "Scale", "version": "v1"})
    );
    assert_eq!(
        d["paths"]["/apis/apps/v1/deployments"]["get"]["operationId"],
        "listAppsV1DeploymentForAllNamespaces"
    );
    assert_eq!(
        d["paths"]["/apis/apps/v1/watch/namespaces/{namespace}/deployments/{name}"]["get"]["x-kubernetes-action"],
        "watch"
    );
    assert_eq!(
        d["paths"]["/apis/apps/v1/watch/namespaces/{namespace}/deployments"]["get"]["x-kubernetes-action"],
        "watchlist"
    );
}

/// `supportsQueryParamV3`: for each GVK, the PATCH operations carrying it must list the
/// `fieldValidation` query parameter (kubectl picks whichever it meets first).
#[test]
fn every_patch_supports_field_validation() {
    for path in api().paths() {
        let d = doc(path);
        for (p, item) in d["paths"].as_object().expect("paths") {
            for method in ["patch", "put", "post"] {
                let Some(op) = item.get(method) else { continue };
                if op.get("x-kubernetes-action").and_then(Value::as_str) == Some("connect") {
                    continue;
                }
                let names: Vec<&str> = op["parameters"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|p| p["name"].as_str()).collect())
                    .unwrap_or_default();
                assert!(names.contains(&"fieldValidation"), "{p} {method}");
                assert!(names.contains(&"dryRun"), "{p} {method}");
                assert!(
                    op.get("x-kubernetes-group-version-kind").is_some(),
                    "{p} {method}"
                );
            }
        }
    }
}

#[test]
fn explain_deployment_spec_replicas() {
    let d = doc("apis/apps/v1");
    let replicas = explain(&d, "apps", "v1", "deployments", &["spec", "replicas"]).expect("field");
    assert_eq!(replicas["type"], "integer");
    assert_eq!(replicas["format"], "int32");
    assert!(
        replicas["description"]
            .as_str()
            .expect("desc")
            .starts_with("Number of desired pods.")
    );
    // spec is an allOf-wrapped ref with its own description, as upstream.
    let spec = &d["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"]["properties"]["spec"];
    assert_eq!(
        spec["allOf"],
        json!([{"$ref": "#/components/schemas/io.k8s.api.apps.v1.DeploymentSpec"}])
    );
    assert!(spec["description"].is_string());
    let image = explain(
        &d,
        "apps",
        "v1",
        "deployments",
        &["spec", "template", "spec", "containers", "image"],
    )
    .expect("image");
    assert_eq!(image["type"], "string");
    let containers = explain(
        &d,
        "apps",
        "v1",
        "deployments",
        &["spec", "template", "spec", "containers"],
    )
    .expect("containers");
    assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
    assert!(explain(&d, "apps", "v1", "deployments", &["spec", "nope"]).is_none());
}

#[test]
fn explain_core_kinds() {
    let d = doc("api/v1");
    let restart = explain(&d, "", "v1", "pods", &["spec", "restartPolicy"]).expect("restartPolicy");
    assert_eq!(restart["type"], "string");
    let ports =
        explain(&d, "", "v1", "services", &["spec", "ports", "targetPort"]).expect("targetPort");
    let resolved = resolve(&d, &ports["allOf"][0]);
    assert_eq!(resolved["format"], "int-or-string");
    let q = &d["components"]["schemas"]["io.k8s.apimachinery.pkg.api.resource.Quantity"];
    assert_eq!(q["oneOf"], json!([{"type": "string"}, {"type": "number"}]));
    let data = explain(&d, "", "v1", "configmaps", &["data"]).expect("data");
    assert_eq!(data["additionalProperties"]["type"], "string");
    let node = explain(&d, "", "v1", "nodes", &["spec", "unschedulable"]).expect("unschedulable");
    assert_eq!(node["type"], "boolean");
}

#[test]
fn kinds_and_lists_carry_their_gvk() {
    let d = doc("api/v1");
    let s = &d["components"]["schemas"];
    assert_eq!(
        s["io.k8s.api.core.v1.Pod"]["x-kubernetes-group-version-kind"],
        json!([{"group": "", "kind": "Pod", "version": "v1"}])
    );
    assert_eq!(
        s["io.k8s.api.core.v1.PodList"]["x-kubernetes-group-version-kind"],
        json!([{"group": "", "kind": "PodList", "version": "v1"}])
    );
    assert_eq!(
        s["io.k8s.api.core.v1.PodList"]["required"],
        json!(["items"])
    );
    assert_eq!(
        s["io.k8s.apimachinery.pkg.apis.meta.v1.Status"]["x-kubernetes-group-version-kind"],
        json!([{"group": "", "kind": "Status", "version": "v1"}])
    );
    let log = &d["paths"]["/api/v1/namespaces/{namespace}/pods/{name}/log"]["get"];
    assert_eq!(log["operationId"], "readCoreV1NamespacedPodLog");
    assert_eq!(
        log["responses"]["200"]["content"]["*/*"]["schema"]["type"],
        "string"
    );
    let eviction = &d["paths"]["/api/v1/namespaces/{namespace}/pods/{name}/eviction"]["post"];
    assert_eq!(
        eviction["x-kubernetes-group-version-kind"],
        json!({"group": "policy", "kind": "Eviction", "version": "v1"})
    );
    assert!(d["components"]["schemas"]["io.k8s.api.policy.v1.Eviction"].is_object());
    // Cluster-scoped resources have no namespace segment.
    assert!(d["paths"]["/api/v1/nodes/{name}"]["get"].is_object());
    assert!(d["paths"]["/api/v1/watch/nodes/{name}"]["get"].is_object());
}

fn widget_crd(schema: Value) -> Value {
    json!({
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": schema},
                "subresources": {"status": {}}}]
        }
    })
}

#[test]
fn custom_resources_get_their_schema_and_paths() {
    let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "description": "The spec.", "properties": {"size": {"type": "integer", "description": "How big."}}}}});
    let mut defs = builtin();
    defs.extend(crate::crd::resource_defs(&widget_crd(schema)).expect("crd"));
    let mut builder = OpenApiBuilder::new();
    let api = builder.build(&defs);
    let d = api.document("apis/example.com/v1").expect("doc").to_value();
    let size = explain(&d, "example.com", "v1", "widgets", &["spec", "size"]).expect("size");
    assert_eq!(size["type"], "integer");
    let w = &d["components"]["schemas"]["com.example.v1.Widget"];
    assert_eq!(
        w["properties"]["metadata"]["allOf"][0]["$ref"],
        "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    );
    assert!(d["components"]["schemas"]["com.example.v1.WidgetList"].is_object());
    let patch = &d["paths"]["/apis/example.com/v1/namespaces/{namespace}/widgets/{name}"]["patch"];
    assert_eq!(
        patch["x-kubernetes-group-version-kind"],
        json!({"group": "example.com", "kind": "Widget", "version": "v1"})
    );
    assert!(
        d["paths"]["/apis/example.com/v1/namespaces/{namespace}/widgets/{name}/status"]["put"]
            .is_object()
    );
    assert!(api.index().to_value()["paths"]["apis/example.com"].is_object());

    // A changed CRD rebuilds only its own group-version.
    let apps_hash = api.document("apis/apps/v1").expect("apps").hash.clone();
    let mut defs2 = builtin();
    defs2.extend(crate::crd::resource_defs(&widget_crd(json!({"type": "object"}))).expect("crd"));
    let api2 = builder.build(&defs2);
    assert_eq!(api2.document("apis/apps/v1").expect("apps").hash, apps_hash);
    assert_ne!(
        api2.document("apis/example.com/v1").expect("cr").hash,
        api.document("apis/example.com/v1").expect("cr").hash
    );
    let w2 = api2.document("apis/example.com/v1").expect("cr").to_value();
    assert_eq!(
        w2["components"]["schemas"]["com.example.v1.Widget"]["properties"]["kind"]["type"],
        "string"
    );
}

#[test]
fn swagger_v2_document() {
    let v2 = api().v2().to_value();
    assert_eq!(v2["swagger"], "2.0");
    let defs = v2["definitions"].as_object().expect("definitions");
    let spec = &defs["io.k8s.api.apps.v1.Deployment"]["properties"]["spec"];
    assert_eq!(
        spec["$ref"],
        "#/definitions/io.k8s.api.apps.v1.DeploymentSpec"
    );
    assert_eq!(
        defs["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["format"],
        "int-or-string"
    );
    let mut refs = BTreeSet::new();
    all_refs(&v2, &mut refs);
    for r in refs {
        let name = r.strip_prefix("#/definitions/").expect("v2 ref");
        assert!(defs.contains_key(name), "dangling {r}");
    }
    let patch = &v2["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
    assert_eq!(
        patch["x-kubernetes-group-version-kind"]["kind"],
        "Deployment"
    );
    let params: Vec<&str> = patch["parameters"]
        .as_array()
        .expect("params")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(
        params,
        ["body", "dryRun", "fieldManager", "fieldValidation", "force"]
    );
    let delete_gvks = defs["io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions"]["x-kubernetes-group-version-kind"].as_array().expect("gvks");
    assert!(delete_gvks.len() > 5);
}

#[test]
fn builtin_arc_defs_are_accepted() {
    let defs: Vec<Arc<ResourceDef>> = builtin()
        .into_iter()
        .filter(|d| d.group == "batch")
        .collect();
    let api = OpenApi::new(&defs);
    assert!(api.document("apis/batch/v1").is_some());
    assert!(api.document("api/v1").is_none());
    assert!(api.document("api").is_none());
}

/// Writes every document (and legacy discovery) under `$KUMO_OPENAPI_DUMP`, for checking them
/// with a real kubectl behind a static file server (`cargo test -- --ignored dump`).
#[test]
#[ignore]
fn dump_for_kubectl() {
    let Ok(dir) = std::env::var("KUMO_OPENAPI_DUMP") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let write = |rel: &str, bytes: &[u8]| {
        let path = dir.join(rel.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, bytes).expect("write");
    };
    write("openapi/v3/index.json", &api().index().bytes);
    for p in api().paths() {
        write(
            &format!("openapi/v3/{p}/index.json"),
            &api().document(p).expect("doc").bytes,
        );
    }
    write("openapi/v2/index.json", &api().v2().bytes);
    write("openapi/v2/index.pb", &api().v2_protobuf().bytes);
    let mut groups: std::collections::BTreeMap<String, Vec<Arc<ResourceDef>>> = Default::default();
    for d in builtin() {
        groups.entry(d.api_version()).or_default().push(d);
    }
    let mut group_list = Vec::new();
    for (gv, defs) in &groups {
        let resources: Vec<Value> = defs
            .iter()
            .map(|d| json!({"name": d.plural, "singularName": d.singular, "namespaced": d.namespaced(), "kind": d.kind, "verbs": d.verbs, "shortNames": d.short_names}))
            .collect();
        let body = json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources});
        let rel = if gv.contains('/') {
            format!("apis/{gv}/index.json")
        } else {
            format!("api/{gv}/index.json")
        };
        write(&rel, body.to_string().as_bytes());
        if let Some((g, v)) = gv.split_once('/') {
            group_list.push(json!({"name": g, "versions": [{"groupVersion": gv, "version": v}], "preferredVersion": {"groupVersion": gv, "version": v}}));
        }
    }
    write("api/index.json", json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}]}).to_string().as_bytes());
    write(
        "apis/index.json",
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": group_list})
            .to_string()
            .as_bytes(),
    );
    write(
        "version/index.json",
        json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0"})
            .to_string()
            .as_bytes(),
    );
}

#[test]
fn field_extensions_answer_patch_questions() {
    let defs = builtin();
    let deploy = defs
        .iter()
        .find(|d| d.kind == "Deployment")
        .expect("deployment");
    let containers = field_extensions(deploy, &["spec", "template", "spec", "containers"]);
    assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
    assert_eq!(containers["x-kubernetes-list-map-keys"], json!(["name"]));
    let ports = field_extensions(deploy, &["spec", "template", "spec", "containers", "ports"]);
    assert_eq!(ports["x-kubernetes-patch-merge-key"], "containerPort");
    assert_eq!(
        ports["x-kubernetes-list-map-keys"],
        json!(["containerPort", "protocol"])
    );
    let strategy = field_extensions(deploy, &["spec", "strategy"]);
    assert_eq!(strategy["x-kubernetes-patch-strategy"], "retainKeys");
    let finalizers = field_extensions(deploy, &["metadata", "finalizers"]);
    assert_eq!(finalizers["x-kubernetes-patch-strategy"], "merge");
    assert!(field_extensions(deploy, &["spec", "replicas"]).is_empty());
    assert!(field_extensions(deploy, &["spec", "nope", "deeper"]).is_empty());
    let svc = defs.iter().find(|d| d.kind == "Service").expect("service");
    let sports = field_extensions(svc, &["spec", "ports"]);
    assert_eq!(
        sports["x-kubernetes-list-map-keys"],
        json!(["port", "protocol"])
    );
    let crd = json!({"metadata": {"name": "widgets.example.com"}, "spec": {"group": "example.com", "scope": "Namespaced",
        "names": {"plural": "widgets", "kind": "Widget"},
        "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "items": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"], "items": {"type": "object"}}}}}}}}]}});
    let w = crate::crd::resource_defs(&crd).expect("crd").remove(0);
    assert_eq!(
        field_extensions(&w, &["spec", "items"])["x-kubernetes-list-type"],
        "map"
    );
    assert_eq!(
        field_extensions(&w, &["metadata", "ownerReferences"])["x-kubernetes-patch-merge-key"],
        "uid"
    );
}

#[test]
fn swagger_v2_protobuf_document() {
    let pb = api().v2_protobuf();
    // Document.swagger = "2.0" first, then the rest (checked against kubectl 1.27/1.28).
    assert_eq!(&pb.bytes[..5], &[0x0A, 0x03, b'2', b'.', b'0']);
    assert!(pb.bytes.len() > 100_000);
    assert_eq!(pb.hash.len(), 128);
    assert_ne!(pb.hash, api().v2().hash);
}
