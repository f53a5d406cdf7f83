//! Benchmark 5, the demand-driven burst on REAL Incus (`burst`): the helpers of the binary.
//!
//! - [`pools_config`]: the two `[[pools]]` (`small`, token; `large`, JIT) and the `[server]`
//!   section of the real `runner-manager run` daemon.
//! - [`Daemon`]: the daemon process, killed when dropped (a failed run leaves nothing running).
//! - [`parse_metrics`], [`Histogram`]: the daemon's `/metrics` text and bucket-interpolated
//!   quantiles of its histograms.
//! - [`percentile`]: exact quantiles of measured values.
//! - [`passes`]: the daemon log's pass lines (`Reconcile finished.`), timed against the burst.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use anyhow::Context;
use manager::provider::InstanceProvider as _;

/// Locates the release `runner-manager` binary: `RUNNER_MANAGER_BIN`, else next to this
/// benchmark's own executable (`target/release/`).
pub fn locate_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("RUNNER_MANAGER_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().context("locating the benchmark's executable")?;
    let dir = exe
        .parent()
        .context("the benchmark's executable has no directory")?;
    let bin = dir.join("runner-manager");
    anyhow::ensure!(
        bin.is_file(),
        "{} not found: build it first with `cargo build --release -p runner-manager` \
         (or point RUNNER_MANAGER_BIN at a runner-manager binary)",
        bin.display()
    );
    Ok(bin)
}

/// Sizes of the two pools.
#[derive(Debug, Clone, Copy)]
pub struct PoolSizes {
    pub small_max: u32,
    pub large_max: u32,
}

/// The `[[pools]]` tables and the `[server]` section appended to
/// `test_support::config::BinaryConfig::render_pools()`: `small` (token registration,
/// priority 1) and `large` (JIT), both `min_idle = 0` and the default resources (those of the
/// floor's instances), and a timer of `interval_seconds` (an hour: only webhooks drive passes).
pub fn pools_config(sizes: PoolSizes, port: u16, dir: &Path, interval_seconds: u64) -> String {
    [
        pool_table("small", "token", sizes.small_max, "priority = 1\n"),
        pool_table("large", "jit", sizes.large_max, ""),
        server_section(port, dir, interval_seconds),
    ]
    .concat()
}

/// One `[[pools]]` table: pool `name` for jobs labelled `name`, `registration`,
/// `min_idle = 0`, `max`, then the lines of `more`.
pub fn pool_table(name: &str, registration: &str, max: u32, more: &str) -> String {
    format!(
        "\n[[pools]]\nname = \"{name}\"\nlabels = [\"{name}\"]\nregistration = \"{registration}\"\n\
         min_idle = 0\nmax = {max}\n{more}"
    )
}

/// The daemon's `[server]` section: `listen` on `port`, the API token and webhook secret in
/// `dir` (`api-token`, `webhook-secret`), a backstop pass every `interval_seconds`.
pub fn server_section(port: u16, dir: &Path, interval_seconds: u64) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
api_token_file = "{api}"
webhook_secret_file = "{secret}"
reconcile_interval_seconds = {interval_seconds}
"#,
        api = dir.join("api-token").display(),
        secret = dir.join("webhook-secret").display(),
    )
}

/// How many instances are named `prefix*`.
pub async fn instances_of(lxd: &lxd::Client, prefix: &str) -> anyhow::Result<usize> {
    Ok(lxd
        .list_instances()
        .await?
        .iter()
        .filter(|i| i.name.starts_with(prefix))
        .count())
}

/// github-sim on the Incus bridge (what the daemon's instances reach) with the benchmarks'
/// repository, from `config`.
pub async fn bridge_sim(config: github_sim::SimConfig) -> anyhow::Result<github_sim::SimHandle> {
    github_sim::Sim::start(
        config
            .with_listen(crate::real::BRIDGE.parse()?)
            .with_repo(crate::real::REPO),
    )
    .await
    .context("starting github-sim on the Incus bridge (run `sudo ./scripts/incus-env.sh up`)")
}

/// The profiles of the daemon's instances and of the floor's: `default` and the resource
/// profile of `[runners]`' defaults (1 CPU, 256 MiB, 1 GiB).
pub async fn daemon_profiles(lxd: &lxd::Client) -> anyhow::Result<Vec<String>> {
    let resources = manager::Resources::new(1, "256MiB", "1GiB")?;
    let profile = manager::adapters::LxdProvider::new(lxd.clone())
        .ensure_profile(&resources, manager::InstanceType::Container, false)
        .await?;
    Ok(vec!["default".to_owned(), profile])
}

/// Runs `runner-manager --config <config> runner-bin update` (the runner tarball into the
/// state directory's cache, as an operator does before `run`); its stderr on failure.
pub async fn runner_bin_update(bin: &Path, config: &Path) -> anyhow::Result<()> {
    let update = tokio::process::Command::new(bin)
        .arg("--config")
        .arg(config)
        .args(["runner-bin", "update", "--json"])
        .env("NO_COLOR", "1")
        .env_remove("RUNNER_MANAGER_GITHUB_TOKEN")
        .env_remove("RUNNER_MANAGER_CONFIG")
        .output()
        .await
        .context("runner-manager runner-bin update")?;
    anyhow::ensure!(
        update.status.success(),
        "runner-bin update: {}",
        String::from_utf8_lossy(&update.stderr)
    );
    Ok(())
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `runner-manager --config <config> run`, logging to a file; killed (SIGKILL) when dropped if
/// [`Daemon::stop`] did not end it.
pub struct Daemon {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(bin: &Path, config: &Path, log: &Path) -> anyhow::Result<Self> {
        let file = std::fs::File::create(log).context("creating the daemon log")?;
        let child = test_support::config::binary_command(bin, config, &["run"])
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {} run", bin.display()))?;
        Ok(Self {
            child: Some(child),
            log: log.to_owned(),
        })
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The daemon still runs.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGTERM, then up to `grace` for it to exit, then SIGKILL.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // kill(1): the workspace denies `unsafe` (no libc::kill).
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One `runner-manager run` daemon's world: the daemon, its HTTP base URL, its instances' name
/// prefix and its temporary directory (GitHub token, API token, webhook secret, state, config).
pub struct World {
    /// Declared first: killed before the directory goes.
    pub daemon: Daemon,
    pub base: String,
    pub prefix: String,
    webhook_secret: String,
    _dir: tempfile::TempDir,
}

impl World {
    /// Writes the daemon's secrets (an API token and a webhook secret named after `app`) and
    /// config (`BinaryConfig::render_pools()` for `app`'s runners of `image`, quantity 0, then
    /// `pools(port, dir)`: its `[[pools]]` and `[server]`), installs the runner binary
    /// (`runner-bin update`) and starts `bin run`, logging to `log`.
    pub async fn start(
        sim: &github_sim::SimHandle,
        bin: &Path,
        image: &str,
        app: &str,
        log: &Path,
        pools: impl FnOnce(u16, &Path) -> String,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let token = dir.path().join("github-token");
        std::fs::write(&token, sim.token().expose())?;
        let webhook_secret = format!("{app}-webhook-secret-abcdef");
        std::fs::write(
            dir.path().join("api-token"),
            format!("{app}-api-token-0123"),
        )?;
        std::fs::write(dir.path().join("webhook-secret"), &webhook_secret)?;
        let port = free_port()?;
        let state = dir.path().join("state");
        let mut text = test_support::config::BinaryConfig {
            app,
            repo: crate::real::REPO,
            image,
            state_dir: &state,
            token_file: &token,
            sim,
            quantity: 0,
        }
        .render_pools();
        text.push_str(&pools(port, dir.path()));
        let config = dir.path().join("config.toml");
        std::fs::write(&config, text)?;
        runner_bin_update(bin, &config).await?;
        Ok(Self {
            daemon: Daemon::start(bin, &config, log)?,
            base: format!("http://127.0.0.1:{port}"),
            prefix: format!("{app}-"),
            webhook_secret,
            _dir: dir,
        })
    }

    /// Where the sim sends this daemon's webhooks (`POST /webhook`, signed with its secret).
    pub fn webhook_target(&self) -> github_sim::WebhookTarget {
        github_sim::WebhookTarget {
            url: format!("{}/webhook", self.base),
            secret: github_sim::Secret::new(&self.webhook_secret),
        }
    }

    /// Waits up to `timeout` for the daemon's startup pass (`/health`: `passes >= 1`, none in
    /// flight).
    pub async fn wait_started(
        &mut self,
        client: &reqwest::Client,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(h) = self.health(client).await {
                let d = &h["daemon"];
                if d["passes"].as_u64().unwrap_or(0) >= 1 && d["in_flight"] == false {
                    return Ok(());
                }
            }
            self.ensure_alive()?;
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "no startup pass after {timeout:?}:\n{}",
                self.daemon.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn health(&self, client: &reqwest::Client) -> Option<serde_json::Value> {
        let response = client.get(format!("{}/health", self.base)).send().await;
        response.ok()?.json().await.ok()
    }

    /// Fails, with the daemon's log, when the daemon no longer runs.
    pub fn ensure_alive(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.daemon.alive(),
            "the daemon died:\n{}",
            self.daemon.log_text()
        );
        Ok(())
    }

    /// No registration in `sim` and no instance in `lxd` is named after the world.
    pub async fn is_empty(
        &self,
        sim: &github_sim::SimHandle,
        lxd: &lxd::Client,
    ) -> anyhow::Result<bool> {
        Ok(self.registered(sim, false) == 0 && instances_of(lxd, &self.prefix).await? == 0)
    }

    /// The world's registrations in `sim` (`online`: only those online).
    pub fn registered(&self, sim: &github_sim::SimHandle, online: bool) -> usize {
        sim.runners()
            .iter()
            .filter(|r| r.name.starts_with(&self.prefix) && (!online || r.status == "online"))
            .count()
    }
}

/// The floor of the daemon benchmarks: `n` bare launches of `image` with `profiles` (one exec
/// each within `exec_timeout`) named `<tag>f-*`, deleted after; logged; then `settle` for Incus
/// to settle after the deletes.
pub async fn floor(
    lxd: &lxd::Client,
    image: &str,
    profiles: &[String],
    tag: &str,
    n: usize,
    exec_timeout: Duration,
    settle: Duration,
) -> anyhow::Result<Duration> {
    let prefix = format!("{tag}f-");
    let floor = crate::real::launch_floor(lxd, image, profiles, &prefix, n, exec_timeout).await;
    crate::real::delete_prefix(lxd, &prefix).await?;
    let floor = floor?;
    eprintln!(
        "[{tag}] floor: {n} bare parallel launches + exec: {}",
        crate::real::secs(floor)
    );
    tokio::time::sleep(settle).await;
    Ok(floor)
}

/// One sample of the OpenMetrics text.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The samples of an OpenMetrics text (comments skipped; label values without escapes, as the
/// daemon writes them).
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (name, labels, rest) = match (line.find('{'), line.rfind('}')) {
            (Some(open), Some(close)) if open < close => {
                (&line[..open], &line[open + 1..close], &line[close + 1..])
            }
            _ => match line.split_once(' ') {
                Some((name, rest)) => (name, "", rest),
                None => continue,
            },
        };
        let Some(Ok(value)) = rest.split_whitespace().next().map(str::parse::<f64>) else {
            continue;
        };
        let mut parsed = BTreeMap::new();
        if !labels.is_empty() {
            for pair in labels.split("\",") {
                if let Some((k, v)) = pair.split_once("=\"") {
                    parsed.insert(k.to_owned(), v.trim_end_matches('"').to_owned());
                }
            }
        }
        out.push(Sample {
            name: name.to_owned(),
            labels: parsed,
            value,
        });
    }
    out
}

fn has_labels(sample: &Sample, labels: &[(&str, &str)]) -> bool {
    labels
        .iter()
        .all(|(k, v)| sample.labels.get(*k).map(String::as_str) == Some(*v))
}

/// The sum of the samples `name` whose labels include `labels` (0 if none).
pub fn metric_sum(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name && has_labels(s, labels))
        .map(|s| s.value)
        .sum()
}

/// The values of label `key` among the samples `name` (e.g. the pools of a family).
pub fn label_values(samples: &[Sample], name: &str, key: &str) -> Vec<String> {
    let mut values: Vec<String> = samples
        .iter()
        .filter(|s| s.name == name)
        .filter_map(|s| s.labels.get(key).cloned())
        .collect();
    values.sort();
    values.dedup();
    values
}

/// A cumulative histogram read from `/metrics`.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// `(le, cumulative count)`, ascending, `+Inf` last.
    pub buckets: Vec<(f64, f64)>,
    pub count: f64,
    pub sum: f64,
}

impl Histogram {
    /// The histogram `family` (without `_bucket`) whose labels include `labels`.
    pub fn read(samples: &[Sample], family: &str, labels: &[(&str, &str)]) -> Option<Self> {
        let bucket_name = format!("{family}_bucket");
        let mut buckets: Vec<(f64, f64)> = samples
            .iter()
            .filter(|s| s.name == bucket_name && has_labels(s, labels))
            .filter_map(|s| {
                let le = s.labels.get("le")?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, s.value))
            })
            .collect();
        if buckets.is_empty() {
            return None;
        }
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        Some(Self {
            buckets,
            count: metric_sum(samples, &format!("{family}_count"), labels),
            sum: metric_sum(samples, &format!("{family}_sum"), labels),
        })
    }

    /// The `q` quantile, linearly interpolated inside its bucket as Prometheus's
    /// `histogram_quantile` does (the first bucket starts at 0; a quantile in `+Inf` is the
    /// highest finite bound). `None` for an empty histogram.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.buckets.last().map(|b| b.1)?;
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let mut lower = (0.0, 0.0);
        for &(le, cumulative) in &self.buckets {
            if cumulative >= rank {
                if le.is_infinite() {
                    return Some(lower.0);
                }
                let in_bucket = cumulative - lower.1;
                if in_bucket <= 0.0 {
                    return Some(le);
                }
                return Some(lower.0 + (le - lower.0) * (rank - lower.1) / in_bucket);
            }
            lower = (le, cumulative);
        }
        Some(lower.0)
    }

    /// Two histograms' counts added (same buckets).
    pub fn merge(&self, other: &Self) -> Self {
        let buckets = self
            .buckets
            .iter()
            .zip(&other.buckets)
            .map(|(a, b)| (a.0, a.1 + b.1))
            .collect();
        Self {
            buckets,
            count: self.count + other.count,
            sum: self.sum + other.sum,
        }
    }
}

/// The `q` quantile of `values` by nearest rank (the smallest value with at least `q` of the
/// values at or below it). 0 for no values.
pub fn percentile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Seconds since midnight UTC of an RFC 3339 timestamp at the start of a log line
/// (`2026-12-06T08:10:00.123456Z ...`).
pub fn line_time_of_day(line: &str) -> Option<f64> {
    let stamp = line.split_whitespace().next()?;
    let (_, time) = stamp.split_once('T')?;
    let time = time.trim_end_matches('Z');
    let mut parts = time.splitn(3, ':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// Seconds since midnight UTC of `at`.
pub fn time_of_day(at: std::time::SystemTime) -> f64 {
    let since = at
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    since % 86_400.0
}

/// The value of `key=` in a log line (up to the next space).
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let pattern = format!(" {key}=");
    let at = line.find(&pattern)? + pattern.len();
    line[at..].split_whitespace().next()
}

/// One finished pass in the daemon log.
#[derive(Debug, Clone, PartialEq)]
pub struct Pass {
    /// When it finished, seconds after the burst's start (negative: before it).
    pub finished: f64,
    pub created: u64,
    pub removed: u64,
    pub failed: u64,
    /// The `reasons=[...]` of its span.
    pub reasons: String,
}

/// Log events of interest, timed against `t0` (time of day, [`time_of_day`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogTimeline {
    pub passes: Vec<Pass>,
    /// `Webhook asks for a reconcile.` lines, seconds after `t0`.
    pub webhooks: Vec<f64>,
    /// `Runner installed.` durations, seconds.
    pub installs: Vec<f64>,
    /// Lines at WARN or ERROR after `t0`.
    pub warnings: Vec<String>,
    /// `Pacing JIT registrations` and `wait for a pool below max` lines after `t0`.
    pub pacing: usize,
    pub waiting: usize,
}

/// Reads the daemon log: passes, webhooks, installs, warnings after `t0`.
pub fn passes(log: &str, t0: f64) -> LogTimeline {
    let mut out = LogTimeline::default();
    for line in log.lines() {
        let Some(at) = line_time_of_day(line) else {
            continue;
        };
        let rel = at - t0;
        if line.contains("Reconcile finished.") {
            let num = |k| field(line, k).and_then(|v| v.parse().ok()).unwrap_or(0);
            let reasons = line
                .find("reasons=[")
                .and_then(|i| line[i + 9..].split(']').next())
                .unwrap_or("")
                .to_owned();
            out.passes.push(Pass {
                finished: rel,
                created: num("created"),
                removed: num("removed"),
                failed: num("failed"),
                reasons,
            });
        } else if line.contains("Webhook asks for a reconcile.") && rel >= 0.0 {
            out.webhooks.push(rel);
        } else if line.contains("Runner installed.") && rel >= 0.0 {
            if let Some(d) = field(line, "duration_seconds").and_then(|v| v.parse().ok()) {
                out.installs.push(d);
            }
        }
        if rel >= 0.0 {
            if line.contains(" WARN ") || line.contains(" ERROR ") {
                out.warnings.push(line.to_owned());
            }
            if line.contains("Pacing JIT registrations") {
                out.pacing += 1;
            }
            if line.contains("wait for a pool below max") {
                out.waiting += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_tables_render_each_pool_and_the_server() {
        let dir = Path::new("/d");
        let parse = |text: String| -> toml::Table { text.parse().expect("TOML") };
        let sizes = PoolSizes {
            small_max: 3,
            large_max: 4,
        };
        let doc = parse(pools_config(sizes, 8080, dir, 3600));
        let pools = doc["pools"].as_array().expect("[[pools]]");
        let want = [("small", "token", 3, Some(1)), ("large", "jit", 4, None)];
        assert_eq!(pools.len(), want.len());
        for (pool, (name, registration, max, priority)) in pools.iter().zip(want) {
            assert_eq!(pool["name"].as_str(), Some(name));
            assert_eq!(pool["labels"].as_array(), Some(&vec![name.into()]));
            assert_eq!(pool["registration"].as_str(), Some(registration));
            assert_eq!(pool["min_idle"].as_integer(), Some(0));
            assert_eq!(pool["max"].as_integer(), Some(max));
            assert_eq!(pool.get("priority").and_then(|p| p.as_integer()), priority);
        }
        let server = &doc["server"];
        assert_eq!(server["listen"].as_str(), Some("127.0.0.1:8080"));
        assert_eq!(server["api_token_file"].as_str(), Some("/d/api-token"));
        assert_eq!(
            server["reconcile_interval_seconds"].as_integer(),
            Some(3600)
        );

        use crate::scaleset::{rest_jit_pool, scaleset_pool};
        for (text, name, scaling, max) in [
            (scaleset_pool(5, 1, dir, 60), "ss", Some("scaleset"), 5),
            (rest_jit_pool(7, 1, dir, 60), "restjit", None, 7),
        ] {
            let doc = parse(text);
            let pool = &doc["pools"][0];
            assert_eq!(pool["name"].as_str(), Some(name));
            assert_eq!(pool["registration"].as_str(), Some("jit"));
            assert_eq!(pool.get("scaling").and_then(|s| s.as_str()), scaling);
            assert_eq!(pool["max"].as_integer(), Some(max));
            let interval = doc["server"]["reconcile_interval_seconds"].as_integer();
            assert_eq!(interval, Some(60));
            let poll = doc
                .get("scaleset")
                .map(|s| s["poll_timeout_seconds"].clone());
            assert_eq!(poll, scaling.map(|_| 120.into()));
        }
    }

    const METRICS: &str = "# TYPE runner_manager_job_queue_seconds histogram
runner_manager_job_queue_seconds_sum{pool=\"small\"} 30.0
runner_manager_job_queue_seconds_count{pool=\"small\"} 10
runner_manager_job_queue_seconds_bucket{le=\"0.5\",pool=\"small\"} 0
runner_manager_job_queue_seconds_bucket{le=\"1.0\",pool=\"small\"} 2
runner_manager_job_queue_seconds_bucket{le=\"2.0\",pool=\"small\"} 6
runner_manager_job_queue_seconds_bucket{le=\"4.0\",pool=\"small\"} 10
runner_manager_job_queue_seconds_bucket{le=\"+Inf\",pool=\"small\"} 10
runner_manager_runners_created_total 30
# EOF
";

    #[test]
    fn histogram_quantiles_are_interpolated_in_their_bucket() {
        let samples = parse_metrics(METRICS);
        assert_eq!(
            metric_sum(&samples, "runner_manager_runners_created_total", &[]),
            30.0
        );
        assert_eq!(
            label_values(&samples, "runner_manager_job_queue_seconds_count", "pool"),
            ["small"]
        );
        let h = Histogram::read(
            &samples,
            "runner_manager_job_queue_seconds",
            &[("pool", "small")],
        )
        .expect("histogram");
        assert_eq!(h.count, 10.0);
        assert_eq!(h.sum, 30.0);
        // Rank 5 of 10 lies in (1, 2]: 3 of its 4 observations → 1.75.
        assert_eq!(h.quantile(0.5), Some(1.75));
        // Rank 9.5 lies in (2, 4]: 3.5 of 4 → 3.75.
        assert_eq!(h.quantile(0.95), Some(3.75));
        let both = h.merge(&h);
        assert_eq!(both.quantile(0.5), Some(1.75));
        assert_eq!(both.count, 20.0);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 10.0);
        assert_eq!(percentile(&v, 0.95), 19.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn log_lines_are_timed_against_the_burst() {
        let log = "2026-12-06T08:10:00.000000Z  INFO reconcile{reasons=[Startup] details=[]}: runner_manager::daemon: Reconcile finished. quantity=0 delta=0 created=0 removed=0 failed=0
2026-12-06T08:10:05.250000Z  INFO runner_manager::server: Webhook asks for a reconcile. detail=workflow_job queued 7
2026-12-06T08:10:06.000000Z  INFO reconcile{reasons=[Webhook] details=[\"x\"]}: manager::events: Runner installed. runner=a-0-x duration_seconds=0.75
2026-12-06T08:10:07.500000Z  INFO reconcile{reasons=[Webhook] details=[\"x\"]}: runner_manager::daemon: Reconcile finished. quantity=0 delta=3 created=3 removed=0 failed=0
";
        let t0 = 8.0 * 3600.0 + 10.0 * 60.0 + 5.0;
        let t = passes(log, t0);
        assert_eq!(t.passes.len(), 2);
        assert_eq!(t.passes[0].finished, -5.0);
        assert_eq!(
            t.passes[1],
            Pass {
                finished: 2.5,
                created: 3,
                removed: 0,
                failed: 0,
                reasons: "Webhook".into()
            }
        );
        assert_eq!(t.webhooks, [0.25]);
        assert_eq!(t.installs, [0.75]);
        assert!(t.warnings.is_empty());
    }
}
