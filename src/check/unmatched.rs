//! `check`'s warnings for rules and silences that can never apply: a rule on a measurement
//! no collector of this config writes (a misspelled `measurement`), and a silence whose rule
//! glob names no rule. They are warnings, not errors: a rule file shared by several sites may
//! hold rules for devices this site does not have.

use std::collections::BTreeSet;

use crate::rules::RuleSet;

/// The measurements the config's collectors can write; `None` when one of them can write
/// any (MQTT line protocol, a measurement template), and then no rule is suspicious.
pub fn produced<I>(per_source: I) -> Option<BTreeSet<String>>
where
    I: IntoIterator<Item = Option<Vec<String>>>,
{
    let mut all = BTreeSet::new();
    for m in per_source {
        all.extend(m?);
    }
    Some(all)
}

/// One line per rule whose measurement is not in `produced` (its overrides with it) and per
/// silence whose `rule` glob matches no rule, each with its file:line.
pub fn warnings(produced: Option<&BTreeSet<String>>, rules: &RuleSet) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(produced) = produced {
        let known = produced.iter().cloned().collect::<Vec<_>>().join(", ");
        for r in rules.rules() {
            if produced.contains(&*r.measurement) {
                continue;
            }
            let overrides = match r.overrides.len() {
                0 => String::new(),
                n => format!(" (nor can its {n} override(s))"),
            };
            out.push(format!(
                "{}:{}: rule '{}' can never fire{overrides}: no collector of this config writes \
                 measurement {:?} (they write: {known}); fix the rule's measurement or add the \
                 collector",
                r.origin.display(),
                r.line,
                r.name,
                r.measurement,
            ));
        }
    }
    for s in rules.silences() {
        let Some((glob, matcher)) = &s.rule else {
            continue;
        };
        let covers_one = rules
            .rules()
            .iter()
            .any(|r| matcher.is_match(&*r.name) || matcher.is_match(&*r.stale_name()));
        if !covers_one {
            out.push(format!(
                "{}:{}: silence rule = {glob:?} matches no rule (rule names: {}); it silences \
                 nothing: fix the glob",
                s.origin.display(),
                s.line,
                rule_names(rules),
            ));
        }
    }
    out
}

fn rule_names(rules: &RuleSet) -> String {
    if rules.is_empty() {
        return "none loaded".into();
    }
    let names: Vec<&str> = rules.rules().iter().map(|r| &*r.name).collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn set(text: &str) -> RuleSet {
        let file = crate::rules::parse_rule_file(text, Path::new("r.toml")).unwrap();
        RuleSet::with_silences(file.rules, file.silences).unwrap()
    }

    // A rule whose measurement is produced, one whose is not (with an override), a silence
    // of a stale alert, and a silence whose glob names no rule.
    const RULES: &str = "[[rule]]\nname = \"hot\"\nmeasurement = \"env\"\nfield = \"t\"\n\
        above = { warning = 2.0 }\nstale_after = \"1m\"\n\
        [[rule]]\nname = \"cold\"\nmeasurement = \"envv\"\nfield = \"t\"\n\
        below = { warning = 1.0 }\n\
        [[rule.override]]\nmatch = { room = \"r1\" }\nbelow = { warning = 0.5 }\n\
        [[silence]]\nrule = \"hot:stale\"\ndaily = { from = \"01:00\", to = \"02:00\" }\n\
        [[silence]]\nrule = \"pdu_*\"\ndaily = { from = \"01:00\", to = \"02:00\" }\n";

    #[test]
    fn names_the_misspelled_measurement_and_the_empty_silence_with_lines() {
        let rules = set(RULES);
        let produced = produced([Some(vec!["env".into()]), Some(vec!["snmp_poll".into()])]);
        let w = warnings(produced.as_ref(), &rules);
        assert_eq!(w.len(), 2, "{w:#?}");
        let cold = "r.toml:7: rule 'cold' can never fire (nor can its 1 override(s))";
        assert!(w[0].starts_with(cold), "{}", w[0]);
        assert!(
            w[0].contains("\"envv\" (they write: env, snmp_poll)"),
            "{}",
            w[0]
        );
        let pdu = "r.toml:18: silence rule = \"pdu_*\" matches no rule";
        assert!(w[1].starts_with(pdu), "{}", w[1]);
    }

    #[test]
    fn a_source_that_can_write_anything_silences_the_measurement_warning() {
        let rules = set(RULES);
        let produced = produced([Some(vec!["env".into()]), None]);
        assert!(produced.is_none());
        let w = warnings(produced.as_ref(), &rules);
        assert_eq!(w.len(), 1, "only the silence: {w:#?}");
    }
}
