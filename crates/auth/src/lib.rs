//! kumo-auth: the cluster's PKI, kubeconfigs, TLS configuration, authentication and RBAC.
//!
//! - [`pki`]: [`ClusterPki`] creates/loads the CA, the apiserver serving certificate, the
//!   admin client certificate and the ServiceAccount signing key, and signs more certificates.
//! - [`kubeconfig`]: write and read kubeconfig files.
//! - [`tls`]: rustls server/client configurations (ring).
//! - [`authn`]: [`UserInfo`], client certificate, static token, bootstrap token and
//!   ServiceAccount JWT authentication.
//! - [`rbac`]: the RBAC [`Authorizer`], aggregation, upstream's Forbidden messages and the
//!   [`bootstrap_policy`].

#![warn(missing_docs)]

pub mod authn;
pub mod error;
pub mod kubeconfig;
pub mod pki;
pub mod rbac;
pub mod tls;

pub use authn::{
    BoundObject, IssuedToken, NoObjects, ObjectLookup, ServiceAccountTokens, StaticTokens,
    TokenAuthenticator, TokenError, UserInfo, authenticate_cert,
};
pub use error::{Error, Result};
pub use kubeconfig::{Credentials, Kubeconfig, ResolvedKubeconfig, write_admin_kubeconfig};
pub use pki::{CertAndKey, CertUsage, ClusterPki};
pub use rbac::{Attributes, Authorizer, Decision, RbacSource, StaticRbac, bootstrap_policy};
pub use tls::server_config;

#[cfg(test)]
mod tests;
