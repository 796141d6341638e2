//! Per-node plugins that need no cluster-wide state: NodeUnschedulable, NodeName,
//! TaintToleration, NodeAffinity and NodePorts.

use k8s_openapi::api::core::v1::{Taint, Toleration};

use super::{FilterResult, Status, names};
use crate::selector::{do_not_schedule, tolerated, untolerated_taint};
use crate::types::{NodeInfo, PodInfo};

/// `ErrReasonUnknownCondition`-free NodeUnschedulable reason.
pub const ERR_NODE_UNSCHEDULABLE: &str = "node(s) were unschedulable";
/// NodeName's reason.
pub const ERR_NODE_NAME: &str = "node(s) didn't match the requested node name";
/// NodeAffinity's reason.
pub const ERR_NODE_AFFINITY: &str = "node(s) didn't match Pod's node affinity/selector";
/// NodePorts' reason.
pub const ERR_NODE_PORTS: &str = "node(s) didn't have free ports for the requested pod ports";

/// NodeUnschedulable: `spec.unschedulable` nodes, unless the pod tolerates
/// `node.kubernetes.io/unschedulable:NoSchedule`.
pub fn node_unschedulable(pod: &PodInfo, node: &NodeInfo) -> FilterResult {
    if !node.unschedulable {
        return Ok(());
    }
    let taint = Taint {
        key: "node.kubernetes.io/unschedulable".into(),
        value: None,
        effect: "NoSchedule".into(),
        time_added: None,
    };
    if tolerated(&pod.tolerations, &taint) {
        return Ok(());
    }
    Err(Status::unresolvable(
        names::NODE_UNSCHEDULABLE,
        ERR_NODE_UNSCHEDULABLE,
    ))
}

/// NodeName: `spec.nodeName`, when set, must be this node.
pub fn node_name(pod: &PodInfo, node: &NodeInfo) -> FilterResult {
    if pod.node_name.is_empty() || pod.node_name == node.name {
        Ok(())
    } else {
        Err(Status::unresolvable(names::NODE_NAME, ERR_NODE_NAME))
    }
}

/// TaintToleration filter: the first NoSchedule/NoExecute taint the pod does not tolerate.
pub fn taint_toleration(pod: &PodInfo, node: &NodeInfo) -> FilterResult {
    match untolerated_taint(&node.taints, &pod.tolerations, do_not_schedule) {
        None => Ok(()),
        Some(t) => Err(Status::unresolvable(
            names::TAINT_TOLERATION,
            format!(
                "node(s) had untolerated taint {{{}: {}}}",
                t.key,
                t.value.as_deref().unwrap_or("")
            ),
        )),
    }
}

/// TaintToleration score (raw): the number of PreferNoSchedule taints not tolerated by the
/// pod's tolerations with an empty or PreferNoSchedule effect. Normalized reversed.
pub fn taint_toleration_score(pod: &PodInfo, node: &NodeInfo) -> i64 {
    taint_toleration_score_with(&prefer_no_schedule_tolerations(pod), node)
}

/// The pod's tolerations that count for scoring (empty or PreferNoSchedule effect).
pub fn prefer_no_schedule_tolerations(pod: &PodInfo) -> Vec<Toleration> {
    pod.tolerations
        .iter()
        .filter(|t| {
            matches!(
                t.effect.as_deref(),
                None | Some("") | Some("PreferNoSchedule")
            )
        })
        .cloned()
        .collect()
}

/// [`taint_toleration_score`] with the tolerations filtered once per pod.
pub fn taint_toleration_score_with(tols: &[Toleration], node: &NodeInfo) -> i64 {
    node.taints
        .iter()
        .filter(|t| t.effect == "PreferNoSchedule" && !tolerated(tols, t))
        .count() as i64
}

/// NodeAffinity filter: `spec.nodeSelector` and required node affinity.
pub fn node_affinity(pod: &PodInfo, node: &NodeInfo) -> FilterResult {
    if pod.required_node_affinity.matches(&node.name, &node.labels) {
        Ok(())
    } else {
        Err(Status::unresolvable(
            names::NODE_AFFINITY,
            ERR_NODE_AFFINITY,
        ))
    }
}

/// NodeAffinity score (raw): the sum of the weights of matching preferred terms.
pub fn node_affinity_score(pod: &PodInfo, node: &NodeInfo) -> i64 {
    pod.preferred_node_terms
        .iter()
        .filter(|(_, t)| t.matches(&node.name, &node.labels))
        .map(|(w, _)| *w)
        .sum()
}

/// NodePorts: every requested host port must be free on the node.
pub fn node_ports(pod: &PodInfo, node: &NodeInfo) -> FilterResult {
    let conflict = pod
        .ports
        .iter()
        .any(|p| node.used_ports.iter().any(|u| u.conflicts(p)));
    if conflict {
        Err(Status::unschedulable(names::NODE_PORTS, ERR_NODE_PORTS))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use k8s_openapi::api::core::v1::{
        Affinity, NodeAffinity, NodeSelectorRequirement, NodeSelectorTerm, PreferredSchedulingTerm,
        Toleration,
    };

    use super::*;
    use crate::plugins::{Code, default_normalize};
    use crate::types::testutil::*;

    fn taint(key: &str, value: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: Some(value.into()),
            effect: effect.into(),
            time_added: None,
        }
    }

    fn tol(key: &str, effect: Option<&str>) -> Toleration {
        Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: effect.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn unschedulable_node() {
        let mut n = NodeInfo::new(Arc::new(node("n", &[], &[])));
        let p = pod("p", &[]);
        assert!(node_unschedulable(&info(p.clone()), &n).is_ok());
        n.unschedulable = true;
        let err = node_unschedulable(&info(p.clone()), &n).expect_err("rejected");
        assert_eq!(err.reasons, vec!["node(s) were unschedulable"]);
        assert_eq!(err.code, Code::UnschedulableAndUnresolvable);
        let mut tolerant = p;
        tolerant.spec.as_mut().expect("spec").tolerations = Some(vec![tol(
            "node.kubernetes.io/unschedulable",
            Some("NoSchedule"),
        )]);
        assert!(node_unschedulable(&info(tolerant), &n).is_ok());
    }

    #[test]
    fn node_name_filter() {
        let n = NodeInfo::new(Arc::new(node("n1", &[], &[])));
        let mut p = pod("p", &[]);
        assert!(node_name(&info(p.clone()), &n).is_ok());
        p.spec.as_mut().expect("spec").node_name = Some("n2".into());
        let err = node_name(&info(p), &n).expect_err("rejected");
        assert_eq!(
            err.reasons,
            vec!["node(s) didn't match the requested node name"]
        );
    }

    #[test]
    fn taints() {
        let mut n = NodeInfo::new(Arc::new(node("n", &[], &[])));
        n.taints = vec![
            taint("soft", "x", "PreferNoSchedule"),
            taint("dedicated", "gpu", "NoSchedule"),
        ];
        let p = pod("p", &[]);
        let err = taint_toleration(&info(p.clone()), &n).expect_err("rejected");
        assert_eq!(
            err.reasons,
            vec!["node(s) had untolerated taint {dedicated: gpu}"]
        );
        assert_eq!(err.code, Code::UnschedulableAndUnresolvable);
        let mut ok = p.clone();
        ok.spec.as_mut().expect("spec").tolerations = Some(vec![tol("dedicated", None)]);
        assert!(taint_toleration(&info(ok.clone()), &n).is_ok());
        // NoExecute also filters.
        n.taints = vec![taint("evict", "", "NoExecute")];
        assert_eq!(
            taint_toleration(&info(ok), &n)
                .expect_err("rejected")
                .reasons,
            vec!["node(s) had untolerated taint {evict: }"]
        );
        // Score: intolerable PreferNoSchedule taints, normalized reversed.
        let mut n2 = NodeInfo::new(Arc::new(node("n2", &[], &[])));
        n2.taints = vec![
            taint("soft", "x", "PreferNoSchedule"),
            taint("soft2", "y", "PreferNoSchedule"),
        ];
        let n3 = NodeInfo::new(Arc::new(node("n3", &[], &[])));
        let mut tolerant = p.clone();
        tolerant.spec.as_mut().expect("spec").tolerations =
            Some(vec![tol("soft", Some("PreferNoSchedule"))]);
        let pi = info(p);
        let ti = info(tolerant);
        let mut raw = vec![
            taint_toleration_score(&pi, &n2),
            taint_toleration_score(&pi, &n3),
        ];
        assert_eq!(raw, vec![2, 0]);
        default_normalize(&mut raw, true);
        assert_eq!(raw, vec![0, 100]);
        assert_eq!(taint_toleration_score(&ti, &n2), 1);
    }

    #[test]
    fn affinity_filter_and_score() {
        let n = NodeInfo::new(Arc::new(node("n", &[], &[("zone", "a"), ("disk", "ssd")])));
        let mut p = pod("p", &[]);
        p.spec.as_mut().expect("spec").node_selector =
            Some([("zone".to_string(), "b".to_string())].into());
        let err = node_affinity(&info(p.clone()), &n).expect_err("rejected");
        assert_eq!(
            err.reasons,
            vec!["node(s) didn't match Pod's node affinity/selector"]
        );
        let req = |key: &str, op: &str, v: &[&str]| NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(v.iter().map(|s| s.to_string()).collect()),
        };
        let spec = p.spec.as_mut().expect("spec");
        spec.node_selector = None;
        spec.affinity = Some(Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(
                    k8s_openapi::api::core::v1::NodeSelector {
                        node_selector_terms: vec![NodeSelectorTerm {
                            match_expressions: Some(vec![req("zone", "In", &["a"])]),
                            match_fields: None,
                        }],
                    },
                ),
                preferred_during_scheduling_ignored_during_execution: Some(vec![
                    PreferredSchedulingTerm {
                        weight: 5,
                        preference: NodeSelectorTerm {
                            match_expressions: Some(vec![req("disk", "In", &["ssd"])]),
                            match_fields: None,
                        },
                    },
                    PreferredSchedulingTerm {
                        weight: 7,
                        preference: NodeSelectorTerm {
                            match_expressions: Some(vec![req("disk", "In", &["hdd"])]),
                            match_fields: None,
                        },
                    },
                ]),
            }),
            ..Default::default()
        });
        let pi = info(p);
        assert!(node_affinity(&pi, &n).is_ok());
        assert_eq!(node_affinity_score(&pi, &n), 5);
    }

    #[test]
    fn ports() {
        let mut n = NodeInfo::new(Arc::new(node("n", &[], &[])));
        n.add_pod(info(with_host_port(pod("a", &[]), 8080)));
        let err = node_ports(&info(with_host_port(pod("b", &[]), 8080)), &n).expect_err("conflict");
        assert_eq!(
            err.reasons,
            vec!["node(s) didn't have free ports for the requested pod ports"]
        );
        assert_eq!(err.code, Code::Unschedulable);
        assert!(node_ports(&info(with_host_port(pod("c", &[]), 8081)), &n).is_ok());
    }
}
