//! Concurrent writers and watchers: every watcher sees every revision of its range exactly
//! once, in order, matching the history the writers produced.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, GetOptions, TxnOp, TxnOpResponse, TxnResponse,
    WatchOptions, WatchStream,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{Ctx, Ev, Kv, conformance, ev, evs, kvs, next_watch, rev};

const PREFIX: &str = "/cc/";
/// Written last; every watcher stops when it sees it.
const MARKER: &str = "/cc/~end";
const WRITERS: usize = 6;
const OPS_PER_WRITER: usize = 120;
const KEYS_PER_WRITER: usize = 5;

/// One mutation as the writer saw it: (is_put, key, value).
type Mutation = (bool, String, String);

/// Mutations of one revision, in the order the store applied them.
type RevMutations = (i64, Vec<Mutation>);

fn put_mutation(key: &str, value: &str) -> Mutation {
    (true, key.to_string(), value.to_string())
}

fn delete_mutations(prev: &[etcd_client::KeyValue]) -> Vec<Mutation> {
    prev.iter()
        .map(|kv| {
            (
                false,
                String::from_utf8_lossy(kv.key()).into_owned(),
                String::new(),
            )
        })
        .collect()
}

/// The mutations of the branch a txn took, from its responses and the ops that were sent.
fn txn_mutations(ops: &[(bool, String, String)], r: &TxnResponse) -> Vec<Mutation> {
    let mut out = Vec::new();
    for (op, resp) in ops.iter().zip(r.op_responses()) {
        match resp {
            TxnOpResponse::Put(_) => out.push(op.clone()),
            TxnOpResponse::Delete(d) => out.extend(delete_mutations(d.prev_kvs())),
            other => panic!("unexpected txn response {other:?}"),
        }
    }
    out
}

/// One writer: a seeded mix of puts, deletes (some of missing keys, which make no revision),
/// multi-op txns, compare-and-swap txns and range deletes, all on its own keys.
async fn writer(mut c: Client, w: usize, done: Arc<AtomicUsize>) -> Result<Vec<RevMutations>> {
    let mut rng = StdRng::seed_from_u64(0x6b756d6f + w as u64);
    let key = |i: usize| format!("{PREFIX}w{w}/k{i}");
    let mut out = Vec::new();
    for i in 0..OPS_PER_WRITER {
        let val = format!("w{w}-{i}");
        match rng.random_range(0..10) {
            0..=3 => {
                let k = key(rng.random_range(0..KEYS_PER_WRITER));
                let r = c.put(k.as_str(), val.as_str(), None).await?;
                out.push((rev(r.header()), vec![put_mutation(&k, &val)]));
            }
            4 | 5 => {
                let k = key(rng.random_range(0..KEYS_PER_WRITER));
                let r = c
                    .delete(k.as_str(), Some(DeleteOptions::new().with_prev_key()))
                    .await?;
                if r.deleted() > 0 {
                    out.push((rev(r.header()), delete_mutations(r.prev_kvs())));
                }
            }
            6 | 7 => {
                // put a, put b, delete c: three distinct keys in one revision.
                let mut ks: Vec<usize> = (0..KEYS_PER_WRITER).collect();
                for j in 0..3 {
                    let s = rng.random_range(j..KEYS_PER_WRITER);
                    ks.swap(j, s);
                }
                let ops = vec![
                    (true, key(ks[0]), format!("{val}a")),
                    (true, key(ks[1]), format!("{val}b")),
                    (false, key(ks[2]), String::new()),
                ];
                let t = etcd_client::Txn::new().and_then([
                    TxnOp::put(ops[0].1.as_str(), ops[0].2.as_str(), None),
                    TxnOp::put(ops[1].1.as_str(), ops[1].2.as_str(), None),
                    TxnOp::delete(
                        ops[2].1.as_str(),
                        Some(DeleteOptions::new().with_prev_key()),
                    ),
                ]);
                let r = c.txn(t).await?;
                out.push((rev(r.header()), txn_mutations(&ops, &r)));
            }
            8 => {
                // Compare-and-swap: delete the key if it exists, else create it.
                let k = key(rng.random_range(0..KEYS_PER_WRITER));
                let t = etcd_client::Txn::new()
                    .when([Compare::version(k.as_str(), CompareOp::Greater, 0)])
                    .and_then([TxnOp::delete(
                        k.as_str(),
                        Some(DeleteOptions::new().with_prev_key()),
                    )])
                    .or_else([TxnOp::put(k.as_str(), val.as_str(), None)]);
                let r = c.txn(t).await?;
                let ops = if r.succeeded() {
                    vec![(false, k.clone(), String::new())]
                } else {
                    vec![(true, k.clone(), val.clone())]
                };
                let m = txn_mutations(&ops, &r);
                ensure!(!m.is_empty(), "compare-and-swap on {k} changed nothing");
                out.push((rev(r.header()), m));
            }
            _ => {
                // Delete everything of this writer (key order).
                let r = c
                    .delete(
                        format!("{PREFIX}w{w}/"),
                        Some(DeleteOptions::new().with_prefix().with_prev_key()),
                    )
                    .await?;
                if r.deleted() > 0 {
                    out.push((rev(r.header()), delete_mutations(r.prev_kvs())));
                }
            }
        }
        done.fetch_add(1, Ordering::SeqCst);
    }
    Ok(out)
}

/// Replays the history and returns the expected event list (with prev_kv) and the final state.
fn replay(history: &BTreeMap<i64, Vec<Mutation>>) -> (Vec<(i64, Ev)>, BTreeMap<String, Kv>) {
    let mut state: BTreeMap<String, Kv> = BTreeMap::new();
    let mut events = Vec::new();
    for (&r, muts) in history {
        for (is_put, key, value) in muts {
            let prev = state.get(key).cloned();
            if *is_put {
                let (create, version) = match &prev {
                    Some(p) => (p.2, p.4 + 1),
                    None => (r, 1),
                };
                let kv: Kv = (key.clone(), value.clone(), create, r, version, 0);
                state.insert(key.clone(), kv.clone());
                events.push((r, ("PUT", kv, prev)));
            } else {
                state.remove(key);
                let kv: Kv = (key.clone(), String::new(), 0, r, 0, 0);
                events.push((r, ("DELETE", kv, prev)));
            }
        }
    }
    (events, state)
}

/// Reads `ws` (whose watchers are `ids`, some of which may already have received the events
/// in `early`) until every watcher has seen [`MARKER`]; returns the events before it, per
/// watch id.
async fn collect_until_marker(
    mut ws: WatchStream,
    ids: Vec<i64>,
    mut early: BTreeMap<i64, Vec<Ev>>,
) -> Result<BTreeMap<i64, Vec<Ev>>> {
    let mut out: BTreeMap<i64, Vec<Ev>> = ids
        .iter()
        .map(|i| (*i, early.remove(i).unwrap_or_default()))
        .collect();
    ensure!(early.is_empty(), "events for unknown watchers: {early:?}");
    let mut done: BTreeSet<i64> = BTreeSet::new();
    while done.len() < ids.len() {
        let r = tokio::time::timeout(Duration::from_secs(30), ws.message())
            .await
            .context("watcher starved for 30 s")?
            .context("watch stream error")?
            .context("watch stream closed")?;
        let id = r.watch_id();
        ensure!(
            !r.created() && !r.canceled() && r.compact_revision() == 0,
            "unexpected response on watch {id}: {r:?}"
        );
        let Some(evs) = out.get_mut(&id) else {
            bail!("response for unknown watch id {id}: {r:?}");
        };
        for e in r.events() {
            ensure!(
                !done.contains(&id),
                "watch {id}: event after the end marker: {e:?}"
            );
            let e = ev(e);
            if e.1.0 == MARKER {
                done.insert(id);
            } else {
                evs.push(e);
            }
        }
    }
    Ok(out)
}

/// One watcher: how it was created, what it must see.
struct Spec {
    /// (collector task index, watch id)
    key: (usize, i64),
    name: String,
    start: i64,
    prev_kv: bool,
}

fn opts(start: i64, prev_kv: bool, range: bool) -> WatchOptions {
    let mut o = if range {
        WatchOptions::new().with_range("/cc0") // '0' is '/' + 1: same keys as the prefix
    } else {
        WatchOptions::new().with_prefix()
    };
    if start > 0 {
        o = o.with_start_revision(start);
    }
    if prev_kv {
        o = o.with_prev_key();
    }
    o
}

fn check(spec: &Spec, got: &[Ev], all: &[(i64, Ev)]) -> Result<()> {
    let want: Vec<Ev> = all
        .iter()
        .filter(|(r, _)| *r >= spec.start)
        .map(|(_, e)| {
            let mut e = e.clone();
            if !spec.prev_kv {
                e.2 = None;
            }
            e
        })
        .collect();
    // Every revision exactly once, strictly increasing.
    let revs = |v: &[Ev]| {
        let mut r: Vec<i64> = v.iter().map(|e| e.1.3).collect();
        r.dedup();
        r
    };
    let (got_revs, want_revs) = (revs(got), revs(&want));
    if got_revs != want_revs {
        let gs: BTreeSet<i64> = got_revs.iter().copied().collect();
        let ws: BTreeSet<i64> = want_revs.iter().copied().collect();
        bail!(
            "{}: revisions differ: {} distinct runs got vs {} want; missing {:?}, unexpected {:?}, \
             out of order or repeated: {}",
            spec.name,
            got_revs.len(),
            want_revs.len(),
            ws.difference(&gs).collect::<Vec<_>>(),
            gs.difference(&ws).collect::<Vec<_>>(),
            got_revs.len() != gs.len()
        );
    }
    if got != want {
        let i = got.iter().zip(&want).take_while(|(g, w)| g == w).count();
        bail!(
            "{}: {} events, want {}; first difference at #{i}: got {:?}, want {:?}",
            spec.name,
            got.len(),
            want.len(),
            got.get(i),
            want.get(i)
        );
    }
    Ok(())
}

/// 6 writers × 120 mixed ops on a prefix while 10 watchers collect: 3 on one stream (live,
/// from history with prev_kv, and a range watch), 4 on separate clients (live), and 3 created
/// mid-way on separate clients starting from old revisions.
async fn watch_concurrent_exactly_once(cx: Ctx) -> Result<()> {
    let mut c = cx.client().await?;
    let mut history: BTreeMap<i64, Vec<Mutation>> = BTreeMap::new();
    // Old history the late watchers replay.
    for i in 0..20 {
        let (k, v) = (format!("{PREFIX}old/{i:02}"), format!("o{i}"));
        let r = c.put(k.as_str(), v.as_str(), None).await?;
        history.insert(rev(r.header()), vec![put_mutation(&k, &v)]);
    }
    let r0 = c.get("x", None).await?.header().unwrap().revision();
    assert_eq!(r0, 21);

    let mut specs: Vec<Spec> = Vec::new();
    let mut tasks = Vec::new();
    let mut clients = Vec::new(); // keep the watch clients alive until the end

    // Stream A: three watchers. The history of A1 may arrive before A2 is created.
    let mut wa = cx.client().await?;
    let a_specs = [
        ("A0 live", 0, false, false),
        ("A1 from rev 5, prev_kv", 5, true, false),
        ("A2 range, live", 0, false, true),
    ];
    let mut ws = wa.watch(PREFIX, Some(opts(0, false, false))).await?;
    for (_, start, prev, range) in &a_specs[1..] {
        ws.watch(PREFIX, Some(opts(*start, *prev, *range))).await?;
    }
    let mut ids = Vec::new();
    let mut early: BTreeMap<i64, Vec<Ev>> = BTreeMap::new();
    while ids.len() < a_specs.len() {
        let r = next_watch(&mut ws).await?;
        ensure!(!r.canceled() && r.compact_revision() == 0, "{r:?}");
        if r.created() {
            ensure!(r.events().is_empty(), "{r:?}");
            ids.push(r.watch_id());
        } else {
            ensure!(ids.contains(&r.watch_id()), "events before created: {r:?}");
            early.entry(r.watch_id()).or_default().extend(evs(&r));
        }
    }
    for ((name, start, prev, _), id) in a_specs.into_iter().zip(&ids) {
        specs.push(Spec {
            key: (tasks.len(), *id),
            name: name.into(),
            start: if start > 0 { start } else { r0 + 1 },
            prev_kv: prev,
        });
    }
    tasks.push((
        ids.clone(),
        tokio::spawn(collect_until_marker(ws, ids, early)),
    ));
    clients.push(wa);

    // Four live watchers, each on its own client.
    for i in 0..4 {
        let mut wc = cx.client().await?;
        let mut ws = wc.watch(PREFIX, Some(opts(0, i == 0, false))).await?;
        let r = next_watch(&mut ws).await?;
        ensure!(r.created());
        specs.push(Spec {
            key: (tasks.len(), r.watch_id()),
            name: format!(
                "B{i} live, own client{}",
                if i == 0 { ", prev_kv" } else { "" }
            ),
            start: r0 + 1,
            prev_kv: i == 0,
        });
        let id = r.watch_id();
        tasks.push((
            vec![id],
            tokio::spawn(collect_until_marker(ws, vec![id], BTreeMap::new())),
        ));
        clients.push(wc);
    }

    // Writers.
    let done = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let wc = cx.client().await?;
        writers.push(tokio::spawn(writer(wc, w, done.clone())));
    }

    // Late watchers, created while the writers run, replaying from old revisions.
    let mut waited = 0;
    while done.load(Ordering::SeqCst) < WRITERS * OPS_PER_WRITER / 3 && waited < 3000 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += 1;
    }
    for (i, (start, prev)) in [(2, true), (15, false), (r0 + 1, false)]
        .into_iter()
        .enumerate()
    {
        let mut wc = cx.client().await?;
        let mut ws = wc.watch(PREFIX, Some(opts(start, prev, false))).await?;
        let r = next_watch(&mut ws).await?;
        ensure!(r.created());
        specs.push(Spec {
            key: (tasks.len(), r.watch_id()),
            name: format!(
                "L{i} created mid-way from rev {start}{}",
                if prev { ", prev_kv" } else { "" }
            ),
            start,
            prev_kv: prev,
        });
        let id = r.watch_id();
        tasks.push((
            vec![id],
            tokio::spawn(collect_until_marker(ws, vec![id], BTreeMap::new())),
        ));
        clients.push(wc);
    }

    for wt in writers {
        let revs = tokio::time::timeout(Duration::from_secs(60), wt)
            .await
            .context("writer did not finish")?
            .context("writer panicked")??;
        for (r, muts) in revs {
            ensure!(!muts.is_empty());
            if let Some(prev) = history.insert(r, muts) {
                bail!("revision {r} reported by two writes (one was {prev:?})");
            }
        }
    }
    let end = c.put(MARKER, "end", None).await?;
    let r_end = rev(end.header()) - 1;
    // Every revision in (1, r_end] came from exactly one of our writes.
    let revs: Vec<i64> = history.keys().copied().collect();
    ensure!(
        revs == (2..=r_end).collect::<Vec<_>>(),
        "the writes' revisions are not exactly 2..={r_end}: {revs:?}"
    );
    ensure!(
        r_end > r0 + 400,
        "too few revisions written: {}",
        r_end - r0
    );

    let (all, state) = replay(&history);

    // The store's final state matches the replayed history.
    let g = c.get(PREFIX, Some(GetOptions::new().with_prefix())).await?;
    let mut got_state = kvs(g.kvs());
    got_state.retain(|k| k.0 != MARKER);
    ensure!(
        got_state == state.values().cloned().collect::<Vec<_>>(),
        "final state differs from the replayed history:\n got {got_state:?}\nwant {:?}",
        state.values().collect::<Vec<_>>()
    );

    let mut by_key: BTreeMap<(usize, i64), Vec<Ev>> = BTreeMap::new();
    for (i, (ids, t)) in tasks.into_iter().enumerate() {
        let got = tokio::time::timeout(Duration::from_secs(40), t)
            .await
            .with_context(|| format!("watchers {ids:?} did not see the end marker"))?
            .context("watcher panicked")??;
        by_key.extend(got.into_iter().map(|(id, evs)| ((i, id), evs)));
    }
    ensure!(
        by_key.len() == specs.len(),
        "{} watchers collected",
        by_key.len()
    );
    let mut failures = Vec::new();
    for spec in &specs {
        let got = by_key.get(&spec.key).context("no events for a watcher")?;
        if let Err(e) = check(spec, got, &all) {
            failures.push(format!("{e:#}"));
        }
    }
    ensure!(
        failures.is_empty(),
        "{} of {} watchers wrong:\n{}",
        failures.len(),
        specs.len(),
        failures.join("\n")
    );
    drop(clients);
    Ok(())
}
conformance!(watch_concurrent_exactly_once => watch_concurrent_exactly_once_etcd, watch_concurrent_exactly_once_kumo);
