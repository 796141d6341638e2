//! Helpers shared by the controllers: keys, label selectors, controller references
//! (adopt/release like `ControllerRefManager`), pod readiness, events and the worker loop.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, ObjectMeta, OwnerReference, Time,
};
use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event as KEvent, EventType, Recorder, Reporter};
use kumo_client::WorkQueue;
use tracing::{Instrument as _, debug, info_span, warn};

/// Upstream's `maxRetries` for most controllers: after this many failures a key is dropped
/// from the rate limiter (it is still retried on the next event).
pub const MAX_RETRIES: u32 = 15;

/// `namespace/name` (or `name` for cluster-scoped objects), client-go's `MetaNamespaceKeyFunc`.
pub fn key_of(meta: &ObjectMeta) -> String {
    match &meta.namespace {
        Some(ns) if !ns.is_empty() => format!("{ns}/{}", meta.name.as_deref().unwrap_or("")),
        _ => meta.name.clone().unwrap_or_default(),
    }
}

/// Splits a key into namespace (maybe empty) and name.
pub fn split_key(key: &str) -> (&str, &str) {
    match key.split_once('/') {
        Some((ns, name)) => (ns, name),
        None => ("", key),
    }
}

/// Whether `labels` satisfy `selector` (matchLabels and matchExpressions). A `None` or empty
/// selector matches everything — callers that need upstream's "empty selects nothing" for
/// workloads check [`selector_is_empty`] first.
pub fn selector_matches(
    selector: &LabelSelector,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    if let Some(ml) = &selector.match_labels {
        for (k, v) in ml {
            if labels.get(k) != Some(v) {
                return false;
            }
        }
    }
    for expr in selector.match_expressions.as_deref().unwrap_or(&[]) {
        let values = expr.values.as_deref().unwrap_or(&[]);
        let have = labels.get(&expr.key);
        let ok = match expr.operator.as_str() {
            "In" => have.is_some_and(|v| values.contains(v)),
            "NotIn" => have.is_none_or(|v| !values.contains(v)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// Whether a selector selects nothing in particular (no labels, no expressions).
pub fn selector_is_empty(selector: &LabelSelector) -> bool {
    selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(|e| e.is_empty())
}

/// Whether `labels` match a plain equality selector map (Services, RCs).
pub fn map_selector_matches(
    selector: &BTreeMap<String, String>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The owner reference with `controller: true`, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .find(|o| o.controller == Some(true))
}

/// A controller reference to `owner` (controller and blockOwnerDeletion true).
pub fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).to_string(),
        kind: K::kind(&()).to_string(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// An `ObjectReference` to `obj` (for events).
pub fn object_ref<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    ObjectReference {
        api_version: Some(K::api_version(&()).to_string()),
        kind: Some(K::kind(&()).to_string()),
        name: obj.meta().name.clone(),
        namespace: obj.meta().namespace.clone(),
        uid: obj.meta().uid.clone(),
        resource_version: obj.meta().resource_version.clone(),
        field_path: None,
    }
}

/// Whether the object is being deleted.
pub fn is_deleting(meta: &ObjectMeta) -> bool {
    meta.deletion_timestamp.is_some()
}

/// Whether an API error is a 404.
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Whether an API error is a 409 conflict (or AlreadyExists).
pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// Whether an API error is a 409 AlreadyExists.
pub fn is_already_exists(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists")
}

/// Whether creating in a namespace failed because it is terminating.
pub fn is_namespace_terminating(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 403
        && (s.message.contains("is being terminated") || s.message.contains("NamespaceTerminating")))
}

/// Adds a controller reference to `obj` (strategic merge patch with the object's UID as a
/// precondition, like `ControllerRefManager.AdoptX`).
pub async fn adopt<K>(api: &Api<K>, obj_meta: &ObjectMeta, owner: OwnerReference) -> kube::Result<K>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = serde_json::json!({
        "metadata": {
            "ownerReferences": [owner],
            "uid": obj_meta.uid,
        }
    });
    api.patch(
        obj_meta.name.as_deref().unwrap_or(""),
        &PatchParams::default(),
        &Patch::Strategic(patch),
    )
    .await
}

/// Removes the owner reference with `owner_uid` from `obj` (`ControllerRefManager.ReleaseX`).
pub async fn release<K>(api: &Api<K>, obj_meta: &ObjectMeta, owner_uid: &str) -> kube::Result<()>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = serde_json::json!({
        "metadata": {
            "ownerReferences": [{"$patch": "delete", "uid": owner_uid}],
            "uid": obj_meta.uid,
        }
    });
    match api
        .patch(
            obj_meta.name.as_deref().unwrap_or(""),
            &PatchParams::default(),
            &Patch::Strategic(patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        // Gone or already changed UID (422 on the uid precondition): nothing to release.
        Err(e) if is_not_found(&e) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 422 => Ok(()),
        Err(e) => Err(e),
    }
}

/// The outcome of `ClaimObject` for one dependent.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// Ours (already, or just adopted).
    Owned,
    /// Not ours.
    NotOwned,
    /// Ours but it no longer matches: release it.
    Release,
    /// An orphan that matches: adopt it.
    Adopt,
}

/// client-go's `ClaimObject` decision for a dependent of `owner` (without the API call).
pub fn claim_decision(owner: &ObjectMeta, dependent: &ObjectMeta, matches: bool) -> Claim {
    if let Some(cref) = controller_of(dependent) {
        if cref.uid.as_str() != owner.uid.as_deref().unwrap_or("") {
            return Claim::NotOwned;
        }
        if matches {
            return Claim::Owned;
        }
        if is_deleting(owner) {
            return Claim::NotOwned;
        }
        return Claim::Release;
    }
    if is_deleting(owner) || !matches || is_deleting(dependent) {
        return Claim::NotOwned;
    }
    if owner.namespace.is_some() && owner.namespace != dependent.namespace {
        return Claim::NotOwned;
    }
    Claim::Adopt
}

/// Whether a pod is active: not Succeeded/Failed and not being deleted.
pub fn is_pod_active(pod: &Pod) -> bool {
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("");
    phase != "Succeeded" && phase != "Failed" && pod.metadata.deletion_timestamp.is_none()
}

/// Whether a pod has terminated (Succeeded or Failed).
pub fn is_pod_terminated(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

/// The pod's Ready condition's last transition, if Ready=True.
pub fn pod_ready_since(pod: &Pod) -> Option<Option<&Time>> {
    pod.status
        .as_ref()?
        .conditions
        .as_deref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")
        .map(|c| c.last_transition_time.as_ref())
}

/// Whether a pod is Ready.
pub fn is_pod_ready(pod: &Pod) -> bool {
    pod_ready_since(pod).is_some()
}

/// `IsPodAvailable`: ready for at least `min_ready_seconds`.
pub fn is_pod_available(pod: &Pod, min_ready_seconds: i32, now: jiff::Timestamp) -> bool {
    let Some(since) = pod_ready_since(pod) else {
        return false;
    };
    if min_ready_seconds <= 0 {
        return true;
    }
    match since {
        Some(t) => t.0 + jiff::SignedDuration::from_secs(i64::from(min_ready_seconds)) < now,
        None => false,
    }
}

/// Publishes events without blocking the sync that emits them.
#[derive(Clone)]
pub struct Events {
    recorder: Arc<Recorder>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Events")
    }
}

impl Events {
    /// A recorder reporting as `controller` (e.g. `deployment-controller`).
    pub fn new(client: kube::Client, controller: &str) -> Self {
        let reporter = Reporter {
            controller: controller.to_string(),
            instance: None,
        };
        Events {
            recorder: Arc::new(Recorder::new(client, reporter)),
        }
    }

    /// A Normal event.
    pub fn normal(&self, regarding: ObjectReference, reason: &str, note: String) {
        self.publish(EventType::Normal, regarding, reason, note);
    }

    /// A Warning event.
    pub fn warning(&self, regarding: ObjectReference, reason: &str, note: String) {
        self.publish(EventType::Warning, regarding, reason, note);
    }

    fn publish(&self, type_: EventType, regarding: ObjectReference, reason: &str, note: String) {
        let recorder = self.recorder.clone();
        let ev = KEvent {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: reason.to_string(),
            secondary: None,
        };
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&ev, &regarding).await {
                debug!(error = %e, "event not recorded");
            }
        });
    }
}

/// A task aborted when this handle is dropped (so work stops with its owner, e.g. when
/// leadership is lost and the controllers' future is dropped).
#[derive(Debug)]
pub struct AbortOnDrop<T>(pub tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `workers` workers over `queue`, calling `sync` per key: success forgets the key's
/// backoff, failure re-queues it rate limited (up to [`MAX_RETRIES`], like upstream's
/// `handleErr`).
pub async fn run_workers<F, Fut>(
    name: &'static str,
    queue: WorkQueue<String>,
    workers: usize,
    sync: F,
) where
    F: Fn(String) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    // A JoinSet aborts the workers if this future is dropped.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers.max(1) {
        let queue = queue.clone();
        let sync = sync.clone();
        tasks.spawn(async move {
            while let Some(key) = queue.get().await {
                let result = sync(key.clone())
                    .instrument(info_span!("sync", controller = name, key = %key))
                    .await;
                match result {
                    Ok(()) => queue.forget(&key),
                    Err(e) => {
                        if queue.num_requeues(&key) < MAX_RETRIES {
                            debug!(controller = name, %key, error = %format!("{e:#}"), "sync failed; requeueing");
                            queue.add_rate_limited(key.clone());
                        } else {
                            warn!(controller = name, %key, error = %format!("{e:#}"), "dropping key out of the queue");
                            queue.forget(&key);
                        }
                    }
                }
                queue.done(&key);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// Seconds as a `Duration` from an upstream-style duration string (`40s`, `5m`, `500ms`,
/// `1h`, or a bare number of seconds).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    (secs >= 0.0 && secs.is_finite()).then(|| Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    #[test]
    fn selectors() {
        let labels: BTreeMap<String, String> = [
            ("app".to_string(), "web".to_string()),
            ("tier".into(), "fe".into()),
        ]
        .into();
        let sel = LabelSelector {
            match_labels: Some([("app".to_string(), "web".to_string())].into()),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "In".into(),
                values: Some(vec!["fe".into(), "be".into()]),
            }]),
        };
        assert!(selector_matches(&sel, Some(&labels)));
        let sel2 = LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "DoesNotExist".into(),
                values: None,
            }]),
        };
        assert!(!selector_matches(&sel2, Some(&labels)));
        assert!(selector_is_empty(&LabelSelector::default()));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("40s"), Some(Duration::from_secs(40)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_duration("x"), None);
    }

    #[test]
    fn claims() {
        let owner = ObjectMeta {
            uid: Some("o".into()),
            namespace: Some("d".into()),
            ..Default::default()
        };
        let mut dep = ObjectMeta {
            namespace: Some("d".into()),
            ..Default::default()
        };
        assert_eq!(claim_decision(&owner, &dep, true), Claim::Adopt);
        assert_eq!(claim_decision(&owner, &dep, false), Claim::NotOwned);
        dep.owner_references = Some(vec![OwnerReference {
            uid: "o".into(),
            controller: Some(true),
            ..Default::default()
        }]);
        assert_eq!(claim_decision(&owner, &dep, true), Claim::Owned);
        assert_eq!(claim_decision(&owner, &dep, false), Claim::Release);
    }
}
