//! `metadata.managedFields` entries: decoding, manager identities, encoding and order
//! (upstream `managedfields/internal/managedfields.go`).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::fieldpath::{FieldSet, go_json_string, go_quote};

/// `Apply`.
pub const OPERATION_APPLY: &str = "Apply";
/// `Update`.
pub const OPERATION_UPDATE: &str = "Update";

/// One decoded `metadata.managedFields` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedFieldsEntry {
    /// `manager`.
    pub manager: String,
    /// `operation`: `Apply` or `Update`.
    pub operation: String,
    /// `apiVersion` the fields were recorded in.
    pub api_version: String,
    /// `time` (RFC 3339), when the manager last changed the object.
    pub time: Option<String>,
    /// `fieldsV1`, decoded.
    pub fields: FieldSet,
    /// `subresource`, when the write went to one (`status`, `scale`).
    pub subresource: Option<String>,
}

/// Who owns a field set: upstream's manager identifier (manager, operation, the API version
/// for updates, subresource).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ManagerId {
    pub manager: String,
    pub operation: String,
    /// Empty for appliers: an applier keeps one entry whatever version it applies in.
    pub api_version: String,
    pub subresource: String,
}

impl ManagerId {
    /// Upstream `BuildManagerIdentifier`.
    pub fn new(manager: &str, operation: &str, api_version: &str, subresource: &str) -> ManagerId {
        ManagerId {
            manager: manager.to_string(),
            operation: operation.to_string(),
            api_version: if operation == OPERATION_APPLY {
                String::new()
            } else {
                api_version.to_string()
            },
            subresource: subresource.to_string(),
        }
    }

    /// The transient identity upstream's `managedFieldsUpdater` records an update under
    /// before folding it into the real manager.
    pub fn current_operation() -> ManagerId {
        ManagerId {
            manager: "current-operation".to_string(),
            operation: String::new(),
            api_version: String::new(),
            subresource: String::new(),
        }
    }

    fn is_transient(&self) -> bool {
        self.operation.is_empty()
    }

    /// The identifier string upstream keys managers by (the JSON of the entry without time
    /// and fields); conflicts are grouped and sorted by it.
    pub fn identifier(&self) -> String {
        if self.is_transient() {
            return self.manager.clone();
        }
        let mut out = String::from("{");
        let mut first = true;
        for (k, v) in [
            ("manager", &self.manager),
            ("operation", &self.operation),
            ("apiVersion", &self.api_version),
            ("subresource", &self.subresource),
        ] {
            if v.is_empty() {
                continue;
            }
            if !first {
                out.push(',');
            }
            first = false;
            go_json_string(k, &mut out);
            out.push(':');
            go_json_string(v, &mut out);
        }
        out.push('}');
        out
    }

    /// Upstream `printManager`: `"name"`, `"name" with subresource "status"`, and
    /// ` using <apiVersion>` for updaters.
    pub fn describe(&self) -> String {
        if self.is_transient() {
            return go_quote(&self.manager);
        }
        let mut s = go_quote(&self.manager);
        if !self.subresource.is_empty() {
            s = format!("{s} with subresource {}", go_quote(&self.subresource));
        }
        if self.operation == OPERATION_UPDATE {
            s = format!("{s} using {}", self.api_version);
        }
        s
    }
}

/// The fields one manager owns, in the version it recorded them.
#[derive(Debug, Clone)]
pub(crate) struct VersionedSet {
    pub set: FieldSet,
    pub api_version: String,
    pub applied: bool,
}

/// Decoded managed fields: the sets and the times.
#[derive(Debug, Clone, Default)]
pub(crate) struct Managed {
    pub fields: BTreeMap<ManagerId, VersionedSet>,
    pub times: BTreeMap<ManagerId, String>,
}

/// `metadata.managedFields` of an object, if present and not null.
fn managed_fields_value(obj: &Value) -> Option<&Value> {
    obj.get("metadata")
        .and_then(|m| m.get("managedFields"))
        .filter(|v| !v.is_null())
}

/// Upstream `isResetManagedFields`: `[]` or `[{}]` asks to drop all managed fields.
pub(crate) fn is_reset(obj: &Value) -> bool {
    match managed_fields_value(obj) {
        Some(Value::Array(items)) => match items.as_slice() {
            [] => true,
            [Value::Object(m)] => m.is_empty(),
            _ => false,
        },
        _ => false,
    }
}

fn str_field<'a>(m: &'a Map<String, Value>, key: &str, i: usize) -> Result<&'a str, String> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(""),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(format!(
            "managed fields entry {i}: {key} must be a string, got {other}"
        )),
    }
}

/// Decodes the entries of an object's `metadata.managedFields` (upstream
/// `DecodeManagedFields`, same error wording).
pub fn decode_entries(obj: &Value) -> Result<Vec<ManagedFieldsEntry>, String> {
    let items = match managed_fields_value(obj) {
        None => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(other) => return Err(format!("managedFields must be a list, got {other}")),
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Value::Object(m) = item else {
            return Err(format!("managed fields entry {i} must be an object"));
        };
        let operation = str_field(m, "operation", i)?;
        if operation != OPERATION_APPLY && operation != OPERATION_UPDATE {
            return Err("operation must be `Apply` or `Update`".to_string());
        }
        let api_version = str_field(m, "apiVersion", i)?;
        if api_version.is_empty() {
            return Err("apiVersion must not be empty".to_string());
        }
        match str_field(m, "fieldsType", i)? {
            "FieldsV1" => {}
            "" => return Err(format!("missing fieldsType in managed fields entry {i}")),
            other => {
                return Err(format!(
                    "invalid fieldsType {} in managed fields entry {i}",
                    go_quote(other)
                ));
            }
        }
        let fields = match m.get("fieldsV1") {
            None | Some(Value::Null) => FieldSet::new(),
            Some(v) => FieldSet::from_fields_v1(v).map_err(|e| {
                format!("error decoding versioned set from entry {i}: error decoding set: {e}")
            })?,
        };
        let time = str_field(m, "time", i)?;
        let subresource = str_field(m, "subresource", i)?;
        out.push(ManagedFieldsEntry {
            manager: str_field(m, "manager", i)?.to_string(),
            operation: operation.to_string(),
            api_version: api_version.to_string(),
            time: (!time.is_empty()).then(|| time.to_string()),
            fields,
            subresource: (!subresource.is_empty()).then(|| subresource.to_string()),
        });
    }
    Ok(out)
}

/// Decodes into manager sets (a later entry with the same identity wins, like upstream's
/// map).
pub(crate) fn decode(obj: &Value) -> Result<Managed, String> {
    let mut managed = Managed::default();
    for e in decode_entries(obj)? {
        let id = ManagerId::new(
            &e.manager,
            &e.operation,
            &e.api_version,
            e.subresource.as_deref().unwrap_or(""),
        );
        match e.time {
            Some(t) => {
                managed.times.insert(id.clone(), t);
            }
            None => {
                managed.times.remove(&id);
            }
        }
        managed.fields.insert(
            id,
            VersionedSet {
                set: e.fields,
                api_version: e.api_version,
                applied: e.operation == OPERATION_APPLY,
            },
        );
    }
    Ok(managed)
}

/// Seconds since the epoch of an RFC 3339 time (`0` when absent or unreadable, as upstream
/// treats a nil time).
pub(crate) fn unix_seconds(t: Option<&str>) -> i64 {
    t.and_then(parse_rfc3339).unwrap_or(0)
}

fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let rb = rest.as_bytes();
            if rb.len() != 6 || rb[3] != b':' {
                return None;
            }
            let sign = match rb[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            sign * (oh * 3600 + om * 60)
        }
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + se - offset)
}

/// Encodes managed fields as upstream does (`nil` when there are none): one entry per manager,
/// sorted by operation, time, manager, apiVersion, subresource.
pub(crate) fn encode(managed: &Managed) -> Option<Value> {
    if managed.fields.is_empty() {
        return None;
    }
    let mut entries: Vec<(&ManagerId, &VersionedSet, Option<&String>)> = managed
        .fields
        .iter()
        .filter(|(id, _)| !id.is_transient())
        .map(|(id, vs)| (id, vs, managed.times.get(id)))
        .collect();
    let op = |id: &ManagerId, vs: &VersionedSet| -> String {
        if vs.applied {
            OPERATION_APPLY.to_string()
        } else {
            id.operation.clone()
        }
    };
    entries.sort_by(|a, b| {
        op(a.0, a.1)
            .cmp(&op(b.0, b.1))
            .then_with(|| {
                unix_seconds(a.2.map(String::as_str)).cmp(&unix_seconds(b.2.map(String::as_str)))
            })
            .then_with(|| a.0.manager.cmp(&b.0.manager))
            .then_with(|| a.1.api_version.cmp(&b.1.api_version))
            .then_with(|| a.0.subresource.cmp(&b.0.subresource))
            .then(Ordering::Equal)
    });
    let list = entries
        .into_iter()
        .map(|(id, vs, time)| {
            let mut m = Map::new();
            if !id.manager.is_empty() {
                m.insert("manager".into(), Value::String(id.manager.clone()));
            }
            m.insert("operation".into(), Value::String(op(id, vs)));
            m.insert("apiVersion".into(), Value::String(vs.api_version.clone()));
            if let Some(t) = time {
                m.insert("time".into(), Value::String(t.clone()));
            }
            m.insert("fieldsType".into(), Value::String("FieldsV1".into()));
            m.insert("fieldsV1".into(), vs.set.to_fields_v1());
            if !id.subresource.is_empty() {
                m.insert("subresource".into(), Value::String(id.subresource.clone()));
            }
            Value::Object(m)
        })
        .collect();
    Some(Value::Array(list))
}

/// Sets (or removes, for `None`) `metadata.managedFields` on an object.
pub(crate) fn set_on_object(obj: &mut Value, managed: Option<Value>) {
    let Value::Object(root) = obj else { return };
    match managed {
        Some(list) => {
            let meta = root
                .entry("metadata")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(m) = meta {
                m.insert("managedFields".into(), list);
            }
        }
        None => {
            if let Some(Value::Object(m)) = root.get_mut("metadata") {
                m.remove("managedFields");
            }
        }
    }
}

/// Upstream `capManagersManager`: past `max` update entries, the oldest are folded into one
/// `ancient-changes` entry per API version.
pub(crate) fn cap_update_managers(managed: &mut Managed, max: usize) {
    let mut updaters: Vec<ManagerId> = managed
        .fields
        .iter()
        .filter(|(_, vs)| !vs.applied)
        .map(|(id, _)| id.clone())
        .collect();
    if updaters.len() <= max {
        return;
    }
    let seconds = |m: &Managed, id: &ManagerId| unix_seconds(m.times.get(id).map(String::as_str));
    updaters.sort_by(|a, b| {
        seconds(managed, a)
            .cmp(&seconds(managed, b))
            .then_with(|| a.identifier().cmp(&b.identifier()))
    });
    let mut first_of_version: BTreeMap<String, ManagerId> = BTreeMap::new();
    let mut length = updaters.len();
    for id in updaters {
        if length <= max {
            break;
        }
        let Some(vs) = managed.fields.get(&id).cloned() else {
            continue;
        };
        let time = managed.times.get(&id).cloned();
        let version = vs.api_version.clone();
        let bucket = ManagerId::new("ancient-changes", OPERATION_UPDATE, &version, "");
        if let Some(first) = first_of_version.get(&version) {
            if id == bucket {
                // Folding the bucket into itself would drop it.
                continue;
            }
            if !managed.fields.contains_key(&bucket)
                && let Some(s) = managed.fields.remove(first)
            {
                managed.fields.insert(bucket.clone(), s);
            }
            let merged = match managed.fields.get(&bucket) {
                Some(b) => vs.set.union(&b.set),
                None => vs.set.clone(),
            };
            managed.fields.insert(
                bucket.clone(),
                VersionedSet {
                    set: merged,
                    api_version: vs.api_version.clone(),
                    applied: vs.applied,
                },
            );
            managed.fields.remove(&id);
            length -= 1;
            match time {
                Some(t) => {
                    managed.times.insert(bucket, t);
                }
                None => {
                    managed.times.remove(&bucket);
                }
            }
        } else {
            first_of_version.insert(version, id);
        }
    }
}
