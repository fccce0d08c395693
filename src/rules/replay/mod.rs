//! Rule testing on history (`sitewatch rules test`): stored samples are read back from
//! InfluxDB and fed, in time order, through a fresh [`Engine`], so a threshold, clear value or
//! `for` can be tuned against last week's data before it pages anyone.
//!
//! ```text
//! rules ──> which measurement/fields ──> InfluxQL per time window ──> Engine::observe/tick
//!                                        (chunked JSON, epoch=ns)     ──> Replayer ──> ReplayReport
//! ```
//!
//! - **Query**: `SELECT "f1"::field, "f2"::field, *::tag FROM "m" WHERE time >= A AND time < B
//!   ORDER BY time ASC` against the v1 `/query` endpoint with `chunked=true&epoch=ns`. Without
//!   `GROUP BY` InfluxDB returns one row per point, merged across series in time order, tags as
//!   columns. The same endpoint exists on InfluxDB 2.x (database = bucket through its DBRP
//!   mapping, `Authorization: Token`) and 3.x (v1 compatibility API, `Authorization: Bearer`).
//!   Only InfluxDB 1.6 is exercised by the tests here.
//! - **Bounded memory**: the range is read in windows (`window`, default 1 h). With one
//!   measurement, rows go to the engine as they stream in; with several, one window of rows is
//!   held and sorted so the engine's clock never runs backwards.
//! - **Clock**: [`Engine::tick`] runs on the samples' time every `tick` (default 1 s, as in
//!   the live stage), also across gaps in the data, so stale-sensor rules fire in the replay
//!   when they would have fired live.
//! - **Numbers**: InfluxDB's JSON does not keep the float/integer distinction (a float 30.0
//!   comes back as `30`), so every number is replayed as a float; rules compare numbers as
//!   floats anyway.
//! - **Not replayed**: silences and notification routing (the report is about what the rules
//!   decide, before any receiver), and saved alarm state (the engine starts empty at `from`).

mod error;
mod options;
mod query;
mod replayer;
mod report;

use crate::model::Sample;
use crate::rules::config::{Rule, RuleSet};
use crate::sink::influx::InfluxConfig;
use crate::time::NS_PER_SEC;

pub use crate::time::{format_time, parse_time};
pub use error::ReplayError;
pub use options::{format_duration_ns, ReplayOptions};
pub(crate) use query::quote_ident;
pub use query::{influxql, parse_answer, watched_fields, AnswerProblem, ParsedChunk, QueryClient};
pub use replayer::Replayer;
pub use report::{Incident, ReplayReport, RuleReport};

/// The rules named in `names` (all of them when `names` is empty).
pub fn select_rules(set: &RuleSet, names: &[String]) -> Result<RuleSet, ReplayError> {
    if set.is_empty() {
        return Err(ReplayError::NoRules);
    }
    if names.is_empty() {
        return Ok(set.clone());
    }
    let find = |name: &str| {
        set.get(name).ok_or_else(|| ReplayError::UnknownRule {
            name: name.to_string(),
            known: set
                .rules()
                .iter()
                .map(|r| r.name.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
    };
    let mut picked: Vec<Rule> = Vec::new();
    for name in names {
        let r = find(name)?;
        if !picked.iter().any(|p| p.name == r.name) {
            picked.push((**r).clone());
        }
    }
    // A rule is replayed with what it depends on (transitively), or its `depends_on` would
    // name a rule that is not there and the set would not build.
    let mut i = 0;
    while i < picked.len() {
        if let Some(dep) = picked[i].depends_on.as_ref().map(|d| d.rule.clone()) {
            if !picked.iter().any(|p| p.name == dep) {
                picked.push((**find(&dep)?).clone());
            }
        }
        i += 1;
    }
    // Names were unique in `set`, so this cannot fail.
    Ok(RuleSet::new(picked).unwrap_or_default())
}

/// Replays `[from, until)` of the history the rules watch through a fresh engine.
pub async fn replay(
    influx: &InfluxConfig,
    rules: RuleSet,
    opts: &ReplayOptions,
) -> Result<ReplayReport, ReplayError> {
    if rules.is_empty() {
        return Err(ReplayError::NoRules);
    }
    let client = QueryClient::new(influx)?;
    let watched = watched_fields(&rules);
    let mut rp = Replayer::new(rules, opts);
    let window_ns = i64::try_from(opts.window.as_nanos())
        .unwrap_or(i64::MAX)
        .max(NS_PER_SEC);
    let mut start = opts.from_ns;
    while start < opts.until_ns {
        let end = start.saturating_add(window_ns).min(opts.until_ns);
        if let [(m, fields)] = watched.iter().collect::<Vec<_>>()[..] {
            // Rows arrive in time order: straight to the engine, nothing held.
            let q = influxql(m, fields, start, end);
            rp.queries += 1;
            let skipped = client
                .select(&q, m, fields, &mut |samples| {
                    for s in &samples {
                        rp.feed(s);
                    }
                })
                .await?;
            rp.skipped_rows += skipped as u64;
        } else {
            let mut held: Vec<Sample> = Vec::new();
            for (m, fields) in &watched {
                let q = influxql(m, fields, start, end);
                rp.queries += 1;
                let skipped = client
                    .select(&q, m, fields, &mut |mut samples| held.append(&mut samples))
                    .await?;
                rp.skipped_rows += skipped as u64;
            }
            // Stable: rows of one measurement keep the server's order at equal times.
            held.sort_by_key(|s| s.timestamp_ns);
            for s in &held {
                rp.feed(s);
            }
        }
        tracing::debug!(
            from = %format_time(start),
            until = %format_time(end),
            samples = rp.samples,
            "replayed window"
        );
        start = end;
    }
    Ok(rp.finish())
}

#[cfg(test)]
mod tests {
    use super::replayer::tests::{ruleset, RULES};
    use super::*;

    /// Issue 12: `--rule X` where X has `depends_on` replays X with what it depends on.
    #[test]
    fn a_selected_rule_brings_what_it_depends_on() {
        let set = ruleset(
            "[[rule]]\nname = \"down\"\nmeasurement = \"snmp_poll\"\nfield = \"up\"\nequals = { critical = false }\n\
             [[rule]]\nname = \"hot\"\nmeasurement = \"env\"\nfield = \"t\"\nabove = { critical = 30.0 }\n\
             depends_on = { rule = \"down\", match_tags = [\"device\"] }\n",
        );
        let picked = select_rules(&set, &["hot".into()]).unwrap();
        let names: Vec<&str> = picked.rules().iter().map(|r| &*r.name).collect();
        assert_eq!(names, ["hot", "down"]);
    }

    #[test]
    fn selects_rules_and_builds_queries() {
        let set = ruleset(RULES);
        let one = select_rules(&set, &["ups".into(), "ups".into()]).unwrap();
        assert_eq!(one.len(), 1);
        let e = select_rules(&set, &["nope".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"nope\"") && e.contains("hot, ups, typo"),
            "{e}"
        );
        assert!(matches!(
            select_rules(&RuleSet::default(), &[]),
            Err(ReplayError::NoRules)
        ));
        let got: Vec<(String, Vec<String>)> = watched_fields(&set)
            .iter()
            .map(|(m, f)| (m.to_string(), f.iter().map(|x| x.to_string()).collect()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("env".into(), vec!["t".into()]),
                ("envv".into(), vec!["t".into()]),
                ("ups".into(), vec!["source".into()])
            ]
        );
        assert_eq!(
            influxql("we\"ird", &["a b".into(), "c\\".into()], 5, 9),
            r#"SELECT "a b"::field, "c\\"::field, *::tag FROM "we\"ird" WHERE time >= 5 AND time < 9 ORDER BY time ASC"#
        );
    }
}
