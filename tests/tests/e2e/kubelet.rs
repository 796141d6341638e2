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
            .args(["--healthz-port", "0", "--node-ip", "127.0.0.1"])
            .args(if extra.contains(&"--port") {
                &[][..]
            } else {
                &["--port", "0"][..]
            })
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
            Duration::from_secs(365 * 24 * 3600),
        )
        .expect("node certificate");
    // The apiserver verifies kubelets' serving certificates against the cluster CA (as
    // `kumo up` arranges): put one where the kubelet looks (`<root-dir>/pki/kubelet.crt`).
    let serving = pki
        .sign_serving_cert(
            node,
            &[
                "127.0.0.1".to_string(),
                "localhost".to_string(),
                node.to_string(),
            ],
            Duration::from_secs(365 * 24 * 3600),
        )
        .expect("serving certificate");
    let pki_dir = dir.join(format!("kubelet-{node}")).join("pki");
    std::fs::create_dir_all(&pki_dir).expect("pki dir");
    std::fs::write(pki_dir.join("kubelet.crt"), &serving.cert_pem).expect("kubelet.crt");
    std::fs::write(pki_dir.join("kubelet.key"), &serving.key_pem).expect("kubelet.key");
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

    /// Waits until the Events of object `name` mention `needle` (Events are written
    /// asynchronously); returns the event table.
    fn wait_event(&self, name: &str, needle: &str) -> String {
        let selector = format!("involvedObject.name={name}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let events = self.ok(&["get", "events", "--field-selector", &selector]);
            if events.contains(needle) {
                return events;
            }
            assert!(
                Instant::now() < deadline,
                "no event about {name} mentions {needle:?}:\n{events}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
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
            // The log first and only the object's status: CI keeps the head of a failure.
            assert!(
                Instant::now() < deadline,
                "{what}: {desc} did not happen in time; kubelet log (tail):\n{}\nlast status:\n{}",
                tail(&kubelet.log_text(), 40),
                last.as_ref()
                    .map(|v| serde_json::to_string_pretty(&v["status"]).unwrap_or_default())
                    .unwrap_or_default(),
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
    let kubelet = KubeletProc::start(
        &api,
        dir,
        "sim-a",
        &[
            "--container-runtime",
            "sim",
            "--node-labels",
            "disk=ssd,zone=a",
            "--register-with-taints",
            "dedicated=sim:PreferNoSchedule",
            "--system-reserved",
            "cpu=1,memory=1Gi",
            "--max-pods",
            "50",
        ],
    );
    let c = Cluster { api: &api, dir };

    // The Node registers Ready with the hollow capacity and upstream's labels.
    let node = c.wait_for("node/sim-a", &kubelet, "Ready=True", |n| {
        condition(n, "Ready").is_some_and(|r| r["status"] == "True")
    });
    assert_eq!(node["status"]["capacity"]["cpu"], "32", "{node}");
    assert_eq!(node["status"]["capacity"]["pods"], "50", "{node}");
    assert_eq!(
        node["status"]["capacity"]["memory"], "268435456Ki",
        "{node}"
    );
    // allocatable = capacity - system-reserved - the 100Mi hard eviction threshold
    assert_eq!(node["status"]["allocatable"]["cpu"], "31", "{node}");
    assert_eq!(
        node["status"]["allocatable"]["memory"],
        format!("{}Ki", (256u64 << 20) - (1 << 20) - 100 * 1024),
        "{node}"
    );
    assert_eq!(node["metadata"]["labels"]["disk"], "ssd", "{node}");
    assert_eq!(node["metadata"]["labels"]["zone"], "a", "{node}");
    assert_eq!(node["spec"]["taints"][0]["key"], "dedicated", "{node}");
    assert_eq!(
        node["spec"]["taints"][0]["effect"], "PreferNoSchedule",
        "{node}"
    );
    assert_eq!(
        node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"], 0,
        "{node}"
    );
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
    c.wait_event("p1", "Started container c");

    // A changed container definition (`kubectl set image` on the pod) restarts it.
    c.ok(&["set", "image", "pod/p1", "c=busybox:1.36"]);
    let p = c.wait_for("pod/p1", &kubelet, "restarted with the new image", |p| {
        let cs = &p["status"]["containerStatuses"][0];
        cs["image"] == "busybox:1.36"
            && cs["restartCount"] == 1
            && cs["state"]["running"].is_object()
    });
    assert_eq!(p["status"]["phase"], "Running");
    c.wait_event("p1", "Container c definition changed, will be restarted");

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
    c.wait_event("crash", "Back-off restarting failed container c");

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

    // A sidecar (init container with restartPolicy Always) keeps running next to the app.
    c.apply(
        "side",
        pod(
            "side",
            "sim-a",
            json!({"initContainers": [{"name": "proxy", "image": "busybox:latest", "restartPolicy": "Always"}]}),
            json!({}),
        ),
    );
    let side = c.wait_for("pod/side", &kubelet, "Running and Ready", |p| {
        condition(p, "Ready").is_some_and(|r| r["status"] == "True")
    });
    let ics = &side["status"]["initContainerStatuses"][0];
    assert!(ics["state"]["running"].is_object(), "{side}");
    assert_eq!(ics["started"], true, "{side}");
    assert_eq!(
        condition(&side, "Initialized").expect("Initialized")["status"],
        "True"
    );
    assert_eq!(side["status"]["phase"], "Running");

    // activeDeadlineSeconds: the kubelet stops the pod and fails it.
    c.apply(
        "deadline",
        pod(
            "deadline",
            "sim-a",
            json!({"activeDeadlineSeconds": 2}),
            json!({}),
        ),
    );
    let d = c.wait_for("pod/deadline", &kubelet, "Failed DeadlineExceeded", |p| {
        p["status"]["phase"] == "Failed"
    });
    assert_eq!(d["status"]["reason"], "DeadlineExceeded", "{d}");
    assert!(
        d["status"]["containerStatuses"][0]["state"]["terminated"].is_object(),
        "{d}"
    );

    // A nodeSelector the node does not match: NodeAffinity.
    c.apply(
        "sel",
        pod(
            "sel",
            "sim-a",
            json!({"nodeSelector": {"disk": "hdd"}}),
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

/// The process runtime needs root (namespaces, cgroups) and busybox for the image.
fn process_runtime_available(test: &str) -> bool {
    if !nix_is_root() {
        assert!(
            !kumo_tests::running_under_ci(),
            "{test}: the process runtime tests need root under CI"
        );
        return false;
    }
    kumo_tests::require_tool(
        &kumo_tests::images::busybox_bin(),
        "busybox-static",
        "KUMO_BUSYBOX",
        test,
    )
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Imports a busybox image as `busybox:latest` into a fresh image store.
fn busybox_store(dir: &Path) -> PathBuf {
    let tar = kumo_tests::images::busybox_image_tar(dir, "busybox:latest", &["sh"])
        .expect("busybox image");
    let store = dir.join("images");
    let out = Command::new(kumo_bin())
        .args(["image", "import"])
        .arg(&tar)
        .arg("--root")
        .arg(&store)
        .output()
        .expect("kumo image import");
    assert!(
        out.status.success(),
        "kumo image import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    store
}

/// Whether a process whose command line contains `marker` runs on this machine.
fn marker_running(marker: &str) -> bool {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .any(|e| {
            std::fs::read(e.path().join("cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
        })
}

/// The current log file of `container` in `pod` as the kubelet wrote it.
fn container_log(root: &Path, pod: &Value, container: &str) -> String {
    let uid = pod["metadata"]["uid"].as_str().unwrap_or("");
    let name = pod["metadata"]["name"].as_str().unwrap_or("");
    let attempt = pod["status"]["containerStatuses"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == container))
        .and_then(|c| c["restartCount"].as_i64())
        .unwrap_or(0);
    let path = root
        .join("pods-logs")
        .join(format!("default_{name}_{uid}"))
        .join(container)
        .join(format!("{attempt}.log"));
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn process_kubelet_env_volumes_probes_and_restarts() {
    const TEST: &str = "process_kubelet_env_volumes_probes_and_restarts";
    if !process_runtime_available(TEST) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let store = busybox_store(dir);
    let api = ApiServerProc::start(StoreKind::Kumo, dir, &[]).expect("apiserver");
    let node = "proc-a";
    let store_arg = store.display().to_string();
    let port = kumo_tests::free_port().to_string();
    let kubelet_args = [
        "--container-runtime",
        "process",
        "--image-store",
        &store_arg,
        "--port",
        &port,
    ];
    let mut kubelet = KubeletProc::start(&api, dir, node, &kubelet_args);
    let root = dir.join(format!("kubelet-{node}"));
    let c = Cluster { api: &api, dir };
    c.wait_for(&format!("node/{node}"), &kubelet, "Ready=True", |n| {
        condition(n, "Ready").is_some_and(|r| r["status"] == "True")
    });
    c.wait_for("serviceaccount/default", &kubelet, "default SA", |_| true);

    // ConfigMap + Secret into env and files; the ConfigMap edit reaches the file.
    c.ok(&[
        "create",
        "configmap",
        "app-cfg",
        "--from-literal=greeting=hello",
        "--from-literal=color=blue",
    ]);
    c.ok(&[
        "create",
        "secret",
        "generic",
        "app-sec",
        "--from-literal=password=s3cret",
    ]);
    let script = "echo GREETING=$GREETING PASS=$PASS POD=$POD_NAME NODE=$NODE MEM=$MEM COMBO=$COMBO CFG_color=$CFG_color ARG=$1; \
                  echo FILE=$(cat /etc/cfg/greeting) SECFILE=$(cat /etc/sec/password) LABELS=$(cat /etc/pod/labels) NS=$(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace); \
                  test -s /var/run/secrets/kubernetes.io/serviceaccount/token && echo TOKEN=present; \
                  echo data > /data/x && echo EMPTYDIR=$(cat /data/x) INIT=$(cat /data/init); \
                  while true; do echo NOW=$(cat /etc/cfg/greeting); sleep 1; done";
    c.apply(
        "app",
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "app", "namespace": "default", "labels": {"app": "demo"}},
            "spec": {
                "nodeName": node,
                "terminationGracePeriodSeconds": 5,
                "initContainers": [
                    {"name": "init1", "image": "busybox:latest", "command": ["sh", "-c", "echo one > /data/init"],
                     "volumeMounts": [{"name": "scratch", "mountPath": "/data"}]},
                    {"name": "init2", "image": "busybox:latest", "command": ["sh", "-c", "echo two >> /data/init"],
                     "volumeMounts": [{"name": "scratch", "mountPath": "/data"}]}
                ],
                "containers": [{
                    "name": "c", "image": "busybox:latest",
                    "command": ["sh", "-c", script, "sh", "$(GREETING)-arg"],
                    "resources": {"limits": {"memory": "64Mi"}},
                    "env": [
                        {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "app-cfg", "key": "greeting"}}},
                        {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "app-sec", "key": "password"}}},
                        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                        {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                        {"name": "COMBO", "value": "$(GREETING)-x"}
                    ],
                    "envFrom": [{"prefix": "CFG_", "configMapRef": {"name": "app-cfg"}}],
                    "volumeMounts": [
                        {"name": "cfg", "mountPath": "/etc/cfg"},
                        {"name": "sec", "mountPath": "/etc/sec"},
                        {"name": "pod", "mountPath": "/etc/pod"},
                        {"name": "scratch", "mountPath": "/data"}
                    ]
                }],
                "volumes": [
                    {"name": "cfg", "configMap": {"name": "app-cfg"}},
                    {"name": "sec", "secret": {"secretName": "app-sec"}},
                    {"name": "pod", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
                    {"name": "scratch", "emptyDir": {}}
                ]
            }
        }),
    );
    let app = c.wait_for("pod/app", &kubelet, "Running", |p| {
        p["status"]["phase"] == "Running"
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let log = loop {
        let log = container_log(&root, &app, "c");
        if log.contains("NOW=") {
            break log;
        }
        assert!(
            Instant::now() < deadline,
            "no output from app: {log:?}\n{}",
            tail(&kubelet.log_text(), 30)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    for s in app["status"]["initContainerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
    {
        assert_eq!(s["state"]["terminated"]["reason"], "Completed", "{app}");
    }
    assert_eq!(
        condition(&app, "Initialized").expect("Initialized")["status"],
        "True"
    );
    for want in [
        "GREETING=hello",
        "PASS=s3cret",
        "POD=app",
        &format!("NODE={node}"),
        "MEM=64",
        "COMBO=hello-x",
        "CFG_color=blue",
        "ARG=hello-arg",
        "FILE=hello",
        "SECFILE=s3cret",
        "LABELS=app=\"demo\"",
        "NS=default",
        "TOKEN=present",
        "EMPTYDIR=data INIT=one two",
    ] {
        assert!(
            log.contains(want),
            "{want} missing from the app's output:\n{log}"
        );
    }
    c.ok(&[
        "patch",
        "configmap",
        "app-cfg",
        "-p",
        r#"{"data":{"greeting":"bonjour"}}"#,
    ]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = container_log(&root, &app, "c");
        if log.contains("NOW=bonjour") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the ConfigMap update never reached the file:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // kubectl logs goes apiserver → kubelet API → the CRI log file.
    let logs = c.ok(&["logs", "app"]);
    assert!(logs.contains("GREETING=hello"), "{logs}");

    // A kubelet restart adopts the running pod instead of restarting it, and cleans up a
    // pod force-deleted while it was down.
    c.apply(
        "gone",
        pod(
            "gone",
            node,
            json!({"containers": [{"name": "c", "image": "busybox:latest",
                "command": ["sh", "-c", "while true; do sleep 1; done; echo marker-7f3a9"]}]}),
            json!({}),
        ),
    );
    let gone = c.wait_for("pod/gone", &kubelet, "Running", |p| {
        p["status"]["phase"] == "Running"
    });
    let gone_dir = root
        .join("pods")
        .join(gone["metadata"]["uid"].as_str().unwrap_or("x"));
    assert!(gone_dir.exists(), "{}", gone_dir.display());
    assert!(marker_running("marker-7f3a9"));
    let before = c.get_json("pod/app").expect("pod app");
    let cid = before["status"]["containerStatuses"][0]["containerID"].clone();
    kubelet.stop();
    c.ok(&["delete", "pod", "gone", "--grace-period=0", "--force"]);
    let kubelet = KubeletProc::start(&api, dir, node, &kubelet_args);
    let deadline = Instant::now() + Duration::from_secs(30);
    while marker_running("marker-7f3a9") || gone_dir.exists() {
        assert!(
            Instant::now() < deadline,
            "the force-deleted pod's processes or directory survived the kubelet restart\n{}",
            tail(&kubelet.log_text(), 30)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let lines = |p: &Value| container_log(&root, p, "c").matches("NOW=").count();
    let seen = lines(&before);
    c.wait_for(
        "pod/app",
        &kubelet,
        "still running after the kubelet restart",
        |p| lines(p) > seen + 2,
    );
    let after = c.wait_for("pod/app", &kubelet, "Ready again", |p| {
        condition(p, "Ready").is_some_and(|r| r["status"] == "True")
    });
    assert_eq!(
        after["status"]["containerStatuses"][0]["containerID"], cid,
        "{after}"
    );
    assert_eq!(
        after["status"]["containerStatuses"][0]["restartCount"], 0,
        "{after}"
    );

    // Readiness over HTTP to the pod IP, liveness over exec restarting the container.
    c.apply(
        "web",
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "nodeName": node,
                "terminationGracePeriodSeconds": 5,
                "containers": [{
                    "name": "web", "image": "busybox:latest",
                    "command": ["sh", "-c", "mkdir -p /www && echo ok > /www/index.html && touch /tmp/healthy && exec httpd -f -p 8080 -h /www"],
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
                    "livenessProbe": {"exec": {"command": ["cat", "/tmp/healthy"]}, "periodSeconds": 1, "failureThreshold": 2}
                }]
            }
        }),
    );
    c.wait_for("pod/web", &kubelet, "Ready via httpGet", |p| {
        condition(p, "Ready").is_some_and(|r| r["status"] == "True")
    });
    // Once it served, the liveness file goes (kubectl exec), so the restart below does not
    // race the first readiness probe on a busy machine.
    c.ok(&["exec", "web", "--", "rm", "/tmp/healthy"]);
    let web = c.wait_for(
        "pod/web",
        &kubelet,
        "restarted by the liveness probe",
        |p| {
            p["status"]["containerStatuses"][0]["restartCount"]
                .as_i64()
                .is_some_and(|n| n >= 1)
        },
    );
    assert!(
        web["status"]["containerStatuses"][0]["lastState"]["terminated"].is_object(),
        "{web}"
    );
    let events = c.wait_event(
        "web",
        "Container web failed liveness probe, will be restarted",
    );
    assert!(events.contains("Killing"), "{events}");

    // A container that keeps failing ends in CrashLoopBackOff.
    c.apply(
        "crash",
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "crash", "namespace": "default"},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox:latest", "command": ["sh", "-c", "echo dying; exit 2"]}]}
        }),
    );
    let crash = c.wait_for("pod/crash", &kubelet, "CrashLoopBackOff", |p| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    });
    assert_eq!(
        crash["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"], 2,
        "{crash}"
    );
    // Both the last attempt and the one before it keep their logs.
    let logs = c.ok(&["logs", "crash"]);
    assert!(logs.contains("dying"), "{logs}");
    let previous = c.ok(&["logs", "crash", "--previous"]);
    assert!(previous.contains("dying"), "{previous}");

    // A missing image: ErrImagePull, then ImagePullBackOff.
    c.apply(
        "noimg",
        pod(
            "noimg",
            node,
            json!({"containers": [{"name": "c", "image": "nothere:1"}]}),
            json!({}),
        ),
    );
    c.wait_for("pod/noimg", &kubelet, "ImagePullBackOff", |p| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ImagePullBackOff"
    });

    // Graceful termination: the preStop hook runs, then SIGTERM reaches the container, which
    // both leave a file in a hostPath volume (DirectoryOrCreate).
    let host_dir = dir.join("hostvol");
    c.apply(
        "stopper",
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "stopper", "namespace": "default"},
            "spec": {
                "nodeName": node,
                "terminationGracePeriodSeconds": 10,
                "containers": [{
                    "name": "c", "image": "busybox:latest",
                    "command": ["sh", "-c", "trap 'echo term > /host/term; exit 0' TERM; while true; do sleep 1; done"],
                    "lifecycle": {"preStop": {"exec": {"command": ["sh", "-c", "echo prestop > /host/prestop"]}}},
                    "volumeMounts": [{"name": "host", "mountPath": "/host"}]
                }],
                "volumes": [{"name": "host", "hostPath": {"path": host_dir.display().to_string(), "type": "DirectoryOrCreate"}}]
            }
        }),
    );
    c.wait_for("pod/stopper", &kubelet, "Running", |p| {
        p["status"]["phase"] == "Running"
    });
    assert!(
        host_dir.is_dir(),
        "hostPath DirectoryOrCreate did not create {}",
        host_dir.display()
    );
    c.ok(&["delete", "pod", "stopper", "--timeout=60s"]);
    assert_eq!(
        std::fs::read_to_string(host_dir.join("prestop")).unwrap_or_default(),
        "prestop\n",
        "preStop hook did not run"
    );
    assert_eq!(
        std::fs::read_to_string(host_dir.join("term")).unwrap_or_default(),
        "term\n",
        "the container did not get SIGTERM"
    );

    // A memory limit is enforced: the container is OOM-killed and the pod fails.
    c.apply(
        "oom",
        pod(
            "oom",
            node,
            json!({"restartPolicy": "Never", "containers": [{
                "name": "c", "image": "busybox:latest", "command": ["tail", "/dev/zero"],
                "resources": {"limits": {"memory": "32Mi"}}
            }]}),
            json!({}),
        ),
    );
    let oom = c.wait_for("pod/oom", &kubelet, "Failed", |p| {
        p["status"]["phase"] == "Failed"
    });
    let t = &oom["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(t["reason"], "OOMKilled", "{oom}");
    assert_eq!(t["exitCode"], 137, "{oom}");

    // Graceful deletion stops the processes and removes the object.
    c.ok(&[
        "delete",
        "pod",
        "app",
        "web",
        "crash",
        "noimg",
        "oom",
        "--timeout=60s",
    ]);
    let (_, out) = c.kubectl(&["get", "pods"]);
    assert!(out.contains("No resources found"), "{out}");
}

#[test]
fn cri_kubelet_runs_pods_on_containerd() {
    const TEST: &str = "cri_kubelet_runs_pods_on_containerd";
    if !kumo_tests::containerd::Containerd::require(TEST) {
        return;
    }
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let ctd = rt
        .block_on(kumo_tests::containerd::Containerd::start())
        .expect("start containerd");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let api = ApiServerProc::start(StoreKind::Kumo, dir, &[]).expect("apiserver");
    let node = "cri-a";
    let endpoint = ctd.endpoint();
    let port = kumo_tests::free_port().to_string();
    let kubelet = KubeletProc::start(
        &api,
        dir,
        node,
        &[
            "--container-runtime",
            "cri",
            "--container-runtime-endpoint",
            &endpoint,
            "--port",
            &port,
        ],
    );
    let c = Cluster { api: &api, dir };
    let n = c.wait_for(&format!("node/{node}"), &kubelet, "Ready=True", |n| {
        condition(n, "Ready").is_some_and(|r| r["status"] == "True")
    });
    assert!(
        n["status"]["nodeInfo"]["containerRuntimeVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("containerd://")),
        "{n}"
    );
    c.wait_for("serviceaccount/default", &kubelet, "default SA", |_| true);
    c.ok(&[
        "create",
        "configmap",
        "web-cfg",
        "--from-literal=msg=hi-from-cm",
    ]);
    c.apply(
        "web",
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "nodeName": node,
                "terminationGracePeriodSeconds": 5,
                "containers": [{
                    "name": "web", "image": kumo_tests::containerd::BUSYBOX_IMAGE,
                    "command": ["sh", "-c", "echo MSG=$MSG FILE=$(cat /cfg/msg); mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 8080 -h /www"],
                    "env": [{"name": "MSG", "valueFrom": {"configMapKeyRef": {"name": "web-cfg", "key": "msg"}}}],
                    "ports": [{"containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
                    "livenessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 2},
                    "volumeMounts": [{"name": "cfg", "mountPath": "/cfg"}]
                }],
                "volumes": [{"name": "cfg", "configMap": {"name": "web-cfg"}}]
            }
        }),
    );
    let web = c.wait_for("pod/web", &kubelet, "Running and Ready", |p| {
        condition(p, "Ready").is_some_and(|r| r["status"] == "True")
    });
    let cs = &web["status"]["containerStatuses"][0];
    assert!(
        cs["containerID"]
            .as_str()
            .is_some_and(|s| s.starts_with("containerd://")),
        "{web}"
    );
    assert!(
        web["status"]["podIP"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("10.89.")),
        "{web}"
    );
    let logs = c.ok(&["logs", "web"]);
    assert!(logs.contains("MSG=hi-from-cm FILE=hi-from-cm"), "{logs}");
    c.ok(&["delete", "pod", "web", "--timeout=60s"]);
    let (found, out) = c.kubectl(&["get", "pod", "web"]);
    assert!(!found && out.contains("NotFound"), "{out}");
    drop(kubelet);
    drop(ctd);
}

#[test]
fn sim_kubelet_joins_with_a_bootstrap_token() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let api = ApiServerProc::start(StoreKind::Kumo, dir, &[]).expect("apiserver");
    // The controllers that approve and sign kubelet client CSRs and publish cluster-info.
    let cm_log = std::fs::File::create(dir.join("controller-manager.log")).expect("log");
    let _cm = KubeletProc {
        child: Some(
            Command::new(kumo_bin())
                .arg("controller-manager")
                .arg("--kubeconfig")
                .arg(&api.kubeconfig)
                .args([
                    "--leader-elect",
                    "false",
                    "--port",
                    &kumo_tests::free_port().to_string(),
                ])
                .args([
                    "--controllers",
                    "csrapproving,csrsigning,bootstrapsigner,tokencleaner",
                ])
                .arg("--cluster-signing-cert-file")
                .arg(api.cert_dir.join("ca.crt"))
                .arg("--cluster-signing-key-file")
                .arg(api.cert_dir.join("ca.key"))
                .stdin(Stdio::null())
                .stdout(cm_log.try_clone().expect("log"))
                .stderr(cm_log)
                .spawn()
                .expect("spawn controller-manager"),
        ),
        log: dir.join("controller-manager.log"),
    };
    let out = Command::new(kumo_bin())
        .args(["token", "create", "--kubeconfig"])
        .arg(&api.kubeconfig)
        .arg("--print-join-command")
        .output()
        .expect("kumo token create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let join = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let words: Vec<&str> = join.split_whitespace().collect();
    assert_eq!(words[..2], ["kumo", "kubelet"], "{join}");
    // Run the printed join command (plus this node's local settings).
    let root = dir.join("joined");
    let log = dir.join("kubelet-joined.log");
    let logf = std::fs::File::create(&log).expect("log");
    let kubelet = KubeletProc {
        child: Some(
            Command::new(kumo_bin())
                .args(&words[1..])
                .args([
                    "--hostname-override",
                    "joined",
                    "--container-runtime",
                    "sim",
                ])
                .args(["--port", &kumo_tests::free_port().to_string()])
                .args(["--healthz-port", "0", "--node-ip", "127.0.0.1"])
                .arg("--root-dir")
                .arg(&root)
                .stdin(Stdio::null())
                .stdout(logf.try_clone().expect("log"))
                .stderr(logf)
                .spawn()
                .expect("spawn kumo kubelet"),
        ),
        log,
    };
    let c = Cluster { api: &api, dir };
    c.wait_for("node/joined", &kubelet, "Ready=True", |n| {
        condition(n, "Ready").is_some_and(|r| r["status"] == "True")
    });
    // It runs with its own node identity from the signed CSR.
    let kubeconfig = std::fs::read_to_string(root.join("kubelet.conf")).expect("kubelet.conf");
    assert!(kubeconfig.contains("client-certificate"), "{kubeconfig}");
    let csrs = c.ok(&["get", "csr", "-o", "jsonpath={.items[*].spec.username}"]);
    assert!(csrs.contains("system:bootstrap:"), "{csrs}");
    c.apply("jp", pod("jp", "joined", json!({}), json!({})));
    c.wait_for("pod/jp", &kubelet, "Running", |p| {
        p["status"]["phase"] == "Running"
    });

    // serverTLSBootstrap: the joined kubelet asks for a serving certificate; once an admin
    // approves it, the apiserver (which verifies kubelets against the cluster CA) reaches
    // the kubelet API: kubectl logs works.
    let deadline = Instant::now() + Duration::from_secs(30);
    let serving_csr = loop {
        let names = c.ok(&[
            "get",
            "csr",
            "-o",
            "jsonpath={range .items[?(@.spec.signerName==\"kubernetes.io/kubelet-serving\")]}{.metadata.name}{\"\\n\"}{end}",
        ]);
        if let Some(n) = names.lines().find(|l| !l.trim().is_empty()) {
            break n.trim().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no kubelet-serving CSR\n{}",
            tail(&kubelet.log_text(), 20)
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    c.ok(&["certificate", "approve", &serving_csr]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, out) = c.kubectl(&["logs", "jp"]);
        if ok && out.contains("sim container c") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "kubectl logs never worked: {out}\n{}",
            tail(&kubelet.log_text(), 20)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
