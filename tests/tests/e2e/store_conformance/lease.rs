//! Lease: grant, revoke, keep-alive stream, time-to-live with keys, list, expiry.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use etcd_client::{
    GetOptions, LeaseGrantOptions, LeaseTimeToLiveOptions, PutOptions, WatchOptions,
};

use super::{
    Ctx, MSG_TIMEOUT, assert_grpc_err, conformance, del_ev, ekv, evs, kvs, next_watch, rev,
};

fn sorted_ids(r: &etcd_client::LeaseLeasesResponse) -> Vec<i64> {
    let mut ids: Vec<i64> = r.leases().iter().map(|l| l.id()).collect();
    ids.sort();
    ids
}

/// Grant (server-chosen and client-chosen ids, minimum TTL), list, time-to-live with and
/// without keys, revoke deleting attached keys in one revision, errors for unknown leases.
async fn lease_lifecycle(cx: Ctx) -> Result<()> {
    let mut c = cx.client().await?;

    let g = c.lease_grant(60, None).await?;
    let l1 = g.id();
    assert!(l1 > 0, "server-assigned lease id {l1}");
    assert_eq!((g.ttl(), g.error()), (60, ""));
    assert_eq!(rev(g.header()), 1, "lease grant makes no revision");

    let g = c
        .lease_grant(30, Some(LeaseGrantOptions::new().with_id(1234)))
        .await?;
    assert_eq!((g.id(), g.ttl()), (1234, 30));
    assert_grpc_err(
        c.lease_grant(30, Some(LeaseGrantOptions::new().with_id(1234)))
            .await,
        "FailedPrecondition",
        "etcdserver: lease already exists",
    );

    // TTLs below the minimum (1.5 × election timeout, rounded up: 2 s) are raised to it.
    let g = c.lease_grant(1, None).await?;
    let l3 = g.id();
    assert_eq!(g.ttl(), 2, "minimum lease TTL");

    let mut want = vec![l1, 1234, l3];
    want.sort();
    assert_eq!(sorted_ids(&c.leases().await?), want, "leases");

    c.put("/l/b", "b", Some(PutOptions::new().with_lease(l1)))
        .await?; // 2
    c.put("/l/a", "a", Some(PutOptions::new().with_lease(l1)))
        .await?; // 3
    c.put("/l/c", "c", Some(PutOptions::new().with_lease(1234)))
        .await?; // 4
    c.put("/l/d", "d", None).await?; // 5

    let t = c
        .lease_time_to_live(l1, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await?;
    assert_eq!((t.id(), t.granted_ttl()), (l1, 60));
    assert!(t.ttl() > 50 && t.ttl() <= 60, "ttl {}", t.ttl());
    let mut keys: Vec<String> = t
        .keys()
        .iter()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    keys.sort();
    assert_eq!(keys, ["/l/a", "/l/b"], "keys attached to the lease");
    let t = c.lease_time_to_live(l1, None).await?;
    assert!(t.keys().is_empty(), "keys without the keys option");
    assert_eq!(t.granted_ttl(), 60);

    // Unknown lease: TTL -1, no error.
    let t = c
        .lease_time_to_live(999, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await?;
    assert_eq!(
        (t.id(), t.ttl(), t.granted_ttl(), t.keys().len()),
        (999, -1, 0, 0),
        "time-to-live of an unknown lease"
    );

    // Revoke: both keys go in one revision, in key order.
    let r = c.lease_revoke(l1).await?;
    assert_eq!(rev(r.header()), 6);
    let g = c.get("/l/", Some(GetOptions::new().with_prefix())).await?;
    assert_eq!(
        kvs(g.kvs()),
        vec![
            ekv("/l/c", "c", 4, 4, 1, 1234),
            ekv("/l/d", "d", 5, 5, 1, 0)
        ]
    );
    let mut w = cx.client().await?;
    let mut ws = w
        .watch(
            "/l/",
            Some(WatchOptions::new().with_prefix().with_start_revision(6)),
        )
        .await?;
    assert!(next_watch(&mut ws).await?.created());
    let r = next_watch(&mut ws).await?;
    assert_eq!(evs(&r), vec![del_ev("/l/a", 6), del_ev("/l/b", 6)]);

    // Revoking a lease without keys makes no revision.
    let r = c.lease_revoke(l3).await?;
    assert_eq!(rev(r.header()), 6);

    let mut want = vec![1234];
    want.sort();
    assert_eq!(sorted_ids(&c.leases().await?), want, "leases after revoke");
    let t = c.lease_time_to_live(l1, None).await?;
    assert_eq!(t.ttl(), -1, "revoked lease");

    assert_grpc_err(
        c.lease_revoke(l1).await,
        "NotFound",
        "etcdserver: requested lease not found",
    );
    assert_grpc_err(
        c.put("/l/x", "x", Some(PutOptions::new().with_lease(l1)))
            .await,
        "NotFound",
        "etcdserver: requested lease not found",
    );

    // Putting a key with another lease moves it: the old lease no longer owns it.
    let l4 = c.lease_grant(60, None).await?.id();
    c.put("/l/c", "c2", Some(PutOptions::new().with_lease(l4)))
        .await?; // 7
    let t = c
        .lease_time_to_live(1234, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await?;
    assert!(t.keys().is_empty(), "lease 1234 still owns {:?}", t.keys());
    let t = c
        .lease_time_to_live(l4, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await?;
    assert_eq!(t.keys(), [b"/l/c".to_vec()]);
    let r = c.lease_revoke(1234).await?;
    assert_eq!(
        rev(r.header()),
        7,
        "the moved key is not deleted with its old lease"
    );
    let g = c.get("/l/c", None).await?;
    assert_eq!(kvs(g.kvs()), vec![ekv("/l/c", "c2", 4, 7, 2, l4)]);
    Ok(())
}
conformance!(lease_lifecycle => lease_lifecycle_etcd, lease_lifecycle_kumo);

/// Keep-alive stream: each request is answered with the granted TTL; the lease stays alive past
/// its TTL while kept alive; unknown and revoked leases answer TTL 0.
async fn lease_keep_alive(cx: Ctx) -> Result<()> {
    let mut c = cx.client().await?;
    let l = c.lease_grant(3, None).await?.id();
    c.put("/ka/k", "v", Some(PutOptions::new().with_lease(l)))
        .await?; // 2

    // The client sends one keep-alive and checks its answer (TTL > 0) before returning.
    let (mut keeper, mut stream) = c.lease_keep_alive(l).await?;
    assert_eq!(keeper.id(), l);
    let start = Instant::now();
    // Keep it alive for well over its TTL.
    while start.elapsed() < Duration::from_millis(4500) {
        tokio::time::sleep(Duration::from_millis(700)).await;
        keeper.keep_alive().await?;
        let r = tokio::time::timeout(MSG_TIMEOUT, stream.message())
            .await
            .context("keep-alive response timed out")??
            .context("keep-alive stream closed")?;
        assert_eq!((r.id(), r.ttl()), (l, 3), "keep-alive response");
        assert_eq!(rev(r.header()), 2);
    }
    let t = c.lease_time_to_live(l, None).await?;
    assert!(
        t.ttl() >= 1 && t.ttl() <= 3,
        "ttl after keep-alive: {}",
        t.ttl()
    );
    let g = c.get("/ka/k", None).await?;
    assert_eq!(kvs(g.kvs()), vec![ekv("/ka/k", "v", 2, 2, 1, l)]);

    // Revoked: the same stream now answers TTL 0.
    c.lease_revoke(l).await?;
    keeper.keep_alive().await?;
    let r = tokio::time::timeout(MSG_TIMEOUT, stream.message())
        .await
        .context("keep-alive response timed out")??
        .context("keep-alive stream closed")?;
    assert_eq!((r.id(), r.ttl()), (l, 0), "keep-alive of a revoked lease");

    // Unknown lease: the first answer has TTL 0, which the client reports as not found.
    match c.lease_keep_alive(4242).await {
        Err(etcd_client::Error::LeaseKeepAliveError(m)) => assert_eq!(m, "lease not found"),
        other => panic!("keep-alive of an unknown lease: {other:?}"),
    }
    Ok(())
}
conformance!(lease_keep_alive => lease_keep_alive_etcd, lease_keep_alive_kumo);

/// Expiry: a lease that is not kept alive expires after its TTL, deleting all its keys in one
/// revision (in key order); keys without the lease stay.
async fn lease_expiry(cx: Ctx) -> Result<()> {
    let mut c = cx.client().await?;
    let mut w = cx.client().await?;
    let granted = Instant::now();
    let l = c.lease_grant(2, None).await?.id();
    for k in ["/x/c", "/x/a", "/x/b"] {
        c.put(k, "v", Some(PutOptions::new().with_lease(l))).await?; // 2, 3, 4
    }
    c.put("/x/keep", "v", None).await?; // 5

    let mut ws = w
        .watch("/x/", Some(WatchOptions::new().with_prefix()))
        .await?;
    assert!(next_watch(&mut ws).await?.created());
    let mut events = Vec::new();
    while events.len() < 3 {
        let r = next_watch(&mut ws).await?;
        events.extend(evs(&r));
    }
    let elapsed = granted.elapsed();
    assert_eq!(
        events,
        vec![del_ev("/x/a", 6), del_ev("/x/b", 6), del_ev("/x/c", 6)],
        "expiry deletes"
    );
    assert!(
        elapsed >= Duration::from_millis(1500) && elapsed <= Duration::from_secs(8),
        "a 2 s lease expired after {elapsed:?}"
    );

    let g = c.get("/x/", Some(GetOptions::new().with_prefix())).await?;
    assert_eq!(kvs(g.kvs()), vec![ekv("/x/keep", "v", 5, 5, 1, 0)]);
    assert_eq!(rev(g.header()), 6);
    let t = c.lease_time_to_live(l, None).await?;
    assert_eq!(t.ttl(), -1);
    assert!(c.leases().await?.leases().is_empty());
    assert_grpc_err(
        c.lease_revoke(l).await,
        "NotFound",
        "etcdserver: requested lease not found",
    );
    Ok(())
}
conformance!(lease_expiry => lease_expiry_etcd, lease_expiry_kumo);
