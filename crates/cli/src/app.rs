//! Runs one parsed command line: loads the config, connects the backend, prints the result and
//! picks the exit status (0 success, 1 failure, 2 usage or config error).

use std::future::{Future, IntoFuture};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::cli::{Cli, Command, ImageCommand, RunnerBinCommand};
use crate::config::{Config, ConfigError};
use crate::daemon::{DaemonExit, DaemonSettings};
use crate::ops::{FlushMode, Operations};
use crate::output::{self, Console};
use crate::server::{self, Access, ServerState};
use crate::webhook::LabelMatcher;

pub const EXIT_OK: u8 = 0;
pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

/// How long `run` waits for the HTTP server to drain after the daemon loop stopped.
const SERVER_DRAIN: Duration = Duration::from_secs(10);

/// Turns a validated config into the manager's operations.
#[async_trait]
pub trait Backend: Send + Sync {
    /// Connects to GitHub and LXD as configured and registers the manager's metrics.
    async fn connect(
        &self,
        config: &Config,
        registry: &mut Registry,
    ) -> anyhow::Result<Arc<dyn Operations>>;
}

/// Runs `cli` and returns the exit status.
pub async fn execute(cli: Cli, console: &mut Console, backend: &dyn Backend) -> u8 {
    let config = match Config::load(&cli.config) {
        Ok(config) => {
            tracing::debug!(message = "Config loaded.", path = %cli.config.display());
            config
        }
        Err(err) => {
            report_config_error(console, &cli.config, &err);
            return EXIT_USAGE;
        }
    };
    match run_command(cli.command, &cli.config, &config, console, backend).await {
        Ok(status) => status,
        Err(err) => {
            let causes: Vec<String> = err
                .chain()
                .skip(1)
                .map(|cause| format!("caused by: {cause}"))
                .collect();
            console.error(&err.to_string(), &causes);
            EXIT_FAILURE
        }
    }
}

fn report_config_error(console: &mut Console, path: &Path, err: &ConfigError) {
    match err {
        ConfigError::Read { .. } => console.error(&err.to_string(), &[]),
        ConfigError::Syntax { .. } => {
            console.error(
                &format!("invalid config file {}", path.display()),
                &[err.to_string()],
            );
        }
        ConfigError::Invalid(errors) => {
            let details: Vec<String> = errors.iter().map(ToString::to_string).collect();
            console.error(&format!("invalid config file {}", path.display()), &details);
        }
    }
}

async fn run_command(
    command: Command,
    path: &Path,
    config: &Config,
    console: &mut Console,
    backend: &dyn Backend,
) -> anyhow::Result<u8> {
    if let Command::CheckConfig { json, route } = command {
        let mut summary = config.summary();
        summary.route = route.map(|labels| config.route(&labels));
        let path = path.display().to_string();
        console.result(json, &summary, |s| {
            output::render_config_summary(&path, s) + &s.render_pools()
        })?;
        return Ok(EXIT_OK);
    }
    let mut registry = Registry::default();
    let ops = backend
        .connect(config, &mut registry)
        .await
        .context("connecting to GitHub and LXD")?;
    match command {
        Command::CheckConfig { .. } => Ok(EXIT_OK),
        Command::Run => {
            let listener = TcpListener::bind(config.server.listen)
                .await
                .with_context(|| {
                    format!("listening on {} (server.listen)", config.server.listen)
                })?;
            let exit = run_daemon(config, ops, registry, listener, shutdown_signal()).await?;
            Ok(match exit {
                DaemonExit::PassAbandoned => EXIT_FAILURE,
                DaemonExit::Idle | DaemonExit::PassFinished => EXIT_OK,
            })
        }
        Command::Reconcile {
            quantity,
            pool,
            json,
        } => {
            if !config.pools.is_empty() && quantity.is_some() {
                anyhow::bail!(
                    "--quantity: not used with [[pools]]; each pool is sized by min_idle, max \
                     and its queued jobs (reconcile --pool NAME acts on one pool)"
                );
            }
            let result = match pool {
                Some(pool) => {
                    let _spinner = console.spinner(&format!("reconciling pool {pool}"));
                    ops.reconcile_pool(&pool)
                        .await
                        .with_context(|| format!("reconciling pool {pool}"))?
                }
                None if !config.pools.is_empty() => {
                    let _spinner = console.spinner("reconciling every pool");
                    ops.reconcile(0).await.context("reconciling")?
                }
                None => {
                    let quantity = quantity.unwrap_or(config.runners.quantity);
                    let _spinner =
                        console.spinner(&format!("reconciling towards {quantity} runner(s)"));
                    ops.reconcile(quantity).await.context("reconciling")?
                }
            };
            console.result(json, &result, output::render_reconcile)?;
            Ok(if result.failed > 0 {
                EXIT_FAILURE
            } else {
                EXIT_OK
            })
        }
        Command::Flush {
            idle_only,
            pool,
            json,
        } => {
            let mode = if idle_only {
                FlushMode::IdleOnly
            } else {
                FlushMode::IncludingBusy
            };
            let result = match pool {
                Some(pool) => {
                    let _spinner = console.spinner(&format!("flushing pool {pool}"));
                    ops.flush_pool(mode, &pool)
                        .await
                        .with_context(|| format!("flushing pool {pool}"))?
                }
                None => {
                    let _spinner = console.spinner("flushing runners");
                    ops.flush(mode).await.context("flushing runners")?
                }
            };
            console.result(json, &result, output::render_flush)?;
            Ok(EXIT_OK)
        }
        Command::Status { json } => {
            let status = ops.status().await.context("reading runner status")?;
            console.result(json, &status, output::render_status)?;
            Ok(EXIT_OK)
        }
        Command::RunnerBin(RunnerBinCommand::Latest { os, arch, json }) => {
            let binary = ops
                .runner_bin_latest(&os, &arch)
                .await
                .with_context(|| format!("looking up the runner binary for {os}/{arch}"))?;
            console.result(json, &binary, output::render_runner_bin)?;
            Ok(EXIT_OK)
        }
        Command::RunnerBin(RunnerBinCommand::Update { json }) => {
            let result = {
                let _spinner = console.spinner("updating the runner binary");
                ops.runner_bin_update()
                    .await
                    .context("updating the runner binary")?
            };
            console.result(json, &result, output::render_runner_bin_update)?;
            Ok(EXIT_OK)
        }
        Command::Image(ImageCommand::Build { pool, json }) => {
            let result = {
                let _spinner = console.spinner(&match &pool {
                    Some(pool) => format!("building the image of pool {pool}"),
                    None => "building the baked pools' images".to_owned(),
                });
                ops.image_build(pool.as_deref())
                    .await
                    .context("building images")?
            };
            console.result(json, &result, output::render_image_build)?;
            Ok(if result.failed.is_empty() {
                EXIT_OK
            } else {
                EXIT_FAILURE
            })
        }
        Command::Image(ImageCommand::List { json }) => {
            let images = ops.image_list().await.context("listing images")?;
            console.result(json, &images, output::render_image_list)?;
            Ok(EXIT_OK)
        }
        Command::RunnerBin(RunnerBinCommand::Check) => {
            let check = ops
                .runner_bin_check()
                .await
                .context("checking the runner binary")?;
            console.human(&output::render_runner_bin_check(&check))?;
            Ok(if check.present { EXIT_OK } else { EXIT_FAILURE })
        }
    }
}

/// `run`: the HTTP server and the daemon loop until `shutdown` completes.
pub async fn run_daemon(
    config: &Config,
    ops: Arc<dyn Operations>,
    registry: Registry,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<DaemonExit> {
    let settings = DaemonSettings::new(config.runners.quantity, config.server.reconcile_interval);
    let access = Access {
        api_token: config.server.api_token.clone(),
        webhook_secret: config.server.webhook_secret.clone(),
        labels: LabelMatcher::any_of(config.pool_demands().into_iter().map(|p| p.labels)),
        runner_prefix: config.runner_name_prefix(),
    };
    let (daemon, state) = ServerState::with_daemon(Arc::clone(&ops), settings, registry, access);
    // [ha]: passes only while this manager holds the lease (kept by the keeper below).
    let ha = ops.ha();
    let daemon = match &ha {
        Some(ha) => daemon.with_gate(crate::ha::RoleGate::new(ha)),
        None => daemon,
    };
    let ops_for_listeners = Arc::clone(&ops);
    if config.server.api_token.is_none() {
        warn!(message = "server.api_token is not set: POST /reconcile and /flush answer 401.");
    }
    if config.server.webhook_secret.is_none() {
        warn!(message = "server.webhook_secret is not set: POST /webhook answers 401.");
    }
    let address = listener
        .local_addr()
        .context("reading the listen address")?;
    info!(message = "Serving.", address = %address);

    // One shutdown signal, seen by both the server and the loop.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let keeper = ha.map(|ha| ha.spawn_keeper(stopped(stop_rx.clone())));
    // GitHub keeps its delivery log for about three days; the job table drops queued jobs
    // after `queued_expiry`: the first check reads back as far as both allow.
    const DELIVERY_LOG_KEPT: Duration = Duration::from_secs(3 * 24 * 3600);
    if config
        .pools
        .iter()
        .any(|p| p.image_mode == manager::pool::ImageMode::Baked)
    {
        tokio::spawn(crate::images::images_loop(
            Arc::clone(&ops),
            daemon.handle(),
            config.images.check_interval,
            stop_rx.clone(),
        ));
    }
    tokio::spawn(crate::deliveries::recovery_loop(
        ops,
        daemon.handle(),
        config.demand.delivery_check_interval,
        config.demand.queued_expiry.min(DELIVERY_LOG_KEPT),
        stop_rx.clone(),
    ));
    // Scale-set pools: one listener each; on shutdown each deletes its session.
    let listeners = ops_for_listeners.start_scale_sets(&stop_rx);
    let server = tokio::spawn(
        axum::serve(listener, server::router(state))
            .with_graceful_shutdown(stopped(stop_rx.clone()))
            .into_future(),
    );
    let exit = daemon.run(stopped(stop_rx)).await;
    if let Some(keeper) = keeper {
        if tokio::time::timeout(SERVER_DRAIN, keeper).await.is_err() {
            warn!(message = "The HA lease keeper did not stop in time.");
        }
    }
    for listener in listeners {
        if tokio::time::timeout(SERVER_DRAIN, listener).await.is_err() {
            warn!(message = "A scale-set listener did not stop in time.");
        }
    }
    match tokio::time::timeout(SERVER_DRAIN, server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(err))) => warn!(message = "HTTP server stopped with an error.", error = %err),
        Ok(Err(err)) => warn!(message = "HTTP server task failed.", error = %err),
        Err(_) => warn!(message = "HTTP server did not drain in time."),
    }
    Ok(exit)
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                warn!(message = "Cannot listen for SIGTERM.", error = %err);
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!(message = "SIGINT received."),
        () = terminate => info!(message = "SIGTERM received."),
    }
}
