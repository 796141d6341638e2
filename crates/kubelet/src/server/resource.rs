//! `GET /metrics/resource`: upstream's resource metrics endpoint, what metrics-server scrapes
//! for `kubectl top` — node CPU/memory from `/proc`, and per container (and pod) CPU time and
//! working set from the runtime's `container_stats`, with upstream's names, help texts and
//! millisecond timestamps.

use std::fmt::Write as _;

use http::{Response, StatusCode};

use super::{Body, ServerState, with_type};

/// `(cpu seconds, working set bytes)` of this machine: `/proc/stat`'s busy time and
/// `MemTotal - MemAvailable`.
fn node_usage() -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: busy = all but idle and iowait.
    let busy: u64 = f
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    // USER_HZ is 100 on every Linux ABI the kubelet runs on.
    let cpu_seconds = busy as f64 / 100.0;
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb = |key: &str| -> Option<u64> {
        meminfo
            .lines()
            .find(|l| l.starts_with(key))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let ws = kb("MemTotal:")?.saturating_sub(kb("MemAvailable:")?) * 1024;
    Some((cpu_seconds, ws))
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub(crate) async fn resource_metrics(state: &ServerState) -> Response<Body> {
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let mut containers = Vec::new();
    let mut scrape_error = 0;
    for pod in state.pods.pods() {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let names: Vec<String> = pod
            .spec
            .as_ref()
            .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
            .unwrap_or_default();
        for c in names {
            let Ok(r) = state.pods.container(&ns, &name, &c) else {
                continue;
            };
            let (Some(id), true) = (r.container_id, r.running) else {
                continue;
            };
            match state.runtime.container_stats(&id).await {
                Ok(s) => containers.push((ns.clone(), name.clone(), c, s)),
                Err(e) => {
                    tracing::debug!(container = %id, error = %e, "container stats");
                    scrape_error = 1;
                }
            }
        }
    }
    let mut out = String::new();
    let label = |ns: &str, pod: &str, c: Option<&str>| match c {
        Some(c) => format!(
            "container=\"{}\",namespace=\"{}\",pod=\"{}\"",
            escape(c),
            escape(ns),
            escape(pod)
        ),
        None => format!("namespace=\"{}\",pod=\"{}\"", escape(ns), escape(pod)),
    };
    let _ = writeln!(
        out,
        "# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the container in core-seconds\n# TYPE container_cpu_usage_seconds_total counter"
    );
    for (ns, pod, c, s) in &containers {
        if let Some(n) = s.cpu_usage_nanos {
            let _ = writeln!(
                out,
                "container_cpu_usage_seconds_total{{{}}} {} {now_ms}",
                label(ns, pod, Some(c)),
                n as f64 / 1e9
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP container_memory_working_set_bytes [STABLE] Current working set of the container in bytes\n# TYPE container_memory_working_set_bytes gauge"
    );
    for (ns, pod, c, s) in &containers {
        if let Some(b) = s.memory_working_set_bytes {
            let _ = writeln!(
                out,
                "container_memory_working_set_bytes{{{}}} {b} {now_ms}",
                label(ns, pod, Some(c))
            );
        }
    }
    // Pod sums of what the containers report.
    let mut pods: std::collections::BTreeMap<(String, String), (Option<u64>, Option<u64>)> =
        Default::default();
    for (ns, pod, _, s) in &containers {
        let e = pods.entry((ns.clone(), pod.clone())).or_default();
        if let Some(n) = s.cpu_usage_nanos {
            e.0 = Some(e.0.unwrap_or(0) + n);
        }
        if let Some(b) = s.memory_working_set_bytes {
            e.1 = Some(e.1.unwrap_or(0) + b);
        }
    }
    let _ = writeln!(
        out,
        "# HELP pod_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the pod in core-seconds\n# TYPE pod_cpu_usage_seconds_total counter"
    );
    for ((ns, pod), (cpu, _)) in &pods {
        if let Some(n) = cpu {
            let _ = writeln!(
                out,
                "pod_cpu_usage_seconds_total{{{}}} {} {now_ms}",
                label(ns, pod, None),
                *n as f64 / 1e9
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP pod_memory_working_set_bytes [STABLE] Current working set of the pod in bytes\n# TYPE pod_memory_working_set_bytes gauge"
    );
    for ((ns, pod), (_, mem)) in &pods {
        if let Some(b) = mem {
            let _ = writeln!(
                out,
                "pod_memory_working_set_bytes{{{}}} {b} {now_ms}",
                label(ns, pod, None)
            );
        }
    }
    if let Some((cpu, ws)) = node_usage() {
        let _ = writeln!(
            out,
            "# HELP node_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the node in core-seconds\n# TYPE node_cpu_usage_seconds_total counter\nnode_cpu_usage_seconds_total {cpu} {now_ms}"
        );
        let _ = writeln!(
            out,
            "# HELP node_memory_working_set_bytes [STABLE] Current working set of the node in bytes\n# TYPE node_memory_working_set_bytes gauge\nnode_memory_working_set_bytes {ws} {now_ms}"
        );
    } else {
        scrape_error = 1;
    }
    let _ = writeln!(
        out,
        "# HELP resource_scrape_error [STABLE] 1 if there was an error while getting container metrics, 0 otherwise\n# TYPE resource_scrape_error gauge\nresource_scrape_error {scrape_error}"
    );
    with_type(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        out,
    )
}
