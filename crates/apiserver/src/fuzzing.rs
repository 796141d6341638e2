//! Fuzzing entry point: what the apiserver does with request bytes before they reach storage.
//!
//! [`decode_and_patch`] is the body of the cargo-fuzz target `fuzz/fuzz_targets/apiserver.rs`
//! (see `fuzz/README.md`). The tests below run it over a fixed-seed stream of inputs (random
//! bytes plus mutations of valid bodies) so that CI exercises the same entry point on a stable
//! toolchain.
//!
//! The first byte picks the live object patched ([`targets`]: a ConfigMap, a Deployment, a
//! Pod, a Service, a Namespace and a custom resource, each with managed fields) and whether an
//! apply forces; the rest is the body, fed to:
//! * **body decoding** as JSON, YAML and Kubernetes protobuf (`http::decode_object`), then the
//!   pure part of the create pipeline: kind and identity checks, unknown and duplicate fields,
//!   typed decoding, defaulting, the create strategy, validation, managed fields;
//! * **patching** of the live object with each patch type — JSON patch, merge patch, strategic
//!   merge patch (built-in kinds), server-side apply (update and create) — then what the PATCH
//!   handler checks on the result (`http::check_patched` under `Strict`, kind and identity) and
//!   the update pipeline (defaulting, the update strategy, validation, managed fields);
//! * **the URL side**: the bytes as a query string, label and field selectors, a request path,
//!   an `Accept` header and a `continue` token;
//! * **the watch cache's sparse parse** of the bytes as a stored object (`crate::sparse`):
//!   when it takes them, its JSON and selector attributes equal the full parse's.
//!
//! Whatever the bytes, nothing may panic, and every refusal must be a client error (4xx: bad
//! input is never a 500). Every object that would be stored must serialize to JSON that parses
//! back to the same value (the watch cache re-reads what is stored).

use std::sync::{Arc, OnceLock};

use kumo_apimachinery::ApiError;
use kumo_apimachinery::selector::{FieldSelector, LabelSelector};
use kumo_registry::ResourceDef;
use serde_json::{Value, json};

use crate::api::{check_identity, check_kind};
use crate::http::{self, PatchKind};

/// The time every managed-fields entry is stamped with.
const NOW: &str = "2024-05-01T12:00:00Z";

/// Feeds `data` through every request-body decoder and patch type (see the module docs).
/// Panics only on a bug.
pub fn decode_and_patch(data: &[u8]) {
    run(data);
}

/// Which paths the input got through (for the tests' coverage checks).
#[derive(Debug, Default, Clone, Copy)]
struct Reached {
    json: bool,
    yaml: bool,
    protobuf: bool,
    created: bool,
    json_patched: bool,
    merge_patched: bool,
    smp_patched: bool,
    applied: bool,
    patched_valid: bool,
    selector: bool,
    cached: bool,
}

/// One live object to patch, as stored (with managed fields).
struct Target {
    def: Arc<ResourceDef>,
    live: Value,
}

fn find(defs: &[Arc<ResourceDef>], group: &str, plural: &str) -> Arc<ResourceDef> {
    defs.iter()
        .find(|d| d.group == group && d.plural == plural)
        .cloned()
        .unwrap_or_else(|| panic!("{group}/{plural} is a built-in resource"))
}

/// A CRD with a structural schema, for a custom resource target.
fn crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.fuzz.kumo.dev"},
        "spec": {
            "group": "fuzz.kumo.dev",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {"type": "object", "properties": {
                            "size": {"type": "integer", "minimum": 0},
                            "color": {"type": "string", "enum": ["red", "blue"]},
                            "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
                            "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                                "items": {"type": "object", "required": ["name"], "properties": {
                                    "name": {"type": "string"}, "port": {"type": "integer"}}}},
                            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
                        }},
                        "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}}
                    }
                }}
            }]
        }
    })
}

fn stored(mut obj: Value, def: &ResourceDef) -> Value {
    crate::schema::apply_defaults(def, &mut obj);
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert("uid".into(), json!("6f1e7a52-0000-4000-8000-000000000001"));
        m.insert("resourceVersion".into(), json!("42"));
        m.insert("creationTimestamp".into(), json!(NOW));
        if def.namespaced() {
            m.insert("namespace".into(), json!("default"));
        }
    }
    let mut managed = kumo_apimachinery::managed::update_managed_fields(
        None,
        &obj,
        "kubectl-client-side-apply",
        "Update",
        &def.api_version(),
        None,
        NOW,
    );
    // A second manager owning part of it, so applies can conflict.
    if let Ok(applied) = kumo_apimachinery::managed::apply(
        Some(&managed),
        &applied_subset(&managed),
        "other-manager",
        true,
        &def.api_version(),
        &def.kind,
        NOW,
    ) {
        managed = applied;
    }
    managed
}

/// apiVersion, kind, metadata.name and the first key of `spec`/`data` of `obj`.
fn applied_subset(obj: &Value) -> Value {
    let mut out = json!({
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "metadata": {"name": obj["metadata"]["name"]},
    });
    for top in ["spec", "data"] {
        if let Some((k, v)) = obj
            .get(top)
            .and_then(Value::as_object)
            .and_then(|m| m.iter().next())
        {
            out[top] = json!({ k.clone(): v.clone() });
        }
    }
    out
}

/// The live objects patches are applied to.
fn targets() -> &'static [Target] {
    static TARGETS: OnceLock<Vec<Target>> = OnceLock::new();
    TARGETS.get_or_init(|| {
        let defs = kumo_registry::builtin();
        let mut out = Vec::new();
        let mut add = |def: Arc<ResourceDef>, obj: Value| {
            let live = stored(obj, &def);
            out.push(Target { def, live });
        };
        add(
            find(&defs, "", "configmaps"),
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "cm", "labels": {"app": "web"}, "annotations": {"a": "b"}},
                "data": {"k": "v", "other": "x"}}),
        );
        add(
            find(&defs, "apps", "deployments"),
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "labels": {"app": "web"}, "finalizers": ["x.io/y"]},
                "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}},
                        "spec": {"containers": [
                            {"name": "app", "image": "nginx:1", "ports": [{"containerPort": 80, "protocol": "TCP"}],
                             "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                             "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}},
                            {"name": "side", "image": "busybox", "args": ["sleep", "1"]}],
                            "tolerations": [{"key": "k", "operator": "Exists"}],
                            "volumes": [{"name": "v", "emptyDir": {}}]}}}}),
        );
        add(
            find(&defs, "", "pods"),
            json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u1", "controller": true}]},
                "spec": {"containers": [{"name": "c", "image": "img", "volumeMounts": [{"name": "v", "mountPath": "/v"}]}],
                    "volumes": [{"name": "v", "configMap": {"name": "cm"}}], "nodeSelector": {"a": "b"}},
                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}),
        );
        add(
            find(&defs, "", "services"),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc"},
                "spec": {"selector": {"app": "web"}, "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                    "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
                              {"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"}]}}),
        );
        add(
            find(&defs, "", "namespaces"),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns1"},
                "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}),
        );
        let cr = kumo_registry::crd::resource_defs(&crd())
            .ok()
            .and_then(|d| d.into_iter().find(|d| d.version == "v1"))
            .expect("the fuzz CRD makes a resource");
        add(
            cr,
            json!({"apiVersion": "fuzz.kumo.dev/v1", "kind": "Widget", "metadata": {"name": "w"},
                "spec": {"size": 3, "color": "red", "tags": ["a", "b"],
                    "ports": [{"name": "p", "port": 1}], "free": {"x": [1, {"y": null}]}}}),
        );
        out
    })
}

/// A refusal must be a client error with a Status that renders.
fn client_error(e: &ApiError, what: &str, input: &[u8]) {
    assert!(
        (400..500).contains(&e.code),
        "{what}: {} {} {:?} for input {:02x?}",
        e.code,
        e.reason,
        e.message,
        input
    );
    assert!(
        !e.reason.is_empty(),
        "{what}: a {} without a reason",
        e.code
    );
    let _ = e.to_status();
}

/// What is stored must read back (the cache parses every stored object).
fn storable(v: &Value, what: &str) {
    assert!(v.is_object(), "{what}: stored a non-object {v}");
    let bytes = serde_json::to_vec(v).expect("serialize a stored object");
    let back: Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{what}: a stored object does not parse back: {e}"));
    assert_eq!(&back, v, "{what}: JSON round trip");
}

fn run(data: &[u8]) -> Reached {
    let mut r = Reached::default();
    let (sel, body) = data.split_first().map_or((0, data), |(s, b)| (*s, b));
    let all = targets();
    let target = &all[usize::from(sel) % all.len()];
    let force = sel & 0x80 != 0;
    decode(target, body, &mut r, data);
    for kind in [
        PatchKind::Json,
        PatchKind::Merge,
        PatchKind::Strategic,
        PatchKind::Apply,
    ] {
        patch(target, kind, body, force, &mut r, data);
    }
    url_side(body, &mut r);
    r.cached = cached(body, data);
    r
}

/// The watch cache's sparse parse of stored bytes agrees with the full parse: same JSON (the
/// resourceVersion set), same selector attributes. Returns whether it took them.
fn cached(body: &[u8], input: &[u8]) -> bool {
    let mut out = Vec::new();
    let Some(sparse) = crate::sparse::parse(body, 7, &mut out) else {
        return false;
    };
    let mut full: Value = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!("the sparse parse took JSON the full one refuses ({e}): {input:?}")
    });
    full["metadata"]["resourceVersion"] = json!("7");
    let served: Value = serde_json::from_slice(&out)
        .unwrap_or_else(|e| panic!("the sparse parse wrote invalid JSON ({e}): {input:?}"));
    assert_eq!(served, full, "sparse parse JSON of {input:?}");
    assert_eq!(
        crate::fields::field_set(&sparse),
        crate::fields::field_set(&full),
        "sparse parse attributes of {input:?}"
    );
    assert_eq!(
        sparse["metadata"].get("labels"),
        full["metadata"].get("labels"),
        "sparse parse labels of {input:?}"
    );
    true
}

// ---- bodies ------------------------------------------------------------------------------------

fn decode(t: &Target, body: &[u8], r: &mut Reached, input: &[u8]) {
    for ct in [
        "application/json",
        "application/yaml",
        crate::protobuf::MEDIA_TYPE,
    ] {
        match http::decode_object(Some(ct), body) {
            Ok(obj) => {
                match ct {
                    "application/json" => r.json = true,
                    "application/yaml" => r.yaml = true,
                    _ => r.protobuf = true,
                }
                if create(t, obj, body, ct, input) {
                    r.created = true;
                }
            }
            Err(e) => client_error(&e, ct, input),
        }
    }
}

/// The synchronous part of `http::create` + `prepare` (no store, no admission). Returns
/// whether the object would be stored.
fn create(t: &Target, mut obj: Value, body: &[u8], ct: &str, input: &[u8]) -> bool {
    let def = &t.def;
    let ns = def.namespaced().then_some("default");
    let checks = check_kind(def, &mut obj, &def.kind, &def.api_version())
        .and_then(|()| check_identity(def, &mut obj, ns, None));
    if let Err(e) = checks {
        client_error(&e, "create identity", input);
        return false;
    }
    let duplicates = if ct == "application/json" {
        let two_pass = kumo_registry::validate::duplicate_fields(body);
        // The server decodes and finds repeated keys in one pass: it must agree with both.
        let (one_pass, one_pass_dups) = kumo_registry::validate::parse_json_with_duplicates(body)
            .unwrap_or_else(|e| panic!("the one-pass decode refused JSON ({e}): {input:?}"));
        let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        assert_eq!(one_pass, parsed, "one-pass decode of {input:?}");
        assert_eq!(one_pass_dups, two_pass, "one-pass duplicates of {input:?}");
        two_pass
    } else {
        Vec::new()
    };
    let unknown = kumo_registry::validate::unknown_fields(def, &obj);
    if !unknown.is_empty() || !duplicates.is_empty() {
        let e = kumo_registry::validate::strict_error_with_duplicates(def, &unknown, &duplicates);
        client_error(&e, "strict create", input);
    }
    pipeline(t, None, obj, "create", input)
}

/// Pruning, typed decoding, defaulting, the strategy, validation and managed fields of a
/// write, on `new` (`old`: the live object of an update).
fn pipeline(t: &Target, old: Option<&Value>, mut new: Value, what: &str, input: &[u8]) -> bool {
    let def = &t.def;
    crate::schema::prune_unknown(def, &mut new);
    if let Err(e) = crate::schema::decode_check(def, &new) {
        client_error(&e, what, input);
        return false;
    }
    crate::schema::apply_defaults(def, &mut new);
    let causes = match old {
        None => {
            crate::strategy::prepare_create(def, &mut new);
            crate::schema::validate_create(def, &new)
        }
        Some(old) => {
            crate::strategy::prepare_update(def, old, &mut new, false);
            crate::schema::validate_update(def, old, &new)
        }
    };
    if !causes.is_empty() {
        let name = crate::objects::meta_str(&new, "name").unwrap_or("");
        let e = ApiError::invalid(&def.group, &def.kind, name, causes);
        client_error(&e, what, input);
        return false;
    }
    let out = kumo_apimachinery::managed::update_managed_fields(
        old,
        &new,
        "fuzz",
        "Update",
        &def.api_version(),
        None,
        NOW,
    );
    storable(&out, what);
    true
}

// ---- patches -----------------------------------------------------------------------------------

fn patch(t: &Target, kind: PatchKind, body: &[u8], force: bool, r: &mut Reached, input: &[u8]) {
    let def = &t.def;
    let av = def.api_version();
    let result = match kind {
        PatchKind::Strategic if def.custom => return,
        PatchKind::Apply => apply(t, body, force, r, input),
        k => http::apply_patch(k, &t.live, body, &av, &def.kind)
            .map_err(http::bad_patch)
            .and_then(|new| {
                match k {
                    PatchKind::Json => r.json_patched = true,
                    PatchKind::Merge => r.merge_patched = true,
                    _ => r.smp_patched = true,
                }
                let mut warnings = Vec::new();
                // A value of the wrong type fails in every mode; unknown and repeated fields
                // only under Strict.
                http::check_patched(def, &new, body, k, "Warn", &mut warnings)?;
                if let Err(e) = http::check_patched(def, &new, body, k, "Strict", &mut warnings) {
                    client_error(&e, "strict patch", input);
                }
                Ok(new)
            }),
    };
    let mut new = match result {
        Ok(v) => v,
        Err(e) => {
            client_error(&e, &format!("{kind:?} patch"), input);
            return;
        }
    };
    storable(&new, &format!("{kind:?} patched"));
    let ns = def.namespaced().then_some("default");
    let name = crate::objects::meta_str(&t.live, "name").unwrap_or("");
    let checks = check_kind(def, &mut new, &def.kind, &av)
        .and_then(|()| check_identity(def, &mut new, ns, Some(name)));
    if let Err(e) = checks {
        client_error(&e, "patched identity", input);
        return;
    }
    if pipeline(t, Some(&t.live), new, &format!("{kind:?} update"), input) {
        r.patched_valid = true;
    }
}

/// Server-side apply on the live object and as a create.
fn apply(
    t: &Target,
    body: &[u8],
    force: bool,
    r: &mut Reached,
    input: &[u8],
) -> Result<Value, ApiError> {
    let def = &t.def;
    let av = def.api_version();
    let applied = http::decode_apply(body)?;
    match kumo_apimachinery::managed::apply(None, &applied, "fuzz", force, &av, &def.kind, NOW)
        .map_err(http::bad_patch)
    {
        Ok(created) => storable(&created, "apply create"),
        Err(e) => client_error(&e, "apply create", input),
    }
    let out = kumo_apimachinery::managed::apply_with(
        Some(&t.live),
        &applied,
        &kumo_apimachinery::managed::ApplyOptions {
            manager: "fuzz",
            force,
            api_version: &av,
            kind: &def.kind,
            subresource: None,
            now: NOW,
            lists: None,
            reset: None,
        },
    )
    .map_err(http::bad_patch)?;
    r.applied = true;
    Ok(out)
}

// ---- the URL side ------------------------------------------------------------------------------

fn url_side(body: &[u8], r: &mut Reached) {
    let Ok(s) = std::str::from_utf8(body) else {
        return;
    };
    if let Err(e) = crate::request::Query::parse(Some(s)) {
        client_error(&e, "query", body);
    }
    if LabelSelector::parse(s).is_ok() {
        r.selector = true;
    }
    if FieldSelector::parse(s).is_ok() {
        r.selector = true;
    }
    if let Err(e) = crate::api::decode_continue(s) {
        client_error(&e, "continue", body);
    }
    let q = crate::request::Query::default();
    for m in [
        ::http::Method::GET,
        ::http::Method::POST,
        ::http::Method::DELETE,
    ] {
        let _ = crate::request::parse(&m, s, &q);
    }
    if let Err(e) = crate::request::negotiate(Some(s)) {
        client_error(&e, "accept", body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: a fixed-seed stream, no dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
        fn chance(&mut self, percent: u64) -> bool {
            self.next() % 100 < percent
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn len_field(tag: u32, data: &[u8], out: &mut Vec<u8>) {
        varint(u64::from(tag) << 3 | 2, out);
        varint(data.len() as u64, out);
        out.extend_from_slice(data);
    }

    fn varint_field(tag: u32, v: u64, out: &mut Vec<u8>) {
        varint(u64::from(tag) << 3, out);
        varint(v, out);
    }

    fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let mut tm = Vec::new();
        len_field(1, api_version.as_bytes(), &mut tm);
        len_field(2, kind.as_bytes(), &mut tm);
        let mut body = b"k8s\0".to_vec();
        len_field(1, &tm, &mut body);
        len_field(2, raw, &mut body);
        body
    }

    fn object_meta(name: &str, labels: &[(&str, &str)]) -> Vec<u8> {
        let mut meta = Vec::new();
        len_field(1, name.as_bytes(), &mut meta);
        for (k, v) in labels {
            let mut entry = Vec::new();
            len_field(1, k.as_bytes(), &mut entry);
            len_field(2, v.as_bytes(), &mut entry);
            len_field(11, &entry, &mut meta);
        }
        meta
    }

    /// Valid protobuf bodies: a ConfigMap with data and a Deployment with a pod template.
    fn protobuf_seeds() -> Vec<Vec<u8>> {
        let mut cm = Vec::new();
        len_field(1, &object_meta("cm", &[("app", "web")]), &mut cm);
        for (k, v) in [("k", "v"), ("x", "y")] {
            let mut entry = Vec::new();
            len_field(1, k.as_bytes(), &mut entry);
            len_field(2, v.as_bytes(), &mut entry);
            len_field(2, &entry, &mut cm);
        }
        let mut container = Vec::new();
        len_field(1, b"app", &mut container);
        len_field(2, b"nginx", &mut container);
        let mut pod_spec = Vec::new();
        len_field(2, &container, &mut pod_spec);
        let mut template = Vec::new();
        len_field(1, &object_meta("", &[("app", "web")]), &mut template);
        len_field(2, &pod_spec, &mut template);
        let mut selector = Vec::new();
        let mut entry = Vec::new();
        len_field(1, b"app", &mut entry);
        len_field(2, b"web", &mut entry);
        len_field(1, &entry, &mut selector);
        let mut spec = Vec::new();
        varint_field(1, 3, &mut spec);
        len_field(2, &selector, &mut spec);
        len_field(3, &template, &mut spec);
        let mut deploy = Vec::new();
        len_field(1, &object_meta("web", &[]), &mut deploy);
        len_field(2, &spec, &mut deploy);
        vec![
            envelope("v1", "ConfigMap", &cm),
            envelope("apps/v1", "Deployment", &deploy),
        ]
    }

    /// Index of a target by kind.
    fn target_index(kind: &str) -> u8 {
        targets()
            .iter()
            .position(|t| t.def.kind == kind)
            .and_then(|i| u8::try_from(i).ok())
            .unwrap_or_else(|| panic!("no {kind} target"))
    }

    fn seed(kind: &str, body: impl Into<Vec<u8>>) -> Vec<u8> {
        let mut s = vec![target_index(kind)];
        s.extend(body.into());
        s
    }

    /// Valid bodies for every path: objects (JSON, YAML, protobuf), patches of each type,
    /// selectors and queries.
    fn seeds() -> Vec<Vec<u8>> {
        let mut s = Vec::new();
        for t in targets() {
            let k = t.def.kind.as_str();
            let obj = t.live.to_string();
            s.push(seed(k, obj.clone()));
            if let Ok(y) = serde_saphyr::to_string(&t.live) {
                s.push(seed(k, y));
            }
            s.push(seed(k, applied_subset(&t.live).to_string()));
        }
        // Protobuf bodies only survive byte-level mutations: weigh them up.
        let pb = protobuf_seeds();
        for _ in 0..4 {
            s.push(seed("ConfigMap", pb[0].clone()));
            s.push(seed("Deployment", pb[1].clone()));
        }
        let patches: &[(&str, &str)] = &[
            (
                "ConfigMap",
                r#"{"data":{"k":"v2","new":"n"},"metadata":{"labels":{"app":null}}}"#,
            ),
            (
                "ConfigMap",
                r#"[{"op":"add","path":"/data/z","value":"1"},{"op":"test","path":"/data/k","value":"v"},{"op":"remove","path":"/data/other"}]"#,
            ),
            (
                "ConfigMap",
                r#"[{"op":"move","from":"/data/k","path":"/data/m"},{"op":"copy","from":"/data","path":"/binaryData"},{"op":"replace","path":"/metadata/labels/app","value":"x"}]"#,
            ),
            (
                "ConfigMap",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\ndata:\n  k: applied\n",
            ),
            (
                "Deployment",
                r#"{"spec":{"template":{"spec":{"containers":[{"name":"app","image":"nginx:2"},{"name":"new","image":"x"}]}}}}"#,
            ),
            (
                "Deployment",
                r#"{"spec":{"template":{"spec":{"containers":[{"name":"side","$patch":"delete"}],"$setElementOrder/containers":[{"name":"app"}]}}}}"#,
            ),
            (
                "Deployment",
                r#"{"spec":{"template":{"spec":{"containers":[{"name":"app","env":[{"name":"A","$patch":"delete"},{"name":"C","value":"3"}]}],"tolerations":[{"$patch":"replace"}]}}}}"#,
            ),
            (
                "Deployment",
                r#"{"metadata":{"finalizers":["a"],"$deleteFromPrimitiveList/finalizers":["x.io/y"]},"spec":{"$retainKeys":["replicas"],"replicas":5}}"#,
            ),
            (
                "Deployment",
                r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web"},"spec":{"replicas":4,"template":{"spec":{"containers":[{"name":"app","image":"nginx:3"}]}}}}"#,
            ),
            (
                "Deployment",
                r#"[{"op":"replace","path":"/spec/replicas","value":7},{"op":"add","path":"/spec/template/spec/containers/-","value":{"name":"c3","image":"i"}}]"#,
            ),
            (
                "Pod",
                r#"{"spec":{"containers":[{"name":"c","image":"img2"}],"volumes":[{"name":"v2","emptyDir":{}}]},"metadata":{"ownerReferences":[{"uid":"u1","$patch":"delete"}]}}"#,
            ),
            (
                "Pod",
                r#"{"metadata":{"labels":{"a":"b"},"annotations":{"x":"y"}},"spec":{"activeDeadlineSeconds":5}}"#,
            ),
            (
                "Service",
                r#"{"spec":{"ports":[{"port":80,"name":"web","targetPort":9090},{"port":8443,"name":"alt","protocol":"TCP"}]}}"#,
            ),
            (
                "Service",
                r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"svc"},"spec":{"ports":[{"port":80,"protocol":"TCP","name":"http","targetPort":1}]}}"#,
            ),
            (
                "Namespace",
                r#"{"metadata":{"labels":{"team":"a"}},"spec":{"finalizers":[]}}"#,
            ),
            (
                "Widget",
                r#"{"spec":{"size":4,"tags":["c"],"ports":[{"name":"q","port":2}],"free":{"deep":{"er":[1,2]}}}}"#,
            ),
            (
                "Widget",
                r#"{"apiVersion":"fuzz.kumo.dev/v1","kind":"Widget","metadata":{"name":"w"},"spec":{"color":"blue","ports":[{"name":"p","port":9}]}}"#,
            ),
            (
                "Widget",
                "[{\"op\":\"add\",\"path\":\"/spec/tags/0\",\"value\":\"z\"}]",
            ),
        ];
        for (kind, body) in patches {
            s.push(seed(kind, *body));
        }
        for q in [
            "labelSelector=app%3Dweb%2Ctier+in+(a%2Cb)%2C!x&fieldSelector=metadata.name%3Dx&limit=5&watch=1",
            "app=web,tier notin (a,b),x!=y,!z",
            "metadata.name=x,status.phase!=Running",
            "application/json;as=Table;v=v1;g=meta.k8s.io, application/yaml;q=0.9",
            "/apis/apps/v1/namespaces/default/deployments/web/scale",
        ] {
            s.push(seed("ConfigMap", q));
        }
        s
    }

    /// Values and keys structural mutations put into JSON documents.
    fn palette(rng: &mut Rng) -> Value {
        let deep = (0..1 + rng.below(140)).fold(json!(1), |v, _| json!([v]));
        let values = [
            json!(null),
            json!(true),
            json!(-1),
            json!(2_147_483_648_i64),
            json!(1.5),
            json!(""),
            json!("x"),
            json!("$patch"),
            json!([]),
            json!({}),
            json!({"$patch": "delete"}),
            json!({"$patch": "replace"}),
            json!({"$patch": "merge"}),
            json!([1, "a", {"name": "n"}]),
            json!([{"name": "a"}, {"name": "a"}]),
            json!({"op": "add", "path": "/metadata/labels/x", "value": "1"}),
            json!({"op": "move", "from": "/spec", "path": "/spec/x"}),
            json!({"op": "copy", "from": "/metadata", "path": "/data"}),
            json!({"op": "test", "path": "/", "value": {}}),
            json!("/metadata/name"),
            json!("-"),
            json!("Bad_Name"),
            json!("1Gi"),
            json!("not a quantity"),
            deep,
        ];
        values[rng.below(values.len())].clone()
    }

    const KEYS: &[&str] = &[
        "bogus",
        "$patch",
        "$retainKeys",
        "name",
        "$setElementOrder/containers",
        "$deleteFromPrimitiveList/finalizers",
        "metadata",
        "spec",
        "status",
        "op",
        "path",
        "value",
        "from",
        "apiVersion",
        "kind",
        "managedFields",
        "replicas",
        "containers",
        "labels",
        "ports",
        "port",
        "resourceVersion",
        "namespace",
        "x-kubernetes",
    ];

    /// One structural change somewhere in `v`: replace a value, remove or add a key, duplicate
    /// an array element.
    fn mutate_value(rng: &mut Rng, v: &mut Value, depth: usize) {
        let descend = depth < 12 && rng.chance(70);
        match v {
            Value::Object(m) if !m.is_empty() && descend => {
                let i = rng.below(m.len());
                if let Some((_, child)) = m.iter_mut().nth(i) {
                    mutate_value(rng, child, depth + 1);
                }
            }
            Value::Array(a) if !a.is_empty() && descend => {
                let i = rng.below(a.len());
                mutate_value(rng, &mut a[i], depth + 1);
            }
            Value::Object(m) => match rng.below(3) {
                0 if !m.is_empty() => {
                    let i = rng.below(m.len());
                    if let Some(k) = m.keys().nth(i).cloned() {
                        m.remove(&k);
                    }
                }
                1 => {
                    let k = KEYS[rng.below(KEYS.len())];
                    m.insert(k.to_string(), palette(rng));
                }
                _ => *v = palette(rng),
            },
            Value::Array(a) if !a.is_empty() && rng.chance(50) => {
                let i = rng.below(a.len());
                let dup = a[i].clone();
                a.insert(i, dup);
            }
            other => *other = palette(rng),
        }
    }

    fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
        let mut b = seeds[rng.below(seeds.len())].clone();
        if rng.chance(60)
            && let Ok(mut v) = serde_json::from_slice::<Value>(&b[1..])
        {
            for _ in 0..1 + rng.below(3) {
                mutate_value(rng, &mut v, 0);
            }
            let mut out = vec![b[0]];
            out.extend(v.to_string().into_bytes());
            if rng.chance(20) {
                // A repeated key (parsed objects keep the last one).
                if let Some(i) = out.iter().skip(1).position(|c| *c == b'{') {
                    let k = KEYS[rng.below(KEYS.len())];
                    let dup = format!("\"{k}\":1,\"{k}\":2,");
                    let at = i + 2;
                    if out.get(at) != Some(&b'}') {
                        out.splice(at..at, dup.into_bytes());
                    }
                }
            }
            return out;
        }
        for _ in 0..1 + rng.below(4) {
            let n = b.len();
            match rng.below(10) {
                // Keep the target byte most of the time: flips past it.
                0 if n > 1 => {
                    let i = 1 + rng.below(n - 1);
                    b[i] ^= 1 << rng.below(8);
                }
                1 if n > 1 => {
                    let i = 1 + rng.below(n - 1);
                    b[i] = *b"\0\xff{}[]\":,-0n\x80\x0a\x12"
                        .get(rng.below(17))
                        .unwrap_or(&0);
                }
                2 => b.truncate(1 + rng.below(n.max(1))),
                3 => {
                    let i = rng.below(n + 1).max(1).min(n);
                    let k = 1 + rng.below(8);
                    let extra = rng.bytes(k);
                    b.splice(i..i, extra);
                }
                4 if n > 2 => {
                    let i = 1 + rng.below(n - 1);
                    let j = (i + 1 + rng.below(16)).min(n);
                    b.drain(i..j);
                }
                5 if n > 2 => {
                    let i = 1 + rng.below(n - 1);
                    let j = (i + 1 + rng.below(48)).min(n);
                    let dup = b[i..j].to_vec();
                    b.splice(j..j, dup);
                }
                6 => {
                    // Splice another seed's tail (a patch into an object, YAML into JSON …).
                    let other = &seeds[rng.below(seeds.len())];
                    let cut = rng.below(b.len() + 1).max(1);
                    let from = rng.below(other.len()).max(1).min(other.len());
                    b.truncate(cut);
                    b.extend_from_slice(&other[from..]);
                }
                7 if n > 1 => {
                    // A JSON token where a value was.
                    let tokens: [&[u8]; 12] = [
                        b"null",
                        b"true",
                        b"-1",
                        b"1e999",
                        b"2147483648",
                        b"\"\"",
                        b"[]",
                        b"{}",
                        b"\"$patch\"",
                        b"\"$retainKeys\"",
                        b"[[[[[[[[",
                        b"\"\\ud800\"",
                    ];
                    let i = 1 + rng.below(n - 1);
                    let j = (i + rng.below(8)).min(n);
                    b.splice(i..j, tokens[rng.below(tokens.len())].iter().copied());
                }
                8 if !b.is_empty() => b[0] = rng.next() as u8,
                9 => {
                    // Deep nesting.
                    let depth = 1 + rng.below(300);
                    let i = rng.below(n + 1).max(1).min(n);
                    let (open, close) = if rng.chance(50) {
                        (b"{\"a\":".as_slice(), b"}".as_slice())
                    } else {
                        (b"[".as_slice(), b"]".as_slice())
                    };
                    let mut nest = open.repeat(depth);
                    nest.extend_from_slice(b"1");
                    nest.extend(close.repeat(depth));
                    b.splice(i..i, nest);
                }
                _ => {}
            }
        }
        b
    }

    /// Writes the seeds as a starting corpus for the real fuzzer:
    /// `KUMO_FUZZ_SEED_DIR=fuzz/corpus/apiserver cargo test -p kumo-apiserver fuzzing_write_seeds -- --ignored`
    #[test]
    #[ignore]
    fn fuzzing_write_seeds() {
        let dir = std::env::var("KUMO_FUZZ_SEED_DIR").expect("set KUMO_FUZZ_SEED_DIR");
        std::fs::create_dir_all(&dir).expect("create the corpus dir");
        for (i, s) in seeds().iter().enumerate() {
            let path = std::path::Path::new(&dir).join(format!("seed-{i:03}"));
            std::fs::write(path, s).expect("write a seed");
        }
    }

    /// The seeds reach what they were written for.
    #[test]
    fn fuzzing_seeds_are_valid() {
        let seeds = seeds();
        let mut all = Reached::default();
        for s in &seeds {
            let r = run(s);
            all.json |= r.json;
            all.yaml |= r.yaml;
            all.protobuf |= r.protobuf;
            all.created |= r.created;
            all.json_patched |= r.json_patched;
            all.merge_patched |= r.merge_patched;
            all.smp_patched |= r.smp_patched;
            all.applied |= r.applied;
            all.patched_valid |= r.patched_valid;
            all.selector |= r.selector;
            all.cached |= r.cached;
        }
        assert!(
            all.json
                && all.yaml
                && all.protobuf
                && all.created
                && all.json_patched
                && all.merge_patched
                && all.smp_patched
                && all.applied
                && all.patched_valid
                && all.selector
                && all.cached,
            "{all:?}"
        );
        for pb in protobuf_seeds() {
            let r = run(&[&[target_index("ConfigMap")][..], &pb].concat());
            assert!(r.protobuf, "protobuf seed decodes");
        }
        // Each live object takes an apply of part of itself, and re-creating it from its JSON.
        for t in targets() {
            let r = run(&seed(&t.def.kind, applied_subset(&t.live).to_string()));
            assert!(r.applied && r.patched_valid, "{}: {r:?}", t.def.kind);
            let r = run(&seed(&t.def.kind, t.live.to_string()));
            assert!(r.json && r.created, "{}: {r:?}", t.def.kind);
        }
    }

    /// Inputs that used to be 500s or that guard limits: SSA typed-patch errors and strategic
    /// merge patch directive errors are 400s, patch results deeper than what the store can read
    /// back are refused, YAML alias bombs and deep nesting are bounded.
    #[test]
    fn fuzzing_known_inputs() {
        let cm = target_index("ConfigMap");
        let deploy = target_index("Deployment");
        let cases: Vec<(u8, String)> = vec![
            (deploy, r#"{"spec":{"template":{"spec":{"containers":[{"$patch":"bogus"}]}}}}"#.into()),
            (cm, r#"{"$patch":"bogus"}"#.into()),
            (deploy, r#"{"spec":{"template":{"spec":{"containers":[1,2]}}}}"#.into()),
            (deploy, r#"{"metadata":{"finalizers":[{"a":1}]},"$setElementOrder/finalizers":[[1]]}"#.into()),
            (deploy, r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web"},"spec":{"template":{"spec":{"containers":[{"image":"x"}]}}}}"#.into()),
            (cm, format!("{}1{}", "[".repeat(200), "]".repeat(200))),
            (cm, format!("{{\"data\":{}1{}}}", "{\"a\":".repeat(126), "}".repeat(126))),
            (cm, "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n".into()),
            (cm, format!("{}1", "- ".repeat(10_000))),
        ];
        for (t, body) in cases {
            let mut input = vec![t];
            input.extend(body.as_bytes());
            let r = std::panic::catch_unwind(|| run(&input));
            assert!(r.is_ok(), "panicked on {body:.200}");
        }
        // The SSA typed-patch error is a 400 with upstream's message.
        let t = &targets()[usize::from(deploy)];
        let body = br#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web"},"spec":{"template":{"spec":{"containers":[{"image":"x"}]}}}}"#;
        let e = kumo_apimachinery::managed::apply(
            Some(&t.live),
            &http::decode_apply(body).expect("decodes"),
            "m",
            false,
            "apps/v1",
            "Deployment",
            NOW,
        )
        .map_err(http::bad_patch)
        .expect_err("a list element without its key");
        assert_eq!((e.code, e.reason.as_str()), (400, "BadRequest"), "{e:?}");
        assert!(
            e.message.starts_with("failed to create typed patch object"),
            "{e:?}"
        );
        let e = http::apply_patch(
            PatchKind::Strategic,
            &t.live,
            br#"{"$patch":"bogus"}"#,
            "apps/v1",
            "Deployment",
        )
        .map_err(http::bad_patch)
        .expect_err("unknown directive");
        assert_eq!((e.code, e.reason.as_str()), (400, "BadRequest"), "{e:?}");
    }

    /// Fixed-seed inputs through the fuzz entry point (default 30,000; `KUMO_FUZZ_ITERATIONS`
    /// for more): random bytes, structural mutations of valid JSON bodies (values replaced,
    /// keys removed, added and repeated, elements duplicated, deep nesting) and byte-level
    /// mutations of every seed; each path must be reached by a fair share of them.
    #[test]
    fn fuzzing_decode_and_patch_survives_many_inputs() {
        let seeds = seeds();
        let mut rng = Rng(0x6b75_6d6f_6170_6973);
        let n: usize = std::env::var("KUMO_FUZZ_ITERATIONS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(30_000);
        let mut totals = [0usize; 11];
        for i in 0..n {
            let input = if rng.chance(10) {
                let max = if rng.chance(90) { 64 } else { 2048 };
                let len = rng.below(max);
                rng.bytes(len)
            } else {
                mutate(&mut rng, &seeds)
            };
            let r = std::panic::catch_unwind(|| run(&input)).unwrap_or_else(|_| {
                panic!("input #{i} panicked: {:?}", String::from_utf8_lossy(&input))
            });
            let hits = [
                r.json,
                r.yaml,
                r.protobuf,
                r.created,
                r.json_patched,
                r.merge_patched,
                r.smp_patched,
                r.applied,
                r.patched_valid,
                r.selector,
                r.cached,
            ];
            for (t, h) in totals.iter_mut().zip(hits) {
                *t += usize::from(h);
            }
        }
        let names = [
            "json decoded",
            "yaml decoded",
            "protobuf decoded",
            "create pipeline passed",
            "json patch applied",
            "merge patch applied",
            "strategic merge patch applied",
            "server-side apply applied",
            "patched object valid",
            "selector parsed",
            "sparse cache parse taken",
        ];
        let report: Vec<String> = names
            .iter()
            .zip(totals)
            .map(|(name, t)| format!("{name}: {t}"))
            .collect();
        // Each path must see a fair share of the inputs (0.2% at least).
        for (name, t) in names.iter().zip(totals) {
            assert!(t * 500 >= n, "too few inputs reach {name}: {report:?}");
        }
        if std::env::var_os("KUMO_FUZZ_REPORT").is_some() {
            panic!("{report:?}");
        }
    }
}
