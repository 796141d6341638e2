//! Watch: several watchers per stream, history, prev_kv, filters, cancel, progress,
//! compacted start revisions.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use etcd_client::{
    DeleteOptions, PutOptions, Txn, TxnOp, WatchFilterType, WatchOptions, WatchStream,
};

use super::{Ctx, Ev, assert_no_watch, conformance, del_ev, ekv, evs, next_watch, put_ev, rev};

/// Reads watch responses until `want` events were collected in total, grouping them by
/// watch id; fails on any non-event response.
async fn collect_events(ws: &mut WatchStream, want: usize) -> Result<BTreeMap<i64, Vec<Ev>>> {
    let mut got: BTreeMap<i64, Vec<Ev>> = BTreeMap::new();
    let mut n = 0;
    while n < want {
        let r = next_watch(ws).await?;
        if r.created() || r.canceled() || r.compact_revision() != 0 || r.events().is_empty() {
            bail!("expected an event response, got {r:?} (events so far: {got:?})");
        }
        // Every event of one response belongs to the revision in the header or earlier.
        for e in r.events() {
            let m = e.kv().map(|k| k.mod_revision()).unwrap_or_default();
            assert!(m <= rev(r.header()), "event rev {m} > header rev");
        }
        n += r.events().len();
        got.entry(r.watch_id()).or_default().extend(evs(&r));
    }
    Ok(got)
}

/// Expects a `created` response; returns its watch id.
async fn expect_created(ws: &mut WatchStream, header_rev: i64) -> Result<i64> {
    let r = next_watch(ws).await?;
    assert!(r.created(), "expected created, got {r:?}");
    assert!(!r.canceled(), "created watch canceled: {r:?}");
    assert!(r.events().is_empty());
    assert_eq!(
        rev(r.header()),
        header_rev,
        "created response header revision"
    );
    Ok(r.watch_id())
}

/// Many watchers on one stream with overlapping keys, ids assigned 0, 1, 2 …, prev_kv on one,
/// delete events, cancel of one watcher while the others go on.
async fn watch_stream_multi(cx: Ctx) -> Result<()> {
    let mut c = cx.client().await?;
    let mut w = cx.client().await?;

    let mut ws = w.watch("/w/a", None).await?;
    assert_eq!(expect_created(&mut ws, 1).await?, 0);
    ws.watch("/w/", Some(WatchOptions::new().with_prefix()))
        .await?;
    assert_eq!(expect_created(&mut ws, 1).await?, 1);
    ws.watch("/w/b", Some(WatchOptions::new().with_prev_key()))
        .await?;
    assert_eq!(expect_created(&mut ws, 1).await?, 2);
    // [/w/a, /w/c)
    ws.watch("/w/a", Some(WatchOptions::new().with_range("/w/c")))
        .await?;
    assert_eq!(expect_created(&mut ws, 1).await?, 3);

    c.put("/w/a", "1", None).await?; // 2
    c.put("/w/b", "2", None).await?; // 3
    c.put("/w/b", "3", None).await?; // 4
    c.delete("/w/a", None).await?; // 5
    c.put("/w/c", "c", None).await?; // 6
    c.put("/zzz", "z", None).await?; // 7 (nobody watches it)

    let a2 = ekv("/w/a", "1", 2, 2, 1, 0);
    let b3 = ekv("/w/b", "2", 3, 3, 1, 0);
    let b4 = ekv("/w/b", "3", 3, 4, 2, 0);
    let c6 = ekv("/w/c", "c", 6, 6, 1, 0);
    let got = collect_events(&mut ws, 2 + 5 + 2 + 4).await?;
    let want: BTreeMap<i64, Vec<Ev>> = [
        (0, vec![put_ev(a2.clone()), del_ev("/w/a", 5)]),
        (
            1,
            vec![
                put_ev(a2.clone()),
                put_ev(b3.clone()),
                put_ev(b4.clone()),
                del_ev("/w/a", 5),
                put_ev(c6.clone()),
            ],
        ),
        (
            2,
            vec![put_ev(b3.clone()), ("PUT", b4.clone(), Some(b3.clone()))],
        ),
        (
            3,
            vec![
                put_ev(a2.clone()),
                put_ev(b3.clone()),
                put_ev(b4.clone()),
                del_ev("/w/a", 5),
            ],
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want, "events per watch id");

    // Cancel watcher 1: acknowledged, and it gets nothing more.
    ws.cancel(1).await?;
    let r = next_watch(&mut ws).await?;
    assert!(r.canceled(), "expected cancel ack, got {r:?}");
    assert_eq!(r.watch_id(), 1);
    assert!(r.events().is_empty());
    assert_eq!(r.compact_revision(), 0);

    c.put("/w/c", "c2", None).await?; // 8: only watcher 1 watched /w/c
    c.put("/w/b", "4", None).await?; // 9: watchers 2 and 3
    let got = collect_events(&mut ws, 2).await?;
    let b9 = ekv("/w/b", "4", 3, 9, 3, 0);
    let want: BTreeMap<i64, Vec<Ev>> = [
        (2, vec![("PUT", b9.clone(), Some(b4.clone()))]),
        (3, vec![put_ev(b9)]),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want, "after cancel");
    // Canceling an unknown (or already canceled) watch id is ignored: no response.
    ws.cancel(99).await?;
    ws.cancel(1).await?;
    assert_no_watch(&mut ws, Duration::from_millis(300)).await?;

    // A new watcher on the same stream gets the next id.
    ws.watch("/w/c", None).await?;
    assert_eq!(expect_created(&mut ws, 9).await?, 4);
    Ok(())
}
conformance!(watch_stream_multi => watch_stream_multi_etcd, watch_stream_multi_kumo);

/// start_revision replays history (including txn events in op order and deletes), with and
/// without prev_kv, then continues live.
async fn watch_history(cx: Ctx) -> Result<()> {
    let mut c = cx.client().await?;
    let mut w = cx.client().await?;
    c.put("/h/a", "1", None).await?; // 2
    c.put("/h/b", "1", None).await?; // 3
    c.delete("/h/a", None).await?; // 4
    c.txn(Txn::new().and_then([
        TxnOp::put("/h/c", "1", None),
        TxnOp::put("/h/a", "2", None),
        TxnOp::put("/h/b", "2", None),
    ]))
    .await?; // 5
    c.put("/other", "x", None).await?; // 6
    c.delete("/h/", Some(DeleteOptions::new().with_prefix()))
        .await?; // 7: a, b, c in key order

    let a2 = ekv("/h/a", "1", 2, 2, 1, 0);
    let b3 = ekv("/h/b", "1", 3, 3, 1, 0);
    let c5 = ekv("/h/c", "1", 5, 5, 1, 0);
    let a5 = ekv("/h/a", "2", 5, 5, 1, 0);
    let b5 = ekv("/h/b", "2", 3, 5, 2, 0);

    let mut ws = w
        .watch(
            "/h/",
            Some(WatchOptions::new().with_prefix().with_start_revision(2)),
        )
        .await?;
    assert_eq!(expect_created(&mut ws, 7).await?, 0);
    let got = collect_events(&mut ws, 9).await?;
    assert_eq!(
        got.get(&0).cloned().unwrap_or_default(),
        vec![
            put_ev(a2.clone()),
            put_ev(b3.clone()),
            del_ev("/h/a", 4),
            put_ev(c5.clone()),
            put_ev(a5.clone()),
            put_ev(b5.clone()),
            del_ev("/h/a", 7),
            del_ev("/h/b", 7),
            del_ev("/h/c", 7),
        ],
        "history from revision 2"
    );

    // prev_kv from history: the previous version at each event's revision.
    ws.watch(
        "/h/",
        Some(
            WatchOptions::new()
                .with_prefix()
                .with_start_revision(4)
                .with_prev_key(),
        ),
    )
    .await?;
    assert_eq!(expect_created(&mut ws, 7).await?, 1);
    let got = collect_events(&mut ws, 7).await?;
    assert_eq!(
        got.get(&1).cloned().unwrap_or_default(),
        vec![
            ("DELETE", ekv("/h/a", "", 0, 4, 0, 0), Some(a2.clone())),
            put_ev(c5.clone()),
            put_ev(a5.clone()),
            ("PUT", b5.clone(), Some(b3.clone())),
            ("DELETE", ekv("/h/a", "", 0, 7, 0, 0), Some(a5.clone())),
            ("DELETE", ekv("/h/b", "", 0, 7, 0, 0), Some(b5.clone())),
            ("DELETE", ekv("/h/c", "", 0, 7, 0, 0), Some(c5.clone())),
        ],
        "history from revision 4 with prev_kv"
    );

    // A single key from the next revision: nothing until it changes.
    ws.watch("/h/b", Some(WatchOptions::new().with_start_revision(8)))
        .await?;
    assert_eq!(expect_created(&mut ws, 7).await?, 2);
    // A key from a revision in the future: nothing until then.
    ws.watch("/h/z", Some(WatchOptions::new().with_start_revision(9)))
        .await?;
    assert_eq!(expect_created(&mut ws, 7).await?, 3);
    assert_no_watch(&mut ws, Duration::from_millis(300)).await?;

    // Live events continue on all of them.
    c.put("/h/b", "3", None).await?; // 8
    c.put("/h/z", "z8", None).await?; // 9: before watcher 3's start
    c.put("/h/z", "z10", None).await?; // 10
    let b8 = ekv("/h/b", "3", 8, 8, 1, 0);
    let z9 = ekv("/h/z", "z8", 9, 9, 1, 0);
    let z10 = ekv("/h/z", "z10", 9, 10, 2, 0);
    let got = collect_events(&mut ws, 3 + 3 + 1 + 2).await?;
    let want: BTreeMap<i64, Vec<Ev>> = [
        (
            0,
            vec![put_ev(b8.clone()), put_ev(z9.clone()), put_ev(z10.clone())],
        ),
        (
            1,
            vec![
                put_ev(b8.clone()),
                put_ev(z9.clone()),
                ("PUT", z10.clone(), Some(z9.clone())),
            ],
        ),
        (2, vec![put_ev(b8.clone())]),
        (3, vec![put_ev(z9), put_ev(z10)]),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want, "live after history");
    Ok(())
}
conformance!(watch_history => watch_history_etcd, watch_history_kumo);

/// NOPUT / NODELETE filters; a watcher whose events are all filtered gets no response.
async fn watch_filters(cx: Ctx) -> Result<()> {
    let mut c = cx.client().await?;
    let mut w = cx.client().await?;
    let mut ws = w
        .watch(
            "/f/",
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_filters([WatchFilterType::NoPut]),
            ),
        )
        .await?;
    assert_eq!(expect_created(&mut ws, 1).await?, 0);
    ws.watch(
        "/f/",
        Some(
            WatchOptions::new()
                .with_prefix()
                .with_filters([WatchFilterType::NoDelete])
                .with_prev_key(),
        ),
    )
    .await?;
    assert_eq!(expect_created(&mut ws, 1).await?, 1);
    ws.watch(
        "/f/",
        Some(
            WatchOptions::new()
                .with_prefix()
                .with_filters([WatchFilterType::NoDelete, WatchFilterType::NoPut]),
        ),
    )
    .await?;
    assert_eq!(expect_created(&mut ws, 1).await?, 2);

    c.put("/f/a", "1", None).await?; // 2
    c.delete("/f/a", None).await?; // 3
    c.put("/f/b", "1", None).await?; // 4
    c.put("/f/b", "2", None).await?; // 5
    // 6: one put and one delete in one revision
    c.txn(Txn::new().and_then([TxnOp::delete("/f/b", None), TxnOp::put("/f/c", "1", None)]))
        .await?;

    let b4 = ekv("/f/b", "1", 4, 4, 1, 0);
    let got = collect_events(&mut ws, 2 + 4).await?;
    let want: BTreeMap<i64, Vec<Ev>> = [
        (0, vec![del_ev("/f/a", 3), del_ev("/f/b", 6)]),
        (
            1,
            vec![
                put_ev(ekv("/f/a", "1", 2, 2, 1, 0)),
                put_ev(b4.clone()),
                ("PUT", ekv("/f/b", "2", 4, 5, 2, 0), Some(b4)),
                put_ev(ekv("/f/c", "1", 6, 6, 1, 0)),
            ],
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want);
    assert_no_watch(&mut ws, Duration::from_millis(300)).await?;

    // Filters apply to history too.
    ws.watch(
        "/f/",
        Some(
            WatchOptions::new()
                .with_prefix()
                .with_start_revision(1)
                .with_filters([WatchFilterType::NoPut]),
        ),
    )
    .await?;
    assert_eq!(expect_created(&mut ws, 6).await?, 3);
    let got = collect_events(&mut ws, 2).await?;
    assert_eq!(
        got.get(&3).cloned().unwrap_or_default(),
        vec![del_ev("/f/a", 3), del_ev("/f/b", 6)]
    );
    Ok(())
}
conformance!(watch_filters => watch_filters_etcd, watch_filters_kumo);

/// A start revision below the compaction revision: the watch is created, then canceled with
/// `compact_revision` set; from the compaction revision itself it works.
async fn watch_compacted(cx: Ctx) -> Result<()> {
    let mut c = cx.client().await?;
    let mut w = cx.client().await?;
    for i in 2..=6 {
        c.put("/k", format!("v{i}"), None).await?; // revisions 2..=6
    }
    c.compact(4, None).await?;

    let mut ws = w
        .watch("/k", Some(WatchOptions::new().with_start_revision(2)))
        .await?;
    let r = next_watch(&mut ws).await?;
    assert!(r.created(), "first response: created, got {r:?}");
    let id = r.watch_id();
    let r = next_watch(&mut ws).await?;
    assert!(r.canceled(), "expected canceled, got {r:?}");
    assert_eq!(
        (r.watch_id(), r.compact_revision(), r.events().len()),
        (id, 4, 0),
        "(watch_id, compact_revision, events)"
    );

    // Just below the compaction revision.
    ws.watch("/k", Some(WatchOptions::new().with_start_revision(3)))
        .await?;
    let r = next_watch(&mut ws).await?;
    assert!(r.created(), "{r:?}");
    let id = r.watch_id();
    let r = next_watch(&mut ws).await?;
    assert!(r.canceled(), "expected canceled, got {r:?}");
    assert_eq!((r.watch_id(), r.compact_revision()), (id, 4));

    // The compaction revision itself is still watchable.
    ws.watch("/k", Some(WatchOptions::new().with_start_revision(4)))
        .await?;
    let id = expect_created(&mut ws, 6).await?;
    let got = collect_events(&mut ws, 3).await?;
    assert_eq!(
        got.get(&id).cloned().unwrap_or_default(),
        vec![
            put_ev(ekv("/k", "v4", 2, 4, 3, 0)),
            put_ev(ekv("/k", "v5", 2, 5, 4, 0)),
            put_ev(ekv("/k", "v6", 2, 6, 5, 0))
        ]
    );
    Ok(())
}
conformance!(watch_compacted => watch_compacted_etcd, watch_compacted_kumo);

/// Progress requests: an empty response carrying the current revision.
async fn watch_progress_request(cx: Ctx) -> Result<()> {
    let mut c = cx.client().await?;
    let mut w = cx.client().await?;
    let mut ws = w
        .watch("/pr/", Some(WatchOptions::new().with_prefix()))
        .await?;
    assert_eq!(expect_created(&mut ws, 1).await?, 0);
    c.put("/pr/a", "1", None).await?; // 2
    let got = collect_events(&mut ws, 1).await?;
    assert_eq!(got[&0], vec![put_ev(ekv("/pr/a", "1", 2, 2, 1, 0))]);
    c.put("/elsewhere", "1", None).await?; // 3

    ws.request_progress().await?;
    let r = next_watch(&mut ws).await?;
    assert!(
        r.events().is_empty() && !r.created() && !r.canceled(),
        "progress response: {r:?}"
    );
    assert_eq!(rev(r.header()), 3, "progress revision");
    assert_eq!(r.watch_id(), -1, "progress response watch id");
    assert_eq!(r.compact_revision(), 0);

    c.put("/pr/b", "1", None).await?; // 4
    let got = collect_events(&mut ws, 1).await?;
    assert_eq!(got[&0], vec![put_ev(ekv("/pr/b", "1", 4, 4, 1, 0))]);
    Ok(())
}
conformance!(watch_progress_request => watch_progress_request_etcd, watch_progress_request_kumo);

/// progress_notify: idle watchers that asked for it get periodic empty responses with the
/// current revision; the others do not.
async fn watch_progress_notify(cx: Ctx) -> Result<()> {
    let mut c = cx.client().await?;
    let mut w = cx.client().await?;
    let mut ws = w
        .watch(
            "/pn/",
            Some(WatchOptions::new().with_prefix().with_progress_notify()),
        )
        .await?;
    assert_eq!(expect_created(&mut ws, 1).await?, 0);
    ws.watch("/pn/", Some(WatchOptions::new().with_prefix()))
        .await?;
    assert_eq!(expect_created(&mut ws, 1).await?, 1);
    c.put("/pn/a", "1", None).await?; // 2
    c.put("/elsewhere", "1", None).await?; // 3
    let got = collect_events(&mut ws, 2).await?;
    assert_eq!(got[&0], vec![put_ev(ekv("/pn/a", "1", 2, 2, 1, 0))]);
    assert_eq!(got[&1], got[&0]);

    // The store runs with a 1 s notify interval; wait for two notifications.
    let start = Instant::now();
    let mut seen = 0;
    while seen < 2 {
        let r = next_watch(&mut ws).await?;
        assert!(
            r.events().is_empty() && !r.created() && !r.canceled(),
            "expected a progress notification, got {r:?}"
        );
        assert_eq!(
            r.watch_id(),
            0,
            "progress notification for the right watcher"
        );
        assert_eq!(rev(r.header()), 3, "progress notification revision");
        seen += 1;
    }
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "notifications too slow: {:?}",
        start.elapsed()
    );
    Ok(())
}
conformance!(watch_progress_notify => watch_progress_notify_etcd, watch_progress_notify_kumo;
    args = ["--experimental-watch-progress-notify-interval", "1s"]);

/// Events of one revision (a txn) arrive in one response, in op order, with the same revision.
async fn watch_txn_events(cx: Ctx) -> Result<()> {
    let mut c = cx.client().await?;
    let mut w = cx.client().await?;
    c.put("/x/m", "m", None).await?; // 2
    let mut ws = w
        .watch(
            "/x/",
            Some(WatchOptions::new().with_prefix().with_prev_key()),
        )
        .await?;
    assert_eq!(expect_created(&mut ws, 2).await?, 0);
    c.txn(Txn::new().and_then([
        TxnOp::put("/x/z", "1", None),
        TxnOp::delete("/x/m", None),
        TxnOp::put("/x/a", "1", Some(PutOptions::new().with_prev_key())),
    ]))
    .await?; // 3
    let r = next_watch(&mut ws).await?;
    assert_eq!(rev(r.header()), 3);
    assert_eq!(
        evs(&r),
        vec![
            put_ev(ekv("/x/z", "1", 3, 3, 1, 0)),
            (
                "DELETE",
                ekv("/x/m", "", 0, 3, 0, 0),
                Some(ekv("/x/m", "m", 2, 2, 1, 0))
            ),
            put_ev(ekv("/x/a", "1", 3, 3, 1, 0)),
        ],
        "one response with the whole txn"
    );
    Ok(())
}
conformance!(watch_txn_events => watch_txn_events_etcd, watch_txn_events_kumo);
