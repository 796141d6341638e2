//! Webhook authentication (TokenReview) and authorization (SubjectAccessReview) of kubelet
//! API requests, like upstream's `--authentication-token-webhook` and
//! `--authorization-mode=Webhook`, with upstream's cache lifetimes: tokens 2 min, allowed
//! decisions 5 min, denied ones 30 s (so a fresh RoleBinding takes effect soon).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::Method;
use kumo_auth::UserInfo;
use serde_json::{Value, json};

const TOKEN_TTL: Duration = Duration::from_secs(120);
const ALLOW_TTL: Duration = Duration::from_secs(300);
const DENY_TTL: Duration = Duration::from_secs(30);
/// Entries kept before a cache is cleared wholesale (bounds memory under token churn).
const MAX_ENTRIES: usize = 4096;

/// The resource attributes a request is authorized as: verb on `nodes/<subresource>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Attrs {
    pub verb: String,
    pub subresource: String,
    pub name: String,
}

/// Upstream's `NodeAuthorizerAttributesGetter`: the HTTP method gives the verb, the path the
/// subresource (`/stats` → stats, `/metrics` → metrics, `/logs` → log, anything else
/// including `/exec` and `/containerLogs` → proxy).
pub(crate) fn attributes(method: &Method, path: &str, node: &str) -> Attrs {
    let verb = match *method {
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "get",
    };
    let under = |p: &str| path == p || path.starts_with(&format!("{p}/"));
    let subresource = if under("/stats") {
        "stats"
    } else if under("/metrics") {
        "metrics"
    } else if under("/logs") {
        "log"
    } else {
        "proxy"
    };
    Attrs {
        verb: verb.into(),
        subresource: subresource.into(),
        name: node.into(),
    }
}

type UserKey = (String, String, Vec<String>, BTreeMap<String, Vec<String>>);

#[derive(Default)]
pub(crate) struct AuthCache {
    tokens: Mutex<HashMap<String, (Instant, Option<UserInfo>)>>,
    decisions: Mutex<HashMap<(UserKey, Attrs), (Instant, bool)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn create(client: &kube::Client, path: &str, body: &Value) -> anyhow::Result<Value> {
    let req = http::Request::post(path)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(body)?)?;
    Ok(client.request::<Value>(req).await?)
}

impl AuthCache {
    /// The user a bearer token belongs to (`Ok(None)`: the apiserver does not know it).
    pub(crate) async fn authenticate_token(
        &self,
        client: &kube::Client,
        token: &str,
    ) -> anyhow::Result<Option<UserInfo>> {
        if let Some((at, u)) = lock(&self.tokens).get(token)
            && at.elapsed() < TOKEN_TTL
        {
            return Ok(u.clone());
        }
        let review = create(
            client,
            "/apis/authentication.k8s.io/v1/tokenreviews",
            &json!({
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenReview",
                "spec": {"token": token},
            }),
        )
        .await?;
        let status = review.get("status");
        let user = if status
            .and_then(|s| s.get("authenticated"))
            .and_then(Value::as_bool)
            == Some(true)
        {
            let u = status.and_then(|s| s.get("user"));
            let s = |k: &str| {
                u.and_then(|u| u.get(k))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            let groups = u
                .and_then(|u| u.get("groups"))
                .and_then(|g| serde_json::from_value::<Vec<String>>(g.clone()).ok())
                .unwrap_or_default();
            let extra = u
                .and_then(|u| u.get("extra"))
                .and_then(|g| serde_json::from_value(g.clone()).ok())
                .unwrap_or_default();
            Some(UserInfo {
                name: s("username"),
                uid: s("uid"),
                groups,
                extra,
            })
        } else {
            None
        };
        let mut cache = lock(&self.tokens);
        if cache.len() >= MAX_ENTRIES {
            cache.clear();
        }
        cache.insert(token.to_string(), (Instant::now(), user.clone()));
        Ok(user)
    }

    /// Whether `user` may do `attrs` on this node, asked with a SubjectAccessReview.
    pub(crate) async fn authorize(
        &self,
        client: &kube::Client,
        user: &UserInfo,
        attrs: &Attrs,
    ) -> anyhow::Result<bool> {
        let key = (
            (
                user.name.clone(),
                user.uid.clone(),
                user.groups.clone(),
                user.extra.clone(),
            ),
            attrs.clone(),
        );
        if let Some((at, allowed)) = lock(&self.decisions).get(&key)
            && at.elapsed() < if *allowed { ALLOW_TTL } else { DENY_TTL }
        {
            return Ok(*allowed);
        }
        let mut spec = json!({
            "user": user.name,
            "groups": user.groups,
            "resourceAttributes": {
                "verb": attrs.verb,
                "version": "v1",
                "resource": "nodes",
                "subresource": attrs.subresource,
                "name": attrs.name,
            },
        });
        if !user.uid.is_empty() {
            spec["uid"] = json!(user.uid);
        }
        if !user.extra.is_empty() {
            spec["extra"] = json!(user.extra);
        }
        let review = create(
            client,
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            &json!({
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SubjectAccessReview",
                "spec": spec,
            }),
        )
        .await?;
        let allowed = review
            .get("status")
            .and_then(|s| s.get("allowed"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let mut cache = lock(&self.decisions);
        if cache.len() >= MAX_ENTRIES {
            cache.clear();
        }
        cache.insert(key, (Instant::now(), allowed));
        Ok(allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subresources_follow_upstream_mapping() {
        let a = |m: &Method, p: &str| attributes(m, p, "n1");
        assert_eq!(a(&Method::GET, "/metrics").subresource, "metrics");
        assert_eq!(a(&Method::GET, "/metrics/cadvisor").subresource, "metrics");
        assert_eq!(a(&Method::GET, "/stats/summary").subresource, "stats");
        assert_eq!(a(&Method::GET, "/logs/").subresource, "log");
        assert_eq!(
            a(&Method::GET, "/containerLogs/ns/p/c").subresource,
            "proxy"
        );
        assert_eq!(a(&Method::POST, "/exec/ns/p/c").verb, "create");
        assert_eq!(a(&Method::GET, "/exec/ns/p/c").verb, "get");
        assert_eq!(a(&Method::GET, "/metricsfoo").subresource, "proxy");
        assert_eq!(a(&Method::GET, "/pods").name, "n1");
    }
}
