//! ControllerRevisions for DaemonSets and StatefulSets (upstream `pkg/controller/history`):
//! one revision per distinct pod template, named `<owner>-<hash>`, numbered in order; the
//! hash is also the pods' `controller-revision-hash` label.

use std::sync::Arc;

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Api, DeleteParams, PostParams};

use crate::deployment::util::{compute_hash, equal_ignore_hash};
use crate::util;

/// `controller-revision-hash`.
pub const REVISION_HASH: &str = "controller-revision-hash";

/// The template a revision stores (`{"spec":{"template":…,"$patch":"replace"}}`).
pub fn revision_template(cr: &ControllerRevision) -> Option<PodTemplateSpec> {
    let data = cr.data.as_ref()?;
    serde_json::from_value(data.0.get("spec")?.get("template")?.clone()).ok()
}

/// Finds or creates the revision for `template` among `revisions` (owned by `owner`),
/// bumping its number to the newest if an old one is reused. Returns it and its hash.
pub async fn ensure_revision(
    api: &Api<ControllerRevision>,
    owner: OwnerReference,
    labels: Option<std::collections::BTreeMap<String, String>>,
    template: &PodTemplateSpec,
    collision_count: Option<i32>,
    revisions: &[Arc<ControllerRevision>],
) -> anyhow::Result<(ControllerRevision, String)> {
    let owner_name = owner.name.clone();
    let ns = api.namespace().map(str::to_string);
    let max = revisions.iter().map(|r| r.revision).max().unwrap_or(0);
    if let Some(existing) = revisions
        .iter()
        .filter(|r| revision_template(r).is_some_and(|t| equal_ignore_hash(&t, template)))
        .max_by_key(|r| r.revision)
    {
        let hash = existing
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(REVISION_HASH).cloned())
            .unwrap_or_else(|| compute_hash(template, collision_count));
        if existing.revision < max {
            let mut next = (**existing).clone();
            next.revision = max + 1;
            let name = next.metadata.name.clone().unwrap_or_default();
            let updated = api
                .replace(&name, &PostParams::default(), &next)
                .await
                .context("bump controllerrevision")?;
            return Ok((updated, hash));
        }
        return Ok(((**existing).clone(), hash));
    }
    let hash = compute_hash(template, collision_count);
    let mut labels = labels.unwrap_or_default();
    labels.insert(REVISION_HASH.into(), hash.clone());
    let cr = ControllerRevision {
        metadata: ObjectMeta {
            name: Some(format!("{owner_name}-{hash}")),
            namespace: ns,
            labels: Some(labels),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        data: Some(RawExtension(serde_json::json!({
            "spec": {"template": template, "$patch": "replace"}
        }))),
        revision: max + 1,
    };
    match api.create(&PostParams::default(), &cr).await {
        Ok(created) => Ok((created, hash)),
        Err(e) if util::is_already_exists(&e) => {
            let name = cr.metadata.name.clone().unwrap_or_default();
            let got = api.get(&name).await.context("get controllerrevision")?;
            Ok((got, hash))
        }
        Err(e) => Err(e).context("create controllerrevision"),
    }
}

/// Deletes the oldest revisions beyond `limit` that no pod uses.
pub async fn truncate(
    client: &kube::Client,
    ns: &str,
    revisions: &[Arc<ControllerRevision>],
    live_hashes: &[String],
    limit: i32,
) -> anyhow::Result<()> {
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), ns);
    let mut unused: Vec<&Arc<ControllerRevision>> = revisions
        .iter()
        .filter(|r| {
            let h = r
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(REVISION_HASH));
            h.is_none_or(|h| !live_hashes.contains(h))
        })
        .collect();
    let extra = unused
        .len()
        .saturating_sub(usize::try_from(limit.max(0)).unwrap_or(0));
    unused.sort_by_key(|r| r.revision);
    for r in unused.into_iter().take(extra) {
        let name = r.metadata.name.clone().unwrap_or_default();
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if util::is_not_found(&e) => {}
            Err(e) => return Err(e).context("delete controllerrevision"),
        }
    }
    Ok(())
}
