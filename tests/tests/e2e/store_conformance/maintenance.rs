//! Maintenance: status, defragment, snapshot, hash_kv, alarms (NOSPACE with a small quota).

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use etcd_client::{AlarmAction, AlarmOptions, AlarmType, DeleteOptions, GetOptions, Txn, TxnOp};

use super::{Ctx, MSG_TIMEOUT, assert_grpc_err, conformance, ekv, kvs, rev};

/// Status of a single-member store: version, leader = self, indexes, db sizes, no errors.
async fn maint_status(cx: Ctx) -> Result<()> {
    let mut c = cx.client().await?;
    c.put("/s/a", "1", None).await?; // 2
    let s = c.status().await?;
    let h = s.header().unwrap();
    assert_eq!(h.revision(), 2);
    assert!(
        s.version().starts_with("3."),
        "version {:?} should look like an etcd 3.x server",
        s.version()
    );
    assert_eq!(s.leader(), h.member_id(), "single member is the leader");
    assert!(s.raft_term() >= 1, "raft_term {}", s.raft_term());
    assert!(s.raft_index() >= 1, "raft_index {}", s.raft_index());
    assert!(
        s.raft_applied_index() >= 1 && s.raft_applied_index() <= s.raft_index(),
        "raft_applied_index {} raft_index {}",
        s.raft_applied_index(),
        s.raft_index()
    );
    assert!(s.db_size() > 0, "db_size {}", s.db_size());
    assert!(
        s.raft_used_db_size() > 0 && s.raft_used_db_size() <= s.db_size(),
        "db_size_in_use {} db_size {}",
        s.raft_used_db_size(),
        s.db_size()
    );
    assert!(s.errors().is_empty(), "errors {:?}", s.errors());
    assert!(!s.is_learner());

    // Writes advance the raft index.
    let before = s.raft_index();
    c.put("/s/a", "2", None).await?;
    let s = c.status().await?;
    assert!(s.raft_index() > before, "raft index did not advance");
    assert_eq!(rev(s.header()), 3);
    Ok(())
}
conformance!(maint_status => maint_status_etcd, maint_status_kumo);

/// Defragment after deleting and compacting: data intact, revision unchanged, no bigger.
async fn maint_defragment(cx: Ctx) -> Result<()> {
    let mut c = cx.client().await?;
    let big = "x".repeat(64 * 1024);
    for i in 0..20 {
        c.put(format!("/big/{i:02}"), big.as_str(), None).await?; // 2..=21
    }
    c.put("/keep", "k", None).await?; // 22
    c.delete("/big/", Some(DeleteOptions::new().with_prefix()))
        .await?; // 23
    c.compact(
        23,
        Some(etcd_client::CompactionOptions::new().with_physical()),
    )
    .await?;
    let before = c.status().await?.db_size();
    // (etcd 3.4 sends a DefragmentResponse without a header.)
    c.defragment().await?;
    let s = c.status().await?;
    assert!(
        s.db_size() <= before,
        "db size grew on defrag: {} -> {}",
        before,
        s.db_size()
    );
    assert_eq!(rev(s.header()), 23);
    let g = c.get("/", Some(GetOptions::new().with_prefix())).await?;
    assert_eq!(kvs(g.kvs()), vec![ekv("/keep", "k", 22, 22, 1, 0)]);
    assert_eq!(rev(g.header()), 23);
    let p = c.put("/keep", "k2", None).await?;
    assert_eq!(rev(p.header()), 24);
    Ok(())
}
conformance!(maint_defragment => maint_defragment_etcd, maint_defragment_kumo);

fn sha256(data: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("spawn sha256sum")?;
    child
        .stdin
        .take()
        .context("sha256sum stdin")?
        .write_all(data)?;
    let out = child.wait_with_output()?;
    let hex = String::from_utf8(out.stdout)?;
    let hex = hex.split_whitespace().next().context("sha256sum output")?;
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).context("hex"))
        .collect()
}

/// Snapshot stream: data chunks with exact `remaining_bytes`, then a 32-byte SHA-256 of the
/// data (what `etcdctl snapshot restore` verifies).
async fn maint_snapshot(cx: Ctx) -> Result<()> {
    let mut c = cx.client().await?;
    let val = "v".repeat(4096);
    for i in 0..64 {
        c.put(format!("/snap/{i:03}"), val.as_str(), None).await?;
    }
    let mut s = c.snapshot().await?;
    let mut chunks: Vec<(u64, Vec<u8>)> = Vec::new();
    loop {
        let m = tokio::time::timeout(MSG_TIMEOUT, s.message())
            .await
            .context("snapshot message timed out")??;
        match m {
            Some(m) => chunks.push((m.remaining_bytes(), m.blob().to_vec())),
            None => break,
        }
        assert!(chunks.len() < 100_000, "endless snapshot");
    }
    assert!(
        chunks.len() >= 2,
        "data and checksum: {} messages",
        chunks.len()
    );
    let (last_rem, digest) = chunks.pop().unwrap();
    assert_eq!(last_rem, 0, "checksum message remaining_bytes");
    assert_eq!(digest.len(), 32, "checksum message is a SHA-256");
    let total: u64 = chunks.iter().map(|(_, b)| b.len() as u64).sum();
    assert!(
        total > 64 * 4096,
        "snapshot of {total} bytes holds 256 KiB of values"
    );
    let mut sent = 0u64;
    for (i, (rem, blob)) in chunks.iter().enumerate() {
        assert!(!blob.is_empty(), "empty data chunk {i}");
        sent += blob.len() as u64;
        assert_eq!(*rem, total - sent, "remaining_bytes of chunk {i}");
    }
    let data: Vec<u8> = chunks.into_iter().flat_map(|(_, b)| b).collect();
    assert_eq!(sha256(&data)?, digest, "trailing checksum = SHA-256(data)");
    Ok(())
}
conformance!(maint_snapshot => maint_snapshot_etcd, maint_snapshot_kumo);

/// hash_kv: stable for a revision, changes with writes, reports the compaction revision;
/// compacted and future revisions fail. (etcd 3.4 has no `hash_revision` field: not checked.)
async fn maint_hash_kv(cx: Ctx) -> Result<()> {
    let mut c = cx.client().await?;
    for i in 0..4 {
        c.put(format!("/hk/{i}"), "v", None).await?; // 2..=5
    }
    let h5 = c.hash_kv(0).await?;
    assert_eq!(rev(h5.header()), 5);
    assert_eq!(
        h5.compact_version(),
        -1,
        "compact revision before any compaction"
    );
    assert_eq!(c.hash_kv(0).await?.hash(), h5.hash(), "hash is stable");
    assert_eq!(
        c.hash_kv(5).await?.hash(),
        h5.hash(),
        "revision 0 = current"
    );

    c.put("/hk/0", "changed", None).await?; // 6
    let h6 = c.hash_kv(0).await?;
    assert_eq!(rev(h6.header()), 6);
    assert_ne!(h6.hash(), h5.hash(), "a write changes the hash");
    let r = c.hash_kv(5).await?;
    assert_eq!(
        r.hash(),
        h5.hash(),
        "hash at a past revision does not change"
    );
    assert_eq!(rev(r.header()), 6);
    let h3 = c.hash_kv(3).await?;
    assert_ne!(h3.hash(), h5.hash());

    c.compact(3, None).await?;
    let r = c.hash_kv(0).await?;
    assert_eq!((rev(r.header()), r.compact_version()), (6, 3));
    assert_eq!(
        c.hash_kv(0).await?.hash(),
        r.hash(),
        "hash is stable after compaction"
    );
    assert_grpc_err(
        c.hash_kv(2).await,
        "OutOfRange",
        "etcdserver: mvcc: required revision has been compacted",
    );
    assert_grpc_err(
        c.hash_kv(7).await,
        "OutOfRange",
        "etcdserver: mvcc: required revision is a future revision",
    );
    Ok(())
}
conformance!(maint_hash_kv => maint_hash_kv_etcd, maint_hash_kv_kumo);

const NOSPACE: &str = "etcdserver: mvcc: database space exceeded";

/// Alarms: exceeding --quota-backend-bytes raises NOSPACE; while it is active, writes that add
/// data fail (puts, txns with puts, lease grants) but reads and deletes work; after compaction,
/// defragmentation and a disarm, writes work again.
async fn maint_alarm_nospace(cx: Ctx) -> Result<()> {
    let mut c = cx.client().await?;
    let member = c.status().await?.header().unwrap().member_id();
    let a = c.alarm(AlarmAction::Get, AlarmType::None, None).await?;
    assert!(a.alarms().is_empty(), "no alarms on a fresh store");

    let val = "q".repeat(128 * 1024);
    let mut written = 0;
    let err = loop {
        match c.put(format!("/q/{written:04}"), val.as_str(), None).await {
            Ok(_) => written += 1,
            Err(e) => break e,
        }
        assert!(
            written < 400,
            "50 MiB written without hitting an 8 MiB quota"
        );
    };
    assert_grpc_err::<()>(Err(err), "ResourceExhausted", NOSPACE);
    assert!(
        written >= 1,
        "the quota rejected the very first 128 KiB put"
    );

    let a = c.alarm(AlarmAction::Get, AlarmType::None, None).await?;
    let got: Vec<(u64, AlarmType)> = a
        .alarms()
        .iter()
        .map(|m| (m.member_id(), m.alarm()))
        .collect();
    assert_eq!(got, vec![(member, AlarmType::Nospace)], "alarms");
    let s = c.status().await?;
    assert!(
        s.errors().iter().any(|e| e.contains("NOSPACE")),
        "status errors {:?}",
        s.errors()
    );

    // While NOSPACE is active: small puts, txns with puts and lease grants fail …
    assert_grpc_err(
        c.put("/q/small", "s", None).await,
        "ResourceExhausted",
        NOSPACE,
    );
    assert_grpc_err(
        c.txn(Txn::new().and_then([TxnOp::put("/q/small", "s", None)]))
            .await,
        "ResourceExhausted",
        NOSPACE,
    );
    assert_grpc_err(c.lease_grant(60, None).await, "ResourceExhausted", NOSPACE);
    // … reads, read-only txns and deletes work.
    let g = c
        .get(
            "/q/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await?;
    assert_eq!(g.count(), written);
    let t = c
        .txn(Txn::new().and_then([TxnOp::get("/q/0000", None)]))
        .await?;
    assert!(t.succeeded());
    let d = c
        .delete("/q/", Some(DeleteOptions::new().with_prefix()))
        .await?;
    assert_eq!(d.deleted(), written);
    let cur = rev(d.header());
    assert_eq!(cur, written + 2, "the delete made one revision");

    // Still alarmed until disarmed.
    assert_grpc_err(
        c.put("/q/small", "s", None).await,
        "ResourceExhausted",
        NOSPACE,
    );

    c.compact(
        cur,
        Some(etcd_client::CompactionOptions::new().with_physical()),
    )
    .await?;
    c.defragment().await?;
    let mut opts = AlarmOptions::new();
    opts.with_member(member);
    let a = c
        .alarm(AlarmAction::Deactivate, AlarmType::Nospace, Some(opts))
        .await?;
    let got: Vec<(u64, AlarmType)> = a
        .alarms()
        .iter()
        .map(|m| (m.member_id(), m.alarm()))
        .collect();
    assert_eq!(got, vec![(member, AlarmType::Nospace)], "disarmed alarms");
    let a = c.alarm(AlarmAction::Get, AlarmType::None, None).await?;
    assert_eq!(a.alarms().len(), 0, "alarms after disarm");

    let p = c.put("/q/small", "s", None).await?;
    assert_eq!(rev(p.header()), cur + 1);
    assert!(c.status().await?.errors().is_empty());
    Ok(())
}
conformance!(maint_alarm_nospace => maint_alarm_nospace_etcd, maint_alarm_nospace_kumo;
    args = ["--quota-backend-bytes", "8388608"]);
