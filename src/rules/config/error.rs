//! Rule file errors: one located problem per rule, and the error type of loading rule files.

use std::fmt;
use std::path::PathBuf;

/// One semantic problem in one rule, located by file and line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleProblem {
    pub path: PathBuf,
    pub line: usize,
    pub rule: String,
    pub problem: String,
    pub hint: String,
}

impl fmt::Display for RuleProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: rule '{}': {}; {}",
            self.path.display(),
            self.line,
            self.rule,
            self.problem,
            self.hint
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("{path}: cannot read rule file: {source}; check the path in [rules] files and that sitewatch may read it")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// TOML syntax, wrong value types and unknown keys (serde errors, located by toml).
    #[error(
        "{path}:{line}:{column}: {message}; fix the rule file (see deploy/rules/ for examples)"
    )]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// Every semantic problem found, one per line, so `sitewatch check` shows them all at once.
    #[error("{}", join_problems(.0))]
    Invalid(Vec<RuleProblem>),
    #[error("[rules] files pattern '{pattern}' (relative to {base}) matches no file; fix the pattern or create the rule file")]
    NoMatch { pattern: String, base: PathBuf },
    #[error("[rules] files pattern '{pattern}' is not a valid glob: {message}; use *, ** and ? wildcards, e.g. \"rules/*.toml\"")]
    BadPattern { pattern: String, message: String },
    #[error("{path}: cannot list directory while resolving [rules] files: {source}")]
    Walk {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn join_problems(problems: &[RuleProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}
