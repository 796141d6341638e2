//! tonic service implementations.

use std::pin::Pin;

use futures::Stream;
use kumo_etcd_proto::pb::{
    self, auth_server::Auth, auth_server::AuthServer, cluster_server::Cluster,
    cluster_server::ClusterServer, kv_server::Kv, kv_server::KvServer, lease_server::Lease,
    lease_server::LeaseServer, maintenance_server::Maintenance,
    maintenance_server::MaintenanceServer, watch_request::RequestUnion, watch_server::Watch,
    watch_server::WatchServer,
};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status, Streaming};

use super::{Api, ETCD_API_VERSION, check_delete, check_put, check_range, check_txn};
use crate::error::StoreError;
use crate::raft::{Request, Response};

type GrpcResult<T> = Result<GrpcResponse<T>, Status>;
type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Extra bytes gRPC may carry beyond `--max-request-bytes` (etcd's grpcOverheadBytes).
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

impl Api {
    fn done<T>(&self, method: &str, r: Result<T, StoreError>) -> GrpcResult<T> {
        match r {
            Ok(v) => {
                self.state.metrics.request(method, tonic::Code::Ok);
                Ok(GrpcResponse::new(v))
            }
            Err(e) => {
                let s: Status = e.into();
                self.state.metrics.request(method, s.code());
                Err(s)
            }
        }
    }

    fn unexpected(resp: Response) -> StoreError {
        StoreError::Internal(format!("unexpected apply result {resp:?}"))
    }

    async fn do_range(&self, r: pb::RangeRequest) -> Result<pb::RangeResponse, StoreError> {
        check_range(&r)?;
        if !r.serializable {
            self.linearizable().await?;
        }
        let mut resp = self.state.mvcc.range(&r)?;
        self.fill(&mut resp.header);
        Ok(resp)
    }

    async fn do_put(&self, r: pb::PutRequest) -> Result<pb::PutResponse, StoreError> {
        check_put(&r)?;
        self.check_quota((r.key.len() + r.value.len() + 256) as u64)
            .await?;
        match self.propose(Request::Put(r)).await? {
            Response::Put(mut p) => {
                self.fill(&mut p.header);
                Ok(p)
            }
            other => Err(Self::unexpected(other)),
        }
    }

    async fn do_delete(
        &self,
        r: pb::DeleteRangeRequest,
    ) -> Result<pb::DeleteRangeResponse, StoreError> {
        check_delete(&r)?;
        match self.propose(Request::DeleteRange(r)).await? {
            Response::DeleteRange(mut d) => {
                self.fill(&mut d.header);
                Ok(d)
            }
            other => Err(Self::unexpected(other)),
        }
    }

    async fn do_txn(&self, r: pb::TxnRequest) -> Result<pb::TxnResponse, StoreError> {
        check_txn(&r, self.state.limits.max_txn_ops)?;
        if !super::txn_is_read_only(&r) {
            self.check_quota(prost::Message::encoded_len(&r) as u64)
                .await?;
        }
        match self.propose(Request::Txn(r)).await? {
            Response::Txn(mut t) => {
                self.fill(&mut t.header);
                Ok(t)
            }
            other => Err(Self::unexpected(other)),
        }
    }

    async fn do_compact(
        &self,
        r: pb::CompactionRequest,
    ) -> Result<pb::CompactionResponse, StoreError> {
        let physical = r.physical;
        match self.propose(Request::Compact(r)).await? {
            Response::Compact { revision, rev } => {
                if physical {
                    let mut rx = self.state.mvcc.compact_done_rx();
                    while *rx.borrow_and_update() < revision {
                        if rx.changed().await.is_err() {
                            break;
                        }
                    }
                }
                Ok(pb::CompactionResponse {
                    header: self.header(rev),
                })
            }
            other => Err(Self::unexpected(other)),
        }
    }
}

#[tonic::async_trait]
impl Kv for Api {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn range(&self, req: GrpcRequest<pb::RangeRequest>) -> GrpcResult<pb::RangeResponse> {
        let r = self.do_range(req.into_inner()).await;
        self.done("Range", r)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn put(&self, req: GrpcRequest<pb::PutRequest>) -> GrpcResult<pb::PutResponse> {
        let r = self.do_put(req.into_inner()).await;
        self.done("Put", r)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn delete_range(
        &self,
        req: GrpcRequest<pb::DeleteRangeRequest>,
    ) -> GrpcResult<pb::DeleteRangeResponse> {
        let r = self.do_delete(req.into_inner()).await;
        self.done("DeleteRange", r)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn txn(&self, req: GrpcRequest<pb::TxnRequest>) -> GrpcResult<pb::TxnResponse> {
        let r = self.do_txn(req.into_inner()).await;
        self.done("Txn", r)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn compact(
        &self,
        req: GrpcRequest<pb::CompactionRequest>,
    ) -> GrpcResult<pb::CompactionResponse> {
        let r = self.do_compact(req.into_inner()).await;
        self.done("Compact", r)
    }
}

#[tonic::async_trait]
impl Watch for Api {
    type WatchStream = BoxStream<pb::WatchResponse>;

    async fn watch(
        &self,
        req: GrpcRequest<Streaming<pb::WatchRequest>>,
    ) -> GrpcResult<Self::WatchStream> {
        let mut inbound = req.into_inner();
        let (stream, rx) = self.state.hub.open_stream();
        let state = self.state.clone();
        let interval = state.limits_progress_interval();
        // A request the server cannot decode ends the stream with its status, as in etcd.
        let (err_tx, err_rx) = tokio::sync::oneshot::channel::<Status>();
        tokio::spawn(async move {
            let mut err_tx = Some(err_tx);
            let kick = stream.kick();
            let mut tick =
                tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            loop {
                tokio::select! {
                    msg = inbound.message() => {
                        let ok = match msg {
                            Ok(Some(pb::WatchRequest { request_union: Some(u) })) => match u {
                                RequestUnion::CreateRequest(c) => {
                                    stream.create(c, state.mvcc.current_rev()).await
                                }
                                RequestUnion::CancelRequest(c) => {
                                    stream.cancel(c.watch_id, state.mvcc.current_rev()).await
                                }
                                RequestUnion::ProgressRequest(_) => stream.progress().await,
                            },
                            Ok(Some(_)) => true,
                            Ok(None) => false,
                            Err(status) => {
                                if let Some(tx) = err_tx.take() {
                                    let _ = tx.send(super::etcd_status(status));
                                }
                                false
                            }
                        };
                        if !ok {
                            break;
                        }
                    }
                    _ = kick.notified() => {
                        if !stream.catch_up(&state.mvcc).await {
                            break;
                        }
                    }
                    _ = tick.tick() => {
                        if !stream.progress_tick().await {
                            break;
                        }
                    }
                }
            }
        });
        let failure = futures::StreamExt::filter_map(futures::stream::once(err_rx), |r| {
            futures::future::ready(r.ok().map(Err))
        });
        Ok(GrpcResponse::new(Box::pin(
            ReceiverStream::new(rx).map(Ok).chain(failure),
        )))
    }
}

#[tonic::async_trait]
impl Lease for Api {
    async fn lease_grant(
        &self,
        req: GrpcRequest<pb::LeaseGrantRequest>,
    ) -> GrpcResult<pb::LeaseGrantResponse> {
        let mut r = req.into_inner();
        let res = async {
            if r.id == 0 {
                loop {
                    // Positive, non-zero, unused: like etcd's generated ids.
                    let id = (rand::random::<u64>() >> 1) as i64;
                    if id != 0 && self.state.lessor.info(id).is_none() {
                        r.id = id;
                        break;
                    }
                }
            }
            self.check_quota(64).await?;
            match self.propose(Request::LeaseGrant(r)).await? {
                Response::LeaseGrant(mut g) => {
                    self.fill(&mut g.header);
                    Ok(g)
                }
                other => Err(Self::unexpected(other)),
            }
        }
        .await;
        self.done("LeaseGrant", res)
    }

    async fn lease_revoke(
        &self,
        req: GrpcRequest<pb::LeaseRevokeRequest>,
    ) -> GrpcResult<pb::LeaseRevokeResponse> {
        let r = req.into_inner();
        let res = async {
            match self.propose(Request::LeaseRevoke(r)).await? {
                Response::LeaseRevoke(mut g) => {
                    self.fill(&mut g.header);
                    Ok(g)
                }
                other => Err(Self::unexpected(other)),
            }
        }
        .await;
        self.done("LeaseRevoke", res)
    }

    type LeaseKeepAliveStream = BoxStream<pb::LeaseKeepAliveResponse>;

    async fn lease_keep_alive(
        &self,
        req: GrpcRequest<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> GrpcResult<Self::LeaseKeepAliveStream> {
        let mut inbound = req.into_inner();
        let api = self.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let r = match inbound.message().await {
                    Ok(Some(r)) => r,
                    Ok(None) => break,
                    Err(status) => {
                        // End the stream with the decode error, as etcd does.
                        let _ = tx.send(Err(super::etcd_status(status))).await;
                        break;
                    }
                };
                let ttl = api.state.lessor.renew(r.id).unwrap_or(0);
                let resp = pb::LeaseKeepAliveResponse {
                    header: api.header(api.state.mvcc.current_rev()),
                    id: r.id,
                    ttl,
                };
                if tx.send(Ok(resp)).await.is_err() {
                    break;
                }
            }
        });
        Ok(GrpcResponse::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        req: GrpcRequest<pb::LeaseTimeToLiveRequest>,
    ) -> GrpcResult<pb::LeaseTimeToLiveResponse> {
        let r = req.into_inner();
        let res = async {
            self.linearizable().await?;
            let header = self.header(self.state.mvcc.current_rev());
            Ok(match self.state.lessor.info(r.id) {
                Some(i) => pb::LeaseTimeToLiveResponse {
                    header,
                    id: r.id,
                    ttl: i.remaining,
                    granted_ttl: i.granted,
                    keys: if r.keys { i.keys } else { Vec::new() },
                },
                None => pb::LeaseTimeToLiveResponse {
                    header,
                    id: r.id,
                    ttl: -1,
                    granted_ttl: 0,
                    keys: Vec::new(),
                },
            })
        }
        .await;
        self.done("LeaseTimeToLive", res)
    }

    async fn lease_leases(
        &self,
        _req: GrpcRequest<pb::LeaseLeasesRequest>,
    ) -> GrpcResult<pb::LeaseLeasesResponse> {
        let res = async {
            self.linearizable().await?;
            Ok(pb::LeaseLeasesResponse {
                header: self.header(self.state.mvcc.current_rev()),
                leases: self
                    .state
                    .lessor
                    .ids()
                    .into_iter()
                    .map(|id| pb::LeaseStatus { id })
                    .collect(),
            })
        }
        .await;
        self.done("LeaseLeases", res)
    }
}

impl Api {
    fn members(&self) -> Vec<pb::Member> {
        let applied = self.state.applied.lock();
        let m = applied.1.membership();
        let voters: std::collections::BTreeSet<u64> = m.voter_ids().collect();
        let mut out: Vec<pb::Member> = m
            .nodes()
            .map(|(id, n)| pb::Member {
                id: *id,
                name: n.name.clone(),
                peer_ur_ls: n.peer_urls.clone(),
                client_ur_ls: n.client_urls.clone(),
                is_learner: !voters.contains(id),
            })
            .collect();
        if out.is_empty() {
            out.push(pb::Member {
                id: self.member_id,
                name: self.member.name.clone(),
                peer_ur_ls: self.member.peer_urls.clone(),
                client_ur_ls: self.member.client_urls.clone(),
                is_learner: false,
            });
        }
        out
    }
}

fn needs_ha(what: &str) -> Status {
    Status::unimplemented(format!(
        "kumo store: {what} needs a multi-member store (issue \"store HA\"); this member runs as a single voter"
    ))
}

#[tonic::async_trait]
impl Cluster for Api {
    async fn member_add(
        &self,
        _r: GrpcRequest<pb::MemberAddRequest>,
    ) -> GrpcResult<pb::MemberAddResponse> {
        Err(needs_ha("adding members"))
    }

    async fn member_remove(
        &self,
        _r: GrpcRequest<pb::MemberRemoveRequest>,
    ) -> GrpcResult<pb::MemberRemoveResponse> {
        Err(needs_ha("removing members"))
    }

    async fn member_update(
        &self,
        _r: GrpcRequest<pb::MemberUpdateRequest>,
    ) -> GrpcResult<pb::MemberUpdateResponse> {
        Err(needs_ha("updating members"))
    }

    async fn member_list(
        &self,
        _r: GrpcRequest<pb::MemberListRequest>,
    ) -> GrpcResult<pb::MemberListResponse> {
        let resp = pb::MemberListResponse {
            header: self.header(0),
            members: self.members(),
        };
        self.done("MemberList", Ok(resp))
    }

    async fn member_promote(
        &self,
        _r: GrpcRequest<pb::MemberPromoteRequest>,
    ) -> GrpcResult<pb::MemberPromoteResponse> {
        Err(needs_ha("promoting learners"))
    }
}

#[tonic::async_trait]
impl Maintenance for Api {
    async fn alarm(&self, req: GrpcRequest<pb::AlarmRequest>) -> GrpcResult<pb::AlarmResponse> {
        let r = req.into_inner();
        let res = async {
            use pb::alarm_request::AlarmAction;
            match AlarmAction::try_from(r.action) {
                Ok(AlarmAction::Get) | Err(_) => {
                    let alarms = self
                        .state
                        .alarms
                        .lock()
                        .iter()
                        .filter(|(_, a)| r.alarm == pb::AlarmType::None as i32 || *a == r.alarm)
                        .map(|(m, a)| pb::AlarmMember {
                            member_id: *m,
                            alarm: *a,
                        })
                        .collect();
                    // etcd 3.4's alarm responses carry no header.
                    Ok(pb::AlarmResponse {
                        header: None,
                        alarms,
                    })
                }
                Ok(_) => match self.propose(Request::Alarm(r)).await? {
                    Response::Alarm(mut a) => {
                        a.header = None;
                        Ok(a)
                    }
                    other => Err(Self::unexpected(other)),
                },
            }
        }
        .await;
        self.done("Alarm", res)
    }

    async fn status(&self, _req: GrpcRequest<pb::StatusRequest>) -> GrpcResult<pb::StatusResponse> {
        let m = self.raft.metrics().borrow().clone();
        let state = self.state.clone();
        let (size, in_use) =
            tokio::task::block_in_place(|| (state.mvcc.db_size(), state.mvcc.db_size_in_use()));
        let errors = self
            .state
            .alarms
            .lock()
            .iter()
            .map(|(m, a)| {
                let name = pb::AlarmType::try_from(*a)
                    .map(|t| t.as_str_name())
                    .unwrap_or("UNKNOWN");
                format!("memberID:{m} alarm:{name} ")
            })
            .collect();
        let resp = pb::StatusResponse {
            header: self.header(self.state.mvcc.current_rev()),
            version: ETCD_API_VERSION.to_string(),
            db_size: size as i64,
            leader: m.current_leader.unwrap_or(0),
            raft_index: m.last_log_index.unwrap_or(0),
            raft_term: m.current_term,
            raft_applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            errors,
            db_size_in_use: in_use as i64,
            is_learner: false,
            storage_version: String::new(),
            db_size_quota: self.state.limits.quota_backend_bytes as i64,
        };
        self.done("Status", Ok(resp))
    }

    async fn defragment(
        &self,
        _req: GrpcRequest<pb::DefragmentRequest>,
    ) -> GrpcResult<pb::DefragmentResponse> {
        let state = self.state.clone();
        let res = tokio::task::spawn_blocking(move || state.mvcc.defragment())
            .await
            .map_err(StoreError::internal)
            .and_then(|r| r)
            // etcd 3.4 answers a defragment with an empty response.
            .map(|_| pb::DefragmentResponse { header: None });
        self.done("Defragment", res)
    }

    async fn hash(&self, _req: GrpcRequest<pb::HashRequest>) -> GrpcResult<pb::HashResponse> {
        let state = self.state.clone();
        let res = tokio::task::spawn_blocking(move || state.mvcc.hash_kv(0))
            .await
            .map_err(StoreError::internal)
            .and_then(|r| r)
            .map(|(hash, rev, _)| pb::HashResponse {
                header: self.header(rev),
                hash,
            });
        self.done("Hash", res)
    }

    async fn hash_kv(&self, req: GrpcRequest<pb::HashKvRequest>) -> GrpcResult<pb::HashKvResponse> {
        let rev = req.into_inner().revision;
        let state = self.state.clone();
        let res = tokio::task::spawn_blocking(move || state.mvcc.hash_kv(rev))
            .await
            .map_err(StoreError::internal)
            .and_then(|r| r)
            .map(|(hash, _, compacted)| pb::HashKvResponse {
                header: self.header(self.state.mvcc.current_rev()),
                hash,
                compact_revision: compacted,
                hash_revision: 0,
            });
        self.done("HashKV", res)
    }

    type SnapshotStream = BoxStream<pb::SnapshotResponse>;

    async fn snapshot(
        &self,
        _req: GrpcRequest<pb::SnapshotRequest>,
    ) -> GrpcResult<Self::SnapshotStream> {
        let state = self.state.clone();
        let dumped = tokio::task::spawn_blocking(move || crate::mvcc::snapshot::dump(&state.mvcc))
            .await
            .map_err(StoreError::internal)
            .and_then(|r| r);
        let (data, _info) = match dumped {
            Ok(d) => d,
            Err(e) => {
                self.state.metrics.request("Snapshot", e.code());
                return Err(e.into());
            }
        };
        // etcd 3.4's stream: data chunks counting down `remaining_bytes`, then one message
        // holding the SHA-256 of the data.
        const CHUNK: usize = 32 * 1024;
        let total = data.len();
        let sum = crate::mvcc::snapshot::checksum(&data);
        let mut chunks: Vec<Result<pb::SnapshotResponse, Status>> = data
            .chunks(CHUNK)
            .enumerate()
            .map(|(i, c)| {
                Ok(pb::SnapshotResponse {
                    header: None,
                    remaining_bytes: (total - (i * CHUNK + c.len())) as u64,
                    blob: c.to_vec(),
                    version: String::new(),
                })
            })
            .collect();
        chunks.push(Ok(pb::SnapshotResponse {
            header: None,
            remaining_bytes: 0,
            blob: sum.to_vec(),
            version: String::new(),
        }));
        self.state.metrics.request("Snapshot", tonic::Code::Ok);
        Ok(GrpcResponse::new(Box::pin(tokio_stream::iter(chunks))))
    }

    async fn move_leader(
        &self,
        req: GrpcRequest<pb::MoveLeaderRequest>,
    ) -> GrpcResult<pb::MoveLeaderResponse> {
        let target = req.into_inner().target_id;
        let res = if target == self.member_id {
            Ok(pb::MoveLeaderResponse {
                header: self.header(0),
            })
        } else {
            Err(StoreError::BadLeaderTransferee)
        };
        self.done("MoveLeader", res)
    }

    async fn downgrade(
        &self,
        _req: GrpcRequest<pb::DowngradeRequest>,
    ) -> GrpcResult<pb::DowngradeResponse> {
        Err(Status::unimplemented(
            "kumo store: cluster downgrade is an etcd 3.5 API; kumo store speaks the 3.4 API",
        ))
    }
}

fn no_auth() -> Status {
    Status::failed_precondition("etcdserver: authentication is not enabled")
}

fn no_users() -> Status {
    Status::unimplemented(
        "kumo store: etcd users and roles are not supported; secure the store with TLS client certificates",
    )
}

#[tonic::async_trait]
impl Auth for Api {
    async fn auth_enable(
        &self,
        _r: GrpcRequest<pb::AuthEnableRequest>,
    ) -> GrpcResult<pb::AuthEnableResponse> {
        Err(no_users())
    }
    async fn auth_disable(
        &self,
        _r: GrpcRequest<pb::AuthDisableRequest>,
    ) -> GrpcResult<pb::AuthDisableResponse> {
        Ok(GrpcResponse::new(pb::AuthDisableResponse {
            header: self.header(0),
        }))
    }
    async fn auth_status(
        &self,
        _r: GrpcRequest<pb::AuthStatusRequest>,
    ) -> GrpcResult<pb::AuthStatusResponse> {
        Ok(GrpcResponse::new(pb::AuthStatusResponse {
            header: self.header(0),
            enabled: false,
            auth_revision: 1,
        }))
    }
    async fn authenticate(
        &self,
        _r: GrpcRequest<pb::AuthenticateRequest>,
    ) -> GrpcResult<pb::AuthenticateResponse> {
        Err(no_auth())
    }
    async fn user_add(
        &self,
        _r: GrpcRequest<pb::AuthUserAddRequest>,
    ) -> GrpcResult<pb::AuthUserAddResponse> {
        Err(no_users())
    }
    async fn user_get(
        &self,
        _r: GrpcRequest<pb::AuthUserGetRequest>,
    ) -> GrpcResult<pb::AuthUserGetResponse> {
        Err(no_users())
    }
    async fn user_list(
        &self,
        _r: GrpcRequest<pb::AuthUserListRequest>,
    ) -> GrpcResult<pb::AuthUserListResponse> {
        Ok(GrpcResponse::new(pb::AuthUserListResponse {
            header: self.header(0),
            users: Vec::new(),
        }))
    }
    async fn user_delete(
        &self,
        _r: GrpcRequest<pb::AuthUserDeleteRequest>,
    ) -> GrpcResult<pb::AuthUserDeleteResponse> {
        Err(no_users())
    }
    async fn user_change_password(
        &self,
        _r: GrpcRequest<pb::AuthUserChangePasswordRequest>,
    ) -> GrpcResult<pb::AuthUserChangePasswordResponse> {
        Err(no_users())
    }
    async fn user_grant_role(
        &self,
        _r: GrpcRequest<pb::AuthUserGrantRoleRequest>,
    ) -> GrpcResult<pb::AuthUserGrantRoleResponse> {
        Err(no_users())
    }
    async fn user_revoke_role(
        &self,
        _r: GrpcRequest<pb::AuthUserRevokeRoleRequest>,
    ) -> GrpcResult<pb::AuthUserRevokeRoleResponse> {
        Err(no_users())
    }
    async fn role_add(
        &self,
        _r: GrpcRequest<pb::AuthRoleAddRequest>,
    ) -> GrpcResult<pb::AuthRoleAddResponse> {
        Err(no_users())
    }
    async fn role_get(
        &self,
        _r: GrpcRequest<pb::AuthRoleGetRequest>,
    ) -> GrpcResult<pb::AuthRoleGetResponse> {
        Err(no_users())
    }
    async fn role_list(
        &self,
        _r: GrpcRequest<pb::AuthRoleListRequest>,
    ) -> GrpcResult<pb::AuthRoleListResponse> {
        Ok(GrpcResponse::new(pb::AuthRoleListResponse {
            header: self.header(0),
            roles: Vec::new(),
        }))
    }
    async fn role_delete(
        &self,
        _r: GrpcRequest<pb::AuthRoleDeleteRequest>,
    ) -> GrpcResult<pb::AuthRoleDeleteResponse> {
        Err(no_users())
    }
    async fn role_grant_permission(
        &self,
        _r: GrpcRequest<pb::AuthRoleGrantPermissionRequest>,
    ) -> GrpcResult<pb::AuthRoleGrantPermissionResponse> {
        Err(no_users())
    }
    async fn role_revoke_permission(
        &self,
        _r: GrpcRequest<pb::AuthRoleRevokePermissionRequest>,
    ) -> GrpcResult<pb::AuthRoleRevokePermissionResponse> {
        Err(no_users())
    }
}

/// All six services, with etcd's request size limit, plus `extra` HTTP routes on the same port.
pub fn routes(api: Api, extra: axum::Router) -> tonic::service::Routes {
    let limit = api.state.limits.max_request_bytes + GRPC_OVERHEAD_BYTES;
    tonic::service::Routes::from(extra)
        .add_service(
            KvServer::new(api.clone())
                .max_decoding_message_size(limit)
                .max_encoding_message_size(usize::MAX),
        )
        .add_service(
            WatchServer::new(api.clone())
                .max_decoding_message_size(limit)
                .max_encoding_message_size(usize::MAX),
        )
        .add_service(LeaseServer::new(api.clone()).max_decoding_message_size(limit))
        .add_service(ClusterServer::new(api.clone()).max_decoding_message_size(limit))
        .add_service(
            MaintenanceServer::new(api.clone())
                .max_decoding_message_size(limit)
                .max_encoding_message_size(usize::MAX),
        )
        .add_service(AuthServer::new(api).max_decoding_message_size(limit))
}
