//! Authentication and authorization with real kubectl: a kubelet's client certificate
//! (`system:node:<name>`, group `system:nodes`) gets what the Node authorizer and
//! NodeRestriction allow and nothing more; a user without bindings is forbidden.

use std::path::Path;
use std::process::Command;

use kumo_tests::{ApiServerProc, StoreKind, kubectl_bin};

/// Signs a client certificate for `cn`/`o` with the cluster CA (openssl) and writes a
/// kubeconfig for it next to the admin one.
fn user_kubeconfig(api: &ApiServerProc, dir: &Path, cn: &str, o: &str) -> std::path::PathBuf {
    let key = dir.join(format!("{}.key", cn.replace(':', "_")));
    let csr = dir.join("u.csr");
    let crt = dir.join(format!("{}.crt", cn.replace(':', "_")));
    let ok = |c: &mut Command| {
        let out = c.output().expect("openssl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ok(Command::new("openssl")
        .args([
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
        ])
        .arg(&key));
    ok(Command::new("openssl")
        .args(["req", "-new", "-key"])
        .arg(&key)
        .args(["-subj", &format!("/O={o}/CN={cn}"), "-out"])
        .arg(&csr));
    let ext = dir.join("client.ext");
    std::fs::write(
        &ext,
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
    )
    .expect("ext");
    ok(Command::new("openssl")
        .args(["x509", "-req", "-extfile"])
        .arg(&ext)
        .arg("-in")
        .arg(&csr)
        .arg("-CA")
        .arg(api.cert_dir.join("ca.crt"))
        .arg("-CAkey")
        .arg(api.cert_dir.join("ca.key"))
        .args(["-CAcreateserial", "-days", "1", "-out"])
        .arg(&crt));
    let kc = dir.join(format!("{}.kubeconfig", cn.replace(':', "_")));
    let k = |args: &[&str]| {
        let out = Command::new(kubectl_bin("1.33"))
            .arg("--kubeconfig")
            .arg(&kc)
            .args(args)
            .output()
            .expect("kubectl config");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    k(&[
        "config",
        "set-cluster",
        "kumo",
        &format!("--server={}", api.url()),
        &format!(
            "--certificate-authority={}",
            api.cert_dir.join("ca.crt").display()
        ),
        "--embed-certs=true",
    ]);
    k(&[
        "config",
        "set-credentials",
        cn,
        &format!("--client-certificate={}", crt.display()),
        &format!("--client-key={}", key.display()),
        "--embed-certs=true",
    ]);
    k(&[
        "config",
        "set-context",
        "ctx",
        "--cluster=kumo",
        &format!("--user={cn}"),
    ]);
    k(&["config", "use-context", "ctx"]);
    kc
}

fn run(kc: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(kubectl_bin("1.33"))
        .arg("--kubeconfig")
        .arg(kc)
        .args(args)
        .output()
        .expect("kubectl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn node_and_user_authorization() {
    let dir = tempfile::tempdir().expect("tempdir");
    let api = ApiServerProc::start(StoreKind::Kumo, dir.path(), &[]).expect("apiserver");
    let admin = api.kubeconfig.clone();
    let node = user_kubeconfig(&api, dir.path(), "system:node:n1", "system:nodes");
    let nobody = user_kubeconfig(&api, dir.path(), "alice", "devs");

    // whoami
    let (ok, out) = run(
        &node,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
    );
    assert!(ok && out.contains("system:node:n1"), "{out}");

    // A user without bindings is forbidden, with upstream's message.
    let (ok, out) = run(&nobody, &["get", "pods"]);
    assert!(!ok && out.contains("User \"alice\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""), "{out}");
    let (_, out) = run(&nobody, &["auth", "can-i", "list", "pods"]);
    assert!(out.trim_end().ends_with("no"), "{out}");

    // The node registers itself, not others (NodeRestriction).
    let n1 = dir.path().join("n1.yaml");
    std::fs::write(&n1, "apiVersion: v1\nkind: Node\nmetadata:\n  name: n1\n").expect("write");
    let (ok, out) = run(&node, &["create", "-f", n1.to_str().expect("path")]);
    assert!(ok, "{out}");
    let n2 = dir.path().join("n2.yaml");
    std::fs::write(&n2, "apiVersion: v1\nkind: Node\nmetadata:\n  name: n2\n").expect("write");
    let (ok, out) = run(&node, &["create", "-f", n2.to_str().expect("path")]);
    assert!(!ok && out.contains("Forbidden"), "{out}");
    let (ok, out) = run(&node, &["get", "pods", "-A"]);
    assert!(ok, "{out}");

    // Secrets: only those a pod on this node references.
    let (ok, out) = run(
        &admin,
        &["create", "secret", "generic", "s1", "--from-literal=a=b"],
    );
    assert!(ok, "{out}");
    let (ok, out) = run(
        &admin,
        &["create", "secret", "generic", "s2", "--from-literal=a=b"],
    );
    assert!(ok, "{out}");
    let (ok, out) = run(&node, &["get", "secret", "s1"]);
    assert!(!ok && out.contains("Forbidden"), "{out}");
    let pod = dir.path().join("pod.yaml");
    std::fs::write(
        &pod,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  nodeName: n1\n  containers:\n  - name: c\n    image: busybox\n    envFrom:\n    - secretRef:\n        name: s1\n",
    )
    .expect("write");
    let (ok, out) = run(&admin, &["create", "-f", pod.to_str().expect("path")]);
    assert!(ok, "{out}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (ok, out) = run(&node, &["get", "secret", "s1", "-o", "name"]);
        if ok {
            assert!(out.contains("secret/s1"));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node never got its pod's secret: {out}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let (ok, out) = run(&node, &["get", "secret", "s2"]);
    assert!(!ok && out.contains("Forbidden"), "{out}");
    let (ok, out) = run(&node, &["get", "secrets"]);
    assert!(!ok && out.contains("Forbidden"), "list of secrets: {out}");

    // Impersonation (`--as`, `--as-group`): the admin acts as others, with their rights only.
    let (ok, out) = run(
        &admin,
        &[
            "auth",
            "whoami",
            "--as",
            "jane",
            "--as-group",
            "devs",
            "-o",
            "jsonpath={.status.userInfo.username} {.status.userInfo.groups}",
        ],
    );
    assert!(
        ok && out.contains("jane") && out.contains("devs") && out.contains("system:authenticated"),
        "{out}"
    );
    let (ok, out) = run(&admin, &["get", "pods", "--as", "jane"]);
    assert!(
        !ok && out.contains("User \"jane\" cannot list resource \"pods\""),
        "{out}"
    );
    let sa = "system:serviceaccount:default:default";
    let (_, out) = run(&admin, &["auth", "can-i", "create", "pods", "--as", sa]);
    assert!(out.trim_end().ends_with("no"), "{out}");
    let (_, out) = run(
        &admin,
        &[
            "auth",
            "can-i",
            "get",
            "secret/s1",
            "--as",
            "system:node:n1",
            "--as-group",
            "system:nodes",
        ],
    );
    assert!(out.trim_end().ends_with("yes"), "{out}");
    // … and a user without the `impersonate` verb cannot.
    let (ok, out) = run(&nobody, &["get", "pods", "--as", "kubernetes-admin"]);
    assert!(
        !ok && out.contains("User \"alice\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"),
        "{out}"
    );
}
