//! `pods/log`: the apiserver answers from the pod's state what it can (container choice,
//! containers that have not started) and proxies the rest to the pod's kubelet.

use http::Response;
use kumo_apimachinery::ApiError;
use kumo_registry::ResourceDef;
use serde_json::Value;

use crate::body::Body;
use crate::http::Ctx;

/// GET `pods/{name}/log`.
pub async fn pod_log(
    ctx: &Ctx,
    def: &ResourceDef,
    ns: Option<&str>,
    name: &str,
) -> Result<Response<Body>, ApiError> {
    let pod = ctx.api.get(def, ns, name, None).await?.object();
    let names: Vec<String> = pod
        .get("spec")
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|c| c.get("name")?.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let container = match ctx.query.raw.get("container").filter(|c| !c.is_empty()) {
        Some(c) => c.clone(),
        None if names.len() == 1 => names[0].clone(),
        None => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                names.join(" ")
            )));
        }
    };
    let statuses = pod
        .get("status")
        .and_then(|s| s.get("containerStatuses"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let status = statuses
        .iter()
        .find(|s| s.get("name").and_then(Value::as_str) == Some(container.as_str()));
    let started = status.is_some_and(|s| {
        s.get("state")
            .is_some_and(|st| st.get("running").is_some() || st.get("terminated").is_some())
            || s.get("lastState")
                .and_then(|l| l.get("terminated"))
                .is_some()
    });
    if !names.contains(&container) {
        return Err(ApiError::bad_request(format!(
            "container {container} is not valid for pod {name}"
        )));
    }
    if !started {
        let reason = status
            .and_then(|s| s.get("state")?.get("waiting")?.get("reason")?.as_str())
            .unwrap_or("ContainerCreating");
        return Err(ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: {reason}"
        )));
    }
    crate::kubelet_client::proxy_logs(ctx, &pod, &container).await
}
