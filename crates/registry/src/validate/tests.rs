//! Validation checked against upstream's messages (as kubectl prints them from a real
//! apiserver) and upstream's decoding errors.

use std::sync::Arc;

use serde_json::{Value, json};

use super::*;
use crate::builtin;
use crate::defaults::apply_defaults;

fn def(group: &str, kind: &str) -> Arc<ResourceDef> {
    builtin()
        .into_iter()
        .find(|d| d.group == group && d.kind == kind)
        .expect("builtin")
}

/// Defaults then validates, as the apiserver does, returning `field: message` lines.
fn create(group: &str, kind: &str, mut obj: Value) -> Vec<String> {
    let d = def(group, kind);
    apply_defaults(&d, &mut obj);
    validate_create(&d, &obj)
        .iter()
        .map(Cause::display)
        .collect()
}

fn deployment(labels: Value, selector: Value) -> Value {
    json!({"metadata": {"name": "web", "namespace": "default"},
        "spec": {"selector": selector, "template": {"metadata": {"labels": labels},
            "spec": {"containers": [{"name": "nginx", "image": "nginx"}]}}}})
}

#[test]
fn valid_objects_pass() {
    assert!(
        create(
            "apps",
            "Deployment",
            deployment(
                json!({"app": "web"}),
                json!({"matchLabels": {"app": "web"}})
            )
        )
        .is_empty()
    );
    assert!(create("", "Pod", json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {"containers": [{"name": "c", "image": "busybox", "ports": [{"containerPort": 80, "name": "http"}]}]}})).is_empty());
    assert!(create("", "Service", json!({"metadata": {"name": "web", "namespace": "default"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})).is_empty());
    assert!(create("", "Namespace", json!({"metadata": {"name": "team-a"}})).is_empty());
    assert!(
        create(
            "",
            "ConfigMap",
            json!({"metadata": {"name": "c", "namespace": "d"}, "data": {"a.b": "x", "KEY_1": "y"}})
        )
        .is_empty()
    );
    assert!(create("batch", "Job", json!({"metadata": {"name": "j", "namespace": "d"}, "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}}})).is_empty());
    assert!(create("batch", "CronJob", json!({"metadata": {"name": "c", "namespace": "d"}, "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "x"}]}}}}}})).is_empty());
    assert!(create("rbac.authorization.k8s.io", "ClusterRole", json!({"metadata": {"name": "system:view"}, "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}, {"nonResourceURLs": ["/healthz"], "verbs": ["get"]}]})).is_empty());
    assert!(create("rbac.authorization.k8s.io", "RoleBinding", json!({"metadata": {"name": "rb", "namespace": "d"}, "roleRef": {"kind": "ClusterRole", "name": "view"}, "subjects": [{"kind": "ServiceAccount", "name": "default"}, {"kind": "User", "name": "alice"}]})).is_empty());
    for d in builtin() {
        // Virtual and most kinds: a well-formed minimal object produces no panic.
        let _ = validate_create(&d, &json!({"metadata": {"name": "x", "namespace": "d"}}));
    }
}

/// `kubectl apply` of a Deployment whose template labels do not match its selector.
#[test]
fn deployment_selector_mismatch() {
    let got = create(
        "apps",
        "Deployment",
        deployment(
            json!({"app": "other"}),
            json!({"matchLabels": {"app": "web"}}),
        ),
    );
    assert_eq!(
        got,
        [
            "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"other\"}: `selector` does not match template `labels`"
        ]
    );
    let d = def("apps", "Deployment");
    let mut obj = deployment(
        json!({"app": "other"}),
        json!({"matchLabels": {"app": "web"}}),
    );
    apply_defaults(&d, &mut obj);
    let err = invalid_error(&d, "web", validate_create(&d, &obj));
    assert_eq!(
        err.message,
        "Deployment.apps \"web\" is invalid: spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"other\"}: `selector` does not match template `labels`"
    );
    assert_eq!(err.code, 422);
}

#[test]
fn deployment_rules() {
    let mut no_sel = deployment(json!({"app": "web"}), json!(null));
    no_sel["spec"]
        .as_object_mut()
        .expect("spec")
        .remove("selector");
    assert_eq!(
        create("apps", "Deployment", no_sel),
        ["spec.selector: Required value"]
    );
    let empty = create(
        "apps",
        "Deployment",
        deployment(json!({"app": "web"}), json!({})),
    );
    assert_eq!(
        empty,
        ["spec.selector: Invalid value: {}: empty selector is invalid for deployment"]
    );
    let mut neg = deployment(
        json!({"app": "web"}),
        json!({"matchLabels": {"app": "web"}}),
    );
    neg["spec"]["replicas"] = json!(-1);
    assert_eq!(
        create("apps", "Deployment", neg),
        ["spec.replicas: Invalid value: -1: must be greater than or equal to 0"]
    );
    let mut never = deployment(
        json!({"app": "web"}),
        json!({"matchLabels": {"app": "web"}}),
    );
    never["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
    assert_eq!(
        create("apps", "Deployment", never),
        [
            "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\""
        ]
    );
    let mut zero = deployment(
        json!({"app": "web"}),
        json!({"matchLabels": {"app": "web"}}),
    );
    zero["spec"]["strategy"] = json!({"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}});
    assert_eq!(
        create("apps", "Deployment", zero),
        [
            "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0"
        ]
    );
    let mut bad_expr = deployment(
        json!({"app": "web"}),
        json!({"matchExpressions": [{"key": "app", "operator": "In"}]}),
    );
    bad_expr["spec"]["template"]["metadata"]["labels"] = json!({"app": "web"});
    let got = create("apps", "Deployment", bad_expr);
    assert!(got.contains(&"spec.selector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'".to_string()), "{got:?}");
}

#[test]
fn deployment_update_keeps_selector() {
    let d = def("apps", "Deployment");
    let mut old = deployment(
        json!({"app": "web", "v": "1"}),
        json!({"matchLabels": {"app": "web"}}),
    );
    apply_defaults(&d, &mut old);
    let mut new = old.clone();
    new["spec"]["selector"] = json!({"matchLabels": {"app": "web", "v": "1"}});
    let got: Vec<String> = validate_update(&d, &old, &new)
        .iter()
        .map(Cause::display)
        .collect();
    assert_eq!(
        got,
        [
            "spec.selector: Invalid value: {\"matchLabels\":{\"app\":\"web\",\"v\":\"1\"}}: field is immutable"
        ]
    );
    let mut scaled = old.clone();
    scaled["spec"]["replicas"] = json!(5);
    assert!(validate_update(&d, &old, &scaled).is_empty());
}

#[test]
fn pod_rules() {
    let no_containers = create(
        "",
        "Pod",
        json!({"metadata": {"name": "p", "namespace": "d"}, "spec": {}}),
    );
    assert_eq!(no_containers, ["spec.containers: Required value"]);
    let got = create(
        "",
        "Pod",
        json!({"metadata": {"name": "p", "namespace": "d"}, "spec": {"containers": [
        {"name": "Bad_Name", "image": ""},
        {"name": "dup", "image": "x", "ports": [{"containerPort": 70000}]},
        {"name": "dup", "image": "x", "volumeMounts": [{"name": "missing", "mountPath": "/m"}]}]}}),
    );
    assert_eq!(
        got,
        [
            "spec.containers[0].name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
            "spec.containers[0].image: Required value",
            "spec.containers[1].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
            "spec.containers[2].volumeMounts[0].name: Not found: \"missing\"",
            "spec.containers[2].name: Duplicate value: \"dup\"",
        ]
    );
    let bad_policy = create(
        "",
        "Pod",
        json!({"metadata": {"name": "p", "namespace": "d"}, "spec": {"restartPolicy": "Sometimes", "containers": [{"name": "c", "image": "x", "imagePullPolicy": "Maybe"}]}}),
    );
    assert_eq!(
        bad_policy,
        [
            "spec.containers[0].imagePullPolicy: Unsupported value: \"Maybe\": supported values: \"Always\", \"IfNotPresent\", \"Never\"",
            "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
        ]
    );
    let limits = create(
        "",
        "Pod",
        json!({"metadata": {"name": "p", "namespace": "d"}, "spec": {"containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}}]}}),
    );
    assert_eq!(
        limits,
        [
            "spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1"
        ]
    );
}

#[test]
fn pod_spec_is_mostly_immutable() {
    let d = def("", "Pod");
    let mut old = json!({"metadata": {"name": "p", "namespace": "d"}, "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}});
    apply_defaults(&d, &mut old);
    let mut image = old.clone();
    image["spec"]["containers"][0]["image"] = json!("nginx:2");
    assert!(validate_update(&d, &old, &image).is_empty());
    let mut env = old.clone();
    env["spec"]["containers"][0]["env"] = json!([{"name": "A", "value": "1"}]);
    let got = validate_update(&d, &old, &env);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].field, "spec");
    assert!(got[0].message.starts_with(
        "Forbidden: pod updates may not change fields other than `spec.containers[*].image`"
    ));
}

#[test]
fn names_per_kind() {
    let svc = create(
        "",
        "Service",
        json!({"metadata": {"name": "1web", "namespace": "d"}, "spec": {"ports": [{"port": 80}]}}),
    );
    assert_eq!(
        svc,
        [
            "metadata.name: Invalid value: \"1web\": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
        ]
    );
    let ns = create("", "Namespace", json!({"metadata": {"name": "a.b"}}));
    assert_eq!(
        ns,
        ["metadata.name: Invalid value: \"a.b\": must not contain dots"]
    );
    let cm = create(
        "",
        "ConfigMap",
        json!({"metadata": {"name": "UPPER", "namespace": "d"}}),
    );
    assert!(cm[0].starts_with(
        "metadata.name: Invalid value: \"UPPER\": a lowercase RFC 1123 subdomain must consist of"
    ));
    assert!(
        create(
            "rbac.authorization.k8s.io",
            "ClusterRole",
            json!({"metadata": {"name": "system:controller:x"}})
        )
        .is_empty()
    );
    let rbac = create(
        "rbac.authorization.k8s.io",
        "ClusterRole",
        json!({"metadata": {"name": "a/b"}}),
    );
    assert_eq!(
        rbac,
        ["metadata.name: Invalid value: \"a/b\": may not contain '/'"]
    );
    let cluster_scoped = create(
        "",
        "Namespace",
        json!({"metadata": {"name": "x", "namespace": "y"}}),
    );
    assert_eq!(
        cluster_scoped,
        ["metadata.namespace: Forbidden: not allowed on this type"]
    );
    let missing_ns = create("", "ConfigMap", json!({"metadata": {"name": "x"}}));
    assert_eq!(missing_ns, ["metadata.namespace: Required value"]);
}

#[test]
fn service_rules() {
    let got = create(
        "",
        "Service",
        json!({"metadata": {"name": "web", "namespace": "d"}, "spec": {"type": "Weird", "ports": [{"port": 80}, {"port": 0, "name": "b"}]}}),
    );
    assert_eq!(
        got,
        [
            "spec.type: Unsupported value: \"Weird\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"",
            "spec.ports[0].name: Required value",
            "spec.ports[1].port: Invalid value: 0: must be between 1 and 65535, inclusive",
            // targetPort defaults to port, as upstream.
            "spec.ports[1].targetPort: Invalid value: 0: must be between 1 and 65535, inclusive",
        ]
    );
    assert_eq!(
        create(
            "",
            "Service",
            json!({"metadata": {"name": "web", "namespace": "d"}, "spec": {}})
        ),
        ["spec.ports: Required value"]
    );
    assert_eq!(
        create(
            "",
            "Service",
            json!({"metadata": {"name": "web", "namespace": "d"}, "spec": {"type": "ExternalName"}})
        ),
        ["spec.externalName: Required value"]
    );
}

#[test]
fn configmap_secret_job_rules() {
    let got = create(
        "",
        "ConfigMap",
        json!({"metadata": {"name": "c", "namespace": "d"}, "data": {"a/b": "x"}}),
    );
    assert_eq!(
        got,
        [
            "data[a/b]: Invalid value: \"a/b\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
        ]
    );
    let tls = create(
        "",
        "Secret",
        json!({"metadata": {"name": "s", "namespace": "d"}, "type": "kubernetes.io/tls", "data": {"tls.crt": ""}}),
    );
    assert_eq!(tls, ["data[tls.key]: Required value"]);
    let job = create(
        "batch",
        "Job",
        json!({"metadata": {"name": "j", "namespace": "d"}, "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x"}]}}}}),
    );
    assert_eq!(
        job,
        [
            "spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""
        ]
    );
    let cj = create(
        "batch",
        "CronJob",
        json!({"metadata": {"name": "c", "namespace": "d"}, "spec": {"jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}}}}}),
    );
    assert_eq!(cj, ["spec.schedule: Required value"]);
    let d = def("", "Secret");
    let old = json!({"metadata": {"name": "s", "namespace": "d"}, "type": "Opaque", "immutable": true, "data": {"a": "YQ=="}});
    let mut new = old.clone();
    new["data"]["a"] = json!("Yg==");
    let got: Vec<String> = validate_update(&d, &old, &new)
        .iter()
        .map(Cause::display)
        .collect();
    assert_eq!(
        got,
        ["data: Forbidden: field is immutable when `immutable` is set"]
    );
}

#[test]
fn string_data_is_merged_into_data() {
    let d = def("", "Secret");
    let mut s = json!({"metadata": {"name": "s"}, "stringData": {"password": "hunter2"}, "data": {"user": "YWRtaW4="}});
    apply_defaults(&d, &mut s);
    assert_eq!(
        s,
        json!({"metadata": {"name": "s"}, "type": "Opaque", "data": {"user": "YWRtaW4=", "password": "aHVudGVyMg=="}})
    );
}

#[test]
fn rbac_and_crd_rules() {
    let role = create(
        "rbac.authorization.k8s.io",
        "Role",
        json!({"metadata": {"name": "r", "namespace": "d"}, "rules": [{"resources": ["pods"]}]}),
    );
    assert_eq!(
        role,
        [
            "rules[0].verbs: Required value: verbs must contain at least one value",
            "rules[0].apiGroups: Required value: resource rules must supply at least one api group",
        ]
    );
    let crb = create(
        "rbac.authorization.k8s.io",
        "ClusterRoleBinding",
        json!({"metadata": {"name": "b"}, "roleRef": {"kind": "Role", "name": "x"}, "subjects": [{"kind": "ServiceAccount", "name": "sa"}]}),
    );
    assert_eq!(
        crb,
        [
            "roleRef.kind: Unsupported value: \"Role\": supported values: \"ClusterRole\"",
            "subjects[0].namespace: Required value",
        ]
    );
    let crd = create(
        "apiextensions.k8s.io",
        "CustomResourceDefinition",
        json!({"metadata": {"name": "widgets.example.com"}, "spec": {"group": "example.com", "scope": "Namespaced",
        "names": {"plural": "widgets", "kind": "Widget"}, "versions": [{"name": "v1", "served": true, "storage": true}]}}),
    );
    assert!(crd.is_empty(), "{crd:?}");
    let bad = create(
        "apiextensions.k8s.io",
        "CustomResourceDefinition",
        json!({"metadata": {"name": "w.example.com"}, "spec": {"group": "example.com", "scope": "Namespaced",
        "names": {"plural": "widgets", "kind": "Widget"}, "versions": [{"name": "v1", "served": true, "storage": false}]}}),
    );
    assert_eq!(bad.len(), 2);
    assert!(bad[0].starts_with("metadata.name: Invalid value: \"w.example.com\": must be spec.names.plural+\".\"+spec.group"));
}

#[test]
fn decode_errors_match_upstream() {
    let d = def("apps", "Deployment");
    let err = decode_check(&d, &json!({"spec": {"replicas": "three"}})).expect_err("bad type");
    assert_eq!(err.code, 400);
    assert_eq!(err.reason, "BadRequest");
    assert_eq!(
        err.message,
        "Deployment in version \"v1\" cannot be handled as a Deployment: json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32"
    );
    let err = decode_check(&d, &json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "ports": [{"containerPort": 1.5}]}]}}}})).expect_err("float");
    assert_eq!(
        err.message,
        "Deployment in version \"v1\" cannot be handled as a Deployment: json: cannot unmarshal number 1.5 into Go struct field ContainerPort.spec.template.spec.containers.ports.containerPort of type int32"
    );
    let err = decode_check(&d, &json!({"spec": "x"})).expect_err("struct");
    assert_eq!(
        err.message,
        "Deployment in version \"v1\" cannot be handled as a Deployment: json: cannot unmarshal string into Go struct field Deployment.spec of type v1.DeploymentSpec"
    );
    let err = decode_check(&d, &json!({"metadata": {"labels": {"a": 1}}})).expect_err("label");
    assert_eq!(
        err.message,
        "Deployment in version \"v1\" cannot be handled as a Deployment: json: cannot unmarshal number into Go struct field ObjectMeta.metadata.labels of type string"
    );
    let pod = def("", "Pod");
    let err = decode_check(
        &pod,
        &json!({"spec": {"containers": [{"resources": {"limits": {"cpu": "lots"}}}]}}),
    )
    .expect_err("quantity");
    assert!(err.message.ends_with("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"));
    let secret = def("", "Secret");
    let err = decode_check(&secret, &json!({"data": {"a": "not base64!"}})).expect_err("base64");
    assert_eq!(
        err.message,
        "Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data at input byte 3"
    );
    let err = decode_check(
        &pod,
        &json!({"metadata": {"creationTimestamp": "yesterday"}}),
    )
    .expect_err("time");
    assert!(err.message.contains("parsing time \"yesterday\""));
    assert!(decode_check(&d, &json!([])).is_err());
    // Valid and missing-but-required fields decode: validation reports the latter (422).
    assert!(decode_check(&d, &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}, "spec": {"replicas": 2, "strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}}}})).is_ok());
    assert!(decode_check(&pod, &json!({"spec": {"containers": [{"resources": {"limits": {"cpu": 1, "memory": "1Gi"}}}], "nodeSelector": null}})).is_ok());
}

#[test]
fn unknown_fields_for_strict_and_warn() {
    let d = def("apps", "Deployment");
    let obj = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x", "labelz": {}},
        "spec": {"replicas": 1, "foo": 1, "template": {"spec": {"containers": [{"name": "c", "imagee": "x"}, {"name": "d"}]}}}, "extra": true});
    let unknown = unknown_fields(&d, &obj);
    assert_eq!(
        unknown,
        [
            "extra",
            "metadata.labelz",
            "spec.foo",
            "spec.template.spec.containers[0].imagee"
        ]
    );
    let err = strict_error(&d, &unknown[2..]);
    assert_eq!(
        err.message,
        "Deployment in version \"v1\" cannot be handled as a Deployment: strict decoding error: unknown field \"spec.foo\", unknown field \"spec.template.spec.containers[0].imagee\""
    );
    assert_eq!(
        unknown_field_warnings(&unknown[..1]),
        ["unknown field \"extra\""]
    );
    // Maps accept any key.
    assert!(
        unknown_fields(
            &d,
            &json!({"metadata": {"labels": {"anything": "x"}, "annotations": {"a": "b"}}})
        )
        .is_empty()
    );
    let cm = def("", "ConfigMap");
    assert!(
        unknown_fields(
            &cm,
            &json!({"data": {"k": "v"}, "binaryData": {"b": "eA=="}, "immutable": false})
        )
        .is_empty()
    );
}

fn widget_def() -> Arc<ResourceDef> {
    let crd = json!({"metadata": {"name": "widgets.example.com"}, "spec": {"group": "example.com", "scope": "Namespaced",
    "names": {"plural": "widgets", "kind": "Widget"},
    "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
        "type": "object",
        "properties": {
            "spec": {"type": "object", "required": ["size"], "properties": {
                "size": {"type": "integer", "minimum": 1, "maximum": 10},
                "color": {"type": "string", "enum": ["red", "blue"]},
                "port": {"x-kubernetes-int-or-string": true},
                "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "env": {"type": "object", "additionalProperties": {"type": "string"}}
            }},
            "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}}
        }}}}]}});
    crate::crd::resource_defs(&crd).expect("crd").remove(0)
}

#[test]
fn custom_resources_follow_their_schema() {
    let d = widget_def();
    let ok = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "d"},
        "spec": {"size": 3, "color": "red", "port": "http", "tags": ["a"], "extra": {"any": {"thing": 1}}, "env": {"A": "b"}}});
    assert!(validate_create(&d, &ok).is_empty());
    assert!(unknown_fields(&d, &ok).is_empty());
    assert!(decode_check(&d, &ok).is_ok());
    let bad = json!({"metadata": {"name": "w", "namespace": "d"},
        "spec": {"size": "big", "color": "green", "tags": ["a", "b", "c"], "port": true, "nope": 1}, "status": {"ready": "yes"}});
    let got: Vec<String> = validate_create(&d, &bad)
        .iter()
        .map(Cause::display)
        .collect();
    assert_eq!(
        got,
        [
            "spec.color: Unsupported value: \"green\": supported values: \"red\", \"blue\"",
            "spec.port: Invalid value: \"boolean\": spec.port in body must be of type integer,string: \"boolean\"",
            "spec.size: Invalid value: \"string\": spec.size in body must be of type integer: \"string\"",
            "spec.tags: Too many: 3: must have at most 2 items",
            "status.ready: Invalid value: \"string\": status.ready in body must be of type boolean: \"string\"",
        ]
    );
    assert_eq!(unknown_fields(&d, &bad), ["spec.nope"]);
    let missing = json!({"metadata": {"name": "w", "namespace": "d"}, "spec": {"size": 11}});
    let got: Vec<String> = validate_create(&d, &missing)
        .iter()
        .map(Cause::display)
        .collect();
    assert_eq!(
        got,
        ["spec.size: Invalid value: 11: spec.size in body should be less than or equal to 10"]
    );
    let no_size = json!({"metadata": {"name": "w", "namespace": "d"}, "spec": {}});
    let got: Vec<String> = validate_create(&d, &no_size)
        .iter()
        .map(Cause::display)
        .collect();
    assert_eq!(got, ["spec.size: Required value"]);
    assert!(decode_check(&d, &json!({"metadata": {"name": 5}})).is_err());
}

#[test]
fn junk_never_panics() {
    let junk = [
        json!(null),
        json!(1),
        json!("x"),
        json!([]),
        json!({"metadata": 5, "spec": "x", "status": [], "data": 3, "rules": {}, "roleRef": 1, "subjects": "x"}),
        json!({"metadata": {"name": 1, "labels": [1], "ownerReferences": {}}, "spec": {"containers": [1, null, {"ports": "x", "env": [1], "volumeMounts": [null]}], "selector": {"matchExpressions": [1, {"operator": 5}]},
            "template": {"metadata": 1, "spec": []}, "ports": [1, {"port": "x", "targetPort": {}}], "strategy": {"type": 1}, "versions": [1], "names": 1, "jobTemplate": 1, "schedule": 5}}),
    ];
    let mut defs = builtin();
    defs.push(widget_def());
    for d in &defs {
        for j in &junk {
            let _ = decode_check(d, j);
            let _ = unknown_fields(d, j);
            let _ = validate_create(d, j);
            let _ = validate_update(d, j, j);
            let _ = validate_update(d, &json!({}), j);
        }
    }
}

#[test]
fn duplicate_fields_in_raw_bodies() {
    let raw = br#"{"metadata": {"name": "a", "name": "b"}, "spec": {"containers": [{"name": "c", "image": "x", "image": "y"}]}, "spec2": 1, "spec2": 2}"#;
    let dups = duplicate_fields(raw);
    assert_eq!(dups, ["metadata.name", "spec.containers[0].image", "spec2"]);
    let d = def("", "Pod");
    let err = strict_error_with_duplicates(&d, &["spec.foo".to_string()], &dups[..1]);
    assert_eq!(
        err.message,
        "Pod in version \"v1\" cannot be handled as a Pod: strict decoding error: unknown field \"spec.foo\", duplicate field \"metadata.name\""
    );
    assert!(duplicate_fields(b"{\"a\": [1, {\"b\": 1}").is_empty());
    assert!(duplicate_fields(b"not json").is_empty());
}

#[test]
fn one_pass_decode_matches_parse_and_scan() {
    let bodies: [&[u8]; 6] = [
        br#"{"metadata": {"name": "a", "name": "b"}, "spec": {"containers": [{"name": "c", "image": "x", "image": "y"}]}, "spec2": 1, "spec2": 2}"#,
        br#"{"a": [1, -2, 3.5, 1e300, 18446744073709551616, "\u00e9\ud83d\ude00", null, true], "b": {}}"#,
        br#"{"k\"ey": 1, "k\u0022ey": 2}"#,
        b"  {\"a\": 1}  ",
        b"[1, 2]",
        b"\"s\"",
    ];
    for raw in bodies {
        let (v, dups) = parse_json_with_duplicates(raw).expect("valid JSON");
        assert_eq!(v, serde_json::from_slice::<Value>(raw).expect("valid JSON"));
        assert_eq!(dups, duplicate_fields(raw));
    }
    for bad in [
        &b"{\"a\": 1} x"[..],
        b"{\"a\": [1, {\"b\": 1}",
        b"not json",
        b"",
        b"[1e400]",
    ] {
        let ours = parse_json_with_duplicates(bad).expect_err("invalid JSON");
        let theirs = serde_json::from_slice::<Value>(bad).expect_err("invalid JSON");
        assert_eq!(ours.to_string(), theirs.to_string());
    }
}

#[test]
fn empty_optional_collections_are_omitted_as_go_encodes() {
    let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "c", "annotations": {}, "labels": {}, "finalizers": [],
            "ownerReferences": null},
        "data": {}, "binaryData": {"b": "AA=="}});
    omit_empty(&def("", "ConfigMap"), &mut cm);
    assert_eq!(
        cm,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
            "binaryData": {"b": "AA=="}})
    );
    // Deep: a pod template's empty maps and lists go; structs stay, empty or not; required
    // lists stay even when empty.
    let mut d = json!({"metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}, "matchExpressions": []},
            "template": {"metadata": {"labels": {"app": "web"}, "annotations": {}},
                "spec": {"containers": [{"name": "c", "image": "i", "env": [], "args": [],
                    "resources": {}, "securityContext": {}}],
                    "volumes": [{"name": "v", "emptyDir": {}}], "nodeSelector": {}}}}});
    omit_empty(&def("apps", "Deployment"), &mut d);
    assert_eq!(
        d,
        json!({"metadata": {"name": "web"},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "i", "resources": {},
                        "securityContext": {}}],
                        "volumes": [{"name": "v", "emptyDir": {}}]}}}})
    );
    let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": []}});
    omit_empty(&def("", "Pod"), &mut pod);
    assert_eq!(pod["spec"]["containers"], json!([]));
}
