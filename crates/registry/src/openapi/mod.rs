//! The API's OpenAPI documents, built once per set of resources:
//!
//! - `/openapi/v3`: the index (`{"paths": {"apis/apps/v1": {"serverRelativeURL":
//!   "/openapi/v3/apis/apps/v1?hash=<HASH>"}, …}}`), see [`OpenApi::index`];
//! - `/openapi/v3/<path>`: one OpenAPI 3.0 document per group-version (plus `api`, `apis` and
//!   `apis/<group>`), see [`OpenApi::document`];
//! - `/openapi/v2`: one Swagger 2.0 document, see [`OpenApi::v2`] (JSON) and
//!   [`OpenApi::v2_protobuf`] (what kubectl 1.27/1.28 ask for), built on first use.
//!
//! Component schemas come from k8s-openapi's schemars impls, named as upstream names them
//! (`io.k8s.api.apps.v1.Deployment`), with upstream's `x-kubernetes-*` extensions. Operations
//! carry `x-kubernetes-group-version-kind` and `x-kubernetes-action`, and every POST/PUT/PATCH
//! lists the `dryRun` and `fieldValidation` query parameters: kubectl 1.29+ reads exactly that
//! to leave validation to the server and to run `kubectl explain`.
//!
//! Custom resources take their schema from [`ResourceDef::crd`]; after a CRD changes, build
//! again with the new set of resources ([`OpenApiBuilder`] reuses unchanged documents).

mod paths;
mod proto;
pub(crate) mod schemas;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha512};

use crate::resource::ResourceDef;
use paths::{Names, PathItem};
pub use schemas::field_doc;

/// The `x-kubernetes-*` extensions upstream's OpenAPI puts on the field at `path` of `def`'s
/// kind (`x-kubernetes-patch-strategy`, `x-kubernetes-patch-merge-key`,
/// `x-kubernetes-list-type`, `x-kubernetes-list-map-keys`, `x-kubernetes-map-type`): the facts
/// strategic merge patch and server-side apply need. `path` is field names from the object
/// root with list indices left out (`["spec", "template", "spec", "containers", "ports"]`); a
/// segment under a map of structs names the map key. Custom resources read their CRD schema.
/// Empty when the field is unknown or carries no extension.
pub fn field_extensions(def: &ResourceDef, path: &[&str]) -> Map<String, Value> {
    let builtin = schemas::builtin();
    let resolve = |s: &Value| -> Option<Value> {
        match s.get("$ref").and_then(Value::as_str) {
            Some(r) => r
                .strip_prefix(schemas::REF_PREFIX)
                .and_then(|n| builtin.defs.get(n))
                .cloned(),
            None => Some(s.clone()),
        }
    };
    let root = if def.custom {
        match def.crd.as_ref().and_then(|c| c.schema.as_ref()) {
            Some(s) => s.clone(),
            None => return Map::new(),
        }
    } else {
        match builtin
            .names
            .get(&(def.group.clone(), def.version.clone(), def.kind.clone()))
            .and_then(|n| builtin.defs.get(n))
        {
            Some(s) => s.clone(),
            None => return Map::new(),
        }
    };
    let mut field: Option<Value> = None;
    let mut current = root;
    for seg in path {
        // Step through lists to their items.
        while let Some(items) = current.get("items").and_then(&resolve) {
            current = items;
        }
        let next = if seg == &"metadata" && def.custom {
            builtin.defs.get(schemas::OBJECT_META).cloned()
        } else if let Some(p) = current.pointer(&format!("/properties/{seg}")) {
            Some(p.clone())
        } else if current.get("properties").is_none() {
            current
                .get("additionalProperties")
                .filter(|a| a.is_object())
                .cloned()
        } else {
            None
        };
        let Some(next) = next else {
            return Map::new();
        };
        current = resolve(&next).unwrap_or(Value::Null);
        field = Some(next);
    }
    field
        .and_then(|f| f.as_object().cloned())
        .map(|m| {
            m.into_iter()
                .filter(|(k, _)| {
                    k.starts_with("x-kubernetes-") && k != "x-kubernetes-group-version-kind"
                })
                .collect()
        })
        .unwrap_or_default()
}

/// One served document: its JSON bytes and content hash (upper-case hex SHA-512, as upstream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenApiDoc {
    pub bytes: Bytes,
    pub hash: String,
}

impl OpenApiDoc {
    fn new(v: &Value) -> OpenApiDoc {
        OpenApiDoc::from_bytes(serde_json::to_vec(v).unwrap_or_default())
    }

    fn from_bytes(bytes: Vec<u8>) -> OpenApiDoc {
        let digest = Sha512::digest(&bytes);
        let mut hash = String::with_capacity(128);
        for b in digest {
            hash.push_str(&format!("{b:02X}"));
        }
        OpenApiDoc {
            bytes: Bytes::from(bytes),
            hash,
        }
    }

    /// The document parsed back (tests, debugging).
    pub fn to_value(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or(Value::Null)
    }
}

/// All OpenAPI documents for one set of resources.
#[derive(Debug)]
pub struct OpenApi {
    index: OpenApiDoc,
    docs: BTreeMap<String, OpenApiDoc>,
    defs: Vec<Arc<ResourceDef>>,
    v2: OnceLock<OpenApiDoc>,
    v2_proto: OnceLock<OpenApiDoc>,
}

/// The media type of `/openapi/v2` in protobuf (what kubectl 1.27/1.28 ask for).
pub const V2_PROTOBUF_MEDIA_TYPE: &str =
    "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";

impl OpenApi {
    /// Builds every document for `defs` (built-in and custom resources).
    pub fn new(defs: &[Arc<ResourceDef>]) -> OpenApi {
        OpenApiBuilder::new().build(defs)
    }

    /// The `/openapi/v3` index.
    pub fn index(&self) -> &OpenApiDoc {
        &self.index
    }

    /// The document at `/openapi/v3/<path>`: `path` is `api/v1`, `apis/apps/v1`, `api`,
    /// `apis` or `apis/<group>` (a leading `/` is ignored).
    pub fn document(&self, path: &str) -> Option<&OpenApiDoc> {
        self.docs.get(path.trim_start_matches('/'))
    }

    /// The paths the index lists.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.docs.keys().map(String::as_str)
    }

    /// The `/openapi/v2` Swagger document (JSON), built on first call.
    pub fn v2(&self) -> &OpenApiDoc {
        self.v2.get_or_init(|| build_v2(&self.defs))
    }

    /// `/openapi/v2` as [`V2_PROTOBUF_MEDIA_TYPE`] (gnostic's `openapi.v2.Document`), built on
    /// first call; serve it with [`V2_PROTOBUF_CONTENT_TYPE`]. kubectl 1.27/1.28 read only this
    /// form for `apply` validation (checked: both then send `fieldValidation=Strict`).
    pub fn v2_protobuf(&self) -> &OpenApiDoc {
        self.v2_proto.get_or_init(|| {
            let json: Value = serde_json::from_slice(&self.v2().bytes).unwrap_or(Value::Null);
            OpenApiDoc::from_bytes(proto::encode_document(&json))
        })
    }
}

/// Builds [`OpenApi`]s, reusing the documents of group-versions whose resources did not change
/// since the previous build (a CRD change rebuilds only its own group-version).
#[derive(Debug, Default)]
pub struct OpenApiBuilder {
    cache: HashMap<String, (Vec<ResourceDef>, OpenApiDoc)>,
}

impl OpenApiBuilder {
    pub fn new() -> OpenApiBuilder {
        OpenApiBuilder::default()
    }

    /// Builds the documents for `defs`.
    pub fn build(&mut self, defs: &[Arc<ResourceDef>]) -> OpenApi {
        let mut by_gv: BTreeMap<(String, String), Vec<Arc<ResourceDef>>> = BTreeMap::new();
        for d in defs {
            by_gv
                .entry((d.group.clone(), d.version.clone()))
                .or_default()
                .push(d.clone());
        }
        let mut docs = BTreeMap::new();
        let mut fresh = HashMap::new();
        let mut groups: BTreeSet<String> = BTreeSet::new();
        let mut core = false;
        for ((group, version), gv_defs) in &by_gv {
            let key = if group.is_empty() {
                core = true;
                format!("api/{version}")
            } else {
                groups.insert(group.clone());
                format!("apis/{group}/{version}")
            };
            let plain: Vec<ResourceDef> = gv_defs.iter().map(|d| (**d).clone()).collect();
            let doc = match self.cache.remove(&key) {
                Some((cached, doc)) if cached == plain => doc,
                _ => OpenApiDoc::new(&gv_document(group, version, gv_defs)),
            };
            docs.insert(key.clone(), doc.clone());
            fresh.insert(key, (plain, doc));
        }
        self.cache = fresh;
        if core {
            docs.insert(
                "api".into(),
                OpenApiDoc::new(&discovery_document(&[paths::discovery_path(
                    "/api/",
                    "getCoreAPIVersions".into(),
                    paths::API_VERSIONS,
                    "core",
                )])),
            );
        }
        docs.insert(
            "apis".into(),
            OpenApiDoc::new(&discovery_document(&[paths::discovery_path(
                "/apis/",
                "getAPIVersions".into(),
                paths::API_GROUP_LIST,
                "apis",
            )])),
        );
        for g in &groups {
            docs.insert(
                format!("apis/{g}"),
                OpenApiDoc::new(&discovery_document(&[paths::discovery_path(
                    &format!("/apis/{g}/"),
                    paths::group_operation_id(g),
                    paths::API_GROUP,
                    &paths::group_tag(g),
                )])),
            );
        }
        let mut index_paths = Map::new();
        for (path, doc) in &docs {
            index_paths.insert(
                path.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={}", doc.hash)}),
            );
        }
        OpenApi {
            index: OpenApiDoc::new(&json!({"paths": index_paths})),
            docs,
            defs: defs.to_vec(),
            v2: OnceLock::new(),
            v2_proto: OnceLock::new(),
        }
    }
}

/// Component names of a resource's kind and list kind, and the custom schemas it adds.
fn resource_names(def: &ResourceDef, custom: &mut BTreeMap<String, Value>) -> Names {
    let builtin = schemas::builtin();
    let key = (def.group.clone(), def.version.clone(), def.kind.clone());
    let listable = def.verbs.iter().any(|v| v == "list");
    if !def.custom
        && let Some(name) = builtin.names.get(&key)
    {
        let list = listable.then(|| {
            let list_name = format!("{name}List");
            if !builtin.defs.contains_key(&list_name) {
                custom.insert(
                    list_name.clone(),
                    schemas::list_schema(
                        &def.group,
                        &def.version,
                        &def.list_kind(),
                        &def.kind,
                        &def.plural,
                        name,
                    ),
                );
            }
            list_name
        });
        return Names {
            kind: name.clone(),
            list,
        };
    }
    let name = schemas::custom_definition_name(&def.group, &def.version, &def.kind);
    let schema = def.crd.as_ref().and_then(|c| c.schema.as_ref());
    custom.insert(
        name.clone(),
        schemas::custom_schema(&def.group, &def.version, &def.kind, schema),
    );
    let list_kind = def
        .crd
        .as_ref()
        .map(|c| c.list_kind.clone())
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| def.list_kind());
    let list = listable.then(|| {
        let list_name = schemas::custom_definition_name(&def.group, &def.version, &list_kind);
        custom.insert(
            list_name.clone(),
            schemas::list_schema(
                &def.group,
                &def.version,
                &list_kind,
                &def.kind,
                &def.plural,
                &name,
            ),
        );
        list_name
    });
    Names { kind: name, list }
}

/// Paths and (neutral-form) component schemas of one group-version.
fn gv_parts(
    group: &str,
    version: &str,
    defs: &[Arc<ResourceDef>],
) -> (Vec<PathItem>, BTreeMap<String, Value>) {
    let mut custom = BTreeMap::new();
    let mut items = vec![paths::resources_path(group, version)];
    for def in defs {
        let names = resource_names(def, &mut custom);
        items.extend(paths::resource_paths(def, &names));
    }
    let roots: BTreeSet<String> = items.iter().flat_map(PathItem::schema_refs).collect();
    let builtin = schemas::builtin();
    let lookup = |name: &str| custom.get(name).or_else(|| builtin.defs.get(name)).cloned();
    let mut components = schemas::closure(roots, &lookup);
    // The shared meta kinds carry this group-version's GVK, as upstream's do.
    for (name, kind) in [
        (paths::DELETE_OPTIONS, "DeleteOptions"),
        (paths::WATCH_EVENT, "WatchEvent"),
    ] {
        if let Some(Value::Object(s)) = components.get_mut(name) {
            s.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([{"group": group, "kind": kind, "version": version}]),
            );
        }
    }
    if let Some(Value::Object(s)) = components.get_mut(paths::STATUS) {
        s.insert(
            "x-kubernetes-group-version-kind".into(),
            json!([{"group": "", "kind": "Status", "version": "v1"}]),
        );
    }
    (items, components)
}

fn security_v3() -> (Value, Value) {
    (
        json!({"BearerToken": {"description": "Bearer Token authentication", "in": "header", "name": "authorization", "type": "apiKey"}}),
        json!([{"BearerToken": []}]),
    )
}

fn v3_document(items: &[PathItem], components: &BTreeMap<String, Value>) -> Value {
    let mut paths_obj = Map::new();
    for item in items {
        paths_obj.insert(item.path.clone(), item.v3());
    }
    let schemas_obj: Map<String, Value> = components
        .iter()
        .map(|(name, s)| (name.clone(), schemas::to_v3(name, s)))
        .collect();
    let (security_schemes, security) = security_v3();
    json!({
        "components": {"schemas": schemas_obj, "securitySchemes": security_schemes},
        "info": {"title": "Kubernetes", "version": "unversioned"},
        "openapi": "3.0.0",
        "paths": paths_obj,
        "security": security,
    })
}

/// The OpenAPI 3.0 document of one group-version.
fn gv_document(group: &str, version: &str, defs: &[Arc<ResourceDef>]) -> Value {
    let (items, components) = gv_parts(group, version, defs);
    v3_document(&items, &components)
}

/// The document of `/api`, `/apis` or `/apis/<group>`.
fn discovery_document(items: &[PathItem]) -> Value {
    let builtin = schemas::builtin();
    let roots: BTreeSet<String> = items.iter().flat_map(PathItem::schema_refs).collect();
    let lookup = |name: &str| builtin.defs.get(name).cloned();
    let components = schemas::closure(roots, &lookup);
    v3_document(items, &components)
}

/// The Swagger 2.0 document of every resource.
fn build_v2(defs: &[Arc<ResourceDef>]) -> OpenApiDoc {
    let mut by_gv: BTreeMap<(String, String), Vec<Arc<ResourceDef>>> = BTreeMap::new();
    for d in defs {
        by_gv
            .entry((d.group.clone(), d.version.clone()))
            .or_default()
            .push(d.clone());
    }
    let mut paths_obj = Map::new();
    let mut definitions = Map::new();
    let mut groups = BTreeSet::new();
    for ((group, version), gv_defs) in &by_gv {
        if !group.is_empty() {
            groups.insert(group.clone());
        }
        let (items, components) = gv_parts(group, version, gv_defs);
        for item in &items {
            paths_obj.insert(item.path.clone(), item.v2());
        }
        for (name, s) in &components {
            let mut v2 = schemas::to_v2(name, s);
            // Shared meta kinds list the GVKs of every group-version.
            if let (Some(Value::Object(existing)), Value::Object(new)) =
                (definitions.get(name), &mut v2)
                && let (Some(Value::Array(old)), Some(Value::Array(add))) = (
                    existing.get("x-kubernetes-group-version-kind"),
                    new.get("x-kubernetes-group-version-kind").cloned(),
                )
            {
                let mut all = old.clone();
                for g in add {
                    if !all.contains(&g) {
                        all.push(g);
                    }
                }
                new.insert("x-kubernetes-group-version-kind".into(), Value::Array(all));
            }
            definitions.insert(name.clone(), v2);
        }
    }
    let mut discovery = vec![
        paths::discovery_path(
            "/api/",
            "getCoreAPIVersions".into(),
            paths::API_VERSIONS,
            "core",
        ),
        paths::discovery_path(
            "/apis/",
            "getAPIVersions".into(),
            paths::API_GROUP_LIST,
            "apis",
        ),
    ];
    for g in &groups {
        discovery.push(paths::discovery_path(
            &format!("/apis/{g}/"),
            paths::group_operation_id(g),
            paths::API_GROUP,
            &paths::group_tag(g),
        ));
    }
    let builtin = schemas::builtin();
    let roots: BTreeSet<String> = discovery.iter().flat_map(PathItem::schema_refs).collect();
    let lookup = |name: &str| builtin.defs.get(name).cloned();
    for (name, s) in schemas::closure(roots, &lookup) {
        definitions
            .entry(name.clone())
            .or_insert_with(|| schemas::to_v2(&name, &s));
    }
    for item in &discovery {
        paths_obj.insert(item.path.clone(), item.v2());
    }
    OpenApiDoc::new(&json!({
        "definitions": definitions,
        "info": {"title": "Kubernetes", "version": "unversioned"},
        "paths": paths_obj,
        "security": [{"BearerToken": []}],
        "securityDefinitions": {"BearerToken": {"description": "Bearer Token authentication", "in": "header", "name": "authorization", "type": "apiKey"}},
        "swagger": "2.0",
    }))
}

#[cfg(test)]
mod tests;
