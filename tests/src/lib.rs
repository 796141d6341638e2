//! Shared helpers for kumo's integration tests and load generators: start, kill and restart
//! real peers (etcd 3.4) and kumo components as child processes on free loopback ports.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub mod containerd;
pub mod images;

/// The workspace root (this crate lives in `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The `kumo` binary under test: `$KUMO_BIN`, else `target/{release,debug}/kumo` (whichever is
/// newer). `cargo xtask test` builds it before running the suite.
pub fn kumo_bin() -> PathBuf {
    if let Ok(p) = std::env::var("KUMO_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace_root().join("target"));
    let candidates = [target.join("debug/kumo"), target.join("release/kumo")];
    let newest = candidates
        .iter()
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p.clone())))
        .max_by_key(|(t, _)| *t)
        .map(|(_, p)| p);
    match newest {
        Some(p) => p,
        None => panic!(
            "no kumo binary found under {}: run `cargo build -p kumo` (or `cargo xtask test`), or set KUMO_BIN",
            target.display()
        ),
    }
}

/// A free TCP port on 127.0.0.1, picked at random below the kernel's ephemeral range
/// (32768–60999 on Linux) so outgoing connections of other tests cannot take it between this
/// check and the child's bind. Another test process can still race for the same port; starters
/// that spawn servers retry on "address already in use" (see [`StoreProc::start`]).
pub fn free_port() -> u16 {
    use rand::Rng;
    let mut rng = rand::rng();
    for _ in 0..1000 {
        let port: u16 = rng.random_range(20000..32000);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Whether a failed start's log says a port was taken meanwhile (kumo and etcd wording).
fn lost_port_race(log: &str) -> bool {
    log.to_ascii_lowercase().contains("address already in use")
}

/// Which store implementation a [`StoreProc`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// Real etcd (apt `etcd-server`, 3.4).
    Etcd,
    /// `kumo store`.
    Kumo,
}

impl std::fmt::Display for StoreKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StoreKind::Etcd => "etcd",
            StoreKind::Kumo => "kumo",
        })
    }
}

/// A running etcd-compatible store process, restartable on the same ports and data dir.
pub struct StoreProc {
    pub kind: StoreKind,
    pub name: String,
    pub data_dir: PathBuf,
    pub client_port: u16,
    pub peer_port: u16,
    pub metrics_port: u16,
    pub extra_args: Vec<String>,
    child: Option<Child>,
    log: PathBuf,
}

impl StoreProc {
    /// Starts a store of `kind` with its data under `dir` and waits until it serves requests.
    pub fn start(kind: StoreKind, dir: &Path, extra_args: &[&str]) -> Result<StoreProc> {
        std::fs::create_dir_all(dir)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut p = StoreProc {
                kind,
                name: format!("{kind}-test"),
                data_dir: dir.join("data"),
                client_port: free_port(),
                peer_port: free_port(),
                metrics_port: free_port(),
                extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
                child: None,
                log: dir.join(format!("{kind}.log")),
            };
            match p.spawn() {
                Ok(()) => return Ok(p),
                Err(e) if attempt < 5 && lost_port_race(&format!("{e:#}")) => {
                    // Another test took one of the ports between the check and the bind:
                    // start over on fresh ports with an empty data dir.
                    p.kill9();
                    let _ = std::fs::remove_dir_all(&p.data_dir);
                    let _ = std::fs::remove_file(&p.log);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// `http://127.0.0.1:PORT` of the client (gRPC) listener.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// `http://127.0.0.1:PORT` of the metrics listener (`/metrics`, `/health`).
    pub fn metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.metrics_port)
    }

    /// The path of the process's combined stdout/stderr log.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    fn command(&self) -> Command {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let metrics = self.metrics_url();
        let dir = self.data_dir.display().to_string();
        let mut cmd = match self.kind {
            StoreKind::Etcd => {
                let mut c = Command::new(etcd_bin());
                c.args(["--name", &self.name, "--data-dir", &dir])
                    .args(["--listen-client-urls", &client])
                    .args(["--advertise-client-urls", &client])
                    .args(["--listen-peer-urls", &peer])
                    .args(["--initial-advertise-peer-urls", &peer])
                    .args(["--initial-cluster", &format!("{}={peer}", self.name)])
                    .args(["--listen-metrics-urls", &metrics]);
                c
            }
            StoreKind::Kumo => {
                let mut c = Command::new(kumo_bin());
                c.args(["store", "--name", &self.name, "--data-dir", &dir])
                    .args(["--listen-client-urls", &client])
                    .args(["--advertise-client-urls", &client])
                    .args(["--initial-advertise-peer-urls", &peer])
                    .args(["--listen-metrics-urls", &metrics]);
                c
            }
        };
        cmd.args(&self.extra_args);
        cmd
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = self
            .command()
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawn {}", self.kind))?;
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(30))
    }

    /// Waits until the client port accepts connections and a KV read succeeds.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let addr: SocketAddr = ([127, 0, 0, 1], self.client_port).into();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                bail!(
                    "{} exited with {status} before becoming ready; log:\n{}",
                    self.kind,
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                let out = etcdctl(&self.endpoint(), &["get", "kumo-test-readiness-probe"]);
                // The answer must come from our child: if another process owns the port, the
                // child has died of "address already in use" by now.
                let alive = self
                    .child
                    .as_mut()
                    .is_some_and(|c| matches!(c.try_wait(), Ok(None)));
                if out.map(|o| o.status.success()).unwrap_or(false) && alive {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "{} not ready after {timeout:?}; log:\n{}",
                    self.kind,
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL the process (no chance to flush anything) and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again on the same ports and data dir.
    pub fn restart(&mut self) -> Result<()> {
        self.kill9();
        self.spawn()
    }

    /// The OS pid of the running process.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for StoreProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Path of the real etcd server binary (`$ETCD_BIN` or `etcd` on PATH).
pub fn etcd_bin() -> PathBuf {
    std::env::var("ETCD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("etcd"))
}

/// Path of the real etcdctl binary (`$ETCDCTL_BIN` or `etcdctl` on PATH).
pub fn etcdctl_bin() -> PathBuf {
    std::env::var("ETCDCTL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("etcdctl"))
}

/// Runs `etcdctl --endpoints ENDPOINT ARGS…` (API v3) and returns its output.
pub fn etcdctl(endpoint: &str, args: &[&str]) -> Result<Output> {
    Command::new(etcdctl_bin())
        .env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(endpoint)
        .arg("--command-timeout=10s")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("run etcdctl (is etcd-client installed? `cargo xtask test` installs it)")
}

// ---------------------------------------------------------------------------------------------
// Metrics side: plain HTTP, the Prometheus text exposition, promtool and a real Prometheus.

/// Whether the suite runs under CI (`CI` set to anything but empty, `0` or `false`): a missing
/// peer is then a failure, never a skip.
pub fn running_under_ci() -> bool {
    std::env::var("CI")
        .map(|v| !matches!(v.trim().to_ascii_lowercase().as_str(), "" | "0" | "false"))
        .unwrap_or(false)
}

/// Whether `bin` can be started at all (a file path, or a name looked up on PATH).
pub fn tool_available(bin: &Path) -> bool {
    match Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::NotFound,
    }
}

/// `true` when `bin` is available. Otherwise panics under CI ([`running_under_ci`]) and, outside
/// CI, prints why `test` is skipped and returns `false`. `env_var` names the variable that
/// overrides the binary's path.
#[allow(clippy::print_stderr)]
pub fn require_tool(bin: &Path, apt_package: &str, env_var: &str, test: &str) -> bool {
    if tool_available(bin) {
        return true;
    }
    let why = format!(
        "{} not found: install it with `apt-get install -y {apt_package}` (`cargo xtask test` \
         does), or set {env_var} to its path",
        bin.display()
    );
    if running_under_ci() {
        panic!("{test}: {why} (CI is set, so this is a failure, not a skip)");
    }
    eprintln!("SKIPPED {test}: {why}");
    false
}

/// Path of the real Prometheus server (`$PROMETHEUS_BIN` or `prometheus` on PATH).
pub fn prometheus_bin() -> PathBuf {
    std::env::var("PROMETHEUS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("prometheus"))
}

/// Path of promtool (`$PROMTOOL_BIN` or `promtool` on PATH).
pub fn promtool_bin() -> PathBuf {
    std::env::var("PROMTOOL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("promtool"))
}

/// One HTTP response: status code, headers (names lower-cased) and body.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A plain HTTP/1.0 GET of `url` (`http://HOST:PORT/PATH?QUERY`, std only): HTTP/1.0 keeps the
/// body unchunked and the server closes the connection after it. `timeout` bounds the connect
/// and each read and write.
pub fn http_get(url: &str, timeout: Duration) -> Result<HttpResponse> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;

    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("only http:// URLs are supported, not {url}"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = host
        .to_socket_addrs()
        .with_context(|| format!("resolve {host}"))?
        .next()
        .with_context(|| format!("{host} resolves to nothing"))?;
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("connect to {host}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nAccept: */*\r\nUser-Agent: kumo-tests\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .with_context(|| format!("read the response to GET {url}"))?;
    let text = String::from_utf8(raw).with_context(|| format!("GET {url}: body is not UTF-8"))?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("GET {url}: no end of headers in {text:?}"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("GET {url}: bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let resp = HttpResponse {
        status,
        headers,
        body: body.to_string(),
    };
    if resp
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        bail!("GET {url}: the server chunked a response to an HTTP/1.0 request");
    }
    Ok(resp)
}

/// Percent-encodes `s` for a URL query component (everything but RFC 3986 unreserved bytes).
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One sample line of a Prometheus text exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the sample lines of a Prometheus text exposition (format 0.0.4); `#` lines are
/// skipped. Strict enough to catch a malformed line, not a full validator (promtool is).
pub fn parse_exposition(text: &str) -> Result<Vec<Sample>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || format!("exposition line {}: {line:?}", n + 1);
        let name_end = line
            .find(|c: char| c == '{' || c.is_whitespace())
            .with_context(bad)?;
        let name = line[..name_end].to_string();
        let mut labels = std::collections::BTreeMap::new();
        let mut rest = &line[name_end..];
        if let Some(r) = rest.strip_prefix('{') {
            let mut chars = r.char_indices().peekable();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                if c == '}' {
                    end = Some(i);
                    break;
                }
                if c == ',' || c.is_whitespace() {
                    continue;
                }
                // label name up to '=', then a quoted value with \\, \" and \n escapes.
                let key_start = i;
                let mut key_end = i + c.len_utf8();
                for (j, c) in chars.by_ref() {
                    if c == '=' {
                        break;
                    }
                    key_end = j + c.len_utf8();
                }
                let key = r[key_start..key_end].trim().to_string();
                if chars.next().map(|(_, c)| c) != Some('"') {
                    bail!("{}: label {key} has no quoted value", bad());
                }
                let mut value = String::new();
                let mut closed = false;
                while let Some((_, c)) = chars.next() {
                    match c {
                        '"' => {
                            closed = true;
                            break;
                        }
                        '\\' => match chars.next().map(|(_, c)| c) {
                            Some('n') => value.push('\n'),
                            Some(e) => value.push(e),
                            None => break,
                        },
                        c => value.push(c),
                    }
                }
                if !closed {
                    bail!("{}: unterminated value of label {key}", bad());
                }
                labels.insert(key, value);
            }
            let end = end.with_context(|| format!("{}: no closing brace", bad()))?;
            rest = &r[end + 1..];
        }
        let value_text = rest.split_whitespace().next().with_context(bad)?;
        let value = match value_text {
            "+Inf" | "Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().with_context(|| format!("{}: bad value", bad()))?,
        };
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    Ok(out)
}

/// The value of the first sample named `name` whose labels include every pair of `labels`.
pub fn sample_value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

/// Runs `promtool check metrics` with `exposition` on stdin; returns its exit code (0 clean,
/// 3 lint problems, 1 unparsable) and its combined stdout and stderr.
pub fn promtool_check_metrics(exposition: &str) -> Result<(i32, String)> {
    use std::io::Write;

    let mut child = Command::new(promtool_bin())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("run promtool (apt `prometheus`; `cargo xtask test` installs it)")?;
    let mut stdin = child.stdin.take().context("promtool stdin")?;
    let input = exposition.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().context("wait for promtool")?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("promtool stdin writer panicked"))?
        .context("write the exposition to promtool")?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok((out.status.code().unwrap_or(-1), text))
}

/// A real Prometheus server (apt `prometheus`) scraping one job, with its TSDB under a test
/// directory. Killed on drop.
pub struct PrometheusProc {
    pub port: u16,
    pub job: String,
    child: Option<Child>,
    log: PathBuf,
}

impl PrometheusProc {
    /// Starts Prometheus under `dir`, scraping `targets` (`HOST:PORT`, path `/metrics`) as job
    /// `job` every `interval`, and waits until it reports ready.
    pub fn start(
        dir: &Path,
        job: &str,
        targets: &[String],
        interval: Duration,
    ) -> Result<PrometheusProc> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::start_once(dir, job, targets, interval) {
                Err(e) if attempt < 5 && lost_port_race(&format!("{e:#}")) => {
                    let _ = std::fs::remove_dir_all(dir.join("tsdb"));
                }
                other => return other,
            }
        }
    }

    fn start_once(
        dir: &Path,
        job: &str,
        targets: &[String],
        interval: Duration,
    ) -> Result<PrometheusProc> {
        std::fs::create_dir_all(dir)?;
        let ms = interval.as_millis().max(1);
        let targets = targets
            .iter()
            .map(|t| format!("'{t}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let config = format!(
            "global:\n  scrape_interval: {ms}ms\n  scrape_timeout: {ms}ms\n  \
             evaluation_interval: {ms}ms\nscrape_configs:\n  - job_name: '{job}'\n    \
             metrics_path: /metrics\n    static_configs:\n      - targets: [{targets}]\n"
        );
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config)?;
        let log_path = dir.join("prometheus.log");
        let log = std::fs::File::create(&log_path)?;
        let port = free_port();
        let child = Command::new(prometheus_bin())
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawn prometheus (apt `prometheus`; `cargo xtask test` installs it)")?;
        let mut p = PrometheusProc {
            port,
            job: job.to_string(),
            child: Some(child),
            log: log_path,
        };
        p.wait_ready(Duration::from_secs(30))?;
        Ok(p)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The path of Prometheus' combined stdout/stderr log.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                bail!(
                    "prometheus exited with {status} before becoming ready; log:\n{}",
                    self.log_text()
                );
            }
            let ready = http_get(&format!("{}/-/ready", self.url()), Duration::from_secs(2));
            if ready.is_ok_and(|r| r.status == 200) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "prometheus not ready after {timeout:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// GET `path_and_query` of the HTTP API; returns the `data` of a `"status": "success"`
    /// answer, or an error carrying Prometheus' `errorType` and `error`.
    pub fn api_get(&self, path_and_query: &str) -> Result<serde_json::Value> {
        let url = format!("{}{path_and_query}", self.url());
        let resp = http_get(&url, Duration::from_secs(10))?;
        let v: serde_json::Value = serde_json::from_str(&resp.body)
            .with_context(|| format!("GET {url}: HTTP {} {:?}", resp.status, resp.body))?;
        if resp.status != 200 || v["status"] != "success" {
            bail!(
                "GET {url}: HTTP {}: {} {}",
                resp.status,
                v["errorType"].as_str().unwrap_or("?"),
                v["error"].as_str().unwrap_or("?")
            );
        }
        Ok(v["data"].clone())
    }

    /// An instant query (`/api/v1/query`) at the current time; returns its `data`
    /// (`resultType` and `result`).
    pub fn query(&self, expr: &str) -> Result<serde_json::Value> {
        self.api_get(&format!("/api/v1/query?query={}", url_encode(expr)))
    }

    /// The values of `label` across series matching `selector` (`/api/v1/label/…/values`).
    pub fn label_values(&self, label: &str, selector: &str) -> Result<Vec<String>> {
        let data = self.api_get(&format!(
            "/api/v1/label/{label}/values?match[]={}",
            url_encode(selector)
        ))?;
        Ok(data
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Waits until every target of the job is up and has been scraped at least `n` times.
    pub fn wait_scrapes(&self, n: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let expr = format!(
            "min(count_over_time(up{{job=\"{0}\"}}[1h])) and min(up{{job=\"{0}\"}}) == 1",
            self.job
        );
        loop {
            let scrapes = self
                .query(&expr)
                .ok()
                .and_then(|d| d["result"][0]["value"][1].as_str().map(str::to_string))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0);
            if scrapes >= n as f64 {
                return Ok(());
            }
            if Instant::now() > deadline {
                let targets = self.api_get("/api/v1/targets").unwrap_or_default();
                bail!(
                    "job {} not scraped {n} times (successfully) within {timeout:?} (got \
                     {scrapes}); targets: {targets}\nprometheus log:\n{}",
                    self.job,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for PrometheusProc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A running `kumo apiserver` on a store of its own (kumo store or real etcd), with the admin
/// kubeconfig it wrote.
pub struct ApiServerProc {
    pub store: StoreProc,
    pub port: u16,
    pub cert_dir: PathBuf,
    pub kubeconfig: PathBuf,
    child: Option<Child>,
    log: PathBuf,
}

impl ApiServerProc {
    /// Starts a store of `kind` and an apiserver on it under `dir`; waits until kubectl can
    /// reach it with the admin kubeconfig.
    pub fn start(kind: StoreKind, dir: &Path, extra_args: &[&str]) -> Result<ApiServerProc> {
        Self::start_with(kind, dir, &[], extra_args)
    }

    /// [`ApiServerProc::start`] with extra arguments for the store too.
    pub fn start_with(
        kind: StoreKind,
        dir: &Path,
        store_args: &[&str],
        extra_args: &[&str],
    ) -> Result<ApiServerProc> {
        let store = StoreProc::start(kind, &dir.join("store"), store_args)?;
        let mut p = ApiServerProc {
            store,
            port: 0,
            cert_dir: dir.join("pki"),
            kubeconfig: dir.join("admin.kubeconfig"),
            child: None,
            log: dir.join("apiserver.log"),
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            p.port = free_port();
            let _ = std::fs::remove_file(&p.kubeconfig);
            let logf = std::fs::File::create(&p.log)?;
            let child = Command::new(kumo_bin())
                .args(["apiserver", "--etcd-servers", &p.store.endpoint()])
                .args([
                    "--bind-address",
                    "127.0.0.1",
                    "--secure-port",
                    &p.port.to_string(),
                ])
                .arg("--cert-dir")
                .arg(&p.cert_dir)
                .arg("--admin-kubeconfig")
                .arg(&p.kubeconfig)
                .args(extra_args)
                .stdin(Stdio::null())
                .stdout(logf.try_clone()?)
                .stderr(logf)
                .spawn()
                .context("spawn kumo apiserver")?;
            p.child = Some(child);
            match p.wait_ready(Duration::from_secs(60)) {
                Ok(()) => return Ok(p),
                Err(e) if attempt < 5 && lost_port_race(&format!("{e:#}")) => p.kill(),
                Err(e) => return Err(e),
            }
        }
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                bail!(
                    "apiserver exited with {status} before becoming ready; log:\n{}",
                    self.log_text()
                );
            }
            if self.kubeconfig.exists() {
                let out = Command::new(kubectl_bin("1.33"))
                    .arg("--kubeconfig")
                    .arg(&self.kubeconfig)
                    .args(["get", "--raw", "/readyz"])
                    .output();
                if out.is_ok_and(|o| o.status.success()) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "apiserver not ready after {timeout:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs kubectl `version` (e.g. "1.29") with the admin kubeconfig.
    pub fn kubectl(&self, version: &str, args: &[&str]) -> Result<Output> {
        Command::new(kubectl_bin(version))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("run kubectl {version}"))
    }

    /// The OS pid of the running apiserver process.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the apiserver (the store stays up).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ApiServerProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The versioned kubectl binary (`/usr/lib/google-cloud-sdk/bin/kubectl.1.NN`), or
/// `$KUBECTL_DIR/kubectl.1.NN`.
pub fn kubectl_bin(version: &str) -> PathBuf {
    let dir =
        std::env::var("KUBECTL_DIR").unwrap_or_else(|_| "/usr/lib/google-cloud-sdk/bin".into());
    PathBuf::from(dir).join(format!("kubectl.{version}"))
}

/// The kubectl versions the matrix covers.
pub const KUBECTL_VERSIONS: &[&str] = &["1.27", "1.28", "1.29", "1.30", "1.31", "1.32", "1.33"];

/// VmRSS of a process in MiB (0 when it is gone): the benchmarks' memory figure.
pub fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let l = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            l.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .unwrap_or(0.0)
        / 1024.0
}

/// Proportional set size of a process in MiB (0 when it is gone): pages shared between
/// processes — the `kumo` binary's text that every component maps — count once across them,
/// so PSS sums over many processes where RSS would not.
pub fn pss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| {
            let l = s.lines().find(|l| l.starts_with("Pss:"))?;
            l.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .unwrap_or(0.0)
        / 1024.0
}

/// Nearest-rank percentile `p` (0–1) of sorted durations (zero for none), as the benches report.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// `lock()` that shrugs off poisoning (a panicked bench task must not hide the others' data).
pub trait Lk<T> {
    fn lk(&self) -> std::sync::MutexGuard<'_, T>;
}

impl<T> Lk<T> for std::sync::Mutex<T> {
    fn lk(&self) -> std::sync::MutexGuard<'_, T> {
        self.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A command's stdout then stderr, as text (for assertion messages).
pub fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `kumo down --data-dir DIR` when dropped, so a `kumo up --detach` a test started never
/// outlives it, pass or fail.
pub struct KumoDown(pub PathBuf);

impl Drop for KumoDown {
    fn drop(&mut self) {
        let _ = Command::new(kumo_bin())
            .arg("down")
            .arg("--data-dir")
            .arg(&self.0)
            .output();
    }
}
