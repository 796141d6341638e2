//! One scheduling cycle of the default profile: PreFilter → Filter (over a rotating window of
//! nodes, stopping at `numFeasibleNodesToFind`) → Score (normalized, weighted) → select host,
//! and the FitError message when no node fits.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use rand::Rng as _;

use crate::plugins::{
    Code, FilterResult, Status, basic, default_normalize, fit, interpod, names, spread,
};
use crate::selector::Labels;
use crate::types::{NodeInfo, PodInfo};

/// `minFeasibleNodesToFind`.
pub const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// `minFeasibleNodesPercentageToFind`.
pub const MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND: usize = 5;

/// Score plugin weights of the default profile.
pub mod weights {
    /// TaintToleration.
    pub const TAINT_TOLERATION: i64 = 3;
    /// NodeAffinity.
    pub const NODE_AFFINITY: i64 = 2;
    /// NodeResourcesFit (LeastAllocated).
    pub const NODE_RESOURCES_FIT: i64 = 1;
    /// PodTopologySpread.
    pub const POD_TOPOLOGY_SPREAD: i64 = 2;
    /// InterPodAffinity.
    pub const INTER_POD_AFFINITY: i64 = 2;
    /// NodeResourcesBalancedAllocation.
    pub const BALANCED_ALLOCATION: i64 = 1;
}

/// `numFeasibleNodesToFind`: every node below 100 nodes; otherwise `percentage` of them
/// (adaptive `50 - nodes/125`, at least 5 %, when 0), never fewer than 100.
pub fn num_feasible_nodes_to_find(percentage: u32, num_all_nodes: usize) -> usize {
    if num_all_nodes < MIN_FEASIBLE_NODES_TO_FIND {
        return num_all_nodes;
    }
    let mut pct = percentage as i64;
    if pct == 0 {
        pct = 50 - (num_all_nodes as i64) / 125;
        if pct < MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND as i64 {
            pct = MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND as i64;
        }
    }
    let n = (num_all_nodes as i64 * pct / 100) as usize;
    n.max(MIN_FEASIBLE_NODES_TO_FIND)
}

/// What the cycle reads besides the pod: nodes (with their pods), namespace labels (for
/// affinity namespace selectors) and nominated pods per node.
#[derive(Debug, Clone, Copy)]
pub struct Cluster<'a> {
    /// Every node info (ghosts without a node object are skipped).
    pub nodes: &'a [NodeInfo],
    /// Namespace name → labels.
    pub namespaces: &'a HashMap<String, Labels>,
    /// Node name → pods nominated to it (`status.nominatedNodeName`).
    pub nominated: &'a HashMap<String, Vec<Arc<PodInfo>>>,
    /// Nodes that exist (have a node object).
    pub num_nodes: usize,
    /// Pods with pod affinity or anti-affinity, cluster-wide.
    pub pods_with_affinity: usize,
    /// Pods with required anti-affinity, cluster-wide.
    pub pods_with_required_anti_affinity: usize,
}

impl<'a> Cluster<'a> {
    /// A view over `nodes`, counting what the scheduler otherwise keeps up to date.
    pub fn new(
        nodes: &'a [NodeInfo],
        namespaces: &'a HashMap<String, Labels>,
        nominated: &'a HashMap<String, Vec<Arc<PodInfo>>>,
    ) -> Cluster<'a> {
        Cluster {
            nodes,
            namespaces,
            nominated,
            num_nodes: nodes.iter().filter(|n| n.node.is_some()).count(),
            pods_with_affinity: nodes.iter().map(|n| n.pods_with_affinity).sum(),
            pods_with_required_anti_affinity: nodes
                .iter()
                .map(|n| n.pods_with_required_anti_affinity)
                .sum(),
        }
    }

    /// Nodes that exist (have a node object).
    pub fn num_nodes(&self) -> usize {
        self.num_nodes
    }
}

/// PreFilter results the filters read (`CycleState`).
#[derive(Debug, Clone, Default)]
pub struct CycleState {
    /// PodTopologySpread (DoNotSchedule), when the pod has such constraints.
    pub spread: Option<spread::FilterState>,
    /// InterPodAffinity, unless skipped.
    pub interpod: Option<interpod::FilterState>,
}

impl CycleState {
    /// Runs the PreFilter extension points.
    pub fn prefilter(pod: &PodInfo, cluster: &Cluster<'_>) -> CycleState {
        CycleState {
            spread: spread::prefilter(pod, cluster.nodes.iter()),
            interpod: if cluster.pods_with_required_anti_affinity == 0
                && pod.required_affinity.is_empty()
                && pod.required_anti_affinity.is_empty()
            {
                None
            } else {
                interpod::prefilter(pod, cluster.nodes, cluster.namespaces)
            },
        }
    }

    /// PreFilterExtensions.AddPod.
    pub fn add_pod(&mut self, added: &PodInfo, preemptor: &PodInfo, node: &NodeInfo) {
        if let Some(s) = self.spread.as_mut() {
            s.update_with_pod(added, preemptor, node, 1);
        }
        if let Some(s) = self.interpod.as_mut() {
            s.update_with_pod(added, node, 1);
        }
    }

    /// PreFilterExtensions.RemovePod.
    pub fn remove_pod(&mut self, removed: &PodInfo, preemptor: &PodInfo, node: &NodeInfo) {
        if let Some(s) = self.spread.as_mut() {
            s.update_with_pod(removed, preemptor, node, -1);
        }
        if let Some(s) = self.interpod.as_mut() {
            s.update_with_pod(removed, node, -1);
        }
    }
}

/// The filters in the default profile's order; the first rejection wins.
pub fn run_filters(pod: &PodInfo, node: &NodeInfo, state: &CycleState) -> FilterResult {
    basic::node_unschedulable(pod, node)?;
    basic::node_name(pod, node)?;
    basic::taint_toleration(pod, node)?;
    basic::node_affinity(pod, node)?;
    basic::node_ports(pod, node)?;
    fit::fit(pod, node)?;
    if let Some(s) = &state.spread {
        spread::filter(pod, node, s)?;
    }
    if let Some(s) = &state.interpod {
        interpod::filter(node, s)?;
    }
    Ok(())
}

/// `RunFilterPluginsWithNominatedPods`: the pod must fit with the node's nominated pods of
/// equal or higher priority added, and without them.
pub fn run_filters_with_nominated(
    pod: &PodInfo,
    node: &NodeInfo,
    state: &CycleState,
    nominated: Option<&Vec<Arc<PodInfo>>>,
) -> FilterResult {
    let others: Vec<&Arc<PodInfo>> = nominated
        .into_iter()
        .flatten()
        .filter(|p| p.uid != pod.uid && p.priority >= pod.priority)
        .collect();
    if others.is_empty() {
        return run_filters(pod, node, state);
    }
    let mut with = node.clone();
    let mut st = state.clone();
    for p in others {
        with.add_pod(p.clone());
        st.add_pod(p, pod, &with);
    }
    run_filters(pod, &with, &st)?;
    run_filters(pod, node, state)
}

/// Why no node fit (`framework.Diagnosis`).
#[derive(Debug, Clone, Default)]
pub struct Diagnosis {
    /// Status of every evaluated node that was rejected.
    pub statuses: HashMap<String, Status>,
    /// Status of nodes a PreFilter excluded (not in `statuses`).
    pub absent: Option<Status>,
    /// A PreFilter rejected the pod outright.
    pub prefilter_msg: Option<String>,
    /// Plugins that rejected nodes (queueing hints).
    pub unschedulable_plugins: BTreeSet<&'static str>,
    /// The PostFilter (preemption) message, when preemption did not help.
    pub post_filter_msg: Option<String>,
}

/// `framework.FitError`: the pod fits on none of `num_all_nodes` nodes.
#[derive(Debug, Clone)]
pub struct FitError {
    /// Nodes in the snapshot.
    pub num_all_nodes: usize,
    /// Per-node reasons.
    pub diagnosis: Diagnosis,
}

impl FitError {
    /// The status of `node` (explicit, or the absent-node status).
    pub fn status_of(&self, node: &str) -> Option<&Status> {
        self.diagnosis
            .statuses
            .get(node)
            .or(self.diagnosis.absent.as_ref())
    }

    /// Upstream's message: `0/N nodes are available: <count reason>, … .` (reasons sorted as
    /// strings) followed by the PostFilter message.
    pub fn message(&self) -> String {
        let d = &self.diagnosis;
        let mut msg = format!("0/{} nodes are available:", self.num_all_nodes);
        if let Some(p) = &d.prefilter_msg {
            msg.push_str(&format!(" {p}."));
        } else {
            let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
            for s in d.statuses.values() {
                for r in &s.reasons {
                    *reasons.entry(r.as_str()).or_insert(0) += 1;
                }
            }
            if d.statuses.len() < self.num_all_nodes
                && let Some(a) = &d.absent
            {
                for r in &a.reasons {
                    *reasons.entry(r.as_str()).or_insert(0) +=
                        self.num_all_nodes - d.statuses.len();
                }
            }
            let mut hist: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
            hist.sort();
            if !hist.is_empty() {
                msg.push_str(&format!(" {}.", hist.join(", ")));
            }
        }
        if let Some(p) = &d.post_filter_msg {
            msg.push_str(&format!(" {p}"));
        }
        msg
    }
}

/// A successful cycle.
#[derive(Debug, Clone)]
pub struct ScheduleResult {
    /// The chosen node.
    pub node: String,
    /// Nodes the filters ran on.
    pub evaluated: usize,
    /// Nodes that passed.
    pub feasible: usize,
}

/// Why a cycle failed.
#[derive(Debug, Clone)]
pub enum ScheduleError {
    /// The cluster has no nodes (`ErrNoNodesAvailable`).
    NoNodes,
    /// No node fits.
    Fit(FitError),
}

impl ScheduleError {
    /// Upstream's error text.
    pub fn message(&self) -> String {
        match self {
            ScheduleError::NoNodes => "no nodes available to schedule pods".into(),
            ScheduleError::Fit(f) => f.message(),
        }
    }
}

/// The scheduling algorithm with its rotating start index.
#[derive(Debug, Default)]
pub struct Algorithm {
    /// `nextStartNodeIndex`.
    pub next_start: usize,
    /// `percentageOfNodesToScore` (0 = adaptive).
    pub percentage_of_nodes_to_score: u32,
}

impl Algorithm {
    /// `schedulePod`: filters then scores; `Err` with the diagnosis when nothing fits.
    pub fn schedule(
        &mut self,
        pod: &PodInfo,
        cluster: &Cluster<'_>,
    ) -> Result<ScheduleResult, ScheduleError> {
        let num_all = cluster.num_nodes();
        if num_all == 0 {
            return Err(ScheduleError::NoNodes);
        }
        let state = CycleState::prefilter(pod, cluster);
        let mut diagnosis = Diagnosis::default();

        // NodeAffinity's PreFilterResult (matchFields metadata.name).
        let allowed = pod.required_node_affinity.prefilter_node_names();
        if allowed.is_some() {
            diagnosis.absent = Some(Status::unresolvable(
                names::NODE_AFFINITY,
                format!(
                    "node(s) didn't satisfy plugin(s) [{}]",
                    names::NODE_AFFINITY
                ),
            ));
        }
        // Without a PreFilter restriction every slot is a candidate (ghost slots without a
        // node object are skipped while iterating); with one, only the named nodes.
        let restricted: Option<Vec<usize>> = allowed.as_ref().map(|names| {
            cluster
                .nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| n.node.is_some() && names.contains(&n.name))
                .map(|(i, _)| i)
                .collect()
        });
        let len = restricted
            .as_ref()
            .map(Vec::len)
            .unwrap_or(cluster.nodes.len());
        let slot = |k: usize| match &restricted {
            Some(r) => r[k],
            None => k,
        };
        let nominated_on = |n: &NodeInfo| {
            if cluster.nominated.is_empty() {
                None
            } else {
                cluster.nominated.get(&n.name)
            }
        };

        // evaluateNominatedNode: a pod that preempted tries its nominated node first.
        if !pod.nominated_node.is_empty()
            && let Some(n) = (0..len)
                .map(|k| &cluster.nodes[slot(k)])
                .find(|n| n.node.is_some() && n.name == pod.nominated_node)
            && run_filters_with_nominated(pod, n, &state, nominated_on(n)).is_ok()
        {
            return Ok(ScheduleResult {
                node: n.name.clone(),
                evaluated: 1,
                feasible: 1,
            });
        }

        let num_candidates = restricted.as_ref().map(Vec::len).unwrap_or(num_all);
        let to_find = num_feasible_nodes_to_find(self.percentage_of_nodes_to_score, num_candidates);
        let start = if allowed.is_none() && len > 0 {
            self.next_start % len
        } else {
            0
        };
        let mut feasible: Vec<&NodeInfo> = Vec::with_capacity(to_find.min(len));
        let mut processed = 0;
        let mut visited = 0;
        for k in 0..len {
            if feasible.len() >= to_find {
                break;
            }
            visited += 1;
            let n = &cluster.nodes[slot((start + k) % len)];
            if n.node.is_none() {
                continue;
            }
            processed += 1;
            match run_filters_with_nominated(pod, n, &state, nominated_on(n)) {
                Ok(()) => feasible.push(n),
                Err(s) => {
                    diagnosis.unschedulable_plugins.insert(s.plugin);
                    diagnosis.statuses.insert(n.name.clone(), s);
                }
            }
        }
        if allowed.is_none() && len > 0 {
            self.next_start = (start + visited) % len;
        }
        if feasible.is_empty() {
            if allowed.is_some() {
                diagnosis.unschedulable_plugins.insert(names::NODE_AFFINITY);
            }
            return Err(ScheduleError::Fit(FitError {
                num_all_nodes: num_all,
                diagnosis,
            }));
        }
        let chosen = if feasible.len() == 1 {
            feasible[0].name.clone()
        } else {
            let totals = score_nodes(pod, &feasible, cluster);
            select_host(&feasible, &totals)
        };
        Ok(ScheduleResult {
            node: chosen,
            evaluated: processed,
            feasible: feasible.len(),
        })
    }
}

/// Runs every score plugin over the feasible nodes and returns the weighted sums.
pub fn score_nodes(pod: &PodInfo, feasible: &[&NodeInfo], cluster: &Cluster<'_>) -> Vec<i64> {
    let n = feasible.len();
    let mut totals = vec![0i64; n];
    let mut add = |scores: &[i64], w: i64| {
        for (t, s) in totals.iter_mut().zip(scores) {
            *t += s * w;
        }
    };
    // TaintToleration.
    let tols = basic::prefer_no_schedule_tolerations(pod);
    let mut s: Vec<i64> = feasible
        .iter()
        .map(|node| basic::taint_toleration_score_with(&tols, node))
        .collect();
    default_normalize(&mut s, true);
    add(&s, weights::TAINT_TOLERATION);
    // NodeAffinity (skipped without preferred terms).
    if !pod.preferred_node_terms.is_empty() {
        let mut s: Vec<i64> = feasible
            .iter()
            .map(|node| basic::node_affinity_score(pod, node))
            .collect();
        default_normalize(&mut s, false);
        add(&s, weights::NODE_AFFINITY);
    }
    // NodeResourcesFit.
    let s: Vec<i64> = feasible
        .iter()
        .map(|node| fit::least_allocated_score(pod, node))
        .collect();
    add(&s, weights::NODE_RESOURCES_FIT);
    // PodTopologySpread.
    if let Some(st) = spread::prescore(pod, feasible, cluster.nodes) {
        let raw: Vec<Option<i64>> = feasible
            .iter()
            .map(|node| spread::score(pod, node, &st))
            .collect();
        add(&spread::normalize(&raw), weights::POD_TOPOLOGY_SPREAD);
    }
    // InterPodAffinity.
    let interpod_state = if cluster.pods_with_affinity == 0
        && pod.preferred_affinity.is_empty()
        && pod.preferred_anti_affinity.is_empty()
    {
        None
    } else {
        interpod::prescore(pod, cluster.nodes, cluster.namespaces)
    };
    if let Some(st) = interpod_state {
        let mut s: Vec<i64> = feasible
            .iter()
            .map(|node| interpod::score(node, &st))
            .collect();
        interpod::normalize(&mut s);
        add(&s, weights::INTER_POD_AFFINITY);
    }
    // NodeResourcesBalancedAllocation.
    let s: Vec<i64> = feasible
        .iter()
        .map(|node| fit::balanced_allocation_score(pod, node))
        .collect();
    add(&s, weights::BALANCED_ALLOCATION);
    totals
}

/// `selectHost`: the highest total, ties broken uniformly at random (reservoir sampling).
pub fn select_host(nodes: &[&NodeInfo], totals: &[i64]) -> String {
    let mut rng = rand::rng();
    let mut best = 0;
    let mut ties = 0u32;
    for (i, t) in totals.iter().enumerate() {
        if i == 0 || *t > totals[best] {
            best = i;
            ties = 1;
        } else if *t == totals[best] {
            ties += 1;
            if rng.random_range(0..ties) == 0 {
                best = i;
            }
        }
    }
    nodes[best].name.clone()
}

/// Whether a rejection status may be resolved by preemption.
pub fn preemption_may_help(s: Option<&Status>) -> bool {
    s.is_some_and(|s| s.code == Code::Unschedulable)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Taint,
    };

    use super::*;
    use crate::types::testutil::*;

    fn nodes_with(specs: &[(&str, &str)]) -> Vec<NodeInfo> {
        specs
            .iter()
            .map(|(name, cpu)| {
                NodeInfo::new(Arc::new(node(
                    name,
                    &[("cpu", cpu), ("memory", "4Gi"), ("pods", "110")],
                    &[],
                )))
            })
            .collect()
    }

    fn cluster<'a>(
        nodes: &'a [NodeInfo],
        ns: &'a HashMap<String, Labels>,
        nom: &'a HashMap<String, Vec<Arc<PodInfo>>>,
    ) -> Cluster<'a> {
        Cluster::new(nodes, ns, nom)
    }

    #[test]
    fn feasible_nodes_to_find() {
        assert_eq!(num_feasible_nodes_to_find(0, 50), 50);
        assert_eq!(num_feasible_nodes_to_find(0, 100), 100);
        // 1000 nodes: 50 - 8 = 42 %.
        assert_eq!(num_feasible_nodes_to_find(0, 1000), 420);
        // 5000 nodes: 50 - 40 = 10 %.
        assert_eq!(num_feasible_nodes_to_find(0, 5000), 500);
        // 6000 nodes: 50 - 48 = 2 % → 5 % floor.
        assert_eq!(num_feasible_nodes_to_find(0, 6000), 300);
        assert_eq!(num_feasible_nodes_to_find(1, 500), 100);
        assert_eq!(num_feasible_nodes_to_find(100, 500), 500);
    }

    #[test]
    fn message_format_matches_upstream() {
        // 3 nodes short of cpu, 2 with an untolerated taint.
        let mut nodes = nodes_with(&[
            ("n1", "1"),
            ("n2", "1"),
            ("n3", "1"),
            ("n4", "8"),
            ("n5", "8"),
        ]);
        for n in nodes.iter_mut().skip(3) {
            n.taints = vec![Taint {
                key: "dedicated".into(),
                value: Some("gpu".into()),
                effect: "NoSchedule".into(),
                time_added: None,
            }];
        }
        let (ns, nom) = (HashMap::new(), HashMap::new());
        let c = cluster(&nodes, &ns, &nom);
        let p = info(pod("p", &[("cpu", "2")]));
        let err = match Algorithm::default().schedule(&p, &c) {
            Err(ScheduleError::Fit(f)) => f,
            other => panic!("expected a fit error, got {other:?}"),
        };
        assert_eq!(
            err.message(),
            "0/5 nodes are available: 2 node(s) had untolerated taint {dedicated: gpu}, 3 Insufficient cpu."
        );
        let mut with_post = err.clone();
        with_post.diagnosis.post_filter_msg = Some(
            "preemption: 0/5 nodes are available: 2 Preemption is not helpful for scheduling, 3 No preemption victims found for incoming pod.".into(),
        );
        assert_eq!(
            with_post.message(),
            "0/5 nodes are available: 2 node(s) had untolerated taint {dedicated: gpu}, 3 Insufficient cpu. preemption: 0/5 nodes are available: 2 Preemption is not helpful for scheduling, 3 No preemption victims found for incoming pod."
        );
        assert!(
            err.diagnosis
                .unschedulable_plugins
                .contains(names::TAINT_TOLERATION)
        );
        assert!(
            err.diagnosis
                .unschedulable_plugins
                .contains(names::NODE_RESOURCES_FIT)
        );
    }

    #[test]
    fn match_fields_prefilter_message() {
        let nodes = nodes_with(&[("n1", "1"), ("n2", "1"), ("n3", "1"), ("n4", "1")]);
        let (ns, nom) = (HashMap::new(), HashMap::new());
        let c = cluster(&nodes, &ns, &nom);
        let mut p = pod("p", &[("cpu", "2")]);
        p.spec.as_mut().expect("spec").affinity = Some(k8s_openapi::api::core::v1::Affinity {
            node_affinity: Some(k8s_openapi::api::core::v1::NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: None,
                        match_fields: Some(vec![NodeSelectorRequirement {
                            key: "metadata.name".into(),
                            operator: "In".into(),
                            values: Some(vec!["n2".into()]),
                        }]),
                    }],
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        let err = match Algorithm::default().schedule(&info(p), &c) {
            Err(ScheduleError::Fit(f)) => f,
            other => panic!("expected a fit error, got {other:?}"),
        };
        assert_eq!(
            err.message(),
            "0/4 nodes are available: 1 Insufficient cpu, 3 node(s) didn't satisfy plugin(s) [NodeAffinity]."
        );
    }

    #[test]
    fn least_allocated_wins_and_rotation() {
        let mut nodes = nodes_with(&[("small", "2"), ("big", "16"), ("busy", "16")]);
        nodes[2].add_pod(info(pod("x", &[("cpu", "15")])));
        let (ns, nom) = (HashMap::new(), HashMap::new());
        let c = cluster(&nodes, &ns, &nom);
        let mut alg = Algorithm::default();
        for _ in 0..5 {
            let r = alg
                .schedule(&info(pod("p", &[("cpu", "1"), ("memory", "1Gi")])), &c)
                .expect("fits");
            assert_eq!(r.node, "big");
            assert_eq!(r.evaluated, 3);
        }
        assert!(matches!(
            Algorithm::default().schedule(&info(pod("p", &[])), &cluster(&[], &ns, &nom)),
            Err(ScheduleError::NoNodes)
        ));
    }

    #[test]
    fn percentage_limits_evaluated_nodes() {
        let nodes: Vec<NodeInfo> = (0..1000)
            .map(|i| {
                NodeInfo::new(Arc::new(node(
                    &format!("n{i}"),
                    &[("cpu", "4"), ("memory", "4Gi"), ("pods", "110")],
                    &[],
                )))
            })
            .collect();
        let (ns, nom) = (HashMap::new(), HashMap::new());
        let c = cluster(&nodes, &ns, &nom);
        let mut alg = Algorithm::default();
        let r = alg
            .schedule(&info(pod("p", &[("cpu", "1")])), &c)
            .expect("fits");
        assert_eq!((r.evaluated, r.feasible), (420, 420));
        assert_eq!(alg.next_start, 420);
        alg.schedule(&info(pod("p", &[("cpu", "1")])), &c)
            .expect("fits");
        assert_eq!(alg.next_start, 840);
    }

    #[test]
    fn nominated_pods_reserve_room() {
        let nodes = nodes_with(&[("n1", "2")]);
        let ns = HashMap::new();
        let mut high = pod("high", &[("cpu", "2")]);
        high.spec.as_mut().expect("spec").priority = Some(100);
        let nom: HashMap<String, Vec<Arc<PodInfo>>> = [("n1".to_string(), vec![info(high)])].into();
        let c = cluster(&nodes, &ns, &nom);
        let err = Algorithm::default().schedule(&info(pod("low", &[("cpu", "1")])), &c);
        assert!(matches!(err, Err(ScheduleError::Fit(_))));
    }
}
