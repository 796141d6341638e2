//! The lessor: granted leases, their deadlines and attached keys.
//!
//! Grants and revocations go through Raft (they change state); keep-alives only move the
//! deadline in the leader's memory, as in etcd. After a restart every lease gets its full TTL
//! again.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::{Result, StoreError};
use crate::mvcc::LeaseHooks;

/// Largest TTL etcd accepts (seconds).
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

#[derive(Debug)]
struct Lease {
    ttl: i64,
    deadline: Instant,
    keys: BTreeSet<Vec<u8>>,
    /// A revoke for this expired lease was proposed at this time.
    revoking: Option<Instant>,
}

/// Remaining-time view of a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    pub remaining: i64,
    pub granted: i64,
    pub keys: Vec<Vec<u8>>,
}

/// All leases of this member.
#[derive(Debug)]
pub struct Lessor {
    leases: Mutex<HashMap<i64, Lease>>,
    min_ttl: i64,
}

impl Lessor {
    /// `min_ttl`: shorter TTLs are raised to it (etcd: 1.5 election timeouts, rounded up).
    pub fn new(min_ttl: i64) -> Lessor {
        Lessor {
            leases: Mutex::new(HashMap::new()),
            min_ttl,
        }
    }

    /// Applies a grant. Returns the TTL actually granted.
    pub fn grant(&self, id: i64, ttl: i64) -> Result<i64> {
        if ttl > MAX_LEASE_TTL {
            return Err(StoreError::LeaseTtlTooLarge);
        }
        let mut leases = self.leases.lock();
        if leases.contains_key(&id) {
            return Err(StoreError::LeaseExists);
        }
        let ttl = ttl.max(self.min_ttl);
        leases.insert(
            id,
            Lease {
                ttl,
                deadline: Instant::now() + secs(ttl),
                keys: BTreeSet::new(),
                revoking: None,
            },
        );
        Ok(ttl)
    }

    /// Re-creates a lease found in the database at start-up, with a full TTL.
    pub fn restore(&self, id: i64, ttl: i64) {
        self.leases.lock().insert(
            id,
            Lease {
                ttl,
                deadline: Instant::now() + secs(ttl),
                keys: BTreeSet::new(),
                revoking: None,
            },
        );
    }

    /// Applies a revoke: forgets the lease and returns its keys, sorted.
    pub fn revoke(&self, id: i64) -> Result<Vec<Vec<u8>>> {
        let lease = self
            .leases
            .lock()
            .remove(&id)
            .ok_or(StoreError::LeaseNotFound)?;
        Ok(lease.keys.into_iter().collect())
    }

    /// Keep-alive: pushes the deadline out by the TTL and returns the TTL.
    pub fn renew(&self, id: i64) -> Result<i64> {
        let mut leases = self.leases.lock();
        let l = leases.get_mut(&id).ok_or(StoreError::LeaseNotFound)?;
        if l.revoking.is_some() {
            // Expired and being revoked: too late, as in etcd.
            return Err(StoreError::LeaseNotFound);
        }
        l.deadline = Instant::now() + secs(l.ttl);
        Ok(l.ttl)
    }

    pub fn info(&self, id: i64) -> Option<LeaseInfo> {
        let leases = self.leases.lock();
        let l = leases.get(&id)?;
        let remaining = l.deadline.saturating_duration_since(Instant::now());
        Some(LeaseInfo {
            remaining: remaining.as_secs() as i64,
            granted: l.ttl,
            keys: l.keys.iter().cloned().collect(),
        })
    }

    pub fn ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.leases.lock().keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Leases past their deadline not already being revoked (or whose revoke is overdue);
    /// marks them as being revoked.
    pub fn take_expired(&self) -> Vec<i64> {
        let now = Instant::now();
        let mut out = Vec::new();
        for (id, l) in self.leases.lock().iter_mut() {
            let retry = l
                .revoking
                .is_none_or(|t| now.duration_since(t) > Duration::from_secs(3));
            if l.deadline <= now && retry {
                l.revoking = Some(now);
                out.push(*id);
            }
        }
        out
    }

    /// Gives every lease a full TTL from now (a new leader does this in etcd).
    pub fn promote(&self) {
        let now = Instant::now();
        for l in self.leases.lock().values_mut() {
            l.deadline = now + secs(l.ttl);
            l.revoking = None;
        }
    }

    pub fn len(&self) -> usize {
        self.leases.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn secs(s: i64) -> Duration {
    Duration::from_secs(s.clamp(0, MAX_LEASE_TTL) as u64)
}

impl LeaseHooks for Lessor {
    fn exists(&self, id: i64) -> bool {
        self.leases.lock().contains_key(&id)
    }

    fn attach(&self, id: i64, key: &[u8]) {
        if let Some(l) = self.leases.lock().get_mut(&id) {
            l.keys.insert(key.to_vec());
        }
    }

    fn detach(&self, id: i64, key: &[u8]) {
        if let Some(l) = self.leases.lock().get_mut(&id) {
            l.keys.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_raises_short_ttls_and_refuses_duplicates() {
        let l = Lessor::new(2);
        assert_eq!(l.grant(7, 1), Ok(2));
        assert_eq!(l.grant(7, 10), Err(StoreError::LeaseExists));
        assert_eq!(
            l.grant(8, MAX_LEASE_TTL + 1),
            Err(StoreError::LeaseTtlTooLarge)
        );
        l.attach(7, b"b");
        l.attach(7, b"a");
        assert_eq!(
            l.info(7).expect("lease").keys,
            vec![b"a".to_vec(), b"b".to_vec()]
        );
        assert_eq!(l.revoke(7), Ok(vec![b"a".to_vec(), b"b".to_vec()]));
        assert_eq!(l.revoke(7), Err(StoreError::LeaseNotFound));
    }
}
