//! What a fresh cluster has before anyone writes: the system namespaces, their default
//! ServiceAccounts and `kube-root-ca.crt`, the `kubernetes` Service, the system
//! PriorityClasses and the RBAC bootstrap policy. Creates what is missing; never overwrites.

use std::sync::Arc;

use kumo_apimachinery::ApiError;
use serde_json::{Value, json};
use tracing::info;

use crate::api::Api;
use crate::storage::WriteOutcome;

const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

async fn ensure(
    api: &Api,
    plural: &str,
    group: &str,
    ns: Option<&str>,
    mut obj: Value,
) -> Result<bool, ApiError> {
    let res = api.resources();
    let def = res
        .all
        .iter()
        .find(|d| d.plural == plural && d.group == group)
        .cloned()
        .ok_or_else(|| ApiError::internal(format!("{plural} not served")))?;
    let name = crate::objects::meta_str(&obj, "name")
        .unwrap_or("")
        .to_string();
    if let (Some(ns), Some(m)) = (ns, obj.get_mut("metadata").and_then(Value::as_object_mut)) {
        m.insert("namespace".into(), json!(ns));
    }
    crate::schema::apply_defaults(&def, &mut obj);
    crate::strategy::prepare_create(&def, &mut obj);
    let bytes = serde_json::to_vec(&obj).map_err(|e| ApiError::internal(e.to_string()))?;
    match api
        .store
        .create(&def.key(ns, &name), bytes)
        .await
        .map_err(crate::api::store_error)?
    {
        WriteOutcome::Ok(_) => Ok(true),
        WriteOutcome::Conflict(_) => Ok(false),
    }
}

/// Creates the bootstrap objects that are missing.
pub async fn run(
    api: &Arc<Api>,
    service_ip: &str,
    advertise: &str,
    port: u16,
) -> Result<(), ApiError> {
    let mut created = 0;
    for ns in SYSTEM_NAMESPACES {
        let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        created += usize::from(ensure(api, "namespaces", "", None, obj).await?);
        let sa =
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}});
        created += usize::from(ensure(api, "serviceaccounts", "", Some(ns), sa).await?);
        let ca = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "kube-root-ca.crt", "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
            "data": {"ca.crt": api.ca_pem}});
        created += usize::from(ensure(api, "configmaps", "", Some(ns), ca).await?);
    }
    let svc = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"type": "ClusterIP", "clusterIP": service_ip, "clusterIPs": [service_ip],
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}],
            "sessionAffinity": "None"}});
    created += usize::from(ensure(api, "services", "", Some("default"), svc).await?);
    let ep = json!({"apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": advertise}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]});
    created += usize::from(ensure(api, "endpoints", "", Some("default"), ep).await?);
    for (name, value, desc) in [
        (
            "system-cluster-critical",
            2_000_000_000,
            "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
        ),
        (
            "system-node-critical",
            2_000_001_000,
            "Used for system critical pods that must not be moved from their current node.",
        ),
    ] {
        let pc = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": name}, "value": value, "description": desc, "preemptionPolicy": "PreemptLowerPriority"});
        created +=
            usize::from(ensure(api, "priorityclasses", "scheduling.k8s.io", None, pc).await?);
    }
    let policy = kumo_auth::bootstrap_policy().map_err(|e| ApiError::internal(e.to_string()))?;
    let roles = kumo_auth::rbac::aggregate_all(&policy.cluster_roles)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    for role in &roles {
        let mut v = serde_json::to_value(role).map_err(|e| ApiError::internal(e.to_string()))?;
        v["apiVersion"] = json!("rbac.authorization.k8s.io/v1");
        v["kind"] = json!("ClusterRole");
        created +=
            usize::from(ensure(api, "clusterroles", "rbac.authorization.k8s.io", None, v).await?);
    }
    for b in &policy.cluster_role_bindings {
        let mut v = serde_json::to_value(b).map_err(|e| ApiError::internal(e.to_string()))?;
        v["apiVersion"] = json!("rbac.authorization.k8s.io/v1");
        v["kind"] = json!("ClusterRoleBinding");
        created += usize::from(
            ensure(
                api,
                "clusterrolebindings",
                "rbac.authorization.k8s.io",
                None,
                v,
            )
            .await?,
        );
    }
    created += cluster_info(api, &format!("https://{advertise}:{port}")).await?;
    info!(created, "bootstrap objects ensured");
    Ok(())
}

/// kubeadm's discovery objects: the `kube-public/cluster-info` ConfigMap (a kubeconfig with
/// only the server URL and CA, which a joining kubelet reads with its bootstrap token and
/// checks against the token's JWS and the pinned CA hash), and a Role + RoleBinding letting
/// `system:bootstrappers` and `system:anonymous` read it. A stale `kubeconfig` (the server URL
/// moved) is rewritten; the bootstrap signer then re-signs it.
async fn cluster_info(api: &Arc<Api>, server_url: &str) -> Result<usize, ApiError> {
    use kumo_auth::authn::bootstrap::{
        CLUSTER_INFO_KUBECONFIG_KEY, CLUSTER_INFO_NAME, CLUSTER_INFO_NAMESPACE,
    };
    let kubeconfig = kumo_auth::join::cluster_info_kubeconfig(server_url, &api.ca_pem)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let mut created = 0;
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": CLUSTER_INFO_NAME},
        "data": {CLUSTER_INFO_KUBECONFIG_KEY: kubeconfig}});
    let key = format!("/registry/configmaps/{CLUSTER_INFO_NAMESPACE}/{CLUSTER_INFO_NAME}");
    if ensure(api, "configmaps", "", Some(CLUSTER_INFO_NAMESPACE), cm).await? {
        created += 1;
    } else {
        let (kv, _) = api.store.get(&key).await.map_err(crate::api::store_error)?;
        if let Some(kv) = kv
            && let Ok(mut cur) = serde_json::from_slice::<Value>(&kv.value)
            && cur
                .pointer(&format!("/data/{CLUSTER_INFO_KUBECONFIG_KEY}"))
                .and_then(Value::as_str)
                != Some(kubeconfig.as_str())
        {
            let data = cur
                .as_object_mut()
                .map(|o| o.entry("data").or_insert_with(|| json!({})));
            if let Some(Value::Object(d)) = data {
                d.insert(CLUSTER_INFO_KUBECONFIG_KEY.into(), json!(kubeconfig));
            }
            let bytes = serde_json::to_vec(&cur).map_err(|e| ApiError::internal(e.to_string()))?;
            match api
                .store
                .update(&key, bytes, kv.mod_revision)
                .await
                .map_err(crate::api::store_error)?
            {
                WriteOutcome::Ok(_) => {
                    info!(server = %server_url, "cluster-info kubeconfig updated")
                }
                WriteOutcome::Conflict(_) => {
                    return Err(ApiError::conflict(
                        "",
                        "configmaps",
                        CLUSTER_INFO_NAME,
                        "cluster-info changed while being updated",
                    ));
                }
            }
        }
    }
    let name = "kumo:bootstrap-signer-clusterinfo";
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": name},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [CLUSTER_INFO_NAME], "verbs": ["get"]}]});
    created += usize::from(
        ensure(
            api,
            "roles",
            "rbac.authorization.k8s.io",
            Some(CLUSTER_INFO_NAMESPACE),
            role,
        )
        .await?,
    );
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
    "metadata": {"name": name},
    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
    "subjects": [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": kumo_auth::authn::bootstrap::DEFAULT_GROUP},
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:anonymous"},
    ]});
    created += usize::from(
        ensure(
            api,
            "rolebindings",
            "rbac.authorization.k8s.io",
            Some(CLUSTER_INFO_NAMESPACE),
            binding,
        )
        .await?,
    );
    Ok(created)
}
