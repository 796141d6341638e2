//! The kubelet API server (`kumo_kubelet::server`) behind a real kumo apiserver, driven by
//! kubectl 1.33: `kubectl logs` (plain, `--tail`, `--timestamps`, `--limit-bytes`,
//! `--previous`, `-f` while the log grows) and `kubectl exec` (output, stdin, stderr, exit
//! codes) through the apiserver's proxy, plus the server's own authentication (client
//! certificates from the cluster CA, bearer tokens via TokenReview) and authorization
//! (SubjectAccessReview on nodes/proxy). The pod directory is a table of log files the test
//! writes in the CRI format; exec runs real processes on this host.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kumo_kubelet::directory::{ContainerRef, LookupError, PodDirectory};
use kumo_runtime::{
    BoxRead, BoxWrite, ContainerConfig, ContainerStatus, ExecOutput, ExecRequest, ExecSession,
    ImageInfo, Runtime, RuntimeError, RuntimeVersion, SandboxConfig, SandboxStatus, StreamTarget,
};
use kumo_tests::{ApiServerProc, StoreKind, kubectl_bin};

const NODE: &str = "kubelet-api-node";

/// The pods the server knows: containers by (namespace, pod, container).
#[derive(Default)]
struct Table {
    containers: Mutex<HashMap<(String, String, String), ContainerRef>>,
}

impl Table {
    fn set(&self, ns: &str, pod: &str, c: &str, r: ContainerRef) {
        self.containers
            .lock()
            .expect("lock")
            .insert((ns.into(), pod.into(), c.into()), r);
    }
    fn update(&self, ns: &str, pod: &str, c: &str, f: impl FnOnce(&mut ContainerRef)) {
        let mut m = self.containers.lock().expect("lock");
        if let Some(r) = m.get_mut(&(ns.into(), pod.into(), c.into())) {
            f(r);
        }
    }
}

impl PodDirectory for Table {
    fn container(&self, ns: &str, pod: &str, c: &str) -> Result<ContainerRef, LookupError> {
        let m = self.containers.lock().expect("lock");
        if !m.keys().any(|(n, p, _)| n == ns && p == pod) {
            return Err(LookupError::PodNotFound {
                namespace: ns.into(),
                name: pod.into(),
            });
        }
        m.get(&(ns.into(), pod.into(), c.into()))
            .cloned()
            .ok_or_else(|| LookupError::ContainerNotFound {
                pod: pod.into(),
                container: c.into(),
            })
    }
    fn pods(&self) -> Vec<Pod> {
        let m = self.containers.lock().expect("lock");
        let mut names: Vec<(String, String)> =
            m.keys().map(|(n, p, _)| (n.clone(), p.clone())).collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .map(|(ns, name)| {
                serde_json::from_value(serde_json::json!({
                    "metadata": {"namespace": ns, "name": name},
                    "spec": {"nodeName": NODE, "containers": []},
                    // Port forwarding dials the pod IP: the test's servers are local.
                    "status": {"podIP": "127.0.0.1"},
                }))
                .expect("pod")
            })
            .collect()
    }
}

/// A runtime whose exec runs the command as a process on this host (the only call the API
/// server makes); everything else is refused.
struct HostExec;

fn unsupported<T>() -> kumo_runtime::Result<T> {
    Err(RuntimeError::Unavailable(
        "host exec runtime: exec only".into(),
    ))
}

#[async_trait::async_trait]
impl Runtime for HostExec {
    async fn version(&self) -> kumo_runtime::Result<RuntimeVersion> {
        Ok(RuntimeVersion {
            name: "host".into(),
            version: "0".into(),
        })
    }
    async fn ensure_image(&self, _: &str) -> kumo_runtime::Result<ImageInfo> {
        unsupported()
    }
    async fn list_images(&self) -> kumo_runtime::Result<Vec<ImageInfo>> {
        unsupported()
    }
    async fn run_sandbox(&self, _: &SandboxConfig) -> kumo_runtime::Result<String> {
        unsupported()
    }
    async fn stop_sandbox(&self, _: &str) -> kumo_runtime::Result<()> {
        unsupported()
    }
    async fn remove_sandbox(&self, _: &str) -> kumo_runtime::Result<()> {
        unsupported()
    }
    async fn sandbox_status(&self, _: &str) -> kumo_runtime::Result<SandboxStatus> {
        unsupported()
    }
    async fn list_sandboxes(&self) -> kumo_runtime::Result<Vec<(String, SandboxStatus)>> {
        unsupported()
    }
    async fn create_container(
        &self,
        _: &str,
        _: &ContainerConfig,
        _: &SandboxConfig,
    ) -> kumo_runtime::Result<String> {
        unsupported()
    }
    async fn start_container(&self, _: &str) -> kumo_runtime::Result<()> {
        unsupported()
    }
    async fn stop_container(&self, _: &str, _: Duration) -> kumo_runtime::Result<()> {
        unsupported()
    }
    async fn remove_container(&self, _: &str) -> kumo_runtime::Result<()> {
        unsupported()
    }
    async fn container_status(&self, _: &str) -> kumo_runtime::Result<ContainerStatus> {
        unsupported()
    }
    async fn list_containers(&self, _: &str) -> kumo_runtime::Result<Vec<ContainerStatus>> {
        unsupported()
    }
    async fn exec_sync(
        &self,
        _: &str,
        _: &[String],
        _: Duration,
    ) -> kumo_runtime::Result<ExecOutput> {
        unsupported()
    }
    async fn exec(&self, _id: &str, req: &ExecRequest) -> kumo_runtime::Result<StreamTarget> {
        let (prog, args) = req
            .cmd
            .split_first()
            .ok_or_else(|| RuntimeError::Invalid("empty command".into()))?;
        let pipe = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
        let mut child = tokio::process::Command::new(prog)
            .args(args)
            .stdin(pipe(req.stdin))
            .stdout(pipe(req.stdout))
            .stderr(pipe(req.stderr))
            .spawn()?;
        let stdin = child.stdin.take().map(|s| Box::pin(s) as BoxWrite);
        let stdout = child.stdout.take().map(|s| Box::pin(s) as BoxRead);
        let stderr = child.stderr.take().map(|s| Box::pin(s) as BoxRead);
        Ok(StreamTarget::Local(ExecSession {
            stdin,
            stdout,
            stderr,
            resize: None,
            exit: Box::pin(async move {
                let st = child.wait().await?;
                Ok(st.code().unwrap_or(137))
            }),
        }))
    }
}

/// A serving certificate for 127.0.0.1 signed by the cluster CA (the apiserver verifies the
/// kubelet against it).
fn serving_cert(api: &ApiServerProc) -> kumo_auth::CertAndKey {
    let ca_pem = std::fs::read_to_string(api.cert_dir.join("ca.crt")).expect("ca.crt");
    let ca_key = std::fs::read_to_string(api.cert_dir.join("ca.key")).expect("ca.key");
    let ca_key = rcgen::KeyPair::from_pem(&ca_key).expect("ca key");
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).expect("issuer");
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), NODE.to_string()])
        .expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, NODE);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &issuer).expect("sign");
    kumo_auth::CertAndKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// Starts the kubelet API server (and its plain healthz port) on a runtime of its own.
fn start_server(api: &ApiServerProc, table: Arc<Table>) -> (u16, u16) {
    let serving = serving_cert(api);
    let ca_pem = std::fs::read_to_string(api.cert_dir.join("ca.crt")).expect("ca.crt");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    listener.set_nonblocking(true).expect("nonblocking");
    let hz = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let hz_port = hz.local_addr().expect("addr").port();
    hz.set_nonblocking(true).expect("nonblocking");
    let kubeconfig = api.kubeconfig.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let client = kumo_client::client_from_kubeconfig(&kubeconfig)
                .await
                .expect("client");
            let registry = prometheus::Registry::new();
            let c = prometheus::IntCounter::new("kubelet_test_total", "A test counter.")
                .expect("counter");
            registry.register(Box::new(c.clone())).expect("register");
            c.inc();
            let state = kumo_kubelet::server::ServerState {
                node_name: NODE.into(),
                pods: table,
                runtime: Arc::new(HostExec),
                metrics: registry,
                api: Some(client),
            };
            let hz = tokio::net::TcpListener::from_std(hz).expect("listener");
            tokio::spawn(kumo_kubelet::server::serve_healthz(hz));
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let tls = kumo_kubelet::server::TlsOptions {
                serving,
                client_ca_pem: Some(ca_pem),
            };
            let _ = kumo_kubelet::server::serve(state, listener, tls).await;
        });
    });
    (port, hz_port)
}

fn kubectl_ok(api: &ApiServerProc, args: &[&str]) -> String {
    let out = api.kubectl("1.33", args).expect("kubectl");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn create(api: &ApiServerProc, dir: &Path, name: &str, yaml: &str) {
    let f = dir.join(name);
    std::fs::write(&f, yaml).expect("write manifest");
    kubectl_ok(api, &["create", "-f", f.to_str().expect("path")]);
}

fn append(path: &Path, lines: &[&str]) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open log");
    for l in lines {
        writeln!(f, "{l}").expect("write log");
    }
}

/// GET over TLS straight to the kubelet, trusting the cluster CA; (status, body).
fn kubelet_get(
    api: &ApiServerProc,
    port: u16,
    path: &str,
    token: Option<&str>,
    client: Option<&kumo_auth::CertAndKey>,
) -> (u16, String) {
    let ca = std::fs::read(api.cert_dir.join("ca.crt")).expect("ca.crt");
    let cfg = kumo_auth::tls::client_config(&ca, client).expect("client config");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        use http_body_util::BodyExt;
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await
            .expect("tls");
        let (mut sender, conn) = hyper::client::conn::http1::handshake::<
            _,
            http_body_util::Empty<bytes::Bytes>,
        >(hyper_util::rt::TokioIo::new(tls))
        .await
        .expect("handshake");
        tokio::spawn(conn);
        let mut req = http::Request::get(path).header("host", format!("127.0.0.1:{port}"));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = sender
            .send_request(req.body(http_body_util::Empty::new()).expect("request"))
            .await
            .expect("response");
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    })
}

struct Fixture {
    _dir: tempfile::TempDir,
    api: ApiServerProc,
    table: Arc<Table>,
    logs: PathBuf,
    port: u16,
    hz_port: u16,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(
        &tokens,
        "jane-token,jane,uid-jane\nroot-token,root,uid-root,system:masters\n",
    )
    .expect("token file");
    let api = ApiServerProc::start(
        StoreKind::Kumo,
        dir.path(),
        &["--token-auth-file", tokens.to_str().expect("path")],
    )
    .expect("apiserver");
    // What kubeadm init does: the apiserver's kubelet client group is cluster-admin.
    let out = api
        .kubectl(
            "1.33",
            &[
                "create",
                "clusterrolebinding",
                "kubeadm:cluster-admins",
                "--clusterrole=cluster-admin",
                "--group=kubeadm:cluster-admins",
            ],
        )
        .expect("kubectl");
    assert!(
        out.status.success() || String::from_utf8_lossy(&out.stderr).contains("AlreadyExists"),
        "{out:?}"
    );
    let table = Arc::new(Table::default());
    let (port, hz_port) = start_server(&api, table.clone());
    create(
        &api,
        dir.path(),
        "node.yaml",
        &format!(
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: {NODE}\nstatus:\n  addresses:\n  - type: InternalIP\n    address: 127.0.0.1\n  daemonEndpoints:\n    kubeletEndpoint:\n      Port: {port}\n"
        ),
    );
    create(
        &api,
        dir.path(),
        "pod.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  nodeName: {NODE}\n  containers:\n  - name: c\n    image: busybox\n"
        ),
    );
    kubectl_ok(
        &api,
        &[
            "patch",
            "pod",
            "web",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Running","containerStatuses":[{"name":"c","image":"busybox","imageID":"","ready":true,"restartCount":1,"state":{"running":{"startedAt":"2024-01-01T00:00:00Z"}},"lastState":{"terminated":{"exitCode":1,"startedAt":"2024-01-01T00:00:00Z","finishedAt":"2024-01-01T00:00:00Z"}}}]}}"#,
        ],
    );
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).expect("logs dir");
    table.set(
        "default",
        "web",
        "c",
        ContainerRef {
            container_id: Some("attempt-1".into()),
            log_path: Some(logs.join("1.log")),
            previous_log_path: Some(logs.join("0.log")),
            running: true,
        },
    );
    Fixture {
        _dir: dir,
        api,
        table,
        logs,
        port,
        hz_port,
    }
}

#[test]
fn kubectl_logs_through_the_kubelet_api() {
    let f = fixture();
    let api = &f.api;
    append(
        &f.logs.join("0.log"),
        &["2024-01-01T00:00:00.000000001Z stdout F from the previous attempt"],
    );
    append(
        &f.logs.join("1.log"),
        &[
            "2024-01-01T00:00:01.5Z stdout F line one",
            "2024-01-01T00:00:02Z stderr F line two",
            "2024-01-01T00:00:03.123456789Z stdout P a long line ",
            "2024-01-01T00:00:03.2Z stdout P in three ",
            "2024-01-01T00:00:03.3Z stdout F pieces",
        ],
    );

    assert_eq!(
        kubectl_ok(api, &["logs", "web"]),
        "line one\nline two\na long line in three pieces\n"
    );
    let admin = kumo_auth::CertAndKey {
        cert_pem: std::fs::read_to_string(api.cert_dir.join("admin.crt")).expect("admin.crt"),
        key_pem: std::fs::read_to_string(api.cert_dir.join("admin.key")).expect("admin.key"),
    };
    assert_eq!(
        kubelet_get(
            api,
            f.port,
            "/containerLogs/default/web/c?tailLines=3",
            None,
            Some(&admin)
        )
        .1,
        "a long line in three pieces\n"
    );
    assert_eq!(
        kubectl_ok(api, &["logs", "web", "--tail=3"]),
        "a long line in three pieces\n"
    );
    assert_eq!(
        kubectl_ok(api, &["logs", "web", "--tail=4"]),
        "line two\na long line in three pieces\n"
    );
    assert_eq!(
        kubectl_ok(api, &["logs", "web", "--tail=4", "--timestamps"]),
        "2024-01-01T00:00:02Z line two\n2024-01-01T00:00:03.123456789Z a long line 2024-01-01T00:00:03.2Z in three 2024-01-01T00:00:03.3Z pieces\n"
    );
    assert_eq!(
        kubectl_ok(api, &["logs", "web", "--limit-bytes=12"]),
        "line one\nlin"
    );
    assert_eq!(
        kubectl_ok(api, &["logs", "web", "--since-time=2024-01-01T00:00:02Z"]),
        "line two\na long line in three pieces\n"
    );
    assert_eq!(
        kubectl_ok(api, &["logs", "web", "--previous"]),
        "from the previous attempt\n"
    );
    f.table
        .update("default", "web", "c", |c| c.previous_log_path = None);
    // kubectl fails; the apiserver turns the kubelet's 400 into a Status (upstream's
    // GenericHttpResponseChecker); the kubelet's own answer is upstream's.
    let out = api
        .kubectl("1.33", &["logs", "web", "--previous"])
        .expect("kubectl");
    assert!(!out.status.success(), "{out:?}");
    let (status, body) = kubelet_get(
        api,
        f.port,
        "/containerLogs/default/web/c?previous=true",
        None,
        Some(&admin),
    );
    assert_eq!(
        (status, body.as_str()),
        (
            400,
            r#"previous terminated container "c" in pod "web" not found"#
        )
    );

    // -f: the lines so far, then lines as they are written, until the container stops.
    let mut child = Command::new(kubectl_bin("1.33"))
        .arg("--kubeconfig")
        .arg(&api.kubeconfig)
        .args(["logs", "-f", "web", "--tail=3"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl logs -f");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("read");
    assert_eq!(line, "a long line in three pieces\n");
    append(
        &f.logs.join("1.log"),
        &["2024-01-01T00:00:04Z stdout F appended while following"],
    );
    line.clear();
    out.read_line(&mut line).expect("read");
    assert_eq!(line, "appended while following\n");
    append(
        &f.logs.join("1.log"),
        &["2024-01-01T00:00:05Z stdout F last words"],
    );
    f.table.update("default", "web", "c", |c| c.running = false);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).expect("read");
    assert_eq!(rest, "last words\n");
    let status = child.wait().expect("wait");
    assert!(status.success(), "kubectl logs -f ended with {status}");
}

#[test]
fn kubectl_exec_through_the_kubelet_api() {
    let f = fixture();
    let api = &f.api;
    assert_eq!(
        kubectl_ok(api, &["exec", "web", "--", "echo", "hi"]),
        "hi\n"
    );

    // stderr stays stderr; exit codes are kubectl's.
    let out = api
        .kubectl(
            "1.33",
            &[
                "exec",
                "web",
                "--",
                "sh",
                "-c",
                "echo out; echo err >&2; exit 3",
            ],
        )
        .expect("kubectl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    // kubectl adds its own line for the exit code it read from the status.
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "err\ncommand terminated with exit code 3\n"
    );
    assert_eq!(out.status.code(), Some(3), "{out:?}");

    // stdin reaches the process and its end (v5 close) ends `cat`.
    let mut child = Command::new(kubectl_bin("1.33"))
        .arg("--kubeconfig")
        .arg(&api.kubeconfig)
        .args(["exec", "-i", "web", "--", "sh", "-c", "cat; echo done"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl exec -i");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"ping from stdin\n")
        .expect("write stdin");
    let out = child.wait_with_output().expect("kubectl exec -i");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ping from stdin\ndone\n"
    );

    // kubectl 1.28 speaks SPDY/3.1 (v4.channel.k8s.io), passed through by the apiserver.
    let out = api
        .kubectl(
            "1.28",
            &[
                "exec",
                "web",
                "--",
                "sh",
                "-c",
                "echo spdy; echo e >&2; exit 5",
            ],
        )
        .expect("kubectl 1.28");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "spdy\n", "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("e\n"),
        "{out:?}"
    );
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    let mut child = Command::new(kubectl_bin("1.28"))
        .arg("--kubeconfig")
        .arg(&api.kubeconfig)
        .args(["exec", "-i", "web", "--", "sh", "-c", "cat; echo done"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl 1.28 exec -i");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"over spdy\n")
        .expect("write stdin");
    let out = child.wait_with_output().expect("kubectl exec -i");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "over spdy\ndone\n");

    // A command that cannot start: the runtime's error, not a hang.
    let out = api
        .kubectl("1.33", &["exec", "web", "--", "/nonexistent/program"])
        .expect("kubectl");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("No such file"),
        "{err}"
    );

    // A stopped container cannot be exec'd into.
    f.table.update("default", "web", "c", |c| c.running = false);
    let out = api
        .kubectl("1.33", &["exec", "web", "--", "true"])
        .expect("kubectl");
    assert!(!out.status.success(), "{out:?}");
}

#[test]
fn kubelet_api_authenticates_and_authorizes() {
    let f = fixture();
    let api = &f.api;
    // No credentials: 401, as upstream with anonymous auth off.
    let (status, _) = kubelet_get(api, f.port, "/pods", None, None);
    assert_eq!(status, 401);
    // A token the apiserver does not know.
    let (status, _) = kubelet_get(api, f.port, "/pods", Some("bogus"), None);
    assert_eq!(status, 401);
    // Known (TokenReview) but without nodes/proxy (SubjectAccessReview).
    let (status, body) = kubelet_get(api, f.port, "/pods", Some("jane-token"), None);
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        body,
        "Forbidden (user=jane, verb=get, resource=nodes, subresource=proxy)"
    );
    let (status, body) = kubelet_get(api, f.port, "/metrics", Some("jane-token"), None);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("subresource=metrics"), "{body}");
    // Granted nodes/stats through RBAC: a new subresource is asked afresh (the denials
    // above stay cached for upstream's 30 s).
    kubectl_ok(
        api,
        &[
            "create",
            "clusterrole",
            "node-stats",
            "--verb=get",
            "--resource=nodes/stats",
        ],
    );
    kubectl_ok(
        api,
        &[
            "create",
            "clusterrolebinding",
            "jane-stats",
            "--clusterrole=node-stats",
            "--user=jane",
        ],
    );
    let (status, body) = kubelet_get(api, f.port, "/stats/summary", Some("jane-token"), None);
    assert_eq!(status, 404, "authorized, then not served: {body}");

    // system:masters through a token.
    let (status, body) = kubelet_get(api, f.port, "/pods", Some("root-token"), None);
    assert_eq!(status, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).expect("PodList");
    assert_eq!(list["kind"], "PodList");
    assert_eq!(list["items"][0]["metadata"]["name"], "web");
    let (status, body) = kubelet_get(api, f.port, "/metrics", Some("root-token"), None);
    assert_eq!(status, 200);
    assert!(body.contains("kubelet_test_total 1"), "{body}");
    // Resource metrics (what metrics-server scrapes): upstream's names, promtool-clean.
    let (status, body) = kubelet_get(api, f.port, "/metrics/resource", Some("root-token"), None);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\nnode_cpu_usage_seconds_total "), "{body}");
    assert!(body.contains("\nnode_memory_working_set_bytes "), "{body}");
    assert!(body.contains("\nresource_scrape_error 0\n"), "{body}");
    let (code, lint) = kumo_tests::promtool_check_metrics(&body).expect("promtool");
    assert_eq!(code, 0, "{lint}\n{body}");
    let (status, body) = kubelet_get(api, f.port, "/healthz", Some("root-token"), None);
    assert_eq!((status, body.as_str()), (200, "ok"));

    // A client certificate from the cluster CA (the admin's: system:masters).
    let admin = kumo_auth::CertAndKey {
        cert_pem: std::fs::read_to_string(api.cert_dir.join("admin.crt")).expect("admin.crt"),
        key_pem: std::fs::read_to_string(api.cert_dir.join("admin.key")).expect("admin.key"),
    };
    let (status, body) = kubelet_get(
        api,
        f.port,
        "/containerLogs/default/web/nope",
        None,
        Some(&admin),
    );
    assert_eq!(status, 404, "{body}");
    assert_eq!(body, r#"container "nope" not found in pod "web""#);
    let (status, body) = kubelet_get(
        api,
        f.port,
        "/containerLogs/default/gone/c",
        None,
        Some(&admin),
    );
    assert_eq!(
        (status, body.as_str()),
        (404, r#"pod "gone" does not exist"#)
    );

    // The plain healthz port.
    let r = kumo_tests::http_get(
        &format!("http://127.0.0.1:{}/healthz", f.hz_port),
        Duration::from_secs(10),
    )
    .expect("healthz");
    assert_eq!(r.body.trim(), "ok");
}

/// `kumo controller-manager` with the CSR and bootstrap-token controllers, as a child.
struct ControllerManager(std::process::Child);

impl Drop for ControllerManager {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn join(server: &str, token: &str, hash: &str, node: &str, dir: &Path) -> anyhow::Result<PathBuf> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(kumo_kubelet::bootstrap::join(
            server, token, hash, node, dir,
        ))
}

#[test]
fn kubelet_join_with_a_bootstrap_token() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().expect("tempdir");
    let api = ApiServerProc::start(StoreKind::Kumo, dir.path(), &[]).expect("apiserver");
    let log = std::fs::File::create(dir.path().join("controller-manager.log")).expect("log");
    let _cm = ControllerManager(
        Command::new(kumo_tests::kumo_bin())
            .arg("controller-manager")
            .arg("--kubeconfig")
            .arg(&api.kubeconfig)
            .args(["--leader-elect", "false"])
            .args(["--port", &kumo_tests::free_port().to_string()])
            .args(["--controllers", "csrapproving,csrsigning,bootstrapsigner"])
            .arg("--cluster-signing-cert-file")
            .arg(api.cert_dir.join("ca.crt"))
            .arg("--cluster-signing-key-file")
            .arg(api.cert_dir.join("ca.key"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn controller-manager"),
    );
    let out = Command::new(kumo_tests::kumo_bin())
        .args(["token", "create", "--kubeconfig"])
        .arg(&api.kubeconfig)
        .args(["--ttl", "2h", "--print-join-command"])
        .output()
        .expect("kumo token create");
    assert!(out.status.success(), "{out:?}");
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let words: Vec<&str> = line.split_whitespace().collect();
    let arg = |flag: &str| {
        words
            .iter()
            .position(|w| *w == flag)
            .and_then(|i| words.get(i + 1))
            .map(|s| s.to_string())
            .unwrap_or_else(|| panic!("{flag} in {line}"))
    };
    let (server, token, hash) = (
        arg("--server"),
        arg("--bootstrap-token"),
        arg("--ca-cert-hash"),
    );

    // A wrong pin is refused before any credential is requested.
    let zero = format!("sha256:{}", "0".repeat(64));
    let err = join(&server, &token, &zero, "join-node", &dir.path().join("bad"))
        .expect_err("a wrong CA hash must fail");
    assert!(
        format!("{err:#}").contains("none of the public keys"),
        "{err:#}"
    );
    assert!(!dir.path().join("bad").join("kubelet.conf").exists());
    // A token the cluster does not know.
    let err = join(
        &server,
        "aaaaaa.bbbbbbbbbbbbbbbb",
        &hash,
        "join-node",
        &dir.path().join("bad"),
    )
    .expect_err("an unknown token must fail");
    assert!(format!("{err:#}").contains("401"), "{err:#}");

    // The join: CSR auto-approved and signed, kubeconfig written.
    let kdir = dir.path().join("kubelet");
    let kubeconfig = join(&server, &token, &hash, "join-node", &kdir).expect("join");
    assert_eq!(kubeconfig, kdir.join("kubelet.conf"));
    let mode = std::fs::metadata(kdir.join("pki").join("kubelet-client.key"))
        .expect("key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let out = Command::new(kubectl_bin("1.33"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["auth", "whoami", "-o", "json"])
        .output()
        .expect("kubectl auth whoami");
    assert!(out.status.success(), "{out:?}");
    let who: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        who["status"]["userInfo"]["username"],
        "system:node:join-node"
    );
    assert!(
        who["status"]["userInfo"]["groups"]
            .as_array()
            .is_some_and(|g| g.iter().any(|x| x == "system:nodes")),
        "{who}"
    );
    let csrs = |api: &ApiServerProc| {
        kubectl_ok(api, &["get", "csr", "-o", "name"])
            .lines()
            .count()
    };
    let before = csrs(&api);
    assert_eq!(before, 1);
    // Joining again with valid credentials reuses them.
    let again = join(&server, &token, &hash, "join-node", &kdir).expect("join again");
    assert_eq!(again, kubeconfig);
    assert_eq!(
        csrs(&api),
        before,
        "no new CSR for a node that has credentials"
    );

    // Client certificate rotation with the node's own credentials (selfnodeclient).
    let rotate = |force| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(kumo_kubelet::bootstrap::rotate_client_cert(
                &kubeconfig,
                "join-node",
                force,
            ))
            .expect("rotate")
    };
    assert!(!rotate(false), "a fresh certificate is not renewed");
    let old_cert = std::fs::read(kdir.join("pki").join("kubelet-client.crt")).expect("cert");
    assert!(rotate(true));
    assert_ne!(
        std::fs::read(kdir.join("pki").join("kubelet-client.crt")).expect("cert"),
        old_cert
    );
    assert_eq!(csrs(&api), before + 1);
    let out = Command::new(kubectl_bin("1.33"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args([
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ])
        .output()
        .expect("kubectl auth whoami");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "system:node:join-node",
        "{out:?}"
    );

    // Serving certificate: self-signed first (clients trusting the cluster CA refuse it),
    // then one from a kubelet-serving CSR an admin approves, swapped in while serving.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let node_client = rt
        .block_on(kumo_client::client_from_kubeconfig(&kubeconfig))
        .expect("node client");
    let ip: std::net::IpAddr = "127.0.0.1".parse().expect("ip");
    let self_signed =
        kumo_kubelet::server::load_or_create_serving_cert(&kdir.join("pki"), "join-node", &[ip])
            .expect("self-signed");
    let cert = kumo_kubelet::server::ServingCert::new(&self_signed).expect("cert");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    listener.set_nonblocking(true).expect("nonblocking");
    let ca_pem = std::fs::read_to_string(api.cert_dir.join("ca.crt")).expect("ca");
    let state = kumo_kubelet::server::ServerState {
        node_name: "join-node".into(),
        pods: Arc::new(Table::default()),
        runtime: Arc::new(HostExec),
        metrics: prometheus::Registry::new(),
        api: Some(node_client.clone()),
    };
    let serving = cert.clone();
    rt.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
        kumo_kubelet::server::serve_with_cert(state, listener, serving, Some(ca_pem)).await
    });
    let admin = kumo_auth::CertAndKey {
        cert_pem: std::fs::read_to_string(api.cert_dir.join("admin.crt")).expect("admin.crt"),
        key_pem: std::fs::read_to_string(api.cert_dir.join("admin.key")).expect("admin.key"),
    };
    assert!(
        !tls_handshake_ok(&api, port),
        "a self-signed certificate must not verify against the cluster CA"
    );
    let pki = kdir.join("pki");
    let request = rt.spawn(async move {
        kumo_kubelet::bootstrap::request_serving_cert(node_client, "join-node", &[ip], &pki).await
    });
    let give_up = std::time::Instant::now() + Duration::from_secs(60);
    let name = loop {
        assert!(
            std::time::Instant::now() < give_up,
            "no kubelet-serving CSR appeared"
        );
        let out = kubectl_ok(
            &api,
            &[
                "get",
                "csr",
                "-o",
                "jsonpath={range .items[?(@.spec.signerName==\"kubernetes.io/kubelet-serving\")]}{.metadata.name}{end}",
            ],
        );
        if !out.trim().is_empty() {
            break out.trim().to_string();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    kubectl_ok(&api, &["certificate", "approve", &name]);
    let issued = rt
        .block_on(request)
        .expect("task")
        .expect("serving certificate");
    cert.set(&issued).expect("swap");
    assert!(tls_handshake_ok(&api, port));
    let (status, body) = kubelet_get(&api, port, "/healthz", None, Some(&admin));
    assert_eq!((status, body.as_str()), (200, "ok"));
}

/// Whether a client trusting only the cluster CA completes a TLS handshake with the kubelet.
fn tls_handshake_ok(api: &ApiServerProc, port: u16) -> bool {
    let ca = std::fs::read(api.cert_dir.join("ca.crt")).expect("ca.crt");
    let cfg = kumo_auth::tls::client_config(&ca, None).expect("client config");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async move {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect");
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
            tokio_rustls::TlsConnector::from(Arc::new(cfg))
                .connect(name, tcp)
                .await
                .is_ok()
        })
}

/// A TCP server that answers each line with `echo: <line>`.
fn echo_server() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut w = conn.try_clone().expect("clone");
                for line in BufReader::new(conn).lines() {
                    let Ok(line) = line else { break };
                    if writeln!(w, "echo: {line}").is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

/// `kubectl port-forward` (1.33 tunnels SPDY in a WebSocket, 1.28 upgrades to SPDY) to a
/// pod port, through the apiserver and the kubelet.
#[test]
fn kubectl_port_forward_through_the_kubelet_api() {
    let f = fixture();
    let remote = echo_server();
    for version in ["1.33", "1.28"] {
        let local = kumo_tests::free_port();
        let mut child = Command::new(kubectl_bin(version))
            .arg("--kubeconfig")
            .arg(&f.api.kubeconfig)
            .args(["port-forward", "pod/web", &format!("{local}:{remote}")])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl port-forward");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        out.read_line(&mut line).expect("read");
        assert!(
            line.starts_with("Forwarding from 127.0.0.1:"),
            "{version}: {line}"
        );
        // Two connections one after the other, each with two round trips.
        for i in 0..2 {
            let conn = std::net::TcpStream::connect(("127.0.0.1", local)).expect("connect");
            let mut w = conn.try_clone().expect("clone");
            let mut r = BufReader::new(conn);
            for j in 0..2 {
                writeln!(w, "hello {i}.{j} via {version}").expect("write");
                let mut got = String::new();
                r.read_line(&mut got).expect("read");
                assert_eq!(got, format!("echo: hello {i}.{j} via {version}\n"));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Runs `path` on the kubelet over a raw WebSocket offering `protocol` (as the admin, with
/// its client certificate); returns the negotiated protocol and every message received.
fn ws_exec(
    api: &ApiServerProc,
    port: u16,
    path: &str,
    protocol: &str,
) -> (String, Vec<tokio_tungstenite::tungstenite::Message>) {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let ca = std::fs::read(api.cert_dir.join("ca.crt")).expect("ca.crt");
    let admin = kumo_auth::CertAndKey {
        cert_pem: std::fs::read_to_string(api.cert_dir.join("admin.crt")).expect("admin.crt"),
        key_pem: std::fs::read_to_string(api.cert_dir.join("admin.key")).expect("admin.key"),
    };
    let cfg = kumo_auth::tls::client_config(&ca, Some(&admin)).expect("client config");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await
            .expect("tls");
        let mut req = format!("wss://127.0.0.1:{port}{path}")
            .into_client_request()
            .expect("request");
        req.headers_mut()
            .insert("sec-websocket-protocol", protocol.parse().expect("header"));
        let (mut ws, resp) = tokio_tungstenite::client_async(req, tls)
            .await
            .expect("websocket handshake");
        let negotiated = resp
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let mut got = Vec::new();
        while let Some(Ok(m)) = ws.next().await {
            let close = m.is_close();
            got.push(m);
            if close {
                break;
            }
        }
        (negotiated, got)
    })
}

/// The WebSocket channel protocols byte for byte, straight to the kubelet: the base64
/// variant of v4 and the v1 `channel.k8s.io` (error text instead of a Status).
#[test]
fn exec_websocket_protocol_variants() {
    use tokio_tungstenite::tungstenite::Message;
    let f = fixture();
    let path = "/exec/default/web/c?command=sh&command=-c&command=echo%20hi%3B%20exit%207&output=1&error=1";
    let (proto, msgs) = ws_exec(&f.api, f.port, path, "v4.base64.channel.k8s.io");
    assert_eq!(proto, "v4.base64.channel.k8s.io");
    let texts: Vec<String> = msgs
        .iter()
        .filter_map(|m| match m {
            Message::Text(t) => Some(t.to_string()),
            _ => None,
        })
        .collect();
    // "1" = the empty stdout announcement, then "hi\n", then the status on channel 3.
    assert_eq!(
        texts[..2],
        ["1".to_string(), "1aGkK".to_string()],
        "{texts:?}"
    );
    let status = texts[2].strip_prefix('3').expect("error channel");
    let status: serde_json::Value =
        serde_json::from_slice(&base64_decode(status)).expect("status json");
    assert_eq!(status["status"], "Failure");
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(
        status["details"]["causes"][0],
        serde_json::json!({"reason": "ExitCode", "message": "7"})
    );
    assert!(msgs.last().is_some_and(Message::is_close), "{msgs:?}");

    let (proto, msgs) = ws_exec(&f.api, f.port, path, "channel.k8s.io");
    assert_eq!(proto, "channel.k8s.io");
    let bins: Vec<Vec<u8>> = msgs
        .iter()
        .filter_map(|m| match m {
            Message::Binary(b) => Some(b.to_vec()),
            _ => None,
        })
        .collect();
    assert_eq!(bins[0], [1u8]);
    assert_eq!(bins[1], b"\x01hi\n");
    assert_eq!(bins[2][0], 3);
    assert!(
        String::from_utf8_lossy(&bins[2][1..]).contains("exit code 7"),
        "{bins:?}"
    );
}

fn base64_decode(s: &str) -> Vec<u8> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = A.iter().position(|a| *a == c).expect("base64") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}
