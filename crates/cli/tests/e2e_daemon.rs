//! End to end: the `runner-manager` binary (commands and the `run` daemon) against the GitHub
//! simulator (in-process, on the Incus bridge) and real Incus containers (fake runner tarball),
//! on both images `scripts/incus-env.sh up` imports: `busybox` and `debian/bookworm` (systemd as
//! PID 1, dash as /bin/sh, a `ubuntu` user: like the server images operators run). Each test
//! exists once per image, `busybox::<name>` and `debian::<name>`.
//!
//! The tests that need Incus are `#[ignore]`d, so a plain `cargo test` reports them as ignored,
//! never as passed: `scripts/test.sh` (which brings Incus up and builds the static fake runner)
//! runs them with `--run-ignored all`. `incus_tests_are_ignored_by_default` keeps it that way.
//! Every test has its own simulator, state dir and app name (`e2ec<5 letters>`), so tests run in
//! parallel; a guard deletes every instance of that app, and kills the daemon, even when a test
//! fails.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use github_sim::{RunnerView, SimHandle};
use serde_json::{json, Value};
use test_support::config::BinaryConfig;
use test_support::incus::{delete_prefixed, random_app};
use test_support::{incus_ignored, sim};

const BIN: &str = env!("CARGO_BIN_EXE_runner-manager");
const REPO: &str = "e2e/app";
const RUNNER_VERSION: &str = "2.331.0";
const API_TOKEN: &str = "e2e-api-token-0123456789";
const WEBHOOK_SECRET: &str = "e2e-webhook-secret-abcdef";
/// Upper bound of one CLI command (a reconcile creates containers on a loaded machine).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(240);
/// Upper bound of waiting for runners, passes and processes.
const WAIT: Duration = Duration::from_secs(180);

test_support::on_both_images!(
    worker_threads = 2;
    commands_reconcile_status_and_flush_real_runners,
    daemon_webhook_metrics_and_auth,
    sigterm_during_reconcile_leaves_no_half_created_runner,
    daemon_replaces_a_finished_runner_on_the_completed_webhook,
);

/// A plain `cargo test` (no daemon) must report the Incus tests as ignored, not as passed.
#[test]
fn incus_tests_are_ignored_by_default() {
    incus_ignored::assert_only_these_run_by_default(
        &std::env::current_exe().expect("the test binary"),
        &[
            "incus_tests_are_ignored_by_default",
            "the_openmetrics_parser_rejects_broken_expositions",
        ],
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Logs a phase with the time since the test started (visible with `--nocapture`).
struct Clock {
    app: String,
    start: Instant,
}

impl Clock {
    fn mark(&self, what: &str) {
        eprintln!(
            "[{} +{:6.2}s] {what}",
            self.app,
            self.start.elapsed().as_secs_f64()
        );
    }
}

/// The exit status and output of one command.
#[derive(Debug)]
struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Output {
    /// Asserts exit 0 and parses stdout as one JSON document.
    fn json(&self, what: &str) -> Value {
        assert_eq!(
            self.code,
            Some(0),
            "{what}: stdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        serde_json::from_str(&self.stdout).unwrap_or_else(|err| {
            panic!(
                "{what}: stdout is not one JSON document ({err}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

/// What the `[server]` section of the config holds.
struct ServerSection {
    port: u16,
    interval_seconds: u64,
}

/// One test's world: a simulator, a temp dir (config, state, token, logs), an app name, and the
/// daemon if started. Dropping it kills the daemon and deletes the app's instances.
struct Env {
    app: String,
    /// The image alias written into the config (`[lxd] image`).
    image: String,
    sim: SimHandle,
    lxd: lxd::Client,
    dir: tempfile::TempDir,
    config: PathBuf,
    daemon: Option<Child>,
    clock: Clock,
}

impl Env {
    async fn new(image: &str) -> Self {
        let app = random_app("e2ec", 5);
        let clock = Clock {
            app: app.clone(),
            start: Instant::now(),
        };
        let sim = sim::start(sim::on_bridge(REPO, RUNNER_VERSION)).await;
        // Generous: Incus's API can stall for a minute while other instances stop on a shared host.
        let lxd = lxd::Client::connect(
            lxd::Endpoint::discover().expect("an incus socket"),
            lxd::Timeouts {
                connect: Duration::from_secs(10),
                request: Duration::from_secs(150),
                operation: Duration::from_secs(300),
            },
        )
        .await
        .expect("incus is up");
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("config.toml");
        std::fs::write(dir.path().join("github-token"), sim.token().expose()).expect("token");
        std::fs::write(dir.path().join("api-token"), API_TOKEN).expect("api token");
        std::fs::write(dir.path().join("webhook-secret"), WEBHOOK_SECRET).expect("secret");
        clock.mark(&format!("simulator at {} (image {image})", sim.base_url()));
        Self {
            app,
            image: image.to_owned(),
            sim,
            lxd,
            dir,
            config,
            daemon: None,
            clock,
        }
    }

    fn prefix(&self) -> String {
        format!("{}-", self.app)
    }

    fn write_config(&self, quantity: u32, server: Option<&ServerSection>) {
        let path = |name: &str| self.dir.path().join(name).display().to_string();
        let mut text = BinaryConfig {
            app: &self.app,
            repo: REPO,
            image: &self.image,
            state_dir: &self.dir.path().join("state"),
            token_file: &self.dir.path().join("github-token"),
            sim: &self.sim,
            quantity,
        }
        .render();
        if let Some(server) = server {
            text.push_str(&format!(
                r#"
[server]
listen = "127.0.0.1:{port}"
api_token_file = "{api_token}"
webhook_secret_file = "{secret}"
reconcile_interval_seconds = {interval}
"#,
                port = server.port,
                api_token = path("api-token"),
                secret = path("webhook-secret"),
                interval = server.interval_seconds,
            ));
        }
        std::fs::write(&self.config, text).expect("config written");
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(BIN);
        command
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove("RUNNER_MANAGER_GITHUB_TOKEN")
            .env_remove("RUNNER_MANAGER_CONFIG")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// Runs `runner-manager --config <config> <args>` to its end.
    async fn run(&self, args: &[&str]) -> Output {
        let started = Instant::now();
        let output = tokio::time::timeout(COMMAND_TIMEOUT, self.command(args).output())
            .await
            .unwrap_or_else(|_| panic!("runner-manager {args:?} took over {COMMAND_TIMEOUT:?}"))
            .expect("runner-manager runs");
        let output = Output {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        self.clock.mark(&format!(
            "runner-manager {} -> {:?} in {:.1}s",
            args.join(" "),
            output.code,
            started.elapsed().as_secs_f64()
        ));
        output
    }

    /// Writes the config for `quantity` runners with a `[server]` on a free port and a timer of
    /// an hour (so only the startup pass, webhooks and POSTs make passes), starts the daemon, and
    /// returns its base URL.
    fn start_daemon_on_hourly_timer(&mut self, quantity: u32) -> String {
        let port = free_port();
        self.write_config(
            quantity,
            Some(&ServerSection {
                port,
                interval_seconds: 3600,
            }),
        );
        self.start_daemon();
        format!("http://127.0.0.1:{port}")
    }

    /// Starts `runner-manager run`, logging to `daemon.log`.
    fn start_daemon(&mut self) {
        let log = std::fs::File::create(self.daemon_log_path()).expect("daemon log");
        let child = std::process::Command::new(BIN)
            .arg("--config")
            .arg(&self.config)
            .arg("run")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove("RUNNER_MANAGER_GITHUB_TOKEN")
            .env_remove("RUNNER_MANAGER_CONFIG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("runner-manager run starts");
        self.daemon = Some(child);
        self.clock.mark("daemon started");
    }

    fn daemon_log_path(&self) -> PathBuf {
        self.dir.path().join("daemon.log")
    }

    fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.daemon_log_path()).unwrap_or_default()
    }

    /// Sends `signal` (e.g. `TERM`) to the daemon with kill(1).
    fn signal_daemon(&self, signal: &str) {
        let pid = self.daemon.as_ref().expect("the daemon was started").id();
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// Waits for the daemon to exit; its exit code and how long it took.
    async fn wait_daemon_exit(&mut self, bound: Duration) -> (Option<i32>, Duration) {
        let started = Instant::now();
        let child = self.daemon.as_mut().expect("the daemon was started");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.daemon = None;
                return (status.code(), started.elapsed());
            }
            if started.elapsed() > bound {
                let log = self.daemon_log();
                panic!("the daemon did not exit within {bound:?}; log:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sim registrations of this app.
    fn registrations(&self) -> Vec<RunnerView> {
        let prefix = self.prefix();
        self.sim
            .runners()
            .into_iter()
            .filter(|r| r.name.starts_with(&prefix))
            .collect()
    }

    /// Incus instances of this app.
    async fn instances(&self) -> Vec<lxd::Instance> {
        let prefix = self.prefix();
        let mut all = self.lxd.list_instances().await.expect("listing instances");
        all.retain(|i| i.name.starts_with(&prefix));
        all
    }

    /// Waits until exactly `n` registrations of this app are online (and none offline).
    async fn wait_online(&self, n: usize) -> Vec<RunnerView> {
        let deadline = Instant::now() + WAIT;
        loop {
            let runners = self.registrations();
            if runners.len() == n && runners.iter().all(|r| r.status == "online") {
                self.clock.mark(&format!("{n} runner(s) online"));
                return runners;
            }
            assert!(
                Instant::now() < deadline,
                "{n} runners never came online: {runners:#?}\n{}",
                self.daemon_log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `flush --json` until it removed `expected` runners in all. A removal that fails because
    /// Incus stalled (its API sometimes blocks for tens of seconds while other instances stop)
    /// makes flush exit 1 naming the runner; the next flush removes it.
    async fn flush_all(&self, expected: u64) {
        let mut removed = 0;
        for attempt in 1..=3 {
            let out = self.run(&["flush", "--json"]).await;
            if out.code == Some(0) {
                removed += out.json("flush")["removed"].as_u64().expect("removed");
                break;
            }
            assert_eq!(out.code, Some(1), "flush: {out:#?}");
            assert!(
                attempt < 3 && out.stderr.contains("timed out"),
                "flush failed: {}",
                out.stderr
            );
            let partial = out
                .stderr
                .split("flush removed ")
                .nth(1)
                .and_then(|rest| rest.split(' ').next())
                .and_then(|n| n.parse::<u64>().ok())
                .expect("a partial flush says how many it removed");
            self.clock.mark(&format!(
                "flush hit an Incus timeout after {partial} removal(s); again"
            ));
            removed += partial;
        }
        assert_eq!(removed, expected, "runners flushed");
    }

    /// `reconcile --json` until a pass reports no failed step (Incus occasionally fails to start
    /// a container under load; the next pass replaces it). Returns the first pass's document.
    async fn reconcile_until_clean(&self) -> Value {
        let mut first = None;
        for attempt in 1..=3 {
            let out = self.run(&["reconcile", "--json"]).await;
            assert!(
                matches!(out.code, Some(0 | 1)),
                "reconcile: {}\n{}",
                out.stdout,
                out.stderr
            );
            let doc: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|err| {
                panic!("reconcile --json ({err}): {}\n{}", out.stdout, out.stderr)
            });
            let failed = doc["failed"].as_u64().expect("failed");
            assert_eq!(
                out.code == Some(0),
                failed == 0,
                "exit status follows failed: {doc}"
            );
            let clean = failed == 0;
            if !clean {
                self.clock.mark(&format!(
                    "reconcile attempt {attempt}: {failed} step(s) failed: {}",
                    out.stderr
                ));
            }
            first.get_or_insert(doc);
            if clean {
                return first.expect("set");
            }
        }
        panic!("three reconcile passes in a row had failed steps");
    }

    /// `GET /repos/.../actions/runners` calls the simulator has seen.
    fn list_calls(&self) -> u64 {
        self.sim
            .request_counts()
            .iter()
            .filter(|(key, _)| key.starts_with("GET ") && key.ends_with("/actions/runners"))
            .map(|(_, count)| count.count)
            .sum()
    }

    /// Asserts the app has no instance, no registration, and `status` agrees.
    async fn assert_nothing_left(&self) {
        assert_eq!(self.instances().await.len(), 0, "instances left");
        assert_eq!(self.registrations().len(), 0, "registrations left");
        let status = self.run(&["status", "--json"]).await.json("status");
        assert_eq!(
            status,
            json!({"runners": [], "dangling": [], "orphans": []}),
            "status after flush"
        );
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let verbose = std::env::var("RUNNER_MANAGER_E2E_VERBOSE").is_ok_and(|v| v == "1");
        if std::thread::panicking() || verbose {
            eprintln!("[{}] daemon log:\n{}", self.app, self.daemon_log());
        }
        delete_prefixed(&self.lxd, &self.prefix());
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        // A `POST /reconcile` or `/flush` waits for Incus, which can stall for a minute.
        .timeout(WAIT)
        .build()
        .expect("http client")
}

/// One sample of an OpenMetrics exposition.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses OpenMetrics text strictly enough to catch a broken exposition: `# EOF` is the last
/// line and appears once, every sample belongs to a family declared by `# TYPE`, label sets are
/// well formed, and values are numbers.
fn parse_openmetrics(text: &str) -> Result<Vec<Sample>, String> {
    const TYPES: [&str; 8] = [
        "counter",
        "gauge",
        "histogram",
        "info",
        "summary",
        "unknown",
        "stateset",
        "gaugehistogram",
    ];
    const SUFFIXES: [&str; 6] = ["_total", "_created", "_bucket", "_count", "_sum", "_info"];
    if !text.ends_with("# EOF\n") {
        return Err("no trailing # EOF".into());
    }
    let lines: Vec<&str> = text.lines().collect();
    if lines.iter().filter(|l| **l == "# EOF").count() != 1 {
        return Err("more than one # EOF".into());
    }
    let mut families: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = Vec::new();
    for line in &lines[..lines.len() - 1] {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("TYPE"), Some(name), Some(kind)) if TYPES.contains(&kind) => {
                    if families.insert(name.to_owned(), kind.to_owned()).is_some() {
                        return Err(format!("family {name} declared twice"));
                    }
                }
                (Some("HELP" | "UNIT"), Some(_), _) => {}
                _ => return Err(format!("malformed comment line: {line}")),
            }
            continue;
        }
        let (name, labels, rest) = match line.find('{') {
            Some(open) => {
                let close = line
                    .rfind('}')
                    .ok_or_else(|| format!("unclosed labels: {line}"))?;
                (&line[..open], &line[open + 1..close], &line[close + 1..])
            }
            None => {
                let space = line.find(' ').ok_or_else(|| format!("no value: {line}"))?;
                (&line[..space], "", &line[space..])
            }
        };
        let value_text = rest
            .split_whitespace()
            .next()
            .ok_or_else(|| format!("no value: {line}"))?;
        let value: f64 = value_text
            .parse()
            .map_err(|_| format!("value {value_text:?} is not a number: {line}"))?;
        let declared = families.contains_key(name)
            || SUFFIXES.iter().any(|suffix| {
                name.strip_suffix(suffix)
                    .is_some_and(|family| families.contains_key(family))
            });
        if !declared {
            return Err(format!("sample of an undeclared family: {line}"));
        }
        let mut parsed = BTreeMap::new();
        if !labels.is_empty() {
            for pair in labels.split("\",") {
                let (key, value) = pair
                    .split_once("=\"")
                    .ok_or_else(|| format!("malformed label {pair:?} in {line}"))?;
                let value = value.strip_suffix('"').unwrap_or(value);
                if parsed.insert(key.to_owned(), value.to_owned()).is_some() {
                    return Err(format!("label {key} twice in {line}"));
                }
            }
        }
        samples.push(Sample {
            name: name.to_owned(),
            labels: parsed,
            value,
        });
    }
    Ok(samples)
}

/// The value of the sample `name` whose labels include `labels`; 0 when absent (a counter or
/// gauge family member that was never touched).
fn metric(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let matching: Vec<&Sample> = samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    assert!(
        matching.len() <= 1,
        "{name}{labels:?} is ambiguous: {matching:?}"
    );
    matching.first().map_or(0.0, |s| s.value)
}

async fn get_metrics(client: &reqwest::Client, base: &str) -> Vec<Sample> {
    let response = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(response.status(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text; version=1.0.0"),
        "content type {content_type:?}"
    );
    let text = response.text().await.expect("metrics body");
    parse_openmetrics(&text)
        .unwrap_or_else(|err| panic!("/metrics is not OpenMetrics: {err}\n{text}"))
}

async fn health(client: &reqwest::Client, base: &str) -> Option<Value> {
    let response = client.get(format!("{base}/health")).send().await.ok()?;
    response.json().await.ok()
}

/// Waits until `/health` says `passes >= n` and no pass is in flight.
async fn wait_passes(client: &reqwest::Client, base: &str, n: u64, env: &Env) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(health) = health(client, base).await {
            let daemon = &health["daemon"];
            if daemon["passes"].as_u64().unwrap_or(0) >= n && daemon["in_flight"] == json!(false) {
                env.clock.mark(&format!("{n} pass(es) done"));
                return health;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the daemon never finished {n} passes:\n{}",
            env.daemon_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for the daemon's startup pass and `n` online runners. When a pass had a failed step
/// (Incus occasionally fails a container start under load, and the daemon's next pass is an
/// interval away), asks for one more pass over `POST /reconcile`. Returns the passes done.
async fn daemon_fleet(client: &reqwest::Client, base: &str, n: usize, env: &Env) -> u64 {
    let mut passes = wait_passes(client, base, 1, env).await["daemon"]["passes"]
        .as_u64()
        .expect("passes");
    let deadline = Instant::now() + WAIT;
    let mut heals = 0;
    loop {
        let runners = env.registrations();
        if runners.len() == n && runners.iter().all(|r| r.status == "online") {
            env.clock.mark(&format!("{n} runner(s) online"));
            return passes;
        }
        let failures = env.daemon_log().matches("Reconcile step failed").count();
        if failures > heals && heals < 3 {
            heals = failures;
            env.clock.mark("a pass had a failed step; POST /reconcile");
            let response = client
                .post(format!("{base}/reconcile"))
                .bearer_auth(API_TOKEN)
                .send()
                .await
                .expect("POST /reconcile");
            assert_eq!(response.status(), 200);
            passes = wait_passes(client, base, passes + 1, env).await["daemon"]["passes"]
                .as_u64()
                .expect("passes");
        }
        assert!(
            Instant::now() < deadline,
            "{n} runners never came online: {runners:#?}\n{}",
            env.daemon_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn workflow_job(action: &str, id: u64, labels: &[&str]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "action": action,
        "workflow_job": {
            "id": id,
            "run_id": id + 1000,
            "name": "build",
            "status": action,
            "labels": labels,
            "runner_id": null,
            "runner_name": null,
        },
        "repository": { "full_name": REPO },
    }))
    .expect("json")
}

async fn post_webhook(
    client: &reqwest::Client,
    base: &str,
    body: Vec<u8>,
    signature: &str,
) -> reqwest::Response {
    client
        .post(format!("{base}/webhook"))
        .header("x-github-event", "workflow_job")
        .header("x-github-delivery", "e2e-delivery")
        .header("x-hub-signature-256", signature)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("POST /webhook")
}

/// The commands on their own: binary update, reconcile to 2, status, an idempotent second
/// reconcile, and flush.
async fn commands_reconcile_status_and_flush_real_runners(image: &str) {
    let env = Env::new(image).await;
    env.write_config(2, None);

    let check = env.run(&["runner-bin", "check"]).await;
    assert_eq!(check.code, Some(1), "no binary yet: {check:#?}");
    let update = env
        .run(&["runner-bin", "update", "--json"])
        .await
        .json("runner-bin update");
    assert_eq!(update["updated"], json!(true), "{update}");
    assert_eq!(
        update["binary"]["filename"],
        json!(format!("actions-runner-linux-x64-{RUNNER_VERSION}.tar.gz"))
    );
    let check = env.run(&["runner-bin", "check"]).await;
    assert_eq!(check.code, Some(0), "binary cached: {check:#?}");

    let first = env.reconcile_until_clean().await;
    assert_eq!(first["quantity"], json!(2), "{first}");
    assert_eq!(first["delta"], json!(2), "{first}");
    assert_eq!(
        first["created"]
            .as_u64()
            .zip(first["failed"].as_u64())
            .map(|(c, f)| c + f),
        Some(2),
        "{first}"
    );
    let online = env.wait_online(2).await;
    assert!(online.iter().all(|r| r.ephemeral && !r.busy), "{online:#?}");

    let status = env.run(&["status", "--json"]).await.json("status");
    let runners = status["runners"].as_array().expect("runners");
    assert_eq!(runners.len(), 2, "{status}");
    let mut names: Vec<&str> = runners
        .iter()
        .map(|r| r["name"].as_str().expect("name"))
        .collect();
    names.sort_unstable();
    let mut expected: Vec<&str> = online.iter().map(|r| r.name.as_str()).collect();
    expected.sort_unstable();
    assert_eq!(names, expected, "status lists the registered runners");
    for runner in runners {
        assert!(
            runner["name"]
                .as_str()
                .is_some_and(|n| n.starts_with(&format!("{}-0-", env.app))),
            "{runner}"
        );
        assert_eq!(runner["instance_status"], json!("running"), "{runner}");
        assert_eq!(runner["github_status"], json!("online"), "{runner}");
        assert_eq!(runner["busy"], json!(false), "{runner}");
    }
    assert_eq!(status["dangling"], json!([]), "{status}");
    assert_eq!(status["orphans"], json!([]), "{status}");
    assert_eq!(env.instances().await.len(), 2);

    let second = env
        .run(&["reconcile", "--json"])
        .await
        .json("second reconcile");
    assert_eq!(second["delta"], json!(0), "{second}");
    assert_eq!(second["created"], json!(0), "{second}");
    assert_eq!(second["removed"], json!(0), "{second}");
    assert_eq!(second["failed"], json!(0), "{second}");
    assert_eq!(env.registrations().len(), 2, "still the same two");

    env.flush_all(2).await;
    env.assert_nothing_left().await;
    env.clock.mark("done");
}

/// The daemon: startup pass, signed and badly signed webhooks, bearer-protected POSTs, metrics
/// that match the fleet, flush over HTTP and a clean stop.
async fn daemon_webhook_metrics_and_auth(image: &str) {
    let mut env = Env::new(image).await;
    let base = env.start_daemon_on_hourly_timer(1);
    let client = http();

    // The startup pass updates the binary and creates the runner.
    let passes = daemon_fleet(&client, &base, 1, &env).await;
    assert_eq!(env.instances().await.len(), 1);
    let baseline = get_metrics(&client, &base).await;
    let counter = |samples: &[Sample], name: &str, labels: &[(&str, &str)]| {
        metric(samples, name, labels) - metric(&baseline, name, labels)
    };

    // A badly signed delivery: 401, and no reconcile asked for.
    let body = workflow_job("queued", 77, &["self-hosted", &env.app]);
    let bad = github_sim::sign_webhook(b"not-the-secret", &body);
    let response = post_webhook(&client, &base, body.clone(), &bad).await;
    assert_eq!(response.status(), 401);
    let response = client
        .post(format!("{base}/webhook"))
        .header("x-github-event", "workflow_job")
        .body(body.clone())
        .send()
        .await
        .expect("POST /webhook");
    assert_eq!(response.status(), 401, "an unsigned delivery");
    let samples = get_metrics(&client, &base).await;
    assert_eq!(
        metric(
            &samples,
            "runner_manager_reconcile_triggers_total",
            &[("source", "webhook")]
        ),
        0.0
    );
    assert_eq!(
        metric(
            &samples,
            "runner_manager_webhook_deliveries_total",
            &[("event", "workflow_job"), ("outcome", "unauthorized")]
        ),
        2.0
    );

    // A signed `queued` delivery with our labels: a pass starts (the simulator sees its list
    // call) within a second.
    let before = env.list_calls();
    let good = github_sim::sign_webhook(WEBHOOK_SECRET.as_bytes(), &body);
    let sent = Instant::now();
    let response = post_webhook(&client, &base, body, &good).await;
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.expect("json answer");
    assert_eq!(answer["outcome"], json!("reconcile_triggered"));
    let reaction = loop {
        if env.list_calls() > before {
            break sent.elapsed();
        }
        assert!(
            sent.elapsed() < Duration::from_secs(10),
            "no reconcile after the webhook:\n{}",
            env.daemon_log()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    env.clock
        .mark(&format!("webhook -> list call in {reaction:?}"));
    assert!(
        reaction < Duration::from_secs(1),
        "the webhook's reconcile started after {reaction:?}"
    );
    // A delivery with foreign labels asks for nothing.
    let foreign = workflow_job("queued", 78, &["self-hosted", "windows"]);
    let signature = github_sim::sign_webhook(WEBHOOK_SECRET.as_bytes(), &foreign);
    let response = post_webhook(&client, &base, foreign, &signature).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.expect("json answer");
    assert_eq!(answer["outcome"], json!("labels_not_matched"));

    // After that pass the gauges show the fleet as it is: one online idle runner.
    wait_passes(&client, &base, passes + 1, &env).await;
    let samples = get_metrics(&client, &base).await;
    let registrations = env.registrations();
    let idle = registrations
        .iter()
        .filter(|r| r.status == "online" && !r.busy)
        .count();
    let busy = registrations.iter().filter(|r| r.busy).count();
    assert_eq!((idle, busy), (1, 0), "{registrations:#?}");
    let gauge = |state: &str| metric(&samples, "runner_manager_runners", &[("state", state)]);
    assert_eq!(gauge("idle"), 1.0, "idle gauge");
    assert_eq!(gauge("busy"), 0.0, "busy gauge");
    assert_eq!(gauge("booting"), 0.0, "booting gauge");
    assert_eq!(gauge("unhealthy"), 0.0, "unhealthy gauge");
    assert_eq!(
        counter(
            &samples,
            "runner_manager_reconciles_total",
            &[("result", "ok")]
        ),
        1.0,
        "one more ok pass"
    );
    assert_eq!(
        counter(&samples, "runner_manager_runners_created_total", &[]),
        0.0,
        "nothing created"
    );
    assert_eq!(
        metric(
            &samples,
            "runner_manager_reconcile_triggers_total",
            &[("source", "webhook")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &samples,
            "runner_manager_webhook_deliveries_total",
            &[
                ("event", "workflow_job"),
                ("outcome", "reconcile_triggered")
            ]
        ),
        1.0
    );
    let binary: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == "runner_manager_runner_binary_info" && s.value == 1.0)
        .collect();
    assert_eq!(binary.len(), 1, "one binary in use: {binary:?}");
    assert!(
        binary[0]
            .labels
            .values()
            .any(|v| v.contains(RUNNER_VERSION)),
        "{binary:?}"
    );
    assert!(
        metric(&samples, "runner_manager_github_rate_limit_remaining", &[]) > 0.0,
        "rate limit remaining is tracked"
    );

    // GET /runners is the status document.
    let runners: Value = client
        .get(format!("{base}/runners"))
        .send()
        .await
        .expect("GET /runners")
        .json()
        .await
        .expect("status json");
    assert_eq!(runners["runners"].as_array().map(Vec::len), Some(1));
    assert_eq!(runners["runners"][0]["github_status"], json!("online"));
    assert_eq!(runners["runners"][0]["name"], json!(registrations[0].name));

    // POST endpoints need the bearer token.
    for path in ["/reconcile", "/flush", "/flush?idle_only=true"] {
        let response = client
            .post(format!("{base}{path}"))
            .send()
            .await
            .expect("POST");
        assert_eq!(response.status(), 401, "{path} without a token");
        let response = client
            .post(format!("{base}{path}"))
            .bearer_auth("wrong-token")
            .send()
            .await
            .expect("POST");
        assert_eq!(response.status(), 401, "{path} with a wrong token");
    }
    assert_eq!(env.registrations().len(), 1, "the 401s changed nothing");

    let response = client
        .post(format!("{base}/reconcile"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("POST /reconcile");
    assert_eq!(response.status(), 200);
    let result: Value = response.json().await.expect("json");
    assert_eq!(result["delta"], json!(0), "{result}");
    assert_eq!(result["created"], json!(0), "{result}");

    let response = client
        .post(format!("{base}/flush"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("POST /flush");
    assert_eq!(response.status(), 200);
    let result: Value = response.json().await.expect("json");
    assert_eq!(result["removed"], json!(1), "{result}");
    assert_eq!(env.instances().await.len(), 0);
    assert_eq!(env.registrations().len(), 0);
    let samples = get_metrics(&client, &base).await;
    assert_eq!(
        counter(
            &samples,
            "runner_manager_reconciles_total",
            &[("result", "ok")]
        ),
        2.0
    );
    assert_eq!(
        counter(
            &samples,
            "runner_manager_reconcile_triggers_total",
            &[("source", "api")]
        ),
        1.0
    );

    // An idle daemon stops at once on SIGINT, with status 0, and does not flush or reconcile.
    let calls = env.list_calls();
    env.signal_daemon("INT");
    let (code, took) = env.wait_daemon_exit(Duration::from_secs(30)).await;
    env.clock.mark(&format!("idle daemon exited in {took:?}"));
    assert_eq!(code, Some(0), "{}", env.daemon_log());
    assert_eq!(env.list_calls(), calls, "no pass at shutdown");
    env.assert_nothing_left().await;
    env.clock.mark("done");
}

/// SIGTERM while the startup pass creates three runners: the pass finishes within the grace
/// period, the process exits 0, and the next pass finds exactly three whole runners.
async fn sigterm_during_reconcile_leaves_no_half_created_runner(image: &str) {
    const QUANTITY: usize = 3;
    let mut env = Env::new(image).await;
    let base = env.start_daemon_on_hourly_timer(u32::try_from(QUANTITY).expect("small"));
    let client = http();

    // Wait until the startup pass is creating instances.
    let deadline = Instant::now() + WAIT;
    loop {
        let in_flight = health(&client, &base)
            .await
            .is_some_and(|h| h["daemon"]["in_flight"] == json!(true));
        if in_flight && !env.instances().await.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the startup pass never started creating instances:\n{}",
            env.daemon_log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let registered = env.registrations().len();
    env.clock.mark(&format!(
        "SIGTERM with the pass in flight ({registered} of {QUANTITY} registered)"
    ));
    env.signal_daemon("TERM");
    // The bound: the daemon's shutdown grace (120 s) plus the server drain (10 s).
    let (code, took) = env.wait_daemon_exit(Duration::from_secs(130)).await;
    env.clock.mark(&format!("daemon exited in {took:?}"));
    let log = env.daemon_log();
    assert_eq!(code, Some(0), "exit status; log:\n{log}");
    assert!(
        log.contains("waiting for the in-flight reconcile"),
        "the signal arrived during the pass; log:\n{log}"
    );
    assert!(
        !log.contains("Reconcile failed"),
        "the pass was not cut short; log:\n{log}"
    );

    env.reconcile_until_clean().await;
    let status = env.run(&["status", "--json"]).await.json("status");
    assert_eq!(
        status["runners"].as_array().map(Vec::len),
        Some(QUANTITY),
        "{status}"
    );
    assert_eq!(status["dangling"], json!([]), "{status}");
    assert_eq!(status["orphans"], json!([]), "{status}");
    for runner in status["runners"].as_array().expect("runners") {
        assert_eq!(runner["instance_status"], json!("running"), "{runner}");
        assert!(runner["github_status"].is_string(), "{runner}");
    }
    let instances = env.instances().await;
    assert_eq!(instances.len(), QUANTITY, "{instances:#?}");
    let registrations = env.registrations();
    assert_eq!(registrations.len(), QUANTITY, "{registrations:#?}");
    let mut instance_names: Vec<&str> = instances.iter().map(|i| i.name.as_str()).collect();
    let mut registration_names: Vec<&str> = registrations.iter().map(|r| r.name.as_str()).collect();
    instance_names.sort_unstable();
    registration_names.sort_unstable();
    assert_eq!(
        instance_names, registration_names,
        "every instance is registered"
    );

    env.flush_all(u64::try_from(QUANTITY).expect("small")).await;
    env.assert_nothing_left().await;
    env.clock.mark("done");
}

/// The simulator delivers its own signed webhooks for a job: `queued` asks for a pass, the
/// runner runs the job, and `completed` makes the daemon replace the finished ephemeral runner,
/// all without the timer (the interval is an hour).
async fn daemon_replaces_a_finished_runner_on_the_completed_webhook(image: &str) {
    let mut env = Env::new(image).await;
    let base = env.start_daemon_on_hourly_timer(1);
    let client = http();
    let passes = daemon_fleet(&client, &base, 1, &env).await;
    let first = env.registrations().remove(0);
    let created_before = metric(
        &get_metrics(&client, &base).await,
        "runner_manager_runners_created_total",
        &[],
    );

    env.sim.set_webhook(Some(github_sim::WebhookTarget {
        url: format!("{base}/webhook"),
        secret: github_sim::Secret::new(WEBHOOK_SECRET),
    }));
    let job = env
        .sim
        .enqueue_job(github_sim::JobSpec::new(
            &["self-hosted", &env.app],
            "echo hello from $(hostname)",
        ))
        .expect("job enqueued");
    let done = env
        .sim
        .wait_for_job(job, WAIT)
        .await
        .expect("the job exists");
    env.clock.mark(&format!("job {job}: {:?}", done.status));
    assert_eq!(done.status, github_sim::JobStatus::Completed, "{done:#?}");
    assert_eq!(done.conclusion.as_deref(), Some("success"), "{done:#?}");
    assert_eq!(done.runner_name.as_deref(), Some(first.name.as_str()));
    assert!(done.output.contains(&first.name), "{done:#?}");

    // The finished runner is replaced: one new online runner, the old instance gone.
    let deadline = Instant::now() + WAIT;
    let replacement = loop {
        let runners = env.registrations();
        let instances = env.instances().await;
        if let [runner] = runners.as_slice() {
            if runner.name != first.name
                && runner.status == "online"
                && instances.len() == 1
                && instances[0].name == runner.name
            {
                break runner.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "the finished runner was never replaced: {runners:#?} {:?}\n{}",
            instances.iter().map(|i| &i.name).collect::<Vec<_>>(),
            env.daemon_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    env.clock
        .mark(&format!("{} replaced by {}", first.name, replacement.name));
    // The pass that created it has ended once the counter moved (metrics are recorded at the
    // end of a pass; `queued` and `completed` may share a pass, so passes are not counted).
    let deadline = Instant::now() + WAIT;
    while metric(
        &get_metrics(&client, &base).await,
        "runner_manager_runners_created_total",
        &[],
    ) < created_before + 1.0
    {
        assert!(Instant::now() < deadline, "{}", env.daemon_log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_passes(&client, &base, passes + 1, &env).await;

    let deliveries = env.sim.webhook_deliveries();
    let mut actions: Vec<(&str, Option<u16>)> = deliveries
        .iter()
        .filter(|d| d.job_id == job)
        .map(|d| (d.action.as_str(), d.status))
        .collect();
    actions.sort_unstable();
    assert_eq!(
        actions,
        [
            ("completed", Some(202)),
            ("in_progress", Some(200)),
            ("queued", Some(202))
        ],
        "{deliveries:#?}"
    );
    let samples = get_metrics(&client, &base).await;
    let outcome = |outcome: &str| {
        metric(
            &samples,
            "runner_manager_webhook_deliveries_total",
            &[("event", "workflow_job"), ("outcome", outcome)],
        )
    };
    assert_eq!(outcome("reconcile_triggered"), 1.0);
    assert_eq!(outcome("cleanup_triggered"), 1.0);
    assert_eq!(outcome("ignored"), 1.0, "in_progress is ignored");
    assert_eq!(outcome("unauthorized"), 0.0);
    assert_eq!(
        metric(
            &samples,
            "runner_manager_reconcile_triggers_total",
            &[("source", "timer")]
        ),
        0.0,
        "no timer pass"
    );
    assert_eq!(
        metric(&samples, "runner_manager_runners_created_total", &[]) - created_before,
        1.0,
        "the replacement"
    );

    env.signal_daemon("TERM");
    let (code, _) = env.wait_daemon_exit(Duration::from_secs(130)).await;
    assert_eq!(code, Some(0), "{}", env.daemon_log());
    env.flush_all(1).await;
    env.assert_nothing_left().await;
    env.clock.mark("done");
}

#[test]
fn the_openmetrics_parser_rejects_broken_expositions() {
    let good =
        "# HELP a A.\n# TYPE a counter\na_total{k=\"v\",w=\"x\"} 3\n# TYPE g gauge\ng 1.5\n# EOF\n";
    let samples = parse_openmetrics(good).expect("valid");
    assert_eq!(metric(&samples, "a_total", &[("k", "v")]), 3.0);
    assert_eq!(metric(&samples, "a_total", &[("k", "v"), ("w", "x")]), 3.0);
    assert_eq!(metric(&samples, "g", &[]), 1.5);
    assert_eq!(metric(&samples, "missing", &[]), 0.0);
    for bad in [
        "# TYPE g gauge\ng 1\n",
        "# TYPE g gauge\ng 1\n# EOF\n# EOF\n",
        "g 1\n# EOF\n",
        "# TYPE g gauge\ng one\n# EOF\n",
        "# TYPE g gauge\ng{k=v} 1\n# EOF\n",
        "# TYPE g widget\ng 1\n# EOF\n",
        "# TYPE g gauge\n# TYPE g gauge\ng 1\n# EOF\n",
    ] {
        assert!(parse_openmetrics(bad).is_err(), "accepted {bad:?}");
    }
}
