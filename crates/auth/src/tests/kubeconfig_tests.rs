use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::kubeconfig::*;
use crate::pki::ClusterPki;

const KUBECTL: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";

/// `kubectl config view --raw -o json` of `path`, or `None` when kubectl is not installed.
fn kubectl_view(path: &Path, extra: &[&str]) -> Option<serde_json::Value> {
    if !Path::new(KUBECTL).exists() {
        return None;
    }
    let out = Command::new(KUBECTL)
        .arg("--kubeconfig")
        .arg(path)
        .args(["config", "view", "--raw", "-o", "json"])
        .args(extra)
        .env("HOME", path.parent().unwrap())
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

#[test]
fn admin_kubeconfig_is_accepted_by_kubectl() {
    let dir = tempfile::tempdir().unwrap();
    let pki = ClusterPki::load_or_create(&dir.path().join("pki"), &[]).unwrap();
    let path = dir.path().join("admin.kubeconfig");
    write_admin_kubeconfig(
        &path,
        "https://127.0.0.1:6443",
        &pki,
        "kumo",
        "kubernetes-admin",
    )
    .unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );

    if let Some(v) = kubectl_view(&path, &[]) {
        assert_eq!(v["current-context"], "kubernetes-admin@kumo");
        assert_eq!(v["clusters"][0]["name"], "kumo");
        assert_eq!(
            v["clusters"][0]["cluster"]["server"],
            "https://127.0.0.1:6443"
        );
        let ca = v["clusters"][0]["cluster"]["certificate-authority-data"]
            .as_str()
            .unwrap();
        assert_eq!(STANDARD.decode(ca).unwrap(), pki.ca_cert_pem().as_bytes());
        assert_eq!(v["users"][0]["name"], "kubernetes-admin");
        let cert = v["users"][0]["user"]["client-certificate-data"]
            .as_str()
            .unwrap();
        assert_eq!(
            STANDARD.decode(cert).unwrap(),
            pki.admin().cert_pem.as_bytes()
        );
        let key = v["users"][0]["user"]["client-key-data"].as_str().unwrap();
        assert_eq!(
            STANDARD.decode(key).unwrap(),
            pki.admin().key_pem.as_bytes()
        );
        assert_eq!(v["contexts"][0]["context"]["cluster"], "kumo");
        assert_eq!(v["contexts"][0]["context"]["user"], "kubernetes-admin");
        // --minify resolves the current context, which fails on dangling references.
        let m = kubectl_view(&path, &["--minify"]).unwrap();
        assert_eq!(m["contexts"].as_array().unwrap().len(), 1);
    }

    // Our own reader round-trips it.
    let r = load_resolved(&path, None).unwrap();
    assert_eq!(r.server, "https://127.0.0.1:6443");
    assert_eq!(r.ca_pem.as_deref(), Some(pki.ca_cert_pem().as_bytes()));
    assert_eq!(
        r.client_cert_pem.as_deref(),
        Some(pki.admin().cert_pem.as_bytes())
    );
    assert_eq!(
        r.client_key_pem.as_deref(),
        Some(pki.admin().key_pem.as_bytes())
    );
    assert_eq!(r.namespace, "default");
    assert!(r.token.is_none());
    let kc = Kubeconfig::load(&path).unwrap();
    assert_eq!(Kubeconfig::from_yaml(&kc.to_yaml().unwrap()).unwrap(), kc);
}

#[test]
fn token_kubeconfig_is_accepted_by_kubectl() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/node.kubeconfig");
    write_kubeconfig(
        &path,
        "https://[::1]:6443",
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        "kumo",
        "tls-bootstrap-token-user",
        &Credentials::Token("abcdef.0123456789abcdef".into()),
    )
    .unwrap();
    if let Some(v) = kubectl_view(&path, &[]) {
        assert_eq!(v["users"][0]["user"]["token"], "abcdef.0123456789abcdef");
        assert_eq!(v["clusters"][0]["cluster"]["server"], "https://[::1]:6443");
    }
    let r = load_resolved(&path, None).unwrap();
    assert_eq!(r.token.as_deref(), Some("abcdef.0123456789abcdef"));
    assert!(r.client_cert_pem.is_none());
}

#[test]
fn reads_kubectl_written_kubeconfigs_with_files_and_unknown_fields() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.crt"), "CA").unwrap();
    std::fs::write(dir.path().join("c.crt"), "CERT").unwrap();
    std::fs::write(dir.path().join("c.key"), "KEY").unwrap();
    std::fs::write(dir.path().join("tok"), "secret-token\n").unwrap();
    let text = r#"
apiVersion: v1
kind: Config
preferences: {}
clusters:
- name: a
  cluster:
    server: https://a:6443
    certificate-authority: ca.crt
    extensions:
    - name: x
      extension: {foo: bar}
- name: b
  cluster:
    server: https://b:6443
    insecure-skip-tls-verify: true
    tls-server-name: kubernetes
users:
- name: certs
  user:
    client-certificate: c.crt
    client-key: c.key
- name: tokfile
  user:
    tokenFile: tok
- name: execer
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: gke-gcloud-auth-plugin
contexts:
- name: ca
  context: {cluster: a, user: certs, namespace: kube-system}
- name: cb
  context: {cluster: b, user: tokfile}
- name: dangling
  context: {cluster: nope, user: certs}
- name: anon
  context: {cluster: b}
current-context: ca
"#;
    let kc = Kubeconfig::from_yaml(text).unwrap();
    let r = kc.resolve(None, Some(dir.path())).unwrap();
    assert_eq!(r.context, "ca");
    assert_eq!(r.server, "https://a:6443");
    assert_eq!(r.ca_pem.as_deref(), Some(&b"CA"[..]));
    assert_eq!(r.client_cert_pem.as_deref(), Some(&b"CERT"[..]));
    assert_eq!(r.client_key_pem.as_deref(), Some(&b"KEY"[..]));
    assert_eq!(r.namespace, "kube-system");
    let r = kc.resolve(Some("cb"), Some(dir.path())).unwrap();
    assert_eq!(r.token.as_deref(), Some("secret-token"));
    assert!(r.insecure_skip_tls_verify);
    assert_eq!(r.tls_server_name.as_deref(), Some("kubernetes"));
    let r = kc.resolve(Some("anon"), None).unwrap();
    assert!(r.token.is_none() && r.client_cert_pem.is_none());
    assert!(kc.resolve(Some("dangling"), Some(dir.path())).is_err());
    assert!(kc.resolve(Some("missing"), None).is_err());
    // Missing referenced file.
    assert!(
        kc.resolve(None, Some(&dir.path().join("elsewhere")))
            .is_err()
    );

    // kubectl writes `null` for empty lists.
    let empty = Kubeconfig::from_yaml("apiVersion: v1\nclusters: null\ncontexts: null\nusers: null\ncurrent-context: \"\"\nkind: Config\n").unwrap();
    assert!(empty.clusters.is_empty());
    assert!(empty.resolve(None, None).is_err());
    // JSON is YAML.
    let j = Kubeconfig::from_yaml(r#"{"clusters":[{"name":"x","cluster":{"server":"https://x"}}],"contexts":[{"name":"c","context":{"cluster":"x"}}],"current-context":"c"}"#).unwrap();
    assert_eq!(j.resolve(None, None).unwrap().server, "https://x");
}

#[test]
fn malformed_kubeconfigs_are_errors() {
    for bad in [
        "clusters: 5",
        "clusters: [1, 2]",
        ": : :",
        "clusters:\n- name: a\n  cluster:\n    server: [1]\n",
        "\u{0}\u{1}",
        "[",
    ] {
        assert!(Kubeconfig::from_yaml(bad).is_err(), "{bad:?}");
    }
    assert!(Kubeconfig::from_yaml("").unwrap().clusters.is_empty());
    // Bad base64 and a certificate without key.
    let kc = Kubeconfig::from_yaml(
        "clusters: [{name: a, cluster: {server: 'https://a', certificate-authority-data: '%%%'}}]\nusers: [{name: u, user: {client-certificate-data: QQ==}}]\ncontexts: [{name: c, context: {cluster: a, user: u}}]\ncurrent-context: c\n",
    )
    .unwrap();
    assert!(kc.resolve(None, None).is_err());
    let kc = Kubeconfig::from_yaml(
        "clusters: [{name: a, cluster: {server: 'https://a'}}]\nusers: [{name: u, user: {client-certificate-data: QQ==}}]\ncontexts: [{name: c, context: {cluster: a, user: u}}]\ncurrent-context: c\n",
    )
    .unwrap();
    assert!(kc.resolve(None, None).is_err());
    assert!(Kubeconfig::load(Path::new("/nonexistent/kubeconfig")).is_err());
}
