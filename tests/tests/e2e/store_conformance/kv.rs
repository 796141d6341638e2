//! KV: Put, Range (every option), DeleteRange, Compact.

use anyhow::Result;
use etcd_client::{DeleteOptions, GetOptions, PutOptions, SortOrder, SortTarget};

use super::{Ctx, assert_grpc_err, conformance, ekv, kv, kvs, rev};

/// Put: revisions, versions, prev_kv, binary and empty values; Get of a single key.
async fn kv_put_get(cx: Ctx) -> Result<()> {
    let mut c = cx.client().await?;

    // A fresh store is at revision 1 and empty.
    let r = c.get("foo", None).await?;
    let h = r.header().unwrap();
    assert_eq!(h.revision(), 1, "fresh store revision");
    assert_ne!(h.cluster_id(), 0, "cluster_id");
    assert_ne!(h.member_id(), 0, "member_id");
    assert!(h.raft_term() >= 1, "raft_term {}", h.raft_term());
    assert!(r.kvs().is_empty());
    assert_eq!((r.count(), r.more()), (0, false));

    let p = c.put("foo", "bar", None).await?;
    assert_eq!(rev(p.header()), 2);
    assert!(p.prev_key().is_none());

    let p = c
        .put("foo", "baz", Some(PutOptions::new().with_prev_key()))
        .await?;
    assert_eq!(rev(p.header()), 3);
    assert_eq!(p.prev_key().map(kv), Some(ekv("foo", "bar", 2, 2, 1, 0)));

    // prev_kv of a key that did not exist: none.
    let p = c
        .put("new", "v", Some(PutOptions::new().with_prev_key()))
        .await?;
    assert_eq!(rev(p.header()), 4);
    assert!(p.prev_key().is_none());

    let r = c.get("foo", None).await?;
    assert_eq!(rev(r.header()), 4);
    assert_eq!(kvs(r.kvs()), vec![ekv("foo", "baz", 2, 3, 2, 0)]);
    assert_eq!((r.count(), r.more()), (1, false));

    // Same value again still makes a new revision and version.
    let p = c.put("foo", "baz", None).await?;
    assert_eq!(rev(p.header()), 5);
    let r = c.get("foo", None).await?;
    assert_eq!(kvs(r.kvs()), vec![ekv("foo", "baz", 2, 5, 3, 0)]);

    // Empty values are values.
    c.put("empty", "", None).await?;
    let r = c.get("empty", None).await?;
    assert_eq!(kvs(r.kvs()), vec![ekv("empty", "", 6, 6, 1, 0)]);

    // Arbitrary bytes in keys and values round-trip.
    let key = vec![0xffu8, 0x00, 0x01, b'k'];
    let val = vec![0x00u8, 0xfe, 0xff];
    let p = c.put(key.clone(), val.clone(), None).await?;
    assert_eq!(rev(p.header()), 7);
    let r = c.get(key.clone(), None).await?;
    assert_eq!(r.kvs().len(), 1);
    assert_eq!(r.kvs()[0].key(), key.as_slice());
    assert_eq!(r.kvs()[0].value(), val.as_slice());
    assert_eq!(
        (
            r.kvs()[0].create_revision(),
            r.kvs()[0].mod_revision(),
            r.kvs()[0].version()
        ),
        (7, 7, 1)
    );

    // A read does not change the revision.
    let r = c.get("nothing", None).await?;
    assert_eq!(rev(r.header()), 7);
    Ok(())
}
conformance!(kv_put_get => kv_put_get_etcd, kv_put_get_kumo);

/// Writes the range fixture; returns nothing, the revisions are fixed:
///
/// | key  | value | create | mod | version |
/// |------|-------|--------|-----|---------|
/// | /r/a | v6    | 3      | 13  | 2       |
/// | /r/b | v2    | 5      | 5   | 1       |
/// | /r/c | v5    | 2      | 9   | 3       |
/// | /r/d | v7    | 4      | 12  | 4       |
///
/// plus `/q` (rev 6) before and `/s` (rev 7) after the prefix. Every sort target orders the
/// four `/r/` keys differently and without ties.
async fn range_fixture(c: &mut etcd_client::Client) -> Result<()> {
    let puts = [
        ("/r/c", "v3"), // 2
        ("/r/a", "v1"), // 3
        ("/r/d", "v0"), // 4
        ("/r/b", "v2"), // 5
        ("/q", "q"),    // 6
        ("/s", "s"),    // 7
        ("/r/c", "v4"), // 8
        ("/r/c", "v5"), // 9
        ("/r/d", "v9"), // 10
        ("/r/d", "v8"), // 11
        ("/r/d", "v7"), // 12
        ("/r/a", "v6"), // 13
    ];
    for (i, (k, v)) in puts.iter().enumerate() {
        let p = c.put(*k, *v, None).await?;
        assert_eq!(rev(p.header()), i as i64 + 2);
    }
    Ok(())
}

fn a() -> super::Kv {
    ekv("/r/a", "v6", 3, 13, 2, 0)
}
fn b() -> super::Kv {
    ekv("/r/b", "v2", 5, 5, 1, 0)
}
fn c_() -> super::Kv {
    ekv("/r/c", "v5", 2, 9, 3, 0)
}
fn d() -> super::Kv {
    ekv("/r/d", "v7", 4, 12, 4, 0)
}

/// Range: key/range_end/prefix/from-key/all, limit + more + count, count_only, keys_only,
/// historical revision, serializable.
async fn kv_range_basic(cx: Ctx) -> Result<()> {
    let mut c = cx.client().await?;
    range_fixture(&mut c).await?;

    let r = c.get("/r/a", None).await?;
    assert_eq!(kvs(r.kvs()), vec![a()]);
    assert_eq!((r.count(), r.more(), rev(r.header())), (1, false, 13));

    // [key, range_end)
    let r = c
        .get("/r/b", Some(GetOptions::new().with_range("/r/d")))
        .await?;
    assert_eq!(kvs(r.kvs()), vec![b(), c_()]);
    assert_eq!((r.count(), r.more()), (2, false));

    // prefix
    let r = c.get("/r/", Some(GetOptions::new().with_prefix())).await?;
    assert_eq!(kvs(r.kvs()), vec![a(), b(), c_(), d()]);
    assert_eq!((r.count(), r.more()), (4, false));

    // from key (range_end = "\0")
    let r = c
        .get("/r/c", Some(GetOptions::new().with_from_key()))
        .await?;
    assert_eq!(
        kvs(r.kvs()),
        vec![c_(), d(), ekv("/s", "s", 7, 7, 1, 0)],
        "from key"
    );
    assert_eq!(r.count(), 3);

    // all keys
    let r = c.get("", Some(GetOptions::new().with_all_keys())).await?;
    let keys: Vec<String> = kvs(r.kvs()).into_iter().map(|k| k.0).collect();
    assert_eq!(keys, ["/q", "/r/a", "/r/b", "/r/c", "/r/d", "/s"]);
    assert_eq!(r.count(), 6);

    // range_end before key: nothing.
    let r = c
        .get("/r/d", Some(GetOptions::new().with_range("/r/a")))
        .await?;
    assert!(r.kvs().is_empty());
    assert_eq!((r.count(), r.more()), (0, false));

    // limit: first N in key order, more, count of the whole range.
    let r = c
        .get("/r/", Some(GetOptions::new().with_prefix().with_limit(2)))
        .await?;
    assert_eq!(kvs(r.kvs()), vec![a(), b()]);
    assert_eq!((r.count(), r.more()), (4, true), "limit 2: (count, more)");
    let r = c
        .get("/r/", Some(GetOptions::new().with_prefix().with_limit(4)))
        .await?;
    assert_eq!(r.kvs().len(), 4);
    assert_eq!((r.count(), r.more()), (4, false), "limit 4: (count, more)");
    let r = c
        .get("/r/", Some(GetOptions::new().with_prefix().with_limit(10)))
        .await?;
    assert_eq!(r.kvs().len(), 4);
    assert_eq!((r.count(), r.more()), (4, false), "limit 10: (count, more)");

    // count_only: no kvs, the count, never `more`.
    let r = c
        .get(
            "/r/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await?;
    assert!(r.kvs().is_empty());
    assert_eq!((r.count(), r.more()), (4, false), "count_only");
    let r = c
        .get(
            "/r/",
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_count_only()
                    .with_limit(1),
            ),
        )
        .await?;
    assert!(r.kvs().is_empty());
    assert_eq!((r.count(), r.more()), (4, false), "count_only + limit 1");

    // keys_only: everything but the value.
    let r = c
        .get(
            "/r/",
            Some(GetOptions::new().with_prefix().with_keys_only()),
        )
        .await?;
    let strip = |mut k: super::Kv| {
        k.1 = String::new();
        k
    };
    assert_eq!(
        kvs(r.kvs()),
        vec![strip(a()), strip(b()), strip(c_()), strip(d())]
    );
    assert_eq!(r.count(), 4);

    // Historical reads; the header still carries the current revision.
    let r = c
        .get(
            "/r/",
            Some(GetOptions::new().with_prefix().with_revision(9)),
        )
        .await?;
    assert_eq!(
        kvs(r.kvs()),
        vec![
            ekv("/r/a", "v1", 3, 3, 1, 0),
            b(),
            c_(),
            ekv("/r/d", "v0", 4, 4, 1, 0)
        ],
        "prefix at revision 9"
    );
    assert_eq!((r.count(), rev(r.header())), (4, 13));
    let r = c
        .get(
            "/r/",
            Some(GetOptions::new().with_prefix().with_revision(2)),
        )
        .await?;
    assert_eq!(kvs(r.kvs()), vec![ekv("/r/c", "v3", 2, 2, 1, 0)]);
    assert_eq!(r.count(), 1);
    let r = c
        .get(
            "/r/",
            Some(GetOptions::new().with_prefix().with_revision(1)),
        )
        .await?;
    assert!(r.kvs().is_empty());
    assert_eq!(r.count(), 0);
    let r = c
        .get(
            "/r/",
            Some(GetOptions::new().with_prefix().with_revision(13)),
        )
        .await?;
    assert_eq!(kvs(r.kvs()), vec![a(), b(), c_(), d()]);
    let r = c
        .get(
            "/r/",
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_revision(5)
                    .with_limit(1),
            ),
        )
        .await?;
    assert_eq!(kvs(r.kvs()), vec![ekv("/r/a", "v1", 3, 3, 1, 0)]);
    assert_eq!((r.count(), r.more()), (4, true), "rev 5 limit 1");

    // serializable reads see the same data on a single member.
    let r = c
        .get(
            "/r/",
            Some(GetOptions::new().with_prefix().with_serializable()),
        )
        .await?;
    assert_eq!(kvs(r.kvs()), vec![a(), b(), c_(), d()]);
    assert_eq!((r.count(), rev(r.header())), (4, 13));
    Ok(())
}
conformance!(kv_range_basic => kv_range_basic_etcd, kv_range_basic_kumo);

/// Range: sort order and target (all five targets, both orders), sort + limit, and the
/// min/max mod/create revision filters (which apply after counting).
async fn kv_range_sort_filter(cx: Ctx) -> Result<()> {
    let mut c = cx.client().await?;
    range_fixture(&mut c).await?;

    let sorted = |t: SortTarget, o: SortOrder| GetOptions::new().with_prefix().with_sort(t, o);
    let cases = [
        (
            SortTarget::Key,
            SortOrder::Ascend,
            vec![a(), b(), c_(), d()],
        ),
        (
            SortTarget::Key,
            SortOrder::Descend,
            vec![d(), c_(), b(), a()],
        ),
        (
            SortTarget::Create,
            SortOrder::Ascend,
            vec![c_(), a(), d(), b()],
        ),
        (
            SortTarget::Create,
            SortOrder::Descend,
            vec![b(), d(), a(), c_()],
        ),
        (
            SortTarget::Mod,
            SortOrder::Ascend,
            vec![b(), c_(), d(), a()],
        ),
        (
            SortTarget::Mod,
            SortOrder::Descend,
            vec![a(), d(), c_(), b()],
        ),
        (
            SortTarget::Version,
            SortOrder::Ascend,
            vec![b(), a(), c_(), d()],
        ),
        (
            SortTarget::Version,
            SortOrder::Descend,
            vec![d(), c_(), a(), b()],
        ),
        (
            SortTarget::Value,
            SortOrder::Ascend,
            vec![b(), c_(), a(), d()],
        ),
        (
            SortTarget::Value,
            SortOrder::Descend,
            vec![d(), a(), c_(), b()],
        ),
        // A target other than KEY with order NONE sorts ascending.
        (
            SortTarget::Version,
            SortOrder::None,
            vec![b(), a(), c_(), d()],
        ),
        (SortTarget::Mod, SortOrder::None, vec![b(), c_(), d(), a()]),
        (SortTarget::Key, SortOrder::None, vec![a(), b(), c_(), d()]),
    ];
    for (t, o, want) in cases {
        let r = c.get("/r/", Some(sorted(t, o))).await?;
        assert_eq!(kvs(r.kvs()), want, "sort {t:?} {o:?}");
        assert_eq!((r.count(), r.more()), (4, false), "sort {t:?} {o:?}");
    }

    // Sort first, then limit.
    let r = c
        .get(
            "/r/",
            Some(sorted(SortTarget::Mod, SortOrder::Descend).with_limit(2)),
        )
        .await?;
    assert_eq!(kvs(r.kvs()), vec![a(), d()]);
    assert_eq!((r.count(), r.more()), (4, true), "mod desc limit 2");
    let r = c
        .get(
            "/r/",
            Some(sorted(SortTarget::Create, SortOrder::Ascend).with_limit(3)),
        )
        .await?;
    assert_eq!(kvs(r.kvs()), vec![c_(), a(), d()]);
    assert_eq!((r.count(), r.more()), (4, true), "create asc limit 3");
    let r = c
        .get(
            "/r/",
            Some(sorted(SortTarget::Key, SortOrder::Descend).with_limit(1)),
        )
        .await?;
    assert_eq!(kvs(r.kvs()), vec![d()]);
    assert_eq!((r.count(), r.more()), (4, true), "key desc limit 1");

    // Filters prune after the range is read: `count` is the count of the whole range.
    let filt = || GetOptions::new().with_prefix();
    let cases = [
        (
            "min_mod 9",
            filt().with_min_mod_revision(9),
            vec![a(), c_(), d()],
        ),
        (
            "max_mod 9",
            filt().with_max_mod_revision(9),
            vec![b(), c_()],
        ),
        (
            "min_create 4",
            filt().with_min_create_revision(4),
            vec![b(), d()],
        ),
        (
            "max_create 3",
            filt().with_max_create_revision(3),
            vec![a(), c_()],
        ),
        (
            "min_mod 6 + max_create 3",
            filt().with_min_mod_revision(6).with_max_create_revision(3),
            vec![a(), c_()],
        ),
        (
            "mod in [6, 12]",
            filt().with_min_mod_revision(6).with_max_mod_revision(12),
            vec![c_(), d()],
        ),
        ("min_mod 14", filt().with_min_mod_revision(14), vec![]),
    ];
    for (what, opts, want) in cases {
        let r = c.get("/r/", Some(opts)).await?;
        assert_eq!(kvs(r.kvs()), want, "{what}");
        assert_eq!((r.count(), r.more()), (4, false), "{what}: (count, more)");
    }
    // Filter + limit: limit applies to the filtered list; `more` if it was truncated.
    let r = c
        .get("/r/", Some(filt().with_min_mod_revision(9).with_limit(1)))
        .await?;
    assert_eq!(kvs(r.kvs()), vec![a()]);
    assert_eq!((r.count(), r.more()), (4, true), "min_mod 9 limit 1");
    let r = c
        .get("/r/", Some(filt().with_min_mod_revision(9).with_limit(3)))
        .await?;
    assert_eq!(kvs(r.kvs()), vec![a(), c_(), d()]);
    assert_eq!((r.count(), r.more()), (4, false), "min_mod 9 limit 3");
    // Filter + sort.
    let r = c
        .get(
            "/r/",
            Some(
                sorted(SortTarget::Mod, SortOrder::Descend)
                    .with_max_create_revision(4)
                    .with_limit(2),
            ),
        )
        .await?;
    assert_eq!(kvs(r.kvs()), vec![a(), d()]);
    assert_eq!(
        (r.count(), r.more()),
        (4, true),
        "max_create 4 mod desc limit 2"
    );
    Ok(())
}
conformance!(kv_range_sort_filter => kv_range_sort_filter_etcd, kv_range_sort_filter_kumo);

/// DeleteRange: single key, missing key (no new revision), range, prefix, all keys, prev_kv;
/// re-creating a deleted key starts a new generation.
async fn kv_delete(cx: Ctx) -> Result<()> {
    let mut c = cx.client().await?;
    for (i, k) in ["/d/a", "/d/b", "/d/c", "/d/d", "/e"].iter().enumerate() {
        let p = c.put(*k, format!("{}", i + 1), None).await?;
        assert_eq!(rev(p.header()), i as i64 + 2);
    }

    // Deleting nothing does not create a revision.
    let r = c
        .delete("/d/zzz", Some(DeleteOptions::new().with_prev_key()))
        .await?;
    assert_eq!((r.deleted(), rev(r.header())), (0, 6), "delete missing key");
    assert!(r.prev_kvs().is_empty());

    let r = c
        .delete("/d/a", Some(DeleteOptions::new().with_prev_key()))
        .await?;
    assert_eq!((r.deleted(), rev(r.header())), (1, 7));
    assert_eq!(kvs(r.prev_kvs()), vec![ekv("/d/a", "1", 2, 2, 1, 0)]);

    let r = c
        .delete(
            "/d/b",
            Some(DeleteOptions::new().with_range("/d/d").with_prev_key()),
        )
        .await?;
    assert_eq!((r.deleted(), rev(r.header())), (2, 8));
    assert_eq!(
        kvs(r.prev_kvs()),
        vec![ekv("/d/b", "2", 3, 3, 1, 0), ekv("/d/c", "3", 4, 4, 1, 0)]
    );

    let r = c.get("/d/", Some(GetOptions::new().with_prefix())).await?;
    assert_eq!(kvs(r.kvs()), vec![ekv("/d/d", "4", 5, 5, 1, 0)]);

    // Without prev_kv: no prev_kvs.
    let r = c
        .delete("/d/", Some(DeleteOptions::new().with_prefix()))
        .await?;
    assert_eq!((r.deleted(), rev(r.header())), (1, 9));
    assert!(r.prev_kvs().is_empty());
    let r = c.get("/d/", Some(GetOptions::new().with_prefix())).await?;
    assert_eq!((r.count(), rev(r.header())), (0, 9));

    // History is still readable.
    let r = c
        .get(
            "/d/",
            Some(GetOptions::new().with_prefix().with_revision(8)),
        )
        .await?;
    assert_eq!(kvs(r.kvs()), vec![ekv("/d/d", "4", 5, 5, 1, 0)]);
    let r = c
        .get(
            "/d/",
            Some(GetOptions::new().with_prefix().with_revision(6)),
        )
        .await?;
    assert_eq!(r.count(), 4);

    // Re-created key: new create_revision, version restarts at 1.
    let p = c
        .put("/d/a", "again", Some(PutOptions::new().with_prev_key()))
        .await?;
    assert_eq!(rev(p.header()), 10);
    assert!(p.prev_key().is_none(), "prev_kv of a deleted key");
    let r = c.get("/d/a", None).await?;
    assert_eq!(kvs(r.kvs()), vec![ekv("/d/a", "again", 10, 10, 1, 0)]);

    // from key
    let r = c
        .delete(
            "/d/b",
            Some(DeleteOptions::new().with_from_key().with_prev_key()),
        )
        .await?;
    assert_eq!((r.deleted(), rev(r.header())), (1, 11));
    assert_eq!(kvs(r.prev_kvs()), vec![ekv("/e", "5", 6, 6, 1, 0)]);

    // all keys
    let r = c
        .delete("", Some(DeleteOptions::new().with_all_keys()))
        .await?;
    assert_eq!((r.deleted(), rev(r.header())), (1, 12));
    let r = c.get("", Some(GetOptions::new().with_all_keys())).await?;
    assert_eq!((r.count(), rev(r.header())), (0, 12));
    Ok(())
}
conformance!(kv_delete => kv_delete_etcd, kv_delete_kumo);

/// Put options: ignore_value, ignore_lease, lease attach/detach, prev_kv with them, and their
/// argument errors.
async fn kv_put_options(cx: Ctx) -> Result<()> {
    let mut c = cx.client().await?;
    let p = c.put("/p/k", "v1", None).await?;
    assert_eq!(rev(p.header()), 2);

    // ignore_value keeps the value, bumps mod revision and version.
    let p = c
        .put(
            "/p/k",
            "",
            Some(PutOptions::new().with_ignore_value().with_prev_key()),
        )
        .await?;
    assert_eq!(rev(p.header()), 3);
    assert_eq!(p.prev_key().map(kv), Some(ekv("/p/k", "v1", 2, 2, 1, 0)));
    let r = c.get("/p/k", None).await?;
    assert_eq!(kvs(r.kvs()), vec![ekv("/p/k", "v1", 2, 3, 2, 0)]);

    assert_grpc_err(
        c.put("/p/k", "x", Some(PutOptions::new().with_ignore_value()))
            .await,
        "InvalidArgument",
        "etcdserver: value is provided",
    );
    assert_grpc_err(
        c.put(
            "/p/missing",
            "",
            Some(PutOptions::new().with_ignore_value()),
        )
        .await,
        "InvalidArgument",
        "etcdserver: key not found",
    );

    // Leases: attach, keep with ignore_lease, detach with a plain put.
    let l = c.lease_grant(600, None).await?;
    let lid = l.id();
    assert_eq!(rev(l.header()), 3, "lease grant makes no revision");
    let p = c
        .put("/p/l", "a", Some(PutOptions::new().with_lease(lid)))
        .await?;
    assert_eq!(rev(p.header()), 4);
    let r = c.get("/p/l", None).await?;
    assert_eq!(kvs(r.kvs()), vec![ekv("/p/l", "a", 4, 4, 1, lid)]);

    let p = c
        .put(
            "/p/l",
            "b",
            Some(PutOptions::new().with_ignore_lease().with_prev_key()),
        )
        .await?;
    assert_eq!(rev(p.header()), 5);
    assert_eq!(p.prev_key().map(kv), Some(ekv("/p/l", "a", 4, 4, 1, lid)));
    let r = c.get("/p/l", None).await?;
    assert_eq!(kvs(r.kvs()), vec![ekv("/p/l", "b", 4, 5, 2, lid)]);

    // Both ignores: a touch.
    let p = c
        .put(
            "/p/l",
            "",
            Some(PutOptions::new().with_ignore_lease().with_ignore_value()),
        )
        .await?;
    assert_eq!(rev(p.header()), 6);
    let r = c.get("/p/l", None).await?;
    assert_eq!(kvs(r.kvs()), vec![ekv("/p/l", "b", 4, 6, 3, lid)]);

    let p = c.put("/p/l", "c", None).await?;
    assert_eq!(rev(p.header()), 7);
    let r = c.get("/p/l", None).await?;
    assert_eq!(
        kvs(r.kvs()),
        vec![ekv("/p/l", "c", 4, 7, 4, 0)],
        "lease detached"
    );

    assert_grpc_err(
        c.put(
            "/p/l",
            "d",
            Some(PutOptions::new().with_ignore_lease().with_lease(lid)),
        )
        .await,
        "InvalidArgument",
        "etcdserver: lease is provided",
    );
    assert_grpc_err(
        c.put(
            "/p/missing",
            "v",
            Some(PutOptions::new().with_ignore_lease()),
        )
        .await,
        "InvalidArgument",
        "etcdserver: key not found",
    );
    // Failed puts made no revision.
    let r = c.get("/p/", Some(GetOptions::new().with_prefix())).await?;
    assert_eq!((r.count(), rev(r.header())), (2, 7));
    Ok(())
}
conformance!(kv_put_options => kv_put_options_etcd, kv_put_options_kumo);

/// Compact: reads below the compacted revision fail, at and above it work; compacting again
/// or into the future fails; compaction makes no revision.
async fn kv_compact(cx: Ctx) -> Result<()> {
    let mut c = cx.client().await?;
    for i in 1..=5 {
        c.put("/c/k", format!("v{i}"), None).await?; // revisions 2..=6
    }
    c.put("/c/other", "o", None).await?; // 7

    let r = c.compact(4, None).await?;
    assert_eq!(rev(r.header()), 7, "compaction makes no revision");

    assert_grpc_err(
        c.get("/c/k", Some(GetOptions::new().with_revision(3)))
            .await,
        "OutOfRange",
        "etcdserver: mvcc: required revision has been compacted",
    );
    assert_grpc_err(
        c.get("/c/k", Some(GetOptions::new().with_revision(1)))
            .await,
        "OutOfRange",
        "etcdserver: mvcc: required revision has been compacted",
    );
    // The compaction revision itself stays readable.
    let r = c
        .get("/c/k", Some(GetOptions::new().with_revision(4)))
        .await?;
    assert_eq!(kvs(r.kvs()), vec![ekv("/c/k", "v3", 2, 4, 3, 0)]);
    let r = c
        .get(
            "/c/",
            Some(GetOptions::new().with_prefix().with_revision(5)),
        )
        .await?;
    assert_eq!(kvs(r.kvs()), vec![ekv("/c/k", "v4", 2, 5, 4, 0)]);
    let r = c.get("/c/k", None).await?;
    assert_eq!(kvs(r.kvs()), vec![ekv("/c/k", "v5", 2, 6, 5, 0)]);

    assert_grpc_err(
        c.compact(4, None).await,
        "OutOfRange",
        "etcdserver: mvcc: required revision has been compacted",
    );
    assert_grpc_err(
        c.compact(2, None).await,
        "OutOfRange",
        "etcdserver: mvcc: required revision has been compacted",
    );
    assert_grpc_err(
        c.compact(8, None).await,
        "OutOfRange",
        "etcdserver: mvcc: required revision is a future revision",
    );

    // Physical compaction up to the current revision.
    let r = c
        .compact(
            7,
            Some(etcd_client::CompactionOptions::new().with_physical()),
        )
        .await?;
    assert_eq!(rev(r.header()), 7);
    assert_grpc_err(
        c.get("/c/k", Some(GetOptions::new().with_revision(6)))
            .await,
        "OutOfRange",
        "etcdserver: mvcc: required revision has been compacted",
    );
    let r = c
        .get(
            "/c/",
            Some(GetOptions::new().with_prefix().with_revision(7)),
        )
        .await?;
    assert_eq!(
        kvs(r.kvs()),
        vec![
            ekv("/c/k", "v5", 2, 6, 5, 0),
            ekv("/c/other", "o", 7, 7, 1, 0)
        ]
    );
    // Writes continue from where they were.
    let p = c.put("/c/k", "v6", None).await?;
    assert_eq!(rev(p.header()), 8);
    let r = c.get("/c/k", None).await?;
    assert_eq!(kvs(r.kvs()), vec![ekv("/c/k", "v6", 2, 8, 6, 0)]);
    Ok(())
}
conformance!(kv_compact => kv_compact_etcd, kv_compact_kumo);
