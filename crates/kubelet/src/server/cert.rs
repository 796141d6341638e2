//! The kubelet's own serving certificate: self-signed like upstream's `kubelet.crt` (made at
//! start when no `--tls-cert-file` is given), for the node's name and addresses.

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;

use anyhow::Context;
use kumo_auth::CertAndKey;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair,
    KeyUsagePurpose, SanType,
};

/// File name of the serving certificate under the kubelet's pki directory (upstream's).
pub const SERVING_CERT_FILE: &str = "kubelet.crt";
/// File name of the serving key under the kubelet's pki directory (upstream's).
pub const SERVING_KEY_FILE: &str = "kubelet.key";

/// A certificate that expires sooner than this is made again.
const RENEW_BEFORE: time::Duration = time::Duration::days(7);

/// Loads `<pki_dir>/kubelet.{crt,key}`, or makes a self-signed ECDSA P-256 certificate valid
/// one year for `node_name`, `localhost`, 127.0.0.1 and `ips` when they are missing, do not
/// parse, expire within a week or lack one of those names.
pub fn load_or_create_serving_cert(
    pki_dir: &Path,
    node_name: &str,
    ips: &[IpAddr],
) -> anyhow::Result<CertAndKey> {
    let cert_path = pki_dir.join(SERVING_CERT_FILE);
    let key_path = pki_dir.join(SERVING_KEY_FILE);
    let mut ip_list: Vec<IpAddr> = vec![IpAddr::from([127, 0, 0, 1])];
    for ip in ips {
        if !ip_list.contains(ip) {
            ip_list.push(*ip);
        }
    }
    let dns = vec![node_name.to_string(), "localhost".to_string()];
    if let (Ok(cert_pem), Ok(key_pem)) = (
        std::fs::read_to_string(&cert_path),
        std::fs::read_to_string(&key_path),
    ) && usable(&cert_pem, &dns, &ip_list)
        && KeyPair::from_pem(&key_pem).is_ok()
    {
        return Ok(CertAndKey { cert_pem, key_pem });
    }

    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    let now = time::OffsetDateTime::now_utc();
    dn.push(
        DnType::CommonName,
        format!("{node_name}@{}", now.unix_timestamp()),
    );
    params.distinguished_name = dn;
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(365);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let mut sans = Vec::new();
    for d in &dns {
        sans.push(SanType::DnsName(d.as_str().try_into()?));
    }
    for ip in &ip_list {
        sans.push(SanType::IpAddress(*ip));
    }
    params.subject_alt_names = sans;
    let cert = params.self_signed(&key)?;
    let ck = CertAndKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    };
    write_private(&key_path, ck.key_pem.as_bytes(), 0o600)?;
    write_private(&cert_path, ck.cert_pem.as_bytes(), 0o644)?;
    tracing::info!(path = %cert_path.display(), "made a self-signed kubelet serving certificate");
    Ok(ck)
}

/// Whether a PEM certificate is still good for a week and names every DNS name and IP.
pub(crate) fn usable(cert_pem: &str, dns: &[String], ips: &[IpAddr]) -> bool {
    let Ok(ders) = kumo_auth::pki::parse_certs_pem(cert_pem.as_bytes()) else {
        return false;
    };
    let Some(der) = ders.first() else {
        return false;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return false;
    };
    let not_after = cert.validity().not_after.timestamp();
    if not_after < (time::OffsetDateTime::now_utc() + RENEW_BEFORE).unix_timestamp() {
        return false;
    }
    let mut have_dns = Vec::new();
    let mut have_ips = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                x509_parser::extensions::GeneralName::DNSName(d) => have_dns.push(d.to_string()),
                x509_parser::extensions::GeneralName::IPAddress(b) => match b.len() {
                    4 => have_ips.push(IpAddr::from(<[u8; 4]>::try_from(*b).unwrap_or_default())),
                    16 => have_ips.push(IpAddr::from(<[u8; 16]>::try_from(*b).unwrap_or_default())),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    dns.iter().all(|d| have_dns.contains(d)) && ips.iter().all(|i| have_ips.contains(i))
}

/// Writes a file atomically with `mode` (keys 0600).
pub(crate) fn write_private(path: &Path, data: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().context("path without a directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("create {}", tmp.display()))?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_cert_is_made_once_and_reused() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("kumo-kubelet-cert-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ip: IpAddr = "10.1.2.3".parse()?;
        let a = load_or_create_serving_cert(&dir, "node-a", &[ip])?;
        let b = load_or_create_serving_cert(&dir, "node-a", &[ip])?;
        assert_eq!(
            a.cert_pem, b.cert_pem,
            "an unexpired matching certificate is reused"
        );
        let c = load_or_create_serving_cert(&dir, "node-a", &["10.9.9.9".parse()?])?;
        assert_ne!(
            a.cert_pem, c.cert_pem,
            "a new address makes a new certificate"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join(SERVING_KEY_FILE))?
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // rustls accepts it as a serving certificate.
        super::super::tls_config(super::super::ServingCert::new(&c)?, None)?;
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
