//! The daemon's scale-set listeners: one per pool with `scaling = "scaleset"`, each with its
//! pass worker (`manager::scaleset::listener`), over one scale-set client for the config's
//! registration target.

use std::sync::Arc;

use anyhow::Context as _;
use manager::adapters::ScaleSetAdapter;
use manager::scaleset::{Listener, ListenerSettings, ScaleSetHub, ScaleSetPool};
use manager::RunnerManager;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;

/// The config URL of the scale-set client: the web URL and `github.path` (`…/ORG`,
/// `…/OWNER/REPO`, `…/enterprises/ENT`).
pub fn config_url(config: &Config) -> anyhow::Result<url::Url> {
    let web = config.github.web_url.as_str().trim_end_matches('/');
    let text = format!("{web}/{}", config.github.path.path());
    url::Url::parse(&text)
        .with_context(|| format!("github.web_url: building the config url {text}"))
}

/// The scale-set client for `config`: the same credentials and proxy as the REST client.
pub fn client(config: &Config) -> anyhow::Result<github::scaleset::ScaleSetClient> {
    let rest = crate::backend::github_client_config(config);
    let mut client_config = github::scaleset::ScaleSetConfig::new(config_url(config)?, rest.auth);
    client_config.proxy = rest.proxy;
    client_config.poll_timeout = config.scale_sets.poll_timeout;
    github::scaleset::ScaleSetClient::new(client_config).context("building the scale-set client")
}

/// The listeners of a manager, ready to start.
pub struct ScaleSetRuntime {
    pub manager: Arc<RunnerManager>,
    pub api: Arc<ScaleSetAdapter>,
    pub pools: Vec<ScaleSetPool>,
    pub settings: ListenerSettings,
}

impl ScaleSetRuntime {
    /// The shared state of a config's scale-set pools (empty without any).
    pub fn hub(config: &Config) -> Arc<ScaleSetHub> {
        Arc::new(ScaleSetHub::new(&config.scale_sets.pools))
    }

    /// Starts one listener (and its worker) per pool; each ends, deleting its session, once
    /// `stop` turns true.
    pub fn start(&self, stop: &watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        self.pools
            .iter()
            .map(|pool| {
                let listener = Listener::new(
                    Arc::clone(&self.api),
                    Arc::clone(&self.manager),
                    pool.clone(),
                    self.settings.clone(),
                );
                tracing::info!(message = "Starting the scale-set listener.", pool = %pool.pool,
                    scale_set = %pool.scale_set_name, owner = %listener.owner());
                tokio::spawn(listener.run(stop.clone()))
            })
            .collect()
    }
}
