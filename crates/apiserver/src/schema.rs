//! The per-kind behaviour from `kumo-registry` the write pipeline calls: typed decoding,
//! unknown-field detection and pruning, defaulting, validation.

use kumo_apimachinery::{ApiError, Cause};
use kumo_registry::ResourceDef;
use serde_json::Value;

/// Fields the kind's schema does not know, upstream-style paths (`spec.foo`).
pub fn unknown_fields(def: &ResourceDef, obj: &Value) -> Vec<String> {
    kumo_registry::validate::unknown_fields(def, obj)
        .into_iter()
        .map(|p| p.trim_start_matches('.').to_string())
        .collect()
}

/// Drops unknown fields (built-in types never store them).
pub fn prune_unknown(def: &ResourceDef, obj: &mut Value) {
    prune_paths(obj, &kumo_registry::validate::unknown_fields(def, obj));
}

/// Removes the unknown fields found earlier (paths as [`unknown_fields`] reports them).
pub fn prune_paths(obj: &mut Value, unknown: &[String]) {
    for path in unknown {
        remove_path(obj, path.trim_start_matches('.'));
    }
}

fn remove_path(obj: &mut Value, path: &str) {
    // Paths look like `spec.template.spec.containers[0].foo`.
    let mut segs: Vec<String> = Vec::new();
    for part in path.split('.') {
        let mut rest = part;
        while let Some(i) = rest.find('[') {
            if i > 0 {
                segs.push(rest[..i].to_string());
            }
            let end = rest[i..].find(']').map(|e| i + e).unwrap_or(rest.len());
            segs.push(rest[i..=end.min(rest.len() - 1)].to_string());
            rest = &rest[(end + 1).min(rest.len())..];
        }
        if !rest.is_empty() {
            segs.push(rest.to_string());
        }
    }
    let Some((last, parents)) = segs.split_last() else {
        return;
    };
    let mut cur = obj;
    for s in parents {
        let next = if let Some(idx) = s.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
            idx.parse::<usize>().ok().and_then(|i| cur.get_mut(i))
        } else {
            cur.get_mut(s.as_str())
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(o) = cur.as_object_mut() {
        o.remove(last.as_str());
    }
}

/// Catches wrong types by decoding into the kind's typed struct.
pub fn decode_check(def: &ResourceDef, obj: &Value) -> Result<(), ApiError> {
    kumo_registry::validate::decode_check(def, obj)
}

/// Upstream defaulting.
pub fn apply_defaults(def: &ResourceDef, obj: &mut Value) {
    kumo_registry::defaults::apply_defaults(def, obj);
}

/// Validation of a new object.
pub fn validate_create(def: &ResourceDef, obj: &Value) -> Vec<Cause> {
    kumo_registry::validate::validate_create(def, obj)
}

/// Validation of an update.
pub fn validate_update(def: &ResourceDef, old: &Value, new: &Value) -> Vec<Cause> {
    kumo_registry::validate::validate_update(def, old, new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn removes_nested_paths() {
        let mut v = json!({"spec": {"containers": [{"name": "a", "bogus": 1}], "x": 2}});
        remove_path(&mut v, "spec.containers[0].bogus");
        remove_path(&mut v, "spec.x");
        assert_eq!(v, json!({"spec": {"containers": [{"name": "a"}]}}));
    }
}
