//! Node IPAM (upstream `pkg/controller/nodeipam`, range allocator): with
//! `--allocate-node-cidrs`, every Node gets `spec.podCIDR`/`spec.podCIDRs` — the next free
//! `--node-cidr-mask-size` block of `--cluster-cidr` — so pod IPs never collide across nodes.
//! Allocations are rebuilt from the Nodes at start; a deleted Node's block is freed.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::Ctx;
use crate::informer::Informer;

/// An IPv4 CIDR split into equal blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocks {
    base: u32,
    cluster_prefix: u8,
    node_prefix: u8,
}

impl Blocks {
    /// `10.244.0.0/16` split into `/24`s.
    pub fn parse(cluster_cidr: &str, node_mask: u8) -> Result<Blocks, String> {
        let (ip, len) = cluster_cidr
            .split_once('/')
            .ok_or_else(|| format!("cluster-cidr {cluster_cidr:?} is not a CIDR"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("cluster-cidr {cluster_cidr:?}: only IPv4 is supported"))?;
        let len: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= 32)
            .ok_or_else(|| format!("cluster-cidr {cluster_cidr:?}: bad prefix length"))?;
        if node_mask < len || node_mask > 30 || node_mask - len > 20 {
            return Err(format!(
                "node-cidr-mask-size {node_mask} does not fit cluster-cidr {cluster_cidr}"
            ));
        }
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        Ok(Blocks {
            base: u32::from(ip) & mask,
            cluster_prefix: len,
            node_prefix: node_mask,
        })
    }

    pub fn count(&self) -> u32 {
        1 << (self.node_prefix - self.cluster_prefix)
    }

    pub fn cidr(&self, i: u32) -> String {
        let ip = Ipv4Addr::from(self.base + (i << (32 - self.node_prefix)));
        format!("{ip}/{}", self.node_prefix)
    }

    /// The block index of a CIDR this range handed out.
    pub fn index_of(&self, cidr: &str) -> Option<u32> {
        let (ip, len) = cidr.split_once('/')?;
        let ip: Ipv4Addr = ip.parse().ok()?;
        if len.parse::<u8>().ok()? != self.node_prefix {
            return None;
        }
        let off = u32::from(ip).checked_sub(self.base)?;
        let i = off >> (32 - self.node_prefix);
        (i < self.count() && self.cidr(i) == cidr).then_some(i)
    }
}

/// The range allocator.
pub struct NodeIpam {
    client: kube::Client,
    nodes: Arc<Informer<Node>>,
    blocks: Blocks,
    wake: Arc<Notify>,
    /// Node name → block patched but not yet seen through the informer.
    pending: Mutex<HashMap<String, u32>>,
}

impl NodeIpam {
    pub fn new(ctx: &Ctx) -> Result<Arc<Self>, crate::Error> {
        let blocks = Blocks::parse(&ctx.cfg.cluster_cidr, ctx.cfg.node_cidr_mask_size)
            .map_err(crate::Error::Config)?;
        let nodes = ctx.factory.get_cluster::<Node>();
        let wake = Arc::new(Notify::new());
        let w = wake.clone();
        nodes.add_handler(move |_| w.notify_one());
        Ok(Arc::new(NodeIpam {
            client: ctx.client.clone(),
            nodes,
            blocks,
            wake,
            pending: Mutex::new(HashMap::new()),
        }))
    }

    pub async fn run(self: Arc<Self>) {
        self.nodes.synced().await;
        info!(blocks = self.blocks.count(), "node ipam synced");
        loop {
            if let Err(e) = self.sync().await {
                warn!(error = %e, "node ipam: allocation failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(30)) => {}
            }
        }
    }

    async fn sync(&self) -> Result<(), kube::Error> {
        let nodes = self.nodes.list();
        let cidr_of = |n: &Node| n.spec.as_ref().and_then(|s| s.pod_cidr.clone());
        // What the Nodes hold now (frees the blocks of deleted Nodes) …
        let mut used: BTreeSet<u32> = nodes
            .iter()
            .filter_map(|n| cidr_of(n))
            .filter_map(|c| self.blocks.index_of(&c))
            .collect();
        // … plus blocks patched onto Nodes the informer has not shown back yet.
        let mut pending = self.pending.lock().clone();
        pending.retain(|name, _| {
            nodes
                .iter()
                .any(|n| n.metadata.name.as_deref() == Some(name) && cidr_of(n).is_none())
        });
        used.extend(pending.values().copied());
        let api: Api<Node> = Api::all(self.client.clone());
        for n in &nodes {
            let Some(name) = n.metadata.name.as_deref() else {
                continue;
            };
            if cidr_of(n).is_some()
                || n.metadata.deletion_timestamp.is_some()
                || pending.contains_key(name)
            {
                continue;
            }
            let Some(i) = (0..self.blocks.count()).find(|i| !used.contains(i)) else {
                warn!(node = name, "node ipam: the cluster CIDR is exhausted");
                break;
            };
            let cidr = self.blocks.cidr(i);
            let patch = json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}});
            match api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    info!(node = name, cidr, "allocated pod CIDR");
                    used.insert(i);
                    pending.insert(name.to_string(), i);
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => {
                    *self.pending.lock() = pending;
                    return Err(e);
                }
            }
        }
        *self.pending.lock() = pending;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_split_and_index() {
        let b = Blocks::parse("10.244.0.0/16", 24).expect("parse");
        assert_eq!(b.count(), 256);
        assert_eq!(b.cidr(0), "10.244.0.0/24");
        assert_eq!(b.cidr(7), "10.244.7.0/24");
        assert_eq!(b.index_of("10.244.7.0/24"), Some(7));
        assert_eq!(b.index_of("10.245.0.0/24"), None);
        assert_eq!(b.index_of("10.244.7.0/25"), None);
        assert!(Blocks::parse("10.244.0.0/16", 8).is_err());
        assert!(Blocks::parse("fd00::/64", 80).is_err());
    }
}
