//! The real binary: check-config, usage errors (exit 2), config errors naming the key (exit 2),
//! and no secret on the console.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use assert_cmd::Command;
use common::{runner_manager, Run, CLEAN_ENV};
use tempfile::TempDir;

const SECRETS: [&str; 4] = [
    "ghp_CLI_SECRET",
    "API_CLI_SECRET",
    "HOOK_CLI_SECRET",
    "PROXY_CLI_PASS",
];

fn valid_config() -> String {
    r#"
app_name = "ci-runner"
unit = 2

[github]
path = "octo-org"
runner_group = "linux"
token = "ghp_CLI_SECRET"

[lxd]
socket = "/var/lib/incus/unix.socket"
image = "noble"
instance_type = "container"

[runners]
quantity = 3
labels = ["gpu", "large"]
registration = "jit"

[proxy]
http = "http://user:PROXY_CLI_PASS@proxy.internal:3128"
no_proxy = "localhost,127.0.0.1"

[server]
listen = "0.0.0.0:9464"
api_token = "API_CLI_SECRET"
webhook_secret = "HOOK_CLI_SECRET"
reconcile_interval_seconds = 120
"#
    .to_owned()
}

fn write_config(dir: &TempDir, text: &str) -> String {
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn run(cmd: &mut Command, dir: &Path) -> Run {
    let clean =
        |bytes: &[u8]| String::from_utf8_lossy(bytes).replace(&dir.display().to_string(), "[DIR]");
    Run::of(cmd, clean, &SECRETS)
}

#[test]
fn check_config_prints_a_redacted_summary() {
    let dir = TempDir::new().unwrap();
    let path = write_config(&dir, &valid_config());
    let out = run(
        runner_manager().args(["--config", &path, "check-config"]),
        dir.path(),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "", "human output goes to stderr");
    insta::assert_snapshot!("check_config_human", out.stderr);

    let out = run(
        runner_manager().args(["check-config", "--json", "--config", &path]),
        dir.path(),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let summary: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(summary["runner_name_prefix"], "ci-runner-2-");
    assert_eq!(summary["api_token"], "set");
    insta::assert_snapshot!("check_config_json", out.stdout);
}

#[test]
fn config_path_comes_from_the_environment() {
    let dir = TempDir::new().unwrap();
    let path = write_config(&dir, &valid_config());
    let out = run(
        runner_manager()
            .env("RUNNER_MANAGER_CONFIG", &path)
            .arg("check-config"),
        dir.path(),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.starts_with("config [DIR]/config.toml is valid"),
        "{}",
        out.stderr
    );
}

#[test]
fn secrets_from_env_and_files_are_not_printed() {
    let dir = TempDir::new().unwrap();
    std::fs::write(dir.path().join("hook"), "HOOK_CLI_SECRET\n").unwrap();
    let text = "[github]\npath = \"o/r\"\n[server]\nwebhook_secret_file = \"hook\"\n";
    let path = write_config(&dir, text);
    let out = run(
        runner_manager()
            .env("RUNNER_MANAGER_GITHUB_TOKEN", "ghp_CLI_SECRET")
            .args(["--config", &path, "check-config"]),
        dir.path(),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("token from env RUNNER_MANAGER_GITHUB_TOKEN"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("webhook_secret set"), "{}", out.stderr);
}

#[test]
fn config_errors_exit_2_and_name_the_key() {
    let dir = TempDir::new().unwrap();
    let mut report = String::new();
    for (name, edit) in [
        ("memory", ("quantity = 3", "quantity = 3\nmemory = \"7XB\"")),
        ("unknown key", ("quantity = 3", "quantity = 3\nquantty = 3")),
        ("wrong type", ("quantity = 3", "quantity = \"three\"")),
        ("github path", ("path = \"octo-org\"", "path = \"a/b/c\"")),
        (
            "secret type",
            ("token = \"ghp_CLI_SECRET\"", "token = 12345"),
        ),
        (
            "several",
            ("image = \"noble\"", "image = \"\"\ntarget = \"\""),
        ),
        (
            "syntax",
            ("token = \"ghp_CLI_SECRET\"", "token = \"ghp_CLI_SECRET"),
        ),
    ] {
        let path = write_config(&dir, &valid_config().replace(edit.0, edit.1));
        let out = run(
            runner_manager().args(["--config", &path, "check-config"]),
            dir.path(),
        );
        assert_eq!(out.code, 2, "{name}: {}", out.stderr);
        assert_eq!(out.stdout, "");
        report.push_str(&format!("## {name}\n{}\n", out.stderr));
    }
    let out = run(
        runner_manager().args(["--config", "/nonexistent/config.toml", "status"]),
        dir.path(),
    );
    assert_eq!(out.code, 2);
    report.push_str(&format!("## missing file\n{}\n", out.stderr));
    insta::assert_snapshot!("config_errors", report);
}

#[test]
fn usage_errors_exit_2() {
    let dir = TempDir::new().unwrap();
    for args in [
        &[][..],
        &["frobnicate"],
        &["reconcile", "--quantity", "lots"],
        &["flush", "--everything"],
        &["runner-bin"],
        &["runner-bin", "latest", "--arch", "mips"],
        &["--log-format", "yaml", "status"],
    ] {
        let out = run(runner_manager().args(args), dir.path());
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.starts_with("error:") || out.stderr.contains("Usage:"),
            "{args:?}: {}",
            out.stderr
        );
    }
    let out = run(runner_manager().arg("--help"), dir.path());
    assert_eq!(out.code, 0);
    for command in [
        "run",
        "reconcile",
        "flush",
        "status",
        "runner-bin",
        "check-config",
    ] {
        assert!(
            out.stdout.contains(command),
            "{command} missing from --help"
        );
    }
}

#[test]
fn json_logs_are_json() {
    let dir = TempDir::new().unwrap();
    let path = write_config(&dir, &valid_config());
    // `status` needs the manager; whatever it answers, log lines on stderr are JSON with
    // --log-format json (the error report itself is human text after them).
    let out = run(
        runner_manager().env("RUST_LOG", "debug").args([
            "--log-format",
            "json",
            "--config",
            &path,
            "status",
        ]),
        dir.path(),
    );
    let logs: Vec<&str> = out.stderr.lines().filter(|l| l.starts_with('{')).collect();
    assert!(!logs.is_empty(), "no JSON log line: {}", out.stderr);
    for line in &logs {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(value.get("level").is_some(), "{line}");
    }
    assert!(
        !out.stderr
            .lines()
            .any(|l| l.contains(" DEBUG ") || l.contains(" INFO ")),
        "text logs: {}",
        out.stderr
    );
}

/// Text logs on a pipe (journald, a file) carry no ANSI escape codes; neither do they with
/// `NO_COLOR`. Secrets stay out of the logs even at trace level.
#[test]
fn logs_are_plain_text_off_a_terminal() {
    let dir = TempDir::new().unwrap();
    let text = valid_config().replace(
        "socket = \"/var/lib/incus/unix.socket\"",
        &format!("socket = \"{}\"", dir.path().join("no.socket").display()),
    );
    let path = write_config(&dir, &text);
    for no_color in [None, Some("1")] {
        for level in ["debug", "trace"] {
            let mut cmd = runner_manager();
            cmd.env("RUST_LOG", level)
                .args(["--config", &path, "status"]);
            if let Some(value) = no_color {
                cmd.env("NO_COLOR", value);
            }
            // `run` checks that no secret (token, proxy password, ...) is printed.
            let out = run(&mut cmd, dir.path());
            assert_ne!(out.code, 0, "no lxd socket: {}", out.stderr);
            assert!(
                out.stderr.contains("Config loaded."),
                "no log line: {}",
                out.stderr
            );
            assert!(
                !out.stderr.contains('\x1b'),
                "ANSI codes with NO_COLOR={no_color:?} on a pipe: {:?}",
                out.stderr
            );
        }
    }
}

/// On a terminal, text logs are coloured unless `NO_COLOR` is set (a pty via `script(1)`).
#[test]
fn logs_are_coloured_on_a_terminal_unless_no_color() {
    let dir = TempDir::new().unwrap();
    let path = write_config(&dir, &valid_config());
    let bin = assert_cmd::cargo::cargo_bin("runner-manager");
    let line = format!("{} --config {path} check-config", bin.display());
    for (no_color, coloured) in [(None, true), (Some(""), true), (Some("1"), false)] {
        let mut cmd = std::process::Command::new("script");
        cmd.args(["-qec", &line, "/dev/null"]);
        for var in CLEAN_ENV {
            cmd.env_remove(var);
        }
        cmd.env("RUST_LOG", "debug");
        if let Some(value) = no_color {
            cmd.env("NO_COLOR", value);
        }
        let Ok(output) = cmd.output() else {
            eprintln!("skipped: script(1) is not installed");
            return;
        };
        let shown = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() && !shown.contains("Config loaded") {
            eprintln!(
                "skipped: no pseudo-terminal: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            return;
        }
        assert!(shown.contains("Config loaded."), "{shown}");
        assert_eq!(
            shown.contains("\x1b["),
            coloured,
            "NO_COLOR={no_color:?}: {shown:?}"
        );
    }
}

/// The release binary ships no debug info (it was 72 MB, 53 MB of it dependencies' debug info)
/// but keeps its symbol table, so a panic's backtrace still names functions. A release build is
/// too slow for CI: this reads the workspace's release profile instead.
#[test]
fn release_profile_ships_no_debuginfo_but_keeps_symbols() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    let manifest: toml::Table = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let release = manifest
        .get("profile")
        .and_then(|p| p.get("release"))
        .and_then(toml::Value::as_table)
        .expect("a [profile.release] section");
    let no_debuginfo = |table: &toml::Table| match table.get("debug") {
        None => None,
        Some(toml::Value::Boolean(on)) => Some(!on),
        Some(toml::Value::Integer(level)) => Some(*level == 0),
        Some(toml::Value::String(level)) => Some(level == "none"),
        Some(other) => panic!("unexpected debug = {other}"),
    };
    let strip = release.get("strip").cloned();
    let strips_debuginfo = matches!(&strip, Some(toml::Value::String(s)) if s == "debuginfo");
    assert!(
        !matches!(&strip, Some(toml::Value::Boolean(true)))
            && !matches!(&strip, Some(toml::Value::String(s)) if s == "symbols"),
        "strip = {strip:?} removes the symbol names backtraces need"
    );
    // Cargo's release default is no debug info.
    let ours = no_debuginfo(release).unwrap_or(true);
    assert!(
        ours || strips_debuginfo,
        "[profile.release] ships debug info: set debug = false or strip = \"debuginfo\""
    );
    let packages = release.get("package").and_then(toml::Value::as_table);
    for (name, settings) in packages.into_iter().flatten() {
        let settings = settings.as_table().expect("a table");
        assert!(
            no_debuginfo(settings).unwrap_or(true) || strips_debuginfo,
            "[profile.release.package.{name}] ships debug info"
        );
    }
}

/// The command line is an outside contract: a rename shows up here.
#[test]
fn help_texts() {
    let dir = TempDir::new().unwrap();
    let mut report = String::new();
    for args in [
        &["--help"][..],
        &["reconcile", "--help"],
        &["flush", "--help"],
        &["status", "--help"],
        &["runner-bin", "--help"],
        &["runner-bin", "latest", "--help"],
        &["runner-bin", "update", "--help"],
        &["check-config", "--help"],
    ] {
        let out = run(
            runner_manager().env("COLUMNS", "100").args(args),
            dir.path(),
        );
        assert_eq!(out.code, 0, "{args:?}");
        report.push_str(&format!(
            "$ runner-manager {}\n{}\n",
            args.join(" "),
            out.stdout
        ));
    }
    insta::assert_snapshot!(report);
}
