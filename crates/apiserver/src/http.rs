//! HTTP handling: decode a request, authorize it, run the verb, encode the answer.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::BodyExt;
use kumo_apimachinery::selector::{FieldSelector, LabelSelector};
use kumo_apimachinery::{ApiError, Cause};
use kumo_registry::ResourceDef;
use serde_json::{Value, json};

use crate::api::{
    Api, DeleteOptions, Deleted, ListOptions, ListResult, User, check_identity, check_kind,
};
use crate::body::{self, Body};
use crate::cache::Json;
use crate::discovery;
use crate::objects::{self, meta_mut, meta_str};
use crate::request::{self, Output, Query, RequestInfo, ResourceRequest};
use crate::strategy;
use crate::{admission, output, watch};

/// Request bodies over this size are refused with 413.
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// The context of one request.
pub struct Ctx {
    pub api: Arc<Api>,
    pub user: User,
    pub query: Query,
    pub output: Output,
    pub accept: Option<String>,
    pub content_type: Option<String>,
    pub user_agent: String,
    pub warnings: Vec<String>,
    /// Keys repeated within one object of a JSON create/update body (`metadata.name`): parsed
    /// objects keep only the last value, so the write pipeline learns of them from here.
    pub duplicates: Vec<String>,
}

/// Reads the whole body, refusing more than [`MAX_BODY`].
pub async fn read_body<B>(body: B) -> Result<Bytes, ApiError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let limited = http_body_util::Limited::new(body, MAX_BODY);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(ApiError::too_large(
                    "Request entity too large: limit is 3145728",
                ))
            } else {
                Err(ApiError::bad_request(format!(
                    "error reading the request body: {e}"
                )))
            }
        }
    }
}

/// Decodes a JSON, YAML or protobuf body into an object.
pub fn decode_object(content_type: Option<&str>, body: &[u8]) -> Result<Value, ApiError> {
    decode_checked(content_type, body).map(|(v, _)| v)
}

/// [`decode_object`] plus the keys repeated within one object of a JSON body, found in the
/// same pass (YAML and protobuf bodies are not checked).
fn decode_checked(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<(Value, Vec<String>), ApiError> {
    let (v, duplicates) = match media_type(content_type).as_str() {
        // The Python client sends creates without a Content-Type.
        "" | "application/json" | "*/*" => {
            kumo_registry::validate::parse_json_with_duplicates(body).map_err(|e| {
                ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
            })?
        }
        crate::protobuf::MEDIA_TYPE => (crate::protobuf::decode(body)?, Vec::new()),
        "application/yaml" | "application/x-yaml" | "text/yaml" => {
            let v = serde_saphyr::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!("error converting YAML to JSON: {e}"))
            })?;
            (v, Vec::new())
        }
        other => return Err(ApiError::unsupported_media_type(other)),
    };
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "couldn't get version/kind; json parse error: expected an object",
        ));
    }
    Ok((v, duplicates))
}

/// A Content-Type without its parameters, lower-cased (`""` when absent).
fn media_type(content_type: Option<&str>) -> String {
    content_type
        .and_then(|c| c.split(';').next())
        .map(|c| c.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Dispatches one request.
pub async fn handle<B>(api: Arc<Api>, user: User, req: Request<B>) -> Response<Body>
where
    B: http_body::Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let (mut parts, body) = req.into_parts();
    let query = match Query::parse(parts.uri.query()) {
        Ok(q) => q,
        Err(e) => return body::error(&e),
    };
    let user = match crate::impersonation::apply(&api, user, &mut parts.headers) {
        Ok(u) => u,
        Err(e) => return body::error(&e),
    };
    let header = |h: http::header::HeaderName| {
        parts
            .headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let accept = header(http::header::ACCEPT);
    let info = request::parse(&parts.method, parts.uri.path(), &query);
    if let Err(e) = admission::authorize(&api, &user, &info) {
        return body::error(&e);
    }
    // Connect subresources (pods/exec, attach, portforward): a WebSocket GET also needs
    // `create`, like a SPDY POST (upstream 1.31+, AuthorizePodWebsocketUpgradeCreatePermission).
    let connect = match &info {
        RequestInfo::Resource { verb, req }
            if crate::connect::is_connect(
                &req.group,
                &req.resource,
                req.subresource.as_deref(),
            ) && req.name.is_some() =>
        {
            if verb != "create" {
                let create = RequestInfo::Resource {
                    verb: "create".into(),
                    req: req.clone(),
                };
                if let Err(e) = admission::authorize(&api, &user, &create) {
                    return body::error(&e);
                }
            }
            Some(req.clone())
        }
        _ => None,
    };
    let output = match &info {
        RequestInfo::Resource { .. } => match request::negotiate(accept.as_deref()) {
            Ok(o) => o,
            Err(e) => return body::error(&e),
        },
        RequestInfo::NonResource { .. } => Output::Json,
    };
    let mut ctx = Ctx {
        api,
        user,
        query,
        output,
        accept,
        content_type: header(http::header::CONTENT_TYPE),
        user_agent: header(http::header::USER_AGENT).unwrap_or_default(),
        warnings: Vec::new(),
        duplicates: Vec::new(),
    };
    if let Some(r) = connect {
        let result = match (&r.namespace, &r.name, &r.subresource) {
            (Some(ns), Some(name), Some(sub)) => {
                crate::connect::serve(&ctx, &mut parts, ns, name, sub).await
            }
            _ => Err(not_found_path()),
        };
        return result.unwrap_or_else(|e| body::error(&e));
    }
    let result = match info {
        RequestInfo::NonResource { path, .. } => non_resource(&ctx, &parts.method, &path).await,
        RequestInfo::Resource { verb, req } => resource(&mut ctx, &verb, &req, body).await,
    };
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => body::error(&e),
    };
    for w in &ctx.warnings {
        let escaped = w.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(v) = http::HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
            resp.headers_mut().append(http::header::WARNING, v);
        }
    }
    resp
}

async fn non_resource(ctx: &Ctx, method: &Method, path: &str) -> Result<Response<Body>, ApiError> {
    if method != Method::GET && method != Method::HEAD {
        return Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({method} {path})"
        )));
    }
    let api = &ctx.api;
    let res = api.resources();
    let trimmed = path.trim_end_matches('/');
    let parts: Vec<&str> = trimmed.trim_start_matches('/').split('/').collect();
    let json = |v: Value| Ok(body::respond(200, &v, Output::Json));
    match parts.as_slice() {
        ["healthz" | "livez" | "readyz", ..] => Ok(body::text(200, "ok")),
        ["version"] => json(crate::version_info()),
        ["api"] => {
            if let Some(flavour) = discovery::wants_aggregated(ctx.accept.as_deref()) {
                let v = discovery::aggregated(&res.all, true, flavour);
                return Ok(body::respond_raw(
                    200,
                    Bytes::from(v.to_string()),
                    flavour.content_type(),
                ));
            }
            json(discovery::api_versions(&api.server_address))
        }
        ["apis"] => {
            if let Some(flavour) = discovery::wants_aggregated(ctx.accept.as_deref()) {
                let v = discovery::aggregated(&res.all, false, flavour);
                return Ok(body::respond_raw(
                    200,
                    Bytes::from(v.to_string()),
                    flavour.content_type(),
                ));
            }
            json(discovery::api_group_list(&res.all))
        }
        ["api", v] => discovery::api_resource_list(&res.all, "", v)
            .map(|d| body::respond(200, &d, Output::Json))
            .ok_or_else(not_found_path),
        ["apis", g] => discovery::api_group(&res.all, g)
            .map(|d| body::respond(200, &d, Output::Json))
            .ok_or_else(not_found_path),
        ["apis", g, v] => discovery::api_resource_list(&res.all, g, v)
            .map(|d| body::respond(200, &d, Output::Json))
            .ok_or_else(not_found_path),
        ["openapi", ..] => crate::openapi_http::serve(ctx, path),
        ["metrics"] => Ok(body::respond_raw(
            200,
            Bytes::from(crate::metrics::render()),
            "text/plain; version=0.0.4",
        )),
        _ => Err(not_found_path()),
    }
}

fn not_found_path() -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        "the server could not find the requested resource",
    )
}

fn list_options(q: &Query, def: &ResourceDef) -> Result<ListOptions, ApiError> {
    let labels = match &q.label_selector {
        Some(s) => LabelSelector::parse(s)
            .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?,
        None => LabelSelector::default(),
    };
    let fields = match &q.field_selector {
        Some(s) => FieldSelector::parse(s).map_err(|e| ApiError::bad_request(e.to_string()))?,
        None => FieldSelector::default(),
    };
    let mut fields = fields;
    for t in &mut fields.terms {
        t.field = crate::convert::field_to_storage(def, &t.field);
    }
    for t in &fields.terms {
        if !def.custom && !crate::fields::is_selectable(&def.kind, &t.field) {
            return Err(ApiError::bad_request(format!(
                "field label not supported: {}",
                t.field
            )));
        }
    }
    Ok(ListOptions {
        labels,
        fields,
        resource_version: q.resource_version.clone(),
        resource_version_match: q.resource_version_match.clone(),
        limit: q.limit,
        continue_token: q.continue_token.clone(),
    })
}

async fn resource<B>(
    ctx: &mut Ctx,
    verb: &str,
    r: &ResourceRequest,
    body: B,
) -> Result<Response<Body>, ApiError>
where
    B: http_body::Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let res = ctx.api.resources();
    let def = res
        .find(&r.group, &r.version, &r.resource)
        .ok_or_else(not_found_path)?;
    if let Some(sub) = &r.subresource
        && def.subresource(sub).is_none()
    {
        return Err(not_found_path());
    }
    // A cluster-scoped resource under a namespace (`/api/v1/namespaces/x/nodes`) is no route
    // upstream.
    if !def.namespaced() && r.namespace.is_some() {
        return Err(not_found_path());
    }
    let ns = if def.namespaced() {
        r.namespace.as_deref()
    } else {
        None
    };
    if def.namespaced() && ns.is_none() && !matches!(verb, "list" | "watch") {
        // `/api/v1/configmaps` is a route (list and watch across namespaces): other methods
        // on it are 405 upstream; a name without a namespace is no route at all.
        if r.name.is_none() {
            return Err(ApiError::method_not_allowed(
                "the server does not allow this method on the requested resource",
            ));
        }
        return Err(not_found_path());
    }
    if !def.verbs.iter().any(|v| v == verb) && r.subresource.is_none() {
        return Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        ));
    }
    validate_options(ctx, verb)?;
    let name = r.name.as_deref();
    let sub = r.subresource.as_deref();
    match (verb, name, sub) {
        ("get", Some(name), None) => {
            let e = ctx
                .api
                .get(&def, ns, name, ctx.query.resource_version.as_deref())
                .await?;
            output::single(ctx, &def, e.with_json(Json::to_bytes))
        }
        ("get", Some(name), Some("status" | "approval")) => {
            let e = ctx.api.get(&def, ns, name, None).await?;
            output::single(ctx, &def, e.with_json(Json::to_bytes))
        }
        ("get", Some(name), Some("scale")) => {
            let e = ctx.api.get(&def, ns, name, None).await?;
            Ok(body::respond(200, &to_scale(&def, &e.object()), ctx.output))
        }
        ("get", Some(name), Some("log")) => crate::proxy::pod_log(ctx, &def, ns, name).await,
        ("list", None, None) => {
            let opts = list_options(&ctx.query, &def)?;
            let result = ctx.api.list(&def, ns, &opts).await?;
            output::list(ctx, &def, result)
        }
        ("watch", _, None) => {
            let mut opts = list_options(&ctx.query, &def)?;
            if let Some(n) = name {
                opts.fields
                    .terms
                    .push(kumo_apimachinery::selector::FieldTerm {
                        field: "metadata.name".into(),
                        value: n.to_string(),
                        equals: true,
                    });
            }
            watch::serve(ctx, def.clone(), ns, opts).await
        }
        ("create", None, None) => {
            let raw = read_body(body).await?;
            let (obj, duplicates) = decode_checked(ctx.content_type.as_deref(), &raw)?;
            ctx.duplicates = duplicates;
            if kumo_registry::resource::is_virtual(&def) {
                return crate::reviews::create(ctx, &def, ns, obj).await;
            }
            let out = create(ctx, &def, ns, obj).await?;
            Ok(body::respond(
                201,
                &output::render_object(ctx, &def, out)?,
                out_fmt(ctx),
            ))
        }
        ("create", Some(name), Some(s)) => {
            let raw = read_body(body).await?;
            let obj = decode_object(ctx.content_type.as_deref(), &raw)?;
            crate::subresources::create(ctx, &def, ns, name, s, obj).await
        }
        ("update", Some(name), s) => {
            let raw = read_body(body).await?;
            let (obj, duplicates) = decode_checked(ctx.content_type.as_deref(), &raw)?;
            ctx.duplicates = duplicates;
            let (out, created) = update(ctx, &def, ns, name, obj, s).await?;
            written(ctx, &def, s, out, created)
        }
        ("patch", Some(name), s) => {
            let raw = read_body(body).await?;
            let (out, created) = patch(ctx, &def, ns, name, s, &raw).await?;
            written(ctx, &def, s, out, created)
        }
        ("delete", Some(name), None) => {
            let raw = read_body(body).await?;
            let opts = delete_options(&ctx.query, &raw)?;
            match delete(ctx, &def, ns, name, &opts).await? {
                Deleted::Now(obj) => {
                    if strategy::returns_deleted_object(&def) {
                        Ok(body::respond(200, &obj, out_fmt(ctx)))
                    } else {
                        let uid = meta_str(&obj, "uid").unwrap_or("").to_string();
                        let mut s = kumo_apimachinery::status::success_status();
                        s["details"] = json!({"name": name, "kind": def.plural, "uid": uid});
                        if !def.group.is_empty() {
                            s["details"]["group"] = json!(def.group);
                        }
                        Ok(body::respond(200, &s, out_fmt(ctx)))
                    }
                }
                Deleted::Pending(obj) => {
                    let code = if opts.propagation_policy.as_deref() == Some("Foreground") {
                        202
                    } else {
                        200
                    };
                    Ok(body::respond(code, &obj, out_fmt(ctx)))
                }
            }
        }
        ("deletecollection", None, None) => {
            let raw = read_body(body).await?;
            let opts = delete_options(&ctx.query, &raw)?;
            let lopts = list_options(&ctx.query, &def)?;
            let items = ctx.api.list(&def, ns, &lopts).await?;
            let mut deleted = Vec::new();
            for e in &items.items {
                let item_ns = e.namespace().map(str::to_string);
                match delete(ctx, &def, item_ns.as_deref(), e.name(), &opts).await {
                    Ok(Deleted::Now(o)) | Ok(Deleted::Pending(o)) => deleted.push(o),
                    Err(err) if err.code == 404 => {}
                    Err(err) => return Err(err),
                }
            }
            let list = json!({
                "kind": def.list_kind(),
                "apiVersion": def.api_version(),
                "metadata": {"resourceVersion": items.resource_version.to_string()},
                "items": deleted,
            });
            Ok(body::respond(200, &list, out_fmt(ctx)))
        }
        _ => Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        )),
    }
}

/// The response to an update or patch: 201 when it created the object; the Scale view for
/// `/scale`.
fn written(
    ctx: &Ctx,
    def: &ResourceDef,
    sub: Option<&str>,
    out: Value,
    created: bool,
) -> Result<Response<Body>, ApiError> {
    let code = if created { 201 } else { 200 };
    if sub == Some("scale") {
        return Ok(body::respond(code, &to_scale(def, &out), ctx.output));
    }
    Ok(body::respond(
        code,
        &output::render_object(ctx, def, out)?,
        out_fmt(ctx),
    ))
}

/// Objects in responses to writes are JSON or YAML, never Tables.
fn out_fmt(ctx: &Ctx) -> Output {
    if ctx.output == Output::Yaml {
        Output::Yaml
    } else {
        Output::Json
    }
}

fn delete_options(q: &Query, raw: &[u8]) -> Result<DeleteOptions, ApiError> {
    let mut o = DeleteOptions {
        grace_period_seconds: q.grace_period_seconds,
        propagation_policy: q.propagation_policy.clone(),
        dry_run: q.dry_run,
        ..Default::default()
    };
    if !raw.iter().all(u8::is_ascii_whitespace) {
        let v: Value = serde_json::from_slice(raw)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?;
        if let Some(g) = v.get("gracePeriodSeconds").and_then(Value::as_i64) {
            o.grace_period_seconds = Some(g);
        }
        if let Some(p) = v.get("propagationPolicy").and_then(Value::as_str) {
            o.propagation_policy = Some(p.to_string());
        }
        if let Some(orphan) = v.get("orphanDependents").and_then(Value::as_bool) {
            o.propagation_policy = Some(if orphan { "Orphan" } else { "Background" }.into());
        }
        if let Some(pre) = v.get("preconditions") {
            o.preconditions_uid = pre.get("uid").and_then(Value::as_str).map(str::to_string);
            o.preconditions_rv = pre
                .get("resourceVersion")
                .and_then(Value::as_str)
                .map(str::to_string);
        }
        if let Some(values) = v.get("dryRun").and_then(Value::as_array)
            && !values.is_empty()
        {
            if values.iter().any(|d| d.as_str() != Some("All")) {
                return Err(ApiError::invalid(
                    "meta.k8s.io",
                    "DeleteOptions",
                    "",
                    vec![Cause::new(
                        "FieldValueNotSupported",
                        "dryRun",
                        format!(
                            "Unsupported value: {}: supported values: \"All\"",
                            Value::Array(values.clone())
                        ),
                    )],
                ));
            }
            o.dry_run = true;
        }
    }
    if let Some(p) = &o.propagation_policy
        && !matches!(p.as_str(), "Orphan" | "Background" | "Foreground")
    {
        return Err(ApiError::invalid(
            "meta.k8s.io",
            "DeleteOptions",
            "",
            vec![Cause::not_supported(
                "propagationPolicy",
                &json!(p),
                &["Foreground", "Background", "Orphan", "nil"],
            )],
        ));
    }
    Ok(o)
}

/// The field manager of a write: `?fieldManager=`, else derived from the User-Agent.
fn manager(ctx: &Ctx) -> String {
    ctx.query
        .field_manager
        .clone()
        .unwrap_or_else(|| kumo_apimachinery::managed::default_manager(&ctx.user_agent))
}

/// Runs the write pipeline shared by create/update/patch on `new`: typed decode, field
/// validation, defaulting, metadata, validation, admission, managed fields.
async fn prepare(
    ctx: &mut Ctx,
    def: &ResourceDef,
    old: Option<&Value>,
    new: &mut Value,
    subresource: Option<&str>,
    managed: bool,
) -> Result<(), ApiError> {
    // fieldValidation: Strict (kubectl default) refuses unknown and duplicate fields.
    let mode = ctx
        .query
        .field_validation
        .clone()
        .unwrap_or_else(|| "Warn".into());
    if !matches!(mode.as_str(), "Strict" | "Warn" | "Ignore") {
        return Err(ApiError::bad_request(format!(
            "fieldValidation must be one of \"Ignore\", \"Warn\", or \"Strict\", got \"{mode}\""
        )));
    }
    let duplicates = std::mem::take(&mut ctx.duplicates);
    let (unknown, decoded) = kumo_registry::validate::unknown_fields_and_decode_check(def, new);
    if mode != "Ignore" && (!unknown.is_empty() || !duplicates.is_empty()) {
        if mode == "Strict" {
            return Err(kumo_registry::validate::strict_error_with_duplicates(
                def,
                &unknown,
                &duplicates,
            ));
        }
        ctx.warnings
            .extend(kumo_registry::validate::unknown_field_warnings(&unknown));
        ctx.warnings
            .extend(kumo_registry::validate::duplicate_field_warnings(
                &duplicates,
            ));
    }
    crate::schema::prune_paths(new, &unknown);
    decoded?;
    crate::schema::apply_defaults(def, new);
    let csr = crate::csr::is_csr(def);
    let incoming = if csr { new.clone() } else { Value::Null };
    match old {
        None => strategy::prepare_create(def, new),
        Some(old) => strategy::prepare_update(def, old, new, subresource == Some("status")),
    }
    if csr {
        crate::csr::prepare(&ctx.user, old, &incoming, new, subresource);
    }
    let mut causes = match old {
        None => crate::schema::validate_create(def, new),
        Some(old) => crate::schema::validate_update(def, old, new),
    };
    if csr {
        causes.extend(crate::csr::validate(old, new));
    }
    if !causes.is_empty() {
        let name = meta_str(new, "name").unwrap_or("").to_string();
        return Err(ApiError::invalid(&def.group, &def.kind, &name, causes));
    }
    admission::admit(ctx, def, old, new).await?;
    if csr {
        crate::csr::admit(ctx, old, new, subresource)?;
    }
    kumo_registry::validate::omit_empty(def, new);
    if managed {
        let now = objects::now_rfc3339();
        let m = manager(ctx);
        kumo_apimachinery::managed::update_managed_fields_in_place(
            old,
            new,
            &kumo_apimachinery::managed::UpdateOptions {
                manager: &m,
                operation: "Update",
                api_version: &def.api_version(),
                subresource,
                kind: None,
                now: &now,
                lists: None,
                reset: None,
            },
        );
    }
    Ok(())
}

/// POST: create one object.
pub async fn create(
    ctx: &mut Ctx,
    def: &ResourceDef,
    ns: Option<&str>,
    mut obj: Value,
) -> Result<Value, ApiError> {
    check_kind(def, &mut obj, &def.kind, &def.api_version())?;
    check_identity(def, &mut obj, ns, None)?;
    let name = meta_str(&obj, "name").unwrap_or("").to_string();
    if name.is_empty() {
        let generate = meta_str(&obj, "generateName").unwrap_or("").to_string();
        if generate.is_empty() {
            return Err(ApiError::invalid(
                &def.group,
                &def.kind,
                "",
                vec![Cause::new(
                    "FieldValueRequired",
                    "metadata.name",
                    "Required value: name or generateName is required",
                )],
            ));
        }
        let generated = format!(
            "{}{}",
            &generate[..generate.len().min(58)],
            objects::random_suffix()
        );
        meta_mut(&mut obj).insert("name".into(), Value::String(generated));
    }
    prepare(ctx, def, None, &mut obj, None, true).await?;
    let out = ctx
        .api
        .store_create(def, ns, obj, ctx.query.dry_run)
        .await?;
    Ok(out)
}

/// PUT: replace one object (or its status/scale). Creates it when the kind allows
/// create-on-update (upstream: most kinds do not, except a few). Returns (object, created).
pub async fn update(
    ctx: &mut Ctx,
    def: &ResourceDef,
    ns: Option<&str>,
    name: &str,
    mut obj: Value,
    sub: Option<&str>,
) -> Result<(Value, bool), ApiError> {
    if sub == Some("scale") {
        let replicas = obj
            .get("spec")
            .and_then(|s| s.get("replicas"))
            .cloned()
            .unwrap_or(json!(0));
        let rv = meta_str(&obj, "resourceVersion").map(str::to_string);
        return scale_write(ctx, def, ns, name, replicas, rv)
            .await
            .map(|v| (v, false));
    }
    if sub == Some("finalize") {
        return crate::subresources::finalize_namespace(ctx, def, name, obj)
            .await
            .map(|v| (v, false));
    }
    check_kind(def, &mut obj, &def.kind, &def.api_version())?;
    check_identity(def, &mut obj, ns, Some(name))?;
    let body_rv = meta_str(&obj, "resourceVersion").map(str::to_string);
    let Some((current, rev)) = ctx.api.read_for_write(def, ns, name).await? else {
        if sub.is_none() && allows_create_on_update(def) {
            return create(ctx, def, ns, obj).await.map(|v| (v, true));
        }
        return Err(ApiError::not_found(&def.group, &def.plural, name));
    };
    if let Some(brv) = body_rv.as_deref().filter(|s| !s.is_empty()) {
        if brv != rev.to_string() {
            return Err(ApiError::stale(&def.group, &def.plural, name));
        }
    } else if !allows_unconditional_update(def) {
        return Err(ApiError::invalid(
            &def.group,
            &def.kind,
            name,
            vec![
                Cause::required("metadata.resourceVersion")
                    .with_message("Invalid value: 0x0: must be specified for an update"),
            ],
        ));
    }
    prepare(ctx, def, Some(&current), &mut obj, sub, true).await?;
    let out = finish_update(ctx, def, ns, name, obj, rev).await?;
    Ok((out, false))
}

trait CauseExt {
    fn with_message(self, m: &str) -> Cause;
}
impl CauseExt for Cause {
    fn with_message(mut self, m: &str) -> Cause {
        self.reason = "FieldValueInvalid".into();
        self.message = m.to_string();
        self
    }
}

fn allows_create_on_update(def: &ResourceDef) -> bool {
    def.group == "coordination.k8s.io"
        || (def.group.is_empty() && matches!(def.kind.as_str(), "Endpoints" | "Node"))
        || def.group == "rbac.authorization.k8s.io"
        || def.group == "discovery.k8s.io"
}

fn allows_unconditional_update(_def: &ResourceDef) -> bool {
    true
}

/// Stores an update; deletes the object instead when it is being deleted and no finalizer
/// remains.
async fn finish_update(
    ctx: &Ctx,
    def: &ResourceDef,
    ns: Option<&str>,
    name: &str,
    obj: Value,
    rev: i64,
) -> Result<Value, ApiError> {
    let deleting = obj
        .get("metadata")
        .and_then(|m| m.get("deletionTimestamp"))
        .is_some();
    let grace = obj
        .get("metadata")
        .and_then(|m| m.get("deletionGracePeriodSeconds"))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if deleting && objects::finalizers(&obj).is_empty() && grace == 0 && !ctx.query.dry_run {
        let del_rev = ctx.api.store_delete(def, ns, name, rev).await?;
        let mut out = obj;
        objects::set_rv(&mut out, del_rev);
        return Ok(out);
    }
    ctx.api
        .store_update(def, ns, name, obj, rev, ctx.query.dry_run)
        .await
}

/// PATCH (all four types) with retries on a lost race, like upstream.
pub async fn patch(
    ctx: &mut Ctx,
    def: &ResourceDef,
    ns: Option<&str>,
    name: &str,
    sub: Option<&str>,
    raw: &[u8],
) -> Result<(Value, bool), ApiError> {
    let ct = media_type(ctx.content_type.as_deref());
    let kind = match ct.as_str() {
        "application/json-patch+json" => PatchKind::Json,
        "application/merge-patch+json" => PatchKind::Merge,
        "application/strategic-merge-patch+json" => {
            if def.custom {
                return Err(kumo_apimachinery::smp::unsupported_for_custom_resources());
            }
            PatchKind::Strategic
        }
        "application/apply-patch+yaml" | "application/apply-patch+cbor" => PatchKind::Apply,
        other => {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other:?})"
                ),
            ));
        }
    };
    // Upstream's ValidatePatchOptions: `force` (any value) only with apply, a fieldManager
    // required for apply, then the options every write validates.
    let mut causes = Vec::new();
    if kind != PatchKind::Apply && ctx.query.raw.contains_key("force") {
        causes.push(Cause::forbidden(
            "force",
            "may not be specified for non-apply patch",
        ));
    }
    causes.extend(options_causes(&ctx.query, true, kind == PatchKind::Apply));
    if !causes.is_empty() {
        return Err(ApiError::invalid("meta.k8s.io", "PatchOptions", "", causes));
    }
    for attempt in 0..5 {
        let current = ctx.api.read_for_write(def, ns, name).await?;
        let result = patch_once(ctx, def, ns, name, sub, raw, kind, current).await;
        match result {
            Err(e)
                if e.code == 409 && e.reason == "Conflict" && attempt < 4 && !patch_has_rv(raw) =>
            {
                continue;
            }
            other => return other,
        }
    }
    Err(ApiError::stale(&def.group, &def.plural, name))
}

fn patch_has_rv(raw: &[u8]) -> bool {
    serde_json::from_slice::<Value>(raw)
        .ok()
        .and_then(|v| v.get("metadata")?.get("resourceVersion").cloned())
        .is_some()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchKind {
    Json,
    Merge,
    Strategic,
    Apply,
}

#[allow(clippy::too_many_arguments)]
async fn patch_once(
    ctx: &mut Ctx,
    def: &ResourceDef,
    ns: Option<&str>,
    name: &str,
    sub: Option<&str>,
    raw: &[u8],
    kind: PatchKind,
    current: Option<(Value, i64)>,
) -> Result<(Value, bool), ApiError> {
    let av = def.api_version();
    if sub == Some("scale") {
        let (cur, _) = current.ok_or_else(|| ApiError::not_found(&def.group, &def.plural, name))?;
        let scale = to_scale(def, &cur);
        let patched =
            apply_patch(kind, &scale, raw, "autoscaling/v1", "Scale").map_err(bad_patch)?;
        let replicas = patched
            .get("spec")
            .and_then(|s| s.get("replicas"))
            .cloned()
            .unwrap_or(json!(0));
        let rv = meta_str(&patched, "resourceVersion").map(str::to_string);
        return scale_write(ctx, def, ns, name, replicas, rv)
            .await
            .map(|v| (v, false));
    }
    let Some((cur, rev)) = current else {
        if kind == PatchKind::Apply && sub.is_none() {
            // Server-side apply creates.
            let applied = decode_apply(raw)?;
            let m = manager(ctx);
            let now = objects::now_rfc3339();
            let mut obj = kumo_apimachinery::managed::apply(
                None,
                &applied,
                &m,
                ctx.query.force,
                &av,
                &def.kind,
                &now,
            )
            .map_err(bad_patch)?;
            check_kind(def, &mut obj, &def.kind, &av)?;
            check_identity(def, &mut obj, ns, Some(name))?;
            prepare(ctx, def, None, &mut obj, None, false).await?;
            let out = ctx
                .api
                .store_create(def, ns, obj, ctx.query.dry_run)
                .await?;
            return Ok((out, true));
        }
        return Err(ApiError::not_found(&def.group, &def.plural, name));
    };
    let mut new = match kind {
        PatchKind::Apply => {
            let applied = decode_apply(raw)?;
            let m = manager(ctx);
            let now = objects::now_rfc3339();
            kumo_apimachinery::managed::apply_with(
                Some(&cur),
                &applied,
                &kumo_apimachinery::managed::ApplyOptions {
                    manager: &m,
                    force: ctx.query.force,
                    api_version: &av,
                    kind: &def.kind,
                    subresource: sub,
                    now: &now,
                    lists: None,
                    reset: None,
                },
            )
            .map_err(bad_patch)?
        }
        k => {
            let new = apply_patch(k, &cur, raw, &av, &def.kind).map_err(bad_patch)?;
            let mode = ctx.query.field_validation.as_deref().unwrap_or("Warn");
            check_patched(def, &new, raw, k, mode, &mut ctx.warnings)?;
            new
        }
    };
    // A patch may carry a resourceVersion precondition.
    if let Some(prv) = meta_str(&new, "resourceVersion")
        && meta_str(&cur, "resourceVersion") != Some(prv)
    {
        return Err(ApiError::stale(&def.group, &def.plural, name));
    }
    check_kind(def, &mut new, &def.kind, &av)?;
    check_identity(def, &mut new, ns, Some(name))?;
    prepare(
        ctx,
        def,
        Some(&cur),
        &mut new,
        sub,
        kind != PatchKind::Apply,
    )
    .await?;
    let out = finish_update(ctx, def, ns, name, new, rev).await?;
    Ok((out, false))
}

/// Upstream answers some malformed patches with a plain Go error, which becomes a 500 without
/// a reason (server-side apply's "failed to create typed patch object", strategic merge patch
/// directive errors), or with a recovered panic (strategic merge patch on lists whose elements
/// are not what the patch says). They are the client's fault: kumo answers 400 BadRequest with
/// upstream's message instead (upstream is moving the same way: kubernetes#139255, #79210).
pub(crate) fn bad_patch(e: ApiError) -> ApiError {
    if e.code != 500 || e.message.starts_with("failed to decode managed fields") {
        return e;
    }
    if e.reason.is_empty() {
        return ApiError::bad_request(e.message);
    }
    if e.message
        .starts_with("This request caused apiserver to panic")
    {
        return ApiError::bad_request(
            "the strategic merge patch does not fit the object: a list holds lists or objects where scalars are expected, or scalars where objects are expected",
        );
    }
    e
}

/// What upstream's json/merge/strategic patchers check when they decode the patched object
/// (`applyPatchToCurrentObject`): a value of the wrong type, and under
/// `fieldValidation=Strict` unknown fields and keys repeated in the patch body, are a 422
/// `Invalid` on the field `patch` (not the 400 a create gets); under `Warn` they are warnings
/// (the unknown fields' from the write pipeline).
pub(crate) fn check_patched(
    def: &ResourceDef,
    patched: &Value,
    raw: &[u8],
    kind: PatchKind,
    mode: &str,
    warnings: &mut Vec<String>,
) -> Result<(), ApiError> {
    let invalid = |detail: &str| {
        ApiError::invalid(
            "",
            "",
            "",
            vec![Cause::invalid(
                "patch",
                &Value::String(patched.to_string()),
                detail,
            )],
        )
    };
    if let Err(e) = crate::schema::decode_check(def, patched) {
        // `<Kind> in version "v1" cannot be handled as a <Kind>: <detail>` → `<detail>`.
        let detail = e
            .message
            .split_once(" cannot be handled as a ")
            .and_then(|(_, rest)| rest.split_once(": "))
            .map_or(e.message.as_str(), |(_, d)| d);
        return Err(invalid(detail));
    }
    if !matches!(mode, "Strict" | "Warn") {
        return Ok(());
    }
    // The patch body's own repeated keys (json patch bodies are lists of operations).
    let duplicates = if kind == PatchKind::Json {
        Vec::new()
    } else {
        kumo_registry::validate::duplicate_fields(raw)
    };
    let duplicates = kumo_registry::validate::duplicate_field_warnings(&duplicates);
    if mode == "Warn" {
        warnings.extend(duplicates);
        return Ok(());
    }
    let mut errors = duplicates;
    errors.extend(kumo_registry::validate::unknown_field_warnings(
        &kumo_registry::validate::unknown_fields(def, patched),
    ));
    if errors.is_empty() {
        return Ok(());
    }
    Err(invalid(&format!(
        "strict decoding error: {}",
        errors.join(", ")
    )))
}

/// The causes of upstream's `ValidateFieldManager` / `ValidateDryRun` /
/// `ValidateFieldValidation` on a write's options (`manager_and_validation`: create, update and
/// patch; a delete checks dryRun only). `apply`: a fieldManager is required.
fn options_causes(q: &Query, manager_and_validation: bool, apply: bool) -> Vec<Cause> {
    let mut causes = Vec::new();
    if manager_and_validation {
        let manager = q.raw.get("fieldManager").map_or("", String::as_str);
        causes.extend(kumo_apimachinery::managed::validate_field_manager(
            manager, apply,
        ));
    }
    if q.dry_run_values.iter().any(|v| v != "All") {
        let values: Vec<String> = q.dry_run_values.iter().map(|v| format!("{v:?}")).collect();
        causes.push(Cause::new(
            "FieldValueNotSupported",
            "dryRun",
            format!(
                "Unsupported value: []string{{{}}}: supported values: \"All\"",
                values.join(", ")
            ),
        ));
    }
    if manager_and_validation
        && let Some(v) = q.raw.get("fieldValidation")
        && !matches!(v.as_str(), "" | "Ignore" | "Strict" | "Warn")
    {
        causes.push(Cause::not_supported(
            "fieldValidation",
            &json!(v),
            &["", "Ignore", "Strict", "Warn"],
        ));
    }
    causes
}

/// Upstream's `Validate{Create,Update,Delete}Options` before a write: 422 `Invalid` on the
/// options kind (`CreateOptions.meta.k8s.io "" is invalid: dryRun: Unsupported value: …`).
/// Patches validate theirs in [`patch`], once the patch type is known.
fn validate_options(ctx: &Ctx, verb: &str) -> Result<(), ApiError> {
    let kind = match verb {
        "create" => "CreateOptions",
        "update" => "UpdateOptions",
        "delete" | "deletecollection" => "DeleteOptions",
        _ => return Ok(()),
    };
    let causes = options_causes(&ctx.query, kind != "DeleteOptions", false);
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid("meta.k8s.io", kind, "", causes))
    }
}

pub(crate) fn decode_apply(raw: &[u8]) -> Result<Value, ApiError> {
    let v: Value = match serde_json::from_slice(raw) {
        Ok(v) => v,
        Err(_) => serde_saphyr::from_slice(raw)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?,
    };
    if !v.is_object() {
        return Err(ApiError::bad_request("apply patch must be an object"));
    }
    Ok(v)
}

pub(crate) fn apply_patch(
    kind: PatchKind,
    doc: &Value,
    raw: &[u8],
    av: &str,
    k: &str,
) -> Result<Value, ApiError> {
    match kind {
        PatchKind::Json => kumo_apimachinery::patch::json_patch(doc, raw),
        PatchKind::Merge => kumo_apimachinery::patch::merge_patch(doc, raw),
        PatchKind::Strategic => kumo_apimachinery::smp::strategic_merge_patch_body(doc, raw, av, k),
        PatchKind::Apply => Err(ApiError::bad_request("apply is handled separately")),
    }
}

/// The autoscaling/v1 Scale view of a Deployment/ReplicaSet/StatefulSet (or a CR).
pub fn to_scale(def: &ResourceDef, obj: &Value) -> Value {
    let meta = obj.get("metadata").cloned().unwrap_or(json!({}));
    let replicas = obj
        .get("spec")
        .and_then(|s| s.get("replicas"))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let status_replicas = obj
        .get("status")
        .and_then(|s| s.get("replicas"))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let selector = obj
        .get("spec")
        .and_then(|s| s.get("selector"))
        .and_then(|s| kumo_apimachinery::selector::LabelSelector::from_json(s).ok())
        .map(|s| s.to_selector_string())
        .unwrap_or_default();
    let _ = def;
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
            "creationTimestamp": meta.get("creationTimestamp"),
        },
        "spec": {"replicas": replicas},
        "status": {"replicas": status_replicas, "selector": selector},
    })
}

async fn scale_write(
    ctx: &mut Ctx,
    def: &ResourceDef,
    ns: Option<&str>,
    name: &str,
    replicas: Value,
    rv: Option<String>,
) -> Result<Value, ApiError> {
    let Some(n) = replicas.as_i64() else {
        return Err(ApiError::invalid(
            "autoscaling",
            "Scale",
            name,
            vec![Cause::invalid(
                "spec.replicas",
                &replicas,
                "must be an integer",
            )],
        ));
    };
    if n < 0 {
        return Err(ApiError::invalid(
            "autoscaling",
            "Scale",
            name,
            vec![Cause::invalid(
                "spec.replicas",
                &replicas,
                "must be greater than or equal to 0",
            )],
        ));
    }
    let (cur, rev) = ctx
        .api
        .read_for_write(def, ns, name)
        .await?
        .ok_or_else(|| ApiError::not_found(&def.group, &def.plural, name))?;
    if let Some(rv) = rv.filter(|s| !s.is_empty())
        && rv != rev.to_string()
    {
        return Err(ApiError::stale(&def.group, &def.plural, name));
    }
    let mut new = cur.clone();
    if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("replicas".into(), json!(n));
    }
    prepare(ctx, def, Some(&cur), &mut new, Some("scale"), true).await?;
    finish_update(ctx, def, ns, name, new, rev).await
}

/// DELETE one object: immediate, graceful (pods), or pending finalizers.
pub async fn delete(
    ctx: &mut Ctx,
    def: &ResourceDef,
    ns: Option<&str>,
    name: &str,
    opts: &DeleteOptions,
) -> Result<Deleted, ApiError> {
    for _ in 0..5 {
        let Some((cur, rev)) = ctx.api.read_for_write(def, ns, name).await? else {
            return Err(ApiError::not_found(&def.group, &def.plural, name));
        };
        if let Some(uid) = &opts.preconditions_uid
            && meta_str(&cur, "uid") != Some(uid.as_str())
        {
            return Err(ApiError::conflict(
                &def.group,
                &def.plural,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&cur, "uid").unwrap_or("")
                ),
            ));
        }
        if let Some(prv) = &opts.preconditions_rv
            && prv != &rev.to_string()
        {
            return Err(ApiError::conflict(
                &def.group,
                &def.plural,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {prv}, ResourceVersion in object meta: {rev}"
                ),
            ));
        }
        admission::admit_delete(ctx, def, &cur)?;
        let mut new = cur.clone();
        let mut pending = false;
        // Namespaces: spec.finalizers hold the deletion until the namespace controller is done.
        if def.group.is_empty() && def.kind == "Namespace" {
            let has_spec_finalizers = new
                .get("spec")
                .and_then(|s| s.get("finalizers"))
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty());
            if has_spec_finalizers || !objects::finalizers(&new).is_empty() {
                if new
                    .get("metadata")
                    .and_then(|m| m.get("deletionTimestamp"))
                    .is_none()
                {
                    strategy::mark_deleting(&mut new, 0);
                }
                if let Some(o) = new.as_object_mut() {
                    o.insert("status".into(), json!({"phase": "Terminating"}));
                }
                pending = true;
            }
        } else {
            match opts.propagation_policy.as_deref() {
                Some("Orphan") => {
                    strategy::add_finalizer(&mut new, "orphan");
                }
                Some("Foreground") => {
                    strategy::add_finalizer(&mut new, "foregroundDeletion");
                }
                _ => {}
            }
            let grace = strategy::graceful_period(def, &cur, opts.grace_period_seconds);
            let already = cur
                .get("metadata")
                .and_then(|m| m.get("deletionTimestamp"))
                .is_some();
            if let Some(g) = grace {
                let current_grace = cur
                    .get("metadata")
                    .and_then(|m| m.get("deletionGracePeriodSeconds"))
                    .and_then(Value::as_i64);
                if !already || current_grace.is_some_and(|c| g < c) {
                    strategy::mark_deleting(&mut new, g);
                }
                pending = true;
            } else if opts.grace_period_seconds == Some(0)
                && already
                && objects::finalizers(&new).is_empty()
            {
                pending = false;
            }
            if !objects::finalizers(&new).is_empty() {
                if !already {
                    strategy::mark_deleting(&mut new, 0);
                }
                pending = true;
            }
        }
        if opts.dry_run {
            return Ok(if pending {
                Deleted::Pending(new)
            } else {
                Deleted::Now(cur)
            });
        }
        if pending {
            if new == cur {
                return Ok(Deleted::Pending(cur));
            }
            match ctx.api.store_update(def, ns, name, new, rev, false).await {
                Ok(out) => return Ok(Deleted::Pending(out)),
                Err(e) if e.code == 409 => continue,
                Err(e) => return Err(e),
            }
        }
        match ctx.api.store_delete(def, ns, name, rev).await {
            Ok(del_rev) => {
                let mut out = cur;
                objects::set_rv(&mut out, del_rev);
                return Ok(Deleted::Now(out));
            }
            Err(e) if e.code == 409 && e.reason == "Conflict" => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::stale(&def.group, &def.plural, name))
}

/// Re-exported for subresources/reviews.
pub fn list_result_json(def: &ResourceDef, r: &ListResult) -> Value {
    let items: Vec<Value> = r.items.iter().map(|e| e.object()).collect();
    let mut meta = json!({"resourceVersion": r.resource_version.to_string()});
    if let Some(c) = &r.continue_token {
        meta["continue"] = json!(c);
    }
    json!({"kind": def.list_kind(), "apiVersion": def.api_version(), "metadata": meta, "items": items})
}
