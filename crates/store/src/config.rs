//! `kumo store` configuration: etcd's flag names, read through kumo-config layers.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Settings of one store member. Keys mirror etcd's flags (`data-dir`, `listen-client-urls` …).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct StoreConfig {
    /// Human-readable name of this member.
    pub name: String,
    /// Where the database and the Raft log live (default `<name>.kumo`).
    pub data_dir: PathBuf,
    /// Comma-separated URLs to serve clients (gRPC, plus `/metrics` and `/health`).
    pub listen_client_urls: String,
    /// Comma-separated client URLs to advertise (default: the listen URLs).
    pub advertise_client_urls: String,
    /// Comma-separated peer URLs this member advertises (recorded in the member list).
    pub initial_advertise_peer_urls: String,
    /// Comma-separated peer URLs to listen on for other members.
    pub listen_peer_urls: String,
    /// Token mixed into cluster and member ids.
    pub initial_cluster_token: String,
    /// Comma-separated URLs serving only `/metrics` and `/health`.
    pub listen_metrics_urls: String,
    /// Database size that raises the NOSPACE alarm (0: default 2 GiB).
    pub quota_backend_bytes: u64,
    /// Largest request accepted (etcd default 1.5 MiB).
    pub max_request_bytes: usize,
    /// Largest number of operations in one txn branch.
    pub max_txn_ops: usize,
    /// Raft entries between durable checkpoints of the database (after which the log is cut).
    pub snapshot_count: u64,
    /// Raft heartbeat interval, milliseconds.
    pub heartbeat_interval: u64,
    /// Raft election timeout, milliseconds.
    pub election_timeout: u64,
    /// Interval between watch progress notifications (`10m`, `30s`, `500ms`; a bare number
    /// is seconds).
    pub watch_progress_notify_interval: String,
    /// `error`, `warn`, `info`, `debug` or `trace` (or a tracing filter).
    pub log_level: String,
    /// `text` or `json`.
    pub log_format: String,
}

/// etcd's default quota: 2 GiB.
pub const DEFAULT_QUOTA: u64 = 2 * 1024 * 1024 * 1024;

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            name: "default".into(),
            data_dir: PathBuf::new(),
            listen_client_urls: "http://127.0.0.1:2379".into(),
            advertise_client_urls: String::new(),
            initial_advertise_peer_urls: "http://127.0.0.1:2380".into(),
            listen_peer_urls: "http://127.0.0.1:2380".into(),
            initial_cluster_token: "kumo-cluster".into(),
            listen_metrics_urls: String::new(),
            quota_backend_bytes: 0,
            max_request_bytes: 1536 * 1024,
            max_txn_ops: 128,
            snapshot_count: 10_000,
            heartbeat_interval: 100,
            election_timeout: 1000,
            watch_progress_notify_interval: "10m".into(),
            log_level: "info".into(),
            log_format: "text".into(),
        }
    }
}

/// Splits a comma-separated URL list.
pub fn urls(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(String::from)
        .collect()
}

impl StoreConfig {
    /// Fills derived defaults and checks values; errors name the key.
    pub fn finish(mut self) -> Result<StoreConfig, String> {
        if self.data_dir.as_os_str().is_empty() {
            self.data_dir = PathBuf::from(format!("{}.kumo", self.name));
        }
        if self.advertise_client_urls.is_empty() {
            self.advertise_client_urls = self.listen_client_urls.clone();
        }
        if self.quota_backend_bytes == 0 {
            self.quota_backend_bytes = DEFAULT_QUOTA;
        }
        if urls(&self.listen_client_urls).is_empty() {
            return Err("listen-client-urls: at least one URL is required".into());
        }
        for u in urls(&self.listen_client_urls)
            .iter()
            .chain(urls(&self.listen_metrics_urls).iter())
        {
            parse_listen_url(u).map_err(|e| format!("listen URL {u:?}: {e}"))?;
        }
        parse_duration(&self.watch_progress_notify_interval)
            .map_err(|e| format!("watch-progress-notify-interval: {e}"))?;
        if self.max_request_bytes == 0 {
            return Err("max-request-bytes: must be positive".into());
        }
        if self.heartbeat_interval == 0 || self.election_timeout < 5 * self.heartbeat_interval {
            return Err(
                "election-timeout: must be at least 5 times heartbeat-interval (etcd's rule)"
                    .into(),
            );
        }
        Ok(self)
    }

    /// The watch progress notification interval.
    pub fn progress_interval(&self) -> std::time::Duration {
        parse_duration(&self.watch_progress_notify_interval)
            .unwrap_or(std::time::Duration::from_secs(600))
            .max(std::time::Duration::from_millis(100))
    }

    /// etcd's minimum lease TTL: 1.5 election timeouts, rounded up to a second.
    pub fn min_lease_ttl(&self) -> i64 {
        (self.election_timeout * 3 / 2).div_ceil(1000) as i64
    }
}

/// Parses a Go-style duration (`1h`, `10m`, `30s`, `250ms`, or a combination like `1m30s`);
/// a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    if let Ok(n) = s.parse::<u64>() {
        return Ok(std::time::Duration::from_secs(n));
    }
    let mut total = std::time::Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("missing unit in {s:?}"))?;
        let (num, tail) = rest.split_at(digits);
        let n: f64 = num.parse().map_err(|_| format!("bad number in {s:?}"))?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let secs = match unit {
            "h" => n * 3600.0,
            "m" => n * 60.0,
            "s" => n,
            "ms" => n / 1000.0,
            "us" | "µs" => n / 1e6,
            "ns" => n / 1e9,
            _ => return Err(format!("unknown unit {unit:?} in {s:?}")),
        };
        total += std::time::Duration::from_secs_f64(secs);
        rest = next;
    }
    Ok(total)
}

/// `http://HOST:PORT` → socket address. (`https://` needs TLS flags, not supported yet.)
pub fn parse_listen_url(u: &str) -> Result<std::net::SocketAddr, String> {
    let rest = u
        .strip_prefix("http://")
        .ok_or_else(|| "only http:// URLs are supported".to_string())?;
    let hostport = rest.trim_end_matches('/');
    let hostport = if let Some(p) = hostport.strip_prefix("localhost:") {
        format!("127.0.0.1:{p}")
    } else {
        hostport.to_string()
    };
    hostport
        .parse()
        .map_err(|e| format!("not HOST:PORT with an IP host: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }
}
