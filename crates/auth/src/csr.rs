//! PKCS#10 certificate signing requests as the `certificates.k8s.io` API uses them: parsing and
//! signature checking for the apiserver's validation and the approver's subject checks
//! ([`parse_csr_pem`]), and the signer the controller-manager's `csrsigning` controller uses
//! ([`CsrSigner`], upstream's `--cluster-signing-cert-file`/`--cluster-signing-key-file`).

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use rcgen::{
    CertificateSigningRequestParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData,
};
use rustls::pki_types::CertificateSigningRequestDer;
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509CertificationRequest};

use crate::error::{Error, Result};

/// What a request asks for, as read from a verified CSR.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CsrInfo {
    /// Subject common name (the user name for client certificates).
    pub common_name: String,
    /// Subject organizations (the groups for client certificates), in order.
    pub organizations: Vec<String>,
    /// DNS subject alternative names.
    pub dns_names: Vec<String>,
    /// IP subject alternative names.
    pub ip_addresses: Vec<IpAddr>,
    /// Email subject alternative names.
    pub email_addresses: Vec<String>,
    /// URI subject alternative names.
    pub uris: Vec<String>,
    /// The DER SubjectPublicKeyInfo.
    pub public_key_spki: Vec<u8>,
    /// The DER subject, as requested (copied into the issued certificate unchanged).
    pub subject_der: Vec<u8>,
    /// The request itself, DER.
    pub der: Vec<u8>,
}

/// The first PEM block of `pem` when it is a `CERTIFICATE REQUEST`, else upstream's error
/// text (`PEM block type must be CERTIFICATE REQUEST`).
fn csr_der(pem: &[u8]) -> std::result::Result<Vec<u8>, String> {
    const BAD: &str = "PEM block type must be CERTIFICATE REQUEST";
    match x509_parser::pem::parse_x509_pem(pem) {
        Ok((_, p)) if p.label == "CERTIFICATE REQUEST" => Ok(p.contents),
        _ => Err(BAD.to_string()),
    }
}

/// Parses a PEM `CERTIFICATE REQUEST` and verifies its self-signature, as upstream's
/// `ValidateCertificateSigningRequest` (`pem.Decode`, `x509.ParseCertificateRequest`,
/// `CheckSignature`). The error is the text upstream puts after `spec.request: Invalid value`.
pub fn parse_csr_pem(pem: &[u8]) -> std::result::Result<CsrInfo, String> {
    let der = csr_der(pem)?;
    let (_, csr) = X509CertificationRequest::from_der(&der)
        .map_err(|e| format!("x509: malformed certificate request: {e}"))?;
    csr.verify_signature()
        .map_err(|e| format!("x509: invalid signature on the certificate request: {e}"))?;
    let info = &csr.certification_request_info;
    let mut out = CsrInfo {
        common_name: info
            .subject
            .iter_common_name()
            .filter_map(|a| a.as_str().ok())
            .next()
            .unwrap_or("")
            .to_string(),
        organizations: info
            .subject
            .iter_organization()
            .filter_map(|a| a.as_str().ok().map(str::to_string))
            .collect(),
        public_key_spki: info.subject_pki.raw.to_vec(),
        subject_der: info.subject.as_raw().to_vec(),
        ..Default::default()
    };
    if let Some(exts) = csr.requested_extensions() {
        for ext in exts {
            if let ParsedExtension::SubjectAlternativeName(san) = ext {
                for n in &san.general_names {
                    match n {
                        GeneralName::DNSName(d) => out.dns_names.push(d.to_string()),
                        GeneralName::RFC822Name(e) => out.email_addresses.push(e.to_string()),
                        GeneralName::URI(u) => out.uris.push(u.to_string()),
                        GeneralName::IPAddress(b) => {
                            let ip = match b.len() {
                                4 => <[u8; 4]>::try_from(*b).ok().map(IpAddr::from),
                                16 => <[u8; 16]>::try_from(*b).ok().map(IpAddr::from),
                                _ => None,
                            };
                            out.ip_addresses.extend(ip);
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    out.der = der;
    Ok(out)
}

/// The key usages and extended key usages of `certificates.k8s.io/v1` `spec.usages`.
pub const KEY_USAGES: &[&str] = &[
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
];

/// Signs approved requests with a CA certificate and key (the cluster CA, normally).
pub struct CsrSigner {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
    ca_not_after: i64,
}

impl std::fmt::Debug for CsrSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsrSigner").finish_non_exhaustive()
    }
}

impl CsrSigner {
    /// A signer from PEM: the CA certificate and its private key.
    pub fn from_pem(ca_cert_pem: &str, ca_key_pem: &str) -> Result<Self> {
        let key = KeyPair::from_pem(ca_key_pem).map_err(|e| Error::Key(format!("CA key: {e}")))?;
        let der = crate::pki::parse_certs_pem(ca_cert_pem.as_bytes())?
            .into_iter()
            .next()
            .ok_or_else(|| Error::Certificate("no CA certificate".into()))?;
        let (_, x) = x509_parser::certificate::X509Certificate::from_der(&der)
            .map_err(|e| Error::Certificate(format!("CA certificate: {e}")))?;
        let ca_not_after = x.validity().not_after.timestamp();
        if x.tbs_certificate.subject_pki.raw != key.subject_public_key_info().as_slice() {
            return Err(Error::Key(
                "the CA key does not belong to the CA certificate".into(),
            ));
        }
        let issuer = Issuer::from_ca_cert_der(&der, key)
            .map_err(|e| Error::Certificate(format!("CA certificate: {e}")))?;
        Ok(CsrSigner {
            issuer,
            ca_pem: ca_cert_pem.to_string(),
            ca_not_after,
        })
    }

    /// A signer from PEM files (`--cluster-signing-cert-file`, `--cluster-signing-key-file`).
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self> {
        let c = std::fs::read_to_string(cert).map_err(|e| Error::io(cert, e))?;
        let k = std::fs::read_to_string(key).map_err(|e| Error::io(key, e))?;
        Self::from_pem(&c, &k)
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Issues a certificate for `csr_pem` with the subject and names it requests and the key
    /// usages of `usages` (`spec.usages` strings), valid for `validity` from now (backdated 5
    /// minutes, and never past the CA's own expiry, like upstream's `LocalSigner`).
    pub fn sign(&self, csr_pem: &[u8], usages: &[String], validity: Duration) -> Result<String> {
        let info = parse_csr_pem(csr_pem).map_err(Error::Certificate)?;
        let der = CertificateSigningRequestDer::from(info.der.clone());
        let mut csr = CertificateSigningRequestParams::from_der(&der)
            .map_err(|e| Error::Certificate(format!("certificate signing request: {e}")))?;
        let p = &mut csr.params;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = Vec::new();
        p.extended_key_usages = Vec::new();
        for u in usages {
            match u.as_str() {
                "signing" | "digital signature" => {
                    p.key_usages.push(KeyUsagePurpose::DigitalSignature)
                }
                "content commitment" => p.key_usages.push(KeyUsagePurpose::ContentCommitment),
                "key encipherment" => p.key_usages.push(KeyUsagePurpose::KeyEncipherment),
                "key agreement" => p.key_usages.push(KeyUsagePurpose::KeyAgreement),
                "data encipherment" => p.key_usages.push(KeyUsagePurpose::DataEncipherment),
                "cert sign" => p.key_usages.push(KeyUsagePurpose::KeyCertSign),
                "crl sign" => p.key_usages.push(KeyUsagePurpose::CrlSign),
                "encipher only" => p.key_usages.push(KeyUsagePurpose::EncipherOnly),
                "decipher only" => p.key_usages.push(KeyUsagePurpose::DecipherOnly),
                "any" => p.extended_key_usages.push(ExtendedKeyUsagePurpose::Any),
                "server auth" => p
                    .extended_key_usages
                    .push(ExtendedKeyUsagePurpose::ServerAuth),
                "client auth" => p
                    .extended_key_usages
                    .push(ExtendedKeyUsagePurpose::ClientAuth),
                "code signing" => p
                    .extended_key_usages
                    .push(ExtendedKeyUsagePurpose::CodeSigning),
                "email protection" | "s/mime" => p
                    .extended_key_usages
                    .push(ExtendedKeyUsagePurpose::EmailProtection),
                "timestamping" => p
                    .extended_key_usages
                    .push(ExtendedKeyUsagePurpose::TimeStamping),
                "ocsp signing" => p
                    .extended_key_usages
                    .push(ExtendedKeyUsagePurpose::OcspSigning),
                _ => {}
            }
        }
        p.key_usages.dedup();
        p.extended_key_usages.dedup();
        p.name_constraints = None;
        p.custom_extensions.clear();
        p.crl_distribution_points.clear();
        p.use_authority_key_identifier_extension = true;
        crate::pki::set_validity(p, validity)?;
        if p.not_after.unix_timestamp() > self.ca_not_after
            && let Ok(t) = time::OffsetDateTime::from_unix_timestamp(self.ca_not_after)
        {
            p.not_after = t;
        }
        p.serial_number = Some(crate::pki::random_serial()?);
        let cert = csr
            .signed_by(&self.issuer)
            .map_err(|e| Error::Certificate(format!("signing the request: {e}")))?;
        // rcgen keeps one value per subject attribute type: put the requested subject back as
        // it was (several O values are several groups).
        let der = crate::pki::replace_subject(cert.der(), &info.subject_der, self.issuer.key())?;
        Ok(crate::pki::pem_encode("CERTIFICATE", &der))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType};

    fn csr(cn: &str, orgs: &[&str], dns: &[&str]) -> String {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(dns.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("params");
        p.distinguished_name = rcgen::DistinguishedName::new();
        for o in orgs {
            p.distinguished_name.push(DnType::OrganizationName, *o);
        }
        p.distinguished_name.push(DnType::CommonName, cn);
        p.serialize_request(&key).expect("csr").pem().expect("pem")
    }

    #[test]
    fn parses_and_verifies() {
        let pem = csr("system:node:n1", &["system:nodes"], &["n1.example"]);
        let info = parse_csr_pem(pem.as_bytes()).expect("valid");
        assert_eq!(info.common_name, "system:node:n1");
        assert_eq!(info.organizations, ["system:nodes"]);
        assert_eq!(info.dns_names, ["n1.example"]);
        assert_eq!(
            parse_csr_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
            Err("PEM block type must be CERTIFICATE REQUEST".to_string())
        );
        // A flipped byte in the signed part breaks the signature (or the encoding).
        let mut der = info.der.clone();
        let i = der.len() / 2;
        der[i] ^= 0x01;
        let bad = crate::pki::pem_encode("CERTIFICATE REQUEST", &der);
        assert!(parse_csr_pem(bad.as_bytes()).is_err());
    }

    #[test]
    fn signs_with_the_requested_subject_and_usages() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = crate::ClusterPki::load_or_create(dir.path(), &[]).expect("pki");
        let signer = CsrSigner::from_files(
            &dir.path().join(crate::pki::CA_CERT_FILE),
            &dir.path().join(crate::pki::CA_KEY_FILE),
        )
        .expect("signer");
        let pem = csr("system:node:n1", &["system:nodes"], &[]);
        let cert = signer
            .sign(
                pem.as_bytes(),
                &["digital signature".into(), "client auth".into()],
                Duration::from_secs(3600),
            )
            .expect("signed");
        let der = crate::pki::parse_certs_pem(cert.as_bytes()).expect("pem");
        let user = crate::authenticate_cert(&der).expect("authenticates");
        assert_eq!(user.name, "system:node:n1");
        assert!(user.in_group("system:nodes"));
        let (_, x) = x509_parser::certificate::X509Certificate::from_der(&der[0]).expect("x509");
        let ca = crate::pki::parse_certs_pem(pki.ca_cert_pem().as_bytes()).expect("ca");
        let (_, cax) = x509_parser::certificate::X509Certificate::from_der(&ca[0]).expect("ca");
        x.verify_signature(Some(cax.public_key()))
            .expect("signed by the CA");
        let eku = x.extended_key_usage().expect("eku").expect("present");
        assert!(eku.value.client_auth && !eku.value.server_auth);
        let life = x.validity().not_after.timestamp() - x.validity().not_before.timestamp();
        assert!((3600..=3600 + 600).contains(&life), "{life}");
    }
}
