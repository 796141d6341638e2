//! Cluster member list and auth status of a fresh single-member store.

use anyhow::Result;

use super::{Ctx, assert_grpc_err, conformance};

/// Member list: exactly this member, with its name and advertised URLs.
async fn cluster_member_list(cx: Ctx) -> Result<()> {
    let mut c = cx.client().await?;
    let r = c.member_list().await?;
    let h = r.header().unwrap();
    assert_eq!(r.members().len(), 1, "members {:?}", r.members());
    let m = &r.members()[0];
    assert_eq!(m.id(), h.member_id(), "member id = header member id");
    assert_ne!(m.id(), 0);
    assert_eq!(m.name(), cx.name);
    assert_eq!(m.peer_urls(), std::slice::from_ref(&cx.peer_url));
    assert_eq!(m.client_urls(), std::slice::from_ref(&cx.endpoint));
    assert!(!m.is_learner());
    // The same ids everywhere.
    let s = c.status().await?;
    assert_eq!(s.header().unwrap().cluster_id(), h.cluster_id());
    assert_eq!(s.leader(), m.id());
    Ok(())
}
conformance!(cluster_member_list => cluster_member_list_etcd, cluster_member_list_kumo);

/// Auth is disabled on a fresh store: authenticating fails with "not enabled", there are no
/// users or roles, disabling is a no-op.
async fn auth_status(cx: Ctx) -> Result<()> {
    let c = cx.client().await?;
    let mut auth = c.auth_client();
    assert_grpc_err(
        auth.authenticate("root".into(), "pw".into()).await,
        "FailedPrecondition",
        "etcdserver: authentication is not enabled",
    );
    let users = auth.user_list().await?;
    assert!(users.users().is_empty(), "users {:?}", users.users());
    let roles = auth.role_list().await?;
    assert!(roles.roles().is_empty(), "roles {:?}", roles.roles());
    auth.auth_disable().await?;
    // Requests without a token work.
    let mut c = cx.client().await?;
    let p = c.put("/auth/k", "v", None).await?;
    assert_eq!(super::rev(p.header()), 2);
    Ok(())
}
conformance!(auth_status => auth_status_etcd, auth_status_kumo);
