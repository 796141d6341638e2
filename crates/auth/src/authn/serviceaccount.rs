//! ServiceAccount tokens: compact JWS (ES256, ECDSA P-256 with SHA-256, signed with ring)
//! carrying upstream's claims, both bound tokens (TokenRequest / projected volumes) and
//! legacy Secret-based tokens.
//!
//! Bound token payload (keys sorted, as go-jose writes them):
//! `{"aud":[…],"exp":…,"iat":…,"iss":"https://kubernetes.default.svc.cluster.local","jti":"…",
//! "kubernetes.io":{"namespace":…,"node":{…},"pod":{"name":…,"uid":…},"serviceaccount":{"name":…,"uid":…}},
//! "nbf":…,"sub":"system:serviceaccount:<ns>:<name>"}`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{CREDENTIAL_ID_KEY, ObjectLookup, UserInfo};
use crate::error::{Error, Result};
use crate::pki::ClusterPki;

/// The issuer of bound tokens (kube-apiserver's usual `--service-account-issuer`).
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The issuer of legacy Secret-based tokens.
pub const LEGACY_ISSUER: &str = "kubernetes/serviceaccount";
/// User name prefix of ServiceAccounts.
pub const USER_PREFIX: &str = "system:serviceaccount:";
/// The group of all ServiceAccounts.
pub const ALL_SERVICE_ACCOUNTS_GROUP: &str = "system:serviceaccounts";
/// `extra` key: name of the pod a token is bound to.
pub const POD_NAME_KEY: &str = "authentication.kubernetes.io/pod-name";
/// `extra` key: uid of the pod a token is bound to.
pub const POD_UID_KEY: &str = "authentication.kubernetes.io/pod-uid";
/// `extra` key: name of the node a token is bound to (or its pod runs on).
pub const NODE_NAME_KEY: &str = "authentication.kubernetes.io/node-name";
/// `extra` key: uid of that node.
pub const NODE_UID_KEY: &str = "authentication.kubernetes.io/node-uid";
/// Leeway for `exp`, `nbf` and `iat` (go-jose's default).
pub const LEEWAY_SECONDS: i64 = 60;
/// A bound object deleted longer ago than this invalidates its tokens (upstream's grace).
const DELETED_GRACE_SECONDS: i64 = 60;
/// Longest token accepted for parsing.
const MAX_TOKEN_LEN: usize = 64 * 1024;

/// The user name of a ServiceAccount: `system:serviceaccount:<ns>:<name>`.
pub fn service_account_username(namespace: &str, name: &str) -> String {
    format!("{USER_PREFIX}{namespace}:{name}")
}

/// Splits `system:serviceaccount:<ns>:<name>` into (ns, name).
pub fn split_service_account_username(user: &str) -> Option<(&str, &str)> {
    let rest = user.strip_prefix(USER_PREFIX)?;
    let (ns, name) = rest.split_once(':')?;
    if ns.is_empty() || name.is_empty() || name.contains(':') {
        return None;
    }
    Some((ns, name))
}

/// The groups of a ServiceAccount: `system:serviceaccounts`, `system:serviceaccounts:<ns>`.
pub fn service_account_groups(namespace: &str) -> Vec<String> {
    vec![
        ALL_SERVICE_ACCOUNTS_GROUP.into(),
        format!("{ALL_SERVICE_ACCOUNTS_GROUP}:{namespace}"),
    ]
}

/// A name and uid of a referenced object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectRef {
    /// Object name.
    pub name: String,
    /// Object uid.
    pub uid: String,
}

/// The object a bound token is tied to: the token stops working when the object is deleted
/// or replaced (its uid changes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BoundObject {
    /// A pod in the ServiceAccount's namespace, with the node it runs on when known (recorded
    /// in the token and the user's `extra`, like upstream's pod node info).
    Pod {
        /// The pod.
        pod: ObjectRef,
        /// The pod's node.
        node: Option<ObjectRef>,
    },
    /// A Secret in the ServiceAccount's namespace.
    Secret(ObjectRef),
    /// A Node.
    Node(ObjectRef),
}

/// A token and its lifetime.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The compact JWS.
    pub token: String,
    /// When it was issued.
    pub issued_at: jiff::Timestamp,
    /// When it expires (TokenRequest's `status.expirationTimestamp`).
    pub expiration: jiff::Timestamp,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token", &"<redacted>")
            .field("issued_at", &self.issued_at)
            .field("expiration", &self.expiration)
            .finish()
    }
}

/// Why a ServiceAccount token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a JWS, or not from an issuer this verifier accepts: another authenticator may
    /// take it.
    #[error("not a ServiceAccount token")]
    NotServiceAccountToken,
    /// Our issuer, but the token is malformed.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// No key verifies the signature.
    #[error("invalid signature")]
    InvalidSignature,
    /// `exp` has passed.
    #[error("token is expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token not valid yet")]
    NotYetValid,
    /// `iat` is in the future.
    #[error("token issued in the future")]
    IssuedInFuture,
    /// The token's audiences and the accepted ones do not intersect.
    #[error("token audiences {token:?} is invalid for the target audiences {accepted:?}")]
    InvalidAudience {
        /// The token's `aud`.
        token: Vec<String>,
        /// The audiences accepted.
        accepted: Vec<String>,
    },
    /// A claim is missing or the objects it names no longer match (deleted or replaced
    /// ServiceAccount, pod, Secret or node).
    #[error("{0}")]
    Invalid(String),
}

struct VerifyKey {
    kid: String,
    /// Uncompressed P-256 point.
    point: Vec<u8>,
}

/// Issues and verifies ServiceAccount tokens with one ECDSA P-256 key.
pub struct ServiceAccountTokens {
    issuer: String,
    api_audiences: Vec<String>,
    signer: Option<EcdsaKeyPair>,
    keys: Vec<VerifyKey>,
    rng: SystemRandom,
}

impl std::fmt::Debug for ServiceAccountTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountTokens")
            .field("issuer", &self.issuer)
            .field("api_audiences", &self.api_audiences)
            .field("can_sign", &self.signer.is_some())
            .field(
                "key_ids",
                &self.keys.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn key_id(spki_der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, spki_der))
}

/// The SubjectPublicKeyInfo DER of an uncompressed P-256 point.
fn p256_spki(point: &[u8]) -> Vec<u8> {
    // SEQUENCE { SEQUENCE { ecPublicKey, prime256v1 }, BIT STRING point }
    const PREFIX: [u8; 26] = [
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
        0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    let mut v = PREFIX.to_vec();
    v.extend_from_slice(point);
    v
}

impl ServiceAccountTokens {
    /// A signer and verifier from a PKCS#8 DER ECDSA P-256 private key, for `issuer`,
    /// accepting tokens for `api_audiences` (kube-apiserver's `--api-audiences`; empty means
    /// `[issuer]`, upstream's default).
    pub fn new(private_pkcs8_der: &[u8], issuer: &str, api_audiences: Vec<String>) -> Result<Self> {
        let rng = SystemRandom::new();
        let kp = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            private_pkcs8_der,
            &rng,
        )
        .map_err(|e| {
            Error::Key(format!(
                "ServiceAccount key (ECDSA P-256 PKCS#8 expected): {e}"
            ))
        })?;
        let point = kp.public_key().as_ref().to_vec();
        let keys = vec![VerifyKey {
            kid: key_id(&p256_spki(&point)),
            point,
        }];
        Ok(ServiceAccountTokens {
            issuer: issuer.to_string(),
            api_audiences: default_audiences(api_audiences, issuer),
            signer: Some(kp),
            keys,
            rng,
        })
    }

    /// The cluster's signer: the PKI's `sa.key`, [`DEFAULT_ISSUER`], audiences `[issuer]`.
    pub fn from_pki(pki: &ClusterPki) -> Result<Self> {
        Self::new(pki.sa_private_key_pkcs8(), DEFAULT_ISSUER, Vec::new())
    }

    /// A verifier only, from SubjectPublicKeyInfo DER P-256 public keys.
    pub fn verifier(
        public_spki_der: &[&[u8]],
        issuer: &str,
        api_audiences: Vec<String>,
    ) -> Result<Self> {
        let mut keys = Vec::new();
        for spki in public_spki_der {
            let (_, info) =
                <x509_parser::x509::SubjectPublicKeyInfo<'_> as x509_parser::prelude::FromDer<
                    '_,
                    _,
                >>::from_der(spki)
                .map_err(|e| Error::Key(format!("public key: {e}")))?;
            let point = info.subject_public_key.data.to_vec();
            if point.len() != 65 || point[0] != 4 || p256_spki(&point) != *spki {
                return Err(Error::Key(
                    "public key: only ECDSA P-256 keys are supported".into(),
                ));
            }
            keys.push(VerifyKey {
                kid: key_id(spki),
                point,
            });
        }
        if keys.is_empty() {
            return Err(Error::Key("no ServiceAccount public key".into()));
        }
        Ok(ServiceAccountTokens {
            issuer: issuer.to_string(),
            api_audiences: default_audiences(api_audiences, issuer),
            signer: None,
            keys,
            rng: SystemRandom::new(),
        })
    }

    /// The issuer (`iss`) of bound tokens.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The audiences tokens must have one of.
    pub fn api_audiences(&self) -> &[String] {
        &self.api_audiences
    }

    /// The key id (`kid`) of the signing key: base64url SHA-256 of its SubjectPublicKeyInfo.
    pub fn key_id(&self) -> &str {
        self.keys.first().map(|k| k.kid.as_str()).unwrap_or("")
    }

    /// Issues a bound token (what TokenRequest returns) valid for `expiration_seconds` from
    /// now, for `audiences` (empty means the API audiences), tied to `bound` when given.
    /// Minimum/maximum durations are the caller's policy.
    pub fn issue_sa_token(
        &self,
        namespace: &str,
        sa_name: &str,
        sa_uid: &str,
        audiences: &[String],
        expiration_seconds: i64,
        bound: Option<&BoundObject>,
    ) -> Result<IssuedToken> {
        if namespace.is_empty() || sa_name.is_empty() || sa_uid.is_empty() {
            return Err(Error::Token(
                "namespace, ServiceAccount name and uid are required".into(),
            ));
        }
        if expiration_seconds <= 0 {
            return Err(Error::Token(format!(
                "expirationSeconds must be positive, got {expiration_seconds}"
            )));
        }
        let now = jiff::Timestamp::now();
        let iat = now.as_second();
        let exp = iat
            .checked_add(expiration_seconds)
            .filter(|e| *e < jiff::Timestamp::MAX.as_second())
            .ok_or_else(|| Error::Token("expirationSeconds too large".into()))?;
        let expiration =
            jiff::Timestamp::from_second(exp).map_err(|e| Error::Token(e.to_string()))?;
        let r = |o: &ObjectRef| Ref {
            name: Some(o.name.clone()).filter(|s| !s.is_empty()),
            uid: Some(o.uid.clone()).filter(|s| !s.is_empty()),
        };
        let mut k8s = K8sClaims {
            namespace: Some(namespace.into()),
            serviceaccount: Some(Ref {
                name: Some(sa_name.into()),
                uid: Some(sa_uid.into()),
            }),
            ..Default::default()
        };
        match bound {
            Some(BoundObject::Pod { pod, node }) => {
                k8s.pod = Some(r(pod));
                k8s.node = node.as_ref().map(r);
            }
            Some(BoundObject::Secret(s)) => k8s.secret = Some(r(s)),
            Some(BoundObject::Node(n)) => k8s.node = Some(r(n)),
            None => {}
        }
        let auds = if audiences.is_empty() {
            self.api_audiences.clone()
        } else {
            audiences.to_vec()
        };
        let claims = Claims {
            aud: Some(Audience::Many(auds)),
            exp: Some(exp.into()),
            iat: Some(iat.into()),
            iss: Some(self.issuer.clone()),
            jti: Some(uuid::Uuid::new_v4().to_string()),
            kubernetes: Some(k8s),
            nbf: Some(iat.into()),
            sub: Some(service_account_username(namespace, sa_name)),
            ..Default::default()
        };
        Ok(IssuedToken {
            token: self.sign(&claims)?,
            issued_at: jiff::Timestamp::from_second(iat)
                .map_err(|e| Error::Token(e.to_string()))?,
            expiration,
        })
    }

    /// Issues a legacy (Secret-based, non-expiring) token as the token controller puts in a
    /// `kubernetes.io/service-account-token` Secret: issuer `kubernetes/serviceaccount`.
    pub fn issue_legacy_token(
        &self,
        namespace: &str,
        sa_name: &str,
        sa_uid: &str,
        secret_name: &str,
    ) -> Result<String> {
        let claims = Claims {
            iss: Some(LEGACY_ISSUER.into()),
            legacy_namespace: Some(namespace.into()),
            legacy_secret_name: Some(secret_name.into()),
            legacy_sa_name: Some(sa_name.into()),
            legacy_sa_uid: Some(sa_uid.into()),
            sub: Some(service_account_username(namespace, sa_name)),
            ..Default::default()
        };
        self.sign(&claims)
    }

    fn sign(&self, claims: &Claims) -> Result<String> {
        let signer = self
            .signer
            .as_ref()
            .ok_or_else(|| Error::Token("verify-only: no signing key".into()))?;
        let header = json!({"alg": "ES256", "kid": self.key_id()});
        let header = serde_json::to_vec(&header).map_err(|e| Error::Token(e.to_string()))?;
        let payload = serde_json::to_vec(claims).map_err(|e| Error::Token(e.to_string()))?;
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let sig = signer
            .sign(&self.rng, signing_input.as_bytes())
            .map_err(|_| Error::Token("signing failed".into()))?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(sig.as_ref())
        ))
    }

    /// Verifies a token now; see [`Self::verify_at`].
    pub fn verify(&self, token: &str, lookup: &dyn ObjectLookup) -> Result<UserInfo, TokenError> {
        self.verify_at(token, lookup, jiff::Timestamp::now())
    }

    /// Verifies a bound or legacy ServiceAccount token as of `now`: signature, `exp`/`nbf`/
    /// `iat` (60 s leeway), audience (must intersect the API audiences; a token without `aud`
    /// gets them implicitly, like upstream), and that the ServiceAccount (and the bound pod,
    /// Secret or node; for legacy tokens the Secret holding this very token) still exist with
    /// the uids in the token. The user is `system:serviceaccount:<ns>:<name>` with uid the
    /// ServiceAccount's, groups `system:serviceaccounts`, `system:serviceaccounts:<ns>`,
    /// `system:authenticated`, and `extra` pod/node name and uid and credential id
    /// (`JTI=<jti>`).
    pub fn verify_at(
        &self,
        token: &str,
        lookup: &dyn ObjectLookup,
        now: jiff::Timestamp,
    ) -> Result<UserInfo, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::NotServiceAccountToken);
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::NotServiceAccountToken);
        };
        let decode = |x: &str| {
            URL_SAFE_NO_PAD
                .decode(x)
                .map_err(|_| TokenError::NotServiceAccountToken)
        };
        let header: Header =
            serde_json::from_slice(&decode(h)?).map_err(|_| TokenError::NotServiceAccountToken)?;
        let payload = decode(p)?;
        let claims: Claims =
            serde_json::from_slice(&payload).map_err(|_| TokenError::NotServiceAccountToken)?;
        let legacy = match claims.iss.as_deref() {
            Some(i) if i == self.issuer => false,
            Some(LEGACY_ISSUER) => true,
            _ => return Err(TokenError::NotServiceAccountToken),
        };
        if header.alg != "ES256" {
            return Err(TokenError::Malformed(format!(
                "unsupported signing algorithm {:?}",
                header.alg
            )));
        }
        let sig =
            decode(s).map_err(|_| TokenError::Malformed("signature is not base64url".into()))?;
        let signing_input = &token.as_bytes()[..h.len() + 1 + p.len()];
        let verified = self
            .keys
            .iter()
            .filter(|k| header.kid.as_deref().is_none_or(|kid| kid == k.kid))
            .any(|k| {
                signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &k.point)
                    .verify(signing_input, &sig)
                    .is_ok()
            });
        if !verified {
            return Err(TokenError::InvalidSignature);
        }

        // Public claims.
        let now_s = now.as_second();
        if let Some(nbf) = claims.nbf.as_ref().map(numeric_date)
            && now_s + LEEWAY_SECONDS < nbf?
        {
            return Err(TokenError::NotYetValid);
        }
        if let Some(exp) = claims.exp.as_ref().map(numeric_date)
            && now_s - LEEWAY_SECONDS > exp?
        {
            return Err(TokenError::Expired);
        }
        if let Some(iat) = claims.iat.as_ref().map(numeric_date)
            && now_s + LEEWAY_SECONDS < iat?
        {
            return Err(TokenError::IssuedInFuture);
        }
        let token_auds = match &claims.aud {
            None => Vec::new(),
            Some(Audience::One(a)) => vec![a.clone()],
            Some(Audience::Many(a)) => a.clone(),
        };
        if !token_auds.is_empty() && !token_auds.iter().any(|a| self.api_audiences.contains(a)) {
            return Err(TokenError::InvalidAudience {
                token: token_auds,
                accepted: self.api_audiences.clone(),
            });
        }

        let mut user = if legacy {
            validate_legacy(&claims, token, lookup)?
        } else {
            validate_bound(&claims, lookup, now_s)?
        };
        user.add_authenticated_group();
        Ok(user)
    }

    /// The verification keys as a JWK Set, served at `/openid/v1/jwks`.
    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<_> = self
            .keys
            .iter()
            .map(|k| {
                let (x, y) = k.point[1..].split_at(32);
                json!({
                    "use": "sig",
                    "kty": "EC",
                    "kid": k.kid,
                    "crv": "P-256",
                    "alg": "ES256",
                    "x": URL_SAFE_NO_PAD.encode(x),
                    "y": URL_SAFE_NO_PAD.encode(y),
                })
            })
            .collect();
        json!({ "keys": keys })
    }

    /// The OIDC discovery document served at `/.well-known/openid-configuration`;
    /// `jwks_uri` defaults to `<issuer>/openid/v1/jwks`.
    pub fn openid_configuration(&self, jwks_uri: Option<&str>) -> serde_json::Value {
        let jwks_uri = jwks_uri
            .map(str::to_string)
            .unwrap_or_else(|| format!("{}/openid/v1/jwks", self.issuer.trim_end_matches('/')));
        json!({
            "issuer": self.issuer,
            "jwks_uri": jwks_uri,
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        })
    }
}

fn default_audiences(auds: Vec<String>, issuer: &str) -> Vec<String> {
    if auds.is_empty() {
        vec![issuer.to_string()]
    } else {
        auds
    }
}

fn numeric_date(n: &serde_json::Number) -> Result<i64, TokenError> {
    if let Some(i) = n.as_i64() {
        return Ok(i);
    }
    match n.as_f64() {
        Some(f) if f.is_finite() && f.abs() < 1e15 => Ok(f as i64),
        _ => Err(TokenError::Malformed("invalid numeric date".into())),
    }
}

fn deleted_long_ago(
    ts: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    now_s: i64,
) -> bool {
    ts.is_some_and(|t| t.0.as_second() < now_s - DELETED_GRACE_SECONDS)
}

fn uid_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    meta.uid.as_deref().unwrap_or("")
}

fn validate_bound(
    claims: &Claims,
    lookup: &dyn ObjectLookup,
    now_s: i64,
) -> Result<UserInfo, TokenError> {
    let invalid = |m: String| Err(TokenError::Invalid(m));
    if claims.exp.is_none() {
        return invalid("service account token has no expiration".into());
    }
    let Some(k8s) = &claims.kubernetes else {
        return invalid("kubernetes.io claim is missing".into());
    };
    let ns = k8s.namespace.as_deref().unwrap_or("");
    let sa = k8s.serviceaccount.clone().unwrap_or_default();
    let (sa_name, sa_uid) = (sa.name.unwrap_or_default(), sa.uid.unwrap_or_default());
    if ns.is_empty() || sa_name.is_empty() || sa_uid.is_empty() {
        return invalid("service account namespace, name or uid claim is missing".into());
    }
    if claims.sub.as_deref() != Some(service_account_username(ns, &sa_name).as_str()) {
        return invalid("sub claim is invalid".into());
    }
    let Some(account) = lookup.service_account(ns, &sa_name) else {
        return invalid(format!("serviceaccounts \"{sa_name}\" not found"));
    };
    if uid_of(&account.metadata) != sa_uid {
        return invalid(format!(
            "service account UID ({}) does not match claim ({sa_uid})",
            uid_of(&account.metadata)
        ));
    }
    if deleted_long_ago(account.metadata.deletion_timestamp.as_ref(), now_s) {
        return invalid(format!("service account {ns}/{sa_name} has been deleted"));
    }
    let ref_parts = |r: &Ref| {
        (
            r.name.clone().unwrap_or_default(),
            r.uid.clone().unwrap_or_default(),
        )
    };
    if let Some(s) = &k8s.secret {
        let (name, uid) = ref_parts(s);
        let Some(secret) = lookup.secret(ns, &name) else {
            return invalid(format!("secrets \"{name}\" not found"));
        };
        if uid_of(&secret.metadata) != uid {
            return invalid(format!(
                "secret UID ({}) does not match service account secret ref claim ({uid})",
                uid_of(&secret.metadata)
            ));
        }
        if deleted_long_ago(secret.metadata.deletion_timestamp.as_ref(), now_s) {
            return invalid(format!("secret {ns}/{name} has been deleted"));
        }
    }
    let mut extra = std::collections::BTreeMap::new();
    if let Some(p) = &k8s.pod {
        let (name, uid) = ref_parts(p);
        let Some(pod) = lookup.pod(ns, &name) else {
            return invalid(format!("pods \"{name}\" not found"));
        };
        if uid_of(&pod.metadata) != uid {
            return invalid(format!(
                "pod UID ({}) does not match service account pod ref claim ({uid})",
                uid_of(&pod.metadata)
            ));
        }
        if deleted_long_ago(pod.metadata.deletion_timestamp.as_ref(), now_s) {
            return invalid(format!("pod {ns}/{name} has been deleted"));
        }
        if !name.is_empty() && !uid.is_empty() {
            extra.insert(POD_NAME_KEY.to_string(), vec![name]);
            extra.insert(POD_UID_KEY.to_string(), vec![uid]);
        }
    }
    if let Some(n) = &k8s.node {
        let (name, uid) = ref_parts(n);
        if k8s.pod.is_none() {
            let Some(node) = lookup.node(&name) else {
                return invalid(format!("nodes \"{name}\" not found"));
            };
            if uid_of(&node.metadata) != uid {
                return invalid(format!(
                    "node UID ({}) does not match service account node ref claim ({uid})",
                    uid_of(&node.metadata)
                ));
            }
            if deleted_long_ago(node.metadata.deletion_timestamp.as_ref(), now_s) {
                return invalid(format!("node {name} has been deleted"));
            }
        }
        if !name.is_empty() {
            extra.insert(NODE_NAME_KEY.to_string(), vec![name]);
            if !uid.is_empty() {
                extra.insert(NODE_UID_KEY.to_string(), vec![uid]);
            }
        }
    }
    if let Some(jti) = claims.jti.as_deref().filter(|j| !j.is_empty()) {
        extra.insert(CREDENTIAL_ID_KEY.to_string(), vec![format!("JTI={jti}")]);
    }
    Ok(UserInfo {
        name: service_account_username(ns, &sa_name),
        uid: sa_uid,
        groups: service_account_groups(ns),
        extra,
    })
}

fn validate_legacy(
    claims: &Claims,
    token: &str,
    lookup: &dyn ObjectLookup,
) -> Result<UserInfo, TokenError> {
    let get = |o: &Option<String>, what: &str| match o.as_deref() {
        Some(v) if !v.is_empty() => Ok(v.to_string()),
        _ => Err(TokenError::Invalid(format!("{what} claim is missing"))),
    };
    let sa_name = get(&claims.legacy_sa_name, "serviceAccountName")?;
    let ns = get(&claims.legacy_namespace, "namespace")?;
    let sa_uid = get(&claims.legacy_sa_uid, "serviceAccountUID")?;
    let secret_name = get(&claims.legacy_secret_name, "secretName")?;
    let sub_ok = claims
        .sub
        .as_deref()
        .and_then(split_service_account_username)
        .is_some_and(|(n, s)| n == ns && s == sa_name);
    if !sub_ok {
        return Err(TokenError::Invalid("sub claim is invalid".into()));
    }
    let invalidated = || TokenError::Invalid("token has been invalidated".into());
    let secret = lookup.secret(&ns, &secret_name).ok_or_else(invalidated)?;
    if secret.metadata.deletion_timestamp.is_some() {
        return Err(invalidated());
    }
    let stored = secret
        .data
        .as_ref()
        .and_then(|d| d.get("token"))
        .map(|b| b.0.as_slice());
    if stored != Some(token.as_bytes()) {
        return Err(TokenError::Invalid(
            "token does not match server's copy".into(),
        ));
    }
    let account = lookup
        .service_account(&ns, &sa_name)
        .ok_or_else(invalidated)?;
    if account.metadata.deletion_timestamp.is_some() {
        return Err(invalidated());
    }
    if uid_of(&account.metadata) != sa_uid {
        return Err(TokenError::Invalid(format!(
            "ServiceAccount UID ({}) does not match claim ({sa_uid})",
            uid_of(&account.metadata)
        )));
    }
    Ok(UserInfo {
        name: service_account_username(&ns, &sa_name),
        uid: sa_uid,
        groups: service_account_groups(&ns),
        extra: Default::default(),
    })
}

#[derive(Deserialize)]
struct Header {
    #[serde(default)]
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Ref {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    uid: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct K8sClaims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    node: Option<Ref>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pod: Option<Ref>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret: Option<Ref>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    serviceaccount: Option<Ref>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    warnafter: Option<serde_json::Number>,
}

/// Bound and legacy claims in one struct; fields in key order so the JSON matches
/// go-jose's sorted output.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Claims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aud: Option<Audience>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exp: Option<serde_json::Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<serde_json::Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jti: Option<String>,
    #[serde(
        rename = "kubernetes.io",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    kubernetes: Option<K8sClaims>,
    #[serde(
        rename = "kubernetes.io/serviceaccount/namespace",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    legacy_namespace: Option<String>,
    #[serde(
        rename = "kubernetes.io/serviceaccount/secret.name",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    legacy_secret_name: Option<String>,
    #[serde(
        rename = "kubernetes.io/serviceaccount/service-account.name",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    legacy_sa_name: Option<String>,
    #[serde(
        rename = "kubernetes.io/serviceaccount/service-account.uid",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    legacy_sa_uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<serde_json::Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sub: Option<String>,
}
