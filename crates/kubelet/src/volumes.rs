//! Pod volumes under `<root-dir>/pods/<uid>/volumes/<plugin>/<name>`: emptyDir, configMap,
//! secret, downwardAPI and projected (serviceAccountToken via TokenRequest, configMap, secret,
//! downwardAPI) written with upstream's AtomicWriter scheme, hostPath with its type checks;
//! and the bind mounts (subPath, readOnly) of each container.
//!
//! AtomicWriter: the payload goes into a fresh `..<timestamp>` directory, the `..data`
//! symlink is switched to it with one rename, and each user-visible name is a symlink through
//! `..data`; a reader therefore sees the old or the new set of files, never a mix.
//! `emptyDir` with `medium: Memory` is a plain directory too (no tmpfs mount), documented.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    Container, DownwardAPIVolumeFile, KeyToPath, Pod, ServiceAccount, Volume,
};
use kube::api::{Api, PostParams};
use kumo_runtime::Mount;

use crate::context::NodeCtx;
use crate::env::{RefCache, field_ref, resource_field_ref};

/// One file of a volume payload: contents and mode.
type Payload = BTreeMap<String, (Vec<u8>, u32)>;

/// A serviceAccountToken projection's current token.
#[derive(Debug, Clone)]
struct Token {
    token: String,
    refresh_at: Instant,
}

/// Per-pod volume state kept by the pod worker.
#[derive(Debug, Default)]
pub struct PodVolumes {
    /// Volume name → host path and whether the plugin forces read-only mounts.
    paths: HashMap<String, (PathBuf, bool)>,
    tokens: HashMap<(String, usize), Token>,
}

/// A failure to set up one volume (a `FailedMount` event and `ContainerCreating`).
#[derive(Debug, Clone)]
pub struct MountError {
    pub volume: String,
    pub message: String,
}

fn plugin_dir(v: &Volume) -> Option<&'static str> {
    Some(if v.empty_dir.is_some() {
        "kubernetes.io~empty-dir"
    } else if v.config_map.is_some() {
        "kubernetes.io~configmap"
    } else if v.secret.is_some() {
        "kubernetes.io~secret"
    } else if v.projected.is_some() {
        "kubernetes.io~projected"
    } else if v.downward_api.is_some() {
        "kubernetes.io~downward-api"
    } else {
        return None;
    })
}

fn valid_rel_path(p: &str) -> bool {
    !p.is_empty()
        && Path::new(p)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
        && !p.starts_with("..")
}

/// `items` (or every key) of a ConfigMap/Secret into `out`.
fn project_keys(
    out: &mut Payload,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: u32,
    optional: bool,
    what: &str,
) -> Result<(), String> {
    match items {
        Some(items) if !items.is_empty() => {
            for it in items {
                match data.get(&it.key) {
                    Some(v) => {
                        if !valid_rel_path(&it.path) {
                            return Err(format!("invalid path {:?}", it.path));
                        }
                        let mode = it.mode.map_or(default_mode, |m| m as u32);
                        out.insert(it.path.clone(), (v.clone(), mode));
                    }
                    None if optional => {}
                    None => {
                        return Err(format!(
                            "{what} references non-existent config key: {}",
                            it.key
                        ));
                    }
                }
            }
        }
        _ => {
            for (k, v) in data {
                out.insert(k.clone(), (v.clone(), default_mode));
            }
        }
    }
    Ok(())
}

fn downward_files(
    ctx: &NodeCtx,
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    default_mode: u32,
    pod_ip: &str,
    out: &mut Payload,
) -> Result<(), String> {
    for it in items {
        let value = if let Some(f) = &it.field_ref {
            field_ref(ctx, pod, &f.field_path, pod_ip)?
        } else if let Some(r) = &it.resource_field_ref {
            let name = r.container_name.as_deref().unwrap_or("");
            let c = pod
                .spec
                .as_ref()
                .and_then(|s| s.containers.iter().find(|c| c.name == name))
                .ok_or_else(|| format!("container {name} not found"))?;
            resource_field_ref(ctx, c, &r.resource, r.divisor.as_ref())?
        } else {
            continue;
        };
        let mode = it.mode.map_or(default_mode, |m| m as u32);
        out.insert(it.path.clone(), (value.into_bytes(), mode));
    }
    Ok(())
}

impl PodVolumes {
    /// Sets up (first call) or refreshes (later calls) every volume of `pod`.
    pub async fn sync(
        &mut self,
        ctx: &NodeCtx,
        pod: &Pod,
        refs: &mut RefCache,
        pod_ip: &str,
    ) -> Result<(), MountError> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let base = ctx.pod_dir(&uid).join("volumes");
        for v in pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .into_iter()
            .flatten()
        {
            let err = |message: String| MountError {
                volume: v.name.clone(),
                message,
            };
            if let Some(hp) = &v.host_path {
                check_host_path(&hp.path, hp.type_.as_deref().unwrap_or("")).map_err(err)?;
                self.paths
                    .insert(v.name.clone(), (PathBuf::from(&hp.path), false));
                continue;
            }
            let Some(plugin) = plugin_dir(v) else {
                // persistentVolumeClaim, csi, … are not served by this kubelet: an empty
                // directory keeps the pod runnable.
                let dir = base.join("kubernetes.io~empty-dir").join(&v.name);
                std::fs::create_dir_all(&dir).map_err(|e| err(e.to_string()))?;
                self.paths.insert(v.name.clone(), (dir, false));
                continue;
            };
            let dir = base.join(plugin).join(&v.name);
            std::fs::create_dir_all(&dir).map_err(|e| err(e.to_string()))?;
            if v.empty_dir.is_some() {
                self.paths.insert(v.name.clone(), (dir, false));
                continue;
            }
            let payload = self.payload(ctx, pod, v, refs, pod_ip).await.map_err(err)?;
            atomic_write(&dir, &payload).map_err(|e| err(e.to_string()))?;
            self.paths.insert(v.name.clone(), (dir, true));
        }
        Ok(())
    }

    async fn payload(
        &mut self,
        ctx: &NodeCtx,
        pod: &Pod,
        v: &Volume,
        refs: &mut RefCache,
        pod_ip: &str,
    ) -> Result<Payload, String> {
        let mut out = Payload::new();
        if let Some(cm) = &v.config_map {
            let mode = cm.default_mode.map_or(0o644, |m| m as u32);
            let optional = cm.optional == Some(true);
            match refs.configmap(&cm.name).await? {
                Some(data) => project_keys(
                    &mut out,
                    &data,
                    cm.items.as_ref(),
                    mode,
                    optional,
                    "configMap",
                )?,
                None if optional => {}
                None => return Err(format!("configmap \"{}\" not found", cm.name)),
            }
        } else if let Some(s) = &v.secret {
            let name = s.secret_name.clone().unwrap_or_default();
            let mode = s.default_mode.map_or(0o644, |m| m as u32);
            let optional = s.optional == Some(true);
            match refs.secret(&name).await? {
                Some(data) => {
                    project_keys(&mut out, &data, s.items.as_ref(), mode, optional, "secret")?
                }
                None if optional => {}
                None => return Err(format!("secret \"{name}\" not found")),
            }
        } else if let Some(d) = &v.downward_api {
            let mode = d.default_mode.map_or(0o644, |m| m as u32);
            downward_files(
                ctx,
                pod,
                d.items.as_deref().unwrap_or(&[]),
                mode,
                pod_ip,
                &mut out,
            )?;
        } else if let Some(p) = &v.projected {
            let mode = p.default_mode.map_or(0o644, |m| m as u32);
            for (i, src) in p.sources.iter().flatten().enumerate() {
                if let Some(cm) = &src.config_map {
                    let optional = cm.optional == Some(true);
                    match refs.configmap(&cm.name).await? {
                        Some(data) => project_keys(
                            &mut out,
                            &data,
                            cm.items.as_ref(),
                            mode,
                            optional,
                            "configMap",
                        )?,
                        None if optional => {}
                        None => return Err(format!("configmap \"{}\" not found", cm.name)),
                    }
                }
                if let Some(s) = &src.secret {
                    let optional = s.optional == Some(true);
                    match refs.secret(&s.name).await? {
                        Some(data) => project_keys(
                            &mut out,
                            &data,
                            s.items.as_ref(),
                            mode,
                            optional,
                            "secret",
                        )?,
                        None if optional => {}
                        None => return Err(format!("secret \"{}\" not found", s.name)),
                    }
                }
                if let Some(d) = &src.downward_api {
                    downward_files(
                        ctx,
                        pod,
                        d.items.as_deref().unwrap_or(&[]),
                        mode,
                        pod_ip,
                        &mut out,
                    )?;
                }
                if let Some(t) = &src.service_account_token {
                    let key = (v.name.clone(), i);
                    let fresh = self
                        .tokens
                        .get(&key)
                        .filter(|t| Instant::now() < t.refresh_at)
                        .cloned();
                    let token = match fresh {
                        Some(t) => t,
                        None => {
                            let t = request_token(
                                ctx,
                                pod,
                                t.audience.clone(),
                                t.expiration_seconds.unwrap_or(3600),
                            )
                            .await?;
                            self.tokens.insert(key, t.clone());
                            t
                        }
                    };
                    out.insert(t.path.clone(), (token.token.into_bytes(), mode));
                }
            }
        }
        Ok(out)
    }

    /// The bind mounts of `c` (volume mounts with subPath/readOnly, plus the pod's hosts file).
    pub fn mounts(
        &self,
        pod_dir: &Path,
        c: &Container,
        hosts_file: bool,
    ) -> Result<Vec<Mount>, String> {
        let mut out = Vec::new();
        for m in c.volume_mounts.iter().flatten() {
            let (path, forced_ro) = self.paths.get(&m.name).ok_or_else(|| {
                format!(
                    "cannot find volume \"{}\" to mount into container \"{}\"",
                    m.name, c.name
                )
            })?;
            let mut host = path.clone();
            if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                if !valid_rel_path(sub) {
                    return Err(format!(
                        "subPath {sub:?} must be a relative path without '..'"
                    ));
                }
                host = host.join(sub);
                if !host.exists() {
                    std::fs::create_dir_all(&host).map_err(|e| e.to_string())?;
                }
            }
            out.push(Mount {
                host_path: host,
                container_path: m.mount_path.clone(),
                read_only: m.read_only == Some(true) || *forced_ro,
            });
        }
        if hosts_file && !out.iter().any(|m| m.container_path == "/etc/hosts") {
            out.push(Mount {
                host_path: pod_dir.join("etc-hosts"),
                container_path: "/etc/hosts".into(),
                read_only: false,
            });
        }
        Ok(out)
    }
}

async fn request_token(
    ctx: &NodeCtx,
    pod: &Pod,
    audience: Option<String>,
    expiration_seconds: i64,
) -> Result<Token, String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let tr = TokenRequest {
        spec: TokenRequestSpec {
            audiences: audience.into_iter().collect(),
            expiration_seconds: Some(expiration_seconds),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..Default::default()
    };
    let api: Api<ServiceAccount> = Api::namespaced(ctx.shared.client.clone(), &ns);
    let resp: TokenRequest = api
        .create_subresource("token", &sa, &PostParams::default(), &tr)
        .await
        .map_err(|e| format!("failed to fetch token: {e}"))?;
    let status = resp
        .status
        .ok_or_else(|| "failed to fetch token: empty TokenRequest status".to_string())?;
    let ttl = status
        .expiration_timestamp
        .0
        .duration_since(jiff::Timestamp::now())
        .as_secs_f64()
        .max(1.0);
    // Upstream refreshes at 80 % of the token's life.
    Ok(Token {
        token: status.token,
        refresh_at: Instant::now() + Duration::from_secs_f64(ttl * 0.8),
    })
}

/// hostPath `type` checks (`DirectoryOrCreate`, `Directory`, `FileOrCreate`, `File`,
/// `Socket`, `CharDevice`, `BlockDevice`; empty = no check).
pub fn check_host_path(path: &str, type_: &str) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt as _;
    let p = Path::new(path);
    let meta = std::fs::metadata(p);
    let fail = |what: &str| {
        Err(format!(
            "hostPath type check failed: {path} is not a {what}"
        ))
    };
    match type_ {
        "" => Ok(()),
        "DirectoryOrCreate" => match meta {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => fail("directory"),
            Err(_) => {
                std::fs::create_dir_all(p).map_err(|e| e.to_string())?;
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))
                    .map_err(|e| e.to_string())
            }
        },
        "Directory" => match meta {
            Ok(m) if m.is_dir() => Ok(()),
            _ => fail("directory"),
        },
        "FileOrCreate" => match meta {
            Ok(m) if m.is_file() => Ok(()),
            Ok(_) => fail("file"),
            Err(_) => {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| e.to_string())?;
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644))
                    .map_err(|e| e.to_string())
            }
        },
        "File" => match meta {
            Ok(m) if m.is_file() => Ok(()),
            _ => fail("file"),
        },
        "Socket" => match meta {
            Ok(m) if m.file_type().is_socket() => Ok(()),
            _ => fail("socket"),
        },
        "CharDevice" => match meta {
            Ok(m) if m.file_type().is_char_device() => Ok(()),
            _ => fail("character device"),
        },
        "BlockDevice" => match meta {
            Ok(m) if m.file_type().is_block_device() => Ok(()),
            _ => fail("block device"),
        },
        other => Err(format!("invalid hostPath type {other:?}")),
    }
}

/// Reads the payload currently visible through `..data`.
fn current_payload(dir: &Path, payload: &Payload) -> Option<Payload> {
    let data = dir.join("..data");
    let target = std::fs::read_link(&data).ok()?;
    let ts_dir = dir.join(target);
    let mut out = Payload::new();
    for rel in payload.keys() {
        let p = ts_dir.join(rel);
        let bytes = std::fs::read(&p).ok()?;
        let m = std::fs::metadata(&p).ok()?.permissions().mode() & 0o7777;
        out.insert(rel.clone(), (bytes, m));
    }
    // Any extra file in the current version means the payload changed.
    let mut count = 0;
    let mut stack = vec![ts_dir];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).ok()?.flatten() {
            if e.file_type().ok()?.is_dir() {
                stack.push(e.path());
            } else {
                count += 1;
            }
        }
    }
    (count == payload.len()).then_some(out)
}

/// Writes `payload` into `dir` atomically; returns whether anything changed.
pub fn atomic_write(dir: &Path, payload: &Payload) -> std::io::Result<bool> {
    if current_payload(dir, payload).as_ref() == Some(payload) {
        return Ok(false);
    }
    let now = jiff::Timestamp::now();
    let ts_name = format!(
        "..{}_{:09}",
        now.strftime("%Y_%m_%d_%H_%M_%S"),
        now.subsec_nanosecond()
    );
    let ts_dir = dir.join(&ts_name);
    std::fs::create_dir_all(&ts_dir)?;
    for (rel, (bytes, mode)) in payload {
        let p = ts_dir.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, bytes)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode))?;
    }
    std::fs::set_permissions(&ts_dir, std::fs::Permissions::from_mode(0o755))?;
    let old = std::fs::read_link(dir.join("..data")).ok();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&ts_name, &tmp)?;
    std::fs::rename(&tmp, dir.join("..data"))?;
    // User-visible names: one symlink per top-level path, through ..data.
    let tops: std::collections::BTreeSet<String> = payload
        .keys()
        .filter_map(|k| k.split('/').next().map(str::to_string))
        .collect();
    for top in &tops {
        let link = dir.join(top);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(top), &link)?;
        }
    }
    for e in std::fs::read_dir(dir)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("..") {
            continue;
        }
        if !tops.contains(&name) && e.file_type()?.is_symlink() {
            std::fs::remove_file(e.path())?;
        }
    }
    if let Some(old) = old
        && old != Path::new(&ts_name)
    {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writer_swaps_and_prunes() {
        let tmp = tempfile::tempdir().expect("tmp");
        let d = tmp.path();
        let mut p = Payload::new();
        p.insert("a".into(), (b"1".to_vec(), 0o644));
        p.insert("sub/b".into(), (b"2".to_vec(), 0o600));
        assert!(atomic_write(d, &p).expect("write"));
        assert_eq!(std::fs::read_to_string(d.join("a")).expect("a"), "1");
        assert_eq!(std::fs::read_to_string(d.join("sub/b")).expect("b"), "2");
        assert!(
            !atomic_write(d, &p).expect("same"),
            "unchanged payload rewritten"
        );
        p.remove("sub/b");
        p.insert("a".into(), (b"3".to_vec(), 0o644));
        assert!(atomic_write(d, &p).expect("update"));
        assert_eq!(std::fs::read_to_string(d.join("a")).expect("a"), "3");
        assert!(std::fs::symlink_metadata(d.join("sub")).is_err());
        let versions = std::fs::read_dir(d)
            .expect("ls")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("..2"))
            .count();
        assert_eq!(versions, 1);
    }

    #[test]
    fn host_path_types() {
        let tmp = tempfile::tempdir().expect("tmp");
        let d = tmp.path().join("x");
        let ds = d.display().to_string();
        assert!(check_host_path(&ds, "Directory").is_err());
        check_host_path(&ds, "DirectoryOrCreate").expect("create");
        check_host_path(&ds, "Directory").expect("exists");
        let f = tmp.path().join("f").display().to_string();
        check_host_path(&f, "FileOrCreate").expect("create file");
        assert!(check_host_path(&f, "Directory").is_err());
        assert!(valid_rel_path("a/b"));
        assert!(!valid_rel_path("../a"));
        assert!(!valid_rel_path("/a"));
    }
}
