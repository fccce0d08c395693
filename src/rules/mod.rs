//! Threshold rules: rule files (data, not code), the per-series state machine that turns
//! samples into events, and the pipeline stage that runs it.
//!
//! - [`config`]: the rule file schema, validation with `file:line` errors, the `[rules]` table.
//! - [`engine`]: levels with hysteresis, `for` on sample time, one event per severity change.
//! - [`stage`]: between collectors and sinks; events are sent before the samples that caused
//!   them, alerts never block the pipeline.

pub mod config;
pub mod engine;
pub mod stage;

pub use config::{
    load_rule_files, parse_rules, Condition, Direction, Expected, Level, Rule, RuleProblem,
    RuleSet, RulesConfig, RulesError,
};
pub use engine::Engine;
pub use stage::evaluate_batch;
