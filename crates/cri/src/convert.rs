//! Pure translations between the runtime trait's types and CRI messages, kept apart from the
//! gRPC plumbing so they can be checked without a runtime.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use kumo_runtime::{
    ContainerConfig, ContainerState, ContainerStatus, ImageInfo, Resources, Result, RuntimeError,
    SandboxConfig, SandboxState, SandboxStatus,
};

use crate::pb;

/// Labels upstream's kubelet puts on every sandbox and container; `crictl pods/ps` and
/// containerd's own tooling show them, and they identify the pod after a kubelet restart.
const POD_NAME: &str = "io.kubernetes.pod.name";
const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
const POD_UID: &str = "io.kubernetes.pod.uid";
const CONTAINER_NAME: &str = "io.kubernetes.container.name";

/// CFS period the kubelet uses (100 ms), in microseconds.
const CPU_PERIOD_US: i64 = 100_000;
/// cgroup v1 minimum `cpu.shares`; upstream gives best-effort containers this.
const MIN_CPU_SHARES: i64 = 2;

fn pod_labels(sandbox: &SandboxConfig) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = sandbox
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels
        .entry(POD_NAME.to_string())
        .or_insert_with(|| sandbox.name.clone());
    labels
        .entry(POD_NAMESPACE.to_string())
        .or_insert_with(|| sandbox.namespace.clone());
    labels
        .entry(POD_UID.to_string())
        .or_insert_with(|| sandbox.pod_uid.clone());
    labels
}

fn namespace_options(host_network: bool) -> pb::NamespaceOption {
    pb::NamespaceOption {
        network: if host_network {
            pb::NamespaceMode::Node
        } else {
            pb::NamespaceMode::Pod
        } as i32,
        // v1 pods default to a PID namespace per container (shareProcessNamespace=false).
        pid: pb::NamespaceMode::Container as i32,
        ipc: pb::NamespaceMode::Pod as i32,
        target_id: String::new(),
    }
}

/// Kubernetes' CPU/memory bounds as cgroup settings, the way upstream's kubelet computes them
/// (`cpu.shares` from the request, CFS quota from the limit over a 100 ms period).
pub(crate) fn linux_resources(r: &Resources) -> pb::LinuxContainerResources {
    let mut out = pb::LinuxContainerResources::default();
    let shares_from = r.cpu_request_millis.or(r.cpu_limit_millis);
    out.cpu_shares = match shares_from {
        Some(m) => (i64::try_from(m).unwrap_or(i64::MAX / 1024) * 1024 / 1000).max(MIN_CPU_SHARES),
        None => MIN_CPU_SHARES,
    };
    if let Some(limit) = r.cpu_limit_millis {
        out.cpu_period = CPU_PERIOD_US;
        // quota = limit(millicores) * period / 1000, at least 1 ms (the kernel's minimum).
        out.cpu_quota = (i64::try_from(limit).unwrap_or(i64::MAX / CPU_PERIOD_US) * CPU_PERIOD_US
            / 1000)
            .max(1000);
    }
    if let Some(mem) = r.memory_limit_bytes {
        out.memory_limit_in_bytes = i64::try_from(mem).unwrap_or(i64::MAX);
    }
    out
}

/// The pod's `PodSandboxConfig`: sent on `RunPodSandbox` and again, unchanged, with every
/// `CreateContainer` (CRI wants the same config both times).
pub(crate) fn sandbox_config(c: &SandboxConfig) -> pb::PodSandboxConfig {
    let dns_config = if c.dns_servers.is_empty() && c.dns_searches.is_empty() {
        // Absent: containerd copies the node's resolv.conf, upstream's `Default` DNS policy.
        None
    } else {
        Some(pb::DnsConfig {
            servers: c.dns_servers.clone(),
            searches: c.dns_searches.clone(),
            options: if c.dns_servers.is_empty() {
                Vec::new()
            } else {
                vec!["ndots:5".to_string()]
            },
        })
    };
    let resources = c.resources;
    pb::PodSandboxConfig {
        metadata: Some(pb::PodSandboxMetadata {
            name: c.name.clone(),
            uid: c.pod_uid.clone(),
            namespace: c.namespace.clone(),
            attempt: 0,
        }),
        // CRI: the hostname may (and with the host's UTS namespace must) be empty for NODE
        // networking; the pod then sees the node's hostname, as upstream.
        hostname: if c.host_network {
            String::new()
        } else {
            c.hostname.clone()
        },
        log_directory: c.log_directory.to_string_lossy().into_owned(),
        dns_config,
        port_mappings: Vec::new(),
        labels: pod_labels(c),
        annotations: HashMap::new(),
        linux: Some(pb::LinuxPodSandboxConfig {
            cgroup_parent: String::new(),
            security_context: Some(pb::LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options(c.host_network)),
                // containerd refuses a privileged container in a sandbox not created
                // privileged, and `SandboxConfig` does not say whether the pod has one (upstream
                // sets this when any container is). Allowing it always only drops seccomp from
                // the pause process; whether a pod may be privileged is decided at admission.
                privileged: true,
                ..Default::default()
            }),
            sysctls: HashMap::new(),
            overhead: None,
            resources: (resources != Resources::default()).then(|| linux_resources(&resources)),
        }),
    }
}

pub(crate) fn sandbox_status(s: &pb::PodSandboxStatus) -> SandboxStatus {
    let host_network = s
        .linux
        .as_ref()
        .and_then(|l| l.namespaces.as_ref())
        .and_then(|n| n.options.as_ref())
        .is_some_and(|o| o.network() == pb::NamespaceMode::Node);
    let ip = s
        .network
        .as_ref()
        .map(|n| n.ip.clone())
        .filter(|ip| !ip.is_empty())
        .or_else(|| host_network.then(node_ip).flatten());
    SandboxStatus {
        id: s.id.clone(),
        state: match s.state() {
            pb::PodSandboxState::SandboxReady => SandboxState::Ready,
            pb::PodSandboxState::SandboxNotready => SandboxState::NotReady,
        },
        ip,
    }
}

/// The node's primary address for hostNetwork pods (the CRI leaves their IP empty): the
/// source address of the default route, found without sending anything.
fn node_ip() -> Option<String> {
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    sock.connect("192.0.2.1:9").ok()?;
    let ip = sock.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then(|| ip.to_string())
}

/// The log path as CRI wants it: relative to the sandbox's `log_directory`.
fn relative_log_path(log_path: &Path, log_directory: &Path) -> Result<String> {
    if log_path.as_os_str().is_empty() {
        return Ok(String::new());
    }
    match log_path.strip_prefix(log_directory) {
        Ok(rel) if !rel.as_os_str().is_empty() => Ok(rel.to_string_lossy().into_owned()),
        _ => Err(RuntimeError::Invalid(format!(
            "container log path {} is not under the pod log directory {}: the CRI only takes \
             a path relative to it",
            log_path.display(),
            log_directory.display()
        ))),
    }
}

fn btree_to_hash(m: &BTreeMap<String, String>) -> HashMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

pub(crate) fn container_config(
    c: &ContainerConfig,
    sandbox: &SandboxConfig,
) -> Result<pb::ContainerConfig> {
    if c.image.is_empty() {
        return Err(RuntimeError::Invalid(format!(
            "container {}: no image",
            c.name
        )));
    }
    let mut labels = btree_to_hash(&c.labels);
    for (k, v) in pod_labels(sandbox) {
        if k.starts_with("io.kubernetes.pod.") {
            labels.entry(k).or_insert(v);
        }
    }
    labels
        .entry(CONTAINER_NAME.to_string())
        .or_insert_with(|| c.name.clone());
    Ok(pb::ContainerConfig {
        metadata: Some(pb::ContainerMetadata {
            name: c.name.clone(),
            attempt: c.attempt,
        }),
        image: Some(pb::ImageSpec {
            image: c.image.clone(),
            annotations: HashMap::new(),
        }),
        command: c.command.clone(),
        args: c.args.clone(),
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs: c
            .env
            .iter()
            .map(|(k, v)| pb::KeyValue {
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
        mounts: c
            .mounts
            .iter()
            .map(|m| pb::Mount {
                container_path: m.container_path.clone(),
                host_path: m.host_path.to_string_lossy().into_owned(),
                readonly: m.read_only,
                selinux_relabel: false,
                propagation: pb::MountPropagation::PropagationPrivate as i32,
            })
            .collect(),
        labels,
        annotations: btree_to_hash(&c.annotations),
        log_path: relative_log_path(&c.log_path, &sandbox.log_directory)?,
        stdin: c.stdin,
        stdin_once: c.stdin_once,
        tty: c.tty,
        linux: Some(pb::LinuxContainerConfig {
            resources: Some(linux_resources(&c.resources)),
            security_context: Some(pb::LinuxContainerSecurityContext {
                privileged: c.privileged,
                namespace_options: Some(namespace_options(sandbox.host_network)),
                run_as_user: c.run_as_user.map(|u| pb::Int64Value {
                    value: i64::from(u),
                }),
                run_as_group: c.run_as_group.map(|g| pb::Int64Value {
                    value: i64::from(g),
                }),
                ..Default::default()
            }),
        }),
    })
}

/// CRI timestamps are nanoseconds since the epoch, 0 meaning "not yet".
fn timestamp(ns: i64) -> Option<jiff::Timestamp> {
    if ns <= 0 {
        return None;
    }
    jiff::Timestamp::from_nanosecond(i128::from(ns)).ok()
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

pub(crate) fn container_status(s: pb::ContainerStatus) -> ContainerStatus {
    let state = match s.state() {
        pb::ContainerState::ContainerCreated => ContainerState::Created,
        pb::ContainerState::ContainerRunning => ContainerState::Running,
        pb::ContainerState::ContainerExited => ContainerState::Exited,
        pb::ContainerState::ContainerUnknown => ContainerState::Unknown,
    };
    let exited = state == ContainerState::Exited;
    let (name, attempt) = s
        .metadata
        .as_ref()
        .map(|m| (m.name.clone(), m.attempt))
        .unwrap_or_default();
    // `image_ref` is the image's digest/id containerd resolved the container from: upstream
    // puts it in `containerStatuses[].imageID`.
    let image_id = if s.image_ref.is_empty() {
        s.image_id.clone()
    } else {
        s.image_ref.clone()
    };
    ContainerStatus {
        id: s.id,
        name,
        attempt,
        state,
        created_at: timestamp(s.created_at),
        started_at: timestamp(s.started_at),
        finished_at: timestamp(s.finished_at),
        exit_code: exited.then_some(s.exit_code),
        reason: non_empty(s.reason),
        message: non_empty(s.message),
        image: s.image.map(|i| i.image).unwrap_or_default(),
        image_id,
        log_path: s.log_path.into(),
    }
}

/// The image config's defaults from a verbose `ImageStatus`: containerd puts
/// `{"imageSpec": <OCI image>, …}` under `info["info"]`. Missing or unexpected JSON leaves
/// the defaults empty (containerd applies the image config itself anyway).
fn apply_image_config(info: &mut ImageInfo, verbose: &HashMap<String, String>) {
    let Some(raw) = verbose.get("info") else {
        return;
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(raw) else {
        return;
    };
    let Some(config) = v.pointer("/imageSpec/config") else {
        return;
    };
    let strings = |key: &str| -> Vec<String> {
        config
            .get(key)
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    info.entrypoint = strings("Entrypoint");
    info.cmd = strings("Cmd");
    info.env = strings("Env");
    info.working_dir = config
        .get("WorkingDir")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .map(str::to_string);
}

pub(crate) fn image_info(img: pb::Image, verbose: &HashMap<String, String>) -> ImageInfo {
    let mut names = img.repo_tags;
    names.extend(img.repo_digests);
    let mut info = ImageInfo {
        id: img.id,
        names,
        size_bytes: img.size,
        ..Default::default()
    };
    apply_image_config(&mut info, verbose);
    info
}

#[cfg(test)]
mod tests {
    use super::*;
    use kumo_runtime::Mount;
    use std::path::PathBuf;

    fn sandbox() -> SandboxConfig {
        SandboxConfig {
            pod_uid: "uid-1".into(),
            namespace: "default".into(),
            name: "web".into(),
            hostname: "web".into(),
            log_directory: PathBuf::from("/var/log/pods/default_web_uid-1"),
            ..Default::default()
        }
    }

    #[test]
    fn resources_follow_upstream() {
        let r = linux_resources(&Resources {
            cpu_limit_millis: Some(500),
            cpu_request_millis: Some(250),
            memory_limit_bytes: Some(20 << 20),
        });
        assert_eq!(r.cpu_period, 100_000);
        assert_eq!(r.cpu_quota, 50_000);
        assert_eq!(r.cpu_shares, 256);
        assert_eq!(r.memory_limit_in_bytes, 20 << 20);
        let best_effort = linux_resources(&Resources::default());
        assert_eq!(best_effort.cpu_shares, 2);
        assert_eq!(best_effort.cpu_quota, 0);
        assert_eq!(best_effort.memory_limit_in_bytes, 0);
    }

    #[test]
    fn sandbox_config_carries_pod_identity() {
        let mut s = sandbox();
        s.dns_servers = vec!["10.96.0.10".into()];
        let c = sandbox_config(&s);
        let m = c.metadata.unwrap_or_default();
        assert_eq!(
            (m.name.as_str(), m.namespace.as_str(), m.uid.as_str()),
            ("web", "default", "uid-1")
        );
        assert_eq!(c.hostname, "web");
        assert_eq!(c.labels.get(POD_UID).map(String::as_str), Some("uid-1"));
        assert_eq!(c.dns_config.unwrap_or_default().servers, vec!["10.96.0.10"]);
        let ns = c
            .linux
            .and_then(|l| l.security_context)
            .and_then(|s| s.namespace_options)
            .unwrap_or_default();
        assert_eq!(ns.network(), pb::NamespaceMode::Pod);

        s.host_network = true;
        let c = sandbox_config(&s);
        assert_eq!(c.hostname, "");
        let ns = c
            .linux
            .and_then(|l| l.security_context)
            .and_then(|s| s.namespace_options)
            .unwrap_or_default();
        assert_eq!(ns.network(), pb::NamespaceMode::Node);
    }

    #[test]
    fn container_config_relative_log_path_and_mounts() {
        let s = sandbox();
        let c = ContainerConfig {
            name: "app".into(),
            attempt: 3,
            image: "busybox".into(),
            command: vec!["httpd".into()],
            env: vec![("A".into(), "1".into())],
            mounts: vec![Mount {
                host_path: "/tmp/x".into(),
                container_path: "/data".into(),
                read_only: true,
            }],
            log_path: s.log_directory.join("app/3.log"),
            run_as_user: Some(1000),
            ..Default::default()
        };
        let p = container_config(&c, &s).unwrap_or_default();
        assert_eq!(p.log_path, "app/3.log");
        assert_eq!(p.metadata.unwrap_or_default().attempt, 3);
        assert_eq!(p.envs[0].key, "A");
        assert!(p.mounts[0].readonly);
        assert_eq!(
            p.labels.get(CONTAINER_NAME).map(String::as_str),
            Some("app")
        );
        assert_eq!(p.labels.get(POD_NAME).map(String::as_str), Some("web"));
        let sc = p.linux.and_then(|l| l.security_context).unwrap_or_default();
        assert_eq!(sc.run_as_user.map(|u| u.value), Some(1000));

        let outside = ContainerConfig {
            log_path: "/elsewhere/app.log".into(),
            ..c
        };
        assert!(matches!(
            container_config(&outside, &s),
            Err(RuntimeError::Invalid(_))
        ));
    }

    #[test]
    fn container_status_maps_times_and_reason() {
        let s = pb::ContainerStatus {
            id: "abc".into(),
            metadata: Some(pb::ContainerMetadata {
                name: "app".into(),
                attempt: 1,
            }),
            state: pb::ContainerState::ContainerExited as i32,
            created_at: 1_700_000_000_000_000_000,
            started_at: 1_700_000_001_000_000_000,
            finished_at: 1_700_000_002_500_000_000,
            exit_code: 137,
            reason: "OOMKilled".into(),
            image: Some(pb::ImageSpec {
                image: "docker.io/library/busybox:latest".into(),
                annotations: HashMap::new(),
            }),
            image_ref: "sha256:1234".into(),
            log_path: "/var/log/pods/x/app/1.log".into(),
            ..Default::default()
        };
        let c = container_status(s);
        assert_eq!(c.state, ContainerState::Exited);
        assert_eq!(c.exit_code, Some(137));
        assert_eq!(c.reason.as_deref(), Some("OOMKilled"));
        assert_eq!(c.message, None);
        assert_eq!(c.image_id, "sha256:1234");
        assert_eq!(
            c.finished_at.map(|t| t.as_nanosecond()),
            Some(1_700_000_002_500_000_000)
        );
        let running = container_status(pb::ContainerStatus {
            state: pb::ContainerState::ContainerRunning as i32,
            started_at: 5,
            ..Default::default()
        });
        assert_eq!(running.exit_code, None);
        assert_eq!(running.finished_at, None);
    }

    #[test]
    fn image_config_from_verbose_info() {
        let mut verbose = HashMap::new();
        verbose.insert(
            "info".to_string(),
            r#"{"imageSpec":{"config":{"Entrypoint":["/bin/sh"],"Cmd":["-c","x"],"Env":["PATH=/bin"],"WorkingDir":"/w"}}}"#
                .to_string(),
        );
        let info = image_info(
            pb::Image {
                id: "sha256:1".into(),
                repo_tags: vec!["docker.io/library/busybox:latest".into()],
                size: 10,
                ..Default::default()
            },
            &verbose,
        );
        assert_eq!(info.entrypoint, vec!["/bin/sh"]);
        assert_eq!(info.cmd, vec!["-c", "x"]);
        assert_eq!(info.working_dir.as_deref(), Some("/w"));
        assert_eq!(info.names, vec!["docker.io/library/busybox:latest"]);
    }
}
