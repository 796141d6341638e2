//! etcd's gRPC error codes and messages: empty key, compacted and future revisions, request
//! size limits, unknown leases, txn limits.

use anyhow::Result;
use etcd_client::{Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp};

use super::{Ctx, assert_grpc_err, conformance, grpc_err, rev};

const EMPTY_KEY: &str = "etcdserver: key is not provided";
const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
const FUTURE: &str = "etcdserver: mvcc: required revision is a future revision";
const NO_LEASE: &str = "etcdserver: requested lease not found";

/// An empty key is rejected by every KV call, also inside txns; nothing is written.
async fn err_empty_key(cx: Ctx) -> Result<()> {
    let mut c = cx.client().await?;
    let ia = "InvalidArgument";
    assert_grpc_err(c.put("", "v", None).await, ia, EMPTY_KEY);
    assert_grpc_err(c.get("", None).await, ia, EMPTY_KEY);
    assert_grpc_err(
        c.get("", Some(GetOptions::new().with_range("z"))).await,
        ia,
        EMPTY_KEY,
    );
    assert_grpc_err(c.delete("", None).await, ia, EMPTY_KEY);
    assert_grpc_err(
        c.txn(Txn::new().and_then([TxnOp::put("", "v", None)]))
            .await,
        ia,
        EMPTY_KEY,
    );
    assert_grpc_err(
        c.txn(Txn::new().or_else([TxnOp::get("", None)])).await,
        ia,
        EMPTY_KEY,
    );
    assert_grpc_err(
        c.txn(Txn::new().and_then([TxnOp::delete("", None)])).await,
        ia,
        EMPTY_KEY,
    );
    assert_grpc_err(
        c.txn(Txn::new().when([Compare::version("", CompareOp::Equal, 0)]))
            .await,
        ia,
        EMPTY_KEY,
    );
    assert_grpc_err(
        c.txn(Txn::new().and_then([
            TxnOp::put("ok", "v", None),
            TxnOp::txn(Txn::new().and_then([TxnOp::put("", "v", None)])),
        ]))
        .await,
        ia,
        EMPTY_KEY,
    );
    let g = c.get("ok", None).await?;
    assert_eq!((g.count(), rev(g.header())), (0, 1), "nothing was written");
    Ok(())
}
conformance!(err_empty_key => err_empty_key_etcd, err_empty_key_kumo);

/// Compacted and future revisions: Range, Range in a txn, Compact.
async fn err_revisions(cx: Ctx) -> Result<()> {
    let mut c = cx.client().await?;
    for i in 2..=5 {
        c.put("/rv/k", format!("v{i}"), None).await?; // revisions 2..=5
    }
    let oor = "OutOfRange";
    assert_grpc_err(
        c.get("/rv/k", Some(GetOptions::new().with_revision(6)))
            .await,
        oor,
        FUTURE,
    );
    assert_grpc_err(
        c.get(
            "/rv/",
            Some(GetOptions::new().with_prefix().with_revision(100)),
        )
        .await,
        oor,
        FUTURE,
    );
    assert_grpc_err(
        c.txn(Txn::new().and_then([TxnOp::get(
            "/rv/k",
            Some(GetOptions::new().with_revision(6)),
        )]))
        .await,
        oor,
        FUTURE,
    );
    assert_grpc_err(c.compact(6, None).await, oor, FUTURE);

    c.compact(3, None).await?;
    assert_grpc_err(
        c.get("/rv/k", Some(GetOptions::new().with_revision(2)))
            .await,
        oor,
        COMPACTED,
    );
    assert_grpc_err(
        c.txn(Txn::new().and_then([TxnOp::get(
            "/rv/k",
            Some(GetOptions::new().with_revision(2)),
        )]))
        .await,
        oor,
        COMPACTED,
    );
    assert_grpc_err(c.compact(3, None).await, oor, COMPACTED);
    assert_grpc_err(c.compact(1, None).await, oor, COMPACTED);
    // A txn that fails this way writes nothing.
    assert_grpc_err(
        c.txn(Txn::new().and_then([
            TxnOp::put("/rv/new", "v", None),
            TxnOp::get("/rv/k", Some(GetOptions::new().with_revision(2))),
        ]))
        .await,
        oor,
        COMPACTED,
    );
    let g = c.get("/rv/new", None).await?;
    assert_eq!((g.count(), rev(g.header())), (0, 5));
    Ok(())
}
conformance!(err_revisions => err_revisions_etcd, err_revisions_kumo);

/// Request size: 1 MiB values are fine; a request over --max-request-bytes (1.5 MiB) is
/// "request is too large"; one over the gRPC receive limit (1.5 MiB + 512 KiB) is refused by
/// the transport with ResourceExhausted.
async fn err_request_too_large(cx: Ctx) -> Result<()> {
    let mut c = cx.client().await?;
    let mib = 1024 * 1024;
    let p = c.put("/big/ok", vec![b'a'; mib], None).await?;
    assert_eq!(rev(p.header()), 2);
    let g = c.get("/big/ok", None).await?;
    assert_eq!(g.kvs()[0].value().len(), mib);

    assert_grpc_err(
        c.put("/big/no", vec![b'b'; mib + mib / 2 + 1024], None)
            .await,
        "InvalidArgument",
        "etcdserver: request is too large",
    );
    assert_grpc_err(
        c.txn(Txn::new().and_then([
            TxnOp::put("/big/t1", vec![b'c'; mib], None),
            TxnOp::put("/big/t2", vec![b'c'; mib / 2 + 1024], None),
        ]))
        .await,
        "InvalidArgument",
        "etcdserver: request is too large",
    );
    let (code, msg) = grpc_err(c.put("/big/huge", vec![b'd'; 3 * mib], None).await);
    assert_eq!(code, "ResourceExhausted", "3 MiB put: {msg}");
    assert!(
        msg.starts_with("grpc: received message larger than max"),
        "3 MiB put message: {msg:?}"
    );

    let g = c
        .get(
            "/big/",
            Some(GetOptions::new().with_prefix().with_keys_only()),
        )
        .await?;
    assert_eq!(
        (g.count(), rev(g.header())),
        (1, 2),
        "only the 1 MiB put was written"
    );
    Ok(())
}
conformance!(err_request_too_large => err_request_too_large_etcd, err_request_too_large_kumo);

/// Unknown leases: put, put in a txn, revoke.
async fn err_unknown_lease(cx: Ctx) -> Result<()> {
    let mut c = cx.client().await?;
    assert_grpc_err(
        c.put("/ul/k", "v", Some(PutOptions::new().with_lease(777)))
            .await,
        "NotFound",
        NO_LEASE,
    );
    assert_grpc_err(
        c.txn(Txn::new().and_then([TxnOp::put(
            "/ul/k",
            "v",
            Some(PutOptions::new().with_lease(777)),
        )]))
        .await,
        "NotFound",
        NO_LEASE,
    );
    assert_grpc_err(c.lease_revoke(777).await, "NotFound", NO_LEASE);
    let g = c.get("/ul/k", None).await?;
    assert_eq!((g.count(), rev(g.header())), (0, 1));
    Ok(())
}
conformance!(err_unknown_lease => err_unknown_lease_etcd, err_unknown_lease_kumo);

/// Txn limits: more than --max-txn-ops (128) ops in a branch, and the same key written twice.
async fn err_txn_limits(cx: Ctx) -> Result<()> {
    let mut c = cx.client().await?;
    let ops = |n: usize| -> Vec<TxnOp> {
        (0..n)
            .map(|i| TxnOp::put(format!("/tl/{i:03}"), "v", None))
            .collect()
    };
    let r = c.txn(Txn::new().and_then(ops(128))).await?;
    assert_eq!(rev(r.header()), 2, "128 ops are allowed");
    assert_grpc_err(
        c.txn(Txn::new().and_then(ops(129))).await,
        "InvalidArgument",
        "etcdserver: too many operations in txn request",
    );
    let dup = "etcdserver: duplicate key given in txn request";
    assert_grpc_err(
        c.txn(Txn::new().and_then([
            TxnOp::put("/tl/x", "1", None),
            TxnOp::put("/tl/x", "2", None),
        ]))
        .await,
        "InvalidArgument",
        dup,
    );
    assert_grpc_err(
        c.txn(Txn::new().and_then([
            TxnOp::put("/tl/005", "1", None),
            TxnOp::delete("/tl/", Some(DeleteOptions::new().with_prefix())),
        ]))
        .await,
        "InvalidArgument",
        dup,
    );
    // The same key in the two branches is fine.
    let r = c
        .txn(
            Txn::new()
                .and_then([TxnOp::put("/tl/x", "1", None)])
                .or_else([TxnOp::put("/tl/x", "2", None)]),
        )
        .await?;
    assert_eq!(rev(r.header()), 3);
    Ok(())
}
conformance!(err_txn_limits => err_txn_limits_etcd, err_txn_limits_kumo);
