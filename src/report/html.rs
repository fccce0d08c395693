//! The report as one self-contained HTML file: inline CSS (readable on screen and printed,
//! an incident per page where it fits), plots as base64 PNG data URIs, no scripts.

use std::fmt::Write;

use base64::Engine as _;

use super::model::{IncidentReport, Plot, Report, Table, SEVERITY};

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "
body { font-family: 'DejaVu Sans', Arial, sans-serif; font-size: 14px; color: #222; max-width: 1100px; margin: 1.5em auto; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: .2em; }
h2 { font-size: 1.3em; border-bottom: 2px solid #ccc; padding-bottom: .2em; margin-top: 1.6em; }
h3 { font-size: 1.05em; margin: 1.2em 0 .4em; }
.meta { color: #555; }
table { border-collapse: collapse; margin: .4em 0 1em; }
th, td { border: 1px solid #bbb; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #eef1f5; }
/* Times and names stay on one line; the detail column wraps. */
td:first-child, td:nth-child(2) { white-space: nowrap; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: 2px 12px; margin: .4em 0; }
dl.facts dt { font-weight: bold; }
dl.facts dd { margin: 0; }
.sev-critical { color: #b00020; font-weight: bold; }
.sev-warning { color: #b35c00; font-weight: bold; }
.none { color: #666; font-style: italic; }
img.plot { max-width: 100%; border: 1px solid #ddd; }
@media print {
  body { max-width: none; margin: 0; font-size: 11px; }
  section.incident { break-before: page; }
  table, img.plot, dl.facts { break-inside: avoid; }
  th { background: #eee !important; -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
";

fn sev(s: &str) -> String {
    format!("<span class=\"sev-{0}\">{0}</span>", escape(s))
}

/// Cells are escaped here; those of the severity column are coloured.
fn table(o: &mut String, t: &Table) {
    o.push_str("<table><thead><tr>");
    for h in t.head {
        let _ = write!(o, "<th>{}</th>", escape(h));
    }
    o.push_str("</tr></thead><tbody>\n");
    for r in &t.rows {
        o.push_str("<tr>");
        for (h, c) in t.head.iter().zip(r) {
            let cell = if *h == SEVERITY { sev(c) } else { escape(c) };
            let _ = write!(o, "<td>{cell}</td>");
        }
        o.push_str("</tr>\n");
    }
    o.push_str("</tbody></table>\n");
}

pub fn render(r: &Report) -> String {
    let sh = &r.shifts;
    let mut o = String::new();
    let title = r.title();
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{0}</title><style>{STYLE}</style></head><body>\n<h1>{0}</h1>\n",
        escape(&title)
    );
    let _ = writeln!(
        o,
        "<p class=\"meta\">Generated {} by <code>sitewatch report</code> from {}. Times in {}.{}</p>",
        escape(&sh.local(r.generated_ns)),
        escape(&r.source),
        escape(sh.tz_name()),
        if r.filters.is_empty() {
            String::new()
        } else {
            format!(" Only incidents with {}.", escape(&r.filters.join(", ")))
        }
    );
    summary(&mut o, r);
    if r.incidents.is_empty() {
        o.push_str("<p class=\"none\" id=\"no-incidents\">No incidents in this range.</p>\n");
    }
    for inc in &r.incidents {
        incident(&mut o, r, inc);
    }
    o.push_str("</body></html>\n");
    o
}

fn summary(o: &mut String, r: &Report) {
    o.push_str("<section class=\"summary\"><h2>Summary</h2>\n<dl class=\"facts\">\n");
    for (k, v) in r.summary_facts() {
        let _ = writeln!(o, "<dt>{}</dt><dd>{}</dd>", escape(k), escape(&v));
    }
    o.push_str("</dl>\n");
    for (title, t) in r.summary_tables() {
        let _ = writeln!(o, "<h3>{}</h3>", escape(&title));
        table(o, &t);
    }
    if r.summary.total > 0 {
        let _ = writeln!(o, "<p>By shift of day: {}</p>", escape(&r.shifts_of_day()));
    }
    o.push_str("</section>\n");
}

fn incident(o: &mut String, r: &Report, ir: &IncidentReport) {
    let sh = &r.shifts;
    let _ = writeln!(
        o,
        "<section class=\"incident\" id=\"incident-{0}\"><h2>Incident {0}: {1}</h2>\n<dl class=\"facts\">",
        ir.number,
        escape(&ir.title())
    );
    for (k, v) in ir.facts(sh, r.until_ns) {
        let _ = writeln!(o, "<dt>{}</dt><dd>{}</dd>", escape(k), escape(&v));
    }
    o.push_str("</dl>\n<h3>Timeline</h3>\n");
    table(o, &ir.timeline(sh));
    let _ = writeln!(
        o,
        "<h3>Other alerts on the same device and site ({} before, and during)</h3>",
        escape(&crate::rules::replay::format_duration_ns(r.context_ns))
    );
    match ir.related_table(sh) {
        Some(t) => table(o, &t),
        None => o.push_str("<p class=\"none\">None.</p>\n"),
    }
    o.push_str("<h3>Metric</h3>\n");
    match &ir.plot {
        Plot::Png { png, note } => {
            let _ = writeln!(
                o,
                "<img class=\"plot\" alt=\"{} around incident {}\" src=\"data:image/png;base64,{}\">",
                escape(&ir.incident.field),
                ir.number,
                base64::engine::general_purpose::STANDARD.encode(png)
            );
            if let Some(n) = note {
                let _ = writeln!(o, "<p class=\"none\">{}</p>", escape(n));
            }
        }
        Plot::Missing(why) => {
            let _ = writeln!(o, "<p class=\"none\">No plot: {}</p>", escape(why));
        }
    }
    o.push_str("</section>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_cannot_inject_markup() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        let mut o = String::new();
        table(
            &mut o,
            &Table {
                head: &["A<", SEVERITY],
                rows: vec![vec!["<1>".into(), "critical".into()]],
            },
        );
        assert!(o.contains("<th>A&lt;</th>") && o.contains("<td>&lt;1&gt;</td>"));
        assert!(o.contains("<td><span class=\"sev-critical\">critical</span></td>"));
    }
}
