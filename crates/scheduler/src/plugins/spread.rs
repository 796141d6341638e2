//! PodTopologySpread: `DoNotSchedule` constraints filter (maxSkew against the global minimum,
//! minDomains, nodeAffinityPolicy/nodeTaintsPolicy), `ScheduleAnyway` constraints score.
//! Only the pod's own constraints: the cluster-level default constraints (built from the
//! Services/ReplicaSets selecting the pod) are not applied.

use std::collections::{HashMap, HashSet};

use super::{FilterResult, MAX_NODE_SCORE, Status, names};
use crate::selector::{Selector, do_not_schedule, untolerated_taint};
use crate::types::{NodeInfo, PodInfo, SpreadConstraint};

/// Reason when the skew would exceed maxSkew.
pub const ERR_CONSTRAINTS_NOT_MATCH: &str = "node(s) didn't match pod topology spread constraints";
/// Reason when the node lacks a topology key.
pub const ERR_NODE_LABEL_NOT_MATCH: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";

const HOSTNAME: &str = "kubernetes.io/hostname";

/// `countPodsMatchSelector`: pods of `ns` on the node, not terminating, matching `sel` (an
/// empty selector counts nothing).
pub fn count_matching(node: &NodeInfo, sel: &Selector, ns: &str) -> i64 {
    if sel.is_empty() {
        return 0;
    }
    node.pods
        .iter()
        .filter(|p| !p.terminating && p.namespace == ns && sel.matches(&p.labels))
        .count() as i64
}

fn has_all_keys(node: &NodeInfo, cs: &[SpreadConstraint]) -> bool {
    cs.iter().all(|c| node.labels.contains_key(&c.topology_key))
}

/// `matchNodeInclusionPolicies`.
fn node_included(pod: &PodInfo, node: &NodeInfo, c: &SpreadConstraint) -> bool {
    if c.honor_node_affinity && !pod.required_node_affinity.matches(&node.name, &node.labels) {
        return false;
    }
    if c.honor_node_taints
        && untolerated_taint(&node.taints, &pod.tolerations, do_not_schedule).is_some()
    {
        return false;
    }
    true
}

/// PreFilter state: matching pods per topology pair over all eligible nodes.
#[derive(Debug, Clone)]
pub struct FilterState {
    constraints: Vec<SpreadConstraint>,
    pair_counts: HashMap<(String, String), i64>,
    min_by_key: HashMap<String, i64>,
    domains_by_key: HashMap<String, i64>,
}

impl FilterState {
    fn recompute(&mut self) {
        self.min_by_key.clear();
        self.domains_by_key.clear();
        for ((k, _), n) in &self.pair_counts {
            let m = self.min_by_key.entry(k.clone()).or_insert(i64::MAX);
            *m = (*m).min(*n);
            *self.domains_by_key.entry(k.clone()).or_insert(0) += 1;
        }
    }

    /// `updateWithPod`: account for `updated` being added (`delta` 1) to or removed (-1) from
    /// `node` (preemption and nominated pods).
    pub fn update_with_pod(
        &mut self,
        updated: &PodInfo,
        preemptor: &PodInfo,
        node: &NodeInfo,
        delta: i64,
    ) {
        if updated.namespace != preemptor.namespace || !has_all_keys(node, &self.constraints) {
            return;
        }
        let mut changed = false;
        for c in &self.constraints {
            if !c.selector.matches(&updated.labels) || !node_included(preemptor, node, c) {
                continue;
            }
            let v = node
                .labels
                .get(&c.topology_key)
                .cloned()
                .unwrap_or_default();
            *self
                .pair_counts
                .entry((c.topology_key.clone(), v))
                .or_insert(0) += delta;
            changed = true;
        }
        if changed {
            self.recompute();
        }
    }
}

/// PreFilter: `None` when the pod has no `DoNotSchedule` constraints.
pub fn prefilter<'a>(
    pod: &PodInfo,
    nodes: impl Iterator<Item = &'a NodeInfo>,
) -> Option<FilterState> {
    let constraints: Vec<SpreadConstraint> =
        pod.spread.iter().filter(|c| c.hard).cloned().collect();
    if constraints.is_empty() {
        return None;
    }
    let mut pair_counts: HashMap<(String, String), i64> = HashMap::new();
    for node in nodes {
        if node.node.is_none() || !has_all_keys(node, &constraints) {
            continue;
        }
        let mut per_node: HashMap<(String, String), i64> = HashMap::new();
        for c in &constraints {
            if !node_included(pod, node, c) {
                continue;
            }
            let v = node
                .labels
                .get(&c.topology_key)
                .cloned()
                .unwrap_or_default();
            per_node.insert(
                (c.topology_key.clone(), v),
                count_matching(node, &c.selector, &pod.namespace),
            );
        }
        for (k, n) in per_node {
            *pair_counts.entry(k).or_insert(0) += n;
        }
    }
    let mut s = FilterState {
        constraints,
        pair_counts,
        min_by_key: HashMap::new(),
        domains_by_key: HashMap::new(),
    };
    s.recompute();
    Some(s)
}

/// Filter: `matching pods in the node's domain + self match - global minimum <= maxSkew`
/// for every constraint; the global minimum is 0 while fewer than minDomains domains exist.
pub fn filter(pod: &PodInfo, node: &NodeInfo, state: &FilterState) -> FilterResult {
    for c in &state.constraints {
        let Some(value) = node.labels.get(&c.topology_key) else {
            return Err(Status::unresolvable(
                names::POD_TOPOLOGY_SPREAD,
                ERR_NODE_LABEL_NOT_MATCH,
            ));
        };
        let Some(&min) = state.min_by_key.get(&c.topology_key) else {
            continue;
        };
        let domains = state
            .domains_by_key
            .get(&c.topology_key)
            .copied()
            .unwrap_or(0);
        let min = if domains < c.min_domains { 0 } else { min };
        let self_match = i64::from(c.selector.matches(&pod.labels));
        let matching = state
            .pair_counts
            .get(&(c.topology_key.clone(), value.clone()))
            .copied()
            .unwrap_or(0);
        if matching + self_match - min > c.max_skew {
            return Err(Status::unschedulable(
                names::POD_TOPOLOGY_SPREAD,
                ERR_CONSTRAINTS_NOT_MATCH,
            ));
        }
    }
    Ok(())
}

/// PreScore state for `ScheduleAnyway` constraints.
#[derive(Debug, Clone)]
pub struct ScoreState {
    constraints: Vec<SpreadConstraint>,
    ignored: HashSet<String>,
    counts: Vec<HashMap<String, i64>>,
    weights: Vec<f64>,
}

/// PreScore: `None` (skip) when the pod has no `ScheduleAnyway` constraints.
pub fn prescore(pod: &PodInfo, feasible: &[&NodeInfo], all: &[NodeInfo]) -> Option<ScoreState> {
    let constraints: Vec<SpreadConstraint> =
        pod.spread.iter().filter(|c| !c.hard).cloned().collect();
    if constraints.is_empty() || all.is_empty() {
        return None;
    }
    let mut ignored = HashSet::new();
    let mut counts: Vec<HashMap<String, i64>> = vec![HashMap::new(); constraints.len()];
    for node in feasible {
        if !has_all_keys(node, &constraints) {
            ignored.insert(node.name.clone());
            continue;
        }
        for (i, c) in constraints.iter().enumerate() {
            if c.topology_key == HOSTNAME {
                continue;
            }
            let v = node
                .labels
                .get(&c.topology_key)
                .cloned()
                .unwrap_or_default();
            counts[i].entry(v).or_insert(0);
        }
    }
    let weights = constraints
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let size = if c.topology_key == HOSTNAME {
                feasible.len() - ignored.len()
            } else {
                counts[i].len()
            };
            ((size + 2) as f64).ln()
        })
        .collect();
    for node in all {
        if node.node.is_none() || !has_all_keys(node, &constraints) {
            continue;
        }
        for (i, c) in constraints.iter().enumerate() {
            if !node_included(pod, node, c) {
                continue;
            }
            let v = node
                .labels
                .get(&c.topology_key)
                .cloned()
                .unwrap_or_default();
            if let Some(n) = counts[i].get_mut(&v) {
                *n += count_matching(node, &c.selector, &pod.namespace);
            }
        }
    }
    Some(ScoreState {
        constraints,
        ignored,
        counts,
        weights,
    })
}

/// Score (raw): `Σ count * ln(domains + 2) + (maxSkew - 1)` over the constraints; lower is
/// better (normalized reversed). `None` for ignored nodes.
pub fn score(pod: &PodInfo, node: &NodeInfo, s: &ScoreState) -> Option<i64> {
    if s.ignored.contains(&node.name) {
        return None;
    }
    let mut score = 0.0;
    for (i, c) in s.constraints.iter().enumerate() {
        if let Some(v) = node.labels.get(&c.topology_key) {
            let cnt = if c.topology_key == HOSTNAME {
                count_matching(node, &c.selector, &pod.namespace)
            } else {
                s.counts[i].get(v).copied().unwrap_or(0)
            };
            score += cnt as f64 * s.weights[i] + (c.max_skew - 1) as f64;
        }
    }
    Some(score.round() as i64)
}

/// NormalizeScore: `100 * (max + min - score) / max`; ignored nodes get 0.
pub fn normalize(raw: &[Option<i64>]) -> Vec<i64> {
    let mut min = i64::MAX;
    let mut max = 0;
    for s in raw.iter().flatten() {
        min = min.min(*s);
        max = max.max(*s);
    }
    raw.iter()
        .map(|s| match s {
            None => 0,
            Some(_) if max == 0 => MAX_NODE_SCORE,
            Some(s) => MAX_NODE_SCORE * (max + min - s) / max,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use k8s_openapi::api::core::v1::TopologySpreadConstraint;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    use super::*;
    use crate::plugins::Code;
    use crate::types::testutil::*;

    fn spread_pod(
        name: &str,
        key: &str,
        skew: i32,
        when: &str,
        min_domains: Option<i32>,
    ) -> Arc<PodInfo> {
        let mut p = with_labels(pod(name, &[]), &[("app", "web")]);
        p.spec.as_mut().expect("spec").topology_spread_constraints =
            Some(vec![TopologySpreadConstraint {
                max_skew: skew,
                topology_key: key.into(),
                when_unsatisfiable: when.into(),
                label_selector: Some(LabelSelector {
                    match_labels: Some([("app".to_string(), "web".to_string())].into()),
                    match_expressions: None,
                }),
                min_domains,
                ..Default::default()
            }]);
        info(p)
    }

    fn cluster() -> Vec<NodeInfo> {
        // zone a: n1 (2 web pods), n2; zone b: n3 (1 web pod); n4 has no zone label.
        let mut nodes: Vec<NodeInfo> = [("n1", "a"), ("n2", "a"), ("n3", "b")]
            .iter()
            .map(|(n, z)| NodeInfo::new(Arc::new(node(n, &[], &[("zone", z)]))))
            .collect();
        nodes.push(NodeInfo::new(Arc::new(node("n4", &[], &[]))));
        let web = |n: &str| info(with_labels(pod(n, &[]), &[("app", "web")]));
        nodes[0].add_pod(web("w1"));
        nodes[0].add_pod(web("w2"));
        nodes[2].add_pod(web("w3"));
        // A pod in another namespace and one with other labels do not count.
        let mut other = with_labels(pod("o", &[]), &[("app", "web")]);
        other.metadata.namespace = Some("other".into());
        nodes[2].add_pod(info(other));
        nodes[2].add_pod(info(with_labels(pod("db", &[]), &[("app", "db")])));
        nodes
    }

    #[test]
    fn filter_max_skew() {
        let nodes = cluster();
        let p = spread_pod("p", "zone", 1, "DoNotSchedule", None);
        let st = prefilter(&p, nodes.iter()).expect("state");
        // zone a has 2, zone b 1: placing in a gives skew 3-1 = 2 > 1.
        let err = filter(&p, &nodes[0], &st).expect_err("skew");
        assert_eq!(err.reasons, vec![ERR_CONSTRAINTS_NOT_MATCH]);
        assert_eq!(err.code, Code::Unschedulable);
        assert!(filter(&p, &nodes[2], &st).is_ok());
        let err = filter(&p, &nodes[3], &st).expect_err("label");
        assert_eq!(err.reasons, vec![ERR_NODE_LABEL_NOT_MATCH]);
        assert_eq!(err.code, Code::UnschedulableAndUnresolvable);
        // maxSkew 2 allows zone a.
        let p2 = spread_pod("p", "zone", 2, "DoNotSchedule", None);
        let st2 = prefilter(&p2, nodes.iter()).expect("state");
        assert!(filter(&p2, &nodes[0], &st2).is_ok());
    }

    #[test]
    fn min_domains() {
        let nodes = cluster();
        // Two domains exist; minDomains 3 makes the global minimum 0: zone b (1 + 1 - 0 = 2)
        // now exceeds maxSkew 1 as well.
        let p = spread_pod("p", "zone", 1, "DoNotSchedule", Some(3));
        let st = prefilter(&p, nodes.iter()).expect("state");
        assert!(filter(&p, &nodes[2], &st).is_err());
    }

    #[test]
    fn node_affinity_policy_honored() {
        let nodes = cluster();
        let mut p = (*spread_pod("p", "zone", 1, "DoNotSchedule", None)).clone();
        // Only zone b nodes match the pod's selector: zone a is not a domain, so min = 1.
        p.required_node_affinity.node_selector = [("zone".to_string(), "b".to_string())].into();
        let st = prefilter(&p, nodes.iter()).expect("state");
        assert!(filter(&p, &nodes[2], &st).is_ok());
    }

    #[test]
    fn update_with_pod_for_preemption() {
        let nodes = cluster();
        let p = spread_pod("p", "zone", 1, "DoNotSchedule", None);
        let mut st = prefilter(&p, nodes.iter()).expect("state");
        let victim = nodes[0].pods[0].clone();
        st.update_with_pod(&victim, &p, &nodes[0], -1);
        // zone a now has 1 = zone b: 1 + 1 - 1 = 1 fits.
        assert!(filter(&p, &nodes[0], &st).is_ok());
    }

    #[test]
    fn scoring() {
        let nodes = cluster();
        let p = spread_pod("p", "zone", 1, "ScheduleAnyway", None);
        let feasible: Vec<&NodeInfo> = nodes.iter().collect();
        let st = prescore(&p, &feasible, &nodes).expect("state");
        let raw: Vec<Option<i64>> = feasible.iter().map(|n| score(&p, n, &st)).collect();
        // weight ln(2 + 2) = 1.386: zone a 2 → 3, zone b 1 → 1, n4 ignored.
        assert_eq!(raw, vec![Some(3), Some(3), Some(1), None]);
        assert_eq!(normalize(&raw), vec![33, 33, 100, 0]);
        assert!(
            prescore(
                &spread_pod("p", "zone", 1, "DoNotSchedule", None),
                &feasible,
                &nodes
            )
            .is_none()
        );
    }
}
