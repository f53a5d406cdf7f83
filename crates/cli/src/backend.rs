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
use manager::jobs::Recorded;
use manager::plan::RunnerState;
use manager::policy::PolicyConfig;
use manager::pool::{ImageMode, PoolName, PoolSpec, Sizing};
use manager::provider::{InstanceProvider, RunnerDownload, RunnerRegistry};
use manager::{Backends, GitHubPath, ManagerConfig, Resources, RunnerManager};
use prometheus_client::registry::Registry;

use crate::app::Backend;
use crate::config::{Config, GitHubCredentials, LxdEndpoint};
use crate::deliveries::{recover, resolve_hook, HookRef, RecoveryReport};
use crate::ops::{
    FlushMode, FlushOutput, ImageBuildOutput, ImageListOutput, ImageOutput, JobEvent, JobRecord,
    Operations, PassOutput, PoolPassOutput, PoolStatus, ReconcileOutput, RunnerBinCheckOutput,
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
        let ha_metrics = config.ha.enabled.then(|| crate::ha::Ha::metrics(registry));
        let github = github::Client::new(github_client_config(config))
            .context("building the github client")?;
        let group = config.github.path.group().map(str::to_owned);
        let registry: Arc<dyn RunnerRegistry> = Arc::new(GitHubRegistry::new(
            github.clone(),
            group,
            Some(Arc::clone(&metrics)),
        ));
        // Scale-set pools: their JIT registrations and removals go to their sets.
        let hub = crate::scaleset::ScaleSetRuntime::hub(config);
        let scale_set_api = if hub.is_empty() {
            None
        } else {
            Some(Arc::new(manager::adapters::ScaleSetAdapter::new(
                crate::scaleset::client(config)?,
            )))
        };
        let registry: Arc<dyn RunnerRegistry> = match &scale_set_api {
            Some(api) => Arc::new(manager::scaleset::ScaleSetRegistry::new(
                registry,
                Arc::clone(api) as Arc<dyn manager::scaleset::ScaleSetRunners>,
                Arc::clone(&hub),
            )),
            None => registry,
        };
        let hook = match (config.server.hook_id, &config.server.public_url) {
            (Some(id), _) => Some(HookRef::Id(id)),
            (None, Some(url)) => Some(HookRef::Url(url.to_string())),
            (None, None) => None,
        };
        let lxd = lxd_client(&config.lxd.endpoint).await?;
        // [ha]: every mutating call checks the lease kept in the cluster (ha.rs).
        let ha = ha_metrics
            .map(|m| crate::ha::Ha::on_lxd(config, &lxd, m))
            .transpose()?;
        let provider: Arc<dyn InstanceProvider> = Arc::new(LxdProvider::new(lxd));
        let (provider, registry) = match &ha {
            Some(ha) => (ha.provider(provider), ha.registry(registry)),
            None => (provider, registry),
        };
        let mut manager_config = manager_config(config);
        manager_config.scale_sets = Arc::clone(&hub);
        let resources = Resources::from_sizes(
            config.runners.cpu,
            config.runners.memory.clone(),
            config.runners.disk.clone(),
        )
        .context("runners: invalid resources")?;
        let manager = Arc::new(
            RunnerManager::new(
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
            .context("creating the runner manager")?,
        );
        let scale_sets = scale_set_api.map(|api| crate::scaleset::ScaleSetRuntime {
            manager: Arc::clone(&manager),
            api,
            pools: config.scale_sets.pools.clone(),
            settings: manager::scaleset::ListenerSettings {
                timings: config.scale_sets.settings.clone(),
                state_dir: config.state_dir.clone(),
            },
        });
        let ops: Arc<dyn Operations> = Arc::new(ManagerOps {
            manager,
            scale_sets,
            resources,
            github,
            hook,
            hook_id: tokio::sync::OnceCell::new(),
        });
        Ok(match ha {
            Some(ha) => Arc::new(crate::ha::HaOps::new(ops, ha)),
            None => ops,
        })
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
        GitHubCredentials::Token { token, .. } => github::Auth::Token(token.clone()),
        GitHubCredentials::App {
            app_id,
            installation_id,
            private_key,
            ..
        } => github::Auth::App {
            app_id: *app_id,
            installation_id: *installation_id,
            private_key_pem: private_key.clone(),
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
    manager_config.pools = config.pools.clone();
    manager_config.demand = config.demand.settings;
    manager_config.queued_expiry = config.demand.queued_expiry;
    manager_config.images = config.images.settings;
    manager_config.placement = config.single_placement();
    manager_config.overcommit = config.cluster.overcommit;
    manager_config.policy = config.policy.as_ref().map(|policy| {
        let url = policy.url.as_str().trim_end_matches('/').to_owned();
        PolicyConfig {
            manager_url: url.clone(),
            runner_url: url,
            service_token: policy.service_token.clone(),
        }
    });
    manager_config
}

/// [`Operations`] over a [`RunnerManager`].
struct ManagerOps {
    manager: Arc<RunnerManager>,
    /// The scale-set listeners, started by `run` only.
    scale_sets: Option<crate::scaleset::ScaleSetRuntime>,
    resources: Resources,
    /// For the webhook delivery log.
    github: github::Client,
    /// The hook whose delivery log is read; `None`: none configured.
    hook: Option<HookRef>,
    /// Resolved once.
    hook_id: tokio::sync::OnceCell<u64>,
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
    fn start_scale_sets(
        &self,
        stop: &tokio::sync::watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        self.scale_sets
            .as_ref()
            .map(|s| s.start(stop))
            .unwrap_or_default()
    }

    async fn reconcile(&self, quantity: u32) -> anyhow::Result<ReconcileOutput> {
        Ok(self.reconcile_pass(quantity).await?.output)
    }

    async fn reconcile_pass(&self, quantity: u32) -> anyhow::Result<PassOutput> {
        // With [[pools]], demand sizes the fleet and `quantity` does not apply.
        let report = if self.manager.pools().is_empty() {
            self.manager
                .reconcile(quantity as usize, &self.resources)
                .await
        } else {
            self.manager.reconcile_demand(None).await
        }
        .context("reconciling")?;
        Ok(PassOutput {
            output: reconcile_output(&report, quantity, !self.manager.pools().is_empty()),
            requeue_after: report.requeue_after,
        })
    }

    async fn reconcile_pool(&self, pool: &str) -> anyhow::Result<ReconcileOutput> {
        let name = PoolName::new(pool).with_context(|| format!("--pool {pool:?}"))?;
        let report = self
            .manager
            .reconcile_demand(Some(&name))
            .await
            .with_context(|| format!("reconciling pool {pool}"))?;
        Ok(reconcile_output(&report, 0, true))
    }

    async fn record_job(&self, event: &JobEvent) -> anyhow::Result<JobRecord> {
        let recorded = self
            .manager
            .record_job(event)
            .context("recording the job in the job table")?;
        Ok(match recorded {
            Recorded::Applied { .. } => JobRecord::Applied,
            Recorded::Duplicate => JobRecord::Duplicate,
            Recorded::Stale { .. } => JobRecord::Stale,
        })
    }

    async fn recover_deliveries(
        &self,
        since: time::OffsetDateTime,
    ) -> anyhow::Result<Option<RecoveryReport>> {
        let Some(hook) = &self.hook else {
            return Ok(None);
        };
        let hook_id = *self
            .hook_id
            .get_or_try_init(|| resolve_hook(&self.github, hook))
            .await?;
        Ok(Some(recover(&self.github, hook_id, self, since).await?))
    }

    async fn image_build(&self, pool: Option<&str>) -> anyhow::Result<ImageBuildOutput> {
        let mut output = ImageBuildOutput {
            built: Vec::new(),
            current: Vec::new(),
            failed: Vec::new(),
        };
        let results = match pool {
            Some(name) => {
                let spec = self
                    .manager
                    .pools()
                    .iter()
                    .find(|p| p.name.as_str() == name && p.image_mode == ImageMode::Baked)
                    .cloned()
                    .with_context(|| {
                        format!("--pool {name:?}: no pool of that name has image_mode = \"baked\"")
                    })?;
                vec![(
                    spec.name.clone(),
                    self.manager.build_image(&spec).await.map(Some),
                )]
            }
            None => self.manager.ensure_images().await,
        };
        if results.is_empty() {
            anyhow::bail!("no pool has image_mode = \"baked\"");
        }
        for (pool, result) in results {
            match result {
                Ok(Some(image)) => output.built.push(image_output(&image)),
                Ok(None) => output.current.push(pool.to_string()),
                Err(error) => output
                    .failed
                    .push((pool.to_string(), format!("{:#}", anyhow::Error::new(error)))),
            }
        }
        Ok(output)
    }

    async fn image_list(&self) -> anyhow::Result<ImageListOutput> {
        let mut images = self
            .manager
            .baked_images()
            .await
            .context("listing images")?;
        images.sort_by(|a, b| (&a.pool, a.built_at).cmp(&(&b.pool, b.built_at)));
        Ok(ImageListOutput {
            images: images.iter().map(image_output).collect(),
        })
    }

    async fn seen_delivery(&self, guid: &str) -> anyhow::Result<bool> {
        self.manager
            .jobs()
            .seen_delivery(guid)
            .context("reading the job table")
    }

    async fn flush(&self, mode: FlushMode) -> anyhow::Result<FlushOutput> {
        let report = self.manager.flush(mode).await.context("flushing")?;
        flush_output(&report)
    }

    async fn flush_pool(&self, mode: FlushMode, pool: &str) -> anyhow::Result<FlushOutput> {
        let name = PoolName::new(pool).with_context(|| format!("--pool {pool:?}"))?;
        let report = self
            .manager
            .flush_pool(mode, Some(&name))
            .await
            .with_context(|| format!("flushing pool {pool}"))?;
        flush_output(&report)
    }

    async fn status(&self) -> anyhow::Result<StatusOutput> {
        // The core observes and classifies exactly as a pass does; here the types are mapped.
        let fleet = self.manager.status().await.context("observing the fleet")?;
        let version = fleet.runner_binary.map(|b| b.filename);
        let names_of = |keep: fn(&manager::RunnerView) -> bool| -> Vec<String> {
            fleet
                .runners
                .iter()
                .filter(|r| keep(r))
                .map(|r| r.name.to_string())
                .collect()
        };
        let dangling = names_of(manager::RunnerView::is_dangling);
        let orphans = names_of(manager::RunnerView::is_orphan);
        // A runner of a baked image runs that image's runner version.
        let images: std::collections::BTreeMap<String, manager::images::BakedImage> = if self
            .manager
            .pools()
            .iter()
            .any(|p| p.image_mode == ImageMode::Baked)
        {
            self.manager
                .baked_images()
                .await
                .unwrap_or_default()
                .into_iter()
                .map(|i| (i.fingerprint.clone(), i))
                .collect()
        } else {
            Default::default()
        };
        let runners = fleet
            .runners
            .iter()
            .filter_map(|r| {
                let status = r.instance?;
                let image = r.image.as_ref().and_then(|fp| images.get(fp));
                Some(RunnerStatus {
                    name: r.name.to_string(),
                    pool: r.pool.to_string(),
                    instance_status: format!("{status:?}").to_lowercase(),
                    github_status: r
                        .registration
                        .map(|(online, _)| if online { "online" } else { "offline" }.to_owned()),
                    busy: r.registration.map(|(_, busy)| busy),
                    age_seconds: r.age.map(|a| a.as_secs()),
                    version: match image {
                        Some(image) => Some(image.runner_version.clone()),
                        None => version.clone(),
                    },
                    image: image.map(|i| i.alias.clone()),
                })
            })
            .collect();
        Ok(StatusOutput {
            runners,
            pools: pool_statuses(self.manager.pools(), &fleet.runners),
            dangling,
            orphans,
            ha: None,
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

/// A pool with no runner counted yet.
fn empty_pool(
    name: String,
    min_idle: Option<u32>,
    max: Option<u32>,
    configured: bool,
) -> PoolStatus {
    PoolStatus {
        name,
        min_idle,
        max,
        idle: 0,
        busy: 0,
        booting: 0,
        unhealthy: 0,
        runners: Vec::new(),
        configured,
    }
}

/// The runners by pool: the configured pools in order (each even when empty), then pools that
/// only have runners left (the single-pool form's `default`, or a removed pool draining).
fn pool_statuses(configured: &[PoolSpec], runners: &[manager::RunnerView]) -> Vec<PoolStatus> {
    let mut pools: Vec<PoolStatus> = configured
        .iter()
        .map(|spec| {
            let (min_idle, max) = match spec.sizing {
                Sizing::Demand { min_idle, max } => (Some(count(min_idle)), Some(count(max))),
                Sizing::Fixed(quantity) => (None, Some(count(quantity))),
            };
            empty_pool(spec.name.to_string(), min_idle, max, true)
        })
        .collect();
    for runner in runners {
        let index = match pools.iter().position(|p| p.name == runner.pool.as_str()) {
            Some(index) => index,
            None => {
                pools.push(empty_pool(runner.pool.to_string(), None, None, false));
                pools.len() - 1
            }
        };
        let pool = &mut pools[index];
        match runner.state {
            RunnerState::Busy | RunnerState::BusyDangling => pool.busy += 1,
            RunnerState::Idle { .. } => pool.idle += 1,
            RunnerState::Booting => pool.booting += 1,
            // On an offline cluster member: not healthy.
            RunnerState::Remove(_) | RunnerState::Lost { .. } => pool.unhealthy += 1,
        }
        pool.runners.push(runner.name.to_string());
    }
    pools
}

fn image_output(image: &manager::images::BakedImage) -> ImageOutput {
    ImageOutput {
        pool: image.pool.to_string(),
        alias: image.alias.clone(),
        fingerprint: image.fingerprint.clone(),
        state: image.state.as_str().to_owned(),
        runner_version: image.runner_version.clone(),
        runner_sha256: image.runner_sha256.clone(),
        base_image: image.base_image.clone(),
        base_fingerprint: image.base_fingerprint.clone(),
        manager_version: image.manager_version.clone(),
        built_at: image.built_at,
        size_bytes: image.size,
    }
}

fn flush_output(report: &manager::FlushReport) -> anyhow::Result<FlushOutput> {
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

/// The `reconcile --json` document of a pass; `quantity` for the single-pool form, the sum of
/// the pools' targets with [[pools]].
fn reconcile_output(
    report: &manager::ReconcileReport,
    quantity: u32,
    pools_mode: bool,
) -> ReconcileOutput {
    for failure in &report.failed {
        let runner = failure.runner.as_ref().map_or("-", |r| r.as_str());
        tracing::warn!(message = "Reconcile step failed.", runner, action = failure.action.as_str(), error = %failure.error);
    }
    let pools: Vec<PoolPassOutput> = report
        .pools
        .iter()
        // The single-pool form shows only pools left over from a [[pools]] config.
        .filter(|p| pools_mode || p.draining)
        .map(|p| PoolPassOutput {
            name: p.pool.to_string(),
            desired: count(p.target),
            idle: count(p.counts.idle),
            busy: count(p.counts.busy),
            booting: count(p.counts.booting),
            queued: count(p.queued),
            created: count(p.created),
            removed: count(p.removed),
            draining: p.draining,
        })
        .collect();
    ReconcileOutput {
        quantity: if pools_mode {
            count(
                report
                    .pools
                    .iter()
                    .filter(|p| !p.draining)
                    .map(|p| p.target)
                    .sum(),
            )
        } else {
            quantity
        },
        delta: report.delta,
        created: count(report.created.len()),
        removed: count(report.removed.len()),
        skipped_busy: count(report.skipped_busy.len()),
        failed: count(report.failed.len()),
        pools,
        unmatched_jobs: count(report.unmatched_jobs),
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
