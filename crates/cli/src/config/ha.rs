//! `[ha]`: several managers of one app and unit, on different hosts, one of which acts at a time
//! (the lease lives in the LXD/Incus cluster; see `manager::lease`).
//!
//! ```toml
//! [ha]
//! enabled = true
//! lease_seconds = 15     # a standby takes over within two of these after the active one dies
//! renew_seconds = 5      # at most half the lease
//! manager_id = "host-a"  # optional; default <hostname>-<pid>-<random>
//! ```

use super::*;

/// `[ha]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaConfig {
    pub enabled: bool,
    /// The lease and renewal period, and what is derived from them.
    pub timing: manager::lease::LeaseTiming,
    /// `None`: made up at start (`<hostname>-<pid>-<random>`).
    pub manager_id: Option<String>,
}

impl Default for HaConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            timing: default_timing(),
            manager_id: None,
        }
    }
}

const DEFAULT_LEASE_SECONDS: u64 = 15;
const DEFAULT_RENEW_SECONDS: u64 = 5;
const LEASE_RANGE: std::ops::RangeInclusive<u64> = 2..=600;
const MAX_MANAGER_ID: usize = 100;

fn default_timing() -> manager::lease::LeaseTiming {
    manager::lease::LeaseTiming {
        lease: Duration::from_secs(DEFAULT_LEASE_SECONDS),
        renew: Duration::from_secs(DEFAULT_RENEW_SECONDS),
        poll: Duration::from_millis(DEFAULT_RENEW_SECONDS * 500),
        margin: Duration::from_secs(DEFAULT_LEASE_SECONDS) / 4,
        request_timeout: Duration::from_millis(DEFAULT_LEASE_SECONDS * 1000 / 6),
        settle: Duration::from_millis(DEFAULT_LEASE_SECONDS * 1000 / 3),
    }
}

impl Validator<'_> {
    pub(super) fn ha(&mut self, raw: RawHa) -> Option<HaConfig> {
        let lease = raw.lease_seconds.unwrap_or(DEFAULT_LEASE_SECONDS);
        let renew = raw
            .renew_seconds
            .unwrap_or(DEFAULT_RENEW_SECONDS.min(lease / 2));
        let mut ok = true;
        if !LEASE_RANGE.contains(&lease) {
            self.errors.push(
                "ha.lease_seconds",
                format!(
                    "must be between {} and {} seconds",
                    LEASE_RANGE.start(),
                    LEASE_RANGE.end()
                ),
            );
            ok = false;
        } else if renew == 0 || renew * 2 > lease {
            self.errors.push(
                "ha.renew_seconds",
                format!("must be at least 1 and at most half of ha.lease_seconds ({lease})"),
            );
            ok = false;
        }
        if let Some(id) = &raw.manager_id {
            let valid = !id.is_empty()
                && id.len() <= MAX_MANAGER_ID
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !valid {
                self.errors.push(
                    "ha.manager_id",
                    format!(
                        "must be 1 to {MAX_MANAGER_ID} characters of letters, digits, '-', '_' and '.'"
                    ),
                );
                ok = false;
            }
        }
        if !ok {
            return None;
        }
        let timing = manager::lease::LeaseTiming::new(
            Duration::from_secs(lease),
            Duration::from_secs(renew),
        );
        match timing {
            Ok(timing) => Some(HaConfig {
                enabled: raw.enabled.unwrap_or(false),
                timing,
                manager_id: raw.manager_id,
            }),
            Err(error) => {
                self.errors.push("ha.lease_seconds", error.to_string());
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoEnv;

    impl Environment for NoEnv {
        fn var(&self, _name: &str) -> Option<String> {
            None
        }
    }

    fn parse(ha: &str) -> Result<Config, Vec<String>> {
        let text = format!("[github]\npath = \"o/r\"\ntoken = \"ghp_TEST\"\n\n[ha]\n{ha}\n");
        Config::parse(&text, Path::new("/etc/rm"), &NoEnv).map_err(|e| match e {
            ConfigError::Invalid(errors) => errors.iter().map(ToString::to_string).collect(),
            other => vec![other.to_string()],
        })
    }

    #[test]
    fn defaults_and_bounds() {
        let ha = parse("").expect("valid").ha;
        assert!(!ha.enabled);
        assert_eq!(
            HaConfig::default(),
            ha,
            "the default is what an empty [ha] gives"
        );
        assert_eq!(ha.timing.lease, Duration::from_secs(15));
        assert_eq!(ha.timing.renew, Duration::from_secs(5));

        let ha = parse(
            "enabled = true\nlease_seconds = 3\nrenew_seconds = 1\nmanager_id = \"host-a_1.x\"",
        )
        .expect("valid")
        .ha;
        assert!(ha.enabled);
        assert_eq!(ha.timing.margin, Duration::from_millis(750));
        assert_eq!(ha.manager_id.as_deref(), Some("host-a_1.x"));

        let errors = parse("lease_seconds = 1").expect_err("too short");
        assert!(errors[0].contains("ha.lease_seconds"), "{errors:?}");
        let errors = parse("lease_seconds = 10\nrenew_seconds = 6").expect_err("renew too long");
        assert!(errors[0].contains("ha.renew_seconds"), "{errors:?}");
        let errors = parse("manager_id = \"a b\"").expect_err("bad id");
        assert!(errors[0].contains("ha.manager_id"), "{errors:?}");
        let errors = parse("enable = true").expect_err("unknown key");
        assert!(errors.join(" ").contains("enable"), "{errors:?}");
        // A short lease gets a renewal period that fits.
        let ha = parse("lease_seconds = 4").expect("valid").ha;
        assert_eq!(ha.timing.renew, Duration::from_secs(2));
    }
}
