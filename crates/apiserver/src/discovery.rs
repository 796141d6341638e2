//! Discovery documents: legacy (`APIVersions`, `APIGroupList`, `APIGroup`, `APIResourceList`)
//! and aggregated (`apidiscovery.k8s.io` v2 and v2beta1), built from the resource table.

use std::collections::BTreeMap;
use std::sync::Arc;

use kumo_registry::ResourceDef;
use serde_json::{Value, json};

/// Group order in discovery: upstream lists the core groups in a fixed priority order.
const GROUP_ORDER: &[&str] = &[
    "",
    "apiregistration.k8s.io",
    "apps",
    "events.k8s.io",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "autoscaling",
    "batch",
    "certificates.k8s.io",
    "networking.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "storage.k8s.io",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "scheduling.k8s.io",
    "coordination.k8s.io",
    "node.k8s.io",
    "discovery.k8s.io",
    "flowcontrol.apiserver.k8s.io",
];

fn group_rank(g: &str) -> usize {
    GROUP_ORDER
        .iter()
        .position(|x| *x == g)
        .unwrap_or(GROUP_ORDER.len())
}

/// The resources of one version of a group.
type Versions = Vec<(String, Vec<Arc<ResourceDef>>)>;

/// group → version → resources, groups in discovery order.
fn by_group(defs: &[Arc<ResourceDef>]) -> Vec<(String, Versions)> {
    type ByVersion = BTreeMap<String, Vec<Arc<ResourceDef>>>;
    let mut groups: BTreeMap<(usize, String), ByVersion> = BTreeMap::new();
    for d in defs {
        groups
            .entry((group_rank(&d.group), d.group.clone()))
            .or_default()
            .entry(d.version.clone())
            .or_default()
            .push(d.clone());
    }
    groups
        .into_iter()
        .map(|((_, g), versions)| {
            let mut vs: Vec<_> = versions.into_iter().collect();
            // Preferred (highest) version first: v2 > v1 > v1beta1 > v1alpha1.
            vs.sort_by_key(|v| std::cmp::Reverse(version_priority(&v.0)));
            (g, vs)
        })
        .collect()
}

/// Kubernetes version ordering: GA > beta > alpha, then by number.
pub fn version_priority(v: &str) -> (u8, u32, u32) {
    let rest = v.strip_prefix('v').unwrap_or(v);
    let num_end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let major = rest[..num_end].parse().unwrap_or(0);
    let tail = &rest[num_end..];
    if tail.is_empty() {
        (3, major, 0)
    } else if let Some(b) = tail.strip_prefix("beta") {
        (2, major, b.parse().unwrap_or(0))
    } else if let Some(a) = tail.strip_prefix("alpha") {
        (1, major, a.parse().unwrap_or(0))
    } else {
        (0, major, 0)
    }
}

/// `GET /api`.
pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_json(group: &str, versions: &[(String, Vec<Arc<ResourceDef>>)]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|(v, _)| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    let preferred = vs.first().cloned().unwrap_or(Value::Null);
    json!({"name": group, "versions": vs, "preferredVersion": preferred})
}

/// `GET /apis`.
pub fn api_group_list(defs: &[Arc<ResourceDef>]) -> Value {
    let groups: Vec<Value> = by_group(defs)
        .iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, vs)| group_json(g, vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /apis/{group}`, or `None` when the group is not served.
pub fn api_group(defs: &[Arc<ResourceDef>], group: &str) -> Option<Value> {
    by_group(defs)
        .iter()
        .find(|(g, _)| g == group && !g.is_empty())
        .map(|(g, vs)| {
            let mut v = group_json(g, vs);
            if let Some(o) = v.as_object_mut() {
                o.insert("kind".into(), json!("APIGroup"));
                o.insert("apiVersion".into(), json!("v1"));
            }
            v
        })
}

/// `GET /api/v1` or `/apis/{group}/{version}`, or `None` when not served.
pub fn api_resource_list(defs: &[Arc<ResourceDef>], group: &str, version: &str) -> Option<Value> {
    let mine: Vec<&Arc<ResourceDef>> = defs
        .iter()
        .filter(|d| d.group == group && d.version == version)
        .collect();
    if mine.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for d in mine {
        let mut r = json!({
            "name": d.plural,
            "singularName": d.singular,
            "namespaced": d.namespaced(),
            "kind": d.kind,
            "verbs": d.verbs,
        });
        if !d.short_names.is_empty() {
            r["shortNames"] = json!(d.short_names);
        }
        if !d.categories.is_empty() {
            r["categories"] = json!(d.categories);
        }
        resources.push(r);
        for s in &d.subresources {
            let mut sr = json!({
                "name": format!("{}/{}", d.plural, s.name),
                "singularName": "",
                "namespaced": d.namespaced(),
                "kind": s.kind,
                "verbs": s.verbs,
            });
            if s.group != d.group || s.version != d.version {
                sr["group"] = json!(s.group);
                sr["version"] = json!(s.version);
            }
            resources.push(sr);
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": resources,
    }))
}

/// The aggregated discovery flavour a client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregated {
    V2,
    V2Beta1,
}

impl Aggregated {
    pub fn api_version(self) -> &'static str {
        match self {
            Aggregated::V2 => "apidiscovery.k8s.io/v2",
            Aggregated::V2Beta1 => "apidiscovery.k8s.io/v2beta1",
        }
    }

    /// The response Content-Type, carrying the same parameters the client asked for.
    pub fn content_type(self) -> &'static str {
        match self {
            Aggregated::V2 => {
                "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
            }
            Aggregated::V2Beta1 => {
                "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
            }
        }
    }
}

/// Which aggregated discovery version `accept` asks for first, if any.
pub fn wants_aggregated(accept: Option<&str>) -> Option<Aggregated> {
    for clause in accept?.split(',') {
        let mut params = clause.split(';').map(str::trim);
        let media = params.next().unwrap_or("");
        if media != "application/json" {
            continue;
        }
        let (mut g, mut v, mut as_) = (None, None, None);
        for p in params {
            if let Some((k, val)) = p.split_once('=') {
                match k.trim() {
                    "g" => g = Some(val.trim()),
                    "v" => v = Some(val.trim()),
                    "as" => as_ = Some(val.trim()),
                    _ => {}
                }
            }
        }
        if g == Some("apidiscovery.k8s.io") && as_ == Some("APIGroupDiscoveryList") {
            match v {
                Some("v2") => return Some(Aggregated::V2),
                Some("v2beta1") => return Some(Aggregated::V2Beta1),
                _ => {}
            }
        }
    }
    None
}

/// The aggregated discovery document for `/api` (`core = true`) or `/apis`.
pub fn aggregated(defs: &[Arc<ResourceDef>], core: bool, flavour: Aggregated) -> Value {
    let items: Vec<Value> = by_group(defs)
        .iter()
        .filter(|(g, _)| g.is_empty() == core)
        .map(|(g, versions)| {
            let vs: Vec<Value> = versions
                .iter()
                .map(|(v, defs)| {
                    let resources: Vec<Value> = defs
                        .iter()
                        .map(|d| {
                            let mut r = json!({
                                "resource": d.plural,
                                "responseKind": {"group": d.group, "version": d.version, "kind": d.kind},
                                "scope": if d.namespaced() { "Namespaced" } else { "Cluster" },
                                "singularResource": d.singular,
                                "verbs": d.verbs,
                            });
                            if !d.short_names.is_empty() {
                                r["shortNames"] = json!(d.short_names);
                            }
                            if !d.categories.is_empty() {
                                r["categories"] = json!(d.categories);
                            }
                            if !d.subresources.is_empty() {
                                r["subresources"] = Value::Array(
                                    d.subresources
                                        .iter()
                                        .map(|s| {
                                            json!({
                                                "subresource": s.name,
                                                "responseKind": {"group": s.group, "version": s.version, "kind": s.kind},
                                                "verbs": s.verbs,
                                            })
                                        })
                                        .collect(),
                                );
                            }
                            r
                        })
                        .collect();
                    json!({"version": v, "resources": resources, "freshness": "Current"})
                })
                .collect();
            json!({"metadata": {"name": g, "creationTimestamp": null}, "versions": vs})
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": flavour.api_version(),
        "metadata": {},
        "items": items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_have_upstream_shapes() {
        let defs = kumo_registry::builtin();
        let groups = api_group_list(&defs);
        assert_eq!(groups["groups"][0]["name"], "apps");
        let core = api_resource_list(&defs, "", "v1").expect("core");
        let names: Vec<&str> = core["resources"]
            .as_array()
            .expect("array")
            .iter()
            .filter_map(|r| r["name"].as_str())
            .collect();
        assert!(names.contains(&"pods/log"));
        assert!(names.contains(&"namespaces/status"));
        let agg = aggregated(&defs, false, Aggregated::V2);
        assert_eq!(agg["apiVersion"], "apidiscovery.k8s.io/v2");
        let apps = &agg["items"][0];
        assert_eq!(apps["metadata"]["name"], "apps");
        assert!(api_resource_list(&defs, "nope", "v1").is_none());
    }

    #[test]
    fn accept_for_aggregated() {
        let a = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(wants_aggregated(Some(a)), Some(Aggregated::V2));
        let b = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(wants_aggregated(Some(b)), Some(Aggregated::V2Beta1));
        assert_eq!(wants_aggregated(Some("application/json")), None);
        assert!(version_priority("v1") > version_priority("v1beta1"));
        assert!(version_priority("v2") > version_priority("v1"));
    }
}
