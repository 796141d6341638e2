//! Per-cluster overrides of a federated Deployment: image (per container or all), replicas,
//! env (merged by name), args, labels, annotations, then RFC 6902 patches. Everything is
//! applied to a copy; a failing patch returns an error so the caller applies nothing.

use serde_json::{Map, Value};

/// One `spec.overrides[]` entry's changes (targets are matched by the caller).
pub fn apply(deploy: &mut Value, ov: &Value) -> Result<(), String> {
    let only = ov.get("container").and_then(Value::as_str);
    if let Some(image) = ov.get("image").and_then(Value::as_str) {
        for c in containers_mut(deploy) {
            if only.is_none_or(|n| c.get("name").and_then(Value::as_str) == Some(n)) {
                c.insert("image".into(), Value::String(image.into()));
            }
        }
    }
    if let Some(env) = ov.get("env").and_then(Value::as_array) {
        for c in containers_mut(deploy) {
            if only.is_some_and(|n| c.get("name").and_then(Value::as_str) != Some(n)) {
                continue;
            }
            let list = c.entry("env").or_insert_with(|| Value::Array(Vec::new()));
            if !list.is_array() {
                *list = Value::Array(Vec::new());
            }
            if let Some(list) = list.as_array_mut() {
                for e in env {
                    let name = e.get("name");
                    if let Some(slot) = list.iter_mut().find(|x| x.get("name") == name) {
                        *slot = e.clone();
                    } else {
                        list.push(e.clone());
                    }
                }
            }
        }
    }
    if let Some(args) = ov.get("args") {
        for c in containers_mut(deploy) {
            if only.is_none_or(|n| c.get("name").and_then(Value::as_str) == Some(n)) {
                c.insert("args".into(), args.clone());
            }
        }
    }
    if let Some(r) = ov.get("replicas") {
        deploy["spec"]["replicas"] = r.clone();
    }
    for (field, key) in [("labels", "labels"), ("annotations", "annotations")] {
        if let Some(m) = ov.get(field).and_then(Value::as_object) {
            let meta = object_at(deploy, "metadata");
            let target = meta.entry(key).or_insert_with(|| Value::Object(Map::new()));
            if let Some(t) = target.as_object_mut() {
                for (k, v) in m {
                    t.insert(k.clone(), v.clone());
                }
            }
        }
    }
    if let Some(patches) = ov.get("patches") {
        let p: json_patch::Patch = serde_json::from_value(patches.clone())
            .map_err(|e| format!("invalid JSON patch: {e}"))?;
        json_patch::patch(deploy, &p).map_err(|e| format!("JSON patch failed: {e}"))?;
    }
    Ok(())
}

fn object_at<'a>(v: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !v.get(key).is_some_and(Value::is_object) {
        v[key] = Value::Object(Map::new());
    }
    match v.get_mut(key) {
        Some(Value::Object(m)) => m,
        _ => unreachable!("just set to an object"),
    }
}

fn containers_mut(deploy: &mut Value) -> Vec<&mut Map<String, Value>> {
    deploy
        .pointer_mut("/spec/template/spec/containers")
        .and_then(Value::as_array_mut)
        .map(|cs| cs.iter_mut().filter_map(Value::as_object_mut).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deploy() -> Value {
        json!({"metadata": {"name": "web"}, "spec": {"replicas": 2, "template": {"spec": {"containers": [
            {"name": "app", "image": "busybox:1", "env": [{"name": "A", "value": "1"}]},
            {"name": "side", "image": "pause:1"}]}}}})
    }

    #[test]
    fn image_env_args_labels() {
        let mut d = deploy();
        apply(
            &mut d,
            &json!({"image": "nginx:2", "container": "app",
            "env": [{"name": "A", "value": "2"}, {"name": "B", "value": "3"}],
            "labels": {"tier": "edge"}, "annotations": {"a": "b"}}),
        )
        .expect("apply");
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["image"],
            "nginx:2"
        );
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][1]["image"],
            "pause:1"
        );
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["env"],
            json!([{"name": "A", "value": "2"}, {"name": "B", "value": "3"}])
        );
        assert_eq!(d["metadata"]["labels"]["tier"], "edge");
        assert_eq!(d["metadata"]["annotations"]["a"], "b");
    }

    #[test]
    fn patches_apply_or_fail_whole() {
        let mut d = deploy();
        apply(
            &mut d,
            &json!({"patches": [{"op": "replace", "path": "/spec/replicas", "value": 5}]}),
        )
        .expect("apply");
        assert_eq!(d["spec"]["replicas"], 5);
        let mut d = deploy();
        let err = apply(
            &mut d,
            &json!({"patches": [{"op": "replace", "path": "/spec/nope/x", "value": 1}]}),
        )
        .expect_err("bad path");
        assert!(err.contains("JSON patch failed"), "{err}");
    }
}
