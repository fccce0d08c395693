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
