//! "The outside world" in a child process: github-sim plus the runner agents' long polls.
//!
//! The benchmark binary re-executes itself with [`CHILD_ARG`]; the child starts
//! `github_sim::Sim` and keeps one long poll (`/_runner/poll?wait=50`) open per runner the parent
//! hands it on stdin (`poll <agent_id> <credential>`, `stop <agent_id>`). So the runners are
//! genuinely online the way the sim defines it (polling), and the parent's CPU time and RSS are
//! the manager's (plus the simulated provider), not the sim's. The child exits when its stdin
//! closes, i.e. when the parent exits.

use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use github_sim::{RequestCount, RunnerView, Sim, SimConfig};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::Mutex;

/// First argument that turns the benchmark binary into the outside-world child.
pub const CHILD_ARG: &str = "__outside-world";

/// How the child's simulator is configured.
#[derive(Debug, Clone)]
pub struct OutsideOptions {
    /// Runner tarball served by the downloads endpoint.
    pub tarball: std::path::PathBuf,
    pub runner_version: String,
    /// GitHub's secondary limit on content-creating requests (80 per minute).
    pub secondary_per_minute: u32,
}

/// Runs the child when the process was started with [`CHILD_ARG`]; `None` otherwise.
pub fn run_child_if_requested() -> Option<anyhow::Result<()>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) != Some(CHILD_ARG) {
        return None;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return Some(Err(e.into())),
    };
    Some(runtime.block_on(child_main(args)))
}

async fn child_main(args: Vec<String>) -> anyhow::Result<()> {
    let arg = |i: usize| args.get(i).cloned().context("missing child argument");
    let tarball = std::fs::read(arg(2)?).context("reading the tarball")?;
    let secondary: u32 = arg(4)?.parse().context("secondary limit")?;
    let config = SimConfig::default()
        .with_runner_tarball(tarball, arg(3)?)
        .with_secondary_limit_per_minute(secondary);
    let sim = Sim::start(config).await.context("starting github-sim")?;
    let base = sim.base_url();
    println!("{base}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(70))
        .pool_max_idle_per_host(4096)
        .build()?;
    let mut pollers: HashMap<u64, tokio::task::JoinHandle<()>> = HashMap::new();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["poll", id, credential] => {
                let id: u64 = id.parse().context("agent id")?;
                let url = format!("{base}/_runner/poll?agent_id={id}&wait=50");
                let auth = format!("Bearer {credential}");
                let http = http.clone();
                let task = tokio::spawn(async move {
                    loop {
                        match http.get(&url).header("authorization", &auth).send().await {
                            // 401: the registration is gone; the agent exits.
                            Ok(r) if r.status() == reqwest::StatusCode::UNAUTHORIZED => return,
                            Ok(_) => {}
                            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                        }
                    }
                });
                if let Some(old) = pollers.insert(id, task) {
                    old.abort();
                }
            }
            ["stop", id] => {
                if let Some(task) = id.parse::<u64>().ok().and_then(|id| pollers.remove(&id)) {
                    task.abort();
                }
            }
            _ => {}
        }
    }
    for (_, task) in pollers {
        task.abort();
    }
    sim.shutdown().await;
    Ok(())
}

/// The parent's handle on the child.
pub struct Outside {
    child: Child,
    stdin: Mutex<ChildStdin>,
    base: String,
    http: reqwest::Client,
}

/// `GET url`, a success, its JSON answer.
pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: String,
) -> anyhow::Result<T> {
    Ok(http
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

impl Outside {
    /// Spawns the child (this same executable) and waits for its address.
    pub async fn spawn(options: &OutsideOptions) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating the benchmark executable")?;
        Self::spawn_with(&exe, options).await
    }

    /// Spawns `exe` (a benchmark binary of this crate) as the child.
    pub async fn spawn_with(
        exe: &std::path::Path,
        options: &OutsideOptions,
    ) -> anyhow::Result<Self> {
        let mut child = tokio::process::Command::new(exe)
            .arg(CHILD_ARG)
            .arg(&options.tarball)
            .arg(&options.runner_version)
            .arg(options.secondary_per_minute.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("spawning the outside-world child")?;
        let stdout = child.stdout.take().context("child stdout")?;
        let stdin = child.stdin.take().context("child stdin")?;
        let mut lines = BufReader::new(stdout).lines();
        let base = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .context("the child did not report its address within 30 s")??
            .context("the child exited before reporting its address")?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Self {
            child,
            stdin: Mutex::new(stdin),
            base,
            http,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub fn api_url(&self) -> String {
        format!("{}/api/v3", self.base)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Hands a registered agent to the child, which keeps it long-polling.
    pub async fn keep_polling(&self, agent_id: u64, credential: &str) -> anyhow::Result<()> {
        let line = format!("poll {agent_id} {credential}\n");
        self.stdin.lock().await.write_all(line.as_bytes()).await?;
        Ok(())
    }

    pub async fn stop_polling(&self, agent_id: u64) -> anyhow::Result<()> {
        let line = format!("stop {agent_id}\n");
        self.stdin.lock().await.write_all(line.as_bytes()).await?;
        Ok(())
    }

    /// The sim's request counters (`GET /_sim/requests`).
    pub async fn request_counts(&self) -> anyhow::Result<BTreeMap<String, RequestCount>> {
        let url = format!("{}/_sim/requests", self.base);
        get_json(&self.http, url).await
    }

    pub async fn reset_request_counts(&self) -> anyhow::Result<()> {
        let url = format!("{}/_sim/requests", self.base);
        self.http.delete(url).send().await?.error_for_status()?;
        Ok(())
    }

    /// Every runner the sim knows (`GET /_sim/runners`).
    pub async fn runners(&self) -> anyhow::Result<Vec<RunnerView>> {
        let url = format!("{}/_sim/runners", self.base);
        get_json(&self.http, url).await
    }

    /// Waits until the sim shows exactly `n` runners, all online and idle.
    pub async fn wait_online_idle(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let runners = self.runners().await?;
            let good = runners
                .iter()
                .filter(|r| r.status == "online" && !r.busy)
                .count();
            if runners.len() == n && good == n {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!(
                    "expected {n} online idle runners, the sim shows {} ({good} online and idle)",
                    runners.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Sums of the sim's counters over the GitHub REST API only (`/_runner/` agent calls and tarball
/// downloads excluded).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestCost {
    pub requests: u64,
    pub rate_limit_cost: u64,
    pub not_modified: u64,
    /// `POST` token / JIT requests (GitHub's secondary limit counts these).
    pub content_creating: u64,
    pub list_gets: u64,
}

/// A REST `POST` that GitHub's secondary rate limit counts as content-creating (registration
/// and remove tokens, JIT configs).
pub fn is_content_creating(method: &str, path: &str) -> bool {
    method == "POST"
        && [
            "/registration-token",
            "/remove-token",
            "/generate-jitconfig",
        ]
        .iter()
        .any(|s| path.ends_with(s))
}

impl RestCost {
    pub fn from_counts(counts: &BTreeMap<String, RequestCount>) -> Self {
        let mut cost = Self::default();
        for (key, c) in counts {
            let (method, path) = key.split_once(' ').unwrap_or(("", key));
            if path.starts_with("/_runner/") || path.contains("/releases/download/") {
                continue;
            }
            cost.requests += c.count;
            cost.rate_limit_cost += c.rate_limit_cost;
            cost.not_modified += c.not_modified;
            if is_content_creating(method, path) {
                cost.content_creating += c.count;
            }
            if method == "GET" && path.ends_with("/actions/runners") {
                cost.list_gets += c.count;
            }
        }
        cost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(count: u64, cost: u64, nm: u64) -> RequestCount {
        RequestCount {
            count,
            rate_limit_cost: cost,
            not_modified: nm,
        }
    }

    #[test]
    fn rest_cost_keeps_rest_calls_only() {
        let counts = BTreeMap::from([
            (
                "GET /repos/{owner}/{repo}/actions/runners".to_owned(),
                count(10, 0, 10),
            ),
            (
                "POST /repos/{owner}/{repo}/actions/runners/registration-token".to_owned(),
                count(1, 1, 0),
            ),
            (
                "POST /repos/{owner}/{repo}/actions/runners/generate-jitconfig".to_owned(),
                count(3, 3, 0),
            ),
            ("GET /_runner/poll".to_owned(), count(500, 0, 0)),
            ("POST /_runner/register".to_owned(), count(7, 0, 0)),
        ]);
        let cost = RestCost::from_counts(&counts);
        assert_eq!(
            cost,
            RestCost {
                requests: 14,
                rate_limit_cost: 4,
                not_modified: 10,
                content_creating: 4,
                list_gets: 10,
            }
        );
    }
}
