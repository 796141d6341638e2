//! The Node object and its heartbeats: registration (create, or reconcile the labels and
//! taints this kubelet owns), `nodes/status` posted when something changed and at least every
//! five minutes, and the `kube-node-lease/<node>` Lease renewed every 10 s — the heartbeat
//! the node lifecycle controller reads, as with upstream's NodeLease.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    ContainerImage, DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints,
    NodeSpec, NodeStatus, NodeSystemInfo, Taint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use tracing::{debug, info, warn};

use crate::context::{Allocatable, NodeCtx};
use crate::machine;
use crate::quantity;

/// Upstream's `nodeStatusReportFrequency` with leases: post status at least this often.
const STATUS_REPORT_FREQUENCY: Duration = Duration::from_secs(300);
/// The hard eviction threshold `memory.available<100Mi`, subtracted from allocatable.
const EVICTION_MEMORY: u64 = 100 * 1024 * 1024;

/// What this kubelet registers for its node.
#[derive(Debug, Clone)]
pub struct NodeDesc {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub capacity: BTreeMap<String, Quantity>,
    pub allocatable: BTreeMap<String, Quantity>,
    pub alloc: Allocatable,
    pub addresses: Vec<NodeAddress>,
    pub port: u16,
    pub node_info: NodeSystemInfo,
}

/// Inputs of [`describe`].
#[derive(Debug, Clone)]
pub struct DescribeInput<'a> {
    pub name: &'a str,
    pub node_ip: &'a str,
    pub hostname: &'a str,
    pub port: u16,
    pub max_pods: u32,
    pub extra_labels: &'a BTreeMap<String, String>,
    pub taints: &'a [Taint],
    pub system_reserved: &'a BTreeMap<String, String>,
    pub machine: &'a machine::MachineInfo,
    pub runtime_version: &'a str,
    /// `Some((cpu millicores, memory bytes))`: fake capacity of a hollow node.
    pub sim_capacity: Option<(u64, u64)>,
    pub root_dir: &'a std::path::Path,
}

/// Builds the node description from the machine (or the hollow node's fake capacity).
pub fn describe(i: &DescribeInput<'_>) -> NodeDesc {
    let (cpu_millis, memory) = i
        .sim_capacity
        .unwrap_or((i.machine.cpus * 1000, i.machine.memory_bytes));
    let ephemeral = if i.sim_capacity.is_some() {
        1 << 40
    } else {
        machine::fs_stats(i.root_dir).map_or(0, |(cap, _)| cap)
    };
    let reserved = |k: &str, cpu: bool| -> u64 {
        i.system_reserved
            .get(k)
            .and_then(|v| quantity::parse(v))
            .map_or(0, |v| quantity::ceil(if cpu { v * 1000.0 } else { v }))
    };
    let alloc = Allocatable {
        cpu_millis: cpu_millis.saturating_sub(reserved("cpu", true)),
        memory_bytes: memory
            .saturating_sub(reserved("memory", false))
            .saturating_sub(EVICTION_MEMORY),
        pods: u64::from(i.max_pods),
        ephemeral_bytes: ephemeral.saturating_sub(reserved("ephemeral-storage", false)),
    };
    let mut capacity = BTreeMap::new();
    capacity.insert("cpu".to_string(), quantity::format_cpu(cpu_millis));
    capacity.insert("memory".to_string(), quantity::format_bytes(memory));
    capacity.insert("pods".to_string(), Quantity(i.max_pods.to_string()));
    capacity.insert(
        "ephemeral-storage".to_string(),
        quantity::format_bytes(ephemeral),
    );
    let mut allocatable = BTreeMap::new();
    allocatable.insert("cpu".to_string(), quantity::format_cpu(alloc.cpu_millis));
    allocatable.insert(
        "memory".to_string(),
        quantity::format_bytes(alloc.memory_bytes),
    );
    allocatable.insert("pods".to_string(), Quantity(i.max_pods.to_string()));
    allocatable.insert(
        "ephemeral-storage".to_string(),
        Quantity(alloc.ephemeral_bytes.to_string()),
    );
    let mut labels = BTreeMap::new();
    labels.insert("kubernetes.io/hostname".to_string(), i.name.to_string());
    labels.insert("kubernetes.io/os".to_string(), "linux".to_string());
    labels.insert(
        "kubernetes.io/arch".to_string(),
        i.machine.architecture.clone(),
    );
    labels.insert("beta.kubernetes.io/os".to_string(), "linux".to_string());
    labels.insert(
        "beta.kubernetes.io/arch".to_string(),
        i.machine.architecture.clone(),
    );
    labels.extend(i.extra_labels.clone());
    NodeDesc {
        name: i.name.to_string(),
        labels,
        taints: i.taints.to_vec(),
        capacity,
        allocatable,
        alloc,
        addresses: vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: i.node_ip.to_string(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: i.hostname.to_string(),
            },
        ],
        port: i.port,
        node_info: NodeSystemInfo {
            architecture: i.machine.architecture.clone(),
            boot_id: i.machine.boot_id.clone(),
            container_runtime_version: i.runtime_version.to_string(),
            kernel_version: i.machine.kernel_version.clone(),
            kube_proxy_version: String::new(),
            kubelet_version: crate::KUBELET_VERSION.to_string(),
            machine_id: i.machine.machine_id.clone(),
            operating_system: "linux".into(),
            os_image: i.machine.os_image.clone(),
            system_uuid: i.machine.system_uuid.clone(),
            swap: None,
        },
    }
}

/// Creates the Node, or reconciles the labels and taints this kubelet owns on an existing one.
/// Returns the Node's uid (the Lease's owner).
pub async fn register(client: &kube::Client, desc: &NodeDesc) -> anyhow::Result<String> {
    let api: Api<Node> = Api::all(client.clone());
    let node = Node {
        metadata: ObjectMeta {
            name: Some(desc.name.clone()),
            labels: Some(desc.labels.clone()),
            annotations: Some(BTreeMap::from([(
                "node.alpha.kubernetes.io/ttl".to_string(),
                "0".to_string(),
            )])),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            taints: (!desc.taints.is_empty()).then(|| desc.taints.clone()),
            ..Default::default()
        }),
        status: None,
    };
    match api.create(&PostParams::default(), &node).await {
        Ok(n) => {
            info!(node = %desc.name, "registered node");
            Ok(n.metadata.uid.unwrap_or_default())
        }
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let existing = api.get(&desc.name).await?;
            let mut taints = existing
                .spec
                .as_ref()
                .and_then(|s| s.taints.clone())
                .unwrap_or_default();
            let mut taints_changed = false;
            for t in &desc.taints {
                if !taints
                    .iter()
                    .any(|x| x.key == t.key && x.effect == t.effect)
                {
                    taints.push(t.clone());
                    taints_changed = true;
                }
            }
            let labels_ok = desc
                .labels
                .iter()
                .all(|(k, v)| existing.metadata.labels.as_ref().and_then(|l| l.get(k)) == Some(v));
            if !labels_ok || taints_changed {
                let mut patch = serde_json::json!({"metadata": {"labels": desc.labels}});
                if taints_changed {
                    patch["spec"] = serde_json::json!({ "taints": taints });
                }
                api.patch(&desc.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
            }
            info!(node = %desc.name, "node already registered; reconciled labels and taints");
            Ok(existing.metadata.uid.unwrap_or_default())
        }
        Err(e) => Err(e.into()),
    }
}

fn condition(
    prev: &[NodeCondition],
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    now: jiff::Timestamp,
) -> NodeCondition {
    let status = if status { "True" } else { "False" };
    let transition = prev
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    NodeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(Time(now)),
        last_transition_time: Some(transition),
    }
}

/// The pressure and readiness signals of one status post.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Signals {
    memory_pressure: bool,
    disk_pressure: bool,
    pid_pressure: bool,
    ready: Result<(), String>,
    images: Vec<(Vec<String>, u64)>,
}

async fn signals(ctx: &NodeCtx) -> Signals {
    let rt = &ctx.shared.runtime;
    let ready = rt.ready().await.map_err(|e| match e {
        kumo_runtime::RuntimeError::Unavailable(m) => m,
        e => format!("container runtime is down: {e}"),
    });
    let mut images: Vec<(Vec<String>, u64)> = rt
        .list_images()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|i| (i.names, i.size_bytes))
        .collect();
    images.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    images.truncate(50);
    if ctx.shared.sim {
        return Signals {
            memory_pressure: false,
            disk_pressure: false,
            pid_pressure: false,
            ready,
            images,
        };
    }
    let memory_pressure = machine::meminfo("MemAvailable").is_some_and(|a| a < EVICTION_MEMORY);
    let disk_pressure = machine::fs_stats(&ctx.root_dir)
        .is_some_and(|(cap, avail)| cap > 0 && avail.saturating_mul(10) < cap);
    let pid_pressure =
        machine::pid_stats().is_some_and(|(used, max)| used.saturating_mul(100) > max * 95);
    Signals {
        memory_pressure,
        disk_pressure,
        pid_pressure,
        ready,
        images,
    }
}

fn status_of(desc: &NodeDesc, s: &Signals, prev: &[NodeCondition]) -> NodeStatus {
    let now = jiff::Timestamp::now();
    let (ready_reason, ready_msg) = match &s.ready {
        Ok(()) => (
            "KubeletReady",
            "kubelet is posting ready status".to_string(),
        ),
        Err(e) => ("KubeletNotReady", e.clone()),
    };
    let conditions = vec![
        if s.memory_pressure {
            condition(
                prev,
                "MemoryPressure",
                true,
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available",
                now,
            )
        } else {
            condition(
                prev,
                "MemoryPressure",
                false,
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
                now,
            )
        },
        if s.disk_pressure {
            condition(
                prev,
                "DiskPressure",
                true,
                "KubeletHasDiskPressure",
                "kubelet has disk pressure",
                now,
            )
        } else {
            condition(
                prev,
                "DiskPressure",
                false,
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
                now,
            )
        },
        if s.pid_pressure {
            condition(
                prev,
                "PIDPressure",
                true,
                "KubeletHasInsufficientPID",
                "kubelet has insufficient PID available",
                now,
            )
        } else {
            condition(
                prev,
                "PIDPressure",
                false,
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
                now,
            )
        },
        condition(
            prev,
            "Ready",
            s.ready.is_ok(),
            ready_reason,
            &ready_msg,
            now,
        ),
    ];
    NodeStatus {
        capacity: Some(desc.capacity.clone()),
        allocatable: Some(desc.allocatable.clone()),
        addresses: Some(desc.addresses.clone()),
        conditions: Some(conditions),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(desc.port),
            }),
        }),
        node_info: Some(desc.node_info.clone()),
        images: Some(
            s.images
                .iter()
                .map(|(names, size)| ContainerImage {
                    names: Some(names.clone()),
                    size_bytes: Some(*size as i64),
                })
                .collect(),
        ),
        ..Default::default()
    }
}

/// Posts `nodes/status` now and then every `frequency` when a signal changed, at least every
/// five minutes. Runs until the task is dropped.
pub async fn status_loop(ctx: Arc<NodeCtx>, desc: NodeDesc, frequency: Duration, offset: Duration) {
    let api: Api<Node> = Api::all(ctx.shared.client.clone());
    let mut last: Option<(Signals, Instant)> = None;
    let mut prev_conditions: Vec<NodeCondition> = Vec::new();
    tokio::time::sleep(offset).await;
    loop {
        let s = signals(&ctx).await;
        let due = match &last {
            None => true,
            Some((prev, at)) => *prev != s || at.elapsed() >= STATUS_REPORT_FREQUENCY,
        };
        if due {
            let status = status_of(&desc, &s, &prev_conditions);
            let conditions = status.conditions.clone().unwrap_or_default();
            let patch = serde_json::json!({ "status": status });
            match api
                .patch_status(&desc.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    debug!(node = %desc.name, "posted node status");
                    prev_conditions = conditions;
                    last = Some((s, Instant::now()));
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    warn!(node = %desc.name, "node object is gone; registering it again");
                    if let Err(e) = register(&ctx.shared.client, &desc).await {
                        warn!(node = %desc.name, error = %e, "re-registration failed");
                    }
                    continue;
                }
                Err(e) => warn!(node = %desc.name, error = %e, "could not post node status"),
            }
        }
        tokio::time::sleep(frequency).await;
    }
}

/// Keeps `kube-node-lease/<node>` renewed every `renew`. Runs until the task is dropped.
pub async fn lease_loop(
    client: kube::Client,
    node: String,
    node_uid: String,
    renew: Duration,
    duration_seconds: i32,
    offset: Duration,
) {
    let api: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    let mut cached: Option<Lease> = None;
    tokio::time::sleep(offset).await;
    loop {
        let now = MicroTime(jiff::Timestamp::now());
        let result = match cached.take() {
            Some(mut lease) => {
                let spec = lease.spec.get_or_insert_with(Default::default);
                spec.renew_time = Some(now);
                spec.holder_identity = Some(node.clone());
                spec.lease_duration_seconds = Some(duration_seconds);
                api.replace(&node, &PostParams::default(), &lease).await
            }
            None => match api.get_opt(&node).await {
                Ok(Some(mut lease)) => {
                    let spec = lease.spec.get_or_insert_with(Default::default);
                    spec.renew_time = Some(now);
                    spec.holder_identity = Some(node.clone());
                    spec.lease_duration_seconds = Some(duration_seconds);
                    api.replace(&node, &PostParams::default(), &lease).await
                }
                Ok(None) => {
                    // The owner is the Node as it is now (it may have been re-registered
                    // with a new uid, which is also why the old Lease is gone).
                    let nodes: Api<Node> = Api::all(api.clone().into_client());
                    let node_uid = match nodes.get_opt(&node).await {
                        Ok(Some(n)) => n.metadata.uid.unwrap_or_default(),
                        _ => node_uid.clone(),
                    };
                    let lease = Lease {
                        metadata: ObjectMeta {
                            name: Some(node.clone()),
                            namespace: Some("kube-node-lease".into()),
                            owner_references: (!node_uid.is_empty()).then(|| {
                                vec![OwnerReference {
                                    api_version: "v1".into(),
                                    kind: "Node".into(),
                                    name: node.clone(),
                                    uid: node_uid.clone(),
                                    ..Default::default()
                                }]
                            }),
                            ..Default::default()
                        },
                        spec: Some(LeaseSpec {
                            holder_identity: Some(node.clone()),
                            lease_duration_seconds: Some(duration_seconds),
                            renew_time: Some(now),
                            ..Default::default()
                        }),
                    };
                    api.create(&PostParams::default(), &lease).await
                }
                Err(e) => Err(e),
            },
        };
        let wait = match result {
            Ok(lease) => {
                cached = Some(lease);
                renew
            }
            Err(e) => {
                debug!(node = %node, error = %e, "lease renewal failed; retrying");
                // upstream retries a failed renewal quickly (200 ms doubling up to 7 s)
                Duration::from_millis(500)
            }
        };
        tokio::time::sleep(wait).await;
    }
}
