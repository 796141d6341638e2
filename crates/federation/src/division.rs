//! Replica division across member clusters: pure functions, no I/O, so they are unit-tested
//! here and fast enough to run on every reconcile (a decision is a few sorts over ≤ N clusters).
//!
//! Weighted division uses the largest-remainder (Hamilton) method: each cluster gets the floor
//! of its exact quota, and the replicas left over go one each to the largest fractional parts,
//! ties broken by cluster name so the same input always gives the same answer (no churn
//! between controller restarts). Per-cluster `min` is granted first, `max` caps a cluster and
//! its surplus is divided again among the others.

use std::collections::BTreeMap;

/// One eligible cluster with its division inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    /// Relative weight (static weight, or free capacity in replicas for `Capacity`).
    pub weight: u64,
    pub min: u32,
    pub max: Option<u32>,
}

impl Candidate {
    pub fn new(name: impl Into<String>, weight: u64) -> Self {
        Candidate {
            name: name.into(),
            weight,
            min: 0,
            max: None,
        }
    }
}

/// Why a division has no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DivisionError {
    /// No candidate at all.
    NoClusters,
    /// Every weight is zero and no `min` asks for replicas.
    AllWeightsZero,
    /// The sum of `min` exceeds the replicas to divide.
    MinimumsExceedTotal { total: u32, minimums: u64 },
}

impl std::fmt::Display for DivisionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DivisionError::NoClusters => write!(f, "no cluster is selected"),
            DivisionError::AllWeightsZero => write!(f, "all cluster weights are zero"),
            DivisionError::MinimumsExceedTotal { total, minimums } => write!(
                f,
                "the per-cluster minimums ({minimums}) exceed the {total} replicas to divide"
            ),
        }
    }
}

impl std::error::Error for DivisionError {}

/// Every cluster runs all replicas.
pub fn duplicated(total: u32, names: &[String]) -> BTreeMap<String, u32> {
    names.iter().map(|n| (n.clone(), total)).collect()
}

/// Largest-remainder split of `total` by `weights` (all > 0 not required; zero weights get 0).
/// Returns shares in the input order.
fn largest_remainder(total: u64, items: &[(&str, u64)]) -> Vec<u64> {
    let sum: u128 = items.iter().map(|(_, w)| u128::from(*w)).sum();
    if sum == 0 {
        return vec![0; items.len()];
    }
    let mut shares = Vec::with_capacity(items.len());
    let mut rems = Vec::with_capacity(items.len());
    let mut given: u64 = 0;
    for (i, (name, w)) in items.iter().enumerate() {
        let exact = u128::from(total) * u128::from(*w);
        let q = (exact / sum) as u64;
        given += q;
        shares.push(q);
        rems.push((exact % sum, *name, i));
    }
    // Largest remainder first, then name ascending.
    rems.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    let mut left = total - given;
    for (r, _, i) in rems {
        if left == 0 {
            break;
        }
        // A zero weight never gets a leftover replica.
        if items[i].1 == 0 && r == 0 {
            continue;
        }
        shares[i] += 1;
        left -= 1;
    }
    shares
}

/// Divides `total` replicas by weight with per-cluster min/max. Replicas that no cluster can
/// take (every one at its max) are left out of the result; the caller compares sums.
pub fn divided(total: u32, cands: &[Candidate]) -> Result<BTreeMap<String, u32>, DivisionError> {
    if cands.is_empty() {
        return Err(DivisionError::NoClusters);
    }
    let minimums: u64 = cands.iter().map(|c| u64::from(c.min)).sum();
    if minimums > u64::from(total) {
        return Err(DivisionError::MinimumsExceedTotal { total, minimums });
    }
    if total > 0 && cands.iter().all(|c| c.weight == 0) && minimums == 0 {
        return Err(DivisionError::AllWeightsZero);
    }
    let mut out: BTreeMap<String, u32> = cands.iter().map(|c| (c.name.clone(), c.min)).collect();
    let mut remaining = u64::from(total) - minimums;
    // Clusters that can still take replicas.
    let mut active: Vec<&Candidate> = cands
        .iter()
        .filter(|c| c.weight > 0 && c.max.is_none_or(|m| m > c.min))
        .collect();
    active.sort_by(|a, b| a.name.cmp(&b.name));
    while remaining > 0 && !active.is_empty() {
        let items: Vec<(&str, u64)> = active.iter().map(|c| (c.name.as_str(), c.weight)).collect();
        let shares = largest_remainder(remaining, &items);
        let mut capped = false;
        let mut next = Vec::new();
        for (c, share) in active.iter().zip(&shares) {
            let have = u64::from(out[&c.name]);
            let room = c
                .max
                .map_or(u64::MAX, |m| u64::from(m).saturating_sub(have));
            if *share >= room {
                // Cap this one and divide what it cannot take among the rest.
                if room > 0 {
                    *out.get_mut(&c.name).unwrap_or(&mut 0) += room as u32;
                    remaining -= room;
                }
                capped = true;
            } else {
                next.push(*c);
            }
        }
        if !capped {
            for (c, share) in active.iter().zip(&shares) {
                if let Some(v) = out.get_mut(&c.name) {
                    *v += *share as u32;
                }
            }
            remaining = 0;
        }
        active = next;
    }
    Ok(out)
}

/// How many replicas of a pod asking `req` (cpu millicores, memory bytes) fit in `free`
/// (cpu millicores, memory bytes, pods): the weight a cluster gets under `Capacity`.
pub fn capacity_replicas(free: (i64, i64, i64), req: (i64, i64)) -> u64 {
    let mut n = free.2.max(0);
    if req.0 > 0 {
        n = n.min(free.0.max(0) / req.0);
    }
    if req.1 > 0 {
        n = n.min(free.1.max(0) / req.1);
    }
    n as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, w: u64) -> Candidate {
        Candidate::new(name, w)
    }

    fn shares(m: &BTreeMap<String, u32>) -> Vec<u32> {
        m.values().copied().collect()
    }

    #[test]
    fn equal_weights_split_evenly() {
        let r = divided(6, &[c("a", 1), c("b", 1), c("c", 1)]).expect("divide");
        assert_eq!(shares(&r), vec![2, 2, 2]);
    }

    #[test]
    fn weights_two_one_zero() {
        let r = divided(6, &[c("a", 2), c("b", 1), c("c", 0)]).expect("divide");
        assert_eq!(shares(&r), vec![4, 2, 0]);
    }

    #[test]
    fn remainder_ties_go_by_name() {
        // 7 over three equal weights: 2/2/2 plus one leftover, which goes to "a".
        let r = divided(7, &[c("c", 1), c("b", 1), c("a", 1)]).expect("divide");
        assert_eq!(r["a"], 3);
        assert_eq!(r["b"], 2);
        assert_eq!(r["c"], 2);
        // Largest remainder wins over name: 5 by 1:2 → 1.67/3.33 → 2/3.
        let r = divided(5, &[c("a", 1), c("b", 2)]).expect("divide");
        assert_eq!((r["a"], r["b"]), (2, 3));
    }

    #[test]
    fn sum_is_always_total_without_caps() {
        for total in 0..50u32 {
            let r = divided(total, &[c("a", 3), c("b", 7), c("c", 11), c("d", 1)]).expect("divide");
            assert_eq!(r.values().sum::<u32>(), total);
        }
    }

    #[test]
    fn max_caps_and_redistributes() {
        let mut a = c("a", 1);
        a.max = Some(1);
        let r = divided(6, &[a, c("b", 1), c("c", 1)]).expect("divide");
        assert_eq!(shares(&r), vec![1, 3, 2]);
    }

    #[test]
    fn min_is_granted_first() {
        let mut z = c("z", 0);
        z.min = 2;
        let r = divided(6, &[c("a", 1), c("b", 1), z]).expect("divide");
        assert_eq!(shares(&r), vec![2, 2, 2]);
    }

    #[test]
    fn everything_capped_leaves_replicas_out() {
        let mut a = c("a", 1);
        a.max = Some(2);
        let r = divided(6, &[a]).expect("divide");
        assert_eq!(r["a"], 2);
    }

    #[test]
    fn errors() {
        assert_eq!(divided(3, &[]), Err(DivisionError::NoClusters));
        assert_eq!(
            divided(3, &[c("a", 0), c("b", 0)]),
            Err(DivisionError::AllWeightsZero)
        );
        let mut a = c("a", 1);
        a.min = 4;
        assert_eq!(
            divided(3, &[a]),
            Err(DivisionError::MinimumsExceedTotal {
                total: 3,
                minimums: 4
            })
        );
    }

    #[test]
    fn duplicated_gives_all_to_each() {
        let r = duplicated(6, &["a".into(), "b".into()]);
        assert_eq!(shares(&r), vec![6, 6]);
    }

    #[test]
    fn capacity_counts_the_tightest_resource() {
        // 4 cores, 1 GiB, 110 pods; pods ask 500m and 256 MiB → memory allows 4.
        assert_eq!(capacity_replicas((4000, 1 << 30, 110), (500, 256 << 20)), 4);
        // No requests: only the pod count limits.
        assert_eq!(capacity_replicas((0, 0, 7), (0, 0)), 7);
        assert_eq!(capacity_replicas((-5, 0, 7), (100, 0)), 0);
    }

    #[test]
    fn decision_is_fast_at_100_clusters() {
        // Not a timed assertion: the same input gives the same output (determinism), and the
        // division of 1,000 replicas over 100 clusters sums to the total.
        let cands: Vec<Candidate> = (0..100)
            .map(|i| c(&format!("m{i:03}"), 1 + i % 7))
            .collect();
        let a = divided(1000, &cands).expect("divide");
        let b = divided(1000, &cands).expect("divide");
        assert_eq!(a, b);
        assert_eq!(a.values().sum::<u32>(), 1000);
    }
}
