//! Issue 6: kumo federation across real member clusters, driven by real kubectl 1.33.
//!
//! A host (`kumo up --nodes 0`) and three members (`kumo up --nodes 2 --runtime sim`, whose
//! hollow nodes make pods Running and Ready), `kumo federation` against the host and `kumo join`
//! for each member. One FederatedDeployment then goes through weights 1:1:1 (2 Ready pods per
//! member, an image override in one member, its ConfigMap propagated), 2:1:0 (4/2/0),
//! Duplicated (6 each), a hand edit in a member (reverted), bad input (a 422 from the schema, and
//! False conditions for an unknown cluster, all-zero weights and a bad patch path, with the
//! members untouched), and deletion (gone from every member).

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use kumo_tests::{free_port, kubectl_bin, kumo_bin, output_text as text};

struct Cluster {
    name: String,
    data: PathBuf,
    kubeconfig: PathBuf,
    up_args: Vec<String>,
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
    fn up(root: &std::path::Path, name: &str, nodes: u32) -> Cluster {
        let data = root.join(name);
        let mut up_args: Vec<String> = vec![
            "up".into(),
            "--detach".into(),
            "--members".into(),
            "0".into(),
            "--data-dir".into(),
            data.to_str().expect("utf-8 path").into(),
            "--nodes".into(),
            nodes.to_string(),
            "--runtime".into(),
            "sim".into(),
        ];
        for flag in [
            "--store-port",
            "--store-metrics-port",
            "--apiserver-port",
            "--kubelet-port",
        ] {
            up_args.push(flag.into());
            up_args.push(free_port().to_string());
        }
        let c = Cluster {
            name: name.into(),
            kubeconfig: data.join("kubeconfig"),
            data,
            up_args,
        };
        c.start();
        c
    }

    /// `kumo up --detach` with this cluster's data dir and ports (again after `stop`).
    fn start(&self) {
        let argv: Vec<&str> = self.up_args.iter().map(String::as_str).collect();
        let out = kumo(&argv);
        assert!(out.contains("KUBECONFIG="), "{out}");
    }

    /// `kumo down`: every component of this member stops (its data stays).
    fn stop(&self) {
        kumo(&["down", "--data-dir", self.data.to_str().expect("utf-8")]);
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(kubectl_bin("1.33"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .expect("kubectl")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} on {}: {}",
            self.name,
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn apply(&self, yaml: &str) -> Output {
        let f = self
            .data
            .join(format!("manifest-{:x}.yaml", rand::random::<u64>()));
        std::fs::write(&f, yaml).expect("write manifest");
        // Server-side: kumo's OpenAPI v3 lists strategic-merge-patch for custom resources,
        // so client-side `kubectl apply` updates of a CR get a 415 (a registry bug, reported).
        self.kubectl(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            f.to_str().expect("utf-8"),
        ])
    }

    /// jsonpath of one object, "" when it does not exist (yet).
    fn get(&self, what: &[&str], jsonpath: &str) -> String {
        let mut args = vec!["get"];
        args.extend_from_slice(what);
        let jp = format!("jsonpath={jsonpath}");
        args.extend_from_slice(&["-o", &jp]);
        String::from_utf8_lossy(&self.kubectl(&args).stdout)
            .trim()
            .to_string()
    }

    /// Ready pods of `app=web` in namespace `shop`.
    fn ready_pods(&self) -> usize {
        self.ready_pods_of("web")
    }

    /// Pods of `app=web` in namespace `shop`, whatever their state (what the member runs).
    fn pods(&self) -> usize {
        self.get(
            &["pods", "-n", "shop", "-l", "app=web"],
            "{.items[*].metadata.name}",
        )
        .split_whitespace()
        .count()
    }

    /// Ready pods of `app=<app>` in namespace `shop`.
    fn ready_pods_of(&self, app: &str) -> usize {
        self.get(
            &["pods", "-n", "shop", "-l", &format!("app={app}")],
            r#"{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{" "}{end}"#,
        )
        .split_whitespace()
        .filter(|s| *s == "True")
        .count()
    }
}

/// `kumo federation` as a child process, killed on drop.
struct Federation {
    child: Child,
    log: PathBuf,
    host_kubeconfig: PathBuf,
}

impl Drop for Federation {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Federation {
    fn log_tail(&self) -> String {
        let body = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = body.lines().rev().take(30).collect();
        let state = Command::new(kubectl_bin("1.33"))
            .arg("--kubeconfig")
            .arg(&self.host_kubeconfig)
            .args(["get", "clusters,fd,pp,works", "-A", "-o", "yaml"])
            .output()
            .map(|o| text(&o))
            .unwrap_or_default();
        format!(
            "{}\n--- host objects\n{state}",
            lines.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }
}

fn until<T>(what: &str, fed: &Federation, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n--- kumo federation log\n{}",
            fed.log_tail()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn fd_yaml(scheduling: &str, overrides: &str) -> String {
    format!(
        r#"apiVersion: federation.kumo.io/v1alpha1
kind: FederatedDeployment
metadata: {{name: web, namespace: shop}}
spec:
  template:
    metadata: {{name: web, labels: {{app: web}}}}
    spec:
      replicas: 6
      selector: {{matchLabels: {{app: web}}}}
      template:
        metadata: {{labels: {{app: web}}}}
        spec:
          containers:
          - name: web
            image: kumo.test/busybox:1
            envFrom: [{{configMapRef: {{name: web-config}}}}]
  placement:
    clusterSelector:
      matchExpressions: [{{key: kumo.io/provider, operator: In, values: [local]}}]
  replicaScheduling:
{scheduling}
  overrides:
{overrides}
"#
    )
}

const IMAGE_OVERRIDE: &str =
    "  - {clusters: [m3], image: kumo.test/busybox:2, env: [{name: TIER, value: edge}]}";

fn weighted(w: [u32; 3]) -> String {
    format!(
        "    type: Divided\n    divisionPreference: Weighted\n    weights:\n    - {{cluster: m1, weight: {}}}\n    - {{cluster: m2, weight: {}}}\n    - {{cluster: m3, weight: {}}}",
        w[0], w[1], w[2]
    )
}

fn condition(host: &Cluster, ty: &str) -> String {
    host.get(
        &["federateddeployment", "web", "-n", "shop"],
        &format!(r#"{{.status.conditions[?(@.type=="{ty}")].status}} {{.status.conditions[?(@.type=="{ty}")].reason}}"#),
    )
}

#[test]
fn federation_divides_overrides_heals_and_cleans_up() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let host = Cluster::up(tmp.path(), "host", 0);
    let members: Vec<Cluster> = ["m1", "m2", "m3"]
        .iter()
        // m3 is smaller (one node): capacity-based division must see it.
        .map(|m| Cluster::up(tmp.path(), m, if *m == "m3" { 1 } else { 2 }))
        .collect();

    let log = tmp.path().join("federation.log");
    let child = Command::new(kumo_bin())
        .args(["federation", "--kubeconfig"])
        .arg(&host.kubeconfig)
        .args(["--health-interval-seconds", "2", "--resync-seconds", "1"])
        .args([
            "--toleration-seconds",
            "6",
            "--failback-stable-seconds",
            "6",
        ])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).expect("log"))
        .stderr(std::fs::File::create(tmp.path().join("federation.err")).expect("log"))
        .spawn()
        .expect("start kumo federation");
    let fed = Federation {
        host_kubeconfig: host.kubeconfig.clone(),
        child,
        log: tmp.path().join("federation.err"),
    };
    until("the federation CRDs", &fed, || {
        host.kubectl(&["get", "clusters"])
            .status
            .success()
            .then_some(())
    });

    // Join: each member gets its own ServiceAccount, the host a Secret + Cluster.
    for m in &members {
        let out = kumo(&[
            "join",
            &m.name,
            "--kubeconfig",
            m.kubeconfig.to_str().expect("utf-8"),
            "--host-kubeconfig",
            host.kubeconfig.to_str().expect("utf-8"),
            "--provider",
            "local",
            "--region",
            &format!("local-{}", m.name),
        ]);
        assert!(out.contains(&format!("cluster {} joined", m.name)), "{out}");
        assert_eq!(
            m.get(
                &["serviceaccount", "kumo-federation", "-n", "kumo-system"],
                "{.metadata.name}"
            ),
            "kumo-federation"
        );
        let secret = host.get(
            &[
                "secret",
                &format!("{}-credentials", m.name),
                "-n",
                "kumo-federation-system",
            ],
            "{.data.token}",
        );
        assert!(!secret.is_empty(), "no credentials Secret for {}", m.name);
    }
    until("3 Ready clusters", &fed, || {
        let ready = host.get(
            &["clusters"],
            r#"{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{" "}{.status.nodeCount}{" "}{end}"#,
        );
        (ready == "True 2 True 2 True 1").then_some(())
    });
    let table = host.ok(&["get", "clusters"]);
    assert!(
        table.contains("PROVIDER") && table.contains("local-m2"),
        "{table}"
    );

    // 1:1:1 with an image + env override in m3 and a referenced ConfigMap.
    host.ok(&["create", "namespace", "shop"]);
    host.ok(&[
        "create",
        "configmap",
        "web-config",
        "-n",
        "shop",
        "--from-literal=greeting=hello",
    ]);
    let out = host.apply(&fd_yaml(&weighted([1, 1, 1]), IMAGE_OVERRIDE));
    assert!(out.status.success(), "{}", text(&out));
    until("2 Ready pods in each member", &fed, || {
        members.iter().all(|m| m.ready_pods() == 2).then_some(())
    });
    until("READY 6/6 on the host", &fed, || {
        let t = host.ok(&["get", "fd", "-n", "shop"]);
        (t.contains("6/6") && t.contains("m1:2,m2:2,m3:2")).then_some(())
    });
    assert_eq!(condition(&host, "Ready"), "True AllReplicasReady");
    for m in &members {
        assert_eq!(
            m.get(
                &["configmap", "web-config", "-n", "shop"],
                "{.data.greeting}"
            ),
            "hello"
        );
        let image = m.get(
            &["deploy", "web", "-n", "shop"],
            "{.spec.template.spec.containers[0].image}",
        );
        let env = m.get(
            &["deploy", "web", "-n", "shop"],
            "{.spec.template.spec.containers[0].env}",
        );
        if m.name == "m3" {
            assert_eq!(image, "kumo.test/busybox:2");
            assert!(env.contains("TIER"), "{env}");
        } else {
            assert_eq!(image, "kumo.test/busybox:1");
            assert!(!env.contains("TIER"), "{env}");
        }
    }
    let works = host.ok(&["get", "works", "-A"]);
    assert_eq!(works.matches("fd.shop.web").count(), 3, "{works}");

    // 2:1:0 → 4/2/0 (m3 loses its Deployment).
    let out = host.apply(&fd_yaml(&weighted([2, 1, 0]), IMAGE_OVERRIDE));
    assert!(out.status.success(), "{}", text(&out));
    until("4/2/0", &fed, || {
        let got: Vec<usize> = members.iter().map(Cluster::ready_pods).collect();
        let gone = members[2]
            .get(&["deploy", "web", "-n", "shop"], "{.metadata.name}")
            .is_empty();
        (got == [4, 2, 0] && gone).then_some(())
    });

    // Duplicated → 6 in each.
    let out = host.apply(&fd_yaml("    type: Duplicated", IMAGE_OVERRIDE));
    assert!(out.status.success(), "{}", text(&out));
    until("6 in each member", &fed, || {
        members.iter().all(|m| m.ready_pods() == 6).then_some(())
    });
    until("READY 18/18", &fed, || {
        host.ok(&["get", "fd", "-n", "shop"])
            .contains("18/18")
            .then_some(())
    });

    // A hand edit in a member is reverted.
    members[0].ok(&["scale", "deploy", "web", "-n", "shop", "--replicas=1"]);
    until("m1's replicas restored", &fed, || {
        (members[0].get(&["deploy", "web", "-n", "shop"], "{.spec.replicas}") == "6").then_some(())
    });

    // Bad input: the schema refuses an unknown type with a 422 and a field cause.
    let out = host.apply(&fd_yaml("    type: Sideways", IMAGE_OVERRIDE));
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(
        msg.contains("spec.replicaScheduling.type") && msg.contains("Unsupported value"),
        "{msg}"
    );
    // Semantic errors: a False condition with a reason, nothing changed in the members.
    for (sched, ov, reason) in [
        (
            "    type: Duplicated",
            "  - {clusters: [m1], patches: [{op: replace, path: /spec/nope/x, value: 1}]}",
            "OverrideFailed",
        ),
        (
            weighted([0, 0, 0]).as_str(),
            IMAGE_OVERRIDE,
            "AllWeightsZero",
        ),
    ] {
        let out = host.apply(&fd_yaml(sched, ov));
        assert!(out.status.success(), "{}", text(&out));
        until(reason, &fed, || {
            (condition(&host, "Scheduled") == format!("False {reason}")).then_some(())
        });
        assert!(members.iter().all(|m| m.ready_pods() == 6));
    }
    let unknown = fd_yaml("    type: Duplicated", IMAGE_OVERRIDE)
        .replace("    clusterSelector:\n      matchExpressions: [{key: kumo.io/provider, operator: In, values: [local]}]", "    clusters: [m1, nowhere]");
    let out = host.apply(&unknown);
    assert!(out.status.success(), "{}", text(&out));
    until("UnknownCluster", &fed, || {
        (condition(&host, "Scheduled") == "False UnknownCluster").then_some(())
    });
    let msg = host.get(
        &["fd", "web", "-n", "shop"],
        r#"{.status.conditions[?(@.type=="Scheduled")].message}"#,
    );
    assert!(msg.contains("nowhere"), "{msg}");
    assert!(members.iter().all(|m| m.ready_pods() == 6));
    let none = fd_yaml("    type: Duplicated", IMAGE_OVERRIDE)
        .replace("values: [local]", "values: [mars]");
    let out = host.apply(&none);
    assert!(out.status.success(), "{}", text(&out));
    until("NoClusterSelected", &fed, || {
        (condition(&host, "Scheduled") == "False NoClusterSelected").then_some(())
    });
    assert!(members.iter().all(|m| m.ready_pods() == 6));

    // Capacity: 6 pods asking 10 cores each over 64/64/32 free cores (fits 6/6/3) → 3/2/1
    // (largest remainder, the tie between m1 and m2 to m1), and it stays there once its own
    // pods use the capacity.
    let batch = fd_yaml(
        "    type: Divided\n    divisionPreference: Capacity",
        "  - {clusters: [m3], labels: {size: small}}",
    )
    .replace("{name: web, namespace", "{name: batch, namespace")
    .replace("{name: web, labels", "{name: batch, labels")
    .replace("app: web", "app: batch")
    .replace(
        "image: kumo.test/busybox:1\n",
        "image: kumo.test/busybox:1\n            resources: {requests: {cpu: \"10\"}}\n",
    );
    let out = host.apply(&batch);
    assert!(out.status.success(), "{}", text(&out));
    until("capacity division 3/2/1", &fed, || {
        let got: Vec<usize> = members.iter().map(|m| m.ready_pods_of("batch")).collect();
        (got == [3, 2, 1]).then_some(())
    });
    std::thread::sleep(Duration::from_secs(5)); // two health probes see the pods' requests
    let placement = host.get(&["fd", "batch", "-n", "shop"], "{.status.placement}");
    assert_eq!(placement, "m1:3,m2:2,m3:1");
    assert_eq!(
        members[2].get(
            &["deploy", "batch", "-n", "shop"],
            "{.metadata.labels.size}"
        ),
        "small"
    );
    // batch references web's ConfigMap too: web keeps carrying it (no back and forth between
    // the two owners), and deleting batch (kubectl waits for the finalizer) leaves it, the
    // same object, in every member.
    let config_owner = |m: &Cluster| {
        m.get(
            &["configmap", "web-config", "-n", "shop"],
            r"{.metadata.labels.federation\.kumo\.io/owner}",
        )
    };
    assert!(
        members.iter().all(|m| config_owner(m) == "fd.shop.web"),
        "web-config stays web's while batch needs it too"
    );
    let config_uid = |m: &Cluster| {
        m.get(
            &["configmap", "web-config", "-n", "shop"],
            "{.metadata.uid}",
        )
    };
    let uids: Vec<String> = members.iter().map(config_uid).collect();
    assert!(uids.iter().all(|u| !u.is_empty()), "{uids:?}");
    host.ok(&["delete", "fd", "batch", "-n", "shop"]);
    until("batch gone", &fed, || {
        members
            .iter()
            .all(|m| {
                m.get(&["deploy", "batch", "-n", "shop"], "{.metadata.name}")
                    .is_empty()
            })
            .then_some(())
    });
    assert_eq!(members.iter().map(config_uid).collect::<Vec<_>>(), uids);

    // A Service propagated by a PropagationPolicy to the members it selects only.
    let out = host.apply(
        r#"apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop, labels: {federate: "yes"}}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: federation.kumo.io/v1alpha1
kind: PropagationPolicy
metadata: {name: services, namespace: shop}
spec:
  resourceSelectors:
  - {apiVersion: v1, kind: Service, labelSelector: {matchLabels: {federate: "yes"}}}
  placement:
    clusters: [m1, m2]
"#,
    );
    assert!(out.status.success(), "{}", text(&out));
    until("the Service in m1 and m2", &fed, || {
        let port = |m: &Cluster| m.get(&["service", "web", "-n", "shop"], "{.spec.ports[0].port}");
        (port(&members[0]) == "80" && port(&members[1]) == "80").then_some(())
    });
    assert!(
        members[2]
            .get(&["service", "web", "-n", "shop"], "{.metadata.name}")
            .is_empty()
    );
    assert_eq!(
        host.get(&["pp", "services", "-n", "shop"], "{.status.placement}"),
        "m1,m2"
    );
    host.ok(&["delete", "pp", "services", "-n", "shop"]);
    until("the Service gone from the members", &fed, || {
        members
            .iter()
            .all(|m| {
                m.get(&["service", "web", "-n", "shop"], "{.metadata.name}")
                    .is_empty()
            })
            .then_some(())
    });

    // Failover: m3 stops; after the toleration (6 s) its share runs in m1 and m2; when it is
    // back and stable (6 s), the declared 2/2/2 returns.
    let out = host.apply(&fd_yaml(&weighted([1, 1, 1]), IMAGE_OVERRIDE));
    assert!(out.status.success(), "{}", text(&out));
    until("2/2/2 again", &fed, || {
        let got: Vec<usize> = members.iter().map(Cluster::ready_pods).collect();
        (got == [2, 2, 2]).then_some(())
    });
    assert!(members.iter().all(|m| config_owner(m) == "fd.shop.web"));
    // No member may ever run more than its share plus the Deployment's surge (25 % of 3,
    // rounded up: 1) while replicas move: sampled at every poll below.
    let mut most = [0usize; 3];
    let mut sample = |reachable: &[usize]| {
        for &i in reachable {
            most[i] = most[i].max(members[i].pods());
        }
    };
    members[2].stop();
    until("m3 NotReady", &fed, || {
        (host.get(
            &["cluster", "m3"],
            r#"{.status.conditions[?(@.type=="Ready")].status}"#,
        ) == "False")
            .then_some(())
    });
    until("m3's replicas in m1 and m2", &fed, || {
        sample(&[0, 1]);
        let placed = host.get(&["fd", "web", "-n", "shop"], "{.status.placement}");
        let ready = members[0].ready_pods() + members[1].ready_pods();
        (placed == "m1:3,m2:3" && ready == 6).then_some(())
    });
    members[2].start();
    until("2/2/2 after failback", &fed, || {
        sample(&[0, 1, 2]);
        let placed = host.get(&["fd", "web", "-n", "shop"], "{.status.placement}");
        let got: Vec<usize> = members.iter().map(Cluster::ready_pods).collect();
        (placed == "m1:2,m2:2,m3:2" && got == [2, 2, 2]).then_some(())
    });
    // m1 and m2 held 3 during the outage (+1 surge); m3 came back to 2 (+1 surge).
    assert!(
        most[0] <= 4 && most[1] <= 4 && most[2] <= 3,
        "a member ran more than its share plus surge while replicas moved: {most:?}"
    );

    // Unjoin m3 while the FederatedDeployment is there: its share moves to m1 and m2, what
    // was propagated to m3 is removed from it, and its ServiceAccount goes.
    let m3 = &members[2];
    let unjoined = kumo(&[
        "unjoin",
        "m3",
        "--host-kubeconfig",
        host.kubeconfig.to_str().expect("utf-8"),
        "--kubeconfig",
        m3.kubeconfig.to_str().expect("utf-8"),
    ]);
    assert!(unjoined.contains("cluster m3 unjoined"), "{unjoined}");
    assert!(host.get(&["cluster", "m3"], "{.metadata.name}").is_empty());
    assert!(
        m3.get(
            &["serviceaccount", "kumo-federation", "-n", "kumo-system"],
            "{.metadata.name}"
        )
        .is_empty()
    );
    let owned = |m: &Cluster| {
        m.get(
            &[
                "deploy,configmap,service",
                "-n",
                "shop",
                "-l",
                "federation.kumo.io/owner",
            ],
            "{.items[*].metadata.name}",
        )
    };
    assert_eq!(
        owned(m3),
        "",
        "the unjoined member keeps propagated objects"
    );
    until("m3's share in m1 and m2 after the unjoin", &fed, || {
        let placed = host.get(&["fd", "web", "-n", "shop"], "{.status.placement}");
        let ready = members[0].ready_pods() + members[1].ready_pods();
        (placed == "m1:3,m2:3" && ready == 6).then_some(())
    });

    // Delete: everything propagated disappears from every member.
    host.ok(&["delete", "fd", "web", "-n", "shop", "--wait=true"]);
    until("nothing left in the members", &fed, || {
        members
            .iter()
            .all(|m| {
                owned(m).is_empty()
                    && m.get(&["deploy", "web", "-n", "shop"], "{.metadata.name}")
                        .is_empty()
            })
            .then_some(())
    });
    assert!(host.ok(&["get", "works", "-A"]).trim().is_empty());
}
