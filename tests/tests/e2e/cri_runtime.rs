//! The `cri` runtime (kumo-cri) driven through the kubelet's runtime trait against a real
//! containerd 1.6 + runc + CNI bridge (tests/src/containerd.rs): a busybox httpd pod reachable
//! from the host, exec, CRI-format logs, env/args/mounts, stop with a grace period, removal,
//! OOMKilled under a memory limit, hostNetwork, and adoption after a reconnect and a
//! containerd restart.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use kumo_cri::CriRuntime;
use kumo_runtime::{
    ContainerConfig, ContainerState, ExecRequest, Mount, Resources, Runtime, RuntimeError,
    SandboxConfig, SandboxState, StreamTarget,
};
use kumo_tests::containerd::{BUSYBOX_IMAGE, Containerd};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Upper bound for the runtime to reach a state; a wait bound, not a timing assertion.
const WAIT: Duration = Duration::from_secs(60);

fn sandbox(dir: &Path, name: &str, uid: &str) -> SandboxConfig {
    SandboxConfig {
        pod_uid: uid.to_string(),
        namespace: "default".to_string(),
        name: name.to_string(),
        hostname: name.to_string(),
        host_network: false,
        log_directory: dir.join(format!("pods/default_{name}_{uid}")),
        labels: BTreeMap::from([("app".to_string(), name.to_string())]),
        ..Default::default()
    }
}

fn container(sb: &SandboxConfig, name: &str, command: &[&str], args: &[&str]) -> ContainerConfig {
    ContainerConfig {
        name: name.to_string(),
        attempt: 0,
        image: BUSYBOX_IMAGE.to_string(),
        command: command.iter().map(|s| s.to_string()).collect(),
        args: args.iter().map(|s| s.to_string()).collect(),
        log_path: sb.log_directory.join(format!("{name}/0.log")),
        ..Default::default()
    }
}

async fn exec_out(cri: &CriRuntime, id: &str, cmd: &[&str]) -> (i32, String, String) {
    let cmd: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
    let out = cri
        .exec_sync(id, &cmd, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("exec_sync {cmd:?}: {e}"));
    (
        out.exit_code,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn wait_state(
    cri: &CriRuntime,
    id: &str,
    want: ContainerState,
) -> kumo_runtime::ContainerStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = cri.container_status(id).await.expect("container_status");
        if s.state == want {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "container {id} never reached {want:?}: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `GET /` over plain TCP from the host to the pod IP, retried until httpd listens.
async fn http_get(ip: &str, port: u16) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        match tokio::net::TcpStream::connect((ip, port)).await {
            Ok(mut s) => {
                s.write_all(b"GET / HTTP/1.0\r\nHost: pod\r\n\r\n")
                    .await
                    .expect("write request");
                let mut body = String::new();
                s.read_to_string(&mut body).await.expect("read response");
                return body;
            }
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "pod {ip}:{port} never reachable from the host: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A CRI log line: `<RFC3339Nano> <stdout|stderr> <F|P> <text>`.
fn cri_log_lines(path: &Path) -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read log {}: {e}", path.display()));
    text.lines()
        .map(|l| {
            let mut parts = l.splitn(4, ' ');
            let ts = parts.next().unwrap_or_default();
            let stream = parts.next().unwrap_or_default().to_string();
            let tag = parts.next().unwrap_or_default().to_string();
            let msg = parts.next().unwrap_or_default().to_string();
            assert!(
                ts.parse::<jiff::Timestamp>().is_ok(),
                "log line without an RFC 3339 timestamp: {l:?}"
            );
            assert!(matches!(stream.as_str(), "stdout" | "stderr"), "{l:?}");
            assert!(matches!(tag.as_str(), "F" | "P"), "{l:?}");
            (stream, tag, msg)
        })
        .collect()
}

async fn wait_log_contains(path: &Path, needle: &str) -> Vec<(String, String, String)> {
    let deadline = Instant::now() + WAIT;
    loop {
        if path.exists() {
            let lines = cri_log_lines(path);
            if lines.iter().any(|(_, _, m)| m.contains(needle)) {
                return lines;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} never contained {needle:?}: {:?}",
            path.display(),
            std::fs::read_to_string(path).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs an exec streaming URL over WebSocket with the `v4.channel.k8s.io` subprotocol:
/// returns stdout (channel 1), stderr (channel 2) and the status object (channel 3).
async fn websocket_exec(url: &str) -> (String, String, serde_json::Value) {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

    let ws_url = url.replacen("http://", "ws://", 1);
    let mut request = ws_url.as_str().into_client_request().expect("ws request");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        http::HeaderValue::from_static("v4.channel.k8s.io"),
    );
    let authority = ws_url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let tcp = tokio::net::TcpStream::connect(&authority)
        .await
        .expect("connect to the streaming server");
    let (mut ws, resp) = tokio_tungstenite::client_async(request, tcp)
        .await
        .expect("websocket handshake with containerd's streaming server");
    assert_eq!(
        resp.headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok()),
        Some("v4.channel.k8s.io")
    );
    let (mut out, mut err, mut status) = (Vec::new(), Vec::new(), Vec::new());
    while let Some(msg) = ws.next().await {
        let data = match msg {
            Ok(Message::Binary(b)) => b.to_vec(),
            Ok(Message::Close(_)) => break,
            Ok(_) => continue,
            // The server may drop the TCP connection right after the status frame.
            Err(_) => break,
        };
        let Some((&channel, payload)) = data.split_first() else {
            continue;
        };
        match channel {
            1 => out.extend_from_slice(payload),
            2 => err.extend_from_slice(payload),
            3 => status.extend_from_slice(payload),
            _ => {}
        }
    }
    let status = serde_json::from_slice(&status).unwrap_or_else(|e| {
        panic!(
            "status channel is not JSON ({e}): {:?}",
            String::from_utf8_lossy(&status)
        )
    });
    (
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
        status,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_runtime_httpd_pod_lifecycle() {
    if !Containerd::require("cri_runtime_httpd_pod_lifecycle") {
        return;
    }
    let mut ctd = Containerd::start().await.expect("start containerd");
    let work = tempfile::tempdir().expect("tempdir");
    let cri = CriRuntime::connect(&ctd.endpoint())
        .await
        .expect("connect to containerd");

    let v = cri.version().await.expect("version");
    assert_eq!(v.name, "containerd");
    assert!(v.version.starts_with("1."), "{v:?}");
    let status = cri.status().await.expect("status");
    assert!(status.runtime_ready && status.network_ready, "{status:?}");

    // Images: present ones resolve with their config; absent ones are ImageNotFound.
    let img = cri
        .ensure_image(BUSYBOX_IMAGE)
        .await
        .expect("ensure busybox");
    assert!(img.id.starts_with("sha256:"), "{img:?}");
    assert!(
        img.names
            .iter()
            .any(|n| n == "docker.io/library/busybox:latest"),
        "{img:?}"
    );
    assert_eq!(img.cmd, vec!["sh"]);
    match cri.ensure_image("kumo.invalid/missing:1").await {
        Err(RuntimeError::ImageNotFound(msg)) => {
            assert!(msg.contains("kumo.invalid/missing:1"), "{msg}")
        }
        other => panic!("missing image: {other:?}"),
    }
    let images = cri.list_images().await.expect("list_images");
    assert!(images.iter().any(|i| i.id == img.id), "{images:?}");

    // The pod sandbox gets an address on this containerd's bridge.
    let sb = sandbox(work.path(), "web", "uid-web-1");
    let sandbox_id = cri.run_sandbox(&sb).await.expect("run_sandbox");
    let sst = cri
        .sandbox_status(&sandbox_id)
        .await
        .expect("sandbox_status");
    assert_eq!(sst.state, SandboxState::Ready);
    let pod_ip = sst.ip.clone().expect("pod IP");
    let prefix = ctd.subnet().trim_end_matches("0/24").to_string();
    assert!(
        pod_ip.starts_with(&prefix),
        "{pod_ip} not in {}",
        ctd.subnet()
    );

    // httpd serving a mounted directory, with env and args through `sh -c`.
    let www = work.path().join("www");
    std::fs::create_dir_all(&www).expect("mkdir www");
    std::fs::write(www.join("index.html"), "hello from kumo cri\n").expect("write index");
    let mut web = container(
        &sb,
        "httpd",
        &["sh", "-c"],
        &["echo started $GREETING; exec httpd -f -v -p 8080 -h /www"],
    );
    web.env = vec![("GREETING".to_string(), "hello-env".to_string())];
    web.mounts = vec![Mount {
        host_path: www.clone(),
        container_path: "/www".to_string(),
        read_only: true,
    }];
    web.resources = Resources {
        cpu_limit_millis: Some(500),
        cpu_request_millis: Some(100),
        memory_limit_bytes: Some(64 << 20),
    };
    let web_id = cri
        .create_container(&sandbox_id, &web, &sb)
        .await
        .expect("create httpd");
    let created = cri.container_status(&web_id).await.expect("status");
    assert_eq!(created.state, ContainerState::Created);
    cri.start_container(&web_id).await.expect("start httpd");
    let running = wait_state(&cri, &web_id, ContainerState::Running).await;
    assert!(
        running.started_at.is_some() && running.created_at.is_some(),
        "{running:?}"
    );
    assert_eq!(running.name, "httpd");
    assert_eq!(running.image_id, img.id.clone());
    assert_eq!(running.log_path, web.log_path);

    // Reachable from the host at the pod IP, and from inside with exec.
    let resp = http_get(&pod_ip, 8080).await;
    assert!(
        resp.starts_with("HTTP/1.") && resp.contains("hello from kumo cri"),
        "{resp}"
    );
    let (code, out, err) =
        exec_out(&cri, &web_id, &["wget", "-qO-", "http://localhost:8080/"]).await;
    assert_eq!(
        (code, out.as_str()),
        (0, "hello from kumo cri\n"),
        "stderr: {err}"
    );
    let (code, out, _) = exec_out(&cri, &web_id, &["sh", "-c", "echo $GREETING"]).await;
    assert_eq!((code, out.as_str()), (0, "hello-env\n"));
    let (_, cmdline, _) = exec_out(&cri, &web_id, &["cat", "/proc/1/cmdline"]).await;
    assert!(cmdline.contains("httpd\0-f\0-v\0-p\08080"), "{cmdline:?}");
    let (code, _, err) = exec_out(&cri, &web_id, &["sh", "-c", "echo x > /www/new"]).await;
    assert_ne!(code, 0, "read-only mount was writable");
    assert!(err.contains("Read-only"), "{err}");
    let (code, _, _) = exec_out(&cri, &web_id, &["sh", "-c", "exit 3"]).await;
    assert_eq!(code, 3);
    // An exec probe that outlives its timeout is an error, not a hang.
    let slow = cri
        .exec_sync(
            &web_id,
            &["sleep".to_string(), "30".to_string()],
            Duration::from_secs(1),
        )
        .await;
    assert!(slow.is_err(), "exec past its timeout: {slow:?}");
    let (_, hostname, _) = exec_out(&cri, &web_id, &["hostname"]).await;
    assert_eq!(hostname.trim(), "web");
    // The cgroup limits reached the container (v1 or v2 file names).
    let (_, mem, _) = exec_out(
        &cri,
        &web_id,
        &["sh", "-c", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max"],
    )
    .await;
    assert_eq!(mem.trim(), (64u64 << 20).to_string());

    // Output lands in the CRI log file the kubelet will serve.
    let lines = wait_log_contains(&web.log_path, "started hello-env").await;
    assert!(
        lines
            .iter()
            .any(|(s, t, m)| s == "stdout" && t == "F" && m == "started hello-env"),
        "{lines:?}"
    );

    // Interactive exec is a streaming URL on containerd's streaming server, the target the
    // kubelet proxies `kubectl exec` to; drive it like a client would (channel.k8s.io v4).
    let target = cri
        .exec(
            &web_id,
            &ExecRequest {
                cmd: vec![
                    "sh".into(),
                    "-c".into(),
                    "echo exec-out; echo exec-err >&2; exit 7".into(),
                ],
                stdin: false,
                stdout: true,
                stderr: true,
                tty: false,
            },
        )
        .await
        .expect("exec");
    let StreamTarget::Url(url) = target else {
        panic!("cri exec must be a streaming URL");
    };
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let (stdout, stderr, status) = websocket_exec(&url).await;
    assert_eq!(stdout, "exec-out\n");
    assert_eq!(stderr, "exec-err\n");
    assert_eq!(
        status["details"]["causes"][0]["message"], "7",
        "exit status on the error channel: {status}"
    );

    // attach and port-forward are streaming URLs too.
    let attach = cri
        .attach(
            &web_id,
            &ExecRequest {
                stdout: true,
                stderr: true,
                ..Default::default()
            },
        )
        .await
        .expect("attach");
    assert!(attach.starts_with("http://127.0.0.1:"), "{attach}");
    let forward = cri
        .port_forward(&sandbox_id, &[8080])
        .await
        .expect("port_forward");
    assert!(forward.starts_with("http://127.0.0.1:"), "{forward}");

    let stats = cri.container_stats(&web_id).await.expect("stats");
    assert!(
        stats.memory_working_set_bytes.is_some_and(|b| b > 0),
        "{stats:?}"
    );
    assert!(stats.cpu_usage_nanos.is_some(), "{stats:?}");

    // A container that handles SIGTERM exits by itself within the grace period.
    let graceful = container(
        &sb,
        "graceful",
        &["sh", "-c"],
        &["trap 'echo got TERM; exit 0' TERM; echo waiting; while true; do sleep 1; done"],
    );
    let graceful_id = cri
        .create_container(&sandbox_id, &graceful, &sb)
        .await
        .expect("create graceful");
    cri.start_container(&graceful_id)
        .await
        .expect("start graceful");
    wait_log_contains(&graceful.log_path, "waiting").await;

    let listed = cri
        .list_containers(&sandbox_id)
        .await
        .expect("list_containers");
    let mut names: Vec<&str> = listed.iter().map(|c| c.name.as_str()).collect();
    names.sort();
    assert_eq!(names, vec!["graceful", "httpd"]);

    // containerd restarts under a connected client: the same client carries on (the kubelet
    // keeps one for its lifetime), and a new client adopts the pod as it was.
    ctd.restart().await.expect("restart containerd");
    let v = cri
        .version()
        .await
        .expect("the old client after a containerd restart");
    assert_eq!(v.name, "containerd");
    drop(cri);
    let cri = CriRuntime::connect(&ctd.endpoint())
        .await
        .expect("reconnect");
    let sandboxes = cri.list_sandboxes().await.expect("list_sandboxes");
    let (uid, adopted) = sandboxes
        .iter()
        .find(|(_, s)| s.id == sandbox_id)
        .unwrap_or_else(|| panic!("sandbox lost after restart: {sandboxes:?}"));
    assert_eq!(uid, "uid-web-1");
    assert_eq!(adopted.state, SandboxState::Ready);
    assert_eq!(adopted.ip.as_deref(), Some(pod_ip.as_str()));
    let after = cri
        .container_status(&web_id)
        .await
        .expect("status after restart");
    assert_eq!(after.state, ContainerState::Running);
    assert_eq!(after.started_at, running.started_at);
    let resp = http_get(&pod_ip, 8080).await;
    assert!(resp.contains("hello from kumo cri"), "{resp}");

    // Stop with a grace period: the trap runs and the exit is clean.
    cri.stop_container(&graceful_id, Duration::from_secs(20))
        .await
        .expect("stop graceful");
    let stopped = cri.container_status(&graceful_id).await.expect("status");
    assert_eq!(stopped.state, ContainerState::Exited);
    assert_eq!(stopped.exit_code, Some(0), "{stopped:?}");
    assert_eq!(stopped.reason.as_deref(), Some("Completed"), "{stopped:?}");
    assert!(stopped.finished_at >= stopped.started_at, "{stopped:?}");
    wait_log_contains(&graceful.log_path, "got TERM").await;
    // Idempotent: stopping again is fine.
    cri.stop_container(&graceful_id, Duration::from_secs(1))
        .await
        .expect("stop again");

    // httpd, as PID 1 without a TERM handler, ignores SIGTERM: the runtime kills it after 1 s.
    cri.stop_container(&web_id, Duration::from_secs(1))
        .await
        .expect("stop httpd");
    let killed = cri.container_status(&web_id).await.expect("status");
    assert_eq!(killed.state, ContainerState::Exited);
    assert_eq!(killed.exit_code, Some(137), "{killed:?}");
    assert_eq!(killed.reason.as_deref(), Some("Error"), "{killed:?}");

    // Remove: gone, and removing again is fine.
    for id in [&web_id, &graceful_id] {
        cri.remove_container(id).await.expect("remove");
        assert!(
            matches!(
                cri.container_status(id).await,
                Err(RuntimeError::NotFound(_))
            ),
            "container {id} still there"
        );
        cri.remove_container(id).await.expect("remove again");
    }
    assert!(
        cri.list_containers(&sandbox_id)
            .await
            .expect("list")
            .is_empty()
    );

    cri.stop_sandbox(&sandbox_id).await.expect("stop sandbox");
    let sst = cri
        .sandbox_status(&sandbox_id)
        .await
        .expect("sandbox status");
    assert_eq!(sst.state, SandboxState::NotReady);
    cri.remove_sandbox(&sandbox_id)
        .await
        .expect("remove sandbox");
    assert!(matches!(
        cri.sandbox_status(&sandbox_id).await,
        Err(RuntimeError::NotFound(_))
    ));
    cri.stop_sandbox(&sandbox_id)
        .await
        .expect("stop removed sandbox");
    cri.remove_sandbox(&sandbox_id).await.expect("remove again");
    let sandboxes = cri.list_sandboxes().await.expect("list_sandboxes");
    assert!(
        sandboxes.iter().all(|(_, s)| s.id != sandbox_id),
        "{sandboxes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_runtime_oom_killed_and_host_network() {
    if !Containerd::require("cri_runtime_oom_killed_and_host_network") {
        return;
    }
    let ctd = Containerd::start().await.expect("start containerd");
    let work = tempfile::tempdir().expect("tempdir");
    let cri = CriRuntime::connect(&ctd.endpoint())
        .await
        .expect("connect to containerd");

    // `tail /dev/zero` buffers an endless line: a 20 MiB limit ends it with the OOM killer.
    let sb = sandbox(work.path(), "hog", "uid-hog-1");
    let sandbox_id = cri.run_sandbox(&sb).await.expect("run_sandbox");
    let mut hog = container(&sb, "hog", &["tail", "/dev/zero"], &[]);
    hog.resources.memory_limit_bytes = Some(20 << 20);
    let hog_id = cri
        .create_container(&sandbox_id, &hog, &sb)
        .await
        .expect("create hog");
    cri.start_container(&hog_id).await.expect("start hog");
    let dead = wait_state(&cri, &hog_id, ContainerState::Exited).await;
    assert!(
        kumo_tests::containerd::oom_killed(
            dead.reason.as_deref().unwrap_or(""),
            i64::from(dead.exit_code.unwrap_or(0))
        ),
        "{dead:?}"
    );
    cri.remove_container(&hog_id).await.expect("remove hog");
    cri.stop_sandbox(&sandbox_id).await.expect("stop sandbox");
    cri.remove_sandbox(&sandbox_id)
        .await
        .expect("remove sandbox");

    // hostNetwork: the pod shares the node's interfaces (it sees this containerd's bridge)
    // and reports the node's address.
    let mut hsb = sandbox(work.path(), "hostnet", "uid-hostnet-1");
    hsb.host_network = true;
    let hsandbox_id = cri
        .run_sandbox(&hsb)
        .await
        .expect("run host-network sandbox");
    let hst = cri
        .sandbox_status(&hsandbox_id)
        .await
        .expect("sandbox status");
    assert_eq!(hst.state, SandboxState::Ready);
    let node_ip = hst.ip.clone().expect("host-network pod IP");
    assert!(!node_ip.starts_with("10.89."), "{node_ip}");
    let sh = container(&hsb, "sh", &["sleep", "3600"], &[]);
    let sh_id = cri
        .create_container(&hsandbox_id, &sh, &hsb)
        .await
        .expect("create");
    cri.start_container(&sh_id).await.expect("start");
    wait_state(&cri, &sh_id, ContainerState::Running).await;
    let (code, links, _) = exec_out(&cri, &sh_id, &["cat", "/proc/net/dev"]).await;
    assert_eq!(code, 0);
    assert!(
        links.contains(&ctd.bridge()),
        "host interfaces not visible: {links}"
    );
    // A privileged container gets every capability; an ordinary one the default set.
    let mut privileged = container(&hsb, "privileged", &["sleep", "3600"], &[]);
    privileged.privileged = true;
    let priv_id = cri
        .create_container(&hsandbox_id, &privileged, &hsb)
        .await
        .expect("create privileged");
    cri.start_container(&priv_id)
        .await
        .expect("start privileged");
    wait_state(&cri, &priv_id, ContainerState::Running).await;
    let cap_eff = |status: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or_else(|| panic!("no CapEff in {status}"))
    };
    let (_, ps, _) = exec_out(&cri, &priv_id, &["cat", "/proc/1/status"]).await;
    let (_, ss, _) = exec_out(&cri, &sh_id, &["cat", "/proc/1/status"]).await;
    let (privileged_caps, default_caps) = (cap_eff(&ps), cap_eff(&ss));
    assert!(
        privileged_caps.count_ones() > default_caps.count_ones(),
        "privileged {privileged_caps:x} vs default {default_caps:x}"
    );
    // CAP_SYS_ADMIN (21) only when privileged.
    assert!(privileged_caps & (1 << 21) != 0 && default_caps & (1 << 21) == 0);
    cri.stop_container(&priv_id, Duration::from_secs(0))
        .await
        .expect("stop");
    cri.stop_container(&sh_id, Duration::from_secs(0))
        .await
        .expect("stop");
    cri.remove_container(&sh_id).await.expect("remove");
    cri.stop_sandbox(&hsandbox_id).await.expect("stop sandbox");
    cri.remove_sandbox(&hsandbox_id)
        .await
        .expect("remove sandbox");
}

/// kubectl 1.33 against the `kumo up` cluster in `data`: (success, stdout+stderr).
fn kubectl(data: &Path, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(kumo_tests::kubectl_bin("1.33"))
        .arg("--kubeconfig")
        .arg(data.join("kubeconfig"))
        .args(args)
        .output()
        .expect("run kubectl");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn kubectl_ok(data: &Path, args: &[&str]) -> String {
    let (ok, out) = kubectl(data, args);
    assert!(ok, "kubectl {args:?} failed: {out}");
    out
}

/// Polls a kubectl jsonpath until `pred` holds on its output; panics with the last output and
/// the kubelet's log tail.
fn wait_jsonpath(data: &Path, what: &[&str], path: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    let jp = format!("jsonpath={path}");
    let mut args: Vec<&str> = vec!["get"];
    args.extend_from_slice(what);
    args.extend(["-o", jp.as_str()]);
    loop {
        let (ok, out) = kubectl(data, &args);
        if ok && pred(&out) {
            return out;
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(data.join("logs/kubelet-1.log")).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            panic!(
                "{what:?} {path}: condition not reached; last: {out}\nkubelet log tail:\n{}",
                lines[lines.len().saturating_sub(30)..].join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Issue 5 acceptance 3: `kumo up --runtime cri` on containerd + runc, then real kubectl: a
/// busybox httpd Deployment Running and Ready, `kubectl logs`, `kubectl exec` (the kubelet
/// proxies to containerd's streaming server), a killed container restarted, a memory limit
/// ending in `OOMKilled`, and `kumo down` leaving no component behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_runtime_kumo_up_deployment() {
    if !Containerd::require("cri_runtime_kumo_up_deployment") {
        return;
    }
    let ctd = Containerd::start().await.expect("start containerd");
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("kumo");
    let down = kumo_tests::KumoDown(data.clone());
    let port = |p: u16| p.to_string();
    let out = std::process::Command::new(kumo_tests::kumo_bin())
        .arg("up")
        .arg("--detach")
        .arg("--data-dir")
        .arg(&data)
        .args(["--members", "0", "--nodes", "1", "--runtime", "cri"])
        .args(["--container-runtime-endpoint", &ctd.endpoint()])
        .args(["--store-port", &port(kumo_tests::free_port())])
        .args(["--store-metrics-port", &port(kumo_tests::free_port())])
        .args(["--apiserver-port", &port(kumo_tests::free_port())])
        .args(["--kubelet-port", &port(kumo_tests::free_port())])
        .output()
        .expect("run kumo up");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("kumo is up"),
        "{text}"
    );

    let runtime = wait_jsonpath(
        &data,
        &["nodes"],
        "{.items[0].status.nodeInfo.containerRuntimeVersion}",
        |v| !v.is_empty(),
    );
    assert!(runtime.starts_with("containerd://1."), "{runtime}");

    let manifest = serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "terminationGracePeriodSeconds": 2,
                    "containers": [{
                        "name": "httpd",
                        "image": BUSYBOX_IMAGE,
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["sh", "-c",
                            "echo serving; mkdir -p /www; echo hello from a cri pod > /www/index.html; exec httpd -f -p 8080 -h /www"],
                        "ports": [{"containerPort": 8080}],
                        "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
                        "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}},
                    }],
                },
            },
        },
    });
    let path = tmp.path().join("web.json");
    std::fs::write(&path, manifest.to_string()).expect("write manifest");
    kubectl_ok(&data, &["apply", "-f", &path.display().to_string()]);
    kubectl_ok(
        &data,
        &[
            "wait",
            "--for=condition=Available",
            "deployment/web",
            "--timeout=120s",
        ],
    );
    let pod = kubectl_ok(
        &data,
        &[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ],
    );
    let pod = pod.trim().to_string();
    let ip = wait_jsonpath(&data, &["pod", &pod], "{.status.podIP}", |v| !v.is_empty());
    let prefix = ctd.subnet().trim_end_matches("0/24").to_string();
    assert!(
        ip.starts_with(&prefix),
        "pod IP {ip} not on containerd's bridge {}",
        ctd.subnet()
    );
    let container_id = wait_jsonpath(
        &data,
        &["pod", &pod],
        "{.status.containerStatuses[0].containerID}",
        |v| v.starts_with("containerd://"),
    );
    let image_id = kubectl_ok(
        &data,
        &[
            "get",
            "pod",
            &pod,
            "-o",
            "jsonpath={.status.containerStatuses[0].imageID}",
        ],
    );
    assert!(!image_id.is_empty(), "no imageID");

    // Served to the host at the pod IP, logs and exec through the kubelet.
    let resp = http_get(&ip, 8080).await;
    assert!(resp.contains("hello from a cri pod"), "{resp}");
    let logs = kubectl_ok(&data, &["logs", &pod]);
    assert_eq!(logs.trim(), "serving");
    let got = kubectl_ok(
        &data,
        &["exec", &pod, "--", "wget", "-qO-", "http://localhost:8080/"],
    );
    assert_eq!(got.trim(), "hello from a cri pod");
    let (ok, out) = kubectl(
        &data,
        &["exec", &pod, "--", "sh", "-c", "echo to-stderr >&2; exit 3"],
    );
    assert!(
        !ok && out.contains("to-stderr") && out.contains("exit code 3"),
        "{out}"
    );

    // Killing the container's process from the host: the kubelet restarts it.
    let pid = ctd.container_pid(&container_id).expect("container pid");
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    wait_jsonpath(
        &data,
        &["pod", &pod],
        "{.status.containerStatuses[0].restartCount}",
        |v| v.trim().parse::<u32>().is_ok_and(|n| n >= 1),
    );
    let last = wait_jsonpath(
        &data,
        &["pod", &pod],
        "{.status.containerStatuses[0].lastState.terminated.exitCode}",
        |v| !v.is_empty(),
    );
    assert_eq!(last, "137");
    // The first attempt's log stays readable as --previous.
    let previous = kubectl_ok(&data, &["logs", "--previous", &pod]);
    assert_eq!(previous.trim(), "serving");
    kubectl_ok(
        &data,
        &[
            "wait",
            "--for=condition=Ready",
            &format!("pod/{pod}"),
            "--timeout=120s",
        ],
    );
    let got = kubectl_ok(
        &data,
        &["exec", &pod, "--", "wget", "-qO-", "http://localhost:8080/"],
    );
    assert_eq!(got.trim(), "hello from a cri pod");

    // A failing exec liveness probe (run through CRI ExecSync) restarts the container.
    let live = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "live", "namespace": "default"},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "live",
                "image": BUSYBOX_IMAGE,
                "command": ["sh", "-c", "touch /tmp/healthy; exec sleep 3600"],
                "livenessProbe": {
                    "exec": {"command": ["test", "-f", "/tmp/healthy"]},
                    "periodSeconds": 1,
                    "failureThreshold": 1,
                },
            }],
        },
    });
    let path = tmp.path().join("live.json");
    std::fs::write(&path, live.to_string()).expect("write manifest");
    kubectl_ok(&data, &["apply", "-f", &path.display().to_string()]);
    kubectl_ok(
        &data,
        &[
            "wait",
            "--for=condition=Ready",
            "pod/live",
            "--timeout=120s",
        ],
    );
    kubectl_ok(&data, &["exec", "live", "--", "rm", "/tmp/healthy"]);
    wait_jsonpath(
        &data,
        &["pod", "live"],
        "{.status.containerStatuses[0].restartCount}",
        |v| v.trim().parse::<u32>().is_ok_and(|n| n >= 1),
    );

    // A memory limit is enforced: the hog ends OOMKilled.
    let hog = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "hog", "namespace": "default"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "hog",
                "image": BUSYBOX_IMAGE,
                "command": ["tail", "/dev/zero"],
                "resources": {"limits": {"memory": "20Mi"}},
            }],
        },
    });
    let path = tmp.path().join("hog.json");
    std::fs::write(&path, hog.to_string()).expect("write manifest");
    kubectl_ok(&data, &["apply", "-f", &path.display().to_string()]);
    let reason = wait_jsonpath(
        &data,
        &["pod", "hog"],
        "{.status.containerStatuses[0].state.terminated.reason}",
        |v| !v.is_empty(),
    );
    let code = wait_jsonpath(
        &data,
        &["pod", "hog"],
        "{.status.containerStatuses[0].state.terminated.exitCode}",
        |v| !v.is_empty(),
    );
    assert!(
        kumo_tests::containerd::oom_killed(&reason, code.trim().parse().unwrap_or(0)),
        "{reason} {code}"
    );
    wait_jsonpath(&data, &["pod", "hog"], "{.status.phase}", |v| v == "Failed");

    // Deleting the Deployment removes its pod's containers from containerd.
    kubectl_ok(&data, &["delete", "deployment", "web", "--wait=true"]);
    kubectl_ok(
        &data,
        &[
            "wait",
            "--for=delete",
            &format!("pod/{pod}"),
            "--timeout=120s",
        ],
    );
    let cri = CriRuntime::connect(&ctd.endpoint()).await.expect("connect");
    let deadline = Instant::now() + WAIT;
    loop {
        let sandboxes = cri.list_sandboxes().await.expect("list_sandboxes");
        let web_left = sandboxes
            .iter()
            .any(|(_, s)| s.state == SandboxState::Ready && s.ip.as_deref() == Some(ip.as_str()));
        if !web_left {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the deleted pod's sandbox is still ready: {sandboxes:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // `kumo down` leaves no component running.
    drop(down);
    let data_arg = data.display().to_string();
    let left: Vec<String> = std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| {
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            cmd.contains(&data_arg).then_some(cmd)
        })
        .collect();
    assert!(left.is_empty(), "processes left after kumo down: {left:?}");
}
