//! `kubectl exec` through the apiserver's upgrade proxy, against a stand-in kubelet: a TLS
//! server (self-signed, as kubelets serve by default; it checks the apiserver's client
//! certificate against the cluster CA) that accepts the WebSocket upgrade on
//! `/exec/{ns}/{pod}/{container}` and speaks the `v5.channel.k8s.io` stream protocol: it
//! echoes stdin to stdout, reports the command it got, and ends with an exit status. The real
//! kubelet's exec is tested where the kubelet lands; this checks what the apiserver adds:
//! authorization, the container choice, the kubelet URL, the client certificate it presents
//! and the byte relay both ways.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use futures::{SinkExt, StreamExt};
use kumo_tests::{ApiServerProc, StoreKind, kubectl_bin};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

/// What the stand-in kubelet saw: request paths (with query) and the client certificate user.
#[derive(Default, Debug)]
struct Seen {
    paths: Vec<String>,
    client_users: Vec<String>,
}

/// A self-signed serving certificate for 127.0.0.1, like a kubelet's default `kubelet.crt`
/// (the apiserver does not verify kubelets without `--kubelet-certificate-authority`).
fn kubelet_serving_cert() -> kumo_auth::CertAndKey {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "fake-kubelet@1");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.self_signed(&key).expect("self-sign");
    kumo_auth::CertAndKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// One exec stream: stdout gets `command=<args> container=<c>`, then stdin echoed until the
/// client closes it (v5 CLOSE signal), then the exit status (`fail N` exits N).
async fn exec_session<S>(ws: tokio_tungstenite::WebSocketStream<S>, path: String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut tx, mut rx) = ws.split();
    let (path_only, query) = path.split_once('?').unwrap_or((&path, ""));
    let container = path_only.rsplit('/').next().unwrap_or("").to_string();
    let q: Vec<(String, String)> = url_pairs(query);
    let command: Vec<String> = q
        .iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.clone())
        .collect();
    let stdin = q.iter().any(|(k, v)| k == "input" && v == "1");
    let mut first = vec![1u8];
    first.extend(format!("command={} container={container}\n", command.join(" ")).as_bytes());
    if tx.send(Message::Binary(first.into())).await.is_err() {
        return;
    }
    if stdin {
        while let Some(Ok(m)) = rx.next().await {
            let Message::Binary(b) = m else { continue };
            match b.first() {
                Some(0) => {
                    let mut out = vec![1u8];
                    out.extend_from_slice(&b[1..]);
                    if tx.send(Message::Binary(out.into())).await.is_err() {
                        return;
                    }
                }
                // v5: [255, stream] closes the client's stream.
                Some(255) if b.get(1) == Some(&0) => break,
                _ => {}
            }
        }
    }
    let status = match command.as_slice() {
        [f, code] if f == "fail" => format!(
            r#"{{"metadata":{{}},"status":"Failure","message":"command terminated with non-zero exit code","reason":"NonZeroExitCode","details":{{"causes":[{{"reason":"ExitCode","message":"{code}"}}]}}}}"#
        ),
        _ => r#"{"metadata":{},"status":"Success"}"#.to_string(),
    };
    let mut out = vec![3u8];
    out.extend(status.as_bytes());
    let _ = tx.send(Message::Binary(out.into())).await;
    let _ = tx
        .send(Message::Close(Some(
            tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
                reason: "".into(),
            },
        )))
        .await;
}

fn url_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(h, 16).unwrap_or(b'?'));
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Starts the stand-in kubelet on a runtime of its own; returns its port.
fn start_fake_kubelet(api: &ApiServerProc, seen: Arc<Mutex<Seen>>) -> u16 {
    let ca_pem = std::fs::read(api.cert_dir.join("ca.crt")).expect("ca.crt");
    let serving = kubelet_serving_cert();
    let tls = kumo_auth::tls::server_config_with(&ca_pem, &serving).expect("tls config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let seen = seen.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let user = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(kumo_auth::authenticate_cert)
                        .map(|u| u.name)
                        .unwrap_or_else(|| "<none>".into());
                    let path = Arc::new(Mutex::new(String::new()));
                    let p2 = path.clone();
                    let ws = tokio_tungstenite::accept_hdr_async(
                        tls,
                        move |req: &Request, mut resp: Response| {
                            *p2.lock().expect("lock") = req.uri().to_string();
                            let offered = req
                                .headers()
                                .get("sec-websocket-protocol")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_string();
                            if offered.split(',').any(|p| p.trim() == "v5.channel.k8s.io") {
                                resp.headers_mut().insert(
                                    "sec-websocket-protocol",
                                    "v5.channel.k8s.io".parse().expect("header"),
                                );
                            }
                            Ok(resp)
                        },
                    )
                    .await;
                    let path = path.lock().expect("lock").clone();
                    {
                        let mut s = seen.lock().expect("lock");
                        s.paths.push(path.clone());
                        s.client_users.push(user);
                    }
                    if let Ok(ws) = ws {
                        exec_session(ws, path).await;
                    }
                });
            }
        });
    });
    port
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

fn apply(api: &ApiServerProc, dir: &std::path::Path, name: &str, yaml: &str) {
    let f = dir.join(name);
    std::fs::write(&f, yaml).expect("write manifest");
    kubectl_ok(api, &["create", "-f", f.to_str().expect("path")]);
}

/// Opens a WebSocket through the apiserver to `path` as the admin (client certificate) and
/// returns the first binary message.
fn websocket_first_message(api: &ApiServerProc, path: &str) -> Vec<u8> {
    let ca = std::fs::read(api.cert_dir.join("ca.crt")).expect("ca");
    let admin = kumo_auth::CertAndKey {
        cert_pem: std::fs::read_to_string(api.cert_dir.join("admin.crt")).expect("admin.crt"),
        key_pem: std::fs::read_to_string(api.cert_dir.join("admin.key")).expect("admin.key"),
    };
    let tls = kumo_auth::tls::client_config(&ca, Some(&admin)).expect("client tls");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let url = format!("wss://127.0.0.1:{}{path}", api.port);
    rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", api.port))
            .await
            .expect("connect");
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
        let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
            .connect(name, tcp)
            .await
            .expect("tls");
        let mut req =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                url.as_str(),
            )
            .expect("request");
        req.headers_mut().insert(
            "sec-websocket-protocol",
            "v5.channel.k8s.io".parse().expect("header"),
        );
        let (mut ws, resp) = tokio_tungstenite::client_async(req, stream)
            .await
            .expect("upgrade through the apiserver");
        assert_eq!(
            resp.headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok()),
            Some("v5.channel.k8s.io")
        );
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) => return b.to_vec(),
                Some(Ok(_)) => continue,
                other => panic!("no message: {other:?}"),
            }
        }
    })
}

#[test]
fn kubectl_exec_goes_through_the_upgrade_proxy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, "jane-token,jane,uid-jane\n").expect("token file");
    let api = ApiServerProc::start(
        StoreKind::Kumo,
        dir.path(),
        &["--token-auth-file", tokens.to_str().expect("path")],
    )
    .expect("apiserver");
    let seen = Arc::new(Mutex::new(Seen::default()));
    let port = start_fake_kubelet(&api, seen.clone());
    apply(
        &api,
        dir.path(),
        "node.yaml",
        &format!(
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: fake-node\nstatus:\n  addresses:\n  - type: InternalIP\n    address: 127.0.0.1\n  daemonEndpoints:\n    kubeletEndpoint:\n      Port: {port}\n"
        ),
    );
    apply(
        &api,
        dir.path(),
        "pods.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: one\nspec:\n  nodeName: fake-node\n  containers:\n  - name: main\n    image: busybox\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: two\nspec:\n  nodeName: fake-node\n  containers:\n  - name: a\n    image: busybox\n  - name: b\n    image: busybox\n",
    );

    // A command's output, through WebSocket v5 from kubectl 1.33.
    let out = kubectl_ok(&api, &["exec", "one", "--", "echo", "hello world"]);
    assert_eq!(out, "command=echo hello world container=main\n");
    {
        let s = seen.lock().expect("lock");
        let path = s.paths.last().expect("a request reached the kubelet");
        assert!(
            path.starts_with("/exec/default/one/main?"),
            "kubelet path {path}"
        );
        let q = url_pairs(path.split_once('?').map_or("", |x| x.1));
        let commands: Vec<&str> = q
            .iter()
            .filter(|(k, _)| k == "command")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(commands, ["echo", "hello world"]);
        assert!(q.contains(&("output".into(), "1".into())), "{q:?}");
        assert!(q.contains(&("error".into(), "1".into())), "{q:?}");
        assert!(!q.iter().any(|(k, _)| k == "input"), "{q:?}");
        assert_eq!(
            s.client_users.last().map(String::as_str),
            Some("kube-apiserver-kubelet-client")
        );
    }

    // stdin flows to the kubelet and back.
    let mut child = Command::new(kubectl_bin("1.33"))
        .arg("--kubeconfig")
        .arg(&api.kubeconfig)
        .args(["exec", "-i", "two", "-c", "b", "--", "cat"])
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
        "command=cat container=b\nping from stdin\n"
    );
    assert!(
        seen.lock()
            .expect("lock")
            .paths
            .last()
            .is_some_and(|p| p.starts_with("/exec/default/two/b?") && p.contains("input=1")),
    );

    // The exit code of the remote command is kubectl's.
    let out = api
        .kubectl("1.33", &["exec", "one", "--", "fail", "3"])
        .expect("kubectl");
    assert_eq!(out.status.code(), Some(3), "{out:?}");

    // Several containers and none chosen: upstream's 400 (asked raw: kubectl would default).
    let out = api
        .kubectl(
            "1.33",
            &[
                "create",
                "--raw",
                "/api/v1/namespaces/default/pods/two/exec?command=ls&stdout=true",
                "-f",
                "/dev/null",
            ],
        )
        .expect("kubectl");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("a container name must be specified for pod two, choose one of: [a b]"),
        "{err}"
    );
    let out = api
        .kubectl("1.33", &["exec", "one", "-c", "nope", "--", "ls"])
        .expect("kubectl");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("container nope is not valid for pod one"),
        "{err}"
    );

    // attach and portforward take the same path to the kubelet's /attach and /portForward.
    let first = websocket_first_message(
        &api,
        "/api/v1/namespaces/default/pods/two/attach?container=a&stdout=true",
    );
    assert_eq!(first, b"\x01command= container=a\n");
    {
        let s = seen.lock().expect("lock");
        let path = s.paths.last().expect("attach reached the kubelet");
        assert!(
            path.starts_with("/attach/default/two/a?") && path.contains("output=1"),
            "{path}"
        );
    }
    let _ = websocket_first_message(
        &api,
        "/api/v1/namespaces/default/pods/one/portforward?ports=8080&ports=9090",
    );
    assert_eq!(
        seen.lock().expect("lock").paths.last().map(String::as_str),
        Some("/portForward/default/one?port=8080&port=9090")
    );

    // Without `create` on pods/exec: forbidden, and nothing reaches the kubelet.
    let before = seen.lock().expect("lock").paths.len();
    let out = Command::new(kubectl_bin("1.33"))
        .args(["--kubeconfig", "/dev/null", "--server", &api.url()])
        .arg(format!(
            "--certificate-authority={}",
            api.cert_dir.join("ca.crt").display()
        ))
        .args(["--token", "jane-token", "exec", "one", "--", "ls"])
        .output()
        .expect("kubectl");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("forbidden"), "{err}");
    assert_eq!(seen.lock().expect("lock").paths.len(), before);
}
