//! Configuration and logging shared by every kumo component.
//!
//! Every component reads its settings in three layers, later ones winning:
//! a file given with `--config` (TOML, or YAML by extension), environment variables
//! `KUMO_<KEY>` (`KUMO_DATA_DIR` for `data-dir`), then command-line flags. Keys are the flag
//! names (`data-dir`, `listen-client-urls` …). An invalid value or an unknown key in a file is
//! an error that names the key and where it came from.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A configuration that could not be read or did not validate.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid YAML in config file {path}: {message}")]
    Yaml { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl From<figment::Error> for ConfigError {
    fn from(e: figment::Error) -> Self {
        // One line per problem, each naming the key and its source (file, env var, flag).
        let lines: Vec<String> = e
            .into_iter()
            .map(|err| {
                let key = err.path.join(".");
                let src = err
                    .metadata
                    .as_ref()
                    .map(
                        |m| match &err.metadata.as_ref().and_then(|m| m.source.as_ref()) {
                            Some(s) => format!("{} {}", m.name, s),
                            None => m.name.to_string(),
                        },
                    )
                    .unwrap_or_default();
                let kind = err.kind.to_string();
                // Name the exact variable rather than "`KUMO_` environment variable(s)".
                let src = if src.contains("environment variable") && !key.is_empty() {
                    format!(
                        "environment variable KUMO_{}",
                        key.to_ascii_uppercase().replace(['-', '.'], "_")
                    )
                } else {
                    src
                };
                match (key.is_empty(), src.is_empty()) {
                    (false, false) => format!("key `{key}` (from {src}): {kind}"),
                    (false, true) => format!("key `{key}`: {kind}"),
                    (true, false) => format!("{kind} (from {src})"),
                    (true, true) => kind,
                }
            })
            .collect();
        ConfigError::Invalid(lines.join("; "))
    }
}

/// Loads a component configuration `T`.
///
/// `defaults` provides every value, `file` is the optional `--config` file, `flags` is a value
/// that serializes only the flags the user set (use `#[serde(skip_serializing_if =
/// "Option::is_none")]`), and environment variables `KUMO_*` whose name matches a key of `T`
/// apply between the file and the flags.
pub fn load<T, F>(defaults: &T, file: Option<&Path>, flags: &F) -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned,
    F: Serialize,
{
    let known: Vec<String> = match serde_json::to_value(defaults) {
        Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    };
    let mut fig = Figment::from(Serialized::defaults(defaults));
    if let Some(path) = file {
        fig = match path.extension().and_then(|e| e.to_str()) {
            Some("yaml") | Some("yml") => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                let value: serde_json::Value =
                    serde_saphyr::from_str(&text).map_err(|e| ConfigError::Yaml {
                        path: path.to_path_buf(),
                        message: e.to_string(),
                    })?;
                fig.merge(YamlFile {
                    path: path.to_path_buf(),
                    value,
                })
            }
            _ => {
                if !path.exists() {
                    return Err(ConfigError::Read {
                        path: path.to_path_buf(),
                        source: std::io::Error::new(std::io::ErrorKind::NotFound, "not found"),
                    });
                }
                fig.merge(Toml::file_exact(path))
            }
        };
    }
    let env = Env::prefixed("KUMO_")
        .map(|k| k.as_str().to_ascii_lowercase().replace('_', "-").into())
        .filter(move |k| known.iter().any(|n| n.as_str() == k.as_str()));
    fig = fig.merge(env).merge(Serialized::globals(flags));
    Ok(fig.extract()?)
}

/// A YAML config file, parsed with serde-saphyr, reported by its path in errors.
struct YamlFile {
    path: PathBuf,
    value: serde_json::Value,
}

impl figment::Provider for YamlFile {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named("YAML file").source(figment::Source::File(self.path.clone()))
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        Serialized::globals(&self.value).data()
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?} (use text or json)")),
        }
    }
}

/// Installs the global tracing subscriber writing structured logs to stderr.
/// `RUST_LOG` overrides `level` when set.
pub fn init_logging(level: &str, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests) is not an error worth failing over.
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(rename_all = "kebab-case", deny_unknown_fields)]
    struct Conf {
        data_dir: String,
        quota_backend_bytes: u64,
    }

    #[derive(Serialize, Default)]
    #[serde(rename_all = "kebab-case")]
    struct Flags {
        #[serde(skip_serializing_if = "Option::is_none")]
        data_dir: Option<String>,
    }

    fn defaults() -> Conf {
        Conf {
            data_dir: "default.kumo".into(),
            quota_backend_bytes: 10,
        }
    }

    #[test]
    fn flags_beat_file_and_file_beats_defaults() {
        let dir = std::env::temp_dir().join(format!("kumo-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let file = dir.join("c.toml");
        std::fs::write(&file, "data-dir = \"from-file\"\nquota-backend-bytes = 7\n")
            .expect("write");
        let c: Conf = load(&defaults(), Some(&file), &Flags::default()).expect("load");
        assert_eq!(c.data_dir, "from-file");
        assert_eq!(c.quota_backend_bytes, 7);
        let c: Conf = load(
            &defaults(),
            Some(&file),
            &Flags {
                data_dir: Some("from-flag".into()),
            },
        )
        .expect("load");
        assert_eq!(c.data_dir, "from-flag");
        let yaml = dir.join("c.yaml");
        std::fs::write(&yaml, "data-dir: from-yaml\n").expect("write");
        let c: Conf = load(&defaults(), Some(&yaml), &Flags::default()).expect("load");
        assert_eq!(c.data_dir, "from-yaml");
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(rename_all = "kebab-case", deny_unknown_fields)]
    struct EnvConf {
        config_env_test_value: u64,
    }

    #[test]
    // figment's Jail closure returns figment's (large) error type.
    #[allow(clippy::result_large_err)]
    fn env_beats_defaults_and_bad_env_names_the_variable() {
        figment::Jail::expect_with(|jail| {
            let defaults = EnvConf {
                config_env_test_value: 1,
            };
            jail.set_env("KUMO_CONFIG_ENV_TEST_VALUE", "42");
            let c: EnvConf = load(&defaults, None, &Flags::default()).expect("load");
            assert_eq!(c.config_env_test_value, 42);
            jail.set_env("KUMO_CONFIG_ENV_TEST_VALUE", "many");
            let err = load::<EnvConf, _>(&defaults, None, &Flags::default())
                .expect_err("must fail")
                .to_string();
            assert!(err.contains("config-env-test-value"), "{err}");
            assert!(err.contains("KUMO_CONFIG_ENV_TEST_VALUE"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn errors_name_the_bad_key() {
        let dir = std::env::temp_dir().join(format!("kumo-config-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let file = dir.join("bad.toml");
        std::fs::write(&file, "quota-backend-bytes = \"lots\"\n").expect("write");
        let err = load::<Conf, _>(&defaults(), Some(&file), &Flags::default())
            .expect_err("must fail")
            .to_string();
        assert!(err.contains("quota-backend-bytes"), "{err}");
        assert!(err.contains("bad.toml"), "{err}");
        std::fs::write(&file, "data-dirr = \"x\"\n").expect("write");
        let err = load::<Conf, _>(&defaults(), Some(&file), &Flags::default())
            .expect_err("must fail")
            .to_string();
        assert!(err.contains("data-dirr"), "{err}");
    }
}
