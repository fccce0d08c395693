//! The `[api]` table.
//!
//! ```toml
//! [api]
//! # Bearer token every write (acknowledge, silence) must send; without it writes are refused.
//! token = { env = "SITEWATCH_API_TOKEN" }     # or { file = "/etc/sitewatch/api-token" }
//! # Where the silences made through the API are kept across restarts; a relative path is
//! # under the state directory, like [rules] state_file.
//! silences_file = "silences.json"
//! ```

use serde::Deserialize;

use crate::secret::Secret;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    #[serde(default)]
    pub token: Option<Secret>,
    #[serde(default)]
    pub silences_file: Option<std::path::PathBuf>,
}

impl ApiConfig {
    /// The token, read from its secret and trimmed: the service checks writes against it and
    /// `sitewatch ack`/`silence` send it, so both must read it the same way.
    pub fn token(&self) -> Result<Option<String>, crate::secret::SecretError> {
        self.token
            .as_ref()
            .map(|s| s.resolve().map(|t| t.trim().to_string()))
            .transpose()
    }
}
