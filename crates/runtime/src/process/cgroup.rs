//! cgroups for pods and containers under a `kumo` parent, on cgroup v1 (one directory per
//! controller hierarchy: memory, cpu, cpuacct, pids) or v2 (one unified tree with
//! `cgroup.subtree_control`). Paths handed around are relative to the hierarchy roots
//! (`kumo/pod<uid>/<container id>`), so the runtime and its helpers agree without passing
//! mount points.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::{ContainerStats, Resources};

/// The controllers the runtime uses.
const V1_CONTROLLERS: &[&str] = &["memory", "cpu", "cpuacct", "pids"];
const V2_CONTROLLERS: &[&str] = &["memory", "cpu", "pids"];

#[derive(Debug, Clone)]
pub enum Cgroups {
    /// `(controller, mount point)`; co-mounted controllers share a mount point.
    V1(Vec<(String, PathBuf)>),
    V2(PathBuf),
    None,
}

impl Cgroups {
    /// Reads `/proc/self/mountinfo`: a cgroup2 mount at `/sys/fs/cgroup` means the unified
    /// hierarchy; otherwise the v1 controller mounts (a hybrid host's `unified` mount has no
    /// controllers and is ignored).
    pub fn detect() -> Cgroups {
        match fs::read_to_string("/proc/self/mountinfo") {
            Ok(info) => Self::from_mountinfo(&info),
            Err(_) => Cgroups::None,
        }
    }

    fn from_mountinfo(info: &str) -> Cgroups {
        let mut v1 = Vec::new();
        let mut v2 = None;
        for line in info.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let mount_point = left.split_whitespace().nth(4).unwrap_or("");
            let mut r = right.split_whitespace();
            let fstype = r.next().unwrap_or("");
            let _source = r.next();
            let super_opts = r.next().unwrap_or("");
            match fstype {
                "cgroup2" if mount_point == "/sys/fs/cgroup" => {
                    v2 = Some(PathBuf::from(mount_point))
                }
                "cgroup" => {
                    for opt in super_opts.split(',') {
                        if V1_CONTROLLERS.contains(&opt) {
                            v1.push((opt.to_string(), PathBuf::from(mount_point)));
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some(root) = v2 {
            Cgroups::V2(root)
        } else if v1.iter().any(|(c, _)| c == "memory") {
            Cgroups::V1(v1)
        } else {
            Cgroups::None
        }
    }

    pub fn available(&self) -> bool {
        !matches!(self, Cgroups::None)
    }

    fn v1_dir(&self, controller: &str, rel: &str) -> Option<PathBuf> {
        match self {
            Cgroups::V1(mounts) => mounts
                .iter()
                .find(|(c, _)| c == controller)
                .map(|(_, m)| m.join(rel)),
            _ => None,
        }
    }

    /// Every directory of `rel` (one per distinct v1 mount point, or the v2 one).
    fn dirs(&self, rel: &str) -> Vec<PathBuf> {
        match self {
            Cgroups::V1(mounts) => {
                let mut out: Vec<PathBuf> = Vec::new();
                for (_, m) in mounts {
                    let d = m.join(rel);
                    if !out.contains(&d) {
                        out.push(d);
                    }
                }
                out
            }
            Cgroups::V2(root) => vec![root.join(rel)],
            Cgroups::None => Vec::new(),
        }
    }

    /// Creates `rel` (and its parents) and applies limits.
    pub fn create(&self, rel: &str, res: &Resources) -> io::Result<()> {
        match self {
            Cgroups::V1(_) => {
                for d in self.dirs(rel) {
                    fs::create_dir_all(&d)?;
                }
                if let Some(d) = self.v1_dir("memory", rel)
                    && let Some(bytes) = res.memory_limit_bytes
                {
                    write(&d.join("memory.limit_in_bytes"), &bytes.to_string())?;
                    // No swap: a limit means OOM at the limit, like upstream nodes.
                    let _ = write(&d.join("memory.memsw.limit_in_bytes"), &bytes.to_string());
                    let _ = write(&d.join("memory.swappiness"), "0");
                }
                if let Some(d) = self.v1_dir("cpu", rel) {
                    if let Some(m) = res.cpu_limit_millis {
                        write(&d.join("cpu.cfs_period_us"), "100000")?;
                        write(&d.join("cpu.cfs_quota_us"), &(m.max(1) * 100).to_string())?;
                    }
                    if let Some(m) = res.cpu_request_millis {
                        write(&d.join("cpu.shares"), &millis_to_shares(m).to_string())?;
                    }
                }
                Ok(())
            }
            Cgroups::V2(root) => {
                // Enable controllers top-down on every ancestor of the leaf.
                let mut cur = root.clone();
                let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
                for part in &parts {
                    enable_v2_controllers(&cur);
                    cur.push(part);
                    match fs::create_dir(&cur) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(e),
                    }
                }
                if let Some(bytes) = res.memory_limit_bytes {
                    write(&cur.join("memory.max"), &bytes.to_string())?;
                    let _ = write(&cur.join("memory.swap.max"), "0");
                }
                if let Some(m) = res.cpu_limit_millis {
                    write(&cur.join("cpu.max"), &format!("{} 100000", m.max(1) * 100))?;
                }
                if let Some(m) = res.cpu_request_millis {
                    let shares = millis_to_shares(m);
                    // The kubelet's shares → weight conversion.
                    let weight = 1 + ((shares.saturating_sub(2)) * 9999) / 262142;
                    write(&cur.join("cpu.weight"), &weight.to_string())?;
                }
                Ok(())
            }
            Cgroups::None => Ok(()),
        }
    }

    /// Moves the calling process into `rel` ("0" is the writer itself in both versions).
    pub fn enter_self(&self, rel: &str) -> io::Result<()> {
        for d in self.dirs(rel) {
            write(&d.join("cgroup.procs"), "0")?;
        }
        Ok(())
    }

    /// Pids (host namespace) in `rel` and below.
    pub fn pids(&self, rel: &str) -> Vec<i32> {
        let mut out = Vec::new();
        for d in self.dirs(rel) {
            collect_pids(&d, &mut out);
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// SIGKILLs everything in `rel` (`cgroup.kill` on v2 when the kernel has it).
    pub fn kill_all(&self, rel: &str) {
        if let Cgroups::V2(root) = self {
            let k = root.join(rel).join("cgroup.kill");
            if k.exists() && write(&k, "1").is_ok() {
                return;
            }
        }
        for pid in self.pids(rel) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }

    /// Removes `rel` (deepest first). Fails while processes remain.
    pub fn remove(&self, rel: &str) -> io::Result<()> {
        let mut result = Ok(());
        for d in self.dirs(rel) {
            if let Err(e) = remove_tree(&d) {
                result = Err(e);
            }
        }
        result
    }

    /// The OOM kill counter of `rel` (`oom_kill` in v1 `memory.oom_control`, v2 `memory.events`).
    pub fn oom_kills(&self, rel: &str) -> Option<u64> {
        let file = match self {
            Cgroups::V1(_) => self.v1_dir("memory", rel)?.join("memory.oom_control"),
            Cgroups::V2(root) => root.join(rel).join("memory.events"),
            Cgroups::None => return None,
        };
        keyed(&fs::read_to_string(file).ok()?, "oom_kill")
    }

    pub fn stats(&self, rel: &str) -> ContainerStats {
        match self {
            Cgroups::V1(_) => {
                let cpu = self
                    .v1_dir("cpuacct", rel)
                    .and_then(|d| fs::read_to_string(d.join("cpuacct.usage")).ok())
                    .and_then(|s| s.trim().parse().ok());
                let mem = self.v1_dir("memory", rel).and_then(|d| {
                    let usage: u64 = fs::read_to_string(d.join("memory.usage_in_bytes"))
                        .ok()?
                        .trim()
                        .parse()
                        .ok()?;
                    let inactive = fs::read_to_string(d.join("memory.stat"))
                        .ok()
                        .and_then(|s| keyed(&s, "total_inactive_file"))
                        .unwrap_or(0);
                    Some(usage.saturating_sub(inactive))
                });
                ContainerStats {
                    cpu_usage_nanos: cpu,
                    memory_working_set_bytes: mem,
                }
            }
            Cgroups::V2(root) => {
                let d = root.join(rel);
                let cpu = fs::read_to_string(d.join("cpu.stat"))
                    .ok()
                    .and_then(|s| keyed(&s, "usage_usec"))
                    .map(|us| us * 1000);
                let mem = fs::read_to_string(d.join("memory.current"))
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .map(|usage| {
                        let inactive = fs::read_to_string(d.join("memory.stat"))
                            .ok()
                            .and_then(|s| keyed(&s, "inactive_file"))
                            .unwrap_or(0);
                        usage.saturating_sub(inactive)
                    });
                ContainerStats {
                    cpu_usage_nanos: cpu,
                    memory_working_set_bytes: mem,
                }
            }
            Cgroups::None => ContainerStats::default(),
        }
    }
}

/// The kubelet's `MilliCPUToShares`.
fn millis_to_shares(m: u64) -> u64 {
    (m * 1024 / 1000).clamp(2, 262144)
}

fn enable_v2_controllers(dir: &Path) {
    let available = fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    for c in V2_CONTROLLERS {
        if available.split_whitespace().any(|a| a == *c)
            && let Err(e) = write(&dir.join("cgroup.subtree_control"), &format!("+{c}"))
        {
            tracing::debug!(dir = %dir.display(), controller = c, error = %e, "enable controller");
        }
    }
}

fn collect_pids(dir: &Path, out: &mut Vec<i32>) {
    if let Ok(s) = fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(s.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_pids(&e.path(), out);
            }
        }
    }
}

fn remove_tree(dir: &Path) -> io::Result<()> {
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path())?;
            }
        }
    }
    match fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    fs::write(path, value).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("write {value} to {}: {e}", path.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_v1_hybrid_and_v2() {
        let hybrid = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
        match Cgroups::from_mountinfo(hybrid) {
            Cgroups::V1(m) => {
                assert_eq!(
                    m,
                    vec![
                        (
                            "cpu".to_string(),
                            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")
                        ),
                        (
                            "cpuacct".to_string(),
                            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")
                        ),
                        ("memory".to_string(), PathBuf::from("/sys/fs/cgroup/memory")),
                        ("pids".to_string(), PathBuf::from("/sys/fs/cgroup/pids")),
                    ]
                );
                // Co-mounted controllers share one directory.
                let c = Cgroups::V1(m);
                assert_eq!(c.dirs("kumo/x").len(), 3);
            }
            other => panic!("{other:?}"),
        }
        let unified = "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw,nsdelegate
";
        assert!(matches!(
            Cgroups::from_mountinfo(unified),
            Cgroups::V2(p) if p == Path::new("/sys/fs/cgroup")
        ));
        assert!(matches!(Cgroups::from_mountinfo(""), Cgroups::None));
    }

    #[test]
    fn shares_and_keyed_files() {
        assert_eq!(millis_to_shares(0), 2);
        assert_eq!(millis_to_shares(100), 102);
        assert_eq!(millis_to_shares(1000), 1024);
        assert_eq!(
            keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n", "oom_kill"),
            Some(3)
        );
        assert_eq!(
            keyed("low 0\nhigh 0\nmax 1\noom 1\noom_kill 1\n", "oom_kill"),
            Some(1)
        );
    }
}
