//! The HTTP endpoint of a component: `/metrics` (Prometheus text), `/healthz`, `/livez` and
//! `/readyz` (`ok`, or 500 with the failing checks, like upstream's healthz handler).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use parking_lot::RwLock;
use prometheus::{Encoder as _, Registry, TextEncoder};
use tracing::{info, warn};

use crate::Error;

type Check = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Named health checks shared between a component and its `/healthz`.
#[derive(Clone, Default)]
pub struct HealthChecks {
    checks: Arc<RwLock<Vec<(String, Check)>>>,
}

impl std::fmt::Debug for HealthChecks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.checks.read().iter().map(|(n, _)| n.clone()).collect();
        f.debug_struct("HealthChecks")
            .field("checks", &names)
            .finish()
    }
}

impl HealthChecks {
    /// Adds a check named `name`; an `Err` makes `/healthz` answer 500.
    pub fn add(&self, name: &str, check: impl Fn() -> Result<(), String> + Send + Sync + 'static) {
        self.checks
            .write()
            .push((name.to_string(), Arc::new(check)));
    }

    /// Runs every check: the text body and whether all passed.
    fn report(&self, verbose: bool) -> (bool, String) {
        let mut ok = true;
        let mut lines = String::new();
        for (name, check) in self.checks.read().iter() {
            match check() {
                Ok(()) => lines.push_str(&format!("[+]{name} ok\n")),
                Err(reason) => {
                    ok = false;
                    lines.push_str(&format!("[-]{name} failed: {reason}\n"));
                }
            }
        }
        if ok && !verbose {
            (true, "ok".into())
        } else if ok {
            (true, format!("[+]ping ok\n{lines}healthz check passed\n"))
        } else {
            (false, format!("[+]ping ok\n{lines}healthz check failed\n"))
        }
    }
}

#[derive(Clone)]
struct AppState {
    registry: Registry,
    health: HealthChecks,
}

/// A bound metrics server.
#[derive(Debug)]
pub struct MetricsServer {
    /// The address actually bound (port 0 picks a free port).
    pub local_addr: SocketAddr,
    /// The serving task.
    pub task: tokio::task::JoinHandle<()>,
}

/// Binds `addr` and serves `/metrics` from `registry` and `/healthz` (`/livez`, `/readyz`)
/// from `health` on a background task. The default registry (process metrics) is served too,
/// so pass a registry of your own.
pub async fn serve_metrics(
    addr: SocketAddr,
    registry: Registry,
    health: HealthChecks,
) -> Result<MetricsServer, Error> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen {
            addr: addr.to_string(),
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| Error::Listen {
        addr: addr.to_string(),
        source,
    })?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/livez", get(healthz))
        .route("/readyz", get(healthz))
        .with_state(AppState { registry, health });
    info!(%local_addr, "serving /metrics and /healthz");
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            warn!(error = %e, "metrics server stopped");
        }
    });
    Ok(MetricsServer { local_addr, task })
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut families = state.registry.gather();
    families.extend(prometheus::gather());
    let mut buf = Vec::new();
    let encoder = TextEncoder::new();
    match encoder.encode(&families, &mut buf) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, encoder.format_type().to_string())],
            buf,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain".to_string())],
            e.to_string().into_bytes(),
        ),
    }
}

async fn healthz(
    State(state): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> impl IntoResponse {
    let (ok, body) = state.health.report(q.contains_key("verbose"));
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    async fn http_get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        out
    }

    #[tokio::test]
    async fn serves_metrics_and_healthz() {
        let reg = Registry::new();
        let m = crate::QueueMetrics::register(&reg).expect("metrics");
        let q = crate::WorkQueue::new("demo", &m);
        q.add(1u32);
        let health = HealthChecks::default();
        let srv = serve_metrics("127.0.0.1:0".parse().expect("addr"), reg, health.clone())
            .await
            .expect("serve");
        let body = http_get(srv.local_addr, "/metrics").await;
        assert!(body.contains("workqueue_depth{name=\"demo\"} 1"), "{body}");
        let body = http_get(srv.local_addr, "/healthz").await;
        assert!(
            body.starts_with("HTTP/1.1 200") && body.ends_with("ok"),
            "{body}"
        );
        health.add("leaderElection", || Err("lost".into()));
        let body = http_get(srv.local_addr, "/healthz").await;
        assert!(body.starts_with("HTTP/1.1 500"), "{body}");
        srv.task.abort();
    }
}
