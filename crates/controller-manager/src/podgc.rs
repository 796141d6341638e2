//! Pod garbage collection (upstream `pkg/controller/podgc`), every 20 s: terminated pods
//! beyond `--terminated-pod-gc-threshold` (oldest first), pods bound to nodes that no longer
//! exist (after a 40 s quarantine and a live check), terminating pods that were never
//! scheduled, and terminating pods on NotReady nodes tainted `node.kubernetes.io/out-of-service`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Node, Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, PostParams};
use parking_lot::Mutex;
use tracing::{info, warn};

use crate::Ctx;
use crate::informer::Informer;
use crate::util;

/// `gcCheckPeriod`.
const PERIOD: Duration = Duration::from_secs(20);
/// `quarantineTime` before an orphaned pod is collected.
const QUARANTINE: Duration = Duration::from_secs(40);

/// The pod garbage collector.
pub struct PodGc {
    client: kube::Client,
    pods: Arc<Informer<Pod>>,
    nodes: Arc<Informer<Node>>,
    threshold: usize,
    quarantine: Mutex<HashMap<String, Instant>>,
}

impl PodGc {
    /// Builds the collector.
    pub fn new(ctx: &Ctx) -> Arc<Self> {
        Arc::new(PodGc {
            client: ctx.client.clone(),
            pods: ctx.factory.get::<Pod>(),
            nodes: ctx.factory.get_cluster::<Node>(),
            threshold: ctx.cfg.terminated_pod_gc_threshold,
            quarantine: Mutex::new(HashMap::new()),
        })
    }

    /// Collects every 20 s until the process ends.
    pub async fn run(self: Arc<Self>) {
        self.pods.synced().await;
        self.nodes.synced().await;
        info!("pod garbage collector synced");
        let mut tick = tokio::time::interval(PERIOD);
        loop {
            tick.tick().await;
            if let Err(e) = self.gc().await {
                warn!(error = %format!("{e:#}"), "pod gc failed");
            }
        }
    }

    async fn gc(&self) -> anyhow::Result<()> {
        let pods = self.pods.list();
        // Terminated pods over the threshold, oldest first.
        if self.threshold > 0 {
            let mut terminated: Vec<&Arc<Pod>> =
                pods.iter().filter(|p| util::is_pod_terminated(p)).collect();
            if terminated.len() > self.threshold {
                terminated.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
                let n = terminated.len() - self.threshold;
                for p in terminated.into_iter().take(n) {
                    info!(pod = ?p.metadata.name, "deleting terminated pod over the threshold");
                    self.force_delete(p, None).await?;
                }
            }
        }
        // Orphaned pods (bound to nodes that do not exist).
        let node_api: Api<Node> = Api::all(self.client.clone());
        let mut seen_missing = Vec::new();
        for p in &pods {
            let Some(node) = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .filter(|n| !n.is_empty())
            else {
                continue;
            };
            if self.nodes.get(None, &node).is_some() {
                continue;
            }
            seen_missing.push(node.clone());
            let since = *self
                .quarantine
                .lock()
                .entry(node.clone())
                .or_insert_with(Instant::now);
            if since.elapsed() < QUARANTINE {
                continue;
            }
            if node_api.get_opt(&node).await.context("get node")?.is_some() {
                continue;
            }
            info!(pod = ?p.metadata.name, %node, "deleting pod bound to a node that does not exist");
            self.force_delete(p, Some(("DeletionByPodGC", "PodGC: node no longer exists")))
                .await?;
        }
        self.quarantine
            .lock()
            .retain(|n, _| seen_missing.contains(n));
        // Terminating pods that were never scheduled, or on out-of-service nodes.
        for p in &pods {
            if p.metadata.deletion_timestamp.is_none() {
                continue;
            }
            let node = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default();
            let out_of_service = !node.is_empty()
                && self.nodes.get(None, &node).is_some_and(|n| {
                    let taint = n
                        .spec
                        .as_ref()
                        .and_then(|s| s.taints.as_ref())
                        .is_some_and(|t| {
                            t.iter()
                                .any(|t| t.key == "node.kubernetes.io/out-of-service")
                        });
                    let ready = n
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| {
                            c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                        });
                    taint && !ready
                });
            if node.is_empty() || out_of_service {
                info!(pod = ?p.metadata.name, "force-deleting terminating pod");
                self.force_delete(
                    p,
                    Some(("DeletionByPodGC", "PodGC: node is out of service")),
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Marks `pod` Failed with a DisruptionTarget condition (if asked) and deletes it with a
    /// zero grace period.
    async fn force_delete(&self, pod: &Pod, condition: Option<(&str, &str)>) -> anyhow::Result<()> {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        if let Some((reason, message)) = condition
            && !util::is_pod_terminated(pod)
        {
            let mut p = pod.clone();
            let st = p.status.get_or_insert_with(Default::default);
            st.phase = Some("Failed".into());
            st.conditions
                .get_or_insert_with(Vec::new)
                .push(PodCondition {
                    type_: "DisruptionTarget".into(),
                    status: "True".into(),
                    reason: Some(reason.into()),
                    message: Some(message.into()),
                    last_transition_time: Some(Time(jiff::Timestamp::now())),
                    ..Default::default()
                });
            let _ = api.replace_status(&name, &PostParams::default(), &p).await;
        }
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        // A first zero-grace delete may only mark a bound pod; the second removes it.
        for _ in 0..2 {
            match api.delete(&name, &dp).await {
                Ok(r) if r.is_right() => return Ok(()),
                Ok(_) => continue,
                Err(e) if util::is_not_found(&e) => return Ok(()),
                Err(e) => return Err(e).context("delete pod"),
            }
        }
        Ok(())
    }
}
