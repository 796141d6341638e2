//! The local image store of the `process` runtime: images imported from tar files (OCI image
//! layout or `docker save` archives) and unpacked once into a read-only root filesystem per
//! image id, which containers use as the lower layer of their overlay.
//!
//! There is no registry client: kumo nodes get their images with `kumo image import FILE.tar`,
//! like `ctr images import` on a containerd node.
//!
//! Layout under the root:
//! ```text
//! <root>/images/<hex>/image.json   what `ImageInfo` reports (+ user, digests)
//! <root>/images/<hex>/rootfs/      the unpacked layers (never written after import)
//! <root>/tmp/                      imports in progress (renamed into images/ when complete)
//! <root>/lock                      flock held while names move between images
//! ```
//! An import unpacks into `tmp/` without the lock and takes the lock only to rename the finished
//! directory into place and move names, so concurrent imports (two kubelets on one host) are safe
//! and a crashed import leaves only a temp directory behind.

mod layer;
mod names;

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use names::normalize_image_name;

use crate::ImageInfo;

/// An image as stored on disk (`image.json`).
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
pub struct StoredImage {
    /// `sha256:<config digest>`, the image id containerd reports too.
    pub id: String,
    /// Fully-qualified names (`docker.io/library/busybox:latest`).
    pub names: Vec<String>,
    /// `sha256:` digest of the manifest, when imported from an OCI layout.
    #[serde(default)]
    pub manifest_digest: Option<String>,
    pub size_bytes: u64,
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub cmd: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub working_dir: Option<String>,
    /// The image config's `User` (`uid`, `uid:gid`, or a name looked up in the rootfs).
    #[serde(default)]
    pub user: Option<String>,
}

impl StoredImage {
    pub fn info(&self) -> ImageInfo {
        ImageInfo {
            id: self.id.clone(),
            names: self.names.clone(),
            size_bytes: self.size_bytes,
            entrypoint: self.entrypoint.clone(),
            cmd: self.cmd.clone(),
            env: self.env.clone(),
            working_dir: self.working_dir.clone(),
        }
    }

    fn hex(&self) -> &str {
        self.id.strip_prefix("sha256:").unwrap_or(&self.id)
    }
}

/// The image store rooted at one directory (the kubelet uses `<root-dir>/images`).
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
}

/// One image found in an archive, before unpacking.
struct Candidate {
    names: Vec<String>,
    manifest_digest: Option<String>,
    config: Vec<u8>,
    /// Layer files inside the extracted archive, bottom first.
    layers: Vec<PathBuf>,
}

impl ImageStore {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: &Path) -> io::Result<ImageStore> {
        fs::create_dir_all(root.join("images"))?;
        fs::create_dir_all(root.join("tmp"))?;
        Ok(ImageStore {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The unpacked, read-only root filesystem of an image (by id).
    pub fn rootfs(&self, image_id: &str) -> PathBuf {
        let hex = image_id.strip_prefix("sha256:").unwrap_or(image_id);
        self.root.join("images").join(hex).join("rootfs")
    }

    /// Imports every image of an OCI image-layout tar or a `docker save` archive; returns them.
    /// Names an image takes are removed from any other image that had them (a re-tag).
    pub fn import(&self, tar_path: &Path) -> io::Result<Vec<ImageInfo>> {
        Ok(self
            .import_stored(tar_path)?
            .iter()
            .map(StoredImage::info)
            .collect())
    }

    /// [`ImageStore::import`] returning the stored records (with `user` and digests).
    pub fn import_stored(&self, tar_path: &Path) -> io::Result<Vec<StoredImage>> {
        let work = self.temp_dir("import")?;
        let result = self.import_in(tar_path, &work);
        let _ = fs::remove_dir_all(&work);
        result
    }

    /// `docker import`: makes an image named `name` from a tar of a root filesystem (plain or
    /// gzip), one layer, with `cmd` as its command and the usual `PATH`. The same tar and
    /// command give the same image id.
    pub fn import_rootfs(
        &self,
        tar_path: &Path,
        name: &str,
        cmd: &[String],
    ) -> io::Result<ImageInfo> {
        let work = self.temp_dir("import")?;
        let result = (|| {
            let file = fs::File::open(tar_path)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", tar_path.display())))?;
            let mut reader = maybe_gunzip(io::BufReader::new(file))?;
            let layer = work.join("layer.tar");
            let mut out = HashingWriter {
                inner: fs::File::create(&layer)?,
                hasher: <sha2::Sha256 as sha2::Digest>::new(),
            };
            io::copy(&mut reader, &mut out)?;
            let diff_id: String = sha2::Digest::finalize(out.hasher)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            // Check it is a tar before making an image of it.
            tar::Archive::new(fs::File::open(&layer)?)
                .entries()?
                .next()
                .transpose()
                .map_err(|e| invalid(format!("{}: not a tar: {e}", tar_path.display())))?
                .ok_or_else(|| invalid(format!("{}: an empty tar", tar_path.display())))?;
            let config = serde_json::json!({
                "architecture": oci_arch(),
                "os": "linux",
                "config": {
                    "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                    "Cmd": cmd,
                },
                "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]},
                "history": [{"created_by": "kumo image import --rootfs"}],
            });
            let cand = Candidate {
                names: vec![name.to_string()],
                manifest_digest: None,
                config: serde_json::to_vec(&config).map_err(io::Error::other)?,
                layers: vec![layer],
            };
            self.install(cand, &work).map(|i| i.info())
        })();
        let _ = fs::remove_dir_all(&work);
        result
    }

    fn import_in(&self, tar_path: &Path, work: &Path) -> io::Result<Vec<StoredImage>> {
        let extracted = work.join("archive");
        fs::create_dir_all(&extracted)?;
        let file = fs::File::open(tar_path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", tar_path.display())))?;
        let mut archive = tar::Archive::new(maybe_gunzip(io::BufReader::new(file))?);
        archive.set_preserve_permissions(false);
        archive.set_preserve_ownerships(false);
        archive.set_unpack_xattrs(false);
        archive.unpack(&extracted)?;

        let candidates = if extracted.join("index.json").is_file() {
            oci_candidates(&extracted)?
        } else if extracted.join("manifest.json").is_file() {
            docker_candidates(&extracted)?
        } else {
            return Err(invalid(format!(
                "{}: neither an OCI image layout (index.json) nor a docker archive (manifest.json)",
                tar_path.display()
            )));
        };
        if candidates.is_empty() {
            return Err(invalid(format!(
                "{}: no image for this platform in the archive",
                tar_path.display()
            )));
        }

        let mut out = Vec::new();
        for cand in candidates {
            out.push(self.install(cand, work)?);
        }
        Ok(out)
    }

    /// Unpacks one image (unless its id is already stored) and gives it its names.
    fn install(&self, cand: Candidate, work: &Path) -> io::Result<StoredImage> {
        let id = format!("sha256:{}", sha256_hex(&cand.config));
        let config: ImageConfigFile = serde_json::from_slice(&cand.config)
            .map_err(|e| invalid(format!("image config: {e}")))?;
        let cfg = config.config.unwrap_or_default();
        let size_bytes = cand
            .layers
            .iter()
            .filter_map(|l| fs::metadata(l).ok())
            .map(|m| m.len())
            .sum();
        let mut image = StoredImage {
            id: id.clone(),
            names: Vec::new(),
            manifest_digest: cand.manifest_digest,
            size_bytes,
            entrypoint: cfg.entrypoint.unwrap_or_default(),
            cmd: cfg.cmd.unwrap_or_default(),
            env: cfg.env.unwrap_or_default(),
            working_dir: cfg.working_dir.filter(|w| !w.is_empty()),
            user: cfg.user.filter(|u| !u.is_empty()),
        };
        let final_dir = self.root.join("images").join(image.hex());
        if !final_dir.join("image.json").is_file() {
            let staged = work.join(format!("image-{}", image.hex()));
            let rootfs = staged.join("rootfs");
            fs::create_dir_all(&rootfs)?;
            for layer_path in &cand.layers {
                layer::apply_layer(layer_path, &rootfs)?;
            }
            write_json(&staged.join("image.json"), &image)?;
            let _lock = self.lock()?;
            if final_dir.join("image.json").is_file() {
                tracing::debug!(image = %id, "image already stored by a concurrent import");
            } else {
                if final_dir.exists() {
                    // A half-removed image: replace it.
                    fs::remove_dir_all(&final_dir)?;
                }
                fs::rename(&staged, &final_dir)?;
            }
        }
        let _lock = self.lock()?;
        let names: Vec<String> = cand.names.iter().map(|n| normalize_image_name(n)).collect();
        self.claim_names(&mut image, &names)?;
        tracing::info!(image = %id, names = ?image.names, "image imported");
        Ok(image)
    }

    /// Gives `image` the (normalised) `names`, taking them from any other image that had them
    /// (a name points at one image, as in containerd), and writes its record. Call with the
    /// store lock held.
    fn claim_names(&self, image: &mut StoredImage, names: &[String]) -> io::Result<()> {
        for other in self.read_all()? {
            if other.id == image.id {
                image.names = other.names.clone();
                continue;
            }
            if other.names.iter().any(|n| names.contains(n)) {
                let mut other = other;
                other.names.retain(|n| !names.contains(n));
                write_json(
                    &self
                        .root
                        .join("images")
                        .join(other.hex())
                        .join("image.json"),
                    &other,
                )?;
            }
        }
        for n in names {
            if !image.names.contains(n) {
                image.names.push(n.clone());
            }
        }
        write_json(
            &self
                .root
                .join("images")
                .join(image.hex())
                .join("image.json"),
            image,
        )
    }

    /// `docker tag` / `ctr images tag`: adds the name `target` to the image `source` resolves
    /// to (moving the name off any other image). Returns the image, or `None` when `source`
    /// names no image.
    pub fn tag(&self, source: &str, target: &str) -> io::Result<Option<ImageInfo>> {
        let Some(mut image) = self.resolve_stored(source) else {
            return Ok(None);
        };
        let _lock = self.lock()?;
        self.claim_names(&mut image, &[normalize_image_name(target)])?;
        tracing::info!(image = %image.id, names = ?image.names, "image tagged");
        Ok(Some(image.info()))
    }

    /// Every stored image.
    pub fn list(&self) -> io::Result<Vec<ImageInfo>> {
        Ok(self.read_all()?.iter().map(StoredImage::info).collect())
    }

    /// Finds an image by name (`busybox`, `busybox:latest`, `docker.io/library/busybox:latest`,
    /// `name@sha256:<manifest digest>`) or id (`sha256:<hex>`, or a unique hex prefix of ≥ 12).
    pub fn resolve(&self, name: &str) -> Option<ImageInfo> {
        self.resolve_stored(name).map(|s| s.info())
    }

    /// [`ImageStore::resolve`] returning the stored record.
    pub fn resolve_stored(&self, name: &str) -> Option<StoredImage> {
        let all = self.read_all().ok()?;
        let hex = name.strip_prefix("sha256:").unwrap_or(name);
        if hex.len() >= 12 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
            let matches: Vec<&StoredImage> =
                all.iter().filter(|i| i.hex().starts_with(hex)).collect();
            if matches.len() == 1 {
                return Some(matches[0].clone());
            }
        }
        if let Some((_, digest)) = name.split_once('@')
            && let Some(found) = all
                .iter()
                .find(|i| i.manifest_digest.as_deref() == Some(digest) || i.id == digest)
        {
            return Some(found.clone());
        }
        let full = normalize_image_name(name);
        all.into_iter().find(|i| i.names.contains(&full))
    }

    /// Removes a name; the image itself goes once it has no name left (or when addressed by id).
    /// Returns whether anything was removed.
    pub fn remove(&self, name: &str) -> io::Result<bool> {
        let Some(mut image) = self.resolve_stored(name) else {
            return Ok(false);
        };
        let _lock = self.lock()?;
        let full = normalize_image_name(name);
        let by_name = image.names.contains(&full);
        if by_name {
            image.names.retain(|n| n != &full);
        }
        let dir = self.root.join("images").join(image.hex());
        if by_name && !image.names.is_empty() {
            write_json(&dir.join("image.json"), &image)?;
            return Ok(true);
        }
        // Rename first so a concurrent reader never sees a half-deleted rootfs as an image.
        let doomed = self.temp_dir("remove")?;
        let _ = fs::remove_dir(&doomed);
        fs::rename(&dir, &doomed)?;
        drop(_lock);
        fs::remove_dir_all(&doomed)?;
        tracing::info!(image = %image.id, "image removed");
        Ok(true)
    }

    /// Reads every complete image record.
    pub fn read_all(&self) -> io::Result<Vec<StoredImage>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(self.root.join("images"))? {
            let entry = entry?;
            let path = entry.path().join("image.json");
            match fs::read(&path) {
                Ok(bytes) => match serde_json::from_slice::<StoredImage>(&bytes) {
                    Ok(img) => out.push(img),
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "bad image record")
                    }
                },
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    fn lock(&self) -> io::Result<nix::fcntl::Flock<fs::File>> {
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.root.join("lock"))?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, errno)| io::Error::from(errno))
    }

    fn temp_dir(&self, what: &str) -> io::Result<PathBuf> {
        let dir = self
            .root
            .join("tmp")
            .join(format!("{what}-{}", uuid::Uuid::new_v4().simple()));
        fs::create_dir_all(&dir)?;
        Ok(dir)
    }
}

/// The parts of an OCI/docker image config the runtime uses.
#[derive(Deserialize, Default)]
struct ImageConfigFile {
    #[serde(default)]
    config: Option<ContainerDefaults>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct ContainerDefaults {
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: Option<String>,
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexOrManifest {
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

fn oci_candidates(dir: &Path) -> io::Result<Vec<Candidate>> {
    let index: IndexOrManifest = read_json(&dir.join("index.json"))?;
    let mut out = Vec::new();
    for desc in index.manifests.unwrap_or_default() {
        let names = descriptor_names(&desc);
        walk_oci(dir, &desc, names, 0, &mut out)?;
    }
    // The same manifest listed twice (two tags) is one image with both names.
    let mut merged: Vec<Candidate> = Vec::new();
    for c in out {
        if let Some(existing) = merged
            .iter_mut()
            .find(|m| m.manifest_digest == c.manifest_digest)
        {
            for n in c.names {
                if !existing.names.contains(&n) {
                    existing.names.push(n);
                }
            }
        } else {
            merged.push(c);
        }
    }
    Ok(merged)
}

/// Names an index entry gives its image: containerd's full name, else the OCI ref name when it
/// is a whole reference (`busybox:latest`); a bare tag (`latest`) names nothing by itself.
fn descriptor_names(desc: &Descriptor) -> Vec<String> {
    if let Some(n) = desc.annotations.get(ANNOTATION_CONTAINERD_NAME) {
        return vec![n.clone()];
    }
    match desc.annotations.get(ANNOTATION_REF_NAME) {
        Some(r) if r.contains(':') || r.contains('/') => vec![r.clone()],
        _ => Vec::new(),
    }
}

fn walk_oci(
    dir: &Path,
    desc: &Descriptor,
    names: Vec<String>,
    depth: usize,
    out: &mut Vec<Candidate>,
) -> io::Result<()> {
    if depth > 4 {
        return Err(invalid("image index nested too deeply".into()));
    }
    if let Some(p) = &desc.platform
        && !platform_matches(p)
    {
        return Ok(());
    }
    let path = blob_path(dir, &desc.digest)?;
    if !path.is_file() {
        // Single-platform exports of a multi-platform index leave the other blobs out.
        tracing::debug!(digest = %desc.digest, "blob not in archive, skipped");
        return Ok(());
    }
    let doc: IndexOrManifest = read_json(&path)?;
    // An index (or docker manifest list) has `manifests`; an image manifest has `config`.
    if let Some(children) = doc.manifests {
        for child in children {
            let mut child_names = names.clone();
            child_names.extend(descriptor_names(&child));
            walk_oci(dir, &child, child_names, depth + 1, out)?;
        }
        return Ok(());
    }
    let config = doc
        .config
        .ok_or_else(|| invalid(format!("manifest {} has no config", desc.digest)))?;
    let config_bytes = fs::read(blob_path(dir, &config.digest)?)?;
    let mut layers = Vec::new();
    for l in doc.layers.unwrap_or_default() {
        let media = l.media_type.as_deref().unwrap_or_default();
        if media.contains("zstd") {
            return Err(invalid(format!(
                "layer {} is zstd-compressed; only tar and tar+gzip layers are supported",
                l.digest
            )));
        }
        layers.push(blob_path(dir, &l.digest)?);
    }
    out.push(Candidate {
        names,
        manifest_digest: Some(desc.digest.clone()),
        config: config_bytes,
        layers,
    });
    Ok(())
}

fn platform_matches(p: &Platform) -> bool {
    (p.os.is_empty() || p.os == "linux")
        && (p.architecture.is_empty() || p.architecture == oci_arch())
}

/// The OCI architecture name of this machine.
pub fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn blob_path(dir: &Path, digest: &str) -> io::Result<PathBuf> {
    let (alg, hex) = digest
        .split_once(':')
        .ok_or_else(|| invalid(format!("bad digest {digest}")))?;
    if alg.is_empty()
        || hex.is_empty()
        || !alg.chars().all(|c| c.is_ascii_alphanumeric())
        || !hex.chars().all(|c| c.is_ascii_hexdigit())
    {
        return Err(invalid(format!("bad digest {digest}")));
    }
    Ok(dir.join("blobs").join(alg).join(hex))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Vec<String>,
}

fn docker_candidates(dir: &Path) -> io::Result<Vec<Candidate>> {
    let entries: Vec<DockerManifestEntry> = read_json(&dir.join("manifest.json"))?;
    let mut out = Vec::new();
    for e in entries {
        let config = fs::read(safe_join(dir, &e.config)?)?;
        let layers = e
            .layers
            .iter()
            .map(|l| safe_join(dir, l))
            .collect::<io::Result<Vec<_>>>()?;
        out.push(Candidate {
            names: e.repo_tags.unwrap_or_default(),
            manifest_digest: None,
            config,
            layers,
        });
    }
    Ok(out)
}

/// `dir/rel`, refusing paths that leave `dir`.
fn safe_join(dir: &Path, rel: &str) -> io::Result<PathBuf> {
    let p = Path::new(rel);
    if p.is_absolute()
        || p.components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(invalid(format!("path {rel} leaves the archive")));
    }
    Ok(dir.join(p))
}

/// Wraps a reader in a gzip decoder when the stream starts with the gzip magic.
pub(crate) fn maybe_gunzip<R: io::BufRead + 'static + Send>(
    mut r: R,
) -> io::Result<Box<dyn Read + Send>> {
    let head = r.fill_buf()?;
    if head.len() >= 2 && head[0] == 0x1f && head[1] == 0x8b {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(r)))
    } else if head.len() >= 4 && head[..4] == [0x28, 0xb5, 0x2f, 0xfd] {
        Err(invalid(
            "zstd-compressed data is not supported (use tar or tar+gzip)".into(),
        ))
    } else {
        Ok(Box::new(r))
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> io::Result<T> {
    let bytes = fs::read(path)?;
    serde_json::from_slice(&bytes).map_err(|e| invalid(format!("{}: {e}", path.display())))
}

/// Writes JSON atomically (temp file + rename) so readers never see half a record.
pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, path)
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes through to a file while hashing what it writes.
struct HashingWriter {
    inner: fs::File,
    hasher: sha2::Sha256,
}

impl io::Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        sha2::Digest::update(&mut self.hasher, &buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

#[cfg(test)]
mod tests;
