//! Shared informers: one kube-runtime watcher and reflector store per resource (and
//! namespace/field selector), with client-go style add/update/delete handlers so several
//! controllers share one watch, like `SharedInformerFactory`.

use std::any::{Any, TypeId};
use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::Arc;

use futures::StreamExt as _;
use kube::Resource;
use kube::api::Api;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use parking_lot::{Mutex, RwLock};
use serde::de::DeserializeOwned;
use tracing::{Instrument as _, debug, info_span, warn};

/// What happened to an object, as a handler sees it.
#[derive(Debug)]
pub enum Change<'a, K> {
    /// A new object (or one first seen after a relist).
    Added(&'a K),
    /// An object changed (`old` is the cached copy; their resourceVersions may be equal on
    /// a relist).
    Updated {
        /// The previous copy.
        old: &'a K,
        /// The new copy.
        new: &'a K,
    },
    /// An object was deleted (or vanished across a relist).
    Deleted(&'a K),
}

type Handler<K> = Arc<dyn Fn(&Change<'_, K>) + Send + Sync>;

/// Bounds on the kinds an informer serves.
pub trait Kind:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
}
impl<K> Kind for K where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
}

/// One watch of one resource, its store and its handlers.
pub struct Informer<K: Kind> {
    store: Store<K>,
    writer: Mutex<Option<reflector::store::Writer<K>>>,
    api: Api<K>,
    config: watcher::Config,
    handlers: RwLock<Vec<Handler<K>>>,
    /// Set after the first complete list (kube's `wait_until_ready` wakes only one waiter).
    synced: tokio::sync::watch::Sender<bool>,
}

impl<K: Kind> std::fmt::Debug for Informer<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Informer")
            .field("kind", &K::kind(&()))
            .finish_non_exhaustive()
    }
}

impl<K: Kind> Informer<K> {
    fn new(api: Api<K>, config: watcher::Config) -> Self {
        let (store, writer) = reflector::store();
        Informer {
            store,
            writer: Mutex::new(Some(writer)),
            api,
            config,
            handlers: RwLock::new(Vec::new()),
            synced: tokio::sync::watch::Sender::new(false),
        }
    }

    /// The reflector's store (the informer's lister).
    pub fn store(&self) -> &Store<K> {
        &self.store
    }

    /// Adds a handler; call before the factory starts.
    pub fn add_handler(&self, handler: impl Fn(&Change<'_, K>) + Send + Sync + 'static) {
        self.handlers.write().push(Arc::new(handler));
    }

    /// A cached object by namespace and name.
    pub fn get(&self, namespace: Option<&str>, name: &str) -> Option<Arc<K>> {
        let mut r = ObjectRef::<K>::new(name);
        if let Some(ns) = namespace {
            r = r.within(ns);
        }
        self.store.get(&r)
    }

    /// Every cached object.
    pub fn list(&self) -> Vec<Arc<K>> {
        self.store.state()
    }

    /// Cached objects in `namespace`.
    pub fn list_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        self.store
            .state_filter(|o| o.meta().namespace.as_deref() == Some(namespace))
    }

    /// Waits for the first list to complete.
    pub async fn synced(&self) {
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    fn dispatch(&self, change: &Change<'_, K>) {
        let handlers: Vec<Handler<K>> = self.handlers.read().clone();
        for h in handlers {
            h(change);
        }
    }

    /// Runs the watch until the process ends (the stream restarts itself with backoff).
    async fn run(self: Arc<Self>) {
        let Some(mut writer) = self.writer.lock().take() else {
            return;
        };
        let mut stream = std::pin::pin!(
            watcher::watcher(self.api.clone(), self.config.clone()).default_backoff()
        );
        let mut seen: HashSet<ObjectRef<K>> = HashSet::new();
        while let Some(ev) = stream.next().await {
            let ev = match ev {
                Ok(ev) => ev,
                Err(e) => {
                    warn!(error = %e, "watch failed; retrying");
                    continue;
                }
            };
            match &ev {
                Event::Apply(obj) | Event::InitApply(obj) => {
                    let key = ObjectRef::from_obj(obj);
                    let old = self.store.get(&key);
                    if matches!(ev, Event::InitApply(_)) {
                        seen.insert(key);
                    }
                    writer.apply_watcher_event(&ev);
                    match old {
                        Some(old) => self.dispatch(&Change::Updated {
                            old: &old,
                            new: obj,
                        }),
                        None => self.dispatch(&Change::Added(obj)),
                    }
                }
                Event::Delete(obj) => {
                    writer.apply_watcher_event(&ev);
                    self.dispatch(&Change::Deleted(obj));
                }
                Event::Init => {
                    seen.clear();
                    writer.apply_watcher_event(&ev);
                }
                Event::InitDone => {
                    let gone: Vec<Arc<K>> = self
                        .store
                        .state()
                        .into_iter()
                        .filter(|o| !seen.contains(&ObjectRef::from_obj(o.as_ref())))
                        .collect();
                    writer.apply_watcher_event(&ev);
                    seen.clear();
                    self.synced.send_replace(true);
                    debug!(gone = gone.len(), "relist complete");
                    for obj in gone {
                        self.dispatch(&Change::Deleted(&obj));
                    }
                }
            }
        }
    }
}

/// Starts one informer's watch task.
type Starter = Box<dyn FnOnce() -> tokio::task::JoinHandle<()> + Send>;

/// Which watch an informer is: kind, namespace and field selector.
type FactoryKey = (TypeId, Option<String>, Option<String>);

/// Creates and starts shared informers; a kind asked for twice is one watch.
pub struct InformerFactory {
    client: kube::Client,
    informers: Mutex<HashMap<FactoryKey, Arc<dyn Any + Send + Sync>>>,
    starters: Mutex<Vec<Starter>>,
    started: Mutex<bool>,
    /// The running watches, aborted with the factory.
    running: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Drop for InformerFactory {
    fn drop(&mut self) {
        for h in self.running.lock().drain(..) {
            h.abort();
        }
    }
}

impl std::fmt::Debug for InformerFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InformerFactory")
            .field("informers", &self.informers.lock().len())
            .finish()
    }
}

impl InformerFactory {
    /// A factory over `client`.
    pub fn new(client: kube::Client) -> Self {
        InformerFactory {
            client,
            informers: Mutex::new(HashMap::new()),
            starters: Mutex::new(Vec::new()),
            started: Mutex::new(false),
            running: Mutex::new(Vec::new()),
        }
    }

    /// The client.
    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    /// The informer of every `K` in the cluster.
    pub fn get<K>(&self) -> Arc<Informer<K>>
    where
        K: Kind,
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    {
        self.get_with(None, None)
    }

    /// The informer of cluster-scoped `K`.
    pub fn get_cluster<K>(&self) -> Arc<Informer<K>>
    where
        K: Kind,
        K: Resource<Scope = k8s_openapi::ClusterResourceScope>,
    {
        self.make::<K>(None, None, Api::all(self.client.clone()))
    }

    /// The informer of namespaced `K` in `namespace` (all if `None`) with a field selector.
    pub fn get_with<K>(&self, namespace: Option<&str>, fields: Option<&str>) -> Arc<Informer<K>>
    where
        K: Kind,
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    {
        let api = match namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        };
        self.make::<K>(namespace, fields, api)
    }

    fn make<K: Kind>(
        &self,
        namespace: Option<&str>,
        fields: Option<&str>,
        api: Api<K>,
    ) -> Arc<Informer<K>> {
        let key: FactoryKey = (
            TypeId::of::<K>(),
            namespace.map(str::to_string),
            fields.map(str::to_string),
        );
        let mut informers = self.informers.lock();
        if let Some(existing) = informers.get(&key)
            && let Ok(inf) = existing.clone().downcast::<Informer<K>>()
        {
            return inf;
        }
        let mut config = watcher::Config::default();
        if let Some(f) = fields {
            config = config.fields(f);
        }
        let inf = Arc::new(Informer::new(api, config));
        informers.insert(key, inf.clone());
        let run = inf.clone();
        let kind = K::kind(&()).to_string();
        let start =
            move || tokio::spawn(run.run().instrument(info_span!("informer", kind = %kind)));
        if *self.started.lock() {
            self.running.lock().push(start());
        } else {
            self.starters.lock().push(Box::new(start));
        }
        inf
    }

    /// Starts every informer created so far (later ones start at once).
    pub fn start(&self) {
        let _informers = self.informers.lock();
        *self.started.lock() = true;
        let starters: Vec<_> = std::mem::take(&mut *self.starters.lock());
        let mut running = self.running.lock();
        for s in starters {
            running.push(s());
        }
    }
}
