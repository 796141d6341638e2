//! A container's environment as upstream's kubelet builds it: `envFrom` (with prefix), then
//! `env` in order (`value` with `$(VAR)` expansion against what came before,
//! `valueFrom` configMapKeyRef / secretKeyRef / fieldRef / resourceFieldRef), then the
//! `KUBERNETES_SERVICE_*` variables of `default/kubernetes`. Errors carry upstream's
//! messages; they become `CreateContainerConfigError`.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::api::Api;

use crate::context::NodeCtx;
use crate::quantity;

/// ConfigMaps and Secrets a pod references, fetched once per sync (individual GETs: the
/// Node authorizer lets a kubelet read exactly the objects its pods reference).
pub struct RefCache {
    client: kube::Client,
    namespace: String,
    configmaps: HashMap<String, Option<BTreeMap<String, Vec<u8>>>>,
    secrets: HashMap<String, Option<BTreeMap<String, Vec<u8>>>>,
}

impl std::fmt::Debug for RefCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefCache")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// The data of a ConfigMap (`data` and `binaryData`).
pub fn configmap_data(cm: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = cm
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
        .collect();
    for (k, v) in cm.binary_data.iter().flatten() {
        out.insert(k.clone(), v.0.clone());
    }
    out
}

/// The data of a Secret (`data`, plus `stringData` if a client left it).
pub fn secret_data(s: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = s
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    for (k, v) in s.string_data.iter().flatten() {
        out.insert(k.clone(), v.clone().into_bytes());
    }
    out
}

impl RefCache {
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        RefCache {
            client,
            namespace: namespace.to_string(),
            configmaps: HashMap::new(),
            secrets: HashMap::new(),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// `Ok(None)`: the ConfigMap does not exist.
    pub async fn configmap(
        &mut self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
        if let Some(v) = self.configmaps.get(name) {
            return Ok(v.clone());
        }
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
        let v = api
            .get_opt(name)
            .await
            .map_err(|e| format!("couldn't get configMap {}/{name}: {e}", self.namespace))?
            .map(|cm| configmap_data(&cm));
        self.configmaps.insert(name.to_string(), v.clone());
        Ok(v)
    }

    /// `Ok(None)`: the Secret does not exist.
    pub async fn secret(
        &mut self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
        if let Some(v) = self.secrets.get(name) {
            return Ok(v.clone());
        }
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let v = api
            .get_opt(name)
            .await
            .map_err(|e| format!("couldn't get secret {}/{name}: {e}", self.namespace))?
            .map(|s| secret_data(&s));
        self.secrets.insert(name.to_string(), v.clone());
        Ok(v)
    }
}

/// Kubernetes' `$(VAR)` expansion: `$(NAME)` becomes the value when `lookup` knows it and stays
/// as written otherwise; `$$` is an escaped `$`.
pub fn expand(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut i = 0;
    let mut last = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && i + 1 < bytes.len() {
            match bytes[i + 1] {
                b'$' => {
                    out.push_str(&input[last..i]);
                    out.push('$');
                    i += 2;
                    last = i;
                    continue;
                }
                b'(' => {
                    if let Some(close) = input[i + 2..].find(')') {
                        let name = &input[i + 2..i + 2 + close];
                        out.push_str(&input[last..i]);
                        match lookup(name) {
                            Some(v) => out.push_str(&v),
                            None => out.push_str(&input[i..i + 3 + close]),
                        }
                        i += 3 + close;
                        last = i;
                        continue;
                    }
                }
                _ => {}
            }
        }
        i += 1;
    }
    out.push_str(&input[last..]);
    out
}

/// Go's `%q`-ish quoting for downward API label/annotation files.
fn quote(v: &str) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| format!("\"{v}\""))
}

fn map_lines(m: Option<&BTreeMap<String, String>>) -> String {
    m.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A `fieldRef` value (env or downward API volume).
pub fn field_ref(ctx: &NodeCtx, pod: &Pod, path: &str, pod_ip: &str) -> Result<String, String> {
    let m = &pod.metadata;
    let spec = pod.spec.as_ref();
    let bracket = |prefix: &str| -> Option<String> {
        path.strip_prefix(prefix)?
            .strip_prefix("['")?
            .strip_suffix("']")
            .map(str::to_string)
    };
    Ok(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "metadata.labels" => map_lines(m.labels.as_ref()),
        "metadata.annotations" => map_lines(m.annotations.as_ref()),
        "spec.nodeName" => spec
            .and_then(|s| s.node_name.clone())
            .unwrap_or_else(|| ctx.name.clone()),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => ctx.node_ip.clone(),
        "status.podIP" | "status.podIPs" => pod_ip.to_string(),
        _ => {
            if let Some(k) = bracket("metadata.labels") {
                m.labels
                    .as_ref()
                    .and_then(|l| l.get(&k).cloned())
                    .unwrap_or_default()
            } else if let Some(k) = bracket("metadata.annotations") {
                m.annotations
                    .as_ref()
                    .and_then(|l| l.get(&k).cloned())
                    .unwrap_or_default()
            } else {
                return Err(format!("unsupported fieldPath: {path}"));
            }
        }
    })
}

/// A `resourceFieldRef` value: the container's limit (node allocatable when unset) or
/// request, divided by `divisor` and rounded up.
pub fn resource_field_ref(
    ctx: &NodeCtx,
    c: &Container,
    resource: &str,
    divisor: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
) -> Result<String, String> {
    let (kind, name) = resource
        .split_once('.')
        .ok_or_else(|| format!("unsupported container resource : {resource}"))?;
    let alloc = match name {
        "cpu" => ctx.allocatable.cpu_millis as f64 / 1000.0,
        "memory" => ctx.allocatable.memory_bytes as f64,
        "ephemeral-storage" => ctx.allocatable.ephemeral_bytes as f64,
        _ => return Err(format!("unsupported container resource : {resource}")),
    };
    let res = c.resources.as_ref();
    let pick =
        |m: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>| {
            m.and_then(|m| m.get(name))
                .and_then(|q| quantity::parse(&q.0))
        };
    let v = match kind {
        "limits" => pick(res.and_then(|r| r.limits.as_ref())).unwrap_or(alloc),
        "requests" => pick(res.and_then(|r| r.requests.as_ref()))
            .or_else(|| pick(res.and_then(|r| r.limits.as_ref())))
            .unwrap_or(0.0),
        _ => return Err(format!("unsupported container resource : {resource}")),
    };
    let d = divisor
        .and_then(|q| quantity::parse(&q.0))
        .filter(|d| *d > 0.0)
        .unwrap_or(1.0);
    Ok(quantity::ceil(v / d).to_string())
}

/// The `KUBERNETES_SERVICE_*` / `KUBERNETES_PORT*` variables for the cluster's API Service.
pub fn kubernetes_service_env(ip: &str, port: u16) -> Vec<(String, String)> {
    let url = format!("tcp://{ip}:{port}");
    vec![
        ("KUBERNETES_SERVICE_HOST".into(), ip.into()),
        ("KUBERNETES_SERVICE_PORT".into(), port.to_string()),
        ("KUBERNETES_SERVICE_PORT_HTTPS".into(), port.to_string()),
        ("KUBERNETES_PORT".into(), url.clone()),
        (format!("KUBERNETES_PORT_{port}_TCP"), url),
        (format!("KUBERNETES_PORT_{port}_TCP_PROTO"), "tcp".into()),
        (format!("KUBERNETES_PORT_{port}_TCP_PORT"), port.to_string()),
        (format!("KUBERNETES_PORT_{port}_TCP_ADDR"), ip.into()),
    ]
}

fn set(env: &mut Vec<(String, String)>, k: String, v: String) {
    match env.iter_mut().find(|(n, _)| *n == k) {
        Some(slot) => slot.1 = v,
        None => env.push((k, v)),
    }
}

/// The final environment of `c`. `Err` holds upstream's message for
/// `CreateContainerConfigError`.
pub async fn container_env(
    ctx: &NodeCtx,
    pod: &Pod,
    c: &Container,
    pod_ip: &str,
    refs: &mut RefCache,
) -> Result<Vec<(String, String)>, String> {
    let ns = refs.namespace().to_string();
    let mut env: Vec<(String, String)> = Vec::new();
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match refs.configmap(&r.name).await? {
                Some(data) => {
                    for (k, v) in data {
                        set(
                            &mut env,
                            format!("{prefix}{k}"),
                            String::from_utf8_lossy(&v).into_owned(),
                        );
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(format!("configmap \"{}\" not found", r.name)),
            }
        }
        if let Some(r) = &from.secret_ref {
            match refs.secret(&r.name).await? {
                Some(data) => {
                    for (k, v) in data {
                        set(
                            &mut env,
                            format!("{prefix}{k}"),
                            String::from_utf8_lossy(&v).into_owned(),
                        );
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(format!("secret \"{}\" not found", r.name)),
            }
        }
    }
    let service = ctx.shared.kube_service.read().clone();
    let service_env = service
        .map(|(ip, port)| kubernetes_service_env(&ip, port))
        .unwrap_or_default();
    for e in c.env.iter().flatten() {
        let value = if let Some(from) = &e.value_from {
            if let Some(r) = &from.config_map_key_ref {
                match refs.configmap(&r.name).await? {
                    Some(data) => match data.get(&r.key) {
                        Some(v) => String::from_utf8_lossy(v).into_owned(),
                        None if r.optional == Some(true) => continue,
                        None => {
                            return Err(format!(
                                "couldn't find key {} in ConfigMap {ns}/{}",
                                r.key, r.name
                            ));
                        }
                    },
                    None if r.optional == Some(true) => continue,
                    None => return Err(format!("configmap \"{}\" not found", r.name)),
                }
            } else if let Some(r) = &from.secret_key_ref {
                match refs.secret(&r.name).await? {
                    Some(data) => match data.get(&r.key) {
                        Some(v) => String::from_utf8_lossy(v).into_owned(),
                        None if r.optional == Some(true) => continue,
                        None => {
                            return Err(format!(
                                "couldn't find key {} in Secret {ns}/{}",
                                r.key, r.name
                            ));
                        }
                    },
                    None if r.optional == Some(true) => continue,
                    None => return Err(format!("secret \"{}\" not found", r.name)),
                }
            } else if let Some(f) = &from.field_ref {
                field_ref(ctx, pod, &f.field_path, pod_ip)?
            } else if let Some(r) = &from.resource_field_ref {
                let target = match r.container_name.as_deref() {
                    Some(name) if !name.is_empty() && name != c.name => pod
                        .spec
                        .as_ref()
                        .and_then(|s| {
                            s.containers
                                .iter()
                                .chain(s.init_containers.iter().flatten())
                                .find(|x| x.name == name)
                        })
                        .ok_or_else(|| format!("container {name} not found"))?,
                    _ => c,
                };
                resource_field_ref(ctx, target, &r.resource, r.divisor.as_ref())?
            } else {
                String::new()
            }
        } else {
            let raw = e.value.clone().unwrap_or_default();
            let snapshot = env.clone();
            let lookup = |name: &str| {
                snapshot
                    .iter()
                    .chain(service_env.iter())
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            };
            expand(&raw, &lookup)
        };
        set(&mut env, e.name.clone(), value);
    }
    for (k, v) in service_env {
        if !env.iter().any(|(n, _)| *n == k) {
            env.push((k, v));
        }
    }
    Ok(env)
}

/// `command`/`args` with `$(VAR)` expanded against the final environment.
pub fn expand_all(items: &[String], env: &[(String, String)]) -> Vec<String> {
    let lookup = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    items.iter().map(|s| expand(s, &lookup)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_rules() {
        let lookup = |n: &str| (n == "A").then(|| "x".to_string());
        assert_eq!(expand("$(A)-$(B)", &lookup), "x-$(B)");
        assert_eq!(expand("$$(A)", &lookup), "$(A)");
        assert_eq!(expand("a$b$(A", &lookup), "a$b$(A");
        assert_eq!(expand("$(A)$(A)", &lookup), "xx");
        assert_eq!(
            kubernetes_service_env("10.96.0.1", 443)[0],
            (
                "KUBERNETES_SERVICE_HOST".to_string(),
                "10.96.0.1".to_string()
            )
        );
    }
}
