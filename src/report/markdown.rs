//! The report as Markdown (GitHub-flavoured tables), for pasting into a post-mortem. Values
//! from the data (tags, messages, comments) are escaped so they cannot break a table or
//! turn into links or markup.

use std::fmt::Write;

use super::model::{IncidentReport, Plot, Report, Table};

/// Escapes Markdown's inline syntax and table pipes; line breaks become spaces.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '~' | '#' | '!' | '&' => {
                out.push('\\');
                out.push(c);
            }
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn table(out: &mut String, t: &Table) {
    let _ = writeln!(out, "| {} |", t.head.join(" | "));
    let _ = writeln!(
        out,
        "|{}",
        t.head.iter().map(|_| "---|").collect::<String>()
    );
    for r in &t.rows {
        let cells: Vec<String> = r.iter().map(|c| escape(c)).collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    out.push('\n');
}

/// `plot_links[i]` is the relative path of incident i's PNG, when written.
pub fn render(r: &Report, plot_links: &[Option<String>]) -> String {
    let mut o = String::new();
    let sh = &r.shifts;
    let _ = writeln!(o, "# {}\n", escape(&r.title()));
    let _ = writeln!(
        o,
        "Generated {} by `sitewatch report` from {}. Times in {}.",
        sh.local(r.generated_ns),
        escape(&r.source),
        escape(sh.tz_name())
    );
    if !r.filters.is_empty() {
        let _ = writeln!(o, "Only incidents with {}.", escape(&r.filters.join(", ")));
    }
    o.push('\n');
    summary(&mut o, r);
    if r.incidents.is_empty() {
        let _ = writeln!(o, "**No incidents** in this range.\n");
    }
    for (inc, link) in r.incidents.iter().zip(plot_links) {
        incident(&mut o, r, inc, link.as_deref());
    }
    o
}

fn summary(o: &mut String, r: &Report) {
    let _ = writeln!(o, "## Summary\n");
    for (k, v) in r.summary_facts() {
        let _ = writeln!(o, "- {k}: **{}**", escape(&v));
    }
    o.push('\n');
    for (title, t) in r.summary_tables() {
        let _ = writeln!(o, "### {}\n", escape(&title));
        table(o, &t);
    }
    if r.summary.total > 0 {
        let _ = writeln!(o, "By shift of day: {}\n", r.shifts_of_day());
    }
}

fn incident(o: &mut String, r: &Report, ir: &IncidentReport, link: Option<&str>) {
    let sh = &r.shifts;
    let _ = writeln!(o, "## Incident {}: {}\n", ir.number, escape(&ir.title()));
    for (k, v) in ir.facts(sh, r.until_ns) {
        let _ = writeln!(o, "- {k}: {}", escape(&v));
    }
    o.push('\n');
    let _ = writeln!(o, "### Timeline\n");
    table(o, &ir.timeline(sh));
    let _ = writeln!(
        o,
        "### Other alerts on the same device and site ({} before, and during)\n",
        crate::rules::replay::format_duration_ns(r.context_ns)
    );
    match ir.related_table(sh) {
        Some(t) => table(o, &t),
        None => {
            let _ = writeln!(o, "None.\n");
        }
    }
    let _ = writeln!(o, "### Metric\n");
    if let Plot::Png {
        note: Some(note), ..
    } = &ir.plot
    {
        let _ = writeln!(o, "Note: {}\n", escape(note));
    }
    match (&ir.plot, link) {
        (Plot::Png { .. }, Some(path)) => {
            let _ = writeln!(
                o,
                "![{} around incident {}]({})\n",
                escape(&ir.incident.field),
                ir.number,
                path.replace(' ', "%20")
            );
        }
        (Plot::Png { .. }, None) => {
            let _ = writeln!(
                o,
                "(the plot is written beside the report with --out FILE)\n"
            );
        }
        (Plot::Missing(why), _) => {
            let _ = writeln!(o, "No plot: {}\n", escape(why));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_values_cannot_break_tables_or_make_links() {
        assert_eq!(escape("rack|1"), "rack\\|1");
        assert_eq!(
            escape("[click](http://x) <b>*hot*</b>\nnext"),
            "\\[click\\](http://x) \\<b\\>\\*hot\\*\\</b\\> next"
        );
        assert_eq!(
            escape("ups_a `x` #1 ~y~ \\"),
            "ups\\_a \\`x\\` \\#1 \\~y\\~ \\\\"
        );
        let mut o = String::new();
        table(
            &mut o,
            &Table {
                head: &["A"],
                rows: vec![vec!["x|y".into()]],
            },
        );
        assert_eq!(o, "| A |\n|---|\n| x\\|y |\n\n");
    }
}
