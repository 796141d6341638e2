//! Host-side informers over dynamic objects: one kube-runtime watcher per resource feeding an
//! in-memory cache (an index by one label, optionally) and client-go style add/update/delete
//! handlers, so that reconciles read the cache instead of the apiserver and handlers route
//! each change to the work-queue keys it can affect.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use kube::api::{Api, DynamicObject};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use parking_lot::RwLock;
use tracing::{debug, warn};

/// `(namespace, name)` of a cached object; the namespace is empty for cluster-scoped kinds.
pub type ObjKey = (String, String);

/// The cache key of an object.
pub fn key_of(obj: &DynamicObject) -> ObjKey {
    (
        obj.metadata.namespace.clone().unwrap_or_default(),
        obj.metadata.name.clone().unwrap_or_default(),
    )
}

/// What happened to an object, as a handler sees it.
#[derive(Debug)]
pub enum Change<'a> {
    /// A new object (or one first seen after a relist).
    Added(&'a DynamicObject),
    /// An object changed (on a relist `old` and `new` may have the same resourceVersion).
    Updated {
        old: &'a DynamicObject,
        new: &'a DynamicObject,
    },
    /// An object was deleted (or vanished across a relist).
    Deleted(&'a DynamicObject),
}

type Handler = Arc<dyn Fn(&Change<'_>) + Send + Sync>;

#[derive(Default)]
struct Cache {
    objs: HashMap<ObjKey, Arc<DynamicObject>>,
    /// Label value → keys of the objects carrying it.
    index: HashMap<String, HashSet<ObjKey>>,
}

/// One watch of one resource, its cache and its handlers.
pub struct Informer {
    what: String,
    index_label: Option<&'static str>,
    cache: RwLock<Cache>,
    handlers: RwLock<Vec<Handler>>,
    synced: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for Informer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Informer")
            .field("what", &self.what)
            .finish_non_exhaustive()
    }
}

impl Informer {
    /// An informer named `what` (for logs), indexing its objects by `index_label` if given.
    pub fn new(what: &str, index_label: Option<&'static str>) -> Arc<Self> {
        Arc::new(Informer {
            what: what.to_string(),
            index_label,
            cache: RwLock::new(Cache::default()),
            handlers: RwLock::new(Vec::new()),
            synced: tokio::sync::watch::Sender::new(false),
        })
    }

    /// Adds a handler, called after the cache took the change in.
    pub fn add_handler(&self, handler: impl Fn(&Change<'_>) + Send + Sync + 'static) {
        self.handlers.write().push(Arc::new(handler));
    }

    /// A cached object.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<DynamicObject>> {
        self.cache
            .read()
            .objs
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Every cached object.
    pub fn list(&self) -> Vec<Arc<DynamicObject>> {
        self.cache.read().objs.values().cloned().collect()
    }

    /// Every cached key.
    pub fn keys(&self) -> Vec<ObjKey> {
        self.cache.read().objs.keys().cloned().collect()
    }

    /// Cached objects in `namespace`.
    pub fn list_namespace(&self, namespace: &str) -> Vec<Arc<DynamicObject>> {
        self.cache
            .read()
            .objs
            .iter()
            .filter(|((ns, _), _)| ns == namespace)
            .map(|(_, o)| o.clone())
            .collect()
    }

    /// Cached objects whose index label has `value`.
    pub fn indexed(&self, value: &str) -> Vec<Arc<DynamicObject>> {
        let c = self.cache.read();
        c.index
            .get(value)
            .into_iter()
            .flatten()
            .filter_map(|k| c.objs.get(k).cloned())
            .collect()
    }

    /// Whether the first list completed.
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Waits (at most `timeout`) for the first list; returns whether it completed.
    pub async fn wait_synced(&self, timeout: Duration) -> bool {
        let mut rx = self.synced.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|s| *s))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    fn label_value(&self, obj: &DynamicObject) -> Option<String> {
        let l = self.index_label?;
        obj.metadata.labels.as_ref()?.get(l).cloned()
    }

    /// Puts `obj` in the cache; returns the copy it replaced.
    fn upsert(&self, obj: &DynamicObject) -> Option<Arc<DynamicObject>> {
        let key = key_of(obj);
        let value = self.label_value(obj);
        let mut c = self.cache.write();
        let old = c.objs.insert(key.clone(), Arc::new(obj.clone()));
        if let Some(old_value) = old.as_deref().and_then(|o| self.label_value(o))
            && Some(&old_value) != value.as_ref()
            && let Some(set) = c.index.get_mut(&old_value)
        {
            set.remove(&key);
            if set.is_empty() {
                c.index.remove(&old_value);
            }
        }
        if let Some(v) = value {
            c.index.entry(v).or_default().insert(key);
        }
        old
    }

    fn remove(&self, key: &ObjKey) -> Option<Arc<DynamicObject>> {
        let mut c = self.cache.write();
        let old = c.objs.remove(key)?;
        if let Some(v) = self.label_value(&old)
            && let Some(set) = c.index.get_mut(&v)
        {
            set.remove(key);
            if set.is_empty() {
                c.index.remove(&v);
            }
        }
        Some(old)
    }

    fn dispatch(&self, change: &Change<'_>) {
        let handlers: Vec<Handler> = self.handlers.read().clone();
        for h in handlers {
            h(change);
        }
    }

    /// Runs the watch until the task is aborted (the stream restarts itself with backoff).
    pub async fn run(self: Arc<Self>, api: Api<DynamicObject>, config: watcher::Config) {
        let mut stream = std::pin::pin!(watcher::watcher(api, config).default_backoff());
        let mut seen: HashSet<ObjKey> = HashSet::new();
        while let Some(ev) = stream.next().await {
            let ev = match ev {
                Ok(ev) => ev,
                Err(e) => {
                    warn!(what = %self.what, error = %e, "watch failed; retrying");
                    continue;
                }
            };
            match ev {
                Event::Apply(obj) | Event::InitApply(obj) => {
                    seen.insert(key_of(&obj));
                    match self.upsert(&obj) {
                        Some(old) => self.dispatch(&Change::Updated {
                            old: &old,
                            new: &obj,
                        }),
                        None => self.dispatch(&Change::Added(&obj)),
                    }
                }
                Event::Delete(obj) => {
                    self.remove(&key_of(&obj));
                    self.dispatch(&Change::Deleted(&obj));
                }
                Event::Init => seen.clear(),
                Event::InitDone => {
                    let gone: Vec<ObjKey> = self
                        .keys()
                        .into_iter()
                        .filter(|k| !seen.contains(k))
                        .collect();
                    seen.clear();
                    debug!(what = %self.what, gone = gone.len(), "relist complete");
                    for k in gone {
                        if let Some(old) = self.remove(&k) {
                            self.dispatch(&Change::Deleted(&old));
                        }
                    }
                    self.synced.send_replace(true);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(ns: &str, name: &str, owner: &str) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ns, "labels": {"o": owner}},
        }))
        .expect("object")
    }

    #[test]
    fn cache_and_label_index() {
        let inf = Informer::new("test", Some("o"));
        assert!(inf.upsert(&obj("a", "x", "one")).is_none());
        inf.upsert(&obj("a", "y", "one"));
        inf.upsert(&obj("b", "x", "two"));
        assert_eq!(inf.indexed("one").len(), 2);
        assert_eq!(inf.list_namespace("a").len(), 2);
        // Relabelled: moves between index entries.
        assert!(inf.upsert(&obj("a", "y", "two")).is_some());
        assert_eq!(inf.indexed("one").len(), 1);
        assert_eq!(inf.indexed("two").len(), 2);
        inf.remove(&("b".into(), "x".into()));
        assert_eq!(inf.indexed("two").len(), 1);
        assert!(inf.get("b", "x").is_none());
        assert!(inf.get("a", "x").is_some());
    }
}
