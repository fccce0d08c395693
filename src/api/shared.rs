//! What the API's handlers share ([`Api`]), built once at start-up. Its own file so the
//! handlers (which need it) and `mod.rs` (which routes to them) import no cycle.

use std::sync::Arc;

use super::config::ApiConfig;
use super::silence_store::SilenceStore;
use crate::rules::acknowledge::AckSender;

/// What the API's handlers share.
pub struct Api {
    /// The bearer token writes need; `None` refuses every write.
    pub token: Option<String>,
    /// The rules stage, which owns the open alerts; `None` where no stage runs.
    pub acks: Option<AckSender>,
    /// The silences made through the API, which the engine gates on too.
    pub silences: Arc<SilenceStore>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token itself.
        f.debug_struct("Api")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish_non_exhaustive()
    }
}

impl Api {
    /// Reads the token (`{ env = ... }` / `{ file = ... }`) once at start-up.
    pub fn new(
        cfg: Option<&ApiConfig>,
        acks: Option<AckSender>,
        silences: Arc<SilenceStore>,
    ) -> Result<Api, ApiSetupError> {
        let configured = match cfg {
            Some(c) => c.token().map_err(ApiSetupError::Token)?,
            None => None,
        };
        let token = match configured {
            Some(token) => {
                if token.len() < MIN_TOKEN_LEN {
                    return Err(ApiSetupError::ShortToken(token.len()));
                }
                Some(token)
            }
            None => None,
        };
        Ok(Api {
            token,
            acks,
            silences,
        })
    }
}

/// A token shorter than this is refused at start-up: it would be guessable.
pub const MIN_TOKEN_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum ApiSetupError {
    #[error("[api] token: {0}")]
    Token(#[source] crate::secret::SecretError),
    #[error("[api] token: is {0} characters long; use at least {MIN_TOKEN_LEN} (e.g. `openssl rand -hex 32`)")]
    ShortToken(usize),
}
