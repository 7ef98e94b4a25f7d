//! Errors from loading and validating the configuration.

use std::fmt;

/// Why the configuration could not be used; start-up should print it and stop.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A layer could not be read or a value has the wrong type; the message names the
    /// variable (or file key) at fault. Boxed because figment errors are large.
    #[error("could not load configuration: {0}")]
    Load(Box<figment::Error>),
    /// Values loaded but break the start-up rules; every problem is listed at once so that
    /// an operator can fix them in one go.
    #[error("invalid configuration:\n{}", list(.0))]
    Invalid(Vec<Problem>),
}

impl From<figment::Error> for ConfigError {
    fn from(err: figment::Error) -> Self {
        ConfigError::Load(Box::new(err))
    }
}

impl ConfigError {
    /// The validation problems, empty for a load error; lets tests and callers inspect
    /// which variables were at fault.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid(problems) => problems,
            ConfigError::Load(_) => &[],
        }
    }
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|problem| format!("  {problem}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One broken rule, naming the variable to fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The environment variable at fault (its TOML key is the field of the same meaning).
    pub variable: &'static str,
    /// What is wrong with it and what is expected.
    pub message: String,
}

impl Problem {
    /// A problem with `variable`.
    pub(crate) fn new(variable: &'static str, message: impl Into<String>) -> Self {
        Problem {
            variable,
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    /// `VARIABLE: message`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.variable, self.message)
    }
}
