//! The certificate controllers (upstream `pkg/controller/certificates`):
//!
//! - [`CsrApprover`] (`csrapproving`): auto-approves kubelet client certificate requests
//!   (`kubernetes.io/kube-apiserver-client-kubelet`, CN `system:node:<name>`, O
//!   `system:nodes`, client usages only) when a SubjectAccessReview says the requester may
//!   `create` `certificatesigningrequests/nodeclient` — or `/selfnodeclient` when a node renews
//!   its own — upstream's `sarapprove`.
//! - [`CsrSigningController`] (`csrsigning`): signs Approved requests of the
//!   `kubernetes.io/kube-apiserver-client`, `…-client-kubelet` and `kubernetes.io/kubelet-serving`
//!   signers with the cluster CA (`--cluster-signing-cert-file`/`--cluster-signing-key-file`),
//!   for `--cluster-signing-duration` capped by `spec.expirationSeconds`; a request its signer
//!   cannot honour gets a `Failed` condition (`SignerValidationFailure`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, PostParams};
use kumo_client::WorkQueue;
use tracing::{info, warn};

use crate::Ctx;
use crate::informer::{Change, Informer};
use crate::util;

/// `kubernetes.io/kube-apiserver-client`.
pub const SIGNER_CLIENT: &str = "kubernetes.io/kube-apiserver-client";
/// `kubernetes.io/kube-apiserver-client-kubelet`.
pub const SIGNER_KUBELET_CLIENT: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// `kubernetes.io/kubelet-serving`.
pub const SIGNER_KUBELET_SERVING: &str = "kubernetes.io/kubelet-serving";

fn has_condition(csr: &CertificateSigningRequest, t: &str) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == t))
}

fn usages(csr: &CertificateSigningRequest) -> BTreeSet<&str> {
    csr.spec
        .usages
        .as_ref()
        .map(|u| u.iter().map(String::as_str).collect())
        .unwrap_or_default()
}

/// Whether the usages are exactly one of the allowed sets (upstream's `hasExactUsages`; key
/// encipherment is optional because ECDSA keys cannot encipher).
fn usages_in(csr: &CertificateSigningRequest, required: &[&str], optional: &[&str]) -> bool {
    let u = usages(csr);
    required.iter().all(|r| u.contains(r))
        && u.iter()
            .all(|x| required.contains(x) || optional.contains(x))
}

/// Upstream's `isNodeClientCert`/`ValidateKubeletClientCSR`: `None` when the request is a
/// kubelet client certificate, else why not.
fn kubelet_client_problem(
    csr: &CertificateSigningRequest,
    info: &kumo_auth::CsrInfo,
) -> Option<String> {
    if info.organizations != ["system:nodes"] {
        return Some("subject organization is not system:nodes".into());
    }
    if !info.dns_names.is_empty()
        || !info.email_addresses.is_empty()
        || !info.ip_addresses.is_empty()
        || !info.uris.is_empty()
    {
        return Some("DNS, email, IP or URI subjectAltNames are not allowed".into());
    }
    if !info.common_name.starts_with("system:node:") {
        return Some("subject common name does not begin with system:node:".into());
    }
    if !usages_in(
        csr,
        &["digital signature", "client auth"],
        &["key encipherment"],
    ) {
        return Some(
            "usages did not match [digital signature key encipherment client auth]".into(),
        );
    }
    None
}

/// Upstream's `ValidateKubeletServingCSR`.
fn kubelet_serving_problem(
    csr: &CertificateSigningRequest,
    info: &kumo_auth::CsrInfo,
) -> Option<String> {
    if info.organizations != ["system:nodes"] {
        return Some("subject organization is not system:nodes".into());
    }
    if !info.common_name.starts_with("system:node:") {
        return Some("subject common name does not begin with system:node:".into());
    }
    if info.dns_names.is_empty() && info.ip_addresses.is_empty() {
        return Some("DNS or IP subjectAltName is required".into());
    }
    if !info.email_addresses.is_empty() || !info.uris.is_empty() {
        return Some("email and URI subjectAltNames are not allowed".into());
    }
    if !usages_in(
        csr,
        &["digital signature", "server auth"],
        &["key encipherment"],
    ) {
        return Some(
            "usages did not match [digital signature key encipherment server auth]".into(),
        );
    }
    None
}

fn request_info(csr: &CertificateSigningRequest) -> anyhow::Result<kumo_auth::CsrInfo> {
    kumo_auth::parse_csr_pem(&csr.spec.request.0)
        .map_err(|e| anyhow::anyhow!("unable to parse csr {:?}: {e}", csr.metadata.name))
}

fn now() -> Time {
    Time(jiff::Timestamp::now())
}

/// Registers a CSR informer handler that enqueues the request's name.
fn enqueue_csrs(csrs: &Arc<Informer<CertificateSigningRequest>>, queue: &WorkQueue<String>) {
    let q = queue.clone();
    csrs.add_handler(move |ch| {
        let obj = match ch {
            Change::Added(o) | Change::Deleted(o) => *o,
            Change::Updated { new, .. } => *new,
        };
        if let Some(name) = obj.metadata.name.clone() {
            q.add(name);
        }
    });
}

/// The `csrapproving` controller.
pub struct CsrApprover {
    client: kube::Client,
    csrs: Arc<Informer<CertificateSigningRequest>>,
    queue: WorkQueue<String>,
}

impl CsrApprover {
    /// Builds the controller and registers its handler.
    pub fn new(ctx: &Ctx) -> Arc<Self> {
        let c = Arc::new(CsrApprover {
            client: ctx.client.clone(),
            csrs: ctx.factory.get_cluster::<CertificateSigningRequest>(),
            queue: ctx.queue("csrapproving"),
        });
        enqueue_csrs(&c.csrs, &c.queue);
        c
    }

    /// Runs the workers.
    pub async fn run(self: Arc<Self>, workers: usize) {
        self.csrs.synced().await;
        info!("csrapproving synced");
        let c = self.clone();
        util::run_workers("csrapproving", self.queue.clone(), workers, move |key| {
            let c = c.clone();
            async move { c.sync(&key).await }
        })
        .await;
    }

    /// Whether the requester may `create` `certificatesigningrequests/<subresource>`.
    async fn authorized(
        &self,
        csr: &CertificateSigningRequest,
        subresource: &str,
    ) -> anyhow::Result<bool> {
        use k8s_openapi::api::authorization::v1::{
            ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
        };
        let s = &csr.spec;
        let sar = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: s.username.clone(),
                uid: s.uid.clone(),
                groups: s.groups.clone(),
                extra: s.extra.clone(),
                resource_attributes: Some(ResourceAttributes {
                    group: Some("certificates.k8s.io".into()),
                    resource: Some("certificatesigningrequests".into()),
                    verb: Some("create".into()),
                    version: Some("*".into()),
                    subresource: Some(subresource.into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let out = api
            .create(&PostParams::default(), &sar)
            .await
            .context("SubjectAccessReview")?;
        Ok(out.status.is_some_and(|s| s.allowed))
    }

    async fn sync(&self, name: &str) -> anyhow::Result<()> {
        let Some(csr) = self.csrs.get(None, name) else {
            return Ok(());
        };
        if csr.spec.signer_name != SIGNER_KUBELET_CLIENT
            || has_condition(&csr, "Approved")
            || has_condition(&csr, "Denied")
            || csr
                .status
                .as_ref()
                .is_some_and(|s| s.certificate.as_ref().is_some_and(|c| !c.0.is_empty()))
        {
            return Ok(());
        }
        let info = request_info(&csr)?;
        if kubelet_client_problem(&csr, &info).is_some() {
            return Ok(());
        }
        // Upstream's recognizers: a node renewing its own certificate, then any node client.
        let mut tried = Vec::new();
        let mut approved = false;
        if csr.spec.username.as_deref() == Some(info.common_name.as_str()) {
            tried.push("selfnodeclient");
            approved = self.authorized(&csr, "selfnodeclient").await?;
        }
        if !approved {
            tried.push("nodeclient");
            approved = self.authorized(&csr, "nodeclient").await?;
        }
        if !approved {
            info!(
                csr = name,
                ?tried,
                "recognized a kubelet client request but the SubjectAccessReview was not approved"
            );
            return Ok(());
        }
        let mut next = (*csr).clone();
        let status = next.status.get_or_insert_with(Default::default);
        status
            .conditions
            .get_or_insert_with(Vec::new)
            .push(CertificateSigningRequestCondition {
                type_: "Approved".into(),
                status: "True".into(),
                reason: Some("AutoApproved".into()),
                message: Some(
                    "Auto approving kubelet client certificate after SubjectAccessReview.".into(),
                ),
                last_update_time: Some(now()),
                last_transition_time: None,
            });
        let api: Api<CertificateSigningRequest> = Api::all(self.client.clone());
        api.replace_subresource("approval", name, &PostParams::default(), &next)
            .await
            .context("approve the request")?;
        info!(csr = name, node = %info.common_name, "auto-approved kubelet client certificate");
        Ok(())
    }
}

/// The `csrsigning` controller.
pub struct CsrSigningController {
    client: kube::Client,
    csrs: Arc<Informer<CertificateSigningRequest>>,
    queue: WorkQueue<String>,
    signer: Arc<kumo_auth::CsrSigner>,
    duration: Duration,
}

impl CsrSigningController {
    /// Builds the controller; `None` (logged) when no signing CA is configured.
    pub fn new(ctx: &Ctx) -> Result<Option<Arc<Self>>, crate::Error> {
        let (Some(cert), Some(key)) = (
            ctx.cfg.cluster_signing_cert_file.as_ref(),
            ctx.cfg.cluster_signing_key_file.as_ref(),
        ) else {
            warn!(
                "csrsigning is off: --cluster-signing-cert-file and --cluster-signing-key-file are not both set"
            );
            return Ok(None);
        };
        let signer = kumo_auth::CsrSigner::from_files(cert, key)
            .map_err(|e| crate::Error::Config(format!("cluster signing CA: {e}")))?;
        let duration =
            util::parse_duration(&ctx.cfg.cluster_signing_duration).ok_or_else(|| {
                crate::Error::Config(format!(
                    "cluster-signing-duration: invalid duration {:?}",
                    ctx.cfg.cluster_signing_duration
                ))
            })?;
        let c = Arc::new(CsrSigningController {
            client: ctx.client.clone(),
            csrs: ctx.factory.get_cluster::<CertificateSigningRequest>(),
            queue: ctx.queue("csrsigning"),
            signer: Arc::new(signer),
            duration,
        });
        enqueue_csrs(&c.csrs, &c.queue);
        Ok(Some(c))
    }

    /// Runs the workers.
    pub async fn run(self: Arc<Self>, workers: usize) {
        self.csrs.synced().await;
        info!("csrsigning synced");
        let c = self.clone();
        util::run_workers("csrsigning", self.queue.clone(), workers, move |key| {
            let c = c.clone();
            async move { c.sync(&key).await }
        })
        .await;
    }

    async fn sync(&self, name: &str) -> anyhow::Result<()> {
        let Some(csr) = self.csrs.get(None, name) else {
            return Ok(());
        };
        let signer = csr.spec.signer_name.as_str();
        if !matches!(
            signer,
            SIGNER_CLIENT | SIGNER_KUBELET_CLIENT | SIGNER_KUBELET_SERVING
        ) || !has_condition(&csr, "Approved")
            || has_condition(&csr, "Denied")
            || has_condition(&csr, "Failed")
            || csr
                .status
                .as_ref()
                .is_some_and(|s| s.certificate.as_ref().is_some_and(|c| !c.0.is_empty()))
        {
            return Ok(());
        }
        let info = match kumo_auth::parse_csr_pem(&csr.spec.request.0) {
            Ok(i) => i,
            Err(e) => return self.fail(&csr, &format!("unable to parse csr: {e}")).await,
        };
        let problem = match signer {
            SIGNER_KUBELET_CLIENT => kubelet_client_problem(&csr, &info),
            SIGNER_KUBELET_SERVING => kubelet_serving_problem(&csr, &info),
            _ => (!usages_in(
                &csr,
                &["client auth"],
                &["digital signature", "key encipherment"],
            ))
            .then(|| {
                "usages did not match [client auth digital signature key encipherment]".to_string()
            }),
        };
        if let Some(p) = problem {
            return self.fail(&csr, &p).await;
        }
        let mut validity = self.duration;
        if let Some(e) = csr.spec.expiration_seconds {
            validity = validity.min(Duration::from_secs(
                u64::try_from(e.max(600)).unwrap_or(600),
            ));
        }
        let used: Vec<String> = usages(&csr).into_iter().map(str::to_string).collect();
        let pem = self
            .signer
            .sign(&csr.spec.request.0, &used, validity)
            .map_err(|e| anyhow::anyhow!("signing {name}: {e}"))?;
        let mut next = (*csr).clone();
        next.status.get_or_insert_with(Default::default).certificate =
            Some(k8s_openapi::ByteString(pem.into_bytes()));
        let api: Api<CertificateSigningRequest> = Api::all(self.client.clone());
        api.replace_status(name, &PostParams::default(), &next)
            .await
            .context("write the certificate")?;
        info!(csr = name, signer, subject = %info.common_name, ?validity, "signed certificate");
        Ok(())
    }

    async fn fail(&self, csr: &CertificateSigningRequest, why: &str) -> anyhow::Result<()> {
        let name = csr.metadata.name.clone().unwrap_or_default();
        warn!(csr = %name, reason = why, "refusing to sign");
        let mut next = csr.clone();
        next.status
            .get_or_insert_with(Default::default)
            .conditions
            .get_or_insert_with(Vec::new)
            .push(CertificateSigningRequestCondition {
                type_: "Failed".into(),
                status: "True".into(),
                reason: Some("SignerValidationFailure".into()),
                message: Some(why.to_string()),
                last_update_time: Some(now()),
                last_transition_time: None,
            });
        let api: Api<CertificateSigningRequest> = Api::all(self.client.clone());
        api.replace_status(&name, &PostParams::default(), &next)
            .await
            .context("mark the request Failed")?;
        Ok(())
    }
}
