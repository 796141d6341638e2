//! The scheduler's view of pods and nodes, parsed once per object version: resource requests,
//! host ports, affinity terms, spread constraints (`framework.PodInfo`, `framework.NodeInfo`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, Node, Pod, PodAffinityTerm, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::quantity;
use crate::selector::{Labels, Op, RequiredNodeAffinity, Requirement, Selector};

/// Default CPU request used for scoring when a container sets none (`DefaultMilliCPURequest`).
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// Default memory request used for scoring when a container sets none (200 MiB).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// `framework.Resource`: amounts of every resource, CPU in millicores.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resource {
    /// CPU, millicores.
    pub milli_cpu: i64,
    /// Memory, bytes.
    pub memory: i64,
    /// Ephemeral storage, bytes.
    pub ephemeral_storage: i64,
    /// Pod slots (`pods` in allocatable).
    pub allowed_pods: i64,
    /// Extended resources, hugepages and every other named resource.
    pub scalar: BTreeMap<String, i64>,
}

impl Resource {
    /// From a `ResourceList` (allocatable or requests).
    pub fn from_list(list: Option<&BTreeMap<String, Quantity>>) -> Resource {
        let mut r = Resource::default();
        for (name, q) in list.into_iter().flatten() {
            r.set(name, &q.0);
        }
        r
    }

    fn set(&mut self, name: &str, q: &str) {
        match name {
            "cpu" => self.milli_cpu = quantity::milli_value(q).unwrap_or(0),
            "memory" => self.memory = quantity::value(q).unwrap_or(0),
            "ephemeral-storage" => self.ephemeral_storage = quantity::value(q).unwrap_or(0),
            "pods" => self.allowed_pods = quantity::value(q).unwrap_or(0),
            other => {
                self.scalar
                    .insert(other.to_string(), quantity::value(q).unwrap_or(0));
            }
        }
    }

    /// `self += o` (pods count excluded).
    pub fn add(&mut self, o: &Resource) {
        self.milli_cpu += o.milli_cpu;
        self.memory += o.memory;
        self.ephemeral_storage += o.ephemeral_storage;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_insert(0) += v;
        }
    }

    /// `self -= o` (pods count excluded).
    pub fn sub(&mut self, o: &Resource) {
        self.milli_cpu -= o.milli_cpu;
        self.memory -= o.memory;
        self.ephemeral_storage -= o.ephemeral_storage;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_insert(0) -= v;
        }
    }

    /// Element-wise maximum.
    pub fn max_with(&mut self, o: &Resource) {
        self.milli_cpu = self.milli_cpu.max(o.milli_cpu);
        self.memory = self.memory.max(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(o.ephemeral_storage);
        for (k, v) in &o.scalar {
            let e = self.scalar.entry(k.clone()).or_insert(0);
            *e = (*e).max(*v);
        }
    }

    /// Whether nothing is requested.
    pub fn is_zero(&self) -> bool {
        self.milli_cpu == 0
            && self.memory == 0
            && self.ephemeral_storage == 0
            && self.scalar.values().all(|v| *v == 0)
    }
}

/// Requests of one container, with limits standing in for missing requests (what API
/// defaulting would have filled in).
fn container_requests(c: &Container, non_zero: bool) -> Resource {
    let res = c.resources.as_ref();
    let mut r = Resource::from_list(res.and_then(|r| r.limits.as_ref()));
    for (name, q) in res.and_then(|r| r.requests.as_ref()).into_iter().flatten() {
        r.set(name, &q.0);
    }
    if non_zero {
        let has = |n: &str| {
            res.and_then(|r| r.requests.as_ref())
                .is_some_and(|m| m.contains_key(n))
                || res
                    .and_then(|r| r.limits.as_ref())
                    .is_some_and(|m| m.contains_key(n))
        };
        if !has("cpu") {
            r.milli_cpu = DEFAULT_MILLI_CPU_REQUEST;
        }
        if !has("memory") {
            r.memory = DEFAULT_MEMORY_REQUEST;
        }
    }
    r
}

/// `resource.PodRequests`: the sum of the app containers (and restartable init containers,
/// i.e. sidecars), or the largest init container step if bigger, plus the pod overhead. With
/// `non_zero`, containers without a CPU/memory request count as 100m/200Mi (scoring).
pub fn pod_requests(pod: &Pod, non_zero: bool) -> Resource {
    let Some(spec) = pod.spec.as_ref() else {
        return Resource::default();
    };
    let mut reqs = Resource::default();
    for c in &spec.containers {
        reqs.add(&container_requests(c, non_zero));
    }
    let mut sidecars = Resource::default();
    let mut init_max = Resource::default();
    for c in spec.init_containers.iter().flatten() {
        let r = container_requests(c, non_zero);
        let step = if c.restart_policy.as_deref() == Some("Always") {
            reqs.add(&r);
            sidecars.add(&r);
            sidecars.clone()
        } else {
            let mut tmp = r;
            tmp.add(&sidecars);
            tmp
        };
        init_max.max_with(&step);
    }
    reqs.max_with(&init_max);
    if let Some(o) = spec.overhead.as_ref() {
        reqs.add(&Resource::from_list(Some(o)));
    }
    reqs
}

/// A host port a pod asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// `hostIP`, `0.0.0.0` when unset.
    pub ip: String,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    /// The host port.
    pub port: i32,
}

impl HostPort {
    /// `HostPortInfo.CheckConflict`: same protocol and port, and the same IP or a wildcard.
    pub fn conflicts(&self, o: &HostPort) -> bool {
        self.port == o.port
            && self.protocol == o.protocol
            && (self.ip == o.ip || self.ip == "0.0.0.0" || o.ip == "0.0.0.0")
    }
}

/// A pod affinity term with its namespaces resolved (`framework.AffinityTerm`).
#[derive(Debug, Clone)]
pub struct AffinityTerm {
    /// Namespaces named by the term (the pod's own when neither names nor a selector).
    pub namespaces: Vec<String>,
    /// `namespaceSelector` (nothing when unset).
    pub namespace_selector: Selector,
    /// The label selector, with matchLabelKeys/mismatchLabelKeys merged.
    pub selector: Selector,
    /// `topologyKey`.
    pub topology_key: String,
    /// Weight (preferred terms; the hard pod affinity weight for required ones).
    pub weight: i64,
}

impl AffinityTerm {
    fn new(pod_ns: &str, pod_labels: &Labels, t: &PodAffinityTerm, weight: i64) -> AffinityTerm {
        let mut selector = Selector::from_label_selector(t.label_selector.as_ref());
        if t.label_selector.is_some() {
            for k in t.match_label_keys.iter().flatten() {
                if let Some(v) = pod_labels.get(k) {
                    selector.add(Requirement {
                        key: k.clone(),
                        op: Op::In,
                        values: vec![v.clone()],
                    });
                }
            }
            for k in t.mismatch_label_keys.iter().flatten() {
                if let Some(v) = pod_labels.get(k) {
                    selector.add(Requirement {
                        key: k.clone(),
                        op: Op::NotIn,
                        values: vec![v.clone()],
                    });
                }
            }
        }
        let names = t.namespaces.clone().unwrap_or_default();
        let namespaces = if names.is_empty() && t.namespace_selector.is_none() {
            vec![pod_ns.to_string()]
        } else {
            names
        };
        AffinityTerm {
            namespaces,
            namespace_selector: Selector::from_label_selector(t.namespace_selector.as_ref()),
            selector,
            topology_key: t.topology_key.clone(),
            weight,
        }
    }

    /// `AffinityTerm.Matches`: the pod is in one of the term's namespaces (by name, or by the
    /// namespace selector over `ns_labels`) and its labels match the selector.
    pub fn matches(&self, pod: &PodInfo, ns_labels: Option<&Labels>) -> bool {
        let in_ns = self.namespaces.contains(&pod.namespace)
            || ns_labels.is_some_and(|l| self.namespace_selector.matches(l));
        in_ns && self.selector.matches(&pod.labels)
    }
}

/// A parsed topology spread constraint (`topologySpreadConstraint`).
#[derive(Debug, Clone)]
pub struct SpreadConstraint {
    /// `maxSkew`.
    pub max_skew: i64,
    /// `topologyKey`.
    pub topology_key: String,
    /// The selector, with matchLabelKeys merged.
    pub selector: Selector,
    /// `minDomains` (1 when unset).
    pub min_domains: i64,
    /// `nodeAffinityPolicy` is Honor (the default).
    pub honor_node_affinity: bool,
    /// `nodeTaintsPolicy` is Honor (default Ignore).
    pub honor_node_taints: bool,
    /// `whenUnsatisfiable` is `DoNotSchedule` (else `ScheduleAnyway`).
    pub hard: bool,
}

/// Everything the scheduler needs from a pod, parsed once.
#[derive(Debug, Clone)]
pub struct PodInfo {
    /// The pod as last seen.
    pub pod: Arc<Pod>,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.labels`.
    pub labels: Labels,
    /// `spec.priority`, or resolved from `priorityClassName`.
    pub priority: i32,
    /// `preemptionPolicy: Never`.
    pub never_preempt: bool,
    /// Requests for NodeResourcesFit (with overhead).
    pub requests: Resource,
    /// Requests with 100m/200Mi defaults, for scoring.
    pub non_zero: Resource,
    /// Host ports.
    pub ports: Vec<HostPort>,
    /// `spec.tolerations`.
    pub tolerations: Vec<Toleration>,
    /// `spec.nodeName` ("" when unscheduled).
    pub node_name: String,
    /// `spec.schedulerName`.
    pub scheduler_name: String,
    /// `spec.nodeSelector` + required node affinity.
    pub required_node_affinity: RequiredNodeAffinity,
    /// Preferred node affinity terms with their weights.
    pub preferred_node_terms: Vec<(i64, crate::selector::NodeTerm)>,
    /// Required pod affinity terms.
    pub required_affinity: Vec<AffinityTerm>,
    /// Required pod anti-affinity terms.
    pub required_anti_affinity: Vec<AffinityTerm>,
    /// Preferred pod affinity terms.
    pub preferred_affinity: Vec<AffinityTerm>,
    /// Preferred pod anti-affinity terms.
    pub preferred_anti_affinity: Vec<AffinityTerm>,
    /// Whether `spec.affinity` has pod affinity or anti-affinity at all.
    pub has_pod_affinity: bool,
    /// Topology spread constraints.
    pub spread: Vec<SpreadConstraint>,
    /// `metadata.deletionTimestamp` is set.
    pub terminating: bool,
    /// `spec.schedulingGates` is not empty.
    pub gated: bool,
    /// `status.nominatedNodeName`.
    pub nominated_node: String,
    /// `status.startTime` (or creation time), for preemption's tie-breaks.
    pub start_time: Option<jiff::Timestamp>,
}

/// Priority lookup for pods without `spec.priority`: PriorityClass name → value, and the
/// global default.
#[derive(Debug, Clone, Default)]
pub struct PriorityClasses {
    /// Class values by name.
    pub values: HashMap<String, (i32, bool)>,
    /// The value of the class with `globalDefault: true`.
    pub global_default: Option<i32>,
}

impl PriorityClasses {
    /// The pod's priority: `spec.priority`, else its class's value, else the global default,
    /// else 0 (what upstream's Priority admission plugin stores).
    pub fn priority_of(&self, pod: &Pod) -> (i32, bool) {
        let spec = pod.spec.as_ref();
        let never = spec
            .and_then(|s| s.preemption_policy.as_deref())
            .map(|p| p == "Never");
        if let Some(p) = spec.and_then(|s| s.priority) {
            return (p, never.unwrap_or(false));
        }
        if let Some(name) = spec.and_then(|s| s.priority_class_name.as_deref())
            && let Some((v, class_never)) = self.values.get(name)
        {
            return (*v, never.unwrap_or(*class_never));
        }
        (self.global_default.unwrap_or(0), never.unwrap_or(false))
    }
}

impl PodInfo {
    /// Parses a pod.
    pub fn new(pod: Arc<Pod>, classes: &PriorityClasses) -> PodInfo {
        let meta = &pod.metadata;
        let namespace = meta.namespace.clone().unwrap_or_default();
        let labels = meta.labels.clone().unwrap_or_default();
        let default_spec = k8s_openapi::api::core::v1::PodSpec::default();
        let spec = pod.spec.as_ref().unwrap_or(&default_spec);
        let (priority, never_preempt) = classes.priority_of(&pod);
        let mut ports = Vec::new();
        for c in &spec.containers {
            for p in c.ports.iter().flatten() {
                if let Some(hp) = p.host_port
                    && hp > 0
                {
                    ports.push(HostPort {
                        ip: p
                            .host_ip
                            .clone()
                            .filter(|s| !s.is_empty())
                            .unwrap_or_else(|| "0.0.0.0".into()),
                        protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        port: hp,
                    });
                }
            }
        }
        let affinity = spec.affinity.as_ref();
        let node_aff = affinity.and_then(|a| a.node_affinity.as_ref());
        let required_node_affinity = RequiredNodeAffinity::new(
            spec.node_selector.as_ref(),
            node_aff.and_then(|n| {
                n.required_during_scheduling_ignored_during_execution
                    .as_ref()
            }),
        );
        let preferred_node_terms = node_aff
            .and_then(|n| {
                n.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .into_iter()
            .flatten()
            .map(|p| {
                (
                    i64::from(p.weight),
                    crate::selector::NodeTerm::new(&p.preference),
                )
            })
            .collect();
        let pa = affinity.and_then(|a| a.pod_affinity.as_ref());
        let paa = affinity.and_then(|a| a.pod_anti_affinity.as_ref());
        let req_terms = |terms: Option<&Vec<PodAffinityTerm>>| -> Vec<AffinityTerm> {
            terms
                .into_iter()
                .flatten()
                .map(|t| AffinityTerm::new(&namespace, &labels, t, 1))
                .collect()
        };
        let pref_terms =
            |terms: Option<&Vec<k8s_openapi::api::core::v1::WeightedPodAffinityTerm>>| {
                terms
                    .into_iter()
                    .flatten()
                    .map(|t| {
                        AffinityTerm::new(
                            &namespace,
                            &labels,
                            &t.pod_affinity_term,
                            i64::from(t.weight),
                        )
                    })
                    .collect::<Vec<_>>()
            };
        let required_affinity = req_terms(pa.and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        }));
        let required_anti_affinity = req_terms(paa.and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        }));
        let preferred_affinity = pref_terms(pa.and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        }));
        let preferred_anti_affinity = pref_terms(paa.and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        }));
        let spread = spec
            .topology_spread_constraints
            .iter()
            .flatten()
            .map(|c| {
                let mut selector = Selector::from_label_selector(c.label_selector.as_ref());
                for k in c.match_label_keys.iter().flatten() {
                    if let Some(v) = labels.get(k) {
                        selector.add(Requirement {
                            key: k.clone(),
                            op: Op::In,
                            values: vec![v.clone()],
                        });
                    }
                }
                SpreadConstraint {
                    max_skew: i64::from(c.max_skew),
                    topology_key: c.topology_key.clone(),
                    selector,
                    min_domains: i64::from(c.min_domains.unwrap_or(1)),
                    honor_node_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
                    honor_node_taints: c.node_taints_policy.as_deref() == Some("Honor"),
                    hard: c.when_unsatisfiable == "DoNotSchedule",
                }
            })
            .collect();
        let status = pod.status.as_ref();
        let start_time = status
            .and_then(|s| s.start_time.as_ref())
            .or(meta.creation_timestamp.as_ref())
            .map(|t| t.0);
        PodInfo {
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            priority,
            never_preempt,
            requests: pod_requests(&pod, false),
            non_zero: pod_requests(&pod, true),
            ports,
            tolerations: spec.tolerations.clone().unwrap_or_default(),
            node_name: spec.node_name.clone().unwrap_or_default(),
            scheduler_name: spec
                .scheduler_name
                .clone()
                .unwrap_or_else(|| "default-scheduler".into()),
            required_node_affinity,
            preferred_node_terms,
            has_pod_affinity: pa.is_some() || paa.is_some(),
            required_affinity,
            required_anti_affinity,
            preferred_affinity,
            preferred_anti_affinity,
            spread,
            terminating: meta.deletion_timestamp.is_some(),
            gated: spec
                .scheduling_gates
                .as_ref()
                .is_some_and(|g| !g.is_empty()),
            nominated_node: status
                .and_then(|s| s.nominated_node_name.clone())
                .unwrap_or_default(),
            start_time,
            namespace,
            labels,
            pod,
        }
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Whether the pod has required anti-affinity terms (existing pods' anti-affinity).
    pub fn has_required_anti_affinity(&self) -> bool {
        !self.required_anti_affinity.is_empty()
    }
}

/// `framework.NodeInfo`: a node and the pods on it (bound or assumed), with aggregates.
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    /// The node object (`None` while pods reference a node the informer has not shown yet).
    pub node: Option<Arc<Node>>,
    /// Node name.
    pub name: String,
    /// Node labels.
    pub labels: Labels,
    /// `spec.taints`.
    pub taints: Vec<Taint>,
    /// `spec.unschedulable`.
    pub unschedulable: bool,
    /// `status.allocatable`.
    pub allocatable: Resource,
    /// Pods on the node.
    pub pods: Vec<Arc<PodInfo>>,
    /// Sum of the pods' requests.
    pub requested: Resource,
    /// Sum of the pods' non-zero requests (scoring).
    pub non_zero_requested: Resource,
    /// Host ports in use.
    pub used_ports: Vec<HostPort>,
    /// Pods with pod affinity or anti-affinity.
    pub pods_with_affinity: usize,
    /// Pods with required anti-affinity.
    pub pods_with_required_anti_affinity: usize,
}

impl NodeInfo {
    /// A node info for `node`, with no pods.
    pub fn new(node: Arc<Node>) -> NodeInfo {
        let mut n = NodeInfo::default();
        n.set_node(node);
        n
    }

    /// Replaces the node object, keeping the pods.
    pub fn set_node(&mut self, node: Arc<Node>) {
        self.name = node.metadata.name.clone().unwrap_or_default();
        self.labels = node.metadata.labels.clone().unwrap_or_default();
        let spec = node.spec.as_ref();
        self.taints = spec.and_then(|s| s.taints.clone()).unwrap_or_default();
        self.unschedulable = spec.and_then(|s| s.unschedulable).unwrap_or(false);
        self.allocatable = Resource::from_list(
            node.status
                .as_ref()
                .and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref())),
        );
        self.node = Some(node);
    }

    /// Adds a pod and its requests.
    pub fn add_pod(&mut self, p: Arc<PodInfo>) {
        self.requested.add(&p.requests);
        self.non_zero_requested.add(&p.non_zero);
        self.used_ports.extend(p.ports.iter().cloned());
        if p.has_pod_affinity {
            self.pods_with_affinity += 1;
        }
        if p.has_required_anti_affinity() {
            self.pods_with_required_anti_affinity += 1;
        }
        self.pods.push(p);
    }

    /// Removes the pod with `uid`; returns it.
    pub fn remove_pod(&mut self, uid: &str) -> Option<Arc<PodInfo>> {
        let i = self.pods.iter().position(|p| p.uid == uid)?;
        let p = self.pods.swap_remove(i);
        self.requested.sub(&p.requests);
        self.non_zero_requested.sub(&p.non_zero);
        for port in &p.ports {
            if let Some(j) = self.used_ports.iter().position(|u| u == port) {
                self.used_ports.swap_remove(j);
            }
        }
        if p.has_pod_affinity {
            self.pods_with_affinity -= 1;
        }
        if p.has_required_anti_affinity() {
            self.pods_with_required_anti_affinity -= 1;
        }
        Some(p)
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Builders for pods and nodes in unit tests.
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerPort, NodeSpec, NodeStatus, PodSpec, ResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    /// A ResourceList from pairs.
    pub fn rl(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
            .collect()
    }

    /// A node with allocatable resources and labels.
    pub fn node(name: &str, alloc: &[(&str, &str)], labels: &[(&str, &str)]) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .chain([("kubernetes.io/hostname".to_string(), name.to_string())])
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus {
                allocatable: Some(rl(alloc)),
                ..Default::default()
            }),
        }
    }

    /// A pod in `default` with one container requesting `req`.
    pub fn pod(name: &str, req: &[(&str, &str)]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    resources: Some(ResourceRequirements {
                        requests: Some(rl(req)),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: None,
        }
    }

    /// Adds a host port to the first container.
    pub fn with_host_port(mut p: Pod, port: i32) -> Pod {
        if let Some(s) = p.spec.as_mut() {
            s.containers[0].ports = Some(vec![ContainerPort {
                container_port: port,
                host_port: Some(port),
                ..Default::default()
            }]);
        }
        p
    }

    /// Sets labels.
    pub fn with_labels(mut p: Pod, labels: &[(&str, &str)]) -> Pod {
        p.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        p
    }

    /// Parses a pod with no priority classes.
    pub fn info(p: Pod) -> Arc<PodInfo> {
        Arc::new(PodInfo::new(Arc::new(p), &PriorityClasses::default()))
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;
    use k8s_openapi::api::core::v1::ResourceRequirements;

    #[test]
    fn pod_requests_init_sidecars_overhead() {
        let mut p = pod("p", &[("cpu", "200m"), ("memory", "100Mi")]);
        let spec = p.spec.as_mut().expect("spec");
        spec.containers.push(Container {
            name: "c2".into(),
            resources: Some(ResourceRequirements {
                requests: Some(rl(&[("cpu", "100m"), ("example.com/gpu", "1")])),
                ..Default::default()
            }),
            ..Default::default()
        });
        // A big init container: the max of init steps wins for cpu.
        spec.init_containers = Some(vec![Container {
            name: "init".into(),
            resources: Some(ResourceRequirements {
                requests: Some(rl(&[("cpu", "1"), ("memory", "10Mi")])),
                ..Default::default()
            }),
            ..Default::default()
        }]);
        spec.overhead = Some(rl(&[("cpu", "10m")]));
        let r = pod_requests(&p, false);
        assert_eq!(r.milli_cpu, 1010);
        assert_eq!(r.memory, 100 << 20);
        assert_eq!(r.scalar.get("example.com/gpu"), Some(&1));

        // Sidecar (restartable init container) adds to the sum and to later init steps.
        let mut p = pod("p", &[("cpu", "100m")]);
        let spec = p.spec.as_mut().expect("spec");
        spec.init_containers = Some(vec![
            Container {
                name: "sidecar".into(),
                restart_policy: Some("Always".into()),
                resources: Some(ResourceRequirements {
                    requests: Some(rl(&[("cpu", "50m")])),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Container {
                name: "init".into(),
                resources: Some(ResourceRequirements {
                    requests: Some(rl(&[("cpu", "500m")])),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ]);
        assert_eq!(pod_requests(&p, false).milli_cpu, 550);

        // Non-zero defaults for scoring.
        let p = pod("p", &[]);
        let nz = pod_requests(&p, true);
        assert_eq!(
            (nz.milli_cpu, nz.memory),
            (DEFAULT_MILLI_CPU_REQUEST, DEFAULT_MEMORY_REQUEST)
        );
        assert!(pod_requests(&p, false).is_zero());
    }

    #[test]
    fn node_info_accounting() {
        let mut n = NodeInfo::new(Arc::new(node("n", &[("cpu", "2"), ("pods", "10")], &[])));
        n.add_pod(info(with_host_port(pod("a", &[("cpu", "500m")]), 80)));
        n.add_pod(info(pod("b", &[("cpu", "1")])));
        assert_eq!(n.requested.milli_cpu, 1500);
        assert_eq!(n.used_ports.len(), 1);
        n.remove_pod("uid-a");
        assert_eq!(n.requested.milli_cpu, 1000);
        assert!(n.used_ports.is_empty());
        assert_eq!(n.allocatable.allowed_pods, 10);
    }
}
