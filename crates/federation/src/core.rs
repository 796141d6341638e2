//! Small helpers over kube's dynamic client shared by join and the controllers.

use kube::api::{ApiResource, GroupVersionKind};
use serde_json::Value;

/// The API resource for a group/version/kind/plural.
pub fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

pub fn namespace_resource() -> ApiResource {
    resource("", "v1", "Namespace", "namespaces")
}

pub fn deployment_resource() -> ApiResource {
    resource("apps", "v1", "Deployment", "deployments")
}

/// The API resource of a manifest's apiVersion/kind, for the kinds the federation propagates.
/// The plural is the lower-cased kind plus `s` (`es` after `s`), which holds for every kind we
/// send (Namespace, ConfigMap, Secret, ServiceAccount, Service, Deployment …).
pub fn resource_of(obj: &Value) -> Option<ApiResource> {
    let api_version = obj.get("apiVersion")?.as_str()?;
    let kind = obj.get("kind")?.as_str()?;
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    let lower = kind.to_ascii_lowercase();
    let plural = if lower == "endpoints" {
        lower
    } else if lower.ends_with('s') {
        format!("{lower}es")
    } else if let Some(stem) = lower.strip_suffix('y') {
        format!("{stem}ies")
    } else {
        format!("{lower}s")
    };
    Some(resource(group, version, kind, &plural))
}

/// Whether a kube error is a 404.
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

pub fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

/// Parses a Kubernetes quantity into milli-units (cpu) or units (others) as f64 base units.
pub fn parse_quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        "Pi" => 1024.0f64.powi(5),
        s if s.starts_with('e') || s.starts_with('E') => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    Some(n * mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("500m"), Some(0.5));
        assert_eq!(parse_quantity("4"), Some(4.0));
        assert_eq!(parse_quantity("1Gi"), Some(1073741824.0));
        assert_eq!(parse_quantity("110"), Some(110.0));
        assert_eq!(parse_quantity("x"), None);
    }

    #[test]
    fn plurals() {
        let r = resource_of(&serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap"}))
            .expect("resource");
        assert_eq!(r.plural, "configmaps");
        let r = resource_of(
            &serde_json::json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress"}),
        )
        .expect("resource");
        assert_eq!(r.plural, "ingresses");
        assert_eq!(r.group, "networking.k8s.io");
        let r = resource_of(&serde_json::json!({"apiVersion": "v1", "kind": "Endpoints"}))
            .expect("resource");
        assert_eq!(r.plural, "endpoints");
    }
}
