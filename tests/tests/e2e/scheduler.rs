//! kumo scheduler end to end: a real apiserver + store, five Node objects kept Ready by the
//! test (with a stand-in kubelet that finishes terminating pods), the scheduler running
//! in-process (`kumo_scheduler::run`), and real kubectl 1.33 creating pods and reading where
//! they landed, their conditions and their events.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use kumo_tests::{ApiServerProc, StoreKind, free_port, http_get};
use serde_json::json;

struct Cluster<'a> {
    api: &'a ApiServerProc,
    dir: &'a Path,
}

impl Cluster<'_> {
    fn kubectl(&self, args: &[&str]) -> (bool, String) {
        let out = self.api.kubectl("1.33", args).expect("run kubectl");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    fn ok(&self, args: &[&str]) -> String {
        let (ok, out) = self.kubectl(args);
        assert!(ok, "kubectl {args:?} failed: {out}");
        out
    }

    fn apply(&self, name: &str, manifest: serde_json::Value) {
        let path = self.dir.join(format!("{name}.json"));
        std::fs::write(&path, manifest.to_string()).expect("write manifest");
        self.ok(&["apply", "-f", &path.display().to_string()]);
    }

    fn jsonpath(&self, kind_name: &str, path: &str) -> String {
        let p = format!("jsonpath={path}");
        let (_, out) = self.kubectl(&["get", kind_name, "-o", &p]);
        out
    }

    fn node_of(&self, pod: &str) -> String {
        self.jsonpath(&format!("pod/{pod}"), "{.spec.nodeName}")
    }

    /// Waits until `pod` is bound; returns its node.
    fn wait_bound(&self, pod: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let n = self.node_of(pod);
            if !n.is_empty() && !n.contains("NotFound") {
                return n;
            }
            assert!(
                Instant::now() < deadline,
                "pod {pod} was not bound in time; describe:\n{}",
                self.kubectl(&["describe", "pod", pod]).1
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until `pod` has condition PodScheduled=False/Unschedulable; returns its message.
    fn wait_unschedulable(&self, pod: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let reason = self.jsonpath(
                &format!("pod/{pod}"),
                "{.status.conditions[?(@.type==\"PodScheduled\")].reason}",
            );
            if reason == "Unschedulable" {
                return self.jsonpath(
                    &format!("pod/{pod}"),
                    "{.status.conditions[?(@.type==\"PodScheduled\")].message}",
                );
            }
            assert!(
                Instant::now() < deadline,
                "pod {pod} never reported Unschedulable (reason {reason:?})"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Deletes pods by label and waits until they are gone (the stand-in kubelet finishes them).
    fn delete_pods(&self, selector: &str) {
        self.ok(&["delete", "pods", "-l", selector, "--wait=false"]);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, out) = self.kubectl(&["get", "pods", "-l", selector, "-o", "name"]);
            if out.trim().is_empty() || out.contains("No resources found") {
                return;
            }
            assert!(Instant::now() < deadline, "pods {selector} not gone: {out}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn pod(
    name: &str,
    labels: serde_json::Value,
    cpu: &str,
    spec_extra: serde_json::Value,
) -> serde_json::Value {
    let mut spec = json!({
        "containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}}}],
    });
    if let (Some(s), Some(extra)) = (spec.as_object_mut(), spec_extra.as_object()) {
        for (k, v) in extra {
            s.insert(k.clone(), v.clone());
        }
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default", "labels": labels}, "spec": spec})
}

fn node_status(cpu: &str) -> serde_json::Value {
    let now = jiff_now();
    json!({"status": {
        "capacity": {"cpu": cpu, "memory": "8Gi", "pods": "110", "ephemeral-storage": "100Gi"},
        "allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110", "ephemeral-storage": "100Gi"},
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status",
                        "lastHeartbeatTime": now, "lastTransitionTime": now}],
    }})
}

fn jiff_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // RFC 3339 from a Unix time without a date library: let kubectl-free code stay small.
    let days = secs / 86400;
    let rem = secs % 86400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil-from-days (Howard Hinnant).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if mo <= 2 { y + 1 } else { y };
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

/// (name, cpu, labels, taints)
type NodeSpec = (
    &'static str,
    &'static str,
    serde_json::Value,
    serde_json::Value,
);

fn nodes() -> Vec<NodeSpec> {
    vec![
        (
            "n1",
            "2",
            json!({"topology.kubernetes.io/zone": "a", "disk": "ssd"}),
            json!([]),
        ),
        (
            "n2",
            "2",
            json!({"topology.kubernetes.io/zone": "a"}),
            json!([]),
        ),
        (
            "n3",
            "2",
            json!({"topology.kubernetes.io/zone": "b"}),
            json!([]),
        ),
        (
            "n4",
            "4",
            json!({"topology.kubernetes.io/zone": "b", "gpu": "true"}),
            json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]),
        ),
        (
            "n5",
            "1",
            json!({"topology.kubernetes.io/zone": "c"}),
            json!([]),
        ),
    ]
}

async fn client_for(kubeconfig: &Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("kube config");
    kube::Client::try_from(cfg).expect("client")
}

/// Creates the nodes and keeps their Ready condition fresh; finishes terminating pods the way
/// a kubelet would (phase Failed, then a zero-grace delete).
async fn fake_nodes_and_kubelet(client: kube::Client) {
    let nodes_api: Api<Node> = Api::all(client.clone());
    for (name, cpu, labels, taints) in nodes() {
        let mut l = labels.clone();
        l["kubernetes.io/hostname"] = json!(name);
        let n: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": l},
            "spec": {"taints": taints},
        }))
        .expect("node");
        nodes_api
            .create(&PostParams::default(), &n)
            .await
            .expect("create node");
        nodes_api
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(node_status(cpu)),
            )
            .await
            .expect("node status");
    }
    let heartbeat = {
        let nodes_api = nodes_api.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                for (name, cpu, _, _) in nodes() {
                    let _ = nodes_api
                        .patch_status(
                            name,
                            &PatchParams::default(),
                            &Patch::Merge(node_status(cpu)),
                        )
                        .await;
                }
            }
        }
    };
    let kubelet = async move {
        let pods: Api<Pod> = Api::all(client.clone());
        let mut stream = watcher(pods, watcher::Config::default())
            .applied_objects()
            .boxed();
        while let Some(Ok(p)) = stream.next().await {
            let bound = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
            if p.metadata.deletion_timestamp.is_none() || !bound {
                continue;
            }
            let ns = p.metadata.namespace.clone().unwrap_or_default();
            let name = p.metadata.name.clone().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
            let _ = api
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {"phase": "Failed"}})),
                )
                .await;
            let _ = api
                .delete(
                    &name,
                    &DeleteParams {
                        grace_period_seconds: Some(0),
                        ..Default::default()
                    },
                )
                .await;
        }
    };
    tokio::join!(heartbeat, kubelet);
}

#[test]
fn scheduler_end_to_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let api = ApiServerProc::start(StoreKind::Kumo, dir.path(), &[]).expect("start apiserver");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = rt.block_on(client_for(&api.kubeconfig));
    let metrics_port = free_port();
    {
        // Nodes first, then the scheduler (it must also cope with nodes arriving later).
        let c = client.clone();
        rt.spawn(fake_nodes_and_kubelet(c));
        let cfg = kumo_scheduler::SchedulerConfig {
            kubeconfig: Some(api.kubeconfig.clone()),
            metrics_bind_address: format!("127.0.0.1:{metrics_port}"),
            ..Default::default()
        };
        rt.spawn(async move {
            if let Err(e) = kumo_scheduler::run(cfg).await {
                panic!("scheduler stopped: {e}");
            }
        });
    }
    let k = Cluster {
        api: &api,
        dir: dir.path(),
    };
    // Wait for the nodes.
    let deadline = Instant::now() + Duration::from_secs(30);
    while k
        .jsonpath("nodes", "{.items[*].metadata.name}")
        .split_whitespace()
        .count()
        < 5
    {
        assert!(Instant::now() < deadline, "nodes were not created");
        std::thread::sleep(Duration::from_millis(200));
    }

    // 1. Resource fit: 3 cpu fits only on n4 (4 cpu), which needs the gpu toleration.
    let tolerate_gpu =
        json!([{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]);
    k.apply(
        "big",
        pod(
            "big",
            json!({"t": "fit"}),
            "3",
            json!({"tolerations": tolerate_gpu}),
        ),
    );
    assert_eq!(k.wait_bound("big"), "n4");
    k.delete_pods("t=fit");

    // 2. Node selector.
    k.apply(
        "ssd",
        pod(
            "ssd",
            json!({"t": "sel"}),
            "100m",
            json!({"nodeSelector": {"disk": "ssd"}}),
        ),
    );
    assert_eq!(k.wait_bound("ssd"), "n1");

    // 3. Required node affinity (Gt on a numeric label is unit-tested; here In on the zone).
    let aff = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["c"]}]}]}}});
    k.apply(
        "zc",
        pod("zc", json!({"t": "sel"}), "100m", json!({"affinity": aff})),
    );
    assert_eq!(k.wait_bound("zc"), "n5");
    k.delete_pods("t=sel");

    // 4. Taints: a pod that tolerates the gpu taint may use n4; one that does not stays
    //    pending with upstream's message and a FailedScheduling event, and is scheduled as
    //    soon as the taint goes (a node update moves it out of the unschedulable pool).
    let gpu_sel = json!({"nodeSelector": {"gpu": "true"}});
    k.apply(
        "tolerant",
        pod(
            "tolerant",
            json!({"t": "taint"}),
            "100m",
            json!({"nodeSelector": {"gpu": "true"}, "tolerations": tolerate_gpu}),
        ),
    );
    assert_eq!(k.wait_bound("tolerant"), "n4");
    k.apply(
        "intolerant",
        pod("intolerant", json!({"t": "taint"}), "100m", gpu_sel),
    );
    let msg = k.wait_unschedulable("intolerant");
    assert_eq!(
        msg,
        "0/5 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 4 node(s) didn't match Pod's node affinity/selector. preemption: 0/5 nodes are available: 5 Preemption is not helpful for scheduling."
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let describe = k.ok(&["describe", "pod", "intolerant"]);
        if describe.contains("FailedScheduling")
            && describe.contains("untolerated taint {dedicated: gpu}")
        {
            assert!(describe.contains("Warning"), "{describe}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no FailedScheduling event in describe:\n{describe}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(k.node_of("intolerant"), "");
    k.ok(&["taint", "nodes", "n4", "dedicated=gpu:NoSchedule-"]);
    assert_eq!(k.wait_bound("intolerant"), "n4");
    k.ok(&["taint", "nodes", "n4", "dedicated=gpu:NoSchedule"]);
    k.delete_pods("t=taint");

    // 5. Topology spread: maxSkew 1 over zones, DoNotSchedule: three pods, three zones.
    let spread = json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"t": "spread"}}}]});
    for i in 0..3 {
        k.apply(
            &format!("s{i}"),
            pod(
                &format!("s{i}"),
                json!({"t": "spread"}),
                "100m",
                spread.clone(),
            ),
        );
    }
    let zones: BTreeSet<String> = (0..3)
        .map(|i| {
            let n = k.wait_bound(&format!("s{i}"));
            k.jsonpath(
                &format!("node/{n}"),
                "{.metadata.labels.topology\\.kubernetes\\.io/zone}",
            )
        })
        .collect();
    assert_eq!(
        zones,
        ["a", "b", "c"].iter().map(|s| s.to_string()).collect()
    );
    k.delete_pods("t=spread");

    // 6. Anti-affinity: one pod per zone, a fourth cannot be placed.
    let anti = json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"t": "anti"}}, "topologyKey": "topology.kubernetes.io/zone"}]}}});
    for i in 0..4 {
        k.apply(
            &format!("a{i}"),
            pod(&format!("a{i}"), json!({"t": "anti"}), "100m", anti.clone()),
        );
    }
    let mut bound = Vec::new();
    let mut pending = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while bound.len() + pending.len() < 4 {
        assert!(Instant::now() < deadline, "anti-affinity pods not settled");
        bound.clear();
        pending.clear();
        for i in 0..4 {
            let name = format!("a{i}");
            let node = k.node_of(&name);
            let reason = k.jsonpath(
                &format!("pod/{name}"),
                "{.status.conditions[?(@.type==\"PodScheduled\")].reason}",
            );
            if !node.is_empty() {
                bound.push(node);
            } else if reason == "Unschedulable" {
                pending.push(name);
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(bound.len(), 3, "bound {bound:?} pending {pending:?}");
    let zones: BTreeSet<String> = bound
        .iter()
        .map(|n| {
            k.jsonpath(
                &format!("node/{n}"),
                "{.metadata.labels.topology\\.kubernetes\\.io/zone}",
            )
        })
        .collect();
    assert_eq!(zones.len(), 3);
    let msg = k.wait_unschedulable(&pending[0]);
    assert!(
        msg.starts_with("0/5 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 4 node(s) didn't match pod anti-affinity rules."),
        "{msg}"
    );
    k.delete_pods("t=anti");

    // 7. Priority and preemption: PriorityClasses resolved by the scheduler, a high-priority
    //    pod evicts the low-priority pod that fills n5 and takes its place.
    k.apply("pc-low", json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "low"}, "value": 10}));
    k.apply("pc-high", json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "high"}, "value": 1000}));
    std::thread::sleep(Duration::from_secs(1));
    let zone_c = json!({"topology.kubernetes.io/zone": "c"});
    k.apply(
        "low",
        pod(
            "low",
            json!({"t": "prio"}),
            "800m",
            json!({"nodeSelector": zone_c, "priorityClassName": "low"}),
        ),
    );
    assert_eq!(k.wait_bound("low"), "n5");
    let low_uid = k.jsonpath("pod/low", "{.metadata.uid}");
    k.apply(
        "high",
        pod(
            "high",
            json!({"t": "prio"}),
            "800m",
            json!({"nodeSelector": zone_c, "priorityClassName": "high"}),
        ),
    );
    assert_eq!(k.wait_bound("high"), "n5");
    let (_, low_now) = k.kubectl(&["get", "pod", "low", "-o", "jsonpath={.metadata.uid}"]);
    assert_ne!(
        low_now, low_uid,
        "the low-priority pod should have been preempted"
    );
    let events = k.ok(&["get", "events", "-o", "jsonpath={.items[*].message}"]);
    assert!(
        events.contains("Preempted by pod") && events.contains("on node n5"),
        "{events}"
    );
    // The Scheduled event follows the binding.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let describe = k.ok(&["describe", "pod", "high"]);
        if describe.contains("Successfully assigned default/high to n5") {
            assert!(describe.contains("Scheduled"), "{describe}");
            break;
        }
        assert!(Instant::now() < deadline, "no Scheduled event:\n{describe}");
        std::thread::sleep(Duration::from_millis(300));
    }

    // Metrics like upstream's.
    let m = http_get(
        &format!("http://127.0.0.1:{metrics_port}/metrics"),
        Duration::from_secs(5),
    )
    .expect("metrics");
    for name in [
        "scheduler_schedule_attempts_total{profile=\"default-scheduler\",result=\"scheduled\"}",
        "scheduler_schedule_attempts_total{profile=\"default-scheduler\",result=\"unschedulable\"}",
        "scheduler_scheduling_attempt_duration_seconds_bucket",
        "scheduler_pending_pods{queue=\"unschedulable\"}",
        "scheduler_preemption_attempts_total",
    ] {
        assert!(m.body.contains(name), "missing {name} in:\n{}", m.body);
    }
    // Leader election held the upstream Lease.
    let (ok, lease) = k.kubectl(&[
        "get",
        "lease",
        "kube-scheduler",
        "-n",
        "kube-system",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    assert!(ok && !lease.is_empty(), "lease: {lease}");
    drop(rt);
}
