//! Container images built by the tests themselves, with no registry: a busybox image from
//! Debian's `busybox-static` (`/bin/busybox`, `apt-get install -y busybox-static`) written as an
//! OCI image-layout tar (what `ctr -n k8s.io images import` and `kumo image import` read) or as a
//! `docker save` archive.
//!
//! The output is deterministic (fixed mtimes, owners and entry order), so the same inputs give
//! the same image id on every run and the CRI and process runtimes see the same digest.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// Fixed mtime for every tar entry (2024-01-01T00:00:00Z): deterministic digests.
const MTIME: u64 = 1_704_067_200;
const CREATED: &str = "2024-01-01T00:00:00Z";
const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where the busybox binary comes from (`$KUMO_BUSYBOX` overrides `/bin/busybox`).
pub fn busybox_bin() -> PathBuf {
    std::env::var_os("KUMO_BUSYBOX")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/bin/busybox"))
}

/// Archive layout of a built image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImageFormat {
    /// OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/…`).
    #[default]
    Oci,
    /// `docker save` layout (`manifest.json` with `RepoTags`, `Config`, `Layers`).
    DockerArchive,
}

/// Knobs for [`busybox_image_tar_with`].
#[derive(Debug, Clone, Default)]
pub struct ImageOptions {
    pub format: ImageFormat,
    /// gzip the layer (`…layer.v1.tar+gzip`); plain tar otherwise.
    pub gzip: bool,
    /// Image config `Entrypoint` (empty = none).
    pub entrypoint: Vec<String>,
    /// Extra `KEY=VALUE` entries in the image config's `Env` (after `PATH`).
    pub env: Vec<String>,
    /// Image config `WorkingDir`.
    pub working_dir: Option<String>,
    /// Extra regular files in the layer: (path inside the image, contents).
    pub extra_files: Vec<(String, Vec<u8>)>,
}

/// The fully-qualified name containerd and the kubelet use for `name`:
/// `busybox` → `docker.io/library/busybox:latest`, `me/app:1` → `docker.io/me/app:1`.
pub fn full_image_name(name: &str) -> String {
    let (repo, suffix) = match name.find('@') {
        Some(at) => (&name[..at], name[at..].to_string()),
        None => {
            let last_slash = name.rfind('/').map(|i| i + 1).unwrap_or(0);
            match name[last_slash..].rfind(':') {
                Some(c) => (&name[..last_slash + c], name[last_slash + c..].to_string()),
                None => (name, ":latest".to_string()),
            }
        }
    };
    let first = repo.split('/').next().unwrap_or("");
    let has_domain =
        repo.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let repo = if has_domain {
        repo.to_string()
    } else if repo.contains('/') {
        format!("docker.io/{repo}")
    } else {
        format!("docker.io/library/{repo}")
    };
    format!("{repo}{suffix}")
}

/// Build an OCI image-layout tar named `name` (normalised to e.g.
/// `docker.io/library/busybox:latest` in the `io.containerd.image.name` annotation, the tag in
/// `org.opencontainers.image.ref.name`, as `docker save` writes them) holding busybox with a
/// symlink per applet in `/bin`, `/etc/passwd` + `/etc/group` (root, nobody), `/tmp`, and an
/// image config with `Cmd = cmd` and `PATH`. Returns the tar's path inside `dir`.
pub fn busybox_image_tar(dir: &Path, name: &str, cmd: &[&str]) -> io::Result<PathBuf> {
    busybox_image_tar_with(dir, name, cmd, &ImageOptions::default())
}

/// The pause image: busybox running `sleep inf` (busybox's sleep accepts `inf`).
pub fn pause_image_tar(dir: &Path, name: &str) -> io::Result<PathBuf> {
    busybox_image_tar(dir, name, &["sleep", "inf"])
}

/// [`busybox_image_tar`] with a choice of archive format, layer compression and config.
pub fn busybox_image_tar_with(
    dir: &Path,
    name: &str,
    cmd: &[&str],
    opts: &ImageOptions,
) -> io::Result<PathBuf> {
    let layer_tar = busybox_layer(&opts.extra_files)?;
    let diff_id = sha256_hex(&layer_tar);
    let layer_blob = if opts.gzip {
        let mut enc = flate2::GzBuilder::new()
            .mtime(0)
            .write(Vec::new(), flate2::Compression::fast());
        enc.write_all(&layer_tar)?;
        enc.finish()?
    } else {
        layer_tar
    };
    let layer_digest = sha256_hex(&layer_blob);

    let mut env = vec![PATH_ENV.to_string()];
    env.extend(opts.env.iter().cloned());
    let mut config = serde_json::json!({
        "Env": env,
        "Cmd": cmd,
    });
    if !opts.entrypoint.is_empty() {
        config["Entrypoint"] = serde_json::json!(opts.entrypoint);
    }
    if let Some(wd) = &opts.working_dir {
        config["WorkingDir"] = serde_json::json!(wd);
    }
    let image_config = serde_json::json!({
        "architecture": oci_arch(),
        "os": "linux",
        "created": CREATED,
        "config": config,
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{diff_id}")] },
        "history": [{ "created": CREATED, "created_by": "kumo-tests busybox_image_tar" }],
    });
    let config_bytes = serde_json::to_vec(&image_config).map_err(io::Error::other)?;
    let config_digest = sha256_hex(&config_bytes);

    let full = full_image_name(name);
    let tag = full
        .rsplit_once(':')
        .filter(|(_, t)| !t.contains('/'))
        .map(|(_, t)| t.to_string())
        .unwrap_or_else(|| "latest".to_string());
    let file_stem: String = full
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let out_path = dir.join(format!("{file_stem}.tar"));

    let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
    match opts.format {
        ImageFormat::Oci => {
            let layer_media = if opts.gzip {
                "application/vnd.oci.image.layer.v1.tar+gzip"
            } else {
                "application/vnd.oci.image.layer.v1.tar"
            };
            let manifest = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": format!("sha256:{config_digest}"),
                    "size": config_bytes.len(),
                },
                "layers": [{
                    "mediaType": layer_media,
                    "digest": format!("sha256:{layer_digest}"),
                    "size": layer_blob.len(),
                }],
            });
            let manifest_bytes = serde_json::to_vec(&manifest).map_err(io::Error::other)?;
            let manifest_digest = sha256_hex(&manifest_bytes);
            let index = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": [{
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": format!("sha256:{manifest_digest}"),
                    "size": manifest_bytes.len(),
                    "platform": { "architecture": oci_arch(), "os": "linux" },
                    "annotations": {
                        "io.containerd.image.name": full,
                        "org.opencontainers.image.ref.name": tag,
                    },
                }],
            });
            entries.push((
                "oci-layout".into(),
                br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
            ));
            entries.push((
                "index.json".into(),
                serde_json::to_vec(&index).map_err(io::Error::other)?,
            ));
            entries.push((format!("blobs/sha256/{config_digest}"), config_bytes));
            entries.push((format!("blobs/sha256/{layer_digest}"), layer_blob));
            entries.push((format!("blobs/sha256/{manifest_digest}"), manifest_bytes));
        }
        ImageFormat::DockerArchive => {
            let short = full.strip_prefix("docker.io/library/").unwrap_or(&full);
            let layer_file = format!("{layer_digest}/layer.tar");
            let manifest = serde_json::json!([{
                "Config": format!("{config_digest}.json"),
                "RepoTags": [short],
                "Layers": [layer_file],
            }]);
            entries.push((
                "manifest.json".into(),
                serde_json::to_vec(&manifest).map_err(io::Error::other)?,
            ));
            entries.push((format!("{config_digest}.json"), config_bytes));
            entries.push((layer_file, layer_blob));
        }
    }

    std::fs::create_dir_all(dir)?;
    let tmp = out_path.with_extension("tar.tmp");
    {
        let file = std::fs::File::create(&tmp)?;
        let mut builder = tar::Builder::new(io::BufWriter::new(file));
        let mut dirs_done = std::collections::BTreeSet::new();
        for (path, data) in &entries {
            // Parent directories first, like `docker save` does.
            let mut acc = String::new();
            let parts: Vec<&str> = path.split('/').collect();
            for part in &parts[..parts.len() - 1] {
                acc.push_str(part);
                acc.push('/');
                if dirs_done.insert(acc.clone()) {
                    append_dir(&mut builder, &acc, 0o755)?;
                }
            }
            append_file(&mut builder, path, 0o644, data)?;
        }
        builder.into_inner()?.flush()?;
    }
    std::fs::rename(&tmp, &out_path)?;
    Ok(out_path)
}

/// The image's single layer: busybox, applet links, `/etc` files and the usual empty dirs.
fn busybox_layer(extra_files: &[(String, Vec<u8>)]) -> io::Result<Vec<u8>> {
    let busybox = busybox_bin();
    let bin = std::fs::read(&busybox).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "reading {}: {e} (apt-get install -y busybox-static)",
                busybox.display()
            ),
        )
    })?;
    let list = Command::new(&busybox).arg("--list").output()?;
    if !list.status.success() {
        return Err(io::Error::other(format!(
            "{} --list failed",
            busybox.display()
        )));
    }
    let mut applets: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
        .map(str::to_string)
        .collect();
    applets.sort();
    applets.dedup();

    let mut builder = tar::Builder::new(Vec::new());
    for (d, mode) in [
        ("bin/", 0o755),
        ("dev/", 0o755),
        ("etc/", 0o755),
        ("home/", 0o755),
        ("proc/", 0o555),
        ("root/", 0o700),
        ("sys/", 0o555),
        ("tmp/", 0o1777),
        ("usr/", 0o755),
        ("usr/bin/", 0o755),
        ("usr/sbin/", 0o755),
        ("sbin/", 0o755),
        ("var/", 0o755),
        ("var/www/", 0o755),
    ] {
        append_dir(&mut builder, d, mode)?;
    }
    append_file(&mut builder, "bin/busybox", 0o755, &bin)?;
    for applet in &applets {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        header.set_mode(0o777);
        header.set_mtime(MTIME);
        header.set_uid(0);
        header.set_gid(0);
        builder.append_link(&mut header, format!("bin/{applet}"), "busybox")?;
    }
    append_file(
        &mut builder,
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    append_file(
        &mut builder,
        "etc/group",
        0o644,
        b"root:x:0:\nnogroup:x:65534:\nnobody:x:65534:\n",
    )?;
    for (path, data) in extra_files {
        let path = path.trim_start_matches('/');
        append_file(&mut builder, path, 0o644, data)?;
    }
    builder.into_inner()
}

fn append_dir<W: Write>(builder: &mut tar::Builder<W>, path: &str, mode: u32) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_size(0);
    header.set_mode(mode);
    header.set_mtime(MTIME);
    header.set_uid(0);
    header.set_gid(0);
    builder.append_data(&mut header, path, io::empty())
}

fn append_file<W: Write>(
    builder: &mut tar::Builder<W>,
    path: &str,
    mode: u32,
    data: &[u8],
) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(data.len() as u64);
    header.set_mode(mode);
    header.set_mtime(MTIME);
    header.set_uid(0);
    header.set_gid(0);
    builder.append_data(&mut header, path, data)
}

fn sha256_hex(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The OCI architecture name of this machine (`amd64`, `arm64` …).
pub fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalised_like_containerd() {
        assert_eq!(
            full_image_name("busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            full_image_name("busybox:1.36"),
            "docker.io/library/busybox:1.36"
        );
        assert_eq!(full_image_name("me/app"), "docker.io/me/app:latest");
        assert_eq!(
            full_image_name("localhost:5000/app"),
            "localhost:5000/app:latest"
        );
        assert_eq!(
            full_image_name("docker.io/library/busybox:latest"),
            "docker.io/library/busybox:latest"
        );
    }
    #[test]
    fn oci_tar_is_a_valid_layout_with_matching_digests() {
        if !crate::require_tool(
            &busybox_bin(),
            "busybox-static",
            "KUMO_BUSYBOX",
            "oci_tar_is_a_valid_layout_with_matching_digests",
        ) {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let a = busybox_image_tar(dir.path(), "busybox", &["sh"]).expect("build");
        let bytes_a = std::fs::read(&a).expect("read");
        let b = busybox_image_tar(dir.path(), "busybox", &["sh"]).expect("build again");
        assert_eq!(bytes_a, std::fs::read(&b).expect("read"), "deterministic");

        let mut files = std::collections::BTreeMap::new();
        let mut archive = tar::Archive::new(&bytes_a[..]);
        for entry in archive.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            if entry.header().entry_type().is_file() {
                let path = entry.path().expect("path").to_string_lossy().into_owned();
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut data).expect("read entry");
                files.insert(path, data);
            }
        }
        for (path, data) in &files {
            if let Some(hex) = path.strip_prefix("blobs/sha256/") {
                assert_eq!(sha256_hex(data), hex, "{path}");
            }
        }
        let index: serde_json::Value =
            serde_json::from_slice(&files["index.json"]).expect("index.json");
        let desc = &index["manifests"][0];
        assert_eq!(
            desc["annotations"]["io.containerd.image.name"],
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            desc["annotations"]["org.opencontainers.image.ref.name"],
            "latest"
        );
        let digest = desc["digest"].as_str().expect("digest");
        let manifest: serde_json::Value = serde_json::from_slice(
            &files[&format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))],
        )
        .expect("manifest");
        let cfg_digest = manifest["config"]["digest"]
            .as_str()
            .expect("config digest");
        let config: serde_json::Value = serde_json::from_slice(
            &files[&format!("blobs/sha256/{}", cfg_digest.trim_start_matches("sha256:"))],
        )
        .expect("config");
        assert_eq!(config["config"]["Cmd"], serde_json::json!(["sh"]));

        let docker = busybox_image_tar_with(
            &dir.path().join("docker"),
            "busybox",
            &["sh"],
            &ImageOptions {
                format: ImageFormat::DockerArchive,
                gzip: true,
                ..Default::default()
            },
        )
        .expect("docker archive");
        let mut names = Vec::new();
        let mut archive = tar::Archive::new(std::fs::File::open(docker).expect("open"));
        for entry in archive.entries().expect("entries") {
            names.push(
                entry
                    .expect("entry")
                    .path()
                    .expect("path")
                    .to_string_lossy()
                    .into_owned(),
            );
        }
        assert!(names.contains(&"manifest.json".to_string()), "{names:?}");
    }
}
