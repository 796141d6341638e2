//! DefaultPreemption (PostFilter): when a pod fits nowhere, find the node where evicting the
//! fewest, least important lower-priority pods (respecting PodDisruptionBudgets where
//! possible) makes it fit.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

use rand::Rng as _;

use crate::framework::{Cluster, CycleState, Diagnosis, FitError, run_filters_with_nominated};
use crate::plugins::{Code, Status, names};
use crate::selector::Selector;
use crate::types::{NodeInfo, PodInfo};

/// Status of nodes where preemption cannot help.
pub const ERR_NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
/// Status of nodes without lower-priority pods.
pub const ERR_NO_VICTIMS: &str = "No preemption victims found for incoming pod";

/// `minCandidateNodesPercentage` and `minCandidateNodesAbsolute`.
const MIN_CANDIDATE_NODES_PERCENTAGE: usize = 10;
const MIN_CANDIDATE_NODES_ABSOLUTE: usize = 100;

/// A PodDisruptionBudget as preemption reads it.
#[derive(Debug, Clone)]
pub struct Pdb {
    /// Namespace.
    pub namespace: String,
    /// `spec.selector` (a nil or empty selector matches nothing here).
    pub selector: Selector,
    /// `status.disruptionsAllowed`.
    pub disruptions_allowed: i64,
    /// `status.disruptedPods` names.
    pub disrupted_pods: Vec<String>,
}

/// The chosen node and what to evict there.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Node name.
    pub node: String,
    /// Pods to delete, most important first.
    pub victims: Vec<Arc<PodInfo>>,
    /// How many victims violate a PDB.
    pub pdb_violations: usize,
}

/// `MoreImportantPod`: higher priority, then the one that started earlier.
fn more_important(a: &PodInfo, b: &PodInfo) -> Ordering {
    b.priority
        .cmp(&a.priority)
        .then_with(|| match (a.start_time, b.start_time) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        })
}

/// `filterPodsWithPDBViolation`: (violating, non-violating), each keeping the input order.
fn split_by_pdb(pods: Vec<Arc<PodInfo>>, pdbs: &[Pdb]) -> (Vec<Arc<PodInfo>>, Vec<Arc<PodInfo>>) {
    let mut allowed: Vec<i64> = pdbs.iter().map(|p| p.disruptions_allowed).collect();
    let mut violating = Vec::new();
    let mut ok = Vec::new();
    for p in pods {
        let mut violated = false;
        if !p.labels.is_empty() {
            for (i, pdb) in pdbs.iter().enumerate() {
                if pdb.namespace != p.namespace
                    || pdb.selector.is_empty()
                    || !pdb.selector.matches(&p.labels)
                    || pdb.disrupted_pods.contains(&p.name)
                {
                    continue;
                }
                allowed[i] -= 1;
                if allowed[i] < 0 {
                    violated = true;
                }
            }
        }
        if violated {
            violating.push(p);
        } else {
            ok.push(p);
        }
    }
    (violating, ok)
}

/// `SelectVictimsOnNode`: remove every lower-priority pod, check the pod fits, then reprieve
/// as many as possible (PDB-violating ones first), most important first.
pub fn select_victims_on_node(
    pod: &PodInfo,
    node: &NodeInfo,
    state: &CycleState,
    nominated: Option<&Vec<Arc<PodInfo>>>,
    pdbs: &[Pdb],
) -> Result<(Vec<Arc<PodInfo>>, usize), Status> {
    let mut potential: Vec<Arc<PodInfo>> = node
        .pods
        .iter()
        .filter(|p| p.priority < pod.priority)
        .cloned()
        .collect();
    if potential.is_empty() {
        return Err(Status::unresolvable(
            names::DEFAULT_PREEMPTION,
            ERR_NO_VICTIMS,
        ));
    }
    let mut ni = node.clone();
    let mut st = state.clone();
    for p in &potential {
        ni.remove_pod(&p.uid);
        st.remove_pod(p, pod, &ni);
    }
    run_filters_with_nominated(pod, &ni, &st, nominated)?;
    potential.sort_by(|a, b| more_important(a, b));
    let (violating, non_violating) = split_by_pdb(potential, pdbs);
    let mut victims = Vec::new();
    let mut violations = 0;
    let mut reprieve = |p: Arc<PodInfo>, ni: &mut NodeInfo, st: &mut CycleState| -> bool {
        ni.add_pod(p.clone());
        st.add_pod(&p, pod, ni);
        if run_filters_with_nominated(pod, ni, st, nominated).is_err() {
            ni.remove_pod(&p.uid);
            st.remove_pod(&p, pod, ni);
            victims.push(p);
            false
        } else {
            true
        }
    };
    for p in violating {
        if !reprieve(p, &mut ni, &mut st) {
            violations += 1;
        }
    }
    for p in non_violating {
        reprieve(p, &mut ni, &mut st);
    }
    victims.sort_by(|a, b| more_important(a, b));
    Ok((victims, violations))
}

/// `pickOneNodeForPreemption`: fewest PDB violations, lowest highest-victim priority, lowest
/// priority sum, fewest victims, latest start among the highest-priority victims, first.
pub fn pick_one(candidates: &[Candidate]) -> Option<usize> {
    if candidates.is_empty() {
        return None;
    }
    let mut idx: Vec<usize> = (0..candidates.len()).collect();
    let keep_min = |idx: &mut Vec<usize>, f: &dyn Fn(&Candidate) -> i128| {
        let best = idx.iter().map(|&i| f(&candidates[i])).min().unwrap_or(0);
        idx.retain(|&i| f(&candidates[i]) == best);
    };
    keep_min(&mut idx, &|c| c.pdb_violations as i128);
    keep_min(&mut idx, &|c| {
        c.victims
            .first()
            .map(|v| i128::from(v.priority))
            .unwrap_or(i128::from(i32::MIN))
    });
    keep_min(&mut idx, &|c| {
        c.victims
            .iter()
            .map(|v| i128::from(v.priority) + i128::from(i32::MAX) + 1)
            .sum()
    });
    keep_min(&mut idx, &|c| c.victims.len() as i128);
    // Latest "earliest start time of the highest-priority victims".
    keep_min(&mut idx, &|c| {
        let top = c.victims.first().map(|v| v.priority);
        let earliest = c
            .victims
            .iter()
            .filter(|v| Some(v.priority) == top)
            .filter_map(|v| v.start_time)
            .min();
        earliest.map(|t| -t.as_nanosecond()).unwrap_or(0)
    });
    idx.first().copied()
}

/// Whether a pod is being deleted because a scheduler preempted it (any terminating pod in
/// kumo: the DisruptionTarget condition is set right before the delete).
fn terminating_by_preemption(p: &PodInfo) -> bool {
    p.terminating
}

/// `PodEligibleToPreemptOthers`.
pub fn eligible(pod: &PodInfo, fit: &FitError, cluster: &Cluster<'_>) -> Result<(), String> {
    if pod.never_preempt {
        return Err("not eligible due to preemptionPolicy=Never.".into());
    }
    if !pod.nominated_node.is_empty() {
        if fit
            .status_of(&pod.nominated_node)
            .is_some_and(|s| s.code == Code::UnschedulableAndUnresolvable)
        {
            return Ok(());
        }
        if let Some(n) = cluster.nodes.iter().find(|n| n.name == pod.nominated_node)
            && n.pods
                .iter()
                .any(|p| p.priority < pod.priority && terminating_by_preemption(p))
        {
            return Err("not eligible due to a terminating pod on the nominated node.".into());
        }
    }
    Ok(())
}

/// `Evaluator.Preempt` up to the choice of a candidate: `Ok` with the node and victims, or
/// `Err` with the PostFilter message (`preemption: …`).
pub fn preempt(
    pod: &PodInfo,
    fit: &FitError,
    cluster: &Cluster<'_>,
    pdbs: &[Pdb],
) -> Result<Candidate, String> {
    eligible(pod, fit, cluster).map_err(|m| format!("preemption: {m}"))?;
    let state = CycleState::prefilter(pod, cluster);
    let not_helpful = Status::unresolvable(names::DEFAULT_PREEMPTION, ERR_NOT_HELPFUL);
    let mut statuses: HashMap<String, Status> = HashMap::new();
    let mut potential: Vec<&NodeInfo> = Vec::new();
    for n in cluster.nodes.iter().filter(|n| n.node.is_some()) {
        match fit.status_of(&n.name) {
            Some(s) if s.code == Code::Unschedulable => potential.push(n),
            _ => {
                statuses.insert(n.name.clone(), not_helpful.clone());
            }
        }
    }
    let num_all = cluster.num_nodes();
    let mut candidates = Vec::new();
    if !potential.is_empty() {
        let num_candidates = (potential.len() * MIN_CANDIDATE_NODES_PERCENTAGE / 100)
            .max(MIN_CANDIDATE_NODES_ABSOLUTE)
            .min(potential.len());
        let offset = rand::rng().random_range(0..potential.len());
        let mut non_violating = 0;
        for k in 0..potential.len() {
            let n = potential[(offset + k) % potential.len()];
            match select_victims_on_node(pod, n, &state, cluster.nominated.get(&n.name), pdbs) {
                Ok((victims, violations)) if !victims.is_empty() => {
                    if violations == 0 {
                        non_violating += 1;
                    }
                    candidates.push(Candidate {
                        node: n.name.clone(),
                        victims,
                        pdb_violations: violations,
                    });
                    if non_violating > 0 && candidates.len() >= num_candidates {
                        break;
                    }
                }
                Ok(_) => {
                    statuses.insert(
                        n.name.clone(),
                        Status::unschedulable(
                            names::DEFAULT_PREEMPTION,
                            format!("expected at least one victim pod on node {:?}", n.name),
                        ),
                    );
                }
                Err(s) => {
                    statuses.insert(n.name.clone(), s);
                }
            }
        }
    }
    match pick_one(&candidates) {
        Some(i) => Ok(candidates.swap_remove(i)),
        None => {
            let err = FitError {
                num_all_nodes: num_all,
                diagnosis: Diagnosis {
                    statuses,
                    absent: Some(not_helpful),
                    ..Default::default()
                },
            };
            Err(format!("preemption: {}", err.message()))
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    use super::*;
    use crate::framework::{Algorithm, ScheduleError};
    use crate::selector::Labels;
    use crate::types::testutil::*;

    type Maps = (HashMap<String, Labels>, HashMap<String, Vec<Arc<PodInfo>>>);

    fn prio(mut p: Pod, v: i32) -> Pod {
        p.spec.as_mut().expect("spec").priority = Some(v);
        p
    }

    fn nodes(n: usize, cpu: &str) -> Vec<NodeInfo> {
        (1..=n)
            .map(|i| {
                NodeInfo::new(Arc::new(node(
                    &format!("n{i}"),
                    &[("cpu", cpu), ("memory", "8Gi"), ("pods", "110")],
                    &[],
                )))
            })
            .collect()
    }

    fn fit_error(pod: &PodInfo, c: &Cluster<'_>) -> FitError {
        match Algorithm::default().schedule(pod, c) {
            Err(ScheduleError::Fit(f)) => f,
            other => panic!("expected a fit error, got {other:?}"),
        }
    }

    #[test]
    fn preempts_fewest_lowest_priority() {
        let mut ns = nodes(2, "2");
        // n1: one low (priority 1) pod using 2 cpu. n2: two pods of priority 5 using 1 each.
        ns[0].add_pod(info(prio(pod("low", &[("cpu", "2")]), 1)));
        ns[1].add_pod(info(prio(pod("mid1", &[("cpu", "1")]), 5)));
        ns[1].add_pod(info(prio(pod("mid2", &[("cpu", "1")]), 5)));
        let (nsl, nom): Maps = Default::default();
        let c = Cluster::new(&ns, &nsl, &nom);
        let p = info(prio(pod("high", &[("cpu", "2")]), 100));
        let f = fit_error(&p, &c);
        let cand = preempt(&p, &f, &c, &[]).expect("candidate");
        assert_eq!(cand.node, "n1");
        assert_eq!(
            cand.victims
                .iter()
                .map(|v| v.name.as_str())
                .collect::<Vec<_>>(),
            vec!["low"]
        );
    }

    #[test]
    fn reprieves_pods_that_can_stay() {
        let mut ns = nodes(1, "4");
        ns[0].add_pod(info(prio(pod("a", &[("cpu", "1")]), 1)));
        ns[0].add_pod(info(prio(pod("b", &[("cpu", "1")]), 2)));
        ns[0].add_pod(info(prio(pod("c", &[("cpu", "2")]), 3)));
        let (nsl, nom): Maps = Default::default();
        let c = Cluster::new(&ns, &nsl, &nom);
        let p = info(prio(pod("high", &[("cpu", "1")]), 100));
        let f = fit_error(&p, &c);
        let cand = preempt(&p, &f, &c, &[]).expect("candidate");
        // c (most important) and b are reprieved; a is evicted.
        assert_eq!(
            cand.victims
                .iter()
                .map(|v| v.name.as_str())
                .collect::<Vec<_>>(),
            vec!["a"]
        );
    }

    #[test]
    fn pdb_violations_avoided() {
        let mut ns = nodes(2, "1");
        ns[0].add_pod(info(prio(
            with_labels(pod("guarded", &[("cpu", "1")]), &[("app", "db")]),
            1,
        )));
        ns[1].add_pod(info(prio(
            with_labels(pod("free", &[("cpu", "1")]), &[("app", "web")]),
            1,
        )));
        let (nsl, nom): Maps = Default::default();
        let c = Cluster::new(&ns, &nsl, &nom);
        let pdb = Pdb {
            namespace: "default".into(),
            selector: Selector::from_label_selector(Some(&LabelSelector {
                match_labels: Some([("app".to_string(), "db".to_string())].into()),
                match_expressions: None,
            })),
            disruptions_allowed: 0,
            disrupted_pods: vec![],
        };
        let p = info(prio(pod("high", &[("cpu", "1")]), 100));
        let f = fit_error(&p, &c);
        for _ in 0..10 {
            let cand = preempt(&p, &f, &c, std::slice::from_ref(&pdb)).expect("candidate");
            assert_eq!(cand.node, "n2");
            assert_eq!(cand.pdb_violations, 0);
        }
    }

    #[test]
    fn no_victims_message() {
        let mut ns = nodes(3, "1");
        ns[0].add_pod(info(prio(pod("same", &[("cpu", "1")]), 100)));
        ns[1].taints = vec![k8s_openapi::api::core::v1::Taint {
            key: "k".into(),
            value: Some("v".into()),
            effect: "NoSchedule".into(),
            time_added: None,
        }];
        let (nsl, nom): Maps = Default::default();
        let c = Cluster::new(&ns, &nsl, &nom);
        let p = info(prio(pod("high", &[("cpu", "2")]), 100));
        let mut f = fit_error(&p, &c);
        let msg = preempt(&p, &f, &c, &[]).expect_err("no candidate");
        assert_eq!(
            msg,
            "preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod."
        );
        f.diagnosis.post_filter_msg = Some(msg);
        assert_eq!(
            f.message(),
            "0/3 nodes are available: 1 node(s) had untolerated taint {k: v}, 2 Insufficient cpu. preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod."
        );
        let mut never = (*p).clone();
        never.never_preempt = true;
        assert_eq!(
            preempt(&never, &f, &c, &[]).expect_err("never"),
            "preemption: not eligible due to preemptionPolicy=Never."
        );
    }
}
