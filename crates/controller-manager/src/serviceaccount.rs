//! The ServiceAccount controller (a `default` ServiceAccount in every active namespace) and
//! the root-CA publisher (a `kube-root-ca.crt` ConfigMap with the cluster CA in every
//! namespace), upstream `pkg/controller/serviceaccount` and
//! `pkg/controller/certificates/rootcacertpublisher`.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kumo_client::WorkQueue;
use tracing::{debug, info};

use crate::informer::{Change, Informer};
use crate::util;
use crate::{Ctx, Error};

/// ServiceAccounts every namespace gets.
const SERVICE_ACCOUNTS: &[&str] = &["default"];

fn namespace_active(ns: &Namespace) -> bool {
    ns.metadata.deletion_timestamp.is_none()
        && ns
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_none_or(|p| p == "Active")
}

/// The ServiceAccount controller.
pub struct ServiceAccountController {
    client: kube::Client,
    namespaces: Arc<Informer<Namespace>>,
    accounts: Arc<Informer<ServiceAccount>>,
    queue: WorkQueue<String>,
}

impl ServiceAccountController {
    /// Builds the controller and registers its handlers.
    pub fn new(ctx: &Ctx) -> Arc<Self> {
        let c = Arc::new(ServiceAccountController {
            client: ctx.client.clone(),
            namespaces: ctx.factory.get_cluster::<Namespace>(),
            accounts: ctx.factory.get::<ServiceAccount>(),
            queue: ctx.queue("serviceaccount"),
        });
        let weak = Arc::downgrade(&c);
        c.namespaces.add_handler(move |ch| {
            if let Some(c) = weak.upgrade() {
                match ch {
                    Change::Added(ns) | Change::Updated { new: ns, .. } => {
                        c.queue.add(ns.metadata.name.clone().unwrap_or_default());
                    }
                    Change::Deleted(_) => {}
                }
            }
        });
        let weak = Arc::downgrade(&c);
        c.accounts.add_handler(move |ch| {
            if let Some(c) = weak.upgrade()
                && let Change::Deleted(sa) = ch
                && SERVICE_ACCOUNTS.contains(&sa.metadata.name.as_deref().unwrap_or(""))
            {
                c.queue
                    .add(sa.metadata.namespace.clone().unwrap_or_default());
            }
        });
        c
    }

    /// Runs the workers.
    pub async fn run(self: Arc<Self>, workers: usize) {
        self.namespaces.synced().await;
        self.accounts.synced().await;
        info!("serviceaccount controller synced; starting workers");
        let c = self.clone();
        util::run_workers("serviceaccount", self.queue.clone(), workers, move |key| {
            let c = c.clone();
            async move { c.sync(&key).await }
        })
        .await;
    }

    /// `syncNamespace`.
    async fn sync(&self, ns: &str) -> anyhow::Result<()> {
        let Some(namespace) = self.namespaces.get(None, ns) else {
            return Ok(());
        };
        if !namespace_active(&namespace) {
            return Ok(());
        }
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), ns);
        for name in SERVICE_ACCOUNTS {
            if self.accounts.get(Some(ns), name).is_some() {
                continue;
            }
            let sa = ServiceAccount {
                metadata: ObjectMeta {
                    name: Some((*name).to_string()),
                    namespace: Some(ns.to_string()),
                    ..Default::default()
                },
                ..Default::default()
            };
            match api.create(&PostParams::default(), &sa).await {
                Ok(_) => debug!(namespace = ns, name, "created serviceaccount"),
                Err(e) if util::is_already_exists(&e) || util::is_namespace_terminating(&e) => {}
                Err(e) => return Err(e).context("create serviceaccount"),
            }
        }
        Ok(())
    }
}

/// The ConfigMap every namespace gets.
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

/// The root-CA publisher.
pub struct RootCaPublisher {
    client: kube::Client,
    namespaces: Arc<Informer<Namespace>>,
    configmaps: Arc<Informer<ConfigMap>>,
    queue: WorkQueue<String>,
    ca: String,
}

impl RootCaPublisher {
    /// Builds the publisher; the CA comes from `--root-ca-file` or the kubeconfig.
    pub fn new(ctx: &Ctx) -> Result<Arc<Self>, Error> {
        let ca = match &ctx.cfg.root_ca_file {
            Some(p) => std::fs::read_to_string(p)
                .map_err(|e| Error::Config(format!("root-ca-file {}: {e}", p.display())))?,
            None => {
                let kc = ctx.cfg.kubeconfig.clone().unwrap_or_default();
                kumo_client::kubeconfig_ca_pem(&kc)?.ok_or_else(|| {
                    Error::Config(
                        "root-ca-certificate-publisher: no --root-ca-file and the kubeconfig has no certificate-authority"
                            .into(),
                    )
                })?
            }
        };
        let c = Arc::new(RootCaPublisher {
            client: ctx.client.clone(),
            namespaces: ctx.factory.get_cluster::<Namespace>(),
            configmaps: ctx
                .factory
                .get_with::<ConfigMap>(None, Some(&format!("metadata.name={ROOT_CA_CONFIGMAP}"))),
            queue: ctx.queue("root_ca_cert_publisher"),
            ca,
        });
        let weak = Arc::downgrade(&c);
        c.namespaces.add_handler(move |ch| {
            if let Some(c) = weak.upgrade() {
                match ch {
                    Change::Added(ns) => c.queue.add(ns.metadata.name.clone().unwrap_or_default()),
                    Change::Updated { old, new } => {
                        if old.metadata.resource_version != new.metadata.resource_version {
                            c.queue.add(new.metadata.name.clone().unwrap_or_default());
                        }
                    }
                    Change::Deleted(_) => {}
                }
            }
        });
        let weak = Arc::downgrade(&c);
        c.configmaps.add_handler(move |ch| {
            if let Some(c) = weak.upgrade() {
                let cm = match ch {
                    Change::Added(o) | Change::Deleted(o) => *o,
                    Change::Updated { new, .. } => *new,
                };
                if cm.metadata.name.as_deref() == Some(ROOT_CA_CONFIGMAP) {
                    c.queue
                        .add(cm.metadata.namespace.clone().unwrap_or_default());
                }
            }
        });
        Ok(c)
    }

    /// Runs the workers.
    pub async fn run(self: Arc<Self>, workers: usize) {
        self.namespaces.synced().await;
        self.configmaps.synced().await;
        info!("root-ca-cert-publisher synced; starting workers");
        let c = self.clone();
        util::run_workers(
            "root_ca_cert_publisher",
            self.queue.clone(),
            workers,
            move |key| {
                let c = c.clone();
                async move { c.sync(&key).await }
            },
        )
        .await;
    }

    /// `syncNamespace`: create or fix the ConfigMap.
    async fn sync(&self, ns: &str) -> anyhow::Result<()> {
        let Some(namespace) = self.namespaces.get(None, ns) else {
            return Ok(());
        };
        if namespace.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), ns);
        let data: BTreeMap<String, String> = [("ca.crt".to_string(), self.ca.clone())].into();
        let annotations: BTreeMap<String, String> = [(
            "kubernetes.io/description".to_string(),
            DESCRIPTION.to_string(),
        )]
        .into();
        match self.configmaps.get(Some(ns), ROOT_CA_CONFIGMAP) {
            None => {
                let cm = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(ROOT_CA_CONFIGMAP.into()),
                        namespace: Some(ns.into()),
                        annotations: Some(annotations),
                        ..Default::default()
                    },
                    data: Some(data),
                    ..Default::default()
                };
                match api.create(&PostParams::default(), &cm).await {
                    Ok(_) => debug!(namespace = ns, "published root CA"),
                    Err(e) if util::is_already_exists(&e) || util::is_namespace_terminating(&e) => {
                    }
                    Err(e) => return Err(e).context("create kube-root-ca.crt"),
                }
            }
            Some(cm) => {
                let has_desc = cm
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("kubernetes.io/description"))
                    .is_some();
                if cm.data.as_ref() == Some(&data) && has_desc {
                    return Ok(());
                }
                let mut cm = (*cm).clone();
                cm.data = Some(data);
                cm.metadata
                    .annotations
                    .get_or_insert_with(BTreeMap::new)
                    .extend(annotations);
                match api
                    .replace(ROOT_CA_CONFIGMAP, &PostParams::default(), &cm)
                    .await
                {
                    Ok(_) => {}
                    Err(e) if util::is_not_found(&e) => {}
                    Err(e) => return Err(e).context("update kube-root-ca.crt"),
                }
            }
        }
        Ok(())
    }
}
