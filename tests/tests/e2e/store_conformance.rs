//! etcd v3 API conformance, written once and run against both real etcd 3.4 and `kumo store`.
//!
//! Every scenario is one `async fn NAME(cx: Ctx) -> Result<()>` body; [`conformance!`] turns it
//! into two `#[tokio::test]`s, `NAME_etcd` and `NAME_kumo`, each of which starts a fresh store
//! (its own temp dir and ports) and runs the body under a hard deadline. The assertions encode
//! what real etcd does (they all pass against `StoreKind::Etcd`), so a failing `_kumo` test is a
//! compatibility gap in kumo.
//!
//! Run one side only: `cargo test -p kumo-tests --test e2e store_conformance -- --skip _kumo`
//! (or `--skip _etcd`).

#![allow(clippy::unwrap_used)]

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result};
use etcd_client::{Client, ConnectOptions, Event, EventType, KeyValue, WatchResponse, WatchStream};
use kumo_tests::{StoreKind, StoreProc};

mod cluster;
mod concurrent;
mod errors;
mod kv;
mod lease;
mod maintenance;
mod txn;
mod watch;

/// Hard deadline for one scenario (store start-up excluded).
const TEST_TIMEOUT: Duration = Duration::from_secs(90);
/// Deadline for one expected watch / keep-alive message.
const MSG_TIMEOUT: Duration = Duration::from_secs(10);

/// What a scenario body gets: how to reach the store under test and how it was started.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub kind: StoreKind,
    pub endpoint: String,
    /// `--name` the store was started with.
    pub name: String,
    /// `http://127.0.0.1:PEER` it advertises as its peer URL.
    pub peer_url: String,
}

impl Ctx {
    /// A new client (its own HTTP/2 connection) to the store under test.
    pub async fn client(&self) -> Result<Client> {
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5));
        Client::connect([self.endpoint.as_str()], Some(opts))
            .await
            .with_context(|| format!("connect to {} at {}", self.kind, self.endpoint))
    }
}

/// Starts a fresh store of `kind` (with `args` appended to its command line), runs `body`
/// against it under [`TEST_TIMEOUT`], and panics with the error (and the store's log tail) if
/// the body fails.
pub async fn run<F, Fut>(kind: StoreKind, args: &[&str], body: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let proc = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        StoreProc::start(kind, &path, &args)
    })
    .await
    .expect("join store start")
    .unwrap_or_else(|e| panic!("start {kind}: {e:#}"));
    let cx = Ctx {
        kind,
        endpoint: proc.endpoint(),
        name: proc.name.clone(),
        peer_url: format!("http://127.0.0.1:{}", proc.peer_port),
    };
    let outcome = tokio::time::timeout(TEST_TIMEOUT, body(cx)).await;
    let log_tail = || {
        let log = std::fs::read_to_string(proc.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(25)..].join("\n")
    };
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("[{kind}] {e:#}\n--- {kind} log tail ---\n{}", log_tail()),
        Err(_) => panic!(
            "[{kind}] scenario did not finish within {TEST_TIMEOUT:?}\n--- {kind} log tail ---\n{}",
            log_tail()
        ),
    }
    drop(proc);
    drop(dir);
}

/// `conformance!(body => body_etcd, body_kumo);` defines both tests. Extra store arguments:
/// `…; args = ["--quota-backend-bytes", "…"]);` for both, or
/// `…; etcd_args = [..]; kumo_args = [..]);` where the flag names differ.
macro_rules! conformance {
    ($body:ident => $etcd:ident, $kumo:ident) => {
        conformance!($body => $etcd, $kumo; etcd_args = []; kumo_args = []);
    };
    ($body:ident => $etcd:ident, $kumo:ident; args = [$($arg:expr),* $(,)?]) => {
        conformance!($body => $etcd, $kumo; etcd_args = [$($arg),*]; kumo_args = [$($arg),*]);
    };
    ($body:ident => $etcd:ident, $kumo:ident;
        etcd_args = [$($earg:expr),* $(,)?]; kumo_args = [$($karg:expr),* $(,)?]) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $etcd() {
            $crate::store_conformance::run(kumo_tests::StoreKind::Etcd, &[$($earg),*], $body).await
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $kumo() {
            $crate::store_conformance::run(kumo_tests::StoreKind::Kumo, &[$($karg),*], $body).await
        }
    };
}
pub(crate) use conformance;

// ---------------------------------------------------------------------------------------------
// assertion helpers

/// Asserts that `r` failed with gRPC status `code` (tonic `Code` name, e.g. `"OutOfRange"`)
/// and exactly the message `msg`.
#[track_caller]
pub fn assert_grpc_err<T: Debug>(r: Result<T, etcd_client::Error>, code: &str, msg: &str) {
    match r {
        Err(etcd_client::Error::GRpcStatus(s)) => {
            let got = (format!("{:?}", s.code()), s.message().to_string());
            assert_eq!(
                got,
                (code.to_string(), msg.to_string()),
                "gRPC error (code, message)"
            );
        }
        other => panic!("expected gRPC error {code} {msg:?}, got {other:?}"),
    }
}

/// The (code, message) of a gRPC error, for looser checks.
#[track_caller]
pub fn grpc_err<T: Debug>(r: Result<T, etcd_client::Error>) -> (String, String) {
    match r {
        Err(etcd_client::Error::GRpcStatus(s)) => {
            (format!("{:?}", s.code()), s.message().to_string())
        }
        other => panic!("expected a gRPC error, got {other:?}"),
    }
}

/// A key-value as a comparable tuple: (key, value, create_revision, mod_revision, version, lease).
pub type Kv = (String, String, i64, i64, i64, i64);

pub fn kv(k: &KeyValue) -> Kv {
    (
        String::from_utf8_lossy(k.key()).into_owned(),
        String::from_utf8_lossy(k.value()).into_owned(),
        k.create_revision(),
        k.mod_revision(),
        k.version(),
        k.lease(),
    )
}

pub fn kvs(ks: &[KeyValue]) -> Vec<Kv> {
    ks.iter().map(kv).collect()
}

/// Builds an expected [`Kv`].
pub fn ekv(key: &str, value: &str, create: i64, modr: i64, version: i64, lease: i64) -> Kv {
    (key.into(), value.into(), create, modr, version, lease)
}

/// A watch event as a comparable tuple: (type, kv, prev_kv).
pub type Ev = (&'static str, Kv, Option<Kv>);

pub fn ev(e: &Event) -> Ev {
    let t = match e.event_type() {
        EventType::Put => "PUT",
        EventType::Delete => "DELETE",
    };
    (
        t,
        kv(e.kv().expect("event without kv")),
        e.prev_kv().map(kv),
    )
}

pub fn evs(r: &WatchResponse) -> Vec<Ev> {
    r.events().iter().map(ev).collect()
}

/// Expected PUT event.
pub fn put_ev(kv: Kv) -> Ev {
    ("PUT", kv, None)
}

/// Expected DELETE event for `key` deleted at `rev` (etcd sends only key + mod_revision).
pub fn del_ev(key: &str, rev: i64) -> Ev {
    ("DELETE", ekv(key, "", 0, rev, 0, 0), None)
}

/// The next watch response, failing after [`MSG_TIMEOUT`].
pub async fn next_watch(ws: &mut WatchStream) -> Result<WatchResponse> {
    tokio::time::timeout(MSG_TIMEOUT, ws.message())
        .await
        .context("timed out waiting for a watch response")?
        .context("watch stream error")?
        .context("watch stream closed by the server")
}

/// Asserts that no watch response arrives within `quiet`.
pub async fn assert_no_watch(ws: &mut WatchStream, quiet: Duration) -> Result<()> {
    match tokio::time::timeout(quiet, ws.message()).await {
        Err(_) => Ok(()),
        Ok(r) => anyhow::bail!("expected no watch response, got {r:?}"),
    }
}

/// Header revision of any response with a header.
pub fn rev(h: Option<&etcd_client::ResponseHeader>) -> i64 {
    h.expect("response without header").revision()
}
