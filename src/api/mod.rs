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
pub mod shared;
pub mod silence_spec;
pub mod silence_store;
pub mod silences;

use std::sync::Arc;

use axum::Router;

pub use config::ApiConfig;
pub use error::ApiError;
pub use shared::{Api, ApiSetupError, MIN_TOKEN_LEN};

/// The API's routes, to merge into the service endpoint's router.
pub fn routes(api: Arc<Api>) -> Router {
    alerts::routes().merge(silences::routes()).with_state(api)
}
