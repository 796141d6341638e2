//! Virtual resources answered without storage: SelfSubjectReview (`kubectl auth whoami`),
//! SelfSubjectAccessReview (`kubectl auth can-i`), SubjectAccessReview,
//! LocalSubjectAccessReview, SelfSubjectRulesReview, TokenReview, and core/v1 Binding.

use http::Response;
use kumo_apimachinery::ApiError;
use kumo_registry::ResourceDef;
use serde_json::{Value, json};

use crate::api::User;
use crate::authz::CacheLookup;
use crate::body::{self, Body};
use crate::http::Ctx;

fn user_json(u: &User) -> Value {
    let mut v = json!({"username": u.name, "groups": u.groups});
    if !u.uid.is_empty() {
        v["uid"] = json!(u.uid);
    }
    if !u.extra.is_empty() {
        v["extra"] = json!(u.extra);
    }
    v
}

fn attrs_from(spec: &Value, ns_override: Option<&str>) -> kumo_auth::Attributes {
    if let Some(r) = spec.get("resourceAttributes") {
        let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        kumo_auth::Attributes {
            verb: s("verb"),
            api_group: s("group"),
            api_version: s("version"),
            resource: s("resource"),
            subresource: s("subresource"),
            namespace: ns_override
                .map(str::to_string)
                .unwrap_or_else(|| s("namespace")),
            name: s("name"),
            path: String::new(),
            resource_request: true,
        }
    } else {
        let n = spec.get("nonResourceAttributes");
        let s = |k: &str| {
            n.and_then(|r| r.get(k))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        kumo_auth::Attributes::non_resource(&s("verb"), &s("path"))
    }
}

/// The decision of the request path's authorizers, in its order: the Node authorizer, then
/// RBAC.
fn decide(ctx: &Ctx, user: &User, attrs: &kumo_auth::Attributes) -> Value {
    match &ctx.api.authorizer {
        None => json!({"allowed": true}),
        Some(a)
            if crate::authz::node_authorize(&ctx.api.cache, a.source(), user, attrs)
                == Some(true) =>
        {
            json!({"allowed": true})
        }
        Some(a) => match a.authorize(user, attrs) {
            kumo_auth::Decision::Allow => {
                json!({"allowed": true, "reason": "RBAC: allowed"})
            }
            kumo_auth::Decision::Deny(reason) => {
                let mut v = json!({"allowed": false});
                if !reason.is_empty() {
                    v["reason"] = json!(reason);
                }
                v
            }
        },
    }
}

/// POST on a virtual resource.
pub async fn create(
    ctx: &mut Ctx,
    def: &ResourceDef,
    ns: Option<&str>,
    mut obj: Value,
) -> Result<Response<Body>, ApiError> {
    let spec = obj.get("spec").cloned().unwrap_or(json!({}));
    let status = match def.kind.as_str() {
        "SelfSubjectReview" => json!({"userInfo": user_json(&ctx.user)}),
        "SelfSubjectAccessReview" => {
            let attrs = attrs_from(&spec, None);
            decide(ctx, &ctx.user.clone(), &attrs)
        }
        "SubjectAccessReview" | "LocalSubjectAccessReview" => {
            let user = User {
                name: spec
                    .get("user")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                uid: spec
                    .get("uid")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                groups: spec
                    .get("groups")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|g| g.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
                extra: Default::default(),
            };
            if user.name.is_empty() && user.groups.is_empty() {
                return Err(ApiError::invalid(
                    &def.group,
                    &def.kind,
                    "",
                    vec![kumo_apimachinery::Cause::new(
                        "FieldValueInvalid",
                        "spec.user",
                        "Invalid value: \"\": at least one of user or group must be specified",
                    )],
                ));
            }
            let attrs = attrs_from(&spec, ns);
            decide(ctx, &user, &attrs)
        }
        "SelfSubjectRulesReview" => {
            let ns = spec.get("namespace").and_then(Value::as_str).unwrap_or("");
            match &ctx.api.authorizer {
                Some(a) => {
                    let (rules, errors) = a.rules_for(&ctx.user, ns);
                    let mut resource_rules = Vec::new();
                    let mut non_resource_rules = Vec::new();
                    for r in rules {
                        let v = serde_json::to_value(&r).unwrap_or(json!({}));
                        if r.non_resource_urls.as_ref().is_some_and(|u| !u.is_empty()) {
                            non_resource_rules.push(json!({"verbs": v.get("verbs"), "nonResourceURLs": v.get("nonResourceURLs")}));
                        } else {
                            let mut rr = json!({"verbs": v.get("verbs")});
                            for k in ["apiGroups", "resources", "resourceNames"] {
                                if let Some(x) = v.get(k) {
                                    rr[k] = x.clone();
                                }
                            }
                            resource_rules.push(rr);
                        }
                    }
                    let mut st = json!({"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": !errors.is_empty()});
                    if !errors.is_empty() {
                        st["evaluationError"] = json!(errors.join(", "));
                    }
                    st
                }
                None => {
                    json!({"resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}], "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}], "incomplete": false})
                }
            }
        }
        "TokenReview" => {
            let token = spec.get("token").and_then(Value::as_str).unwrap_or("");
            match ctx
                .api
                .tokens
                .authenticate(token, &CacheLookup(ctx.api.cache.clone()))
            {
                Some(u) => {
                    json!({"authenticated": true, "user": user_json(&u), "audiences": spec.get("audiences").cloned().unwrap_or(json!([]))})
                }
                None => json!({"authenticated": false, "error": "invalid bearer token"}),
            }
        }
        "Binding" => {
            let name = obj
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            return crate::subresources::create(ctx, def, ns, &name, "binding", obj).await;
        }
        other => {
            return Err(ApiError::method_not_allowed(format!(
                "create is not supported on {other}"
            )));
        }
    };
    if let Some(o) = obj.as_object_mut() {
        o.insert("status".into(), status);
        o.insert("kind".into(), json!(def.kind));
        o.insert("apiVersion".into(), json!(def.api_version()));
        o.entry("metadata")
            .or_insert(json!({"creationTimestamp": null}));
    }
    Ok(body::respond(201, &obj, ctx.output))
}
