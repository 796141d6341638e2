//! `kubelet-bench`: the issue-5 kubelet benchmark, against a fresh `kumo store` +
//! `kumo apiserver` (child processes) and `kumo kubelet` child processes. Only 127.0.0.1 is
//! contacted.
//!
//! * **process**: one kubelet with the `process` runtime and the busybox image (built from
//!   Debian's busybox-static, imported into its image store). Its RSS idle (node Ready, no pods),
//!   then pods (`sleep`) bound to it (`spec.nodeName` set, as after scheduling), each timed from
//!   the create request to a watch showing `phase=Running` and `Ready=True` (upstream's pod
//!   startup SLI, no image pull): `--solo-pods` one at a time on the empty node, `--pods` with
//!   `--in-flight` of them at once (a create waits until a pod in flight is Running and Ready)
//!   in two halves (RSS with the first half running), `--solo-pods` one at a time on the full
//!   node; then the kubelet's RSS and CPU with every pod running, and the time to delete them.
//! * **sim**: one `kumo kubelet --container-runtime sim --sim-nodes N` process: time until all N
//!   nodes are Ready, its RSS then, and startup latency of `--sim-pods` pods spread over them.
//!
//! Needs root for the process runtime (namespaces, cgroups); `--only sim` runs without.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;
use tokio::sync::Semaphore;

use kumo_tests::{ApiServerProc, Lk, StoreKind, free_port, kumo_bin, percentile, pss_mib};

#[derive(Parser, Debug)]
#[command(
    name = "kubelet-bench",
    about = "kumo kubelet pod startup latency and memory (issue 5)"
)]
struct Args {
    /// Run only `process` or `sim`.
    #[arg(long)]
    only: Option<String>,
    /// Pods on the process-runtime kubelet (RSS is also taken at half of them).
    #[arg(long, default_value_t = 100)]
    pods: usize,
    /// Pods in flight at once: created and not yet seen Running and Ready (a new create waits
    /// for one of them to get there).
    #[arg(long, alias = "create-concurrency", default_value_t = 10)]
    in_flight: usize,
    /// Pods started one at a time on the empty node and again on the full node.
    #[arg(long, default_value_t = 5)]
    solo_pods: usize,
    /// Hollow nodes in the sim kubelet [default 5000; --quick 500].
    #[arg(long)]
    sim_nodes: Option<usize>,
    /// Pods over the hollow nodes [default 5000; --quick 500].
    #[arg(long)]
    sim_pods: Option<usize>,
    /// Small run.
    #[arg(long)]
    quick: bool,
}

type Times = Arc<Mutex<HashMap<String, Instant>>>;

/// Count and summed PSS of every process of the pods: `pid`'s descendants (pause and
/// per-container monitor processes of the process runtime, and the containers).
fn descendants_pss_mib(pid: u32) -> (usize, f64) {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let ppid = std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')?
                        .1
                        .split_whitespace()
                        .nth(1)?
                        .parse()
                        .ok()
                });
            if let Some(pp) = ppid {
                children.entry(pp).or_default().push(p);
            }
        }
    }
    let (mut n, mut sum) = (0, 0.0);
    let mut stack = vec![pid];
    while let Some(p) = stack.pop() {
        for c in children.get(&p).cloned().unwrap_or_default() {
            n += 1;
            sum += pss_mib(c);
            stack.push(c);
        }
    }
    (n, sum)
}

async fn client_for(api: &ApiServerProc) -> Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(&api.kubeconfig)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok(kube::Client::try_from(cfg)?)
}

struct Kubelet {
    child: Child,
    log: PathBuf,
}

impl Kubelet {
    fn start(api: &ApiServerProc, dir: &Path, name: &str, extra: &[&str]) -> Result<Kubelet> {
        let log = dir.join(format!("{name}.log"));
        let f = std::fs::File::create(&log)?;
        let child = Command::new(kumo_bin())
            .args(["kubelet", "--kubeconfig"])
            .arg(&api.kubeconfig)
            .args(["--hostname-override", name, "--root-dir"])
            .arg(dir.join(name))
            .args(["--port", &free_port().to_string(), "--healthz-port", "0"])
            .args(["--node-ip", "127.0.0.1"])
            .args(extra)
            // KUBELET_BENCH_LOG (e.g. `kumo_kubelet=debug,kumo_runtime=debug`) for a timeline
            // of the pod start path in the kept logs.
            .env(
                "RUST_LOG",
                std::env::var("KUBELET_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f)
            .spawn()
            .context("spawn kumo kubelet")?;
        Ok(Kubelet { child, log })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn check_alive(&mut self) -> Result<()> {
        if let Ok(Some(st)) = self.child.try_wait() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            bail!(
                "kubelet exited with {st}:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        Ok(())
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn wait_nodes_ready(
    client: &kube::Client,
    want: usize,
    kubelet: &mut Kubelet,
) -> Result<Duration> {
    let t = Instant::now();
    let nodes: Api<Node> = Api::all(client.clone());
    loop {
        kubelet.check_alive()?;
        let n = nodes
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|n| ready(n))
            .count();
        if n >= want {
            return Ok(t.elapsed());
        }
        if t.elapsed() > Duration::from_secs(600) {
            bail!("only {n} of {want} nodes Ready after 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Records when each pod is first seen Running with its Ready condition True.
fn watch_running(client: &kube::Client, running: Times) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    tokio::spawn(async move {
        let mut s = watcher(pods, watcher::Config::default()).boxed();
        while let Some(ev) = s.next().await {
            let objs = match ev {
                Ok(watcher::Event::Apply(p)) | Ok(watcher::Event::InitApply(p)) => vec![p],
                _ => continue,
            };
            for p in objs {
                let status = p.status.as_ref();
                let phase = status.and_then(|s| s.phase.as_deref());
                let ready = status
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                if phase == Some("Running")
                    && ready
                    && let Some(n) = p.metadata.name
                {
                    running.lk().entry(n).or_insert_with(Instant::now);
                }
            }
        }
    });
}

/// Creates the pods with at most `in_flight` of them created and not yet Running and Ready
/// (upstream's "N pods, M in flight"); returns once every create was answered.
async fn create_pods(
    client: &kube::Client,
    names: &[String],
    node_of: impl Fn(usize) -> String,
    image: &str,
    in_flight: usize,
    created: &Times,
    running: &Times,
) -> Result<()> {
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let sem = Arc::new(Semaphore::new(in_flight));
    let mut tasks = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let api = api.clone();
        let created = created.clone();
        let permit = sem.clone().acquire_owned().await?;
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"bench": "kubelet"}},
            "spec": {"nodeName": node_of(i), "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "c", "image": image, "command": ["sleep", "3600"],
                    "resources": {"requests": {"cpu": "1m", "memory": "1Mi"}}}]}}))?;
        let name = name.clone();
        let running = running.clone();
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            api.create(&PostParams::default(), &p).await?;
            created.lk().insert(name.clone(), t);
            // The slot is free once the pod is Running and Ready (wait_running bounds the
            // whole phase's time).
            while !running.lk().contains_key(&name) && t.elapsed() < Duration::from_secs(600) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            drop(permit);
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

async fn wait_running(running: &Times, names: &[String], kubelet: &mut Kubelet) -> Result<()> {
    let t = Instant::now();
    loop {
        kubelet.check_alive()?;
        let n = {
            let r = running.lk();
            names.iter().filter(|n| r.contains_key(*n)).count()
        };
        if n >= names.len() {
            return Ok(());
        }
        if t.elapsed() > Duration::from_secs(600) {
            bail!("only {n} of {} pods Running after 10 minutes", names.len());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn latencies(created: &Times, running: &Times, names: &[String]) -> Vec<Duration> {
    let (c, r) = (created.lk(), running.lk());
    let mut v: Vec<Duration> = names
        .iter()
        .filter_map(|n| Some(r.get(n)?.saturating_duration_since(*c.get(n)?)))
        .collect();
    v.sort();
    v
}

fn report(label: &str, v: &[Duration]) {
    println!(
        "  {label}: n={} p50={:.0} ms p90={:.0} ms p99={:.0} ms max={:.0} ms",
        v.len(),
        percentile(v, 0.50).as_secs_f64() * 1e3,
        percentile(v, 0.90).as_secs_f64() * 1e3,
        percentile(v, 0.99).as_secs_f64() * 1e3,
        v.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
}

async fn delete_all(client: &kube::Client) -> Result<()> {
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("bench=kubelet"),
    )
    .await?;
    Ok(())
}

async fn bench_process(args: &Args, dir: &Path) -> Result<()> {
    println!("== process runtime: 1 kubelet, {} pods", args.pods);
    let api = ApiServerProc::start(StoreKind::Kumo, &dir.join("cp"), &[])?;
    let client = client_for(&api).await?;
    let image = "kumo.bench/busybox:1";
    let tar = kumo_tests::images::busybox_image_tar(dir, image, &["sh"])?;
    let images = dir.join("images");
    let out = Command::new(kumo_bin())
        .args(["image", "import"])
        .arg(&tar)
        .arg("--root")
        .arg(&images)
        .output()?;
    if !out.status.success() {
        bail!(
            "kumo image import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let images_s = images.display().to_string();
    let mut k = Kubelet::start(
        &api,
        dir,
        "bench-node",
        &[
            "--container-runtime",
            "process",
            "--image-store",
            &images_s,
            "--max-pods",
            "250",
        ],
    )?;
    let t = wait_nodes_ready(&client, 1, &mut k).await?;
    println!("  node Ready after {:.2} s", t.as_secs_f64());
    tokio::time::sleep(Duration::from_secs(10)).await;
    println!(
        "  kubelet RSS idle: {:.1} MiB",
        kumo_tests::rss_mib(k.pid())
    );

    let running: Times = Arc::default();
    let created: Times = Arc::default();
    watch_running(&client, running.clone());
    let node = |_| "bench-node".to_string();
    // One pod at a time on the empty node, then the bulk, then one at a time again on the
    // full node: whether a start costs more with more pods on the node.
    let solo = |prefix: &str| -> Vec<String> {
        (0..args.solo_pods)
            .map(|i| format!("{prefix}-{i:04}"))
            .collect()
    };
    let first = solo("a");
    create_pods(&client, &first, node, image, 1, &created, &running).await?;
    report(
        "one pod at a time on the empty node",
        &latencies(&created, &running, &first),
    );
    let names: Vec<String> = (0..args.pods).map(|i| format!("p-{i:04}")).collect();
    let half = names.len() / 2;
    create_pods(
        &client,
        &names[..half],
        node,
        image,
        args.in_flight,
        &created,
        &running,
    )
    .await?;
    wait_running(&running, &names[..half], &mut k).await?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (n, mon) = descendants_pss_mib(k.pid());
    println!(
        "  kubelet RSS with {} pods: {:.1} MiB (pods' own processes — pause, monitors, containers: {n}, PSS {mon:.1} MiB)",
        half + first.len(),
        kumo_tests::rss_mib(k.pid())
    );
    create_pods(
        &client,
        &names[half..],
        node,
        image,
        args.in_flight,
        &created,
        &running,
    )
    .await?;
    wait_running(&running, &names[half..], &mut k).await?;
    report(
        &format!(
            "{} pods, {} in flight (create → Running and Ready by watch)",
            names.len(),
            args.in_flight
        ),
        &latencies(&created, &running, &names),
    );
    let last = solo("z");
    create_pods(&client, &last, node, image, 1, &created, &running).await?;
    report(
        &format!(
            "one pod at a time on the node with {} pods",
            names.len() + first.len()
        ),
        &latencies(&created, &running, &last),
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    let cpu = |pid: u32| -> f64 {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                let f: Vec<String> = s
                    .rsplit_once(')')?
                    .1
                    .split_whitespace()
                    .map(String::from)
                    .collect();
                Some(f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?)
            })
            .unwrap_or(0.0)
    };
    let (c0, t0) = (cpu(k.pid()), Instant::now());
    tokio::time::sleep(Duration::from_secs(20)).await;
    // utime + stime are in clock ticks (100 a second on Linux).
    let busy = (cpu(k.pid()) - c0) / 100.0 / t0.elapsed().as_secs_f64() * 100.0;
    println!(
        "  kubelet with {} running pods: RSS {:.1} MiB, CPU {busy:.1} % of a core (20 s)",
        names.len() + first.len() + last.len(),
        kumo_tests::rss_mib(k.pid())
    );
    let t = Instant::now();
    delete_all(&client).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    while !pods
        .list(&ListParams::default().labels("bench=kubelet"))
        .await?
        .items
        .is_empty()
    {
        if t.elapsed() > Duration::from_secs(300) {
            bail!("pods not gone after 5 minutes");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "  deleting {} pods took {:.2} s",
        names.len() + first.len() + last.len(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn bench_sim(args: &Args, dir: &Path) -> Result<()> {
    let nodes = args
        .sim_nodes
        .unwrap_or(if args.quick { 500 } else { 5000 });
    let pods = args.sim_pods.unwrap_or(if args.quick { 500 } else { 5000 });
    println!("== sim runtime: {nodes} hollow nodes in one process, {pods} pods");
    let api = ApiServerProc::start(StoreKind::Kumo, &dir.join("cp-sim"), &[])?;
    let client = client_for(&api).await?;
    let n = nodes.to_string();
    let mut k = Kubelet::start(
        &api,
        dir,
        "hollow",
        &["--container-runtime", "sim", "--sim-nodes", &n],
    )?;
    let t = wait_nodes_ready(&client, nodes, &mut k).await?;
    println!("  {nodes} nodes Ready after {:.1} s", t.as_secs_f64());
    tokio::time::sleep(Duration::from_secs(15)).await;
    println!(
        "  sim kubelet RSS with {nodes} nodes: {:.1} MiB",
        kumo_tests::rss_mib(k.pid())
    );
    let node_names: Vec<String> = {
        let api: Api<Node> = Api::all(client.clone());
        let mut v: Vec<String> = api
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect();
        v.sort();
        v
    };
    let running: Times = Arc::default();
    let created: Times = Arc::default();
    watch_running(&client, running.clone());
    let names: Vec<String> = (0..pods).map(|i| format!("s-{i:05}")).collect();
    let nn = node_names.clone();
    create_pods(
        &client,
        &names,
        move |i| nn[i % nn.len()].clone(),
        "kumo.bench/sim:1",
        64,
        &created,
        &running,
    )
    .await?;
    wait_running(&running, &names, &mut k).await?;
    report(
        "sim pod startup (create → Running and Ready), 64 in flight",
        &latencies(&created, &running, &names),
    );
    println!(
        "  sim kubelet RSS with {nodes} nodes and {pods} pods: {:.1} MiB",
        kumo_tests::rss_mib(k.pid())
    );
    delete_all(&client).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    // KUBELET_BENCH_KEEP=1 keeps the data and component logs for a look afterwards.
    let tmp = tempfile::tempdir()?;
    let (_guard, path) = if std::env::var_os("KUBELET_BENCH_KEEP").is_some() {
        let kept = tmp.keep();
        println!("keeping {}", kept.display());
        (None, kept)
    } else {
        let p = tmp.path().to_path_buf();
        (Some(tmp), p)
    };
    println!(
        "kubelet-bench on {} cores; load average before: {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    if args.only.as_deref() != Some("sim") {
        bench_process(&args, &path).await?;
    }
    if args.only.as_deref() != Some("process") {
        bench_sim(&args, &path).await?;
    }
    Ok(())
}
