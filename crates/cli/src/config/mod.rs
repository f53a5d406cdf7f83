//! The config file: parsed once into a validated [`Config`].
//!
//! Parsing has two steps. Serde reads the TOML into `Raw*` structs that reject unknown keys
//! (`deny_unknown_fields`), with the key path of any type error tracked by
//! `serde_path_to_error`. Validation then turns the raw values into closed types, collecting
//! every problem as a [`KeyError`] that names the full key (`runners.memory`) and the reason.
//!
//! Secrets (`github.token`, `policy.service_token`, `server.api_token`, `server.webhook_secret`,
//! the App private key) can also come from a `*_file` key or an environment variable. A key in the
//! file wins over the environment. Their values are held in [`Secret`] and never appear in
//! errors. Relative paths are resolved against the config file's directory.
//!
//! Values the manager uses are parsed straight into the manager's own types, with the manager's
//! rules, so there is one definition of each and nothing is turned back into a string to be
//! parsed again: the scope and its runner group ([`GitHubPath`]), sizes ([`Size`]),
//! [`InstanceType`], [`RegistrationMode`] and the proxies ([`ProxySettings`], whose URLs keep their
//! credentials for where they are used and mask them everywhere else).
//!
//! Runners come in one pool (`[runners] quantity = N`, the seed's form) or in several
//! (`[[pools]]`, each validated straight into a [`PoolSpec`], in `pools.rs`), sized by the job
//! demand that `[demand]` tunes (`demand.rs`). [`Config::pool_demands`] is what routing and
//! sizing read either way; `check-config --route` shows where a job goes (`route.rs`).

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use url::Url;

pub use manager::model::DEFAULT_RUNNER_GROUP;
pub use manager::pool::{DemandSettings, PoolDemand, PoolName, PoolSpec, Sizing};
pub use manager::{GitHubPath, InstanceType, ProxySettings, ProxyUrl, RegistrationMode, Size};

use crate::secret::Secret;

/// Where the config file is read from when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/runner-manager/config.toml";
/// The environment variable that overrides [`DEFAULT_CONFIG_PATH`].
pub const CONFIG_PATH_ENV: &str = "RUNNER_MANAGER_CONFIG";
/// Environment fallbacks for secrets that are not set in the file.
pub const GITHUB_TOKEN_ENV: &str = "RUNNER_MANAGER_GITHUB_TOKEN";
pub const SERVICE_TOKEN_ENV: &str = "RUNNER_MANAGER_SERVICE_TOKEN";
pub const API_TOKEN_ENV: &str = "RUNNER_MANAGER_API_TOKEN";
pub const WEBHOOK_SECRET_ENV: &str = "RUNNER_MANAGER_WEBHOOK_SECRET";

/// Replaces a password in URLs that are shown (`[redacted]` would be percent-encoded).
const REDACTED_PASSWORD: &str = "redacted";
const MAX_QUANTITY: u32 = 10_000;
const MAX_CPU: u32 = 1_024;
const MAX_UNIT: u32 = 99_999;
const MAX_APP_NAME: usize = 40;
const MAX_LABELS: usize = 100;
const INTERVAL_RANGE: std::ops::RangeInclusive<u64> = 10..=86_400;
const DEFAULT_QUEUED_STALE_SECONDS: u64 = 600;
const DEFAULT_DELIVERY_CHECK_SECONDS: u64 = 300;
const DEFAULT_QUEUED_EXPIRY_SECONDS: u64 = 86_400;

// ---------------------------------------------------------------------------------------------
// Validated types
// ---------------------------------------------------------------------------------------------

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Runners are named `<app_name>-<unit>-<suffix>`.
    pub app_name: String,
    pub unit: u32,
    /// Runner binary cache and other local state.
    pub state_dir: PathBuf,
    pub github: GitHubConfig,
    pub lxd: LxdConfig,
    pub runners: RunnersConfig,
    /// Proxies for the manager's GitHub traffic and the runners' environment.
    pub proxy: ProxySettings,
    /// The pre-job policy check service; `None` when `policy.url` is empty.
    pub policy: Option<PolicyConfig>,
    pub metrics: MetricsConfig,
    pub server: ServerConfig,
    /// The pools of `[[pools]]`, in the file's order; empty for the single-pool form
    /// (`[runners] quantity = N`), which [`Config::pool_specs`] turns into one pool.
    pub pools: Vec<PoolSpec>,
    /// `[demand]`: how demand sizing treats queued jobs and idle runners.
    pub demand: DemandConfig,
    /// `[images]`: baked pools' canary and how often images are checked.
    pub images: ImagesConfig,
    /// Scale-set pools (`scaling = "scaleset"`) and `[scaleset]`.
    pub scale_sets: ScaleSetsConfig,
    /// `[cluster]`: placement on an LXD/Incus cluster.
    pub cluster: ClusterConfig,
    /// `[ha]`: active/standby managers sharing a lease in the cluster.
    pub ha: HaConfig,
}

/// `[cluster]`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ClusterConfig {
    /// `placement`: every pool's default strategy (a pool's `placement` wins), and the
    /// single-pool form's.
    pub placement: manager::pool::Strategy,
    /// `overcommit_cpu` and `overcommit_memory`.
    pub overcommit: manager::placement::Overcommit,
}

#[derive(Debug, Clone)]
pub struct GitHubConfig {
    /// Where runners register, with the runner group of an organisation or enterprise
    /// (`github.path` and `github.runner_group`).
    pub path: GitHubPath,
    pub credentials: GitHubCredentials,
    /// REST base URL, e.g. `https://api.github.com/` or `https://HOST/api/v3`.
    pub api_url: Url,
    /// What `config.sh --url` is built from, e.g. `https://github.com/`.
    pub web_url: Url,
}

/// How runner-manager authenticates to GitHub.
#[derive(Debug, Clone)]
pub enum GitHubCredentials {
    /// A personal access token.
    Token { token: Secret, source: SecretSource },
    /// A GitHub App; the installation is looked up when `installation_id` is not given.
    App {
        app_id: u64,
        installation_id: Option<u64>,
        private_key: Secret,
        private_key_file: PathBuf,
    },
}

/// Where a secret came from (shown instead of the value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// The key itself, in the config file.
    ConfigKey(&'static str),
    File(PathBuf),
    Env(&'static str),
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ConfigKey(key) => write!(f, "config key {key}"),
            Self::File(path) => write!(f, "file {}", path.display()),
            Self::Env(name) => write!(f, "env {name}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct LxdConfig {
    pub endpoint: LxdEndpoint,
    /// Image alias on the server (or `remote:alias`).
    pub image: String,
    /// The default is `virtual-machine`, as in the seed's charm: a VM isolates untrusted jobs
    /// (and their Docker daemon) from the host. `container` starts faster and needs no KVM; the
    /// demo uses it.
    pub instance_type: InstanceType,
    /// The seed's `lxd_storage_path`: a dir pool `runner` there; `None` = the default pool.
    pub storage_path: Option<PathBuf>,
    /// Cluster member (or `@group`) to place instances on: every pool's default target.
    pub target: Option<String>,
}

/// How to reach LXD/Incus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LxdEndpoint {
    /// Find the socket: `INCUS_SOCKET`, `LXD_SOCKET`, then the usual paths.
    Discover,
    Socket(PathBuf),
    Https {
        url: Url,
        client_cert: PathBuf,
        client_key: PathBuf,
        server_cert: Option<PathBuf>,
    },
}

#[derive(Debug, Clone)]
pub struct RunnersConfig {
    /// Target number of runners (the seed's `virtual-machines`).
    pub quantity: u32,
    pub cpu: u32,
    pub memory: Size,
    pub disk: Size,
    /// Extra labels beside `self-hosted`, `app_name` and `image`.
    pub labels: Vec<String>,
    /// `token` (the default, as the seed does) or `jit`.
    pub registration: RegistrationMode,
}

#[derive(Debug, Clone)]
pub struct PolicyConfig {
    pub url: Url,
    pub service_token: Secret,
    pub service_token_source: SecretSource,
}

#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// Append one JSON line per runner event to `events_log` (shipped to Loki).
    pub issue_metrics: bool,
    pub events_log: PathBuf,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Bearer token for the POST endpoints; `None` disables them (every call gets 401).
    pub api_token: Option<Secret>,
    /// Secret of the `workflow_job` webhook; `None` disables `/webhook` (every call gets 401).
    pub webhook_secret: Option<Secret>,
    pub reconcile_interval: Duration,
    /// The URL GitHub delivers webhooks to (`server.public_url`), used to find the hook whose
    /// deliveries are checked; `None` when not set.
    pub public_url: Option<Url>,
    /// The repository or organisation webhook to read deliveries from (`server.hook_id`).
    pub hook_id: Option<u64>,
}

/// `[images]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImagesConfig {
    /// `canary_percent` (as a share) and `promote_after`.
    pub settings: manager::images::ImageSettings,
    /// How often the daemon checks for a newer runner release and a changed base image, and
    /// builds the baked pools' images (`check_seconds`).
    pub check_interval: Duration,
}

impl Default for ImagesConfig {
    fn default() -> Self {
        Self {
            settings: manager::images::ImageSettings::default(),
            check_interval: Duration::from_secs(3600),
        }
    }
}

/// `[demand]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemandConfig {
    /// `queued_stale_seconds` and `max_idle_age_seconds`.
    pub settings: DemandSettings,
    /// How often GitHub's webhook deliveries are checked for missed `workflow_job` deliveries
    /// (`delivery_check_seconds`).
    pub delivery_check_interval: Duration,
    /// A queued job older than this is dropped (`queued_expiry_seconds`); GitHub cancels it
    /// after 24 hours.
    pub queued_expiry: Duration,
}

impl Default for DemandConfig {
    fn default() -> Self {
        Self {
            settings: DemandSettings::default(),
            delivery_check_interval: Duration::from_secs(DEFAULT_DELIVERY_CHECK_SECONDS),
            queued_expiry: Duration::from_secs(DEFAULT_QUEUED_EXPIRY_SECONDS),
        }
    }
}

mod demand;
mod errors;
mod ha;
mod load;
mod pools;
#[cfg(test)]
mod pools_tests;
mod raw;
mod route;
mod summary;

pub use errors::*;
pub use ha::HaConfig;
pub use load::*;
use pools::{repo_scope, PoolDefaults};
use raw::*;
pub use route::*;
pub use summary::*;

/// The pools of `[[pools]]` with `scaling = "scaleset"`, and `[scaleset]`'s timings.
#[derive(Debug, Clone, Default)]
pub struct ScaleSetsConfig {
    pub pools: Vec<manager::scaleset::ScaleSetPool>,
    pub settings: manager::scaleset::ScaleSetSettings,
    /// Per-attempt timeout of the long poll (beyond the service's ~50 s hold).
    pub poll_timeout: Duration,
}
