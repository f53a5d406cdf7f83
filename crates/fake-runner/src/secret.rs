//! A string that must never reach a log, a diagnostic file or a command line.
//!
//! A thin newtype over [`secrecy::SecretString`] (zeroed on drop), with the API of the
//! workspace's `github::Secret`. The agent does not use that type itself: it would pull the
//! `github` crate (tokio, reqwest, jsonwebtoken) into this small synchronous binary, and the
//! agent hands no `Secret` to another crate — tokens reach it as text (arguments, the
//! environment, files, HTTP).

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

/// A registration/remove token, a JIT config or a runner credential.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(SecretString::from(value.into()))
    }

    /// The raw value, for the one place that sends it (an HTTP header or a 0600 file).
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_redact() {
        let s = Secret::new("AABBCC");
        assert_eq!(format!("{s:?} {s}"), "Secret(***) ***");
        assert_eq!(s.expose(), "AABBCC");
        assert_eq!(s.clone(), Secret::new(String::from("AABBCC")));
        assert_ne!(s, Secret::new("AABBCD"));
    }
}
