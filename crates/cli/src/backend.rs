//! Where the commands meet `manager::RunnerManager`: builds the GitHub and LXD clients from the
//! [`Config`], wraps them in the manager's adapters, and maps the manager's reports to the
//! command-line / HTTP output types.
//!
//! The config already holds the manager's types (scope and group, sizes, instance type,
//! registration mode, proxies): they are handed over as they are, never re-parsed from strings.

use std::sync::Arc;

use anyhow::Context as _;
use async_trait::async_trait;
use manager::adapters::{GitHubRegistry, LxdProvider};
use manager::events::Metrics;
use manager::policy::PolicyConfig;
use manager::provider::{InstanceProvider, RunnerDownload, RunnerRegistry};
use manager::{Backends, GitHubPath, ManagerConfig, Resources, RunnerManager};
use prometheus_client::registry::Registry;

use crate::app::Backend;
use crate::config::{Config, GitHubCredentials, LxdEndpoint};
use crate::ops::{
    FlushMode, FlushOutput, Operations, PassOutput, ReconcileOutput, RunnerBinCheckOutput,
    RunnerBinOutput, RunnerBinUpdateOutput, RunnerStatus, StatusOutput,
};

/// The production backend.
pub struct ManagerBackend;

#[async_trait]
impl Backend for ManagerBackend {
    async fn connect(
        &self,
        config: &Config,
        registry: &mut Registry,
    ) -> anyhow::Result<Arc<dyn Operations>> {
        let metrics = Metrics::new(registry);
        let github = github::Client::new(github_client_config(config))
            .context("building the github client")?;
        let group = config.github.path.group().map(str::to_owned);
        let registry: Arc<dyn RunnerRegistry> = Arc::new(GitHubRegistry::new(
            github,
            group,
            Some(Arc::clone(&metrics)),
        ));
        let lxd = lxd_client(&config.lxd.endpoint).await?;
        let provider: Arc<dyn InstanceProvider> = Arc::new(LxdProvider::new(lxd));
        let manager_config = manager_config(config);
        let resources = Resources::from_sizes(
            config.runners.cpu,
            config.runners.memory.clone(),
            config.runners.disk.clone(),
        )
        .context("runners: invalid resources")?;
        let manager = RunnerManager::new(
            &config.app_name,
            config.unit,
            manager_config,
            &config.proxy,
            Backends {
                provider,
                registry,
                metrics,
            },
        )
        .context("creating the runner manager")?;
        Ok(Arc::new(ManagerOps { manager, resources }))
    }
}

/// The GitHub client's scope: the wire-side twin of the manager's [`GitHubPath`], built from it
/// directly (the runner group is resolved by the registry adapter, not part of the scope).
pub fn github_scope(path: &GitHubPath) -> github::Scope {
    match path {
        GitHubPath::Repo { owner, repo } => github::Scope::Repo {
            owner: owner.clone(),
            repo: repo.clone(),
        },
        GitHubPath::Org { org, .. } => github::Scope::Org { org: org.clone() },
        GitHubPath::Enterprise { slug, .. } => github::Scope::Enterprise { slug: slug.clone() },
    }
}

/// The GitHub client's settings. The proxy URLs are exposed here, credentials included: this is
/// where the manager's own GitHub traffic needs them.
pub fn github_client_config(config: &Config) -> github::ClientConfig {
    let auth = match &config.github.credentials {
        GitHubCredentials::Token { token, .. } => {
            github::Auth::Token(github::Secret::new(token.expose().to_owned()))
        }
        GitHubCredentials::App {
            app_id,
            installation_id,
            private_key,
            ..
        } => github::Auth::App {
            app_id: *app_id,
            installation_id: *installation_id,
            private_key_pem: github::Secret::new(private_key.expose().to_owned()),
        },
    };
    let mut client_config = github::ClientConfig::new(
        config.github.api_url.clone(),
        config.github.web_url.clone(),
        github_scope(&config.github.path),
        auth,
    );
    let proxy = &config.proxy;
    if !proxy.is_empty() {
        client_config.proxy = Some(github::ProxyConfig {
            http: proxy.expose_http().map(str::to_owned),
            https: proxy.expose_https().map(str::to_owned),
            no_proxy: proxy.no_proxy.clone(),
        });
    }
    client_config
}

async fn lxd_client(endpoint: &LxdEndpoint) -> anyhow::Result<lxd::Client> {
    let endpoint = match endpoint {
        LxdEndpoint::Discover => lxd::Endpoint::discover().context("finding the lxd socket")?,
        LxdEndpoint::Socket(path) => lxd::Endpoint::Unix(path.clone()),
        LxdEndpoint::Https {
            url,
            client_cert,
            client_key,
            server_cert,
        } => {
            let read = |path: &std::path::Path, key: &str| {
                std::fs::read(path).with_context(|| format!("{key}: reading {}", path.display()))
            };
            let server_cert_pem = match server_cert {
                Some(path) => read(path, "lxd.server_cert")?,
                None => {
                    anyhow::bail!("lxd.server_cert: required with lxd.url (the pinned certificate)")
                }
            };
            lxd::Endpoint::Https {
                url: url.clone(),
                client_cert_pem: read(client_cert, "lxd.client_cert")?,
                client_key_pem: lxd::PrivateKeyPem::new(read(client_key, "lxd.client_key")?),
                server_cert_pem,
            }
        }
    };
    lxd::Client::connect(endpoint, lxd::Timeouts::default())
        .await
        .context("connecting to lxd")
}

/// The manager's settings, from the config's values as they are.
pub fn manager_config(config: &Config) -> ManagerConfig {
    let mut manager_config = ManagerConfig::new(
        config.github.path.clone(),
        config.github.web_url.as_str(),
        &config.lxd.image,
        &config.state_dir,
    );
    manager_config.instance_type = config.lxd.instance_type;
    manager_config.extra_labels = config.runners.labels.clone();
    manager_config.registration_mode = config.runners.registration;
    manager_config.lxd_storage_path = config.lxd.storage_path.clone();
    manager_config.issue_metrics = config.metrics.issue_metrics;
    manager_config.events_log = config.metrics.events_log.clone();
    manager_config.policy = config.policy.as_ref().map(|policy| {
        let url = policy.url.as_str().trim_end_matches('/').to_owned();
        PolicyConfig {
            manager_url: url.clone(),
            runner_url: url,
            service_token: manager::Secret::new(policy.service_token.expose().to_owned()),
        }
    });
    manager_config
}

/// [`Operations`] over a [`RunnerManager`].
struct ManagerOps {
    manager: RunnerManager,
    resources: Resources,
}

fn bin_output(download: &RunnerDownload) -> RunnerBinOutput {
    RunnerBinOutput {
        os: download.os.clone(),
        architecture: download.architecture.clone(),
        download_url: download.download_url.clone(),
        filename: download.filename.clone(),
        sha256_checksum: (!download.sha256.is_empty()).then(|| download.sha256.clone()),
    }
}

#[async_trait]
impl Operations for ManagerOps {
    async fn reconcile(&self, quantity: u32) -> anyhow::Result<ReconcileOutput> {
        Ok(self.reconcile_pass(quantity).await?.output)
    }

    async fn reconcile_pass(&self, quantity: u32) -> anyhow::Result<PassOutput> {
        let report = self
            .manager
            .reconcile(quantity as usize, &self.resources)
            .await
            .context("reconciling")?;
        for failure in &report.failed {
            let runner = failure.runner.as_ref().map_or("-", |r| r.as_str());
            tracing::warn!(message = "Reconcile step failed.", runner, action = failure.action.as_str(), error = %failure.error);
        }
        Ok(PassOutput {
            output: ReconcileOutput {
                quantity,
                delta: report.delta,
                created: count(report.created.len()),
                removed: count(report.removed.len()),
                skipped_busy: count(report.skipped_busy.len()),
                failed: count(report.failed.len()),
            },
            requeue_after: report.requeue_after,
        })
    }

    async fn flush(&self, mode: FlushMode) -> anyhow::Result<FlushOutput> {
        let report = self.manager.flush(mode).await.context("flushing")?;
        if let Some(failure) = report.failed.first() {
            anyhow::bail!(
                "flush removed {} runner(s) but {} removal(s) failed; first: {} {}: {}",
                report.removed.len(),
                report.failed.len(),
                failure.action,
                failure.runner.as_ref().map_or("-", |r| r.as_str()),
                failure.error
            );
        }
        Ok(FlushOutput {
            removed: count(report.removed.len()),
            skipped_busy: count(report.skipped_busy.len()),
        })
    }

    async fn status(&self) -> anyhow::Result<StatusOutput> {
        // The core observes and classifies exactly as a pass does; here the types are mapped.
        let fleet = self.manager.status().await.context("observing the fleet")?;
        let version = fleet.runner_binary.map(|b| b.filename);
        let dangling = fleet
            .runners
            .iter()
            .filter(|r| r.is_dangling())
            .map(|r| r.name.to_string())
            .collect();
        let orphans = fleet
            .runners
            .iter()
            .filter(|r| r.is_orphan())
            .map(|r| r.name.to_string())
            .collect();
        let runners = fleet
            .runners
            .iter()
            .filter_map(|r| {
                let status = r.instance?;
                Some(RunnerStatus {
                    name: r.name.to_string(),
                    instance_status: format!("{status:?}").to_lowercase(),
                    github_status: r
                        .registration
                        .map(|(online, _)| if online { "online" } else { "offline" }.to_owned()),
                    busy: r.registration.map(|(_, busy)| busy),
                    age_seconds: r.age.map(|a| a.as_secs()),
                    version: version.clone(),
                })
            })
            .collect();
        Ok(StatusOutput {
            runners,
            dangling,
            orphans,
        })
    }

    async fn runner_bin_latest(&self, os: &str, arch: &str) -> anyhow::Result<RunnerBinOutput> {
        let download = self
            .manager
            .get_latest_runner_bin_url(os, arch)
            .await
            .context("finding the latest runner binary")?;
        Ok(bin_output(&download))
    }

    async fn runner_bin_update(&self) -> anyhow::Result<RunnerBinUpdateOutput> {
        let download = self
            .manager
            .latest_runner_download()
            .await
            .context("finding the latest runner binary")?;
        let current = self.manager.runner_bin();
        let up_to_date = current
            .as_ref()
            .is_some_and(|c| c.sha256 == download.sha256 && c.filename == download.filename);
        if !up_to_date {
            self.manager
                .update_runner_bin(&download)
                .await
                .context("updating the runner binary")?;
        }
        Ok(RunnerBinUpdateOutput {
            updated: !up_to_date,
            binary: bin_output(&download),
            path: self.manager.runner_bin_dir().display().to_string(),
        })
    }

    async fn runner_bin_check(&self) -> anyhow::Result<RunnerBinCheckOutput> {
        Ok(RunnerBinCheckOutput {
            present: self.manager.check_runner_bin(),
            path: self.manager.runner_bin_dir().display().to_string(),
        })
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
