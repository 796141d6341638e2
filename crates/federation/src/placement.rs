//! Which member clusters a `spec.placement` selects: explicit names, a label selector with
//! match expressions, and taints (a NoSchedule/NoExecute taint needs a matching toleration).
//! Pure over JSON so it is unit-tested without a cluster.

use std::collections::BTreeMap;

use serde_json::Value;

/// What the scheduler knows about one member.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Value>,
    pub ready: bool,
}

/// A placement that selects nothing, or names a cluster that does not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementError {
    pub reason: &'static str,
    pub message: String,
}

/// Whether `labels` match a LabelSelector (matchLabels + matchExpressions).
pub fn selector_matches(sel: &Value, labels: &BTreeMap<String, String>) -> bool {
    if let Some(ml) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in ml {
            if labels.get(k).map(String::as_str) != v.as_str() {
                return false;
            }
        }
    }
    for e in sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
        let values: Vec<&str> = e
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let have = labels.get(key).map(String::as_str);
        let ok = match e
            .get("operator")
            .and_then(Value::as_str)
            .unwrap_or_default()
        {
            "In" => have.is_some_and(|h| values.contains(&h)),
            "NotIn" => have.is_none_or(|h| !values.contains(&h)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

fn tolerated(taint: &Value, tolerations: &[Value]) -> bool {
    let effect = taint
        .get("effect")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if effect == "PreferNoSchedule" {
        return true;
    }
    let key = taint.get("key").and_then(Value::as_str).unwrap_or_default();
    let value = taint
        .get("value")
        .and_then(Value::as_str)
        .unwrap_or_default();
    tolerations.iter().any(|t| {
        let tk = t.get("key").and_then(Value::as_str).unwrap_or_default();
        let te = t.get("effect").and_then(Value::as_str).unwrap_or_default();
        let op = t.get("operator").and_then(Value::as_str).unwrap_or("Equal");
        (te.is_empty() || te == effect)
            && (tk.is_empty() && op == "Exists"
                || tk == key
                    && (op == "Exists"
                        || t.get("value").and_then(Value::as_str).unwrap_or_default() == value))
    })
}

/// Whether `c` passes the placement's selector and taints (names are checked by [`select`]).
pub fn eligible(placement: &Value, c: &ClusterView) -> bool {
    if let Some(sel) = placement.get("clusterSelector")
        && !selector_matches(sel, &c.labels)
    {
        return false;
    }
    let tolerations: Vec<Value> = placement
        .get("tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    c.taints.iter().all(|t| tolerated(t, &tolerations))
}

/// Whether cluster `name` with `labels` can be among what `placement` selects — it names the
/// cluster, or names none and its selector (if any) matches: whom a change of that cluster
/// concerns (taints and spread constraints only narrow this down).
pub fn may_select(placement: &Value, name: &str, labels: &BTreeMap<String, String>) -> bool {
    let names = placement
        .get("clusters")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty());
    if let Some(names) = names {
        return names.iter().any(|n| n.as_str() == Some(name));
    }
    placement
        .get("clusterSelector")
        .is_none_or(|sel| selector_matches(sel, labels))
}

/// The clusters a placement selects (Ready or not: readiness is the scheduler's concern),
/// sorted by name.
pub fn select(placement: &Value, clusters: &[ClusterView]) -> Result<Vec<String>, PlacementError> {
    let names: Vec<&str> = placement
        .get("clusters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let unknown: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !clusters.iter().any(|c| c.name == *n))
        .collect();
    if !unknown.is_empty() {
        return Err(PlacementError {
            reason: "UnknownCluster",
            message: format!(
                "spec.placement.clusters names unknown clusters: {}",
                unknown.join(", ")
            ),
        });
    }
    let mut out: Vec<String> = clusters
        .iter()
        .filter(|c| names.is_empty() || names.contains(&c.name.as_str()))
        .filter(|c| eligible(placement, c))
        .map(|c| c.name.clone())
        .collect();
    out.sort();
    if !out.is_empty() {
        out = spread(placement, out, clusters)?;
    }
    if out.is_empty() {
        return Err(PlacementError {
            reason: "NoClusterSelected",
            message: format!(
                "the placement selects none of the {} member clusters (names, clusterSelector and taints)",
                clusters.len()
            ),
        });
    }
    Ok(out)
}

/// Applies `spreadConstraints` in order: clusters are grouped by a field (cluster, provider,
/// region, zone) or a label (clusters without it drop out); fewer than `minGroups` groups is
/// an error, more than `maxGroups` keeps the largest groups (ties by group name).
fn spread(
    placement: &Value,
    mut selected: Vec<String>,
    clusters: &[ClusterView],
) -> Result<Vec<String>, PlacementError> {
    for (i, sc) in placement
        .get("spreadConstraints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let label = match (
            sc.get("spreadByField").and_then(Value::as_str),
            sc.get("spreadByLabel").and_then(Value::as_str),
        ) {
            (Some("provider"), _) => Some(crate::LABEL_PROVIDER),
            (Some("region"), _) => Some(crate::LABEL_REGION),
            (Some("zone"), _) => Some(crate::LABEL_ZONE),
            (Some(_), _) => None, // "cluster": every cluster is its own group
            (None, Some(l)) => Some(l),
            (None, None) => None,
        };
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for name in &selected {
            let Some(view) = clusters.iter().find(|c| &c.name == name) else {
                continue;
            };
            let key = match label {
                Some(l) => match view.labels.get(l) {
                    Some(v) => v.clone(),
                    None => continue,
                },
                None => name.clone(),
            };
            groups.entry(key).or_default().push(name.clone());
        }
        let min = sc.get("minGroups").and_then(Value::as_u64).unwrap_or(0) as usize;
        let max = sc.get("maxGroups").and_then(Value::as_u64).unwrap_or(0) as usize;
        if groups.len() < min {
            return Err(PlacementError {
                reason: "SpreadConstraintUnsatisfied",
                message: format!(
                    "spec.placement.spreadConstraints[{i}] needs {min} groups, the selected clusters form {}",
                    groups.len()
                ),
            });
        }
        let mut ordered: Vec<(String, Vec<String>)> = groups.into_iter().collect();
        ordered.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then_with(|| a.0.cmp(&b.0)));
        if max > 0 {
            ordered.truncate(max);
        }
        selected = ordered.into_iter().flat_map(|(_, cs)| cs).collect();
        selected.sort();
    }
    Ok(selected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn view(name: &str, region: &str) -> ClusterView {
        ClusterView {
            name: name.into(),
            labels: [(
                "topology.kubernetes.io/region".to_string(),
                region.to_string(),
            )]
            .into(),
            taints: Vec::new(),
            ready: true,
        }
    }

    #[test]
    fn may_select_names_or_selector() {
        let us = view("a", "us").labels;
        assert!(may_select(&json!({}), "a", &us));
        assert!(may_select(&json!({"clusters": ["a", "b"]}), "a", &us));
        assert!(!may_select(&json!({"clusters": ["b"]}), "a", &us));
        let sel =
            json!({"clusterSelector": {"matchLabels": {"topology.kubernetes.io/region": "eu"}}});
        assert!(!may_select(&sel, "a", &us));
        assert!(may_select(&sel, "a", &view("a", "eu").labels));
    }

    #[test]
    fn names_selector_taints() {
        let mut cs = vec![view("c", "eu"), view("a", "us"), view("b", "eu")];
        assert_eq!(select(&json!({}), &cs).expect("all"), vec!["a", "b", "c"]);
        assert_eq!(
            select(&json!({"clusters": ["b"]}), &cs).expect("b"),
            vec!["b"]
        );
        let sel = json!({"clusterSelector": {"matchExpressions": [
            {"key": "topology.kubernetes.io/region", "operator": "In", "values": ["eu"]}]}});
        assert_eq!(select(&sel, &cs).expect("eu"), vec!["b", "c"]);
        cs[0].taints = vec![json!({"key": "gpu", "effect": "NoSchedule"})];
        assert_eq!(select(&sel, &cs).expect("eu"), vec!["b"]);
        let tol = json!({"tolerations": [{"key": "gpu", "operator": "Exists"}]});
        assert_eq!(select(&tol, &cs).expect("all"), vec!["a", "b", "c"]);
    }

    #[test]
    fn spread_constraints() {
        let cs = vec![
            view("a", "eu"),
            view("b", "eu"),
            view("c", "us"),
            view("d", "ap"),
        ];
        let one_region =
            json!({"spreadConstraints": [{"spreadByField": "region", "maxGroups": 1}]});
        assert_eq!(select(&one_region, &cs).expect("eu"), vec!["a", "b"]);
        let two = json!({"spreadConstraints": [{"spreadByField": "region", "maxGroups": 2}]});
        // eu (2 clusters) first, then ap before us by name.
        assert_eq!(select(&two, &cs).expect("eu+ap"), vec!["a", "b", "d"]);
        let too_many = json!({"spreadConstraints": [{"spreadByField": "region", "minGroups": 4}]});
        assert_eq!(
            select(&too_many, &cs).expect_err("3 regions").reason,
            "SpreadConstraintUnsatisfied"
        );
        let per_cluster =
            json!({"spreadConstraints": [{"spreadByField": "cluster", "maxGroups": 2}]});
        assert_eq!(select(&per_cluster, &cs).expect("2"), vec!["a", "b"]);
    }

    #[test]
    fn errors() {
        let cs = vec![view("a", "us")];
        assert_eq!(
            select(&json!({"clusters": ["zz"]}), &cs)
                .expect_err("unknown")
                .reason,
            "UnknownCluster"
        );
        let sel =
            json!({"clusterSelector": {"matchLabels": {"topology.kubernetes.io/region": "mars"}}});
        assert_eq!(
            select(&sel, &cs).expect_err("none").reason,
            "NoClusterSelected"
        );
    }
}
