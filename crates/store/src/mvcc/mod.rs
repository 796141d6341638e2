//! The MVCC keyspace: every revision of every key, stored in redb keyed by revision, with an
//! in-memory key index ([`index::Index`]) rebuilt at start-up — etcd's design on redb.
//!
//! Writers are the Raft state machine only ([`WriteCtx`], one batch of committed entries per
//! redb write transaction). Readers read at a revision no newer than [`Mvcc::current_rev`],
//! which only moves after the redb transaction holding that revision committed, so a reader
//! never sees a half-applied revision.

pub mod index;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use kumo_etcd_proto::mvccpb::{Event, KeyValue, event::EventType};
use kumo_etcd_proto::pb::{self, range_request::SortOrder, range_request::SortTarget};
use parking_lot::{Mutex, RwLock};
use prost::Message;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::error::{Result, StoreError};
pub use index::{Index, KeyAt, KeyRange, Rev};

/// Every revision of every key: `(main, sub)` → tag byte (0 put, 1 tombstone) + `KeyValue`.
pub(crate) const KV: TableDefinition<'static, (u64, u64), &'static [u8]> =
    TableDefinition::new("kv");
/// Small named values: applied log id, membership, compaction state, alarms, member ids.
pub(crate) const META: TableDefinition<'static, &'static str, &'static [u8]> =
    TableDefinition::new("meta");
/// Granted leases: id → granted TTL (seconds).
pub(crate) const LEASES: TableDefinition<'static, i64, i64> = TableDefinition::new("leases");

const TAG_PUT: u8 = 0;
const TAG_TOMBSTONE: u8 = 1;

fn encode_row(kv: &KeyValue, tombstone: bool) -> Vec<u8> {
    let mut b = Vec::with_capacity(1 + kv.encoded_len());
    b.push(if tombstone { TAG_TOMBSTONE } else { TAG_PUT });
    // Encoding into a Vec cannot fail.
    let _ = kv.encode(&mut b);
    b
}

fn decode_row(b: &[u8]) -> Result<(bool, KeyValue)> {
    let (tag, body) = b
        .split_first()
        .ok_or_else(|| StoreError::internal("empty kv row"))?;
    let kv = KeyValue::decode(body).map_err(StoreError::internal)?;
    Ok((*tag == TAG_TOMBSTONE, kv))
}

fn rk(r: Rev) -> (u64, u64) {
    (r.main as u64, r.sub as u64)
}

/// The MVCC store.
pub struct Mvcc {
    db: RwLock<Database>,
    path: PathBuf,
    index: RwLock<Index>,
    /// Latest revision whose redb transaction has committed.
    current: AtomicI64,
    /// Compacted main revision (-1 if never compacted).
    compacted: AtomicI64,
    /// Main revision up to which rows were physically removed.
    compact_done: tokio::sync::watch::Sender<i64>,
    /// Serializes physical compactions.
    compactor: Mutex<()>,
    /// Size of the database file, read after every commit that can change it (the quota
    /// check runs on every write request and must not cost a `statx` each).
    size: AtomicU64,
    /// Background write-back of the file's dirty pages (see [`Writeback`]).
    writeback: Writeback,
    /// Bytes of rows written since the last durable commit (see [`SYNC_EVERY_BYTES`]).
    unsynced: AtomicU64,
}

/// redb's cache, shared by read pages and the write buffer (at most half). The write buffer
/// holds the pages of non-durable commits until a durable one writes them out, so its size
/// bounds what a durable checkpoint has to write while it holds the write lock (and every
/// apply waits): a 256 MiB cache let ~100 MB pile up at 1,000 pod writes per second and
/// stalled applies for 0.25–0.5 s at each checkpoint, 48 MiB for ~220 ms once the apiserver
/// got faster, 24 MiB for ~70 ms at no cost in put throughput. Pages past the budget go to
/// the file as they are written, where [`Writeback`] flushes them without any lock.
const CACHE_BYTES: usize = 24 * 1024 * 1024;

/// Rows written by non-durable commits after which the next batch commits durably. What a
/// durable commit does while it holds redb's write lock (and every apply waits) grows with
/// what was written since the previous one, not with how often it runs: on a 150,000-row,
/// 540 MB database it held ~12 ms after 3 MB of rows, ~21 ms after 6 MB and ~80 ms after
/// 30 MB, at the same total cost. Checkpoints every 10,000 Raft entries of ~3.5 KB pod
/// writes (35 MB) stalled applies for ~100 ms; a durable commit every 4 MiB keeps each
/// stall near 15 ms, and the Raft checkpoint after it finds little left to do.
const SYNC_EVERY_BYTES: u64 = 4 * 1024 * 1024;

/// How often the write-back thread flushes the file when commits happened.
const WRITEBACK_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// A thread that `fdatasync`s the database file every [`WRITEBACK_EVERY`] while commits
/// happen, so the pages non-durable commits wrote are on disk before the next durable
/// checkpoint, whose own sync (taken with redb's write lock held) then finds little to do.
/// It holds no lock of the store: writers never wait for it. Dropping this stops it (the
/// channel it waits on disconnects).
struct Writeback {
    commits: std::sync::Arc<AtomicU64>,
    _stop: std::sync::mpsc::Sender<()>,
}

impl Writeback {
    fn start(path: PathBuf) -> Writeback {
        let commits = std::sync::Arc::new(AtomicU64::new(0));
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let seen_commits = commits.clone();
        let spawned = std::thread::Builder::new()
            .name("store-writeback".into())
            .spawn(move || {
                let mut seen = 0;
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(WRITEBACK_EVERY)
                {
                    let now = seen_commits.load(Ordering::Acquire);
                    if now == seen {
                        continue;
                    }
                    seen = now;
                    // Any descriptor of the file flushes its pages; a read-only one suffices.
                    let t = std::time::Instant::now();
                    let r = std::fs::File::open(&path).and_then(|f| f.sync_data());
                    let took_us = t.elapsed().as_micros() as u64;
                    match r {
                        Ok(()) => tracing::debug!(took_us, "database write-back"),
                        Err(e) => tracing::debug!(error = %e, "database write-back failed"),
                    }
                }
            });
        if let Err(e) = spawned {
            // Without it the store is correct, only checkpoints take longer.
            tracing::warn!(error = %e, "could not start the database write-back thread");
        }
        Writeback {
            commits,
            _stop: stop,
        }
    }

    fn committed(&self) {
        self.commits.fetch_add(1, Ordering::Release);
    }
}

impl std::fmt::Debug for Mvcc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mvcc")
            .field("path", &self.path)
            .field("current", &self.current_rev())
            .finish()
    }
}

/// Reads a named meta value.
pub(crate) fn meta_get<T: ReadableTable<&'static str, &'static [u8]>>(
    t: &T,
    key: &str,
) -> Result<Option<Vec<u8>>> {
    Ok(t.get(key)?.map(|v| v.value().to_vec()))
}

fn meta_i64<T: ReadableTable<&'static str, &'static [u8]>>(
    t: &T,
    key: &str,
) -> Result<Option<i64>> {
    Ok(meta_get(t, key)?.and_then(|v| v.try_into().ok().map(i64::from_be_bytes)))
}

impl Mvcc {
    /// Opens (or creates) the database at `path` and rebuilds the key index.
    pub fn open(path: &Path) -> Result<Mvcc> {
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)?;
        {
            let w = db.begin_write()?;
            w.open_table(KV)?;
            w.open_table(META)?;
            w.open_table(LEASES)?;
            w.commit()?;
        }
        let (index, current, compacted, done) = {
            let r = db.begin_read()?;
            let kv = r.open_table(KV)?;
            let meta = r.open_table(META)?;
            let mut index = Index::default();
            let mut max_main = 1i64;
            for row in kv.iter()? {
                let (k, v) = row?;
                let (main, sub) = k.value();
                let rev = Rev::new(main as i64, sub as i64);
                let (tomb, kv) = decode_row(v.value())?;
                if tomb {
                    index.tombstone(&kv.key, rev);
                } else {
                    index.put(&kv.key, rev, kv.lease);
                }
                max_main = max_main.max(rev.main);
            }
            let compacted = meta_i64(&meta, "compact")?.unwrap_or(-1);
            let done = meta_i64(&meta, "compact_done")?.unwrap_or(-1);
            let stored_rev = meta_i64(&meta, "rev")?.unwrap_or(1);
            let current = max_main.max(compacted).max(stored_rev);
            (index, current, compacted, done)
        };
        let (tx, _) = tokio::sync::watch::channel(done);
        let m = Mvcc {
            db: RwLock::new(db),
            path: path.to_path_buf(),
            index: RwLock::new(index),
            current: AtomicI64::new(current),
            compacted: AtomicI64::new(compacted),
            compact_done: tx,
            compactor: Mutex::new(()),
            size: AtomicU64::new(0),
            writeback: Writeback::start(path.to_path_buf()),
            unsynced: AtomicU64::new(0),
        };
        m.refresh_size();
        if compacted > 0 {
            let keep = m.index.write().compact(compacted);
            if done < compacted {
                m.physical_compact(compacted, &keep)?;
            }
        }
        Ok(m)
    }

    pub fn current_rev(&self) -> i64 {
        self.current.load(Ordering::Acquire)
    }

    pub fn compacted_rev(&self) -> i64 {
        self.compacted.load(Ordering::Acquire)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of keys live or with history in the index.
    pub fn key_count(&self) -> usize {
        self.index.read().len()
    }

    /// Runs `f` with the database (shared: any number at once, but not during defragment).
    pub(crate) fn with_db<T>(&self, f: impl FnOnce(&Database) -> T) -> T {
        f(&self.db.read())
    }

    /// Physical size of the database file (as of the last commit).
    pub fn db_size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    /// Re-reads the database file's size after a commit or a defragment.
    fn refresh_size(&self) {
        let len = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        self.size.store(len, Ordering::Release);
    }

    /// Bytes of the file holding live data (file size less free pages).
    pub fn db_size_in_use(&self) -> u64 {
        let size = self.db_size();
        let db = self.db.read();
        let stats = db.begin_write().map(|w| {
            let s = w.stats();
            w.abort().ok();
            s
        });
        match stats {
            Ok(Ok(s)) => size.saturating_sub(s.fragmented_bytes()),
            _ => size,
        }
    }

    /// Called by the state machine after the transaction holding revisions up to `rev`
    /// committed.
    pub(crate) fn publish_rev(&self, rev: i64) {
        self.current.store(rev, Ordering::Release);
    }

    /// A linearizable or serializable range read at `req.revision` (0: latest).
    pub fn range(&self, req: &pb::RangeRequest) -> Result<pb::RangeResponse> {
        let cur = self.current_rev();
        let at = check_read_rev(req.revision, cur, self.compacted_rev())?;
        let db = self.db.read();
        let r = db.begin_read()?;
        let kv = r.open_table(KV)?;
        let resp = range_in(&kv, &self.index.read(), req, at, cur)?;
        if at < self.compacted_rev() {
            // A compaction raced this read and may have removed what it needed.
            return Err(StoreError::Compacted);
        }
        Ok(resp)
    }

    /// Events with main revision in `[from, to]` for keys matching `want`, in revision order,
    /// scanning at most `limit` revisions (whole revisions only). Returns the events and the
    /// last revision covered. Previous values are filled when `prev_kv` is set and still
    /// available.
    pub fn history(
        &self,
        from: i64,
        to: i64,
        limit: usize,
        want: &dyn Fn(&[u8]) -> bool,
        prev_kv: bool,
    ) -> Result<(Vec<Event>, i64)> {
        let mut out = Vec::new();
        if from > to {
            return Ok((out, to));
        }
        let mut covered = to;
        let db = self.db.read();
        let r = db.begin_read()?;
        let kv = r.open_table(KV)?;
        let index = self.index.read();
        let mut revs_seen = 0usize;
        let mut last_main = -1;
        for row in kv.range((from as u64, 0)..=(to as u64, u64::MAX))? {
            let (k, v) = row?;
            let main = k.value().0 as i64;
            if main != last_main {
                if revs_seen >= limit {
                    covered = last_main;
                    break;
                }
                revs_seen += 1;
                last_main = main;
            }
            let (tomb, kv_row) = decode_row(v.value())?;
            if !want(&kv_row.key) {
                continue;
            }
            let prev = if prev_kv {
                match index.get(&kv_row.key, main - 1) {
                    Some(ka) => kv
                        .get(rk(ka.modified))?
                        .map(|p| decode_row(p.value()))
                        .transpose()?,
                    None => None,
                }
                .map(|(_, p)| p)
            } else {
                None
            };
            out.push(Event {
                r#type: if tomb {
                    EventType::Delete
                } else {
                    EventType::Put
                } as i32,
                kv: Some(kv_row),
                prev_kv: prev,
            });
        }
        Ok((out, covered))
    }

    /// Hash of every row up to `rev` (etcd's HashKV): `(hash, hash_rev, compact_rev)`.
    pub fn hash_kv(&self, rev: i64) -> Result<(u32, i64, i64)> {
        let compacted = self.compacted_rev();
        let cur = self.current_rev();
        if rev > 0 && rev <= compacted {
            return Err(StoreError::Compacted);
        }
        if rev > cur {
            return Err(StoreError::FutureRev);
        }
        let rev = if rev <= 0 { cur } else { rev };
        self.wait_compacted(compacted);
        let db = self.db.read();
        let r = db.begin_read()?;
        let kv = r.open_table(KV)?;
        let mut h = crc32fast::Hasher::new();
        // Like etcd, the hash starts from the bucket name: an empty store hashes non-zero.
        h.update(b"key");
        for row in kv.range((0u64, 0u64)..=(rev as u64, u64::MAX))? {
            let (k, v) = row?;
            let (main, sub) = k.value();
            h.update(&main.to_be_bytes());
            h.update(&sub.to_be_bytes());
            h.update(v.value());
        }
        Ok((h.finalize(), rev, compacted))
    }

    /// Blocks until physical compaction reached `rev`.
    pub fn wait_compacted(&self, rev: i64) {
        let mut rx = self.compact_done.subscribe();
        while *rx.borrow_and_update() < rev {
            if futures::executor::block_on(rx.changed()).is_err() {
                return;
            }
        }
    }

    /// A receiver that sees the physically compacted revision move.
    pub fn compact_done_rx(&self) -> tokio::sync::watch::Receiver<i64> {
        self.compact_done.subscribe()
    }

    /// Removes rows at or below `at` not in `keep`, in small transactions so writers are not
    /// stalled, then records that compaction finished.
    pub fn physical_compact(&self, at: i64, keep: &HashSet<Rev>) -> Result<()> {
        let _one = self.compactor.lock();
        const BATCH: usize = 1000;
        let mut start = (0u64, 0u64);
        loop {
            let db = self.db.read();
            let mut w = db.begin_write()?;
            w.set_durability(Durability::None)?;
            let mut done = true;
            {
                let mut kv = w.open_table(KV)?;
                let mut victims = Vec::with_capacity(BATCH);
                for row in kv.range(start..=(at as u64, u64::MAX))? {
                    let (k, _) = row?;
                    let key = k.value();
                    if victims.len() == BATCH {
                        start = key;
                        done = false;
                        break;
                    }
                    if !keep.contains(&Rev::new(key.0 as i64, key.1 as i64)) {
                        victims.push(key);
                    }
                }
                for key in victims {
                    kv.remove(key)?;
                }
                if done {
                    let mut meta = w.open_table(META)?;
                    meta.insert("compact_done", at.to_be_bytes().as_slice())?;
                }
            }
            w.commit()?;
            self.writeback.committed();
            drop(db);
            if done {
                break;
            }
        }
        self.refresh_size();
        self.compact_done.send_replace(at);
        Ok(())
    }

    /// Rewrites the database file without free space (etcd's defragment).
    pub fn defragment(&self) -> Result<()> {
        let mut db = self.db.write();
        // A durable commit first: compaction needs every page persisted.
        let mut w = db.begin_write()?;
        w.set_durability(Durability::Immediate)?;
        w.commit()?;
        for attempt in 0..50 {
            match db.compact() {
                Ok(_) => {
                    self.refresh_size();
                    return Ok(());
                }
                Err(redb::CompactionError::TransactionInProgress) if attempt < 49 => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Opens a write context for one batch of applied entries.
    pub(crate) fn begin_write(&self) -> Result<BatchWriter<'_>> {
        let db = self.db.read();
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::None)?;
        Ok(BatchWriter {
            mvcc: self,
            _db: db,
            txn: Some(txn),
            rev: self.current_rev(),
        })
    }

    /// Commits everything written so far, durably (fsync): used before the Raft log is purged.
    /// Returns how long the commit held the write lock (every apply waits that long) and the
    /// Raft position the committed state reflects, read inside the committing transaction: an
    /// apply that commits right after it is not covered, so it must not be reported.
    pub(crate) fn durable_checkpoint(&self) -> Result<(std::time::Duration, snapshot::DumpInfo)> {
        let db = self.db.read();
        let mut w = db.begin_write()?;
        let t = std::time::Instant::now();
        let info = snapshot::DumpInfo::read(&w.open_table(META)?)?;
        self.make_durable(&mut w)?;
        w.commit()?;
        let held = t.elapsed();
        self.refresh_size();
        Ok((held, info))
    }

    /// Makes `txn`'s commit durable (and quick to repair after a crash); everything written
    /// so far is then counted as synced.
    fn make_durable(&self, txn: &mut redb::WriteTransaction) -> Result<()> {
        txn.set_durability(Durability::Immediate)?;
        txn.set_quick_repair(true);
        self.unsynced.store(0, Ordering::Release);
        Ok(())
    }

    /// Counts rows written towards the next durable commit.
    fn wrote(&self, bytes: usize) {
        self.unsynced.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Records a compaction at `at` (already validated) and returns the revisions to keep.
    fn compact_index(&self, at: i64) -> HashSet<Rev> {
        let keep = self.index.write().compact(at);
        self.compacted.store(at, Ordering::Release);
        keep
    }
}

/// Validates a read revision the way etcd does and resolves 0 to the latest.
pub fn check_read_rev(rev: i64, cur: i64, compacted: i64) -> Result<i64> {
    if rev > cur {
        return Err(StoreError::FutureRev);
    }
    let at = if rev <= 0 { cur } else { rev };
    if at < compacted {
        return Err(StoreError::Compacted);
    }
    Ok(at)
}

/// Range over `table` at revision `at`, with etcd's filtering, sorting and limit rules.
/// `header_rev` is the revision reported in the response header.
pub(crate) fn range_in<T: ReadableTable<(u64, u64), &'static [u8]>>(
    table: &T,
    index: &Index,
    req: &pb::RangeRequest,
    at: i64,
    header_rev: i64,
) -> Result<pb::RangeResponse> {
    let range = KeyRange::from_request(&req.key, &req.range_end);
    let sort_order = SortOrder::try_from(req.sort_order).unwrap_or(SortOrder::None);
    let sort_target = SortTarget::try_from(req.sort_target).unwrap_or(SortTarget::Key);
    let filtered = req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0;
    let needs_all = sort_order != SortOrder::None || filtered;
    // Fetch one more than asked, to know whether there is more.
    let fetch = if req.limit > 0 && !needs_all {
        (req.limit as usize).saturating_add(1)
    } else {
        usize::MAX
    };
    let mut count = 0i64;
    let mut revs: Vec<KeyAt> = Vec::new();
    index.range(&range, at, |_, ka| {
        count += 1;
        if !req.count_only && revs.len() < fetch {
            revs.push(ka);
        }
        true
    });
    let mut resp = pb::RangeResponse {
        header: Some(pb::ResponseHeader {
            revision: header_rev,
            ..Default::default()
        }),
        kvs: Vec::new(),
        more: false,
        count,
    };
    if req.count_only {
        return Ok(resp);
    }
    let mut kvs = Vec::with_capacity(revs.len());
    for ka in revs {
        let row = table.get(rk(ka.modified))?.ok_or(StoreError::Compacted)?;
        let (_, kv) = decode_row(row.value())?;
        if req.max_mod_revision != 0 && kv.mod_revision > req.max_mod_revision {
            continue;
        }
        if req.min_mod_revision != 0 && kv.mod_revision < req.min_mod_revision {
            continue;
        }
        if req.max_create_revision != 0 && kv.create_revision > req.max_create_revision {
            continue;
        }
        if req.min_create_revision != 0 && kv.create_revision < req.min_create_revision {
            continue;
        }
        kvs.push(kv);
    }
    let order = if sort_target != SortTarget::Key && sort_order == SortOrder::None {
        SortOrder::Ascend
    } else {
        sort_order
    };
    if order != SortOrder::None {
        let key = |kv: &KeyValue| -> (i64, Vec<u8>) {
            match sort_target {
                SortTarget::Key => (0, kv.key.clone()),
                SortTarget::Version => (kv.version, Vec::new()),
                SortTarget::Create => (kv.create_revision, Vec::new()),
                SortTarget::Mod => (kv.mod_revision, Vec::new()),
                SortTarget::Value => (0, kv.value.clone()),
            }
        };
        if order == SortOrder::Descend {
            kvs.sort_by_key(|kv| std::cmp::Reverse(key(kv)));
        } else {
            kvs.sort_by_key(key);
        }
    }
    if req.limit > 0 && kvs.len() > req.limit as usize {
        kvs.truncate(req.limit as usize);
        resp.more = true;
    }
    if req.keys_only {
        for kv in &mut kvs {
            kv.value = Vec::new();
        }
    }
    resp.kvs = kvs;
    Ok(resp)
}

/// Hooks the MVCC layer calls while applying, so leases track their keys.
pub(crate) trait LeaseHooks {
    fn exists(&self, id: i64) -> bool;
    fn attach(&self, id: i64, key: &[u8]);
    fn detach(&self, id: i64, key: &[u8]);
}

/// One redb write transaction covering a batch of applied Raft entries.
pub(crate) struct BatchWriter<'a> {
    mvcc: &'a Mvcc,
    _db: parking_lot::RwLockReadGuard<'a, Database>,
    txn: Option<redb::WriteTransaction>,
    /// Revision after the last finished store transaction of this batch.
    rev: i64,
}

impl<'a> BatchWriter<'a> {
    pub fn txn(&self) -> &redb::WriteTransaction {
        self.txn.as_ref().expect("open until commit")
    }

    pub fn rev(&self) -> i64 {
        self.rev
    }

    /// Starts one store transaction (one revision if it writes anything).
    pub fn store_txn(&mut self) -> Result<StoreTxn<'_>> {
        let BatchWriter { mvcc, txn, rev, .. } = self;
        let table = txn.as_ref().expect("open until commit").open_table(KV)?;
        Ok(StoreTxn {
            mvcc,
            begin: *rev,
            out_rev: rev,
            table: Some(table),
            sub: 0,
            events: Vec::new(),
        })
    }

    /// Validates and records a compaction at `at`. Returns the revisions to keep; the caller
    /// removes the others after commit with [`Mvcc::physical_compact`].
    pub fn compact(&mut self, at: i64) -> Result<HashSet<Rev>> {
        if at <= self.mvcc.compacted_rev() {
            return Err(StoreError::Compacted);
        }
        if at > self.rev {
            return Err(StoreError::FutureRev);
        }
        let mut meta = self.txn().open_table(META)?;
        meta.insert("compact", at.to_be_bytes().as_slice())?;
        drop(meta);
        Ok(self.mvcc.compact_index(at))
    }

    /// Commits the batch and publishes its revision to readers. Not durable (the Raft log is
    /// the durable record) unless [`SYNC_EVERY_BYTES`] of rows were written since the last
    /// durable commit: then this batch makes everything durable, in a stall kept short by
    /// that bound.
    pub fn commit(mut self) -> Result<i64> {
        let mut txn = self.txn.take().expect("open until commit");
        {
            let mut meta = txn.open_table(META)?;
            meta.insert("rev", self.rev.to_be_bytes().as_slice())?;
        }
        if self.mvcc.unsynced.load(Ordering::Acquire) >= SYNC_EVERY_BYTES {
            self.mvcc.make_durable(&mut txn)?;
        }
        txn.commit()?;
        self.mvcc.writeback.committed();
        self.mvcc.refresh_size();
        self.mvcc.publish_rev(self.rev);
        Ok(self.rev)
    }
}

/// One etcd store transaction inside a batch: all its writes share one main revision.
pub(crate) struct StoreTxn<'b> {
    mvcc: &'b Mvcc,
    out_rev: &'b mut i64,
    table: Option<redb::Table<'b, (u64, u64), &'static [u8]>>,
    begin: i64,
    sub: i64,
    events: Vec<Event>,
}

impl StoreTxn<'_> {
    fn table(&self) -> &redb::Table<'_, (u64, u64), &'static [u8]> {
        self.table.as_ref().expect("open until end")
    }

    /// The revision reads inside this transaction see (includes its own writes).
    pub fn read_rev(&self) -> i64 {
        if self.sub > 0 {
            self.begin + 1
        } else {
            self.begin
        }
    }

    /// The compacted revision of the store.
    pub fn compacted_rev(&self) -> i64 {
        self.mvcc.compacted_rev()
    }

    /// The revision of this transaction's writes.
    pub fn write_rev(&self) -> i64 {
        self.begin + 1
    }

    pub fn range(&self, req: &pb::RangeRequest) -> Result<pb::RangeResponse> {
        let cur = self.read_rev();
        let at = check_read_rev(req.revision, cur, self.mvcc.compacted_rev())?;
        let index = self.mvcc.index.read();
        range_in(self.table(), &index, req, at, cur)
    }

    /// The live value of `key`, if any.
    pub fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        let at = self.read_rev();
        let ka = self.mvcc.index.read().get(key, at);
        match ka {
            Some(ka) => {
                let row = self
                    .table()
                    .get(rk(ka.modified))?
                    .ok_or(StoreError::Compacted)?;
                Ok(Some(decode_row(row.value())?.1))
            }
            None => Ok(None),
        }
    }

    /// Writes `key` at this transaction's revision. `prev` is the previous value when the
    /// caller read it (watchers want it as the event's `prev_kv`); the revision bookkeeping
    /// and the lease it replaces come from the index, so a plain put never reads the backend.
    pub fn put(
        &mut self,
        key: &[u8],
        value: Vec<u8>,
        lease: i64,
        leases: &dyn LeaseHooks,
        prev: Option<KeyValue>,
    ) -> Result<()> {
        let rev = Rev::new(self.write_rev(), self.sub);
        let at = self.read_rev();
        let table = self.table.as_mut().expect("open until end");
        let mut index = self.mvcc.index.write();
        let (kv, old_lease) = index.put_with(key, rev, lease, at, |before| {
            let (created, version, old_lease) = match before {
                Some((ka, l)) => (ka.created.main, ka.version + 1, l),
                None => (rev.main, 1, 0),
            };
            let kv = KeyValue {
                key: key.to_vec(),
                create_revision: created,
                mod_revision: rev.main,
                version,
                value,
                lease,
            };
            let row = encode_row(&kv, false);
            self.mvcc.wrote(row.len());
            table.insert(rk(rev), row.as_slice())?;
            Ok::<_, StoreError>((kv, old_lease))
        })?;
        drop(index);
        if old_lease != lease {
            if old_lease != 0 {
                leases.detach(old_lease, key);
            }
            if lease != 0 {
                leases.attach(lease, key);
            }
        }
        self.sub += 1;
        self.events.push(Event {
            r#type: EventType::Put as i32,
            kv: Some(kv),
            prev_kv: prev,
        });
        Ok(())
    }

    /// Deletes every live key in `range`; returns the deleted values (in key order).
    pub fn delete_range(
        &mut self,
        range: &KeyRange,
        leases: &dyn LeaseHooks,
    ) -> Result<Vec<KeyValue>> {
        let at = self.read_rev();
        let mut keys = Vec::new();
        self.mvcc.index.read().range(range, at, |k, ka| {
            keys.push((k.to_vec(), ka));
            true
        });
        let mut deleted = Vec::with_capacity(keys.len());
        for (key, ka) in keys {
            let prev = {
                let row = self
                    .table()
                    .get(rk(ka.modified))?
                    .ok_or(StoreError::Compacted)?;
                decode_row(row.value())?.1
            };
            let rev = Rev::new(self.write_rev(), self.sub);
            let tomb = KeyValue {
                key: key.clone(),
                mod_revision: rev.main,
                ..Default::default()
            };
            let row = encode_row(&tomb, true);
            self.mvcc.wrote(row.len());
            self.table
                .as_mut()
                .expect("open until end")
                .insert(rk(rev), row.as_slice())?;
            self.mvcc.index.write().tombstone(&key, rev);
            if prev.lease != 0 {
                leases.detach(prev.lease, &key);
            }
            self.sub += 1;
            self.events.push(Event {
                r#type: EventType::Delete as i32,
                kv: Some(tomb),
                prev_kv: Some(prev.clone()),
            });
            deleted.push(prev);
        }
        Ok(deleted)
    }

    /// Ends the transaction: returns the revision it produced (or the unchanged one) and its
    /// events.
    pub fn end(mut self) -> (i64, Vec<Event>) {
        self.table.take();
        if self.sub > 0 {
            *self.out_rev = self.begin + 1;
        }
        (*self.out_rev, std::mem::take(&mut self.events))
    }
}

/// The consistent snapshot format streamed by Maintenance.Snapshot and used to restore a
/// member: a magic line, tagged records, an end tag, then a SHA-256 of everything before it.
pub mod snapshot {
    use super::*;
    use sha2::{Digest, Sha256};
    use std::io::{Read, Write};

    pub const MAGIC: &[u8] = b"KUMO-STORE-SNAPSHOT-1\n";
    const T_KV: u8 = 1;
    const T_META: u8 = 2;
    const T_LEASE: u8 = 3;
    const T_END: u8 = 0xff;

    fn record(out: &mut Vec<u8>, tag: u8, k: &[u8], v: &[u8]) {
        out.push(tag);
        out.extend_from_slice(&(k.len() as u32).to_be_bytes());
        out.extend_from_slice(k);
        out.extend_from_slice(&(v.len() as u32).to_be_bytes());
        out.extend_from_slice(v);
    }

    /// What a dump holds: its revision and the Raft position it reflects.
    #[derive(Debug, Clone, Default)]
    pub struct DumpInfo {
        pub rev: i64,
        pub raft_applied: Option<Vec<u8>>,
        pub raft_membership: Option<Vec<u8>>,
    }

    impl DumpInfo {
        /// What the meta table records of the state it is part of.
        pub(crate) fn read<T: ReadableTable<&'static str, &'static [u8]>>(
            meta: &T,
        ) -> Result<DumpInfo> {
            Ok(DumpInfo {
                rev: meta_i64(meta, "rev")?.unwrap_or(1),
                raft_applied: meta_get(meta, "raft.applied")?,
                raft_membership: meta_get(meta, "raft.membership")?,
            })
        }
    }

    /// Serializes the whole database at one point in time (without the checksum trailer:
    /// see [`checksum`]).
    pub fn dump(m: &Mvcc) -> Result<(Vec<u8>, DumpInfo)> {
        let mut out = Vec::from(MAGIC);
        let mut info = DumpInfo::default();
        m.with_db(|db| -> Result<()> {
            let r = db.begin_read()?;
            let meta = r.open_table(META)?;
            info = DumpInfo::read(&meta)?;
            for row in meta.iter()? {
                let (k, v) = row?;
                record(&mut out, T_META, k.value().as_bytes(), v.value());
            }
            let kv = r.open_table(KV)?;
            for row in kv.iter()? {
                let (k, v) = row?;
                let (main, sub) = k.value();
                let mut key = [0u8; 16];
                key[..8].copy_from_slice(&main.to_be_bytes());
                key[8..].copy_from_slice(&sub.to_be_bytes());
                record(&mut out, T_KV, &key, v.value());
            }
            let leases = r.open_table(LEASES)?;
            for row in leases.iter()? {
                let (k, v) = row?;
                record(
                    &mut out,
                    T_LEASE,
                    &k.value().to_be_bytes(),
                    &v.value().to_be_bytes(),
                );
            }
            Ok(())
        })?;
        out.push(T_END);
        // Like an etcd (bbolt) snapshot, the body is a whole number of 512-byte blocks, so
        // etcdctl finds the SHA-256 trailer where it expects it.
        out.resize(out.len().div_ceil(512) * 512, 0);
        Ok((out, info))
    }

    /// The SHA-256 trailer of a dumped body.
    pub fn checksum(body: &[u8]) -> [u8; 32] {
        Sha256::digest(body).into()
    }

    fn bad(msg: &str) -> StoreError {
        StoreError::Internal(format!("invalid snapshot: {msg}"))
    }

    /// Writes a snapshot into a new database file at `path` (which must not exist).
    pub fn restore(mut src: impl Read, path: &Path) -> Result<()> {
        let mut data = Vec::new();
        src.read_to_end(&mut data).map_err(StoreError::internal)?;
        if data.len() < MAGIC.len() + 33 || !data.starts_with(MAGIC) {
            return Err(bad("not a kumo store snapshot"));
        }
        let (body, sum) = data.split_at(data.len() - 32);
        if Sha256::digest(body).as_slice() != sum {
            return Err(bad("checksum mismatch"));
        }
        if path.exists() {
            return Err(StoreError::Internal(format!(
                "{} already exists",
                path.display()
            )));
        }
        let db = Database::create(path)?;
        let w = db.begin_write()?;
        {
            let mut kv = w.open_table(KV)?;
            let mut meta = w.open_table(META)?;
            let mut leases = w.open_table(LEASES)?;
            let mut p = MAGIC.len();
            let take = |p: &mut usize, n: usize| -> Result<&[u8]> {
                let s = body.get(*p..*p + n).ok_or_else(|| bad("truncated"))?;
                *p += n;
                Ok(s)
            };
            loop {
                let tag = take(&mut p, 1)?[0];
                if tag == T_END {
                    break;
                }
                let kl = u32::from_be_bytes(take(&mut p, 4)?.try_into().map_err(|_| bad("len"))?);
                let k = take(&mut p, kl as usize)?;
                let vl = u32::from_be_bytes(take(&mut p, 4)?.try_into().map_err(|_| bad("len"))?);
                let v = take(&mut p, vl as usize)?;
                match tag {
                    T_KV if k.len() == 16 => {
                        let main = u64::from_be_bytes(k[..8].try_into().map_err(|_| bad("key"))?);
                        let sub = u64::from_be_bytes(k[8..].try_into().map_err(|_| bad("key"))?);
                        kv.insert((main, sub), v)?;
                    }
                    T_META => {
                        let name = std::str::from_utf8(k).map_err(|_| bad("meta name"))?;
                        // Raft state belongs to the member being restored, not the source.
                        if !name.starts_with("raft.") {
                            meta.insert(name, v)?;
                        }
                    }
                    T_LEASE if k.len() == 8 && v.len() == 8 => {
                        let id = i64::from_be_bytes(k.try_into().map_err(|_| bad("lease"))?);
                        let ttl = i64::from_be_bytes(v.try_into().map_err(|_| bad("lease"))?);
                        leases.insert(id, ttl)?;
                    }
                    _ => return Err(bad("unknown record")),
                }
            }
        }
        w.commit()?;
        Ok(())
    }

    /// Writes `data` to `w` (helper for file snapshots).
    pub fn write_all(mut w: impl Write, data: &[u8]) -> Result<()> {
        w.write_all(data).map_err(StoreError::internal)
    }
}
