//! Rows checked against upstream's printers_test.go expectations (TestPrintPod and friends)
//! and against what `kubectl get` shows from a real cluster.

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use super::*;
use crate::builtin;

fn def(group: &str, kind: &str) -> Arc<ResourceDef> {
    builtin()
        .into_iter()
        .find(|d| d.group == group && d.kind == kind)
        .expect("builtin resource")
}

fn now() -> Timestamp {
    "2024-05-01T12:00:00Z".parse().expect("now")
}

fn ago(secs: i64) -> String {
    (now() - SignedDuration::from_secs(secs)).to_string()
}

fn cells(group: &str, kind: &str, obj: &Value) -> Vec<Value> {
    row(&def(group, kind), obj, now()).cells
}

fn pod(name: &str, containers: usize, init: usize, status: Value) -> Value {
    let c: Vec<Value> = (0..containers)
        .map(|i| json!({"name": format!("c{i}")}))
        .collect();
    let ic: Vec<Value> = (0..init)
        .map(|i| json!({"name": format!("i{i}")}))
        .collect();
    json!({"metadata": {"name": name}, "spec": {"containers": c, "initContainers": ic}, "status": status})
}

/// Upstream TestPrintPod (first five cells, no creationTimestamp → `<unknown>`).
#[test]
fn pod_rows_match_upstream_print_pod_tests() {
    let running = json!({"running": {}});
    let cases = vec![
        (
            pod(
                "test1",
                2,
                0,
                json!({"phase": "podPhase", "containerStatuses": [
            {"ready": true, "restartCount": 3, "state": running},
            {"restartCount": 3}]}),
            ),
            json!(["test1", "1/2", "podPhase", "6", "<unknown>"]),
        ),
        (
            pod(
                "test2",
                2,
                0,
                json!({"phase": "podPhase", "containerStatuses": [
            {"ready": true, "restartCount": 3, "state": running},
            {"restartCount": 3, "state": {"waiting": {"reason": "ContainerWaitingReason"}}}]}),
            ),
            json!(["test2", "1/2", "ContainerWaitingReason", "6", "<unknown>"]),
        ),
        (
            pod(
                "test3",
                2,
                0,
                json!({"phase": "podPhase", "containerStatuses": [
            {"restartCount": 3, "state": {"waiting": {"reason": "ContainerWaitingReason"}}},
            {"restartCount": 3, "state": {"terminated": {"reason": "ContainerTerminatedReason"}}}]}),
            ),
            json!(["test3", "0/2", "ContainerWaitingReason", "6", "<unknown>"]),
        ),
        (
            pod(
                "test4",
                2,
                0,
                json!({"phase": "podPhase", "containerStatuses": [
            {"ready": true, "restartCount": 3, "state": running},
            {"ready": true, "restartCount": 3}]}),
            ),
            json!(["test4", "1/2", "podPhase", "6", "<unknown>"]),
        ),
        (
            pod(
                "test5",
                2,
                0,
                json!({"reason": "podReason", "phase": "podPhase", "containerStatuses": [
            {"ready": true, "restartCount": 3, "state": running},
            {"ready": true, "restartCount": 3}]}),
            ),
            json!(["test5", "1/2", "podReason", "6", "<unknown>"]),
        ),
        (
            pod(
                "test6",
                2,
                0,
                json!({"phase": "Running", "containerStatuses": [
            {"ready": true, "restartCount": 3, "state": {"terminated": {"reason": "Completed", "exitCode": 0}}},
            {"ready": true, "restartCount": 3, "state": running}]}),
            ),
            json!(["test6", "1/2", "NotReady", "6", "<unknown>"]),
        ),
        (
            pod(
                "test6",
                2,
                0,
                json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}], "containerStatuses": [
            {"ready": true, "restartCount": 3, "state": {"terminated": {"reason": "Completed", "exitCode": 0}}},
            {"ready": true, "restartCount": 3, "state": running}]}),
            ),
            json!(["test6", "1/2", "Running", "6", "<unknown>"]),
        ),
        (
            pod(
                "test7",
                1,
                1,
                json!({"phase": "podPhase",
            "initContainerStatuses": [{"name": "i0", "restartCount": 3, "state": running, "lastState": {"terminated": {"finishedAt": ago(10)}}}],
            "containerStatuses": [{"restartCount": 0, "state": {"waiting": {}}}]}),
            ),
            json!(["test7", "0/1", "Init:0/1", "3 (10s ago)", "<unknown>"]),
        ),
        (
            pod(
                "test8",
                1,
                2,
                json!({"phase": "podPhase",
            "initContainerStatuses": [
                {"name": "i0", "restartCount": 3, "state": running, "lastState": {"terminated": {"finishedAt": ago(10)}}},
                {"name": "i1", "state": {"waiting": {}}}],
            "containerStatuses": [{"state": {"waiting": {}}}]}),
            ),
            json!(["test8", "0/1", "Init:0/2", "3 (10s ago)", "<unknown>"]),
        ),
        (
            pod(
                "test9",
                1,
                2,
                json!({"phase": "podPhase",
            "initContainerStatuses": [
                {"name": "i0", "state": {"terminated": {}}},
                {"name": "i1", "restartCount": 3, "state": running, "lastState": {"terminated": {"finishedAt": ago(10)}}}],
            "containerStatuses": [{"state": {"waiting": {}}}]}),
            ),
            json!(["test9", "0/1", "Init:1/2", "3 (10s ago)", "<unknown>"]),
        ),
        (
            pod(
                "test10",
                1,
                2,
                json!({"phase": "podPhase",
            "initContainerStatuses": [
                {"name": "i0", "restartCount": 2, "state": {"terminated": {}}, "lastState": {"terminated": {"finishedAt": ago(120)}}},
                {"name": "i1", "restartCount": 3, "state": running, "lastState": {"terminated": {"finishedAt": ago(10)}}}],
            "containerStatuses": [{"state": {"waiting": {}}}]}),
            ),
            json!(["test10", "0/1", "Init:1/2", "5 (10s ago)", "<unknown>"]),
        ),
        (
            pod(
                "test11",
                1,
                1,
                json!({"phase": "Running",
            "initContainerStatuses": [{"name": "i0", "restartCount": 2, "state": {"terminated": {}}, "lastState": {"terminated": {"finishedAt": ago(120)}}}],
            "containerStatuses": [{"restartCount": 4, "state": running, "lastState": {"terminated": {"finishedAt": ago(20)}}}]}),
            ),
            json!(["test11", "0/1", "Running", "4 (20s ago)", "<unknown>"]),
        ),
        (
            pod(
                "test12",
                1,
                0,
                json!({"phase": "Running", "containerStatuses": [
            {"ready": true, "restartCount": 3, "state": running, "lastState": {"terminated": {"finishedAt": ago(5 * 86400)}}}]}),
            ),
            json!(["test12", "1/1", "Running", "3 (5d ago)", "<unknown>"]),
        ),
        (
            pod(
                "test13",
                2,
                0,
                json!({"phase": "Running", "containerStatuses": [
            {"ready": true, "restartCount": 0, "state": running},
            {"ready": true, "restartCount": 3, "state": running, "lastState": {"terminated": {"finishedAt": ago(10 * 86400)}}}]}),
            ),
            json!(["test13", "2/2", "Running", "3 (10d ago)", "<unknown>"]),
        ),
        (
            pod(
                "test14",
                2,
                0,
                json!({"phase": "Running", "containerStatuses": [
            {"ready": true, "restartCount": 6, "state": running, "lastState": {"terminated": {"finishedAt": ago(5 * 86400)}}},
            {"ready": true, "restartCount": 3, "state": running, "lastState": {"terminated": {"finishedAt": ago(20 * 86400)}}}]}),
            ),
            json!(["test14", "2/2", "Running", "9 (5d ago)", "<unknown>"]),
        ),
        (
            pod(
                "test15",
                2,
                0,
                json!({"phase": "podPhase", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}),
            ),
            json!(["test15", "0/2", "SchedulingGated", "0", "<unknown>"]),
        ),
        (
            pod(
                "test16",
                1,
                0,
                json!({"phase": "Succeeded", "containerStatuses": [
            {"restartCount": 0, "state": {"terminated": {"reason": "Completed", "exitCode": 0}}}]}),
            ),
            json!(["test16", "0/1", "Completed", "0", "<unknown>"]),
        ),
        (
            pod(
                "test17",
                1,
                0,
                json!({"phase": "Failed", "containerStatuses": [
            {"restartCount": 0, "state": {"terminated": {"reason": "Error", "exitCode": 1}}}]}),
            ),
            json!(["test17", "0/1", "Error", "0", "<unknown>"]),
        ),
    ];
    for (p, want) in cases {
        let got = cells("", "Pod", &p);
        assert_eq!(
            Value::Array(got[..5].to_vec()),
            want,
            "{}",
            p["metadata"]["name"]
        );
    }
}

#[test]
fn pod_status_edge_cases() {
    // Deleting a running pod: Terminating; a succeeded one stays Completed with its condition.
    let mut p = pod(
        "del",
        1,
        0,
        json!({"phase": "Running", "containerStatuses": [{"ready": true, "state": {"running": {}}}]}),
    );
    p["metadata"]["deletionTimestamp"] = json!(ago(5));
    assert_eq!(cells("", "Pod", &p)[2], "Terminating");
    let mut done = pod(
        "done",
        1,
        0,
        json!({"phase": "Succeeded", "containerStatuses": [{"state": {"terminated": {"reason": "Completed", "exitCode": 0}}}]}),
    );
    done["metadata"]["deletionTimestamp"] = json!(ago(5));
    let r = row(&def("", "Pod"), &done, now());
    assert_eq!(r.cells[2], "Completed");
    assert_eq!(
        r.conditions,
        vec![
            json!({"type": "Completed", "status": "True", "reason": "Succeeded", "message": "The pod has completed successfully."})
        ]
    );
    // Node lost.
    let mut lost = pod(
        "lost",
        1,
        0,
        json!({"phase": "Running", "reason": "NodeLost"}),
    );
    lost["metadata"]["deletionTimestamp"] = json!(ago(5));
    assert_eq!(cells("", "Pod", &lost)[2], "Unknown");
    // Pending pod waiting for its image, ContainerCreating, CrashLoopBackOff.
    for reason in ["ContainerCreating", "CrashLoopBackOff", "ImagePullBackOff"] {
        let p = pod(
            "w",
            1,
            0,
            json!({"phase": "Pending", "containerStatuses": [{"state": {"waiting": {"reason": reason}}}]}),
        );
        assert_eq!(cells("", "Pod", &p)[2], reason);
    }
    // Unscheduled pod: just the phase.
    assert_eq!(
        cells("", "Pod", &pod("p", 1, 0, json!({"phase": "Pending"})))[2],
        "Pending"
    );
    // Failed init container.
    let p = pod(
        "f",
        1,
        1,
        json!({"phase": "Pending", "initContainerStatuses": [{"name": "i0", "state": {"terminated": {"exitCode": 2}}}]}),
    );
    assert_eq!(cells("", "Pod", &p)[2], "Init:ExitCode:2");
    let p = pod(
        "f",
        1,
        1,
        json!({"phase": "Pending", "initContainerStatuses": [{"name": "i0", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}),
    );
    assert_eq!(cells("", "Pod", &p)[2], "Init:CrashLoopBackOff");
    // Sidecar (restartable init container) counts towards READY.
    let mut sc = pod(
        "sc",
        1,
        1,
        json!({"phase": "Running", "conditions": [{"type": "Initialized", "status": "True"}],
        "initContainerStatuses": [{"name": "i0", "started": true, "ready": true, "state": {"running": {}}}],
        "containerStatuses": [{"ready": true, "state": {"running": {}}}]}),
    );
    sc["spec"]["initContainers"][0]["restartPolicy"] = json!("Always");
    assert_eq!(cells("", "Pod", &sc)[1], "2/2");
}

/// `kubectl get pod -o wide` of a running pod on a real cluster.
#[test]
fn running_pod_wide_row() {
    let p = json!({
        "metadata": {"name": "web-7d9c5b8f6d-x2x4k", "creationTimestamp": ago(3 * 60 + 2)},
        "spec": {"nodeName": "node-1", "containers": [{"name": "nginx", "image": "nginx:1.25"}]},
        "status": {"phase": "Running", "podIP": "10.244.0.5", "podIPs": [{"ip": "10.244.0.5"}],
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "nginx", "ready": true, "restartCount": 0, "state": {"running": {"startedAt": ago(170)}}}]}
    });
    let t = table_for(&def("", "Pod"), &[p], now(), IncludeObject::Metadata);
    let names: Vec<&str> = t["columnDefinitions"]
        .as_array()
        .expect("cols")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "Name",
            "Ready",
            "Status",
            "Restarts",
            "Age",
            "IP",
            "Node",
            "Nominated Node",
            "Readiness Gates"
        ]
    );
    let prio: Vec<i64> = t["columnDefinitions"]
        .as_array()
        .expect("cols")
        .iter()
        .filter_map(|c| c["priority"].as_i64())
        .collect();
    assert_eq!(prio, [0, 0, 0, 0, 0, 1, 1, 1, 1]);
    assert_eq!(t["columnDefinitions"][0]["format"], "name");
    assert!(
        t["columnDefinitions"][0]["description"]
            .as_str()
            .expect("d")
            .starts_with("Name must be unique")
    );
    assert_eq!(
        t["rows"][0]["cells"],
        json!([
            "web-7d9c5b8f6d-x2x4k",
            "1/1",
            "Running",
            "0",
            "3m2s",
            "10.244.0.5",
            "node-1",
            "<none>",
            "<none>"
        ])
    );
    assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(t["rows"][0]["object"]["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(
        t["rows"][0]["object"]["metadata"]["name"],
        "web-7d9c5b8f6d-x2x4k"
    );
    assert_eq!(t["kind"], "Table");
    assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
}

#[test]
fn include_object_variants() {
    let cm = json!({"metadata": {"name": "c"}, "data": {"a": "1"}});
    let d = def("", "ConfigMap");
    let none = table_for(&d, std::slice::from_ref(&cm), now(), IncludeObject::None);
    assert_eq!(none["rows"][0]["object"], Value::Null);
    let full = table_for(&d, std::slice::from_ref(&cm), now(), IncludeObject::Object);
    assert_eq!(full["rows"][0]["object"], cm);
    assert_eq!(IncludeObject::parse(None), Ok(IncludeObject::Metadata));
    assert_eq!(
        IncludeObject::parse(Some("Object")),
        Ok(IncludeObject::Object)
    );
    assert!(IncludeObject::parse(Some("bogus")).is_err());
}

/// `kubectl get deploy -o wide` of a deployment with 2/3 ready.
#[test]
fn deployment_row() {
    let d = json!({
        "metadata": {"name": "web", "creationTimestamp": ago(2 * 86400 + 3 * 3600)},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                {"name": "nginx", "image": "nginx:1.25"}, {"name": "side", "image": "busybox"}]}}},
        "status": {"replicas": 3, "readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}
    });
    assert_eq!(
        cells("apps", "Deployment", &d),
        vec![
            json!("web"),
            json!("2/3"),
            json!(3),
            json!(2),
            json!("2d3h"),
            json!("nginx,side"),
            json!("nginx:1.25,busybox"),
            json!("app=web")
        ]
    );
    let names: Vec<String> = columns(&def("apps", "Deployment"))
        .iter()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(
        names,
        [
            "Name",
            "Ready",
            "Up-to-date",
            "Available",
            "Age",
            "Containers",
            "Images",
            "Selector"
        ]
    );
    // A fresh deployment without status.
    let fresh = json!({"metadata": {"name": "n"}, "spec": {"replicas": 1}});
    assert_eq!(cells("apps", "Deployment", &fresh)[1], "0/1");
}

#[test]
fn workload_rows() {
    let rs = json!({"metadata": {"name": "web-abc", "creationTimestamp": ago(30)}, "spec": {"replicas": 2,
        "selector": {"matchLabels": {"app": "web", "pod-template-hash": "abc"}},
        "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}, "status": {"replicas": 2, "readyReplicas": 1}});
    assert_eq!(
        cells("apps", "ReplicaSet", &rs),
        vec![
            json!("web-abc"),
            json!(2),
            json!(2),
            json!(1),
            json!("30s"),
            json!("c"),
            json!("i"),
            json!("app=web,pod-template-hash=abc")
        ]
    );
    let sts = json!({"metadata": {"name": "db", "creationTimestamp": ago(600)}, "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "pg", "image": "postgres"}]}}}, "status": {"readyReplicas": 3}});
    assert_eq!(
        cells("apps", "StatefulSet", &sts),
        vec![
            json!("db"),
            json!("3/3"),
            json!("10m"),
            json!("pg"),
            json!("postgres")
        ]
    );
    let ds = json!({"metadata": {"name": "agent", "creationTimestamp": ago(60)}, "spec": {"selector": {"matchLabels": {"app": "a"}}, "template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"}, "containers": [{"name": "a", "image": "a:1"}]}}},
        "status": {"desiredNumberScheduled": 2, "currentNumberScheduled": 2, "numberReady": 1, "updatedNumberScheduled": 2, "numberAvailable": 1}});
    assert_eq!(
        cells("apps", "DaemonSet", &ds),
        vec![
            json!("agent"),
            json!(2),
            json!(2),
            json!(1),
            json!(2),
            json!(1),
            json!("kubernetes.io/os=linux"),
            json!("60s"),
            json!("a"),
            json!("a:1"),
            json!("app=a")
        ]
    );
    let job = json!({"metadata": {"name": "pi", "creationTimestamp": ago(300)}, "spec": {"completions": 1, "parallelism": 1,
        "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u"}},
        "template": {"spec": {"containers": [{"name": "pi", "image": "perl"}]}}},
        "status": {"succeeded": 1, "startTime": ago(300), "completionTime": ago(260), "conditions": [{"type": "Complete", "status": "True"}]}});
    assert_eq!(
        cells("batch", "Job", &job),
        vec![
            json!("pi"),
            json!("Complete"),
            json!("1/1"),
            json!("40s"),
            json!("5m"),
            json!("pi"),
            json!("perl"),
            json!("batch.kubernetes.io/controller-uid=u")
        ]
    );
    let running = json!({"metadata": {"name": "j"}, "spec": {"parallelism": 3}, "status": {"startTime": ago(20)}});
    assert_eq!(
        cells("batch", "Job", &running)[1..4],
        [json!("Running"), json!("0/1 of 3"), json!("20s")]
    );
    let cj = json!({"metadata": {"name": "hello", "creationTimestamp": ago(7200)}, "spec": {"schedule": "*/1 * * * *", "suspend": false,
        "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "h", "image": "busybox"}]}}}}},
        "status": {"active": [{"name": "hello-1"}], "lastScheduleTime": ago(45)}});
    assert_eq!(
        cells("batch", "CronJob", &cj),
        vec![
            json!("hello"),
            json!("*/1 * * * *"),
            json!("<none>"),
            json!("False"),
            json!(1),
            json!("45s"),
            json!("120m"),
            json!("h"),
            json!("busybox"),
            json!("<none>")
        ]
    );
}

#[test]
fn service_rows() {
    let svc = json!({"metadata": {"name": "kubernetes", "creationTimestamp": ago(86400 * 3)},
        "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"], "ports": [{"port": 443, "protocol": "TCP", "targetPort": 6443}]}});
    assert_eq!(
        cells("", "Service", &svc),
        vec![
            json!("kubernetes"),
            json!("ClusterIP"),
            json!("10.96.0.1"),
            json!("<none>"),
            json!("443/TCP"),
            json!("3d"),
            json!("<none>")
        ]
    );
    let np = json!({"metadata": {"name": "np"}, "spec": {"type": "NodePort", "clusterIPs": ["10.96.3.4"], "selector": {"app": "web"},
        "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}});
    assert_eq!(
        cells("", "Service", &np)[2..5],
        [
            json!("10.96.3.4"),
            json!("<none>"),
            json!("80:30080/TCP,53/UDP")
        ]
    );
    assert_eq!(cells("", "Service", &np)[6], "app=web");
    let lb = json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "ports": []}});
    assert_eq!(
        cells("", "Service", &lb)[2..5],
        [json!("<none>"), json!("<pending>"), json!("<none>")]
    );
    let lb2 = json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer"}, "status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}, {"hostname": "a.example"}]}}});
    assert_eq!(cells("", "Service", &lb2)[3], "1.2.3.4,a.example");
    let ext = json!({"metadata": {"name": "e"}, "spec": {"type": "ExternalName", "externalName": "example.com"}});
    assert_eq!(cells("", "Service", &ext)[3], "example.com");
}

#[test]
fn node_rows() {
    let n = json!({"metadata": {"name": "node-1", "creationTimestamp": ago(3600 * 5 + 60 * 7), "labels": {"node-role.kubernetes.io/control-plane": "", "kubernetes.io/role": "worker"}},
        "spec": {"unschedulable": true},
        "status": {"conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
            "addresses": [{"type": "InternalIP", "address": "192.168.1.10"}, {"type": "Hostname", "address": "node-1"}],
            "nodeInfo": {"kubeletVersion": "v1.33.1", "osImage": "Debian GNU/Linux 12 (bookworm)", "kernelVersion": "6.1.0", "containerRuntimeVersion": "containerd://1.6.20"}}});
    assert_eq!(
        cells("", "Node", &n),
        vec![
            json!("node-1"),
            json!("Ready,SchedulingDisabled"),
            json!("control-plane,worker"),
            json!("5h7m"),
            json!("v1.33.1"),
            json!("192.168.1.10"),
            json!("<none>"),
            json!("Debian GNU/Linux 12 (bookworm)"),
            json!("6.1.0"),
            json!("containerd://1.6.20")
        ]
    );
    let bare = json!({"metadata": {"name": "n"}});
    assert_eq!(
        cells("", "Node", &bare)[1..3],
        [json!("Unknown"), json!("<none>")]
    );
    let nr = json!({"metadata": {"name": "n"}, "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}});
    assert_eq!(cells("", "Node", &nr)[1], "NotReady");
}

#[test]
fn simple_kind_rows() {
    let ns = json!({"metadata": {"name": "default", "creationTimestamp": ago(10)}, "status": {"phase": "Active"}});
    assert_eq!(
        cells("", "Namespace", &ns),
        vec![json!("default"), json!("Active"), json!("10s")]
    );
    let cm = json!({"metadata": {"name": "kube-root-ca.crt", "creationTimestamp": ago(10)}, "data": {"ca.crt": "x"}, "binaryData": {"b": "eA=="}});
    assert_eq!(
        cells("", "ConfigMap", &cm),
        vec![json!("kube-root-ca.crt"), json!(2), json!("10s")]
    );
    let secret = json!({"metadata": {"name": "s", "creationTimestamp": ago(10)}, "type": "Opaque", "data": {"a": "", "b": ""}});
    assert_eq!(
        cells("", "Secret", &secret),
        vec![json!("s"), json!("Opaque"), json!(2), json!("10s")]
    );
    let sa = json!({"metadata": {"name": "default", "creationTimestamp": ago(10)}});
    assert_eq!(
        cells("", "ServiceAccount", &sa),
        vec![json!("default"), json!(0), json!("10s")]
    );
    let lease = json!({"metadata": {"name": "kube-scheduler", "creationTimestamp": ago(10)}, "spec": {"holderIdentity": "host_123"}});
    assert_eq!(
        cells("coordination.k8s.io", "Lease", &lease),
        vec![json!("kube-scheduler"), json!("host_123"), json!("10s")]
    );
    let pc = json!({"metadata": {"name": "system-node-critical", "creationTimestamp": ago(10)}, "value": 2000001000, "preemptionPolicy": "PreemptLowerPriority"});
    assert_eq!(
        cells("scheduling.k8s.io", "PriorityClass", &pc),
        vec![
            json!("system-node-critical"),
            json!(2000001000),
            json!(false),
            json!("10s"),
            json!("PreemptLowerPriority")
        ]
    );
    let sc = json!({"metadata": {"name": "standard", "creationTimestamp": ago(10), "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}}, "provisioner": "rancher.io/local-path", "volumeBindingMode": "WaitForFirstConsumer"});
    assert_eq!(
        cells("storage.k8s.io", "StorageClass", &sc),
        vec![
            json!("standard (default)"),
            json!("rancher.io/local-path"),
            json!("Delete"),
            json!("WaitForFirstConsumer"),
            json!(false),
            json!("10s")
        ]
    );
    let rb = json!({"metadata": {"name": "rb", "creationTimestamp": ago(10)}, "roleRef": {"kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "User", "name": "alice"}, {"kind": "Group", "name": "devs"}, {"kind": "ServiceAccount", "name": "sa", "namespace": "ns"}, {"kind": "User", "name": "bob"}]});
    assert_eq!(
        cells("rbac.authorization.k8s.io", "RoleBinding", &rb),
        vec![
            json!("rb"),
            json!("ClusterRole/view"),
            json!("10s"),
            json!("alice, bob"),
            json!("devs"),
            json!("ns/sa")
        ]
    );
    let pdb = json!({"metadata": {"name": "p", "creationTimestamp": ago(10)}, "spec": {"minAvailable": "50%"}, "status": {"disruptionsAllowed": 1}});
    assert_eq!(
        cells("policy", "PodDisruptionBudget", &pdb),
        vec![
            json!("p"),
            json!("50%"),
            json!("N/A"),
            json!(1),
            json!("10s")
        ]
    );
    let ep = json!({"metadata": {"name": "web", "creationTimestamp": ago(10)}, "subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "ports": [{"port": 80}, {"port": 443}]}]});
    assert_eq!(
        cells("", "Endpoints", &ep),
        vec![
            json!("web"),
            json!("10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 1 more..."),
            json!("10s")
        ]
    );
    let none = json!({"metadata": {"name": "e"}});
    assert_eq!(cells("", "Endpoints", &none)[1], "<none>");
    let es = json!({"metadata": {"name": "web-abc", "creationTimestamp": ago(10)}, "addressType": "IPv4", "ports": [{"port": 80, "name": "http"}], "endpoints": [{"addresses": ["10.0.0.1"]}]});
    assert_eq!(
        cells("discovery.k8s.io", "EndpointSlice", &es),
        vec![
            json!("web-abc"),
            json!("IPv4"),
            json!("80"),
            json!("10.0.0.1"),
            json!("10s")
        ]
    );
    let es_empty = json!({"metadata": {"name": "e"}, "addressType": "IPv4"});
    assert_eq!(
        cells("discovery.k8s.io", "EndpointSlice", &es_empty)[2..4],
        [json!("<unset>"), json!("<unset>")]
    );
    let pvc = json!({"metadata": {"name": "data", "creationTimestamp": ago(10)}, "spec": {"volumeName": "pv-1", "storageClassName": "standard", "volumeMode": "Filesystem", "resources": {"requests": {"storage": "1Gi"}}},
        "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"]}});
    assert_eq!(
        cells("", "PersistentVolumeClaim", &pvc),
        vec![
            json!("data"),
            json!("Bound"),
            json!("pv-1"),
            json!("1Gi"),
            json!("RWO"),
            json!("standard"),
            json!("<unset>"),
            json!("10s"),
            json!("Filesystem")
        ]
    );
    let pv = json!({"metadata": {"name": "pv-1", "creationTimestamp": ago(10)}, "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany", "ReadWriteOnce"], "persistentVolumeReclaimPolicy": "Delete", "claimRef": {"namespace": "default", "name": "data"}, "storageClassName": "standard", "volumeMode": "Filesystem"}, "status": {"phase": "Bound"}});
    assert_eq!(
        cells("", "PersistentVolume", &pv),
        vec![
            json!("pv-1"),
            json!("1Gi"),
            json!("RWO,RWX"),
            json!("Delete"),
            json!("Bound"),
            json!("default/data"),
            json!("standard"),
            json!("<unset>"),
            json!(""),
            json!("10s"),
            json!("Filesystem")
        ]
    );
    let rq = json!({"metadata": {"name": "q", "creationTimestamp": ago(10)}, "status": {"hard": {"pods": "10", "requests.cpu": "1", "limits.memory": "1Gi"}, "used": {"pods": "2", "requests.cpu": "500m", "limits.memory": "0"}}});
    assert_eq!(
        cells("", "ResourceQuota", &rq),
        vec![
            json!("q"),
            json!("pods: 2/10, requests.cpu: 500m/1"),
            json!("limits.memory: 0/1Gi"),
            json!("10s")
        ]
    );
    let cr = json!({"metadata": {"name": "fluentd-7b", "creationTimestamp": ago(10), "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "fluentd", "controller": true}]}, "revision": 2});
    assert_eq!(
        cells("apps", "ControllerRevision", &cr),
        vec![
            json!("fluentd-7b"),
            json!("daemonset.apps/fluentd"),
            json!(2),
            json!("10s")
        ]
    );
    let ing = json!({"metadata": {"name": "i", "creationTimestamp": ago(10)}, "spec": {"ingressClassName": "nginx", "rules": [{"host": "a.com"}, {"host": "b.com"}], "tls": [{}]}, "status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}});
    assert_eq!(
        cells("networking.k8s.io", "Ingress", &ing),
        vec![
            json!("i"),
            json!("nginx"),
            json!("a.com,b.com"),
            json!("1.2.3.4"),
            json!("80, 443"),
            json!("10s")
        ]
    );
    let np = json!({"metadata": {"name": "deny", "creationTimestamp": ago(10)}, "spec": {"podSelector": {}}});
    assert_eq!(
        cells("networking.k8s.io", "NetworkPolicy", &np),
        vec![json!("deny"), json!("<none>"), json!("10s")]
    );
}

#[test]
fn event_rows() {
    let ev = json!({"metadata": {"name": "web.17a", "namespace": "default"}, "involvedObject": {"kind": "Pod", "name": "web", "fieldPath": "spec.containers{nginx}"},
        "reason": "Pulled", "message": "Successfully pulled image \"nginx\" \n", "type": "Normal", "source": {"component": "kubelet", "host": "node-1"},
        "firstTimestamp": ago(120), "lastTimestamp": ago(30), "count": 3});
    assert_eq!(
        cells("", "Event", &ev),
        vec![
            json!("30s"),
            json!("Normal"),
            json!("Pulled"),
            json!("pod/web"),
            json!("spec.containers{nginx}"),
            json!("kubelet, node-1"),
            json!("Successfully pulled image \"nginx\""),
            json!("2m"),
            json!(3),
            json!("web.17a")
        ]
    );
    let cols: Vec<String> = columns(&def("", "Event"))
        .iter()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(
        cols,
        [
            "Last Seen",
            "Type",
            "Reason",
            "Object",
            "Subobject",
            "Source",
            "Message",
            "First Seen",
            "Count",
            "Name"
        ]
    );
    // events.k8s.io/v1: eventTime only, reportingController as source.
    let ev2 = json!({"metadata": {"name": "x"}, "eventTime": "2024-05-01T11:59:50.000000Z", "regarding": {"kind": "Node", "name": "n1"},
        "reason": "Starting", "note": "Starting kubelet.", "type": "Normal", "reportingController": "kubelet", "reportingInstance": "n1"});
    assert_eq!(
        cells("events.k8s.io", "Event", &ev2),
        vec![
            json!("10s"),
            json!("Normal"),
            json!("Starting"),
            json!("node/n1"),
            json!(""),
            json!("kubelet, n1"),
            json!("Starting kubelet."),
            json!("10s"),
            json!(1),
            json!("x")
        ]
    );
}

#[test]
fn kinds_without_printer_use_created_at() {
    let role =
        json!({"metadata": {"name": "pod-reader", "creationTimestamp": "2024-04-30T10:11:12Z"}});
    let d = def("rbac.authorization.k8s.io", "Role");
    let names: Vec<String> = columns(&d).iter().map(|c| c.name.clone()).collect();
    assert_eq!(names, ["Name", "Created At"]);
    assert_eq!(columns(&d)[1].type_, "date");
    assert_eq!(
        row(&d, &role, now()).cells,
        vec![json!("pod-reader"), json!("2024-04-30T10:11:12Z")]
    );
    let crd = def("apiextensions.k8s.io", "CustomResourceDefinition");
    assert_eq!(columns(&crd)[1].name, "Created At");
}

#[test]
fn custom_resources_use_printer_columns() {
    let crd = json!({"metadata": {"name": "widgets.example.com"}, "spec": {"group": "example.com", "scope": "Namespaced",
        "names": {"plural": "widgets", "kind": "Widget"},
        "versions": [{"name": "v1", "served": true, "storage": true, "additionalPrinterColumns": [
            {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
            {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status", "description": "Readiness"},
            {"name": "Ratio", "type": "number", "jsonPath": ".spec.ratio", "priority": 1},
            {"name": "Paused", "type": "boolean", "jsonPath": ".spec.paused"},
            {"name": "Spec", "type": "string", "jsonPath": ".spec.nested"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]}]}});
    let d = crate::crd::resource_defs(&crd).expect("crd").remove(0);
    let cols = columns(&d);
    let names: Vec<&str> = cols.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "Name", "Replicas", "Ready", "Ratio", "Paused", "Spec", "Age"
        ]
    );
    assert_eq!(
        cols[1].description,
        "Custom resource definition column (in JSONPath format): .spec.replicas"
    );
    assert_eq!(cols[2].description, "Readiness");
    assert_eq!(cols[3].priority, 1);
    let w = json!({"metadata": {"name": "w1", "creationTimestamp": ago(90)}, "spec": {"replicas": 3, "ratio": 0.5, "nested": {"a": 1}},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
    assert_eq!(
        row(&d, &w, now()).cells,
        vec![
            json!("w1"),
            json!(3),
            json!("True"),
            json!(0.5),
            Value::Null,
            json!("{\"a\":1}"),
            json!("90s")
        ]
    );

    // No printer columns: NAME, AGE.
    let mut plain = crd.clone();
    plain["spec"]["versions"][0]
        .as_object_mut()
        .expect("version")
        .remove("additionalPrinterColumns");
    let d = crate::crd::resource_defs(&plain).expect("crd").remove(0);
    let names: Vec<String> = columns(&d).iter().map(|c| c.name.clone()).collect();
    assert_eq!(names, ["Name", "Age"]);
    assert_eq!(row(&d, &w, now()).cells, vec![json!("w1"), json!("90s")]);
}

#[test]
fn malformed_objects_never_panic() {
    let junk = [
        json!(null),
        json!(1),
        json!("x"),
        json!([]),
        json!({"metadata": 5, "spec": "x", "status": []}),
        json!({"spec": {"containers": "x", "ports": 3, "selector": {"matchExpressions": [{"operator": "In"}]}}, "status": {"conditions": "x", "containerStatuses": [1, "x", null]}}),
    ];
    for d in builtin() {
        for j in &junk {
            let t = table_for(&d, std::slice::from_ref(j), now(), IncludeObject::Metadata);
            assert_eq!(
                t["rows"][0]["cells"].as_array().map(Vec::len),
                Some(columns(&d).len()),
                "{}",
                d.kind
            );
        }
    }
}
