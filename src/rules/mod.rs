//! Threshold rules: rule files (data, not code), the per-series state machine that turns
//! samples into events, and the pipeline stage that runs it.
//!
//! - [`config`]: the rule file schema, validation with `file:line` errors, the `[rules]` table.
//! - [`engine`]: levels with hysteresis, `for`, `keep_firing_for`, ranges, rate of change,
//!   stale (no-data) alerts, flapping, overrides and inhibition; one event per state change.
//! - [`silence`]: `[[silence]]` maintenance windows and the notification gate.
//! - [`live_silences`]: the silences made through the API, gated on with the files' ones.
//! - `series`: what the engine keeps per series (shared match sets, field tracks, and rule
//!   state only for pairs not at rest).
//! - [`open_alerts`]: what is firing now (the `alerts` measurement and the API's list), and
//!   the acknowledgements ([`acknowledge`]) with the times to acknowledge and resolve.
//! - [`state`]: alarm state saved across restarts.
//! - [`units`] and [`handover`]: cluster mode, rule state kept per unit and moved with it.
//! - [`reload`]: building the engine from `[rules]` and reloading on rule file changes.
//! - [`stage`]: between collectors and sinks; events are sent before the samples that caused
//!   them, alerts never block the pipeline, a timer drives stale detection and state saving.
//!
//! The rule file syntax for operators is documented in `docs/rules.md`.

pub mod acknowledge;
pub mod config;
pub mod engine;
pub mod handover;
pub mod live_silences;
pub mod open_alerts;
pub mod reload;
pub mod replay;
mod series;
pub mod silence;
pub mod stage;
pub mod state;
pub mod units;

pub use config::{
    load_rule_files, parse_rule_file, parse_rules, Condition, Direction, Expected, Level, Rule,
    RuleProblem, RuleSet, RulesConfig, RulesError,
};
pub use engine::Engine;
pub use silence::{Gate, Silence};
pub use stage::evaluate_batch;
pub use state::StateError;
