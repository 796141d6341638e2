//! The `process` container runtime driven directly (as the kubelet drives it), with a real
//! busybox image built from Debian's busybox-static and imported into the local image store:
//! pod networking (host → pod IP, container → container on localhost), CRI-format logs, exec,
//! env/args/mounts, exit codes, SIGTERM/SIGKILL stops, OOM kills under a memory limit, start
//! errors, and state surviving a new runtime instance on the same root (a kubelet restart).
//!
//! Needs root (namespaces, cgroups, the `kumo0` bridge) and the `kumo` binary (the runtime
//! re-executes it for its helper processes); skipped with a printed reason otherwise.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kumo_runtime::image::ImageStore;
use kumo_runtime::process::{ProcessRuntime, ProcessRuntimeOptions};
use kumo_runtime::{
    ContainerConfig, ContainerState, ExecRequest, Mount, Resources, Runtime, SandboxConfig,
    SandboxState, StreamTarget,
};
use kumo_tests::images::{busybox_bin, busybox_image_tar};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const IMAGE: &str = "busybox:latest";

#[allow(clippy::print_stderr)]
fn skip_reason() -> Option<String> {
    let why = if !nix_is_root() {
        Some("needs root (namespaces, cgroups, bridge networking)".to_string())
    } else if !busybox_bin().exists() {
        Some(format!(
            "{} missing: apt-get install -y busybox-static",
            busybox_bin().display()
        ))
    } else {
        None
    };
    if let Some(w) = &why {
        if kumo_tests::running_under_ci() {
            panic!("process runtime test: {w} (CI is set, so this is a failure, not a skip)");
        }
        eprintln!("SKIPPED process runtime test: {w}");
    }
    why
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

struct Env {
    dir: tempfile::TempDir,
    runtime: ProcessRuntime,
}

/// Even when an assertion fails mid-test, no pod process outlives the test.
impl Drop for Env {
    fn drop(&mut self) {
        let rt = self.runtime.clone();
        let _ = std::thread::spawn(move || {
            if let Ok(tokio_rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                let _ = tokio_rt.block_on(rt.remove_all());
            }
        })
        .join();
    }
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let tar = busybox_image_tar(dir.path(), IMAGE, &["sh"]).expect("busybox image");
        let store = ImageStore::open(&dir.path().join("images")).expect("image store");
        let imported = store.import(&tar).expect("import");
        assert_eq!(
            imported[0].names,
            vec!["docker.io/library/busybox:latest".to_string()]
        );
        let runtime = Self::runtime_on(dir.path(), store);
        assert!(runtime.isolated(), "root with namespaces: isolated mode");
        Env { dir, runtime }
    }

    fn runtime_on(root: &Path, store: ImageStore) -> ProcessRuntime {
        ProcessRuntime::with_options(
            &root.join("runtime"),
            store,
            ProcessRuntimeOptions {
                helper_binary: Some(kumo_tests::kumo_bin()),
                ..Default::default()
            },
        )
        .expect("process runtime")
    }

    /// A second runtime instance on the same state (what a restarted kubelet creates).
    fn restarted(&self) -> ProcessRuntime {
        let store = ImageStore::open(&self.dir.path().join("images")).expect("image store");
        Self::runtime_on(self.dir.path(), store)
    }

    fn sandbox_config(&self, name: &str) -> SandboxConfig {
        SandboxConfig {
            pod_uid: format!("uid-{name}-{}", std::process::id()),
            namespace: "default".into(),
            name: name.into(),
            hostname: name.into(),
            log_directory: self.dir.path().join("logs").join(name),
            ..Default::default()
        }
    }

    fn container(&self, pod: &str, name: &str, command: &[&str]) -> ContainerConfig {
        ContainerConfig {
            name: name.into(),
            image: IMAGE.into(),
            command: command.iter().map(|s| s.to_string()).collect(),
            log_path: self
                .dir
                .path()
                .join("logs")
                .join(pod)
                .join(name)
                .join("0.log"),
            ..Default::default()
        }
    }

    fn state_file(&self, container_id: &str, file: &str) -> PathBuf {
        self.dir
            .path()
            .join("runtime/containers")
            .join(container_id)
            .join(file)
    }

    fn container_pid(&self, container_id: &str) -> i32 {
        let s = std::fs::read_to_string(self.state_file(container_id, "started.json"))
            .expect("started.json");
        let v: serde_json::Value = serde_json::from_str(&s).expect("json");
        v["pid"].as_i64().expect("pid") as i32
    }
}

async fn run(
    rt: &ProcessRuntime,
    sandbox: &str,
    sb: &SandboxConfig,
    c: &ContainerConfig,
) -> String {
    let id = rt
        .create_container(sandbox, c, sb)
        .await
        .expect("create container");
    rt.start_container(&id).await.expect("start container");
    id
}

/// Waits (bounded) until the container has exited; returns its status.
async fn wait_exited(rt: &ProcessRuntime, id: &str) -> kumo_runtime::ContainerStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = rt.container_status(id).await.expect("status");
        if st.state == ContainerState::Exited {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "container {id} still {:?}",
            st.state
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn http_get(addr: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr.parse().expect("addr"), Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /index.html HTTP/1.0\r\nHost: pod\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

async fn exec_ok(rt: &ProcessRuntime, id: &str, cmd: &[&str]) -> String {
    let cmd: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
    let out = rt
        .exec_sync(id, &cmd, Duration::from_secs(30))
        .await
        .expect("exec_sync");
    assert_eq!(
        out.exit_code,
        0,
        "{cmd:?}: stdout {} stderr {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Log records as (stream, tag, content), checking the CRI timestamp on the way.
fn log_records(path: &Path) -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(path).expect("log file");
    text.lines()
        .map(|l| {
            let mut p = l.splitn(4, ' ');
            let ts = p.next().unwrap_or_default();
            assert!(
                ts.parse::<jiff::Timestamp>().is_ok(),
                "bad CRI timestamp in {l:?}"
            );
            (
                p.next().unwrap_or_default().to_string(),
                p.next().unwrap_or_default().to_string(),
                p.next().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_runtime_pod_networking_logs_exec_and_restart() {
    if skip_reason().is_some() {
        return;
    }
    let env = Env::new();
    let rt = &env.runtime;

    // A host directory mounted read-only, and one read-write.
    let ro = env.dir.path().join("config");
    std::fs::create_dir_all(&ro).expect("mkdir");
    std::fs::write(ro.join("greeting"), "hello from the host\n").expect("write");
    let rw = env.dir.path().join("shared");
    std::fs::create_dir_all(&rw).expect("mkdir");

    let sb = env.sandbox_config("web");
    let sandbox = rt.run_sandbox(&sb).await.expect("run sandbox");
    let status = rt.sandbox_status(&sandbox).await.expect("sandbox status");
    assert_eq!(status.state, SandboxState::Ready);
    let ip = status.ip.clone().expect("pod ip");
    if rt.bridge_networking() {
        assert!(ip.starts_with("10.88."), "pod IP {ip}");
    }

    let mut web = env.container(
        "web",
        "web",
        &[
            "sh",
            "-c",
            "mkdir -p /www && echo \"$GREETING\" > /www/index.html && echo started \"$@\" && \
             echo to-stderr >&2 && exec httpd -f -p 8080 -h /www",
        ],
    );
    web.args = vec!["sh".into(), "arg-one".into(), "arg two".into()];
    web.env = vec![
        ("GREETING".into(), "hi from the pod".into()),
        ("PATH".into(), "/bin:/usr/bin".into()),
    ];
    // /etc/hosts comes from the kubelet as a mount, as upstream's kubelet does.
    let hosts = env.dir.path().join("hosts");
    std::fs::write(&hosts, format!("127.0.0.1\tlocalhost\n{ip}\tweb\n")).expect("hosts");
    let hosts_mount = Mount {
        host_path: hosts.clone(),
        container_path: "/etc/hosts".into(),
        read_only: false,
    };
    web.mounts = vec![
        hosts_mount.clone(),
        Mount {
            host_path: ro.clone(),
            container_path: "/etc/app".into(),
            read_only: true,
        },
        Mount {
            host_path: rw.clone(),
            container_path: "/shared".into(),
            read_only: false,
        },
    ];
    let web_id = run(rt, &sandbox, &sb, &web).await;
    let st = rt.container_status(&web_id).await.expect("status");
    assert_eq!(st.state, ContainerState::Running);
    assert!(st.image_id.starts_with("sha256:"));

    // The kubelet (host) reaches the pod's port on the pod IP (httpGet/tcpSocket probes).
    let addr = format!("{ip}:8080");
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        match http_get(&addr) {
            Ok(b) if b.contains("200 OK") => break b,
            other => {
                assert!(Instant::now() < deadline, "GET {addr}: {other:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert!(body.contains("hi from the pod"), "{body}");

    // exec: wget over the pod's loopback, env, args, mounts, hostname, pid namespace.
    let page = exec_ok(
        rt,
        &web_id,
        &["wget", "-qO-", "http://localhost:8080/index.html"],
    )
    .await;
    assert_eq!(page.trim(), "hi from the pod");
    assert_eq!(
        exec_ok(rt, &web_id, &["sh", "-c", "echo $GREETING"])
            .await
            .trim(),
        "hi from the pod"
    );
    assert_eq!(exec_ok(rt, &web_id, &["hostname"]).await.trim(), "web");
    assert_eq!(
        exec_ok(rt, &web_id, &["cat", "/etc/app/greeting"]).await,
        "hello from the host\n"
    );
    let denied = rt
        .exec_sync(
            &web_id,
            &["touch".into(), "/etc/app/new".into()],
            Duration::from_secs(10),
        )
        .await
        .expect("exec");
    assert_ne!(denied.exit_code, 0, "read-only mount is writable");
    exec_ok(rt, &web_id, &["sh", "-c", "echo written > /shared/out"]).await;
    assert_eq!(
        std::fs::read_to_string(rw.join("out")).expect("rw mount"),
        "written\n"
    );
    // pid 1 of the container's own pid namespace is the container's command.
    let comm = exec_ok(rt, &web_id, &["cat", "/proc/1/comm"]).await;
    assert_eq!(comm.trim(), "httpd");
    // The image's files are visible; the container writes to its own upper layer only.
    exec_ok(
        rt,
        &web_id,
        &["sh", "-c", "echo x > /bin/written-by-container"],
    )
    .await;
    let store = ImageStore::open(&env.dir.path().join("images")).expect("store");
    let image = store.resolve(IMAGE).expect("image");
    assert!(
        !store
            .rootfs(&image.id)
            .join("bin/written-by-container")
            .exists()
    );
    // A failing command reports its exit code.
    let out = rt
        .exec_sync(
            &web_id,
            &["sh".into(), "-c".into(), "exit 7".into()],
            Duration::from_secs(10),
        )
        .await
        .expect("exec");
    assert_eq!(out.exit_code, 7);

    // Interactive exec with stdin (kubectl exec -i).
    let session = rt
        .exec(
            &web_id,
            &ExecRequest {
                cmd: vec!["sh".into()],
                stdin: true,
                stdout: true,
                stderr: true,
                tty: false,
            },
        )
        .await
        .expect("exec");
    let StreamTarget::Local(mut session) = session else {
        panic!("process runtime streams locally");
    };
    let mut stdin = session.stdin.take().expect("stdin");
    stdin
        .write_all(b"echo interactive $GREETING; exit 3\n")
        .await
        .expect("write");
    drop(stdin);
    let mut out = String::new();
    session
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .await
        .expect("read");
    assert_eq!(out.trim(), "interactive hi from the pod");
    assert_eq!(session.exit.await.expect("exit"), 3);

    // exec with a TTY (kubectl exec -t): a terminal, and resizes reach it.
    let session = rt
        .exec(
            &web_id,
            &ExecRequest {
                cmd: vec![
                    "sh".into(),
                    "-c".into(),
                    "tty; while [ \"$(stty size)\" != \"30 100\" ]; do sleep 0.05; done; echo resized".into(),
                ],
                stdin: false,
                stdout: true,
                stderr: false,
                tty: true,
            },
        )
        .await
        .expect("exec tty");
    let StreamTarget::Local(mut session) = session else {
        panic!("process runtime streams locally");
    };
    assert!(session.stderr.is_none(), "a TTY merges stderr into stdout");
    session
        .resize
        .as_ref()
        .expect("resize channel")
        .send((100, 30))
        .await
        .expect("resize");
    let mut stdout = session.stdout.take().expect("stdout");
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    // A pty master reads EIO once the last slave closes: that is its end of stream.
    while let Ok(n) = stdout.read(&mut buf).await {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    let out = String::from_utf8_lossy(&out);
    assert!(out.contains("/dev/pts/"), "{out}");
    assert!(out.contains("resized"), "{out}");
    assert_eq!(session.exit.await.expect("exit"), 0);

    // A second container of the pod reaches the first on localhost.
    let mut side = env.container("web", "sidecar", &["sleep", "inf"]);
    side.mounts = vec![hosts_mount];
    let side_id = run(rt, &sandbox, &sb, &side).await;
    let page = exec_ok(
        rt,
        &side_id,
        &["wget", "-qO-", "http://127.0.0.1:8080/index.html"],
    )
    .await;
    assert_eq!(page.trim(), "hi from the pod");

    // Logs: CRI format, both streams, args passed through.
    let recs = log_records(&web.log_path);
    assert!(
        recs.contains(&(
            "stdout".into(),
            "F".into(),
            "started arg-one arg two".into()
        )),
        "{recs:?}"
    );
    assert!(
        recs.contains(&("stderr".into(), "F".into(), "to-stderr".into())),
        "{recs:?}"
    );

    // Stats from the container's cgroup.
    let stats = rt.container_stats(&web_id).await.expect("stats");
    assert!(
        stats.memory_working_set_bytes.is_some_and(|m| m > 0),
        "{stats:?}"
    );
    assert!(stats.cpu_usage_nanos.is_some(), "{stats:?}");

    // A restarted kubelet (new runtime instance on the same root) finds everything running.
    let rt2 = env.restarted();
    let sandboxes = rt2.list_sandboxes().await.expect("list sandboxes");
    let (uid, st) = sandboxes
        .iter()
        .find(|(_, s)| s.id == sandbox)
        .expect("sandbox listed after restart");
    assert_eq!(uid, &sb.pod_uid);
    assert_eq!(st.state, SandboxState::Ready);
    assert_eq!(st.ip.as_deref(), Some(ip.as_str()));
    let containers = rt2.list_containers(&sandbox).await.expect("list");
    let by_name: BTreeMap<_, _> = containers.iter().map(|c| (c.name.as_str(), c)).collect();
    assert_eq!(by_name["web"].state, ContainerState::Running);
    assert_eq!(by_name["sidecar"].state, ContainerState::Running);
    let page = exec_ok(
        &rt2,
        &web_id,
        &["wget", "-qO-", "http://localhost:8080/index.html"],
    )
    .await;
    assert_eq!(page.trim(), "hi from the pod");

    // The container's processes are ordinary host processes to ps/pgrep (tests and admins
    // find them by command line).
    let marker = format!("kumo-marker-{}", std::process::id());
    let mut marked = env.container(
        "web",
        "marked",
        &["sh", "-c", "while true; do sleep 1; done"],
    );
    marked.args = vec![marker.clone()];
    let marked_id = run(&rt2, &sandbox, &sb, &marked).await;
    let pgrep = std::process::Command::new("pgrep")
        .args(["-f", &marker])
        .output()
        .expect("pgrep");
    let pids = String::from_utf8_lossy(&pgrep.stdout);
    assert!(
        pids.lines()
            .any(|p| p.trim() == env.container_pid(&marked_id).to_string()),
        "pgrep -f {marker}: {pids:?}"
    );

    // Killing the container's process from outside: Exited with 128+9, reason Error, and the
    // log survives.
    let pid = env.container_pid(&web_id);
    nix_kill(pid, 9);
    let st = wait_exited(&rt2, &web_id).await;
    assert_eq!(st.exit_code, Some(137));
    assert_eq!(st.reason.as_deref(), Some("Error"));
    assert!(st.finished_at.is_some());
    assert!(!log_records(&web.log_path).is_empty());

    // Stop the sidecar: `sleep` as pid 1 ignores SIGTERM, so SIGKILL after the timeout.
    rt2.stop_container(&side_id, Duration::from_millis(500))
        .await
        .expect("stop");
    let st = rt2.container_status(&side_id).await.expect("status");
    assert_eq!(st.state, ContainerState::Exited);
    assert_eq!(st.exit_code, Some(137));

    // Tear down: sandbox NotReady after stop, everything gone after remove.
    rt2.stop_sandbox(&sandbox).await.expect("stop sandbox");
    assert_eq!(
        rt2.sandbox_status(&sandbox).await.expect("status").state,
        SandboxState::NotReady
    );
    rt2.remove_sandbox(&sandbox).await.expect("remove sandbox");
    assert!(rt2.sandbox_status(&sandbox).await.is_err());
    assert!(rt2.container_status(&web_id).await.is_err());
    assert!(
        !env.dir
            .path()
            .join("runtime/containers")
            .join(&web_id)
            .exists()
    );
    if rt.bridge_networking() {
        assert!(
            http_get(&addr).is_err(),
            "pod IP still answers after removal"
        );
    }
    rt2.remove_sandbox(&sandbox)
        .await
        .expect("remove is idempotent");
}

fn nix_kill(pid: i32, sig: i32) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_runtime_exit_codes_stop_oom_and_start_errors() {
    if skip_reason().is_some() {
        return;
    }
    let env = Env::new();
    let rt = &env.runtime;
    let sb = env.sandbox_config("jobs");
    let sandbox = rt.run_sandbox(&sb).await.expect("run sandbox");

    // Exit codes and reasons.
    let ok = run(rt, &sandbox, &sb, &env.container("jobs", "ok", &["true"])).await;
    let st = wait_exited(rt, &ok).await;
    assert_eq!(
        (st.exit_code, st.reason.as_deref()),
        (Some(0), Some("Completed"))
    );
    let fail = run(
        rt,
        &sandbox,
        &sb,
        &env.container("jobs", "fail", &["sh", "-c", "exit 3"]),
    )
    .await;
    let st = wait_exited(rt, &fail).await;
    assert_eq!(
        (st.exit_code, st.reason.as_deref()),
        (Some(3), Some("Error"))
    );

    // The image's Cmd runs when the pod gives no command (busybox image: `sh`, stdin is
    // /dev/null so it exits 0 at once).
    let default_cmd = run(rt, &sandbox, &sb, &env.container("jobs", "default", &[])).await;
    let st = wait_exited(rt, &default_cmd).await;
    assert_eq!(st.exit_code, Some(0));

    // SIGTERM reaches a command that handles it: graceful stop, its own exit code.
    let graceful = run(
        rt,
        &sandbox,
        &sb,
        &env.container(
            "jobs",
            "graceful",
            &[
                "sh",
                "-c",
                "trap 'echo got TERM; exit 42' TERM; while true; do sleep 0.1; done",
            ],
        ),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    rt.stop_container(&graceful, Duration::from_secs(30))
        .await
        .expect("stop");
    let st = rt.container_status(&graceful).await.expect("status");
    assert_eq!(st.exit_code, Some(42), "{st:?}");
    let recs = log_records(&env.container("jobs", "graceful", &[]).log_path);
    assert!(
        recs.contains(&("stdout".into(), "F".into(), "got TERM".into())),
        "{recs:?}"
    );

    // Memory limit 20Mi and a memory hog: OOMKilled, 137.
    let mut hog = env.container("jobs", "hog", &["sh", "-c", "tail /dev/zero"]);
    hog.resources = Resources {
        memory_limit_bytes: Some(20 * 1024 * 1024),
        ..Default::default()
    };
    let hog_id = run(rt, &sandbox, &sb, &hog).await;
    let st = wait_exited(rt, &hog_id).await;
    assert_eq!(st.exit_code, Some(137), "{st:?}");
    assert_eq!(st.reason.as_deref(), Some("OOMKilled"), "{st:?}");

    // Limits land in the container's cgroup (v1 or v2, whichever the host has).
    let mut limited = env.container("jobs", "limited", &["sleep", "inf"]);
    limited.resources = Resources {
        cpu_limit_millis: Some(250),
        cpu_request_millis: Some(100),
        memory_limit_bytes: Some(64 * 1024 * 1024),
    };
    let limited_id = run(rt, &sandbox, &sb, &limited).await;
    let pod_cg = format!("kumo/pod{}/{limited_id}", sb.pod_uid);
    let read = |p: String| std::fs::read_to_string(&p).map(|s| s.trim().to_string());
    if let Ok(max) = read(format!("/sys/fs/cgroup/{pod_cg}/memory.max")) {
        assert_eq!(max, (64 * 1024 * 1024).to_string());
        assert_eq!(
            read(format!("/sys/fs/cgroup/{pod_cg}/cpu.max")).expect("cpu.max"),
            "25000 100000"
        );
    } else {
        assert_eq!(
            read(format!(
                "/sys/fs/cgroup/memory/{pod_cg}/memory.limit_in_bytes"
            ))
            .expect("memory limit"),
            (64 * 1024 * 1024).to_string()
        );
        assert_eq!(
            read(format!("/sys/fs/cgroup/cpu/{pod_cg}/cpu.cfs_quota_us")).expect("quota"),
            "25000"
        );
        assert_eq!(
            read(format!("/sys/fs/cgroup/cpu/{pod_cg}/cpu.shares")).expect("shares"),
            "102"
        );
        // The container's process is in it.
        let procs = read(format!("/sys/fs/cgroup/memory/{pod_cg}/cgroup.procs")).expect("procs");
        assert!(
            procs
                .lines()
                .any(|p| p == env.container_pid(&limited_id).to_string()),
            "{procs}"
        );
    }
    rt.stop_container(&limited_id, Duration::ZERO)
        .await
        .expect("stop");

    // A container under a memory limit that stays below it runs normally.
    let mut small = env.container(
        "jobs",
        "small",
        &["sh", "-c", "head -c 1000000 /dev/zero | wc -c"],
    );
    small.resources.memory_limit_bytes = Some(64 * 1024 * 1024);
    let small_id = run(rt, &sandbox, &sb, &small).await;
    let st = wait_exited(rt, &small_id).await;
    assert_eq!(
        (st.exit_code, st.reason.as_deref()),
        (Some(0), Some("Completed"))
    );
    let recs = log_records(&small.log_path);
    assert!(
        recs.contains(&("stdout".into(), "F".into(), "1000000".into())),
        "{recs:?}"
    );

    // Start errors: a command that is not in the image.
    let missing = rt
        .create_container(
            &sandbox,
            &env.container("jobs", "missing", &["no-such-command"]),
            &sb,
        )
        .await
        .expect("create");
    let err = rt
        .start_container(&missing)
        .await
        .expect_err("start must fail");
    assert!(err.to_string().contains("no-such-command"), "{err}");
    let st = rt.container_status(&missing).await.expect("status");
    assert_eq!(st.state, ContainerState::Exited);
    assert_eq!(st.reason.as_deref(), Some("StartError"));

    // An unknown image is ImageNotFound.
    let mut unknown = env.container("jobs", "unknown", &["true"]);
    unknown.image = "example.com/nothing:1".into();
    assert!(matches!(
        rt.create_container(&sandbox, &unknown, &sb).await,
        Err(kumo_runtime::RuntimeError::ImageNotFound(_))
    ));

    // runAsUser: the command runs as nobody.
    let mut user = env.container("jobs", "user", &["id", "-u"]);
    user.run_as_user = Some(65534);
    let user_id = run(rt, &sandbox, &sb, &user).await;
    wait_exited(rt, &user_id).await;
    assert!(log_records(&user.log_path).contains(&("stdout".into(), "F".into(), "65534".into())));

    // Monitor and container both killed (as by a reboot or an OOM kill of the monitor): the
    // status is Unknown/255, and stays the same on every query.
    let lost = run(
        rt,
        &sandbox,
        &sb,
        &env.container("jobs", "lost", &["sleep", "inf"]),
    )
    .await;
    let monitor: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(env.state_file(&lost, "monitor.json")).expect("monitor.json"),
    )
    .expect("json");
    nix_kill(monitor["pid"].as_i64().expect("pid") as i32, 9);
    nix_kill(env.container_pid(&lost), 9);
    let first = wait_exited(rt, &lost).await;
    assert_eq!(
        (first.exit_code, first.reason.as_deref()),
        (Some(255), Some("Unknown"))
    );
    let again = rt.container_status(&lost).await.expect("status");
    assert_eq!(again.finished_at, first.finished_at);

    rt.remove_sandbox(&sandbox).await.expect("remove sandbox");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_runtime_host_network_pod() {
    if skip_reason().is_some() {
        return;
    }
    let env = Env::new();
    let rt = &env.runtime;
    let mut sb = env.sandbox_config("hostnet");
    sb.host_network = true;
    let sandbox = rt.run_sandbox(&sb).await.expect("run sandbox");
    let status = rt.sandbox_status(&sandbox).await.expect("status");
    assert!(
        !status
            .ip
            .as_deref()
            .unwrap_or("10.88.")
            .starts_with("10.88."),
        "hostNetwork pods have the host's address, got {:?}",
        status.ip
    );
    let port = kumo_tests::free_port();
    let c = env.container(
        "hostnet",
        "web",
        &[
            "sh",
            "-c",
            &format!("mkdir -p /www && echo host-net > /www/index.html && exec httpd -f -p 127.0.0.1:{port} -h /www"),
        ],
    );
    let id = run(rt, &sandbox, &sb, &c).await;
    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match http_get(&addr) {
            Ok(b) if b.contains("host-net") => break,
            other => {
                assert!(Instant::now() < deadline, "GET {addr}: {other:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert_eq!(
        rt.container_status(&id).await.expect("status").state,
        ContainerState::Running
    );
    rt.remove_sandbox(&sandbox).await.expect("remove");
    assert!(http_get(&addr).is_err(), "server still up after removal");
}

/// The fallback without namespaces (what a non-root kubelet gets): plain processes that still
/// have logs, env, exit codes, stop and exec. Runs as any user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_runtime_plain_process_fallback() {
    if !busybox_bin().exists() {
        assert!(
            !kumo_tests::running_under_ci(),
            "busybox-static missing under CI"
        );
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let tar = busybox_image_tar(dir.path(), IMAGE, &["sh"]).expect("image");
    let store = ImageStore::open(&dir.path().join("images")).expect("store");
    store.import(&tar).expect("import");
    let rt = ProcessRuntime::with_options(
        &dir.path().join("runtime"),
        store,
        ProcessRuntimeOptions {
            helper_binary: Some(kumo_tests::kumo_bin()),
            plain: true,
            host_ip: Some("192.0.2.10".into()),
            ..Default::default()
        },
    )
    .expect("runtime");
    assert!(!rt.isolated());
    let sb = SandboxConfig {
        pod_uid: "plain-uid".into(),
        name: "plain".into(),
        ..Default::default()
    };
    let sandbox = rt.run_sandbox(&sb).await.expect("sandbox");
    let st = rt.sandbox_status(&sandbox).await.expect("status");
    assert_eq!(st.state, SandboxState::Ready);
    assert_eq!(st.ip.as_deref(), Some("192.0.2.10"));

    let log = dir.path().join("logs/plain/0.log");
    let c = ContainerConfig {
        name: "main".into(),
        image: IMAGE.into(),
        command: vec![
            "sh".into(),
            "-c".into(),
            "echo hello $FOO; exec sleep 1000".into(),
        ],
        env: vec![("FOO".into(), "bar".into())],
        log_path: log.clone(),
        ..Default::default()
    };
    let id = run(&rt, &sandbox, &sb, &c).await;
    assert_eq!(
        rt.container_status(&id).await.expect("status").state,
        ContainerState::Running
    );
    let out = exec_ok(&rt, &id, &["sh", "-c", "echo exec $FOO"]).await;
    assert_eq!(out.trim(), "exec bar");
    // sleep is not a namespace init here: SIGTERM ends it (128+15).
    rt.stop_container(&id, Duration::from_secs(30))
        .await
        .expect("stop");
    let st = rt.container_status(&id).await.expect("status");
    assert_eq!(
        (st.exit_code, st.reason.as_deref()),
        (Some(143), Some("Error"))
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log_records(&log).contains(&("stdout".into(), "F".into(), "hello bar".into())) {
        assert!(Instant::now() < deadline, "{:?}", log_records(&log));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let c2 = ContainerConfig {
        name: "exit5".into(),
        image: IMAGE.into(),
        command: vec!["sh".into(), "-c".into(), "exit 5".into()],
        log_path: dir.path().join("logs/plain/exit5.log"),
        ..Default::default()
    };
    let id2 = run(&rt, &sandbox, &sb, &c2).await;
    assert_eq!(wait_exited(&rt, &id2).await.exit_code, Some(5));
    rt.remove_sandbox(&sandbox).await.expect("remove");
}

/// Deleting the runtime's state directory (`kumo delete`, a removed test directory) ends its
/// pods instead of leaking them: the pause and monitor processes notice and clean up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_runtime_deleted_state_dir_ends_pods() {
    if skip_reason().is_some() {
        return;
    }
    let env = Env::new();
    let rt = &env.runtime;
    let sb = env.sandbox_config("orphan");
    let sandbox = rt.run_sandbox(&sb).await.expect("run sandbox");
    let id = run(
        rt,
        &sandbox,
        &sb,
        &env.container("orphan", "c", &["sleep", "inf"]),
    )
    .await;
    let container_pid = env.container_pid(&id);
    let pause: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            env.dir
                .path()
                .join("runtime/sandboxes")
                .join(&sandbox)
                .join("pause.json"),
        )
        .expect("pause.json"),
    )
    .expect("json");
    let pause_pid = pause["pid"].as_i64().expect("pid");
    std::fs::remove_dir_all(env.dir.path().join("runtime")).expect("rm");
    let deadline = Instant::now() + Duration::from_secs(60);
    for pid in [i64::from(container_pid), pause_pid] {
        while Path::new(&format!("/proc/{pid}/stat")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z ")
        {
            assert!(Instant::now() < deadline, "pid {pid} still running");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Where overlayfs cannot be used (the runtime root on overlayfs itself, as in many CI
/// containers), containers get a private copy of the image instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_runtime_copied_rootfs() {
    if skip_reason().is_some() {
        return;
    }
    let env = Env::new();
    let store = ImageStore::open(&env.dir.path().join("images")).expect("store");
    let rt = ProcessRuntime::with_options(
        &env.dir.path().join("runtime"),
        store.clone(),
        ProcessRuntimeOptions {
            helper_binary: Some(kumo_tests::kumo_bin()),
            copy_rootfs: true,
            ..Default::default()
        },
    )
    .expect("runtime");
    let sb = env.sandbox_config("copy");
    let sandbox = rt.run_sandbox(&sb).await.expect("sandbox");
    let c = env.container(
        "copy",
        "c",
        &["sh", "-c", "echo changed > /bin/busybox-note && head -1 /etc/passwd && cat /proc/self/mountinfo | head -1"],
    );
    let id = run(&rt, &sandbox, &sb, &c).await;
    let st = wait_exited(&rt, &id).await;
    assert_eq!(st.exit_code, Some(0), "{st:?}");
    let recs = log_records(&c.log_path);
    assert!(
        recs.contains(&(
            "stdout".into(),
            "F".into(),
            "root:x:0:0:root:/root:/bin/sh".into()
        )),
        "{recs:?}"
    );
    assert!(
        !recs.iter().any(|(_, _, l)| l.contains(" overlay ")),
        "the root is not an overlay: {recs:?}"
    );
    let image = store.resolve(IMAGE).expect("image");
    assert!(!store.rootfs(&image.id).join("bin/busybox-note").exists());
    rt.remove_sandbox(&sandbox).await.expect("remove");
}
