//! Server-side apply tests, modelled on upstream's behaviour and real kubectl flows.
//!
//! Most tests pass their own list semantics (the ones `patchmeta::list_meta` publishes for
//! the built-in types) so they do not depend on that table being filled in; the few that go
//! through [`apply`]/[`update_managed_fields`] assert only what holds either way.

use serde_json::{Value, json};

use super::*;
use crate::patchmeta::{ListKind, ListMeta};

const T0: &str = "2024-01-01T00:00:00Z";
const T1: &str = "2024-01-01T00:01:00Z";
const T2: &str = "2024-01-01T00:02:00Z";
const T3: &str = "2024-01-01T00:03:00Z";

fn map(keys: &[&'static str]) -> Option<ListMeta> {
    Some(ListMeta {
        kind: ListKind::Map(keys.to_vec()),
        smp_merge: true,
        retain_keys: false,
    })
}

/// The list semantics upstream's OpenAPI gives these paths.
fn lists(path: &[&str]) -> Option<ListMeta> {
    match path {
        [.., "containers"] | [.., "initContainers"] => map(&["name"]),
        [.., "containers", "env"] => map(&["name"]),
        [.., "containers", "ports"] => map(&["containerPort", "protocol"]),
        [.., "volumes"] => map(&["name"]),
        ["metadata", "ownerReferences"] => map(&["uid"]),
        ["spec", "ports"] => map(&["port", "protocol"]),
        ["metadata", "finalizers"] => Some(ListMeta {
            kind: ListKind::Set,
            smp_merge: true,
            retain_keys: false,
        }),
        _ => None,
    }
}

fn opts<'a>(manager: &'a str, force: bool, now: &'a str) -> ApplyOptions<'a> {
    ApplyOptions {
        manager,
        force,
        api_version: "apps/v1",
        kind: "Deployment",
        subresource: None,
        now,
        lists: Some(&lists),
        reset: None,
    }
}

fn ssa(
    live: Option<&Value>,
    cfg: &Value,
    manager: &str,
    force: bool,
    now: &str,
) -> Result<Value, ApiError> {
    apply_with(live, cfg, &opts(manager, force, now))
}

fn upd(old: Option<&Value>, new: &Value, manager: &str, now: &str) -> Value {
    upd_sub(old, new, manager, None, now)
}

fn upd_sub(old: Option<&Value>, new: &Value, manager: &str, sub: Option<&str>, now: &str) -> Value {
    update_managed_fields_with(
        old,
        new,
        &UpdateOptions {
            manager,
            operation: "Update",
            api_version: "apps/v1",
            subresource: sub,
            kind: None,
            now,
            lists: Some(&lists),
            reset: None,
        },
    )
}

fn deployment(image: &str, replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "nginx", "namespace": "default", "labels": {"app": "nginx"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "nginx"}},
            "template": {
                "metadata": {"labels": {"app": "nginx"}},
                "spec": {"containers": [{
                    "name": "nginx",
                    "image": image,
                    "ports": [{"containerPort": 80}]
                }]}
            }
        }
    })
}

/// What the registry does after the field manager on a create: identity, defaults, status.
fn persist(mut obj: Value) -> Value {
    if let Some(m) = obj["metadata"].as_object_mut() {
        m.entry("uid")
            .or_insert(json!("6f1c1f9e-0000-4000-8000-000000000001"));
        m.insert("resourceVersion".into(), json!("100"));
        m.entry("creationTimestamp").or_insert(json!(T0));
        m.entry("generation").or_insert(json!(1));
    }
    if obj["kind"] == "Deployment" {
        let replicas = obj["spec"]["replicas"].clone();
        if let Some(spec) = obj["spec"].as_object_mut() {
            spec.entry("revisionHistoryLimit").or_insert(json!(10));
            spec.entry("progressDeadlineSeconds").or_insert(json!(600));
            spec.entry("strategy").or_insert(json!({
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}
            }));
        }
        if let Some(cs) = obj["spec"]["template"]["spec"]["containers"].as_array_mut() {
            for c in cs {
                if let Some(c) = c.as_object_mut() {
                    c.entry("imagePullPolicy").or_insert(json!("IfNotPresent"));
                    c.entry("terminationMessagePath")
                        .or_insert(json!("/dev/termination-log"));
                    if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
                        for p in ports {
                            if let Some(p) = p.as_object_mut() {
                                p.entry("protocol").or_insert(json!("TCP"));
                            }
                        }
                    }
                }
            }
        }
        if let Some(o) = obj.as_object_mut() {
            o.entry("status").or_insert(json!({"replicas": replicas}));
        }
    }
    obj
}

fn entries(obj: &Value) -> Vec<ManagedFieldsEntry> {
    decode_managed_fields(obj).expect("managed fields decode")
}

fn entry(obj: &Value, manager: &str) -> Option<ManagedFieldsEntry> {
    entries(obj).into_iter().find(|e| e.manager == manager)
}

fn fields_of(obj: &Value, manager: &str) -> String {
    entry(obj, manager)
        .map(|e| e.fields.to_fields_v1_string())
        .unwrap_or_default()
}

fn owns(obj: &Value, manager: &str, path: &str) -> bool {
    entry(obj, manager).is_some_and(|e| e.fields.paths().iter().any(|p| p.to_string() == path))
}

fn image(obj: &Value) -> &Value {
    &obj["spec"]["template"]["spec"]["containers"][0]["image"]
}

// ---------------------------------------------------------------- fieldsV1 and paths

#[test]
fn fields_v1_round_trips_upstream_bytes() {
    let text = r#"{"f:metadata":{"f:labels":{"f:app":{}}},"f:spec":{"f:containers":{"k:{\"name\":\"nginx\"}":{".":{},"f:image":{}}}}}"#;
    let set = FieldSet::parse_fields_v1(text).expect("parse");
    assert_eq!(set.to_fields_v1_string(), text);
    let paths: Vec<String> = set.paths().iter().map(ToString::to_string).collect();
    assert_eq!(
        paths,
        vec![
            ".metadata.labels.app",
            ".spec.containers[name=\"nginx\"]",
            ".spec.containers[name=\"nginx\"].image",
        ]
    );
    // Through a serde_json value too.
    let v: Value = serde_json::from_str(text).expect("json");
    assert_eq!(FieldSet::from_fields_v1(&v).expect("parse"), set);
    assert_eq!(
        FieldSet::from_fields_v1(&set.to_fields_v1()).expect("reparse"),
        set
    );
}

#[test]
fn fields_v1_orders_dot_fields_keys_values_indices() {
    let set = FieldSet::parse_fields_v1(
        r#"{"i:1":{},"v:\"b\"":{},"k:{\"port\":100}":{},"k:{\"port\":80}":{},"f:z":{},"f:a":{".":{},"f:x":{}},"v:3":{},"i:0":{}}"#,
    )
    .expect("parse");
    assert_eq!(
        set.to_fields_v1_string(),
        r#"{"f:a":{".":{},"f:x":{}},"f:z":{},"k:{\"port\":80}":{},"k:{\"port\":100}":{},"v:3":{},"v:\"b\"":{},"i:0":{},"i:1":{}}"#
    );
}

#[test]
fn fields_v1_key_encoding_is_go_json() {
    let pe = PathElement::Key(vec![
        ("containerPort".into(), json!(80)),
        ("protocol".into(), json!("TCP")),
    ]);
    assert_eq!(
        pe.to_fields_v1_key(),
        r#"k:{"containerPort":80,"protocol":"TCP"}"#
    );
    assert_eq!(pe.to_string(), r#"[containerPort=80,protocol="TCP"]"#);
    let v = PathElement::Value(json!("a<b>&c"));
    assert_eq!(v.to_fields_v1_key(), r#"v:"a\u003cb\u003e\u0026c""#);
    assert_eq!(v.to_string(), r#"[="a<b>&c"]"#);
    assert_eq!(PathElement::Index(3).to_fields_v1_key(), "i:3");
    assert_eq!(PathElement::Index(3).to_string(), "[3]");
    assert_eq!(PathElement::Value(json!(1.5)).to_string(), "[=1.5]");
    assert_eq!(PathElement::Value(json!(1e7)).to_string(), "[=1e+07]");
    // Keys come back sorted whatever order the JSON has.
    let parsed = PathElement::from_fields_v1_key(r#"k:{"protocol":"TCP","containerPort":80}"#)
        .expect("ok")
        .expect("known");
    assert_eq!(parsed, pe);
}

#[test]
fn fields_v1_parse_errors_and_unknown_types() {
    assert!(FieldSet::parse_fields_v1(r#"{"x":{}}"#).is_err());
    assert!(FieldSet::parse_fields_v1(r#"{"fx":{}}"#).is_err());
    assert!(FieldSet::parse_fields_v1(r#"{"k:notjson":{}}"#).is_err());
    assert!(FieldSet::parse_fields_v1(r#"{"i:x":{}}"#).is_err());
    assert!(FieldSet::parse_fields_v1(r#"{"f:a":3}"#).is_err());
    // Unknown element types are skipped, like upstream.
    let s = FieldSet::parse_fields_v1(r#"{"z:whatever":{},"f:a":{}}"#).expect("parse");
    assert_eq!(s.to_fields_v1_string(), r#"{"f:a":{}}"#);
    // null and {} are both leaves.
    let s = FieldSet::parse_fields_v1(r#"{"f:a":null}"#).expect("parse");
    assert!(s.has(&[PathElement::Field("a".into())]));
    assert_eq!(
        FieldSet::parse_fields_v1("{}").expect("empty"),
        FieldSet::new()
    );
    // Too deep is an error, not a stack overflow.
    let mut deep = json!({});
    for _ in 0..(MAX_DEPTH + 20) {
        deep = json!({ "f:a": deep });
    }
    assert!(FieldSet::from_fields_v1(&deep).is_err());
    let mut ok = json!({});
    for _ in 0..(MAX_DEPTH - 2) {
        ok = json!({ "f:a": ok });
    }
    assert_eq!(
        FieldSet::from_fields_v1(&ok).expect("parse").paths().len(),
        1
    );
}

#[test]
fn set_operations_follow_upstream() {
    let f = |s: &str| PathElement::Field(s.to_string());
    let a = FieldSet::from_paths([vec![f("a"), f("b")], vec![f("a"), f("c")], vec![f("d")]]);
    let b = FieldSet::from_paths([vec![f("a"), f("b")], vec![f("e")]]);
    assert_eq!(
        a.union(&b).to_fields_v1_string(),
        r#"{"f:a":{"f:b":{},"f:c":{}},"f:d":{},"f:e":{}}"#
    );
    assert_eq!(
        a.intersection(&b).to_fields_v1_string(),
        r#"{"f:a":{"f:b":{}}}"#
    );
    assert_eq!(
        a.difference(&b).to_fields_v1_string(),
        r#"{"f:a":{"f:c":{}},"f:d":{}}"#
    );
    // A member of the other set removes everything under it only recursively.
    let parent = FieldSet::from_paths([vec![f("a")]]);
    assert_eq!(a.difference(&parent), a);
    assert_eq!(
        a.recursive_difference(&parent).to_fields_v1_string(),
        r#"{"f:d":{}}"#
    );
    assert!(a.has(&[f("a"), f("c")]));
    assert!(!a.has(&[f("a")]));
    assert!(FieldSet::new().is_empty());
    assert_eq!(
        a.ensure_named_fields_are_members().to_fields_v1_string(),
        r#"{"f:a":{".":{},"f:b":{},"f:c":{}},"f:d":{}}"#
    );
}

#[test]
fn value_order_matches_upstream() {
    use std::cmp::Ordering;
    assert_eq!(compare_values(&json!(80), &json!(100)), Ordering::Less);
    assert_eq!(compare_values(&json!(80), &json!(80.0)), Ordering::Equal);
    assert_eq!(compare_values(&json!(1), &json!("a")), Ordering::Less);
    assert_eq!(compare_values(&json!("a"), &json!(true)), Ordering::Less);
    assert_eq!(compare_values(&json!(true), &json!([])), Ordering::Less);
    assert_eq!(compare_values(&json!([]), &json!({})), Ordering::Less);
    assert_eq!(compare_values(&json!({}), &json!(null)), Ordering::Less);
    assert!(values_equal(
        &json!({"a": [1, 2.0]}),
        &json!({"a": [1.0, 2]})
    ));
    assert_eq!(value_to_string(&json!("x\"y")), r#""x\"y""#);
}

// ---------------------------------------------------------------- kubectl apply --server-side

const NGINX_APPLY_FIELDS: &str = r#"{"f:metadata":{"f:labels":{"f:app":{}}},"f:spec":{"f:replicas":{},"f:selector":{},"f:template":{"f:metadata":{"f:labels":{"f:app":{}}},"f:spec":{"f:containers":{"k:{\"name\":\"nginx\"}":{".":{},"f:image":{},"f:name":{},"f:ports":{"k:{\"containerPort\":80,\"protocol\":\"TCP\"}":{".":{},"f:containerPort":{}}}}}}}}}"#;

#[test]
fn server_side_apply_creates_with_an_apply_entry() {
    let cfg = deployment("nginx:1.14.2", 1);
    let obj = ssa(None, &cfg, "kubectl", false, T1).expect("apply");
    assert_eq!(obj["spec"], cfg["spec"]);
    assert_eq!(obj["metadata"]["name"], "nginx");
    let mf = &obj["metadata"]["managedFields"];
    assert_eq!(mf.as_array().map(Vec::len), Some(1));
    assert_eq!(mf[0]["manager"], "kubectl");
    assert_eq!(mf[0]["operation"], "Apply");
    assert_eq!(mf[0]["apiVersion"], "apps/v1");
    assert_eq!(mf[0]["time"], T1);
    assert_eq!(mf[0]["fieldsType"], "FieldsV1");
    assert!(mf[0].get("subresource").is_none());
    assert_eq!(fields_of(&obj, "kubectl"), NGINX_APPLY_FIELDS);
}

#[test]
fn server_side_apply_updates_the_image_and_keeps_defaults() {
    let live =
        persist(ssa(None, &deployment("nginx:1.14.2", 1), "kubectl", false, T1).expect("create"));
    let obj = ssa(
        Some(&live),
        &deployment("nginx:1.16.1", 1),
        "kubectl",
        false,
        T2,
    )
    .expect("apply");
    assert_eq!(image(&obj), "nginx:1.16.1");
    // Defaults and status nobody applied stay.
    assert_eq!(obj["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(obj["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(
        obj["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
        "IfNotPresent"
    );
    assert_eq!(obj["status"], json!({"replicas": 1}));
    assert_eq!(obj["metadata"]["uid"], live["metadata"]["uid"]);
    let e = entry(&obj, "kubectl").expect("entry");
    assert_eq!(e.time.as_deref(), Some(T2));
    assert_eq!(e.fields.to_fields_v1_string(), NGINX_APPLY_FIELDS);
    assert_eq!(entries(&obj).len(), 1);
}

#[test]
fn reapplying_the_same_config_keeps_the_time() {
    let live =
        persist(ssa(None, &deployment("nginx:1.14.2", 1), "kubectl", false, T1).expect("create"));
    let obj = ssa(
        Some(&live),
        &deployment("nginx:1.14.2", 1),
        "kubectl",
        false,
        T2,
    )
    .expect("apply");
    assert_eq!(
        entry(&obj, "kubectl").and_then(|e| e.time).as_deref(),
        Some(T1)
    );
    assert_eq!(
        without(&obj, "managedFields"),
        without(&live, "managedFields")
    );
}

fn without(obj: &Value, meta_key: &str) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o["metadata"].as_object_mut() {
        m.remove(meta_key);
    }
    o
}

fn with_env(env: Value) -> Value {
    let mut d = deployment("nginx:1.14.2", 1);
    d["spec"]["template"]["spec"]["containers"][0]["env"] = env;
    d
}

#[test]
fn removing_an_env_var_from_the_config_removes_it() {
    let live = persist(
        ssa(
            None,
            &with_env(json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}])),
            "kubectl",
            false,
            T1,
        )
        .expect("create"),
    );
    // A controller adds its own variable with an update.
    let mut edited = live.clone();
    if let Some(env) = edited["spec"]["template"]["spec"]["containers"][0]["env"].as_array_mut() {
        env.push(json!({"name": "C", "value": "3"}));
    }
    let live = upd(Some(&live), &edited, "controller", T2);
    assert_eq!(
        fields_of(&live, "controller"),
        r#"{"f:spec":{"f:template":{"f:spec":{"f:containers":{"k:{\"name\":\"nginx\"}":{"f:env":{"k:{\"name\":\"C\"}":{".":{},"f:name":{},"f:value":{}}}}}}}}}"#
    );
    let obj = ssa(
        Some(&live),
        &with_env(json!([{"name": "A", "value": "1"}])),
        "kubectl",
        false,
        T3,
    )
    .expect("apply");
    assert_eq!(
        obj["spec"]["template"]["spec"]["containers"][0]["env"],
        json!([{"name": "A", "value": "1"}, {"name": "C", "value": "3"}])
    );
    assert!(!owns(
        &obj,
        "kubectl",
        r#".spec.template.spec.containers[name="nginx"].env[name="B"]"#
    ));
    assert!(owns(
        &obj,
        "controller",
        r#".spec.template.spec.containers[name="nginx"].env[name="C"].value"#
    ));
}

#[test]
fn a_field_the_applier_stops_applying_is_removed_unless_someone_else_owns_it() {
    let mut cfg = deployment("nginx:1.14.2", 1);
    cfg["metadata"]["labels"] = json!({"app": "nginx", "tier": "web", "team": "a"});
    let live = persist(ssa(None, &cfg, "kubectl", false, T1).expect("create"));
    // Another applier shares `team`.
    let other = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "nginx", "labels": {"team": "a"}}
    });
    let live = ssa(Some(&live), &other, "labeler", false, T2).expect("labeler");
    assert!(owns(&live, "labeler", ".metadata.labels.team"));
    assert!(owns(&live, "kubectl", ".metadata.labels.team"));
    let obj = ssa(
        Some(&live),
        &deployment("nginx:1.14.2", 1),
        "kubectl",
        false,
        T3,
    )
    .expect("apply");
    assert_eq!(
        obj["metadata"]["labels"],
        json!({"app": "nginx", "team": "a"})
    );
    // Dropping replicas from the config removes it (the registry defaults it again).
    let mut no_replicas = deployment("nginx:1.14.2", 1);
    if let Some(spec) = no_replicas["spec"].as_object_mut() {
        spec.remove("replicas");
    }
    let obj = ssa(Some(&obj), &no_replicas, "kubectl", false, T3).expect("apply");
    assert!(obj["spec"].get("replicas").is_none());
    assert_eq!(obj["spec"]["revisionHistoryLimit"], 10);
}

// ---------------------------------------------------------------- conflicts

fn replicas_only(replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "nginx"},
        "spec": {"replicas": replicas}
    })
}

#[test]
fn two_appliers_conflict_on_replicas() {
    let live = persist(ssa(None, &deployment("nginx:1.14.2", 1), "m1", false, T1).expect("create"));
    let err = ssa(Some(&live), &replicas_only(3), "m2", false, T2).expect_err("conflict");
    assert_eq!(err.code, 409);
    assert_eq!(err.reason, "Conflict");
    assert_eq!(
        err.message,
        r#"Apply failed with 1 conflict: conflict with "m1": .spec.replicas"#
    );
    assert_eq!(err.causes.len(), 1);
    assert_eq!(err.causes[0].reason, "FieldManagerConflict");
    assert_eq!(err.causes[0].field, ".spec.replicas");
    assert_eq!(err.causes[0].message, r#"conflict with "m1""#);
    let status = err.to_status();
    assert_eq!(status["code"], 409);
    assert_eq!(status["details"]["causes"][0]["field"], ".spec.replicas");
    assert!(status["details"].get("name").is_none());
    // The same value is no conflict: both own it.
    let shared = ssa(Some(&live), &replicas_only(1), "m2", false, T2).expect("shared");
    assert!(owns(&shared, "m1", ".spec.replicas"));
    assert!(owns(&shared, "m2", ".spec.replicas"));
}

#[test]
fn force_moves_ownership_to_the_applier() {
    let live = persist(ssa(None, &deployment("nginx:1.14.2", 1), "m1", false, T1).expect("create"));
    let obj = ssa(Some(&live), &replicas_only(3), "m2", true, T2).expect("force");
    assert_eq!(obj["spec"]["replicas"], 3);
    assert!(owns(&obj, "m2", ".spec.replicas"));
    assert!(!owns(&obj, "m1", ".spec.replicas"));
    assert!(owns(
        &obj,
        "m1",
        r#".spec.template.spec.containers[name="nginx"].image"#
    ));
    // m1 re-applying its old value now conflicts with m2.
    let err =
        ssa(Some(&obj), &deployment("nginx:1.14.2", 1), "m1", false, T3).expect_err("conflict");
    assert_eq!(
        err.message,
        r#"Apply failed with 1 conflict: conflict with "m2": .spec.replicas"#
    );
    // A manager that loses everything disappears.
    let only = persist(ssa(None, &replicas_only(1), "solo", false, T1).expect("create"));
    let taken = ssa(Some(&only), &replicas_only(2), "thief", true, T2).expect("force");
    assert!(entry(&taken, "solo").is_none());
}

#[test]
fn conflict_with_an_updater_names_its_api_version() {
    let created = upd(
        None,
        &persist(deployment("nginx:1.14.2", 1)),
        "kubectl-client-side-apply",
        T1,
    );
    let err =
        ssa(Some(&created), &replicas_only(2), "my-manager", false, T2).expect_err("conflict");
    assert_eq!(
        err.message,
        r#"Apply failed with 1 conflict: conflict with "kubectl-client-side-apply" using apps/v1: .spec.replicas"#
    );
    assert_eq!(err.causes[0].field, ".spec.replicas");
    assert_eq!(
        err.causes[0].message,
        r#"conflict with "kubectl-client-side-apply" using apps/v1"#
    );
}

#[test]
fn several_conflicts_are_grouped_by_manager() {
    let mut base = persist(deployment("nginx:1.14.2", 1));
    base["spec"]["minReadySeconds"] = json!(5);
    let created = upd(None, &base, "m", T1);
    let mut cfg = replicas_only(2);
    cfg["spec"]["minReadySeconds"] = json!(10);
    let err = ssa(Some(&created), &cfg, "a", false, T2).expect_err("conflicts");
    assert_eq!(
        err.message,
        "Apply failed with 2 conflicts: conflicts with \"m\" using apps/v1:\n- .spec.minReadySeconds\n- .spec.replicas"
    );
    assert_eq!(err.causes.len(), 2);
    assert_eq!(err.causes[0].field, ".spec.minReadySeconds");
    assert_eq!(err.causes[1].field, ".spec.replicas");

    // Two managers: sorted by their identifiers.
    let live = persist(ssa(None, &replicas_only(1), "m1", false, T1).expect("create"));
    let mut paused = live.clone();
    paused["spec"]["paused"] = json!(true);
    let live = upd(Some(&live), &paused, "m2", T2);
    let mut cfg = replicas_only(5);
    cfg["spec"]["paused"] = json!(false);
    let err = ssa(Some(&live), &cfg, "a", false, T3).expect_err("conflicts");
    assert_eq!(
        err.message,
        "Apply failed with 2 conflicts: conflicts with \"m1\":\n- .spec.replicas\nconflicts with \"m2\" using apps/v1:\n- .spec.paused"
    );
    let forced = ssa(Some(&live), &cfg, "a", true, T3).expect("force");
    assert!(entry(&forced, "m1").is_none());
    assert!(entry(&forced, "m2").is_none());
    assert!(owns(&forced, "a", ".spec.paused"));
}

#[test]
fn an_untracked_object_is_owned_by_before_first_apply() {
    let mut live = persist(deployment("nginx:1.14.2", 1));
    if let Some(m) = live["metadata"].as_object_mut() {
        m.remove("managedFields");
    }
    let err = ssa(Some(&live), &replicas_only(2), "m", false, T1).expect_err("conflict");
    assert_eq!(
        err.message,
        r#"Apply failed with 1 conflict: conflict with "before-first-apply" using apps/v1: .spec.replicas"#
    );
    let ok = ssa(Some(&live), &replicas_only(1), "m", false, T1).expect("same value");
    assert!(owns(&ok, "before-first-apply", ".spec.replicas"));
    assert!(owns(&ok, "m", ".spec.replicas"));
}

// ---------------------------------------------------------------- client-side apply upgrade

/// `kubectl apply` (client side): POST with the last-applied annotation, manager
/// `kubectl-client-side-apply`.
fn client_side_apply_create(cfg: &Value) -> Value {
    let mut obj = cfg.clone();
    let last = format!("{}\n", serde_json::to_string(cfg).expect("json"));
    obj["metadata"]["annotations"] = json!({ LAST_APPLIED_ANNOTATION: last });
    upd(None, &persist(obj), "kubectl-client-side-apply", T1)
}

#[test]
fn kubectl_server_side_apply_takes_over_from_client_side_apply() {
    let live = client_side_apply_create(&deployment("nginx:1.14.2", 1));
    assert_eq!(
        entry(&live, "kubectl-client-side-apply").map(|e| e.operation),
        Some("Update".into())
    );
    let cfg = deployment("nginx:1.16.1", 2);
    let obj = ssa(Some(&live), &cfg, "kubectl", false, T2).expect("upgrade without conflicts");
    assert_eq!(image(&obj), "nginx:1.16.1");
    assert_eq!(obj["spec"]["replicas"], 2);
    assert!(owns(&obj, "kubectl", ".spec.replicas"));
    assert!(!owns(&obj, "kubectl-client-side-apply", ".spec.replicas"));
    // Fields it did not change stay shared.
    assert!(owns(
        &obj,
        "kubectl-client-side-apply",
        ".metadata.labels.app"
    ));
    // The annotation follows the applied configuration, as Go encodes it.
    let mut expect = String::new();
    super::fieldpath::go_json(&cfg, &mut expect);
    expect.push('\n');
    assert_eq!(
        obj["metadata"]["annotations"][LAST_APPLIED_ANNOTATION],
        Value::String(expect)
    );
}

#[test]
fn another_manager_conflicts_with_client_side_apply() {
    let live = client_side_apply_create(&deployment("nginx:1.14.2", 1));
    let err = ssa(Some(&live), &replicas_only(2), "my-manager", false, T2).expect_err("conflict");
    assert_eq!(
        err.message,
        r#"Apply failed with 1 conflict: conflict with "kubectl-client-side-apply" using apps/v1: .spec.replicas"#
    );
}

#[test]
fn kubectl_still_conflicts_when_the_live_object_drifted() {
    let live = client_side_apply_create(&deployment("nginx:1.14.2", 1));
    // An autoscaler scaled through /scale; the annotation still says 1.
    let mut scaled = live.clone();
    scaled["spec"]["replicas"] = json!(4);
    let live = upd_sub(
        Some(&live),
        &scaled,
        "kube-controller-manager",
        Some("scale"),
        T2,
    );
    assert!(owns(&live, "kube-controller-manager", ".spec.replicas"));
    let err = ssa(
        Some(&live),
        &deployment("nginx:1.16.1", 1),
        "kubectl",
        false,
        T3,
    )
    .expect_err("replicas conflict stays");
    assert_eq!(
        err.message,
        r#"Apply failed with 1 conflict: conflict with "kube-controller-manager" with subresource "scale" using apps/v1: .spec.replicas"#
    );
    // The image conflict with client-side apply was allowed (its annotation matched).
    assert_eq!(err.causes.len(), 1);
}

#[test]
fn last_applied_annotation_is_dropped_when_too_large() {
    let live = client_side_apply_create(&deployment("nginx:1.14.2", 1));
    let mut cfg = deployment("nginx:1.14.2", 1);
    cfg["metadata"]["annotations"] = json!({"big": "x".repeat(200 * 1024)});
    let obj = ssa(Some(&live), &cfg, "kubectl", false, T2).expect("apply");
    assert!(
        obj["metadata"]["annotations"]
            .get(LAST_APPLIED_ANNOTATION)
            .is_none()
    );
    assert!(obj["metadata"]["annotations"].get("big").is_some());
}

// ---------------------------------------------------------------- updates

const NGINX_CREATE_FIELDS: &str = r#"{"f:metadata":{"f:labels":{".":{},"f:app":{}}},"f:spec":{"f:replicas":{},"f:selector":{},"f:template":{"f:metadata":{"f:labels":{".":{},"f:app":{}}},"f:spec":{"f:containers":{"k:{\"name\":\"nginx\"}":{".":{},"f:image":{},"f:name":{},"f:ports":{".":{},"k:{\"containerPort\":80,\"protocol\":\"TCP\"}":{".":{},"f:containerPort":{}}}}}}}}}"#;

#[test]
fn create_records_every_field_as_an_update() {
    let obj = upd(None, &deployment("nginx:1.14.2", 1), "kubectl-create", T1);
    let e = entry(&obj, "kubectl-create").expect("entry");
    assert_eq!(e.operation, "Update");
    assert_eq!(e.api_version, "apps/v1");
    assert_eq!(e.time.as_deref(), Some(T1));
    assert_eq!(e.fields.to_fields_v1_string(), NGINX_CREATE_FIELDS);

    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "c", "namespace": "default"}, "data": {"a": "1"}});
    let obj = update_managed_fields(None, &cm, "kubectl-create", "Update", "v1", None, T1);
    assert_eq!(
        fields_of(&obj, "kubectl-create"),
        r#"{"f:data":{".":{},"f:a":{}}}"#
    );
    assert_eq!(obj["data"], cm["data"]);
}

#[test]
fn an_update_records_only_the_fields_it_changed() {
    let live = persist(upd(
        None,
        &deployment("nginx:1.14.2", 1),
        "kubectl-create",
        T1,
    ));
    let mut edited = live.clone();
    edited["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.16.1");
    edited["metadata"]["labels"]["tier"] = json!("web");
    edited["status"] = json!({"replicas": 7});
    let obj = upd(Some(&live), &edited, "kubectl-edit", T2);
    let e = entry(&obj, "kubectl-edit").expect("entry");
    assert_eq!(e.operation, "Update");
    assert_eq!(e.time.as_deref(), Some(T2));
    assert_eq!(
        e.fields.to_fields_v1_string(),
        r#"{"f:metadata":{"f:labels":{"f:tier":{}}},"f:spec":{"f:template":{"f:spec":{"f:containers":{"k:{\"name\":\"nginx\"}":{"f:image":{}}}}}}}"#
    );
    // The creator lost the image, kept the rest, and kept its time.
    let c = entry(&obj, "kubectl-create").expect("creator");
    assert_eq!(c.time.as_deref(), Some(T1));
    assert!(!owns(
        &obj,
        "kubectl-create",
        r#".spec.template.spec.containers[name="nginx"].image"#
    ));
    assert!(owns(&obj, "kubectl-create", ".spec.replicas"));
    // Entries: oldest first among updates.
    let names: Vec<String> = entries(&obj).into_iter().map(|e| e.manager).collect();
    assert_eq!(names, vec!["kubectl-create", "kubectl-edit"]);

    // Writing the same object again records nothing new.
    let again = upd(Some(&obj), &obj, "kubectl-edit", T3);
    assert_eq!(
        entry(&again, "kubectl-edit")
            .and_then(|e| e.time)
            .as_deref(),
        Some(T2)
    );
    assert_eq!(
        again["metadata"]["managedFields"],
        obj["metadata"]["managedFields"]
    );
}

#[test]
fn an_update_that_removes_fields_drops_them_from_every_manager() {
    let mut cfg = deployment("nginx:1.14.2", 1);
    cfg["metadata"]["labels"]["tier"] = json!("web");
    let live = persist(ssa(None, &cfg, "kubectl", false, T1).expect("create"));
    let mut edited = live.clone();
    if let Some(l) = edited["metadata"]["labels"].as_object_mut() {
        l.remove("tier");
    }
    let obj = upd(Some(&live), &edited, "kubectl-edit", T2);
    assert!(!owns(&obj, "kubectl", ".metadata.labels.tier"));
    assert!(owns(&obj, "kubectl", ".metadata.labels.app"));
    // The editor took nothing: no entry.
    assert!(entry(&obj, "kubectl-edit").is_none());
}

#[test]
fn an_untracked_object_stays_untracked_on_update() {
    let live = persist(deployment("nginx:1.14.2", 1));
    let mut edited = live.clone();
    edited["spec"]["replicas"] = json!(3);
    let obj = upd(Some(&live), &edited, "kubectl-edit", T2);
    assert!(obj["metadata"].get("managedFields").is_none());
    assert_eq!(obj["spec"]["replicas"], 3);
}

#[test]
fn managed_fields_can_be_reset_or_replaced_by_the_request() {
    let live = persist(upd(
        None,
        &deployment("nginx:1.14.2", 1),
        "kubectl-create",
        T1,
    ));
    for reset in [json!([{}]), json!([])] {
        let mut edited = live.clone();
        edited["metadata"]["managedFields"] = reset;
        edited["spec"]["replicas"] = json!(2);
        let obj = upd(Some(&live), &edited, "kubectl-edit", T2);
        assert!(obj["metadata"].get("managedFields").is_none());
    }
    // Sending none keeps the stored ones.
    let mut edited = live.clone();
    if let Some(m) = edited["metadata"].as_object_mut() {
        m.remove("managedFields");
    }
    let obj = upd(Some(&live), &edited, "kubectl-edit", T2);
    assert!(entry(&obj, "kubectl-create").is_some());
    // Sending valid ones replaces them.
    let mut edited = live.clone();
    edited["metadata"]["managedFields"] = json!([{
        "manager": "someone", "operation": "Apply", "apiVersion": "apps/v1",
        "time": T0, "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}}
    }]);
    let obj = upd(Some(&live), &edited, "kubectl-edit", T2);
    assert!(entry(&obj, "kubectl-create").is_none());
    assert!(owns(&obj, "someone", ".spec.replicas"));
    // Invalid ones fall back to the stored ones.
    let mut edited = live.clone();
    edited["metadata"]["managedFields"] = json!([{"manager": "x", "operation": "Patch"}]);
    let obj = upd(Some(&live), &edited, "kubectl-edit", T2);
    assert!(entry(&obj, "kubectl-create").is_some());
}

#[test]
fn update_entries_are_capped_at_ten() {
    let mut live = persist(upd(None, &deployment("nginx:1.14.2", 1), "creator", T0));
    for i in 0..11 {
        let mut edited = live.clone();
        edited["metadata"]["labels"][format!("l{i}")] = json!("v");
        let now = format!("2024-01-02T00:{i:02}:00Z");
        live = upd(Some(&live), &edited, &format!("writer-{i:02}"), &now);
    }
    let es = entries(&live);
    assert_eq!(es.len(), 10);
    let ancient = es
        .iter()
        .find(|e| e.manager == "ancient-changes")
        .expect("bucket");
    assert_eq!(ancient.operation, "Update");
    // The creator and the two oldest writers were folded together.
    assert!(
        es.iter()
            .all(|e| e.manager != "creator" && e.manager != "writer-00")
    );
    assert!(owns(&live, "ancient-changes", ".spec.replicas"));
    assert!(owns(&live, "ancient-changes", ".metadata.labels.l0"));
    assert!(owns(&live, "ancient-changes", ".metadata.labels.l1"));
    assert!(owns(&live, "writer-10", ".metadata.labels.l10"));
}

#[test]
fn entries_sort_apply_first_then_by_time() {
    let live = persist(upd(None, &deployment("nginx:1.14.2", 1), "zeta", T1));
    let live = ssa(Some(&live), &replicas_only(1), "alpha", false, T3).expect("apply");
    let mut edited = live.clone();
    edited["metadata"]["labels"]["x"] = json!("y");
    let live = upd(Some(&live), &edited, "beta", T2);
    let order: Vec<(String, String)> = entries(&live)
        .into_iter()
        .map(|e| (e.operation, e.manager))
        .collect();
    assert_eq!(
        order,
        vec![
            ("Apply".to_string(), "alpha".to_string()),
            ("Update".to_string(), "zeta".to_string()),
            ("Update".to_string(), "beta".to_string()),
        ]
    );
    // Sharing a value by applying it records no time (nothing changed).
    assert_eq!(entry(&live, "alpha").and_then(|e| e.time), None);
}

// ---------------------------------------------------------------- reset fields, subresources

#[test]
fn status_is_ignored_on_the_main_resource() {
    let live =
        persist(ssa(None, &deployment("nginx:1.14.2", 1), "kubectl", false, T1).expect("create"));
    let mut cfg = deployment("nginx:1.14.2", 1);
    cfg["status"] = json!({"replicas": 50, "readyReplicas": 50});
    let obj = ssa(Some(&live), &cfg, "kubectl", false, T2).expect("apply");
    assert_eq!(obj["status"], live["status"]);
    assert!(!fields_of(&obj, "kubectl").contains("status"));
    // Nothing changed, so the time did not move.
    assert_eq!(
        entry(&obj, "kubectl").and_then(|e| e.time).as_deref(),
        Some(T1)
    );
    // On create the applied status is dropped.
    let created = ssa(None, &cfg, "kubectl", false, T1).expect("create");
    assert!(created.get("status").is_none());
}

#[test]
fn apply_to_the_status_subresource_owns_status_only() {
    let live =
        persist(ssa(None, &deployment("nginx:1.14.2", 1), "kubectl", false, T1).expect("create"));
    let cfg = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "nginx"},
        "spec": {"replicas": 9},
        "status": {"availableReplicas": 1}
    });
    let obj = apply_with(
        Some(&live),
        &cfg,
        &ApplyOptions {
            subresource: Some("status"),
            ..opts("status-writer", false, T2)
        },
    )
    .expect("apply");
    assert_eq!(obj["spec"], live["spec"]);
    assert_eq!(obj["status"]["availableReplicas"], 1);
    assert_eq!(obj["status"]["replicas"], 1);
    let e = entry(&obj, "status-writer").expect("entry");
    assert_eq!(e.subresource.as_deref(), Some("status"));
    assert_eq!(
        e.fields.to_fields_v1_string(),
        r#"{"f:status":{"f:availableReplicas":{}}}"#
    );
    // Status writes through updates work the same way.
    let mut edited = obj.clone();
    edited["status"]["availableReplicas"] = json!(2);
    edited["spec"]["replicas"] = json!(99);
    let obj = upd_sub(
        Some(&obj),
        &edited,
        "kube-controller-manager",
        Some("status"),
        T3,
    );
    let e = entry(&obj, "kube-controller-manager").expect("entry");
    assert_eq!(e.subresource.as_deref(), Some("status"));
    assert_eq!(
        e.fields.to_fields_v1_string(),
        r#"{"f:status":{"f:availableReplicas":{}}}"#
    );
    let err = ssa(Some(&obj), &replicas_only(3), "kubectl-2", false, T3).expect_err("conflict");
    assert_eq!(
        err.message,
        r#"Apply failed with 1 conflict: conflict with "kubectl": .spec.replicas"#
    );
}

#[test]
fn subresource_managers_are_described_with_it() {
    let live = persist(ssa(None, &replicas_only(1), "kubectl", false, T1).expect("create"));
    let cfg = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "nginx"},
        "status": {"replicas": 1}});
    let live = apply_with(
        Some(&live),
        &cfg,
        &ApplyOptions {
            subresource: Some("status"),
            ..opts("st", false, T2)
        },
    )
    .expect("status apply");
    let mut cfg = cfg;
    cfg["status"]["replicas"] = json!(2);
    let err = apply_with(
        Some(&live),
        &cfg,
        &ApplyOptions {
            subresource: Some("status"),
            ..opts("other", false, T3)
        },
    )
    .expect_err("conflict");
    assert_eq!(
        err.message,
        r#"Apply failed with 1 conflict: conflict with "st" with subresource "status": .status.replicas"#
    );
}

// ---------------------------------------------------------------- lists

#[test]
fn set_lists_union_and_prune_per_manager() {
    let base = |f: Value| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "nginx", "finalizers": f}})
    };
    let live = persist(ssa(None, &base(json!(["a"])), "m1", false, T1).expect("m1"));
    let live = ssa(Some(&live), &base(json!(["b"])), "m2", false, T2).expect("m2");
    assert_eq!(live["metadata"]["finalizers"], json!(["a", "b"]));
    assert_eq!(
        fields_of(&live, "m2"),
        r#"{"f:metadata":{"f:finalizers":{"v:\"b\"":{}}}}"#
    );
    let cfg = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "nginx"}});
    let live = ssa(Some(&live), &cfg, "m1", false, T3).expect("m1 drops a");
    assert_eq!(live["metadata"]["finalizers"], json!(["b"]));
}

#[test]
fn atomic_lists_are_owned_and_replaced_whole() {
    let mut cfg = deployment("nginx:1.14.2", 1);
    cfg["spec"]["template"]["spec"]["containers"][0]["args"] = json!(["x", "y"]);
    let live = persist(ssa(None, &cfg, "m1", false, T1).expect("create"));
    assert!(owns(
        &live,
        "m1",
        r#".spec.template.spec.containers[name="nginx"].args"#
    ));
    let mut cfg2 = cfg.clone();
    cfg2["spec"]["template"]["spec"]["containers"][0]["args"] = json!(["z"]);
    let err = ssa(Some(&live), &cfg2, "m2", false, T2).expect_err("conflict");
    assert_eq!(
        err.message,
        r#"Apply failed with 1 conflict: conflict with "m1": .spec.template.spec.containers[name="nginx"].args"#
    );
    let obj = ssa(Some(&live), &cfg2, "m1", false, T2).expect("owner");
    assert_eq!(
        obj["spec"]["template"]["spec"]["containers"][0]["args"],
        json!(["z"])
    );
}

#[test]
fn map_list_order_follows_upstream_merge() {
    let c = |n: &str| json!({"name": n, "image": format!("{n}:1")});
    let mut cfg = deployment("nginx:1.14.2", 1);
    cfg["spec"]["template"]["spec"]["containers"] = json!([c("a"), c("b")]);
    let live = persist(ssa(None, &cfg, "m1", false, T1).expect("create"));
    let mut cfg2 = replicas_only(1);
    cfg2["spec"]["template"] = json!({"spec": {"containers": [c("c"), c("a")]}});
    let obj = ssa(Some(&live), &cfg2, "m2", false, T2).expect("apply");
    let names: Vec<&str> = obj["spec"]["template"]["spec"]["containers"]
        .as_array()
        .map(|cs| cs.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, vec!["c", "a", "b"]);
    assert_eq!(
        obj["spec"]["template"]["spec"]["containers"][1]["imagePullPolicy"],
        "IfNotPresent"
    );
}

#[test]
fn repeated_and_keyless_live_items_survive_a_merge() {
    let mut live = persist(deployment("nginx:1.14.2", 1));
    let a = json!({"name": "a", "image": "a:1"});
    live["spec"]["template"]["spec"]["containers"] = json!([a, a, {"image": "keyless"}]);
    let mut cfg = replicas_only(1);
    cfg["spec"]["template"] = json!({"spec": {"containers": [{"name": "b", "image": "b:1"}]}});
    let obj = ssa(Some(&live), &cfg, "m", false, T1).expect("apply");
    assert_eq!(
        obj["spec"]["template"]["spec"]["containers"],
        json!([a, a, {"image": "keyless"}, {"name": "b", "image": "b:1"}])
    );
    // Naming the repeated item replaces the repeats with the merged one.
    cfg["spec"]["template"] = json!({"spec": {"containers": [{"name": "a", "image": "a:2"}]}});
    let obj = ssa(Some(&obj), &cfg, "m", true, T2).expect("apply");
    let images: Vec<&str> = obj["spec"]["template"]["spec"]["containers"]
        .as_array()
        .map(|cs| cs.iter().filter_map(|c| c["image"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(images, vec!["a:2", "keyless"]);
}

#[test]
fn custom_resources_are_plain_structs() {
    let cr = json!({"apiVersion": "stable.example.com/v1", "kind": "CronTab",
        "metadata": {"name": "c", "namespace": "default"},
        "spec": {"cronSpec": "* * * * */5", "selector": {"a": "b"}}});
    let created = update_managed_fields(
        None,
        &cr,
        "kubectl-create",
        "Update",
        "stable.example.com/v1",
        None,
        T1,
    );
    assert_eq!(
        fields_of(&created, "kubectl-create"),
        r#"{"f:spec":{".":{},"f:cronSpec":{},"f:selector":{".":{},"f:a":{}}}}"#
    );
    let applied = apply(
        None,
        &cr,
        "m",
        false,
        "stable.example.com/v1",
        "CronTab",
        T1,
    )
    .expect("apply");
    assert_eq!(
        fields_of(&applied, "m"),
        r#"{"f:spec":{"f:cronSpec":{},"f:selector":{"f:a":{}}}}"#
    );
    // Custom resources without a status subresource may own status.
    let mut with_status = cr.clone();
    with_status["status"] = json!({"phase": "x"});
    let empty = FieldSet::new();
    let applied = apply_with(
        None,
        &with_status,
        &ApplyOptions {
            api_version: "stable.example.com/v1",
            kind: "CronTab",
            reset: Some(&empty),
            ..opts("m", false, T1)
        },
    )
    .expect("apply");
    assert_eq!(applied["status"]["phase"], "x");
    assert!(owns(&applied, "m", ".status.phase"));
}

#[test]
fn null_in_the_config_unsets_the_field_but_is_owned() {
    let live =
        persist(ssa(None, &deployment("nginx:1.14.2", 3), "kubectl", false, T1).expect("create"));
    let mut cfg = deployment("nginx:1.14.2", 3);
    cfg["spec"]["replicas"] = Value::Null;
    let obj = ssa(Some(&live), &cfg, "kubectl", false, T2).expect("apply");
    assert!(obj["spec"].get("replicas").is_none());
    assert!(owns(&obj, "kubectl", ".spec.replicas"));
}

// ---------------------------------------------------------------- request errors

#[test]
fn bad_requests_are_refused_like_upstream() {
    let mut cfg = deployment("nginx:1.14.2", 1);
    cfg["kind"] = json!("ReplicaSet");
    let err = ssa(None, &cfg, "m", false, T1).expect_err("kind");
    assert_eq!(err.code, 400);
    assert_eq!(err.message, "invalid object type: apps/v1, Kind=ReplicaSet");
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}});
    let err = ssa(None, &pod, "m", false, T1).expect_err("version");
    assert_eq!(err.message, "invalid object type: /v1, Kind=Pod");

    let mut cfg = deployment("nginx:1.14.2", 1);
    cfg["metadata"]["managedFields"] = json!([]);
    let err = ssa(None, &cfg, "m", false, T1).expect_err("managed fields");
    assert_eq!(err.code, 400);
    assert_eq!(err.message, "metadata.managedFields must be nil");

    let mut cfg = deployment("nginx:1.14.2", 1);
    cfg["spec"]["template"]["spec"]["containers"][0]
        .as_object_mut()
        .map(|c| c.remove("name"));
    let err = ssa(None, &cfg, "m", false, T1).expect_err("missing key");
    assert_eq!(err.code, 500);
    assert_eq!(
        err.message,
        r#"failed to create typed patch object (default/nginx; apps/v1, Kind=Deployment): .spec.template.spec.containers: element 0: associative list with keys has an element that omits key field "name" (and doesn't have default value)"#
    );

    let mut cfg = deployment("nginx:1.14.2", 1);
    let c = cfg["spec"]["template"]["spec"]["containers"][0].clone();
    cfg["spec"]["template"]["spec"]["containers"] = json!([c.clone(), c]);
    let err = ssa(None, &cfg, "m", false, T1).expect_err("duplicate");
    assert_eq!(
        err.message,
        r#"failed to create typed patch object (default/nginx; apps/v1, Kind=Deployment): .spec.template.spec.containers: duplicate entries for key [name="nginx"]"#
    );

    let mut live = persist(deployment("nginx:1.14.2", 1));
    live["metadata"]["managedFields"] = json!([{"manager": "x", "operation": "Patch",
        "apiVersion": "apps/v1", "fieldsType": "FieldsV1"}]);
    let err = ssa(Some(&live), &replicas_only(1), "m", false, T1).expect_err("bad stored");
    assert_eq!(err.code, 500);
    assert_eq!(
        err.message,
        "failed to decode managed fields: operation must be `Apply` or `Update`"
    );
}

#[test]
fn decode_reports_upstream_errors() {
    let with = |e: Value| json!({"metadata": {"managedFields": [e]}});
    let msg = |e: Value| decode_managed_fields(&with(e)).expect_err("error");
    assert_eq!(
        msg(json!({"operation": "Patch", "apiVersion": "v1", "fieldsType": "FieldsV1"})),
        "operation must be `Apply` or `Update`"
    );
    assert_eq!(
        msg(json!({"operation": "Apply", "fieldsType": "FieldsV1"})),
        "apiVersion must not be empty"
    );
    assert_eq!(
        msg(json!({"operation": "Apply", "apiVersion": "v1"})),
        "missing fieldsType in managed fields entry 0"
    );
    assert_eq!(
        msg(json!({"operation": "Apply", "apiVersion": "v1", "fieldsType": "FieldsV2"})),
        r#"invalid fieldsType "FieldsV2" in managed fields entry 0"#
    );
    let ok = decode_managed_fields(&with(json!({"manager": "m", "operation": "Update",
        "apiVersion": "v1", "fieldsType": "FieldsV1", "subresource": "status"})))
    .expect("ok");
    assert_eq!(ok[0].subresource.as_deref(), Some("status"));
    assert!(ok[0].fields.is_empty());
}

#[test]
fn field_set_of_reports_validation_errors() {
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"image": "x"}]}});
    // With the table filled in this is an error; without it the list is atomic.
    match field_set_of(&pod, "v1", "Pod") {
        Ok(set) => assert!(set.has(&[
            PathElement::Field("spec".into()),
            PathElement::Field("containers".into())
        ])),
        Err(e) => assert_eq!(
            e,
            r#".spec.containers: element 0: associative list with keys has an element that omits key field "name" (and doesn't have default value)"#
        ),
    }
}

// ---------------------------------------------------------------- managers

#[test]
fn default_manager_is_the_user_agent_prefix() {
    assert_eq!(
        default_manager("kubectl/v1.30.0 (linux/amd64) kubernetes/7c48c2b"),
        "kubectl"
    );
    assert_eq!(default_manager("python-requests/2.31.0"), "python-requests");
    assert_eq!(default_manager("Go-http-client/1.1"), "Go-http-client");
    assert_eq!(default_manager("curl"), "curl");
    assert_eq!(default_manager(""), "");
    assert_eq!(default_manager("a\u{7}b\tc/1"), "abc");
    assert_eq!(
        default_manager(&"x".repeat(300)).len(),
        FIELD_MANAGER_MAX_LENGTH
    );
    assert_eq!(
        manager_or_user_agent(Some("kubectl-edit"), "kubectl/v1"),
        "kubectl-edit"
    );
    assert_eq!(manager_or_user_agent(None, "kubectl/v1"), "kubectl");
    assert_eq!(manager_or_user_agent(Some(""), "helm/3"), "helm");
}

#[test]
fn field_manager_validation_matches_upstream() {
    assert!(validate_field_manager("kubectl", true).is_empty());
    assert!(validate_field_manager("", false).is_empty());
    let c = validate_field_manager("", true);
    assert_eq!(c.len(), 1);
    assert_eq!(
        c[0].display(),
        "fieldManager: Required value: is required for apply patch"
    );
    let c = validate_field_manager(&"m".repeat(129), false);
    assert_eq!(c[0].reason, "FieldValueTooLong");
    assert_eq!(c[0].message, "Too long: may not be more than 128 bytes");
    let c = validate_field_manager("a\u{7}b", false);
    assert_eq!(c[0].reason, "FieldValueInvalid");
    assert!(
        c[0].message
            .ends_with("invalid character U+0007 (at position 1)")
    );
}

#[test]
fn reset_fields_per_subresource() {
    assert_eq!(
        reset_fields("apps/v1", "Deployment", None).to_fields_v1_string(),
        r#"{"f:status":{}}"#
    );
    assert_eq!(
        reset_fields("apps/v1", "Deployment", Some("status")).to_fields_v1_string(),
        r#"{"f:metadata":{"f:labels":{}},"f:spec":{}}"#
    );
    assert_eq!(
        reset_fields("v1", "Pod", Some("status")).to_fields_v1_string(),
        r#"{"f:metadata":{"f:deletionTimestamp":{},"f:ownerReferences":{}},"f:spec":{}}"#
    );
    assert!(reset_fields("apps/v1", "Deployment", Some("scale")).is_empty());
}

// ---------------------------------------------------------------- public API with list_meta

#[test]
fn public_apply_works_with_whatever_list_meta_knows() {
    let created = apply(
        None,
        &deployment("nginx:1.14.2", 1),
        "kubectl",
        false,
        "apps/v1",
        "Deployment",
        T1,
    )
    .expect("create");
    let live = persist(created);
    let obj = apply(
        Some(&live),
        &deployment("nginx:1.16.1", 1),
        "kubectl",
        false,
        "apps/v1",
        "Deployment",
        T2,
    )
    .expect("update");
    assert_eq!(image(&obj), "nginx:1.16.1");
    assert_eq!(
        entry(&obj, "kubectl").and_then(|e| e.time).as_deref(),
        Some(T2)
    );
    let err = apply(
        Some(&obj),
        &replicas_only(5),
        "other",
        false,
        "apps/v1",
        "Deployment",
        T3,
    )
    .expect_err("conflict");
    assert_eq!(
        err.message,
        r#"Apply failed with 1 conflict: conflict with "kubectl": .spec.replicas"#
    );
    let obj = update_managed_fields(Some(&obj), &obj, "x", "Update", "apps/v1", None, T3);
    assert!(entry(&obj, "x").is_none());
}

// ---------------------------------------------------------------- robustness

fn nested(depth: usize) -> Value {
    let mut v = json!("leaf");
    for _ in 0..depth {
        v = json!({ "a": v });
    }
    v
}

#[test]
fn deep_objects_are_refused_without_overflowing() {
    let mut cfg = replicas_only(1);
    cfg["spec"]["deep"] = nested(MAX_DEPTH + 10);
    let err = ssa(None, &cfg, "m", false, T1).expect_err("too deep");
    assert_eq!(err.code, 400);
    let live = persist(upd(None, &deployment("nginx:1.14.2", 1), "c", T1));
    let mut edited = live.clone();
    edited["spec"]["deep"] = nested(MAX_DEPTH + 10);
    let out = upd(Some(&live), &edited, "e", T2);
    assert_eq!(
        out["metadata"]["managedFields"],
        live["metadata"]["managedFields"]
    );
    // Just under the limit works.
    let mut cfg = replicas_only(1);
    cfg["spec"]["deep"] = nested(MAX_DEPTH - 5);
    assert!(ssa(None, &cfg, "m", false, T1).is_ok());
}

/// A small deterministic generator for arbitrary-ish objects.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() as usize) % items.len()]
    }

    fn value(&mut self, depth: usize) -> Value {
        let names = [
            "name",
            "image",
            "env",
            "containers",
            "ports",
            "value",
            "protocol",
            "containerPort",
            "x",
        ];
        match self.next() % if depth > 4 { 5 } else { 8 } {
            0 => Value::Null,
            1 => json!(self.next().is_multiple_of(3)),
            2 => json!(self.next() % 5),
            3 => json!(self.pick(&["a", "b", "TCP", "nginx"])),
            4 => json!(1.5),
            5 | 6 => {
                let mut m = serde_json::Map::new();
                for _ in 0..self.next() % 4 {
                    let k = self.pick(&names).to_string();
                    m.insert(k, self.value(depth + 1));
                }
                Value::Object(m)
            }
            _ => {
                let n = self.next() % 4;
                Value::Array((0..n).map(|_| self.value(depth + 1)).collect())
            }
        }
    }

    fn object(&mut self) -> Value {
        let mut obj = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "n"}});
        let spec = self.value(0);
        obj["spec"] = json!({"template": {"spec": {"containers": spec}}});
        if self.next().is_multiple_of(2) {
            obj["metadata"]["finalizers"] = self.value(3);
        }
        obj
    }
}

#[test]
fn arbitrary_input_never_panics() {
    let mut g = Gen(7);
    for i in 0..400 {
        let live_cfg = g.object();
        let live = ssa(None, &live_cfg, "m1", false, T1).ok().map(persist);
        let cfg = g.object();
        let force = i % 3 == 0;
        let _ = ssa(live.as_ref(), &cfg, "m2", force, T2);
        let _ = ssa(live.as_ref(), &cfg, "kubectl", false, T2);
        let new = g.object();
        let out = upd(live.as_ref(), &new, "u", T3);
        let _ = decode_managed_fields(&out).expect("our own output decodes");
        if let Some(l) = &live {
            let mut garbage = l.clone();
            garbage["metadata"]["managedFields"] = g.value(0);
            let _ = upd(Some(&garbage), &new, "u", T3);
            let _ = ssa(Some(&garbage), &cfg, "m3", false, T3);
        }
        // Values that are not objects at all.
        let odd = g.value(0);
        let _ = ssa(Some(&odd), &cfg, "m4", false, T3);
        let _ = ssa(live.as_ref(), &odd, "m4", true, T3);
        let _ = upd(Some(&odd), &new, "u", T3);
        let _ = upd(live.as_ref(), &odd, "u", T3);
        let _ = field_set_of(&odd, "apps/v1", "Deployment");
    }
}

#[test]
fn apply_output_round_trips_through_its_own_managed_fields() {
    let obj = ssa(None, &deployment("nginx:1.14.2", 1), "kubectl", false, T1).expect("create");
    for e in entries(&obj) {
        let text = e.fields.to_fields_v1_string();
        assert_eq!(FieldSet::parse_fields_v1(&text).expect("parse"), e.fields);
    }
}

/// The comparison behind every update leaves `metadata.managedFields` out on both sides, as
/// upstream compares objects with their managed fields stripped: metadata holding only
/// managed fields is an empty map.
#[test]
fn compare_leaves_managed_fields_out() {
    let schema = typed::Schema {
        lists: &lists,
        builtin: true,
    };
    let mf = json!([{"manager": "m", "operation": "Update", "fieldsType": "FieldsV1",
        "fieldsV1": {"f:spec": {"f:a": {}}}}]);
    let paths = |s: &FieldSet| -> Vec<String> { s.paths().iter().map(|p| p.to_string()).collect() };

    let old = json!({"metadata": {"name": "x", "managedFields": mf}, "spec": {"a": 1}});
    let new = json!({"metadata": {"name": "x"}, "spec": {"a": 2}});
    let c = typed::compare(&old, &new, &schema);
    assert_eq!(paths(&c.modified), [".spec.a"]);
    assert!(c.added.is_empty() && c.removed.is_empty());

    // `{}` against metadata with only managed fields: equal empty maps.
    let c = typed::compare(
        &json!({"metadata": {}}),
        &json!({"metadata": {"managedFields": mf}}),
        &schema,
    );
    assert!(c.added.is_empty() && c.removed.is_empty() && c.modified.is_empty());
    // `null` against it: the leaf changed, as `null` against `{}` does.
    let c = typed::compare(
        &json!({"metadata": null}),
        &json!({"metadata": {"managedFields": mf}}),
        &schema,
    );
    assert_eq!(paths(&c.modified), [".metadata"]);
}
