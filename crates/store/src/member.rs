//! Start-up and serving of one store member.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

use crate::config::{StoreConfig, parse_listen_url, urls};
use crate::error::StoreError;
use crate::metrics::{Metrics, ScrapeState};
use crate::raft::log::LogStore;
use crate::raft::network::Network;
use crate::raft::sm::StateMachine;
use crate::raft::{MemberNode, Raft, Request};
use crate::server::{Api, client_incoming, routes};
use crate::state::{Limits, StoreState};
use crate::watch::HeaderInfo;

/// Cluster and member ids, fixed when the member is first started.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Identity {
    name: String,
    member_id: u64,
    cluster_id: u64,
}

fn member_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("member")
}

fn db_path(data_dir: &Path) -> PathBuf {
    member_dir(data_dir).join("kumo.db")
}

fn hash_u64(parts: &[&str]) -> u64 {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    let d = h.finalize();
    u64::from_be_bytes(d[..8].try_into().unwrap_or([1; 8])).max(1)
}

fn load_identity(cfg: &StoreConfig) -> std::io::Result<Identity> {
    let path = member_dir(&cfg.data_dir).join("identity.json");
    if let Ok(b) = std::fs::read(&path) {
        return serde_json::from_slice(&b).map_err(std::io::Error::other);
    }
    let peers = urls(&cfg.initial_advertise_peer_urls).join(",");
    let member_id = hash_u64(&[&peers, &cfg.initial_cluster_token, &cfg.name]);
    let cluster_id = hash_u64(&[&member_id.to_string(), &cfg.initial_cluster_token]);
    let id = Identity {
        name: cfg.name.clone(),
        member_id,
        cluster_id,
    };
    let tmp = path.with_extension("tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(&id).map_err(std::io::Error::other)?,
    )?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(id)
}

/// Restores a snapshot file (from `etcdctl snapshot save` against kumo store) into a new
/// data directory, ready for `kumo store --data-dir DIR`.
pub fn restore_snapshot(file: &Path, data_dir: &Path) -> Result<(), StoreError> {
    if member_dir(data_dir).exists() {
        return Err(StoreError::Internal(format!(
            "{} already holds a member; restore into a new data dir",
            data_dir.display()
        )));
    }
    std::fs::create_dir_all(member_dir(data_dir)).map_err(StoreError::internal)?;
    let f = std::fs::File::open(file).map_err(|e| {
        StoreError::Internal(format!("cannot open snapshot {}: {e}", file.display()))
    })?;
    crate::mvcc::snapshot::restore(std::io::BufReader::new(f), &db_path(data_dir))
}

/// Runs a member until `shutdown` resolves.
pub async fn run(
    cfg: StoreConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), StoreError> {
    std::fs::create_dir_all(member_dir(&cfg.data_dir)).map_err(StoreError::internal)?;
    let id = load_identity(&cfg).map_err(StoreError::internal)?;
    tracing::info!(name = %cfg.name, member_id = format!("{:x}", id.member_id), cluster_id = format!("{:x}", id.cluster_id), data_dir = %cfg.data_dir.display(), "starting kumo store");
    let metrics = Metrics::new();
    let info = Arc::new(HeaderInfo {
        cluster_id: id.cluster_id,
        member_id: id.member_id,
        term: Default::default(),
    });
    let limits = Limits {
        quota_backend_bytes: cfg.quota_backend_bytes,
        max_request_bytes: cfg.max_request_bytes,
        max_txn_ops: cfg.max_txn_ops,
        progress_interval: cfg.progress_interval(),
    };
    let db = db_path(&cfg.data_dir);
    let state = {
        let (info, limits, metrics, min_ttl) =
            (info.clone(), limits, metrics.clone(), cfg.min_lease_ttl());
        tokio::task::spawn_blocking(move || StoreState::open(&db, info, limits, min_ttl, metrics))
            .await
            .map_err(StoreError::internal)??
    };
    let state = Arc::new(state);
    tracing::info!(
        revision = state.mvcc.current_rev(),
        keys = state.mvcc.key_count(),
        leases = state.lessor.len(),
        "database opened"
    );

    let log = LogStore::open(
        &member_dir(&cfg.data_dir).join("wal"),
        Some(metrics.clone()),
    )
    .map_err(StoreError::internal)?;
    let raft_cfg = openraft::Config {
        cluster_name: "kumo-store".into(),
        heartbeat_interval: cfg.heartbeat_interval,
        election_timeout_min: cfg.election_timeout,
        election_timeout_max: cfg.election_timeout * 2,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cfg.snapshot_count.max(100)),
        max_in_snapshot_log_to_keep: 1000,
        ..Default::default()
    }
    .validate()
    .map_err(StoreError::internal)?;
    let raft = Raft::new(
        id.member_id,
        Arc::new(raft_cfg),
        Network,
        log,
        StateMachine::new(state.clone()),
    )
    .await
    .map_err(StoreError::internal)?;
    let node = MemberNode {
        name: cfg.name.clone(),
        peer_urls: urls(&cfg.initial_advertise_peer_urls),
        client_urls: urls(&cfg.advertise_client_urls),
    };
    if !raft.is_initialized().await.map_err(StoreError::internal)? {
        let mut members = BTreeMap::new();
        members.insert(id.member_id, node.clone());
        raft.initialize(members)
            .await
            .map_err(StoreError::internal)?;
        tracing::info!("bootstrapped a new single-member cluster");
    }
    // A lone voter elects itself at once; a restarted one resumes as leader.
    let _ = raft.trigger().elect().await;
    raft.wait(Some(Duration::from_secs(30)))
        .current_leader(id.member_id, "become leader")
        .await
        .map_err(|e| StoreError::Internal(format!("member did not become leader: {e}")))?;
    state.lessor.promote();
    tracing::info!(
        term = raft.metrics().borrow().current_term,
        "member is the leader"
    );

    let api = Api::new(state.clone(), raft.clone(), id.member_id, node);
    spawn_term_watch(&raft, info.clone());
    spawn_lease_expiry(api.clone());

    let http = health_router(api.clone());
    let mut servers = Vec::new();
    for u in urls(&cfg.listen_client_urls) {
        let addr = parse_listen_url(&u).map_err(StoreError::Internal)?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| StoreError::Internal(format!("listen on {u}: {e}")))?;
        let incoming = client_incoming(listener);
        let r = routes(api.clone(), http.clone());
        tracing::info!(url = %u, "serving client requests");
        servers.push(tokio::spawn(async move {
            let res = tonic::transport::Server::builder()
                .accept_http1(true)
                .tcp_nodelay(true)
                .http2_keepalive_interval(Some(Duration::from_secs(30)))
                .layer(tower::util::MapResponseLayer::new(
                    crate::server::etcd_status_compat,
                ))
                .add_routes(r)
                .serve_with_incoming(incoming)
                .await;
            if let Err(e) = res {
                tracing::error!(error = %e, "client server stopped");
            }
        }));
    }
    for u in urls(&cfg.listen_metrics_urls) {
        let addr = parse_listen_url(&u).map_err(StoreError::Internal)?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| StoreError::Internal(format!("listen on {u}: {e}")))?;
        let router = http.clone();
        tracing::info!(url = %u, "serving metrics");
        servers.push(tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(error = %e, "metrics server stopped");
            }
        }));
    }
    tracing::info!("ready to serve client requests");
    shutdown.await;
    tracing::info!("shutting down");
    for s in servers {
        s.abort();
    }
    let _ = raft.shutdown().await;
    let st = state.clone();
    let _ = tokio::task::spawn_blocking(move || st.mvcc.durable_checkpoint()).await;
    Ok(())
}

fn spawn_term_watch(raft: &Raft, info: Arc<HeaderInfo>) {
    let mut rx = raft.metrics();
    tokio::spawn(async move {
        loop {
            let term = rx.borrow_and_update().current_term;
            info.term.store(term, std::sync::atomic::Ordering::Relaxed);
            if rx.changed().await.is_err() {
                return;
            }
        }
    });
}

/// The leader revokes expired leases through Raft, deleting their keys in one revision.
fn spawn_lease_expiry(api: Api) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            for id in api.state.lessor.take_expired() {
                let req = Request::LeaseRevoke(kumo_etcd_proto::pb::LeaseRevokeRequest { id });
                match api.propose(req).await {
                    Ok(_) | Err(StoreError::LeaseNotFound) => {
                        tracing::debug!(lease = format!("{id:x}"), "expired lease revoked");
                    }
                    Err(e) => {
                        tracing::warn!(lease = format!("{id:x}"), error = %e, "revoking an expired lease failed")
                    }
                }
            }
        }
    });
}

fn health_router(api: Api) -> axum::Router {
    let metrics_api = api.clone();
    axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let api = metrics_api.clone();
                async move {
                    let m = api.raft.metrics().borrow().clone();
                    let st = &api.state;
                    let (size, in_use) = tokio::task::block_in_place(|| {
                        (st.mvcc.db_size(), st.mvcc.db_size_in_use())
                    });
                    st.metrics.set_state(&ScrapeState {
                        has_leader: m.current_leader.is_some(),
                        is_leader: m.current_leader == Some(api.member_id),
                        committed: m.last_log_index.unwrap_or(0),
                        applied: m.last_applied.map(|l| l.index).unwrap_or(0),
                        db_size: size,
                        db_size_in_use: in_use,
                        quota: st.limits.quota_backend_bytes,
                        keys: st.mvcc.key_count(),
                        watchers: st.hub.watcher_count(),
                        watch_streams: st.hub.stream_count(),
                        leases: st.lessor.len(),
                    });
                    (
                        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
                        st.metrics.render(),
                    )
                }
            }),
        )
        .route(
            "/health",
            get(move || {
                let api = api.clone();
                async move {
                    let leader = api.raft.metrics().borrow().current_leader.is_some();
                    let alarms: Vec<String> = api
                        .state
                        .alarms
                        .lock()
                        .iter()
                        .map(|(_, a)| {
                            kumo_etcd_proto::pb::AlarmType::try_from(*a)
                                .map(|t| t.as_str_name().to_string())
                                .unwrap_or_default()
                        })
                        .collect();
                    let (ok, reason) = if !leader {
                        (false, "RAFT NO LEADER".to_string())
                    } else if let Some(a) = alarms.first() {
                        (false, format!("ALARM {a}"))
                    } else {
                        (true, String::new())
                    };
                    let code = if ok {
                        axum::http::StatusCode::OK
                    } else {
                        axum::http::StatusCode::SERVICE_UNAVAILABLE
                    };
                    (
                        code,
                        [("content-type", "application/json")],
                        serde_json::json!({"health": ok.to_string(), "reason": reason}).to_string(),
                    )
                }
            }),
        )
}
