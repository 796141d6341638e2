//! Issue 5's acceptance on `kumo up`: real nodes run real pods, driven by real kubectl.
//!
//! One local cluster (`kumo up --detach --nodes 2 --runtime process`) serves every check in
//! order, since starting one is the slow part: a busybox `httpd` Deployment (Running, Ready,
//! `kubectl logs`, `kubectl exec … wget`), a killed container process restarted, a failing
//! liveness probe restarting its container, a memory limit enforced (`OOMKilled`), ConfigMap
//! and Secret contents in files and env with a ConfigMap update reaching the file, and node
//! loss moving pods away. `cri_*` runs the Deployment part on containerd + runc.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use kumo_tests::{free_port, kubectl_bin, kumo_bin, output_text as text};

/// The image every pod here runs: Debian's busybox-static with its applets.
const IMAGE: &str = "kumo.test/busybox:1";

struct Cluster {
    data: PathBuf,
    kubeconfig: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(kumo_bin())
            .args(["down", "--data-dir"])
            .arg(&self.data)
            .output();
    }
}

fn kumo(args: &[&str]) -> String {
    let out = Command::new(kumo_bin())
        .args(args)
        .output()
        .expect("run kumo");
    assert!(out.status.success(), "kumo {args:?} failed: {}", text(&out));
    text(&out)
}

impl Cluster {
    fn up(runtime: &str, extra: &[&str]) -> Cluster {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("kumo");
        let d = data.to_str().expect("utf-8 path").to_string();
        let ports = [free_port(), free_port(), free_port(), free_port()];
        let mut args = vec![
            "up".to_string(),
            "--detach".into(),
            "--members".into(),
            "0".into(),
            "--data-dir".into(),
            d.clone(),
            "--nodes".into(),
            "2".into(),
            "--runtime".into(),
            runtime.into(),
            "--store-port".into(),
            ports[0].to_string(),
            "--store-metrics-port".into(),
            ports[1].to_string(),
            "--apiserver-port".into(),
            ports[2].to_string(),
            "--kubelet-port".into(),
            ports[3].to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let c = Cluster {
            kubeconfig: data.join("kubeconfig"),
            data,
            _tmp: tmp,
        };
        let out = kumo(&argv);
        assert!(out.contains("KUBECONFIG="), "{out}");
        c
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(kubectl_bin("1.33"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .expect("kubectl")
    }

    /// kubectl that must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}\n{}",
            text(&out),
            self.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn apply(&self, yaml: &str) {
        let dir = self.data.join("manifests");
        std::fs::create_dir_all(&dir).expect("manifests dir");
        let f = dir.join(format!("{}.yaml", rand_suffix()));
        std::fs::write(&f, yaml).expect("write manifest");
        self.ok(&["apply", "-f", f.to_str().expect("utf-8")]);
    }

    /// jsonpath of one object, "" when it does not exist (yet).
    fn get(&self, what: &[&str], jsonpath: &str) -> String {
        let mut args = vec!["get"];
        args.extend_from_slice(what);
        let jp = format!("jsonpath={jsonpath}");
        args.extend_from_slice(&["-o", &jp]);
        let out = self.kubectl(&args);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Polls `check` until it returns Some, or fails with `what` and the component logs.
    fn until<T>(&self, what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = check() {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The tail of every component log, for failure messages.
    fn logs(&self) -> String {
        let mut s = String::new();
        if let Ok(entries) = std::fs::read_dir(self.data.join("logs")) {
            for e in entries.flatten() {
                let body = std::fs::read_to_string(e.path()).unwrap_or_default();
                let tail: Vec<&str> = body.lines().rev().take(25).collect();
                s.push_str(&format!("--- {}\n", e.path().display()));
                for l in tail.iter().rev() {
                    s.push_str(l);
                    s.push('\n');
                }
            }
        }
        s
    }

    fn import_image(&self, tar: &Path) {
        kumo(&[
            "image",
            "import",
            tar.to_str().expect("utf-8"),
            "--data-dir",
            self.data.to_str().expect("utf-8"),
        ]);
    }

    fn wait_nodes_ready(&self, n: usize) {
        self.until("nodes Ready", Duration::from_secs(60), || {
            let ready = self.get(
                &["nodes"],
                r#"{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{" "}{end}"#,
            );
            (ready.split_whitespace().filter(|s| *s == "True").count() >= n).then_some(())
        });
    }

    fn pod_names(&self, selector: &str) -> Vec<String> {
        self.get(
            &["pods", "-l", selector],
            r#"{range .items[*]}{.metadata.name}{" "}{end}"#,
        )
        .split_whitespace()
        .map(str::to_string)
        .collect()
    }

    fn restart_count(&self, pod: &str) -> u32 {
        self.get(&["pod", pod], "{.status.containerStatuses[0].restartCount}")
            .parse()
            .unwrap_or(0)
    }
}

fn rand_suffix() -> String {
    format!("{:x}", rand::random::<u64>())
}

fn busybox_tar(dir: &Path) -> PathBuf {
    kumo_tests::images::busybox_image_tar(dir, IMAGE, &["sh"]).expect("build busybox image")
}

/// Whether this machine can run the process runtime for real (root, namespaces, busybox).
#[allow(clippy::print_stderr)]
fn can_run_pods(test: &str) -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false);
    if !root {
        eprintln!("skipping {test}: the process runtime needs root for namespaces and cgroups");
        return false;
    }
    kumo_tests::require_tool(
        &kumo_tests::images::busybox_bin(),
        "busybox-static",
        "KUMO_BUSYBOX",
        test,
    )
}

const WEB: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: www}
data:
  index.html: "hello from kumo"
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 5
      tolerations:
      - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 5}
      - {key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute, tolerationSeconds: 5}
      containers:
      - name: httpd
        image: IMAGE
        command: ["sh", "-c", "echo serving on 8080; exec httpd -f -v -p 8080 -h /www"]
        ports: [{containerPort: 8080}]
        readinessProbe:
          httpGet: {path: /, port: 8080}
          periodSeconds: 1
        volumeMounts: [{name: www, mountPath: /www}]
      volumes: [{name: www, configMap: {name: www}}]
"#;

/// The Deployment part of acceptance 1 (also run on containerd): Running + Ready pods,
/// logs, exec.
fn deployment_serves(c: &Cluster) {
    c.apply(&WEB.replace("IMAGE", IMAGE));
    c.ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    let pods = c.pod_names("app=web");
    assert_eq!(pods.len(), 2, "{pods:?}");
    for p in &pods {
        assert_eq!(c.get(&["pod", p], "{.status.phase}"), "Running");
        assert_eq!(
            c.get(
                &["pod", p],
                r#"{.status.conditions[?(@.type=="Ready")].status}"#
            ),
            "True"
        );
        assert!(!c.get(&["pod", p], "{.status.podIP}").is_empty());
    }
    let logs = c.ok(&["logs", &pods[0]]);
    assert!(logs.contains("serving on 8080"), "kubectl logs: {logs}");
    let got = c.ok(&["exec", &pods[0], "--", "wget", "-qO-", "localhost:8080"]);
    assert_eq!(got.trim(), "hello from kumo");
    // exec propagates the exit code
    let out = c.kubectl(&["exec", &pods[0], "--", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
}

#[test]
fn up_process_runtime_workloads() {
    if !can_run_pods("up_process_runtime_workloads") {
        return;
    }
    let c = Cluster::up("process", &[]);
    let img_dir = tempfile::tempdir().expect("tempdir");
    c.import_image(&busybox_tar(img_dir.path()));
    c.wait_nodes_ready(2);

    // 1. A Deployment of busybox httpd: Running, Ready, logs, exec.
    deployment_serves(&c);

    // 1b. Killing the container's process restarts it.
    c.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: victim}}
spec:
  containers:
  - name: c
    image: {IMAGE}
    command: ["sh", "-c", "while true; do sleep 1; done", "kumo-victim-marker"]
"#
    ));
    c.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/victim",
        "--timeout=60s",
    ]);
    let before = c.restart_count("victim");
    let killed = Command::new("pkill")
        .args(["-KILL", "-f", "kumo-victim-marker"])
        .status()
        .expect("pkill");
    assert!(killed.success(), "the container process was not found");
    c.until("victim restarted", Duration::from_secs(60), || {
        (c.restart_count("victim") > before).then_some(())
    });
    assert_eq!(
        c.get(
            &["pod", "victim"],
            "{.status.containerStatuses[0].lastState.terminated.exitCode}"
        ),
        "137"
    );

    // 1c. A failing liveness probe restarts the container.
    c.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: liveness}}
spec:
  containers:
  - name: c
    image: {IMAGE}
    command: ["sh", "-c", "touch /tmp/healthy; sleep 3; rm /tmp/healthy; sleep 3600"]
    livenessProbe:
      exec: {{command: ["cat", "/tmp/healthy"]}}
      periodSeconds: 1
      failureThreshold: 2
"#
    ));
    c.until("liveness restart", Duration::from_secs(60), || {
        (c.restart_count("liveness") >= 1).then_some(())
    });
    let events = c.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=liveness",
        "-o",
        "jsonpath={.items[*].message}",
    ]);
    assert!(events.contains("failed liveness probe"), "events: {events}");

    // 1d. A memory limit is enforced: OOMKilled.
    c.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: hog}}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: {IMAGE}
    command: ["sh", "-c", "tail /dev/zero"]
    resources: {{limits: {{memory: 32Mi}}}}
"#
    ));
    let reason = c.until("OOMKilled", Duration::from_secs(60), || {
        let r = c.get(
            &["pod", "hog"],
            "{.status.containerStatuses[0].state.terminated.reason}",
        );
        (!r.is_empty()).then_some(r)
    });
    assert_eq!(reason, "OOMKilled");
    assert_eq!(c.get(&["pod", "hog"], "{.status.phase}"), "Failed");

    // 2. ConfigMap and Secret in files and env; a ConfigMap update reaches the file.
    c.ok(&[
        "create",
        "configmap",
        "app",
        "--from-literal=greeting=hello",
    ]);
    c.ok(&[
        "create",
        "secret",
        "generic",
        "creds",
        "--from-literal=password=s3cret",
    ]);
    c.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: consumer}}
spec:
  containers:
  - name: c
    image: {IMAGE}
    command: ["sleep", "3600"]
    env:
    - name: GREETING
      valueFrom: {{configMapKeyRef: {{name: app, key: greeting}}}}
    - name: PASSWORD
      valueFrom: {{secretKeyRef: {{name: creds, key: password}}}}
    - name: MY_POD
      valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
    volumeMounts:
    - {{name: cfg, mountPath: /etc/app}}
    - {{name: sec, mountPath: /etc/creds, readOnly: true}}
  volumes:
  - {{name: cfg, configMap: {{name: app}}}}
  - {{name: sec, secret: {{secretName: creds}}}}
"#
    ));
    c.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/consumer",
        "--timeout=60s",
    ]);
    let env = c.ok(&["exec", "consumer", "--", "env"]);
    for want in ["GREETING=hello", "PASSWORD=s3cret", "MY_POD=consumer"] {
        assert!(env.contains(want), "{want} missing from env: {env}");
    }
    assert_eq!(
        c.ok(&["exec", "consumer", "--", "cat", "/etc/app/greeting"]),
        "hello"
    );
    assert_eq!(
        c.ok(&["exec", "consumer", "--", "cat", "/etc/creds/password"]),
        "s3cret"
    );
    c.ok(&[
        "patch",
        "configmap",
        "app",
        "--type=merge",
        "-p",
        r#"{"data":{"greeting":"bonjour"}}"#,
    ]);
    c.until(
        "ConfigMap update in the file",
        Duration::from_secs(90),
        || {
            let out = c.kubectl(&["exec", "consumer", "--", "cat", "/etc/app/greeting"]);
            (String::from_utf8_lossy(&out.stdout) == "bonjour").then_some(())
        },
    );

    // 4. Node loss: a frozen kubelet stops heartbeating; its node goes NotReady and its web
    // pods are recreated on the other node.
    let victim_node = c.get(&["pod", &c.pod_names("app=web")[0]], "{.spec.nodeName}");
    let pid_file = c
        .data
        .join("run")
        .join(format!("kubelet-{}.pid", node_index(&victim_node)));
    let pid = std::fs::read_to_string(&pid_file)
        .unwrap_or_else(|e| panic!("{}: {e}", pid_file.display()))
        .trim()
        .to_string();
    // SIGSTOP: the supervisor sees no exit (so it does not restart it), like a lost host.
    assert!(
        Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let _cont = Resume(pid.clone());
    c.until("node NotReady", Duration::from_secs(120), || {
        let s = c.get(
            &["node", &victim_node],
            r#"{.status.conditions[?(@.type=="Ready")].status}"#,
        );
        (s == "Unknown" || s == "False").then_some(())
    });
    c.until(
        "web pods moved off the lost node",
        Duration::from_secs(120),
        || {
            let nodes = c.get(
                &[
                    "pods",
                    "-l",
                    "app=web",
                    "--field-selector",
                    "status.phase=Running",
                ],
                r#"{range .items[*]}{.spec.nodeName}{"/"}{.metadata.deletionTimestamp}{" "}{end}"#,
            );
            let live: Vec<&str> = nodes
                .split_whitespace()
                .filter(|s| s.ends_with('/'))
                .collect();
            (live.len() >= 2
                && live
                    .iter()
                    .all(|s| !s.starts_with(&format!("{victim_node}/"))))
            .then_some(())
        },
    );
}

/// `kumo up` names its nodes `kumo-node-<i>`; the pid file is `kubelet-<i>.pid`.
fn node_index(node: &str) -> String {
    node.rsplit('-').next().unwrap_or(node).to_string()
}

/// Resumes a SIGSTOPped kubelet so `kumo down` can stop it.
struct Resume(String);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.0]).status();
    }
}
