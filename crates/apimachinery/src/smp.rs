//! Strategic merge patch (`application/strategic-merge-patch+json`), the apply half of
//! upstream's `k8s.io/apimachinery/pkg/util/strategicpatch` (`StrategicMergeMapPatch` /
//! `mergeMap`, current upstream: `removeDirectives`, null discarding in new values, delete
//! lists on any list) with the list metadata of [`crate::patchmeta`].
//!
//! Semantics, as upstream:
//!
//! - objects merge key by key; `null` deletes a key; a value whose JSON type differs from the
//!   original's replaces it; new values lose their `null` members and any object that carries
//!   `$patch`;
//! - lists without `patchStrategy: merge` are replaced by the patch's list;
//! - scalar lists with `merge` are merged as sets (duplicates collapse);
//! - object lists with `merge` are merged by `patchMergeKey`: matching items merge
//!   recursively, new items are added;
//! - order of a merged list (upstream's `normalizeElementOrder`): the items the patch names, in
//!   patch order (or `$setElementOrder` order), with the original's other items slotted in
//!   before a patch item only when both were in the original in that order. Without
//!   `$setElementOrder`, items new to the list therefore come *first*: `[a, b]` patched with
//!   `[c]` gives `[c, a, b]` (what `kubectl patch` gets from upstream); `kubectl apply` sends
//!   `$setElementOrder` and gets its own order;
//! - directives: `$patch: replace | delete` in an object (replace it by the rest of the patch
//!   object / delete it); `$patch: delete | replace` as a list item (delete items with that key
//!   / replace the list by the other items); `$patch: merge` in a list is an error;
//!   `$deleteFromPrimitiveList/<field>: [..]` removes scalars (on any list, as upstream);
//!   `$setElementOrder/<field>: [..]` orders the merged list (what `kubectl apply` sends);
//!   `$retainKeys: [..]` clears the original's keys not listed (and fails if the patch sets a
//!   key not listed).
//!
//! Errors are those of upstream's `interpretStrategicMergePatchError`: malformed
//! `$deleteFromPrimitiveList`, `$retainKeys` and `$setElementOrder` directives are `400
//! BadRequest`; a list of lists is the generic `422 Invalid`; every other failure (a missing
//! merge key, an unknown `$patch` value, mixed element types, an order that contradicts
//! `$setElementOrder`, …) is a `500` whose reason is empty (`StatusReasonUnknown`) and whose
//! message is upstream's Go error text. Where upstream panics (recovered as a 500) a 500 is
//! returned too.
//!
//! Upstream decodes the result into the typed object, which drops fields it does not know;
//! the only such fields SMP can leave behind are directives inside values it copies verbatim
//! (a `$patch: replace` object, a new list item), so they are removed from the result here.
//!
//! Custom resources: upstream does not serve strategic merge patch for them; the route answers
//! `415 UnsupportedMediaType` ([`unsupported_for_custom_resources`]). The apiserver should
//! check [`supports_strategic_merge_patch`] first. [`strategic_merge_patch`] itself accepts any
//! kind: for kinds without list metadata it merges objects and replaces lists, i.e. JSON merge
//! patch semantics (plus directives).

// The public signatures return `ApiError` (a full `metav1.Status`) by value, as the crate does.
#![allow(clippy::result_large_err)]

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Number, Value};

use crate::patch::{MAX_NESTING_DEPTH, exceeds_depth, go_json_kind, rejected};
use crate::patchmeta::{self, SmpMeta, TypeDef};
use crate::status::ApiError;

const DIRECTIVE_MARKER: &str = "$patch";
const DELETE_DIRECTIVE: &str = "delete";
const REPLACE_DIRECTIVE: &str = "replace";
const MERGE_DIRECTIVE: &str = "merge";
const RETAIN_KEYS_DIRECTIVE: &str = "$retainKeys";
const DELETE_FROM_PRIMITIVE_LIST_PREFIX: &str = "$deleteFromPrimitiveList";
const SET_ELEMENT_ORDER_PREFIX: &str = "$setElementOrder";

const ERR_BAD_PATCH_FORMAT_FOR_PRIMITIVE_LIST: &str = "invalid patch format of primitive list";
const ERR_BAD_PATCH_FORMAT_FOR_RETAIN_KEYS: &str = "invalid patch format of retainKeys";
const ERR_BAD_PATCH_FORMAT_FOR_SET_ELEMENT_ORDER_LIST: &str =
    "invalid patch format of setElementOrder list";

/// The media types upstream accepts for PATCH on custom resources.
const CUSTOM_RESOURCE_PATCH_TYPES: &str =
    "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml";

/// Applies a strategic merge patch (a decoded JSON object; `null` is an empty patch) to
/// `original`, with the list metadata of `api_version`/`kind` (see the module docs).
pub fn strategic_merge_patch(
    original: &Value,
    patch: &Value,
    api_version: &str,
    kind: &str,
) -> Result<Value, ApiError> {
    apply(original, patch, patchmeta::root_type(api_version, kind))
}

/// Decodes a request body as upstream does (`400 BadRequest` for a body that is not JSON or
/// not an object; `null` is an empty patch) and applies it with [`strategic_merge_patch`].
pub fn strategic_merge_patch_body(
    original: &Value,
    patch_body: &[u8],
    api_version: &str,
    kind: &str,
) -> Result<Value, ApiError> {
    let patch: Value =
        serde_json::from_slice(patch_body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    strategic_merge_patch(original, &patch, api_version, kind)
}

/// Whether upstream serves strategic merge patch for objects of `api_version`: the built-in
/// API groups do, custom resources do not (they get [`unsupported_for_custom_resources`]).
pub fn supports_strategic_merge_patch(api_version: &str) -> bool {
    patchmeta::is_builtin_group(api_version)
}

/// The `415 UnsupportedMediaType` upstream answers for a strategic merge patch of a custom
/// resource (the negotiation error listing the patch types the route accepts).
pub fn unsupported_for_custom_resources() -> ApiError {
    ApiError::new(
        415,
        "UnsupportedMediaType",
        format!(
            "the body of the request was in an unknown format - accepted media types include: {CUSTOM_RESOURCE_PATCH_TYPES}"
        ),
    )
}

fn apply(
    original: &Value,
    patch: &Value,
    schema: Option<&'static TypeDef>,
) -> Result<Value, ApiError> {
    // Depth first: cloning or walking a hostile value recursively could overflow the stack.
    if exceeds_depth(patch, MAX_NESTING_DEPTH) {
        return Err(ApiError::bad_request("exceeded max depth"));
    }
    let patch = match patch {
        Value::Object(m) => m.clone(),
        // Go's Unmarshal of `null` into a map leaves it empty.
        Value::Null => Map::new(),
        other => {
            return Err(ApiError::bad_request(format!(
                "json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
                go_json_kind(other)
            )));
        }
    };
    if exceeds_depth(original, MAX_NESTING_DEPTH) {
        return Err(ApiError::internal(format!(
            "the object nests deeper than {MAX_NESTING_DEPTH} levels"
        )));
    }
    let Value::Object(original) = original else {
        return Err(ApiError::internal(
            "the object to patch is not a JSON object",
        ));
    };
    let merged = merge_map(original.clone(), patch, schema)?;
    let mut out = Value::Object(merged);
    strip_directives(&mut out);
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Errors.

#[derive(Debug, Clone, PartialEq, Eq)]
enum SmpError {
    /// One of upstream's sentinel errors that map to 400.
    BadRequest(&'static str),
    /// `ErrNoListOfLists`, mapped to the generic 422.
    Unprocessable,
    /// Any other error: 500 with the error text and no reason.
    Internal(String),
    /// Where upstream's code panics (the apiserver recovers and answers 500).
    Panic,
}

type R<T> = Result<T, SmpError>;

impl From<SmpError> for ApiError {
    fn from(e: SmpError) -> ApiError {
        match e {
            SmpError::BadRequest(m) => ApiError::bad_request(m),
            SmpError::Unprocessable => rejected(),
            SmpError::Internal(m) => ApiError::new(500, "", m),
            SmpError::Panic => ApiError::new(
                500,
                "InternalError",
                "This request caused apiserver to panic. Look in the logs for details.",
            ),
        }
    }
}

/// The dynamic Go type of a decoded JSON value (numbers decode as int64 when they parse as
/// one, as the apiserver's `UnmarshalCaseSensitivePreserveInts` does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum GoType {
    Nil,
    Map,
    Slice,
    String,
    Bool,
    Int64,
    Float64,
}

impl GoType {
    fn of(v: &Value) -> GoType {
        match v {
            Value::Null => GoType::Nil,
            Value::Object(_) => GoType::Map,
            Value::Array(_) => GoType::Slice,
            Value::String(_) => GoType::String,
            Value::Bool(_) => GoType::Bool,
            Value::Number(n) if n.as_i64().is_some() => GoType::Int64,
            Value::Number(_) => GoType::Float64,
        }
    }

    /// `reflect.Type.String()`, as `%s` prints it.
    fn name(self) -> &'static str {
        match self {
            GoType::Nil => "%!s(<nil>)",
            GoType::Map => "map[string]interface {}",
            GoType::Slice => "[]interface {}",
            GoType::String => "string",
            GoType::Bool => "bool",
            GoType::Int64 => "int64",
            GoType::Float64 => "float64",
        }
    }
}

/// Go's `==` on two `interface{}` values: false across types, a runtime panic for two maps or
/// two slices.
fn go_eq(a: &Value, b: &Value) -> R<bool> {
    let (ta, tb) = (GoType::of(a), GoType::of(b));
    if ta != tb {
        return Ok(false);
    }
    match ta {
        GoType::Map | GoType::Slice => Err(SmpError::Panic),
        _ => Ok(a == b),
    }
}

/// A hashable identity for a scalar that is equal exactly when Go's `==` says so (Go uses
/// scalars as map keys; maps and slices panic there).
fn scalar_key(v: &Value) -> R<(GoType, String)> {
    scalar_identity(v).ok_or(SmpError::Panic)
}

fn scalar_identity(v: &Value) -> Option<(GoType, String)> {
    let t = GoType::of(v);
    match (t, v) {
        (GoType::Map | GoType::Slice, _) => None,
        // -0 == 0 for Go float64
        (GoType::Float64, Value::Number(n)) if n.as_f64() == Some(0.0) => Some((t, "0".into())),
        _ => Some((t, v.to_string())),
    }
}

/// First positions of scalar values in a list, for Go `==` lookups in constant time. Maps and
/// lists are never recorded: Go panics comparing two of them, callers that must reproduce
/// that scan linearly instead.
#[derive(Default)]
struct FirstIndex(HashMap<(GoType, String), usize>);

impl FirstIndex {
    fn insert_if_absent(&mut self, v: &Value, at: usize) {
        if let Some(id) = scalar_identity(v) {
            self.0.entry(id).or_insert(at);
        }
    }

    fn get(&self, v: &Value) -> Option<usize> {
        scalar_identity(v).and_then(|id| self.0.get(&id).copied())
    }
}

/// `mergepatch.ErrBadArgType(expected, actual)`.
fn bad_arg_type(expected: GoType, actual: &Value) -> SmpError {
    SmpError::Internal(format!(
        "expected a {}, but received a {}",
        expected.name(),
        GoType::of(actual).name()
    ))
}

/// `mergepatch.ErrNoMergeKey(m, k)`.
fn no_merge_key(m: &Map<String, Value>, key: &str) -> SmpError {
    SmpError::Internal(format!(
        "map: {} does not contain declared merge key: {key}",
        go_fmt_map(m)
    ))
}

/// `mergepatch.ErrBadPatchType(t, m)`.
fn bad_patch_type(t: &Value, m: &Map<String, Value>) -> SmpError {
    SmpError::Internal(format!(
        "unknown patch type: {} in map: {}",
        go_fmt_s(t),
        go_fmt_map(m)
    ))
}

// ---------------------------------------------------------------------------------------------
// Go `fmt` renderings for error messages (`%v`, `%s`).

fn go_fmt_v(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => go_number(n),
        Value::String(s) => s.clone(),
        Value::Array(a) => go_fmt_list(a),
        Value::Object(m) => go_fmt_map(m),
    }
}

fn go_fmt_list(a: &[Value]) -> String {
    let items: Vec<String> = a.iter().map(go_fmt_v).collect();
    format!("[{}]", items.join(" "))
}

fn go_fmt_map(m: &Map<String, Value>) -> String {
    let mut entries: Vec<(&String, &Value)> = m.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    let items: Vec<String> = entries
        .into_iter()
        .map(|(k, v)| format!("{k}:{}", go_fmt_v(v)))
        .collect();
    format!("map[{}]", items.join(" "))
}

/// `%s` of an `interface{}`: strings as they are, other scalars as `%!s(type=value)`.
fn go_fmt_s(v: &Value) -> String {
    match v {
        Value::Null => "%!s(<nil>)".to_string(),
        Value::String(s) => s.clone(),
        Value::Array(a) => {
            let items: Vec<String> = a.iter().map(go_fmt_s).collect();
            format!("[{}]", items.join(" "))
        }
        Value::Object(m) => {
            let mut entries: Vec<(&String, &Value)> = m.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            let items: Vec<String> = entries
                .into_iter()
                .map(|(k, v)| format!("{k}:{}", go_fmt_s(v)))
                .collect();
            format!("map[{}]", items.join(" "))
        }
        other => format!("%!s({}={})", GoType::of(other).name(), go_fmt_v(other)),
    }
}

fn go_number(n: &Number) -> String {
    match n.as_i64() {
        Some(i) => i.to_string(),
        None => go_float(n.as_f64().unwrap_or(0.0)),
    }
}

/// Go's `%v` for a float64: shortest digits, exponent form below 1e-4 and from 1e21.
fn go_float(f: f64) -> String {
    if f == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.to_string();
    }
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    if !(-4..21).contains(&exp) {
        let esign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{mantissa}e{esign}{:02}", exp.abs());
    }
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let point = exp + 1; // digits before the decimal point
    let body = if point <= 0 {
        format!("0.{}{digits}", "0".repeat(point.unsigned_abs() as usize))
    } else {
        let point = point as usize;
        if digits.len() <= point {
            format!("{digits}{}", "0".repeat(point - digits.len()))
        } else {
            format!("{}.{}", &digits[..point], &digits[point..])
        }
    };
    format!("{sign}{body}")
}

// ---------------------------------------------------------------------------------------------
// Schema lookups (upstream: `LookupPatchMetadataForStruct` / `ForSlice` on the Go types).

#[derive(Debug, Clone, Copy)]
struct Field {
    schema: Option<&'static TypeDef>,
    smp: SmpMeta,
    /// The element type's Go name, for upstream's "cannot merge lists" error.
    elem_name: &'static str,
}

fn lookup(schema: Option<&'static TypeDef>, key: &str) -> Field {
    match schema.and_then(|t| t.field(key)) {
        Some(f) => Field {
            schema: f.value_type(),
            smp: f.smp(),
            elem_name: f.value_type().map_or_else(
                || {
                    if f.list_meta()
                        .is_some_and(|m| m.kind == patchmeta::ListKind::Set)
                    {
                        "string"
                    } else {
                        f.name()
                    }
                },
                TypeDef::name,
            ),
        },
        None => Field {
            schema: None,
            smp: SmpMeta::default(),
            elem_name: "interface {}",
        },
    }
}

// ---------------------------------------------------------------------------------------------
// mergeMap and its helpers.

/// `extractKey(s, prefix)`: the field a `$prefix/<field>` directive names.
fn extract_key(s: &str, prefix: &'static str) -> R<String> {
    match s.split_once('/') {
        Some((head, rest)) if head == prefix => Ok(rest.to_string()),
        _ => Err(match prefix {
            DELETE_FROM_PRIMITIVE_LIST_PREFIX => {
                SmpError::BadRequest(ERR_BAD_PATCH_FORMAT_FOR_PRIMITIVE_LIST)
            }
            SET_ELEMENT_ORDER_PREFIX => {
                SmpError::BadRequest(ERR_BAD_PATCH_FORMAT_FOR_SET_ELEMENT_ORDER_LIST)
            }
            _ => SmpError::Internal(format!("fail to find unknown prefix {prefix:?} in {s}\n")),
        }),
    }
}

fn merge_map(
    mut original: Map<String, Value>,
    mut patch: Map<String, Value>,
    schema: Option<&'static TypeDef>,
) -> R<Map<String, Value>> {
    if let Some(directive) = patch.get(DIRECTIVE_MARKER) {
        if directive == REPLACE_DIRECTIVE {
            patch.remove(DIRECTIVE_MARKER);
            return Ok(patch);
        }
        if directive == DELETE_DIRECTIVE {
            return Ok(Map::new());
        }
        return Err(bad_patch_type(directive, &patch));
    }

    apply_retain_keys_directive(&mut original, &mut patch)?;
    merge_patch_into_original(&mut original, &mut patch, schema)?;

    for (key, patch_v) in patch {
        let (key, is_delete_list) = if key.starts_with(DELETE_FROM_PRIMITIVE_LIST_PREFIX) {
            let field = extract_key(&key, DELETE_FROM_PRIMITIVE_LIST_PREFIX)?;
            (if field.is_empty() { key } else { field }, true)
        } else {
            (key, false)
        };

        if patch_v.is_null() {
            original.remove(&key);
            continue;
        }

        let same_type = match original.get(&key) {
            None => false,
            Some(orig) => GoType::of(orig) == GoType::of(&patch_v),
        };
        if !same_type {
            if !is_delete_list {
                insert_new(&mut original, key, patch_v);
            }
            continue;
        }

        // Merged values stay where they are (keys keep their order when maps preserve it).
        let Some(orig_v) = original.get_mut(&key).map(std::mem::take) else {
            continue;
        };
        let merged = match (orig_v, patch_v) {
            (Value::Object(orig), Value::Object(p)) => {
                let field = lookup(schema, &key);
                if field.smp.replace {
                    Value::Object(p)
                } else {
                    Value::Object(merge_map(orig, p, field.schema)?)
                }
            }
            (Value::Array(orig), Value::Array(p)) => {
                let field = lookup(schema, &key);
                Value::Array(merge_slice_handler(orig, p, field, is_delete_list)?.0)
            }
            (_, p) => {
                insert_new(&mut original, key, p);
                continue;
            }
        };
        if let Some(slot) = original.get_mut(&key) {
            *slot = merged;
        }
    }
    Ok(original)
}

/// A patch value that is new to the original (or of another type): nulls discarded,
/// directive objects removed.
fn insert_new(original: &mut Map<String, Value>, key: String, mut v: Value) {
    discard_null_values(&mut v);
    match remove_directives(v) {
        Some(v) => {
            original.insert(key, v);
        }
        None => {
            original.remove(&key);
        }
    }
}

/// `discardNullValuesFromPatch`.
fn discard_null_values(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, c| !c.is_null());
            m.values_mut().for_each(discard_null_values);
        }
        Value::Array(a) => a.iter_mut().for_each(discard_null_values),
        _ => {}
    }
}

/// `removeDirectives`: `None` for an object that carries `$patch` (it is dropped, wherever it
/// is); such objects are removed from objects and lists below.
fn remove_directives(v: Value) -> Option<Value> {
    match v {
        Value::Object(m) => {
            if m.contains_key(DIRECTIVE_MARKER) {
                return None;
            }
            let m = m
                .into_iter()
                .filter_map(|(k, v)| remove_directives(v).map(|v| (k, v)))
                .collect();
            Some(Value::Object(m))
        }
        Value::Array(a) => Some(Value::Array(
            a.into_iter().filter_map(remove_directives).collect(),
        )),
        other => Some(other),
    }
}

/// Drops directive keys that upstream's typed decoding would drop as unknown fields.
fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| {
                k != DIRECTIVE_MARKER
                    && k != RETAIN_KEYS_DIRECTIVE
                    && !k.starts_with(SET_ELEMENT_ORDER_PREFIX)
                    && !k.starts_with(DELETE_FROM_PRIMITIVE_LIST_PREFIX)
            });
            m.values_mut().for_each(strip_directives);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

/// `applyRetainKeysDirective` (server side: `MergeParallelList`).
fn apply_retain_keys_directive(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
) -> R<()> {
    let Some(retain) = patch.remove(RETAIN_KEYS_DIRECTIVE) else {
        return Ok(());
    };
    let Value::Array(retain) = retain else {
        return Err(SmpError::BadRequest(ERR_BAD_PATCH_FORMAT_FOR_RETAIN_KEYS));
    };
    // Upstream builds a map[interface{}]struct{} of the list: maps and lists panic.
    let mut keep = HashSet::new();
    for v in &retain {
        scalar_key(v)?;
        if let Value::String(s) = v {
            keep.insert(s.as_str());
        }
    }
    for (k, v) in patch.iter() {
        if v.is_null()
            || k.starts_with(DELETE_FROM_PRIMITIVE_LIST_PREFIX)
            || k.starts_with(SET_ELEMENT_ORDER_PREFIX)
        {
            continue;
        }
        if !keep.contains(k.as_str()) {
            return Err(SmpError::BadRequest(ERR_BAD_PATCH_FORMAT_FOR_RETAIN_KEYS));
        }
    }
    original.retain(|k, _| keep.contains(k.as_str()));
    Ok(())
}

/// `mergePatchIntoOriginal`: every `$setElementOrder/<field>` with its list.
fn merge_patch_into_original(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
    schema: Option<&'static TypeDef>,
) -> R<()> {
    let keys: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(SET_ELEMENT_ORDER_PREFIX))
        .cloned()
        .collect();
    for key in keys {
        let Some(set_order) = patch.remove(&key) else {
            continue;
        };
        let Value::Array(set_order) = set_order else {
            return Err(bad_arg_type(GoType::Slice, &set_order));
        };
        let field_name = extract_key(&key, SET_ELEMENT_ORDER_PREFIX)?;
        let original_list = match original.get(&field_name) {
            None => None,
            Some(Value::Array(a)) => Some(a.clone()),
            Some(other) => return Err(bad_arg_type(GoType::Slice, other)),
        };
        let patch_list = match patch.get(&field_name) {
            None => None,
            Some(Value::Array(a)) => Some(a.clone()),
            Some(other) => return Err(bad_arg_type(GoType::Slice, other)),
        };
        let field = lookup(schema, &field_name);
        let merge_key = field.smp.merge_key.unwrap_or("");
        validate_patch_with_set_order_list(
            patch_list.as_deref().unwrap_or(&[]),
            &set_order,
            merge_key,
        )?;

        let original_values = original_list.clone().unwrap_or_default();
        let patch_values = patch_list.clone().unwrap_or_default();
        let (merged, server_order) = match (original_list, patch_list) {
            (Some(o), None) => (o.clone(), o),
            (None, Some(p)) => {
                let merged = match remove_directives(Value::Array(p)) {
                    Some(Value::Array(a)) => a,
                    _ => Vec::new(),
                };
                (merged, Vec::new())
            }
            (Some(o), Some(p)) => {
                let (merged, window) = merge_slice_handler(o.clone(), p, field, false)?;
                (merged, window.unwrap_or(o))
            }
            (None, None) => continue,
        };

        let (patch_items, server_only) = if merge_key.is_empty() {
            partition_primitives(merged, &set_order)?
        } else {
            partition_maps(merged, &set_order, merge_key)?
        };
        let kind = slice_element_type(&[&original_values, &patch_values])?;
        let both = normalize_element_order(
            patch_items,
            server_only,
            &set_order,
            &server_order,
            merge_key,
            kind,
        )?;
        original.insert(field_name.clone(), Value::Array(both));
        patch.remove(&field_name);
    }
    Ok(())
}

/// `validatePatchWithSetOrderList`: the patch's items (deletions aside) must appear in the
/// `$setElementOrder` list, in the same relative order.
fn validate_patch_with_set_order_list(
    patch_list: &[Value],
    set_order: &[Value],
    merge_key: &str,
) -> R<()> {
    if set_order.is_empty() || patch_list.is_empty() {
        return Ok(());
    }
    let non_delete: Vec<&Value> = if merge_key.is_empty() {
        patch_list.iter().collect()
    } else {
        let mut non_delete = Vec::new();
        for v in patch_list {
            let Value::Object(m) = v else {
                return Err(bad_arg_type(GoType::Map, v));
            };
            if m.get(DIRECTIVE_MARKER) != Some(&Value::String(DELETE_DIRECTIVE.into())) {
                non_delete.push(v);
            }
        }
        non_delete
    };
    let (mut pi, mut si) = (0, 0);
    while pi < non_delete.len() && si < set_order.len() {
        if non_delete[pi]
            .as_object()
            .is_some_and(|m| m.contains_key(DIRECTIVE_MARKER))
        {
            pi += 1;
            continue;
        }
        if merge_key_value_equal(non_delete[pi], &set_order[si], merge_key)? {
            pi += 1;
        }
        si += 1;
    }
    if pi < non_delete.len() && si >= set_order.len() {
        return Err(SmpError::Internal(format!(
            "The order in patch list:\n{}\n doesn't match {SET_ELEMENT_ORDER_PREFIX} list:\n{}\n",
            go_fmt_list(patch_list),
            go_fmt_list(set_order)
        )));
    }
    Ok(())
}

/// `mergeKeyValueEqual`.
fn merge_key_value_equal(left: &Value, right: &Value, merge_key: &str) -> R<bool> {
    if merge_key.is_empty() {
        return go_eq(left, right);
    }
    let Value::Object(l) = left else {
        return Err(bad_arg_type(GoType::Map, left));
    };
    let Value::Object(r) = right else {
        return Err(bad_arg_type(GoType::Map, right));
    };
    let lv = l.get(merge_key).ok_or_else(|| no_merge_key(l, merge_key))?;
    let rv = r.get(merge_key).ok_or_else(|| no_merge_key(r, merge_key))?;
    go_eq(lv, rv)
}

// ---------------------------------------------------------------------------------------------
// mergeSlice and its helpers.

/// `mergeSliceHandler`: merges when the field's strategy is `merge` (or for a delete list),
/// else the patch's list replaces the original. Also returns what upstream's view of the
/// original list looks like afterwards (see [`merge_slice`]), when it was touched.
fn merge_slice_handler(
    original: Vec<Value>,
    patch: Vec<Value>,
    field: Field,
    is_delete_list: bool,
) -> R<(Vec<Value>, Option<Vec<Value>>)> {
    if field.smp.merge || is_delete_list {
        let (merged, window) = merge_slice(
            original,
            patch,
            field,
            field.smp.merge_key.unwrap_or(""),
            is_delete_list,
        )?;
        Ok((merged, Some(window)))
    } else {
        Ok((patch, None))
    }
}

/// `mergeSlice`. Besides the merged list it returns the original list as upstream's caller
/// still sees it afterwards: Go deletes list items in place (`append(s[:i], s[i+1:]...)`) and
/// appends new items into the slots that frees, so `mergePatchIntoOriginal`'s view of the
/// original (its server order for `$setElementOrder`) changes. Only merge keys are read from
/// that view, and in-place merges keep them, so it is reproduced exactly whatever the slice's
/// capacity.
fn merge_slice(
    original: Vec<Value>,
    patch: Vec<Value>,
    field: Field,
    merge_key: &str,
    is_delete_list: bool,
) -> R<(Vec<Value>, Vec<Value>)> {
    if original.is_empty() && patch.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let kind = slice_element_type(&[&original, &patch])?;

    if kind != GoType::Map {
        if is_delete_list {
            let out = delete_from_slice(&original, &patch)?;
            return Ok((out, original));
        }
        let mut both = original.clone();
        both.extend(patch.iter().cloned());
        let merged = deduplicate_scalars(both)?;
        let (patch_items, server_only) = if merge_key.is_empty() {
            partition_primitives(merged, &patch)?
        } else {
            partition_maps(merged, &patch, merge_key)?
        };
        let out =
            normalize_element_order(patch_items, server_only, &patch, &original, merge_key, kind)?;
        return Ok((out, original));
    }

    if merge_key.is_empty() {
        return Err(SmpError::Internal(format!(
            "cannot merge lists without merge key for {}",
            field.elem_name
        )));
    }

    // mergeSliceWithSpecialElements
    let mut window = original.clone();
    let mut list = original;
    let mut present = HashMap::new();
    for v in &list {
        if let Some(id) = v.get(merge_key).and_then(scalar_identity) {
            *present.entry(id).or_insert(0usize) += 1;
        }
    }
    let mut rest = Vec::new();
    let mut replace = false;
    for v in patch {
        let directive = match &v {
            Value::Object(m) => m.get(DIRECTIVE_MARKER).cloned(),
            _ => return Err(SmpError::Panic),
        };
        match directive {
            None => rest.push(v),
            Some(d) if d == DELETE_DIRECTIVE => {
                let Value::Object(m) = &v else {
                    return Err(SmpError::Panic);
                };
                let Some(value) = m.get(merge_key) else {
                    return Err(no_merge_key(m, merge_key));
                };
                delete_matching_entries(&mut list, &mut window, &mut present, merge_key, value)?;
            }
            Some(d) if d == REPLACE_DIRECTIVE => replace = true,
            Some(d) if d == MERGE_DIRECTIVE => {
                return Err(SmpError::Internal(
                    "merging lists cannot yet be specified in the patch".into(),
                ));
            }
            Some(d) => {
                let Value::Object(m) = &v else {
                    return Err(SmpError::Panic);
                };
                return Err(bad_patch_type(&d, m));
            }
        }
    }
    let (mut list, patch, appends_alias) = if replace {
        (rest, Vec::new(), false)
    } else {
        (list, rest, true)
    };
    let server_order = list.clone();

    // mergeSliceWithoutSpecialElements
    let mut by_key = FirstIndex::default();
    for (i, v) in list.iter().enumerate() {
        if let Some(k) = v.get(merge_key) {
            by_key.insert_if_absent(k, i);
        }
    }
    for v in &patch {
        let Value::Object(m) = v else {
            return Err(SmpError::Panic);
        };
        let Some(value) = m.get(merge_key) else {
            return Err(no_merge_key(m, merge_key));
        };
        let found = if scalar_identity(value).is_some() {
            by_key.get(value)
        } else {
            find_map_in_slice(&list, merge_key, value)?
        };
        match found {
            Some(i) => {
                let orig = match std::mem::take(&mut list[i]) {
                    Value::Object(o) => o,
                    _ => return Err(SmpError::Panic),
                };
                list[i] = Value::Object(merge_map(orig, m.clone(), field.schema)?);
            }
            None => {
                if appends_alias && list.len() < window.len() {
                    let slot = list.len();
                    window[slot] = v.clone();
                }
                by_key.insert_if_absent(value, list.len());
                list.push(v.clone());
            }
        }
    }

    let (patch_items, server_only) = partition_maps(list, &patch, merge_key)?;
    let out = normalize_element_order(
        patch_items,
        server_only,
        &patch,
        &server_order,
        merge_key,
        kind,
    )?;
    Ok((out, window))
}

/// `deleteMatchingEntries`: removes every item whose merge key matches, shifting the shared
/// view as Go's in-place `append(s[:i], s[i+1:]...)` does. `present` counts the scalar merge
/// keys still in `list`, so deleting an absent key costs no scan.
fn delete_matching_entries(
    list: &mut Vec<Value>,
    window: &mut [Value],
    present: &mut HashMap<(GoType, String), usize>,
    merge_key: &str,
    value: &Value,
) -> R<()> {
    if let Some(id) = scalar_identity(value)
        && !present.contains_key(&id)
    {
        return Ok(());
    }
    while let Some(i) = find_map_in_slice(list, merge_key, value)? {
        let n = list.len();
        let removed = list.remove(i);
        if let Some(id) = removed.get(merge_key).and_then(scalar_identity)
            && let Some(count) = present.get_mut(&id)
        {
            *count -= 1;
            if *count == 0 {
                present.remove(&id);
            }
        }
        if n <= window.len() {
            for j in i..n.saturating_sub(1) {
                window[j] = window[j + 1].clone();
            }
        }
    }
    Ok(())
}

/// `findMapInSliceBasedOnKeyValue`: the index of the first object whose `key` equals `value`.
fn find_map_in_slice(list: &[Value], key: &str, value: &Value) -> R<Option<usize>> {
    for (i, v) in list.iter().enumerate() {
        let Value::Object(m) = v else {
            return Err(SmpError::Internal(format!(
                "value for key {i} is not a map."
            )));
        };
        if let Some(candidate) = m.get(key)
            && go_eq(candidate, value)?
        {
            return Ok(Some(i));
        }
    }
    Ok(None)
}

/// `deleteFromSlice`: the parallel `$deleteFromPrimitiveList` list.
fn delete_from_slice(current: &[Value], to_delete: &[Value]) -> R<Vec<Value>> {
    let delete: HashSet<(GoType, String)> = to_delete.iter().map(scalar_key).collect::<R<_>>()?;
    let mut out = Vec::with_capacity(current.len());
    for v in current {
        if !delete.contains(&scalar_key(v)?) {
            out.push(v.clone());
        }
    }
    Ok(out)
}

/// `deduplicateScalars`. Upstream's in-place algorithm scrambles the order, but every caller
/// re-sorts the result by positions in lists that contain each item, so keeping the first
/// occurrence in order gives the same final lists.
fn deduplicate_scalars(items: Vec<Value>) -> R<Vec<Value>> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(items.len());
    for v in items {
        if seen.insert(scalar_key(&v)?) {
            out.push(v);
        }
    }
    Ok(out)
}

/// `partitionPrimitivesByPresentInList`: (items in `by`, the others), in `items` order.
fn partition_primitives(items: Vec<Value>, by: &[Value]) -> R<(Vec<Value>, Vec<Value>)> {
    let in_patch: HashSet<(GoType, String)> = by.iter().map(scalar_key).collect::<R<_>>()?;
    let mut patch = Vec::new();
    let mut server_only = Vec::new();
    for v in items {
        if in_patch.contains(&scalar_key(&v)?) {
            patch.push(v);
        } else {
            server_only.push(v);
        }
    }
    Ok((patch, server_only))
}

/// `partitionMapsByPresentInList`.
fn partition_maps(items: Vec<Value>, by: &[Value], merge_key: &str) -> R<(Vec<Value>, Vec<Value>)> {
    // Upstream scans `by` linearly (and fails on a non-object in it); index it when that
    // cannot make a difference.
    let index = by.iter().all(Value::is_object).then(|| {
        let mut index = FirstIndex::default();
        for (i, v) in by.iter().enumerate() {
            if let Some(k) = v.get(merge_key) {
                index.insert_if_absent(k, i);
            }
        }
        index
    });
    let mut patch = Vec::new();
    let mut server_only = Vec::new();
    for v in items {
        let Value::Object(m) = &v else {
            return Err(bad_arg_type(GoType::Map, &v));
        };
        let Some(value) = m.get(merge_key) else {
            return Err(no_merge_key(m, merge_key));
        };
        let found = match &index {
            Some(index) if scalar_identity(value).is_some() => index.get(value).is_some(),
            _ => find_map_in_slice(by, merge_key, value)?.is_some(),
        };
        if found {
            patch.push(v);
        } else {
            server_only.push(v);
        }
    }
    Ok((patch, server_only))
}

/// `sliceElementType`: the common Go type of all items.
fn slice_element_type(lists: &[&[Value]]) -> R<GoType> {
    let mut prev: Option<GoType> = None;
    for list in lists {
        for v in list.iter() {
            let current = GoType::of(v);
            match prev {
                None => {
                    if current == GoType::Nil {
                        // reflect.TypeOf(nil).Kind() panics upstream
                        return Err(SmpError::Panic);
                    }
                    if current == GoType::Slice {
                        return Err(SmpError::Unprocessable);
                    }
                    prev = Some(current);
                }
                Some(p) if p != current => {
                    let all: Vec<String> = lists.iter().map(|l| go_fmt_list(l)).collect();
                    return Err(SmpError::Internal(format!(
                        "list element types are not identical: [{}]",
                        all.join(" ")
                    )));
                }
                Some(_) => {}
            }
        }
    }
    prev.ok_or_else(|| SmpError::Internal("no elements in any of the given slices".into()))
}

/// upstream's `index(list, v, mergeKey, kind)`: the first position of `v` in a list (by merge
/// key for objects, a missing key counting as nil), -1 when absent. Two maps or lists never
/// compare equal here (upstream would panic).
struct OrderIndex<'a> {
    merge_key: &'a str,
    kind: GoType,
    first: FirstIndex,
}

impl<'a> OrderIndex<'a> {
    fn new(list: &[Value], merge_key: &'a str, kind: GoType) -> OrderIndex<'a> {
        let mut index = OrderIndex {
            merge_key,
            kind,
            first: FirstIndex::default(),
        };
        for (i, v) in list.iter().enumerate() {
            index.first.insert_if_absent(index.key_of(v), i);
        }
        index
    }

    fn key_of<'v>(&self, item: &'v Value) -> &'v Value {
        if self.kind == GoType::Map {
            item.as_object()
                .and_then(|m| m.get(self.merge_key))
                .unwrap_or(&Value::Null)
        } else {
            item
        }
    }

    fn position(&self, v: &Value) -> isize {
        self.first
            .get(self.key_of(v))
            .and_then(|i| isize::try_from(i).ok())
            .unwrap_or(-1)
    }
}

/// `normalizeElementOrder`: patch items in patch order, server-only items in server order,
/// then interleaved by `mergeSortedSlice`.
fn normalize_element_order(
    patch: Vec<Value>,
    server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    merge_key: &str,
    kind: GoType,
) -> R<Vec<Value>> {
    let patch = normalize_slice_order(patch, patch_order, merge_key, kind)?;
    let server_only = normalize_slice_order(server_only, server_order, merge_key, kind)?;
    Ok(merge_sorted_slice(
        server_only,
        patch,
        server_order,
        merge_key,
        kind,
    ))
}

/// `normalizeSliceOrder`: `sort.SliceStable` by position in `order` (the comparator upstream
/// uses, with Go's stable sort algorithm), `$patch: delete` items last.
fn normalize_slice_order(
    to_sort: Vec<Value>,
    order: &[Value],
    merge_key: &str,
    kind: GoType,
) -> R<Vec<Value>> {
    let (to_sort, to_delete) = if kind == GoType::Map {
        for v in to_sort.iter().chain(order) {
            let Value::Object(m) = v else {
                return Err(bad_arg_type(GoType::Map, v));
            };
            if !m.contains_key(merge_key) {
                return Err(no_merge_key(m, merge_key));
            }
        }
        let (delete, keep): (Vec<Value>, Vec<Value>) = to_sort.into_iter().partition(|v| {
            v.get(DIRECTIVE_MARKER) == Some(&Value::String(DELETE_DIRECTIVE.into()))
        });
        (keep, delete)
    } else {
        (to_sort, Vec::new())
    };
    let order = OrderIndex::new(order, merge_key, kind);
    let mut keyed: Vec<(isize, Value)> = to_sort
        .into_iter()
        .map(|v| (order.position(&v), v))
        .collect();
    go_stable_sort(&mut keyed, |a, b| {
        if a.0 >= 0 && b.0 >= 0 {
            a.0 < b.0
        } else {
            true
        }
    });
    let mut out: Vec<Value> = keyed.into_iter().map(|(_, v)| v).collect();
    out.extend(to_delete);
    Ok(out)
}

/// `mergeSortedSlice`: inserts the server-only items (`left`) into the patch items (`right`)
/// where the server order puts them.
fn merge_sorted_slice(
    left: Vec<Value>,
    right: Vec<Value>,
    server_order: &[Value],
    merge_key: &str,
    kind: GoType,
) -> Vec<Value> {
    let order = OrderIndex::new(server_order, merge_key, kind);
    let li: Vec<isize> = left.iter().map(|v| order.position(v)).collect();
    let ri: Vec<isize> = right.iter().map(|v| order.position(v)).collect();
    let mut out = Vec::with_capacity(left.len() + right.len());
    let mut left = left.into_iter().zip(li).peekable();
    let mut right = right.into_iter().zip(ri).peekable();
    while let (Some((_, l)), Some((_, r))) = (left.peek(), right.peek()) {
        let take_left = *l >= 0 && *r >= 0 && l < r;
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next.map(|(v, _)| v));
    }
    out.extend(left.map(|(v, _)| v));
    out.extend(right.map(|(v, _)| v));
    out
}

/// Go's `sort.SliceStable` (insertion sort on blocks of 20, then `symMerge`), so that even a
/// comparator that is not a strict order gives upstream's result.
fn go_stable_sort<T>(data: &mut [T], less: impl Fn(&T, &T) -> bool) {
    let n = data.len();
    let mut block = 20;
    let (mut a, mut b) = (0, block);
    while b <= n {
        insertion_sort(data, a, b, &less);
        a = b;
        b += block;
    }
    insertion_sort(data, a, n, &less);
    while block < n {
        a = 0;
        b = 2 * block;
        while b <= n {
            sym_merge(data, a, a + block, b, &less);
            a = b;
            b += 2 * block;
        }
        let m = a + block;
        if m < n {
            sym_merge(data, a, m, n, &less);
        }
        block *= 2;
    }
}

fn insertion_sort<T>(data: &mut [T], a: usize, b: usize, less: &impl Fn(&T, &T) -> bool) {
    for i in a + 1..b {
        let mut j = i;
        while j > a && less(&data[j], &data[j - 1]) {
            data.swap(j, j - 1);
            j -= 1;
        }
    }
}

fn sym_merge<T>(data: &mut [T], a: usize, m: usize, b: usize, less: &impl Fn(&T, &T) -> bool) {
    if m - a == 1 {
        let (mut i, mut j) = (m, b);
        while i < j {
            let h = (i + j) / 2;
            if less(&data[h], &data[a]) {
                i = h + 1;
            } else {
                j = h;
            }
        }
        for k in a..i - 1 {
            data.swap(k, k + 1);
        }
        return;
    }
    if b - m == 1 {
        let (mut i, mut j) = (a, m);
        while i < j {
            let h = (i + j) / 2;
            if !less(&data[m], &data[h]) {
                i = h + 1;
            } else {
                j = h;
            }
        }
        let mut k = m;
        while k > i {
            data.swap(k, k - 1);
            k -= 1;
        }
        return;
    }
    let mid = (a + b) / 2;
    let n = mid + m;
    let (mut start, mut r) = if m > mid { (n - b, mid) } else { (a, m) };
    let p = n - 1;
    while start < r {
        let c = (start + r) / 2;
        if !less(&data[p - c], &data[c]) {
            start = c + 1;
        } else {
            r = c;
        }
    }
    let end = n - start;
    if start < m && m < end {
        rotate(data, start, m, end);
    }
    if a < start && start < mid {
        sym_merge(data, a, start, mid, less);
    }
    if mid < end && end < b {
        sym_merge(data, mid, end, b, less);
    }
}

fn rotate<T>(data: &mut [T], a: usize, m: usize, b: usize) {
    let mut i = m - a;
    let mut j = b - m;
    while i != j {
        if i > j {
            swap_range(data, m - i, m, j);
            i -= j;
        } else {
            swap_range(data, m - i, m + j - i, i);
            j -= i;
        }
    }
    swap_range(data, m - i, m, i);
}

fn swap_range<T>(data: &mut [T], a: usize, b: usize, n: usize) {
    for i in 0..n {
        data.swap(a + i, b + i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patchmeta::test_schema::MERGE_ITEM;
    use serde_json::json;

    /// Applies `patch` to `original` with upstream's `MergeItem` test schema.
    fn item(original: Value, patch: Value) -> Result<Value, ApiError> {
        apply(&original, &patch, Some(&MERGE_ITEM))
    }

    #[track_caller]
    fn check(original: Value, patch: Value, want: Value) {
        let got = item(original.clone(), patch.clone()).expect("patch applies");
        assert_eq!(got, want, "\noriginal: {original}\npatch: {patch}");
    }

    #[track_caller]
    fn check_err(original: Value, patch: Value) -> ApiError {
        item(original, patch).expect_err("patch fails")
    }

    fn names(list: &[i64]) -> Value {
        Value::Array(list.iter().map(|n| json!({"name": n})).collect())
    }

    // --- upstream strategicMergePatchRawTestCases (TwoWay on Original, ThreeWay on Current) ---

    #[test]
    fn upstream_delete_items_in_lists_of_scalars() {
        let patch = json!({
            "$setElementOrder/mergingIntList": [1, 2],
            "$deleteFromPrimitiveList/mergingIntList": [3]
        });
        check(
            json!({"mergingIntList": [1, 2, 3]}),
            patch.clone(),
            json!({"mergingIntList": [1, 2]}),
        );
        check(
            json!({"mergingIntList": [1, 2, 3, 4]}),
            patch.clone(),
            json!({"mergingIntList": [1, 2, 4]}),
        );
        // all duplicates go
        check(
            json!({"mergingIntList": [1, 2, 3, 3, 4]}),
            patch,
            json!({"mergingIntList": [1, 2, 4]}),
        );
    }

    #[test]
    fn upstream_add_and_delete_items_in_lists_of_scalars() {
        check(
            json!({"mergingIntList": [1, 2, 3]}),
            json!({
                "$setElementOrder/mergingIntList": [1, 2, 4],
                "$deleteFromPrimitiveList/mergingIntList": [3],
                "mergingIntList": [4]
            }),
            json!({"mergingIntList": [1, 2, 4]}),
        );
        check(
            json!({"mergingIntList": [1, 2, 3, 4]}),
            json!({
                "$setElementOrder/mergingIntList": [1, 2, 4],
                "$deleteFromPrimitiveList/mergingIntList": [3]
            }),
            json!({"mergingIntList": [1, 2, 4]}),
        );
    }

    #[test]
    fn upstream_merge_lists_of_maps() {
        let patch = json!({
            "$setElementOrder/mergingList": [{"name": 4}, {"name": 1}, {"name": 2}, {"name": 3}],
            "mergingList": [{"name": 4, "value": 4}, {"name": 3, "value": 3}]
        });
        check(
            json!({"mergingList": [{"name": 1}, {"name": 2, "value": 2}]}),
            patch.clone(),
            json!({"mergingList": [
                {"name": 4, "value": 4}, {"name": 1}, {"name": 2, "value": 2}, {"name": 3, "value": 3}
            ]}),
        );
        check(
            json!({"mergingList": [{"name": 1, "other": "a"}, {"name": 2, "value": 2, "other": "b"}]}),
            patch,
            json!({"mergingList": [
                {"name": 4, "value": 4},
                {"name": 1, "other": "a"},
                {"name": 2, "value": 2, "other": "b"},
                {"name": 3, "value": 3}
            ]}),
        );
    }

    #[test]
    fn upstream_merge_lists_of_maps_with_conflict() {
        check(
            json!({"mergingList": [{"name": 1, "other": "a"}, {"name": 2, "value": 3, "other": "b"}]}),
            json!({
                "$setElementOrder/mergingList": [{"name": 1}, {"name": 2}, {"name": 3}],
                "mergingList": [{"name": 2, "value": 2}, {"name": 3, "value": 3}]
            }),
            json!({"mergingList": [
                {"name": 1, "other": "a"},
                {"name": 2, "value": 2, "other": "b"},
                {"name": 3, "value": 3}
            ]}),
        );
    }

    #[test]
    fn upstream_add_field_to_map_in_merging_list_with_conflict() {
        check(
            json!({"mergingList": [{"name": 1, "other": "a"}, {"name": 3, "value": 2, "other": "b"}]}),
            json!({
                "$setElementOrder/mergingList": [{"name": 1}, {"name": 2}],
                "mergingList": [{"name": 1, "value": 1}, {"name": 2, "value": 2}]
            }),
            json!({"mergingList": [
                {"name": 1, "value": 1, "other": "a"},
                {"name": 2, "value": 2},
                {"name": 3, "value": 2, "other": "b"}
            ]}),
        );
    }

    #[test]
    fn upstream_replace_and_delete_fields_in_merging_list() {
        let current = json!({"mergingList": [
            {"name": 1, "value": 1, "other": "a"}, {"name": 2, "value": 2, "other": "b"}
        ]});
        check(
            current.clone(),
            json!({
                "$setElementOrder/mergingList": [{"name": 1}, {"name": 2}],
                "mergingList": [{"name": 1, "value": "a"}]
            }),
            json!({"mergingList": [
                {"name": 1, "value": "a", "other": "a"}, {"name": 2, "value": 2, "other": "b"}
            ]}),
        );
        check(
            current,
            json!({
                "$setElementOrder/mergingList": [{"name": 1}, {"name": 2}],
                "mergingList": [{"name": 1, "value": null}]
            }),
            json!({"mergingList": [{"name": 1, "other": "a"}, {"name": 2, "value": 2, "other": "b"}]}),
        );
    }

    #[test]
    fn upstream_delete_map_from_merging_list() {
        let patch = json!({
            "$setElementOrder/mergingList": [{"name": 2}],
            "mergingList": [{"name": 1, "$patch": "delete"}]
        });
        check(
            json!({"mergingList": names(&[1, 2])}),
            patch.clone(),
            json!({"mergingList": names(&[2])}),
        );
        check(
            json!({"mergingList": [{"name": 1, "other": "a"}, {"name": 2, "other": "b"}]}),
            patch.clone(),
            json!({"mergingList": [{"name": 2, "other": "b"}]}),
        );
        // deleting an item that is not there
        check(
            json!({"mergingList": [{"name": 2, "other": "b"}]}),
            patch,
            json!({"mergingList": [{"name": 2, "other": "b"}]}),
        );
    }

    #[test]
    fn upstream_delete_missing_map_with_conflict() {
        check(
            json!({"mergingList": [{"name": 3, "other": "a"}]}),
            json!({
                "$setElementOrder/mergingList": [{"name": 2}],
                "mergingList": [{"name": 2}, {"name": 1, "$patch": "delete"}]
            }),
            json!({"mergingList": [{"name": 2}, {"name": 3, "other": "a"}]}),
        );
    }

    #[test]
    fn upstream_add_map_and_delete_map_keeps_go_slice_aliasing_order() {
        // These two results depend on Go's in-place delete/append sharing the original slice.
        check(
            json!({"mergingList": [{"name": 1}, {"name": 2, "other": "b"}, {"name": 4, "other": "c"}]}),
            json!({
                "$setElementOrder/mergingList": [{"name": 2}, {"name": 3}],
                "mergingList": [{"name": 3}, {"name": 1, "$patch": "delete"}]
            }),
            json!({"mergingList": [
                {"name": 2, "other": "b"}, {"name": 4, "other": "c"}, {"name": 3}
            ]}),
        );
        check(
            json!({"mergingList": [{"name": 1, "other": "a"}, {"name": 4, "other": "c"}]}),
            json!({
                "$setElementOrder/mergingList": [{"name": 2}, {"name": 3}],
                "mergingList": [{"name": 2}, {"name": 3}, {"name": 1, "$patch": "delete"}]
            }),
            json!({"mergingList": [{"name": 4, "other": "c"}, {"name": 2}, {"name": 3}]}),
        );
        check(
            json!({"mergingList": names(&[1, 2])}),
            json!({
                "$setElementOrder/mergingList": [{"name": 2}, {"name": 3}],
                "mergingList": [{"name": 3}, {"name": 1, "$patch": "delete"}]
            }),
            json!({"mergingList": names(&[2, 3])}),
        );
    }

    #[test]
    fn upstream_preserve_order_cases() {
        let current = json!({"mergingList": [
            {"name": 1, "other": "a"}, {"name": 2, "value": 2, "other": "b"}, {"name": 3, "value": 3}
        ]});
        check(
            current.clone(),
            json!({
                "$setElementOrder/mergingList": [{"name": 2}, {"name": 1}],
                "mergingList": [{"name": 3, "$patch": "delete"}]
            }),
            json!({"mergingList": [{"name": 2, "value": 2, "other": "b"}, {"name": 1, "other": "a"}]}),
        );
        check(
            current.clone(),
            json!({
                "$setElementOrder/mergingList": [{"name": 2}, {"name": 3}, {"name": 1}],
                "mergingList": [{"name": 3, "value": "x"}]
            }),
            json!({"mergingList": [
                {"name": 2, "value": 2, "other": "b"}, {"name": 3, "value": "x"}, {"name": 1, "other": "a"}
            ]}),
        );
        check(
            current,
            json!({
                "$setElementOrder/mergingList": [{"name": 4}, {"name": 2}, {"name": 1}],
                "mergingList": [{"name": 4, "value": 4}, {"name": 3, "$patch": "delete"}]
            }),
            json!({"mergingList": [
                {"name": 4, "value": 4}, {"name": 2, "value": 2, "other": "b"}, {"name": 1, "other": "a"}
            ]}),
        );
    }

    #[test]
    fn upstream_set_element_order_with_server_only_items() {
        let order = json!({"$setElementOrder/mergingList": [
            {"name": 2}, {"name": 1}, {"name": 4}, {"name": 3}
        ]});
        check(
            json!({"mergingList": [
                {"name": 1, "other": "a"}, {"name": 2, "value": 2}, {"name": 9},
                {"name": 3, "value": 3}, {"name": 4, "value": 4}
            ]}),
            order.clone(),
            json!({"mergingList": [
                {"name": 2, "value": 2}, {"name": 1, "other": "a"}, {"name": 9},
                {"name": 4, "value": 4}, {"name": 3, "value": 3}
            ]}),
        );
        check(
            json!({"mergingList": [
                {"name": 1, "other": "a"}, {"name": 2, "value": 2}, {"name": 7}, {"name": 9},
                {"name": 8}, {"name": 3, "value": 3}, {"name": 4, "value": 4}
            ]}),
            order,
            json!({"mergingList": [
                {"name": 2, "value": 2}, {"name": 1, "other": "a"}, {"name": 7}, {"name": 9},
                {"name": 8}, {"name": 4, "value": 4}, {"name": 3, "value": 3}
            ]}),
        );
        check(
            json!({"mergingList": [
                {"name": 1, "other": "a"}, {"name": 3, "value": 3}, {"name": 4, "value": 4},
                {"name": 2, "value": 2}, {"name": 9}
            ]}),
            json!({"$setElementOrder/mergingList": [{"name": 4}, {"name": 2}, {"name": 3}, {"name": 1}]}),
            json!({"mergingList": [
                {"name": 4, "value": 4}, {"name": 2, "value": 2}, {"name": 3, "value": 3},
                {"name": 1, "other": "a"}, {"name": 9}
            ]}),
        );
    }

    #[test]
    fn upstream_int_list_order_cases() {
        check(
            json!({"mergingIntList": [1, 2]}),
            json!({"$setElementOrder/mergingIntList": [3, 1, 2], "mergingIntList": [3]}),
            json!({"mergingIntList": [3, 1, 2]}),
        );
        check(
            json!({"mergingIntList": [1, 2]}),
            json!({"$setElementOrder/mergingIntList": [1, 4, 2, 3], "mergingIntList": [4, 3]}),
            json!({"mergingIntList": [1, 4, 2, 3]}),
        );
        check(
            json!({"mergingIntList": [1, 2, 3]}),
            json!({
                "$setElementOrder/mergingIntList": [4, 2, 1],
                "mergingIntList": [4],
                "$deleteFromPrimitiveList/mergingIntList": [3]
            }),
            json!({"mergingIntList": [4, 2, 1]}),
        );
        check(
            json!({"mergingIntList": [1, 2, 7, 9, 8, 3, 4]}),
            json!({"$setElementOrder/mergingIntList": [2, 1, 4, 3]}),
            json!({"mergingIntList": [2, 1, 7, 9, 8, 4, 3]}),
        );
        check(
            json!({"mergingIntList": [1, 3, 4, 2, 9]}),
            json!({"$setElementOrder/mergingIntList": [4, 2, 3, 1]}),
            json!({"mergingIntList": [4, 2, 3, 1, 9]}),
        );
    }

    #[test]
    fn upstream_set_element_order_with_duplicates() {
        check(
            json!({"mergingList": [
                {"name": 1}, {"name": 2, "value": "dup1"}, {"name": 3},
                {"name": 2, "value": "dup2"}, {"name": 4}
            ]}),
            json!({"$setElementOrder/mergingList": [
                {"name": 2}, {"name": 1}, {"name": 4}, {"name": 3}, {"name": 2}
            ]}),
            json!({"mergingList": [
                {"name": 2, "value": "dup1"}, {"name": 2, "value": "dup2"},
                {"name": 1}, {"name": 4}, {"name": 3}
            ]}),
        );
        check(
            json!({"mergingIntList": [1, 2, 3, 2, 4]}),
            json!({"$setElementOrder/mergingIntList": [2, 1, 4, 3, 2]}),
            json!({"mergingIntList": [2, 2, 1, 4, 3]}),
        );
    }

    #[test]
    fn upstream_set_element_order_with_items_not_in_the_list() {
        check(
            json!({"mergingList": names(&[1, 3])}),
            json!({
                "$setElementOrder/mergingList": [{"name": 3}, {"name": 2}, {"name": 1}],
                "mergingList": [{"name": 3, "value": 3}, {"name": 1, "value": 1}]
            }),
            json!({"mergingList": [{"name": 3, "value": 3}, {"name": 1, "value": 1}]}),
        );
        check(
            json!({"mergingIntList": [1, 3]}),
            json!({"$setElementOrder/mergingIntList": [3, 2, 1]}),
            json!({"mergingIntList": [3, 1]}),
        );
    }

    #[test]
    fn upstream_order_mismatch_and_missing_merge_key_are_500() {
        let err = check_err(
            json!({"mergingList": names(&[1, 3, 2])}),
            json!({
                "$setElementOrder/mergingList": [{"name": 1}, {"name": 2}, {"name": 3}],
                "mergingList": [{"name": 3, "value": 3}, {"name": 1, "value": 1}]
            }),
        );
        assert_eq!((err.code, err.reason.as_str()), (500, ""));
        assert!(err.message.contains("doesn't match"), "{}", err.message);
        assert!(
            err.message.starts_with(
                "The order in patch list:\n[map[name:3 value:3] map[name:1 value:1]]\n"
            )
        );
        let err = check_err(
            json!({"mergingIntList": [1, 3, 2]}),
            json!({"$setElementOrder/mergingIntList": [1, 2, 3], "mergingIntList": [3, 1]}),
        );
        assert!(err.message.contains("doesn't match"));
        let err = check_err(
            json!({"mergingList": [{"name": 1, "value": "a"}]}),
            json!({"mergingList": [{"value": "b"}]}),
        );
        assert_eq!(err.code, 500);
        assert_eq!(
            err.message,
            "map: map[value:b] does not contain declared merge key: name"
        );
    }

    #[test]
    fn upstream_retain_keys_cases() {
        check(
            json!({"retainKeysMap": {"value": "foo"}}),
            json!({"retainKeysMap": {"$retainKeys": ["other"], "other": "bar"}}),
            json!({"retainKeysMap": {"other": "bar"}}),
        );
        check(
            json!({"retainKeysMap": {"name": "type1", "value": "foo"}}),
            json!({"retainKeysMap": {"$retainKeys": ["name", "other"], "name": "type2", "other": "bar"}}),
            json!({"retainKeysMap": {"name": "type2", "other": "bar"}}),
        );
        check(
            json!({"retainKeysMap": {"name": "foo", "other": "a"}}),
            json!({"retainKeysMap": {"$retainKeys": ["name", "value"], "value": "bar"}}),
            json!({"retainKeysMap": {"name": "foo", "value": "bar"}}),
        );
        // without the directive a retainKeys map merges normally
        check(
            json!({"retainKeysMap": {"name": "foo", "value": "a"}}),
            json!({"retainKeysMap": {"value": null}}),
            json!({"retainKeysMap": {"name": "foo"}}),
        );
        check(
            json!({"retainKeysMergingList": [{"name": "bar"}, {"name": "foo", "value": "a"}]}),
            json!({"retainKeysMergingList": [{"name": "foo", "value": "b"}]}),
            json!({"retainKeysMergingList": [{"name": "bar"}, {"name": "foo", "value": "b"}]}),
        );
    }

    #[test]
    fn retain_keys_errors_are_400() {
        // a key set by the patch but missing from $retainKeys
        let err = check_err(
            json!({"retainKeysMap": {"name": "foo"}}),
            json!({"retainKeysMap": {"$retainKeys": ["name"], "value": "bar"}}),
        );
        assert_eq!((err.code, err.reason.as_str()), (400, "BadRequest"));
        assert_eq!(err.message, "invalid patch format of retainKeys");
        let err = check_err(
            json!({"retainKeysMap": {"name": "foo"}}),
            json!({"retainKeysMap": {"$retainKeys": "name"}}),
        );
        assert_eq!(err.code, 400);
        // nulls and parallel lists need not be listed
        check(
            json!({"retainKeysMap": {"name": "foo", "value": "v", "mergingIntList": [1]}}),
            json!({"retainKeysMap": {
                "$retainKeys": ["name", "mergingIntList"],
                "value": null,
                "$deleteFromPrimitiveList/mergingIntList": [1]
            }}),
            json!({"retainKeysMap": {"name": "foo", "mergingIntList": []}}),
        );
    }

    #[test]
    fn upstream_custom_cases() {
        check(
            json!({"mergingIntList": [1, 2]}),
            json!({"mergingIntList": [2, 3]}),
            json!({"mergingIntList": [1, 2, 3]}),
        );
        check(
            json!({"simpleMap": {"key1": 1, "key2": 1}}),
            json!({"simpleMap": {"$patch": "delete"}}),
            json!({"simpleMap": {}}),
        );
        check(
            json!({"mergingList": names(&[1, 2])}),
            json!({"mergingList": [{"$patch": "replace"}]}),
            json!({"mergingList": []}),
        );
        check(
            json!({"mergingList": []}),
            json!({"mergingList": []}),
            json!({"mergingList": []}),
        );
        check(
            json!({"name": 1, "value": 1}),
            json!({"$patch": "replace"}),
            json!({}),
        );
        check(
            json!({"name": 1, "value": 1}),
            json!({"other": "a", "$patch": "replace"}),
            json!({"other": "a"}),
        );
        check(
            json!({"mergingList": [
                {"name": 1}, {"name": 1}, {"name": 2, "value": "a"}, {"name": 3}, {"name": 3}
            ]}),
            json!({"mergingList": [{"name": 1, "$patch": "delete"}, {"name": 3, "$patch": "delete"}]}),
            json!({"mergingList": [{"name": 2, "value": "a"}]}),
        );
        check(
            json!({"mergingList": [{"name": 1}, {"name": 2, "value": "b"}, {"name": 3}]}),
            json!({"mergingList": [
                {"name": 3, "value": "c"}, {"name": 1, "value": "a"}, {"name": 2, "other": "x"}
            ]}),
            json!({"mergingList": [
                {"name": 3, "value": "c"}, {"name": 1, "value": "a"}, {"name": 2, "value": "b", "other": "x"}
            ]}),
        );
        check(
            json!({"mergingList": [{"name": 1}, {"name": 2, "value": "b"}, {"name": 3}]}),
            json!({"mergingList": [{"name": 3, "value": "c"}, {"name": 1, "value": "a"}]}),
            json!({"mergingList": [
                {"name": 2, "value": "b"}, {"name": 3, "value": "c"}, {"name": 1, "value": "a"}
            ]}),
        );
        check(
            json!({"mergingIntList": [1, 2, 3]}),
            json!({"mergingIntList": [3, 1]}),
            json!({"mergingIntList": [2, 3, 1]}),
        );
    }

    #[test]
    fn upstream_create_cases() {
        check(
            json!({}),
            json!({"name": 1, "value": 1}),
            json!({"name": 1, "value": 1}),
        );
        check(json!({"name": 1}), json!({}), json!({"name": 1}));
        check(
            json!({"name": 1, "other": "a"}),
            json!({"name": null, "value": 1}),
            json!({"value": 1, "other": "a"}),
        );
        check(
            json!({"simpleMap": {"key1": 1, "key2": 1, "other": "a"}}),
            json!({"simpleMap": {"key2": null}}),
            json!({"simpleMap": {"key1": 1, "other": "a"}}),
        );
        check(
            json!({"nonMergingIntList": [1, 4]}),
            json!({"nonMergingIntList": [2, 3]}),
            json!({"nonMergingIntList": [2, 3]}),
        );
        check(
            json!({"mergingList": [{"name": 1, "other": "a"}, {"name": 2, "other": "b"}]}),
            json!({"mergingList": [{"name": 1, "$patch": "delete"}, {"name": 2, "$patch": "delete"}]}),
            json!({"mergingList": []}),
        );
        check(
            json!({"mergingList": []}),
            json!({"mergingList": [{"name": 1, "$patch": "delete"}]}),
            json!({"mergingList": []}),
        );
        // a null that matches nothing is dropped
        check(
            json!({"name": "a", "other": "a"}),
            json!({"name": 1, "value": 1, "other": null}),
            json!({"name": 1, "value": 1}),
        );
    }

    // --- directives and edge cases ---

    #[test]
    fn new_values_drop_nulls_and_directive_objects() {
        check(
            json!({}),
            json!({"simpleMap": {"a": "1", "b": null}, "mergingList": [
                {"name": 1, "value": null}, {"name": 2, "$patch": "delete"}
            ]}),
            json!({"simpleMap": {"a": "1"}, "mergingList": [{"name": 1}]}),
        );
        // an object that is itself a directive is not added
        check(
            json!({}),
            json!({"simpleMap": {"$patch": "delete"}}),
            json!({}),
        );
        // a value of another type replaces the original
        check(
            json!({"simpleMap": ["x"], "name": 1}),
            json!({"simpleMap": {"k": "v", "n": null}, "name": "one"}),
            json!({"simpleMap": {"k": "v"}, "name": "one"}),
        );
    }

    #[test]
    fn replace_strategy_and_replace_directive_keep_the_patch_verbatim() {
        check(
            json!({"replacingItem": {"a": 1, "b": 2}}),
            json!({"replacingItem": {"c": 3}}),
            json!({"replacingItem": {"c": 3}}),
        );
        // directives inside a replaced value are dropped from the result, like unknown fields
        check(
            json!({"simpleMap": {"a": "1"}}),
            json!({"simpleMap": {"$patch": "replace", "b": "2", "x": {"$patch": "delete", "y": 1}}}),
            json!({"simpleMap": {"b": "2", "x": {"y": 1}}}),
        );
        check(
            json!({"mergingList": [{"name": 1, "value": 1}, {"name": 2}]}),
            json!({"mergingList": [{"name": 3}, {"$patch": "replace"}]}),
            json!({"mergingList": [{"name": 3}]}),
        );
        check(json!({"name": 1}), json!({"$patch": "delete"}), json!({}));
    }

    #[test]
    fn merge_directive_in_a_map_is_an_error_upstream() {
        let err = check_err(
            json!({"simpleMap": {"a": "1"}}),
            json!({"simpleMap": {"$patch": "merge", "b": "2"}}),
        );
        assert_eq!((err.code, err.reason.as_str()), (500, ""));
        assert_eq!(
            err.message,
            "unknown patch type: merge in map: map[$patch:merge b:2]"
        );
        assert_eq!(
            ApiError::from(SmpError::Panic).message,
            "This request caused apiserver to panic. Look in the logs for details."
        );
    }

    #[test]
    fn delete_from_primitive_list_edge_cases() {
        // on a list that does not merge, and when the list is missing
        check(
            json!({"nonMergingIntList": [1, 2, 3]}),
            json!({"$deleteFromPrimitiveList/nonMergingIntList": [2]}),
            json!({"nonMergingIntList": [1, 3]}),
        );
        check(
            json!({}),
            json!({"$deleteFromPrimitiveList/mergingIntList": [2]}),
            json!({}),
        );
        // malformed directive key
        let err = check_err(json!({}), json!({"$deleteFromPrimitiveListX/a": [1]}));
        assert_eq!(
            (err.code, err.message.as_str()),
            (400, "invalid patch format of primitive list")
        );
        let err = check_err(json!({}), json!({"$deleteFromPrimitiveList": [1]}));
        assert_eq!(err.code, 400);
    }

    #[test]
    fn set_element_order_errors() {
        let err = check_err(json!({}), json!({"$setElementOrderX/a": [1]}));
        assert_eq!(
            (err.code, err.message.as_str()),
            (400, "invalid patch format of setElementOrder list")
        );
        let err = check_err(
            json!({"mergingIntList": [1]}),
            json!({"$setElementOrder/mergingIntList": 1}),
        );
        assert_eq!((err.code, err.reason.as_str()), (500, ""));
        assert_eq!(
            err.message,
            "expected a []interface {}, but received a int64"
        );
        let err = check_err(
            json!({"mergingIntList": [1]}),
            json!({"$setElementOrder/mergingIntList": [1], "mergingIntList": null}),
        );
        assert_eq!(
            err.message,
            "expected a []interface {}, but received a %!s(<nil>)"
        );
        // both lists empty: upstream's sliceElementType finds no element
        let err = check_err(
            json!({"mergingIntList": []}),
            json!({"$setElementOrder/mergingIntList": [], "mergingIntList": []}),
        );
        assert_eq!(err.message, "no elements in any of the given slices");
    }

    #[test]
    fn list_errors() {
        // a list of lists is the generic 422
        let err = check_err(
            json!({"mergingIntList": [[1]]}),
            json!({"mergingIntList": [[2]]}),
        );
        assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
        assert_eq!(
            err.message,
            "the server rejected our request due to an error in our request"
        );
        // mixed element types
        let err = check_err(
            json!({"mergingIntList": [1]}),
            json!({"mergingIntList": ["a"]}),
        );
        assert_eq!(err.code, 500);
        assert_eq!(
            err.message,
            "list element types are not identical: [[1] [a]]"
        );
        // unknown and unsupported directives in lists and maps
        let err = check_err(
            json!({"mergingList": names(&[1])}),
            json!({"mergingList": [{"name": 1, "$patch": "merge"}]}),
        );
        assert_eq!(
            err.message,
            "merging lists cannot yet be specified in the patch"
        );
        let err = check_err(
            json!({"mergingList": names(&[1])}),
            json!({"mergingList": [{"name": 1, "$patch": "frob"}]}),
        );
        assert_eq!(
            err.message,
            "unknown patch type: frob in map: map[$patch:frob name:1]"
        );
        let err = check_err(json!({}), json!({"simpleMap": {"$patch": 7}, "$patch": 7}));
        assert_eq!(
            err.message,
            "unknown patch type: %!s(int64=7) in map: map[$patch:7 simpleMap:map[$patch:7]]"
        );
        let err = check_err(
            json!({"mergingList": names(&[1])}),
            json!({"mergingList": [{"$patch": "delete"}]}),
        );
        assert_eq!(
            err.message,
            "map: map[$patch:delete] does not contain declared merge key: name"
        );
        // a delete list on a list of objects without a merge key
        let err = check_err(
            json!({"nonMergingList": names(&[1])}),
            json!({"$deleteFromPrimitiveList/nonMergingList": [{"name": 1}]}),
        );
        assert_eq!(
            err.message,
            "cannot merge lists without merge key for MergeItem"
        );
        // null items: upstream panics on the nil type
        let err = check_err(
            json!({"mergingIntList": [1]}),
            json!({"mergingIntList": [null]}),
        );
        assert_eq!(err.code, 500);
    }

    #[test]
    fn body_decoding() {
        let pod = json!({"metadata": {"name": "p"}});
        let err = strategic_merge_patch_body(&pod, b"[1]", "v1", "Pod").expect_err("array");
        assert_eq!((err.code, err.reason.as_str()), (400, "BadRequest"));
        assert_eq!(
            err.message,
            "json: cannot unmarshal array into Go value of type map[string]interface {}"
        );
        assert_eq!(
            strategic_merge_patch_body(&pod, b"{", "v1", "Pod").map_err(|e| e.code),
            Err(400)
        );
        assert_eq!(
            strategic_merge_patch_body(&pod, b"null", "v1", "Pod").expect("null"),
            pod
        );
        assert_eq!(
            strategic_merge_patch_body(&pod, b"{}", "v1", "Pod").expect("empty"),
            pod
        );
    }

    #[test]
    fn hostile_depth_is_rejected_without_recursion() {
        let mut deep = json!({});
        for _ in 0..2000 {
            deep = json!({"a": deep});
        }
        let err = strategic_merge_patch(&json!({}), &deep, "v1", "ConfigMap").expect_err("deep");
        assert_eq!(err.code, 400);
        let err = strategic_merge_patch(&deep, &json!({}), "v1", "ConfigMap").expect_err("deep");
        assert_eq!(err.code, 500);
        // dropping the deep value must not overflow either
        let mut v = deep;
        while let Some(inner) = v.get_mut("a").map(std::mem::take) {
            v = inner;
        }
        let at_limit = (0..MAX_NESTING_DEPTH - 1).fold(json!({}), |acc, _| json!({"a": acc}));
        strategic_merge_patch(&at_limit, &at_limit, "v1", "ConfigMap").expect("at the limit");
    }

    // --- Kubernetes objects ---

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "web", "namespace": "default", "uid": "u1", "resourceVersion": "7",
                "labels": {"app": "web", "tier": "frontend"},
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"old\":1}\n"},
                "finalizers": ["a.example.com/x", "b.example.com/y"]
            },
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [
                            {
                                "name": "nginx", "image": "nginx:1.24", "imagePullPolicy": "IfNotPresent",
                                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                                "resources": {}
                            },
                            {"name": "sidecar", "image": "busybox:1", "args": ["sleep", "3600"]}
                        ],
                        "volumes": [{"name": "data", "emptyDir": {}}],
                        "tolerations": [{"key": "k1", "operator": "Exists"}],
                        "restartPolicy": "Always"
                    }
                }
            },
            "status": {"replicas": 2, "conditions": [
                {"type": "Available", "status": "True"}, {"type": "Progressing", "status": "True"}
            ]}
        })
    }

    fn apps(original: &Value, patch: Value) -> Value {
        strategic_merge_patch(original, &patch, "apps/v1", "Deployment").expect("patch applies")
    }

    #[test]
    fn kubectl_apply_image_change() {
        let patch = json!({
            "metadata": {"annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{\"new\":1}\n"
            }},
            "spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "nginx"}, {"name": "sidecar"}],
                "containers": [{"image": "nginx:1.25", "name": "nginx"}]
            }}}
        });
        let out = apps(&deployment(), patch);
        let mut want = deployment();
        want["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] =
            json!("{\"new\":1}\n");
        want["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.25");
        assert_eq!(out, want);
    }

    #[test]
    fn kubectl_apply_env_add_and_remove() {
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "nginx"}, {"name": "sidecar"}],
            "containers": [{
                "$setElementOrder/env": [{"name": "A"}, {"name": "C"}],
                "env": [{"name": "C", "value": "3"}, {"$patch": "delete", "name": "B"}],
                "name": "nginx"
            }]
        }}}});
        let out = apps(&deployment(), patch);
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"][0]["env"],
            json!([{"name": "A", "value": "1"}, {"name": "C", "value": "3"}])
        );
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"][1]["name"],
            "sidecar"
        );
        // $setElementOrder can put a new variable first
        let patch = json!({"spec": {"template": {"spec": {"containers": [{
            "$setElementOrder/env": [{"name": "Z"}, {"name": "A"}, {"name": "B"}],
            "env": [{"name": "Z", "value": "0"}],
            "name": "nginx"
        }]}}}});
        let out = apps(&deployment(), patch);
        let env = &out["spec"]["template"]["spec"]["containers"][0]["env"];
        assert_eq!(env[0]["name"], "Z");
        assert_eq!(env[2]["name"], "B");
    }

    #[test]
    fn patch_delete_on_a_container() {
        let out = apps(
            &deployment(),
            json!({"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}}}}),
        );
        let containers = out["spec"]["template"]["spec"]["containers"]
            .as_array()
            .expect("list");
        assert_eq!(containers.len(), 1);
        assert_eq!(containers[0]["name"], "nginx");
        assert_eq!(containers[0]["image"], "nginx:1.24");
    }

    #[test]
    fn kubectl_patch_adds_a_container_before_the_existing_ones() {
        // Without $setElementOrder upstream puts items named only by the patch first.
        let out = apps(
            &deployment(),
            json!({"spec": {"template": {"spec": {"containers": [{"name": "debug", "image": "alpine"}]}}}}),
        );
        let names: Vec<&Value> = out["spec"]["template"]["spec"]["containers"]
            .as_array()
            .expect("list")
            .iter()
            .map(|c| &c["name"])
            .collect();
        assert_eq!(names, [&json!("debug"), &json!("nginx"), &json!("sidecar")]);
        // container ports merge by containerPort
        let out = apps(
            &deployment(),
            json!({"spec": {"template": {"spec": {"containers": [{
                "name": "nginx",
                "ports": [{"containerPort": 80, "name": "http"}, {"containerPort": 443}]
            }]}}}}),
        );
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"][0]["ports"],
            json!([{"containerPort": 80, "protocol": "TCP", "name": "http"}, {"containerPort": 443}])
        );
    }

    #[test]
    fn finalizers_merge_as_a_set() {
        let out = apps(
            &deployment(),
            json!({"metadata": {"finalizers": ["b.example.com/y", "c.example.com/z"]}}),
        );
        assert_eq!(
            out["metadata"]["finalizers"],
            json!(["a.example.com/x", "b.example.com/y", "c.example.com/z"])
        );
        // a finalizer named only by the patch goes first (upstream order)
        let out = apps(
            &deployment(),
            json!({"metadata": {"finalizers": ["c.example.com/z"]}}),
        );
        assert_eq!(
            out["metadata"]["finalizers"],
            json!(["c.example.com/z", "a.example.com/x", "b.example.com/y"])
        );
        // with $setElementOrder, as kubectl apply sends it
        let out = apps(
            &deployment(),
            json!({"metadata": {
                "$setElementOrder/finalizers": ["a.example.com/x", "b.example.com/y", "c.example.com/z"],
                "finalizers": ["c.example.com/z"]
            }}),
        );
        assert_eq!(
            out["metadata"]["finalizers"],
            json!(["a.example.com/x", "b.example.com/y", "c.example.com/z"])
        );
    }

    #[test]
    fn delete_from_primitive_list_finalizers() {
        let out = apps(
            &deployment(),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a.example.com/x", "nope"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["b.example.com/y"]));
        let out = apps(
            &deployment(),
            json!({"metadata": {
                "$deleteFromPrimitiveList/finalizers": ["a.example.com/x"],
                "finalizers": ["c.example.com/z"]
            }}),
        );
        assert_eq!(
            out["metadata"]["finalizers"],
            json!(["c.example.com/z", "b.example.com/y"])
        );
    }

    #[test]
    fn null_removes_a_label() {
        let out = apps(
            &deployment(),
            json!({"metadata": {"labels": {"tier": null, "env": "prod"}}}),
        );
        assert_eq!(
            out["metadata"]["labels"],
            json!({"app": "web", "env": "prod"})
        );
        // a null for a missing key is a no-op
        let out = apps(
            &deployment(),
            json!({"metadata": {"labels": {"nope": null}}}),
        );
        assert_eq!(out, deployment());
    }

    #[test]
    fn tolerations_and_args_are_replaced() {
        let out = apps(
            &deployment(),
            json!({"spec": {"template": {"spec": {
                "tolerations": [{"key": "k2", "operator": "Exists"}],
                "containers": [{"name": "sidecar", "args": ["sleep", "60"]}]
            }}}}),
        );
        assert_eq!(
            out["spec"]["template"]["spec"]["tolerations"],
            json!([{"key": "k2", "operator": "Exists"}])
        );
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"][1]["args"],
            json!(["sleep", "60"])
        );
    }

    #[test]
    fn kubectl_apply_volume_source_change_with_retain_keys() {
        let out = apps(
            &deployment(),
            json!({"spec": {"template": {"spec": {
                "$setElementOrder/volumes": [{"name": "data"}],
                "volumes": [{"$retainKeys": ["hostPath", "name"], "hostPath": {"path": "/srv"}, "name": "data"}]
            }}}}),
        );
        assert_eq!(
            out["spec"]["template"]["spec"]["volumes"],
            json!([{"name": "data", "hostPath": {"path": "/srv"}}])
        );
    }

    #[test]
    fn kubectl_apply_strategy_type_change_with_retain_keys() {
        let out = apps(
            &deployment(),
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": null}}}),
        );
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn status_conditions_merge_by_type() {
        let out = apps(
            &deployment(),
            json!({"status": {"conditions": [{"type": "Progressing", "status": "False", "reason": "Stuck"}]}}),
        );
        assert_eq!(
            out["status"]["conditions"],
            json!([
                {"type": "Available", "status": "True"},
                {"type": "Progressing", "status": "False", "reason": "Stuck"}
            ])
        );
    }

    #[test]
    fn service_ports_merge_by_port() {
        let svc = json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
            "spec": {"selector": {"app": "web"}, "ports": [
                {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080},
                {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 8443}
            ]}
        });
        let out = strategic_merge_patch(
            &svc,
            &json!({"spec": {
                "$setElementOrder/ports": [{"port": 80}, {"port": 443}, {"port": 9090}],
                "ports": [{"port": 80, "targetPort": 8081}, {"name": "metrics", "port": 9090}]
            }}),
            "v1",
            "Service",
        )
        .expect("patch");
        assert_eq!(
            out["spec"]["ports"],
            json!([
                {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8081},
                {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 8443},
                {"name": "metrics", "port": 9090}
            ])
        );
        let out = strategic_merge_patch(
            &svc,
            &json!({"spec": {"ports": [{"port": 443, "$patch": "delete"}]}}),
            "v1",
            "Service",
        )
        .expect("patch");
        assert_eq!(out["spec"]["ports"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn owner_references_merge_by_uid_and_pod_status_lists() {
        let pod = json!({
            "metadata": {"name": "p", "ownerReferences": [{"uid": "1", "kind": "ReplicaSet", "name": "rs"}]},
            "status": {
                "conditions": [{"type": "Ready", "status": "False"}],
                "podIPs": [{"ip": "10.0.0.1"}],
                "hostIPs": [{"ip": "192.168.0.1"}],
                "containerStatuses": [{"name": "a", "ready": false}, {"name": "b", "ready": false}]
            }
        });
        let out = strategic_merge_patch(
            &pod,
            &json!({
                "metadata": {"ownerReferences": [{"uid": "2", "kind": "Node", "name": "n"}]},
                "status": {
                    "conditions": [{"type": "Ready", "status": "True"}],
                    "hostIPs": [{"ip": "fd00::1"}],
                    "containerStatuses": [{"name": "a", "ready": true}]
                }
            }),
            "v1",
            "Pod",
        )
        .expect("patch");
        assert_eq!(
            out["metadata"]["ownerReferences"].as_array().map(Vec::len),
            Some(2)
        );
        assert_eq!(
            out["status"]["conditions"],
            json!([{"type": "Ready", "status": "True"}])
        );
        // hostIPs merge by ip for SMP although SSA treats them as atomic
        assert_eq!(out["status"]["hostIPs"].as_array().map(Vec::len), Some(2));
        // containerStatuses are atomic
        assert_eq!(
            out["status"]["containerStatuses"],
            json!([{"name": "a", "ready": true}])
        );
    }

    #[test]
    fn node_taints_replaced_addresses_merged() {
        let node = json!({
            "metadata": {"name": "n"},
            "spec": {"taints": [{"key": "a", "effect": "NoSchedule"}]},
            "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}
        });
        let out = strategic_merge_patch(
            &node,
            &json!({
                "spec": {"taints": [{"key": "b", "effect": "NoExecute"}]},
                "status": {"addresses": [{"type": "Hostname", "address": "n"}]}
            }),
            "v1",
            "Node",
        )
        .expect("patch");
        assert_eq!(
            out["spec"]["taints"],
            json!([{"key": "b", "effect": "NoExecute"}])
        );
        assert_eq!(out["status"]["addresses"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn unknown_kinds_fall_back_to_merge_semantics() {
        let cr = json!({"apiVersion": "example.com/v1", "kind": "Widget", "spec": {
            "items": [{"name": "a"}], "size": 1, "labels": {"x": "1"}
        }});
        let out = strategic_merge_patch(
            &cr,
            &json!({"spec": {"items": [{"name": "b"}], "labels": {"x": null, "y": "2"}}}),
            "example.com/v1",
            "Widget",
        )
        .expect("patch");
        assert_eq!(
            out["spec"],
            json!({"items": [{"name": "b"}], "size": 1, "labels": {"y": "2"}})
        );
        assert!(!supports_strategic_merge_patch("example.com/v1"));
        assert!(supports_strategic_merge_patch("apps/v1"));
        assert!(supports_strategic_merge_patch("v1"));
        let err = unsupported_for_custom_resources();
        assert_eq!(
            (err.code, err.reason.as_str()),
            (415, "UnsupportedMediaType")
        );
        assert_eq!(
            err.message,
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
        );
    }

    #[test]
    fn non_object_patch_is_400() {
        let err = strategic_merge_patch(&json!({}), &json!([1]), "v1", "Pod").expect_err("array");
        assert_eq!(err.code, 400);
        assert_eq!(
            strategic_merge_patch(&json!({"a": 1}), &Value::Null, "v1", "Pod").expect("null"),
            json!({"a": 1})
        );
    }

    #[test]
    fn large_lists_merge_in_near_linear_time() {
        let n = 20_000;
        let original = json!({
            "mergingList": (0..n).map(|i| json!({"name": i})).collect::<Vec<_>>(),
            "mergingIntList": (0..n).collect::<Vec<_>>()
        });
        let patch = json!({
            "mergingList": (n / 2..n + n / 2)
                .map(|i| json!({"name": i, "value": i}))
                .chain((0..n).map(|i| json!({"name": n * 10 + i, "$patch": "delete"})))
                .collect::<Vec<_>>(),
            "mergingIntList": (n / 2..n + n / 2).collect::<Vec<_>>()
        });
        let started = std::time::Instant::now();
        let out = item(original, patch).expect("patch");
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
        assert_eq!(
            out["mergingList"].as_array().map(Vec::len),
            Some(n as usize + n as usize / 2)
        );
        assert_eq!(
            out["mergingIntList"].as_array().map(Vec::len),
            Some(n as usize + n as usize / 2)
        );
    }

    // --- helpers ---

    #[test]
    fn go_formatting() {
        assert_eq!(go_float(1.5), "1.5");
        assert_eq!(go_float(100.0), "100");
        assert_eq!(go_float(1e20), "100000000000000000000");
        assert_eq!(go_float(1e21), "1e+21");
        assert_eq!(go_float(0.0001), "0.0001");
        assert_eq!(go_float(0.00001), "1e-05");
        assert_eq!(go_float(-2.5e-7), "-2.5e-07");
        assert_eq!(go_float(123.456), "123.456");
        assert_eq!(
            go_fmt_v(&json!({"b": [1, "x", null], "a": {"c": true, "d": 1.5}})),
            "map[a:map[c:true d:1.5] b:[1 x <nil>]]"
        );
        assert_eq!(go_fmt_s(&json!("delete")), "delete");
        assert_eq!(go_fmt_s(&json!(true)), "%!s(bool=true)");
        assert_eq!(go_fmt_s(&json!(2.5)), "%!s(float64=2.5)");
        assert_eq!(go_fmt_s(&Value::Null), "%!s(<nil>)");
    }

    #[test]
    fn go_stable_sort_matches_a_stable_sort_for_strict_orders() {
        // A deterministic pseudo-random sequence with many equal keys.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in [0usize, 1, 2, 19, 20, 21, 40, 41, 100, 257] {
            let items: Vec<(u64, usize)> = (0..len)
                .map(|i| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x % 7, i)
                })
                .collect();
            let mut ours = items.clone();
            go_stable_sort(&mut ours, |a, b| a.0 < b.0);
            let mut std_sorted = items;
            std_sorted.sort_by_key(|p| p.0);
            assert_eq!(ours, std_sorted, "len {len}");
        }
    }
}
