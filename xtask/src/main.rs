//! Project tasks, run as `cargo xtask <command>` (alias in `.cargo/config.toml`).
//!
//! * `cargo xtask test [--no-fmt] [--no-clippy] [--no-install] [-- NEXTEST_ARGS…]` — the one
//!   test command (CI runs it through `.ci/run` on a fresh Debian 12 machine as root): installs
//!   the real peers the tests drive (etcd, etcdctl, protoc) when missing, checks formatting and
//!   clippy, builds the `kumo` binary and runs the whole suite with cargo-nextest (or
//!   `cargo test` when nextest is absent).
//! * `cargo xtask bench store [--quick] [--only etcd|kumo] [--loads m,l,xl] [-- STORE_BENCH_ARGS…]`
//!   — builds release binaries and runs `store-bench` (load generator + `etcdctl check perf`)
//!   against a fresh real etcd and a fresh `kumo store`, printing a summary and a Markdown table
//!   for BENCHMARKS.md.
//! * `cargo xtask bench apiserver [--quick] [--only etcd|kumo] [--duration SECS]
//!   [-- APISERVER_BENCH_ARGS…]` — builds release binaries and runs `apiserver-bench` (issue 3:
//!   preload of pods and nodes, LIST, paced creates under 1,000 watches, RSS) with the apiserver
//!   on a fresh real etcd and on a fresh `kumo store`.
//! * `cargo xtask bench kubelet|federation [ARGS…]` — builds release binaries and runs
//!   `kubelet-bench` (issue 5) or `federation-bench` (issue 6: 100 member clusters, 1,000
//!   FederatedDeployments; registration, decision, propagation and failover times).
//!
//! Dependencies stay at std + anyhow so this builds in seconds and needs no protoc.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// Tools the test suite drives, and the Debian packages that provide them.
const TOOLS: &[&str] = &[
    "etcd",
    "etcdctl",
    "protoc",
    "prometheus",
    "promtool",
    "containerd",
    "runc",
    "busybox",
];
/// Installed with `--no-install-recommends`: prometheus' recommends would pull exporters and
/// start services; `libprotobuf-dev` (the well-known .proto files protoc needs) is named.
const APT_PACKAGES: &[&str] = &[
    "etcd-server",
    "etcd-client",
    "protobuf-compiler",
    "libprotobuf-dev",
    "prometheus",
    // The `cri` runtime tests: containerd 1.6 + runc, CNI bridge/host-local/loopback plugins
    // (/usr/lib/cni), busybox for the locally built images, `ip` for pod network checks.
    "containerd",
    "runc",
    "containernetworking-plugins",
    "busybox-static",
    "iproute2",
];

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  test [--no-fmt] [--no-clippy] [--no-install] [-- ARGS…]
        install missing peers (apt: etcd-server etcd-client protobuf-compiler libprotobuf-dev prometheus),
        cargo fmt --check, cargo clippy -D warnings, cargo build -p kumo, then
        cargo nextest run --workspace --no-fail-fast ARGS… (cargo test when nextest is absent)
  bench store [--quick] [--only etcd|kumo] [--duration SECS] [--clients 1,64,500]
              [--loads m,l,xl | --no-check-perf] [-- STORE_BENCH_ARGS…]
        cargo build --release -p kumo -p kumo-tests --bins, then the store-bench load generator
        and `etcdctl check perf` against a fresh etcd and a fresh kumo store
  bench kubelet [--quick] [--only process|sim] [--pods N] [--sim-nodes N]
        cargo build --release -p kumo -p kumo-tests --bins, then kubelet-bench (pod startup
        latency and kubelet RSS with the process runtime; 5,000 hollow nodes with sim)
  bench federation [--quick] [--members N] [--fds N] [--create-rate R] [...]
        cargo build --release -p kumo -p kumo-tests --bins, then federation-bench (a host,
        `kumo federation`, 100 member clusters of their own store + apiserver, 1,000
        FederatedDeployments: registration, decision, propagation, failover; --quick: 10/100)
  bench apiserver [--quick] [--only etcd|kumo] [--duration SECS] [-- APISERVER_BENCH_ARGS…]
        cargo build --release -p kumo -p kumo-tests --bins, then apiserver-bench (150,000 pods,
        5,000 nodes, LIST, creates at 1,000/s under 1,000 watches, RSS; --quick: 10,000 pods,
        500 nodes, 10 s) with the apiserver on a fresh etcd and on a fresh kumo store
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        Some("bench") => bench(&args[1..]),
        Some("-h" | "--help" | "help") => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => Err(anyhow::anyhow!("unknown command `{other}`\n\n{USAGE}")),
        None => Err(anyhow::anyhow!("no command given\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nxtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------------
// cargo xtask test

fn test(args: &[String]) -> Result<()> {
    let (own, passthrough) = split_passthrough(args);
    let mut fmt = true;
    let mut clippy = true;
    let mut install = true;
    for a in own {
        match a.as_str() {
            "--no-fmt" => fmt = false,
            "--no-clippy" => clippy = false,
            "--no-install" => install = false,
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(());
            }
            other => {
                bail!("`cargo xtask test`: unknown flag `{other}` (extra test args go after `--`)")
            }
        }
    }
    let root = workspace_root();
    let started = Instant::now();
    let mut steps = Steps::default();

    steps.run(
        "ensure the real peers (etcd, etcdctl, protoc, prometheus)",
        || {
            if install {
                ensure_tools()
            } else {
                report_tools();
                Ok(())
            }
        },
    )?;
    steps.run(
        "ensure the official Python client (pip install kubernetes)",
        || {
            if install {
                ensure_python_client()
            } else {
                Ok(())
            }
        },
    )?;

    if fmt {
        steps.soft("cargo fmt --all -- --check", || {
            ensure_component("rustfmt", &["fmt", "--version"]);
            cargo(&root, &["fmt", "--all", "--", "--check"])
        });
    } else {
        steps.skip("cargo fmt --all -- --check", "--no-fmt");
    }

    if clippy {
        steps.soft(
            "cargo clippy --workspace --all-targets -- -D warnings",
            || {
                ensure_component("clippy", &["clippy", "--version"]);
                cargo(
                    &root,
                    &[
                        "clippy",
                        "--workspace",
                        "--all-targets",
                        "--",
                        "-D",
                        "warnings",
                    ],
                )
            },
        );
    } else {
        steps.skip(
            "cargo clippy --workspace --all-targets -- -D warnings",
            "--no-clippy",
        );
    }

    steps.run("cargo build -p kumo", || {
        cargo(&root, &["build", "-p", "kumo"])
    })?;

    // The harness picks the newer of target/{debug,release}/kumo unless KUMO_BIN is set; pin the
    // binary just built so a stale release build from a bench run is never the one under test.
    let kumo_bin = std::env::var_os("KUMO_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir(&root).join("debug").join("kumo"));
    if !kumo_bin.is_file() {
        bail!(
            "`cargo build -p kumo` succeeded but {} does not exist",
            kumo_bin.display()
        );
    }

    if has_nextest() {
        let mut cmd: Vec<&str> = vec!["nextest", "run", "--workspace", "--no-fail-fast"];
        cmd.extend(passthrough.iter().map(String::as_str));
        steps.run(&format!("cargo {}", cmd.join(" ")), || {
            cargo_env(&root, &cmd, &[("KUMO_BIN", kumo_bin.as_os_str())])
        })?;
    } else {
        println!("xtask: cargo-nextest not found; falling back to `cargo test`");
        let mut cmd: Vec<&str> = vec!["test", "--workspace", "--no-fail-fast"];
        if !passthrough.is_empty() {
            cmd.push("--");
            cmd.extend(passthrough.iter().map(String::as_str));
        }
        steps.run(&format!("cargo {}", cmd.join(" ")), || {
            cargo_env(&root, &cmd, &[("KUMO_BIN", kumo_bin.as_os_str())])
        })?;
    }

    steps.summary();
    if !steps.failed.is_empty() {
        bail!("failed: {}", steps.failed.join("; "));
    }
    println!("\nxtask: all steps passed in {:.0?}", started.elapsed());
    Ok(())
}

/// Makes sure etcd, etcdctl and protoc are on PATH, installing the Debian packages if not.
fn ensure_tools() -> Result<()> {
    let missing = missing_tools();
    if missing.is_empty() {
        report_tools();
        return Ok(());
    }
    println!(
        "xtask: missing {}; installing {} with apt-get",
        missing.join(", "),
        APT_PACKAGES.join(" ")
    );
    if which("apt-get").is_none() {
        bail!(
            "{} not found and apt-get is unavailable: install etcd 3.4+ (server and etcdctl) and \
             protoc by hand, or run on Debian/Ubuntu",
            missing.join(", ")
        );
    }
    let sudo: Vec<&str> = if is_root() {
        vec![]
    } else if which("sudo").is_some() {
        vec!["sudo", "-n"]
    } else {
        bail!(
            "{} not found and not running as root (no sudo): run `apt-get install -y {}` as root",
            missing.join(", "),
            APT_PACKAGES.join(" ")
        );
    };
    let apt = |args: &[&str]| -> Result<()> {
        let mut argv: Vec<&str> = sudo.clone();
        argv.push("apt-get");
        argv.extend_from_slice(args);
        let mut cmd = Command::new(argv[0]);
        cmd.args(&argv[1..])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("NEEDRESTART_MODE", "a");
        run(&mut cmd)
    };
    if let Err(e) = apt(&["update"]) {
        // The install below may still work from the cached lists; it fails loudly if not.
        println!("xtask: warning: `apt-get update` failed ({e:#}); trying the install anyway");
    }
    let mut install = vec!["install", "-y", "--no-install-recommends"];
    install.extend_from_slice(APT_PACKAGES);
    apt(&install).with_context(|| {
        format!(
            "`apt-get install -y {}` failed: the tests need etcd, etcdctl, protoc and prometheus \
             (is the Debian package mirror reachable?)",
            APT_PACKAGES.join(" ")
        )
    })?;
    let still = missing_tools();
    if !still.is_empty() {
        bail!(
            "installed {} but {} still not on PATH ({})",
            APT_PACKAGES.join(" "),
            still.join(", "),
            std::env::var("PATH").unwrap_or_default()
        );
    }
    report_tools();
    Ok(())
}

/// Makes sure `python3 -c "import kubernetes"` works: apt `python3-pip` when pip is missing,
/// then `pip install kubernetes` (Debian 12 needs `--break-system-packages`).
fn ensure_python_client() -> Result<()> {
    let has = |args: &[&str]| {
        Command::new("python3")
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if has(&["-c", "import kubernetes"]) {
        println!("xtask: python kubernetes client present");
        return Ok(());
    }
    if !has(&["-m", "pip", "--version"]) {
        if which("apt-get").is_none() || !is_root() {
            bail!("python3 with pip is needed for the Python client tests: install python3-pip");
        }
        let mut cmd = Command::new("apt-get");
        cmd.args([
            "install",
            "-y",
            "--no-install-recommends",
            "python3",
            "python3-pip",
        ])
        .env("DEBIAN_FRONTEND", "noninteractive");
        run(&mut cmd).context("apt-get install python3-pip")?;
    }
    let mut cmd = Command::new("python3");
    cmd.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--break-system-packages",
        "kubernetes",
    ]);
    if run(&mut cmd).is_err() {
        // pip without --break-system-packages support (older pip, virtualenvs)
        let mut cmd = Command::new("python3");
        cmd.args(["-m", "pip", "install", "--quiet", "kubernetes"]);
        run(&mut cmd).context("pip install kubernetes")?;
    }
    if !has(&["-c", "import kubernetes"]) {
        bail!("pip installed kubernetes but python3 cannot import it");
    }
    Ok(())
}

fn missing_tools() -> Vec<&'static str> {
    TOOLS
        .iter()
        .copied()
        .filter(|t| which(t).is_none())
        .collect()
}

fn report_tools() {
    for t in TOOLS {
        match which(t) {
            Some(p) => {
                let version = tool_version(t);
                println!("  {t:<8} {} {version}", p.display());
            }
            None => println!("  {t:<8} MISSING"),
        }
    }
}

fn tool_version(tool: &str) -> String {
    let out = match tool {
        "etcdctl" => Command::new(tool)
            .arg("version")
            .env("ETCDCTL_API", "3")
            .output(),
        _ => Command::new(tool).arg("--version").output(),
    };
    out.ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(|l| format!("({})", l.trim())))
        .unwrap_or_default()
}

/// If `cargo ARGS` fails (component missing), tries `rustup component add NAME` once.
fn ensure_component(name: &str, probe: &[&str]) {
    let ok = Command::new(cargo_bin())
        .args(probe)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok && which("rustup").is_some() {
        println!(
            "xtask: `cargo {}` unavailable; running `rustup component add {name}`",
            probe.join(" ")
        );
        let _ = run(Command::new("rustup").args(["component", "add", name]));
    }
}

fn has_nextest() -> bool {
    Command::new(cargo_bin())
        .args(["nextest", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------------------------
// cargo xtask bench store | apiserver

fn bench(args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("store") => bench_store(&args[1..]),
        Some("apiserver") => bench_apiserver(&args[1..]),
        Some("kubelet") => bench_bin("kubelet-bench", &args[1..]),
        Some("federation") => bench_bin("federation-bench", &args[1..]),
        Some(other) => {
            bail!("unknown benchmark `{other}` (available: store, apiserver, kubelet, federation)")
        }
        None => bail!(
            "`cargo xtask bench` needs a benchmark name (available: store, apiserver, kubelet, federation)"
        ),
    }
}

/// `cargo xtask bench kubelet|federation [ARGS…]`: release build, then `bin` with `ARGS`:
/// kubelet-bench (pod startup latency and kubelet RSS with the process runtime; hollow nodes
/// with sim) or federation-bench (100 member clusters, 1,000 FederatedDeployments).
fn bench_bin(bin: &str, args: &[String]) -> Result<()> {
    let root = workspace_root();
    let mut steps = Steps::default();
    steps.run("ensure the real peers", ensure_tools)?;
    let build = [
        "build",
        "--release",
        "-p",
        "kumo",
        "-p",
        "kumo-tests",
        "--bins",
    ];
    steps.run(&format!("cargo {}", build.join(" ")), || {
        cargo(&root, &build)
    })?;
    let release = target_dir(&root).join("release");
    let mut cmd = Command::new(release.join(bin));
    cmd.current_dir(&root);
    if std::env::var_os("KUMO_BIN").is_none() {
        cmd.env("KUMO_BIN", release.join("kumo"));
    }
    cmd.args(args.iter().filter(|a| *a != "--"));
    steps.run(&format!("{bin} ({})", describe(&cmd)), || run(&mut cmd))?;
    steps.summary();
    Ok(())
}

fn bench_apiserver(args: &[String]) -> Result<()> {
    let (own, passthrough) = split_passthrough(args);
    let mut quick = false;
    let mut only: Option<String> = None;
    let mut duration: Option<String> = None;
    let mut it = own.iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| -> Result<String> {
            it.next()
                .cloned()
                .with_context(|| format!("{flag} needs a value"))
        };
        match a.as_str() {
            "--quick" => quick = true,
            "--only" => only = Some(value("--only")?),
            "--duration" => duration = Some(value("--duration")?),
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(());
            }
            other => bail!(
                "`cargo xtask bench apiserver`: unknown flag `{other}` (apiserver-bench args go \
                 after `--`)"
            ),
        }
    }
    if let Some(o) = &only
        && o != "etcd"
        && o != "kumo"
    {
        bail!("--only takes `etcd` or `kumo`, not `{o}`");
    }
    let root = workspace_root();
    let mut steps = Steps::default();
    steps.run(
        "ensure the real peers (etcd, etcdctl, protoc, prometheus)",
        ensure_tools,
    )?;
    let build = [
        "build",
        "--release",
        "-p",
        "kumo",
        "-p",
        "kumo-tests",
        "--bins",
    ];
    steps.run(&format!("cargo {}", build.join(" ")), || {
        cargo(&root, &build)
    })?;

    let release = target_dir(&root).join("release");
    let out_dir = target_dir(&root).join("bench");
    std::fs::create_dir_all(&out_dir)?;
    let md_out = out_dir.join("apiserver.md");
    let mut cmd = Command::new(release.join("apiserver-bench"));
    cmd.current_dir(&root);
    if std::env::var_os("KUMO_BIN").is_none() {
        cmd.env("KUMO_BIN", release.join("kumo"));
    }
    if quick {
        cmd.arg("--quick");
    }
    if let Some(d) = &duration {
        cmd.args(["--duration", d]);
    }
    if let Some(o) = &only {
        cmd.args(["--only", o]);
    }
    cmd.arg("--markdown-out").arg(&md_out);
    cmd.args(passthrough);
    steps.run(&format!("apiserver-bench ({})", describe(&cmd)), || {
        run(&mut cmd)
    })?;
    steps.summary();
    println!(
        "\nxtask: Markdown for BENCHMARKS.md written to {}",
        md_out.display()
    );
    Ok(())
}

fn bench_store(args: &[String]) -> Result<()> {
    let (own, passthrough) = split_passthrough(args);
    let mut quick = false;
    let mut only: Option<String> = None;
    let mut duration: Option<String> = None;
    let mut clients: Option<String> = None;
    let mut loads: Option<String> = None;
    let mut it = own.iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| -> Result<String> {
            it.next()
                .cloned()
                .with_context(|| format!("{flag} needs a value"))
        };
        match a.as_str() {
            "--quick" => quick = true,
            "--only" => only = Some(value("--only")?),
            "--duration" => duration = Some(value("--duration")?),
            "--clients" => clients = Some(value("--clients")?),
            "--loads" => loads = Some(value("--loads")?),
            "--no-check-perf" => loads = Some(String::new()),
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(());
            }
            other => bail!(
                "`cargo xtask bench store`: unknown flag `{other}` (store-bench args go after `--`)"
            ),
        }
    }
    if let Some(o) = &only
        && o != "etcd"
        && o != "kumo"
    {
        bail!("--only takes `etcd` or `kumo`, not `{o}`");
    }
    let root = workspace_root();
    let mut steps = Steps::default();

    steps.run(
        "ensure the real peers (etcd, etcdctl, protoc, prometheus)",
        ensure_tools,
    )?;

    // With `--only etcd` the kumo binary is not needed; don't make the bench depend on it.
    let mut build: Vec<&str> = vec!["build", "--release"];
    if only.as_deref() != Some("etcd") {
        build.extend(["-p", "kumo"]);
    }
    build.extend(["-p", "kumo-tests", "--bins"]);
    steps.run(&format!("cargo {}", build.join(" ")), || {
        cargo(&root, &build)
    })?;

    let release = target_dir(&root).join("release");
    let bench_bin = release.join("store-bench");
    let out_dir = target_dir(&root).join("bench");
    std::fs::create_dir_all(&out_dir)?;
    let md_out = out_dir.join("store.md");

    let mut cmd = Command::new(&bench_bin);
    cmd.current_dir(&root);
    if only.as_deref() != Some("etcd") && std::env::var_os("KUMO_BIN").is_none() {
        cmd.env("KUMO_BIN", release.join("kumo"));
    }
    let duration = duration.unwrap_or_else(|| if quick { "3" } else { "10" }.to_string());
    cmd.args(["--duration", &duration]);
    if let Some(c) = &clients {
        cmd.args(["--clients", c]);
    }
    if let Some(o) = &only {
        cmd.args(["--only", o]);
    }
    // check perf runs 60 s per load (fixed by etcdctl); --quick keeps only the medium load.
    let loads = loads.unwrap_or_else(|| if quick { "m" } else { "m,l,xl" }.to_string());
    cmd.args(["--check-perf", &loads]);
    cmd.arg("--markdown-out").arg(&md_out);
    cmd.args(passthrough);
    steps.run(&format!("store-bench ({})", describe(&cmd)), || {
        run(&mut cmd)
    })?;

    steps.summary();
    println!(
        "\nxtask: Markdown for BENCHMARKS.md written to {}",
        md_out.display()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// helpers

#[derive(Default)]
struct Steps {
    done: Vec<(String, String)>,
    /// Steps that failed without stopping the run (see [`Steps::soft`]).
    failed: Vec<String>,
}

impl Steps {
    fn run(&mut self, name: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
        let n = self.done.len() + 1;
        println!("\n==> [{n}] {name}");
        let t = Instant::now();
        match f() {
            Ok(()) => {
                let took = format!("{:.1?}", t.elapsed());
                println!("==> [{n}] ok ({took}): {name}");
                self.done.push((name.to_string(), format!("ok ({took})")));
                Ok(())
            }
            Err(e) => {
                println!("==> [{n}] FAILED after {:.1?}: {name}", t.elapsed());
                self.done.push((name.to_string(), "FAILED".to_string()));
                self.summary();
                Err(e.context(format!("step failed: {name}")))
            }
        }
    }

    /// Like [`Steps::run`], but a failure is recorded and the run goes on (fmt and clippy
    /// findings should not hide the test results); the command still fails at the end.
    fn soft(&mut self, name: &str, f: impl FnOnce() -> Result<()>) {
        let n = self.done.len() + 1;
        println!("\n==> [{n}] {name}");
        let t = Instant::now();
        match f() {
            Ok(()) => {
                let took = format!("{:.1?}", t.elapsed());
                println!("==> [{n}] ok ({took}): {name}");
                self.done.push((name.to_string(), format!("ok ({took})")));
            }
            Err(e) => {
                println!(
                    "==> [{n}] FAILED after {:.1?} (continuing; the run will fail): {name}: {e:#}",
                    t.elapsed()
                );
                self.done.push((name.to_string(), "FAILED".to_string()));
                self.failed.push(name.to_string());
            }
        }
    }

    fn skip(&mut self, name: &str, why: &str) {
        let n = self.done.len() + 1;
        println!("\n==> [{n}] skipped ({why}): {name}");
        self.done
            .push((name.to_string(), format!("skipped ({why})")));
    }

    fn summary(&self) {
        println!("\nxtask summary:");
        for (i, (name, status)) in self.done.iter().enumerate() {
            println!("  [{}] {status:<16} {name}", i + 1);
        }
    }
}

/// Splits `args` at the first `--`: (ours, passed through).
fn split_passthrough(args: &[String]) -> (&[String], &[String]) {
    match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], &args[i + 1..]),
        None => (args, &[]),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => {
            let d = PathBuf::from(d);
            if d.is_absolute() { d } else { root.join(d) }
        }
        None => root.join("target"),
    }
}

/// The cargo that runs us (`$CARGO`), else `cargo` on PATH.
fn cargo_bin() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"))
}

fn cargo(root: &Path, args: &[&str]) -> Result<()> {
    cargo_env(root, args, &[])
}

fn cargo_env(root: &Path, args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Result<()> {
    let mut cmd = Command::new(cargo_bin());
    cmd.current_dir(root).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(&mut cmd)
}

/// Runs a command with inherited stdio; an error if it cannot start or exits non-zero.
fn run(cmd: &mut Command) -> Result<()> {
    let shown = describe(cmd);
    println!("$ {shown}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` exited with {status}");
    }
    Ok(())
}

fn describe(cmd: &Command) -> String {
    let mut s = Path::new(cmd.get_program())
        .file_name()
        .unwrap_or(cmd.get_program())
        .to_string_lossy()
        .into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// `command -v NAME`: the first executable `NAME` on PATH.
fn which(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| {
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim() == "0")
        .unwrap_or(false)
}
