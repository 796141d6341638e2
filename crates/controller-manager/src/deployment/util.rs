//! Pure helpers of the Deployment controller (upstream `pkg/controller/deployment/util`):
//! the pod-template hash, revision annotations, rolling-update fenceposts, replica counts,
//! status and conditions.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// `pod-template-hash`: the label the controller adds to a ReplicaSet's selector, template and
/// pods.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// `deployment.kubernetes.io/revision`.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// `deployment.kubernetes.io/revision-history`: earlier revisions of a reused ReplicaSet.
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// `deployment.kubernetes.io/desired-replicas`.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// `deployment.kubernetes.io/max-replicas`.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
/// The legacy rollback annotation (never copied).
const DEPRECATED_ROLLBACK_TO: &str = "deprecated.deployment.rollback.to";
/// kubectl's last-applied annotation (never copied).
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// Upstream's `maxRevHistoryLengthInChars`.
pub const MAX_REV_HISTORY_CHARS: usize = 2000;

/// Condition reasons (upstream's constants).
pub mod reason {
    /// A new ReplicaSet was created.
    pub const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
    /// An existing ReplicaSet matched the template.
    pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
    /// The new ReplicaSet is fully available.
    pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
    /// Progress was made.
    pub const RS_UPDATED: &str = "ReplicaSetUpdated";
    /// No progress within progressDeadlineSeconds.
    pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
    /// Paused.
    pub const PAUSED: &str = "DeploymentPaused";
    /// Resumed.
    pub const RESUMED: &str = "DeploymentResumed";
    /// Creating the ReplicaSet failed.
    pub const FAILED_RS_CREATE: &str = "ReplicaSetCreateError";
    /// Available condition: enough replicas.
    pub const MIN_AVAILABLE: &str = "MinimumReplicasAvailable";
    /// Available condition: too few replicas.
    pub const MIN_UNAVAILABLE: &str = "MinimumReplicasUnavailable";
}

/// `rand.SafeEncodeString`'s alphabet (no vowels, no confusable characters).
const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// `rand.SafeEncodeString`.
pub fn safe_encode_string(s: &str) -> String {
    s.bytes()
        .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
        .collect()
}

/// `controller.ComputeHash`: FNV-32a over the template's serialization (its
/// [`semantic`] JSON, so equal templates hash equally however they were written), then the collision
/// count (4 little-endian bytes in an 8-byte buffer), the decimal sum rendered with
/// [`safe_encode_string`]. Upstream hashes a `spew` dump of the Go struct; kumo hashes the
/// JSON of the typed template, so hashes are stable for kumo but differ from upstream's.
pub fn compute_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let bytes = semantic_template(template)
        .map(|v| v.to_string().into_bytes())
        .unwrap_or_default();
    let mut h = Fnv32a::new();
    h.write(&bytes);
    if let Some(c) = collision_count {
        let mut buf = [0u8; 8];
        buf[..4].copy_from_slice(&(c as u32).to_le_bytes());
        h.write(&buf);
    }
    safe_encode_string(&h.sum().to_string())
}

/// 32-bit FNV-1a (the `fnv` crate is 64-bit).
struct Fnv32a(u32);

impl Fnv32a {
    fn new() -> Self {
        Fnv32a(0x811c_9dc5)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u32::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0193);
        }
    }
    fn sum(&self) -> u32 {
        self.0
    }
}

/// A template with the `pod-template-hash` label removed.
fn without_hash(t: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = t.clone();
    if let Some(m) = t.metadata.as_mut()
        && let Some(l) = m.labels.as_mut()
    {
        l.remove(POD_TEMPLATE_HASH);
        if l.is_empty() {
            m.labels = None;
        }
    }
    t
}

/// Drops what Go's `Semantic.DeepEqual` of decoded structs cannot see: nulls, `false`, `0`,
/// `""` and empty maps and lists (non-pointer fields and nil-vs-empty collections). Clients
/// that round-trip a template through Go structs (`kubectl rollout undo`) drop them too.
pub fn semantic(v: serde_json::Value) -> Option<serde_json::Value> {
    use serde_json::Value;
    match v {
        Value::Null | Value::Bool(false) => None,
        Value::Number(n) if n.as_f64() == Some(0.0) => None,
        Value::String(s) if s.is_empty() => None,
        Value::Array(a) => {
            let a: Vec<Value> = a
                .into_iter()
                .map(|x| semantic(x).unwrap_or(Value::Null))
                .collect();
            (!a.is_empty()).then_some(Value::Array(a))
        }
        Value::Object(o) => {
            let o: serde_json::Map<String, Value> = o
                .into_iter()
                .filter_map(|(k, v)| semantic(v).map(|v| (k, v)))
                .collect();
            (!o.is_empty()).then_some(Value::Object(o))
        }
        other => Some(other),
    }
}

fn semantic_template(t: &PodTemplateSpec) -> Option<serde_json::Value> {
    serde_json::to_value(t).ok().and_then(semantic)
}

/// `EqualIgnoreHash`: templates semantically equal but for `pod-template-hash`.
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    semantic_template(&without_hash(a)) == semantic_template(&without_hash(b))
}

/// `spec.replicas` (default 1).
pub fn replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// A ReplicaSet's `spec.replicas` (default 1).
pub fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn rs_status(rs: &ReplicaSet) -> k8s_openapi::api::apps::v1::ReplicaSetStatus {
    rs.status.clone().unwrap_or_default()
}

/// Whether the Deployment uses RollingUpdate (the default).
pub fn is_rolling_update(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        .is_none_or(|t| t == "RollingUpdate")
}

/// `intstr.GetScaledValueFromIntOrPercent`.
pub fn scaled_value(v: &IntOrString, total: i32, round_up: bool) -> i32 {
    match v {
        IntOrString::Int(i) => *i,
        IntOrString::String(s) => {
            let Some(p) = s.strip_suffix('%').and_then(|p| p.parse::<f64>().ok()) else {
                return s.parse().unwrap_or(0);
            };
            let v = p * f64::from(total) / 100.0;
            (if round_up { v.ceil() } else { v.floor() }) as i32
        }
    }
}

/// `ResolveFenceposts`: (maxSurge, maxUnavailable) in pods; both zero becomes 0/1.
pub fn resolve_fenceposts(d: &Deployment) -> (i32, i32) {
    let desired = replicas(d);
    let ru = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let pct = IntOrString::String("25%".into());
    let surge_v = ru
        .and_then(|r| r.max_surge.clone())
        .unwrap_or_else(|| pct.clone());
    let unav_v = ru.and_then(|r| r.max_unavailable.clone()).unwrap_or(pct);
    let surge = scaled_value(&surge_v, desired, true);
    let mut unavailable = scaled_value(&unav_v, desired, false);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable)
}

/// `MaxSurge` (0 for Recreate).
pub fn max_surge(d: &Deployment) -> i32 {
    if !is_rolling_update(d) {
        return 0;
    }
    resolve_fenceposts(d).0
}

/// `MaxUnavailable` (0 for Recreate or zero replicas; at most `replicas`).
pub fn max_unavailable(d: &Deployment) -> i32 {
    if !is_rolling_update(d) || replicas(d) == 0 {
        return 0;
    }
    resolve_fenceposts(d).1.min(replicas(d))
}

/// Sum of `spec.replicas`.
pub fn replica_count(rss: &[&ReplicaSet]) -> i32 {
    rss.iter().map(|r| rs_replicas(r)).sum()
}

/// Sum of `status.replicas`.
pub fn actual_replica_count(rss: &[&ReplicaSet]) -> i32 {
    rss.iter().map(|r| rs_status(r).replicas).sum()
}

/// Sum of `status.readyReplicas`.
pub fn ready_replica_count(rss: &[&ReplicaSet]) -> i32 {
    rss.iter()
        .map(|r| rs_status(r).ready_replicas.unwrap_or(0))
        .sum()
}

/// Sum of `status.availableReplicas`.
pub fn available_replica_count(rss: &[&ReplicaSet]) -> i32 {
    rss.iter()
        .map(|r| rs_status(r).available_replicas.unwrap_or(0))
        .sum()
}

/// The revision annotation as a number (0 if absent or invalid).
pub fn revision(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// `MaxRevision`.
pub fn max_revision(rss: &[&ReplicaSet]) -> i64 {
    rss.iter().map(|r| revision(r)).max().unwrap_or(0)
}

/// Creation timestamp then name (`ReplicaSetsByCreationTimestamp`).
pub fn sort_by_creation(rss: &mut [ReplicaSet]) {
    rss.sort_by(|a, b| {
        let ta = a.metadata.creation_timestamp.as_ref().map(|t| t.0);
        let tb = b.metadata.creation_timestamp.as_ref().map(|t| t.0);
        ta.cmp(&tb).then(a.metadata.name.cmp(&b.metadata.name))
    });
}

/// `FindNewReplicaSet`: the oldest ReplicaSet whose template equals the Deployment's.
pub fn find_new_rs(d: &Deployment, sorted: &[ReplicaSet]) -> Option<usize> {
    let template = d
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    sorted.iter().position(|rs| {
        rs.spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .is_some_and(|t| equal_ignore_hash(t, &template))
    })
}

/// `copyDeploymentAnnotationsToReplicaSet`: every Deployment annotation but the controller's
/// own and kubectl's last-applied; whether anything changed.
pub fn copy_annotations(d: &Deployment, rs: &mut ReplicaSet) -> bool {
    let mut changed = false;
    let annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    for (k, v) in d.metadata.annotations.iter().flatten() {
        if [
            LAST_APPLIED,
            REVISION,
            REVISION_HISTORY,
            DESIRED_REPLICAS,
            MAX_REPLICAS,
            DEPRECATED_ROLLBACK_TO,
        ]
        .contains(&k.as_str())
        {
            continue;
        }
        if annotations.get(k) != Some(v) {
            annotations.insert(k.clone(), v.clone());
            changed = true;
        }
    }
    changed
}

/// `SetReplicasAnnotations`: desired/max replicas; whether anything changed.
pub fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let a = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let mut changed = false;
    for (k, v) in [(DESIRED_REPLICAS, desired), (MAX_REPLICAS, max)] {
        let v = v.to_string();
        if a.get(k) != Some(&v) {
            a.insert(k.to_string(), v);
            changed = true;
        }
    }
    changed
}

/// `ReplicasAnnotationsNeedUpdate`.
pub fn replicas_annotations_need_update(rs: &ReplicaSet, desired: i32, max: i32) -> bool {
    let a = rs.metadata.annotations.as_ref();
    a.and_then(|a| a.get(DESIRED_REPLICAS)) != Some(&desired.to_string())
        || a.and_then(|a| a.get(MAX_REPLICAS)) != Some(&max.to_string())
}

/// `GetDesiredReplicasAnnotation`.
pub fn desired_replicas_annotation(rs: &ReplicaSet) -> Option<i32> {
    rs.metadata
        .annotations
        .as_ref()?
        .get(DESIRED_REPLICAS)?
        .parse()
        .ok()
}

fn max_replicas_annotation(rs: &ReplicaSet) -> Option<i32> {
    rs.metadata
        .annotations
        .as_ref()?
        .get(MAX_REPLICAS)?
        .parse()
        .ok()
}

/// `SetNewReplicaSetAnnotations`: copy annotations, move the revision forward (keeping the
/// earlier ones in `revision-history` when a ReplicaSet is reused by a rollback) and, for a
/// ReplicaSet about to be created, the replicas annotations. Whether anything changed.
pub fn set_new_rs_annotations(
    d: &Deployment,
    rs: &mut ReplicaSet,
    new_revision: &str,
    exists: bool,
    limit_chars: usize,
) -> bool {
    let mut changed = copy_annotations(d, rs);
    let annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let old_revision = annotations.get(REVISION).cloned();
    let old_int: i64 = match old_revision.as_deref() {
        None | Some("") => 0,
        Some(v) => match v.parse() {
            Ok(n) => n,
            Err(_) => return false,
        },
    };
    let Ok(new_int) = new_revision.parse::<i64>() else {
        return false;
    };
    if old_int < new_int {
        annotations.insert(REVISION.into(), new_revision.to_string());
        changed = true;
    }
    if let Some(old) = old_revision.filter(|_| old_int < new_int) {
        let history = annotations
            .get(REVISION_HISTORY)
            .cloned()
            .unwrap_or_default();
        let mut olds: Vec<&str> = history.split(',').collect();
        if olds.first().is_none_or(|f| f.is_empty()) {
            annotations.insert(REVISION_HISTORY.into(), old);
        } else {
            let mut total = history.len() + old.len() + 1;
            let mut start = 0;
            while total > limit_chars && start < olds.len() {
                total -= olds[start].len() + 1;
                start += 1;
            }
            if total <= limit_chars {
                olds = olds.split_off(start);
                olds.push(&old);
                let joined = olds.join(",");
                annotations.insert(REVISION_HISTORY.into(), joined);
            }
        }
    }
    if !exists {
        let r = replicas(d);
        if set_replicas_annotations(rs, r, r + max_surge(d)) {
            changed = true;
        }
    }
    changed
}

/// `NewRSNewReplicas`: how big the new ReplicaSet may be now.
pub fn new_rs_new_replicas(d: &Deployment, all: &[&ReplicaSet], new_rs: &ReplicaSet) -> i32 {
    if !is_rolling_update(d) {
        return replicas(d);
    }
    let current = replica_count(all);
    let max_total = replicas(d) + max_surge(d);
    if current >= max_total {
        return rs_replicas(new_rs);
    }
    let up = (max_total - current).min(replicas(d) - rs_replicas(new_rs));
    rs_replicas(new_rs) + up
}

/// `IsSaturated`: the new ReplicaSet has all the desired replicas available.
pub fn is_saturated(d: &Deployment, rs: Option<&ReplicaSet>) -> bool {
    let Some(rs) = rs else {
        return false;
    };
    let Some(desired) = desired_replicas_annotation(rs) else {
        return false;
    };
    rs_replicas(rs) == replicas(d)
        && desired == replicas(d)
        && rs_status(rs).available_replicas.unwrap_or(0) == replicas(d)
}

/// `getReplicaSetFraction`.
fn rs_fraction(rs: &ReplicaSet, d: &Deployment) -> i32 {
    if replicas(d) == 0 {
        return -rs_replicas(rs);
    }
    let deployment_replicas = replicas(d) + max_surge(d);
    let annotated = max_replicas_annotation(rs)
        .unwrap_or_else(|| d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0));
    if annotated == 0 {
        return 0;
    }
    let size = f64::from(rs_replicas(rs)) * f64::from(deployment_replicas) / f64::from(annotated);
    size.round() as i32 - rs_replicas(rs)
}

/// `GetProportion`.
pub fn proportion(rs: &ReplicaSet, d: &Deployment, to_add: i32, added: i32) -> i32 {
    if rs_replicas(rs) == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = rs_fraction(rs, d);
    let allowed = to_add - added;
    if to_add > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    }
}

/// `HasProgressDeadline`.
pub fn has_progress_deadline(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .is_some_and(|p| p != i32::MAX)
}

/// `GetDeploymentCondition`.
pub fn condition<'a>(status: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    status
        .conditions
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .find(|c| c.type_ == type_)
}

/// `NewDeploymentCondition` (both times now).
pub fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
) -> DeploymentCondition {
    let now = Time(jiff::Timestamp::now());
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

/// `SetDeploymentCondition`: no-op if status and reason are unchanged; keeps the transition
/// time if only the reason changed.
pub fn set_condition(status: &mut DeploymentStatus, mut cond: DeploymentCondition) {
    if let Some(cur) = condition(status, &cond.type_) {
        if cur.status == cond.status && cur.reason == cond.reason {
            return;
        }
        if cur.status == cond.status {
            cond.last_transition_time = cur.last_transition_time.clone();
        }
    }
    remove_condition(status, &cond.type_);
    status.conditions.get_or_insert_with(Vec::new).push(cond);
}

/// `RemoveDeploymentCondition`.
pub fn remove_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(c) = status.conditions.as_mut() {
        c.retain(|c| c.type_ != type_);
    }
}

/// `DeploymentComplete`.
pub fn is_complete(d: &Deployment, s: &DeploymentStatus) -> bool {
    let r = replicas(d);
    s.updated_replicas.unwrap_or(0) == r
        && s.replicas.unwrap_or(0) == r
        && s.available_replicas.unwrap_or(0) == r
        && s.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
}

/// `DeploymentProgressing`: more updated, fewer old, more ready or more available replicas.
pub fn is_progressing(d: &Deployment, new: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let old_old = old.replicas.unwrap_or(0) - old.updated_replicas.unwrap_or(0);
    let new_old = new.replicas.unwrap_or(0) - new.updated_replicas.unwrap_or(0);
    new.updated_replicas.unwrap_or(0) > old.updated_replicas.unwrap_or(0)
        || new_old < old_old
        || new.ready_replicas.unwrap_or(0) > old.ready_replicas.unwrap_or(0)
        || new.available_replicas.unwrap_or(0) > old.available_replicas.unwrap_or(0)
}

/// `DeploymentTimedOut`.
pub fn is_timed_out(d: &Deployment, s: &DeploymentStatus, now: jiff::Timestamp) -> bool {
    if !has_progress_deadline(d) {
        return false;
    }
    let Some(c) = condition(s, "Progressing") else {
        return false;
    };
    match c.reason.as_deref() {
        Some(reason::NEW_RS_AVAILABLE) => return false,
        Some(reason::TIMED_OUT) => return true,
        _ => {}
    }
    let Some(from) = c.last_update_time.as_ref() else {
        return false;
    };
    let deadline = d
        .spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .unwrap_or(600);
    from.0 + jiff::SignedDuration::from_secs(i64::from(deadline)) < now
}

/// `calculateStatus`.
pub fn calculate_status(
    all: &[&ReplicaSet],
    new_rs: Option<&ReplicaSet>,
    d: &Deployment,
) -> DeploymentStatus {
    let available = available_replica_count(all);
    let total = replica_count(all);
    let unavailable = (total - available).max(0);
    let old = d.status.clone().unwrap_or_default();
    let mut status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(actual_replica_count(all)),
        updated_replicas: Some(new_rs.map(|r| actual_replica_count(&[r])).unwrap_or(0)),
        ready_replicas: Some(ready_replica_count(all)),
        available_replicas: Some(available),
        unavailable_replicas: Some(unavailable),
        collision_count: old.collision_count,
        conditions: old.conditions.clone(),
        terminating_replicas: None,
    };
    if available >= replicas(d) - max_unavailable(d) {
        set_condition(
            &mut status,
            new_condition(
                "Available",
                "True",
                reason::MIN_AVAILABLE,
                "Deployment has minimum availability.".into(),
            ),
        );
    } else {
        set_condition(
            &mut status,
            new_condition(
                "Available",
                "False",
                reason::MIN_UNAVAILABLE,
                "Deployment does not have minimum availability.".into(),
            ),
        );
    }
    status
}

/// Status equality ignoring absent-vs-zero counts.
pub fn status_equal(a: &DeploymentStatus, b: &DeploymentStatus) -> bool {
    let n = |s: &DeploymentStatus| {
        (
            s.observed_generation,
            s.replicas.unwrap_or(0),
            s.updated_replicas.unwrap_or(0),
            s.ready_replicas.unwrap_or(0),
            s.available_replicas.unwrap_or(0),
            s.unavailable_replicas.unwrap_or(0),
            s.collision_count,
            s.conditions.clone().unwrap_or_default(),
        )
    };
    n(a) == n(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn deploy(replicas: i32, surge: IntOrString, unavailable: IntOrString) -> Deployment {
        Deployment {
            metadata: ObjectMeta::default(),
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(surge),
                        max_unavailable: Some(unavailable),
                    }),
                }),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn safe_encode_matches_upstream_alphabet() {
        // Each byte maps to ALPHANUMS[b % 27]: '0' (48) → 48 % 27 = 21 → '4'.
        assert_eq!(safe_encode_string("0"), "4");
        assert_eq!(safe_encode_string("12"), "56");
        let h = compute_hash(&PodTemplateSpec::default(), None);
        assert!(h.bytes().all(|b| ALPHANUMS.contains(&b)));
        assert_ne!(h, compute_hash(&PodTemplateSpec::default(), Some(1)));
    }

    #[test]
    fn fnv32a_known_vectors() {
        let mut h = Fnv32a::new();
        h.write(b"a");
        assert_eq!(h.sum(), 0xe40c_292c);
        let mut h = Fnv32a::new();
        h.write(b"foobar");
        assert_eq!(h.sum(), 0xbf9c_f968);
    }

    #[test]
    fn semantic_equality_ignores_go_zero_values() {
        let a: PodTemplateSpec = serde_json::from_value(serde_json::json!({
            "metadata": {"labels": {"app": "x", "pod-template-hash": "abc"}, "generation": 0},
            "spec": {"containers": [{"name": "c", "image": "i", "stdin": false, "ports": []}], "hostIPC": false}
        }))
        .expect("a");
        let b: PodTemplateSpec = serde_json::from_value(serde_json::json!({
            "metadata": {"labels": {"app": "x"}},
            "spec": {"containers": [{"name": "c", "image": "i"}]}
        }))
        .expect("b");
        assert!(equal_ignore_hash(&a, &b));
        assert_eq!(
            compute_hash(&without_hash(&a), None),
            compute_hash(&b, None)
        );
        let c: PodTemplateSpec = serde_json::from_value(serde_json::json!({
            "metadata": {"labels": {"app": "x"}},
            "spec": {"containers": [{"name": "c", "image": "j"}]}
        }))
        .expect("c");
        assert!(!equal_ignore_hash(&a, &c));
    }

    #[test]
    fn fenceposts() {
        let d = deploy(
            10,
            IntOrString::String("25%".into()),
            IntOrString::String("25%".into()),
        );
        assert_eq!(resolve_fenceposts(&d), (3, 2));
        let d = deploy(3, IntOrString::Int(0), IntOrString::Int(0));
        assert_eq!(resolve_fenceposts(&d), (0, 1));
        let d = deploy(
            1,
            IntOrString::String("25%".into()),
            IntOrString::String("25%".into()),
        );
        assert_eq!(resolve_fenceposts(&d), (1, 0));
    }

    #[test]
    fn revision_history_on_reuse() {
        let d = deploy(1, IntOrString::Int(1), IntOrString::Int(0));
        let mut rs = ReplicaSet::default();
        assert!(set_new_rs_annotations(
            &d,
            &mut rs,
            "1",
            false,
            MAX_REV_HISTORY_CHARS
        ));
        let a = rs.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(a.get(REVISION).map(String::as_str), Some("1"));
        assert_eq!(a.get(DESIRED_REPLICAS).map(String::as_str), Some("1"));
        assert_eq!(a.get(MAX_REPLICAS).map(String::as_str), Some("2"));
        assert!(set_new_rs_annotations(
            &d,
            &mut rs,
            "3",
            true,
            MAX_REV_HISTORY_CHARS
        ));
        assert!(set_new_rs_annotations(
            &d,
            &mut rs,
            "5",
            true,
            MAX_REV_HISTORY_CHARS
        ));
        let a = rs.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(a.get(REVISION).map(String::as_str), Some("5"));
        assert_eq!(a.get(REVISION_HISTORY).map(String::as_str), Some("1,3"));
        assert!(!set_new_rs_annotations(
            &d,
            &mut rs,
            "4",
            true,
            MAX_REV_HISTORY_CHARS
        ));
    }

    #[test]
    fn new_replicas_respect_surge() {
        let d = deploy(3, IntOrString::Int(1), IntOrString::Int(0));
        let rs = |n: i32| ReplicaSet {
            spec: Some(k8s_openapi::api::apps::v1::ReplicaSetSpec {
                replicas: Some(n),
                ..Default::default()
            }),
            ..Default::default()
        };
        let (old, new) = (rs(3), rs(0));
        assert_eq!(new_rs_new_replicas(&d, &[&old, &new], &new), 1);
    }
}
