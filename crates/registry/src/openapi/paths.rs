//! Operations per resource, laid out as upstream's OpenAPI does (paths, operation ids,
//! `x-kubernetes-action`, `x-kubernetes-group-version-kind`, query parameters), rendered as
//! OpenAPI 3.0 and Swagger 2.0.

use serde_json::{Map, Value, json};

use super::schemas::REF_PREFIX;
use crate::resource::ResourceDef;

pub(crate) const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
pub(crate) const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
pub(crate) const WATCH_EVENT: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent";
pub(crate) const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
pub(crate) const API_RESOURCE_LIST: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.APIResourceList";
pub(crate) const API_GROUP: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.APIGroup";
pub(crate) const API_GROUP_LIST: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.APIGroupList";
pub(crate) const API_VERSIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.APIVersions";

/// One query or path parameter.
#[derive(Debug, Clone)]
pub(crate) struct Param {
    name: &'static str,
    location: &'static str,
    ty: &'static str,
    description: String,
    required: bool,
}

fn q(name: &'static str, ty: &'static str, description: &str) -> Param {
    Param {
        name,
        location: "query",
        ty,
        description: description.to_string(),
        required: false,
    }
}

fn path_param(name: &'static str, description: String) -> Param {
    Param {
        name,
        location: "path",
        ty: "string",
        description,
        required: true,
    }
}

const DRY_RUN: &str = "When present, indicates that modifications should not be persisted. An invalid or unrecognized dryRun directive will result in an error response and no further processing of the request. Valid values are: - All: all dry run stages will be processed";
const FIELD_MANAGER: &str = "fieldManager is a name associated with the actor or entity that is making these changes. The value must be less than or 128 characters long, and only contain printable characters, as defined by https://golang.org/pkg/unicode/#IsPrint.";
const FIELD_MANAGER_PATCH: &str = "fieldManager is a name associated with the actor or entity that is making these changes. The value must be less than or 128 characters long, and only contain printable characters, as defined by https://golang.org/pkg/unicode/#IsPrint. This field is required for apply requests (application/apply-patch) but optional for non-apply patch types (JsonPatch, MergePatch, StrategicMergePatch).";
const FIELD_VALIDATION: &str = "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore: This will ignore any unknown fields that are silently dropped from the object, and will ignore all but the last duplicate field that the decoder encounters. This is the default behavior prior to v1.23. - Warn: This will send a warning via the standard warning response header for each unknown field that is dropped from the object, and for each duplicate field that is encountered. The request will still succeed if there are no other errors, and will only persist the last of any duplicate fields. This is the default in v1.23+ - Strict: This will fail the request with a BadRequest error if any unknown fields would be dropped from the object, or if any duplicate fields are present. The error returned from the server will contain all unknown and duplicate fields encountered.";
const FORCE: &str = "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people. Force flag must be unset for non-apply patch requests.";
const PRETTY: &str = "If 'true', then the output is pretty printed. Defaults to 'false' unless the user-agent indicates a browser or command-line HTTP tool (curl and wget).";
const NAMESPACE: &str = "object name and auth scope, such as for teams and projects";
const ALLOW_WATCH_BOOKMARKS: &str = "allowWatchBookmarks requests watch events with type \"BOOKMARK\". Servers that do not implement bookmarks may ignore this flag and bookmarks are sent at the server's discretion. Clients should not assume bookmarks are returned at any specific interval, nor may they assume the server will send any BOOKMARK event during a session. If this is not a watch, this field is ignored.";
const CONTINUE: &str = "The continue option should be set when retrieving more results from the server. Since this value is server defined, clients may only use the continue value from a previous query result with identical query parameters (except for the value of continue) and the server may reject a continue value it does not recognize. If the specified continue value is no longer valid whether due to expiration (generally five to fifteen minutes) or a configuration change on the server, the server will respond with a 410 ResourceExpired error together with a continue token.";
const FIELD_SELECTOR: &str =
    "A selector to restrict the list of returned objects by their fields. Defaults to everything.";
const LABEL_SELECTOR: &str =
    "A selector to restrict the list of returned objects by their labels. Defaults to everything.";
const LIMIT: &str = "limit is a maximum number of responses to return for a list call. If more items exist, the server will set the `continue` field on the list metadata to a value that can be used with the same initial query to retrieve the next set of results.";
const RESOURCE_VERSION: &str = "resourceVersion sets a constraint on what resource versions a request may be served from. See https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions for details.\n\nDefaults to unset";
const RESOURCE_VERSION_MATCH: &str = "resourceVersionMatch determines how resourceVersion is applied to list calls. It is highly recommended that resourceVersionMatch be set for list calls where resourceVersion is set See https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions for details.\n\nDefaults to unset";
const SEND_INITIAL_EVENTS: &str = "`sendInitialEvents=true` may be set together with `watch=true`. In that case, the watch stream will begin with synthetic events to produce the current state of objects in the collection. Once all such events have been sent, a synthetic \"Bookmark\" event will be sent.";
const TIMEOUT_SECONDS: &str = "Timeout for the list/watch call. This limits the duration of the call, regardless of any activity or inactivity.";
const WATCH: &str = "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications. Specify resourceVersion.";
const GRACE_PERIOD: &str = "The duration in seconds before the object should be deleted. Value must be non-negative integer. The value zero indicates delete immediately. If this value is nil, the default grace period for the specified type will be used. Defaults to a per object value if not specified. zero means delete immediately.";
const IGNORE_STORE_READ_ERROR: &str = "if set to true, it will trigger an unsafe deletion of the resource in case the normal deletion flow fails with a corrupt object error. A resource is considered corrupt if it can not be retrieved from the underlying storage successfully because of a) its data can not be transformed e.g. decryption failure, or b) it fails to decode into an object. NOTE: unsafe deletion ignores finalizer constraints, skips precondition checks, and removes the object from the storage. WARNING: This may potentially break the cluster if the workload associated with the resource being unsafe-deleted relies on normal deletion flow. Use only if you REALLY know what you are doing. The default value is false, and the user must opt in to enable it";
const ORPHAN_DEPENDENTS: &str = "Deprecated: please use the PropagationPolicy, this field will be deprecated in 1.7. Should the dependent objects be orphaned. If true/false, the \"orphan\" finalizer will be added to/removed from the object's finalizers list. Either this field or PropagationPolicy may be set, but not both.";
const PROPAGATION_POLICY: &str = "Whether and how garbage collection will be performed. Either this field or OrphanDependents may be set, but not both. The default policy is decided by the existing finalizer set in the metadata.finalizers and the resource-specific default policy. Acceptable values are: 'Orphan' - orphan the dependents; 'Background' - allow the garbage collector to delete the dependents in the background; 'Foreground' - a cascading policy that deletes all dependents in the foreground.";

fn list_params() -> Vec<Param> {
    vec![
        q("allowWatchBookmarks", "boolean", ALLOW_WATCH_BOOKMARKS),
        q("continue", "string", CONTINUE),
        q("fieldSelector", "string", FIELD_SELECTOR),
        q("labelSelector", "string", LABEL_SELECTOR),
        q("limit", "integer", LIMIT),
        q("resourceVersion", "string", RESOURCE_VERSION),
        q("resourceVersionMatch", "string", RESOURCE_VERSION_MATCH),
        q("sendInitialEvents", "boolean", SEND_INITIAL_EVENTS),
        q("timeoutSeconds", "integer", TIMEOUT_SECONDS),
        q("watch", "boolean", WATCH),
    ]
}

fn write_params() -> Vec<Param> {
    vec![
        q("dryRun", "string", DRY_RUN),
        q("fieldManager", "string", FIELD_MANAGER),
        q("fieldValidation", "string", FIELD_VALIDATION),
    ]
}

fn patch_params() -> Vec<Param> {
    vec![
        q("dryRun", "string", DRY_RUN),
        q("fieldManager", "string", FIELD_MANAGER_PATCH),
        q("fieldValidation", "string", FIELD_VALIDATION),
        q("force", "boolean", FORCE),
    ]
}

fn delete_params() -> Vec<Param> {
    vec![
        q("dryRun", "string", DRY_RUN),
        q("gracePeriodSeconds", "integer", GRACE_PERIOD),
        q(
            "ignoreStoreReadErrorWithClusterBreakingPotential",
            "boolean",
            IGNORE_STORE_READ_ERROR,
        ),
        q("orphanDependents", "boolean", ORPHAN_DEPENDENTS),
        q("propagationPolicy", "string", PROPAGATION_POLICY),
    ]
}

fn delete_collection_params() -> Vec<Param> {
    let mut p = vec![
        q("continue", "string", CONTINUE),
        q("dryRun", "string", DRY_RUN),
        q("fieldSelector", "string", FIELD_SELECTOR),
        q("gracePeriodSeconds", "integer", GRACE_PERIOD),
        q(
            "ignoreStoreReadErrorWithClusterBreakingPotential",
            "boolean",
            IGNORE_STORE_READ_ERROR,
        ),
        q("labelSelector", "string", LABEL_SELECTOR),
        q("limit", "integer", LIMIT),
        q("orphanDependents", "boolean", ORPHAN_DEPENDENTS),
        q("propagationPolicy", "string", PROPAGATION_POLICY),
        q("resourceVersion", "string", RESOURCE_VERSION),
        q("resourceVersionMatch", "string", RESOURCE_VERSION_MATCH),
        q("sendInitialEvents", "boolean", SEND_INITIAL_EVENTS),
        q("timeoutSeconds", "integer", TIMEOUT_SECONDS),
    ];
    p.sort_by_key(|p| p.name);
    p
}

/// What a request or response body is.
#[derive(Debug, Clone)]
enum Body {
    /// A component schema.
    Schema(String),
    /// Plain text (pod logs).
    Text,
}

/// One operation of one path.
#[derive(Debug, Clone)]
pub(crate) struct Op {
    method: &'static str,
    operation_id: String,
    description: String,
    action: &'static str,
    gvk: Option<(String, String, String)>,
    params: Vec<Param>,
    request: Option<Body>,
    patch_body: bool,
    /// A custom resource: no strategic merge patch (upstream leaves its media type out, and
    /// kubectl apply falls back to a JSON merge patch when it is absent).
    custom: bool,
    response: Body,
    /// Also answers 201 (create/replace) and 202 (create/delete).
    created: bool,
    accepted: bool,
    watch: bool,
    tag: String,
}

/// One path with its operations and path-level parameters.
#[derive(Debug, Clone)]
pub(crate) struct PathItem {
    pub path: String,
    params: Vec<Param>,
    ops: Vec<Op>,
}

/// `apps` → `Apps`, `rbac.authorization.k8s.io` → `RbacAuthorization`, `` → `Core`.
fn group_camel(group: &str) -> String {
    if group.is_empty() {
        return "Core".into();
    }
    let g = group.strip_suffix(".k8s.io").unwrap_or(group);
    g.split(['.', '-'])
        .map(|p| {
            let mut c = p.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
        None => String::new(),
    }
}

/// The operation tag: `apps_v1`, `core_v1`, `rbacAuthorization_v1`.
fn tag(group: &str, version: &str) -> String {
    let camel = group_camel(group);
    let mut c = camel.chars();
    let lower = match c.next() {
        Some(f) => f.to_ascii_lowercase().to_string() + c.as_str(),
        None => String::new(),
    };
    format!("{lower}_{version}")
}

/// `/api/v1` or `/apis/<group>/<version>`.
pub(crate) fn gv_prefix(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    }
}

/// How a resource's kind and list kind are named in the components.
pub(crate) struct Names {
    pub kind: String,
    pub list: Option<String>,
}

/// The subresource kinds' component names.
pub(crate) fn subresource_schema(group: &str, version: &str, kind: &str) -> Option<String> {
    crate::openapi::schemas::builtin()
        .names
        .get(&(group.to_string(), version.to_string(), kind.to_string()))
        .cloned()
}

/// Every path a resource contributes to its group-version document.
pub(crate) fn resource_paths(def: &ResourceDef, names: &Names) -> Vec<PathItem> {
    let g = group_camel(&def.group);
    let v = capitalize(&def.version);
    let kind = &def.kind;
    let gvk = Some((def.group.clone(), def.version.clone(), def.kind.clone()));
    let tag = tag(&def.group, &def.version);
    let prefix = gv_prefix(&def.group, &def.version);
    let has = |verb: &str| def.verbs.iter().any(|v| v == verb);
    let ns = def.namespaced();
    let scope_word = if ns { "Namespaced" } else { "" };
    let collection = if ns {
        format!("{prefix}/namespaces/{{namespace}}/{}", def.plural)
    } else {
        format!("{prefix}/{}", def.plural)
    };
    let item_path = format!("{collection}/{{name}}");
    let ns_param = || path_param("namespace", NAMESPACE.to_string());
    let name_param = |what: &str| path_param("name", format!("name of the {what}"));
    let pretty = || q("pretty", "string", PRETTY);
    let kind_body = || Body::Schema(names.kind.clone());
    let op = |method, id: String, description: String, action| Op {
        method,
        operation_id: id,
        description,
        action,
        gvk: gvk.clone(),
        params: Vec::new(),
        request: None,
        patch_body: false,
        custom: def.custom,
        response: kind_body(),
        created: false,
        accepted: false,
        watch: false,
        tag: tag.clone(),
    };
    let mut out = Vec::new();

    // Collection.
    let mut ops = Vec::new();
    if has("list")
        && let Some(list) = &names.list
    {
        let mut o = op(
            "get",
            format!("list{g}{v}{scope_word}{kind}"),
            format!("list or watch objects of kind {kind}"),
            "list",
        );
        o.params = list_params();
        o.response = Body::Schema(list.clone());
        o.watch = true;
        ops.push(o);
    }
    if has("create") {
        let mut o = op(
            "post",
            format!("create{g}{v}{scope_word}{kind}"),
            format!("create a {kind}"),
            "post",
        );
        o.params = write_params();
        o.request = Some(kind_body());
        o.created = true;
        o.accepted = true;
        ops.push(o);
    }
    if has("deletecollection") {
        let mut o = op(
            "delete",
            format!("delete{g}{v}Collection{scope_word}{kind}"),
            format!("delete collection of {kind}"),
            "deletecollection",
        );
        o.params = delete_collection_params();
        o.request = Some(Body::Schema(DELETE_OPTIONS.into()));
        o.response = Body::Schema(STATUS.into());
        ops.push(o);
    }
    if !ops.is_empty() {
        let mut params = Vec::new();
        if ns {
            params.push(ns_param());
        }
        params.push(pretty());
        out.push(PathItem {
            path: collection.clone(),
            params,
            ops,
        });
    }

    // Item.
    let mut ops = Vec::new();
    if has("get") {
        ops.push(op(
            "get",
            format!("read{g}{v}{scope_word}{kind}"),
            format!("read the specified {kind}"),
            "get",
        ));
    }
    if has("update") {
        let mut o = op(
            "put",
            format!("replace{g}{v}{scope_word}{kind}"),
            format!("replace the specified {kind}"),
            "put",
        );
        o.params = write_params();
        o.request = Some(kind_body());
        o.created = true;
        ops.push(o);
    }
    if has("patch") {
        let mut o = op(
            "patch",
            format!("patch{g}{v}{scope_word}{kind}"),
            format!("partially update the specified {kind}"),
            "patch",
        );
        o.params = patch_params();
        o.request = Some(Body::Schema(PATCH.into()));
        o.patch_body = true;
        o.created = true;
        ops.push(o);
    }
    if has("delete") {
        let mut o = op(
            "delete",
            format!("delete{g}{v}{scope_word}{kind}"),
            format!("delete a {kind}"),
            "delete",
        );
        o.params = delete_params();
        o.request = Some(Body::Schema(DELETE_OPTIONS.into()));
        o.response = Body::Schema(STATUS.into());
        o.accepted = true;
        ops.push(o);
    }
    if !ops.is_empty() {
        let mut params = vec![name_param(kind)];
        if ns {
            params.push(ns_param());
        }
        params.push(pretty());
        out.push(PathItem {
            path: item_path.clone(),
            params,
            ops,
        });
    }

    // Subresources.
    for sub in &def.subresources {
        let sub_kind_schema = if sub.name == "status" {
            Some(names.kind.clone())
        } else {
            subresource_schema(&sub.group, &sub.version, &sub.kind)
        };
        let sub_gvk = Some((sub.group.clone(), sub.version.clone(), sub.kind.clone()));
        let suffix = capitalize(&sub.name);
        let path = format!("{item_path}/{}", sub.name);
        let what = match sub.name.as_str() {
            "status" => "status of ".to_string(),
            "scale" => "scale of ".to_string(),
            "ephemeralcontainers" => "ephemeralcontainers of ".to_string(),
            "log" => "log of ".to_string(),
            _ => String::new(),
        };
        let sub_verbs = |verb: &str| sub.verbs.iter().any(|v| v == verb);
        let mut ops = Vec::new();
        let body = sub_kind_schema.clone().map(Body::Schema);
        match sub.name.as_str() {
            "log" => {
                let mut o = op(
                    "get",
                    format!("read{g}{v}{scope_word}{kind}Log"),
                    format!("read log of the specified {kind}"),
                    "get",
                );
                o.params = vec![
                    q(
                        "container",
                        "string",
                        "The container for which to stream logs. Defaults to only container if there is one container in the pod.",
                    ),
                    q(
                        "follow",
                        "boolean",
                        "Follow the log stream of the pod. Defaults to false.",
                    ),
                    q(
                        "insecureSkipTLSVerifyBackend",
                        "boolean",
                        "insecureSkipTLSVerifyBackend indicates that the apiserver should not confirm the validity of the serving certificate of the backend it is connecting to.",
                    ),
                    q(
                        "limitBytes",
                        "integer",
                        "If set, the number of bytes to read from the server before terminating the log output.",
                    ),
                    q(
                        "previous",
                        "boolean",
                        "Return previous terminated container logs. Defaults to false.",
                    ),
                    q(
                        "sinceSeconds",
                        "integer",
                        "A relative time in seconds before the current time from which to show logs.",
                    ),
                    q(
                        "stream",
                        "string",
                        "Specify which container log stream to return to the client. Acceptable values are \"All\", \"Stdout\" and \"Stderr\". If not specified, \"All\" is used, and both stdout and stderr are returned interleaved.",
                    ),
                    q(
                        "tailLines",
                        "integer",
                        "If set, the number of lines from the end of the logs to show.",
                    ),
                    q(
                        "timestamps",
                        "boolean",
                        "If true, add an RFC3339 or RFC3339Nano timestamp at the beginning of every line of log output. Defaults to false.",
                    ),
                ];
                o.response = Body::Text;
                ops.push(o);
            }
            "exec" | "attach" | "portforward" | "proxy" => {
                for method in ["get", "post"] {
                    let mut o = op(
                        method,
                        format!(
                            "connect{}{g}{v}{scope_word}{kind}{suffix}",
                            capitalize(method)
                        ),
                        format!("connect {method} requests to {} of {kind}", sub.name),
                        "connect",
                    );
                    o.gvk = sub_gvk.clone();
                    o.response = Body::Text;
                    if sub.name == "exec" {
                        o.params = vec![
                            q(
                                "command",
                                "string",
                                "Command is the remote command to execute. argv array. Not executed within a shell.",
                            ),
                            q(
                                "container",
                                "string",
                                "Container in which to execute the command. Defaults to only container if there is only one container in the pod.",
                            ),
                            q(
                                "stderr",
                                "boolean",
                                "Redirect the standard error stream of the pod for this call.",
                            ),
                            q(
                                "stdin",
                                "boolean",
                                "Redirect the standard input stream of the pod for this call. Defaults to false.",
                            ),
                            q(
                                "stdout",
                                "boolean",
                                "Redirect the standard output stream of the pod for this call.",
                            ),
                            q(
                                "tty",
                                "boolean",
                                "TTY if true indicates that a tty will be allocated for the exec call. Defaults to false.",
                            ),
                        ];
                    }
                    ops.push(o);
                }
            }
            _ => {
                if sub_verbs("get") {
                    let mut o = op(
                        "get",
                        format!("read{g}{v}{scope_word}{kind}{suffix}"),
                        format!("read {what}the specified {kind}"),
                        "get",
                    );
                    o.gvk = sub_gvk.clone();
                    if let Some(b) = &body {
                        o.response = b.clone();
                    }
                    ops.push(o);
                }
                if sub_verbs("update") {
                    let mut o = op(
                        "put",
                        format!("replace{g}{v}{scope_word}{kind}{suffix}"),
                        format!("replace {what}the specified {kind}"),
                        "put",
                    );
                    o.gvk = sub_gvk.clone();
                    o.params = write_params();
                    o.request = body.clone();
                    if let Some(b) = &body {
                        o.response = b.clone();
                    }
                    o.created = true;
                    ops.push(o);
                }
                if sub_verbs("patch") {
                    let mut o = op(
                        "patch",
                        format!("patch{g}{v}{scope_word}{kind}{suffix}"),
                        format!("partially update {what}the specified {kind}"),
                        "patch",
                    );
                    o.gvk = sub_gvk.clone();
                    o.params = patch_params();
                    o.request = Some(Body::Schema(PATCH.into()));
                    o.patch_body = true;
                    if let Some(b) = &body {
                        o.response = b.clone();
                    }
                    o.created = true;
                    ops.push(o);
                }
                if sub_verbs("create") {
                    let mut o = op(
                        "post",
                        format!("create{g}{v}{scope_word}{kind}{suffix}"),
                        format!("create {} of a {kind}", sub.kind),
                        "post",
                    );
                    o.gvk = sub_gvk.clone();
                    o.params = write_params();
                    o.request = body.clone();
                    if let Some(b) = &body {
                        o.response = b.clone();
                    }
                    o.created = true;
                    o.accepted = true;
                    ops.push(o);
                }
            }
        }
        if !ops.is_empty() {
            let mut params = vec![name_param(&sub.kind)];
            if ns {
                params.push(ns_param());
            }
            params.push(pretty());
            out.push(PathItem { path, params, ops });
        }
    }

    // All namespaces and watches.
    if has("list")
        && let Some(list) = &names.list
    {
        if ns {
            let mut o = op(
                "get",
                format!("list{g}{v}{kind}ForAllNamespaces"),
                format!("list or watch objects of kind {kind}"),
                "list",
            );
            o.response = Body::Schema(list.clone());
            o.watch = true;
            out.push(PathItem {
                path: format!("{prefix}/{}", def.plural),
                params: all_list_params(),
                ops: vec![o],
            });
        }
        if has("watch") {
            let watch_event = || Body::Schema(WATCH_EVENT.into());
            let watch_collection = if ns {
                format!("{prefix}/watch/namespaces/{{namespace}}/{}", def.plural)
            } else {
                format!("{prefix}/watch/{}", def.plural)
            };
            let mut o = op(
                "get",
                format!("watch{g}{v}{scope_word}{kind}List"),
                format!(
                    "watch individual changes to a list of {kind}. deprecated: use the 'watch' parameter with a list operation instead."
                ),
                "watchlist",
            );
            o.response = watch_event();
            o.watch = true;
            let mut params = all_list_params();
            if ns {
                params.insert(5, ns_param());
            }
            let mut item_params = params.clone();
            item_params.insert(5, name_param(kind));
            out.push(PathItem {
                path: watch_collection.clone(),
                params,
                ops: vec![o],
            });
            let mut o = op(
                "get",
                format!("watch{g}{v}{scope_word}{kind}"),
                format!(
                    "watch changes to an object of kind {kind}. deprecated: use the 'watch' parameter with a list operation instead, filtered to a single item with the 'fieldSelector' parameter."
                ),
                "watch",
            );
            o.response = watch_event();
            o.watch = true;
            out.push(PathItem {
                path: format!("{watch_collection}/{{name}}"),
                params: item_params,
                ops: vec![o],
            });
            if ns {
                let mut o = op(
                    "get",
                    format!("watch{g}{v}{kind}ListForAllNamespaces"),
                    format!(
                        "watch individual changes to a list of {kind}. deprecated: use the 'watch' parameter with a list operation instead."
                    ),
                    "watchlist",
                );
                o.response = watch_event();
                o.watch = true;
                out.push(PathItem {
                    path: format!("{prefix}/watch/{}", def.plural),
                    params: all_list_params(),
                    ops: vec![o],
                });
            }
        }
    }
    out
}

/// List parameters at path level (all-namespaces lists and watches), `pretty` included.
fn all_list_params() -> Vec<Param> {
    let mut p = list_params();
    p.push(q("pretty", "string", PRETTY));
    p.sort_by_key(|p| p.name);
    p
}

/// `GET {prefix}/` answering the group-version's APIResourceList.
pub(crate) fn resources_path(group: &str, version: &str) -> PathItem {
    PathItem {
        path: format!("{}/", gv_prefix(group, version)),
        params: Vec::new(),
        ops: vec![Op {
            method: "get",
            operation_id: format!(
                "get{}{}APIResources",
                group_camel(group),
                capitalize(version)
            ),
            description: "get available resources".into(),
            action: "",
            gvk: None,
            params: Vec::new(),
            request: None,
            patch_body: false,
            custom: false,
            response: Body::Schema(API_RESOURCE_LIST.into()),
            created: false,
            accepted: false,
            watch: false,
            tag: tag(group, version),
        }],
    }
}

/// `GET /api/`, `GET /apis/` or `GET /apis/<group>/`.
pub(crate) fn discovery_path(
    path: &str,
    operation_id: String,
    schema: &str,
    tag: &str,
) -> PathItem {
    PathItem {
        path: path.to_string(),
        params: Vec::new(),
        ops: vec![Op {
            method: "get",
            operation_id,
            description: if schema == API_GROUP {
                "get information of a group".into()
            } else {
                "get available API versions".into()
            },
            action: "",
            gvk: None,
            params: Vec::new(),
            request: None,
            patch_body: false,
            custom: false,
            response: Body::Schema(schema.into()),
            created: false,
            accepted: false,
            watch: false,
            tag: tag.to_string(),
        }],
    }
}

/// The `getAppsAPIGroup`-style id of `GET /apis/<group>/`.
pub(crate) fn group_operation_id(group: &str) -> String {
    format!("get{}APIGroup", group_camel(group))
}

/// The tag of a group's own document (`apps`, `rbacAuthorization`).
pub(crate) fn group_tag(group: &str) -> String {
    let camel = group_camel(group);
    let mut c = camel.chars();
    match c.next() {
        Some(f) => f.to_ascii_lowercase().to_string() + c.as_str(),
        None => String::new(),
    }
}

const RESPONSE_TYPES: &[&str] = &["application/json", "application/yaml"];
const WATCH_TYPES: &[&str] = &[
    "application/json",
    "application/json;stream=watch",
    "application/yaml",
];
const PATCH_TYPES: &[&str] = &[
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
];
const CUSTOM_PATCH_TYPES: &[&str] = &[
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
];

fn v3_schema(body: &Body) -> Value {
    match body {
        Body::Schema(name) => json!({"$ref": format!("{REF_PREFIX}{name}")}),
        Body::Text => json!({"type": "string"}),
    }
}

fn v3_param(p: &Param) -> Value {
    let mut m = Map::new();
    m.insert("description".into(), json!(p.description));
    m.insert("in".into(), json!(p.location));
    m.insert("name".into(), json!(p.name));
    if p.required {
        m.insert("required".into(), json!(true));
    }
    m.insert("schema".into(), json!({"type": p.ty, "uniqueItems": true}));
    Value::Object(m)
}

fn v2_param(p: &Param) -> Value {
    let mut m = Map::new();
    m.insert("description".into(), json!(p.description));
    m.insert("in".into(), json!(p.location));
    m.insert("name".into(), json!(p.name));
    if p.required {
        m.insert("required".into(), json!(true));
    }
    m.insert("type".into(), json!(p.ty));
    m.insert("uniqueItems".into(), json!(true));
    Value::Object(m)
}

fn gvk_value(gvk: &Option<(String, String, String)>) -> Option<Value> {
    gvk.as_ref()
        .map(|(g, v, k)| json!({"group": g, "kind": k, "version": v}))
}

fn v3_op(op: &Op) -> Value {
    let mut m = Map::new();
    m.insert("description".into(), json!(op.description));
    m.insert("operationId".into(), json!(op.operation_id));
    if !op.params.is_empty() {
        m.insert(
            "parameters".into(),
            Value::Array(op.params.iter().map(v3_param).collect()),
        );
    }
    if let Some(req) = &op.request {
        let types: &[&str] = match (op.patch_body, op.custom) {
            (true, false) => PATCH_TYPES,
            (true, true) => CUSTOM_PATCH_TYPES,
            _ => &["*/*"],
        };
        let content: Map<String, Value> = types
            .iter()
            .map(|t| (t.to_string(), json!({"schema": v3_schema(req)})))
            .collect();
        let mut rb = Map::new();
        rb.insert("content".into(), Value::Object(content));
        if op.method != "delete" {
            rb.insert("required".into(), json!(true));
        }
        m.insert("requestBody".into(), Value::Object(rb));
    }
    let types: &[&str] = match op.response {
        Body::Text => &["*/*"],
        _ if op.watch => WATCH_TYPES,
        _ => RESPONSE_TYPES,
    };
    let content: Map<String, Value> = types
        .iter()
        .map(|t| (t.to_string(), json!({"schema": v3_schema(&op.response)})))
        .collect();
    let mut responses = Map::new();
    responses.insert(
        "200".into(),
        json!({"content": content.clone(), "description": "OK"}),
    );
    if op.created {
        responses.insert(
            "201".into(),
            json!({"content": content.clone(), "description": "Created"}),
        );
    }
    if op.accepted {
        responses.insert(
            "202".into(),
            json!({"content": content, "description": "Accepted"}),
        );
    }
    responses.insert("401".into(), json!({"description": "Unauthorized"}));
    m.insert("responses".into(), Value::Object(responses));
    m.insert("tags".into(), json!([op.tag]));
    if !op.action.is_empty() {
        m.insert("x-kubernetes-action".into(), json!(op.action));
    }
    if let Some(gvk) = gvk_value(&op.gvk) {
        m.insert("x-kubernetes-group-version-kind".into(), gvk);
    }
    Value::Object(m)
}

fn v2_op(op: &Op) -> Value {
    let mut m = Map::new();
    let consumes: Vec<&str> = if op.patch_body && op.custom {
        CUSTOM_PATCH_TYPES.to_vec()
    } else if op.patch_body {
        PATCH_TYPES.to_vec()
    } else {
        vec!["*/*"]
    };
    m.insert("consumes".into(), json!(consumes));
    m.insert("description".into(), json!(op.description));
    m.insert("operationId".into(), json!(op.operation_id));
    let mut params: Vec<Value> = Vec::new();
    if let Some(req) = &op.request {
        let schema = match req {
            Body::Schema(name) => json!({"$ref": format!("#/definitions/{name}")}),
            Body::Text => json!({"type": "string"}),
        };
        let mut b = Map::new();
        b.insert("in".into(), json!("body"));
        b.insert("name".into(), json!("body"));
        if op.method != "delete" {
            b.insert("required".into(), json!(true));
        }
        b.insert("schema".into(), schema);
        params.push(Value::Object(b));
    }
    params.extend(op.params.iter().map(v2_param));
    if !params.is_empty() {
        m.insert("parameters".into(), Value::Array(params));
    }
    let produces: &[&str] = match op.response {
        Body::Text => &["text/plain", "application/json", "application/yaml"],
        _ if op.watch => WATCH_TYPES,
        _ => RESPONSE_TYPES,
    };
    m.insert("produces".into(), json!(produces));
    let schema = match &op.response {
        Body::Schema(name) => json!({"$ref": format!("#/definitions/{name}")}),
        Body::Text => json!({"type": "string"}),
    };
    let mut responses = Map::new();
    responses.insert("200".into(), json!({"description": "OK", "schema": schema}));
    if op.created {
        responses.insert(
            "201".into(),
            json!({"description": "Created", "schema": schema}),
        );
    }
    if op.accepted {
        responses.insert(
            "202".into(),
            json!({"description": "Accepted", "schema": schema}),
        );
    }
    responses.insert("401".into(), json!({"description": "Unauthorized"}));
    m.insert("responses".into(), Value::Object(responses));
    m.insert("schemes".into(), json!(["https"]));
    m.insert("tags".into(), json!([op.tag]));
    if !op.action.is_empty() {
        m.insert("x-kubernetes-action".into(), json!(op.action));
    }
    if let Some(gvk) = gvk_value(&op.gvk) {
        m.insert("x-kubernetes-group-version-kind".into(), gvk);
    }
    Value::Object(m)
}

impl PathItem {
    /// The OpenAPI 3.0 path item.
    pub(crate) fn v3(&self) -> Value {
        let mut m = Map::new();
        for op in &self.ops {
            m.insert(op.method.into(), v3_op(op));
        }
        if !self.params.is_empty() {
            m.insert(
                "parameters".into(),
                Value::Array(self.params.iter().map(v3_param).collect()),
            );
        }
        Value::Object(m)
    }

    /// The Swagger 2.0 path item.
    pub(crate) fn v2(&self) -> Value {
        let mut m = Map::new();
        for op in &self.ops {
            m.insert(op.method.into(), v2_op(op));
        }
        if !self.params.is_empty() {
            m.insert(
                "parameters".into(),
                Value::Array(self.params.iter().map(v2_param).collect()),
            );
        }
        Value::Object(m)
    }

    /// The component schemas this path's operations reference.
    pub(crate) fn schema_refs(&self) -> Vec<String> {
        let mut out = Vec::new();
        for op in &self.ops {
            for b in op.request.iter().chain(std::iter::once(&op.response)) {
                if let Body::Schema(name) = b {
                    out.push(name.clone());
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_upstream() {
        assert_eq!(group_camel(""), "Core");
        assert_eq!(group_camel("apps"), "Apps");
        assert_eq!(
            group_camel("rbac.authorization.k8s.io"),
            "RbacAuthorization"
        );
        assert_eq!(
            tag("rbac.authorization.k8s.io", "v1"),
            "rbacAuthorization_v1"
        );
        assert_eq!(tag("", "v1"), "core_v1");
        assert_eq!(group_operation_id("apps"), "getAppsAPIGroup");
    }
}
