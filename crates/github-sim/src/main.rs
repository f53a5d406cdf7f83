//! `github-sim`: run the GitHub simulator, or build the fake runner tarball.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use github_sim::{OwnerConfig, Sim, SimConfig};

#[derive(Parser)]
#[command(
    name = "github-sim",
    about = "A stateful GitHub simulator for self-hosted runners"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Accepted personal access token (prefer the environment variable).
    #[arg(long, env = "GITHUB_SIM_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Runner tarball served by the downloads endpoint.
    #[arg(long, requires = "runner_version")]
    tarball: Option<PathBuf>,
    /// Version of that tarball.
    #[arg(long)]
    runner_version: Option<String>,
    /// Repositories (`owner/repo`); default `octo/app`.
    #[arg(long = "repo")]
    repos: Vec<String>,
    /// Organizations (each with GitHub's default runner group `Default`, id 1); default `octo-org`.
    #[arg(long = "org")]
    orgs: Vec<String>,
    /// Enterprises (each with the runner group `Default`, id 1); default `acme`.
    #[arg(long = "enterprise")]
    enterprises: Vec<String>,
    /// URL handed to runners (JIT configs, download URLs), e.g. `http://10.0.0.1:8080`.
    #[arg(long)]
    public_url: Option<String>,
    /// Seconds without a poll after which a runner is offline.
    #[arg(long, default_value_t = 30)]
    silence_timeout_seconds: u64,
    /// Serve runner lists from a cache for this long (GitHub: about 60), so status lags.
    #[arg(long, default_value_t = 0)]
    list_cache_seconds: u64,
    /// Primary rate limit per hour and identity.
    #[arg(long, default_value_t = 5000)]
    rate_limit: u32,
    /// Content-creating requests per minute and identity.
    #[arg(long, default_value_t = 80)]
    secondary_limit_per_minute: u32,
    /// `workflow_job` webhook receiver URL.
    #[arg(long, requires = "webhook_secret")]
    webhook_url: Option<String>,
    /// Webhook secret (prefer the environment variable).
    #[arg(long, env = "GITHUB_SIM_WEBHOOK_SECRET", hide_env_values = true)]
    webhook_secret: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Build the fake actions-runner tarball.
    RunnerTarball {
        /// The statically linked fake runner agent binary.
        #[arg(long)]
        agent: PathBuf,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Runner version to announce.
        #[arg(long, default_value = "2.329.0")]
        version: String,
    },
}

fn config(cli: Cli) -> anyhow::Result<SimConfig> {
    let mut config = SimConfig::default()
        .with_listen(cli.listen)
        .with_silence_timeout(Duration::from_secs(cli.silence_timeout_seconds))
        .with_list_cache(Duration::from_secs(cli.list_cache_seconds))
        .with_rate_limit(cli.rate_limit)
        .with_secondary_limit_per_minute(cli.secondary_limit_per_minute);
    if let Some(token) = cli.token {
        config = config.with_token(token);
    }
    if let (Some(path), Some(version)) = (cli.tarball, cli.runner_version) {
        let bytes =
            std::fs::read(&path).with_context(|| format!("reading tarball {}", path.display()))?;
        config = config.with_runner_tarball(bytes, version);
    }
    if !cli.repos.is_empty() {
        config.repos = cli.repos;
    }
    if !cli.orgs.is_empty() {
        config.orgs = owners(cli.orgs, 100);
    }
    if !cli.enterprises.is_empty() {
        config.enterprises = owners(cli.enterprises, 7);
    }
    if let Some(url) = cli.public_url {
        config = config.with_public_url(url);
    }
    if let (Some(url), Some(secret)) = (cli.webhook_url, cli.webhook_secret) {
        config = config.with_webhook(url, secret);
    }
    Ok(config)
}

/// Owners named on the command line, with ids from `first_id` up.
fn owners(names: Vec<String>, first_id: u64) -> Vec<OwnerConfig> {
    names
        .into_iter()
        .enumerate()
        .map(|(i, name)| OwnerConfig::new(name, first_id + i as u64))
        .collect()
}

fn build_tarball(agent: PathBuf, out: PathBuf, version: String) -> anyhow::Result<()> {
    let bytes = github_sim::tarball::build_runner_tarball(&agent, &version)
        .with_context(|| format!("building the runner tarball from {}", agent.display()))?;
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let path = out.join(format!("actions-runner-linux-x64-{version}.tar.gz"));
    std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    println!("{}", path.display());
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let mut cli = Cli::parse();
    if let Some(Command::RunnerTarball {
        agent,
        out,
        version,
    }) = cli.command.take()
    {
        return build_tarball(agent, out, version);
    }
    let sim = Sim::start(config(cli)?)
        .await
        .context("starting the simulator")?;
    eprintln!(
        "github-sim listening on {} (API {}, admin {}/_sim/)",
        sim.addr(),
        sim.api_url(),
        sim.base_url()
    );
    tokio::signal::ctrl_c()
        .await
        .context("waiting for ctrl-c")?;
    sim.shutdown().await;
    Ok(())
}
