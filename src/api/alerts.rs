//! `GET /api/v1/alerts` (what is firing now) and `POST /api/v1/alerts/{id}/ack`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use tokio::sync::oneshot;

use super::{auth, input, Api, ApiError};
use crate::rules::acknowledge::{AckError, AckRequest};

pub fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route("/api/v1/alerts", get(list))
        .route("/api/v1/alerts/{id}/ack", post(acknowledge))
}

/// Every open alert (what is firing now, independent of any time range), oldest first:
/// `{"alerts": [{id, rule, severity, series, tags, labels, annotations, value, threshold,
/// message, started_at, started_ns, updated_ns, silenced, acknowledged}]}`.
async fn list() -> impl IntoResponse {
    let mut alerts = crate::rules::open_alerts::board().get();
    alerts.sort_by(|a, b| {
        a.started_ns
            .cmp(&b.started_ns)
            .then_with(|| a.id.cmp(&b.id))
    });
    let body = serde_json::json!({ "alerts": alerts }).to_string();
    ([(header::CONTENT_TYPE, "application/json")], body)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    by: String,
    #[serde(default)]
    comment: String,
}

/// Alert ids are 16 hex digits ([`crate::model::alert_id`]).
fn check_id(id: &str) -> Result<(), ApiError> {
    input::hex_id(id, "", "an alert id", "GET /api/v1/alerts")
}

async fn acknowledge(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    auth::require_writer(&headers, &api, "acknowledge an alert")?;
    check_id(&id)?;
    let body: AckBody = input::json_body(&body, "acknowledge")?;
    let by = input::person("by", &body.by)?;
    let comment = input::comment("comment", &body.comment)?;
    let Some(stage) = &api.acks else {
        return Err(ApiError::Unavailable(
            "no rules stage runs in this process, so there are no alerts to acknowledge".into(),
        ));
    };
    let (reply, answer) = oneshot::channel();
    let stopped = || {
        ApiError::Unavailable("the rules stage is stopping; try again once sitewatch runs".into())
    };
    stage
        .send(AckRequest {
            id: id.to_ascii_lowercase(),
            by,
            comment,
            reply,
        })
        .await
        .map_err(|_| stopped())?;
    match answer.await.map_err(|_| stopped())? {
        Ok(view) => Ok((
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({ "alert": view }).to_string(),
        )),
        Err(e @ AckError::NotFound(_)) => Err(ApiError::NotFound(e.to_string())),
        Err(e @ AckError::Already { .. }) => Err(ApiError::Conflict(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_sixteen_hex_digits() {
        assert!(check_id("00ff00ff00ff00ff").is_ok());
        assert!(check_id("00ff00ff00ff00f").is_err());
        assert!(check_id("../../etc/passwd").is_err());
        assert_eq!(check_id("zzzzzzzzzzzzzzzz").unwrap_err().status(), 400);
    }
}
