//! RFC 6902 JSON patch (`application/json-patch+json`) and RFC 7386 merge patch
//! (`application/merge-patch+json`) as the upstream apiserver applies them.
//!
//! Upstream applies both with `gopkg.in/evanphx/json-patch.v4`, whose behaviour differs from a
//! strict reading of the RFCs in ways clients can see, so this module follows that library
//! rather than the RFCs (and therefore does not use the `json-patch` crate, which follows the
//! RFCs):
//!
//! - `replace` of a missing object member adds it (only a bad array index fails);
//! - `add`/`replace` without `value` store `null`; `copy` from a missing member copies `null`;
//! - `test` passes when both the target and `value` are null or missing, and an object in the
//!   document matches a `value` object that has *more* members (only the document's members
//!   are compared);
//! - array indices may be negative (counted from the end) and are parsed like Go's
//!   `strconv.Atoi` (`+1`, `01`); a path that does not start with `/` drops its first token;
//!   the whole document (`""`) can only be `replace`d or `test`ed;
//! - merge patch prunes `null`s inside values it inserts (also inside objects nested in
//!   arrays), except when it replaces an object by a non-object patch value.
//!
//! Errors are those of `staging/src/k8s.io/apiserver/pkg/endpoints/handlers/patch.go` with the
//! default `fieldValidation=Warn`: a body that does not decode is `400 BadRequest`
//! (`error decoding patch: …`), more than 10000 operations is `413`, and any failure while
//! applying operations is the generic `422 Invalid` "the server rejected our request due to an
//! error in our request" (upstream drops the library's message; so do we). A merge patch that
//! is JSON `null` is `400` "Invalid JSON Patch". Go's `encoding/json` wording is approximated;
//! decode messages name the serde error instead of Go's.
//!
//! Limits: `copy` may add at most [`MAX_JSON_PATCH_COPY_BYTES`] (upstream's
//! `JSONPatchMaxCopyBytes`); inputs and results nest at most [`MAX_NESTING_DEPTH`] levels (a
//! result nested deeper by `move`/`copy` operations is the generic 422). Operations never copy
//! the document (`move` and `test` work in place), and nothing recurses on a deep document.

// The public signatures return `ApiError` (a full `metav1.Status`) by value, as the crate does.
#![allow(clippy::result_large_err)]

use serde_json::{Map, Value};

use crate::status::{ApiError, Cause};

/// Upstream's `maxJSONPatchOperations`.
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// Upstream's `JSONPatchMaxCopyBytes` (the apiserver arms `jsonpatch.AccumulatedCopySizeLimit`
/// with it): the total size `copy` operations may add to a document.
pub const MAX_JSON_PATCH_COPY_BYTES: usize = 3 * 1024 * 1024;

/// The deepest nesting of objects and arrays these functions accept or produce (the root
/// object is level 1). It is what `serde_json` accepts when parsing (its recursion limit), so
/// every result can be read back; it also bounds recursion here, so hostile input cannot
/// overflow the stack.
pub const MAX_NESTING_DEPTH: usize = 127;

/// Applies an RFC 6902 JSON patch to `doc`, as upstream's apiserver does (see the module docs
/// for the library behaviour followed and the errors returned).
pub fn json_patch(doc: &Value, patch_body: &[u8]) -> Result<Value, ApiError> {
    let ops = decode_json_patch(patch_body)?;
    if ops.len() > MAX_JSON_PATCH_OPERATIONS {
        return Err(ApiError::too_large(format!(
            "Request entity too large: The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, got {}",
            ops.len()
        )));
    }
    if exceeds_depth(doc, MAX_NESTING_DEPTH) {
        return Err(ApiError::internal(format!(
            "the object nests deeper than {MAX_NESTING_DEPTH} levels"
        )));
    }
    let mut applier = Applier {
        doc: doc.clone(),
        copied: 0,
    };
    for op in &ops {
        if applier.apply(op.as_object()).is_err() {
            drop_iteratively(applier.doc);
            return Err(rejected());
        }
    }
    let out = applier.doc;
    // Moves can nest the document arbitrarily deep on the way; only the result is bounded.
    if exceeds_depth(&out, MAX_NESTING_DEPTH) {
        drop_iteratively(out);
        return Err(rejected());
    }
    if !out.is_object() {
        return Err(not_an_object(&out));
    }
    Ok(out)
}

/// Applies an RFC 7386 merge patch to `doc`, as upstream's apiserver does (evanphx
/// `MergePatch`: see the module docs).
pub fn merge_patch(doc: &Value, patch_body: &[u8]) -> Result<Value, ApiError> {
    let patch: Value = serde_json::from_slice(patch_body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    let patch = match patch {
        Value::Object(m) => m,
        Value::Null => return Err(ApiError::bad_request("Invalid JSON Patch")),
        other => {
            return Err(ApiError::bad_request(format!(
                "error decoding patch: json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
                go_json_kind(&other)
            )));
        }
    };
    if exceeds_depth(doc, MAX_NESTING_DEPTH) {
        return Err(ApiError::internal(format!(
            "the object nests deeper than {MAX_NESTING_DEPTH} levels"
        )));
    }
    let mut out = match doc {
        Value::Object(m) => m.clone(),
        // evanphx: a document that is not an object is replaced by the (pruned) patch.
        _ => Map::new(),
    };
    merge_docs(&mut out, patch);
    Ok(Value::Object(out))
}

/// The generic 422 upstream answers for a JSON patch that fails to apply
/// (`errors.NewGenericServerResponse(http.StatusUnprocessableEntity, …)`).
pub(crate) fn rejected() -> ApiError {
    ApiError::new(
        422,
        "Invalid",
        "the server rejected our request due to an error in our request",
    )
}

/// The 422 upstream answers when the patched document does not decode into the object.
fn not_an_object(v: &Value) -> ApiError {
    let json = serde_json::to_string(v).unwrap_or_default();
    ApiError::invalid(
        "",
        "",
        "",
        vec![Cause::invalid(
            "patch",
            &Value::String(json),
            &format!(
                "json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
                go_json_kind(v)
            ),
        )],
    )
}

/// Go's `encoding/json` name for the kind of a JSON value in `UnmarshalTypeError`.
pub(crate) fn go_json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Whether `v` nests deeper than `limit`, without walking further than needed. Iterative.
pub(crate) fn exceeds_depth(v: &Value, limit: usize) -> bool {
    let mut stack = vec![(v, 1usize)];
    while let Some((v, d)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Object(m) => Box::new(m.values()),
            Value::Array(a) => Box::new(a.iter()),
            _ => continue,
        };
        if d > limit {
            return true;
        }
        stack.extend(children.map(|c| (c, d + 1)));
    }
    false
}

/// Drops a value without recursion (a document that JSON patch operations nested deeply
/// must not overflow the stack when it is discarded).
pub(crate) fn drop_iteratively(v: Value) {
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(m) => stack.extend(m.into_iter().map(|(_, c)| c)),
            Value::Array(a) => stack.extend(a),
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// JSON patch decoding: upstream decodes strictly into `[]jsonPatchOp{op, path, from string;
// value interface{}}` first (fieldValidation Warn/Strict), then with evanphx `DecodePatch`.

fn decode_json_patch(body: &[u8]) -> Result<Vec<Value>, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    let ops = match v {
        Value::Null => Vec::new(),
        Value::Array(ops) => ops,
        other => {
            return Err(ApiError::bad_request(format!(
                "error decoding patch: json: cannot unmarshal {} into Go value of type []handlers.jsonPatchOp",
                go_json_kind(&other)
            )));
        }
    };
    for op in &ops {
        match op {
            Value::Null => {}
            Value::Object(m) => {
                for field in ["op", "path", "from"] {
                    match m.get(field) {
                        None | Some(Value::Null) | Some(Value::String(_)) => {}
                        Some(other) => {
                            return Err(ApiError::bad_request(format!(
                                "error decoding patch: json: cannot unmarshal {} into Go struct field jsonPatchOp.{field} of type string",
                                go_json_kind(other)
                            )));
                        }
                    }
                }
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "error decoding patch: json: cannot unmarshal {} into Go value of type handlers.jsonPatchOp",
                    go_json_kind(other)
                )));
            }
        }
    }
    Ok(ops)
}

// ---------------------------------------------------------------------------------------------
// JSON patch application (evanphx/json-patch v4 `Patch.Apply`).

/// Why an operation failed; upstream never shows it to the client (422 generic), it is kept
/// for tests and debugging.
#[derive(Debug, PartialEq, Eq)]
struct OpError(String);

type OpResult<T> = Result<T, OpError>;

fn op_err<T>(msg: impl Into<String>) -> OpResult<T> {
    Err(OpError(msg.into()))
}

/// Applies operations to a document. Values it discards are dropped iteratively: `move` can
/// nest the working document far deeper than any input.
struct Applier {
    doc: Value,
    /// Bytes added by `copy` so far.
    copied: usize,
}

/// RFC 6901 token decoding (`~1` → `/`, then `~0` → `~`), as evanphx's replacer does.
fn decode_token(t: &str) -> String {
    if t.contains('~') {
        let mut out = String::with_capacity(t.len());
        let mut chars = t.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '~' {
                match chars.peek() {
                    Some('1') => {
                        out.push('/');
                        chars.next();
                    }
                    Some('0') => {
                        out.push('~');
                        chars.next();
                    }
                    _ => out.push('~'),
                }
            } else {
                out.push(c);
            }
        }
        out
    } else {
        t.to_string()
    }
}

/// Go's `strconv.Atoi`: optional sign, decimal digits, no spaces; out of range fails.
fn go_atoi(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<i64>().ok()
}

/// An index that must name an existing element (`get`, `set`, `remove`); negative counts from
/// the end.
fn existing_index(key: &str, len: usize) -> OpResult<usize> {
    let Some(idx) = go_atoi(key) else {
        return op_err(format!("strconv.Atoi: parsing {key:?}: invalid syntax"));
    };
    let len = i64::try_from(len).unwrap_or(i64::MAX);
    let idx = if idx < 0 {
        if idx < -len {
            return op_err(format!("Unable to access invalid index: {idx}"));
        }
        idx + len
    } else {
        idx
    };
    if idx >= len {
        return op_err(format!("Unable to access invalid index: {idx}"));
    }
    usize::try_from(idx).map_err(|_| OpError(format!("Unable to access invalid index: {idx}")))
}

/// An insertion index for `add` (`-` appends, `len` appends, negative counts from the end of
/// the grown array).
fn insert_index(key: &str, len: usize) -> OpResult<usize> {
    if key == "-" {
        return Ok(len);
    }
    let Some(idx) = go_atoi(key) else {
        return op_err(format!("value was not a proper array index: '{key}'"));
    };
    let size = i64::try_from(len).unwrap_or(i64::MAX - 1) + 1;
    if idx >= size {
        return op_err(format!("Unable to access invalid index: {idx}"));
    }
    let idx = if idx < 0 {
        if idx < -size {
            return op_err(format!("Unable to access invalid index: {idx}"));
        }
        idx + size
    } else {
        idx
    };
    usize::try_from(idx).map_err(|_| OpError(format!("Unable to access invalid index: {idx}")))
}

/// evanphx `findObject`: the container holding the last token of `path`, and that token
/// (decoded). Intermediate tokens must lead to objects or arrays (null counts as missing).
fn find_object<'a>(doc: &'a mut Value, path: &str) -> Option<(&'a mut Value, String)> {
    let split: Vec<&str> = path.split('/').collect();
    if split.len() < 2 {
        return None;
    }
    let key = decode_token(split[split.len() - 1]);
    let mut cur = doc;
    for part in &split[1..split.len() - 1] {
        let part = decode_token(part);
        let next = match cur {
            Value::Object(m) => m.get_mut(&part)?,
            Value::Array(a) => {
                let i = existing_index(&part, a.len()).ok()?;
                a.get_mut(i)?
            }
            _ => return None,
        };
        if !(next.is_object() || next.is_array()) {
            return None;
        }
        cur = next;
    }
    Some((cur, key))
}

/// `container.get(key)`: `None` for a missing or null member (evanphx keeps no node for
/// either), an error for a bad array index.
fn con_get<'a>(con: &'a Value, key: &str) -> OpResult<Option<&'a Value>> {
    match con {
        Value::Object(m) => Ok(m.get(key).filter(|v| !v.is_null())),
        Value::Array(a) => {
            let i = existing_index(key, a.len())?;
            Ok(a.get(i).filter(|v| !v.is_null()))
        }
        _ => op_err("invalid state detected"),
    }
}

/// `container.remove(key)`, handing back the member (null when it was null) without a copy.
fn con_take(con: &mut Value, key: &str) -> OpResult<Value> {
    match con {
        Value::Object(m) => match m.remove(key) {
            Some(v) => Ok(v),
            None => op_err(format!(
                "Unable to remove nonexistent key: {key}: missing value"
            )),
        },
        Value::Array(a) => {
            let i = existing_index(key, a.len())?;
            Ok(a.remove(i))
        }
        _ => op_err("invalid state detected"),
    }
}

fn con_remove(con: &mut Value, key: &str) -> OpResult<()> {
    con_take(con, key).map(drop_iteratively)
}

fn con_add(con: &mut Value, key: &str, val: Value) -> OpResult<()> {
    match con {
        Value::Object(m) => {
            if let Some(old) = m.insert(key.to_string(), val) {
                drop_iteratively(old);
            }
            Ok(())
        }
        Value::Array(a) => match insert_index(key, a.len()) {
            Ok(i) => {
                a.insert(i, val);
                Ok(())
            }
            Err(e) => {
                drop_iteratively(val);
                Err(e)
            }
        },
        _ => {
            drop_iteratively(val);
            op_err("invalid state detected")
        }
    }
}

fn con_set(con: &mut Value, key: &str, val: Value) -> OpResult<()> {
    match con {
        Value::Object(m) => {
            if let Some(old) = m.insert(key.to_string(), val) {
                drop_iteratively(old);
            }
            Ok(())
        }
        Value::Array(a) => match existing_index(key, a.len()) {
            Ok(i) => {
                if let Some(slot) = a.get_mut(i) {
                    drop_iteratively(std::mem::replace(slot, val));
                }
                Ok(())
            }
            Err(e) => {
                drop_iteratively(val);
                Err(e)
            }
        },
        _ => {
            drop_iteratively(val);
            op_err("invalid state detected")
        }
    }
}

/// evanphx `lazyNode.equal(o)` with `n` non-null. `Err` where upstream dereferences a nil node
/// and panics (the apiserver answers 500 then; here the operation fails). Recursion follows
/// `o`, a value from the request body, so its depth is bounded by the body's.
fn lazy_equal(n: &Value, o: &Value) -> OpResult<bool> {
    match n {
        Value::Object(nm) => {
            let Value::Object(om) = o else {
                return Ok(false);
            };
            // Only the document's members are compared (upstream quirk).
            for (k, v) in nm {
                let Some(ov) = om.get(k) else {
                    return Ok(false);
                };
                match (v.is_null(), ov.is_null()) {
                    (true, true) => continue,
                    (false, false) => {
                        if !lazy_equal(v, ov)? {
                            return Ok(false);
                        }
                    }
                    _ => return op_err("nil pointer dereference"),
                }
            }
            Ok(true)
        }
        Value::Array(na) => {
            let Value::Array(oa) = o else {
                return Ok(false);
            };
            if na.len() != oa.len() {
                return Ok(false);
            }
            for (v, ov) in na.iter().zip(oa) {
                if v.is_null() || ov.is_null() {
                    return op_err("nil pointer dereference");
                }
                if !lazy_equal(v, ov)? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        scalar => Ok(scalar == o),
    }
}

impl Applier {
    fn apply(&mut self, op: Option<&Map<String, Value>>) -> OpResult<()> {
        let kind = op
            .and_then(|m| m.get("op"))
            .and_then(Value::as_str)
            .unwrap_or("unknown");
        let empty = Map::new();
        let op = op.unwrap_or(&empty);
        match kind {
            "add" => self.add(op),
            "remove" => self.remove(op),
            "replace" => self.replace(op),
            "move" => self.mov(op),
            "test" => self.test(op),
            "copy" => self.copy(op),
            other => op_err(format!("Unexpected kind: {other}")),
        }
    }

    fn add(&mut self, op: &Map<String, Value>) -> OpResult<()> {
        let path =
            op_path(op).map_err(|_| OpError("add operation failed to decode path".into()))?;
        let Some((con, key)) = find_object(&mut self.doc, &path) else {
            return op_err(format!(
                "add operation does not apply: doc is missing path: \"{path}\": missing value"
            ));
        };
        con_add(con, &key, op.get("value").cloned().unwrap_or(Value::Null))
    }

    fn remove(&mut self, op: &Map<String, Value>) -> OpResult<()> {
        let path =
            op_path(op).map_err(|_| OpError("remove operation failed to decode path".into()))?;
        let Some((con, key)) = find_object(&mut self.doc, &path) else {
            return op_err(format!(
                "remove operation does not apply: doc is missing path: \"{path}\": missing value"
            ));
        };
        con_remove(con, &key)
    }

    fn replace(&mut self, op: &Map<String, Value>) -> OpResult<()> {
        let path = op_path(op)?;
        if path.is_empty() {
            return match op.get("value") {
                // upstream dereferences the missing value node and panics
                None => op_err("nil pointer dereference"),
                Some(v @ (Value::Object(_) | Value::Array(_))) => {
                    drop_iteratively(std::mem::replace(&mut self.doc, v.clone()));
                    Ok(())
                }
                Some(_) => op_err("replace operation value must be object or array"),
            };
        }
        let Some((con, key)) = find_object(&mut self.doc, &path) else {
            return op_err(format!(
                "replace operation does not apply: doc is missing path: {path}: missing value"
            ));
        };
        if con_get(con, &key).is_err() {
            return op_err(format!(
                "replace operation does not apply: doc is missing key: {path}: missing value"
            ));
        }
        con_set(con, &key, op.get("value").cloned().unwrap_or(Value::Null))
    }

    fn mov(&mut self, op: &Map<String, Value>) -> OpResult<()> {
        let from = op_from(op)?;
        let Some((con, key)) = find_object(&mut self.doc, &from) else {
            return op_err(format!(
                "move operation does not apply: doc is missing from path: {from}: missing value"
            ));
        };
        con_get(con, &key)?;
        let val = con_take(con, &key)?;
        let dest = match op_path(op) {
            Ok(path) => find_object(&mut self.doc, &path).ok_or(path),
            Err(e) => {
                drop_iteratively(val);
                return Err(e);
            }
        };
        match dest {
            Ok((con, key)) => con_add(con, &key, val),
            Err(path) => {
                drop_iteratively(val);
                op_err(format!(
                    "move operation does not apply: doc is missing destination path: {path}: missing value"
                ))
            }
        }
    }

    fn copy(&mut self, op: &Map<String, Value>) -> OpResult<()> {
        let from = op_from(op)?;
        let Some((con, key)) = find_object(&mut self.doc, &from) else {
            return op_err(format!(
                "copy operation does not apply: doc is missing from path: {from}: missing value"
            ));
        };
        let val = match con_get(con, &key)? {
            // Cloning recurses: refuse to copy what moves have nested too deeply.
            Some(v) if exceeds_depth(v, MAX_NESTING_DEPTH) => {
                return op_err("the copied value nests too deeply");
            }
            Some(v) => v.clone(),
            None => Value::Null,
        };
        let path =
            op_path(op).map_err(|_| OpError("copy operation failed to decode path".into()))?;
        if find_object(&mut self.doc, &path).is_none() {
            return op_err(format!(
                "copy operation does not apply: doc is missing destination path: {path}: missing value"
            ));
        }
        let size = serde_json::to_vec(&val).map(|b| b.len()).unwrap_or(0);
        self.copied = self.copied.saturating_add(size);
        if self.copied > MAX_JSON_PATCH_COPY_BYTES {
            return op_err(format!(
                "Unable to complete the copy, the accumulated size increase of copy is {}, exceeding the limit {MAX_JSON_PATCH_COPY_BYTES}",
                self.copied
            ));
        }
        let Some((con, key)) = find_object(&mut self.doc, &path) else {
            return op_err("copy operation does not apply: doc is missing destination path");
        };
        con_add(con, &key, val)
    }

    fn test(&mut self, op: &Map<String, Value>) -> OpResult<()> {
        let path = op_path(op)?;
        let expected = op.get("value");
        if path.is_empty() {
            let Some(expected) = expected else {
                return op_err("nil pointer dereference");
            };
            return if lazy_equal(&self.doc, expected)? {
                Ok(())
            } else {
                op_err(format!("testing value {path} failed: test failed"))
            };
        }
        let Some((con, key)) = find_object(&mut self.doc, &path) else {
            return op_err(format!(
                "test operation does not apply: is missing path: {path}: missing value"
            ));
        };
        let ok = match (con_get(con, &key)?, expected) {
            (None, None | Some(Value::Null)) => true,
            (None, Some(_)) | (Some(_), None) => false,
            (Some(actual), Some(expected)) => lazy_equal(actual, expected)?,
        };
        if ok {
            Ok(())
        } else {
            op_err(format!("testing value {path} failed: test failed"))
        }
    }
}

/// `Operation.Path()`: the `path` member, which must be present and not null.
fn op_path(op: &Map<String, Value>) -> OpResult<String> {
    match op.get("path") {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => op_err("operation missing path field: missing value"),
    }
}

/// `Operation.From()`: the `from` member, which must be present and not null.
fn op_from(op: &Map<String, Value>) -> OpResult<String> {
    match op.get("from") {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => op_err("operation, missing from field: missing value"),
    }
}

// ---------------------------------------------------------------------------------------------
// Merge patch (evanphx/json-patch v4 `MergePatch`).

fn merge_docs(doc: &mut Map<String, Value>, patch: Map<String, Value>) {
    for (k, v) in patch {
        if v.is_null() {
            doc.remove(&k);
            continue;
        }
        match doc.get_mut(&k) {
            Some(cur) if !cur.is_null() => merge_value(cur, v),
            _ => {
                let mut v = v;
                prune_nulls(&mut v);
                doc.insert(k, v);
            }
        }
    }
}

/// evanphx `merge(cur, patch)`.
fn merge_value(cur: &mut Value, patch: Value) {
    match (cur, patch) {
        (Value::Object(cur), Value::Object(patch)) => merge_docs(cur, patch),
        (cur @ Value::Object(_), patch) => *cur = patch,
        (cur, mut patch) => {
            prune_nulls(&mut patch);
            *cur = patch;
        }
    }
}

/// evanphx `pruneNulls`: drops null members of objects, recursively, also inside arrays
/// (whose null elements stay).
fn prune_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, c| !c.is_null());
            m.values_mut().for_each(prune_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(prune_nulls),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The nesting depth of `v`: 0 for scalars, 1 for a flat object or array. Iterative.
    fn nesting_depth(v: &Value) -> usize {
        let mut max = 0;
        let mut stack = vec![(v, 1usize)];
        while let Some((v, d)) = stack.pop() {
            match v {
                Value::Object(m) => {
                    max = max.max(d);
                    stack.extend(m.values().map(|c| (c, d + 1)));
                }
                Value::Array(a) => {
                    max = max.max(d);
                    stack.extend(a.iter().map(|c| (c, d + 1)));
                }
                _ => {}
            }
        }
        max
    }

    fn pod() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "labels": {"app": "web", "tier": "fe"}},
            "spec": {"containers": [
                {"name": "a", "image": "nginx:1"},
                {"name": "b", "image": "busybox"}
            ]}
        })
    }

    fn jp(doc: &Value, patch: Value) -> Result<Value, ApiError> {
        json_patch(doc, patch.to_string().as_bytes())
    }

    fn apply_err(doc: &Value, patch: Value) -> OpError {
        let mut a = Applier {
            doc: doc.clone(),
            copied: 0,
        };
        for op in patch.as_array().expect("ops") {
            if let Err(e) = a.apply(op.as_object()) {
                return e;
            }
        }
        panic!("patch applied")
    }

    #[test]
    fn add_replace_remove() {
        let out = jp(
            &pod(),
            json!([
                {"op": "add", "path": "/metadata/labels/env", "value": "prod"},
                {"op": "replace", "path": "/spec/containers/0/image", "value": "nginx:2"},
                {"op": "remove", "path": "/metadata/labels/tier"},
                {"op": "add", "path": "/spec/containers/-", "value": {"name": "c"}}
            ]),
        )
        .expect("patch");
        assert_eq!(
            out["metadata"]["labels"],
            json!({"app": "web", "env": "prod"})
        );
        assert_eq!(out["spec"]["containers"][0]["image"], "nginx:2");
        assert_eq!(out["spec"]["containers"][2], json!({"name": "c"}));
    }

    #[test]
    fn escaped_tokens_like_annotation_keys() {
        let out = jp(
            &pod(),
            json!([{"op": "add", "path": "/metadata/labels/app.kubernetes.io~1name", "value": "x"},
                   {"op": "add", "path": "/metadata/labels/a~0b", "value": "y"}]),
        )
        .expect("patch");
        assert_eq!(out["metadata"]["labels"]["app.kubernetes.io/name"], "x");
        assert_eq!(out["metadata"]["labels"]["a~b"], "y");
    }

    #[test]
    fn test_op_passes_and_fails_with_upstream_422() {
        let ok = jp(
            &pod(),
            json!([{"op": "test", "path": "/metadata/name", "value": "p"},
                   {"op": "replace", "path": "/metadata/name", "value": "q"}]),
        )
        .expect("test passes");
        assert_eq!(ok["metadata"]["name"], "q");
        let err = jp(
            &pod(),
            json!([{"op": "test", "path": "/metadata/name", "value": "other"}]),
        )
        .expect_err("test fails");
        assert_eq!(err.code, 422);
        assert_eq!(err.reason, "Invalid");
        assert_eq!(
            err.message,
            "the server rejected our request due to an error in our request"
        );
        assert!(err.causes.is_empty());
    }

    #[test]
    fn test_op_null_and_missing_quirks() {
        // Missing member tested against null (or no value) passes upstream.
        jp(
            &pod(),
            json!([{"op": "test", "path": "/metadata/namespace", "value": null}]),
        )
        .expect("missing == null");
        jp(
            &pod(),
            json!([{"op": "test", "path": "/metadata/namespace"}]),
        )
        .expect("no value");
        // Missing parent fails.
        assert_eq!(
            jp(
                &pod(),
                json!([{"op": "test", "path": "/nope/x", "value": null}])
            )
            .map_err(|e| e.code),
            Err(422)
        );
        // Only the document's members are compared.
        jp(
            &pod(),
            json!([{"op": "test", "path": "/metadata/labels",
                    "value": {"app": "web", "tier": "fe", "extra": "ignored"}}]),
        )
        .expect("subset quirk");
        assert!(
            jp(
                &pod(),
                json!([{"op": "test", "path": "/metadata/labels", "value": {"app": "web"}}])
            )
            .is_err()
        );
        // Numbers compare by representation, as the raw bytes do upstream.
        let doc = json!({"a": 1});
        assert!(jp(&doc, json!([{"op": "test", "path": "/a", "value": 1}])).is_ok());
        assert!(jp(&doc, json!([{"op": "test", "path": "/a", "value": "1"}])).is_err());
    }

    #[test]
    fn missing_paths_fail_with_422() {
        for ops in [
            json!([{"op": "add", "path": "/spec/nope/x", "value": 1}]),
            json!([{"op": "remove", "path": "/metadata/labels/none"}]),
            json!([{"op": "replace", "path": "/spec/containers/9/image", "value": "x"}]),
            json!([{"op": "move", "from": "/nope", "path": "/x"}]),
            json!([{"op": "copy", "from": "/spec/containers/7", "path": "/x"}]),
            json!([{"op": "add", "path": "", "value": {}}]),
            json!([{"op": "remove", "path": ""}]),
            json!([{"op": "frobnicate", "path": "/x"}]),
            json!([{"path": "/x"}]),
            json!([null]),
            json!([{"op": "add", "value": 1}]),
            json!([{"op": "move", "path": "/x"}]),
            json!([{"op": "add", "path": "/spec/containers/3", "value": {}}]),
        ] {
            let err = jp(&pod(), ops.clone()).expect_err(&ops.to_string());
            assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"), "{ops}");
        }
        assert_eq!(
            apply_err(&pod(), json!([{"op": "nope", "path": "/x"}])),
            OpError("Unexpected kind: nope".into())
        );
    }

    #[test]
    fn replace_of_missing_member_adds_it() {
        let out = jp(
            &pod(),
            json!([{"op": "replace", "path": "/metadata/namespace", "value": "default"}]),
        )
        .expect("evanphx replace adds");
        assert_eq!(out["metadata"]["namespace"], "default");
    }

    #[test]
    fn add_without_value_stores_null() {
        let out = jp(&pod(), json!([{"op": "add", "path": "/metadata/x"}])).expect("add");
        assert_eq!(out["metadata"]["x"], Value::Null);
        assert!(out["metadata"].as_object().expect("m").contains_key("x"));
    }

    #[test]
    fn negative_and_go_style_indices() {
        let doc = json!({"l": [1, 2, 3]});
        let out = jp(&doc, json!([{"op": "remove", "path": "/l/-1"}])).expect("negative");
        assert_eq!(out["l"], json!([1, 2]));
        let out = jp(
            &doc,
            json!([{"op": "replace", "path": "/l/+0", "value": 9}]),
        )
        .expect("+0");
        assert_eq!(out["l"], json!([9, 2, 3]));
        let out = jp(&doc, json!([{"op": "add", "path": "/l/01", "value": 7}])).expect("01");
        assert_eq!(out["l"], json!([1, 7, 2, 3]));
        let out = jp(&doc, json!([{"op": "add", "path": "/l/-1", "value": 4}])).expect("-1 add");
        assert_eq!(out["l"], json!([1, 2, 3, 4]));
        let out = jp(&doc, json!([{"op": "add", "path": "/l/3", "value": 4}])).expect("len");
        assert_eq!(out["l"], json!([1, 2, 3, 4]));
        assert!(jp(&doc, json!([{"op": "remove", "path": "/l/-4"}])).is_err());
        assert!(jp(&doc, json!([{"op": "remove", "path": "/l/3"}])).is_err());
        assert!(jp(&doc, json!([{"op": "remove", "path": "/l/x"}])).is_err());
        assert!(jp(&doc, json!([{"op": "remove", "path": "/l/ 1"}])).is_err());
    }

    #[test]
    fn move_and_copy() {
        let out = jp(
            &pod(),
            json!([{"op": "copy", "from": "/metadata/labels", "path": "/metadata/annotations"},
                   {"op": "move", "from": "/metadata/labels/tier", "path": "/metadata/labels/layer"}]),
        )
        .expect("patch");
        assert_eq!(
            out["metadata"]["annotations"],
            json!({"app": "web", "tier": "fe"})
        );
        assert_eq!(
            out["metadata"]["labels"],
            json!({"app": "web", "layer": "fe"})
        );
        // copy from a missing member of an existing object copies null (evanphx).
        let out = jp(
            &pod(),
            json!([{"op": "copy", "from": "/metadata/uid", "path": "/x"}]),
        )
        .expect("copy null");
        assert_eq!(out["x"], Value::Null);
        // moving into one's own child fails (the source is gone first).
        assert!(
            jp(
                &pod(),
                json!([{"op": "move", "from": "/metadata", "path": "/metadata/x"}])
            )
            .is_err()
        );
    }

    #[test]
    fn path_without_leading_slash_drops_first_token() {
        let out = jp(
            &pod(),
            json!([{"op": "add", "path": "ignored/x", "value": 1}]),
        )
        .expect("x");
        assert_eq!(out["x"], 1);
        assert!(jp(&pod(), json!([{"op": "add", "path": "x", "value": 1}])).is_err());
    }

    #[test]
    fn replace_whole_document() {
        let out = jp(
            &pod(),
            json!([{"op": "replace", "path": "", "value": {"kind": "Pod"}}]),
        )
        .expect("replace root");
        assert_eq!(out, json!({"kind": "Pod"}));
        let err = jp(&pod(), json!([{"op": "replace", "path": "", "value": [1]}]))
            .expect_err("array root");
        assert_eq!(err.code, 422);
        assert_eq!(err.causes[0].field, "patch");
        assert!(jp(&pod(), json!([{"op": "replace", "path": "", "value": 1}])).is_err());
        jp(&pod(), json!([{"op": "test", "path": "", "value": pod()}])).expect("test root");
    }

    #[test]
    fn decode_errors_are_400() {
        for body in [
            &b"not json"[..],
            br#"{"op": "add"}"#,
            br#"["x"]"#,
            br#"[{"op": 1, "path": "/a"}]"#,
            br#"[{"op": "add", "path": ["a"]}]"#,
            br#"[{"op": "move", "path": "/a", "from": true}]"#,
        ] {
            let err = json_patch(&pod(), body).expect_err("bad body");
            assert_eq!((err.code, err.reason.as_str()), (400, "BadRequest"));
            assert!(
                err.message.starts_with("error decoding patch: "),
                "{}",
                err.message
            );
        }
        let err = json_patch(&pod(), br#"{"op": "add"}"#).expect_err("object");
        assert_eq!(
            err.message,
            "error decoding patch: json: cannot unmarshal object into Go value of type []handlers.jsonPatchOp"
        );
        let err = json_patch(&pod(), br#"[{"op": 1}]"#).expect_err("number op");
        assert_eq!(
            err.message,
            "error decoding patch: json: cannot unmarshal number into Go struct field jsonPatchOp.op of type string"
        );
        // null and [] are empty patches.
        assert_eq!(json_patch(&pod(), b"null").expect("null"), pod());
        assert_eq!(json_patch(&pod(), b"[]").expect("empty"), pod());
    }

    #[test]
    fn too_many_operations_is_413() {
        let ops: Vec<Value> = (0..=MAX_JSON_PATCH_OPERATIONS)
            .map(|_| json!({"op": "test", "path": "/kind", "value": "Pod"}))
            .collect();
        let err = json_patch(&pod(), Value::Array(ops).to_string().as_bytes()).expect_err("413");
        assert_eq!(err.code, 413);
        assert_eq!(err.reason, "RequestEntityTooLarge");
        assert_eq!(
            err.message,
            "Request entity too large: The allowed maximum operations in a JSON patch is 10000, got 10001"
        );
    }

    #[test]
    fn copy_amplification_is_bounded() {
        let big = "x".repeat(200_000);
        let mut ops = vec![json!({"op": "add", "path": "/a", "value": [big]})];
        for i in 0..20 {
            ops.push(json!({"op": "copy", "from": "/a", "path": format!("/a/{i}")}));
        }
        let err = jp(&json!({}), Value::Array(ops)).expect_err("copy limit");
        assert_eq!(err.code, 422);
    }

    #[test]
    fn nesting_is_bounded() {
        // Each copy nests the document one level deeper.
        let mut ops = vec![json!({"op": "add", "path": "/a", "value": {}})];
        let mut path = String::from("/a");
        for _ in 0..200 {
            ops.push(json!({"op": "copy", "from": "/a", "path": format!("{path}/a")}));
            path.push_str("/a");
        }
        assert_eq!(
            jp(&json!({}), Value::Array(ops)).map_err(|e| e.code),
            Err(422)
        );
        // A body nested beyond serde's limit is a 400, not a crash.
        let deep = "[".repeat(5000) + &"]".repeat(5000);
        assert_eq!(
            json_patch(&pod(), deep.as_bytes()).map_err(|e| e.code),
            Err(400)
        );
        assert_eq!(
            merge_patch(&pod(), deep.as_bytes()).map_err(|e| e.code),
            Err(400)
        );
    }

    #[test]
    fn repeated_moves_and_tests_do_not_copy_the_document() {
        let big: Vec<Value> = (0..200_000).map(|i| json!(format!("item-{i}"))).collect();
        let doc = json!({"a": big, "deep": {"x": {"y": {}}}});
        let mut ops = Vec::new();
        for _ in 0..2_500 {
            ops.push(json!({"op": "move", "from": "/a", "path": "/b"}));
            ops.push(json!({"op": "test", "path": "/b/0", "value": "item-0"}));
            ops.push(json!({"op": "move", "from": "/b", "path": "/deep/x/y/a"}));
            ops.push(json!({"op": "move", "from": "/deep/x/y/a", "path": "/a"}));
        }
        let started = std::time::Instant::now();
        let out = jp(&doc, Value::Array(ops)).expect("moves");
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
        assert_eq!(out["a"].as_array().map(Vec::len), Some(200_000));
    }

    #[test]
    fn moves_cannot_nest_beyond_the_limit() {
        // Two chains of 100 levels: moving one into the other's deepest object would give 200.
        let chain = |n: usize| (0..n).fold(json!({}), |acc, _| json!({"c": acc}));
        let doc = json!({"p": chain(100), "q": chain(100)});
        let deepest = format!("/q{}/x", "/c".repeat(99));
        let err =
            jp(&doc, json!([{"op": "move", "from": "/p", "path": deepest}])).expect_err("too deep");
        assert_eq!(err.code, 422);
        // A shallow value may still move deep.
        let deepest = format!("/q{}/x", "/c".repeat(99));
        let doc = json!({"p": 1, "q": chain(100)});
        jp(&doc, json!([{"op": "move", "from": "/p", "path": deepest}])).expect("shallow move");
    }

    #[test]
    fn very_deep_intermediate_documents_do_not_overflow() {
        // 60 chains of 100 levels, each moved into the deepest object of the previous one.
        let chain = |n: usize| (0..n).fold(json!({}), |acc, _| json!({"c": acc}));
        let mut doc = Map::new();
        for i in 0..60 {
            doc.insert(format!("k{i}"), chain(100));
        }
        let doc = Value::Object(doc);
        let mut ops = Vec::new();
        let mut deepest = String::from("/k0");
        for i in 1..60 {
            deepest.push_str(&"/c".repeat(100));
            ops.push(
                json!({"op": "move", "from": format!("/k{i}"), "path": format!("{deepest}/n")}),
            );
            deepest.push_str("/n");
        }
        let result = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                let too_deep = jp(&doc, Value::Array(ops.clone())).map_err(|e| e.code);
                // Moving everything back out again leaves a shallow document: accepted.
                let mut back = ops.clone();
                for i in (1..60).rev() {
                    let from = back[i - 1]["path"].as_str().unwrap_or_default().to_string();
                    back.push(json!({"op": "move", "from": from, "path": format!("/k{i}")}));
                }
                let restored = jp(&doc, Value::Array(back)).map(|v| v == doc);
                (too_deep, restored)
            })
            .expect("thread")
            .join()
            .expect("no overflow");
        assert_eq!(result, (Err(422), Ok(true)));
    }

    #[test]
    fn merge_patch_basics() {
        let out = merge_patch(
            &pod(),
            br#"{"metadata":{"labels":{"tier":null,"env":"prod"}},"spec":{"containers":[{"name":"z"}]}}"#,
        )
        .expect("merge");
        assert_eq!(
            out["metadata"]["labels"],
            json!({"app": "web", "env": "prod"})
        );
        assert_eq!(out["spec"]["containers"], json!([{"name": "z"}]));
        assert_eq!(out["metadata"]["name"], "p");
    }

    #[test]
    fn merge_patch_rfc7386_examples() {
        // RFC 7386 appendix A.
        let cases = [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({"a": "b"}),
                json!({"b": "c"}),
                json!({"a": "b", "b": "c"}),
            ),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (
                json!({"a": "b", "b": "c"}),
                json!({"a": null}),
                json!({"b": "c"}),
            ),
            (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
            (
                json!({"a": {"b": "c"}}),
                json!({"a": {"b": "d", "c": null}}),
                json!({"a": {"b": "d"}}),
            ),
            (
                json!({"a": [{"b": "c"}]}),
                json!({"a": [1]}),
                json!({"a": [1]}),
            ),
            (
                json!({"e": null}),
                json!({"a": 1}),
                json!({"e": null, "a": 1}),
            ),
            (
                json!({}),
                json!({"a": {"bb": {"ccc": null}}}),
                json!({"a": {"bb": {}}}),
            ),
        ];
        for (doc, patch, want) in cases {
            let got = merge_patch(&doc, patch.to_string().as_bytes()).expect("merge");
            assert_eq!(got, want, "{doc} + {patch}");
        }
    }

    #[test]
    fn merge_patch_evanphx_null_pruning() {
        // Nulls inside objects nested in a new array are pruned; null elements stay.
        let out = merge_patch(&json!({}), br#"{"a":[{"x":null,"y":1},null]}"#).expect("m");
        assert_eq!(out, json!({"a": [{"y": 1}, null]}));
        // Replacing an object by a non-object keeps the patch value as is.
        let out = merge_patch(&json!({"a": {"k": 1}}), br#"{"a":[{"x":null}]}"#).expect("m");
        assert_eq!(out, json!({"a": [{"x": null}]}));
        // A null member of the document counts as missing.
        let out = merge_patch(&json!({"a": null}), br#"{"a":{"b":null,"c":1}}"#).expect("m");
        assert_eq!(out, json!({"a": {"c": 1}}));
    }

    #[test]
    fn merge_patch_errors() {
        let err = merge_patch(&pod(), b"null").expect_err("null");
        assert_eq!(
            (err.code, err.message.as_str()),
            (400, "Invalid JSON Patch")
        );
        let err = merge_patch(&pod(), b"[1]").expect_err("array");
        assert_eq!(err.code, 400);
        assert_eq!(
            err.message,
            "error decoding patch: json: cannot unmarshal array into Go value of type map[string]interface {}"
        );
        assert_eq!(merge_patch(&pod(), b"\"x\"").map_err(|e| e.code), Err(400));
        assert_eq!(merge_patch(&pod(), b"{").map_err(|e| e.code), Err(400));
        assert_eq!(merge_patch(&pod(), b"{}").expect("empty"), pod());
    }

    #[test]
    fn depth_helpers() {
        assert_eq!(nesting_depth(&json!(1)), 0);
        assert_eq!(nesting_depth(&json!({"a": [1, {"b": {}}]})), 4);
        assert!(!exceeds_depth(&json!({"a": [1, {"b": {}}]}), 4));
        assert!(exceeds_depth(&json!({"a": [1, {"b": {}}]}), 3));
        assert!(!exceeds_depth(&json!("scalar"), 0));
        // serde_json accepts exactly MAX_NESTING_DEPTH levels.
        let ok = "[".repeat(MAX_NESTING_DEPTH) + &"]".repeat(MAX_NESTING_DEPTH);
        let v: Value = serde_json::from_str(&ok).expect("max depth parses");
        assert_eq!(nesting_depth(&v), MAX_NESTING_DEPTH);
        let deeper = "[".repeat(MAX_NESTING_DEPTH + 1) + &"]".repeat(MAX_NESTING_DEPTH + 1);
        assert!(serde_json::from_str::<Value>(&deeper).is_err());
    }
}
