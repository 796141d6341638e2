//! TLS bootstrap end to end, with real kubectl 1.33 and the `kumo` binary: the CSR API
//! (identity from authentication, validation, `kubectl certificate approve|deny`, the approve
//! permission on signers), `kumo token create --print-join-command`, and a kubelet-style join:
//! a CSR posted with a bootstrap token is auto-approved and signed by the controller-manager,
//! the issued certificate authenticates as `system:node:<name>`, and `cluster-info` carries a
//! valid JWS for the token.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use kumo_tests::{ApiServerProc, StoreKind, free_port, kubectl_bin, kumo_bin};
use serde_json::Value;

/// A PEM CSR for `cn`/`o` and its private key.
fn make_csr(cn: &str, o: Option<&str>) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    if let Some(o) = o {
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, o);
    }
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    let csr = params.serialize_request(&key).expect("csr");
    (csr.pem().expect("pem"), key.serialize_pem())
}

fn b64(s: &str) -> String {
    use std::io::Write as _;
    let mut child = Command::new("base64")
        .arg("-w0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("base64");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(s.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("base64");
    String::from_utf8(out.stdout).expect("utf8")
}

fn base64_decode(s: &str) -> Vec<u8> {
    use std::io::Write as _;
    let mut child = Command::new("base64")
        .arg("-d")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("base64 -d");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(s.as_bytes())
        .expect("write");
    child.wait_with_output().expect("base64 -d").stdout
}

fn csr_yaml(name: &str, request_pem: &str, signer: &str, usages: &[&str], extra: &str) -> String {
    let usages: String = usages.iter().map(|u| format!("  - {u}\n")).collect();
    format!(
        "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: {name}\nspec:\n  request: {}\n  signerName: {signer}\n  usages:\n{usages}{extra}",
        b64(request_pem)
    )
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// kubectl with explicit credentials instead of the admin kubeconfig.
fn kubectl_as(api: &ApiServerProc, cred: &[&str], args: &[&str], input: Option<&str>) -> Output {
    use std::io::Write as _;
    let mut child = Command::new(kubectl_bin("1.33"))
        .args(["--kubeconfig", "/dev/null", "--server", &api.url()])
        .arg(format!(
            "--certificate-authority={}",
            api.cert_dir.join("ca.crt").display()
        ))
        .args(cred)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl");
    let mut stdin = child.stdin.take().expect("stdin");
    if let Some(i) = input {
        stdin.write_all(i.as_bytes()).expect("stdin");
    }
    drop(stdin);
    child.wait_with_output().expect("kubectl")
}

fn admin(api: &ApiServerProc, args: &[&str], input: Option<&str>) -> Output {
    kubectl_as(
        api,
        &[
            &format!(
                "--client-certificate={}",
                api.cert_dir.join("admin.crt").display()
            ),
            &format!("--client-key={}", api.cert_dir.join("admin.key").display()),
        ],
        args,
        input,
    )
}

fn admin_ok(api: &ApiServerProc, args: &[&str], input: Option<&str>) -> String {
    let out = admin(api, args, input);
    assert!(out.status.success(), "kubectl {args:?}: {}", stderr(&out));
    stdout(&out)
}

fn get_json(api: &ApiServerProc, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    serde_json::from_str(&admin_ok(api, &a, None)).expect("json")
}

fn conditions(csr: &Value) -> Vec<String> {
    csr.pointer("/status/conditions")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|c| c.get("type")?.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn csr_api_with_kubectl() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, "jane-token,jane,uid-jane,\"dev,ops\"\n").expect("token file");
    let api = ApiServerProc::start(
        StoreKind::Kumo,
        dir.path(),
        &["--token-auth-file", tokens.to_str().expect("path")],
    )
    .expect("apiserver");

    // Discovery: kubectl knows the resource, its short name and printer columns.
    let (pem, _) = make_csr("jane", Some("dev"));
    let yaml = csr_yaml(
        "jane-csr",
        &pem,
        "kubernetes.io/kube-apiserver-client",
        &["client auth", "digital signature"],
        // The requester identity in the body is ignored.
        "  username: mallory\n  groups: [system:masters]\n  expirationSeconds: 3600\n",
    );
    let out = kubectl_as(
        &api,
        &["--token", "jane-token"],
        &["create", "-f", "-"],
        Some(&yaml),
    );
    // jane may not create CSRs yet.
    assert!(
        !out.status.success() && stderr(&out).contains("forbidden"),
        "{}",
        stderr(&out)
    );
    admin_ok(
        &api,
        &[
            "create",
            "clusterrole",
            "csr-requester",
            "--verb=create,get,list",
            "--resource=certificatesigningrequests",
        ],
        None,
    );
    admin_ok(
        &api,
        &[
            "create",
            "clusterrolebinding",
            "jane-csr",
            "--clusterrole=csr-requester",
            "--user=jane",
        ],
        None,
    );
    let out = kubectl_as(
        &api,
        &["--token", "jane-token"],
        &["create", "-f", "-"],
        Some(&yaml),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let csr = get_json(&api, &["get", "csr", "jane-csr"]);
    assert_eq!(csr["spec"]["username"], "jane");
    assert_eq!(csr["spec"]["uid"], "uid-jane");
    let groups: Vec<&str> = csr["spec"]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(groups.contains(&"dev") && groups.contains(&"system:authenticated"));
    assert!(!groups.contains(&"system:masters"), "{groups:?}");
    let table = admin_ok(&api, &["get", "csr"], None);
    assert!(table.starts_with("NAME"), "{table}");
    for col in ["SIGNERNAME", "REQUESTOR", "REQUESTEDDURATION", "CONDITION"] {
        assert!(table.contains(col), "{table}");
    }
    let row = table
        .lines()
        .find(|l| l.starts_with("jane-csr"))
        .expect("row");
    assert!(
        row.contains("kubernetes.io/kube-apiserver-client")
            && row.contains("jane")
            && row.contains("60m")
            && row.contains("Pending"),
        "{row}"
    );

    // Validation: 422 with upstream's causes.
    let cases = [
        (
            csr_yaml(
                "bad-pem",
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                "example.com/x",
                &["client auth"],
                "",
            ),
            "PEM block type must be CERTIFICATE REQUEST",
        ),
        (
            csr_yaml("bad-signer", &pem, "nodomain", &["client auth"], ""),
            "spec.signerName",
        ),
        (
            csr_yaml(
                "bad-usage",
                &pem,
                "example.com/x",
                &["client auth", "flying"],
                "",
            ),
            "spec.usages[1]: Unsupported value: \"flying\"",
        ),
        (
            csr_yaml(
                "short",
                &pem,
                "example.com/x",
                &["client auth"],
                "  expirationSeconds: 100\n",
            ),
            "may not specify a duration less than 600 seconds",
        ),
    ];
    for (yaml, want) in &cases {
        let out = admin(&api, &["create", "-f", "-"], Some(yaml));
        assert!(
            !out.status.success() && stderr(&out).contains(want),
            "want {want:?}: {}",
            stderr(&out)
        );
        assert!(stderr(&out).contains("is invalid"), "{}", stderr(&out));
    }
    // A tampered request: the signature no longer verifies.
    let mut lines: Vec<String> = pem.lines().map(str::to_string).collect();
    let mid = lines.len() / 2;
    let flipped: String = lines[mid]
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i == 10 {
                if c == 'A' { 'B' } else { 'A' }
            } else {
                c
            }
        })
        .collect();
    lines[mid] = flipped;
    let tampered = lines.join("\n") + "\n";
    let out = admin(
        &api,
        &["create", "-f", "-"],
        Some(&csr_yaml(
            "tampered",
            &tampered,
            "example.com/x",
            &["client auth"],
            "",
        )),
    );
    assert!(
        !out.status.success() && stderr(&out).contains("spec.request"),
        "{}",
        stderr(&out)
    );
    // system:masters through the kube-apiserver-client signer is refused.
    let (masters, _) = make_csr("root", Some("system:masters"));
    let out = admin(
        &api,
        &["create", "-f", "-"],
        Some(&csr_yaml(
            "masters",
            &masters,
            "kubernetes.io/kube-apiserver-client",
            &["client auth"],
            "",
        )),
    );
    assert!(
        !out.status.success() && stderr(&out).contains("system:masters group is not allowed"),
        "{}",
        stderr(&out)
    );

    // Approving needs `approve` on the signer, not only update on the approval subresource.
    admin_ok(
        &api,
        &[
            "create",
            "clusterrole",
            "csr-approval",
            "--verb=update",
            "--resource=certificatesigningrequests/approval",
        ],
        None,
    );
    admin_ok(
        &api,
        &[
            "create",
            "clusterrolebinding",
            "jane-approval",
            "--clusterrole=csr-approval",
            "--user=jane",
        ],
        None,
    );
    let out = kubectl_as(
        &api,
        &["--token", "jane-token"],
        &["certificate", "approve", "jane-csr"],
        None,
    );
    assert!(
        !out.status.success()
            && stderr(&out).contains(
                "user not permitted to approve requests with signerName \"kubernetes.io/kube-apiserver-client\""
            ),
        "{}",
        stderr(&out)
    );
    admin_ok(
        &api,
        &[
            "create",
            "clusterrolebinding",
            "jane-signer-approver",
            "--clusterrole=system:certificates.k8s.io:kube-apiserver-client-approver",
            "--user=jane",
        ],
        None,
    );
    let out = kubectl_as(
        &api,
        &["--token", "jane-token"],
        &["certificate", "approve", "jane-csr"],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("approved"), "{}", stdout(&out));
    let csr = get_json(&api, &["get", "csr", "jane-csr"]);
    assert_eq!(conditions(&csr), ["Approved"]);
    assert!(csr.pointer("/status/conditions/0/lastUpdateTime").is_some());
    // The object's own update does not touch spec or status.
    let mut edited = csr.clone();
    edited["spec"]["signerName"] = "example.com/other".into();
    edited["status"] = serde_json::json!({});
    admin_ok(&api, &["replace", "-f", "-"], Some(&edited.to_string()));
    let csr = get_json(&api, &["get", "csr", "jane-csr"]);
    assert_eq!(
        csr["spec"]["signerName"],
        "kubernetes.io/kube-apiserver-client"
    );
    assert_eq!(conditions(&csr), ["Approved"]);
    // Approved and Denied are exclusive.
    // (kubectl refuses that itself: ask the server directly.)
    let out = admin(&api, &["certificate", "deny", "jane-csr"], None);
    assert!(
        !out.status.success() && stderr(&out).contains("already Approved"),
        "{}",
        stderr(&out)
    );
    let mut both = get_json(&api, &["get", "csr", "jane-csr"]);
    both["status"]["conditions"]
        .as_array_mut()
        .expect("conditions")
        .push(serde_json::json!({"type": "Denied", "status": "True", "reason": "No"}));
    let f = dir.path().join("both.json");
    std::fs::write(&f, both.to_string()).expect("write");
    let out = admin(
        &api,
        &[
            "replace",
            "--raw",
            "/apis/certificates.k8s.io/v1/certificatesigningrequests/jane-csr/approval",
            "-f",
            f.to_str().expect("path"),
        ],
        None,
    );
    assert!(
        !out.status.success() && stderr(&out).contains("mutually exclusive"),
        "{}",
        stderr(&out)
    );

    // Deny another one (as admin).
    let (pem2, _) = make_csr("bob", None);
    admin_ok(
        &api,
        &["create", "-f", "-"],
        Some(&csr_yaml(
            "bob-csr",
            &pem2,
            "example.com/signer",
            &["client auth"],
            "",
        )),
    );
    admin_ok(&api, &["certificate", "deny", "bob-csr"], None);
    let row = admin_ok(&api, &["get", "csr", "bob-csr", "--no-headers"], None);
    assert!(row.contains("Denied"), "{row}");
    assert!(row.contains("kubernetes-admin"), "{row}");
}

/// `kumo controller-manager` as a child process.
struct Cm(Child);

impl Drop for Cm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_controller_manager(api: &ApiServerProc, dir: &Path) -> Cm {
    let log = std::fs::File::create(dir.join("controller-manager.log")).expect("log");
    let child = Command::new(kumo_bin())
        .arg("controller-manager")
        .arg("--kubeconfig")
        .arg(&api.kubeconfig)
        .args([
            "--leader-elect",
            "false",
            "--port",
            &free_port().to_string(),
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
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("spawn controller-manager");
    Cm(child)
}

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn bootstrap_token_join() {
    let dir = tempfile::tempdir().expect("tempdir");
    let api = ApiServerProc::start(StoreKind::Kumo, dir.path(), &[]).expect("apiserver");
    let _cm = start_controller_manager(&api, dir.path());

    // kumo token create --print-join-command.
    let out = Command::new(kumo_bin())
        .args(["token", "create", "--kubeconfig"])
        .arg(&api.kubeconfig)
        .args([
            "--ttl",
            "2h",
            "--description",
            "e2e",
            "--print-join-command",
        ])
        .output()
        .expect("kumo token create");
    assert!(out.status.success(), "{}", stderr(&out));
    let line = stdout(&out).trim().to_string();
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        words[..3],
        ["kumo", "kubelet", "--server"],
        "join command: {line}"
    );
    assert_eq!(words[3], api.url(), "{line}");
    assert_eq!(words[4], "--bootstrap-token", "{line}");
    let token = words[5].to_string();
    assert_eq!(words[6], "--ca-cert-hash", "{line}");
    let ca_pem = std::fs::read(api.cert_dir.join("ca.crt")).expect("ca");
    assert_eq!(
        words[7],
        kumo_auth::ca_cert_hash(&ca_pem).expect("hash"),
        "{line}"
    );
    assert!(kumo_auth::verify_ca_cert_hash(&ca_pem, words[7]));
    let (id, secret) = token.split_once('.').expect("id.secret");
    let secret_obj = get_json(
        &api,
        &[
            "get",
            "secret",
            "-n",
            "kube-system",
            &format!("bootstrap-token-{id}"),
        ],
    );
    assert_eq!(secret_obj["type"], "bootstrap.kubernetes.io/token");
    let list = Command::new(kumo_bin())
        .args(["token", "list", "--kubeconfig"])
        .arg(&api.kubeconfig)
        .output()
        .expect("kumo token list");
    assert!(
        stdout(&list).contains(&token) && stdout(&list).contains("e2e"),
        "{}",
        stdout(&list)
    );

    // cluster-info: readable with the token, signed for it by the bootstrap signer.
    let bearer = ["--token", token.as_str()];
    let cm = wait_for(
        "the cluster-info signature",
        Duration::from_secs(30),
        || {
            let out = kubectl_as(
                &api,
                &bearer,
                &[
                    "get",
                    "configmap",
                    "cluster-info",
                    "-n",
                    "kube-public",
                    "-o",
                    "json",
                ],
                None,
            );
            assert!(out.status.success(), "{}", stderr(&out));
            let cm: Value = serde_json::from_str(&stdout(&out)).expect("json");
            cm.pointer(&format!("/data/jws-kubeconfig-{id}"))
                .is_some()
                .then_some(cm)
        },
    );
    let kubeconfig = cm["data"]["kubeconfig"].as_str().expect("kubeconfig");
    let jws = cm["data"][format!("jws-kubeconfig-{id}")]
        .as_str()
        .expect("jws");
    assert!(kumo_auth::jws_detached_verify(jws, kubeconfig, id, secret));
    assert!(!kumo_auth::jws_detached_verify(
        jws,
        kubeconfig,
        id,
        "0000000000000000"
    ));
    let kc = kumo_auth::Kubeconfig::from_yaml(kubeconfig).expect("cluster-info kubeconfig");
    let text = kc.to_yaml().expect("yaml");
    assert!(text.contains(&api.url()), "{text}");
    // The token may not read other ConfigMaps.
    let out = kubectl_as(
        &api,
        &bearer,
        &["get", "configmap", "kube-root-ca.crt", "-n", "kube-public"],
        None,
    );
    assert!(!out.status.success(), "{}", stdout(&out));

    // The kubelet's request, made with the bootstrap token: auto-approved and signed.
    let (pem, key) = make_csr("system:node:node-a", Some("system:nodes"));
    let yaml = csr_yaml(
        "node-csr-a",
        &pem,
        "kubernetes.io/kube-apiserver-client-kubelet",
        &["digital signature", "key encipherment", "client auth"],
        "  expirationSeconds: 86400\n",
    );
    let out = kubectl_as(&api, &bearer, &["create", "-f", "-"], Some(&yaml));
    assert!(out.status.success(), "{}", stderr(&out));
    let csr = wait_for("the signed certificate", Duration::from_secs(30), || {
        let csr = get_json(&api, &["get", "csr", "node-csr-a"]);
        csr.pointer("/status/certificate").is_some().then_some(csr)
    });
    assert_eq!(csr["spec"]["username"], format!("system:bootstrap:{id}"));
    let approved = csr["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == "Approved")
        .expect("Approved")
        .clone();
    assert_eq!(approved["reason"], "AutoApproved");
    assert_eq!(
        approved["message"],
        "Auto approving kubelet client certificate after SubjectAccessReview."
    );
    let row = admin_ok(&api, &["get", "csr", "node-csr-a", "--no-headers"], None);
    assert!(row.contains("Approved,Issued"), "{row}");
    assert!(row.contains("24h"), "{row}");

    // The certificate authenticates as the node.
    let cert_b64 = csr["status"]["certificate"].as_str().expect("certificate");
    let cert_pem = String::from_utf8(
        Command::new("base64")
            .arg("-d")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write as _;
                c.stdin
                    .take()
                    .expect("stdin")
                    .write_all(cert_b64.as_bytes())?;
                c.wait_with_output()
            })
            .expect("base64 -d")
            .stdout,
    )
    .expect("pem");
    let crt: PathBuf = dir.path().join("node-a.crt");
    let keyf: PathBuf = dir.path().join("node-a.key");
    std::fs::write(&crt, &cert_pem).expect("crt");
    std::fs::write(&keyf, &key).expect("key");
    let out = kubectl_as(
        &api,
        &[
            &format!("--client-certificate={}", crt.display()),
            &format!("--client-key={}", keyf.display()),
        ],
        &["auth", "whoami", "-o", "json"],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let who: Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(who["status"]["userInfo"]["username"], "system:node:node-a");
    let groups = who["status"]["userInfo"]["groups"].to_string();
    assert!(groups.contains("system:nodes"), "{groups}");
    // The certificate lives as long as the request asked (not the 1-year default).
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-enddate", "-in"])
        .arg(&crt)
        .output()
        .expect("openssl");
    let end = stdout(&out);
    let end = end.trim().trim_start_matches("notAfter=");
    let out = Command::new("date")
        .args(["-d", end, "+%s"])
        .output()
        .expect("date");
    let end: i64 = stdout(&out).trim().parse().expect("epoch");
    let now = jiff::Timestamp::now().as_second();
    assert!(
        (86400 - 600..=86400 + 600).contains(&(end - now)),
        "{}",
        end - now
    );

    let node_cred = [
        format!("--client-certificate={}", crt.display()),
        format!("--client-key={}", keyf.display()),
    ];
    let node_cred: Vec<&str> = node_cred.iter().map(String::as_str).collect();

    // Renewal: the node asks for its own identity again (selfnodeclient), auto-approved.
    let (pem, _) = make_csr("system:node:node-a", Some("system:nodes"));
    let yaml = csr_yaml(
        "node-csr-renew",
        &pem,
        "kubernetes.io/kube-apiserver-client-kubelet",
        &["digital signature", "client auth"],
        "",
    );
    let out = kubectl_as(&api, &node_cred, &["create", "-f", "-"], Some(&yaml));
    assert!(out.status.success(), "{}", stderr(&out));
    let csr = wait_for("the renewed certificate", Duration::from_secs(30), || {
        let csr = get_json(&api, &["get", "csr", "node-csr-renew"]);
        csr.pointer("/status/certificate").is_some().then_some(csr)
    });
    assert_eq!(csr["spec"]["username"], "system:node:node-a");

    // A serving certificate: not auto-approved; once an admin approves, signed for its names
    // with server auth.
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params =
        rcgen::CertificateParams::new(vec!["node-a.example".to_string(), "127.0.0.1".to_string()])
            .expect("params");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "system:nodes");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "system:node:node-a");
    let pem = params
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem");
    let yaml = csr_yaml(
        "node-serving-a",
        &pem,
        "kubernetes.io/kubelet-serving",
        &["digital signature", "key encipherment", "server auth"],
        "",
    );
    let out = kubectl_as(&api, &node_cred, &["create", "-f", "-"], Some(&yaml));
    assert!(out.status.success(), "{}", stderr(&out));
    admin_ok(&api, &["certificate", "approve", "node-serving-a"], None);
    let csr = wait_for("the serving certificate", Duration::from_secs(30), || {
        let csr = get_json(&api, &["get", "csr", "node-serving-a"]);
        csr.pointer("/status/certificate").is_some().then_some(csr)
    });
    // Approved by the admin, not by the auto-approver (which never approves serving requests).
    let reasons: Vec<&str> = csr["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .filter(|c| c["type"] == "Approved")
        .filter_map(|c| c["reason"].as_str())
        .collect();
    assert_eq!(reasons, ["KubectlApprove"], "{csr}");
    let serving = dir.path().join("serving.crt");
    std::fs::write(
        &serving,
        base64_decode(csr["status"]["certificate"].as_str().expect("cert")),
    )
    .expect("write");
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&serving)
        .output()
        .expect("openssl");
    let text = stdout(&out);
    assert!(
        text.contains("TLS Web Server Authentication")
            && !text.contains("TLS Web Client Authentication")
            && text.contains("DNS:node-a.example")
            && text.contains("IP Address:127.0.0.1"),
        "{text}"
    );

    // A request for someone else's identity is not auto-approved (and so never signed).
    let (pem, _) = make_csr("mallory", Some("system:masters"));
    let yaml = csr_yaml(
        "node-csr-evil",
        &pem,
        "kubernetes.io/kube-apiserver-client-kubelet",
        &["digital signature", "client auth"],
        "",
    );
    let out = kubectl_as(&api, &bearer, &["create", "-f", "-"], Some(&yaml));
    assert!(out.status.success(), "{}", stderr(&out));
    // An admin approves it anyway: the signer refuses with Failed.
    admin_ok(&api, &["certificate", "approve", "node-csr-evil"], None);
    let csr = wait_for("the Failed condition", Duration::from_secs(30), || {
        let csr = get_json(&api, &["get", "csr", "node-csr-evil"]);
        conditions(&csr)
            .iter()
            .any(|c| c == "Failed")
            .then_some(csr)
    });
    assert!(csr.pointer("/status/certificate").is_none());
    let failed = csr["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == "Failed")
        .expect("Failed")
        .clone();
    assert_eq!(failed["reason"], "SignerValidationFailure");

    // kumo token delete: the token stops working and its signature goes.
    let out = Command::new(kumo_bin())
        .args(["token", "delete", id, "--kubeconfig"])
        .arg(&api.kubeconfig)
        .output()
        .expect("kumo token delete");
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for("the signature removal", Duration::from_secs(30), || {
        let cm = get_json(
            &api,
            &["get", "configmap", "cluster-info", "-n", "kube-public"],
        );
        cm.pointer(&format!("/data/jws-kubeconfig-{id}"))
            .is_none()
            .then_some(())
    });
    let out = kubectl_as(&api, &bearer, &["get", "csr"], None);
    assert!(
        !out.status.success() && stderr(&out).contains("Unauthorized"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn token_cleaner_deletes_expired_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let api = ApiServerProc::start(StoreKind::Kumo, dir.path(), &[]).expect("apiserver");
    let _cm = start_controller_manager(&api, dir.path());
    let (id, secret) = kumo_auth::generate_bootstrap_token().expect("token");
    let mut obj = kumo_auth::bootstrap_token_secret(
        &id,
        &secret,
        None,
        kumo_auth::join::DEFAULT_USAGES,
        &[],
        "expired",
    )
    .expect("secret");
    obj["data"]["expiration"] = b64("2020-01-01T00:00:00Z").into();
    admin_ok(&api, &["create", "-f", "-"], Some(&obj.to_string()));
    wait_for(
        "the expired token's deletion",
        Duration::from_secs(30),
        || {
            let out = admin(
                &api,
                &[
                    "get",
                    "secret",
                    "-n",
                    "kube-system",
                    &format!("bootstrap-token-{id}"),
                ],
                None,
            );
            (!out.status.success() && stderr(&out).contains("NotFound")).then_some(())
        },
    );
}
