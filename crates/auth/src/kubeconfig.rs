//! Kubeconfig files: writing the ones kumo hands out (admin, nodes, components) and reading
//! the ones components are started with (`--kubeconfig`).
//!
//! The schema is client-go's `clientcmd/api/v1` `Config`; unknown fields are ignored on read.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::pki::{CertAndKey, ClusterPki};

/// A kubeconfig document (`apiVersion: v1`, `kind: Config`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Kubeconfig {
    /// Always `v1`.
    #[serde(
        rename = "apiVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub api_version: Option<String>,
    /// Always `Config`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Named clusters.
    #[serde(default, deserialize_with = "null_as_default")]
    pub clusters: Vec<NamedCluster>,
    /// Named users (client-go's `AuthInfo`).
    #[serde(default, deserialize_with = "null_as_default")]
    pub users: Vec<NamedUser>,
    /// Named contexts.
    #[serde(default, deserialize_with = "null_as_default")]
    pub contexts: Vec<NamedContext>,
    /// The context used when none is asked for.
    #[serde(
        rename = "current-context",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub current_context: Option<String>,
}

/// A cluster under its name.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NamedCluster {
    /// The name contexts refer to.
    pub name: String,
    /// The cluster.
    #[serde(default)]
    pub cluster: Cluster,
}

/// How to reach an apiserver.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Cluster {
    /// `https://host:port`.
    #[serde(default)]
    pub server: String,
    /// Base64 PEM CA bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority_data: Option<String>,
    /// Path of a PEM CA bundle (relative paths are relative to the kubeconfig file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<String>,
    /// Skip server certificate verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_tls_verify: Option<bool>,
    /// The name to verify the server certificate against instead of the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    /// A proxy to reach the server through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_url: Option<String>,
}

/// A user under its name.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NamedUser {
    /// The name contexts refer to.
    pub name: String,
    /// The credentials.
    #[serde(default)]
    pub user: User,
}

/// Credentials (client-go's `AuthInfo`; exec and auth-provider plugins are not supported).
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct User {
    /// Base64 PEM client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_data: Option<String>,
    /// Path of a PEM client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
    /// Base64 PEM client key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_data: Option<String>,
    /// Path of a PEM client key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<String>,
    /// A bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Path of a file holding a bearer token.
    #[serde(rename = "tokenFile", default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
    /// Basic-auth user name (not accepted by kumo's apiserver; kept for round trips).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Basic-auth password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redact = |o: &Option<String>| o.as_ref().map(|_| "<redacted>");
        f.debug_struct("User")
            .field(
                "client_certificate_data",
                &self.client_certificate_data.is_some(),
            )
            .field("client_certificate", &self.client_certificate)
            .field("client_key_data", &redact(&self.client_key_data))
            .field("client_key", &self.client_key)
            .field("token", &redact(&self.token))
            .field("token_file", &self.token_file)
            .field("username", &self.username)
            .field("password", &redact(&self.password))
            .finish()
    }
}

/// A context under its name.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NamedContext {
    /// The context's name.
    pub name: String,
    /// The context.
    #[serde(default)]
    pub context: Context,
}

/// A (cluster, user, namespace) triple.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Context {
    /// Name of a cluster.
    #[serde(default)]
    pub cluster: String,
    /// Name of a user.
    #[serde(default)]
    pub user: String,
    /// Default namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// How a kubeconfig user authenticates, for [`Kubeconfig::new_single`].
#[derive(Clone)]
pub enum Credentials {
    /// A client certificate and key (PEM).
    ClientCert(CertAndKey),
    /// A bearer token.
    Token(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::ClientCert(ck) => f.debug_tuple("ClientCert").field(ck).finish(),
            Credentials::Token(_) => f.write_str("Token(<redacted>)"),
        }
    }
}

/// One context of a kubeconfig with everything read: file references resolved and base64
/// decoded. What a component needs to build its client.
#[derive(Clone, Default)]
pub struct ResolvedKubeconfig {
    /// Name of the context.
    pub context: String,
    /// The apiserver URL.
    pub server: String,
    /// PEM CA bundle, if any.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM client certificate, if any.
    pub client_cert_pem: Option<Vec<u8>>,
    /// PEM client key, if any.
    pub client_key_pem: Option<Vec<u8>>,
    /// Bearer token, if any.
    pub token: Option<String>,
    /// The context's namespace (`default` when unset).
    pub namespace: String,
    /// Whether server verification is off.
    pub insecure_skip_tls_verify: bool,
    /// The name to verify the server certificate against.
    pub tls_server_name: Option<String>,
}

impl std::fmt::Debug for ResolvedKubeconfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolvedKubeconfig")
            .field("context", &self.context)
            .field("server", &self.server)
            .field("ca_pem", &self.ca_pem.is_some())
            .field("client_cert_pem", &self.client_cert_pem.is_some())
            .field(
                "client_key_pem",
                &self.client_key_pem.as_ref().map(|_| "<redacted>"),
            )
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("namespace", &self.namespace)
            .field("insecure_skip_tls_verify", &self.insecure_skip_tls_verify)
            .field("tls_server_name", &self.tls_server_name)
            .finish()
    }
}

impl Kubeconfig {
    /// A kubeconfig with one cluster, one user and one context (named
    /// `<user>@<cluster>`, kubeadm's convention) that is also the current context.
    pub fn new_single(
        server_url: &str,
        ca_pem: &str,
        cluster_name: &str,
        user_name: &str,
        credentials: &Credentials,
    ) -> Self {
        let mut user = User::default();
        match credentials {
            Credentials::ClientCert(ck) => {
                user.client_certificate_data = Some(STANDARD.encode(ck.cert_pem.as_bytes()));
                user.client_key_data = Some(STANDARD.encode(ck.key_pem.as_bytes()));
            }
            Credentials::Token(t) => user.token = Some(t.clone()),
        }
        let context_name = format!("{user_name}@{cluster_name}");
        Kubeconfig {
            api_version: Some("v1".into()),
            kind: Some("Config".into()),
            clusters: vec![NamedCluster {
                name: cluster_name.into(),
                cluster: Cluster {
                    server: server_url.into(),
                    certificate_authority_data: Some(STANDARD.encode(ca_pem.as_bytes())),
                    ..Cluster::default()
                },
            }],
            users: vec![NamedUser {
                name: user_name.into(),
                user,
            }],
            contexts: vec![NamedContext {
                name: context_name.clone(),
                context: Context {
                    cluster: cluster_name.into(),
                    user: user_name.into(),
                    namespace: None,
                },
            }],
            current_context: Some(context_name),
        }
    }

    /// The kubeconfig published in `kube-public/cluster-info`: one unnamed cluster (server
    /// and CA), no users or contexts, like kubeadm's.
    pub fn cluster_only(server_url: &str, ca_pem: &str) -> Self {
        Kubeconfig {
            api_version: Some("v1".into()),
            kind: Some("Config".into()),
            clusters: vec![NamedCluster {
                name: String::new(),
                cluster: Cluster {
                    server: server_url.into(),
                    certificate_authority_data: Some(STANDARD.encode(ca_pem.as_bytes())),
                    ..Cluster::default()
                },
            }],
            ..Kubeconfig::default()
        }
    }

    /// Adds `other`'s current context to this kubeconfig as context `name`, with its cluster
    /// entry renamed `name` and its user `<name>-admin` (replacing entries of those names),
    /// the way `kubectl config` merges kubeconfigs of several clusters into one file.
    pub fn add_context_from(&mut self, name: &str, other: &Kubeconfig) -> Result<()> {
        let ctx_name = other
            .current_context
            .as_deref()
            .ok_or_else(|| Error::Kubeconfig("no current context to copy".into()))?;
        let ctx = other
            .contexts
            .iter()
            .find(|c| c.name == ctx_name)
            .ok_or_else(|| Error::Kubeconfig(format!("context {ctx_name:?} not found")))?;
        let cluster = other
            .clusters
            .iter()
            .find(|c| c.name == ctx.context.cluster)
            .ok_or_else(|| {
                Error::Kubeconfig(format!("cluster {:?} not found", ctx.context.cluster))
            })?;
        let user = other
            .users
            .iter()
            .find(|u| u.name == ctx.context.user)
            .ok_or_else(|| Error::Kubeconfig(format!("user {:?} not found", ctx.context.user)))?;
        let user_name = format!("{name}-admin");
        self.clusters.retain(|c| c.name != name);
        self.users.retain(|u| u.name != user_name);
        self.contexts.retain(|c| c.name != name);
        self.clusters.push(NamedCluster {
            name: name.to_string(),
            cluster: cluster.cluster.clone(),
        });
        self.users.push(NamedUser {
            name: user_name.clone(),
            user: user.user.clone(),
        });
        self.contexts.push(NamedContext {
            name: name.to_string(),
            context: Context {
                cluster: name.to_string(),
                user: user_name,
                namespace: ctx.context.namespace.clone(),
            },
        });
        Ok(())
    }

    /// Parses a kubeconfig (YAML or JSON).
    pub fn from_yaml(text: &str) -> Result<Self> {
        if text.trim().is_empty() {
            return Ok(Kubeconfig::default());
        }
        serde_saphyr::from_str(text).map_err(|e| Error::Kubeconfig(e.to_string()))
    }

    /// Reads and parses a kubeconfig file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_yaml(&text).map_err(|e| Error::Kubeconfig(format!("{}: {e}", path.display())))
    }

    /// Serializes to YAML.
    pub fn to_yaml(&self) -> Result<String> {
        // Plain scalars for the long base64 values, like kubectl writes them.
        let mut options = serde_saphyr::SerializerOptions::default();
        options.prefer_block_scalars = false;
        serde_saphyr::to_string_with_options(self, options)
            .map_err(|e| Error::Kubeconfig(e.to_string()))
    }

    /// Writes the kubeconfig to `path` with mode 0600 (it holds credentials).
    pub fn write(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        crate::pki::write_file(path, self.to_yaml()?.as_bytes(), true)
    }

    /// Resolves `context` (or the current context): finds its cluster and user, reads
    /// referenced files (relative to `base_dir`, normally the kubeconfig's directory) and
    /// decodes the base64 data fields.
    pub fn resolve(
        &self,
        context: Option<&str>,
        base_dir: Option<&Path>,
    ) -> Result<ResolvedKubeconfig> {
        let ctx_name = match context.or(self.current_context.as_deref()) {
            Some(c) if !c.is_empty() => c,
            _ => {
                return Err(Error::Kubeconfig(
                    "no context given and no current-context set".into(),
                ));
            }
        };
        let ctx = self
            .contexts
            .iter()
            .find(|c| c.name == ctx_name)
            .ok_or_else(|| Error::Kubeconfig(format!("context {ctx_name:?} not found")))?;
        let cluster = self
            .clusters
            .iter()
            .find(|c| c.name == ctx.context.cluster)
            .ok_or_else(|| {
                Error::Kubeconfig(format!(
                    "cluster {:?} of context {ctx_name:?} not found",
                    ctx.context.cluster
                ))
            })?;
        let user = if ctx.context.user.is_empty() {
            User::default()
        } else {
            self.users
                .iter()
                .find(|u| u.name == ctx.context.user)
                .map(|u| u.user.clone())
                .ok_or_else(|| {
                    Error::Kubeconfig(format!(
                        "user {:?} of context {ctx_name:?} not found",
                        ctx.context.user
                    ))
                })?
        };
        let c = &cluster.cluster;
        if c.server.is_empty() {
            return Err(Error::Kubeconfig(format!(
                "cluster {:?} has no server",
                cluster.name
            )));
        }
        let read = |field: &str,
                    data: &Option<String>,
                    file: &Option<String>|
         -> Result<Option<Vec<u8>>> {
            if let Some(d) = data {
                return STANDARD
                    .decode(d.trim())
                    .map(Some)
                    .map_err(|e| Error::Kubeconfig(format!("{field}-data: {e}")));
            }
            if let Some(f) = file {
                let p = resolve_path(base_dir, f);
                return std::fs::read(&p).map(Some).map_err(|e| Error::io(p, e));
            }
            Ok(None)
        };
        let ca_pem = read(
            "certificate-authority",
            &c.certificate_authority_data,
            &c.certificate_authority,
        )?;
        let client_cert_pem = read(
            "client-certificate",
            &user.client_certificate_data,
            &user.client_certificate,
        )?;
        let client_key_pem = read("client-key", &user.client_key_data, &user.client_key)?;
        if client_cert_pem.is_some() != client_key_pem.is_some() {
            return Err(Error::Kubeconfig(format!(
                "user {:?} has a client certificate without a key or a key without a certificate",
                ctx.context.user
            )));
        }
        let token = match (&user.token, &user.token_file) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(f)) => {
                let p = resolve_path(base_dir, f);
                let t = std::fs::read_to_string(&p).map_err(|e| Error::io(p, e))?;
                Some(t.trim().to_string())
            }
            (None, None) => None,
        };
        Ok(ResolvedKubeconfig {
            context: ctx_name.to_string(),
            server: c.server.clone(),
            ca_pem,
            client_cert_pem,
            client_key_pem,
            token,
            namespace: ctx
                .context
                .namespace
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "default".into()),
            insecure_skip_tls_verify: c.insecure_skip_tls_verify.unwrap_or(false),
            tls_server_name: c.tls_server_name.clone(),
        })
    }
}

/// Loads a kubeconfig file and resolves `context` (or its current context), relative paths
/// taken from the file's directory.
pub fn load_resolved(path: &Path, context: Option<&str>) -> Result<ResolvedKubeconfig> {
    let kc = Kubeconfig::load(path)?;
    let dir = path.parent().map(Path::to_path_buf);
    kc.resolve(context, dir.as_deref())
}

/// Writes the admin kubeconfig: the cluster CA, the admin client certificate from `pki`,
/// `server_url`, context `<user>@<cluster_name>`. `user` names the kubeconfig entry (e.g.
/// `kubernetes-admin`); the identity is the certificate's (CN=kubernetes-admin,
/// O=system:masters).
pub fn write_admin_kubeconfig(
    path: &Path,
    server_url: &str,
    pki: &ClusterPki,
    cluster_name: &str,
    user: &str,
) -> Result<()> {
    let kc = Kubeconfig::new_single(
        server_url,
        pki.ca_cert_pem(),
        cluster_name,
        user,
        &Credentials::ClientCert(pki.admin().clone()),
    );
    kc.write(path)?;
    tracing::info!(path = %path.display(), server = server_url, "wrote admin kubeconfig");
    Ok(())
}

/// Writes a kubeconfig with the given credentials (a node or component certificate, or a
/// bootstrap/ServiceAccount token).
pub fn write_kubeconfig(
    path: &Path,
    server_url: &str,
    ca_pem: &str,
    cluster_name: &str,
    user: &str,
    credentials: &Credentials,
) -> Result<()> {
    Kubeconfig::new_single(server_url, ca_pem, cluster_name, user, credentials).write(path)
}

fn resolve_path(base_dir: Option<&Path>, file: &str) -> PathBuf {
    let p = Path::new(file);
    match base_dir {
        Some(b) if p.is_relative() => b.join(p),
        _ => p.to_path_buf(),
    }
}

fn null_as_default<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}
