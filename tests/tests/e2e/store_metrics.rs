//! Metrics: `kumo store`'s `/metrics` passes `promtool check metrics` and carries etcd's metric
//! names, `/health` answers like etcd's, and every panel of `dashboards/store.json` has data in a
//! real Prometheus (apt `prometheus`) scraping a kumo store under load.
//!
//! Without promtool/prometheus the two tests that need them are skipped with a notice, unless
//! `CI` is set: then they fail.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions, PutOptions, WatchOptions};
use kumo_tests::{
    PrometheusProc, Sample, StoreKind, StoreProc, http_get, parse_exposition, prometheus_bin,
    promtool_bin, promtool_check_metrics, require_tool, sample_value, workspace_root,
};
use serde_json::Value;

const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
const JOB: &str = "kumo-store";
/// How long the dashboard queries may take to all have data once Prometheus has scraped.
const QUERY_DEADLINE: Duration = Duration::from_secs(60);

/// Lint findings of `promtool check metrics` that are accepted: each is a gauge whose name ends
/// in `_total`. The first five are etcd's own names and types (etcd 3.4 exports exactly these
/// gauges and promtool reports the same lines for it); renaming them or turning them into
/// counters would break etcd dashboards and alerts, which is what the names are for.
/// `etcd_debugging_lease_total` is a kumo gauge in etcd's namespace (live leases).
const ACCEPTED_LINT: &[&str] = &[
    "etcd_debugging_mvcc_keys_total non-counter metrics should not have \"_total\" suffix",
    "etcd_debugging_mvcc_watch_stream_total non-counter metrics should not have \"_total\" suffix",
    "etcd_debugging_mvcc_watcher_total non-counter metrics should not have \"_total\" suffix",
    "etcd_server_proposals_applied_total non-counter metrics should not have \"_total\" suffix",
    "etcd_server_proposals_committed_total non-counter metrics should not have \"_total\" suffix",
    "etcd_debugging_lease_total non-counter metrics should not have \"_total\" suffix",
];

/// Every metric family kumo store promises (etcd's names plus kumo's own and process_*).
const REQUIRED: &[&str] = &[
    "etcd_server_has_leader",
    "etcd_server_is_leader",
    "etcd_server_leader_changes_seen_total",
    "etcd_server_proposals_committed_total",
    "etcd_server_proposals_applied_total",
    "etcd_server_proposals_failed_total",
    "etcd_server_proposals_pending",
    "etcd_mvcc_db_total_size_in_bytes",
    "etcd_mvcc_db_total_size_in_use_in_bytes",
    "etcd_server_quota_backend_bytes",
    "etcd_debugging_mvcc_keys_total",
    "etcd_debugging_mvcc_watcher_total",
    "etcd_debugging_mvcc_watch_stream_total",
    "etcd_debugging_lease_total",
    "etcd_disk_backend_commit_duration_seconds_bucket",
    "etcd_disk_backend_commit_duration_seconds_sum",
    "etcd_disk_backend_commit_duration_seconds_count",
    "etcd_disk_wal_fsync_duration_seconds_bucket",
    "etcd_disk_wal_fsync_duration_seconds_sum",
    "etcd_disk_wal_fsync_duration_seconds_count",
    "kumo_store_apply_batch_duration_seconds_bucket",
    "kumo_store_apply_batch_duration_seconds_count",
    "kumo_store_requests_total",
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_max_fds",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
];

fn scrape(base: &str) -> (String, Vec<Sample>) {
    let resp = http_get(&format!("{base}/metrics"), HTTP_TIMEOUT).expect("GET /metrics");
    assert_eq!(resp.status, 200, "GET {base}/metrics: {}", resp.body);
    let ct = resp.header("content-type").unwrap_or_default();
    assert!(
        ct.starts_with("text/plain") && ct.contains("version=0.0.4"),
        "GET {base}/metrics: content-type {ct:?}, want the text exposition format 0.0.4"
    );
    let samples = parse_exposition(&resp.body).expect("parse the exposition");
    (resp.body, samples)
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    sample_value(samples, name, labels)
        .unwrap_or_else(|| panic!("no sample {name}{labels:?} in /metrics"))
}

/// For each histogram: cumulative buckets never decrease and `le="+Inf"` equals `_count`.
fn check_histograms(samples: &[Sample]) {
    let families: BTreeSet<&str> = samples
        .iter()
        .filter_map(|s| s.name.strip_suffix("_bucket"))
        .collect();
    for family in families {
        let buckets: Vec<(f64, f64)> = samples
            .iter()
            .filter(|s| s.name == format!("{family}_bucket"))
            .map(|s| {
                let le = s.labels.get("le").expect("bucket without le");
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().expect("numeric le")
                };
                (le, s.value)
            })
            .collect();
        assert!(
            buckets
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
            "{family}: buckets not ascending and cumulative: {buckets:?}"
        );
        let inf = buckets.last().map(|b| b.1);
        let count = sample_value(samples, &format!("{family}_count"), &[]);
        assert_eq!(
            inf, count,
            "{family}: le=\"+Inf\" bucket differs from _count"
        );
    }
}

fn check_health(base: &str) {
    let resp = http_get(&format!("{base}/health"), HTTP_TIMEOUT).expect("GET /health");
    assert_eq!(resp.status, 200, "GET {base}/health: {}", resp.body);
    let v: Value = serde_json::from_str(&resp.body)
        .unwrap_or_else(|e| panic!("GET {base}/health: not JSON ({e}): {:?}", resp.body));
    assert_eq!(
        v["health"], "true",
        "GET {base}/health: want {{\"health\":\"true\",…}} (a string, like etcd), got {v}"
    );
}

/// (a) promtool accepts the exposition; etcd's names are there with sane values; /health is
/// etcd-shaped. Both the metrics listener and the client port serve them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_metrics_pass_promtool_with_etcd_names() {
    if !require_tool(
        &promtool_bin(),
        "prometheus",
        "PROMTOOL_BIN",
        "store_metrics_pass_promtool_with_etcd_names",
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let store = StoreProc::start(StoreKind::Kumo, dir.path(), &[]).expect("start kumo store");
    let mut c = Client::connect([store.endpoint()], None)
        .await
        .expect("connect");

    const PUTS: usize = 20;
    for i in 0..PUTS {
        c.put(format!("metrics/{i:02}"), format!("v{i}"), None)
            .await
            .expect("put");
    }
    let lease = c.lease_grant(300, None).await.expect("lease grant").id();
    c.put(
        "metrics/leased",
        "v",
        Some(PutOptions::new().with_lease(lease)),
    )
    .await
    .expect("put with lease");
    // One failing request, so a non-Ok code is counted too.
    assert!(
        c.lease_revoke(0x7e57_0000_dead).await.is_err(),
        "revoking an unknown lease must fail"
    );
    let mut watch = c
        .watch("metrics/", Some(WatchOptions::new().with_prefix()))
        .await
        .expect("watch");
    let created = watch
        .message()
        .await
        .expect("watch created")
        .expect("watch response");
    assert!(
        created.created(),
        "first watch response must be the creation"
    );

    for base in [store.metrics_url(), store.endpoint()] {
        check_health(&base);
        let (text, samples) = scrape(&base);

        let (code, out) = promtool_check_metrics(&text).expect("promtool");
        let findings: Vec<&str> = out
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let unexpected: Vec<&&str> = findings
            .iter()
            .filter(|l| !ACCEPTED_LINT.contains(l))
            .collect();
        assert!(
            (code == 0 || code == 3) && unexpected.is_empty(),
            "`promtool check metrics` on {base}/metrics exited {code} with unexpected \
             findings {unexpected:#?}\nfull output:\n{out}\nexposition:\n{text}"
        );

        let names: HashSet<&str> = samples.iter().map(|s| s.name.as_str()).collect();
        let missing: Vec<&&str> = REQUIRED.iter().filter(|n| !names.contains(**n)).collect();
        assert!(missing.is_empty(), "{base}/metrics lacks {missing:?}");

        let v = |name: &str| value(&samples, name, &[]);
        assert_eq!(v("etcd_server_has_leader"), 1.0, "etcd_server_has_leader");
        assert_eq!(v("etcd_server_is_leader"), 1.0, "etcd_server_is_leader");
        assert!(v("etcd_server_leader_changes_seen_total") >= 1.0);
        let size = v("etcd_mvcc_db_total_size_in_bytes");
        let in_use = v("etcd_mvcc_db_total_size_in_use_in_bytes");
        assert!(size > 0.0, "etcd_mvcc_db_total_size_in_bytes = {size}");
        assert!(
            in_use > 0.0 && in_use <= size,
            "etcd_mvcc_db_total_size_in_use_in_bytes = {in_use}, size {size}"
        );
        assert!(v("etcd_server_quota_backend_bytes") > size);
        assert!(v("etcd_disk_backend_commit_duration_seconds_count") > 0.0);
        assert!(v("etcd_disk_wal_fsync_duration_seconds_count") > 0.0);
        assert!(v("kumo_store_apply_batch_duration_seconds_count") > 0.0);
        let committed = v("etcd_server_proposals_committed_total");
        let applied = v("etcd_server_proposals_applied_total");
        assert!(
            committed >= (PUTS + 2) as f64 && applied <= committed,
            "proposals committed {committed}, applied {applied}"
        );
        assert_eq!(
            v("etcd_server_proposals_pending"),
            committed - applied,
            "pending = committed - applied"
        );
        assert_eq!(v("etcd_debugging_mvcc_keys_total"), (PUTS + 1) as f64);
        assert!(v("etcd_debugging_mvcc_watcher_total") >= 1.0, "watchers");
        assert!(
            v("etcd_debugging_mvcc_watch_stream_total") >= 1.0,
            "watch streams"
        );
        assert!(v("etcd_debugging_lease_total") >= 1.0, "leases");
        assert!(
            value(
                &samples,
                "kumo_store_requests_total",
                &[("method", "Put"), ("code", "Ok")]
            ) >= (PUTS + 1) as f64
        );
        assert!(
            value(
                &samples,
                "kumo_store_requests_total",
                &[("method", "LeaseRevoke")]
            ) >= 1.0
        );
        assert!(v("process_resident_memory_bytes") > 0.0);
        assert!(v("process_open_fds") > 0.0);
        check_histograms(&samples);
    }
    drop(watch);
}

/// Where a panel's PromQL came from, and the query itself.
struct PanelQuery {
    panel: String,
    expr: String,
}

fn dashboard() -> Value {
    let path = workspace_root().join("dashboards/store.json");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Every panel (rows' nested panels included), depth first.
fn panels(dash: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dash["panels"], &mut out);
    out
}

fn panel_queries(dash: &Value) -> Vec<PanelQuery> {
    let mut out = Vec::new();
    for p in panels(dash) {
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = t["expr"].as_str() {
                out.push(PanelQuery {
                    panel: format!(
                        "{} / {}",
                        p["title"].as_str().unwrap_or("?"),
                        t["refId"].as_str().unwrap_or("?")
                    ),
                    expr: expr.to_string(),
                });
            }
        }
    }
    out
}

/// Substitutes Grafana's variables the way Grafana would for one selected job and instance.
fn expand(expr: &str, instance: &str) -> String {
    let mut e = expr.to_string();
    for (var, val) in [
        ("__rate_interval", "1m"),
        ("__interval", "15s"),
        ("__range", "1h"),
        ("instance", instance),
        ("job", JOB),
    ] {
        e = e
            .replace(&format!("${{{var}}}"), val)
            .replace(&format!("${var}"), val);
    }
    e
}

/// The metric names (`etcd_*`, `kumo_*`, `process_*`) an expression refers to.
fn metric_names(expr: &str) -> BTreeSet<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| {
            ["etcd_", "kumo_", "process_"]
                .iter()
                .any(|p| w.starts_with(p))
        })
        .map(str::to_string)
        .collect()
}

/// The dashboard's shape: Grafana ≥ 9 schema, datasource and instance variables, every panel on
/// `${DS_PROMETHEUS}`, every non-row panel with PromQL targets over names kumo exports.
#[test]
fn store_dashboard_json_is_well_formed() {
    let dash = dashboard();
    assert!(
        dash["schemaVersion"].as_u64().unwrap_or(0) >= 36,
        "schemaVersion {} < 36",
        dash["schemaVersion"]
    );
    assert!(dash["uid"].as_str().is_some_and(|u| !u.is_empty()), "uid");
    assert!(
        dash["title"].as_str().is_some_and(|t| !t.is_empty()),
        "title"
    );
    let vars = dash["templating"]["list"]
        .as_array()
        .expect("templating.list");
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no templating variable {name}"))
    };
    let ds = var("DS_PROMETHEUS");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    for name in ["job", "instance"] {
        let v = var(name);
        assert_eq!(v["type"], "query", "variable {name}");
        assert_eq!(
            v["datasource"]["uid"], "${DS_PROMETHEUS}",
            "variable {name}"
        );
    }

    let mut ids = HashSet::new();
    for p in panels(&dash) {
        let title = p["title"].as_str().unwrap_or("?");
        let id = p["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("panel {title}: no id"));
        assert!(ids.insert(id), "panel id {id} ({title}) used twice");
        for k in ["h", "w", "x", "y"] {
            assert!(p["gridPos"][k].is_u64(), "panel {title}: gridPos.{k}");
        }
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(
            p["datasource"]["uid"], "${DS_PROMETHEUS}",
            "panel {title} datasource"
        );
        let targets = p["targets"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        assert!(!targets.is_empty(), "panel {title} has no query");
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or_default();
            assert!(
                !expr.trim().is_empty(),
                "panel {title}: target without expr"
            );
            assert_eq!(
                t["datasource"]["uid"], "${DS_PROMETHEUS}",
                "panel {title} target datasource"
            );
            assert!(
                expr.contains("instance=~\"$instance\""),
                "panel {title}: {expr} does not filter on $instance"
            );
            let left = expand(expr, "127.0.0.1:2379");
            assert!(
                !left.contains('$'),
                "panel {title}: unknown variable left in {left}"
            );
        }
    }
}

/// Keeps a kumo store busy: puts, reads, deletes, failing lease calls (so error series exist),
/// one open watch and one live lease, until `stop`.
async fn load(endpoint: String, stop: Arc<AtomicBool>, ok: Arc<AtomicU64>) {
    let mut c = Client::connect([endpoint.as_str()], None)
        .await
        .expect("load: connect");
    let lease = c.lease_grant(600, None).await.expect("load: lease").id();
    c.put(
        "load/leased",
        "v",
        Some(PutOptions::new().with_lease(lease)),
    )
    .await
    .expect("load: put with lease");
    let mut watch = c
        .watch("load/", Some(WatchOptions::new().with_prefix()))
        .await
        .expect("load: watch");
    let created = watch.message().await.expect("load: watch created");
    assert!(
        created.is_some_and(|r| r.created()),
        "load: watch not created"
    );
    // Read the events so the watch never becomes a slow watcher.
    let drain = tokio::spawn(async move { while let Ok(Some(_)) = watch.message().await {} });
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("load/{:03}", i % 200);
        if c.put(key.clone(), format!("v{i}"), None).await.is_ok() {
            ok.fetch_add(1, Ordering::Relaxed);
        }
        if i.is_multiple_of(5) {
            let _ = c
                .get(
                    "load/",
                    Some(GetOptions::new().with_prefix().with_limit(10)),
                )
                .await;
        }
        if i.is_multiple_of(7) {
            // Unknown lease: NotFound on both calls.
            let _ = c.lease_revoke(0x7e57_0000_0000 + i as i64).await;
            let _ = c
                .put(
                    "load/bad-lease",
                    "v",
                    Some(PutOptions::new().with_lease(0x7e57_0000_0001)),
                )
                .await;
        }
        if i.is_multiple_of(11) {
            let _ = c.delete(key, None).await;
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drain.abort();
}

/// (b) A real Prometheus scrapes a loaded kumo store every second; every panel query of the
/// dashboard, with Grafana's variables filled in, succeeds and returns data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_dashboard_queries_have_data_in_prometheus() {
    if !require_tool(
        &prometheus_bin(),
        "prometheus",
        "PROMETHEUS_BIN",
        "store_dashboard_queries_have_data_in_prometheus",
    ) {
        return;
    }
    let dash = dashboard();
    let queries = panel_queries(&dash);
    assert!(!queries.is_empty(), "dashboard has no queries");

    let dir = tempfile::tempdir().expect("tempdir");
    let store = StoreProc::start(StoreKind::Kumo, &dir.path().join("store"), &[])
        .expect("start kumo store");
    let instance = format!("127.0.0.1:{}", store.metrics_port);

    // Names each query uses must be ones kumo exports.
    let (_, samples) = scrape(&store.metrics_url());
    let exported: HashSet<&str> = samples.iter().map(|s| s.name.as_str()).collect();
    for q in &queries {
        for name in metric_names(&q.expr) {
            assert!(
                exported.contains(name.as_str()),
                "panel {}: {name} is not exported by kumo store ({})",
                q.panel,
                q.expr
            );
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let loader = tokio::spawn(load(store.endpoint(), stop.clone(), ok.clone()));

    let prom = PrometheusProc::start(
        &dir.path().join("prometheus"),
        JOB,
        std::slice::from_ref(&instance),
        Duration::from_secs(1),
    )
    .expect("start prometheus");
    prom.wait_scrapes(3, Duration::from_secs(60))
        .expect("prometheus scrapes kumo store");

    // The variables' queries (Grafana's label_values(SELECTOR, LABEL)) find this store.
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        let Some(def) = v["definition"].as_str() else {
            continue;
        };
        let inner = def
            .strip_prefix("label_values(")
            .and_then(|d| d.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable {}: unexpected query {def}", v["name"]));
        let (selector, label) = inner.rsplit_once(',').expect("label_values(sel, label)");
        let selector = expand(selector.trim(), &instance);
        let values = prom
            .label_values(label.trim(), &selector)
            .unwrap_or_else(|e| panic!("variable {}: {e:#}", v["name"]));
        let want = if v["name"] == "job" { JOB } else { &instance };
        assert!(
            values.iter().any(|x| x == want),
            "variable {}: {def} gives {values:?}, want {want}",
            v["name"]
        );
    }

    // Series that only start with the load (error codes, rates) need a few scrapes to have a
    // rate; poll until every query has a non-NaN value, within a bound.
    let deadline = Instant::now() + QUERY_DEADLINE;
    let mut failing: Vec<String>;
    loop {
        failing = Vec::new();
        for q in &queries {
            let expr = expand(&q.expr, &instance);
            let data = prom
                .query(&expr)
                .unwrap_or_else(|e| panic!("panel {}: query {expr} failed: {e:#}", q.panel));
            let values: Vec<&str> = match data["resultType"].as_str() {
                Some("vector") => data["result"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s["value"][1].as_str())
                    .collect(),
                Some("scalar") => data["result"][1].as_str().into_iter().collect(),
                other => panic!("panel {}: {expr} gives a {other:?}", q.panel),
            };
            if values.is_empty() || values.iter().all(|v| *v == "NaN") {
                failing.push(format!("{}: {expr} -> {}", q.panel, data["result"]));
            }
        }
        if failing.is_empty() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = tokio::time::timeout(Duration::from_secs(10), loader).await;
    assert!(
        ok.load(Ordering::Relaxed) > 0,
        "the load generator got no put through"
    );
    assert!(
        failing.is_empty(),
        "{} of {} dashboard queries have no data after {QUERY_DEADLINE:?}:\n{}",
        failing.len(),
        queries.len(),
        failing.join("\n")
    );
}
