//! `store-bench`: a load generator for etcd v3-compatible stores, run against a fresh real etcd
//! and a fresh `kumo store` (one at a time, in one run) so their figures are comparable.
//!
//! Per store it measures:
//! * puts/s and p50/p99 latency at each `--clients` level (default 1, 64 and 500 concurrent
//!   request loops over a pool of min(clients, `--conns`) gRPC connections), 256-byte values,
//!   distinct keys, `--duration` per point after a short warm-up;
//! * ranges/s and latency for single-key linearizable gets at `--range-clients` (default 64);
//! * optionally `etcdctl check perf --load=…` (`--check-perf m,l,xl`), each load on a fresh store.
//!
//! Both stores run with their defaults, which fsync before acknowledging a write. Only
//! 127.0.0.1 is contacted. Usually run through `cargo xtask bench store`.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use etcd_client::{Client, ConnectOptions};
use kumo_etcd_proto::pb;
use kumo_tests::{StoreKind, StoreProc, etcd_bin, etcdctl_bin, kumo_bin};

#[derive(Parser, Debug)]
#[command(
    name = "store-bench",
    about = "Load generator: kumo store vs etcd (etcd v3 API)"
)]
struct Args {
    /// Measured duration of each point (e.g. `10`, `10s`, `500ms`, `1m`).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Shorthand for `--duration 3s`.
    #[arg(long)]
    quick: bool,
    /// Concurrent request loops for the put points.
    #[arg(long, value_delimiter = ',', default_value = "1,64,500")]
    clients: Vec<usize>,
    /// Concurrent request loops for the range point (0 = skip ranges).
    #[arg(long, default_value_t = 64)]
    range_clients: usize,
    /// Maximum gRPC connections (etcd-client `Client`s) per point.
    #[arg(long, default_value_t = 64)]
    conns: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Keys written before the range point (and read at random by it).
    #[arg(long, default_value_t = 10_000)]
    range_keys: usize,
    /// Bench only this store.
    #[arg(long, value_parser = ["etcd", "kumo"])]
    only: Option<String>,
    /// Also bench a "null" server: a gRPC KV service on the same stack as kumo store (tonic)
    /// that stores nothing and answers every request at once. It is the ceiling the load
    /// generator and `etcdctl check perf` can reach on this machine, whatever the store.
    #[arg(long)]
    null: bool,
    /// Run the null server on this address and nothing else (used by `--null`).
    #[arg(long, hide = true)]
    serve_null: Option<std::net::SocketAddr>,
    /// Bench an already-running store at this URL instead of starting fresh ones.
    #[arg(long)]
    endpoint: Option<String>,
    /// Name shown for `--endpoint` in the tables.
    #[arg(long, default_value = "endpoint")]
    label: String,
    /// `etcdctl check perf` loads to run after the load generator, comma-separated (s, m, l, xl);
    /// each takes 60 s on a fresh store. Empty = none.
    #[arg(long, value_delimiter = ',', default_value = "")]
    check_perf: Vec<String>,
    /// Pass `--auto-compact --auto-defrag` to `etcdctl check perf` (exercises KV.Compact and
    /// Maintenance.Defragment; a failure there loses that load's figures).
    #[arg(long)]
    check_perf_compact: bool,
    /// Skip the load generator (only `--check-perf`).
    #[arg(long)]
    no_loadgen: bool,
    /// Threads of the load generator's runtime (0 = one per core).
    #[arg(long, default_value_t = 0)]
    generator_threads: usize,
    /// Parent directory of the fresh stores' data dirs (default: the system temp dir). Use a
    /// real disk: fsync on tmpfs is free and flatters every store.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Also write the Markdown tables to this file.
    #[arg(long)]
    markdown_out: Option<PathBuf>,
}

impl Args {
    fn work_dir(&self) -> PathBuf {
        self.work_dir.clone().unwrap_or_else(std::env::temp_dir)
    }
}

/// The filesystem type holding `path` (longest mount-point prefix in /proc/mounts).
fn fs_type(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_dev, mnt, ty) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(mnt).then(|| (mnt.len(), ty.to_string()))
        })
        .max_by_key(|(n, _)| *n)
        .map(|(_, ty)| ty)
        .unwrap_or_else(|| "?".into())
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

/// Where the load goes.
#[derive(Clone, Debug)]
enum Target {
    Fresh(StoreKind),
    Endpoint { url: String, label: String },
    Null,
}

impl Target {
    fn label(&self) -> String {
        match self {
            Target::Fresh(k) => k.to_string(),
            Target::Endpoint { label, .. } => label.clone(),
            Target::Null => "null".into(),
        }
    }
}

/// A store to talk to: a fresh child process (kept alive by `_proc`) or an existing endpoint.
struct Running {
    url: String,
    _proc: Option<StoreProc>,
    _dir: Option<tempfile::TempDir>,
    _null: Option<NullProc>,
}

/// The null server as a child process (its own CPU, like a store), killed on drop.
struct NullProc(std::process::Child);

impl Drop for NullProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(target: &Target, work_dir: &Path) -> Result<Running> {
    match target {
        Target::Endpoint { url, .. } => Ok(Running {
            url: url.clone(),
            _proc: None,
            _dir: None,
            _null: None,
        }),
        Target::Null => {
            let addr = format!("127.0.0.1:{}", kumo_tests::free_port());
            let child = Command::new(std::env::current_exe()?)
                .args(["--serve-null", &addr])
                .stdin(Stdio::null())
                .spawn()
                .context("start the null server")?;
            let proc = NullProc(child);
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(&addr).is_err() {
                if Instant::now() > deadline {
                    bail!("the null server did not listen on {addr}");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(Running {
                url: format!("http://{addr}"),
                _proc: None,
                _dir: None,
                _null: Some(proc),
            })
        }
        Target::Fresh(kind) => {
            if *kind == StoreKind::Kumo {
                // The harness panics when no binary exists; turn that into an error, quietly.
                let hook = std::panic::take_hook();
                std::panic::set_hook(Box::new(|_| {}));
                let bin = std::panic::catch_unwind(kumo_bin);
                std::panic::set_hook(hook);
                let bin = bin.map_err(|_| {
                    anyhow::anyhow!(
                        "no kumo binary: run `cargo build --release -p kumo` or set KUMO_BIN"
                    )
                })?;
                if !bin.is_file() {
                    bail!("kumo binary {} does not exist", bin.display());
                }
            }
            let dir = tempfile::Builder::new()
                .prefix(&format!("store-bench-{kind}-"))
                .tempdir_in(work_dir)
                .with_context(|| format!("create a temp dir in {}", work_dir.display()))?;
            let proc = StoreProc::start(*kind, dir.path(), &[])
                .with_context(|| format!("start {kind}"))?;
            Ok(Running {
                url: proc.endpoint(),
                _proc: Some(proc),
                _dir: Some(dir),
                _null: None,
            })
        }
    }
}

// ---------------------------------------------------------------------------------------------
// latency histogram

/// Exact latency recorder: every sample kept (microseconds), sorted once for percentiles.
#[derive(Default)]
struct Histogram {
    us: Vec<u32>,
    sorted: bool,
}

impl Histogram {
    fn record(&mut self, d: Duration) {
        self.us
            .push(u32::try_from(d.as_micros()).unwrap_or(u32::MAX));
        self.sorted = false;
    }
    fn merge(&mut self, other: Histogram) {
        self.us.extend(other.us);
        self.sorted = false;
    }
    fn len(&self) -> usize {
        self.us.len()
    }
    fn sort(&mut self) {
        if !self.sorted {
            self.us.sort_unstable();
            self.sorted = true;
        }
    }
    /// Nearest-rank percentile in milliseconds (`q` in 0..=100).
    fn percentile_ms(&mut self, q: f64) -> f64 {
        self.sort();
        if self.us.is_empty() {
            return f64::NAN;
        }
        let rank = ((q / 100.0) * self.us.len() as f64).ceil() as usize;
        let i = rank.clamp(1, self.us.len()) - 1;
        f64::from(self.us[i]) / 1000.0
    }
    fn mean_ms(&self) -> f64 {
        if self.us.is_empty() {
            return f64::NAN;
        }
        self.us.iter().map(|&u| f64::from(u)).sum::<f64>() / self.us.len() as f64 / 1000.0
    }
}

// ---------------------------------------------------------------------------------------------
// load generator

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Put,
    Range,
}

impl Op {
    fn name(self, value_size: usize) -> String {
        match self {
            Op::Put => format!("put {value_size} B"),
            Op::Range => "range (1 key, linearizable)".to_string(),
        }
    }
}

struct Point {
    store: String,
    op: Op,
    clients: usize,
    conns: usize,
    ops: usize,
    errors: usize,
    first_error: Option<String>,
    secs: f64,
    hist: Histogram,
}

impl Point {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.secs
    }

    fn brief(&mut self) -> String {
        let unit = match self.op {
            Op::Put => "puts/s",
            Op::Range => "ranges/s",
        };
        let errors = if self.errors > 0 {
            format!(", {} errors", self.errors)
        } else {
            String::new()
        };
        format!(
            "{:.0} {unit}, p50 {} ms, p99 {} ms{errors}",
            self.rate(),
            fmt_ms(self.hist.percentile_ms(50.0)),
            fmt_ms(self.hist.percentile_ms(99.0))
        )
    }
}

async fn connect_pool(url: &str, n: usize) -> Result<Vec<Client>> {
    let mut pool = Vec::with_capacity(n);
    for _ in 0..n {
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(10));
        let mut c = Client::connect([url], Some(opts))
            .await
            .with_context(|| format!("connect {url}"))?;
        // Establish the connection before the clock starts.
        c.get("store-bench-warmup", None)
            .await
            .with_context(|| format!("first request to {url}"))?;
        pool.push(c);
    }
    Ok(pool)
}

/// xorshift64*: a per-task PRNG that is `Send` and costs nothing.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

struct PointCfg<'a> {
    store: &'a str,
    url: &'a str,
    op: Op,
    clients: usize,
    max_conns: usize,
    value_size: usize,
    warmup: Duration,
    duration: Duration,
    /// Distinguishes this point's keys from earlier points' (puts) / number of keys (ranges).
    tag: usize,
    range_keys: usize,
}

/// Runs `clients` request loops for warm-up + duration; counts requests that complete inside
/// the measured window (after warm-up) and records their latencies.
async fn run_point(cfg: PointCfg<'_>) -> Result<Point> {
    let conns = cfg.clients.min(cfg.max_conns).max(1);
    let pool = connect_pool(cfg.url, conns).await?;
    let value: Arc<Vec<u8>> =
        Arc::new((0..cfg.value_size).map(|i| b'a' + (i % 26) as u8).collect());
    let t0 = Instant::now();
    let measure_from = t0 + cfg.warmup;
    let stop_at = measure_from + cfg.duration;
    let mut tasks = Vec::with_capacity(cfg.clients);
    for task in 0..cfg.clients {
        let mut kv = pool[task % conns].kv_client();
        let value = Arc::clone(&value);
        let (op, tag, range_keys) = (cfg.op, cfg.tag, cfg.range_keys.max(1));
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::default();
            let mut errors = 0usize;
            let mut first_error: Option<String> = None;
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((task as u64 + 1) << 17) ^ tag as u64);
            let mut seq = 0u64;
            loop {
                let start = Instant::now();
                if start >= stop_at {
                    break;
                }
                let res = match op {
                    Op::Put => {
                        let key = format!("/store-bench/put/{tag}/{task:04}/{seq:010}");
                        kv.put(key, value.as_slice(), None).await.map(|_| ())
                    }
                    Op::Range => {
                        let key = range_key(rng.next() as usize % range_keys);
                        kv.get(key, None).await.and_then(|r| {
                            if r.kvs().len() == 1 {
                                Ok(())
                            } else {
                                Err(etcd_client::Error::InvalidArgs(format!(
                                    "range returned {} kvs, expected 1",
                                    r.kvs().len()
                                )))
                            }
                        })
                    }
                };
                seq += 1;
                let end = Instant::now();
                if start < measure_from || end > stop_at {
                    continue;
                }
                match res {
                    Ok(()) => hist.record(end - start),
                    Err(e) => {
                        errors += 1;
                        if first_error.is_none() {
                            first_error = Some(e.to_string());
                        }
                        // Don't spin on a dead server.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            (hist, errors, first_error)
        }));
    }
    let mut hist = Histogram::default();
    let mut errors = 0;
    let mut first_error = None;
    for t in tasks {
        let (h, e, fe) = t.await.context("client task panicked")?;
        hist.merge(h);
        errors += e;
        if first_error.is_none() {
            first_error = fe;
        }
    }
    Ok(Point {
        store: cfg.store.to_string(),
        op: cfg.op,
        clients: cfg.clients,
        conns,
        ops: hist.len(),
        errors,
        first_error,
        secs: cfg.duration.as_secs_f64(),
        hist,
    })
}

fn range_key(i: usize) -> String {
    format!("/store-bench/range/{i:08}")
}

/// Writes the keys the range point reads, 64 loops at a time.
async fn preload(url: &str, n: usize, value_size: usize) -> Result<()> {
    let conns = 16.min(n.max(1));
    let pool = connect_pool(url, conns).await?;
    let value = vec![b'r'; value_size];
    let loops = 64.min(n.max(1));
    let mut tasks = Vec::new();
    for l in 0..loops {
        let mut kv = pool[l % conns].kv_client();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = l;
            while i < n {
                kv.put(range_key(i), value.clone(), None).await?;
                i += loops;
            }
            Ok::<_, etcd_client::Error>(())
        }));
    }
    for t in tasks {
        t.await
            .context("preload task panicked")?
            .context("preload put")?;
    }
    Ok(())
}

async fn bench_store(target: &Target, args: &Args, duration: Duration) -> Result<Vec<Point>> {
    let label = target.label();
    println!("\n--- {label}: starting");
    let running = start(target, &args.work_dir())?;
    println!("--- {label}: serving at {}", running.url);
    let warmup = Duration::from_secs_f64((duration.as_secs_f64() / 5.0).clamp(0.2, 1.0));
    let mut points = Vec::new();
    for (i, &clients) in args.clients.iter().enumerate() {
        if clients == 0 {
            continue;
        }
        print!("--- {label}: put, {clients} clients, {:.1?} … ", duration);
        flush();
        let mut p = run_point(PointCfg {
            store: &label,
            url: &running.url,
            op: Op::Put,
            clients,
            max_conns: args.conns,
            value_size: args.value_size,
            warmup,
            duration,
            tag: i,
            range_keys: 0,
        })
        .await?;
        println!("{}", p.brief());
        points.push(p);
    }
    if args.range_clients > 0 {
        print!(
            "--- {label}: preloading {} keys for ranges … ",
            args.range_keys
        );
        flush();
        preload(&running.url, args.range_keys, args.value_size).await?;
        println!("done");
        print!(
            "--- {label}: range, {} clients, {:.1?} … ",
            args.range_clients, duration
        );
        flush();
        let mut p = run_point(PointCfg {
            store: &label,
            url: &running.url,
            op: Op::Range,
            clients: args.range_clients,
            max_conns: args.conns,
            value_size: args.value_size,
            warmup,
            duration,
            tag: 0,
            range_keys: args.range_keys,
        })
        .await?;
        println!("{}", p.brief());
        points.push(p);
    }
    for p in &mut points {
        // Sort now so the tables below are cheap.
        p.hist.sort();
    }
    Ok(points)
}

fn flush() {
    use std::io::Write;
    let _ = std::io::stdout().flush();
}

// ---------------------------------------------------------------------------------------------
// etcdctl check perf

struct PerfResult {
    store: String,
    load: String,
    /// PASS / FAIL / ERROR.
    verdict: String,
    writes_per_sec: Option<u64>,
    slowest_s: Option<f64>,
    stddev_s: Option<f64>,
    /// Result lines as printed, or the error.
    lines: Vec<String>,
}

/// (target writes/s, clients) of etcdctl 3.4's check perf loads.
fn perf_load(load: &str) -> Option<(u32, u32)> {
    match load {
        "s" => Some((150, 50)),
        "m" => Some((1_000, 200)),
        "l" => Some((8_000, 500)),
        "xl" => Some((15_000, 1_000)),
        _ => None,
    }
}

/// Parses the result lines of `etcdctl check perf` (3.4):
/// `PASS: Throughput is 994 writes/s` | `FAIL: Throughput too low: 5258 writes/s`,
/// `PASS: Slowest request took 0.2s` | `Slowest request took too long: 0.7s`,
/// `PASS: Stddev is 0.02s` | `Stddev too high: 0.2s`, `FAIL: too many errors`,
/// `FAIL: ERROR(…) -> n`, then `PASS` or `FAIL`. The progress bar uses `\r`.
/// Fills `res`'s figures and lines; returns the verdict line if there was one.
fn parse_check_perf(stdout: &str, res: &mut PerfResult) -> Option<String> {
    let mut verdict = None;
    for raw in stdout.split(['\r', '\n']) {
        let line = raw.trim();
        if line.is_empty() || line.contains(" / ") && line.contains('%') {
            continue; // progress bar
        }
        if line == "PASS" || line == "FAIL" {
            verdict = Some(line.to_string());
            continue;
        }
        let last_num = |l: &str| -> Option<f64> {
            l.split(|c: char| !(c.is_ascii_digit() || c == '.'))
                .rfind(|t| !t.is_empty() && *t != ".")
                .and_then(|t| t.parse().ok())
        };
        if line.contains("Throughput") {
            res.writes_per_sec = last_num(line).map(|n| n as u64);
        } else if line.contains("Slowest request") {
            res.slowest_s = last_num(line);
        } else if line.contains("Stddev") {
            res.stddev_s = last_num(line);
        }
        if line.contains("PASS")
            || line.contains("FAIL")
            || line.contains("Slowest")
            || line.contains("Stddev")
        {
            res.lines.push(line.to_string());
        }
    }
    verdict
}

fn check_perf(target: &Target, load: &str, args: &Args) -> PerfResult {
    let label = target.label();
    let mut res = PerfResult {
        store: label.clone(),
        load: load.to_string(),
        verdict: "ERROR".into(),
        writes_per_sec: None,
        slowest_s: None,
        stddev_s: None,
        lines: vec![],
    };
    let outcome = (|| -> Result<()> {
        let running = start(target, &args.work_dir())?;
        let dir = tempfile::Builder::new()
            .prefix("store-bench-perf-")
            .tempdir()?;
        let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
        let mut cmd = Command::new(etcdctl_bin());
        cmd.env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                &running.url,
                "--command-timeout=30s",
                "check",
                "perf",
            ])
            .arg(format!("--load={load}"));
        if args.check_perf_compact {
            cmd.args(["--auto-compact", "--auto-defrag"]);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_path)?)
            .stderr(std::fs::File::create(&err_path)?)
            .spawn()
            .context("run etcdctl check perf")?;
        // 60 s of load, up to 30 s of cleanup, compaction/defrag: give up after 4 min.
        let deadline = Instant::now() + Duration::from_secs(240);
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("etcdctl check perf did not finish within 240 s");
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
        let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
        match parse_check_perf(&stdout, &mut res) {
            Some(v) => res.verdict = v,
            None => {
                let tail: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
                let tail = tail[tail.len().saturating_sub(3)..].join(" | ");
                bail!("etcdctl check perf exited with {status} and no verdict: {tail}");
            }
        }
        Ok(())
    })();
    if let Err(e) = outcome {
        res.lines.push(format!("{e:#}"));
    }
    res
}

// ---------------------------------------------------------------------------------------------
// reports

fn fmt_ms(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v < 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.1}")
    }
}

fn human_table(points: &mut [Point], value_size: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<8} {:<28} {:>7} {:>5} {:>9} {:>10} {:>8} {:>8} {:>8} {:>8} {:>7}",
        "store",
        "workload",
        "clients",
        "conns",
        "ops",
        "ops/s",
        "mean ms",
        "p50 ms",
        "p99 ms",
        "max ms",
        "errors"
    );
    for p in points.iter_mut() {
        let rate = p.rate();
        let (mean, p50, p99, max) = (
            p.hist.mean_ms(),
            p.hist.percentile_ms(50.0),
            p.hist.percentile_ms(99.0),
            p.hist.percentile_ms(100.0),
        );
        let _ = writeln!(
            s,
            "{:<8} {:<28} {:>7} {:>5} {:>9} {:>10.0} {:>8} {:>8} {:>8} {:>8} {:>7}",
            p.store,
            p.op.name(value_size),
            p.clients,
            p.conns,
            p.ops,
            rate,
            fmt_ms(mean),
            fmt_ms(p50),
            fmt_ms(p99),
            fmt_ms(max),
            p.errors
        );
        if let Some(e) = &p.first_error {
            let _ = writeln!(s, "         first error: {e}");
        }
    }
    s
}

/// Side by side: one row per workload, one column group per store.
fn markdown_loadgen(points: &mut [Point], stores: &[String], value_size: usize) -> String {
    let mut s = String::new();
    let mut head = "| Workload | Clients |".to_string();
    let mut rule = "|---|--:|".to_string();
    for st in stores {
        let _ = write!(head, " {st} ops/s | {st} p50 ms | {st} p99 ms |");
        rule.push_str("--:|--:|--:|");
    }
    let _ = writeln!(s, "{head}\n{rule}");
    let mut rows: Vec<(Op, usize)> = Vec::new();
    for p in points.iter() {
        if !rows.contains(&(p.op, p.clients)) {
            rows.push((p.op, p.clients));
        }
    }
    for (op, clients) in rows {
        let mut line = format!("| {} | {clients} |", op.name(value_size));
        for st in stores {
            match points
                .iter_mut()
                .find(|p| &p.store == st && p.op == op && p.clients == clients)
            {
                Some(p) => {
                    let err = if p.errors > 0 {
                        format!(" ({} errors)", p.errors)
                    } else {
                        String::new()
                    };
                    let _ = write!(
                        line,
                        " {:.0}{err} | {} | {} |",
                        p.rate(),
                        fmt_ms(p.hist.percentile_ms(50.0)),
                        fmt_ms(p.hist.percentile_ms(99.0))
                    );
                }
                None => line.push_str(" - | - | - |"),
            }
        }
        let _ = writeln!(s, "{line}");
    }
    s
}

fn perf_cell(r: &PerfResult) -> String {
    match (r.verdict.as_str(), r.writes_per_sec) {
        ("ERROR", _) => format!("ERROR: {}", r.lines.join("; ").replace('|', "\\|")),
        (v, Some(w)) => format!(
            "{v}: {w} writes/s, slowest {}, stddev {}",
            r.slowest_s
                .map(|x| format!("{x:.3} s"))
                .unwrap_or_else(|| "?".into()),
            r.stddev_s
                .map(|x| format!("{x:.3} s"))
                .unwrap_or_else(|| "?".into())
        ),
        (v, None) => format!("{v}: {}", r.lines.join("; ")),
    }
}

fn markdown_perf(results: &[PerfResult], stores: &[String]) -> String {
    let mut s = String::new();
    let mut head = "| `etcdctl check perf` | Target |".to_string();
    let mut rule = "|---|---|".to_string();
    for st in stores {
        let _ = write!(head, " {st} |");
        rule.push_str("---|");
    }
    let _ = writeln!(s, "{head}\n{rule}");
    let mut loads: Vec<&str> = Vec::new();
    for r in results {
        if !loads.contains(&r.load.as_str()) {
            loads.push(&r.load);
        }
    }
    for load in loads {
        let target = perf_load(load)
            .map(|(w, c)| format!("{w} writes/s, {c} clients, 60 s"))
            .unwrap_or_else(|| "?".into());
        let mut line = format!("| `--load={load}` | {target} |");
        for st in stores {
            match results.iter().find(|r| &r.store == st && r.load == load) {
                Some(r) => {
                    let _ = write!(line, " {} |", perf_cell(r));
                }
                None => line.push_str(" - |"),
            }
        }
        let _ = writeln!(s, "{line}");
    }
    s
}

fn first_line(mut cmd: Command) -> String {
    cmd.output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(|l| l.trim().to_string()))
        .unwrap_or_else(|| "?".into())
}

fn machine_line(args: &Args, duration: Duration) -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mut etcd = Command::new(etcd_bin());
    etcd.arg("--version");
    let fs = match &args.endpoint {
        Some(_) => "data dir: the endpoint's own".to_string(),
        None => format!("data dirs on {}", fs_type(&args.work_dir())),
    };
    format!(
        "{cores} cores, load generator on the same machine; {} ({}); {fs}; {:?} measured per point \
         after a short warm-up; {} B values, distinct keys; fsync before ack (both stores' defaults)",
        first_line(etcd),
        std::env::consts::ARCH,
        duration,
        args.value_size
    )
}

// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// the null server

/// A KV service that stores nothing: every request is answered at once with a fresh revision.
#[derive(Default)]
struct NullKv(std::sync::atomic::AtomicI64);

impl NullKv {
    fn header(&self) -> Option<pb::ResponseHeader> {
        let rev = self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        Some(pb::ResponseHeader {
            cluster_id: 1,
            member_id: 1,
            revision: rev,
            raft_term: 1,
        })
    }
}

type NullResult<T> = std::result::Result<tonic::Response<T>, tonic::Status>;

#[tonic::async_trait]
impl pb::kv_server::Kv for NullKv {
    /// A single-key read gets that key back (empty value); a range gets nothing, so
    /// `etcdctl check perf` finds its prefix empty.
    async fn range(&self, req: tonic::Request<pb::RangeRequest>) -> NullResult<pb::RangeResponse> {
        let req = req.into_inner();
        let kvs = if req.range_end.is_empty() {
            vec![kumo_etcd_proto::mvccpb::KeyValue {
                key: req.key,
                create_revision: 1,
                mod_revision: 1,
                version: 1,
                ..Default::default()
            }]
        } else {
            vec![]
        };
        Ok(tonic::Response::new(pb::RangeResponse {
            header: self.header(),
            count: kvs.len() as i64,
            kvs,
            ..Default::default()
        }))
    }
    async fn put(&self, _: tonic::Request<pb::PutRequest>) -> NullResult<pb::PutResponse> {
        Ok(tonic::Response::new(pb::PutResponse {
            header: self.header(),
            ..Default::default()
        }))
    }
    async fn delete_range(
        &self,
        _: tonic::Request<pb::DeleteRangeRequest>,
    ) -> NullResult<pb::DeleteRangeResponse> {
        Ok(tonic::Response::new(pb::DeleteRangeResponse {
            header: self.header(),
            ..Default::default()
        }))
    }
    async fn txn(&self, _: tonic::Request<pb::TxnRequest>) -> NullResult<pb::TxnResponse> {
        Ok(tonic::Response::new(pb::TxnResponse {
            header: self.header(),
            succeeded: true,
            ..Default::default()
        }))
    }
    async fn compact(
        &self,
        _: tonic::Request<pb::CompactionRequest>,
    ) -> NullResult<pb::CompactionResponse> {
        Ok(tonic::Response::new(pb::CompactionResponse {
            header: self.header(),
        }))
    }
}

fn serve_null(addr: std::net::SocketAddr) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(
        tonic::transport::Server::builder()
            .add_service(pb::kv_server::KvServer::new(NullKv::default()))
            .serve(addr),
    )?;
    Ok(())
}

fn main() -> Result<()> {
    let mut args = Args::parse();
    if let Some(addr) = args.serve_null {
        return serve_null(addr);
    }
    args.check_perf.retain(|l| !l.trim().is_empty());
    if args.quick {
        args.duration = Duration::from_secs(3);
    }
    let duration = args.duration;
    let targets: Vec<Target> = match (&args.endpoint, args.only.as_deref()) {
        (Some(url), _) => {
            let host_ok = url.contains("://127.0.0.1:")
                || url.contains("://localhost:")
                || url.contains("://[::1]:");
            if !host_ok {
                bail!("--endpoint must be a loopback URL (http://127.0.0.1:PORT), got {url}");
            }
            vec![Target::Endpoint {
                url: url.clone(),
                label: args.label.clone(),
            }]
        }
        (None, Some("etcd")) => vec![Target::Fresh(StoreKind::Etcd)],
        (None, Some("kumo")) => vec![Target::Fresh(StoreKind::Kumo)],
        (None, _) => vec![
            Target::Fresh(StoreKind::Etcd),
            Target::Fresh(StoreKind::Kumo),
        ],
    };
    let mut targets = targets;
    if args.null {
        targets.push(Target::Null);
    }
    for l in &args.check_perf {
        if perf_load(l).is_none() {
            bail!("--check-perf: unknown load `{l}` (s, m, l, xl)");
        }
    }
    let stores: Vec<String> = targets.iter().map(Target::label).collect();
    println!("store-bench: {}", machine_line(&args, duration));

    let rt = match args.generator_threads {
        0 => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build()?,
    };
    let mut points: Vec<Point> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    if !args.no_loadgen {
        for t in &targets {
            match rt.block_on(bench_store(t, &args, duration)) {
                Ok(p) => points.extend(p),
                Err(e) => {
                    println!("\n--- {}: FAILED: {e:#}", t.label());
                    failures.push(format!("{}: {e:#}", t.label()));
                }
            }
        }
    }
    drop(rt);

    let mut perf: Vec<PerfResult> = Vec::new();
    for t in &targets {
        for load in &args.check_perf {
            println!(
                "\n--- {}: etcdctl check perf --load={load} (60 s, fresh store) …",
                t.label()
            );
            let r = check_perf(t, load, &args);
            for l in &r.lines {
                println!("    {l}");
            }
            println!("    => {}", r.verdict);
            perf.push(r);
        }
    }

    let mut md = String::new();
    let _ = writeln!(md, "Machine: {}.\n", machine_line(&args, duration));
    if !points.is_empty() {
        println!(
            "\n=== load generator ===\n{}",
            human_table(&mut points, args.value_size)
        );
        let _ = writeln!(
            md,
            "{}",
            markdown_loadgen(&mut points, &stores, args.value_size)
        );
    }
    if !perf.is_empty() {
        println!("=== etcdctl check perf ===");
        for r in &perf {
            println!("{:<8} --load={:<3} {}", r.store, r.load, perf_cell(r));
        }
        println!();
        let _ = writeln!(md, "{}", markdown_perf(&perf, &stores));
    }
    println!("=== Markdown (for BENCHMARKS.md) ===\n\n{md}");
    if let Some(path) = &args.markdown_out {
        std::fs::write(path, &md).with_context(|| format!("write {}", path.display()))?;
        println!("(written to {})", path.display());
    }
    if !failures.is_empty() {
        bail!(
            "some stores could not be benchmarked:\n  {}",
            failures.join("\n  ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty(load: &str) -> PerfResult {
        PerfResult {
            store: "etcd".into(),
            load: load.into(),
            verdict: "ERROR".into(),
            writes_per_sec: None,
            slowest_s: None,
            stddev_s: None,
            lines: vec![],
        }
    }

    #[test]
    fn parses_check_perf_pass() {
        let out = " 0 / 60    0.00%\r 60 / 60  100.00% 1m0s\nPASS: Throughput is 985 writes/s\n\
                   PASS: Slowest request took 0.018154s\nPASS: Stddev is 0.000932s\nPASS\n";
        let mut r = empty("m");
        assert_eq!(parse_check_perf(out, &mut r).as_deref(), Some("PASS"));
        assert_eq!(r.writes_per_sec, Some(985));
        assert_eq!(r.slowest_s, Some(0.018154));
        assert_eq!(r.stddev_s, Some(0.000932));
        assert_eq!(r.lines.len(), 3);
    }

    #[test]
    fn parses_check_perf_fail() {
        // etcdctl 3.4 prints the slowest/stddev failures without a `FAIL:` prefix.
        let out = "FAIL: Throughput too low: 6491 writes/s\n\
                   Slowest request took too long: 0.786915s\nStddev too high: 0.163215s\nFAIL\n";
        let mut r = empty("xl");
        assert_eq!(parse_check_perf(out, &mut r).as_deref(), Some("FAIL"));
        assert_eq!(r.writes_per_sec, Some(6491));
        assert_eq!(r.slowest_s, Some(0.786915));
        assert_eq!(r.stddev_s, Some(0.163215));
        r.verdict = "FAIL".into();
        assert_eq!(
            perf_cell(&r),
            "FAIL: 6491 writes/s, slowest 0.787 s, stddev 0.163 s"
        );
    }

    #[test]
    fn no_verdict_without_result_lines() {
        let mut r = empty("m");
        assert_eq!(parse_check_perf(" 3 / 60    5.00% 00m57s", &mut r), None);
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
        assert_eq!(h.percentile_ms(0.0), 1.0);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("3h").is_err());
    }
}
