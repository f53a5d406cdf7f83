//! One manager wired to the outside world: `GitHubRegistry` over `github::Client` to the sim,
//! and the SIMULATION provider `manager::sim_provider::SimProvider` for instances.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use manager::adapters::GitHubRegistry;
use manager::events::Metrics;
use manager::sim_provider::{SimLatency, SimProvider, SimRunnerHooks};
use manager::{
    Backends, GitHubPath, ManagerConfig, ProxySettings, RegistrationMode, Resources, RunnerManager,
};

use crate::agents::SimAgents;
use crate::outside::{Outside, OutsideOptions};

/// The repository every benchmark manages.
pub const REPO: &str = "octo/app";
pub const RUNNER_VERSION: &str = "2.329.0";

/// Appends one 0755 file to a runner tarball being built.
pub fn append_executable<W: std::io::Write>(
    builder: &mut tar::Builder<W>,
    name: &str,
    content: &[u8],
) -> anyhow::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(content.len() as u64);
    header.set_mode(0o755);
    header.set_cksum();
    builder.append_data(&mut header, name, content)?;
    Ok(())
}

/// Where [`write_tarball`] writes the tarball in `dir`.
pub fn tarball_path(dir: &Path) -> PathBuf {
    dir.join(format!("actions-runner-linux-x64-{RUNNER_VERSION}.tar.gz"))
}

/// The outside world serving the tarball [`write_tarball`] wrote into `dir`, with GitHub's
/// secondary limit (80 content-creating requests a minute).
pub async fn spawn_outside(dir: &Path) -> anyhow::Result<Arc<Outside>> {
    let options = OutsideOptions {
        tarball: tarball_path(dir),
        runner_version: RUNNER_VERSION.to_owned(),
        secondary_per_minute: 80,
    };
    Ok(Arc::new(Outside::spawn(&options).await?))
}

/// A minimal valid runner tarball (`config.sh`, `run.sh`) padded with `pad_bytes` of
/// incompressible data, written into `dir`.
pub fn write_tarball(dir: &Path, pad_bytes: usize) -> anyhow::Result<PathBuf> {
    let path = tarball_path(dir);
    let file = std::fs::File::create(&path)?;
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        file,
        flate2::Compression::fast(),
    ));
    let mut add = |name: &str, content: &[u8]| append_executable(&mut builder, name, content);
    add("./config.sh", b"#!/bin/sh\n")?;
    add("./run.sh", b"#!/bin/sh\n")?;
    if pad_bytes > 0 {
        // xorshift: cheap and incompressible enough for gzip.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut pad = Vec::with_capacity(pad_bytes);
        while pad.len() < pad_bytes {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            pad.extend_from_slice(&state.to_le_bytes());
        }
        pad.truncate(pad_bytes);
        add("./bin/padding.bin", &pad)?;
    }
    builder.into_inner()?.finish()?.flush()?;
    Ok(path)
}

/// A GitHub client configuration for [`REPO`] in the sim at `api_url` and `web_url`, with the
/// sim's default token.
pub fn sim_client_config(api_url: &str, web_url: &str) -> anyhow::Result<github::ClientConfig> {
    Ok(github::ClientConfig::new(
        url::Url::parse(api_url)?,
        url::Url::parse(web_url)?,
        github::Scope::parse(REPO)?,
        github::Auth::Token(github::Secret::new(github_sim::DEFAULT_TOKEN)),
    ))
}

/// A manager for `app` (unit 0) of [`REPO`] in the sim at `web_url`, over `provider` and
/// registering through `client`, its state in `state`, its configuration adjusted by
/// `configure`.
pub fn sim_manager(
    web_url: &str,
    app: &str,
    state: &Path,
    client: &github::Client,
    provider: Arc<SimProvider>,
    configure: impl FnOnce(&mut ManagerConfig),
) -> anyhow::Result<RunnerManager> {
    let mut prometheus = prometheus_client::registry::Registry::default();
    let metrics = Metrics::new(&mut prometheus);
    let mut config = ManagerConfig::new(GitHubPath::parse(REPO, "")?, web_url, "jammy", state);
    configure(&mut config);
    let backends = Backends {
        provider,
        registry: Arc::new(GitHubRegistry::new(
            client.clone(),
            None,
            Some(metrics.clone()),
        )),
        metrics,
    };
    Ok(RunnerManager::new(
        app,
        0,
        config,
        &ProxySettings::default(),
        backends,
    )?)
}

/// Installs the sim's runner binary (linux x64) into `manager`'s cache.
pub async fn install_runner_bin(manager: &RunnerManager) -> anyhow::Result<()> {
    let download = manager
        .get_latest_runner_bin_url("linux", "x64")
        .await
        .context("listing downloads")?;
    manager
        .update_runner_bin(&download)
        .await
        .context("installing the runner binary")?;
    Ok(())
}

/// A manager and its simulated provider.
pub struct Fleet {
    pub manager: RunnerManager,
    pub provider: Arc<SimProvider>,
    pub client: github::Client,
    pub resources: Resources,
    _state: tempfile::TempDir,
}

impl Fleet {
    /// Builds the manager for `app` (unit 0) and installs the sim's runner binary.
    pub async fn new(
        outside: &Arc<Outside>,
        app: &str,
        mode: RegistrationMode,
        create_concurrency: usize,
    ) -> anyhow::Result<Self> {
        let agents = Arc::new(SimAgents::new(outside.clone(), REPO)?);
        let provider = Arc::new(SimProvider::new(
            SimLatency::default(),
            Some(agents as Arc<dyn SimRunnerHooks>),
        ));
        let client_config = sim_client_config(&outside.api_url(), outside.base_url())?;
        Self::with(outside, app, provider, client_config, |config| {
            config.registration_mode = mode;
            config.create_concurrency = create_concurrency;
        })
        .await
    }

    /// The fleet of `app` (unit 0) in `outside`'s sim over `provider`: a client from
    /// `client_config`, the manager's config adjusted by `configure`, the sim's runner binary
    /// installed.
    pub async fn with(
        outside: &Outside,
        app: &str,
        provider: Arc<SimProvider>,
        client_config: github::ClientConfig,
        configure: impl FnOnce(&mut ManagerConfig),
    ) -> anyhow::Result<Self> {
        let state = tempfile::tempdir()?;
        let client = github::Client::new(client_config)?;
        let manager = sim_manager(
            outside.base_url(),
            app,
            state.path(),
            &client,
            provider.clone(),
            configure,
        )?;
        install_runner_bin(&manager).await?;
        Ok(Self {
            manager,
            provider,
            client,
            resources: Resources::new(2, "7GiB", "10GiB")?,
            _state: state,
        })
    }

    /// Reconciles to `quantity` until a pass creates and removes nothing and nothing failed
    /// (at most `max_passes`); returns the passes made.
    pub async fn converge(&self, quantity: usize, max_passes: usize) -> anyhow::Result<usize> {
        for pass in 1..=max_passes {
            let report = self.manager.reconcile(quantity, &self.resources).await?;
            if let Some(failure) = report.failed.first() {
                anyhow::bail!("reconcile failed: {failure:?}");
            }
            if report.created.is_empty() && report.removed.is_empty() {
                if report.delta <= 0 {
                    return Ok(pass);
                }
                // Short of runners yet nothing created: the manager is pacing JIT registrations
                // under GitHub's secondary limit; the next pass goes on.
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
        }
        anyhow::bail!("no convergence to {quantity} in {max_passes} passes")
    }
}
