//! RBAC over the watch cache: the authorizer reads Roles, ClusterRoles and their bindings
//! from the cached objects, parsed once per change.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;

use crate::cache::{Cache, Json};
use crate::request::RequestInfo;

/// Parsed RBAC objects, refreshed when the cache revision moved.
#[derive(Default)]
struct Snapshot {
    rev: i64,
    cluster_roles: Vec<Arc<ClusterRole>>,
    cluster_role_bindings: Vec<Arc<ClusterRoleBinding>>,
    roles: Vec<Arc<Role>>,
    role_bindings: Vec<Arc<RoleBinding>>,
}

/// An [`kumo_auth::RbacSource`] backed by the watch cache.
pub struct CacheRbac {
    cache: Arc<Cache>,
    snap: Mutex<Arc<Snapshot>>,
}

impl std::fmt::Debug for CacheRbac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CacheRbac")
    }
}

fn parse_all<T: DeserializeOwned>(cache: &Cache, prefix: &str) -> Vec<Arc<T>> {
    cache
        .list(prefix)
        .0
        .iter()
        .filter_map(|e| e.with_json(Json::parse::<T>).ok().map(Arc::new))
        .collect()
}

impl CacheRbac {
    pub fn new(cache: Arc<Cache>) -> CacheRbac {
        CacheRbac {
            cache,
            snap: Mutex::new(Arc::new(Snapshot {
                rev: -1,
                ..Default::default()
            })),
        }
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        let rev = self.cache.revision();
        let mut guard = self.snap.lock();
        if guard.rev != rev {
            let prefix = "/registry/rbac.authorization.k8s.io/";
            *guard = Arc::new(Snapshot {
                rev,
                cluster_roles: parse_all(&self.cache, &format!("{prefix}clusterroles/")),
                cluster_role_bindings: parse_all(
                    &self.cache,
                    &format!("{prefix}clusterrolebindings/"),
                ),
                roles: parse_all(&self.cache, &format!("{prefix}roles/")),
                role_bindings: parse_all(&self.cache, &format!("{prefix}rolebindings/")),
            });
        }
        guard.clone()
    }
}

impl kumo_auth::RbacSource for CacheRbac {
    fn cluster_role_bindings(&self) -> Vec<Arc<ClusterRoleBinding>> {
        self.snapshot().cluster_role_bindings.clone()
    }
    fn cluster_role(&self, name: &str) -> Option<Arc<ClusterRole>> {
        self.snapshot()
            .cluster_roles
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(name))
            .cloned()
    }
    fn role_bindings(&self, namespace: &str) -> Vec<Arc<RoleBinding>> {
        self.snapshot()
            .role_bindings
            .iter()
            .filter(|r| r.metadata.namespace.as_deref() == Some(namespace))
            .cloned()
            .collect()
    }
    fn role(&self, namespace: &str, name: &str) -> Option<Arc<Role>> {
        self.snapshot()
            .roles
            .iter()
            .find(|r| {
                r.metadata.namespace.as_deref() == Some(namespace)
                    && r.metadata.name.as_deref() == Some(name)
            })
            .cloned()
    }
}

/// Object lookups for token authentication, from the cache.
pub struct CacheLookup(pub Arc<Cache>);

fn get<T: DeserializeOwned>(cache: &Cache, key: &str) -> Option<T> {
    cache.get(key).and_then(|e| e.with_json(Json::parse).ok())
}

impl kumo_auth::ObjectLookup for CacheLookup {
    fn secret(&self, namespace: &str, name: &str) -> Option<Secret> {
        get(&self.0, &format!("/registry/secrets/{namespace}/{name}"))
    }
    fn service_account(&self, namespace: &str, name: &str) -> Option<ServiceAccount> {
        get(
            &self.0,
            &format!("/registry/serviceaccounts/{namespace}/{name}"),
        )
    }
    fn pod(&self, namespace: &str, name: &str) -> Option<Pod> {
        get(&self.0, &format!("/registry/pods/{namespace}/{name}"))
    }
    fn node(&self, name: &str) -> Option<Node> {
        get(&self.0, &format!("/registry/nodes/{name}"))
    }
}

/// RBAC attributes of a decoded request.
pub fn attributes(info: &RequestInfo) -> kumo_auth::Attributes {
    match info {
        RequestInfo::Resource { verb, req } => kumo_auth::Attributes {
            verb: verb.clone(),
            api_group: req.group.clone(),
            api_version: req.version.clone(),
            resource: req.resource.clone(),
            subresource: req.subresource.clone().unwrap_or_default(),
            namespace: req.namespace.clone().unwrap_or_default(),
            name: req.name.clone().unwrap_or_default(),
            path: String::new(),
            resource_request: true,
        },
        RequestInfo::NonResource { verb, path } => kumo_auth::Attributes::non_resource(verb, path),
    }
}

/// Upstream's Node authorizer, simplified: a kubelet (`system:node:<name>` in `system:nodes`)
/// may do what the `system:node` ClusterRole lists, except that Secrets, ConfigMaps and
/// PersistentVolumeClaims are readable only when a pod bound to its node references them.
/// `None` = no opinion (RBAC decides).
pub fn node_authorize(
    cache: &Cache,
    rbac: &CacheRbac,
    user: &kumo_auth::UserInfo,
    attrs: &kumo_auth::Attributes,
) -> Option<bool> {
    let node = user.name.strip_prefix("system:node:")?;
    if !user.groups.iter().any(|g| g == "system:nodes") {
        return None;
    }
    if attrs.resource_request
        && attrs.api_group.is_empty()
        && matches!(
            attrs.resource.as_str(),
            "secrets" | "configmaps" | "persistentvolumeclaims"
        )
        && attrs.subresource.is_empty()
    {
        if attrs.verb != "get" || attrs.name.is_empty() {
            return Some(false);
        }
        return Some(referenced_by_node_pod(
            cache,
            node,
            &attrs.resource,
            &attrs.namespace,
            &attrs.name,
        ));
    }
    let role = kumo_auth::RbacSource::cluster_role(rbac, "system:node")?;
    let allowed = role
        .rules
        .as_ref()
        .is_some_and(|rules| rules.iter().any(|r| kumo_auth::rbac::rule_allows(attrs, r)));
    allowed.then_some(true)
}

fn referenced_by_node_pod(cache: &Cache, node: &str, resource: &str, ns: &str, name: &str) -> bool {
    let (pods, _) = cache.list(&format!("/registry/pods/{ns}/"));
    pods.iter()
        .filter(|p| p.field("spec.nodeName") == Some(node))
        .any(|p| {
            let pod = p.object();
            let text = |v: &serde_json::Value| v.as_str().map(str::to_string);
            let mut refs: Vec<String> = Vec::new();
            let spec = pod.get("spec").cloned().unwrap_or_default();
            for vol in spec
                .get("volumes")
                .and_then(|v| v.as_array())
                .into_iter()
                .flatten()
            {
                match resource {
                    "secrets" => {
                        refs.extend(
                            vol.get("secret")
                                .and_then(|s| s.get("secretName"))
                                .and_then(text),
                        );
                    }
                    "configmaps" => {
                        refs.extend(
                            vol.get("configMap")
                                .and_then(|s| s.get("name"))
                                .and_then(text),
                        );
                    }
                    _ => {
                        refs.extend(
                            vol.get("persistentVolumeClaim")
                                .and_then(|s| s.get("claimName"))
                                .and_then(text),
                        );
                    }
                }
                for src in vol
                    .get("projected")
                    .and_then(|p| p.get("sources"))
                    .and_then(|s| s.as_array())
                    .into_iter()
                    .flatten()
                {
                    let key = if resource == "secrets" {
                        "secret"
                    } else {
                        "configMap"
                    };
                    refs.extend(src.get(key).and_then(|s| s.get("name")).and_then(text));
                }
            }
            if resource == "secrets" {
                for s in spec
                    .get("imagePullSecrets")
                    .and_then(|v| v.as_array())
                    .into_iter()
                    .flatten()
                {
                    refs.extend(s.get("name").and_then(text));
                }
            }
            for field in ["containers", "initContainers", "ephemeralContainers"] {
                for c in spec
                    .get(field)
                    .and_then(|v| v.as_array())
                    .into_iter()
                    .flatten()
                {
                    for e in c
                        .get("env")
                        .and_then(|v| v.as_array())
                        .into_iter()
                        .flatten()
                    {
                        let sel = if resource == "secrets" {
                            "secretKeyRef"
                        } else {
                            "configMapKeyRef"
                        };
                        refs.extend(
                            e.get("valueFrom")
                                .and_then(|v| v.get(sel))
                                .and_then(|r| r.get("name"))
                                .and_then(text),
                        );
                    }
                    for e in c
                        .get("envFrom")
                        .and_then(|v| v.as_array())
                        .into_iter()
                        .flatten()
                    {
                        let sel = if resource == "secrets" {
                            "secretRef"
                        } else {
                            "configMapRef"
                        };
                        refs.extend(e.get(sel).and_then(|r| r.get("name")).and_then(text));
                    }
                }
            }
            refs.iter().any(|r| r == name)
        })
}
