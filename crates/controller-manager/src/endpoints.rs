//! The Endpoints and EndpointSlice controllers (upstream `pkg/controller/endpoint` and
//! `pkg/controller/endpointslice`): for every Service with a selector, the pods it selects
//! that have an IP become addresses (ready ones in `addresses`, the rest in
//! `notReadyAddresses`; in slices with ready/serving/terminating conditions), with the
//! Service's ports resolved against each pod's named container ports.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Node, ObjectReference, Pod, Service,
};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, PostParams};
use kumo_client::WorkQueue;
use tracing::{debug, info};

use crate::Ctx;
use crate::informer::{Change, Informer};
use crate::util;

/// `endpointslice.kubernetes.io/managed-by` value of this controller.
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
/// `kubernetes.io/service-name`.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// `service.kubernetes.io/headless`.
const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// Upstream's `--max-endpoints-per-slice` default.
const MAX_PER_SLICE: usize = 100;

/// Which of the two objects a controller writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// core/v1 Endpoints.
    Endpoints,
    /// discovery.k8s.io/v1 EndpointSlices.
    Slices,
}

/// One endpoint candidate.
#[derive(Debug, Clone)]
struct Candidate {
    ip: String,
    pod: Arc<Pod>,
    ready: bool,
    serving: bool,
    terminating: bool,
    /// Resolved (name, port, protocol, appProtocol) per Service port.
    ports: Vec<(String, i32, String, Option<String>)>,
}

/// A resolved port: (name, port, protocol).
type PortKey = Vec<(String, i32, String)>;
/// Ready and not-ready addresses of one port set.
type AddressGroups = BTreeMap<PortKey, (Vec<EndpointAddress>, Vec<EndpointAddress>)>;
/// Endpoints per (address type, port set).
type SliceGroups = BTreeMap<(String, PortKey), Vec<Endpoint>>;

/// An Endpoints or EndpointSlice controller.
pub struct EndpointsController {
    flavor: Flavor,
    client: kube::Client,
    services: Arc<Informer<Service>>,
    pods: Arc<Informer<Pod>>,
    nodes: Arc<Informer<Node>>,
    endpoints: Option<Arc<Informer<Endpoints>>>,
    slices: Option<Arc<Informer<EndpointSlice>>>,
    queue: WorkQueue<String>,
    /// Slices we created that the informer has not shown yet, per Service (upstream's
    /// endpointSliceTracker): syncing before they appear would create duplicates.
    created:
        parking_lot::Mutex<std::collections::HashMap<String, (std::time::Instant, Vec<String>)>>,
}

fn is_headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

fn selector_of(svc: &Service) -> Option<BTreeMap<String, String>> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    spec.selector.clone().filter(|s| !s.is_empty())
}

/// Resolves a Service port's targetPort against the pod (`podutil.FindPort`).
fn find_port(pod: &Pod, target: Option<&IntOrString>, port: i32, protocol: &str) -> Option<i32> {
    match target {
        None => Some(port),
        Some(IntOrString::Int(i)) => Some(*i),
        Some(IntOrString::String(name)) => {
            if let Ok(n) = name.parse::<i32>() {
                return Some(n);
            }
            pod.spec.as_ref()?.containers.iter().find_map(|c| {
                c.ports.as_deref()?.iter().find_map(|p| {
                    (p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol)
                        .then_some(p.container_port)
                })
            })
        }
    }
}

impl EndpointsController {
    /// Builds the controller of `flavor` and registers its handlers.
    pub fn new(ctx: &Ctx, flavor: Flavor) -> Arc<Self> {
        let queue_name = match flavor {
            Flavor::Endpoints => "endpoint",
            Flavor::Slices => "endpoint_slice",
        };
        let c = Arc::new(EndpointsController {
            flavor,
            client: ctx.client.clone(),
            services: ctx.factory.get::<Service>(),
            pods: ctx.factory.get::<Pod>(),
            nodes: ctx.factory.get_cluster::<Node>(),
            endpoints: (flavor == Flavor::Endpoints).then(|| ctx.factory.get::<Endpoints>()),
            slices: (flavor == Flavor::Slices).then(|| ctx.factory.get::<EndpointSlice>()),
            queue: ctx.queue(queue_name),
            created: parking_lot::Mutex::new(std::collections::HashMap::new()),
        });
        let weak = Arc::downgrade(&c);
        c.services.add_handler(move |ch| {
            if let Some(c) = weak.upgrade() {
                let s = match ch {
                    Change::Added(o) | Change::Deleted(o) => *o,
                    Change::Updated { new, .. } => *new,
                };
                c.queue.add(util::key_of(&s.metadata));
            }
        });
        let weak = Arc::downgrade(&c);
        c.pods.add_handler(move |ch| {
            if let Some(c) = weak.upgrade() {
                match ch {
                    Change::Added(p) | Change::Deleted(p) => c.enqueue_for_pod(p),
                    Change::Updated { old, new } => {
                        if old.metadata.resource_version == new.metadata.resource_version {
                            return;
                        }
                        c.enqueue_for_pod(old);
                        c.enqueue_for_pod(new);
                    }
                }
            }
        });
        if let Some(eps) = &c.endpoints {
            let weak = Arc::downgrade(&c);
            eps.add_handler(move |ch| {
                if let (Some(c), Change::Deleted(e)) = (weak.upgrade(), ch) {
                    c.queue.add(util::key_of(&e.metadata));
                }
            });
        }
        if let Some(slices) = &c.slices {
            let weak = Arc::downgrade(&c);
            slices.add_handler(move |ch| {
                if let Some(c) = weak.upgrade() {
                    let s = match ch {
                        Change::Added(o) | Change::Deleted(o) => *o,
                        Change::Updated { new, .. } => *new,
                    };
                    let labels = s.metadata.labels.clone().unwrap_or_default();
                    if labels
                        .get("endpointslice.kubernetes.io/managed-by")
                        .map(String::as_str)
                        == Some(MANAGED_BY)
                        && let Some(svc) = labels.get(SERVICE_NAME_LABEL)
                    {
                        c.queue.add(format!(
                            "{}/{svc}",
                            s.metadata.namespace.as_deref().unwrap_or("")
                        ));
                    }
                }
            });
        }
        c
    }

    fn enqueue_for_pod(&self, pod: &Pod) {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("");
        for svc in self.services.list_namespace(ns) {
            if let Some(sel) = selector_of(&svc)
                && util::map_selector_matches(&sel, pod.metadata.labels.as_ref())
            {
                self.queue.add(util::key_of(&svc.metadata));
            }
        }
    }

    /// Runs the workers.
    pub async fn run(self: Arc<Self>, workers: usize) {
        self.services.synced().await;
        self.pods.synced().await;
        self.nodes.synced().await;
        if let Some(e) = &self.endpoints {
            e.synced().await;
        }
        if let Some(s) = &self.slices {
            s.synced().await;
        }
        info!(flavor = ?self.flavor, "endpoints controller synced; starting workers");
        let name = match self.flavor {
            Flavor::Endpoints => "endpoint",
            Flavor::Slices => "endpointslice",
        };
        let c = self.clone();
        util::run_workers(name, self.queue.clone(), workers, move |key| {
            let c = c.clone();
            async move {
                match c.flavor {
                    Flavor::Endpoints => c.sync_endpoints(&key).await,
                    Flavor::Slices => c.sync_slices(&key).await,
                }
            }
        })
        .await;
    }

    /// The Service's candidates: selected pods with an IP, not terminated.
    fn candidates(&self, svc: &Service, sel: &BTreeMap<String, String>) -> Vec<Candidate> {
        let ns = svc.metadata.namespace.as_deref().unwrap_or("");
        let spec = svc.spec.clone().unwrap_or_default();
        let publish = spec.publish_not_ready_addresses.unwrap_or(false);
        let mut out = Vec::new();
        for pod in self.pods.list_namespace(ns) {
            if !util::map_selector_matches(sel, pod.metadata.labels.as_ref())
                || util::is_pod_terminated(&pod)
            {
                continue;
            }
            let Some(ip) = pod
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.clone())
                .filter(|ip| !ip.is_empty())
            else {
                continue;
            };
            let terminating = pod.metadata.deletion_timestamp.is_some();
            let pod_ready = util::is_pod_ready(&pod);
            let mut ports = Vec::new();
            for sp in spec.ports.iter().flatten() {
                let protocol = sp.protocol.clone().unwrap_or_else(|| "TCP".into());
                if let Some(p) = find_port(&pod, sp.target_port.as_ref(), sp.port, &protocol) {
                    ports.push((
                        sp.name.clone().unwrap_or_default(),
                        p,
                        protocol,
                        sp.app_protocol.clone(),
                    ));
                }
            }
            out.push(Candidate {
                ip,
                ready: (pod_ready && !terminating) || publish,
                serving: pod_ready || publish,
                terminating,
                ports,
                pod,
            });
        }
        out.sort_by(|a, b| a.ip.cmp(&b.ip));
        out
    }

    fn labels_for(&self, svc: &Service) -> BTreeMap<String, String> {
        let mut labels = svc.metadata.labels.clone().unwrap_or_default();
        if is_headless(svc) {
            labels.insert(HEADLESS_LABEL.into(), String::new());
        } else {
            labels.remove(HEADLESS_LABEL);
        }
        labels
    }

    fn target_ref(pod: &Pod) -> ObjectReference {
        ObjectReference {
            kind: Some("Pod".into()),
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        }
    }

    /// `syncService` of the Endpoints controller.
    async fn sync_endpoints(&self, key: &str) -> anyhow::Result<()> {
        let (ns, name) = util::split_key(key);
        let api: Api<Endpoints> = Api::namespaced(self.client.clone(), ns);
        let existing = self.endpoints.as_ref().and_then(|e| e.get(Some(ns), name));
        let Some(svc) = self.services.get(Some(ns), name) else {
            // The Service is gone: so are its Endpoints.
            if existing.is_some() {
                match api.delete(name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(e) if util::is_not_found(&e) => {}
                    Err(e) => return Err(e).context("delete endpoints"),
                }
            }
            return Ok(());
        };
        let Some(sel) = selector_of(&svc) else {
            return Ok(());
        };
        let headless_no_ports = svc
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_ref())
            .is_none_or(|p| p.is_empty());
        // Group addresses by their port set.
        let mut groups: AddressGroups = BTreeMap::new();
        for c in self.candidates(&svc, &sel) {
            if c.terminating && !c.ready {
                continue;
            }
            if c.ports.is_empty() && !headless_no_ports {
                continue;
            }
            let hostname = c.pod.spec.as_ref().and_then(|s| {
                (s.subdomain.as_deref() == svc.metadata.name.as_deref() && s.hostname.is_some())
                    .then(|| s.hostname.clone())
                    .flatten()
            });
            let addr = EndpointAddress {
                ip: c.ip.clone(),
                hostname,
                node_name: c.pod.spec.as_ref().and_then(|s| s.node_name.clone()),
                target_ref: Some(Self::target_ref(&c.pod)),
            };
            let ports: Vec<(String, i32, String)> = c
                .ports
                .iter()
                .map(|(n, p, proto, _)| (n.clone(), *p, proto.clone()))
                .collect();
            let entry = groups.entry(ports).or_default();
            if c.ready {
                entry.0.push(addr);
            } else {
                entry.1.push(addr);
            }
        }
        let subsets: Vec<EndpointSubset> = groups
            .into_iter()
            .map(|(ports, (ready, not_ready))| EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: (!ports.is_empty()).then(|| {
                    ports
                        .into_iter()
                        .map(|(n, p, proto)| EndpointPort {
                            name: (!n.is_empty()).then_some(n),
                            port: p,
                            protocol: Some(proto),
                            app_protocol: None,
                        })
                        .collect()
                }),
            })
            .collect();
        let labels = self.labels_for(&svc);
        let subsets = (!subsets.is_empty()).then_some(subsets);
        match existing {
            Some(cur) => {
                if cur.subsets == subsets
                    && cur.metadata.labels.clone().unwrap_or_default() == labels
                {
                    return Ok(());
                }
                let mut next = (*cur).clone();
                next.subsets = subsets;
                next.metadata.labels = Some(labels);
                api.replace(name, &PostParams::default(), &next)
                    .await
                    .context("update endpoints")?;
            }
            None => {
                let ep = Endpoints {
                    metadata: ObjectMeta {
                        name: Some(name.into()),
                        namespace: Some(ns.into()),
                        labels: Some(labels),
                        ..Default::default()
                    },
                    subsets,
                };
                match api.create(&PostParams::default(), &ep).await {
                    Ok(_) => debug!(service = key, "created endpoints"),
                    Err(e) if util::is_already_exists(&e) || util::is_namespace_terminating(&e) => {
                    }
                    Err(e) => return Err(e).context("create endpoints"),
                }
            }
        }
        Ok(())
    }

    /// `reconcile` of the EndpointSlice controller.
    async fn sync_slices(&self, key: &str) -> anyhow::Result<()> {
        let (ns, name) = util::split_key(key);
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), ns);
        let existing: Vec<Arc<EndpointSlice>> = self
            .slices
            .as_ref()
            .map(|s| s.list_namespace(ns))
            .unwrap_or_default()
            .into_iter()
            .filter(|s| {
                let l = s.metadata.labels.clone().unwrap_or_default();
                l.get(SERVICE_NAME_LABEL).map(String::as_str) == Some(name)
                    && l.get("endpointslice.kubernetes.io/managed-by")
                        .map(String::as_str)
                        == Some(MANAGED_BY)
            })
            .collect();
        {
            let mut created = self.created.lock();
            if let Some((at, names)) = created.get(key) {
                let seen = at.elapsed() > std::time::Duration::from_secs(30)
                    || names.iter().all(|n| {
                        existing
                            .iter()
                            .any(|s| s.metadata.name.as_deref() == Some(n.as_str()))
                    });
                if !seen {
                    self.queue
                        .add_after(key.to_string(), std::time::Duration::from_millis(100));
                    return Ok(());
                }
                created.remove(key);
            }
        }
        let svc = self.services.get(Some(ns), name);
        let Some(sel) = svc.as_deref().and_then(selector_of) else {
            // Gone or selector-less: our slices go (the GC also removes them via the owner).
            for s in existing {
                let n = s.metadata.name.clone().unwrap_or_default();
                match api.delete(&n, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(e) if util::is_not_found(&e) => {}
                    Err(e) => return Err(e).context("delete endpointslice"),
                }
            }
            return Ok(());
        };
        let Some(svc) = svc else { return Ok(()) };
        // Desired slices: by address type and port set, at most 100 endpoints each.
        let mut groups: SliceGroups = BTreeMap::new();
        let mut port_meta: BTreeMap<Vec<(String, i32, String)>, Vec<SlicePort>> = BTreeMap::new();
        for c in self.candidates(&svc, &sel) {
            let addr_type = if c.ip.contains(':') { "IPv6" } else { "IPv4" };
            let node = c.pod.spec.as_ref().and_then(|s| s.node_name.clone());
            let zone = node
                .as_deref()
                .and_then(|n| self.nodes.get(None, n))
                .and_then(|n| {
                    n.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("topology.kubernetes.io/zone").cloned())
                });
            let ports: Vec<(String, i32, String)> = c
                .ports
                .iter()
                .map(|(n, p, proto, _)| (n.clone(), *p, proto.clone()))
                .collect();
            port_meta.entry(ports.clone()).or_insert_with(|| {
                c.ports
                    .iter()
                    .map(|(n, p, proto, app)| SlicePort {
                        name: Some(n.clone()),
                        port: Some(*p),
                        protocol: Some(proto.clone()),
                        app_protocol: app.clone(),
                    })
                    .collect()
            });
            let hostname = c.pod.spec.as_ref().and_then(|s| {
                (s.subdomain.as_deref() == svc.metadata.name.as_deref() && s.hostname.is_some())
                    .then(|| s.hostname.clone())
                    .flatten()
            });
            groups
                .entry((addr_type.into(), ports))
                .or_default()
                .push(Endpoint {
                    addresses: vec![c.ip.clone()],
                    conditions: Some(EndpointConditions {
                        ready: Some(c.ready),
                        serving: Some(c.serving),
                        terminating: Some(c.terminating),
                    }),
                    hostname,
                    node_name: node,
                    target_ref: Some(Self::target_ref(&c.pod)),
                    zone,
                    ..Default::default()
                });
        }
        if groups.is_empty() {
            // Upstream keeps one empty slice (IPv4) so consumers see the Service exists.
            groups.insert(("IPv4".into(), Vec::new()), Vec::new());
        }
        let mut desired: Vec<(String, Vec<SlicePort>, Vec<Endpoint>)> = Vec::new();
        for ((addr_type, ports), eps) in groups {
            let meta = port_meta.get(&ports).cloned().unwrap_or_default();
            if eps.is_empty() {
                desired.push((addr_type.clone(), meta.clone(), Vec::new()));
            }
            for chunk in eps.chunks(MAX_PER_SLICE) {
                desired.push((addr_type.clone(), meta.clone(), chunk.to_vec()));
            }
        }
        let mut labels = self.labels_for(&svc);
        labels.insert(SERVICE_NAME_LABEL.into(), name.into());
        labels.insert(
            "endpointslice.kubernetes.io/managed-by".into(),
            MANAGED_BY.into(),
        );
        let owner = util::controller_ref(svc.as_ref());
        let mut used: HashSet<String> = HashSet::new();
        for (addr_type, ports, eps) in desired {
            let ports_opt = (!ports.is_empty()).then_some(ports);
            let eps_norm = eps.clone();
            // Reuse a slice of the same address type and ports.
            let reuse = existing.iter().find(|s| {
                !used.contains(s.metadata.name.as_deref().unwrap_or(""))
                    && s.address_type == addr_type
                    && s.ports == ports_opt
            });
            match reuse {
                Some(cur) => {
                    let n = cur.metadata.name.clone().unwrap_or_default();
                    used.insert(n.clone());
                    if cur.endpoints == eps_norm && cur.metadata.labels.as_ref() == Some(&labels) {
                        continue;
                    }
                    let mut next = (**cur).clone();
                    next.endpoints = eps_norm;
                    next.metadata.labels = Some(labels.clone());
                    api.replace(&n, &PostParams::default(), &next)
                        .await
                        .context("update endpointslice")?;
                }
                None => {
                    let slice = EndpointSlice {
                        metadata: ObjectMeta {
                            generate_name: Some(format!("{name}-")),
                            namespace: Some(ns.into()),
                            labels: Some(labels.clone()),
                            owner_references: Some(vec![owner.clone()]),
                            ..Default::default()
                        },
                        address_type: addr_type,
                        endpoints: eps_norm,
                        ports: ports_opt,
                    };
                    match api.create(&PostParams::default(), &slice).await {
                        Ok(s) => {
                            let n = s.metadata.name.unwrap_or_default();
                            self.created
                                .lock()
                                .entry(key.to_string())
                                .or_insert_with(|| (std::time::Instant::now(), Vec::new()))
                                .1
                                .push(n.clone());
                            used.insert(n);
                        }
                        Err(e) if util::is_namespace_terminating(&e) => {}
                        Err(e) => return Err(e).context("create endpointslice"),
                    }
                }
            }
        }
        for s in existing {
            let n = s.metadata.name.clone().unwrap_or_default();
            if used.contains(&n) {
                continue;
            }
            match api.delete(&n, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if util::is_not_found(&e) => {}
                Err(e) => return Err(e).context("delete endpointslice"),
            }
        }
        Ok(())
    }
}
