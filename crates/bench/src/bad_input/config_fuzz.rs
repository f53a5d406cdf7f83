//! R5 check 1, config fuzzing: each fuzzed config through the loader, and a sample through the binary.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use rand::rngs::StdRng;
use rand::SeedableRng;
use runner_manager::config::{Config, ConfigError};

use super::config_inputs::{
    bad_values, base_configs, generate, is_top_level, key_paths, BASE_SECRETS, KINDS, PEM,
    SECRET_ENV,
};
use super::{thousands, Options, Outcome, Row};

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
        && (is_top_level(head)
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

pub(super) async fn config_fuzz(options: &Options, outcome: &mut Outcome) -> anyhow::Result<()> {
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
