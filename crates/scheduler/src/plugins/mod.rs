//! The default profile's plugins: filters (`Err(Status)` rejects a node) and scores (raw
//! per-node scores, then each plugin's normalization to `0..=MAX_NODE_SCORE`).

pub mod basic;
pub mod fit;
pub mod interpod;
pub mod spread;

/// The highest score a plugin gives a node (`framework.MaxNodeScore`).
pub const MAX_NODE_SCORE: i64 = 100;

/// Plugin names, as upstream spells them (they appear in messages and metrics).
pub mod names {
    /// NodeUnschedulable.
    pub const NODE_UNSCHEDULABLE: &str = "NodeUnschedulable";
    /// NodeName.
    pub const NODE_NAME: &str = "NodeName";
    /// TaintToleration.
    pub const TAINT_TOLERATION: &str = "TaintToleration";
    /// NodeAffinity.
    pub const NODE_AFFINITY: &str = "NodeAffinity";
    /// NodePorts.
    pub const NODE_PORTS: &str = "NodePorts";
    /// NodeResourcesFit.
    pub const NODE_RESOURCES_FIT: &str = "NodeResourcesFit";
    /// NodeResourcesBalancedAllocation.
    pub const BALANCED_ALLOCATION: &str = "NodeResourcesBalancedAllocation";
    /// PodTopologySpread.
    pub const POD_TOPOLOGY_SPREAD: &str = "PodTopologySpread";
    /// InterPodAffinity.
    pub const INTER_POD_AFFINITY: &str = "InterPodAffinity";
    /// DefaultPreemption.
    pub const DEFAULT_PREEMPTION: &str = "DefaultPreemption";
}

/// Status code of a rejected node (`framework.Code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// The node may fit after preemption.
    Unschedulable,
    /// Preemption cannot help on this node.
    UnschedulableAndUnresolvable,
}

/// Why a plugin rejected a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Whether preemption may help.
    pub code: Code,
    /// Reasons, counted one by one in the "0/N nodes are available" message.
    pub reasons: Vec<String>,
    /// The plugin that rejected the node.
    pub plugin: &'static str,
}

impl Status {
    /// An `Unschedulable` status.
    pub fn unschedulable(plugin: &'static str, reason: impl Into<String>) -> Status {
        Status {
            code: Code::Unschedulable,
            reasons: vec![reason.into()],
            plugin,
        }
    }

    /// An `UnschedulableAndUnresolvable` status.
    pub fn unresolvable(plugin: &'static str, reason: impl Into<String>) -> Status {
        Status {
            code: Code::UnschedulableAndUnresolvable,
            reasons: vec![reason.into()],
            plugin,
        }
    }
}

/// Result of a filter.
pub type FilterResult = Result<(), Status>;

/// `helper.DefaultNormalizeScore`: scale to `0..=MAX_NODE_SCORE` by the maximum; `reverse`
/// turns "more is worse" counts into scores.
pub fn default_normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max == 0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = MAX_NODE_SCORE);
        }
        return;
    }
    for s in scores.iter_mut() {
        let mut v = MAX_NODE_SCORE * *s / max;
        if reverse {
            v = MAX_NODE_SCORE - v;
        }
        *s = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize() {
        let mut s = vec![0, 5, 10];
        default_normalize(&mut s, false);
        assert_eq!(s, vec![0, 50, 100]);
        let mut s = vec![0, 5, 10];
        default_normalize(&mut s, true);
        assert_eq!(s, vec![100, 50, 0]);
        let mut s = vec![0, 0];
        default_normalize(&mut s, true);
        assert_eq!(s, vec![100, 100]);
        let mut s = vec![0, 0];
        default_normalize(&mut s, false);
        assert_eq!(s, vec![0, 0]);
    }
}
