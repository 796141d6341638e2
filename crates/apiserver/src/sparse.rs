//! The watch cache's parse of a stored object: the attributes selectors read and the place
//! the resourceVersion goes, without building the whole object. A pod is ~8 KB of JSON of
//! which selectors read a dozen short strings; building a full `Value` for each write (and
//! writing it back out) was a tenth of the apiserver's CPU under a create load.
//!
//! Anything unusual (invalid UTF-8, line breaks, escaped surrogates, numbers with exponents,
//! deep nesting, a stored resourceVersion, a kept key given twice, escaped top-level keys)
//! returns `None`, and the caller takes the full parse.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Paths kept besides the selector inputs: the labels, and the resourceVersion (a stored one
/// sends the object down the full parse).
const KEEP: &[&str] = &["metadata.labels", "metadata.resourceVersion"];

/// The paths kept: the selector inputs and [`KEEP`].
static PATHS: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
    let mut paths: Vec<&str> = crate::fields::inputs()
        .chain(KEEP.iter().copied())
        .collect();
    paths.sort_unstable();
    paths.dedup();
    paths
});

/// Nesting beyond this takes the full parse (serde_json refuses beyond 128 levels).
const MAX_DEPTH: usize = 100;

/// Parses stored JSON `value` sparsely: returns the object with only the kept paths, and
/// appends to `out` the JSON clients get, `value` with `"resourceVersion":"<rv>"` first in
/// `metadata`.
pub fn parse(value: &[u8], rv: i64, out: &mut Vec<u8>) -> Option<Value> {
    let text = std::str::from_utf8(value).ok()?;
    if !plain(value) {
        return None;
    }
    let at = metadata_offset(value)?;
    let mut de = serde_json::Deserializer::from_str(text);
    let obj = Keep { paths: &PATHS }.deserialize(&mut de).ok()?;
    de.end().ok()?;
    let meta = obj.get("metadata")?.as_object()?;
    if meta.contains_key("resourceVersion") {
        return None;
    }
    let (head, tail) = value.split_at(at + 1);
    out.reserve(value.len() + 40);
    out.extend_from_slice(head);
    out.extend_from_slice(b"\"resourceVersion\":\"");
    out.extend_from_slice(rv.to_string().as_bytes());
    out.push(b'"');
    if tail.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'}') {
        out.push(b',');
    }
    out.extend_from_slice(tail);
    Some(obj)
}

/// Whether `json` has nothing the skipped parts of a sparse parse would let through and the
/// full parse refuses or changes: a line break (watch streams are line-delimited for some
/// clients, kube-rs among them), an escaped UTF-16 surrogate (lone ones are refused), or a
/// number with an exponent or over 300 characters (out of `f64`'s range), nesting deeper than
/// the full parse's recursion limit.
fn plain(json: &[u8]) -> bool {
    let mut in_string = false;
    let mut number = 0usize;
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(&b) = json.get(i) {
        if in_string {
            match b {
                b'"' => in_string = false,
                b'\\' => {
                    if json.get(i + 1) == Some(&b'u')
                        && json.get(i + 2).is_some_and(|c| (c | 0x20) == b'd')
                        && json
                            .get(i + 3)
                            .is_some_and(|c| matches!(c | 0x20, b'8' | b'9' | b'a'..=b'f'))
                    {
                        return false;
                    }
                    i += 1;
                }
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'{' | b'[' => {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return false;
                    }
                }
                b'}' | b']' => depth = depth.saturating_sub(1),
                b'\n' | b'\r' => return false,
                b'e' | b'E' if number > 0 => return false,
                _ => {}
            }
            number = if matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.') {
                number + 1
            } else {
                0
            };
            if number > 300 {
                return false;
            }
        }
        i += 1;
    }
    true
}

/// The byte offset of the `{` that opens the top-level `"metadata"` object. `None` when
/// `json` is not an object, has no such member, or spells a top-level key with escapes.
fn metadata_offset(json: &[u8]) -> Option<usize> {
    let mut i = skip_ws(json, 0);
    if json.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    loop {
        i = skip_ws(json, i);
        if json.get(i) != Some(&b'"') {
            return None;
        }
        let start = i + 1;
        let end = start + json.get(start..)?.iter().position(|b| *b == b'"')?;
        let key = &json[start..end];
        if key.contains(&b'\\') {
            return None;
        }
        i = skip_ws(json, end + 1);
        if json.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(json, i + 1);
        if key == b"metadata" {
            return (json.get(i) == Some(&b'{')).then_some(i);
        }
        i = skip_ws(json, skip_value(json, i)?);
        match json.get(i) {
            Some(b',') => i += 1,
            _ => return None,
        }
    }
}

fn skip_ws(json: &[u8], mut i: usize) -> usize {
    while json.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    i
}

/// The offset just past the value starting at `i` (its syntax is checked by the real parse).
fn skip_value(json: &[u8], mut i: usize) -> Option<usize> {
    match *json.get(i)? {
        b'"' => skip_string(json, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            loop {
                match *json.get(i)? {
                    b'"' => {
                        i = skip_string(json, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.checked_sub(1)?;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            while let Some(b) = json.get(i) {
                if matches!(b, b',' | b'}' | b']') || b.is_ascii_whitespace() {
                    break;
                }
                i += 1;
            }
            Some(i)
        }
    }
}

/// The offset just past the string whose opening quote is at `i`.
fn skip_string(json: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    loop {
        match *json.get(i)? {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
}

/// A map key, borrowed from the input unless it has escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

/// Deserializes a value keeping only `paths` (dotted, relative to it); a value that is not
/// an object keeps nothing (`null`).
struct Keep<'p> {
    paths: &'p [&'p str],
}

impl<'de> DeserializeSeed<'de> for Keep<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Keep<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(Key(key)) = map.next_key()? {
            let mut whole = false;
            let mut sub: Vec<&str> = Vec::new();
            for p in self.paths {
                if *p == key {
                    whole = true;
                } else if let Some(rest) = p.strip_prefix(&*key).and_then(|r| r.strip_prefix('.')) {
                    sub.push(rest);
                }
            }
            let v = if whole {
                map.next_value::<Value>()?
            } else if !sub.is_empty() {
                map.next_value_seed(Keep { paths: &sub })?
            } else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            if out.insert(key.into_owned(), v).is_some() {
                return Err(serde::de::Error::custom("a kept key appears twice"));
            }
        }
        Ok(Value::Object(out))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Value::Null)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_str<E>(self, _: &str) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The full parse's JSON: the object with the resourceVersion set, written out.
    fn full(value: &[u8], rv: i64) -> Value {
        let mut v: Value = serde_json::from_slice(value).expect("test input is JSON");
        v["metadata"]["resourceVersion"] = json!(rv.to_string());
        v
    }

    fn sparse(value: &[u8], rv: i64) -> Option<(Value, Value)> {
        let mut out = Vec::new();
        let obj = parse(value, rv, &mut out)?;
        Some((
            obj,
            serde_json::from_slice(&out).expect("sparse output is JSON"),
        ))
    }

    #[test]
    fn same_json_as_the_full_parse_and_the_selector_inputs() {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "d", "labels": {"app": "x", "t": "1"},
                "annotations": {"a": "{\"metadata\":{}}"},
                "managedFields": [{"manager": "m", "fieldsV1": {"f:spec": {}}}]},
            "spec": {"nodeName": "n1", "hostNetwork": true, "containers": [{"name": "c"}],
                "template": {"metadata": {"name": "inner"}}},
            "status": {"phase": "Running", "conditions": [{"type": "Ready"}]}
        });
        let bytes = serde_json::to_vec(&pod).expect("serializes");
        let (obj, json) = sparse(&bytes, 42).expect("a pod takes the sparse parse");
        assert_eq!(json, full(&bytes, 42));
        assert_eq!(
            obj,
            json!({"kind": "Pod",
                "metadata": {"name": "p", "namespace": "d", "labels": {"app": "x", "t": "1"}},
                "spec": {"nodeName": "n1", "hostNetwork": true},
                "status": {"phase": "Running"}})
        );
        assert_eq!(
            crate::fields::field_set(&obj),
            crate::fields::field_set(&pod)
        );
        let event = json!({"kind": "Event", "involvedObject": {"kind": "Pod", "name": "p"},
            "metadata": {"name": "e"}, "reason": "Started", "source": {"component": "k"},
            "type": "Normal"});
        let bytes = serde_json::to_vec(&event).expect("serializes");
        let (obj, json) = sparse(&bytes, 7).expect("an event takes the sparse parse");
        assert_eq!(json, full(&bytes, 7));
        assert_eq!(
            crate::fields::field_set(&obj),
            crate::fields::field_set(&event)
        );
    }

    #[test]
    fn empty_metadata_and_spaces_still_give_valid_json() {
        for raw in [
            &br#"{"kind":"X","metadata":{}}"#[..],
            br#"{ "kind" : "X" , "metadata" : { } , "spec": [1, {"a": "}"}] }"#,
            br#"{"spec":{"x":"a\"b\\"},"metadata":{"name":"n"}}"#,
        ] {
            let (_, json) = sparse(raw, 3).unwrap_or_else(|| panic!("{raw:?}"));
            assert_eq!(json, full(raw, 3), "{}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn unusual_objects_take_the_full_parse() {
        for raw in [
            &b"{\"kind\":\"X\",\n\"metadata\":{}}"[..],
            br#"{"kind":"X","metadata":{"resourceVersion":"5"}}"#,
            br#"{"metadata":{"name":"a"},"metadata":{"name":"b"}}"#,
            br#"{"kind":"X","meta\u0064ata":{}}"#,
            br#"{"kind":"X"}"#,
            br#"{"kind":"X","metadata":"nope"}"#,
            br#"[1,2]"#,
            br#"{"kind":"X","metadata":{}"#,
            br#"{"kind":"X","metadata":{}} trailing"#,
            b"",
            b"{\"kind\":\"X\xc8\",\"metadata\":{}}",
            br#"{"kind":"X","spec":"\ud800","metadata":{}}"#,
            br#"{"kind":"X","spec":1e400,"metadata":{}}"#,
        ] {
            assert!(sparse(raw, 1).is_none(), "{}", String::from_utf8_lossy(raw));
        }
    }
}
