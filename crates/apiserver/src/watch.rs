//! WATCH: a stream of newline-delimited `{"type": …, "object": …}` events from the watch
//! cache, with selector transitions, bookmarks, initial events and `410 Gone`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use kumo_apimachinery::ApiError;
use kumo_registry::ResourceDef;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::api::ListOptions;
use crate::body::Body;
use crate::cache::{CacheEvent, Entry, EventType, Json, WatchError, WatchMsg};
use crate::http::Ctx;
use crate::output;
use crate::request::Output;

/// How often a watcher that allows bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(30);

struct Encoder {
    output: Output,
    def: Arc<ResourceDef>,
    include: kumo_registry::table::IncludeObject,
}

impl Encoder {
    /// A cache event's frame: shared across watchers for plain JSON. An object that left
    /// the watcher's selection is sent, as upstream's watch cache does, as DELETED with its
    /// last state the watcher could see (the version before the change) at the event's
    /// resourceVersion.
    fn cache_event(&self, kind: &'static str, ev: &CacheEvent) -> Bytes {
        if kind == "DELETED"
            && ev.kind != EventType::Deleted
            && let Some(prev) = &ev.prev
        {
            let mut obj = prev.object();
            crate::objects::set_rv(&mut obj, ev.rv);
            return self.object(kind, obj);
        }
        if matches!(self.output, Output::Json | Output::Yaml)
            && !crate::convert::needs_conversion(&self.def)
        {
            return ev.json_frame(kind);
        }
        ev.entry.with_json(|json| self.event(kind, json))
    }

    /// An object's frame for this watcher: the cached JSON as is, or parsed once when it must
    /// be converted to the served version or shown as a Table or metadata.
    fn event(&self, kind: &str, raw: &Json) -> Bytes {
        let convert = crate::convert::needs_conversion(&self.def);
        if !convert && matches!(self.output, Output::Json | Output::Yaml) {
            return crate::cache::json_frame(kind, raw.chunks());
        }
        self.object(kind, raw.parse().unwrap_or(Value::Null))
    }

    /// A parsed object's frame: converted to the served version and shaped for the output.
    fn object(&self, kind: &str, mut obj: Value) -> Bytes {
        if crate::convert::needs_conversion(&self.def) {
            obj = crate::convert::from_storage(&self.def, obj);
        }
        let obj = output::event_object(self.output, &self.def, obj, self.include);
        crate::cache::json_frame(kind, [obj.to_string().as_bytes()])
    }

    fn value(&self, kind: &str, v: &Value) -> Bytes {
        let mut s = json!({"type": kind, "object": v}).to_string();
        s.push('\n');
        Bytes::from(s)
    }

    fn bookmark(&self, rv: i64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj =
            json!({"kind": self.def.kind, "apiVersion": self.def.api_version(), "metadata": meta});
        self.value("BOOKMARK", &obj)
    }
}

/// What a cache event means to this watcher (selector transitions as upstream).
fn translate(opts: &ListOptions, ev: &CacheEvent) -> Option<&'static str> {
    let now = opts.matches(&ev.entry);
    let before = ev.prev.as_ref().is_some_and(|p| opts.matches(p));
    match ev.kind {
        EventType::Deleted => before.then_some("DELETED"),
        _ => match (before, now) {
            (true, true) => Some("MODIFIED"),
            (false, true) => Some("ADDED"),
            (true, false) => Some("DELETED"),
            (false, false) => None,
        },
    }
}

/// Passes one message from the cache on to the client, skipping events at or before
/// `last_rv` (already sent from the history replay). `false` once the client is gone.
async fn forward(
    msg: WatchMsg,
    last_rv: &mut i64,
    opts: &ListOptions,
    enc: &Encoder,
    tx: &mpsc::Sender<Result<Frame<Bytes>, Infallible>>,
) -> bool {
    match msg {
        WatchMsg::Event(ev) => {
            if ev.rv <= *last_rv {
                return true;
            }
            *last_rv = ev.rv;
            match translate(opts, &ev) {
                Some(kind) => tx
                    .send(Ok(Frame::data(enc.cache_event(kind, &ev))))
                    .await
                    .is_ok(),
                None => true,
            }
        }
        WatchMsg::Progress(rev) => {
            *last_rv = (*last_rv).max(rev);
            true
        }
    }
}

/// Starts a watch and returns the streaming response.
pub async fn serve(
    ctx: &Ctx,
    def: Arc<ResourceDef>,
    ns: Option<&str>,
    opts: ListOptions,
) -> Result<Response<Body>, ApiError> {
    let q = &ctx.query;
    let prefix = def.list_prefix(ns);
    let rv = q.resource_version.clone().unwrap_or_default();
    let send_initial = q.raw.contains_key("sendInitialEvents");
    if send_initial && !q.allow_watch_bookmarks && q.send_initial_events {
        return Err(ApiError::invalid(
            "meta.k8s.io",
            "ListOptions",
            "",
            vec![kumo_apimachinery::Cause::forbidden(
                "allowWatchBookmarks",
                "allowWatchBookmarks must be true when sendInitialEvents is set",
            )],
        ));
    }
    let from = if q.send_initial_events || rv.is_empty() || rv == "0" {
        None
    } else {
        let n = rv
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| ApiError::bad_request(format!("invalid resource version: {rv}")))?;
        if !ctx.api.cache.wait_for(n, Duration::from_secs(3)).await {
            // Like upstream's watch cache: past admission, a watch fails with an ERROR event.
            return Ok(error_event(&crate::api::too_large_resource_version(
                n,
                ctx.api.cache.revision(),
            )));
        }
        Some(n)
    };
    if from.is_none() && rv.is_empty() {
        // "Start at most recent": the initial state must be current.
        ctx.api.sync_cache().await?;
    }
    let enc = Encoder {
        output: ctx.output,
        def: def.clone(),
        include: output::include_for(ctx),
    };
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(64);
    let filter: Option<crate::cache::WatchFilter> =
        if opts.labels.is_empty() && opts.fields.is_empty() {
            None
        } else {
            let node_name = opts
                .fields
                .required_value(crate::cache::TRIGGER_FIELD)
                .map(str::to_string);
            let opts = opts.clone();
            Some(crate::cache::WatchFilter {
                matches: Arc::new(move |e: &Entry| opts.matches(e)),
                node_name,
            })
        };
    let watch = ctx.api.cache.watch(&prefix, from, filter);
    let cache = ctx.api.cache.clone();
    let timeout = Duration::from_secs(q.timeout_seconds.unwrap_or(1800 + rand_secs(1800)));
    let bookmarks = q.allow_watch_bookmarks;
    let initial_end = q.send_initial_events;
    crate::metrics::watchers_inc(&def);
    let def_for_metrics = def.clone();
    tokio::spawn(async move {
        let send = |b: Bytes| {
            let tx = tx.clone();
            async move { tx.send(Ok(Frame::data(b))).await.is_ok() }
        };
        let mut w = match watch {
            Ok(w) => w,
            Err(WatchError::TooOld { requested, oldest }) => {
                let status =
                    ApiError::gone(format!("too old resource version: {requested} ({oldest})"))
                        .to_status();
                let _ = send(enc.value("ERROR", &status)).await;
                crate::metrics::watchers_dec(&def_for_metrics);
                return;
            }
        };
        let mut last_rv = w.start_rev;
        for e in std::mem::take(&mut w.initial) {
            if opts.matches(&e) && !send(e.with_json(|json| enc.event("ADDED", json))).await {
                crate::metrics::watchers_dec(&def_for_metrics);
                return;
            }
        }
        if initial_end && !send(enc.bookmark(last_rv, true)).await {
            crate::metrics::watchers_dec(&def_for_metrics);
            return;
        }
        for ev in std::mem::take(&mut w.backlog) {
            last_rv = ev.rv;
            if let Some(kind) = translate(&opts, &ev)
                && !send(enc.cache_event(kind, &ev)).await
            {
                crate::metrics::watchers_dec(&def_for_metrics);
                return;
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut next_bookmark = tokio::time::Instant::now() + BOOKMARK_EVERY;
        loop {
            tokio::select! {
                msg = w.rx.recv() => {
                    match msg {
                        Some(msg) => {
                            if !forward(msg, &mut last_rv, &opts, &enc, &tx).await { break; }
                        }
                        // The cache closed us (we fell behind, or it re-listed).
                        None => break,
                    }
                }
                _ = tokio::time::sleep_until(next_bookmark), if bookmarks => {
                    next_bookmark = tokio::time::Instant::now() + BOOKMARK_EVERY;
                    // Events the filter kept from us advance the bookmark too: read the
                    // cache's revision, then drain what was handed to us before it, so the
                    // bookmark never runs ahead of an event still to be sent.
                    let current = cache.revision();
                    let mut open = true;
                    while open && let Ok(msg) = w.rx.try_recv() {
                        open = forward(msg, &mut last_rv, &opts, &enc, &tx).await;
                    }
                    last_rv = last_rv.max(current);
                    if !open || !send(enc.bookmark(last_rv, false)).await { break; }
                }
                _ = tokio::time::sleep_until(deadline) => break,
                _ = tx.closed() => break,
            }
        }
        crate::metrics::watchers_dec(&def_for_metrics);
    });
    let body = StreamBody::new(ReceiverStream::new(rx)).boxed();
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// A watch response that is one ERROR event carrying `e`'s Status.
fn error_event(e: &ApiError) -> Response<Body> {
    let mut line = json!({"type": "ERROR", "object": e.to_status()}).to_string();
    line.push('\n');
    let mut resp = Response::new(crate::body::full(line));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

fn rand_secs(max: u64) -> u64 {
    let u = uuid::Uuid::new_v4();
    (u.as_u128() % u128::from(max.max(1))) as u64
}
