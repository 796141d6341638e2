//! kumo controller-manager end to end: a real apiserver + store, the controller-manager
//! running in-process (`kumo_controller_manager::run`, leader-elected), a stand-in kubelet
//! that marks pods Running/Ready (pods stay unscheduled: no scheduler or kubelet here), and
//! real kubectl 1.33 driving Deployments the way a user does: create, edit, rollout
//! history/undo, scale, delete with every cascade mode, delete a namespace.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use kumo_tests::{ApiServerProc, StoreKind, free_port, http_get};
use serde_json::json;

/// Images containing this never become Ready (to stall a rollout on purpose).
const NEVER_READY: &str = "never-ready";

struct Cluster {
    api: ApiServerProc,
    dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    client: kube::Client,
    metrics_port: u16,
}

impl Cluster {
    /// Apiserver, controller-manager (in-process) and the stand-in kubelet.
    fn start() -> Cluster {
        Self::start_with(|_| {})
    }

    /// Like [`start`](Self::start) with configuration changes.
    fn start_with(
        tweak: impl FnOnce(&mut kumo_controller_manager::ControllerManagerConfig),
    ) -> Cluster {
        kumo_config::init_logging(
            "info,kumo_controller_manager=debug,kumo_client=debug",
            kumo_config::LogFormat::Text,
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let api = ApiServerProc::start(StoreKind::Kumo, dir.path(), &[]).expect("start apiserver");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let metrics_port = free_port();
        let mut cfg = kumo_controller_manager::ControllerManagerConfig {
            kubeconfig: Some(api.kubeconfig.clone()),
            port: metrics_port,
            ..Default::default()
        };
        tweak(&mut cfg);
        rt.spawn(async move {
            if let Err(e) = kumo_controller_manager::run(cfg).await {
                tracing::error!(error = %e, "controller-manager stopped");
            }
        });
        let client = rt
            .block_on(kumo_client::client_from_kubeconfig(&api.kubeconfig))
            .expect("client");
        rt.spawn(fake_kubelet(client.clone()));
        Cluster {
            api,
            dir,
            rt,
            client,
            metrics_port,
        }
    }

    fn kubectl_env(&self, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
        let out = std::process::Command::new(kumo_tests::kubectl_bin("1.33"))
            .arg("--kubeconfig")
            .arg(&self.api.kubeconfig)
            .args(args)
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run kubectl");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    fn kubectl(&self, args: &[&str]) -> (bool, String) {
        self.kubectl_env(args, &[])
    }

    fn ok(&self, args: &[&str]) -> String {
        let (ok, out) = self.kubectl(args);
        assert!(ok, "kubectl {args:?} failed: {out}");
        out
    }

    fn apply(&self, name: &str, manifest: serde_json::Value) {
        let path = self.dir.path().join(format!("{name}.json"));
        std::fs::write(&path, manifest.to_string()).expect("write manifest");
        self.ok(&["apply", "-f", &path.display().to_string()]);
    }

    fn jsonpath(&self, args: &[&str], path: &str) -> String {
        let p = format!("jsonpath={path}");
        let mut a: Vec<&str> = args.to_vec();
        a.extend(["-o", &p]);
        self.kubectl(&a).1
    }

    /// Polls `check` until it returns `Some`, failing with `what` after `secs`.
    fn wait<T>(&self, what: &str, secs: u64, mut check: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = check() {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; pods:\n{}\nreplicasets:\n{}\ndeployments:\n{}",
                self.kubectl(&["get", "pods", "-A", "--show-labels"]).1,
                self.kubectl(&["get", "rs", "-A", "-o", "wide"]).1,
                self.kubectl(&["get", "deploy", "-A", "-o", "yaml"]).1,
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn pods(&self, ns: &str, selector: &str) -> Vec<Pod> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        self.rt
            .block_on(api.list(&ListParams::default().labels(selector)))
            .expect("list pods")
            .items
    }

    fn replica_sets(&self, ns: &str, selector: &str) -> Vec<ReplicaSet> {
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), ns);
        self.rt
            .block_on(api.list(&ListParams::default().labels(selector)))
            .expect("list replicasets")
            .items
    }

    /// Waits until the deployment reports `n` available replicas, all updated.
    fn wait_available(&self, ns: &str, name: &str, n: usize) {
        self.wait(
            &format!("deployment {ns}/{name} with {n} available replicas"),
            90,
            || {
                let out = self.jsonpath(
                    &["-n", ns, "get", "deployment", name],
                    "{.status.availableReplicas}/{.status.updatedReplicas}/{.status.replicas}",
                );
                (out == format!("{n}/{n}/{n}")).then_some(())
            },
        );
    }

    fn images(&self, ns: &str, selector: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .pods(ns, selector)
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| p.spec.as_ref()?.containers.first()?.image.clone())
            .collect();
        v.sort();
        v
    }
}

/// The revision numbers `kubectl rollout history` lists.
fn revisions(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|t| t.chars().all(|c| c.is_ascii_digit()))
        .map(str::to_string)
        .collect()
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// A stand-in kubelet: every unscheduled pod (not being deleted, image not `never-ready`)
/// becomes Running and Ready with a pod IP about 300 ms after it appears. Pods bound to a
/// node are left to the test (they stand for pods on the test's Node objects).
async fn fake_kubelet(client: kube::Client) {
    let next_ip = Arc::new(AtomicUsize::new(10));
    let mut handled = std::collections::HashSet::new();
    let api: Api<Pod> = Api::all(client.clone());
    let mut stream = std::pin::pin!(
        watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects()
    );
    while let Some(ev) = stream.next().await {
        let Ok(pod) = ev else { continue };
        let bound = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .is_some();
        // Only fresh pods: a Ready condition (True or one the test set False) is left alone.
        let has_ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready"));
        if pod.metadata.deletion_timestamp.is_some() || has_ready || bound {
            continue;
        }
        let image = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .and_then(|c| c.image.clone())
            .unwrap_or_default();
        if image.contains(NEVER_READY)
            || !handled.insert(pod.metadata.uid.clone().unwrap_or_default())
        {
            continue;
        }
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let n = next_ip.fetch_add(1, Ordering::SeqCst);
        let ip = format!("10.244.{}.{}", n / 250, n % 250 + 1);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let now = jiff::Timestamp::now()
                .strftime("%Y-%m-%dT%H:%M:%SZ")
                .to_string();
            let patch = json!({"status": {
                "phase": "Running",
                "podIP": ip,
                "podIPs": [{"ip": ip}],
                "conditions": [
                    {"type": "Ready", "status": "True", "lastTransitionTime": now},
                    {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                ],
            }});
            let _ = api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
        });
    }
}

#[test]
fn deployment_rollout_history_undo_scale_and_heal() {
    let c = Cluster::start();
    // The ServiceAccount controller makes `default` (pods are refused without it).
    c.wait("serviceaccount default/default", 30, || {
        c.kubectl(&["get", "serviceaccount", "default"])
            .0
            .then_some(())
    });
    c.ok(&[
        "create",
        "deployment",
        "nginx",
        "--image=nginx:1.25",
        "--replicas=3",
    ]);
    c.wait_available("default", "nginx", 3);

    // One ReplicaSet `nginx-<hash>`, revision 1, pods carrying the hash label.
    let rss = c.replica_sets("default", "app=nginx");
    assert_eq!(rss.len(), 1, "{rss:?}");
    let rs1 = &rss[0];
    let hash1 = rs1
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("pod-template-hash"))
        .cloned()
        .expect("hash label");
    assert_eq!(
        rs1.metadata.name.as_deref(),
        Some(format!("nginx-{hash1}").as_str())
    );
    assert!(
        hash1
            .bytes()
            .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b)),
        "{hash1}"
    );
    let ann = rs1.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        ann.get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("1")
    );
    assert_eq!(
        ann.get("deployment.kubernetes.io/desired-replicas")
            .map(String::as_str),
        Some("3")
    );
    assert_eq!(
        ann.get("deployment.kubernetes.io/max-replicas")
            .map(String::as_str),
        Some("4")
    );
    let owner = rs1.metadata.owner_references.clone().unwrap_or_default();
    assert!(
        owner
            .iter()
            .any(|o| o.kind == "Deployment" && o.name == "nginx" && o.controller == Some(true))
    );
    for p in c.pods("default", "app=nginx") {
        assert_eq!(
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("pod-template-hash")),
            Some(&hash1)
        );
        assert!(
            p.metadata
                .name
                .as_deref()
                .unwrap_or("")
                .starts_with(&format!("nginx-{hash1}-"))
        );
    }
    let status = c.jsonpath(
        &["get", "deployment", "nginx"],
        "{.status.conditions[*].reason}",
    );
    assert!(
        status.contains("MinimumReplicasAvailable") && status.contains("NewReplicaSetAvailable"),
        "{status}"
    );
    assert_eq!(c.jsonpath(&["get", "rs", &format!("nginx-{hash1}")], "{.status.fullyLabeledReplicas}/{.status.readyReplicas}/{.status.availableReplicas}/{.status.observedGeneration}"), "3/3/3/1");

    // Watch readiness while the image changes: a RollingUpdate of 3 replicas (25 %/25 %:
    // maxSurge 1, maxUnavailable 0) never has fewer than 3 ready pods.
    let min_ready = Arc::new(AtomicUsize::new(usize::MAX));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (client, min_ready, stop) = (c.client.clone(), min_ready.clone(), stop.clone());
        c.rt.spawn(async move {
            let api: Api<Pod> = Api::namespaced(client, "default");
            while !stop.load(Ordering::SeqCst) {
                if let Ok(list) = api.list(&ListParams::default().labels("app=nginx")).await {
                    let ready = list
                        .items
                        .iter()
                        .filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p))
                        .count();
                    min_ready.fetch_min(ready, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    // `kubectl edit` with an editor that rewrites the image.
    let (ok, out) = c.kubectl_env(
        &["edit", "deployment", "nginx"],
        &[("KUBE_EDITOR", "sed -i s#nginx:1.25#nginx:1.26#")],
    );
    assert!(ok, "kubectl edit: {out}");
    let out = c.ok(&["rollout", "status", "deployment/nginx", "--timeout=90s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    stop.store(true, Ordering::SeqCst);
    c.rt.block_on(sampler).expect("sampler");
    let min = min_ready.load(Ordering::SeqCst);
    assert!(
        min >= 3,
        "ready pods dropped to {min} during the rolling update"
    );
    assert_eq!(c.images("default", "app=nginx"), vec!["nginx:1.26"; 3]);
    let rss = c.replica_sets("default", "app=nginx");
    assert_eq!(rss.len(), 2, "old ReplicaSet kept for history");
    let events = c.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=nginx",
    ]);
    assert!(events.contains("ScalingReplicaSet"), "{events}");

    // History, revision 1, undo to revision 1.
    let hist = c.ok(&["rollout", "history", "deployment", "nginx"]);
    assert_eq!(revisions(&hist), vec!["1", "2"], "{hist}");
    let rev1 = c.ok(&[
        "rollout",
        "history",
        "deployment",
        "nginx",
        "--revision",
        "1",
    ]);
    assert!(
        rev1.contains("nginx:1.25") && rev1.contains(&hash1),
        "{rev1}"
    );
    c.ok(&[
        "rollout",
        "undo",
        "deployment",
        "nginx",
        "--to-revision",
        "1",
    ]);
    c.ok(&["rollout", "status", "deployment/nginx", "--timeout=90s"]);
    c.wait_available("default", "nginx", 3);
    assert_eq!(c.images("default", "app=nginx"), vec!["nginx:1.25"; 3]);
    let describe = c.ok(&["describe", "pods", "-l", "app=nginx"]);
    let image_lines: Vec<&str> = describe
        .lines()
        .filter(|l| l.to_lowercase().contains("image:"))
        .collect();
    assert!(
        !image_lines.is_empty() && image_lines.iter().all(|l| l.contains("nginx:1.25")),
        "{image_lines:?}"
    );
    // The revision-1 ReplicaSet was reused: revision 3 now, history "1".
    let ann = c
        .replica_sets("default", &format!("pod-template-hash={hash1}"))
        .first()
        .and_then(|r| r.metadata.annotations.clone())
        .unwrap_or_default();
    assert_eq!(
        ann.get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("3"),
        "{ann:?}\n{}\n{}",
        c.kubectl(&["get", "rs", "-o", "yaml"]).1,
        c.kubectl(&["get", "deploy", "-o", "yaml"]).1
    );
    assert_eq!(
        ann.get("deployment.kubernetes.io/revision-history")
            .map(String::as_str),
        Some("1"),
        "{ann:?}"
    );
    assert_eq!(
        c.jsonpath(
            &["get", "deployment", "nginx"],
            "{.metadata.annotations.deployment\\.kubernetes\\.io/revision}"
        ),
        "3"
    );
    let hist = c.ok(&["rollout", "history", "deployment", "nginx"]);
    assert_eq!(revisions(&hist), vec!["2", "3"], "{hist}");

    // Scale.
    c.ok(&["scale", "deployment", "nginx", "--replicas=5"]);
    c.wait_available("default", "nginx", 5);
    assert_eq!(
        c.replica_sets("default", &format!("pod-template-hash={hash1}"))[0]
            .spec
            .as_ref()
            .and_then(|s| s.replicas),
        Some(5)
    );

    // Self-healing: a deleted pod is replaced.
    let victim = c.pods("default", "app=nginx")[0]
        .metadata
        .name
        .clone()
        .expect("pod name");
    c.ok(&["delete", "pod", &victim]);
    c.wait("a replacement pod", 60, || {
        let pods = c.pods("default", "app=nginx");
        let live: Vec<_> = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        (live.len() == 5
            && live
                .iter()
                .all(|p| p.metadata.name.as_deref() != Some(victim.as_str())))
        .then_some(())
    });
    c.wait_available("default", "nginx", 5);

    // Leader election Lease and workqueue metrics.
    let leases: Api<Lease> = Api::namespaced(c.client.clone(), "kube-system");
    let lease =
        c.rt.block_on(leases.get("kube-controller-manager"))
            .expect("lease");
    let holder = lease
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default();
    assert!(
        holder.contains('_'),
        "holderIdentity {holder:?} is <hostname>_<uuid>"
    );
    let m = http_get(
        &format!("http://127.0.0.1:{}/metrics", c.metrics_port),
        Duration::from_secs(5),
    )
    .expect("metrics");
    for name in [
        "workqueue_adds_total{name=\"deployment\"}",
        "workqueue_depth{name=\"replicaset\"}",
        "workqueue_work_duration_seconds_bucket{name=\"deployment\"",
        "workqueue_queue_duration_seconds_count{name=\"replicaset\"}",
        "workqueue_retries_total{name=\"deployment\"}",
    ] {
        assert!(m.body.contains(name), "{name} missing from /metrics");
    }
    let h = http_get(
        &format!("http://127.0.0.1:{}/healthz", c.metrics_port),
        Duration::from_secs(5),
    )
    .expect("healthz");
    assert_eq!((h.status, h.body.as_str()), (200, "ok"));
}

#[test]
fn cascading_deletion_in_all_three_modes() {
    let c = Cluster::start();
    c.wait("serviceaccount default/default", 30, || {
        c.kubectl(&["get", "serviceaccount", "default"])
            .0
            .then_some(())
    });
    for name in ["bg", "fg", "orphan"] {
        c.ok(&[
            "create",
            "deployment",
            name,
            "--image=busybox",
            "--replicas=2",
        ]);
    }
    for name in ["bg", "fg", "orphan"] {
        c.wait_available("default", name, 2);
    }

    // Background (kubectl's default): the Deployment goes at once, the GC removes the rest.
    c.ok(&["delete", "deployment", "bg"]);
    c.wait("background cascade", 60, || {
        (c.replica_sets("default", "app=bg").is_empty() && c.pods("default", "app=bg").is_empty())
            .then_some(())
    });

    // Foreground: kubectl waits for the Deployment, which goes only after its dependents.
    let out = c.ok(&[
        "delete",
        "deployment",
        "fg",
        "--cascade=foreground",
        "--timeout=90s",
    ]);
    assert!(out.contains("deleted"), "{out}");
    assert!(
        c.replica_sets("default", "app=fg").is_empty(),
        "ReplicaSets outlived a foreground delete"
    );
    assert!(
        c.pods("default", "app=fg").is_empty(),
        "pods outlived a foreground delete"
    );

    // Orphan: the ReplicaSet and pods stay, without the owner reference.
    c.ok(&[
        "delete",
        "deployment",
        "orphan",
        "--cascade=orphan",
        "--timeout=90s",
    ]);
    assert!(!c.kubectl(&["get", "deployment", "orphan"]).0);
    std::thread::sleep(Duration::from_secs(2));
    let rss = c.replica_sets("default", "app=orphan");
    assert_eq!(rss.len(), 1, "orphaned ReplicaSet must survive");
    assert!(
        rss[0]
            .metadata
            .owner_references
            .as_ref()
            .is_none_or(|o| o.is_empty()),
        "{:?}",
        rss[0].metadata.owner_references
    );
    assert_eq!(
        c.pods("default", "app=orphan").len(),
        2,
        "orphaned ReplicaSet keeps its pods"
    );

    // Deleting the orphaned ReplicaSet in the background still takes its pods.
    let rs_name = rss[0].metadata.name.clone().expect("rs name");
    c.ok(&["delete", "rs", &rs_name]);
    c.wait("pods of the orphaned ReplicaSet", 60, || {
        c.pods("default", "app=orphan").is_empty().then_some(())
    });
}

#[test]
fn namespace_defaults_and_deletion() {
    let c = Cluster::start();
    c.ok(&["create", "namespace", "team"]);
    // Every namespace gets a default ServiceAccount and the root CA.
    c.wait("serviceaccount team/default", 30, || {
        c.kubectl(&["-n", "team", "get", "serviceaccount", "default"])
            .0
            .then_some(())
    });
    let ca = c.wait("kube-root-ca.crt", 30, || {
        let out = c.jsonpath(
            &["-n", "team", "get", "configmap", "kube-root-ca.crt"],
            "{.data.ca\\.crt}",
        );
        out.contains("BEGIN CERTIFICATE").then_some(out)
    });
    let pki_ca = kumo_client::kubeconfig_ca_pem(&c.api.kubeconfig)
        .expect("read kubeconfig")
        .expect("kubeconfig has a CA");
    assert_eq!(ca.trim(), pki_ca.trim());
    // A changed CA ConfigMap is put back.
    c.ok(&[
        "-n",
        "team",
        "patch",
        "configmap",
        "kube-root-ca.crt",
        "--type=merge",
        "-p",
        r#"{"data":{"ca.crt":"tampered"}}"#,
    ]);
    c.wait("kube-root-ca.crt restored", 30, || {
        c.jsonpath(
            &["-n", "team", "get", "configmap", "kube-root-ca.crt"],
            "{.data.ca\\.crt}",
        )
        .contains("BEGIN CERTIFICATE")
        .then_some(())
    });

    c.ok(&[
        "-n",
        "team",
        "create",
        "deployment",
        "web",
        "--image=nginx",
        "--replicas=2",
    ]);
    c.ok(&[
        "-n",
        "team",
        "create",
        "configmap",
        "settings",
        "--from-literal=a=b",
    ]);
    c.ok(&[
        "-n",
        "team",
        "create",
        "secret",
        "generic",
        "token",
        "--from-literal=t=x",
    ]);
    c.wait_available("team", "web", 2);
    let out = c.ok(&["delete", "namespace", "team", "--timeout=120s"]);
    assert!(out.contains("deleted"), "{out}");
    let (found, out) = c.kubectl(&["get", "namespace", "team"]);
    assert!(!found && out.contains("NotFound"), "{out}");
}

#[test]
fn recreate_pause_resume_and_progress_deadline() {
    let c = Cluster::start();
    c.wait("serviceaccount default/default", 30, || {
        c.kubectl(&["get", "serviceaccount", "default"])
            .0
            .then_some(())
    });
    let manifest = |image: &str, strategy: serde_json::Value, deadline: i64| {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "replicas": 3,
                "progressDeadlineSeconds": deadline,
                "revisionHistoryLimit": 1,
                "strategy": strategy,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": image}]}},
            }
        })
    };
    let recreate = json!({"type": "Recreate"});
    c.apply("web", manifest("busybox:1", recreate.clone(), 600));
    c.wait_available("default", "web", 3);

    // Recreate: the old pods are all gone before any new pod exists.
    let mixed = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (client, mixed, stop) = (c.client.clone(), mixed.clone(), stop.clone());
        c.rt.spawn(async move {
            let api: Api<Pod> = Api::namespaced(client, "default");
            while !stop.load(Ordering::SeqCst) {
                if let Ok(list) = api.list(&ListParams::default().labels("app=web")).await {
                    let images: std::collections::BTreeSet<String> = list
                        .items
                        .iter()
                        .filter_map(|p| p.spec.as_ref()?.containers.first()?.image.clone())
                        .collect();
                    if images.len() > 1 {
                        mixed.store(true, Ordering::SeqCst);
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    c.apply("web", manifest("busybox:2", recreate.clone(), 600));
    c.ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    stop.store(true, Ordering::SeqCst);
    c.rt.block_on(sampler).expect("sampler");
    assert!(
        !mixed.load(Ordering::SeqCst),
        "Recreate ran old and new pods at once"
    );
    assert_eq!(c.images("default", "app=web"), vec!["busybox:2"; 3]);

    // revisionHistoryLimit 1: after a third template only one old ReplicaSet stays.
    c.apply("web", manifest("busybox:3", recreate.clone(), 600));
    c.ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    c.wait("history cleanup", 30, || {
        (c.replica_sets("default", "app=web").len() == 2).then_some(())
    });

    // Pause: template changes do nothing until resumed.
    c.ok(&["rollout", "pause", "deployment/web"]);
    c.wait("DeploymentPaused", 30, || {
        c.jsonpath(
            &["get", "deployment", "web"],
            "{.status.conditions[?(@.type==\"Progressing\")].reason}",
        )
        .contains("DeploymentPaused")
        .then_some(())
    });
    c.ok(&["set", "image", "deployment/web", "c=busybox:4"]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(c.images("default", "app=web"), vec!["busybox:3"; 3]);
    // No ReplicaSet for the new template while paused (the idle old one beyond
    // revisionHistoryLimit is cleaned up, as upstream does for paused Deployments).
    let templates: Vec<String> = c
        .replica_sets("default", "app=web")
        .iter()
        .filter_map(|r| {
            r.spec
                .as_ref()?
                .template
                .as_ref()?
                .spec
                .as_ref()?
                .containers
                .first()?
                .image
                .clone()
        })
        .collect();
    assert_eq!(
        templates,
        vec!["busybox:3"],
        "no new ReplicaSet while paused"
    );
    c.ok(&["rollout", "resume", "deployment/web"]);
    c.ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    assert_eq!(c.images("default", "app=web"), vec!["busybox:4"; 3]);

    // Progress deadline: a template whose pods never become ready times out.
    c.apply(
        "web",
        manifest(
            &format!("busybox:{NEVER_READY}"),
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}),
            5,
        ),
    );
    let (ok, out) = c.kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(
        !ok && out.contains("exceeded its progress deadline"),
        "{out}"
    );
    let cond = c.jsonpath(
        &["get", "deployment", "web"],
        "{.status.conditions[?(@.type==\"Progressing\")].status}/{.status.conditions[?(@.type==\"Progressing\")].reason}",
    );
    assert_eq!(cond, "False/ProgressDeadlineExceeded");
    // maxUnavailable 0: the old pods all stay ready.
    let ready = c
        .pods("default", "app=web")
        .iter()
        .filter(|p| is_ready(p))
        .count();
    assert_eq!(ready, 3);
}

#[test]
fn leader_election_hands_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let api = ApiServerProc::start(StoreKind::Kumo, dir.path(), &[]).expect("start apiserver");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let client =
            kumo_client::client_from_kubeconfig_with_user_agent(&api.kubeconfig, "kumo-test/0.1.0")
                .await
                .expect("client");
        let fast = |id: &str| {
            let mut cfg = kumo_client::LeaderElectionConfig::new("kube-system", "le-test", id);
            cfg.lease_duration = Duration::from_secs(3);
            cfg.renew_deadline = Duration::from_secs(2);
            cfg.retry_period = Duration::from_millis(200);
            cfg
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<&'static str>();
        let (stop_a, stop_a_rx) = tokio::sync::oneshot::channel::<()>();
        let a = {
            let (client, tx) = (client.clone(), tx.clone());
            tokio::spawn(kumo_client::run_leader_elected_with(
                client,
                fast("a"),
                move || async move {
                    let _ = tx.send("a");
                    let _ = stop_a_rx.await;
                },
            ))
        };
        assert_eq!(rx.recv().await, Some("a"));
        let b = {
            let (client, tx) = (client.clone(), tx.clone());
            tokio::spawn(kumo_client::run_leader_elected_with(
                client,
                fast("b"),
                move || async move {
                    let _ = tx.send("b");
                    std::future::pending::<()>().await;
                },
            ))
        };
        // b must not lead while a renews.
        assert!(
            tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .is_err()
        );
        let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
        let spec = leases
            .get("le-test")
            .await
            .expect("lease")
            .spec
            .expect("spec");
        assert_eq!(spec.holder_identity.as_deref(), Some("a"));
        // a finishes its work and releases: b takes over promptly.
        let _ = stop_a.send(());
        a.await.expect("join a").expect("a ended while leading");
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("b took over");
        assert_eq!(got, Some("b"));
        let spec = leases
            .get("le-test")
            .await
            .expect("lease")
            .spec
            .expect("spec");
        assert_eq!(spec.holder_identity.as_deref(), Some("b"));
        assert_eq!(spec.lease_transitions, Some(1));
        // Someone else steals the Lease (an update b did not make): b stops its work.
        let mut lease = leases.get("le-test").await.expect("lease");
        if let Some(s) = lease.spec.as_mut() {
            s.holder_identity = Some("intruder".into());
            s.renew_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                jiff::Timestamp::now(),
            ));
            s.lease_duration_seconds = Some(600);
        }
        leases
            .replace("le-test", &Default::default(), &lease)
            .await
            .expect("steal lease");
        let res = tokio::time::timeout(Duration::from_secs(10), b)
            .await
            .expect("b stopped")
            .expect("join b");
        assert!(
            matches!(res, Err(kumo_client::Error::LeaderElectionLost { .. })),
            "{res:?}"
        );
    });
}

/// Renews the `kube-node-lease` Lease of each node in `nodes` every second while its flag is set.
async fn heartbeats(client: kube::Client, nodes: Vec<(String, Arc<AtomicBool>)>) {
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    loop {
        for (node, alive) in &nodes {
            if !alive.load(Ordering::SeqCst) {
                continue;
            }
            let now = jiff::Timestamp::now()
                .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
                .to_string();
            let lease = json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": node, "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": node, "leaseDurationSeconds": 40, "renewTime": now},
            });
            let _ = leases
                .patch(
                    node,
                    &PatchParams::apply("test-kubelet").force(),
                    &Patch::Apply(&lease),
                )
                .await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[test]
fn node_lifecycle_taints_and_evicts_after_toleration() {
    let c = Cluster::start_with(|cfg| {
        cfg.node_monitor_period = "1s".into();
        cfg.node_monitor_grace_period = "4s".into();
    });
    c.wait("serviceaccount default/default", 30, || {
        c.kubectl(&["get", "serviceaccount", "default"])
            .0
            .then_some(())
    });
    let _ = c.kubectl(&["create", "namespace", "kube-node-lease"]);
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let alive: Vec<(String, Arc<AtomicBool>)> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| (n.to_string(), Arc::new(AtomicBool::new(true))))
        .collect();
    for (n, _) in &alive {
        c.apply(n, json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": n, "labels": {"kubernetes.io/hostname": n}}}));
        let status = json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status", "lastHeartbeatTime": now, "lastTransitionTime": now}]}}).to_string();
        c.ok(&[
            "patch",
            "node",
            n,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status,
        ]);
    }
    c.rt.spawn(heartbeats(c.client.clone(), alive.clone()));

    // Pods on n2: one tolerating unreachable for 3 s, one with no toleration (300 s default),
    // and a Deployment's pod tolerating 2 s.
    let pod = |name: &str, tolerations: serde_json::Value| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
               "spec": {"nodeName": "n2", "tolerations": tolerations, "containers": [{"name": "c", "image": "busybox"}]}})
    };
    let unreachable = |secs: i64| json!([{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": secs}]);
    c.apply("short", pod("short", unreachable(3)));
    c.apply("patient", pod("patient", json!([])));
    c.apply("onn1", json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "onn1", "namespace": "default"},
               "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]}}));
    for p in ["short", "patient", "onn1"] {
        let st = json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}]}}).to_string();
        c.ok(&[
            "patch",
            "pod",
            p,
            "--subresource=status",
            "--type=merge",
            "-p",
            &st,
        ]);
    }
    c.apply("evictee", json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "evictee", "namespace": "default"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "evictee"}},
                 "template": {"metadata": {"labels": {"app": "evictee"}},
                              "spec": {"nodeName": "n2", "tolerations": unreachable(2), "containers": [{"name": "c", "image": "busybox"}]}}}}));
    c.wait("the deployment's pod on n2", 30, || {
        (c.pods("default", "app=evictee").len() == 1).then_some(())
    });
    let first = c.pods("default", "app=evictee")[0]
        .metadata
        .name
        .clone()
        .expect("name");

    // Healthy nodes stay untainted.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(c.jsonpath(&["get", "node", "n2"], "{.spec.taints}"), "");
    assert_eq!(
        c.jsonpath(
            &["get", "node", "n2"],
            "{.status.conditions[?(@.type==\"Ready\")].status}"
        ),
        "True"
    );

    // n2 stops heartbeating: Unknown after the 4 s grace, tainted, its pods NotReady.
    alive[1].1.store(false, Ordering::SeqCst);
    let stopped = Instant::now();
    c.wait("n2 Ready=Unknown", 30, || {
        let s = c.jsonpath(&["get", "node", "n2"], "{.status.conditions[?(@.type==\"Ready\")].status}/{.status.conditions[?(@.type==\"Ready\")].reason}");
        (s == "Unknown/NodeStatusUnknown").then_some(())
    });
    assert!(
        stopped.elapsed() >= Duration::from_secs(3),
        "marked Unknown before the grace period"
    );
    c.wait("unreachable taints on n2", 30, || {
        let t = c.jsonpath(
            &["get", "node", "n2"],
            "{range .spec.taints[*]}{.key}:{.effect} {end}",
        );
        (t.contains("node.kubernetes.io/unreachable:NoExecute")
            && t.contains("node.kubernetes.io/unreachable:NoSchedule"))
        .then_some(())
    });
    assert_eq!(
        c.jsonpath(
            &["get", "pod", "patient"],
            "{.status.conditions[?(@.type==\"Ready\")].status}"
        ),
        "False"
    );
    assert_eq!(
        c.jsonpath(&["get", "node", "n1"], "{.spec.taints}"),
        "",
        "n1 keeps heartbeating"
    );

    // Evictions after each pod's toleration; the default 300 s one stays.
    c.wait("short evicted", 30, || {
        c.jsonpath(&["get", "pod", "short"], "{.metadata.deletionTimestamp}")
            .contains('T')
            .then_some(())
    });
    assert_eq!(
        c.jsonpath(
            &["get", "pod", "short"],
            "{.status.conditions[?(@.type==\"DisruptionTarget\")].reason}"
        ),
        "DeletionByTaintManager"
    );
    c.wait("the deployment's pod evicted and replaced", 30, || {
        let pods = c.pods("default", "app=evictee");
        let evicted = pods.iter().any(|p| {
            p.metadata.name.as_deref() == Some(first.as_str())
                && p.metadata.deletion_timestamp.is_some()
        });
        let replacement = pods
            .iter()
            .any(|p| p.metadata.name.as_deref() != Some(first.as_str()));
        (evicted && replacement).then_some(())
    });
    assert_eq!(
        c.jsonpath(&["get", "pod", "patient"], "{.metadata.deletionTimestamp}"),
        "",
        "300 s default toleration"
    );
    assert_eq!(
        c.jsonpath(&["get", "pod", "onn1"], "{.metadata.deletionTimestamp}"),
        ""
    );

    // n2 comes back: the taints go.
    alive[1].1.store(true, Ordering::SeqCst);
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let status = json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status", "lastHeartbeatTime": now, "lastTransitionTime": now}]}}).to_string();
    c.ok(&[
        "patch",
        "node",
        "n2",
        "--subresource=status",
        "--type=merge",
        "-p",
        &status,
    ]);
    c.wait("taints removed from n2", 30, || {
        c.jsonpath(&["get", "node", "n2"], "{.spec.taints}")
            .is_empty()
            .then_some(())
    });
}

#[test]
fn endpoints_and_endpointslices_follow_pod_readiness() {
    let c = Cluster::start();
    c.wait("serviceaccount default/default", 30, || {
        c.kubectl(&["get", "serviceaccount", "default"])
            .0
            .then_some(())
    });
    c.apply("web", json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "nginx", "ports": [{"name": "http", "containerPort": 8080}]}]}}}}));
    c.apply("svc", json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default", "labels": {"tier": "fe"}},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}));
    c.wait_available("default", "web", 3);
    let ips: Vec<String> = {
        let mut v: Vec<String> = c
            .pods("default", "app=web")
            .iter()
            .filter_map(|p| p.status.as_ref()?.pod_ip.clone())
            .collect();
        v.sort();
        v
    };
    assert_eq!(ips.len(), 3);
    c.wait("endpoints with 3 ready addresses", 30, || {
        let out = c.jsonpath(
            &["get", "endpoints", "web"],
            "{.subsets[0].addresses[*].ip}|{.subsets[0].ports[0].port}|{.subsets[0].ports[0].name}",
        );
        (out == format!("{}|8080|http", ips.join(" "))).then_some(())
    });
    assert_eq!(
        c.jsonpath(&["get", "endpoints", "web"], "{.metadata.labels.tier}"),
        "fe"
    );
    c.wait("an EndpointSlice with 3 ready endpoints", 30, || {
        let out = c.jsonpath(&["get", "endpointslices", "-l", "kubernetes.io/service-name=web"], "{range .items[*]}{.addressType}|{.ports[0].port}|{range .endpoints[*]}{.addresses[0]}={.conditions.ready},{end}{end}");
        let want = format!("IPv4|8080|{}", ips.iter().map(|ip| format!("{ip}=true,")).collect::<String>());
        (out == want).then_some(())
    });
    let owner = c.jsonpath(&["get", "endpointslices", "-l", "kubernetes.io/service-name=web"], "{.items[0].metadata.ownerReferences[0].kind}/{.items[0].metadata.labels.endpointslice\\.kubernetes\\.io/managed-by}");
    assert_eq!(owner, "Service/endpointslice-controller.k8s.io");

    // One pod turns NotReady: it moves to notReadyAddresses and ready=false.
    let pods = c.pods("default", "app=web");
    let victim = pods
        .iter()
        .find(|p| p.status.as_ref().and_then(|s| s.pod_ip.as_deref()) == Some(ips[0].as_str()))
        .expect("pod");
    let name = victim.metadata.name.clone().expect("name");
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let st = json!({"status": {"conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": now}]}}).to_string();
    c.ok(&[
        "patch",
        "pod",
        &name,
        "--subresource=status",
        "--type=merge",
        "-p",
        &st,
    ]);
    c.wait("not-ready address", 30, || {
        let out = c.jsonpath(
            &["get", "endpoints", "web"],
            "{.subsets[0].notReadyAddresses[*].ip}|{.subsets[0].addresses[*].ip}",
        );
        (out == format!("{}|{} {}", ips[0], ips[1], ips[2])).then_some(())
    });
    c.wait("slice endpoint not ready", 30, || {
        let out = c.jsonpath(
            &[
                "get",
                "endpointslices",
                "-l",
                "kubernetes.io/service-name=web",
            ],
            "{range .items[*].endpoints[*]}{.addresses[0]}={.conditions.ready},{end}",
        );
        (out == format!("{}=false,{}=true,{}=true,", ips[0], ips[1], ips[2])).then_some(())
    });

    // The Service goes: so do its Endpoints and slices.
    c.ok(&["delete", "service", "web"]);
    c.wait("endpoints and slices gone", 30, || {
        let eps = c.kubectl(&["get", "endpoints", "web"]).0;
        let slices = c
            .kubectl(&[
                "get",
                "endpointslices",
                "-l",
                "kubernetes.io/service-name=web",
                "-o",
                "name",
            ])
            .1;
        (!eps && (slices.trim().is_empty() || slices.contains("No resources"))).then_some(())
    });
}

/// Patches a pod's phase (a stand-in kubelet finishing it), once the stand-in kubelet has
/// made it Running (so its patch cannot land afterwards).
fn finish_pod(c: &Cluster, ns: &str, name: &str, phase: &str) {
    c.wait(&format!("pod {name} running"), 30, || {
        (c.jsonpath(&["-n", ns, "get", "pod", name], "{.status.phase}") == "Running").then_some(())
    });
    let st = json!({"status": {"phase": phase}}).to_string();
    c.ok(&[
        "-n",
        ns,
        "patch",
        "pod",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        &st,
    ]);
}

#[test]
fn jobs_complete_and_fail_like_upstream() {
    let c = Cluster::start();
    c.wait("serviceaccount default/default", 30, || {
        c.kubectl(&["get", "serviceaccount", "default"])
            .0
            .then_some(())
    });
    // Two completions, one at a time.
    c.apply("pi", json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "pi", "namespace": "default"},
        "spec": {"completions": 2, "parallelism": 1, "template": {"metadata": {"labels": {"app": "pi"}},
                 "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}));
    for round in 0..2 {
        let pod = c.wait(&format!("job pod {round}"), 30, || {
            c.pods("default", "app=pi")
                .into_iter()
                .find(|p| !kumo_tests_is_terminated(p))
                .and_then(|p| p.metadata.name)
        });
        let p = &c
            .pods("default", "app=pi")
            .into_iter()
            .find(|p| p.metadata.name.as_deref() == Some(pod.as_str()))
            .expect("pod");
        let labels = p.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            labels
                .get("batch.kubernetes.io/job-name")
                .map(String::as_str),
            Some("pi")
        );
        assert!(
            p.metadata
                .finalizers
                .iter()
                .flatten()
                .any(|f| f == "batch.kubernetes.io/job-tracking"),
            "{}",
            c.kubectl(&["get", "pods", "-o", "yaml"]).1
        );
        assert_eq!(
            c.pods("default", "app=pi")
                .iter()
                .filter(|p| !kumo_tests_is_terminated(p))
                .count(),
            1,
            "parallelism 1"
        );
        finish_pod(&c, "default", &pod, "Succeeded");
        c.wait("the finished pod counted", 30, || {
            let s = c.jsonpath(&["get", "job", "pi"], "{.status.succeeded}");
            (s == (round + 1).to_string()).then_some(())
        });
    }
    c.ok(&[
        "wait",
        "--for=condition=complete",
        "job/pi",
        "--timeout=30s",
    ]);
    assert!(
        c.jsonpath(&["get", "job", "pi"], "{.status.completionTime}")
            .contains('T')
    );
    // Counted pods lose the tracking finalizer.
    for p in c.pods("default", "app=pi") {
        assert!(
            !p.metadata
                .finalizers
                .iter()
                .flatten()
                .any(|f| f == "batch.kubernetes.io/job-tracking"),
            "{:?}",
            p.metadata.finalizers
        );
    }

    // backoffLimit 0: the first failure fails the Job.
    c.apply("fail", json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "fail", "namespace": "default"},
        "spec": {"backoffLimit": 0, "template": {"metadata": {"labels": {"app": "fail"}},
                 "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}));
    let pod = c.wait("failing job pod", 30, || {
        c.pods("default", "app=fail")
            .first()
            .and_then(|p| p.metadata.name.clone())
    });
    finish_pod(&c, "default", &pod, "Failed");
    c.ok(&[
        "wait",
        "--for=condition=failed",
        "job/fail",
        "--timeout=30s",
    ]);
    assert_eq!(
        c.jsonpath(
            &["get", "job", "fail"],
            "{.status.conditions[?(@.type==\"Failed\")].reason}"
        ),
        "BackoffLimitExceeded"
    );
    assert_eq!(c.jsonpath(&["get", "job", "fail"], "{.status.failed}"), "1");

    // Indexed: one pod per index with its completion index.
    c.apply("idx", json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "idx", "namespace": "default"},
        "spec": {"completions": 3, "parallelism": 3, "completionMode": "Indexed", "template": {"metadata": {"labels": {"app": "idx"}},
                 "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}));
    let pods = c.wait("three indexed pods", 30, || {
        let p = c.pods("default", "app=idx");
        (p.len() == 3).then_some(p)
    });
    let mut idx: Vec<String> = pods
        .iter()
        .filter_map(|p| {
            p.metadata
                .annotations
                .as_ref()?
                .get("batch.kubernetes.io/job-completion-index")
                .cloned()
        })
        .collect();
    idx.sort();
    assert_eq!(idx, vec!["0", "1", "2"]);
    for p in &pods {
        finish_pod(
            &c,
            "default",
            p.metadata.name.as_deref().expect("name"),
            "Succeeded",
        );
    }
    c.ok(&[
        "wait",
        "--for=condition=complete",
        "job/idx",
        "--timeout=30s",
    ]);
    assert_eq!(
        c.jsonpath(&["get", "job", "idx"], "{.status.completedIndexes}"),
        "0-2"
    );
}

fn kumo_tests_is_terminated(p: &Pod) -> bool {
    matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

/// A pod whose deletion grace period has run out, which quota no longer counts.
fn deletion_grace_elapsed(p: &Pod) -> bool {
    match (
        p.metadata.deletion_timestamp.as_ref(),
        p.metadata.deletion_grace_period_seconds,
    ) {
        (Some(ts), Some(grace)) => {
            ts.0 + jiff::SignedDuration::from_secs(grace) < jiff::Timestamp::now()
        }
        _ => false,
    }
}

#[test]
fn cronjob_starts_jobs_on_schedule() {
    let c = Cluster::start();
    c.wait("serviceaccount default/default", 30, || {
        c.kubectl(&["get", "serviceaccount", "default"])
            .0
            .then_some(())
    });
    c.ok(&[
        "create",
        "cronjob",
        "tick",
        "--image=busybox",
        "--schedule=* * * * *",
    ]);
    // The next minute boundary starts `tick-<minutes since epoch>`.
    let job = c.wait("a job from the cronjob", 75, || {
        let out = c.jsonpath(&["get", "jobs"], "{.items[*].metadata.name}");
        out.split_whitespace()
            .find(|n| n.starts_with("tick-"))
            .map(str::to_string)
    });
    let minutes: i64 = job
        .trim_start_matches("tick-")
        .parse()
        .expect("minutes suffix");
    let now_min = jiff::Timestamp::now().as_second() / 60;
    assert!((now_min - minutes).abs() <= 1, "{job} vs {now_min}");
    assert_eq!(
        c.jsonpath(&["get", "job", &job], "{.metadata.ownerReferences[0].kind}"),
        "CronJob"
    );
    c.wait("cronjob status", 30, || {
        let s = c.jsonpath(
            &["get", "cronjob", "tick"],
            "{.status.active[0].name}|{.status.lastScheduleTime}",
        );
        (s.starts_with(&format!("{job}|")) && s.contains('T')).then_some(())
    });
}

#[test]
fn daemonset_statefulset_quota_and_aggregation() {
    let c = Cluster::start();
    c.wait("serviceaccount default/default", 30, || {
        c.kubectl(&["get", "serviceaccount", "default"])
            .0
            .then_some(())
    });
    // DaemonSet: one pod per eligible node (n2 has an untolerated taint).
    for n in ["n1", "n2"] {
        c.apply(
            n,
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": n}}),
        );
    }
    c.ok(&["taint", "node", "n2", "dedicated=gpu:NoSchedule"]);
    c.apply("ds", json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent", "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
                 "template": {"metadata": {"labels": {"app": "agent"}}, "spec": {"containers": [{"name": "c", "image": "agent:1"}]}}}}));
    c.wait("daemonset ready on n1", 30, || {
        let s = c.jsonpath(&["get", "ds", "agent"], "{.status.desiredNumberScheduled}/{.status.currentNumberScheduled}/{.status.numberReady}/{.status.updatedNumberScheduled}");
        (s == "1/1/1/1").then_some(())
    });
    let pods = c.pods("default", "app=agent");
    assert_eq!(pods.len(), 1);
    let terms = c.jsonpath(&["get", "pod", pods[0].metadata.name.as_deref().expect("name")], "{.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchFields[0].values[0]}");
    assert_eq!(terms, "n1");
    // Tolerating the taint adds n2; a new template rolls.
    c.apply("ds", json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent", "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
                 "template": {"metadata": {"labels": {"app": "agent"}}, "spec": {
                     "tolerations": [{"key": "dedicated", "operator": "Exists"}],
                     "containers": [{"name": "c", "image": "agent:2"}]}}}}));
    c.ok(&["rollout", "status", "ds/agent", "--timeout=60s"]);
    c.wait("two updated daemon pods", 30, || {
        (c.images("default", "app=agent") == vec!["agent:2"; 2]).then_some(())
    });
    let hist = c.ok(&["rollout", "history", "ds/agent"]);
    assert_eq!(revisions(&hist), vec!["1", "2"], "{hist}");

    // StatefulSet: ordered, stable names, claims.
    let sts = |image: &str, replicas: i64| {
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": "default"},
        "spec": {"replicas": replicas, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                 "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "c", "image": image}]}},
                 "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}})
    };
    c.apply("sts", sts("db:1", 3));
    c.ok(&["rollout", "status", "sts/db", "--timeout=60s"]);
    let mut pods = c.pods("default", "app=db");
    pods.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
    let names: Vec<String> = pods
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert_eq!(names, vec!["db-0", "db-1", "db-2"], "created in order");
    assert_eq!(c.jsonpath(&["get", "pod", "db-1"], "{.spec.hostname}.{.spec.subdomain}|{.metadata.labels.statefulset\\.kubernetes\\.io/pod-name}"), "db-1.db|db-1");
    assert_eq!(
        c.jsonpath(&["get", "pvc", "data-db-2"], "{.metadata.name}"),
        "data-db-2"
    );
    // A new image rolls from the highest ordinal down.
    c.apply("sts", sts("db:2", 3));
    c.ok(&["rollout", "status", "sts/db", "--timeout=60s"]);
    assert_eq!(c.images("default", "app=db"), vec!["db:2"; 3]);
    let rev = c.jsonpath(
        &["get", "sts", "db"],
        "{.status.currentRevision}|{.status.updateRevision}|{.status.updatedReplicas}",
    );
    let parts: Vec<&str> = rev.split('|').collect();
    assert!(
        parts.len() == 3 && parts[0] == parts[1] && parts[2] == "3",
        "{rev}"
    );
    // Scale down removes the highest ordinals.
    c.ok(&["scale", "sts/db", "--replicas=1"]);
    c.wait("db scaled to 1", 30, || {
        let names: Vec<String> = c
            .pods("default", "app=db")
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        (names == vec!["db-0"]).then_some(())
    });

    // ResourceQuota usage.
    c.apply("quota", json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q", "namespace": "default"},
        "spec": {"hard": {"pods": "20", "requests.cpu": "4", "requests.memory": "4Gi", "configmaps": "10", "count/deployments.apps": "5"}}}));
    c.apply("req", json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "req", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}}]}}));
    c.wait("quota usage", 60, || {
        let used = c.jsonpath(
            &["get", "resourcequota", "q"],
            "{.status.used.requests\\.cpu}|{.status.used.requests\\.memory}|{.status.hard.pods}",
        );
        (used == "250m|64Mi|20").then_some(())
    });
    // The quota counts the pods that are not terminal. Pods come and go here (the node
    // lifecycle evicts from the unreachable nodes), so the usage converges to the count.
    c.wait("quota pods usage matches the live pods", 60, || {
        let pods_used: usize = c
            .jsonpath(&["get", "resourcequota", "q"], "{.status.used.pods}")
            .parse()
            .ok()?;
        let live = c
            .pods("default", "")
            .iter()
            .filter(|p| !kumo_tests_is_terminated(p) && !deletion_grace_elapsed(p))
            .count();
        (pods_used == live).then_some(())
    });

    // ClusterRole aggregation.
    c.apply("agg", json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "monitoring"},
        "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"rbac.example.com/aggregate-to-monitoring": "true"}}]}, "rules": []}));
    c.apply("part", json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "monitoring-endpoints", "labels": {"rbac.example.com/aggregate-to-monitoring": "true"}},
        "rules": [{"apiGroups": [""], "resources": ["services", "endpoints", "pods"], "verbs": ["get", "list", "watch"]}]}));
    c.wait("aggregated rules", 30, || {
        let r = c.jsonpath(
            &["get", "clusterrole", "monitoring"],
            "{.rules[0].resources}",
        );
        r.contains("endpoints").then_some(())
    });
}

#[test]
fn losing_the_lease_stops_the_controllers() {
    let c = Cluster::start_with(|cfg| {
        cfg.leader_elect_lease_duration = "4s".into();
        cfg.leader_elect_renew_deadline = "3s".into();
        cfg.leader_elect_retry_period = "500ms".into();
    });
    c.wait("serviceaccount default/default", 30, || {
        c.kubectl(&["get", "serviceaccount", "default"])
            .0
            .then_some(())
    });
    c.ok(&[
        "create",
        "deployment",
        "solo",
        "--image=busybox",
        "--replicas=1",
    ]);
    c.wait_available("default", "solo", 1);
    // Someone else takes the Lease: our renewals fail, the controllers stop.
    let leases: Api<Lease> = Api::namespaced(c.client.clone(), "kube-system");
    let mut lease =
        c.rt.block_on(leases.get("kube-controller-manager"))
            .expect("lease");
    if let Some(s) = lease.spec.as_mut() {
        s.holder_identity = Some("intruder".into());
        s.lease_duration_seconds = Some(600);
        s.renew_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
            jiff::Timestamp::now(),
        ));
    }
    c.rt.block_on(leases.replace("kube-controller-manager", &Default::default(), &lease))
        .expect("steal lease");
    c.wait(
        "the metrics endpoint to go with the controllers",
        20,
        || {
            http_get(
                &format!("http://127.0.0.1:{}/healthz", c.metrics_port),
                Duration::from_secs(1),
            )
            .is_err()
            .then_some(())
        },
    );
    let pod = c.pods("default", "app=solo")[0]
        .metadata
        .name
        .clone()
        .expect("pod");
    c.ok(&["delete", "pod", &pod]);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        c.pods("default", "app=solo").is_empty(),
        "a controller kept working after losing the Lease"
    );
    let holder =
        c.rt.block_on(leases.get("kube-controller-manager"))
            .expect("lease")
            .spec
            .and_then(|s| s.holder_identity);
    assert_eq!(holder.as_deref(), Some("intruder"));
}
