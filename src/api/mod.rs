//! The operations API on the service endpoint (`[service] listen`, loopback by default):
//! what is firing now, acknowledgements and (see [`silences`]) silences made on the spot.
//!
//! | method and path                    | what                                   | token |
//! |------------------------------------|----------------------------------------|-------|
//! | `GET /api/v1/alerts`               | every open alert, oldest first         | no    |
//! | `POST /api/v1/alerts/{id}/ack`     | acknowledge (`{"by", "comment"}`)      | yes   |
//! | `GET /api/v1/silences[/{id}]`      | API and rule-file silences, with state | no    |
//! | `POST /api/v1/silences`            | add a silence (see [`silence_spec`])   | yes   |
//! | `DELETE /api/v1/silences/{id}`     | expire an API silence now (`?by=`)     | yes   |
//!
//! Reads are open to whoever reaches the endpoint; every write needs
//! `Authorization: Bearer <[api] token>`, and with no token configured writes are refused
//! (safe by default). Inputs are validated with a JSON `{"error": ...}` and a 4xx status;
//! every change is logged with who made it. docs/api.md is the operator's reference.

pub mod alerts;
pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub mod error;
pub mod input;
pub mod silence_spec;
pub mod silence_store;
pub mod silences;

use std::sync::Arc;

use axum::Router;

pub use config::ApiConfig;
pub use error::ApiError;

use crate::rules::acknowledge::AckSender;
use silence_store::SilenceStore;

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
        let token = match cfg.and_then(|c| c.token.as_ref()) {
            Some(secret) => {
                let token = secret
                    .resolve()
                    .map_err(ApiSetupError::Token)?
                    .trim()
                    .to_string();
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

    /// The API's routes, to merge into the service endpoint's router.
    pub fn routes(self: Arc<Api>) -> Router {
        alerts::routes().merge(silences::routes()).with_state(self)
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
