//! Upstream's defaulting of built-in kinds: `pkg/apis/*/v1/defaults.go` and the declarative
//! `+default` markers compiled into `zz_generated.defaults.go`, applied to JSON objects.
//!
//! Pod templates (Deployment, ReplicaSet, StatefulSet, DaemonSet, Job, CronJob, PodTemplate,
//! ReplicationController) get the PodSpec and container defaults; only Pods themselves get the
//! Pod-level ones (`enableServiceLinks`, requests from limits, host ports on the host network),
//! as upstream. Service IP family fields, which upstream fills at creation in the service
//! registry, are filled here too for a single-stack IPv4 cluster (cluster IP allocation is the
//! apiserver's).
//!
//! Malformed objects are left alone where a field has the wrong type: validation and the typed
//! decoding check report those.

use serde_json::{Map, Value, json};

use crate::resource::ResourceDef;

/// Applies upstream's defaults for `def`'s kind to `obj` in place.
pub fn apply_defaults(def: &ResourceDef, obj: &mut Value) {
    if def.custom {
        if let Some(schema) = def.crd.as_ref().and_then(|c| c.schema.as_ref()) {
            schema_defaults(schema, obj, true);
        }
        return;
    }
    let Some(o) = obj.as_object_mut() else {
        return;
    };
    match (def.group.as_str(), def.kind.as_str()) {
        ("", "Pod") => pod(o),
        ("", "PodTemplate") => {
            if let Some(t) = child(o, "template") {
                pod_template(t);
            }
        }
        ("", "ReplicationController") => replication_controller(o),
        ("", "Service") => service(o),
        ("", "Namespace") => namespace(o),
        ("", "Secret") => {
            default_str(o, "type", "Opaque");
            merge_string_data(o);
        }
        ("", "PersistentVolumeClaim") => {
            if let Some(spec) = child(o, "spec") {
                pvc_spec(spec);
            }
            if let Some(status) = child(o, "status") {
                default_str(status, "phase", "Pending");
            }
        }
        ("", "PersistentVolume") => {
            if let Some(spec) = child(o, "spec") {
                default_str(spec, "persistentVolumeReclaimPolicy", "Retain");
                default_ptr(spec, "volumeMode", json!("Filesystem"));
            }
            if let Some(status) = child(o, "status") {
                default_str(status, "phase", "Pending");
            }
        }
        ("", "Endpoints") => {
            for ss in list(o, "subsets") {
                for p in list(ss, "ports") {
                    default_str(p, "protocol", "TCP");
                }
            }
        }
        ("", "Node") => {
            if let Some(status) = existing(o, "status")
                && unset(status.get("allocatable"))
                && let Some(cap) = status.get("capacity").filter(|c| c.is_object()).cloned()
            {
                status.insert("allocatable".into(), cap);
            }
        }
        ("", "LimitRange") => {
            if let Some(spec) = existing(o, "spec") {
                for item in list(spec, "limits") {
                    limit_range_item(item);
                }
            }
        }
        ("apps", "Deployment") => deployment(o),
        ("apps", "ReplicaSet") => {
            if let Some(spec) = child(o, "spec") {
                default_ptr(spec, "replicas", json!(1));
                template_of(spec);
            }
        }
        ("apps", "StatefulSet") => stateful_set(o),
        ("apps", "DaemonSet") => daemon_set(o),
        ("batch", "Job") => job(o),
        ("batch", "CronJob") => cron_job(o),
        ("networking.k8s.io", "NetworkPolicy") => network_policy(o),
        ("networking.k8s.io", "IngressClass") => {
            if let Some(params) = existing(o, "spec").and_then(|s| existing(s, "parameters")) {
                default_ptr(params, "scope", json!("Cluster"));
            }
        }
        ("rbac.authorization.k8s.io", "RoleBinding")
        | ("rbac.authorization.k8s.io", "ClusterRoleBinding") => {
            if let Some(r) = child(o, "roleRef") {
                default_str(r, "apiGroup", "rbac.authorization.k8s.io");
            }
            for s in list(o, "subjects") {
                subject(s);
            }
        }
        ("storage.k8s.io", "StorageClass") => {
            default_ptr(o, "reclaimPolicy", json!("Delete"));
            default_ptr(o, "volumeBindingMode", json!("Immediate"));
        }
        ("scheduling.k8s.io", "PriorityClass") => {
            default_ptr(o, "preemptionPolicy", json!("PreemptLowerPriority"));
        }
        ("discovery.k8s.io", "EndpointSlice") => {
            for p in list(o, "ports") {
                default_ptr(p, "name", json!(""));
                default_ptr(p, "protocol", json!("TCP"));
            }
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => crd(o),
        _ => {}
    }
}

/// Structural-schema defaulting of custom resources: every absent property whose schema has a
/// `default` gets it, recursively through objects, `additionalProperties` and array items
/// (apiextensions' defaulting; `metadata` is never defaulted).
fn schema_defaults(schema: &Value, v: &mut Value, root: bool) {
    match v {
        Value::Object(m) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, ps) in props {
                    if root && matches!(k.as_str(), "metadata" | "apiVersion" | "kind") {
                        continue;
                    }
                    if unset(m.get(k))
                        && let Some(d) = ps.get("default")
                        && !(d.is_null()
                            && ps.get("nullable").and_then(Value::as_bool) != Some(true))
                    {
                        m.insert(k.clone(), d.clone());
                    }
                    if let Some(child) = m.get_mut(k) {
                        schema_defaults(ps, child, false);
                    }
                }
            } else if let Some(ap) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for child in m.values_mut() {
                    schema_defaults(ap, child, false);
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = schema.get("items").filter(|i| i.is_object()) {
                for item in items {
                    schema_defaults(is, item, false);
                }
            }
        }
        _ => {}
    }
}

// ---- helpers -------------------------------------------------------------------------------

/// Whether a value counts as unset (absent or null).
fn unset(v: Option<&Value>) -> bool {
    matches!(v, None | Some(Value::Null))
}

/// The object at `key`, created when absent or null; `None` when present with another type.
fn child<'a>(m: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Map<String, Value>> {
    if unset(m.get(key)) {
        m.insert(key.to_string(), Value::Object(Map::new()));
    }
    m.get_mut(key).and_then(Value::as_object_mut)
}

/// The object at `key` if present.
fn existing<'a>(m: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Map<String, Value>> {
    m.get_mut(key).and_then(Value::as_object_mut)
}

/// The objects of the list at `key` (non-objects skipped).
fn list<'a>(
    m: &'a mut Map<String, Value>,
    key: &str,
) -> impl Iterator<Item = &'a mut Map<String, Value>> {
    m.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
}

/// A Go pointer field: set when absent or null.
fn default_ptr(m: &mut Map<String, Value>, key: &str, v: Value) {
    if unset(m.get(key)) {
        m.insert(key.to_string(), v);
    }
}

/// A Go string field: set when absent, null or "".
fn default_str(m: &mut Map<String, Value>, key: &str, v: &str) {
    let empty = match m.get(key) {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        _ => false,
    };
    if empty {
        m.insert(key.to_string(), json!(v));
    }
}

/// A Go integer field: set when absent, null or 0.
fn default_int(m: &mut Map<String, Value>, key: &str, v: i64) {
    let zero = match m.get(key) {
        None | Some(Value::Null) => true,
        Some(Value::Number(n)) => n.as_f64() == Some(0.0),
        _ => false,
    };
    if zero {
        m.insert(key.to_string(), json!(v));
    }
}

fn str_of<'a>(m: &'a Map<String, Value>, key: &str) -> &'a str {
    m.get(key).and_then(Value::as_str).unwrap_or("")
}

// ---- core ----------------------------------------------------------------------------------

/// The tag `parsers.ParseImageName` finds: `latest` when the image names neither a tag nor a
/// digest, "" when it has only a digest (or does not parse).
pub fn image_tag(image: &str) -> String {
    if image.is_empty() || image.chars().any(char::is_whitespace) {
        return String::new();
    }
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    let (path, last) = match name.rsplit_once('/') {
        Some((p, l)) => (p, l),
        None => ("", name),
    };
    let (repo, tag) = match last.split_once(':') {
        Some((r, t)) => (r, Some(t)),
        None => (last, None),
    };
    // Repository names are lower case (the registry host before the first `/` may not be).
    let repo_path = path.split_once('/').map(|(_, rest)| rest).unwrap_or(
        if path.contains(['.', ':']) || path == "localhost" {
            ""
        } else {
            path
        },
    );
    if repo.is_empty()
        || repo.chars().any(|c| c.is_ascii_uppercase())
        || repo_path.chars().any(|c| c.is_ascii_uppercase())
    {
        return String::new();
    }
    match tag {
        Some(t) => t.to_string(),
        None if digest.is_some() => String::new(),
        None => "latest".to_string(),
    }
}

/// `SetDefaults_Container` and the defaults of everything a container holds.
fn container(c: &mut Map<String, Value>) {
    if str_of(c, "imagePullPolicy").is_empty() {
        let policy = if image_tag(str_of(c, "image")) == "latest" {
            "Always"
        } else {
            "IfNotPresent"
        };
        c.insert("imagePullPolicy".into(), json!(policy));
    }
    // A non-pointer struct upstream: always serialized, `{}` when empty.
    default_ptr(c, "resources", json!({}));
    default_str(c, "terminationMessagePath", "/dev/termination-log");
    default_str(c, "terminationMessagePolicy", "File");
    for p in list(c, "ports") {
        default_str(p, "protocol", "TCP");
    }
    for key in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = existing(c, key) {
            probe(p);
        }
    }
    if let Some(l) = existing(c, "lifecycle") {
        for key in ["postStart", "preStop"] {
            if let Some(h) = existing(l, key) {
                handler(h);
            }
        }
    }
    for e in list(c, "env") {
        if let Some(f) = existing(e, "valueFrom").and_then(|v| existing(v, "fieldRef")) {
            default_str(f, "apiVersion", "v1");
        }
    }
}

/// `HTTPGetAction` and `GRPCAction` defaults inside a probe or lifecycle handler.
fn handler(h: &mut Map<String, Value>) {
    if let Some(g) = existing(h, "httpGet") {
        default_str(g, "path", "/");
        default_str(g, "scheme", "HTTP");
    }
    if let Some(g) = existing(h, "grpc") {
        default_ptr(g, "service", json!(""));
    }
}

/// `SetDefaults_Probe`.
fn probe(p: &mut Map<String, Value>) {
    default_int(p, "timeoutSeconds", 1);
    default_int(p, "periodSeconds", 10);
    default_int(p, "successThreshold", 1);
    default_int(p, "failureThreshold", 3);
    handler(p);
}

/// `SetDefaults_Volume` and the volume sources' defaults.
fn volume(v: &mut Map<String, Value>) {
    let has_source = v.iter().any(|(k, val)| k != "name" && !val.is_null());
    if !has_source {
        v.insert("emptyDir".into(), json!({}));
    }
    for key in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(src) = existing(v, key) {
            default_ptr(src, "defaultMode", json!(420));
        }
    }
    if let Some(d) = existing(v, "downwardAPI") {
        for item in list(d, "items") {
            if let Some(f) = existing(item, "fieldRef") {
                default_str(f, "apiVersion", "v1");
            }
        }
    }
    if let Some(p) = existing(v, "projected") {
        for src in list(p, "sources") {
            if let Some(t) = existing(src, "serviceAccountToken") {
                default_ptr(t, "expirationSeconds", json!(3600));
            }
            if let Some(d) = existing(src, "downwardAPI") {
                for item in list(d, "items") {
                    if let Some(f) = existing(item, "fieldRef") {
                        default_str(f, "apiVersion", "v1");
                    }
                }
            }
        }
    }
    if let Some(h) = existing(v, "hostPath") {
        default_ptr(h, "type", json!(""));
    }
    if let Some(i) = existing(v, "iscsi") {
        default_str(i, "iscsiInterface", "default");
    }
    if let Some(r) = existing(v, "rbd") {
        default_str(r, "pool", "rbd");
        default_str(r, "user", "admin");
        default_str(r, "keyring", "/etc/ceph/keyring");
    }
    if let Some(a) = existing(v, "azureDisk") {
        default_ptr(a, "cachingMode", json!("ReadWrite"));
        default_ptr(a, "fsType", json!("ext4"));
        default_ptr(a, "readOnly", json!(false));
        default_ptr(a, "kind", json!("Shared"));
    }
    if let Some(s) = existing(v, "scaleIO") {
        default_str(s, "storageMode", "ThinProvisioned");
        default_str(s, "fsType", "xfs");
    }
    if let Some(spec) = existing(v, "ephemeral")
        .and_then(|e| existing(e, "volumeClaimTemplate"))
        .and_then(|t| existing(t, "spec"))
    {
        pvc_spec(spec);
    }
}

/// `SetDefaults_PodSpec` plus the containers' and volumes' defaults.
fn pod_spec(spec: &mut Map<String, Value>) {
    default_str(spec, "dnsPolicy", "ClusterFirst");
    default_str(spec, "restartPolicy", "Always");
    default_ptr(spec, "securityContext", json!({}));
    default_ptr(spec, "terminationGracePeriodSeconds", json!(30));
    default_str(spec, "schedulerName", "default-scheduler");
    for key in ["containers", "initContainers", "ephemeralContainers"] {
        for c in list(spec, key) {
            container(c);
        }
    }
    for v in list(spec, "volumes") {
        volume(v);
    }
}

/// A pod template: the PodSpec defaults only.
fn pod_template(t: &mut Map<String, Value>) {
    if let Some(spec) = child(t, "spec") {
        pod_spec(spec);
    }
}

/// `spec.template` of a workload.
fn template_of(spec: &mut Map<String, Value>) {
    if let Some(t) = child(spec, "template") {
        pod_template(t);
    }
}

/// `SetDefaults_Pod` and the PodSpec defaults.
fn pod(o: &mut Map<String, Value>) {
    let Some(spec) = child(o, "spec") else {
        return;
    };
    pod_spec(spec);
    for key in ["containers", "initContainers"] {
        for c in list(spec, key) {
            requests_from_limits(c);
        }
    }
    default_ptr(spec, "enableServiceLinks", json!(true));
    if spec.get("hostNetwork").and_then(Value::as_bool) == Some(true) {
        for key in ["containers", "initContainers"] {
            for c in list(spec, key) {
                for p in list(c, "ports") {
                    let zero = match p.get("hostPort") {
                        None | Some(Value::Null) => true,
                        Some(v) => v.as_i64() == Some(0),
                    };
                    if zero && let Some(cp) = p.get("containerPort").cloned() {
                        p.insert("hostPort".into(), cp);
                    }
                }
            }
        }
    }
}

/// A container's requests default to its limits.
fn requests_from_limits(c: &mut Map<String, Value>) {
    let Some(res) = existing(c, "resources") else {
        return;
    };
    let Some(limits) = res.get("limits").and_then(Value::as_object).cloned() else {
        return;
    };
    let Some(requests) = child(res, "requests") else {
        return;
    };
    for (k, v) in limits {
        requests.entry(k).or_insert(v);
    }
}

fn pvc_spec(spec: &mut Map<String, Value>) {
    default_ptr(spec, "volumeMode", json!("Filesystem"));
}

fn replication_controller(o: &mut Map<String, Value>) {
    let labels = o
        .get("spec")
        .and_then(|s| s.pointer("/template/metadata/labels"))
        .filter(|l| l.as_object().is_some_and(|m| !m.is_empty()))
        .cloned();
    if let Some(labels) = labels {
        if let Some(spec) = existing(o, "spec") {
            let empty = spec
                .get("selector")
                .and_then(Value::as_object)
                .is_none_or(Map::is_empty);
            if empty {
                spec.insert("selector".into(), labels.clone());
            }
        }
        if let Some(meta) = child(o, "metadata") {
            let empty = meta
                .get("labels")
                .and_then(Value::as_object)
                .is_none_or(Map::is_empty);
            if empty {
                meta.insert("labels".into(), labels);
            }
        }
    }
    if let Some(spec) = child(o, "spec") {
        default_ptr(spec, "replicas", json!(1));
        if let Some(t) = existing(spec, "template") {
            pod_template(t);
        }
    }
}

/// `SetDefaults_Service`, plus the IP family fields the service registry fills at creation.
fn service(o: &mut Map<String, Value>) {
    let Some(spec) = child(o, "spec") else {
        return;
    };
    default_str(spec, "sessionAffinity", "None");
    match str_of(spec, "sessionAffinity") {
        "None" => {
            spec.remove("sessionAffinityConfig");
        }
        "ClientIP" => {
            let has_timeout = spec
                .get("sessionAffinityConfig")
                .and_then(|c| c.pointer("/clientIP/timeoutSeconds"))
                .is_some_and(|v| !v.is_null());
            if !has_timeout {
                spec.insert(
                    "sessionAffinityConfig".into(),
                    json!({"clientIP": {"timeoutSeconds": 10800}}),
                );
            }
        }
        _ => {}
    }
    default_str(spec, "type", "ClusterIP");
    for p in list(spec, "ports") {
        default_str(p, "protocol", "TCP");
        let target_unset = match p.get("targetPort") {
            None | Some(Value::Null) => true,
            Some(Value::Number(n)) => n.as_i64() == Some(0),
            Some(Value::String(s)) => s.is_empty(),
            _ => false,
        };
        if target_unset && let Some(port) = p.get("port").cloned() {
            p.insert("targetPort".into(), port);
        }
    }
    let type_ = str_of(spec, "type").to_string();
    let has_external_ips = spec
        .get("externalIPs")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    let externally_accessible = type_ == "LoadBalancer"
        || type_ == "NodePort"
        || (type_ == "ClusterIP" && has_external_ips);
    if externally_accessible {
        default_str(spec, "externalTrafficPolicy", "Cluster");
    }
    if matches!(type_.as_str(), "NodePort" | "LoadBalancer" | "ClusterIP") {
        default_ptr(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if type_ == "LoadBalancer" {
        default_ptr(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    if type_ != "ExternalName" {
        let cluster_ip = str_of(spec, "clusterIP").to_string();
        if !cluster_ip.is_empty() && unset(spec.get("clusterIPs")) {
            spec.insert("clusterIPs".into(), json!([cluster_ip]));
        }
        let headless = cluster_ip == "None";
        let has_selector = spec
            .get("selector")
            .and_then(Value::as_object)
            .is_some_and(|m| !m.is_empty());
        let families_unset = spec
            .get("ipFamilies")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
        if headless && !has_selector {
            default_ptr(spec, "ipFamilyPolicy", json!("RequireDualStack"));
            if families_unset {
                spec.insert("ipFamilies".into(), json!(["IPv4", "IPv6"]));
            }
        } else {
            if families_unset {
                spec.insert("ipFamilies".into(), json!(["IPv4"]));
            }
            let single = spec
                .get("ipFamilies")
                .and_then(Value::as_array)
                .is_some_and(|a| a.len() == 1);
            if single {
                default_ptr(spec, "ipFamilyPolicy", json!("SingleStack"));
            }
        }
    }
    if type_ == "LoadBalancer"
        && let Some(ingress) = o
            .get_mut("status")
            .and_then(|s| s.get_mut("loadBalancer"))
            .and_then(|l| l.get_mut("ingress"))
            .and_then(Value::as_array_mut)
    {
        for ing in ingress.iter_mut().filter_map(Value::as_object_mut) {
            if !str_of(ing, "ip").is_empty() {
                default_ptr(ing, "ipMode", json!("VIP"));
            }
        }
    }
}

/// `SetDefaults_Namespace`, `SetDefaults_NamespaceStatus`, and the `kubernetes` finalizer the
/// namespace registry adds at creation.
fn namespace(o: &mut Map<String, Value>) {
    let name = o
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if !name.is_empty()
        && let Some(meta) = child(o, "metadata")
        && let Some(labels) = child(meta, "labels")
    {
        labels.insert("kubernetes.io/metadata.name".into(), json!(name));
    }
    if let Some(spec) = child(o, "spec") {
        default_ptr(spec, "finalizers", json!(["kubernetes"]));
    }
    if let Some(status) = child(o, "status") {
        default_str(status, "phase", "Active");
    }
}

/// Secret `stringData` is write-only: upstream's conversion merges it into `data` (base64),
/// overwriting keys, and never stores it.
fn merge_string_data(o: &mut Map<String, Value>) {
    use base64::Engine as _;
    if !o.get("stringData").is_some_and(Value::is_object) {
        return;
    }
    let Some(Value::Object(string_data)) = o.remove("stringData") else {
        return;
    };
    let Some(data) = child(o, "data") else {
        return;
    };
    for (k, v) in string_data {
        if let Some(s) = v.as_str() {
            data.insert(
                k,
                json!(base64::engine::general_purpose::STANDARD.encode(s.as_bytes())),
            );
        }
    }
}

fn limit_range_item(item: &mut Map<String, Value>) {
    if str_of(item, "type") != "Container" {
        return;
    }
    let max = item.get("max").and_then(Value::as_object).cloned();
    let min = item.get("min").and_then(Value::as_object).cloned();
    if let Some(default) = child(item, "default") {
        for (k, v) in max.into_iter().flatten() {
            default.entry(k).or_insert(v);
        }
    }
    let default = item.get("default").and_then(Value::as_object).cloned();
    if let Some(req) = child(item, "defaultRequest") {
        for (k, v) in default.into_iter().flatten() {
            req.entry(k).or_insert(v);
        }
        for (k, v) in min.into_iter().flatten() {
            req.entry(k).or_insert(v);
        }
    }
}

// ---- apps ----------------------------------------------------------------------------------

fn deployment(o: &mut Map<String, Value>) {
    let Some(spec) = child(o, "spec") else {
        return;
    };
    default_ptr(spec, "replicas", json!(1));
    if let Some(strategy) = child(spec, "strategy") {
        default_str(strategy, "type", "RollingUpdate");
        if str_of(strategy, "type") == "RollingUpdate"
            && let Some(ru) = child(strategy, "rollingUpdate")
        {
            default_ptr(ru, "maxUnavailable", json!("25%"));
            default_ptr(ru, "maxSurge", json!("25%"));
        }
    }
    default_ptr(spec, "revisionHistoryLimit", json!(10));
    default_ptr(spec, "progressDeadlineSeconds", json!(600));
    template_of(spec);
}

fn stateful_set(o: &mut Map<String, Value>) {
    let Some(spec) = child(o, "spec") else {
        return;
    };
    default_str(spec, "podManagementPolicy", "OrderedReady");
    if let Some(us) = child(spec, "updateStrategy") {
        if str_of(us, "type").is_empty() {
            us.insert("type".into(), json!("RollingUpdate"));
            default_ptr(us, "rollingUpdate", json!({}));
        }
        if str_of(us, "type") == "RollingUpdate"
            && let Some(ru) = existing(us, "rollingUpdate")
        {
            default_ptr(ru, "partition", json!(0));
        }
    }
    if let Some(policy) = child(spec, "persistentVolumeClaimRetentionPolicy") {
        default_str(policy, "whenDeleted", "Retain");
        default_str(policy, "whenScaled", "Retain");
    }
    default_ptr(spec, "replicas", json!(1));
    default_ptr(spec, "revisionHistoryLimit", json!(10));
    template_of(spec);
    for pvc in list(spec, "volumeClaimTemplates") {
        if let Some(s) = child(pvc, "spec") {
            pvc_spec(s);
        }
        if let Some(status) = child(pvc, "status") {
            default_str(status, "phase", "Pending");
        }
    }
}

fn daemon_set(o: &mut Map<String, Value>) {
    let Some(spec) = child(o, "spec") else {
        return;
    };
    if let Some(us) = child(spec, "updateStrategy") {
        default_str(us, "type", "RollingUpdate");
        if str_of(us, "type") == "RollingUpdate"
            && let Some(ru) = child(us, "rollingUpdate")
        {
            default_ptr(ru, "maxUnavailable", json!(1));
            default_ptr(ru, "maxSurge", json!(0));
        }
    }
    default_ptr(spec, "revisionHistoryLimit", json!(10));
    template_of(spec);
}

// ---- batch ---------------------------------------------------------------------------------

fn job(o: &mut Map<String, Value>) {
    let template_labels = o
        .get("spec")
        .and_then(|s| s.pointer("/template/metadata/labels"))
        .filter(|l| l.is_object())
        .cloned();
    if let Some(labels) = template_labels
        && let Some(meta) = child(o, "metadata")
    {
        let empty = meta
            .get("labels")
            .and_then(Value::as_object)
            .is_none_or(Map::is_empty);
        if empty {
            meta.insert("labels".into(), labels);
        }
    }
    let Some(spec) = child(o, "spec") else {
        return;
    };
    if unset(spec.get("completions")) && unset(spec.get("parallelism")) {
        spec.insert("completions".into(), json!(1));
        spec.insert("parallelism".into(), json!(1));
    }
    default_ptr(spec, "parallelism", json!(1));
    if unset(spec.get("backoffLimit")) {
        let limit = if unset(spec.get("backoffLimitPerIndex")) {
            6
        } else {
            i64::from(i32::MAX)
        };
        spec.insert("backoffLimit".into(), json!(limit));
    }
    default_ptr(spec, "completionMode", json!("NonIndexed"));
    default_ptr(spec, "suspend", json!(false));
    let has_failure_policy = !unset(spec.get("podFailurePolicy"));
    if let Some(pfp) = existing(spec, "podFailurePolicy") {
        for rule in list(pfp, "rules") {
            for pattern in list(rule, "onPodConditions") {
                default_str(pattern, "status", "True");
            }
        }
    }
    default_ptr(
        spec,
        "podReplacementPolicy",
        json!(if has_failure_policy {
            "Failed"
        } else {
            "TerminatingOrFailed"
        }),
    );
    default_ptr(spec, "manualSelector", json!(false));
    template_of(spec);
}

fn cron_job(o: &mut Map<String, Value>) {
    let Some(spec) = child(o, "spec") else {
        return;
    };
    default_str(spec, "concurrencyPolicy", "Allow");
    default_ptr(spec, "suspend", json!(false));
    default_ptr(spec, "successfulJobsHistoryLimit", json!(3));
    default_ptr(spec, "failedJobsHistoryLimit", json!(1));
    if let Some(job_spec) = child(spec, "jobTemplate").and_then(|t| child(t, "spec")) {
        template_of(job_spec);
    }
}

// ---- others --------------------------------------------------------------------------------

fn network_policy(o: &mut Map<String, Value>) {
    let Some(spec) = child(o, "spec") else {
        return;
    };
    for dir in ["ingress", "egress"] {
        for rule in list(spec, dir) {
            for p in list(rule, "ports") {
                default_ptr(p, "protocol", json!("TCP"));
            }
        }
    }
    let no_types = spec
        .get("policyTypes")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    if no_types {
        let has_egress = spec
            .get("egress")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty());
        let types = if has_egress {
            json!(["Ingress", "Egress"])
        } else {
            json!(["Ingress"])
        };
        spec.insert("policyTypes".into(), types);
    }
}

fn subject(s: &mut Map<String, Value>) {
    if !str_of(s, "apiGroup").is_empty() {
        return;
    }
    match str_of(s, "kind") {
        "ServiceAccount" => {
            s.insert("apiGroup".into(), json!(""));
        }
        "User" | "Group" => {
            s.insert("apiGroup".into(), json!("rbac.authorization.k8s.io"));
        }
        _ => {}
    }
}

/// `SetDefaults_CustomResourceDefinition(Spec)`.
fn crd(o: &mut Map<String, Value>) {
    let stored = o
        .get("spec")
        .and_then(|s| s.get("versions"))
        .and_then(Value::as_array)
        .and_then(|vs| {
            vs.iter()
                .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        })
        .and_then(|v| v.get("name"))
        .cloned();
    if let Some(spec) = child(o, "spec") {
        if let Some(names) = child(spec, "names") {
            let kind = str_of(names, "kind").to_string();
            default_str(names, "singular", &kind.to_lowercase());
            if !kind.is_empty() {
                default_str(names, "listKind", &format!("{kind}List"));
            }
        }
        default_ptr(spec, "conversion", json!({"strategy": "None"}));
        if let Some(svc) = existing(spec, "conversion")
            .and_then(|c| existing(c, "webhook"))
            .and_then(|w| existing(w, "clientConfig"))
            .and_then(|c| existing(c, "service"))
        {
            default_ptr(svc, "port", json!(443));
        }
    }
    if let Some(stored) = stored
        && let Some(status) = child(o, "status")
    {
        let empty = status
            .get("storedVersions")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
        if empty {
            status.insert("storedVersions".into(), json!([stored]));
        }
    }
}

#[cfg(test)]
mod tests;
