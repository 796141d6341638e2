//! Pod networking for the process runtime, the way the CNI `bridge` + `host-local` plugins do
//! it: a Linux bridge `kumo0` with `10.88.0.1/16` on the host, one veth pair per pod sandbox
//! (host end on the bridge, `eth0` inside the pod's network namespace), addresses handed out
//! from files under a host-wide state directory (one file per address, created with
//! `O_EXCL`), so several kubelets on one host (`kumo up --nodes 2`) never hand out the same IP.
//!
//! Everything goes through `ip` (iproute2), one `ip -batch` per side: the host side here (veth
//! pair with its pod end moved into the namespace, host end on the bridge), the pod side
//! (loopback, `eth0` address, default route) by the sandbox's pause process, which is already
//! in the namespace (see [`Network::pod_side`]), so no code here runs in a foreign netns.

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

    /// The host side of a pod's network: an address, and a veth pair whose pod end is `eth0`
    /// in the network namespace of `pid` and whose host end is up on the bridge (one `ip`
    /// run). Returns (pod IP, host veth name); the pod side ([`Network::pod_side`]) is left to
    /// run inside the namespace, and [`Network::detach`] undoes both.
    pub async fn attach(
        &self,
        sandbox_id: &str,
        owner: &Path,
        pid: i32,
    ) -> io::Result<(Ipv4Addr, String)> {
        use std::sync::atomic::Ordering;
        if !self.bridge_ready.load(Ordering::SeqCst) {
            self.ensure_bridge().await?;
            self.bridge_ready.store(true, Ordering::SeqCst);
        }
        let addr = self.allocate(owner)?;
        let veth = veth_name(sandbox_id);
        let batch = format!(
            "link add {veth} type veth peer name eth0 netns {pid}\nlink set {veth} master {BRIDGE} up\n"
        );
        let mut result = ip_batch(&batch).await;
        if result
            .as_ref()
            .is_err_and(|e| e.to_string().contains("exists"))
        {
            // A leftover from a crashed start of the same sandbox id.
            let _ = ip(&["link", "del", &veth]).await;
            result = ip_batch(&batch).await;
        }
        match result {
            Ok(()) => Ok((addr, veth)),
            Err(e) => {
                self.attach_failed();
                let _ = ip(&["link", "del", &veth]).await;
                self.release(&addr.to_string(), owner);
                Err(e)
            }
        }
    }

    /// The `ip -batch` commands that configure the pod's side of the pair from inside its
    /// namespace: loopback and `eth0` up, the address, the default route via the bridge.
    pub fn pod_side(addr: Ipv4Addr) -> String {
        format!(
            "link set lo up\naddr add {addr}/{PREFIX} dev eth0\nlink set eth0 up\nroute add default via {GATEWAY}\n"
        )
    }

    /// After a failed attach: the bridge is checked again on the next one (someone may have
    /// deleted it).
    pub fn attach_failed(&self) {
        self.bridge_ready
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Deletes the host end (the pod end goes with it, or with its namespace) and frees the
    /// address.
    pub async fn detach(&self, ip_addr: Option<&str>, veth: Option<&str>, owner: &Path) {
        if let Some(v) = veth {
            let _ = ip(&["link", "del", v]).await;
        }
        if let Some(a) = ip_addr {
            self.release(a, owner);
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

/// `ip -batch -` on the host: the commands stop at the first that fails.
async fn ip_batch(batch: &str) -> io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut child = Command::new("ip")
        .args(["-batch", "-"])
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
            "ip -batch ({}): {}",
            batch.trim().replace('\n', "; "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
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
