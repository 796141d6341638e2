//! Facts about the machine for the Node object: capacity, identity, OS, and the pressure
//! signals behind MemoryPressure/DiskPressure/PIDPressure. Read from /proc, /sys and /etc;
//! every read has a fallback so the kubelet registers on odd machines too.

use std::path::Path;

/// Node identity and OS facts (`status.nodeInfo`).
#[derive(Debug, Clone, Default)]
pub struct MachineInfo {
    pub cpus: u64,
    pub memory_bytes: u64,
    pub machine_id: String,
    pub system_uuid: String,
    pub boot_id: String,
    pub kernel_version: String,
    pub os_image: String,
    pub architecture: String,
}

fn read_trim(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Kubernetes' `GOARCH` names.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// A `/proc/meminfo` field in bytes.
pub fn meminfo(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kb * 1024)
    })
}

impl MachineInfo {
    pub fn read() -> MachineInfo {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
        let machine_id = read_trim("/etc/machine-id")
            .or_else(|| read_trim("/var/lib/dbus/machine-id"))
            .unwrap_or_default();
        let os_image = std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|t| {
                t.lines().find_map(|l| {
                    l.strip_prefix("PRETTY_NAME=")
                        .map(|v| v.trim_matches('"').to_string())
                })
            })
            .unwrap_or_else(|| "Linux".into());
        MachineInfo {
            cpus,
            memory_bytes: meminfo("MemTotal").unwrap_or(0),
            system_uuid: read_trim("/sys/class/dmi/id/product_uuid")
                .unwrap_or_else(|| machine_id.clone()),
            machine_id,
            boot_id: read_trim("/proc/sys/kernel/random/boot_id").unwrap_or_default(),
            kernel_version: read_trim("/proc/sys/kernel/osrelease").unwrap_or_default(),
            os_image,
            architecture: go_arch().into(),
        }
    }
}

/// (capacity, available) bytes of the filesystem holding `path`.
pub fn fs_stats(path: &Path) -> Option<(u64, u64)> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    let frsize = st.fragment_size() as u64;
    Some((
        st.blocks() as u64 * frsize,
        st.blocks_available() as u64 * frsize,
    ))
}

/// (processes in use, pid_max).
pub fn pid_stats() -> Option<(u64, u64)> {
    let max: u64 = read_trim("/proc/sys/kernel/pid_max")?.parse().ok()?;
    let used = std::fs::read_dir("/proc")
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .count() as u64;
    Some((used, max))
}

/// The first non-loopback IPv4 address: the source address the kernel picks for an outside
/// destination (a connected UDP socket sends nothing), else 127.0.0.1.
pub fn default_node_ip() -> String {
    let probe = || -> std::io::Result<std::net::IpAddr> {
        let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
        s.connect("192.0.2.1:9")?;
        Ok(s.local_addr()?.ip())
    };
    match probe() {
        Ok(ip) if !ip.is_loopback() && !ip.is_unspecified() => ip.to_string(),
        _ => "127.0.0.1".into(),
    }
}

/// The host name (for `kubernetes.io/hostname` and the default node name), lowercased as
/// upstream does.
pub fn hostname() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .map(|h| h.to_lowercase())
        .unwrap_or_else(|| "localhost".into())
}

/// Nameservers and search domains of the host's /etc/resolv.conf.
pub fn host_resolv_conf() -> (Vec<String>, Vec<String>) {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let mut servers = Vec::new();
    let mut searches = Vec::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        match f.next() {
            Some("nameserver") => servers.extend(f.next().map(str::to_string)),
            Some("search") => searches = f.map(str::to_string).collect(),
            _ => {}
        }
    }
    (servers, searches)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_machine() {
        let m = MachineInfo::read();
        assert!(m.cpus >= 1);
        assert!(m.memory_bytes > 0);
        assert!(!m.kernel_version.is_empty());
        let (cap, avail) = fs_stats(Path::new("/")).expect("statvfs /");
        assert!(cap >= avail && cap > 0);
        let (used, max) = pid_stats().expect("pids");
        assert!(used > 0 && max > used);
        assert!(default_node_ip().parse::<std::net::Ipv4Addr>().is_ok());
    }
}
