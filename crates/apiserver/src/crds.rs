//! CustomResourceDefinitions: served resources follow the CRDs in the cache; a new CRD gets
//! its `NamesAccepted`/`Established` conditions; a deleted CRD's objects are removed before
//! its `customresourcecleanup` finalizer is.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tracing::{info, warn};

use crate::api::{Api, Resources};
use crate::objects::{meta_str, now_rfc3339};
use crate::storage::prefix_end;

const CRD_PREFIX: &str = "/registry/apiextensions.k8s.io/customresourcedefinitions/";
const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// Rebuilds the served resources and the OpenAPI documents from the cached CRDs.
pub fn refresh(api: &Api) {
    let (crds, _) = api.cache.list(CRD_PREFIX);
    let mut defs = kumo_registry::builtin();
    for e in &crds {
        let crd = e.object();
        if crd
            .get("metadata")
            .and_then(|m| m.get("deletionTimestamp"))
            .is_some()
        {
            continue;
        }
        match kumo_registry::crd::resource_defs(&crd) {
            Ok(more) => {
                for d in more {
                    if !defs.iter().any(|x| {
                        x.group == d.group && x.version == d.version && x.plural == d.plural
                    }) {
                        defs.push(d);
                    }
                }
            }
            Err(err) => warn!(crd = %e.name(), error = %err, "CRD not served"),
        }
    }
    let openapi = kumo_registry::openapi::OpenApi::new(&defs);
    *api.openapi.write() = Arc::new(openapi);
    *api.resources.write() = Arc::new(Resources::new(defs));
}

async fn reconcile(api: &Api, crd: &Value) {
    let name = meta_str(crd, "name").unwrap_or("").to_string();
    let res = api.resources();
    let Some(def) = res.find("apiextensions.k8s.io", "v1", "customresourcedefinitions") else {
        return;
    };
    let deleting = crd
        .get("metadata")
        .and_then(|m| m.get("deletionTimestamp"))
        .is_some();
    let finalizers = crate::objects::finalizers(crd);
    if deleting {
        if finalizers.iter().any(|f| f == CLEANUP_FINALIZER) {
            // Remove every custom object, then the finalizer.
            let group = crd
                .get("spec")
                .and_then(|s| s.get("group"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let plural = crd
                .get("spec")
                .and_then(|s| s.get("names"))
                .and_then(|n| n.get("plural"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let prefix = format!("/registry/{group}/{plural}/");
            if let Ok(page) = api
                .store
                .range(prefix.as_bytes(), &prefix_end(&prefix), 0, 0)
                .await
            {
                for kv in page.kvs {
                    let _ = api.store.delete(&kv.key, kv.mod_revision).await;
                }
            }
            if let Ok(Some((mut cur, rev))) = api.read_for_write(&def, None, &name).await {
                crate::strategy::remove_finalizer(&mut cur, CLEANUP_FINALIZER);
                if crate::objects::finalizers(&cur).is_empty() {
                    let _ = api.store_delete(&def, None, &name, rev).await;
                } else {
                    let _ = api.store_update(&def, None, &name, cur, rev, false).await;
                }
            }
        }
        return;
    }
    let established = crd
        .get("status")
        .and_then(|s| s.get("conditions"))
        .and_then(Value::as_array)
        .is_some_and(|c| {
            c.iter().any(|x| {
                x.get("type").and_then(Value::as_str) == Some("Established")
                    && x.get("status").and_then(Value::as_str) == Some("True")
            })
        });
    let has_finalizer = finalizers.iter().any(|f| f == CLEANUP_FINALIZER);
    let names = crd
        .get("spec")
        .and_then(|s| s.get("names"))
        .cloned()
        .unwrap_or(json!({}));
    let accepted_same = crd.get("status").and_then(|s| s.get("acceptedNames")) == Some(&names);
    if established && has_finalizer && accepted_same {
        return;
    }
    let Ok(Some((mut cur, rev))) = api.read_for_write(&def, None, &name).await else {
        return;
    };
    if !has_finalizer {
        crate::strategy::add_finalizer(&mut cur, CLEANUP_FINALIZER);
    }
    let now = now_rfc3339();
    let stored: Vec<Value> = cur
        .get("spec")
        .and_then(|s| s.get("versions"))
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                .filter_map(|v| v.get("name").cloned())
                .collect()
        })
        .unwrap_or_default();
    if let Some(o) = cur.as_object_mut() {
        o.insert(
            "status".into(),
            json!({
                "acceptedNames": names,
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now},
                    {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now},
                ],
                "storedVersions": stored,
            }),
        );
    }
    match api.store_update(&def, None, &name, cur, rev, false).await {
        Ok(_) => info!(crd = %name, "CRD established"),
        Err(e) => warn!(crd = %name, error = %e, "could not update CRD status"),
    }
}

/// Follows CRD changes forever.
pub async fn run(api: Arc<Api>) {
    loop {
        let mut w = match api.cache.watch(CRD_PREFIX, None, None) {
            Ok(w) => w,
            Err(_) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        refresh(&api);
        for e in std::mem::take(&mut w.initial) {
            reconcile(&api, &e.object()).await;
        }
        while let Some(msg) = w.rx.recv().await {
            if let crate::cache::WatchMsg::Event(ev) = msg {
                refresh(&api);
                if ev.kind != crate::cache::EventType::Deleted {
                    reconcile(&api, &ev.entry.object()).await;
                }
            }
        }
    }
}
