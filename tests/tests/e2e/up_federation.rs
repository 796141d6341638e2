//! Issue 6's main job: `kumo up --members 3` brings up a federation host and three member
//! clusters joined to it, with one kubeconfig holding a context for each, and the manifests in
//! `configs/examples/` that the README walks through work on it as written (real kubectl 1.33).
//! The members run `sim` nodes so the pods go Running and Ready without images.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use kumo_tests::{KumoDown, free_port, kubectl_bin, kumo_bin, output_text as text};

struct Fed {
    data: PathBuf,
    kubeconfig: PathBuf,
}

impl Fed {
    fn kubectl(&self, context: &str, args: &[&str]) -> Output {
        Command::new(kubectl_bin("1.33"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--context", context])
            .args(args)
            .output()
            .expect("kubectl")
    }

    fn ok(&self, context: &str, args: &[&str]) -> String {
        let out = self.kubectl(context, args);
        assert!(
            out.status.success(),
            "kubectl --context {context} {args:?}: {}",
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// jsonpath of an object, "" when it does not exist (yet).
    fn get(&self, context: &str, what: &[&str], jsonpath: &str) -> String {
        let mut args = vec!["get"];
        args.extend_from_slice(what);
        let jp = format!("jsonpath={jsonpath}");
        args.extend_from_slice(&["-o", &jp]);
        String::from_utf8_lossy(&self.kubectl(context, &args).stdout)
            .trim()
            .to_string()
    }

    fn until(&self, what: &str, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !check() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\n--- federation log (tail)\n{}\n--- host objects\n{}",
                self.log_tail("federation"),
                text(&self.kubectl(
                    "federation",
                    &["get", "clusters,fd,pp,works", "-A", "-o", "yaml"]
                ))
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn log_tail(&self, component: &str) -> String {
        let body = std::fs::read_to_string(self.data.join("logs").join(format!("{component}.log")))
            .unwrap_or_default();
        let lines: Vec<&str> = body.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../configs/examples")
        .join(name)
        .display()
        .to_string()
}

const MEMBERS: [&str; 3] = ["member1", "member2", "member3"];

#[test]
fn up_members_runs_the_readme_walkthrough() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("kumo");
    let _down = KumoDown(data.clone());
    let port = || free_port().to_string();
    let store_metrics = free_port();
    let out = Command::new(kumo_bin())
        .args(["up", "--detach", "--data-dir"])
        .arg(&data)
        .args(["--members", "3", "--nodes", "1", "--runtime", "sim"])
        .args(["--store-port", &port()])
        .args(["--store-metrics-port", &store_metrics.to_string()])
        .args(["--apiserver-port", &port(), "--kubelet-port", &port()])
        .output()
        .expect("run kumo up");
    let printed = text(&out);
    assert!(out.status.success(), "kumo up failed: {printed}");
    assert!(
        printed.contains("members joined and Ready 3/3")
            && printed.contains("member1, member2, member3")
            && printed.contains("export KUBECONFIG="),
        "{printed}"
    );
    let fed = Fed {
        kubeconfig: data.join("kubeconfig"),
        data,
    };

    // One kubeconfig: the host is the current context, each member has its own.
    let contexts = fed.ok("federation", &["config", "get-contexts", "-o", "name"]);
    let mut names: Vec<&str> = contexts.lines().collect();
    names.sort();
    assert_eq!(names, ["federation", "member1", "member2", "member3"]);
    assert_eq!(
        fed.ok("federation", &["config", "current-context"]),
        "federation"
    );
    for m in MEMBERS {
        let nodes = fed.ok(m, &["get", "nodes", "-o", "name"]);
        assert_eq!(nodes, format!("node/{m}-node-1"), "{m}");
    }

    // The members are joined, Ready, labelled provider `local` and regions local-a/b/c.
    let clusters = fed.get(
        "federation",
        &["clusters"],
        r#"{range .items[*]}{.metadata.name}={.metadata.labels.kumo\.io/provider}/{.metadata.labels.topology\.kubernetes\.io/region}/{.status.conditions[?(@.type=="Ready")].status} {end}"#,
    );
    assert_eq!(
        clusters,
        "member1=local/local-a/True member2=local/local-b/True member3=local/local-c/True"
    );
    // The federation reaches the members with its own ServiceAccount, not the admin's key.
    let sa = fed.ok(
        "member1",
        &["get", "serviceaccount", "-n", "kumo-system", "-o", "name"],
    );
    assert!(sa.contains("serviceaccount/kumo-federation"), "{sa}");

    // `kumo federation` serves its metrics one above the host store's metrics port.
    let metrics = kumo_tests::http_get(
        &format!("http://127.0.0.1:{}/metrics", store_metrics + 1),
        Duration::from_secs(5),
    )
    .expect("federation /metrics");
    assert!(
        metrics.status == 200 && metrics.body.contains("kumo_federation_clusters"),
        "{} {}",
        metrics.status,
        metrics.body
    );

    // The README's example, as written: 2/2/2, member3's image, local-b's env, the ConfigMap.
    fed.ok(
        "federation",
        &[
            "apply",
            "--server-side",
            "-f",
            &example("federated-deployment.yaml"),
        ],
    );
    fed.until("web Ready 2/2 in every member", || {
        MEMBERS.iter().all(|m| {
            fed.get(
                m,
                &["deployment", "web", "-n", "shop"],
                "{.status.readyReplicas}",
            ) == "2"
        })
    });
    fed.until("the FederatedDeployment to report 6/6", || {
        fed.get(
            "federation",
            &["fd", "web", "-n", "shop"],
            "{.status.readyReplicas}",
        ) == "6"
    });
    let table = fed.ok("federation", &["get", "fd", "-n", "shop"]);
    assert!(
        table.contains("6/6") && table.contains("member1:2,member2:2,member3:2"),
        "{table}"
    );
    let image = |m: &str| {
        fed.get(
            m,
            &["deployment", "web", "-n", "shop"],
            "{.spec.template.spec.containers[0].image}",
        )
    };
    assert_eq!(image("member1"), "kumo.test/busybox:1");
    assert_eq!(image("member3"), "kumo.test/busybox:2");
    let tier = |m: &str| {
        fed.get(
            m,
            &["deployment", "web", "-n", "shop"],
            r#"{.spec.template.spec.containers[0].env[?(@.name=="TIER")].value}"#,
        )
    };
    assert_eq!(tier("member2"), "edge", "local-b gets the env override");
    assert_eq!(tier("member1"), "");
    for m in MEMBERS {
        assert_eq!(
            fed.get(
                m,
                &["configmap", "web-config", "-n", "shop"],
                "{.data.greeting}"
            ),
            "hello",
            "{m}"
        );
    }

    // The PropagationPolicy example puts the Service in every local member.
    fed.ok(
        "federation",
        &[
            "apply",
            "--server-side",
            "-f",
            &example("propagation-policy.yaml"),
        ],
    );
    fed.until("the Service in every member", || {
        MEMBERS
            .iter()
            .all(|m| fed.get(m, &["service", "web", "-n", "shop"], "{.metadata.name}") == "web")
    });

    // Deleting the FederatedDeployment removes what it propagated from every member.
    fed.ok("federation", &["delete", "fd", "web", "-n", "shop"]);
    fed.until("web gone from every member", || {
        MEMBERS.iter().all(|m| {
            let out = fed.kubectl(m, &["get", "deployment", "web", "-n", "shop"]);
            !out.status.success() && text(&out).contains("NotFound")
        })
    });

    // `kumo down` stops every component of every control plane.
    let out = Command::new(kumo_bin())
        .arg("down")
        .arg("--data-dir")
        .arg(&fed.data)
        .output()
        .expect("kumo down");
    assert!(out.status.success(), "{}", text(&out));
    let st = text(
        &Command::new(kumo_bin())
            .arg("status")
            .arg("--data-dir")
            .arg(&fed.data)
            .output()
            .expect("kumo status"),
    );
    assert!(
        st.contains("kumo is not running") && !st.contains("running\n"),
        "{st}"
    );
    let leftover = Command::new("pgrep")
        .args(["-f", &fed.data.display().to_string()])
        .output()
        .expect("pgrep");
    assert!(
        leftover.stdout.is_empty(),
        "processes left: {}",
        text(&leftover)
    );
}
