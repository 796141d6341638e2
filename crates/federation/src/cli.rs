//! Flags of `kumo federation`, `kumo join` and `kumo unjoin` (the binary only wires them).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::anyhow;
use clap::Args;

use crate::{FederationConfig, JoinOptions};

/// `kumo federation`.
#[derive(Args, Debug, Clone)]
pub struct FederationFlags {
    /// Admin kubeconfig of the federation host apiserver.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: PathBuf,
    /// Seconds between member health probes.
    #[arg(long, default_value_t = 10)]
    pub health_interval_seconds: u64,
    /// Seconds between full resyncs: a safety net, since changes in the host and in the
    /// members (drift, status) are handled as they happen.
    #[arg(long, default_value_t = 30)]
    pub resync_seconds: u64,
    /// Seconds a member may be NotReady before its replicas move to the others.
    #[arg(long, default_value_t = 60)]
    pub toleration_seconds: u64,
    /// Seconds a failed-over member must be Ready again before replicas move back.
    #[arg(long, default_value_t = 30)]
    pub failback_stable_seconds: u64,
    /// Workers per work queue: federated objects (and member probes) synced at once.
    #[arg(long, default_value_t = 16)]
    pub concurrent_syncs: usize,
    /// Address of `/metrics` and `/healthz` (`0` turns them off).
    #[arg(long, default_value = "127.0.0.1:10358")]
    pub metrics_bind_address: String,
    /// Log level (error, warn, info, debug, trace).
    #[arg(long, default_value = "info")]
    pub log_level: String,
}

impl FederationFlags {
    /// The controller's configuration. An unparsable `--metrics-bind-address` serves no
    /// metrics (and says so in the log).
    pub fn config(&self) -> FederationConfig {
        let metrics_bind_address = match self.metrics_bind_address.as_str() {
            "" | "0" => None,
            a => match a.parse() {
                Ok(addr) => Some(addr),
                Err(e) => {
                    tracing::warn!(address = a, error = %e, "--metrics-bind-address: not an address; metrics off");
                    None
                }
            },
        };
        FederationConfig {
            host_kubeconfig: self.kubeconfig.clone(),
            health_interval: Duration::from_secs(self.health_interval_seconds.max(1)),
            resync: Duration::from_secs(self.resync_seconds.max(1)),
            toleration: Duration::from_secs(self.toleration_seconds),
            failback_stable: Duration::from_secs(self.failback_stable_seconds),
            concurrent_syncs: self.concurrent_syncs.max(1),
            metrics_bind_address,
        }
    }
}

/// `kumo join NAME`.
#[derive(Args, Debug, Clone)]
pub struct JoinFlags {
    /// Name of the member cluster (the Cluster object).
    pub name: String,
    /// Kubeconfig with admin rights in the member (used once, never stored).
    #[arg(long)]
    pub kubeconfig: PathBuf,
    /// Context of the member kubeconfig (default: its current context).
    #[arg(long)]
    pub context: Option<String>,
    /// Admin kubeconfig of the federation host.
    #[arg(long)]
    pub host_kubeconfig: PathBuf,
    /// `kumo.io/provider` label (aws, gcp, baremetal, local …).
    #[arg(long)]
    pub provider: Option<String>,
    /// `topology.kubernetes.io/region` label.
    #[arg(long)]
    pub region: Option<String>,
    /// `topology.kubernetes.io/zone` label.
    #[arg(long)]
    pub zone: Option<String>,
    /// Extra labels, `key=value` (repeatable).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// API endpoint the host uses for the member (default: the member kubeconfig's server).
    #[arg(long)]
    pub api_endpoint: Option<String>,
}

impl JoinFlags {
    pub fn options(&self) -> anyhow::Result<JoinOptions> {
        let mut labels = BTreeMap::new();
        for l in &self.labels {
            let (k, v) = l
                .split_once('=')
                .ok_or_else(|| anyhow!("--label {l:?}: want key=value"))?;
            labels.insert(k.to_string(), v.to_string());
        }
        Ok(JoinOptions {
            name: self.name.clone(),
            member_kubeconfig: self.kubeconfig.clone(),
            member_context: self.context.clone(),
            host_kubeconfig: self.host_kubeconfig.clone(),
            provider: self.provider.clone(),
            region: self.region.clone(),
            zone: self.zone.clone(),
            labels,
            api_endpoint: self.api_endpoint.clone(),
        })
    }
}

/// `kumo unjoin NAME`.
#[derive(Args, Debug, Clone)]
pub struct UnjoinFlags {
    /// Name of the member cluster.
    pub name: String,
    /// Admin kubeconfig of the federation host.
    #[arg(long)]
    pub host_kubeconfig: PathBuf,
    /// Member kubeconfig: also remove the federation's ServiceAccount there (revokes its token).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Context of the member kubeconfig.
    #[arg(long)]
    pub context: Option<String>,
    /// How long to wait for `kumo federation` to remove what it propagated to the member
    /// (the Cluster's finalizer), e.g. `60s`, `2m`.
    #[arg(long, default_value = "60s", value_parser = parse_timeout)]
    pub timeout: std::time::Duration,
}

/// A duration like kubectl's `--timeout`: `60s`, `2m`, `1m30s` (jiff's friendly format).
fn parse_timeout(s: &str) -> Result<std::time::Duration, String> {
    let d: jiff::SignedDuration = s
        .parse()
        .map_err(|e| format!("{s:?} is not a duration like 60s or 2m: {e}"))?;
    std::time::Duration::try_from(d).map_err(|_| format!("{s:?} is negative"))
}

/// Runs `kumo join`; returns the line to print.
pub async fn join(flags: &JoinFlags) -> anyhow::Result<String> {
    let r = crate::join(&flags.options()?).await?;
    Ok(format!(
        "cluster {} joined ({}) in {} ms",
        flags.name,
        r.api_endpoint,
        r.elapsed.as_millis()
    ))
}

/// Runs `kumo unjoin`; returns the line to print.
pub async fn unjoin(flags: &UnjoinFlags) -> anyhow::Result<String> {
    crate::unjoin(
        &flags.name,
        &flags.host_kubeconfig,
        flags.kubeconfig.as_deref(),
        flags.context.as_deref(),
        flags.timeout,
    )
    .await?;
    Ok(format!("cluster {} unjoined", flags.name))
}

#[cfg(test)]
mod tests {
    use super::parse_timeout;
    use std::time::Duration;

    #[test]
    fn timeouts_read_like_kubectl() {
        assert_eq!(parse_timeout("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_timeout("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_timeout("1m30s"), Ok(Duration::from_secs(90)));
        assert!(parse_timeout("soon").is_err());
        assert!(parse_timeout("-5s").is_err());
    }
}
