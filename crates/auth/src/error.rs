//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong in kumo-auth. Malformed input (certificates, keys, tokens,
/// kubeconfigs, policy) always ends here, never in a panic.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A certificate could not be created, parsed or verified.
    #[error("certificate: {0}")]
    Certificate(String),
    /// A private or public key could not be created or parsed.
    #[error("key: {0}")]
    Key(String),
    /// A kubeconfig could not be parsed, resolved or written.
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    /// A TLS configuration could not be built.
    #[error("tls: {0}")]
    Tls(String),
    /// A static token file is malformed.
    #[error("token file {}: {message}", path.display())]
    TokenFile {
        /// The token file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A token could not be issued.
    #[error("token: {0}")]
    Token(String),
    /// An RBAC object (policy data, a label selector) is malformed.
    #[error("rbac: {0}")]
    Rbac(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
