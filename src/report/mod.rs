//! `sitewatch report`: the incident report a responder pastes into a post-mortem, built
//! from the InfluxDB history the rules stage writes (the events measurement, and the
//! metrics the rules watched). See docs/report.md.
//!
//! ```text
//! events rows [from - context, until) ──> incidents (firing .. resolved per alert id)
//!        ──> filter (--site/--rule/--device, began in [from, until))
//!        ──> per incident: timeline, related alerts (same device/site), metric plot (PNG)
//!        ──> summary (severity, MTTA/MTTR, recurring, shifts) ──> Markdown or HTML
//! ```

mod error;
mod history;
mod html;
mod incident;
mod markdown;
mod model;
mod options;
mod plot;
mod shifts;
mod stats;

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::model::now_ns;
use crate::rules::replay::{format_duration_ns, QueryClient};
use crate::sink::influx::InfluxConfig;

pub use error::ReportError;
pub use options::{Format, ReportArgs, ReportOptions};

use history::{read_events, read_metric};
use incident::{assemble, Incident};
use model::{IncidentReport, Plot, Related, Report};
use shifts::Shifts;

/// Runs `sitewatch report`: reads the history, writes the report to `--out` (and the
/// Markdown's plots beside it) or to `stdout`.
pub async fn run(
    influx: &InfluxConfig,
    args: &ReportArgs,
    stdout: &mut dyn Write,
) -> Result<(), ReportError> {
    let now = now_ns();
    let opts = ReportOptions::from_args(args, now)?;
    let report = build(influx, &opts, now).await?;
    write(&report, &opts, stdout)
}

fn keep(inc: &Incident, opts: &ReportOptions) -> bool {
    let begin = inc.begin_ns();
    begin >= opts.from_ns
        && begin < opts.until_ns
        && opts
            .site
            .as_deref()
            .is_none_or(|s| inc.tag("site") == Some(s))
        && opts
            .device
            .as_deref()
            .is_none_or(|d| inc.tag("device") == Some(d))
        && opts
            .rule
            .as_ref()
            .is_none_or(|(_, m)| m.is_match(&inc.rule))
}

/// The other alerts of `inc`'s device or site that began from `context_ns` before it until
/// its end (its resolve, or `until_ns`).
fn related(inc: &Incident, all: &[Incident], context_ns: i64, until_ns: i64) -> Vec<Related> {
    let begin = inc.begin_ns();
    let end = inc.resolved_ns.unwrap_or(until_ns);
    let (device, site) = (inc.tag("device"), inc.tag("site"));
    all.iter()
        .filter(|o| o.id != inc.id)
        .filter(|o| {
            let b = o.begin_ns();
            b >= begin.saturating_sub(context_ns) && b <= end
        })
        .filter_map(|o| {
            let relation = if device.is_some() && o.tag("device") == device {
                "same device"
            } else if site.is_some() && o.tag("site") == site {
                "same site"
            } else {
                return None;
            };
            Some(Related {
                relation,
                begin_ns: o.begin_ns(),
                offset_ns: o.begin_ns() - begin,
                rule: o.rule.clone(),
                severity: o.severity.clone(),
                device: o.tag("device").unwrap_or_default().to_string(),
                message: o.message.clone(),
                resolved_ns: o.resolved_ns,
            })
        })
        .collect()
}

async fn plot(
    client: &QueryClient,
    inc: &Incident,
    number: usize,
    opts: &ReportOptions,
    now_ns: i64,
) -> Result<Plot, ReportError> {
    if inc.series.is_empty() || inc.field.is_empty() {
        return Ok(Plot::Missing(
            "the events rows name no series or field".into(),
        ));
    }
    let end = inc.resolved_ns.unwrap_or(opts.until_ns);
    let from = inc
        .started_ns
        .min(inc.begin_ns())
        .saturating_sub(opts.context_ns);
    // Not past now: there are no samples from the future to draw.
    let until = end.saturating_add(opts.context_ns).min(now_ns.max(end));
    let points = read_metric(client, &inc.series, &inc.field, from, until).await?;
    if points.is_empty() {
        return Ok(Plot::Missing(format!(
            "no numeric samples of {} field {} from {} to {} (a state or text field, or not stored)",
            inc.series,
            inc.field,
            opts.shifts.local(from),
            opts.shifts.local(until)
        )));
    }
    plot::ensure_font()?;
    let (drawn, left_out) = plot::on_scale(&points, &inc.thresholds);
    let note = (!left_out.is_empty()).then(|| {
        let list: Vec<String> = left_out.iter().map(|(s, t)| format!("{s} {t}")).collect();
        format!(
            "thresholds {} are not drawn: far from the metric's values (a rule on a rate of change or another derived value)",
            list.join(", ")
        )
    });
    let shifts: &Shifts = &opts.shifts;
    // Eight labels over less than half an hour would repeat minutes.
    let with_seconds = until - from < 30 * 60 * 1_000_000_000;
    let clock = |ns: i64| shifts.clock(ns, with_seconds);
    let png = plot::render_png(&plot::PlotSpec {
        title: format!("{} — {}", inc.rule, inc.series),
        y_label: inc.field.clone(),
        points: &points,
        thresholds: &drawn,
        span: (inc.begin_ns(), end),
        window: (from, until),
        clock: &clock,
    })
    .map_err(|problem| ReportError::Plot {
        incident: number,
        problem,
    })?;
    Ok(Plot::Png { png, note })
}

/// Reads the history and assembles the report.
pub async fn build(
    influx: &InfluxConfig,
    opts: &ReportOptions,
    now_ns: i64,
) -> Result<Report, ReportError> {
    let client = QueryClient::new(influx)?;
    let measurement = influx.events_measurement.as_str();
    // From `context` before the range, so alerts just before the first incident are listed.
    let read_from = opts.from_ns.saturating_sub(opts.context_ns);
    let (rows, skipped_rows) = read_events(&client, measurement, read_from, opts.until_ns).await?;
    if rows.is_empty() && !client.has_measurement(measurement).await? {
        return Err(ReportError::NoEvents {
            url: client.endpoint().to_string(),
            database: client.database().to_string(),
            measurement: measurement.to_string(),
        });
    }
    let assembly = assemble(&rows);
    let mut incidents = Vec::new();
    for inc in assembly.incidents.iter().filter(|i| keep(i, opts)) {
        let number = incidents.len() + 1;
        incidents.push(IncidentReport {
            number,
            related: related(inc, &assembly.incidents, opts.context_ns, opts.until_ns),
            plot: plot(&client, inc, number, opts, now_ns).await?,
            incident: inc.clone(),
        });
    }
    let chosen: Vec<&Incident> = incidents.iter().map(|i| &i.incident).collect();
    let summary = stats::summarize(&chosen, &opts.shifts);
    if assembly.unmatched_rows > 0 {
        tracing::info!(
            rows = assembly.unmatched_rows,
            "acknowledge/escalation rows of alerts not open in the range are left out"
        );
    }
    let mut filters = Vec::new();
    if let Some(s) = &opts.site {
        filters.push(format!("site = {s}"));
    }
    if let Some(d) = &opts.device {
        filters.push(format!("device = {d}"));
    }
    if let Some((g, _)) = &opts.rule {
        filters.push(format!("rule matching {g}"));
    }
    Ok(Report {
        from_ns: opts.from_ns,
        until_ns: opts.until_ns,
        generated_ns: now_ns,
        source: format!(
            "InfluxDB {}, database \"{}\", measurement \"{measurement}\" (context window {})",
            client.endpoint(),
            client.database(),
            format_duration_ns(opts.context_ns)
        ),
        filters,
        context_ns: opts.context_ns,
        shifts: opts.shifts.clone(),
        summary,
        incidents,
        unmatched_rows: assembly.unmatched_rows,
        skipped_rows,
    })
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    std::fs::write(path, bytes).map_err(|source| ReportError::Write {
        path: path.display().to_string(),
        source,
    })
}

/// Writes the report in its format: to `--out` (Markdown plots into `<stem>-plots/`
/// beside it) or to `stdout` (Markdown then links no plots).
pub fn write(r: &Report, opts: &ReportOptions, stdout: &mut dyn Write) -> Result<(), ReportError> {
    let text = match opts.format {
        Format::Html => html::render(r),
        Format::Markdown => {
            let links = match &opts.out {
                Some(out) => write_plots(r, out)?,
                None => vec![None; r.incidents.len()],
            };
            markdown::render(r, &links)
        }
    };
    match &opts.out {
        Some(out) => write_file(out, text.as_bytes()),
        None => stdout
            .write_all(text.as_bytes())
            .map_err(|source| ReportError::Write {
                path: "stdout".into(),
                source,
            }),
    }
}

/// `<out stem>-plots/incident-N.png` beside `out`; the links are relative to `out`.
fn write_plots(r: &Report, out: &Path) -> Result<Vec<Option<String>>, ReportError> {
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "report".into());
    let dir_name = format!("{stem}-plots");
    let dir: PathBuf = out
        .parent()
        .map(|p| p.join(&dir_name))
        .unwrap_or_else(|| PathBuf::from(&dir_name));
    let mut links = Vec::with_capacity(r.incidents.len());
    for ir in &r.incidents {
        let Plot::Png { png: bytes, .. } = &ir.plot else {
            links.push(None);
            continue;
        };
        std::fs::create_dir_all(&dir).map_err(|source| ReportError::Write {
            path: dir.display().to_string(),
            source,
        })?;
        let name = format!("incident-{}.png", ir.number);
        write_file(&dir.join(&name), bytes)?;
        links.push(Some(format!("{dir_name}/{name}")));
    }
    Ok(links)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::incident::tests::row;

    #[test]
    fn related_alerts_share_the_device_or_site_and_began_in_the_window() {
        let mut ups = row("u", "firing", "critical", 1_000);
        ups.tags.insert("device".into(), "d1".into());
        let mut other_site = row("o", "firing", "warning", 1_100);
        other_site.tags.insert("site".into(), "s2".into());
        let rows = vec![
            row("old", "firing", "warning", 100), // before the 30 min window
            ups,
            {
                let mut r = row("a", "firing", "warning", 1_200);
                r.tags.insert("device".into(), "d1".into());
                r
            },
            other_site,
            row("a", "resolved", "warning", 1_500),
            row("late", "firing", "warning", 9_000), // after the incident
        ];
        let a = assemble(&rows);
        let ten_min = 600_000_000_000;
        let inc = a.incidents.iter().find(|i| i.id == "a").unwrap();
        let rel = related(inc, &a.incidents, ten_min, i64::MAX);
        let got: Vec<(&str, &str, i64)> = rel
            .iter()
            .map(|r| (r.rule.as_str(), r.relation, r.offset_ns / 1_000_000_000))
            .collect();
        assert_eq!(got, vec![("rule_u", "same device", -200)]);
        // Open at the end: "during" runs to until (2000 s); the old one is before its window
        // and the late one after the range.
        let ups = a.incidents.iter().find(|i| i.id == "u").unwrap();
        let rel = related(ups, &a.incidents, ten_min, 2_000_000_000_000);
        let got: Vec<(&str, &str)> = rel.iter().map(|r| (r.rule.as_str(), r.relation)).collect();
        assert_eq!(got, vec![("rule_a", "same device")]);
        // A longer context reaches the old alert of the same site.
        let rel = related(inc, &a.incidents, 1_800_000_000_000, i64::MAX);
        assert!(rel
            .iter()
            .any(|r| r.rule == "rule_old" && r.relation == "same site"));
    }
}
