use std::io::Write;

use super::*;

enum E<'a> {
    Dir(&'a str),
    File(&'a str, &'a str),
    Link(&'a str, &'a str),
}

fn layer(entries: &[E<'_>], gzip: bool) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        match e {
            E::Dir(p) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, p, io::empty()).expect("dir");
            }
            E::File(p, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, data.as_bytes()).expect("file");
            }
            E::Link(p, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, p, target).expect("link");
            }
        }
    }
    let tar = b.into_inner().expect("tar");
    if gzip {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&tar).expect("gz");
        enc.finish().expect("gz")
    } else {
        tar
    }
}

fn outer(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (p, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, p, &data[..]).expect("append");
    }
    b.into_inner().expect("tar")
}

fn config(cmd: &[&str]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": oci_arch(), "os": "linux",
        "config": {"Cmd": cmd, "Entrypoint": ["/bin/entry"], "Env": ["PATH=/bin", "A=1"],
                   "WorkingDir": "/work", "User": "65534"},
        "rootfs": {"type": "layers", "diff_ids": []},
    }))
    .expect("json")
}

fn two_layers() -> Vec<Vec<u8>> {
    let l1 = layer(
        &[
            E::Dir("bin/"),
            E::File("bin/entry", "v1"),
            E::File("etc/keep", "keep"),
            E::File("etc/gone", "gone"),
            E::Dir("data/"),
            E::File("data/old1", "x"),
            E::Dir("data/sub/"),
            E::File("data/sub/old2", "y"),
            E::Link("bin/sh", "entry"),
            E::File("replace/me", "dir-before"),
        ],
        false,
    );
    let l2 = layer(
        &[
            // The new file comes before the opaque marker: it must survive.
            E::File("data/new", "n"),
            E::File("data/.wh..wh..opq", ""),
            E::File("etc/.wh.gone", ""),
            E::File("bin/entry", "v2"),
            E::File("replace", "now a file"),
            E::File("./.wh.nothing-here", ""),
        ],
        true,
    );
    vec![l1, l2]
}

fn oci_archive(layers: &[Vec<u8>], cfg: &[u8], annotations: serde_json::Value) -> Vec<u8> {
    let mut files = vec![(
        "oci-layout".to_string(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    )];
    let cfg_d = sha256_hex(cfg);
    files.push((format!("blobs/sha256/{cfg_d}"), cfg.to_vec()));
    let mut layer_descs = Vec::new();
    for l in layers {
        let d = sha256_hex(l);
        files.push((format!("blobs/sha256/{d}"), l.clone()));
        layer_descs.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": format!("sha256:{d}"), "size": l.len()
        }));
    }
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{cfg_d}"), "size": cfg.len()},
        "layers": layer_descs,
    }))
    .expect("json");
    let man_d = sha256_hex(&manifest);
    files.push((format!("blobs/sha256/{man_d}"), manifest.clone()));
    // A nested index, as `docker save` / buildx write multi-platform images, with another
    // platform's manifest whose blob is absent.
    let nested = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{man_d}"), "size": manifest.len(),
             "platform": {"architecture": oci_arch(), "os": "linux"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{}", "0".repeat(64)), "size": 1,
             "platform": {"architecture": "s390x", "os": "linux"}},
        ],
    }))
    .expect("json");
    let nested_d = sha256_hex(&nested);
    files.push((format!("blobs/sha256/{nested_d}"), nested.clone()));
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": format!("sha256:{nested_d}"),
                       "size": nested.len(), "annotations": annotations}],
    }))
    .expect("json");
    files.push(("index.json".to_string(), index));
    outer(&files)
}

fn check_rootfs(store: &ImageStore, id: &str) {
    let root = store.rootfs(id);
    assert_eq!(
        fs::read_to_string(root.join("bin/entry")).expect("entry"),
        "v2"
    );
    assert_eq!(
        fs::read_link(root.join("bin/sh")).expect("link"),
        Path::new("entry")
    );
    assert_eq!(
        fs::read_to_string(root.join("etc/keep")).expect("keep"),
        "keep"
    );
    assert!(!root.join("etc/gone").exists(), "whiteout removes etc/gone");
    assert!(
        !root.join("data/old1").exists(),
        "opaque dir drops lower files"
    );
    assert!(
        !root.join("data/sub").exists(),
        "opaque dir drops lower dirs"
    );
    assert_eq!(fs::read_to_string(root.join("data/new")).expect("new"), "n");
    assert_eq!(
        fs::read_to_string(root.join("replace")).expect("replace"),
        "now a file"
    );
    assert!(!root.join("data/.wh..wh..opq").exists());
    assert!(!root.join("etc/.wh.gone").exists());
}

#[test]
fn imports_oci_layout_with_whiteouts_and_nested_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ImageStore::open(&dir.path().join("store")).expect("open");
    let cfg = config(&["serve"]);
    let tar_path = dir.path().join("img.tar");
    fs::write(
        &tar_path,
        oci_archive(
            &two_layers(),
            &cfg,
            serde_json::json!({"io.containerd.image.name": "docker.io/kumo/app:v1",
                               "org.opencontainers.image.ref.name": "v1"}),
        ),
    )
    .expect("write");
    let imported = store.import(&tar_path).expect("import");
    assert_eq!(imported.len(), 1);
    let img = &imported[0];
    assert_eq!(img.id, format!("sha256:{}", sha256_hex(&cfg)));
    assert_eq!(img.names, vec!["docker.io/kumo/app:v1".to_string()]);
    assert_eq!(img.cmd, vec!["serve"]);
    assert_eq!(img.entrypoint, vec!["/bin/entry"]);
    assert_eq!(img.env, vec!["PATH=/bin", "A=1"]);
    assert_eq!(img.working_dir.as_deref(), Some("/work"));
    check_rootfs(&store, &img.id);
    assert_eq!(
        store
            .resolve_stored("kumo/app:v1")
            .expect("by name")
            .user
            .as_deref(),
        Some("65534")
    );
    assert!(store.resolve("kumo/app").is_none(), "latest is another tag");
    assert!(store.resolve(&img.id).is_some(), "by id");
    assert!(store.resolve(&img.id[7..20]).is_some(), "by id prefix");
    let manifest_digest = store
        .resolve_stored("kumo/app:v1")
        .and_then(|s| s.manifest_digest)
        .expect("manifest digest");
    assert!(
        store
            .resolve(&format!("docker.io/kumo/app@{manifest_digest}"))
            .is_some()
    );

    // Importing again is a no-op that keeps one image.
    store.import(&tar_path).expect("re-import");
    assert_eq!(store.list().expect("list").len(), 1);

    // Removing the only name removes the image and its rootfs.
    assert!(store.remove("docker.io/kumo/app:v1").expect("rm"));
    assert!(store.list().expect("list").is_empty());
    assert!(!store.rootfs(&img.id).exists());
    assert!(!store.remove("kumo/app:v1").expect("rm again"));
}

#[test]
fn imports_docker_archive_and_normalises_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ImageStore::open(&dir.path().join("store")).expect("open");
    let layers = two_layers();
    let cfg = config(&["sh"]);
    let cfg_name = format!("{}.json", sha256_hex(&cfg));
    let mut files = vec![(cfg_name.clone(), cfg.clone())];
    let mut layer_names = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let n = format!("layer{i}/layer.tar");
        files.push((n.clone(), l.clone()));
        layer_names.push(n);
    }
    files.insert(
        0,
        (
            "manifest.json".to_string(),
            serde_json::to_vec(&serde_json::json!([
                {"Config": cfg_name, "RepoTags": ["busybox:latest", "kumo/extra:2"], "Layers": layer_names}
            ]))
            .expect("json"),
        ),
    );
    let tar_path = dir.path().join("docker.tar");
    fs::write(&tar_path, outer(&files)).expect("write");
    let imported = store.import(&tar_path).expect("import");
    assert_eq!(imported.len(), 1);
    assert_eq!(
        imported[0].names,
        vec![
            "docker.io/library/busybox:latest".to_string(),
            "docker.io/kumo/extra:2".to_string()
        ]
    );
    check_rootfs(&store, &imported[0].id);
    for n in [
        "busybox",
        "busybox:latest",
        "docker.io/library/busybox:latest",
        "library/busybox",
    ] {
        assert_eq!(
            store.resolve(n).map(|i| i.id),
            Some(imported[0].id.clone()),
            "{n}"
        );
    }

    // A second image taking the name `busybox:latest` moves the name (a re-tag).
    let cfg2 = config(&["other"]);
    let cfg2_name = format!("{}.json", sha256_hex(&cfg2));
    let files2 = vec![
        (
            "manifest.json".to_string(),
            serde_json::to_vec(&serde_json::json!([
                {"Config": cfg2_name, "RepoTags": ["docker.io/library/busybox:latest"], "Layers": ["l.tar"]}
            ]))
            .expect("json"),
        ),
        (cfg2_name.clone(), cfg2.clone()),
        ("l.tar".to_string(), layer(&[E::File("x", "y")], false)),
    ];
    let tar2 = dir.path().join("docker2.tar");
    fs::write(&tar2, outer(&files2)).expect("write");
    let second = store.import(&tar2).expect("import 2");
    assert_eq!(
        store.resolve("busybox").map(|i| i.id),
        Some(second[0].id.clone())
    );
    let first = store.resolve(&imported[0].id).expect("first still there");
    assert_eq!(first.names, vec!["docker.io/kumo/extra:2".to_string()]);

    // A tag adds a name, moving it off the image that had it.
    let tagged = store
        .tag(&imported[0].id, "kumo.test/busybox:1")
        .expect("tag")
        .expect("source found");
    assert_eq!(
        tagged.names,
        vec![
            "docker.io/kumo/extra:2".to_string(),
            "kumo.test/busybox:1".to_string()
        ]
    );
    store
        .tag("busybox", "kumo/extra:2")
        .expect("tag")
        .expect("source found");
    assert_eq!(
        store.resolve("kumo/extra:2").map(|i| i.id),
        Some(second[0].id.clone())
    );
    assert_eq!(
        store.resolve(&imported[0].id).expect("first").names,
        vec!["kumo.test/busybox:1".to_string()]
    );
    assert!(store.tag("nothing:here", "x").expect("tag").is_none());

    // Removing by a name another image keeps leaves the other names alone.
    assert!(store.remove("busybox").expect("rm"));
    assert_eq!(store.list().expect("list").len(), 2);
}

#[test]
fn rejects_unknown_archives_and_escaping_paths() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ImageStore::open(&dir.path().join("store")).expect("open");
    let p = dir.path().join("junk.tar");
    fs::write(&p, outer(&[("hello.txt".to_string(), b"hi".to_vec())])).expect("write");
    assert!(store.import(&p).is_err());
    let p2 = dir.path().join("evil.tar");
    fs::write(
        &p2,
        outer(&[(
            "manifest.json".to_string(),
            br#"[{"Config":"../../etc/passwd","RepoTags":["x"],"Layers":[]}]"#.to_vec(),
        )]),
    )
    .expect("write");
    assert!(store.import(&p2).is_err());
    // Nothing half-imported is left behind.
    assert!(store.list().expect("list").is_empty());
    assert_eq!(
        fs::read_dir(store.root().join("tmp")).expect("tmp").count(),
        0
    );
}

#[test]
fn imports_a_rootfs_tar_like_docker_import() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ImageStore::open(&dir.path().join("store")).expect("open");
    let tar_path = dir.path().join("rootfs.tar");
    fs::write(&tar_path, &two_layers()[0]).expect("write");
    let cmd = vec!["sh".to_string()];
    let img = store
        .import_rootfs(&tar_path, "kumo.test/base:1", &cmd)
        .expect("import");
    assert_eq!(img.names, vec!["kumo.test/base:1".to_string()]);
    assert_eq!(img.cmd, cmd);
    assert!(
        img.env.iter().any(|e| e.starts_with("PATH=")),
        "{:?}",
        img.env
    );
    // The same tar and command give the same id; the name then points at it again.
    let again = store
        .import_rootfs(&tar_path, "kumo.test/base:2", &cmd)
        .expect("import again");
    assert_eq!(again.id, img.id);
    assert_eq!(store.list().expect("list").len(), 1);
    assert!(store.rootfs(&img.id).is_dir());
    // Not a tar: a clear error, nothing stored.
    let junk = dir.path().join("junk.tar");
    fs::write(&junk, b"definitely not a tar archive").expect("write");
    let err = store
        .import_rootfs(&junk, "kumo.test/junk:1", &cmd)
        .expect_err("junk");
    assert!(err.to_string().contains("junk.tar"), "{err}");
    assert_eq!(store.list().expect("list").len(), 1);
}
