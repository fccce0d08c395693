//! Secrets (passwords, tokens, communities) referenced from config without living in it.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

/// Where a secret comes from. In TOML:
///
/// ```toml
/// password = { env = "SITEWATCH_MQTT_PASSWORD" }
/// token    = { file = "/etc/sitewatch/influx.token" }
/// password = "inline-only-for-labs"
/// ```
///
/// The value is read when the service starts, so a missing variable or unreadable file is a
/// startup error naming the key, not a silent empty password.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Secret {
    Inline(String),
    Env { env: String },
    File { file: PathBuf },
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {0} is not set (set it, or point the key at a file with {{ file = \"...\" }})")]
    MissingEnv(String),
    #[error("cannot read secret file {path}: {source} (check the path and that the sitewatch user may read it)")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Secret {
    /// Resolves the secret. Trailing newlines are stripped from files, since `echo x > file`
    /// is how most people write them.
    pub fn resolve(&self) -> Result<String, SecretError> {
        match self {
            Secret::Inline(s) => Ok(s.clone()),
            Secret::Env { env } => {
                std::env::var(env).map_err(|_| SecretError::MissingEnv(env.clone()))
            }
            Secret::File { file } => std::fs::read_to_string(file)
                .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
                .map_err(|source| SecretError::File {
                    path: file.clone(),
                    source,
                }),
        }
    }
}

/// Never prints the value, so a secret cannot leak through `{:?}` in a log line.
impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Inline(_) => f.write_str("Secret(inline, redacted)"),
            Secret::Env { env } => write!(f, "Secret(env {env})"),
            Secret::File { file } => write!(f, "Secret(file {})", file.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Holder {
        s: Secret,
    }

    #[test]
    fn parses_all_forms_and_redacts() {
        let h: Holder = toml::from_str(r#"s = "pw""#).unwrap();
        assert_eq!(h.s.resolve().unwrap(), "pw");
        assert!(!format!("{:?}", h.s).contains("pw"));
        let h: Holder = toml::from_str(r#"s = { env = "SITEWATCH_TEST_UNSET_VAR_X" }"#).unwrap();
        assert!(matches!(h.s.resolve(), Err(SecretError::MissingEnv(_))));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tok");
        std::fs::write(&p, "abc\n").unwrap();
        let h: Holder = toml::from_str(&format!("s = {{ file = {:?} }}", p)).unwrap();
        assert_eq!(h.s.resolve().unwrap(), "abc");
    }
}
