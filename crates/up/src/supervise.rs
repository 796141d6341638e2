//! Keeping one component running: spawn, restart with exponential backoff, stop gracefully.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::Component;

fn spawn(exe: &Path, c: &Component) -> std::io::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&c.log)?;
    Command::new(exe)
        .args(&c.args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
}

/// Keeps one component running until `stop` fires; then stops it.
pub(crate) async fn supervise(
    exe: PathBuf,
    c: Component,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    if let Some(needed) = &c.needs {
        while !needed.exists() {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = stop.changed() => return,
            }
        }
    }
    let mut backoff = Duration::from_millis(250);
    loop {
        let started = Instant::now();
        let mut child = match spawn(&exe, &c) {
            Ok(ch) => ch,
            Err(e) => {
                tracing::error!(component = %c.name, error = %e, "cannot start component");
                return;
            }
        };
        tracing::info!(component = %c.name, pid = child.id(), log = %c.log.display(), "started");
        if let Some(pid) = child.id() {
            let _ = std::fs::write(&c.pid_file, pid.to_string());
        }
        tokio::select! {
            status = child.wait() => {
                let up = started.elapsed();
                if up > Duration::from_secs(30) {
                    backoff = Duration::from_millis(250);
                }
                tracing::warn!(component = %c.name, ?status, restart_in = ?backoff, "component exited; restarting");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            _ = stop.changed() => {
                terminate(&mut child, &c.name).await;
                return;
            }
        }
    }
}

/// SIGTERM, a grace period, then SIGKILL.
async fn terminate(child: &mut Child, name: &str) {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .is_ok()
        {
            tracing::info!(component = %name, "stopped");
            return;
        }
    }
    let _ = child.kill().await;
    tracing::warn!(component = %name, "killed after the grace period");
}
