//! The official clients against kumo apiserver: the Python client (`pip install kubernetes`)
//! runs `tests/python/client_e2e.py`; kube-rs drives `Api` and the `watcher`.

use std::process::Command;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kumo_tests::{ApiServerProc, StoreKind, workspace_root};

fn python(kind: StoreKind) {
    let dir = tempfile::tempdir().expect("tempdir");
    let api = ApiServerProc::start(kind, dir.path(), &[]).expect("start apiserver");
    let script = workspace_root().join("tests/python/client_e2e.py");
    let out = Command::new("python3")
        .arg(&script)
        .env("KUBECONFIG", &api.kubeconfig)
        .output()
        .expect("run python3 (cargo xtask test installs the kubernetes client)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python client checks failed:\n{stdout}\n{stderr}\napiserver log:\n{}",
        api.log_text()
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        stdout.contains("all python client checks passed"),
        "{stdout}"
    );
}

#[test]
fn python_client_kumo() {
    python(StoreKind::Kumo);
}

#[test]
fn python_client_etcd() {
    python(StoreKind::Etcd);
}

async fn client_for(api: &ApiServerProc) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(&api.kubeconfig).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("kube config");
    kube::Client::try_from(cfg).expect("client")
}

fn kube_rs(kind: StoreKind) {
    let dir = tempfile::tempdir().expect("tempdir");
    let api = ApiServerProc::start(kind, dir.path(), &[]).expect("start apiserver");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let client = client_for(&api).await;
        let nss: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": "rs"}})).expect("ns");
        nss.create(&PostParams::default(), &ns).await.expect("create ns");
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "rs");

        // A watcher started before the writes sees them all.
        let events = tokio::spawn({
            let cms = cms.clone();
            async move {
                let mut seen = Vec::new();
                let mut stream = watcher(cms, watcher::Config::default()).boxed();
                while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_secs(20), stream.try_next()).await.map(|r| r.ok().flatten()) {
                    if let watcher::Event::Apply(cm) | watcher::Event::InitApply(cm) = &ev {
                        seen.push(format!("apply:{}:{}", cm.metadata.name.clone().unwrap_or_default(), cm.data.clone().unwrap_or_default().get("k").cloned().unwrap_or_default()));
                    }
                    if let watcher::Event::Delete(cm) = &ev {
                        let name = cm.metadata.name.clone().unwrap_or_default();
                        seen.push(format!("delete:{name}"));
                        if name == "b" {
                            break;
                        }
                    }
                }
                seen
            }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        for name in ["a", "b"] {
            let cm: ConfigMap = serde_json::from_value(serde_json::json!({"metadata": {"name": name, "labels": {"app": "x"}}, "data": {"k": "1"}})).expect("cm");
            cms.create(&PostParams::default(), &cm).await.expect("create");
        }
        let got = cms.get("a").await.expect("get");
        assert_eq!(got.data.unwrap_or_default().get("k").map(String::as_str), Some("1"));
        cms.patch("a", &PatchParams::default(), &Patch::Merge(serde_json::json!({"data": {"k": "2"}}))).await.expect("merge");
        cms.patch("a", &PatchParams::default(), &Patch::Strategic(serde_json::json!({"data": {"k": "3"}}))).await.expect("strategic");
        let jp: json_patch::Patch = serde_json::from_value(serde_json::json!([{"op": "replace", "path": "/data/k", "value": "4"}])).expect("json patch");
        cms.patch("a", &PatchParams::default(), &Patch::Json::<()>(jp)).await.expect("json");
        let applied = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "5"}});
        cms.patch("a", &PatchParams::apply("kube-rs").force(), &Patch::Apply(applied)).await.expect("apply");
        assert_eq!(cms.get("a").await.expect("get").data.unwrap_or_default().get("k").map(String::as_str), Some("5"));
        let list = cms.list(&ListParams::default().labels("app=x").limit(1)).await.expect("list");
        assert_eq!(list.items.len(), 1);
        assert!(list.metadata.continue_.is_some(), "paged list has a continue token");
        cms.delete("b", &DeleteParams::default()).await.expect("delete");
        let seen = events.await.expect("watcher task");
        assert!(seen.contains(&"apply:a:1".to_string()), "{seen:?}");
        assert!(seen.contains(&"apply:a:5".to_string()), "{seen:?}");
        assert!(seen.contains(&"delete:b".to_string()), "{seen:?}");
        // events.k8s.io/v1 Events are core v1 Events too (one storage, converted).
        let evs: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), "rs");
        let ev: k8s_openapi::api::events::v1::Event = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "e1"}, "eventTime": "2026-01-01T00:00:00.000000Z",
            "regarding": {"kind": "ConfigMap", "name": "a", "namespace": "rs"},
            "note": "hello", "reason": "Tested", "type": "Normal", "action": "Test",
            "reportingController": "kumo-tests", "reportingInstance": "t1"})).expect("event");
        evs.create(&PostParams::default(), &ev).await.expect("create event");
        let core_events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), "rs");
        let listed = core_events
            .list(&ListParams::default().fields("involvedObject.name=a"))
            .await
            .expect("list core events");
        assert_eq!(listed.items.len(), 1);
        assert_eq!(listed.items[0].message.as_deref(), Some("hello"));
        assert_eq!(listed.items[0].reporting_component.as_deref(), Some("kumo-tests"));
        let back = evs.get("e1").await.expect("get event");
        assert_eq!(back.note.as_deref(), Some("hello"));
        let by_regarding = evs.list(&ListParams::default().fields("regarding.name=a")).await.expect("list");
        assert_eq!(by_regarding.items.len(), 1);
        let err = cms.get("nope").await.expect_err("404");
        match err {
            kube::Error::Api(s) => assert_eq!(s.code, 404),
            other => panic!("unexpected error {other}"),
        }
    });
}

#[test]
fn kube_rs_kumo() {
    kube_rs(StoreKind::Kumo);
}

#[test]
fn kube_rs_etcd() {
    kube_rs(StoreKind::Etcd);
}
