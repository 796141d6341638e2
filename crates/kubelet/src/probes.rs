//! Container probes like upstream's prober: one task per (container attempt, probe kind).
//! The startup probe gates liveness and readiness; liveness failing `failureThreshold` times
//! asks the pod worker to restart the container; readiness flips the container's `ready`.
//! exec runs through `Runtime::exec_sync`, httpGet/tcpSocket go to the pod IP (HTTP/1.1
//! written by hand: a probe is one request, status 200–399 is success).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, HTTPGetAction, Pod, Probe, TCPSocketAction};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::context::NodeCtx;
use crate::events;

/// What the probes of one container attempt concluded so far.
#[derive(Debug, Default, Clone)]
pub struct ProbeState {
    /// Startup probe passed (or there is none).
    pub started: bool,
    /// Readiness probe passing (or there is none, once started).
    pub ready: bool,
    /// Liveness probe failed `failureThreshold` times: the message for the restart.
    pub liveness_failed: Option<String>,
    /// Startup probe failed `failureThreshold` times.
    pub startup_failed: Option<String>,
}

/// The probe tasks of one container attempt; dropping it stops them.
#[derive(Debug)]
pub struct ProbeHandle {
    pub container_id: String,
    state: Arc<Mutex<ProbeState>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for ProbeHandle {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl ProbeHandle {
    pub fn state(&self) -> ProbeState {
        self.state.lock().clone()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Startup,
    Liveness,
    Readiness,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
        }
    }
}

/// Outcome of one probe run: `Err` holds the failure output.
pub type ProbeResult = Result<(), String>;

/// Everything a probe run needs about its target.
#[derive(Clone)]
pub struct Target {
    pub runtime: Arc<dyn kumo_runtime::Runtime>,
    pub container_id: String,
    pub pod_ip: String,
    pub container: Container,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("container_id", &self.container_id)
            .field("pod_ip", &self.pod_ip)
            .finish_non_exhaustive()
    }
}

fn resolve_port(c: &Container, port: &IntOrString) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("invalid port number: {n}")),
        IntOrString::String(s) => {
            if let Ok(n) = s.parse::<u16>() {
                return Ok(n);
            }
            c.ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(s.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .ok_or_else(|| format!("couldn't find port: {s} in {}", c.name))
        }
    }
}

/// A byte stream a probe request runs over (plain TCP or TLS).
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

/// The client configuration of HTTPS probes, built once.
fn insecure_tls() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: std::sync::OnceLock<Result<Arc<rustls::ClientConfig>, String>> =
        std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            kumo_auth::tls::client_config_unverified_server(None)
                .map(Arc::new)
                .map_err(|e| e.to_string())
        })
        .clone()
}

/// One HTTP GET; success is a status in 200..400.
pub async fn http_get(t: &Target, action: &HTTPGetAction, timeout: Duration) -> ProbeResult {
    let port = resolve_port(&t.container, &action.port)?;
    let host = action
        .host
        .clone()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| t.pod_ip.clone());
    let scheme = action.scheme.as_deref().unwrap_or("HTTP");
    let path = action.path.clone().unwrap_or_else(|| "/".into());
    let path = if path.starts_with('/') {
        path
    } else {
        format!("/{path}")
    };
    let url = format!("{}://{host}:{port}{path}", scheme.to_lowercase());
    let https = scheme.eq_ignore_ascii_case("HTTPS");
    let run = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("Get \"{url}\": dial tcp {host}:{port}: {e}"))?;
        let mut stream: Box<dyn Stream> = if https {
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|e| format!("Get \"{url}\": {e}"))?;
            let tls = tokio_rustls::TlsConnector::from(insecure_tls()?)
                .connect(name, tcp)
                .await
                .map_err(|e| format!("Get \"{url}\": {e}"))?;
            Box::new(tls)
        } else {
            Box::new(tcp)
        };
        let mut req = format!("GET {path} HTTP/1.1\r\n");
        let mut has_host = false;
        let mut has_ua = false;
        let mut has_accept = false;
        for h in action.http_headers.iter().flatten() {
            has_host |= h.name.eq_ignore_ascii_case("host");
            has_ua |= h.name.eq_ignore_ascii_case("user-agent");
            has_accept |= h.name.eq_ignore_ascii_case("accept");
            req.push_str(&format!("{}: {}\r\n", h.name, h.value));
        }
        if !has_host {
            req.push_str(&format!("Host: {host}:{port}\r\n"));
        }
        if !has_ua {
            req.push_str("User-Agent: kube-probe/1.33\r\n");
        }
        if !has_accept {
            req.push_str("Accept: */*\r\n");
        }
        req.push_str("Connection: close\r\n\r\n");
        stream
            .write_all(req.as_bytes())
            .await
            .map_err(|e| format!("Get \"{url}\": {e}"))?;
        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 1024];
        // The status line is all a probe needs; read until it is complete.
        while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < 64 * 1024 {
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|e| format!("Get \"{url}\": {e}"))?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let line = String::from_utf8_lossy(&buf);
        let code: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("Get \"{url}\": malformed HTTP response"))?;
        if (200..400).contains(&code) {
            Ok(())
        } else {
            Err(format!("HTTP probe failed with statuscode: {code}"))
        }
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "Get \"{url}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        )),
    }
}

async fn tcp(t: &Target, action: &TCPSocketAction, timeout: Duration) -> ProbeResult {
    let port = resolve_port(&t.container, &action.port)?;
    let host = action
        .host
        .clone()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| t.pod_ip.clone());
    match tokio::time::timeout(
        timeout,
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("dial tcp {host}:{port}: {e}")),
        Err(_) => Err(format!("dial tcp {host}:{port}: i/o timeout")),
    }
}

/// Runs an exec command in the container; exit 0 is success.
pub async fn exec(t: &Target, cmd: &[String], timeout: Duration) -> ProbeResult {
    match t.runtime.exec_sync(&t.container_id, cmd, timeout).await {
        Ok(out) if out.exit_code == 0 => Ok(()),
        Ok(out) => {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            if text.trim().is_empty() {
                Err(format!("command {cmd:?} exited with {}", out.exit_code))
            } else {
                Err(text)
            }
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Runs `probe` once.
pub async fn run_once(t: &Target, probe: &Probe) -> ProbeResult {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    if let Some(e) = &probe.exec {
        exec(t, e.command.as_deref().unwrap_or(&[]), timeout).await
    } else if let Some(h) = &probe.http_get {
        http_get(t, h, timeout).await
    } else if let Some(s) = &probe.tcp_socket {
        tcp(t, s, timeout).await
    } else if probe.grpc.is_some() {
        Err("gRPC probes are not supported by kumo's kubelet".into())
    } else {
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
async fn probe_loop(
    kind: Kind,
    probe: Probe,
    target: Target,
    state: Arc<Mutex<ProbeState>>,
    mut started: tokio::sync::watch::Receiver<bool>,
    started_tx: Arc<tokio::sync::watch::Sender<bool>>,
    wake: Arc<Notify>,
    ctx: Arc<NodeCtx>,
    pod: Arc<Pod>,
) {
    let started_at = tokio::time::Instant::now();
    if kind != Kind::Startup && started.wait_for(|s| *s).await.is_err() {
        return;
    }
    let initial = Duration::from_secs(probe.initial_delay_seconds.unwrap_or(0).max(0) as u64);
    tokio::time::sleep_until(started_at + initial).await;
    let period = Duration::from_secs(probe.period_seconds.unwrap_or(10).max(1) as u64);
    let success_threshold = probe.success_threshold.unwrap_or(1).max(1);
    let failure_threshold = probe.failure_threshold.unwrap_or(3).max(1);
    let mut successes = 0;
    let mut failures = 0;
    loop {
        let result = if ctx.shared.sim {
            Ok(())
        } else {
            run_once(&target, &probe).await
        };
        match result {
            Ok(()) => {
                failures = 0;
                successes += 1;
                if successes >= success_threshold {
                    match kind {
                        Kind::Startup => {
                            state.lock().started = true;
                            let _ = started_tx.send(true);
                            wake.notify_one();
                            return;
                        }
                        Kind::Readiness => {
                            let changed = {
                                let mut s = state.lock();
                                let was = s.ready;
                                s.ready = true;
                                !was
                            };
                            if changed {
                                wake.notify_one();
                            }
                        }
                        Kind::Liveness => {}
                    }
                }
            }
            Err(msg) => {
                successes = 0;
                failures += 1;
                ctx.recorder.pod(
                    &pod,
                    Some(&target.container.name),
                    events::WARNING,
                    "Unhealthy",
                    format!("{} probe failed: {}", kind.name(), msg.trim_end()),
                );
                if failures >= failure_threshold {
                    match kind {
                        Kind::Startup => {
                            state.lock().startup_failed = Some(msg);
                            wake.notify_one();
                            return;
                        }
                        Kind::Liveness => {
                            state.lock().liveness_failed = Some(msg);
                            wake.notify_one();
                            return;
                        }
                        Kind::Readiness => {
                            let changed = {
                                let mut s = state.lock();
                                let was = s.ready;
                                s.ready = false;
                                was
                            };
                            if changed {
                                wake.notify_one();
                            }
                        }
                    }
                }
            }
        }
        tokio::time::sleep(period).await;
    }
}

/// Starts the probes of a container attempt that just started.
pub fn spawn(
    ctx: &Arc<NodeCtx>,
    pod: &Arc<Pod>,
    target: Target,
    wake: &Arc<Notify>,
) -> ProbeHandle {
    let c = target.container.clone();
    let has_startup = c.startup_probe.is_some();
    let state = Arc::new(Mutex::new(ProbeState {
        started: !has_startup,
        ready: c.readiness_probe.is_none(),
        liveness_failed: None,
        startup_failed: None,
    }));
    let (tx, rx) = tokio::sync::watch::channel(!has_startup);
    let tx = Arc::new(tx);
    let mut tasks = Vec::new();
    for (kind, probe) in [
        (Kind::Startup, c.startup_probe.clone()),
        (Kind::Liveness, c.liveness_probe.clone()),
        (Kind::Readiness, c.readiness_probe.clone()),
    ] {
        if let Some(p) = probe {
            tasks.push(tokio::spawn(probe_loop(
                kind,
                p,
                target.clone(),
                state.clone(),
                rx.clone(),
                tx.clone(),
                wake.clone(),
                ctx.clone(),
                pod.clone(),
            )));
        }
    }
    ProbeHandle {
        container_id: target.container_id,
        state,
        tasks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ContainerPort;

    fn target(port: u16) -> Target {
        Target {
            runtime: Arc::new(kumo_runtime::sim::SimRuntime::new(false)),
            container_id: "x".into(),
            pod_ip: "127.0.0.1".into(),
            container: Container {
                name: "c".into(),
                ports: Some(vec![ContainerPort {
                    name: Some("web".into()),
                    container_port: i32::from(port),
                    ..Default::default()
                }]),
                ..Default::default()
            },
        }
    }

    /// Answers one request per connection with `status`.
    async fn serve(listener: tokio::net::TcpListener, status: u16, tls: bool) {
        let acceptor = tls.then(|| {
            let key = rcgen::KeyPair::generate().expect("key");
            let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
                .expect("params")
                .self_signed(&key)
                .expect("cert");
            let config = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .expect("config");
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let mut s: Box<dyn Stream> = match acceptor {
                    Some(a) => match a.accept(tcp).await {
                        Ok(t) => Box::new(t),
                        Err(_) => return,
                    },
                    None => Box::new(tcp),
                };
                let mut buf = [0u8; 2048];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(
                        format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n").as_bytes(),
                    )
                    .await;
                let _ = s.shutdown().await;
            });
        }
    }

    #[tokio::test]
    async fn http_and_https_probes() {
        for (status, tls, ok) in [(200, false, true), (503, false, false), (204, true, true)] {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let port = l.local_addr().expect("addr").port();
            tokio::spawn(serve(l, status, tls));
            let action = HTTPGetAction {
                port: IntOrString::String("web".into()),
                scheme: tls.then(|| "HTTPS".to_string()),
                path: Some("/healthz".into()),
                ..Default::default()
            };
            let r = http_get(&target(port), &action, Duration::from_secs(5)).await;
            assert_eq!(r.is_ok(), ok, "status {status} tls {tls}: {r:?}");
            if !ok {
                assert_eq!(r, Err("HTTP probe failed with statuscode: 503".to_string()));
            }
        }
        // Nothing listening: a dial error naming the address.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = l.local_addr().expect("addr").port();
        drop(l);
        let tcp = TCPSocketAction {
            port: IntOrString::Int(i32::from(port)),
            host: None,
        };
        let r = super::tcp(&target(port), &tcp, Duration::from_secs(2)).await;
        assert!(r.is_err_and(|e| e.contains(&format!("127.0.0.1:{port}"))));
    }
}
