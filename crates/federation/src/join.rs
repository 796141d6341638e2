//! `kumo join` / `kumo unjoin`: register a member cluster with the federation host.
//!
//! The member gets its own identity for the federation (namespace `kumo-system`, ServiceAccount
//! `kumo-federation` bound to `cluster-admin`, and a long-lived bound token from
//! `serviceaccounts/token`), so the host never holds the member's admin credentials and
//! unjoining (deleting the ServiceAccount) revokes access. The host gets a Secret with a
//! kubeconfig for that identity and the `Cluster` object pointing at it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use base64::Engine as _;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Value, json};
use tracing::info;

use crate::{FIELD_MANAGER, MEMBER_SA, MEMBER_SYSTEM_NS, SECRETS_NS, core, crds, member_namespace};

/// Lifetime of the member token: long-lived (the federation has no rotation yet).
const TOKEN_SECONDS: i64 = 10 * 365 * 24 * 3600;

/// What `kumo join` needs.
#[derive(Debug, Clone)]
pub struct JoinOptions {
    pub name: String,
    pub member_kubeconfig: PathBuf,
    pub member_context: Option<String>,
    pub host_kubeconfig: PathBuf,
    pub provider: Option<String>,
    pub region: Option<String>,
    pub zone: Option<String>,
    /// Extra labels for the Cluster object.
    pub labels: BTreeMap<String, String>,
    /// Overrides the API endpoint written into the Cluster (default: the member kubeconfig's).
    pub api_endpoint: Option<String>,
}

/// What `kumo join` did.
#[derive(Debug, Clone)]
pub struct JoinReport {
    pub api_endpoint: String,
    /// Wall time from start to the Cluster object existing in the host.
    pub elapsed: Duration,
}

/// A kube client from a kubeconfig file (optionally a named context).
pub async fn client_from_file(path: &Path, context: Option<&str>) -> anyhow::Result<kube::Client> {
    let kc = Kubeconfig::read_from(path).with_context(|| format!("read {}", path.display()))?;
    client_from_kubeconfig(kc, context).await
}

pub(crate) async fn client_from_kubeconfig(
    kc: Kubeconfig,
    context: Option<&str>,
) -> anyhow::Result<kube::Client> {
    let opts = KubeConfigOptions {
        context: context.map(str::to_string),
        ..Default::default()
    };
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &opts).await?;
    cfg.connect_timeout = Some(Duration::from_secs(3));
    cfg.read_timeout = Some(Duration::from_secs(30));
    Ok(kube::Client::try_from(cfg)?)
}

/// The member's server URL and CA (PEM) from its kubeconfig.
fn member_endpoint(kc: &Kubeconfig, context: Option<&str>) -> anyhow::Result<(String, String)> {
    let ctx_name = context
        .map(str::to_string)
        .or_else(|| kc.current_context.clone())
        .ok_or_else(|| anyhow!("the member kubeconfig has no current context"))?;
    let ctx = kc
        .contexts
        .iter()
        .find(|c| c.name == ctx_name)
        .and_then(|c| c.context.as_ref())
        .ok_or_else(|| anyhow!("context {ctx_name:?} not in the member kubeconfig"))?;
    let cluster = kc
        .clusters
        .iter()
        .find(|c| c.name == ctx.cluster)
        .and_then(|c| c.cluster.as_ref())
        .ok_or_else(|| anyhow!("cluster {:?} not in the member kubeconfig", ctx.cluster))?;
    let server = cluster
        .server
        .clone()
        .ok_or_else(|| anyhow!("the member kubeconfig's cluster has no server"))?;
    let ca = if let Some(data) = &cluster.certificate_authority_data {
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(data.trim())?)?
    } else if let Some(file) = &cluster.certificate_authority {
        std::fs::read_to_string(file).with_context(|| format!("read CA {file}"))?
    } else {
        String::new()
    };
    Ok((server, ca))
}

/// A kubeconfig (as JSON, which is YAML) for a token identity.
pub(crate) fn token_kubeconfig(name: &str, server: &str, ca_pem: &str, token: &str) -> Value {
    let mut cluster = json!({"server": server});
    if !ca_pem.is_empty() {
        cluster["certificate-authority-data"] =
            json!(base64::engine::general_purpose::STANDARD.encode(ca_pem));
    }
    json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": MEMBER_SA, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": MEMBER_SA}}],
        "current-context": name,
    })
}

fn crb_resource() -> ApiResource {
    core::resource(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
    )
}

/// Registers a member: identity in the member, credentials + Cluster in the host.
pub async fn join(opts: &JoinOptions) -> anyhow::Result<JoinReport> {
    let start = Instant::now();
    let kc = Kubeconfig::read_from(&opts.member_kubeconfig)
        .with_context(|| format!("read {}", opts.member_kubeconfig.display()))?;
    let (server, ca) = member_endpoint(&kc, opts.member_context.as_deref())?;
    let (member, host) = tokio::try_join!(
        client_from_kubeconfig(kc, opts.member_context.as_deref()),
        client_from_file(&opts.host_kubeconfig, None)
    )?;
    let pp = PatchParams::apply(FIELD_MANAGER).force();

    // Member side: namespace, ServiceAccount, binding, token.
    let ns_api: Api<DynamicObject> = Api::all_with(member.clone(), &core::namespace_resource());
    ns_api
        .patch(
            MEMBER_SYSTEM_NS,
            &pp,
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": MEMBER_SYSTEM_NS}})),
        )
        .await
        .context("create namespace kumo-system in the member")?;
    let sa_api: Api<DynamicObject> = Api::namespaced_with(
        member.clone(),
        MEMBER_SYSTEM_NS,
        &core::resource("", "v1", "ServiceAccount", "serviceaccounts"),
    );
    let crb_api: Api<DynamicObject> = Api::all_with(member.clone(), &crb_resource());
    let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": MEMBER_SA, "namespace": MEMBER_SYSTEM_NS}});
    let crb = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": MEMBER_SA},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": MEMBER_SA, "namespace": MEMBER_SYSTEM_NS}],
    });
    let (sa_patch, crb_patch) = (Patch::Apply(&sa), Patch::Apply(&crb));
    let (sa_res, crb_res) = tokio::join!(
        sa_api.patch(MEMBER_SA, &pp, &sa_patch),
        crb_api.patch(MEMBER_SA, &pp, &crb_patch)
    );
    sa_res.context("create the kumo-federation ServiceAccount in the member")?;
    crb_res.context("bind the kumo-federation ServiceAccount in the member")?;
    let tr: Value = sa_api
        .create_subresource(
            "token",
            MEMBER_SA,
            &PostParams::default(),
            &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                    "spec": {"expirationSeconds": TOKEN_SECONDS}}),
        )
        .await
        .context("request a token for the kumo-federation ServiceAccount")?;
    let token = tr
        .pointer("/status/token")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("the member returned no token"))?
        .to_string();

    // Host side: credentials Secret, the member's Work namespace, the Cluster.
    let endpoint = opts.api_endpoint.clone().unwrap_or(server);
    let kubeconfig = token_kubeconfig(&opts.name, &endpoint, &ca, &token);
    let secret_name = format!("{}-credentials", opts.name);
    let host_ns: Api<DynamicObject> = Api::all_with(host.clone(), &core::namespace_resource());
    for ns in [SECRETS_NS.to_string(), member_namespace(&opts.name)] {
        host_ns
            .patch(
                &ns,
                &pp,
                &Patch::Apply(
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
                ),
            )
            .await
            .with_context(|| format!("create namespace {ns} in the host"))?;
    }
    let secrets: Api<DynamicObject> = Api::namespaced_with(
        host.clone(),
        SECRETS_NS,
        &core::resource("", "v1", "Secret", "secrets"),
    );
    secrets
        .patch(
            &secret_name,
            &pp,
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": secret_name, "namespace": SECRETS_NS,
                             "labels": {"federation.kumo.io/cluster": opts.name}},
                "type": "Opaque",
                "stringData": {
                    "kubeconfig": kubeconfig.to_string(),
                    "token": token,
                    "ca.crt": ca,
                },
            })),
        )
        .await
        .context("store the member credentials in the host")?;
    let mut labels: BTreeMap<String, String> = opts.labels.clone();
    if let Some(p) = &opts.provider {
        labels.insert(crate::LABEL_PROVIDER.into(), p.clone());
    }
    if let Some(r) = &opts.region {
        labels.insert(crate::LABEL_REGION.into(), r.clone());
    }
    if let Some(z) = &opts.zone {
        labels.insert(crate::LABEL_ZONE.into(), z.clone());
    }
    let clusters: Api<DynamicObject> = Api::all_with(host.clone(), &crds::cluster_resource());
    let cluster = json!({
        "apiVersion": crate::API_VERSION, "kind": "Cluster",
        "metadata": {"name": opts.name, "labels": labels, "finalizers": [crate::FINALIZER]},
        "spec": {"apiEndpoint": endpoint,
                 "secretRef": {"namespace": SECRETS_NS, "name": secret_name}},
    });
    match clusters
        .patch(&opts.name, &pp, &Patch::Apply(&cluster))
        .await
    {
        Ok(_) => {}
        // Joining before `kumo federation` ever ran: install the CRDs (idempotent) so the
        // order in which `kumo up --members` starts things does not matter.
        Err(e) if core::is_not_found(&e) => {
            crds::install(&host, Duration::from_secs(30)).await?;
            clusters
                .patch(&opts.name, &pp, &Patch::Apply(&cluster))
                .await
                .context("create the Cluster in the host")?;
        }
        Err(e) => return Err(e).context("create the Cluster in the host"),
    }
    let elapsed = start.elapsed();
    info!(cluster = %opts.name, endpoint = %endpoint, ?elapsed, "member joined");
    Ok(JoinReport {
        api_endpoint: endpoint,
        elapsed,
    })
}

/// Unregisters a member. The Cluster is deleted first and, while `kumo federation` removes
/// what it propagated there (the Cluster's finalizer), its credentials stay; once the Cluster
/// is gone (or after `timeout`, an error that names the finalizer), its credentials and Work
/// namespace in the host go; with `member_kubeconfig`, also the ServiceAccount and binding in
/// the member (revoking the token).
pub async fn unjoin(
    name: &str,
    host_kubeconfig: &Path,
    member_kubeconfig: Option<&Path>,
    member_context: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let host = client_from_file(host_kubeconfig, None).await?;
    let dp = DeleteParams::default();
    let clusters: Api<DynamicObject> = Api::all_with(host.clone(), &crds::cluster_resource());
    ignore_not_found(clusters.delete(name, &dp).await.map(|_| ()))?;
    let deadline = Instant::now() + timeout;
    loop {
        let Some(c) = clusters.get_opt(name).await? else {
            break;
        };
        if Instant::now() >= deadline {
            let finalizers = c.metadata.finalizers.unwrap_or_default().join(", ");
            return Err(anyhow!(
                "cluster {name} is still being removed after {timeout:?} (finalizers: \
                 {finalizers}): `kumo federation` deletes what it propagated to the member \
                 before letting it go; is it running? Run unjoin again to keep waiting, or \
                 remove the finalizer by hand to leave the member's objects in place"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let secrets: Api<DynamicObject> = Api::namespaced_with(
        host.clone(),
        SECRETS_NS,
        &core::resource("", "v1", "Secret", "secrets"),
    );
    ignore_not_found(
        secrets
            .delete(&format!("{name}-credentials"), &dp)
            .await
            .map(|_| ()),
    )?;
    let ns: Api<DynamicObject> = Api::all_with(host.clone(), &core::namespace_resource());
    ignore_not_found(ns.delete(&member_namespace(name), &dp).await.map(|_| ()))?;
    if let Some(path) = member_kubeconfig {
        let member = client_from_file(path, member_context).await?;
        let crb: Api<DynamicObject> = Api::all_with(member.clone(), &crb_resource());
        ignore_not_found(crb.delete(MEMBER_SA, &dp).await.map(|_| ()))?;
        let sa: Api<DynamicObject> = Api::namespaced_with(
            member,
            MEMBER_SYSTEM_NS,
            &core::resource("", "v1", "ServiceAccount", "serviceaccounts"),
        );
        ignore_not_found(sa.delete(MEMBER_SA, &dp).await.map(|_| ()))?;
    }
    info!(cluster = %name, "member unjoined");
    Ok(())
}

pub(crate) fn ignore_not_found(r: Result<(), kube::Error>) -> anyhow::Result<()> {
    match r {
        Ok(()) => Ok(()),
        Err(e) if core::is_not_found(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
