//! The kubectl matrix: every kubectl 1.27–1.33 drives kumo apiserver (on kumo store and on a
//! real etcd 3.4) through the everyday commands, and each answer is checked.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kumo_tests::{ApiServerProc, StoreKind, kubectl_bin};

struct K<'a> {
    api: &'a ApiServerProc,
    version: &'a str,
}

impl K<'_> {
    fn run(&self, args: &[&str]) -> (bool, String, String) {
        let out = self.api.kubectl(self.version, args).expect("run kubectl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs and requires success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run(args);
        assert!(
            ok,
            "kubectl {} {:?} failed:\nstdout: {out}\nstderr: {err}\napiserver log tail:\n{}",
            self.version,
            args,
            tail(&self.api.log_text(), 40)
        );
        out
    }

    fn jsonpath(&self, args: &[&str], path: &str) -> String {
        let mut a: Vec<&str> = args.to_vec();
        let p = format!("jsonpath={path}");
        a.extend(["-o", p.as_str()]);
        self.ok(&a)
    }

    /// Extra flags for commands that validate: none. kubectl 1.29+ validate with OpenAPI v3
    /// and server-side field validation, 1.27/1.28 with OpenAPI v2 in protobuf; kumo serves
    /// both, so no version needs `--validate=false`.
    fn validate_args(&self) -> Vec<&'static str> {
        Vec::new()
    }
}

fn minor(v: &str) -> u32 {
    v.split('.')
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or(0)
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: kt
  labels:
    app: web
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: web
        image: busybox:1.36
        command: ["httpd", "-f", "-p", "8080"]
        ports:
        - containerPort: 8080
        env:
        - name: A
          value: "1"
"#;

const CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
    - {name: Phase, type: string, jsonPath: .status.phase}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {type: integer, minimum: 1}
              color: {type: string, enum: [red, blue]}
          status:
            type: object
            properties:
              phase: {type: string}
"#;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write manifest");
    p.display().to_string()
}

/// Waits (up to `timeout`) for a line matching `pred` from a child's stdout.
fn wait_line(
    rx: &mpsc::Receiver<String>,
    timeout: Duration,
    pred: impl Fn(&str) -> bool,
) -> Option<String> {
    let deadline = Instant::now() + timeout;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(l) if pred(&l) => return Some(l),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
    None
}

fn flow(kind: StoreKind, version: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let api = ApiServerProc::start(kind, dir.path(), &[]).expect("start apiserver");
    let k = K { api: &api, version };
    let files = dir.path();

    // cluster-info and discovery
    let info = k.ok(&["cluster-info"]);
    assert!(
        info.contains("is running at") && info.contains(&api.url()),
        "{info}"
    );
    let resources = k.ok(&["api-resources"]);
    for needle in [
        "deployments",
        "deploy",
        "apps/v1",
        "configmaps",
        "namespaces",
        "customresourcedefinitions",
        "leases",
    ] {
        assert!(
            resources.contains(needle),
            "api-resources lacks {needle}:\n{resources}"
        );
    }
    let version_out = k.ok(&["version", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&version_out).expect("version json");
    assert_eq!(v["serverVersion"]["major"], "1");

    // namespaces, configmaps, secrets
    k.ok(&["create", "namespace", "kt"]);
    assert_eq!(
        k.jsonpath(&["get", "ns", "kt"], "{.status.phase}"),
        "Active"
    );
    let out = k.ok(&[
        "create",
        "configmap",
        "cm1",
        "-n",
        "kt",
        "--from-literal=a=1",
    ]);
    assert!(out.contains("configmap/cm1 created"), "{out}");
    assert_eq!(
        k.jsonpath(&["get", "cm", "cm1", "-n", "kt"], "{.data.a}"),
        "1"
    );
    k.ok(&[
        "create",
        "secret",
        "generic",
        "s1",
        "-n",
        "kt",
        "--from-literal=p=x",
    ]);
    assert_eq!(
        k.jsonpath(&["get", "secret", "s1", "-n", "kt"], "{.data.p}"),
        "eA=="
    );
    let (ok, _, err) = k.run(&["create", "namespace", "kt"]);
    assert!(
        !ok && err.contains("AlreadyExists") || err.contains("already exists"),
        "{err}"
    );
    // Maps of quantities and acronym-named fields (1.32+ send these as protobuf).
    k.ok(&[
        "create",
        "quota",
        "q",
        "-n",
        "kt",
        "--hard=pods=50,secrets=9",
    ]);
    assert_eq!(
        k.jsonpath(&["get", "quota", "q", "-n", "kt"], "{.spec.hard.secrets}"),
        "9"
    );
    k.ok(&[
        "create",
        "clusterrole",
        "logs-reader",
        "--verb=get",
        "--non-resource-url=/logs",
    ]);
    assert_eq!(
        k.jsonpath(
            &["get", "clusterrole", "logs-reader"],
            "{.rules[0].nonResourceURLs[0]}"
        ),
        "/logs"
    );
    k.ok(&["delete", "clusterrole", "logs-reader"]);

    // apply: create, then update a changed manifest
    let path = write(files, "deploy.yaml", DEPLOYMENT);
    let mut args = vec!["apply", "-f", path.as_str()];
    args.extend(k.validate_args());
    let out = k.ok(&args);
    assert!(out.contains("deployment.apps/web created"), "{out}");
    let changed = DEPLOYMENT
        .replace("busybox:1.36", "busybox:1.37")
        .replace("value: \"1\"", "value: \"2\"");
    let path2 = write(files, "deploy2.yaml", &changed);
    let mut args = vec!["apply", "-f", path2.as_str()];
    args.extend(k.validate_args());
    let out = k.ok(&args);
    assert!(out.contains("deployment.apps/web configured"), "{out}");
    assert_eq!(
        k.jsonpath(
            &["get", "deploy", "web", "-n", "kt"],
            "{.spec.template.spec.containers[0].image}"
        ),
        "busybox:1.37"
    );
    assert_eq!(
        k.jsonpath(
            &["get", "deploy", "web", "-n", "kt"],
            "{.spec.template.spec.containers[0].env[0].value}"
        ),
        "2"
    );
    // server-side apply
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\n  namespace: kt\ndata:\n  k: one\n";
    let p = write(files, "ssa.yaml", cm);
    let mut args = vec!["apply", "--server-side", "-f", p.as_str()];
    args.extend(k.validate_args());
    let out = k.ok(&args);
    assert!(out.contains("configmap/ssa serverside-applied"), "{out}");
    let p = write(files, "ssa2.yaml", &cm.replace("k: one", "k: two"));
    let mut args = vec!["apply", "--server-side", "-f", p.as_str()];
    args.extend(k.validate_args());
    k.ok(&args);
    assert_eq!(
        k.jsonpath(&["get", "cm", "ssa", "-n", "kt"], "{.data.k}"),
        "two"
    );
    let managers = k.jsonpath(
        &["get", "cm", "ssa", "-n", "kt", "--show-managed-fields"],
        "{.metadata.managedFields[*].manager}",
    );
    assert!(managers.contains("kubectl"), "{managers}");

    // get in every output format
    k.ok(&["get", "nodes"]);
    k.ok(&["get", "pods", "-A"]);
    let wide = k.ok(&["get", "deploy", "-n", "kt", "-o", "wide"]);
    assert!(
        wide.contains("web") && wide.contains("READY") && wide.contains("busybox:1.37"),
        "{wide}"
    );
    let yaml = k.ok(&["get", "deploy", "web", "-n", "kt", "-o", "yaml"]);
    assert!(
        yaml.contains("kind: Deployment") && yaml.contains("resourceVersion"),
        "{yaml}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&k.ok(&["get", "deploy", "web", "-n", "kt", "-o", "json"]))
            .expect("json");
    assert_eq!(json["spec"]["replicas"], 2);
    let table = k.ok(&["get", "cm", "-n", "kt"]);
    assert!(table.contains("DATA") && table.contains("cm1"), "{table}");

    // edit with an editor script
    let editor = write(
        files,
        "edit.sh",
        "#!/bin/sh\nsed -i -e 's/a: \"1\"/a: \"3\"/' \"$1\"\n",
    );
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let out = Command::new(kubectl_bin(version))
        .arg("--kubeconfig")
        .arg(&api.kubeconfig)
        .args(["edit", "cm", "cm1", "-n", "kt"])
        .args(k.validate_args())
        .env("EDITOR", &editor)
        .env("KUBE_EDITOR", &editor)
        .output()
        .expect("kubectl edit");
    assert!(
        out.status.success(),
        "edit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        k.jsonpath(&["get", "cm", "cm1", "-n", "kt"], "{.data.a}"),
        "3"
    );

    // label, annotate, scale, patch
    k.ok(&["label", "cm", "cm1", "-n", "kt", "env=test"]);
    k.ok(&["annotate", "cm", "cm1", "-n", "kt", "note=hi"]);
    assert_eq!(
        k.jsonpath(&["get", "cm", "cm1", "-n", "kt"], "{.metadata.labels.env}"),
        "test"
    );
    assert_eq!(
        k.jsonpath(
            &["get", "cm", "cm1", "-n", "kt"],
            "{.metadata.annotations.note}"
        ),
        "hi"
    );
    let sel = k.ok(&["get", "cm", "-n", "kt", "-l", "env=test", "-o", "name"]);
    assert_eq!(sel.trim(), "configmap/cm1");
    let out = k.ok(&["scale", "deploy", "web", "-n", "kt", "--replicas=3"]);
    assert!(out.contains("scaled"), "{out}");
    assert_eq!(
        k.jsonpath(&["get", "deploy", "web", "-n", "kt"], "{.spec.replicas}"),
        "3"
    );
    k.ok(&[
        "patch",
        "deploy",
        "web",
        "-n",
        "kt",
        "-p",
        r#"{"spec":{"replicas":4}}"#,
    ]);
    assert_eq!(
        k.jsonpath(&["get", "deploy", "web", "-n", "kt"], "{.spec.replicas}"),
        "4"
    );
    k.ok(&[
        "patch",
        "deploy",
        "web",
        "-n",
        "kt",
        "--type=merge",
        "-p",
        r#"{"metadata":{"labels":{"m":"1"}}}"#,
    ]);
    assert_eq!(
        k.jsonpath(
            &["get", "deploy", "web", "-n", "kt"],
            "{.metadata.labels.m}"
        ),
        "1"
    );
    k.ok(&[
        "patch",
        "deploy",
        "web",
        "-n",
        "kt",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/replicas","value":5}]"#,
    ]);
    assert_eq!(
        k.jsonpath(&["get", "deploy", "web", "-n", "kt"], "{.spec.replicas}"),
        "5"
    );
    let generation = k.jsonpath(
        &["get", "deploy", "web", "-n", "kt"],
        "{.metadata.generation}",
    );
    assert!(
        generation.parse::<i64>().unwrap_or(0) >= 5,
        "generation {generation}"
    );

    // describe
    let d = k.ok(&["describe", "deploy", "web", "-n", "kt"]);
    assert!(
        d.contains("Name:") && d.contains("web") && d.contains("Replicas:"),
        "{d}"
    );
    let d = k.ok(&["describe", "cm", "cm1", "-n", "kt"]);
    assert!(d.contains("env=test"), "{d}");

    // get -w sees events
    let mut child = Command::new(kubectl_bin(version))
        .arg("--kubeconfig")
        .arg(&api.kubeconfig)
        .args(["get", "cm", "-n", "kt", "-w", "--output-watch-events"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl get -w");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    assert!(
        wait_line(&rx, Duration::from_secs(20), |l| l.contains("cm1")).is_some(),
        "initial list not shown"
    );
    k.ok(&[
        "create",
        "configmap",
        "watched",
        "-n",
        "kt",
        "--from-literal=x=y",
    ]);
    let seen = wait_line(&rx, Duration::from_secs(20), |l| l.contains("watched"));
    k.ok(&["delete", "configmap", "watched", "-n", "kt"]);
    let deleted = wait_line(&rx, Duration::from_secs(20), |l| {
        l.contains("watched") && l.contains("DELETED")
    });
    let _ = child.kill();
    let _ = child.wait();
    let seen = seen.expect("watch did not show the new configmap");
    assert!(seen.contains("ADDED"), "{seen}");
    assert!(deleted.is_some(), "watch did not show the deletion");

    // explain (OpenAPI v3, kubectl 1.29+)
    if minor(version) >= 29 {
        let e = k.ok(&["explain", "deployment.spec.replicas"]);
        assert!(e.contains("replicas") && e.contains("integer"), "{e}");
    }

    // CustomResourceDefinitions: served as resources with schema validation, status
    // subresource and printer columns
    let p = write(files, "crd.yaml", CRD);
    k.ok(&["apply", "-f", &p]);
    k.ok(&[
        "wait",
        "--for",
        "condition=established",
        "--timeout=30s",
        "crd/widgets.example.com",
    ]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !k
        .ok(&["api-resources", "--api-group=example.com"])
        .contains("widgets")
    {
        assert!(
            Instant::now() < deadline,
            "widgets never showed up in discovery"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let w = "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w1, namespace: kt}\nspec: {size: 3, color: red}\n";
    let p = write(files, "w1.yaml", w);
    k.ok(&["apply", "-f", &p]);
    let p = write(
        files,
        "w2.yaml",
        &w.replace("w1", "w2").replace("size: 3", "size: 0"),
    );
    let (ok, _, err) = k.run(&["apply", "-f", &p]);
    assert!(!ok && err.contains("spec.size"), "schema validation: {err}");
    k.ok(&[
        "patch",
        "wd",
        "w1",
        "-n",
        "kt",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Ready"}}"#,
    ]);
    let table = k.ok(&["get", "wd", "-n", "kt"]);
    assert!(
        table.contains("SIZE") && table.contains("PHASE") && table.contains("Ready"),
        "{table}"
    );
    k.ok(&["delete", "crd", "widgets.example.com"]);

    // delete, with the cascade variants (orphan/foreground wait for the garbage collector,
    // which lives in the controller-manager: here only the marking is checked)
    let out = k.ok(&["delete", "cm", "cm1", "-n", "kt"]);
    assert!(out.contains("configmap \"cm1\" deleted"), "{out}");
    let (ok, _, err) = k.run(&["get", "cm", "cm1", "-n", "kt"]);
    assert!(!ok && err.contains("NotFound"), "{err}");
    k.ok(&[
        "create",
        "deployment",
        "bg",
        "-n",
        "kt",
        "--image=busybox:1.36",
    ]);
    let out = k.ok(&["delete", "deploy", "bg", "-n", "kt", "--cascade=background"]);
    assert!(out.contains("deleted"), "{out}");
    k.ok(&[
        "create",
        "deployment",
        "orph",
        "-n",
        "kt",
        "--image=busybox:1.36",
    ]);
    k.ok(&[
        "delete",
        "deploy",
        "orph",
        "-n",
        "kt",
        "--cascade=orphan",
        "--wait=false",
    ]);
    let fin = k.jsonpath(
        &["get", "deploy", "orph", "-n", "kt"],
        "{.metadata.finalizers}",
    );
    assert!(fin.contains("orphan"), "{fin}");
    k.ok(&[
        "delete",
        "deploy",
        "web",
        "-n",
        "kt",
        "--cascade=foreground",
        "--wait=false",
    ]);
    let fin = k.jsonpath(
        &["get", "deploy", "web", "-n", "kt"],
        "{.metadata.finalizers}",
    );
    assert!(fin.contains("foregroundDeletion"), "{fin}");
    let ts = k.jsonpath(
        &["get", "deploy", "web", "-n", "kt"],
        "{.metadata.deletionTimestamp}",
    );
    assert!(!ts.is_empty());
}

macro_rules! matrix {
    ($($name:ident: $kind:expr, $v:expr;)*) => {
        $(#[test]
        fn $name() {
            flow($kind, $v);
        })*
    };
}

matrix! {
    kubectl_1_27_kumo: StoreKind::Kumo, "1.27";
    kubectl_1_28_kumo: StoreKind::Kumo, "1.28";
    kubectl_1_29_kumo: StoreKind::Kumo, "1.29";
    kubectl_1_30_kumo: StoreKind::Kumo, "1.30";
    kubectl_1_31_kumo: StoreKind::Kumo, "1.31";
    kubectl_1_32_kumo: StoreKind::Kumo, "1.32";
    kubectl_1_33_kumo: StoreKind::Kumo, "1.33";
    kubectl_1_27_etcd: StoreKind::Etcd, "1.27";
    kubectl_1_28_etcd: StoreKind::Etcd, "1.28";
    kubectl_1_29_etcd: StoreKind::Etcd, "1.29";
    kubectl_1_30_etcd: StoreKind::Etcd, "1.30";
    kubectl_1_31_etcd: StoreKind::Etcd, "1.31";
    kubectl_1_32_etcd: StoreKind::Etcd, "1.32";
    kubectl_1_33_etcd: StoreKind::Etcd, "1.33";
}
