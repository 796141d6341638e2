//! Upstream's per-kind validation (`pkg/apis/*/validation/validation.go`): the rules clients
//! meet every day, with upstream's field paths and messages.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::resource::ResourceDef;
use kumo_apimachinery::Cause;
use kumo_apimachinery::validation as v;

type Causes = Vec<Cause>;

fn s<'a>(o: &'a Value, key: &str) -> &'a str {
    o.get(key).and_then(Value::as_str).unwrap_or("")
}

fn arr<'a>(o: &'a Value, key: &str) -> &'a [Value] {
    o.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn obj<'a>(o: &'a Value, key: &str) -> Option<&'a Value> {
    o.get(key).filter(|x| x.is_object())
}

fn set(o: &Value, key: &str) -> bool {
    o.get(key).is_some_and(|x| !x.is_null())
}

fn p(path: &str, child: &str) -> String {
    if path.is_empty() {
        child.to_string()
    } else {
        format!("{path}.{child}")
    }
}

fn idx(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

fn required(field: impl Into<String>) -> Cause {
    Cause::required(field)
}

fn required_detail(field: impl Into<String>, detail: &str) -> Cause {
    Cause::new(
        "FieldValueRequired",
        field,
        format!("Required value: {detail}"),
    )
}

fn not_found(field: impl Into<String>, value: &Value) -> Cause {
    Cause::new(
        "FieldValueNotFound",
        field,
        format!(
            "Not found: {}",
            kumo_apimachinery::status::render_value(value)
        ),
    )
}

fn each(field: &str, value: &Value, msgs: Vec<String>) -> Causes {
    msgs.into_iter()
        .map(|m| Cause::invalid(field, value, &m))
        .collect()
}

fn dns_label(field: &str, value: &str) -> Causes {
    each(field, &json!(value), v::is_dns1123_label(value))
}

fn dns_subdomain(field: &str, value: &str) -> Causes {
    each(field, &json!(value), v::is_dns1123_subdomain(value))
}

fn nonnegative(o: &Value, key: &str, field: &str) -> Causes {
    match o.get(key).and_then(Value::as_i64) {
        Some(n) if n < 0 => vec![Cause::invalid(
            field,
            &json!(n),
            "must be greater than or equal to 0",
        )],
        _ => Vec::new(),
    }
}

fn one_of(o: &Value, key: &str, field: &str, allowed: &[&str]) -> Causes {
    match o.get(key) {
        None | Some(Value::Null) => vec![required(field)],
        Some(Value::String(x)) if x.is_empty() => vec![required(field)],
        Some(Value::String(x)) if allowed.contains(&x.as_str()) => Vec::new(),
        Some(other) => vec![Cause::not_supported(field, other, allowed)],
    }
}

fn optional_one_of(o: &Value, key: &str, field: &str, allowed: &[&str]) -> Causes {
    if set(o, key) && !s(o, key).is_empty() {
        one_of(o, key, field, allowed)
    } else {
        Vec::new()
    }
}

/// Go's `%#v` of a `map[string]string`, as upstream renders template labels.
fn go_string_map(v: Option<&Value>) -> String {
    let Some(Value::Object(m)) = v else {
        return "map[string]string(nil)".into();
    };
    let mut pairs: Vec<String> = m
        .iter()
        .map(|(k, v)| format!("{:?}:{:?}", k, v.as_str().unwrap_or("")))
        .collect();
    pairs.sort();
    format!("map[string]string{{{}}}", pairs.join(", "))
}

/// Approximate value of a quantity, for comparisons.
fn quantity_value(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => {
            let s = s.trim();
            let split = s
                .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
                .unwrap_or(s.len());
            let (num, suffix) = s.split_at(split);
            let base: f64 = num.parse().ok()?;
            let mult = match suffix {
                "" => 1.0,
                "n" => 1e-9,
                "u" => 1e-6,
                "m" => 1e-3,
                "k" => 1e3,
                "M" => 1e6,
                "G" => 1e9,
                "T" => 1e12,
                "P" => 1e15,
                "E" => 1e18,
                "Ki" => 1024.0,
                "Mi" => 1024f64.powi(2),
                "Gi" => 1024f64.powi(3),
                "Ti" => 1024f64.powi(4),
                "Pi" => 1024f64.powi(5),
                "Ei" => 1024f64.powi(6),
                e if e.starts_with(['e', 'E']) => 10f64.powi(e[1..].parse::<i32>().ok()?),
                _ => return None,
            };
            Some(base * mult)
        }
        _ => None,
    }
}

// ---- label selectors -----------------------------------------------------------------------

/// `ValidateLabelSelector`.
fn label_selector(sel: &Value, path: &str) -> Causes {
    let mut c = v::validate_labels(sel.get("matchLabels"), &p(path, "matchLabels"));
    for (i, e) in arr(sel, "matchExpressions").iter().enumerate() {
        let ep = idx(&p(path, "matchExpressions"), i);
        let values = arr(e, "values");
        match s(e, "operator") {
            "In" | "NotIn" => {
                if values.is_empty() {
                    c.push(required_detail(
                        p(&ep, "values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    ));
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    c.push(Cause::forbidden(
                        p(&ep, "values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
            op => c.push(Cause::invalid(
                p(&ep, "operator"),
                &json!(op),
                "not a valid selector operator",
            )),
        }
        let key = s(e, "key");
        c.extend(each(&p(&ep, "key"), &json!(key), v::is_qualified_name(key)));
        for val in values {
            if let Some(val) = val.as_str() {
                c.extend(each(
                    &p(&ep, "values"),
                    &json!(val),
                    v::is_valid_label_value(val),
                ));
            }
        }
    }
    c
}

/// Whether a label selector (JSON) matches `labels`.
fn selector_matches(sel: &Value, labels: Option<&Value>) -> bool {
    let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
    if let Some(Value::Object(m)) = sel.get("matchLabels") {
        for (k, val) in m {
            if get(k) != val.as_str() {
                return false;
            }
        }
    }
    for e in arr(sel, "matchExpressions") {
        let key = s(e, "key");
        let values: Vec<&str> = arr(e, "values").iter().filter_map(Value::as_str).collect();
        let ok = match s(e, "operator") {
            "In" => get(key).is_some_and(|x| values.contains(&x)),
            "NotIn" => get(key).is_none_or(|x| !values.contains(&x)),
            "Exists" => get(key).is_some(),
            "DoesNotExist" => get(key).is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

fn selector_empty(sel: &Value) -> bool {
    let labels = sel
        .get("matchLabels")
        .and_then(Value::as_object)
        .is_none_or(|m| m.is_empty());
    labels && arr(sel, "matchExpressions").is_empty()
}

// ---- pods ----------------------------------------------------------------------------------

const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];

fn ports(list: &[Value], path: &str) -> Causes {
    let mut c = Vec::new();
    let mut names = BTreeSet::new();
    for (i, port) in list.iter().enumerate() {
        let pp = idx(path, i);
        let name = s(port, "name");
        if !name.is_empty() {
            let msgs = v::is_valid_port_name(name);
            if !msgs.is_empty() {
                c.extend(each(&p(&pp, "name"), &json!(name), msgs));
            } else if !names.insert(name.to_string()) {
                c.push(Cause::duplicate(p(&pp, "name"), &json!(name)));
            }
        }
        match port.get("containerPort").and_then(Value::as_i64) {
            None | Some(0) => c.push(required(p(&pp, "containerPort"))),
            Some(n) => c.extend(each(
                &p(&pp, "containerPort"),
                &json!(n),
                v::is_valid_port_num(n),
            )),
        }
        if let Some(h) = port.get("hostPort").and_then(Value::as_i64)
            && h != 0
        {
            c.extend(each(
                &p(&pp, "hostPort"),
                &json!(h),
                v::is_valid_port_num(h),
            ));
        }
        c.extend(one_of(port, "protocol", &p(&pp, "protocol"), PROTOCOLS));
    }
    c
}

fn env(list: &[Value], path: &str) -> Causes {
    let mut c = Vec::new();
    for (i, e) in list.iter().enumerate() {
        let ep = idx(path, i);
        let name = s(e, "name");
        if name.is_empty() {
            c.push(required(p(&ep, "name")));
        } else {
            c.extend(each(
                &p(&ep, "name"),
                &json!(name),
                v::is_relaxed_env_var_name(name),
            ));
        }
        if set(e, "valueFrom") && !s(e, "value").is_empty() {
            c.push(Cause::invalid(
                &ep,
                &json!(""),
                "may not be specified when `value` is not empty",
            ));
        }
    }
    c
}

fn probe(pr: &Value, path: &str, liveness_or_startup: bool) -> Causes {
    let mut c = Vec::new();
    let handlers = ["exec", "httpGet", "tcpSocket", "grpc"]
        .iter()
        .filter(|h| set(pr, h))
        .count();
    if handlers == 0 {
        c.push(required_detail(path, "must specify a handler type"));
    } else if handlers > 1 {
        c.push(Cause::forbidden(
            path,
            "may not specify more than 1 handler type",
        ));
    }
    for key in [
        "initialDelaySeconds",
        "timeoutSeconds",
        "periodSeconds",
        "successThreshold",
        "failureThreshold",
    ] {
        c.extend(nonnegative(pr, key, &p(path, key)));
    }
    if liveness_or_startup
        && let Some(n) = pr.get("successThreshold").and_then(Value::as_i64)
        && n != 1
    {
        c.push(Cause::invalid(
            p(path, "successThreshold"),
            &json!(n),
            "must be 1",
        ));
    }
    c
}

fn resources(r: &Value, path: &str) -> Causes {
    let mut c = Vec::new();
    let (Some(Value::Object(req)), Some(Value::Object(lim))) = (r.get("requests"), r.get("limits"))
    else {
        return c;
    };
    for (name, rq) in req {
        if let (Some(l), Some(rv), Some(lv)) = (
            lim.get(name),
            quantity_value(rq),
            lim.get(name).and_then(quantity_value),
        ) && rv > lv
        {
            c.push(Cause::invalid(
                format!("{path}.requests"),
                rq,
                &format!(
                    "must be less than or equal to {name} limit of {}",
                    kumo_apimachinery::status::render_value(l).trim_matches('"')
                ),
            ));
        }
    }
    c
}

fn container(
    ctr: &Value,
    path: &str,
    volumes: &BTreeSet<String>,
    restart_policy_allowed: bool,
    probes: bool,
) -> Causes {
    let mut c = Vec::new();
    let name = s(ctr, "name");
    if name.is_empty() {
        c.push(required(p(path, "name")));
    } else {
        c.extend(dns_label(&p(path, "name"), name));
    }
    let image = s(ctr, "image");
    if image.is_empty() {
        c.push(required(p(path, "image")));
    } else if image.trim() != image {
        c.push(Cause::invalid(
            p(path, "image"),
            &json!(image),
            "must not have leading or trailing whitespace",
        ));
    }
    c.extend(ports(arr(ctr, "ports"), &p(path, "ports")));
    c.extend(env(arr(ctr, "env"), &p(path, "env")));
    let mut mount_paths = BTreeSet::new();
    for (i, m) in arr(ctr, "volumeMounts").iter().enumerate() {
        let mp = idx(&p(path, "volumeMounts"), i);
        let n = s(m, "name");
        if n.is_empty() {
            c.push(required(p(&mp, "name")));
        } else if !volumes.contains(n) {
            c.push(not_found(p(&mp, "name"), &json!(n)));
        }
        let mount = s(m, "mountPath");
        if mount.is_empty() {
            c.push(required(p(&mp, "mountPath")));
        } else if !mount_paths.insert(mount.to_string()) {
            c.push(Cause::invalid(
                p(&mp, "mountPath"),
                &json!(mount),
                "must be unique",
            ));
        }
    }
    c.extend(one_of(
        ctr,
        "imagePullPolicy",
        &p(path, "imagePullPolicy"),
        PULL_POLICIES,
    ));
    c.extend(optional_one_of(
        ctr,
        "terminationMessagePolicy",
        &p(path, "terminationMessagePolicy"),
        &["File", "FallbackToLogsOnError"],
    ));
    if let Some(r) = obj(ctr, "resources") {
        c.extend(resources(r, &p(path, "resources")));
    }
    if set(ctr, "restartPolicy") && !restart_policy_allowed {
        c.push(Cause::forbidden(
            p(path, "restartPolicy"),
            "may not be set for non-init containers",
        ));
    } else if set(ctr, "restartPolicy") {
        c.extend(one_of(
            ctr,
            "restartPolicy",
            &p(path, "restartPolicy"),
            &["Always"],
        ));
    }
    if probes {
        for (key, live) in [
            ("livenessProbe", true),
            ("readinessProbe", false),
            ("startupProbe", true),
        ] {
            if let Some(pr) = obj(ctr, key) {
                c.extend(probe(pr, &p(path, key), live));
            }
        }
    }
    c
}

/// `ValidatePodSpec` (the rules clients meet).
pub(crate) fn pod_spec(spec: &Value, path: &str) -> Causes {
    let mut c = Vec::new();
    let mut volumes = BTreeSet::new();
    for (i, vol) in arr(spec, "volumes").iter().enumerate() {
        let vp = idx(&p(path, "volumes"), i);
        let name = s(vol, "name");
        if name.is_empty() {
            c.push(required(p(&vp, "name")));
        } else {
            c.extend(dns_label(&p(&vp, "name"), name));
            if !volumes.insert(name.to_string()) {
                c.push(Cause::duplicate(p(&vp, "name"), &json!(name)));
            }
        }
        let sources = vol
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, x)| k.as_str() != "name" && !x.is_null())
                    .count()
            })
            .unwrap_or(0);
        if sources == 0 {
            c.push(required_detail(&vp, "must specify a volume type"));
        } else if sources > 1 {
            c.push(Cause::forbidden(
                &vp,
                "may not specify more than 1 volume type",
            ));
        }
    }
    let containers = arr(spec, "containers");
    if containers.is_empty() {
        c.push(required(p(path, "containers")));
    }
    let mut names = BTreeSet::new();
    for (key, restart_allowed, probes) in [
        ("initContainers", true, false),
        ("containers", false, true),
        ("ephemeralContainers", false, false),
    ] {
        for (i, ctr) in arr(spec, key).iter().enumerate() {
            let cp = idx(&p(path, key), i);
            c.extend(container(ctr, &cp, &volumes, restart_allowed, probes));
            let name = s(ctr, "name");
            if !name.is_empty() && !names.insert(name.to_string()) {
                c.push(Cause::duplicate(p(&cp, "name"), &json!(name)));
            }
        }
    }
    c.extend(one_of(
        spec,
        "restartPolicy",
        &p(path, "restartPolicy"),
        &["Always", "OnFailure", "Never"],
    ));
    c.extend(one_of(
        spec,
        "dnsPolicy",
        &p(path, "dnsPolicy"),
        &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
    ));
    c.extend(v::validate_labels(
        spec.get("nodeSelector"),
        &p(path, "nodeSelector"),
    ));
    for key in ["hostname", "subdomain"] {
        let x = s(spec, key);
        if !x.is_empty() {
            c.extend(dns_label(&p(path, key), x));
        }
    }
    let sa = s(spec, "serviceAccountName");
    if !sa.is_empty() {
        c.extend(dns_subdomain(&p(path, "serviceAccountName"), sa));
    }
    if let Some(n) = spec.get("activeDeadlineSeconds").and_then(Value::as_i64)
        && !(1..=i64::from(i32::MAX)).contains(&n)
    {
        c.push(Cause::invalid(
            p(path, "activeDeadlineSeconds"),
            &json!(n),
            "must be between 1 and 2147483647, inclusive",
        ));
    }
    for (i, t) in arr(spec, "tolerations").iter().enumerate() {
        let tp = idx(&p(path, "tolerations"), i);
        c.extend(optional_one_of(
            t,
            "operator",
            &p(&tp, "operator"),
            &["Equal", "Exists"],
        ));
        c.extend(optional_one_of(
            t,
            "effect",
            &p(&tp, "effect"),
            &["NoSchedule", "PreferNoSchedule", "NoExecute"],
        ));
        if s(t, "operator") == "Exists" && !s(t, "value").is_empty() {
            c.push(Cause::invalid(
                p(&tp, "operator"),
                &json!(s(t, "value")),
                "value must be empty when `operator` is 'Exists'",
            ));
        }
        let key = s(t, "key");
        if !key.is_empty() {
            c.extend(each(&p(&tp, "key"), &json!(key), v::is_qualified_name(key)));
        }
    }
    c
}

/// `ValidatePodTemplateSpec`: labels, annotations and the pod spec.
fn pod_template(t: &Value, path: &str) -> Causes {
    let mut c = Vec::new();
    let meta = t.get("metadata").unwrap_or(&Value::Null);
    c.extend(v::validate_labels(
        meta.get("labels"),
        &p(path, "metadata.labels"),
    ));
    c.extend(v::validate_annotations(
        meta.get("annotations"),
        &p(path, "metadata.annotations"),
    ));
    c.extend(pod_spec(
        t.get("spec").unwrap_or(&json!({})),
        &p(path, "spec"),
    ));
    c
}

/// Selector + template of a controller (`ValidatePodTemplateSpecForReplicaSet` and friends).
fn selector_and_template(spec: &Value, path: &str, what: &str, restart: &[&str]) -> Causes {
    let mut c = Vec::new();
    match obj(spec, "selector") {
        None => c.push(required(p(path, "selector"))),
        Some(sel) => {
            c.extend(label_selector(sel, &p(path, "selector")));
            if selector_empty(sel) {
                c.push(Cause::invalid(
                    p(path, "selector"),
                    sel,
                    &format!("empty selector is invalid for {what}"),
                ));
            }
        }
    }
    let Some(t) = obj(spec, "template") else {
        c.push(required(p(path, "template")));
        return c;
    };
    let tp = p(path, "template");
    if let Some(sel) = obj(spec, "selector")
        && !selector_empty(sel)
    {
        let labels = t.pointer("/metadata/labels");
        if !selector_matches(sel, labels) {
            c.push(Cause::new(
                "FieldValueInvalid",
                p(&tp, "metadata.labels"),
                format!(
                    "Invalid value: {}: `selector` does not match template `labels`",
                    go_string_map(labels)
                ),
            ));
        }
    }
    c.extend(pod_template(t, &tp));
    let rp = t
        .pointer("/spec/restartPolicy")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !rp.is_empty() && !restart.contains(&rp) && ["Always", "OnFailure", "Never"].contains(&rp) {
        c.push(Cause::not_supported(
            p(&tp, "spec.restartPolicy"),
            &json!(rp),
            restart,
        ));
    }
    if restart == ["Always"]
        && t.pointer("/spec/activeDeadlineSeconds")
            .is_some_and(|x| !x.is_null())
    {
        c.push(Cause::forbidden(
            p(&tp, "spec.activeDeadlineSeconds"),
            &format!("activeDeadlineSeconds in {what} is not Supported"),
        ));
    }
    c
}

/// `ValidatePositiveIntOrPercent` and `IsNotMoreThan100Percent`.
fn int_or_percent(o: &Value, key: &str, path: &str, max_100: bool) -> Causes {
    let field = p(path, key);
    match o.get(key) {
        Some(Value::String(x)) => {
            let mut c = each(&field, &json!(x), v::is_valid_percent(x));
            if c.is_empty()
                && max_100
                && x.trim_end_matches('%')
                    .parse::<i64>()
                    .is_ok_and(|n| n > 100)
            {
                c.push(Cause::invalid(
                    &field,
                    &json!(x),
                    "must not be greater than 100%",
                ));
            }
            c
        }
        Some(Value::Number(n)) if n.as_i64().is_some_and(|i| i < 0) => {
            vec![Cause::invalid(
                &field,
                &Value::Number(n.clone()),
                "must be greater than or equal to 0",
            )]
        }
        _ => Vec::new(),
    }
}

fn is_zero(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Number(n)) => n.as_i64() == Some(0),
        Some(Value::String(s)) => s == "0%" || s == "0",
        _ => false,
    }
}

// ---- per kind ------------------------------------------------------------------------------

fn deployment(o: &Value) -> Causes {
    let spec = o.get("spec").unwrap_or(&Value::Null);
    let mut c = nonnegative(spec, "replicas", "spec.replicas");
    c.extend(selector_and_template(
        spec,
        "spec",
        "deployment",
        &["Always"],
    ));
    if let Some(strategy) = obj(spec, "strategy") {
        match s(strategy, "type") {
            "Recreate" => {
                if set(strategy, "rollingUpdate") {
                    c.push(Cause::forbidden(
                        "spec.strategy.rollingUpdate",
                        "may not be specified when strategy `type` is 'Recreate'",
                    ));
                }
            }
            "RollingUpdate" => match obj(strategy, "rollingUpdate") {
                None => c.push(required_detail(
                    "spec.strategy.rollingUpdate",
                    "this should be defaulted and never be nil",
                )),
                Some(ru) => {
                    let path = "spec.strategy.rollingUpdate";
                    c.extend(int_or_percent(ru, "maxUnavailable", path, true));
                    c.extend(int_or_percent(ru, "maxSurge", path, false));
                    if is_zero(ru.get("maxUnavailable")) && is_zero(ru.get("maxSurge")) {
                        c.push(Cause::invalid(
                            "spec.strategy.rollingUpdate.maxUnavailable",
                            ru.get("maxUnavailable").unwrap_or(&Value::Null),
                            "may not be 0 when `maxSurge` is 0",
                        ));
                    }
                }
            },
            other => c.push(Cause::not_supported(
                "spec.strategy",
                &json!(other),
                &["Recreate", "RollingUpdate"],
            )),
        }
    }
    c.extend(nonnegative(spec, "minReadySeconds", "spec.minReadySeconds"));
    c.extend(nonnegative(
        spec,
        "revisionHistoryLimit",
        "spec.revisionHistoryLimit",
    ));
    if let Some(pd) = spec.get("progressDeadlineSeconds").and_then(Value::as_i64) {
        c.extend(nonnegative(
            spec,
            "progressDeadlineSeconds",
            "spec.progressDeadlineSeconds",
        ));
        let min_ready = spec
            .get("minReadySeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if pd <= min_ready {
            c.push(Cause::invalid(
                "spec.progressDeadlineSeconds",
                &json!(pd),
                "must be greater than minReadySeconds",
            ));
        }
    }
    c
}

fn replica_set(o: &Value) -> Causes {
    let spec = o.get("spec").unwrap_or(&Value::Null);
    let mut c = nonnegative(spec, "replicas", "spec.replicas");
    c.extend(nonnegative(spec, "minReadySeconds", "spec.minReadySeconds"));
    c.extend(selector_and_template(
        spec,
        "spec",
        "deployment",
        &["Always"],
    ));
    c
}

fn stateful_set(o: &Value) -> Causes {
    let spec = o.get("spec").unwrap_or(&Value::Null);
    let mut c = optional_one_of(
        spec,
        "podManagementPolicy",
        "spec.podManagementPolicy",
        &["OrderedReady", "Parallel"],
    );
    if let Some(us) = obj(spec, "updateStrategy") {
        match s(us, "type") {
            "OnDelete" => {
                if set(us, "rollingUpdate") {
                    c.push(Cause::invalid(
                        "spec.updateStrategy.rollingUpdate",
                        us.get("rollingUpdate").unwrap_or(&Value::Null),
                        "only allowed for updateStrategy 'RollingUpdate'",
                    ));
                }
            }
            "RollingUpdate" | "" => {
                if let Some(ru) = obj(us, "rollingUpdate") {
                    c.extend(nonnegative(
                        ru,
                        "partition",
                        "spec.updateStrategy.rollingUpdate.partition",
                    ));
                }
            }
            other => c.push(Cause::not_supported(
                "spec.updateStrategy.type",
                &json!(other),
                &["OnDelete", "RollingUpdate"],
            )),
        }
    }
    c.extend(nonnegative(spec, "replicas", "spec.replicas"));
    c.extend(nonnegative(spec, "minReadySeconds", "spec.minReadySeconds"));
    c.extend(selector_and_template(
        spec,
        "spec",
        "statefulset",
        &["Always"],
    ));
    c
}

fn daemon_set(o: &Value) -> Causes {
    let spec = o.get("spec").unwrap_or(&Value::Null);
    let mut c = selector_and_template(spec, "spec", "daemonset", &["Always"]);
    if let Some(us) = obj(spec, "updateStrategy") {
        match s(us, "type") {
            "OnDelete" | "" => {}
            "RollingUpdate" => {
                if let Some(ru) = obj(us, "rollingUpdate") {
                    let path = "spec.updateStrategy.rollingUpdate";
                    c.extend(int_or_percent(ru, "maxUnavailable", path, true));
                    c.extend(int_or_percent(ru, "maxSurge", path, false));
                    if is_zero(ru.get("maxUnavailable")) && is_zero(ru.get("maxSurge")) {
                        c.push(Cause::invalid(
                            "spec.updateStrategy.rollingUpdate.maxUnavailable",
                            ru.get("maxUnavailable").unwrap_or(&Value::Null),
                            "may not be 0 when `maxSurge` is 0",
                        ));
                    }
                }
            }
            other => c.push(Cause::not_supported(
                "spec.updateStrategy.type",
                &json!(other),
                &["OnDelete", "RollingUpdate"],
            )),
        }
    }
    c.extend(nonnegative(spec, "minReadySeconds", "spec.minReadySeconds"));
    c.extend(nonnegative(
        spec,
        "revisionHistoryLimit",
        "spec.revisionHistoryLimit",
    ));
    c
}

fn job_spec(spec: &Value, path: &str, with_selector: bool) -> Causes {
    let mut c = Vec::new();
    for key in [
        "parallelism",
        "completions",
        "activeDeadlineSeconds",
        "backoffLimit",
        "ttlSecondsAfterFinished",
    ] {
        c.extend(nonnegative(spec, key, &p(path, key)));
    }
    if let Some(n) = spec.get("activeDeadlineSeconds").and_then(Value::as_i64)
        && n == 0
    {
        c.push(Cause::invalid(
            p(path, "activeDeadlineSeconds"),
            &json!(n),
            "must be greater than 0",
        ));
    }
    c.extend(optional_one_of(
        spec,
        "completionMode",
        &p(path, "completionMode"),
        &["NonIndexed", "Indexed"],
    ));
    if s(spec, "completionMode") == "Indexed" && !set(spec, "completions") {
        c.push(required_detail(
            p(path, "completions"),
            "when completion mode is Indexed",
        ));
    }
    match obj(spec, "template") {
        None => c.push(required(p(path, "template"))),
        Some(t) => {
            let tp = p(path, "template");
            if with_selector && let Some(sel) = obj(spec, "selector") {
                c.extend(label_selector(sel, &p(path, "selector")));
                if !selector_empty(sel) && !selector_matches(sel, t.pointer("/metadata/labels")) {
                    c.push(Cause::new(
                        "FieldValueInvalid",
                        p(&tp, "metadata.labels"),
                        format!(
                            "Invalid value: {}: `selector` does not match template `labels`",
                            go_string_map(t.pointer("/metadata/labels"))
                        ),
                    ));
                }
            }
            c.extend(pod_template(t, &tp));
            let rp = t
                .pointer("/spec/restartPolicy")
                .and_then(Value::as_str)
                .unwrap_or("");
            if rp != "OnFailure" && rp != "Never" {
                c.push(Cause::not_supported(
                    p(&tp, "spec.restartPolicy"),
                    &json!(rp),
                    &["OnFailure", "Never"],
                ));
            }
        }
    }
    c
}

/// A five-field cron schedule (or a `@` macro) upstream's parser accepts.
fn cron_ok(schedule: &str) -> bool {
    let sched = schedule.trim();
    let sched = match sched
        .strip_prefix("TZ=")
        .or_else(|| sched.strip_prefix("CRON_TZ="))
    {
        Some(rest) => rest.split_once(' ').map(|(_, r)| r.trim()).unwrap_or(""),
        None => sched,
    };
    if let Some(m) = sched.strip_prefix('@') {
        return matches!(
            m,
            "yearly" | "annually" | "monthly" | "weekly" | "daily" | "midnight" | "hourly"
        ) || m.starts_with("every ");
    }
    let fields: Vec<&str> = sched.split_whitespace().collect();
    fields.len() == 5
        && fields.iter().all(|f| {
            f.split(',').all(|part| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '*' | '/' | '-' | '?'))
            })
        })
}

fn cron_job(o: &Value) -> Causes {
    let spec = o.get("spec").unwrap_or(&Value::Null);
    let mut c = Vec::new();
    let name = o
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if name.len() > 52 {
        c.push(Cause::invalid(
            "metadata.name",
            &json!(name),
            "must be no more than 52 characters",
        ));
    }
    let schedule = s(spec, "schedule");
    if schedule.is_empty() {
        c.push(required("spec.schedule"));
    } else if !cron_ok(schedule) {
        c.push(Cause::invalid(
            "spec.schedule",
            &json!(schedule),
            &format!("unparseable schedule: {schedule:?}"),
        ));
    }
    c.extend(optional_one_of(
        spec,
        "concurrencyPolicy",
        "spec.concurrencyPolicy",
        &["Allow", "Forbid", "Replace"],
    ));
    c.extend(nonnegative(
        spec,
        "startingDeadlineSeconds",
        "spec.startingDeadlineSeconds",
    ));
    c.extend(nonnegative(
        spec,
        "successfulJobsHistoryLimit",
        "spec.successfulJobsHistoryLimit",
    ));
    c.extend(nonnegative(
        spec,
        "failedJobsHistoryLimit",
        "spec.failedJobsHistoryLimit",
    ));
    match spec.pointer("/jobTemplate/spec") {
        Some(js) if js.is_object() => c.extend(job_spec(js, "spec.jobTemplate.spec", false)),
        _ => c.push(required("spec.jobTemplate.spec.template")),
    }
    c
}

fn service(o: &Value) -> Causes {
    let spec = o.get("spec").unwrap_or(&Value::Null);
    let mut c = Vec::new();
    let type_ = s(spec, "type");
    c.extend(one_of(
        spec,
        "type",
        "spec.type",
        &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
    ));
    let headless = s(spec, "clusterIP") == "None";
    let ports_list = arr(spec, "ports");
    if type_ == "ExternalName" {
        let ext = s(spec, "externalName");
        if ext.is_empty() {
            c.push(required("spec.externalName"));
        } else {
            c.extend(dns_subdomain(
                "spec.externalName",
                ext.trim_end_matches('.'),
            ));
        }
    } else if ports_list.is_empty() && !headless {
        c.push(required("spec.ports"));
    }
    let require_name = ports_list.len() > 1;
    let mut names = BTreeSet::new();
    let mut port_protocols = BTreeSet::new();
    for (i, sp) in ports_list.iter().enumerate() {
        let pp = idx("spec.ports", i);
        let name = s(sp, "name");
        if require_name && name.is_empty() {
            c.push(required(p(&pp, "name")));
        } else if !name.is_empty() {
            c.extend(dns_label(&p(&pp, "name"), name));
            if !names.insert(name.to_string()) {
                c.push(Cause::duplicate(p(&pp, "name"), &json!(name)));
            }
        }
        let port = sp.get("port").and_then(Value::as_i64).unwrap_or(0);
        c.extend(each(
            &p(&pp, "port"),
            &json!(port),
            v::is_valid_port_num(port),
        ));
        c.extend(one_of(sp, "protocol", &p(&pp, "protocol"), PROTOCOLS));
        match sp.get("targetPort") {
            Some(Value::Number(n)) => {
                let t = n.as_i64().unwrap_or(0);
                c.extend(each(
                    &p(&pp, "targetPort"),
                    &json!(t),
                    v::is_valid_port_num(t),
                ));
            }
            Some(Value::String(t)) => {
                c.extend(each(
                    &p(&pp, "targetPort"),
                    &json!(t),
                    v::is_valid_port_name(t),
                ));
            }
            _ => {}
        }
        if let Some(np) = sp.get("nodePort").and_then(Value::as_i64)
            && np != 0
        {
            if type_ == "ClusterIP" || type_ == "ExternalName" {
                c.push(Cause::forbidden(
                    p(&pp, "nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            } else {
                c.extend(each(
                    &p(&pp, "nodePort"),
                    &json!(np),
                    v::is_valid_port_num(np),
                ));
            }
        }
        if !port_protocols.insert((port, s(sp, "protocol").to_string())) {
            c.push(Cause::duplicate(&pp, sp));
        }
    }
    c.extend(v::validate_labels(spec.get("selector"), "spec.selector"));
    c.extend(optional_one_of(
        spec,
        "sessionAffinity",
        "spec.sessionAffinity",
        &["ClientIP", "None"],
    ));
    c.extend(optional_one_of(
        spec,
        "externalTrafficPolicy",
        "spec.externalTrafficPolicy",
        &["Cluster", "Local"],
    ));
    c.extend(optional_one_of(
        spec,
        "internalTrafficPolicy",
        "spec.internalTrafficPolicy",
        &["Cluster", "Local"],
    ));
    c.extend(optional_one_of(
        spec,
        "ipFamilyPolicy",
        "spec.ipFamilyPolicy",
        &["PreferDualStack", "RequireDualStack", "SingleStack"],
    ));
    for (i, f) in arr(spec, "ipFamilies").iter().enumerate() {
        if !matches!(f.as_str(), Some("IPv4") | Some("IPv6")) {
            c.push(Cause::not_supported(
                idx("spec.ipFamilies", i),
                f,
                &["IPv4", "IPv6"],
            ));
        }
    }
    c
}

fn data_keys(o: &Value, kind: &str) -> Causes {
    let mut c = Vec::new();
    let mut seen = BTreeSet::new();
    let mut total = 0usize;
    for key in ["data", "binaryData", "stringData"] {
        if kind == "ConfigMap" && key == "stringData" || kind == "Secret" && key == "binaryData" {
            continue;
        }
        for (k, val) in o.get(key).and_then(Value::as_object).into_iter().flatten() {
            let path = format!("{key}[{k}]");
            c.extend(each(&path, &json!(k), v::is_config_map_key(k)));
            if kind == "ConfigMap" && !seen.insert(k.clone()) {
                c.push(Cause::invalid(
                    "binaryData",
                    &json!(k),
                    "duplicate of key present in data",
                ));
            }
            total += val.as_str().map(str::len).unwrap_or(0);
        }
    }
    let limit = 1024 * 1024;
    if total > limit {
        let field = if kind == "ConfigMap" { "" } else { "data" };
        c.push(Cause::new(
            "FieldValueTooLong",
            field,
            format!("Too long: may not be more than {limit} bytes"),
        ));
    }
    c
}

fn secret(o: &Value) -> Causes {
    let mut c = data_keys(o, "Secret");
    let has = |k: &str| {
        o.get("data").and_then(|d| d.get(k)).is_some()
            || o.get("stringData").and_then(|d| d.get(k)).is_some()
    };
    let sa_name = o
        .pointer("/metadata/annotations/kubernetes.io~1service-account.name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let missing: &[&str] = match s(o, "type") {
        "kubernetes.io/service-account-token" if sa_name.is_empty() => {
            c.push(required(
                "metadata.annotations[kubernetes.io/service-account.name]",
            ));
            &[]
        }
        "kubernetes.io/dockercfg" => &[".dockercfg"],
        "kubernetes.io/dockerconfigjson" => &[".dockerconfigjson"],
        "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
            &["username", "password"]
        }
        "kubernetes.io/ssh-auth" => &["ssh-privatekey"],
        "kubernetes.io/tls" => &["tls.crt", "tls.key"],
        _ => &[],
    };
    for key in missing {
        if !has(key) {
            c.push(required(format!("data[{key}]")));
        }
    }
    c
}

fn namespace(o: &Value) -> Causes {
    let mut c = Vec::new();
    for (i, f) in arr(o.get("spec").unwrap_or(&Value::Null), "finalizers")
        .iter()
        .enumerate()
    {
        let f = f.as_str().unwrap_or("");
        c.extend(each(
            &idx("spec.finalizers", i),
            &json!(f),
            v::is_qualified_name(f),
        ));
        if !f.contains('/') && f != "kubernetes" {
            c.push(Cause::invalid(
                idx("spec.finalizers", i),
                &json!(f),
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
    }
    c
}

fn rbac_rules(o: &Value, namespaced: bool) -> Causes {
    let mut c = Vec::new();
    for (i, r) in arr(o, "rules").iter().enumerate() {
        let rp = idx("rules", i);
        if arr(r, "verbs").is_empty() {
            c.push(required_detail(
                p(&rp, "verbs"),
                "verbs must contain at least one value",
            ));
        }
        let non_resource = !arr(r, "nonResourceURLs").is_empty();
        if non_resource {
            if namespaced {
                c.push(Cause::invalid(
                    p(&rp, "nonResourceURLs"),
                    r.get("nonResourceURLs").unwrap_or(&Value::Null),
                    "namespaced rules cannot apply to non-resource URLs",
                ));
            }
            if !arr(r, "apiGroups").is_empty()
                || !arr(r, "resources").is_empty()
                || !arr(r, "resourceNames").is_empty()
            {
                c.push(Cause::invalid(
                    p(&rp, "nonResourceURLs"),
                    r.get("nonResourceURLs").unwrap_or(&Value::Null),
                    "rules cannot apply to both regular resources and non-resource URLs",
                ));
            }
            continue;
        }
        if arr(r, "apiGroups").is_empty() {
            c.push(required_detail(
                p(&rp, "apiGroups"),
                "resource rules must supply at least one api group",
            ));
        }
        if arr(r, "resources").is_empty() {
            c.push(required_detail(
                p(&rp, "resources"),
                "resource rules must supply at least one resource",
            ));
        }
    }
    c
}

fn role_binding(o: &Value, namespaced: bool) -> Causes {
    let mut c = Vec::new();
    let role_ref = o.get("roleRef").unwrap_or(&Value::Null);
    let kinds: &[&str] = if namespaced {
        &["Role", "ClusterRole"]
    } else {
        &["ClusterRole"]
    };
    if s(role_ref, "apiGroup") != "rbac.authorization.k8s.io" {
        c.push(Cause::not_supported(
            "roleRef.apiGroup",
            &json!(s(role_ref, "apiGroup")),
            &["rbac.authorization.k8s.io"],
        ));
    }
    match s(role_ref, "kind") {
        "" => c.push(required("roleRef.kind")),
        k if !kinds.contains(&k) => c.push(Cause::not_supported("roleRef.kind", &json!(k), kinds)),
        _ => {}
    }
    let name = s(role_ref, "name");
    if name.is_empty() {
        c.push(required("roleRef.name"));
    } else {
        c.extend(each(
            "roleRef.name",
            &json!(name),
            v::is_valid_path_segment_name(name),
        ));
    }
    for (i, subj) in arr(o, "subjects").iter().enumerate() {
        let sp = idx("subjects", i);
        let name = s(subj, "name");
        if name.is_empty() {
            c.push(required(p(&sp, "name")));
        }
        match s(subj, "kind") {
            "ServiceAccount" => {
                if !name.is_empty() {
                    c.extend(dns_subdomain(&p(&sp, "name"), name));
                }
                if !s(subj, "apiGroup").is_empty() {
                    c.push(Cause::not_supported(
                        p(&sp, "apiGroup"),
                        &json!(s(subj, "apiGroup")),
                        &[""],
                    ));
                }
                if !namespaced && s(subj, "namespace").is_empty() {
                    c.push(required(p(&sp, "namespace")));
                }
            }
            "User" | "Group" => {
                if s(subj, "apiGroup") != "rbac.authorization.k8s.io" {
                    c.push(Cause::not_supported(
                        p(&sp, "apiGroup"),
                        &json!(s(subj, "apiGroup")),
                        &["rbac.authorization.k8s.io"],
                    ));
                }
            }
            k => c.push(Cause::not_supported(
                p(&sp, "kind"),
                &json!(k),
                &["ServiceAccount", "User", "Group"],
            )),
        }
    }
    c
}

fn crd(o: &Value) -> Causes {
    let mut c = Vec::new();
    let spec = o.get("spec").unwrap_or(&Value::Null);
    let group = s(spec, "group");
    let names = spec.get("names").unwrap_or(&Value::Null);
    let plural = s(names, "plural");
    let name = o
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if name != format!("{plural}.{group}") {
        c.push(Cause::invalid(
            "metadata.name",
            &json!(name),
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    if group.is_empty() {
        c.push(required("spec.group"));
    } else {
        c.extend(dns_subdomain("spec.group", group));
        if !group.contains('.') {
            c.push(Cause::invalid(
                "spec.group",
                &json!(group),
                "should be a domain with at least one dot",
            ));
        }
    }
    c.extend(one_of(
        spec,
        "scope",
        "spec.scope",
        &["Cluster", "Namespaced"],
    ));
    if plural.is_empty() {
        c.push(required("spec.names.plural"));
    } else {
        c.extend(dns_label("spec.names.plural", plural));
    }
    let kind = s(names, "kind");
    if kind.is_empty() {
        c.push(required("spec.names.kind"));
    }
    let singular = s(names, "singular");
    if !singular.is_empty() {
        c.extend(dns_label("spec.names.singular", singular));
    }
    let versions = arr(spec, "versions");
    if versions.is_empty() {
        c.push(required_detail(
            "spec.versions",
            "must have exactly one version marked as storage version",
        ));
    } else {
        let storage = versions
            .iter()
            .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
            .count();
        if storage != 1 {
            c.push(Cause::invalid(
                "spec.versions",
                spec.get("versions").unwrap_or(&Value::Null),
                "must have exactly one version marked as storage version",
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, ver) in versions.iter().enumerate() {
            let vp = idx("spec.versions", i);
            let vn = s(ver, "name");
            if vn.is_empty() {
                c.push(required(p(&vp, "name")));
            } else {
                c.extend(dns_label(&p(&vp, "name"), vn));
                if !seen.insert(vn.to_string()) {
                    c.push(Cause::duplicate(p(&vp, "name"), &json!(vn)));
                }
            }
        }
    }
    c
}

fn priority_class(o: &Value) -> Causes {
    let mut c = Vec::new();
    let name = o
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let value = o.get("value").and_then(Value::as_i64).unwrap_or(0);
    let system = name.starts_with("system-");
    if system && !matches!(name, "system-cluster-critical" | "system-node-critical") {
        c.push(Cause::forbidden(
            "metadata.name",
            "priority class names with 'system-' prefix are reserved",
        ));
    }
    if !system && value > 1_000_000_000 {
        c.push(Cause::forbidden(
            "value",
            "maximum allowed value of a user defined priority is 1000000000",
        ));
    }
    c.extend(optional_one_of(
        o,
        "preemptionPolicy",
        "preemptionPolicy",
        &["Never", "PreemptLowerPriority"],
    ));
    c
}

fn pdb(o: &Value) -> Causes {
    let spec = o.get("spec").unwrap_or(&Value::Null);
    let mut c = Vec::new();
    if set(spec, "minAvailable") && set(spec, "maxUnavailable") {
        c.push(Cause::invalid(
            "spec",
            spec,
            "minAvailable and maxUnavailable cannot be both set",
        ));
    }
    c.extend(int_or_percent(spec, "minAvailable", "spec", true));
    c.extend(int_or_percent(spec, "maxUnavailable", "spec", true));
    if let Some(sel) = obj(spec, "selector") {
        c.extend(label_selector(sel, "spec.selector"));
    }
    c
}

fn pvc(o: &Value) -> Causes {
    let spec = o.get("spec").unwrap_or(&Value::Null);
    let mut c = Vec::new();
    let modes = arr(spec, "accessModes");
    if modes.is_empty() {
        c.push(required_detail(
            "spec.accessModes",
            "at least 1 access mode is required",
        ));
    }
    for m in modes {
        if !matches!(
            m.as_str(),
            Some("ReadWriteOnce" | "ReadOnlyMany" | "ReadWriteMany" | "ReadWriteOncePod")
        ) {
            c.push(Cause::not_supported(
                "spec.accessModes",
                m,
                &[
                    "ReadOnlyMany",
                    "ReadWriteMany",
                    "ReadWriteOnce",
                    "ReadWriteOncePod",
                ],
            ));
        }
    }
    let has_data_source = set(spec, "dataSource") || set(spec, "dataSourceRef");
    if spec.pointer("/resources/requests/storage").is_none() && !has_data_source {
        c.push(required("spec.resources[storage]"));
    }
    c.extend(optional_one_of(
        spec,
        "volumeMode",
        "spec.volumeMode",
        &["Block", "Filesystem"],
    ));
    c
}

fn storage_class(o: &Value) -> Causes {
    let mut c = Vec::new();
    let prov = s(o, "provisioner");
    if prov.is_empty() {
        c.push(required("provisioner"));
    } else {
        c.extend(each(
            "provisioner",
            &json!(prov),
            v::is_qualified_name(&prov.to_lowercase()),
        ));
    }
    c.extend(optional_one_of(
        o,
        "reclaimPolicy",
        "reclaimPolicy",
        &["Delete", "Retain"],
    ));
    c.extend(optional_one_of(
        o,
        "volumeBindingMode",
        "volumeBindingMode",
        &["Immediate", "WaitForFirstConsumer"],
    ));
    c
}

fn lease(o: &Value) -> Causes {
    let spec = o.get("spec").unwrap_or(&Value::Null);
    let mut c = Vec::new();
    if let Some(n) = spec.get("leaseDurationSeconds").and_then(Value::as_i64)
        && n <= 0
    {
        c.push(Cause::invalid(
            "spec.leaseDurationSeconds",
            &json!(n),
            "must be greater than 0",
        ));
    }
    c.extend(nonnegative(
        spec,
        "leaseTransitions",
        "spec.leaseTransitions",
    ));
    c
}

fn endpoint_slice(o: &Value) -> Causes {
    let mut c = one_of(o, "addressType", "addressType", &["IPv4", "IPv6", "FQDN"]);
    for (i, port) in arr(o, "ports").iter().enumerate() {
        let pp = idx("ports", i);
        if let Some(n) = port.get("port").and_then(Value::as_i64) {
            c.extend(each(&p(&pp, "port"), &json!(n), v::is_valid_port_num(n)));
        }
        c.extend(optional_one_of(
            port,
            "protocol",
            &p(&pp, "protocol"),
            PROTOCOLS,
        ));
    }
    for (i, e) in arr(o, "endpoints").iter().enumerate() {
        let addrs = arr(e, "addresses");
        if addrs.is_empty() {
            c.push(required_detail(
                idx("endpoints", i) + ".addresses",
                "must contain at least 1 address",
            ));
        }
    }
    c
}

fn ingress(o: &Value) -> Causes {
    let spec = o.get("spec").unwrap_or(&Value::Null);
    let mut c = Vec::new();
    for (i, rule) in arr(spec, "rules").iter().enumerate() {
        let rp = idx("spec.rules", i);
        let host = s(rule, "host");
        if !host.is_empty() {
            let h = host.strip_prefix("*.").unwrap_or(host);
            c.extend(dns_subdomain(&p(&rp, "host"), h));
        }
        for (j, path) in rule
            .pointer("/http/paths")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let pp = format!("{rp}.http.paths[{j}]");
            match s(path, "pathType") {
                "" => c.push(required_detail(
                    p(&pp, "pathType"),
                    "pathType must be specified",
                )),
                "Exact" | "Prefix" | "ImplementationSpecific" => {}
                other => c.push(Cause::not_supported(
                    p(&pp, "pathType"),
                    &json!(other),
                    &["Exact", "ImplementationSpecific", "Prefix"],
                )),
            }
            let pth = s(path, "path");
            if matches!(s(path, "pathType"), "Exact" | "Prefix") && !pth.starts_with('/') {
                c.push(Cause::invalid(
                    p(&pp, "path"),
                    &json!(pth),
                    "must be an absolute path",
                ));
            }
            if !set(path, "backend") {
                c.push(required(p(&pp, "backend")));
            }
        }
    }
    c
}

fn event(o: &Value) -> Causes {
    let mut c = Vec::new();
    let ns = o
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let involved_ns = o
        .pointer("/involvedObject/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !involved_ns.is_empty() && !ns.is_empty() && involved_ns != ns {
        c.push(Cause::invalid(
            "involvedObject.namespace",
            &json!(involved_ns),
            "does not match event.namespace",
        ));
    }
    c
}

/// Create-time validation of a built-in kind (metadata is validated by the caller).
pub(crate) fn create(def: &ResourceDef, o: &Value) -> Causes {
    match (def.group.as_str(), def.kind.as_str()) {
        ("", "Pod") => pod_spec(o.get("spec").unwrap_or(&json!({})), "spec"),
        ("", "PodTemplate") => match obj(o, "template") {
            Some(t) => pod_template(t, "template"),
            None => vec![required("template")],
        },
        ("", "Service") => service(o),
        ("", "ConfigMap") => data_keys(o, "ConfigMap"),
        ("", "Secret") => secret(o),
        ("", "Namespace") => namespace(o),
        ("", "PersistentVolumeClaim") => pvc(o),
        ("", "Event") => event(o),
        ("apps", "Deployment") => deployment(o),
        ("apps", "ReplicaSet") => replica_set(o),
        ("apps", "StatefulSet") => stateful_set(o),
        ("apps", "DaemonSet") => daemon_set(o),
        ("batch", "Job") => job_spec(o.get("spec").unwrap_or(&json!({})), "spec", true),
        ("batch", "CronJob") => cron_job(o),
        ("rbac.authorization.k8s.io", "Role") => rbac_rules(o, true),
        ("rbac.authorization.k8s.io", "ClusterRole") => rbac_rules(o, false),
        ("rbac.authorization.k8s.io", "RoleBinding") => role_binding(o, true),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => role_binding(o, false),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => crd(o),
        ("scheduling.k8s.io", "PriorityClass") => priority_class(o),
        ("policy", "PodDisruptionBudget") => pdb(o),
        ("storage.k8s.io", "StorageClass") => storage_class(o),
        ("coordination.k8s.io", "Lease") => lease(o),
        ("discovery.k8s.io", "EndpointSlice") => endpoint_slice(o),
        ("networking.k8s.io", "Ingress") => ingress(o),
        _ => Vec::new(),
    }
}

fn immutable(old: &Value, new: &Value, pointer: &str, field: &str) -> Causes {
    let null = Value::Null;
    let o = old.pointer(pointer).unwrap_or(&null);
    let n = new.pointer(pointer).unwrap_or(&null);
    v::validate_immutable(n, o, field)
}

/// The Pod spec fields that may change on update are masked out before comparing.
fn pod_spec_mutable_masked(spec: &Value) -> Value {
    let mut s = spec.clone();
    if let Some(m) = s.as_object_mut() {
        for key in ["containers", "initContainers"] {
            if let Some(list) = m.get_mut(key).and_then(Value::as_array_mut) {
                for c in list.iter_mut().filter_map(Value::as_object_mut) {
                    c.remove("image");
                }
            }
        }
        m.remove("activeDeadlineSeconds");
        m.remove("tolerations");
        m.remove("terminationGracePeriodSeconds");
        m.remove("schedulingGates");
        m.remove("ephemeralContainers");
    }
    s
}

const POD_UPDATE_FORBIDDEN: &str = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

fn pod_update(old: &Value, new: &Value) -> Causes {
    let null = json!({});
    let os = old.get("spec").unwrap_or(&null);
    let ns = new.get("spec").unwrap_or(&null);
    let mut c = pod_spec(ns, "spec");
    if pod_spec_mutable_masked(os) != pod_spec_mutable_masked(ns) {
        c.push(Cause::forbidden("spec", POD_UPDATE_FORBIDDEN));
    }
    // Tolerations may only be added to.
    let old_tol = arr(os, "tolerations");
    let new_tol = arr(ns, "tolerations");
    if old_tol.iter().any(|t| !new_tol.contains(t)) {
        c.push(Cause::forbidden(
            "spec.tolerations",
            "existing toleration can not be modified except its tolerationSeconds",
        ));
    }
    // Scheduling gates may only be removed.
    let old_gates = arr(os, "schedulingGates");
    if arr(ns, "schedulingGates")
        .iter()
        .any(|g| !old_gates.contains(g))
    {
        c.push(Cause::forbidden(
            "spec.schedulingGates",
            "only deletion is allowed, but found new scheduling gate",
        ));
    }
    if let (Some(o), Some(n)) = (
        os.get("activeDeadlineSeconds").and_then(Value::as_i64),
        ns.get("activeDeadlineSeconds").and_then(Value::as_i64),
    ) && n > o
    {
        c.push(Cause::invalid(
            "spec.activeDeadlineSeconds",
            &json!(n),
            "must be less than or equal to previous value",
        ));
    }
    c
}

/// Update validation of a built-in kind: the create rules plus immutability.
pub(crate) fn update(def: &ResourceDef, old: &Value, new: &Value) -> Causes {
    let mut c = match (def.group.as_str(), def.kind.as_str()) {
        ("", "Pod") => return pod_update(old, new),
        _ => create(def, new),
    };
    match (def.group.as_str(), def.kind.as_str()) {
        ("apps", "Deployment") | ("apps", "ReplicaSet") | ("apps", "DaemonSet") => {
            c.extend(immutable(old, new, "/spec/selector", "spec.selector"));
        }
        ("apps", "StatefulSet") => {
            let strip = |o: &Value| {
                let mut s = o.get("spec").cloned().unwrap_or(json!({}));
                if let Some(m) = s.as_object_mut() {
                    for k in [
                        "replicas",
                        "ordinals",
                        "template",
                        "updateStrategy",
                        "persistentVolumeClaimRetentionPolicy",
                        "minReadySeconds",
                    ] {
                        m.remove(k);
                    }
                }
                s
            };
            if strip(old) != strip(new) {
                c.push(Cause::forbidden(
                    "spec",
                    "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
                ));
            }
        }
        ("batch", "Job") => {
            c.extend(immutable(old, new, "/spec/selector", "spec.selector"));
            c.extend(immutable(old, new, "/spec/template", "spec.template"));
            c.extend(immutable(
                old,
                new,
                "/spec/completionMode",
                "spec.completionMode",
            ));
        }
        ("", "Secret") | ("", "ConfigMap") => {
            if old.get("immutable").and_then(Value::as_bool) == Some(true) {
                if new.get("immutable").and_then(Value::as_bool) != Some(true) {
                    c.push(Cause::forbidden(
                        "immutable",
                        "field is immutable when `immutable` is set",
                    ));
                }
                for key in ["data", "binaryData"] {
                    if old.get(key) != new.get(key) {
                        c.push(Cause::forbidden(
                            key,
                            "field is immutable when `immutable` is set",
                        ));
                    }
                }
            }
            if def.kind == "Secret" && s(old, "type") != s(new, "type") {
                c.extend(v::validate_immutable(
                    new.get("type").unwrap_or(&Value::Null),
                    old.get("type").unwrap_or(&Value::Null),
                    "type",
                ));
            }
        }
        ("", "Service") => {
            let old_ip = old
                .pointer("/spec/clusterIP")
                .and_then(Value::as_str)
                .unwrap_or("");
            let new_ip = new
                .pointer("/spec/clusterIP")
                .and_then(Value::as_str)
                .unwrap_or("");
            if !old_ip.is_empty()
                && !new_ip.is_empty()
                && old_ip != new_ip
                && s(new.get("spec").unwrap_or(&Value::Null), "type") != "ExternalName"
            {
                c.push(Cause::invalid(
                    "spec.clusterIPs[0]",
                    new.pointer("/spec/clusterIPs").unwrap_or(&json!([new_ip])),
                    "may not change once set",
                ));
            }
        }
        ("", "PersistentVolumeClaim") => {
            let strip = |o: &Value| {
                let mut s = o.get("spec").cloned().unwrap_or(json!({}));
                if let Some(m) = s.as_object_mut() {
                    m.remove("resources");
                    m.remove("volumeAttributesClassName");
                    m.remove("volumeName");
                }
                s
            };
            if strip(old) != strip(new) {
                c.push(Cause::forbidden(
                    "spec",
                    "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
                ));
            }
        }
        ("rbac.authorization.k8s.io", "RoleBinding")
        | ("rbac.authorization.k8s.io", "ClusterRoleBinding")
            if old.get("roleRef") != new.get("roleRef") =>
        {
            c.push(Cause::invalid(
                "roleRef",
                new.get("roleRef").unwrap_or(&Value::Null),
                "cannot change roleRef",
            ));
        }
        ("scheduling.k8s.io", "PriorityClass") => {
            if old.get("value") != new.get("value") {
                c.push(Cause::forbidden(
                    "value",
                    "may not be changed in an update.",
                ));
            }
            c.extend(immutable(old, new, "/preemptionPolicy", "preemptionPolicy"));
        }
        ("storage.k8s.io", "StorageClass") => {
            for (key, msg) in [
                ("parameters", "updates to parameters are forbidden."),
                ("provisioner", "updates to provisioner are forbidden."),
                ("reclaimPolicy", "updates to reclaimPolicy are forbidden."),
                ("volumeBindingMode", "field is immutable"),
            ] {
                if old.get(key) != new.get(key) {
                    c.push(Cause::forbidden(key, msg));
                }
            }
        }
        ("discovery.k8s.io", "EndpointSlice") => {
            c.extend(immutable(old, new, "/addressType", "addressType"));
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            c.extend(immutable(old, new, "/spec/group", "spec.group"));
            c.extend(immutable(
                old,
                new,
                "/spec/names/plural",
                "spec.names.plural",
            ));
            c.extend(immutable(old, new, "/spec/scope", "spec.scope"));
        }
        _ => {}
    }
    c
}
