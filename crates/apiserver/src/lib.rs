//! `kumo apiserver`: the Kubernetes API over the etcd v3 API.
//!
//! Request path: [`server`] (TLS, authentication) → [`http`] (decode, authorize, dispatch) →
//! [`api`] (verbs over the [`cache`] and the [`storage`] client). Per-kind behaviour comes
//! from `kumo-registry` ([`schema`], [`strategy`]), admission from [`admission`].

pub mod admission;
pub mod api;
pub mod attrs;
pub mod authz;
pub mod body;
pub mod bootstrap;
pub mod cache;
pub mod connect;
pub mod convert;
pub mod csr;
pub mod discovery;
pub mod fields;
pub mod fuzzing;
pub mod http;
pub mod impersonation;
pub mod kubelet_client;
pub mod metrics;
pub mod objects;
pub mod openapi_http;
pub mod output;
pub mod protobuf;
pub mod proxy;
pub mod request;
pub mod reviews;
pub mod schema;
pub mod server;
pub mod sparse;
pub mod storage;
pub mod strategy;
pub mod subresources;
pub mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use serde_json::{Value, json};
use tracing::{info, warn};

/// The Kubernetes version kumo's API corresponds to.
pub const KUBE_VERSION: (&str, &str) = ("1", "33");

/// `GET /version`.
pub fn version_info() -> Value {
    json!({
        "major": KUBE_VERSION.0,
        "minor": KUBE_VERSION.1,
        "gitVersion": format!("v{}.{}.0-kumo.{}", KUBE_VERSION.0, KUBE_VERSION.1, env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, if std::env::consts::ARCH == "x86_64" { "amd64" } else { std::env::consts::ARCH }),
    })
}

/// Flags of `kumo apiserver` (upstream names).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct ApiServerConfig {
    /// `--etcd-servers`.
    pub etcd_servers: Vec<String>,
    /// `--bind-address`.
    pub bind_address: String,
    /// `--secure-port` (0 = pick a free port).
    pub secure_port: u16,
    /// `--cert-dir`: CA, serving and admin certificates, ServiceAccount key.
    pub cert_dir: PathBuf,
    /// `--admin-kubeconfig` (default `<cert-dir>/admin.kubeconfig`).
    pub admin_kubeconfig: Option<PathBuf>,
    /// `--advertise-address` (default: the bind address, or 127.0.0.1 for 0.0.0.0).
    pub advertise_address: Option<String>,
    /// `--tls-san`: extra names/addresses in the serving certificate.
    pub tls_sans: Vec<String>,
    /// `--token-auth-file`.
    pub token_auth_file: Option<PathBuf>,
    /// `--enable-bootstrap-token-auth`.
    pub enable_bootstrap_token_auth: bool,
    /// `--authorization-mode`: `RBAC` (default) or `AlwaysAllow` (tests only).
    pub authorization_mode: String,
    /// `--service-cluster-ip-range`.
    pub service_cluster_ip_range: String,
    /// `--kubelet-certificate-authority`: verify kubelets' serving certificates against this
    /// CA bundle (PEM). Unset, like upstream, they are not verified (kubelets serve with a
    /// self-signed certificate by default); the apiserver still presents its client
    /// certificate.
    pub kubelet_certificate_authority: Option<PathBuf>,
    /// `--log-level` (`error`, `warn`, `info`, `debug`, `trace`).
    pub log_level: String,
    /// `--log-format` (`text` or `json`).
    pub log_format: String,
}

impl Default for ApiServerConfig {
    fn default() -> Self {
        ApiServerConfig {
            etcd_servers: vec!["http://127.0.0.1:2379".into()],
            bind_address: "127.0.0.1".into(),
            secure_port: 6443,
            cert_dir: PathBuf::from("/var/run/kumo/apiserver"),
            admin_kubeconfig: None,
            advertise_address: None,
            tls_sans: Vec::new(),
            token_auth_file: None,
            enable_bootstrap_token_auth: true,
            authorization_mode: "RBAC".into(),
            service_cluster_ip_range: "10.96.0.0/12".into(),
            kubelet_certificate_authority: None,
            log_level: "info".into(),
            log_format: "text".into(),
        }
    }
}

/// Errors starting the apiserver.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Auth(#[from] kumo_auth::Error),
    #[error("etcd: {0}")]
    Store(#[from] storage::StoreError),
    #[error("listen on {addr}: {err}")]
    Listen { addr: String, err: std::io::Error },
    #[error("{0}")]
    Other(String),
}

/// The first usable address of a CIDR (`10.96.0.0/12` → `10.96.0.1`).
pub fn first_service_ip(cidr: &str) -> String {
    let base = cidr.split('/').next().unwrap_or("10.96.0.0");
    let mut octets: Vec<u8> = base.split('.').filter_map(|o| o.parse().ok()).collect();
    if octets.len() == 4 {
        octets[3] = octets[3].saturating_add(1);
        octets
            .iter()
            .map(u8::to_string)
            .collect::<Vec<_>>()
            .join(".")
    } else {
        "10.96.0.1".into()
    }
}

/// Starts the apiserver and serves until the process ends.
pub async fn run(cfg: ApiServerConfig) -> Result<(), StartError> {
    let advertise = cfg.advertise_address.clone().unwrap_or_else(|| {
        if cfg.bind_address == "0.0.0.0" || cfg.bind_address == "::" {
            "127.0.0.1".into()
        } else {
            cfg.bind_address.clone()
        }
    });
    let service_ip = first_service_ip(&cfg.service_cluster_ip_range);
    let mut sans = cfg.tls_sans.clone();
    sans.push(advertise.clone());
    sans.push(service_ip.clone());
    let pki = kumo_auth::ClusterPki::load_or_create(&cfg.cert_dir, &sans)?;
    let tls = Arc::new(kumo_auth::server_config(&pki)?);
    let addr = format!("{}:{}", cfg.bind_address, cfg.secure_port);
    let listener =
        tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|err| StartError::Listen {
                addr: addr.clone(),
                err,
            })?;
    let local: SocketAddr = listener.local_addr().map_err(|err| StartError::Listen {
        addr: addr.clone(),
        err,
    })?;
    let server_url = format!("https://{advertise}:{}", local.port());

    let kubelet_client = pki.sign_client_cert(
        "kube-apiserver-kubelet-client",
        &["kubeadm:cluster-admins".to_string()],
        Duration::from_secs(365 * 24 * 3600),
    )?;
    let kubelet_tls = match &cfg.kubelet_certificate_authority {
        Some(ca) => {
            let pem = std::fs::read(ca).map_err(|e| {
                StartError::Other(format!(
                    "--kubelet-certificate-authority {}: {e}",
                    ca.display()
                ))
            })?;
            kumo_auth::tls::client_config(&pem, Some(&kubelet_client))?
        }
        None => kumo_auth::tls::client_config_unverified_server(Some(&kubelet_client))?,
    };

    let store = storage::Store::connect(&cfg.etcd_servers)?;
    let cache = cache::Cache::new();
    let sa_tokens = kumo_auth::ServiceAccountTokens::from_pki(&pki)?;
    let sa_verify = kumo_auth::ServiceAccountTokens::from_pki(&pki)?;
    let tokens = kumo_auth::TokenAuthenticator {
        static_tokens: match &cfg.token_auth_file {
            Some(p) => Some(kumo_auth::StaticTokens::load(p)?),
            None => None,
        },
        service_accounts: Some(sa_verify),
        bootstrap_tokens: cfg.enable_bootstrap_token_auth,
    };
    let authorizer = match cfg.authorization_mode.as_str() {
        "AlwaysAllow" => {
            warn!("authorization is off (--authorization-mode=AlwaysAllow): use only for tests");
            None
        }
        _ => Some(kumo_auth::Authorizer::new(authz::CacheRbac::new(
            cache.clone(),
        ))),
    };
    let defs = kumo_registry::builtin();
    let openapi = kumo_registry::openapi::OpenApi::new(&defs);
    let api = Arc::new(api::Api {
        store: store.clone(),
        cache: cache.clone(),
        resources: RwLock::new(Arc::new(api::Resources::new(defs))),
        server_address: format!("{advertise}:{}", local.port()),
        authorizer,
        tokens,
        sa_tokens: Some(sa_tokens),
        ca_pem: pki.ca_cert_pem().to_string(),
        kubelet_tls: Some(Arc::new(kubelet_tls)),
        openapi: RwLock::new(Arc::new(openapi)),
    });
    tokio::spawn(cache.clone().run(store.clone()));
    // Wait for the first sync (the store may still be starting).
    let mut waited = 0;
    while cache.revision() == 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
        if waited % 100 == 0 {
            warn!(etcd = ?cfg.etcd_servers, "waiting for the store");
        }
    }
    let mut backoff = Duration::from_millis(200);
    loop {
        match bootstrap::run(&api, &service_ip, &advertise, local.port()).await {
            Ok(()) => break,
            Err(e) => {
                warn!(error = %e, "bootstrap failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    let kubeconfig = cfg
        .admin_kubeconfig
        .clone()
        .unwrap_or_else(|| cfg.cert_dir.join("admin.kubeconfig"));
    kumo_auth::write_admin_kubeconfig(&kubeconfig, &server_url, &pki, "kumo", "kubernetes-admin")?;
    tokio::spawn(crds::run(api.clone()));
    tokio::spawn(compactor(store));
    info!(url = %server_url, kubeconfig = %kubeconfig.display(), "apiserver serving");
    server::serve(api, listener, tls).await;
    Ok(())
}

pub mod crds;

/// Compacts the store's history every 5 minutes up to the revision seen 5 minutes earlier
/// (upstream's `--etcd-compaction-interval`).
async fn compactor(store: storage::Store) {
    let mut previous: Option<i64> = None;
    loop {
        tokio::time::sleep(Duration::from_secs(300)).await;
        let Ok(rev) = store.current_revision().await else {
            continue;
        };
        if let Some(p) = previous
            && p > 0
            && let Err(e) = store.compact(p).await
        {
            warn!(error = %e, revision = p, "compaction failed");
        }
        previous = Some(rev);
    }
}
