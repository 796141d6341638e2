//! Custom resources: the [`ResourceDef`]s a `CustomResourceDefinition` object serves.

use std::sync::Arc;

use serde_json::Value;

use crate::resource::{
    CustomResource, PrinterColumn, ResourceDef, ScaleSubresource, Scope, Subresource,
};

const ALL_VERBS: &[&str] = &[
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "create",
    "update",
    "watch",
];

fn s(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or("").to_string()
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The resources a CRD object (`apiextensions.k8s.io/v1` JSON) serves: one per served version,
/// in the CRD's version order. Fails on a CRD missing its group, names or versions.
pub fn resource_defs(crd: &Value) -> Result<Vec<Arc<ResourceDef>>, String> {
    let spec = crd.get("spec").ok_or("CRD has no spec")?;
    let group = s(spec, "group");
    let names = spec.get("names").ok_or("CRD has no spec.names")?;
    let plural = s(names, "plural");
    let kind = s(names, "kind");
    if group.is_empty() || plural.is_empty() || kind.is_empty() {
        return Err("CRD needs spec.group, spec.names.plural and spec.names.kind".into());
    }
    let singular = match s(names, "singular") {
        x if x.is_empty() => kind.to_ascii_lowercase(),
        x => x,
    };
    let list_kind = match s(names, "listKind") {
        x if x.is_empty() => format!("{kind}List"),
        x => x,
    };
    let scope = if s(spec, "scope") == "Cluster" {
        Scope::Cluster
    } else {
        Scope::Namespaced
    };
    let crd_name = crd
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("{plural}.{group}"));
    let versions = spec
        .get("versions")
        .and_then(Value::as_array)
        .ok_or("CRD has no spec.versions")?;
    let mut out = Vec::new();
    for v in versions {
        if v.get("served").and_then(Value::as_bool) == Some(false) {
            continue;
        }
        let version = s(v, "name");
        if version.is_empty() {
            continue;
        }
        let mut subresources = Vec::new();
        let mut scale = None;
        if let Some(subs) = v.get("subresources") {
            if subs.get("status").is_some() {
                subresources.push(Subresource {
                    name: "status".into(),
                    kind: kind.clone(),
                    group: group.clone(),
                    version: version.clone(),
                    verbs: vec!["get".into(), "patch".into(), "update".into()],
                });
            }
            if let Some(sc) = subs.get("scale") {
                subresources.push(Subresource {
                    name: "scale".into(),
                    kind: "Scale".into(),
                    group: "autoscaling".into(),
                    version: "v1".into(),
                    verbs: vec!["get".into(), "patch".into(), "update".into()],
                });
                scale = Some(ScaleSubresource {
                    spec_replicas_path: s(sc, "specReplicasPath"),
                    status_replicas_path: s(sc, "statusReplicasPath"),
                    label_selector_path: sc
                        .get("labelSelectorPath")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                });
            }
        }
        let printer_columns = v
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
            .map(|cols| {
                cols.iter()
                    .map(|c| PrinterColumn {
                        name: s(c, "name"),
                        type_: s(c, "type"),
                        format: s(c, "format"),
                        description: s(c, "description"),
                        priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                        json_path: s(c, "jsonPath"),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let selectable_fields = v
            .get("selectableFields")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|f| s(f, "jsonPath")).collect())
            .unwrap_or_default();
        let info = CustomResource {
            crd_name: crd_name.clone(),
            list_kind: list_kind.clone(),
            schema: v.pointer("/schema/openAPIV3Schema").cloned(),
            printer_columns,
            scale,
            selectable_fields,
        };
        out.push(Arc::new(ResourceDef {
            group: group.clone(),
            version,
            kind: kind.clone(),
            plural: plural.clone(),
            singular: singular.clone(),
            scope,
            short_names: strings(names.get("shortNames")),
            categories: strings(names.get("categories")),
            verbs: ALL_VERBS.iter().map(|v| v.to_string()).collect(),
            subresources,
            storage_prefix: format!("/registry/{group}/{plural}"),
            custom: true,
            crd: Some(Arc::new(info)),
        }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn served_versions_become_resources() {
        let crd = json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com",
                "scope": "Namespaced",
                "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"]},
                "versions": [
                    {"name": "v1", "served": true, "storage": true,
                     "schema": {"openAPIV3Schema": {"type": "object"}},
                     "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}},
                     "additionalPrinterColumns": [{"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"}]},
                    {"name": "v0", "served": false, "storage": false}
                ]
            }
        });
        let defs = resource_defs(&crd).expect("defs");
        assert_eq!(defs.len(), 1);
        let d = &defs[0];
        assert_eq!(d.api_version(), "example.com/v1");
        assert_eq!(d.singular, "widget");
        assert_eq!(d.storage_prefix, "/registry/example.com/widgets");
        assert!(d.subresource("status").is_some());
        assert!(d.subresource("scale").is_some());
        let info = d.crd.as_ref().expect("crd info");
        assert_eq!(info.list_kind, "WidgetList");
        assert_eq!(info.printer_columns[0].json_path, ".spec.replicas");
        assert_eq!(
            info.scale.as_ref().map(|s| s.spec_replicas_path.as_str()),
            Some(".spec.replicas")
        );
    }

    #[test]
    fn malformed_crds_are_errors() {
        assert!(resource_defs(&json!({})).is_err());
        assert!(resource_defs(&json!({"spec": {"group": "g"}})).is_err());
    }
}
