//! Request decoding: the path into [`RequestInfo`] (upstream's `RequestInfoFactory` rules),
//! the query into [`Query`], content negotiation.

use std::collections::HashMap;

use kumo_apimachinery::ApiError;

/// What a request addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRequest {
    pub group: String,
    pub version: String,
    pub namespace: Option<String>,
    pub resource: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// The decoded path and verb.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestInfo {
    /// A resource request with its verb (`get`, `list`, `watch`, `create`, `update`, `patch`,
    /// `delete`, `deletecollection`).
    Resource { verb: String, req: ResourceRequest },
    /// Anything else (`/api`, `/apis/apps`, `/version`, `/healthz`, `/openapi/v3` …), with
    /// the lower-case HTTP method as verb for RBAC.
    NonResource { verb: String, path: String },
}

impl RequestInfo {
    pub fn verb(&self) -> &str {
        match self {
            RequestInfo::Resource { verb, .. } | RequestInfo::NonResource { verb, .. } => verb,
        }
    }
}

const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

/// Decodes `path` for `method` and `query`, upstream's way.
pub fn parse(method: &http::Method, path: &str, query: &Query) -> RequestInfo {
    let non_resource = || RequestInfo::NonResource {
        verb: method.as_str().to_ascii_lowercase(),
        path: path.to_string(),
    };
    let trimmed = path.trim_matches('/');
    let parts: Vec<&str> = trimmed.split('/').collect();
    let (group, version, mut rest) = match parts.as_slice() {
        ["api", v, rest @ ..] if !rest.is_empty() => (String::new(), v.to_string(), rest.to_vec()),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => {
            (g.to_string(), v.to_string(), rest.to_vec())
        }
        _ => return non_resource(),
    };
    let mut verb = match *method {
        http::Method::POST => "create",
        http::Method::GET | http::Method::HEAD => "get",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => return non_resource(),
    }
    .to_string();
    // Deprecated `/watch/` path prefix.
    if rest.first() == Some(&"watch") && verb == "get" {
        verb = "watch".into();
        rest.remove(0);
    }
    let mut namespace = None;
    if rest.first() == Some(&"namespaces") && rest.len() > 1 {
        namespace = Some(rest[1].to_string());
        if rest.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&rest[2]) {
            rest = rest[2..].to_vec();
        }
    }
    if rest.is_empty() || rest.iter().any(|p| p.is_empty()) {
        return non_resource();
    }
    let resource = rest[0].to_string();
    let name = rest.get(1).map(|s| s.to_string());
    let subresource = rest.get(2).map(|s| s.to_string());
    if rest.len() > 3 {
        // `pods/NAME/proxy/some/path` and the like: keep the first segment as subresource.
    }
    // `/api/v1/namespaces/NAME` addresses the namespace itself.
    let (namespace, name) = if resource == "namespaces" && rest.len() >= 2 {
        (None, name)
    } else if resource == "namespaces" && namespace.is_some() && rest.len() == 1 {
        (None, None)
    } else {
        (namespace, name)
    };
    if name.is_none() {
        verb = match verb.as_str() {
            "get" if query.watch => "watch".into(),
            "get" => "list".into(),
            "delete" => "deletecollection".into(),
            v => v.into(),
        };
    } else if verb == "get" && query.watch {
        verb = "watch".into();
    }
    RequestInfo::Resource {
        verb,
        req: ResourceRequest {
            group,
            version,
            namespace,
            resource,
            name,
            subresource,
        },
    }
}

/// The query parameters the handlers understand.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub raw: HashMap<String, String>,
    pub watch: bool,
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
    pub limit: Option<i64>,
    pub continue_token: Option<String>,
    pub timeout_seconds: Option<u64>,
    pub allow_watch_bookmarks: bool,
    pub send_initial_events: bool,
    pub dry_run: bool,
    /// Every `dryRun` value given; only `All` is valid, and the write verbs refuse others
    /// with upstream's 422 on their options (reads ignore the parameter, as upstream).
    pub dry_run_values: Vec<String>,
    pub field_manager: Option<String>,
    pub field_validation: Option<String>,
    pub force: bool,
    pub propagation_policy: Option<String>,
    pub grace_period_seconds: Option<i64>,
    pub pretty: bool,
}

/// A boolean query parameter as upstream's parameter codec reads it: anything but `0` and
/// `false` (any case) is true.
fn truthy(v: &str) -> bool {
    !(v == "0" || v.eq_ignore_ascii_case("false"))
}

impl Query {
    /// Parses a raw query string; malformed numbers are a 400.
    pub fn parse(q: Option<&str>) -> Result<Query, ApiError> {
        let mut raw = HashMap::new();
        let mut dry_run_values = Vec::new();
        for (k, v) in form_urlencoded::parse(q.unwrap_or("").as_bytes()) {
            if k == "dryRun" {
                dry_run_values.push(v.to_string());
            }
            raw.insert(k.into_owned(), v.into_owned());
        }
        let dry_run = !dry_run_values.is_empty() && dry_run_values.iter().all(|v| v == "All");
        let get = |k: &str| raw.get(k).cloned().filter(|s| !s.is_empty());
        let num = |k: &str| -> Result<Option<i64>, ApiError> {
            match raw.get(k) {
                None => Ok(None),
                Some(s) if s.is_empty() => Ok(None),
                Some(s) => s.parse::<i64>().map(Some).map_err(|_| {
                    ApiError::bad_request(format!("invalid value for {k}: \"{s}\": not a number"))
                }),
            }
        };
        let limit = num("limit")?;
        let timeout_seconds = num("timeoutSeconds")?.map(|t| t.max(0) as u64);
        let grace_period_seconds = num("gracePeriodSeconds")?;
        Ok(Query {
            watch: raw.get("watch").is_some_and(|v| truthy(v)),
            label_selector: get("labelSelector"),
            field_selector: get("fieldSelector"),
            resource_version: raw.get("resourceVersion").cloned(),
            resource_version_match: get("resourceVersionMatch"),
            limit: limit.filter(|l| *l > 0),
            continue_token: get("continue"),
            timeout_seconds,
            allow_watch_bookmarks: raw.get("allowWatchBookmarks").is_some_and(|v| truthy(v)),
            send_initial_events: raw.get("sendInitialEvents").is_some_and(|v| truthy(v)),
            dry_run,
            dry_run_values,
            field_manager: get("fieldManager"),
            field_validation: get("fieldValidation"),
            force: raw.get("force").is_some_and(|v| truthy(v)),
            propagation_policy: get("propagationPolicy"),
            grace_period_seconds,
            pretty: raw.get("pretty").is_some_and(|v| truthy(v)),
            raw,
        })
    }
}

/// The representation a client asked for in `Accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Json,
    Yaml,
    /// `as=Table;g=meta.k8s.io;v=v1`
    Table,
    /// `as=PartialObjectMetadata[List];g=meta.k8s.io;v=v1`
    Metadata,
}

/// Negotiates `Accept`. Protobuf is not served: a client that accepts only protobuf gets 406.
pub fn negotiate(accept: Option<&str>) -> Result<Output, ApiError> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Ok(Output::Json);
    };
    let mut saw_only_unsupported = true;
    for clause in accept.split(',') {
        let mut params = clause.split(';').map(str::trim);
        let media = params.next().unwrap_or("").to_ascii_lowercase();
        let mut as_ = None;
        let mut g = None;
        for p in params {
            if let Some((k, v)) = p.split_once('=') {
                match k.trim() {
                    "as" => as_ = Some(v.trim().to_string()),
                    "g" => g = Some(v.trim().to_string()),
                    _ => {}
                }
            }
        }
        let json_like = matches!(media.as_str(), "application/json" | "*/*" | "application/*");
        let yaml = media == "application/yaml";
        if !(json_like || yaml) {
            continue;
        }
        saw_only_unsupported = false;
        match as_.as_deref() {
            None => return Ok(if yaml { Output::Yaml } else { Output::Json }),
            Some("Table") if g.as_deref() == Some("meta.k8s.io") => return Ok(Output::Table),
            Some("PartialObjectMetadata") | Some("PartialObjectMetadataList")
                if g.as_deref() == Some("meta.k8s.io") =>
            {
                return Ok(Output::Metadata);
            }
            _ => continue,
        }
    }
    if saw_only_unsupported {
        return Err(ApiError::new(
            406,
            "NotAcceptable",
            format!(
                "only the following media types are accepted: application/json, application/yaml (not {accept})"
            ),
        ));
    }
    Err(ApiError::new(
        406,
        "NotAcceptable",
        "the requested representation is not supported",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(method: http::Method, path: &str, q: &str) -> RequestInfo {
        parse(&method, path, &Query::parse(Some(q)).expect("query"))
    }

    fn res(i: RequestInfo) -> (String, ResourceRequest) {
        match i {
            RequestInfo::Resource { verb, req } => (verb, req),
            other => panic!("not a resource request: {other:?}"),
        }
    }

    #[test]
    fn paths_like_upstream() {
        let (v, r) = res(p(http::Method::GET, "/api/v1/namespaces/default/pods", ""));
        assert_eq!(
            (v.as_str(), r.resource.as_str(), r.namespace.as_deref()),
            ("list", "pods", Some("default"))
        );
        let (v, r) = res(p(
            http::Method::GET,
            "/api/v1/namespaces/default/pods/web/log",
            "",
        ));
        assert_eq!(
            (v.as_str(), r.name.as_deref(), r.subresource.as_deref()),
            ("get", Some("web"), Some("log"))
        );
        let (v, r) = res(p(http::Method::GET, "/api/v1/namespaces/kube-system", ""));
        assert_eq!(
            (
                v.as_str(),
                r.resource.as_str(),
                r.name.as_deref(),
                r.namespace
            ),
            ("get", "namespaces", Some("kube-system"), None)
        );
        let (_, r) = res(p(http::Method::PUT, "/api/v1/namespaces/x/finalize", ""));
        assert_eq!(
            (
                r.resource.as_str(),
                r.name.as_deref(),
                r.subresource.as_deref()
            ),
            ("namespaces", Some("x"), Some("finalize"))
        );
        let (v, r) = res(p(
            http::Method::GET,
            "/apis/apps/v1/deployments",
            "watch=true",
        ));
        assert_eq!(
            (v.as_str(), r.group.as_str(), r.namespace),
            ("watch", "apps", None)
        );
        let (v, _) = res(p(
            http::Method::DELETE,
            "/api/v1/namespaces/d/configmaps",
            "",
        ));
        assert_eq!(v, "deletecollection");
        let (v, _) = res(p(http::Method::GET, "/api/v1/watch/namespaces/d/pods", ""));
        assert_eq!(v, "watch");
        assert!(matches!(
            p(http::Method::GET, "/apis/apps/v1", ""),
            RequestInfo::NonResource { .. }
        ));
        assert!(matches!(
            p(http::Method::GET, "/version", ""),
            RequestInfo::NonResource { .. }
        ));
        let (v, r) = res(p(http::Method::POST, "/api/v1/namespaces", ""));
        assert_eq!(
            (v.as_str(), r.resource.as_str(), r.namespace),
            ("create", "namespaces", None)
        );
    }

    #[test]
    fn accept_negotiation() {
        assert_eq!(negotiate(None).expect("none"), Output::Json);
        assert_eq!(
            negotiate(Some("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json")).expect("table"),
            Output::Table
        );
        assert_eq!(
            negotiate(Some("application/vnd.kubernetes.protobuf, */*")).expect("any"),
            Output::Json
        );
        assert_eq!(
            negotiate(Some("application/yaml")).expect("yaml"),
            Output::Yaml
        );
        assert!(negotiate(Some("application/vnd.kubernetes.protobuf")).is_err());
    }
}
