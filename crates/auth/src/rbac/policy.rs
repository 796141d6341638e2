//! The bootstrap RBAC policy (upstream's default ClusterRoles and ClusterRoleBindings), kept
//! as data in `bootstrap-policy.yaml` and built into rbac/v1 objects.

use std::collections::BTreeMap;

use k8s_openapi::api::rbac::v1::{
    AggregationRule, ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::Deserialize;

use crate::error::{Error, Result};

const POLICY_YAML: &str = include_str!("bootstrap-policy.yaml");

/// Label every bootstrap object carries.
pub const BOOTSTRAPPING_LABEL: (&str, &str) = ("kubernetes.io/bootstrapping", "rbac-defaults");
/// Annotation telling the apiserver to reconcile the object at start (upstream's
/// `rbac.authorization.kubernetes.io/autoupdate`).
pub const AUTOUPDATE_ANNOTATION: &str = "rbac.authorization.kubernetes.io/autoupdate";
/// The rbac API group.
pub const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// The default policy objects.
#[derive(Clone, Debug, Default)]
pub struct BootstrapPolicy {
    /// ClusterRoles; aggregated ones (admin, edit, view) have an aggregation rule and no rules
    /// yet (see [`super::aggregate_all`]).
    pub cluster_roles: Vec<ClusterRole>,
    /// ClusterRoleBindings.
    pub cluster_role_bindings: Vec<ClusterRoleBinding>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PolicyFile {
    cluster_roles: Vec<RoleDef>,
    cluster_role_bindings: Vec<BindingDef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleDef {
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    aggregate: Vec<String>,
    #[serde(default)]
    rules: Vec<PolicyRule>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BindingDef {
    name: String,
    #[serde(default)]
    binding_name: Option<String>,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    service_accounts: Vec<String>,
}

fn meta(name: &str, extra_labels: &BTreeMap<String, String>) -> ObjectMeta {
    let mut labels = extra_labels.clone();
    labels.insert(BOOTSTRAPPING_LABEL.0.into(), BOOTSTRAPPING_LABEL.1.into());
    ObjectMeta {
        name: Some(name.into()),
        labels: Some(labels),
        annotations: Some(BTreeMap::from([(
            AUTOUPDATE_ANNOTATION.to_string(),
            "true".to_string(),
        )])),
        ..Default::default()
    }
}

/// The bootstrap policy: upstream's default ClusterRoles (cluster-admin, admin, edit, view
/// and their `system:aggregate-to-*` parts, system:discovery, system:basic-user,
/// system:public-info-viewer, system:node, system:node-bootstrapper, system:kube-scheduler,
/// system:kube-controller-manager, system:volume-scheduler, the certificates roles, …) and
/// ClusterRoleBindings, plus kubeadm's bindings that let bootstrap-token kubelets request
/// node certificates. Every object is labelled `kubernetes.io/bootstrapping: rbac-defaults`
/// and annotated `rbac.authorization.kubernetes.io/autoupdate: "true"`.
pub fn bootstrap_policy() -> Result<BootstrapPolicy> {
    let file: PolicyFile = serde_saphyr::from_str(POLICY_YAML)
        .map_err(|e| Error::Rbac(format!("bootstrap policy: {e}")))?;
    let cluster_roles = file
        .cluster_roles
        .into_iter()
        .map(|r| {
            let aggregation_rule = (!r.aggregate.is_empty()).then(|| AggregationRule {
                cluster_role_selectors: Some(
                    r.aggregate
                        .iter()
                        .map(|k| LabelSelector {
                            match_labels: Some(BTreeMap::from([(k.clone(), "true".to_string())])),
                            match_expressions: None,
                        })
                        .collect(),
                ),
            });
            ClusterRole {
                metadata: meta(&r.name, &r.labels),
                aggregation_rule,
                rules: if r.rules.is_empty() {
                    None
                } else {
                    Some(r.rules)
                },
            }
        })
        .collect();
    let mut cluster_role_bindings = Vec::new();
    for b in file.cluster_role_bindings {
        let mut subjects = Vec::new();
        for u in &b.users {
            subjects.push(Subject {
                api_group: Some(RBAC_GROUP.into()),
                kind: "User".into(),
                name: u.clone(),
                namespace: None,
            });
        }
        for g in &b.groups {
            subjects.push(Subject {
                api_group: Some(RBAC_GROUP.into()),
                kind: "Group".into(),
                name: g.clone(),
                namespace: None,
            });
        }
        for sa in &b.service_accounts {
            let (ns, name) = sa.split_once('/').ok_or_else(|| {
                Error::Rbac(format!(
                    "bootstrap policy: service account {sa:?} is not namespace/name"
                ))
            })?;
            subjects.push(Subject {
                api_group: None,
                kind: "ServiceAccount".into(),
                name: name.into(),
                namespace: Some(ns.into()),
            });
        }
        cluster_role_bindings.push(ClusterRoleBinding {
            metadata: meta(
                b.binding_name.as_deref().unwrap_or(&b.name),
                &BTreeMap::new(),
            ),
            role_ref: RoleRef {
                api_group: RBAC_GROUP.into(),
                kind: "ClusterRole".into(),
                name: b.name.clone(),
            },
            subjects: if subjects.is_empty() {
                None
            } else {
                Some(subjects)
            },
        });
    }
    Ok(BootstrapPolicy {
        cluster_roles,
        cluster_role_bindings,
    })
}
