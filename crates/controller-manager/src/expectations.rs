//! `ControllerExpectations` / `UIDTrackingControllerExpectations`: what a controller has asked
//! the apiserver to create or delete and not yet seen in its informer, so it never acts twice
//! on a stale cache (no over-creation after a burst of creates).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Upstream's `ExpectationsTimeout`: unmet expectations older than this are ignored.
pub const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(5 * 60);

#[derive(Debug)]
struct Expectation {
    add: i64,
    del: i64,
    at: Instant,
    /// Keys (`ns/name`) of pods we asked to delete and have not seen go.
    deleting: HashSet<String>,
}

/// Per-controller-key expectations.
#[derive(Debug, Default)]
pub struct Expectations {
    inner: Mutex<HashMap<String, Expectation>>,
}

impl Expectations {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the controller `key` may act: no expectations, all met, or expired.
    pub fn satisfied(&self, key: &str) -> bool {
        match self.inner.lock().get(key) {
            None => true,
            Some(e) => (e.add <= 0 && e.del <= 0) || e.at.elapsed() > EXPECTATIONS_TIMEOUT,
        }
    }

    /// Expects `n` creations for `key` (replacing any previous expectation).
    pub fn expect_creations(&self, key: &str, n: usize) {
        self.inner.lock().insert(
            key.to_string(),
            Expectation {
                add: i64::try_from(n).unwrap_or(i64::MAX),
                del: 0,
                at: Instant::now(),
                deleting: HashSet::new(),
            },
        );
    }

    /// Expects the deletion of `pods` (their `ns/name` keys) for `key`.
    pub fn expect_deletions(&self, key: &str, pods: Vec<String>) {
        let deleting: HashSet<String> = pods.into_iter().collect();
        self.inner.lock().insert(
            key.to_string(),
            Expectation {
                add: 0,
                del: i64::try_from(deleting.len()).unwrap_or(i64::MAX),
                at: Instant::now(),
                deleting,
            },
        );
    }

    /// One creation observed (or one that will never happen).
    pub fn creation_observed(&self, key: &str) {
        if let Some(e) = self.inner.lock().get_mut(key) {
            e.add -= 1;
        }
    }

    /// The deletion of `pod_key` observed (or one that will never happen).
    pub fn deletion_observed(&self, key: &str, pod_key: &str) {
        if let Some(e) = self.inner.lock().get_mut(key)
            && e.deleting.remove(pod_key)
        {
            e.del -= 1;
        }
    }

    /// Drops the expectations of a controller that is gone.
    pub fn delete(&self, key: &str) {
        self.inner.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle() {
        let e = Expectations::new();
        assert!(e.satisfied("a"));
        e.expect_creations("a", 2);
        assert!(!e.satisfied("a"));
        e.creation_observed("a");
        assert!(!e.satisfied("a"));
        e.creation_observed("a");
        assert!(e.satisfied("a"));
        e.expect_deletions("a", vec!["ns/p1".into()]);
        e.deletion_observed("a", "ns/other");
        assert!(!e.satisfied("a"));
        e.deletion_observed("a", "ns/p1");
        e.deletion_observed("a", "ns/p1");
        assert!(e.satisfied("a"));
    }
}
