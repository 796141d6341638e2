//! Pod networking for the process runtime, the way the CNI `bridge` + `host-local` plugins do
//! it: a Linux bridge `kumo0` with `10.88.0.1/16` on the host, one veth pair per pod sandbox
//! (host end on the bridge, `eth0` inside the pod's network namespace), addresses handed out
//! from files under a host-wide state directory (one file per address, created with
//! `O_EXCL`), so several kubelets on one host (`kumo up --nodes 2`) never hand out the same IP.
//!
//! Everything goes through `ip` (iproute2); commands inside a pod's namespace run through the
//! `kumo runtime-init nsexec` helper (setns + exec), so no code here runs in a foreign netns.

use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use tokio::process::Command;

pub const BRIDGE: &str = "kumo0";
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 1);
const PREFIX: u8 = 16;

#[derive(Debug, Clone)]
pub struct Network {
    /// Host-wide IPAM directory (default `/var/lib/kumo/network`).
    pub state_dir: PathBuf,
    /// The `kumo` binary (for `runtime-init nsexec`).
    pub helper: PathBuf,
    /// Set once the bridge was seen set up, so pod starts skip three `ip` runs; cleared
    /// when an attach fails (someone may have deleted the bridge).
    pub bridge_ready: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Network {
    /// Whether `ip` can run here at all.
    pub fn ip_available() -> bool {
        std::process::Command::new("ip")
            .arg("-V")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Creates the bridge if missing (idempotent, safe against a concurrent kubelet).
    pub async fn ensure_bridge(&self) -> io::Result<()> {
        if ip(&["link", "show", BRIDGE]).await.is_err()
            && let Err(e) = ip(&["link", "add", BRIDGE, "type", "bridge"]).await
            && !e.to_string().contains("exists")
        {
            return Err(e);
        }
        ip(&[
            "addr",
            "replace",
            &format!("{GATEWAY}/{PREFIX}"),
            "dev",
            BRIDGE,
        ])
        .await?;
        ip(&["link", "set", BRIDGE, "up"]).await?;
        Ok(())
    }

    /// Gives the namespace of `pid` an `eth0` on the bridge; returns (pod IP, host veth name).
    pub async fn attach(
        &self,
        sandbox_id: &str,
        owner: &Path,
        pid: i32,
    ) -> io::Result<(String, String)> {
        use std::sync::atomic::Ordering;
        if !self.bridge_ready.load(Ordering::SeqCst) {
            self.ensure_bridge().await?;
            self.bridge_ready.store(true, Ordering::SeqCst);
        }
        let addr = self.allocate(owner)?;
        let veth = veth_name(sandbox_id);
        let result = async {
            let pid_s = pid.to_string();
            let add = [
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &pid_s,
            ];
            if let Err(e) = ip(&add).await {
                if !e.to_string().contains("exists") {
                    return Err(e);
                }
                // A leftover from a crashed start of the same sandbox id.
                ip(&["link", "del", &veth]).await?;
                ip(&add).await?;
            }
            ip(&["link", "set", &veth, "master", BRIDGE, "up"]).await?;
            self.ip_batch_in(
                &format!("/proc/{pid}/ns/net"),
                &format!(
                    "addr add {addr}/{PREFIX} dev eth0\nlink set eth0 up\nroute add default via {GATEWAY}\n"
                ),
            )
            .await
        }
        .await;
        match result {
            Ok(()) => Ok((addr.to_string(), veth)),
            Err(e) => {
                self.bridge_ready.store(false, Ordering::SeqCst);
                let _ = ip(&["link", "del", &veth]).await;
                self.release(&addr.to_string(), owner);
                Err(e)
            }
        }
    }

    /// Deletes the host end (the pod end goes with its namespace) and frees the address.
    pub async fn detach(&self, ip_addr: Option<&str>, veth: Option<&str>, owner: &Path) {
        if let Some(v) = veth {
            let _ = ip(&["link", "del", v]).await;
        }
        if let Some(a) = ip_addr {
            self.release(a, owner);
        }
    }

    /// Runs `ip -batch -` inside a network namespace (one helper process for all commands).
    async fn ip_batch_in(&self, netns: &str, batch: &str) -> io::Result<()> {
        use tokio::io::AsyncWriteExt;
        let mut child = Command::new(&self.helper)
            .arg(super::SUBCOMMAND)
            .arg("nsexec")
            .arg(netns)
            .args(["ip", "-batch", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(batch.as_bytes()).await?;
        }
        let out = child.wait_with_output().await?;
        if out.status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "ip -batch in {netns} ({}): {}",
                batch.trim().replace('\n', "; "),
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }

    /// host-local style allocation: the first free address after the last one handed out.
    /// A file whose owner sandbox directory is gone is a leak from a crash and is reclaimed.
    fn allocate(&self, owner: &Path) -> io::Result<Ipv4Addr> {
        fs::create_dir_all(&self.state_dir)?;
        let last_file = self.state_dir.join("last_reserved_ip");
        let start = fs::read_to_string(&last_file)
            .ok()
            .and_then(|s| s.trim().parse::<Ipv4Addr>().ok())
            .map(u32::from)
            .unwrap_or(u32::from(GATEWAY));
        let base = u32::from(GATEWAY) & !((1u32 << (32 - PREFIX)) - 1);
        let size = 1u32 << (32 - PREFIX);
        let owner_text = owner.to_string_lossy().into_owned();
        for step in 1..size {
            let offset = (start - base + step) % size;
            // Skip network, gateway and broadcast addresses.
            if offset <= 1 || offset == size - 1 {
                continue;
            }
            let addr = Ipv4Addr::from(base + offset);
            let file = self.state_dir.join(addr.to_string());
            for _ in 0..2 {
                match fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&file)
                {
                    Ok(mut f) => {
                        io::Write::write_all(&mut f, owner_text.as_bytes())?;
                        let _ = fs::write(&last_file, addr.to_string());
                        return Ok(addr);
                    }
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        let holder = fs::read_to_string(&file).unwrap_or_default();
                        if !holder.is_empty() && !Path::new(holder.trim()).exists() {
                            tracing::info!(%addr, holder = holder.trim(), "reclaiming leaked pod IP");
                            let _ = fs::remove_file(&file);
                            continue;
                        }
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Err(io::Error::other("no free pod IP in 10.88.0.0/16"))
    }

    fn release(&self, addr: &str, owner: &Path) {
        let file = self.state_dir.join(addr);
        if fs::read_to_string(&file).is_ok_and(|h| h.trim() == owner.to_string_lossy()) {
            let _ = fs::remove_file(&file);
        }
    }
}

/// `kv` + 12 hex characters of the sandbox id (interface names are at most 15 bytes).
fn veth_name(sandbox_id: &str) -> String {
    let short: String = sandbox_id.chars().take(12).collect();
    format!("kv{short}")
}

async fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip").args(args).output().await?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// The host's primary IPv4 address (the source address of its default route), for
/// hostNetwork pods; `127.0.0.1` without one.
pub fn host_ip() -> String {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect("192.0.2.1:9")?;
            s.local_addr()
        })
        .map(|a| a.ip().to_string())
        .ok()
        .filter(|ip| ip != "0.0.0.0")
        .unwrap_or_else(|| "127.0.0.1".to_string())
}
