//! What a kubeadm-style join needs on both sides: the CA certificate hash a node pins
//! (`--ca-cert-hash sha256:…`), the detached JWS the bootstrap signer puts into
//! `kube-public/cluster-info`, and bootstrap tokens with their Secret (`kumo token create`).

use std::time::Duration;

use serde_json::{Value, json};

use crate::authn::bootstrap as bt;
use crate::error::{Error, Result};

/// kubeadm's `--discovery-token-ca-cert-hash` of the first certificate of `ca_pem`:
/// `sha256:` + lowercase hex SHA-256 of its DER SubjectPublicKeyInfo.
pub fn ca_cert_hash(ca_pem: &[u8]) -> Result<String> {
    let der = crate::pki::parse_certs_pem(ca_pem)?
        .into_iter()
        .next()
        .ok_or_else(|| Error::Certificate("no certificate".into()))?;
    let spki = crate::pki::spki_of(&der)?;
    let digest = ring::digest::digest(&ring::digest::SHA256, &spki);
    Ok(format!("sha256:{}", crate::pki::hex(digest.as_ref())))
}

/// Whether any certificate of `ca_pem` has the pinned hash `expected` (`sha256:<hex>`, case
/// insensitive hex, as kubeadm accepts).
pub fn verify_ca_cert_hash(ca_pem: &[u8], expected: &str) -> bool {
    let Ok(certs) = crate::pki::parse_certs_pem(ca_pem) else {
        return false;
    };
    let want = expected.trim().to_ascii_lowercase();
    certs.iter().any(|c| {
        crate::pki::spki_of(c).is_ok_and(|spki| {
            let d = ring::digest::digest(&ring::digest::SHA256, &spki);
            format!("sha256:{}", crate::pki::hex(d.as_ref())) == want
        })
    })
}

/// The detached JWS (`header..signature`, HS256 keyed by `<id>.<secret>`'s secret part, `kid`
/// = token id) of `content`: what `jws-kubeconfig-<id>` in `cluster-info` holds.
pub fn jws_detached_sign(content: &str, token_id: &str, token_secret: &str) -> String {
    bt::detached_signature(content, token_id, token_secret)
}

/// Whether `signature` is the detached JWS of `content` for the token.
pub fn jws_detached_verify(
    signature: &str,
    content: &str,
    token_id: &str,
    token_secret: &str,
) -> bool {
    bt::detached_signature_is_valid(signature, content, token_id, token_secret)
}

/// A random bootstrap token as `(id, secret)` (`[a-z0-9]{6}`, `[a-z0-9]{16}`).
pub fn generate_bootstrap_token() -> Result<(String, String)> {
    let t = bt::generate_bootstrap_token()?;
    let (id, secret) = t
        .split_once('.')
        .ok_or_else(|| Error::Token("generated token has no dot".into()))?;
    Ok((id.to_string(), secret.to_string()))
}

/// The kubeadm usages of a bootstrap token (`kubeadm token create --usages`).
pub const DEFAULT_USAGES: &[&str] = &["signing", "authentication"];

/// kubeadm's default extra group of a token made for joining nodes.
pub const DEFAULT_EXTRA_GROUP: &str = "system:bootstrappers:kubeadm:default-node-token";

/// The bootstrap token Secret (`kube-system/bootstrap-token-<id>`, type
/// `bootstrap.kubernetes.io/token`) as JSON, kubeadm's shape: `stringData`-free `data` with
/// `token-id`, `token-secret`, `expiration` (now + `ttl`; none when `ttl` is `None` or zero),
/// `usage-bootstrap-<usage>: "true"` per usage (`signing`, `authentication`),
/// `auth-extra-groups` and `description` when given.
pub fn bootstrap_token_secret(
    id: &str,
    secret: &str,
    ttl: Option<Duration>,
    usages: &[&str],
    extra_groups: &[String],
    description: &str,
) -> Result<Value> {
    let token = format!("{id}.{secret}");
    if bt::parse_token(&token).is_none() {
        return Err(Error::Token(format!(
            "the bootstrap token {token:?} was not of the form \"[a-z0-9]{{6}}.[a-z0-9]{{16}}\""
        )));
    }
    if let Some(g) = extra_groups.iter().find(|g| !bt::valid_extra_group(g)) {
        return Err(Error::Token(format!(
            "{g:?} is not a valid bootstrap group (must match system:bootstrappers:[a-z0-9:-]{{0,255}}[a-z0-9])"
        )));
    }
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut data = serde_json::Map::new();
    data.insert(bt::KEY_TOKEN_ID.into(), json!(b64(id)));
    data.insert(bt::KEY_TOKEN_SECRET.into(), json!(b64(secret)));
    if let Some(ttl) = ttl.filter(|t| !t.is_zero()) {
        let exp = jiff::Timestamp::now()
            .checked_add(
                jiff::SignedDuration::try_from(ttl).map_err(|e| Error::Token(e.to_string()))?,
            )
            .map_err(|e| Error::Token(e.to_string()))?;
        data.insert(
            bt::KEY_EXPIRATION.into(),
            json!(b64(&exp.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())),
        );
    }
    for u in usages {
        match *u {
            "signing" | "authentication" => {
                data.insert(format!("usage-bootstrap-{u}"), json!(b64("true")));
            }
            other => {
                return Err(Error::Token(format!(
                    "unknown bootstrap token usage {other:?} (known: signing, authentication)"
                )));
            }
        }
    }
    if !extra_groups.is_empty() {
        data.insert(
            bt::KEY_EXTRA_GROUPS.into(),
            json!(b64(&extra_groups.join(","))),
        );
    }
    if !description.is_empty() {
        data.insert(bt::KEY_DESCRIPTION.into(), json!(b64(description)));
    }
    Ok(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": format!("{}{id}", bt::SECRET_PREFIX), "namespace": bt::NAMESPACE},
        "type": bt::SECRET_TYPE,
        "data": data,
    }))
}

/// The kubeconfig `cluster-info` publishes: one cluster (server URL and CA data), no user.
pub fn cluster_info_kubeconfig(server_url: &str, ca_pem: &str) -> Result<String> {
    crate::kubeconfig::Kubeconfig::cluster_only(server_url, ca_pem).to_yaml()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_make_valid_secrets() {
        let (id, secret) = generate_bootstrap_token().expect("token");
        assert!(bt::parse_token(&format!("{id}.{secret}")).is_some());
        let s = bootstrap_token_secret(
            &id,
            &secret,
            Some(Duration::from_secs(3600)),
            DEFAULT_USAGES,
            &[DEFAULT_EXTRA_GROUP.to_string()],
            "test",
        )
        .expect("secret");
        assert_eq!(s["type"], "bootstrap.kubernetes.io/token");
        assert_eq!(s["metadata"]["name"], format!("bootstrap-token-{id}"));
        let typed: k8s_openapi::api::core::v1::Secret =
            serde_json::from_value(s).expect("a Secret");
        let data = typed.data.expect("data");
        assert_eq!(data["usage-bootstrap-signing"].0, b"true");
        assert_eq!(data["token-secret"].0, secret.as_bytes());
        assert!(data.contains_key("expiration"));
        assert!(bootstrap_token_secret("ABCDEF", &secret, None, &[], &[], "").is_err());
        assert!(
            bootstrap_token_secret(&id, &secret, None, &[], &["system:nodes".into()], "").is_err()
        );
    }

    #[test]
    fn jws_round_trip() {
        let sig = jws_detached_sign("kubeconfig text", "abcdef", "0123456789abcdef");
        assert!(sig.contains(".."));
        assert!(jws_detached_verify(
            &sig,
            "kubeconfig text",
            "abcdef",
            "0123456789abcdef"
        ));
        assert!(!jws_detached_verify(
            &sig,
            "kubeconfig text!",
            "abcdef",
            "0123456789abcdef"
        ));
    }
}
