//! Txn: every compare target × result, branches, op responses, nested txns.

use anyhow::Result;
use etcd_client::{
    Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
    TxnResponse,
};

use super::{Ctx, conformance, ekv, kv, kvs, rev};

/// A short description of one op response, for comparing whole txn responses.
#[derive(Debug, PartialEq)]
enum Op {
    /// Put: header revision, prev_kv.
    Put(i64, Option<super::Kv>),
    /// Range: kvs, count, more.
    Get(Vec<super::Kv>, i64, bool),
    /// DeleteRange: deleted, prev_kvs.
    Del(i64, Vec<super::Kv>),
    /// Nested txn: succeeded, its ops.
    Txn(bool, Vec<Op>),
}

fn ops(t: &TxnResponse) -> Vec<Op> {
    t.op_responses()
        .iter()
        .map(|r| match r {
            TxnOpResponse::Put(p) => Op::Put(rev(p.header()), p.prev_key().map(kv)),
            TxnOpResponse::Get(g) => Op::Get(kvs(g.kvs()), g.count(), g.more()),
            TxnOpResponse::Delete(d) => Op::Del(d.deleted(), kvs(d.prev_kvs())),
            TxnOpResponse::Txn(t) => Op::Txn(t.succeeded(), ops(t)),
        })
        .collect()
}

/// Compares on version, create, mod, value and lease with =, >, <, != — against existing and
/// missing keys and ranges — each deciding between a read of `/t/a` and a read of `/t/b`.
async fn txn_compare(cx: Ctx) -> Result<()> {
    let mut c = cx.client().await?;
    let lease = c.lease_grant(600, None).await?.id();
    c.put("/t/a", "1", None).await?; // 2
    c.put("/t/b", "2", Some(PutOptions::new().with_lease(lease)))
        .await?; // 3
    c.put("/t/a", "3", None).await?; // 4
    // /t/a: value 3, create 2, mod 4, version 2, no lease
    // /t/b: value 2, create 3, mod 3, version 1, lease

    use CompareOp::{Equal as EQ, Greater as GT, Less as LT, NotEqual as NE};
    let cases: Vec<(&str, Vec<Compare>, bool)> = vec![
        ("version = 2", vec![Compare::version("/t/a", EQ, 2)], true),
        ("version = 1", vec![Compare::version("/t/a", EQ, 1)], false),
        ("version > 1", vec![Compare::version("/t/a", GT, 1)], true),
        ("version > 2", vec![Compare::version("/t/a", GT, 2)], false),
        ("version < 3", vec![Compare::version("/t/a", LT, 3)], true),
        ("version < 2", vec![Compare::version("/t/a", LT, 2)], false),
        ("version != 1", vec![Compare::version("/t/a", NE, 1)], true),
        ("version != 2", vec![Compare::version("/t/a", NE, 2)], false),
        (
            "create = 2",
            vec![Compare::create_revision("/t/a", EQ, 2)],
            true,
        ),
        (
            "create = 4",
            vec![Compare::create_revision("/t/a", EQ, 4)],
            false,
        ),
        (
            "create > 1",
            vec![Compare::create_revision("/t/a", GT, 1)],
            true,
        ),
        (
            "create > 2",
            vec![Compare::create_revision("/t/a", GT, 2)],
            false,
        ),
        (
            "create < 3",
            vec![Compare::create_revision("/t/a", LT, 3)],
            true,
        ),
        (
            "create < 2",
            vec![Compare::create_revision("/t/a", LT, 2)],
            false,
        ),
        (
            "create != 3",
            vec![Compare::create_revision("/t/a", NE, 3)],
            true,
        ),
        (
            "create != 2",
            vec![Compare::create_revision("/t/a", NE, 2)],
            false,
        ),
        ("mod = 4", vec![Compare::mod_revision("/t/a", EQ, 4)], true),
        ("mod = 2", vec![Compare::mod_revision("/t/a", EQ, 2)], false),
        ("mod > 3", vec![Compare::mod_revision("/t/a", GT, 3)], true),
        ("mod > 4", vec![Compare::mod_revision("/t/a", GT, 4)], false),
        ("mod < 5", vec![Compare::mod_revision("/t/a", LT, 5)], true),
        ("mod < 4", vec![Compare::mod_revision("/t/a", LT, 4)], false),
        ("mod != 2", vec![Compare::mod_revision("/t/a", NE, 2)], true),
        (
            "mod != 4",
            vec![Compare::mod_revision("/t/a", NE, 4)],
            false,
        ),
        ("value = 3", vec![Compare::value("/t/a", EQ, "3")], true),
        ("value = 1", vec![Compare::value("/t/a", EQ, "1")], false),
        ("value > 2", vec![Compare::value("/t/a", GT, "2")], true),
        ("value > 3", vec![Compare::value("/t/a", GT, "3")], false),
        (
            "value > 10 (bytes)",
            vec![Compare::value("/t/a", GT, "10")],
            true,
        ),
        ("value < 4", vec![Compare::value("/t/a", LT, "4")], true),
        ("value < 3", vec![Compare::value("/t/a", LT, "3")], false),
        (
            "value < 30 (bytes)",
            vec![Compare::value("/t/a", LT, "30")],
            true,
        ),
        ("value != 1", vec![Compare::value("/t/a", NE, "1")], true),
        ("value != 3", vec![Compare::value("/t/a", NE, "3")], false),
        ("lease = L", vec![Compare::lease("/t/b", EQ, lease)], true),
        ("lease = 0", vec![Compare::lease("/t/b", EQ, 0)], false),
        ("no lease = 0", vec![Compare::lease("/t/a", EQ, 0)], true),
        ("lease > 0", vec![Compare::lease("/t/b", GT, 0)], true),
        ("lease > L", vec![Compare::lease("/t/b", GT, lease)], false),
        (
            "lease < L+1",
            vec![Compare::lease("/t/b", LT, lease + 1)],
            true,
        ),
        ("lease < L", vec![Compare::lease("/t/b", LT, lease)], false),
        ("lease != 0", vec![Compare::lease("/t/b", NE, 0)], true),
        ("lease != L", vec![Compare::lease("/t/b", NE, lease)], false),
        // A missing key compares as all-zero …
        (
            "missing version = 0",
            vec![Compare::version("/t/x", EQ, 0)],
            true,
        ),
        (
            "missing version > 0",
            vec![Compare::version("/t/x", GT, 0)],
            false,
        ),
        (
            "missing create = 0",
            vec![Compare::create_revision("/t/x", EQ, 0)],
            true,
        ),
        (
            "missing mod = 0",
            vec![Compare::mod_revision("/t/x", EQ, 0)],
            true,
        ),
        (
            "missing mod < 1",
            vec![Compare::mod_revision("/t/x", LT, 1)],
            true,
        ),
        (
            "missing lease = 0",
            vec![Compare::lease("/t/x", EQ, 0)],
            true,
        ),
        // … except that a value compare on a missing key always fails.
        (
            "missing value = ''",
            vec![Compare::value("/t/x", EQ, "")],
            false,
        ),
        (
            "missing value != x",
            vec![Compare::value("/t/x", NE, "x")],
            false,
        ),
        (
            "missing value < x",
            vec![Compare::value("/t/x", LT, "x")],
            false,
        ),
        // Range compares hold only if they hold for every key in the range.
        (
            "prefix version > 0",
            vec![Compare::version("/t/", GT, 0).with_prefix()],
            true,
        ),
        (
            "prefix version = 1",
            vec![Compare::version("/t/", EQ, 1).with_prefix()],
            false,
        ),
        (
            "prefix mod > 2",
            vec![Compare::mod_revision("/t/", GT, 2).with_prefix()],
            true,
        ),
        (
            "range [a, b) version = 2",
            vec![Compare::version("/t/a", EQ, 2).with_range("/t/b")],
            true,
        ),
        (
            "empty range version = 0",
            vec![Compare::version("/t/m", EQ, 0).with_range("/t/n")],
            true,
        ),
        (
            "empty range value = ''",
            vec![Compare::value("/t/m", EQ, "").with_range("/t/n")],
            false,
        ),
        // Several compares: all must hold.
        (
            "AND true",
            vec![
                Compare::version("/t/a", EQ, 2),
                Compare::value("/t/b", EQ, "2"),
                Compare::lease("/t/b", EQ, lease),
            ],
            true,
        ),
        (
            "AND false",
            vec![
                Compare::version("/t/a", EQ, 2),
                Compare::value("/t/b", EQ, "1"),
            ],
            false,
        ),
    ];
    let ea = ekv("/t/a", "3", 2, 4, 2, 0);
    let eb = ekv("/t/b", "2", 3, 3, 1, lease);
    for (what, cmps, want) in cases {
        let t = Txn::new()
            .when(cmps)
            .and_then([TxnOp::get("/t/a", None)])
            .or_else([TxnOp::get("/t/b", None)]);
        let r = c.txn(t).await?;
        assert_eq!(r.succeeded(), want, "{what}: succeeded");
        let want_ops = if want {
            vec![Op::Get(vec![ea.clone()], 1, false)]
        } else {
            vec![Op::Get(vec![eb.clone()], 1, false)]
        };
        assert_eq!(ops(&r), want_ops, "{what}: responses");
        assert_eq!(
            rev(r.header()),
            4,
            "{what}: a read-only txn makes no revision"
        );
    }
    Ok(())
}
conformance!(txn_compare => txn_compare_etcd, txn_compare_kumo);

/// Txn with writes: one revision for all writes, op responses in order (puts, deletes and
/// reads that see the txn's own earlier writes), failure branches, empty txns.
async fn txn_ops(cx: Ctx) -> Result<()> {
    let mut c = cx.client().await?;
    c.put("/t/a", "1", None).await?; // 2
    c.put("/t/b", "2", None).await?; // 3
    c.put("/t/a", "3", None).await?; // 4

    let t = Txn::new()
        .when([Compare::version("/t/a", CompareOp::Equal, 2)])
        .and_then([
            TxnOp::put("/t/c", "x", None),
            TxnOp::put("/t/a", "4", Some(PutOptions::new().with_prev_key())),
            TxnOp::delete("/t/b", Some(DeleteOptions::new().with_prev_key())),
            TxnOp::get("/t/", Some(GetOptions::new().with_prefix())),
            TxnOp::get(
                "/t/",
                Some(GetOptions::new().with_prefix().with_revision(4)),
            ),
        ])
        .or_else([TxnOp::put("/t/failed", "x", None)]);
    let r = c.txn(t).await?;
    assert!(r.succeeded());
    assert_eq!(rev(r.header()), 5);
    assert_eq!(
        ops(&r),
        vec![
            Op::Put(5, None),
            Op::Put(5, Some(ekv("/t/a", "3", 2, 4, 2, 0))),
            Op::Del(1, vec![ekv("/t/b", "2", 3, 3, 1, 0)]),
            Op::Get(
                vec![ekv("/t/a", "4", 2, 5, 3, 0), ekv("/t/c", "x", 5, 5, 1, 0)],
                2,
                false
            ),
            Op::Get(
                vec![ekv("/t/a", "3", 2, 4, 2, 0), ekv("/t/b", "2", 3, 3, 1, 0)],
                2,
                false
            ),
        ]
    );
    let g = c.get("/t/", Some(GetOptions::new().with_prefix())).await?;
    assert_eq!(
        kvs(g.kvs()),
        vec![ekv("/t/a", "4", 2, 5, 3, 0), ekv("/t/c", "x", 5, 5, 1, 0)]
    );

    // Failing compare, empty failure branch: no revision, no responses.
    let r = c
        .txn(
            Txn::new()
                .when([Compare::value("/t/a", CompareOp::Equal, "nope")])
                .and_then([TxnOp::put("/t/z", "z", None)]),
        )
        .await?;
    assert!(!r.succeeded());
    assert_eq!(rev(r.header()), 5);
    assert!(ops(&r).is_empty());

    // Failing compare, writes in the failure branch.
    let r = c
        .txn(
            Txn::new()
                .when([Compare::value("/t/a", CompareOp::Equal, "nope")])
                .and_then([TxnOp::put("/t/z", "z", None)])
                .or_else([
                    TxnOp::put("/t/d", "d", None),
                    TxnOp::delete("/t/", Some(DeleteOptions::new().with_range("/t/b"))),
                ]),
        )
        .await?;
    assert!(!r.succeeded());
    assert_eq!(rev(r.header()), 6);
    assert_eq!(ops(&r), vec![Op::Put(6, None), Op::Del(1, vec![])]);

    // Writes whose deletes hit nothing make no revision.
    let r = c
        .txn(Txn::new().and_then([TxnOp::delete("/t/none", None)]))
        .await?;
    assert!(r.succeeded());
    assert_eq!(rev(r.header()), 6);
    assert_eq!(ops(&r), vec![Op::Del(0, vec![])]);

    // An empty txn succeeds and does nothing.
    let r = c.txn(Txn::new()).await?;
    assert!(r.succeeded());
    assert_eq!(rev(r.header()), 6);
    assert!(ops(&r).is_empty());

    // A txn deleting a range deletes in key order within one revision.
    c.put("/t/e", "e", None).await?; // 7
    let r = c
        .txn(Txn::new().and_then([
            TxnOp::delete(
                "/t/c",
                Some(DeleteOptions::new().with_range("/t/f").with_prev_key()),
            ),
            TxnOp::put("/t/f", "f", None),
        ]))
        .await?;
    assert_eq!(rev(r.header()), 8);
    assert_eq!(
        ops(&r),
        vec![
            Op::Del(
                3,
                vec![
                    ekv("/t/c", "x", 5, 5, 1, 0),
                    ekv("/t/d", "d", 6, 6, 1, 0),
                    ekv("/t/e", "e", 7, 7, 1, 0)
                ]
            ),
            Op::Put(8, None),
        ]
    );
    let g = c.get("/t/", Some(GetOptions::new().with_prefix())).await?;
    assert_eq!(kvs(g.kvs()), vec![ekv("/t/f", "f", 8, 8, 1, 0)]);
    Ok(())
}
conformance!(txn_ops => txn_ops_etcd, txn_ops_kumo);

/// Nested txns: inner compares are evaluated against the state before the outer txn's writes,
/// inner writes share the outer revision, responses nest.
async fn txn_nested(cx: Ctx) -> Result<()> {
    let mut c = cx.client().await?;
    c.put("/n/a", "1", None).await?; // 2

    let inner_then = Txn::new()
        .when([Compare::value("/n/a", CompareOp::Equal, "1")])
        .and_then([
            TxnOp::put("/n/b", "inner-then", None),
            TxnOp::get("/n/", Some(GetOptions::new().with_prefix())),
        ])
        .or_else([TxnOp::put("/n/c", "inner-else", None)]);
    // /n/x is written by the outer txn before the inner one runs, but the inner compare sees
    // the pre-txn state, where /n/x does not exist.
    let inner_else = Txn::new()
        .when([Compare::version("/n/x", CompareOp::Greater, 0)])
        .and_then([TxnOp::put("/n/d", "inner-then", None)])
        .or_else([TxnOp::put("/n/e", "inner-else", None)]);
    let t = Txn::new()
        .when([Compare::version("/n/a", CompareOp::Equal, 1)])
        .and_then([
            TxnOp::put("/n/x", "outer", None),
            TxnOp::txn(inner_then),
            TxnOp::txn(inner_else),
        ])
        .or_else([TxnOp::put("/n/outer-else", "x", None)]);
    let r = c.txn(t).await?;
    assert!(r.succeeded());
    assert_eq!(rev(r.header()), 3);
    assert_eq!(
        ops(&r),
        vec![
            Op::Put(3, None),
            Op::Txn(
                true,
                vec![
                    Op::Put(3, None),
                    Op::Get(
                        vec![
                            ekv("/n/a", "1", 2, 2, 1, 0),
                            ekv("/n/b", "inner-then", 3, 3, 1, 0),
                            ekv("/n/x", "outer", 3, 3, 1, 0),
                        ],
                        3,
                        false
                    ),
                ]
            ),
            Op::Txn(false, vec![Op::Put(3, None)]),
        ]
    );
    let g = c.get("/n/", Some(GetOptions::new().with_prefix())).await?;
    assert_eq!(
        kvs(g.kvs()),
        vec![
            ekv("/n/a", "1", 2, 2, 1, 0),
            ekv("/n/b", "inner-then", 3, 3, 1, 0),
            ekv("/n/e", "inner-else", 3, 3, 1, 0),
            ekv("/n/x", "outer", 3, 3, 1, 0),
        ]
    );

    // Nested in the failure branch, two levels deep.
    let t = Txn::new()
        .when([Compare::version("/n/a", CompareOp::Equal, 99)])
        .or_else([TxnOp::txn(
            Txn::new().and_then([TxnOp::txn(
                Txn::new()
                    .when([Compare::mod_revision("/n/x", CompareOp::Equal, 3)])
                    .and_then([TxnOp::delete(
                        "/n/",
                        Some(DeleteOptions::new().with_range("/n/c")),
                    )]),
            )]),
        )]);
    let r = c.txn(t).await?;
    assert!(!r.succeeded());
    assert_eq!(rev(r.header()), 4);
    assert_eq!(
        ops(&r),
        vec![Op::Txn(true, vec![Op::Txn(true, vec![Op::Del(2, vec![])])])]
    );
    let g = c
        .get(
            "/n/",
            Some(GetOptions::new().with_prefix().with_keys_only()),
        )
        .await?;
    let keys: Vec<String> = kvs(g.kvs()).into_iter().map(|k| k.0).collect();
    assert_eq!(keys, ["/n/e", "/n/x"]);
    Ok(())
}
conformance!(txn_nested => txn_nested_etcd, txn_nested_kumo);
