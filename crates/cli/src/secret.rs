//! A string that must never be shown: tokens, webhook secrets, private keys.
//!
//! `Secret` redacts itself in `Debug` and `Display`, implements no `Serialize`, and compares in
//! constant time. The value is reachable only through [`Secret::expose`], which makes every use
//! easy to audit.

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What `Debug` and `Display` print instead of a secret.
pub const REDACTED: &str = "[redacted]";

/// A secret value. Never empty: an empty string in the config means "unset".
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value; `None` when it is empty after trimming surrounding whitespace
    /// (a trailing newline from a secret file is not part of the secret).
    pub fn new(value: impl Into<String>) -> Option<Self> {
        let value = value.into();
        let trimmed = value.trim();
        if trimmed.is_empty() {
            None
        } else if trimmed.len() == value.len() {
            Some(Self(value))
        } else {
            Some(Self(trimmed.to_owned()))
        }
    }

    /// The secret value, for the one place that must send it somewhere.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Compares `candidate` with this secret in constant time. Both sides are hashed first so
    /// the comparison does not reveal the secret's length either.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let expected = Sha256::digest(self.0.as_bytes());
        let given = Sha256::digest(candidate);
        expected.ct_eq(&given).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_redact() {
        let secret = Secret::new("ghp_topsecret").expect("non-empty");
        assert_eq!(format!("{secret:?}"), REDACTED);
        assert_eq!(format!("{secret}"), REDACTED);
        assert_eq!(
            format!("{:?}", Some(secret.clone())),
            format!("Some({REDACTED})")
        );
        assert_eq!(secret.expose(), "ghp_topsecret");
    }

    #[test]
    fn empty_is_unset_and_whitespace_is_trimmed() {
        assert!(Secret::new("").is_none());
        assert!(Secret::new(" \n").is_none());
        let secret = Secret::new("abc\n").expect("non-empty");
        assert_eq!(secret.expose(), "abc");
    }

    #[test]
    fn matches_only_the_exact_value() {
        let secret = Secret::new("token-1").expect("non-empty");
        assert!(secret.matches(b"token-1"));
        assert!(!secret.matches(b"token-2"));
        assert!(!secret.matches(b"token-1 "));
        assert!(!secret.matches(b""));
    }
}
