//! The `[api]` table.
//!
//! ```toml
//! [api]
//! # Bearer token every write (acknowledge, silence) must send; without it writes are refused.
//! token = { env = "SITEWATCH_API_TOKEN" }     # or { file = "/etc/sitewatch/api-token" }
//! ```

use serde::Deserialize;

use crate::secret::Secret;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    #[serde(default)]
    pub token: Option<Secret>,
}
