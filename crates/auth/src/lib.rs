//! kumo-auth: the cluster's PKI, kubeconfigs, TLS configuration, authentication and RBAC.
//!
//! - [`pki`]: [`ClusterPki`] creates/loads the CA, the apiserver serving certificate, the
//!   admin client certificate and the ServiceAccount signing key, and signs more certificates.
//! - [`kubeconfig`]: write and read kubeconfig files.
//! - [`tls`]: rustls server/client configurations (ring).
//! - [`authn`]: [`UserInfo`], client certificate, static token, bootstrap token and
//!   ServiceAccount JWT authentication.
//! - [`csr`]: certificate signing requests (parsing, verification, the CSR signer).
//! - [`join`]: bootstrap tokens, the CA certificate hash and cluster-info signatures.
//! - [`rbac`]: the RBAC [`Authorizer`], aggregation, upstream's Forbidden messages and the
//!   [`bootstrap_policy`].

#![warn(missing_docs)]

pub mod authn;
pub mod csr;
pub mod error;
pub mod join;
pub mod kubeconfig;
pub mod pki;
pub mod rbac;
pub mod tls;

pub use authn::{
    BoundObject, IssuedToken, NoObjects, ObjectLookup, ServiceAccountTokens, StaticTokens,
    TokenAuthenticator, TokenError, UserInfo, authenticate_cert,
};
pub use csr::{CsrInfo, CsrSigner, parse_csr_pem};
pub use error::{Error, Result};
pub use join::{
    bootstrap_token_secret, ca_cert_hash, generate_bootstrap_token, jws_detached_sign,
    jws_detached_verify, verify_ca_cert_hash,
};
pub use kubeconfig::{Credentials, Kubeconfig, ResolvedKubeconfig, write_admin_kubeconfig};
pub use pki::{CertAndKey, CertUsage, ClusterPki};
pub use rbac::{Attributes, Authorizer, Decision, RbacSource, StaticRbac, bootstrap_policy};
pub use tls::server_config;

#[cfg(test)]
mod tests;
