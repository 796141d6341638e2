//! The apiserver's state and the verbs on resources, independent of HTTP: the handlers in
//! `http.rs` decode a request, call one of these, and encode the result.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kumo_apimachinery::selector::{FieldSelector, LabelSelector};
use kumo_apimachinery::{ApiError, Cause};
use kumo_registry::ResourceDef;
use parking_lot::RwLock;
use serde_json::{Value, json};
use tracing::warn;

use crate::cache::{Cache, Entry, Json};
use crate::objects::{self, meta_mut, meta_str};
use crate::storage::{Store, StoreError, WriteOutcome, prefix_end};

/// The authenticated caller.
pub type User = kumo_auth::UserInfo;

/// The served resources: built-ins plus custom resources from CRDs.
#[derive(Debug, Default)]
pub struct Resources {
    pub all: Vec<Arc<ResourceDef>>,
    by_path: HashMap<(String, String, String), Arc<ResourceDef>>,
}

impl Resources {
    pub fn new(all: Vec<Arc<ResourceDef>>) -> Resources {
        let by_path = all
            .iter()
            .map(|d| {
                (
                    (d.group.clone(), d.version.clone(), d.plural.clone()),
                    d.clone(),
                )
            })
            .collect();
        Resources { all, by_path }
    }

    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceDef>> {
        self.by_path
            .get(&(group.to_string(), version.to_string(), plural.to_string()))
            .cloned()
    }

    /// The resource serving `kind` in `api_version`.
    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<Arc<ResourceDef>> {
        self.all
            .iter()
            .find(|d| d.api_version() == api_version && d.kind == kind)
            .cloned()
    }
}

/// Shared state of one apiserver.
pub struct Api {
    pub store: Store,
    pub cache: Arc<Cache>,
    pub resources: RwLock<Arc<Resources>>,
    /// `host:port` clients reach this server on (for `/api` discovery).
    pub server_address: String,
    /// RBAC; `None` only in tests that run without authorization.
    pub authorizer: Option<kumo_auth::Authorizer<crate::authz::CacheRbac>>,
    /// Bearer-token authentication (ServiceAccount JWTs, bootstrap and static tokens).
    pub tokens: kumo_auth::TokenAuthenticator,
    /// ServiceAccount token issuer (TokenRequest).
    pub sa_tokens: Option<kumo_auth::ServiceAccountTokens>,
    /// The cluster CA (PEM), published as `kube-root-ca.crt`.
    pub ca_pem: String,
    /// TLS client configuration for kubelets (cluster CA + kubelet-client certificate).
    pub kubelet_tls: Option<Arc<rustls::ClientConfig>>,
    /// The OpenAPI documents (rebuilt when CRDs change).
    pub openapi: RwLock<Arc<kumo_registry::openapi::OpenApi>>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("server_address", &self.server_address)
            .finish()
    }
}

/// How long a consistent read waits for the watch cache before reading the store.
const FRESHNESS_WAIT: Duration = Duration::from_secs(3);

/// The result of a LIST.
#[derive(Debug)]
pub struct ListResult {
    pub items: Vec<Arc<Entry>>,
    pub resource_version: i64,
    pub continue_token: Option<String>,
    pub remaining: Option<i64>,
}

/// Parsed list options.
#[derive(Debug, Default, Clone)]
pub struct ListOptions {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
    pub limit: Option<i64>,
    pub continue_token: Option<String>,
}

impl ListOptions {
    /// Whether a cached object satisfies the label and field selectors.
    pub fn matches(&self, e: &Entry) -> bool {
        self.labels.matches_with(|k| e.label(k)) && self.fields.matches(|f| e.field(f))
    }
}

/// What a DELETE asks for.
#[derive(Debug, Default, Clone)]
pub struct DeleteOptions {
    pub grace_period_seconds: Option<i64>,
    pub propagation_policy: Option<String>,
    pub preconditions_uid: Option<String>,
    pub preconditions_rv: Option<String>,
    pub dry_run: bool,
}

/// The outcome of a DELETE.
#[derive(Debug)]
pub enum Deleted {
    /// Gone from the store; the last state.
    Now(Value),
    /// Marked for deletion (finalizers or grace period); the updated object.
    Pending(Value),
}

pub fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Compacted { .. } => {
            ApiError::gone("The resourceVersion for the provided list is too old.".to_string())
        }
        other => {
            warn!(error = %other, "store error");
            ApiError::internal(other.to_string())
        }
    }
}

/// The continue token of a paged list: upstream's shape (base64 JSON).
fn encode_continue(rv: i64, start_key: &str, prefix: &str) -> String {
    use base64::Engine;
    let start = start_key.strip_prefix(prefix).unwrap_or(start_key);
    let v = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": start});
    base64::engine::general_purpose::URL_SAFE.encode(v.to_string())
}

pub(crate) fn decode_continue(token: &str) -> Result<(i64, String), ApiError> {
    use base64::Engine;
    let bad = || ApiError::bad_request(format!("invalid continue token: \"{token}\""));
    let raw = base64::engine::general_purpose::URL_SAFE
        .decode(token)
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(token))
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    if v.get("v").and_then(Value::as_str) != Some("meta.k8s.io/v1") {
        return Err(bad());
    }
    let rv = v.get("rv").and_then(Value::as_i64).ok_or_else(bad)?;
    let start = v.get("start").and_then(Value::as_str).ok_or_else(bad)?;
    if start.contains("..") || start.starts_with('/') {
        return Err(bad());
    }
    Ok((rv, start.to_string()))
}

/// `410 Gone` for a continue token (`paging`) or resourceVersion the store compacted away,
/// with upstream's messages.
fn expired(paging: bool) -> ApiError {
    if !paging {
        return ApiError::gone("The resourceVersion for the provided list is too old.");
    }
    ApiError::gone(
        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
    )
}

/// Upstream's `NewTooLargeResourceVersionError`: 504 Timeout with the
/// `ResourceVersionTooLarge` cause clients (client-go's reflector) look for, retry after 1 s.
pub fn too_large_resource_version(rv: i64, current: i64) -> ApiError {
    let mut e = ApiError::timeout(format!(
        "Timeout: Too large resource version: {rv}, current: {current}"
    ));
    e.causes = vec![Cause::new(
        "ResourceVersionTooLarge",
        "",
        "Too large resource version",
    )];
    e.retry_after_seconds = Some(1);
    e
}

fn parse_rv(s: &str) -> Result<i64, ApiError> {
    s.parse::<i64>()
        .ok()
        .filter(|v| *v >= 0)
        .ok_or_else(|| ApiError::bad_request(format!("invalid resource version: {s}")))
}

impl Api {
    pub fn resources(&self) -> Arc<Resources> {
        self.resources.read().clone()
    }

    /// Brings the watch cache up to the store's current revision (waiting at most
    /// [`FRESHNESS_WAIT`]), so what it serves is as fresh as a read from the store.
    pub async fn sync_cache(&self) -> Result<(), ApiError> {
        let current = self.store.current_revision().await.map_err(store_error)?;
        self.cache.wait_for(current, FRESHNESS_WAIT).await;
        Ok(())
    }

    /// GET one object (from the cache when current, else the store).
    pub async fn get(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        resource_version: Option<&str>,
    ) -> Result<Arc<Entry>, ApiError> {
        let e = self.get_stored(def, ns, name, resource_version).await?;
        Ok(convert_entry(def, e))
    }

    async fn get_stored(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        resource_version: Option<&str>,
    ) -> Result<Arc<Entry>, ApiError> {
        let key = def.key(ns, name);
        let not_found = || ApiError::not_found(&def.group, &def.plural, name);
        match resource_version {
            Some("0") => return self.cache.get(&key).ok_or_else(not_found),
            Some(rv) if !rv.is_empty() => {
                let rv = parse_rv(rv)?;
                if self.cache.wait_for(rv, FRESHNESS_WAIT).await {
                    return self.cache.get(&key).ok_or_else(not_found);
                }
                return Err(too_large_resource_version(rv, self.cache.revision()));
            }
            _ => {}
        }
        let (kv, _) = self.store.get(&key).await.map_err(store_error)?;
        let kv = kv.ok_or_else(not_found)?;
        Entry::from_store(&kv.key, &kv.value, kv.mod_revision)
            .map(Arc::new)
            .ok_or_else(|| ApiError::internal(format!("stored object {key} is not valid JSON")))
    }

    /// LIST objects under a resource (optionally one namespace).
    pub async fn list(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        opts: &ListOptions,
    ) -> Result<ListResult, ApiError> {
        let mut r = self.list_stored(def, ns, opts).await?;
        if crate::convert::needs_conversion(def) {
            r.items = r.items.into_iter().map(|e| convert_entry(def, e)).collect();
        }
        Ok(r)
    }

    async fn list_stored(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        opts: &ListOptions,
    ) -> Result<ListResult, ApiError> {
        let prefix = def.list_prefix(ns);
        if let Some(token) = &opts.continue_token {
            let (rv, start) = decode_continue(token)?;
            if opts
                .resource_version
                .as_deref()
                .is_some_and(|r| !r.is_empty())
            {
                return Err(ApiError::bad_request(
                    "specifying resource version is not allowed when using continue",
                ));
            }
            return self
                .list_at(def, &prefix, &format!("{prefix}{start}"), rv, opts)
                .await;
        }
        let rv_match = opts.resource_version_match.as_deref();
        match (opts.resource_version.as_deref(), rv_match) {
            (Some(rv), Some("Exact")) => {
                let rv = parse_rv(rv)?;
                return self.list_at(def, &prefix, &prefix, rv, opts).await;
            }
            (Some(rv), Some("NotOlderThan")) | (Some(rv), None) if !rv.is_empty() => {
                let rv = parse_rv(rv)?;
                if rv > 0 && !self.cache.wait_for(rv, FRESHNESS_WAIT).await {
                    return Err(too_large_resource_version(rv, self.cache.revision()));
                }
                return Ok(self.list_from_cache(&prefix, opts));
            }
            (_, Some(m)) if m != "NotOlderThan" && m != "Exact" => {
                return Err(ApiError::bad_request(format!(
                    "resourceVersionMatch: Unsupported value: \"{m}\": supported values: \"Exact\", \"NotOlderThan\""
                )));
            }
            (None, Some(_)) | (Some(""), Some(_)) => {
                return Err(ApiError::bad_request(
                    "resourceVersionMatch is forbidden unless resourceVersion is provided",
                ));
            }
            _ => {}
        }
        // Consistent list: the cache once it has caught up with the store's revision.
        let current = self.store.current_revision().await.map_err(store_error)?;
        if self.cache.wait_for(current, FRESHNESS_WAIT).await {
            return Ok(self.list_from_cache(&prefix, opts));
        }
        self.list_from_store(def, &prefix, &prefix, 0, opts).await
    }

    fn list_from_cache(&self, prefix: &str, opts: &ListOptions) -> ListResult {
        let (all, rev) = self.cache.list(prefix);
        let mut items: Vec<Arc<Entry>> = all.into_iter().filter(|e| opts.matches(e)).collect();
        let mut continue_token = None;
        let mut remaining = None;
        if let Some(limit) = opts.limit
            && (items.len() as i64) > limit
        {
            let rest = items.len() as i64 - limit;
            items.truncate(limit as usize);
            if let Some(last) = items.last() {
                continue_token = Some(encode_continue(rev, &format!("{}\u{0}", last.key), prefix));
            }
            remaining = Some(rest);
        }
        ListResult {
            items,
            resource_version: rev,
            continue_token,
            remaining,
        }
    }

    /// A LIST at a past revision (a continued page or an exact resourceVersion): from the
    /// watch cache's history while it reaches back that far, else from the store. Either
    /// way a revision the store compacted away is `410 Gone`, as on upstream.
    async fn list_at(
        &self,
        def: &ResourceDef,
        prefix: &str,
        start: &str,
        rv: i64,
        opts: &ListOptions,
    ) -> Result<ListResult, ApiError> {
        if rv <= 0 || !self.cache.wait_for(rv, FRESHNESS_WAIT).await {
            return self.list_from_store(def, prefix, start, rv, opts).await;
        }
        self.store.check_revision(rv).await.map_err(|e| match e {
            StoreError::Compacted { .. } => expired(opts.continue_token.is_some()),
            other => store_error(other),
        })?;
        let limit = opts.limit.filter(|l| *l > 0).unwrap_or(0);
        let unfiltered = opts.labels.is_empty() && opts.fields.is_empty();
        let Some(page) = self.cache.page_at(
            prefix,
            start,
            rv,
            usize::try_from(limit).unwrap_or(usize::MAX),
            &|e| opts.matches(e),
            unfiltered,
        ) else {
            return self.list_from_store(def, prefix, start, rv, opts).await;
        };
        let continue_token = match page.items.last() {
            Some(last) if page.rest > 0 => {
                Some(encode_continue(rv, &format!("{}\u{0}", last.key), prefix))
            }
            _ => None,
        };
        Ok(ListResult {
            remaining: (unfiltered && page.rest > 0).then_some(page.rest as i64),
            items: page.items,
            resource_version: rv,
            continue_token,
        })
    }

    async fn list_from_store(
        &self,
        _def: &ResourceDef,
        prefix: &str,
        start: &str,
        revision: i64,
        opts: &ListOptions,
    ) -> Result<ListResult, ApiError> {
        let end = prefix_end(prefix);
        let limit = opts.limit.unwrap_or(0);
        let mut items = Vec::new();
        let mut key = start.as_bytes().to_vec();
        let mut rev = revision;
        let filtered = !opts.labels.is_empty() || !opts.fields.is_empty();
        loop {
            let page_size = if limit > 0 {
                if filtered {
                    (limit * 2).max(100)
                } else {
                    limit + 1
                }
            } else {
                0
            };
            let page = self
                .store
                .range(&key, &end, rev, page_size)
                .await
                .map_err(|e| match e {
                    StoreError::Compacted { .. } => expired(opts.continue_token.is_some()),
                    other => store_error(other),
                })?;
            if rev == 0 {
                rev = page.revision;
            }
            let n = page.kvs.len();
            let mut last_key = None;
            for kv in page.kvs {
                last_key = Some(kv.key.clone());
                if limit > 0 && items.len() as i64 == limit {
                    // One more matching item exists: there is a next page.
                    if let Some(e) = Entry::from_store(&kv.key, &kv.value, kv.mod_revision)
                        && opts.matches(&e)
                    {
                        let token = items.last().map(|last: &Arc<Entry>| {
                            encode_continue(rev, &format!("{}\u{0}", last.key), prefix)
                        });
                        return Ok(ListResult {
                            items,
                            resource_version: rev,
                            continue_token: token,
                            remaining: None,
                        });
                    }
                    continue;
                }
                if let Some(e) = Entry::from_store(&kv.key, &kv.value, kv.mod_revision)
                    && opts.matches(&e)
                {
                    items.push(Arc::new(e));
                }
            }
            match (
                page.more || (page_size > 0 && n as i64 == page_size),
                last_key,
            ) {
                (true, Some(k)) if page_size > 0 => {
                    let mut next = k.into_bytes();
                    next.push(0);
                    key = next;
                }
                _ => break,
            }
        }
        Ok(ListResult {
            items,
            resource_version: rev,
            continue_token: None,
            remaining: None,
        })
    }

    /// Writes a new object (already defaulted, validated and admitted). Returns the stored
    /// object with its resourceVersion.
    pub async fn store_create(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        mut obj: Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let name = meta_str(&obj, "name").unwrap_or_default().to_string();
        let key = def.key(ns, &name);
        objects::strip_rv(&mut obj);
        if dry_run {
            if self.cache.get(&key).is_some() {
                return Err(ApiError::already_exists(&def.group, &def.plural, &name));
            }
            return Ok(obj);
        }
        let stored = crate::convert::storage_form(def, &obj);
        let bytes = serde_json::to_vec(&*stored).map_err(|e| ApiError::internal(e.to_string()))?;
        drop(stored);
        match self.store.create(&key, bytes).await.map_err(store_error)? {
            WriteOutcome::Ok(rev) => {
                objects::set_rv(&mut obj, rev);
                Ok(obj)
            }
            WriteOutcome::Conflict(_) => {
                Err(ApiError::already_exists(&def.group, &def.plural, &name))
            }
        }
    }

    /// Replaces an object read at `expected_rev`. A lost race is a 409 Conflict.
    pub async fn store_update(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        mut obj: Value,
        expected_rev: i64,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let key = def.key(ns, name);
        objects::strip_rv(&mut obj);
        if dry_run {
            objects::set_rv(&mut obj, expected_rev);
            return Ok(obj);
        }
        let stored = crate::convert::storage_form(def, &obj);
        // A write that changes nothing (a repeated apply, an unchanged status) is not written,
        // like upstream (etcd3 store's byte comparison, and managedFields timestamps ignored):
        // the object and its resourceVersion stay, and no watch event goes out.
        let bytes = serde_json::to_vec(&*stored).map_err(|e| ApiError::internal(e.to_string()))?;
        // The cached JSON differs from `bytes` only by `"resourceVersion":"<rv>",` when nothing
        // changed (managedFields times keep their length), so only a length in that window is
        // worth parsing: real changes rarely pay for the comparison.
        if let Some(cur) = self.cache.get(&key)
            && cur.rv == expected_rev
            && (bytes.len()..=bytes.len() + 64).contains(&cur.json_len())
            && let Ok(old) = cur.with_json(Json::parse::<Value>)
            && same_object(&old, &stored)
        {
            let mut out = crate::convert::from_storage(def, old);
            objects::set_rv(&mut out, expected_rev);
            return Ok(out);
        }
        drop(stored);
        match self
            .store
            .update(&key, bytes, expected_rev)
            .await
            .map_err(store_error)?
        {
            WriteOutcome::Ok(rev) => {
                objects::set_rv(&mut obj, rev);
                Ok(obj)
            }
            WriteOutcome::Conflict(None) => Err(ApiError::not_found(&def.group, &def.plural, name)),
            WriteOutcome::Conflict(Some(_)) => Err(ApiError::stale(&def.group, &def.plural, name)),
        }
    }

    /// Removes an object read at `expected_rev`.
    pub async fn store_delete(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        expected_rev: i64,
    ) -> Result<i64, ApiError> {
        let key = def.key(ns, name);
        match self
            .store
            .delete(&key, expected_rev)
            .await
            .map_err(store_error)?
        {
            WriteOutcome::Ok(rev) => Ok(rev),
            WriteOutcome::Conflict(None) => Err(ApiError::not_found(&def.group, &def.plural, name)),
            WriteOutcome::Conflict(Some(_)) => Err(ApiError::stale(&def.group, &def.plural, name)),
        }
    }

    /// Reads the current object for a read-modify-write.
    pub async fn read_for_write(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Option<(Value, i64)>, ApiError> {
        let key = def.key(ns, name);
        let (kv, _) = self.store.get(&key).await.map_err(store_error)?;
        Ok(kv.and_then(|kv| {
            let v: Value = serde_json::from_slice(&kv.value).ok()?;
            let mut v = crate::convert::from_storage(def, v);
            objects::set_rv(&mut v, kv.mod_revision);
            Some((v, kv.mod_revision))
        }))
    }
}

/// A cached (stored-form) entry in the version `def` serves.
pub fn convert_entry(def: &ResourceDef, e: Arc<Entry>) -> Arc<Entry> {
    if !crate::convert::needs_conversion(def) {
        return e;
    }
    let mut v = crate::convert::from_storage(def, e.object());
    Entry::from_value(&e.key, &mut v, e.rv)
        .map(Arc::new)
        .unwrap_or(e)
}

/// Checks metadata.name/namespace of a body against the URL, upstream's messages.
pub fn check_identity(
    def: &ResourceDef,
    obj: &mut Value,
    url_ns: Option<&str>,
    url_name: Option<&str>,
) -> Result<(), ApiError> {
    // `metadata` that is not an object fails the typed decode (400) before anything looks at
    // names (which `meta_mut` would otherwise paper over).
    if obj
        .get("metadata")
        .is_some_and(|m| !m.is_object() && !m.is_null())
    {
        crate::schema::decode_check(def, obj)?;
    }
    let meta = meta_mut(obj);
    if def.namespaced() {
        match (meta.get("namespace").and_then(Value::as_str), url_ns) {
            (Some(body_ns), Some(ns)) if !body_ns.is_empty() && body_ns != ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            (_, Some(ns)) => {
                meta.insert("namespace".into(), Value::String(ns.to_string()));
            }
            (_, None) => {
                return Err(ApiError::bad_request(
                    "the server could not find the requested resource: a namespace is required",
                ));
            }
        }
    } else {
        meta.remove("namespace");
    }
    if let Some(name) = url_name {
        match meta.get("name").and_then(Value::as_str) {
            Some(n) if n != name => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
            None | Some("") => {
                meta.insert("name".into(), Value::String(name.to_string()));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks and fills `apiVersion`/`kind` of a body.
pub fn check_kind(
    def: &ResourceDef,
    obj: &mut Value,
    kind: &str,
    api_version: &str,
) -> Result<(), ApiError> {
    let Some(o) = obj.as_object_mut() else {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    };
    let body_kind = o
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let body_av = o
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if !body_kind.is_empty() && body_kind != kind {
        return Err(ApiError::bad_request(format!(
            "{body_kind} in version \"{}\" cannot be handled as a {kind}: no kind \"{body_kind}\" is registered for version \"{body_av}\" in scheme",
            def.version
        )));
    }
    if !body_av.is_empty() && body_av != api_version {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({body_av}) does not match the expected API version ({api_version})"
        )));
    }
    o.insert("kind".into(), Value::String(kind.to_string()));
    o.insert("apiVersion".into(), Value::String(api_version.to_string()));
    Ok(())
}

/// `Invalid` for a bad name, upstream wording.
pub fn name_causes(def: &ResourceDef, obj: &Value) -> Vec<Cause> {
    let name = meta_str(obj, "name").unwrap_or("");
    let generate = meta_str(obj, "generateName").unwrap_or("");
    if name.is_empty() && generate.is_empty() {
        return vec![Cause::new(
            "FieldValueRequired",
            "metadata.name",
            "Required value: name or generateName is required",
        )];
    }
    let _ = def;
    Vec::new()
}

/// Whether two stored objects are the same, ignoring `metadata.resourceVersion` and the
/// `time` of managedFields entries (upstream's IgnoreManagedFieldsTimestampsTransformer).
fn same_object(a: &Value, b: &Value) -> bool {
    use serde_json::Map;
    fn eq_except(x: &Map<String, Value>, y: &Map<String, Value>, skip: &[&str]) -> bool {
        let kept =
            |m: &Map<String, Value>| m.keys().filter(|k| !skip.contains(&k.as_str())).count();
        kept(x) == kept(y)
            && x.iter()
                .filter(|(k, _)| !skip.contains(&k.as_str()))
                .all(|(k, v)| y.get(k) == Some(v))
    }
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return a == b;
    };
    if !eq_except(a, b, &["metadata"]) {
        return false;
    }
    let empty = Map::new();
    let ma = a
        .get("metadata")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let mb = b
        .get("metadata")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    if !eq_except(ma, mb, &["resourceVersion", "managedFields"]) {
        return false;
    }
    let none = Vec::new();
    let fa = ma
        .get("managedFields")
        .and_then(Value::as_array)
        .unwrap_or(&none);
    let fb = mb
        .get("managedFields")
        .and_then(Value::as_array)
        .unwrap_or(&none);
    fa.len() == fb.len()
        && fa
            .iter()
            .zip(fb)
            .all(|(x, y)| match (x.as_object(), y.as_object()) {
                (Some(x), Some(y)) => eq_except(x, y, &["time"]),
                _ => x == y,
            })
}

#[cfg(test)]
mod no_op_tests {
    use serde_json::json;

    use super::same_object;

    fn obj(rv: &str, time: &str, data: &str) -> serde_json::Value {
        json!({"kind": "ConfigMap", "metadata": {"name": "c", "resourceVersion": rv,
            "managedFields": [{"manager": "kubectl", "operation": "Apply", "time": time,
                "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:a": {}}}}]},
            "data": {"a": data}})
    }

    #[test]
    fn resource_version_and_managed_fields_times_do_not_count() {
        let stored = obj("70", "2026-11-22T11:40:34Z", "1");
        let mut new = obj("70", "2026-11-22T11:41:00Z", "1");
        new["metadata"]
            .as_object_mut()
            .map(|m| m.remove("resourceVersion"));
        assert!(same_object(&stored, &new));
    }

    #[test]
    fn a_changed_field_or_manager_counts() {
        let stored = obj("70", "2026-11-22T11:40:34Z", "1");
        assert!(!same_object(
            &stored,
            &obj("70", "2026-11-22T11:40:34Z", "2")
        ));
        let mut other_manager = stored.clone();
        other_manager["metadata"]["managedFields"][0]["manager"] = json!("helm");
        assert!(!same_object(&stored, &other_manager));
        let mut labelled = stored.clone();
        labelled["metadata"]["labels"] = json!({"x": "y"});
        assert!(!same_object(&stored, &labelled));
    }
}
