use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, ServerConnection};

use crate::authn::authenticate_cert;
use crate::pki::ClusterPki;
use crate::tls::*;

/// Runs a TLS handshake in memory; returns the server side or the first error.
fn handshake(
    client: rustls::ClientConfig,
    server: &Arc<rustls::ServerConfig>,
    name: &str,
) -> Result<ServerConnection, String> {
    let mut c = ClientConnection::new(
        Arc::new(client),
        ServerName::try_from(name.to_string()).unwrap(),
    )
    .map_err(|e| e.to_string())?;
    let mut s = ServerConnection::new(server.clone()).map_err(|e| e.to_string())?;
    for _ in 0..20 {
        let mut buf = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        if !buf.is_empty() {
            s.read_tls(&mut &buf[..]).unwrap();
            s.process_new_packets()
                .map_err(|e| format!("server: {e}"))?;
        }
        let mut buf = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut buf).unwrap();
        }
        if !buf.is_empty() {
            c.read_tls(&mut &buf[..]).unwrap();
            c.process_new_packets()
                .map_err(|e| format!("client: {e}"))?;
        }
        if !c.is_handshaking() && !s.is_handshaking() {
            // Flush the client's last flight (TLS 1.3 client auth finishes server-side).
            let mut buf = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut buf).unwrap();
            }
            if !buf.is_empty() {
                s.read_tls(&mut &buf[..]).unwrap();
                s.process_new_packets()
                    .map_err(|e| format!("server: {e}"))?;
            }
            return Ok(s);
        }
    }
    Err("handshake did not finish".into())
}

#[test]
fn client_certificates_are_optional_but_verified() {
    let dir = tempfile::tempdir().unwrap();
    let pki = ClusterPki::load_or_create(dir.path(), &["10.96.0.1".into()]).unwrap();
    let server = Arc::new(server_config(&pki).unwrap());
    assert_eq!(
        server.alpn_protocols,
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    );
    let ca = pki.ca_cert_pem().as_bytes();

    // With the admin certificate: the peer chain authenticates kubernetes-admin.
    let mut cc = client_config(ca, Some(pki.admin())).unwrap();
    cc.alpn_protocols = vec![b"h2".to_vec()];
    let s = handshake(cc, &server, "127.0.0.1").unwrap();
    assert_eq!(s.alpn_protocol(), Some(&b"h2"[..]));
    let user = authenticate_cert(s.peer_certificates().unwrap()).unwrap();
    assert_eq!(user.name, "kubernetes-admin");
    assert!(user.in_group("system:masters"));

    // Without a client certificate: accepted, no peer certificates (bearer-token clients).
    for name in ["localhost", "kubernetes.default.svc", "10.96.0.1", "::1"] {
        let mut cc = client_config(ca, None).unwrap();
        cc.alpn_protocols = vec![b"http/1.1".to_vec()];
        let s = handshake(cc, &server, name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(s.peer_certificates().is_none());
        assert_eq!(s.alpn_protocol(), Some(&b"http/1.1"[..]));
    }

    // A name not in the certificate is refused by the client.
    assert!(handshake(client_config(ca, None).unwrap(), &server, "example.com").is_err());

    // A client certificate from another CA is refused by the server.
    let other_dir = tempfile::tempdir().unwrap();
    let other = ClusterPki::load_or_create(other_dir.path(), &[]).unwrap();
    let err = handshake(
        client_config(ca, Some(other.admin())).unwrap(),
        &server,
        "localhost",
    )
    .unwrap_err();
    assert!(err.contains("server"), "{err}");

    // A serving certificate used as a client certificate is refused (wrong usage).
    let serving_as_client = pki
        .sign_serving_cert("x", &["x".into()], Duration::from_secs(600))
        .unwrap();
    assert!(
        handshake(
            client_config(ca, Some(&serving_as_client)).unwrap(),
            &server,
            "localhost"
        )
        .is_err()
    );

    // A node certificate works.
    let node = pki
        .sign_client_cert(
            "system:node:n1",
            &["system:nodes".into()],
            Duration::from_secs(600),
        )
        .unwrap();
    let s = handshake(
        client_config(ca, Some(&node)).unwrap(),
        &server,
        "localhost",
    )
    .unwrap();
    assert_eq!(
        authenticate_cert(s.peer_certificates().unwrap())
            .unwrap()
            .name,
        "system:node:n1"
    );
}

#[test]
fn bad_pem_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let pki = ClusterPki::load_or_create(dir.path(), &[]).unwrap();
    assert!(client_config(b"junk", None).is_err());
    assert!(server_config_with(b"junk", pki.serving()).is_err());
    let mut bad = pki.serving().clone();
    bad.key_pem = pki.admin().key_pem.clone();
    assert!(server_config_with(pki.ca_cert_pem().as_bytes(), &bad).is_err());
}

/// Serves HTTPS on a loopback port with our server config and answers every request with
/// the authenticated user (client certificate or bearer token) as JSON, for `requests`
/// connections.
fn whoami_server(pki: &ClusterPki, requests: usize) -> (u16, std::thread::JoinHandle<()>) {
    use std::io::{Read, Write};
    let mut config = server_config(pki).unwrap();
    // A bare HTTP/1.1 responder: offer only http/1.1.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let config = Arc::new(config);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let tokens = crate::authn::StaticTokens::parse("tok123,tokenuser,7,\"g1\"\n").unwrap();
    let handle = std::thread::spawn(move || {
        for _ in 0..requests {
            let (sock, _) = listener.accept().unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let conn = ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, sock);
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match tls.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let text = String::from_utf8_lossy(&req).to_string();
            let user = tls
                .conn
                .peer_certificates()
                .and_then(|c| authenticate_cert(c))
                .or_else(|| {
                    text.lines()
                        .find_map(|l| l.strip_prefix("Authorization: "))
                        .and_then(crate::authn::bearer_token)
                        .and_then(|t| tokens.authenticate(t))
                })
                .unwrap_or_else(crate::authn::UserInfo::anonymous);
            let body = serde_json::to_string(&user).unwrap();
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tls.write_all(resp.as_bytes());
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    (port, handle)
}

#[test]
fn real_kubectl_talks_to_a_rustls_server_with_our_pki_and_kubeconfigs() {
    let kubectl = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";
    if !std::path::Path::new(kubectl).exists() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = ClusterPki::load_or_create(&dir.path().join("pki"), &[]).unwrap();
    let (port, server) = whoami_server(&pki, 3);
    let run = |kubeconfig: &std::path::Path| {
        let out = std::process::Command::new(kubectl)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["get", "--raw", "/whoami", "--request-timeout=20s"])
            .env("HOME", dir.path())
            .env_remove("KUBECONFIG")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubectl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };

    // Admin kubeconfig over 127.0.0.1 and localhost: client certificate.
    let admin = dir.path().join("admin.kubeconfig");
    crate::kubeconfig::write_admin_kubeconfig(
        &admin,
        &format!("https://127.0.0.1:{port}"),
        &pki,
        "kumo",
        "kubernetes-admin",
    )
    .unwrap();
    let v = run(&admin);
    assert_eq!(v["name"], "kubernetes-admin");
    assert_eq!(
        v["groups"],
        serde_json::json!(["system:masters", "system:authenticated"])
    );
    crate::kubeconfig::write_admin_kubeconfig(
        &admin,
        &format!("https://localhost:{port}"),
        &pki,
        "kumo",
        "kubernetes-admin",
    )
    .unwrap();
    assert_eq!(run(&admin)["name"], "kubernetes-admin");

    // Token kubeconfig: no client certificate, bearer token.
    let tok = dir.path().join("token.kubeconfig");
    crate::kubeconfig::write_kubeconfig(
        &tok,
        &format!("https://127.0.0.1:{port}"),
        pki.ca_cert_pem(),
        "kumo",
        "t",
        &crate::kubeconfig::Credentials::Token("tok123".into()),
    )
    .unwrap();
    let v = run(&tok);
    assert_eq!(v["name"], "tokenuser");
    assert_eq!(v["uid"], "7");
    server.join().unwrap();
}
