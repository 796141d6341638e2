//! `kube::Client`s from kubeconfig files.

use std::path::Path;

use base64::Engine as _;
use http::{HeaderName, HeaderValue};
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::Error;

/// How to build a client.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// `User-Agent` header (e.g. `kumo-controller-manager/0.1.0`); kube's default if `None`.
    pub user_agent: Option<String>,
    /// Kubeconfig context to use; the current context if `None`.
    pub context: Option<String>,
}

impl ClientOptions {
    /// Options with a user agent.
    pub fn with_user_agent(user_agent: impl Into<String>) -> Self {
        ClientOptions {
            user_agent: Some(user_agent.into()),
            context: None,
        }
    }

    /// Reads `path` and builds the `kube::Config` these options ask for.
    pub async fn config(&self, path: &Path) -> Result<kube::Config, Error> {
        let err = |message: String| Error::Kubeconfig {
            path: path.display().to_string(),
            message,
        };
        let kubeconfig = Kubeconfig::read_from(path).map_err(|e| err(e.to_string()))?;
        let opts = KubeConfigOptions {
            context: self.context.clone(),
            ..Default::default()
        };
        let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &opts)
            .await
            .map_err(|e| err(e.to_string()))?;
        if let Some(agent) = &self.user_agent {
            let value =
                HeaderValue::from_str(agent).map_err(|e| err(format!("user agent: {e}")))?;
            config
                .headers
                .push((HeaderName::from_static("user-agent"), value));
        }
        Ok(config)
    }

    /// Reads `path` and builds a client.
    pub async fn client(&self, path: &Path) -> Result<kube::Client, Error> {
        let config = self.config(path).await?;
        Ok(kube::Client::try_from(config)?)
    }
}

/// A client for the kubeconfig at `path` (its current context).
pub async fn client_from_kubeconfig(path: &Path) -> Result<kube::Client, Error> {
    ClientOptions::default().client(path).await
}

/// A client for the kubeconfig at `path` that sends `user_agent` (e.g.
/// `kumo-scheduler/0.1.0`).
pub async fn client_from_kubeconfig_with_user_agent(
    path: &Path,
    user_agent: &str,
) -> Result<kube::Client, Error> {
    ClientOptions::with_user_agent(user_agent)
        .client(path)
        .await
}

/// The PEM of the current context's cluster CA (`certificate-authority-data`, or the file named
/// by `certificate-authority`), if the kubeconfig has one.
pub fn kubeconfig_ca_pem(path: &Path) -> Result<Option<String>, Error> {
    let err = |message: String| Error::Kubeconfig {
        path: path.display().to_string(),
        message,
    };
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| err(e.to_string()))?;
    let context_name = kubeconfig.current_context.clone().unwrap_or_default();
    let cluster_name = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == context_name)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone());
    let cluster = kubeconfig
        .clusters
        .iter()
        .find(|c| Some(&c.name) == cluster_name.as_ref())
        .or_else(|| kubeconfig.clusters.first())
        .and_then(|c| c.cluster.as_ref());
    let Some(cluster) = cluster else {
        return Ok(None);
    };
    if let Some(data) = &cluster.certificate_authority_data {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| err(format!("certificate-authority-data: {e}")))?;
        return String::from_utf8(bytes)
            .map(Some)
            .map_err(|e| err(format!("certificate-authority-data: {e}")));
    }
    if let Some(file) = &cluster.certificate_authority {
        let file = Path::new(file);
        let file = if file.is_relative() {
            path.parent().unwrap_or(Path::new(".")).join(file)
        } else {
            file.to_path_buf()
        };
        return std::fs::read_to_string(&file)
            .map(Some)
            .map_err(|e| err(format!("{}: {e}", file.display())));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_ca_and_builds_client_with_agent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kubeconfig");
        let ca = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let data = base64::engine::general_purpose::STANDARD.encode(ca);
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:1\n    certificate-authority-data: {data}\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\nusers:\n- name: u\n  user:\n    token: abc\n"
            ),
        )
        .expect("write");
        assert_eq!(kubeconfig_ca_pem(&path).expect("ca").as_deref(), Some(ca));
        let cfg = ClientOptions::with_user_agent("kumo-test/0.1.0")
            .config(&path)
            .await
            .expect("config");
        assert!(
            cfg.headers
                .iter()
                .any(|(k, v)| k == "user-agent" && v == "kumo-test/0.1.0")
        );
    }
}
