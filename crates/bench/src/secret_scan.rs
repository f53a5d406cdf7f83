//! R6, secrets: the real `runner-manager` binary on real Incus, with github-sim on the Incus
//! bridge and a policy service double. One full cycle per registration mode (token, JIT): the
//! daemon reconciles to 2 runners, 2 jobs run (each prints its environment and process list),
//! a signed webhook and `POST /reconcile` replace the finished runners, the daemon stops, and
//! `status` and `flush` run as one-shot commands. Everything the manager exposes is collected
//! on the way and searched for every secret the run handed out:
//!
//! - the PAT (full, first 12 characters, and base64 at all three alignments, standard and
//!   URL-safe), the policy service token, the server API token, the webhook secret;
//! - every registration token, remove token, encoded JIT config and runner credential the sim
//!   issued (`GET /_sim/secrets`), and every one-time policy token the double issued.
//!
//! Places: the daemon's and the commands' logs (JSON and text formats: the daemon uses one, the
//! commands the other, swapped between the modes; `RUST_LOG=debug`), the events log, the
//! state directory, `incus config show` (and `--expanded`) of every instance, `/proc/*/cmdline`
//! and `/proc/*/environ` of every process in every instance (idle runners, then every ~0.3 s
//! while the jobs run, then the replacements), the jobs' own output, and `GET /metrics`,
//! `/runners`, `/health`. A control plants a known value in a process's command line and
//! environment inside an instance and must be found.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine;
use rand::Rng;

use crate::real::Guard;
use crate::table::Table;

const REPO: &str = "octo/app";
const RUNNER_VERSION: &str = "2.329.0";
const BRIDGE_IP: &str = "10.123.45.1";
/// The Incus daemon's log (scanned for the lines written during a cycle, when readable).
const INCUS_LOG: &str = "/var/log/incus/incus.log";
/// Bound of one outside command (incus, the binary's one-shot commands).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(180);
/// Bound of waiting for runners and jobs.
const WAIT: Duration = Duration::from_secs(180);

/// How runners register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Token,
    Jit,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Jit => "jit",
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub binary: PathBuf,
    pub modes: Vec<Mode>,
    /// How long each job sleeps (the "job running" snapshots happen meanwhile).
    pub job_sleep: Duration,
}

/// One line of the result table.
#[derive(Debug, Clone)]
pub struct Row {
    pub mode: String,
    pub place: String,
    pub items: u64,
    pub secrets: u64,
    pub hits: u64,
    /// `true` for the control rows (which must have hits).
    pub control: bool,
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub rows: Vec<Row>,
    /// Every hit, described (place, item, secret kind, excerpt with the secret masked).
    pub hits: Vec<String>,
    /// Notes on the run (phases, counts).
    pub notes: Vec<String>,
}

impl Outcome {
    /// Hits outside the controls.
    pub fn leaks(&self) -> u64 {
        self.rows
            .iter()
            .filter(|r| !r.control)
            .map(|r| r.hits)
            .sum()
    }

    /// Controls that found nothing.
    pub fn failed_controls(&self) -> u64 {
        self.rows
            .iter()
            .filter(|r| r.control && r.hits == 0)
            .count() as u64
    }

    pub fn table(&self) -> String {
        let mut table = Table::new(&["mode", "place", "items scanned", "secrets searched", "hits"]);
        for row in &self.rows {
            let hits = if row.control {
                format!("{} (control, expected ≥ 1)", row.hits)
            } else {
                row.hits.to_string()
            };
            table.row(vec![
                row.mode.clone(),
                row.place.clone(),
                crate::bad_input::thousands(row.items),
                row.secrets.to_string(),
                hits,
            ]);
        }
        table.render()
    }
}

// ---------------------------------------------------------------------------------------------
// Secrets and the scanner
// ---------------------------------------------------------------------------------------------

/// One secret value and the strings searched for it.
#[derive(Debug, Clone)]
struct Needle {
    kind: String,
    patterns: Vec<(String, String)>,
}

/// The base64 encodings of `value` that appear whenever it is embedded anywhere in a base64
/// text: for each of the three alignments, the characters that depend on `value` alone.
fn base64_variants(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    for engine in [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::URL_SAFE,
    ] {
        for shift in 0..3usize {
            let mut bytes = vec![0u8; shift];
            bytes.extend_from_slice(value.as_bytes());
            let encoded = engine.encode(&bytes);
            // Characters influenced by the padding bytes in front, and the last group (which
            // depends on what follows), are dropped.
            let start = (shift * 4).div_ceil(3);
            let end = encoded.len().saturating_sub(4);
            if end > start + 8 {
                out.push(encoded[start..end].to_owned());
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

fn needle(kind: &str, value: &str, base64: bool) -> Needle {
    let mut patterns = vec![("full".to_owned(), value.to_owned())];
    let chars: Vec<char> = value.chars().collect();
    if chars.len() >= 64 {
        // Long base64 documents (JIT configs) share their first characters (`{".runner"`
        // encoded): a slice from the middle is the distinctive one.
        let mid = chars.len() / 2;
        patterns.push((
            "middle 16".to_owned(),
            chars[mid..mid + 16].iter().collect(),
        ));
    } else if chars.len() >= 20 {
        patterns.push(("first 12".to_owned(), chars[..12].iter().collect()));
    }
    if base64 {
        for (i, variant) in base64_variants(value).into_iter().enumerate() {
            patterns.push((format!("base64 #{i}"), variant));
        }
    }
    Needle {
        kind: kind.to_owned(),
        patterns,
    }
}

/// Everything collected in one place: items (a log line, a config document, a process).
#[derive(Debug, Default)]
struct Corpus {
    items: Vec<(String, String)>,
}

impl Corpus {
    fn add(&mut self, label: impl Into<String>, text: impl Into<String>) {
        self.items.push((label.into(), text.into()));
    }
    fn add_lines(&mut self, label: &str, text: &str) {
        for (i, line) in text.lines().enumerate() {
            self.items
                .push((format!("{label}:{}", i + 1), line.to_owned()));
        }
    }
}

/// An excerpt around `at` with `pattern` masked.
fn excerpt(text: &str, at: usize, pattern: &str) -> String {
    let start = text[..at]
        .char_indices()
        .rev()
        .nth(80)
        .map(|(i, _)| i)
        .unwrap_or(0);
    let end_at = at + pattern.len();
    let end = text[end_at..]
        .char_indices()
        .nth(80)
        .map(|(i, _)| end_at + i)
        .unwrap_or(text.len());
    format!("{}<SECRET>{}", &text[start..at], &text[end_at..end]).replace('\n', "\\n")
}

/// Hits of `needles` in `corpus`: one per (item, secret).
fn scan(
    corpus: &Corpus,
    needles: &[Needle],
    place: &str,
    mode: &str,
    hits: &mut Vec<String>,
) -> u64 {
    let mut count = 0;
    for (label, text) in &corpus.items {
        for needle in needles {
            if let Some((variant, at, pattern)) = needle
                .patterns
                .iter()
                .find_map(|(variant, p)| text.find(p.as_str()).map(|at| (variant, at, p)))
            {
                count += 1;
                hits.push(format!(
                    "[{mode}] {place} / {label}: {} ({variant}): …{}…",
                    needle.kind,
                    excerpt(text, at, pattern)
                ));
            }
        }
    }
    count
}

// ---------------------------------------------------------------------------------------------
// Outside commands
// ---------------------------------------------------------------------------------------------

struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn command(program: &Path, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Output> {
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .env("NO_COLOR", "1");
    for name in [
        "RUNNER_MANAGER_GITHUB_TOKEN",
        "RUNNER_MANAGER_SERVICE_TOKEN",
        "RUNNER_MANAGER_API_TOKEN",
        "RUNNER_MANAGER_WEBHOOK_SECRET",
        "RUNNER_MANAGER_CONFIG",
    ] {
        command.env_remove(name);
    }
    for (k, v) in env {
        command.env(k, v);
    }
    let output = tokio::time::timeout(COMMAND_TIMEOUT, command.output())
        .await
        .with_context(|| format!("{} {args:?} timed out", program.display()))?
        .with_context(|| format!("running {}", program.display()))?;
    Ok(Output {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

async fn incus(args: &[&str]) -> anyhow::Result<String> {
    let out = command(Path::new("incus"), args, &[]).await?;
    anyhow::ensure!(
        out.code == Some(0),
        "incus {args:?} exited {:?}: {}",
        out.code,
        out.stderr
    );
    Ok(out.stdout)
}

/// `/proc/*/cmdline` and `/proc/*/environ` of every process in `instance`.
const PROC_DUMP: &str = r#"for p in /proc/[0-9]*; do
  [ -r "$p/cmdline" ] || continue
  printf '\n@@PID %s\n' "${p#/proc/}"
  tr '\000' ' ' < "$p/cmdline" 2>/dev/null
  printf '\n@@ENV\n'
  tr '\000' '\n' < "$p/environ" 2>/dev/null
done"#;

/// `(pid, cmdline, environ)` of every process in `instance`.
async fn processes(instance: &str) -> anyhow::Result<Vec<(String, String, String)>> {
    let out = incus(&["exec", instance, "--", "sh", "-c", PROC_DUMP]).await?;
    let mut result = Vec::new();
    for chunk in out.split("\n@@PID ").skip(1) {
        let (pid, rest) = chunk.split_once('\n').unwrap_or((chunk, ""));
        let (cmdline, environ) = rest.split_once("\n@@ENV\n").unwrap_or((rest, ""));
        result.push((
            pid.trim().to_owned(),
            cmdline.trim().to_owned(),
            environ.to_owned(),
        ));
    }
    Ok(result)
}

// ---------------------------------------------------------------------------------------------
// The policy service double
// ---------------------------------------------------------------------------------------------

/// A policy service on the bridge: `/one-time-token` (Bearer service token) issues `ott-…`
/// tokens (recorded), `/{event}/check-run` allows a known one after 2 s (so the hook's request
/// is alive while the "job running" snapshots are taken).
async fn policy_service(
    service_token: String,
) -> anyhow::Result<(String, Arc<parking_lot::Mutex<Vec<String>>>)> {
    use axum::http::{HeaderMap, StatusCode};
    let issued = Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
    let app = axum::Router::new()
        .route(
            "/one-time-token",
            axum::routing::get({
                let issued = issued.clone();
                let expected = format!("Bearer {service_token}");
                move |headers: HeaderMap| {
                    let issued = issued.clone();
                    let expected = expected.clone();
                    async move {
                        if headers.get("authorization").and_then(|v| v.to_str().ok())
                            != Some(expected.as_str())
                        {
                            return (StatusCode::UNAUTHORIZED, String::new());
                        }
                        let token = format!("ott-{:032x}", rand::rng().random::<u128>());
                        issued.lock().push(token.clone());
                        (StatusCode::OK, token)
                    }
                }
            }),
        )
        .route(
            "/{event}/check-run",
            axum::routing::post({
                let issued = issued.clone();
                move |headers: HeaderMap| {
                    let issued = issued.clone();
                    async move {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        let auth = headers
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.strip_prefix("Bearer "))
                            .unwrap_or_default()
                            .to_owned();
                        if issued.lock().contains(&auth) {
                            StatusCode::NO_CONTENT
                        } else {
                            StatusCode::FORBIDDEN
                        }
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(format!("{BRIDGE_IP}:0"))
        .await
        .context("binding the policy double on the Incus bridge")?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((format!("http://{addr}"), issued))
}

// ---------------------------------------------------------------------------------------------
// One cycle
// ---------------------------------------------------------------------------------------------

fn random_lower(n: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    (0..n)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

fn random_alnum(n: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::rng();
    (0..n)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The daemon process; killed on drop.
struct Daemon {
    child: Option<std::process::Child>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Daemon {
    /// SIGTERM, then wait up to `bound` for the exit code.
    async fn stop(&mut self, bound: Duration) -> anyhow::Result<Option<i32>> {
        let Some(child) = self.child.as_mut() else {
            return Ok(None);
        };
        let status = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::process::Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status(),
        )
        .await
        .context("kill timed out")??;
        anyhow::ensure!(status.success(), "kill -TERM failed");
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status.code());
            }
            anyhow::ensure!(
                started.elapsed() < bound,
                "the daemon did not stop within {bound:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The places of one mode, filled during the cycle.
#[derive(Default)]
struct Places {
    logs_text: Corpus,
    logs_json: Corpus,
    events: Corpus,
    state: Corpus,
    config_show: Corpus,
    config_expanded: Corpus,
    cmdline: Corpus,
    environ: Corpus,
    job_output: Corpus,
    http: Corpus,
    /// Lines the Incus daemon logged during the cycle (it may log operations and exec commands).
    incus_log: Corpus,
}

struct Cycle {
    mode: Mode,
    app: String,
    sim: github_sim::SimHandle,
    lxd: lxd::Client,
    dir: tempfile::TempDir,
    config: PathBuf,
    binary: PathBuf,
    port: u16,
    pat: String,
    api_token: String,
    webhook_secret: String,
    service_token: String,
    http: reqwest::Client,
    places: Places,
    /// Length of the Incus daemon log when the cycle started (`None`: not readable).
    incus_log_start: Option<u64>,
    /// Instances whose config was captured (name → times).
    seen: BTreeMap<String, u32>,
    notes: Vec<String>,
    started: Instant,
}

impl Cycle {
    fn note(&mut self, text: String) {
        let line = format!(
            "[{} +{:5.1}s] {text}",
            self.mode.as_str(),
            self.started.elapsed().as_secs_f64()
        );
        eprintln!("{line}");
        self.notes.push(line);
    }

    fn prefix(&self) -> String {
        format!("{}-", self.app)
    }

    /// The daemon logs in JSON in token mode and in text in JIT mode; the commands the other.
    fn daemon_format(&self) -> &'static str {
        match self.mode {
            Mode::Token => "json",
            Mode::Jit => "text",
        }
    }

    fn command_format(&self) -> &'static str {
        match self.mode {
            Mode::Token => "text",
            Mode::Jit => "json",
        }
    }

    fn logs_of(&mut self, format: &str) -> &mut Corpus {
        if format == "json" {
            &mut self.places.logs_json
        } else {
            &mut self.places.logs_text
        }
    }

    async fn runners_online(
        &self,
        n: usize,
        not_in: &BTreeSet<String>,
    ) -> anyhow::Result<Vec<String>> {
        let deadline = Instant::now() + WAIT;
        loop {
            let prefix = self.prefix();
            let online: Vec<String> = self
                .sim
                .runners()
                .into_iter()
                .filter(|r| {
                    r.name.starts_with(&prefix) && r.status == "online" && !not_in.contains(&r.name)
                })
                .map(|r| r.name)
                .collect();
            if online.len() >= n {
                return Ok(online);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{n} new runners never came online (have {online:?}); daemon log:\n{}",
                self.daemon_log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    async fn instances(&self) -> anyhow::Result<Vec<String>> {
        let prefix = self.prefix();
        let all = tokio::time::timeout(COMMAND_TIMEOUT, self.lxd.list_instances())
            .await
            .context("listing instances timed out")??;
        Ok(all
            .into_iter()
            .filter(|i| i.name.starts_with(&prefix))
            .map(|i| i.name)
            .collect())
    }

    /// `incus config show` (plain and expanded) of every instance, and one process snapshot.
    async fn snapshot(&mut self, phase: &str) -> anyhow::Result<usize> {
        let t = Instant::now();
        let names = self.instances().await?;
        let listed = t.elapsed();
        for name in &names {
            let plain = incus(&["config", "show", name]).await?;
            let expanded = incus(&["config", "show", "--expanded", name]).await?;
            self.places
                .config_show
                .add(format!("{phase} {name}"), plain);
            self.places
                .config_expanded
                .add(format!("{phase} {name}"), expanded);
            *self.seen.entry(name.clone()).or_default() += 1;
        }
        let configs = t.elapsed();
        self.processes(phase, &names).await?;
        self.note(format!(
            "{phase}: list {:.1} s, configs {:.1} s, processes {:.1} s",
            listed.as_secs_f64(),
            (configs - listed).as_secs_f64(),
            (t.elapsed() - configs).as_secs_f64()
        ));
        Ok(names.len())
    }

    async fn processes(&mut self, phase: &str, names: &[String]) -> anyhow::Result<usize> {
        let dumps = futures::future::join_all(
            names
                .iter()
                .map(|name| async move { (name.clone(), processes(name).await) }),
        )
        .await;
        let mut n = 0;
        for (name, dump) in dumps {
            // An instance can vanish between list and exec (a finished runner being removed).
            let Ok(dump) = dump else { continue };
            for (pid, cmdline, environ) in dump {
                n += 1;
                self.places
                    .cmdline
                    .add(format!("{phase} {name} pid {pid}"), cmdline.clone());
                // The label names the process by pid only: a cmdline could hold a secret.
                self.places
                    .environ
                    .add(format!("{phase} {name} pid {pid}"), environ);
            }
        }
        Ok(n)
    }

    async fn get(&mut self, path: &str) -> anyhow::Result<String> {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = response.status();
        let body = response.text().await?;
        anyhow::ensure!(status.is_success(), "GET {path}: {status}: {body}");
        self.places.http.add(format!("GET {path}"), body.clone());
        Ok(body)
    }

    /// One-shot `runner-manager <args>` in the command log format.
    async fn run_command(&mut self, args: &[&str]) -> anyhow::Result<Output> {
        let format = self.command_format();
        let config = self.config.display().to_string();
        let mut all = vec!["--log-format", format, "--config", config.as_str()];
        all.extend_from_slice(args);
        let out = command(&self.binary, &all, &[("RUST_LOG", "debug")]).await?;
        let label = format!("runner-manager {}", args.join(" "));
        let logs = self.logs_of(format);
        logs.add_lines(&format!("{label} stderr"), &out.stderr);
        logs.add_lines(&format!("{label} stdout"), &out.stdout);
        Ok(out)
    }

    async fn run(&mut self, job_sleep: Duration) -> anyhow::Result<()> {
        // 1. The daemon reconciles to 2 runners at start.
        let log = std::fs::File::create(self.dir.path().join("daemon.log"))?;
        let child = std::process::Command::new(&self.binary)
            .args(["--log-format", self.daemon_format(), "--config"])
            .arg(&self.config)
            .arg("run")
            .env("RUST_LOG", "debug")
            .env("NO_COLOR", "1")
            .env_remove("RUNNER_MANAGER_GITHUB_TOKEN")
            .env_remove("RUNNER_MANAGER_SERVICE_TOKEN")
            .env_remove("RUNNER_MANAGER_API_TOKEN")
            .env_remove("RUNNER_MANAGER_WEBHOOK_SECRET")
            .env_remove("RUNNER_MANAGER_CONFIG")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting runner-manager run")?;
        let mut daemon = Daemon { child: Some(child) };
        let first = self.runners_online(2, &BTreeSet::new()).await?;
        self.note(format!("2 runners online: {first:?}"));
        let n = self.snapshot("idle").await?;
        self.note(format!("idle snapshot of {n} instances"));

        // 2. Two jobs that print their environment and processes, then sleep.
        let admin = format!("{}/_sim/jobs", self.sim.base_url());
        let script = format!(
            "echo R6-JOB-ENV; env; echo R6-JOB-PS; ps -o pid,args 2>/dev/null || ps; sleep {}; echo R6-JOB-END",
            job_sleep.as_secs()
        );
        let mut jobs = Vec::new();
        for _ in 0..2 {
            let response = self
                .http
                .post(&admin)
                .json(&serde_json::json!({"labels": [self.app], "script": script, "scope": REPO}))
                .send()
                .await?;
            anyhow::ensure!(
                response.status().as_u16() == 201,
                "enqueue: {}",
                response.status()
            );
            let body: serde_json::Value = response.json().await?;
            jobs.push(body["job_id"].as_u64().context("job_id")?);
        }
        // Process snapshots every ~0.3 s until both jobs are done.
        let deadline = Instant::now() + WAIT;
        let (mut snapshots, mut in_progress_seen) = (0u32, 0u32);
        loop {
            let views: Vec<_> = jobs.iter().filter_map(|id| self.sim.job(*id)).collect();
            let done = views.len() == jobs.len()
                && views
                    .iter()
                    .all(|j| j.status == github_sim::JobStatus::Completed);
            if done {
                for job in &views {
                    self.places
                        .job_output
                        .add_lines(&format!("job {}", job.job_id), &job.output);
                    anyhow::ensure!(
                        job.conclusion.as_deref() == Some("success"),
                        "job {} ended {:?}: {}",
                        job.job_id,
                        job.conclusion,
                        job.output
                    );
                }
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "jobs did not finish: {views:?}");
            if views
                .iter()
                .any(|j| j.status == github_sim::JobStatus::InProgress)
            {
                in_progress_seen += 1;
            }
            let t = Instant::now();
            let names = self.instances().await?;
            let n = self.processes("job running", &names).await?;
            snapshots += 1;
            let statuses: Vec<String> = views.iter().map(|j| format!("{:?}", j.status)).collect();
            self.note(format!(
                "snapshot {snapshots}: {n} processes in {} instances in {:.2} s; jobs {statuses:?}",
                names.len(),
                t.elapsed().as_secs_f64()
            ));
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        self.note(format!(
            "2 jobs done; {snapshots} process snapshots while they ran ({in_progress_seen} with a job in progress)"
        ));
        anyhow::ensure!(in_progress_seen > 0, "no snapshot saw a job in progress");

        // 3. Replace: a signed webhook for a finished job on our runner, and POST /reconcile.
        let runner = first.first().cloned().unwrap_or_default();
        let body = serde_json::json!({
            "action": "completed",
            "workflow_job": {"id": jobs[0], "labels": [self.app], "runner_name": runner},
        })
        .to_string();
        let secret = runner_manager::secret::Secret::new(self.webhook_secret.clone())
            .context("webhook secret")?;
        let signature = runner_manager::webhook::sign(&secret, body.as_bytes());
        let response = self
            .http
            .post(format!("http://127.0.0.1:{}/webhook", self.port))
            .header("x-github-event", "workflow_job")
            .header("x-hub-signature-256", signature)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        anyhow::ensure!(
            response.status().as_u16() == 202,
            "webhook: {}",
            response.status()
        );
        let response = self
            .http
            .post(format!("http://127.0.0.1:{}/reconcile", self.port))
            .bearer_auth(&self.api_token)
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        self.places.http.add("POST /reconcile", text.clone());
        anyhow::ensure!(status.is_success(), "POST /reconcile: {status}: {text}");
        let old: BTreeSet<String> = first.into_iter().collect();
        let replaced = self.runners_online(2, &old).await?;
        self.note(format!("replaced by {replaced:?}"));
        let n = self.snapshot("replaced").await?;
        self.note(format!("replacement snapshot of {n} instances"));

        // 4. The daemon's HTTP surface.
        for path in ["/metrics", "/runners", "/health"] {
            self.get(path).await?;
        }

        // 5. Stop the daemon, then one-shot commands: status, flush.
        let code = daemon.stop(Duration::from_secs(150)).await?;
        self.note(format!("daemon stopped, exit {code:?}"));
        let out = self.run_command(&["status", "--json"]).await?;
        anyhow::ensure!(out.code == Some(0), "status: {}", out.stderr);
        let out = self.run_command(&["flush", "--json"]).await?;
        anyhow::ensure!(out.code == Some(0), "flush: {}", out.stderr);
        let left = self.instances().await?;
        self.note(format!("flushed; instances left: {left:?}"));

        // 6. Files: the daemon log, the events log, the state directory.
        let log = self.daemon_log();
        let format = self.daemon_format();
        self.logs_of(format).add_lines("daemon", &log);
        let events =
            std::fs::read_to_string(self.dir.path().join("events.log")).unwrap_or_default();
        anyhow::ensure!(!events.is_empty(), "the events log is empty");
        self.places.events.add_lines("events.log", &events);
        if let Some(start) = self.incus_log_start {
            let bytes = std::fs::read(INCUS_LOG).unwrap_or_default();
            let from = usize::try_from(start).unwrap_or(0).min(bytes.len());
            let text = String::from_utf8_lossy(&bytes[from..]).into_owned();
            self.places.incus_log.add_lines("incus.log", &text);
        }
        for path in walk(&self.dir.path().join("state")) {
            let bytes = std::fs::read(&path)?;
            self.places.state.add(
                path.display().to_string(),
                String::from_utf8_lossy(&bytes).into_owned(),
            );
        }
        Ok(())
    }

    /// Plants `value` in the command line and environment of a process inside `instance`.
    async fn plant(&self, instance: &str, value: &str) -> anyhow::Result<()> {
        // setsid: Incus kills the exec's process group when it returns.
        let script = format!(
            "R6_CONTROL={value} setsid sh -c 'sleep 30; true' {value} </dev/null >/dev/null 2>&1 &"
        );
        incus(&["exec", instance, "--", "sh", "-c", &script]).await?;
        Ok(())
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

async fn cycle(options: &Options, mode: Mode, outcome: &mut Outcome) -> anyhow::Result<()> {
    let started = Instant::now();
    let app = format!("r6scan{}", random_lower(4));
    let _guard = Guard::new(format!("{app}-"));
    let pat = format!("ghp_{}", random_alnum(36));
    let api_token = format!("r6api_{}", random_alnum(30));
    let webhook_secret = format!("r6hook_{}", random_alnum(30));
    let service_token = format!("r6svc_{}", random_alnum(30));

    let agent = github_sim::tarball::locate_or_build_agent().context("the fake runner agent")?;
    let tarball = github_sim::tarball::build_runner_tarball(&agent, RUNNER_VERSION)?;
    let listen: SocketAddr = format!("{BRIDGE_IP}:0").parse()?;
    let sim = github_sim::Sim::start(
        github_sim::SimConfig::default()
            .with_listen(listen)
            .with_token(pat.clone())
            .with_runner_tarball(tarball, RUNNER_VERSION),
    )
    .await
    .context("starting github-sim on the Incus bridge (run `./scripts/incus-env.sh up`)")?;
    let (policy_url, one_time_tokens) = policy_service(service_token.clone()).await?;
    // Generous: Incus's API can stall for a minute while other instances stop on a shared host.
    let lxd = lxd::Client::connect(
        lxd::Endpoint::discover().context("an Incus socket")?,
        lxd::Timeouts {
            connect: Duration::from_secs(10),
            request: Duration::from_secs(150),
            operation: Duration::from_secs(300),
        },
    )
    .await
    .context("connecting to Incus")?;

    let dir = tempfile::tempdir()?;
    let path = |name: &str| dir.path().join(name).display().to_string();
    for (name, value) in [
        ("github-token", &pat),
        ("api-token", &api_token),
        ("webhook-secret", &webhook_secret),
        ("service-token", &service_token),
    ] {
        std::fs::write(dir.path().join(name), value)?;
    }
    let port = free_port()?;
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        crate::real::binary_config(
            &app,
            REPO,
            &dir.path().join("state"),
            &dir.path().join("github-token"),
            &sim,
            2,
        ) + &format!(
            r#"registration = "{mode}"

[policy]
url = "{policy_url}"
service_token_file = "{service}"

[metrics]
issue_metrics = true
events_log = "{events}"

[server]
listen = "127.0.0.1:{port}"
api_token_file = "{api_token_file}"
webhook_secret_file = "{secret}"
reconcile_interval_seconds = 3600
"#,
            mode = mode.as_str(),
            service = path("service-token"),
            events = path("events.log"),
            api_token_file = path("api-token"),
            secret = path("webhook-secret"),
        ),
    )?;
    let mut cycle = Cycle {
        mode,
        app,
        sim,
        lxd,
        dir,
        config,
        binary: options.binary.clone(),
        port,
        pat: pat.clone(),
        api_token: api_token.clone(),
        webhook_secret: webhook_secret.clone(),
        service_token: service_token.clone(),
        http: reqwest::Client::builder()
            .timeout(COMMAND_TIMEOUT)
            .no_proxy()
            .build()?,
        places: Places::default(),
        incus_log_start: std::fs::metadata(INCUS_LOG).ok().map(|m| m.len()),
        seen: BTreeMap::new(),
        notes: Vec::new(),
        started,
    };
    let result = cycle.run(options.job_sleep).await;
    if let Err(err) = &result {
        eprintln!(
            "[{}] cycle failed: {err:#}\ndaemon log tail:\n{}",
            mode.as_str(),
            {
                let log = cycle.daemon_log();
                let lines: Vec<&str> = log.lines().collect();
                lines[lines.len().saturating_sub(40)..].join("\n")
            }
        );
    }
    result?;

    // The secrets, as issued.
    let issued: github_sim::IssuedSecrets = cycle
        .http
        .get(format!("{}/_sim/secrets", cycle.sim.base_url()))
        .send()
        .await?
        .json()
        .await?;
    let mut needles = vec![
        needle("PAT", &cycle.pat, true),
        needle("policy service token", &cycle.service_token, false),
        needle("server api_token", &cycle.api_token, false),
        needle("webhook secret", &cycle.webhook_secret, false),
    ];
    for (kind, values) in [
        ("registration token", &issued.registration_tokens),
        ("remove token", &issued.remove_tokens),
        ("JIT config", &issued.jit_configs),
        ("runner credential", &issued.runner_credentials),
    ] {
        for value in values {
            needles.push(needle(kind, value, false));
        }
    }
    for value in one_time_tokens.lock().iter() {
        needles.push(needle("one-time policy token", value, false));
    }
    let count = |kind: &str| needles.iter().filter(|n| n.kind == kind).count();
    cycle.note(format!(
        "secrets: 1 PAT, 3 service tokens, {} registration tokens, {} remove tokens, {} JIT configs, {} runner credentials, {} one-time policy tokens",
        count("registration token"),
        count("remove token"),
        count("JIT config"),
        count("runner credential"),
        count("one-time policy token"),
    ));
    match mode {
        // One registration token per pass that creates runners (2 passes), one JIT config per runner.
        Mode::Token => anyhow::ensure!(
            count("registration token") >= 2,
            "token mode issued too few registration tokens"
        ),
        Mode::Jit => anyhow::ensure!(
            count("JIT config") >= 4,
            "JIT mode issued too few JIT configs"
        ),
    }
    anyhow::ensure!(
        count("one-time policy token") >= 4,
        "the policy double issued too few tokens"
    );
    let secrets = needles.len() as u64;

    let m = mode.as_str().to_owned();
    let places = std::mem::take(&mut cycle.places);
    let list: [(&str, &Corpus); 11] = [
        ("logs, text format (RUST_LOG=debug)", &places.logs_text),
        ("logs, JSON format (RUST_LOG=debug)", &places.logs_json),
        ("events log", &places.events),
        ("state dir files", &places.state),
        ("incus config show", &places.config_show),
        ("incus config show --expanded", &places.config_expanded),
        ("/proc/*/cmdline in instances", &places.cmdline),
        ("/proc/*/environ in instances", &places.environ),
        ("job output (env, ps in the job)", &places.job_output),
        (
            "GET /metrics, /runners, /health, POST /reconcile",
            &places.http,
        ),
        ("Incus daemon log (lines of the cycle)", &places.incus_log),
    ];
    for (place, corpus) in list {
        if corpus.items.is_empty() && std::ptr::eq(corpus, &places.incus_log) {
            // Not readable here, or Incus wrote nothing: no row rather than an empty one.
            continue;
        }
        anyhow::ensure!(
            !corpus.items.is_empty(),
            "[{m}] nothing collected for {place}"
        );
        let hits = scan(corpus, &needles, place, &m, &mut outcome.hits);
        outcome.rows.push(Row {
            mode: m.clone(),
            place: place.to_owned(),
            items: corpus.items.len() as u64,
            secrets,
            hits,
            control: false,
        });
    }

    // Control (token mode run only): a planted value in a live instance must be found.
    if mode == Mode::Token {
        control(&mut cycle, &mut outcome.rows, &mut outcome.hits).await?;
    }
    outcome.notes.append(&mut cycle.notes);
    outcome.notes.push(format!(
        "[{m}] cycle took {:.1} s; instances captured: {}",
        started.elapsed().as_secs_f64(),
        cycle.seen.len()
    ));
    cycle.sim.shutdown().await;
    Ok(())
}

/// Launches one throwaway container under the cycle's prefix, plants a known value in a
/// process's command line and environment there, and scans one process snapshot for it.
async fn control(
    cycle: &mut Cycle,
    rows: &mut Vec<Row>,
    hits: &mut Vec<String>,
) -> anyhow::Result<()> {
    let name = format!("{}-control", cycle.app);
    incus(&["launch", "busybox", &name]).await?;
    let planted = format!("r6control_{}", random_alnum(24));
    // exec works once the container runs init; retry briefly.
    let mut planted_ok = false;
    for _ in 0..50 {
        if cycle.plant(&name, &planted).await.is_ok() {
            planted_ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::ensure!(planted_ok, "could not plant the control value in {name}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut places = Places::default();
    std::mem::swap(&mut places, &mut cycle.places);
    cycle
        .processes("control", std::slice::from_ref(&name))
        .await?;
    std::mem::swap(&mut places, &mut cycle.places);
    let needles = [needle("control", &planted, false)];
    for (place, corpus) in [
        ("control: planted in /proc/*/cmdline", &places.cmdline),
        ("control: planted in /proc/*/environ", &places.environ),
    ] {
        let found = scan(corpus, &needles, place, "control", hits);
        rows.push(Row {
            mode: "control".into(),
            place: place.to_owned(),
            items: corpus.items.len() as u64,
            secrets: 1,
            hits: found,
            control: true,
        });
    }
    incus(&["delete", "--force", &name]).await?;
    Ok(())
}

/// Runs the cycles.
pub async fn run(options: &Options) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome::default();
    for mode in &options.modes {
        cycle(options, *mode, &mut outcome).await?;
    }
    Ok(outcome)
}
