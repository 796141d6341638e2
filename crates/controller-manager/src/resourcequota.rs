//! The ResourceQuota controller (upstream `pkg/controller/resourcequota` with the core
//! evaluators): `status.hard` mirrors `spec.hard` and `status.used` counts what the
//! namespace uses of each tracked resource — object counts (`pods`, `services`,
//! `count/<resource>[.<group>]` …) and pod compute (`requests.cpu`, `limits.memory` …, over
//! non-terminal pods, honouring the Terminating/NotTerminating/BestEffort/NotBestEffort
//! scopes). Recomputed on quota and pod/service changes and every 30 s.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Pod, ResourceQuota, ResourceQuotaStatus, Service};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::discovery::ApiResource;
use kumo_client::WorkQueue;
use tracing::info;

use crate::Ctx;
use crate::discovery::DiscoveryCache;
use crate::informer::{Change, Informer};
use crate::util;

/// A quantity in thousandths (`Quantity` → milli-units).
pub fn parse_quantity(q: &str) -> Option<i128> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        s if s.starts_with('e') || s.starts_with('E') => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    Some((n * mult * 1000.0).round() as i128)
}

/// Formats milli-units canonically-ish: `500m`, `2`, `1Gi` (binary when it divides evenly
/// and `binary`), else plain.
pub fn format_quantity(milli: i128, binary: bool) -> String {
    if milli % 1000 != 0 {
        return format!("{milli}m");
    }
    let v = milli / 1000;
    if binary && v != 0 {
        for (suffix, pow) in [
            ("Ei", 6),
            ("Pi", 5),
            ("Ti", 4),
            ("Gi", 3),
            ("Mi", 2),
            ("Ki", 1),
        ] {
            let unit = 1024i128.pow(pow);
            if v % unit == 0 {
                return format!("{}{suffix}", v / unit);
            }
        }
    }
    v.to_string()
}

/// The ResourceQuota controller.
pub struct ResourceQuotaController {
    client: kube::Client,
    quotas: Arc<Informer<ResourceQuota>>,
    pods: Arc<Informer<Pod>>,
    services: Arc<Informer<Service>>,
    queue: WorkQueue<String>,
    discovery: DiscoveryCache,
}

/// Like upstream's pod evaluator: a pod whose deletion grace period has run out no longer
/// counts against the quota, even before it is gone.
fn deletion_grace_elapsed(p: &Pod) -> bool {
    let (Some(ts), Some(grace)) = (
        p.metadata.deletion_timestamp.as_ref(),
        p.metadata.deletion_grace_period_seconds,
    ) else {
        return false;
    };
    ts.0 + jiff::SignedDuration::from_secs(grace) < jiff::Timestamp::now()
}

fn sum_resources(pods: &[Arc<Pod>], kind: &str, resource: &str) -> i128 {
    let mut total = 0i128;
    for p in pods {
        let Some(spec) = p.spec.as_ref() else {
            continue;
        };
        let get = |c: &k8s_openapi::api::core::v1::Container| -> i128 {
            let r = c.resources.as_ref();
            let map = if kind == "limits" {
                r.and_then(|r| r.limits.as_ref())
            } else {
                r.and_then(|r| r.requests.as_ref())
            };
            map.and_then(|m| m.get(resource))
                .and_then(|q| parse_quantity(&q.0))
                .unwrap_or(0)
        };
        let containers: i128 = spec.containers.iter().map(get).sum();
        // Init containers run one at a time: the max counts, like upstream's PodRequests.
        let init: i128 = spec
            .init_containers
            .iter()
            .flatten()
            .map(get)
            .max()
            .unwrap_or(0);
        let overhead = spec
            .overhead
            .as_ref()
            .and_then(|o| o.get(resource))
            .and_then(|q| parse_quantity(&q.0))
            .unwrap_or(0);
        total += containers.max(init) + overhead;
    }
    total
}

fn is_best_effort(p: &Pod) -> bool {
    p.spec.as_ref().is_none_or(|s| {
        s.containers.iter().all(|c| {
            c.resources.as_ref().is_none_or(|r| {
                r.requests.as_ref().is_none_or(|m| m.is_empty())
                    && r.limits.as_ref().is_none_or(|m| m.is_empty())
            })
        })
    })
}

impl ResourceQuotaController {
    /// Builds the controller and registers its handlers.
    pub fn new(ctx: &Ctx) -> Arc<Self> {
        let c = Arc::new(ResourceQuotaController {
            client: ctx.client.clone(),
            quotas: ctx.factory.get::<ResourceQuota>(),
            pods: ctx.factory.get::<Pod>(),
            services: ctx.factory.get::<Service>(),
            queue: ctx.queue("resourcequota_primary"),
            discovery: DiscoveryCache::new(ctx.client.clone()),
        });
        let weak = Arc::downgrade(&c);
        c.quotas.add_handler(move |ch| {
            if let Some(c) = weak.upgrade() {
                let q = match ch {
                    Change::Added(o) | Change::Deleted(o) => *o,
                    Change::Updated { new, .. } => *new,
                };
                c.queue.add(util::key_of(&q.metadata));
            }
        });
        let weak = Arc::downgrade(&c);
        c.pods.add_handler(move |ch| {
            if let Some(c) = weak.upgrade() {
                let p = match ch {
                    Change::Added(o) | Change::Deleted(o) => *o,
                    Change::Updated { new, .. } => *new,
                };
                c.enqueue_namespace(p.metadata.namespace.as_deref().unwrap_or(""));
            }
        });
        let weak = Arc::downgrade(&c);
        c.services.add_handler(move |ch| {
            if let Some(c) = weak.upgrade() {
                let s = match ch {
                    Change::Added(o) | Change::Deleted(o) => *o,
                    Change::Updated { new, .. } => *new,
                };
                c.enqueue_namespace(s.metadata.namespace.as_deref().unwrap_or(""));
            }
        });
        c
    }

    fn enqueue_namespace(&self, ns: &str) {
        for q in self.quotas.list_namespace(ns) {
            self.queue.add(util::key_of(&q.metadata));
        }
    }

    /// Runs the workers and the 30 s resync.
    pub async fn run(self: Arc<Self>, workers: usize) {
        self.quotas.synced().await;
        self.pods.synced().await;
        self.services.synced().await;
        info!("resourcequota controller synced; starting workers");
        let me = self.clone();
        let _resync = util::AbortOnDrop(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(30));
            loop {
                tick.tick().await;
                for q in me.quotas.list() {
                    me.queue.add(util::key_of(&q.metadata));
                }
            }
        }));
        let c = self.clone();
        util::run_workers("resourcequota", self.queue.clone(), workers, move |key| {
            let c = c.clone();
            async move { c.sync(&key).await }
        })
        .await;
    }

    async fn count_objects(&self, ns: &str, resource: &str, group: &str) -> anyhow::Result<i128> {
        let resources = self.discovery.resources().await?;
        let Some((ar, _)) = resources
            .iter()
            .find(|(ar, _)| ar.plural == resource && ar.group == group)
        else {
            return Ok(0);
        };
        let ar: ApiResource = ar.clone();
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, &ar);
        let list = api
            .list_metadata(&ListParams::default())
            .await
            .context("count objects")?;
        Ok(i128::try_from(list.items.len()).unwrap_or(0) * 1000)
    }

    async fn sync(&self, key: &str) -> anyhow::Result<()> {
        let (ns, name) = util::split_key(key);
        let Some(quota) = self.quotas.get(Some(ns), name) else {
            return Ok(());
        };
        let spec = quota.spec.clone().unwrap_or_default();
        let hard = spec.hard.clone().unwrap_or_default();
        let scopes = spec.scopes.clone().unwrap_or_default();
        let pods: Vec<Arc<Pod>> = self
            .pods
            .list_namespace(ns)
            .into_iter()
            .filter(|p| !util::is_pod_terminated(p) && !deletion_grace_elapsed(p))
            .filter(|p| {
                scopes.iter().all(|s| {
                    let terminating = p
                        .spec
                        .as_ref()
                        .and_then(|s| s.active_deadline_seconds)
                        .is_some();
                    match s.as_str() {
                        "Terminating" => terminating,
                        "NotTerminating" => !terminating,
                        "BestEffort" => is_best_effort(p),
                        "NotBestEffort" => !is_best_effort(p),
                        _ => true,
                    }
                })
            })
            .collect();
        let services = self.services.list_namespace(ns);
        let mut used: BTreeMap<String, Quantity> = BTreeMap::new();
        for res in hard.keys() {
            let (milli, binary) = match res.as_str() {
                "pods" | "count/pods" => (i128::try_from(pods.len()).unwrap_or(0) * 1000, false),
                "cpu" | "requests.cpu" => (sum_resources(&pods, "requests", "cpu"), false),
                "limits.cpu" => (sum_resources(&pods, "limits", "cpu"), false),
                "memory" | "requests.memory" => (sum_resources(&pods, "requests", "memory"), true),
                "limits.memory" => (sum_resources(&pods, "limits", "memory"), true),
                "ephemeral-storage" | "requests.ephemeral-storage" => {
                    (sum_resources(&pods, "requests", "ephemeral-storage"), true)
                }
                "limits.ephemeral-storage" => {
                    (sum_resources(&pods, "limits", "ephemeral-storage"), true)
                }
                "services" | "count/services" => {
                    (i128::try_from(services.len()).unwrap_or(0) * 1000, false)
                }
                "services.loadbalancers" => (
                    i128::try_from(
                        services
                            .iter()
                            .filter(|s| {
                                s.spec.as_ref().and_then(|s| s.type_.as_deref())
                                    == Some("LoadBalancer")
                            })
                            .count(),
                    )
                    .unwrap_or(0)
                        * 1000,
                    false,
                ),
                "services.nodeports" => (
                    i128::try_from(
                        services
                            .iter()
                            .filter(|s| {
                                matches!(
                                    s.spec.as_ref().and_then(|s| s.type_.as_deref()),
                                    Some("NodePort") | Some("LoadBalancer")
                                )
                            })
                            .map(|s| {
                                s.spec
                                    .as_ref()
                                    .and_then(|s| s.ports.as_ref())
                                    .map(|p| p.len())
                                    .unwrap_or(0)
                            })
                            .sum::<usize>(),
                    )
                    .unwrap_or(0)
                        * 1000,
                    false,
                ),
                "configmaps" => (self.count_objects(ns, "configmaps", "").await?, false),
                "secrets" => (self.count_objects(ns, "secrets", "").await?, false),
                "persistentvolumeclaims" => (
                    self.count_objects(ns, "persistentvolumeclaims", "").await?,
                    false,
                ),
                "replicationcontrollers" => (
                    self.count_objects(ns, "replicationcontrollers", "").await?,
                    false,
                ),
                "resourcequotas" => (self.count_objects(ns, "resourcequotas", "").await?, false),
                other => match other.strip_prefix("count/") {
                    Some(rg) => {
                        let (r, g) = rg.split_once('.').unwrap_or((rg, ""));
                        (self.count_objects(ns, r, g).await?, false)
                    }
                    None => continue,
                },
            };
            used.insert(res.clone(), Quantity(format_quantity(milli, binary)));
        }
        let status = ResourceQuotaStatus {
            hard: Some(hard),
            used: Some(used),
        };
        if quota.status.as_ref() == Some(&status) {
            return Ok(());
        }
        let api: Api<ResourceQuota> = Api::namespaced(self.client.clone(), ns);
        let mut target = (*quota).clone();
        target.status = Some(status);
        api.replace_status(name, &PostParams::default(), &target)
            .await
            .context("update resourcequota status")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("500m"), Some(500));
        assert_eq!(parse_quantity("2"), Some(2000));
        assert_eq!(parse_quantity("1Gi"), Some(1024i128.pow(3) * 1000));
        assert_eq!(parse_quantity("1.5"), Some(1500));
        assert_eq!(parse_quantity("1e3"), Some(1_000_000));
        assert_eq!(format_quantity(1500, false), "1500m");
        assert_eq!(format_quantity(2000, false), "2");
        assert_eq!(format_quantity(256 * 1024 * 1024 * 1000, true), "256Mi");
        assert_eq!(format_quantity(0, true), "0");
    }
}
