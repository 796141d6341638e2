//! Server-side apply: `metadata.managedFields` (fieldsV1), field ownership and conflicts, the
//! behaviour of upstream's `k8s.io/apimachinery/pkg/util/managedfields` field manager on top
//! of `sigs.k8s.io/structured-merge-diff`.
//!
//! - [`apply`] merges an applied configuration (`PATCH` with `application/apply-patch+yaml`)
//!   into the live object, prunes what the manager stopped applying, reports conflicts with
//!   other managers (409 with upstream's message and `FieldManagerConflict` causes) or, with
//!   `force`, takes their fields, and records the manager's `Apply` entry.
//! - [`update_managed_fields`] records what a create/update/patch changed as owned by the
//!   writer (`Update` entries), taking those fields from other managers.
//! - [`FieldSet`] is a field set with its `fieldsV1` encoding.
//!
//! List semantics come from [`crate::patchmeta::list_meta`] (lists it does not know are
//! atomic, as upstream treats untagged lists); objects are structs of named fields except a
//! few built-in atomic ones (label selectors, `nodeSelector`, env value sources). The
//! strategy's reset fields (`status` on the main resource, `spec` on `/status`) are ignored
//! and reset to the live values; `apiVersion`, `kind`, `metadata.name`/`namespace`/`uid`/
//! `resourceVersion`/`generation`/`creationTimestamp`/`managedFields` are never owned.
//! Everything is a pure function of its arguments (the caller passes the time).
#![warn(missing_docs)]
// The API returns `ApiError` by value as the rest of the crate does; errors are the cold path.
#![allow(clippy::result_large_err)]

mod apply;
mod fieldpath;
mod fields;
mod typed;

#[cfg(test)]
mod tests;

use serde_json::Value;

pub use apply::LAST_APPLIED_ANNOTATION;
pub use fieldpath::{
    FieldSet, MAX_DEPTH, Path, PathElement, compare_values, value_to_string, values_equal,
};
pub use fields::{ManagedFieldsEntry, OPERATION_APPLY, OPERATION_UPDATE};
pub use typed::ListResolver;

use crate::patchmeta::list_meta;
use crate::status::{ApiError, Cause};

/// Upstream `validation.FieldManagerMaxLength`.
pub const FIELD_MANAGER_MAX_LENGTH: usize = 128;

/// Options of [`apply_with`]; [`apply`] fills them from its arguments.
#[derive(Clone, Copy)]
pub struct ApplyOptions<'a> {
    /// The field manager (`fieldManager` query parameter; required for apply).
    pub manager: &'a str,
    /// `force=true`: take conflicting fields instead of failing.
    pub force: bool,
    /// The request's `group/version` (or `v1`), which the applied object must match.
    pub api_version: &'a str,
    /// The request's kind, which the applied object must match.
    pub kind: &'a str,
    /// `Some("status")` etc. for an apply to a subresource.
    pub subresource: Option<&'a str>,
    /// The time recorded in the manager's entry (RFC 3339, e.g. `2024-05-01T12:00:00Z`).
    pub now: &'a str,
    /// List semantics; `None` uses [`crate::patchmeta::list_meta`].
    pub lists: Option<ListResolver<'a>>,
    /// Fields the endpoint ignores (the strategy's reset fields); `None` uses
    /// [`reset_fields`].
    pub reset: Option<&'a FieldSet>,
}

/// Options of [`update_managed_fields_with`]; [`update_managed_fields`] fills them from its
/// arguments.
#[derive(Clone, Copy)]
pub struct UpdateOptions<'a> {
    /// The writer's field manager (see [`default_manager`]).
    pub manager: &'a str,
    /// `Update` (anything but `Apply` records an `Update` entry).
    pub operation: &'a str,
    /// The request's `group/version`.
    pub api_version: &'a str,
    /// `Some("status")`, `Some("scale")`… for a write to a subresource.
    pub subresource: Option<&'a str>,
    /// The object's kind; `None` reads `kind` from the new object.
    pub kind: Option<&'a str>,
    /// The time recorded when the writer changed something (RFC 3339).
    pub now: &'a str,
    /// List semantics; `None` uses [`crate::patchmeta::list_meta`].
    pub lists: Option<ListResolver<'a>>,
    /// Ignored fields; `None` uses [`reset_fields`].
    pub reset: Option<&'a FieldSet>,
}

impl std::fmt::Debug for ApplyOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApplyOptions")
            .field("manager", &self.manager)
            .field("force", &self.force)
            .field("api_version", &self.api_version)
            .field("kind", &self.kind)
            .field("subresource", &self.subresource)
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for UpdateOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpdateOptions")
            .field("manager", &self.manager)
            .field("operation", &self.operation)
            .field("api_version", &self.api_version)
            .field("subresource", &self.subresource)
            .field("kind", &self.kind)
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

fn field_path(names: &[&str]) -> Vec<PathElement> {
    names
        .iter()
        .map(|n| PathElement::Field((*n).to_string()))
        .collect()
}

/// The fields a write to `subresource` of `kind` ignores and the strategy resets (upstream
/// `GetResetFields`): `status` on the main resource; on `/status` everything the status
/// strategy keeps from the live object (`spec`, plus `metadata.labels` for Deployments and
/// `metadata.deletionTimestamp`/`ownerReferences` for Pods); nothing on other subresources.
/// Custom resources without a status subresource should pass an empty set instead.
pub fn reset_fields(api_version: &str, kind: &str, subresource: Option<&str>) -> FieldSet {
    let _ = api_version;
    match subresource {
        None => FieldSet::from_paths([field_path(&["status"])]),
        Some("status") => {
            let mut paths = vec![field_path(&["spec"])];
            match kind {
                "Deployment" => paths.push(field_path(&["metadata", "labels"])),
                "Pod" => {
                    paths.push(field_path(&["metadata", "deletionTimestamp"]));
                    paths.push(field_path(&["metadata", "ownerReferences"]));
                }
                _ => {}
            }
            FieldSet::from_paths(paths)
        }
        Some(_) => FieldSet::new(),
    }
}

/// The field manager of a request that names none (upstream `prefixFromUserAgent`): the
/// user agent up to its first `/`, printable characters only, at most
/// [`FIELD_MANAGER_MAX_LENGTH`] bytes (`kubectl/v1.30.0 (linux/amd64)` → `kubectl`).
pub fn default_manager(user_agent: &str) -> String {
    let prefix = user_agent.split('/').next().unwrap_or("");
    let mut out = String::new();
    for c in prefix.chars() {
        if c.is_control() || (c.is_whitespace() && c != ' ') {
            continue;
        }
        if out.len() + c.len_utf8() > FIELD_MANAGER_MAX_LENGTH {
            break;
        }
        out.push(c);
    }
    out
}

/// The request's `fieldManager` if set, otherwise [`default_manager`] of the user agent
/// (upstream `managerOrUserAgent`).
pub fn manager_or_user_agent(field_manager: Option<&str>, user_agent: &str) -> String {
    match field_manager {
        Some(m) if !m.is_empty() => m.to_string(),
        _ => default_manager(user_agent),
    }
}

/// Validates the `fieldManager` request option like upstream (`ValidatePatchOptions`,
/// `ValidateFieldManager`): required for apply, at most [`FIELD_MANAGER_MAX_LENGTH`] bytes,
/// printable characters only. The caller wraps the causes in an `Invalid` error on
/// `PatchOptions`/`CreateOptions`/`UpdateOptions` (group `meta.k8s.io`).
pub fn validate_field_manager(manager: &str, apply: bool) -> Vec<Cause> {
    let mut causes = Vec::new();
    if apply && manager.is_empty() {
        causes.push(Cause::new(
            "FieldValueRequired",
            "fieldManager",
            "Required value: is required for apply patch",
        ));
    }
    if manager.len() > FIELD_MANAGER_MAX_LENGTH {
        causes.push(Cause::new(
            "FieldValueTooLong",
            "fieldManager",
            format!("Too long: may not be more than {FIELD_MANAGER_MAX_LENGTH} bytes"),
        ));
    }
    for (i, c) in manager.char_indices() {
        if c.is_control() || (c.is_whitespace() && c != ' ') {
            causes.push(Cause::invalid(
                "fieldManager",
                &Value::String(manager.to_string()),
                &format!("invalid character U+{:04X} (at position {i})", c as u32),
            ));
        }
    }
    causes
}

/// Decodes an object's `metadata.managedFields` (upstream `DecodeManagedFields`, same error
/// wording). An object without them has none.
pub fn decode_managed_fields(obj: &Value) -> Result<Vec<ManagedFieldsEntry>, String> {
    fields::decode_entries(obj)
}

fn depth_error() -> ApiError {
    ApiError::bad_request(format!(
        "object nesting exceeds the maximum depth of {MAX_DEPTH}"
    ))
}

/// Server-side apply of `applied` (the decoded apply patch) onto `live` (`None`: the object
/// does not exist and apply creates it; the caller checks name and namespace) by `manager`.
///
/// Returns the object to store with `metadata.managedFields` updated. Errors as upstream:
/// 409 `Conflict` listing the conflicting fields (unless `force`), 400 for an object of
/// another kind or version (`invalid object type: apps/v1, Kind=Deployment`) or one carrying
/// `metadata.managedFields`, 500 (empty reason, like upstream's plain errors) for list items
/// without their keys or duplicated (`failed to create typed patch object (...)`).
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    api_version: &str,
    kind: &str,
    now: &str,
) -> Result<Value, ApiError> {
    apply_with(
        live,
        applied,
        &ApplyOptions {
            manager,
            force,
            api_version,
            kind,
            subresource: None,
            now,
            lists: None,
            reset: None,
        },
    )
}

/// [`apply`] with every option (subresource, list semantics, reset fields).
pub fn apply_with(
    live: Option<&Value>,
    applied: &Value,
    opts: &ApplyOptions<'_>,
) -> Result<Value, ApiError> {
    if too_deep_any(live) || fieldpath::too_deep(applied, MAX_DEPTH) {
        return Err(depth_error());
    }
    let (api_version, kind) = (opts.api_version, opts.kind);
    let default_lists = move |p: &[&str]| list_meta(api_version, kind, p);
    let default_reset;
    let reset = match opts.reset {
        Some(r) => r,
        None => {
            default_reset = reset_fields(api_version, kind, opts.subresource);
            &default_reset
        }
    };
    let ctx = apply::Ctx {
        schema: typed::Schema {
            lists: opts.lists.unwrap_or(&default_lists),
            builtin: apply::is_builtin(api_version),
        },
        api_version,
        kind,
        subresource: opts.subresource.unwrap_or(""),
        ignored: reset.clone(),
        now: opts.now,
    };
    apply::apply(&ctx, live, applied, opts.manager, opts.force)
}

fn too_deep_any(v: Option<&Value>) -> bool {
    v.is_some_and(|v| fieldpath::too_deep(v, MAX_DEPTH))
}

/// Records a non-apply write (create: `old` is `None`; update; patch) by `manager`: the
/// fields that changed from `old` to `new` become the manager's (`operation` `Update`, the
/// request's `api_version` and `subresource`), and leave every other manager's set. Returns
/// `new` with `metadata.managedFields` set.
///
/// As upstream: managed fields sent in `new` replace the stored ones (`[]` or `[{}]` clears
/// them), otherwise the ones of `old` carry over; an existing object without managed fields
/// stays untracked; at most ten update entries are kept (older ones fold into
/// `ancient-changes`); nothing fails (on odd input the stored managed fields stay).
pub fn update_managed_fields(
    old: Option<&Value>,
    new: &Value,
    manager: &str,
    operation: &str,
    api_version: &str,
    subresource: Option<&str>,
    now: &str,
) -> Value {
    update_managed_fields_with(
        old,
        new,
        &UpdateOptions {
            manager,
            operation,
            api_version,
            subresource,
            kind: None,
            now,
            lists: None,
            reset: None,
        },
    )
}

/// [`update_managed_fields`] with every option.
pub fn update_managed_fields_with(
    old: Option<&Value>,
    new: &Value,
    opts: &UpdateOptions<'_>,
) -> Value {
    let mut out = new.clone();
    update_managed_fields_in_place(old, &mut out, opts);
    out
}

/// [`update_managed_fields_with`] on `new` itself (no copy of the object).
pub fn update_managed_fields_in_place(
    old: Option<&Value>,
    new: &mut Value,
    opts: &UpdateOptions<'_>,
) {
    if too_deep_any(old) || fieldpath::too_deep(new, MAX_DEPTH) {
        let kept = old.and_then(|o| o.get("metadata")?.get("managedFields").cloned());
        fields::set_on_object(new, kept);
        return;
    }
    let api_version = opts.api_version;
    // Owned: `new` is changed below.
    let kind_of_new;
    let kind = match opts.kind {
        Some(k) => k,
        None => {
            kind_of_new = new
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            &kind_of_new
        }
    };
    let default_lists = move |p: &[&str]| list_meta(api_version, kind, p);
    let default_reset;
    let reset = match opts.reset {
        Some(r) => r,
        None => {
            default_reset = reset_fields(api_version, kind, opts.subresource);
            &default_reset
        }
    };
    let ctx = apply::Ctx {
        schema: typed::Schema {
            lists: opts.lists.unwrap_or(&default_lists),
            builtin: apply::is_builtin(api_version),
        },
        api_version,
        kind,
        subresource: opts.subresource.unwrap_or(""),
        ignored: reset.clone(),
        now: opts.now,
    };
    apply::update_object(&ctx, old, new, opts.manager, opts.operation);
}

/// The field set of an object as an applier of it would own it (upstream `ToFieldSet`),
/// with list semantics from [`crate::patchmeta::list_meta`]. Errors are upstream's
/// validation messages (`.spec.containers: element 0: associative list with keys has an
/// element that omits key field "name" (and doesn't have default value)`).
pub fn field_set_of(obj: &Value, api_version: &str, kind: &str) -> Result<FieldSet, String> {
    if fieldpath::too_deep(obj, MAX_DEPTH) {
        return Err(format!(
            "object nesting exceeds the maximum depth of {MAX_DEPTH}"
        ));
    }
    let lists = move |p: &[&str]| list_meta(api_version, kind, p);
    let schema = typed::Schema {
        lists: &lists,
        builtin: apply::is_builtin(api_version),
    };
    typed::to_field_set(obj, &schema, true).map_err(|e| typed::render_errors(&e))
}
