//! Component schemas: the k8s-openapi schemars impls of every known kind, generated once,
//! with what upstream's published spec adds on top (patch/list extensions, `required` lists,
//! `x-kubernetes-group-version-kind`), plus schemas for custom resources.
//!
//! Schemas are kept in one neutral form: `$ref`s point at `#/components/schemas/<name>` and may
//! carry sibling keys (a description); [`to_v3`] and [`to_v2`] turn that into each format's
//! upstream shape.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use serde_json::{Map, Value, json};

use crate::kinds::{KNOWN_KINDS, KindType, KindVisitor, with_kind};

/// Upstream's extensions and `required` lists (Kubernetes 1.33 OpenAPI), see
/// `tools/extract_openapi_ext.py` (from upstream's published definitions).
const UPSTREAM: &str = include_str!("upstream_1_33.json");

pub(crate) const REF_PREFIX: &str = "#/components/schemas/";
pub(crate) const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
pub(crate) const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";
pub(crate) const INT_OR_STRING: &str = "io.k8s.apimachinery.pkg.util.intstr.IntOrString";
pub(crate) const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";

const API_VERSION_DOC: &str = "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources";
const KIND_DOC: &str = "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds";
const METADATA_DOC: &str = "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
const LIST_METADATA_DOC: &str = "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

/// The built-in component schemas and which definition each known kind has.
pub(crate) struct Builtin {
    /// Definition name → schema (neutral form).
    pub defs: Map<String, Value>,
    /// `(group, version, kind)` → definition name.
    pub names: BTreeMap<(String, String, String), String>,
}

struct Collect<'a> {
    generator: &'a mut schemars::SchemaGenerator,
}

impl KindVisitor for Collect<'_> {
    type Out = (String, &'static str, &'static str, &'static str);
    fn visit<T: KindType>(self) -> Self::Out {
        self.generator.subschema_for::<T>();
        (T::schema_name().into_owned(), T::GROUP, T::VERSION, T::KIND)
    }
}

/// The built-in schemas, generated on first use.
pub(crate) fn builtin() -> &'static Builtin {
    static BUILTIN: OnceLock<Builtin> = OnceLock::new();
    BUILTIN.get_or_init(generate)
}

fn generate() -> Builtin {
    let mut generator = schemars::generate::SchemaSettings::draft2020_12()
        .with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
        })
        .into_generator();
    let mut names = BTreeMap::new();
    let mut gvks: Vec<(String, Value)> = Vec::new();
    for (g, v, k) in KNOWN_KINDS {
        if let Some((name, group, version, kind)) = with_kind(
            g,
            v,
            k,
            Collect {
                generator: &mut generator,
            },
        ) {
            names.insert(
                (group.to_string(), version.to_string(), kind.to_string()),
                name.clone(),
            );
            gvks.push((
                name,
                json!({"group": group, "kind": kind, "version": version}),
            ));
        }
    }
    generator.subschema_for::<meta::APIResourceList>();
    generator.subschema_for::<meta::APIGroup>();
    generator.subschema_for::<meta::APIGroupList>();
    generator.subschema_for::<meta::APIVersions>();
    generator.subschema_for::<meta::DeleteOptions>();
    generator.subschema_for::<meta::Status>();
    generator.subschema_for::<meta::ListMeta>();
    generator
        .subschema_for::<meta::WatchEvent<k8s_openapi::apimachinery::pkg::runtime::RawExtension>>();
    let mut defs = generator.take_definitions(false);
    defs.insert(
        "io.k8s.apimachinery.pkg.apis.meta.v1.Patch".into(),
        json!({
            "description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body.",
            "type": "object",
        }),
    );
    apply_upstream(&mut defs);
    for (name, gvk) in gvks {
        if let Some(Value::Object(schema)) = defs.get_mut(&name) {
            // Upstream lists no `required` on top-level kinds (k8s-openapi requires metadata).
            if let Some(Value::Array(req)) = schema.get_mut("required") {
                req.retain(|r| r != "metadata");
                if req.is_empty() {
                    schema.remove("required");
                }
            }
            schema.insert("x-kubernetes-group-version-kind".into(), json!([gvk]));
        }
    }
    Builtin { defs, names }
}

/// Applies upstream's extensions and `required` lists to definitions upstream publishes.
fn apply_upstream(defs: &mut Map<String, Value>) {
    // The embedded table is checked by a unit test; were it broken, only extensions are lost.
    let Ok(Value::Object(up)) = serde_json::from_str::<Value>(UPSTREAM) else {
        return;
    };
    for (name, schema) in defs.iter_mut() {
        let (Some(entry), Value::Object(schema)) = (up.get(name), schema) else {
            continue;
        };
        match entry.get("r") {
            Some(req) => {
                schema.insert("required".into(), req.clone());
            }
            None => {
                schema.remove("required");
            }
        }
        if let Some(Value::Object(x)) = entry.get("x") {
            for (k, v) in x {
                schema.insert(k.clone(), v.clone());
            }
        }
        let (Some(Value::Object(props)), Some(Value::Object(schema_props))) =
            (entry.get("p"), schema.get_mut("properties"))
        else {
            continue;
        };
        for (prop, ext) in props {
            let (Value::Object(ext), Some(Value::Object(target))) =
                (ext, schema_props.get_mut(prop))
            else {
                continue;
            };
            for (k, v) in ext {
                if k == "items" {
                    if let (Value::Object(item_ext), Some(Value::Object(items))) =
                        (v, target.get_mut("items"))
                    {
                        for (ik, iv) in item_ext {
                            items.insert(ik.clone(), iv.clone());
                        }
                    }
                } else {
                    target.insert(k.clone(), v.clone());
                }
            }
        }
    }
}

/// The definition name upstream gives a custom resource kind: the group reversed
/// (`stable.example.com` → `com.example.stable`), then version and kind.
pub(crate) fn custom_definition_name(group: &str, version: &str, kind: &str) -> String {
    let reversed: Vec<&str> = group.split('.').rev().collect();
    format!("{}.{version}.{kind}", reversed.join("."))
}

/// The component schema of a custom resource: its `openAPIV3Schema` with `apiVersion`,
/// `kind` and `metadata` added, tagged with its GVK.
pub(crate) fn custom_schema(
    group: &str,
    version: &str,
    kind: &str,
    schema: Option<&Value>,
) -> Value {
    let mut s = match schema {
        Some(Value::Object(m)) => m.clone(),
        _ => {
            let mut m = Map::new();
            m.insert("type".into(), json!("object"));
            m.insert("x-kubernetes-preserve-unknown-fields".into(), json!(true));
            m
        }
    };
    s.entry("type").or_insert(json!("object"));
    let props = s
        .entry("properties")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(props) = props {
        props.insert(
            "apiVersion".into(),
            json!({"description": API_VERSION_DOC, "type": "string"}),
        );
        props.insert(
            "kind".into(),
            json!({"description": KIND_DOC, "type": "string"}),
        );
        props.insert(
            "metadata".into(),
            json!({"$ref": format!("{REF_PREFIX}{OBJECT_META}"), "description": METADATA_DOC}),
        );
    }
    s.insert(
        "x-kubernetes-group-version-kind".into(),
        json!([{"group": group, "kind": kind, "version": version}]),
    );
    Value::Object(s)
}

/// The `<Kind>List` schema of a kind whose item schema is `item`.
pub(crate) fn list_schema(
    group: &str,
    version: &str,
    list_kind: &str,
    kind: &str,
    plural: &str,
    item: &str,
) -> Value {
    json!({
        "description": format!("{list_kind} is a list of {kind} objects."),
        "properties": {
            "apiVersion": {"description": API_VERSION_DOC, "type": "string"},
            "items": {
                "description": format!("List of {plural}. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md"),
                "items": {"$ref": format!("{REF_PREFIX}{item}")},
                "type": "array",
            },
            "kind": {"description": KIND_DOC, "type": "string"},
            "metadata": {"$ref": format!("{REF_PREFIX}{LIST_META}"), "description": LIST_METADATA_DOC},
        },
        "required": ["items"],
        "type": "object",
        "x-kubernetes-group-version-kind": [{"group": group, "kind": list_kind, "version": version}],
    })
}

/// Every definition name `$ref`erenced (transitively) from `roots`, roots included.
pub(crate) fn closure(
    roots: impl IntoIterator<Item = String>,
    lookup: &dyn Fn(&str) -> Option<Value>,
) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let mut todo: Vec<String> = roots.into_iter().collect();
    while let Some(name) = todo.pop() {
        if out.contains_key(&name) {
            continue;
        }
        let Some(schema) = lookup(&name) else {
            continue;
        };
        let mut refs = BTreeSet::new();
        collect_refs(&schema, &mut refs);
        todo.extend(refs.into_iter().filter(|r| !out.contains_key(r)));
        out.insert(name, schema);
    }
    out
}

/// Whether `key` of a schema object holds data rather than schemas (`enum`, `default`,
/// `example`), unless the object is itself a map of named schemas (`properties`).
fn is_data_key(key: &str, named_schemas: bool) -> bool {
    !named_schemas && matches!(key, "enum" | "default" | "example")
}

/// Whether the value under `key` is a map of named schemas.
fn holds_named_schemas(key: &str, named_schemas: bool) -> bool {
    !named_schemas
        && matches!(
            key,
            "properties" | "patternProperties" | "definitions" | "dependencies"
        )
}

fn collect_refs(v: &Value, out: &mut BTreeSet<String>) {
    collect_refs_in(v, out, false);
}

fn collect_refs_in(v: &Value, out: &mut BTreeSet<String>, named: bool) {
    match v {
        Value::Object(m) => {
            if !named
                && let Some(Value::String(r)) = m.get("$ref")
                && let Some(name) = r.strip_prefix(REF_PREFIX)
            {
                out.insert(name.to_string());
            }
            for (k, child) in m {
                if !is_data_key(k, named) {
                    collect_refs_in(child, out, holds_named_schemas(k, named));
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|c| collect_refs_in(c, out, false)),
        _ => {}
    }
}

/// Upstream's OpenAPI v3 shape: a `$ref` with siblings becomes `allOf: [{$ref}]` plus the
/// siblings; IntOrString and Quantity become `oneOf`s.
pub(crate) fn to_v3(name: &str, schema: &Value) -> Value {
    match name {
        INT_OR_STRING => json!({
            "description": schema.get("description").cloned().unwrap_or(Value::Null),
            "format": "int-or-string",
            "oneOf": [{"type": "integer"}, {"type": "string"}],
        }),
        QUANTITY => json!({
            "description": schema.get("description").cloned().unwrap_or(Value::Null),
            "oneOf": [{"type": "string"}, {"type": "number"}],
        }),
        _ => wrap_refs(schema, false),
    }
}

fn wrap_refs(v: &Value, named: bool) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, child) in m {
                out.insert(
                    k.clone(),
                    if is_data_key(k, named) {
                        child.clone()
                    } else {
                        wrap_refs(child, holds_named_schemas(k, named))
                    },
                );
            }
            if !named
                && out.len() > 1
                && let Some(r) = out.remove("$ref")
            {
                out.insert("allOf".into(), json!([{"$ref": r}]));
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(|c| wrap_refs(c, false)).collect()),
        other => other.clone(),
    }
}

/// Upstream's Swagger 2.0 shape: refs point at `#/definitions/`, IntOrString and Quantity are
/// strings, and OpenAPI-3-only keywords (`nullable`, `oneOf`, `anyOf`, `not`) are dropped.
pub(crate) fn to_v2(name: &str, schema: &Value) -> Value {
    match name {
        INT_OR_STRING => json!({
            "description": schema.get("description").cloned().unwrap_or(Value::Null),
            "format": "int-or-string",
            "type": "string",
        }),
        QUANTITY => json!({
            "description": schema.get("description").cloned().unwrap_or(Value::Null),
            "type": "string",
        }),
        _ => v2_rewrite(schema, false),
    }
}

fn v2_rewrite(v: &Value, named: bool) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, child) in m {
                if named {
                    out.insert(k.clone(), v2_rewrite(child, false));
                    continue;
                }
                match k.as_str() {
                    "nullable" | "oneOf" | "anyOf" | "not" => continue,
                    "$ref" => {
                        let r = child.as_str().unwrap_or("");
                        let r = match r.strip_prefix(REF_PREFIX) {
                            Some(name) => format!("#/definitions/{name}"),
                            None => r.to_string(),
                        };
                        out.insert(k.clone(), Value::String(r));
                    }
                    "enum" | "default" | "example" => {
                        out.insert(k.clone(), child.clone());
                    }
                    _ => {
                        out.insert(k.clone(), v2_rewrite(child, holds_named_schemas(k, false)));
                    }
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(|c| v2_rewrite(c, false)).collect()),
        other => other.clone(),
    }
}

/// The description upstream's printers take from a type's `SwaggerDoc()`: the description of
/// `property` in the built-in definition `definition` (short name, e.g. `ObjectMeta`), or "".
pub fn field_doc(definition: &str, property: &str) -> String {
    static BY_SHORT_NAME: OnceLock<BTreeMap<String, String>> = OnceLock::new();
    let index = BY_SHORT_NAME.get_or_init(|| {
        let mut m = BTreeMap::new();
        // The first definition (in name order) with a short name wins, as before.
        for name in builtin().defs.keys() {
            if let Some(short) = name.rsplit('.').next() {
                m.entry(short.to_string()).or_insert_with(|| name.clone());
            }
        }
        m
    });
    index
        .get(definition)
        .and_then(|name| builtin().defs.get(name))
        .and_then(|s| s.pointer(&format!("/properties/{property}/description")))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_table_parses() {
        let v: Value = serde_json::from_str(UPSTREAM).expect("table");
        assert!(v.get("io.k8s.api.core.v1.PodSpec").is_some());
    }

    #[test]
    fn builtin_carries_upstream_extensions() {
        let b = builtin();
        let containers = &b.defs["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(containers["x-kubernetes-list-type"], "map");
        let strategy = &b.defs["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]["strategy"];
        assert_eq!(strategy["x-kubernetes-patch-strategy"], "retainKeys");
        let deploy = &b.defs["io.k8s.api.apps.v1.Deployment"];
        assert!(deploy.get("required").is_none());
        assert_eq!(
            deploy["x-kubernetes-group-version-kind"],
            json!([{"group": "apps", "kind": "Deployment", "version": "v1"}])
        );
        // upstream: LocalObjectReference.name is optional
        assert!(
            b.defs["io.k8s.api.core.v1.LocalObjectReference"]
                .get("required")
                .is_none()
        );
        assert_eq!(
            b.names[&(
                "apps".to_string(),
                "v1".to_string(),
                "Deployment".to_string()
            )],
            "io.k8s.api.apps.v1.Deployment"
        );
    }

    #[test]
    fn v3_wraps_refs_with_siblings() {
        let s = json!({"properties": {"a": {"$ref": "#/components/schemas/X", "description": "d"}, "b": {"$ref": "#/components/schemas/Y"}}});
        let v3 = to_v3("Z", &s);
        assert_eq!(
            v3["properties"]["a"],
            json!({"allOf": [{"$ref": "#/components/schemas/X"}], "description": "d"})
        );
        assert_eq!(
            v3["properties"]["b"],
            json!({"$ref": "#/components/schemas/Y"})
        );
        let v2 = to_v2("Z", &s);
        assert_eq!(
            v2["properties"]["a"],
            json!({"$ref": "#/definitions/X", "description": "d"})
        );
    }

    #[test]
    fn custom_names_reverse_the_group() {
        assert_eq!(
            custom_definition_name("stable.example.com", "v1", "CronTab"),
            "com.example.stable.v1.CronTab"
        );
    }

    #[test]
    fn field_docs_come_from_the_schemas() {
        assert!(
            field_doc("ObjectMeta", "name").starts_with("Name must be unique within a namespace.")
        );
        assert_eq!(field_doc("ObjectMeta", "nope"), "");
    }
}
