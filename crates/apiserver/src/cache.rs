//! The watch cache: one store watch over `/registry/` mirrors every object in memory, with
//! a bounded history of recent events. LIST (consistent or not) and WATCH are served from
//! here; the store sees one watch and the writes.
//!
//! Objects are kept as the JSON bytes clients receive (resourceVersion already set) plus the
//! few attributes selectors need, parsed once per write and only as far as those attributes
//! (`crate::sparse`), so a LIST is a concatenation and an event is serialised once for every
//! watcher.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::RwLock;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::attrs::Attrs;
use crate::storage::{Store, StoreError, StoreEvent, prefix_end};

/// The root of everything the apiserver stores.
pub const REGISTRY_PREFIX: &str = "/registry/";

/// The resource part of a store key, `/registry/pods` for `/registry/pods/ns/name` (a group's
/// for custom resources); `None` outside [`REGISTRY_PREFIX`].
pub fn resource_prefix(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(REGISTRY_PREFIX)?;
    let end = rest
        .find('/')
        .map_or(key.len(), |i| REGISTRY_PREFIX.len() + i);
    Some(&key[..end])
}

/// One cached object.
#[derive(Debug)]
pub struct Entry {
    pub key: Arc<str>,
    /// The object as JSON, `metadata.resourceVersion` set; compressed once a newer version or
    /// a deletion replaced it (see [`Entry::pack`]).
    json: RwLock<Stored>,
    pub rv: i64,
    /// Labels and field-selector attributes.
    attrs: Attrs,
}

impl Entry {
    /// Builds an entry from stored bytes; `None` for bytes that are not a JSON object.
    pub fn from_store(key: &str, value: &[u8], rv: i64) -> Option<Entry> {
        // Most stored objects need only their selector attributes parsed (`sparse`).
        let sparse = with_scratch(|buf| {
            let obj = crate::sparse::parse(value, rv, buf)?;
            Some((obj, Json::copy_from(buf)))
        });
        if let Some((obj, raw)) = sparse {
            return Self::with_raw(key, &obj, raw, rv);
        }
        let mut obj: Value = serde_json::from_slice(value).ok()?;
        Self::from_value(key, &mut obj, rv)
    }

    /// Builds an entry from an object, setting its resourceVersion to `rv`.
    pub fn from_value(key: &str, obj: &mut Value, rv: i64) -> Option<Entry> {
        let meta = obj.get_mut("metadata")?.as_object_mut()?;
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
        let raw = exact_json(obj)?;
        Self::with_raw(key, obj, raw, rv)
    }

    /// An entry of JSON `raw`, with the labels and selector attributes of `obj` (which needs
    /// only those).
    fn with_raw(key: &str, obj: &Value, raw: Json, rv: i64) -> Option<Entry> {
        obj.get("metadata")?;
        Some(Entry {
            key: Arc::from(key),
            json: RwLock::new(Stored::Plain(raw)),
            rv,
            attrs: Attrs::of(obj),
        })
    }

    /// Runs `f` on the object's JSON (decompressed first if this version is only history).
    /// Borrowed, not cloned: the first clone of a `Bytes` allocates its shared header, which
    /// every cached object would then keep.
    pub fn with_json<R>(&self, f: impl FnOnce(&Json) -> R) -> R {
        let stored = self.json.read();
        match &*stored {
            Stored::Plain(json) => f(json),
            Stored::Packed { dict, data } => {
                let json = unpack(data, dict);
                drop(stored);
                f(&json)
            }
        }
    }

    /// The object, parsed.
    pub fn object(&self) -> Value {
        self.with_json(Json::parse).unwrap_or(Value::Null)
    }

    /// Compresses the JSON against `dict` ([`Cache::pack`]); readers holding the entry see
    /// the same JSON either way.
    fn pack(&self, dict: &Arc<[u8]>) {
        let data = match &*self.json.read() {
            Stored::Plain(json) => pack(json, dict),
            Stored::Packed { .. } => return,
        };
        if let Some(data) = data {
            *self.json.write() = Stored::Packed {
                dict: dict.clone(),
                data,
            };
        }
    }

    /// The length of the object's JSON, read without decompressing it (a packed entry
    /// starts with it).
    pub fn json_len(&self) -> usize {
        match &*self.json.read() {
            Stored::Plain(json) => json.len(),
            Stored::Packed { data, .. } => data
                .first_chunk::<4>()
                .map_or(0, |n| u32::from_le_bytes(*n) as usize),
        }
    }

    /// Bytes of JSON this entry holds (compressed or not; a shared dictionary not counted).
    fn held(&self) -> usize {
        match &*self.json.read() {
            Stored::Plain(json) => json.len(),
            Stored::Packed { data, .. } => data.len(),
        }
    }

    /// `metadata.name`.
    pub fn name(&self) -> &str {
        self.field("metadata.name").unwrap_or("")
    }

    /// `metadata.namespace`; `None` for cluster-scoped objects.
    pub fn namespace(&self) -> Option<&str> {
        self.field("metadata.namespace").filter(|ns| !ns.is_empty())
    }

    /// One label's value.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.attrs.label(key)
    }

    /// A field-selector attribute.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.attrs.field(name)
    }
}

/// `obj` as cached JSON. Encodes into a reused per-thread buffer and copies once into
/// allocations of the pieces' lengths: `serde_json::to_vec` grows its buffer by doubling and
/// `Bytes` keeps a vector's whole capacity, so an 8.3 KB pod would otherwise hold 16 KB for as
/// long as it is cached.
fn exact_json(obj: &Value) -> Option<Json> {
    with_scratch(|buf| {
        serde_json::to_writer(&mut *buf, obj).ok()?;
        Some(Json::copy_from(buf))
    })
}

/// Runs `f` with this thread's cleared scratch buffer (dropped after holding over 1 MiB).
fn with_scratch<T>(f: impl FnOnce(&mut Vec<u8>) -> Option<T>) -> Option<T> {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|scratch| {
        let mut buf = scratch.try_borrow_mut().ok()?;
        buf.clear();
        let out = f(&mut buf);
        if buf.capacity() > 1 << 20 {
            *buf = Vec::new();
        }
        out
    })
}

/// An object's JSON as the cache keeps it, in two pieces. Allocators (mimalloc here, jemalloc
/// alike) serve blocks of more than a few hundred bytes from four size classes per power of
/// two, so a single 8,342-byte pod would take a 10,240-byte block: with 150,000 pods, 285 MB
/// of the cache would be rounding. `head` has the length of the largest such class that fits
/// and `tail` holds the rest, which rounds up by a few bytes only.
#[derive(Debug, Clone, Default)]
pub struct Json {
    head: Bytes,
    tail: Bytes,
}

impl Json {
    /// Copies `bytes` into the cache's two pieces.
    pub fn copy_from(bytes: &[u8]) -> Json {
        let (head, tail) = bytes.split_at(class_floor(bytes.len()));
        Json {
            head: Bytes::copy_from_slice(head),
            tail: Bytes::copy_from_slice(tail),
        }
    }

    pub fn len(&self) -> usize {
        self.head.len() + self.tail.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The pieces, in order.
    pub fn chunks(&self) -> [&[u8]; 2] {
        [&self.head, &self.tail]
    }

    /// The JSON in one buffer (a copy unless it fits in one piece).
    pub fn to_bytes(&self) -> Bytes {
        if self.tail.is_empty() {
            return self.head.clone();
        }
        let mut v = Vec::with_capacity(self.len());
        v.extend_from_slice(&self.head);
        v.extend_from_slice(&self.tail);
        Bytes::from(v)
    }

    /// The JSON, decoded.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> serde_json::Result<T> {
        if self.tail.is_empty() {
            return serde_json::from_slice(&self.head);
        }
        thread_local! {
            static JOINED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        JOINED.with(|joined| match joined.try_borrow_mut() {
            Ok(mut buf) => {
                buf.clear();
                buf.extend_from_slice(&self.head);
                buf.extend_from_slice(&self.tail);
                let out = serde_json::from_slice(&buf);
                if buf.capacity() > 1 << 20 {
                    *buf = Vec::new();
                }
                out
            }
            Err(_) => serde_json::from_slice(&self.to_bytes()),
        })
    }
}

/// The largest allocator size class not above `len` (four classes per power of two: 1, 1.25,
/// 1.5 and 1.75 times it); lengths under 1 KiB are kept whole.
fn class_floor(len: usize) -> usize {
    if len < 1024 {
        return len;
    }
    let base = 1usize << (usize::BITS - 1 - len.leading_zeros());
    let step = base / 4;
    base + (len - base) / step * step
}

/// An entry's JSON: as clients receive it, or, once only the history keeps it, LZ4-compressed
/// (its length first) against a dictionary ([`Cache::pack`]).
#[derive(Debug)]
enum Stored {
    Plain(Json),
    Packed { dict: Arc<[u8]>, data: Bytes },
}

/// Objects smaller than this are kept uncompressed (little to gain).
const PACK_MIN: usize = 512;
/// LZ4 looks back at most 64 KiB: a longer dictionary's start is never used.
const DICT_MAX: usize = 64 * 1024;

/// `json` compressed against `dict` (its length first, as a little-endian u32), or `None`
/// when that would not save at least an eighth.
fn pack(json: &Json, dict: &[u8]) -> Option<Bytes> {
    let joined = json.to_bytes();
    let data = lz4_flex::block::compress_prepend_size_with_dict(&joined, dict);
    (data.len() < json.len() - json.len() / 8).then(|| Bytes::copy_from_slice(&data))
}

/// The JSON `pack` compressed.
fn unpack(data: &[u8], dict: &[u8]) -> Json {
    match lz4_flex::block::decompress_size_prepended_with_dict(data, dict) {
        Ok(v) => Json {
            head: Bytes::from(v),
            tail: Bytes::new(),
        },
        Err(e) => {
            // Only `pack` writes these bytes: unreachable short of memory corruption.
            warn!(error = %e, "cached JSON does not decompress");
            Json::default()
        }
    }
}

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as every watcher sees it.
#[derive(Debug)]
pub struct CacheEvent {
    pub rv: i64,
    pub kind: EventType,
    /// The object after the change (for DELETED: the last state, at the deletion revision).
    pub entry: Arc<Entry>,
    /// The object before the change (for selector transitions).
    pub prev: Option<Arc<Entry>>,
    /// JSON bytes only the history keeps alive through this event ([`CacheEvent::new`]).
    retained: usize,
    /// The JSON watch frame (`{"type":…,"object":…}\n`) per event type, encoded once and
    /// shared by every watcher sending it at the same time. Held weakly: once every watcher
    /// has written it the frame is freed, so the 100k-event history does not keep a second
    /// copy of each object alive; a late watcher replaying history encodes it again.
    frames: [parking_lot::Mutex<std::sync::Weak<Vec<u8>>>; 3],
}

impl CacheEvent {
    /// An event, `prev` and, for a deletion, `entry` already compressed ([`Cache::pack`]).
    fn new(rv: i64, kind: EventType, entry: Arc<Entry>, prev: Option<Arc<Entry>>) -> CacheEvent {
        // Object JSON that only this event keeps alive once the history is the sole holder:
        // the version it replaced (counted once, here, however many events hold it) and, for
        // a deletion, the final state it built.
        let mut retained = prev.as_ref().map_or(0, |p| p.held());
        if kind == EventType::Deleted {
            retained += entry.held();
        }
        CacheEvent {
            rv,
            kind,
            entry,
            prev,
            retained,
            frames: Default::default(),
        }
    }

    /// The JSON watch frame of this event sent as `as_type` (ADDED/MODIFIED/DELETED).
    pub fn json_frame(&self, as_type: &'static str) -> Bytes {
        let i = match as_type {
            "ADDED" => 0,
            "MODIFIED" => 1,
            _ => 2,
        };
        let mut slot = self.frames[i].lock();
        if let Some(f) = slot.upgrade() {
            return Bytes::from_owner(SharedFrame(f));
        }
        let f = Arc::new(
            self.entry
                .with_json(|json| json_frame_vec(as_type, json.chunks())),
        );
        *slot = Arc::downgrade(&f);
        Bytes::from_owner(SharedFrame(f))
    }
}

/// A frame shared by the watchers sending it (see [`CacheEvent::json_frame`]).
struct SharedFrame(Arc<Vec<u8>>);

impl AsRef<[u8]> for SharedFrame {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// `{"type":"<T>","object":<raw>}\n`, the object given in pieces.
pub fn json_frame<const N: usize>(as_type: &str, raw: [&[u8]; N]) -> Bytes {
    Bytes::from(json_frame_vec(as_type, raw))
}

fn json_frame_vec<const N: usize>(as_type: &str, raw: [&[u8]; N]) -> Vec<u8> {
    let len: usize = raw.iter().map(|c| c.len()).sum();
    let mut buf = Vec::with_capacity(len + 32);
    buf.extend_from_slice(b"{\"type\":\"");
    buf.extend_from_slice(as_type.as_bytes());
    buf.extend_from_slice(b"\",\"object\":");
    for c in raw {
        buf.extend_from_slice(c);
    }
    buf.extend_from_slice(b"}\n");
    buf
}

/// A message to one watcher.
#[derive(Debug, Clone)]
pub enum WatchMsg {
    Event(Arc<CacheEvent>),
    /// The cache reached this revision (for bookmarks).
    Progress(i64),
}

/// Which objects a watcher is interested in (its label and field selectors). The cache
/// hands a watcher only events whose object matches before or after the change, and indexes
/// watchers that require one `spec.nodeName` by it (upstream's watch-cache trigger for
/// pods), so 5,000 kubelets do not all look at every pod event.
#[derive(Clone)]
pub struct WatchFilter {
    pub matches: Arc<dyn Fn(&Entry) -> bool + Send + Sync>,
    /// The `spec.nodeName` the selector requires (`spec.nodeName=<node>`), if any.
    pub node_name: Option<String>,
}

/// The field watchers are indexed by.
pub const TRIGGER_FIELD: &str = "spec.nodeName";

struct Watcher {
    prefix: String,
    tx: mpsc::Sender<WatchMsg>,
    filter: Option<WatchFilter>,
}

impl Watcher {
    /// Whether `ev` concerns this watcher.
    fn wants(&self, ev: &CacheEvent) -> bool {
        if !ev.entry.key.starts_with(self.prefix.as_str()) {
            return false;
        }
        let Some(f) = &self.filter else {
            return true;
        };
        (f.matches)(&ev.entry) || ev.prev.as_ref().is_some_and(|p| (f.matches)(p))
    }

    /// Hands `ev` over if it concerns this watcher; `false` when the watcher is to go.
    fn deliver(&self, id: u64, ev: &Arc<CacheEvent>) -> bool {
        if !self.wants(ev) {
            return true;
        }
        match self.tx.try_send(WatchMsg::Event(ev.clone())) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                warn!(watcher = id, prefix = %self.prefix, "watcher fell behind; closing it");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    fn node_name(&self) -> Option<&str> {
        self.filter.as_ref().and_then(|f| f.node_name.as_deref())
    }
}

/// The registered watchers: those indexed by node name, and the rest.
#[derive(Default)]
struct Watchers {
    all: HashMap<u64, Watcher>,
    by_node: HashMap<String, Vec<u64>>,
}

impl Watchers {
    fn insert(&mut self, id: u64, w: Watcher) {
        if let Some(node) = w.node_name() {
            self.by_node.entry(node.to_string()).or_default().push(id);
        }
        self.all.insert(id, w);
    }

    fn remove(&mut self, id: u64) {
        let Some(w) = self.all.remove(&id) else {
            return;
        };
        if let Some(node) = w.node_name()
            && let Some(ids) = self.by_node.get_mut(node)
        {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                self.by_node.remove(node);
            }
        }
    }

    fn clear(&mut self) {
        self.all.clear();
        self.by_node.clear();
    }

    fn len(&self) -> usize {
        self.all.len()
    }

    /// Tells every watcher the cache reached `rev`; drops those that went. (A full buffer
    /// is no reason to drop one: it has events to send.)
    fn progress(&mut self, rev: i64) {
        let gone: Vec<u64> = self
            .all
            .iter()
            .filter(|(_, w)| {
                matches!(
                    w.tx.try_send(WatchMsg::Progress(rev)),
                    Err(mpsc::error::TrySendError::Closed(_))
                )
            })
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.remove(id);
        }
    }

    /// Sends `ev` to every watcher it concerns; drops those that fell behind or went.
    fn publish(&mut self, ev: &Arc<CacheEvent>) {
        let mut gone = Vec::new();
        for (id, w) in &self.all {
            if w.node_name().is_none() && !w.deliver(*id, ev) {
                gone.push(*id);
            }
        }
        if !self.by_node.is_empty() {
            let node = ev.entry.field(TRIGGER_FIELD).unwrap_or("");
            let before = ev
                .prev
                .as_ref()
                .map(|p| p.field(TRIGGER_FIELD).unwrap_or(""));
            let nodes = std::iter::once(node).chain(before.filter(|b| *b != node));
            for n in nodes {
                for id in self.by_node.get(n).into_iter().flatten() {
                    if let Some(w) = self.all.get(id)
                        && !w.deliver(*id, ev)
                    {
                        gone.push(*id);
                    }
                }
            }
        }
        for id in gone {
            self.remove(id);
        }
    }
}

struct Inner {
    objects: BTreeMap<Arc<str>, Arc<Entry>>,
    rev: i64,
    history: VecDeque<Arc<CacheEvent>>,
    /// Bytes of object JSON only the history keeps alive (see [`CacheEvent::new`]).
    history_bytes: usize,
    /// The cap on `history_bytes` ([`HISTORY_BYTES`]).
    max_history_bytes: usize,
    /// History holds every event with revision > `history_start`.
    history_start: i64,
    watchers: Watchers,
}

/// Every object whose key starts with `prefix`, in key order.
fn under(objects: &BTreeMap<Arc<str>, Arc<Entry>>, prefix: &str) -> Vec<Arc<Entry>> {
    objects
        .range::<str, _>((
            std::ops::Bound::Included(prefix),
            std::ops::Bound::Unbounded,
        ))
        .take_while(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| v.clone())
        .collect()
}

/// Capacity of each watcher's buffer; a watcher that falls this far behind is closed.
pub const WATCHER_BUFFER: usize = 10_000;
/// How many recent events the cache keeps for watches that resume from a resourceVersion.
pub const HISTORY_EVENTS: usize = 100_000;
/// At most this much object JSON is kept alive by the history alone (old versions of changed
/// objects, deleted objects); beyond it the oldest events go, like upstream's watch cache
/// dropping events it has no capacity for (a watch from before them gets `410 Gone`).
pub const HISTORY_BYTES: usize = 128 * 1024 * 1024;

/// The watch cache.
pub struct Cache {
    inner: RwLock<Inner>,
    /// Per resource ([`resource_prefix`]), the first version the cache compressed: the
    /// dictionary of every later one there. Objects of a kind repeat each other's text, so an
    /// 8 KB pod that LZ4 alone takes to 3.4 KB takes ~0.4 KB against another pod.
    dicts: parking_lot::Mutex<HashMap<Box<str>, Arc<[u8]>>>,
    rev_tx: watch::Sender<i64>,
    next_watcher: AtomicU64,
    progress: parking_lot::Mutex<Option<mpsc::Sender<()>>>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("rev", &self.revision())
            .finish()
    }
}

/// A watch registered with the cache.
#[derive(Debug)]
pub struct CacheWatch {
    /// Events from history (after the requested revision) to send first.
    pub backlog: Vec<Arc<CacheEvent>>,
    /// For a watch without a resourceVersion: the current objects, sent as ADDED first.
    pub initial: Vec<Arc<Entry>>,
    /// The revision of `initial` (or the cache revision at registration).
    pub start_rev: i64,
    pub rx: mpsc::Receiver<WatchMsg>,
    id: u64,
    cache: Arc<Cache>,
}

impl Drop for CacheWatch {
    fn drop(&mut self) {
        self.cache.inner.write().watchers.remove(self.id);
    }
}

/// A page of objects as they were at a past revision ([`Cache::page_at`]).
#[derive(Debug)]
pub struct PageAt {
    pub items: Vec<Arc<Entry>>,
    /// How many more objects passed the filter after the page (at most 1 unless counted).
    pub rest: usize,
}

/// Why a watch could not start.
#[derive(Debug)]
pub enum WatchError {
    /// The revision is older than the history: `410 Gone` ("too old resource version").
    TooOld { requested: i64, oldest: i64 },
}

impl Cache {
    /// An empty cache at revision 0 (call [`Cache::run`] to fill it).
    pub fn new() -> Arc<Cache> {
        let (rev_tx, _) = watch::channel(0);
        Arc::new(Cache {
            inner: RwLock::new(Inner {
                objects: BTreeMap::new(),
                rev: 0,
                history: VecDeque::new(),
                history_bytes: 0,
                max_history_bytes: HISTORY_BYTES,
                history_start: 0,
                watchers: Watchers::default(),
            }),
            dicts: parking_lot::Mutex::new(HashMap::new()),
            rev_tx,
            next_watcher: AtomicU64::new(1),
            progress: parking_lot::Mutex::new(None),
        })
    }

    /// The revision everything in the cache is current to.
    pub fn revision(&self) -> i64 {
        self.inner.read().rev
    }

    /// Fills the cache from the store and follows the store watch forever, re-listing when
    /// the watch breaks.
    pub async fn run(self: Arc<Self>, store: Store) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.clone().sync_once(&store).await {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => {
                    warn!(error = %e, "watch cache lost the store watch; re-listing");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn sync_once(self: Arc<Self>, store: &Store) -> Result<(), StoreError> {
        // List everything at one revision, in pages.
        let end = prefix_end(REGISTRY_PREFIX);
        let mut start = REGISTRY_PREFIX.as_bytes().to_vec();
        let mut revision = 0;
        let mut objects = BTreeMap::new();
        loop {
            let page = store.range(&start, &end, revision, 10_000).await?;
            revision = page.revision;
            let more = page.more;
            let mut last = None;
            for kv in page.kvs {
                if let Some(e) = Entry::from_store(&kv.key, &kv.value, kv.mod_revision) {
                    objects.insert(e.key.clone(), Arc::new(e));
                }
                last = Some(kv.key);
            }
            match (more, last) {
                (true, Some(k)) => {
                    let mut next = k.into_bytes();
                    next.push(0);
                    start = next;
                }
                _ => break,
            }
        }
        let (mut events, progress) = store.watch(REGISTRY_PREFIX, revision + 1).await?;
        *self.progress.lock() = Some(progress);
        {
            let mut inner = self.inner.write();
            let restarted = inner.rev > 0;
            inner.objects = objects;
            inner.rev = inner.rev.max(revision);
            if restarted {
                // Watchers may have missed events: close them all; clients re-watch.
                inner.watchers.clear();
                inner.history.clear();
                inner.history_bytes = 0;
            }
            inner.history_start = inner.rev;
        }
        self.rev_tx.send_replace(revision);
        info!(revision, "watch cache synced");
        while let Some(ev) = events.recv().await {
            match ev? {
                StoreEvent::Put(kv) => self.apply_put(&kv.key, &kv.value, kv.mod_revision),
                StoreEvent::Delete { key, mod_revision } => self.apply_delete(&key, mod_revision),
                StoreEvent::Progress(rev) => self.apply_progress(rev),
            }
        }
        Err(StoreError::Other("store watch ended".into()))
    }

    // `apply_*` run on the one task that follows the store watch, the only writer of
    // `objects`: they build the event (parsing, compressing the replaced version) before
    // taking the write lock, so readers wait only for the insert and the hand-over.

    fn apply_put(&self, key: &str, value: &[u8], rev: i64) {
        let Some(entry) = Entry::from_store(key, value, rev) else {
            warn!(key, "ignoring a stored value that is not a JSON object");
            return;
        };
        let entry = Arc::new(entry);
        let prev = self.get(key);
        if let Some(p) = &prev {
            self.pack(p);
        }
        let kind = if prev.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        let ev = Arc::new(CacheEvent::new(rev, kind, entry.clone(), prev));
        let mut inner = self.inner.write();
        inner.objects.insert(entry.key.clone(), entry);
        Self::publish(&mut inner, ev);
        drop(inner);
        self.rev_tx.send_replace(rev);
    }

    fn apply_delete(&self, key: &str, rev: i64) {
        let ev = self.get(key).map(|prev| {
            let mut obj = prev.object();
            let entry = Entry::from_value(key, &mut obj, rev)
                .map(Arc::new)
                .unwrap_or_else(|| prev.clone());
            self.pack(&prev);
            self.pack(&entry);
            Arc::new(CacheEvent::new(rev, EventType::Deleted, entry, Some(prev)))
        });
        let mut inner = self.inner.write();
        match ev {
            Some(ev) => {
                inner.objects.remove(key);
                Self::publish(&mut inner, ev);
            }
            None => inner.rev = inner.rev.max(rev),
        }
        drop(inner);
        self.rev_tx.send_replace(rev);
    }

    /// Compresses a version that is history from now on against its resource's dictionary
    /// ([`Cache::dicts`]; the first such version of a resource becomes it). Objects under
    /// [`PACK_MIN`] stay as they are, and none of them becomes a dictionary.
    fn pack(&self, entry: &Entry) {
        if entry.held() < PACK_MIN {
            return;
        }
        let resource = resource_prefix(&entry.key).unwrap_or("");
        let dict = {
            let mut dicts = self.dicts.lock();
            match dicts.get(resource) {
                Some(d) => d.clone(),
                None => {
                    let json = entry.with_json(Json::to_bytes);
                    let d: Arc<[u8]> = Arc::from(&json[json.len().saturating_sub(DICT_MAX)..]);
                    dicts.insert(resource.into(), d.clone());
                    d
                }
            }
        };
        entry.pack(&dict);
    }

    fn apply_progress(&self, rev: i64) {
        let mut inner = self.inner.write();
        if rev > inner.rev {
            inner.rev = rev;
        }
        let rev = inner.rev;
        inner.watchers.progress(rev);
        drop(inner);
        self.rev_tx.send_replace(rev);
    }

    fn publish(inner: &mut Inner, ev: Arc<CacheEvent>) {
        inner.rev = inner.rev.max(ev.rv);
        inner.watchers.publish(&ev);
        inner.history_bytes += ev.retained;
        inner.history.push_back(ev);
        while inner.history.len() > HISTORY_EVENTS || inner.history_bytes > inner.max_history_bytes
        {
            let Some(old) = inner.history.pop_front() else {
                break;
            };
            inner.history_bytes = inner.history_bytes.saturating_sub(old.retained);
            inner.history_start = old.rv;
        }
    }

    /// Waits until the cache is current to at least `rev`, asking the store for progress
    /// notifications while it waits. `false` after `timeout`.
    pub async fn wait_for(&self, rev: i64, timeout: Duration) -> bool {
        let mut rx = self.rev_tx.subscribe();
        if *rx.borrow() >= rev {
            return true;
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut ask = tokio::time::Instant::now() + Duration::from_millis(20);
        loop {
            if *rx.borrow_and_update() >= rev {
                return true;
            }
            let next = ask.min(deadline);
            tokio::select! {
                r = rx.changed() => {
                    if r.is_err() { return false; }
                }
                _ = tokio::time::sleep_until(next) => {
                    if tokio::time::Instant::now() >= deadline {
                        return *rx.borrow() >= rev;
                    }
                    let p = self.progress.lock().clone();
                    if let Some(p) = p {
                        let _ = p.try_send(());
                    }
                    ask = tokio::time::Instant::now() + Duration::from_millis(50);
                }
            }
        }
    }

    /// Every object under `prefix`, and the revision they are current to.
    pub fn list(&self, prefix: &str) -> (Vec<Arc<Entry>>, i64) {
        let inner = self.inner.read();
        (under(&inner.objects, prefix), inner.rev)
    }

    /// Up to `limit` objects (0 = all) passing `matches`, from key `start` on under `prefix`,
    /// as they were at revision `rv`: the current objects with every change after `rv`
    /// undone from the history. With `count_rest` the objects after the page are counted;
    /// without, counting stops at the first. `None` when the history does not reach back to
    /// `rv` (or `rv` is ahead of the cache); the caller reads the store instead.
    pub fn page_at(
        &self,
        prefix: &str,
        start: &str,
        rv: i64,
        limit: usize,
        matches: &dyn Fn(&Entry) -> bool,
        count_rest: bool,
    ) -> Option<PageAt> {
        let inner = self.inner.read();
        if rv < inner.history_start || rv > inner.rev {
            return None;
        }
        // Each key changed after `rv`, with its state at `rv` (`None`: it did not exist):
        // the version its first later event replaced.
        let mut past: BTreeMap<&str, Option<&Arc<Entry>>> = BTreeMap::new();
        let from = inner.history.partition_point(|e| e.rv <= rv);
        for ev in inner.history.range(from..) {
            let key = &*ev.entry.key;
            if key >= start && key.starts_with(prefix) {
                past.entry(key).or_insert(match ev.kind {
                    EventType::Added => None,
                    EventType::Modified | EventType::Deleted => ev.prev.as_ref(),
                });
            }
        }
        let mut current = inner
            .objects
            .range::<str, _>((std::ops::Bound::Included(start), std::ops::Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(k, _)| !past.contains_key(&***k))
            .map(|(_, e)| e)
            .peekable();
        let mut then = past.values().filter_map(|e| *e).peekable();
        let merged = std::iter::from_fn(|| match (current.peek(), then.peek()) {
            (Some(c), Some(t)) if t.key < c.key => then.next(),
            (Some(_), _) => current.next(),
            (None, _) => then.next(),
        });
        let mut items = Vec::new();
        let mut rest = 0usize;
        for e in merged.filter(|e| matches(e)) {
            if limit == 0 || items.len() < limit {
                items.push(e.clone());
            } else {
                rest += 1;
                if !count_rest {
                    break;
                }
            }
        }
        Some(PageAt { items, rest })
    }

    /// One object.
    pub fn get(&self, key: &str) -> Option<Arc<Entry>> {
        self.inner.read().objects.get(key).cloned()
    }

    /// Registers a watcher for keys under `prefix`. `from`: `None` = start with the current
    /// objects (as ADDED); `Some(rv)` = every event after `rv`. With a `filter`, only events
    /// whose object passes it before or after the change are sent.
    pub fn watch(
        self: &Arc<Self>,
        prefix: &str,
        from: Option<i64>,
        filter: Option<WatchFilter>,
    ) -> Result<CacheWatch, WatchError> {
        let (tx, rx) = mpsc::channel(WATCHER_BUFFER);
        let id = self.next_watcher.fetch_add(1, Ordering::Relaxed);
        let mut inner = self.inner.write();
        let (backlog, initial, start_rev) = match from {
            None => {
                let initial = under(&inner.objects, prefix);
                (Vec::new(), initial, inner.rev)
            }
            Some(rv) => {
                if rv < inner.history_start {
                    return Err(WatchError::TooOld {
                        requested: rv,
                        oldest: inner.history_start + 1,
                    });
                }
                let from = inner.history.partition_point(|e| e.rv <= rv);
                let backlog = inner
                    .history
                    .range(from..)
                    .filter(|e| e.entry.key.starts_with(prefix))
                    .cloned()
                    .collect();
                (backlog, Vec::new(), rv.max(inner.rev))
            }
        };
        inner.watchers.insert(
            id,
            Watcher {
                prefix: prefix.to_string(),
                tx,
                filter,
            },
        );
        drop(inner);
        Ok(CacheWatch {
            backlog,
            initial,
            start_rev,
            rx,
            id,
            cache: self.clone(),
        })
    }

    /// Number of registered watchers (metrics).
    pub fn watcher_count(&self) -> usize {
        self.inner.read().watchers.len()
    }

    /// Number of cached objects (metrics).
    pub fn object_count(&self) -> usize {
        self.inner.read().objects.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_json_is_split_at_an_allocator_class() {
        assert_eq!(class_floor(0), 0);
        assert_eq!(class_floor(1023), 1023);
        assert_eq!(class_floor(1024), 1024);
        assert_eq!(class_floor(1279), 1024);
        assert_eq!(class_floor(1280), 1280);
        assert_eq!(class_floor(8342), 8192);
        assert_eq!(class_floor(10_300), 10_240);
        assert_eq!(class_floor(16_383), 14_336);
        for len in [0, 5, 1023, 1024, 4000, 8342, 70_000] {
            let floor = class_floor(len);
            assert!(floor <= len && len - floor <= len / 4, "{len} -> {floor}");
        }
        let raw = pod("split", 8000);
        let json = Json::copy_from(&raw);
        assert_eq!(json.len(), raw.len());
        assert_eq!(json.chunks()[0].len(), class_floor(raw.len()));
        assert_eq!(json.chunks().concat(), raw);
        assert_eq!(json.to_bytes(), raw);
        let v: Value = json.parse().expect("parses");
        assert_eq!(v["metadata"]["name"], "split");
        let small = Json::copy_from(b"{}");
        assert_eq!(small.chunks()[1].len(), 0);
        assert_eq!(
            small.parse::<Value>().expect("parses"),
            serde_json::json!({})
        );
    }

    /// A pod with `pad` characters of padding that no other call repeats (incompressible).
    fn pod(name: &str, pad: usize) -> Vec<u8> {
        static CALLS: AtomicU64 = AtomicU64::new(1);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ CALLS.fetch_add(1, Ordering::Relaxed);
        let noise: String = (0..pad)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(b'a' + (x % 26) as u8)
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"pad": noise},
        }))
        .expect("json")
    }

    /// A pod whose JSON repeats itself as real ones do (~4 kB).
    fn verbose_pod(name: &str, image: &str) -> Vec<u8> {
        let env: Vec<_> = (0..40)
            .map(|i| serde_json::json!({"name": format!("VAR_{i}"), "value": format!("value-{i}")}))
            .collect();
        serde_json::to_vec(&serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app", "image": image, "env": env}]},
        }))
        .expect("json")
    }

    fn on_node(name: &str, node: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": node},
        }))
        .expect("json")
    }

    fn node_filter(node: &str) -> WatchFilter {
        let want = node.to_string();
        WatchFilter {
            matches: Arc::new(move |e: &Entry| e.field(TRIGGER_FIELD) == Some(want.as_str())),
            node_name: Some(node.to_string()),
        }
    }

    fn received(w: &mut CacheWatch) -> Vec<(i64, Option<String>)> {
        let mut out = Vec::new();
        while let Ok(WatchMsg::Event(ev)) = w.rx.try_recv() {
            out.push((ev.rv, ev.entry.field(TRIGGER_FIELD).map(str::to_string)));
        }
        out
    }

    #[test]
    fn node_indexed_watchers_get_their_node_s_events_only() {
        let cache = Cache::new();
        let mut n1 = cache
            .watch("/registry/pods/", None, Some(node_filter("n1")))
            .expect("watch");
        let mut unscheduled = cache
            .watch("/registry/pods/", None, Some(node_filter("")))
            .expect("watch");
        let mut all = cache.watch("/registry/pods/", None, None).expect("watch");
        let key = "/registry/pods/default/a";
        cache.apply_put(key, &on_node("a", ""), 1);
        cache.apply_put("/registry/pods/default/b", &on_node("b", "n2"), 2);
        cache.apply_put(key, &on_node("a", "n1"), 3);
        cache.apply_put(key, &on_node("a", "n3"), 4);
        cache.apply_delete(key, 5);
        // n1 sees the pod arrive and leave (the event that moved it away, via prev).
        assert_eq!(
            received(&mut n1),
            vec![(3, Some("n1".into())), (4, Some("n3".into()))]
        );
        assert_eq!(
            received(&mut unscheduled),
            vec![(1, Some(String::new())), (3, Some("n1".into()))]
        );
        assert_eq!(received(&mut all).len(), 5);
        drop(n1);
        assert!(!cache.inner.read().watchers.by_node.contains_key("n1"));
        // A watcher whose receiver went is dropped, index included, by the next progress.
        unscheduled.rx.close();
        cache.apply_progress(6);
        let inner = cache.inner.read();
        assert!(inner.watchers.by_node.is_empty());
        assert_eq!(inner.watchers.len(), 1);
    }

    #[test]
    fn pages_at_a_past_revision_undo_later_changes() {
        let cache = Cache::new();
        let key = |n: &str| format!("/registry/pods/default/{n}");
        let image = |e: &Arc<Entry>| {
            e.object()["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap_or("")
                .to_string()
        };
        // At revision 4: a (web:1), b (web:1), c (web:1); d does not exist yet.
        for (i, n) in ["a", "b", "c"].into_iter().enumerate() {
            cache.apply_put(&key(n), &verbose_pod(n, "web:1"), i as i64 + 1);
        }
        cache.apply_put(&key("x"), &verbose_pod("x", "web:1"), 4);
        cache.apply_delete(&key("x"), 5);
        cache.apply_put(&key("x"), &verbose_pod("x", "web:9"), 6);
        // Later: a changes twice, b is deleted, d is created, x goes again.
        cache.apply_put(&key("a"), &verbose_pod("a", "web:2"), 7);
        cache.apply_put(&key("a"), &verbose_pod("a", "web:3"), 8);
        cache.apply_delete(&key("b"), 9);
        cache.apply_put(&key("d"), &verbose_pod("d", "web:1"), 10);
        cache.apply_delete(&key("x"), 11);
        let all = |_: &Entry| true;
        let at = |rv, start: &str, limit| {
            let p = cache
                .page_at("/registry/pods/", start, rv, limit, &all, true)
                .expect("in history");
            let got: Vec<(String, String, i64)> = p
                .items
                .iter()
                .map(|e| (e.name().to_string(), image(e), e.rv))
                .collect();
            (got, p.rest)
        };
        let row = |n: &str, img: &str, rv| (n.to_string(), img.to_string(), rv);
        assert_eq!(
            at(4, "/registry/pods/", 0),
            (
                vec![
                    row("a", "web:1", 1),
                    row("b", "web:1", 2),
                    row("c", "web:1", 3),
                    row("x", "web:1", 4)
                ],
                0
            )
        );
        assert_eq!(
            at(5, "/registry/pods/", 2),
            (vec![row("a", "web:1", 1), row("b", "web:1", 2)], 1)
        );
        assert_eq!(
            at(8, &format!("{}\u{0}", key("a")), 2),
            (vec![row("b", "web:1", 2), row("c", "web:1", 3)], 1)
        );
        assert_eq!(
            at(11, "/registry/pods/", 0),
            (
                vec![
                    row("a", "web:3", 8),
                    row("c", "web:1", 3),
                    row("d", "web:1", 10)
                ],
                0
            )
        );
        let only_c = |e: &Entry| e.name() == "c";
        let p = cache
            .page_at("/registry/pods/", "/registry/pods/", 6, 1, &only_c, false)
            .expect("in history");
        assert_eq!((p.items.len(), p.rest), (1, 0));
        // Beyond the history, or ahead of the cache: the store's business.
        cache.inner.write().history_start = 5;
        assert!(
            cache
                .page_at("/registry/pods/", "/registry/pods/", 4, 0, &all, true)
                .is_none()
        );
        assert!(
            cache
                .page_at("/registry/pods/", "/registry/pods/", 12, 0, &all, true)
                .is_none()
        );
    }

    #[test]
    fn replaced_versions_are_kept_compressed_and_replay_intact() {
        let cache = Cache::new();
        let key = "/registry/pods/default/a";
        let (v1, v2) = (verbose_pod("a", "web:1"), verbose_pod("a", "web:2"));
        let want = |v: &[u8], rv| {
            Entry::from_store(key, v, rv)
                .expect("entry")
                .with_json(Json::to_bytes)
        };
        cache.apply_put(key, &v1, 1);
        cache.apply_put(key, &v2, 2);
        cache.apply_delete(key, 3);
        let w = cache
            .watch("/registry/pods/", Some(0), None)
            .expect("watch");
        let [added, modified, deleted] = &w.backlog[..] else {
            panic!("three events, got {}", w.backlog.len());
        };
        // Every version replaced or deleted is compressed, to well under half its size…
        for e in [&added.entry, &modified.entry, &deleted.entry] {
            assert_eq!(e.json_len(), e.with_json(Json::len));
            assert!(
                e.held() * 2 < e.json_len(),
                "{} of {}",
                e.held(),
                e.json_len()
            );
        }
        assert_eq!(
            cache.inner.read().history_bytes,
            modified.retained + deleted.retained
        );
        // … and replays as it was stored.
        assert_eq!(added.entry.with_json(Json::to_bytes), want(&v1, 1));
        assert_eq!(modified.entry.with_json(Json::to_bytes), want(&v2, 2));
        let frame = deleted.json_frame("DELETED");
        let obj: Value = serde_json::from_slice(&frame).expect("frame");
        assert_eq!(obj["object"]["metadata"]["resourceVersion"], "3");
        assert_eq!(obj["object"]["spec"]["containers"][0]["image"], "web:2");
        // The current version of an object stays as clients receive it.
        cache.apply_put(key, &v1, 4);
        let current = cache.get(key).expect("current");
        assert_eq!(current.held(), current.json_len());
        assert_eq!(current.with_json(Json::to_bytes), want(&v1, 4));
    }

    #[test]
    fn history_is_capped_by_the_bytes_only_it_keeps_alive() {
        let cache = Cache::new();
        cache.inner.write().max_history_bytes = 100_000;
        let key = "/registry/pods/default/a";
        // Creates of distinct objects keep nothing alive beyond the objects themselves.
        for i in 0..50 {
            cache.apply_put(
                &format!("/registry/pods/default/p{i}"),
                &pod("p", 10_000),
                i + 1,
            );
        }
        assert_eq!(cache.inner.read().history.len(), 50);
        assert_eq!(cache.inner.read().history_start, 0);
        // Each update of one object keeps its previous ~10 kB version alive in the history.
        for rv in 51..=80 {
            cache.apply_put(key, &pod("a", 10_000), rv);
        }
        let inner = cache.inner.read();
        assert!(inner.history_bytes <= 100_000, "{}", inner.history_bytes);
        assert!(inner.history_start > 0, "the oldest events went");
        let oldest = inner.history.front().map(|e| e.rv).unwrap_or(0);
        assert_eq!(oldest, inner.history_start + 1);
        drop(inner);
        // A watch from before the kept history is told it is too old; one inside it replays.
        assert!(matches!(
            cache.watch("/registry/pods/", Some(10), None),
            Err(WatchError::TooOld { .. })
        ));
        let w = cache
            .watch("/registry/pods/", Some(75), None)
            .expect("watch");
        assert_eq!(
            w.backlog.iter().map(|e| e.rv).collect::<Vec<_>>(),
            vec![76, 77, 78, 79, 80]
        );
    }
}
