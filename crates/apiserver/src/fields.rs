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
fn kind_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "Pod" => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        "Node" => &["spec.unschedulable"],
        "Event" => &[
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
        "Secret" => &["type"],
        "Namespace" => &["status.phase"],
        "ReplicaSet" | "ReplicationController" => &["status.replicas"],
        "Job" => &["status.successful"],
        "CertificateSigningRequest" => &["spec.signerName"],
        _ => &[],
    }
}

/// Every path [`field_set`] reads, over all kinds: what a parse that keeps only the
/// selectable attributes of an object must keep (`kind` included).
pub const INPUTS: &[&str] = &[
    "kind",
    "metadata.name",
    "metadata.namespace",
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "spec.unschedulable",
    "spec.signerName",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
    "status.replicas",
    "status.successful",
    "involvedObject",
    "regarding",
    "reason",
    "reportingComponent",
    "reportingController",
    "source.component",
    "type",
];

/// Whether `field` can be used in a field selector on objects of `kind`.
pub fn is_selectable(kind: &str, field: &str) -> bool {
    field == "metadata.name" || field == "metadata.namespace" || kind_fields(kind).contains(&field)
}

/// The selectable attributes of `obj`.
pub fn field_set(obj: &Value) -> Vec<(&'static str, String)> {
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    let mut out = vec![
        ("metadata.name", text(get(obj, "metadata.name"))),
        ("metadata.namespace", text(get(obj, "metadata.namespace"))),
    ];
    for f in kind_fields(kind) {
        let v = match (kind, *f) {
            // upstream's Event "source" is source.component
            ("Event", "source") => text(get(obj, "source.component")),
            _ => text(get(obj, f)),
        };
        let v = if kind == "Pod" && *f == "spec.hostNetwork" && v.is_empty() {
            "false".to_string()
        } else {
            v
        };
        out.push((*f, v));
    }
    out
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

    #[test]
    fn inputs_cover_every_kind_s_fields() {
        let covered = |path: &str| {
            INPUTS
                .iter()
                .any(|i| path == *i || path.starts_with(&format!("{i}.")))
        };
        for kind in [
            "Pod",
            "Node",
            "Event",
            "Secret",
            "Namespace",
            "ReplicaSet",
            "ReplicationController",
            "Job",
            "CertificateSigningRequest",
        ] {
            assert!(!kind_fields(kind).is_empty(), "{kind}");
            for f in kind_fields(kind) {
                let read = if kind == "Event" && *f == "source" {
                    "source.component"
                } else {
                    f
                };
                assert!(covered(read), "{kind}: {read} is not in INPUTS");
            }
        }
    }
}
