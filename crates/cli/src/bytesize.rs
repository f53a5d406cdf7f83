//! Byte sizes as LXD writes them: `7GiB`, `512MiB`, `10GB`.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// A positive byte size, keeping the operator's spelling (LXD accepts the same syntax, and the
/// seed names its resource profile after it: `cpu-2-mem-7GiB-disk-10GiB`).
#[derive(Clone, PartialEq, Eq)]
pub struct ByteSize {
    bytes: u64,
    text: String,
}

const UNITS: &[(&str, u64)] = &[
    ("B", 1),
    ("kB", 1_000),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
];

/// Why a byte size did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ByteSizeError {
    #[error("expected a size such as \"7GiB\" (a whole number and a unit: B, kB, MB, GB, TB, KiB, MiB, GiB, TiB)")]
    Syntax,
    #[error("unknown unit \"{0}\" (use B, kB, MB, GB, TB, KiB, MiB, GiB or TiB)")]
    Unit(String),
    #[error("must be greater than zero")]
    Zero,
    #[error("is too large")]
    Overflow,
}

impl ByteSize {
    /// The size in bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The size as written in the config, e.g. `7GiB`.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for ByteSize {
    type Err = ByteSizeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        if number.is_empty() || unit.is_empty() {
            return Err(ByteSizeError::Syntax);
        }
        let multiplier = UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, multiplier)| *multiplier)
            .ok_or_else(|| ByteSizeError::Unit(unit.to_owned()))?;
        let number: u64 = number.parse().map_err(|_| ByteSizeError::Overflow)?;
        if number == 0 {
            return Err(ByteSizeError::Zero);
        }
        let bytes = number
            .checked_mul(multiplier)
            .ok_or(ByteSizeError::Overflow)?;
        Ok(Self {
            bytes,
            text: text.to_owned(),
        })
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} bytes)", self.text, self.bytes)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size string such as \"7GiB\"")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<ByteSize, E> {
                value
                    .parse()
                    .map_err(|err| E::custom(format_args!("invalid size \"{value}\": {err}")))
            }
        }
        deserializer.deserialize_str(SizeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Result<u64, ByteSizeError>) {
        assert_eq!(
            text.parse::<ByteSize>().map(|size| size.bytes()),
            expected,
            "{text}"
        );
    }

    #[test]
    fn parses_lxd_sizes() {
        check("7GiB", Ok(7 << 30));
        check("10GiB", Ok(10 << 30));
        check("512MiB", Ok(512 << 20));
        check("2GB", Ok(2_000_000_000));
        check("1B", Ok(1));
        check("3kB", Ok(3_000));
    }

    #[test]
    fn rejects_bad_sizes() {
        check("", Err(ByteSizeError::Syntax));
        check("GiB", Err(ByteSizeError::Syntax));
        check("7", Err(ByteSizeError::Syntax));
        check("7 GiB", Err(ByteSizeError::Unit(" GiB".into())));
        check("7gib", Err(ByteSizeError::Unit("gib".into())));
        check("7XB", Err(ByteSizeError::Unit("XB".into())));
        check("-7GiB", Err(ByteSizeError::Syntax));
        check("0GiB", Err(ByteSizeError::Zero));
        check("99999999999TiB", Err(ByteSizeError::Overflow));
        check("999999999999999999999B", Err(ByteSizeError::Overflow));
    }

    #[test]
    fn keeps_the_spelling() {
        let size: ByteSize = "7GiB".parse().expect("valid");
        assert_eq!(size.to_string(), "7GiB");
        assert_eq!(size.as_str(), "7GiB");
    }
}
