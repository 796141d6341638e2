//! Joining a cluster with a bootstrap token, like `kubeadm join` followed by the kubelet's
//! TLS bootstrap:
//!
//! 1. Discovery: `GET /api/v1/namespaces/kube-public/configmaps/cluster-info` without
//!    trusting the server yet (nothing to trust it with), then pin the CA found there by the
//!    SHA-256 of its SubjectPublicKeyInfo (`--ca-cert-hash sha256:…`), and check the
//!    ConfigMap's detached JWS `jws-kubeconfig-<token-id>` (HS256 keyed by the token
//!    secret) when it is there ([`kumo_auth::join`]). The pin is what makes the unverified first request safe.
//! 2. With the pinned CA and the token: create a CertificateSigningRequest
//!    (`kubernetes.io/kube-apiserver-client-kubelet`, CN `system:node:<name>`, O
//!    `system:nodes`) for a fresh ECDSA P-256 key and wait until it is approved and signed.
//! 3. Write `<dir>/pki/kubelet-client.{crt,key}` and `<dir>/kubelet.conf` pointing at them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use base64::Engine;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{Api, PostParams, WatchEvent, WatchParams};
use kumo_auth::Kubeconfig;
use kumo_auth::kubeconfig::Credentials;
use serde_json::Value;
use tracing::info;

use crate::server::{serving_cert_usable, write_private_file};

/// The kubeconfig [`join`] writes under its directory.
pub const KUBECONFIG_FILE: &str = "kubelet.conf";
/// The bootstrap kubeconfig (token credentials) used while the CSR is pending.
pub const BOOTSTRAP_KUBECONFIG_FILE: &str = "bootstrap-kubelet.conf";
/// Client certificate and key under `<dir>/pki`.
pub const CLIENT_CERT_FILE: &str = "kubelet-client.crt";
pub const CLIENT_KEY_FILE: &str = "kubelet-client.key";
/// The signer that issues kubelet client certificates (auto-approved for bootstrap tokens).
pub const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// A client certificate with less than this left is not reused: the node joins again.
const MIN_REMAINING: Duration = Duration::from_secs(3600);

/// Joins the cluster at `server` (`https://host:port`) as node `node_name` and returns the
/// path of the node's kubeconfig (`<dir>/kubelet.conf`). Reuses an existing kubeconfig whose
/// client certificate is still valid for an hour.
pub async fn join(
    server: &str,
    token: &str,
    ca_cert_hash: &str,
    node_name: &str,
    dir: &Path,
) -> anyhow::Result<PathBuf> {
    let kubeconfig = dir.join(KUBECONFIG_FILE);
    if kubeconfig.exists() {
        match existing_credentials_valid(&kubeconfig) {
            Ok(()) => {
                info!(path = %kubeconfig.display(), "kubelet credentials present: not joining again");
                return Ok(kubeconfig);
            }
            Err(e) => info!(error = %e, "existing kubelet credentials unusable: joining again"),
        }
    }
    let (token_id, token_secret) =
        kumo_auth::authn::bootstrap::parse_token(token).ok_or_else(|| {
            anyhow!("the bootstrap token must have the form [a-z0-9]{{6}}.[a-z0-9]{{16}}")
        })?;
    let wanted = normalize_hash(ca_cert_hash)?;

    // 1. Discovery, then pin.
    let cm = fetch_cluster_info(server, token).await?;
    let data = cm
        .get("data")
        .ok_or_else(|| anyhow!("the cluster-info ConfigMap has no data"))?;
    let kc_text = data
        .get("kubeconfig")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("there is no kubeconfig in the cluster-info ConfigMap"))?;
    let ca_pem = ca_from_cluster_info(kc_text)?;
    if !kumo_auth::join::verify_ca_cert_hash(ca_pem.as_bytes(), &wanted) {
        let got = kumo_auth::join::ca_cert_hash(ca_pem.as_bytes())?;
        bail!(
            "cluster CA found in cluster-info ConfigMap is invalid: none of the public keys \"{got}\" are pinned (--ca-cert-hash {wanted})"
        );
    }
    match data
        .get(format!("jws-kubeconfig-{token_id}"))
        .and_then(Value::as_str)
    {
        Some(jws) => {
            if !kumo_auth::join::jws_detached_verify(jws, kc_text, token_id, token_secret) {
                bail!(
                    "failed to verify JWS signature of received cluster info object, can't trust this API Server"
                );
            }
        }
        None => info!(
            token_id,
            "cluster-info carries no JWS for this token: relying on the CA pin alone"
        ),
    }

    // 2. CSR with the pinned CA and the token.
    let bootstrap_kc = dir.join(BOOTSTRAP_KUBECONFIG_FILE);
    Kubeconfig::new_single(
        server,
        &ca_pem,
        "kubernetes",
        "tls-bootstrap-token-user",
        &Credentials::Token(token.to_string()),
    )
    .write(&bootstrap_kc)?;
    let client = kumo_client::client_from_kubeconfig(&bootstrap_kc)
        .await
        .context("client with the bootstrap token")?;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::OrganizationName, "system:nodes");
    dn.push(
        rcgen::DnType::CommonName,
        format!("system:node:{node_name}"),
    );
    params.distinguished_name = dn;
    let csr_pem = params.serialize_request(&key)?.pem()?;
    let cert_pem = request_certificate(client, &csr_pem, KUBELET_CLIENT_SIGNER).await?;

    // 3. Files.
    let pki = dir.join("pki");
    let cert_path = pki.join(CLIENT_CERT_FILE);
    let key_path = pki.join(CLIENT_KEY_FILE);
    write_private_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_private_file(&cert_path, cert_pem.as_bytes(), 0o600)?;
    let mut kc = Kubeconfig::new_single(
        server,
        &ca_pem,
        "kubernetes",
        &format!("system:node:{node_name}"),
        &Credentials::Token(String::new()),
    );
    if let Some(u) = kc.users.first_mut() {
        u.user.token = None;
        u.user.client_certificate = Some(absolute(&cert_path)?.display().to_string());
        u.user.client_key = Some(absolute(&key_path)?.display().to_string());
    }
    kc.write(&kubeconfig)?;
    let _ = std::fs::remove_file(&bootstrap_kc);
    info!(path = %kubeconfig.display(), node = node_name, "joined the cluster");
    Ok(kubeconfig)
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    })
}

/// `sha256:<64 hex>`, lower-cased; anything else is refused up front.
fn normalize_hash(h: &str) -> anyhow::Result<String> {
    let hex = h
        .strip_prefix("sha256:")
        .ok_or_else(|| anyhow!("--ca-cert-hash {h:?}: only \"sha256:<hex>\" hashes are supported"))?
        .to_ascii_lowercase();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("--ca-cert-hash {h:?}: expected 64 hexadecimal digits after \"sha256:\"");
    }
    Ok(format!("sha256:{hex}"))
}

fn ca_from_cluster_info(kc_text: &str) -> anyhow::Result<String> {
    let kc =
        Kubeconfig::from_yaml(kc_text).context("the cluster-info kubeconfig does not parse")?;
    let data = kc
        .clusters
        .first()
        .and_then(|c| c.cluster.certificate_authority_data.clone())
        .ok_or_else(|| anyhow!("the cluster-info kubeconfig has no certificate-authority-data"))?;
    let pem = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .context("certificate-authority-data is not base64")?;
    Ok(String::from_utf8(pem)?)
}

/// The cluster-info ConfigMap, fetched over TLS without verifying the server.
async fn fetch_cluster_info(server: &str, token: &str) -> anyhow::Result<Value> {
    let uri: http::Uri = server
        .parse()
        .with_context(|| format!("server URL {server:?}"))?;
    if uri.scheme_str() != Some("https") {
        bail!("server URL {server:?} must be https://");
    }
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| anyhow!("server URL {server:?} has no host"))?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = authority.port_u16().unwrap_or(443);
    // Not verified here: the answer is checked against the CA pin afterwards.
    let config = kumo_auth::tls::client_config_unverified_server(None)?;
    let path = "/api/v1/namespaces/kube-public/configmaps/cluster-info";
    let get = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
        let name = rustls::pki_types::ServerName::try_from(host.clone())?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(tls)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = http::Request::get(path)
            .header(http::header::HOST, authority.as_str())
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Empty::new())?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, body))
    };
    let (status, body) = tokio::time::timeout(Duration::from_secs(30), get)
        .await
        .map_err(|_| anyhow!("GET {server}{path}: timed out"))?
        .with_context(|| format!("GET {server}{path}"))?;
    if !status.is_success() {
        bail!(
            "GET {server}{path}: {status}: {}",
            String::from_utf8_lossy(&body).trim()
        );
    }
    Ok(serde_json::from_slice(&body)?)
}

/// The signer of kubelet serving certificates (upstream: approved by an admin or an
/// external approver, never automatically).
pub const KUBELET_SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";
/// Serving certificate and key issued through [`request_serving_cert`], under the pki dir.
pub const SERVER_CERT_FILE: &str = "kubelet-server.crt";
pub const SERVER_KEY_FILE: &str = "kubelet-server.key";

/// A serving certificate signed by the cluster CA (upstream's `serverTLSBootstrap`): reuses
/// `<pki_dir>/kubelet-server.{crt,key}` while they are good for a week and name `node_name`
/// and every address, else posts a `kubernetes.io/kubelet-serving` CSR (CN
/// `system:node:<name>`, O `system:nodes`, the names as SANs) and waits until it is approved
/// (`kubectl certificate approve`) and signed. Hand the result to
/// [`crate::server::ServingCert::set`].
pub async fn request_serving_cert(
    client: kube::Client,
    node_name: &str,
    ips: &[std::net::IpAddr],
    pki_dir: &Path,
) -> anyhow::Result<kumo_auth::CertAndKey> {
    let cert_path = pki_dir.join(SERVER_CERT_FILE);
    let key_path = pki_dir.join(SERVER_KEY_FILE);
    let dns = vec![node_name.to_string()];
    if let (Ok(cert_pem), Ok(key_pem)) = (
        std::fs::read_to_string(&cert_path),
        std::fs::read_to_string(&key_path),
    ) && serving_cert_usable(&cert_pem, &dns, ips)
    {
        return Ok(kumo_auth::CertAndKey { cert_pem, key_pem });
    }
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::new(dns.clone())?;
    for ip in ips {
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress(*ip));
    }
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::OrganizationName, "system:nodes");
    dn.push(
        rcgen::DnType::CommonName,
        format!("system:node:{node_name}"),
    );
    params.distinguished_name = dn;
    let csr_pem = params.serialize_request(&key)?.pem()?;
    let cert_pem = request_certificate(client, &csr_pem, KUBELET_SERVING_SIGNER).await?;
    let ck = kumo_auth::CertAndKey {
        cert_pem,
        key_pem: key.serialize_pem(),
    };
    write_private_file(&key_path, ck.key_pem.as_bytes(), 0o600)?;
    write_private_file(&cert_path, ck.cert_pem.as_bytes(), 0o644)?;
    info!(path = %cert_path.display(), "kubelet serving certificate issued by the cluster CA");
    Ok(ck)
}

/// Creates a CSR for `csr_pem` with `signer` and waits until it carries a certificate;
/// Denied or Failed end the wait with an error.
pub async fn request_certificate(
    client: kube::Client,
    csr_pem: &str,
    signer: &str,
) -> anyhow::Result<String> {
    let csrs: Api<CertificateSigningRequest> = Api::all(client);
    let usages: &[&str] = if signer == KUBELET_CLIENT_SIGNER {
        &["digital signature", "client auth"]
    } else {
        &["digital signature", "server auth"]
    };
    let body: CertificateSigningRequest = serde_json::from_value(serde_json::json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"generateName": "node-csr-"},
        "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(csr_pem.as_bytes()),
            "signerName": signer,
            "usages": usages,
        },
    }))?;
    let created = csrs
        .create(&PostParams::default(), &body)
        .await
        .context("creating the CertificateSigningRequest")?;
    let name = created
        .metadata
        .name
        .clone()
        .ok_or_else(|| anyhow!("the created CSR has no name"))?;
    info!(csr = %name, signer, "waiting for the certificate signing request to be approved and signed");
    let mut current = created;
    loop {
        if let Some(cert) = issued(&current)? {
            return Ok(cert);
        }
        let rv = current
            .metadata
            .resource_version
            .clone()
            .unwrap_or_default();
        let wp = WatchParams::default()
            .fields(&format!("metadata.name={name}"))
            .timeout(60);
        let mut stream = csrs.watch(&wp, &rv).await?.boxed();
        let mut restarted = false;
        while let Some(ev) = stream.try_next().await? {
            match ev {
                WatchEvent::Added(c) | WatchEvent::Modified(c) => {
                    if let Some(cert) = issued(&c)? {
                        return Ok(cert);
                    }
                    current = c;
                }
                WatchEvent::Deleted(_) => bail!("certificate signing request {name} was deleted"),
                WatchEvent::Error(e) => {
                    tracing::debug!(error = ?e, "CSR watch error: getting it again");
                    restarted = true;
                    break;
                }
                WatchEvent::Bookmark(_) => {}
            }
        }
        if restarted || stream.next().await.is_none() {
            current = csrs.get(&name).await?;
        }
    }
}

/// Renews the node's client certificate (upstream's client certificate rotation) when
/// less than 30 % of its lifetime is left, or at once with `force`: a new key and a CSR made
/// with the current credentials (auto-approved as `selfnodeclient`), written over the files
/// `kubeconfig` names (or into it when it embeds them). Returns whether it renewed. Clients
/// already built keep the old certificate until rebuilt.
pub async fn rotate_client_cert(
    kubeconfig: &Path,
    node_name: &str,
    force: bool,
) -> anyhow::Result<bool> {
    let r = kumo_auth::kubeconfig::load_resolved(kubeconfig, None)?;
    let pem = r
        .client_cert_pem
        .ok_or_else(|| anyhow!("no client certificate in {}", kubeconfig.display()))?;
    let certs = kumo_auth::pki::parse_certs_pem(&pem)?;
    let first = certs
        .first()
        .ok_or_else(|| anyhow!("empty client certificate"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(first)
        .map_err(|e| anyhow!("client certificate: {e}"))?;
    let (from, to) = (
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
    );
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if !force && (to - now) * 10 > (to - from) * 3 {
        return Ok(false);
    }
    let client = kumo_client::client_from_kubeconfig(kubeconfig).await?;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::OrganizationName, "system:nodes");
    dn.push(
        rcgen::DnType::CommonName,
        format!("system:node:{node_name}"),
    );
    params.distinguished_name = dn;
    let csr_pem = params.serialize_request(&key)?.pem()?;
    let cert_pem = request_certificate(client, &csr_pem, KUBELET_CLIENT_SIGNER).await?;
    let mut kc = Kubeconfig::load(kubeconfig)?;
    let base = kubeconfig.parent().unwrap_or(Path::new("."));
    let user = kc
        .users
        .first_mut()
        .ok_or_else(|| anyhow!("no user in {}", kubeconfig.display()))?;
    match (
        user.user.client_certificate.clone(),
        user.user.client_key.clone(),
    ) {
        (Some(c), Some(k)) => {
            write_private_file(&base.join(k), key.serialize_pem().as_bytes(), 0o600)?;
            write_private_file(&base.join(c), cert_pem.as_bytes(), 0o600)?;
        }
        _ => {
            let b64 = base64::engine::general_purpose::STANDARD;
            user.user.client_certificate_data = Some(b64.encode(cert_pem.as_bytes()));
            user.user.client_key_data = Some(b64.encode(key.serialize_pem().as_bytes()));
            kc.write(kubeconfig)?;
        }
    }
    info!(node = node_name, "kubelet client certificate renewed");
    Ok(true)
}

/// The certificate of a signed CSR; an error when it was denied or failed.
fn issued(csr: &CertificateSigningRequest) -> anyhow::Result<Option<String>> {
    let Some(status) = &csr.status else {
        return Ok(None);
    };
    for c in status.conditions.iter().flatten() {
        if (c.type_ == "Denied" || c.type_ == "Failed") && c.status == "True" {
            bail!(
                "certificate signing request {} was {}: {}",
                csr.metadata.name.as_deref().unwrap_or(""),
                c.type_.to_lowercase(),
                c.message.as_deref().or(c.reason.as_deref()).unwrap_or("")
            );
        }
    }
    match &status.certificate {
        Some(b) if !b.0.is_empty() => Ok(Some(String::from_utf8(b.0.clone())?)),
        _ => Ok(None),
    }
}

/// Whether `<dir>/kubelet.conf` has a client certificate valid for at least an hour.
fn existing_credentials_valid(kubeconfig: &Path) -> anyhow::Result<()> {
    let r = kumo_auth::kubeconfig::load_resolved(kubeconfig, None)?;
    let pem = r
        .client_cert_pem
        .ok_or_else(|| anyhow!("no client certificate in {}", kubeconfig.display()))?;
    if r.client_key_pem.is_none() {
        bail!("no client key in {}", kubeconfig.display());
    }
    let certs = kumo_auth::pki::parse_certs_pem(&pem)?;
    let first = certs
        .first()
        .ok_or_else(|| anyhow!("empty client certificate"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(first)
        .map_err(|e| anyhow!("client certificate: {e}"))?;
    let left =
        cert.validity().not_after.timestamp() - time::OffsetDateTime::now_utc().unix_timestamp();
    if left < MIN_REMAINING.as_secs() as i64 {
        bail!("the client certificate expires in {left} s");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_format_is_checked() {
        assert!(
            normalize_hash(
                "sha256:ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789"
            )
            .is_ok()
        );
        assert!(normalize_hash("md5:00").is_err());
        assert!(normalize_hash("sha256:zz").is_err());
    }
}
