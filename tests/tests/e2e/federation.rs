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

use kumo_tests::{free_port, kubectl_bin, kumo_bin};

struct Cluster {
    name: String,
    data: PathBuf,
    kubeconfig: PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(kumo_bin())
            .args(["down", "--data-dir"])
            .arg(&self.data)
            .output();
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
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
        let d = data.to_str().expect("utf-8 path").to_string();
        let ports = [free_port(), free_port(), free_port(), free_port()];
        let (n, p0, p1, p2, p3) = (
            nodes.to_string(),
            ports[0].to_string(),
            ports[1].to_string(),
            ports[2].to_string(),
            ports[3].to_string(),
        );
        let c = Cluster {
            name: name.into(),
            kubeconfig: data.join("kubeconfig"),
            data,
        };
        let out = kumo(&[
            "up",
            "--detach",
            "--data-dir",
            &d,
            "--nodes",
            &n,
            "--runtime",
            "sim",
            "--store-port",
            &p0,
            "--store-metrics-port",
            &p1,
            "--apiserver-port",
            &p2,
            "--kubelet-port",
            &p3,
        ]);
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
        self.get(
            &["pods", "-n", "shop", "-l", "app=web"],
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
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
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
        .map(|m| Cluster::up(tmp.path(), m, 2))
        .collect();

    let log = tmp.path().join("federation.log");
    let child = Command::new(kumo_bin())
        .args(["federation", "--kubeconfig"])
        .arg(&host.kubeconfig)
        .args(["--health-interval-seconds", "2", "--resync-seconds", "1"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).expect("log"))
        .stderr(std::fs::File::create(tmp.path().join("federation.err")).expect("log"))
        .spawn()
        .expect("start kumo federation");
    let fed = Federation {
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
        (ready == "True 2 True 2 True 2").then_some(())
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
    assert_eq!(works.matches("fd-shop-web").count(), 3, "{works}");

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

    // Delete: everything propagated disappears from every member.
    host.ok(&["delete", "fd", "web", "-n", "shop", "--wait=true"]);
    until("nothing left in the members", &fed, || {
        members
            .iter()
            .all(|m| {
                m.get(
                    &[
                        "deploy,configmap",
                        "-n",
                        "shop",
                        "-l",
                        "federation.kumo.io/owner",
                    ],
                    "{.items[*].metadata.name}",
                )
                .is_empty()
                    && m.get(&["deploy", "web", "-n", "shop"], "{.metadata.name}")
                        .is_empty()
            })
            .then_some(())
    });
    assert!(host.ok(&["get", "works", "-A"]).trim().is_empty());

    // Unjoin removes the Cluster and the member's ServiceAccount.
    let m3 = &members[2];
    kumo(&[
        "unjoin",
        "m3",
        "--host-kubeconfig",
        host.kubeconfig.to_str().expect("utf-8"),
        "--kubeconfig",
        m3.kubeconfig.to_str().expect("utf-8"),
    ]);
    assert!(host.get(&["cluster", "m3"], "{.metadata.name}").is_empty());
    assert!(
        m3.get(
            &["serviceaccount", "kumo-federation", "-n", "kumo-system"],
            "{.metadata.name}"
        )
        .is_empty()
    );
}
