//! Durability: writers keep writing while `kumo store` is killed with SIGKILL again and again;
//! after every restart each acknowledged put is readable with the revision it was acknowledged
//! with.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, GetOptions};
use kumo_tests::{StoreKind, StoreProc};

const CYCLES: usize = 20;
const WRITERS: usize = 16;

/// key → (value, revision) of every acknowledged put.
type Acked = Arc<Mutex<HashMap<String, (String, i64)>>>;

async fn writer(
    endpoint: String,
    id: usize,
    cycle: usize,
    acked: Acked,
    stop: Arc<tokio::sync::Notify>,
) {
    let Ok(mut client) = Client::connect([endpoint.as_str()], None).await else {
        return;
    };
    let mut seq = 0u64;
    loop {
        let key = format!("durable/{cycle:02}/{id:02}/{seq:06}");
        let value = format!("v-{cycle}-{id}-{seq}");
        seq += 1;
        let put = client.put(key.clone(), value.clone(), None);
        tokio::select! {
            _ = stop.notified() => return,
            r = tokio::time::timeout(Duration::from_secs(5), put) => match r {
                Ok(Ok(resp)) => {
                    let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
                    acked.lock().expect("lock").insert(key, (value, rev));
                }
                // The store was killed under us: this put was never acknowledged.
                _ => return,
            },
        }
    }
}

async fn verify(endpoint: &str, acked: &Acked) {
    let mut client = Client::connect([endpoint], None)
        .await
        .expect("connect after restart");
    let resp = client
        .get("durable/", Some(GetOptions::new().with_prefix()))
        .await
        .expect("read back");
    let stored: HashMap<String, (String, i64)> = resp
        .kvs()
        .iter()
        .map(|kv| {
            (
                kv.key_str().expect("utf8 key").to_string(),
                (
                    kv.value_str().expect("utf8 value").to_string(),
                    kv.mod_revision(),
                ),
            )
        })
        .collect();
    let acked = acked.lock().expect("lock").clone();
    assert!(!acked.is_empty(), "writers acknowledged nothing");
    for (k, (v, rev)) in &acked {
        match stored.get(k) {
            Some((sv, srev)) => {
                assert_eq!(sv, v, "value of acknowledged key {k}");
                assert_eq!(srev, rev, "revision of acknowledged key {k}");
            }
            None => panic!("acknowledged put {k} (revision {rev}) lost after kill -9"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_puts_survive_kill_9() {
    kill_9_cycles(&[]).await;
}

/// The same with a durable checkpoint and a Raft log purge every 100 entries, so kills land
/// during checkpoints and purges too: what a checkpoint claims durable must be, or the purged
/// log takes acknowledged puts with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_puts_survive_kill_9_across_checkpoints() {
    kill_9_cycles(&["--snapshot-count", "100"]).await;
}

async fn kill_9_cycles(args: &[&str]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = StoreProc::start(StoreKind::Kumo, dir.path(), args).expect("start kumo store");
    let acked: Acked = Arc::default();
    for cycle in 0..CYCLES {
        let stop = Arc::new(tokio::sync::Notify::new());
        let tasks: Vec<_> = (0..WRITERS)
            .map(|id| {
                tokio::spawn(writer(
                    store.endpoint(),
                    id,
                    cycle,
                    acked.clone(),
                    stop.clone(),
                ))
            })
            .collect();
        // Let the writers get going, then kill the store while puts are in flight.
        tokio::time::sleep(Duration::from_millis(150 + 25 * (cycle as u64 % 8))).await;
        store.kill9();
        stop.notify_waiters();
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        store.restart().expect("restart after kill -9");
        verify(&store.endpoint(), &acked).await;
    }
    let n = acked.lock().expect("lock").len();
    assert!(
        n > CYCLES * WRITERS,
        "too few acknowledged writes to mean anything: {n}"
    );
}
