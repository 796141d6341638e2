//! What the controller knows about each member cluster: its client (from the credentials
//! Secret), availability over time, free capacity, and — per member — a cache of the objects
//! the federation propagated there, fed by one label-selected watch per propagated kind. The
//! cache answers "is this manifest still what we applied?" (drift) and "how is the Deployment
//! doing?" (status) without a request; a watch event that differs from our last apply
//! requeues the owning federated object.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use parking_lot::Mutex;
use serde_json::Value;
use tracing::debug;

use crate::LABEL_OWNER;
use crate::availability::Availability;

/// Key of a member object: `<Kind>/<namespace>/<name>`.
pub fn live_key(kind: &str, namespace: &str, name: &str) -> String {
    format!("{kind}/{namespace}/{name}")
}

/// Replica counts of a member Deployment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeployStatus {
    pub observed_generation: i64,
    pub replicas: i64,
    pub ready: i64,
    pub available: i64,
    pub updated: i64,
}

impl DeployStatus {
    fn of(obj: &Value) -> Option<DeployStatus> {
        let st = obj.get("status")?;
        let g = |k: &str| st.get(k).and_then(Value::as_i64).unwrap_or(0);
        Some(DeployStatus {
            observed_generation: g("observedGeneration"),
            replicas: g("replicas"),
            ready: g("readyReplicas"),
            available: g("availableReplicas"),
            updated: g("updatedReplicas"),
        })
    }
}

/// What a member object looks like now (from its watch or our last apply's response).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Live {
    pub resource_version: String,
    pub generation: i64,
    pub owner: Option<String>,
    pub status: Option<DeployStatus>,
}

impl Live {
    pub fn of(obj: &DynamicObject) -> Live {
        Live {
            resource_version: obj.metadata.resource_version.clone().unwrap_or_default(),
            generation: obj.metadata.generation.unwrap_or(0),
            owner: obj
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_OWNER).cloned()),
            status: DeployStatus::of(&obj.data),
        }
    }
}

/// What we last applied for one member object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedRec {
    /// Hash of the manifest sent.
    pub hash: u64,
    /// resourceVersion and generation the member returned.
    pub resource_version: String,
    pub generation: i64,
}

/// Whether resourceVersion `a` is older than `b` (kumo's and etcd's are revisions; anything
/// that is not a number is never older).
pub(crate) fn older(a: &str, b: &str) -> bool {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(a), Ok(b)) => a < b,
        _ => false,
    }
}

/// The member objects cache and the apply records, under one lock.
#[derive(Debug, Default)]
pub struct Objects {
    pub live: HashMap<String, Live>,
    pub applied: HashMap<String, AppliedRec>,
}

impl Objects {
    /// Whether the manifest with hash `hash` at `key` needs no apply: we applied exactly it and
    /// the member's copy is still ours — same generation for kinds that have one (a status
    /// update is no drift), else the same resourceVersion. Unwatched kinds (namespaces) trust
    /// the record.
    pub fn in_sync(&self, key: &str, hash: u64, watched: bool) -> bool {
        let Some(rec) = self.applied.get(key) else {
            return false;
        };
        if rec.hash != hash {
            return false;
        }
        if !watched {
            return true;
        }
        match self.live.get(key) {
            None => false,
            Some(l) if rec.generation > 0 => l.generation == rec.generation,
            Some(l) => l.resource_version == rec.resource_version,
        }
    }

    /// Records our apply of `key` (manifest hash `hash`) that returned `obj`.
    pub fn record_apply(&mut self, key: &str, hash: u64, obj: &DynamicObject) {
        let live = Live::of(obj);
        self.applied.insert(
            key.to_string(),
            AppliedRec {
                hash,
                resource_version: live.resource_version.clone(),
                generation: live.generation,
            },
        );
        self.upsert(key, live);
    }

    /// Takes a newer copy in (an older one — a watch event behind our apply — is ignored).
    /// Returns whether it is news: not what the cache held already (the echo of our own
    /// apply, or a relist of an unchanged object).
    pub fn upsert(&mut self, key: &str, live: Live) -> bool {
        if let Some(cur) = self.live.get(key)
            && older(&live.resource_version, &cur.resource_version)
        {
            return false;
        }
        let news = self.live.get(key) != Some(&live);
        self.live.insert(key.to_string(), live);
        news
    }

    /// Forgets a deleted object (unless the cache already holds a newer copy); returns its
    /// owner.
    pub fn remove(&mut self, key: &str, resource_version: &str) -> Option<Option<String>> {
        let cur = self.live.get(key)?;
        if older(resource_version, &cur.resource_version) {
            return None;
        }
        self.live.remove(key).map(|l| l.owner)
    }

    /// Forgets what we applied and saw of `key` (after we deleted it, or a failed apply).
    pub fn forget(&mut self, key: &str) {
        self.applied.remove(key);
        self.live.remove(key);
    }
}

/// Called with the owner label of a member object that changed behind our back.
pub type Router = Arc<dyn Fn(&str) + Send + Sync>;

/// The part of a member shared with its watch tasks.
#[derive(Debug, Default)]
pub struct MemberShared {
    pub objects: Mutex<Objects>,
    /// Running watches by `<group>/<version>/<plural>`.
    watches: Mutex<HashMap<String, tokio::task::AbortHandle>>,
}

impl Drop for MemberShared {
    fn drop(&mut self) {
        for h in self.watches.get_mut().values() {
            h.abort();
        }
    }
}

impl MemberShared {
    /// Whether `ar`'s objects are watched in this member (namespaces are not: nothing
    /// federated is labelled on them).
    pub fn watches_kind(ar: &ApiResource) -> bool {
        !(ar.group.is_empty() && ar.plural == "namespaces")
    }

    /// Starts the watch of `ar` in this member unless it runs.
    pub fn ensure_watch(self: &Arc<Self>, client: &kube::Client, ar: &ApiResource, route: Router) {
        if !Self::watches_kind(ar) {
            return;
        }
        let id = format!("{}/{}/{}", ar.group, ar.version, ar.plural);
        let mut w = self.watches.lock();
        if w.contains_key(&id) {
            return;
        }
        let task = tokio::spawn(watch_kind(
            Arc::downgrade(self),
            client.clone(),
            ar.clone(),
            route,
        ));
        w.insert(id, task.abort_handle());
    }
}

/// Watch retry delays: 200 ms doubling to 5 s (a member back from an outage is watched again
/// within seconds; kube's default grows to 30 s).
#[derive(Debug, Clone)]
struct MemberBackoff(Duration);

impl Default for MemberBackoff {
    fn default() -> Self {
        MemberBackoff(Duration::from_millis(200))
    }
}

impl Iterator for MemberBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let d = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(5));
        Some(d)
    }
}

impl kube::runtime::utils::Backoff for MemberBackoff {
    fn reset(&mut self) {
        self.0 = Duration::from_millis(200);
    }
}

/// One member watch: every object of `ar` carrying the owner label, into the member's cache.
async fn watch_kind(
    shared: Weak<MemberShared>,
    client: kube::Client,
    ar: ApiResource,
    route: Router,
) {
    let api: Api<DynamicObject> = Api::all_with(client, &ar);
    let cfg = watcher::Config::default().labels(LABEL_OWNER);
    let mut stream = std::pin::pin!(watcher::watcher(api, cfg).backoff(MemberBackoff::default()));
    let mut seen: HashSet<String> = HashSet::new();
    let key_of = |o: &DynamicObject| {
        live_key(
            &ar.kind,
            o.metadata.namespace.as_deref().unwrap_or_default(),
            o.metadata.name.as_deref().unwrap_or_default(),
        )
    };
    while let Some(ev) = stream.next().await {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let mut owners: Vec<String> = Vec::new();
        match ev {
            Err(e) => {
                debug!(kind = %ar.kind, error = %e, "member watch");
                continue;
            }
            Ok(Event::Apply(o) | Event::InitApply(o)) => {
                let key = key_of(&o);
                seen.insert(key.clone());
                let live = Live::of(&o);
                let owner = live.owner.clone();
                if shared.objects.lock().upsert(&key, live) {
                    owners.extend(owner);
                }
            }
            Ok(Event::Delete(o)) => {
                let rv = o.metadata.resource_version.clone().unwrap_or_default();
                if let Some(owner) = shared.objects.lock().remove(&key_of(&o), &rv) {
                    owners.extend(owner);
                }
            }
            Ok(Event::Init) => seen.clear(),
            Ok(Event::InitDone) => {
                let prefix = format!("{}/", ar.kind);
                let mut objs = shared.objects.lock();
                let gone: Vec<String> = objs
                    .live
                    .keys()
                    .filter(|k| k.starts_with(&prefix) && !seen.contains(*k))
                    .cloned()
                    .collect();
                for k in gone {
                    if let Some(l) = objs.live.remove(&k) {
                        owners.extend(l.owner);
                    }
                }
                seen.clear();
            }
        }
        for o in owners {
            route(&o);
        }
    }
}

/// One member as the controller knows it.
pub struct Member {
    pub client: kube::Client,
    pub secret_rv: String,
    pub avail: Availability,
    /// Free allocatable (cpu millicores, memory bytes, pods).
    pub free: (i64, i64, i64),
    pub shared: Arc<MemberShared>,
}

impl Member {
    pub fn new(client: kube::Client, secret_rv: String) -> Member {
        Member {
            client,
            secret_rv,
            avail: Availability::default(),
            free: (0, 0, 0),
            shared: Arc::new(MemberShared::default()),
        }
    }

    /// Whether the member takes part in division for an object tolerating `toleration` of
    /// NotReady (see [`Availability::schedulable`]).
    pub fn schedulable(&self, toleration: Duration, stable: Duration) -> bool {
        self.avail.schedulable(toleration, stable, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(rv: &str, generation: i64, ready: i64) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "resourceVersion": rv,
                "generation": generation, "labels": {LABEL_OWNER: "fd.shop.web"}},
            "status": {"observedGeneration": generation, "readyReplicas": ready},
        }))
        .expect("object")
    }

    #[test]
    fn drift_is_a_new_generation_not_a_status_update() {
        let mut o = Objects::default();
        let k = live_key("Deployment", "shop", "web");
        assert!(!o.in_sync(&k, 1, true), "never applied");
        o.record_apply(&k, 1, &obj("10", 1, 0));
        assert!(o.in_sync(&k, 1, true));
        assert!(!o.in_sync(&k, 2, true), "another manifest");
        // The watch echoes our apply: no news. A status update is news, not drift.
        assert!(!o.upsert(&k, Live::of(&obj("10", 1, 0))));
        assert!(o.upsert(&k, Live::of(&obj("11", 1, 2))));
        assert!(o.in_sync(&k, 1, true));
        assert_eq!(o.live[&k].status.map(|s| s.ready), Some(2));
        // An event older than what we hold is ignored.
        assert!(!o.upsert(&k, Live::of(&obj("9", 1, 0))));
        assert_eq!(o.live[&k].resource_version, "11");
        // A hand edit of the spec: new generation → drift.
        assert!(o.upsert(&k, Live::of(&obj("12", 2, 2))));
        assert!(!o.in_sync(&k, 1, true));
        // Deleted: drift too; a stale delete does not remove a newer copy.
        assert_eq!(o.remove(&k, "5"), None);
        assert_eq!(o.remove(&k, "13"), Some(Some("fd.shop.web".into())));
        assert!(!o.in_sync(&k, 1, true));
    }

    #[test]
    fn kinds_without_generation_and_unwatched_kinds() {
        let mut o = Objects::default();
        let k = live_key("ConfigMap", "shop", "cfg");
        let cm: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "cfg", "namespace": "shop", "resourceVersion": "4"},
        }))
        .expect("object");
        o.record_apply(&k, 7, &cm);
        assert!(o.in_sync(&k, 7, true));
        o.upsert(
            &k,
            Live {
                resource_version: "5".into(),
                ..Live::default()
            },
        );
        assert!(!o.in_sync(&k, 7, true), "edited by hand");
        let ns = live_key("Namespace", "", "shop");
        o.applied.insert(
            ns.clone(),
            AppliedRec {
                hash: 3,
                resource_version: "1".into(),
                generation: 0,
            },
        );
        assert!(o.in_sync(&ns, 3, false));
        o.forget(&ns);
        assert!(!o.in_sync(&ns, 3, false));
    }

    #[test]
    fn backoff_grows_to_five_seconds() {
        let b: Vec<Duration> = MemberBackoff::default().take(7).collect();
        assert_eq!(b[0], Duration::from_millis(200));
        assert_eq!(b[1], Duration::from_millis(400));
        assert_eq!(b[6], Duration::from_secs(5));
    }
}
