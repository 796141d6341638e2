//! ClusterRole aggregation (`aggregationRule.clusterRoleSelectors`), computed like upstream's
//! clusterrole-aggregation controller: the rules of every other ClusterRole matching any
//! selector, selectors in order, matching roles sorted by name, duplicates dropped.

use std::collections::BTreeMap;

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::error::{Error, Result};

/// Whether `labels` match `selector` (`matchLabels` and `matchExpressions` with `In`, `NotIn`,
/// `Exists`, `DoesNotExist`). An empty selector matches everything. An invalid selector
/// (unknown operator, values where none are allowed or none where some are needed) is an
/// error, as upstream's `LabelSelectorAsSelector`.
pub fn label_selector_matches(
    selector: &LabelSelector,
    labels: &BTreeMap<String, String>,
) -> Result<bool> {
    let mut ok = true;
    if let Some(ml) = &selector.match_labels {
        for (k, v) in ml {
            if labels.get(k) != Some(v) {
                ok = false;
            }
        }
    }
    for req in selector.match_expressions.as_deref().unwrap_or(&[]) {
        let values = req.values.as_deref().unwrap_or(&[]);
        let value = labels.get(&req.key);
        let m = match req.operator.as_str() {
            "In" | "NotIn" => {
                if values.is_empty() {
                    return Err(Error::Rbac(format!(
                        "label selector: values must be non-empty for operator {}",
                        req.operator
                    )));
                }
                let in_set = value.is_some_and(|v| values.contains(v));
                if req.operator == "In" {
                    in_set
                } else {
                    !in_set
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    return Err(Error::Rbac(format!(
                        "label selector: values must be empty for operator {}",
                        req.operator
                    )));
                }
                (req.operator == "Exists") == value.is_some()
            }
            other => {
                return Err(Error::Rbac(format!(
                    "label selector: {other:?} is not a valid operator"
                )));
            }
        };
        ok &= m;
    }
    Ok(ok)
}

fn norm(v: &Option<Vec<String>>) -> &[String] {
    v.as_deref().unwrap_or(&[])
}

/// Semantic equality of rules (an absent list equals an empty one).
pub fn rules_equal(a: &PolicyRule, b: &PolicyRule) -> bool {
    a.verbs == b.verbs
        && norm(&a.api_groups) == norm(&b.api_groups)
        && norm(&a.resources) == norm(&b.resources)
        && norm(&a.resource_names) == norm(&b.resource_names)
        && norm(&a.non_resource_urls) == norm(&b.non_resource_urls)
}

/// The rules an aggregated ClusterRole should have given all ClusterRoles (`all` may include
/// `target` itself, which is skipped); `Ok(None)` when `target` has no aggregation rule.
/// What the aggregation controller writes into `target.rules` when they differ.
pub fn aggregated_rules(
    target: &ClusterRole,
    all: &[ClusterRole],
) -> Result<Option<Vec<PolicyRule>>> {
    let Some(rule) = &target.aggregation_rule else {
        return Ok(None);
    };
    let target_name = target.metadata.name.as_deref().unwrap_or("");
    let mut sorted: Vec<&ClusterRole> = all.iter().collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let empty = BTreeMap::new();
    let mut out: Vec<PolicyRule> = Vec::new();
    for selector in rule.cluster_role_selectors.as_deref().unwrap_or(&[]) {
        for role in &sorted {
            if role.metadata.name.as_deref().unwrap_or("") == target_name {
                continue;
            }
            let labels = role.metadata.labels.as_ref().unwrap_or(&empty);
            if !label_selector_matches(selector, labels)? {
                continue;
            }
            for r in role.rules.as_deref().unwrap_or(&[]) {
                if !out.iter().any(|o| rules_equal(o, r)) {
                    out.push(r.clone());
                }
            }
        }
    }
    Ok(Some(out))
}

/// Fills in the rules of every aggregated ClusterRole, repeating until nothing changes (an
/// aggregated role may select another aggregated role, e.g. `admin` selects `edit`, which
/// selects `view`), as the controller converges by re-syncing. At most `roles.len() + 1`
/// rounds, so a cycle cannot loop forever.
pub fn aggregate_all(roles: &[ClusterRole]) -> Result<Vec<ClusterRole>> {
    let mut roles = roles.to_vec();
    for _ in 0..=roles.len() {
        let mut changed = false;
        for i in 0..roles.len() {
            if let Some(rules) = aggregated_rules(&roles[i], &roles)? {
                let current = roles[i].rules.as_deref().unwrap_or(&[]);
                let same = current.len() == rules.len()
                    && current.iter().zip(&rules).all(|(a, b)| rules_equal(a, b));
                if !same {
                    roles[i].rules = Some(rules);
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    Ok(roles)
}
