//! `sim`: a runtime that runs nothing. Hollow nodes for scale tests push real pods through the
//! real kubelet state machine (sandbox → containers → status) while the "containers" are rows
//! in a map: images are always present, sandboxes get fake pod IPs (`10.244.0.0/14`),
//! containers go Created → Running at once and exit only when the kubelet stops them — or
//! after the `sim.kumo.io/exit-after` duration (`5s`, `500ms`) the kubelet copies from the pod's
//! annotations, with `sim.kumo.io/exit-code` (default 0), so tests can drive
//! Succeeded/Failed and restart policies without real processes.
//!
//! One `SimRuntime` serves every hollow node of a `--sim-nodes` process, so per-container state
//! is kept small (no per-container task or timer: exits are computed when asked).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::{
    ContainerConfig, ContainerState, ContainerStatus, ExecOutput, ExecRequest, ImageInfo, Result,
    Runtime, RuntimeError, RuntimeVersion, SandboxConfig, SandboxState, SandboxStatus,
    StreamTarget,
};

/// Annotation (pod or container) asking a sim container to exit this long after it started.
pub const EXIT_AFTER_ANNOTATION: &str = "sim.kumo.io/exit-after";
/// Annotation with the exit code a sim container exits with (default 0).
pub const EXIT_CODE_ANNOTATION: &str = "sim.kumo.io/exit-code";

#[derive(Debug)]
struct Sandbox {
    pod_uid: String,
    ready: bool,
    ip: String,
}

#[derive(Debug)]
struct Container {
    sandbox: String,
    name: String,
    attempt: u32,
    image: String,
    log_path: PathBuf,
    created_at: jiff::Timestamp,
    started_at: Option<jiff::Timestamp>,
    finished_at: Option<jiff::Timestamp>,
    exit_code: Option<i32>,
    reason: Option<&'static str>,
    exit_after: Option<(Duration, i32)>,
}

impl Container {
    /// Applies a due `exit-after` exit, then reports the state.
    fn settle(&mut self, now: jiff::Timestamp) {
        if let (Some(started), None, Some((after, code))) =
            (self.started_at, self.finished_at, self.exit_after)
        {
            let due = started
                .checked_add(jiff::SignedDuration::try_from(after).unwrap_or_default())
                .unwrap_or(started);
            if due <= now {
                self.finished_at = Some(due);
                self.exit_code = Some(code);
                self.reason = Some(if code == 0 { "Completed" } else { "Error" });
            }
        }
    }

    fn state(&self) -> ContainerState {
        match (self.started_at, self.finished_at) {
            (_, Some(_)) => ContainerState::Exited,
            (Some(_), None) => ContainerState::Running,
            (None, None) => ContainerState::Created,
        }
    }

    fn status(&self, id: &str) -> ContainerStatus {
        ContainerStatus {
            id: id.to_string(),
            name: self.name.clone(),
            attempt: self.attempt,
            state: self.state(),
            created_at: Some(self.created_at),
            started_at: self.started_at,
            finished_at: self.finished_at,
            exit_code: self.exit_code,
            reason: self.reason.map(str::to_string),
            message: None,
            image: self.image.clone(),
            image_id: sim_image_id(&self.image),
            log_path: self.log_path.clone(),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    sandboxes: HashMap<String, Sandbox>,
    containers: HashMap<String, Container>,
    /// Every image a container was created from: `list_images` is called by every hollow
    /// node's status loop, so it must not walk the containers.
    images: std::collections::BTreeSet<String>,
}

/// The in-memory runtime. Cheap to share (`Arc<SimRuntime>`) across thousands of nodes.
#[derive(Debug)]
pub struct SimRuntime {
    state: Mutex<State>,
    next_id: AtomicU64,
    next_ip: AtomicU64,
    write_logs: bool,
}

impl Default for SimRuntime {
    fn default() -> Self {
        Self::new(true)
    }
}

/// A stable fake content id for an image name.
fn sim_image_id(image: &str) -> String {
    // FNV-1a, twice, for 128 hex-ish bits: stable across processes without a hash crate.
    let mut a: u64 = 0xcbf2_9ce4_8422_2325;
    let mut b: u64 = 0x8422_2325_cbf2_9ce4;
    for byte in image.bytes() {
        a = (a ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        b = (b ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3 ^ 0x10);
    }
    format!("sha256:{a:016x}{b:016x}{a:016x}{b:016x}")
}

fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim();
    let (num, unit) = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((t, "s"), |i| t.split_at(i));
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

impl SimRuntime {
    /// `write_logs`: write the one-line log file of each container (off for very large
    /// hollow clusters, where 100k small files are only a cost).
    pub fn new(write_logs: bool) -> Self {
        SimRuntime {
            state: Mutex::new(State::default()),
            next_id: AtomicU64::new(1),
            next_ip: AtomicU64::new(2),
            write_logs,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind: keep serving it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn new_id(&self) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{n:016x}{:048x}", n.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    fn new_ip(&self) -> String {
        // 10.244.0.0/14 minus network/broadcast-looking addresses.
        loop {
            let n = self.next_ip.fetch_add(1, Ordering::Relaxed) % (1 << 18);
            let last = n & 0xff;
            if last == 0 || last == 255 {
                continue;
            }
            let addr = (10u32 << 24) | (244u32 << 16) | n as u32;
            return std::net::Ipv4Addr::from(addr).to_string();
        }
    }

    /// Number of containers currently held (running or not); for tests and metrics.
    pub fn container_count(&self) -> usize {
        self.lock().containers.len()
    }
}

#[async_trait::async_trait]
impl Runtime for SimRuntime {
    async fn version(&self) -> Result<RuntimeVersion> {
        Ok(RuntimeVersion {
            name: "sim".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        })
    }

    async fn ensure_image(&self, image: &str) -> Result<ImageInfo> {
        Ok(ImageInfo {
            id: sim_image_id(image),
            names: vec![image.to_string()],
            size_bytes: 1 << 20,
            ..Default::default()
        })
    }

    async fn list_images(&self) -> Result<Vec<ImageInfo>> {
        let names: Vec<String> = self.lock().images.iter().cloned().collect();
        Ok(names
            .into_iter()
            .map(|n| ImageInfo {
                id: sim_image_id(&n),
                names: vec![n],
                size_bytes: 1 << 20,
                ..Default::default()
            })
            .collect())
    }

    async fn run_sandbox(&self, config: &SandboxConfig) -> Result<String> {
        let id = self.new_id();
        let ip = if config.host_network {
            "127.0.0.1".to_string()
        } else {
            self.new_ip()
        };
        self.lock().sandboxes.insert(
            id.clone(),
            Sandbox {
                pod_uid: config.pod_uid.clone(),
                ready: true,
                ip,
            },
        );
        Ok(id)
    }

    async fn stop_sandbox(&self, sandbox_id: &str) -> Result<()> {
        let now = jiff::Timestamp::now();
        let mut st = self.lock();
        if let Some(s) = st.sandboxes.get_mut(sandbox_id) {
            s.ready = false;
        }
        for c in st.containers.values_mut() {
            if c.sandbox == sandbox_id {
                c.settle(now);
                if c.state() == ContainerState::Running {
                    c.finished_at = Some(now);
                    c.exit_code = Some(137);
                    c.reason = Some("Error");
                }
            }
        }
        Ok(())
    }

    async fn remove_sandbox(&self, sandbox_id: &str) -> Result<()> {
        let mut st = self.lock();
        st.sandboxes.remove(sandbox_id);
        st.containers.retain(|_, c| c.sandbox != sandbox_id);
        Ok(())
    }

    async fn sandbox_status(&self, sandbox_id: &str) -> Result<SandboxStatus> {
        let st = self.lock();
        let s = st
            .sandboxes
            .get(sandbox_id)
            .ok_or_else(|| RuntimeError::NotFound(format!("sandbox {sandbox_id}")))?;
        Ok(SandboxStatus {
            id: sandbox_id.to_string(),
            state: if s.ready {
                SandboxState::Ready
            } else {
                SandboxState::NotReady
            },
            ip: Some(s.ip.clone()),
        })
    }

    async fn list_sandboxes(&self) -> Result<Vec<(String, SandboxStatus)>> {
        let st = self.lock();
        Ok(st
            .sandboxes
            .iter()
            .map(|(id, s)| {
                (
                    s.pod_uid.clone(),
                    SandboxStatus {
                        id: id.clone(),
                        state: if s.ready {
                            SandboxState::Ready
                        } else {
                            SandboxState::NotReady
                        },
                        ip: Some(s.ip.clone()),
                    },
                )
            })
            .collect())
    }

    async fn create_container(
        &self,
        sandbox_id: &str,
        config: &ContainerConfig,
        _sandbox: &SandboxConfig,
    ) -> Result<String> {
        let exit_after = config
            .annotations
            .get(EXIT_AFTER_ANNOTATION)
            .and_then(|d| parse_duration(d))
            .map(|d| {
                let code = config
                    .annotations
                    .get(EXIT_CODE_ANNOTATION)
                    .and_then(|c| c.trim().parse().ok())
                    .unwrap_or(0);
                (d, code)
            });
        let id = self.new_id();
        let mut st = self.lock();
        if !st.sandboxes.get(sandbox_id).is_some_and(|s| s.ready) {
            return Err(RuntimeError::NotFound(format!(
                "sandbox {sandbox_id} is not ready"
            )));
        }
        if !st.images.contains(&config.image) {
            st.images.insert(config.image.clone());
        }
        st.containers.insert(
            id.clone(),
            Container {
                sandbox: sandbox_id.to_string(),
                name: config.name.clone(),
                attempt: config.attempt,
                image: config.image.clone(),
                log_path: config.log_path.clone(),
                created_at: jiff::Timestamp::now(),
                started_at: None,
                finished_at: None,
                exit_code: None,
                reason: None,
                exit_after,
            },
        );
        Ok(id)
    }

    async fn start_container(&self, container_id: &str) -> Result<()> {
        let now = jiff::Timestamp::now();
        let log = {
            let mut st = self.lock();
            let c = st
                .containers
                .get_mut(container_id)
                .ok_or_else(|| RuntimeError::NotFound(format!("container {container_id}")))?;
            if c.started_at.is_some() {
                return Err(RuntimeError::Invalid(format!(
                    "container {container_id} was already started"
                )));
            }
            c.started_at = Some(now);
            (self.write_logs && !c.log_path.as_os_str().is_empty()).then(|| {
                (
                    c.log_path.clone(),
                    format!(
                        "{} stdout F sim container {} (attempt {}) started from image {}\n",
                        now, c.name, c.attempt, c.image
                    ),
                )
            })
        };
        if let Some((path, line)) = log {
            if let Some(dir) = path.parent() {
                tokio::fs::create_dir_all(dir).await?;
            }
            tokio::fs::write(&path, line).await?;
        }
        Ok(())
    }

    async fn stop_container(&self, container_id: &str, _timeout: Duration) -> Result<()> {
        let now = jiff::Timestamp::now();
        let mut st = self.lock();
        let Some(c) = st.containers.get_mut(container_id) else {
            return Ok(());
        };
        c.settle(now);
        match c.state() {
            ContainerState::Running => {
                // A hollow process "handles" SIGTERM at once and exits like a shell killed by
                // it would: 128 + 15.
                c.finished_at = Some(now);
                c.exit_code = Some(143);
                c.reason = Some("Error");
            }
            ContainerState::Created => {
                c.finished_at = Some(now);
                c.exit_code = Some(0);
            }
            _ => {}
        }
        Ok(())
    }

    async fn remove_container(&self, container_id: &str) -> Result<()> {
        self.lock().containers.remove(container_id);
        Ok(())
    }

    async fn container_status(&self, container_id: &str) -> Result<ContainerStatus> {
        let now = jiff::Timestamp::now();
        let mut st = self.lock();
        let c = st
            .containers
            .get_mut(container_id)
            .ok_or_else(|| RuntimeError::NotFound(format!("container {container_id}")))?;
        c.settle(now);
        Ok(c.status(container_id))
    }

    async fn list_containers(&self, sandbox_id: &str) -> Result<Vec<ContainerStatus>> {
        let now = jiff::Timestamp::now();
        let mut st = self.lock();
        Ok(st
            .containers
            .iter_mut()
            .filter(|(_, c)| c.sandbox == sandbox_id)
            .map(|(id, c)| {
                c.settle(now);
                c.status(id)
            })
            .collect())
    }

    async fn exec_sync(
        &self,
        container_id: &str,
        _cmd: &[String],
        _timeout: Duration,
    ) -> Result<ExecOutput> {
        let now = jiff::Timestamp::now();
        let mut st = self.lock();
        let c = st
            .containers
            .get_mut(container_id)
            .ok_or_else(|| RuntimeError::NotFound(format!("container {container_id}")))?;
        c.settle(now);
        if c.state() != ContainerState::Running {
            return Err(RuntimeError::Invalid(format!(
                "container {container_id} is not running"
            )));
        }
        Ok(ExecOutput::default())
    }

    async fn exec(&self, container_id: &str, _request: &ExecRequest) -> Result<StreamTarget> {
        Err(RuntimeError::Invalid(format!(
            "the sim runtime cannot exec into container {container_id}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn container_lifecycle_and_exit_after() {
        let rt = SimRuntime::new(false);
        let sb = rt
            .run_sandbox(&SandboxConfig {
                pod_uid: "u1".into(),
                ..Default::default()
            })
            .await
            .expect("sandbox");
        let st = rt.sandbox_status(&sb).await.expect("status");
        assert_eq!(st.state, SandboxState::Ready);
        assert!(st.ip.as_deref().is_some_and(|ip| ip.starts_with("10.24")));
        let mut cfg = ContainerConfig {
            name: "c".into(),
            image: "busybox".into(),
            ..Default::default()
        };
        cfg.annotations
            .insert(EXIT_AFTER_ANNOTATION.into(), "0s".into());
        cfg.annotations
            .insert(EXIT_CODE_ANNOTATION.into(), "3".into());
        let id = rt
            .create_container(&sb, &cfg, &SandboxConfig::default())
            .await
            .expect("create");
        assert_eq!(
            rt.container_status(&id).await.expect("st").state,
            ContainerState::Created
        );
        rt.start_container(&id).await.expect("start");
        let s = rt.container_status(&id).await.expect("st");
        assert_eq!(s.state, ContainerState::Exited);
        assert_eq!(s.exit_code, Some(3));
        assert_eq!(rt.list_sandboxes().await.expect("list")[0].0, "u1");
        rt.stop_sandbox(&sb).await.expect("stop");
        rt.remove_sandbox(&sb).await.expect("remove");
        assert_eq!(rt.container_count(), 0);
    }

    #[tokio::test]
    async fn stop_running_container() {
        let rt = SimRuntime::new(false);
        let sb = rt
            .run_sandbox(&SandboxConfig::default())
            .await
            .expect("sandbox");
        let cfg = ContainerConfig {
            name: "c".into(),
            ..Default::default()
        };
        let id = rt
            .create_container(&sb, &cfg, &SandboxConfig::default())
            .await
            .expect("create");
        rt.start_container(&id).await.expect("start");
        assert_eq!(
            rt.container_status(&id).await.expect("st").state,
            ContainerState::Running
        );
        rt.exec_sync(&id, &[], Duration::from_secs(1))
            .await
            .expect("exec");
        rt.stop_container(&id, Duration::from_secs(1))
            .await
            .expect("stop");
        let s = rt.container_status(&id).await.expect("st");
        assert_eq!(s.state, ContainerState::Exited);
        assert_eq!(s.exit_code, Some(143));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
    }
}
