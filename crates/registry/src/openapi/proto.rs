//! `/openapi/v2` as `application/com.github.proto-openapi.spec.v2@v1.0+protobuf`: the Swagger
//! document encoded as gnostic's `openapi.v2.Document` (`openapiv2/OpenAPIv2.proto`), which is
//! all kubectl 1.27/1.28 read for `apply` validation and patch computation.
//!
//! Only what a Swagger JSON document built by this crate contains is encoded; vendor
//! extensions and free-form values (`default`, `enum`, `example`) travel as `Any.yaml` holding
//! their JSON text (JSON is YAML).

use serde_json::{Map, Value};

#[derive(Default)]
struct W(Vec<u8>);

impl W {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn key(&mut self, field: u32, wire: u8) {
        self.varint((u64::from(field) << 3) | u64::from(wire));
    }

    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }

    fn string(&mut self, field: u32, s: &str) {
        if !s.is_empty() {
            self.bytes(field, s.as_bytes());
        }
    }

    fn strings(&mut self, field: u32, v: Option<&Value>) {
        for s in v.and_then(Value::as_array).into_iter().flatten() {
            if let Some(s) = s.as_str() {
                // Repeated strings keep empty elements.
                self.bytes(field, s.as_bytes());
            }
        }
    }

    fn boolean(&mut self, field: u32, b: bool) {
        if b {
            self.key(field, 0);
            self.varint(1);
        }
    }

    fn double(&mut self, field: u32, f: f64) {
        if f != 0.0 {
            self.key(field, 1);
            self.0.extend_from_slice(&f.to_le_bytes());
        }
    }

    fn int64(&mut self, field: u32, i: i64) {
        if i != 0 {
            self.key(field, 0);
            self.varint(i as u64);
        }
    }

    fn message(&mut self, field: u32, m: W) {
        self.bytes(field, &m.0);
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// `Any { yaml }` with the value's JSON text.
fn any(v: &Value) -> W {
    let mut w = W::default();
    w.string(2, &v.to_string());
    w
}

/// `NamedAny` entries for the `x-` keys of an object.
fn vendor_extensions(w: &mut W, field: u32, m: &Map<String, Value>) {
    for (k, v) in m.iter().filter(|(k, _)| k.starts_with("x-")) {
        let mut named = W::default();
        named.string(1, k);
        named.message(2, any(v));
        w.message(field, named);
    }
}

fn schema(v: &Value) -> W {
    let mut w = W::default();
    let Value::Object(m) = v else {
        return w;
    };
    w.string(1, str_of(v, "$ref"));
    w.string(2, str_of(v, "format"));
    w.string(3, str_of(v, "title"));
    w.string(4, str_of(v, "description"));
    if let Some(d) = m.get("default") {
        w.message(5, any(d));
    }
    if let Some(x) = m.get("multipleOf").and_then(Value::as_f64) {
        w.double(6, x);
    }
    if let Some(x) = m.get("maximum").and_then(Value::as_f64) {
        w.double(7, x);
    }
    w.boolean(
        8,
        m.get("exclusiveMaximum").and_then(Value::as_bool) == Some(true),
    );
    if let Some(x) = m.get("minimum").and_then(Value::as_f64) {
        w.double(9, x);
    }
    w.boolean(
        10,
        m.get("exclusiveMinimum").and_then(Value::as_bool) == Some(true),
    );
    for (key, field) in [
        ("maxLength", 11),
        ("minLength", 12),
        ("maxItems", 14),
        ("minItems", 15),
        ("maxProperties", 17),
        ("minProperties", 18),
    ] {
        if let Some(x) = m.get(key).and_then(Value::as_i64) {
            w.int64(field, x);
        }
    }
    w.string(13, str_of(v, "pattern"));
    w.boolean(
        16,
        m.get("uniqueItems").and_then(Value::as_bool) == Some(true),
    );
    w.strings(19, m.get("required"));
    for e in m
        .get("enum")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        w.message(20, any(e));
    }
    match m.get("additionalProperties") {
        Some(ap @ Value::Object(_)) => {
            let mut item = W::default();
            item.message(1, schema(ap));
            w.message(21, item);
        }
        Some(Value::Bool(b)) => {
            let mut item = W::default();
            item.key(2, 0);
            item.varint(u64::from(*b));
            w.message(21, item);
        }
        _ => {}
    }
    match m.get("type") {
        Some(Value::String(t)) => {
            let mut ti = W::default();
            ti.string(1, t);
            w.message(22, ti);
        }
        Some(t @ Value::Array(_)) => {
            let mut ti = W::default();
            ti.strings(1, Some(t));
            w.message(22, ti);
        }
        _ => {}
    }
    match m.get("items") {
        Some(i @ Value::Object(_)) => {
            let mut items = W::default();
            items.message(1, schema(i));
            w.message(23, items);
        }
        Some(Value::Array(list)) => {
            let mut items = W::default();
            for i in list {
                items.message(1, schema(i));
            }
            w.message(23, items);
        }
        _ => {}
    }
    for s in m
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        w.message(24, schema(s));
    }
    if let Some(Value::Object(props)) = m.get("properties") {
        let mut p = W::default();
        for (name, s) in props {
            let mut named = W::default();
            named.string(1, name);
            named.message(2, schema(s));
            p.message(1, named);
        }
        w.message(25, p);
    }
    w.boolean(27, m.get("readOnly").and_then(Value::as_bool) == Some(true));
    if let Some(e) = m.get("example") {
        w.message(30, any(e));
    }
    vendor_extensions(&mut w, 31, m);
    w
}

fn parameter(p: &Value) -> W {
    let mut param = W::default();
    if str_of(p, "in") == "body" {
        let mut body = W::default();
        body.string(1, str_of(p, "description"));
        body.string(2, str_of(p, "name"));
        body.string(3, "body");
        body.boolean(4, p.get("required").and_then(Value::as_bool) == Some(true));
        if let Some(s) = p.get("schema") {
            body.message(5, schema(s));
        }
        param.message(1, body);
    } else {
        let location = str_of(p, "in");
        let mut sub = W::default();
        sub.boolean(1, p.get("required").and_then(Value::as_bool) == Some(true));
        sub.string(2, location);
        sub.string(3, str_of(p, "description"));
        sub.string(4, str_of(p, "name"));
        let unique = p.get("uniqueItems").and_then(Value::as_bool) == Some(true);
        let (which, unique_field) = match location {
            "path" => {
                sub.string(5, str_of(p, "type"));
                (4, 19)
            }
            "header" => {
                sub.string(5, str_of(p, "type"));
                (1, 19)
            }
            "formData" => {
                sub.string(6, str_of(p, "type"));
                (2, 20)
            }
            _ => {
                sub.string(6, str_of(p, "type"));
                (3, 20)
            }
        };
        sub.boolean(unique_field, unique);
        let mut non_body = W::default();
        non_body.message(which, sub);
        param.message(2, non_body);
    }
    let mut item = W::default();
    item.message(1, param);
    item
}

fn operation(op: &Value) -> W {
    let mut w = W::default();
    w.strings(1, op.get("tags"));
    w.string(2, str_of(op, "summary"));
    w.string(3, str_of(op, "description"));
    w.string(5, str_of(op, "operationId"));
    w.strings(6, op.get("produces"));
    w.strings(7, op.get("consumes"));
    for p in op
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        w.message(8, parameter(p));
    }
    if let Some(Value::Object(responses)) = op.get("responses") {
        let mut rs = W::default();
        for (code, r) in responses {
            let mut resp = W::default();
            resp.string(1, str_of(r, "description"));
            if let Some(s) = r.get("schema") {
                let mut item = W::default();
                item.message(1, schema(s));
                resp.message(2, item);
            }
            let mut value = W::default();
            value.message(1, resp);
            let mut named = W::default();
            named.string(1, code);
            named.message(2, value);
            rs.message(1, named);
        }
        w.message(9, rs);
    }
    w.strings(10, op.get("schemes"));
    if let Value::Object(m) = op {
        vendor_extensions(&mut w, 13, m);
    }
    w
}

fn path_item(item: &Value) -> W {
    let mut w = W::default();
    for (method, field) in [
        ("get", 2),
        ("put", 3),
        ("post", 4),
        ("delete", 5),
        ("options", 6),
        ("head", 7),
        ("patch", 8),
    ] {
        if let Some(op) = item.get(method) {
            w.message(field, operation(op));
        }
    }
    for p in item
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        w.message(9, parameter(p));
    }
    if let Value::Object(m) = item {
        vendor_extensions(&mut w, 10, m);
    }
    w
}

/// Encodes a Swagger 2.0 JSON document as an `openapi.v2.Document`.
pub(crate) fn encode_document(doc: &Value) -> Vec<u8> {
    let mut w = W::default();
    w.string(1, str_of(doc, "swagger"));
    if let Some(info) = doc.get("info") {
        let mut i = W::default();
        i.string(1, str_of(info, "title"));
        i.string(2, str_of(info, "version"));
        i.string(3, str_of(info, "description"));
        w.message(2, i);
    }
    if let Some(Value::Object(paths)) = doc.get("paths") {
        let mut p = W::default();
        for (name, item) in paths {
            let mut named = W::default();
            named.string(1, name);
            named.message(2, path_item(item));
            p.message(2, named);
        }
        w.message(8, p);
    }
    if let Some(Value::Object(defs)) = doc.get("definitions") {
        let mut d = W::default();
        for (name, s) in defs {
            let mut named = W::default();
            named.string(1, name);
            named.message(2, schema(s));
            d.message(1, named);
        }
        w.message(9, d);
    }
    for req in doc
        .get("security")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let mut r = W::default();
        for (name, scopes) in req.as_object().into_iter().flatten() {
            let mut arr = W::default();
            arr.strings(1, Some(scopes));
            let mut named = W::default();
            named.string(1, name);
            named.message(2, arr);
            r.message(1, named);
        }
        w.message(12, r);
    }
    if let Some(Value::Object(defs)) = doc.get("securityDefinitions") {
        let mut sd = W::default();
        for (name, def) in defs {
            let mut api_key = W::default();
            api_key.string(1, str_of(def, "type"));
            api_key.string(2, str_of(def, "name"));
            api_key.string(3, str_of(def, "in"));
            api_key.string(4, str_of(def, "description"));
            let mut item = W::default();
            item.message(2, api_key);
            let mut named = W::default();
            named.string(1, name);
            named.message(2, item);
            sd.message(1, named);
        }
        w.message(13, sd);
    }
    w.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn varints_and_fields() {
        let mut w = W::default();
        w.varint(300);
        assert_eq!(w.0, [0xAC, 0x02]);
        let doc = encode_document(&json!({"swagger": "2.0"}));
        assert_eq!(doc, [0x0A, 0x03, b'2', b'.', b'0']);
        let s = schema(&json!({"type": "string", "x-kubernetes-patch-strategy": "merge"}));
        // type (field 22, wire 2) = TypeItem{value: "string"}
        assert_eq!(&s.0[..3], &[0xB2, 0x01, 0x08]);
    }
}
