//! Bad input against kumo apiserver (issue 3, acceptance 4): malformed, mistyped and oversize
//! bodies, strict field validation, wrong kinds, invalid names, stale and malformed
//! resourceVersions, bad selectors and paging, compacted and too-new watches, unsupported media
//! types, broken patches of all four types, unknown routes and methods, unauthenticated and
//! forbidden callers, garbage protobuf. Each answer is checked against what upstream
//! kube-apiserver sends (HTTP code, `Status` reason, message and field causes where upstream
//! has them); where upstream itself answers 500 for a client's mistake, kumo answers 4xx and
//! the case says so. Afterwards the apiserver must still serve, with no panic in its log.
//!
//! Runs with the apiserver on kumo store and on real etcd. Requests go over HTTP/2 (and a few
//! over HTTP/1.1) with hyper and rustls, one connection each, with client certificates signed
//! by the cluster CA. Mismatches are collected and reported together.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use kumo_auth::{CertAndKey, ClusterPki};
use kumo_tests::{ApiServerProc, StoreKind, free_port, kumo_bin};
use serde_json::{Value, json};

const JSON: &str = "application/json";
const YAML: &str = "application/yaml";
const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";
const MERGE: &str = "application/merge-patch+json";
const JSON_PATCH: &str = "application/json-patch+json";
const SMP: &str = "application/strategic-merge-patch+json";
const APPLY: &str = "application/apply-patch+yaml";

/// One answer.
struct Resp {
    status: u16,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    fn text(&self) -> String {
        let t = String::from_utf8_lossy(&self.body);
        t.chars().take(600).collect()
    }
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
    fn warnings(&self) -> Vec<String> {
        self.headers
            .get_all(http::header::WARNING)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Proto {
    H2,
    H1,
}

/// Who calls.
#[derive(Clone)]
struct Caller {
    h2: Arc<rustls::ClientConfig>,
    h1: Arc<rustls::ClientConfig>,
}

impl Caller {
    fn new(ca_pem: &[u8], cert: Option<&CertAndKey>) -> Result<Caller> {
        let mk = |alpn: &[u8]| -> Result<Arc<rustls::ClientConfig>> {
            let mut c = kumo_auth::tls::client_config(ca_pem, cert)
                .map_err(|e| anyhow!("client TLS config: {e}"))?;
            c.alpn_protocols = vec![alpn.to_vec()];
            Ok(Arc::new(c))
        };
        Ok(Caller {
            h2: mk(b"h2")?,
            h1: mk(b"http/1.1")?,
        })
    }
}

/// A request to send.
struct Req<'a> {
    method: &'a str,
    path: String,
    content_type: Option<&'a str>,
    headers: Vec<(&'a str, String)>,
    body: Bytes,
    proto: Proto,
}

impl<'a> Req<'a> {
    fn new(method: &'a str, path: &str) -> Req<'a> {
        Req {
            method,
            path: path.to_string(),
            content_type: None,
            headers: Vec::new(),
            body: Bytes::new(),
            proto: Proto::H2,
        }
    }
    fn body(mut self, content_type: &'a str, body: impl Into<Bytes>) -> Req<'a> {
        self.content_type = Some(content_type);
        self.body = body.into();
        self
    }
    fn header(mut self, name: &'a str, value: impl Into<String>) -> Req<'a> {
        self.headers.push((name, value.into()));
        self
    }
    fn h1(mut self) -> Req<'a> {
        self.proto = Proto::H1;
        self
    }
}

async fn send(port: u16, caller: &Caller, req: Req<'_>, stream_line: bool) -> Result<Resp> {
    let tls = match req.proto {
        Proto::H2 => caller.h2.clone(),
        Proto::H1 => caller.h1.clone(),
    };
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?.to_owned();
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .context("TLS handshake")?;
    let uri = match req.proto {
        Proto::H2 => format!("https://127.0.0.1:{port}{}", req.path),
        Proto::H1 => req.path.to_string(),
    };
    let mut b = http::Request::builder()
        .method(req.method)
        .uri(uri)
        .header(http::header::USER_AGENT, "kumo-badinput/1.0");
    if req.proto == Proto::H1 {
        b = b.header(http::header::HOST, format!("127.0.0.1:{port}"));
    }
    if let Some(ct) = req.content_type {
        b = b.header(http::header::CONTENT_TYPE, ct);
    }
    for (k, v) in &req.headers {
        b = b.header(*k, v.as_str());
    }
    let request = b.body(Full::new(req.body))?;
    let resp = match req.proto {
        Proto::H2 => {
            let (mut s, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                    .await?;
            tokio::spawn(conn);
            s.send_request(request).await?
        }
        Proto::H1 => {
            let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            s.send_request(request).await?
        }
    };
    let (parts, mut body) = resp.into_parts();
    let mut buf = Vec::new();
    // A watch: the first line is enough (the stream stays open).
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            buf.extend_from_slice(&data);
            if stream_line && buf.contains(&b'\n') {
                break;
            }
        }
    }
    Ok(Resp {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: Bytes::from(buf),
    })
}

/// The suite: a runtime, the server's port, the callers, and the mismatches found so far (all
/// are reported at the end).
struct Suite {
    rt: tokio::runtime::Runtime,
    port: u16,
    admin: Caller,
    failures: RefCell<Vec<String>>,
    checks: RefCell<usize>,
}

impl Suite {
    fn call_as(&self, caller: &Caller, req: Req<'_>) -> Result<Resp> {
        let port = self.port;
        self.rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(60), send(port, caller, req, false))
                .await
                .map_err(|_| anyhow!("no answer in 60 s"))?
        })
    }

    /// Sends as admin; a transport failure is a mismatch (the server must answer).
    fn call(&self, label: &str, req: Req<'_>) -> Option<Resp> {
        let (method, path) = (req.method.to_string(), req.path.to_string());
        match self.call_as(&self.admin, req) {
            Ok(r) => Some(r),
            Err(e) => {
                self.fail(label, format!("{method} {path}: no answer: {e:#}"));
                None
            }
        }
    }

    /// The first line of a watch.
    fn watch_line(&self, label: &str, path: &str) -> Option<(Resp, Value)> {
        let port = self.port;
        let r = self.rt.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(30),
                send(port, &self.admin, Req::new("GET", path), true),
            )
            .await
            .map_err(|_| anyhow!("no event in 30 s"))?
        });
        match r {
            Ok(r) => {
                let line = r.body.split(|b| *b == b'\n').next().unwrap_or_default();
                let v = serde_json::from_slice(line).unwrap_or(Value::Null);
                Some((r, v))
            }
            Err(e) => {
                self.fail(label, format!("watch {path}: {e:#}"));
                None
            }
        }
    }

    fn fail(&self, label: &str, what: String) {
        self.failures.borrow_mut().push(format!("[{label}] {what}"));
    }

    fn check(&self, label: &str, ok: bool, what: impl FnOnce() -> String) -> bool {
        *self.checks.borrow_mut() += 1;
        if !ok {
            self.fail(label, what());
        }
        ok
    }

    /// `r` is a `Status` failure with `code` and `reason` (`""`: none, upstream's plain
    /// errors). Returns the Status.
    fn status(&self, label: &str, r: &Resp, code: u16, reason: &str) -> Value {
        let v = r.json();
        let ok = r.status == code
            && v["kind"] == "Status"
            && v["apiVersion"] == "v1"
            && v["status"] == "Failure"
            && v["code"] == code
            && if reason.is_empty() {
                v.get("reason").is_none()
            } else {
                v["reason"] == reason
            }
            && r.header("content-type")
                .is_some_and(|c| c.starts_with(JSON));
        self.check(label, ok, || {
            format!("want {code} {reason:?}, got HTTP {} {}", r.status, r.text())
        });
        v
    }

    /// Sends `req` as admin and expects a `Status` failure; `message` must be part of its
    /// message.
    fn expect(&self, label: &str, req: Req<'_>, code: u16, reason: &str, message: &str) -> Value {
        let Some(r) = self.call(label, req) else {
            return Value::Null;
        };
        let v = self.status(label, &r, code, reason);
        self.message(label, &v, message);
        v
    }

    fn message(&self, label: &str, v: &Value, part: &str) {
        let m = v["message"].as_str().unwrap_or("");
        self.check(label, m.contains(part), || {
            format!("message {m:.400?} lacks {part:?}")
        });
    }

    /// `v`'s `details.causes` hold (reason, field) pairs `want`, in order.
    fn causes(&self, label: &str, v: &Value, want: &[(&str, &str)]) {
        let got: Vec<(String, String)> = v["details"]["causes"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|c| {
                        (
                            c["reason"].as_str().unwrap_or("").to_string(),
                            c["field"].as_str().unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(r, f)| (r.to_string(), f.to_string()))
            .collect();
        self.check(label, got == want, || {
            format!("causes {got:?}, want {want:?}")
        });
    }

    /// Sends `req` and expects success with `code`.
    fn ok(&self, label: &str, req: Req<'_>, code: u16) -> Option<Resp> {
        let r = self.call(label, req)?;
        self.check(label, r.status == code, || {
            format!("want {code}, got {} {}", r.status, r.text())
        });
        Some(r)
    }
}

fn obj(kind: &str, name: &str, extra: Value) -> Value {
    let av = if kind == "Deployment" {
        "apps/v1"
    } else {
        "v1"
    };
    let mut o = json!({"apiVersion": av, "kind": kind, "metadata": {"name": name}});
    if let (Some(o), Some(e)) = (o.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            o.insert(k.clone(), v.clone());
        }
    }
    o
}

fn deployment(name: &str) -> Value {
    obj(
        "Deployment",
        name,
        json!({"spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "nginx"}]}}}}),
    )
}

const CMS: &str = "/api/v1/namespaces/bad/configmaps";
const DEPLOYS: &str = "/apis/apps/v1/namespaces/bad/deployments";

fn s(v: &Value) -> String {
    v.to_string()
}

// ---- protobuf bodies -----------------------------------------------------------------------

fn varint(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn len_field(tag: u32, data: &[u8], out: &mut Vec<u8>) {
    varint(u64::from(tag) << 3 | 2, out);
    varint(data.len() as u64, out);
    out.extend_from_slice(data);
}

/// `k8s\0` + runtime.Unknown{typeMeta{apiVersion, kind}, raw}.
fn pb_envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    let mut tm = Vec::new();
    len_field(1, api_version.as_bytes(), &mut tm);
    len_field(2, kind.as_bytes(), &mut tm);
    let mut body = b"k8s\0".to_vec();
    len_field(1, &tm, &mut body);
    len_field(2, raw, &mut body);
    body
}

/// A ConfigMap{metadata{name}, data{k: v}} in protobuf.
fn pb_configmap(name: &str) -> Vec<u8> {
    let mut meta = Vec::new();
    len_field(1, name.as_bytes(), &mut meta);
    let mut entry = Vec::new();
    len_field(1, b"k", &mut entry);
    len_field(2, b"v", &mut entry);
    let mut cm = Vec::new();
    len_field(1, &meta, &mut cm);
    len_field(2, &entry, &mut cm);
    pb_envelope("v1", "ConfigMap", &cm)
}

// ---- the cases -----------------------------------------------------------------------------

fn setup(t: &Suite) {
    let l = "setup";
    t.ok(
        l,
        Req::new("POST", "/api/v1/namespaces").body(JSON, s(&obj("Namespace", "bad", json!({})))),
        201,
    );
    for name in ["cm1", "cm2", "cm3"] {
        t.ok(
            l,
            Req::new("POST", CMS).body(
                JSON,
                s(&obj("ConfigMap", name, json!({"data": {"k": "v"}}))),
            ),
            201,
        );
    }
    t.ok(
        l,
        Req::new("POST", DEPLOYS).body(JSON, s(&deployment("web"))),
        201,
    );
}

/// Bodies that do not decode, or decode to the wrong thing (create).
fn bodies(t: &Suite) {
    // json.Unmarshal errors: 400 "the object provided is unrecognized … couldn't get
    // version/kind; json parse error" upstream.
    for (i, body) in [
        "{\"a\":",
        "",
        "{\"metadata\":{\"name\":\"x\"}}}",
        "\u{0}\u{1}binary",
    ]
    .iter()
    .enumerate()
    {
        t.expect(
            &format!("malformed json {i}"),
            Req::new("POST", CMS).body(JSON, *body),
            400,
            "BadRequest",
            "",
        );
    }
    // Not an object: json: cannot unmarshal array/string/number/bool into the type probe.
    for body in ["[1,2]", "\"str\"", "42", "true"] {
        t.expect(
            &format!("non-object {body}"),
            Req::new("POST", CMS).body(JSON, body),
            400,
            "BadRequest",
            "",
        );
    }
    // Nesting past the decoder's depth limit.
    let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
    t.expect(
        "deep json",
        Req::new("POST", CMS).body(JSON, deep),
        400,
        "BadRequest",
        "",
    );
    // YAML: "error converting YAML to JSON" (400).
    t.expect(
        "malformed yaml",
        Req::new("POST", CMS).body(YAML, "a: [\n"),
        400,
        "BadRequest",
        "",
    );
    t.expect(
        "yaml sequence",
        Req::new("POST", CMS).body(YAML, "- a\n- b\n"),
        400,
        "BadRequest",
        "",
    );
    let bomb = "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\nh: [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n";
    t.expect(
        "yaml alias bomb",
        Req::new("POST", CMS).body(YAML, bomb),
        400,
        "BadRequest",
        "",
    );
    t.ok(
        "yaml create",
        Req::new("POST", CMS).body(
            YAML,
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: fromyaml\ndata:\n  a: b\n",
        ),
        201,
    );
    // Wrong kind / apiVersion for the URL: `<Kind> in version "v1" cannot be handled as a
    // ConfigMap: …` (400).
    t.expect(
        "wrong kind",
        Req::new("POST", CMS).body(JSON, s(&obj("Secret", "x", json!({})))),
        400,
        "BadRequest",
        "Secret in version \"v1\" cannot be handled as a ConfigMap",
    );
    t.expect(
        "unknown kind",
        Req::new("POST", CMS).body(JSON, s(&obj("Bogus", "x", json!({})))),
        400,
        "BadRequest",
        "Bogus in version \"v1\" cannot be handled as a ConfigMap",
    );
    t.expect(
        "wrong apiVersion",
        Req::new("POST", CMS).body(
            JSON,
            s(&json!({"apiVersion": "apps/v1", "kind": "ConfigMap", "metadata": {"name": "x"}})),
        ),
        400,
        "BadRequest",
        "",
    );
    t.expect(
        "deployment posted to configmaps",
        Req::new("POST", CMS).body(JSON, s(&deployment("x"))),
        400,
        "BadRequest",
        "",
    );
    // rest.EnsureObjectNamespaceMatchesRequestNamespace.
    t.expect(
        "namespace mismatch",
        Req::new("POST", CMS).body(
            JSON,
            s(&json!({"metadata": {"name": "x", "namespace": "other"}})),
        ),
        400,
        "BadRequest",
        "the namespace of the provided object does not match the namespace sent on the request",
    );
    // Type errors: the typed decode's json.UnmarshalTypeError (400).
    t.expect(
        "replicas: two",
        Req::new("POST", DEPLOYS).body(JSON, {
            let mut d = deployment("typed");
            d["spec"]["replicas"] = json!("two");
            s(&d)
        }),
        400,
        "BadRequest",
        "Deployment in version \"v1\" cannot be handled as a Deployment: json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32",
    );
    t.expect(
        "data: 5",
        Req::new("POST", CMS).body(JSON, s(&json!({"metadata": {"name": "x"}, "data": 5}))),
        400,
        "BadRequest",
        "cannot be handled as a ConfigMap",
    );
    t.expect(
        "metadata: string",
        Req::new("POST", CMS).body(JSON, s(&json!({"metadata": "x"}))),
        400,
        "BadRequest",
        "",
    );
    // Unsupported media types (415).
    for ct in ["text/plain", "application/xml", "application/cbor"] {
        t.expect(
            &format!("media type {ct}"),
            Req::new("POST", CMS).body(ct, "{}"),
            415,
            "UnsupportedMediaType",
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf",
        );
    }
    // Garbage protobuf: the protobuf serializer's errors (400).
    let garbage: Vec<(&str, Vec<u8>)> = vec![
        ("no prefix", b"garbage".to_vec()),
        ("prefix only", b"k8s\0".to_vec()),
        ("truncated varint", b"k8s\0\xff\xff\xff\xff".to_vec()),
        ("truncated field", b"k8s\0\x0a\x05\x0a\x02v1".to_vec()),
        ("unknown kind", pb_envelope("v1", "Bogus", b"")),
        ("bad raw", pb_envelope("v1", "ConfigMap", b"\x0a\x01\xff")),
        (
            "wrong wire type",
            pb_envelope("v1", "ConfigMap", b"\x0b\x0c"),
        ),
        (
            "json in protobuf",
            b"{\"metadata\":{\"name\":\"x\"}}".to_vec(),
        ),
    ];
    for (what, body) in garbage {
        t.expect(
            &format!("protobuf {what}"),
            Req::new("POST", CMS).body(PROTOBUF, body),
            400,
            "BadRequest",
            "",
        );
    }
    // Bytes that are no UTF-8 where a name belongs: decoded (lossily), then an invalid name.
    let mut meta = Vec::new();
    len_field(1, b"\xff\xfe", &mut meta);
    let mut cm = Vec::new();
    len_field(1, &meta, &mut cm);
    let v = t.expect(
        "protobuf garbage name",
        Req::new("POST", CMS).body(PROTOBUF, pb_envelope("v1", "ConfigMap", &cm)),
        422,
        "Invalid",
        "",
    );
    t.causes(
        "protobuf garbage name",
        &v,
        &[("FieldValueInvalid", "metadata.name")],
    );
    t.expect(
        "protobuf namespace to configmaps",
        Req::new("POST", CMS).body(PROTOBUF, pb_envelope("v1", "Namespace", b"")),
        400,
        "BadRequest",
        "",
    );
    t.ok(
        "protobuf create",
        Req::new("POST", CMS).body(PROTOBUF, pb_configmap("frompb")),
        201,
    );
}

/// fieldValidation Strict / Warn / Ignore, duplicate fields, the write options.
fn field_validation(t: &Suite) {
    let unknown = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "strict", "labelz": {"a": "b"}}, "bogus": 1, "data": {"a": "b"}});
    // Strict: `strict decoding error: unknown field "…"` (400).
    let v = t.expect(
        "strict unknown",
        Req::new("POST", &format!("{CMS}?fieldValidation=Strict")).body(JSON, s(&unknown)),
        400,
        "BadRequest",
        "ConfigMap in version \"v1\" cannot be handled as a ConfigMap: strict decoding error: ",
    );
    t.message("strict unknown", &v, "unknown field \"bogus\"");
    t.message("strict unknown", &v, "unknown field \"metadata.labelz\"");
    let dup = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"dup","name":"dup"},"data":{"a":"1","a":"2"}}"#;
    let v = t.expect(
        "strict duplicate",
        Req::new("POST", &format!("{CMS}?fieldValidation=Strict")).body(JSON, dup),
        400,
        "BadRequest",
        "strict decoding error: ",
    );
    t.message("strict duplicate", &v, "duplicate field \"metadata.name\"");
    t.message("strict duplicate", &v, "duplicate field \"data.a\"");
    t.expect(
        "strict unknown on update",
        Req::new("PUT", &format!("{CMS}/cm1?fieldValidation=Strict")).body(
            JSON,
            s(&json!({"metadata": {"name": "cm1"}, "bogus": true})),
        ),
        400,
        "BadRequest",
        "strict decoding error: unknown field \"bogus\"",
    );
    // Warn (the default): created, with `Warning: 299 - "unknown field \"bogus\""`.
    if let Some(r) = t.ok(
        "warn unknown",
        Req::new("POST", &format!("{CMS}?fieldValidation=Warn")).body(JSON, {
            let mut u = unknown.clone();
            u["metadata"]["name"] = json!("warned");
            s(&u)
        }),
        201,
    ) {
        let w = r.warnings();
        t.check(
            "warn unknown",
            w.iter().any(|w| w == r#"299 - "unknown field \"bogus\"""#),
            || format!("warnings {w:?}"),
        );
        t.check(
            "warn unknown",
            w.iter()
                .any(|w| w == r#"299 - "unknown field \"metadata.labelz\"""#),
            || format!("warnings {w:?}"),
        );
        t.check(
            "warn unknown pruned",
            r.json().get("bogus").is_none(),
            || r.text(),
        );
    }
    if let Some(r) = t.ok(
        "warn duplicate",
        Req::new("POST", CMS).body(JSON, dup.replace("dup", "dupwarn")),
        201,
    ) {
        let w = r.warnings();
        t.check(
            "warn duplicate",
            w.iter()
                .any(|w| w == r#"299 - "duplicate field \"metadata.name\"""#),
            || format!("warnings {w:?}"),
        );
    }
    // Ignore: created, no warnings.
    if let Some(r) = t.ok(
        "ignore unknown",
        Req::new("POST", &format!("{CMS}?fieldValidation=Ignore")).body(JSON, {
            let mut u = unknown.clone();
            u["metadata"]["name"] = json!("ignored");
            s(&u)
        }),
        201,
    ) {
        t.check("ignore unknown", r.warnings().is_empty(), || {
            format!("warnings {:?}", r.warnings())
        });
    }
    // The write options: ValidateCreateOptions / ValidateUpdateOptions (422 on the options).
    let body = s(&obj("ConfigMap", "opts", json!({})));
    let v = t.expect(
        "fieldValidation=bogus",
        Req::new("POST", &format!("{CMS}?fieldValidation=bogus")).body(JSON, body.clone()),
        422,
        "Invalid",
        "CreateOptions.meta.k8s.io \"\" is invalid: fieldValidation: Unsupported value: \"bogus\": supported values: \"\", \"Ignore\", \"Strict\", \"Warn\"",
    );
    t.causes(
        "fieldValidation=bogus",
        &v,
        &[("FieldValueNotSupported", "fieldValidation")],
    );
    let v = t.expect(
        "dryRun=bogus",
        Req::new("POST", &format!("{CMS}?dryRun=bogus")).body(JSON, body.clone()),
        422,
        "Invalid",
        "dryRun: Unsupported value: []string{\"bogus\"}: supported values: \"All\"",
    );
    t.causes("dryRun=bogus", &v, &[("FieldValueNotSupported", "dryRun")]);
    let long = "m".repeat(129);
    let v = t.expect(
        "fieldManager too long",
        Req::new("PUT", &format!("{CMS}/cm1?fieldManager={long}"))
            .body(JSON, s(&obj("ConfigMap", "cm1", json!({})))),
        422,
        "Invalid",
        "UpdateOptions.meta.k8s.io \"\" is invalid: fieldManager: Too long: may not be more than 128 bytes",
    );
    t.causes(
        "fieldManager too long",
        &v,
        &[("FieldValueTooLong", "fieldManager")],
    );
    t.expect(
        "fieldManager with a control character",
        Req::new("POST", &format!("{CMS}?fieldManager=a%01b")).body(JSON, body.clone()),
        422,
        "Invalid",
        "fieldManager: Invalid value: ",
    );
    // Reads ignore dryRun, as upstream's GetOptions/ListOptions have none.
    t.ok(
        "get ignores dryRun",
        Req::new("GET", &format!("{CMS}/cm1?dryRun=bogus")),
        200,
    );
    t.ok(
        "dry run create",
        Req::new("POST", &format!("{CMS}?dryRun=All")).body(JSON, body),
        201,
    );
}

/// Invalid names and other validation: 422 with field causes.
fn validation(t: &Suite) {
    let v = t.expect(
        "invalid name",
        Req::new("POST", CMS).body(JSON, s(&obj("ConfigMap", "Bad_Name", json!({})))),
        422,
        "Invalid",
        "ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
    );
    t.causes(
        "invalid name",
        &v,
        &[("FieldValueInvalid", "metadata.name")],
    );
    t.check(
        "invalid name details",
        v["details"]["name"] == "Bad_Name" && v["details"]["kind"] == "ConfigMap",
        || format!("details {}", v["details"]),
    );
    let v = t.expect(
        "no name",
        Req::new("POST", CMS).body(JSON, s(&json!({"metadata": {}}))),
        422,
        "Invalid",
        "ConfigMap \"\" is invalid: metadata.name: Required value: name or generateName is required",
    );
    t.causes("no name", &v, &[("FieldValueRequired", "metadata.name")]);
    let long = "a".repeat(254);
    let v = t.expect(
        "name too long",
        Req::new("POST", CMS).body(JSON, s(&obj("ConfigMap", &long, json!({})))),
        422,
        "Invalid",
        "must be no more than 253 characters",
    );
    t.causes(
        "name too long",
        &v,
        &[("FieldValueInvalid", "metadata.name")],
    );
    let v = t.expect(
        "invalid generateName",
        Req::new("POST", CMS).body(JSON, s(&json!({"metadata": {"generateName": "Bad_"}}))),
        422,
        "Invalid",
        "metadata.generateName: Invalid value: \"Bad_\"",
    );
    t.check(
        "invalid generateName causes",
        v["details"]["causes"][0]["field"] == "metadata.generateName",
        || format!("{}", v["details"]),
    );
    let v = t.expect(
        "invalid namespace name",
        Req::new("POST", "/api/v1/namespaces")
            .body(JSON, s(&obj("Namespace", "Bad.NS", json!({})))),
        422,
        "Invalid",
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'",
    );
    t.causes(
        "invalid namespace name",
        &v,
        &[("FieldValueInvalid", "metadata.name")],
    );
    let v = t.expect(
        "invalid label",
        Req::new("POST", CMS).body(
            JSON,
            s(&json!({"metadata": {"name": "lbl", "labels": {"bad key!": "v"}}})),
        ),
        422,
        "Invalid",
        "metadata.labels: Invalid value: \"bad key!\"",
    );
    t.causes(
        "invalid label",
        &v,
        &[("FieldValueInvalid", "metadata.labels")],
    );
    let v = t.expect(
        "invalid deployment",
        Req::new("POST", DEPLOYS).body(JSON, {
            let mut d = deployment("neg");
            d["spec"]["replicas"] = json!(-1);
            s(&d)
        }),
        422,
        "Invalid",
        "Deployment.apps \"neg\" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0",
    );
    t.causes(
        "invalid deployment",
        &v,
        &[("FieldValueInvalid", "spec.replicas")],
    );
    t.check(
        "invalid deployment details",
        v["details"]["group"] == "apps" && v["details"]["kind"] == "Deployment",
        || format!("{}", v["details"]),
    );
    t.expect(
        "already exists",
        Req::new("POST", CMS).body(JSON, s(&obj("ConfigMap", "cm1", json!({})))),
        409,
        "AlreadyExists",
        "configmaps \"cm1\" already exists",
    );
    t.expect(
        "missing namespace",
        Req::new("POST", "/api/v1/namespaces/nope/configmaps")
            .body(JSON, s(&obj("ConfigMap", "x", json!({})))),
        404,
        "NotFound",
        "namespaces \"nope\" not found",
    );
}

/// Bodies over 3 MiB: 413 (limitedReadBody).
fn oversize(t: &Suite) {
    let big = format!(
        "{{\"metadata\":{{\"name\":\"big\"}},\"data\":{{\"k\":\"{}\"}}}}",
        "a".repeat(3 * 1024 * 1024 + 1024)
    );
    for (method, path, ct) in [
        ("POST", CMS.to_string(), JSON),
        ("PUT", format!("{CMS}/cm1"), JSON),
        ("PATCH", format!("{CMS}/cm1"), MERGE),
        ("POST", CMS.to_string(), YAML),
    ] {
        t.expect(
            &format!("oversize {method} {ct}"),
            Req::new(method, &path).body(ct, big.clone()),
            413,
            "RequestEntityTooLarge",
            "Request entity too large: limit is 3145728",
        );
    }
    // A body just under the limit is read (and then refused for what it is).
    let under = "x".repeat(3 * 1024 * 1024 - 10);
    t.expect(
        "just under the limit",
        Req::new("POST", CMS).body(JSON, under),
        400,
        "BadRequest",
        "",
    );
}

/// PUT: stale resourceVersions, missing objects, mismatched names.
fn updates(t: &Suite) {
    let cm1 = |rv: &str| {
        s(&json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "cm1", "resourceVersion": rv}, "data": {"k": "new"}}))
    };
    let v = t.expect(
        "stale resourceVersion",
        Req::new("PUT", &format!("{CMS}/cm1")).body(JSON, cm1("1")),
        409,
        "Conflict",
        "Operation cannot be fulfilled on configmaps \"cm1\": the object has been modified; please apply your changes to the latest version and try again",
    );
    t.check(
        "stale details",
        v["details"]["name"] == "cm1" && v["details"]["kind"] == "configmaps",
        || format!("{}", v["details"]),
    );
    // Upstream answers a resourceVersion that is not a number with a 500 (strconv error from
    // the storage versioner); kumo: the conflict it is.
    t.expect(
        "resourceVersion abc",
        Req::new("PUT", &format!("{CMS}/cm1")).body(JSON, cm1("abc")),
        409,
        "Conflict",
        "the object has been modified",
    );
    t.expect(
        "update missing",
        Req::new("PUT", &format!("{CMS}/nope")).body(JSON, s(&obj("ConfigMap", "nope", json!({})))),
        404,
        "NotFound",
        "configmaps \"nope\" not found",
    );
    t.expect(
        "update name mismatch",
        Req::new("PUT", &format!("{CMS}/cm1")).body(JSON, s(&obj("ConfigMap", "other", json!({})))),
        400,
        "BadRequest",
        "the name of the object (other) does not match the name on the URL (cm1)",
    );
    t.expect(
        "update malformed",
        Req::new("PUT", &format!("{CMS}/cm1")).body(JSON, "{"),
        400,
        "BadRequest",
        "",
    );
    t.expect(
        "update wrong kind",
        Req::new("PUT", &format!("{CMS}/cm1")).body(JSON, s(&obj("Secret", "cm1", json!({})))),
        400,
        "BadRequest",
        "",
    );
    t.expect(
        "update type error",
        Req::new("PUT", &format!("{DEPLOYS}/web")).body(JSON, {
            let mut d = deployment("web");
            d["spec"]["replicas"] = json!("two");
            s(&d)
        }),
        400,
        "BadRequest",
        "cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32",
    );
}

/// PATCH bodies that are invalid for each of the four patch types.
fn patches(t: &Suite) {
    let cm = format!("{CMS}/cm2");
    let web = format!("{DEPLOYS}/web");
    let p = |ct: &'static str, body: &str| Req::new("PATCH", "").body(ct, body.to_string());
    let at = |path: &str, r: Req<'static>| Req {
        path: path.to_string(),
        ..r
    };
    // Unsupported patch media types (415, the patch types listed).
    for ct in [JSON, "text/plain", PROTOBUF] {
        t.expect(
            &format!("patch as {ct}"),
            at(&cm, p(ct, "{}")),
            415,
            "UnsupportedMediaType",
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json",
        );
    }
    // JSON patch: decode errors 400, failed operations the generic 422, too many ops 413.
    t.expect(
        "json patch object",
        at(&cm, p(JSON_PATCH, r#"{"op":"add"}"#)),
        400,
        "BadRequest",
        "",
    );
    t.expect(
        "json patch malformed",
        at(&cm, p(JSON_PATCH, "[{")),
        400,
        "BadRequest",
        "",
    );
    for (what, body) in [
        ("unknown op", r#"[{"op":"bogus","path":"/data/x"}]"#),
        (
            "failed test",
            r#"[{"op":"test","path":"/data/k","value":"other"}]"#,
        ),
        ("remove missing", r#"[{"op":"remove","path":"/data/nope"}]"#),
        (
            "bad index",
            r#"[{"op":"add","path":"/metadata/finalizers/7","value":"x"}]"#,
        ),
        (
            "replace root by array",
            r#"[{"op":"replace","path":"","value":[1]}]"#,
        ),
    ] {
        t.expect(
            &format!("json patch {what}"),
            at(&cm, p(JSON_PATCH, body)),
            422,
            "Invalid",
            "",
        );
    }
    let ops = format!(
        "[{}]",
        vec![r#"{"op":"test","path":"/data/k","value":"v"}"#; 10_001].join(",")
    );
    t.expect(
        "json patch 10001 ops",
        at(&cm, p(JSON_PATCH, &ops)),
        413,
        "RequestEntityTooLarge",
        "The allowed maximum operations in a JSON patch is 10000, got 10001",
    );
    t.expect(
        "json patch renames",
        at(
            &cm,
            p(
                JSON_PATCH,
                r#"[{"op":"replace","path":"/metadata/name","value":"zz"}]"#,
            ),
        ),
        400,
        "BadRequest",
        "the name of the object (zz) does not match the name on the URL (cm2)",
    );
    // Merge patch.
    t.expect(
        "merge patch array",
        at(&cm, p(MERGE, "[1]")),
        400,
        "BadRequest",
        "error decoding patch: json: cannot unmarshal array into Go value of type map[string]interface {}",
    );
    t.expect(
        "merge patch malformed",
        at(&cm, p(MERGE, "{")),
        400,
        "BadRequest",
        "",
    );
    t.expect(
        "merge patch null",
        at(&cm, p(MERGE, "null")),
        400,
        "BadRequest",
        "Invalid JSON Patch",
    );
    // The patched object does not decode: 422 Invalid on `patch` (applyPatchToCurrentObject).
    let v = t.expect(
        "merge patch type error",
        at(&cm, p(MERGE, r#"{"data":"str"}"#)),
        422,
        "Invalid",
        "json: cannot unmarshal string into Go struct field ConfigMap.data of type map[string]string",
    );
    t.causes(
        "merge patch type error",
        &v,
        &[("FieldValueInvalid", "patch")],
    );
    let v = t.expect(
        "merge patch strict unknown",
        at(
            &format!("{cm}?fieldValidation=Strict"),
            p(MERGE, r#"{"bogus":1}"#),
        ),
        422,
        "Invalid",
        "strict decoding error: unknown field \"bogus\"",
    );
    t.causes(
        "merge patch strict unknown",
        &v,
        &[("FieldValueInvalid", "patch")],
    );
    t.expect(
        "merge patch strict duplicate",
        at(
            &format!("{cm}?fieldValidation=Strict"),
            p(MERGE, r#"{"data":{"a":"1","a":"2"}}"#),
        ),
        422,
        "Invalid",
        "strict decoding error: duplicate field \"data.a\"",
    );
    if let Some(r) = t.ok(
        "merge patch warn unknown",
        at(&cm, p(MERGE, r#"{"bogus":1}"#)),
        200,
    ) {
        let w = r.warnings();
        t.check(
            "merge patch warn unknown",
            w.iter().any(|w| w.contains("unknown field \\\"bogus\\\"")),
            || format!("warnings {w:?}"),
        );
    }
    t.expect(
        "merge patch stale resourceVersion",
        at(&cm, p(MERGE, r#"{"metadata":{"resourceVersion":"1"}}"#)),
        409,
        "Conflict",
        "the object has been modified",
    );
    t.expect(
        "merge patch missing object",
        at(&format!("{CMS}/nope"), p(MERGE, "{}")),
        404,
        "NotFound",
        "configmaps \"nope\" not found",
    );
    t.expect(
        "merge patch namespace",
        at(&cm, p(MERGE, r#"{"metadata":{"namespace":"other"}}"#)),
        400,
        "BadRequest",
        "the namespace of the provided object does not match the namespace sent on the request",
    );
    // Strategic merge patch.
    t.expect(
        "smp malformed",
        at(&web, p(SMP, "{")),
        400,
        "BadRequest",
        "",
    );
    t.expect(
        "smp array",
        at(&web, p(SMP, "[]")),
        400,
        "BadRequest",
        "json: cannot unmarshal array into Go value of type map[string]interface {}",
    );
    // Upstream: a plain error (500 without a reason); kumo: 400 with the same message.
    t.expect(
        "smp unknown directive",
        at(&web, p(SMP, r#"{"$patch":"bogus"}"#)),
        400,
        "BadRequest",
        "unknown patch type: bogus",
    );
    t.expect(
        "smp unknown directive in a list",
        at(&web, p(SMP, r#"{"spec":{"template":{"spec":{"containers":[{"name":"app","$patch":"bogus"}]}}}}"#)),
        400,
        "BadRequest",
        "",
    );
    t.expect(
        "smp scalars in a merge list",
        at(
            &web,
            p(
                SMP,
                r#"{"spec":{"template":{"spec":{"containers":[1,2]}}}}"#,
            ),
        ),
        400,
        "BadRequest",
        "",
    );
    let v = t.expect(
        "smp type error",
        at(&web, p(SMP, r#"{"spec":{"replicas":"two"}}"#)),
        422,
        "Invalid",
        "cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32",
    );
    t.causes("smp type error", &v, &[("FieldValueInvalid", "patch")]);
    // Server-side apply: PatchOptions validation (422), then the body.
    let applied = |name: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  k: applied\n")
    };
    let v = t.expect(
        "apply without fieldManager",
        at(&cm, p(APPLY, &applied("cm2"))),
        422,
        "Invalid",
        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
    );
    t.causes(
        "apply without fieldManager",
        &v,
        &[("FieldValueRequired", "fieldManager")],
    );
    t.expect(
        "apply with empty fieldManager",
        at(&format!("{cm}?fieldManager="), p(APPLY, &applied("cm2"))),
        422,
        "Invalid",
        "fieldManager: Required value",
    );
    let v = t.expect(
        "force on a merge patch",
        at(&format!("{cm}?force=true"), p(MERGE, "{}")),
        422,
        "Invalid",
        "PatchOptions.meta.k8s.io \"\" is invalid: force: Forbidden: may not be specified for non-apply patch",
    );
    t.causes(
        "force on a merge patch",
        &v,
        &[("FieldValueForbidden", "force")],
    );
    t.expect(
        "force=false on a json patch",
        at(&format!("{cm}?force=false"), p(JSON_PATCH, "[]")),
        422,
        "Invalid",
        "force: Forbidden",
    );
    let mgr = format!("{cm}?fieldManager=badinput");
    t.expect(
        "apply bad yaml",
        at(&mgr, p(APPLY, "a: [")),
        400,
        "BadRequest",
        "error decoding YAML",
    );
    t.expect(
        "apply list",
        at(&mgr, p(APPLY, "- 1\n")),
        400,
        "BadRequest",
        "",
    );
    t.expect(
        "apply wrong kind",
        at(
            &mgr,
            p(
                APPLY,
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: cm2\n",
            ),
        ),
        400,
        "BadRequest",
        "",
    );
    // Unknown fields in an apply: upstream's typed conversion refuses them ("field not
    // declared in schema", a 500 there, kubernetes#122480); kumo: 400.
    t.expect(
        "apply strict unknown",
        at(
            &format!("{mgr}&fieldValidation=Strict"),
            p(
                APPLY,
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm2\nbogus: 1\n",
            ),
        ),
        400,
        "BadRequest",
        "",
    );
    t.expect(
        "apply managedFields",
        at(
            &mgr,
            p(
                APPLY,
                &format!(
                    "{}  managedFields: []\n",
                    applied("cm2").replace("data:\n  k: applied\n", "")
                ),
            ),
        ),
        400,
        "BadRequest",
        "metadata.managedFields must be nil",
    );
    // Upstream: "failed to create typed patch object" as a plain error (500, kubernetes#139253);
    // kumo: 400 with the same message.
    t.expect(
        "apply list element without its key",
        at(
            &format!("{web}?fieldManager=badinput"),
            p(APPLY, r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web"},"spec":{"template":{"spec":{"containers":[{"image":"x"}]}}}}"#),
        ),
        400,
        "BadRequest",
        "failed to create typed patch object (/web; apps/v1, Kind=Deployment): .spec.template.spec.containers: element 0: associative list with keys has an element that omits key field \"name\"",
    );
    // (Forced: the fields belong to the manager that created the object.)
    t.expect(
        "apply type error",
        at(
            &format!("{web}?fieldManager=badinput&force=true"),
            p(APPLY, r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web"},"spec":{"replicas":"two"}}"#),
        ),
        400,
        "BadRequest",
        "",
    );
    // A conflict with another manager: 409 with FieldManagerConflict causes (the creator's
    // fields are taken over by force first).
    t.ok(
        "apply owner",
        at(
            &format!("{cm}?fieldManager=owner&force=true"),
            p(APPLY, &applied("cm2")),
        ),
        200,
    );
    let v = t.expect(
        "apply conflict",
        at(&mgr, p(APPLY, &applied("cm2").replace("applied", "mine"))),
        409,
        "Conflict",
        "Apply failed with 1 conflict: conflict with \"owner\": .data.k",
    );
    t.causes("apply conflict", &v, &[("FieldManagerConflict", ".data.k")]);
}

/// DELETE: missing objects, bad options, failed preconditions.
fn deletes(t: &Suite) {
    t.expect(
        "delete missing",
        Req::new("DELETE", &format!("{CMS}/nope")),
        404,
        "NotFound",
        "configmaps \"nope\" not found",
    );
    let v = t.expect(
        "bad propagationPolicy",
        Req::new("DELETE", &format!("{CMS}/cm3?propagationPolicy=Sideways")),
        422,
        "Invalid",
        "propagationPolicy: Unsupported value: \"Sideways\"",
    );
    t.causes(
        "bad propagationPolicy",
        &v,
        &[("FieldValueNotSupported", "propagationPolicy")],
    );
    t.expect(
        "delete dryRun=bogus",
        Req::new("DELETE", &format!("{CMS}/cm3?dryRun=bogus")),
        422,
        "Invalid",
        "DeleteOptions.meta.k8s.io \"\" is invalid: dryRun: Unsupported value",
    );
    t.expect(
        "delete malformed options",
        Req::new("DELETE", &format!("{CMS}/cm3")).body(JSON, "{"),
        400,
        "BadRequest",
        "",
    );
    t.expect(
        "delete uid precondition",
        Req::new("DELETE", &format!("{CMS}/cm3"))
            .body(JSON, s(&json!({"preconditions": {"uid": "not-the-uid"}}))),
        409,
        "Conflict",
        "Precondition failed: UID in precondition: not-the-uid, UID in object meta: ",
    );
    t.expect(
        "delete resourceVersion precondition",
        Req::new("DELETE", &format!("{CMS}/cm3"))
            .body(JSON, s(&json!({"preconditions": {"resourceVersion": "1"}}))),
        409,
        "Conflict",
        "Precondition failed: ResourceVersion in precondition: 1, ResourceVersion in object meta: ",
    );
    t.ok("cm3 survived", Req::new("GET", &format!("{CMS}/cm3")), 200);
}

/// LIST and WATCH parameters.
fn lists(t: &Suite) {
    for (what, q, msg) in [
        (
            "label selector",
            "labelSelector=a%20in%20(",
            "unable to parse requirement",
        ),
        ("label selector value", "labelSelector=a%3D%3D%3Db", ""),
        ("label selector key", "labelSelector=bad%20key%3Dv", ""),
        (
            "field selector",
            "fieldSelector=foo",
            "invalid selector: 'foo'; can't understand 'foo'",
        ),
        (
            "field label",
            "fieldSelector=spec.foo%3D1",
            "field label not supported: spec.foo",
        ),
        ("limit", "limit=abc", ""),
        ("timeoutSeconds", "watch=1&timeoutSeconds=abc", ""),
        ("continue", "continue=garbage", ""),
        ("continue json", "continue=eyJ2IjoxfQ", ""),
        (
            "resourceVersionMatch without resourceVersion",
            "resourceVersionMatch=Exact",
            "resourceVersionMatch is forbidden unless resourceVersion is provided",
        ),
        (
            "resourceVersionMatch value",
            "resourceVersionMatch=Bogus&resourceVersion=1",
            "resourceVersionMatch: Unsupported value: \"Bogus\"",
        ),
        // Upstream: 500 (the storage versioner's error, kubernetes#139485); kumo: 400.
        ("resourceVersion", "resourceVersion=abc", ""),
        ("watch resourceVersion", "watch=1&resourceVersion=abc", ""),
        (
            "negative watch resourceVersion",
            "watch=1&resourceVersion=-1",
            "",
        ),
        ("negative list resourceVersion", "resourceVersion=-1", ""),
        (
            "continue with resourceVersion",
            "continue=garbage&resourceVersion=5",
            "",
        ),
    ] {
        t.expect(
            &format!("bad {what}"),
            Req::new("GET", &format!("{CMS}?{q}")),
            400,
            "BadRequest",
            msg,
        );
    }
    // Non-ASCII field selector values are fine (they used to panic the request).
    if let Some(r) = t.ok(
        "field selector é",
        Req::new(
            "GET",
            &format!("{CMS}?fieldSelector=metadata.name%3D%C3%A9%2Cmetadata.name!%3D%C3%BC"),
        ),
        200,
    ) {
        t.check("field selector é", r.json()["items"] == json!([]), || {
            r.text()
        });
    }
    // A resourceVersion the cache has not seen: 504 Timeout, cause ResourceVersionTooLarge,
    // Retry-After 1 (storage.NewTooLargeResourceVersionError).
    let future = "resourceVersion=99999999";
    if let Some(r) = t.call(
        "list future rv",
        Req::new("GET", &format!("{CMS}?{future}")),
    ) {
        let v = t.status("list future rv", &r, 504, "Timeout");
        t.message(
            "list future rv",
            &v,
            "Too large resource version: 99999999, current: ",
        );
        t.check(
            "list future rv cause",
            v["details"]["causes"][0]["reason"] == "ResourceVersionTooLarge"
                && v["details"]["retryAfterSeconds"] == 1,
            || format!("{}", v["details"]),
        );
        t.check(
            "list future rv Retry-After",
            r.header("retry-after").as_deref() == Some("1"),
            || format!("{:?}", r.headers),
        );
    }
    t.expect(
        "get future rv",
        Req::new("GET", &format!("{CMS}/cm1?{future}")),
        504,
        "Timeout",
        "Too large resource version",
    );
    // A watch from the future: once admitted, upstream's watch cache answers with an ERROR
    // event carrying the 504.
    if let Some((r, ev)) = t.watch_line("watch future rv", &format!("{CMS}?watch=1&{future}")) {
        t.check(
            "watch future rv",
            r.status == 200
                && ev["type"] == "ERROR"
                && ev["object"]["code"] == 504
                && ev["object"]["reason"] == "Timeout"
                && ev["object"]["details"]["causes"][0]["reason"] == "ResourceVersionTooLarge",
            || format!("{} {ev}", r.status),
        );
    }
    // sendInitialEvents without bookmarks (ValidateListOptions: 422).
    t.expect(
        "sendInitialEvents without bookmarks",
        Req::new(
            "GET",
            &format!("{CMS}?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan"),
        ),
        422,
        "Invalid",
        "",
    );
}

/// Unknown routes and methods that are not allowed.
fn routes(t: &Suite) {
    let not_found = "the server could not find the requested resource";
    for (what, method, path) in [
        ("unknown group", "GET", "/apis/bogus.example.com/v1/foos"),
        ("unknown version", "GET", "/apis/apps/v9/deployments"),
        ("unknown resource", "GET", "/api/v1/bogus"),
        (
            "unknown namespaced resource",
            "GET",
            "/api/v1/namespaces/bad/bogus",
        ),
        (
            "unknown subresource",
            "GET",
            "/api/v1/namespaces/bad/configmaps/cm1/bogus",
        ),
        (
            "cluster-scoped under a namespace",
            "GET",
            "/api/v1/namespaces/bad/nodes",
        ),
        (
            "namespaced item without a namespace",
            "GET",
            "/api/v1/configmaps/cm1",
        ),
        ("unknown path", "GET", "/nonexistent"),
        ("unknown group discovery", "GET", "/apis/bogus.example.com"),
        (
            "post to an unknown resource",
            "POST",
            "/api/v1/namespaces/bad/bogus",
        ),
    ] {
        let mut r = Req::new(method, path);
        if method == "POST" {
            r = r.body(JSON, "{}");
        }
        t.expect(&format!("404 {what}"), r, 404, "NotFound", not_found);
    }
    let not_allowed = "the server does not allow this method on the requested resource";
    for (what, method, path) in [
        ("PUT on a collection", "PUT", CMS),
        (
            "POST on an item",
            "POST",
            "/api/v1/namespaces/bad/configmaps/cm1",
        ),
        (
            "DELETE on status",
            "DELETE",
            "/apis/apps/v1/namespaces/bad/deployments/web/status",
        ),
        ("POST across namespaces", "POST", "/api/v1/configmaps"),
        ("DELETE across namespaces", "DELETE", "/api/v1/configmaps"),
        (
            "GET tokenreviews",
            "GET",
            "/apis/authentication.k8s.io/v1/tokenreviews",
        ),
        ("POST /version", "POST", "/version"),
        ("OPTIONS", "OPTIONS", CMS),
    ] {
        let mut r = Req::new(method, path);
        if matches!(method, "POST" | "PUT") {
            r = r.body(JSON, s(&obj("ConfigMap", "cm1", json!({}))));
        }
        t.expect(
            &format!("405 {what}"),
            r,
            405,
            "MethodNotAllowed",
            not_allowed,
        );
    }
    // The same over HTTP/1.1.
    t.expect(
        "http/1.1 malformed",
        Req::new("POST", CMS).body(JSON, "{").h1(),
        400,
        "BadRequest",
        "",
    );
    t.expect(
        "http/1.1 404",
        Req::new("GET", "/api/v1/bogus").h1(),
        404,
        "NotFound",
        not_found,
    );
}

/// Callers without credentials, with bad ones, and without permissions.
fn auth(t: &Suite, cert_dir: &Path, other_ca_dir: &Path) -> Result<()> {
    let ca = std::fs::read(cert_dir.join("ca.crt"))?;
    let anonymous = Caller::new(&ca, None)?;
    for (what, req) in [
        ("list", Req::new("GET", CMS)),
        ("create", Req::new("POST", CMS).body(JSON, "{")),
        ("version", Req::new("GET", "/version")),
        (
            "unknown path",
            Req::new("GET", "/apis/bogus.example.com/v1/foos"),
        ),
        (
            "bearer garbage",
            Req::new("GET", CMS).header("authorization", "Bearer garbage"),
        ),
        (
            "bearer jwt-ish",
            Req::new("GET", CMS).header("authorization", "Bearer a.b.c"),
        ),
        (
            "basic",
            Req::new("GET", CMS).header("authorization", "Basic Zm9vOmJhcg=="),
        ),
        (
            "bootstrap token",
            Req::new("GET", CMS).header("authorization", "Bearer abcdef.0123456789abcdef"),
        ),
    ] {
        let label = format!("401 {what}");
        match t.call_as(&anonymous, req) {
            Ok(r) => {
                let v = t.status(&label, &r, 401, "Unauthorized");
                t.message(&label, &v, "Unauthorized");
            }
            Err(e) => t.fail(&label, format!("no answer: {e:#}")),
        }
    }
    // A certificate from another CA: upstream's x509 authenticator refuses it (401); kumo's
    // TLS layer refuses the handshake. Either way nothing is served.
    let stranger_pki = ClusterPki::load_or_create(other_ca_dir, &[])?;
    let stranger = Caller::new(&ca, Some(stranger_pki.admin()))?;
    if let Ok(r) = t.call_as(&stranger, Req::new("GET", CMS)) {
        t.status("foreign CA", &r, 401, "Unauthorized");
    }
    // A user without any RBAC binding: 403 with upstream's wording.
    let pki = ClusterPki::load_or_create(cert_dir, &["127.0.0.1".into(), "10.96.0.1".into()])?;
    let alice_cert =
        pki.sign_client_cert("alice", &["devs".to_string()], Duration::from_secs(3600))?;
    let alice = Caller::new(&ca, Some(&alice_cert))?;
    for (what, req, msg, kind) in [
        (
            "list",
            Req::new("GET", CMS),
            "configmaps is forbidden: User \"alice\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"bad\"",
            "configmaps",
        ),
        (
            "get",
            Req::new("GET", &format!("{CMS}/cm1")),
            "configmaps \"cm1\" is forbidden: User \"alice\" cannot get resource \"configmaps\" in API group \"\" in the namespace \"bad\"",
            "configmaps",
        ),
        (
            "create",
            Req::new("POST", CMS).body(JSON, s(&obj("ConfigMap", "a", json!({})))),
            "cannot create resource \"configmaps\"",
            "configmaps",
        ),
        (
            "malformed create",
            Req::new("POST", CMS).body(JSON, "{"),
            "cannot create resource \"configmaps\"",
            "configmaps",
        ),
        (
            "patch",
            Req::new("PATCH", &format!("{DEPLOYS}/web")).body(MERGE, "{}"),
            "deployments.apps \"web\" is forbidden: User \"alice\" cannot patch resource \"deployments\" in API group \"apps\" in the namespace \"bad\"",
            "deployments",
        ),
        (
            "cluster list",
            Req::new("GET", "/api/v1/nodes"),
            "nodes is forbidden: User \"alice\" cannot list resource \"nodes\" in API group \"\" at the cluster scope",
            "nodes",
        ),
        (
            "unknown resource",
            Req::new("GET", "/apis/bogus.example.com/v1/foos"),
            "foos.bogus.example.com is forbidden",
            "foos",
        ),
    ] {
        let label = format!("403 {what}");
        match t.call_as(&alice, req) {
            Ok(r) => {
                let v = t.status(&label, &r, 403, "Forbidden");
                t.message(&label, &v, msg);
                t.check(&label, v["details"]["kind"] == kind, || {
                    format!("{}", v["details"])
                });
            }
            Err(e) => t.fail(&label, format!("no answer: {e:#}")),
        }
    }
    // What every authenticated user may do (system:public-info-viewer, system:discovery).
    match t.call_as(&alice, Req::new("GET", "/version")) {
        Ok(r) => {
            t.check("alice /version", r.status == 200, || r.text());
        }
        Err(e) => t.fail("alice /version", format!("{e:#}")),
    }
    Ok(())
}

/// Compaction: continue tokens and exact resourceVersions that are gone (410 Expired), and a
/// watch from before a second apiserver's cache started (410 in an ERROR event).
fn compaction(t: &Suite, api: &ApiServerProc, dir: &Path) -> Result<()> {
    let Some(r) = t.ok(
        "paged list",
        Req::new("GET", &format!("{CMS}?limit=1")),
        200,
    ) else {
        return Ok(());
    };
    let page = r.json();
    let token = page["metadata"]["continue"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let old_rv = page["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("")
        .to_string();
    t.check(
        "paged list",
        !token.is_empty() && !old_rv.is_empty(),
        || page.to_string(),
    );
    // Move on and compact the store up to now.
    t.ok(
        "write after the page",
        Req::new("POST", CMS).body(JSON, s(&obj("ConfigMap", "after", json!({})))),
        201,
    );
    let rt = &t.rt;
    let endpoint = api.store.endpoint();
    rt.block_on(async {
        let mut c = etcd_client::Client::connect([endpoint], None).await?;
        let rev = c
            .get("kumo-badinput", None)
            .await?
            .header()
            .map(|h| h.revision())
            .unwrap_or(0);
        c.compact(rev, None).await?;
        anyhow::Ok(())
    })?;
    let v = t.expect(
        "continue after compaction",
        Req::new("GET", &format!("{CMS}?limit=1&continue={token}")),
        410,
        "Expired",
        "The provided continue parameter is too old to display a consistent list result.",
    );
    let _ = v;
    t.expect(
        "exact resourceVersion after compaction",
        Req::new(
            "GET",
            &format!("{CMS}?resourceVersion={old_rv}&resourceVersionMatch=Exact"),
        ),
        410,
        "Expired",
        "",
    );
    // A second apiserver on the same store: its watch cache starts now, so a watch from the
    // old revision is too old (upstream: "too old resource version: X (Y)" ERROR event).
    let mut attempt = 0;
    let (mut second, s2) = loop {
        attempt += 1;
        let mut second = SecondApiServer::start(api, dir)?;
        let s2 = Suite {
            rt: tokio::runtime::Runtime::new()?,
            port: second.port,
            admin: t.admin.clone(),
            failures: RefCell::new(Vec::new()),
            checks: RefCell::new(0),
        };
        match second.wait_ready(&s2) {
            Ok(()) => break (second, s2),
            // Another test took the port between the check and the bind.
            Err(e)
                if attempt < 5
                    && format!("{e:#}")
                        .to_ascii_lowercase()
                        .contains("address already in use") => {}
            Err(e) => return Err(e),
        }
    };
    if let Some((r, ev)) = s2.watch_line(
        "watch compacted",
        &format!("{CMS}?watch=1&resourceVersion={old_rv}"),
    ) {
        s2.check(
            "watch compacted",
            r.status == 200
                && ev["type"] == "ERROR"
                && ev["object"]["kind"] == "Status"
                && ev["object"]["code"] == 410
                && ev["object"]["reason"] == "Expired"
                && ev["object"]["message"].as_str().is_some_and(|m| {
                    m.starts_with(&format!("too old resource version: {old_rv} ("))
                }),
            || format!("{} {ev}", r.status),
        );
    }
    let log = second.log_text();
    s2.check("second apiserver log", !log.contains("panicked"), || {
        log.clone()
    });
    t.failures.borrow_mut().extend(s2.failures.take());
    *t.checks.borrow_mut() += *s2.checks.borrow();
    second.stop();
    Ok(())
}

/// Another `kumo apiserver` on the first one's store and certificates.
struct SecondApiServer {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
}

impl SecondApiServer {
    fn start(api: &ApiServerProc, dir: &Path) -> Result<SecondApiServer> {
        let port = free_port();
        let log = dir.join("apiserver-2.log");
        let f = std::fs::File::create(&log)?;
        let child = Command::new(kumo_bin())
            .args(["apiserver", "--etcd-servers", &api.store.endpoint()])
            .args([
                "--bind-address",
                "127.0.0.1",
                "--secure-port",
                &port.to_string(),
            ])
            .arg("--cert-dir")
            .arg(&api.cert_dir)
            .arg("--admin-kubeconfig")
            .arg(dir.join("second.kubeconfig"))
            .stdin(Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f)
            .spawn()
            .context("spawn the second apiserver")?;
        Ok(SecondApiServer {
            child: Some(child),
            port,
            log,
        })
    }

    fn wait_ready(&mut self, s: &Suite) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                anyhow::bail!("second apiserver exited with {status}: {}", self.log_text());
            }
            if let Ok(r) = s.call_as(&s.admin, Req::new("GET", "/readyz"))
                && r.status == 200
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                anyhow::bail!("second apiserver not ready: {}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for SecondApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn apiserver_bad_input_kumo() {
    bad_input(StoreKind::Kumo);
}

#[test]
fn apiserver_bad_input_etcd() {
    bad_input(StoreKind::Etcd);
}

fn bad_input(kind: StoreKind) {
    let dir = tempfile::tempdir().expect("tempdir");
    let api = ApiServerProc::start(kind, dir.path(), &[]).expect("start apiserver");
    let admin_cert = CertAndKey {
        cert_pem: std::fs::read_to_string(api.cert_dir.join("admin.crt")).expect("admin.crt"),
        key_pem: std::fs::read_to_string(api.cert_dir.join("admin.key")).expect("admin.key"),
    };
    let ca = std::fs::read(api.cert_dir.join("ca.crt")).expect("ca.crt");
    let t = Suite {
        rt: tokio::runtime::Runtime::new().expect("runtime"),
        port: api.port,
        admin: Caller::new(&ca, Some(&admin_cert)).expect("admin caller"),
        failures: RefCell::new(Vec::new()),
        checks: RefCell::new(0),
    };
    setup(&t);
    bodies(&t);
    field_validation(&t);
    validation(&t);
    oversize(&t);
    updates(&t);
    patches(&t);
    deletes(&t);
    lists(&t);
    routes(&t);
    auth(&t, &api.cert_dir, &dir.path().join("other-ca")).expect("auth cases");
    compaction(&t, &api, dir.path()).expect("compaction cases");

    // Still serving: ready, and a plain write and read work.
    if let Some(r) = t.ok("readyz after", Req::new("GET", "/readyz"), 200) {
        t.check("readyz after", r.text() == "ok", || r.text());
    }
    t.ok(
        "create after",
        Req::new("POST", CMS).body(
            JSON,
            s(&obj(
                "ConfigMap",
                "still-alive",
                json!({"data": {"a": "b"}}),
            )),
        ),
        201,
    );
    t.ok(
        "get after",
        Req::new("GET", &format!("{CMS}/still-alive")),
        200,
    );
    let log = api.log_text();
    let panics: Vec<&str> = log.lines().filter(|l| l.contains("panicked")).collect();
    t.check("no panic in the log", panics.is_empty(), || {
        panics.join("\n")
    });

    let failures = t.failures.take();
    assert!(
        failures.is_empty(),
        "{} of {} checks failed:\n{}\n\napiserver log tail:\n{}",
        failures.len(),
        t.checks.borrow(),
        failures.join("\n"),
        log.lines().rev().take(40).collect::<Vec<_>>().join("\n")
    );
}
