use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, UnixTime};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::authn::authenticate_cert;
use crate::pki::*;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn leaf(pem: &str) -> CertificateDer<'static> {
    parse_certs_pem(pem.as_bytes()).unwrap().remove(0)
}

fn sans_of(pem: &str) -> Vec<String> {
    let der = leaf(pem);
    let (_, x) = X509Certificate::from_der(&der).unwrap();
    let san = x.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::DNSName(d) => d.to_string(),
            GeneralName::IPAddress(b) => match b.len() {
                4 => std::net::IpAddr::from(<[u8; 4]>::try_from(*b).unwrap()).to_string(),
                _ => std::net::IpAddr::from(<[u8; 16]>::try_from(*b).unwrap()).to_string(),
            },
            other => format!("{other:?}"),
        })
        .collect()
}

/// Verifies `cert` chains to `ca` for `usage` with webpki (what rustls uses).
fn webpki_verify(
    ca: &CertificateDer<'_>,
    cert: &CertificateDer<'_>,
    server: bool,
) -> Result<(), String> {
    let anchor = webpki::anchor_from_trusted_cert(ca).map_err(|e| e.to_string())?;
    let ee = webpki::EndEntityCert::try_from(cert).map_err(|e| e.to_string())?;
    let usage = if server {
        webpki::KeyUsage::server_auth()
    } else {
        webpki::KeyUsage::client_auth()
    };
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &[anchor],
        &[],
        UnixTime::now(),
        usage,
        None,
        None,
    )
    .map(|_| ())
    .map_err(|e| e.to_string())
}

#[test]
fn creates_everything_with_private_keys_0600() {
    let dir = tempfile::tempdir().unwrap();
    let pki =
        ClusterPki::load_or_create(dir.path(), &["10.96.0.1".into(), "my.host.example".into()])
            .unwrap();
    for f in [CA_KEY_FILE, SERVING_KEY_FILE, ADMIN_KEY_FILE, SA_KEY_FILE] {
        assert_eq!(mode(&dir.path().join(f)), 0o600, "{f}");
    }
    for f in [
        CA_CERT_FILE,
        SERVING_CERT_FILE,
        ADMIN_CERT_FILE,
        SA_PUB_FILE,
    ] {
        assert!(dir.path().join(f).exists(), "{f}");
    }
    // No temporary files left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 8);

    let sans = sans_of(&pki.serving().cert_pem);
    for s in DEFAULT_SERVING_SANS
        .iter()
        .chain(&["10.96.0.1", "my.host.example"])
    {
        assert!(sans.contains(&s.to_string()), "{s} missing from {sans:?}");
    }

    // Chains verify with webpki for the right usages, and not for the wrong ones.
    let ca = pki.ca_cert_der().clone();
    webpki_verify(&ca, &leaf(&pki.serving().cert_pem), true).unwrap();
    webpki_verify(&ca, &leaf(&pki.admin().cert_pem), false).unwrap();
    assert!(webpki_verify(&ca, &leaf(&pki.admin().cert_pem), true).is_err());
    assert!(webpki_verify(&ca, &leaf(&pki.serving().cert_pem), false).is_err());

    // The admin certificate is kubernetes-admin in system:masters.
    let user = authenticate_cert(&[leaf(&pki.admin().cert_pem)]).unwrap();
    assert_eq!(user.name, "kubernetes-admin");
    assert_eq!(user.groups, vec!["system:masters", "system:authenticated"]);

    // The CA is a CA named kubernetes.
    let (_, x) = X509Certificate::from_der(&ca).unwrap();
    assert!(x.is_ca());
    assert_eq!(x.subject().to_string(), "CN=kubernetes");
}

#[test]
fn loads_on_later_starts_and_renews_serving_cert_when_names_change() {
    let dir = tempfile::tempdir().unwrap();
    let first = ClusterPki::load_or_create(dir.path(), &[]).unwrap();
    let second = ClusterPki::load_or_create(dir.path(), &[]).unwrap();
    assert_eq!(first.ca_cert_pem(), second.ca_cert_pem());
    assert_eq!(first.serving().cert_pem, second.serving().cert_pem);
    assert_eq!(first.admin().cert_pem, second.admin().cert_pem);
    assert_eq!(first.sa_key_pem(), second.sa_key_pem());
    assert_eq!(first.sa_public_key_spki(), second.sa_public_key_spki());
    assert_eq!(first.ca_cert_hash(), second.ca_cert_hash());

    let third = ClusterPki::load_or_create(dir.path(), &["192.168.1.10".into()]).unwrap();
    assert_eq!(first.ca_cert_pem(), third.ca_cert_pem());
    assert_ne!(first.serving().cert_pem, third.serving().cert_pem);
    assert!(sans_of(&third.serving().cert_pem).contains(&"192.168.1.10".to_string()));
    assert_eq!(first.admin().cert_pem, third.admin().cert_pem);
    // Same names in another order and duplicates of defaults: no renewal.
    let fourth =
        ClusterPki::load_or_create(dir.path(), &["localhost".into(), "192.168.1.10".into()])
            .unwrap();
    assert_eq!(third.serving().cert_pem, fourth.serving().cert_pem);
}

#[test]
fn broken_leaf_files_are_renewed_and_a_broken_ca_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let first = ClusterPki::load_or_create(dir.path(), &[]).unwrap();
    std::fs::write(dir.path().join(SERVING_CERT_FILE), "garbage").unwrap();
    std::fs::remove_file(dir.path().join(ADMIN_KEY_FILE)).unwrap();
    let second = ClusterPki::load_or_create(dir.path(), &[]).unwrap();
    assert_ne!(first.serving().cert_pem, second.serving().cert_pem);
    assert_ne!(first.admin().cert_pem, second.admin().cert_pem);
    webpki_verify(
        second.ca_cert_der(),
        &leaf(&second.serving().cert_pem),
        true,
    )
    .unwrap();

    // A serving certificate from another CA is replaced.
    let other = tempfile::tempdir().unwrap();
    let foreign = ClusterPki::load_or_create(other.path(), &[]).unwrap();
    std::fs::write(
        dir.path().join(SERVING_CERT_FILE),
        &foreign.serving().cert_pem,
    )
    .unwrap();
    std::fs::write(
        dir.path().join(SERVING_KEY_FILE),
        &foreign.serving().key_pem,
    )
    .unwrap();
    let third = ClusterPki::load_or_create(dir.path(), &[]).unwrap();
    webpki_verify(third.ca_cert_der(), &leaf(&third.serving().cert_pem), true).unwrap();

    // A key that does not belong to its certificate is replaced.
    std::fs::write(dir.path().join(ADMIN_KEY_FILE), &foreign.admin().key_pem).unwrap();
    let fourth = ClusterPki::load_or_create(dir.path(), &[]).unwrap();
    assert_ne!(fourth.admin().key_pem, foreign.admin().key_pem);

    // The CA is never replaced silently.
    std::fs::write(
        dir.path().join(CA_CERT_FILE),
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    assert!(ClusterPki::load_or_create(dir.path(), &[]).is_err());
    std::fs::remove_file(dir.path().join(CA_KEY_FILE)).unwrap();
    assert!(ClusterPki::load_or_create(dir.path(), &[]).is_err());

    // Bad names are errors.
    let d2 = tempfile::tempdir().unwrap();
    assert!(ClusterPki::load_or_create(d2.path(), &["bad name\u{e9}".into()]).is_err());
}

#[test]
fn client_certs_for_nodes_and_components() {
    let dir = tempfile::tempdir().unwrap();
    let pki = ClusterPki::load_or_create(dir.path(), &[]).unwrap();
    let node = pki
        .sign_client_cert(
            "system:node:n1",
            &["system:nodes".into()],
            Duration::from_secs(3600),
        )
        .unwrap();
    webpki_verify(pki.ca_cert_der(), &leaf(&node.cert_pem), false).unwrap();
    let user = authenticate_cert(&node.cert_chain_der().unwrap()).unwrap();
    assert_eq!(user.name, "system:node:n1");
    assert_eq!(user.groups, vec!["system:nodes", "system:authenticated"]);
    let id = &user.extra[crate::authn::CREDENTIAL_ID_KEY][0];
    assert!(id.starts_with("X509SHA256=") && id.len() == 11 + 64, "{id}");

    // Several groups: several O values (rcgen alone keeps one; the subject is rewritten and
    // the certificate signed again).
    let multi = pki
        .sign_client_cert(
            "bob",
            &["b".into(), "a".into(), "b".into(), "system:masters".into()],
            Duration::from_secs(60),
        )
        .unwrap();
    assert_eq!(
        authenticate_cert(&multi.cert_chain_der().unwrap())
            .unwrap()
            .groups,
        vec!["a", "b", "system:masters", "system:authenticated"]
    );
    webpki_verify(pki.ca_cert_der(), &leaf(&multi.cert_pem), false).unwrap();
    let openssl = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-nameopt", "RFC2253"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn();
    if let Ok(mut child) = openssl {
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(multi.cert_pem.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        // openssl prints RDNs and multi-valued RDN members in reverse.
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "subject=CN=bob,O=system:masters+O=b+O=a"
        );
    }
    let multi_der = leaf(&multi.cert_pem);
    let (_, x) = X509Certificate::from_der(&multi_der).unwrap();
    let life = x.validity().not_after.timestamp() - x.validity().not_before.timestamp();
    assert!((60..=60 + 301).contains(&life), "{life}");

    // Serving certificates for kubelets.
    let serving = pki
        .sign_serving_cert(
            "n1",
            &["n1".into(), "10.0.0.5".into()],
            Duration::from_secs(3600),
        )
        .unwrap();
    webpki_verify(pki.ca_cert_der(), &leaf(&serving.cert_pem), true).unwrap();
    assert!(
        pki.sign_client_cert("x", &[], Duration::from_secs(u64::MAX))
            .is_err()
    );
}

#[test]
fn signs_csrs() {
    let dir = tempfile::tempdir().unwrap();
    let pki = ClusterPki::load_or_create(dir.path(), &[]).unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "system:nodes");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "system:node:n2");
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    let cert = pki
        .sign_csr(&csr, CertUsage::Client, Duration::from_secs(3600))
        .unwrap();
    let der = leaf(&cert);
    webpki_verify(pki.ca_cert_der(), &der, false).unwrap();
    let user = authenticate_cert(&[der]).unwrap();
    assert_eq!(user.name, "system:node:n2");
    assert_eq!(user.groups, vec!["system:nodes", "system:authenticated"]);
    assert!(
        pki.sign_csr("not a csr", CertUsage::Client, Duration::from_secs(1))
            .is_err()
    );
    assert!(
        pki.sign_csr(
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
            CertUsage::Server,
            Duration::from_secs(1)
        )
        .is_err()
    );
}

#[test]
fn ca_cert_hash_matches_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let pki = ClusterPki::load_or_create(dir.path(), &[]).unwrap();
    let hash = pki.ca_cert_hash();
    assert!(
        hash.starts_with("sha256:") && hash.len() == 7 + 64,
        "{hash}"
    );
    // kubeadm's documented way to compute it.
    let script = format!(
        "openssl x509 -pubkey -in {} | openssl pkey -pubin -outform der 2>/dev/null | openssl dgst -sha256 -hex | sed 's/^.* //'",
        dir.path().join(CA_CERT_FILE).display()
    );
    let Ok(out) = std::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .output()
    else {
        return;
    };
    let expected = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if expected.len() == 64 {
        assert_eq!(hash, format!("sha256:{expected}"));
    }
}

#[test]
fn pem_helpers_reject_garbage() {
    assert!(parse_certs_pem(b"").is_err());
    assert!(parse_certs_pem(b"hello").is_err());
    assert!(
        parse_certs_pem(b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n").is_err()
    );
    assert!(parse_private_key_pem(b"nope").is_err());
    assert!(spki_of(b"\x30\x03\x02\x01\x01").is_err());
    assert!(authenticate_cert(&[CertificateDer::from(vec![0x30, 0x00])]).is_none());
    assert!(authenticate_cert(&[]).is_none());
}
