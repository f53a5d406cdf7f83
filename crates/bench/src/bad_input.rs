//! R5, bad input: counted runs of (1) config fuzzing against the loader the binary uses
//! (`runner_manager::config::Config::load`) plus a sample through the real binary's
//! `check-config`, (2) webhook requests against the real axum router of `runner_manager::server`
//! (in-process, `tower::ServiceExt::oneshot`), and (3) tampered runner tarballs served by
//! github-sim's downloads endpoint against the manager's update and re-verification path
//! (`RunnerManager::update_runner_bin`, and `reconcile`, which re-reads the cache).
//!
//! Every check also runs a control that must pass (valid configs accepted, valid deliveries
//! triggering, a correct tarball installed), so a check that could never fail shows up.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use futures::FutureExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use runner_manager::config::{Config, ConfigError};
use runner_manager::daemon::{Daemon, DaemonMetrics, DaemonSettings};
use runner_manager::ops::{
    FlushMode, FlushOutput, Operations, ReconcileOutput, RunnerBinCheckOutput, RunnerBinOutput,
    RunnerBinUpdateOutput, StatusOutput,
};
use runner_manager::secret::Secret;
use runner_manager::server::{router, ServerMetrics, ServerState, MAX_BODY_BYTES};
use runner_manager::webhook::{sign, LabelMatcher};
use sha2::{Digest, Sha256};
use tower::ServiceExt;

use crate::table::Table;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The CI subset: fewer cases of every kind.
    pub quick: bool,
    pub seed: u64,
    /// The `runner-manager` binary for the `check-config` sample; `None` skips that sample.
    pub binary: Option<PathBuf>,
}

impl Options {
    fn config_inputs(&self) -> usize {
        if self.quick {
            3_000
        } else {
            10_000
        }
    }
    fn binary_samples(&self) -> usize {
        if self.quick {
            20
        } else {
            200
        }
    }
    fn webhook_scale(&self) -> usize {
        if self.quick {
            1
        } else {
            5
        }
    }
    fn tarball_scale(&self) -> usize {
        if self.quick {
            1
        } else {
            4
        }
    }
}

/// One line of the result table.
#[derive(Debug, Clone)]
pub struct Row {
    pub check: String,
    pub cases: u64,
    pub failures: u64,
    pub evidence: String,
}

/// All rows, and a description of each failure (at most a few per check).
#[derive(Debug, Default)]
pub struct Outcome {
    pub rows: Vec<Row>,
    pub problems: Vec<String>,
}

impl Outcome {
    pub fn failures(&self) -> u64 {
        self.rows.iter().map(|r| r.failures).sum()
    }

    pub fn table(&self) -> String {
        let mut table = Table::new(&["check", "cases", "failures", "evidence"]);
        for row in &self.rows {
            table.row(vec![
                row.check.clone(),
                thousands(row.cases),
                row.failures.to_string(),
                row.evidence.clone(),
            ]);
        }
        table.render()
    }

    fn problem(&mut self, text: String) {
        if self.problems.len() < 60 {
            self.problems.push(text);
        }
    }
}

/// The `runner-manager` binary of this build profile (`$RUNNER_MANAGER_BIN` wins): next to the
/// running executable's profile directory. With `build`, `cargo build -p runner-manager` runs
/// first (never from a test: `cargo test` holds the build lock while tests run).
pub fn runner_manager_binary(build: bool) -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("RUNNER_MANAGER_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().context("locating the running executable")?;
    let mut dir = exe
        .parent()
        .context("the executable has no directory")?
        .to_owned();
    if dir.ends_with("deps") {
        dir = dir.parent().context("deps has no parent")?.to_owned();
    }
    if build {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut command = std::process::Command::new(cargo);
        command.args(["build", "-p", "runner-manager", "--bin", "runner-manager"]);
        if dir.ends_with("release") {
            command.arg("--release");
        }
        if let Some(target) = dir.parent() {
            command.env("CARGO_TARGET_DIR", target);
        }
        let status = command.status().context("running cargo build")?;
        anyhow::ensure!(
            status.success(),
            "cargo build -p runner-manager failed: {status}"
        );
    }
    let path = dir.join("runner-manager");
    anyhow::ensure!(
        path.is_file(),
        "{} not found: build it (cargo build -p runner-manager) or set RUNNER_MANAGER_BIN",
        path.display()
    );
    Ok(path)
}

/// `12345` as `12,345`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Runs the three checks.
pub async fn run(options: &Options) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome::default();
    let started = Instant::now();
    config_fuzz(options, &mut outcome).await?;
    eprintln!(
        "[bad-input] config fuzz done at {:.1}s",
        started.elapsed().as_secs_f64()
    );
    webhooks(options, &mut outcome).await?;
    eprintln!(
        "[bad-input] webhooks done at {:.1}s",
        started.elapsed().as_secs_f64()
    );
    tarballs(options, &mut outcome).await?;
    eprintln!(
        "[bad-input] tarballs done at {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(outcome)
}

// =============================================================================================
// 1. Config fuzzing
// =============================================================================================

const PEM: &str = "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----\n";

/// Secret values used in the valid base configs: no error message may contain them.
const BASE_SECRETS: [&str; 5] = [
    "ghp_SECRET_TOKEN_VALUE",
    "API_SECRET_VALUE",
    "HOOK_SECRET_VALUE",
    "POLICY_SECRET_VALUE",
    "PROXYPASS",
];

/// The secret environment variables: the loader falls back to them, so they must be unset.
const SECRET_ENV: [&str; 5] = [
    "RUNNER_MANAGER_GITHUB_TOKEN",
    "RUNNER_MANAGER_SERVICE_TOKEN",
    "RUNNER_MANAGER_API_TOKEN",
    "RUNNER_MANAGER_WEBHOOK_SECRET",
    "RUNNER_MANAGER_CONFIG",
];

/// The valid configs mutations start from: deploy/config.example.toml and the valid configs of
/// crates/cli/tests/config.rs (files are relative to the fixture directory).
fn base_configs() -> Vec<(&'static str, String)> {
    const MINIMAL: &str = "[github]\npath = \"owner/repo\"\ntoken = \"ghp_SECRET_TOKEN_VALUE\"\n";
    vec![
        (
            "example",
            include_str!("../../../deploy/config.example.toml").to_owned(),
        ),
        ("minimal", MINIMAL.to_owned()),
        (
            "org",
            "[github]\npath = \"octo-org\"\nrunner_group = \"gpu\"\ntoken = \"ghp_SECRET_TOKEN_VALUE\"\n"
                .to_owned(),
        ),
        (
            "token-file",
            "[github]\npath = \"o/r\"\ntoken_file = \"github-token\"\n".to_owned(),
        ),
        (
            "app",
            "[github]\npath = \"octo-org\"\n[github.app]\napp_id = 12\ninstallation_id = 34\nprivate_key_file = \"app.pem\"\n"
                .to_owned(),
        ),
        (
            "lxd-https",
            format!("{MINIMAL}[lxd]\nurl = \"https://lxd.test:8443\"\nclient_cert = \"lxd.crt\"\nclient_key = \"lxd.key\"\nserver_cert = \"lxd.crt\"\n"),
        ),
        (
            "ghes",
            "[github]\npath = \"enterprises/acme\"\ntoken = \"ghp_SECRET_TOKEN_VALUE\"\napi_url = \"https://ghe.example.com/api/v3\"\n"
                .to_owned(),
        ),
        (
            "proxy",
            format!("{MINIMAL}[proxy]\nhttp = \"http://user:PROXYPASS@proxy:3128\"\nhttps = \"http://proxy:3128\"\nno_proxy = \"localhost, 10.0.0.0/8\"\n"),
        ),
        (
            "secrets",
            format!("{MINIMAL}[server]\nlisten = \"0.0.0.0:9464\"\napi_token = \"API_SECRET_VALUE\"\nwebhook_secret = \"HOOK_SECRET_VALUE\"\nreconcile_interval_seconds = 60\n[policy]\nurl = \"http://policy:8080\"\nservice_token = \"POLICY_SECRET_VALUE\"\n[metrics]\nissue_metrics = true\nevents_log = \"events.log\"\n"),
        ),
        (
            "container-jit",
            format!("app_name = \"my-app\"\nunit = 3\nstate_dir = \"state\"\n{MINIMAL}[lxd]\nimage = \"busybox\"\ninstance_type = \"container\"\nstorage_path = \"/storage/ram\"\ntarget = \"member1\"\n[runners]\nquantity = 10000\ncpu = 1024\nmemory = \"256MiB\"\ndisk = \"1GiB\"\nlabels = [\"gpu\", \"x64\"]\nregistration = \"jit\"\n"),
        ),
        (
            "file-secrets",
            "[github]\npath = \"o/r\"\ntoken_file = \"github-token\"\n[server]\napi_token_file = \"secret\"\nwebhook_secret_file = \"secret\"\n[policy]\nurl = \"https://policy.example.com\"\nservice_token_file = \"secret\"\n"
                .to_owned(),
        ),
    ]
}

/// Known top-level names (as `top_level_names()` in crates/cli/tests/config.rs).
const TOP_LEVEL: [&str; 10] = [
    "app_name",
    "unit",
    "state_dir",
    "github",
    "lxd",
    "runners",
    "proxy",
    "policy",
    "metrics",
    "server",
];

/// Every key of the schema, with values of the right type that are not allowed.
fn bad_values() -> Vec<(&'static str, Vec<String>)> {
    let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
    let many_labels = format!(
        "[{}]",
        (0..101)
            .map(|i| format!("\"l{i}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let long_name = format!("\"{}\"", "a".repeat(41));
    vec![
        (
            "app_name",
            vec![
                "\"\"".into(),
                "\"Bad Name\"".into(),
                long_name,
                "\"UPPER\"".into(),
                "\"-lead\"".into(),
                "\"ünï\"".into(),
            ],
        ),
        (
            "unit",
            s(&[
                "-1",
                "100000",
                "9223372036854775807",
                "-9223372036854775808",
            ]),
        ),
        ("state_dir", s(&["\"\""])),
        (
            "github.path",
            s(&[
                "\"\"",
                "\"a/b/c\"",
                "\"owner/\"",
                "\"/repo\"",
                "\"own er/repo\"",
                "\"owner/..\"",
                "\"-owner\"",
                "\"enterprises/\"",
            ]),
        ),
        ("github.runner_group", s(&["\"\"", "\" \""])),
        ("github.token", s(&["\"\"", "\"   \""])),
        (
            "github.token_file",
            s(&["\"/missing\"", "\"empty\"", "\"\""]),
        ),
        (
            "github.api_url",
            s(&["\"ftp://x\"", "\"not a url\"", "\"\"", "\"http://\""]),
        ),
        ("github.web_url", s(&["\"not a url\"", "\"ftp://x\""])),
        ("github.app.app_id", s(&["0", "-1"])),
        ("github.app.installation_id", s(&["0", "-5"])),
        (
            "github.app.private_key_file",
            s(&["\"/missing.pem\"", "\"secret\"", "\"\""]),
        ),
        ("lxd.socket", s(&["\"\""])),
        ("lxd.url", s(&["\"http://lxd.test:8443\"", "\"not a url\""])),
        ("lxd.client_cert", s(&["\"/missing.crt\"", "\"\""])),
        ("lxd.client_key", s(&["\"/missing.key\""])),
        ("lxd.server_cert", s(&["\"/missing.crt\""])),
        ("lxd.image", s(&["\"two words\"", "\"\""])),
        ("lxd.instance_type", s(&["\"vm\"", "\"\"", "\"Container\""])),
        ("lxd.storage_path", s(&["\"\""])),
        ("lxd.target", s(&["\"\""])),
        ("runners.quantity", s(&["-1", "10001", "4294967296"])),
        ("runners.cpu", s(&["0", "1025", "-3"])),
        (
            "runners.memory",
            s(&[
                "\"7XB\"",
                "\"0GiB\"",
                "\"-1GiB\"",
                "\"\"",
                "\"1.5GiB\"",
                "\"99999999999TiB\"",
            ]),
        ),
        ("runners.disk", s(&["\"0GiB\"", "\"10 GiB\"", "\"GiB\""])),
        (
            "runners.labels",
            vec![
                "[\"has space\"]".into(),
                "[\"a,b\"]".into(),
                "[\"\"]".into(),
                many_labels,
            ],
        ),
        ("runners.registration", s(&["\"oauth\"", "\"JIT\"", "\"\""])),
        (
            "proxy.http",
            s(&["\"socks5://proxy:1080\"", "\"not a url\""]),
        ),
        ("proxy.https", s(&["\"not a url\"", "\"ftp://p\""])),
        ("proxy.no_proxy", s(&["\"a\\tb\""])),
        ("policy.url", s(&["\"ftp://policy\"", "\"not a url\""])),
        ("policy.service_token", s(&["\"orphan-token\""])),
        (
            "policy.service_token_file",
            s(&["\"/missing\"", "\"empty\""]),
        ),
        ("metrics.events_log", s(&["\"\""])),
        (
            "server.listen",
            s(&[
                "\"localhost:9464\"",
                "\"\"",
                "\"1.2.3.4\"",
                "\"1.2.3.4:99999\"",
            ]),
        ),
        ("server.api_token", s(&["\"\""])),
        ("server.api_token_file", s(&["\"empty\"", "\"/missing\""])),
        ("server.webhook_secret", s(&["\"\""])),
        (
            "server.webhook_secret_file",
            s(&["\"/missing\"", "\"empty\""]),
        ),
        (
            "server.reconcile_interval_seconds",
            s(&["0", "9", "86401", "-10"]),
        ),
    ]
}

/// A TOML value from its text (`v = <text>`).
fn toml_value(text: &str) -> Option<toml::Value> {
    toml::from_str::<toml::Table>(&format!("v = {text}"))
        .ok()?
        .remove("v")
}

/// Paths of every key (leaves and tables) in `table`.
fn key_paths(table: &toml::Table, prefix: &str, out: &mut Vec<(String, bool)>) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            toml::Value::Table(inner) => {
                out.push((path.clone(), true));
                key_paths(inner, &path, out);
            }
            _ => out.push((path, false)),
        }
    }
}

/// The table at `path` (created on the way when `create`); `None` if a scalar is in the way.
fn table_at<'a>(
    table: &'a mut toml::Table,
    path: &[&str],
    create: bool,
) -> Option<&'a mut toml::Table> {
    let mut current = table;
    for part in path {
        if !current.contains_key(*part) {
            if !create {
                return None;
            }
            current.insert((*part).to_owned(), toml::Value::Table(toml::Table::new()));
        }
        current = current.get_mut(*part)?.as_table_mut()?;
    }
    Some(current)
}

fn set_path(table: &mut toml::Table, path: &str, value: toml::Value) -> bool {
    let parts: Vec<&str> = path.split('.').collect();
    let Some((last, parents)) = parts.split_last() else {
        return false;
    };
    match table_at(table, parents, true) {
        Some(parent) => {
            parent.insert((*last).to_owned(), value);
            true
        }
        None => false,
    }
}

fn remove_path(table: &mut toml::Table, path: &str) -> bool {
    let parts: Vec<&str> = path.split('.').collect();
    let Some((last, parents)) = parts.split_last() else {
        return false;
    };
    table_at(table, parents, false).is_some_and(|parent| parent.remove(*last).is_some())
}

fn random_string(rng: &mut StdRng, alphabet: &[u8], len: usize) -> String {
    (0..len)
        .map(|_| char::from(alphabet[rng.random_range(0..alphabet.len())]))
        .collect()
}

const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-";

/// A value of a type different from `current`'s.
fn wrong_type_value(rng: &mut StdRng, current: Option<&toml::Value>) -> toml::Value {
    loop {
        let value = match rng.random_range(0..8) {
            0 => toml::Value::Integer(rng.random_range(-5_000_000..5_000_000)),
            1 => toml::Value::Float(rng.random_range(-1e6..1e6)),
            2 => toml::Value::Boolean(rng.random()),
            3 => toml::Value::String({
                let n = rng.random_range(0..12);
                random_string(rng, ALNUM, n)
            }),
            4 => toml::Value::Array(vec![
                toml::Value::Integer(1),
                toml::Value::String("x".into()),
            ]),
            5 => {
                let mut t = toml::Table::new();
                t.insert("a".into(), toml::Value::Integer(1));
                toml::Value::Table(t)
            }
            6 => match "1979-05-27T07:32:00Z".parse() {
                Ok(dt) => toml::Value::Datetime(dt),
                Err(_) => toml::Value::Integer(7),
            },
            _ => toml::Value::Array(Vec::new()),
        };
        let same = current.is_some_and(|c| c.type_str() == value.type_str());
        if !same {
            return value;
        }
    }
}

/// The kinds of generated input (the evidence column counts them).
const KINDS: [&str; 10] = [
    "valid base",
    "wrong type",
    "out of range",
    "unknown key",
    "missing key",
    "mixed",
    "truncated",
    "text edits",
    "random bytes",
    "random text",
];

/// One structured mutation of `table`; false if it could not apply.
fn mutate(
    rng: &mut StdRng,
    table: &mut toml::Table,
    kind: usize,
    bad: &[(&'static str, Vec<String>)],
) -> bool {
    let mut paths = Vec::new();
    key_paths(table, "", &mut paths);
    match kind {
        // wrong type, at an existing key or any schema key
        1 => {
            let path = if !paths.is_empty() && rng.random_bool(0.5) {
                paths[rng.random_range(0..paths.len())].0.clone()
            } else {
                bad[rng.random_range(0..bad.len())].0.to_owned()
            };
            let current = {
                let parts: Vec<&str> = path.split('.').collect();
                let (last, parents) = match parts.split_last() {
                    Some(split) => split,
                    None => return false,
                };
                table_at(table, parents, false).and_then(|t| t.get(*last).cloned())
            };
            let value = wrong_type_value(rng, current.as_ref());
            set_path(table, &path, value)
        }
        // a right-typed value out of range / not allowed
        2 => {
            let (key, values) = &bad[rng.random_range(0..bad.len())];
            let Some(value) = toml_value(&values[rng.random_range(0..values.len())]) else {
                return false;
            };
            set_path(table, key, value)
        }
        // an unknown key at a random level
        3 => {
            let mut tables: Vec<String> = vec![String::new()];
            tables.extend(
                [
                    "github",
                    "github.app",
                    "lxd",
                    "runners",
                    "proxy",
                    "policy",
                    "metrics",
                    "server",
                ]
                .iter()
                .map(|t| (*t).to_owned()),
            );
            tables.extend(paths.iter().filter(|(_, t)| *t).map(|(p, _)| p.clone()));
            let at = tables[rng.random_range(0..tables.len())].clone();
            let name = match rng.random_range(0..8) {
                0 => "colour".to_owned(),
                1 => "Path".to_owned(),
                2 => "tokn".to_owned(),
                3 => "quantity2".to_owned(),
                4 => "é-ü".to_owned(),
                5 => "a.b".to_owned(),
                6 => String::new(),
                _ => {
                    let n = rng.random_range(1..30);
                    random_string(rng, ALNUM, n)
                }
            };
            let value = wrong_type_value(rng, None);
            let parts: Vec<&str> = if at.is_empty() {
                Vec::new()
            } else {
                at.split('.').collect()
            };
            match table_at(table, &parts, true) {
                Some(parent) => {
                    parent.insert(name, value);
                    true
                }
                None => false,
            }
        }
        // a missing key: a required one or any
        4 => {
            let path = match rng.random_range(0..4) {
                0 => "github.path".to_owned(),
                1 => "github.token".to_owned(),
                2 => "github".to_owned(),
                _ if !paths.is_empty() => paths[rng.random_range(0..paths.len())].0.clone(),
                _ => "github.path".to_owned(),
            };
            remove_path(table, &path)
        }
        _ => false,
    }
}

/// Text edits on serialized TOML.
fn text_edit(rng: &mut StdRng, text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let chars: Vec<char> = text.chars().collect();
    match rng.random_range(0..6) {
        0 if !lines.is_empty() => {
            let i = rng.random_range(0..lines.len());
            let mut out: Vec<&str> = lines.clone();
            out.remove(i);
            out.join("\n")
        }
        1 if !lines.is_empty() => {
            let i = rng.random_range(0..lines.len());
            let mut out: Vec<&str> = lines.clone();
            out.insert(i, lines[i]);
            out.join("\n")
        }
        2 if lines.len() > 1 => {
            let (i, j) = (
                rng.random_range(0..lines.len()),
                rng.random_range(0..lines.len()),
            );
            let mut out: Vec<&str> = lines.clone();
            out.swap(i, j);
            out.join("\n")
        }
        3 => {
            const SIGNIFICANT: [char; 16] = [
                '[', ']', '"', '=', '\n', '{', '}', ',', '.', '#', '\'', '\\', ' ', '\t', 'é',
                '\u{0}',
            ];
            let mut out = chars.clone();
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..=out.len());
                out.insert(at, SIGNIFICANT[rng.random_range(0..SIGNIFICANT.len())]);
            }
            out.into_iter().collect()
        }
        4 if !chars.is_empty() => {
            let start = rng.random_range(0..chars.len());
            let end = (start + rng.random_range(1..10)).min(chars.len());
            chars[..start].iter().chain(&chars[end..]).collect()
        }
        _ if !chars.is_empty() => {
            let mut out = chars.clone();
            let at = rng.random_range(0..out.len());
            out[at] = char::from(rng.random_range(0x20u8..0x7f));
            out.into_iter().collect()
        }
        _ => text.to_owned(),
    }
}

/// One generated input: its kind and bytes.
fn generate(
    rng: &mut StdRng,
    bases: &[(&'static str, String)],
    bad: &[(&'static str, Vec<String>)],
) -> (usize, Vec<u8>) {
    let (_, base_text) = &bases[rng.random_range(0..bases.len())];
    let roll = rng.random_range(0..100);
    let kind = match roll {
        0..4 => 0,
        4..16 => 1,
        16..28 => 2,
        28..40 => 3,
        40..50 => 4,
        50..62 => 5,
        62..72 => 6,
        72..84 => 7,
        84..92 => 8,
        _ => 9,
    };
    let structured = |rng: &mut StdRng, kinds: &[usize]| -> String {
        let Ok(mut table) = toml::from_str::<toml::Table>(base_text) else {
            return base_text.clone();
        };
        for kind in kinds {
            // A mutation that cannot apply (a scalar in the way) is retried a few times.
            for _ in 0..4 {
                if mutate(rng, &mut table, *kind, bad) {
                    break;
                }
            }
        }
        toml::to_string(&table).unwrap_or_else(|_| base_text.clone())
    };
    let bytes = match kind {
        0 => base_text.clone().into_bytes(),
        1..=4 => structured(rng, &[kind]).into_bytes(),
        5 => {
            let n = rng.random_range(2..6);
            let kinds: Vec<usize> = (0..n).map(|_| rng.random_range(1..5)).collect();
            structured(rng, &kinds).into_bytes()
        }
        6 => {
            let text = if rng.random_bool(0.5) {
                base_text.clone()
            } else {
                {
                    let k = rng.random_range(1..5);
                    structured(rng, &[k])
                }
            };
            let cut = rng.random_range(0..=text.len());
            let mut cut = cut;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.as_bytes()[..cut].to_vec()
        }
        7 => {
            let mut text = base_text.clone();
            for _ in 0..rng.random_range(1..4) {
                text = text_edit(rng, &text);
            }
            text.into_bytes()
        }
        8 => {
            let len = rng.random_range(0..600);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            // Half of them: a valid config with random bytes spliced in.
            if rng.random_bool(0.5) {
                let mut text = base_text.clone().into_bytes();
                let at = rng.random_range(0..=text.len());
                bytes.truncate(rng.random_range(1..8));
                text.splice(at..at, bytes);
                bytes = text;
            }
            bytes
        }
        _ => {
            const TOKENS: [&str; 24] = [
                "[github]",
                "[[runners]]",
                "[lxd]",
                "path",
                "token",
                "=",
                "\"x\"",
                "1",
                "true",
                "\n",
                "{",
                "}",
                "[",
                "]",
                ",",
                "#",
                "\"\"\"",
                "'''",
                "quantity",
                "1979-05-27",
                "inf",
                "nan",
                "0x1F",
                "[server]",
            ];
            if rng.random_bool(0.5) {
                let n = rng.random_range(0..60);
                (0..n)
                    .map(|_| TOKENS[rng.random_range(0..TOKENS.len())])
                    .collect::<Vec<_>>()
                    .join(" ")
                    .into_bytes()
            } else {
                let len = rng.random_range(0..300);
                random_string(rng, b" \n\t=[]{}\",.#abcxyz0123456789_-'\\", len).into_bytes()
            }
        }
    };
    (kind, bytes)
}

/// How the loader answered one input.
#[derive(Debug, Clone)]
enum Verdict {
    Accepted,
    /// Keys named by the errors.
    Invalid(Vec<String>),
    Syntax {
        line: usize,
        column: usize,
    },
    Read,
    Panic(String),
}

/// Whether a key error names a key: it is not empty, and its first segment is a top-level name
/// of the schema (as in the property test of crates/cli/tests/config.rs) or a top-level key of
/// the input, or the whole key is a key path of the input (a quoted key may hold a dot).
fn names_a_key(key: &str, input_top: &BTreeSet<String>, input_paths: &BTreeSet<String>) -> bool {
    let segments = key_segments(key);
    let head = segments.first().map(String::as_str).unwrap_or_default();
    !key.is_empty()
        && (TOP_LEVEL.contains(&head)
            || input_top.contains(head)
            || input_paths.contains(key)
            || input_paths.contains(&segments.join(".")))
}

/// The segments of a dotted key as the error prints it, a TOML-quoted segment (`github."a.b"`,
/// `""`) unquoted; an index (`labels[2]`) ends its segment.
fn key_segments(key: &str) -> Vec<String> {
    let mut segments = Vec::new();
    let mut current = String::new();
    let mut chars = key.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                while let Some(q) = chars.next() {
                    match q {
                        '"' => break,
                        '\\' => current.extend(chars.next()),
                        other => current.push(other),
                    }
                }
            }
            '.' => segments.push(std::mem::take(&mut current)),
            '[' => {
                segments.push(std::mem::take(&mut current));
                return segments;
            }
            other => current.push(other),
        }
    }
    segments.push(current);
    segments
}

/// Checks on an accepted config (what validation promises).
fn accepted_problems(config: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    if config.runners.quantity > 10_000 {
        problems.push(format!("quantity {} > 10000", config.runners.quantity));
    }
    if !(1..=1_024).contains(&config.runners.cpu) {
        problems.push(format!("cpu {}", config.runners.cpu));
    }
    if config.unit > 99_999 {
        problems.push(format!("unit {}", config.unit));
    }
    let interval = config.server.reconcile_interval.as_secs();
    if !(10..=86_400).contains(&interval) {
        problems.push(format!("interval {interval}"));
    }
    if config.app_name.is_empty() || config.app_name.len() > 40 {
        problems.push(format!("app_name {:?}", config.app_name));
    }
    let shown = format!("{config:?}");
    for secret in BASE_SECRETS {
        if shown.contains(secret) {
            problems.push(format!("{secret} in Debug"));
        }
    }
    problems
}

/// A sample for the binary: file name and what the loader said in-process.
struct Sample {
    path: PathBuf,
    verdict: Verdict,
}

fn write_fixtures(dir: &Path) -> anyhow::Result<()> {
    for (name, text) in [
        ("app.pem", PEM),
        ("github-token", "ghp_SECRET_TOKEN_VALUE\n"),
        ("empty", "\n"),
        ("lxd.crt", "cert"),
        ("lxd.key", "key"),
        ("secret", "s3cret-from-file"),
    ] {
        std::fs::write(dir.join(name), text).with_context(|| format!("writing {name}"))?;
    }
    Ok(())
}

async fn config_fuzz(options: &Options, outcome: &mut Outcome) -> anyhow::Result<()> {
    for name in SECRET_ENV {
        if std::env::var_os(name).is_some() {
            anyhow::bail!("{name} is set: unset it, the loader would fall back to it");
        }
    }
    let dir = tempfile::tempdir()?;
    write_fixtures(dir.path())?;
    let input_path = dir.path().join("input.toml");
    let bases = base_configs();
    let bad = bad_values();
    let mut rng = StdRng::seed_from_u64(options.seed);
    let total = options.config_inputs();
    let every = (total / options.binary_samples().max(1)).max(1);

    let mut by_kind: BTreeMap<usize, u64> = BTreeMap::new();
    let (mut accepted, mut invalid, mut syntax, mut read, mut panics) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let (mut unnamed, mut bad_position, mut echoed, mut bad_accept) = (0u64, 0u64, 0u64, 0u64);
    let mut bases_rejected = 0u64;
    let mut key_errors = 0u64;
    let mut samples = Vec::new();

    // Quiet panics: they are counted, not printed.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    for i in 0..total {
        let (kind, bytes) = generate(&mut rng, &bases, &bad);
        *by_kind.entry(kind).or_default() += 1;
        std::fs::write(&input_path, &bytes)?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let parsed = toml::from_str::<toml::Table>(&text).ok();
        let input_top: BTreeSet<String> = parsed
            .as_ref()
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default();
        let input_paths: BTreeSet<String> = parsed
            .as_ref()
            .map(|t| {
                let mut paths = Vec::new();
                key_paths(t, "", &mut paths);
                paths.into_iter().map(|(p, _)| p).collect()
            })
            .unwrap_or_default();
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| Config::load(&input_path)));
        let verdict = match result {
            Err(payload) => {
                let message = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                Verdict::Panic(message)
            }
            Ok(Ok(config)) => {
                let problems = accepted_problems(&config);
                if !problems.is_empty() {
                    bad_accept += 1;
                    outcome.problem(format!("config accepted with {problems:?}:\n{text}"));
                }
                Verdict::Accepted
            }
            Ok(Err(err)) => {
                let message = err.to_string();
                if let Some(secret) = BASE_SECRETS.iter().find(|s| message.contains(**s)) {
                    echoed += 1;
                    outcome.problem(format!(
                        "error echoes {secret}: {message}\n--- input:\n{text}"
                    ));
                }
                match err {
                    ConfigError::Invalid(errors) => {
                        key_errors += errors.len() as u64;
                        let bad_errors: Vec<String> = errors
                            .iter()
                            .filter(|e| {
                                !names_a_key(&e.key, &input_top, &input_paths)
                                    || e.reason.is_empty()
                            })
                            .map(ToString::to_string)
                            .collect();
                        if errors.is_empty() || !bad_errors.is_empty() {
                            unnamed += 1;
                            outcome.problem(format!(
                                "error without a key: {bad_errors:?} (all: {errors:?})\n--- input:\n{text}"
                            ));
                        }
                        Verdict::Invalid(errors.into_iter().map(|e| e.key).collect())
                    }
                    ConfigError::Syntax { line, column, .. } => {
                        let lines = text.matches('\n').count() + 1;
                        if line == 0 || column == 0 || line > lines {
                            bad_position += 1;
                            outcome.problem(format!(
                                "syntax error at line {line} column {column} of a {lines}-line input: {message}"
                            ));
                        }
                        Verdict::Syntax { line, column }
                    }
                    ConfigError::Read { .. } => {
                        // Only a file that is not UTF-8 cannot be read here.
                        if std::str::from_utf8(&bytes).is_ok()
                            || !message.contains(&input_path.display().to_string())
                        {
                            bad_position += 1;
                            outcome.problem(format!(
                                "read error for a UTF-8 input or without the path: {message}"
                            ));
                        }
                        Verdict::Read
                    }
                }
            }
        };
        match &verdict {
            Verdict::Accepted => accepted += 1,
            Verdict::Invalid(_) => invalid += 1,
            Verdict::Syntax { .. } => syntax += 1,
            Verdict::Read => read += 1,
            Verdict::Panic(message) => {
                panics += 1;
                outcome.problem(format!("PANIC {message}\n--- input:\n{text}"));
            }
        }
        if kind == 0 && !matches!(verdict, Verdict::Accepted) {
            bases_rejected += 1;
            outcome.problem(format!(
                "a valid base config was rejected: {verdict:?}\n{text}"
            ));
        }
        if i % every == 0 && samples.len() < options.binary_samples() {
            let path = dir.path().join(format!("sample-{i:05}.toml"));
            std::fs::write(&path, &bytes)?;
            samples.push(Sample { path, verdict });
        }
    }
    std::panic::set_hook(hook);

    let rejected = invalid + syntax + read;
    let kinds: Vec<String> = by_kind
        .iter()
        .map(|(k, n)| format!("{} {}", KINDS[*k], thousands(*n)))
        .collect();
    outcome.rows.push(Row {
        check: "config fuzz (Config::load)".into(),
        cases: total as u64,
        failures: panics + unnamed + bad_position + echoed + bad_accept + bases_rejected,
        evidence: format!(
            "accepted {}, rejected {} (key errors {} in {} inputs, {} key errors in all; TOML syntax {} all with line/column; not UTF-8 {} naming the file); panics {panics}; errors without a key {unnamed}; bad line/column {bad_position}; secret echoed {echoed}; bad accepts {bad_accept}; valid bases rejected {bases_rejected}. Inputs: {}",
            thousands(accepted),
            thousands(rejected),
            thousands(invalid),
            thousands(invalid),
            thousands(key_errors),
            thousands(syntax),
            thousands(read),
            kinds.join(", ")
        ),
    });

    // The real binary on a sample.
    match &options.binary {
        None => outcome.rows.push(Row {
            check: "config via binary (check-config)".into(),
            cases: 0,
            failures: 0,
            evidence: "skipped: no runner-manager binary".into(),
        }),
        Some(binary) => binary_sample(binary, &samples, outcome).await?,
    }
    Ok(())
}

async fn binary_sample(
    binary: &Path,
    samples: &[Sample],
    outcome: &mut Outcome,
) -> anyhow::Result<()> {
    let mut failures = 0u64;
    let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
    for chunk in samples.chunks(8) {
        let runs = chunk.iter().map(|sample| async move {
            let mut command = tokio::process::Command::new(binary);
            command
                .arg("--config")
                .arg(&sample.path)
                .arg("check-config")
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .kill_on_drop(true);
            for name in SECRET_ENV {
                command.env_remove(name);
            }
            let output = tokio::time::timeout(Duration::from_secs(30), command.output()).await;
            (sample, output)
        });
        for (sample, output) in futures::future::join_all(runs).await {
            let output = match output {
                Err(_) => {
                    failures += 1;
                    outcome.problem(format!(
                        "check-config timed out on {}",
                        sample.path.display()
                    ));
                    continue;
                }
                Ok(Err(err)) => anyhow::bail!("running {}: {err}", binary.display()),
                Ok(Ok(output)) => output,
            };
            let code = output.status.code();
            let stderr = String::from_utf8_lossy(&output.stderr);
            let (kind, ok) = match &sample.verdict {
                Verdict::Accepted => ("accepted: exit 0", code == Some(0)),
                Verdict::Invalid(keys) => (
                    "key errors: exit 2, every key in stderr",
                    code == Some(2) && keys.iter().all(|k| stderr.contains(k.as_str())),
                ),
                Verdict::Syntax { line, column } => (
                    "syntax: exit 2, line/column in stderr",
                    code == Some(2) && stderr.contains(&format!("line {line}, column {column}")),
                ),
                Verdict::Read => (
                    "not UTF-8: exit 2, path in stderr",
                    code == Some(2) && stderr.contains(&sample.path.display().to_string()),
                ),
                Verdict::Panic(_) => ("panicked in-process", false),
            };
            let leaked = BASE_SECRETS
                .iter()
                .any(|s| stderr.contains(s) || String::from_utf8_lossy(&output.stdout).contains(s));
            *counts.entry(kind).or_default() += 1;
            if !ok || leaked || stderr.contains("panicked") {
                failures += 1;
                outcome.problem(format!(
                    "check-config on {} ({:?}): exit {code:?}, leaked {leaked}, stderr:\n{stderr}",
                    sample.path.display(),
                    sample.verdict
                ));
            }
        }
    }
    outcome.rows.push(Row {
        check: "config via binary (check-config)".into(),
        cases: samples.len() as u64,
        failures,
        evidence: counts
            .iter()
            .map(|(k, n)| format!("{k} ×{n}"))
            .collect::<Vec<_>>()
            .join("; "),
    });
    Ok(())
}

// =============================================================================================
// 2. Webhook bodies
// =============================================================================================

const WEBHOOK_SECRET: &str = "r5-webhook-secret-0123456789";
const OUR_LABELS: [&str; 4] = ["self-hosted", "github-runner", "jammy", "gpu"];
const RUNNER_PREFIX: &str = "github-runner-0-";

/// The manager's operations for the daemon behind the router: they count and succeed.
#[derive(Default)]
struct CountingOps {
    reconciles: AtomicU64,
}

#[async_trait]
impl Operations for CountingOps {
    async fn reconcile(&self, quantity: u32) -> anyhow::Result<ReconcileOutput> {
        self.reconciles.fetch_add(1, Ordering::SeqCst);
        Ok(ReconcileOutput {
            quantity,
            delta: 0,
            created: 0,
            removed: 0,
            skipped_busy: 0,
            failed: 0,
        })
    }
    async fn flush(&self, _mode: FlushMode) -> anyhow::Result<FlushOutput> {
        Ok(FlushOutput {
            removed: 0,
            skipped_busy: 0,
        })
    }
    async fn status(&self) -> anyhow::Result<StatusOutput> {
        Ok(StatusOutput {
            runners: Vec::new(),
            dangling: Vec::new(),
            orphans: Vec::new(),
        })
    }
    async fn runner_bin_latest(&self, _os: &str, _arch: &str) -> anyhow::Result<RunnerBinOutput> {
        anyhow::bail!("not used by the webhook check")
    }
    async fn runner_bin_update(&self) -> anyhow::Result<RunnerBinUpdateOutput> {
        anyhow::bail!("not used by the webhook check")
    }
    async fn runner_bin_check(&self) -> anyhow::Result<RunnerBinCheckOutput> {
        anyhow::bail!("not used by the webhook check")
    }
}

/// One request and the status server.rs promises for it.
struct Case {
    kind: &'static str,
    event: Option<String>,
    body: Vec<u8>,
    signature: Option<String>,
    /// Send `content-length` (a streamed body has none).
    content_length: bool,
    method_get: bool,
    expected: StatusCode,
    /// Reaches the webhook handler (counted in its metric).
    handled: bool,
}

impl Case {
    /// A POST with a content-length that reaches the handler.
    fn plain(
        kind: &'static str,
        event: Option<&str>,
        body: Vec<u8>,
        signature: Option<String>,
        expected: StatusCode,
    ) -> Self {
        Self {
            kind,
            event: event.map(str::to_owned),
            body,
            signature,
            content_length: true,
            method_get: false,
            expected,
            handled: true,
        }
    }
}

fn job_body(rng: &mut StdRng, action: &str, labels: &[String], runner: Option<&str>) -> Vec<u8> {
    serde_json::json!({
        "action": action,
        "workflow_job": {
            "id": rng.random_range(1u64..u64::MAX / 2),
            "run_id": rng.random_range(1u64..1_000_000_000),
            "labels": labels,
            "runner_name": runner,
            "status": action,
            "conclusion": null,
        },
        "repository": {"full_name": "octo-org/app"},
    })
    .to_string()
    .into_bytes()
}

fn our_labels(rng: &mut StdRng) -> Vec<String> {
    let n = rng.random_range(1..=OUR_LABELS.len());
    (0..n)
        .map(|_| {
            let label = OUR_LABELS[rng.random_range(0..OUR_LABELS.len())];
            if rng.random_bool(0.3) {
                label.to_ascii_uppercase()
            } else {
                label.to_owned()
            }
        })
        .collect()
}

fn webhook_cases(rng: &mut StdRng, scale: usize) -> Vec<Case> {
    let secret = Secret::new(WEBHOOK_SECRET);
    let other = Secret::new("another-secret");
    let signed = |body: &[u8]| secret.as_ref().map(|s| sign(s, body));
    let mut cases = Vec::new();
    let mut add = |kind, event, body, signature, expected| {
        cases.push(Case::plain(kind, event, body, signature, expected));
    };
    let wj = Some("workflow_job");
    for _ in 0..40 * scale {
        let body = {
            let labels = our_labels(rng);
            job_body(rng, "queued", &labels, None)
        };
        add(
            "signed queued, our labels → 202",
            wj,
            body.clone(),
            signed(&body),
            StatusCode::ACCEPTED,
        );
    }
    for _ in 0..20 * scale {
        let mut labels = our_labels(rng);
        labels.push(if rng.random_bool(0.5) {
            "windows".into()
        } else {
            random_string(rng, ALNUM, 8)
        });
        let labels = if rng.random_bool(0.2) {
            Vec::new()
        } else {
            labels
        };
        let body = job_body(rng, "queued", &labels, None);
        add(
            "signed queued, other labels → 200",
            wj,
            body.clone(),
            signed(&body),
            StatusCode::OK,
        );
    }
    for _ in 0..30 * scale {
        let runner = format!(
            "{RUNNER_PREFIX}{}",
            random_string(rng, b"abcdef0123456789", 8)
        );
        let body = {
            let labels = our_labels(rng);
            job_body(rng, "completed", &labels, Some(&runner))
        };
        add(
            "signed completed on ours → 202",
            wj,
            body.clone(),
            signed(&body),
            StatusCode::ACCEPTED,
        );
    }
    for _ in 0..10 * scale {
        let runner = if rng.random_bool(0.5) {
            Some("github-runner-1-abcd1234".to_owned())
        } else {
            None
        };
        let body = {
            let labels = our_labels(rng);
            job_body(rng, "completed", &labels, runner.as_deref())
        };
        add(
            "signed completed elsewhere → 200",
            wj,
            body.clone(),
            signed(&body),
            StatusCode::OK,
        );
    }
    for _ in 0..30 * scale {
        let action = ["in_progress", "waiting", "requested", "", "QUEUED"][rng.random_range(0..5)];
        let runner = format!("{RUNNER_PREFIX}abcd1234");
        let body = {
            let labels = our_labels(rng);
            job_body(rng, action, &labels, Some(&runner))
        };
        add(
            "signed in_progress/other action → 200",
            wj,
            body.clone(),
            signed(&body),
            StatusCode::OK,
        );
    }
    for _ in 0..30 * scale {
        let body = {
            let labels = our_labels(rng);
            job_body(rng, "queued", &labels, None)
        };
        let signature = match rng.random_range(0..3) {
            0 => format!("sha256={}", random_string(rng, b"0123456789abcdef", 64)),
            1 => other.as_ref().map(|s| sign(s, &body)).unwrap_or_default(),
            _ => {
                let mut flipped = body.clone();
                let at = rng.random_range(0..flipped.len());
                flipped[at] ^= 1 << rng.random_range(0..8);
                signed(&flipped).unwrap_or_default()
            }
        };
        add(
            "bad signature → 401",
            wj,
            body,
            Some(signature),
            StatusCode::UNAUTHORIZED,
        );
    }
    for _ in 0..20 * scale {
        let body = {
            let labels = our_labels(rng);
            job_body(rng, "queued", &labels, None)
        };
        let event = [wj, Some("ping"), Some("push"), None][rng.random_range(0..4)];
        add(
            "missing signature → 401",
            event,
            body,
            None,
            StatusCode::UNAUTHORIZED,
        );
    }
    for _ in 0..20 * scale {
        let body = {
            let labels = our_labels(rng);
            job_body(rng, "queued", &labels, None)
        };
        let good = signed(&body).unwrap_or_default();
        let digest = good.trim_start_matches("sha256=").to_owned();
        let signature = match rng.random_range(0..8) {
            0 => format!("sha1={digest}"),
            1 => format!("SHA256={digest}"),
            2 => format!("sha512={digest}"),
            3 => digest.clone(),
            4 => format!("sha256 {digest}"),
            5 => "sha256=".to_owned(),
            6 => format!("sha256={}", &digest[..62]),
            _ => format!("sha256=zz{}", &digest[2..]),
        };
        add(
            "wrong algorithm / malformed header → 401",
            wj,
            body,
            Some(signature),
            StatusCode::UNAUTHORIZED,
        );
    }
    for _ in 0..30 * scale {
        let body = {
            let labels = our_labels(rng);
            job_body(rng, "queued", &labels, None)
        };
        let cut = rng.random_range(0..body.len());
        let truncated = body[..cut].to_vec();
        let signature = signed(&truncated);
        add(
            "truncated, signed → 400",
            wj,
            truncated,
            signature,
            StatusCode::BAD_REQUEST,
        );
    }
    for _ in 0..30 * scale {
        let body = {
            let labels = our_labels(rng);
            job_body(rng, "queued", &labels, None)
        };
        let signature = signed(&body);
        let cut = rng.random_range(0..body.len());
        add(
            "truncated, signature of the whole → 401",
            wj,
            body[..cut].to_vec(),
            signature,
            StatusCode::UNAUTHORIZED,
        );
    }
    for _ in 0..10 * scale {
        let body = {
            let labels = our_labels(rng);
            job_body(rng, "queued", &labels, None)
        };
        let signed_empty = signed(b"");
        add(
            "empty body, signed, workflow_job → 400",
            wj,
            Vec::new(),
            signed_empty.clone(),
            StatusCode::BAD_REQUEST,
        );
        add(
            "empty body, signed, ping → 200",
            Some("ping"),
            Vec::new(),
            signed_empty.clone(),
            StatusCode::OK,
        );
        add(
            "empty body, signed, push → 202",
            Some("push"),
            Vec::new(),
            signed_empty,
            StatusCode::ACCEPTED,
        );
        add(
            "empty body, signature of another → 401",
            wj,
            Vec::new(),
            signed(&body),
            StatusCode::UNAUTHORIZED,
        );
    }
    for _ in 0..30 * scale {
        let id = rng.random_range(1u64..1000);
        let body: Vec<u8> = match rng.random_range(0..9) {
            0 => b"hello, world".to_vec(),
            1 => b"<xml><action>queued</action></xml>".to_vec(),
            2 => b"action=queued&workflow_job=1".to_vec(),
            3 => b"[1, 2, 3]".to_vec(),
            4 => format!("{{\"action\":\"queued\",\"workflow_job\":{{\"id\":\"{id}\",\"labels\":[\"jammy\"],\"runner_name\":null}}}}").into_bytes(),
            5 => format!("{{\"action\":\"queued\",\"workflow_job\":{{\"id\":{id},\"labels\":\"jammy\",\"runner_name\":null}}}}").into_bytes(),
            6 => b"{\"action\":\"queued\"}".to_vec(),
            7 => format!("{{\"action\":7,\"workflow_job\":{{\"id\":{id},\"labels\":[],\"runner_name\":null}}}}").into_bytes(),
            _ => b"null".to_vec(),
        };
        add(
            "non-JSON / wrong shape, signed → 400",
            wj,
            body.clone(),
            signed(&body),
            StatusCode::BAD_REQUEST,
        );
    }
    for _ in 0..30 * scale {
        let body = {
            let labels = our_labels(rng);
            job_body(rng, "queued", &labels, None)
        };
        let (event, expected, kind) = match rng.random_range(0..6) {
            0 => (
                Some("ping".to_owned()),
                StatusCode::OK,
                "ping, signed → 200",
            ),
            1 => (
                Some("push".to_owned()),
                StatusCode::ACCEPTED,
                "push / unknown event, signed → 202",
            ),
            2 => (
                Some(random_string(rng, ALNUM, 10)),
                StatusCode::ACCEPTED,
                "push / unknown event, signed → 202",
            ),
            3 => (
                Some("WORKFLOW_JOB".to_owned()),
                StatusCode::ACCEPTED,
                "push / unknown event, signed → 202",
            ),
            4 => (
                Some(String::new()),
                StatusCode::ACCEPTED,
                "push / unknown event, signed → 202",
            ),
            _ => (
                None,
                StatusCode::ACCEPTED,
                "no X-GitHub-Event, signed → 202",
            ),
        };
        let signature = signed(&body);
        cases.push(Case {
            kind,
            event,
            body,
            signature,
            content_length: true,
            method_get: false,
            expected,
            handled: true,
        });
    }
    let mut add = |kind, event, body, signature, expected| {
        cases.push(Case::plain(kind, event, body, signature, expected));
    };
    for _ in 0..30 * scale {
        let len = rng.random_range(0..4096);
        let body: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        add(
            "random bytes, signed, workflow_job → 400",
            wj,
            body.clone(),
            signed(&body),
            StatusCode::BAD_REQUEST,
        );
        add(
            "random bytes, signed, push → 202",
            Some("push"),
            body.clone(),
            signed(&body),
            StatusCode::ACCEPTED,
        );
        add(
            "random bytes, unsigned → 401",
            wj,
            body,
            None,
            StatusCode::UNAUTHORIZED,
        );
    }
    // Bodies at and over the 1 MiB limit.
    for i in 0..4 * scale {
        let padding_len = MAX_BODY_BYTES + 1 + rng.random_range(0..MAX_BODY_BYTES);
        let mut body = {
            let labels = our_labels(rng);
            job_body(rng, "queued", &labels, None)
        };
        body.truncate(body.len() - 1);
        body.extend_from_slice(b",\"padding\":\"");
        body.resize(padding_len - 2, b'x');
        body.extend_from_slice(b"\"}");
        let signature = if i % 2 == 0 { signed(&body) } else { None };
        for content_length in [true, false] {
            cases.push(Case {
                kind: "> 1 MiB (signed or not, with or without content-length) → 413",
                event: wj.map(str::to_owned),
                body: body.clone(),
                signature: signature.clone(),
                content_length,
                method_get: false,
                expected: StatusCode::PAYLOAD_TOO_LARGE,
                handled: false,
            });
        }
    }
    {
        // Exactly the limit: processed normally.
        let mut body = {
            let labels = our_labels(rng);
            job_body(rng, "queued", &labels, None)
        };
        body.truncate(body.len() - 1);
        body.extend_from_slice(b",\"padding\":\"");
        body.resize(MAX_BODY_BYTES - 2, b'x');
        body.extend_from_slice(b"\"}");
        for content_length in [true, false] {
            cases.push(Case {
                kind: "exactly 1 MiB, signed → 202",
                event: wj.map(str::to_owned),
                body: body.clone(),
                signature: signed(&body),
                content_length,
                method_get: false,
                expected: StatusCode::ACCEPTED,
                handled: true,
            });
        }
    }
    for _ in 0..4 * scale {
        let body = {
            let labels = our_labels(rng);
            job_body(rng, "queued", &labels, None)
        };
        cases.push(Case {
            kind: "GET /webhook → 405",
            event: wj.map(str::to_owned),
            signature: signed(&body),
            body,
            content_length: true,
            method_get: true,
            expected: StatusCode::METHOD_NOT_ALLOWED,
            handled: false,
        });
    }
    cases
}

fn request(case: &Case) -> anyhow::Result<Request<Body>> {
    let mut builder = if case.method_get {
        Request::get("/webhook")
    } else {
        Request::post("/webhook")
    };
    builder = builder
        .header("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(event) = &case.event {
        builder = builder.header("x-github-event", event);
    }
    if let Some(signature) = &case.signature {
        builder = builder.header("x-hub-signature-256", signature);
    }
    let body = if case.content_length {
        builder = builder.header(header::CONTENT_LENGTH, case.body.len());
        Body::from(case.body.clone())
    } else {
        // A streamed body: no length known up front.
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = case
            .body
            .chunks(64 * 1024)
            .map(|c| Ok(c.to_vec()))
            .collect();
        Body::from_stream(futures::stream::iter(chunks))
    };
    Ok(builder.body(body)?)
}

async fn webhooks(options: &Options, outcome: &mut Outcome) -> anyhow::Result<()> {
    let ops = Arc::new(CountingOps::default());
    let mut registry = prometheus_client::registry::Registry::default();
    let daemon_metrics = DaemonMetrics::register(&mut registry);
    let server_metrics = ServerMetrics::register(&mut registry);
    let settings = DaemonSettings {
        update_runner_bin_at_start: false,
        ..DaemonSettings::new(1, Duration::from_secs(3_600))
    };
    let daemon = Daemon::new(ops.clone(), settings, daemon_metrics);
    let state = ServerState {
        daemon: daemon.handle(),
        registry: Arc::new(registry),
        api_token: Secret::new("r5-api-token"),
        webhook_secret: Secret::new(WEBHOOK_SECRET),
        labels: LabelMatcher::new(OUR_LABELS),
        runner_prefix: RUNNER_PREFIX.into(),
        metrics: server_metrics,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon_task = tokio::spawn(daemon.run(async move {
        let _ = stopped.await;
    }));
    let app = router(state);

    let mut rng = StdRng::seed_from_u64(options.seed ^ 0x5745_4248_4f4f_4b53);
    let cases = webhook_cases(&mut rng, options.webhook_scale());
    let (mut mismatches, mut panics, mut handled) = (0u64, 0u64, 0u64);
    let mut by_status: BTreeMap<u16, u64> = BTreeMap::new();
    let mut by_kind: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut triggering = 0u64;
    for case in &cases {
        let request = request(case)?;
        let response = AssertUnwindSafe(app.clone().oneshot(request))
            .catch_unwind()
            .await;
        *by_kind.entry(case.kind).or_default() += 1;
        if case.handled {
            handled += 1;
        }
        if case.expected == StatusCode::ACCEPTED && case.event.as_deref() == Some("workflow_job") {
            triggering += 1;
        }
        let status = match response {
            Err(_) => {
                panics += 1;
                outcome.problem(format!("webhook handler panicked on {}", case.kind));
                continue;
            }
            Ok(Err(never)) => match never {},
            Ok(Ok(response)) => {
                let status = response.status();
                // Drain the body (a panic while producing it counts too).
                let body = AssertUnwindSafe(axum::body::to_bytes(response.into_body(), 1 << 20))
                    .catch_unwind()
                    .await;
                if body.is_err() {
                    panics += 1;
                }
                status
            }
        };
        *by_status.entry(status.as_u16()).or_default() += 1;
        if status != case.expected {
            mismatches += 1;
            outcome.problem(format!(
                "webhook {}: expected {}, got {status} (event {:?}, {} bytes, signature {:?})",
                case.kind,
                case.expected,
                case.event,
                case.body.len(),
                case.signature
                    .as_deref()
                    .map(|s| s.chars().take(20).collect::<String>())
            ));
        }
    }

    // The delivery metric counts every request that reached the handler.
    let metrics_text = {
        let response = app
            .clone()
            .oneshot(Request::get("/metrics").body(Body::empty())?)
            .await
            .context("GET /metrics")?;
        let bytes = axum::body::to_bytes(response.into_body(), 16 << 20).await?;
        String::from_utf8_lossy(&bytes).into_owned()
    };
    let counted: u64 = metrics_text
        .lines()
        .filter(|l| l.starts_with("runner_manager_webhook_deliveries_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum();
    let metric_mismatch = u64::from(counted != handled);
    if metric_mismatch > 0 {
        outcome.problem(format!(
            "webhook delivery metric counts {counted}, {handled} requests reached the handler"
        ));
    }
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), daemon_task).await;
    let passes = ops.reconciles.load(Ordering::SeqCst);
    let no_pass = u64::from(passes < 2);
    if no_pass > 0 {
        outcome.problem(format!(
            "{triggering} triggering deliveries led to {passes} passes"
        ));
    }

    let statuses: Vec<String> = by_status.iter().map(|(s, n)| format!("{s}×{n}")).collect();
    outcome.rows.push(Row {
        check: "webhook bodies (server::router, oneshot)".into(),
        cases: cases.len() as u64,
        failures: mismatches + panics + metric_mismatch + no_pass,
        evidence: format!(
            "status mismatches {mismatches}, panics {panics}; got {}; {} kinds; delivery metric {counted} = {handled} handled; {triggering} triggering deliveries → {passes} daemon passes (coalesced)",
            statuses.join(" "),
            by_kind.len()
        ),
    });
    let mut kinds = Table::new(&["webhook case", "requests"]);
    for (kind, n) in &by_kind {
        kinds.row(vec![(*kind).to_owned(), n.to_string()]);
    }
    eprintln!("{}", kinds.render());
    Ok(())
}

// =============================================================================================
// 3. Tampered runner tarballs
// =============================================================================================

const GOOD_VERSION: &str = "2.330.0";
const NEW_VERSION: &str = "2.331.0";

/// A valid runner tarball (`config.sh`, `run.sh`, and some payload) for `version`.
fn runner_tarball(version: &str) -> anyhow::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    let mut add =
        |name: &str, content: &[u8]| crate::fleet::append_executable(&mut builder, name, content);
    add("./config.sh", b"#!/bin/sh\necho config\n")?;
    add("./run.sh", b"#!/bin/sh\necho run\n")?;
    add("./bin/version", version.as_bytes())?;
    let payload: Vec<u8> = (0..64 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    add("./bin/payload", &payload)?;
    Ok(builder.into_inner()?.finish()?)
}

fn tarball_of(files: &[(&str, &[u8])]) -> anyhow::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (name, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o755);
        header.set_cksum();
        builder.append_data(&mut header, name, *content)?;
    }
    Ok(builder.into_inner()?.finish()?)
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// What the sim serves and publishes in one case.
struct Served {
    kind: &'static str,
    bytes: Vec<u8>,
    /// Published instead of the real checksum (`None`: the real one).
    published: Option<String>,
}

/// A manager whose registry is the sim at `sim`, over the SIMULATION provider, with the
/// runner binary cache in `state`.
fn manager_for(
    sim: &github_sim::SimHandle,
    state: &Path,
) -> anyhow::Result<(
    manager::RunnerManager,
    Arc<manager::sim_provider::SimProvider>,
)> {
    let client = github::Client::new(github::ClientConfig::new(
        url::Url::parse(&sim.api_url())?,
        url::Url::parse(&sim.web_url())?,
        github::Scope::parse("octo/app")?,
        github::Auth::Token(github::Secret::new(github_sim::DEFAULT_TOKEN)),
    ))?;
    let mut prometheus = prometheus_client::registry::Registry::default();
    let metrics = manager::events::Metrics::new(&mut prometheus);
    let provider = Arc::new(manager::sim_provider::SimProvider::new(
        manager::sim_provider::SimLatency::default(),
        None,
    ));
    let backends = manager::Backends {
        provider: provider.clone(),
        registry: Arc::new(manager::adapters::GithubRegistry::new(
            client,
            None,
            Some(metrics.clone()),
        )),
        metrics,
    };
    let config = manager::ManagerConfig::new(
        manager::GitHubPath::parse("octo/app", "")?,
        &sim.web_url(),
        "jammy",
        state,
    );
    let manager = manager::RunnerManager::new(
        "r5tar",
        0,
        config,
        &manager::ProxySettings::default(),
        backends,
    )?;
    Ok((manager, provider))
}

async fn start_sim(
    tarball: Vec<u8>,
    version: &str,
    published: Option<String>,
) -> anyhow::Result<github_sim::SimHandle> {
    let mut config = github_sim::SimConfig::default().with_runner_tarball(tarball, version);
    if let Some(sha) = published {
        config = config.with_published_checksum(sha);
    }
    Ok(github_sim::Sim::start(config).await?)
}

/// Files in the cache directory (names).
fn cache_files(state: &Path) -> BTreeSet<String> {
    std::fs::read_dir(state.join("runner-binary"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Installs `served` through the sim and the manager; `Ok(true)` when the manager took it.
/// With `previous`, a good binary is installed first (by a manager on another sim, same cache):
/// after a refusal it must still be the current one, byte for byte.
async fn try_update(served: &Served, previous: bool) -> anyhow::Result<(bool, String)> {
    let state = tempfile::tempdir()?;
    let good = runner_tarball(GOOD_VERSION)?;
    let good_sha = sha256(&good);
    if previous {
        let sim = start_sim(good.clone(), GOOD_VERSION, None).await?;
        let (manager, _) = manager_for(&sim, state.path())?;
        let download = manager.get_latest_runner_bin_url("linux", "x64").await?;
        manager
            .update_runner_bin(&download)
            .await
            .context("installing the good binary first")?;
        sim.shutdown().await;
    }
    let sim = start_sim(served.bytes.clone(), NEW_VERSION, served.published.clone()).await?;
    let (manager, _) = manager_for(&sim, state.path())?;
    let download = manager.get_latest_runner_bin_url("linux", "x64").await?;
    let result = manager.update_runner_bin(&download).await;
    sim.shutdown().await;
    let served_sha = sha256(&served.bytes);
    let current = manager.runner_bin();
    let files = cache_files(state.path());
    let took_it = result.is_ok()
        || current.as_ref().is_some_and(|c| c.sha256 != good_sha)
        || files
            .iter()
            .any(|f| f.contains(&served_sha) && served_sha != good_sha)
        || files.iter().any(|f| f.starts_with(".download-"));
    let previous_intact = !previous
        || (current.as_ref().is_some_and(|c| c.sha256 == good_sha)
            && std::fs::read(
                state
                    .path()
                    .join("runner-binary")
                    .join(format!("runner-{good_sha}.tar.gz")),
            )
            .is_ok_and(|bytes| bytes == good));
    let detail = match &result {
        Ok(cached) => format!("ACCEPTED as {}", cached.sha256),
        Err(err) => format!("{err}"),
    };
    Ok((took_it || !previous_intact, detail))
}

/// Installs a good binary, replaces the cached file with `tampered`, then runs a reconcile that
/// needs to create a runner: it must fail before creating anything.
async fn cache_swap(tampered: Option<&[u8]>) -> anyhow::Result<(bool, String)> {
    let state = tempfile::tempdir()?;
    let good = runner_tarball(GOOD_VERSION)?;
    let sim = start_sim(good.clone(), GOOD_VERSION, None).await?;
    let (manager, provider) = manager_for(&sim, state.path())?;
    let download = manager.get_latest_runner_bin_url("linux", "x64").await?;
    let cached = manager.update_runner_bin(&download).await?;
    if let Some(bytes) = tampered {
        let path = state
            .path()
            .join("runner-binary")
            .join(format!("runner-{}.tar.gz", cached.sha256));
        std::fs::write(&path, bytes)?;
    }
    let resources = manager::Resources::new(1, "256MiB", "1GiB")?;
    let result =
        tokio::time::timeout(Duration::from_secs(30), manager.reconcile(1, &resources)).await;
    sim.shutdown().await;
    let created = provider.instance_names().len();
    let detail = match &result {
        Err(_) => "reconcile timed out".to_owned(),
        Ok(Ok(report)) => format!("reconcile created {}", report.created.len()),
        Ok(Err(err)) => format!("{err}"),
    };
    Ok((created > 0, detail))
}

async fn tarballs(options: &Options, outcome: &mut Outcome) -> anyhow::Result<()> {
    let mut rng = StdRng::seed_from_u64(options.seed ^ 0x5441_5242_414c_4c53);
    let scale = options.tarball_scale();
    let original = runner_tarball(NEW_VERSION)?;
    let original_sha = sha256(&original);
    let other_version = runner_tarball("2.999.0")?;
    let mut cases: Vec<Served> = Vec::new();
    for _ in 0..10 * scale {
        let mut bytes = original.clone();
        let at = rng.random_range(0..bytes.len());
        bytes[at] ^= 1 << rng.random_range(0..8);
        cases.push(Served {
            kind: "flipped byte (published: original checksum)",
            bytes,
            published: Some(original_sha.clone()),
        });
    }
    for _ in 0..5 * scale {
        let cut = rng.random_range(1..original.len());
        cases.push(Served {
            kind: "truncated (published: original checksum)",
            bytes: original[..cut].to_vec(),
            published: Some(original_sha.clone()),
        });
    }
    for _ in 0..scale {
        cases.push(Served {
            kind: "empty file (published: original checksum)",
            bytes: Vec::new(),
            published: Some(original_sha.clone()),
        });
        cases.push(Served {
            kind: "empty file (published: its own checksum)",
            bytes: Vec::new(),
            published: None,
        });
    }
    for _ in 0..4 * scale {
        let mut wrong = original_sha.clone().into_bytes();
        let at = rng.random_range(0..wrong.len());
        wrong[at] = if wrong[at] == b'0' { b'1' } else { b'0' };
        cases.push(Served {
            kind: "wrong checksum published (one hex digit)",
            bytes: original.clone(),
            published: Some(String::from_utf8_lossy(&wrong).into_owned()),
        });
        cases.push(Served {
            kind: "wrong checksum published (random)",
            bytes: original.clone(),
            published: Some(random_string(&mut rng, b"0123456789abcdef", 64)),
        });
    }
    for published in ["", "   ", "not-hex", &original_sha[..32]] {
        for _ in 0..scale {
            cases.push(Served {
                kind: "empty / malformed checksum published",
                bytes: original.clone(),
                published: Some(published.to_owned()),
            });
        }
    }
    for _ in 0..3 * scale {
        cases.push(Served {
            kind: "checksum of another version published",
            bytes: original.clone(),
            published: Some(sha256(&other_version)),
        });
        cases.push(Served {
            kind: "another version served (published: this one's)",
            bytes: other_version.clone(),
            published: Some(original_sha.clone()),
        });
    }
    // Checksums that match what is served, but not a runner tarball: the format check.
    for _ in 0..scale {
        let cut = original.len() / 2 + rng.random_range(0..original.len() / 4);
        for (kind, bytes) in [
            (
                "not gzip (its own checksum)",
                b"#!/bin/sh\necho not a tarball\n".to_vec(),
            ),
            ("gzip, not tar (its own checksum)", {
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                std::io::Write::write_all(&mut encoder, &[7u8; 4096])?;
                encoder.finish()?
            }),
            (
                "tar without run.sh (its own checksum)",
                tarball_of(&[("./config.sh", b"#!/bin/sh\n")])?,
            ),
            (
                "tar without config.sh (its own checksum)",
                tarball_of(&[("./run.sh", b"#!/bin/sh\n"), ("./bin/x", b"x")])?,
            ),
            (
                "scripts not at the root (its own checksum)",
                tarball_of(&[("./sub/config.sh", b"x"), ("./sub/run.sh", b"x")])?,
            ),
            (
                "truncated mid-archive (its own checksum)",
                original[..cut].to_vec(),
            ),
        ] {
            cases.push(Served {
                kind,
                bytes,
                published: None,
            });
        }
    }

    let mut installed = 0u64;
    let mut by_kind: BTreeMap<&'static str, (u64, u64)> = BTreeMap::new();
    let mut refusals: BTreeMap<String, u64> = BTreeMap::new();
    for (i, case) in cases.iter().enumerate() {
        // Alternate: an empty cache, and a cache holding a good older binary.
        let (took, detail) = try_update(case, i % 2 == 1).await?;
        let entry = by_kind.entry(case.kind).or_default();
        entry.0 += 1;
        if took {
            installed += 1;
            entry.1 += 1;
            outcome.problem(format!(
                "tampered tarball installed: {} ({detail})",
                case.kind
            ));
        } else {
            let reason = detail
                .trim_start_matches("runner binary: ")
                .split(':')
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned();
            *refusals.entry(reason).or_default() += 1;
        }
    }

    // Cache replaced after verification: reconcile re-verifies before installing.
    let good = runner_tarball(GOOD_VERSION)?;
    let mut swaps: Vec<(&'static str, Vec<u8>)> = Vec::new();
    for _ in 0..3 * scale {
        let mut flipped = good.clone();
        let at = rng.random_range(0..flipped.len());
        flipped[at] ^= 0x80;
        swaps.push(("cache file replaced: flipped byte", flipped));
        let cut = rng.random_range(1..good.len());
        swaps.push(("cache file replaced: truncated", good[..cut].to_vec()));
    }
    for _ in 0..scale {
        swaps.push(("cache file replaced: empty", Vec::new()));
        swaps.push((
            "cache file replaced: another valid tarball",
            other_version.clone(),
        ));
    }
    let mut swap_installed = 0u64;
    for (kind, bytes) in &swaps {
        let (created, detail) = cache_swap(Some(bytes)).await?;
        let entry = by_kind.entry(kind).or_default();
        entry.0 += 1;
        if created || !detail.contains("no longer matches its checksum") {
            swap_installed += u64::from(created);
            entry.1 += 1;
            outcome.problem(format!("{kind}: {detail}"));
        } else {
            *refusals
                .entry("reconcile: cached runner binary no longer matches its checksum".into())
                .or_default() += 1;
        }
    }

    // Controls: the same paths accept a correct tarball.
    let control_update = Served {
        kind: "control",
        bytes: original.clone(),
        published: None,
    };
    let mut control_failures = 0u64;
    for previous in [false, true] {
        let (took, detail) = try_update(&control_update, previous).await?;
        // `took` is true when the new binary became current: that is what a control wants.
        if !took || !detail.starts_with("ACCEPTED") {
            control_failures += 1;
            outcome.problem(format!("control: a correct tarball was refused: {detail}"));
        }
    }
    let (created, detail) = cache_swap(None).await?;
    if !created {
        control_failures += 1;
        outcome.problem(format!(
            "control: reconcile with an intact cache created nothing: {detail}"
        ));
    }

    let total = (cases.len() + swaps.len()) as u64;
    let kinds: Vec<String> = by_kind
        .iter()
        .map(|(k, (n, _))| format!("{k} ×{n}"))
        .collect();
    let reasons: Vec<String> = refusals.iter().map(|(r, n)| format!("{r} ×{n}")).collect();
    outcome.rows.push(Row {
        check: "tampered runner tarball (update_runner_bin, reconcile re-verify)".into(),
        cases: total,
        failures: by_kind.values().map(|(_, f)| f).sum::<u64>() + control_failures,
        evidence: format!(
            "installed {} of {total} (downloads {installed}, cache swaps {swap_installed}); refused by: {}; controls: correct tarball accepted on an empty cache and over an older one, intact cache → reconcile created 1 ({} control failures). Cases: {}",
            installed + swap_installed,
            reasons.join(", "),
            control_failures,
            kinds.join(", ")
        ),
    });
    Ok(())
}
