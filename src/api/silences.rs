//! `POST/GET/DELETE /api/v1/silences`: silences made on the spot, listed with the rule
//! files' `[[silence]]` (which only a file edit changes).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Uri};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use jiff::Timestamp;
use serde_json::{json, Value};

use super::silence_spec::{self, Record};
use super::silence_store::SilenceState;
use super::{auth, input, Api, ApiError};
use crate::rules::silence::Silence;

pub fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route("/api/v1/silences", get(list).post(add))
        .route("/api/v1/silences/{id}", get(one).delete(expire))
}

fn json_answer(v: Value) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string())
}

/// A rule file's silence is named by its place: `file-` and 16 hex digits of `file:line`.
fn file_id(s: &Silence) -> String {
    format!(
        "file-{:016x}",
        crate::text::fnv1a(&[&s.origin.display().to_string(), &s.line.to_string()])
    )
}

fn state_of(s: &Silence, now_ns: i64) -> &'static str {
    SilenceState::of(s.start_ns, s.end_ns, now_ns).as_str()
}

/// An API silence as answered: the saved record, `source`, `state` and `silencing_now`
/// (false outside its daily window), and local times when it has a time zone.
fn api_view(r: &Record, s: &Silence, now_ns: i64) -> Value {
    let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
    v["source"] = json!("api");
    v["state"] = json!(state_of(s, now_ns));
    v["silencing_now"] = json!(s.active_at(now_ns));
    if let Some(zone) = r
        .timezone
        .as_deref()
        .and_then(|z| jiff::tz::TimeZone::get(z).ok())
    {
        v["starts_at_local"] = json!(r.starts_at.to_zoned(zone.clone()).to_string());
        v["ends_at_local"] = json!(r.ends_at.to_zoned(zone).to_string());
    }
    v
}

fn file_view(s: &Silence, now_ns: i64) -> Value {
    let fmt = |ns: Option<i64>| ns.map(crate::time::format_time);
    let matchers: serde_json::Map<String, Value> = s
        .matchers
        .iter()
        .map(|m| (m.tag.clone(), json!(m.pattern)))
        .collect();
    json!({
        "id": file_id(s),
        "source": "file",
        "file": format!("{}:{}", s.origin.display(), s.line),
        "matchers": matchers,
        "rule": s.rule.as_ref().map(|(g, _)| g),
        "starts_at": fmt(s.start_ns),
        "ends_at": fmt(s.end_ns),
        "daily": s.daily.as_ref().map(|d| json!({
            "from": hhmm(d.from),
            "to": hhmm(d.to),
            "timezone": d.zone.as_ref().and_then(|z| z.iana_name()).unwrap_or("UTC"),
        })),
        "comment": s.comment,
        "state": state_of(s, now_ns),
        "silencing_now": s.active_at(now_ns),
    })
}

fn hhmm(sod: u32) -> String {
    format!("{:02}:{:02}", sod / 3600, sod % 3600 / 60)
}

/// `{"silences": [...]}`: the rule files' silences first, then the API's, oldest first.
async fn list(State(api): State<Arc<Api>>) -> impl IntoResponse {
    let now = crate::model::now_ns();
    let mut out: Vec<Value> = api
        .silences
        .live()
        .files()
        .iter()
        .map(|s| file_view(s, now))
        .collect();
    out.extend(
        api.silences
            .list()
            .await
            .iter()
            .map(|(r, s)| api_view(r, s, now)),
    );
    json_answer(json!({ "silences": out }))
}

/// Silence ids: 16 hex digits (API) or `file-` and 16 hex digits (rule files).
fn check_id(id: &str) -> Result<(), ApiError> {
    input::hex_id(id, "file-", "a silence id", "GET /api/v1/silences")
}

/// The rule files' silence with this id, if it is one.
fn file_silence(api: &Api, id: &str) -> Option<Arc<Silence>> {
    api.silences
        .live()
        .files()
        .iter()
        .find(|s| file_id(s) == id)
        .cloned()
}

async fn one(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    check_id(&id)?;
    let now = crate::model::now_ns();
    let id = id.to_ascii_lowercase();
    if let Some(s) = file_silence(&api, &id) {
        return Ok(json_answer(json!({ "silence": file_view(&s, now) })));
    }
    match api.silences.get(&id).await {
        Some((r, s)) => Ok(json_answer(json!({ "silence": api_view(&r, &s, now) }))),
        None => Err(ApiError::NotFound(format!(
            "no silence {id} (GET /api/v1/silences lists them)"
        ))),
    }
}

/// Whole seconds: a silence made or expired "now" reads 16:38:37, not 16:38:36.997813338.
fn now_whole_seconds() -> Result<Timestamp, ApiError> {
    Timestamp::from_second(Timestamp::now().as_second())
        .map_err(|e| ApiError::Unavailable(format!("the system clock is out of range: {e}")))
}

fn new_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

async fn add(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    auth::require_writer(&headers, &api, "add a silence")?;
    let record = silence_spec::from_body(&body, new_id(), now_whole_seconds()?)?;
    let (r, s) = api.silences.add(record).await?;
    Ok(json_answer(
        json!({ "silence": api_view(&r, &s, crate::model::now_ns()) }),
    ))
}

/// `?by=NAME` of the request, if any.
fn query_by(uri: &Uri) -> Option<String> {
    let url = reqwest::Url::parse(&format!("http://localhost{uri}")).ok()?;
    let by = url
        .query_pairs()
        .find(|(k, _)| k == "by")
        .map(|(_, v)| v.into_owned());
    by
}

/// Who expires: `?by=NAME`, or a body `{"by": NAME}`.
fn expirer(uri: &Uri, body: &[u8]) -> Result<String, ApiError> {
    if let Some(by) = query_by(uri) {
        return input::person("by", &by);
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return input::person("by", "");
    }
    let v: Value = input::json_body(body, "expire a silence")?;
    match v.get("by") {
        Some(Value::String(by)) => input::person("by", by),
        _ => input::person("by", ""),
    }
}

async fn expire(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    auth::require_writer(&headers, &api, "expire a silence")?;
    check_id(&id)?;
    let id = id.to_ascii_lowercase();
    if let Some(s) = file_silence(&api, &id) {
        return Err(ApiError::Conflict(format!(
            "silence {id} is defined in a rule file: edit {}:{} (and reload) to change or remove it",
            s.origin.display(),
            s.line
        )));
    }
    let by = expirer(&uri, &body)?;
    let (r, s) = api.silences.expire(&id, &by, now_whole_seconds()?).await?;
    Ok(json_answer(
        json!({ "silence": api_view(&r, &s, crate::model::now_ns()) }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_expirers_are_checked() {
        assert!(check_id("00ff00ff00ff00ff").is_ok());
        assert!(check_id("file-00ff00ff00ff00ff").is_ok());
        assert!(check_id("../x").is_err());
        let uri: Uri = "/api/v1/silences/00ff00ff00ff00ff?by=alice%20b"
            .parse()
            .unwrap();
        assert_eq!(expirer(&uri, b"").unwrap(), "alice b");
        let bare: Uri = "/api/v1/silences/00ff00ff00ff00ff".parse().unwrap();
        assert_eq!(expirer(&bare, br#"{"by": "bob"}"#).unwrap(), "bob");
        let e = expirer(&bare, b"").unwrap_err().to_string();
        assert!(e.contains("`by` is required"), "{e}");
        assert_eq!(hhmm(2 * 3600 + 30 * 60), "02:30");
    }
}
