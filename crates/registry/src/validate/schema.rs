//! Walking objects against schemas: the type errors Go's JSON decoding would raise for built-in
//! kinds, unknown fields (for `fieldValidation=Strict|Warn`), and custom resources' structural
//! schema validation.

use serde_json::{Map, Value};

use crate::openapi::schemas::{INT_OR_STRING, QUANTITY, REF_PREFIX, builtin};
use kumo_apimachinery::Cause;

const OBJECT_META_SCHEMA: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

/// A built-in definition by name.
fn def(name: &str) -> Option<&'static Value> {
    builtin().defs.get(name)
}

fn ref_name(schema: &Value) -> Option<&str> {
    schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix(REF_PREFIX))
}

/// Go's type name for a definition: `io.k8s.api.apps.v1.DeploymentSpec` → `v1.DeploymentSpec`.
fn go_type_of_def(name: &str) -> String {
    let mut parts = name.rsplit('.');
    let ty = parts.next().unwrap_or("");
    let pkg = parts.next().unwrap_or("");
    format!("{pkg}.{ty}")
}

/// Go's type name for a field schema.
fn go_type(schema: &Value) -> String {
    if let Some(name) = ref_name(schema) {
        return go_type_of_def(name);
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("integer") => match schema.get("format").and_then(Value::as_str) {
            Some("int64") => "int64".into(),
            _ => "int32".into(),
        },
        Some("number") => "float64".into(),
        Some("boolean") => "bool".into(),
        Some("string") => match schema.get("format").and_then(Value::as_str) {
            Some("byte") => "[]uint8".into(),
            _ => "string".into(),
        },
        Some("array") => format!("[]{}", schema.get("items").map(go_type).unwrap_or_default()),
        Some("object") => match schema.get("additionalProperties") {
            Some(ap) if ap.is_object() => format!("map[string]{}", go_type(ap)),
            _ => "map[string]interface {}".into(),
        },
        _ => "interface {}".into(),
    }
}

/// Go's name for the JSON type of a value in an `UnmarshalTypeError`.
fn json_type(v: &Value) -> String {
    match v {
        Value::String(_) => "string".into(),
        Value::Number(n) => format!("number {n}"),
        Value::Bool(_) => "bool".into(),
        Value::Array(_) => "array".into(),
        Value::Object(_) => "object".into(),
        Value::Null => "null".into(),
    }
}

/// What the decoding walk found.
#[derive(Debug, Default)]
pub(crate) struct Walk {
    /// The first decoding error, in Go's words.
    pub error: Option<String>,
    /// Unknown fields, upstream style (`spec.template.spec.containers[0].foo`).
    pub unknown: Vec<String>,
}

struct Ctx<'a> {
    out: &'a mut Walk,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Where the walk is, rendered only when an error or unknown field needs it (a pod has
/// hundreds of fields; formatting every path was most of the walk's cost).
#[derive(Clone, Copy)]
enum Path<'a> {
    Root,
    /// A fixed prefix (`metadata` for a custom resource's ObjectMeta).
    Named(&'a str),
    Field(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
    Key(&'a Path<'a>, &'a str),
}

impl Path<'_> {
    /// The indexed path: `spec.containers[0].ports[1].name`, `data[key]`.
    fn indexed(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, true);
        out
    }

    /// The index-less path Go reports in type errors: `spec.containers.ports.name`.
    fn go(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, false);
        out
    }

    fn write(&self, out: &mut String, indexed: bool) {
        match self {
            Path::Root => {}
            Path::Named(n) => out.push_str(n),
            Path::Field(parent, key) => {
                parent.write(out, indexed);
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Path::Index(parent, i) => {
                parent.write(out, indexed);
                if indexed {
                    out.push_str(&format!("[{i}]"));
                }
            }
            Path::Key(parent, k) => {
                parent.write(out, indexed);
                if indexed {
                    out.push_str(&format!("[{k}]"));
                }
            }
        }
    }
}

impl Ctx<'_> {
    fn type_error(&mut self, value: &Value, strukt: &str, path: &Path<'_>, ty: &str) {
        if self.out.error.is_some() {
            return;
        }
        let go_path = path.go();
        let value_desc = match value {
            Value::Number(_) => "number".to_string(),
            other => json_type(other),
        };
        self.out.error = Some(if strukt.is_empty() {
            format!("json: cannot unmarshal {value_desc} into Go value of type {ty}")
        } else {
            format!(
                "json: cannot unmarshal {value_desc} into Go struct field {strukt}.{go_path} of type {ty}"
            )
        });
    }

    fn custom_error(&mut self, msg: String) {
        if self.out.error.is_none() {
            self.out.error = Some(msg);
        }
    }

    /// Walks `value` against the field schema `schema`; `strukt` is the Go struct holding the
    /// field, `path` where it is (Go reports it without indexes, unknown fields with them).
    fn walk(&mut self, value: &Value, schema: &Value, strukt: &str, path: &Path<'_>) {
        if value.is_null() {
            return;
        }
        if let Some(name) = ref_name(schema) {
            match name {
                INT_OR_STRING => {
                    let ok = value.is_string()
                        || value.as_i64().is_some_and(|i| i32::try_from(i).is_ok());
                    if !ok {
                        self.custom_error(format!(
                            "json: cannot unmarshal {} into Go value of type int32",
                            json_type(value).split(' ').next().unwrap_or("")
                        ));
                    }
                    return;
                }
                QUANTITY => {
                    match value {
                        Value::String(s) if quantity_ok(s) => {}
                        Value::Number(_) => {}
                        Value::String(_) => self.custom_error("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'".into()),
                        other => self.custom_error(format!(
                            "json: cannot unmarshal {} into Go value of type string",
                            json_type(other).split(' ').next().unwrap_or("")
                        )),
                    }
                    return;
                }
                _ => {}
            }
            let Some(target) = def(name) else {
                return;
            };
            let inner = name.rsplit('.').next().unwrap_or("");
            self.walk_def(value, target, name, inner, strukt, path);
            return;
        }
        self.walk_inline(value, schema, strukt, path);
    }

    /// A definition (a Go named type): structs, and the string/object special types.
    fn walk_def(
        &mut self,
        value: &Value,
        target: &Value,
        def_name: &str,
        struct_name: &str,
        strukt: &str,
        path: &Path<'_>,
    ) {
        match target.get("type").and_then(Value::as_str) {
            Some("object") if target.get("properties").is_some() => {
                let Value::Object(m) = value else {
                    self.type_error(value, strukt, path, &go_type_of_def(def_name));
                    return;
                };
                self.walk_props(m, target, struct_name, path);
            }
            Some("string") => match value {
                Value::String(s) => {
                    if target.get("format").and_then(Value::as_str) == Some("date-time")
                        && s.parse::<jiff::Timestamp>().is_err()
                    {
                        self.custom_error(format!(
                            "parsing time \"{s}\" as \"2006-01-02T15:04:05Z07:00\": cannot parse \"{s}\" as \"2006\""
                        ));
                    }
                }
                other => self.custom_error(format!(
                    "json: cannot unmarshal {} into Go value of type string",
                    json_type(other).split(' ').next().unwrap_or("")
                )),
            },
            // RawExtension, FieldsV1, apiextensions JSON: any JSON.
            _ => {}
        }
    }

    fn walk_props(
        &mut self,
        m: &Map<String, Value>,
        target: &Value,
        struct_name: &str,
        path: &Path<'_>,
    ) {
        let props = target.get("properties").and_then(Value::as_object);
        for (k, v) in m {
            let here = Path::Field(path, k);
            match props.and_then(|p| p.get(k)) {
                Some(field_schema) => self.walk(v, field_schema, struct_name, &here),
                None => self.out.unknown.push(here.indexed()),
            }
        }
    }

    /// An inline field schema: scalars, lists, maps.
    fn walk_inline(&mut self, value: &Value, schema: &Value, strukt: &str, path: &Path<'_>) {
        let ty = || go_type(schema);
        match schema.get("type").and_then(Value::as_str) {
            Some("integer") => match value {
                Value::Number(n) => {
                    let int64 = schema.get("format").and_then(Value::as_str) == Some("int64");
                    let fits = match n.as_i64() {
                        Some(i) if !int64 => i32::try_from(i).is_ok(),
                        Some(_) => true,
                        None => false,
                    };
                    if !fits {
                        self.custom_error(format!(
                            "json: cannot unmarshal number {n} into Go struct field {strukt}.{} of type {}",
                            path.go(),
                            ty()
                        ));
                    }
                }
                other => self.type_error(other, strukt, path, &ty()),
            },
            Some("number") if !value.is_number() => {
                self.type_error(value, strukt, path, &ty());
            }
            Some("boolean") if !value.is_boolean() => {
                self.type_error(value, strukt, path, &ty());
            }
            Some("string") => match value {
                Value::String(s) => {
                    if schema.get("format").and_then(Value::as_str) == Some("byte")
                        && let Some(at) = base64_error(s)
                    {
                        self.custom_error(format!("illegal base64 data at input byte {at}"));
                    }
                }
                other => self.type_error(other, strukt, path, &ty()),
            },
            Some("array") => {
                let Value::Array(items) = value else {
                    self.type_error(value, strukt, path, &ty());
                    return;
                };
                let Some(item_schema) = schema.get("items") else {
                    return;
                };
                for (i, item) in items.iter().enumerate() {
                    self.walk(item, item_schema, strukt, &Path::Index(path, i));
                }
            }
            Some("object") => {
                let Value::Object(m) = value else {
                    self.type_error(value, strukt, path, &ty());
                    return;
                };
                if let Some(ap) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                    for (k, v) in m {
                        self.walk(v, ap, strukt, &Path::Key(path, k));
                    }
                } else if schema.get("properties").is_some() {
                    self.walk_props(m, schema, strukt, path);
                }
            }
            _ => {}
        }
    }
}

/// Walks an object of a built-in kind (definition `def_name`).
pub(crate) fn walk_builtin(def_name: &str, obj: &Value) -> Walk {
    let mut out = Walk::default();
    if let Some(target) = def(def_name) {
        let short = def_name.rsplit('.').next().unwrap_or("");
        let mut ctx = Ctx { out: &mut out };
        match obj {
            Value::Object(m) => ctx.walk_props(m, target, short, &Path::Root),
            other => ctx.custom_error(format!(
                "json: cannot unmarshal {} into Go value of type {}",
                json_type(other).split(' ').next().unwrap_or(""),
                go_type_of_def(def_name)
            )),
        }
    }
    out
}

/// Walks a custom resource's `metadata` against ObjectMeta.
pub(crate) fn walk_metadata(obj: &Value) -> Walk {
    let mut out = Walk::default();
    if let (Some(meta), Some(target)) = (obj.get("metadata"), def(OBJECT_META_SCHEMA)) {
        let mut ctx = Ctx { out: &mut out };
        match meta {
            Value::Object(m) => {
                ctx.walk_props(m, target, "ObjectMeta", &Path::Named("metadata"));
            }
            Value::Null => {}
            other => ctx.type_error(other, "", &Path::Named("metadata"), "v1.ObjectMeta"),
        }
    }
    out
}

/// Drops what Go's JSON encoding of the typed object leaves out, so objects read back as from
/// upstream: optional fields (not in their struct's `required`) that are `null`, an empty list
/// or an empty map (`omitempty`). Structs stay, empty or not (`securityContext: {}`).
pub(crate) fn omit_empty_builtin(def_name: &str, obj: &mut Value) {
    if let (Some(target), Value::Object(m)) = (def(def_name), obj) {
        omit_in_struct(target, m);
    }
}

/// [`omit_empty_builtin`] for a custom resource: its `metadata` only (the rest is stored as
/// sent, as upstream stores custom resources).
pub(crate) fn omit_empty_metadata(obj: &mut Value) {
    if let (Some(target), Some(Value::Object(m))) =
        (def(OBJECT_META_SCHEMA), obj.get_mut("metadata"))
    {
        omit_in_struct(target, m);
    }
}

fn omit_in_struct(target: &Value, m: &mut Map<String, Value>) {
    let Some(props) = target.get("properties").and_then(Value::as_object) else {
        return;
    };
    let required = |k: &str| {
        target
            .get("required")
            .and_then(Value::as_array)
            .is_some_and(|r| r.iter().any(|x| x.as_str() == Some(k)))
    };
    m.retain(|k, v| {
        let Some(field) = props.get(k) else {
            return true;
        };
        omit_in_value(v, field);
        let empty = match v {
            Value::Null => true,
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.is_empty() && is_map(field),
            _ => false,
        };
        !empty || required(k)
    });
}

fn omit_in_value(v: &mut Value, schema: &Value) {
    if let Some(name) = ref_name(schema) {
        if let (Some(target), Value::Object(m)) = (def(name), v)
            && target.get("properties").is_some()
        {
            omit_in_struct(target, m);
        }
        return;
    }
    match v {
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for item in items {
                    omit_in_value(item, item_schema);
                }
            }
        }
        Value::Object(m) => {
            if let Some(ap) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for item in m.values_mut() {
                    omit_in_value(item, ap);
                }
            } else if schema.get("properties").is_some() {
                omit_in_struct(schema, m);
            }
        }
        _ => {}
    }
}

/// Whether a field schema is a Go map (`map[string]T`), not a struct.
fn is_map(schema: &Value) -> bool {
    ref_name(schema).is_none()
        && schema.get("type").and_then(Value::as_str) == Some("object")
        && schema.get("additionalProperties").is_some()
}

/// The offset Go's base64 decoder reports for bad input, or `None` when it decodes.
pub(crate) fn base64_error(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let valid = |c: u8| c.is_ascii_alphanumeric() || c == b'+' || c == b'/';
    let mut data_end = b.len();
    while data_end > 0 && b[data_end - 1] == b'=' {
        data_end -= 1;
    }
    let padding = b.len() - data_end;
    for (i, &c) in b[..data_end].iter().enumerate() {
        if !valid(c) {
            return Some(i);
        }
    }
    if padding > 2 {
        return Some(data_end + 2);
    }
    if padding > 0 && !b.len().is_multiple_of(4) {
        return Some(b.len());
    }
    if padding == 0 && data_end % 4 == 1 {
        return Some(data_end - 1);
    }
    if padding == 0 && !data_end.is_multiple_of(4) {
        return Some(data_end);
    }
    None
}

/// `^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$` and a known suffix.
pub(crate) fn quantity_ok(s: &str) -> bool {
    let s = s.trim();
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let num_end = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (num, suffix) = body.split_at(num_end);
    if num.is_empty() || num == "." || num.matches('.').count() > 1 {
        return false;
    }
    match suffix {
        "" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" | "n" | "u" | "m" | "k" | "M" | "G" | "T"
        | "P" | "E" => true,
        s if s.starts_with(['e', 'E']) => {
            let exp = &s[1..];
            let exp = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            !exp.is_empty() && exp.bytes().all(|c| c.is_ascii_digit())
        }
        _ => false,
    }
}

// ---- custom resources: structural schema validation ------------------------------------------

fn schema_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_matches(want: &str, v: &Value) -> bool {
    match want {
        "integer" => {
            v.as_i64().is_some()
                || v.as_u64().is_some()
                || v.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        "number" => v.is_number(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => true,
    }
}

fn render(v: &Value) -> String {
    kumo_apimachinery::status::render_value(v)
}

/// Validates a custom resource against its CRD's `openAPIV3Schema`, with apiextensions'
/// messages (`spec.replicas in body must be of type integer: "string"`), and collects the
/// fields the schema does not know (pruned upstream, reported under Strict/Warn).
pub(crate) fn validate_custom(
    schema: &Value,
    obj: &Value,
    causes: &mut Vec<Cause>,
    unknown: &mut Vec<String>,
) {
    let Value::Object(m) = obj else {
        return;
    };
    let props = schema.get("properties").and_then(Value::as_object);
    let preserve = schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true);
    for (k, v) in m {
        if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        match props.and_then(|p| p.get(k)) {
            Some(s) => check(s, v, k, causes, unknown),
            None if preserve => {}
            None => unknown.push(k.clone()),
        }
    }
    required(schema, m, "", causes);
}

fn required(schema: &Value, m: &Map<String, Value>, path: &str, causes: &mut Vec<Cause>) {
    for r in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if matches!(m.get(r), None | Some(Value::Null))
            && !(path.is_empty() && matches!(r, "apiVersion" | "kind" | "metadata"))
        {
            causes.push(Cause::required(join(path, r)));
        }
    }
}

fn check(
    schema: &Value,
    v: &Value,
    path: &str,
    causes: &mut Vec<Cause>,
    unknown: &mut Vec<String>,
) {
    if v.is_null() {
        if schema.get("nullable").and_then(Value::as_bool) != Some(true)
            && schema.get("x-kubernetes-preserve-unknown-fields").is_none()
            && schema.get("type").is_some()
        {
            // Upstream prunes nulls of non-nullable fields; nothing to validate.
        }
        return;
    }
    let int_or_string = schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true);
    if int_or_string {
        if !(v.is_string() || type_matches("integer", v)) {
            causes.push(Cause::new(
                "FieldValueTypeInvalid",
                path,
                format!(
                    "Invalid value: \"{}\": {path} in body must be of type integer,string: \"{}\"",
                    schema_type_name(v),
                    schema_type_name(v)
                ),
            ));
        }
        return;
    }
    if let Some(want) = schema.get("type").and_then(Value::as_str)
        && !type_matches(want, v)
    {
        causes.push(Cause::new(
            "FieldValueTypeInvalid",
            path,
            format!(
                "Invalid value: \"{}\": {path} in body must be of type {want}: \"{}\"",
                schema_type_name(v),
                schema_type_name(v)
            ),
        ));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(v)
    {
        let list: Vec<String> = allowed.iter().map(render).collect();
        causes.push(Cause::new(
            "FieldValueNotSupported",
            path,
            format!(
                "Unsupported value: {}: supported values: {}",
                render(v),
                list.join(", ")
            ),
        ));
    }
    if let Some(n) = v.as_f64() {
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
            let exclusive = schema.get("exclusiveMaximum").and_then(Value::as_bool) == Some(true);
            if n > max || (exclusive && n == max) {
                let word = if exclusive {
                    "less than"
                } else {
                    "less than or equal to"
                };
                causes.push(Cause::invalid(
                    path,
                    v,
                    &format!(
                        "{path} in body should be {word} {}",
                        render(&schema["maximum"])
                    ),
                ));
            }
        }
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
            let exclusive = schema.get("exclusiveMinimum").and_then(Value::as_bool) == Some(true);
            if n < min || (exclusive && n == min) {
                let word = if exclusive {
                    "greater than"
                } else {
                    "greater than or equal to"
                };
                causes.push(Cause::invalid(
                    path,
                    v,
                    &format!(
                        "{path} in body should be {word} {}",
                        render(&schema["minimum"])
                    ),
                ));
            }
        }
    }
    if let Some(s) = v.as_str() {
        let len = s.chars().count() as u64;
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
            && len > max
        {
            causes.push(Cause::new(
                "FieldValueTooLong",
                path,
                format!("Too long: may not be more than {max} bytes"),
            ));
        }
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
            && len < min
        {
            causes.push(Cause::invalid(
                path,
                v,
                &format!("{path} in body should be at least {min} chars long"),
            ));
        }
    }
    match v {
        Value::Array(items) => {
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && items.len() as u64 > max
            {
                causes.push(Cause::new(
                    "FieldValueTooMany",
                    path,
                    format!("Too many: {}: must have at most {max} items", items.len()),
                ));
            }
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                && (items.len() as u64) < min
            {
                causes.push(Cause::invalid(
                    path,
                    v,
                    &format!("{path} in body should have at least {min} items"),
                ));
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check(item_schema, item, &format!("{path}[{i}]"), causes, unknown);
                }
            }
        }
        Value::Object(m) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let preserve = schema
                .get("x-kubernetes-preserve-unknown-fields")
                .and_then(Value::as_bool)
                == Some(true);
            let additional = schema.get("additionalProperties");
            for (k, child) in m {
                let child_path = join(path, k);
                if let Some(s) = props.and_then(|p| p.get(k)) {
                    check(s, child, &child_path, causes, unknown);
                } else if let Some(ap) = additional.filter(|a| a.is_object()) {
                    check(ap, child, &child_path, causes, unknown);
                } else if !preserve && additional.and_then(Value::as_bool) != Some(true) {
                    unknown.push(child_path);
                }
            }
            required(schema, m, path, causes);
            if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64)
                && m.len() as u64 > max
            {
                causes.push(Cause::new(
                    "FieldValueTooMany",
                    path,
                    format!("Too many: {}: must have at most {max} items", m.len()),
                ));
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quantities_and_base64() {
        for ok in ["1", "100m", "1.5Gi", "1e3", "+2Ki", "0.5", "5E-3"] {
            assert!(quantity_ok(ok), "{ok}");
        }
        for bad in ["", "abc", "1Qi", "1..2", "Gi", "1e"] {
            assert!(!quantity_ok(bad), "{bad}");
        }
        assert_eq!(base64_error("aGVsbG8="), None);
        assert_eq!(base64_error(""), None);
        assert_eq!(base64_error("a!bc"), Some(1));
        assert_eq!(base64_error("abc"), Some(3));
    }

    #[test]
    fn go_type_names() {
        assert_eq!(
            go_type_of_def("io.k8s.api.apps.v1.DeploymentSpec"),
            "v1.DeploymentSpec"
        );
        assert_eq!(
            go_type(
                &json!({"type": "array", "items": {"$ref": "#/components/schemas/io.k8s.api.core.v1.Container"}})
            ),
            "[]v1.Container"
        );
        assert_eq!(
            go_type(&json!({"type": "object", "additionalProperties": {"type": "string"}})),
            "map[string]string"
        );
    }
}
