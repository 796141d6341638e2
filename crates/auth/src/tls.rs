//! rustls configurations (ring provider) for the apiserver and for kumo's own clients.

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;

use crate::error::{Error, Result};
use crate::pki::{CertAndKey, ClusterPki, parse_certs_pem};

/// The ALPN protocols the apiserver offers, in preference order.
pub const ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca_pem: &[u8]) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for c in parse_certs_pem(ca_pem)? {
        roots
            .add(c)
            .map_err(|e| Error::Tls(format!("CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// The apiserver's TLS configuration: its serving certificate from `pki`, ALPN `h2` and
/// `http/1.1`, and client certificates optional but, when presented, verified against the
/// cluster CA (a client without one is accepted and authenticates with a bearer token).
pub fn server_config(pki: &ClusterPki) -> Result<rustls::ServerConfig> {
    server_config_with(pki.ca_cert_pem().as_bytes(), pki.serving())
}

/// [`server_config`] from explicit PEM: a client CA bundle and a serving certificate (chain)
/// and key.
pub fn server_config_with(
    client_ca_pem: &[u8],
    serving: &CertAndKey,
) -> Result<rustls::ServerConfig> {
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots(client_ca_pem)?),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| Error::Tls(format!("client verifier: {e}")))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(serving.cert_chain_der()?, serving.key_der()?)
        .map_err(|e| Error::Tls(format!("serving certificate: {e}")))?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A client configuration trusting `ca_pem`, presenting `client` when given. ALPN is left
/// empty (HTTP clients set their own).
pub fn client_config(ca_pem: &[u8], client: Option<&CertAndKey>) -> Result<rustls::ClientConfig> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_root_certificates(roots(ca_pem)?);
    match client {
        Some(ck) => builder
            .with_client_auth_cert(ck.cert_chain_der()?, ck.key_der()?)
            .map_err(|e| Error::Tls(format!("client certificate: {e}"))),
        None => Ok(builder.with_no_client_auth()),
    }
}
