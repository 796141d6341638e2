//! The apiserver's Prometheus metrics, with upstream's names.

use std::sync::LazyLock;

use kumo_registry::ResourceDef;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    etcd: HistogramVec,
    watchers: IntGaugeVec,
}

/// Upstream's buckets for request and etcd latencies, in seconds.
const LATENCY_BUCKETS: [f64; 23] = [
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0,
    10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
];

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let registry = Registry::new();
    let requests = IntCounterVec::new(
        Opts::new(
            "apiserver_request_total",
            "Counter of apiserver requests broken out for each verb, group, version, resource, scope, component, and HTTP response code.",
        ),
        &["verb", "group", "version", "resource", "subresource", "scope", "code"],
    )
    .expect("valid metric");
    let latency = HistogramVec::new(
        HistogramOpts::new(
            "apiserver_request_duration_seconds",
            "Response latency distribution in seconds for each verb, group, version, resource, subresource, scope and component.",
        )
        .buckets(LATENCY_BUCKETS.to_vec()),
        &["verb", "group", "version", "resource", "subresource", "scope"],
    )
    .expect("valid metric");
    let etcd = HistogramVec::new(
        HistogramOpts::new(
            "etcd_request_duration_seconds",
            "Etcd request latency in seconds for each operation and object type.",
        )
        .buckets(LATENCY_BUCKETS.to_vec()),
        &["operation", "type"],
    )
    .expect("valid metric");
    let watchers = IntGaugeVec::new(
        Opts::new(
            "apiserver_registered_watchers",
            "Number of currently registered watchers for a given resources",
        ),
        &["group", "version", "kind"],
    )
    .expect("valid metric");
    for c in [
        Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
        Box::new(latency.clone()),
        Box::new(etcd.clone()),
        Box::new(watchers.clone()),
    ] {
        let _ = registry.register(c);
    }
    #[cfg(target_os = "linux")]
    {
        let _ = registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));
    }
    Metrics {
        registry,
        requests,
        latency,
        etcd,
        watchers,
    }
});

/// Labels of one request for the metrics.
#[derive(Debug, Clone, Default)]
pub struct RequestLabels {
    pub verb: String,
    pub group: String,
    pub version: String,
    pub resource: String,
    pub subresource: String,
    pub scope: String,
}

/// Records one finished request.
pub fn observe(l: &RequestLabels, code: u16, seconds: f64) {
    let m = &*METRICS;
    let code = code.to_string();
    m.requests
        .with_label_values(&[
            l.verb.as_str(),
            l.group.as_str(),
            l.version.as_str(),
            l.resource.as_str(),
            l.subresource.as_str(),
            l.scope.as_str(),
            code.as_str(),
        ])
        .inc();
    if l.verb != "WATCH" {
        m.latency
            .with_label_values(&[
                l.verb.as_str(),
                l.group.as_str(),
                l.version.as_str(),
                l.resource.as_str(),
                l.subresource.as_str(),
                l.scope.as_str(),
            ])
            .observe(seconds);
    }
}

/// Records one call to the store: `operation` as upstream names it (`create`, `get`, `list`,
/// `update`, `delete`, `compact`), `key` the key or prefix it was about.
pub fn observe_etcd(operation: &str, key: &[u8], seconds: f64) {
    METRICS
        .etcd
        .with_label_values(&[operation, object_type(key)])
        .observe(seconds);
}

/// The `type` label of `etcd_request_duration_seconds`: the key's resource prefix
/// (`/registry/pods`), a bounded set of values.
fn object_type(key: &[u8]) -> &str {
    std::str::from_utf8(key)
        .ok()
        .and_then(crate::cache::resource_prefix)
        .unwrap_or("other")
}

pub fn watchers_inc(def: &ResourceDef) {
    METRICS
        .watchers
        .with_label_values(&[def.group.as_str(), def.version.as_str(), def.kind.as_str()])
        .inc();
}

pub fn watchers_dec(def: &ResourceDef) {
    METRICS
        .watchers
        .with_label_values(&[def.group.as_str(), def.version.as_str(), def.kind.as_str()])
        .dec();
}

/// The text exposition of every metric.
pub fn render() -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = TextEncoder::new().encode(&METRICS.registry.gather(), &mut buf);
    buf
}

#[cfg(test)]
mod tests {
    #[test]
    fn object_types_are_resource_prefixes() {
        assert_eq!(super::object_type(b"/registry/pods/ns/a"), "/registry/pods");
        assert_eq!(super::object_type(b"/registry/pods/"), "/registry/pods");
        assert_eq!(super::object_type(b"/registry/nodes"), "/registry/nodes");
        assert_eq!(super::object_type(b"/other"), "other");
        assert_eq!(super::object_type(b"\xff"), "other");
    }
}
