#!/usr/bin/env python3
"""The official Kubernetes Python client against kumo apiserver: CRUD, selectors, paging,
watch, every patch type, errors. Run by tests/tests/e2e/apiserver_clients.rs with
KUBECONFIG pointing at a fresh apiserver; exits non-zero on the first failed check."""
import sys
import threading
import time

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

config.load_kube_config()
core = client.CoreV1Api()
apps = client.AppsV1Api()
NS = "py"


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


def expect_status(fn, code, what):
    try:
        fn()
    except ApiException as e:
        check(e.status == code, f"{what}: HTTP {e.status} (want {code}) {e.body}")
        return e
    check(False, f"{what}: no error (want {code})")


# namespace + CRUD on configmaps
core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NS)))
ns = core.read_namespace(NS)
check(ns.status.phase == "Active", "namespace is Active")
for i in range(7):
    core.create_namespaced_config_map(NS, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=f"cm{i}", labels={"i": str(i), "parity": "even" if i % 2 == 0 else "odd"}),
        data={"k": str(i)}))
cm = core.read_namespaced_config_map("cm3", NS)
check(cm.data == {"k": "3"} and cm.metadata.uid and cm.metadata.resource_version, "read back a configmap")
cm.data["k"] = "three"
updated = core.replace_namespaced_config_map("cm3", NS, cm)
check(updated.data["k"] == "three", "replace")
check(int(updated.metadata.resource_version) > int(cm.metadata.resource_version), "resourceVersion moves")
cm.data["k"] = "stale"
expect_status(lambda: core.replace_namespaced_config_map("cm3", NS, cm), 409, "stale update is a conflict")
expect_status(lambda: core.read_namespaced_config_map("nope", NS), 404, "missing object")
expect_status(lambda: core.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cm1"))), 409, "duplicate create")
e = expect_status(lambda: core.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="Bad_Name"))), 422, "invalid name")
check("metadata.name" in e.body, "invalid name names the field")

# selectors and paging
odd = core.list_namespaced_config_map(NS, label_selector="parity=odd")
check(sorted(c.metadata.name for c in odd.items) == ["cm1", "cm3", "cm5"], "label selector")
inset = core.list_namespaced_config_map(NS, label_selector="i in (1,2),parity!=odd")
check([c.metadata.name for c in inset.items] == ["cm2"], "set-based selector")
byname = core.list_namespaced_config_map(NS, field_selector="metadata.name=cm4")
check([c.metadata.name for c in byname.items] == ["cm4"], "field selector")
names, cont, pages = [], None, 0
while True:
    page = core.list_namespaced_config_map(NS, limit=3, _continue=cont, label_selector="i")
    pages += 1
    names += [c.metadata.name for c in page.items]
    cont = page.metadata._continue
    if not cont:
        break
check(names == [f"cm{i}" for i in range(7)] and pages == 3, f"paging ({pages} pages)")
# every page shows the list as it was at the first page's resourceVersion
first = core.list_namespaced_config_map(NS, limit=2, label_selector="i")
core.patch_namespaced_config_map("cm3", NS, {"data": {"k": "later"}})
core.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cm2a", labels={"i": "x"})))
rest = core.list_namespaced_config_map(NS, limit=10, _continue=first.metadata._continue, label_selector="i")
check([c.metadata.name for c in rest.items] == [f"cm{i}" for i in range(2, 7)], f"later pages are a snapshot {[c.metadata.name for c in rest.items]}")
check(rest.metadata.resource_version == first.metadata.resource_version and (rest.items[1].data or {}).get("k") != "later", "later pages keep the first page's resourceVersion and contents")
core.delete_namespaced_config_map("cm2a", NS)

# patches: merge, strategic, json, apply
core.patch_namespaced_config_map("cm0", NS, {"metadata": {"labels": {"patched": "merge"}}})
check(core.read_namespaced_config_map("cm0", NS).metadata.labels["patched"] == "merge", "strategic/merge patch via dict")
core.patch_namespaced_config_map("cm0", NS, [{"op": "replace", "path": "/data/k", "value": "json"}])
check(core.read_namespaced_config_map("cm0", NS).data["k"] == "json", "json patch")
dep = client.V1Deployment(
    metadata=client.V1ObjectMeta(name="web"),
    spec=client.V1DeploymentSpec(
        replicas=1,
        selector=client.V1LabelSelector(match_labels={"app": "web"}),
        template=client.V1PodTemplateSpec(
            metadata=client.V1ObjectMeta(labels={"app": "web"}),
            spec=client.V1PodSpec(containers=[client.V1Container(name="web", image="busybox:1.36", env=[client.V1EnvVar(name="A", value="1")])]))))
apps.create_namespaced_deployment(NS, dep)
apps.patch_namespaced_deployment("web", NS, {"spec": {"template": {"spec": {"containers": [{"name": "web", "env": [{"name": "B", "value": "2"}]}]}}}})
d = apps.read_namespaced_deployment("web", NS)
envs = sorted(e.name for e in d.spec.template.spec.containers[0].env)
check(envs == ["A", "B"], f"strategic merge patch merges env by name ({envs})")
check(d.spec.strategy.type == "RollingUpdate" and d.spec.revision_history_limit == 10, "deployment defaults")
core.patch_namespaced_config_map("cm1", NS, {"data": {"k": "merged"}}, _content_type="application/merge-patch+json")
check(core.read_namespaced_config_map("cm1", NS).data["k"] == "merged", "merge patch")
body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied", "namespace": NS}, "data": {"a": "1"}}
core.patch_namespaced_config_map("applied", NS, body, field_manager="py", _content_type="application/apply-patch+yaml")
check(core.read_namespaced_config_map("applied", NS).data == {"a": "1"}, "server-side apply creates")
body["data"]["a"] = "2"
e = expect_status(lambda: core.patch_namespaced_config_map("applied", NS, body, field_manager="other", _content_type="application/apply-patch+yaml"), 409, "apply by another manager conflicts")
check("conflict" in e.body, "conflict message")
core.patch_namespaced_config_map("applied", NS, body, field_manager="other", force=True, _content_type="application/apply-patch+yaml")
check(core.read_namespaced_config_map("applied", NS).data == {"a": "2"}, "forced apply takes over")

# scale subresource
apps.patch_namespaced_deployment_scale("web", NS, {"spec": {"replicas": 3}})
check(apps.read_namespaced_deployment_scale("web", NS).spec.replicas == 3, "scale subresource")

# watch
events = []
rv = core.list_namespaced_config_map(NS).metadata.resource_version


def watcher():
    w = watch.Watch()
    for ev in w.stream(core.list_namespaced_config_map, NS, resource_version=rv, timeout_seconds=20):
        events.append((ev["type"], ev["object"].metadata.name))
        if ev["type"] == "DELETED" and ev["object"].metadata.name == "watched":
            w.stop()


t = threading.Thread(target=watcher)
t.start()
time.sleep(1)
core.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="watched")))
core.patch_namespaced_config_map("watched", NS, {"data": {"x": "y"}})
core.delete_namespaced_config_map("watched", NS)
t.join(30)
check(events == [("ADDED", "watched"), ("MODIFIED", "watched"), ("DELETED", "watched")], f"watch events {events}")

# a label-selector watch sees an object that stops matching as DELETED: its last matching
# state, at the resourceVersion of the change (upstream's watch cache)
sel_events = []
rv = core.list_namespaced_config_map(NS).metadata.resource_version


def sel_watcher():
    w = watch.Watch()
    for ev in w.stream(core.list_namespaced_config_map, NS, label_selector="tier=web", resource_version=rv, timeout_seconds=20):
        o = ev["object"]
        sel_events.append((ev["type"], o.metadata.name, (o.metadata.labels or {}).get("tier"), o.metadata.resource_version))
        if ev["type"] == "DELETED":
            w.stop()


t = threading.Thread(target=sel_watcher)
t.start()
time.sleep(1)
core.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="tiered", labels={"tier": "web"})))
moved = core.patch_namespaced_config_map("tiered", NS, {"metadata": {"labels": {"tier": "db"}}})
t.join(30)
check([e[:3] for e in sel_events] == [("ADDED", "tiered", "web"), ("DELETED", "tiered", "web")], f"selector watch events {sel_events}")
check(sel_events[-1][3] == moved.metadata.resource_version, f"DELETED on leaving the selection carries the change's resourceVersion {sel_events} {moved.metadata.resource_version}")

# delete
st = core.delete_namespaced_config_map("cm6", NS)
status = st.get("status") if isinstance(st, dict) else st.status
check(status == "Success", "delete returns a Status")
expect_status(lambda: core.read_namespaced_config_map("cm6", NS), 404, "deleted object is gone")
print("all python client checks passed")
