//! Field-selector attributes per kind: the fields upstream lets clients select on
//! (`metadata.name` and `metadata.namespace` everywhere, plus per-kind ones).

use serde_json::Value;

fn get<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(obj, |v, seg| v.get(seg))
}

fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// The per-kind selectable fields beyond metadata.name/namespace.
const KIND_FIELDS: &[(&str, &[&str])] = &[
    (
        "Pod",
        &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
    ),
    ("Node", &["spec.unschedulable"]),
    (
        "Event",
        &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
            "regarding.kind",
            "regarding.name",
            "regarding.namespace",
            "regarding.uid",
            "reportingController",
        ],
    ),
    ("Secret", &["type"]),
    ("Namespace", &["status.phase"]),
    ("ReplicaSet", &["status.replicas"]),
    ("ReplicationController", &["status.replicas"]),
    ("Job", &["status.successful"]),
    ("CertificateSigningRequest", &["spec.signerName"]),
];

/// The fields of `kind` selectable beyond `metadata.name` and `metadata.namespace`.
fn kind_fields(kind: &str) -> &'static [&'static str] {
    KIND_FIELDS
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or(&[], |(_, fields)| fields)
}

/// Where in the object field `f` of `kind` is read (upstream's Event `source` is
/// `source.component`).
fn read_path(kind: &str, f: &'static str) -> &'static str {
    if kind == "Event" && f == "source" {
        "source.component"
    } else {
        f
    }
}

/// Every path [`field_set`] reads, over all kinds (`kind` included): what a parse that keeps
/// only the selectable attributes of an object must keep.
pub fn inputs() -> impl Iterator<Item = &'static str> {
    ["kind", "metadata.name", "metadata.namespace"]
        .into_iter()
        .chain(
            KIND_FIELDS
                .iter()
                .flat_map(|(kind, fields)| fields.iter().map(|f| read_path(kind, f))),
        )
}

/// Whether `field` can be used in a field selector on objects of `kind`.
pub fn is_selectable(kind: &str, field: &str) -> bool {
    field == "metadata.name" || field == "metadata.namespace" || kind_fields(kind).contains(&field)
}

/// The selectable attributes of `obj`.
pub fn field_set(obj: &Value) -> Vec<(&'static str, String)> {
    let (kind_fields, values) = field_values(obj);
    ["metadata.name", "metadata.namespace"]
        .iter()
        .chain(kind_fields)
        .copied()
        .zip(values)
        .collect()
}

/// The selectable attributes of `obj` as its kind's own fields and the values of
/// `metadata.name`, `metadata.namespace` and then those fields, in that order.
pub fn field_values(obj: &Value) -> (&'static [&'static str], Vec<String>) {
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    let fields = kind_fields(kind);
    let mut out = Vec::with_capacity(2 + fields.len());
    out.push(text(get(obj, "metadata.name")));
    out.push(text(get(obj, "metadata.namespace")));
    for f in fields {
        let v = text(get(obj, read_path(kind, f)));
        let v = if kind == "Pod" && *f == "spec.hostNetwork" && v.is_empty() {
            "false".to_string()
        } else {
            v
        };
        out.push(v);
    }
    (fields, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pod_fields() {
        let pod = json!({"kind": "Pod", "metadata": {"name": "p", "namespace": "d"},
            "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        let f = field_set(&pod);
        assert!(f.contains(&("spec.nodeName", "n1".into())));
        assert!(f.contains(&("status.phase", "Running".into())));
        assert!(f.contains(&("spec.hostNetwork", "false".into())));
        assert!(f.contains(&("metadata.namespace", "d".into())));
        assert!(is_selectable("Pod", "spec.nodeName"));
        assert!(!is_selectable("Pod", "spec.foo"));
    }
}
