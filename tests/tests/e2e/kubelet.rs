//! kumo kubelet end to end: a real apiserver + store, `kumo kubelet` as a child process with
//! node credentials (`system:node:<name>`, so the Node authorizer and NodeRestriction apply),
//! and real kubectl 1.33 creating pods bound to the node and reading what the kubelet
//! reports. The `sim` runtime needs nothing from the machine.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kumo_tests::{ApiServerProc, StoreKind, kumo_bin};
use serde_json::{Value, json};

/// A `kumo kubelet` child process.
struct KubeletProc {
    child: Option<Child>,
    log: PathBuf,
}

impl KubeletProc {
    fn start(api: &ApiServerProc, dir: &Path, node: &str, extra: &[&str]) -> KubeletProc {
        let kubeconfig = node_kubeconfig(api, dir, node);
        let root = dir.join(format!("kubelet-{node}"));
        let log = dir.join(format!("kubelet-{node}.log"));
        let logf = std::fs::File::create(&log).expect("log file");
        let child = Command::new(kumo_bin())
            .arg("kubelet")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["--hostname-override", node])
            .arg("--root-dir")
            .arg(&root)
            .args([
                "--port",
                "0",
                "--healthz-port",
                "0",
                "--node-ip",
                "127.0.0.1",
            ])
            .args(extra)
            .env("KUMO_SYNC_FREQUENCY", "2s")
            .env("KUMO_NODE_LEASE_RENEW_INTERVAL", "2s")
            .stdin(Stdio::null())
            .stdout(logf.try_clone().expect("log"))
            .stderr(logf)
            .spawn()
            .expect("spawn kumo kubelet");
        KubeletProc {
            child: Some(child),
            log,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for KubeletProc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Writes a kubeconfig with a `system:node:<node>` client certificate signed by the cluster CA.
fn node_kubeconfig(api: &ApiServerProc, dir: &Path, node: &str) -> PathBuf {
    let pki = kumo_auth::ClusterPki::load_or_create(&api.cert_dir, &[]).expect("cluster pki");
    let cert = pki
        .sign_client_cert(
            &format!("system:node:{node}"),
            &["system:nodes".to_string()],
            Duration::from_secs(24 * 3600),
        )
        .expect("node certificate");
    let path = dir.join(format!("{node}.kubeconfig"));
    kumo_auth::kubeconfig::write_kubeconfig(
        &path,
        &api.url(),
        pki.ca_cert_pem(),
        "kumo",
        &format!("system:node:{node}"),
        &kumo_auth::Credentials::ClientCert(cert),
    )
    .expect("write node kubeconfig");
    path
}

struct Cluster<'a> {
    api: &'a ApiServerProc,
    dir: &'a Path,
}

impl Cluster<'_> {
    fn kubectl(&self, args: &[&str]) -> (bool, String) {
        let out = self.api.kubectl("1.33", args).expect("run kubectl");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (ok, out) = self.kubectl(args);
        assert!(ok, "kubectl {args:?} failed: {out}");
        out
    }

    fn apply(&self, name: &str, manifest: Value) {
        let path = self.dir.join(format!("{name}.json"));
        std::fs::write(&path, manifest.to_string()).expect("write manifest");
        self.ok(&["apply", "-f", &path.display().to_string()]);
    }

    fn get_json(&self, what: &str) -> Option<Value> {
        let mut args: Vec<&str> = vec!["get"];
        args.extend(what.split_whitespace());
        args.extend(["-o", "json"]);
        let (ok, out) = self.kubectl(&args);
        if !ok {
            return None;
        }
        serde_json::from_str(&out).ok()
    }

    /// Polls `what` until `pred` holds; panics with the last object and the kubelet log.
    fn wait_for(
        &self,
        what: &str,
        kubelet: &KubeletProc,
        desc: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = None;
        loop {
            if let Some(v) = self.get_json(what) {
                if pred(&v) {
                    return v;
                }
                last = Some(v);
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {desc} did not happen in time; last object:\n{}\nkubelet log (tail):\n{}",
                serde_json::to_string_pretty(&last).unwrap_or_default(),
                tail(&kubelet.log_text(), 40)
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

fn pod(name: &str, node: &str, spec_extra: Value, annotations: Value) -> Value {
    let mut spec = json!({
        "nodeName": node,
        "containers": [{"name": "c", "image": "busybox:latest", "command": ["sleep", "3600"]}],
        "terminationGracePeriodSeconds": 5,
    });
    if let (Some(s), Some(extra)) = (spec.as_object_mut(), spec_extra.as_object()) {
        for (k, v) in extra {
            s.insert(k.clone(), v.clone());
        }
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "annotations": annotations},
        "spec": spec,
    })
}

#[test]
fn sim_kubelet_registers_node_runs_and_deletes_pods() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let api = ApiServerProc::start(StoreKind::Kumo, dir, &[]).expect("apiserver");
    let kubelet = KubeletProc::start(&api, dir, "sim-a", &["--container-runtime", "sim"]);
    let c = Cluster { api: &api, dir };

    // The Node registers Ready with the hollow capacity and upstream's labels.
    let node = c.wait_for("node/sim-a", &kubelet, "Ready=True", |n| {
        condition(n, "Ready").is_some_and(|r| r["status"] == "True")
    });
    assert_eq!(node["status"]["capacity"]["cpu"], "32", "{node}");
    assert_eq!(node["status"]["capacity"]["pods"], "110", "{node}");
    assert_eq!(
        node["metadata"]["labels"]["kubernetes.io/hostname"], "sim-a",
        "{node}"
    );
    assert_eq!(node["metadata"]["labels"]["kubernetes.io/os"], "linux");
    assert_eq!(
        condition(&node, "Ready").expect("Ready")["reason"],
        "KubeletReady"
    );
    for t in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
        assert_eq!(condition(&node, t).expect(t)["status"], "False", "{t}");
    }
    assert_eq!(node["status"]["nodeInfo"]["kubeletVersion"], "v1.33.0");
    assert!(
        node["status"]["nodeInfo"]["containerRuntimeVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("sim://")),
        "{node}"
    );
    assert!(
        node["status"]["addresses"].as_array().is_some_and(|a| a
            .iter()
            .any(|x| x["type"] == "InternalIP" && x["address"] == "127.0.0.1")),
        "{node}"
    );
    let out = c.ok(&["get", "nodes"]);
    assert!(out.contains("sim-a") && out.contains("Ready"), "{out}");

    // The Lease exists, is held by the node, owned by it, and is renewed.
    let lease = c.wait_for(
        "lease/sim-a -n kube-node-lease",
        &kubelet,
        "lease created",
        |l| l["spec"]["holderIdentity"] == "sim-a",
    );
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 40);
    assert_eq!(lease["metadata"]["ownerReferences"][0]["kind"], "Node");
    let first = lease["spec"]["renewTime"]
        .as_str()
        .unwrap_or("")
        .to_string();
    c.wait_for(
        "lease/sim-a -n kube-node-lease",
        &kubelet,
        "lease renewed",
        |l| l["spec"]["renewTime"].as_str().is_some_and(|t| t != first),
    );

    // A pod bound to the node goes Running and Ready with container statuses.
    c.apply("p1", pod("p1", "sim-a", json!({}), json!({})));
    let p = c.wait_for("pod/p1", &kubelet, "Running and Ready", |p| {
        p["status"]["phase"] == "Running"
            && condition(p, "Ready").is_some_and(|r| r["status"] == "True")
    });
    let cs = &p["status"]["containerStatuses"][0];
    assert_eq!(cs["name"], "c");
    assert_eq!(cs["ready"], true);
    assert_eq!(cs["started"], true);
    assert_eq!(cs["restartCount"], 0);
    assert!(cs["state"]["running"]["startedAt"].is_string(), "{p}");
    assert!(
        cs["containerID"]
            .as_str()
            .is_some_and(|s| s.starts_with("sim://")),
        "{p}"
    );
    assert!(
        p["status"]["podIP"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("10.24")),
        "{p}"
    );
    assert_eq!(p["status"]["hostIP"], "127.0.0.1");
    assert_eq!(p["status"]["qosClass"], "BestEffort");
    assert!(p["status"]["startTime"].is_string());
    for t in [
        "PodReadyToStartContainers",
        "Initialized",
        "ContainersReady",
    ] {
        assert_eq!(condition(&p, t).expect(t)["status"], "True", "{t}: {p}");
    }
    let out = c.ok(&["get", "pod", "p1"]);
    assert!(out.contains("Running") && out.contains("1/1"), "{out}");
    let events = c.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=p1",
    ]);
    assert!(events.contains("Started"), "{events}");

    // Graceful deletion: kubectl waits until the kubelet finished and removed the object.
    c.ok(&["delete", "pod", "p1", "--timeout=60s"]);
    let (found, out) = c.kubectl(&["get", "pod", "p1"]);
    assert!(!found && out.contains("NotFound"), "{out}");

    // restartPolicy Never: scripted exits end in Succeeded / Failed.
    let never = json!({"restartPolicy": "Never"});
    c.apply(
        "ok",
        pod(
            "ok",
            "sim-a",
            never.clone(),
            json!({"sim.kumo.io/exit-after": "1s", "sim.kumo.io/exit-code": "0"}),
        ),
    );
    c.apply(
        "bad",
        pod(
            "bad",
            "sim-a",
            never,
            json!({"sim.kumo.io/exit-after": "1s", "sim.kumo.io/exit-code": "3"}),
        ),
    );
    let ok = c.wait_for("pod/ok", &kubelet, "Succeeded", |p| {
        p["status"]["phase"] == "Succeeded"
    });
    let t = &ok["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(t["exitCode"], 0, "{ok}");
    assert_eq!(t["reason"], "Completed", "{ok}");
    assert_eq!(
        condition(&ok, "Ready").expect("Ready")["reason"],
        "PodCompleted"
    );
    let bad = c.wait_for("pod/bad", &kubelet, "Failed", |p| {
        p["status"]["phase"] == "Failed"
    });
    let t = &bad["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(t["exitCode"], 3, "{bad}");
    assert_eq!(t["reason"], "Error", "{bad}");

    // restartPolicy Always: a crashing container restarts, then backs off.
    c.apply(
        "crash",
        pod(
            "crash",
            "sim-a",
            json!({}),
            json!({"sim.kumo.io/exit-after": "500ms", "sim.kumo.io/exit-code": "1"}),
        ),
    );
    let crash = c.wait_for("pod/crash", &kubelet, "CrashLoopBackOff", |p| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    });
    let cs = &crash["status"]["containerStatuses"][0];
    assert!(
        cs["restartCount"].as_i64().is_some_and(|n| n >= 1),
        "{crash}"
    );
    assert_eq!(cs["lastState"]["terminated"]["exitCode"], 1, "{crash}");
    let msg = cs["state"]["waiting"]["message"].as_str().unwrap_or("");
    let uid = crash["metadata"]["uid"].as_str().unwrap_or("");
    assert_eq!(
        msg,
        format!("back-off 10s restarting failed container=c pod=crash_default({uid})"),
        "{crash}"
    );
    assert_eq!(crash["status"]["phase"], "Running");
    let events = c.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=crash",
    ]);
    assert!(events.contains("BackOff"), "{events}");

    // A missing ConfigMap key is CreateContainerConfigError until the ConfigMap exists.
    c.apply(
        "envpod",
        pod(
            "envpod",
            "sim-a",
            json!({"containers": [{
                "name": "c", "image": "busybox:latest",
                "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "x"}}}]
            }]}),
            json!({}),
        ),
    );
    let p = c.wait_for("pod/envpod", &kubelet, "CreateContainerConfigError", |p| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
            == "CreateContainerConfigError"
    });
    assert_eq!(
        p["status"]["containerStatuses"][0]["state"]["waiting"]["message"],
        "configmap \"cfg\" not found",
        "{p}"
    );
    c.ok(&["create", "configmap", "cfg", "--from-literal=x=1"]);
    c.wait_for(
        "pod/envpod",
        &kubelet,
        "Running once the ConfigMap exists",
        |p| {
            p["status"]["phase"] == "Running"
                && p["status"]["containerStatuses"][0]["state"]["running"].is_object()
        },
    );

    // Node-level admission: more CPU than allocatable fails the pod like upstream.
    c.apply(
        "huge",
        pod(
            "huge",
            "sim-a",
            json!({"containers": [{
                "name": "c", "image": "busybox:latest",
                "resources": {"requests": {"cpu": "64"}}
            }]}),
            json!({}),
        ),
    );
    let huge = c.wait_for("pod/huge", &kubelet, "Failed OutOfcpu", |p| {
        p["status"]["phase"] == "Failed"
    });
    assert_eq!(huge["status"]["reason"], "OutOfcpu", "{huge}");
    assert!(
        huge["status"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Node didn't have enough resource: cpu")),
        "{huge}"
    );

    // A nodeSelector the node does not match: NodeAffinity.
    c.apply(
        "sel",
        pod(
            "sel",
            "sim-a",
            json!({"nodeSelector": {"disk": "ssd"}}),
            json!({}),
        ),
    );
    let sel = c.wait_for("pod/sel", &kubelet, "Failed NodeAffinity", |p| {
        p["status"]["phase"] == "Failed"
    });
    assert_eq!(sel["status"]["reason"], "NodeAffinity", "{sel}");
}

#[test]
fn sim_nodes_share_one_process() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let api = ApiServerProc::start(StoreKind::Kumo, dir, &[]).expect("apiserver");
    // Many hollow nodes need a credential that may write every Node: the admin kubeconfig.
    let log = dir.join("kubelet-hollow.log");
    let logf = std::fs::File::create(&log).expect("log");
    let mut child = KubeletProc {
        child: Some(
            Command::new(kumo_bin())
                .arg("kubelet")
                .arg("--kubeconfig")
                .arg(&api.kubeconfig)
                .args([
                    "--hostname-override",
                    "hollow",
                    "--container-runtime",
                    "sim",
                ])
                .args(["--sim-nodes", "20", "--port", "0", "--healthz-port", "0"])
                .arg("--root-dir")
                .arg(dir.join("hollow"))
                .stdin(Stdio::null())
                .stdout(logf.try_clone().expect("log"))
                .stderr(logf)
                .spawn()
                .expect("spawn"),
        ),
        log,
    };
    let c = Cluster { api: &api, dir };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = c.ok(&[
            "get",
            "nodes",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
        ]);
        let ready = out.lines().filter(|l| l.ends_with(" True")).count();
        if ready == 20 {
            assert!(
                out.contains("hollow-1 ") && out.contains("hollow-20 "),
                "{out}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "20 hollow nodes not Ready: {out}\n{}",
            tail(&child.log_text(), 30)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    for i in [3, 17] {
        let name = format!("hp{i}");
        c.apply(
            &name,
            pod(&name, &format!("hollow-{i}"), json!({}), json!({})),
        );
    }
    for i in [3, 17] {
        c.wait_for(&format!("pod/hp{i}"), &child, "Running", |p| {
            p["status"]["phase"] == "Running"
        });
    }
    let leases = c.ok(&["get", "leases", "-n", "kube-node-lease", "-o", "name"]);
    assert_eq!(leases.lines().count(), 20, "{leases}");
    child.stop();
}
