//! Config errors: each names its key ([`KeyError`]) and the reason.

use super::*;

/// One problem with one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    /// The full key, e.g. `runners.memory` or `runners.labels[2]`.
    pub key: String,
    pub reason: String,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("TOML syntax error at line {line}, column {column}: {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}", join_errors(.0))]
    Invalid(Vec<KeyError>),
}

pub(super) fn join_errors(errors: &[KeyError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl ConfigError {
    /// The keys this error names (empty for read and syntax errors).
    pub fn keys(&self) -> Vec<&str> {
        match self {
            Self::Invalid(errors) => errors.iter().map(|e| e.key.as_str()).collect(),
            _ => Vec::new(),
        }
    }
}

#[derive(Default)]
pub(super) struct Errors(pub(super) Vec<KeyError>);

impl Errors {
    pub(super) fn push(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.0.push(KeyError {
            key: key.into(),
            reason: reason.into(),
        });
    }
}
