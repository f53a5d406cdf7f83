//! [`Secret`]: a string that never shows itself in logs.
//!
//! This is the workspace's one secret type: the manager re-exports it (`manager::Secret`), the
//! CLI (`runner_manager::secret::Secret`) and the simulator (`github_sim::Secret`) use it as is,
//! so a secret crosses those boundaries by `clone`, never by copying its exposed value.

use std::fmt;
use std::path::Path;

use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

/// A secret string (token, JIT config, private key) that redacts itself in `Debug` and `Display`.
///
/// The only way to read the value is [`Secret::expose`], which makes every use greppable.
/// It is deliberately not `Serialize`; it can be deserialized from configuration.
/// The value lives in a [`secrecy::SecretString`], which zeroes it on drop.
/// Equality is constant time for values of the same length.
#[derive(Clone, Default)]
pub struct Secret(SecretString);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(SecretString::from(value.into()))
    }

    /// Returns the secret value. Never log the result.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }

    /// Reads a secret from a file, trimming surrounding whitespace (a trailing newline is common).
    pub fn from_file(path: &Path) -> std::io::Result<Self> {
        // The untrimmed text is a secret too: held in a `SecretString`, it is zeroed on return.
        let raw = SecretString::from(std::fs::read_to_string(path)?);
        Ok(Self::new(raw.expose_secret().trim()))
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(SecretString::from(value))
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(SecretString::from(value))
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose()
            .as_bytes()
            .ct_eq(other.expose().as_bytes())
            .into()
    }
}

impl Eq for Secret {}

/// Transparent: a secret is written in configuration as a plain string.
impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        <String as serde::Deserialize>::deserialize(deserializer).map(Self::from)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_redact() {
        let s = Secret::new("ghp_supersecret");
        assert_eq!(format!("{s:?}"), "Secret([redacted])");
        assert_eq!(format!("{s}"), "[redacted]");
        assert!(!format!("{:?}", Some(&s)).contains("supersecret"));
        assert_eq!(s.expose(), "ghp_supersecret");
    }

    #[test]
    fn from_file_trims_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "ghp_abc\n").expect("write");
        assert_eq!(Secret::from_file(&path).expect("read").expose(), "ghp_abc");
    }

    #[test]
    fn deserializes_transparently() {
        let s: Secret = serde_json::from_str("\"abc\"").expect("json");
        assert_eq!(s.expose(), "abc");
        assert!(serde_json::from_str::<Secret>("1").is_err());
    }

    #[test]
    fn equality_compares_values() {
        assert_eq!(Secret::new("abc"), Secret::from("abc"));
        assert_eq!(
            Secret::from(String::from("abc")),
            Secret::new("abc").clone()
        );
        assert_ne!(Secret::new("abc"), Secret::new("abd"));
        assert_ne!(Secret::new("abc"), Secret::new("abcd"));
        assert_eq!(Secret::default(), Secret::new(""));
        assert!(Secret::default().is_empty());
        assert!(!Secret::new("x").is_empty());
    }
}
