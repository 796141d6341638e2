//! The golden etcdctl test: `tests/golden/etcdctl.script` (its header documents the format)
//! runs step by step against a real etcd 3.4 and against `kumo store`, and every step's exit
//! status, stdout and stderr must be identical once normalised.
//!
//! Normalisation (see [`Normalizer`]) replaces what legitimately differs between two stores
//! (or two runs of the same one) by placeholders:
//! - cluster and member ids → `<cluster:N>` / `<member:N>`, numbered by first appearance, so a
//!   `leader` that is not the member itself still shows up;
//! - lease ids (`ID`, `id`, `lease`, `leases[]`, `lease <hex>` in text) → `<lease:N>`, numbered
//!   by first appearance; `leases[]` is sorted (etcd lists them by expiry) and so are the
//!   `keys` of `lease timetolive --keys` (etcd lists them from a hash map);
//! - in `-w fields` text, `"ClusterID"`, `"MemberID"`, `"RaftTerm"` and `"Lease"` likewise;
//! - raft terms and indexes, db sizes, hashes, the server version string, `took` timings, and
//!   a `lease timetolive` remaining TTL within 60 s of the granted TTL;
//! - endpoint, peer and metrics URLs, the member name and the scratch directory in all text;
//! - stderr log lines (zap JSON) are reduced to `level: msg[: error]` (no timestamps, callers,
//!   client ids);
//! - watch output is flattened to its events (plus canceled/compacted markers): how a server
//!   batches events into responses is not compared.
//!
//! Revisions, keys, values, versions, create/mod revisions, counts, `more`, exit statuses and
//! error messages are compared exactly.
//!
//! Transcripts of both runs (normalised and raw, per step) are written to
//! `$CARGO_TARGET_TMPDIR/golden/<run>.txt` (`target/tmp/golden/`) for inspection.
//!
//! Run: `cargo test -p kumo-tests --test e2e store_golden` (`KUMO_BIN` picks the kumo binary,
//! `ETCD_BIN`/`ETCDCTL_BIN` the peers; see `kumo_tests`).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kumo_tests::{StoreKind, StoreProc, etcdctl_bin, workspace_root};
use serde_json::{Map, Value, json};

/// How long one foreground etcdctl command may run before it is killed.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `@stop` waits for a watch to catch up with the store's revision.
const WATCH_CATCH_UP: Duration = Duration::from_secs(10);
/// How long a watch without `--rev` is given to be established before the script goes on.
const WATCH_SETTLE: Duration = Duration::from_secs(2);

#[test]
fn golden_etcd_self_consistent() {
    let script = load_script();
    let a = run_on(StoreKind::Etcd, &script, "etcd-a");
    let b = run_on(StoreKind::Etcd, &script, "etcd-b");
    assert_same(&script, "etcd (first run)", &a, "etcd (second run)", &b);
}

#[test]
fn golden_kumo_matches_etcd() {
    // Fail first, and clearly, when there is no kumo binary (kumo_bin() panics saying so).
    let kumo = kumo_tests::kumo_bin();
    assert!(
        Command::new(&kumo)
            .args(["store", "--help"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success()),
        "`{} store --help` fails: kumo has no `store` subcommand yet",
        kumo.display()
    );
    let script = load_script();
    let etcd = run_on(StoreKind::Etcd, &script, "etcd");
    let kumo = run_on(StoreKind::Kumo, &script, "kumo");
    assert_same(&script, "etcd", &etcd, "kumo store", &kumo);
}

// ── The script ──────────────────────────────────────────────────────────────────────────

#[derive(Debug, Clone)]
enum Stdin {
    Text(String),
    Repeat(char, usize),
}

#[derive(Debug, Clone)]
struct Capture {
    var: String,
    path: String,
    hex: bool,
}

#[derive(Debug, Clone)]
enum Action {
    Run {
        args: Vec<String>,
        stdin: Option<Stdin>,
        capture: Option<Capture>,
    },
    WatchStart {
        name: String,
        args: Vec<String>,
    },
    WatchStop {
        name: String,
    },
    Sleep(Duration),
}

#[derive(Debug, Clone)]
struct Step {
    /// 1-based line number in the script.
    line: usize,
    /// The script line, for messages.
    text: String,
    action: Action,
}

fn script_path() -> PathBuf {
    workspace_root().join("tests/golden/etcdctl.script")
}

fn load_script() -> Vec<Step> {
    let path = script_path();
    let src =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    parse_script(&src).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Splits a script line into words: whitespace separates, "…" and '…' quote (no escapes), and
/// an unquoted `#` at the start of a word begins a comment.
fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.peek() {
            None | Some('#') => break,
            _ => {}
        }
        let mut word = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() {
                break;
            }
            chars.next();
            if c == '"' || c == '\'' {
                let mut closed = false;
                for q in chars.by_ref() {
                    if q == c {
                        closed = true;
                        break;
                    }
                    word.push(q);
                }
                if !closed {
                    return Err(format!("unterminated {c}quote"));
                }
            } else {
                word.push(c);
            }
        }
        words.push(word);
    }
    Ok(words)
}

fn parse_script(src: &str) -> Result<Vec<Step>, String> {
    let lines: Vec<&str> = src.lines().collect();
    let mut steps = Vec::new();
    let mut pending_stdin: Option<(usize, Stdin)> = None;
    let mut i = 0;
    while i < lines.len() {
        let line_no = i + 1;
        let text = lines[i].trim().to_string();
        i += 1;
        let err = |m: String| format!("line {line_no}: {m}");
        let mut words = split_words(&text).map_err(err)?;
        if words.is_empty() {
            continue;
        }
        if let Some(directive) = words[0].strip_prefix('@') {
            let action = match directive {
                "stdin" => {
                    let [_, kind, c, n] = words.as_slice() else {
                        return Err(err("expected `@stdin repeat C N`".into()));
                    };
                    let mut cs = c.chars();
                    let (Some(ch), None, "repeat") = (cs.next(), cs.next(), kind.as_str()) else {
                        return Err(err("expected `@stdin repeat C N`".into()));
                    };
                    let n = n.parse().map_err(|e| err(format!("bad count: {e}")))?;
                    pending_stdin = Some((line_no, Stdin::Repeat(ch, n)));
                    continue;
                }
                "watch" => {
                    if words.len() < 3 {
                        return Err(err("expected `@watch NAME ARGS…`".into()));
                    }
                    let name = words[1].clone();
                    Action::WatchStart {
                        name,
                        args: words.split_off(2),
                    }
                }
                "stop" => {
                    let [_, name] = words.as_slice() else {
                        return Err(err("expected `@stop NAME`".into()));
                    };
                    Action::WatchStop { name: name.clone() }
                }
                "sleep" => {
                    let [_, ms] = words.as_slice() else {
                        return Err(err("expected `@sleep MS`".into()));
                    };
                    let ms = ms.parse().map_err(|e| err(format!("bad duration: {e}")))?;
                    Action::Sleep(Duration::from_millis(ms))
                }
                other => return Err(err(format!("unknown directive @{other}"))),
            };
            if pending_stdin.is_some() {
                return Err(err("@stdin must be followed by a command".into()));
            }
            steps.push(Step {
                line: line_no,
                text,
                action,
            });
            continue;
        }
        // A command: optional `=> VAR=PATH[:hex]`, optional trailing `<<TERM`.
        let mut stdin = pending_stdin.take().map(|(_, s)| s);
        if let Some(term) = words.last().and_then(|w| w.strip_prefix("<<")) {
            if term.is_empty() {
                return Err(err("`<<` needs a terminator word".into()));
            }
            let term = term.to_string();
            words.pop();
            let mut body = String::new();
            loop {
                let Some(l) = lines.get(i) else {
                    return Err(err(format!("heredoc not terminated by `{term}`")));
                };
                i += 1;
                if l.trim() == term {
                    break;
                }
                body.push_str(l);
                body.push('\n');
            }
            if stdin.is_some() {
                return Err(err("both @stdin and a heredoc".into()));
            }
            stdin = Some(Stdin::Text(body));
        }
        let mut capture = None;
        if let Some(pos) = words.iter().position(|w| w == "=>") {
            let spec = words.split_off(pos);
            let [_, spec] = spec.as_slice() else {
                return Err(err("expected `=> VAR=PATH[:hex]`".into()));
            };
            let Some((var, path)) = spec.split_once('=') else {
                return Err(err("expected `=> VAR=PATH[:hex]`".into()));
            };
            let (path, hex) = match path.strip_suffix(":hex") {
                Some(p) => (p, true),
                None => (path, false),
            };
            capture = Some(Capture {
                var: var.to_string(),
                path: path.to_string(),
                hex,
            });
        }
        if words.is_empty() {
            return Err(err("no etcdctl arguments".into()));
        }
        steps.push(Step {
            line: line_no,
            text,
            action: Action::Run {
                args: words,
                stdin,
                capture,
            },
        });
    }
    if let Some((line, _)) = pending_stdin {
        return Err(format!("line {line}: @stdin at the end of the script"));
    }
    Ok(steps)
}

// ── Running it ──────────────────────────────────────────────────────────────────────────

/// What one step printed, before normalisation.
#[derive(Debug, Clone)]
struct RawOutcome {
    /// Exit code; `None` when killed by a signal or by us (timeout).
    status: Option<i32>,
    timed_out: bool,
    stdout: String,
    stderr: String,
}

/// A finished run: the normalised outcome of every step, index-aligned with the script steps.
struct Transcript {
    results: Vec<Value>,
}

struct BgWatch {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

struct Runner<'a> {
    store: &'a StoreProc,
    scratch: PathBuf,
    vars: HashMap<String, String>,
    watches: HashMap<String, BgWatch>,
    seq: usize,
}

fn run_on(kind: StoreKind, script: &[Step], label: &str) -> Transcript {
    let dir = tempfile::Builder::new()
        .prefix(&format!("golden-{label}-"))
        .tempdir()
        .expect("create a temporary directory");
    let store = StoreProc::start(kind, &dir.path().join("store"), &[])
        .unwrap_or_else(|e| panic!("could not start {kind} for the golden test: {e:#}"));
    let scratch = dir.path().join("scratch");
    std::fs::create_dir_all(&scratch).expect("create the scratch directory");
    let mut runner = Runner {
        store: &store,
        scratch: scratch.clone(),
        vars: HashMap::from([("TMP".to_string(), scratch.display().to_string())]),
        watches: HashMap::new(),
        seq: 0,
    };
    let mut raws = Vec::with_capacity(script.len());
    for step in script {
        let raw = runner.run_step(step);
        raws.push(raw);
        if !process_alive(store.pid()) {
            let log = std::fs::read_to_string(store.log_path()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            panic!(
                "{kind} exited during line {}: {}\nlast lines of its log:\n{}",
                step.line,
                step.text,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
    for (_, mut w) in runner.watches.drain() {
        let _ = w.child.kill();
        let _ = w.child.wait();
    }
    let mut norm = Normalizer::for_store(&store, &scratch);
    let results = script
        .iter()
        .zip(&raws)
        .map(|(step, raw)| norm.outcome(step, raw))
        .collect();
    let transcript = Transcript { results };
    write_transcript(label, script, &raws, &transcript);
    transcript
}

/// Whether the process `pid` still runs (it exists and is not a zombie waiting to be reaped).
fn process_alive(pid: Option<u32>) -> bool {
    let Some(pid) = pid else { return false };
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // `pid (comm) state …`: the state follows the last ')'.
            let after = &stat[stat.rfind(')')? + 1..];
            after.split_whitespace().next().map(|state| state != "Z")
        })
        .unwrap_or(false)
}

impl Runner<'_> {
    fn substitute(&self, step: &Step, s: &str) -> String {
        let mut out = String::new();
        let mut rest = s;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .unwrap_or_else(|| panic!("line {}: unterminated ${{", step.line));
            let name = &after[..end];
            let value = self.vars.get(name).unwrap_or_else(|| {
                panic!(
                    "line {}: ${{{name}}} is not set (captured by an earlier step that failed?)",
                    step.line
                )
            });
            out.push_str(value);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out
    }

    fn command(&self, args: &[String]) -> Command {
        let mut cmd = Command::new(etcdctl_bin());
        cmd.env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(self.store.endpoint())
            .arg("--command-timeout=10s")
            .args(args);
        cmd
    }

    fn next_file(&mut self, what: &str) -> PathBuf {
        self.seq += 1;
        self.scratch.join(format!(".step{:04}.{what}", self.seq))
    }

    fn run_step(&mut self, step: &Step) -> RawOutcome {
        match &step.action {
            Action::Run {
                args,
                stdin,
                capture,
            } => {
                let args: Vec<String> = args.iter().map(|a| self.substitute(step, a)).collect();
                let stdin = stdin.as_ref().map(|s| match s {
                    Stdin::Text(t) => self.substitute(step, t),
                    Stdin::Repeat(c, n) => std::iter::repeat_n(*c, *n).collect(),
                });
                let raw = self.run_etcdctl(&args, stdin.as_deref());
                if let Some(cap) = capture {
                    let value = capture_value(&raw.stdout, &cap.path, cap.hex).unwrap_or_else(|| {
                        panic!(
                            "line {}: could not capture {} from the output of `{}` on {}: {raw:?}",
                            step.line, cap.path, step.text, self.store.kind
                        )
                    });
                    self.vars.insert(cap.var.clone(), value);
                }
                raw
            }
            Action::WatchStart { name, args } => {
                let args: Vec<String> = args.iter().map(|a| self.substitute(step, a)).collect();
                let stdout = self.next_file("out");
                let stderr = self.next_file("err");
                let child = self
                    .command(&args)
                    .stdin(Stdio::null())
                    .stdout(File::create(&stdout).expect("create watch stdout file"))
                    .stderr(File::create(&stderr).expect("create watch stderr file"))
                    .spawn()
                    .expect("spawn etcdctl watch");
                if !args.iter().any(|a| a.starts_with("--rev")) {
                    // Nothing tells when a watch from "now" is established: give it time.
                    std::thread::sleep(WATCH_SETTLE);
                }
                let old = self.watches.insert(
                    name.clone(),
                    BgWatch {
                        child,
                        stdout,
                        stderr,
                    },
                );
                assert!(
                    old.is_none(),
                    "line {}: watch {name} started twice",
                    step.line
                );
                RawOutcome {
                    status: Some(0),
                    timed_out: false,
                    stdout: String::new(),
                    stderr: String::new(),
                }
            }
            Action::WatchStop { name } => {
                let mut w = self
                    .watches
                    .remove(name)
                    .unwrap_or_else(|| panic!("line {}: no watch named {name}", step.line));
                let target = self.current_revision();
                let deadline = Instant::now() + WATCH_CATCH_UP;
                let mut timed_out = true;
                while Instant::now() < deadline {
                    let out = std::fs::read_to_string(&w.stdout).unwrap_or_default();
                    if max_event_revision(&out).is_some_and(|r| Some(r) >= target) {
                        timed_out = false;
                        break;
                    }
                    if matches!(w.child.try_wait(), Ok(Some(_))) {
                        timed_out = false;
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                // Let a response in flight land, then stop the watch.
                std::thread::sleep(Duration::from_millis(100));
                let exited = matches!(w.child.try_wait(), Ok(Some(_)));
                if !exited {
                    let _ = w.child.kill();
                }
                let status = w.child.wait().ok().and_then(|s| s.code());
                RawOutcome {
                    // A watch we stopped has no exit code of its own: record "stopped" as 0 so
                    // that a watch that ended by itself (any code) stands out.
                    status: if exited { status } else { Some(0) },
                    timed_out,
                    stdout: std::fs::read_to_string(&w.stdout).unwrap_or_default(),
                    stderr: std::fs::read_to_string(&w.stderr).unwrap_or_default(),
                }
            }
            Action::Sleep(d) => {
                std::thread::sleep(*d);
                RawOutcome {
                    status: Some(0),
                    timed_out: false,
                    stdout: String::new(),
                    stderr: String::new(),
                }
            }
        }
    }

    /// The store's current revision (a read: it does not change it).
    fn current_revision(&mut self) -> Option<i64> {
        let raw = self.run_etcdctl(
            &[
                "get".into(),
                "golden-revision-probe".into(),
                "-w".into(),
                "json".into(),
            ],
            None,
        );
        capture_value(&raw.stdout, "header.revision", false)?
            .parse()
            .ok()
    }

    fn run_etcdctl(&mut self, args: &[String], stdin: Option<&str>) -> RawOutcome {
        let out_path = self.next_file("out");
        let err_path = self.next_file("err");
        let stdin = match stdin {
            Some(s) => {
                let p = self.next_file("in");
                std::fs::write(&p, s).expect("write stdin file");
                Stdio::from(File::open(&p).expect("open stdin file"))
            }
            None => Stdio::null(),
        };
        let mut child = self
            .command(args)
            .stdin(stdin)
            .stdout(File::create(&out_path).expect("create stdout file"))
            .stderr(File::create(&err_path).expect("create stderr file"))
            .spawn()
            .expect("spawn etcdctl");
        let deadline = Instant::now() + STEP_TIMEOUT;
        let (status, timed_out) = loop {
            match child.try_wait() {
                Ok(Some(s)) => break (s.code(), false),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break (None, true);
                }
            }
        };
        RawOutcome {
            status,
            timed_out,
            stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
            stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
        }
    }
}

/// The value at a dotted `path` of the first JSON line of `stdout`, as decimal or hex text.
fn capture_value(stdout: &str, path: &str, hex: bool) -> Option<String> {
    let first: Value = stdout
        .lines()
        .find_map(|l| serde_json::from_str(l.trim()).ok())?;
    let mut v = &first;
    for part in path.split('.') {
        v = v.get(part)?;
    }
    match (v, hex) {
        (Value::Number(n), true) => Some(format!("{:x}", n.as_u64()?)),
        (Value::Number(n), false) => Some(n.to_string()),
        (Value::String(s), _) => Some(s.clone()),
        _ => None,
    }
}

/// The highest `kv.mod_revision` among the watch events printed so far.
fn max_event_revision(stdout: &str) -> Option<i64> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .filter_map(|v| v.get("Events").and_then(Value::as_array).cloned())
        .flatten()
        .filter_map(|e| e.pointer("/kv/mod_revision").and_then(Value::as_i64))
        .max()
}

// ── Normalisation ───────────────────────────────────────────────────────────────────────

/// Numbers ids by first appearance, per kind.
#[derive(Default)]
struct IdMap {
    ids: HashMap<u64, usize>,
}

impl IdMap {
    fn get(&mut self, kind: &str, id: u64) -> String {
        let n = self.ids.len() + 1;
        let n = *self.ids.entry(id).or_insert(n);
        format!("<{kind}:{n}>")
    }
}

struct Normalizer {
    /// (text, placeholder), longest text first.
    replacements: Vec<(String, String)>,
    clusters: IdMap,
    members: IdMap,
    leases: IdMap,
}

impl Normalizer {
    /// A normaliser for the outputs of a run against `store` with scratch directory `scratch`.
    fn for_store(store: &StoreProc, scratch: &Path) -> Normalizer {
        Normalizer::new(vec![
            (store.endpoint(), "<client-url>".to_string()),
            (store.metrics_url(), "<metrics-url>".to_string()),
            (
                format!("http://127.0.0.1:{}", store.peer_port),
                "<peer-url>".to_string(),
            ),
            (
                format!("127.0.0.1:{}", store.client_port),
                "<client-addr>".to_string(),
            ),
            (scratch.display().to_string(), "<tmp>".to_string()),
            (
                store.data_dir.display().to_string(),
                "<data-dir>".to_string(),
            ),
            (store.name.clone(), "<name>".to_string()),
        ])
    }

    /// `replacements`: (text, placeholder) pairs replaced in all output text.
    fn new(mut replacements: Vec<(String, String)>) -> Normalizer {
        replacements.sort_by_key(|(t, _)| std::cmp::Reverse(t.len()));
        Normalizer {
            replacements,
            clusters: IdMap::default(),
            members: IdMap::default(),
            leases: IdMap::default(),
        }
    }

    fn text(&self, s: &str) -> String {
        let mut s = s.to_string();
        for (from, to) in &self.replacements {
            s = s.replace(from.as_str(), to);
        }
        s
    }

    fn outcome(&mut self, step: &Step, raw: &RawOutcome) -> Value {
        let mut result = Map::new();
        let status = match (raw.timed_out, raw.status) {
            (true, _) => json!("timed out"),
            (false, Some(c)) => json!(c),
            (false, None) => json!("killed by a signal"),
        };
        result.insert("exit".into(), status);
        let stdout = self.stdout(&raw.stdout);
        if !stdout.is_empty() {
            result.insert("stdout".into(), Value::Array(stdout));
        }
        let stderr = self.stderr(&raw.stderr);
        if !stderr.is_empty() {
            result.insert("stderr".into(), Value::Array(stderr));
        }
        if matches!(step.action, Action::WatchStop { .. }) && raw.timed_out {
            result.insert(
                "note".into(),
                json!("the watch never reached the store's current revision"),
            );
        }
        Value::Object(result)
    }

    fn stdout(&mut self, s: &str) -> Vec<Value> {
        let s = self.text(s);
        let mut items = Vec::new();
        for line in s.lines() {
            let line = line.trim_end();
            let parsed = if line.starts_with('{') || line.starts_with('[') {
                serde_json::from_str::<Value>(line).ok()
            } else {
                None
            };
            match parsed {
                Some(mut v) => {
                    self.json(&mut v, None);
                    if let Some(events) = watch_items(&v) {
                        items.extend(events);
                    } else {
                        items.push(v);
                    }
                }
                None => items.push(Value::String(self.text_line(line))),
            }
        }
        while items.last().is_some_and(|v| v.as_str() == Some("")) {
            items.pop();
        }
        items
    }

    /// A plain-text line: ids in `lease <hex> …` and in `-w fields` lines become placeholders.
    fn text_line(&mut self, line: &str) -> String {
        if let Some(rest) = line.strip_prefix("lease ")
            && let Some((id, tail)) = rest.split_once(' ')
            && let Ok(n) = u64::from_str_radix(id, 16)
        {
            return format!("lease {} {tail}", self.leases.get("lease", n));
        }
        if let Some((name, value)) = line.split_once(" : ")
            && let Ok(n) = value.parse::<u64>()
        {
            let placeholder = match name {
                "\"ClusterID\"" => self.clusters.get("cluster", n),
                "\"MemberID\"" => self.members.get("member", n),
                "\"RaftTerm\"" => "<term>".to_string(),
                "\"Lease\"" if n != 0 => self.leases.get("lease", n),
                _ => return line.to_string(),
            };
            return format!("{name} : {placeholder}");
        }
        line.to_string()
    }

    fn stderr(&mut self, s: &str) -> Vec<Value> {
        let s = self.text(s);
        let mut lines: Vec<Value> = s
            .lines()
            .map(|line| {
                let line = line.trim_end();
                if let Ok(Value::Object(log)) = serde_json::from_str::<Value>(line)
                    && let (Some(level), Some(msg)) = (
                        log.get("level").and_then(Value::as_str),
                        log.get("msg").and_then(Value::as_str),
                    )
                {
                    let mut l = format!("{level}: {msg}");
                    if let Some(e) = log.get("error").and_then(Value::as_str) {
                        l.push_str(": ");
                        l.push_str(e);
                    }
                    return Value::String(l);
                }
                Value::String(line.to_string())
            })
            .collect();
        while lines.last().is_some_and(|v| v.as_str() == Some("")) {
            lines.pop();
        }
        lines
    }

    /// Rewrites the fields that legitimately differ; `parent` is the key holding `v`.
    fn json(&mut self, v: &mut Value, parent: Option<&str>) {
        match v {
            Value::Array(items) => {
                for item in items.iter_mut() {
                    self.json(item, parent);
                }
                if matches!(parent, Some("leases")) {
                    items.sort_by_key(|i| i.get("id").map(Value::to_string).unwrap_or_default());
                }
            }
            Value::Object(obj) => {
                let granted_ttl = obj.get("granted-ttl").and_then(Value::as_i64);
                if granted_ttl.is_some()
                    && let Some(Value::Array(keys)) = obj.get_mut("keys")
                {
                    // `lease timetolive --keys` lists keys from a hash map.
                    keys.sort_by_key(Value::to_string);
                }
                for (key, field) in obj.iter_mut() {
                    match key.as_str() {
                        "cluster_id" => map_id(field, &mut self.clusters, "cluster"),
                        "member_id" | "leader" => map_id(field, &mut self.members, "member"),
                        "ID" if parent == Some("members") => {
                            map_id(field, &mut self.members, "member")
                        }
                        "ID" | "id" => map_id(field, &mut self.leases, "lease"),
                        "lease" => {
                            if field.as_i64() != Some(0) {
                                map_id(field, &mut self.leases, "lease")
                            }
                        }
                        "raft_term" | "raftTerm" => *field = json!("<term>"),
                        "raftIndex" | "raftAppliedIndex" => *field = json!("<index>"),
                        "dbSize" | "dbSizeInUse" => *field = json!("<size>"),
                        "hash" => *field = json!("<hash>"),
                        "took" => *field = json!("<took>"),
                        "version" if field.is_string() => *field = json!("<version>"),
                        "ttl" => {
                            if let (Some(g), Some(t)) = (granted_ttl, field.as_i64())
                                && g > 0
                                && t <= g
                                && t >= g - 60
                            {
                                *field = json!("<ttl: granted - a few s>");
                            }
                        }
                        _ => self.json(field, Some(key)),
                    }
                }
            }
            _ => {}
        }
    }
}

fn map_id(field: &mut Value, map: &mut IdMap, kind: &str) {
    if let Some(n) = field.as_u64() {
        *field = json!(map.get(kind, n));
    }
}

/// A watch response flattened: one item per event, plus a marker for a cancel or a compaction.
fn watch_items(v: &Value) -> Option<Vec<Value>> {
    let obj = v.as_object()?;
    let events = obj.get("Events")?;
    let mut items: Vec<Value> = events
        .as_array()
        .map(|es| es.iter().map(|e| json!({ "event": e })).collect())
        .unwrap_or_default();
    let canceled = obj.get("Canceled").and_then(Value::as_bool) == Some(true);
    let compact = obj
        .get("CompactRevision")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if canceled || compact != 0 {
        items.push(json!({ "Canceled": canceled, "CompactRevision": compact }));
    }
    Some(items)
}

// ── Comparing ───────────────────────────────────────────────────────────────────────────

fn write_transcript(label: &str, script: &[Step], raws: &[RawOutcome], t: &Transcript) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("golden");
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let mut out = String::new();
    for ((step, raw), result) in script.iter().zip(raws).zip(&t.results) {
        out.push_str(&format!("### line {}: {}\n", step.line, step.text));
        out.push_str(&serde_json::to_string_pretty(result).unwrap_or_default());
        out.push_str("\n--- raw stdout:\n");
        out.push_str(&truncate(&raw.stdout, 4000));
        out.push_str("\n--- raw stderr:\n");
        out.push_str(&truncate(&raw.stderr, 4000));
        out.push_str("\n\n");
    }
    let _ = std::fs::write(dir.join(format!("{label}.txt")), out);
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &s[..end], s.len())
}

fn assert_same(script: &[Step], a_name: &str, a: &Transcript, b_name: &str, b: &Transcript) {
    let mut report = String::new();
    let mut differing = 0;
    for (step, (x, y)) in script.iter().zip(a.results.iter().zip(&b.results)) {
        if x == y {
            continue;
        }
        differing += 1;
        let x = serde_json::to_string_pretty(x).unwrap_or_default();
        let y = serde_json::to_string_pretty(y).unwrap_or_default();
        report.push_str(&format!(
            "\n── line {}: {}\n{}",
            step.line,
            step.text,
            line_diff(&x, &y)
        ));
    }
    assert!(
        differing == 0,
        "{differing} of {} steps of {} differ between {a_name} (-) and {b_name} (+) after \
         normalisation (transcripts in {}):\n{report}",
        script.len(),
        script_path().display(),
        Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("golden")
            .display(),
    );
}

/// A line diff (LCS), `-` for lines only in `a`, `+` only in `b`, with two lines of context.
fn line_diff(a: &str, b: &str) -> String {
    let a: Vec<&str> = a.lines().collect();
    let b: Vec<&str> = b.lines().collect();
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut ops: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            ops.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            ops.push(('+', b[j]));
            j += 1;
        } else {
            ops.push(('-', a[i]));
            i += 1;
        }
    }
    let near_change = |k: usize| {
        let lo = k.saturating_sub(2);
        let hi = (k + 2).min(ops.len() - 1);
        (lo..=hi).any(|x| ops[x].0 != ' ')
    };
    let mut out = String::new();
    let mut skipped = false;
    for (k, (op, line)) in ops.iter().enumerate() {
        if near_change(k) {
            if skipped {
                out.push_str("   …\n");
                skipped = false;
            }
            out.push_str(&format!(" {op} {line}\n"));
        } else {
            skipped = true;
        }
    }
    out
}

mod unit {
    use super::*;

    #[test]
    fn golden_script_parses() {
        let steps = load_script();
        assert!(steps.len() > 100, "only {} steps", steps.len());
    }

    /// The normaliser hides ids, terms and timings, and nothing that a store decides.
    #[test]
    fn golden_normalizer_hides_only_what_it_should() {
        let step = Step {
            line: 1,
            text: "get k -w json".into(),
            action: Action::Sleep(Duration::ZERO),
        };
        let norm = |stdout: &str, stderr: &str| {
            let raw = RawOutcome {
                status: Some(0),
                timed_out: false,
                stdout: stdout.into(),
                stderr: stderr.into(),
            };
            Normalizer::new(vec![(
                "http://127.0.0.1:1234".into(),
                "<client-url>".into(),
            )])
            .outcome(&step, &raw)
        };
        let get = |cluster: u64, term: u64, rev: u64, lease: u64, value: &str| {
            format!(
                r#"{{"header":{{"cluster_id":{cluster},"member_id":7,"revision":{rev},"raft_term":{term}}},"kvs":[{{"key":"aw==","value":"{value}","lease":{lease}}}],"count":1}}"#
            )
        };
        let base = norm(&get(1, 2, 5, 99, "dg=="), "");
        assert_eq!(base, norm(&get(3, 4, 5, 42, "dg=="), ""), "ids and terms");
        assert_ne!(base, norm(&get(1, 2, 6, 99, "dg=="), ""), "revision");
        assert_ne!(base, norm(&get(1, 2, 5, 99, "dw=="), ""), "value");
        assert_ne!(base, norm(&get(1, 2, 5, 0, "dg=="), ""), "lease or none");
        let warn = |ts: &str, code: &str| {
            format!(
                r#"{{"level":"warn","ts":"{ts}","msg":"retrying","target":"x","error":"rpc error: code = {code}"}}
Error: boom at http://127.0.0.1:1234"#
            )
        };
        let e = norm("", &warn("1", "NotFound"));
        assert_eq!(e, norm("", &warn("2", "NotFound")), "log timestamps");
        assert_ne!(e, norm("", &warn("1", "Unavailable")), "gRPC codes");
        assert_eq!(
            e["stderr"][1],
            json!("Error: boom at <client-url>"),
            "endpoints"
        );
    }

    #[test]
    fn golden_split_words() {
        assert_eq!(
            split_words(r#"put "" 'a b' c"d"e  # comment"#).expect("split"),
            vec!["put", "", "a b", "cde"]
        );
    }
}
