//! The in-memory key index: for every key, its generations of revisions (etcd's treeIndex).
//!
//! A generation runs from a key's creation to its deletion (tombstone). Values live in the
//! backend keyed by revision; the index answers "which revision of key K is visible at
//! revision R" and enumerates key ranges in order.

use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;

/// A store revision: `main` is the store revision, `sub` the position inside a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Rev {
    pub main: i64,
    pub sub: i64,
}

impl Rev {
    pub fn new(main: i64, sub: i64) -> Rev {
        Rev { main, sub }
    }
}

#[derive(Debug, Clone, Default)]
struct Generation {
    /// Version of the key at the last revision of this generation.
    ver: i64,
    created: Rev,
    revs: Vec<Rev>,
}

#[derive(Debug, Clone, Default)]
struct KeyIndex {
    /// The last generation is the live one; it is empty when the key is deleted.
    gens: Vec<Generation>,
    /// Lease of the key's latest revision (0: none, or deleted): a put learns the lease it
    /// replaces without reading the previous value from the backend.
    lease: i64,
}

/// What the index knows about a key visible at some revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyAt {
    pub modified: Rev,
    pub created: Rev,
    pub version: i64,
}

impl KeyIndex {
    fn put(&mut self, rev: Rev, lease: i64) {
        self.lease = lease;
        if self.gens.is_empty() {
            self.gens.push(Generation::default());
        }
        let g = self.gens.last_mut().expect("non-empty");
        if g.revs.is_empty() {
            g.created = rev;
        }
        g.revs.push(rev);
        g.ver += 1;
    }

    /// Returns false if the key is not live.
    fn tombstone(&mut self, rev: Rev) -> bool {
        match self.gens.last() {
            Some(g) if !g.revs.is_empty() => {}
            _ => return false,
        }
        self.put(rev, 0);
        self.gens.push(Generation::default());
        true
    }

    fn find_generation(&self, at: i64) -> Option<&Generation> {
        let last = self.gens.len().checked_sub(1)?;
        for (i, g) in self.gens.iter().enumerate().rev() {
            if g.revs.is_empty() {
                continue;
            }
            if i != last
                && let Some(tomb) = g.revs.last()
                && tomb.main <= at
            {
                return None;
            }
            if g.revs[0].main <= at {
                return Some(g);
            }
        }
        None
    }

    fn get(&self, at: i64) -> Option<KeyAt> {
        let g = self.find_generation(at)?;
        let n = g.revs.iter().rposition(|r| r.main <= at)?;
        Some(KeyAt {
            modified: g.revs[n],
            created: g.created,
            version: g.ver - (g.revs.len() - n - 1) as i64,
        })
    }

    fn is_empty(&self) -> bool {
        self.gens.iter().all(|g| g.revs.is_empty())
    }

    /// Drops revisions older than `at` that are superseded, keeping the last revision at or
    /// before `at` of the generation alive then (added to `keep`). Returns true when the key has
    /// no revision left.
    fn compact(&mut self, at: i64, keep: &mut HashSet<Rev>) -> bool {
        let mut gi = 0;
        // Skip generations that ended (tombstone) at or before `at`.
        while gi + 1 < self.gens.len() {
            let g = &self.gens[gi];
            match g.revs.last() {
                Some(t) if t.main > at => break,
                _ => gi += 1,
            }
        }
        let ngens = self.gens.len();
        let g = &mut self.gens[gi];
        if !g.revs.is_empty() {
            if let Some(n) = g.revs.iter().rposition(|r| r.main <= at) {
                keep.insert(g.revs[n]);
                g.revs.drain(..n);
            }
            // A generation reduced to its tombstone is gone entirely.
            if g.revs.len() == 1 && gi + 1 != ngens && g.revs[0].main <= at {
                keep.remove(&g.revs[0]);
                gi += 1;
            }
        }
        self.gens.drain(..gi);
        self.is_empty()
    }
}

/// The index of all keys.
#[derive(Debug, Default)]
pub struct Index {
    keys: BTreeMap<Vec<u8>, KeyIndex>,
}

/// A key range: `[start, end)`, with `end = None` meaning "to the end of the keyspace" and an
/// empty `end` (single key) expressed as `Single`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRange {
    Single(Vec<u8>),
    Range {
        start: Vec<u8>,
        end: Option<Vec<u8>>,
    },
}

impl KeyRange {
    /// Interprets etcd's `(key, range_end)` pair: an empty `range_end` is the single key,
    /// `"\0"` is every key `>= key` (and with key `"\0"`, every key).
    pub fn from_request(key: &[u8], range_end: &[u8]) -> KeyRange {
        if range_end.is_empty() {
            KeyRange::Single(key.to_vec())
        } else if range_end == [0] {
            KeyRange::Range {
                start: key.to_vec(),
                end: None,
            }
        } else {
            KeyRange::Range {
                start: key.to_vec(),
                end: Some(range_end.to_vec()),
            }
        }
    }

    pub fn contains(&self, k: &[u8]) -> bool {
        match self {
            KeyRange::Single(s) => s.as_slice() == k,
            KeyRange::Range { start, end } => {
                k >= start.as_slice() && end.as_ref().is_none_or(|e| k < e.as_slice())
            }
        }
    }

    /// Whether two ranges share at least one key.
    pub fn overlaps(&self, other: &KeyRange) -> bool {
        let (a0, a1) = self.bounds();
        let (b0, b1) = other.bounds();
        let a_before_b_end = b1.as_ref().is_none_or(|e| a0 < *e);
        let b_before_a_end = a1.as_ref().is_none_or(|e| b0 < *e);
        a_before_b_end && b_before_a_end
    }

    /// `[start, end)` with `None` as +infinity.
    fn bounds(&self) -> (Vec<u8>, Option<Vec<u8>>) {
        match self {
            KeyRange::Single(k) => {
                let mut e = k.clone();
                e.push(0);
                (k.clone(), Some(e))
            }
            KeyRange::Range { start, end } => (start.clone(), end.clone()),
        }
    }
}

impl Index {
    pub fn put(&mut self, key: &[u8], rev: Rev, lease: i64) {
        match self.keys.get_mut(key) {
            Some(ki) => ki.put(rev, lease),
            None => {
                let mut ki = KeyIndex::default();
                ki.put(rev, lease);
                self.keys.insert(key.to_vec(), ki);
            }
        }
    }

    /// A put of `key` at `rev` with `lease`, in one lookup: `write` gets what was visible at
    /// `at` (with that revision's lease) and stores the value; only if it succeeds is the put
    /// recorded. Returns what `write` returned.
    pub fn put_with<T, E>(
        &mut self,
        key: &[u8],
        rev: Rev,
        lease: i64,
        at: i64,
        write: impl FnOnce(Option<(KeyAt, i64)>) -> Result<T, E>,
    ) -> Result<T, E> {
        use std::collections::btree_map::Entry;
        match self.keys.entry(key.to_vec()) {
            Entry::Occupied(mut o) => {
                let ki = o.get_mut();
                let before = ki.get(at).map(|ka| (ka, ki.lease));
                let out = write(before)?;
                ki.put(rev, lease);
                Ok(out)
            }
            Entry::Vacant(v) => {
                let out = write(None)?;
                v.insert(KeyIndex::default()).put(rev, lease);
                Ok(out)
            }
        }
    }

    /// Marks `key` deleted at `rev`; false when it was not live.
    pub fn tombstone(&mut self, key: &[u8], rev: Rev) -> bool {
        self.keys.get_mut(key).is_some_and(|ki| ki.tombstone(rev))
    }

    pub fn get(&self, key: &[u8], at: i64) -> Option<KeyAt> {
        self.keys.get(key)?.get(at)
    }

    /// Calls `f` for every key in `range` visible at `at`, in key order, until it returns false.
    pub fn range(&self, range: &KeyRange, at: i64, mut f: impl FnMut(&[u8], KeyAt) -> bool) {
        match range {
            KeyRange::Single(k) => {
                if let Some(ka) = self.get(k, at) {
                    f(k, ka);
                }
            }
            KeyRange::Range { start, end } => {
                if let Some(e) = end
                    && e.as_slice() <= start.as_slice()
                {
                    return;
                }
                let upper = match end {
                    Some(e) => Bound::Excluded(e.as_slice()),
                    None => Bound::Unbounded,
                };
                for (k, ki) in self
                    .keys
                    .range::<[u8], _>((Bound::Included(start.as_slice()), upper))
                {
                    if let Some(ka) = ki.get(at)
                        && !f(k, ka)
                    {
                        return;
                    }
                }
            }
        }
    }

    /// Compacts every key at `at`; returns the revisions at or before `at` still needed.
    pub fn compact(&mut self, at: i64) -> HashSet<Rev> {
        let mut keep = HashSet::new();
        self.keys.retain(|_, ki| !ki.compact(at, &mut keep));
        keep
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(m: i64) -> Rev {
        Rev::new(m, 0)
    }

    #[test]
    fn generations_and_versions() {
        let mut ix = Index::default();
        ix.put(b"a", r(2), 0);
        ix.put(b"a", r(3), 0);
        assert!(ix.tombstone(b"a", r(4)));
        ix.put(b"a", r(5), 0);
        assert_eq!(ix.get(b"a", 1), None);
        let at2 = ix.get(b"a", 2).expect("a@2");
        assert_eq!((at2.version, at2.created, at2.modified), (1, r(2), r(2)));
        assert_eq!(ix.get(b"a", 3).expect("a@3").version, 2);
        assert_eq!(ix.get(b"a", 4), None);
        let at5 = ix.get(b"a", 5).expect("a@5");
        assert_eq!((at5.version, at5.created), (1, r(5)));
        assert!(!ix.tombstone(b"missing", r(6)));
    }

    #[test]
    fn compaction_keeps_what_is_visible() {
        let mut ix = Index::default();
        ix.put(b"a", r(2), 0);
        ix.put(b"a", r(3), 0);
        ix.put(b"b", r(4), 0);
        ix.tombstone(b"b", r(5));
        ix.put(b"a", r(6), 0);
        let keep = ix.compact(5);
        assert!(keep.contains(&r(3)));
        assert!(!keep.contains(&r(2)));
        assert!(!keep.contains(&r(4)) && !keep.contains(&r(5)));
        assert_eq!(ix.get(b"a", 5).expect("a@5").modified, r(3));
        assert_eq!(ix.get(b"b", 4), None, "b's generation is gone");
        assert_eq!(ix.len(), 1);
    }

    #[test]
    fn ranges() {
        let mut ix = Index::default();
        for (i, k) in [b"a".as_slice(), b"ab", b"b", b"c"].iter().enumerate() {
            ix.put(k, r(i as i64 + 2), 0);
        }
        let mut seen = Vec::new();
        ix.range(&KeyRange::from_request(b"a", b"b"), 10, |k, _| {
            seen.push(k.to_vec());
            true
        });
        assert_eq!(seen, vec![b"a".to_vec(), b"ab".to_vec()]);
        seen.clear();
        ix.range(&KeyRange::from_request(b"b", &[0]), 10, |k, _| {
            seen.push(k.to_vec());
            true
        });
        assert_eq!(seen, vec![b"b".to_vec(), b"c".to_vec()]);
        assert!(KeyRange::from_request(b"a", b"c").overlaps(&KeyRange::Single(b"b".to_vec())));
        assert!(!KeyRange::from_request(b"a", b"b").overlaps(&KeyRange::Single(b"b".to_vec())));
    }

    #[test]
    fn put_with_reports_what_it_replaces_and_records_only_on_success() {
        let mut ix = Index::default();
        let first = ix.put_with(b"k", r(2), 7, 1, Ok::<_, ()>);
        assert_eq!(first, Ok(None));
        let second = ix.put_with(b"k", r(3), 0, 2, Ok::<_, ()>);
        let (ka, lease) = second.expect("ok").expect("k was live");
        assert_eq!(
            (ka.modified, ka.created, ka.version, lease),
            (r(2), r(2), 1, 7)
        );
        // A failed write leaves the index as it was, for a new key and an existing one.
        assert_eq!(
            ix.put_with(b"new", r(4), 0, 3, |_| Err::<(), _>("disk")),
            Err("disk")
        );
        assert_eq!(ix.get(b"new", 4), None);
        assert_eq!(ix.len(), 1);
        assert_eq!(
            ix.put_with(b"k", r(4), 0, 3, |_| Err::<(), _>("disk")),
            Err("disk")
        );
        assert_eq!(ix.get(b"k", 4).expect("k").modified, r(3));
        // A tombstone ends the lease; the next generation starts without one.
        assert!(ix.tombstone(b"k", r(5)));
        ix.put(b"k", r(6), 9);
        let third = ix.put_with(b"k", r(7), 0, 6, Ok::<_, ()>);
        let (ka, lease) = third.expect("ok").expect("k live again");
        assert_eq!((ka.created, ka.version, lease), (r(6), 1, 9));
    }
}
