//! Authentication: who is making a request.
//!
//! - client certificates ([`authenticate_cert`]): CN is the user, O the groups;
//! - bearer tokens ([`TokenAuthenticator`]): a static token file ([`StaticTokens`],
//!   `--token-auth-file`), ServiceAccount JWTs ([`ServiceAccountTokens`]) and bootstrap
//!   tokens ([`authenticate_bootstrap_token`]).
//!
//! Objects the token authenticators need (bootstrap token Secrets, ServiceAccounts, pods)
//! are read through [`ObjectLookup`], which the apiserver backs with its watch cache.

pub mod bootstrap;
pub mod serviceaccount;
pub mod token_file;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod, Secret, ServiceAccount};
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use x509_parser::prelude::{FromDer, X509Certificate};

pub use bootstrap::{
    authenticate_bootstrap_token, bootstrap_token_secret, generate_bootstrap_token,
};
pub use serviceaccount::{BoundObject, IssuedToken, ServiceAccountTokens, TokenError};
pub use token_file::StaticTokens;

/// The group every authenticated user is in.
pub const SYSTEM_AUTHENTICATED: &str = "system:authenticated";
/// The group of unauthenticated (anonymous) requests.
pub const SYSTEM_UNAUTHENTICATED: &str = "system:unauthenticated";
/// The user name of unauthenticated requests.
pub const ANONYMOUS_USER: &str = "system:anonymous";
/// The `extra` key carrying a credential's identity (upstream's `user.CredentialIDKey`).
pub const CREDENTIAL_ID_KEY: &str = "authentication.kubernetes.io/credential-id";

/// An authenticated (or anonymous) user: upstream's `user.Info`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    /// The user name.
    pub name: String,
    /// A unique id, empty when the authenticator has none.
    pub uid: String,
    /// Groups, `system:authenticated` included for authenticated users.
    pub groups: Vec<String>,
    /// Extra attributes (e.g. the pod a ServiceAccount token is bound to).
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// The anonymous user: `system:anonymous` in group `system:unauthenticated`.
    pub fn anonymous() -> Self {
        UserInfo {
            name: ANONYMOUS_USER.into(),
            groups: vec![SYSTEM_UNAUTHENTICATED.into()],
            ..Default::default()
        }
    }

    /// A user with a name and groups (`system:authenticated` added).
    pub fn new(
        name: impl Into<String>,
        groups: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        let mut u = UserInfo {
            name: name.into(),
            groups: groups.into_iter().map(Into::into).collect(),
            ..Default::default()
        };
        u.add_authenticated_group();
        u
    }

    /// Whether the user is in `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// Adds `system:authenticated` unless the user is anonymous or already has it (upstream's
    /// `AuthenticatedGroupAdder`).
    pub fn add_authenticated_group(&mut self) {
        if self.name == ANONYMOUS_USER
            || self.in_group(SYSTEM_AUTHENTICATED)
            || self.in_group(SYSTEM_UNAUTHENTICATED)
        {
            return;
        }
        self.groups.push(SYSTEM_AUTHENTICATED.into());
    }
}

/// Read access to the objects token authentication depends on. The apiserver implements it
/// over its watch cache; every method returns `None` for an object that does not exist.
pub trait ObjectLookup: Send + Sync {
    /// A Secret (bootstrap tokens live in `kube-system`; legacy ServiceAccount tokens too).
    fn secret(&self, namespace: &str, name: &str) -> Option<Secret>;
    /// A ServiceAccount.
    fn service_account(&self, namespace: &str, name: &str) -> Option<ServiceAccount>;
    /// A Pod (for pod-bound ServiceAccount tokens).
    fn pod(&self, namespace: &str, name: &str) -> Option<Pod>;
    /// A Node (for node-bound ServiceAccount tokens).
    fn node(&self, name: &str) -> Option<Node>;
}

/// An [`ObjectLookup`] that finds nothing (static tokens only, or tests).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoObjects;

impl ObjectLookup for NoObjects {
    fn secret(&self, _: &str, _: &str) -> Option<Secret> {
        None
    }
    fn service_account(&self, _: &str, _: &str) -> Option<ServiceAccount> {
        None
    }
    fn pod(&self, _: &str, _: &str) -> Option<Pod> {
        None
    }
    fn node(&self, _: &str) -> Option<Node> {
        None
    }
}

/// Authenticates a TLS client by its certificate: `peer_chain` is the chain rustls already
/// verified against the cluster CA (leaf first; see [`crate::tls::server_config`]). The
/// leaf's CN is the user name and its O values the groups, plus `system:authenticated`;
/// `extra` carries the credential id `X509SHA256=<hex>` like upstream. A certificate without
/// a CN, or one that does not parse, authenticates nobody.
///
/// This function does not verify the chain itself.
pub fn authenticate_cert(peer_chain: &[CertificateDer<'_>]) -> Option<UserInfo> {
    let leaf = peer_chain.first()?;
    let (_, cert) = match X509Certificate::from_der(leaf) {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(error = %e, "client certificate does not parse");
            return None;
        }
    };
    let subject = cert.subject();
    let cn = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    if cn.is_empty() {
        return None;
    }
    let groups: Vec<String> = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    let mut user = UserInfo::new(cn, groups);
    let fp = ring::digest::digest(&ring::digest::SHA256, leaf);
    user.extra.insert(
        CREDENTIAL_ID_KEY.into(),
        vec![format!("X509SHA256={}", crate::pki::hex(fp.as_ref()))],
    );
    Some(user)
}

/// Extracts the token of an `Authorization: Bearer <token>` header value (scheme matched
/// case-insensitively, like upstream); `None` for other schemes or an empty token.
pub fn bearer_token(header: &str) -> Option<&str> {
    let mut parts = header.trim().splitn(3, ' ');
    let scheme = parts.next()?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = parts.next()?;
    if token.is_empty() { None } else { Some(token) }
}

/// The bearer-token authenticators in upstream's order: static token file, ServiceAccount
/// tokens, bootstrap tokens. The first that accepts a token wins.
#[derive(Debug, Default)]
pub struct TokenAuthenticator {
    /// `--token-auth-file` tokens.
    pub static_tokens: Option<StaticTokens>,
    /// ServiceAccount token verification (bound and legacy).
    pub service_accounts: Option<ServiceAccountTokens>,
    /// Whether bootstrap tokens (`--enable-bootstrap-token-auth`) are accepted.
    pub bootstrap_tokens: bool,
}

impl TokenAuthenticator {
    /// Authenticates a bearer token at the current time.
    pub fn authenticate(&self, token: &str, lookup: &dyn ObjectLookup) -> Option<UserInfo> {
        self.authenticate_at(token, lookup, jiff::Timestamp::now())
    }

    /// Authenticates a bearer token as of `now`. Rejections are logged at debug level.
    pub fn authenticate_at(
        &self,
        token: &str,
        lookup: &dyn ObjectLookup,
        now: jiff::Timestamp,
    ) -> Option<UserInfo> {
        if let Some(st) = &self.static_tokens
            && let Some(u) = st.authenticate(token)
        {
            return Some(u);
        }
        if let Some(sa) = &self.service_accounts {
            match sa.verify_at(token, lookup, now) {
                Ok(u) => return Some(u),
                Err(TokenError::NotServiceAccountToken) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "ServiceAccount token rejected");
                    return None;
                }
            }
        }
        if self.bootstrap_tokens
            && let Some(u) = authenticate_bootstrap_token(token, lookup, now)
        {
            return Some(u);
        }
        None
    }
}
