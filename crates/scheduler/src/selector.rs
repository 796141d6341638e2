//! Label selectors, node selectors (required/preferred node affinity) and taint tolerations,
//! with apimachinery's and component-helpers' semantics.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Labels of an object.
pub type Labels = BTreeMap<String, String>;

/// Operator of a label requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `In` (also `matchLabels` entries).
    In,
    /// `NotIn`.
    NotIn,
    /// `Exists`.
    Exists,
    /// `DoesNotExist`.
    DoesNotExist,
    /// `Gt` (node selectors only).
    Gt,
    /// `Lt` (node selectors only).
    Lt,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "In" => Op::In,
            "NotIn" => Op::NotIn,
            "Exists" => Op::Exists,
            "DoesNotExist" => Op::DoesNotExist,
            "Gt" => Op::Gt,
            "Lt" => Op::Lt,
            _ => return None,
        })
    }
}

/// One `key op values` requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The label key (or field name for `matchFields`).
    pub key: String,
    /// The operator.
    pub op: Op,
    /// The values (`In`/`NotIn`: a set; `Gt`/`Lt`: one integer).
    pub values: Vec<String>,
}

impl Requirement {
    /// Whether `value` (the label's value, `None` if absent) satisfies the requirement.
    pub fn matches(&self, value: Option<&str>) -> bool {
        match self.op {
            Op::In => value.is_some_and(|v| self.values.iter().any(|x| x == v)),
            Op::NotIn => value.is_none_or(|v| !self.values.iter().any(|x| x == v)),
            Op::Exists => value.is_some(),
            Op::DoesNotExist => value.is_none(),
            Op::Gt | Op::Lt => {
                let Some(v) = value.and_then(|v| v.parse::<i64>().ok()) else {
                    return false;
                };
                let Some(bound) = self.values.first().and_then(|b| b.parse::<i64>().ok()) else {
                    return false;
                };
                if self.op == Op::Gt {
                    v > bound
                } else {
                    v < bound
                }
            }
        }
    }
}

/// A parsed `metav1.LabelSelector`. `nothing` is the selector of a nil `LabelSelector` (matches
/// no object); an empty selector matches every object.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector {
    /// Requirements, all of which must hold.
    pub reqs: Vec<Requirement>,
    /// Matches nothing (nil selector, or one that failed to parse).
    pub nothing: bool,
}

impl Selector {
    /// The selector that matches nothing (`labels.Nothing()`).
    pub fn nothing() -> Selector {
        Selector {
            reqs: Vec::new(),
            nothing: true,
        }
    }

    /// `metav1.LabelSelectorAsSelector`: nil → nothing, `{}` → everything. An invalid
    /// operator makes the selector match nothing.
    pub fn from_label_selector(sel: Option<&LabelSelector>) -> Selector {
        let Some(sel) = sel else {
            return Selector::nothing();
        };
        let mut reqs = Vec::new();
        for (k, v) in sel.match_labels.iter().flatten() {
            reqs.push(Requirement {
                key: k.clone(),
                op: Op::In,
                values: vec![v.clone()],
            });
        }
        for e in sel.match_expressions.iter().flatten() {
            match Op::parse(&e.operator) {
                Some(op @ (Op::In | Op::NotIn | Op::Exists | Op::DoesNotExist)) => {
                    reqs.push(Requirement {
                        key: e.key.clone(),
                        op,
                        values: e.values.clone().unwrap_or_default(),
                    })
                }
                _ => return Selector::nothing(),
            }
        }
        Selector {
            reqs,
            nothing: false,
        }
    }

    /// Whether the selector has no requirements (and so matches everything).
    pub fn is_empty(&self) -> bool {
        !self.nothing && self.reqs.is_empty()
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        !self.nothing
            && self
                .reqs
                .iter()
                .all(|r| r.matches(labels.get(&r.key).map(String::as_str)))
    }

    /// Adds a requirement (matchLabelKeys / mismatchLabelKeys merging).
    pub fn add(&mut self, r: Requirement) {
        if !self.nothing {
            self.reqs.push(r);
        }
    }
}

/// A parsed node selector term: label expressions and `metadata.name` field expressions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTerm {
    exprs: Vec<Requirement>,
    fields: Vec<Requirement>,
    /// A term with an invalid requirement never matches.
    valid: bool,
}

fn node_reqs(rs: Option<&Vec<NodeSelectorRequirement>>, fields: bool) -> Option<Vec<Requirement>> {
    let mut out = Vec::new();
    for r in rs.into_iter().flatten() {
        let op = Op::parse(&r.operator)?;
        let values = r.values.clone().unwrap_or_default();
        if fields && (r.key != "metadata.name" || !matches!(op, Op::In | Op::NotIn)) {
            return None;
        }
        if matches!(op, Op::Gt | Op::Lt) && values.len() != 1 {
            return None;
        }
        out.push(Requirement {
            key: r.key.clone(),
            op,
            values,
        });
    }
    Some(out)
}

impl NodeTerm {
    /// Parses a `NodeSelectorTerm`.
    pub fn new(t: &NodeSelectorTerm) -> NodeTerm {
        match (
            node_reqs(t.match_expressions.as_ref(), false),
            node_reqs(t.match_fields.as_ref(), true),
        ) {
            (Some(exprs), Some(fields)) => NodeTerm {
                exprs,
                fields,
                valid: true,
            },
            _ => NodeTerm {
                exprs: Vec::new(),
                fields: Vec::new(),
                valid: false,
            },
        }
    }

    /// Whether a node named `name` with `labels` matches. An empty term matches nothing.
    pub fn matches(&self, name: &str, labels: &Labels) -> bool {
        if !self.valid || (self.exprs.is_empty() && self.fields.is_empty()) {
            return false;
        }
        self.exprs
            .iter()
            .all(|r| r.matches(labels.get(&r.key).map(String::as_str)))
            && self.fields.iter().all(|r| r.matches(Some(name)))
    }

    /// The node names this term allows through `metadata.name In (…)`, if it restricts them.
    fn allowed_names(&self) -> Option<Vec<String>> {
        let mut names: Option<Vec<String>> = None;
        for f in &self.fields {
            if f.op == Op::In {
                names = Some(match names {
                    None => f.values.clone(),
                    Some(prev) => prev.into_iter().filter(|n| f.values.contains(n)).collect(),
                });
            }
        }
        names
    }
}

/// `nodeaffinity.RequiredNodeAffinity`: `spec.nodeSelector` and the required node affinity
/// terms (ORed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequiredNodeAffinity {
    /// `spec.nodeSelector`: every entry must match.
    pub node_selector: Labels,
    /// `requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms`, when set.
    pub terms: Option<Vec<NodeTerm>>,
}

impl RequiredNodeAffinity {
    /// From a pod's `nodeSelector` and required node selector.
    pub fn new(
        node_selector: Option<&BTreeMap<String, String>>,
        req: Option<&NodeSelector>,
    ) -> Self {
        RequiredNodeAffinity {
            node_selector: node_selector.cloned().unwrap_or_default(),
            terms: req.map(|ns| ns.node_selector_terms.iter().map(NodeTerm::new).collect()),
        }
    }

    /// Whether the node matches both the selector and one of the terms.
    pub fn matches(&self, name: &str, labels: &Labels) -> bool {
        if !self
            .node_selector
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
        {
            return false;
        }
        match &self.terms {
            None => true,
            Some(terms) => terms.iter().any(|t| t.matches(name, labels)),
        }
    }

    /// NodeAffinity's PreFilter result: the set of node names when every term restricts
    /// `metadata.name` with `In` (`None` = all nodes).
    pub fn prefilter_node_names(&self) -> Option<Vec<String>> {
        let terms = self.terms.as_ref()?;
        let mut all = Vec::new();
        for t in terms {
            let names = t.allowed_names()?;
            for n in names {
                if !all.contains(&n) {
                    all.push(n);
                }
            }
        }
        Some(all)
    }

    /// Whether there is anything to check at all.
    pub fn is_empty(&self) -> bool {
        self.node_selector.is_empty() && self.terms.is_none()
    }
}

/// `Toleration.ToleratesTaint`.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(e) = t.effect.as_deref()
        && !e.is_empty()
        && e != taint.effect
    {
        return false;
    }
    if let Some(k) = t.key.as_deref()
        && !k.is_empty()
        && k != taint.key
    {
        return false;
    }
    match t.operator.as_deref().unwrap_or("") {
        "" | "Equal" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        "Exists" => true,
        _ => false,
    }
}

/// Whether any toleration tolerates `taint`.
pub fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| tolerates(t, taint))
}

/// `FindMatchingUntoleratedTaint` for the effects `filter` accepts.
pub fn untolerated_taint<'a>(
    taints: &'a [Taint],
    tolerations: &[Toleration],
    filter: impl Fn(&Taint) -> bool,
) -> Option<&'a Taint> {
    taints
        .iter()
        .filter(|t| filter(t))
        .find(|t| !tolerated(tolerations, t))
}

/// NoSchedule and NoExecute taints (`DoNotScheduleTaintsFilterFunc`).
pub fn do_not_schedule(t: &Taint) -> bool {
    t.effect == "NoSchedule" || t.effect == "NoExecute"
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn nreq(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn label_selector_semantics() {
        assert!(!Selector::from_label_selector(None).matches(&labels(&[])));
        let all = Selector::from_label_selector(Some(&LabelSelector::default()));
        assert!(all.is_empty() && all.matches(&labels(&[("a", "b")])));
        let sel = Selector::from_label_selector(Some(&LabelSelector {
            match_labels: Some([("app".to_string(), "web".to_string())].into()),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "NotIn".into(),
                    values: Some(vec!["db".into()]),
                },
                LabelSelectorRequirement {
                    key: "env".into(),
                    operator: "Exists".into(),
                    values: None,
                },
            ]),
        }));
        assert!(sel.matches(&labels(&[("app", "web"), ("env", "x")])));
        assert!(!sel.matches(&labels(&[("app", "web"), ("env", "x"), ("tier", "db")])));
        assert!(!sel.matches(&labels(&[("app", "web")])));
        let bad = Selector::from_label_selector(Some(&LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "a".into(),
                operator: "Gt".into(),
                values: Some(vec!["1".into()]),
            }]),
        }));
        assert!(!bad.matches(&labels(&[("a", "5")])));
    }

    #[test]
    fn node_affinity_operators() {
        let node = labels(&[("zone", "a"), ("cores", "8"), ("gpu", "true")]);
        let term = |reqs: Vec<NodeSelectorRequirement>| {
            NodeTerm::new(&NodeSelectorTerm {
                match_expressions: Some(reqs),
                match_fields: None,
            })
        };
        assert!(term(vec![nreq("zone", "In", &["a", "b"])]).matches("n1", &node));
        assert!(!term(vec![nreq("zone", "NotIn", &["a"])]).matches("n1", &node));
        assert!(term(vec![nreq("zone", "NotIn", &["b"])]).matches("n1", &node));
        assert!(term(vec![nreq("gpu", "Exists", &[])]).matches("n1", &node));
        assert!(term(vec![nreq("ssd", "DoesNotExist", &[])]).matches("n1", &node));
        assert!(term(vec![nreq("cores", "Gt", &["4"])]).matches("n1", &node));
        assert!(!term(vec![nreq("cores", "Gt", &["8"])]).matches("n1", &node));
        assert!(term(vec![nreq("cores", "Lt", &["9"])]).matches("n1", &node));
        assert!(!term(vec![nreq("zone", "Lt", &["9"])]).matches("n1", &node));
        assert!(
            !term(vec![]).matches("n1", &node),
            "an empty term matches nothing"
        );
        let fields = NodeTerm::new(&NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![nreq("metadata.name", "In", &["n1"])]),
        });
        assert!(fields.matches("n1", &node));
        assert!(!fields.matches("n2", &node));
        let req = RequiredNodeAffinity::new(
            Some(&[("zone".to_string(), "a".to_string())].into()),
            Some(&NodeSelector {
                node_selector_terms: vec![
                    NodeSelectorTerm {
                        match_expressions: None,
                        match_fields: Some(vec![nreq("metadata.name", "In", &["n1", "n2"])]),
                    },
                    NodeSelectorTerm {
                        match_expressions: None,
                        match_fields: Some(vec![nreq("metadata.name", "In", &["n3"])]),
                    },
                ],
            }),
        );
        assert_eq!(
            req.prefilter_node_names(),
            Some(vec!["n1".to_string(), "n2".into(), "n3".into()])
        );
        assert!(req.matches("n3", &node));
        assert!(!req.matches("n3", &labels(&[("zone", "b")])));
    }

    #[test]
    fn tolerations() {
        let taint = Taint {
            key: "k".into(),
            value: Some("v".into()),
            effect: "NoSchedule".into(),
            time_added: None,
        };
        let tol =
            |key: Option<&str>, op: Option<&str>, value: Option<&str>, effect: Option<&str>| {
                Toleration {
                    key: key.map(Into::into),
                    operator: op.map(Into::into),
                    value: value.map(Into::into),
                    effect: effect.map(Into::into),
                    toleration_seconds: None,
                }
            };
        assert!(tolerates(&tol(Some("k"), None, Some("v"), None), &taint));
        assert!(!tolerates(
            &tol(Some("k"), Some("Equal"), Some("w"), None),
            &taint
        ));
        assert!(tolerates(
            &tol(Some("k"), Some("Exists"), None, Some("NoSchedule")),
            &taint
        ));
        assert!(!tolerates(
            &tol(Some("k"), Some("Exists"), None, Some("NoExecute")),
            &taint
        ));
        assert!(tolerates(&tol(None, Some("Exists"), None, None), &taint));
        assert!(!tolerates(
            &tol(Some("x"), Some("Exists"), None, None),
            &taint
        ));
    }
}
