//! A string that must never be shown: tokens, webhook secrets, private keys.
//!
//! [`Secret`] is the workspace's one secret type, [`github::Secret`] (also `manager::Secret`):
//! it redacts itself in `Debug` and `Display`, implements no `Serialize`, is zeroed on drop and
//! is reachable only through [`Secret::expose`], which makes every use easy to audit. The
//! configuration hands it to the GitHub client and the manager by `clone`.
//!
//! [`SecretExt`] adds what the CLI needs on top: [`SecretExt::non_empty`] (an empty value in the
//! config means "unset") and [`SecretExt::matches`] (a constant-time check of a presented token).

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use github::Secret;

/// What `Display` prints instead of a secret (`Debug` prints `Secret([redacted])`).
pub const REDACTED: &str = "[redacted]";

/// The CLI's additions to [`Secret`]. Import it to call `Secret::non_empty` and `secret.matches`.
pub trait SecretExt: Sized {
    /// Wraps a value; `None` when it is empty after trimming surrounding whitespace
    /// (a trailing newline from a secret file is not part of the secret).
    fn non_empty(value: impl Into<String>) -> Option<Self>;

    /// Compares `candidate` with this secret in constant time. Both sides are hashed first so
    /// the comparison does not reveal the secret's length either.
    fn matches(&self, candidate: &[u8]) -> bool;
}

impl SecretExt for Secret {
    fn non_empty(value: impl Into<String>) -> Option<Self> {
        let value = Secret::new(value);
        let trimmed = value.expose().trim();
        if trimmed.is_empty() {
            None
        } else if trimmed.len() == value.expose().len() {
            Some(value)
        } else {
            Some(Secret::new(trimmed))
        }
    }

    fn matches(&self, candidate: &[u8]) -> bool {
        let expected = Sha256::digest(self.expose().as_bytes());
        let given = Sha256::digest(candidate);
        expected.ct_eq(&given).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_redact() {
        let secret = Secret::non_empty("ghp_topsecret").expect("non-empty");
        assert_eq!(format!("{secret:?}"), "Secret([redacted])");
        assert_eq!(format!("{secret}"), REDACTED);
        assert_eq!(
            format!("{:?}", Some(secret.clone())),
            "Some(Secret([redacted]))"
        );
        assert_eq!(secret.expose(), "ghp_topsecret");
    }

    #[test]
    fn empty_is_unset_and_whitespace_is_trimmed() {
        assert!(Secret::non_empty("").is_none());
        assert!(Secret::non_empty(" \n").is_none());
        let secret = Secret::non_empty("abc\n").expect("non-empty");
        assert_eq!(secret.expose(), "abc");
        let secret = Secret::non_empty(String::from("abc")).expect("non-empty");
        assert_eq!(secret.expose(), "abc");
    }

    #[test]
    fn matches_only_the_exact_value() {
        let secret = Secret::non_empty("token-1").expect("non-empty");
        assert!(secret.matches(b"token-1"));
        assert!(!secret.matches(b"token-2"));
        assert!(!secret.matches(b"token-1 "));
        assert!(!secret.matches(b""));
    }

    #[test]
    fn is_the_type_the_client_and_manager_take() {
        let secret = Secret::non_empty("tok").expect("non-empty");
        let client: github::Secret = secret.clone();
        let manager: manager::Secret = secret;
        assert_eq!(client, manager);
    }
}
