//! Applying one image layer (a tar, maybe gzip-compressed) onto a root filesystem, with the
//! OCI whiteout rules: `.wh.NAME` deletes `NAME` from lower layers and `.wh..wh..opq` empties
//! its directory of everything lower layers put there.
//!
//! Two passes over the layer: deletions first, then extraction. That way a whiteout never
//! removes something this same layer adds, whatever the entry order inside the tar.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use super::maybe_gunzip;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

pub(crate) fn apply_layer(layer: &Path, rootfs: &Path) -> io::Result<()> {
    let open = || -> io::Result<tar::Archive<Box<dyn io::Read + Send>>> {
        let file = fs::File::open(layer)
            .map_err(|e| io::Error::new(e.kind(), format!("layer {}: {e}", layer.display())))?;
        Ok(tar::Archive::new(maybe_gunzip(io::BufReader::new(file))?))
    };

    // Pass 1: whiteouts.
    let mut archive = open()?;
    for entry in archive.entries()? {
        let entry = entry?;
        let Some(rel) = clean_path(&entry.path()?) else {
            continue;
        };
        let Some(file_name) = rel.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !file_name.starts_with(WHITEOUT_PREFIX) {
            continue;
        }
        let parent = rel.parent().unwrap_or(Path::new(""));
        let Some(parent_dir) = real_dir_inside(rootfs, parent) else {
            continue;
        };
        if file_name == OPAQUE {
            for child in fs::read_dir(&parent_dir)? {
                remove_any(&child?.path())?;
            }
        } else {
            let target = &file_name[WHITEOUT_PREFIX.len()..];
            if target.is_empty() || target == "." || target == ".." {
                continue;
            }
            remove_any(&parent_dir.join(target))?;
        }
    }

    // Pass 2: contents.
    let root_owned = nix::unistd::geteuid().is_root();
    let mut archive = open()?;
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(root_owned);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(true);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let Some(rel) = clean_path(&entry.path()?) else {
            continue;
        };
        if rel.as_os_str().is_empty() {
            continue;
        }
        if rel
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(WHITEOUT_PREFIX))
        {
            continue;
        }
        let kind = entry.header().entry_type();
        if kind.is_character_special() || kind.is_block_special() {
            // Device nodes come from the runtime's minimal /dev, never from images.
            continue;
        }
        // Replace whatever a lower layer had at this path unless both are directories (then
        // the contents merge).
        if let Some(parent) = real_dir_inside(rootfs, rel.parent().unwrap_or(Path::new("")))
            && let Some(name) = rel.file_name()
            && let Ok(meta) = fs::symlink_metadata(parent.join(name))
            && !(meta.is_dir() && kind.is_dir())
        {
            remove_any(&parent.join(name))?;
        }
        entry.unpack_in(rootfs).map_err(|e| {
            // tar's error text names the path; the cause is in the source chain.
            let cause = std::error::Error::source(&e)
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            io::Error::new(e.kind(), format!("{e}{cause}"))
        })?;
    }
    Ok(())
}

/// A tar member path relative to the root: no leading `/` or `./`, no `..`.
fn clean_path(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            Component::ParentDir => return None,
        }
    }
    Some(out)
}

/// `rootfs/rel` when every component of it is a real directory (no symlink can make a
/// whiteout delete something outside the rootfs).
fn real_dir_inside(rootfs: &Path, rel: &Path) -> Option<PathBuf> {
    let mut cur = rootfs.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        let meta = fs::symlink_metadata(&cur).ok()?;
        if !meta.is_dir() {
            return None;
        }
    }
    Some(cur)
}

fn remove_any(p: &Path) -> io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}
