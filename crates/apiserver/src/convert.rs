//! Version conversion for resources that share storage: `events.k8s.io/v1` Events are stored
//! as core `v1` Events (upstream does the same), so `kubectl get events`, `kubectl describe`
//! and controllers that record through `events.k8s.io` see one set of events.

use kumo_registry::ResourceDef;
use serde_json::{Map, Value};

/// `(events.k8s.io/v1 name, core/v1 name)` of the renamed fields.
const EVENT_FIELDS: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
    ("reportingController", "reportingComponent"),
];

/// Whether objects of `def` are stored in another version.
pub fn needs_conversion(def: &ResourceDef) -> bool {
    def.group == "events.k8s.io"
}

fn rename(obj: Value, to_storage: bool, api_version: &str) -> Value {
    let Value::Object(map) = obj else { return obj };
    let mut out = Map::new();
    for (k, v) in map {
        let renamed = EVENT_FIELDS.iter().find_map(|(new, old)| {
            if to_storage {
                (k == *new).then_some(*old)
            } else {
                (k == *old).then_some(*new)
            }
        });
        out.insert(renamed.map(str::to_string).unwrap_or(k), v);
    }
    out.insert("apiVersion".into(), Value::String(api_version.to_string()));
    Value::Object(out)
}

/// The stored form of `obj`, borrowed when `def` stores its objects as they are served.
pub fn storage_form<'a>(def: &ResourceDef, obj: &'a Value) -> std::borrow::Cow<'a, Value> {
    if needs_conversion(def) {
        std::borrow::Cow::Owned(rename(obj.clone(), true, "v1"))
    } else {
        std::borrow::Cow::Borrowed(obj)
    }
}

/// An object of `def` from its stored form.
pub fn from_storage(def: &ResourceDef, obj: Value) -> Value {
    if needs_conversion(def) {
        rename(obj, false, &def.api_version())
    } else {
        obj
    }
}

/// A field-selector name of `def` in the stored form (`regarding.name` → `involvedObject.name`).
pub fn field_to_storage(def: &ResourceDef, field: &str) -> String {
    if !needs_conversion(def) {
        return field.to_string();
    }
    let (head, tail) = match field.split_once('.') {
        Some((h, t)) => (h, Some(t)),
        None => (field, None),
    };
    let head = EVENT_FIELDS
        .iter()
        .find(|(new, _)| *new == head)
        .map(|(_, old)| *old)
        .unwrap_or(head);
    match tail {
        Some(t) => format!("{head}.{t}"),
        None => head.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_round_trip() {
        let defs = kumo_registry::builtin();
        let def = defs
            .iter()
            .find(|d| d.group == "events.k8s.io")
            .expect("events.k8s.io");
        let ev = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
            "regarding": {"kind": "Pod", "name": "p"}, "note": "hi", "reason": "Scheduled",
            "reportingController": "kumo-scheduler", "reportingInstance": "s1", "eventTime": "2026-01-01T00:00:00.000000Z", "action": "Binding", "type": "Normal"});
        let stored = storage_form(def, &ev).into_owned();
        assert_eq!(stored["apiVersion"], "v1");
        assert_eq!(stored["involvedObject"]["name"], "p");
        assert_eq!(stored["message"], "hi");
        assert_eq!(stored["reportingComponent"], "kumo-scheduler");
        assert_eq!(from_storage(def, stored), ev);
        assert_eq!(
            field_to_storage(def, "regarding.name"),
            "involvedObject.name"
        );
        assert_eq!(field_to_storage(def, "reason"), "reason");
    }
}
