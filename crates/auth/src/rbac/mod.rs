//! RBAC authorization, evaluated like upstream's RBAC authorizer: every ClusterRoleBinding,
//! then (for namespaced requests) every RoleBinding of the namespace, whose subjects include
//! the user, and the rules of the roles they reference. `system:masters` is always allowed
//! (upstream's privileged-group authorizer in front of RBAC).

pub mod aggregate;
pub mod policy;

use std::fmt;
use std::sync::Arc;

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, Subject,
};

use crate::authn::UserInfo;
use crate::authn::serviceaccount::service_account_username;
use crate::pki::SYSTEM_MASTERS;

pub use aggregate::{aggregate_all, aggregated_rules, label_selector_matches};
pub use policy::{BootstrapPolicy, bootstrap_policy};

/// What a request wants to do (upstream's `authorizer.Attributes`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attributes {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`, or a
    /// special verb (`impersonate`, `bind`, `escalate`, `use`, `approve`, …); for non-resource
    /// requests the lowercased HTTP method (`get`, `post`, …).
    pub verb: String,
    /// API group, `""` for the core group.
    pub api_group: String,
    /// API version (only used in messages' details).
    pub api_version: String,
    /// Resource (plural, e.g. `pods`).
    pub resource: String,
    /// Subresource (e.g. `log`, `status`), or empty.
    pub subresource: String,
    /// Namespace, empty for cluster-scoped requests and cluster-wide lists.
    pub namespace: String,
    /// Object name, empty for lists and creates.
    pub name: String,
    /// Request path, for non-resource requests (e.g. `/healthz`).
    pub path: String,
    /// Whether this is a resource request (otherwise a non-resource URL request).
    pub resource_request: bool,
}

impl Attributes {
    /// A resource request.
    pub fn resource(
        verb: &str,
        api_group: &str,
        resource: &str,
        namespace: &str,
        name: &str,
    ) -> Self {
        let (resource, subresource) = match resource.split_once('/') {
            Some((r, s)) => (r, s),
            None => (resource, ""),
        };
        Attributes {
            verb: verb.into(),
            api_group: api_group.into(),
            resource: resource.into(),
            subresource: subresource.into(),
            namespace: namespace.into(),
            name: name.into(),
            resource_request: true,
            ..Default::default()
        }
    }

    /// A non-resource request.
    pub fn non_resource(verb: &str, path: &str) -> Self {
        Attributes {
            verb: verb.into(),
            path: path.into(),
            resource_request: false,
            ..Default::default()
        }
    }
}

/// An authorization decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Allowed.
    Allow,
    /// Not allowed; the reason is empty or, when some bindings could not be evaluated,
    /// upstream's `RBAC: …` text (e.g. `RBAC: clusterrole.rbac.authorization.k8s.io "x" not found`).
    Deny(String),
}

impl Decision {
    /// Whether the request is allowed.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow)
    }
}

/// The RBAC objects the authorizer evaluates; the apiserver backs it with its watch cache.
pub trait RbacSource: Send + Sync {
    /// All ClusterRoleBindings.
    fn cluster_role_bindings(&self) -> Vec<Arc<ClusterRoleBinding>>;
    /// A ClusterRole by name.
    fn cluster_role(&self, name: &str) -> Option<Arc<ClusterRole>>;
    /// The RoleBindings of a namespace.
    fn role_bindings(&self, namespace: &str) -> Vec<Arc<RoleBinding>>;
    /// A Role by namespace and name.
    fn role(&self, namespace: &str, name: &str) -> Option<Arc<Role>>;
}

/// An in-memory [`RbacSource`] (tests, and start-up before caches are filled).
#[derive(Clone, Debug, Default)]
pub struct StaticRbac {
    /// ClusterRoles.
    pub cluster_roles: Vec<Arc<ClusterRole>>,
    /// ClusterRoleBindings.
    pub cluster_role_bindings: Vec<Arc<ClusterRoleBinding>>,
    /// Roles.
    pub roles: Vec<Arc<Role>>,
    /// RoleBindings.
    pub role_bindings: Vec<Arc<RoleBinding>>,
}

impl StaticRbac {
    /// The bootstrap policy, with aggregated ClusterRoles' rules filled in.
    pub fn bootstrap() -> crate::Result<Self> {
        let policy = bootstrap_policy()?;
        let roles = aggregate_all(&policy.cluster_roles)?;
        Ok(StaticRbac {
            cluster_roles: roles.into_iter().map(Arc::new).collect(),
            cluster_role_bindings: policy
                .cluster_role_bindings
                .into_iter()
                .map(Arc::new)
                .collect(),
            roles: Vec::new(),
            role_bindings: Vec::new(),
        })
    }
}

impl RbacSource for StaticRbac {
    fn cluster_role_bindings(&self) -> Vec<Arc<ClusterRoleBinding>> {
        self.cluster_role_bindings.clone()
    }
    fn cluster_role(&self, name: &str) -> Option<Arc<ClusterRole>> {
        self.cluster_roles
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(name))
            .cloned()
    }
    fn role_bindings(&self, namespace: &str) -> Vec<Arc<RoleBinding>> {
        self.role_bindings
            .iter()
            .filter(|b| b.metadata.namespace.as_deref() == Some(namespace))
            .cloned()
            .collect()
    }
    fn role(&self, namespace: &str, name: &str) -> Option<Arc<Role>> {
        self.roles
            .iter()
            .find(|r| {
                r.metadata.namespace.as_deref() == Some(namespace)
                    && r.metadata.name.as_deref() == Some(name)
            })
            .cloned()
    }
}

/// The RBAC authorizer.
pub struct Authorizer<S> {
    source: S,
}

impl<S> fmt::Debug for Authorizer<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authorizer").finish_non_exhaustive()
    }
}

impl<S: RbacSource> Authorizer<S> {
    /// An authorizer over `source`.
    pub fn new(source: S) -> Self {
        Authorizer { source }
    }

    /// The source.
    pub fn source(&self) -> &S {
        &self.source
    }

    /// Decides whether `user` may do `attrs`.
    pub fn authorize(&self, user: &UserInfo, attrs: &Attributes) -> Decision {
        if user.in_group(SYSTEM_MASTERS) {
            return Decision::Allow;
        }
        let mut errors: Vec<String> = Vec::new();
        let mut allowed = false;
        self.visit_rules(
            user,
            &attrs.namespace,
            &mut |rule| {
                if rule_allows(attrs, rule) {
                    allowed = true;
                    return false;
                }
                true
            },
            &mut errors,
        );
        if allowed {
            return Decision::Allow;
        }
        let reason = match errors.len() {
            0 => String::new(),
            1 => format!("RBAC: {}", errors[0]),
            _ => format!("RBAC: [{}]", errors.join(", ")),
        };
        tracing::debug!(user = %user.name, verb = %attrs.verb, resource = %attrs.resource, path = %attrs.path, namespace = %attrs.namespace, "RBAC: denied");
        Decision::Deny(reason)
    }

    /// Every rule that applies to `user` in `namespace` (cluster-wide rules included), as
    /// a SelfSubjectRulesReview would list them; plus the errors met.
    pub fn rules_for(&self, user: &UserInfo, namespace: &str) -> (Vec<PolicyRule>, Vec<String>) {
        let mut rules = Vec::new();
        let mut errors = Vec::new();
        self.visit_rules(
            user,
            namespace,
            &mut |r| {
                rules.push(r.clone());
                true
            },
            &mut errors,
        );
        (rules, errors)
    }

    /// Upstream's `VisitRulesFor`: `visit` returns false to stop.
    fn visit_rules(
        &self,
        user: &UserInfo,
        namespace: &str,
        visit: &mut dyn FnMut(&PolicyRule) -> bool,
        errors: &mut Vec<String>,
    ) {
        for binding in self.source.cluster_role_bindings() {
            let subjects = binding.subjects.as_deref().unwrap_or(&[]);
            if !subjects.iter().any(|s| applies_to(user, s, "")) {
                continue;
            }
            match self.role_ref_rules(&binding.role_ref.kind, &binding.role_ref.name, "") {
                Ok(rules) => {
                    for r in rules.iter() {
                        if !visit(r) {
                            return;
                        }
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        if namespace.is_empty() {
            return;
        }
        for binding in self.source.role_bindings(namespace) {
            let subjects = binding.subjects.as_deref().unwrap_or(&[]);
            if !subjects.iter().any(|s| applies_to(user, s, namespace)) {
                continue;
            }
            match self.role_ref_rules(&binding.role_ref.kind, &binding.role_ref.name, namespace) {
                Ok(rules) => {
                    for r in rules.iter() {
                        if !visit(r) {
                            return;
                        }
                    }
                }
                Err(e) => errors.push(e),
            }
        }
    }

    fn role_ref_rules(&self, kind: &str, name: &str, namespace: &str) -> Result<RuleList, String> {
        match kind {
            "Role" => match self.source.role(namespace, name) {
                Some(r) => Ok(RuleList::Role(r)),
                None => Err(format!(
                    "role.rbac.authorization.k8s.io \"{name}\" not found"
                )),
            },
            "ClusterRole" => match self.source.cluster_role(name) {
                Some(r) => Ok(RuleList::ClusterRole(r)),
                None => Err(format!(
                    "clusterrole.rbac.authorization.k8s.io \"{name}\" not found"
                )),
            },
            other => Err(format!("unsupported role reference kind: \"{other}\"")),
        }
    }
}

enum RuleList {
    Role(Arc<Role>),
    ClusterRole(Arc<ClusterRole>),
}

impl RuleList {
    fn iter(&self) -> std::slice::Iter<'_, PolicyRule> {
        match self {
            RuleList::Role(r) => r.rules.as_deref().unwrap_or(&[]).iter(),
            RuleList::ClusterRole(r) => r.rules.as_deref().unwrap_or(&[]).iter(),
        }
    }
}

/// Whether a binding subject names the user (upstream's `appliesToUser`). A ServiceAccount
/// subject without a namespace takes the binding's namespace.
pub fn applies_to(user: &UserInfo, subject: &Subject, binding_namespace: &str) -> bool {
    match subject.kind.as_str() {
        "User" => user.name == subject.name,
        "Group" => user.in_group(&subject.name),
        "ServiceAccount" => {
            let ns = match subject.namespace.as_deref() {
                Some(n) if !n.is_empty() => n,
                _ => binding_namespace,
            };
            !ns.is_empty() && user.name == service_account_username(ns, &subject.name)
        }
        _ => false,
    }
}

fn has_or_star(list: &[String], want: &str) -> bool {
    list.iter().any(|v| v == "*" || v == want)
}

/// Whether one rule allows the request (upstream's `RuleAllows`).
pub fn rule_allows(attrs: &Attributes, rule: &PolicyRule) -> bool {
    if !has_or_star(&rule.verbs, &attrs.verb) {
        return false;
    }
    if attrs.resource_request {
        let combined = if attrs.subresource.is_empty() {
            attrs.resource.clone()
        } else {
            format!("{}/{}", attrs.resource, attrs.subresource)
        };
        has_or_star(rule.api_groups.as_deref().unwrap_or(&[]), &attrs.api_group)
            && resource_matches(
                rule.resources.as_deref().unwrap_or(&[]),
                &combined,
                &attrs.subresource,
            )
            && resource_name_matches(rule.resource_names.as_deref().unwrap_or(&[]), &attrs.name)
    } else {
        non_resource_url_matches(
            rule.non_resource_urls.as_deref().unwrap_or(&[]),
            &attrs.path,
        )
    }
}

fn resource_matches(rule_resources: &[String], combined: &str, subresource: &str) -> bool {
    rule_resources.iter().any(|r| {
        r == "*"
            || r == combined
            || (!subresource.is_empty()
                && r.len() == subresource.len() + 2
                && r.starts_with("*/")
                && r.ends_with(subresource))
    })
}

fn resource_name_matches(names: &[String], name: &str) -> bool {
    names.is_empty() || names.iter().any(|n| n == name)
}

fn non_resource_url_matches(urls: &[String], path: &str) -> bool {
    urls.iter().any(|u| {
        u == "*" || u == path || (u.ends_with('*') && path.starts_with(u.trim_end_matches('*')))
    })
}

/// Upstream's Forbidden text for a denied request:
/// `User "alice" cannot list resource "pods" in API group "" in the namespace "default"`,
/// `… at the cluster scope`, or `User "x" cannot get path "/foo"`.
pub fn forbidden_message(user: &UserInfo, attrs: &Attributes) -> String {
    let name = &user.name;
    if !attrs.resource_request {
        return format!(
            "User {} cannot {} path {}",
            go_quote(name),
            attrs.verb,
            go_quote(&attrs.path)
        );
    }
    let mut resource = attrs.resource.clone();
    if !attrs.subresource.is_empty() {
        resource = format!("{resource}/{}", attrs.subresource);
    }
    if !attrs.namespace.is_empty() {
        format!(
            "User {} cannot {} resource {} in API group {} in the namespace {}",
            go_quote(name),
            attrs.verb,
            go_quote(&resource),
            go_quote(&attrs.api_group),
            go_quote(&attrs.namespace)
        )
    } else {
        format!(
            "User {} cannot {} resource {} in API group {} at the cluster scope",
            go_quote(name),
            attrs.verb,
            go_quote(&resource),
            go_quote(&attrs.api_group)
        )
    }
}

/// The `message` of the 403 `Status` upstream returns (`apierrors.NewForbidden`):
/// `pods is forbidden: User …`, `deployments.apps "web" is forbidden: …: <reason>`, or
/// `forbidden: User "x" cannot get path "/foo"` for non-resource requests.
pub fn forbidden_status_message(user: &UserInfo, attrs: &Attributes, reason: &str) -> String {
    let mut msg = forbidden_message(user, attrs);
    if !reason.is_empty() {
        msg = format!("{msg}: {reason}");
    }
    let qualified = if attrs.resource.is_empty() {
        String::new()
    } else if attrs.api_group.is_empty() {
        attrs.resource.clone()
    } else {
        format!("{}.{}", attrs.resource, attrs.api_group)
    };
    if qualified.is_empty() {
        format!("forbidden: {msg}")
    } else if attrs.name.is_empty() {
        format!("{qualified} is forbidden: {msg}")
    } else {
        format!("{qualified} {} is forbidden: {msg}", go_quote(&attrs.name))
    }
}

/// The 403 `metav1.Status` body upstream sends for a denied request, e.g. for an anonymous
/// `GET /`: `{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":
/// "forbidden: User \"system:anonymous\" cannot get path \"/\"","reason":"Forbidden",
/// "details":{},"code":403}`; `details` carries the name, group and resource (as `kind`)
/// when not empty.
pub fn forbidden_status(user: &UserInfo, attrs: &Attributes, reason: &str) -> serde_json::Value {
    let mut details = serde_json::Map::new();
    if !attrs.name.is_empty() {
        details.insert("name".into(), attrs.name.clone().into());
    }
    if !attrs.api_group.is_empty() {
        details.insert("group".into(), attrs.api_group.clone().into());
    }
    if !attrs.resource.is_empty() {
        details.insert("kind".into(), attrs.resource.clone().into());
    }
    serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": forbidden_status_message(user, attrs, reason),
        "reason": "Forbidden",
        "details": details,
        "code": 403,
    })
}

/// The 401 `metav1.Status` body upstream sends when authentication fails.
pub fn unauthorized_status() -> serde_json::Value {
    serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "Unauthorized",
        "reason": "Unauthorized",
        "code": 401,
    })
}

/// Go's `%q` for a string: double quotes, `\"` and `\\` escaped, control characters as
/// `\n`, `\t`, … or `\xNN`/`\uNNNN`, printable characters kept.
pub fn go_quote(s: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
