use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::rbac::v1::{
    AggregationRule, ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef,
    Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};

use crate::authn::UserInfo;
use crate::rbac::*;

fn v(items: &[&str]) -> Option<Vec<String>> {
    Some(items.iter().map(|s| s.to_string()).collect())
}

fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> PolicyRule {
    PolicyRule {
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        api_groups: v(groups),
        resources: v(resources),
        ..Default::default()
    }
}

fn url_rule(verbs: &[&str], urls: &[&str]) -> PolicyRule {
    PolicyRule {
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        non_resource_urls: v(urls),
        ..Default::default()
    }
}

fn named(name: &str, ns: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: ns.map(str::to_string),
        ..Default::default()
    }
}

fn cluster_role(name: &str, rules: Vec<PolicyRule>) -> Arc<ClusterRole> {
    Arc::new(ClusterRole {
        metadata: named(name, None),
        rules: Some(rules),
        aggregation_rule: None,
    })
}

fn subject(kind: &str, name: &str, ns: Option<&str>) -> Subject {
    Subject {
        api_group: if kind == "ServiceAccount" {
            None
        } else {
            Some("rbac.authorization.k8s.io".into())
        },
        kind: kind.into(),
        name: name.into(),
        namespace: ns.map(str::to_string),
    }
}

fn crb(name: &str, role: &str, subjects: Vec<Subject>) -> Arc<ClusterRoleBinding> {
    Arc::new(ClusterRoleBinding {
        metadata: named(name, None),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: role.into(),
        },
        subjects: Some(subjects),
    })
}

fn rb(ns: &str, name: &str, kind: &str, role: &str, subjects: Vec<Subject>) -> Arc<RoleBinding> {
    Arc::new(RoleBinding {
        metadata: named(name, Some(ns)),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: kind.into(),
            name: role.into(),
        },
        subjects: Some(subjects),
    })
}

fn user(name: &str, groups: &[&str]) -> UserInfo {
    UserInfo::new(name, groups.iter().copied())
}

fn res(verb: &str, group: &str, resource: &str, ns: &str, name: &str) -> Attributes {
    Attributes::resource(verb, group, resource, ns, name)
}

fn source() -> StaticRbac {
    StaticRbac {
        cluster_roles: vec![
            cluster_role(
                "pod-reader",
                vec![rule(&["get", "list", "watch"], &[""], &["pods"])],
            ),
            cluster_role("everything", vec![rule(&["*"], &["*"], &["*"])]),
            cluster_role("logs", vec![rule(&["get"], &[""], &["pods/log"])]),
            cluster_role(
                "scaler",
                vec![rule(&["update", "patch"], &["apps"], &["*/scale"])],
            ),
            cluster_role(
                "one-configmap",
                vec![PolicyRule {
                    resource_names: v(&["settings"]),
                    ..rule(&["get", "update"], &[""], &["configmaps"])
                }],
            ),
            cluster_role(
                "urls",
                vec![
                    url_rule(&["get"], &["/healthz", "/apis/*"]),
                    url_rule(&["*"], &["/logs"]),
                ],
            ),
        ],
        cluster_role_bindings: vec![
            crb(
                "alice-reads-pods",
                "pod-reader",
                vec![subject("User", "alice", None)],
            ),
            crb(
                "ops-everything",
                "everything",
                vec![subject("Group", "ops", None)],
            ),
            crb(
                "urls",
                "urls",
                vec![subject("Group", "system:authenticated", None)],
            ),
            crb(
                "dangling",
                "missing-role",
                vec![subject("User", "dave", None)],
            ),
            crb(
                "sa-scaler",
                "scaler",
                vec![subject("ServiceAccount", "autoscaler", Some("kube-system"))],
            ),
            // A ServiceAccount subject without namespace matches nothing at cluster scope.
            crb(
                "sa-nons",
                "everything",
                vec![subject("ServiceAccount", "x", None)],
            ),
        ],
        roles: vec![Arc::new(Role {
            metadata: named("cm-editor", Some("dev")),
            rules: Some(vec![rule(&["create", "delete"], &[""], &["configmaps"])]),
        })],
        role_bindings: vec![
            rb(
                "dev",
                "bob-logs",
                "ClusterRole",
                "logs",
                vec![subject("User", "bob", None)],
            ),
            rb(
                "dev",
                "bob-cm",
                "Role",
                "cm-editor",
                vec![subject("User", "bob", None)],
            ),
            rb(
                "dev",
                "bob-one",
                "ClusterRole",
                "one-configmap",
                vec![subject("User", "bob", None)],
            ),
            // Namespace defaults to the binding's.
            rb(
                "dev",
                "sa-reads",
                "ClusterRole",
                "pod-reader",
                vec![subject("ServiceAccount", "ci", None)],
            ),
            rb(
                "dev",
                "dangling-role",
                "Role",
                "nope",
                vec![subject("User", "dave", None)],
            ),
        ],
    }
}

#[test]
fn allows_and_denies_like_upstream() {
    let a = Authorizer::new(source());
    let alice = user("alice", &[]);
    let bob = user("bob", &[]);
    let ops = user("carol", &["ops"]);
    let allowed = |u: &UserInfo, attrs: Attributes| a.authorize(u, &attrs).is_allowed();

    // ClusterRoleBinding: any namespace and cluster-wide.
    assert!(allowed(&alice, res("list", "", "pods", "default", "")));
    assert!(allowed(&alice, res("get", "", "pods", "kube-system", "p1")));
    assert!(allowed(&alice, res("watch", "", "pods", "", "")));
    assert!(!allowed(&alice, res("delete", "", "pods", "default", "p1")));
    assert!(!allowed(&alice, res("list", "apps", "pods", "default", "")));
    assert!(!allowed(&alice, res("list", "", "services", "default", "")));
    // Subresources need their own rule.
    assert!(!allowed(
        &alice,
        res("get", "", "pods/log", "default", "p1")
    ));

    // Wildcards.
    assert!(allowed(
        &ops,
        res("deletecollection", "apps", "deployments", "x", "")
    ));
    assert!(allowed(&ops, res("get", "", "pods/log", "x", "p")));
    assert!(allowed(
        &ops,
        res("impersonate", "", "users", "", "someone")
    ));
    assert!(!allowed(&ops, Attributes::non_resource("get", "/metrics")));

    // RoleBindings apply only in their namespace, and never cluster-wide.
    assert!(allowed(&bob, res("get", "", "pods/log", "dev", "p1")));
    assert!(!allowed(&bob, res("get", "", "pods/log", "prod", "p1")));
    assert!(!allowed(&bob, res("get", "", "pods/log", "", "p1")));
    assert!(!allowed(&bob, res("get", "", "pods", "dev", "p1")));
    assert!(allowed(&bob, res("create", "", "configmaps", "dev", "")));
    assert!(!allowed(&bob, res("create", "", "configmaps", "prod", "")));

    // resourceNames: only the named object, and never a list/create without a name.
    assert!(allowed(
        &bob,
        res("get", "", "configmaps", "dev", "settings")
    ));
    assert!(allowed(
        &bob,
        res("update", "", "configmaps", "dev", "settings")
    ));
    assert!(!allowed(&bob, res("get", "", "configmaps", "dev", "other")));
    assert!(!allowed(&bob, res("get", "", "configmaps", "dev", "")));

    // */subresource.
    let scaler = user(
        "system:serviceaccount:kube-system:autoscaler",
        &["system:serviceaccounts"],
    );
    assert!(allowed(
        &scaler,
        res("update", "apps", "deployments/scale", "web", "d")
    ));
    assert!(allowed(
        &scaler,
        res("patch", "apps", "statefulsets/scale", "", "s")
    ));
    assert!(!allowed(
        &scaler,
        res("update", "apps", "deployments", "web", "d")
    ));
    assert!(!allowed(
        &scaler,
        res("update", "apps", "deployments/status", "web", "d")
    ));
    assert!(!allowed(
        &user("system:serviceaccount:other:autoscaler", &[]),
        res("update", "apps", "deployments/scale", "web", "d")
    ));

    // ServiceAccount subject without namespace in a RoleBinding.
    let ci = user("system:serviceaccount:dev:ci", &[]);
    assert!(allowed(&ci, res("list", "", "pods", "dev", "")));
    assert!(!allowed(
        &user("system:serviceaccount:prod:ci", &[]),
        res("list", "", "pods", "dev", "")
    ));
    assert!(!allowed(&user("x", &[]), res("list", "", "pods", "", "")));
    assert!(!allowed(
        &user("system:serviceaccount::x", &[]),
        res("list", "", "pods", "", "")
    ));

    // Non-resource URLs: exact and trailing-* prefixes.
    let anyone = user("eve", &[]);
    assert!(allowed(
        &anyone,
        Attributes::non_resource("get", "/healthz")
    ));
    assert!(!allowed(
        &anyone,
        Attributes::non_resource("post", "/healthz")
    ));
    assert!(!allowed(
        &anyone,
        Attributes::non_resource("get", "/healthz/etcd")
    ));
    assert!(allowed(
        &anyone,
        Attributes::non_resource("get", "/apis/apps/v1")
    ));
    assert!(allowed(&anyone, Attributes::non_resource("get", "/apis/")));
    assert!(!allowed(&anyone, Attributes::non_resource("get", "/apis")));
    assert!(allowed(
        &anyone,
        Attributes::non_resource("delete", "/logs")
    ));
    assert!(!allowed(
        &anyone,
        Attributes::non_resource("get", "/logs/x")
    ));
    // Non-resource rules do not grant resources and vice versa.
    assert!(!allowed(&anyone, res("get", "", "healthz", "", "")));
    assert!(!allowed(
        &alice,
        Attributes::non_resource("get", "/api/v1/pods")
    ));
    // Anonymous is not system:authenticated.
    assert!(!allowed(
        &UserInfo::anonymous(),
        Attributes::non_resource("get", "/healthz")
    ));

    // system:masters is always allowed, even with no bindings at all.
    let empty = Authorizer::new(StaticRbac::default());
    let root = user("root", &["system:masters"]);
    assert!(
        empty
            .authorize(
                &root,
                &res(
                    "escalate",
                    "rbac.authorization.k8s.io",
                    "clusterroles",
                    "",
                    "x"
                )
            )
            .is_allowed()
    );
    assert!(
        empty
            .authorize(&root, &Attributes::non_resource("get", "/anything"))
            .is_allowed()
    );
    assert_eq!(
        empty.authorize(&alice, &res("get", "", "pods", "", "")),
        Decision::Deny(String::new())
    );
}

#[test]
fn missing_roles_are_reported_in_the_reason() {
    let a = Authorizer::new(source());
    let dave = user("dave", &[]);
    assert_eq!(
        a.authorize(&dave, &res("get", "", "pods", "", "")),
        Decision::Deny(
            "RBAC: clusterrole.rbac.authorization.k8s.io \"missing-role\" not found".into()
        )
    );
    assert_eq!(
        a.authorize(&dave, &res("get", "", "pods", "dev", "")),
        Decision::Deny(
            "RBAC: [clusterrole.rbac.authorization.k8s.io \"missing-role\" not found, role.rbac.authorization.k8s.io \"nope\" not found]"
                .into()
        )
    );
    let (rules, errors) = a.rules_for(&user("bob", &[]), "dev");
    // logs, cm-editor, one-configmap, and the 2 URL rules bob has as system:authenticated.
    assert_eq!(rules.len(), 5);
    assert!(errors.is_empty());
}

#[test]
fn forbidden_messages() {
    let alice = user("alice", &[]);
    assert_eq!(
        forbidden_message(&alice, &res("list", "", "pods", "default", "")),
        "User \"alice\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
    );
    assert_eq!(
        forbidden_message(&alice, &res("list", "", "nodes", "", "")),
        "User \"alice\" cannot list resource \"nodes\" in API group \"\" at the cluster scope"
    );
    assert_eq!(
        forbidden_message(&alice, &res("get", "", "pods/log", "dev", "p")),
        "User \"alice\" cannot get resource \"pods/log\" in API group \"\" in the namespace \"dev\""
    );
    assert_eq!(
        forbidden_message(&user("x", &[]), &Attributes::non_resource("get", "/foo")),
        "User \"x\" cannot get path \"/foo\""
    );
    let anon = UserInfo::anonymous();
    assert_eq!(
        forbidden_status_message(&anon, &res("list", "", "pods", "default", ""), ""),
        "pods is forbidden: User \"system:anonymous\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
    );
    assert_eq!(
        forbidden_status_message(
            &alice,
            &res("get", "apps", "deployments", "web", "d1"),
            "RBAC: x"
        ),
        "deployments.apps \"d1\" is forbidden: User \"alice\" cannot get resource \"deployments\" in API group \"apps\" in the namespace \"web\": RBAC: x"
    );
    assert_eq!(
        forbidden_status_message(&anon, &Attributes::non_resource("get", "/metrics"), ""),
        "forbidden: User \"system:anonymous\" cannot get path \"/metrics\""
    );
    assert_eq!(
        forbidden_status(&anon, &Attributes::non_resource("get", "/"), ""),
        serde_json::json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
            "message":"forbidden: User \"system:anonymous\" cannot get path \"/\"","reason":"Forbidden",
            "details":{},"code":403})
    );
    assert_eq!(
        forbidden_status(&alice, &res("get", "apps", "deployments", "web", "d1"), "")["details"],
        serde_json::json!({"name": "d1", "group": "apps", "kind": "deployments"})
    );
    assert_eq!(unauthorized_status()["code"], 401);
    assert_eq!(go_quote("a\"b\\c\n\u{1}é"), "\"a\\\"b\\\\c\\n\\x01é\"");
}

fn labelled(
    name: &str,
    labels: &[(&str, &str)],
    rules: Vec<PolicyRule>,
    aggregate: Option<Vec<LabelSelector>>,
) -> ClusterRole {
    ClusterRole {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        rules: if rules.is_empty() { None } else { Some(rules) },
        aggregation_rule: aggregate.map(|s| AggregationRule {
            cluster_role_selectors: Some(s),
        }),
    }
}

fn match_labels(k: &str, val: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([(k.to_string(), val.to_string())])),
        match_expressions: None,
    }
}

#[test]
fn aggregation() {
    let r1 = rule(&["get"], &[""], &["pods"]);
    let r2 = rule(&["list"], &[""], &["pods"]);
    let roles = vec![
        labelled("top", &[], vec![], Some(vec![match_labels("agg", "top")])),
        labelled(
            "mid",
            &[("agg", "top")],
            vec![],
            Some(vec![match_labels("agg", "mid")]),
        ),
        labelled("b", &[("agg", "mid")], vec![r2.clone(), r1.clone()], None),
        labelled("a", &[("agg", "mid")], vec![r1.clone()], None),
        labelled(
            "c",
            &[("agg", "other")],
            vec![rule(&["*"], &["*"], &["*"])],
            None,
        ),
    ];
    // One step: mid gets a's then b's rules, duplicates dropped, sorted by role name.
    assert_eq!(
        aggregated_rules(&roles[1], &roles).unwrap(),
        Some(vec![r1.clone(), r2.clone()])
    );
    assert_eq!(aggregated_rules(&roles[2], &roles).unwrap(), None);
    // top selects mid, which has no rules yet.
    assert_eq!(aggregated_rules(&roles[0], &roles).unwrap(), Some(vec![]));
    // To a fixpoint, top sees mid's aggregated rules.
    let all = aggregate_all(&roles).unwrap();
    assert_eq!(all[0].rules, Some(vec![r1.clone(), r2.clone()]));
    assert_eq!(all[1].rules, Some(vec![r1.clone(), r2.clone()]));

    // Expressions.
    let labels = BTreeMap::from([("tier".to_string(), "web".to_string())]);
    let expr = |op: &str, vals: &[&str]| LabelSelector {
        match_labels: None,
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "tier".into(),
            operator: op.into(),
            values: if vals.is_empty() { None } else { v(vals) },
        }]),
    };
    assert!(label_selector_matches(&expr("In", &["web", "db"]), &labels).unwrap());
    assert!(!label_selector_matches(&expr("NotIn", &["web"]), &labels).unwrap());
    assert!(label_selector_matches(&expr("NotIn", &["db"]), &labels).unwrap());
    assert!(label_selector_matches(&expr("Exists", &[]), &labels).unwrap());
    assert!(!label_selector_matches(&expr("DoesNotExist", &[]), &labels).unwrap());
    assert!(label_selector_matches(&LabelSelector::default(), &labels).unwrap());
    assert!(label_selector_matches(&expr("Bogus", &[]), &labels).is_err());
    assert!(label_selector_matches(&expr("In", &[]), &labels).is_err());
    assert!(label_selector_matches(&expr("Exists", &["x"]), &labels).is_err());
    // A cycle terminates.
    let cyc = vec![
        labelled(
            "x",
            &[("l", "y")],
            vec![r1.clone()],
            Some(vec![match_labels("l", "x")]),
        ),
        labelled(
            "y",
            &[("l", "x")],
            vec![r2.clone()],
            Some(vec![match_labels("l", "y")]),
        ),
    ];
    assert!(aggregate_all(&cyc).is_ok());
}

#[test]
fn bootstrap_policy_shape() {
    let p = bootstrap_policy().unwrap();
    let names: Vec<&str> = p
        .cluster_roles
        .iter()
        .map(|r| r.metadata.name.as_deref().unwrap())
        .collect();
    for want in [
        "cluster-admin",
        "admin",
        "edit",
        "view",
        "system:discovery",
        "system:basic-user",
        "system:public-info-viewer",
        "system:node",
        "system:node-bootstrapper",
        "system:kube-scheduler",
        "system:kube-controller-manager",
        "system:volume-scheduler",
        "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
        "system:aggregate-to-view",
    ] {
        assert!(names.contains(&want), "{want}");
    }
    for r in &p.cluster_roles {
        assert_eq!(
            r.metadata.labels.as_ref().unwrap()["kubernetes.io/bootstrapping"],
            "rbac-defaults"
        );
        assert_eq!(
            r.metadata.annotations.as_ref().unwrap()["rbac.authorization.kubernetes.io/autoupdate"],
            "true"
        );
    }
    for b in &p.cluster_role_bindings {
        assert!(
            names.contains(&b.role_ref.name.as_str()),
            "{}",
            b.role_ref.name
        );
        assert_eq!(
            b.metadata.labels.as_ref().unwrap()["kubernetes.io/bootstrapping"],
            "rbac-defaults"
        );
    }
    let view = p
        .cluster_roles
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some("view"))
        .unwrap();
    assert!(view.rules.is_none());
    assert_eq!(
        view.metadata.labels.as_ref().unwrap()["rbac.authorization.k8s.io/aggregate-to-edit"],
        "true"
    );
}

#[test]
fn bootstrap_policy_grants() {
    let mut src = StaticRbac::bootstrap().unwrap();
    src.role_bindings = vec![
        rb(
            "team",
            "v",
            "ClusterRole",
            "view",
            vec![subject("User", "viewer", None)],
        ),
        rb(
            "team",
            "e",
            "ClusterRole",
            "edit",
            vec![subject("User", "editor", None)],
        ),
        rb(
            "team",
            "a",
            "ClusterRole",
            "admin",
            vec![subject("User", "owner", None)],
        ),
    ];
    let a = Authorizer::new(src);
    let ok = |u: &UserInfo, attrs: Attributes| a.authorize(u, &attrs).is_allowed();
    let authed = user("someone", &[]);
    let anon = UserInfo::anonymous();

    // Discovery and public info.
    assert!(ok(&authed, Attributes::non_resource("get", "/api")));
    assert!(ok(
        &authed,
        Attributes::non_resource("get", "/apis/apps/v1")
    ));
    assert!(ok(&authed, Attributes::non_resource("get", "/openapi/v3")));
    assert!(ok(&anon, Attributes::non_resource("get", "/healthz")));
    assert!(ok(&anon, Attributes::non_resource("get", "/version")));
    assert!(!ok(&anon, Attributes::non_resource("get", "/api")));
    assert!(!ok(&authed, Attributes::non_resource("get", "/metrics")));
    assert!(ok(
        &authed,
        res(
            "create",
            "authorization.k8s.io",
            "selfsubjectaccessreviews",
            "",
            ""
        )
    ));
    assert!(!ok(&authed, res("list", "", "pods", "default", "")));
    let sa = user(
        "system:serviceaccount:default:x",
        &["system:serviceaccounts"],
    );
    assert!(ok(&sa, Attributes::non_resource("get", "/openid/v1/jwks")));

    // Aggregated view < edit < admin.
    let viewer = user("viewer", &[]);
    let editor = user("editor", &[]);
    let owner = user("owner", &[]);
    assert!(ok(&viewer, res("list", "", "pods", "team", "")));
    assert!(ok(&viewer, res("get", "apps", "deployments", "team", "d")));
    assert!(ok(&viewer, res("get", "", "pods/log", "team", "p")));
    assert!(!ok(&viewer, res("get", "", "secrets", "team", "s")));
    assert!(!ok(&viewer, res("create", "", "pods", "team", "")));
    assert!(!ok(&viewer, res("list", "", "pods", "other", "")));
    assert!(ok(&editor, res("get", "", "secrets", "team", "s")));
    assert!(ok(
        &editor,
        res("create", "apps", "deployments", "team", "")
    ));
    assert!(ok(
        &editor,
        res("update", "apps", "deployments/scale", "team", "d")
    ));
    assert!(ok(&editor, res("list", "", "pods", "team", "")));
    assert!(!ok(
        &editor,
        res("create", "rbac.authorization.k8s.io", "roles", "team", "")
    ));
    assert!(ok(
        &owner,
        res(
            "create",
            "rbac.authorization.k8s.io",
            "rolebindings",
            "team",
            ""
        )
    ));
    assert!(ok(&owner, res("delete", "", "pods", "team", "p")));
    assert!(ok(&owner, res("watch", "", "configmaps", "team", "")));

    // Components.
    let sched = user("system:kube-scheduler", &[]);
    assert!(ok(
        &sched,
        res("create", "", "pods/binding", "default", "p")
    ));
    assert!(ok(&sched, res("list", "", "nodes", "", "")));
    assert!(ok(&sched, res("update", "", "persistentvolumes", "", "pv")));
    assert!(ok(
        &sched,
        res(
            "update",
            "coordination.k8s.io",
            "leases",
            "kube-system",
            "kube-scheduler"
        )
    ));
    assert!(!ok(
        &sched,
        res(
            "update",
            "coordination.k8s.io",
            "leases",
            "kube-system",
            "other"
        )
    ));
    assert!(!ok(&sched, res("create", "", "pods", "default", "")));
    let kcm = user("system:kube-controller-manager", &[]);
    assert!(ok(&kcm, res("watch", "apps", "replicasets", "", "")));
    assert!(ok(
        &kcm,
        res("create", "", "serviceaccounts/token", "kube-system", "x")
    ));
    assert!(!ok(
        &kcm,
        res("create", "apps", "replicasets", "default", "")
    ));

    // Bootstrapping nodes.
    let boot = user("system:bootstrap:abcdef", &["system:bootstrappers"]);
    assert!(ok(
        &boot,
        res(
            "create",
            "certificates.k8s.io",
            "certificatesigningrequests",
            "",
            ""
        )
    ));
    assert!(ok(
        &boot,
        res(
            "create",
            "certificates.k8s.io",
            "certificatesigningrequests/nodeclient",
            "",
            ""
        )
    ));
    assert!(!ok(&boot, res("list", "", "pods", "", "")));
    // Upstream leaves system:node unbound (Node authorizer).
    assert!(!ok(
        &user("system:node:n1", &["system:nodes"]),
        res("list", "", "pods", "", "")
    ));

    // cluster-admin through system:masters' binding.
    let admin = user("kubernetes-admin", &["system:masters"]);
    assert!(ok(&admin, res("delete", "", "nodes", "", "n1")));
}
