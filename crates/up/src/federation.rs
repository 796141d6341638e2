//! The federation half of `kumo up --members N`: once the control planes serve, write the
//! user's kubeconfig with a context per control plane and join every member to the host.

use std::time::Duration;

use kumo_auth::kubeconfig::Kubeconfig;
use tokio::sync::watch;

use crate::{ClusterPlan, Role, UpConfig};

/// The user's kubeconfig of a federation: context `federation` (current) for the host and one
/// context per member, from the admin kubeconfigs the apiservers wrote.
pub fn merged_kubeconfig(cfg: &UpConfig) -> Result<Kubeconfig, kumo_auth::Error> {
    let mut merged = Kubeconfig {
        api_version: Some("v1".into()),
        kind: Some("Config".into()),
        ..Default::default()
    };
    for c in cfg.clusters() {
        merged.add_context_from(&c.name, &Kubeconfig::load(&c.admin_kubeconfig())?)?;
    }
    merged.current_context = Some("federation".into());
    Ok(merged)
}

/// Waits for every apiserver's admin kubeconfig, writes the merged kubeconfig, then joins the
/// members to the host (each retried until it succeeds, so start order does not matter).
pub(crate) async fn assemble(cfg: UpConfig, mut stop: watch::Receiver<bool>) {
    let clusters = cfg.clusters();
    loop {
        if clusters.iter().all(|c| c.admin_kubeconfig().exists()) {
            match merged_kubeconfig(&cfg).and_then(|kc| kc.write(&cfg.kubeconfig())) {
                Ok(()) => break,
                Err(e) => tracing::warn!(error = %e, "cannot write the federation kubeconfig yet"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = stop.changed() => return,
        }
    }
    tracing::info!(kubeconfig = %cfg.kubeconfig().display(), "wrote the federation kubeconfig");
    let Some(host) = clusters.iter().find(|c| c.role == Role::Host) else {
        return;
    };
    let joins = clusters
        .iter()
        .filter(|c| c.role == Role::Member)
        .map(|m| join_member(host, m, stop.clone()));
    futures::future::join_all(joins).await;
}

/// `kumo join <member> --provider local --region local-x`, retried with backoff.
async fn join_member(host: &ClusterPlan, member: &ClusterPlan, mut stop: watch::Receiver<bool>) {
    let opts = kumo_federation::JoinOptions {
        name: member.name.clone(),
        member_kubeconfig: member.admin_kubeconfig(),
        member_context: None,
        host_kubeconfig: host.admin_kubeconfig(),
        provider: Some("local".into()),
        region: member.region.clone(),
        zone: None,
        labels: Default::default(),
        api_endpoint: None,
    };
    let mut backoff = Duration::from_millis(200);
    let started = std::time::Instant::now();
    loop {
        tokio::select! {
            r = kumo_federation::join(&opts) => match r {
                Ok(report) => {
                    tracing::info!(member = %member.name, elapsed = ?report.elapsed, "member joined the federation");
                    return;
                }
                // Expected while the control planes start; worth a warning once it lasts.
                Err(e) if started.elapsed() < Duration::from_secs(30) => {
                    tracing::debug!(member = %member.name, error = %e, "join not possible yet")
                }
                Err(e) => tracing::warn!(member = %member.name, error = %e, "join failed; retrying"),
            },
            _ = stop.changed() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}
