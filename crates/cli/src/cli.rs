//! The command line (an outside contract: keep every name).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{CONFIG_PATH_ENV, DEFAULT_CONFIG_PATH};

/// Keeps a fleet of ephemeral self-hosted GitHub Actions runners alive on LXD/Incus.
#[derive(Debug, Parser)]
#[command(name = "runner-manager", version, propagate_version = true)]
pub struct Cli {
    /// The config file (TOML).
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = CONFIG_PATH_ENV,
        default_value = DEFAULT_CONFIG_PATH
    )]
    pub config: PathBuf,

    /// Log line format on stderr (`RUST_LOG` sets the level).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: reconcile periodically and serve /health, /metrics, /runners,
    /// /reconcile, /flush and /webhook on server.listen.
    Run,
    /// Run one reconcile pass now.
    Reconcile {
        /// Target this many runners instead of runners.quantity.
        #[arg(long, value_name = "N")]
        quantity: Option<u32>,
        /// Act on this pool only (with [[pools]]); the others are left as they are.
        #[arg(long, value_name = "NAME", conflicts_with = "quantity")]
        pool: Option<String>,
        /// Print one JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Remove this manager's runners, busy ones too unless --idle-only.
    Flush {
        /// Remove idle runners only; busy ones finish their job.
        #[arg(long)]
        idle_only: bool,
        /// Remove this pool's runners only.
        #[arg(long, value_name = "NAME")]
        pool: Option<String>,
        /// Print one JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Show each owned runner, and dangling and orphan items.
    Status {
        /// Print one JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// The cached actions/runner binary.
    #[command(subcommand)]
    RunnerBin(RunnerBinCommand),
    /// Runner images built by the manager (pools with image_mode = "baked").
    #[command(subcommand)]
    Image(ImageCommand),
    /// Validate the config file without touching GitHub or LXD, and print a summary.
    CheckConfig {
        /// Print the (redacted) summary as one JSON document on stdout.
        #[arg(long)]
        json: bool,
        /// Also show which pool a job with these `runs-on` labels (comma-separated, e.g.
        /// self-hosted,small) goes to, and the other pools that match, best first.
        #[arg(long, value_name = "LABELS", value_delimiter = ',')]
        route: Option<Vec<String>>,
    },
}

#[derive(Debug, Subcommand)]
pub enum RunnerBinCommand {
    /// Show the newest runner binary GitHub offers.
    Latest {
        #[arg(long, default_value = "linux", value_parser = ["linux", "osx", "win"])]
        os: String,
        #[arg(long, default_value = "x64", value_parser = ["x64", "arm", "arm64"])]
        arch: String,
        /// Print one JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Download the newest runner binary into the cache if it changed.
    Update {
        /// Print one JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Exit 0 when the runner binary is in the cache, 1 when not.
    Check,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build the image of every baked pool (or of one) from its base image and the cached
    /// runner binary, and publish it as a canary.
    Build {
        /// Build this pool's image only (built even when its newest image is current).
        #[arg(long, value_name = "NAME")]
        pool: Option<String>,
        /// Print one JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Show the manager's images with their properties.
    List {
        /// Print one JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("runner-manager").chain(args.iter().copied()))
    }

    #[test]
    fn parses_the_contract() {
        let cli = parse(&[
            "--config",
            "/c.toml",
            "reconcile",
            "--quantity",
            "3",
            "--json",
        ])
        .expect("valid");
        assert_eq!(cli.config, PathBuf::from("/c.toml"));
        assert!(matches!(
            cli.command,
            Command::Reconcile {
                quantity: Some(3),
                pool: None,
                json: true
            }
        ));

        let cli = parse(&["--log-format", "json", "flush", "--idle-only"]).expect("valid");
        assert_eq!(cli.log_format, LogFormat::Json);
        assert!(matches!(
            cli.command,
            Command::Flush {
                idle_only: true,
                pool: None,
                json: false
            }
        ));

        let cli = parse(&[
            "runner-bin",
            "latest",
            "--os",
            "linux",
            "--arch",
            "arm64",
            "--json",
        ])
        .expect("valid");
        match cli.command {
            Command::RunnerBin(RunnerBinCommand::Latest { os, arch, json }) => {
                assert_eq!((os.as_str(), arch.as_str(), json), ("linux", "arm64", true));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            parse(&["runner-bin", "check"]).expect("valid").command,
            Command::RunnerBin(RunnerBinCommand::Check)
        ));
        assert!(matches!(
            parse(&["status", "--json"]).expect("valid").command,
            Command::Status { json: true }
        ));
        assert!(matches!(
            parse(&["run"]).expect("valid").command,
            Command::Run
        ));
        match parse(&["check-config", "--route", "self-hosted,small", "--json"])
            .expect("valid")
            .command
        {
            Command::CheckConfig { json, route } => {
                assert!(json);
                assert_eq!(route, Some(vec!["self-hosted".into(), "small".into()]));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            parse(&["check-config"]).expect("valid").command,
            Command::CheckConfig {
                json: false,
                route: None
            }
        ));
        // --config is global: it may follow the subcommand too.
        let cli = parse(&["check-config", "--config", "/x.toml"]).expect("valid");
        assert_eq!(cli.config, PathBuf::from("/x.toml"));
    }

    #[test]
    fn rejects_bad_usage() {
        for args in [
            &[][..],
            &["nope"],
            &["reconcile", "--quantity", "-1"],
            &["reconcile", "--quantity", "many"],
            &["flush", "--busy"],
            &["runner-bin", "latest", "--os", "plan9"],
            &["--log-format", "xml", "status"],
        ] {
            let err = parse(args).expect_err("usage error");
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }
}
