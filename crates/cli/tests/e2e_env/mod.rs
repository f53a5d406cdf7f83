//! The world of an end-to-end test of the binary: a simulator, a temp dir with the config,
//! real Incus, the daemon when started; and the helpers the end-to-end suites share (the
//! OpenMetrics parser, `/health` polling, signed webhooks).
#![allow(dead_code)] // each suite uses a part

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use github_sim::{RunnerView, SimHandle};
use serde_json::{json, Value};
use test_support::config::BinaryConfig;
use test_support::incus::{delete_prefixed, random_app};
use test_support::sim;

pub const BIN: &str = env!("CARGO_BIN_EXE_runner-manager");
pub const REPO: &str = "e2e/app";
pub const RUNNER_VERSION: &str = "2.331.0";
pub const API_TOKEN: &str = "e2e-api-token-0123456789";
pub const WEBHOOK_SECRET: &str = "e2e-webhook-secret-abcdef";
/// Upper bound of one CLI command (a reconcile creates containers on a loaded machine).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(240);
/// Upper bound of waiting for runners, passes and processes.
pub const WAIT: Duration = Duration::from_secs(180);

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Milliseconds since the Unix epoch (what the daemons' logs and events carry).
pub fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis(),
    )
    .expect("fits")
}

/// Sends `signal` (e.g. `TERM`) to process `pid` with kill(1), and asserts it was delivered.
pub fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// Polls `check` every `every` until it gives `Ok`, at most `bound`; then panics naming `what`,
/// the last `Err` and `logs()`.
pub async fn eventually<T, F, Fut>(
    what: &str,
    bound: Duration,
    every: Duration,
    logs: &dyn Fn() -> String,
    mut check: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + bound;
    loop {
        match check().await {
            Ok(done) => return done,
            Err(last) => assert!(
                Instant::now() < deadline,
                "{what}: not within {bound:?}: {last}\n{}",
                logs()
            ),
        }
        tokio::time::sleep(every).await;
    }
}

/// Whether `runners` are exactly `n` registrations, all online.
pub fn all_online(runners: &[RunnerView], n: usize) -> bool {
    runners.len() == n && runners.iter().all(|r| r.status == "online")
}

/// Whether `runners` are exactly `n` registrations, all online and idle.
pub fn all_idle(runners: &[RunnerView], n: usize) -> bool {
    all_online(runners, n) && runners.iter().all(|r| !r.busy)
}

/// `text` (a config) with `socket = "<socket>"` and the `extra` keys first in its `[lxd]` table.
pub fn with_lxd_keys(text: &str, socket: &Path, extra: &str) -> String {
    let keys = format!("[lxd]\nsocket = \"{}\"\n{extra}", socket.display());
    text.replacen("[lxd]\n", &keys, 1)
}

/// A `[[pools]]` table: pool `name` (also its one label) of baked images, `registration`
/// (`token` or `jit`), `min_idle` and `max`, then `extra` keys.
pub fn baked_pool(name: &str, registration: &str, min_idle: u32, max: u32, extra: &str) -> String {
    format!(
        r#"
[[pools]]
name = "{name}"
labels = ["{name}"]
registration = "{registration}"
min_idle = {min_idle}
max = {max}
image_mode = "baked"
{extra}
"#
    )
}

/// Starts `runner-manager --config CONFIG ARGS...` (a daemon), its output going to `log`.
pub fn spawn_daemon(config: &Path, args: &[&str], log: &Path) -> Child {
    let log = std::fs::File::create(log).expect("daemon log");
    test_support::config::binary_command(Path::new(BIN), config, args)
        .stdout(log.try_clone().expect("log handle"))
        .stderr(log)
        .spawn()
        .expect("runner-manager starts")
}

/// Logs a phase with the time since the test started (visible with `--nocapture`).
pub struct Clock {
    pub app: String,
    pub start: Instant,
}

impl Clock {
    pub fn mark(&self, what: &str) {
        eprintln!(
            "[{} +{:6.2}s] {what}",
            self.app,
            self.start.elapsed().as_secs_f64()
        );
    }
}

/// The exit status and output of one command.
#[derive(Debug)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Asserts exit 0 and parses stdout as one JSON document.
    pub fn json(&self, what: &str) -> Value {
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
pub struct ServerSection {
    pub port: u16,
    pub interval_seconds: u64,
}

/// One test's world: a simulator, a temp dir (config, state, token, logs), an app name, and the
/// daemon if started. Dropping it kills the daemon and deletes the app's instances.
pub struct Env {
    pub app: String,
    /// The image alias written into the config (`[lxd] image`).
    pub image: String,
    pub sim: SimHandle,
    pub lxd: lxd::Client,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub daemon: Option<Child>,
    pub clock: Clock,
}

impl Env {
    pub async fn new(image: &str) -> Self {
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

    pub fn prefix(&self) -> String {
        format!("{}-", self.app)
    }

    /// The config text of this world ([`BinaryConfig`]): its state in `state_dir`, `quantity`
    /// runners, or with `None` the `[[pools]]` form (no `[runners] quantity`). `[runners]` is the
    /// last table.
    pub fn config_text(&self, state_dir: &Path, quantity: Option<u32>) -> String {
        let config = BinaryConfig {
            app: &self.app,
            repo: REPO,
            image: &self.image,
            state_dir,
            token_file: &self.dir.path().join("github-token"),
            sim: &self.sim,
            quantity: quantity.unwrap_or(0),
        };
        match quantity {
            Some(_) => config.render(),
            None => config.render_pools(),
        }
    }

    /// A `[server]` section on `server`'s port and interval, with this world's API token and
    /// webhook secret files.
    pub fn server_text(&self, server: &ServerSection) -> String {
        let path = |name: &str| self.dir.path().join(name).display().to_string();
        format!(
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
        )
    }

    pub fn write_config(&self, quantity: u32, server: Option<&ServerSection>) {
        let mut text = self.config_text(&self.dir.path().join("state"), Some(quantity));
        if let Some(server) = server {
            text.push_str(&self.server_text(server));
        }
        std::fs::write(&self.config, text).expect("config written");
    }

    /// A config with `[[pools]]` (`pools`, TOML) instead of `[runners] quantity`, and a
    /// `[server]` section with `server_extra` keys appended (e.g. `public_url`).
    pub fn write_pools_config(&self, pools: &str, server: &ServerSection, server_extra: &str) {
        let mut text = self.config_text(&self.dir.path().join("state"), None);
        text.push_str(pools);
        text.push_str(&self.server_text(server));
        text.push_str(server_extra);
        std::fs::write(&self.config, text).expect("config written");
    }

    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command: tokio::process::Command =
            test_support::config::binary_command(std::path::Path::new(BIN), &self.config, args)
                .into();
        command.kill_on_drop(true);
        command
    }

    /// Runs `runner-manager --config <config> <args>` to its end.
    pub async fn run(&self, args: &[&str]) -> Output {
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

    /// `runner-bin update --json` (caches the runner binary from the simulator, as an
    /// operator's first step): its document.
    pub async fn update_runner_bin(&self) -> Value {
        self.run(&["runner-bin", "update", "--json"])
            .await
            .json("runner-bin update")
    }

    /// Writes the config for `quantity` runners with a `[server]` on a free port and a timer of
    /// an hour (so only the startup pass, webhooks and POSTs make passes), starts the daemon, and
    /// returns its base URL.
    pub fn start_daemon_on_hourly_timer(&mut self, quantity: u32) -> String {
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
    pub fn start_daemon(&mut self) {
        let child = spawn_daemon(&self.config, &["run"], &self.daemon_log_path());
        self.daemon = Some(child);
        self.clock.mark("daemon started");
    }

    pub fn daemon_log_path(&self) -> PathBuf {
        self.dir.path().join("daemon.log")
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.daemon_log_path()).unwrap_or_default()
    }

    /// Sends `signal` (e.g. `TERM`) to the daemon with kill(1).
    pub fn signal_daemon(&self, signal: &str) {
        self::signal(
            self.daemon.as_ref().expect("the daemon was started").id(),
            signal,
        );
    }

    /// Stops the daemon with SIGTERM and asserts it exits 0 within its shutdown grace (120 s)
    /// plus the server drain (10 s).
    pub async fn stop_daemon(&mut self) {
        self.signal_daemon("TERM");
        let (code, _) = self.wait_daemon_exit(Duration::from_secs(130)).await;
        assert_eq!(code, Some(0), "{}", self.daemon_log());
    }

    /// Waits for the daemon to exit; its exit code and how long it took.
    pub async fn wait_daemon_exit(&mut self, bound: Duration) -> (Option<i32>, Duration) {
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
    pub fn registrations(&self) -> Vec<RunnerView> {
        let prefix = self.prefix();
        self.sim
            .runners()
            .into_iter()
            .filter(|r| r.name.starts_with(&prefix))
            .collect()
    }

    /// Waits until the app has exactly `n` registrations, all online and idle, and instances
    /// that `instances_ok` accepts; `logs` are shown on failure.
    pub async fn wait_idle_fleet(
        &self,
        what: &str,
        n: usize,
        bound: Duration,
        logs: &dyn Fn() -> String,
        instances_ok: impl Fn(&[lxd::Instance]) -> bool,
    ) {
        eventually(what, bound, Duration::from_millis(200), logs, || async {
            let instances = self.instances().await;
            let registrations = self.registrations();
            if instances_ok(&instances) && all_idle(&registrations, n) {
                Ok(())
            } else {
                let names: Vec<&str> = instances.iter().map(|i| i.name.as_str()).collect();
                Err(format!(
                    "instances {names:?}, registrations {registrations:#?}"
                ))
            }
        })
        .await;
        self.clock.mark(what);
    }

    /// How many of `jobs` the simulator has completed.
    pub fn completed(&self, jobs: &[u64]) -> usize {
        let done = |id: &&u64| {
            self.sim
                .job(**id)
                .is_some_and(|j| j.status == github_sim::JobStatus::Completed)
        };
        jobs.iter().filter(done).count()
    }

    /// Incus instances of this app.
    pub async fn instances(&self) -> Vec<lxd::Instance> {
        let prefix = self.prefix();
        let mut all = self.lxd.list_instances().await.expect("listing instances");
        all.retain(|i| i.name.starts_with(&prefix));
        all
    }

    /// Waits until exactly `n` registrations of this app are online (and none offline).
    pub async fn wait_online(&self, n: usize) -> Vec<RunnerView> {
        let what = format!("{n} runner(s) online");
        self.eventually(&what, WAIT, Duration::from_millis(100), || async {
            let runners = self.registrations();
            if all_online(&runners, n) {
                Ok(runners)
            } else {
                Err(format!("{runners:#?}"))
            }
        })
        .await
    }

    /// [`eventually`] with the daemon's log; marks `what` when it holds.
    pub async fn eventually<T, F, Fut>(
        &self,
        what: &str,
        bound: Duration,
        every: Duration,
        check: F,
    ) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, String>>,
    {
        let done = eventually(what, bound, every, &|| self.daemon_log(), check).await;
        self.clock.mark(what);
        done
    }

    /// Queues a job of the repository the runners serve (its deliveries are that repository's
    /// hook's) with `labels`, running `script`.
    pub fn enqueue(&self, labels: &[&str], script: &str) -> u64 {
        let spec = github_sim::JobSpec {
            scope: Some(REPO.to_owned()),
            ..github_sim::JobSpec::new(labels, script)
        };
        self.sim.enqueue_job(spec).expect("job enqueued")
    }

    /// `flush --json` until it removed `expected` runners in all. A removal that fails because
    /// Incus stalled (its API sometimes blocks for tens of seconds while other instances stop)
    /// makes flush exit 1 naming the runner; the next flush removes it.
    pub async fn flush_all(&self, expected: u64) {
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
    /// `reconcile --json`, a pass with failed steps included (exit 1): its document and output.
    pub async fn reconcile(&self) -> (Value, Output) {
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
        (doc, out)
    }

    pub async fn reconcile_until_clean(&self) -> Value {
        let mut first = None;
        for attempt in 1..=3 {
            let (doc, out) = self.reconcile().await;
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
    pub fn list_calls(&self) -> u64 {
        self.sim
            .request_counts()
            .iter()
            .filter(|(key, _)| key.starts_with("GET ") && key.ends_with("/actions/runners"))
            .map(|(_, count)| count.count)
            .sum()
    }

    /// [`Self::flush_all`] of `expected` runners, then [`Self::assert_nothing_left`]: the end of
    /// a test.
    pub async fn flush_all_and_finish(&self, expected: u64) {
        self.flush_all(expected).await;
        self.assert_nothing_left().await;
        self.clock.mark("done");
    }

    /// Asserts the app has no instance, no registration, and `status` agrees.
    pub async fn assert_nothing_left(&self) {
        assert_eq!(self.instances().await.len(), 0, "instances left");
        assert_eq!(self.registrations().len(), 0, "registrations left");
        let status = self.run(&["status", "--json"]).await.json("status");
        for key in ["runners", "dangling", "orphans"] {
            assert_eq!(status[key], json!([]), "status after flush: {status}");
        }
        // Configured pools are listed even when empty; none has a runner left.
        for pool in status["pools"].as_array().expect("pools") {
            assert_eq!(pool["runners"], json!([]), "status after flush: {status}");
        }
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

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        // A `POST /reconcile` or `/flush` waits for Incus, which can stall for a minute.
        .timeout(WAIT)
        .build()
        .expect("http client")
}

/// One sample of an OpenMetrics exposition.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses OpenMetrics text strictly enough to catch a broken exposition: `# EOF` is the last
/// line and appears once, every sample belongs to a family declared by `# TYPE`, label sets are
/// well formed, and values are numbers.
pub fn parse_openmetrics(text: &str) -> Result<Vec<Sample>, String> {
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
pub fn metric(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
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

/// `runner_manager_reconcile_triggers_total` of `source` (`webhook`, `api`, `timer`...).
pub fn triggers(samples: &[Sample], source: &str) -> f64 {
    metric(
        samples,
        "runner_manager_reconcile_triggers_total",
        &[("source", source)],
    )
}

/// `runner_manager_webhook_deliveries_total` of the `workflow_job` deliveries with `outcome`.
pub fn job_deliveries(samples: &[Sample], outcome: &str) -> f64 {
    let labels = [("event", "workflow_job"), ("outcome", outcome)];
    metric(samples, "runner_manager_webhook_deliveries_total", &labels)
}

pub async fn get_metrics(client: &reqwest::Client, base: &str) -> Vec<Sample> {
    let response = test_support::client::get_ok(client, &format!("{base}/metrics")).await;
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

pub async fn health(client: &reqwest::Client, base: &str) -> Option<Value> {
    let response = client.get(format!("{base}/health")).send().await.ok()?;
    response.json().await.ok()
}

/// `GET url`, answered with a JSON document.
pub async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
}

/// `POST base + path` with the API's bearer token.
pub async fn post_api(client: &reqwest::Client, base: &str, path: &str) -> reqwest::Response {
    client
        .post(format!("{base}{path}"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"))
}

/// Waits until `/health` says `passes >= n` and no pass is in flight; the passes done.
pub async fn wait_passes(client: &reqwest::Client, base: &str, n: u64, env: &Env) -> u64 {
    let what = format!("{n} pass(es) done");
    env.eventually(&what, WAIT, Duration::from_millis(100), || async {
        let health = health(client, base).await.unwrap_or_default();
        let daemon = &health["daemon"];
        match daemon["passes"].as_u64() {
            Some(passes) if passes >= n && daemon["in_flight"] == json!(false) => Ok(passes),
            _ => Err(format!("health {health}")),
        }
    })
    .await
}

/// Waits for the daemon's startup pass and `n` online runners. When a pass had a failed step
/// (Incus occasionally fails a container start under load, and the daemon's next pass is an
/// interval away), asks for one more pass over `POST /reconcile`. Returns the passes done.
pub async fn daemon_fleet(client: &reqwest::Client, base: &str, n: usize, env: &Env) -> u64 {
    let mut passes = wait_passes(client, base, 1, env).await;
    let deadline = Instant::now() + WAIT;
    let mut heals = 0;
    loop {
        let runners = env.registrations();
        if all_online(&runners, n) {
            env.clock.mark(&format!("{n} runner(s) online"));
            return passes;
        }
        let failures = env.daemon_log().matches("Reconcile step failed").count();
        if failures > heals && heals < 3 {
            heals = failures;
            env.clock.mark("a pass had a failed step; POST /reconcile");
            assert_eq!(post_api(client, base, "/reconcile").await.status(), 200);
            passes = wait_passes(client, base, passes + 1, env).await;
        }
        assert!(
            Instant::now() < deadline,
            "{n} runners never came online: {runners:#?}\n{}",
            env.daemon_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn workflow_job(action: &str, id: u64, labels: &[&str]) -> Vec<u8> {
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

pub async fn post_webhook(
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
