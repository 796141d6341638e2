//! The field manager: upstream's chain of managers (`managedfields/internal`) and the
//! structured-merge-diff `Updater`, over JSON.
//!
//! Outermost first, as upstream's `NewDefaultFieldManager` builds it: version check,
//! last-applied updater, last-applied manager (client-side apply upgrade), skip-non-applied
//! (`before-first-apply`), cap managers, build manager info, managed-fields updater (times),
//! strip meta, structured merge.

use serde_json::{Map, Value, json};

use super::fieldpath::{FieldSet, MAX_DEPTH, Path, PathElement, go_json, too_deep, values_equal};
use super::fields::{
    self, Managed, ManagerId, OPERATION_APPLY, OPERATION_UPDATE, VersionedSet, cap_update_managers,
};
use super::typed::{
    Comparison, Schema, compare, field_set_lenient, merge, remove_items, render_errors,
    reset_paths, to_field_set,
};
use crate::status::{ApiError, Cause};

/// The annotation client-side apply keeps the last applied configuration in.
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Upstream `DefaultMaxUpdateManagers`.
const MAX_UPDATE_MANAGERS: usize = 10;

/// Upstream `apimachineryvalidation.TotalAnnotationSizeLimitB`.
const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

/// Everything one request's field management needs.
pub(crate) struct Ctx<'a> {
    pub schema: Schema<'a>,
    pub api_version: &'a str,
    pub kind: &'a str,
    pub subresource: &'a str,
    /// The strategy's reset fields (upstream `IgnoredFields`).
    pub ignored: FieldSet,
    pub now: &'a str,
}

/// One field another manager owns and the request would change.
#[derive(Debug, Clone)]
pub(crate) struct Conflict {
    pub manager: ManagerId,
    pub path: Path,
}

pub(crate) enum Failure {
    Conflicts(Vec<Conflict>),
    Api(ApiError),
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Failure {
        Failure::Api(e)
    }
}

/// Whether the API group of `api_version` is a built-in one (CRDs live in dotted groups
/// that do not end in `.k8s.io`).
pub(crate) fn is_builtin(api_version: &str) -> bool {
    let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    group.is_empty() || !group.contains('.') || group.ends_with(".k8s.io")
}

/// Upstream's `schema.GroupVersionKind.String()` of an object's `apiVersion`/`kind`.
fn gvk_string(api_version: &str, kind: &str) -> String {
    let (group, version) = match api_version.split('/').collect::<Vec<_>>().as_slice() {
        [v] if !v.is_empty() => ("", *v),
        [g, v] => (*g, *v),
        _ => ("", ""),
    };
    format!("{group}/{version}, Kind={kind}")
}

fn str_at<'v>(v: &'v Value, path: &[&str]) -> &'v str {
    let mut cur = v;
    for p in path {
        match cur.get(*p) {
            Some(next) => cur = next,
            None => return "",
        }
    }
    cur.as_str().unwrap_or("")
}

/// The object without `metadata.managedFields`.
pub(crate) fn without_managed_fields(v: &Value) -> Value {
    let mut out = v.clone();
    fields::set_on_object(&mut out, None);
    out
}

const POD_TEMPLATE: &str = r#"{"metadata":{"creationTimestamp":null},"spec":{"containers":null}}"#;

/// The object upstream's `ObjectCreater.New` gives for a kind, as JSON: what a create is
/// compared against. For built-in types that is the Go zero value (`metadata` with a null
/// `creationTimestamp`, `spec`/`status` and the nested non-pointer structs that always
/// serialize); for custom resources only `apiVersion` and `kind`.
pub(crate) fn empty_object(api_version: &str, kind: &str, like: &Value) -> Value {
    if !is_builtin(api_version) {
        return json!({"apiVersion": api_version, "kind": kind});
    }
    let template: Value = serde_json::from_str(POD_TEMPLATE).unwrap_or(Value::Null);
    let mut obj = Map::new();
    obj.insert("metadata".into(), json!({"creationTimestamp": null}));
    if like.get("spec").is_some_and(Value::is_object) {
        let spec = match kind {
            "Deployment" => json!({"selector": null, "strategy": {}, "template": template}),
            "ReplicaSet" | "Job" => json!({"template": template}),
            "StatefulSet" | "DaemonSet" => {
                json!({"selector": null, "template": template, "updateStrategy": {}})
            }
            "CronJob" => json!({"jobTemplate": {
                "metadata": {"creationTimestamp": null},
                "spec": {"template": template}
            }}),
            "Pod" => json!({"containers": null}),
            _ => json!({}),
        };
        obj.insert("spec".into(), spec);
    }
    if kind == "PodTemplate" {
        obj.insert("template".into(), template);
    }
    if like.get("status").is_some_and(Value::is_object) {
        obj.insert("status".into(), json!({}));
    }
    Value::Object(obj)
}

/// Upstream `stripMetaManager`: these paths are never owned.
fn strip_set() -> &'static FieldSet {
    static SET: std::sync::OnceLock<FieldSet> = std::sync::OnceLock::new();
    SET.get_or_init(build_strip_set)
}

fn build_strip_set() -> FieldSet {
    let f = |names: &[&str]| -> Vec<PathElement> {
        names
            .iter()
            .map(|n| PathElement::Field((*n).to_string()))
            .collect()
    };
    FieldSet::from_paths([
        f(&["apiVersion"]),
        f(&["kind"]),
        f(&["metadata"]),
        f(&["metadata", "name"]),
        f(&["metadata", "namespace"]),
        f(&["metadata", "creationTimestamp"]),
        f(&["metadata", "selfLink"]),
        f(&["metadata", "uid"]),
        f(&["metadata", "clusterName"]),
        f(&["metadata", "generation"]),
        f(&["metadata", "managedFields"]),
        f(&["metadata", "resourceVersion"]),
    ])
}

fn strip_meta(managed: &mut Managed, id: &ManagerId) {
    if let Some(vs) = managed.fields.get_mut(id) {
        vs.set.subtract(strip_set());
        if vs.set.is_empty() {
            managed.fields.remove(id);
        }
    }
}

/// Structured-merge-diff `Updater.update`: compares the objects, finds conflicts with every
/// other manager and, when allowed, takes the changed fields from them (and drops removed
/// fields from everyone).
fn update(
    ctx: &Ctx<'_>,
    old: &Value,
    new: &Value,
    managed: &mut Managed,
    workflow: &ManagerId,
    force: bool,
) -> Result<Comparison, Failure> {
    let cmp = compare(old, new, &ctx.schema).exclude(&ctx.ignored);
    let mut conflicts: Vec<(ManagerId, FieldSet)> = Vec::new();
    // A create (or an object only the workflow manages) has nobody to conflict with.
    if managed.fields.keys().any(|id| id != workflow) {
        let changed = cmp.modified.union(&cmp.added);
        for (id, vs) in &managed.fields {
            if id == workflow {
                continue;
            }
            let c = vs.set.intersection(&changed);
            if !c.is_empty() {
                conflicts.push((id.clone(), c));
            }
        }
    }
    if !force && !conflicts.is_empty() {
        conflicts.sort_by_key(|(id, _)| id.identifier());
        let list = conflicts
            .into_iter()
            .flat_map(|(id, set)| {
                set.paths().into_iter().map(move |path| Conflict {
                    manager: id.clone(),
                    path,
                })
            })
            .collect();
        return Err(Failure::Conflicts(list));
    }
    for (id, c) in conflicts {
        if let Some(vs) = managed.fields.get_mut(&id) {
            vs.set.subtract(&c);
        }
    }
    if !cmp.removed.is_empty() {
        for (id, vs) in managed.fields.iter_mut() {
            if id != workflow {
                vs.set.subtract(&cmp.removed);
            }
        }
    }
    managed.fields.retain(|_, vs| !vs.set.is_empty());
    Ok(cmp)
}

/// Structured-merge-diff `Updater.Update`: the manager takes what changed.
fn structured_update(
    ctx: &Ctx<'_>,
    old: &Value,
    new: &Value,
    managed: &mut Managed,
    id: &ManagerId,
) {
    let Ok(cmp) = update(ctx, old, new, managed, id, true) else {
        return;
    };
    let mut set = managed
        .fields
        .remove(id)
        .map(|vs| vs.set)
        .unwrap_or_default();
    set.absorb(cmp.modified);
    set.absorb(cmp.added);
    set.subtract(&cmp.removed);
    set.subtract_recursive(&ctx.ignored);
    if set.is_empty() {
        managed.fields.remove(id);
    } else {
        managed.fields.insert(
            id.clone(),
            VersionedSet {
                set,
                api_version: ctx.api_version.to_string(),
                applied: false,
            },
        );
    }
}

/// The update half of the chain below skip-non-applied: cap managers, build manager info,
/// managed-fields updater (`current-operation`, times), strip meta, structured update.
fn chain_update(
    ctx: &Ctx<'_>,
    old: &Value,
    new: &Value,
    managed: &mut Managed,
    manager: &str,
    operation: &str,
) {
    let manager = if manager.is_empty() {
        "unknown"
    } else {
        manager
    };
    let id = ManagerId::new(manager, operation, ctx.api_version, ctx.subresource);
    let current = ManagerId::current_operation();
    structured_update(ctx, old, new, managed, &current);
    strip_meta(managed, &current);
    if let Some(vs) = managed.fields.remove(&current) {
        let mut set = vs.set;
        if let Some(previous) = managed.fields.remove(&id) {
            set.absorb(previous.set);
        }
        managed.fields.insert(
            id.clone(),
            VersionedSet {
                set,
                api_version: vs.api_version,
                applied: operation == OPERATION_APPLY,
            },
        );
        managed.times.insert(id, ctx.now.to_string());
    }
    cap_update_managers(managed, MAX_UPDATE_MANAGERS);
}

/// Structured-merge-diff `Updater.prune`: removes what the applier applied last time and no
/// longer applies, unless someone else owns it.
fn prune(
    ctx: &Ctx<'_>,
    merged: &Value,
    managed: &Managed,
    applier: &ManagerId,
    last: Option<&VersionedSet>,
) -> Value {
    let Some(last) = last.filter(|l| !l.set.is_empty()) else {
        return merged.clone();
    };
    // Nothing dropped since last time: every path of the last set (and every named field
    // above one) is owned by the applier's new set, so pruning cannot remove anything.
    if managed
        .fields
        .get(applier)
        .is_some_and(|now| last.set.difference(&now.set).is_empty())
    {
        return merged.clone();
    }
    let schema = &ctx.schema;
    let last = last.set.ensure_named_fields_are_members();
    let pruned = remove_items(merged, &last, schema);

    // addBackOwnedItems: put back whatever any manager (the applier's new set included) owns.
    let mut owned = FieldSet::new();
    for vs in managed.fields.values() {
        owned = owned.union(&vs.set);
    }
    let owned = owned.ensure_named_fields_are_members();
    let merged_set = field_set_lenient(merged, schema).ensure_named_fields_are_members();
    let pruned_set = field_set_lenient(&pruned, schema).ensure_named_fields_are_members();
    let pruned = remove_items(
        merged,
        &merged_set.difference(&pruned_set.union(&owned)),
        schema,
    );

    // addBackDanglingItems: only remove what the applier owned last time.
    let pruned_set = field_set_lenient(&pruned, schema).ensure_named_fields_are_members();
    remove_items(
        merged,
        &merged_set.difference(&pruned_set).intersection(&last),
        schema,
    )
}

/// `failed to create typed patch object (<ns>/<name>; <gvk>): <errors>`: upstream returns it
/// as a plain error, which the API server sends as a 500 with an empty reason.
fn typed_patch_error(config: &Value, message: &str) -> ApiError {
    ApiError::new(
        500,
        "",
        format!(
            "failed to create typed patch object ({}/{}; {}): {message}",
            str_at(config, &["metadata", "namespace"]),
            str_at(config, &["metadata", "name"]),
            gvk_string(str_at(config, &["apiVersion"]), str_at(config, &["kind"])),
        ),
    )
}

/// Structured-merge-diff `Updater.Apply` plus the structured merge manager's checks.
/// `Ok(None)` when the object does not change.
fn structured_apply(
    ctx: &Ctx<'_>,
    live: &Value,
    live_exists: bool,
    config: &Value,
    managed: &mut Managed,
    id: &ManagerId,
    force: bool,
) -> Result<Option<Value>, Failure> {
    if config
        .get("metadata")
        .and_then(|m| m.get("managedFields"))
        .is_some_and(|v| !v.is_null())
    {
        return Err(ApiError::bad_request("metadata.managedFields must be nil").into());
    }
    let config_set = to_field_set(config, &ctx.schema, true)
        .map_err(|errs| typed_patch_error(config, &render_errors(&errs)))?;
    let merged = merge(live, config, &ctx.schema);
    let last = managed.fields.get(id).cloned();
    managed.fields.insert(
        id.clone(),
        VersionedSet {
            set: config_set.recursive_difference(&ctx.ignored),
            api_version: ctx.api_version.to_string(),
            applied: true,
        },
    );
    let mut new = prune(ctx, &merged, managed, id, last.as_ref());
    // The strategy resets what this endpoint may not change (status on the main resource,
    // spec on /status); doing it here keeps a re-apply of such fields a no-op.
    reset_paths(&mut new, live_exists.then_some(live), &ctx.ignored);
    update(ctx, live, &new, managed, id, force)?;
    if live_exists && values_equal(live, &new) {
        Ok(None)
    } else {
        Ok(Some(new))
    }
}

/// Everything below the last-applied layers: skip-non-applied, then the apply half of the
/// chain. Returns the new object (without managed fields) and the managed fields.
fn chain_apply(
    ctx: &Ctx<'_>,
    live: Option<&Value>,
    config: &Value,
    managed: &Managed,
    manager: &str,
    force: bool,
) -> Result<(Value, Managed), Failure> {
    let mut managed = managed.clone();
    let live_value = live.cloned().unwrap_or_else(|| Value::Object(Map::new()));
    if managed.fields.is_empty()
        && let Some(l) = live
    {
        // Upstream skip-non-applied: an object nobody tracked yet gets its fields recorded
        // as `before-first-apply` first.
        let empty = empty_object(ctx.api_version, ctx.kind, l);
        chain_update(
            ctx,
            &empty,
            l,
            &mut managed,
            "before-first-apply",
            OPERATION_UPDATE,
        );
    }
    let manager = if manager.is_empty() {
        "unknown"
    } else {
        manager
    };
    let id = ManagerId::new(manager, OPERATION_APPLY, ctx.api_version, ctx.subresource);
    let result = structured_apply(
        ctx,
        &live_value,
        live.is_some(),
        config,
        &mut managed,
        &id,
        force,
    )?;
    strip_meta(&mut managed, &id);
    match result {
        Some(obj) => {
            managed.times.insert(id, ctx.now.to_string());
            Ok((obj, managed))
        }
        None => Ok((live_value, managed)),
    }
}

/// Upstream `lastAppliedManager.allowedConflictsFromLastApplied`: the fields of the
/// client-side apply annotation whose values still match the live object.
fn allowed_conflicts_from_last_applied(ctx: &Ctx<'_>, live: &Value) -> Option<FieldSet> {
    let text = str_at(live, &["metadata", "annotations", LAST_APPLIED_ANNOTATION]);
    if text.is_empty() {
        return None;
    }
    let last: Value = serde_json::from_str(text).ok()?;
    if !last.is_object() || too_deep(&last, MAX_DEPTH) {
        return None;
    }
    if str_at(&last, &["apiVersion"]) != ctx.api_version {
        return None;
    }
    let set = to_field_set(&last, &ctx.schema, true).ok()?;
    let cmp = compare(&last, live, &ctx.schema);
    Some(
        set.difference(&cmp.modified)
            .difference(&cmp.added)
            .difference(&cmp.removed),
    )
}

/// Upstream `buildLastApplied`: the applied object without the annotation, as Go encodes it
/// (sorted keys, trailing newline).
fn build_last_applied(config: &Value) -> String {
    let mut c = config.clone();
    if let Some(Value::Object(a)) = c.get_mut("metadata").and_then(|m| m.get_mut("annotations")) {
        a.remove(LAST_APPLIED_ANNOTATION);
    }
    let mut out = String::new();
    go_json(&c, &mut out);
    out.push('\n');
    out
}

/// Upstream `SetLastApplied`: dropped again when the annotations would exceed their size
/// limit.
fn set_last_applied(obj: &mut Value, value: String) {
    let Value::Object(root) = obj else { return };
    let meta = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(meta) = meta else { return };
    let ann = meta
        .entry("annotations")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(ann) = ann else { return };
    ann.insert(LAST_APPLIED_ANNOTATION.to_string(), Value::String(value));
    let total: usize = ann
        .iter()
        .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
        .sum();
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        ann.remove(LAST_APPLIED_ANNOTATION);
    }
}

/// Upstream `NewConflictError`: 409 `Conflict`, one `FieldManagerConflict` cause per field.
pub(crate) fn conflict_error(conflicts: &[Conflict]) -> ApiError {
    let message = if conflicts.len() == 1 {
        format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            conflicts[0].manager.describe(),
            conflicts[0].path
        )
    } else {
        let mut groups: Vec<(String, &ManagerId, Vec<&Path>)> = Vec::new();
        for c in conflicts {
            let key = c.manager.identifier();
            match groups.iter_mut().find(|(k, _, _)| *k == key) {
                Some((_, _, paths)) => paths.push(&c.path),
                None => groups.push((key, &c.manager, vec![&c.path])),
            }
        }
        groups.sort_by(|a, b| a.0.cmp(&b.0));
        let mut lines = Vec::new();
        for (_, id, paths) in groups {
            lines.push(format!("conflicts with {}:", id.describe()));
            lines.extend(paths.iter().map(|p| format!("- {p}")));
        }
        format!(
            "Apply failed with {} conflicts: {}",
            conflicts.len(),
            lines.join("\n")
        )
    };
    let mut e = ApiError::new(409, "Conflict", message);
    e.causes = conflicts
        .iter()
        .map(|c| {
            Cause::new(
                "FieldManagerConflict",
                c.path.to_string(),
                format!("conflict with {}", c.manager.describe()),
            )
        })
        .collect();
    e
}

/// The whole apply chain. `live` and `config` are checked for depth by the caller.
pub(crate) fn apply(
    ctx: &Ctx<'_>,
    live: Option<&Value>,
    config: &Value,
    manager: &str,
    force: bool,
) -> Result<Value, ApiError> {
    // Version check.
    let (cfg_version, cfg_kind) = (str_at(config, &["apiVersion"]), str_at(config, &["kind"]));
    if cfg_version != ctx.api_version || cfg_kind != ctx.kind || !config.is_object() {
        return Err(ApiError::bad_request(format!(
            "invalid object type: {}",
            gvk_string(cfg_version, cfg_kind)
        )));
    }
    let managed = match live {
        Some(l) => fields::decode(l)
            .map_err(|e| ApiError::new(500, "", format!("failed to decode managed fields: {e}")))?,
        None => Managed::default(),
    };
    let live_stripped = live.map(without_managed_fields);
    let live_ref = live_stripped.as_ref();

    // Last-applied manager: `kubectl` upgrading from client-side apply may take the fields
    // its own annotation still describes.
    let result = match chain_apply(ctx, live_ref, config, &managed, manager, force) {
        Err(Failure::Conflicts(conflicts)) if manager == "kubectl" => {
            match live_ref.and_then(|l| allowed_conflicts_from_last_applied(ctx, l)) {
                None => Err(Failure::Conflicts(conflicts)),
                Some(allowed) => {
                    let remaining: Vec<Conflict> = conflicts
                        .iter()
                        .filter(|c| !allowed.has(&c.path.0))
                        .cloned()
                        .collect();
                    if remaining.is_empty() {
                        chain_apply(ctx, live_ref, config, &managed, manager, true)
                    } else {
                        Err(Failure::Conflicts(remaining))
                    }
                }
            }
        }
        other => other,
    };
    let (mut obj, managed) = match result {
        Ok(r) => r,
        Err(Failure::Conflicts(c)) => return Err(conflict_error(&c)),
        Err(Failure::Api(e)) => return Err(e),
    };

    // Last-applied updater: keep the client-side apply annotation in sync for `kubectl`.
    let has_last_applied =
        !str_at(&obj, &["metadata", "annotations", LAST_APPLIED_ANNOTATION]).is_empty();
    if manager == "kubectl" && has_last_applied {
        set_last_applied(&mut obj, build_last_applied(config));
    }
    fields::set_on_object(&mut obj, fields::encode(&managed));
    Ok(obj)
}

/// The whole update chain (upstream `FieldManager.Update`, without errors: on any failure
/// the live object's managed fields are kept).
pub(crate) fn update_object(
    ctx: &Ctx<'_>,
    old: Option<&Value>,
    out: &mut Value,
    manager: &str,
    operation: &str,
) {
    let new = &*out;
    if !new.get("metadata").is_some_and(Value::is_object) {
        return;
    }
    let from_old = || -> Managed { old.and_then(|o| fields::decode(o).ok()).unwrap_or_default() };
    let managed = if !ctx.subresource.is_empty() {
        from_old()
    } else if fields::is_reset(new) {
        Managed::default()
    } else {
        match fields::decode(new) {
            Ok(m) if !m.fields.is_empty() => m,
            _ => from_old(),
        }
    };
    fields::set_on_object(out, None);

    // Skip-non-applied: an existing object nobody tracks stays untracked until applied to.
    let uid = old.map(|o| str_at(o, &["metadata", "uid"])).unwrap_or("");
    if managed.fields.is_empty() && !uid.is_empty() {
        return;
    }
    // The comparison leaves `metadata.managedFields` out, so `old` is compared as it is.
    let empty;
    let old_value = match old {
        Some(o) => o,
        None => {
            empty = empty_object(ctx.api_version, ctx.kind, out);
            &empty
        }
    };
    let mut managed = managed;
    let operation = if operation == OPERATION_APPLY {
        OPERATION_APPLY
    } else {
        OPERATION_UPDATE
    };
    chain_update(ctx, old_value, out, &mut managed, manager, operation);
    fields::set_on_object(out, fields::encode(&managed));
}
