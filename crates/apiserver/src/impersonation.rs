//! User impersonation (`kubectl --as`, `--as-group`, `--as-uid`): upstream's
//! `WithImpersonation` filter. A request carrying `Impersonate-User` (and optionally
//! `Impersonate-Group`, `Impersonate-Uid`, `Impersonate-Extra-<key>`) is served as that user,
//! once the requester is allowed the `impersonate` verb on each thing asked for: `users`
//! (or `serviceaccounts` in the account's namespace), `groups`, and in
//! `authentication.k8s.io` `uids` and `userextras/<key>`.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::HeaderMap;
use kumo_apimachinery::ApiError;

use kumo_auth::authn::serviceaccount::{service_account_groups, split_service_account_username};

use crate::api::{Api, User};

const USER: &str = "impersonate-user";
const UID: &str = "impersonate-uid";
const GROUP: &str = "impersonate-group";
const EXTRA_PREFIX: &str = "impersonate-extra-";

/// The user to serve the request as: `user` itself without impersonation headers, else the
/// impersonated user. The headers are removed (they must not reach a proxied backend).
pub fn apply(api: &Arc<Api>, user: User, headers: &mut HeaderMap) -> Result<User, ApiError> {
    let wanted = Wanted::from_headers(headers)?;
    for name in [USER, UID, GROUP] {
        headers.remove(name);
    }
    let extra_headers: Vec<_> = headers
        .keys()
        .filter(|k| k.as_str().starts_with(EXTRA_PREFIX))
        .cloned()
        .collect();
    for k in extra_headers {
        headers.remove(k);
    }
    let Some(wanted) = wanted else {
        return Ok(user);
    };
    for attrs in wanted.checks() {
        crate::admission::authorize_attributes(api, &user, &attrs)?;
    }
    Ok(wanted.into_user())
}

/// What the impersonation headers ask for.
#[derive(Debug, PartialEq)]
struct Wanted {
    name: String,
    uid: Option<String>,
    groups: Vec<String>,
    extra: BTreeMap<String, Vec<String>>,
}

fn text<'a>(name: &str, v: &'a http::HeaderValue) -> Result<&'a str, ApiError> {
    v.to_str()
        .map_err(|_| ApiError::bad_request(format!("invalid {name} header: not visible ASCII")))
}

impl Wanted {
    fn from_headers(headers: &HeaderMap) -> Result<Option<Wanted>, ApiError> {
        let name = headers.get(USER).map(|v| text(USER, v)).transpose()?;
        let uid = headers.get(UID).map(|v| text(UID, v)).transpose()?;
        let groups = headers
            .get_all(GROUP)
            .iter()
            .map(|v| text(GROUP, v).map(str::to_string))
            .collect::<Result<Vec<_>, _>>()?;
        let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in headers {
            if let Some(key) = k.as_str().strip_prefix(EXTRA_PREFIX) {
                let key = percent_encoding::percent_decode_str(key)
                    .decode_utf8_lossy()
                    .into_owned();
                extra
                    .entry(key)
                    .or_default()
                    .push(text(k.as_str(), v)?.to_string());
            }
        }
        let Some(name) = name else {
            let mut asked = Vec::new();
            if uid.is_some() {
                asked.push("uid");
            }
            if !groups.is_empty() {
                asked.push("groups");
            }
            if !extra.is_empty() {
                asked.push("extra");
            }
            if asked.is_empty() {
                return Ok(None);
            }
            return Err(ApiError::bad_request(format!(
                "requested {} without impersonating a user",
                asked.join(", ")
            )));
        };
        if name.is_empty() {
            return Err(ApiError::bad_request(
                "Impersonate-User must name a user".to_string(),
            ));
        }
        Ok(Some(Wanted {
            name: name.to_string(),
            uid: uid.map(str::to_string),
            groups,
            extra,
        }))
    }

    /// The `impersonate` permissions the requester needs, one per thing asked for.
    fn checks(&self) -> Vec<kumo_auth::Attributes> {
        let attrs =
            |group: &str, resource: &str, sub: &str, ns: &str, name: &str| kumo_auth::Attributes {
                verb: "impersonate".into(),
                api_group: group.into(),
                resource: resource.into(),
                subresource: sub.into(),
                namespace: ns.into(),
                name: name.into(),
                resource_request: true,
                ..Default::default()
            };
        let mut out = vec![match split_service_account_username(&self.name) {
            Some((ns, sa)) => attrs("", "serviceaccounts", "", ns, sa),
            None => attrs("", "users", "", "", &self.name),
        }];
        for g in &self.groups {
            out.push(attrs("", "groups", "", "", g));
        }
        if let Some(uid) = &self.uid {
            out.push(attrs("authentication.k8s.io", "uids", "", "", uid));
        }
        for (k, vs) in &self.extra {
            for v in vs {
                out.push(attrs("authentication.k8s.io", "userextras", k, "", v));
            }
        }
        out
    }

    /// The user served: a ServiceAccount impersonated without groups gets its fixed ones;
    /// everyone but `system:anonymous` is in `system:authenticated`.
    fn into_user(self) -> User {
        let mut groups = self.groups;
        if groups.is_empty()
            && let Some((ns, _)) = split_service_account_username(&self.name)
        {
            groups = service_account_groups(ns);
        }
        let implied = if self.name == kumo_auth::authn::ANONYMOUS_USER {
            kumo_auth::authn::SYSTEM_UNAUTHENTICATED
        } else {
            kumo_auth::authn::SYSTEM_AUTHENTICATED
        };
        if !groups.iter().any(|g| g == implied) {
            groups.push(implied.to_string());
        }
        User {
            name: self.name,
            uid: self.uid.unwrap_or_default(),
            groups,
            extra: self.extra,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                http::HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn headers_become_the_user_served() {
        assert_eq!(Wanted::from_headers(&headers(&[])).expect("ok"), None);
        let w = Wanted::from_headers(&headers(&[
            ("Impersonate-User", "jane"),
            ("Impersonate-Group", "devs"),
            ("Impersonate-Group", "ops"),
            ("Impersonate-Uid", "u-1"),
            ("Impersonate-Extra-Scopes%2Fa", "view"),
        ]))
        .expect("ok")
        .expect("wanted");
        let checks: Vec<(String, String, String)> = w
            .checks()
            .iter()
            .map(|a| (a.resource.clone(), a.subresource.clone(), a.name.clone()))
            .collect();
        assert_eq!(
            checks,
            [
                ("users", "", "jane"),
                ("groups", "", "devs"),
                ("groups", "", "ops"),
                ("uids", "", "u-1"),
                ("userextras", "scopes/a", "view"),
            ]
            .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        );
        let u = w.into_user();
        assert_eq!(u.name, "jane");
        assert_eq!(u.groups, ["devs", "ops", "system:authenticated"]);
        assert_eq!(u.uid, "u-1");
        assert_eq!(u.extra["scopes/a"], ["view"]);
    }

    #[test]
    fn service_accounts_get_their_groups_and_namespace() {
        let w = Wanted::from_headers(&headers(&[(
            "Impersonate-User",
            "system:serviceaccount:ns1:robot",
        )]))
        .expect("ok")
        .expect("wanted");
        let c = &w.checks()[0];
        assert_eq!(
            (c.resource.as_str(), c.namespace.as_str(), c.name.as_str()),
            ("serviceaccounts", "ns1", "robot")
        );
        assert_eq!(
            w.into_user().groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:ns1",
                "system:authenticated"
            ]
        );
        let anon = Wanted::from_headers(&headers(&[("Impersonate-User", "system:anonymous")]))
            .expect("ok")
            .expect("wanted")
            .into_user();
        assert_eq!(anon.groups, ["system:unauthenticated"]);
    }

    #[test]
    fn groups_without_a_user_are_a_bad_request() {
        let e =
            Wanted::from_headers(&headers(&[("Impersonate-Group", "devs")])).expect_err("no user");
        assert_eq!(e.code, 400);
        assert!(
            e.message
                .contains("requested groups without impersonating a user")
        );
    }
}
