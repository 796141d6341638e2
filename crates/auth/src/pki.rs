//! The cluster PKI: a CA, the apiserver's serving certificate, the admin client certificate
//! and the ServiceAccount signing key, kept as PEM files in one directory (kubeadm's layout and
//! names where kubeadm has them).
//!
//! All keys are ECDSA P-256 (generated with rcgen on ring), written with mode 0600.

use std::collections::BTreeSet;
use std::fmt;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
    SanType, SerialNumber,
};
use ring::rand::SecureRandom;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer, PrivateKeyDer};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::error::{Error, Result};

/// File name of the cluster CA certificate.
pub const CA_CERT_FILE: &str = "ca.crt";
/// File name of the cluster CA private key.
pub const CA_KEY_FILE: &str = "ca.key";
/// File name of the apiserver serving certificate.
pub const SERVING_CERT_FILE: &str = "apiserver.crt";
/// File name of the apiserver serving key.
pub const SERVING_KEY_FILE: &str = "apiserver.key";
/// File name of the admin client certificate.
pub const ADMIN_CERT_FILE: &str = "admin.crt";
/// File name of the admin client key.
pub const ADMIN_KEY_FILE: &str = "admin.key";
/// File name of the ServiceAccount token signing key (PKCS#8 PEM).
pub const SA_KEY_FILE: &str = "sa.key";
/// File name of the ServiceAccount token verification key (SubjectPublicKeyInfo PEM).
pub const SA_PUB_FILE: &str = "sa.pub";

/// Common name of the cluster CA (kubeadm's).
pub const CA_COMMON_NAME: &str = "kubernetes";
/// Common name of the apiserver serving certificate (kubeadm's).
pub const SERVING_COMMON_NAME: &str = "kube-apiserver";
/// User name of the admin client certificate (kubeadm's).
pub const ADMIN_USER: &str = "kubernetes-admin";
/// The group that RBAC always allows (upstream's `user.SystemPrivilegedGroup`).
pub const SYSTEM_MASTERS: &str = "system:masters";

/// The names every apiserver serving certificate carries, before the configured ones.
pub const DEFAULT_SERVING_SANS: &[&str] = &[
    "127.0.0.1",
    "::1",
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

/// How long the CA is valid (kubeadm: 10 years).
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long leaf certificates made at start are valid (kubeadm: 1 year).
pub const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// A leaf certificate with less than this left is renewed at start.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

/// Backdating of `notBefore`, to tolerate clock skew between machines.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// A PEM certificate (possibly a chain, leaf first) and its PEM private key.
#[derive(Clone)]
pub struct CertAndKey {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The PKCS#8 private key, PEM.
    pub key_pem: String,
}

impl fmt::Debug for CertAndKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertAndKey")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl CertAndKey {
    /// The certificate chain as DER.
    pub fn cert_chain_der(&self) -> Result<Vec<CertificateDer<'static>>> {
        parse_certs_pem(self.cert_pem.as_bytes())
    }

    /// The private key as DER.
    pub fn key_der(&self) -> Result<PrivateKeyDer<'static>> {
        parse_private_key_pem(self.key_pem.as_bytes())
    }
}

/// What a certificate signed by [`ClusterPki::sign_csr`] may be used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertUsage {
    /// TLS client authentication (a user, node or component credential).
    Client,
    /// TLS server authentication (e.g. a kubelet's serving certificate).
    Server,
}

/// The cluster's certificate authority and the credentials made from it.
pub struct ClusterPki {
    dir: PathBuf,
    ca_cert_pem: String,
    ca_cert_der: CertificateDer<'static>,
    ca_spki: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
    serving: CertAndKey,
    admin: CertAndKey,
    sa_key_pem: String,
    sa_pub_pem: String,
    sa_private_pkcs8: Vec<u8>,
    sa_public_spki: Vec<u8>,
}

impl fmt::Debug for ClusterPki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterPki")
            .field("dir", &self.dir)
            .field("ca_cert_hash", &self.ca_cert_hash())
            .finish_non_exhaustive()
    }
}

impl ClusterPki {
    /// Loads the PKI from `cert_dir`, creating whatever is missing.
    ///
    /// On first start this creates the CA (`ca.crt`/`ca.key`), the apiserver serving
    /// certificate (`apiserver.crt`/`.key`) for [`DEFAULT_SERVING_SANS`] plus `sans` (IP
    /// addresses or DNS names), the admin client certificate (`admin.crt`/`.key`,
    /// CN=kubernetes-admin, O=system:masters) and the ServiceAccount signing key pair
    /// (`sa.key`/`sa.pub`). On later starts it loads them, and renews the serving or admin
    /// certificate when it is unreadable, not issued by the CA, within [`RENEW_BEFORE`] of
    /// expiring, or (serving only) its names differ from the requested ones. A CA that is
    /// present but unreadable is an error: it is never silently replaced.
    pub fn load_or_create(cert_dir: &Path, sans: &[String]) -> Result<Self> {
        std::fs::create_dir_all(cert_dir).map_err(|e| Error::io(cert_dir, e))?;
        let ca_cert_path = cert_dir.join(CA_CERT_FILE);
        let ca_key_path = cert_dir.join(CA_KEY_FILE);

        let (ca_cert_pem, ca_key) = if ca_cert_path.exists() || ca_key_path.exists() {
            let cert = read_string(&ca_cert_path)?;
            let key = read_string(&ca_key_path)?;
            let key = KeyPair::from_pem(&key)
                .map_err(|e| Error::Key(format!("{}: {e}", ca_key_path.display())))?;
            tracing::debug!(dir = %cert_dir.display(), "loaded cluster CA");
            (cert, key)
        } else {
            let key = new_key()?;
            let mut params = CertificateParams::default();
            params.distinguished_name = dn(CA_COMMON_NAME, &[]);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
            ];
            set_validity(&mut params, CA_VALIDITY)?;
            params.serial_number = Some(random_serial()?);
            let cert = params
                .self_signed(&key)
                .map_err(|e| Error::Certificate(format!("self-signing the CA: {e}")))?;
            write_file(&ca_key_path, key.serialize_pem().as_bytes(), true)?;
            write_file(&ca_cert_path, cert.pem().as_bytes(), false)?;
            tracing::info!(dir = %cert_dir.display(), "created cluster CA");
            (cert.pem(), key)
        };

        let ca_cert_der = parse_certs_pem(ca_cert_pem.as_bytes())?
            .into_iter()
            .next()
            .ok_or_else(|| {
                Error::Certificate(format!("{}: no certificate", ca_cert_path.display()))
            })?;
        let issuer = Issuer::from_ca_cert_der(&ca_cert_der, ca_key)
            .map_err(|e| Error::Certificate(format!("{}: {e}", ca_cert_path.display())))?;
        let ca_spki = spki_of(&ca_cert_der)?;

        let mut pki_sans: Vec<String> =
            DEFAULT_SERVING_SANS.iter().map(|s| s.to_string()).collect();
        for s in sans {
            if !pki_sans.contains(s) {
                pki_sans.push(s.clone());
            }
        }
        let wanted_sans = san_set(&pki_sans)?;

        let mut pki = ClusterPki {
            dir: cert_dir.to_path_buf(),
            ca_cert_pem,
            ca_cert_der,
            ca_spki: ca_spki.clone(),
            issuer,
            serving: CertAndKey {
                cert_pem: String::new(),
                key_pem: String::new(),
            },
            admin: CertAndKey {
                cert_pem: String::new(),
                key_pem: String::new(),
            },
            sa_key_pem: String::new(),
            sa_pub_pem: String::new(),
            sa_private_pkcs8: Vec::new(),
            sa_public_spki: Vec::new(),
        };

        // Serving certificate.
        let serving_paths = (
            cert_dir.join(SERVING_CERT_FILE),
            cert_dir.join(SERVING_KEY_FILE),
        );
        pki.serving = match load_leaf(&serving_paths, &ca_spki) {
            Ok(Some((ck, names))) if names == wanted_sans => ck,
            Ok(Some(_)) => {
                tracing::info!("apiserver serving certificate names changed: renewing it");
                pki.make_serving(&serving_paths, &pki_sans)?
            }
            Ok(None) => pki.make_serving(&serving_paths, &pki_sans)?,
            Err(e) => {
                tracing::warn!(error = %e, "apiserver serving certificate unusable: renewing it");
                pki.make_serving(&serving_paths, &pki_sans)?
            }
        };

        // Admin client certificate.
        let admin_paths = (
            cert_dir.join(ADMIN_CERT_FILE),
            cert_dir.join(ADMIN_KEY_FILE),
        );
        pki.admin = match load_leaf(&admin_paths, &ca_spki) {
            Ok(Some((ck, _))) => ck,
            Ok(None) => pki.make_admin(&admin_paths)?,
            Err(e) => {
                tracing::warn!(error = %e, "admin client certificate unusable: renewing it");
                pki.make_admin(&admin_paths)?
            }
        };

        // ServiceAccount signing key.
        let sa_key_path = cert_dir.join(SA_KEY_FILE);
        let sa_pub_path = cert_dir.join(SA_PUB_FILE);
        if sa_key_path.exists() {
            let key_pem = read_string(&sa_key_path)?;
            let key = KeyPair::from_pem(&key_pem)
                .map_err(|e| Error::Key(format!("{}: {e}", sa_key_path.display())))?;
            if key.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
                return Err(Error::Key(format!(
                    "{}: only ECDSA P-256 ServiceAccount keys are supported",
                    sa_key_path.display()
                )));
            }
            pki.sa_pub_pem = key.public_key_pem();
            pki.sa_public_spki = key.subject_public_key_info();
            pki.sa_private_pkcs8 = key.serialized_der().to_vec();
            pki.sa_key_pem = key_pem;
            if !sa_pub_path.exists() {
                write_file(&sa_pub_path, pki.sa_pub_pem.as_bytes(), false)?;
            }
        } else {
            let key = new_key()?;
            pki.sa_key_pem = key.serialize_pem();
            pki.sa_pub_pem = key.public_key_pem();
            pki.sa_public_spki = key.subject_public_key_info();
            pki.sa_private_pkcs8 = key.serialized_der().to_vec();
            write_file(&sa_key_path, pki.sa_key_pem.as_bytes(), true)?;
            write_file(&sa_pub_path, pki.sa_pub_pem.as_bytes(), false)?;
            tracing::info!("created ServiceAccount signing key");
        }
        Ok(pki)
    }

    fn make_serving(&self, paths: &(PathBuf, PathBuf), sans: &[String]) -> Result<CertAndKey> {
        let ck = self.sign_serving_cert(SERVING_COMMON_NAME, sans, LEAF_VALIDITY)?;
        write_file(&paths.1, ck.key_pem.as_bytes(), true)?;
        write_file(&paths.0, ck.cert_pem.as_bytes(), false)?;
        tracing::info!(sans = ?sans, "issued apiserver serving certificate");
        Ok(ck)
    }

    fn make_admin(&self, paths: &(PathBuf, PathBuf)) -> Result<CertAndKey> {
        let ck = self.sign_client_cert(ADMIN_USER, &[SYSTEM_MASTERS.to_string()], LEAF_VALIDITY)?;
        write_file(&paths.1, ck.key_pem.as_bytes(), true)?;
        write_file(&paths.0, ck.cert_pem.as_bytes(), false)?;
        tracing::info!("issued admin client certificate");
        Ok(ck)
    }

    /// The directory the PKI lives in.
    pub fn cert_dir(&self) -> &Path {
        &self.dir
    }

    /// The CA certificate, PEM.
    pub fn ca_cert_pem(&self) -> &str {
        &self.ca_cert_pem
    }

    /// The CA certificate, DER.
    pub fn ca_cert_der(&self) -> &CertificateDer<'static> {
        &self.ca_cert_der
    }

    /// The apiserver serving certificate and key.
    pub fn serving(&self) -> &CertAndKey {
        &self.serving
    }

    /// The admin client certificate and key (CN=kubernetes-admin, O=system:masters).
    pub fn admin(&self) -> &CertAndKey {
        &self.admin
    }

    /// The ServiceAccount signing key, PKCS#8 PEM.
    pub fn sa_key_pem(&self) -> &str {
        &self.sa_key_pem
    }

    /// The ServiceAccount verification key, SubjectPublicKeyInfo PEM.
    pub fn sa_pub_pem(&self) -> &str {
        &self.sa_pub_pem
    }

    /// The ServiceAccount signing key, PKCS#8 DER (ECDSA P-256).
    pub fn sa_private_key_pkcs8(&self) -> &[u8] {
        &self.sa_private_pkcs8
    }

    /// The ServiceAccount verification key, SubjectPublicKeyInfo DER.
    pub fn sa_public_key_spki(&self) -> &[u8] {
        &self.sa_public_spki
    }

    /// kubeadm's `--discovery-token-ca-cert-hash`: `sha256:` and the lowercase hex SHA-256 of
    /// the CA certificate's DER SubjectPublicKeyInfo.
    pub fn ca_cert_hash(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.ca_spki);
        format!("sha256:{}", hex(digest.as_ref()))
    }

    /// Issues a client certificate: CN = user name, O = groups (how the apiserver reads them),
    /// valid for `validity` from now. For nodes (`system:node:<name>`, O=`system:nodes`) and
    /// components (`system:kube-scheduler`, …).
    pub fn sign_client_cert(
        &self,
        cn: &str,
        orgs: &[String],
        validity: Duration,
    ) -> Result<CertAndKey> {
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(cn, orgs);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let subject = (orgs.len() > 1).then(|| subject_der(cn, orgs));
        self.sign_new(params, validity, subject)
    }

    /// Issues a serving certificate for `sans` (IP addresses or DNS names).
    pub fn sign_serving_cert(
        &self,
        cn: &str,
        sans: &[String],
        validity: Duration,
    ) -> Result<CertAndKey> {
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(cn, &[]);
        params.subject_alt_names = sans.iter().map(|s| to_san(s)).collect::<Result<_>>()?;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign_new(params, validity, None)
    }

    /// Signs a PKCS#10 certificate signing request (PEM) for `usage`, keeping the request's
    /// subject and names; returns the certificate PEM. What a CSR signer controller calls
    /// after approval.
    pub fn sign_csr(&self, csr_pem: &str, usage: CertUsage, validity: Duration) -> Result<String> {
        let der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
            .map_err(|e| Error::Certificate(format!("certificate signing request: {e}")))?;
        let mut csr = CertificateSigningRequestParams::from_der(&der)
            .map_err(|e| Error::Certificate(format!("certificate signing request: {e}")))?;
        let p = &mut csr.params;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![match usage {
            CertUsage::Client => ExtendedKeyUsagePurpose::ClientAuth,
            CertUsage::Server => ExtendedKeyUsagePurpose::ServerAuth,
        }];
        p.name_constraints = None;
        p.custom_extensions.clear();
        p.crl_distribution_points.clear();
        p.use_authority_key_identifier_extension = true;
        set_validity(p, validity)?;
        p.serial_number = Some(random_serial()?);
        let cert = csr
            .signed_by(&self.issuer)
            .map_err(|e| Error::Certificate(format!("signing the request: {e}")))?;
        Ok(cert.pem())
    }

    /// Signs a new key's certificate. `subject_override` replaces the subject DER after the
    /// fact: rcgen keeps one value per attribute type, but a user in several groups needs
    /// several O values.
    fn sign_new(
        &self,
        mut params: CertificateParams,
        validity: Duration,
        subject_override: Option<Vec<u8>>,
    ) -> Result<CertAndKey> {
        let key = new_key()?;
        params.use_authority_key_identifier_extension = true;
        params.is_ca = IsCa::ExplicitNoCa;
        set_validity(&mut params, validity)?;
        params.serial_number = Some(random_serial()?);
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| Error::Certificate(format!("signing: {e}")))?;
        let cert_pem = match subject_override {
            None => cert.pem(),
            Some(subject) => {
                let der = replace_subject(cert.der(), &subject, self.issuer.key())?;
                pem_encode("CERTIFICATE", &der)
            }
        };
        Ok(CertAndKey {
            cert_pem,
            key_pem: key.serialize_pem(),
        })
    }
}

/// Parses every `CERTIFICATE` block of a PEM bundle; an input with none is an error.
pub fn parse_certs_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Certificate(format!("PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::Certificate("no CERTIFICATE block in PEM".into()));
    }
    Ok(certs)
}

/// Parses the first private key (PKCS#8, PKCS#1 or SEC1) of a PEM document.
pub fn parse_private_key_pem(pem: &[u8]) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| Error::Key(format!("PEM: {e}")))
}

/// The DER SubjectPublicKeyInfo of a DER certificate.
pub fn spki_of(cert: &[u8]) -> Result<Vec<u8>> {
    let (_, x) = X509Certificate::from_der(cert).map_err(|e| Error::Certificate(format!("{e}")))?;
    Ok(x.tbs_certificate.subject_pki.raw.to_vec())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// DER tag-length-value.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes = n.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// Length of the DER element at the start of `der` (header included).
fn element_len(der: &[u8]) -> Option<usize> {
    let first = *der.get(1)?;
    let (hdr, len) = if first < 0x80 {
        (2, usize::from(first))
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for b in der.get(2..2 + n)? {
            len = (len << 8) | usize::from(*b);
        }
        (2 + n, len)
    };
    let total = hdr.checked_add(len)?;
    (total <= der.len()).then_some(total)
}

/// A subject like Go's `pkix.Name{Organization: orgs, CommonName: cn}`: one RDN holding every
/// O value (a DER SET, sorted), then the CN.
fn subject_der(cn: &str, orgs: &[String]) -> Vec<u8> {
    const OID_O: &[u8] = &[0x06, 0x03, 0x55, 0x04, 0x0a];
    const OID_CN: &[u8] = &[0x06, 0x03, 0x55, 0x04, 0x03];
    let atv = |oid: &[u8], v: &str| {
        let mut c = oid.to_vec();
        c.extend(tlv(0x0c, v.as_bytes()));
        tlv(0x30, &c)
    };
    let mut os: Vec<Vec<u8>> = orgs.iter().map(|o| atv(OID_O, o)).collect();
    os.sort();
    os.dedup();
    let mut rdns = tlv(0x31, &os.concat());
    rdns.extend(tlv(0x31, &atv(OID_CN, cn)));
    tlv(0x30, &rdns)
}

/// Replaces the subject of a DER certificate and signs it again with `key`.
pub(crate) fn replace_subject(
    cert: &[u8],
    subject: &[u8],
    key: &impl rcgen::SigningKey,
) -> Result<Vec<u8>> {
    let bad = || Error::Certificate("re-encoding the subject".into());
    let (_, x) = X509Certificate::from_der(cert).map_err(|e| Error::Certificate(e.to_string()))?;
    let tbs = x.tbs_certificate.as_ref();
    let old_subject = x.tbs_certificate.subject.as_raw();
    let start = (old_subject.as_ptr() as usize)
        .checked_sub(tbs.as_ptr() as usize)
        .ok_or_else(bad)?;
    let end = start
        .checked_add(old_subject.len())
        .filter(|e| *e <= tbs.len())
        .ok_or_else(bad)?;
    if element_len(tbs) != Some(tbs.len()) {
        return Err(bad());
    }
    let tbs_hdr = element_len_header(tbs).ok_or_else(bad)?;
    let mut content = tbs.get(tbs_hdr..start).ok_or_else(bad)?.to_vec();
    content.extend_from_slice(subject);
    content.extend_from_slice(&tbs[end..]);
    let new_tbs = tlv(0x30, &content);
    // Outer: SEQUENCE { tbs, signatureAlgorithm, signatureValue }.
    let outer_hdr = element_len_header(cert).ok_or_else(bad)?;
    let after_tbs = outer_hdr.checked_add(tbs.len()).ok_or_else(bad)?;
    let alg_len = element_len(cert.get(after_tbs..).ok_or_else(bad)?).ok_or_else(bad)?;
    let alg = &cert[after_tbs..after_tbs + alg_len];
    let sig = key
        .sign(&new_tbs)
        .map_err(|e| Error::Certificate(format!("signing: {e}")))?;
    let mut bits = vec![0u8];
    bits.extend(sig);
    let mut out = new_tbs;
    out.extend_from_slice(alg);
    out.extend(tlv(0x03, &bits));
    Ok(tlv(0x30, &out))
}

/// Header length of the DER element at the start of `der`.
fn element_len_header(der: &[u8]) -> Option<usize> {
    let first = *der.get(1)?;
    if first < 0x80 {
        Some(2)
    } else {
        Some(2 + usize::from(first & 0x7f))
    }
}

pub(crate) fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn new_key() -> Result<KeyPair> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| Error::Key(format!("generating a key: {e}")))
}

fn dn(cn: &str, orgs: &[String]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for o in orgs {
        dn.push(DnType::OrganizationName, o.as_str());
    }
    dn.push(DnType::CommonName, cn);
    dn
}

fn to_san(s: &str) -> Result<SanType> {
    match s.parse::<IpAddr>() {
        Ok(ip) => Ok(SanType::IpAddress(ip)),
        Err(_) => {
            let name = s
                .to_string()
                .try_into()
                .map_err(|e| Error::Certificate(format!("subject alternative name {s:?}: {e}")))?;
            Ok(SanType::DnsName(name))
        }
    }
}

/// The requested names in a comparable form.
fn san_set(sans: &[String]) -> Result<BTreeSet<String>> {
    let mut set = BTreeSet::new();
    for s in sans {
        match s.parse::<IpAddr>() {
            Ok(ip) => set.insert(format!("ip:{ip}")),
            Err(_) => {
                if s.is_empty() || !s.is_ascii() {
                    return Err(Error::Certificate(format!(
                        "subject alternative name {s:?} is not a DNS name or IP address"
                    )));
                }
                set.insert(format!("dns:{}", s.to_ascii_lowercase()))
            }
        };
    }
    Ok(set)
}

pub(crate) fn set_validity(params: &mut CertificateParams, validity: Duration) -> Result<()> {
    let now = time::OffsetDateTime::now_utc();
    let bad = || Error::Certificate(format!("validity {validity:?} out of range"));
    let validity = time::Duration::try_from(validity).map_err(|_| bad())?;
    let backdate = time::Duration::try_from(BACKDATE).map_err(|_| bad())?;
    params.not_before = now.checked_sub(backdate).ok_or_else(bad)?;
    params.not_after = now.checked_add(validity).ok_or_else(bad)?;
    Ok(())
}

pub(crate) fn random_serial() -> Result<SerialNumber> {
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::Certificate("no randomness for a serial number".into()))?;
    // Positive and without a leading zero byte.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

/// Loads a leaf certificate and key; `Ok(None)` when either file is missing. Errors when it
/// is unreadable, not issued by the CA, does not belong to the key or expires soon.
fn load_leaf(
    paths: &(PathBuf, PathBuf),
    ca_spki: &[u8],
) -> Result<Option<(CertAndKey, BTreeSet<String>)>> {
    if !paths.0.exists() || !paths.1.exists() {
        return Ok(None);
    }
    let cert_pem = read_string(&paths.0)?;
    let key_pem = read_string(&paths.1)?;
    let der = parse_certs_pem(cert_pem.as_bytes())?
        .into_iter()
        .next()
        .ok_or_else(|| Error::Certificate("no certificate".into()))?;
    let (_, x) = X509Certificate::from_der(&der)
        .map_err(|e| Error::Certificate(format!("{}: {e}", paths.0.display())))?;
    let (_, ca_spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(ca_spki)
        .map_err(|e| Error::Certificate(format!("CA public key: {e}")))?;
    x.verify_signature(Some(&ca_spki)).map_err(|e| {
        Error::Certificate(format!("{}: not issued by the CA: {e}", paths.0.display()))
    })?;
    let key = KeyPair::from_pem(&key_pem)
        .map_err(|e| Error::Key(format!("{}: {e}", paths.1.display())))?;
    if key.subject_public_key_info() != x.tbs_certificate.subject_pki.raw {
        return Err(Error::Key(format!(
            "{} does not belong to {}",
            paths.1.display(),
            paths.0.display()
        )));
    }
    let not_after = x.validity().not_after.timestamp();
    let now = jiff::Timestamp::now().as_second();
    if not_after - now < RENEW_BEFORE.as_secs() as i64 {
        return Err(Error::Certificate(format!(
            "{} expires soon",
            paths.0.display()
        )));
    }
    let mut names = BTreeSet::new();
    if let Ok(Some(san)) = x.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => {
                    names.insert(format!("dns:{}", d.to_ascii_lowercase()));
                }
                GeneralName::IPAddress(b) => {
                    let ip = match b.len() {
                        4 => <[u8; 4]>::try_from(*b).ok().map(IpAddr::from),
                        16 => <[u8; 16]>::try_from(*b).ok().map(IpAddr::from),
                        _ => None,
                    };
                    if let Some(ip) = ip {
                        names.insert(format!("ip:{ip}"));
                    }
                }
                _ => {}
            }
        }
    }
    Ok(Some((CertAndKey { cert_pem, key_pem }, names)))
}

fn read_string(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

/// Writes a file atomically (temporary file + rename); `private` files get mode 0600.
pub(crate) fn write_file(path: &Path, contents: &[u8], private: bool) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if private { 0o600 } else { 0o644 });
    }
    let res = (|| {
        let mut f = opts.open(&tmp)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // The mode above is masked by the umask; the key must be 0600 whatever it is.
            let mode = if private { 0o600 } else { 0o644 };
            f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        f.write_all(contents)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}
