//! A real containerd (1.6, Debian's `containerd` + `runc` + `containernetworking-plugins`) for
//! the `cri` runtime tests, private to one test: its own root/state directories, socket, runc
//! root, CNI config (a bridge on its own /24 inside 10.89.0.0/16, clear of the process
//! runtime's 10.88.0.0/16) and host-local IPAM store, all under a tempdir, with the test's
//! busybox and pause images imported (no registry is reachable). Dropping it kills containerd,
//! its shims and every runc container it started, and removes its mounts and bridge.
//!
//! Needs root (runc, mounts, network namespaces). Several instances may run at once: each takes
//! a free "slot" (a lock file) that names its bridge and subnet.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kumo_cri::CriRuntime;
use kumo_runtime::Runtime;
use sha2::Digest;

use crate::images;

/// Name the busybox image is imported under (`docker.io/library/busybox:latest` in containerd).
pub const BUSYBOX_IMAGE: &str = "busybox:latest";
/// The sandbox ("pause") image: busybox running `sleep inf`, set as the CRI `sandbox_image`.
pub const PAUSE_IMAGE: &str = "kumo.local/pause:latest";

/// CNI plugins the bridge network uses (`containernetworking-plugins`).
const CNI_BIN_DIR: &str = "/usr/lib/cni";
const CNI_PLUGINS: &[&str] = &["bridge", "host-local", "loopback"];
/// libcni's cache of ADD results, fixed in containerd 1.6.
const CNI_RESULTS_DIR: &str = "/var/lib/cni/results";
const BINARIES: &[&str] = &["containerd", "containerd-shim-runc-v2", "runc", "ctr"];
const APT_PACKAGES: &str = "containerd runc containernetworking-plugins busybox-static iproute2";

/// Number of concurrent instances (one /24 each in 10.89.0.0/16).
const SLOTS: u32 = 250;
/// How long containerd may take to serve CRI with RuntimeReady and NetworkReady.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A running containerd private to a test.
pub struct Containerd {
    dir: tempfile::TempDir,
    child: Option<Child>,
    socket: PathBuf,
    slot: u32,
    /// Held for the instance's lifetime: the slot's bridge and subnet are ours.
    _slot_lock: File,
}

impl std::fmt::Debug for Containerd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Containerd")
            .field("dir", &self.dir.path())
            .field("slot", &self.slot)
            .finish_non_exhaustive()
    }
}

fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false)
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

impl Containerd {
    /// `Ok` when this machine can run containerd for tests; otherwise why not (not root, a
    /// binary or CNI plugin missing, no busybox for the images).
    pub fn available() -> Result<(), String> {
        if !is_root() {
            return Err("containerd, runc and CNI need root".to_string());
        }
        let mut missing: Vec<String> = BINARIES
            .iter()
            .filter(|b| !on_path(b))
            .map(|b| b.to_string())
            .collect();
        missing.extend(
            CNI_PLUGINS
                .iter()
                .map(|p| Path::new(CNI_BIN_DIR).join(p))
                .filter(|p| !p.is_file())
                .map(|p| p.display().to_string()),
        );
        let busybox = images::busybox_bin();
        if !busybox.is_file() {
            missing.push(busybox.display().to_string());
        }
        if !on_path("ip") {
            missing.push("ip".to_string());
        }
        if !missing.is_empty() {
            return Err(format!(
                "missing {}: install with `apt-get install -y {APT_PACKAGES}` (`cargo xtask test` does)",
                missing.join(", ")
            ));
        }
        Ok(())
    }

    /// `true` when containerd can run here. Otherwise panics under CI
    /// ([`crate::running_under_ci`]) and, outside CI, prints why `test` is skipped.
    #[allow(clippy::print_stderr)]
    pub fn require(test: &str) -> bool {
        match Self::available() {
            Ok(()) => true,
            Err(why) if crate::running_under_ci() => {
                panic!("{test}: {why} (CI is set, so this is a failure, not a skip)")
            }
            Err(why) => {
                eprintln!("SKIPPED {test}: {why}");
                false
            }
        }
    }

    /// Starts containerd, imports the busybox ([`BUSYBOX_IMAGE`], `Cmd ["sh"]`) and pause
    /// ([`PAUSE_IMAGE`]) images and waits until CRI `Status` reports RuntimeReady and
    /// NetworkReady.
    pub async fn start() -> Result<Containerd> {
        Self::available().map_err(anyhow::Error::msg)?;
        let (slot, lock) = take_slot()?;
        let dir = tempfile::Builder::new()
            .prefix("kumo-ctd-")
            .tempdir()
            .context("tempdir")?;
        let socket = dir.path().join("containerd.sock");
        let mut this = Containerd {
            dir,
            child: None,
            socket,
            slot,
            _slot_lock: lock,
        };
        // A bridge left by a killed run in this slot would carry a stale address.
        let _ = Command::new("ip")
            .args(["link", "del", &this.bridge()])
            .stderr(Stdio::null())
            .status();
        this.write_config()?;
        this.spawn()?;
        this.wait_serving().await?;
        let images_dir = this.dir.path().join("images");
        std::fs::create_dir_all(&images_dir)?;
        let busybox = images::busybox_image_tar(&images_dir, BUSYBOX_IMAGE, &["sh"])
            .context("build busybox image")?;
        let pause =
            images::pause_image_tar(&images_dir, PAUSE_IMAGE).context("build pause image")?;
        this.import_image(&busybox).await?;
        this.import_image(&pause).await?;
        this.wait_ready().await?;
        Ok(this)
    }

    /// `unix://…` endpoint for [`CriRuntime::connect`] / `--container-runtime-endpoint`.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The pod subnet of this instance's bridge (`10.89.<slot>.0/24`).
    pub fn subnet(&self) -> String {
        format!("10.89.{}.0/24", self.slot)
    }

    /// The bridge interface this instance's pods hang off.
    pub fn bridge(&self) -> String {
        format!("kumocri{}", self.slot)
    }

    /// containerd's own log (stdout+stderr), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// The last `n` lines of [`Self::log`].
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// `ctr -n k8s.io images import TAR` into this containerd.
    pub async fn import_image(&self, tar: &Path) -> Result<()> {
        let out = tokio::process::Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["-n", "k8s.io", "images", "import"])
            .arg(tar)
            .output()
            .await
            .context("run ctr")?;
        if !out.status.success() {
            bail!(
                "ctr images import {} failed: {}{}",
                tar.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Kills containerd only (its shims and containers keep running, as on a real node when
    /// the daemon restarts) and starts it again on the same directories, then waits until it
    /// is ready.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill_daemon();
        self.spawn()?;
        self.wait_serving().await?;
        self.wait_ready().await
    }

    /// Host pid of a running container's process (`runc state`), e.g. to kill it from
    /// outside the way a crash would. `id` may carry the kubelet's `containerd://` prefix.
    pub fn container_pid(&self, id: &str) -> Option<u32> {
        let id = id.strip_prefix("containerd://").unwrap_or(id);
        let out = Command::new("runc")
            .arg("--root")
            .arg(self.runc_root().join("k8s.io"))
            .args(["state", id])
            .output()
            .ok()?;
        let state: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        state["pid"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p > 0)
    }

    fn runc_root(&self) -> PathBuf {
        self.dir.path().join("runc")
    }

    fn write_config(&self) -> Result<()> {
        let d = self.dir.path();
        let net_d = d.join("cni/net.d");
        std::fs::create_dir_all(&net_d)?;
        let conflist = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": format!("kumo-cri-{}", self.slot),
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge(),
                    "isGateway": true,
                    // No masquerade: the tests reach pods from the host only, and leaving
                    // iptables alone means nothing to clean up.
                    "ipMasq": false,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{ "subnet": self.subnet() }]],
                        "routes": [{ "dst": "0.0.0.0/0" }],
                        "dataDir": d.join("cni/ipam"),
                    }
                },
                { "type": "loopback" }
            ]
        });
        std::fs::write(
            net_d.join("10-kumo.conflist"),
            serde_json::to_vec_pretty(&conflist)?,
        )?;
        // `KUMO_CONTAINERD_SNAPSHOTTER` forces one (e.g. `native`, to exercise the fallback).
        let snapshotter = match std::env::var("KUMO_CONTAINERD_SNAPSHOTTER") {
            Ok(s) if !s.is_empty() => s,
            _ if overlay_supported(d) => "overlayfs".to_string(),
            _ => "native".to_string(),
        };
        let p = |rel: &str| d.join(rel).display().to_string();
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
# Snapshotters that cannot work here only log noise at start-up.
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  # root lacks CAP_SYS_RESOURCE in these VMs: without this, raising oom_score_adj fails.
  restrict_oom_score_adj = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # Pod network namespaces under our state dir rather than /run/netns: cleaned up with it.
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "{snapshotter}"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{runc_root}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{net_d}"
"#,
            root = p("root"),
            state = p("state"),
            sock = self.socket.display(),
            opt = p("opt"),
            pause = images::full_image_name(PAUSE_IMAGE),
            runc_root = self.runc_root().display(),
            cni_bin = CNI_BIN_DIR,
            net_d = net_d.display(),
        );
        std::fs::write(d.join("config.toml"), config)?;
        Ok(())
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("containerd.log"))?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(self.dir.path().join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawn containerd")?;
        self.child = Some(child);
        Ok(())
    }

    fn check_alive(&mut self) -> Result<()> {
        if let Some(child) = self.child.as_mut()
            && let Some(status) = child.try_wait()?
        {
            bail!("containerd exited ({status}):\n{}", self.log_tail(40));
        }
        Ok(())
    }

    async fn wait_serving(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.check_alive()?;
            if self.socket.exists() && CriRuntime::connect(&self.endpoint()).await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "containerd did not serve CRI on {} within {READY_TIMEOUT:?}:\n{}",
                    self.socket.display(),
                    self.log_tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let cri = CriRuntime::connect(&self.endpoint())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        loop {
            self.check_alive()?;
            let status = cri.status().await.map_err(|e| anyhow::anyhow!("{e}"))?;
            match status.not_ready_message() {
                None => {
                    let v = cri.version().await.map_err(|e| anyhow::anyhow!("{e}"))?;
                    tracing::info!(name = %v.name, version = %v.version, socket = %self.socket.display(), "containerd ready");
                    return Ok(());
                }
                Some(why) if Instant::now() > deadline => {
                    bail!(
                        "containerd not ready within {READY_TIMEOUT:?}: {why}\n{}",
                        self.log_tail(40)
                    )
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    fn kill_daemon(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // The daemon first, so it does not restart or report anything while we tear down.
        self.kill_daemon();
        // Every container runc started for this instance (`Root/<namespace>`): kill and
        // delete, which also removes its cgroups.
        let runc_root = self.runc_root().join("k8s.io");
        let ids: Vec<String> = Command::new("runc")
            .arg("--root")
            .arg(&runc_root)
            .args(["list", "-q"])
            .output()
            .map(|out| {
                String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        for id in &ids {
            let _ = Command::new("runc")
                .arg("--root")
                .arg(&runc_root)
                .args(["delete", "-f", id])
                .stderr(Stdio::null())
                .status();
        }
        // The shims of this instance: their command line names our socket.
        let sock = self.socket.display().to_string();
        for pid in processes_matching(&["containerd-shim", &sock]) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        // Rootfs overlays, sandbox /dev/shm and network-namespace mounts live under our
        // directories: unmount deepest first so the tempdir can go.
        for m in mounts_under(self.dir.path()) {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&m)
                .stderr(Stdio::null())
                .status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge()])
            .stderr(Stdio::null())
            .status();
        // containerd 1.6 keeps two things outside its configured directories (design.md):
        // shim sockets in /run/containerd/s, named sha256(<address>/<namespace>/<id>), and
        // libcni's result cache in /var/lib/cni/results, named <network>-<id>-<ifname>.
        // A torn-down pod removes its own; these are what a killed test leaves.
        for id in &ids {
            let hash = sha2::Sha256::digest(format!("{sock}/k8s.io/{id}").as_bytes());
            let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
            let _ = std::fs::remove_file(Path::new("/run/containerd/s").join(hex));
            let _ = std::fs::remove_file(
                Path::new(CNI_RESULTS_DIR).join(format!("cni-loopback-{id}-lo")),
            );
        }
        let ours = format!("kumo-cri-{}-", self.slot);
        if let Ok(entries) = std::fs::read_dir(CNI_RESULTS_DIR) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&ours) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

/// Takes the first free slot (an exclusive lock on a file that lives as long as the instance).
fn take_slot() -> Result<(u32, File)> {
    let dir = std::env::temp_dir().join("kumo-containerd-slots");
    std::fs::create_dir_all(&dir)?;
    for slot in 0..SLOTS {
        let f = File::create(dir.join(format!("{slot}.lock")))?;
        if f.try_lock().is_ok() {
            return Ok((slot, f));
        }
    }
    bail!("all {SLOTS} containerd test slots are taken")
}

/// Whether containerd can use overlayfs under `dir`: the kernel has it and `dir` is not itself
/// on overlayfs (as in many CI containers, where overlay-on-overlay fails). Otherwise the slow
/// but universal `native` snapshotter.
fn overlay_supported(dir: &Path) -> bool {
    let kernel = std::fs::read_to_string("/proc/filesystems")
        .map(|s| {
            s.lines()
                .any(|l| l.split_whitespace().last() == Some("overlay"))
        })
        .unwrap_or(false);
    kernel && filesystem_of(dir).as_deref() != Some("overlay")
}

/// The filesystem type of the mount holding `dir` (longest matching mount point in
/// /proc/self/mountinfo; the type follows the ` - ` separator).
fn filesystem_of(dir: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines()
        .filter_map(|l| {
            let mount_point = PathBuf::from(l.split(' ').nth(4)?.replace("\\040", " "));
            let fstype = l.split(" - ").nth(1)?.split(' ').next()?.to_string();
            dir.starts_with(&mount_point)
                .then_some((mount_point, fstype))
        })
        .max_by_key(|(m, _)| m.components().count())
        .map(|(_, t)| t)
}

/// Pids whose command line contains every one of `needles`.
fn processes_matching(needles: &[&str]) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default();
            needles.iter().all(|n| cmdline.contains(n))
        })
        .collect()
}

/// Mount points at or below `dir`, deepest first (from /proc/self/mountinfo, whose mount
/// point field escapes spaces as `\040`).
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| m.starts_with(dir))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    mounts.dedup();
    mounts
}

/// Whether a container ended by the kernel's OOM killer under its memory limit, as
/// containerd's CRI reports it: `OOMKilled` with exit code 137. containerd releases before the
/// fix for containerd/containerd#8180 (the OOM event ordered before the exit event, 2.2)
/// sometimes see the exit first and report `Error`, still with 137 (SIGKILL).
pub fn oom_killed(reason: &str, exit_code: i64) -> bool {
    exit_code == 137 && matches!(reason, "OOMKilled" | "Error")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filesystem_of_finds_the_innermost_mount() {
        assert_eq!(
            filesystem_of(Path::new("/proc/self")).as_deref(),
            Some("proc")
        );
        assert_eq!(
            filesystem_of(Path::new("/sys/kernel"))
                .as_deref()
                .map(|t| t.is_empty()),
            Some(false)
        );
    }
}
