//! `kumo up --detach`, `kumo status`, `kumo down`, `kumo delete`: a cluster from one command
//! that kubectl can use, and no process left behind.

use std::process::Command;

use kumo_tests::{free_port, kubectl_bin, kumo_bin};

fn kumo(args: &[&str]) -> String {
    let out = Command::new(kumo_bin())
        .args(args)
        .output()
        .expect("run kumo");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "kumo {args:?} failed: {text}");
    text
}

#[test]
fn up_status_down_delete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("kumo");
    let d = data.to_str().expect("utf-8 path");
    let _guard = kumo_tests::KumoDown(data.clone());
    let (store, metrics, api) = (free_port(), free_port(), free_port());
    let out = kumo(&[
        "up",
        "--detach",
        "--members",
        "0",
        "--data-dir",
        d,
        "--store-port",
        &store.to_string(),
        "--store-metrics-port",
        &metrics.to_string(),
        "--apiserver-port",
        &api.to_string(),
    ]);
    assert!(
        out.contains("kumo is up") && out.contains("KUBECONFIG="),
        "{out}"
    );
    // Every component runs (API clients start once the apiserver wrote the kubeconfig).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let st = kumo(&["status", "--data-dir", d]);
        assert!(st.contains("kumo is running"), "{st}");
        let all = ["store", "apiserver", "controller-manager", "scheduler"]
            .iter()
            .all(|c| st.contains(c));
        if all && !st.contains("stopped") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "components not all running: {st}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let ns = Command::new(kubectl_bin("1.33"))
        .arg("--kubeconfig")
        .arg(data.join("kubeconfig"))
        .args(["get", "ns", "kube-system", "-o", "name"])
        .output()
        .expect("kubectl");
    assert!(
        ns.status.success(),
        "{}",
        String::from_utf8_lossy(&ns.stderr)
    );
    let pids: Vec<u32> = std::fs::read_dir(data.join("run"))
        .expect("run dir")
        .filter_map(|e| {
            std::fs::read_to_string(e.ok()?.path())
                .ok()?
                .trim()
                .parse()
                .ok()
        })
        .collect();
    assert!(pids.len() >= 3, "supervisor + components: {pids:?}");
    let down = kumo(&["down", "--data-dir", d]);
    assert!(down.contains("not running"), "{down}");
    for p in &pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{p}")).exists() || !kumo_up_alive(*p),
            "pid {p} survived kumo down"
        );
    }
    assert!(data.join("store").exists(), "down keeps the data");
    kumo(&["delete", "--data-dir", d]);
    assert!(!data.exists(), "delete removes the data directory");
}

fn kumo_up_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !matches!(
                s.rsplit(')')
                    .next()
                    .and_then(|r| r.split_whitespace().next()),
                Some("Z") | Some("X")
            )
        })
        .unwrap_or(false)
}
