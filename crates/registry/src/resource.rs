//! Resource definitions: the facts discovery publishes and the handlers route by.

use std::sync::Arc;

/// Whether objects live in a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Namespaced,
    Cluster,
}

/// A subresource served under `…/{name}/{subresource}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subresource {
    /// `status`, `scale`, `log`, `binding`, `eviction`, `token`, `proxy`, `exec`, …
    pub name: String,
    /// The kind exchanged on this subresource (`Scale`, `Binding`, `Eviction`, `TokenRequest`;
    /// the resource's own kind for `status`).
    pub kind: String,
    /// Group/version of that kind (`autoscaling/v1` for scale, `policy/v1` for eviction).
    pub group: String,
    pub version: String,
    pub verbs: Vec<String>,
}

/// One resource of one group-version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceDef {
    pub group: String,
    pub version: String,
    pub kind: String,
    /// `pods`.
    pub plural: String,
    /// `pod`.
    pub singular: String,
    pub scope: Scope,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub verbs: Vec<String>,
    pub subresources: Vec<Subresource>,
    /// The prefix in the store: objects live at `{storage_prefix}/{namespace}/{name}` (or
    /// `{storage_prefix}/{name}` when cluster-scoped).
    pub storage_prefix: String,
    /// Custom resource (served from a CRD).
    pub custom: bool,
    /// What the CRD says about this version of a custom resource (schema, printer columns,
    /// scale paths); `None` for built-in resources. Build it with [`crate::crd::resource_defs`].
    pub crd: Option<Arc<CustomResource>>,
}

/// The facts of one served version of a custom resource, taken from its CRD.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CustomResource {
    /// `metadata.name` of the CRD (`widgets.example.com`).
    pub crd_name: String,
    /// `spec.names.listKind` (defaults to `<Kind>List`).
    pub list_kind: String,
    /// `schema.openAPIV3Schema` of this version, if given.
    pub schema: Option<serde_json::Value>,
    /// `additionalPrinterColumns` of this version.
    pub printer_columns: Vec<PrinterColumn>,
    /// `subresources.scale` of this version.
    pub scale: Option<ScaleSubresource>,
    /// `selectableFields[*].jsonPath` of this version.
    pub selectable_fields: Vec<String>,
}

/// One `additionalPrinterColumns` entry of a CRD version.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PrinterColumn {
    pub name: String,
    /// `integer`, `number`, `string`, `boolean` or `date`.
    pub type_: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    /// A simple JSONPath such as `.spec.replicas` (evaluated by [`crate::jsonpath`]).
    pub json_path: String,
}

/// `subresources.scale` of a CRD version.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScaleSubresource {
    pub spec_replicas_path: String,
    pub status_replicas_path: String,
    pub label_selector_path: Option<String>,
}

impl ResourceDef {
    /// `apps/v1`, or `v1` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `DeploymentList`.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    pub fn namespaced(&self) -> bool {
        self.scope == Scope::Namespaced
    }

    /// The subresource named `name`, if served.
    pub fn subresource(&self, name: &str) -> Option<&Subresource> {
        self.subresources.iter().find(|s| s.name == name)
    }

    /// The store key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match namespace {
            Some(ns) if self.namespaced() => format!("{}/{ns}/{name}", self.storage_prefix),
            _ => format!("{}/{name}", self.storage_prefix),
        }
    }

    /// The store prefix of a list (all namespaces, or one), with a trailing `/`.
    pub fn list_prefix(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.namespaced() => format!("{}/{ns}/", self.storage_prefix),
            _ => format!("{}/", self.storage_prefix),
        }
    }

    /// `resource.group` (`deployments.apps`), or `resource` for the core group.
    pub fn group_resource(&self) -> String {
        kumo_apimachinery::status::qualified(&self.group, &self.plural)
    }
}

const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

struct B {
    def: ResourceDef,
}

impl B {
    fn new(group: &str, version: &str, kind: &str, plural: &str, scope: Scope) -> B {
        let storage_prefix = if group.is_empty() {
            format!("/registry/{plural}")
        } else {
            format!("/registry/{group}/{plural}")
        };
        B {
            def: ResourceDef {
                group: group.to_string(),
                version: version.to_string(),
                kind: kind.to_string(),
                plural: plural.to_string(),
                singular: kind.to_ascii_lowercase(),
                scope,
                short_names: Vec::new(),
                categories: Vec::new(),
                verbs: strings(ALL_VERBS),
                subresources: Vec::new(),
                storage_prefix,
                custom: false,
                crd: None,
            },
        }
    }
    fn short(mut self, names: &[&str]) -> B {
        self.def.short_names = strings(names);
        self
    }
    fn all(mut self) -> B {
        self.def.categories = strings(&["all"]);
        self
    }
    fn verbs(mut self, verbs: &[&str]) -> B {
        self.def.verbs = strings(verbs);
        self
    }
    fn status(mut self) -> B {
        let (g, v, k) = (
            self.def.group.clone(),
            self.def.version.clone(),
            self.def.kind.clone(),
        );
        self.def.subresources.push(Subresource {
            name: "status".into(),
            kind: k,
            group: g,
            version: v,
            verbs: strings(&["get", "patch", "update"]),
        });
        self
    }
    fn scale(mut self) -> B {
        self.def.subresources.push(Subresource {
            name: "scale".into(),
            kind: "Scale".into(),
            group: "autoscaling".into(),
            version: "v1".into(),
            verbs: strings(&["get", "patch", "update"]),
        });
        self
    }
    fn sub(mut self, name: &str, group: &str, version: &str, kind: &str, verbs: &[&str]) -> B {
        self.def.subresources.push(Subresource {
            name: name.into(),
            kind: kind.into(),
            group: group.into(),
            version: version.into(),
            verbs: strings(verbs),
        });
        self
    }
    /// Shares storage with another resource (events.k8s.io events are core events).
    fn storage(mut self, prefix: &str) -> B {
        self.def.storage_prefix = prefix.to_string();
        self
    }
    fn done(self) -> Arc<ResourceDef> {
        Arc::new(self.def)
    }
}

/// Every built-in resource kumo serves, in discovery order.
pub fn builtin() -> Vec<Arc<ResourceDef>> {
    use Scope::{Cluster, Namespaced};
    let cud = &[
        "create", "delete", "get", "list", "patch", "update", "watch",
    ];
    vec![
        // core/v1
        B::new("", "v1", "Binding", "bindings", Namespaced)
            .verbs(&["create"])
            .done(),
        B::new("", "v1", "ConfigMap", "configmaps", Namespaced)
            .short(&["cm"])
            .done(),
        B::new("", "v1", "Endpoints", "endpoints", Namespaced)
            .short(&["ep"])
            .done(),
        B::new("", "v1", "Event", "events", Namespaced)
            .short(&["ev"])
            .done(),
        B::new("", "v1", "LimitRange", "limitranges", Namespaced)
            .short(&["limits"])
            .done(),
        B::new("", "v1", "Namespace", "namespaces", Cluster)
            .short(&["ns"])
            .verbs(cud)
            .status()
            .sub("finalize", "", "v1", "Namespace", &["update"])
            .done(),
        B::new("", "v1", "Node", "nodes", Cluster)
            .short(&["no"])
            .status()
            .done(),
        B::new(
            "",
            "v1",
            "PersistentVolumeClaim",
            "persistentvolumeclaims",
            Namespaced,
        )
        .short(&["pvc"])
        .status()
        .done(),
        B::new("", "v1", "PersistentVolume", "persistentvolumes", Cluster)
            .short(&["pv"])
            .status()
            .done(),
        B::new("", "v1", "Pod", "pods", Namespaced)
            .short(&["po"])
            .all()
            .status()
            .sub("binding", "", "v1", "Binding", &["create"])
            .sub("eviction", "policy", "v1", "Eviction", &["create"])
            .sub("log", "", "v1", "Pod", &["get"])
            .sub("exec", "", "v1", "PodExecOptions", &["create", "get"])
            .sub("attach", "", "v1", "PodAttachOptions", &["create", "get"])
            .sub(
                "portforward",
                "",
                "v1",
                "PodPortForwardOptions",
                &["create", "get"],
            )
            .sub(
                "ephemeralcontainers",
                "",
                "v1",
                "Pod",
                &["get", "patch", "update"],
            )
            .done(),
        B::new("", "v1", "PodTemplate", "podtemplates", Namespaced).done(),
        B::new("", "v1", "ResourceQuota", "resourcequotas", Namespaced)
            .short(&["quota"])
            .status()
            .done(),
        B::new("", "v1", "Secret", "secrets", Namespaced).done(),
        B::new("", "v1", "ServiceAccount", "serviceaccounts", Namespaced)
            .short(&["sa"])
            .sub(
                "token",
                "authentication.k8s.io",
                "v1",
                "TokenRequest",
                &["create"],
            )
            .done(),
        B::new("", "v1", "Service", "services", Namespaced)
            .short(&["svc"])
            .all()
            .verbs(cud)
            .status()
            .done(),
        // apps/v1
        B::new(
            "apps",
            "v1",
            "ControllerRevision",
            "controllerrevisions",
            Namespaced,
        )
        .done(),
        B::new("apps", "v1", "DaemonSet", "daemonsets", Namespaced)
            .short(&["ds"])
            .all()
            .status()
            .done(),
        B::new("apps", "v1", "Deployment", "deployments", Namespaced)
            .short(&["deploy"])
            .all()
            .status()
            .scale()
            .done(),
        B::new("apps", "v1", "ReplicaSet", "replicasets", Namespaced)
            .short(&["rs"])
            .all()
            .status()
            .scale()
            .done(),
        B::new("apps", "v1", "StatefulSet", "statefulsets", Namespaced)
            .short(&["sts"])
            .all()
            .status()
            .scale()
            .done(),
        // authentication / authorization (virtual: create only, never stored)
        B::new(
            "authentication.k8s.io",
            "v1",
            "SelfSubjectReview",
            "selfsubjectreviews",
            Cluster,
        )
        .verbs(&["create"])
        .done(),
        B::new(
            "authentication.k8s.io",
            "v1",
            "TokenReview",
            "tokenreviews",
            Cluster,
        )
        .verbs(&["create"])
        .done(),
        B::new(
            "authorization.k8s.io",
            "v1",
            "LocalSubjectAccessReview",
            "localsubjectaccessreviews",
            Namespaced,
        )
        .verbs(&["create"])
        .done(),
        B::new(
            "authorization.k8s.io",
            "v1",
            "SelfSubjectAccessReview",
            "selfsubjectaccessreviews",
            Cluster,
        )
        .verbs(&["create"])
        .done(),
        B::new(
            "authorization.k8s.io",
            "v1",
            "SelfSubjectRulesReview",
            "selfsubjectrulesreviews",
            Cluster,
        )
        .verbs(&["create"])
        .done(),
        B::new(
            "authorization.k8s.io",
            "v1",
            "SubjectAccessReview",
            "subjectaccessreviews",
            Cluster,
        )
        .verbs(&["create"])
        .done(),
        // batch/v1
        B::new("batch", "v1", "CronJob", "cronjobs", Namespaced)
            .short(&["cj"])
            .all()
            .status()
            .done(),
        B::new("batch", "v1", "Job", "jobs", Namespaced)
            .all()
            .status()
            .done(),
        // certificates.k8s.io/v1
        B::new(
            "certificates.k8s.io",
            "v1",
            "CertificateSigningRequest",
            "certificatesigningrequests",
            Cluster,
        )
        .short(&["csr"])
        .status()
        .sub(
            "approval",
            "certificates.k8s.io",
            "v1",
            "CertificateSigningRequest",
            &["get", "patch", "update"],
        )
        .done(),
        // coordination.k8s.io/v1
        B::new("coordination.k8s.io", "v1", "Lease", "leases", Namespaced).done(),
        // discovery.k8s.io/v1
        B::new(
            "discovery.k8s.io",
            "v1",
            "EndpointSlice",
            "endpointslices",
            Namespaced,
        )
        .done(),
        // events.k8s.io/v1: stored as core v1 Events (the apiserver converts)
        B::new("events.k8s.io", "v1", "Event", "events", Namespaced)
            .storage("/registry/events")
            .short(&["ev"])
            .done(),
        // networking.k8s.io/v1
        B::new(
            "networking.k8s.io",
            "v1",
            "IngressClass",
            "ingressclasses",
            Cluster,
        )
        .done(),
        B::new(
            "networking.k8s.io",
            "v1",
            "Ingress",
            "ingresses",
            Namespaced,
        )
        .short(&["ing"])
        .status()
        .done(),
        B::new(
            "networking.k8s.io",
            "v1",
            "NetworkPolicy",
            "networkpolicies",
            Namespaced,
        )
        .short(&["netpol"])
        .done(),
        // policy/v1
        B::new(
            "policy",
            "v1",
            "PodDisruptionBudget",
            "poddisruptionbudgets",
            Namespaced,
        )
        .short(&["pdb"])
        .status()
        .done(),
        // rbac.authorization.k8s.io/v1
        B::new(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRoleBinding",
            "clusterrolebindings",
            Cluster,
        )
        .done(),
        B::new(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRole",
            "clusterroles",
            Cluster,
        )
        .done(),
        B::new(
            "rbac.authorization.k8s.io",
            "v1",
            "RoleBinding",
            "rolebindings",
            Namespaced,
        )
        .done(),
        B::new(
            "rbac.authorization.k8s.io",
            "v1",
            "Role",
            "roles",
            Namespaced,
        )
        .done(),
        // scheduling.k8s.io/v1
        B::new(
            "scheduling.k8s.io",
            "v1",
            "PriorityClass",
            "priorityclasses",
            Cluster,
        )
        .short(&["pc"])
        .done(),
        // storage.k8s.io/v1
        B::new(
            "storage.k8s.io",
            "v1",
            "StorageClass",
            "storageclasses",
            Cluster,
        )
        .short(&["sc"])
        .done(),
        // apiextensions.k8s.io/v1
        B::new(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            Cluster,
        )
        .short(&["crd", "crds"])
        .status()
        .done(),
    ]
}

/// Resources that are never stored (reviews): the handler answers a create directly.
pub fn is_virtual(def: &ResourceDef) -> bool {
    matches!(
        def.group.as_str(),
        "authentication.k8s.io" | "authorization.k8s.io"
    ) || def.plural == "bindings"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_registry_layout() {
        let all = builtin();
        let pods = all.iter().find(|d| d.plural == "pods").expect("pods");
        assert_eq!(
            pods.key(Some("default"), "web"),
            "/registry/pods/default/web"
        );
        assert_eq!(pods.list_prefix(None), "/registry/pods/");
        let deploy = all
            .iter()
            .find(|d| d.plural == "deployments")
            .expect("deployments");
        assert_eq!(deploy.api_version(), "apps/v1");
        assert_eq!(
            deploy.list_prefix(Some("ns")),
            "/registry/apps/deployments/ns/"
        );
        let nodes = all.iter().find(|d| d.plural == "nodes").expect("nodes");
        assert_eq!(nodes.key(Some("ignored"), "n1"), "/registry/nodes/n1");
    }

    #[test]
    fn plurals_are_unique_per_group() {
        let all = builtin();
        let mut seen = std::collections::HashSet::new();
        for d in &all {
            assert!(
                seen.insert((d.group.clone(), d.plural.clone())),
                "{}",
                d.plural
            );
        }
    }
}
