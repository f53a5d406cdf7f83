//! Log lines on stderr via tracing: text for people, `--log-format json` for machines.
//! `RUST_LOG` overrides the level (default `info` for `run`, `warn` for one-shot commands).
//!
//! Text lines are coloured only when stderr is a terminal and `NO_COLOR` is unset or empty
//! (<https://no-color.org>): journald, files and pipes get plain text.

use std::ffi::OsStr;
use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// The variable that turns colours off when set to anything non-empty.
pub const NO_COLOR_ENV: &str = "NO_COLOR";

/// Installs the global subscriber; a second call is a no-op.
pub fn init(format: LogFormat, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let ansi = use_colour(
        std::io::stderr().is_terminal(),
        std::env::var_os(NO_COLOR_ENV).as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    // An error means a subscriber is already installed (tests): keep it.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Whether log lines get ANSI colours: on a terminal, unless `NO_COLOR` has a non-empty value.
pub fn use_colour(stderr_is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(OsStr::is_empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_colour(true, None));
        assert!(
            use_colour(true, Some(OsStr::new(""))),
            "empty NO_COLOR is unset"
        );
        assert!(!use_colour(true, Some(OsStr::new("1"))));
        assert!(
            !use_colour(true, Some(OsStr::new("0"))),
            "any non-empty value"
        );
        assert!(!use_colour(false, None), "journald, files, pipes");
        assert!(!use_colour(false, Some(OsStr::new(""))));
    }
}
