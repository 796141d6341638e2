//! Name, label and annotation validation with upstream's error strings
//! (`k8s.io/apimachinery/pkg/util/validation`, `pkg/api/validation/objectmeta.go`, Kubernetes
//! 1.33 wording), plus `metadata` validation on create and update.
//!
//! The `is_*` functions return upstream's messages (empty when valid); the `validate_*`
//! functions return field [`Cause`]s ready for an `Invalid` (422) status.

use serde_json::{Map, Value, json};

use crate::status::Cause;

/// `must be no more than N characters`.
pub fn max_len_error(length: usize) -> String {
    format!("must be no more than {length} characters")
}

/// upstream's `RegexError`: the message, examples and the regex used.
pub fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    if examples.is_empty() {
        return format!("{msg} (regex used for validation is '{fmt}')");
    }
    let mut out = format!("{msg} (e.g. ");
    for (i, e) in examples.iter().enumerate() {
        if i > 0 {
            out.push_str(" or ");
        }
        out.push_str(&format!("'{e}', "));
    }
    out.push_str(&format!("regex used for validation is '{fmt}')"));
    out
}

/// `must be non-empty`.
pub fn empty_error() -> String {
    "must be non-empty".into()
}

/// `must be between LO and HI, inclusive`.
pub fn inclusive_range_error(lo: i64, hi: i64) -> String {
    format!("must be between {lo} and {hi}, inclusive")
}

fn is_lower_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`
fn matches_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && is_lower_alnum(b[0])
        && is_lower_alnum(b[b.len() - 1])
        && b.iter().all(|&c| is_lower_alnum(c) || c == b'-')
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*`
fn matches_dns1123_subdomain(s: &str) -> bool {
    s.split('.').all(matches_dns1123_label)
}

/// `[a-z]([-a-z0-9]*[a-z0-9])?`
fn matches_dns1035_label(s: &str) -> bool {
    matches_dns1123_label(s) && s.as_bytes()[0].is_ascii_lowercase()
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn matches_qualified_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_LABEL_ERR: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1123_SUBDOMAIN_ERR: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const DNS1035_LABEL_ERR: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_ERR: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_ERR: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";

/// Max length of a DNS-1123 label (and of DNS-1035 labels, label values and name parts).
pub const DNS1123_LABEL_MAX_LENGTH: usize = 63;
/// Max length of a DNS-1123 subdomain.
pub const DNS1123_SUBDOMAIN_MAX_LENGTH: usize = 253;
/// Max total size of an object's annotations (keys and values).
pub const TOTAL_ANNOTATION_SIZE_LIMIT_B: usize = 256 * 1024;

/// A DNS-1123 label (namespace names): at most 63 characters of `[a-z0-9-]`.
pub fn is_dns1123_label(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_LABEL_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_LABEL_MAX_LENGTH));
    }
    if !matches_dns1123_label(value) {
        if matches_dns1123_subdomain(value) {
            errs.push("must not contain dots".into());
        } else {
            errs.push(regex_error(
                DNS1123_LABEL_ERR,
                DNS1123_LABEL_FMT,
                &["my-name", "123-abc"],
            ));
        }
    }
    errs
}

/// A DNS-1123 subdomain (most object names): at most 253 characters of labels joined by dots.
pub fn is_dns1123_subdomain(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX_LENGTH));
    }
    if !matches_dns1123_subdomain(value) {
        errs.push(regex_error(
            DNS1123_SUBDOMAIN_ERR,
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errs
}

/// A DNS-1035 label (service names): like a DNS-1123 label but starting with a letter.
pub fn is_dns1035_label(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_LABEL_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_LABEL_MAX_LENGTH));
    }
    if !matches_dns1035_label(value) {
        errs.push(regex_error(
            DNS1035_LABEL_ERR,
            DNS1035_LABEL_FMT,
            &["my-name", "abc-123"],
        ));
    }
    errs
}

/// A qualified name (label and annotation keys): `[prefix/]name` with a DNS subdomain prefix.
pub fn is_qualified_name(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push(format!("prefix part {}", empty_error()));
            } else {
                errs.extend(
                    is_dns1123_subdomain(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            *name
        }
        _ => {
            errs.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(QUALIFIED_NAME_ERR, QUALIFIED_NAME_FMT, &["MyName", "my.name", "123-abc"])
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push(format!("name part {}", empty_error()));
    } else if name.len() > DNS1123_LABEL_MAX_LENGTH {
        errs.push(format!(
            "name part {}",
            max_len_error(DNS1123_LABEL_MAX_LENGTH)
        ));
    }
    if !matches_qualified_name(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_ERR,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errs
}

/// A label value: empty, or a qualified name part of at most 63 characters.
pub fn is_valid_label_value(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_LABEL_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_LABEL_MAX_LENGTH));
    }
    if !value.is_empty() && !matches_qualified_name(value) {
        errs.push(regex_error(
            LABEL_VALUE_ERR,
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

fn ch_dir_prefix(value: &str) -> Vec<String> {
    if value == "." {
        vec!["must not be '.'".into()]
    } else if value == ".." {
        vec!["must not be '..'".into()]
    } else if value.starts_with("..") {
        vec!["must not start with '..'".into()]
    } else {
        Vec::new()
    }
}

/// A ConfigMap or Secret data key.
pub fn is_config_map_key(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX_LENGTH));
    }
    let ok = !value.is_empty()
        && value
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_'));
    if !ok {
        errs.push(regex_error(
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
            "[-._a-zA-Z0-9]+",
            &["key.name", "KEY_NAME", "key-name"],
        ));
    }
    errs.extend(ch_dir_prefix(value));
    errs
}

/// An environment variable name (upstream's strict rule).
pub fn is_env_var_name(value: &str) -> Vec<String> {
    let b = value.as_bytes();
    let ok = !b.is_empty()
        && !b[0].is_ascii_digit()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_'));
    let mut errs = Vec::new();
    if !ok {
        errs.push(regex_error(
            "a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit",
            "[-._a-zA-Z][-._a-zA-Z0-9]*",
            &["my.env-name", "MY_ENV.NAME", "MyEnvName1"],
        ));
    }
    errs.extend(ch_dir_prefix(value));
    errs
}

/// A relaxed environment variable name (upstream's default since 1.32): printable ASCII but `=`.
pub fn is_relaxed_env_var_name(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.is_empty() {
        errs.push(format!("environment variable name {}", empty_error()));
    }
    if value
        .chars()
        .any(|r| !r.is_ascii() || r.is_ascii_control() || r == '=')
    {
        errs.push("a valid environment variable name must consist only of printable ASCII characters other than '='".into());
    }
    errs
}

/// A port number 1..=65535.
pub fn is_valid_port_num(port: i64) -> Vec<String> {
    if (1..=65535).contains(&port) {
        Vec::new()
    } else {
        vec![inclusive_range_error(1, 65535)]
    }
}

/// An IANA service port name (`http`, `metrics-1`).
pub fn is_valid_port_name(port: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if port.len() > 15 {
        errs.push(max_len_error(15));
    }
    if port.is_empty()
        || !port
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
    {
        errs.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".into());
    }
    if !port.bytes().any(|c| c.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)".into());
    }
    if port.contains("--") {
        errs.push("must not contain consecutive hyphens".into());
    }
    if port.starts_with('-') || port.ends_with('-') {
        errs.push("must not begin or end with a hyphen".into());
    }
    errs
}

/// A C identifier (`[A-Za-z_][A-Za-z0-9_]*`).
pub fn is_c_identifier(value: &str) -> Vec<String> {
    let b = value.as_bytes();
    let ok = !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'_');
    if ok {
        Vec::new()
    } else {
        vec![regex_error(
            "a valid C identifier must start with alphabetic character or '_', followed by a string of alphanumeric characters or '_'",
            "[A-Za-z_][A-Za-z0-9_]*",
            &["my_name", "MY_NAME", "MyName"],
        )]
    }
}

/// A percent string (`25%`).
pub fn is_valid_percent(value: &str) -> Vec<String> {
    let ok = value
        .strip_suffix('%')
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()));
    if ok {
        Vec::new()
    } else {
        vec![regex_error(
            "a valid percent string must be a numeric string followed by an ending '%'",
            "[0-9]+%",
            &["1%", "93%"],
        )]
    }
}

/// A URL path segment name (RBAC object names): not `.`/`..`, no `/` or `%`.
pub fn is_valid_path_segment_name(name: &str) -> Vec<String> {
    for illegal in [".", ".."] {
        if name == illegal {
            return vec![format!("may not be '{illegal}'")];
        }
    }
    let mut errs = Vec::new();
    for illegal in ["/", "%"] {
        if name.contains(illegal) {
            errs.push(format!("may not contain '{illegal}'"));
        }
    }
    errs
}

/// Validates an object name (or, with `prefix`, a `generateName` prefix).
pub type NameFn = fn(&str, bool) -> Vec<String>;

/// A generateName prefix may end in `-`: upstream masks that before checking.
fn mask_trailing_dash(name: &str) -> String {
    if name.len() > 1 && name.ends_with('-') {
        format!("{}a", &name[..name.len() - 1])
    } else {
        name.to_string()
    }
}

/// `NameIsDNSSubdomain`.
pub fn name_is_dns_subdomain(name: &str, prefix: bool) -> Vec<String> {
    if prefix {
        is_dns1123_subdomain(&mask_trailing_dash(name))
    } else {
        is_dns1123_subdomain(name)
    }
}

/// `NameIsDNSLabel` (namespaces).
pub fn name_is_dns_label(name: &str, prefix: bool) -> Vec<String> {
    if prefix {
        is_dns1123_label(&mask_trailing_dash(name))
    } else {
        is_dns1123_label(name)
    }
}

/// `NameIsDNS1035Label` (services).
pub fn name_is_dns1035_label(name: &str, prefix: bool) -> Vec<String> {
    if prefix {
        is_dns1035_label(&mask_trailing_dash(name))
    } else {
        is_dns1035_label(name)
    }
}

/// `ValidatePathSegmentName` (RBAC objects).
pub fn validate_path_segment_name(name: &str, prefix: bool) -> Vec<String> {
    if prefix {
        // A prefix gets a suffix appended: only the content rules apply.
        ["/", "%"]
            .iter()
            .filter(|illegal| name.contains(**illegal))
            .map(|illegal| format!("may not contain '{illegal}'"))
            .collect()
    } else {
        is_valid_path_segment_name(name)
    }
}

/// `Invalid value` causes for each message.
fn invalid_each(field: &str, value: &Value, msgs: Vec<String>) -> Vec<Cause> {
    msgs.into_iter()
        .map(|m| Cause::invalid(field, value, &m))
        .collect()
}

fn str_at<'a>(m: &'a Value, key: &str) -> &'a str {
    m.get(key).and_then(Value::as_str).unwrap_or("")
}

fn sorted_entries(v: Option<&Value>) -> Vec<(&String, &Value)> {
    let mut entries: Vec<(&String, &Value)> = v
        .and_then(Value::as_object)
        .map(|m| m.iter().collect())
        .unwrap_or_default();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries
}

/// `ValidateLabels` on `path` (`metadata.labels`, `spec.selector.matchLabels`, …).
pub fn validate_labels(labels: Option<&Value>, path: &str) -> Vec<Cause> {
    let mut causes = Vec::new();
    if let Some(v) = labels
        && !v.is_null()
        && !v.is_object()
    {
        return vec![Cause::invalid(path, v, "must be a map of strings")];
    }
    for (k, v) in sorted_entries(labels) {
        causes.extend(invalid_each(path, &json!(k), is_qualified_name(k)));
        match v.as_str() {
            Some(s) => causes.extend(invalid_each(path, v, is_valid_label_value(s))),
            None => causes.push(Cause::invalid(path, v, "must be a string")),
        }
    }
    causes
}

/// `ValidateAnnotations`: keys are qualified names (case-insensitive), total size ≤ 256 KiB.
pub fn validate_annotations(annotations: Option<&Value>, path: &str) -> Vec<Cause> {
    let mut causes = Vec::new();
    let mut total = 0usize;
    for (k, v) in sorted_entries(annotations) {
        causes.extend(invalid_each(
            path,
            &json!(k),
            is_qualified_name(&k.to_lowercase()),
        ));
        total += k.len() + v.as_str().map(str::len).unwrap_or(0);
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT_B {
        causes.push(Cause::new(
            "FieldValueTooLong",
            path,
            format!("Too long: may not be more than {TOTAL_ANNOTATION_SIZE_LIMIT_B} bytes"),
        ));
    }
    causes
}

const STANDARD_FINALIZERS: &[&str] = &["kubernetes", "orphan", "foregroundDeletion"];

/// `ValidateFinalizers`.
pub fn validate_finalizers(finalizers: Option<&Value>, path: &str) -> Vec<Cause> {
    let mut causes = Vec::new();
    let list: Vec<&str> = finalizers
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for f in &list {
        causes.extend(invalid_each(path, &json!(f), is_qualified_name(f)));
        if !f.contains('/') && !STANDARD_FINALIZERS.contains(f) {
            causes.push(Cause::invalid(
                path,
                &json!(f),
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
    }
    if list.contains(&"orphan") && list.contains(&"foregroundDeletion") {
        causes.push(Cause::invalid(
            path,
            &json!(list),
            "finalizer orphan and foregroundDeletion cannot be both set",
        ));
    }
    causes
}

/// `ValidateOwnerReferences`.
pub fn validate_owner_references(refs: Option<&Value>, path: &str) -> Vec<Cause> {
    let mut causes = Vec::new();
    let mut controller: Option<String> = None;
    for r in refs.and_then(Value::as_array).into_iter().flatten() {
        let api_version = str_at(r, "apiVersion");
        let version = api_version.rsplit('/').next().unwrap_or("");
        if version.is_empty() {
            causes.push(Cause::invalid(
                format!("{path}.apiVersion"),
                &json!(api_version),
                "version must not be empty",
            ));
        }
        if str_at(r, "kind").is_empty() {
            causes.push(Cause::invalid(
                format!("{path}.kind"),
                &json!(str_at(r, "kind")),
                "kind must not be empty",
            ));
        }
        if str_at(r, "name").is_empty() {
            causes.push(Cause::invalid(
                format!("{path}.name"),
                &json!(str_at(r, "name")),
                "name must not be empty",
            ));
        }
        if str_at(r, "uid").is_empty() {
            causes.push(Cause::invalid(
                format!("{path}.uid"),
                &json!(str_at(r, "uid")),
                "uid must not be empty",
            ));
        }
        if r.get("controller").and_then(Value::as_bool) == Some(true) {
            let name = str_at(r, "name").to_string();
            if let Some(first) = &controller {
                causes.push(Cause::invalid(
                    path,
                    refs.unwrap_or(&Value::Null),
                    &format!(
                        "Only one reference can have Controller set to true. Found \"true\" in references for {first} and {name}"
                    ),
                ));
            } else {
                controller = Some(name);
            }
        }
    }
    causes
}

/// `ValidateObjectMeta` for a create: name (via `name_fn`) or generateName, namespace presence,
/// generation, labels, annotations, owner references and finalizers. Fields are reported as
/// `metadata.<field>`.
pub fn validate_object_meta(meta: &Value, namespaced: bool, name_fn: NameFn) -> Vec<Cause> {
    let empty = Value::Object(Map::new());
    let meta = if meta.is_object() { meta } else { &empty };
    let mut causes = Vec::new();
    let generate_name = str_at(meta, "generateName");
    if !generate_name.is_empty() {
        causes.extend(invalid_each(
            "metadata.generateName",
            &json!(generate_name),
            name_fn(generate_name, true),
        ));
    }
    let name = str_at(meta, "name");
    if name.is_empty() {
        causes.push(Cause::new(
            "FieldValueRequired",
            "metadata.name",
            "Required value: name or generateName is required",
        ));
    } else {
        causes.extend(invalid_each(
            "metadata.name",
            &json!(name),
            name_fn(name, false),
        ));
    }
    let namespace = str_at(meta, "namespace");
    if namespaced {
        if namespace.is_empty() {
            causes.push(Cause::required("metadata.namespace"));
        } else {
            causes.extend(invalid_each(
                "metadata.namespace",
                &json!(namespace),
                name_is_dns_label(namespace, false),
            ));
        }
    } else if !namespace.is_empty() {
        causes.push(Cause::forbidden(
            "metadata.namespace",
            "not allowed on this type",
        ));
    }
    if let Some(g) = meta.get("generation").and_then(Value::as_i64)
        && g < 0
    {
        causes.push(Cause::invalid(
            "metadata.generation",
            &json!(g),
            "must be greater than or equal to 0",
        ));
    }
    causes.extend(validate_labels(meta.get("labels"), "metadata.labels"));
    causes.extend(validate_annotations(
        meta.get("annotations"),
        "metadata.annotations",
    ));
    causes.extend(validate_owner_references(
        meta.get("ownerReferences"),
        "metadata.ownerReferences",
    ));
    causes.extend(validate_finalizers(
        meta.get("finalizers"),
        "metadata.finalizers",
    ));
    causes
}

/// `field is immutable` when `new != old`.
pub fn validate_immutable(new: &Value, old: &Value, field: &str) -> Vec<Cause> {
    if new == old {
        Vec::new()
    } else {
        vec![Cause::invalid(field, new, "field is immutable")]
    }
}

/// `ValidateObjectMetaUpdate`: identity fields immutable, generation never decremented, no new
/// finalizers once deleting, plus the label/annotation/owner checks of a create. (The
/// resourceVersion precondition is the handler's: it fills it for unconditional updates.)
pub fn validate_object_meta_update(new_meta: &Value, old_meta: &Value) -> Vec<Cause> {
    let get = |m: &'_ Value, k: &str| -> Value { m.get(k).cloned().unwrap_or(Value::Null) };
    let mut causes = Vec::new();
    let deleting = old_meta
        .get("deletionTimestamp")
        .is_some_and(|v| !v.is_null());
    if deleting {
        let old: Vec<&Value> = old_meta
            .get("finalizers")
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        let added: Vec<&Value> = new_meta
            .get("finalizers")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter(|f| !old.contains(f)).collect())
            .unwrap_or_default();
        if !added.is_empty() {
            causes.push(Cause::forbidden(
                "metadata.finalizers",
                &format!(
                    "no new finalizers can be added if the object is being deleted, found new finalizers {}",
                    json!(added)
                ),
            ));
        }
    }
    let new_gen = new_meta
        .get("generation")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let old_gen = old_meta
        .get("generation")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if new_gen < old_gen {
        causes.push(Cause::invalid(
            "metadata.generation",
            &json!(new_gen),
            "must not be decremented",
        ));
    }
    for field in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ] {
        let n = get(new_meta, field);
        let o = get(old_meta, field);
        // An absent (or empty) value is "not sent": the handler carries the old one over, as
        // upstream's BeforeUpdate does for uid and creationTimestamp.
        let sent = !(n.is_null() || n.as_str() == Some(""));
        if sent && n != o {
            causes.push(Cause::invalid(
                format!("metadata.{field}"),
                &n,
                "field is immutable",
            ));
        }
    }
    causes.extend(validate_labels(new_meta.get("labels"), "metadata.labels"));
    causes.extend(validate_annotations(
        new_meta.get("annotations"),
        "metadata.annotations",
    ));
    causes.extend(validate_owner_references(
        new_meta.get("ownerReferences"),
        "metadata.ownerReferences",
    ));
    causes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subdomain_message_is_upstreams() {
        assert!(is_dns1123_subdomain("example.com").is_empty());
        assert!(is_dns1123_subdomain("a").is_empty());
        assert_eq!(
            is_dns1123_subdomain("Web_1"),
            vec!["a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".to_string()]
        );
        for bad in ["", "-a", "a-", "a..b", ".a", "a.", "a_b"] {
            assert_eq!(is_dns1123_subdomain(bad).len(), 1, "{bad}");
        }
        assert_eq!(
            is_dns1123_subdomain(&"a".repeat(254)),
            vec!["must be no more than 253 characters".to_string()]
        );
    }

    #[test]
    fn label_and_1035_messages() {
        assert!(is_dns1123_label("my-name").is_empty());
        assert!(is_dns1123_label("123-abc").is_empty());
        assert_eq!(
            is_dns1123_label("a.b"),
            vec!["must not contain dots".to_string()]
        );
        assert_eq!(
            is_dns1123_label("A"),
            vec!["a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')".to_string()]
        );
        assert_eq!(
            is_dns1123_label(&"a".repeat(64)),
            vec!["must be no more than 63 characters".to_string()]
        );
        assert!(is_dns1035_label("abc-123").is_empty());
        assert_eq!(
            is_dns1035_label("1abc"),
            vec!["a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')".to_string()]
        );
    }

    #[test]
    fn qualified_names_and_label_values() {
        for ok in [
            "MyName",
            "my.name",
            "123-abc",
            "example.com/MyName",
            "a/b",
            "kubernetes.io/metadata.name",
        ] {
            assert!(is_qualified_name(ok).is_empty(), "{ok}");
        }
        assert_eq!(
            is_qualified_name("-bad"),
            vec!["name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')".to_string()]
        );
        assert_eq!(
            is_qualified_name("/a"),
            vec!["prefix part must be non-empty".to_string()]
        );
        assert_eq!(is_qualified_name("a/"), vec![
            "name part must be non-empty".to_string(),
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')".to_string(),
        ]);
        assert!(is_qualified_name("a/b/c")[0].starts_with("a qualified name must consist of"));
        assert!(
            is_qualified_name("Bad_Prefix/a")[0]
                .starts_with("prefix part a lowercase RFC 1123 subdomain")
        );
        assert!(is_valid_label_value("").is_empty());
        assert!(is_valid_label_value("my_value").is_empty());
        assert_eq!(
            is_valid_label_value("bad value"),
            vec!["a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')".to_string()]
        );
    }

    #[test]
    fn other_formats() {
        assert!(is_config_map_key("key.name").is_empty());
        assert_eq!(
            is_config_map_key(".."),
            vec!["must not be '..'".to_string()]
        );
        assert_eq!(is_config_map_key("a/b").len(), 1);
        assert!(is_env_var_name("MY_ENV.NAME").is_empty());
        assert_eq!(is_env_var_name("1a").len(), 1);
        assert!(is_relaxed_env_var_name("1a b").is_empty());
        assert_eq!(is_relaxed_env_var_name("a=b").len(), 1);
        assert_eq!(
            is_valid_port_num(0),
            vec!["must be between 1 and 65535, inclusive".to_string()]
        );
        assert!(is_valid_port_name("http").is_empty());
        assert_eq!(is_valid_port_name("123").len(), 1);
        assert!(is_valid_percent("25%").is_empty());
        assert_eq!(
            is_valid_path_segment_name(".."),
            vec!["may not be '..'".to_string()]
        );
        assert_eq!(
            is_valid_path_segment_name("a/b%"),
            vec![
                "may not contain '/'".to_string(),
                "may not contain '%'".to_string()
            ]
        );
        assert!(name_is_dns_subdomain("web-", true).is_empty());
        assert_eq!(name_is_dns_subdomain("web-", false).len(), 1);
    }

    #[test]
    fn object_meta_create() {
        let causes = validate_object_meta(
            &json!({"name": "Bad_Name", "labels": {"app": "bad value"}}),
            true,
            name_is_dns_subdomain,
        );
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            ["metadata.name", "metadata.namespace", "metadata.labels"]
        );
        assert!(
            causes[0]
                .message
                .starts_with("Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain")
        );
        assert_eq!(causes[1].message, "Required value");
        assert_eq!(causes[2].reason, "FieldValueInvalid");
        let missing = validate_object_meta(&json!({}), false, name_is_dns_subdomain);
        assert_eq!(
            missing[0].message,
            "Required value: name or generateName is required"
        );
        let ns = validate_object_meta(
            &json!({"name": "n", "namespace": "x"}),
            false,
            name_is_dns_label,
        );
        assert_eq!(ns[0].message, "Forbidden: not allowed on this type");
        assert!(validate_object_meta(&json!({"name": "ok", "namespace": "default", "generateName": "ok-", "annotations": {"Example.com/Key": "v"}, "finalizers": ["kubernetes", "example.com/f"]}), true, name_is_dns_subdomain).is_empty());
        let fin = validate_object_meta(
            &json!({"name": "a", "finalizers": ["custom"]}),
            false,
            name_is_dns_subdomain,
        );
        assert_eq!(
            fin[0].message,
            "Invalid value: \"custom\": name is neither a standard finalizer name nor is it fully qualified"
        );
        let owners = validate_object_meta(
            &json!({"name": "a", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "r1", "uid": "u1", "controller": true},
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "r2", "uid": "u2", "controller": true},
            {"apiVersion": "", "kind": "", "name": "", "uid": ""}]}),
            false,
            name_is_dns_subdomain,
        );
        assert_eq!(owners.len(), 5);
        assert!(owners[0].message.contains("Only one reference can have Controller set to true. Found \"true\" in references for r1 and r2"));
        let big = "x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT_B);
        let too_long = validate_object_meta(
            &json!({"name": "a", "annotations": {"k": big}}),
            false,
            name_is_dns_subdomain,
        );
        assert_eq!(too_long[0].reason, "FieldValueTooLong");
        // Never panics on junk.
        let _ = validate_object_meta(&json!(5), true, name_is_dns_subdomain);
        let _ = validate_object_meta(
            &json!({"name": 5, "labels": [1], "annotations": "x", "ownerReferences": {}, "finalizers": [1]}),
            true,
            name_is_dns_subdomain,
        );
    }

    #[test]
    fn object_meta_update() {
        let old = json!({"name": "a", "namespace": "ns", "uid": "u", "generation": 3, "creationTimestamp": "2024-01-01T00:00:00Z"});
        assert!(validate_object_meta_update(&old, &old).is_empty());
        let mut new = old.clone();
        new["name"] = json!("b");
        new["generation"] = json!(2);
        new["uid"] = json!("other");
        let causes = validate_object_meta_update(&new, &old);
        let msgs: Vec<String> = causes.iter().map(Cause::display).collect();
        assert_eq!(
            msgs,
            [
                "metadata.generation: Invalid value: 2: must not be decremented",
                "metadata.name: Invalid value: \"b\": field is immutable",
                "metadata.uid: Invalid value: \"other\": field is immutable",
            ]
        );
        let deleting = json!({"name": "a", "deletionTimestamp": "2024-01-01T00:00:00Z", "finalizers": ["a.io/x"]});
        let mut added = deleting.clone();
        added["finalizers"] = json!(["a.io/x", "a.io/y"]);
        let c = validate_object_meta_update(&added, &deleting);
        assert_eq!(c[0].reason, "FieldValueForbidden");
    }
}
