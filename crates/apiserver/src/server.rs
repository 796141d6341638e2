//! The HTTPS listener: TLS (rustls) with optional client certificates, HTTP/1.1 and HTTP/2,
//! per-request authentication, metrics.

use std::sync::Arc;
use std::time::Instant;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kumo_apimachinery::ApiError;
use rustls::pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{Instrument, debug, info_span};

use crate::api::{Api, User};
use crate::authz::CacheLookup;
use crate::body;
use crate::request::{self, Query, RequestInfo};

/// Who is calling: the client certificate wins, then a bearer token; nobody is anonymous.
fn authenticate(
    api: &Api,
    cert_user: &Option<User>,
    req: &http::Request<Incoming>,
) -> Option<User> {
    if let Some(u) = cert_user {
        return Some(u.clone());
    }
    let header = req
        .headers()
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let token = kumo_auth::authn::bearer_token(header)?;
    api.tokens
        .authenticate(token, &CacheLookup(api.cache.clone()))
}

fn labels(req: &http::Request<Incoming>) -> crate::metrics::RequestLabels {
    let q = Query::parse(req.uri().query()).unwrap_or_default();
    match request::parse(req.method(), req.uri().path(), &q) {
        RequestInfo::Resource { verb, req: r } => crate::metrics::RequestLabels {
            verb: match verb.as_str() {
                "get" => "GET",
                "list" => "LIST",
                "watch" => "WATCH",
                "create" => "POST",
                "update" => "PUT",
                "patch" => "PATCH",
                "delete" => "DELETE",
                "deletecollection" => "DELETE",
                _ => "OTHER",
            }
            .into(),
            scope: if r.name.is_some() {
                "resource".into()
            } else if r.namespace.is_some() {
                "namespace".into()
            } else {
                "cluster".into()
            },
            group: r.group,
            version: r.version,
            resource: r.resource,
            subresource: r.subresource.unwrap_or_default(),
        },
        RequestInfo::NonResource { verb, .. } => crate::metrics::RequestLabels {
            verb: verb.to_ascii_uppercase(),
            ..Default::default()
        },
    }
}

/// Serves HTTPS on `listener` until the process ends.
pub async fn serve(api: Arc<Api>, listener: TcpListener, tls: Arc<rustls::ServerConfig>) {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                debug!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let api = api.clone();
        tokio::spawn(
            async move {
                let tls = match acceptor.accept(stream).await {
                    Ok(t) => t,
                    Err(e) => {
                        debug!(error = %e, "TLS handshake failed");
                        return;
                    }
                };
                let cert_user: Option<User> = {
                    let (_, conn) = tls.get_ref();
                    conn.peer_certificates().and_then(|chain| {
                        let chain: Vec<CertificateDer<'_>> = chain.to_vec();
                        kumo_auth::authenticate_cert(&chain)
                    })
                };
                let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                    let api = api.clone();
                    let cert_user = cert_user.clone();
                    async move {
                        let start = Instant::now();
                        let l = labels(&req);
                        let resp = match authenticate(&api, &cert_user, &req) {
                            Some(user) => crate::http::handle(api, user, req).await,
                            None => body::error(&ApiError::unauthorized()),
                        };
                        crate::metrics::observe(
                            &l,
                            resp.status().as_u16(),
                            start.elapsed().as_secs_f64(),
                        );
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let mut builder =
                    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                builder.http2().max_concurrent_streams(1000);
                if let Err(e) = builder
                    .serve_connection_with_upgrades(TokioIo::new(tls), service)
                    .await
                {
                    debug!(error = %e, "connection ended with an error");
                }
            }
            .instrument(info_span!("conn", %peer)),
        );
    }
}
