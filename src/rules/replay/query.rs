//! Reading history from InfluxDB: the InfluxQL query per measurement and window, the v1
//! `/query` client, and parsing its (chunked) JSON answer into samples.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::Value;

use crate::model::{FieldValue, Sample, SeriesKey, TagSet};
use crate::rules::config::RuleSet;
use crate::sink::influx::client::{self, server_message, Class, InfluxClient, Purpose};
use crate::sink::influx::{InfluxApi, InfluxConfig};
use crate::time::parse_time;

use super::error::ReplayError;

/// Rows per chunk asked from InfluxDB: big enough to keep the request count low, small enough
/// that one chunk of JSON stays a few MB.
const CHUNK_SIZE: usize = 10_000;

fn http_hint(status: u16) -> &'static str {
    match status {
        401 | 403 => "check [influx] username/password (v1) or token (v2/v3) and that it may read the database",
        404 => "the server has no v1 /query endpoint or the database/bucket is unknown: for InfluxDB 2.x a DBRP mapping for the bucket must exist",
        _ => "check the InfluxDB server log",
    }
}

fn query_hint(message: &str) -> &'static str {
    if message.contains("database not found") {
        "check [influx] database (or bucket for v2), or create it"
    } else if message.contains("authoriz") || message.contains("authenticat") {
        "check [influx] credentials"
    } else {
        "if the message is about query syntax, this is a bug in sitewatch; please report it"
    }
}

/// Measurement → fields the rules watch, sorted so queries (and tests) are deterministic.
pub fn watched_fields(rules: &RuleSet) -> BTreeMap<Arc<str>, Vec<Arc<str>>> {
    let mut by_m: BTreeMap<Arc<str>, BTreeSet<Arc<str>>> = BTreeMap::new();
    for r in rules.rules() {
        by_m.entry(r.measurement.clone())
            .or_default()
            .insert(r.field.clone());
    }
    by_m.into_iter()
        .map(|(m, f)| (m, f.into_iter().collect()))
        .collect()
}

/// An InfluxQL identifier in double quotes.
pub(crate) fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The history query for one measurement and window.
pub fn influxql(measurement: &str, fields: &[Arc<str>], from_ns: i64, until_ns: i64) -> String {
    let cols: Vec<String> = fields
        .iter()
        .map(|f| format!("{}::field", quote_ident(f)))
        .collect();
    format!(
        "SELECT {}, *::tag FROM {} WHERE time >= {from_ns} AND time < {until_ns} ORDER BY time ASC",
        cols.join(", "),
        quote_ident(measurement)
    )
}

// ---------------------------------------------------------------------------------------------
// InfluxQL JSON answer

/// What one JSON object of a (chunked) `/query` answer held.
#[derive(Debug, Default, PartialEq)]
pub struct ParsedChunk {
    pub samples: Vec<Sample>,
    /// Rows without a usable timestamp or without any field value.
    pub skipped_rows: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub enum AnswerProblem {
    /// InfluxDB said what is wrong.
    Server(String),
    Malformed(String),
}

/// The statement results of one JSON object of an InfluxQL answer; the server's error, when
/// the answer or a statement carries one.
fn results(text: &str) -> Result<Vec<Value>, AnswerProblem> {
    let mut v: Value = serde_json::from_str(text)
        .map_err(|e| AnswerProblem::Malformed(format!("invalid JSON: {e}")))?;
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        return Err(AnswerProblem::Server(e.to_string()));
    }
    let Some(Value::Array(results)) = v.get_mut("results").map(Value::take) else {
        return Err(AnswerProblem::Malformed("no \"results\" array".into()));
    };
    if let Some(e) = results
        .iter()
        .find_map(|r| r.get("error").and_then(Value::as_str))
    {
        return Err(AnswerProblem::Server(e.to_string()));
    }
    Ok(results)
}

/// Parses one JSON object of an InfluxQL answer to
/// `SELECT "f1"::field, …, *::tag FROM m …`: columns are `time`, the fields in query order,
/// then the tag keys. InfluxDB renames a tag column whose key equals a selected field to
/// `key_1`; that suffix is removed again.
pub fn parse_answer(
    text: &str,
    measurement: &Arc<str>,
    fields: &[Arc<str>],
) -> Result<ParsedChunk, AnswerProblem> {
    let mut out = ParsedChunk::default();
    for r in &results(text)? {
        let Some(series) = r.get("series") else {
            continue;
        };
        let series = series
            .as_array()
            .ok_or_else(|| AnswerProblem::Malformed("\"series\" is not an array".into()))?;
        for s in series {
            parse_series(s, measurement, fields, &mut out)?;
        }
    }
    Ok(out)
}

fn parse_series(
    s: &Value,
    measurement: &Arc<str>,
    fields: &[Arc<str>],
    out: &mut ParsedChunk,
) -> Result<(), AnswerProblem> {
    let columns: Vec<&str> = s
        .get("columns")
        .and_then(Value::as_array)
        .ok_or_else(|| AnswerProblem::Malformed("a series has no \"columns\"".into()))?
        .iter()
        .map(|c| c.as_str().unwrap_or(""))
        .collect();
    if columns.first() != Some(&"time") || columns.len() < fields.len() + 1 {
        return Err(AnswerProblem::Malformed(format!(
            "columns {columns:?} do not start with time and the {} field(s) asked for",
            fields.len()
        )));
    }
    let tag_keys: Vec<Arc<str>> = columns[fields.len() + 1..]
        .iter()
        .map(|c| Arc::from(untangle_tag_column(c, fields)))
        .collect();
    // A series-level "tags" object appears with GROUP BY; merged in should a server send it.
    let group_tags: Vec<(Arc<str>, Arc<str>)> = s
        .get("tags")
        .and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (Arc::from(k.as_str()), Arc::from(v))))
                .collect()
        })
        .unwrap_or_default();
    let Some(values) = s.get("values") else {
        return Ok(());
    };
    let rows = values
        .as_array()
        .ok_or_else(|| AnswerProblem::Malformed("\"values\" is not an array".into()))?;
    // Consecutive rows of one series share their tag set; reuse it instead of rebuilding.
    let mut last_tags: Option<(Vec<Option<&str>>, TagSet)> = None;
    for row in rows {
        let Some(row) = row.as_array() else {
            out.skipped_rows += 1;
            continue;
        };
        let Some(ts) = row.first().and_then(json_timestamp) else {
            out.skipped_rows += 1;
            continue;
        };
        let mut sample_fields = Vec::with_capacity(fields.len());
        for (i, name) in fields.iter().enumerate() {
            if let Some(v) = row.get(i + 1).and_then(json_field_value) {
                sample_fields.push((name.clone(), v));
            }
        }
        if sample_fields.is_empty() {
            out.skipped_rows += 1;
            continue;
        }
        let raw_tags: Vec<Option<&str>> = (0..tag_keys.len())
            .map(|i| row.get(fields.len() + 1 + i).and_then(Value::as_str))
            .collect();
        let tags = match &last_tags {
            Some((raw, t)) if *raw == raw_tags => t.clone(),
            _ => {
                let pairs = tag_keys
                    .iter()
                    .zip(&raw_tags)
                    .filter_map(|(k, v)| v.map(|v| (k.clone(), Arc::<str>::from(v))))
                    .chain(group_tags.iter().cloned());
                let t = TagSet::new(pairs);
                last_tags = Some((raw_tags, t.clone()));
                t
            }
        };
        out.samples.push(Sample {
            series: SeriesKey::new(measurement.clone(), tags),
            fields: sample_fields,
            timestamp_ns: ts,
        });
    }
    Ok(())
}

/// `rack_1` back to `rack` when `rack` is also a selected field (InfluxDB's renaming).
fn untangle_tag_column<'a>(column: &'a str, fields: &[Arc<str>]) -> &'a str {
    if let Some((base, n)) = column.rsplit_once('_') {
        if !n.is_empty()
            && n.bytes().all(|b| b.is_ascii_digit())
            && fields.iter().any(|f| f.as_ref() == base)
        {
            return base;
        }
    }
    column
}

fn json_timestamp(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        // A server that ignored epoch=ns answers RFC 3339.
        Value::String(s) => parse_time(s).ok(),
        _ => None,
    }
}

fn json_field_value(v: &Value) -> Option<FieldValue> {
    match v {
        Value::Number(n) => n.as_f64().map(FieldValue::Float),
        Value::Bool(b) => Some(FieldValue::Bool(*b)),
        Value::String(s) => Some(FieldValue::Str(s.as_str().into())),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// InfluxDB client

/// A read-only client for the v1 `/query` endpoint, configured from `[influx]`.
pub struct QueryClient {
    client: InfluxClient,
    db: String,
    rp: Option<String>,
}

impl QueryClient {
    pub fn new(cfg: &InfluxConfig) -> Result<QueryClient, ReplayError> {
        let client = InfluxClient::new(cfg, Purpose::Query)?;
        // 2.x maps a v1 database name onto a bucket (DBRP); 2.1+ has a virtual mapping named
        // after every bucket.
        let db = match cfg.api {
            InfluxApi::V1 | InfluxApi::V3 => cfg.database.clone().unwrap_or_default(),
            InfluxApi::V2 => cfg.bucket.clone().unwrap_or_default(),
        };
        Ok(QueryClient {
            client,
            db,
            rp: cfg.retention_policy.clone(),
        })
    }

    /// The database (v2: bucket) queried, for messages.
    pub fn database(&self) -> &str {
        &self.db
    }

    /// The query URL without parameters or credentials, for messages.
    pub fn endpoint(&self) -> &str {
        self.client.endpoint().as_str()
    }

    /// Runs `query` and hands each parsed chunk's samples to `sink`, in the order received.
    /// Returns the number of rows skipped as unusable.
    pub(crate) async fn select(
        &self,
        query: &str,
        measurement: &Arc<str>,
        fields: &[Arc<str>],
        sink: &mut dyn FnMut(Vec<Sample>),
    ) -> Result<usize, ReplayError> {
        let mut skipped = 0usize;
        self.answers(query, &mut |text| {
            let chunk = parse_answer(text, measurement, fields)?;
            skipped += chunk.skipped_rows;
            sink(chunk.samples);
            Ok(())
        })
        .await?;
        Ok(skipped)
    }

    /// Whether the database holds `measurement` (`SHOW MEASUREMENTS`): tells an empty range
    /// from a measurement that was never written, for a message that says which.
    pub(crate) async fn has_measurement(&self, measurement: &str) -> Result<bool, ReplayError> {
        let query = format!(
            "SHOW MEASUREMENTS WITH MEASUREMENT = {}",
            quote_ident(measurement)
        );
        let mut found = false;
        self.answers(&query, &mut |text| {
            found |= show_lists(text, measurement)?;
            Ok(())
        })
        .await?;
        Ok(found)
    }

    /// Runs `query` and hands each JSON object of the (chunked) answer to `handle`.
    async fn answers(
        &self,
        query: &str,
        handle: &mut dyn FnMut(&str) -> Result<(), AnswerProblem>,
    ) -> Result<(), ReplayError> {
        let mut url = self.client.endpoint().clone();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("db", &self.db);
            if let Some(rp) = &self.rp {
                q.append_pair("rp", rp);
            }
            q.append_pair("epoch", "ns")
                .append_pair("chunked", "true")
                .append_pair("chunk_size", &CHUNK_SIZE.to_string())
                .append_pair("q", query);
        }
        let req = self.client.request(reqwest::Method::GET, url);
        let at = self.client.endpoint().to_string();
        // The request URL carries the whole query; messages name the endpoint instead.
        let mut resp = req
            .send()
            .await
            .map_err(|e| ReplayError::unreachable(&at, e))?;
        let status = resp.status().as_u16();
        if client::classify(status) != Class::Ok {
            let body = server_message(&resp.text().await.unwrap_or_default());
            return Err(ReplayError::Http {
                url: at,
                status,
                hint: http_hint(status),
                body: body.chars().take(300).collect(),
            });
        }
        let mut line_done = |line: &[u8]| -> Result<(), ReplayError> {
            let text = String::from_utf8_lossy(line);
            if text.trim().is_empty() {
                return Ok(());
            }
            handle(&text).map_err(|problem| match problem {
                AnswerProblem::Server(message) => ReplayError::Query {
                    url: at.clone(),
                    query: query.to_string(),
                    hint: query_hint(&message),
                    message,
                },
                AnswerProblem::Malformed(problem) => ReplayError::Response {
                    url: at.clone(),
                    query: query.to_string(),
                    problem,
                },
            })
        };
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let chunk = resp
                .chunk()
                .await
                .map_err(|e| ReplayError::unreachable(&at, e))?;
            let Some(chunk) = chunk else { break };
            buf.extend_from_slice(&chunk);
            // Chunked answers are one JSON object per line.
            while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                line_done(&line)?;
            }
        }
        line_done(&buf)
    }
}

/// Whether one JSON object of a `SHOW MEASUREMENTS` answer lists `measurement`.
fn show_lists(text: &str, measurement: &str) -> Result<bool, AnswerProblem> {
    for r in &results(text)? {
        let rows = r
            .get("series")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|s| s.get("values").and_then(Value::as_array))
            .flatten();
        for row in rows {
            if row.get(0).and_then(Value::as_str) == Some(measurement) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_influxdb_answers() {
        // Shape captured from influxd 1.6: tags as columns, null where a series lacks a tag,
        // the tag copy of a same-named field renamed with _1.
        let m: Arc<str> = "env".into();
        let fields: Vec<Arc<str>> = vec!["temperature".into(), "rack".into()];
        let text = r#"{"results":[{"statement_id":0,"series":[{"name":"env","columns":["time","temperature","rack","rack_1","room","site"],"values":[[500000000,25,null,"c","z","y"],[1000000000,20,null,"a",null,"x"],[2000000000,null,null,"b",null,null],["bad",1,null,"a",null,null],[3000000000,true,"x","a",null,null]],"partial":true}],"partial":true}]}"#;
        let got = parse_answer(text, &m, &fields).unwrap();
        assert_eq!(got.skipped_rows, 2);
        assert_eq!(got.samples.len(), 3);
        assert_eq!(
            got.samples[0].series.to_string(),
            "env,rack=c,room=z,site=y"
        );
        assert_eq!(got.samples[0].timestamp_ns, 500_000_000);
        assert_eq!(
            got.samples[0].fields,
            vec![("temperature".into(), FieldValue::Float(25.0))]
        );
        assert_eq!(got.samples[1].series.to_string(), "env,rack=a,site=x");
        assert_eq!(
            got.samples[2].fields,
            vec![
                ("temperature".into(), FieldValue::Bool(true)),
                ("rack".into(), FieldValue::Str("x".into()))
            ]
        );
        assert_eq!(
            parse_answer(r#"{"results":[{"statement_id":0}]}"#, &m, &fields).unwrap(),
            ParsedChunk::default()
        );
        assert_eq!(
            parse_answer(
                r#"{"results":[{"statement_id":0,"error":"database not found: x"}]}"#,
                &m,
                &fields
            ),
            Err(AnswerProblem::Server("database not found: x".into()))
        );
        assert_eq!(
            parse_answer(r#"{"error":"field type conflict"}"#, &m, &fields),
            Err(AnswerProblem::Server("field type conflict".into()))
        );
        for bad in [
            "",
            "[]",
            "{\"results\":3}",
            r#"{"results":[{"series":[{"columns":["t"]}]}]}"#,
            r#"{"results":[{"series":[{"columns":["time","temperature","rack"],"values":7}]}]}"#,
        ] {
            assert!(
                matches!(
                    parse_answer(bad, &m, &fields),
                    Err(AnswerProblem::Malformed(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn show_measurements_answers() {
        let listed = r#"{"results":[{"statement_id":0,"series":[{"name":"measurements","columns":["name"],"values":[["events"]]}]}]}"#;
        assert_eq!(show_lists(listed, "events"), Ok(true));
        assert_eq!(show_lists(listed, "alerts"), Ok(false));
        assert_eq!(
            show_lists(r#"{"results":[{"statement_id":0}]}"#, "events"),
            Ok(false)
        );
        assert_eq!(
            show_lists(
                r#"{"results":[{"error":"database not found: x"}]}"#,
                "events"
            ),
            Err(AnswerProblem::Server("database not found: x".into()))
        );
        assert!(matches!(
            show_lists("nope", "events"),
            Err(AnswerProblem::Malformed(_))
        ));
    }

    proptest::proptest! {
        /// Answers come from a server (or whatever listens on that URL): never a panic.
        #[test]
        fn answer_parser_never_panics(text in "\\PC{0,300}") {
            let fields: Vec<Arc<str>> = vec!["t".into()];
            let _ = parse_answer(&text, &"m".into(), &fields);
        }

        /// Structurally plausible answers with arbitrary cells: never a panic, and every
        /// sample has at least one field.
        #[test]
        fn structured_answers_never_panic(
            cols in proptest::collection::vec("(time|t|u|rack|t_1|[a-z_0-9]{0,4})", 0..6),
            rows in proptest::collection::vec(
                proptest::collection::vec(
                    "(null|true|-?[0-9]{1,20}|-?[0-9]\\.[0-9]e[+-]?[0-9]{1,3}|\"[a-z]{0,3}\"|\\[\\]|\\{\\})", 0..7),
                0..5),
        ) {
            let fields: Vec<Arc<str>> = vec!["t".into(), "u".into()];
            let cols: Vec<String> = cols.iter().map(|c| format!("\"{c}\"")).collect();
            let rows: Vec<String> = rows.iter().map(|r| format!("[{}]", r.join(","))).collect();
            let text = format!(
                "{{\"results\":[{{\"statement_id\":0,\"series\":[{{\"name\":\"m\",\"columns\":[{}],\"values\":[{}]}}]}}]}}",
                cols.join(","),
                rows.join(",")
            );
            if let Ok(chunk) = parse_answer(&text, &"m".into(), &fields) {
                for s in &chunk.samples {
                    proptest::prop_assert!(!s.fields.is_empty());
                }
            }
        }
    }
}
