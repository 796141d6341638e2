//! `federation-bench`: the issue-6 federation benchmark. Only 127.0.0.1 is contacted.
//!
//! A host (`kumo store` + `kumo apiserver`), `kumo federation` against it, and `--members`
//! member clusters, each a real `kumo store` + `kumo apiserver` pair of its own (child
//! processes of the same binary; no controllers or nodes: the federation only needs their
//! API). Members run with mimalloc told to give freed memory back at once
//! (`MIMALLOC_PURGE_DELAY=0`, `MIMALLOC_ARENA_EAGER_COMMIT=0`), which takes an idle pair from
//! ~90 MiB to ~20 MiB PSS, and at `nice 10` (`--member-nice`): real members run on machines of
//! their own, here they share 2 cores with the control plane. The host and the controller run
//! with the defaults. Then:
//!
//! 1. **registration**: `kumo join` of every member, one after the other; the time from
//!    starting the command to the Cluster's Ready=True in the host (a host watch), and the
//!    command's own run time.
//! 2. **create**: `--fds` FederatedDeployments (10 namespaces), each selecting one region of
//!    `--region-size` members by a clusterSelector and Divided over them, created at
//!    `--create-rate` per second. Per object: create request sent → its Works in the host (a
//!    host watch) and → its Deployment in every selected member (one watch per member).
//! 3. **update**: `--updates` of those objects get a new image, at `--update-rate` per
//!    second: request sent → the new image in every selected member (the propagation
//!    latency of a change), and → in every Work.
//! 4. **decision**: `kumo_federation_decision_duration_seconds` (wall clock) and
//!    `kumo_federation_decision_cpu_seconds` (the thread's CPU time) from the controller's
//!    `/metrics`: placement and replica division of one object.
//! 5. **failover**: one member's apiserver is killed; after `--toleration` its share of every
//!    object it held must run in the others (the Deployments' replicas in the surviving
//!    members of its region sum to the total again); then it is started again and, after
//!    `--failback-stable`, the declared distribution returns.
//!
//! Memory: PSS of every process (shared binary text counted once) and the machine's
//! MemAvailable before and after; CPU seconds per group.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use futures::StreamExt as _;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use kumo_tests::{
    ApiServerProc, Lk, StoreKind, free_port, kumo_bin, parse_exposition, percentile, pss_mib,
};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "federation-bench",
    about = "kumo federation at scale: registration, decision, propagation, failover (issue 6)"
)]
struct Args {
    /// Member clusters [default 100; --quick 10].
    #[arg(long)]
    members: Option<usize>,
    /// FederatedDeployments [default 1000; --quick 100].
    #[arg(long)]
    fds: Option<usize>,
    /// Members per region (each object selects one region).
    #[arg(long, default_value_t = 10)]
    region_size: usize,
    /// Replicas of each object (divided over its region).
    #[arg(long, default_value_t = 10)]
    replicas: u32,
    /// Creates per second (paced).
    #[arg(long, default_value_t = 20.0)]
    create_rate: f64,
    /// Objects updated (new image) after the creates [default 200; --quick 50].
    #[arg(long)]
    updates: Option<usize>,
    /// Updates per second (paced).
    #[arg(long, default_value_t = 10.0)]
    update_rate: f64,
    /// Member health probe period of the controller, seconds.
    #[arg(long, default_value_t = 1)]
    health_interval: u64,
    /// tolerationSeconds of the controller (failover after this long NotReady).
    #[arg(long, default_value_t = 5)]
    toleration: u64,
    /// Failback stable period of the controller, seconds.
    #[arg(long, default_value_t = 5)]
    failback_stable: u64,
    /// Controller workers per queue.
    #[arg(long, default_value_t = 16)]
    concurrent_syncs: usize,
    /// Members started at once.
    #[arg(long, default_value_t = 8)]
    start_concurrency: usize,
    /// Member processes' allocator settings: `lean` (mimalloc gives freed memory back at
    /// once) or `default`.
    #[arg(long, default_value = "lean")]
    member_malloc: String,
    /// CPU priority (`nice`) of the member processes: in a real federation the members run
    /// on machines of their own, here they share the 2 cores with the control plane.
    #[arg(long, default_value_t = 10)]
    member_nice: i32,
    /// Small run (10 members, 100 objects).
    #[arg(long)]
    quick: bool,
    /// Working directory (default: a temporary one, removed at the end).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Write the results table (Markdown) here too.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn ms(d: Duration) -> String {
    let v = d.as_secs_f64() * 1000.0;
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// `p50 / p90 / p99 / max` in ms of a set of latencies, with the count.
fn summary(mut v: Vec<Duration>) -> String {
    v.sort();
    if v.is_empty() {
        return "no samples".into();
    }
    format!(
        "{} / {} / **{}** / {} (n={})",
        ms(percentile(&v, 0.5)),
        ms(percentile(&v, 0.9)),
        ms(percentile(&v, 0.99)),
        ms(v[v.len() - 1]),
        v.len()
    )
}

/// utime + stime of a process, seconds.
fn cpu_seconds(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.split_whitespace().collect::<Vec<_>>();
            let u: f64 = rest.get(11)?.parse().ok()?;
            let k: f64 = rest.get(12)?.parse().ok()?;
            Some((u + k) / 100.0)
        })
        .unwrap_or(0.0)
}

fn mem_available_mib() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            let l = s.lines().find(|l| l.starts_with("MemAvailable:"))?;
            l.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .unwrap_or(0.0)
        / 1024.0
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Environment of the member processes: mimalloc returns freed memory at once.
const MEMBER_ENV: [(&str, &str); 2] = [
    ("MIMALLOC_PURGE_DELAY", "0"),
    ("MIMALLOC_ARENA_EAGER_COMMIT", "0"),
];

/// Starts `kumo ARGS` logging to `log`, with `env`, at CPU priority `nice` (0: as this
/// process; `nice(1)` execs, so the child's pid is kumo's).
fn spawn_logged(args: &[String], log: &Path, env: &[(&str, &str)], nice: i32) -> Result<Child> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let mut cmd = if nice == 0 {
        Command::new(kumo_bin())
    } else {
        let mut c = Command::new("nice");
        c.args(["-n", &nice.to_string()]).arg(kumo_bin());
        c
    };
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(f.try_clone()?)
        .stderr(f);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn()
        .with_context(|| format!("spawn kumo {}", args[0]))
}

fn stop(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// One member cluster: a `kumo store` and a `kumo apiserver` of its own.
struct Member {
    name: String,
    dir: PathBuf,
    store_port: u16,
    api_port: u16,
    kubeconfig: PathBuf,
    store: Option<Child>,
    apiserver: Option<Child>,
    /// Run with [`MEMBER_ENV`].
    lean: bool,
    /// CPU priority (`nice`) of its processes.
    nice: i32,
}

impl Member {
    fn env(&self) -> &'static [(&'static str, &'static str)] {
        if self.lean { &MEMBER_ENV } else { &[] }
    }

    fn spawn_store(&mut self) -> Result<()> {
        let url = format!("http://127.0.0.1:{}", self.store_port);
        let args = [
            "store",
            "--name",
            &self.name,
            "--data-dir",
            &self.dir.join("store").display().to_string(),
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{}", free_port()),
            "--listen-metrics-urls",
            &format!("http://127.0.0.1:{}", free_port()),
        ];
        self.store = Some(self.spawn(&args, "store.log")?);
        Ok(())
    }

    /// `kumo ARGS` with this member's environment and priority, logging to `log` in its dir.
    fn spawn(&self, args: &[&str], log: &str) -> Result<Child> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        spawn_logged(&args, &self.dir.join(log), self.env(), self.nice)
    }

    fn spawn_apiserver(&mut self) -> Result<()> {
        let args = [
            "apiserver",
            "--etcd-servers",
            &format!("http://127.0.0.1:{}", self.store_port),
            "--bind-address",
            "127.0.0.1",
            "--secure-port",
            &self.api_port.to_string(),
            "--cert-dir",
            &self.dir.join("pki").display().to_string(),
            "--admin-kubeconfig",
            &self.kubeconfig.display().to_string(),
            "--log-level",
            "warn",
        ];
        self.apiserver = Some(self.spawn(&args, "apiserver.log")?);
        Ok(())
    }

    fn pids(&self) -> Vec<u32> {
        self.store
            .iter()
            .chain(self.apiserver.iter())
            .map(Child::id)
            .collect()
    }

    fn log_tail(&self) -> String {
        let mut out = String::new();
        for f in ["store.log", "apiserver.log"] {
            let body = std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
            let tail: Vec<&str> = body.lines().rev().take(15).collect();
            out.push_str(&format!(
                "--- {} {f}\n{}\n",
                self.name,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
        out
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        stop(&mut self.apiserver);
        stop(&mut self.store);
    }
}

async fn client_from(kubeconfig: &Path) -> Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let mut cfg = kube::config::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    cfg.connect_timeout = Some(Duration::from_secs(3));
    cfg.read_timeout = Some(Duration::from_secs(60));
    Ok(kube::Client::try_from(cfg)?)
}

/// Starts a member and waits until its apiserver answers `/readyz` with the admin kubeconfig.
async fn start_member(
    dir: &Path,
    name: &str,
    lean: bool,
    nice: i32,
) -> Result<(Member, kube::Client)> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mdir = dir.join(name);
        let _ = std::fs::remove_dir_all(&mdir);
        std::fs::create_dir_all(&mdir)?;
        let mut m = Member {
            name: name.to_string(),
            kubeconfig: mdir.join("admin.kubeconfig"),
            dir: mdir,
            store_port: free_port(),
            api_port: free_port(),
            store: None,
            apiserver: None,
            lean,
            nice,
        };
        m.spawn_store()?;
        m.spawn_apiserver()?;
        match wait_member_ready(&mut m, Duration::from_secs(120)).await {
            Ok(c) => return Ok((m, c)),
            Err(e) if attempt < 3 && m.log_tail().contains("ddress already in use") => {
                eprintln!("{name}: port taken, retrying ({e:#})");
            }
            Err(e) => bail!("{name} did not start: {e:#}\n{}", m.log_tail()),
        }
    }
}

async fn wait_member_ready(m: &mut Member, timeout: Duration) -> Result<kube::Client> {
    let deadline = Instant::now() + timeout;
    loop {
        for c in [&mut m.store, &mut m.apiserver].into_iter().flatten() {
            if let Ok(Some(st)) = c.try_wait() {
                bail!("a process exited with {st}");
            }
        }
        if m.kubeconfig.exists()
            && let Ok(client) = client_from(&m.kubeconfig).await
        {
            let req = http::Request::get("/readyz").body(Vec::new())?;
            if client
                .request_text(req)
                .await
                .is_ok_and(|b| b.trim() == "ok")
            {
                return Ok(client);
            }
        }
        if Instant::now() > deadline {
            bail!("not ready after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn resource(kind: &str, plural: &str) -> kube::api::ApiResource {
    kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk("federation.kumo.io", "v1alpha1", kind),
        plural,
    )
}

fn cluster_ready(c: &DynamicObject) -> Option<bool> {
    c.data
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|x| x["type"] == "Ready")
        .map(|x| x["status"] == "True")
}

/// Readiness transitions of every Cluster as the host's watch shows them.
type ClusterLog = Arc<Mutex<HashMap<String, Vec<(Instant, bool)>>>>;

fn watch_clusters(host: &kube::Client, log: ClusterLog) {
    let api: Api<DynamicObject> = Api::all_with(host.clone(), &resource("Cluster", "clusters"));
    tokio::spawn(async move {
        let mut s = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(ev) = s.next().await {
            let (Ok(watcher::Event::Apply(c)) | Ok(watcher::Event::InitApply(c))) = ev else {
                continue;
            };
            let (Some(name), Some(ready)) = (c.metadata.name.clone(), cluster_ready(&c)) else {
                continue;
            };
            let mut g = log.lk();
            let v = g.entry(name).or_default();
            if v.last().is_none_or(|(_, r)| *r != ready) {
                v.push((Instant::now(), ready));
            }
        }
    });
}

async fn wait_cluster(
    log: &ClusterLog,
    name: &str,
    ready: bool,
    timeout: Duration,
) -> Result<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(t) = log
            .lk()
            .get(name)
            .and_then(|v| v.last().filter(|(_, r)| *r == ready).map(|(t, _)| *t))
        {
            return Ok(t);
        }
        if Instant::now() > deadline {
            bail!("cluster {name} not Ready={ready} after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What the bench waits for per federated object.
#[derive(Default)]
struct Expect {
    /// Image the object's Deployments should have.
    image: String,
    /// When the change was sent.
    sent: Option<Instant>,
    /// Selected members not yet showing the image / Works not yet showing it.
    members_left: HashSet<usize>,
    works_left: HashSet<usize>,
    members_done: Option<Instant>,
    works_done: Option<Instant>,
}

/// Per object (`ns/name`): what is expected and what each member shows.
#[derive(Default)]
struct Tracker {
    expect: HashMap<String, Expect>,
    /// (object, member) → (image, replicas) last seen.
    seen: HashMap<(String, usize), (String, i64)>,
    /// (object, member) → image in that member's Work.
    work_seen: HashMap<(String, usize), String>,
}

type Shared = Arc<Mutex<Tracker>>;

impl Tracker {
    fn expect(&mut self, obj: &str, image: &str, members: &[usize], sent: Instant) {
        let members_left: HashSet<usize> = members
            .iter()
            .copied()
            .filter(|m| {
                self.seen
                    .get(&(obj.to_string(), *m))
                    .is_none_or(|(i, _)| i != image)
            })
            .collect();
        let works_left: HashSet<usize> = members
            .iter()
            .copied()
            .filter(|m| {
                self.work_seen
                    .get(&(obj.to_string(), *m))
                    .is_none_or(|i| i != image)
            })
            .collect();
        let now = Instant::now();
        self.expect.insert(
            obj.to_string(),
            Expect {
                image: image.to_string(),
                sent: Some(sent),
                members_done: members_left.is_empty().then_some(now),
                works_done: works_left.is_empty().then_some(now),
                members_left,
                works_left,
            },
        );
    }

    fn member_event(&mut self, obj: String, member: usize, image: String, replicas: i64) {
        if let Some(e) = self.expect.get_mut(&obj)
            && e.image == image
            && e.members_left.remove(&member)
            && e.members_left.is_empty()
        {
            e.members_done = Some(Instant::now());
        }
        self.seen.insert((obj, member), (image, replicas));
    }

    fn work_event(&mut self, obj: String, member: usize, image: String) {
        if let Some(e) = self.expect.get_mut(&obj)
            && e.image == image
            && e.works_left.remove(&member)
            && e.works_left.is_empty()
        {
            e.works_done = Some(Instant::now());
        }
        self.work_seen.insert((obj, member), image);
    }

    /// (works latency, members latency) of the objects in `objs` that completed.
    fn latencies(&self, objs: &[String]) -> (Vec<Duration>, Vec<Duration>, usize) {
        let (mut w, mut m, mut missing) = (Vec::new(), Vec::new(), 0);
        for o in objs {
            let Some(e) = self.expect.get(o) else {
                missing += 1;
                continue;
            };
            let Some(sent) = e.sent else { continue };
            match e.members_done {
                Some(t) => m.push(t.saturating_duration_since(sent)),
                None => missing += 1,
            }
            if let Some(t) = e.works_done {
                w.push(t.saturating_duration_since(sent));
            }
        }
        (w, m, missing)
    }

    fn pending(&self, objs: &[String]) -> usize {
        objs.iter()
            .filter(|o| {
                self.expect
                    .get(*o)
                    .is_none_or(|e| e.members_done.is_none() || e.works_done.is_none())
            })
            .count()
    }
}

fn image_of(d: &Value) -> String {
    d.pointer("/spec/template/spec/containers/0/image")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// Watches the propagated Deployments of member `idx`.
fn watch_member(idx: usize, client: kube::Client, tracker: Shared) {
    let api: Api<DynamicObject> = Api::all_with(
        client,
        &kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("apps", "v1", "Deployment"),
            "deployments",
        ),
    );
    tokio::spawn(async move {
        let cfg = watcher::Config::default().labels("federation.kumo.io/owner");
        let mut s = watcher(api, cfg).default_backoff().boxed();
        while let Some(ev) = s.next().await {
            let (Ok(watcher::Event::Apply(d)) | Ok(watcher::Event::InitApply(d))) = ev else {
                continue;
            };
            let obj = format!(
                "{}/{}",
                d.metadata.namespace.clone().unwrap_or_default(),
                d.metadata.name.clone().unwrap_or_default()
            );
            let replicas = d
                .data
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            tracker
                .lk()
                .member_event(obj, idx, image_of(&d.data), replicas);
        }
    });
}

/// Watches the Works in the host: which image each member's Work carries.
fn watch_works(host: &kube::Client, member_index: HashMap<String, usize>, tracker: Shared) {
    let api: Api<DynamicObject> = Api::all_with(host.clone(), &resource("Work", "works"));
    tokio::spawn(async move {
        let mut s = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(ev) = s.next().await {
            let (Ok(watcher::Event::Apply(w)) | Ok(watcher::Event::InitApply(w))) = ev else {
                continue;
            };
            let cluster = w
                .data
                .pointer("/spec/cluster")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let Some(idx) = member_index.get(cluster).copied() else {
                continue;
            };
            let Some(d) = w
                .data
                .pointer("/spec/workload/manifests")
                .and_then(Value::as_array)
                .and_then(|m| m.last())
            else {
                continue;
            };
            let obj = format!(
                "{}/{}",
                d.pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
                d.pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            );
            tracker.lk().work_event(obj, idx, image_of(d));
        }
    });
}

fn fd_manifest(ns: &str, name: &str, region: &str, replicas: u32, image: &str) -> Value {
    json!({
        "apiVersion": "federation.kumo.io/v1alpha1",
        "kind": "FederatedDeployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "template": {
                "metadata": {"name": name, "labels": {"app": name}},
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": {"app": name}},
                    "template": {
                        "metadata": {"labels": {"app": name}},
                        "spec": {"containers": [{"name": "app", "image": image,
                            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]},
                    },
                },
            },
            "placement": {"clusterSelector": {"matchLabels": {"topology.kubernetes.io/region": region}}},
            "replicaScheduling": {"type": "Divided", "divisionPreference": "Weighted"},
        },
    })
}

/// Paced requests: `n` of them at `rate` per second, at most 64 in flight; each gets its
/// send time. Returns the errors.
async fn paced<F, Fut>(n: usize, rate: f64, f: F) -> Vec<String>
where
    F: Fn(usize, Instant) -> Fut,
    Fut: std::future::Future<Output = Result<()>> + Send + 'static,
{
    let sem = Arc::new(Semaphore::new(64));
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for i in 0..n {
        let at = start + Duration::from_secs_f64(i as f64 / rate.max(0.001));
        tokio::time::sleep_until(at).await;
        let Ok(permit) = sem.clone().acquire_owned().await else {
            break;
        };
        let fut = f(i, Instant::now());
        tasks.push(tokio::spawn(async move {
            let r = fut.await;
            drop(permit);
            r
        }));
    }
    let mut errors = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(format!("{e:#}")),
            Err(e) => errors.push(e.to_string()),
        }
    }
    errors
}

/// When `cond` first holds (checked every 10 ms), or `None` after `timeout`.
async fn poll_until(timeout: Duration, cond: impl Fn() -> bool) -> Option<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return Some(Instant::now());
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_done(tracker: &Shared, objs: &[String], timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        let left = tracker.lk().pending(objs);
        if left == 0 || Instant::now() > deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The controller's metrics, parsed.
fn scrape(port: u16) -> Result<Vec<kumo_tests::Sample>> {
    let r = kumo_tests::http_get(
        &format!("http://127.0.0.1:{port}/metrics"),
        Duration::from_secs(10),
    )?;
    parse_exposition(&r.body)
}

/// `histogram_quantile(q, name{labels})` (linear within the bucket, like Prometheus), and
/// the mean; in seconds.
fn histogram(
    samples: &[kumo_tests::Sample],
    name: &str,
    labels: &[(&str, &str)],
    q: f64,
) -> (f64, f64, f64) {
    let matches = |s: &kumo_tests::Sample| {
        labels
            .iter()
            .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
    };
    let mut buckets: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.name == format!("{name}_bucket") && matches(s))
        .filter_map(|s| {
            let le = s.labels.get("le")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, s.value))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let sum: f64 = samples
        .iter()
        .filter(|s| s.name == format!("{name}_sum") && matches(s))
        .map(|s| s.value)
        .sum();
    let count: f64 = samples
        .iter()
        .filter(|s| s.name == format!("{name}_count") && matches(s))
        .map(|s| s.value)
        .sum();
    if count == 0.0 {
        return (0.0, 0.0, 0.0);
    }
    let rank = q * count;
    let mut prev = (0.0, 0.0);
    let mut quantile = 0.0;
    for (le, c) in &buckets {
        if *c >= rank {
            quantile = if le.is_infinite() {
                prev.0
            } else {
                prev.0 + (le - prev.0) * ((rank - prev.1) / (c - prev.1).max(f64::MIN_POSITIVE))
            };
            break;
        }
        prev = (*le, *c);
    }
    (quantile, sum / count, count)
}

/// Sum of the PSS (MiB) and CPU seconds of `pids`.
fn usage(pids: &[u32]) -> (f64, f64) {
    pids.iter().fold((0.0, 0.0), |(m, c), p| {
        (m + pss_mib(*p), c + cpu_seconds(*p))
    })
}

struct Table(Vec<(String, String, String)>);

impl Table {
    fn row(&mut self, what: &str, target: &str, value: String) {
        println!("{what}: {value}");
        self.0.push((what.into(), target.into(), value));
    }

    fn markdown(&self) -> String {
        let mut s = String::from("| figure | target | kumo |\n|---|---|---|\n");
        for (a, b, c) in &self.0 {
            s.push_str(&format!("| {a} | {b} | {c} |\n"));
        }
        s
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let members_n = args.members.unwrap_or(if args.quick { 10 } else { 100 });
    let fds_n = args.fds.unwrap_or(if args.quick { 100 } else { 1000 });
    let updates_n = args
        .updates
        .unwrap_or(if args.quick { 50 } else { 200 })
        .min(fds_n);
    let region_size = args.region_size.clamp(1, members_n);
    let regions = members_n.div_ceil(region_size);
    let tmp = match &args.work_dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            None
        }
        None => Some(tempfile::tempdir()?),
    };
    let dir = match (&args.work_dir, &tmp) {
        (Some(d), _) => d.clone(),
        (None, Some(t)) => t.path().to_path_buf(),
        (None, None) => bail!("no working directory"),
    };
    let mut table = Table(Vec::new());
    let mem_start = mem_available_mib();
    let load_start = loadavg();
    println!(
        "federation-bench: {members_n} members ({regions} regions of {region_size}), {fds_n} FederatedDeployments, {updates_n} updates; kumo = {}; dir {}",
        kumo_bin().display(),
        dir.display()
    );

    // Host and controller.
    let t = Instant::now();
    let host_proc =
        ApiServerProc::start(StoreKind::Kumo, &dir.join("host"), &["--log-level", "warn"])?;
    let host = client_from(&host_proc.kubeconfig).await?;
    let metrics_port = free_port();
    let mut fed = Some(spawn_logged(
        &[
            "federation".into(),
            "--kubeconfig".into(),
            host_proc.kubeconfig.display().to_string(),
            "--health-interval-seconds".into(),
            args.health_interval.to_string(),
            "--toleration-seconds".into(),
            args.toleration.to_string(),
            "--failback-stable-seconds".into(),
            args.failback_stable.to_string(),
            "--concurrent-syncs".into(),
            args.concurrent_syncs.to_string(),
            "--metrics-bind-address".into(),
            format!("127.0.0.1:{metrics_port}"),
        ],
        &dir.join("federation.log"),
        &[],
        0,
    )?);
    let fed_pid = fed.as_ref().map(Child::id).unwrap_or(0);
    println!(
        "host + controller started in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // Members.
    let t = Instant::now();
    let sem = Arc::new(Semaphore::new(args.start_concurrency.max(1)));
    let mut starts = Vec::new();
    for i in 0..members_n {
        let sem = sem.clone();
        let d = dir.join("members");
        let lean = args.member_malloc != "default";
        let nice = args.member_nice;
        starts.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await?;
            start_member(&d, &format!("m{i:03}"), lean, nice).await
        }));
    }
    let mut members = Vec::new();
    let mut member_clients = Vec::new();
    for s in starts {
        let (m, c) = s.await??;
        members.push(m);
        member_clients.push(c);
    }
    let started_in = t.elapsed();
    let member_pids: Vec<u32> = members.iter().flat_map(Member::pids).collect();
    let (idle_pss, _) = usage(&member_pids);
    table.row(
        "members started (store + apiserver each)",
        "",
        format!(
            "{members_n} in {:.1} s ({} at once, allocator {}, nice {}); idle PSS {:.0} MiB total, {:.1} MiB per member",
            started_in.as_secs_f64(),
            args.start_concurrency,
            args.member_malloc,
            args.member_nice,
            idle_pss,
            idle_pss / members_n as f64
        ),
    );

    // Registration.
    let clusters: ClusterLog = Arc::new(Mutex::new(HashMap::new()));
    watch_clusters(&host, clusters.clone());
    let mut reg = Vec::new();
    let mut join_cmd = Vec::new();
    for (i, m) in members.iter().enumerate() {
        let region = format!("region-{}", i / region_size);
        let t0 = Instant::now();
        let out = Command::new(kumo_bin())
            .args(["join", &m.name, "--kubeconfig"])
            .arg(&m.kubeconfig)
            .arg("--host-kubeconfig")
            .arg(&host_proc.kubeconfig)
            .args(["--provider", "bench", "--region", &region])
            .output()
            .context("run kumo join")?;
        if !out.status.success() {
            bail!(
                "kumo join {} failed: {}{}",
                m.name,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        join_cmd.push(t0.elapsed());
        let ready_at = wait_cluster(&clusters, &m.name, true, Duration::from_secs(60)).await?;
        reg.push(ready_at.saturating_duration_since(t0));
    }
    table.row(
        "registration: `kumo join` start → Cluster Ready, p50 / p90 / p99 / max ms",
        "p99 ≤ 1 s (Karmada ≈ 6.9 s)",
        summary(reg),
    );
    table.row(
        "`kumo join` command alone, p50 / p90 / p99 / max ms",
        "",
        summary(join_cmd),
    );

    // Watches of the results.
    let tracker: Shared = Arc::new(Mutex::new(Tracker::default()));
    let member_index: HashMap<String, usize> = members
        .iter()
        .enumerate()
        .map(|(i, m)| (m.name.clone(), i))
        .collect();
    for (i, c) in member_clients.iter().enumerate() {
        watch_member(i, c.clone(), tracker.clone());
    }
    watch_works(&host, member_index, tracker.clone());

    // Creates.
    let namespaces: Vec<String> = (0..10).map(|i| format!("bench-{i}")).collect();
    let ns_api: Api<DynamicObject> = Api::all_with(
        host.clone(),
        &kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("", "v1", "Namespace"),
            "namespaces",
        ),
    );
    for ns in &namespaces {
        ns_api
            .create(
                &PostParams::default(),
                &serde_json::from_value(
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
                )?,
            )
            .await?;
    }
    let objs: Vec<(String, String, usize)> = (0..fds_n)
        .map(|i| {
            (
                namespaces[i % namespaces.len()].clone(),
                format!("fd-{i:04}"),
                i % regions,
            )
        })
        .collect();
    let keys: Vec<String> = objs.iter().map(|(ns, n, _)| format!("{ns}/{n}")).collect();
    let region_members = |r: usize| -> Vec<usize> {
        (r * region_size..((r + 1) * region_size).min(members_n)).collect()
    };
    let fd_ar = resource("FederatedDeployment", "federateddeployments");
    let cpu0 = (
        usage(&[fed_pid]).1,
        usage(&[
            host_proc.pid().unwrap_or(0),
            host_proc.store.pid().unwrap_or(0),
        ])
        .1,
        usage(&member_pids).1,
    );
    let t = Instant::now();
    let errors = {
        let host = host.clone();
        let tracker = tracker.clone();
        let objs = objs.clone();
        let fd_ar = fd_ar.clone();
        let replicas = args.replicas;
        paced(fds_n, args.create_rate, move |i, sent| {
            let (ns, name, region) = objs[i].clone();
            let api: Api<DynamicObject> = Api::namespaced_with(host.clone(), &ns, &fd_ar);
            tracker.lk().expect(
                &format!("{ns}/{name}"),
                "kumo.test/app:1",
                &region_members(region),
                sent,
            );
            async move {
                let obj: DynamicObject = serde_json::from_value(fd_manifest(
                    &ns,
                    &name,
                    &format!("region-{region}"),
                    replicas,
                    "kumo.test/app:1",
                ))?;
                api.create(&PostParams::default(), &obj).await?;
                Ok(())
            }
        })
        .await
    };
    let sent_in = t.elapsed();
    let left = wait_done(&tracker, &keys, Duration::from_secs(600)).await;
    let all_in = t.elapsed();
    let cpu1 = (
        usage(&[fed_pid]).1,
        usage(&[
            host_proc.pid().unwrap_or(0),
            host_proc.store.pid().unwrap_or(0),
        ])
        .1,
        usage(&member_pids).1,
    );
    let (works_lat, member_lat, missing) = tracker.lk().latencies(&keys);
    table.row(
        "create: objects (each to its region's members)",
        "",
        format!(
            "{fds_n} × {} Deployments = {} member objects; sent in {:.1} s ({:.0}/s paced), all propagated after {:.1} s; {} failed creates, {left} not complete",
            region_size,
            fds_n * region_size,
            sent_in.as_secs_f64(),
            args.create_rate,
            all_in.as_secs_f64(),
            errors.len(),
        ),
    );
    if let Some(e) = errors.first() {
        println!("first create error: {e}");
    }
    table.row(
        "create → Works in the host, p50 / p90 / p99 / max ms",
        "",
        summary(works_lat),
    );
    table.row(
        "create → Deployment in every selected member, p50 / p90 / p99 / max ms",
        "p99 ≤ 300 ms (Karmada ≈ 1.0–1.3 s)",
        format!(
            "{} {}",
            summary(member_lat),
            if missing > 0 {
                format!("({missing} missing)")
            } else {
                String::new()
            }
        ),
    );
    table.row(
        "CPU during the creates (controller / host store+apiserver / all members), cores",
        "",
        format!(
            "{:.2} / {:.2} / {:.2}; load {}",
            (cpu1.0 - cpu0.0) / all_in.as_secs_f64(),
            (cpu1.1 - cpu0.1) / all_in.as_secs_f64(),
            (cpu1.2 - cpu0.2) / all_in.as_secs_f64(),
            loadavg()
        ),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Updates: a new image on `updates_n` objects spread over all of them.
    let step = (fds_n / updates_n.max(1)).max(1);
    let upd: Vec<usize> = (0..updates_n).map(|u| (u * step) % fds_n).collect();
    let upd_keys: Vec<String> = upd.iter().map(|i| keys[*i].clone()).collect();
    let t = Instant::now();
    let errors = {
        let host = host.clone();
        let tracker = tracker.clone();
        let objs = objs.clone();
        let fd_ar = fd_ar.clone();
        let upd = upd.clone();
        paced(updates_n, args.update_rate, move |u, sent| {
            let (ns, name, region) = objs[upd[u]].clone();
            let api: Api<DynamicObject> = Api::namespaced_with(host.clone(), &ns, &fd_ar);
            tracker.lk().expect(
                &format!("{ns}/{name}"),
                "kumo.test/app:2",
                &region_members(region),
                sent,
            );
            async move {
                let patch = json!({"spec": {"template": {"spec": {"template": {"spec": {"containers": [
                    {"name": "app", "image": "kumo.test/app:2",
                     "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}}}}});
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
                Ok(())
            }
        })
        .await
    };
    let left = wait_done(&tracker, &upd_keys, Duration::from_secs(300)).await;
    let (works_lat, member_lat, missing) = tracker.lk().latencies(&upd_keys);
    table.row(
        "update (new image) → new Works, p50 / p90 / p99 / max ms",
        "",
        summary(works_lat),
    );
    table.row(
        "update (new image) → in every selected member, p50 / p90 / p99 / max ms",
        "p99 ≤ 300 ms (Karmada ≈ 1.0–1.3 s)",
        format!(
            "{} at {:.0} updates/s; {} failed, {left} not complete {}",
            summary(member_lat),
            args.update_rate,
            errors.len(),
            if missing > 0 {
                format!("({missing} missing)")
            } else {
                String::new()
            }
        ),
    );
    println!("updates done in {:.1} s", t.elapsed().as_secs_f64());

    // Decision latency and queue figures from the controller.
    let samples = scrape(metrics_port)?;
    let labels = [("kind", "FederatedDeployment")];
    let (p50, mean, n) = histogram(
        &samples,
        "kumo_federation_decision_duration_seconds",
        &labels,
        0.5,
    );
    let (p99, _, _) = histogram(
        &samples,
        "kumo_federation_decision_duration_seconds",
        &labels,
        0.99,
    );
    table.row(
        "scheduling decision (placement + replica division of one object, wall clock), p50 / p99 / mean ms",
        "p99 ≤ 5 ms",
        format!(
            "{:.3} / **{:.3}** / {:.3} (n={n:.0}, from the controller's histogram)",
            p50 * 1000.0,
            p99 * 1000.0,
            mean * 1000.0
        ),
    );
    let (c50, cmean, _) = histogram(
        &samples,
        "kumo_federation_decision_cpu_seconds",
        &labels,
        0.5,
    );
    let (c99, _, _) = histogram(
        &samples,
        "kumo_federation_decision_cpu_seconds",
        &labels,
        0.99,
    );
    table.row(
        "the same decisions' own CPU time (thread CPU clock), p50 / p99 / mean ms",
        "",
        format!(
            "{:.3} / {:.3} / {:.3}",
            c50 * 1000.0,
            c99 * 1000.0,
            cmean * 1000.0
        ),
    );
    let rl = [("kind", "FederatedDeployment"), ("result", "success")];
    let (r50, rmean, rn) = histogram(
        &samples,
        "kumo_federation_reconcile_duration_seconds",
        &rl,
        0.5,
    );
    let (r99, _, _) = histogram(
        &samples,
        "kumo_federation_reconcile_duration_seconds",
        &rl,
        0.99,
    );
    table.row(
        "one FederatedDeployment reconcile (decision, Works, member applies, status), p50 / p99 / mean ms",
        "",
        format!("{:.2} / {:.1} / {:.2} (n={rn:.0})", r50 * 1000.0, r99 * 1000.0, rmean * 1000.0),
    );
    let ql = [("name", "federateddeployment")];
    let (q99, qmean, _) = histogram(&samples, "workqueue_queue_duration_seconds", &ql, 0.99);
    table.row(
        "work queue wait (federateddeployment), p99 / mean ms",
        "",
        format!("{:.1} / {:.2}", q99 * 1000.0, qmean * 1000.0),
    );

    // Failover: kill member 0's apiserver.
    let victim = 0usize;
    let affected: Vec<String> = objs
        .iter()
        .filter(|(_, _, r)| region_members(*r).contains(&victim))
        .map(|(ns, n, _)| format!("{ns}/{n}"))
        .collect();
    let others: Vec<usize> = region_members(victim / region_size)
        .into_iter()
        .filter(|m| *m != victim)
        .collect();
    let total = i64::from(args.replicas);
    let moved = |tr: &Tracker, want_victim: Option<i64>| {
        affected.iter().all(|o| {
            let sum: i64 = others
                .iter()
                .map(|m| tr.seen.get(&(o.clone(), *m)).map_or(0, |(_, r)| *r))
                .sum();
            match want_victim {
                None => sum == total,
                Some(v) => {
                    sum + v == total
                        && tr.seen.get(&(o.clone(), victim)).map(|(_, r)| *r) == Some(v)
                }
            }
        })
    };
    let before = {
        let tr = tracker.lk();
        affected
            .first()
            .and_then(|o| tr.seen.get(&(o.clone(), victim)).map(|(_, r)| *r))
            .unwrap_or(0)
    };
    let victim_name = members[victim].name.clone();
    let t_kill = Instant::now();
    stop(&mut members[victim].apiserver);
    let t_down = wait_cluster(&clusters, &victim_name, false, Duration::from_secs(60)).await?;
    let t_moved = poll_until(Duration::from_secs(120), || moved(&tracker.lk(), None)).await;
    let tol = Duration::from_secs(args.toleration);
    table.row(
        "failover: apiserver killed → Cluster NotReady in the host",
        "",
        format!(
            "{} ms (probe every {} s)",
            ms(t_down - t_kill),
            args.health_interval
        ),
    );
    table.row(
        "failover: time after the toleration until every affected object's replicas run in the other members",
        "",
        match t_moved {
            Some(t) => format!(
                "**{} ms** after NotReady + {} s toleration ({} ms after the kill + toleration); {} objects, {before} replica each moved to {} members",
                ms((t - t_down).saturating_sub(tol)),
                args.toleration,
                ms((t - t_kill).saturating_sub(tol)),
                affected.len(),
                others.len()
            ),
            None => "not complete after 120 s".into(),
        },
    );

    // Failback: start it again.
    let t_start = Instant::now();
    members[victim].spawn_apiserver()?;
    let t_up = wait_cluster(&clusters, &victim_name, true, Duration::from_secs(60)).await?;
    let t_back = poll_until(Duration::from_secs(120), || {
        moved(&tracker.lk(), Some(before))
    })
    .await;
    let stable = Duration::from_secs(args.failback_stable);
    table.row(
        "failback: apiserver started → Cluster Ready",
        "",
        format!("{} ms", ms(t_up - t_start)),
    );
    table.row(
        "failback: time after the stable period until the declared distribution is back",
        "",
        match t_back {
            Some(t) => format!(
                "{} ms after Ready + {} s stable",
                ms((t - t_up).saturating_sub(stable)),
                args.failback_stable
            ),
            None => "not complete after 120 s".into(),
        },
    );

    // Memory and CPU.
    let member_pids: Vec<u32> = members.iter().flat_map(Member::pids).collect();
    let (m_pss, m_cpu) = usage(&member_pids);
    let (h_pss, h_cpu) = usage(&[host_proc.pid().unwrap_or(0)]);
    let (hs_pss, hs_cpu) = usage(&[host_proc.store.pid().unwrap_or(0)]);
    let (f_pss, f_cpu) = usage(&[fed_pid]);
    let self_rss = kumo_tests::rss_mib(std::process::id());
    table.row(
        "memory (PSS): controller / host apiserver / host store / all members / bench",
        "24 GiB machine",
        format!(
            "{f_pss:.0} / {h_pss:.0} / {hs_pss:.0} / {m_pss:.0} MiB ({:.1} per member) / {self_rss:.0} MiB RSS; MemAvailable {:.0} → {:.0} MiB (used {:.0} MiB by this run and whatever else ran)",
            m_pss / members_n as f64,
            mem_start,
            mem_available_mib(),
            mem_start - mem_available_mib(),
        ),
    );
    table.row(
        "CPU seconds over the run: controller / host apiserver / host store / all members",
        "",
        format!(
            "{f_cpu:.1} / {h_cpu:.1} / {hs_cpu:.1} / {m_cpu:.1}; load {load_start} → {}",
            loadavg()
        ),
    );

    let md = table.markdown();
    println!("\n{md}");
    if let Some(out) = &args.out {
        std::fs::write(out, &md)?;
    }
    stop(&mut fed);
    drop(members);
    drop(host_proc);
    drop(tmp);
    // The watches of the stopped members would keep the runtime busy retrying: exit now.
    std::process::exit(0)
}
