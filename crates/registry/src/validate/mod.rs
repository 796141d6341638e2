//! Validation of objects as upstream's apiserver does it:
//!
//! - [`decode_check`]: what decoding into the typed object would refuse (a string where an
//!   int32 belongs, a bad quantity, bad base64), answered 400 with upstream's
//!   `Deployment in version "v1" cannot be handled as a Deployment: json: cannot unmarshal …`.
//! - [`unknown_fields`]: the fields the schema does not know, for `fieldValidation=Strict`
//!   ([`strict_error`]) and `Warn` ([`unknown_field_warnings`]).
//! - [`validate_create`] / [`validate_update`]: upstream's field validation (`pkg/apis/*/validation`)
//!   with its messages, for the 422 `Invalid` status ([`invalid_error`]). Custom resources are
//!   checked against their CRD's `openAPIV3Schema`.

mod kinds;
pub(crate) mod schema;

use serde_json::Value;

use crate::resource::ResourceDef;
use kumo_apimachinery::validation::{self as v, NameFn};
use kumo_apimachinery::{ApiError, Cause};

/// The name rule of a kind (`metadata.name` and `generateName`), as upstream's
/// `Validate<Kind>Name`.
pub fn name_fn(def: &ResourceDef) -> NameFn {
    match (def.group.as_str(), def.kind.as_str()) {
        ("", "Namespace") => v::name_is_dns_label,
        ("", "Service") => v::name_is_dns1035_label,
        ("rbac.authorization.k8s.io", _) => v::validate_path_segment_name,
        _ => v::name_is_dns_subdomain,
    }
}

/// The built-in definition name of a kind, if kumo has its type.
fn definition(def: &ResourceDef) -> Option<&'static str> {
    if def.custom {
        return None;
    }
    crate::openapi::schemas::builtin()
        .names
        .get(&(def.group.clone(), def.version.clone(), def.kind.clone()))
        .map(String::as_str)
}

/// `<Kind> in version "<v>" cannot be handled as a <Kind>: <detail>` (400 BadRequest).
pub fn cannot_handle(def: &ResourceDef, detail: &str) -> ApiError {
    ApiError::bad_request(format!(
        "{} in version \"{}\" cannot be handled as a {}: {detail}",
        def.kind, def.version, def.kind
    ))
}

/// Checks that `obj` decodes into `def`'s type (types, int32 ranges, quantities, timestamps,
/// base64); the error is upstream's 400.
#[allow(clippy::result_large_err)]
pub fn decode_check(def: &ResourceDef, obj: &Value) -> Result<(), ApiError> {
    if !obj.is_object() {
        return Err(cannot_handle(
            def,
            &format!(
                "json: cannot unmarshal {} into Go value of type {}",
                match obj {
                    Value::Array(_) => "array",
                    Value::String(_) => "string",
                    Value::Number(_) => "number",
                    Value::Bool(_) => "bool",
                    _ => "null",
                },
                def.kind
            ),
        ));
    }
    let walk = match definition(def) {
        Some(name) => schema::walk_builtin(name, obj),
        None => schema::walk_metadata(obj),
    };
    decoded(def, walk.error)
}

/// A walk's decoding error as upstream's 400.
#[allow(clippy::result_large_err)]
fn decoded(def: &ResourceDef, error: Option<String>) -> Result<(), ApiError> {
    match error {
        Some(e) => Err(cannot_handle(def, &e)),
        None => Ok(()),
    }
}

/// [`unknown_fields`] and [`decode_check`] in one walk. The decoding error does not depend on
/// the unknown fields (they are not decoded), so it holds for `obj` with them pruned too.
#[allow(clippy::result_large_err)]
pub fn unknown_fields_and_decode_check(
    def: &ResourceDef,
    obj: &Value,
) -> (Vec<String>, Result<(), ApiError>) {
    if !obj.is_object() {
        return (Vec::new(), decode_check(def, obj));
    }
    match definition(def) {
        Some(name) => {
            let walk = schema::walk_builtin(name, obj);
            (walk.unknown, decoded(def, walk.error))
        }
        None => (unknown_fields(def, obj), decode_check(def, obj)),
    }
}

/// The fields of `obj` that `def`'s schema does not know, upstream style
/// (`spec.foo`, `spec.template.spec.containers[0].foo`, `metadata.labelz`), in document order.
pub fn unknown_fields(def: &ResourceDef, obj: &Value) -> Vec<String> {
    match definition(def) {
        Some(name) => schema::walk_builtin(name, obj).unknown,
        None => {
            let mut unknown = schema::walk_metadata(obj).unknown;
            if let Some(s) = def.crd.as_ref().and_then(|c| c.schema.as_ref()) {
                let mut causes = Vec::new();
                schema::validate_custom(s, obj, &mut causes, &mut unknown);
            }
            unknown
        }
    }
}

/// Drops the optional fields that are `null`, empty lists or empty maps, as Go's JSON
/// encoding of the typed object does (`omitempty`): `annotations: {}`, `finalizers: []` and
/// the like are not stored. Custom resources: their metadata only.
pub fn omit_empty(def: &ResourceDef, obj: &mut Value) {
    match definition(def) {
        Some(name) => schema::omit_empty_builtin(name, obj),
        None => schema::omit_empty_metadata(obj),
    }
}

/// The 400 of `fieldValidation=Strict`:
/// `<Kind> in version "v1" cannot be handled as a <Kind>: strict decoding error: unknown field "spec.foo", …`.
pub fn strict_error(def: &ResourceDef, unknown: &[String]) -> ApiError {
    let list: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    cannot_handle(def, &format!("strict decoding error: {}", list.join(", ")))
}

/// The `Warning` headers of `fieldValidation=Warn` (the default): `unknown field "spec.foo"`.
pub fn unknown_field_warnings(unknown: &[String]) -> Vec<String> {
    unknown
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect()
}

/// Keys repeated within one JSON object of a raw request body, upstream style
/// (`metadata.name`, `spec.containers[0].image`). Parsed objects keep only the last value; for
/// `fieldValidation=Strict` upstream refuses them (`duplicate field "metadata.name"`), for `Warn`
/// it warns. Malformed JSON yields whatever was found before the error.
pub fn duplicate_fields(raw: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(raw);
    let _ = serde::de::DeserializeSeed::deserialize(
        dup::Scan {
            path: &dup::Seg::Root,
            out: &mut out,
        },
        &mut de,
    );
    out
}

/// Parses a JSON request body and finds its repeated keys in the same pass: the value
/// `serde_json::from_slice` gives (a repeated key keeps its last value) and what
/// [`duplicate_fields`] reports.
pub fn parse_json_with_duplicates(raw: &[u8]) -> Result<(Value, Vec<String>), serde_json::Error> {
    let mut out = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(raw);
    let v = serde::de::DeserializeSeed::deserialize(
        dup::Build {
            path: &dup::Seg::Root,
            out: &mut out,
        },
        &mut de,
    )?;
    de.end()?;
    Ok((v, out))
}

/// `duplicate field "x"` messages.
pub fn duplicate_field_warnings(duplicates: &[String]) -> Vec<String> {
    duplicates
        .iter()
        .map(|f| format!("duplicate field \"{f}\""))
        .collect()
}

/// The 400 of `fieldValidation=Strict` with unknown and duplicate fields.
pub fn strict_error_with_duplicates(
    def: &ResourceDef,
    unknown: &[String],
    duplicates: &[String],
) -> ApiError {
    let mut list = unknown_field_warnings(unknown);
    list.extend(duplicate_field_warnings(duplicates));
    cannot_handle(def, &format!("strict decoding error: {}", list.join(", ")))
}

mod dup {
    use std::borrow::Cow;
    use std::collections::HashSet;
    use std::fmt;

    use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};

    /// Where the scan is; rendered only for a duplicate.
    pub(super) enum Seg<'a> {
        Root,
        Key(&'a Seg<'a>, &'a str),
        Index(&'a Seg<'a>, usize),
    }

    impl Seg<'_> {
        fn render(&self, out: &mut String) {
            match self {
                Seg::Root => {}
                Seg::Key(parent, key) => {
                    parent.render(out);
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(key);
                }
                Seg::Index(parent, i) => {
                    parent.render(out);
                    out.push('[');
                    out.push_str(&i.to_string());
                    out.push(']');
                }
            }
        }
    }

    pub(super) struct Scan<'a> {
        pub path: &'a Seg<'a>,
        pub out: &'a mut Vec<String>,
    }

    impl<'de> DeserializeSeed<'de> for Scan<'_> {
        type Value = ();
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    /// A map key, borrowed from the input when it has no escapes.
    struct Key;

    impl<'de> DeserializeSeed<'de> for Key {
        type Value = Cow<'de, str>;
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_str(self)
        }
    }

    impl<'de> Visitor<'de> for Key {
        type Value = Cow<'de, str>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Cow::Borrowed(v))
        }
        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v.to_string()))
        }
        fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v))
        }
    }

    /// [`Scan`] that also builds the value.
    pub(super) struct Build<'a> {
        pub path: &'a Seg<'a>,
        pub out: &'a mut Vec<String>,
    }

    impl<'de> DeserializeSeed<'de> for Build<'_> {
        type Value = serde_json::Value;
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Build<'_> {
        type Value = serde_json::Value;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any valid JSON value")
        }
        fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
            Ok(serde_json::Value::Bool(v))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
            Ok(serde_json::Value::Number(v.into()))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
            Ok(serde_json::Value::Number(v.into()))
        }
        fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
            // As serde_json's own `Value` visitor.
            Ok(serde_json::Number::from_f64(v)
                .map_or(serde_json::Value::Null, serde_json::Value::Number))
        }
        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok(serde_json::Value::String(v.to_string()))
        }
        fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
            Ok(serde_json::Value::String(v))
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(serde_json::Value::Null)
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(serde_json::Value::Null)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            loop {
                let here = Seg::Index(self.path, items.len());
                let child = Build {
                    path: &here,
                    out: &mut *self.out,
                };
                match seq.next_element_seed(child)? {
                    Some(v) => items.push(v),
                    None => return Ok(serde_json::Value::Array(items)),
                }
            }
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut m = serde_json::Map::new();
            while let Some(key) = map.next_key_seed(Key)? {
                let here = Seg::Key(self.path, &key);
                if m.contains_key(key.as_ref()) {
                    let mut path = String::new();
                    here.render(&mut path);
                    self.out.push(path);
                }
                let v = map.next_value_seed(Build {
                    path: &here,
                    out: &mut *self.out,
                })?;
                m.insert(key.into_owned(), v);
            }
            Ok(serde_json::Value::Object(m))
        }
    }

    impl<'de> Visitor<'de> for Scan<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_none<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let mut i = 0usize;
            loop {
                let here = Seg::Index(self.path, i);
                let child = Scan {
                    path: &here,
                    out: &mut *self.out,
                };
                if seq.next_element_seed(child)?.is_none() {
                    return Ok(());
                }
                i += 1;
            }
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut seen: HashSet<Cow<'de, str>> = HashSet::new();
            while let Some(key) = map.next_key_seed(Key)? {
                let here = Seg::Key(self.path, &key);
                if seen.contains(&key) {
                    let mut path = String::new();
                    here.render(&mut path);
                    self.out.push(path);
                }
                map.next_value_seed(Scan {
                    path: &here,
                    out: &mut *self.out,
                })?;
                seen.insert(key);
            }
            Ok(())
        }
    }
}

/// The 422 for failed validation: `<Kind>.<group> "<name>" is invalid: <causes>`.
pub fn invalid_error(def: &ResourceDef, name: &str, causes: Vec<Cause>) -> ApiError {
    ApiError::invalid(&def.group, &def.kind, name, causes)
}

/// Validation of a new object (after defaulting).
pub fn validate_create(def: &ResourceDef, obj: &Value) -> Vec<Cause> {
    let mut causes = v::validate_object_meta(
        obj.get("metadata").unwrap_or(&Value::Null),
        def.namespaced(),
        name_fn(def),
    );
    if def.custom {
        causes.extend(custom_causes(def, obj));
        return causes;
    }
    causes.extend(kinds::create(def, obj));
    causes
}

/// Validation of an update from `old` to `new` (after defaulting): the create rules on `new`
/// plus immutability.
pub fn validate_update(def: &ResourceDef, old: &Value, new: &Value) -> Vec<Cause> {
    let null = Value::Null;
    let mut causes = v::validate_object_meta_update(
        new.get("metadata").unwrap_or(&null),
        old.get("metadata").unwrap_or(&null),
    );
    if def.custom {
        causes.extend(custom_causes(def, new));
        return causes;
    }
    causes.extend(kinds::update(def, old, new));
    causes
}

fn custom_causes(def: &ResourceDef, obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    if let Some(s) = def.crd.as_ref().and_then(|c| c.schema.as_ref()) {
        let mut unknown = Vec::new();
        schema::validate_custom(s, obj, &mut causes, &mut unknown);
    }
    causes
}

#[cfg(test)]
mod tests;
