//! The rule file's TOML schema as serde reads it, before validation.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    #[serde(default)]
    pub(super) rule: Vec<Spanned<RawRule>>,
    #[serde(default)]
    pub(super) silence: Vec<Spanned<RawSilence>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    pub(super) name: Spanned<String>,
    pub(super) measurement: Spanned<String>,
    pub(super) field: Spanned<String>,
    #[serde(default, rename = "match")]
    pub(super) matchers: Option<Spanned<BTreeMap<String, String>>>,
    pub(super) above: Option<Spanned<RawLevels>>,
    pub(super) below: Option<Spanned<RawLevels>>,
    pub(super) equals: Option<Spanned<RawEquals>>,
    pub(super) outside: Option<Spanned<RawBands>>,
    pub(super) inside: Option<Spanned<RawBands>>,
    pub(super) rate: Option<Spanned<RawRate>>,
    #[serde(default, rename = "for")]
    pub(super) for_duration: Option<Spanned<String>>,
    pub(super) keep_firing_for: Option<Spanned<String>>,
    pub(super) stale_after: Option<Spanned<String>>,
    pub(super) stale_severity: Option<Spanned<String>>,
    pub(super) stale_message: Option<Spanned<String>>,
    pub(super) flapping: Option<Spanned<RawFlap>>,
    #[serde(default, rename = "override")]
    pub(super) overrides: Vec<Spanned<RawOverride>>,
    pub(super) depends_on: Option<Spanned<RawDepends>>,
    pub(super) message: Option<Spanned<String>>,
    pub(super) resolved_message: Option<Spanned<String>>,
    pub(super) labels: Option<Spanned<BTreeMap<String, String>>>,
    pub(super) annotations: Option<Spanned<BTreeMap<String, String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLevels {
    pub(super) warning: Option<f64>,
    pub(super) warning_clear: Option<f64>,
    pub(super) critical: Option<f64>,
    pub(super) critical_clear: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEquals {
    pub(super) warning: Option<toml::Value>,
    pub(super) critical: Option<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBands {
    pub(super) warning: Option<[f64; 2]>,
    pub(super) warning_clear: Option<[f64; 2]>,
    pub(super) critical: Option<[f64; 2]>,
    pub(super) critical_clear: Option<[f64; 2]>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRate {
    pub(super) window: String,
    #[serde(default)]
    pub(super) falling: bool,
    pub(super) warning: Option<f64>,
    pub(super) warning_clear: Option<f64>,
    pub(super) critical: Option<f64>,
    pub(super) critical_clear: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFlap {
    pub(super) changes: u32,
    pub(super) window: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOverride {
    #[serde(rename = "match")]
    pub(super) matchers: Spanned<BTreeMap<String, String>>,
    pub(super) above: Option<Spanned<RawLevels>>,
    pub(super) below: Option<Spanned<RawLevels>>,
    pub(super) equals: Option<Spanned<RawEquals>>,
    pub(super) outside: Option<Spanned<RawBands>>,
    pub(super) inside: Option<Spanned<RawBands>>,
    pub(super) rate: Option<Spanned<RawRate>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDepends {
    pub(super) rule: String,
    #[serde(default)]
    pub(super) match_tags: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSilence {
    pub(super) comment: Option<String>,
    pub(super) rule: Option<String>,
    #[serde(default, rename = "match")]
    pub(super) matchers: Option<Spanned<BTreeMap<String, String>>>,
    pub(super) start: Option<Spanned<String>>,
    pub(super) end: Option<Spanned<String>>,
    pub(super) daily: Option<Spanned<RawDaily>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDaily {
    pub(super) from: String,
    pub(super) to: String,
    pub(super) timezone: Option<String>,
}

/// The condition keys of a rule or an override.
pub(super) struct RawConditions<'a> {
    pub(super) above: &'a Option<Spanned<RawLevels>>,
    pub(super) below: &'a Option<Spanned<RawLevels>>,
    pub(super) equals: &'a Option<Spanned<RawEquals>>,
    pub(super) outside: &'a Option<Spanned<RawBands>>,
    pub(super) inside: &'a Option<Spanned<RawBands>>,
    pub(super) rate: &'a Option<Spanned<RawRate>>,
}
