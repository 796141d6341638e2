//! The Raft log: an append-only write-ahead log in segment files with group commit.
//!
//! `append` hands encoded entries to one writer thread, which writes everything queued, calls
//! `fdatasync` once, and only then reports the entries flushed — so an entry is acknowledged
//! only once it is on disk, and many concurrent writes share one sync. Entries not yet purged
//! are also kept in memory for the state machine and replication.
//!
//! Record: `u32 len | u32 crc32(body) | body`, body = `term u64 | node u64 | index u64 | kind
//! u8 | payload`. A torn record at the tail (crash mid-write) is cut off on open.
//!
//! Segments are preallocated: the writer extends the current segment by writing zeros a chunk
//! at a time ([`PREALLOC_BYTES`]), so most syncs overwrite blocks that already belong to the
//! file and `fdatasync` flushes data only — not the inode's size as well (on ext4 that is a
//! second synchronous write per sync, ~35 % of its time on these machines). A zero length
//! marks the end of a segment's records; whatever follows it in the last segment must be
//! zeros, or it is cut off on open (a torn write can leave later pages of a batch behind).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::ops::RangeBounds;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{CommittedLeaderId, EntryPayload, ErrorSubject, ErrorVerb, OptionalSend};
use parking_lot::{Mutex, RwLock};

use super::{Entry, LogId, MemberNode, Membership, Request, StorageError, TypeConfig, Vote};

const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// The writer grows a segment by this many zeroed bytes at a time.
const PREALLOC_BYTES: u64 = 4 * 1024 * 1024;
const META_FILE: &str = "raft-meta.json";

fn io_err(subject: ErrorSubject<u64>, verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    StorageError::from_io_error(subject, verb, std::io::Error::other(e.to_string()))
}

/// Vote and purge point, rewritten atomically (rare).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Meta {
    vote: Option<(u64, u64, bool)>,
    last_purged: Option<(u64, u64, u64)>,
}

fn log_id_of(t: (u64, u64, u64)) -> LogId {
    LogId::new(CommittedLeaderId::new(t.0, t.1), t.2)
}

fn log_id_tuple(l: &LogId) -> (u64, u64, u64) {
    (l.leader_id.term, l.leader_id.node_id, l.index)
}

/// Encodes a membership config as postcard bytes.
pub(crate) fn encode_membership(m: &Membership) -> Vec<u8> {
    let configs: Vec<BTreeSet<u64>> = m.get_joint_config().clone();
    let nodes: BTreeMap<u64, MemberNode> = m.nodes().map(|(k, v)| (*k, v.clone())).collect();
    postcard::to_allocvec(&(configs, nodes)).unwrap_or_default()
}

pub(crate) fn decode_membership(b: &[u8]) -> Result<Membership, postcard::Error> {
    let (configs, nodes): (Vec<BTreeSet<u64>>, BTreeMap<u64, MemberNode>) =
        postcard::from_bytes(b)?;
    Ok(Membership::new(configs, nodes))
}

fn encode_entry(e: &Entry, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0u8; 8]);
    out.extend_from_slice(&e.log_id.leader_id.term.to_be_bytes());
    out.extend_from_slice(&e.log_id.leader_id.node_id.to_be_bytes());
    out.extend_from_slice(&e.log_id.index.to_be_bytes());
    match &e.payload {
        EntryPayload::Blank => out.push(0),
        EntryPayload::Normal(r) => {
            out.push(1);
            r.encode(out);
        }
        EntryPayload::Membership(m) => {
            out.push(2);
            out.extend_from_slice(&encode_membership(m));
        }
    }
    let body_len = out.len() - start - 8;
    let crc = crc32fast::hash(&out[start + 8..]);
    out[start..start + 4].copy_from_slice(&(body_len as u32).to_be_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_be_bytes());
}

pub(crate) fn decode_body(b: &[u8]) -> Option<Entry> {
    if b.len() < 25 {
        return None;
    }
    let u = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
    let log_id = LogId::new(CommittedLeaderId::new(u(0), u(8)), u(16));
    let payload = match b[24] {
        0 => EntryPayload::Blank,
        1 => EntryPayload::Normal(Request::decode(&b[25..])?),
        2 => EntryPayload::Membership(decode_membership(&b[25..]).ok()?),
        _ => return None,
    };
    Some(Entry { log_id, payload })
}

enum Cmd {
    Append {
        buf: Vec<u8>,
        /// (index, offset of its record within `buf`)
        offsets: Vec<(u64, u64)>,
        cb: LogFlushed<TypeConfig>,
    },
    Truncate {
        from: u64,
        done: tokio::sync::oneshot::Sender<std::io::Result<()>>,
    },
    Purge {
        upto: u64,
        /// The purged entries, dropped off the Raft core's path.
        dropped: BTreeMap<u64, Entry>,
    },
}

/// What the purger thread does for one purge: record the purge point, then remove the
/// segments wholly before it.
struct PurgeJob {
    files: Vec<PathBuf>,
    dropped: BTreeMap<u64, Entry>,
}

/// The vote and purge point, and the file they are rewritten to atomically.
struct MetaFile {
    dir: PathBuf,
    meta: Mutex<Meta>,
    /// One rewrite at a time (the vote from the Raft core, the purge point from the purger),
    /// each writing the latest of both.
    persist: Mutex<()>,
}

impl MetaFile {
    fn persist(&self) -> std::io::Result<()> {
        let _one = self.persist.lock();
        let meta = self.meta.lock().clone();
        let tmp = self.dir.join(format!("{META_FILE}.tmp"));
        let mut f = File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(&meta).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, self.dir.join(META_FILE))?;
        sync_dir(&self.dir)
    }

    /// Runs purge jobs until the writer (their only sender) stops. The purge point is on disk
    /// before any segment goes: a crash in between leaves segments whose entries `open` skips,
    /// never a gap. A crash before it leaves entries the purge would have dropped, which is
    /// harmless: the state machine has them durably.
    fn purger(&self, jobs: mpsc::Receiver<PurgeJob>) {
        while let Ok(job) = jobs.recv() {
            let t = std::time::Instant::now();
            let r = self.persist().and_then(|()| {
                for f in &job.files {
                    std::fs::remove_file(f)?;
                }
                Ok(())
            });
            drop(job.dropped);
            match r {
                Ok(()) => tracing::debug!(
                    segments = job.files.len(),
                    took_us = t.elapsed().as_micros() as u64,
                    "raft log purged"
                ),
                Err(e) => tracing::error!(error = %e, "purging raft log segments failed"),
            }
        }
    }
}

struct Shared {
    cache: RwLock<BTreeMap<u64, Entry>>,
    meta: Arc<MetaFile>,
    tx: Mutex<mpsc::Sender<Cmd>>,
}

/// The Raft log storage (cheap to clone; clones share everything).
#[derive(Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("dir", &self.shared.meta.dir)
            .finish()
    }
}

struct Segment {
    first: u64,
    path: PathBuf,
}

struct Writer {
    dir: PathBuf,
    segments: Vec<Segment>,
    file: File,
    /// End of the records in `file`, where the next one is written.
    size: u64,
    /// Length of `file`: `size..allocated` holds zeros.
    allocated: u64,
    /// index → (segment first index, byte offset)
    offsets: BTreeMap<u64, (u64, u64)>,
    next_index: u64,
    metrics: Option<crate::metrics::Metrics>,
    /// Where purges go to be done off the write path.
    purger: mpsc::Sender<PurgeJob>,
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.wal"))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl LogStore {
    /// Opens the log in `dir`, recovering every complete record.
    pub fn open(dir: &Path, metrics: Option<crate::metrics::Metrics>) -> std::io::Result<LogStore> {
        std::fs::create_dir_all(dir)?;
        let meta: Meta = match std::fs::read(dir.join(META_FILE)) {
            Ok(b) => serde_json::from_slice(&b).map_err(std::io::Error::other)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Meta::default(),
            Err(e) => return Err(e),
        };
        let purged: Option<u64> = meta.last_purged.map(|t| t.2);
        let mut firsts: Vec<u64> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".wal")?.parse::<u64>().ok()
            })
            .collect();
        firsts.sort_unstable();
        let mut cache = BTreeMap::new();
        let mut offsets = BTreeMap::new();
        let mut segments = Vec::new();
        let mut broken = false;
        // Where the records of the last segment read end.
        let mut records_end = 0u64;
        for first in firsts {
            let path = segment_path(dir, first);
            if broken {
                // Everything after a damaged record is unreachable history.
                std::fs::remove_file(&path)?;
                continue;
            }
            let mut data = Vec::new();
            File::open(&path)?.read_to_end(&mut data)?;
            let mut p = 0usize;
            while p < data.len() {
                if data.get(p..p + 4).is_none_or(|len| len == [0; 4]) {
                    // The preallocated, never written rest of the segment: zeros, unless a
                    // torn batch left later pages behind.
                    broken = data[p..].iter().any(|b| *b != 0);
                    break;
                }
                let ok = (|| {
                    let hdr = data.get(p..p + 8)?;
                    let len = u32::from_be_bytes(hdr[..4].try_into().ok()?) as usize;
                    let crc = u32::from_be_bytes(hdr[4..].try_into().ok()?);
                    let body = data.get(p + 8..p + 8 + len)?;
                    (crc32fast::hash(body) == crc).then_some(())?;
                    let e = decode_body(body)?;
                    Some((e, 8 + len))
                })();
                match ok {
                    Some((e, n)) => {
                        let idx = e.log_id.index;
                        // A later record with an index already seen overwrote a truncated tail.
                        let stale: Vec<u64> = cache.range(idx..).map(|(k, _)| *k).collect();
                        for k in stale {
                            cache.remove(&k);
                            offsets.remove(&k);
                        }
                        offsets.insert(idx, (first, p as u64));
                        if purged.is_none_or(|p| idx > p) {
                            cache.insert(idx, e);
                        }
                        p += n;
                    }
                    None => {
                        broken = true;
                        break;
                    }
                }
            }
            if broken {
                tracing::warn!(segment = %path.display(), offset = p, "cutting torn or damaged tail of the raft log");
                OpenOptions::new()
                    .write(true)
                    .open(&path)?
                    .set_len(p as u64)?;
            }
            records_end = p as u64;
            segments.push(Segment { first, path });
        }
        let next_index = cache
            .keys()
            .next_back()
            .map(|i| i + 1)
            .unwrap_or(purged.map(|p| p + 1).unwrap_or(0));
        if segments.is_empty() {
            let path = segment_path(dir, next_index);
            File::create(&path)?;
            sync_dir(dir)?;
            segments.push(Segment {
                first: next_index,
                path,
            });
        }
        let last = segments.last().map(|s| s.path.clone()).unwrap_or_default();
        let file = OpenOptions::new().write(true).open(&last)?;
        let allocated = file.metadata()?.len();
        let size = records_end.min(allocated);
        let (to_purger, purges) = mpsc::channel();
        let writer = Writer {
            dir: dir.to_path_buf(),
            segments,
            file,
            size,
            allocated,
            offsets,
            next_index,
            metrics,
            purger: to_purger,
        };
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("raft-wal".into())
            .spawn(move || writer.run(rx))?;
        let meta = Arc::new(MetaFile {
            dir: dir.to_path_buf(),
            meta: Mutex::new(meta),
            persist: Mutex::new(()),
        });
        let purger_meta = meta.clone();
        std::thread::Builder::new()
            .name("raft-purge".into())
            .spawn(move || purger_meta.purger(purges))?;
        Ok(LogStore {
            shared: Arc::new(Shared {
                cache: RwLock::new(cache),
                meta,
                tx: Mutex::new(tx),
            }),
        })
    }

    fn send(&self, cmd: Cmd) -> Result<(), StorageError> {
        self.shared.tx.lock().send(cmd).map_err(|_| {
            io_err(
                ErrorSubject::Logs,
                ErrorVerb::Write,
                "raft log writer stopped",
            )
        })
    }

    /// Number of entries held (not yet purged).
    pub fn len(&self) -> usize {
        self.shared.cache.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Cmd>) {
        let mut pending: Vec<LogFlushed<TypeConfig>> = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        while let Ok(first) = rx.recv() {
            let mut cmd = Some(first);
            loop {
                let c = match cmd.take() {
                    Some(c) => c,
                    None => match rx.try_recv() {
                        Ok(c) => c,
                        Err(_) => break,
                    },
                };
                match c {
                    Cmd::Append {
                        buf: b,
                        offsets,
                        cb,
                    } => {
                        let base = self.size + buf.len() as u64;
                        let seg = self.segments.last().map(|s| s.first).unwrap_or(0);
                        for (idx, off) in offsets {
                            self.offsets.insert(idx, (seg, base + off));
                            self.next_index = idx + 1;
                        }
                        buf.extend_from_slice(&b);
                        pending.push(cb);
                        if buf.len() > 8 * 1024 * 1024 {
                            break;
                        }
                    }
                    Cmd::Truncate { from, done } => {
                        let r = self
                            .flush(&mut buf, &mut pending)
                            .and_then(|_| self.truncate(from));
                        let _ = done.send(r);
                    }
                    Cmd::Purge { upto, dropped } => {
                        let files = self.purge(upto);
                        // Without a purger the segments stay; `open` skips what they hold.
                        let _ = self.purger.send(PurgeJob { files, dropped });
                    }
                }
            }
            if let Err(e) = self.flush(&mut buf, &mut pending) {
                tracing::error!(error = %e, "raft log write failed");
            }
        }
    }

    /// Writes and syncs `buf`, then reports every pending append (success or the error).
    fn flush(
        &mut self,
        buf: &mut Vec<u8>,
        pending: &mut Vec<LogFlushed<TypeConfig>>,
    ) -> std::io::Result<()> {
        if buf.is_empty() && pending.is_empty() {
            return Ok(());
        }
        let written = buf.len() as u64;
        let res = (|| {
            let end = self.size + buf.len() as u64;
            if end > self.allocated {
                // Grow the segment by zeroed chunks; this sync also records the new length.
                let allocated = end.div_ceil(PREALLOC_BYTES) * PREALLOC_BYTES;
                buf.resize((allocated - self.size) as usize, 0);
                self.file.write_all_at(buf, self.size)?;
                self.allocated = allocated;
            } else {
                self.file.write_all_at(buf, self.size)?;
            }
            let t = std::time::Instant::now();
            let r = self.file.sync_data();
            let took = t.elapsed();
            tracing::debug!(took_us = took.as_micros() as u64, "wal fsync");
            if let Some(m) = &self.metrics {
                m.observe_wal_fsync(took);
            }
            r
        })();
        self.size += written;
        buf.clear();
        for cb in pending.drain(..) {
            let r = match &res {
                Ok(()) => Ok(()),
                Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
            };
            cb.log_io_completed(r);
        }
        res?;
        if self.size >= SEGMENT_BYTES {
            let path = segment_path(&self.dir, self.next_index);
            self.file = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&path)?;
            self.allocated = 0;
            sync_dir(&self.dir)?;
            self.segments.push(Segment {
                first: self.next_index,
                path,
            });
            self.size = 0;
        }
        Ok(())
    }

    fn truncate(&mut self, from: u64) -> std::io::Result<()> {
        let Some(&(seg, off)) = self.offsets.get(&from) else {
            return Ok(());
        };
        while self.segments.last().is_some_and(|s| s.first > seg) {
            if let Some(s) = self.segments.pop() {
                std::fs::remove_file(&s.path)?;
            }
        }
        let path = segment_path(&self.dir, seg);
        let f = OpenOptions::new().write(true).open(&path)?;
        f.set_len(off)?;
        f.sync_all()?;
        self.file = OpenOptions::new().write(true).open(&path)?;
        self.size = off;
        self.allocated = off;
        self.offsets.split_off(&from);
        self.next_index = from;
        sync_dir(&self.dir)
    }

    /// Forgets the entries up to `upto` and returns the segment files that hold nothing
    /// else (for the purger to remove). Never the segment being written.
    fn purge(&mut self, upto: u64) -> Vec<PathBuf> {
        let mut files = Vec::new();
        // A segment can go when the next one starts at or below upto + 1.
        while self.segments.len() > 1 && self.segments[1].first <= upto + 1 {
            files.push(self.segments.remove(0).path);
        }
        let keep = self.offsets.split_off(&(upto + 1));
        self.offsets = keep;
        files
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(self
            .shared
            .cache
            .read()
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged = self.shared.meta.meta.lock().last_purged.map(log_id_of);
        let last = self
            .shared
            .cache
            .read()
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(last_purged);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.shared.meta.meta.lock().vote =
            Some((vote.leader_id.term, vote.leader_id.node_id, vote.committed));
        self.shared
            .meta
            .persist()
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self
            .shared
            .meta
            .meta
            .lock()
            .vote
            .map(|(term, node, committed)| {
                if committed {
                    Vote::new_committed(term, node)
                } else {
                    Vote::new(term, node)
                }
            }))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut buf = Vec::new();
        let mut offsets = Vec::new();
        {
            let mut cache = self.shared.cache.write();
            for e in entries {
                offsets.push((e.log_id.index, buf.len() as u64));
                encode_entry(&e, &mut buf);
                cache.insert(e.log_id.index, e);
            }
        }
        self.send(Cmd::Append {
            buf,
            offsets,
            cb: callback,
        })
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        {
            let mut cache = self.shared.cache.write();
            cache.split_off(&log_id.index);
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Cmd::Truncate {
            from: log_id.index,
            done: tx,
        })?;
        rx.await
            .map_err(|_| {
                io_err(
                    ErrorSubject::Logs,
                    ErrorVerb::Delete,
                    "raft log writer stopped",
                )
            })?
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }

    /// Returns at once: the Raft core waits for this, and every write waits for the core. The
    /// purge point is recorded here and written to disk, and the segments removed, by the
    /// purger thread (see [`MetaFile::purger`]).
    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.shared.meta.meta.lock().last_purged = Some(log_id_tuple(&log_id));
        let dropped = {
            let mut cache = self.shared.cache.write();
            let keep = cache.split_off(&(log_id.index + 1));
            std::mem::replace(&mut *cache, keep)
        };
        self.send(Cmd::Purge {
            upto: log_id.index,
            dropped,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(entries: std::ops::Range<u64>) -> Vec<u8> {
        let mut out = Vec::new();
        for i in entries {
            let e = Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), i),
                payload: EntryPayload::Blank,
            };
            encode_entry(&e, &mut out);
        }
        out
    }

    fn file_len(p: &Path) -> u64 {
        std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
    }

    #[test]
    fn a_zeroed_tail_ends_a_segment_and_stays_allocated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut first = segment(1..4);
        first.resize(PREALLOC_BYTES as usize, 0);
        std::fs::write(segment_path(dir.path(), 1), &first).expect("write");
        let mut second = segment(4..6);
        let end = second.len() as u64;
        second.resize(PREALLOC_BYTES as usize, 0);
        let last = segment_path(dir.path(), 4);
        std::fs::write(&last, &second).expect("write");

        let log = LogStore::open(dir.path(), None).expect("open");
        assert_eq!(indexes(&log), [1, 2, 3, 4, 5]);
        // Nothing was cut: the zeros are the preallocation the writer goes on to use.
        assert_eq!(file_len(&last), PREALLOC_BYTES);
        assert!(end < PREALLOC_BYTES);
    }

    #[test]
    fn leftovers_after_the_zeroes_of_the_last_segment_are_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut data = segment(1..3);
        let end = data.len();
        // A torn batch: its first page never reached the disk, a later one did.
        data.resize(end + 4096, 0);
        data.extend_from_slice(&segment(7..8));
        data.resize(PREALLOC_BYTES as usize, 0);
        let path = segment_path(dir.path(), 1);
        std::fs::write(&path, &data).expect("write");

        let log = LogStore::open(dir.path(), None).expect("open");
        assert_eq!(log.len(), 2);
        assert_eq!(file_len(&path), end as u64);
    }

    /// The indexes of the entries the log holds.
    fn indexes(log: &LogStore) -> Vec<u64> {
        log.shared.cache.read().keys().copied().collect()
    }

    #[tokio::test]
    async fn a_purge_forgets_at_once_and_removes_segments_in_the_background() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (first, entries) in [(1, 1..4), (4, 4..6), (6, 6..8)] {
            std::fs::write(segment_path(dir.path(), first), segment(entries)).expect("write");
        }
        let mut log = LogStore::open(dir.path(), None).expect("open");
        let upto = LogId::new(CommittedLeaderId::new(1, 1), 5);
        RaftLogStorage::purge(&mut log, upto).await.expect("purge");
        // The log answers from memory at once; the files follow in the background.
        assert_eq!(log.len(), 2);
        let state = log.get_log_state().await.expect("state");
        assert_eq!(state.last_purged_log_id, Some(upto));
        let gone = [segment_path(dir.path(), 1), segment_path(dir.path(), 4)];
        for _ in 0..500 {
            if gone.iter().all(|p| !p.exists()) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(gone.iter().all(|p| !p.exists()), "purged segments removed");
        assert!(
            segment_path(dir.path(), 6).exists(),
            "the last segment stays"
        );
        drop(log);
        let mut log = LogStore::open(dir.path(), None).expect("reopen");
        let state = log.get_log_state().await.expect("state");
        assert_eq!(state.last_purged_log_id, Some(upto));
        assert_eq!(indexes(&log), [6, 7]);
    }

    #[test]
    fn purged_entries_still_in_a_segment_are_skipped_on_open() {
        // The purge point reached the disk, the crash came before its segments were removed.
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(segment_path(dir.path(), 1), segment(1..6)).expect("write");
        let meta = Meta {
            vote: None,
            last_purged: Some((1, 1, 3)),
        };
        std::fs::write(
            dir.path().join(META_FILE),
            serde_json::to_vec(&meta).expect("json"),
        )
        .expect("write meta");
        let log = LogStore::open(dir.path(), None).expect("open");
        assert_eq!(indexes(&log), [4, 5]);
    }

    #[test]
    fn a_segment_without_preallocation_still_reads_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = segment(1..4);
        let path = segment_path(dir.path(), 1);
        std::fs::write(&path, &data).expect("write");
        let log = LogStore::open(dir.path(), None).expect("open");
        assert_eq!(log.len(), 3);
        assert_eq!(file_len(&path), data.len() as u64);
    }
}
