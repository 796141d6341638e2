//! Bootstrap tokens (`abcdef.0123456789abcdef`), checked against Secrets
//! `kube-system/bootstrap-token-<id>` of type `bootstrap.kubernetes.io/token`, like upstream's
//! bootstrap token authenticator.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use ring::rand::SecureRandom;

use super::{ObjectLookup, UserInfo};

/// Namespace of bootstrap token Secrets.
pub const NAMESPACE: &str = "kube-system";
/// Secret name prefix (`bootstrap-token-<id>`).
pub const SECRET_PREFIX: &str = "bootstrap-token-";
/// Secret type.
pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// User name prefix (`system:bootstrap:<id>`).
pub const USER_PREFIX: &str = "system:bootstrap:";
/// The group every bootstrap token user is in.
pub const DEFAULT_GROUP: &str = "system:bootstrappers";
/// Secret key of the token id.
pub const KEY_TOKEN_ID: &str = "token-id";
/// Secret key of the token secret.
pub const KEY_TOKEN_SECRET: &str = "token-secret";
/// Secret key of the RFC 3339 expiration.
pub const KEY_EXPIRATION: &str = "expiration";
/// Secret key that must be `"true"` for the token to authenticate.
pub const KEY_USAGE_AUTHENTICATION: &str = "usage-bootstrap-authentication";
/// Secret key that lets the token sign the cluster-info ConfigMap.
pub const KEY_USAGE_SIGNING: &str = "usage-bootstrap-signing";
/// Secret key of extra groups (comma separated, each `system:bootstrappers:…`).
pub const KEY_EXTRA_GROUPS: &str = "auth-extra-groups";
/// Secret key of a description.
pub const KEY_DESCRIPTION: &str = "description";

/// Splits `id.secret` when it has the bootstrap token shape (`[a-z0-9]{6}\.[a-z0-9]{16}`).
pub fn parse_token(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    let ok = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    if ok(id, 6) && ok(secret, 16) {
        Some((id, secret))
    } else {
        None
    }
}

/// Whether `group` is a valid extra group: `system:bootstrappers:[a-z0-9:-]{0,255}[a-z0-9]`.
pub fn valid_extra_group(group: &str) -> bool {
    let Some(rest) = group.strip_prefix("system:bootstrappers:") else {
        return false;
    };
    let b = rest.as_bytes();
    let Some((&last, body)) = b.split_last() else {
        return false;
    };
    body.len() <= 255
        && (last.is_ascii_lowercase() || last.is_ascii_digit())
        && body
            .iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b':' || c == b'-')
}

fn data<'a>(secret: &'a Secret, key: &str) -> &'a str {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .and_then(|v| std::str::from_utf8(&v.0).ok())
        .unwrap_or("")
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Authenticates a bootstrap token as of `now`: user `system:bootstrap:<id>`, groups
/// `system:bootstrappers` plus the Secret's `auth-extra-groups` (sorted, deduplicated, like
/// upstream) and `system:authenticated`. `None` when the token does not have the shape, the
/// Secret is missing, being deleted, of another type, holds another secret or id, has
/// expired (an unparsable expiration counts as expired), is not marked
/// `usage-bootstrap-authentication: "true"`, or has an invalid extra group.
pub fn authenticate_bootstrap_token(
    token: &str,
    lookup: &dyn ObjectLookup,
    now: jiff::Timestamp,
) -> Option<UserInfo> {
    let (id, token_secret) = parse_token(token)?;
    let name = format!("{SECRET_PREFIX}{id}");
    let reject = |why: &str| {
        tracing::debug!(secret = %name, "bootstrap token rejected: {why}");
        None
    };
    let Some(secret) = lookup.secret(NAMESPACE, &name) else {
        return reject("no such secret");
    };
    if secret.metadata.deletion_timestamp.is_some() {
        return reject("is deleted and awaiting removal");
    }
    if secret.type_.as_deref() != Some(SECRET_TYPE) || secret.data.is_none() {
        return reject("has invalid type");
    }
    if !constant_time_eq(
        data(&secret, KEY_TOKEN_SECRET).as_bytes(),
        token_secret.as_bytes(),
    ) {
        return reject("has invalid value for token-secret");
    }
    if data(&secret, KEY_TOKEN_ID) != id {
        return reject("has invalid value for token-id");
    }
    let expiration = data(&secret, KEY_EXPIRATION);
    if !expiration.is_empty() {
        match expiration.parse::<jiff::Timestamp>() {
            // Upstream: expired when now is after the expiration.
            Ok(t) if now > t => return reject("has expired"),
            Ok(_) => {}
            Err(_) => return reject("has an unparsable expiration"),
        }
    }
    if data(&secret, KEY_USAGE_AUTHENTICATION) != "true" {
        return reject("not marked usage-bootstrap-authentication=true");
    }
    let mut groups = std::collections::BTreeSet::from([DEFAULT_GROUP.to_string()]);
    let extra = data(&secret, KEY_EXTRA_GROUPS);
    if !extra.is_empty() {
        for g in extra.split(',') {
            if !valid_extra_group(g) {
                return reject("has an invalid auth-extra-groups value");
            }
            groups.insert(g.to_string());
        }
    }
    Some(UserInfo::new(format!("{USER_PREFIX}{id}"), groups))
}

/// Generates a random bootstrap token `[a-z0-9]{6}.[a-z0-9]{16}`.
pub fn generate_bootstrap_token() -> crate::Result<String> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let rng = ring::rand::SystemRandom::new();
    let mut out = String::with_capacity(23);
    while out.len() < 23 {
        if out.len() == 6 {
            out.push('.');
            continue;
        }
        let mut b = [0u8; 1];
        rng.fill(&mut b)
            .map_err(|_| crate::Error::Token("no randomness".into()))?;
        // Rejection sampling keeps the distribution uniform (252 = 7 * 36).
        if b[0] < 252 {
            out.push(char::from(ALPHABET[usize::from(b[0]) % ALPHABET.len()]));
        }
    }
    Ok(out)
}

/// The Secret that makes `token` a bootstrap token (kubeadm's shape): usages
/// authentication and signing, `expiration` as RFC 3339 when given, `auth-extra-groups` when
/// any. Errors when the token does not have the bootstrap token shape or a group is invalid.
pub fn bootstrap_token_secret(
    token: &str,
    expiration: Option<jiff::Timestamp>,
    extra_groups: &[String],
    description: &str,
) -> crate::Result<Secret> {
    let (id, secret) = parse_token(token).ok_or_else(|| {
        crate::Error::Token("not a bootstrap token ([a-z0-9]{6}.[a-z0-9]{16})".into())
    })?;
    if let Some(g) = extra_groups.iter().find(|g| !valid_extra_group(g)) {
        return Err(crate::Error::Token(format!("invalid extra group {g:?}")));
    }
    let mut data = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        data.insert(k.to_string(), ByteString(v.into_bytes()));
    };
    put(KEY_TOKEN_ID, id.into());
    put(KEY_TOKEN_SECRET, secret.into());
    put(KEY_USAGE_AUTHENTICATION, "true".into());
    put(KEY_USAGE_SIGNING, "true".into());
    if let Some(e) = expiration {
        put(KEY_EXPIRATION, e.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
    }
    if !extra_groups.is_empty() {
        put(KEY_EXTRA_GROUPS, extra_groups.join(","));
    }
    if !description.is_empty() {
        put(KEY_DESCRIPTION, description.into());
    }
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(format!("{SECRET_PREFIX}{id}")),
            namespace: Some(NAMESPACE.into()),
            ..Default::default()
        },
        type_: Some(SECRET_TYPE.into()),
        data: Some(data),
        ..Default::default()
    })
}

/// Namespace of the `cluster-info` ConfigMap kubeadm-style joins read anonymously.
pub const CLUSTER_INFO_NAMESPACE: &str = "kube-public";
/// Name of that ConfigMap.
pub const CLUSTER_INFO_NAME: &str = "cluster-info";
/// Its key holding a kubeconfig with the cluster's server and CA only.
pub const CLUSTER_INFO_KUBECONFIG_KEY: &str = "kubeconfig";
/// Prefix of its keys holding a token's signature of that kubeconfig (`jws-kubeconfig-<id>`).
pub const CLUSTER_INFO_JWS_PREFIX: &str = "jws-kubeconfig-";

/// The bootstrap signer's detached JWS of `content` (upstream's
/// `jws.ComputeDetachedSignature`): HS256 keyed by the token secret, header
/// `{"alg":"HS256","kid":"<token id>"}`, serialized `header..signature`. Stored in
/// `cluster-info` under `jws-kubeconfig-<id>` for tokens with `usage-bootstrap-signing`.
pub fn detached_signature(content: &str, token_id: &str, token_secret: &str) -> String {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = serde_json::json!({"alg": "HS256", "kid": token_id}).to_string();
    let header = URL_SAFE_NO_PAD.encode(header);
    let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(content));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, token_secret.as_bytes());
    let tag = ring::hmac::sign(&key, input.as_bytes());
    format!("{header}..{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

/// Whether `signature` is the detached JWS of `content` for the token (what a joining node
/// checks before trusting the `cluster-info` kubeconfig; the CA is then pinned with the CA
/// certificate hash).
pub fn detached_signature_is_valid(
    signature: &str,
    content: &str,
    token_id: &str,
    token_secret: &str,
) -> bool {
    constant_time_eq(
        detached_signature(content, token_id, token_secret).as_bytes(),
        signature.as_bytes(),
    )
}
