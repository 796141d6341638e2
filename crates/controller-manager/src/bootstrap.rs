//! Bootstrap token controllers (upstream `pkg/controller/bootstrap`):
//!
//! - [`BootstrapSigner`] (`bootstrapsigner`): keeps one `jws-kubeconfig-<token-id>` key in
//!   `kube-public/cluster-info` per valid bootstrap token Secret marked
//!   `usage-bootstrap-signing: "true"` — a detached JWS of the `kubeconfig` key, so a joining
//!   node that knows the token can trust the kubeconfig — and removes the keys of tokens that
//!   are gone, expired or no longer for signing.
//! - [`TokenCleaner`] (`tokencleaner`): deletes bootstrap token Secrets once their
//!   `expiration` has passed.
//!
//! Both are also the library behind `kumo token create|list|delete` ([`create_token`],
//! [`list_tokens`], [`delete_token`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use kumo_auth::authn::bootstrap as bt;
use kumo_client::WorkQueue;
use tracing::info;

use crate::Ctx;
use crate::informer::{Change, Informer};
use crate::util;

fn data(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(key)
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
}

fn is_token_secret(s: &Secret) -> bool {
    s.type_.as_deref() == Some(bt::SECRET_TYPE)
        && s.metadata.namespace.as_deref() == Some(bt::NAMESPACE)
}

/// The expiration of a token Secret: `Some(Err)` when unparsable (treated as expired).
fn expiration(s: &Secret) -> Option<Result<jiff::Timestamp, ()>> {
    let e = data(s, bt::KEY_EXPIRATION)?;
    if e.is_empty() {
        return None;
    }
    Some(e.parse::<jiff::Timestamp>().map_err(|_| ()))
}

/// `(id, secret)` of a token Secret usable for signing (upstream's `validateSecretForSigning`).
fn signing_token(s: &Secret, now: jiff::Timestamp) -> Option<(String, String)> {
    if !is_token_secret(s) || s.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let id = data(s, bt::KEY_TOKEN_ID)?;
    let secret = data(s, bt::KEY_TOKEN_SECRET)?;
    if s.metadata.name.as_deref() != Some(format!("{}{id}", bt::SECRET_PREFIX).as_str())
        || bt::parse_token(&format!("{id}.{secret}")).is_none()
    {
        return None;
    }
    match expiration(s) {
        Some(Err(())) => return None,
        Some(Ok(t)) if now > t => return None,
        _ => {}
    }
    if data(s, bt::KEY_USAGE_SIGNING).as_deref() != Some("true") {
        return None;
    }
    Some((id, secret))
}

const KEY: &str = "cluster-info";

/// The `bootstrapsigner` controller.
pub struct BootstrapSigner {
    client: kube::Client,
    secrets: Arc<Informer<Secret>>,
    configmaps: Arc<Informer<ConfigMap>>,
    queue: WorkQueue<String>,
}

impl BootstrapSigner {
    /// Builds the controller and registers its handlers.
    pub fn new(ctx: &Ctx) -> Arc<Self> {
        let c = Arc::new(BootstrapSigner {
            client: ctx.client.clone(),
            secrets: ctx.factory.get_with::<Secret>(Some(bt::NAMESPACE), None),
            configmaps: ctx
                .factory
                .get_with::<ConfigMap>(Some(bt::CLUSTER_INFO_NAMESPACE), None),
            queue: ctx.queue("bootstrap_signer_queue"),
        });
        let q = c.queue.clone();
        c.secrets.add_handler(move |ch| {
            let s = match ch {
                Change::Added(o) | Change::Deleted(o) => *o,
                Change::Updated { new, .. } => *new,
            };
            if is_token_secret(s) {
                q.add(KEY.into());
            }
        });
        let q = c.queue.clone();
        c.configmaps.add_handler(move |ch| {
            let cm = match ch {
                Change::Added(o) | Change::Deleted(o) => *o,
                Change::Updated { new, .. } => *new,
            };
            if cm.metadata.name.as_deref() == Some(bt::CLUSTER_INFO_NAME) {
                q.add(KEY.into());
            }
        });
        c
    }

    /// Runs the worker (one key: the cluster-info ConfigMap), re-checking every minute so
    /// expired tokens lose their signature.
    pub async fn run(self: Arc<Self>) {
        self.secrets.synced().await;
        self.configmaps.synced().await;
        info!("bootstrapsigner synced");
        let q = self.queue.clone();
        let ticker = util::AbortOnDrop(tokio::spawn(async move {
            loop {
                q.add(KEY.into());
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
        }));
        let c = self.clone();
        util::run_workers("bootstrapsigner", self.queue.clone(), 1, move |_| {
            let c = c.clone();
            async move { c.sync().await }
        })
        .await;
        drop(ticker);
    }

    async fn sync(&self) -> anyhow::Result<()> {
        let Some(cm) = self
            .configmaps
            .get(Some(bt::CLUSTER_INFO_NAMESPACE), bt::CLUSTER_INFO_NAME)
        else {
            return Ok(());
        };
        let Some(kubeconfig) = cm
            .data
            .as_ref()
            .and_then(|d| d.get(bt::CLUSTER_INFO_KUBECONFIG_KEY))
            .cloned()
        else {
            return Ok(());
        };
        let now = jiff::Timestamp::now();
        let wanted: BTreeMap<String, String> = self
            .secrets
            .list_namespace(bt::NAMESPACE)
            .iter()
            .filter_map(|s| signing_token(s, now))
            .map(|(id, secret)| {
                (
                    format!("{}{id}", bt::CLUSTER_INFO_JWS_PREFIX),
                    kumo_auth::jws_detached_sign(&kubeconfig, &id, &secret),
                )
            })
            .collect();
        let mut next_data = cm.data.clone().unwrap_or_default();
        next_data.retain(|k, _| !k.starts_with(bt::CLUSTER_INFO_JWS_PREFIX));
        next_data.extend(wanted);
        if Some(&next_data) == cm.data.as_ref() {
            return Ok(());
        }
        let mut next = (*cm).clone();
        next.data = Some(next_data);
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), bt::CLUSTER_INFO_NAMESPACE);
        api.replace(bt::CLUSTER_INFO_NAME, &PostParams::default(), &next)
            .await
            .context("update cluster-info signatures")?;
        info!("cluster-info signatures updated");
        Ok(())
    }
}

/// The `tokencleaner` controller.
pub struct TokenCleaner {
    client: kube::Client,
    secrets: Arc<Informer<Secret>>,
    queue: WorkQueue<String>,
}

impl TokenCleaner {
    /// Builds the controller and registers its handler.
    pub fn new(ctx: &Ctx) -> Arc<Self> {
        let c = Arc::new(TokenCleaner {
            client: ctx.client.clone(),
            secrets: ctx.factory.get_with::<Secret>(Some(bt::NAMESPACE), None),
            queue: ctx.queue("token_cleaner"),
        });
        let q = c.queue.clone();
        c.secrets.add_handler(move |ch| match ch {
            Change::Added(s) | Change::Updated { new: s, .. } => {
                if is_token_secret(s)
                    && let Some(name) = s.metadata.name.clone()
                {
                    q.add(name);
                }
            }
            Change::Deleted(_) => {}
        });
        c
    }

    /// Runs the worker.
    pub async fn run(self: Arc<Self>) {
        self.secrets.synced().await;
        info!("tokencleaner synced");
        let c = self.clone();
        util::run_workers("tokencleaner", self.queue.clone(), 1, move |key| {
            let c = c.clone();
            async move { c.sync(&key).await }
        })
        .await;
    }

    async fn sync(&self, name: &str) -> anyhow::Result<()> {
        let Some(s) = self.secrets.get(Some(bt::NAMESPACE), name) else {
            return Ok(());
        };
        if !is_token_secret(&s) || s.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let now = jiff::Timestamp::now();
        match expiration(&s) {
            None => return Ok(()),
            Some(Ok(t)) if t >= now => {
                let wait = now.duration_until(t).unsigned_abs() + Duration::from_secs(1);
                self.queue.add_after(name.to_string(), wait);
                return Ok(());
            }
            _ => {}
        }
        let api: Api<Secret> = Api::namespaced(self.client.clone(), bt::NAMESPACE);
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: s.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(name, &dp).await {
            Ok(_) => info!(secret = name, "deleted expired bootstrap token"),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => return Err(e).context("delete expired bootstrap token"),
        }
        Ok(())
    }
}

/// What `kumo token create` makes.
#[derive(Debug, Clone)]
pub struct TokenOptions {
    /// `--ttl` (`None` or zero: never expires).
    pub ttl: Option<Duration>,
    /// `--description`.
    pub description: String,
    /// `--groups` (each `system:bootstrappers:…`).
    pub groups: Vec<String>,
    /// `--usages` (`signing`, `authentication`).
    pub usages: Vec<String>,
    /// A token to use instead of a random one (`kubeadm token create TOKEN`).
    pub token: Option<String>,
}

impl Default for TokenOptions {
    fn default() -> Self {
        TokenOptions {
            ttl: Some(Duration::from_secs(24 * 3600)),
            description: String::new(),
            groups: vec![kumo_auth::join::DEFAULT_EXTRA_GROUP.to_string()],
            usages: kumo_auth::join::DEFAULT_USAGES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            token: None,
        }
    }
}

/// A created token and how to join with it.
#[derive(Debug, Clone)]
pub struct CreatedToken {
    /// `<id>.<secret>`.
    pub token: String,
    /// The apiserver URL of the kubeconfig.
    pub server: String,
    /// `sha256:<hex>` of the cluster CA (from the kubeconfig).
    pub ca_cert_hash: String,
}

impl CreatedToken {
    /// `kumo kubelet --server <url> --bootstrap-token <token> --ca-cert-hash sha256:<hash>`.
    pub fn join_command(&self) -> String {
        format!(
            "kumo kubelet --server {} --bootstrap-token {} --ca-cert-hash {}",
            self.server, self.token, self.ca_cert_hash
        )
    }
}

/// The server URL and CA hash of a kubeconfig (its current context).
fn server_and_hash(kubeconfig: &Path) -> anyhow::Result<(String, String)> {
    let kc = kumo_auth::kubeconfig::load_resolved(kubeconfig, None)
        .with_context(|| format!("read {}", kubeconfig.display()))?;
    let ca = kc
        .ca_pem
        .as_deref()
        .context("the kubeconfig has no certificate-authority data")?;
    let hash = kumo_auth::ca_cert_hash(ca).context("CA certificate")?;
    Ok((kc.server.clone(), hash))
}

/// `kumo token create`: stores a bootstrap token Secret and returns the token.
pub async fn create_token(kubeconfig: &Path, opts: &TokenOptions) -> anyhow::Result<CreatedToken> {
    let (server, ca_cert_hash) = server_and_hash(kubeconfig)?;
    let (id, secret) = match &opts.token {
        Some(t) => {
            let (i, s) = bt::parse_token(t).with_context(|| {
                format!(
                    "the bootstrap token {t:?} was not of the form \"[a-z0-9]{{6}}.[a-z0-9]{{16}}\""
                )
            })?;
            (i.to_string(), s.to_string())
        }
        None => kumo_auth::generate_bootstrap_token()?,
    };
    let usages: Vec<&str> = opts.usages.iter().map(String::as_str).collect();
    let obj = kumo_auth::bootstrap_token_secret(
        &id,
        &secret,
        opts.ttl,
        &usages,
        &opts.groups,
        &opts.description,
    )?;
    let secret_obj: Secret = serde_json::from_value(obj)?;
    let client = kumo_client::client_from_kubeconfig(kubeconfig).await?;
    let api: Api<Secret> = Api::namespaced(client, bt::NAMESPACE);
    api.create(&PostParams::default(), &secret_obj)
        .await
        .context("create the bootstrap token Secret")?;
    Ok(CreatedToken {
        token: format!("{id}.{secret}"),
        server,
        ca_cert_hash,
    })
}

/// One row of `kumo token list`.
#[derive(Debug, Clone)]
pub struct TokenInfo {
    /// `<id>.<secret>`.
    pub token: String,
    /// RFC 3339 expiration, empty for none.
    pub expires: String,
    /// `signing`, `authentication`.
    pub usages: Vec<String>,
    /// Extra groups.
    pub groups: Vec<String>,
    /// Description.
    pub description: String,
}

/// `kumo token list`: the bootstrap tokens in `kube-system`.
pub async fn list_tokens(kubeconfig: &Path) -> anyhow::Result<Vec<TokenInfo>> {
    let client = kumo_client::client_from_kubeconfig(kubeconfig).await?;
    let api: Api<Secret> = Api::namespaced(client, bt::NAMESPACE);
    let list = api
        .list(&ListParams::default())
        .await
        .context("list Secrets")?;
    let mut out = Vec::new();
    for s in list.items.iter().filter(|s| is_token_secret(s)) {
        let (Some(id), Some(secret)) = (data(s, bt::KEY_TOKEN_ID), data(s, bt::KEY_TOKEN_SECRET))
        else {
            continue;
        };
        let usages = ["signing", "authentication"]
            .iter()
            .filter(|u| data(s, &format!("usage-bootstrap-{u}")).as_deref() == Some("true"))
            .map(|u| u.to_string())
            .collect();
        out.push(TokenInfo {
            token: format!("{id}.{secret}"),
            expires: data(s, bt::KEY_EXPIRATION).unwrap_or_default(),
            usages,
            groups: data(s, bt::KEY_EXTRA_GROUPS)
                .map(|g| g.split(',').map(str::to_string).collect())
                .unwrap_or_default(),
            description: data(s, bt::KEY_DESCRIPTION).unwrap_or_default(),
        });
    }
    Ok(out)
}

/// `kumo token delete ID|TOKEN`.
pub async fn delete_token(kubeconfig: &Path, id_or_token: &str) -> anyhow::Result<()> {
    let id = id_or_token.split('.').next().unwrap_or(id_or_token);
    let client = kumo_client::client_from_kubeconfig(kubeconfig).await?;
    let api: Api<Secret> = Api::namespaced(client, bt::NAMESPACE);
    api.delete(
        &format!("{}{id}", bt::SECRET_PREFIX),
        &DeleteParams::default(),
    )
    .await
    .with_context(|| format!("delete bootstrap token {id}"))?;
    info!(id, "deleted bootstrap token");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_secret(expiration: Option<&str>, signing: bool) -> Secret {
        let mut v = kumo_auth::bootstrap_token_secret(
            "abcdef",
            "0123456789abcdef",
            None,
            if signing {
                &["signing", "authentication"]
            } else {
                &["authentication"]
            },
            &[],
            "",
        )
        .expect("secret");
        let mut s: Secret = serde_json::from_value(v.take()).expect("Secret");
        if let Some(e) = expiration
            && let Some(d) = s.data.as_mut()
        {
            d.insert(
                "expiration".into(),
                k8s_openapi::ByteString(e.as_bytes().to_vec()),
            );
        }
        s
    }

    #[test]
    fn which_tokens_sign() {
        let now: jiff::Timestamp = "2030-01-01T00:00:00Z".parse().expect("time");
        assert_eq!(
            signing_token(&token_secret(None, true), now),
            Some(("abcdef".into(), "0123456789abcdef".into()))
        );
        assert!(signing_token(&token_secret(Some("2031-01-01T00:00:00Z"), true), now).is_some());
        assert!(signing_token(&token_secret(Some("2029-01-01T00:00:00Z"), true), now).is_none());
        assert!(signing_token(&token_secret(Some("soon"), true), now).is_none());
        assert!(signing_token(&token_secret(None, false), now).is_none());
        let mut renamed = token_secret(None, true);
        renamed.metadata.name = Some("bootstrap-token-zzzzzz".into());
        assert!(signing_token(&renamed, now).is_none());
    }
}
