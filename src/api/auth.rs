//! Who may write: a request carrying `Authorization: Bearer <[api] token>`.

use axum::http::{header, HeaderMap};

use super::{Api, ApiError};

/// Refuses a write without the configured token (or any write when none is configured).
/// `action` names the write in the error and the log ("acknowledge", "add a silence").
pub fn require_writer(headers: &HeaderMap, api: &Api, action: &str) -> Result<(), ApiError> {
    let Some(expected) = api.token.as_deref() else {
        tracing::warn!(action, "API write refused: no [api] token is configured");
        return Err(ApiError::Forbidden(format!(
            "cannot {action}: writes through the API are disabled until [api] token is set \
             (e.g. token = {{ env = \"SITEWATCH_API_TOKEN\" }}, see docs/api.md)"
        )));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    match given {
        None => {
            tracing::warn!(action, "API write refused: no bearer token");
            Err(ApiError::Unauthorized(format!(
                "cannot {action}: send `Authorization: Bearer <token>` with the token of [api] token \
                 (sitewatch ack/silence read it from SITEWATCH_API_TOKEN or --token)"
            )))
        }
        Some(t) if constant_time_eq(t.as_bytes(), expected.as_bytes()) => Ok(()),
        Some(_) => {
            tracing::warn!(action, "API write refused: wrong bearer token");
            Err(ApiError::Unauthorized(format!(
                "cannot {action}: the bearer token does not match [api] token"
            )))
        }
    }
}

/// Compares without an early exit, so the time taken does not tell how much of a guess
/// was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn api(token: Option<&str>) -> Api {
        let nowhere = std::path::PathBuf::from("never-written/silences.json");
        Api {
            token: token.map(str::to_string),
            acks: None,
            silences: std::sync::Arc::new(
                crate::api::silence_store::SilenceStore::load(nowhere, Default::default()).unwrap(),
            ),
        }
    }

    fn bearer(t: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
        );
        h
    }

    #[test]
    fn writes_need_the_configured_token() {
        let a = api(Some("0123456789abcdef"));
        assert_eq!(
            require_writer(&bearer("0123456789abcdef"), &a, "ack"),
            Ok(())
        );
        let wrong = require_writer(&bearer("0123456789abcdeX"), &a, "ack").unwrap_err();
        assert_eq!(wrong.status(), 401);
        assert!(wrong.to_string().contains("does not match"), "{wrong}");
        let none = require_writer(&HeaderMap::new(), &a, "ack").unwrap_err();
        assert_eq!(none.status(), 401);
        assert!(none.to_string().contains("Authorization: Bearer"), "{none}");
        let off = require_writer(&bearer("anything"), &api(None), "ack").unwrap_err();
        assert_eq!(off.status(), 403);
        assert!(off.to_string().contains("[api] token"), "{off}");
    }

    #[test]
    fn comparison_is_exact() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
