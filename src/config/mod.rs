//! Configuration schema and loading.

pub mod secret;
pub use secret::{Secret, SecretError};
