//! Image reference normalisation as containerd and the kubelet do it (docker/reference's
//! `ParseNormalizedNamed` + `TagNameOnly`): `busybox` == `busybox:latest` ==
//! `docker.io/library/busybox:latest`.

/// The fully-qualified form of an image reference: a domain (`docker.io` unless the first path
/// component looks like a host: has a `.` or `:` or is `localhost`), `library/` for official
/// docker.io images, and `:latest` when neither tag nor digest is given.
pub fn normalize_image_name(name: &str) -> String {
    let name = name.trim();
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
    // docker.io/library is implied only for docker.io; `index.docker.io` is docker.io too.
    let repo = match repo.strip_prefix("index.docker.io/") {
        Some(rest) if rest.contains('/') => format!("docker.io/{rest}"),
        Some(rest) => format!("docker.io/library/{rest}"),
        None => repo,
    };
    format!("{repo}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::normalize_image_name as n;

    #[test]
    fn normalises_like_containerd() {
        assert_eq!(n("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(n("busybox:latest"), "docker.io/library/busybox:latest");
        assert_eq!(
            n("docker.io/library/busybox:latest"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(n("library/busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(n("me/app"), "docker.io/me/app:latest");
        assert_eq!(n("localhost/app"), "localhost/app:latest");
        assert_eq!(n("localhost:5000/app:v1"), "localhost:5000/app:v1");
        assert_eq!(
            n("registry.k8s.io/pause:3.10"),
            "registry.k8s.io/pause:3.10"
        );
        assert_eq!(
            n("busybox@sha256:abcd"),
            "docker.io/library/busybox@sha256:abcd"
        );
        assert_eq!(
            n("index.docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
    }
}
