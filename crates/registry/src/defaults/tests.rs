//! Defaults checked against what upstream stores (`kubectl get -o yaml` of objects created from
//! minimal manifests) and upstream's defaults.go.

use serde_json::{Value, json};

use super::*;
use crate::builtin;

fn defaulted(group: &str, kind: &str, mut obj: Value) -> Value {
    // Kinds kumo does not serve yet (ReplicationController) borrow a core definition.
    let def = builtin()
        .into_iter()
        .find(|d| d.group == group && d.kind == kind)
        .map(|d| (*d).clone())
        .unwrap_or_else(|| {
            let mut d = (*builtin()[1]).clone();
            d.group = group.to_string();
            d.kind = kind.to_string();
            d
        });
    apply_defaults(&def, &mut obj);
    let once = obj.clone();
    apply_defaults(&def, &mut obj);
    assert_eq!(obj, once, "defaulting is idempotent for {kind}");
    obj
}

/// The stored spec of the Deployment from the Kubernetes docs' `nginx-deployment.yaml`.
#[test]
fn minimal_deployment_matches_upstream_storage() {
    let d = defaulted(
        "apps",
        "Deployment",
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "nginx-deployment", "labels": {"app": "nginx"}},
            "spec": {"selector": {"matchLabels": {"app": "nginx"}},
                "template": {"metadata": {"labels": {"app": "nginx"}},
                    "spec": {"containers": [{"name": "nginx", "image": "nginx:1.14.2", "ports": [{"containerPort": 80}]}]}}}
        }),
    );
    assert_eq!(
        d["spec"],
        json!({
            "progressDeadlineSeconds": 600,
            "replicas": 1,
            "revisionHistoryLimit": 10,
            "selector": {"matchLabels": {"app": "nginx"}},
            "strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}, "type": "RollingUpdate"},
            "template": {"metadata": {"labels": {"app": "nginx"}}, "spec": {
                "containers": [{
                    "image": "nginx:1.14.2", "imagePullPolicy": "IfNotPresent", "name": "nginx",
                    "ports": [{"containerPort": 80, "protocol": "TCP"}],
                    "resources": {},
                    "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"
                }],
                "dnsPolicy": "ClusterFirst", "restartPolicy": "Always", "schedulerName": "default-scheduler",
                "securityContext": {}, "terminationGracePeriodSeconds": 30
            }}
        })
    );
    // Templates do not get the Pod-only enableServiceLinks.
    assert!(
        d["spec"]["template"]["spec"]
            .get("enableServiceLinks")
            .is_none()
    );
}

#[test]
fn recreate_strategy_gets_no_rolling_update() {
    let d = defaulted(
        "apps",
        "Deployment",
        json!({"spec": {"strategy": {"type": "Recreate"}, "replicas": 0}}),
    );
    assert_eq!(d["spec"]["strategy"], json!({"type": "Recreate"}));
    assert_eq!(d["spec"]["replicas"], 0);
}

#[test]
fn minimal_pod_matches_upstream_storage() {
    let p = defaulted(
        "",
        "Pod",
        json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "app", "image": "busybox", "command": ["sleep", "3600"],
                "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}},
                "livenessProbe": {"httpGet": {"port": 8080}},
                "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 5}}]}
        }),
    );
    let c = &p["spec"]["containers"][0];
    assert_eq!(c["imagePullPolicy"], "Always");
    assert_eq!(
        c["resources"]["requests"],
        json!({"cpu": "500m", "memory": "128Mi"})
    );
    assert_eq!(
        c["livenessProbe"],
        json!({"httpGet": {"port": 8080, "path": "/", "scheme": "HTTP"},
        "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3})
    );
    assert_eq!(c["readinessProbe"]["periodSeconds"], 5);
    assert_eq!(c["readinessProbe"]["timeoutSeconds"], 1);
    let spec = &p["spec"];
    assert_eq!(spec["enableServiceLinks"], true);
    assert_eq!(spec["dnsPolicy"], "ClusterFirst");
    assert_eq!(spec["restartPolicy"], "Always");
    assert_eq!(spec["schedulerName"], "default-scheduler");
    assert_eq!(spec["terminationGracePeriodSeconds"], 30);
    assert_eq!(spec["securityContext"], json!({}));
}

#[test]
fn image_pull_policy_follows_the_tag() {
    for (image, policy) in [
        ("nginx", "Always"),
        ("nginx:latest", "Always"),
        ("nginx:1.25", "IfNotPresent"),
        ("docker.io/library/nginx", "Always"),
        (
            "nginx@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "IfNotPresent",
        ),
        (
            "nginx:1.25@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "IfNotPresent",
        ),
        ("localhost:5000/app", "Always"),
        ("registry.example.com:5000/team/app:v1", "IfNotPresent"),
        ("Registry.Example.com/app", "Always"),
        ("UPPER/app", "IfNotPresent"),
        ("", "IfNotPresent"),
    ] {
        let p = defaulted(
            "",
            "Pod",
            json!({"spec": {"containers": [{"name": "c", "image": image}]}}),
        );
        assert_eq!(
            p["spec"]["containers"][0]["imagePullPolicy"], policy,
            "{image}"
        );
    }
    let p = defaulted(
        "",
        "Pod",
        json!({"spec": {"containers": [{"name": "c", "image": "x", "imagePullPolicy": "Never"}]}}),
    );
    assert_eq!(p["spec"]["containers"][0]["imagePullPolicy"], "Never");
}

#[test]
fn pod_volumes_and_host_network() {
    let p = defaulted(
        "",
        "Pod",
        json!({"spec": {"hostNetwork": true,
        "containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 9090}],
            "env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]}],
        "volumes": [{"name": "scratch"}, {"name": "cfg", "configMap": {"name": "cfg"}}, {"name": "s", "secret": {"secretName": "s"}},
            {"name": "h", "hostPath": {"path": "/tmp"}},
            {"name": "tok", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}]}}),
    );
    let spec = &p["spec"];
    assert_eq!(
        spec["containers"][0]["ports"][0],
        json!({"containerPort": 9090, "hostPort": 9090, "protocol": "TCP"})
    );
    assert_eq!(
        spec["containers"][0]["env"][0]["valueFrom"]["fieldRef"]["apiVersion"],
        "v1"
    );
    assert_eq!(
        spec["volumes"][0],
        json!({"name": "scratch", "emptyDir": {}})
    );
    assert_eq!(spec["volumes"][1]["configMap"]["defaultMode"], 420);
    assert_eq!(spec["volumes"][2]["secret"]["defaultMode"], 420);
    assert_eq!(spec["volumes"][3]["hostPath"]["type"], "");
    assert_eq!(spec["volumes"][4]["projected"]["defaultMode"], 420);
    assert_eq!(
        spec["volumes"][4]["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"],
        3600
    );
}

/// `kubectl create service clusterip web --tcp=80:8080` as stored on a single-stack cluster
/// (cluster IP allocation left to the apiserver).
#[test]
fn service_defaults() {
    let s = defaulted(
        "",
        "Service",
        json!({"metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "80-8080", "port": 80, "targetPort": 8080}, {"port": 53, "protocol": "UDP"}]}}),
    );
    assert_eq!(
        s["spec"],
        json!({
            "internalTrafficPolicy": "Cluster",
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "ports": [{"name": "80-8080", "port": 80, "protocol": "TCP", "targetPort": 8080},
                      {"port": 53, "protocol": "UDP", "targetPort": 53}],
            "selector": {"app": "web"},
            "sessionAffinity": "None",
            "type": "ClusterIP"
        })
    );
    let lb = defaulted(
        "",
        "Service",
        json!({"spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.10", "ports": [{"port": 443}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}, {"hostname": "h"}]}}}),
    );
    assert_eq!(lb["spec"]["externalTrafficPolicy"], "Cluster");
    assert_eq!(lb["spec"]["allocateLoadBalancerNodePorts"], true);
    assert_eq!(lb["spec"]["clusterIPs"], json!(["10.96.0.10"]));
    assert_eq!(lb["status"]["loadBalancer"]["ingress"][0]["ipMode"], "VIP");
    assert!(
        lb["status"]["loadBalancer"]["ingress"][1]
            .get("ipMode")
            .is_none()
    );
    let headless = defaulted("", "Service", json!({"spec": {"clusterIP": "None"}}));
    assert_eq!(headless["spec"]["ipFamilyPolicy"], "RequireDualStack");
    assert_eq!(headless["spec"]["clusterIPs"], json!(["None"]));
    let ext = defaulted(
        "",
        "Service",
        json!({"spec": {"type": "ExternalName", "externalName": "example.com"}}),
    );
    assert!(ext["spec"].get("ipFamilies").is_none());
    assert!(ext["spec"].get("internalTrafficPolicy").is_none());
    let sticky = defaulted(
        "",
        "Service",
        json!({"spec": {"sessionAffinity": "ClientIP"}}),
    );
    assert_eq!(
        sticky["spec"]["sessionAffinityConfig"],
        json!({"clientIP": {"timeoutSeconds": 10800}})
    );
}

#[test]
fn namespace_secret_pvc_defaults() {
    let ns = defaulted("", "Namespace", json!({"metadata": {"name": "team-a"}}));
    assert_eq!(
        ns,
        json!({"metadata": {"name": "team-a", "labels": {"kubernetes.io/metadata.name": "team-a"}},
        "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})
    );
    let s = defaulted("", "Secret", json!({"metadata": {"name": "s"}, "data": {}}));
    assert_eq!(s["type"], "Opaque");
    let pvc = defaulted(
        "",
        "PersistentVolumeClaim",
        json!({"spec": {"accessModes": ["ReadWriteOnce"]}}),
    );
    assert_eq!(pvc["spec"]["volumeMode"], "Filesystem");
    assert_eq!(pvc["status"]["phase"], "Pending");
    let pv = defaulted("", "PersistentVolume", json!({"spec": {}}));
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    assert_eq!(pv["status"]["phase"], "Pending");
}

#[test]
fn job_and_cronjob_defaults() {
    let j = defaulted(
        "batch",
        "Job",
        json!({"metadata": {"name": "pi"}, "spec": {"template": {"metadata": {"labels": {"app": "pi"}},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "pi", "image": "perl:5.34.0"}]}}}}),
    );
    assert_eq!(j["metadata"]["labels"], json!({"app": "pi"}));
    let spec = &j["spec"];
    assert_eq!(spec["completions"], 1);
    assert_eq!(spec["parallelism"], 1);
    assert_eq!(spec["backoffLimit"], 6);
    assert_eq!(spec["completionMode"], "NonIndexed");
    assert_eq!(spec["suspend"], false);
    assert_eq!(spec["manualSelector"], false);
    assert_eq!(spec["podReplacementPolicy"], "TerminatingOrFailed");
    assert_eq!(spec["template"]["spec"]["restartPolicy"], "Never");
    let par = defaulted(
        "batch",
        "Job",
        json!({"spec": {"parallelism": 3, "backoffLimitPerIndex": 1, "podFailurePolicy": {"rules": [{"onPodConditions": [{"type": "DisruptionTarget"}]}]}}}),
    );
    assert!(par["spec"].get("completions").is_none());
    assert_eq!(par["spec"]["backoffLimit"], 2147483647);
    assert_eq!(par["spec"]["podReplacementPolicy"], "Failed");
    assert_eq!(
        par["spec"]["podFailurePolicy"]["rules"][0]["onPodConditions"][0]["status"],
        "True"
    );
    let cj = defaulted(
        "batch",
        "CronJob",
        json!({"spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox:1.28"}]}}}}}}),
    );
    let spec = &cj["spec"];
    assert_eq!(spec["concurrencyPolicy"], "Allow");
    assert_eq!(spec["suspend"], false);
    assert_eq!(spec["successfulJobsHistoryLimit"], 3);
    assert_eq!(spec["failedJobsHistoryLimit"], 1);
    assert_eq!(
        spec["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
        "IfNotPresent"
    );
    assert!(spec["jobTemplate"]["spec"].get("backoffLimit").is_none());
}

#[test]
fn statefulset_and_daemonset_defaults() {
    let s = defaulted(
        "apps",
        "StatefulSet",
        json!({"spec": {"serviceName": "db", "template": {"spec": {"containers": [{"name": "c", "image": "x:1"}]}},
        "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"]}}]}}),
    );
    let spec = &s["spec"];
    assert_eq!(spec["podManagementPolicy"], "OrderedReady");
    assert_eq!(
        spec["updateStrategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
    );
    assert_eq!(
        spec["persistentVolumeClaimRetentionPolicy"],
        json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
    );
    assert_eq!(spec["replicas"], 1);
    assert_eq!(spec["revisionHistoryLimit"], 10);
    assert_eq!(
        spec["volumeClaimTemplates"][0]["spec"]["volumeMode"],
        "Filesystem"
    );
    assert_eq!(
        spec["volumeClaimTemplates"][0]["status"]["phase"],
        "Pending"
    );
    let ondelete = defaulted(
        "apps",
        "StatefulSet",
        json!({"spec": {"updateStrategy": {"type": "OnDelete"}}}),
    );
    assert_eq!(
        ondelete["spec"]["updateStrategy"],
        json!({"type": "OnDelete"})
    );
    let d = defaulted("apps", "DaemonSet", json!({"spec": {}}));
    assert_eq!(
        d["spec"]["updateStrategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
    );
    assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
    let rs = defaulted("apps", "ReplicaSet", json!({"spec": {}}));
    assert_eq!(rs["spec"]["replicas"], 1);
}

#[test]
fn other_group_defaults() {
    let rb = defaulted(
        "rbac.authorization.k8s.io",
        "RoleBinding",
        json!({"roleRef": {"kind": "Role", "name": "r"},
        "subjects": [{"kind": "User", "name": "u"}, {"kind": "ServiceAccount", "name": "s", "namespace": "n"}, {"kind": "Group", "name": "g"}]}),
    );
    assert_eq!(rb["roleRef"]["apiGroup"], "rbac.authorization.k8s.io");
    assert_eq!(rb["subjects"][0]["apiGroup"], "rbac.authorization.k8s.io");
    assert_eq!(rb["subjects"][1]["apiGroup"], "");
    assert_eq!(rb["subjects"][2]["apiGroup"], "rbac.authorization.k8s.io");
    let sc = defaulted(
        "storage.k8s.io",
        "StorageClass",
        json!({"provisioner": "p"}),
    );
    assert_eq!(sc["reclaimPolicy"], "Delete");
    assert_eq!(sc["volumeBindingMode"], "Immediate");
    let pc = defaulted("scheduling.k8s.io", "PriorityClass", json!({"value": 1}));
    assert_eq!(pc["preemptionPolicy"], "PreemptLowerPriority");
    let np = defaulted(
        "networking.k8s.io",
        "NetworkPolicy",
        json!({"spec": {"podSelector": {}, "egress": [{"ports": [{"port": 53}]}]}}),
    );
    assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(np["spec"]["egress"][0]["ports"][0]["protocol"], "TCP");
    let es = defaulted(
        "discovery.k8s.io",
        "EndpointSlice",
        json!({"addressType": "IPv4", "ports": [{"port": 80}]}),
    );
    assert_eq!(
        es["ports"][0],
        json!({"port": 80, "name": "", "protocol": "TCP"})
    );
    let crd = defaulted(
        "apiextensions.k8s.io",
        "CustomResourceDefinition",
        json!({"spec": {"group": "g.io", "names": {"plural": "widgets", "kind": "Widget"},
        "versions": [{"name": "v1", "served": true, "storage": true}]}}),
    );
    assert_eq!(crd["spec"]["names"]["singular"], "widget");
    assert_eq!(crd["spec"]["names"]["listKind"], "WidgetList");
    assert_eq!(crd["spec"]["conversion"], json!({"strategy": "None"}));
    assert_eq!(crd["status"]["storedVersions"], json!(["v1"]));
    let rc = defaulted(
        "",
        "ReplicationController",
        json!({"spec": {"template": {"metadata": {"labels": {"a": "b"}}}}}),
    );
    assert_eq!(rc["spec"]["selector"], json!({"a": "b"}));
    assert_eq!(rc["metadata"]["labels"], json!({"a": "b"}));
    assert_eq!(rc["spec"]["replicas"], 1);
    let lr = defaulted(
        "",
        "LimitRange",
        json!({"spec": {"limits": [{"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "1Mi"}}]}}),
    );
    assert_eq!(lr["spec"]["limits"][0]["default"], json!({"cpu": "2"}));
    assert_eq!(
        lr["spec"]["limits"][0]["defaultRequest"],
        json!({"cpu": "2", "memory": "1Mi"})
    );
}

#[test]
fn malformed_objects_never_panic() {
    let junk = [
        json!(null),
        json!(1),
        json!([]),
        json!({"spec": "x"}),
        json!({"spec": {"template": 3, "containers": [1, null, {"ports": "x", "livenessProbe": 1}], "volumes": [null, 2, {"name": 1}], "ports": [3], "strategy": "x", "updateStrategy": []}}),
        json!({"metadata": [], "spec": {"template": {"spec": {"containers": {"a": 1}}}, "selector": 1, "names": 2, "versions": "v"}, "status": 5}),
    ];
    for def in builtin() {
        for j in &junk {
            let mut v = j.clone();
            apply_defaults(&def, &mut v);
        }
    }
}

#[test]
fn custom_resources_get_schema_defaults() {
    let crd = json!({"metadata": {"name": "widgets.example.com"}, "spec": {"group": "example.com", "scope": "Namespaced",
    "names": {"plural": "widgets", "kind": "Widget"},
    "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
        "type": "object",
        "properties": {"spec": {"type": "object", "default": {}, "properties": {
            "replicas": {"type": "integer", "default": 1},
            "ports": {"type": "array", "items": {"type": "object", "properties": {"protocol": {"type": "string", "default": "TCP"}}}},
            "labels": {"type": "object", "additionalProperties": {"type": "object", "properties": {"v": {"type": "string", "default": "x"}}}}
        }}}}}}]}});
    let d = crate::crd::resource_defs(&crd).expect("crd").remove(0);
    let mut w = json!({"metadata": {"name": "w"}});
    apply_defaults(&d, &mut w);
    assert_eq!(w["spec"], json!({"replicas": 1}));
    let mut w =
        json!({"spec": {"replicas": 3, "ports": [{}, {"protocol": "UDP"}], "labels": {"a": {}}}});
    apply_defaults(&d, &mut w);
    assert_eq!(
        w["spec"],
        json!({"replicas": 3, "ports": [{"protocol": "TCP"}, {"protocol": "UDP"}], "labels": {"a": {"v": "x"}}})
    );
}
