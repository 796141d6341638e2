//! `kumo kubelet` settings. Keys mirror the upstream kubelet's flags (kebab-case) where it has
//! them; every key can come from a flag, a `KUMO_*` variable or the `--config` file.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Everything `kumo_kubelet::run` needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct KubeletConfig {
    /// `--kubeconfig`: credentials to reach the apiserver (a `system:node:<name>` certificate;
    /// with `--sim-nodes` > 1 a credential allowed to write every hollow node, e.g. admin).
    pub kubeconfig: Option<PathBuf>,
    /// `--server`: apiserver URL to join with a bootstrap token (instead of `--kubeconfig`).
    pub server: Option<String>,
    /// `--bootstrap-token`: `<id>.<secret>` for the TLS bootstrap join.
    pub bootstrap_token: Option<String>,
    /// `--ca-cert-hash`: `sha256:<hex>` pin of the cluster CA for the join.
    pub ca_cert_hash: Option<String>,
    /// `--hostname-override` / `--node-name`: the Node name (default: the hostname).
    pub node_name: Option<String>,
    /// `--root-dir`: pods' volumes and state (`<root-dir>/pods/<uid>/…`).
    pub root_dir: PathBuf,
    /// `--pod-log-dir`: container logs (`<dir>/<ns>_<pod>_<uid>/<container>/<attempt>.log`);
    /// default `<root-dir>/pods-logs`.
    pub pod_log_dir: Option<PathBuf>,
    /// `--address`: where the kubelet API listens.
    pub address: String,
    /// `--port`: kubelet API port (`daemonEndpoints.kubeletEndpoint.Port`).
    pub port: u16,
    /// `--healthz-port`: plain-HTTP `/healthz` on 127.0.0.1 (0 = off).
    pub healthz_port: u16,
    /// `--node-ip`: the Node's InternalIP (default: the first non-loopback IPv4, else 127.0.0.1).
    pub node_ip: Option<String>,
    /// `--container-runtime`: `process`, `cri` or `sim`.
    pub container_runtime: String,
    /// `--container-runtime-endpoint` for `cri`.
    pub container_runtime_endpoint: String,
    /// `--image-store` of the `process` runtime (default `<root-dir>/images`).
    pub image_store: Option<PathBuf>,
    /// `--max-pods`.
    pub max_pods: u32,
    /// `--rotate-certificates`: renew the client certificate before it expires (default: on
    /// when the kubelet joined with a bootstrap token).
    pub rotate_certificates: Option<bool>,
    /// `--rotate-server-certificates` (serverTLSBootstrap): ask for a cluster-signed serving
    /// certificate with a `kubernetes.io/kubelet-serving` CSR (default: on when joined).
    pub rotate_server_certificates: Option<bool>,
    /// `--node-labels k=v,…` (added to the Node's labels).
    pub node_labels: Vec<String>,
    /// `--register-with-taints k=v:Effect,…`.
    pub register_with_taints: Vec<String>,
    /// `--system-reserved cpu=100m,memory=256Mi,…` (subtracted from capacity).
    pub system_reserved: Vec<String>,
    /// `--node-status-update-frequency` (e.g. `10s`).
    pub node_status_update_frequency: String,
    /// How often the node's Lease is renewed (`10s`).
    pub node_lease_renew_interval: String,
    /// `leaseDurationSeconds` of the node Lease (40 like upstream).
    pub node_lease_duration_seconds: i32,
    /// `--sync-frequency`: periodic resync of every pod (volumes, status), `10s`.
    pub sync_frequency: String,
    /// How often a pod's containers are polled for exits (upstream's PLEG relist period);
    /// `1s`, or the sync frequency with `sim`.
    pub pleg_period: Option<String>,
    /// `--cluster-dns`: nameservers for `ClusterFirst` pods (none: the host's resolv.conf).
    pub cluster_dns: Vec<String>,
    /// `--cluster-domain`.
    pub cluster_domain: String,
    /// `--sim-nodes`: with `sim`, how many hollow nodes (`<node-name>-<i>`) this process runs.
    pub sim_nodes: u32,
    /// Capacity each hollow node reports.
    pub sim_cpu: String,
    pub sim_memory: String,
    /// Whether hollow containers write their one-line log file.
    pub sim_write_logs: bool,
    /// Record Events (Pulled, Created, Started, Killing, Unhealthy, BackOff …).
    pub events: bool,
    /// `--log-level`.
    pub log_level: String,
    /// `--log-format`: `text` or `json`.
    pub log_format: String,
}

impl Default for KubeletConfig {
    fn default() -> Self {
        KubeletConfig {
            kubeconfig: None,
            server: None,
            bootstrap_token: None,
            ca_cert_hash: None,
            node_name: None,
            root_dir: PathBuf::from("/var/lib/kumo/kubelet"),
            pod_log_dir: None,
            address: "0.0.0.0".into(),
            port: 10250,
            healthz_port: 10248,
            node_ip: None,
            container_runtime: "process".into(),
            container_runtime_endpoint: "unix:///run/containerd/containerd.sock".into(),
            image_store: None,
            max_pods: 110,
            rotate_certificates: None,
            rotate_server_certificates: None,
            node_labels: Vec::new(),
            register_with_taints: Vec::new(),
            system_reserved: Vec::new(),
            node_status_update_frequency: "10s".into(),
            node_lease_renew_interval: "10s".into(),
            node_lease_duration_seconds: 40,
            sync_frequency: "10s".into(),
            pleg_period: None,
            cluster_dns: Vec::new(),
            cluster_domain: "cluster.local".into(),
            sim_nodes: 1,
            sim_cpu: "32".into(),
            sim_memory: "256Gi".into(),
            sim_write_logs: true,
            events: true,
            log_level: "info".into(),
            log_format: "text".into(),
        }
    }
}

/// Parses `10s`, `500ms`, `1m`, `1h`, `1m30s`, or a plain number of seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim();
    if let Ok(n) = t.parse::<f64>() {
        return (n.is_finite() && n >= 0.0).then(|| Duration::from_secs_f64(n));
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let secs = match &rest[..unit_len] {
            "ns" => n / 1e9,
            "us" | "µs" => n / 1e6,
            "ms" => n / 1e3,
            "s" => n,
            "m" => n * 60.0,
            "h" => n * 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += Duration::from_secs_f64(secs);
    }
    Some(total)
}

/// `k=v,k2=v2` pairs (already split on commas) into a map; refuses entries without `=`.
pub fn parse_pairs(items: &[String]) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for item in items.iter().flat_map(|s| s.split(',')) {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| format!("`{item}` is not key=value"))?;
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(out)
}

/// `--register-with-taints` entries `key[=value]:Effect`.
pub fn parse_taints(items: &[String]) -> Result<Vec<k8s_openapi::api::core::v1::Taint>, String> {
    let mut out = Vec::new();
    for item in items.iter().flat_map(|s| s.split(',')) {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let (kv, effect) = item
            .rsplit_once(':')
            .ok_or_else(|| format!("taint `{item}` has no :Effect"))?;
        if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
            return Err(format!("taint `{item}`: invalid effect {effect}"));
        }
        let (key, value) = match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (kv.to_string(), None),
        };
        out.push(k8s_openapi::api::core::v1::Taint {
            key,
            value,
            effect: effect.to_string(),
            time_added: None,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_pairs() {
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_duration("x"), None);
        let p = parse_pairs(&["a=b,c=d".into()]).expect("pairs");
        assert_eq!(p.get("c").map(String::as_str), Some("d"));
        let t = parse_taints(&["k=v:NoSchedule".into(), "x:NoExecute".into()]).expect("taints");
        assert_eq!(t[0].value.as_deref(), Some("v"));
        assert_eq!(t[1].effect, "NoExecute");
        assert!(parse_taints(&["k=v:Bad".into()]).is_err());
    }
}
