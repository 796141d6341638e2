//! `kumo up`'s progress: each apiserver answering, nodes turning Ready, members joined.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DynamicObject};
use serde_json::Value;

use crate::{ClusterPlan, Role, UpConfig};

/// How far a starting cluster or federation got, for `kumo up`'s progress lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The apiserver of `cluster` answers and wrote its admin kubeconfig.
    ApiServer { cluster: String, url: String },
    /// `ready` of `total` nodes of `cluster` report Ready.
    Nodes {
        cluster: String,
        ready: u32,
        total: u32,
    },
    /// `ready` of `total` members are joined and Ready in the federation host.
    Members { ready: u32, total: u32 },
}

/// What is known about one control plane while waiting.
struct Watch {
    plan: ClusterPlan,
    client: Option<kube::Client>,
    last_ready: Option<u32>,
}

/// Waits until every apiserver answers, every node of the plan is Ready and (for a
/// federation) every member is joined and Ready with the user's kubeconfig written, reporting
/// each step once. Returns whether everything came up within `timeout`.
pub async fn wait_ready(
    cfg: &UpConfig,
    timeout: Duration,
    mut progress: impl FnMut(Progress),
) -> bool {
    let deadline = Instant::now() + timeout;
    let mut watches: Vec<Watch> = cfg
        .clusters()
        .into_iter()
        .map(|plan| Watch {
            plan,
            client: None,
            last_ready: None,
        })
        .collect();
    let mut last_members = None;
    loop {
        let mut done = true;
        for w in &mut watches {
            if w.client.is_none() {
                w.client = connect(&w.plan).await;
                match &w.client {
                    Some(_) => progress(Progress::ApiServer {
                        cluster: w.plan.name.clone(),
                        url: w.plan.server_url(),
                    }),
                    None => {
                        done = false;
                        continue;
                    }
                }
            }
            if w.plan.nodes == 0 {
                continue;
            }
            let Some(client) = &w.client else { continue };
            let ready = ready_nodes(client).await;
            if w.last_ready != Some(ready) {
                progress(Progress::Nodes {
                    cluster: w.plan.name.clone(),
                    ready,
                    total: w.plan.nodes,
                });
                w.last_ready = Some(ready);
            }
            done &= ready >= w.plan.nodes;
        }
        if cfg.federated() {
            let host = watches
                .iter()
                .find(|w| w.plan.role == Role::Host)
                .and_then(|w| w.client.clone());
            match host {
                Some(client) => {
                    let names: Vec<&str> = watches
                        .iter()
                        .filter(|w| w.plan.role == Role::Member)
                        .map(|w| w.plan.name.as_str())
                        .collect();
                    let ready = ready_members(&client, &names).await;
                    if last_members != Some(ready) {
                        progress(Progress::Members {
                            ready,
                            total: cfg.members,
                        });
                        last_members = Some(ready);
                    }
                    done &= ready >= cfg.members && cfg.kubeconfig().exists();
                }
                None => done = false,
            }
        }
        if done {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A client once the apiserver answers a node list with the admin kubeconfig it wrote.
async fn connect(c: &ClusterPlan) -> Option<kube::Client> {
    let kubeconfig = c.admin_kubeconfig();
    if !kubeconfig.exists()
        || tokio::net::TcpStream::connect(("127.0.0.1", c.apiserver_port))
            .await
            .is_err()
    {
        return None;
    }
    let client = kumo_client::client_from_kubeconfig(&kubeconfig)
        .await
        .ok()?;
    let nodes: Api<Node> = Api::all(client.clone());
    nodes.list(&Default::default()).await.ok()?;
    Some(client)
}

async fn ready_nodes(client: &kube::Client) -> u32 {
    let nodes: Api<Node> = Api::all(client.clone());
    match nodes.list(&Default::default()).await {
        Ok(list) => list
            .items
            .iter()
            .filter(|n| {
                n.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count() as u32,
        Err(_) => 0,
    }
}

/// The plan's member `Cluster`s in the host with condition Ready=True.
async fn ready_members(client: &kube::Client, names: &[&str]) -> u32 {
    let clusters: Api<DynamicObject> =
        Api::all_with(client.clone(), &kumo_federation::crds::cluster_resource());
    match clusters.list(&Default::default()).await {
        Ok(list) => list
            .items
            .iter()
            .filter(|c| {
                c.metadata
                    .name
                    .as_deref()
                    .is_some_and(|n| names.contains(&n))
            })
            .filter(|c| {
                c.data["status"]["conditions"]
                    .as_array()
                    .is_some_and(|cs| cs.iter().any(is_ready))
            })
            .count() as u32,
        Err(_) => 0,
    }
}

fn is_ready(c: &Value) -> bool {
    c["type"] == "Ready" && c["status"] == "True"
}
