//! The kubelet API server: the HTTPS endpoint (port 10250 upstream) the apiserver proxies
//! `kubectl logs`, `kubectl exec` and node metrics to, plus the plain-HTTP `/healthz` port.
//!
//! - TLS with the node's serving certificate ([`load_or_create_serving_cert`] makes a
//!   self-signed one like upstream's `kubelet.crt`); client certificates are verified
//!   against the cluster CA, bearer tokens with a TokenReview, and every request is
//!   authorized with a SubjectAccessReview on `nodes/{proxy,log,metrics,stats}` (see
//!   [`auth`]), both cached briefly like upstream's webhook authenticator/authorizer.
//! - `/containerLogs/{ns}/{pod}/{container}` ([`logs`]), `/exec/…` over WebSocket
//!   (`v5.channel.k8s.io` … `channel.k8s.io`) or SPDY/3.1 ([`exec`]), `/pods`, `/metrics`,
//!   `/metrics/resource` ([`resource`], for metrics-server), `/portForward/…` over SPDY or
//!   WebSocket-tunneled SPDY ([`portforward`]), `/healthz`.

mod auth;
mod cert;
mod exec;
mod logs;
mod portforward;
mod resource;
mod spdy;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use kumo_auth::{CertAndKey, UserInfo};
use kumo_runtime::Runtime;
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use crate::directory::PodDirectory;

pub(crate) use cert::usable as serving_cert_usable;
pub(crate) use cert::write_private as write_private_file;
pub use cert::{SERVING_CERT_FILE, SERVING_KEY_FILE, load_or_create_serving_cert};

/// Response body of every handler: whole answers and streamed logs alike.
pub(crate) type Body = BoxBody<Bytes, std::io::Error>;

/// What the kubelet API server serves from. Cheap to clone.
#[derive(Clone)]
pub struct ServerState {
    /// This node's name: the `name` of every SubjectAccessReview (`nodes/proxy` of *this* node).
    pub node_name: String,
    /// Finds containers and their log files.
    pub pods: Arc<dyn PodDirectory>,
    /// Runs `/exec`.
    pub runtime: Arc<dyn Runtime>,
    /// Served at `/metrics` (the kubelet's own registry).
    pub metrics: prometheus::Registry,
    /// Client (with the node's credentials) for TokenReview and SubjectAccessReview. `None`
    /// turns authentication and authorization off (`--authorization-mode=AlwaysAllow`,
    /// anonymous allowed): for tests and standalone kubelets only.
    pub api: Option<kube::Client>,
}

impl std::fmt::Debug for ServerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerState")
            .field("node_name", &self.node_name)
            .field("auth", &self.api.is_some())
            .finish_non_exhaustive()
    }
}

/// TLS material of the API server.
#[derive(Debug, Clone)]
pub struct TlsOptions {
    /// Serving certificate (chain) and key.
    pub serving: CertAndKey,
    /// CA bundle client certificates must chain to (the cluster CA, `--client-ca-file`).
    /// `None`: client certificates are not requested; only bearer tokens authenticate.
    pub client_ca_pem: Option<String>,
}

struct Shared {
    state: ServerState,
    auth: auth::AuthCache,
}

/// The serving certificate, replaceable while serving: a kubelet starts with its
/// self-signed certificate and switches to one issued through a `kubelet-serving` CSR (or a
/// renewed one) without dropping connections. Cheap to clone; clones share the certificate.
#[derive(Clone, Debug)]
pub struct ServingCert {
    current: Arc<std::sync::RwLock<Arc<rustls::sign::CertifiedKey>>>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certified(ck: &CertAndKey) -> anyhow::Result<Arc<rustls::sign::CertifiedKey>> {
    Ok(Arc::new(rustls::sign::CertifiedKey::from_der(
        ck.cert_chain_der()?,
        ck.key_der()?,
        &provider(),
    )?))
}

impl ServingCert {
    pub fn new(ck: &CertAndKey) -> anyhow::Result<Self> {
        Ok(ServingCert {
            current: Arc::new(std::sync::RwLock::new(certified(ck)?)),
        })
    }

    /// Serves `ck` to every handshake from now on.
    pub fn set(&self, ck: &CertAndKey) -> anyhow::Result<()> {
        let new = certified(ck)?;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = new;
        Ok(())
    }
}

impl rustls::server::ResolvesServerCert for ServingCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        )
    }
}

/// Builds the rustls configuration: HTTP/1.1 only (exec and attach need the HTTP/1.1
/// upgrade), client certificates optional but verified against the client CA when sent.
fn tls_config(
    cert: ServingCert,
    client_ca_pem: Option<&str>,
) -> anyhow::Result<rustls::ServerConfig> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?;
    let builder = match client_ca_pem {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in kumo_auth::pki::parse_certs_pem(ca.as_bytes())? {
                roots.add(c)?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .allow_unauthenticated()
            .build()?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(cert));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Serves the kubelet API over TLS on `listener` until the task is dropped. Each
/// connection runs on its own task.
pub async fn serve(
    state: ServerState,
    listener: TcpListener,
    tls: TlsOptions,
) -> anyhow::Result<()> {
    let cert = ServingCert::new(&tls.serving)?;
    serve_with_cert(state, listener, cert, tls.client_ca_pem).await
}

/// [`serve`] with a [`ServingCert`] the caller can replace while serving.
pub async fn serve_with_cert(
    state: ServerState,
    listener: TcpListener,
    cert: ServingCert,
    client_ca_pem: Option<String>,
) -> anyhow::Result<()> {
    let acceptor =
        tokio_rustls::TlsAcceptor::from(Arc::new(tls_config(cert, client_ca_pem.as_deref())?));
    let shared = Arc::new(Shared {
        state,
        auth: auth::AuthCache::default(),
    });
    info!(addr = ?listener.local_addr().ok(), node = %shared.state.node_name, "kubelet API server listening");
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(error = %e, "kubelet API server: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            // A peer that never finishes its handshake must not hold a task forever.
            let stream = match tokio::time::timeout(
                std::time::Duration::from_secs(10),
                acceptor.accept(tcp),
            )
            .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    debug!(%peer, error = %e, "kubelet API server: TLS handshake failed");
                    return;
                }
                Err(_) => {
                    debug!(%peer, "kubelet API server: TLS handshake timed out");
                    return;
                }
            };
            let cert_user = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(kumo_auth::authenticate_cert);
            let service = service_fn(move |req| {
                let shared = Arc::clone(&shared);
                let cert_user = cert_user.clone();
                async move { Ok::<_, Infallible>(handle(shared, cert_user, peer, req).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await
            {
                debug!(%peer, error = %e, "kubelet API connection ended with an error");
            }
        });
    }
}

/// Serves `GET /healthz` → `ok` on plain HTTP (`--healthz-port`, 10248 upstream; bind it
/// to localhost), unauthenticated like upstream's.
pub async fn serve_healthz(listener: TcpListener) -> anyhow::Result<()> {
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "healthz server: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            let service = service_fn(|req: Request<Incoming>| async move {
                Ok::<_, Infallible>(match req.uri().path() {
                    "/healthz" => text(StatusCode::OK, "ok"),
                    _ => text(StatusCode::NOT_FOUND, "404 page not found\n"),
                })
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

async fn handle(
    shared: Arc<Shared>,
    cert_user: Option<UserInfo>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    let state = &shared.state;
    // Authentication and authorization (skipped without an API client).
    if let Some(api) = &state.api {
        let user = match cert_user {
            Some(u) => u,
            None => match req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(kumo_auth::authn::bearer_token)
            {
                Some(token) => match shared.auth.authenticate_token(api, token).await {
                    Ok(Some(u)) => u,
                    Ok(None) => return text(StatusCode::UNAUTHORIZED, "Unauthorized"),
                    Err(e) => {
                        warn!(error = %e, "TokenReview failed");
                        return text(StatusCode::UNAUTHORIZED, "Unauthorized");
                    }
                },
                None => return text(StatusCode::UNAUTHORIZED, "Unauthorized"),
            },
        };
        let attrs = auth::attributes(req.method(), &path, &state.node_name);
        match shared.auth.authorize(api, &user, &attrs).await {
            Ok(true) => {}
            Ok(false) => {
                debug!(user = %user.name, %path, "kubelet API request forbidden");
                return text(
                    StatusCode::FORBIDDEN,
                    &format!(
                        "Forbidden (user={}, verb={}, resource={}, subresource={})",
                        user.name, attrs.verb, "nodes", attrs.subresource
                    ),
                );
            }
            Err(e) => {
                warn!(error = %e, "SubjectAccessReview failed");
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!(
                        "Authorization error (user={}, verb={}, resource=nodes, subresource={})",
                        user.name, attrs.verb, attrs.subresource
                    ),
                );
            }
        }
    }
    debug!(%peer, method = %req.method(), %path, "kubelet API request");
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (req.method(), segs.as_slice()) {
        (&Method::GET | &Method::HEAD, ["healthz"]) => text(StatusCode::OK, "ok"),
        (&Method::GET, ["pods"] | ["pods", ""]) => pods(state),
        (&Method::GET, ["metrics"]) => metrics(state),
        (&Method::GET, ["metrics", "resource"]) => resource::resource_metrics(state).await,
        (&Method::GET, ["containerLogs", ns, pod, container]) => {
            logs::container_logs(state, ns, pod, container, req.uri().query()).await
        }
        (_, ["exec", ns, pod, container] | ["exec", ns, pod, _, container]) => {
            let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
            exec::exec(state, &ns, &pod, &container, req).await
        }
        (_, ["attach", ..]) => text(
            StatusCode::BAD_REQUEST,
            "attach is not supported by this kubelet's container runtime",
        ),
        (_, ["portForward", ns, pod] | ["portForward", ns, pod, _]) => {
            let (ns, pod) = (ns.to_string(), pod.to_string());
            portforward::port_forward(state, &ns, &pod, req).await
        }
        (_, ["containerLogs", ..] | ["exec", ..]) => {
            text(StatusCode::BAD_REQUEST, "Missing container name.")
        }
        _ => text(StatusCode::NOT_FOUND, "404 page not found\n"),
    }
}

/// `GET /pods`: a v1 PodList of the pods this kubelet runs.
fn pods(state: &ServerState) -> Response<Body> {
    let list = serde_json::json!({
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": {},
        "items": state.pods.pods(),
    });
    match serde_json::to_vec(&list) {
        Ok(b) => with_type(StatusCode::OK, "application/json", b),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// `GET /metrics`: the Prometheus text exposition of the kubelet's registry.
fn metrics(state: &ServerState) -> Response<Body> {
    use prometheus::Encoder;
    let enc = prometheus::TextEncoder::new();
    let mut buf = Vec::new();
    match enc.encode(&state.metrics.gather(), &mut buf) {
        Ok(()) => with_type(StatusCode::OK, enc.format_type(), buf),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

pub(crate) fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

pub(crate) fn with_type(status: StatusCode, ctype: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(ctype) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

/// A plain-text answer, like upstream's `http.Error`/restful `WriteError`.
pub(crate) fn text(status: StatusCode, msg: &str) -> Response<Body> {
    with_type(status, "text/plain; charset=utf-8", msg.to_string())
}

/// Parses a query string into (key, value) pairs, percent-decoded.
pub(crate) fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .map(|q| {
            form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}
