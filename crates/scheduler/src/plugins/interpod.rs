//! InterPodAffinity: required pod affinity / anti-affinity of the incoming pod, required
//! anti-affinity of existing pods (filter), and preferred terms of both plus existing pods'
//! required affinity with the hard weight 1 (score).

use std::collections::HashMap;

use super::{FilterResult, MAX_NODE_SCORE, Status, names};
use crate::selector::{Labels, Selector};
use crate::types::{AffinityTerm, NodeInfo, PodInfo};

/// Reason when required pod affinity is not met.
pub const ERR_AFFINITY: &str = "node(s) didn't match pod affinity rules";
/// Reason when the pod's required anti-affinity is violated.
pub const ERR_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
/// Reason when an existing pod's required anti-affinity is violated.
pub const ERR_EXISTING_ANTI_AFFINITY: &str =
    "node(s) didn't satisfy existing pods anti-affinity rules";

type Pair = (String, String);

/// `mergeAffinityTermNamespacesIfNotEmpty`: resolve the incoming pod's namespace selector to
/// names, so its terms match without namespace labels.
fn merge_namespaces(
    terms: &[AffinityTerm],
    namespaces: &HashMap<String, Labels>,
) -> Vec<AffinityTerm> {
    terms
        .iter()
        .map(|t| {
            let mut t = t.clone();
            if !t.namespace_selector.nothing {
                for (name, labels) in namespaces {
                    if t.namespace_selector.matches(labels) && !t.namespaces.contains(name) {
                        t.namespaces.push(name.clone());
                    }
                }
                t.namespace_selector = Selector::nothing();
            }
            t
        })
        .collect()
}

fn matches_all(terms: &[AffinityTerm], pod: &PodInfo) -> bool {
    !terms.is_empty() && terms.iter().all(|t| t.matches(pod, None))
}

/// PreFilter state.
#[derive(Debug, Clone)]
pub struct FilterState {
    required_affinity: Vec<AffinityTerm>,
    required_anti_affinity: Vec<AffinityTerm>,
    ns_labels: Labels,
    affinity_counts: HashMap<Pair, i64>,
    anti_affinity_counts: HashMap<Pair, i64>,
    existing_anti_affinity_counts: HashMap<Pair, i64>,
    self_matches: bool,
    incoming_namespace: String,
    incoming_labels: Labels,
}

fn bump(counts: &mut HashMap<Pair, i64>, node: &NodeInfo, key: &str, delta: i64) {
    if let Some(v) = node.labels.get(key) {
        *counts.entry((key.to_string(), v.clone())).or_insert(0) += delta;
    }
}

impl FilterState {
    /// `updateWithPod`: `existing` added to (1) or removed from (-1) `node`.
    pub fn update_with_pod(&mut self, existing: &PodInfo, node: &NodeInfo, delta: i64) {
        for t in &existing.required_anti_affinity {
            // Does the existing pod's term select the incoming pod?
            let in_ns = t.namespaces.contains(&self.incoming_namespace)
                || t.namespace_selector.matches(&self.ns_labels);
            if in_ns && t.selector.matches(&self.incoming_labels) {
                bump(
                    &mut self.existing_anti_affinity_counts,
                    node,
                    &t.topology_key,
                    delta,
                );
            }
        }
        if matches_all(&self.required_affinity, existing) {
            for t in &self.required_affinity {
                bump(&mut self.affinity_counts, node, &t.topology_key, delta);
            }
        }
        for t in &self.required_anti_affinity {
            if t.matches(existing, None) {
                bump(&mut self.anti_affinity_counts, node, &t.topology_key, delta);
            }
        }
    }
}

/// PreFilter: `None` (skip) when neither the pod nor any existing pod has required terms
/// that concern it.
pub fn prefilter(
    pod: &PodInfo,
    nodes: &[NodeInfo],
    namespaces: &HashMap<String, Labels>,
) -> Option<FilterState> {
    let ns_labels = namespaces.get(&pod.namespace).cloned().unwrap_or_default();
    let mut existing: HashMap<Pair, i64> = HashMap::new();
    for node in nodes {
        if node.pods_with_required_anti_affinity == 0 || node.node.is_none() {
            continue;
        }
        for p in &node.pods {
            for t in &p.required_anti_affinity {
                if t.matches(pod, Some(&ns_labels)) {
                    bump(&mut existing, node, &t.topology_key, 1);
                }
            }
        }
    }
    if existing.is_empty()
        && pod.required_affinity.is_empty()
        && pod.required_anti_affinity.is_empty()
    {
        return None;
    }
    let required_affinity = merge_namespaces(&pod.required_affinity, namespaces);
    let required_anti_affinity = merge_namespaces(&pod.required_anti_affinity, namespaces);
    let mut affinity_counts = HashMap::new();
    let mut anti_affinity_counts = HashMap::new();
    if !required_affinity.is_empty() || !required_anti_affinity.is_empty() {
        for node in nodes.iter().filter(|n| n.node.is_some()) {
            for p in &node.pods {
                if matches_all(&required_affinity, p) {
                    for t in &required_affinity {
                        bump(&mut affinity_counts, node, &t.topology_key, 1);
                    }
                }
                for t in &required_anti_affinity {
                    if t.matches(p, None) {
                        bump(&mut anti_affinity_counts, node, &t.topology_key, 1);
                    }
                }
            }
        }
    }
    let self_matches = matches_all(&required_affinity, pod);
    Some(FilterState {
        required_affinity,
        required_anti_affinity,
        ns_labels,
        affinity_counts,
        anti_affinity_counts,
        existing_anti_affinity_counts: existing,
        self_matches,
        incoming_namespace: pod.namespace.clone(),
        incoming_labels: pod.labels.clone(),
    })
}

/// Filter: pod affinity (all topology keys present and matching pods in the domain, or the
/// first pod of a self-affine group), pod anti-affinity, existing pods' anti-affinity.
pub fn filter(node: &NodeInfo, s: &FilterState) -> FilterResult {
    // satisfyPodAffinity
    let mut pods_exist = true;
    for t in &s.required_affinity {
        match node.labels.get(&t.topology_key) {
            Some(v) => {
                if s.affinity_counts
                    .get(&(t.topology_key.clone(), v.clone()))
                    .copied()
                    .unwrap_or(0)
                    <= 0
                {
                    pods_exist = false;
                }
            }
            None => {
                return Err(Status::unresolvable(
                    names::INTER_POD_AFFINITY,
                    ERR_AFFINITY,
                ));
            }
        }
    }
    if !(pods_exist || s.affinity_counts.is_empty() && s.self_matches) {
        return Err(Status::unresolvable(
            names::INTER_POD_AFFINITY,
            ERR_AFFINITY,
        ));
    }
    // satisfyPodAntiAffinity
    if !s.anti_affinity_counts.is_empty() {
        for t in &s.required_anti_affinity {
            if let Some(v) = node.labels.get(&t.topology_key)
                && s.anti_affinity_counts
                    .get(&(t.topology_key.clone(), v.clone()))
                    .copied()
                    .unwrap_or(0)
                    > 0
            {
                return Err(Status::unschedulable(
                    names::INTER_POD_AFFINITY,
                    ERR_ANTI_AFFINITY,
                ));
            }
        }
    }
    // satisfyExistingPodsAntiAffinity
    if !s.existing_anti_affinity_counts.is_empty() {
        for (k, v) in &node.labels {
            if s.existing_anti_affinity_counts
                .get(&(k.clone(), v.clone()))
                .copied()
                .unwrap_or(0)
                > 0
            {
                return Err(Status::unschedulable(
                    names::INTER_POD_AFFINITY,
                    ERR_EXISTING_ANTI_AFFINITY,
                ));
            }
        }
    }
    Ok(())
}

/// PreScore state: accumulated weights per topology key and value.
#[derive(Debug, Clone, Default)]
pub struct ScoreState {
    topology_score: HashMap<String, HashMap<String, i64>>,
}

fn process_term(
    m: &mut HashMap<String, HashMap<String, i64>>,
    t: &AffinityTerm,
    weight: i64,
    pod_to_check: &PodInfo,
    ns_labels: Option<&Labels>,
    node: &NodeInfo,
    multiplier: i64,
) {
    if node.labels.is_empty() {
        return;
    }
    if t.matches(pod_to_check, ns_labels)
        && let Some(v) = node.labels.get(&t.topology_key)
    {
        *m.entry(t.topology_key.clone())
            .or_default()
            .entry(v.clone())
            .or_insert(0) += weight * multiplier;
    }
}

/// PreScore: `None` (skip) when no term contributes anything.
pub fn prescore(
    pod: &PodInfo,
    nodes: &[NodeInfo],
    namespaces: &HashMap<String, Labels>,
) -> Option<ScoreState> {
    let has_constraints =
        !pod.preferred_affinity.is_empty() || !pod.preferred_anti_affinity.is_empty();
    let preferred_affinity = merge_namespaces(&pod.preferred_affinity, namespaces);
    let preferred_anti = merge_namespaces(&pod.preferred_anti_affinity, namespaces);
    let ns_labels = namespaces.get(&pod.namespace).cloned().unwrap_or_default();
    let mut m: HashMap<String, HashMap<String, i64>> = HashMap::new();
    for node in nodes {
        if node.node.is_none() || (!has_constraints && node.pods_with_affinity == 0) {
            continue;
        }
        for existing in &node.pods {
            if !has_constraints && !existing.has_pod_affinity {
                continue;
            }
            for t in &preferred_affinity {
                process_term(&mut m, t, t.weight, existing, None, node, 1);
            }
            for t in &preferred_anti {
                process_term(&mut m, t, t.weight, existing, None, node, -1);
            }
            for t in &existing.required_affinity {
                process_term(&mut m, t, 1, pod, Some(&ns_labels), node, 1);
            }
            for t in &existing.preferred_affinity {
                process_term(&mut m, t, t.weight, pod, Some(&ns_labels), node, 1);
            }
            for t in &existing.preferred_anti_affinity {
                process_term(&mut m, t, t.weight, pod, Some(&ns_labels), node, -1);
            }
        }
    }
    if m.is_empty() {
        None
    } else {
        Some(ScoreState { topology_score: m })
    }
}

/// Score (raw): the sum of the topology scores of the node's labels.
pub fn score(node: &NodeInfo, s: &ScoreState) -> i64 {
    s.topology_score
        .iter()
        .filter_map(|(k, values)| node.labels.get(k).and_then(|v| values.get(v)))
        .sum()
}

/// NormalizeScore: min–max scaling (with 0 inside the range) to `0..=100`.
pub fn normalize(scores: &mut [i64]) {
    let mut max = 0i64;
    let mut min = 0i64;
    for s in scores.iter() {
        max = max.max(*s);
        min = min.min(*s);
    }
    let diff = max - min;
    for s in scores.iter_mut() {
        *s = if diff > 0 {
            (MAX_NODE_SCORE as f64 * ((*s - min) as f64 / diff as f64)) as i64
        } else {
            0
        };
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use k8s_openapi::api::core::v1::{
        Affinity, Pod, PodAffinity, PodAffinityTerm, PodAntiAffinity, WeightedPodAffinityTerm,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    use super::*;
    use crate::plugins::Code;
    use crate::types::testutil::*;

    fn term(app: &str, key: &str) -> PodAffinityTerm {
        PodAffinityTerm {
            label_selector: Some(LabelSelector {
                match_labels: Some([("app".to_string(), app.to_string())].into()),
                match_expressions: None,
            }),
            topology_key: key.into(),
            ..Default::default()
        }
    }

    fn with_affinity(mut p: Pod, aff: Affinity) -> Pod {
        p.spec.as_mut().expect("spec").affinity = Some(aff);
        p
    }

    fn nodes() -> Vec<NodeInfo> {
        [("n1", "a"), ("n2", "a"), ("n3", "b")]
            .iter()
            .map(|(n, z)| NodeInfo::new(Arc::new(node(n, &[], &[("zone", z)]))))
            .collect()
    }

    #[test]
    fn anti_affinity_of_incoming_pod() {
        let mut ns = nodes();
        ns[0].add_pod(info(with_labels(pod("db", &[]), &[("app", "db")])));
        let p = info(with_affinity(
            with_labels(pod("p", &[]), &[("app", "web")]),
            Affinity {
                pod_anti_affinity: Some(PodAntiAffinity {
                    required_during_scheduling_ignored_during_execution: Some(vec![term(
                        "db", "zone",
                    )]),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ));
        let st = prefilter(&p, &ns, &HashMap::new()).expect("state");
        let err = filter(&ns[1], &st).expect_err("same zone as db");
        assert_eq!(err.reasons, vec![ERR_ANTI_AFFINITY]);
        assert_eq!(err.code, Code::Unschedulable);
        assert!(filter(&ns[2], &st).is_ok());
    }

    #[test]
    fn existing_pods_anti_affinity() {
        let mut ns = nodes();
        ns[2].add_pod(info(with_affinity(
            with_labels(pod("lonely", &[]), &[("app", "lonely")]),
            Affinity {
                pod_anti_affinity: Some(PodAntiAffinity {
                    required_during_scheduling_ignored_during_execution: Some(vec![term(
                        "web",
                        "kubernetes.io/hostname",
                    )]),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )));
        let p = info(with_labels(pod("p", &[]), &[("app", "web")]));
        let st = prefilter(&p, &ns, &HashMap::new()).expect("state");
        let err = filter(&ns[2], &st).expect_err("existing anti-affinity");
        assert_eq!(err.reasons, vec![ERR_EXISTING_ANTI_AFFINITY]);
        assert!(filter(&ns[0], &st).is_ok());
        // A pod the term does not select is not affected.
        assert!(prefilter(&info(pod("q", &[])), &ns, &HashMap::new()).is_none());
    }

    #[test]
    fn required_affinity() {
        let mut ns = nodes();
        let aff = Affinity {
            pod_affinity: Some(PodAffinity {
                required_during_scheduling_ignored_during_execution: Some(vec![term(
                    "cache", "zone",
                )]),
                ..Default::default()
            }),
            ..Default::default()
        };
        // No cache pod anywhere and the pod does not match itself: nowhere.
        let p = info(with_affinity(
            with_labels(pod("p", &[]), &[("app", "web")]),
            aff.clone(),
        ));
        let st = prefilter(&p, &ns, &HashMap::new()).expect("state");
        let err = filter(&ns[0], &st).expect_err("no cache pod");
        assert_eq!(err.reasons, vec![ERR_AFFINITY]);
        assert_eq!(err.code, Code::UnschedulableAndUnresolvable);
        // The first pod of a self-affine group may go anywhere.
        let first = info(with_affinity(
            with_labels(pod("c", &[]), &[("app", "cache")]),
            aff.clone(),
        ));
        let st = prefilter(&first, &ns, &HashMap::new()).expect("state");
        assert!(filter(&ns[0], &st).is_ok());
        // With a cache pod in zone b, only zone b nodes pass.
        ns[2].add_pod(info(with_labels(pod("c1", &[]), &[("app", "cache")])));
        let st = prefilter(&p, &ns, &HashMap::new()).expect("state");
        assert!(filter(&ns[0], &st).is_err());
        assert!(filter(&ns[2], &st).is_ok());
        // Preemption removing the cache pod updates the counts.
        let mut st2 = st.clone();
        let c1 = ns[2].pods[0].clone();
        st2.update_with_pod(&c1, &ns[2], -1);
        assert!(filter(&ns[2], &st2).is_err());
    }

    #[test]
    fn namespace_selector() {
        let mut ns = nodes();
        let mut other = with_labels(pod("db", &[]), &[("app", "db")]);
        other.metadata.namespace = Some("prod".into());
        ns[0].add_pod(info(other));
        let mut t = term("db", "kubernetes.io/hostname");
        t.namespace_selector = Some(LabelSelector {
            match_labels: Some([("env".to_string(), "prod".to_string())].into()),
            match_expressions: None,
        });
        let p = info(with_affinity(
            pod("p", &[]),
            Affinity {
                pod_anti_affinity: Some(PodAntiAffinity {
                    required_during_scheduling_ignored_during_execution: Some(vec![t]),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ));
        let namespaces: HashMap<String, Labels> = [
            (
                "prod".to_string(),
                [("env".to_string(), "prod".to_string())].into(),
            ),
            ("default".to_string(), Labels::new()),
        ]
        .into();
        let st = prefilter(&p, &ns, &namespaces).expect("state");
        assert!(filter(&ns[0], &st).is_err());
        assert!(filter(&ns[1], &st).is_ok());
    }

    #[test]
    fn preferred_scoring() {
        let mut ns = nodes();
        ns[0].add_pod(info(with_labels(pod("cache", &[]), &[("app", "cache")])));
        ns[2].add_pod(info(with_labels(pod("noisy", &[]), &[("app", "noisy")])));
        let p = info(with_affinity(
            pod("p", &[]),
            Affinity {
                pod_affinity: Some(PodAffinity {
                    preferred_during_scheduling_ignored_during_execution: Some(vec![
                        WeightedPodAffinityTerm {
                            weight: 10,
                            pod_affinity_term: term("cache", "zone"),
                        },
                    ]),
                    ..Default::default()
                }),
                pod_anti_affinity: Some(PodAntiAffinity {
                    preferred_during_scheduling_ignored_during_execution: Some(vec![
                        WeightedPodAffinityTerm {
                            weight: 5,
                            pod_affinity_term: term("noisy", "kubernetes.io/hostname"),
                        },
                    ]),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ));
        let st = prescore(&p, &ns, &HashMap::new()).expect("state");
        let mut raw: Vec<i64> = ns.iter().map(|n| score(n, &st)).collect();
        assert_eq!(raw, vec![10, 10, -5]);
        normalize(&mut raw);
        assert_eq!(raw, vec![100, 100, 0]);
        assert!(prescore(&info(pod("q", &[])), &ns, &HashMap::new()).is_none());
    }
}
