//! The ClusterRole aggregation controller (upstream `pkg/controller/clusterroleaggregation`):
//! a ClusterRole with an `aggregationRule` gets the rules of every ClusterRole its selectors
//! match (`kumo_auth::rbac::aggregated_rules`), rewritten whenever any ClusterRole changes.

use std::sync::Arc;

use anyhow::Context as _;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{Api, PostParams};
use kumo_client::WorkQueue;
use tracing::info;

use crate::Ctx;
use crate::informer::{Change, Informer};
use crate::util;

/// The ClusterRole aggregation controller.
pub struct ClusterRoleAggregation {
    client: kube::Client,
    roles: Arc<Informer<ClusterRole>>,
    queue: WorkQueue<String>,
}

impl ClusterRoleAggregation {
    /// Builds the controller and registers its handler.
    pub fn new(ctx: &Ctx) -> Arc<Self> {
        let c = Arc::new(ClusterRoleAggregation {
            client: ctx.client.clone(),
            roles: ctx.factory.get_cluster::<ClusterRole>(),
            queue: ctx.queue("ClusterRoleAggregator"),
        });
        let weak = Arc::downgrade(&c);
        c.roles.add_handler(move |ch| {
            if let Some(c) = weak.upgrade() {
                if let Change::Updated { old, new } = ch
                    && old.metadata.resource_version == new.metadata.resource_version
                {
                    return;
                }
                // Any change may affect any aggregated role.
                for r in c.roles.list() {
                    if r.aggregation_rule.is_some() {
                        c.queue.add(r.metadata.name.clone().unwrap_or_default());
                    }
                }
            }
        });
        c
    }

    /// Runs the worker.
    pub async fn run(self: Arc<Self>) {
        self.roles.synced().await;
        info!("clusterrole aggregation synced");
        let c = self.clone();
        util::run_workers(
            "clusterrole-aggregation",
            self.queue.clone(),
            1,
            move |key| {
                let c = c.clone();
                async move { c.sync(&key).await }
            },
        )
        .await;
    }

    async fn sync(&self, name: &str) -> anyhow::Result<()> {
        let Some(role) = self.roles.get(None, name) else {
            return Ok(());
        };
        let all: Vec<ClusterRole> = self.roles.list().iter().map(|r| (**r).clone()).collect();
        let Some(rules) =
            kumo_auth::rbac::aggregated_rules(&role, &all).map_err(|e| anyhow::anyhow!("{e}"))?
        else {
            return Ok(());
        };
        let current = role.rules.clone().unwrap_or_default();
        let same = current.len() == rules.len()
            && current
                .iter()
                .zip(rules.iter())
                .all(|(a, b)| kumo_auth::rbac::aggregate::rules_equal(a, b));
        if same {
            return Ok(());
        }
        let mut next = (*role).clone();
        next.rules = Some(rules);
        let api: Api<ClusterRole> = Api::all(self.client.clone());
        api.replace(name, &PostParams::default(), &next)
            .await
            .context("update aggregated clusterrole")?;
        info!(clusterrole = name, "updated aggregated rules");
        Ok(())
    }
}
