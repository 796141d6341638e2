//! On-disk state of the process runtime, shared by the runtime (in the kubelet) and its helper
//! processes (`kumo runtime-init …`). Everything a restarted kubelet needs is here, so sandboxes
//! and containers outlive the kubelet process:
//!
//! ```text
//! <root>/sandboxes/<id>/sandbox.json   SandboxRecord (written at run_sandbox)
//! <root>/sandboxes/<id>/pause.json     ProcState of the namespace-holding pause process
//! <root>/sandboxes/<id>/stopped        present once stop_sandbox ran
//! <root>/containers/<id>/container.json ContainerRecord (written at create_container)
//! <root>/containers/<id>/started.json  ProcState of the container's init (written by its monitor)
//! <root>/containers/<id>/exit.json     ExitRecord (written by the monitor when the init exits)
//! ```

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Resources;

/// How a sandbox's network is set up.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NetMode {
    /// Own network namespace with a veth into the `kumo0` bridge.
    Bridge,
    /// Own network namespace with loopback only.
    Loopback,
    /// The host's network namespace (hostNetwork pods, and the fallback without `ip`).
    Host,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub id: String,
    pub pod_uid: String,
    pub namespace: String,
    pub name: String,
    pub hostname: String,
    pub host_network: bool,
    /// Namespaces and cgroups in use (false: plain processes, the non-root fallback).
    pub isolated: bool,
    pub net_mode: NetMode,
    pub ip: Option<String>,
    /// Host side of the veth pair, for teardown.
    pub veth: Option<String>,
    /// Pod cgroup, relative to each hierarchy root (`kumo/pod<uid>`).
    pub cgroup: Option<String>,
    pub resources: ResourcesRecord,
    pub created_at: jiff::Timestamp,
}

/// The serialisable mirror of [`Resources`].
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ResourcesRecord {
    pub cpu_limit_millis: Option<u64>,
    pub cpu_request_millis: Option<u64>,
    pub memory_limit_bytes: Option<u64>,
}

impl From<Resources> for ResourcesRecord {
    fn from(r: Resources) -> Self {
        ResourcesRecord {
            cpu_limit_millis: r.cpu_limit_millis,
            cpu_request_millis: r.cpu_request_millis,
            memory_limit_bytes: r.memory_limit_bytes,
        }
    }
}

impl From<ResourcesRecord> for Resources {
    fn from(r: ResourcesRecord) -> Self {
        Resources {
            cpu_limit_millis: r.cpu_limit_millis,
            cpu_request_millis: r.cpu_request_millis,
            memory_limit_bytes: r.memory_limit_bytes,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MountRecord {
    pub host_path: PathBuf,
    pub container_path: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub sandbox_id: String,
    /// The pause process whose ipc/uts/net namespaces the container joins.
    pub sandbox_pid: Option<i32>,
    pub name: String,
    pub attempt: u32,
    /// The image as the pod spec names it.
    pub image: String,
    pub image_id: String,
    /// Unpacked image root filesystem (overlay lower dir).
    pub image_rootfs: PathBuf,
    pub log_path: PathBuf,
    /// Final command line (entrypoint/cmd rules applied).
    pub argv: Vec<String>,
    /// Final environment (`KEY=VALUE`), image env overridden by the pod's.
    pub env: Vec<String>,
    pub working_dir: String,
    pub uid: u32,
    pub gid: u32,
    pub mounts: Vec<MountRecord>,
    pub isolated: bool,
    /// Container cgroup relative to each hierarchy root (`kumo/pod<uid>/<id>`).
    pub cgroup: Option<String>,
    pub resources: ResourcesRecord,
    pub privileged: bool,
    /// Copy the image instead of mounting an overlay (set when overlayfs is known not to
    /// work here; the copy is also the automatic fallback when the overlay mount fails).
    #[serde(default)]
    pub copy_rootfs: bool,
    pub created_at: jiff::Timestamp,
}

/// A process the runtime started, identified by pid and kernel start time so a recycled pid is
/// never mistaken for it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcState {
    pub pid: i32,
    pub start_ticks: u64,
    pub started_at: jiff::Timestamp,
}

impl ProcState {
    pub fn of(pid: i32) -> Option<ProcState> {
        Some(ProcState {
            pid,
            start_ticks: proc_start_ticks(pid)?,
            started_at: jiff::Timestamp::now(),
        })
    }

    /// Whether this very process still runs (zombies count as gone).
    pub fn alive(&self) -> bool {
        match proc_stat(self.pid) {
            Some((state, ticks)) => ticks == self.start_ticks && state != 'Z' && state != 'X',
            None => false,
        }
    }
}

/// Field 22 of `/proc/<pid>/stat`: start time in clock ticks since boot.
pub fn proc_start_ticks(pid: i32) -> Option<u64> {
    proc_stat(pid).map(|(_, t)| t)
}

fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let ticks = fields.get(19)?.parse().ok()?;
    Some((state, ticks))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExitRecord {
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub oom_killed: bool,
    pub finished_at: jiff::Timestamp,
    /// Set when the command never ran (not found, bad mount …): CRI's `StartError`.
    pub start_error: Option<String>,
    /// Written by the runtime, not the monitor: the process vanished with its monitor and no
    /// status was recorded (containerd's `Unknown`, exit code 255).
    #[serde(default)]
    pub unknown: bool,
}

pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> io::Result<T> {
    let bytes = fs::read(path)?;
    serde_json::from_slice(&bytes).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })
}

pub fn read_json_opt<T: for<'de> Deserialize<'de>>(path: &Path) -> io::Result<Option<T>> {
    match read_json(path) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

pub(crate) use crate::image::write_json;
