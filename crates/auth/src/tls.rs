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

/// Accepts any server certificate but still checks the handshake signatures: what upstream's
/// apiserver does towards kubelets without `--kubelet-certificate-authority` (kubelets serve
/// with a self-signed `kubelet.crt` by default). The apiserver still authenticates itself with
/// its client certificate.
#[derive(Debug)]
struct AnyServerCert(Arc<CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A client configuration that does not verify the server's certificate (see
/// [`AnyServerCert`]), presenting `client` when given: the apiserver's kubelet client when no
/// `--kubelet-certificate-authority` is given (like upstream), HTTPS probes (upstream's
/// `InsecureSkipVerify`: a probe checks liveness, not identity) and a joining kubelet's
/// discovery request (its answer is checked against the CA pin afterwards).
pub fn client_config_unverified_server(
    client: Option<&CertAndKey>,
) -> Result<rustls::ClientConfig> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider)));
    match client {
        Some(ck) => builder
            .with_client_auth_cert(ck.cert_chain_der()?, ck.key_der()?)
            .map_err(|e| Error::Tls(format!("client certificate: {e}"))),
        None => Ok(builder.with_no_client_auth()),
    }
}
