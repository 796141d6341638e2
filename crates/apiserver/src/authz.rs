//! RBAC over the watch cache: the authorizer reads Roles, ClusterRoles and their bindings
//! from the cached objects, parsed once per change.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;

use crate::cache::Cache;
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
        .filter_map(|e| serde_json::from_slice::<T>(&e.raw).ok().map(Arc::new))
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
    cache
        .get(key)
        .and_then(|e| serde_json::from_slice(&e.raw).ok())
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
