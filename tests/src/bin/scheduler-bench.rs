//! `scheduler-bench`: the issue-4 scheduler benchmark. A fresh `kumo store` + `kumo apiserver`
//! (child processes) and `--nodes` Node objects with allocatable cpu/memory/pods, then two
//! phases, with the scheduler running in this process (`kumo_scheduler::run`, leader election
//! on, adaptive `percentageOfNodesToScore`):
//!
//! 1. **backlog**: `--pods` pending pods are created while no scheduler runs; then the
//!    scheduler starts (informer sync included) and binds them all. Throughput = pods / (last
//!    bind − scheduler start), and the steady rate from the first to the last bind.
//! 2. **live**: `--live-pods` more pods are created (`--create-concurrency` in flight) while
//!    the scheduler runs; create → bound latency percentiles (create time taken when the create
//!    request returned, bound time when a watch first shows `spec.nodeName`).
//!
//! Also the scheduler's own `scheduler_scheduling_algorithm_duration_seconds` mean and CPU
//! seconds of the apiserver, the store and this process per phase. Only 127.0.0.1 is contacted.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;
use tokio::sync::Semaphore;

use kumo_tests::{ApiServerProc, Lk, StoreKind, free_port, http_get, parse_exposition, percentile};

#[derive(Parser, Debug)]
#[command(
    name = "scheduler-bench",
    about = "kumo scheduler throughput and latency (issue 4)"
)]
struct Args {
    /// Nodes [default 5000; --quick 500].
    #[arg(long)]
    nodes: Option<usize>,
    /// Pending pods created before the scheduler starts [default 10000; --quick 1000].
    #[arg(long)]
    pods: Option<usize>,
    /// Pods created while the scheduler runs [default 2000; --quick 500].
    #[arg(long)]
    live_pods: Option<usize>,
    /// Small run.
    #[arg(long)]
    quick: bool,
    /// Creates in flight at once.
    #[arg(long, default_value_t = 64)]
    create_concurrency: usize,
    /// The scheduler's `max-concurrent-binds`.
    #[arg(long, default_value_t = 512)]
    max_concurrent_binds: usize,
    /// `percentageOfNodesToScore` (0 = adaptive).
    #[arg(long, default_value_t = 0)]
    percentage_of_nodes_to_score: u32,
}

fn cpu_seconds(pid: u32) -> f64 {
    // utime + stime from /proc/PID/stat, in clock ticks (100/s on Linux).
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1.to_string();
            let f: Vec<&str> = after.split_whitespace().collect();
            let u: f64 = f.get(11)?.parse().ok()?;
            let k: f64 = f.get(12)?.parse().ok()?;
            Some((u + k) / 100.0)
        })
        .unwrap_or(0.0)
}

async fn client_for(api: &ApiServerProc) -> Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(&api.kubeconfig)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok(kube::Client::try_from(cfg)?)
}

fn metric(body: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let samples = parse_exposition(body).ok()?;
    kumo_tests::sample_value(&samples, name, labels)
}

type Times = Arc<Mutex<HashMap<String, Instant>>>;

async fn create_pods(
    api: &Api<Pod>,
    prefix: &str,
    count: usize,
    concurrency: usize,
    created: &Times,
) -> Result<()> {
    let sem = Arc::new(Semaphore::new(concurrency));
    let mut tasks = Vec::new();
    for i in 0..count {
        let api = api.clone();
        let created = created.clone();
        let permit = sem.clone().acquire_owned().await?;
        let name = format!("{prefix}-{i:05}");
        tasks.push(tokio::spawn(async move {
            let _p = permit;
            let p: Pod = serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {"bench": "scheduler"}},
                "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}}))?;
            api.create(&PostParams::default(), &p).await?;
            created.lk().insert(name, Instant::now());
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

async fn wait_bound(bound: &Times, prefix: &str, count: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let n = bound.lk().keys().filter(|k| k.starts_with(prefix)).count();
        if n >= count {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {n} of {count} {prefix} pods bound after 15 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn cpu(api: &ApiServerProc) -> (f64, f64, f64) {
    (
        api.pid().map(cpu_seconds).unwrap_or(0.0),
        api.store.pid().map(cpu_seconds).unwrap_or(0.0),
        cpu_seconds(std::process::id()),
    )
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let nodes = args.nodes.unwrap_or(if args.quick { 500 } else { 5000 });
    let pods = args.pods.unwrap_or(if args.quick { 1000 } else { 10_000 });
    let live = args
        .live_pods
        .unwrap_or(if args.quick { 500 } else { 2000 });
    let dir = tempfile::tempdir()?;
    let api = ApiServerProc::start(StoreKind::Kumo, dir.path(), &[]).context("start apiserver")?;
    let client = client_for(&api).await?;
    println!(
        "scheduler-bench: {nodes} nodes, {pods} backlog pods, {live} live pods; load average before: {}",
        loadavg()
    );

    // Nodes.
    let t = Instant::now();
    let nodes_api: Api<Node> = Api::all(client.clone());
    let sem = Arc::new(Semaphore::new(args.create_concurrency));
    let mut tasks = Vec::new();
    for i in 0..nodes {
        let api = nodes_api.clone();
        let permit = sem.clone().acquire_owned().await?;
        tasks.push(tokio::spawn(async move {
            let _p = permit;
            let name = format!("node-{i:05}");
            let n: Node = serde_json::from_value(json!({"metadata": {"name": name, "labels": {
                "kubernetes.io/hostname": name, "topology.kubernetes.io/zone": format!("zone-{}", i % 3)}}}))?;
            api.create(&PostParams::default(), &n).await?;
            let status = json!({"status": {
                "capacity": {"cpu": "32", "memory": "128Gi", "pods": "110"},
                "allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}});
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(status)).await?;
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    println!("created {nodes} nodes in {:.1}s", t.elapsed().as_secs_f64());

    // A watch records when each pod is first seen bound.
    let bound_at: Times = Arc::default();
    let created_at: Times = Arc::default();
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let watch = {
        let bound_at = bound_at.clone();
        let pods_api = pods_api.clone();
        tokio::spawn(async move {
            let mut s = watcher(
                pods_api,
                watcher::Config::default().labels("bench=scheduler"),
            )
            .boxed();
            while let Some(ev) = s.next().await {
                if let Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) = ev
                    && p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()
                {
                    let name = p.metadata.name.clone().unwrap_or_default();
                    bound_at.lk().entry(name).or_insert_with(Instant::now);
                }
            }
        })
    };

    // Phase 1: backlog.
    let t = Instant::now();
    create_pods(
        &pods_api,
        "backlog",
        pods,
        args.create_concurrency,
        &created_at,
    )
    .await?;
    println!(
        "created {pods} pending pods in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let metrics_port = free_port();
    let cfg = kumo_scheduler::SchedulerConfig {
        kubeconfig: Some(api.kubeconfig.clone()),
        metrics_bind_address: format!("127.0.0.1:{metrics_port}"),
        percentage_of_nodes_to_score: args.percentage_of_nodes_to_score,
        max_concurrent_binds: args.max_concurrent_binds,
        ..Default::default()
    };
    let cpu0 = cpu(&api);
    let sched_start = Instant::now();
    let sched = tokio::spawn(kumo_scheduler::run(cfg));
    wait_bound(&bound_at, "backlog", pods).await?;
    let cpu1 = cpu(&api);
    let (first, last) = {
        let b = bound_at.lk();
        let v: Vec<Instant> = b
            .iter()
            .filter(|(k, _)| k.starts_with("backlog"))
            .map(|(_, t)| *t)
            .collect();
        (
            v.iter().min().copied().unwrap_or(sched_start),
            v.iter().max().copied().unwrap_or(sched_start),
        )
    };
    let total = last.duration_since(sched_start).as_secs_f64();
    let steady = last.duration_since(first).as_secs_f64();

    // Phase 2: live.
    let cpu2 = cpu(&api);
    let start = Instant::now();
    create_pods(
        &pods_api,
        "live",
        live,
        args.create_concurrency,
        &created_at,
    )
    .await?;
    let created_all = start.elapsed();
    wait_bound(&bound_at, "live", live).await?;
    let cpu3 = cpu(&api);
    watch.abort();
    let bound = bound_at.lk().clone();
    let created = created_at.lk().clone();
    let live_last = bound
        .iter()
        .filter(|(k, _)| k.starts_with("live"))
        .map(|(_, t)| *t)
        .max()
        .unwrap_or(start);
    let mut lat: Vec<Duration> = bound
        .iter()
        .filter(|(k, _)| k.starts_with("live"))
        .filter_map(|(n, b)| created.get(n).map(|c| b.saturating_duration_since(*c)))
        .collect();
    lat.sort();

    let metrics_url = format!("http://127.0.0.1:{metrics_port}/metrics");
    let body = http_get(&metrics_url, Duration::from_secs(5))
        .map(|r| r.body)
        .unwrap_or_default();
    let algo_sum = metric(
        &body,
        "scheduler_scheduling_algorithm_duration_seconds_sum",
        &[],
    )
    .unwrap_or(0.0);
    let algo_count = metric(
        &body,
        "scheduler_scheduling_algorithm_duration_seconds_count",
        &[],
    )
    .unwrap_or(0.0);
    println!();
    println!("| phase | nodes | pods | throughput (pods/s) | detail |");
    println!("|---|---|---|---|---|");
    println!(
        "| backlog | {nodes} | {pods} | {:.0} (steady {:.0}) | scheduler start → all bound {:.2}s (first bind after {:.2}s) |",
        pods as f64 / total,
        pods as f64 / steady.max(1e-9),
        total,
        first.duration_since(sched_start).as_secs_f64(),
    );
    println!(
        "| live | {nodes} | {live} | {:.0} | created in {:.2}s; create → bound p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms |",
        live as f64 / live_last.duration_since(start).as_secs_f64(),
        created_all.as_secs_f64(),
        percentile(&lat, 0.50).as_secs_f64() * 1e3,
        percentile(&lat, 0.90).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    println!();
    println!(
        "scheduling algorithm mean {:.3} ms over {algo_count} cycles",
        if algo_count > 0.0 {
            algo_sum / algo_count * 1e3
        } else {
            0.0
        },
    );
    println!(
        "CPU seconds, backlog: apiserver {:.1}, store {:.1}, bench + scheduler {:.1}; live: apiserver {:.1}, store {:.1}, bench + scheduler {:.1}; load average after: {}",
        cpu1.0 - cpu0.0,
        cpu1.1 - cpu0.1,
        cpu1.2 - cpu0.2,
        cpu3.0 - cpu2.0,
        cpu3.1 - cpu2.1,
        cpu3.2 - cpu2.2,
        loadavg()
    );
    sched.abort();

    // controller-manager RSS with every pod (backlog + live) and node in its informers: a
    // `kumo controller-manager` child process, given time to sync and settle.
    let total_pods = pods + live;
    let log = dir.path().join("controller-manager.log");
    let logf = std::fs::File::create(&log)?;
    let mut cm = std::process::Command::new(kumo_tests::kumo_bin())
        .arg("controller-manager")
        .arg("--kubeconfig")
        .arg(&api.kubeconfig)
        .args(["--port", "0", "--leader-elect", "false"])
        .env("RUST_LOG", "warn")
        .stdout(logf.try_clone()?)
        .stderr(logf)
        .spawn()
        .context("spawn kumo controller-manager")?;
    let mut peak = 0.0f64;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Ok(Some(st)) = cm.try_wait() {
            bail!(
                "controller-manager exited with {st}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        peak = peak.max(kumo_tests::rss_mib(cm.id()));
    }
    println!(
        "controller-manager RSS with {total_pods} pods and {nodes} nodes: {:.1} MiB after 30 s (peak {peak:.1} MiB)",
        kumo_tests::rss_mib(cm.id())
    );
    let _ = cm.kill();
    let _ = cm.wait();
    Ok(())
}
