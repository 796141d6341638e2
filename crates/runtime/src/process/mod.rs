//! `process`: containers as Linux processes, without containerd or runc.
//!
//! - A pod sandbox is a tiny long-lived `kumo runtime-init pause` process holding the pod's
//!   network, UTS and IPC namespaces (hostNetwork pods keep the host's network and UTS). Unless
//!   `ip` (iproute2) is missing, the sandbox gets an `eth0` on the `kumo0` bridge with an address
//!   from `10.88.0.0/16`, reachable from the host (probes) and from other pods.
//! - A container is the user's command as pid 1 of a new pid namespace, with its own mount
//!   namespace (overlayfs of the image's unpacked root filesystem + a per-container upper dir),
//!   joined to the pod's namespaces, inside a cgroup with its memory/CPU limits. A per-container
//!   `kumo runtime-init monitor` process owns it: it writes the CRI log file and records the
//!   exit (code, signal, OOM kill). Monitors and pause processes run in their own process groups
//!   and are not tied to the kubelet, so a kubelet restart leaves pods running; all state is on
//!   disk under the root directory (see [`state`]) and a new `ProcessRuntime` on the same root
//!   picks it up.
//! - Without root, or where namespaces cannot be created, it degrades to plain processes (still
//!   with logs, exit codes, stop and exec; no isolation, no limits, the host's network) and says
//!   so in a warning.
//!
//! The helpers are the `kumo` binary re-executed; its `main` must call
//! [`run_if_requested`] before anything else.

pub mod cgroup;
mod init;
pub mod logs;
mod net;
pub mod state;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

pub use init::{SUBCOMMAND, run_if_requested};
pub use net::BRIDGE;

use self::cgroup::Cgroups;
use self::net::Network;
use self::state::{
    ContainerRecord, ExitRecord, MountRecord, NetMode, ProcState, SandboxRecord, read_json_opt,
    write_json,
};
use crate::image::{ImageStore, StoredImage};
use crate::{
    ContainerConfig, ContainerState, ContainerStats, ContainerStatus, ExecOutput, ExecRequest,
    ExecSession, ImageInfo, Resources, Result, Runtime, RuntimeError, RuntimeVersion,
    SandboxConfig, SandboxState, SandboxStatus, StreamTarget,
};

/// Exit code reported for a container whose process vanished without a recorded exit (the
/// monitor was killed, or the node rebooted), as containerd does (`unknownExitCode`).
pub const UNKNOWN_EXIT_CODE: i32 = 255;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Turns transparent huge pages off for this process and everything it spawns from now on
/// (`PR_SET_THP_DISABLE` is inherited across fork and kept across execve). With THP `always`
/// every runtime helper — the whole `kumo` binary re-executed per pod sandbox and container —
/// and every new thread faulted in and zeroed 2 MiB pages for a few KiB of heap: most of the
/// CPU a pod start cost, and ~2 MiB of RSS per helper and in the kubelet. (kumo's allocator is
/// built not to advise huge pages, which covers THP `madvise`.) Containers' own commands get THP back before they are executed. Returns
/// whether the flag is now set.
pub fn disable_transparent_huge_pages() -> bool {
    match nix::sys::prctl::set_thp_disable(true) {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!(error = %e, "could not turn transparent huge pages off");
            false
        }
    }
}

/// Knobs of [`ProcessRuntime::with_options`]; the defaults suit the kubelet.
#[derive(Debug, Clone, Default)]
pub struct ProcessRuntimeOptions {
    /// The `kumo` binary to re-execute for helpers. Default: `$KUMO_RUNTIME_HELPER`, else the
    /// current executable (right for the kubelet; tests driving the runtime directly pass the
    /// `kumo` binary).
    pub helper_binary: Option<PathBuf>,
    /// Host-wide pod IP allocation directory (default `/var/lib/kumo/network`), shared by every
    /// kubelet on the host.
    pub network_state_dir: Option<PathBuf>,
    /// The address reported for hostNetwork pods (default: the host's primary IPv4 address).
    pub host_ip: Option<String>,
    /// Plain processes even when running as root.
    pub plain: bool,
    /// Give containers a copy of the image root filesystem instead of an overlay mount
    /// (without this the copy is only the fallback when mounting the overlay fails, e.g. with
    /// the runtime root on overlayfs itself).
    pub copy_rootfs: bool,
}

/// The process runtime. Cheap to clone.
#[derive(Clone)]
pub struct ProcessRuntime {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ProcessRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessRuntime")
            .field("root", &self.inner.root)
            .field("isolated", &self.inner.isolated)
            .finish_non_exhaustive()
    }
}

struct Inner {
    root: PathBuf,
    images: ImageStore,
    helper: PathBuf,
    isolated: bool,
    cgroups: Cgroups,
    network: Option<Network>,
    host_ip: String,
    copy_rootfs: bool,
    /// Container id → sandbox id (see `containers_of`).
    index: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl ProcessRuntime {
    /// A runtime keeping its state under `root_dir` and taking images from `images`.
    pub fn new(root_dir: &Path, images: ImageStore) -> io::Result<ProcessRuntime> {
        Self::with_options(root_dir, images, ProcessRuntimeOptions::default())
    }

    pub fn with_options(
        root_dir: &Path,
        images: ImageStore,
        opts: ProcessRuntimeOptions,
    ) -> io::Result<ProcessRuntime> {
        fs::create_dir_all(root_dir.join("sandboxes"))?;
        fs::create_dir_all(root_dir.join("containers"))?;
        // Before the first helper (the namespace probe below) is spawned.
        disable_transparent_huge_pages();
        let helper = match opts.helper_binary {
            Some(p) => p,
            None => match std::env::var_os("KUMO_RUNTIME_HELPER") {
                Some(p) => PathBuf::from(p),
                None => std::env::current_exe()?,
            },
        };
        let isolated = if opts.plain {
            false
        } else if !nix::unistd::geteuid().is_root() {
            tracing::warn!(
                "process runtime: not running as root, containers run as plain processes \
                 (no namespaces, no cgroup limits, host network)"
            );
            false
        } else {
            let ok = std::process::Command::new(&helper)
                .args([SUBCOMMAND, "probe"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                tracing::warn!(
                    helper = %helper.display(),
                    "process runtime: cannot create namespaces here, containers run as plain processes"
                );
            }
            ok
        };
        let cgroups = if isolated {
            Cgroups::detect()
        } else {
            Cgroups::None
        };
        if isolated && !cgroups.available() {
            tracing::warn!(
                "process runtime: no usable cgroup hierarchy, resource limits are not enforced"
            );
        }
        let network = if isolated && Network::ip_available() {
            Some(Network {
                state_dir: opts
                    .network_state_dir
                    .unwrap_or_else(|| PathBuf::from("/var/lib/kumo/network")),
                bridge_ready: Default::default(),
            })
        } else {
            if isolated {
                tracing::warn!(
                    "process runtime: `ip` (iproute2) not found, pods share the host network"
                );
            }
            None
        };
        let host_ip = opts.host_ip.unwrap_or_else(net::host_ip);
        tracing::info!(
            root = %root_dir.display(),
            isolated,
            cgroups = ?cgroups,
            bridge = network.is_some(),
            "process runtime ready"
        );
        Ok(ProcessRuntime {
            inner: Arc::new(Inner {
                root: root_dir.to_path_buf(),
                images,
                helper,
                isolated,
                cgroups,
                network,
                host_ip,
                copy_rootfs: opts.copy_rootfs,
                index: Default::default(),
            }),
        })
    }

    /// The image store containers take their root filesystems from.
    pub fn images(&self) -> &ImageStore {
        &self.inner.images
    }

    /// Whether containers get namespaces and cgroups (false: the plain-process fallback).
    pub fn isolated(&self) -> bool {
        self.inner.isolated
    }

    /// Whether pods get their own IP on the `kumo0` bridge.
    pub fn bridge_networking(&self) -> bool {
        self.inner.network.is_some()
    }

    fn sandbox_dir(&self, id: &str) -> Result<PathBuf> {
        valid_id(id)?;
        Ok(self.inner.root.join("sandboxes").join(id))
    }

    fn container_dir(&self, id: &str) -> Result<PathBuf> {
        valid_id(id)?;
        Ok(self.inner.root.join("containers").join(id))
    }

    fn sandbox_record(&self, id: &str) -> Result<(PathBuf, SandboxRecord)> {
        let dir = self.sandbox_dir(id)?;
        match read_json_opt::<SandboxRecord>(&dir.join("sandbox.json"))? {
            Some(r) => Ok((dir, r)),
            None => Err(RuntimeError::NotFound(format!("sandbox {id}"))),
        }
    }

    fn container_record(&self, id: &str) -> Result<(PathBuf, ContainerRecord)> {
        let dir = self.container_dir(id)?;
        match read_json_opt::<ContainerRecord>(&dir.join("container.json"))? {
            Some(r) => Ok((dir, r)),
            None => Err(RuntimeError::NotFound(format!("container {id}"))),
        }
    }

    /// Ids of the containers of one sandbox. The container → sandbox map is kept in memory
    /// (a container never changes sandbox) and refreshed from the directory listing, so the
    /// kubelet's relists read only the records of the pod asked about.
    fn containers_of(&self, sandbox_id: &str) -> Result<Vec<String>> {
        let ids: std::collections::HashSet<String> = self.container_ids()?.into_iter().collect();
        let mut index = self
            .inner
            .index
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        index.retain(|cid, _| ids.contains(cid));
        for cid in ids {
            if !index.contains_key(&cid)
                && let Ok((_, rec)) = self.container_record(&cid)
            {
                index.insert(cid, rec.sandbox_id);
            }
        }
        Ok(index
            .iter()
            .filter(|(_, s)| s.as_str() == sandbox_id)
            .map(|(c, _)| c.clone())
            .collect())
    }

    fn container_ids(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for e in fs::read_dir(self.inner.root.join("containers"))? {
            let e = e?;
            out.push(e.file_name().to_string_lossy().into_owned());
        }
        Ok(out)
    }

    /// Spawns a helper detached from the kubelet: own process group, stdio to a log file (and
    /// stdin a pipe from us when `input`), and a task that reaps it when it exits (so it never
    /// lingers as a zombie while the kubelet lives). tokio waits on a pidfd: no thread per
    /// helper (there are two per running pod).
    fn spawn_helper(&self, args: &[&str], dir: &Path, log: &str, input: bool) -> Result<Helper> {
        let log_file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(log))?;
        let mut child = tokio::process::Command::new(&self.inner.helper)
            .arg(SUBCOMMAND)
            .args(args)
            .stdin(if input { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::null())
            .stderr(log_file)
            .process_group(0)
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| {
                RuntimeError::Unavailable(format!("starting {}: {e}", self.inner.helper.display()))
            })?;
        let pid = child
            .id()
            .ok_or_else(|| RuntimeError::Other("helper exited before it was seen".into()))?
            as i32;
        let stdin = child.stdin.take();
        let done = Arc::new(AtomicBool::new(false));
        let done2 = done.clone();
        tokio::spawn(async move {
            let _ = child.wait().await;
            done2.store(true, Ordering::SeqCst);
        });
        Ok(Helper { pid, done, stdin })
    }

    async fn wait_exit_record(dir: &Path, timeout: Duration) -> Option<ExitRecord> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(e)) = read_json_opt::<ExitRecord>(&dir.join("exit.json")) {
                return Some(e);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn signal_container(&self, rec: &ContainerRecord, started: &ProcState, sig: Signal) {
        if !started.alive() {
            return;
        }
        let _ = kill(Pid::from_raw(started.pid), sig);
        if !rec.isolated {
            // Plain processes run in their own process group: signal their children too.
            let _ = kill(Pid::from_raw(-started.pid), sig);
        }
        if sig == Signal::SIGKILL
            && let Some(rel) = &rec.cgroup
        {
            self.inner.cgroups.kill_all(rel);
        }
    }

    async fn status_of(&self, dir: &Path, rec: &ContainerRecord) -> Result<ContainerStatus> {
        let mut exit = read_json_opt::<ExitRecord>(&dir.join("exit.json"))?;
        let started = read_json_opt::<ProcState>(&dir.join("started.json"))?;
        let running = started.is_some_and(|s| s.alive());
        if exit.is_none() && started.is_some() && !running {
            exit = Some(self.vanished(dir).await?);
        }
        let mut st = ContainerStatus {
            id: rec.id.clone(),
            name: rec.name.clone(),
            attempt: rec.attempt,
            state: ContainerState::Created,
            created_at: Some(rec.created_at),
            started_at: started.map(|s| s.started_at),
            finished_at: None,
            exit_code: None,
            reason: None,
            message: None,
            image: rec.image.clone(),
            image_id: rec.image_id.clone(),
            log_path: rec.log_path.clone(),
        };
        if let Some(exit) = exit {
            st.state = ContainerState::Exited;
            st.finished_at = Some(exit.finished_at);
            st.exit_code = Some(exit.exit_code);
            let reason = if exit.unknown {
                "Unknown"
            } else if exit.start_error.is_some() {
                "StartError"
            } else if exit.oom_killed {
                "OOMKilled"
            } else if exit.exit_code == 0 {
                "Completed"
            } else {
                "Error"
            };
            st.reason = Some(reason.to_string());
            st.message = if exit.unknown {
                Some("the container's process and its monitor are gone and no exit status was recorded".to_string())
            } else {
                exit.start_error
            };
        } else if running {
            st.state = ContainerState::Running;
        }
        Ok(st)
    }

    /// The container's process is gone and there is no exit record: either its monitor is
    /// about to write one (wait for it), or the monitor is gone too (killed, node rebooted) and
    /// the status is unknown for good — recorded once so it stays the same on every query.
    async fn vanished(&self, dir: &Path) -> Result<ExitRecord> {
        let monitor = read_json_opt::<ProcState>(&dir.join("monitor.json"))?;
        if monitor.is_some_and(|m| m.alive()) {
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                if let Some(e) = read_json_opt::<ExitRecord>(&dir.join("exit.json"))? {
                    return Ok(e);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        } else if let Some(e) = read_json_opt::<ExitRecord>(&dir.join("exit.json"))? {
            return Ok(e);
        }
        let exit = ExitRecord {
            exit_code: UNKNOWN_EXIT_CODE,
            signal: None,
            oom_killed: false,
            finished_at: jiff::Timestamp::now(),
            start_error: None,
            unknown: true,
        };
        if !monitor.is_some_and(|m| m.alive()) {
            write_json(&dir.join("exit.json"), &exit)?;
        }
        Ok(exit)
    }
}

/// A helper process [`ProcessRuntime::spawn_helper`] started.
struct Helper {
    pid: i32,
    /// Set once it exited.
    done: Arc<AtomicBool>,
    stdin: Option<tokio::process::ChildStdin>,
}

fn valid_id(id: &str) -> Result<()> {
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(RuntimeError::NotFound(format!("invalid id {id:?}")));
    }
    Ok(())
}

fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The CRI rules for the command line: `command` replaces the entrypoint (and drops the image
/// cmd), `args` replaces the cmd.
pub fn resolve_argv(image: &ImageInfo, command: &[String], args: &[String]) -> Vec<String> {
    if !command.is_empty() {
        command.iter().chain(args).cloned().collect()
    } else if !args.is_empty() {
        image.entrypoint.iter().chain(args).cloned().collect()
    } else {
        image.entrypoint.iter().chain(&image.cmd).cloned().collect()
    }
}

/// Image env first, the pod's values override by name; `PATH` and `HOSTNAME` filled in.
fn merge_env(image_env: &[String], pod_env: &[(String, String)], hostname: &str) -> Vec<String> {
    let mut order: Vec<String> = Vec::new();
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    let mut set = |k: &str, v: &str| {
        if !values.contains_key(k) {
            order.push(k.to_string());
        }
        values.insert(k.to_string(), v.to_string());
    };
    if !image_env.iter().any(|e| e.starts_with("PATH=")) {
        set("PATH", DEFAULT_PATH);
    }
    if !hostname.is_empty() {
        set("HOSTNAME", hostname);
    }
    for e in image_env {
        let (k, v) = e.split_once('=').unwrap_or((e.as_str(), ""));
        set(k, v);
    }
    for (k, v) in pod_env {
        set(k, v);
    }
    order
        .into_iter()
        .map(|k| {
            let v = values.get(&k).cloned().unwrap_or_default();
            format!("{k}={v}")
        })
        .collect()
}

/// uid/gid from `runAsUser`/`runAsGroup`, else the image's `User` (`uid`, `name`, `uid:gid`,
/// `name:group`, names looked up in the image's /etc/passwd and /etc/group).
fn resolve_user(
    rootfs: &Path,
    image_user: Option<&str>,
    run_as_user: Option<u32>,
    run_as_group: Option<u32>,
) -> Result<(u32, u32)> {
    let passwd = fs::read_to_string(rootfs.join("etc/passwd")).unwrap_or_default();
    let group = fs::read_to_string(rootfs.join("etc/group")).unwrap_or_default();
    let by_uid = |uid: u32| {
        passwd.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.get(2)?.parse::<u32>().ok()? == uid).then(|| f.get(3)?.parse::<u32>().ok())?
        })
    };
    let (uid, gid) = if let Some(uid) = run_as_user {
        (uid, by_uid(uid).unwrap_or(0))
    } else if let Some(spec) = image_user {
        let (u, g) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        let (uid, primary) = match u.parse::<u32>() {
            Ok(uid) => (uid, by_uid(uid).unwrap_or(0)),
            Err(_) => passwd
                .lines()
                .find_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    (*f.first()? == u)
                        .then(|| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))?
                })
                .ok_or_else(|| {
                    RuntimeError::Invalid(format!(
                        "user {u:?} not found in the image's /etc/passwd"
                    ))
                })?,
        };
        let gid = match g {
            None => primary,
            Some(g) => match g.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => group
                    .lines()
                    .find_map(|l| {
                        let f: Vec<&str> = l.split(':').collect();
                        (*f.first()? == g).then(|| f.get(2)?.parse().ok())?
                    })
                    .ok_or_else(|| {
                        RuntimeError::Invalid(format!(
                            "group {g:?} not found in the image's /etc/group"
                        ))
                    })?,
            },
        };
        (uid, gid)
    } else {
        (0, 0)
    };
    Ok((uid, run_as_group.unwrap_or(gid)))
}

fn cgroup_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[async_trait::async_trait]
impl Runtime for ProcessRuntime {
    async fn version(&self) -> Result<RuntimeVersion> {
        Ok(RuntimeVersion {
            name: "kumo-process".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        })
    }

    async fn ensure_image(&self, image: &str) -> Result<ImageInfo> {
        self.inner
            .images
            .resolve(image)
            .ok_or_else(|| RuntimeError::ImageNotFound(image.to_string()))
    }

    async fn list_images(&self) -> Result<Vec<ImageInfo>> {
        Ok(self.inner.images.list()?)
    }

    async fn run_sandbox(&self, config: &SandboxConfig) -> Result<String> {
        let id = new_id();
        let dir = self.sandbox_dir(&id)?;
        fs::create_dir_all(&dir)?;
        let result = self.run_sandbox_in(&id, &dir, config).await;
        if let Err(e) = &result {
            tracing::warn!(sandbox = %id, pod = %config.name, error = %e, "sandbox failed to start");
            let _ = self.remove_sandbox(&id).await;
            let _ = fs::remove_dir_all(&dir);
        }
        result.map(|()| id)
    }

    async fn stop_sandbox(&self, sandbox_id: &str) -> Result<()> {
        let (dir, rec) = self.sandbox_record(sandbox_id)?;
        for cid in self.containers_of(sandbox_id)? {
            self.stop_container(&cid, Duration::ZERO).await?;
        }
        if let Ok(Some(pause)) = read_json_opt::<ProcState>(&dir.join("pause.json"))
            && pause.alive()
        {
            let _ = kill(Pid::from_raw(pause.pid), Signal::SIGKILL);
        }
        if let Some(rel) = &rec.cgroup {
            self.inner.cgroups.kill_all(&format!("{rel}/pause"));
        }
        if let Some(net) = &self.inner.network {
            net.detach(
                rec.ip
                    .as_deref()
                    .filter(|_| rec.net_mode == NetMode::Bridge),
                rec.veth.as_deref(),
                &dir,
            )
            .await;
        }
        fs::write(dir.join("stopped"), b"")?;
        Ok(())
    }

    async fn remove_sandbox(&self, sandbox_id: &str) -> Result<()> {
        let dir = self.sandbox_dir(sandbox_id)?;
        if !dir.exists() {
            return Ok(());
        }
        match self.stop_sandbox(sandbox_id).await {
            Ok(()) | Err(RuntimeError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        for cid in self.containers_of(sandbox_id)? {
            self.remove_container(&cid).await?;
        }
        if let Ok((_, rec)) = self.sandbox_record(sandbox_id)
            && let Some(rel) = &rec.cgroup
        {
            remove_cgroup(&self.inner.cgroups, rel).await;
        }
        fs::remove_dir_all(&dir)?;
        Ok(())
    }

    async fn sandbox_status(&self, sandbox_id: &str) -> Result<SandboxStatus> {
        let (dir, rec) = self.sandbox_record(sandbox_id)?;
        let alive = read_json_opt::<ProcState>(&dir.join("pause.json"))?.is_some_and(|p| p.alive());
        let ready = alive && !dir.join("stopped").exists();
        Ok(SandboxStatus {
            id: rec.id,
            state: if ready {
                SandboxState::Ready
            } else {
                SandboxState::NotReady
            },
            ip: rec.ip,
        })
    }

    async fn list_sandboxes(&self) -> Result<Vec<(String, SandboxStatus)>> {
        let mut out = Vec::new();
        for e in fs::read_dir(self.inner.root.join("sandboxes"))? {
            let id = e?.file_name().to_string_lossy().into_owned();
            if let Ok((_, rec)) = self.sandbox_record(&id)
                && let Ok(st) = self.sandbox_status(&id).await
            {
                out.push((rec.pod_uid, st));
            }
        }
        Ok(out)
    }

    async fn create_container(
        &self,
        sandbox_id: &str,
        config: &ContainerConfig,
        sandbox: &SandboxConfig,
    ) -> Result<String> {
        let (sdir, srec) = self.sandbox_record(sandbox_id)?;
        let image: StoredImage = self
            .inner
            .images
            .resolve_stored(&config.image)
            .ok_or_else(|| RuntimeError::ImageNotFound(config.image.clone()))?;
        let info = image.info();
        let argv = resolve_argv(&info, &config.command, &config.args);
        if argv.is_empty() {
            return Err(RuntimeError::Invalid(format!(
                "container {}: no command specified and the image has no entrypoint or cmd",
                config.name
            )));
        }
        let rootfs = self.inner.images.rootfs(&image.id);
        let (uid, gid) = resolve_user(
            &rootfs,
            image.user.as_deref(),
            config.run_as_user,
            config.run_as_group,
        )?;
        let hostname = if sandbox.hostname.is_empty() {
            srec.hostname.clone()
        } else {
            sandbox.hostname.clone()
        };
        let id = new_id();
        let dir = self.container_dir(&id)?;
        fs::create_dir_all(&dir)?;
        let cgroup = match &srec.cgroup {
            Some(pod) if self.inner.cgroups.available() => {
                let rel = format!("{pod}/{id}");
                self.inner.cgroups.create(&rel, &config.resources)?;
                Some(rel)
            }
            _ => None,
        };
        let pause = read_json_opt::<ProcState>(&sdir.join("pause.json"))?;
        let rec = ContainerRecord {
            id: id.clone(),
            sandbox_id: sandbox_id.to_string(),
            sandbox_pid: pause.map(|p| p.pid),
            name: config.name.clone(),
            attempt: config.attempt,
            image: config.image.clone(),
            image_id: image.id.clone(),
            image_rootfs: rootfs,
            log_path: config.log_path.clone(),
            argv,
            env: merge_env(&info.env, &config.env, &hostname),
            working_dir: config
                .working_dir
                .clone()
                .filter(|w| !w.is_empty())
                .or(info.working_dir.clone())
                .unwrap_or_else(|| "/".to_string()),
            uid,
            gid,
            mounts: config
                .mounts
                .iter()
                .map(|m| MountRecord {
                    host_path: m.host_path.clone(),
                    container_path: m.container_path.clone(),
                    read_only: m.read_only,
                })
                .collect(),
            isolated: srec.isolated,
            cgroup,
            resources: config.resources.into(),
            privileged: config.privileged,
            copy_rootfs: self.inner.copy_rootfs,
            created_at: jiff::Timestamp::now(),
        };
        write_json(&dir.join("container.json"), &rec)?;
        tracing::debug!(container = %id, name = %config.name, sandbox = %sandbox_id, "container created");
        Ok(id)
    }

    async fn start_container(&self, container_id: &str) -> Result<()> {
        let (dir, rec) = self.container_record(container_id)?;
        if dir.join("started.json").exists() || dir.join("exit.json").exists() {
            return Err(RuntimeError::Invalid(format!(
                "container {container_id} was already started"
            )));
        }
        if rec.isolated
            && let Some(pid) = rec.sandbox_pid
            && !Path::new(&format!("/proc/{pid}/ns/net")).exists()
        {
            return Err(RuntimeError::Invalid(format!(
                "the sandbox of container {container_id} is not running"
            )));
        }
        let dir_str = dir.to_string_lossy().into_owned();
        let monitor_done = self
            .spawn_helper(&["monitor", &dir_str], &dir, "monitor.log", false)?
            .done;
        // Started once the command exec'd (started.json) or failed to (exit.json).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if dir.join("started.json").exists() {
                return Ok(());
            }
            if let Some(exit) = read_json_opt::<ExitRecord>(&dir.join("exit.json"))? {
                return match exit.start_error {
                    Some(err) => Err(RuntimeError::Other(format!(
                        "failed to start container {}: {err}",
                        rec.name
                    ))),
                    None => Ok(()),
                };
            }
            if monitor_done.load(Ordering::SeqCst) && !dir.join("exit.json").exists() {
                let log = fs::read_to_string(dir.join("monitor.log")).unwrap_or_default();
                let exit = ExitRecord {
                    exit_code: 128,
                    signal: None,
                    oom_killed: false,
                    finished_at: jiff::Timestamp::now(),
                    start_error: Some(format!("container monitor failed: {}", log.trim())),
                    unknown: false,
                };
                write_json(&dir.join("exit.json"), &exit)?;
                return Err(RuntimeError::Other(format!(
                    "failed to start container {}: {}",
                    rec.name,
                    log.trim()
                )));
            }
            if Instant::now() >= deadline {
                return Err(RuntimeError::Other(format!(
                    "container {} did not start within 60s",
                    rec.name
                )));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    async fn stop_container(&self, container_id: &str, timeout: Duration) -> Result<()> {
        let (dir, rec) = match self.container_record(container_id) {
            Ok(x) => x,
            Err(RuntimeError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let Some(started) = read_json_opt::<ProcState>(&dir.join("started.json"))? else {
            return Ok(());
        };
        if dir.join("exit.json").exists() {
            return Ok(());
        }
        if started.alive() && !timeout.is_zero() {
            self.signal_container(&rec, &started, Signal::SIGTERM);
            let deadline = Instant::now() + timeout;
            while started.alive() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        if started.alive() {
            self.signal_container(&rec, &started, Signal::SIGKILL);
        }
        if Self::wait_exit_record(&dir, Duration::from_secs(10))
            .await
            .is_none()
            && started.alive()
        {
            return Err(RuntimeError::Other(format!(
                "container {container_id} did not exit after SIGKILL"
            )));
        }
        Ok(())
    }

    async fn remove_container(&self, container_id: &str) -> Result<()> {
        let (dir, rec) = match self.container_record(container_id) {
            Ok(x) => x,
            Err(RuntimeError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        if let Some(started) = read_json_opt::<ProcState>(&dir.join("started.json"))?
            && started.alive()
        {
            self.signal_container(&rec, &started, Signal::SIGKILL);
            Self::wait_exit_record(&dir, Duration::from_secs(10)).await;
        }
        if let Some(rel) = &rec.cgroup {
            self.inner.cgroups.kill_all(rel);
            remove_cgroup(&self.inner.cgroups, rel).await;
        }
        let dir2 = dir.clone();
        tokio::task::spawn_blocking(move || fs::remove_dir_all(dir2))
            .await
            .map_err(|e| RuntimeError::Other(e.to_string()))??;
        Ok(())
    }

    async fn container_status(&self, container_id: &str) -> Result<ContainerStatus> {
        let (dir, rec) = self.container_record(container_id)?;
        self.status_of(&dir, &rec).await
    }

    async fn list_containers(&self, sandbox_id: &str) -> Result<Vec<ContainerStatus>> {
        let mut out = Vec::new();
        for cid in self.containers_of(sandbox_id)? {
            if let Ok((dir, rec)) = self.container_record(&cid) {
                out.push(self.status_of(&dir, &rec).await?);
            }
        }
        out.sort_by_key(|c| (c.name.clone(), c.attempt));
        Ok(out)
    }

    async fn exec_sync(
        &self,
        container_id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput> {
        let (dir, _) = self.running(container_id)?;
        let mut child = tokio::process::Command::new(&self.inner.helper)
            .arg(SUBCOMMAND)
            .arg("exec")
            .arg(&dir)
            .arg("--")
            .args(cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()?;
        let pgid = child.id().map(|p| p as i32);
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let collect = async move {
            use tokio::io::AsyncReadExt;
            let mut out = Vec::new();
            let mut err = Vec::new();
            let read_out = async {
                if let Some(mut s) = stdout {
                    let _ = s.read_to_end(&mut out).await;
                }
            };
            let read_err = async {
                if let Some(mut s) = stderr {
                    let _ = s.read_to_end(&mut err).await;
                }
            };
            let (_, _, status) = tokio::join!(read_out, read_err, child.wait());
            (out, err, status)
        };
        let timeout = if timeout.is_zero() {
            Duration::from_secs(3600)
        } else {
            timeout
        };
        match tokio::time::timeout(timeout, collect).await {
            Ok((stdout, stderr, status)) => {
                use std::os::unix::process::ExitStatusExt;
                let status = status?;
                let exit_code = status
                    .code()
                    .or(status.signal().map(|s| 128 + s))
                    .unwrap_or(255);
                Ok(ExecOutput {
                    exit_code,
                    stdout,
                    stderr,
                })
            }
            Err(_) => {
                if let Some(pg) = pgid {
                    let _ = kill(Pid::from_raw(-pg), Signal::SIGKILL);
                }
                Err(RuntimeError::Other(format!(
                    "command {cmd:?} timed out after {timeout:?}"
                )))
            }
        }
    }

    async fn exec(&self, container_id: &str, request: &ExecRequest) -> Result<StreamTarget> {
        let (dir, _) = self.running(container_id)?;
        let mut command = tokio::process::Command::new(&self.inner.helper);
        command.arg(SUBCOMMAND).arg("exec").arg(&dir);
        if request.tty {
            // The terminal is allocated inside the container by the helper (from the
            // container's devpts, where `tty` and job control expect it) and relayed over
            // pipes; size changes go through a FIFO the helper polls.
            let fifo = dir.join(format!("exec-{}.winsize", new_id()));
            nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
                .map_err(|e| RuntimeError::Other(format!("mkfifo: {e}")))?;
            // Read-write, so opening never waits for the helper and writes never fail
            // before it runs.
            let sizes = fs::OpenOptions::new().read(true).write(true).open(&fifo)?;
            command
                .arg("--tty")
                .arg("--winsize")
                .arg(&fifo)
                .arg("--")
                .args(&request.cmd)
                .kill_on_drop(false)
                .stdin(if request.stdin {
                    Stdio::piped()
                } else {
                    Stdio::null()
                })
                .stdout(Stdio::piped())
                .stderr(Stdio::null());
            let mut child = command.spawn()?;
            let (resize_tx, mut resize_rx) = tokio::sync::mpsc::channel::<(u16, u16)>(8);
            tokio::spawn(async move {
                let mut sizes = tokio::fs::File::from_std(sizes);
                while let Some((cols, rows)) = resize_rx.recv().await {
                    use tokio::io::AsyncWriteExt;
                    let mut rec = [0u8; 4];
                    rec[..2].copy_from_slice(&cols.to_be_bytes());
                    rec[2..].copy_from_slice(&rows.to_be_bytes());
                    if sizes.write_all(&rec).await.is_err() {
                        break;
                    }
                }
            });
            let stdin = child.stdin.take().map(|s| Box::pin(s) as crate::BoxWrite);
            let stdout = child.stdout.take().map(|s| Box::pin(s) as crate::BoxRead);
            let exit = async move {
                let status = child.wait().await;
                let _ = fs::remove_file(&fifo);
                Ok(exit_code(status?))
            };
            return Ok(StreamTarget::Local(ExecSession {
                stdin,
                stdout,
                stderr: None,
                resize: Some(resize_tx),
                exit: Box::pin(exit),
            }));
        }
        command.arg("--").args(&request.cmd).kill_on_drop(false);
        command
            .stdin(if request.stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(if request.stdout {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(if request.stderr {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        let mut child = command.spawn()?;
        let stdin = child.stdin.take().map(|s| Box::pin(s) as crate::BoxWrite);
        let stdout = child.stdout.take().map(|s| Box::pin(s) as crate::BoxRead);
        let stderr = child.stderr.take().map(|s| Box::pin(s) as crate::BoxRead);
        let exit = async move {
            let status = child.wait().await?;
            Ok(exit_code(status))
        };
        Ok(StreamTarget::Local(ExecSession {
            stdin,
            stdout,
            stderr,
            resize: None,
            exit: Box::pin(exit),
        }))
    }

    async fn container_stats(&self, container_id: &str) -> Result<ContainerStats> {
        let (_, rec) = self.container_record(container_id)?;
        Ok(match &rec.cgroup {
            Some(rel) => self.inner.cgroups.stats(rel),
            None => ContainerStats::default(),
        })
    }
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or(status.signal().map(|s| 128 + s))
        .unwrap_or(255)
}

/// cgroup directories can be busy for a moment after their last process died.
async fn remove_cgroup(cgroups: &Cgroups, rel: &str) {
    for attempt in 0..50 {
        match cgroups.remove(rel) {
            Ok(()) => return,
            Err(e) if attempt == 49 => {
                tracing::warn!(cgroup = rel, error = %e, "cgroup not removed");
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

impl ProcessRuntime {
    /// Stops every sandbox this runtime holds (containers SIGKILLed, pause processes gone, pod
    /// IPs released), keeping their records: pods are not tied to the kubelet process, so
    /// `kumo down` calls this to leave no process behind. Returns how many sandboxes it stopped.
    pub async fn stop_all(&self) -> Result<usize> {
        let mut n = 0;
        for e in fs::read_dir(self.inner.root.join("sandboxes"))? {
            let id = e?.file_name().to_string_lossy().into_owned();
            match self.stop_sandbox(&id).await {
                Ok(()) => n += 1,
                Err(RuntimeError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    /// [`ProcessRuntime::stop_all`], then removes every sandbox and container (`kumo delete`).
    pub async fn remove_all(&self) -> Result<()> {
        for e in fs::read_dir(self.inner.root.join("sandboxes"))? {
            let id = e?.file_name().to_string_lossy().into_owned();
            self.remove_sandbox(&id).await?;
        }
        for id in self.container_ids()? {
            self.remove_container(&id).await?;
        }
        Ok(())
    }

    fn running(&self, container_id: &str) -> Result<(PathBuf, ContainerRecord)> {
        let (dir, rec) = self.container_record(container_id)?;
        let alive =
            read_json_opt::<ProcState>(&dir.join("started.json"))?.is_some_and(|s| s.alive());
        if !alive || dir.join("exit.json").exists() {
            return Err(RuntimeError::Invalid(format!(
                "container {container_id} is not running"
            )));
        }
        Ok((dir, rec))
    }

    async fn run_sandbox_in(&self, id: &str, dir: &Path, config: &SandboxConfig) -> Result<()> {
        let isolated = self.inner.isolated;
        let net_mode = if !isolated || config.host_network {
            NetMode::Host
        } else if self.inner.network.is_some() {
            NetMode::Bridge
        } else {
            NetMode::Host
        };
        let cgroup = if isolated && self.inner.cgroups.available() {
            let name = if config.pod_uid.is_empty() {
                id.to_string()
            } else {
                cgroup_name(&config.pod_uid)
            };
            let rel = format!("kumo/pod{name}");
            self.inner.cgroups.create(&rel, &config.resources)?;
            self.inner
                .cgroups
                .create(&format!("{rel}/pause"), &Resources::default())?;
            Some(rel)
        } else {
            None
        };
        let mut rec = SandboxRecord {
            id: id.to_string(),
            pod_uid: config.pod_uid.clone(),
            namespace: config.namespace.clone(),
            name: config.name.clone(),
            hostname: if config.hostname.is_empty() {
                config.name.clone()
            } else {
                config.hostname.clone()
            },
            host_network: config.host_network,
            isolated,
            net_mode,
            ip: None,
            veth: None,
            cgroup,
            resources: config.resources.into(),
            created_at: jiff::Timestamp::now(),
        };
        write_json(&dir.join("sandbox.json"), &rec)?;
        let dir_str = dir.to_string_lossy().into_owned();
        let bridge = match (&self.inner.network, net_mode) {
            (Some(net), NetMode::Bridge) => Some(net),
            _ => None,
        };
        let mut pause =
            self.spawn_helper(&["pause", &dir_str], dir, "pause.log", bridge.is_some())?;
        let pid = pause.pid;
        let pause_failed = || {
            let log = fs::read_to_string(dir.join("pause.log")).unwrap_or_default();
            RuntimeError::Other(format!("pod sandbox process failed: {}", log.trim()))
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !dir.join("ready").exists() {
            if pause.done.load(Ordering::SeqCst) {
                return Err(pause_failed());
            }
            if Instant::now() >= deadline {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                return Err(RuntimeError::Other(
                    "pod sandbox did not start within 20s".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let state = ProcState::of(pid)
            .ok_or_else(|| RuntimeError::Other("pod sandbox process exited".into()))?;
        write_json(&dir.join("pause.json"), &state)?;
        rec.ip = Some(match bridge {
            Some(net) => {
                let (ip, veth) = net.attach(id, dir, pid).await?;
                // Recorded at once, so a failure from here on is undone by remove_sandbox.
                rec.ip = Some(ip.to_string());
                rec.veth = Some(veth);
                write_json(&dir.join("sandbox.json"), &rec)?;
                let configured = async {
                    use tokio::io::AsyncWriteExt as _;
                    let mut stdin = pause.stdin.take().ok_or_else(pause_failed)?;
                    if stdin
                        .write_all(Network::pod_side(ip).as_bytes())
                        .await
                        .is_err()
                    {
                        return Err(pause_failed());
                    }
                    drop(stdin);
                    loop {
                        if dir.join("net-ok").exists() {
                            return Ok(());
                        }
                        if let Ok(msg) = fs::read_to_string(dir.join("net-error")) {
                            return Err(RuntimeError::Other(msg));
                        }
                        if pause.done.load(Ordering::SeqCst) {
                            return Err(pause_failed());
                        }
                        if Instant::now() >= deadline {
                            return Err(RuntimeError::Other(
                                "pod network not set up within 20s".into(),
                            ));
                        }
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
                .await;
                if configured.is_err() {
                    net.attach_failed();
                }
                configured?;
                ip.to_string()
            }
            None => self.inner.host_ip.clone(),
        });
        write_json(&dir.join("sandbox.json"), &rec)?;
        tracing::debug!(sandbox = %id, pod = %config.name, ip = ?rec.ip, "sandbox ready");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_follows_cri_rules() {
        let img = ImageInfo {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["default".into()],
            ..Default::default()
        };
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(resolve_argv(&img, &[], &[]), s(&["/entry", "default"]));
        assert_eq!(resolve_argv(&img, &[], &s(&["a"])), s(&["/entry", "a"]));
        assert_eq!(resolve_argv(&img, &s(&["sh"]), &[]), s(&["sh"]));
        assert_eq!(
            resolve_argv(&img, &s(&["sh"]), &s(&["-c", "x"])),
            s(&["sh", "-c", "x"])
        );
    }

    #[test]
    fn env_merges_image_then_pod() {
        let env = merge_env(
            &["PATH=/bin".into(), "A=1".into(), "B=2".into()],
            &[("B".into(), "3".into()), ("C".into(), "4".into())],
            "web-1",
        );
        assert_eq!(
            env,
            vec!["HOSTNAME=web-1", "PATH=/bin", "A=1", "B=3", "C=4"]
        );
        let env = merge_env(&[], &[], "");
        assert_eq!(env, vec![format!("PATH={DEFAULT_PATH}")]);
    }

    #[test]
    fn users_resolve_from_the_image() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("etc")).expect("etc");
        fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nweb:x:1000:2000::/home/web:/bin/sh\n",
        )
        .expect("passwd");
        fs::write(dir.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").expect("group");
        let r = |u: Option<&str>, ru: Option<u32>, rg: Option<u32>| {
            resolve_user(dir.path(), u, ru, rg).expect("resolve")
        };
        assert_eq!(r(None, None, None), (0, 0));
        assert_eq!(r(Some("web"), None, None), (1000, 2000));
        assert_eq!(r(Some("web:staff"), None, None), (1000, 50));
        assert_eq!(r(Some("1000"), None, None), (1000, 2000));
        assert_eq!(r(Some("42:43"), None, None), (42, 43));
        assert_eq!(r(Some("web"), Some(7), None), (7, 0));
        assert_eq!(r(None, Some(1000), Some(9)), (1000, 9));
        assert!(resolve_user(dir.path(), Some("nobody-here"), None, None).is_err());
    }

    #[test]
    fn secure_join_stays_inside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        fs::create_dir_all(root.join("usr/lib")).expect("mkdir");
        std::os::unix::fs::symlink("/usr/lib", root.join("lib")).expect("abs link");
        std::os::unix::fs::symlink("../../..", root.join("usr/up")).expect("rel link");
        assert_eq!(
            init::secure_join(root, "/lib/x").expect("join"),
            root.join("usr/lib/x")
        );
        assert_eq!(
            init::secure_join(root, "/usr/up/etc/passwd").expect("join"),
            root.join("etc/passwd")
        );
        assert_eq!(
            init::secure_join(root, "../../etc").expect("join"),
            root.join("etc")
        );
    }
}
