//! `apiserver-bench`: the issue-3 benchmark of `kumo apiserver`, run with the apiserver on a
//! fresh real etcd and then on a fresh `kumo store` (one after the other, in one run), driven
//! by the same kube-rs load generator so the figures are comparable.
//!
//! Per store:
//! 1. **Preload** `--nodes` Node objects and `--pods` Pod objects of realistic size (one
//!    container with image, command, env, resources, ports, probes, labels, an ownerReference to
//!    a ReplicaSet, `spec.nodeName` spread over the nodes) in `--namespaces` namespaces, with
//!    `--preload-concurrency` requests in flight; then every pod's status is set to Running
//!    through `pods/status` (conditions, IPs, container status) when the create did not keep it.
//! 2. **LIST**: a cluster-wide LIST of all pods as one JSON request (`--list-runs` times), and
//!    the paged form (`limit=--page-size`) once.
//! 3. **Creates under watch**, once per `--watch-modes` entry: `--watchers` concurrent watches on
//!    pods are opened at the current resourceVersion — `node`: cluster-wide with
//!    `fieldSelector=spec.nodeName=…` (what a kubelet does), `namespace`: namespace-scoped,
//!    spread over the namespaces — then pods are created open-loop at `--rate` per second for
//!    `--duration`. Each pod carries its send time (µs since the epoch) in an annotation; create
//!    latency is measured at the client, watch delivery latency is event receive time − send
//!    time, across all watchers.
//! 4. **Memory**: VmRSS/VmHWM of the apiserver (and the store) after the preload and at the end;
//!    CPU seconds the apiserver, store and load generator used in each phase.
//!
//! Everything runs on 127.0.0.1 with the admin client certificate from the harness's
//! kubeconfig. Usually run through `cargo xtask bench apiserver`.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, ValueEnum};
use futures::{StreamExt, TryStreamExt};
use http_body_util::BodyExt;
use kube::Client;
use kube::api::{Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::core::Request;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use kumo_tests::{ApiServerProc, Sample, StoreKind, etcd_bin, kumo_bin, parse_exposition};

#[derive(Parser, Debug)]
#[command(
    name = "apiserver-bench",
    about = "Load generator: kumo apiserver on etcd and on kumo store (issue 3 benchmark)"
)]
struct Args {
    /// Pods stored before the measurements [default: 150000; --quick: 10000].
    #[arg(long)]
    pods: Option<usize>,
    /// Nodes stored before the measurements [default: 5000; --quick: 500].
    #[arg(long)]
    nodes: Option<usize>,
    /// Namespaces the pods are spread over.
    #[arg(long, default_value_t = 100)]
    namespaces: usize,
    /// Concurrent watches during the create phase.
    #[arg(long, default_value_t = 1_000)]
    watchers: usize,
    /// Paced creates per second in the create phase.
    #[arg(long, default_value_t = 1_000)]
    rate: u32,
    /// Length of the paced create phase (e.g. `30`, `30s`, `1m`) [default: 30s; --quick: 10s].
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Smoke run: 10,000 pods, 500 nodes, 10 s of creates (unless given explicitly).
    #[arg(long)]
    quick: bool,
    /// Requests in flight during the preload.
    #[arg(long, default_value_t = 64)]
    preload_concurrency: usize,
    /// Most creates in flight in the paced phase; beyond it the pacer waits (and the wait
    /// shows in the "from schedule" latency).
    #[arg(long, default_value_t = 500)]
    max_in_flight: usize,
    /// Watch shapes of the create phase, one phase each (`node`, `namespace`).
    #[arg(long, value_delimiter = ',', default_value = "node,namespace")]
    watch_modes: Vec<WatchMode>,
    /// Cluster-wide LISTs of all pods (one request each).
    #[arg(long, default_value_t = 3)]
    list_runs: usize,
    /// Page size of the paged LIST (0 = skip it).
    #[arg(long, default_value_t = 500)]
    page_size: u32,
    /// Bench only this store.
    #[arg(long, value_parser = ["etcd", "kumo"])]
    only: Option<String>,
    /// Parent directory of the fresh stores' data dirs (default: the system temp dir).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Also write the Markdown table to this file.
    #[arg(long)]
    markdown_out: Option<PathBuf>,
    /// Record `perf record --call-graph dwarf` of the apiserver during the pod preload, the LISTs
    /// and the create phases into this directory (`<store>-<phase>.data`).
    #[arg(long)]
    perf_dir: Option<PathBuf>,
    /// Write every paced create of the create phases to `<dir>/<store>-<mode>.csv`
    /// (`index,due_s,latency_ms`), to see when slow requests happen, and the wall-clock time
    /// of due 0 to `<dir>/<store>-<mode>.start`.
    #[arg(long)]
    latency_trace_dir: Option<PathBuf>,
    /// `--quota-backend-bytes` of both stores (0 = their default, 2 GiB). The preload writes
    /// ~2.2 GB of revisions in minutes, before the apiserver's first compaction (10 min after
    /// start), so the 2 GiB default raises NOSPACE mid-preload; 8 GiB is etcd's suggested
    /// maximum and what large clusters run with.
    #[arg(long, default_value_t = 8 * 1024 * 1024 * 1024)]
    quota_backend_bytes: u64,
    /// Extra argument for the store (repeatable).
    #[arg(long = "store-arg", allow_hyphen_values = true)]
    store_args: Vec<String>,
    /// Extra argument for `kumo apiserver` (repeatable).
    #[arg(long = "apiserver-arg", allow_hyphen_values = true)]
    apiserver_args: Vec<String>,
}

impl Args {
    /// Pods to preload (`main` fills in the default).
    fn pods(&self) -> usize {
        self.pods.unwrap_or(150_000)
    }
    fn nodes(&self) -> usize {
        self.nodes.unwrap_or(5_000)
    }
    fn duration(&self) -> Duration {
        self.duration.unwrap_or(Duration::from_secs(30))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum WatchMode {
    /// Cluster-wide watches with `fieldSelector=spec.nodeName=<node>` (kubelets).
    Node,
    /// Namespace-scoped watches spread over the namespaces.
    Namespace,
}

impl WatchMode {
    fn name(self) -> &'static str {
        match self {
            WatchMode::Node => "node",
            WatchMode::Namespace => "namespace",
        }
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num.parse().map_err(|_| format!("bad duration `{s}`"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("bad duration unit in `{s}` (use ms, s or m)")),
    };
    if !(secs > 0.0 && secs <= 3600.0) {
        return Err(format!("duration `{s}` out of range (0, 1h]"));
    }
    Ok(Duration::from_secs_f64(secs))
}

// ---------------------------------------------------------------------------------------------
// measurements

/// Exact latency recorder: every sample kept (microseconds), sorted once for percentiles.
#[derive(Default, Clone)]
struct Histogram {
    us: Vec<u32>,
    sorted: bool,
}

impl Histogram {
    fn record(&mut self, d: Duration) {
        self.record_us(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }
    fn record_us(&mut self, us: u64) {
        self.us.push(u32::try_from(us).unwrap_or(u32::MAX));
        self.sorted = false;
    }
    fn merge(&mut self, other: Histogram) {
        self.us.extend(other.us);
        self.sorted = false;
    }
    fn len(&self) -> usize {
        self.us.len()
    }
    /// Nearest-rank percentile in milliseconds (`q` in 0..=100).
    fn percentile_ms(&mut self, q: f64) -> f64 {
        if !self.sorted {
            self.us.sort_unstable();
            self.sorted = true;
        }
        if self.us.is_empty() {
            return f64::NAN;
        }
        let rank = ((q / 100.0) * self.us.len() as f64).ceil() as usize;
        let i = rank.clamp(1, self.us.len()) - 1;
        f64::from(self.us[i]) / 1000.0
    }
    /// `p50 / p99 / max` in ms.
    fn triple(&mut self) -> String {
        format!(
            "{} / {} / {}",
            fmt_ms(self.percentile_ms(50.0)),
            fmt_ms(self.percentile_ms(99.0)),
            fmt_ms(self.percentile_ms(100.0))
        )
    }
}

fn fmt_ms(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v < 10.0 {
        format!("{v:.2}")
    } else if v < 1000.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Resident memory of a process (kB).
#[derive(Clone, Copy, Debug, Default)]
struct Mem {
    rss_kb: u64,
    hwm_kb: u64,
}

fn proc_mem(pid: Option<u32>) -> Option<Mem> {
    let text = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    let field = |name: &str| -> Option<u64> {
        text.lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some(Mem {
        rss_kb: field("VmRSS:")?,
        hwm_kb: field("VmHWM:")?,
    })
}

fn fmt_mib(kb: u64) -> String {
    format!("{:.0} MiB", kb as f64 / 1024.0)
}

/// CPU seconds (user + system, all threads) a process has used so far.
fn proc_cpu_secs(pid: Option<u32>) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{}/stat", pid?)).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) of proc(5); `rest` starts at field 3.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
}

/// CPU used by the apiserver, the store and this load generator over one phase.
#[derive(Clone, Copy, Debug, Default)]
struct Cpu {
    apiserver: f64,
    store: f64,
    client: f64,
    secs: f64,
}

impl Cpu {
    fn cores(&self) -> String {
        let c = |x: f64| {
            if self.secs > 0.0 {
                format!("{:.2}", x / self.secs)
            } else {
                "-".into()
            }
        };
        format!(
            "{} / {} / {}",
            c(self.apiserver),
            c(self.store),
            c(self.client)
        )
    }
}

struct CpuMark {
    api: Option<f64>,
    store: Option<f64>,
    client: Option<f64>,
    at: Instant,
}

fn cpu_mark(api: &ApiServerProc) -> CpuMark {
    CpuMark {
        api: proc_cpu_secs(api.pid()),
        store: proc_cpu_secs(api.store.pid()),
        client: proc_cpu_secs(Some(std::process::id())),
        at: Instant::now(),
    }
}

fn cpu_since(m: &CpuMark, api: &ApiServerProc) -> Cpu {
    let d = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => b - a,
        _ => f64::NAN,
    };
    Cpu {
        apiserver: d(m.api, proc_cpu_secs(api.pid())),
        store: d(m.store, proc_cpu_secs(api.store.pid())),
        client: d(m.client, proc_cpu_secs(Some(std::process::id()))),
        secs: m.at.elapsed().as_secs_f64(),
    }
}

/// `perf record` of one process while a phase runs (only with `--perf-dir`).
struct Perf(Option<Child>);

impl Perf {
    fn start(dir: Option<&Path>, pid: Option<u32>, name: &str) -> Perf {
        let (Some(dir), Some(pid)) = (dir, pid) else {
            return Perf(None);
        };
        let _ = std::fs::create_dir_all(dir);
        let out = dir.join(format!("{name}.data"));
        let child = Command::new("perf")
            .args([
                "record",
                "-F",
                "199",
                "--call-graph",
                "dwarf,16384",
                "-p",
                &pid.to_string(),
                "-o",
            ])
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match child {
            Ok(c) => {
                println!("    (perf record → {})", out.display());
                std::thread::sleep(Duration::from_millis(300));
                Perf(Some(c))
            }
            Err(e) => {
                println!("    (perf record failed to start: {e})");
                Perf(None)
            }
        }
    }

    fn stop(mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = Command::new("kill")
                .args(["-INT", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// objects

fn ns_name(i: usize) -> String {
    format!("bench-{i:03}")
}

fn node_name(i: usize) -> String {
    format!("node-{i:05}")
}

/// A 5-character base-36 suffix, a bijection of `i` below 36^5 (looks random, never repeats).
fn suffix(i: usize) -> String {
    const M: u64 = 60_466_176; // 36^5
    let mut x = (i as u64).wrapping_mul(1_000_003) % M;
    let mut s = [b'0'; 5];
    for c in s.iter_mut().rev() {
        let d = (x % 36) as u8;
        *c = if d < 10 { b'0' + d } else { b'a' + d - 10 };
        x /= 36;
    }
    String::from_utf8_lossy(&s).into_owned()
}

fn fake_uid(seed: u64) -> String {
    let a = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let b = a.rotate_left(17) ^ 0x5851_f42d_4c95_7f2d;
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        (a >> 32) as u32,
        (a >> 16) as u16,
        (a & 0xfff) as u16,
        (b >> 52) as u16 & 0xfff,
        b & 0xffff_ffff_ffff
    )
}

/// What one bench pod looks like.
struct PodShape<'a> {
    ns: &'a str,
    /// Global index (unique per run and prefix).
    idx: usize,
    /// Name prefix: `app` for the preload, `m<mode>` for the measured creates.
    prefix: &'a str,
    node: String,
    /// Send time for the watch-latency annotation.
    sent_us: Option<u64>,
}

impl PodShape<'_> {
    /// A Deployment-like pod: 10 pods per ReplicaSet, 3 apps per namespace.
    fn app(&self) -> (String, String) {
        let app = format!("{}-{}", self.prefix, (self.idx / 10) % 3);
        let hash = format!("{:x}", 0x5d8f_4b7c9u64 + (self.idx / 10) as u64 * 7919);
        (app, hash)
    }

    fn name(&self) -> String {
        let (app, hash) = self.app();
        format!("{app}-{hash}-{}", suffix(self.idx))
    }

    fn manifest(&self) -> Value {
        let (app, hash) = self.app();
        let mut annotations = json!({
            "kubectl.kubernetes.io/default-container": "app",
            "prometheus.io/scrape": "true",
            "prometheus.io/port": "9090",
        });
        if let Some(t) = self.sent_us {
            annotations["bench.kumo.dev/sent-unix-us"] = json!(t.to_string());
        }
        let field_env = |name: &str, path: &str| json!({"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}});
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": self.name(),
                "namespace": self.ns,
                "labels": {
                    "app.kubernetes.io/name": app,
                    "app.kubernetes.io/part-of": "kumo-bench",
                    "app.kubernetes.io/version": "v1.8.3",
                    "pod-template-hash": hash,
                    "tier": "backend",
                },
                "annotations": annotations,
                "ownerReferences": [{
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": format!("{app}-{hash}"),
                    "uid": fake_uid((self.idx / 10) as u64),
                    "controller": true,
                    "blockOwnerDeletion": true,
                }],
            },
            "spec": {
                "nodeName": self.node,
                "containers": [{
                    "name": "app",
                    "image": format!("registry.example.com/platform/{app}:v1.8.3"),
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["/app/server"],
                    "args": ["--port=8080", "--metrics-port=9090", "--log-level=info", "--config=/etc/app/config.yaml"],
                    "ports": [
                        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
                        {"name": "metrics", "containerPort": 9090, "protocol": "TCP"},
                    ],
                    "env": [
                        field_env("POD_NAME", "metadata.name"),
                        field_env("POD_NAMESPACE", "metadata.namespace"),
                        field_env("NODE_NAME", "spec.nodeName"),
                        field_env("POD_IP", "status.podIP"),
                        {"name": "GOMAXPROCS", "valueFrom": {"resourceFieldRef": {"containerName": "app", "resource": "limits.cpu", "divisor": "1"}}},
                        {"name": "LOG_FORMAT", "value": "json"},
                        {"name": "DATABASE_URL", "value": "postgres://app@db.backend.svc.cluster.local:5432/app?sslmode=require"},
                        {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://otel-collector.observability.svc:4317"},
                    ],
                    "resources": {
                        "requests": {"cpu": "100m", "memory": "128Mi"},
                        "limits": {"cpu": "500m", "memory": "256Mi"},
                    },
                    "livenessProbe": {
                        "httpGet": {"path": "/healthz", "port": 8080, "scheme": "HTTP"},
                        "initialDelaySeconds": 10, "periodSeconds": 10, "timeoutSeconds": 1,
                        "successThreshold": 1, "failureThreshold": 3,
                    },
                    "readinessProbe": {
                        "httpGet": {"path": "/readyz", "port": 8080, "scheme": "HTTP"},
                        "periodSeconds": 5, "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3,
                    },
                    "volumeMounts": [{"name": "config", "mountPath": "/etc/app", "readOnly": true}],
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File",
                }],
                "volumes": [{"name": "config", "configMap": {"name": format!("{app}-config"), "defaultMode": 420}}],
                "restartPolicy": "Always",
                "terminationGracePeriodSeconds": 30,
                "dnsPolicy": "ClusterFirst",
                "serviceAccountName": "default",
                "securityContext": {},
                "schedulerName": "default-scheduler",
                "tolerations": [
                    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                ],
                "priority": 0,
                "enableServiceLinks": true,
                "preemptionPolicy": "PreemptLowerPriority",
            },
        })
    }

    /// The merge patch a kubelet's status sync amounts to: Running, ready, IPs, one container.
    fn running_status(&self) -> Value {
        let i = self.idx;
        let host_ip = format!("10.0.{}.{}", (i / 250) % 250, i % 250 + 1);
        let pod_ip = format!(
            "10.{}.{}.{}",
            64 + (i / 62_500) % 64,
            (i / 250) % 250,
            i % 250 + 2
        );
        let t = "2026-11-22T06:00:00Z";
        let cond = |ty: &str| json!({"type": ty, "status": "True", "lastProbeTime": null, "lastTransitionTime": t});
        json!({"status": {
            "phase": "Running",
            "conditions": [
                cond("PodReadyToStartContainers"), cond("Initialized"), cond("Ready"),
                cond("ContainersReady"), cond("PodScheduled"),
            ],
            "hostIP": host_ip,
            "hostIPs": [{"ip": host_ip}],
            "podIP": pod_ip,
            "podIPs": [{"ip": pod_ip}],
            "startTime": t,
            "qosClass": "Burstable",
            "containerStatuses": [{
                "name": "app",
                "state": {"running": {"startedAt": t}},
                "lastState": {},
                "ready": true,
                "restartCount": 0,
                "image": format!("registry.example.com/platform/{}:v1.8.3", self.app().0),
                "imageID": "registry.example.com/platform/app@sha256:4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945",
                "containerID": format!("containerd://{:064x}", (i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)),
                "started": true,
            }],
        }})
    }
}

/// Preloaded pod `i`: namespace round-robin, node `i mod nodes`.
fn preload_pod(i: usize, ns: &str, nodes: usize) -> PodShape<'_> {
    PodShape {
        ns,
        idx: i,
        prefix: "app",
        node: node_name(i % nodes.max(1)),
        sent_us: None,
    }
}

fn node_manifest(i: usize) -> Value {
    let name = node_name(i);
    let zone = ["a", "b", "c"][i % 3];
    let t = "2026-11-22T06:00:00Z";
    let cond = |ty: &str, status: &str, reason: &str, msg: &str| {
        json!({"type": ty, "status": status, "lastHeartbeatTime": t, "lastTransitionTime": t,
               "reason": reason, "message": msg})
    };
    let res = json!({"cpu": "4", "ephemeral-storage": "101430960Ki", "hugepages-1Gi": "0",
                     "hugepages-2Mi": "0", "memory": "16211568Ki", "pods": "110"});
    let images: Vec<Value> = [
        ("registry.example.com/platform/app-0", 48_211_733),
        ("registry.example.com/platform/app-1", 51_002_114),
        ("registry.k8s.io/kube-proxy", 30_220_156),
        ("docker.io/calico/node", 118_331_914),
        ("registry.k8s.io/pause", 320_368),
    ]
    .iter()
    .map(|(n, size)| json!({"names": [format!("{n}@sha256:{:064x}", *size as u128 * 31), format!("{n}:v1")], "sizeBytes": size}))
    .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "beta.kubernetes.io/arch": "amd64",
                "beta.kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "node.kubernetes.io/instance-type": "m5.xlarge",
                "topology.kubernetes.io/region": "eu-west-1",
                "topology.kubernetes.io/zone": format!("eu-west-1{zone}"),
            },
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            },
        },
        "spec": {
            "podCIDR": format!("10.{}.{}.0/24", 64 + i / 256, i % 256),
            "podCIDRs": [format!("10.{}.{}.0/24", 64 + i / 256, i % 256)],
            "providerID": format!("aws:///eu-west-1{zone}/i-{:017x}", i as u64 * 7_777_777),
        },
        "status": {
            "capacity": res,
            "allocatable": res,
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                cond("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": format!("10.0.{}.{}", i / 250, i % 250 + 1)},
                {"type": "Hostname", "address": name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": format!("{:032x}", i as u128 * 0x1234_5678_9abc),
                "systemUUID": fake_uid(i as u64 + 1_000_000),
                "bootID": fake_uid(i as u64 + 2_000_000),
                "kernelVersion": "6.1.0-27-cloud-amd64",
                "osImage": "Debian GNU/Linux 12 (bookworm)",
                "containerRuntimeVersion": "containerd://1.7.22",
                "kubeletVersion": "v1.33.0",
                "kubeProxyVersion": "v1.33.0",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
            "images": images,
        },
    })
}

// ---------------------------------------------------------------------------------------------
// client side

async fn make_client(kubeconfig: &Path) -> Result<Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).context("read kubeconfig")?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .context("kubeconfig → config")?;
    Client::try_from(cfg).context("kube client")
}

/// Just enough of a written object to see its status phase / conditions.
#[derive(Deserialize, Clone)]
struct Written {
    #[serde(default)]
    status: Option<WrittenStatus>,
}

#[derive(Deserialize, Clone)]
struct WrittenStatus {
    #[serde(default)]
    phase: Option<String>,
    #[serde(default)]
    conditions: Option<Vec<IgnoredAny>>,
}

/// Just enough of a watched pod for the latency.
#[derive(Deserialize, Clone)]
struct WatchedPod {
    metadata: WatchedMeta,
}

#[derive(Deserialize, Clone)]
struct WatchedMeta {
    #[serde(default)]
    annotations: Option<HashMap<String, String>>,
}

#[derive(Deserialize)]
struct ListShape {
    #[serde(default)]
    metadata: ListMeta,
    #[serde(default)]
    items: Vec<IgnoredAny>,
}

#[derive(Deserialize, Default)]
struct ListMeta {
    #[serde(default, rename = "resourceVersion")]
    resource_version: Option<String>,
    #[serde(default, rename = "continue")]
    continue_token: Option<String>,
}

fn pods_path(ns: &str) -> String {
    format!("/api/v1/namespaces/{ns}/pods")
}

async fn create_raw(client: &Client, collection: &str, obj: &Value) -> kube::Result<Written> {
    let body = serde_json::to_vec(obj).map_err(kube::Error::SerdeError)?;
    let req = Request::new(collection)
        .create(&PostParams::default(), body)
        .map_err(kube::Error::BuildRequest)?;
    client.request::<Written>(req).await
}

async fn patch_status_raw(
    client: &Client,
    collection: &str,
    name: &str,
    patch: &Value,
) -> kube::Result<Written> {
    let req = Request::new(collection)
        .patch_subresource(
            "status",
            name,
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .map_err(kube::Error::BuildRequest)?;
    client.request::<Written>(req).await
}

fn is_retryable(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => matches!(s.code, 429 | 500 | 503 | 504),
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// Runs `op(i)` for `i` in `0..n` with `concurrency` in flight, retrying transient errors;
/// returns (seconds, errors, first error). An AlreadyExists on a retry counts as done.
async fn run_bounded<F, Fut>(
    label: &str,
    n: usize,
    concurrency: usize,
    op: F,
) -> (f64, usize, Option<String>)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = kube::Result<()>> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (op, next, done) = (op.clone(), next.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut errors = 0usize;
            let mut first: Option<String> = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    match op(i).await {
                        Ok(()) => break,
                        Err(e) if attempt > 1 && is_conflict(&e) => break,
                        Err(e) if attempt < 6 && is_retryable(&e) => {
                            tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                        }
                        Err(e) => {
                            errors += 1;
                            if first.is_none() {
                                first = Some(e.to_string());
                            }
                            break;
                        }
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            (errors, first)
        }));
    }
    let progress = {
        let done = done.clone();
        let label = label.to_string();
        tokio::spawn(async move {
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(15)).await;
                let d = done.load(Ordering::Relaxed);
                let el = t0.elapsed().as_secs_f64();
                println!(
                    "    {label}: {d}/{n} after {el:.0} s ({:.0}/s over the last 15 s, load {})",
                    (d - last) as f64 / 15.0,
                    loadavg()
                );
                last = d;
            }
        })
    };
    let mut errors = 0;
    let mut first = None;
    for t in tasks {
        if let Ok((e, f)) = t.await {
            errors += e;
            if first.is_none() {
                first = f;
            }
        }
    }
    progress.abort();
    (t0.elapsed().as_secs_f64(), errors, first)
}

// ---------------------------------------------------------------------------------------------
// phases

struct Preload {
    what: String,
    n: usize,
    secs: f64,
    errors: usize,
    first_error: Option<String>,
    cpu: Cpu,
}

impl Preload {
    fn rate(&self) -> f64 {
        self.n as f64 / self.secs
    }
}

struct ListRun {
    secs: f64,
    ttfb: f64,
    bytes: usize,
    items: Option<usize>,
}

struct Paged {
    secs: f64,
    pages: usize,
    items: usize,
}

struct CreatePhase {
    mode: WatchMode,
    watchers: usize,
    open_secs: f64,
    sent: usize,
    ok: usize,
    errors: usize,
    first_error: Option<String>,
    send_secs: f64,
    all_done_secs: f64,
    max_lag_ms: f64,
    create: Histogram,
    from_schedule: Histogram,
    delivery: Histogram,
    expected: usize,
    watch_errors: usize,
    first_watch_error: Option<String>,
    watchers_ended: usize,
    cpu: Cpu,
    load: String,
    /// Where the time went by the servers' own histograms (see [`server_view`]).
    server: String,
}

#[derive(Default)]
struct StoreReport {
    store: String,
    preload: Vec<Preload>,
    lists: Vec<ListRun>,
    paged: Option<Paged>,
    list_cpu: Option<Cpu>,
    phases: Vec<CreatePhase>,
    api_start: Option<Mem>,
    api_after_preload: Option<Mem>,
    api_after_list: Option<Mem>,
    api_end: Option<Mem>,
    store_after_preload: Option<Mem>,
    store_end: Option<Mem>,
    load_start: String,
    load_end: String,
    notes: Vec<String>,
}

async fn setup_namespaces(client: &Client, n: usize) -> Result<()> {
    for i in 0..n {
        let ns = ns_name(i);
        let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        match create_raw(client, "/api/v1/namespaces", &obj).await {
            Ok(_) => {}
            Err(e) if is_conflict(&e) => {}
            Err(e) => return Err(anyhow!("create namespace {ns}: {e}")),
        }
        // No controller-manager yet: the default ServiceAccount the pods' admission needs.
        let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": ns}});
        match create_raw(
            client,
            &format!("/api/v1/namespaces/{ns}/serviceaccounts"),
            &sa,
        )
        .await
        {
            Ok(_) => {}
            Err(e) if is_conflict(&e) => {}
            Err(e) => return Err(anyhow!("create serviceaccount {ns}/default: {e}")),
        }
    }
    // Admission looks the ServiceAccount up in the watch cache: wait until the cache has them.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let req = Request::new("/api/v1/serviceaccounts")
            .list(&kube::api::ListParams::default().match_any())
            .map_err(kube::Error::BuildRequest)?;
        let l: ListShape = client.request(req).await?;
        if l.items.len() >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "only {} ServiceAccounts in the cache after 30 s",
                l.items.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn preload(
    api: &ApiServerProc,
    client: &Client,
    args: &Args,
    rep: &mut StoreReport,
) -> Result<()> {
    let conc = args.preload_concurrency;
    let nodes = args.nodes();
    let pods = args.pods();
    let nss = args.namespaces.max(1);

    // Nodes: create, then a status update if the create did not keep the status.
    let mark = cpu_mark(api);
    let c = client.clone();
    let (secs, errors, first) = run_bounded("nodes", nodes, conc, move |i| {
        let c = c.clone();
        async move {
            let obj = node_manifest(i);
            let w = create_raw(&c, "/api/v1/nodes", &obj).await?;
            let has_conditions = w
                .status
                .and_then(|s| s.conditions)
                .is_some_and(|c| !c.is_empty());
            if !has_conditions {
                let status = json!({"status": obj["status"].clone()});
                patch_status_raw(&c, "/api/v1/nodes", &node_name(i), &status).await?;
            }
            Ok(())
        }
    })
    .await;
    rep.preload.push(Preload {
        what: "nodes (create)".into(),
        n: nodes,
        secs,
        errors,
        first_error: first,
        cpu: cpu_since(&mark, api),
    });
    println!(
        "    {nodes} nodes in {secs:.1} s ({:.0}/s, {errors} errors)",
        nodes as f64 / secs
    );

    // Pods: creates first (the create path), then the status updates (kubelets' path).
    let needs_status = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let perf = Perf::start(
        args.perf_dir.as_deref(),
        api.pid(),
        &format!("{}-preload-pods", store_label(api)),
    );
    let mark = cpu_mark(api);
    let c = client.clone();
    let ns_list: Arc<Vec<String>> = Arc::new((0..nss).map(ns_name).collect());
    let nsl = ns_list.clone();
    let ns_flag = needs_status.clone();
    let (secs, errors, first) = run_bounded("pods (create)", pods, conc, move |i| {
        let c = c.clone();
        let nsl = nsl.clone();
        let flag = ns_flag.clone();
        async move {
            let ns = &nsl[i % nsl.len()];
            let p = preload_pod(i, ns, nodes);
            let mut obj = p.manifest();
            // Ask for the final status in the create: kept if the apiserver keeps it.
            if let (Some(o), Some(s)) = (obj.as_object_mut(), p.running_status().get("status")) {
                o.insert("status".into(), s.clone());
            }
            let w = create_raw(&c, &pods_path(ns), &obj).await?;
            let running = w.status.and_then(|s| s.phase).as_deref() == Some("Running");
            if !running {
                flag.store(true, Ordering::Relaxed);
            }
            Ok(())
        }
    })
    .await;
    perf.stop();
    rep.preload.push(Preload {
        what: format!("pods (create, {conc} in flight)"),
        n: pods,
        secs,
        errors,
        first_error: first,
        cpu: cpu_since(&mark, api),
    });
    println!(
        "    {pods} pods created in {secs:.1} s ({:.0}/s, {errors} errors)",
        pods as f64 / secs
    );

    if needs_status.load(Ordering::Relaxed) {
        let perf = Perf::start(
            args.perf_dir.as_deref(),
            api.pid(),
            &format!("{}-preload-status", store_label(api)),
        );
        let mark = cpu_mark(api);
        let c = client.clone();
        let nsl = ns_list.clone();
        let (secs, errors, first) = run_bounded("pods (status)", pods, conc, move |i| {
            let c = c.clone();
            let nsl = nsl.clone();
            async move {
                let ns = &nsl[i % nsl.len()];
                let p = preload_pod(i, ns, nodes);
                patch_status_raw(&c, &pods_path(ns), &p.name(), &p.running_status()).await?;
                Ok(())
            }
        })
        .await;
        perf.stop();
        rep.preload.push(Preload {
            what: format!("pod status → Running (merge patch on pods/status, {conc} in flight)"),
            n: pods,
            secs,
            errors,
            first_error: first,
            cpu: cpu_since(&mark, api),
        });
        println!(
            "    {pods} pod statuses set to Running in {secs:.1} s ({:.0}/s, {errors} errors)",
            pods as f64 / secs
        );
    } else {
        rep.notes
            .push("the pod create kept status Running: no status updates needed".into());
    }
    Ok(())
}

fn get_request(path: &str) -> Result<http::Request<Vec<u8>>> {
    http::Request::get(path)
        .header(http::header::ACCEPT, "application/json")
        .body(Vec::new())
        .context("build request")
}

/// One cluster-wide LIST of all pods, streamed and timed to the last byte.
async fn list_all(client: &Client, count_items: bool) -> Result<ListRun> {
    let req = get_request("/api/v1/pods")?;
    let t0 = Instant::now();
    let resp = client
        .send(req.map(kube::client::Body::from))
        .await
        .context("LIST /api/v1/pods")?;
    let ttfb = t0.elapsed().as_secs_f64();
    let status = resp.status();
    let mut body = resp.into_body();
    let mut bytes = 0usize;
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| anyhow!("LIST body: {e}"))?;
        if let Ok(data) = frame.into_data() {
            bytes += data.len();
            if count_items || !status.is_success() {
                buf.extend_from_slice(&data);
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    if !status.is_success() {
        bail!(
            "LIST /api/v1/pods: HTTP {status}: {}",
            String::from_utf8_lossy(&buf[..buf.len().min(500)])
        );
    }
    let items = if count_items {
        let l: ListShape = serde_json::from_slice(&buf).context("parse the LIST")?;
        Some(l.items.len())
    } else {
        None
    };
    Ok(ListRun {
        secs,
        ttfb,
        bytes,
        items,
    })
}

async fn list_paged(client: &Client, page: u32) -> Result<Paged> {
    let t0 = Instant::now();
    let mut cont: Option<String> = None;
    let (mut pages, mut items) = (0, 0);
    loop {
        let mut lp = kube::api::ListParams::default().limit(page);
        if let Some(c) = &cont {
            lp = lp.continue_token(c);
        }
        let req = Request::new("/api/v1/pods")
            .list(&lp)
            .map_err(kube::Error::BuildRequest)?;
        let l: ListShape = client.request(req).await.context("paged LIST")?;
        pages += 1;
        items += l.items.len();
        match l.metadata.continue_token {
            Some(c) if !c.is_empty() => cont = Some(c),
            _ => break,
        }
    }
    Ok(Paged {
        secs: t0.elapsed().as_secs_f64(),
        pages,
        items,
    })
}

/// What one watcher saw.
#[derive(Default)]
struct WatcherOut {
    delivery: Histogram,
    errors: usize,
    first_error: Option<String>,
    ended: bool,
}

async fn current_rv(client: &Client) -> Result<String> {
    let req = Request::new("/api/v1/pods")
        .list(&kube::api::ListParams::default().limit(1))
        .map_err(kube::Error::BuildRequest)?;
    let l: ListShape = client.request(req).await.context("LIST limit=1")?;
    l.metadata
        .resource_version
        .filter(|r| !r.is_empty())
        .context("no resourceVersion in the list")
}

/// Opens about `conns` connections in `client`'s pool (concurrent cheap GETs), so the paced
/// phase measures requests on established connections, as long-running clients send them
/// (and as upstream's latency SLI, taken inside the apiserver, counts them), not hundreds of
/// TLS handshakes in its first second.
async fn warm_up(client: &Client, conns: usize) {
    let reqs = (0..conns).map(|_| {
        let client = client.clone();
        async move {
            let req = http::Request::get("/api/v1/namespaces/default")
                .body(Vec::new())
                .map_err(kube::Error::HttpError)?;
            client.request::<IgnoredAny>(req).await.map(|_| ())
        }
    });
    let failed = futures::future::join_all(reqs)
        .await
        .into_iter()
        .filter(Result::is_err)
        .count();
    if failed > 0 {
        eprintln!("    (warm-up: {failed} of {conns} requests failed)");
    }
}

/// The apiserver's and the store's `/metrics` samples at one moment (none when a scrape
/// fails: the report then leaves that histogram out).
struct Scrape {
    api: Vec<Sample>,
    store: Vec<Sample>,
}

async fn scrape(client: &Client, api: &ApiServerProc) -> Scrape {
    let api_text = match http::Request::get("/metrics")
        .header(http::header::ACCEPT, "text/plain")
        .body(Vec::new())
    {
        Ok(req) => client.request_text(req).await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let url = format!("{}/metrics", api.store.metrics_url());
    let store = tokio::task::spawn_blocking(move || {
        kumo_tests::http_get(&url, Duration::from_secs(10))
            .map(|r| r.body)
            .unwrap_or_default()
    })
    .await
    .unwrap_or_default();
    let parse = |text: &str| parse_exposition(text).unwrap_or_default();
    Scrape {
        api: parse(&api_text),
        store: parse(&store),
    }
}

/// Cumulative bucket counts `(le, count)` of the histogram `name`, summed over the series
/// carrying every pair of `labels`.
fn buckets(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Vec<(f64, f64)> {
    let bucket = format!("{name}_bucket");
    let mut out: Vec<(f64, f64)> = Vec::new();
    for s in samples.iter().filter(|s| s.name == bucket) {
        if !labels
            .iter()
            .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        {
            continue;
        }
        let le = match s.labels.get("le").map(String::as_str) {
            Some("+Inf") => f64::INFINITY,
            Some(le) => le.parse().unwrap_or(f64::NAN),
            None => continue,
        };
        match out.iter_mut().find(|(l, _)| *l == le) {
            Some(b) => b.1 += s.value,
            None => out.push((le, s.value)),
        }
    }
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// How many observations of a histogram fell between two scrapes, how many of them above
/// the first bucket bound ≥ `threshold` (that bound), and the bucket bound of the 99th
/// percentile. `None` when the histogram is missing or saw nothing.
fn over(
    before: &[Sample],
    after: &[Sample],
    name: &str,
    labels: &[(&str, &str)],
    threshold: f64,
) -> Option<String> {
    let b = buckets(before, name, labels);
    let a = buckets(after, name, labels);
    let at = |v: &[(f64, f64)], le: f64| {
        v.iter()
            .find(|(l, _)| *l == le)
            .map(|(_, c)| *c)
            .unwrap_or(0.0)
    };
    let diff: Vec<(f64, f64)> = a.iter().map(|(le, c)| (*le, c - at(&b, *le))).collect();
    let total = diff.last().map(|(_, c)| *c).unwrap_or(0.0);
    if total <= 0.0 {
        return None;
    }
    let (bound, under) = diff.iter().find(|(le, _)| *le >= threshold).copied()?;
    let p99 = diff
        .iter()
        .find(|(_, c)| *c >= 0.99 * total)
        .map(|(le, _)| *le)
        .unwrap_or(f64::INFINITY);
    Some(format!(
        "{:.0} of {total:.0} over {bound} s (p99 ≤ {p99} s)",
        total - under
    ))
}

/// The servers' own view of a create phase: the apiserver's request latency for pod
/// creates, its calls to the store, and the store's WAL fsyncs and backend commits.
fn server_view(before: &Scrape, after: &Scrape) -> String {
    let parts = [
        (
            "apiserver POST pods",
            over(
                &before.api,
                &after.api,
                "apiserver_request_duration_seconds",
                &[("verb", "POST"), ("resource", "pods"), ("subresource", "")],
                0.1,
            ),
        ),
        (
            "its store creates",
            over(
                &before.api,
                &after.api,
                "etcd_request_duration_seconds",
                &[("operation", "create"), ("type", "/registry/pods")],
                0.1,
            ),
        ),
        (
            "store WAL fsync",
            over(
                &before.store,
                &after.store,
                "etcd_disk_wal_fsync_duration_seconds",
                &[],
                0.1,
            ),
        ),
        (
            "store backend commit",
            over(
                &before.store,
                &after.store,
                "etcd_disk_backend_commit_duration_seconds",
                &[],
                0.1,
            ),
        ),
    ];
    parts
        .into_iter()
        .filter_map(|(what, v)| v.map(|v| format!("{what} {v}")))
        .collect::<Vec<_>>()
        .join("; ")
}

async fn create_phase(
    api: &ApiServerProc,
    mode: WatchMode,
    phase_no: usize,
    args: &Args,
) -> Result<CreatePhase> {
    let nss = args.namespaces.max(1);
    let watchers = args.watchers;
    // The keys watchers are on (node names or namespaces) and how many watchers each has.
    let keys: Vec<String> = match mode {
        WatchMode::Node => (0..watchers.min(args.nodes()).max(1))
            .map(node_name)
            .collect(),
        WatchMode::Namespace => (0..watchers.min(nss).max(1)).map(ns_name).collect(),
    };
    let mut per_key: HashMap<String, usize> = HashMap::new();
    for i in 0..watchers {
        *per_key.entry(keys[i % keys.len()].clone()).or_default() += 1;
    }
    let watched_nodes = match mode {
        WatchMode::Node => keys.len(),
        WatchMode::Namespace => args.nodes().max(1),
    };

    // Separate clients (connection pools) for the watches and the creates.
    let wclient = make_client(&api.kubeconfig).await?;
    let cclient = make_client(&api.kubeconfig).await?;
    warm_up(&cclient, args.max_in_flight.min(256)).await;
    let rv = current_rv(&cclient).await?;

    // Open the watches at `rv`, 64 handshakes at a time.
    let t_open = Instant::now();
    let received = Arc::new(AtomicUsize::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let opened: Vec<Result<_>> = futures::stream::iter(0..watchers)
        .map(|i| {
            let key = keys[i % keys.len()].clone();
            let client = wclient.clone();
            let rv = rv.clone();
            async move {
                let (path, wp) = match mode {
                    WatchMode::Node => (
                        "/api/v1/pods".to_string(),
                        WatchParams::default().fields(&format!("spec.nodeName={key}")),
                    ),
                    WatchMode::Namespace => (pods_path(&key), WatchParams::default()),
                };
                let req = Request::new(path)
                    .watch(&wp.timeout(290), &rv)
                    .map_err(kube::Error::BuildRequest)?;
                let stream = client.request_events::<WatchedPod>(req).await?;
                Ok::<_, anyhow::Error>(stream.boxed())
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let mut tasks = Vec::with_capacity(watchers);
    let mut open_errors = Vec::new();
    for o in opened {
        match o {
            Ok(mut stream) => {
                let mut stop = stop_rx.clone();
                let received = received.clone();
                tasks.push(tokio::spawn(async move {
                    let mut out = WatcherOut::default();
                    loop {
                        tokio::select! {
                            ev = stream.try_next() => match ev {
                                Ok(Some(WatchEvent::Added(p) | WatchEvent::Modified(p))) => {
                                    let now = unix_us();
                                    let sent = p.metadata.annotations.as_ref()
                                        .and_then(|a| a.get("bench.kumo.dev/sent-unix-us"))
                                        .and_then(|s| s.parse::<u64>().ok());
                                    if let Some(sent) = sent {
                                        out.delivery.record_us(now.saturating_sub(sent));
                                        received.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                                Ok(Some(WatchEvent::Error(s))) => {
                                    out.errors += 1;
                                    out.first_error.get_or_insert_with(|| format!("{s:?}"));
                                }
                                Ok(Some(_)) => {}
                                Ok(None) => { out.ended = true; break; }
                                Err(e) => {
                                    out.errors += 1;
                                    out.first_error.get_or_insert_with(|| e.to_string());
                                    out.ended = true;
                                    break;
                                }
                            },
                            _ = stop.changed() => break,
                        }
                    }
                    out
                }));
            }
            Err(e) => open_errors.push(format!("{e:#}")),
        }
    }
    let open_secs = t_open.elapsed().as_secs_f64();
    println!(
        "    {} watches open ({} failed) in {open_secs:.1} s at resourceVersion {rv}",
        tasks.len(),
        open_errors.len()
    );
    if tasks.is_empty() {
        bail!(
            "no watch could be opened: {}",
            open_errors.first().cloned().unwrap_or_default()
        );
    }

    // Warm the create client's connection pool (HTTP/1.1: one connection per request in flight).
    let warm: Vec<_> = (0..64)
        .map(|_| {
            let c = cclient.clone();
            async move {
                let req = get_request("/api/v1/namespaces/default")?;
                c.request_text(req).await.map_err(anyhow::Error::from)
            }
        })
        .collect();
    futures::future::join_all(warm).await;

    // Paced, open-loop creates.
    let perf = Perf::start(
        args.perf_dir.as_deref(),
        api.pid(),
        &format!("{}-create-{}", store_label(api), mode.name()),
    );
    let load_before = loadavg();
    let scrape_before = scrape(&cclient, api).await;
    let mark = cpu_mark(api);
    let total = (f64::from(args.rate) * args.duration().as_secs_f64()).round() as usize;
    let sem = Arc::new(Semaphore::new(args.max_in_flight.max(1)));
    let t0 = tokio::time::Instant::now();
    let t0_wall = jiff::Timestamp::now();
    let mut set = tokio::task::JoinSet::new();
    let mut max_lag = Duration::ZERO;
    let ns_list: Arc<Vec<String>> = Arc::new((0..nss).map(ns_name).collect());
    let prefix = format!("m{phase_no}");
    let mut expected_by_pod: Vec<usize> = Vec::with_capacity(total);
    for i in 0..total {
        let due = t0 + Duration::from_secs_f64(i as f64 / f64::from(args.rate));
        tokio::time::sleep_until(due).await;
        let Ok(permit) = sem.clone().acquire_owned().await else {
            break;
        };
        max_lag = max_lag.max(tokio::time::Instant::now() - due);
        let ns = ns_list[i % nss].clone();
        let node = node_name(i % watched_nodes);
        expected_by_pod.push(match mode {
            WatchMode::Node => per_key.get(&node).copied().unwrap_or(0),
            WatchMode::Namespace => per_key.get(&ns).copied().unwrap_or(0),
        });
        let c = cclient.clone();
        let prefix = prefix.clone();
        set.spawn(async move {
            let start = tokio::time::Instant::now();
            let shape = PodShape {
                ns: &ns,
                idx: i,
                prefix: &prefix,
                node,
                sent_us: Some(unix_us()),
            };
            let obj = shape.manifest();
            let r = create_raw(&c, &pods_path(&ns), &obj).await;
            let end = tokio::time::Instant::now();
            drop(permit);
            (i, end - start, end - due, r.map(|_| ()))
        });
    }
    let send_secs = t0.elapsed().as_secs_f64();
    let mut create = Histogram::default();
    let mut from_schedule = Histogram::default();
    let (mut ok, mut errors, mut first_error) = (0usize, 0usize, None);
    let mut expected = 0usize;
    let mut trace: Vec<(usize, Duration)> = Vec::new();
    while let Some(r) = set.join_next().await {
        let Ok((i, lat, sched, res)) = r else {
            errors += 1;
            continue;
        };
        match res {
            Ok(()) => {
                ok += 1;
                trace.push((i, lat));
                create.record(lat);
                from_schedule.record(sched);
                expected += expected_by_pod.get(i).copied().unwrap_or(0);
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    let all_done_secs = t0.elapsed().as_secs_f64();
    if let Some(dir) = &args.latency_trace_dir {
        trace.sort_unstable();
        let mut csv = String::from("index,due_s,latency_ms\n");
        for (i, lat) in &trace {
            csv.push_str(&format!(
                "{i},{:.4},{:.2}\n",
                *i as f64 / f64::from(args.rate),
                lat.as_secs_f64() * 1000.0
            ));
        }
        let path = dir.join(format!("{}-{}.csv", store_label(api), mode.name()));
        // The wall-clock time of due 0, to line the trace up with the servers' logs.
        let start = path.with_extension("start");
        if let Err(e) = std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(&path, csv))
            .and_then(|()| std::fs::write(&start, format!("{t0_wall}\n")))
        {
            eprintln!("    (latency trace {}: {e})", path.display());
        }
    }
    // Stragglers: give the watches up to 20 s to deliver everything.
    let deadline = Instant::now() + Duration::from_secs(20);
    while received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cpu = cpu_since(&mark, api);
    perf.stop();
    let server = server_view(&scrape_before, &scrape(&cclient, api).await);
    let load = format!("{load_before} → {}", loadavg());
    let _ = stop_tx.send(true);
    let mut delivery = Histogram::default();
    let (mut watch_errors, mut first_watch_error, mut watchers_ended) = (0, None, 0);
    let n_watchers = tasks.len();
    for t in tasks {
        if let Ok(out) = t.await {
            delivery.merge(out.delivery);
            watch_errors += out.errors;
            if first_watch_error.is_none() {
                first_watch_error = out.first_error;
            }
            watchers_ended += usize::from(out.ended);
        }
    }
    if let Some(e) = open_errors.first() {
        watch_errors += open_errors.len();
        first_watch_error.get_or_insert_with(|| format!("open: {e}"));
    }
    Ok(CreatePhase {
        mode,
        watchers: n_watchers,
        open_secs,
        sent: total,
        ok,
        errors,
        first_error,
        send_secs,
        all_done_secs,
        max_lag_ms: max_lag.as_secs_f64() * 1000.0,
        create,
        from_schedule,
        delivery,
        expected,
        watch_errors,
        first_watch_error,
        watchers_ended,
        cpu,
        load,
        server,
    })
}

fn store_label(api: &ApiServerProc) -> String {
    api.store.kind.to_string()
}

async fn bench_store(kind: StoreKind, args: &Args) -> Result<StoreReport> {
    let mut rep = StoreReport {
        store: kind.to_string(),
        load_start: loadavg(),
        ..Default::default()
    };
    let work_dir = args.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix(&format!("apiserver-bench-{kind}-"))
        .tempdir_in(&work_dir)
        .with_context(|| format!("create a temp dir in {}", work_dir.display()))?;
    println!(
        "\n--- apiserver on {kind} (under {}) ---",
        dir.path().display()
    );
    let extra: Vec<&str> = args.apiserver_args.iter().map(String::as_str).collect();
    let quota = args.quota_backend_bytes.to_string();
    let mut store_args: Vec<&str> = Vec::new();
    if args.quota_backend_bytes > 0 {
        store_args.extend(["--quota-backend-bytes", &quota]);
    }
    store_args.extend(args.store_args.iter().map(String::as_str));
    let api = tokio::task::block_in_place(|| {
        ApiServerProc::start_with(kind, dir.path(), &store_args, &extra)
    })
    .with_context(|| format!("start the apiserver on {kind}"))?;
    println!(
        "    apiserver pid {:?} on {}, store pid {:?}",
        api.pid(),
        api.url(),
        api.store.pid()
    );
    let client = make_client(&api.kubeconfig).await?;
    rep.api_start = proc_mem(api.pid());

    let outcome = async {
        setup_namespaces(&client, args.namespaces.max(1)).await?;
        println!(
            "    preload: {} nodes, {} pods in {} namespaces …",
            args.nodes(), args.pods(), args.namespaces
        );
        preload(&api, &client, args, &mut rep).await?;
        // Let the cache settle before measuring memory.
        tokio::time::sleep(Duration::from_secs(2)).await;
        rep.api_after_preload = proc_mem(api.pid());
        rep.store_after_preload = proc_mem(api.store.pid());
        if let Some(m) = rep.api_after_preload {
            println!(
                "    apiserver RSS after preload: {} (peak {})",
                fmt_mib(m.rss_kb),
                fmt_mib(m.hwm_kb)
            );
        }

        println!("    LIST of all pods ×{} …", args.list_runs);
        let perf = Perf::start(
            args.perf_dir.as_deref(),
            api.pid(),
            &format!("{kind}-list"),
        );
        let mark = cpu_mark(&api);
        for r in 0..args.list_runs {
            // Timed runs stream the body and drop it: the one that counts the items is
            // untimed (below), as buffering 1.25 GB in the load generator timed its own
            // memory growth (the counting run was the slow one: 2.2-5.4 s, later 1.4-1.6 s).
            let run = list_all(&client, false).await?;
            println!(
                "    LIST #{}: {:.2} s (first byte {:.2} s), {:.1} MB{}",
                r + 1,
                run.secs,
                run.ttfb,
                run.bytes as f64 / 1e6,
                run.items
                    .map(|n| format!(", {n} items"))
                    .unwrap_or_default()
            );
            rep.lists.push(run);
        }
        if let Some(first) = rep.lists.first_mut() {
            let counted = list_all(&client, true).await?;
            println!(
                "    LIST (untimed, counting): {} items",
                counted.items.unwrap_or(0)
            );
            first.items = counted.items;
        }
        if args.page_size > 0 {
            let p = list_paged(&client, args.page_size).await?;
            println!(
                "    paged LIST (limit={}): {:.2} s, {} pages, {} items",
                args.page_size, p.secs, p.pages, p.items
            );
            rep.paged = Some(p);
        }
        rep.list_cpu = Some(cpu_since(&mark, &api));
        perf.stop();
        rep.api_after_list = proc_mem(api.pid());

        for (n, mode) in args.watch_modes.iter().enumerate() {
            println!(
                "    creates at {}/s for {:?} under {} {} watches …",
                args.rate,
                args.duration(),
                args.watchers,
                mode.name()
            );
            let mut p = create_phase(&api, *mode, n, args).await?;
            println!(
                "    {}: {} ok / {} sent, {} errors; create p50/p99/max {} ms; delivery p50/p99/max {} ms ({} of {} events), CPU apiserver/store/client {} cores",
                mode.name(),
                p.ok,
                p.sent,
                p.errors,
                p.create.triple(),
                p.delivery.triple(),
                p.delivery.len(),
                p.expected,
                p.cpu.cores()
            );
            println!("      by the servers' histograms: {}", p.server);
            if let Some(e) = &p.first_error {
                println!("      first create error: {e}");
            }
            if let Some(e) = &p.first_watch_error {
                println!("      first watch error: {e}");
            }
            rep.phases.push(p);
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    rep.api_end = proc_mem(api.pid());
    rep.store_end = proc_mem(api.store.pid());
    rep.load_end = loadavg();
    if let Err(e) = outcome {
        let tail: String = api
            .log_text()
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        rep.notes.push(format!("FAILED: {e:#}"));
        println!("    FAILED: {e:#}\n    apiserver log tail:\n{tail}");
    }
    let warns = api
        .log_text()
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .count();
    if warns > 0 {
        let first = api
            .log_text()
            .lines()
            .find(|l| l.contains("WARN") || l.contains("ERROR"))
            .unwrap_or_default()
            .to_string();
        rep.notes.push(format!(
            "apiserver logged {warns} warnings/errors, first: {first}"
        ));
    }
    drop(api);
    Ok(rep)
}

// ---------------------------------------------------------------------------------------------
// report

fn machine_line(args: &Args) -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let etcd = Command::new(etcd_bin())
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_else(|| "etcd ?".into());
    format!(
        "{cores} cores, load generator (kube-rs 5, HTTP/1.1 + TLS, admin client certificate) on \
         the same machine; {etcd}; {} pods / {} nodes in {} namespaces; creates at {}/s for {:?} \
         under {} watchers (modes: {}); preload {} in flight; store quota {}",
        args.pods(),
        args.nodes(),
        args.namespaces,
        args.rate,
        args.duration(),
        args.watchers,
        args.watch_modes
            .iter()
            .map(|m| m.name())
            .collect::<Vec<_>>()
            .join(", "),
        args.preload_concurrency,
        if args.quota_backend_bytes > 0 {
            format!(
                "{} GiB",
                args.quota_backend_bytes as f64 / (1u64 << 30) as f64
            )
        } else {
            "default (2 GiB)".into()
        }
    )
}

fn cell_mem(m: Option<Mem>) -> String {
    m.map(|m| format!("{} (peak {})", fmt_mib(m.rss_kb), fmt_mib(m.hwm_kb)))
        .unwrap_or_else(|| "-".into())
}

fn markdown(reps: &mut [StoreReport], args: &Args) -> String {
    let mut s = String::new();
    let cmd: Vec<String> = std::env::args().collect();
    let _ = writeln!(s, "Command: `{}`\n", cmd.join(" "));
    let _ = writeln!(s, "Machine: {}.\n", machine_line(args));
    let mut head = "| Measure | Target |".to_string();
    let mut rule = "|---|---|".to_string();
    for r in reps.iter() {
        let _ = write!(head, " apiserver on {} |", r.store);
        rule.push_str("--:|");
    }
    let _ = writeln!(s, "{head}\n{rule}");
    let mut row = |name: &str, target: &str, f: &mut dyn FnMut(&mut StoreReport) -> String| {
        let mut line = format!("| {name} | {target} |");
        for r in reps.iter_mut() {
            let _ = write!(line, " {} |", f(r).replace('|', "\\|"));
        }
        let _ = writeln!(s, "{line}");
    };
    let preload_names: Vec<String> = vec![
        "nodes (create)".into(),
        format!("pods (create, {} in flight)", args.preload_concurrency),
        format!(
            "pod status → Running (merge patch on pods/status, {} in flight)",
            args.preload_concurrency
        ),
    ];
    for name in &preload_names {
        row(&format!("Preload: {name}, per s"), "", &mut |r| {
            r.preload
                .iter()
                .find(|p| &p.what == name)
                .map(|p| {
                    let err = if p.errors > 0 {
                        format!(" ({} errors)", p.errors)
                    } else {
                        String::new()
                    };
                    format!(
                        "{:.0}/s ({} in {:.0} s; CPU {}){err}",
                        p.rate(),
                        p.n,
                        p.secs,
                        p.cpu.cores()
                    )
                })
                .unwrap_or_else(|| "-".into())
        });
    }
    row("Stored pod JSON (avg, from the LIST)", "", &mut |r| {
        r.lists
            .first()
            .and_then(|l| Some(l.bytes as f64 / l.items? as f64))
            .map(|b| format!("{b:.0} B"))
            .unwrap_or_else(|| "-".into())
    });
    row(
        "Cluster-wide LIST of all pods (JSON, one request): each run",
        "≤ 3 s (SLO 30 s)",
        &mut |r| {
            if r.lists.is_empty() {
                return "-".into();
            }
            let runs: Vec<String> = r.lists.iter().map(|l| format!("{:.2} s", l.secs)).collect();
            let l = &r.lists[0];
            format!(
                "{} ({} items, {:.0} MB; first byte {:.2} s)",
                runs.join(", "),
                l.items.map(|n| n.to_string()).unwrap_or_else(|| "?".into()),
                l.bytes as f64 / 1e6,
                l.ttfb
            )
        },
    );
    row(
        &format!("Paged LIST of all pods (limit={}), total", args.page_size),
        "",
        &mut |r| {
            r.paged
                .as_ref()
                .map(|p| format!("{:.1} s ({} pages, {} items)", p.secs, p.pages, p.items))
                .unwrap_or_else(|| "-".into())
        },
    );
    row(
        "CPU during the LISTs (apiserver / store / client, cores)",
        "",
        &mut |r| r.list_cpu.map(|c| c.cores()).unwrap_or_else(|| "-".into()),
    );
    for mode in &args.watch_modes {
        let m = mode.name();
        let find = |r: &mut StoreReport| -> Option<usize> {
            r.phases.iter().position(|p| p.mode == *mode)
        };
        row(
            &format!("[{m} watches] creates: ok / sent, achieved rate"),
            &format!("{}/s", args.rate),
            &mut |r| match find(r) {
                Some(i) => {
                    let p = &r.phases[i];
                    let err = if p.errors > 0 {
                        format!(", {} errors", p.errors)
                    } else {
                        String::new()
                    };
                    format!(
                        "{} / {}, {:.0}/s{err}",
                        p.ok,
                        p.sent,
                        p.ok as f64 / p.all_done_secs.max(p.send_secs)
                    )
                }
                None => "-".into(),
            },
        );
        row(
            &format!("[{m} watches] create latency p50 / p99 / max, ms"),
            "p99 ≤ 100 ms (SLO 1 s)",
            &mut |r| match find(r) {
                Some(i) => r.phases[i].create.triple(),
                None => "-".into(),
            },
        );
        row(
            &format!("[{m} watches] create latency from schedule p50 / p99 / max, ms"),
            "",
            &mut |r| match find(r) {
                Some(i) => {
                    let p = &mut r.phases[i];
                    format!(
                        "{} (pacer lag max {:.1} ms)",
                        p.from_schedule.triple(),
                        p.max_lag_ms
                    )
                }
                None => "-".into(),
            },
        );
        row(
            &format!("[{m} watches] slow calls by the servers' own histograms"),
            "",
            &mut |r| match find(r) {
                Some(i) if !r.phases[i].server.is_empty() => r.phases[i].server.clone(),
                _ => "-".into(),
            },
        );
        row(
            &format!("[{m} watches] watch delivery p50 / p99 / max, ms"),
            "",
            &mut |r| match find(r) {
                Some(i) => {
                    let p = &mut r.phases[i];
                    let extra = if p.watch_errors > 0 || p.watchers_ended > 0 {
                        format!(
                            "; {} watch errors, {} watches ended early",
                            p.watch_errors, p.watchers_ended
                        )
                    } else {
                        String::new()
                    };
                    format!(
                        "{} ({} of {} events to {} watchers{extra})",
                        p.delivery.triple(),
                        p.delivery.len(),
                        p.expected,
                        p.watchers
                    )
                }
                None => "-".into(),
            },
        );
        row(
            &format!("[{m} watches] CPU (apiserver / store / client, cores); load average"),
            "",
            &mut |r| match find(r) {
                Some(i) => {
                    let p = &r.phases[i];
                    format!("{}; load {}", p.cpu.cores(), p.load)
                }
                None => "-".into(),
            },
        );
        row(
            &format!("[{m} watches] opening the watches"),
            "",
            &mut |r| match find(r) {
                Some(i) => format!("{:.1} s", r.phases[i].open_secs),
                None => "-".into(),
            },
        );
    }
    row("apiserver RSS at start (empty store)", "", &mut |r| {
        cell_mem(r.api_start)
    });
    row("apiserver RSS after preload", "≤ 2 GB", &mut |r| {
        cell_mem(r.api_after_preload)
    });
    row("apiserver RSS after the LISTs", "≤ 2 GB", &mut |r| {
        cell_mem(r.api_after_list)
    });
    row("apiserver RSS at the end", "≤ 2 GB", &mut |r| {
        cell_mem(r.api_end)
    });
    row("store RSS after preload / at the end", "", &mut |r| {
        format!(
            "{} / {}",
            cell_mem(r.store_after_preload),
            cell_mem(r.store_end)
        )
    });
    row("Load average (1/5/15 min) at start → end", "", &mut |r| {
        format!("{} → {}", r.load_start, r.load_end)
    });
    for r in reps.iter() {
        for p in &r.preload {
            if let Some(e) = &p.first_error {
                let _ = writeln!(
                    s,
                    "\nNote ({}): preload {}: first error: {e}",
                    r.store, p.what
                );
            }
        }
        for p in &r.phases {
            if let Some(e) = &p.first_error {
                let _ = writeln!(
                    s,
                    "\nNote ({}): {} phase: first create error: {e}",
                    r.store,
                    p.mode.name()
                );
            }
            if let Some(e) = &p.first_watch_error {
                let _ = writeln!(
                    s,
                    "\nNote ({}): {} phase: first watch error: {e}",
                    r.store,
                    p.mode.name()
                );
            }
        }
        for n in &r.notes {
            let _ = writeln!(s, "\nNote ({}): {n}", r.store);
        }
    }
    s
}

// ---------------------------------------------------------------------------------------------

fn main() -> Result<()> {
    let mut args = Args::parse();
    let (pods, nodes, duration) = if args.quick {
        (10_000, 500, Duration::from_secs(10))
    } else {
        (150_000, 5_000, Duration::from_secs(30))
    };
    args.pods = Some(args.pods.unwrap_or(pods));
    args.nodes = Some(args.nodes.unwrap_or(nodes));
    args.duration = Some(args.duration.unwrap_or(duration));
    if args.watch_modes.is_empty() {
        bail!("--watch-modes: at least one of node, namespace");
    }
    let kinds: Vec<StoreKind> = match args.only.as_deref() {
        Some("etcd") => vec![StoreKind::Etcd],
        Some("kumo") => vec![StoreKind::Kumo],
        _ => vec![StoreKind::Etcd, StoreKind::Kumo],
    };
    // The harness panics when no binary exists; turn that into an error, quietly.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let bin = std::panic::catch_unwind(kumo_bin);
    std::panic::set_hook(hook);
    let bin = bin.map_err(|_| {
        anyhow!("no kumo binary: run `cargo build --release -p kumo` or set KUMO_BIN")
    })?;
    println!(
        "apiserver-bench: {} (kumo binary {})",
        machine_line(&args),
        bin.display()
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut reports = Vec::new();
    let mut failures = Vec::new();
    for kind in kinds {
        match rt.block_on(bench_store(kind, &args)) {
            Ok(r) => {
                if r.notes.iter().any(|n| n.starts_with("FAILED")) {
                    failures.push(format!("{kind}: {}", r.notes.join("; ")));
                }
                reports.push(r);
            }
            Err(e) => {
                println!("\n--- {kind}: FAILED: {e:#}");
                failures.push(format!("{kind}: {e:#}"));
            }
        }
    }
    drop(rt);

    let md = markdown(&mut reports, &args);
    println!("\n=== Markdown (for BENCHMARKS.md) ===\n\n{md}");
    if let Some(path) = &args.markdown_out {
        std::fs::write(path, &md).with_context(|| format!("write {}", path.display()))?;
        println!("(written to {})", path.display());
    }
    if !failures.is_empty() {
        bail!("some runs failed:\n  {}", failures.join("\n  "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_are_unique_and_short() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..200_000 {
            let s = suffix(i);
            assert_eq!(s.len(), 5);
            assert!(seen.insert(s), "duplicate suffix at {i}");
        }
    }

    #[test]
    fn pods_are_realistic_in_size() {
        let p = PodShape {
            ns: "bench-000",
            idx: 12345,
            prefix: "app",
            node: node_name(42),
            sent_us: Some(1),
        };
        let n = serde_json::to_vec(&p.manifest())
            .map(|v| v.len())
            .unwrap_or(0)
            + serde_json::to_vec(&p.running_status())
                .map(|v| v.len())
                .unwrap_or(0);
        assert!((2_000..5_000).contains(&n), "pod is {n} bytes");
        let node = serde_json::to_vec(&node_manifest(7))
            .map(|v| v.len())
            .unwrap_or(0);
        assert!((2_000..6_000).contains(&node), "node is {node} bytes");
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut h = Histogram::default();
        for ms in 1..=100u64 {
            h.record(Duration::from_millis(ms));
        }
        assert_eq!(h.percentile_ms(50.0), 50.0);
        assert_eq!(h.percentile_ms(99.0), 99.0);
        assert_eq!(h.percentile_ms(100.0), 100.0);
    }

    #[test]
    fn histogram_differences() {
        let parse = |t: &str| super::parse_exposition(t).expect("exposition");
        let before = parse(
            "x_bucket{verb=\"POST\",le=\"0.1\"} 5\nx_bucket{verb=\"POST\",le=\"0.2\"} 6\nx_bucket{verb=\"POST\",le=\"+Inf\"} 6\nx_bucket{verb=\"GET\",le=\"+Inf\"} 9\n",
        );
        let after = parse(
            "x_bucket{verb=\"POST\",le=\"0.1\"} 100\nx_bucket{verb=\"POST\",le=\"0.2\"} 104\nx_bucket{verb=\"POST\",le=\"+Inf\"} 106\nx_bucket{verb=\"GET\",le=\"+Inf\"} 50\n",
        );
        assert_eq!(
            super::buckets(&after, "x", &[("verb", "POST")]),
            vec![(0.1, 100.0), (0.2, 104.0), (f64::INFINITY, 106.0)]
        );
        assert_eq!(
            super::over(&before, &after, "x", &[("verb", "POST")], 0.1).as_deref(),
            Some("5 of 100 over 0.1 s (p99 ≤ inf s)")
        );
        assert_eq!(super::over(&after, &after, "x", &[], 0.1), None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("0").is_err());
    }
}
