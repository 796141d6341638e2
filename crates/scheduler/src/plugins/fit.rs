//! NodeResourcesFit (filter + LeastAllocated score) and NodeResourcesBalancedAllocation.

use super::{FilterResult, MAX_NODE_SCORE, Status, names};
use crate::types::{NodeInfo, PodInfo};

/// NodeResourcesFit filter (`fitsRequest`): pod slots first, then cpu, memory,
/// ephemeral-storage and every requested scalar resource; all reasons are kept.
pub fn fit(pod: &PodInfo, node: &NodeInfo) -> FilterResult {
    let mut reasons = Vec::new();
    if node.pods.len() as i64 + 1 > node.allocatable.allowed_pods {
        reasons.push("Too many pods".to_string());
    }
    let req = &pod.requests;
    if !req.is_zero() {
        let a = &node.allocatable;
        let u = &node.requested;
        if req.milli_cpu > 0 && req.milli_cpu > a.milli_cpu - u.milli_cpu {
            reasons.push("Insufficient cpu".into());
        }
        if req.memory > 0 && req.memory > a.memory - u.memory {
            reasons.push("Insufficient memory".into());
        }
        if req.ephemeral_storage > 0
            && req.ephemeral_storage > a.ephemeral_storage - u.ephemeral_storage
        {
            reasons.push("Insufficient ephemeral-storage".into());
        }
        for (name, q) in &req.scalar {
            if *q == 0 {
                continue;
            }
            let avail =
                a.scalar.get(name).copied().unwrap_or(0) - u.scalar.get(name).copied().unwrap_or(0);
            if *q > avail {
                reasons.push(format!("Insufficient {name}"));
            }
        }
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(Status {
            code: super::Code::Unschedulable,
            reasons,
            plugin: names::NODE_RESOURCES_FIT,
        })
    }
}

fn least_requested(requested: i64, capacity: i64) -> i64 {
    if capacity == 0 || requested > capacity {
        return 0;
    }
    (capacity - requested) * MAX_NODE_SCORE / capacity
}

/// LeastAllocated score (the default `scoringStrategy`, cpu and memory weight 1): the mean of
/// `(allocatable - requested) * 100 / allocatable`, counting the node's non-zero requests plus
/// the pod's.
pub fn least_allocated_score(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let pairs = [
        (
            node.non_zero_requested.milli_cpu + pod.non_zero.milli_cpu,
            node.allocatable.milli_cpu,
        ),
        (
            node.non_zero_requested.memory + pod.non_zero.memory,
            node.allocatable.memory,
        ),
    ];
    let mut score = 0;
    let mut weights = 0;
    for (req, alloc) in pairs {
        if alloc == 0 {
            continue;
        }
        score += least_requested(req, alloc);
        weights += 1;
    }
    if weights == 0 { 0 } else { score / weights }
}

/// NodeResourcesBalancedAllocation: `(1 - std(fractions)) * 100` over cpu and memory, with
/// requested fractions (actual requests, no defaults) capped at 1. Best-effort pods get 0
/// (the plugin skips them).
pub fn balanced_allocation_score(pod: &PodInfo, node: &NodeInfo) -> i64 {
    if pod.requests.milli_cpu == 0 && pod.requests.memory == 0 {
        return 0;
    }
    let pairs = [
        (
            node.requested.milli_cpu + pod.requests.milli_cpu,
            node.allocatable.milli_cpu,
        ),
        (
            node.requested.memory + pod.requests.memory,
            node.allocatable.memory,
        ),
    ];
    let mut fractions = Vec::with_capacity(2);
    for (req, alloc) in pairs {
        if alloc == 0 {
            continue;
        }
        fractions.push((req as f64 / alloc as f64).min(1.0));
    }
    let std = if fractions.len() == 2 {
        ((fractions[0] - fractions[1]) / 2.0).abs()
    } else {
        0.0
    };
    ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::types::testutil::*;

    fn n(alloc: &[(&str, &str)]) -> NodeInfo {
        NodeInfo::new(Arc::new(node("n", alloc, &[])))
    }

    #[test]
    fn fit_reasons() {
        let mut node = n(&[
            ("cpu", "1"),
            ("memory", "1Gi"),
            ("pods", "2"),
            ("example.com/gpu", "1"),
        ]);
        node.add_pod(info(pod("a", &[("cpu", "600m")])));
        assert!(fit(&info(pod("p", &[("cpu", "400m")])), &node).is_ok());
        let err = fit(
            &info(pod("p", &[("cpu", "500m"), ("memory", "2Gi")])),
            &node,
        )
        .expect_err("too big");
        assert_eq!(err.reasons, vec!["Insufficient cpu", "Insufficient memory"]);
        let err = fit(&info(pod("p", &[("example.com/gpu", "2")])), &node).expect_err("gpu");
        assert_eq!(err.reasons, vec!["Insufficient example.com/gpu"]);
        let err = fit(&info(pod("p", &[("ephemeral-storage", "1Gi")])), &node).expect_err("disk");
        assert_eq!(err.reasons, vec!["Insufficient ephemeral-storage"]);
        node.add_pod(info(pod("b", &[])));
        let err = fit(&info(pod("p", &[])), &node).expect_err("pods");
        assert_eq!(err.reasons, vec!["Too many pods"]);
    }

    #[test]
    fn least_allocated() {
        // Upstream's example: node 4000m / 10000 bytes, pod requests 3000m / 5000 →
        // cpu (4000-3000)*100/4000 = 25, memory 50 → 37.
        let mut node = n(&[("cpu", "4"), ("memory", "10000")]);
        let p = info(pod("p", &[("cpu", "3"), ("memory", "5000")]));
        assert_eq!(least_allocated_score(&p, &node), 37);
        node.add_pod(info(pod("a", &[("cpu", "1"), ("memory", "5000")])));
        assert_eq!(least_allocated_score(&p, &node), 0);
        // Best-effort pods count as 100m / 200Mi.
        let empty = n(&[("cpu", "1"), ("memory", "400Mi")]);
        assert_eq!(
            least_allocated_score(&info(pod("p", &[])), &empty),
            (90 + 50) / 2
        );
    }

    #[test]
    fn balanced() {
        let node = n(&[("cpu", "4"), ("memory", "10000")]);
        // cpu 3000/4000 = .75, memory 5000/10000 = .5 → std .125 → 87.
        let p = info(pod("p", &[("cpu", "3"), ("memory", "5000")]));
        assert_eq!(balanced_allocation_score(&p, &node), 87);
        let p = info(pod("p", &[("cpu", "2"), ("memory", "5000")]));
        assert_eq!(balanced_allocation_score(&p, &node), 100);
        assert_eq!(balanced_allocation_score(&info(pod("p", &[])), &node), 0);
    }
}
